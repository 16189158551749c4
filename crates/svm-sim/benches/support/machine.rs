//! The machine every bench starts from: one GPU, one process, and an
//! anonymous mapping at a fixed address.

use svm_core::addr::CpuVa;
use svm_core::gpu::GpuId;
use svm_core::topology::{GpuDesc, Topology};
use svm_sim::machine::{Machine, MemLimit, Pid};
use svm_sim::mm::{Backing, Mark, Prot};

/// The bench GPU's gpu_id.
pub const GPU: u32 = 0x1002;

/// One GPU with `vram_bytes` of VRAM, a process in the given boot XNACK
/// mode, and `map_bytes` mapped at `base`.
pub fn one_gpu(vram_bytes: u64, xnack: bool, base: u64, map_bytes: u64) -> (Machine, Pid) {
    let gpu = GpuDesc {
        name: "gpu0".into(),
        id: GpuId::new(GPU).unwrap(),
        vram_bytes,
        svm: true,
        xnack: true,
        hive: None,
        apu: false,
        prefer_gtt: false,
        ats: false,
        local_atomics: false,
        gc: svm_core::pte::GcVersion::DEFAULT,
    };
    let mut m = Machine::new(
        Topology::new(vec![gpu]).unwrap(),
        xnack,
        MemLimit::for_sysmem(64 << 30),
    );
    let pid = m.spawn("bench");
    m.mmap(
        pid,
        Some(CpuVa::new(base)),
        map_bytes,
        Prot::RW,
        Backing::Anon,
        Mark::None,
    )
    .unwrap();
    (m, pid)
}

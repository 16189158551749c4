//! Builders shared by the integration tests.

use svm_core::addr::{CpuVa, PAGE_SIZE, PageRange};
use svm_core::gpu::GpuId;
use svm_core::topology::{GpuDesc, Topology};
use svm_core::uapi::{SVM_OP_GET_ATTR, SVM_OP_SET_ATTR, SvmArgs, SvmAttribute, attr_type};
use svm_core::{Errno, Result};
use svm_sim::check;
use svm_sim::machine::{Machine, MemLimit, Pid};
use svm_sim::mm::{Backing, Mark, Prot};

pub const PAGE: u64 = PAGE_SIZE;
pub const GPU0: u32 = 0x1002;
pub const GPU1: u32 = 0x2002;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

pub fn gpu(name: &str, id: u32, vram_bytes: u64, xnack: bool) -> GpuDesc {
    GpuDesc {
        name: name.into(),
        id: GpuId::new(id).unwrap(),
        vram_bytes,
        svm: true,
        xnack,
        hive: None,
        apu: false,
        prefer_gtt: false,
        ats: false,
        local_atomics: false,
        gc: svm_core::pte::GcVersion::DEFAULT,
    }
}

/// One process on a machine of GPUs, in the given XNACK mode, with one GPU
/// under test (KFDTest's node) and another beside it.
pub struct Kfd {
    pub m: Machine,
    pub pid: Pid,
    /// The gpu_id of the GPU under test.
    pub node: u32,
    /// Its index in the machine.
    pub index: usize,
    /// The gpu_id of the next GPU (the node itself on a one-GPU machine).
    pub peer: u32,
}

/// The multi-GPU profile the KFDTest ports run on, once per GPU: eight
/// MI250X GCDs in one xGMI hive, untimed.
pub const KFDTEST_PROFILE: &str = "mi250x";

impl Kfd {
    pub fn new(xnack: bool) -> Self {
        Self::with_gpus(
            vec![
                gpu("gpu0", GPU0, 16 * GIB, true),
                gpu("gpu1", GPU1, 16 * GIB, true),
            ],
            xnack,
        )
    }

    pub fn with_gpus(gpus: Vec<GpuDesc>, xnack: bool) -> Self {
        let mut m = Machine::new(
            Topology::new(gpus).unwrap(),
            true,
            MemLimit::for_sysmem(64 * GIB),
        );
        let pid = m.spawn("p0");
        let mut k = Self::attach(m, pid);
        // SetUp(): SVMSetXNACKMode(GetParam()); a GPU that cannot is the test's skip.
        let _ = k.m.set_xnack_mode(k.pid, i32::from(xnack));
        k
    }

    /// Process `pid` of `m`, with the first GPU under test.
    pub fn attach(m: Machine, pid: Pid) -> Self {
        let ids: Vec<u32> = m.gpus().iter().map(|g| g.desc.id.raw()).collect();
        Self {
            m,
            pid,
            node: ids[0],
            index: 0,
            peer: ids[ids.len().min(2) - 1],
        }
    }

    /// The GPUs of [`KFDTEST_PROFILE`], with `edit` applied to each.
    pub fn profile_gpus(edit: impl Fn(&mut GpuDesc)) -> Vec<GpuDesc> {
        let mut gpus = svm_sim::timing::Profile::built_in(KFDTEST_PROFILE)
            .unwrap()
            .gpus();
        gpus.iter_mut().for_each(edit);
        gpus
    }

    /// Runs `f` once per GPU of `gpus`, each time on a fresh machine with
    /// that GPU under test, as KFDTest runs a case on each GPU node.
    pub fn on_each_node(gpus: &[GpuDesc], xnack: bool, mut f: impl FnMut(&mut Kfd)) {
        for index in 0..gpus.len() {
            let mut k = Self::with_gpus(gpus.to_vec(), xnack);
            k.select(index);
            f(&mut k);
        }
    }

    /// Makes the GPU at `index` the one under test.
    pub fn select(&mut self, index: usize) {
        let ids: Vec<u32> = self.m.gpus().iter().map(|g| g.desc.id.raw()).collect();
        self.index = index;
        self.node = ids[index];
        self.peer = ids[(index + 1) % ids.len()];
    }

    /// A fresh machine like this one (same GPUs and mode, the same GPU
    /// under test) but with `vram_bytes` of VRAM on every GPU.
    pub fn with_vram(&self, vram_bytes: u64) -> Kfd {
        let gpus = self
            .m
            .gpus()
            .iter()
            .map(|g| GpuDesc {
                vram_bytes,
                ..g.desc.clone()
            })
            .collect();
        let mut k = Self::with_gpus(gpus, self.xnack());
        k.select(self.index);
        k
    }

    /// The node under test's fault and eviction counts.
    pub fn stats(&self) -> svm_core::process::GpuStats {
        self.m.process(self.pid).svm.stats()[svm_core::gpu::GpuIndex::new(self.index).unwrap()]
    }

    /// Whether two GPUs share an xGMI hive.
    pub fn same_hive(&self, a: u32, b: u32) -> bool {
        let hive = |id: u32| {
            self.m
                .gpus()
                .iter()
                .find(|g| g.desc.id.raw() == id)
                .and_then(|g| g.desc.hive)
        };
        a == b || hive(a).is_some_and(|h| hive(b) == Some(h))
    }

    /// Whether the node under test holds no VRAM buffer.
    pub fn node_vram_empty(&self) -> bool {
        self.m.gpus()[self.index].bufs.is_empty()
    }

    pub fn xnack(&self) -> bool {
        self.m.process(self.pid).svm.xnack_enabled()
    }

    /// An anonymous read-write mapping, as `HsaSVMRange(size)` makes.
    pub fn mmap(&mut self, size: u64) -> u64 {
        let r = self
            .m
            .mmap(self.pid, None, size, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        r.start_va().raw()
    }

    pub fn munmap(&mut self, addr: u64, size: u64) {
        self.m.munmap(self.pid, CpuVa::new(addr), size).unwrap();
        self.check();
    }

    pub fn set(&mut self, addr: u64, size: u64, attrs: &[(u32, u32)]) -> Result<(), Errno> {
        let mut a = SvmArgs {
            start_addr: addr,
            size,
            op: SVM_OP_SET_ATTR,
            attrs: attrs
                .iter()
                .map(|&(t, v)| SvmAttribute::new(t, v))
                .collect(),
        };
        let r = self
            .m
            .svm_ioctl(self.pid, &mut a)
            .map(drop)
            .map_err(|e| e.errno());
        self.check();
        r
    }

    pub fn get(
        &mut self,
        addr: u64,
        size: u64,
        attrs: &[(u32, u32)],
    ) -> Result<Vec<(u32, u32)>, Errno> {
        let mut a = SvmArgs {
            start_addr: addr,
            size,
            op: SVM_OP_GET_ATTR,
            attrs: attrs
                .iter()
                .map(|&(t, v)| SvmAttribute::new(t, v))
                .collect(),
        };
        self.m.svm_ioctl(self.pid, &mut a).map_err(|e| e.errno())?;
        Ok(a.attrs.iter().map(|a| (a.ty, a.value)).collect())
    }

    /// `RegisterSVMRange`: PREFETCH_LOC, PREFERRED_LOC, SET_FLAGS, ACCESS, in that order.
    pub fn register(
        &mut self,
        addr: u64,
        size: u64,
        gpu: u32,
        prefetch: u32,
        flags: u32,
    ) -> Result<(), Errno> {
        use attr_type::*;
        self.set(
            addr,
            size,
            &[
                (PREFETCH_LOC, prefetch),
                (PREFERRED_LOC, prefetch),
                (SET_FLAGS, flags),
                (ACCESS, gpu),
            ],
        )
    }

    /// The ranges as `(first page, pages, mapped_to_gpu)` relative to `base`.
    pub fn ranges_from(&self, base: u64) -> Vec<(u64, u64, bool)> {
        let base = base / PAGE;
        self.m
            .process(self.pid)
            .svm
            .ranges()
            .iter()
            .map(|r| {
                let pr: PageRange = r.range();
                (pr.start().raw() - base, pr.npages().raw(), r.mapped_to_gpu)
            })
            .collect()
    }

    pub fn check(&self) {
        if let Err(v) = check::check(&self.m) {
            panic!("{v}");
        }
    }
}

impl Kfd {
    /// A GPU writes `data` at `addr`; panics on a fatal fault.
    pub fn gpu_write(&mut self, gpu: u32, addr: u64, data: &[u8]) {
        self.m
            .gpu_access(
                self.pid,
                gpu,
                CpuVa::new(addr),
                data.len() as u64,
                Some(data),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        self.check();
    }

    /// A GPU reads `len` bytes at `addr`; panics on a fatal fault.
    pub fn gpu_read(&mut self, gpu: u32, addr: u64, len: u64) -> Vec<u8> {
        let out = self
            .m
            .gpu_access(self.pid, gpu, CpuVa::new(addr), len, None)
            .unwrap_or_else(|e| panic!("{e}"))
            .0;
        self.check();
        out
    }

    /// A GPU's wave adds `v` to the words at `addr` atomically; the old
    /// words, or the fault that killed it.
    pub fn try_gpu_atomic_add(
        &mut self,
        gpu: u32,
        addr: u64,
        v: &[u32],
    ) -> std::result::Result<Vec<u32>, svm_sim::machine::AccessError> {
        use std::cell::RefCell;
        use std::rc::Rc;
        let out = Rc::new(RefCell::new(Vec::new()));
        let (o, v) = (Rc::clone(&out), v.to_vec());
        let f: svm_sim::machine::KernelFn = Rc::new(move |_, ctx| {
            let (o, v) = (Rc::clone(&o), v.clone());
            Box::pin(async move {
                *o.borrow_mut() = ctx.atomic_add_u32s(addr, &v).await;
            })
        });
        let id = self.m.launch_kernel(self.pid, gpu, 1, f)?;
        self.m.wait_kernel(id)?;
        self.check();
        Ok(out.take())
    }

    /// The GPU copies `len` bytes from `src` to `dst`, as the CopyDword
    /// shader or an SDMA copy does.
    pub fn gpu_copy(&mut self, gpu: u32, src: u64, dst: u64, len: u64) {
        let data = self.gpu_read(gpu, src, len);
        self.gpu_write(gpu, dst, &data);
    }

    /// The CPU writes.
    pub fn cpu_write(&mut self, addr: u64, data: &[u8]) {
        self.m
            .cpu_access(self.pid, CpuVa::new(addr), data.len() as u64, Some(data))
            .unwrap_or_else(|e| panic!("{e}"));
        self.check();
    }

    /// The CPU reads.
    pub fn cpu_read(&mut self, addr: u64, len: u64) -> Vec<u8> {
        let out = self
            .m
            .cpu_access(self.pid, CpuVa::new(addr), len, None)
            .unwrap_or_else(|e| panic!("{e}"));
        self.check();
        out
    }

    /// Pages of `[addr, addr+size)` in VRAM.
    pub fn vram_pages_in(&self, addr: u64, size: u64) -> u64 {
        let svm = &self.m.process(self.pid).svm;
        (addr / PAGE..(addr + size) / PAGE)
            .filter(|&p| svm.page_in_vram(svm_core::addr::PageNum::new(p)))
            .count() as u64
    }
}

/// `n` little-endian u32 words, word `i` holding `f(i)`.
pub fn words(n: usize, f: impl Fn(u32) -> u32) -> Vec<u8> {
    let n = u32::try_from(n).expect("word count fits in u32");
    (0..n).flat_map(|i| f(i).to_le_bytes()).collect()
}

//! The microbenchmark kernels: the machine they run on, buffers made
//! resident, the TLB-hit, fault and write-back kernels. The divan
//! benchmarks (`benches/kernel.rs`, `benches/kernel_faults.rs`) time them,
//! and the suite benchmark (`svmsim bench`) measures the TLB-hit rate with
//! them as its baseline, in the same run as the workloads.
//!
//! They panic if the engine returns wrong bytes: a benchmark of a broken
//! memory path measures nothing.

use svm_core::topology::Topology;
use svm_core::uapi::{SvmAttribute, attr_type};
use svm_sim::machine::{ComputeShape, KernelFn, KernelStats, Machine, MemLimit, Pid};

use crate::{Run, kernel};

/// Waves of the TLB-hit grid (104 CUs × 8) and loads each makes.
pub const WAVES: u32 = 832;
pub const LOADS: u64 = 64;
/// Bytes of the TLB-hit working set.
pub const SET: u64 = 256 << 10;

/// An MI210-class machine with 1 GiB of VRAM and `shape`, and a process.
pub fn machine(shape: ComputeShape) -> (Machine, Pid) {
    let p = svm_sim::timing::Profile::built_in("mi210").unwrap();
    let mut gpus = p.gpus();
    gpus[0].vram_bytes = 1 << 30;
    let mut m = Machine::new(
        Topology::new(gpus).unwrap(),
        true,
        MemLimit::for_sysmem(8 << 30),
    );
    m.apply_profile(&p);
    m.set_compute_shape(shape);
    let pid = m.spawn("bench");
    (m, pid)
}

/// The TLB-hit grid's shape.
pub fn grid() -> ComputeShape {
    ComputeShape {
        compute_units: 104,
        waves_per_cu: 8,
        tlb_entries: 64,
    }
}

/// A buffer of `size` bytes registered for the GPU in ranges of `piece`
/// bytes, prefetched there or not, written by the CPU first (word `i`
/// holds `i`) or not.
pub fn resident(
    m: &mut Machine,
    pid: Pid,
    size: u64,
    piece: u64,
    prefetch: bool,
    data: bool,
) -> u64 {
    let mut r = Run::new(m, pid);
    let gpu = r.gpu_ids[0];
    let a = r.alloc(size, &[]).unwrap();
    if data {
        let words: Vec<u32> = (0..size / 4).map(|i| u32::try_from(i).unwrap()).collect();
        r.write_u32s(a, &words).unwrap();
    }
    for at in (a..a + size).step_by(usize::try_from(piece).unwrap()) {
        let mut attrs = vec![
            SvmAttribute::new(attr_type::GRANULARITY, 0),
            SvmAttribute::new(attr_type::ACCESS, gpu),
        ];
        if prefetch {
            attrs.push(SvmAttribute::new(attr_type::PREFETCH_LOC, gpu));
        }
        // Different granularities make neighbours separate ranges.
        attrs[0] = SvmAttribute::new(
            attr_type::GRANULARITY,
            u32::try_from((at / piece) % 2).unwrap(),
        );
        r.set_attr(at, piece, attrs).unwrap();
    }
    a
}

/// Bytes of the fault kernel's buffer: one wave, and one retry fault, per
/// page.
pub const FAULT_SIZE: u64 = 4 << 20;

/// A machine set up for the fault kernel: its buffer registered as one
/// range per page, not resident. (The 2 ms duplicate window is per range,
/// so pages of one range would mostly be dropped and retried.)
pub fn fault_machine() -> (Machine, Pid, u64) {
    let mut m = Machine::new(
        Topology::new(svm_sim::timing::Profile::built_in("mi210").unwrap().gpus()).unwrap(),
        true,
        MemLimit::for_sysmem(8 << 30),
    );
    let pid = m.spawn("bench");
    let a = resident(&mut m, pid, FAULT_SIZE, 4096, false, false);
    (m, pid, a)
}

/// Launches `waves` waves of `f` on the GPU and waits for them.
pub fn run_kernel(m: &mut Machine, pid: Pid, waves: u32, f: KernelFn) -> KernelStats {
    let k = m.launch_kernel(pid, 0x1002, waves, f).unwrap();
    m.wait_kernel(k).unwrap()
}

/// Runs the fault kernel: each wave loads 4 bytes of its own page.
pub fn run_faults(m: &mut Machine, pid: Pid, a: u64) {
    let waves = u32::try_from(FAULT_SIZE / 4096).unwrap();
    let f = kernel(move |w, ctx| async move {
        std::hint::black_box(ctx.load(a + u64::from(w) * 4096, 4).await);
    });
    let st = run_kernel(m, pid, waves, f);
    assert!(st.faults >= FAULT_SIZE / 4096);
}

/// The TLB-hit kernel: each wave loads its own 256 bytes of the set
/// `loads` times and checks their first word (the CPU wrote each word's
/// index, or nothing when `data` is false).
pub fn run_tlb_hits(m: &mut Machine, pid: Pid, a: u64, data: bool, loads: u64) {
    let f = kernel(move |w, ctx| async move {
        let off = (u64::from(w) * 256) % SET;
        let want = if data {
            u32::try_from(off / 4).unwrap()
        } else {
            0
        };
        for _ in 0..loads {
            let d = ctx.load(a + off, 256).await;
            // (One borrow of the bytes for the whole check: each index
            // of `d` itself would borrow them again.)
            let v: &[u8] = &d;
            let first = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            assert_eq!(std::hint::black_box(first), want);
        }
    });
    let st = run_kernel(m, pid, WAVES, f);
    assert_eq!(st.accesses, u64::from(WAVES) * loads);
}

/// The write-back kernel (a read-modify-write): each wave loads its own 256 bytes of the
/// set and stores them back changed, `pairs` times, keeping the load's
/// bytes while it stores (as code that reads `v` after the store would).
pub fn run_write_back(m: &mut Machine, pid: Pid, a: u64, pairs: u64) {
    let f = kernel(move |w, ctx| async move {
        let p = a + (u64::from(w) * 256) % SET;
        for _ in 0..pairs {
            let v = ctx.load(p, 256).await;
            let next: Vec<u8> = v.iter().map(|b| b ^ 1).collect();
            ctx.store(p, next).await;
            std::hint::black_box(&v);
        }
    });
    let st = run_kernel(m, pid, WAVES, f);
    assert_eq!(st.accesses, u64::from(WAVES) * 2 * pairs);
}

/// The TLB-hit kernel's rate on this machine now, in simulated accesses
/// per host second: the median of `samples` runs, each on a fresh machine
/// whose set is already resident (the set-up is not timed).
pub fn tlb_hit_rate(samples: usize) -> f64 {
    let mut rates: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let (mut m, pid) = machine(grid());
            let a = resident(&mut m, pid, SET, SET, true, true);
            let t = std::time::Instant::now();
            run_tlb_hits(&mut m, pid, a, true, LOADS);
            (u64::from(WAVES) * LOADS) as f64 / t.elapsed().as_secs_f64().max(1e-9)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

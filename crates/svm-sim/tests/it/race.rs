//! munmap racing GPU faults, across seeds of the scheduler.
//!
//! Two GPUs fault a shared, registered buffer window by window (each fault
//! migrates the window to the faulting GPU's VRAM and maps it there) while
//! the CPU unmaps a random piece of it. The seed decides how far the waves,
//! the fault deliveries and munmap's deferred work get before and after the
//! munmap. Whatever the order:
//! - the checker holds after every step: no GPU maps unmapped memory, every
//!   PTE, DMA entry and VRAM buffer is consistent, no byte is lost;
//! - a wave either completes or dies with EFAULT inside the unmapped piece;
//! - a fault still in flight for unmapped memory never recreates a range
//!   there;
//! - once everything has run, nothing is pending, and after exit no VRAM,
//!   DMA mapping or reservation is left.
//!
//! `SVM_RACE_SEEDS` sets the number of seeds (default 1000); `SVM_RACE_SEED`
//! runs just one.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use svm_core::addr::{CpuVa, PageNum, PageRange};
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY};
use svm_sim::check;
use svm_sim::machine::AccessError;

use crate::support::{GPU0, GPU1, Kfd, MIB, PAGE, words};

/// What one seed saw, summed over seeds to show the races were reached.
#[derive(Default, Debug)]
struct Seen {
    stragglers: u64,
    unmapping: u64,
    waves_killed: u64,
    munmap_with_faults_pending: u64,
}

fn run_seed(seed: u64, seen: &mut Seen) -> Result<(), String> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut k = Kfd::new(true);
    k.m.set_seed(Some(seed));
    let size = MIB;
    let buf = k.mmap(size);
    k.cpu_write(buf, &words((size / 4) as usize, |i| i ^ 0xa5a5_0000));
    // 64 KiB windows; both GPUs may access, so each fault pulls the window
    // into the faulting GPU's VRAM.
    k.set(
        buf,
        size,
        &[(GRANULARITY, 4), (ACCESS, GPU0), (ACCESS, GPU1)],
    )
    .map_err(|e| format!("set_attr: {e}"))?;
    let pages = size / PAGE;
    // GPU0 reads the first half, GPU1 writes the second.
    let half = size / 2;
    let read =
        k.m.launch(k.pid, GPU0, CpuVa::new(buf), half, None)
            .map_err(|e| e.to_string())?;
    let data = words((half / 4) as usize, |i| i.wrapping_mul(31));
    let write =
        k.m.launch(k.pid, GPU1, CpuVa::new(buf + half), half, Some(&data))
            .map_err(|e| e.to_string())?;
    let check = |k: &Kfd, when: &str| check::check(&k.m).map_err(|v| format!("{when}: {v}"));
    k.m.interleave();
    check(&k, "before munmap")?;
    let a = rng.random_range(0..pages);
    let b = rng.random_range(a + 1..=pages);
    let hole = PageRange::new(PageNum::new(buf / PAGE + a), PageNum::new(buf / PAGE + b));
    if k.m.faults_pending() {
        seen.munmap_with_faults_pending += 1;
    }
    k.m.munmap(k.pid, CpuVa::new(buf + a * PAGE), (b - a) * PAGE)
        .map_err(|e| e.to_string())?;
    check(&k, "after munmap")?;
    for step in 0..rng.random_range(0..4) {
        k.m.interleave();
        check(&k, &format!("interleave {step}"))?;
    }
    if !k.m.quiesce() {
        return Err("work still pending after quiesce".into());
    }
    check(&k, "after quiesce")?;
    for (w, base) in [(read, buf), (write, buf + half)] {
        match k.m.wait(w) {
            Ok(_) => {}
            Err(AccessError::VmFault { addr, errno, .. }) => {
                seen.waves_killed += 1;
                if !hole.contains(addr.page_num()) || errno != svm_core::Errno::Efault {
                    return Err(format!(
                        "wave at {base:#x} died at {addr} ({errno}), outside the hole {hole}"
                    ));
                }
            }
            Err(e) => return Err(format!("wave at {base:#x}: {e}")),
        }
    }
    let svm = &k.m.process(k.pid).svm;
    if svm.ranges().overlapping(hole).next().is_some() || svm.deferred_pending() {
        return Err(format!("a range is left over the hole {hole}"));
    }
    for (_, st) in svm.stats().iter() {
        seen.stragglers += st.stragglers_dropped;
        seen.unmapping += st.unmapping_dropped;
    }
    // The data outside the hole is what was written: the checker compares
    // every page with the shadow, and the first half had only the CPU's.
    k.m.exit(k.pid);
    check(&k, "after exit")?;
    let leaked: usize =
        k.m.gpus()
            .iter()
            .map(|g| g.bufs.len() + g.iommu.len())
            .sum();
    if leaked != 0 || k.m.mem_limit().used_bytes != 0 {
        return Err(format!("{leaked} VRAM buffers or DMA mappings leaked"));
    }
    Ok(())
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| {
        let v = v.trim();
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    })
}

#[test]
fn munmap_during_fault_migration_leaves_no_stale_pte_or_leak() {
    let seeds: Vec<u64> = match env("SVM_RACE_SEED") {
        Some(s) => vec![s],
        None => (0..env("SVM_RACE_SEEDS").unwrap_or(1000)).collect(),
    };
    let mut seen = Seen::default();
    for &seed in &seeds {
        if let Err(e) = run_seed(seed, &mut seen) {
            panic!(
                "seed {seed}: {e}\n  reproduce with `SVM_RACE_SEED={seed} cargo nextest run -p svm-sim munmap_during_fault_migration`"
            );
        }
    }
    // The seeds must reach the races they are about, or the test proves
    // nothing.
    if seeds.len() >= 100 {
        eprintln!("{} seeds: {seen:?}", seeds.len());
        assert!(seen.munmap_with_faults_pending > 0, "{seen:?}");
        assert!(seen.stragglers > 0, "{seen:?}");
        assert!(seen.unmapping > 0, "{seen:?}");
        assert!(seen.waves_killed > 0, "{seen:?}");
    }
}

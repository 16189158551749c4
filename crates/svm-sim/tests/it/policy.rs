//! The policy seam, proved from outside the engine: a policy that keeps
//! per-block history, maps remotely on the first touch of a 2 MiB block
//! and migrates the block on the second, with no change to `svm-core`.

use std::collections::BTreeMap;

use svm_core::addr::{CpuVa, PageNum, PageRange};
use svm_core::policy::{FaultCtx, FaultPlan, FaultPolicy, Migration, PolicyFactory};
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY};
use svm_sim::mm::{Backing, Mark, Prot};

use crate::support::*;

/// Pages in a 2 MiB block.
const BLOCK_PAGES: u64 = 512;

/// Migrate on the second touch of a 2 MiB block; before that, map the
/// faulting window where it is (remotely, in system memory).
#[derive(Debug, Default)]
struct SecondTouch {
    /// Faults served per block (by block number).
    touches: BTreeMap<u64, u32>,
}

impl FaultPolicy for SecondTouch {
    fn name(&self) -> &str {
        "second-touch"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        let block = ctx.page.raw() / BLOCK_PAGES;
        let n = self.touches.entry(block).or_default();
        *n += 1;
        if *n < 2 {
            return FaultPlan::Serve {
                migrate: None,
                map: ctx.window,
            };
        }
        // The whole block (the engine clips it to the range).
        let pages = PageRange::new(
            PageNum::new(block * BLOCK_PAGES),
            PageNum::new((block + 1) * BLOCK_PAGES),
        );
        FaultPlan::Serve {
            migrate: Some(Migration {
                to: ctx.best,
                pages,
            }),
            map: pages,
        }
    }

    fn on_unmap(&mut self, range: PageRange) {
        let (lo, hi) = (
            range.start().raw() / BLOCK_PAGES,
            range.end().raw().div_ceil(BLOCK_PAGES),
        );
        self.touches.retain(|&b, _| b < lo || b >= hi);
    }
}

/// A 4 MiB buffer (two blocks, 2 MiB aligned) the CPU wrote, at 64 KiB
/// granularity, for GPU 0, under the second-touch policy.
fn machine() -> (Kfd, u64) {
    let mut k = Kfd::new(true);
    k.m.set_fault_policy(PolicyFactory::new(|| Box::new(SecondTouch::default())));
    // 2 MiB aligned, so that blocks are the buffer's halves.
    let raw = k.mmap(6 * MIB);
    let buf = raw.next_multiple_of(2 * MIB);
    k.cpu_write(buf, &words((4 * MIB / 4) as usize, |i| i.wrapping_mul(7)));
    k.set(buf, 4 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 4)])
        .unwrap();
    (k, buf)
}

fn word(k: &mut Kfd, addr: u64) -> u32 {
    let b = k.gpu_read(GPU0, addr, 4);
    u32::from_le_bytes(b.try_into().unwrap())
}

#[test]
fn a_policy_outside_the_engine_maps_remotely_then_migrates_on_the_second_touch() {
    let (mut k, buf) = machine();
    assert_eq!(k.m.process(k.pid).svm.fault_policy().name(), "second-touch");
    // First touch of block 0: mapped where it is, nothing moves.
    assert_eq!(word(&mut k, buf + 8), 2 * 7);
    assert_eq!(k.vram_pages_in(buf, 4 * MIB), 0);
    assert_eq!(k.m.counters().pages_to_vram, 0);
    // The rest of its 64 KiB window is mapped too: no new fault.
    let faults = k.m.process(k.pid).svm.stats()[idx0()].faults;
    assert_eq!(word(&mut k, buf + 60 * 1024), (60 * 1024 / 4) * 7);
    assert_eq!(k.m.process(k.pid).svm.stats()[idx0()].faults, faults);
    // Second touch of block 0 (another window): the whole block moves.
    assert_eq!(word(&mut k, buf + MIB), (1 << 18) * 7);
    assert_eq!(k.vram_pages_in(buf, 2 * MIB), BLOCK_PAGES);
    assert_eq!(
        k.vram_pages_in(buf + 2 * MIB, 2 * MIB),
        0,
        "block 1 untouched"
    );
    // Block 1's first touch is remote again: history is per block.
    assert_eq!(word(&mut k, buf + 3 * MIB), (3 << 18) * 7);
    assert_eq!(k.vram_pages_in(buf + 2 * MIB, 2 * MIB), 0);
    k.check();
}

#[test]
fn munmap_drops_the_policy_s_history_of_the_memory() {
    let (mut k, buf) = machine();
    word(&mut k, buf);
    // Unmap block 0 and map fresh memory there: its next touch is a
    // first touch again.
    k.munmap(buf, 2 * MIB);
    k.m.mmap(
        k.pid,
        Some(CpuVa::new(buf)),
        2 * MIB,
        Prot::RW,
        Backing::Anon,
        Mark::None,
    )
    .unwrap();
    k.set(buf, 2 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 4)])
        .unwrap();
    word(&mut k, buf + MIB);
    assert_eq!(
        k.vram_pages_in(buf, 2 * MIB),
        0,
        "a first touch maps remotely"
    );
    word(&mut k, buf + 8);
    assert_eq!(k.vram_pages_in(buf, 2 * MIB), BLOCK_PAGES);
    k.check();
}

/// Every process gets its own instance: one process's touches do not count
/// for another's.
#[test]
fn each_process_keeps_its_own_history() {
    let (mut k, buf) = machine();
    word(&mut k, buf);
    let other = k.m.spawn("p1");
    let mut k2 = Kfd { m: k.m, pid: other };
    let _ = k2.m.set_xnack_mode(other, 1);
    let raw = k2.mmap(6 * MIB);
    let b2 = raw.next_multiple_of(2 * MIB);
    k2.set(b2, 4 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 4)])
        .unwrap();
    word(&mut k2, b2 + MIB);
    assert_eq!(k2.vram_pages_in(b2, 4 * MIB), 0, "p1's first touch");
}

fn idx0() -> svm_core::gpu::GpuIndex {
    svm_core::gpu::GpuIndex::new(0).unwrap()
}

/// Throttles each page's first fault for 5 ms, then serves kfd's way.
#[derive(Debug, Default)]
struct Throttle {
    seen: std::collections::BTreeSet<u64>,
}

impl FaultPolicy for Throttle {
    fn name(&self) -> &str {
        "throttle"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        if self.seen.insert(ctx.page.raw()) {
            return FaultPlan::Retry {
                after_ns: 5_000_000,
            };
        }
        FaultPlan::Serve {
            migrate: Some(Migration {
                to: ctx.best,
                pages: ctx.window,
            }),
            map: ctx.window,
        }
    }
}

#[test]
fn a_throttled_fault_is_retried_after_the_policy_s_delay() {
    let mut k = Kfd::new(true);
    k.m.set_fault_policy(PolicyFactory::new(|| Box::new(Throttle::default())));
    let buf = k.mmap(2 * MIB);
    k.set(buf, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    let t0 = k.m.now_ns();
    let (_, st) =
        k.m.gpu_access(k.pid, GPU0, CpuVa::new(buf), 4, None)
            .unwrap();
    assert_eq!((st.faults, st.retries), (2, 1), "{st:?}");
    assert!(
        k.m.now_ns() - t0 >= 5_000_000,
        "waited {} ns",
        k.m.now_ns() - t0
    );
    assert_eq!(k.vram_pages_in(buf, 2 * MIB), 512);
    k.check();
}

/// Plans a migration to a GPU the process does not have: a bug in the
/// policy, which the engine refuses rather than panic on.
#[derive(Debug)]
struct Stray;

impl FaultPolicy for Stray {
    fn name(&self) -> &str {
        "stray"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        FaultPlan::Serve {
            migrate: Some(Migration {
                to: svm_core::attr::Location::Vram(svm_core::gpu::GpuId::new(0x9999).unwrap()),
                pages: ctx.window,
            }),
            map: ctx.window,
        }
    }
}

#[test]
fn a_plan_to_a_gpu_the_process_lacks_is_refused_not_a_panic() {
    let mut k = Kfd::new(true);
    k.m.set_fault_policy(PolicyFactory::new(|| Box::new(Stray)));
    let buf = k.mmap(2 * MIB);
    k.set(buf, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    let e =
        k.m.gpu_access(k.pid, GPU0, CpuVa::new(buf), 4, None)
            .unwrap_err();
    assert_eq!(e.errno(), svm_core::Errno::Einval, "{e}");
    assert!(e.to_string().contains("does not have"), "{e}");
    assert_eq!(k.vram_pages_in(buf, 2 * MIB), 0);
    k.check();
}

/// A machine running an outside policy takes a config that names it, and
/// keeps running it (with fresh instances).
#[test]
fn an_outside_policy_survives_set_config() {
    let (mut k, buf) = machine();
    word(&mut k, buf);
    let mut c = k.m.config().clone();
    assert_eq!(c.policy, "second-touch");
    c.assign("bulk_dma_unmap=on").unwrap();
    k.m.set_config(&c).unwrap();
    assert_eq!(k.m.process(k.pid).svm.fault_policy().name(), "second-touch");
    assert!(k.m.process(k.pid).svm.config().bulk_dma_unmap);
    // A fresh instance: block 0's first touch was forgotten.
    word(&mut k, buf + MIB);
    assert_eq!(k.vram_pages_in(buf, 2 * MIB), 0);
    // An unknown name that is not the running policy is refused.
    c.policy = "third-touch".into();
    assert!(k.m.set_config(&c).is_err());
}

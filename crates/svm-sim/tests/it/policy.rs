//! The policy seam, proved from outside the engine: a policy that keeps
//! per-block history, maps remotely on the first touch of a 2 MiB block
//! and migrates the block on the second, with no change to `svm-core`.

use std::collections::BTreeMap;

use svm_core::addr::{CpuVa, PageNum, PageRange};
use svm_core::policy::{
    BatchFault, BatchStep, FaultCtx, FaultPlan, FaultPolicy, Migration, NewRangeCtx, Policy,
    PolicyFactory,
};
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY, NO_ACCESS, PREFETCH_LOC};
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
            return FaultPlan::serve(None, ctx.window);
        }
        // The whole block (the engine clips it to the range).
        let pages = PageRange::new(
            PageNum::new(block * BLOCK_PAGES),
            PageNum::new((block + 1) * BLOCK_PAGES),
        );
        FaultPlan::serve(
            Some(Migration {
                to: ctx.best,
                pages,
            }),
            pages,
        )
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
    let mut k2 = Kfd::attach(k.m, other);
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
        FaultPlan::serve(
            Some(Migration {
                to: ctx.best,
                pages: ctx.window,
            }),
            ctx.window,
        )
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
        FaultPlan::serve(
            Some(Migration {
                to: svm_core::attr::Location::Vram(svm_core::gpu::GpuId::new(0x9999).unwrap()),
                pages: ctx.window,
            }),
            ctx.window,
        )
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

/// What [`BlockBatch`] was asked and decided, in order.
#[derive(Debug, Default)]
struct BatchLog {
    /// Each batch's faulting pages, as the engine gave them.
    batches: Vec<Vec<u64>>,
    /// Each plan: the page served and the pages coalesced into it.
    plans: Vec<(u64, Vec<u64>)>,
    /// The lead page of each step, in the order `order` answered.
    order: Vec<u64>,
}

/// UVM's shape of service, from outside the engine: the handler takes a
/// batch at once; faults are sorted by 2 MiB block and each block is
/// served once, the block's other faults coalesced into its first. The
/// plan migrates and maps the whole block.
#[derive(Debug)]
struct BlockBatch {
    batched: bool,
    log: std::sync::Arc<std::sync::Mutex<BatchLog>>,
}

impl FaultPolicy for BlockBatch {
    fn name(&self) -> &str {
        "block-batch"
    }

    fn batched(&self) -> bool {
        self.batched
    }

    fn order(&mut self, faults: &[BatchFault]) -> Vec<BatchStep> {
        let mut by_block: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, f) in faults.iter().enumerate() {
            by_block
                .entry(f.page.raw() / BLOCK_PAGES)
                .or_default()
                .push(i);
        }
        let steps: Vec<BatchStep> = by_block
            .into_values()
            .map(|ix| BatchStep {
                serve: ix[0],
                with: ix[1..].to_vec(),
            })
            .collect();
        let mut log = self.log.lock().unwrap();
        log.batches
            .push(faults.iter().map(|f| f.page.raw()).collect());
        log.order
            .extend(steps.iter().map(|s| faults[s.serve].page.raw()));
        steps
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        self.log.lock().unwrap().plans.push((
            ctx.page.raw(),
            ctx.coalesced.iter().map(|p| p.raw()).collect(),
        ));
        let block = ctx.page.raw() / BLOCK_PAGES;
        let pages = PageRange::new(
            PageNum::new(block * BLOCK_PAGES),
            PageNum::new((block + 1) * BLOCK_PAGES),
        );
        FaultPlan::serve(
            Some(Migration {
                to: ctx.best,
                pages,
            }),
            pages,
        )
    }
}

/// Each of 64 waves stores its number into its own 64 KiB of a 4 MiB
/// buffer (two 2 MiB blocks) under [`BlockBatch`], on a machine whose
/// handler takes up to 256 faults a batch: the log, the faults the
/// engine handled, and the machine.
fn run_block_batch(batched: bool) -> (BatchLog, u64, Kfd, u64) {
    let mut k = Kfd::new(true);
    k.m.apply_profile(&svm_sim::timing::Profile::built_in("uvm-pcie").unwrap());
    // No 2 ms duplicate window: every step's lead reaches the plan.
    let mut c = k.m.config().clone();
    c.retry_fault_pending_ns = 0;
    k.m.set_config(&c).unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(BatchLog::default()));
    let l = log.clone();
    k.m.set_fault_policy(PolicyFactory::new(move || {
        Box::new(BlockBatch {
            batched,
            log: l.clone(),
        })
    }));
    let raw = k.mmap(6 * MIB);
    let buf = raw.next_multiple_of(2 * MIB);
    k.set(buf, 4 * MIB, &[(ACCESS, GPU0)]).unwrap();
    let kernel: svm_sim::machine::KernelFn = std::rc::Rc::new(move |w: u32, ctx| {
        Box::pin(async move {
            ctx.store_u32s(buf + u64::from(w) * 64 * 1024, &[w + 1])
                .await;
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 64, kernel).unwrap();
    k.m.wait_kernel(id).unwrap();
    let handled = k.m.process(k.pid).svm.stats()[idx0()].faults;
    let log = std::mem::take(&mut *log.lock().unwrap());
    (log, handled, k, buf)
}

#[test]
fn a_batched_policy_orders_and_coalesces_a_batch_and_no_fault_is_lost() {
    let (log, handled, mut k, buf) = run_block_batch(true);
    assert_eq!(k.vram_pages_in(buf, 4 * MIB), 2 * BLOCK_PAGES);
    // Every wave's store landed.
    for w in 0..64u32 {
        let b = k.cpu_read(buf + u64::from(w) * 64 * 1024, 4);
        assert_eq!(u32::from_le_bytes(b.try_into().unwrap()), w + 1, "wave {w}");
    }
    assert!(!log.batches.is_empty(), "the policy was asked to order");
    assert!(
        log.batches.iter().any(|b| b.len() > 1),
        "faults arrived together: {:?}",
        log.batches
    );
    // The engine served the steps in the policy's order, each with the
    // pages the policy coalesced into it...
    let served: Vec<u64> = log.plans.iter().map(|(p, _)| *p).collect();
    assert_eq!(served, log.order);
    // ...and every fault of every batch was served or coalesced, once.
    let mut given: Vec<u64> = log.batches.concat();
    let mut covered: Vec<u64> = log
        .plans
        .iter()
        .flat_map(|(p, with)| std::iter::once(*p).chain(with.iter().copied()))
        .collect();
    given.sort_unstable();
    covered.sort_unstable();
    assert_eq!(given, covered);
    // Coalesced faults never reach the handler: it handled one per step.
    assert_eq!(handled, log.order.len() as u64);
    k.check();

    // Served one by one instead, the same faults each reach the handler.
    let (one_by_one, handled_alone, _, _) = run_block_batch(false);
    assert!(one_by_one.batches.is_empty(), "not asked to order");
    assert!(
        handled_alone > handled,
        "coalescing handled {handled} faults, one by one {handled_alone}"
    );
}

/// Answers `order` with nonsense: indices out of the batch, one twice,
/// some left out.
#[derive(Debug)]
struct BadOrder;

impl FaultPolicy for BadOrder {
    fn name(&self) -> &str {
        "bad-order"
    }

    fn batched(&self) -> bool {
        true
    }

    fn order(&mut self, faults: &[BatchFault]) -> Vec<BatchStep> {
        vec![
            BatchStep {
                serve: faults.len() + 3,
                with: vec![0],
            },
            BatchStep {
                serve: 0,
                with: vec![0, 99],
            },
        ]
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        FaultPlan::serve(
            Some(Migration {
                to: ctx.best,
                pages: ctx.window,
            }),
            ctx.window,
        )
    }
}

#[test]
fn a_wrong_batch_order_loses_no_fault_and_panics_nothing() {
    let mut k = Kfd::new(true);
    k.m.apply_profile(&svm_sim::timing::Profile::built_in("uvm-pcie").unwrap());
    k.m.set_fault_policy(PolicyFactory::new(|| Box::new(BadOrder)));
    let buf = k.mmap(4 * MIB);
    k.set(buf, 4 * MIB, &[(ACCESS, GPU0)]).unwrap();
    let kernel: svm_sim::machine::KernelFn = std::rc::Rc::new(move |w: u32, ctx| {
        Box::pin(async move {
            ctx.store_u32s(buf + u64::from(w) * 64 * 1024, &[w + 1])
                .await;
        })
    });
    let id = k.m.launch_kernel(k.pid, GPU0, 32, kernel).unwrap();
    k.m.wait_kernel(id).unwrap();
    for w in 0..32u32 {
        let b = k.cpu_read(buf + u64::from(w) * 64 * 1024, 4);
        assert_eq!(u32::from_le_bytes(b.try_into().unwrap()), w + 1, "wave {w}");
    }
    k.check();
}

/// Maps the faulting window on every GPU the range allows, not just the
/// faulting one (UVM's accessed-by; kfd maps so for ACCESS_IN_PLACE).
#[derive(Debug)]
struct MapEverywhere;

impl FaultPolicy for MapEverywhere {
    fn name(&self) -> &str {
        "map-everywhere"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        FaultPlan::serve(None, ctx.window).also_on(svm_core::gpu::GpuMask::first(2))
    }
}

#[test]
fn a_plan_maps_on_other_gpus_the_range_allows_and_no_others() {
    let mut k = Kfd::new(true);
    k.m.set_fault_policy(PolicyFactory::new(|| Box::new(MapEverywhere)));
    let a = k.mmap(2 * MIB);
    let b = k.mmap(2 * MIB);
    k.cpu_write(a, &words(1024, |i| i + 5));
    k.set(a, 2 * MIB, &[(ACCESS, GPU0), (ACCESS, GPU1)])
        .unwrap();
    // With XNACK on every GPU may access a new range (kfd's default);
    // NO_ACCESS takes GPU 1's away.
    k.set(b, 2 * MIB, &[(ACCESS, GPU0), (NO_ACCESS, GPU1)])
        .unwrap();
    // GPU 0's fault maps the window on GPU 1 too: GPU 1 reads with no
    // fault of its own, remotely from system memory.
    assert_eq!(k.gpu_read(GPU0, a, 4), 5u32.to_le_bytes());
    let idx1 = svm_core::gpu::GpuIndex::new(1).unwrap();
    let before = k.m.process(k.pid).svm.stats()[idx1].faults;
    assert_eq!(k.gpu_read(GPU1, a + 8, 4), 7u32.to_le_bytes());
    assert_eq!(k.m.process(k.pid).svm.stats()[idx1].faults, before);
    assert_eq!(k.vram_pages_in(a, 2 * MIB), 0, "nothing migrated");
    // A range GPU 1 may not access is not mapped there.
    k.gpu_read(GPU0, b, 4);
    let on1: Vec<u64> = k.m.page_tables(k.pid)[1]
        .iter()
        .map(|(p, _)| p.raw())
        .collect();
    assert!(
        on1.iter()
            .all(|&p| p < b / 4096 || p >= (b + 2 * MIB) / 4096),
        "mapped on a GPU without access: a={:#x} b={:#x} {:#x?}",
        a / 4096,
        b / 4096,
        on1
    );
    k.check();
}

/// drm_gpusvm's ranges, from outside the engine: a fault on memory no
/// range holds makes a range of the largest chunk of {2 MiB, 64 KiB,
/// 4 KiB} around the page that fits in the room left; ranges never split;
/// a fault migrates and maps its whole range, so none holds mixed
/// residency.
#[derive(Debug)]
struct Chunks;

impl FaultPolicy for Chunks {
    fn name(&self) -> &str {
        "chunks"
    }

    fn new_range(&mut self, ctx: &NewRangeCtx) -> PageRange {
        for pages in [512, 16, 1] {
            let n = svm_core::addr::PageCount::new(pages);
            let lo = ctx.page.align_down(n);
            let chunk = PageRange::new(lo, lo.add(n));
            if ctx.room.contains_range(chunk) {
                return chunk;
            }
        }
        ctx.kfd
    }

    fn splits_ranges(&self) -> bool {
        false
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        let whole = ctx.range.range();
        FaultPlan::serve(
            Some(Migration {
                to: ctx.best,
                pages: whole,
            }),
            whole,
        )
    }
}

/// A 2 MiB-aligned VMA of 2 MiB + 72 KiB, never registered, under `policy`.
fn unregistered(policy: PolicyFactory) -> (Kfd, u64) {
    let mut k = Kfd::new(true);
    k.m.set_fault_policy(policy);
    let raw = k.mmap(8 * MIB);
    let base = raw.next_multiple_of(2 * MIB);
    k.munmap(raw, 8 * MIB);
    k.m.mmap(
        k.pid,
        Some(CpuVa::new(base)),
        2 * MIB + 72 * 1024,
        Prot::RW,
        Backing::Anon,
        Mark::None,
    )
    .unwrap();
    (k, base)
}

#[test]
fn chunked_ranges_take_the_largest_chunk_that_fits_and_never_split() {
    let (mut k, base) = unregistered(PolicyFactory::new(|| Box::new(Chunks)));
    // Three faults, three chunk sizes: 2 MiB fits at the start; after it
    // only 72 KiB of VMA is left, so 64 KiB; after that 8 KiB, so 4 KiB.
    for (off, v) in [(4096, 1u32), (2 * MIB + 4096, 2), (2 * MIB + 68 * 1024, 3)] {
        k.gpu_write(GPU0, base + off, &v.to_le_bytes());
    }
    let sizes: Vec<(u64, u64)> = k
        .ranges_from(base)
        .iter()
        .map(|&(start, pages, _)| (start, pages))
        .collect();
    assert_eq!(sizes, [(0, 512), (512, 16), (512 + 17, 1)]);
    // Each fault moved its whole range: no range holds mixed residency.
    assert_eq!(k.vram_pages_in(base, 2 * MIB), 512);
    assert_eq!(k.vram_pages_in(base + 2 * MIB, 64 * 1024), 16);

    // A munmap of one page inside the 2 MiB range drops the range whole;
    // its pages that stay mapped went back to system memory first.
    k.munmap(base + MIB, 4096);
    k.m.quiesce();
    assert!(
        k.ranges_from(base)
            .iter()
            .all(|&(start, _, _)| start >= 512),
        "the 2 MiB range is gone: {:?}",
        k.ranges_from(base)
    );
    assert_eq!(k.vram_pages_in(base, MIB), 0);
    assert_eq!(k.cpu_read(base + 4096, 4), 1u32.to_le_bytes());
    // The memory left gets a new range at its next fault, of the chunk
    // that fits the VMA now (1 MiB below the hole: 64 KiB).
    k.gpu_read(GPU0, base + 4096, 4);
    assert_eq!(k.ranges_from(base)[0].0..k.ranges_from(base)[0].1, 0..16);
    k.check();

    // kfd's rule on the same memory: the munmap splits the range and the
    // pieces stay.
    let (mut k, base) = unregistered(Policy::Partial.entry().factory());
    k.gpu_write(GPU0, base + 4096, &1u32.to_le_bytes());
    let before = k.ranges_from(base).len();
    k.munmap(base + MIB, 4096);
    k.m.quiesce();
    assert!(
        k.ranges_from(base).len() > before,
        "{:?}",
        k.ranges_from(base)
    );
    k.check();
}

/// Makes ranges that miss the faulting page: the engine refuses the fault
/// rather than make one or panic.
#[derive(Debug)]
struct Elsewhere;

impl FaultPolicy for Elsewhere {
    fn name(&self) -> &str {
        "elsewhere"
    }

    fn new_range(&mut self, ctx: &NewRangeCtx) -> PageRange {
        PageRange::new(
            ctx.page.add(svm_core::addr::PageCount::new(1)),
            ctx.page.add(svm_core::addr::PageCount::new(2)),
        )
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        FaultPlan::serve(None, ctx.window)
    }
}

#[test]
fn a_new_range_that_misses_the_page_is_refused() {
    let (mut k, base) = unregistered(PolicyFactory::new(|| Box::new(Elsewhere)));
    let e =
        k.m.gpu_access(k.pid, GPU0, CpuVa::new(base), 4, None)
            .unwrap_err();
    assert_eq!(e.errno(), svm_core::Errno::Einval, "{e}");
    assert!(k.ranges_from(base).is_empty());
    k.check();
}

/// Serves a fault with two runs that are not contiguous, as UVM serves
/// a va_block's faulted pages and its prefetch hint: the faulting page's
/// 64 KiB, and the 64 KiB 1 MiB on; plus a run past the range (clipped
/// away) and an empty one (skipped).
#[derive(Debug)]
struct TwoRuns;

impl FaultPolicy for TwoRuns {
    fn name(&self) -> &str {
        "two-runs"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        let big = svm_core::addr::PageCount::new(16);
        let first = ctx.page.align_down(big);
        let far = first.add(svm_core::addr::PageCount::new(256));
        let end = ctx.range.range().end();
        FaultPlan::serve_runs(
            ctx.best,
            vec![
                PageRange::new(first, first.add(big)),
                PageRange::new(far, far),
                PageRange::new(far, far.add(big)),
                PageRange::new(end, end.add(big)),
            ],
        )
    }
}

#[test]
fn a_plan_serves_runs_that_are_not_contiguous_in_one_fault() {
    let mut k = Kfd::new(true);
    k.m.set_fault_policy(PolicyFactory::new(|| Box::new(TwoRuns)));
    let a = k.mmap(2 * MIB);
    k.cpu_write(a, &words(512 * 1024, |i| i ^ 0x5a));
    k.set(a, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    let faults = |k: &Kfd| k.stats().faults;
    let before = faults(&k);
    assert_eq!(
        k.gpu_read(GPU0, a + 4 * 4096 + 8, 4),
        (4098u32 ^ 0x5a).to_le_bytes()
    );
    assert_eq!(faults(&k), before + 1, "one fault served both runs");
    assert_eq!(k.vram_pages_in(a, 64 * 1024), 16);
    assert_eq!(k.vram_pages_in(a + MIB, 64 * 1024), 16);
    assert_eq!(
        k.vram_pages_in(a, 2 * MIB),
        32,
        "nothing between or past them"
    );
    // The second run is mapped too: reading it faults no more.
    assert_eq!(
        k.gpu_read(GPU0, a + MIB + 4, 4),
        (262_145u32 ^ 0x5a).to_le_bytes()
    );
    assert_eq!(faults(&k), before + 1);
    // Between them nothing was mapped: that read faults (and retries
    // through kfd's 2 ms duplicate window, each retry counted).
    k.gpu_read(GPU0, a + MIB / 2, 4);
    assert!(faults(&k) > before + 1);
    k.check();
}

/// The built-in `uvm` policy on a machine: a lone GPU fault
/// moves its 64 KiB big page where kfd's partial policy moves its 2 MiB
/// window; a second fault in the neighbouring big page, with the first
/// resident, pulls in the 128 KiB subtree (32 of 32 pages) and no more.
#[test]
fn uvm_density_moves_a_big_page_where_kfd_moves_its_window() {
    let run = |policy: &str| {
        let mut k = Kfd::new(true);
        k.m.set_fault_policy(svm_core::policy::lookup(policy).unwrap().factory());
        let raw = k.mmap(8 * MIB);
        let a = raw.next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(1024 * 1024, |i| i));
        k.set(a, 4 * MIB, &[(ACCESS, GPU0)]).unwrap();
        assert_eq!(
            k.gpu_read(GPU0, a + 37 * 4096, 4),
            (37u32 * 1024).to_le_bytes()
        );
        let first = k.vram_pages_in(a, 4 * MIB);
        k.gpu_read(GPU0, a + 50 * 4096, 4);
        let second = k.vram_pages_in(a, 4 * MIB);
        k.check();
        (first, second, k.vram_pages_in(a + 32 * 4096, 32 * 4096))
    };
    assert_eq!(run("partial"), (512, 512, 32));
    assert_eq!(run("uvm"), (16, 32, 32));
}

/// UVM's thrashing mitigation on a CPU-GPU ping-pong of one page, hops
/// far closer than the 500 µs lapse: the first hops migrate; once the
/// page is thrashing its faults are throttled, the GPU's and the CPU's (a
/// fault waits out its 0.5 ms nap, which resets the page's history but
/// not its throttling count) and after ten throttles pinned, and the page settles
/// in system memory with the GPU mapping it remotely: no more faults, no
/// more migrations. 150 ms after the pin the remote mapping goes, and the
/// next GPU access faults and migrates again.
#[test]
fn uvm_thrashing_throttles_then_pins_a_ping_pong_in_system_memory() {
    use svm_core::config::{Config, Driver};
    let faults = |k: &Kfd| k.stats().faults;
    let mut k = Kfd::new(true);
    k.m.apply_profile(&svm_sim::timing::Profile::built_in("uvm-pcie").unwrap());
    k.m.set_config(&Config::for_driver(Driver::Uvm)).unwrap();
    let raw = k.mmap(4 * MIB);
    let a = raw.next_multiple_of(2 * MIB);
    k.set(a, 2 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 0)])
        .unwrap();
    let mut in_vram = Vec::new();
    let mut slowest = 0;
    for round in 0..200u32 {
        let t = k.m.now_ns();
        k.gpu_write(GPU0, a, &round.to_le_bytes());
        slowest = slowest.max(k.m.now_ns() - t);
        in_vram.push(k.vram_pages_in(a, PAGE));
        assert_eq!(k.cpu_read(a, 4), round.to_le_bytes());
    }
    // Migrated at first, in system memory at the end.
    assert_eq!(&in_vram[..4], &[1, 1, 1, 1], "{in_vram:?}");
    // Ten throttles, one a throttling period, come before the pin: the
    // GPU's and the CPU's (a throttled CPU fault sleeps out the nap), so
    // about half as many hops as with the GPU's alone.
    let settled = in_vram.iter().rposition(|&v| v == 1).unwrap() + 1;
    assert!((20..150).contains(&settled), "{settled}: {in_vram:?}");
    assert!(k.m.counters().cpu_throttle_wait_ns > 0);
    assert!(in_vram[settled..].iter().all(|&v| v == 0), "{in_vram:?}");
    assert!(
        slowest >= svm_core::policy::uvm_thrashing::NAP_NS,
        "a throttled fault waits out the nap: {slowest}"
    );
    // Settled: a GPU write is remote, faulting no more.
    let before = faults(&k);
    k.gpu_write(GPU0, a, &7u32.to_le_bytes());
    assert_eq!(faults(&k), before);
    assert_eq!(k.vram_pages_in(a, PAGE), 0);
    let counted =
        |k: &Kfd| -> Vec<(&'static str, u64)> { k.m.process(k.pid).svm.policy_counters() };
    let c = counted(&k);
    assert!(c.contains(&("unpinned_pages", 0)), "{c:?}");
    let n = |name: &str| c.iter().find(|&&(k, _)| k == name).map_or(0, |&(_, v)| v);
    assert!(
        n("throttled_faults") + n("throttled_cpu_faults") >= 10 && n("throttled_cpu_faults") > 0,
        "{c:?}"
    );
    assert!(
        c.iter().any(|&(n, v)| n == "pinned_faults" && v >= 1),
        "{c:?}"
    );
    // After the pin's 150 ms the remote mapping is gone.
    k.m.advance(svm_core::policy::uvm_thrashing::PIN_NS);
    k.gpu_write(GPU0, a, &8u32.to_le_bytes());
    assert!(faults(&k) > before);
    assert_eq!(k.vram_pages_in(a, PAGE), 1);
    assert_eq!(k.cpu_read(a, 4), 8u32.to_le_bytes());
    assert!(counted(&k).contains(&("unpinned_pages", 1)));
    // Without the mitigation every hop migrates.
    let mut k = Kfd::new(true);
    k.m.apply_profile(&svm_sim::timing::Profile::built_in("uvm-pcie").unwrap());
    let mut c = Config::for_driver(Driver::Uvm);
    c.set("uvm_thrashing", "off").unwrap();
    k.m.set_config(&c).unwrap();
    let raw = k.mmap(4 * MIB);
    let a = raw.next_multiple_of(2 * MIB);
    k.set(a, 2 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 0)])
        .unwrap();
    for round in 0..80u32 {
        k.gpu_write(GPU0, a, &round.to_le_bytes());
        assert_eq!(k.vram_pages_in(a, PAGE), 1, "round {round}");
        k.cpu_read(a, 4);
    }
}

/// Two GPUs on the halves of one 2 MiB block (a range of its own under
/// UVM): each half ends in its GPU's VRAM, carved into ranges of their
/// own, where kfd's one VRAM location per range would bounce the whole
/// range between them through system memory.
#[test]
fn uvm_keeps_the_halves_of_a_block_on_the_gpus_that_use_them() {
    use svm_core::config::{Config, Driver};
    let mut k = Kfd::new(true);
    k.m.set_config(&Config::for_driver(Driver::Uvm)).unwrap();
    let raw = k.mmap(4 * MIB);
    let a = raw.next_multiple_of(2 * MIB);
    k.cpu_write(a, &words(512 * 1024, |i| i));
    k.set(a, 2 * MIB, &[(ACCESS, GPU0), (ACCESS, GPU1)])
        .unwrap();
    for round in 0..3 {
        assert_eq!(
            k.gpu_read(GPU0, a + 4096 * 10, 4),
            (10u32 * 1024).to_le_bytes(),
            "{round}"
        );
        assert_eq!(
            k.gpu_read(GPU1, a + MIB + 4096 * 10, 4),
            ((256u32 + 10) * 1024).to_le_bytes()
        );
    }
    let svm = &k.m.process(k.pid).svm;
    let on = |addr: u64| {
        let r = svm.ranges().find(PageNum::new(addr / PAGE)).unwrap();
        (
            r.actual_loc.map(|g| g.get()),
            r.range().npages().raw() < 512,
        )
    };
    assert_eq!(on(a + 4096 * 10), (Some(0), true));
    assert_eq!(on(a + MIB + 4096 * 10), (Some(1), true));
    assert!(k.vram_pages_in(a, MIB) >= 16 && k.vram_pages_in(a + MIB, MIB) >= 16);
    k.check();
}

/// UVM evicts the 2 MiB chunk whose block first became resident longest
/// ago, however recently it was migrated into (`first-resident`, the
/// uvm driver's); kfd's TTM LRU evicts the one validated longest ago.
#[test]
fn uvm_evicts_the_block_first_resident_longest_ago() {
    use svm_core::config::{Config, Driver};
    let run = |victims: &str| {
        let mut k = Kfd::new(true).with_vram(6 * MIB);
        let mut c = Config::for_driver(Driver::Uvm);
        c.set("victim_policy", victims).unwrap();
        k.m.set_config(&c).unwrap();
        let raw = k.mmap(10 * MIB);
        let a = raw.next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(2 * 1024 * 1024, |i| i));
        k.set(a, 8 * MIB, &[(ACCESS, GPU0)]).unwrap();
        let block = |b: u64| a + b * 2 * MIB;
        // Blocks 0, 1 and 2 become resident in that order (a 2 MiB chunk
        // each, for 64 KiB of pages), filling VRAM.
        for b in 0..3 {
            k.gpu_read(GPU0, block(b), 4);
        }
        // Block 0 takes more pages: its chunk is the most recently
        // validated, but still the first to have become resident.
        k.gpu_read(GPU0, block(0) + 100 * PAGE, 4);
        // Block 3 needs a chunk.
        assert_eq!(
            k.gpu_read(GPU0, block(3) + 4, 4),
            (3u32 * 512 * 1024 + 1).to_le_bytes()
        );
        k.check();
        (0..4)
            .map(|b| k.vram_pages_in(block(b), 2 * MIB) > 0)
            .collect::<Vec<bool>>()
    };
    assert_eq!(run("first-resident"), [false, true, true, true]);
    assert_eq!(run("lru"), [true, false, true, true]);
    assert_eq!(
        Config::for_driver(Driver::Uvm).victim_policy.name(),
        "first-resident"
    );
}

/// The xe policy on registered memory: each fault moves the largest
/// aligned chunk of 2 MiB, 64 KiB (over present pages only) or 4 KiB that
/// fits, whole, so no chunk holds mixed residency; a munmap of part of a
/// range drops it whole.
#[test]
fn xe_faults_move_whole_aligned_chunks() {
    use svm_core::config::{Config, Driver};
    let mut k = Kfd::new(true);
    k.m.set_config(&Config::for_driver(Driver::Xe)).unwrap();
    let raw = k.mmap(8 * MIB);
    let a = raw.next_multiple_of(2 * MIB);
    // 2 MiB + 72 KiB, every page written but the last 8 KiB.
    let len = 2 * MIB + 72 * 1024;
    k.cpu_write(a, &words(((len - 8192) / 4) as usize, |i| i));
    k.set(a, len, &[(ACCESS, GPU0)]).unwrap();
    k.gpu_read(GPU0, a + 4096, 4);
    assert_eq!(k.vram_pages_in(a, 2 * MIB), 512, "a 2 MiB chunk");
    k.gpu_read(GPU0, a + 2 * MIB + 4096, 4);
    assert_eq!(
        k.vram_pages_in(a + 2 * MIB, 72 * 1024),
        16,
        "a 64 KiB chunk"
    );
    // The last 64 KiB is not all present: 4 KiB.
    k.gpu_read(GPU0, a + 2 * MIB + 68 * 1024, 4);
    assert_eq!(
        k.vram_pages_in(a + 2 * MIB + 64 * 1024, 8 * 1024),
        1,
        "a 4 KiB chunk"
    );
    // The 2 MiB range never split: an munmap of one page drops it whole,
    // and what stays mapped comes back to system memory.
    k.munmap(a + MIB, PAGE);
    k.m.quiesce();
    assert_eq!(k.vram_pages_in(a, 2 * MIB), 0);
    assert_eq!(k.cpu_read(a + 4 * 4096, 4), (4u32 * 1024).to_le_bytes());
    k.check();
}

/// UVM's replay policies: under BATCH_FLUSH (the default) the buffer is
/// flushed after each batch as far as the PUT pointer the driver last
/// read. When over half a batch were duplicates it reads PUT again
/// (`UPDATE_PUT`), so the faults that arrived while the batch was served
/// are dropped unserved and their waves fault again after the replay;
/// otherwise (`CACHED_PUT`) they stay for the next batch. Under BLOCK,
/// BATCH and ONCE nothing is flushed. Every policy serves the same data.
#[test]
fn uvm_batch_flush_drops_the_arrivals_only_when_most_of_a_batch_are_duplicates() {
    use svm_core::config::{Config, Driver};
    // Sixteen waves walk the resident first 4 MiB and run off its end
    // into 8 MiB that is not resident, from staggered starts, so that
    // their faults arrive while others are served; `together` of them
    // from one start instead, so that each page they reach faults that
    // many times at once (duplicates).
    // `ratio`: `uvm_replay_update_put_ratio`.
    let run = |replay: &str, together: u64, ratio: &str| {
        let mut k = Kfd::new(true);
        k.m.apply_profile(&svm_sim::timing::Profile::built_in("uvm-pcie").unwrap());
        let mut c = Config::for_driver(Driver::Uvm);
        c.set("uvm_replay_policy", replay).unwrap();
        c.set("uvm_replay_update_put_ratio", ratio).unwrap();
        // Every page faults: many batches.
        c.set("uvm_prefetch", "off").unwrap();
        k.m.set_config(&c).unwrap();
        let raw = k.mmap(34 * MIB);
        let a = raw.next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(4 * 1024 * 1024, |i| i));
        k.set(a, 16 * MIB, &[(ACCESS, GPU0)]).unwrap();
        k.set(a, 4 * MIB, &[(PREFETCH_LOC, GPU0)]).unwrap();
        // The `together` waves are one kernel's, on CUs of their own, so
        // that their faults on a page are not one uTLB's repeats; the
        // staggered ones are kernels of a wave each.
        let out = a + 12 * MIB;
        let walk: svm_sim::machine::KernelFn = std::rc::Rc::new(move |w, ctx| {
            Box::pin(async move {
                let mut at = a + 3 * MIB;
                let first = ctx.load_u32s(at, 64).await[0];
                let mut last = 0;
                while at < a + 12 * MIB {
                    last = ctx.load_u32s(at, 64).await[63];
                    at += 256;
                }
                ctx.store_u32s(out + u64::from(w) * 8, &[first, last]).await;
            })
        });
        let group = (together > 0).then(|| {
            k.m.launch_kernel(k.pid, GPU0, u32::try_from(together).unwrap(), walk)
                .unwrap()
        });
        let waves: Vec<_> = (0..16 - together)
            .map(|w| {
                let start = a + w * 256 * 1024;
                k.m.launch(k.pid, GPU0, CpuVa::new(start), a + 12 * MIB - start, None)
                    .unwrap()
            })
            .collect();
        let end = (3u32 * 1024 * 1024 - 1).to_le_bytes();
        for (w, id) in waves.into_iter().enumerate() {
            let (got, _) = k.m.wait(id).unwrap();
            let first = u32::try_from(w).unwrap() * 64 * 1024;
            assert_eq!(&got[..4], &first.to_le_bytes(), "{replay}");
            assert_eq!(&got[got.len() - 4..], &end);
        }
        if let Some(id) = group {
            k.m.wait_kernel(id).unwrap();
            for w in 0..together {
                let want = [(3u32 << 20) / 4, 3 * 1024 * 1024 - 1]
                    .map(u32::to_le_bytes)
                    .concat();
                assert_eq!(k.cpu_read(out + w * 8, 8), want, "{replay} wave {w}");
            }
        }
        k.check();
        let c = k.m.counters();
        (c.faults_flushed, c.flushes_update_put)
    };
    // Twelve waves fault on each page together: batches of duplicates,
    // each flush reads PUT again and drops the staggered waves' arrivals.
    let (flushed, update_put) = run("batch-flush", 12, "50");
    assert!(flushed > 100 && update_put > 100, "{flushed} {update_put}");
    // A ratio no batch exceeds: the arrivals stay for the next batch.
    assert_eq!(run("batch-flush", 12, "100"), (0, 0));
    // No duplicates at all (sixteen staggered waves): the same.
    assert_eq!(run("batch-flush", 0, "0"), (0, 0));
    for replay in ["batch", "block", "once"] {
        assert_eq!(run(replay, 12, "0"), (0, 0), "{replay}");
    }
}

/// Two GPUs writing one range at once under the xe driver (no duplicate
/// window: every fault moves the whole range to its GPU) ping-pong it but
/// finish: a fault that waited for `svms->lock` is served only once the
/// lock is free, after the waves the previous service woke have retried.
/// Served at its delivery instead, each migration undid the last before
/// its waves could retry, and both kernels died with EBUSY.
#[test]
fn gpus_sharing_a_range_under_xe_take_turns_and_finish() {
    use svm_core::config::{Config, Driver};
    let mut k = Kfd::new(true);
    k.m.apply_profile(&svm_sim::timing::Profile::built_in("mi210").unwrap());
    k.m.set_config(&Config::for_driver(Driver::Xe)).unwrap();
    let raw = k.mmap(4 * MIB);
    let a = raw.next_multiple_of(2 * MIB);
    k.cpu_write(a, &words(512 * 1024, |i| i));
    k.set(a, 2 * MIB, &[(ACCESS, GPU0), (ACCESS, GPU1)])
        .unwrap();
    let data = vec![7u8; usize::try_from(2 * MIB).unwrap()];
    let w0 =
        k.m.launch(k.pid, GPU0, CpuVa::new(a), 2 * MIB, Some(&data))
            .unwrap();
    let w1 =
        k.m.launch(k.pid, GPU1, CpuVa::new(a), 2 * MIB, Some(&data))
            .unwrap();
    k.m.wait(w0).expect("GPU 0's kernel finishes");
    k.m.wait(w1).expect("GPU 1's kernel finishes");
    assert_eq!(k.cpu_read(a + MIB, 4), [7; 4]);
    k.check();
}

/// Xe's device-to-device migration: a range in GPU 0's VRAM that GPU 1
/// faults on goes straight to GPU 1's VRAM over the peer link, no page
/// through system memory; with `xe_device_to_device=off` it goes through
/// system memory, as kfd's does. The bytes arrive either way.
#[test]
fn xe_moves_a_range_between_gpus_directly() {
    use svm_core::config::{Config, Driver};
    let run = |d2d: &str| {
        let mut k = Kfd::new(true);
        k.m.apply_profile(&svm_sim::timing::Profile::built_in("xe").unwrap());
        let mut c = Config::for_driver(Driver::Xe);
        c.set("xe_device_to_device", d2d).unwrap();
        k.m.set_config(&c).unwrap();
        let raw = k.mmap(4 * MIB);
        let a = raw.next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(512 * 1024, |i| i));
        k.set(a, 2 * MIB, &[(ACCESS, GPU0), (ACCESS, GPU1)])
            .unwrap();
        k.gpu_write(GPU0, a + 8, &[9, 9, 9, 9]);
        let before = k.m.counters();
        let t = k.m.now_ns();
        assert_eq!(k.gpu_read(GPU1, a + 4096, 4), 1024u32.to_le_bytes());
        let c = k.m.counters();
        let svm = &k.m.process(k.pid).svm;
        let on = svm
            .ranges()
            .find(PageNum::new(a / PAGE))
            .unwrap()
            .actual_loc;
        assert_eq!(on, svm.gpuidx(GPU1), "{d2d}");
        assert_eq!(k.cpu_read(a + 8, 4), [9; 4]);
        k.check();
        (
            c.pages_peer - before.pages_peer,
            c.pages_to_ram - before.pages_to_ram,
            k.m.now_ns() - t,
        )
    };
    let (peer, ram, direct) = run("on");
    assert_eq!((peer, ram), (512, 0));
    let (peer, ram, bounced) = run("off");
    assert_eq!((peer, ram), (0, 512));
    assert!(
        direct < bounced,
        "{direct} ns direct, {bounced} ns through system memory"
    );
}

/// A machine of one GPU of the `uvm-gh` profile (ATS over C2C) under the
/// uvm driver with `set` applied, and a CPU-written 2 MiB-aligned 4 MiB
/// buffer the GPU may access: its address.
fn uvm_gh(set: &[(&str, &str)]) -> (Kfd, u64) {
    use svm_core::config::{Config, Driver};
    let p = svm_sim::timing::Profile::built_in("uvm-gh").unwrap();
    let mut gpus = p.gpus();
    gpus.iter_mut()
        .for_each(|g| g.id = svm_core::gpu::GpuId::new(GPU0).unwrap());
    let mut k = Kfd::with_gpus(gpus, true);
    k.m.apply_profile(&p);
    let mut c = Config::for_driver(Driver::Uvm);
    for (key, value) in set {
        c.set(key, value).unwrap();
    }
    k.m.set_config(&c).unwrap();
    let a = k.mmap(8 * MIB).next_multiple_of(2 * MIB);
    k.cpu_write(a, &words(1024 * 1024, |i| i));
    k.set(a, 4 * MIB, &[(ACCESS, GPU0)]).unwrap();
    (k, a)
}

/// On an ATS GPU a fault leaves the pages the CPU holds where they are
/// (the GPU reaches them over C2C), and the access counters, on there by
/// default, move each 2 MiB region once the GPU has accessed it remotely
/// 256 times; off, or with a threshold never reached, nothing moves.
#[test]
fn uvm_on_ats_moves_cpu_pages_only_when_access_counters_call_them_hot() {
    let run = |set: &[(&str, &str)]| {
        let (mut k, a) = uvm_gh(set);
        for pass in 0..3u32 {
            let got = k.gpu_read(GPU0, a, 4 * MIB);
            assert_eq!(got, words(1024 * 1024, |i| i), "{set:?} pass {pass}");
        }
        // Whatever moved, the CPU still reads what it wrote.
        let vram = k.vram_pages_in(a, 4 * MIB);
        assert_eq!(k.cpu_read(a + 8, 4), 2u32.to_le_bytes());
        k.check();
        let c = k.m.counters();
        (vram, c.access_counter_notices, c.pages_to_vram)
    };
    // Pages in VRAM, notifications, pages moved to VRAM.
    let (vram, notices, moved) = run(&[]);
    assert_eq!(vram, 1024, "both regions moved");
    assert!(notices >= 2, "{notices} notifications");
    assert_eq!(moved, 1024);
    assert_eq!(run(&[("uvm_access_counter_migration", "off")]), (0, 0, 0));
    // 3 passes are 1536 remote accesses per region at most.
    assert_eq!(run(&[("uvm_access_counter_threshold", "2000")]), (0, 0, 0));
}

/// A fault on an ATS GPU migrates what no one holds yet: first touch
/// populates on the GPU, the faulting page's 64 KiB big page as the
/// prefetch tree's leaf has it, while the pages the CPU wrote in the same
/// block stay in system memory.
#[test]
fn uvm_on_ats_populates_untouched_pages_on_the_gpu() {
    let (mut k, a) = uvm_gh(&[("uvm_access_counter_migration", "off")]);
    let fresh = a + 4 * MIB;
    k.set(fresh, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    k.cpu_write(fresh + MIB, &[1; 4]);
    k.gpu_write(GPU0, fresh + 4, &[7, 7, 7, 7]);
    assert_eq!(k.vram_pages_in(fresh, 64 * 1024), 16);
    assert_eq!(k.vram_pages_in(fresh, 2 * MIB), 16);
    assert_eq!(k.gpu_read(GPU0, fresh + MIB, 4), [1; 4]);
    assert_eq!(k.vram_pages_in(fresh, 2 * MIB), 16);
    assert_eq!(k.cpu_read(fresh + 4, 4), [7; 4]);
}

/// Off ATS the access counters are off unless asked for (UVM's -1); on,
/// they move what an accessed-by GPU reads in place.
#[test]
fn uvm_access_counters_off_ats_only_when_asked() {
    use svm_core::config::{Config, Driver};
    use svm_core::uapi::attr_type::ACCESS_IN_PLACE;
    let run = |mode: &str| {
        let mut k = Kfd::new(true);
        k.m.apply_profile(&svm_sim::timing::Profile::built_in("uvm-pcie").unwrap());
        let mut c = Config::for_driver(Driver::Uvm);
        c.set("uvm_access_counter_migration", mode).unwrap();
        k.m.set_config(&c).unwrap();
        let a = k.mmap(4 * MIB).next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(512 * 1024, |i| i));
        k.set(a, 2 * MIB, &[(ACCESS_IN_PLACE, GPU0)]).unwrap();
        for _ in 0..2 {
            assert_eq!(k.gpu_read(GPU0, a, 2 * MIB), words(512 * 1024, |i| i));
        }
        k.check();
        (
            k.vram_pages_in(a, 2 * MIB),
            k.m.counters().access_counter_notices,
        )
    };
    assert_eq!(run("auto"), (0, 0));
    let (vram, notices) = run("on");
    assert_eq!(vram, 512);
    assert!(notices > 0);
}

/// Two GPUs on `uvm-pcie` under the uvm driver, and a CPU-written
/// 2 MiB-aligned 2 MiB range both may access, with `flags` set: its
/// address.
fn uvm_two_readers(flags: u32) -> (Kfd, u64) {
    use svm_core::uapi::attr_type::SET_FLAGS;
    let mut k = uvm_pcie(Kfd::new(true));
    let a = k.mmap(4 * MIB).next_multiple_of(2 * MIB);
    k.cpu_write(a, &words(512 * 1024, |i| i));
    k.set(
        a,
        2 * MIB,
        &[(ACCESS, GPU0), (ACCESS, GPU1), (SET_FLAGS, flags)],
    )
    .unwrap();
    (k, a)
}

/// `k` on `uvm-pcie` under the uvm driver.
fn uvm_pcie(mut k: Kfd) -> Kfd {
    use svm_core::config::{Config, Driver};
    k.m.apply_profile(&svm_sim::timing::Profile::built_in("uvm-pcie").unwrap());
    k.m.set_config(&Config::for_driver(Driver::Uvm)).unwrap();
    k
}

/// Read copies of the pages `gpu` holds.
fn copies_on(k: &Kfd, gpu: u32) -> usize {
    let svm = &k.m.process(k.pid).svm;
    let g = svm.gpuidx(gpu).unwrap();
    svm.duplicates().copies().filter(|c| c.0 == g).count()
}

/// ReadMostly (GPU_READ_MOSTLY under the uvm driver): each GPU that reads
/// the range gets read-only copies in its own VRAM and the pages stay in
/// system memory; a CPU write drops the copies of what it writes, a GPU
/// write drops every copy of the range and then moves the pages to the
/// writer. Without the flag the two readers pull the pages to them.
/// Clearing GPU_READ_MOSTLY ends read duplication where it is cleared
/// (UVM's unset of ReadMostly): those pages' copies go on every GPU, the
/// masters stay where they are, and the rest of the table keeps its copies.
#[test]
fn uvm_read_mostly_unset_drops_the_copies_and_maps_the_masters() {
    use svm_core::uapi::attr_type::CLR_FLAGS;
    use svm_core::uapi::flag::GPU_READ_MOSTLY;
    let want = words(512 * 1024, |i| i);
    let (mut k, a) = uvm_two_readers(GPU_READ_MOSTLY);
    assert_eq!(k.gpu_read(GPU0, a, 2 * MIB), want);
    assert_eq!(k.gpu_read(GPU1, a, 2 * MIB), want);
    assert_eq!((copies_on(&k, GPU0), copies_on(&k, GPU1)), (512, 512));
    // Clearing the flag on half the table drops that half's copies only.
    k.set(a, MIB, &[(CLR_FLAGS, GPU_READ_MOSTLY)]).unwrap();
    assert_eq!((copies_on(&k, GPU0), copies_on(&k, GPU1)), (256, 256));
    assert_eq!(k.vram_pages_in(a, 2 * MIB), 0, "the masters stay put");
    // The flag change remaps the range (a flag updates the mapping): the
    // readers reach the masters where they are and read the same bytes;
    // no copy is made again.
    assert_eq!(k.gpu_read(GPU0, a, 2 * MIB), want);
    assert_eq!(k.gpu_read(GPU1, a, MIB), want[..1 << 20]);
    assert_eq!((copies_on(&k, GPU0), copies_on(&k, GPU1)), (256, 256));
    k.check();
}

#[test]
fn uvm_read_mostly_copies_to_each_reader_and_a_write_collapses_them() {
    use svm_core::uapi::flag::GPU_READ_MOSTLY;
    let want = words(512 * 1024, |i| i);
    let (mut k, a) = uvm_two_readers(GPU_READ_MOSTLY);
    assert_eq!(k.gpu_read(GPU0, a, 2 * MIB), want);
    assert_eq!(k.gpu_read(GPU1, a, 2 * MIB), want);
    assert_eq!((copies_on(&k, GPU0), copies_on(&k, GPU1)), (512, 512));
    assert_eq!(k.vram_pages_in(a, 2 * MIB), 0, "the masters stay put");
    let c = k.m.counters();
    assert_eq!((c.pages_duplicated, c.pages_to_vram), (1024, 0));
    // Read again: local copies, no fault.
    let faults =
        k.m.process(k.pid)
            .svm
            .stats()
            .iter()
            .map(|(_, s)| s.faults)
            .sum::<u64>();
    assert_eq!(k.gpu_read(GPU0, a, 2 * MIB), want);
    let after =
        k.m.process(k.pid)
            .svm
            .stats()
            .iter()
            .map(|(_, s)| s.faults)
            .sum::<u64>();
    assert_eq!(after, faults);
    // The CPU writes one page: its two copies go, and the readers see
    // the new bytes.
    k.cpu_write(a + 8, &[5; 4]);
    assert_eq!((copies_on(&k, GPU0), copies_on(&k, GPU1)), (511, 511));
    assert_eq!(k.gpu_read(GPU1, a + 8, 4), [5; 4]);
    // A GPU writes: every copy of the range goes, the page moves to it.
    k.gpu_write(GPU0, a + 3 * PAGE, &[6; 4]);
    assert_eq!((copies_on(&k, GPU0), copies_on(&k, GPU1)), (0, 0));
    assert!(k.vram_pages_in(a, 2 * MIB) > 0);
    assert_eq!(k.gpu_read(GPU1, a + 3 * PAGE, 4), [6; 4]);
    assert_eq!(k.cpu_read(a + 3 * PAGE, 4), [6; 4]);
    let dropped =
        k.m.process(k.pid)
            .svm
            .policy_counters()
            .into_iter()
            .find(|c| c.0 == "read_duplicates_dropped");
    assert!(dropped.is_some_and(|(_, n)| n >= 1024), "{dropped:?}");
    // Copies of memory that goes away go with it.
    assert_eq!(k.gpu_read(GPU1, a, 2 * MIB)[..4], [0, 0, 0, 0]);
    assert!(copies_on(&k, GPU1) > 0);
    k.munmap(a, 2 * MIB);
    assert_eq!(copies_on(&k, GPU1), 0);
    k.check();
    // Without the flag: no copy, pages move.
    let (mut k, a) = uvm_two_readers(0);
    assert_eq!(k.gpu_read(GPU0, a, 2 * MIB), want);
    assert_eq!(k.gpu_read(GPU1, a, 2 * MIB), want);
    assert_eq!((copies_on(&k, GPU0), copies_on(&k, GPU1)), (0, 0));
    assert!(k.m.counters().pages_to_vram > 0);
}

/// A GPU's read copies are the first VRAM it gives back: an allocation
/// that does not fit drops them before evicting anything.
#[test]
fn uvm_read_copies_give_way_to_an_allocation_first() {
    use svm_core::uapi::flag::GPU_READ_MOSTLY;
    let mut k = uvm_pcie(Kfd::new(true).with_vram(3 * MIB));
    let a = k.mmap(8 * MIB).next_multiple_of(2 * MIB);
    k.cpu_write(a, &words(1024 * 1024, |i| i));
    k.set(
        a,
        2 * MIB,
        &[
            (ACCESS, GPU0),
            (svm_core::uapi::attr_type::SET_FLAGS, GPU_READ_MOSTLY),
        ],
    )
    .unwrap();
    k.set(a + 2 * MIB, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    assert_eq!(k.gpu_read(GPU0, a, 2 * MIB), words(512 * 1024, |i| i));
    assert_eq!(copies_on(&k, GPU0), 512);
    let evictions = k.stats().evictions;
    // The other range fills the VRAM the copies hold.
    k.gpu_write(GPU0, a + 2 * MIB, &vec![1; 2 << 20]);
    assert_eq!(k.vram_pages_in(a + 2 * MIB, 2 * MIB), 512);
    assert_eq!(copies_on(&k, GPU0), 0);
    assert_eq!(k.stats().evictions, evictions, "nothing evicted");
    assert_eq!(k.gpu_read(GPU0, a + 4, 4), 1u32.to_le_bytes());
}

/// Xe's prefetch is a bind: a prefetch to system memory (region 0) of a
/// range already there maps it on the GPU, so the GPU's first read does
/// not fault and the range stays there; kfd's moves nothing and maps
/// nothing, and the read faults (and migrates the window).
#[test]
fn an_xe_prefetch_binds_what_it_did_not_have_to_move() {
    use svm_core::config::{Config, Driver};
    use svm_core::uapi::attr_type::PREFETCH_LOC;
    let faults = |driver: Driver| {
        let mut k = Kfd::new(true);
        k.m.set_config(&Config::for_driver(driver)).unwrap();
        let a = k.mmap(4 * MIB).next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(512 * 1024, |i| i));
        k.set(a, 2 * MIB, &[(ACCESS, GPU0), (PREFETCH_LOC, 0)])
            .unwrap();
        let before = k.stats().faults;
        assert_eq!(k.gpu_read(GPU0, a + 4096, 4), 1024u32.to_le_bytes());
        (k.stats().faults - before, k.vram_pages_in(a, 2 * MIB))
    };
    assert_eq!(faults(Driver::Xe), (0, 0));
    assert_eq!(faults(Driver::Kfd), (1, 512));
}

/// An atomic where its GPU's atomics do not reach (`local_atomics`: Xe's
/// discrete GPUs, NVIDIA's on PCIe): memory that prefers system memory is
/// read there under every driver; the first atomic faults, and Xe (whose
/// `devmem_only` forces the faulting tile's VRAM) and UVM move it into
/// the GPU's VRAM. kfd's GPU adds over the link where the page is, with
/// no fault. The sums are right under all three.
#[test]
fn an_atomic_moves_system_memory_to_vram_under_xe_and_uvm_where_kfd_adds_in_place() {
    use svm_core::config::{Config, Driver};
    use svm_core::uapi::attr_type::PREFERRED_LOC;
    let run = |driver: Driver, local_atomics: bool| {
        let mut g0 = gpu("gpu0", GPU0, 16 * GIB, true);
        g0.local_atomics = local_atomics;
        let mut k = Kfd::with_gpus(vec![g0, gpu("gpu1", GPU1, 16 * GIB, true)], true);
        k.m.set_config(&Config::for_driver(driver)).unwrap();
        let a = k.mmap(4 * MIB).next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(512 * 1024, |i| i));
        k.set(a, 2 * MIB, &[(ACCESS, GPU0), (PREFERRED_LOC, 0)])
            .unwrap();
        assert_eq!(k.gpu_read(GPU0, a + 4096, 4), 1024u32.to_le_bytes());
        let after_read = k.vram_pages_in(a, 2 * MIB);
        let before = k.m.counters().atomic_faults;
        let old = k.try_gpu_atomic_add(GPU0, a + 4096, &[1; 64]);
        let faulted = k.m.counters().atomic_faults - before;
        let here = k.vram_pages_in(a + 4096, 4096);
        (after_read, old, faulted, here, (k, a))
    };
    let want_old: Vec<u32> = (1024..1088).collect();
    for driver in [Driver::Xe, Driver::Uvm] {
        let (after_read, old, faulted, here, (mut k, a)) = run(driver, true);
        // (UVM's batch flush may drop the fault once on this untimed
        // machine, where the read's replay and the atomic share an
        // instant: the wave faults again.)
        assert!(after_read == 0 && faulted >= 1 && here == 1, "{driver:?}");
        assert_eq!(old.unwrap(), want_old, "{driver:?}");
        // The CPU reads the sums and takes the page back: under Xe only
        // once the atomic's 5 ms timeslice is over.
        assert_eq!(k.cpu_read(a + 4096, 8), words(2, |i| 1025 + i));
        let held = k.m.counters().cpu_timeslice_wait_ns;
        assert_eq!(held, if driver == Driver::Xe { 5_000_000 } else { 0 });
        assert_eq!(k.vram_pages_in(a + 4096, 4096), 0, "{driver:?}");
    }
    let (after_read, old, faulted, here, _) = run(Driver::Kfd, false);
    assert_eq!((after_read, faulted, here), (0, 0, 0));
    assert_eq!(old.unwrap(), want_old);
    // kfd's handler reads no access type: on a GPU whose atomics reach only
    // its VRAM the page stays mapped where it is, and the atomic faults
    // until the GPU gives up; an error, not a hang.
    let (_, old, faulted, here, _) = run(Driver::Kfd, true);
    let e = old.unwrap_err();
    assert!(e.to_string().contains("still faulting"), "{e}");
    assert!(faulted > 1 && here == 0, "{faulted} {here}");
}

/// Two GPUs of the `uvm-nvlink` profile under the `uvm` driver: NVLink
/// peers (one hive) with `nvlink`, else two GPUs on PCIe, peers only with
/// `pcie_peers`.
fn uvm_pair(nvlink: bool, pcie_peers: bool) -> Kfd {
    use svm_core::config::{Config, Driver};
    let profile = svm_sim::timing::Profile::built_in("uvm-nvlink").unwrap();
    let gpus = profile
        .gpus()
        .into_iter()
        .take(2)
        .map(|g| svm_core::topology::GpuDesc {
            hive: g.hive.filter(|_| nvlink),
            ..g
        })
        .collect();
    let mut k = Kfd::with_gpus(gpus, true);
    k.m.apply_profile(&profile);
    let mut c = Config::for_driver(Driver::Uvm);
    c.set("uvm_pcie_peers", if pcie_peers { "on" } else { "off" })
        .unwrap();
    k.m.set_config(&c).unwrap();
    k
}

/// UVM between peers (docs/drivers.md, "Multi-GPU"): NVLink peers (one
/// hive, the `uvm-nvlink` profile) and PCIe peers (`uvm_pcie_peers`, as
/// after `UvmEnablePeerAccess`) map each other's VRAM, so an accessed-by
/// GPU reads a page another GPU holds where it is, and a page that moves
/// between them is copied VRAM to VRAM; GPUs that are not peers move the
/// page instead, staged through system memory.
#[test]
fn uvm_peers_map_each_others_vram_and_copy_between_each_other_directly() {
    use svm_core::gpu::GpuIndex;
    use svm_core::uapi::attr_type::ACCESS_IN_PLACE;
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Peers {
        NvLink,
        Pcie,
        No,
    }
    let machine = |peers: Peers| uvm_pair(peers == Peers::NvLink, peers == Peers::Pcie);
    // GPU 0 takes a page; then GPU 1 reads it. Returns the pages copied
    // VRAM to VRAM, back to system memory, and into GPU 1's VRAM.
    let run = |peers: Peers, accessed_by: bool| {
        let mut k = machine(peers);
        let raw = k.mmap(4 * MIB);
        let a = raw.next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(512 * 1024, |i| i));
        let mut attrs = vec![(ACCESS, k.node)];
        if accessed_by {
            attrs.push((ACCESS_IN_PLACE, k.peer));
        }
        k.set(a, 2 * MIB, &attrs).unwrap();
        k.gpu_write(k.node, a, &7u32.to_le_bytes());
        assert!(k.vram_pages_in(a, PAGE) == 1, "{peers:?}: on GPU 0");
        let g1 = GpuIndex::new(1).unwrap();
        let (c0, s0) = (k.m.counters(), k.m.process(k.pid).svm.stats()[g1]);
        assert_eq!(k.gpu_read(k.peer, a, 4), 7u32.to_le_bytes(), "{peers:?}");
        assert_eq!(k.gpu_read(k.peer, a + 4, 4), 1u32.to_le_bytes());
        let (c1, s1) = (k.m.counters(), k.m.process(k.pid).svm.stats()[g1]);
        assert_eq!(k.cpu_read(a, 4), 7u32.to_le_bytes());
        k.check();
        (
            c1.pages_peer - c0.pages_peer,
            c1.pages_to_ram - c0.pages_to_ram,
            s1.page_in - s0.page_in,
        )
    };
    // Accessed-by: peers map the page where it is; others move it.
    assert_eq!(run(Peers::NvLink, true), (0, 0, 0));
    assert_eq!(run(Peers::Pcie, true), (0, 0, 0));
    let (peer, to_ram, into_1) = run(Peers::No, true);
    assert_eq!(peer, 0);
    assert!(to_ram > 0 && into_1 > 0, "staged: {to_ram} {into_1}");
    // Without it the page moves to the reader: directly between peers.
    for peers in [Peers::NvLink, Peers::Pcie] {
        let (peer, to_ram, into_1) = run(peers, false);
        assert!(
            peer > 0 && to_ram == 0 && into_1 == peer,
            "{peers:?}: {peer} {to_ram} {into_1}"
        );
    }
    let (peer, to_ram, into_1) = run(Peers::No, false);
    assert!(
        peer == 0 && to_ram > 0 && into_1 > 0,
        "{peer} {to_ram} {into_1}"
    );
}

/// UVM's thrashing fast path between NVLink peers (step 9.2 of the hint,
/// `uvm_perf_thrashing.c`): two GPUs writing one page in turn, hops well
/// inside the 500 µs lapse, pin the page where it is as soon as it
/// thrashes, with no throttle first, and the other GPU then writes it
/// there: migrations stop. The same GPUs without peers throttle first.
#[test]
fn uvm_thrashing_between_nvlink_peers_pins_in_place_without_a_throttle() {
    let run = |nvlink: bool| {
        let mut k = uvm_pair(nvlink, false);
        let raw = k.mmap(4 * MIB);
        let a = raw.next_multiple_of(2 * MIB);
        k.set(a, 2 * MIB, &[(ACCESS, k.node), (ACCESS, k.peer)])
            .unwrap();
        let mut moves = Vec::new();
        for round in 0..60u32 {
            let before = k.m.counters();
            k.gpu_write(k.node, a, &(2 * round).to_le_bytes());
            k.gpu_write(k.peer, a + 4, &(2 * round + 1).to_le_bytes());
            let after = k.m.counters();
            moves.push(
                after.pages_peer + after.pages_to_ram - before.pages_peer - before.pages_to_ram,
            );
        }
        assert_eq!(
            k.cpu_read(a, 8),
            [118u32.to_le_bytes(), 119u32.to_le_bytes()].concat()
        );
        k.check();
        let c = k.m.process(k.pid).svm.policy_counters();
        let n = |name: &str| c.iter().find(|&&(k, _)| k == name).map_or(0, |&(_, v)| v);
        (moves, n("throttled_faults"), n("pinned_faults"))
    };
    let (moves, throttled, pinned) = run(true);
    assert_eq!(throttled, 0, "{moves:?}");
    assert!(pinned >= 1);
    let settled = moves.iter().rposition(|&m| m > 0).unwrap() + 1;
    assert!(settled <= 5, "pinned once it thrashes: {moves:?}");
    let (moves, throttled, _) = run(false);
    assert!(throttled > 0, "{moves:?}");
}

/// Throttles each page's first fault, then serves it as kfd's partial
/// policy would; batched, replaying once a service run (UVM's `once`).
#[derive(Debug, Default)]
struct ThrottleFirst {
    seen: BTreeMap<u64, ()>,
}

impl FaultPolicy for ThrottleFirst {
    fn name(&self) -> &str {
        "throttle-first"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        if self.seen.insert(ctx.page.raw(), ()).is_none() {
            return FaultPlan::Retry { after_ns: 1_000 };
        }
        FaultPlan::serve(
            Some(svm_core::policy::Migration {
                to: ctx.best,
                pages: ctx.window,
            }),
            ctx.window,
        )
    }

    fn batched(&self) -> bool {
        true
    }

    fn replay(&self) -> svm_core::policy::Replay {
        svm_core::policy::Replay::Once
    }
}

/// A service run of UVM's (`once`: the replay after the run) ends after
/// five batches with a throttled fault (`uvm_perf_fault_max_throttle_per_service`)
/// rather than the twenty it may take: with one fault a batch, sixteen
/// waves' first faults cut the first run short; four waves' do not.
#[test]
fn a_service_run_ends_after_five_throttled_batches() {
    let run = |waves: u64| {
        let mut k = Kfd::new(true);
        let profile = svm_sim::timing::Profile::built_in("uvm-pcie").unwrap();
        k.m.apply_profile(&profile);
        let mut t = profile.timing.clone();
        t.fault_batch = 1;
        k.m.set_timing(t);
        k.m.set_fault_policy(PolicyFactory::new(|| Box::new(ThrottleFirst::default())));
        let a = k.mmap(16 * MIB).next_multiple_of(2 * MIB);
        k.cpu_write(a, &words(2 * 1024 * 1024, |i| i));
        k.set(a, 8 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 0)])
            .unwrap();
        let ids: Vec<_> = (0..waves)
            .map(|w| {
                let at = a + w * 64 * PAGE;
                k.m.launch(k.pid, GPU0, CpuVa::new(at), 4, None).unwrap()
            })
            .collect();
        for (w, id) in ids.into_iter().enumerate() {
            let (got, _) = k.m.wait(id).unwrap();
            assert_eq!(got, (u32::try_from(w).unwrap() * 64 * 1024).to_le_bytes());
        }
        k.check();
        k.m.counters().services_cut_by_throttles
    };
    assert!(run(16) >= 1);
    assert_eq!(run(4), 0);
}

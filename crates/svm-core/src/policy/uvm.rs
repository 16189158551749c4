//! NVIDIA UVM's service of a va_block with density prefetch, as driver
//! 595.45.04 does it (`docs/research/uvm.md` §1-2), the first part of a
//! UVM mode (issue 19).
//!
//! A batch of faults is sorted by GPU, page and access type (writes
//! first) and grouped by 2 MiB block: each block is served once per
//! batch, with every fault of the batch on it (`service_fault_batch`,
//! `service_fault_batch_block`). The block's faulted pages go to one
//! destination: the preferred location if the range has one, else the
//! faulting GPU's VRAM (`uvm_va_block_select_residency` without
//! accessed-by or read duplication). To them the density prefetch adds
//! the block's pages its bitmap tree calls dense
//! ([`super::uvm_prefetch`]), and every run of the union is migrated and
//! mapped in one service (`FaultPlan::serve_runs`).
//!
//! A block resident nowhere (no page in VRAM or in system memory) whose
//! destination is its preferred location is filled whole on its first
//! fault (PF:404-412).
//!
//! Not modelled yet (each named in issue 19): thrashing detection,
//! throttling and pinning; BATCH_FLUSH's discard of the entries left in
//! the buffer; eviction of whole 2 MiB chunks. kfd's steps before the policy still
//! run: its 2 ms duplicate window drops a fault on a range served less
//! than `retry_fault_pending_ns` ago, which UVM does not have, so a UVM
//! run sets it to 0.

use super::uvm_prefetch::{self, BLOCK_PAGES, Block, BlockMask};
use super::{BatchFault, BatchStep, Entry, FaultCtx, FaultPlan, FaultPolicy};
use crate::addr::{PageNum, PageRange};
use crate::attr::Location;

/// UVM's policies.
pub(super) static ENTRIES: [Entry; 1] = [Entry {
    name: "uvm-density",
    about: "NVIDIA UVM (595): each 2 MiB block served once a batch, its faults plus the 51% density prefetch; no thrashing or chunk eviction yet",
    make: || Box::new(UvmDensity),
}];

/// See the module doc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UvmDensity;

/// The 2 MiB block of the address space that holds `page`.
fn block_of(page: PageNum) -> u64 {
    page.raw() / BLOCK_PAGES as u64
}

impl FaultPolicy for UvmDensity {
    fn name(&self) -> &str {
        "uvm-density"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        let range = ctx.range.range();
        // The va_block: the 2 MiB block of the page, within its range.
        let lo = block_of(ctx.page) * BLOCK_PAGES as u64;
        let first = range.start().raw().max(lo);
        let end = range.end().raw().min(lo + BLOCK_PAGES as u64);
        let pages = usize::try_from(end - first).unwrap_or(BLOCK_PAGES);
        let to = ctx
            .range
            .attrs
            .preferred_loc
            .unwrap_or(Location::Vram(ctx.gpu_id));
        let mut faulted = BlockMask::EMPTY;
        for p in std::iter::once(ctx.page).chain(ctx.coalesced.iter().copied()) {
            if (first..end).contains(&p.raw()) {
                faulted.set(usize::try_from(p.raw() - first).unwrap_or(BLOCK_PAGES));
            }
        }
        // Pages already on the destination count in the tree. A range's
        // VRAM pages are all on one GPU (`actual_loc`).
        let in_vram = |i: usize| {
            let p = PageNum::new(first + i as u64);
            ctx.range.vram.get(ctx.range.index(p))
        };
        let mut resident = BlockMask::EMPTY;
        let mut anywhere = false;
        let on_faulting_gpu = ctx.range.actual_loc == Some(ctx.gpu);
        for i in 0..pages {
            let host = ctx.host.holds(PageNum::new(first + i as u64));
            anywhere |= host || in_vram(i);
            let here = match to {
                Location::Sys => host,
                Location::Vram(id) if id == ctx.gpu_id => on_faulting_gpu && in_vram(i),
                Location::Vram(_) => !on_faulting_gpu && in_vram(i),
            };
            if here {
                resident.set(i);
            }
        }
        let block = Block {
            pages,
            phase: usize::try_from(first % 16).unwrap_or(0),
        };
        let hint = if !anywhere && ctx.range.attrs.preferred_loc == Some(to) {
            // First touch of the block, at its preferred location.
            BlockMask::range(0, pages).minus(&faulted)
        } else {
            uvm_prefetch::prefetch(
                block,
                &resident,
                &faulted,
                &BlockMask::EMPTY,
                uvm_prefetch::DEFAULT_THRESHOLD,
            )
        };
        // For system memory the driver drops the pages the CPU already
        // holds and maps (PF:433-440): only the faulted pages and what
        // comes back from VRAM are served.
        let hint = if to == Location::Sys {
            hint.minus(&resident)
        } else {
            hint
        };
        let runs = faulted
            .union(&hint)
            .runs()
            .into_iter()
            .map(|(s, e)| {
                PageRange::new(
                    PageNum::new(first + s as u64),
                    PageNum::new(first + e as u64),
                )
            })
            .collect();
        FaultPlan::serve_runs(to, runs)
    }

    fn batched(&self) -> bool {
        true
    }

    /// Sorted by GPU, page and access type (writes first), then one step
    /// per (GPU, 2 MiB block) with the block's other faults coalesced
    /// into its first: a block is served once a batch.
    fn order(&mut self, faults: &[BatchFault]) -> Vec<BatchStep> {
        let mut sorted: Vec<usize> = (0..faults.len()).collect();
        sorted.sort_by_key(|&i| {
            let f = &faults[i];
            (f.gpu.get(), f.page.raw(), !f.write, i)
        });
        let mut steps: Vec<BatchStep> = Vec::new();
        let mut last = None;
        for i in sorted {
            let key = (faults[i].gpu.get(), block_of(faults[i].page));
            match steps.last_mut() {
                Some(step) if last == Some(key) => step.with.push(i),
                _ => steps.push(BatchStep {
                    serve: i,
                    with: Vec::new(),
                }),
            }
            last = Some(key);
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attrs;
    use crate::gpu::{GpuId, GpuIndex, GpuMask};
    use crate::policy::HostView;
    use crate::range::SvmRange;

    const GPU: GpuId = GpuId::new(0x1002).unwrap();

    /// System memory holds every page below 1 << 20 (the CPU wrote them).
    fn below(p: PageNum) -> bool {
        p.raw() < 1 << 20
    }

    fn ctx<'a>(range: &'a SvmRange, page: u64, coalesced: &'a [PageNum]) -> FaultCtx<'a> {
        FaultCtx {
            gpu: GpuIndex::new(0).unwrap(),
            gpu_id: GPU,
            page: PageNum::new(page),
            write: false,
            now_ns: 0,
            range,
            best: Location::Vram(GPU),
            window: range.range(),
            vram_free_pages: 1 << 20,
            coalesced,
            host: HostView(&below),
        }
    }

    fn plan(range: &SvmRange, page: u64, others: &[u64]) -> (Location, Vec<(u64, u64)>) {
        let others: Vec<PageNum> = others.iter().map(|&p| PageNum::new(p)).collect();
        match UvmDensity.plan(&ctx(range, page, &others)) {
            FaultPlan::ServeRuns { to, runs, .. } => (
                to,
                runs.iter()
                    .map(|r| (r.start().raw(), r.end().raw()))
                    .collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    fn range(start: u64, pages: u64) -> SvmRange {
        SvmRange::new(
            PageRange::new(PageNum::new(start), PageNum::new(start + pages)),
            Attrs::new_range(GpuMask::first(1)),
        )
    }

    /// A lone fault takes its 64 KiB big page (kfd's would take its 2 MiB
    /// granularity window); faults in 3 of the 4 big pages of a 256 KiB
    /// subtree take all of it; the block ends at its 2 MiB.
    #[test]
    fn a_block_serves_its_faults_and_the_dense_subtrees_around_them() {
        let r = range(1024, 4096);
        assert_eq!(
            plan(&r, 1024 + 37, &[]),
            (Location::Vram(GPU), vec![(1056, 1072)])
        );
        assert_eq!(
            plan(&r, 1024, &[1024 + 20, 1024 + 40]),
            (Location::Vram(GPU), vec![(1024, 1088)])
        );
        // Coalesced faults of another block are not this block's.
        assert_eq!(plan(&r, 1024 + 5, &[1536 + 5]).1, vec![(1024, 1040)]);
        // Two far apart in one block: two runs in one service.
        assert_eq!(
            plan(&r, 1024 + 5, &[1024 + 300]).1,
            vec![(1024, 1040), (1312, 1328)]
        );
    }

    /// A range that starts inside a big page: the block is cut at the
    /// range, and big pages stay aligned in the address space.
    #[test]
    fn big_pages_are_aligned_in_the_address_space() {
        let r = range(1030, 100);
        // Page 1040 starts a big page: [1040, 1056).
        assert_eq!(plan(&r, 1045, &[]).1, vec![(1040, 1056)]);
        // A preferred location is the destination.
        let mut r = range(0, 512);
        r.attrs.preferred_loc = Some(Location::Sys);
        // Its pages are all in system memory: the fault maps its own page
        // there, and the hint drops what the CPU already holds.
        assert_eq!(plan(&r, 3, &[]), (Location::Sys, vec![(3, 4)]));
    }

    /// A block resident nowhere, faulting to its preferred location, is
    /// filled whole; one that system memory holds pages of takes the tree.
    #[test]
    fn a_first_touch_at_the_preferred_location_fills_the_block() {
        let mut r = range(2 << 20, 1024);
        r.attrs.preferred_loc = Some(Location::Vram(GPU));
        let start = 2 << 20;
        assert_eq!(
            plan(&r, start + 600, &[]).1,
            vec![(start + 512, start + 1024)]
        );
        let mut r = range(0, 1024);
        r.attrs.preferred_loc = Some(Location::Vram(GPU));
        assert_eq!(plan(&r, 600, &[]).1, vec![(592, 608)]);
    }

    /// One step per (GPU, block), writes first within a page, every fault
    /// of the batch in exactly one step.
    #[test]
    fn a_batch_is_served_once_per_block() {
        let g = |i| GpuIndex::new(i).unwrap();
        let f = |gpu, page, write| BatchFault {
            gpu: g(gpu),
            page: PageNum::new(page),
            write,
        };
        let batch = [
            f(0, 700, false),
            f(0, 10, false),
            f(1, 20, false),
            f(0, 10, true),
            f(0, 600, false),
            f(0, 511, false),
        ];
        let steps = UvmDensity.order(&batch);
        let got: Vec<(usize, Vec<usize>)> =
            steps.iter().map(|s| (s.serve, s.with.clone())).collect();
        // GPU 0 block 0: pages 10 (write first), 10, 511; GPU 0 block 1:
        // 600, 700; GPU 1 block 0: 20.
        assert_eq!(got, vec![(3, vec![1, 5]), (4, vec![0]), (2, vec![])]);
    }
}

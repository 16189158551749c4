//! Intel Xe's GPU fault service over drm_gpusvm and drm_pagemap, as
//! `xe_svm.c` and `drm_gpusvm.c` of the 2025-12 multi-device tree do it
//! (`docs/research/xe.md` §1-3, whose step numbers this file follows):
//! the `xe` policy, and the heart of the `xe` driver.
//!
//! A fault is served by a *range*: the largest of 2 MiB, 64 KiB and
//! 4 KiB, aligned around the faulting page, that fits the memory
//! (`drm_gpusvm_range_chunk_size`, with `fault_chunk_sizes` {2M, 64K,
//! 4K}). A 64 KiB candidate must have every page present already (Xe's
//! `check_pages_threshold`; 2 MiB ranges are made over unpopulated
//! memory too). The range moves and maps whole, so it never holds mixed
//! residency: step 8-9 migrate it to the target pagemap (the preferred
//! location's GPU, else the faulting GPU's VRAM), step 10 maps it
//! there; a system-memory target brings device pages back and maps the
//! range in system memory, and a fault never migrates to RAM otherwise.
//!
//! Faults of one 2 MiB window are chained to the first (the page-fault
//! cache of `xe_pagefault.c`, §2a): one service, and chained faults
//! outside the served range fault again. Ranges never cross 2 MiB and
//! a range's pages may sit apart from the rest of what svmsim calls its
//! range (`per_page_residency`); a munmap drops ranges whole
//! (`splits_ranges`). A move between GPUs copies VRAM to VRAM over the
//! peer link (`direct_peer_migration`, the multi-device series'
//! device-to-device migration; `xe_device_to_device=off` goes through
//! system memory, as the tree did while it was disabled, M-d2d).
//!
//! An atomic fault (a discrete GPU maps system pages without atomics)
//! forces the faulting tile's VRAM (`devmem_only`, §2 step 3).
//!
//! Not modelled yet (issue 19): attributes on VMAs rather than ranges
//! (so the atomic attribute, which is UNDEFINED: atomics need VRAM); the
//! migrate-retry loop with its doubling timeslice (the first pass's 5 ms
//! hold against the CPU is, `atomic_timeslice_ns`); the global migrate
//! rwsem; that Xe's
//! collector leaves a partially unmapped
//! range's device pages in place where svmsim moves them back first.

use super::uvm_prefetch::BLOCK_PAGES;
use super::{BatchFault, BatchStep, Entry, FaultCtx, FaultPlan, FaultPolicy, Migration};
use crate::addr::{PageCount, PageNum, PageRange};
use crate::attr::Location;

/// Xe's policies.
pub(super) static ENTRIES: [Entry; 1] = [Entry {
    name: "xe",
    about: "Intel Xe (drm_gpusvm): a fault moves and maps the largest of a 2 MiB, 64 KiB or 4 KiB aligned range, whole",
    fewer_faults: "it chains the faults of one 2 MiB window to the first and moves the whole range around it (2 MiB where it fits), so the window's other pages never fault",
    make: || Box::new(Xe::default()),
}];

/// The chunk sizes a fault tries, largest first (`fault_chunk_sizes`).
pub const CHUNK_PAGES: [u64; 3] = [512, 16, 1];

/// The largest chunk Xe checks for populated pages
/// (`check_pages_threshold` = 64 KiB on a dGPU).
const CHECK_PAGES: u64 = 16;

/// See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xe {
    device_to_device: bool,
    atomic_timeslice_ns: u64,
}

impl Default for Xe {
    fn default() -> Self {
        Self {
            device_to_device: true,
            atomic_timeslice_ns: 5_000_000,
        }
    }
}

/// The range a fault at `page` makes inside `room`: the largest aligned
/// chunk that fits, a 64 KiB one only when `present` holds for each of
/// its pages.
pub fn chunk(page: PageNum, room: PageRange, present: &dyn Fn(PageNum) -> bool) -> PageRange {
    for pages in CHUNK_PAGES {
        let n = PageCount::new(pages);
        let lo = page.align_down(n);
        let c = PageRange::new(lo, lo.add(n));
        if !room.contains_range(c) {
            continue;
        }
        if pages > 1 && pages <= CHECK_PAGES && !c.pages().all(present) {
            continue;
        }
        return c;
    }
    PageRange::new(page, PageNum::new(page.raw() + 1))
}

impl FaultPolicy for Xe {
    fn name(&self) -> &str {
        "xe"
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        // 4. The range: a page is present when system memory or VRAM
        //    holds it.
        let r = ctx.range;
        let present = |p: PageNum| ctx.host.holds(p) || r.vram.get(r.index(p));
        let range = chunk(ctx.page, r.range(), &present);
        // 3. The target pagemap: an atomic fault needs VRAM (`devmem_only`:
        //    `xe_vma_need_vram_for_atomic` is 1 for a discrete GPU and the
        //    default atomic attribute), the faulting tile's own whatever
        //    madvise prefers; otherwise the preferred location, else the
        //    faulting tile's VRAM.
        let to = match r.attrs.preferred_loc {
            _ if ctx.atomic => Location::Vram(ctx.gpu_id),
            Some(loc) => loc,
            None => Location::Vram(ctx.gpu_id),
        };
        // 8.-10. Migrate the whole range, then map it.
        FaultPlan::serve(Some(Migration { to, pages: range }), range)
    }

    fn batched(&self) -> bool {
        true
    }

    /// The faults of one (GPU, 2 MiB window) are chained to the first of
    /// them, in ring order (the page-fault cache).
    fn order(&mut self, faults: &[BatchFault]) -> Vec<BatchStep> {
        let mut steps: Vec<BatchStep> = Vec::new();
        let mut leaders: Vec<((usize, u64), usize)> = Vec::new();
        for (i, f) in faults.iter().enumerate() {
            let key = (f.gpu.get(), f.page.raw() / BLOCK_PAGES as u64);
            match leaders.iter().find(|(k, _)| *k == key) {
                Some(&(_, s)) => steps[s].with.push(i),
                None => {
                    leaders.push((key, steps.len()));
                    steps.push(BatchStep {
                        serve: i,
                        with: Vec::new(),
                    });
                }
            }
        }
        steps
    }

    fn splits_ranges(&self) -> bool {
        false
    }

    fn block_pages(&self) -> Option<u64> {
        Some(BLOCK_PAGES as u64)
    }

    fn per_page_residency(&self) -> bool {
        true
    }

    /// Xe's multi-device pagemaps copy over PCIe peer-to-peer as well:
    /// the knob decides, not the link.
    fn direct_peer_migration(&self, _link: super::PeerLink) -> bool {
        self.device_to_device
    }

    /// Xe's prefetch is a VM bind (`prefetch_ranges` in `xe_vm.c`): region
    /// 0 migrates the range to system memory, region N to that tile's
    /// VRAM, and either way the range is then bound.
    fn prefetch_binds(&self) -> bool {
        true
    }

    fn configure(&mut self, config: &crate::config::Config) {
        self.device_to_device = config.xe_device_to_device;
        self.atomic_timeslice_ns = config.xe_atomic_timeslice_ns;
    }

    /// `timeslice_ms` of a `devmem_only` fault (5 ms; it doubles on each
    /// retry of the fault, which svmsim's single pass does not make).
    fn atomic_timeslice_ns(&self) -> u64 {
        self.atomic_timeslice_ns
    }

    /// Memory never registered: its present pages are those system
    /// memory holds.
    fn new_range(&mut self, ctx: &super::NewRangeCtx<'_>) -> PageRange {
        chunk(ctx.page, ctx.room, &|p| ctx.host.holds(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(a: u64, b: u64) -> PageRange {
        PageRange::new(PageNum::new(a), PageNum::new(b))
    }

    /// 2 MiB where it fits, over unpopulated memory too; 64 KiB only
    /// over present pages; else 4 KiB.
    #[test]
    fn a_fault_takes_the_largest_aligned_chunk_that_fits() {
        let all = |_| true;
        let none = |_| false;
        assert_eq!(
            chunk(PageNum::new(600), pr(512, 1024), &none),
            pr(512, 1024)
        );
        assert_eq!(chunk(PageNum::new(600), pr(520, 1024), &all), pr(592, 608));
        assert_eq!(chunk(PageNum::new(600), pr(520, 1024), &none), pr(600, 601));
        // A 64 KiB chunk that leaves the room is not taken.
        assert_eq!(chunk(PageNum::new(593), pr(593, 700), &all), pr(593, 594));
    }

    #[test]
    fn faults_of_one_window_are_chained_to_the_first() {
        let g = |i| crate::gpu::GpuIndex::new(i).unwrap();
        let f = |gpu, page| BatchFault {
            gpu: g(gpu),
            page: PageNum::new(page),
            write: false,
        };
        let steps = Xe::default().order(&[f(0, 700), f(0, 10), f(1, 20), f(0, 600), f(0, 5)]);
        let got: Vec<(usize, Vec<usize>)> =
            steps.iter().map(|s| (s.serve, s.with.clone())).collect();
        assert_eq!(got, vec![(0, vec![3]), (1, vec![4]), (2, vec![])]);
    }
}

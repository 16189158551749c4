//! One SVM range: a page interval with attributes, residency, DMA arrays and its VRAM buffer (`struct svm_range`).
//!
//! Ranges live in [`crate::range_list::SvmRangeList`]. A range's pages are
//! each in system memory or in the VRAM of `actual_loc`; [`SvmRange::vram`]
//! is the one record of which. VRAM pages sit VA-linearly in the range's
//! buffer: page `k` at buffer page `bo.offset + k`, as kfd places them in
//! its `svm_bo`, so split siblings share the buffer with shifted offsets.

use serde::{Deserialize, Serialize};

use crate::addr::{PageNum, PageRange};
use crate::attr::Attrs;
use crate::dma::DmaArrays;
use crate::gpu::GpuIndex;
use crate::residency::PageBits;

/// A reference to the VRAM buffer (`svm_bo`) that holds a range's VRAM pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BoRef {
    /// The buffer, in the process's buffer table.
    pub id: u64,
    /// Buffer page of the range's first page (`prange->offset`).
    pub offset: u64,
}

/// Deferred-list work parked on a range by the munmap notifier
/// (`enum svm_work_list_ops`; `SVM_OP_NULL` is `None`).
///
/// kfd splits ranges inside the notifier, where it may not touch the
/// interval tree, so the pieces wait on their parent's `child_list` until
/// the deferred list work applies these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ListOp {
    /// `SVM_OP_UNMAP_RANGE`: the pages were unmapped; the piece is freed.
    /// Sticky: no later op replaces it.
    UnmapRange,
    /// `SVM_OP_UPDATE_RANGE_NOTIFIER`: a range that lost pages gets its
    /// notifier interval narrowed.
    UpdateRangeNotifier,
    /// `SVM_OP_ADD_RANGE`: the tail split off by a hole in the middle is
    /// inserted as a range of its own. Faults on it wait until then.
    AddRange,
}

/// A contiguous run of pages that share attributes.
///
/// # Invariants
/// - The page range is never empty.
/// - `vram` covers every page; when any bit is set, `actual_loc` and `bo`
///   are set. When none is, both are `None` (the buffer reference is dropped
///   as soon as no page of the range is in VRAM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvmRange {
    range: PageRange,
    /// The range's attributes.
    pub attrs: Attrs,
    /// Some part of the range is, or was since its last full unmap, mapped on a GPU.
    ///
    /// kfd keeps this per range, not per page. It gates the "same attributes
    /// and already mapped" shortcut of set_attr and XNACK-off eviction.
    pub mapped_to_gpu: bool,
    /// The GPUs whose page tables this range wrote and has not cleared
    /// since, whole (kfd's `bitmap_mapped`, 2026): set by a mapping,
    /// cleared by an unmap of the whole range from that GPU. Kept in every
    /// release; the engine decides by it from
    /// [`crate::kernel::Change::NoAccessUnmaps`] on.
    pub mapped_on: crate::gpu::GpuMask,
    /// Pages in the VRAM of `actual_loc`: the authoritative location record.
    pub vram: PageBits,
    /// The GPU whose VRAM holds some of the pages.
    pub actual_loc: Option<GpuIndex>,
    /// The buffer holding them.
    pub bo: Option<BoRef>,
    /// Per-GPU DMA address arrays.
    pub dma: DmaArrays,
    /// Simulated time of the last successful validate-and-map (fault de-dup).
    pub validate_timestamp: Option<u64>,
    /// Evictions not yet restored (XNACK off; `prange->invalid`).
    pub invalid: u32,
    /// `prange->vram_pages` kept the kernel's way: added to and subtracted
    /// from by migrations, and re-derived on split from the VRAM tags of the
    /// last GPU's DMA array. Never used for decisions; the checker compares
    /// it with [`SvmRange::vram_pages`] to show kfd's accounting drift.
    pub kernel_vram_pages: u64,
    /// Times the range was evicted: its queues stopped for it (XNACK off or
    /// GPU_ALWAYS_MAPPED) or its VRAM taken for another buffer.
    pub evictions: u32,
    /// Times the restore work remapped it.
    pub restores: u32,
    /// Deferred work waiting for this range (`prange->work_item.op`).
    pub op: Option<ListOp>,
}

impl SvmRange {
    /// A new, never-mapped range, all in system memory.
    ///
    /// # Panics
    /// If `range` is empty.
    pub fn new(range: PageRange, attrs: Attrs) -> Self {
        assert!(!range.is_empty(), "an SVM range holds at least one page");
        let n = range.npages().raw();
        Self {
            range,
            attrs,
            mapped_to_gpu: false,
            mapped_on: crate::gpu::GpuMask::default(),
            vram: PageBits::new(n),
            actual_loc: None,
            bo: None,
            dma: DmaArrays::new(n),
            validate_timestamp: None,
            invalid: 0,
            kernel_vram_pages: 0,
            evictions: 0,
            restores: 0,
            op: None,
        }
    }

    /// The pages of the range.
    pub fn range(&self) -> PageRange {
        self.range
    }

    /// First page (kfd `start`).
    pub fn start(&self) -> PageNum {
        self.range.start()
    }

    /// Last page, inclusive (kfd `last`).
    pub fn last(&self) -> PageNum {
        self.range.last()
    }

    /// Pages in VRAM (`prange->vram_pages`, derived).
    pub fn vram_pages(&self) -> u64 {
        self.vram.count()
    }

    /// Index of `page` inside the range.
    ///
    /// # Panics
    /// If the page is outside the range.
    pub fn index(&self, page: PageNum) -> u64 {
        assert!(
            self.range.contains(page),
            "page {page} outside range {}",
            self.range
        );
        page.offset_from(self.range.start()).raw()
    }

    /// Drops `actual_loc` once no page is in VRAM (`svm_range_vram_node_free`
    /// when `vram_pages` reaches 0). The buffer reference stays, as
    /// `prange->svm_bo` does: it no longer keeps the buffer alive, but while
    /// a split sibling does, the next migration into the same GPU reuses it
    /// (`svm_range_validate_svm_bo`). It is cleared when the buffer is freed.
    pub fn settle(&mut self) {
        if self.vram.count() == 0 {
            self.actual_loc = None;
        }
    }

    /// Shares this range's kernel-kept `vram_pages` among the pieces a split
    /// made of it, as `svm_range_split_pages` does: every new piece counts
    /// the VRAM tags in its slice of the *last* GPU's DMA array, and the
    /// piece kfd keeps (`keep`) is left with what remains, wrapping as the
    /// kernel's `u64` does. Without `actual_loc` nothing is recounted.
    pub fn share_kernel_vram_pages(&self, pieces: &mut [SvmRange], keep: usize) {
        let mut rest = self.kernel_vram_pages;
        for (i, p) in pieces.iter_mut().enumerate() {
            if i == keep {
                continue;
            }
            p.kernel_vram_pages = if self.actual_loc.is_some() {
                p.dma.kernel_split_vram_count()
            } else {
                0
            };
            rest = rest.wrapping_sub(p.kernel_vram_pages);
        }
        if let Some(k) = pieces.get_mut(keep) {
            k.kernel_vram_pages = rest;
        }
    }

    /// A copy of this range narrowed to `sub`, as `svm_range_clone` followed by
    /// `svm_range_split` makes it: attributes and mapping state are copied;
    /// residency and DMA arrays are sliced; the buffer is shared with the
    /// offset moved by the pages cut off the front. The validate timestamp
    /// is not copied (`svm_range_new` leaves it 0).
    ///
    /// `actual_loc` goes with `rule`.
    ///
    /// # Panics
    /// If `sub` is empty or not inside the range.
    pub fn piece(&self, rule: SplitRule, sub: PageRange) -> Self {
        assert!(
            !sub.is_empty(),
            "an SVM range piece holds at least one page"
        );
        assert!(
            self.range.contains_range(sub),
            "piece lies outside its range"
        );
        let from = sub.start().offset_from(self.range.start()).raw();
        let to = from + sub.npages().raw();
        let mut p = Self {
            range: sub,
            attrs: self.attrs,
            mapped_to_gpu: self.mapped_to_gpu,
            mapped_on: self.mapped_on,
            vram: self.vram.slice(from, to),
            actual_loc: self.actual_loc,
            bo: self.bo.map(|b| BoRef {
                id: b.id,
                offset: b.offset + from,
            }),
            dma: self.dma.slice(from, to),
            // `svm_range_new` starts a piece unvalidated; the piece kfd keeps
            // (the original) gets its stamp back from the caller.
            validate_timestamp: None,
            invalid: self.invalid,
            kernel_vram_pages: self.kernel_vram_pages,
            evictions: self.evictions,
            restores: self.restores,
            // `svm_range_new` starts every split piece with `SVM_OP_NULL`.
            op: None,
        };
        if rule == SplitRule::ActualLocFollowsVram {
            p.settle();
        }
        p
    }
}

/// How a split piece takes its range's `actual_loc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitRule {
    /// Since the 2024 fix ([`crate::kernel::Change::SplitActualLoc`]): a
    /// piece keeps it only if it holds VRAM pages.
    #[default]
    ActualLocFollowsVram,
    /// Before: every piece copies it, so a piece may say VRAM and hold
    /// none (`svm_range_split_adjust` copied `actual_loc`).
    Copied,
}

//! The per-process SVM range list (`struct svm_range_list`): an interval structure of ranges.
//!
//! # Overview
//! Ranges never overlap and are never merged automatically: two neighbours
//! with equal attributes stay two ranges, as in kfd. The list is a
//! `BTreeMap` keyed by each range's first page; iteration is in address
//! order, so everything built from it is deterministic.
//!
//! [`SvmRangeList::plan_add`] is `svm_range_add`: it works out, without
//! touching the list, which ranges a SET_ATTR replaces, which pieces it
//! creates and which ranges it updates. `crate::process` reserves memory for
//! the new pieces and only then calls [`SvmRangeList::commit`], which is why a
//! failing set_attr leaves the list as it was.
//!
//! # Partial unmap
//! kfd unmaps in two halves, and so does the list. In the MMU notifier,
//! [`SvmRangeList::unmap_split`] cuts the ranges at the unmapped pages and
//! marks the pieces with their deferred op ([`ListOp`]); kfd parks such
//! pieces on the parent's `child_list`, which `svm_range_from_addr` also
//! searches, so keeping them in the one map with their op is the same to
//! every lookup. Later, [`SvmRangeList::apply_pending_ops`] is the deferred
//! list work: it removes the unmapped pieces and returns them for freeing.
//! set_attr flushes that work before it looks, so it never sees a marked
//! piece; get_attr does not flush, and skips the marked pieces instead
//! (what the flush would have left).

use std::collections::BTreeMap;

use crate::addr::{PageCount, PageNum, PageRange};
use crate::attr::{AttrOp, Attrs};
use crate::range::{ListOp, SvmRange};

/// The ranges of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SvmRangeList {
    ranges: BTreeMap<PageNum, SvmRange>,
    /// Some range may carry a deferred op (kept so that asking is O(1):
    /// the scheduler asks before every step).
    pending: bool,
    /// How split pieces take `actual_loc` (the kernel's release decides).
    pub split_rule: crate::range::SplitRule,
}

/// What one set_attr does to the list, worked out before anything changes.
///
/// The lists mirror `svm_range_add`'s: `remove_list`, `insert_list`,
/// `new_list` (gap ranges, which carry a memory reservation), `update_list`
/// and `remap_list`. Ranges are named by their first page, which is unique
/// once the plan is committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddPlan {
    /// Originals that clones replace.
    pub remove: Vec<PageNum>,
    /// Clones of partly covered ranges, and the head and tail pieces split off them.
    pub insert: Vec<SvmRange>,
    /// New ranges with default attributes that fill the gaps.
    pub new: Vec<SvmRange>,
    /// Ranges the attributes are applied to (clones, contained ranges, new ranges).
    pub update: Vec<PageNum>,
    /// Split-off pieces whose split point is not granularity aligned: their GPU
    /// mappings must be rebuilt because a huge PTE may span the cut.
    pub remap: Vec<PageNum>,
}

impl AddPlan {
    /// Pages in new ranges: what must be reserved before committing (XNACK off).
    pub fn new_pages(&self) -> PageCount {
        PageCount::new(self.new.iter().map(|r| r.range().npages().raw()).sum())
    }
}

impl SvmRangeList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the list holds no range.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// All ranges in address order.
    pub fn iter(&self) -> impl Iterator<Item = &SvmRange> {
        self.ranges.values()
    }

    /// Total pages in all ranges.
    pub fn total_pages(&self) -> PageCount {
        PageCount::new(self.iter().map(|r| r.range().npages().raw()).sum())
    }

    /// The range that starts at `start`.
    pub fn get(&self, start: PageNum) -> Option<&SvmRange> {
        self.ranges.get(&start)
    }

    /// The range that holds `page` (`svm_range_from_addr`).
    pub fn find(&self, page: PageNum) -> Option<&SvmRange> {
        self.ranges
            .range(..=page)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.range().contains(page))
    }

    /// The ranges that share a page with `range`, in address order.
    pub fn overlapping(&self, range: PageRange) -> impl Iterator<Item = &SvmRange> {
        // Only the last range starting before `range` can reach into it,
        // because ranges do not overlap.
        let before = self
            .ranges
            .range(..range.start())
            .next_back()
            .map(|(_, r)| r)
            .filter(move |r| r.range().overlaps(range));
        let inside = self
            .ranges
            .range(range.start()..range.end())
            .map(|(_, r)| r);
        before.into_iter().chain(inside)
    }

    /// The ranges that share a page with `range`, each as its first page and
    /// the part of `range` it holds (what a notifier callback gets per
    /// interval). Collected, so that the caller may change the list.
    pub fn cuts(&self, range: PageRange) -> Vec<(PageNum, PageRange)> {
        self.overlapping(range)
            .map(|r| (r.start(), r.range().intersect(range).expect("overlapping")))
            .collect()
    }

    /// Works out what a set_attr of `ops` over `range` does (`svm_range_add`).
    ///
    /// `default_attrs` are the attributes of a gap range before `ops` apply;
    /// `max_pages` is `max_svm_range_pages`.
    #[must_use = "a plan does nothing until it is committed"]
    pub fn plan_add(
        &self,
        range: PageRange,
        ops: &[AttrOp],
        default_attrs: Attrs,
        max_pages: PageCount,
    ) -> AddPlan {
        let mut plan = AddPlan::default();
        let mut start = range.start();
        for node in self.overlapping(range) {
            let nr = node.range();
            let next_start = nr.end().min(range.end());
            if node.attrs.is_same(ops) && node.mapped_to_gpu {
                // Same attributes and already mapped: nothing to do for this
                // piece, not even a split of a partly covered range.
            } else if nr.start() < range.start() || nr.end() > range.end() {
                // Partly covered: a clone takes the original's place, and only
                // the covered part of the clone is updated.
                plan.remove.push(nr.start());
                let gran = node.attrs.granularity.pages();
                let covered = nr.intersect(range).expect("overlapping node shares pages");
                // The clone keeps the covered part; head and tail split off it.
                let mut pieces = vec![node.piece(self.split_rule, covered)];
                if nr.start() < range.start() {
                    let head = PageRange::new(nr.start(), range.start());
                    pieces.push(node.piece(self.split_rule, head));
                    if !range.start().is_aligned(gran) {
                        plan.remap.push(head.start());
                    }
                }
                if nr.end() > range.end() {
                    let tail = PageRange::new(range.end(), nr.end());
                    pieces.push(node.piece(self.split_rule, tail));
                    if !range.end().is_aligned(gran) {
                        plan.remap.push(tail.start());
                    }
                }
                node.share_kernel_vram_pages(&mut pieces, 0);
                plan.insert.extend(pieces);
                plan.update.push(covered.start());
            } else {
                plan.update.push(nr.start());
            }
            if nr.start() > start {
                Self::split_new(
                    PageRange::new(start, nr.start()),
                    default_attrs,
                    max_pages,
                    &mut plan,
                );
            }
            start = next_start;
        }
        if start < range.end() {
            Self::split_new(
                PageRange::new(start, range.end()),
                default_attrs,
                max_pages,
                &mut plan,
            );
        }
        plan
    }

    /// Fills a gap with new ranges that never cross a `max_pages` boundary
    /// (`svm_range_split_new`).
    fn split_new(gap: PageRange, attrs: Attrs, max_pages: PageCount, plan: &mut AddPlan) {
        let mut start = gap.start();
        while start < gap.end() {
            let boundary = start.add(max_pages).align_down(max_pages);
            let end = boundary.min(gap.end());
            let r = SvmRange::new(PageRange::new(start, end), attrs);
            plan.update.push(start);
            plan.new.push(r);
            start = end;
        }
    }

    /// Carries out a plan: replaces originals, inserts pieces and new ranges,
    /// and applies `ops` to every updated range.
    ///
    /// # Panics
    /// If the plan was not made from this list as it is now.
    pub fn commit(&mut self, plan: &AddPlan, ops: &[AttrOp]) {
        for start in &plan.remove {
            self.ranges
                .remove(start)
                .expect("plan removes a range that is in the list");
        }
        for r in plan.insert.iter().chain(&plan.new) {
            let old = self.ranges.insert(r.start(), r.clone());
            assert!(old.is_none(), "plan inserts over an existing range");
        }
        for start in &plan.update {
            let r = self
                .ranges
                .get_mut(start)
                .expect("plan updates a range that is in the list");
            for &op in ops {
                r.attrs.apply(op);
            }
        }
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
    }

    /// Cuts `sub` out of the range at `start` as a range of its own (with
    /// a head and a tail around it as needed), each piece keeping its
    /// part of the residency, the buffer and the mappings, and the
    /// validate stamp; returns `sub`'s start. A policy with per-page
    /// residency (UVM's) moves a piece without moving its neighbours.
    /// A range waiting for deferred work, or `sub` not inside the range,
    /// is left whole (`None`).
    pub fn carve(&mut self, start: PageNum, sub: PageRange) -> Option<PageNum> {
        let node = self.ranges.get(&start)?;
        let nr = node.range();
        if node.op.is_some() || sub.is_empty() || !nr.contains_range(sub) {
            return None;
        }
        if nr == sub {
            return Some(start);
        }
        let node = self.ranges.remove(&start).expect("looked up above");
        let mut pieces = vec![node.piece(self.split_rule, sub)];
        if nr.start() < sub.start() {
            pieces.push(node.piece(self.split_rule, PageRange::new(nr.start(), sub.start())));
        }
        if sub.end() < nr.end() {
            pieces.push(node.piece(self.split_rule, PageRange::new(sub.end(), nr.end())));
        }
        node.share_kernel_vram_pages(&mut pieces, 0);
        for mut p in pieces {
            p.validate_timestamp = node.validate_timestamp;
            self.ranges.insert(p.start(), p);
        }
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
        Some(sub.start())
    }

    /// Mutable access to the range that starts at `start`.
    pub fn get_mut(&mut self, start: PageNum) -> Option<&mut SvmRange> {
        self.ranges.get_mut(&start)
    }

    /// The notifier half of munmap (`svm_range_unmap_split` over the parent
    /// and its children): every range that shares pages with `range` is
    /// split at the cut, and the pieces are marked with the deferred work
    /// that will finish the job. Nothing is freed yet:
    /// - the unmapped piece gets [`ListOp::UnmapRange`];
    /// - the piece kfd keeps (the head if there is one, else the tail) gets
    ///   [`ListOp::UpdateRangeNotifier`], unless it already waits for other
    ///   work;
    /// - with a hole in the middle, the tail is new and gets
    ///   [`ListOp::AddRange`].
    ///
    /// Pieces already marked [`ListOp::UnmapRange`] are being freed and are
    /// left alone. Pieces keep their attributes and `mapped_to_gpu`, as
    /// `svm_range_split` copies them.
    pub fn unmap_split(&mut self, range: PageRange) {
        let hit: Vec<PageNum> = self
            .overlapping(range)
            .filter(|r| r.op != Some(ListOp::UnmapRange))
            .map(SvmRange::start)
            .collect();
        for start in hit {
            self.pending = true;
            let mut node = self
                .ranges
                .remove(&start)
                .expect("overlapping range is in the list");
            let nr = node.range();
            let cut = nr.intersect(range).expect("overlapping range shares pages");
            if cut == nr {
                node.op = Some(ListOp::UnmapRange);
                self.ranges.insert(node.start(), node);
                continue;
            }
            let mut pieces = Vec::new();
            let head = nr.start() < cut.start();
            let tail = cut.end() < nr.end();
            if head {
                pieces.push(node.piece(self.split_rule, PageRange::new(nr.start(), cut.start())));
            }
            if tail {
                pieces.push(node.piece(self.split_rule, PageRange::new(cut.end(), nr.end())));
            }
            pieces.push(node.piece(self.split_rule, cut));
            node.share_kernel_vram_pages(&mut pieces, 0);
            let kept_op = node.op.or(Some(ListOp::UpdateRangeNotifier));
            let n = pieces.len();
            for (i, mut p) in pieces.into_iter().enumerate() {
                p.op = if i == n - 1 {
                    Some(ListOp::UnmapRange)
                } else if i == 0 {
                    // kfd keeps the original here: it keeps its stamp.
                    p.validate_timestamp = node.validate_timestamp;
                    kept_op
                } else {
                    Some(ListOp::AddRange)
                };
                self.ranges.insert(p.start(), p);
            }
        }
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
    }

    /// Whether some range waits for deferred work.
    pub fn has_pending_ops(&self) -> bool {
        self.pending
    }

    /// The deferred half of munmap (`svm_range_handle_list_op` for every
    /// queued range): removes and returns the unmapped pieces, whose DMA
    /// mappings, VRAM pages and reservation the caller releases, and lets
    /// every other piece become an ordinary range.
    pub fn apply_pending_ops(&mut self) -> Vec<SvmRange> {
        let gone: Vec<PageNum> = self
            .iter()
            .filter(|r| r.op == Some(ListOp::UnmapRange))
            .map(SvmRange::start)
            .collect();
        for r in self.ranges.values_mut() {
            if r.op != Some(ListOp::UnmapRange) {
                r.op = None;
            }
        }
        self.pending = false;
        gone.into_iter()
            .map(|s| self.ranges.remove(&s).expect("listed range"))
            .collect()
    }

    /// Removes the pages of `range` from every range at once: the notifier
    /// half and the deferred half back to back.
    pub fn unmap(&mut self, range: PageRange) -> Vec<SvmRange> {
        self.unmap_split(range);
        self.apply_pending_ops()
    }

    /// Removes every range and returns them.
    pub fn clear(&mut self) -> Vec<SvmRange> {
        self.pending = false;
        std::mem::take(&mut self.ranges).into_values().collect()
    }

    /// Checks the list's own invariants: keys match starts, ranges are
    /// non-empty and do not overlap.
    ///
    /// # Errors
    /// A description of the first violation.
    pub fn check(&self) -> Result<(), String> {
        let mut prev: Option<PageRange> = None;
        for (key, r) in &self.ranges {
            if *key != r.start() {
                return Err(format!("range {} filed under {key}", r.range()));
            }
            if let Some(p) = prev
                && p.end() > r.start()
            {
                return Err(format!("ranges {p} and {} overlap", r.range()));
            }
            prev = Some(r.range());
        }
        if !self.pending && self.iter().any(|r| r.op.is_some()) {
            return Err("a range waits for deferred work nobody will run".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Granularity, SvmFlags};
    use crate::gpu::{GpuIndex, GpuMask};

    fn pr(start: u64, end: u64) -> PageRange {
        PageRange::new(PageNum::new(start), PageNum::new(end))
    }

    fn attrs() -> Attrs {
        Attrs::new_range(GpuMask::EMPTY)
    }

    fn add(list: &mut SvmRangeList, range: PageRange, ops: &[AttrOp], max: u64) -> AddPlan {
        let plan = list.plan_add(range, ops, attrs(), PageCount::new(max));
        list.commit(&plan, ops);
        plan
    }

    fn bounds(list: &SvmRangeList) -> Vec<(u64, u64)> {
        list.iter()
            .map(|r| (r.range().start().raw(), r.range().end().raw()))
            .collect()
    }

    fn pages(v: &[SvmRange]) -> u64 {
        v.iter().map(|r| r.range().npages().raw()).sum()
    }

    const GRAN3: AttrOp = AttrOp::Granularity(3);

    #[test]
    fn gap_ranges_are_chunked_at_max_pages() {
        let mut l = SvmRangeList::new();
        // 8-page boundaries: 5..8, 8..16, 16..21.
        let plan = add(&mut l, pr(5, 21), &[GRAN3], 8);
        assert_eq!(bounds(&l), vec![(5, 8), (8, 16), (16, 21)]);
        assert_eq!(plan.new_pages(), PageCount::new(16));
        assert!(
            l.iter()
                .all(|r| r.attrs.granularity == Granularity::from_uapi(3))
        );
    }

    #[test]
    fn partial_cover_clones_and_splits_head_and_tail() {
        let mut l = SvmRangeList::new();
        add(&mut l, pr(0, 16), &[GRAN3], 1 << 18);
        let plan = add(
            &mut l,
            pr(2, 10),
            &[AttrOp::SetFlags(SvmFlags::from_bits(
                crate::uapi::flag::GPU_RO,
            ))],
            1 << 18,
        );
        assert_eq!(bounds(&l), vec![(0, 2), (2, 10), (10, 16)]);
        assert_eq!(plan.remove, vec![PageNum::new(0)]);
        assert_eq!(plan.update, vec![PageNum::new(2)]);
        // Granularity 3 is 8 pages: the cut at 2 is unaligned, the cut at 10 too.
        assert_eq!(plan.remap, vec![PageNum::new(0), PageNum::new(10)]);
        let ro = |r: &SvmRange| r.attrs.flags.bits() & crate::uapi::flag::GPU_RO != 0;
        let flags: Vec<bool> = l.iter().map(ro).collect();
        assert_eq!(flags, vec![false, true, false]);
    }

    #[test]
    fn aligned_cuts_need_no_remap() {
        let mut l = SvmRangeList::new();
        add(&mut l, pr(0, 32), &[GRAN3], 1 << 18);
        let plan = add(
            &mut l,
            pr(8, 24),
            &[AttrOp::ClrFlags(SvmFlags::DEFAULT)],
            1 << 18,
        );
        assert_eq!(bounds(&l), vec![(0, 8), (8, 24), (24, 32)]);
        assert!(plan.remap.is_empty());
    }

    #[test]
    fn same_attrs_and_mapped_skips_the_split() {
        let mut l = SvmRangeList::new();
        let g0 = GpuIndex::new(0).unwrap();
        add(&mut l, pr(0, 16), &[AttrOp::Access(g0)], 1 << 18);
        l.get_mut(PageNum::new(0)).unwrap().mapped_to_gpu = true;
        let plan = add(&mut l, pr(4, 8), &[AttrOp::Access(g0)], 1 << 18);
        assert_eq!(bounds(&l), vec![(0, 16)]);
        assert_eq!(plan, AddPlan::default());
        // Not mapped: the same request splits.
        l.get_mut(PageNum::new(0)).unwrap().mapped_to_gpu = false;
        add(&mut l, pr(4, 8), &[AttrOp::Access(g0)], 1 << 18);
        assert_eq!(bounds(&l), vec![(0, 4), (4, 8), (8, 16)]);
    }

    #[test]
    fn gaps_between_and_after_ranges_are_filled() {
        let mut l = SvmRangeList::new();
        add(&mut l, pr(2, 4), &[], 1 << 18);
        add(&mut l, pr(8, 10), &[], 1 << 18);
        let plan = add(&mut l, pr(0, 16), &[GRAN3], 1 << 18);
        assert_eq!(bounds(&l), vec![(0, 2), (2, 4), (4, 8), (8, 10), (10, 16)]);
        assert_eq!(plan.new_pages(), PageCount::new(12));
        assert!(plan.remove.is_empty());
        assert_eq!(plan.update.len(), 5);
    }

    #[test]
    fn unmap_cuts_holes() {
        let mut l = SvmRangeList::new();
        add(&mut l, pr(0, 16), &[], 1 << 18);
        add(&mut l, pr(16, 20), &[], 1 << 18);
        assert_eq!(pages(&l.unmap(pr(2, 6))), 4);
        assert_eq!(bounds(&l), vec![(0, 2), (6, 16), (16, 20)]);
        assert_eq!(pages(&l.unmap(pr(10, 18))), 8);
        assert_eq!(bounds(&l), vec![(0, 2), (6, 10), (18, 20)]);
        assert_eq!(pages(&l.unmap(pr(0, 100))), 8);
        assert!(l.is_empty());
    }

    /// The op of the range holding `page`.
    fn op_at(l: &SvmRangeList, page: u64) -> Option<ListOp> {
        l.find(PageNum::new(page)).and_then(|r| r.op)
    }

    #[test]
    fn unmap_split_parks_pieces_with_their_ops() {
        let mut l = SvmRangeList::new();
        add(&mut l, pr(0, 16), &[], 1 << 18);
        add(&mut l, pr(16, 20), &[], 1 << 18);
        add(&mut l, pr(20, 24), &[], 1 << 18);
        // A hole in the middle: head kept, tail new and not added yet.
        l.unmap_split(pr(4, 6));
        assert_eq!(
            bounds(&l),
            vec![(0, 4), (4, 6), (6, 16), (16, 20), (20, 24)]
        );
        assert_eq!(op_at(&l, 0), Some(ListOp::UpdateRangeNotifier));
        assert_eq!(op_at(&l, 4), Some(ListOp::UnmapRange));
        assert_eq!(op_at(&l, 6), Some(ListOp::AddRange));
        // The unmapped head of the waiting tail: the tail keeps its op.
        l.unmap_split(pr(6, 8));
        assert_eq!(op_at(&l, 6), Some(ListOp::UnmapRange));
        assert_eq!(op_at(&l, 8), Some(ListOp::AddRange));
        // A whole range, and UNMAP is sticky over a second unmap.
        l.unmap_split(pr(16, 20));
        l.unmap_split(pr(4, 20));
        assert_eq!(op_at(&l, 16), Some(ListOp::UnmapRange));
        assert_eq!(op_at(&l, 20), None);
        assert!(l.has_pending_ops());
        let gone = l.apply_pending_ops();
        assert_eq!(pages(&gone), 16);
        assert_eq!(bounds(&l), vec![(0, 4), (20, 24)]);
        assert!(!l.has_pending_ops());
    }

    #[test]
    fn find_and_overlapping() {
        let mut l = SvmRangeList::new();
        add(&mut l, pr(4, 8), &[], 1 << 18);
        add(&mut l, pr(10, 12), &[], 1 << 18);
        assert_eq!(
            l.find(PageNum::new(7)).map(SvmRange::start),
            Some(PageNum::new(4))
        );
        assert!(l.find(PageNum::new(8)).is_none());
        let hit: Vec<_> = l.overlapping(pr(5, 11)).map(SvmRange::start).collect();
        assert_eq!(hit, vec![PageNum::new(4), PageNum::new(10)]);
        assert_eq!(l.overlapping(pr(8, 10)).count(), 0);
    }
}

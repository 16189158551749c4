//! What the driver did to each buffer of a process: the GPU faults it took
//! (from the SMI events the engine raises, whether or not their log is
//! kept) and the pages that moved in and out (as the simulator moves
//! them), by the VMA they fell in, keyed by its first page then. A run's
//! explanation names the buffer that cost most from this, and calls a
//! buffer thrashing when it moved more than twice its size.

use std::collections::BTreeMap;

use svm_core::addr::{CpuVa, PageNum, PageRange};
use svm_core::events::Kind;

use crate::mm::AddressSpace;

/// One buffer's traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BufferTraffic {
    /// The buffer's pages (its VMA's, when last counted).
    pub pages: u64,
    /// GPU retry faults that reached the driver on it.
    pub faults: u64,
    /// Pages moved into VRAM (any GPU's, from system memory or a peer).
    pub pages_in: u64,
    /// Pages moved back to system memory.
    pub pages_out: u64,
    /// Pages that arrived, by where: a GPU by its gpu_id, system memory
    /// as 0 (never a gpu_id).
    pub arrivals: BTreeMap<u32, u64>,
}

impl BufferTraffic {
    /// Pages moved either way.
    pub fn moved(&self) -> u64 {
        self.pages_in + self.pages_out
    }

    /// It moved more than twice its size: its pages went back and forth.
    pub fn thrashing(&self) -> bool {
        thrashes(self.pages, self.moved())
    }
}

/// The thrashing rule, in any unit: a buffer of `size` that moved
/// `moved` (in and out together) moved more than twice its size.
pub fn thrashes(size: u64, moved: u64) -> bool {
    size > 0 && moved > 2 * size
}

/// Every buffer's traffic in one process.
///
/// Pages are counted as they move (`Env::move_page`, peer moves), a
/// page at a time, so the buffer of the last move is kept apart with its
/// counts (`run`): a migration's pages are consecutive, and counting them
/// costs a range check a page, not a search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    by_vma: BTreeMap<u64, BufferTraffic>,
    run: Option<Run>,
}

/// Pages moved to one place, in one buffer, not yet added to its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    /// The buffer's pages and key.
    vma: PageRange,
    /// Where they went: a gpu_id, or 0 for system memory.
    to: u32,
    pages: u64,
}

impl Traffic {
    /// Counts a GPU fault that reached the driver (its SMI
    /// `PAGE_FAULT_START`) against the buffer it falls in; a fault outside
    /// every VMA is not counted.
    pub(crate) fn record(&mut self, mm: &AddressSpace, kind: &Kind) {
        let Kind::PageFaultStart { addr, .. } = *kind else {
            return;
        };
        if let Some(vma) = mm.vma_at(addr) {
            let b = self.by_vma.entry(vma.range.start().raw()).or_default();
            b.pages = vma.range.npages().raw();
            b.faults += 1;
        }
    }

    /// Counts page `va` moved to `to` (a gpu_id, or 0 for system memory).
    #[inline]
    pub(crate) fn moved(&mut self, mm: &AddressSpace, va: PageNum, to: u32) {
        if let Some(r) = &mut self.run
            && r.to == to
            && r.vma.contains(va)
        {
            r.pages += 1;
            return;
        }
        self.moved_slow(mm, va, to);
    }

    #[cold]
    #[inline(never)]
    fn moved_slow(&mut self, mm: &AddressSpace, va: PageNum, to: u32) {
        self.flush();
        if let Some(vma) = mm.vma_at(va) {
            self.run = Some(Run {
                vma: vma.range,
                to,
                pages: 1,
            });
        }
    }

    /// Adds the pending run to its buffer's counts.
    fn flush(&mut self) {
        if let Some(r) = self.run.take() {
            Self::add(&mut self.by_vma, &r);
        }
    }

    fn add(by_vma: &mut BTreeMap<u64, BufferTraffic>, r: &Run) {
        let b = by_vma.entry(r.vma.start().raw()).or_default();
        b.pages = r.vma.npages().raw();
        if r.to == 0 {
            b.pages_out += r.pages;
        } else {
            b.pages_in += r.pages;
        }
        *b.arrivals.entry(r.to).or_default() += r.pages;
    }

    /// Every buffer counted, by its first address.
    pub fn buffers(&self) -> Vec<(CpuVa, BufferTraffic)> {
        let mut all = self.by_vma.clone();
        if let Some(r) = &self.run {
            Self::add(&mut all, r);
        }
        all.into_iter()
            .map(|(p, b)| (PageNum::new(p).va(), b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_count_against_their_buffer_and_place() {
        use crate::mm::{Backing, Mark, Prot};
        let mut mm = AddressSpace::default();
        let (a, _) = mm
            .mmap(None, 8 * 4096, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        let (b, _) = mm
            .mmap(None, 4 * 4096, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        let (pa, pb) = (a.start().raw(), b.start().raw());
        let mut t = Traffic::default();
        for i in 0..8 {
            t.moved(&mm, PageNum::new(pa + i), 0x1002);
        }
        t.moved(&mm, PageNum::new(pb), 0);
        for i in 0..3 {
            t.moved(&mm, PageNum::new(pa + i), 0);
        }
        // Outside every VMA: not counted.
        t.moved(&mm, PageNum::new(1), 0x1002);
        let got: BTreeMap<u64, (u64, u64, u64)> = t
            .buffers()
            .into_iter()
            .map(|(va, b)| (va.page_num().raw(), (b.pages, b.pages_in, b.pages_out)))
            .collect();
        assert_eq!(got, BTreeMap::from([(pa, (8, 8, 3)), (pb, (4, 0, 1))]));
    }

    #[test]
    fn a_buffer_that_moves_more_than_twice_its_size_thrashes() {
        let mut b = BufferTraffic {
            pages: 10,
            pages_in: 12,
            pages_out: 8,
            ..BufferTraffic::default()
        };
        assert!(!b.thrashing());
        b.pages_in += 1;
        assert!(b.thrashing() && b.moved() == 21);
        assert!(!BufferTraffic::default().thrashing());
    }
}

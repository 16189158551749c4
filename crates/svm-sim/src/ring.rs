//! A GPU's interrupt-handler ring for retry faults, with the retry CAM.
//!
//! A wave that misses in the page table writes a retry fault into its GPU's
//! ring with an IH timestamp. The CAM keeps one pending entry per (process,
//! page): a repeat while the first is pending is filtered, as the IH retry
//! CAM of GC 9.4.x and later does (`amdgpu_gmc_filter_faults`). Handling
//! the fault removes its CAM entry (`amdgpu_gmc_filter_faults_remove`), so
//! the next miss on the page is a new fault.
//!
//! A ring that keeps duplicates ([`FaultRing::keep_duplicates`], NVIDIA's
//! replayable fault buffer) filters only a CU's own repeats, as a uTLB
//! holds one pending miss a page: the faults of other CUs on the same page
//! reach the buffer, and the driver finds the duplicates in its batch.
//!
//! Timestamps only order faults against munmap checkpoints
//! (`svms->checkpoint_ts`): every entry gets a fresh, strictly larger one.

use std::collections::{BTreeSet, VecDeque};

use svm_core::addr::PageNum;
use svm_core::policy::Access;

/// One retry fault waiting in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingEntry {
    /// The process (machine index).
    pub proc_index: usize,
    /// The faulting page.
    pub page: PageNum,
    /// What the access did (a write fault, an atomic one).
    pub access: Access,
    /// IH timestamp.
    pub ts: u64,
    /// Simulated time the fault handler can see it (raised + delivery).
    pub at: u64,
    /// The CU whose TLB missed.
    pub cu: u32,
}

/// The ring of one GPU.
#[derive(Clone, Debug, Default)]
pub struct FaultRing {
    entries: VecDeque<RingEntry>,
    cam: BTreeSet<(usize, PageNum, u32)>,
    /// Repeats of a pending fault from other CUs are written too (an
    /// NVIDIA fault buffer's duplicates).
    duplicates: bool,
    /// Faults written into the ring.
    pub raised: u64,
    /// Faults the CAM filtered because one was pending for the page.
    pub filtered: u64,
}

impl FaultRing {
    /// A ring that keeps the repeats of a pending fault that come from
    /// other CUs (see the module doc); set before any fault.
    pub fn keep_duplicates(&mut self, on: bool) {
        self.duplicates = on;
        self.cam.clear();
    }

    /// The CAM's key of a fault.
    fn key(&self, e: &RingEntry) -> (usize, PageNum, u32) {
        (e.proc_index, e.page, if self.duplicates { e.cu } else { 0 })
    }

    /// Writes a fault unless the CAM has one pending for the page (from
    /// its CU, when the ring keeps duplicates). Returns whether it was
    /// written.
    pub fn raise(&mut self, e: RingEntry) -> bool {
        if !self.cam.insert(self.key(&e)) {
            self.filtered += 1;
            return false;
        }
        self.raised += 1;
        self.entries.push_back(e);
        true
    }

    /// The oldest pending fault.
    pub fn head(&self) -> Option<&RingEntry> {
        self.entries.front()
    }

    /// Takes the oldest pending fault for handling and frees its CAM slot.
    pub fn pop(&mut self) -> Option<RingEntry> {
        let e = self.entries.pop_front()?;
        self.cam.remove(&self.key(&e));
        Some(e)
    }

    /// The timestamp of the newest pending fault (the write pointer's).
    pub fn newest_ts(&self) -> Option<u64> {
        self.entries.back().map(|e| e.ts)
    }

    /// Whether a fault is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pending faults.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops every pending fault of a process that is gone.
    pub fn forget_process(&mut self, proc_index: usize) {
        self.entries.retain(|e| e.proc_index != proc_index);
        self.cam.retain(|&(p, _, _)| p != proc_index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(page: u64, ts: u64) -> RingEntry {
        RingEntry {
            proc_index: 0,
            page: PageNum::new(page),
            access: Access::Read,
            ts,
            at: ts,
            cu: 0,
        }
    }

    /// Keeping duplicates, a CU's repeat is still filtered, another CU's
    /// fault on the page is written; popping one frees only its CU's slot.
    #[test]
    fn a_ring_that_keeps_duplicates_filters_a_cus_own_repeats_only() {
        let mut r = FaultRing::default();
        r.keep_duplicates(true);
        let on = |cu, page, ts| RingEntry { cu, ..e(page, ts) };
        assert!(r.raise(on(0, 1, 10)));
        assert!(r.raise(on(1, 1, 11)));
        assert!(!r.raise(on(0, 1, 12)));
        assert_eq!(r.pop(), Some(on(0, 1, 10)));
        assert!(!r.raise(on(1, 1, 13)));
        assert!(r.raise(on(0, 1, 14)));
        assert_eq!((r.raised, r.filtered, r.len()), (3, 2, 2));
        // Without it, one entry a page whatever the CU.
        let mut r = FaultRing::default();
        assert!(r.raise(on(0, 1, 10)));
        assert!(!r.raise(on(1, 1, 11)));
    }

    #[test]
    fn cam_filters_pending_repeats_until_handled() {
        let mut r = FaultRing::default();
        assert!(r.raise(e(1, 10)));
        assert!(!r.raise(e(1, 11)));
        assert!(r.raise(e(2, 12)));
        assert_eq!(r.newest_ts(), Some(12));
        assert_eq!(r.pop(), Some(e(1, 10)));
        assert!(r.raise(e(1, 13)));
        assert_eq!((r.raised, r.filtered, r.len()), (3, 1, 2));
        r.forget_process(0);
        assert!(r.is_empty() && r.newest_ts().is_none());
    }
}

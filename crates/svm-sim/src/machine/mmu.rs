//! The GPU's MMU, the one way every GPU access translates: each CU's TLB
//! (4-way, LRU within a set, entries tagged with the process's flush
//! generation), the page walk, the IOMMU behind system-memory PTEs, and
//! the retry fault into the GPU's ring when a PTE does not allow the
//! access (`ring.rs` holds the ring and its filter). Where a process's
//! policy asks for them, a GPU's access counters count its accesses to
//! memory not its own and raise notifications (UVM's access counters).
//!
//! A scenario's access and a kernel's instruction both come here through
//! the executor (`kernel.rs`): there is no second path. A translation
//! returns the PTE and what it cost, or the cost until the fault is
//! known; the TLB hit is the simulator's hottest path, so it stays inline
//! and the rest is cold.

use svm_core::Errno;
use svm_core::addr::{CpuVa, PAGE_SIZE, PageNum, PageRange};
use svm_core::policy::{Access, AccessCounterSpec};

use super::kernel::{Parked, Wave};
use super::wave::{Req, ReqKind};
use super::{AccessError, Machine};
use crate::gpu::{PackedPte, PageTable};
use crate::ring::{FaultRing, RingEntry};
use crate::timing::ns;

/// The GPUs' translation state: every process's page table on each GPU,
/// every CU's TLB and the flush generations that tag its entries, each
/// GPU's fault ring, and the costs a wave instruction's translation and
/// access pay. The engine writes page tables, flushes and reads the ring
/// through `Env` (its `Platform`); waves translate and fault here.
#[derive(Debug, Default)]
pub(super) struct Mmu {
    /// Per process, per GPU: its page table.
    pub(super) pts: Vec<Vec<PageTable>>,
    /// Per process, per GPU: its TLB generation. A flush bumps it, and
    /// TLB entries of an older generation miss.
    pub(super) tlb_gens: Vec<Vec<u64>>,
    /// Per GPU: the retry faults waiting for the driver, and the filter
    /// that drops repeats of a pending one.
    pub(super) rings: Vec<FaultRing>,
    /// Per GPU, per CU, its TLB.
    pub(super) tlbs: Tlbs,
    /// `timing` in whole ns for wave instructions.
    pub(super) wave_costs: WaveCosts,
    /// Scratch space of a wave instruction's translations.
    pub(super) scratch_targets: Vec<(u64, u64, PackedPte)>,
    /// The access counters (`Process::access_counters`), their counts and
    /// their notifications.
    pub(super) counters: AccessCounters,
}

/// The GPUs' access counters: per process and GPU, what the process's
/// policy has the GPU count; the counts of remote accesses per region;
/// and per GPU the notifications waiting for the driver, in the order
/// they were raised (so by arrival time).
#[derive(Debug, Default)]
pub(super) struct AccessCounters {
    /// Whether any GPU counts for any process: the one test the access
    /// path makes.
    pub(super) on: bool,
    /// Per process, per GPU.
    pub(super) specs: Vec<Vec<Option<AccessCounterSpec>>>,
    /// (process, GPU, region index) → remote accesses since the last
    /// notification.
    pub(super) counts: std::collections::HashMap<(usize, usize, u64), u32>,
    /// Per GPU: notifications not yet served.
    pub(super) notices: Vec<std::collections::VecDeque<Notice>>,
}

/// One access-counter notification: process `proc`'s region `pages` was
/// accessed remotely the threshold's times; it reaches the driver `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Notice {
    pub(super) proc: usize,
    pub(super) pages: PageRange,
    pub(super) at: u64,
}

/// A TLB entry: what it translates (a page of a process, filled at one
/// flush generation) and the PTE it caches. An empty way has page
/// [`TlbEntry::EMPTY`], which no page number reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TlbEntry {
    page: u64,
    proc: usize,
    generation: u64,
    pte: PackedPte,
}

impl TlbEntry {
    const EMPTY: u64 = u64::MAX;

    fn is(&self, proc: usize, page: u64, generation: u64) -> bool {
        self.page == page && self.proc == proc && self.generation == generation
    }
}

/// A TLB set's four ways, aligned to a cache line: a lookup touches one
/// line for the two most recent ways (most lookups) and two for all.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct TlbSet([TlbEntry; 4]);

/// Every CU's TLB, each 4-way set-associative with LRU within a set, in
/// one table: CU after CU, GPU after GPU.
#[derive(Clone, Debug, Default)]
pub(super) struct Tlbs {
    /// Each set keeps its ways in order of use, most recent first, empty
    /// ways last. So a hit on the last-used entry (the common case: a wave
    /// walking its own page) is the first comparison, the LRU victim is
    /// always the last way, and no use counter is kept.
    sets: Vec<TlbSet>,
    /// Sets per CU less one: sets per CU are a power of two, so that the
    /// set index is a mask (the step is hot enough for a division to show).
    mask: usize,
    /// CUs per GPU.
    cus: usize,
}

impl Tlbs {
    /// TLBs of `entries` entries (rounded up to 4 ways times a power of
    /// two of sets) for `cus` CUs on each of `gpus` GPUs.
    pub(super) fn new(gpus: usize, cus: usize, entries: u32) -> Self {
        let per_cu = usize::try_from(entries.div_ceil(4).max(1))
            .unwrap_or(1)
            .next_power_of_two();
        let empty = TlbEntry {
            page: TlbEntry::EMPTY,
            proc: 0,
            generation: 0,
            pte: PackedPte::NONE,
        };
        Self {
            sets: vec![TlbSet([empty; 4]); gpus * cus * per_cu],
            mask: per_cu - 1,
            cus,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The set of CU `cu` of GPU `g` that holds `page`.
    fn set(&mut self, g: usize, cu: usize, page: u64) -> &mut [TlbEntry; 4] {
        let i = (g * self.cus + cu) * (self.mask + 1)
            + (usize::try_from(page).unwrap_or(0) & self.mask);
        &mut self.sets[i].0
    }

    #[inline(always)]
    pub(super) fn lookup(
        &mut self,
        (g, cu): (usize, usize),
        proc: usize,
        page: u64,
        generation: u64,
    ) -> Option<PackedPte> {
        let set = self.set(g, cu, page);
        if set[0].is(proc, page, generation) {
            return Some(set[0].pte);
        }
        Self::lookup_older(set, proc, page, generation)
    }

    /// [`Tlbs::lookup`] past the most recent way.
    #[inline(never)]
    fn lookup_older(
        set: &mut [TlbEntry; 4],
        proc: usize,
        page: u64,
        generation: u64,
    ) -> Option<PackedPte> {
        for way in 1..4 {
            if set[way].page == TlbEntry::EMPTY {
                return None;
            }
            if set[way].is(proc, page, generation) {
                let pte = set[way].pte;
                // Now the most recently used.
                set[..=way].rotate_right(1);
                return Some(pte);
            }
        }
        None
    }

    pub(super) fn insert(
        &mut self,
        (g, cu): (usize, usize),
        proc: usize,
        page: u64,
        generation: u64,
        pte: PackedPte,
    ) {
        let set = self.set(g, cu, page);
        // The least recently used way (or an empty one) makes room.
        set.rotate_right(1);
        set[0] = TlbEntry {
            page,
            proc,
            generation,
            pte,
        };
    }
}

/// The timing constants a wave instruction needs, in whole ns (worked out
/// once per timing rather than per instruction).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WaveCosts {
    hit: u64,
    miss: u64,
    vram: u64,
    far: u64,
    delivery: u64,
}

impl WaveCosts {
    pub(super) fn of(t: &crate::timing::Timing) -> Self {
        Self {
            hit: ns(t.tlb_hit_ns),
            miss: ns(t.tlb_miss_ns + t.page_walk_ns),
            vram: ns(t.access_vram_ns),
            far: ns(t.access_sysmem_ns),
            delivery: ns(t.fault_delivery_ns),
        }
    }
}

/// The error of an instruction still faulting after `limit` retries in a
/// row (`gpu_max_retries`): EBUSY, the driver never let it through. Every
/// GPU access, a scenario's or a kernel's, takes this one path, this one
/// limit and this one error; it is a livelock, a bug in a policy or in the
/// simulator.
fn livelock(gpu_id: u32, addr: CpuVa, write: bool, limit: u32) -> AccessError {
    AccessError::VmFault {
        gpu_id,
        addr,
        write,
        why: format!("still faulting after {limit} retries"),
        errno: Errno::Ebusy,
    }
}

impl Machine {
    /// Translates `page` for wave `w` on its GPU: its CU's TLB, else a page
    /// walk, for an access of `bytes` within it. Returns the PTE and the time it took, or (a retry fault) the
    /// time until the fault is known. The hit is the simulator's hottest
    /// path, so it stays inline and the walk does not.
    #[inline(always)]
    pub(super) fn translate(
        &mut self,
        w: &Wave,
        gen_: u64,
        page: PageNum,
        write: bool,
        bytes: u64,
    ) -> Result<(PackedPte, u64), u64> {
        let Some(pte) = self.mmu.tlbs.lookup((w.g, w.cu), w.pi, page.raw(), gen_) else {
            return self.translate_miss(w, gen_, page, (write, bytes));
        };
        self.sched.kernels[w.k].stats.tlb_hits += 1;
        self.access_cost(w, page, Some(pte), self.mmu.wave_costs.hit, (write, bytes))
    }

    /// [`Machine::translate`] after a TLB miss: the page walk, which fills
    /// the TLB when the PTE allows the access.
    #[cold]
    #[inline(never)]
    fn translate_miss(
        &mut self,
        w: &Wave,
        gen_: u64,
        page: PageNum,
        (write, bytes): (bool, u64),
    ) -> Result<(PackedPte, u64), u64> {
        let (pi, g) = (w.pi, w.g);
        self.sched.kernels[w.k].stats.tlb_misses += 1;
        let p = self.mmu.pts[pi][g]
            .walk_packed(page)
            .filter(|p| p.valid() && (!write || p.writeable()));
        if let Some(p) = p {
            self.mmu.tlbs.insert((g, w.cu), pi, page.raw(), gen_, p);
        }
        self.access_cost(w, page, p, self.mmu.wave_costs.miss, (write, bytes))
    }

    /// The PTE a translation found and its cost, `cost` so far plus the
    /// access; or, when it does not allow the access (not mapped, or
    /// read-only for a write), a retry fault known after `cost`.
    /// A remote access counts in its GPU's access counter when the
    /// process's policy has the GPU count.
    #[inline(always)]
    fn access_cost(
        &mut self,
        w: &Wave,
        page: PageNum,
        pte: Option<PackedPte>,
        cost: u64,
        (write, bytes): (bool, u64),
    ) -> Result<(PackedPte, u64), u64> {
        let pte = pte.filter(|p| !write || p.writeable()).ok_or(cost)?;
        let owner = pte.vram_owner();
        let st = &mut self.sched.kernels[w.k].stats;
        let access = if owner == Some(w.g) {
            st.touches_local += 1;
            st.bytes_local += bytes;
            self.mmu.wave_costs.vram
        } else {
            // (A peer's VRAM, or system memory over the host link.)
            if owner.is_some() {
                st.touches_peer += 1;
                st.bytes_peer += bytes;
            } else {
                st.touches_sys += 1;
                st.bytes_sys += bytes;
            }
            if self.mmu.counters.on {
                self.count_remote(w, page, cost + self.mmu.wave_costs.far);
            }
            self.mmu.wave_costs.far
        };
        Ok((pte, cost + access))
    }

    /// Counts a remote access of wave `w` to `page`, done `cost` after the
    /// step began; the access that reaches the threshold raises a
    /// notification, which reaches the driver after the fault-delivery
    /// latency, and the region's count starts over.
    #[cold]
    #[inline(never)]
    fn count_remote(&mut self, w: &Wave, page: PageNum, cost: u64) {
        let Some(spec) = self
            .mmu
            .counters
            .specs
            .get(w.pi)
            .and_then(|s| s.get(w.g).copied().flatten())
        else {
            return;
        };
        let region = page.raw() / spec.granularity_pages;
        let n = self
            .mmu
            .counters
            .counts
            .entry((w.pi, w.g, region))
            .or_insert(0);
        *n += 1;
        if *n < spec.threshold {
            return;
        }
        *n = 0;
        let start = region * spec.granularity_pages;
        let at = self.sched.clock_ns + cost + self.mmu.wave_costs.delivery;
        self.mmu.counters.notices[w.g].push_back(Notice {
            proc: w.pi,
            pages: PageRange::new(
                PageNum::new(start),
                PageNum::new(start + spec.granularity_pages),
            ),
            at,
        });
    }

    /// Raises the retry fault of wave `w` on `page` (known `cost` after the
    /// step at `at`) into its GPU's ring, and leaves the request posted for
    /// the retry.
    #[cold]
    #[inline(never)]
    pub(super) fn retry_fault(
        &mut self,
        w: &Wave,
        (at, cost): (u64, u64),
        page: PageNum,
        a: u64,
        req: Req,
    ) -> Parked {
        let access = match req.kind {
            ReqKind::Store => Access::Write,
            ReqKind::Atomic => Access::Atomic,
            _ => Access::Read,
        };
        let write = access.writes();
        w.slot.post(req);
        let k = w.k;
        self.sched.kernels[k].stats.faults += 1;
        let faults = w.slot.page_faults.get() + 1;
        w.slot.page_faults.set(faults);
        let limit = self.config.gpu_max_retries;
        if faults > limit {
            let e = livelock(self.sched.kernels[k].gpu_id, CpuVa::new(a), write, limit);
            self.kill_with(k, at, e);
            return Parked::Dead;
        }
        let when = at.saturating_add(cost);
        self.sched.last_ts = self.sched.last_ts.max(when.saturating_sub(1)) + 1;
        // The ring's CAM drops a repeat of a pending fault: then nothing
        // new reaches the ring.
        let raised = self.mmu.rings[w.g].raise(RingEntry {
            proc_index: w.pi,
            page,
            access,
            ts: self.sched.last_ts,
            at: when + self.mmu.wave_costs.delivery,
            cu: u32::try_from(w.cu).unwrap_or(u32::MAX),
        });
        if raised {
            self.hw.counters.faults_raised += 1;
        } else {
            self.hw.counters.faults_filtered += 1;
        }
        if raised && access == Access::Atomic {
            self.hw.counters.atomic_faults += 1;
        }
        Parked::Faulted { page, raised }
    }

    /// The host page that a system-memory PTE points at through the GPU's
    /// IOMMU: its process, and its first byte's address. An unmapped DMA
    /// address kills the kernel.
    pub(super) fn iommu_page(
        &mut self,
        w: &Wave,
        at: u64,
        (a, pte): (u64, PackedPte),
        write: bool,
    ) -> Result<(usize, u64), Parked> {
        let dma = pte.addr();
        let Some(&(owner, va)) = self.hw.gpus[w.g].iommu.get(&dma) else {
            self.kill(
                w.k,
                at,
                format!("IOMMU fault: DMA address {dma:#x} is not mapped"),
                CpuVa::new(a),
                write,
            );
            return Err(Parked::Dead);
        };
        Ok((owner, va.raw() * PAGE_SIZE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// (process, page, generation, PTE, last use).
    type NaiveEntry = (usize, u64, u64, u64, u64);

    /// A TLB as the simplest code would keep it: every entry with the time
    /// of its last use; a full set evicts the least recently used.
    #[derive(Default)]
    struct NaiveTlb {
        sets: Vec<Vec<NaiveEntry>>,
        tick: u64,
    }

    impl NaiveTlb {
        fn lookup(&mut self, proc: usize, page: u64, generation: u64) -> Option<u64> {
            self.tick += 1;
            let set = &mut self.sets[usize::try_from(page % 4).unwrap()];
            let e = set
                .iter_mut()
                .find(|e| (e.0, e.1, e.2) == (proc, page, generation))?;
            e.4 = self.tick;
            Some(e.3)
        }

        fn insert(&mut self, proc: usize, page: u64, generation: u64, pte: u64) {
            self.tick += 1;
            let set = &mut self.sets[usize::try_from(page % 4).unwrap()];
            if set.len() == 4 {
                let lru = (0..4).min_by_key(|&w| set[w].4).unwrap();
                set.remove(lru);
            }
            set.push((proc, page, generation, pte, self.tick));
        }
    }

    /// What a TLB-hit load touches of the TLB stays small: a set of one
    /// aligned pair of cache lines. (The kernel benchmarks measure what
    /// this buys.)
    #[test]
    fn a_tlb_set_stays_within_its_cache_lines() {
        assert_eq!(std::mem::size_of::<TlbSet>(), 128);
        assert_eq!(std::mem::align_of::<TlbSet>(), 64);
    }

    /// The most-recent-first TLB hits and misses exactly as an LRU with use
    /// counters does. Fixed seed; on failure the step is printed.
    #[test]
    fn the_tlb_is_lru_within_a_set() {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(5);
        let mut tlb = Tlbs::new(1, 1, 16);
        let mut naive = NaiveTlb {
            sets: vec![Vec::new(); 4],
            tick: 0,
        };
        let pte = |page: u64| PackedPte::for_test(page + 1);
        for step in 0..20_000 {
            let proc = rng.random_range(0..2usize);
            let page = rng.random_range(0..40u64);
            let generation = rng.random_range(0..3u64);
            let got = tlb.lookup((0, 0), proc, page, generation);
            let want = naive
                .lookup(proc, page, generation)
                .map(PackedPte::for_test);
            assert_eq!(got, want, "step {step}: lookup of page {page}");
            if got.is_none() {
                tlb.insert((0, 0), proc, page, generation, pte(page));
                naive.insert(proc, page, generation, page + 1);
            }
        }
    }
}

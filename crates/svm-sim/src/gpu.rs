//! Simulated GPUs: VRAM with real bytes, an IOMMU for DMA mappings, per-process page tables, and hardware counters.
//!
//! Everything the engine does to hardware is counted in [`HwCounters`]:
//! pages copied each way, pages that arrived zero-filled, DMA maps and
//! unmaps, PTEs written and cleared, and TLB flushes by kind.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::btree_map::Entry;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

use serde::Serialize;
use svm_core::addr::{PAGE_SIZE, PageNum, PageRange};
use svm_core::platform::Pte;
use svm_core::topology::GpuDesc;

use crate::vram::{Vram, VramAlloc};

/// First DMA address the IOMMU hands out; far from any VRAM address so the
/// two are easy to tell apart in dumps.
const DMA_BASE: u64 = 0x1_0000_0000_0000;

/// Counters of what the engine asked of the hardware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HwCounters {
    /// Pages copied from system memory into VRAM.
    pub pages_to_vram: u64,
    /// Pages that arrived in VRAM without a copy (never written: zero).
    pub pages_zero_filled: u64,
    /// Pages copied from VRAM back to system memory.
    pub pages_to_ram: u64,
    /// Pages copied straight from one GPU's VRAM to another's
    /// (device-to-device migration).
    pub pages_peer: u64,
    /// Pages copied into a GPU's VRAM as read duplicates, their masters
    /// left where they were.
    pub pages_duplicated: u64,
    /// Never-touched system pages that mapping faulted in as zeroed pages
    /// (`hmm_range_fault` with REQ_WRITE on a writable VMA); a later
    /// migration copies them instead of zero-filling.
    pub pages_faulted_in: u64,
    /// DMA mappings made.
    pub dma_maps: u64,
    /// DMA mappings released.
    pub dma_unmaps: u64,
    /// DMA unmaps of addresses that were not mapped (an engine bug).
    pub bad_dma_unmaps: u64,
    /// PTEs written.
    pub ptes_written: u64,
    /// Valid PTEs cleared.
    pub ptes_cleared: u64,
    /// TLB flushes after mapping.
    pub tlb_flush_legacy: u64,
    /// TLB flushes after unmapping.
    pub tlb_flush_heavyweight: u64,
    /// VRAM buffers allocated.
    pub vram_allocs: u64,
    /// VRAM buffers freed.
    pub vram_frees: u64,
    /// User-queue evictions (per GPU).
    pub queue_evictions: u64,
    /// User-queue restores (per GPU).
    pub queue_restores: u64,
    /// Retry faults amdgpu's IH dropped as stale before the handler
    /// (config `ih_stale_filter`).
    pub faults_ih_filtered: u64,
    /// Faults a batch-flush replay dropped from the ring unserved (UVM's
    /// BATCH_FLUSH): their waves faulted again after the replay.
    pub faults_flushed: u64,
    /// Batch flushes that read the buffer's PUT pointer again, because
    /// over half the batch were duplicates (`UPDATE_PUT`): they dropped
    /// the faults that arrived during the service too.
    pub flushes_update_put: u64,
    /// Runs of a batched fault service (UVM's `once` replay) that ended
    /// early, after `MAX_THROTTLED_PER_SERVICE` batches with a throttled
    /// fault (`uvm_perf_fault_max_throttle_per_service`).
    pub services_cut_by_throttles: u64,
    /// Retry faults written into a ring, and repeats of a pending fault
    /// that the ring's CAM filtered instead (`amdgpu_gmc_filter_faults`).
    pub faults_raised: u64,
    /// See `faults_raised`.
    pub faults_filtered: u64,
    /// Faults the driver's handler took from a ring and served (the pages
    /// mapped), dropped (a duplicate, a straggler, a range being
    /// unmapped, a throttle: the wave retries), or refused (the kernel
    /// dies). The IH's stale filter and a batch flush drop faults before
    /// the handler (`faults_ih_filtered`, `faults_flushed`).
    pub faults_served: u64,
    /// See `faults_served`.
    pub faults_dropped: u64,
    /// See `faults_served`.
    pub faults_refused: u64,
    /// Retry faults raised by atomics (`svm_core::policy::Access::Atomic`)
    /// and written into a ring: to pages not mapped, and, on a GPU whose
    /// atomics reach only its own VRAM, to pages mapped anywhere else.
    pub atomic_faults: u64,
    /// Access-counter notifications the GPUs raised (a region's remote
    /// accesses reached the threshold) and the driver served.
    pub access_counter_notices: u64,
    /// Notifications whose service failed (a map error, or a policy's
    /// plan for a GPU the process does not have): dropped.
    pub access_counter_failures: u64,
    /// CPU faults on pages in VRAM (`svm_migrate_to_ram` calls).
    pub cpu_faults: u64,
    /// Simulated ns CPU faults waited for Xe's atomic timeslice to expire
    /// before they could take pages back (`SvmBo::cpu_hold_until`).
    pub cpu_timeslice_wait_ns: u64,
    /// Simulated ns CPU faults slept because the fault policy throttled
    /// them (UVM's thrashing throttle, `cpu_fault_throttle`).
    pub cpu_throttle_wait_ns: u64,
    /// Simulated ns the copy engines spent moving pages.
    pub copy_busy_ns: u64,
    /// Copy jobs (a GART-map job and a copy job each, at most 2 MiB of
    /// physically contiguous VRAM) the buffer-funcs rings ran.
    pub copy_jobs: u64,
    /// Simulated ns copies waited for a busy copy engine.
    pub copy_wait_ns: u64,
    /// Simulated ns fault handlers spent serving faults.
    pub handler_busy_ns: u64,
    /// Simulated ns faults waited for a range's migrate lock.
    pub migrate_lock_wait_ns: u64,
    /// Simulated ns faults waited for their process's `svms->lock`, held
    /// by the handler of a fault on another GPU.
    pub svms_lock_wait_ns: u64,
    /// The served faults' latencies (raised to handled, summed over the
    /// faults each service was for, as `Machine::fault_latencies`), and
    /// three of their phases: the delivery from the GPU to the ring the
    /// handler reads, the wait in the ring for the handler (busy with
    /// earlier faults, or paying its batch cost), and the waits for the
    /// mmap lock, `svms->lock` and the range's migrate lock. The rest is
    /// the handler's own work: fixed cost, migration, mapping.
    pub served_latency_ns: u64,
    /// See `served_latency_ns`.
    pub served_delivery_ns: u64,
    /// See `served_latency_ns`.
    pub served_queued_ns: u64,
    /// See `served_latency_ns`.
    pub served_lock_ns: u64,
}

/// Who evicted whose VRAM on one GPU, how often, and what it cost: one row
/// of [`EvictionLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Evictions {
    /// The GPU whose VRAM was reclaimed.
    pub gpu_id: u32,
    /// The process (by spawn order) whose allocation needed the room, or
    /// `None` for pressure from outside SVM (`Machine::evict_vram`).
    pub by: Option<usize>,
    /// The process whose buffers went.
    pub victim: usize,
    /// Buffers evicted.
    pub buffers: u64,
    /// Pages moved back to system memory.
    pub pages: u64,
    /// Simulated ns the evictions took (the copies back, the victims'
    /// queue evictions and unmapping).
    pub ns: u64,
}

/// Every eviction of a run, summed per (GPU, evicting process, victim).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictionLog {
    rows: BTreeMap<(u32, Option<usize>, usize), Evictions>,
}

impl EvictionLog {
    /// Adds one eviction of `victim`'s buffer on GPU `gpu_id`.
    pub fn note(&mut self, gpu_id: u32, by: Option<usize>, victim: usize, pages: u64, ns: u64) {
        let row = self.rows.entry((gpu_id, by, victim)).or_insert(Evictions {
            gpu_id,
            by,
            victim,
            buffers: 0,
            pages: 0,
            ns: 0,
        });
        row.buffers += 1;
        row.pages += pages;
        row.ns += ns;
    }

    /// The rows, by GPU, then evicting process (outside pressure first),
    /// then victim.
    pub fn rows(&self) -> impl Iterator<Item = &Evictions> {
        self.rows.values()
    }
}

/// One simulated GPU.
#[derive(Clone, Debug)]
pub struct SimGpu {
    /// Its description.
    pub desc: GpuDesc,
    /// Its VRAM.
    pub vram: Vram,
    /// Live VRAM buffers by handle.
    pub bufs: BTreeMap<u64, VramAlloc>,
    pub(crate) next_buf: u64,
    /// Live DMA mappings: bus address → (process index, virtual page).
    pub iommu: Iommu,
    pub(crate) next_dma: u64,
    /// The last position handed out on its TTM LRU (every process's
    /// buffers share it).
    pub(crate) lru_clock: u64,
    /// Bytes reserved against the KFD VRAM limit (`adev->kfd.vram_used`):
    /// KFD buffers for their lifetime, SVM migrations while they run.
    pub kfd_vram_used: u64,
    /// Device pages a CPU fault still holds a reference to after
    /// migrating them out (do_swap_page's, until its `put_page`), by VRAM
    /// page: when the reference goes.
    pub held_pages: BTreeMap<u64, u64>,
    /// Held pages a migration reused by resetting their count
    /// (`zone_device_page_init`, before the 2025 fix): the holder's put
    /// will drop a count it no longer owns.
    pub refcount_reset: std::collections::BTreeSet<u64>,
}

impl SimGpu {
    /// Bytes of VRAM allocated to buffers.
    pub fn vram_used_bytes(&self) -> u64 {
        let b = self.vram.buddy();
        (b.total_pages() - b.free_pages()) * PAGE_SIZE
    }

    /// A GPU with empty VRAM.
    pub fn new(desc: GpuDesc) -> Self {
        let pages = desc.vram_bytes / PAGE_SIZE;
        Self {
            desc,
            vram: Vram::new(pages),
            bufs: BTreeMap::new(),
            next_buf: 1,
            iommu: Iommu::default(),
            next_dma: DMA_BASE,
            lru_clock: 0,
            kfd_vram_used: 0,
            held_pages: BTreeMap::new(),
            refcount_reset: std::collections::BTreeSet::new(),
        }
    }
}

/// A GPU's live DMA mappings, bus address → (process index, virtual
/// page). A GPU's every access to system memory looks its page up here,
/// so it is a hash map (one probe) rather than a tree (a cache miss a
/// level, over hundreds of thousands of mappings), with a fixed-key
/// hasher so that a run is the same every time; nothing iterates it in
/// its order (`Machine::dma_mappings` sorts).
pub type Iommu = HashMap<u64, (usize, PageNum), BuildHasherDefault<DefaultHasher>>;

/// One process's page table on one GPU.
///
/// Entries are packed into one `u64` each (the target's page frame in the
/// top 44 bits, flags and owner below) in chunks of 64 pages: 8 bytes a
/// mapped page. A chunk whose 64 entries map 64 consecutive frames with the
/// same flags (what a migrated 2 MiB window or a run of DMA mappings gives)
/// is kept as its first entry alone, as a GPU's PTE fragment field says "this
/// block is contiguous": a few bytes for 64 pages, which is what lets
/// phantom runs map hundreds of GiB. Which form a chunk has is invisible
/// outside: `walk`, `iter` and `len` answer the same.
///
/// A chunk that is cleared stays, empty, for the next mapping of its
/// pages: a fault that maps what an eviction or a migration unmapped
/// reuses its entry and allocates nothing. Empty chunks are swept out
/// when they outnumber the others (and [`SWEEP_SLACK`]), so a workload
/// that maps ever new addresses keeps the table proportional to what is
/// mapped.
#[derive(Clone, Debug, Default)]
pub struct PageTable {
    chunks: BTreeMap<u64, Chunk>,
    len: usize,
    /// Chunks that are [`Chunk::Empty`].
    empty: usize,
}

/// Tables are equal when their entries are (empty chunks are a cache).
impl PartialEq for PageTable {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for PageTable {}

/// Empty chunks a table keeps beyond as many as it has others.
const SWEEP_SLACK: usize = 4096;

/// 64 entries of a page table.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Chunk {
    /// Each entry (0: none).
    Dense(Box<[u64; CHUNK]>),
    /// All 64 present, entry `i` being the first with its frame plus `i`.
    Linear(u64),
    /// None present.
    Empty,
}

/// The packed entry one frame after `w`.
const FRAME_STEP: u64 = 1 << P_FRAME_SHIFT;

impl Chunk {
    fn get(&self, i: usize) -> u64 {
        match self {
            Self::Dense(ws) => ws[i],
            Self::Linear(first) => first + i as u64 * FRAME_STEP,
            Self::Empty => 0,
        }
    }

    /// The entries, expanded (on the stack: no allocation).
    fn words(&self) -> [u64; CHUNK] {
        match self {
            Self::Dense(ws) => **ws,
            Self::Linear(first) => std::array::from_fn(|i| first + i as u64 * FRAME_STEP),
            Self::Empty => [0; CHUNK],
        }
    }

    /// Holds `ws` in the smallest form, reusing its own box if it stays
    /// dense.
    fn set(&mut self, ws: &[u64; CHUNK]) {
        let first = ws[0];
        if first == 0 && ws.iter().all(|&w| w == 0) {
            *self = Self::Empty;
            return;
        }
        let linear = first != 0
            && first >> P_FRAME_SHIFT <= (u64::MAX >> P_FRAME_SHIFT) - CHUNK as u64
            && ws
                .iter()
                .enumerate()
                .all(|(i, &w)| w == first + i as u64 * FRAME_STEP);
        match self {
            _ if linear => *self = Self::Linear(first),
            Self::Dense(b) => **b = *ws,
            _ => *self = Self::Dense(Box::new(*ws)),
        }
    }
}

/// Pages per chunk of a page table.
const CHUNK: usize = 64;

// Bits of a packed entry.
const P_PRESENT: u64 = 1 << 15;
const P_VALID: u64 = 1;
const P_SYSTEM: u64 = 1 << 1;
const P_SNOOPED: u64 = 1 << 2;
const P_READ: u64 = 1 << 3;
const P_WRITE: u64 = 1 << 4;
const P_EXEC: u64 = 1 << 5;
const P_MTYPE_SHIFT: u32 = 6;
const P_VRAM: u64 = 1 << 8;
const P_OWNER_SHIFT: u32 = 9;
const P_FRAME_SHIFT: u32 = 20;

fn pack(pte: &Pte) -> u64 {
    use svm_core::platform::PteTarget;
    use svm_core::pte::Mtype;
    let f = pte.flags;
    let mut w = P_PRESENT;
    for (on, bit) in [
        (f.valid, P_VALID),
        (f.system, P_SYSTEM),
        (f.snooped, P_SNOOPED),
        (f.readable, P_READ),
        (f.writeable, P_WRITE),
        (f.executable, P_EXEC),
    ] {
        if on {
            w |= bit;
        }
    }
    let mtype = match f.mtype {
        Mtype::Rw => 0,
        Mtype::Nc => 1,
        Mtype::Cc => 2,
        Mtype::Uc => 3,
    };
    w |= mtype << P_MTYPE_SHIFT;
    let addr = match pte.target {
        PteTarget::Sys(a) => a,
        PteTarget::Vram { owner, addr } => {
            w |= P_VRAM | (owner.get() as u64) << P_OWNER_SHIFT;
            addr
        }
    };
    debug_assert!(
        addr % PAGE_SIZE == 0 && addr >> 56 == 0,
        "PTE target {addr:#x}"
    );
    w | (addr / PAGE_SIZE) << P_FRAME_SHIFT
}

fn unpack(w: u64) -> Pte {
    use svm_core::gpu::GpuIndex;
    use svm_core::platform::PteTarget;
    use svm_core::pte::{Mtype, PteFlags};
    let addr = (w >> P_FRAME_SHIFT) * PAGE_SIZE;
    let target = if w & P_VRAM != 0 {
        let owner = usize::try_from((w >> P_OWNER_SHIFT) & 63).unwrap_or(0);
        PteTarget::Vram {
            owner: GpuIndex::new(owner).expect("owner below 64"),
            addr,
        }
    } else {
        PteTarget::Sys(addr)
    };
    Pte {
        target,
        flags: PteFlags {
            valid: w & P_VALID != 0,
            system: w & P_SYSTEM != 0,
            snooped: w & P_SNOOPED != 0,
            readable: w & P_READ != 0,
            writeable: w & P_WRITE != 0,
            executable: w & P_EXEC != 0,
            mtype: match (w >> P_MTYPE_SHIFT) & 3 {
                0 => Mtype::Rw,
                1 => Mtype::Nc,
                2 => Mtype::Cc,
                _ => Mtype::Uc,
            },
        },
    }
}

fn split(page: PageNum) -> (u64, usize) {
    let n = page.raw();
    (
        n / CHUNK as u64,
        usize::try_from(n % CHUNK as u64).unwrap_or(0),
    )
}

/// A PTE as the page table holds it: one word, so that the TLB and the
/// wave's access path pass it in a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedPte(u64);

impl PackedPte {
    /// No entry (what an empty TLB way holds).
    pub(crate) const NONE: Self = Self(0);

    /// Whether it translates.
    pub(crate) fn valid(self) -> bool {
        self.0 & P_VALID != 0
    }

    /// Whether writes are allowed.
    pub(crate) fn writeable(self) -> bool {
        self.0 & P_WRITE != 0
    }

    /// The GPU whose VRAM holds the page, or `None` for system memory.
    pub(crate) fn vram_owner(self) -> Option<usize> {
        (self.0 & P_VRAM != 0).then(|| usize::try_from((self.0 >> P_OWNER_SHIFT) & 63).unwrap_or(0))
    }

    /// The page's address: a VRAM byte address, or a DMA address.
    pub(crate) fn addr(self) -> u64 {
        (self.0 >> P_FRAME_SHIFT) * PAGE_SIZE
    }

    /// The PTE it packs.
    pub(crate) fn unpack(self) -> Pte {
        unpack(self.0)
    }

    /// A word that only tests look inside.
    #[cfg(test)]
    pub(crate) fn for_test(w: u64) -> Self {
        Self(w)
    }
}

impl PageTable {
    /// The PTE of `page`, if one was written.
    pub fn walk(&self, page: PageNum) -> Option<Pte> {
        self.walk_packed(page).map(PackedPte::unpack)
    }

    /// [`PageTable::walk`], packed.
    pub(crate) fn walk_packed(&self, page: PageNum) -> Option<PackedPte> {
        let (c, i) = split(page);
        let w = self.chunks.get(&c)?.get(i);
        (w != 0).then_some(PackedPte(w))
    }

    /// All written PTEs in page order.
    pub fn iter(&self) -> impl Iterator<Item = (PageNum, Pte)> + '_ {
        self.chunks.iter().flat_map(|(&c, chunk)| {
            (0..CHUNK)
                .map(move |i| (i, chunk.get(i)))
                .filter(|&(_, w)| w != 0)
                .map(move |(i, w)| (PageNum::new(c * CHUNK as u64 + i as u64), unpack(w)))
        })
    }

    /// Number of PTEs written for pages of `range`: a walk over the
    /// chunks that cover it, not over the whole table.
    pub fn count_in(&self, range: PageRange) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let (start, end) = (range.start().raw(), range.end().raw());
        let c = CHUNK as u64;
        self.chunks
            .range(start / c..=(end - 1) / c)
            .map(|(&k, chunk)| {
                // Offsets inside the chunk: below 64.
                let lo = usize::try_from(start.max(k * c) - k * c).unwrap_or(CHUNK);
                let hi = usize::try_from(end.min((k + 1) * c) - k * c).unwrap_or(CHUNK);
                (lo..hi).filter(|&i| chunk.get(i) != 0).count() as u64
            })
            .sum()
    }

    /// Number of PTEs written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no PTE is written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn write(&mut self, start: PageNum, ptes: &[Pte]) {
        let mut k = 0;
        while k < ptes.len() {
            // The run of `ptes` inside one chunk.
            let (c, i0) = split(PageNum::new(start.raw() + k as u64));
            let n = (CHUNK - i0).min(ptes.len() - k);
            let chunk = match self.chunks.entry(c) {
                Entry::Occupied(e) => {
                    let chunk = e.into_mut();
                    if matches!(chunk, Chunk::Empty) {
                        self.empty -= 1;
                    }
                    chunk
                }
                Entry::Vacant(e) => e.insert(Chunk::Empty),
            };
            let mut ws = chunk.words();
            for (j, pte) in ptes[k..k + n].iter().enumerate() {
                let w = &mut ws[i0 + j];
                if *w == 0 {
                    self.len += 1;
                }
                *w = pack(pte);
            }
            chunk.set(&ws);
            k += n;
        }
    }

    pub(crate) fn clear(&mut self, range: PageRange) -> u64 {
        let (first, _) = split(range.start());
        let last = range.end().raw().div_ceil(CHUNK as u64);
        let mut n = 0;
        for (&c, chunk) in self.chunks.range_mut(first..last) {
            if matches!(chunk, Chunk::Empty) {
                continue;
            }
            let mut ws = chunk.words();
            let base = c * CHUNK as u64;
            let lo = range.start().raw().max(base) - base;
            let hi = range.end().raw().min(base + CHUNK as u64) - base;
            for w in &mut ws[usize::try_from(lo).unwrap_or(0)..usize::try_from(hi).unwrap_or(0)] {
                if *w != 0 {
                    *w = 0;
                    n += 1;
                }
            }
            chunk.set(&ws);
            if matches!(chunk, Chunk::Empty) {
                self.empty += 1;
            }
        }
        self.len -= usize::try_from(n).unwrap_or(0);
        if self.empty > self.chunks.len() - self.empty + SWEEP_SLACK {
            self.chunks.retain(|_, c| !matches!(c, Chunk::Empty));
            self.empty = 0;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use svm_core::gpu::GpuIndex;
    use svm_core::platform::PteTarget;
    use svm_core::pte::{Mtype, PteFlags};

    use super::*;

    fn pte(target: PteTarget, writeable: bool, mtype: Mtype) -> Pte {
        Pte {
            target,
            flags: PteFlags {
                valid: true,
                system: matches!(target, PteTarget::Sys(_)),
                snooped: true,
                readable: true,
                writeable,
                executable: false,
                mtype,
            },
        }
    }

    #[test]
    fn packed_entries_round_trip_and_clear_by_range() {
        let mut t = PageTable::default();
        let a = pte(PteTarget::Sys(0x1_0000_0000_3000), true, Mtype::Uc);
        let b = pte(
            PteTarget::Vram {
                owner: GpuIndex::new(37).unwrap(),
                addr: 0x3f_ffff_f000,
            },
            false,
            Mtype::Cc,
        );
        t.write(PageNum::new(62), &[a, b, a]);
        assert_eq!(t.walk(PageNum::new(62)), Some(a));
        assert_eq!(t.walk(PageNum::new(63)), Some(b));
        assert_eq!(t.walk(PageNum::new(64)), Some(a));
        assert_eq!(t.walk(PageNum::new(65)), None);
        assert_eq!(t.len(), 3);
        let pages: Vec<u64> = t.iter().map(|(p, _)| p.raw()).collect();
        assert_eq!(pages, vec![62, 63, 64]);
        assert_eq!(
            t.clear(PageRange::new(PageNum::new(63), PageNum::new(100))),
            2
        );
        assert_eq!((t.len(), t.walk(PageNum::new(64))), (1, None));
        assert_eq!(
            t.clear(PageRange::new(PageNum::new(0), PageNum::new(63))),
            1
        );
        // (Its chunks stay, empty, for the next mapping.)
        assert!(t.is_empty() && t.chunks.values().all(|c| matches!(c, Chunk::Empty)));
        assert_eq!(t, PageTable::default());
    }

    /// `count_in` counts what a walk over every entry counts, for windows
    /// inside, across and outside dense and linear chunks.
    #[test]
    fn count_in_matches_a_walk_over_every_entry() {
        let mut t = PageTable::default();
        t.write(PageNum::new(60), &run(0x100, 200, false));
        let a = pte(PteTarget::Sys(0x5000), true, Mtype::Uc);
        t.write(PageNum::new(400), &[a, a]);
        t.write(PageNum::new(1000), &[a]);
        for (s, e) in [
            (0, 0),
            (0, 60),
            (59, 61),
            (60, 64),
            (63, 129),
            (100, 1001),
            (261, 400),
            (0, 5000),
        ] {
            let r = PageRange::new(PageNum::new(s), PageNum::new(e));
            let walk = t.iter().filter(|(p, _)| r.contains(*p)).count() as u64;
            assert_eq!(t.count_in(r), walk, "{s}..{e}");
        }
    }

    /// A run of consecutive frames with equal flags.
    fn run(first_frame: u64, n: usize, vram: bool) -> Vec<Pte> {
        (0..n as u64)
            .map(|k| {
                let addr = (first_frame + k) * PAGE_SIZE;
                let target = if vram {
                    PteTarget::Vram {
                        owner: GpuIndex::new(1).unwrap(),
                        addr,
                    }
                } else {
                    PteTarget::Sys(addr)
                };
                pte(target, true, Mtype::Rw)
            })
            .collect()
    }

    #[test]
    fn contiguous_chunks_are_one_entry_and_answer_the_same() {
        let mut t = PageTable::default();
        // 2 MiB of consecutive VRAM frames from a chunk boundary.
        t.write(PageNum::new(512), &run(4096, 512, true));
        assert_eq!(t.len(), 512);
        assert!(t.chunks.values().all(|c| matches!(c, Chunk::Linear(_))));
        for k in 0..512 {
            let p = t.walk(PageNum::new(512 + k)).unwrap();
            assert_eq!(
                p.target,
                PteTarget::Vram {
                    owner: GpuIndex::new(1).unwrap(),
                    addr: (4096 + k) * PAGE_SIZE
                }
            );
        }
        // One entry that breaks the run makes its chunk dense again.
        t.write(PageNum::new(600), &run(1, 1, false));
        assert_eq!(t.len(), 512);
        assert!(matches!(t.chunks[&(600 / 64)], Chunk::Dense(_)));
        assert_eq!(
            t.walk(PageNum::new(600)).unwrap().target,
            PteTarget::Sys(PAGE_SIZE)
        );
        // Clearing half a linear chunk.
        assert_eq!(
            t.clear(PageRange::new(PageNum::new(512), PageNum::new(544))),
            32
        );
        assert_eq!(t.walk(PageNum::new(543)), None);
        assert!(t.walk(PageNum::new(544)).is_some());
        assert_eq!(t.len(), 480);
    }

    /// A cleared chunk stays for the next mapping, equal to a table that
    /// never had it; chunks of addresses mapped once are swept out.
    #[test]
    fn cleared_chunks_are_kept_for_reuse_and_swept_when_many() {
        let mut t = PageTable::default();
        t.write(PageNum::new(0), &run(64, 64, true));
        t.clear(PageRange::new(PageNum::new(0), PageNum::new(64)));
        assert!(matches!(t.chunks[&0], Chunk::Empty));
        assert_eq!((t.len(), t.empty), (0, 1));
        assert_eq!(t, PageTable::default());
        t.write(PageNum::new(10), &run(1, 1, false));
        assert_eq!((t.len(), t.empty), (1, 0));
        // Ever new addresses, each mapped and cleared.
        let chunks = 3 * SWEEP_SLACK as u64;
        for c in 1..=chunks {
            let at = PageNum::new(c * CHUNK as u64);
            t.write(at, &run(1, 1, true));
            t.clear(PageRange::new(at, PageNum::new(at.raw() + 1)));
        }
        assert!(
            t.chunks.len() <= SWEEP_SLACK + 2,
            "{} chunks",
            t.chunks.len()
        );
        assert_eq!(t.len(), 1);
        assert!(t.walk(PageNum::new(10)).is_some());
    }

    /// Random writes and clears against a map of page to PTE.
    #[test]
    fn matches_a_naive_map() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        for case in 0..200 {
            let mut t = PageTable::default();
            let mut model = BTreeMap::new();
            for _ in 0..20 {
                let start = rng.random_range(0..400u64);
                let n = rng.random_range(1..150usize);
                if rng.random_range(0..3) == 0 {
                    let end = start + n as u64;
                    let cleared = t.clear(PageRange::new(PageNum::new(start), PageNum::new(end)));
                    let before = model.len();
                    model.retain(|&p, _| !(start..end).contains(&p));
                    assert_eq!(cleared, (before - model.len()) as u64, "case {case}");
                } else {
                    let frame = rng.random_range(1..1_000_000u64);
                    let ptes = run(frame, n, rng.random_range(0..2) == 0);
                    t.write(PageNum::new(start), &ptes);
                    for (k, p) in ptes.into_iter().enumerate() {
                        model.insert(start + k as u64, p);
                    }
                }
                assert_eq!(t.len(), model.len(), "case {case}");
                let empty = t.chunks.values().filter(|c| matches!(c, Chunk::Empty));
                assert_eq!(t.empty, empty.count(), "case {case}");
                let got: Vec<(u64, Pte)> = t.iter().map(|(p, e)| (p.raw(), e)).collect();
                let want: Vec<(u64, Pte)> = model.iter().map(|(&p, &e)| (p, e)).collect();
                assert_eq!(got, want, "case {case}");
                for p in 0..600 {
                    assert_eq!(
                        t.walk(PageNum::new(p)),
                        model.get(&p).copied(),
                        "case {case} page {p}"
                    );
                }
            }
        }
    }
}

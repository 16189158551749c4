//! Kernels: a grid of waves placed on a GPU's compute units, each wave
//! Rust code that loads and stores through the GPU's MMU.
//!
//! # Design
//! A wave is an `async` block. Its memory operations ([`WaveCtx::load`],
//! [`WaveCtx::store`], [`WaveCtx::compute`]) post one request into a slot
//! the wave shares with the executor, and awaiting one returns `Pending`
//! until it has been performed; the executor, which owns the machine,
//! performs the request (TLB, page walk, retry fault, the bytes), marks
//! the slot done, and polls the wave again when simulated time reaches the
//! request's end. One request per step, in simulated-time order: so waves
//! interleave as their memory operations would, on one thread, with no
//! `unsafe` and no wakers (the executor knows exactly when a wave can go
//! on). An operation is issued when it is made, so a wave makes one and
//! awaits it before making the next, as a wave's instructions issue in
//! order.
//!
//! The step is the simulator's inner loop, so it is kept lean: an
//! operation borrows the wave's context (no reference counting), a load
//! from VRAM lends the page it read rather than copying its bytes (a
//! store to a page still lent copies the page first, so the load keeps
//! the bytes it had; see `crate::pages`; a kernel whose stores find their
//! pages lent switches its loads to copies, rather than copy a page per
//! store), other loads fill the wave's own buffer in place (no allocation
//! per load), PTEs travel packed in one word, and a hit on a TLB set's
//! most recent way is one comparison. With hundreds of waves in flight a
//! wave's state is never in the host's L1 cache when it steps, so the
//! step costs mostly the cache lines it touches: what a TLB-hit load
//! touches in the slot fits 48 bytes, and TLB sets are aligned to cache
//! lines. `benches/kernel.rs` in `svm-workloads` measures it, and
//! `docs/performance.md` tells how to count instructions and misses.
//!
//! A launch dispatches waves in index order onto compute units, at most
//! `waves_per_cu` in flight on each; a finished wave's slot takes the next.
//! Each CU has a TLB (4-way set-associative, LRU within a set) whose
//! entries carry the process's TLB generation on that GPU, so every flush
//! the engine issues empties them. A miss walks the page table; an invalid
//! PTE raises a retry fault into the GPU's ring and parks the wave until
//! the fault is served (XNACK on). With XNACK off the fault is fatal: the
//! queue dies, the kernel ends with the memory access fault, and its other
//! waves stop.

use std::cell::{Cell, OnceCell, Ref, RefCell, RefMut};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use svm_core::Errno;
use svm_core::addr::{CpuVa, PAGE_SIZE, PageNum};
use svm_core::gpu::GpuIndex;

use super::{AccessError, Machine, Pid};
use crate::gpu::PackedPte;
use crate::pages::PageBytes;
use crate::ring::RingEntry;
use crate::timing::ns;

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

/// A wave's code: given its index in the grid and its context, the future
/// that runs it.
pub type KernelFn = Rc<dyn Fn(u32, WaveCtx) -> Pin<Box<dyn Future<Output = ()>>>>;

/// A launched kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelId(pub(super) usize);

/// The shape of the GPUs' compute side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComputeShape {
    /// Compute units per GPU.
    pub compute_units: u32,
    /// Waves one CU keeps in flight.
    pub waves_per_cu: u32,
    /// TLB entries per CU (rounded up to a multiple of the 4 ways).
    pub tlb_entries: u32,
}

impl Default for ComputeShape {
    fn default() -> Self {
        Self {
            compute_units: 4,
            waves_per_cu: 4,
            tlb_entries: 64,
        }
    }
}

/// What a kernel did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    /// Waves run.
    pub waves: u64,
    /// Memory instructions issued (loads and stores).
    pub accesses: u64,
    /// Bytes loaded and stored.
    pub bytes: u64,
    /// TLB hits and misses (one lookup per page an access touches).
    pub tlb_hits: u64,
    /// See `tlb_hits`.
    pub tlb_misses: u64,
    /// Retry faults the waves raised (including ones the CAM filtered).
    pub faults: u64,
    /// Times a wave retried after the driver dropped its fault (a
    /// duplicate, a straggler, a range being unmapped).
    pub retries: u64,
    /// When the launch was made, and when its first and last wave ended.
    pub launch_ns: u64,
    /// See `launch_ns`.
    pub first_wave_done_ns: u64,
    /// See `launch_ns`.
    pub end_ns: u64,
}

/// A memory request a wave posts (a store's bytes wait in the slot, so
/// that posting and taking a request copies a few words and drops nothing).
#[derive(Clone, Copy, Debug)]
struct Req {
    kind: ReqKind,
    /// The address (the time, for compute).
    addr: u64,
    /// Bytes loaded or stored.
    len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqKind {
    Load,
    Store,
    Compute,
}

/// Where a wave and the executor meet: one posted request, one answer.
/// (Cells where each side only moves a value in or out; a `RefCell` for
/// the buffer, which the executor fills in place and the wave reads in
/// place.)
///
/// Every step reads and writes it, and with hundreds of waves in flight
/// it is rarely in the host's L1 cache, so what a TLB-hit load touches
/// is kept within 48 bytes (with its reference counts, one 64-byte
/// allocation): the buffers of the other paths are a box of their own,
/// made when first used.
#[derive(Default)]
struct Slot {
    /// The posted request, its fields in cells of their own (an
    /// `Option<Req>`, or a struct of them, would take a word more).
    req_kind: Cell<Option<ReqKind>>,
    req_addr: Cell<u64>,
    req_len: Cell<u64>,
    /// Whether the posted request has been performed, and where its
    /// answer is.
    answer: Cell<Answer>,
    /// Retry faults in a row on the posted request.
    page_faults: Cell<u32>,
    /// The wave made an instruction while an earlier one was still posted
    /// (made but not awaited): the earlier one is lost, so the wave dies.
    misused: Cell<bool>,
    /// The page a load from VRAM lends ([`Answer::Page`]).
    page: Cell<Option<PageBytes>>,
    bufs: OnceCell<Box<Bufs>>,
}

/// A slot's buffers, for the paths that move bytes (stores, and loads
/// that copy).
#[derive(Default)]
struct Bufs {
    /// The posted store's bytes.
    stored: Cell<Vec<u8>>,
    /// The wave's load buffer. The executor fills it in place, and the
    /// load's [`Data`] reads it in place (a shared borrow), so a load
    /// neither allocates nor moves a buffer. While the wave still holds an
    /// earlier load's `Data`, the executor cannot borrow it and fills
    /// `spill` instead, which the next `Data` takes.
    buf: RefCell<Vec<u8>>,
    spill: Cell<Vec<u8>>,
}

/// Where the executor writes a load's bytes: the wave's buffer, or, while
/// the wave holds an earlier load's bytes from it, a vector of their own.
enum Out<'s> {
    Buf(RefMut<'s, Vec<u8>>),
    Spill(Vec<u8>),
}

impl Out<'_> {
    fn vec(&mut self) -> &mut Vec<u8> {
        match self {
            Out::Buf(b) => b,
            Out::Spill(v) => v,
        }
    }
}

impl Slot {
    /// Posts `r`; returns whether a request was posted already.
    #[inline(always)]
    fn post(&self, r: Req) -> bool {
        self.req_addr.set(r.addr);
        self.req_len.set(r.len);
        self.req_kind.replace(Some(r.kind)).is_some()
    }

    /// Takes the posted request.
    #[inline(always)]
    fn take_req(&self) -> Option<Req> {
        let kind = self.req_kind.take()?;
        Some(Req {
            kind,
            addr: self.req_addr.get(),
            len: self.req_len.get(),
        })
    }

    fn is_posted(&self) -> bool {
        self.req_kind.get().is_some()
    }

    fn bufs(&self) -> &Bufs {
        self.bufs.get_or_init(Box::default)
    }

    /// An empty place for a load's bytes.
    fn out(&self) -> Out<'_> {
        match self.bufs().buf.try_borrow_mut() {
            Ok(mut b) => {
                b.clear();
                Out::Buf(b)
            }
            Err(_) => Out::Spill(Vec::new()),
        }
    }

    /// Answers the posted load, whose bytes are in `out`.
    fn answer(&self, out: Out<'_>) {
        let answer = match out {
            Out::Buf(_) => Answer::Buf,
            Out::Spill(v) => {
                self.bufs().spill.set(v);
                Answer::Spill
            }
        };
        self.answer.set(answer);
    }

    /// Answers the posted store, whose bytes, `data`, are written: their
    /// vector becomes the wave's buffer when that is free.
    fn answer_store(&self, data: Vec<u8>) {
        if let Ok(mut b) = self.bufs().buf.try_borrow_mut() {
            *b = data;
            b.clear();
        }
        self.answer.set(Answer::Empty);
    }
}

/// Where a performed request's answer is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Answer {
    /// Not performed yet.
    #[default]
    Pending,
    /// No bytes (a store, or compute).
    Empty,
    /// In the slot's buffer.
    Buf,
    /// In the slot's spill vector.
    Spill,
    /// `len` bytes at `off` in the page the slot lends.
    Page { off: u16, len: u16 },
}

/// What a wave's code uses to reach memory.
#[derive(Clone, Debug)]
pub struct WaveCtx {
    slot: Rc<Slot>,
}

/// One memory instruction of a wave, issued when it was made and resolved
/// when the executor has performed it. It borrows the wave's context
/// rather than sharing it, so issuing an instruction counts no references.
#[derive(Debug)]
pub struct MemOp<'a> {
    slot: &'a Slot,
}

/// The bytes a load returned (none for a store or compute). It reads as a
/// byte slice: for a load from VRAM, the page itself, lent as it was when
/// the load was performed; otherwise the wave's own buffer, lent in
/// place. So loads in a loop neither allocate nor copy twice; see
/// [`Data::into_vec`] to keep the bytes.
pub struct Data<'a>(Bytes<'a>);

enum Bytes<'a> {
    Lent(Ref<'a, Vec<u8>>),
    Owned(Vec<u8>),
    /// Part of a page of memory, lent as it was when the load was
    /// performed (see `crate::pages`).
    Page(PageBytes, u16, u16),
}

impl Data<'_> {
    /// The bytes, as an owned vector.
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Bytes::Lent(b) => b.to_vec(),
            Bytes::Owned(v) => v,
            Bytes::Page(..) => self.to_vec(),
        }
    }
}

impl std::ops::Deref for Data<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Lent(b) => b,
            Bytes::Owned(v) => v,
            Bytes::Page(p, off, len) => {
                let off = usize::from(*off);
                &p[off..off + usize::from(*len)]
            }
        }
    }
}

impl std::fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Data").field(&&**self).finish()
    }
}

impl PartialEq<[u8]> for Data<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl<'a> Future for MemOp<'a> {
    type Output = Data<'a>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Data<'a>> {
        // (Even its first poll may find it done: a wave may yield on
        // something else between making an instruction and awaiting it.)
        let slot = self.slot;
        match slot.answer.replace(Answer::Pending) {
            Answer::Pending => Poll::Pending,
            Answer::Page { off, len } => Poll::Ready(Data(match slot.page.take() {
                Some(p) => Bytes::Page(p, off, len),
                None => Bytes::Owned(Vec::new()),
            })),
            Answer::Empty => Poll::Ready(Data(Bytes::Owned(Vec::new()))),
            other => Poll::Ready(slot.data(other)),
        }
    }
}

impl Slot {
    /// The bytes of an answer in the wave's buffers (kept out of line, so
    /// that a wave's code inlines only the common answers).
    #[inline(never)]
    fn data(&self, answer: Answer) -> Data<'_> {
        Data(match answer {
            Answer::Buf => Bytes::Lent(self.bufs().buf.borrow()),
            Answer::Spill => Bytes::Owned(self.bufs().spill.take()),
            _ => Bytes::Owned(Vec::new()),
        })
    }
}

impl WaveCtx {
    fn op(&self, req: Req) -> MemOp<'_> {
        // An earlier instruction still posted, or answered and never taken
        // (its `MemOp` dropped before it was done): this one would get the
        // earlier's answer, so the wave dies instead.
        let earlier = self.slot.post(req);
        if earlier || !matches!(self.slot.answer.get(), Answer::Pending) {
            self.slot.misused.set(true);
            // (Not this one's answer: it must not be taken for it.)
            self.slot.answer.set(Answer::Pending);
            self.slot.page.set(None);
        }
        MemOp { slot: &self.slot }
    }

    /// Loads `len` bytes at `addr` (one memory instruction of the wave).
    pub fn load(&self, addr: u64, len: usize) -> MemOp<'_> {
        self.op(Req {
            kind: ReqKind::Load,
            addr,
            len: len as u64,
        })
    }

    /// Stores `data` at `addr`.
    pub fn store(&self, addr: u64, data: Vec<u8>) -> MemOp<'_> {
        let len = data.len();
        self.slot.bufs().stored.set(data);
        self.op(Req {
            kind: ReqKind::Store,
            addr,
            len: len as u64,
        })
    }

    /// Spends `ns` computing.
    pub fn compute(&self, ns: u64) -> MemOp<'_> {
        self.op(Req {
            kind: ReqKind::Compute,
            addr: ns,
            len: 0,
        })
    }

    /// Loads `n` little-endian `u32`s.
    pub async fn load_u32s(&self, addr: u64, n: usize) -> Vec<u32> {
        let b = self.load(addr, n * 4).await;
        b.chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    }

    /// Stores little-endian `u32`s.
    pub async fn store_u32s(&self, addr: u64, v: &[u32]) {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.store(addr, b).await;
    }
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
    fn new(gpus: usize, cus: usize, entries: u32) -> Self {
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

    fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The set of CU `cu` of GPU `g` that holds `page`.
    fn set(&mut self, g: usize, cu: usize, page: u64) -> &mut [TlbEntry; 4] {
        let i = (g * self.cus + cu) * (self.mask + 1)
            + (usize::try_from(page).unwrap_or(0) & self.mask);
        &mut self.sets[i].0
    }

    #[inline(always)]
    fn lookup(
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

    fn insert(
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

/// A running kernel.
pub(super) struct Kernel {
    pid: Pid,
    gpu: GpuIndex,
    gpu_id: u32,
    f: KernelFn,
    n_waves: u32,
    next_wave: u32,
    running: u32,
    /// Free wave slots per CU.
    cu_free: Vec<u32>,
    pub(super) stats: KernelStats,
    fatal: Option<AccessError>,
    done: bool,
    /// CPU threads of the process rather than GPU waves.
    cpu: bool,
    /// Its loads copy their bytes into the wave's buffer rather than lend
    /// the page: set once one of its stores found its page lent (see
    /// `Machine::store_part`).
    copy_loads: bool,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("pid", &self.pid)
            .field("gpu_id", &self.gpu_id)
            .field("n_waves", &self.n_waves)
            .field("stats", &self.stats)
            .field("fatal", &self.fatal)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KWave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KWave")
            .field("kernel", &self.kernel)
            .field("cu", &self.cu)
            .finish_non_exhaustive()
    }
}

/// A wave in flight.
pub(super) struct KWave {
    kernel: usize,
    /// Its index in the grid.
    index: u32,
    cu: u32,
    fut: Pin<Box<dyn Future<Output = ()>>>,
    slot: Rc<Slot>,
}

/// What one step of a wave needs to know of it (a copy, so that the step
/// can use the machine freely).
struct Wave {
    /// Its kernel.
    k: usize,
    /// Its process and GPU, by index.
    pi: usize,
    g: usize,
    /// Its CU (on GPU `g`) and its index in the grid.
    cu: usize,
    index: u32,
    slot: Rc<Slot>,
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
    /// Sets the GPUs' compute shape (CUs, waves per CU, TLB size). Kernels
    /// already running keep their CUs (the TLBs, emptied, cover them).
    pub fn set_compute_shape(&mut self, shape: ComputeShape) {
        self.shape = shape;
        let running = self
            .kernels
            .iter()
            .filter(|k| !k.done && !k.cpu)
            .map(|k| k.cu_free.len())
            .max()
            .unwrap_or(0);
        self.tlbs = Tlbs::new(
            self.gpus.len(),
            (shape.compute_units as usize).max(running),
            shape.tlb_entries,
        );
    }

    /// Launches a grid of `n_waves` waves of `f` on GPU `gpu_id` for
    /// process `pid`. It starts after the launch latency; collect it with
    /// [`Machine::wait_kernel`].
    ///
    /// # Errors
    /// An unknown GPU, or a process that has exited.
    pub fn launch_kernel(
        &mut self,
        pid: Pid,
        gpu_id: u32,
        n_waves: u32,
        f: KernelFn,
    ) -> Result<KernelId, AccessError> {
        let latency = ns(self.timing.launch_ns);
        self.launch_wave(pid, gpu_id, n_waves, f, latency)
    }

    /// [`Machine::launch_kernel`] whose waves start `latency` ns from now
    /// (none for a scenario's access, whose wave is already running).
    pub(super) fn launch_wave(
        &mut self,
        pid: Pid,
        gpu_id: u32,
        n_waves: u32,
        f: KernelFn,
        latency: u64,
    ) -> Result<KernelId, AccessError> {
        let gpu = self.gpu_index(gpu_id).ok_or(AccessError::NoGpu(gpu_id))?;
        if self.procs[pid.0].svm.exited() {
            return Err(AccessError::VmFault {
                gpu_id,
                addr: CpuVa::new(0),
                write: false,
                why: "the process has exited".into(),
                errno: Errno::Efault,
            });
        }
        if self.tlbs.is_empty() {
            self.set_compute_shape(self.shape);
        }
        let id = self.kernels.len();
        let start = self.clock_ns + latency;
        self.kernels.push(Kernel {
            pid,
            gpu,
            gpu_id,
            f,
            n_waves,
            next_wave: 0,
            running: 0,
            cu_free: vec![self.shape.waves_per_cu; self.shape.compute_units as usize],
            stats: KernelStats {
                launch_ns: self.clock_ns,
                ..KernelStats::default()
            },
            fatal: None,
            done: n_waves == 0,
            cpu: false,
            copy_loads: false,
        });
        if n_waves == 0 {
            self.kernels[id].stats.end_ns = start;
        }
        self.record(|| super::TraceEvent::Launch {
            pid: Self::record_pid(pid),
            gpu_id,
            waves: n_waves,
        });
        self.fill(id, start);
        Ok(KernelId(id))
    }

    /// Starts `threads` CPU threads of process `pid` running `f` (each
    /// given its thread index), in the same simulated timeline as the
    /// GPUs: their loads and stores go through the CPU path, so a page in
    /// VRAM faults back to system memory first (`migrate_to_ram`), and a
    /// page the VMA does not allow is a SIGSEGV that ends them. Collect
    /// them with [`Machine::wait_kernel`].
    ///
    /// # Errors
    /// A process that has exited.
    pub fn launch_cpu(
        &mut self,
        pid: Pid,
        threads: u32,
        f: KernelFn,
    ) -> Result<KernelId, AccessError> {
        if self.procs[pid.0].svm.exited() {
            return Err(AccessError::Signal {
                kind: "SIGKILL",
                addr: CpuVa::new(0),
                why: "the process has exited".into(),
            });
        }
        let id = self.kernels.len();
        let start = self.clock_ns;
        self.kernels.push(Kernel {
            pid,
            gpu: GpuIndex::new(0).expect("index 0"),
            gpu_id: 0,
            f,
            n_waves: threads,
            next_wave: 0,
            running: 0,
            // Every thread runs at once, on a core of its own.
            cu_free: vec![threads],
            stats: KernelStats {
                launch_ns: start,
                end_ns: start,
                ..KernelStats::default()
            },
            fatal: None,
            done: threads == 0,
            cpu: true,
            copy_loads: false,
        });
        self.record(|| super::TraceEvent::Launch {
            pid: Self::record_pid(pid),
            gpu_id: 0,
            waves: threads,
        });
        self.fill(id, start);
        Ok(KernelId(id))
    }

    /// Fills every CU's free slots with the kernel's next waves, round robin.
    fn fill(&mut self, id: usize, start: u64) {
        let n_waves = self.kernels[id].n_waves;
        let cus = u32::try_from(self.kernels[id].cu_free.len()).unwrap_or(u32::MAX);
        'fill: loop {
            let mut placed = false;
            for cu in 0..cus {
                if self.kernels[id].next_wave >= n_waves {
                    break 'fill;
                }
                if self.kernels[id].cu_free[cu as usize] > 0 {
                    self.dispatch(id, cu, start);
                    placed = true;
                }
            }
            if !placed {
                break;
            }
        }
    }

    /// Starts the kernel's next wave on `cu` at time `at`.
    fn dispatch(&mut self, k: usize, cu: u32, at: u64) {
        let kern = &mut self.kernels[k];
        let index = kern.next_wave;
        kern.next_wave += 1;
        kern.running += 1;
        kern.cu_free[cu as usize] -= 1;
        let slot = Rc::new(Slot::default());
        let fut = (kern.f)(
            index,
            WaveCtx {
                slot: Rc::clone(&slot),
            },
        );
        let w = KWave {
            kernel: k,
            index,
            cu,
            fut,
            slot,
        };
        let i = match self.kwave_free.pop() {
            Some(i) => {
                self.kwaves[i] = Some(w);
                i
            }
            None => {
                self.kwaves.push(Some(w));
                self.kwaves.len() - 1
            }
        };
        self.schedule_kwave(i, at);
    }

    /// Queues wave `i` to run at `at`.
    #[inline(always)]
    pub(super) fn schedule_kwave(&mut self, i: usize, at: u64) {
        self.kready.push(at, i);
    }

    /// Whether a kernel's loads from VRAM copy their bytes rather than
    /// lend the page they read: so once one of its stores has found its
    /// page lent to a load still held (see `Machine::store_part`). `None`
    /// for a kernel never launched.
    pub fn kernel_copies_loads(&self, k: KernelId) -> Option<bool> {
        self.kernels.get(k.0).map(|x| x.copy_loads)
    }

    /// Whether a kernel has finished (all waves, or a fatal fault).
    pub fn kernel_done(&self, k: KernelId) -> bool {
        self.kernels.get(k.0).is_some_and(|x| x.done)
    }

    /// Runs pending work until the kernel finishes, and returns what it did.
    ///
    /// # Errors
    /// The memory access fault that killed its queue.
    pub fn wait_kernel(&mut self, k: KernelId) -> Result<KernelStats, AccessError> {
        self.finish_kernel(k)
    }

    /// Runs pending work until kernel `k` finishes (a wave's access, or a
    /// launched kernel), and returns what it did.
    pub(super) fn finish_kernel(&mut self, k: KernelId) -> Result<KernelStats, AccessError> {
        self.record(|| super::TraceEvent::Wait {
            kernel: Self::record_kernel(k),
        });
        self.restore_failures.clear();
        self.restore_horizon = u64::MAX;
        self.run(u64::MAX, |m| m.kernel_done(k));
        let kern = &mut self.kernels[k.0];
        if !kern.done {
            kern.fatal = Some(AccessError::VmFault {
                gpu_id: kern.gpu_id,
                addr: CpuVa::new(0),
                write: false,
                why: "the kernel can never finish".into(),
                errno: Errno::Ebusy,
            });
            kern.done = true;
        }
        self.clock_ns = self.clock_ns.max(kern.stats.end_ns);
        match &kern.fatal {
            Some(e) => Err(e.clone()),
            None => Ok(kern.stats),
        }
    }

    /// Runs one step of wave `i`: perform its posted request, or poll it
    /// for the next one. Returns whether the step put a retry fault in a
    /// ring (the only way a wave's step can make other work ready at
    /// once; a fault the CAM filtered does not count).
    pub(super) fn step_kwave(&mut self, i: usize, at: u64) -> bool {
        let Some(w) = self.kwaves.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        let k = w.kernel;
        let kern = &self.kernels[k];
        let (pid, cpu, g) = (kern.pid, kern.cpu, kern.gpu.get());
        // GPU queues stay stopped until the restore work has run (CPU
        // threads are not queues).
        if kern.fatal.is_some() || (!cpu && self.procs[pid.0].svm.restore_pending()) {
            self.step_held(i, at);
            return false;
        }
        // A request left posted (a retry after a fault), or the wave's next.
        let req = match w.slot.take_req() {
            Some(r) => r,
            None => {
                let mut cx = Context::from_waker(Waker::noop());
                if w.fut.as_mut().poll(&mut cx).is_ready() {
                    // An instruction made and never awaited (or awaited
                    // and dropped before it was done) is lost: a bug in
                    // the workload, so the kernel dies rather than finish
                    // without it.
                    let answered = !matches!(w.slot.answer.get(), Answer::Pending);
                    if w.slot.is_posted() || answered || w.slot.misused.get() {
                        let why = "a wave ended without awaiting a memory instruction it made";
                        self.kill(k, at, why.into(), CpuVa::new(0), false);
                    }
                    self.retire(i, at);
                    return false;
                }
                let r = w.slot.take_req();
                let Some(r) = r.filter(|_| !w.slot.misused.get()) else {
                    // A wave awaiting something other than its context, or
                    // making an instruction before awaiting the one before:
                    // a bug in the workload. Kill it rather than spin or
                    // answer the wrong instruction.
                    self.kill_misused(i, at);
                    return false;
                };
                r
            }
        };
        let wave = Wave {
            k,
            pi: pid.0,
            g,
            cu: w.cu as usize,
            index: w.index,
            slot: Rc::clone(&w.slot),
        };
        match self.perform(&wave, at, req) {
            Ok(end) => {
                self.schedule_kwave(i, end);
                false
            }
            Err(Parked::Faulted { page, raised }) => {
                self.kwait.entry((g, pid.0, page)).or_default().push(i);
                raised
            }
            Err(Parked::Dead) => {
                self.retire(i, at);
                false
            }
        }
    }

    /// A step of wave `i` that cannot run: its kernel died (it retires),
    /// or its process's queues are stopped (it waits for the restore).
    #[cold]
    #[inline(never)]
    fn step_held(&mut self, i: usize, at: u64) {
        let Some(w) = self.kwaves[i].as_ref() else {
            return;
        };
        let kern = &self.kernels[w.kernel];
        if kern.fatal.is_some() {
            self.retire(i, at);
            return;
        }
        let due = self.procs[kern.pid.0]
            .svm
            .restore_due_ns()
            .unwrap_or(at)
            .max(at + 1);
        self.schedule_kwave(i, due);
    }

    /// Ends the kernel of wave `i`, whose code misused its context.
    #[cold]
    #[inline(never)]
    fn kill_misused(&mut self, i: usize, at: u64) {
        let Some(w) = self.kwaves[i].as_ref() else {
            return;
        };
        let why = if w.slot.misused.get() {
            "a wave made a memory instruction before awaiting its previous one"
        } else {
            "a wave waits on something that is not its memory"
        };
        self.kill(w.kernel, at, why.into(), CpuVa::new(0), false);
        self.retire(i, at);
    }

    /// Ends a kernel with a fatal memory access fault.
    fn kill(&mut self, k: usize, at: u64, why: String, addr: CpuVa, write: bool) {
        let kern = &mut self.kernels[k];
        if kern.fatal.is_none() {
            kern.fatal = Some(AccessError::VmFault {
                gpu_id: kern.gpu_id,
                addr,
                write,
                why,
                errno: Errno::Efault,
            });
            kern.stats.end_ns = kern.stats.end_ns.max(at);
        }
    }

    /// A wave has finished (or died): free its CU slot for the next one.
    fn retire(&mut self, i: usize, at: u64) {
        let Some(w) = self.kwaves[i].take() else {
            return;
        };
        self.kwave_free.push(i);
        let k = w.kernel;
        let kern = &mut self.kernels[k];
        kern.running -= 1;
        kern.cu_free[w.cu as usize] += 1;
        kern.stats.end_ns = kern.stats.end_ns.max(at);
        if kern.fatal.is_none() {
            kern.stats.waves += 1;
            if kern.stats.first_wave_done_ns == 0 {
                kern.stats.first_wave_done_ns = at;
            }
            if kern.next_wave < kern.n_waves {
                self.dispatch(k, w.cu, at);
                return;
            }
        }
        let kern = &mut self.kernels[k];
        if kern.running == 0 {
            kern.done = true;
        }
    }

    /// Wakes the waves parked on a fault of (GPU, process, page): served,
    /// they retry at `at`; refused, their kernel dies.
    pub(super) fn wake_kwaves(
        &mut self,
        g: usize,
        pi: usize,
        page: PageNum,
        at: u64,
        outcome: Woken,
    ) {
        let Some(list) = self.kwait.remove(&(g, pi, page)) else {
            return;
        };
        for i in list {
            let Some(k) = self.kwaves[i].as_ref().map(|w| w.kernel) else {
                continue;
            };
            match &outcome {
                Woken::Served => {}
                Woken::Dropped => self.kernels[k].stats.retries += 1,
                // The handler's own errno (EFAULT with XNACK off, EPERM
                // for a write to a read-only VMA, EACCES, ...).
                Woken::Fatal { why, write, errno } => {
                    let e = AccessError::VmFault {
                        gpu_id: self.kernels[k].gpu_id,
                        addr: page.va(),
                        write: *write,
                        why: why.clone(),
                        errno: *errno,
                    };
                    self.kill_with(k, at, e);
                }
            }
            self.schedule_kwave(i, at);
        }
    }

    /// Performs the wave's posted request at `at`. Returns when it ends,
    /// or why the wave cannot go on now.
    fn perform(&mut self, w: &Wave, at: u64, req: Req) -> Result<u64, Parked> {
        let k = w.k;
        let Req { addr, len, .. } = req;
        let write = match req.kind {
            ReqKind::Compute => {
                let ns = addr;
                w.slot.answer.set(Answer::Empty);
                let (kernel, wave) = (u32::try_from(k).unwrap_or(u32::MAX), w.index);
                self.record(|| super::TraceEvent::Wave {
                    kernel,
                    wave,
                    op: super::WaveOp::Compute { ns },
                });
                return Ok(at + ns);
            }
            ReqKind::Load => false,
            ReqKind::Store => true,
        };
        // An access past the end of the address space (or larger than one
        // access may be) is a fault no driver can serve.
        if len > super::MAX_ACCESS_BYTES || addr.checked_add(len).is_none() {
            self.kill_out_of_range(k, at, (addr, len));
            return Err(Parked::Dead);
        }
        if self.kernels[k].cpu {
            return self.perform_cpu(w, at, (addr, len, write));
        }
        let gen_ = self.procs[w.pi].tlb_gen[w.g];
        let off = addr % PAGE_SIZE;
        // (An empty access touches no page: the general path, which
        // translates none.)
        let cost = if len != 0 && off + len <= PAGE_SIZE {
            // Within one page, the usual case: no list of pages to build.
            let page = CpuVa::new(addr).page_num();
            let (pte, cost) = match self.translate(w, gen_, page, write) {
                Ok(t) => t,
                Err(cost) => return Err(self.retry_fault(w, (at, cost), page, addr, req)),
            };
            match (pte.vram_owner(), write) {
                // A load from VRAM, the hottest path: it lends the page
                // (a page never written, the zero page) and copies nothing.
                (Some(owner), false) => {
                    let vram = &self.gpus[owner].vram;
                    if self.kernels[k].copy_loads {
                        // A kernel whose stores found their pages lent
                        // copies the bytes into the wave's buffer.
                        let mut out = w.slot.out();
                        let n = usize::try_from(len).unwrap_or(0);
                        vram.read_into(pte.addr() + off, n, out.vec());
                        w.slot.answer(out);
                    } else {
                        let page = match vram.lend(pte.addr()) {
                            Some(p) => Rc::clone(p),
                            None => Rc::clone(&self.zero_page),
                        };
                        w.slot.page.set(Some(page));
                        // (Both fit: the access lies within one page.)
                        w.slot.answer.set(Answer::Page {
                            off: u16::try_from(off).unwrap_or(0),
                            len: u16::try_from(len).unwrap_or(0),
                        });
                    }
                }
                // A store to VRAM, the next most common.
                (Some(_), true) => self.store_vram(w, at, (addr, off, pte)),
                (None, _) => self.perform_now(w, at, write, &[(addr, len, pte)])?,
            }
            cost
        } else {
            let mut targets = std::mem::take(&mut self.scratch_targets);
            let r = self.perform_pages(w, at, gen_, (addr, len, write), &mut targets);
            self.scratch_targets = targets;
            match r {
                Ok(cost) => cost,
                Err(Stop::Fault { cost, page, a }) => {
                    return Err(self.retry_fault(w, (at, cost), page, a, req));
                }
                Err(Stop::Dead) => return Err(Parked::Dead),
            }
        };
        w.slot.page_faults.set(0);
        self.finish_access(w, (addr, len, write));
        Ok(at + cost)
    }

    /// Writes the posted store's bytes, within one page of VRAM (the
    /// common store, without `perform_now`'s list of parts). Out of line,
    /// to keep the load's step short.
    #[inline(never)]
    fn store_vram(&mut self, w: &Wave, at: u64, (a, off, pte): (u64, u64, PackedPte)) {
        let data = w.slot.bufs().stored.take();
        // (A part in VRAM cannot fail: no IOMMU lookup.)
        let _ = self.store_part(w, at, (a, off, pte), &data);
        w.slot.answer_store(data);
    }

    /// [`Machine::perform`] for an access that spans pages (or none):
    /// translate every page it touches, and only then move the bytes, so
    /// that the first miss parks it with nothing moved (the instruction is
    /// replayed whole). Returns the cost, or where it stopped.
    #[inline(never)]
    fn perform_pages(
        &mut self,
        w: &Wave,
        at: u64,
        gen_: u64,
        (addr, len, write): (u64, u64, bool),
        targets: &mut Vec<(u64, u64, PackedPte)>,
    ) -> Result<u64, Stop> {
        let mut cost = 0;
        targets.clear();
        let mut done = 0;
        while done < len {
            let a = addr + done;
            let page = CpuVa::new(a).page_num();
            let n = (PAGE_SIZE - a % PAGE_SIZE).min(len - done);
            match self.translate(w, gen_, page, write) {
                Ok((pte, c)) => {
                    cost += c;
                    targets.push((a, n, pte));
                }
                Err(c) => {
                    return Err(Stop::Fault {
                        cost: cost + c,
                        page,
                        a,
                    });
                }
            }
            done += n;
        }
        self.perform_now(w, at, write, targets)
            .map_err(|_| Stop::Dead)?;
        Ok(cost)
    }

    /// Moves the bytes of a translated access, part by part (`n` bytes at
    /// `a` through a PTE each), and answers the wave: a store's bytes go
    /// into memory, a load's into the wave's buffer.
    #[inline(never)]
    fn perform_now(
        &mut self,
        w: &Wave,
        at: u64,
        write: bool,
        parts: &[(u64, u64, PackedPte)],
    ) -> Result<(), Parked> {
        if write {
            let data = w.slot.bufs().stored.take();
            let mut pos = 0usize;
            for &(a, n, pte) in parts {
                let n = usize::try_from(n).unwrap_or(0);
                self.store_part(w, at, (a, a % PAGE_SIZE, pte), &data[pos..pos + n])?;
                pos += n;
            }
            w.slot.answer_store(data);
        } else {
            let mut out = w.slot.out();
            for &(a, n, pte) in parts {
                let n = usize::try_from(n).unwrap_or(0);
                self.load_part(w, at, (a, a % PAGE_SIZE, n, pte), out.vec())?;
            }
            w.slot.answer(out);
        }
        Ok(())
    }

    /// Translates `page` for wave `w` on its GPU: its CU's TLB, else a page
    /// walk. Returns the PTE and the time it took, or (a retry fault) the
    /// time until the fault is known. The hit is the simulator's hottest
    /// path, so it stays inline and the walk does not.
    #[inline(always)]
    fn translate(
        &mut self,
        w: &Wave,
        gen_: u64,
        page: PageNum,
        write: bool,
    ) -> Result<(PackedPte, u64), u64> {
        let Some(pte) = self.tlbs.lookup((w.g, w.cu), w.pi, page.raw(), gen_) else {
            return self.translate_miss(w, gen_, page, write);
        };
        self.kernels[w.k].stats.tlb_hits += 1;
        self.access_cost(w.g, Some(pte), self.wave_costs.hit, write)
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
        write: bool,
    ) -> Result<(PackedPte, u64), u64> {
        let (pi, g) = (w.pi, w.g);
        self.kernels[w.k].stats.tlb_misses += 1;
        let p = self.procs[pi].pts[g]
            .walk_packed(page)
            .filter(|p| p.valid() && (!write || p.writeable()));
        if let Some(p) = p {
            self.tlbs.insert((g, w.cu), pi, page.raw(), gen_, p);
        }
        self.access_cost(g, p, self.wave_costs.miss, write)
    }

    /// The PTE a translation found and its cost, `cost` so far plus the
    /// access; or, when it does not allow the access (not mapped, or
    /// read-only for a write), a retry fault known after `cost`.
    #[inline(always)]
    fn access_cost(
        &self,
        g: usize,
        pte: Option<PackedPte>,
        cost: u64,
        write: bool,
    ) -> Result<(PackedPte, u64), u64> {
        let pte = pte.filter(|p| !write || p.writeable()).ok_or(cost)?;
        let access = if pte.vram_owner() == Some(g) {
            self.wave_costs.vram
        } else {
            self.wave_costs.far
        };
        Ok((pte, cost + access))
    }

    /// Raises the retry fault of wave `w` on `page` (known `cost` after the
    /// step at `at`) into its GPU's ring, and leaves the request posted for
    /// the retry.
    #[cold]
    #[inline(never)]
    fn retry_fault(
        &mut self,
        w: &Wave,
        (at, cost): (u64, u64),
        page: PageNum,
        a: u64,
        req: Req,
    ) -> Parked {
        let write = req.kind == ReqKind::Store;
        w.slot.post(req);
        let k = w.k;
        self.kernels[k].stats.faults += 1;
        let faults = w.slot.page_faults.get() + 1;
        w.slot.page_faults.set(faults);
        let limit = self.config.gpu_max_retries;
        if faults > limit {
            let e = livelock(self.kernels[k].gpu_id, CpuVa::new(a), write, limit);
            self.kill_with(k, at, e);
            return Parked::Dead;
        }
        let when = at + cost;
        self.last_ts = self.last_ts.max(when.saturating_sub(1)) + 1;
        // The ring's CAM drops a repeat of a pending fault: then nothing
        // new reaches the ring.
        let raised = self.gpus[w.g].ring.raise(RingEntry {
            proc_index: w.pi,
            page,
            write,
            ts: self.last_ts,
            at: when + self.wave_costs.delivery,
        });
        Parked::Faulted { page, raised }
    }

    /// Copies one page's part of a load (`n` bytes at `a`, offset `off`
    /// in its page) onto `out`.
    fn load_part(
        &mut self,
        w: &Wave,
        at: u64,
        (a, off, n, pte): (u64, u64, usize, PackedPte),
        out: &mut Vec<u8>,
    ) -> Result<(), Parked> {
        match pte.vram_owner() {
            Some(owner) => self.gpus[owner].vram.read_into(pte.addr() + off, n, out),
            None => {
                let (owner, host) = self.iommu_page(w, at, (a, pte), false)?;
                self.procs[owner].mm.pages().read_into(host + off, n, out);
            }
        }
        Ok(())
    }

    /// Writes one page's part of a store (`d` at `a`, offset `off` in its
    /// page).
    fn store_part(
        &mut self,
        w: &Wave,
        at: u64,
        (a, off, pte): (u64, u64, PackedPte),
        d: &[u8],
    ) -> Result<(), Parked> {
        match pte.vram_owner() {
            Some(owner) => {
                // A page still lent to a load is copied before it is
                // written (copy on write), 4 KiB for this store. A kernel
                // whose waves store to pages that loads still hold (a
                // read-modify-write that keeps the load's `Data`, say)
                // would copy a page per store; its loads copy their bytes
                // from now on instead (the same bytes either way).
                if self.gpus[owner].vram.write(pte.addr() + off, d) {
                    self.kernels[w.k].copy_loads = true;
                }
            }
            None => {
                let (owner, host) = self.iommu_page(w, at, (a, pte), true)?;
                self.procs[owner].mm.pages_mut().write(host + off, d);
            }
        }
        self.procs[w.pi].shadow.write(a, d);
        Ok(())
    }

    /// The host page that a system-memory PTE points at through the GPU's
    /// IOMMU: its process, and its first byte's address. An unmapped DMA
    /// address kills the kernel.
    fn iommu_page(
        &mut self,
        w: &Wave,
        at: u64,
        (a, pte): (u64, PackedPte),
        write: bool,
    ) -> Result<(usize, u64), Parked> {
        let dma = pte.addr();
        let Some(&(owner, va)) = self.gpus[w.g].iommu.get(&dma) else {
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

    /// Records a completed load or store, counts it, and hands the wave
    /// its answer.
    #[inline(always)]
    fn finish_access(&mut self, w: &Wave, (addr, len, write): (u64, u64, bool)) {
        let k = w.k;
        let (kernel, wave) = (u32::try_from(k).unwrap_or(u32::MAX), w.index);
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        self.record(|| super::TraceEvent::Wave {
            kernel,
            wave,
            op: if write {
                super::WaveOp::Store { addr, len: len32 }
            } else {
                super::WaveOp::Load { addr, len: len32 }
            },
        });
        let st = &mut self.kernels[k].stats;
        st.accesses += 1;
        st.bytes += len;
    }

    /// A CPU thread's request: the one CPU path (`Machine::cpu_fault_in`),
    /// then the bytes of host memory.
    #[inline(never)]
    fn perform_cpu(
        &mut self,
        w: &Wave,
        at: u64,
        (addr, len, write): (u64, u64, bool),
    ) -> Result<u64, Parked> {
        let k = w.k;
        let pid = self.kernels[k].pid;
        let t = match self.cpu_fault_in(pid, CpuVa::new(addr), len, write, at) {
            Ok(t) => t,
            Err(e) => {
                self.kill_with(k, at, e);
                return Err(Parked::Dead);
            }
        };
        let p = &mut self.procs[pid.0];
        if write {
            let data = w.slot.bufs().stored.take();
            p.mm.pages_mut().write(addr, &data);
            p.shadow.write(addr, &data);
            w.slot.answer_store(data);
        } else {
            let mut out = w.slot.out();
            p.mm.pages()
                .read_into(addr, usize::try_from(len).unwrap_or(0), out.vec());
            w.slot.answer(out);
        }
        self.finish_access(w, (addr, len, write));
        Ok(t)
    }

    /// Ends kernel `k`: an access of `len` bytes at `addr` that no driver
    /// could serve.
    #[cold]
    #[inline(never)]
    fn kill_out_of_range(&mut self, k: usize, at: u64, (addr, len): (u64, u64)) {
        let e = AccessError::OutOfRange {
            addr: CpuVa::new(addr),
            len,
        };
        self.kill_with(k, at, e);
    }

    /// Ends a kernel (or CPU threads) with `e`.
    fn kill_with(&mut self, k: usize, at: u64, e: AccessError) {
        let kern = &mut self.kernels[k];
        if kern.fatal.is_none() {
            kern.fatal = Some(e);
            kern.stats.end_ns = kern.stats.end_ns.max(at);
        }
    }

    /// Ends the GPU kernels of `pid` whose queues stay stopped because the
    /// restore work failed (CPU threads run on).
    pub(super) fn kill_stopped_kernels(&mut self, pid: Pid, why: &str, errno: Errno) {
        let at = self.clock_ns;
        for k in 0..self.kernels.len() {
            let kern = &self.kernels[k];
            if kern.pid == pid && !kern.done && !kern.cpu {
                let e = AccessError::VmFault {
                    gpu_id: kern.gpu_id,
                    addr: CpuVa::new(0),
                    write: false,
                    why: why.to_owned(),
                    errno,
                };
                self.kill_with(k, at, e);
            }
        }
    }

    /// Ends every kernel of a process that exits.
    pub(super) fn cancel_kernels(&mut self, pid: Pid) {
        let at = self.clock_ns;
        for k in 0..self.kernels.len() {
            if self.kernels[k].pid == pid && !self.kernels[k].done {
                self.kill(k, at, "the process has exited".into(), CpuVa::new(0), false);
            }
        }
        // Parked waves would never wake: run them once so they retire.
        let parked: Vec<usize> = std::mem::take(&mut self.kwait)
            .into_iter()
            .flat_map(|(key, v)| {
                if key.1 == pid.0 {
                    v
                } else {
                    self.kwait.entry(key).or_default().extend(v);
                    Vec::new()
                }
            })
            .collect();
        for i in parked {
            self.schedule_kwave(i, at);
        }
    }

    /// Kernel waves parked on faults, for `work_pending`.
    pub(super) fn kwaves_parked(&self) -> bool {
        self.kwait.values().any(|v| !v.is_empty())
    }
}

/// Where an access that spans pages stopped.
enum Stop {
    /// A retry fault on `page` (at byte `a`), known `cost` into the step.
    Fault { cost: u64, page: PageNum, a: u64 },
    /// Its kernel died.
    Dead,
}

/// What the fault handler made of the fault parked waves wait on.
pub(super) enum Woken {
    /// Served: they retry the instruction now.
    Served,
    /// Dropped: they retry after the GPU's retry delay (`gpu_retry_delay_ns`).
    Dropped,
    /// Refused: their kernels die with the handler's error.
    Fatal {
        why: String,
        write: bool,
        errno: Errno,
    },
}

/// Why a wave stopped.
enum Parked {
    /// Waiting for a retry fault on this page; `raised` when the fault
    /// entered the ring (the CAM filters repeats of a pending one).
    Faulted { page: PageNum, raised: bool },
    /// Its kernel died.
    Dead,
}

/// Kernel state the machine keeps.
pub(super) type KernelWaits = BTreeMap<(usize, usize, PageNum), Vec<usize>>;

/// Kernel waves ready to run, by time: a bucket of waves per time.
///
/// Waves run in lockstep (every instruction of a kind costs the same), so
/// many share a time and there are few distinct times, and a new time is
/// almost always the latest one. Buckets therefore sit in a vector sorted
/// by time: a push usually appends to the last bucket, a pop takes from the
/// first live one, and emptied buckets' vectors are kept for reuse, so the
/// steady state allocates nothing. Within a bucket the order is FIFO
/// (eager ordering) or drawn from the seed (seeded ordering).
#[derive(Debug, Default)]
pub(super) struct ReadyQueue {
    /// Buckets `first..` are live, in time order, none of them empty; the
    /// ones before `first` are spent.
    buckets: Vec<Bucket>,
    first: usize,
    spare: Vec<Vec<usize>>,
}

/// The waves ready at one time: `waves[head..]`, oldest first.
#[derive(Debug)]
struct Bucket {
    at: u64,
    waves: Vec<usize>,
    head: usize,
}

impl ReadyQueue {
    #[inline(always)]
    pub(super) fn push(&mut self, at: u64, i: usize) {
        if let Some(b) = self.buckets.last_mut()
            && b.at == at
        {
            b.waves.push(i);
            return;
        }
        // Otherwise a binary search (times with many distinct values stay
        // O(log n)).
        let pos = self.first + self.buckets[self.first..].partition_point(|b| b.at <= at);
        if pos > self.first && self.buckets[pos - 1].at == at {
            self.buckets[pos - 1].waves.push(i);
            return;
        }
        let mut waves = self.spare.pop().unwrap_or_default();
        waves.push(i);
        self.buckets.insert(pos, Bucket { at, waves, head: 0 });
    }

    /// The earliest time a wave is ready.
    pub(super) fn peek_time(&self) -> Option<u64> {
        self.buckets.get(self.first).map(|b| b.at)
    }

    /// Takes a wave of the earliest time: the oldest, or the one `pick`
    /// chooses among `n` (a seeded draw; the last one takes its place).
    #[inline(always)]
    pub(super) fn pop(&mut self, pick: impl FnOnce(usize) -> usize) -> Option<(u64, usize)> {
        let b = self.buckets.get_mut(self.first)?;
        let at = b.at;
        let n = b.waves.len() - b.head;
        let k = pick(n).min(n - 1);
        let i = if k == 0 {
            b.head += 1;
            b.waves[b.head - 1]
        } else {
            b.waves.swap_remove(b.head + k)
        };
        if b.head == b.waves.len() {
            let mut waves = std::mem::take(&mut b.waves);
            waves.clear();
            self.spare.push(waves);
            self.first += 1;
            if self.first == self.buckets.len() {
                self.buckets.clear();
                self.first = 0;
            } else if self.first >= 64 && self.first * 2 >= self.buckets.len() {
                self.buckets.drain(..self.first);
                self.first = 0;
            }
        }
        Some((at, i))
    }

    /// Whether no wave is ready (live buckets are never empty).
    pub(super) fn is_empty(&self) -> bool {
        self.first == self.buckets.len()
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

    /// What a TLB-hit load touches stays small: a slot of 48 bytes (64
    /// with its reference counts) and a TLB set of one aligned pair of
    /// cache lines. (The kernel benchmarks measure what this buys.)
    #[test]
    fn the_step_s_state_stays_within_its_cache_lines() {
        assert!(
            std::mem::size_of::<Slot>() <= 48,
            "{}",
            std::mem::size_of::<Slot>()
        );
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

//! The executor: kernels as grids of waves placed on a GPU's compute
//! units, each wave Rust code whose memory instructions this file
//! performs.
//!
//! # Design
//! A wave is an `async` block (its side is in `wave.rs`: [`WaveCtx`],
//! `MemOp`, `Data`, the slot). Each memory operation posts one request
//! into the slot, and awaiting it returns `Pending` until it has been
//! performed; the executor, which owns the machine, performs the request
//! here ([`Machine::perform`]: the translation through `mmu.rs`, a retry
//! fault that parks the wave, the bytes), marks the slot done, and polls
//! the wave again when simulated time reaches the request's end. One
//! request per step, in simulated-time order: so waves interleave as
//! their memory operations would, on one thread, with no `unsafe` and no
//! wakers (the executor knows exactly when a wave can go on). An
//! operation is issued when it is made, so a wave makes one and awaits it
//! before making the next, as a wave's instructions issue in order.
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
//! An invalid PTE raises a retry fault into the GPU's ring and parks the
//! wave until the fault is served (XNACK on); a refused fault ends the
//! kernel with the handler's errno (with XNACK off: EFAULT), and its other
//! waves stop. A scenario's GPU access is a kernel of one wave too
//! (`sched.rs`), so every GPU access takes this one path.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Waker};

use svm_core::Errno;
use svm_core::addr::{CpuVa, PAGE_SIZE, PageNum};
use svm_core::gpu::GpuIndex;

use super::mmu::Tlbs;
use super::wave::{Answer, KernelFn, Req, ReqKind, Slot, WaveCtx};
use super::{AccessError, Machine, Pid};
use crate::gpu::PackedPte;
use crate::timing::ns;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelStats {
    /// Waves run.
    pub waves: u64,
    /// Memory instructions performed (loads and stores).
    pub accesses: u64,
    /// The stores among them, atomics included (the rest are loads).
    pub stores: u64,
    /// The atomics among the stores.
    pub atomics: u64,
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
    /// Pages its accesses touched (an access within a page touches one),
    /// by where the PTE led: this GPU's VRAM, a peer's, or system memory
    /// over the host link.
    pub touches_local: u64,
    /// See `touches_local`.
    pub touches_peer: u64,
    /// See `touches_local`.
    pub touches_sys: u64,
    /// Bytes its accesses moved, by the same three places as the
    /// touches (each page's part of an access counted where that page
    /// was). An access that faults partway counts its translated pages
    /// again when it is retried, as the touches do.
    #[serde(default)]
    pub bytes_local: u64,
    /// See `bytes_local`.
    #[serde(default)]
    pub bytes_peer: u64,
    /// See `bytes_local`.
    #[serde(default)]
    pub bytes_sys: u64,
    /// Simulated ns its waves lived, summed over them (dispatch to end):
    /// what `fault_stall_ns` and `held_ns` are parts of.
    pub wave_ns: u64,
    /// Simulated ns its waves spent parked on retry faults, summed: from
    /// the step that faulted to the wake (served, dropped and retried, or
    /// refused).
    pub fault_stall_ns: u64,
    /// Simulated ns its waves were held because the process's queues were
    /// stopped (evicted, waiting for the restore work), summed.
    pub held_ns: u64,
    /// When the launch was made, and when its first and last wave ended.
    pub launch_ns: u64,
    /// See `launch_ns`.
    pub first_wave_done_ns: u64,
    /// See `launch_ns`.
    pub end_ns: u64,
}

/// Loads and stores performed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadsWrites {
    /// Loads.
    pub reads: u64,
    /// Stores, atomics included.
    pub writes: u64,
    /// The atomics among the stores.
    pub atomics: u64,
}

impl ReadsWrites {
    /// Both.
    pub fn total(self) -> u64 {
        self.reads + self.writes
    }
}

/// Memory instructions performed, by who performed them: the basis of an
/// access rate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessCounts {
    /// Each GPU's waves, by GPU index.
    pub gpus: Vec<ReadsWrites>,
    /// The processes' CPU threads (`Machine::launch_cpu`).
    pub cpu: ReadsWrites,
}

impl AccessCounts {
    /// Everyone's.
    pub fn total(&self) -> ReadsWrites {
        self.gpus
            .iter()
            .chain([&self.cpu])
            .fold(ReadsWrites::default(), |a, b| ReadsWrites {
                reads: a.reads + b.reads,
                writes: a.writes + b.writes,
                atomics: a.atomics + b.atomics,
            })
    }
}

/// A running kernel.
pub(super) struct Kernel {
    pid: Pid,
    gpu: GpuIndex,
    pub(super) gpu_id: u32,
    /// Its waves' code, until it is done.
    f: Option<KernelFn>,
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
    /// When it was dispatched, and when it last parked on a retry fault
    /// (for its kernel's `wave_ns` and `fault_stall_ns`).
    started_at: u64,
    parked_at: u64,
}

/// What one step of a wave needs to know of it (a copy, so that the step
/// can use the machine freely).
pub(super) struct Wave {
    /// Its kernel.
    pub(super) k: usize,
    /// Its process and GPU, by index.
    pub(super) pi: usize,
    pub(super) g: usize,
    /// Its CU (on GPU `g`) and its index in the grid.
    pub(super) cu: usize,
    pub(super) index: u32,
    pub(super) slot: Rc<Slot>,
}

/// The sums of an atomic add: each little-endian `u32` of `sums` (the
/// operands) plus the one of `old` in its place, wrapping.
fn add_words(sums: &mut [u8], old: &[u8]) {
    for (s, o) in sums.chunks_exact_mut(4).zip(old.chunks_exact(4)) {
        let v = u32::from_le_bytes([s[0], s[1], s[2], s[3]])
            .wrapping_add(u32::from_le_bytes([o[0], o[1], o[2], o[3]]));
        s.copy_from_slice(&v.to_le_bytes());
    }
}

impl Machine {
    /// Sets the GPUs' compute shape (CUs, waves per CU, TLB size). Kernels
    /// already running keep their CUs (the TLBs, emptied, cover them).
    pub fn set_compute_shape(&mut self, shape: ComputeShape) {
        self.sched.shape = shape;
        let running = self
            .sched
            .kernels
            .iter()
            .filter(|k| !k.done && !k.cpu)
            .map(|k| k.cu_free.len())
            .max()
            .unwrap_or(0);
        self.mmu.tlbs = Tlbs::new(
            self.hw.gpus.len(),
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
        let latency = ns(self.hw.timing.launch_ns);
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
        if self.mmu.tlbs.is_empty() {
            self.set_compute_shape(self.sched.shape);
        }
        let id = self.sched.kernels.len();
        let start = self.sched.clock_ns + latency;
        self.sched.kernels.push(Kernel {
            pid,
            gpu,
            gpu_id,
            f: Some(f),
            n_waves,
            next_wave: 0,
            running: 0,
            cu_free: vec![self.sched.shape.waves_per_cu; self.sched.shape.compute_units as usize],
            stats: KernelStats {
                launch_ns: self.sched.clock_ns,
                ..KernelStats::default()
            },
            fatal: None,
            done: n_waves == 0,
            cpu: false,
            copy_loads: false,
        });
        if n_waves == 0 {
            self.sched.kernels[id].stats.end_ns = start;
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
        let id = self.sched.kernels.len();
        let start = self.sched.clock_ns;
        self.sched.kernels.push(Kernel {
            pid,
            gpu: GpuIndex::new(0).expect("index 0"),
            gpu_id: 0,
            f: Some(f),
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
        let n_waves = self.sched.kernels[id].n_waves;
        let cus = u32::try_from(self.sched.kernels[id].cu_free.len()).unwrap_or(u32::MAX);
        'fill: loop {
            let mut placed = false;
            for cu in 0..cus {
                if self.sched.kernels[id].next_wave >= n_waves {
                    break 'fill;
                }
                if self.sched.kernels[id].cu_free[cu as usize] > 0 {
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
        let kern = &mut self.sched.kernels[k];
        let index = kern.next_wave;
        kern.next_wave += 1;
        kern.running += 1;
        kern.cu_free[cu as usize] -= 1;
        let slot = Rc::new(Slot::default());
        let f = kern
            .f
            .as_ref()
            .expect("a kernel with waves left to dispatch keeps its code");
        let fut = f(
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
            started_at: at,
            parked_at: at,
        };
        let i = match self.sched.kwave_free.pop() {
            Some(i) => {
                self.sched.kwaves[i] = Some(w);
                i
            }
            None => {
                self.sched.kwaves.push(Some(w));
                self.sched.kwaves.len() - 1
            }
        };
        self.schedule_kwave(i, at);
    }

    /// Queues wave `i` to run at `at`.
    #[inline(always)]
    pub(super) fn schedule_kwave(&mut self, i: usize, at: u64) {
        self.sched.kready.push(at, i);
    }

    /// Whether a kernel's loads from VRAM copy their bytes rather than
    /// lend the page they read: so once one of its stores has found its
    /// page lent to a load still held (see `Machine::store_part`). `None`
    /// for a kernel never launched.
    pub fn kernel_copies_loads(&self, k: KernelId) -> Option<bool> {
        self.sched.kernels.get(k.0).map(|x| x.copy_loads)
    }

    /// Memory instructions performed so far, every kernel's (finished,
    /// killed or running), by who performed them.
    pub fn access_counts(&self) -> AccessCounts {
        let mut c = AccessCounts {
            gpus: vec![ReadsWrites::default(); self.hw.gpus.len()],
            cpu: ReadsWrites::default(),
        };
        for k in &self.sched.kernels {
            let rw = if k.cpu {
                &mut c.cpu
            } else {
                &mut c.gpus[k.gpu.get()]
            };
            rw.reads += k.stats.accesses - k.stats.stores;
            rw.writes += k.stats.stores;
            rw.atomics += k.stats.atomics;
        }
        c
    }

    /// Every kernel launched so far, in launch order: its GPU (0 for CPU
    /// threads), whether it died, and what it did.
    pub fn kernels(&self) -> impl Iterator<Item = (u32, bool, &KernelStats)> {
        self.sched.kernels.iter().map(|k| {
            (
                if k.cpu { 0 } else { k.gpu_id },
                k.fatal.is_some(),
                &k.stats,
            )
        })
    }

    /// Whether a kernel has finished (all waves, or a fatal fault).
    pub fn kernel_done(&self, k: KernelId) -> bool {
        self.sched.kernels.get(k.0).is_some_and(|x| x.done)
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
        self.sched.restore_failures.clear();
        self.sched.restore_horizon = u64::MAX;
        self.run(u64::MAX, |m| m.kernel_done(k));
        let kern = &mut self.sched.kernels[k.0];
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
        self.sched.clock_ns = self.sched.clock_ns.max(kern.stats.end_ns);
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
        let Some(w) = self.sched.kwaves.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        let k = w.kernel;
        let kern = &self.sched.kernels[k];
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
                if let Some(w) = self.sched.kwaves[i].as_mut() {
                    w.parked_at = at;
                }
                self.sched
                    .kwait
                    .entry((g, pid.0, page))
                    .or_default()
                    .push(i);
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
        let Some(w) = self.sched.kwaves[i].as_ref() else {
            return;
        };
        let kern = &self.sched.kernels[w.kernel];
        if kern.fatal.is_some() {
            self.retire(i, at);
            return;
        }
        let due = self.procs[kern.pid.0]
            .svm
            .restore_due_ns()
            .unwrap_or(at)
            .max(at + 1);
        self.sched.kernels[w.kernel].stats.held_ns += due - at;
        self.schedule_kwave(i, due);
    }

    /// Ends the kernel of wave `i`, whose code misused its context.
    #[cold]
    #[inline(never)]
    fn kill_misused(&mut self, i: usize, at: u64) {
        let Some(w) = self.sched.kwaves[i].as_ref() else {
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
    pub(super) fn kill(&mut self, k: usize, at: u64, why: String, addr: CpuVa, write: bool) {
        let kern = &mut self.sched.kernels[k];
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
        let Some(w) = self.sched.kwaves[i].take() else {
            return;
        };
        self.sched.kwave_free.push(i);
        let k = w.kernel;
        let kern = &mut self.sched.kernels[k];
        kern.running -= 1;
        kern.cu_free[w.cu as usize] += 1;
        kern.stats.end_ns = kern.stats.end_ns.max(at);
        kern.stats.wave_ns += at.saturating_sub(w.started_at);
        if let Some(tl) = self.rec.timeline.as_deref_mut() {
            tl.waves.push(super::timeline::WaveSpan {
                kernel: u32::try_from(k).unwrap_or(u32::MAX),
                index: w.index,
                gpu_id: kern.gpu_id,
                cu: w.cu,
                start_ns: w.started_at,
                end_ns: at,
            });
        }
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
        let kern = &mut self.sched.kernels[k];
        if kern.running == 0 {
            kern.done = true;
            if let Some(tl) = self.rec.timeline.as_deref_mut() {
                let s = &kern.stats;
                tl.kernels.push(super::timeline::KernelSpan {
                    kernel: u32::try_from(k).unwrap_or(u32::MAX),
                    gpu_id: kern.gpu_id,
                    cpu: kern.cpu,
                    start_ns: s.launch_ns,
                    end_ns: s.end_ns,
                    waves: s.waves,
                    accesses: s.accesses,
                    faults: s.faults,
                    fault_stall_ns: s.fault_stall_ns,
                    failed: kern.fatal.is_some(),
                });
            }
            // A finished kernel keeps its stats, not its code: a scenario
            // makes a kernel per GPU access, and a long one makes many.
            kern.f = None;
            kern.cu_free = Vec::new();
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
        let Some(list) = self.sched.kwait.remove(&(g, pi, page)) else {
            return;
        };
        for i in list {
            let Some((k, req_addr, parked)) = self.sched.kwaves[i]
                .as_ref()
                .map(|w| (w.kernel, w.slot.req_addr.get(), w.parked_at))
            else {
                continue;
            };
            self.sched.kernels[k].stats.fault_stall_ns += at.saturating_sub(parked);
            if let Some(tl) = self.rec.timeline.as_deref_mut()
                && let Some(w) = self.sched.kwaves[i].as_ref()
            {
                tl.stalls.push(super::timeline::StallSpan {
                    kernel: u32::try_from(k).unwrap_or(u32::MAX),
                    index: w.index,
                    gpu_id: self.sched.kernels[k].gpu_id,
                    page: page.raw(),
                    start_ns: parked,
                    end_ns: at,
                    outcome: match &outcome {
                        Woken::Served => 0,
                        Woken::Dropped => 1,
                        Woken::Fatal { .. } => 2,
                    },
                });
            }
            match &outcome {
                Woken::Served => {}
                Woken::Dropped => self.sched.kernels[k].stats.retries += 1,
                // The handler's own errno (EFAULT with XNACK off, EPERM
                // for a write to a read-only VMA, EACCES, ...).
                Woken::Fatal { why, write, errno } => {
                    // The faulting byte: the instruction's own address when
                    // it starts in this page (its request is posted again
                    // for the retry), else the page's first byte.
                    let addr = CpuVa::new(req_addr.max(page.va().raw()));
                    let e = AccessError::VmFault {
                        gpu_id: self.sched.kernels[k].gpu_id,
                        addr,
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
            ReqKind::Atomic => return self.perform_atomic(w, at, req),
        };
        // An access past the end of the address space (or larger than one
        // access may be) is a fault no driver can serve.
        if len > crate::limits::MAX_WAVE_OP_BYTES || addr.checked_add(len).is_none() {
            self.kill_out_of_range(k, at, (addr, len));
            return Err(Parked::Dead);
        }
        if self.sched.kernels[k].cpu {
            return self.perform_cpu(w, at, req);
        }
        let gen_ = self.mmu.tlb_gens[w.pi][w.g];
        let off = addr % PAGE_SIZE;
        // (An empty access touches no page: the general path, which
        // translates none.)
        let cost = if len != 0 && off + len <= PAGE_SIZE {
            // Within one page, the usual case: no list of pages to build.
            let page = CpuVa::new(addr).page_num();
            let (pte, cost) = match self.translate(w, gen_, page, write, len) {
                Ok(t) => t,
                Err(cost) => return Err(self.retry_fault(w, (at, cost), page, addr, req)),
            };
            match (pte.vram_owner(), write) {
                // A load from VRAM, the hottest path: it lends the page
                // (a page never written, the zero page) and copies nothing.
                (Some(owner), false) => {
                    let vram = &self.hw.gpus[owner].vram;
                    if self.sched.kernels[k].copy_loads {
                        // A kernel whose stores found their pages lent
                        // copies the bytes into the wave's buffer.
                        let mut out = w.slot.out();
                        let n = usize::try_from(len).unwrap_or(0);
                        vram.read_into(pte.addr() + off, n, out.vec());
                        w.slot.answer(out);
                    } else {
                        let page = match vram.lend(pte.addr()) {
                            Some(p) => Rc::clone(p),
                            None => Rc::clone(&self.hw.zero_page),
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
            let mut targets = std::mem::take(&mut self.mmu.scratch_targets);
            let r = self.perform_pages(w, at, gen_, (addr, len, write), &mut targets);
            self.mmu.scratch_targets = targets;
            match r {
                Ok(cost) => cost,
                Err(Stop::Fault { cost, page, a }) => {
                    return Err(self.retry_fault(w, (at, cost), page, a, req));
                }
                Err(Stop::Dead) => return Err(Parked::Dead),
            }
        };
        w.slot.page_faults.set(0);
        self.finish_access(w, req);
        Ok(at + cost)
    }

    /// An atomic add (`WaveCtx::atomic_add`): every page it touches must
    /// translate for a write and be where the GPU's atomics reach (its own
    /// VRAM on a GPU with `local_atomics`), else it is a retry fault of
    /// kind `Access::Atomic`; then the old words are read, the sums
    /// written, and the old words answered. One step of the executor does
    /// all of it, so no other access comes between the read and the
    /// write: that is what makes it atomic here.
    #[cold]
    #[inline(never)]
    fn perform_atomic(&mut self, w: &Wave, at: u64, req: Req) -> Result<u64, Parked> {
        let (k, Req { addr, len, .. }) = (w.k, req);
        if len > crate::limits::MAX_WAVE_OP_BYTES || addr.checked_add(len).is_none() {
            self.kill_out_of_range(k, at, (addr, len));
            return Err(Parked::Dead);
        }
        if addr % 4 != 0 || len % 4 != 0 {
            let e = AccessError::MisalignedAtomic {
                addr: CpuVa::new(addr),
                len,
            };
            self.kill_with(k, at, e);
            return Err(Parked::Dead);
        }
        if self.sched.kernels[k].cpu {
            return self.perform_cpu(w, at, req);
        }
        let gen_ = self.mmu.tlb_gens[w.pi][w.g];
        let local_only = self.hw.gpus[w.g].desc.local_atomics;
        let mut parts: Vec<(u64, u64, PackedPte)> = Vec::new();
        // Not mapped, or mapped where its atomics do not reach: a fault.
        let cost = match self.translate_parts(w, gen_, (addr, len, true), local_only, &mut parts) {
            Ok(cost) => cost,
            Err(Stop::Fault { cost, page, a }) => {
                return Err(self.retry_fault(w, (at, cost), page, a, req));
            }
            Err(Stop::Dead) => return Err(Parked::Dead),
        };
        let mut sums = w.slot.bufs().stored.take();
        let mut out = w.slot.out();
        for &(a, n, pte) in &parts {
            let n = usize::try_from(n).unwrap_or(0);
            self.load_part(w, at, (a, a % PAGE_SIZE, n, pte), out.vec())?;
        }
        add_words(&mut sums, out.vec());
        let mut pos = 0usize;
        for &(a, n, pte) in &parts {
            let n = usize::try_from(n).unwrap_or(0);
            self.store_part(w, at, (a, a % PAGE_SIZE, pte), &sums[pos..pos + n])?;
            pos += n;
        }
        w.slot.answer(out);
        w.slot.page_faults.set(0);
        self.finish_access(w, req);
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
        let cost = self.translate_parts(w, gen_, (addr, len, write), false, targets)?;
        self.perform_now(w, at, write, targets)
            .map_err(|_| Stop::Dead)?;
        Ok(cost)
    }

    /// Whether VRAM of GPU `owner` (`None`: system memory) is GPU `g`'s
    /// own or a GPU's of its hive.
    fn same_hive(&self, g: usize, owner: Option<usize>) -> bool {
        let hive = |g: usize| self.hw.gpus[g].desc.hive;
        owner.is_some_and(|o| o == g || (hive(g).is_some() && hive(g) == hive(o)))
    }

    /// Translates every page the access touches into `targets` (the
    /// part's address, length and PTE), returning their cost, or the
    /// first page that faults: one without a PTE that allows the access,
    /// or, with `own_vram`, one mapped anywhere but the VRAM of the wave's
    /// GPU or of a GPU of its hive (an atomic on a GPU whose atomics reach
    /// no further: NVLink peers have native atomics, UVM's
    /// `has_native_atomics`, where PCIe peers and system memory do not).
    fn translate_parts(
        &mut self,
        w: &Wave,
        gen_: u64,
        (addr, len, write): (u64, u64, bool),
        own_vram: bool,
        targets: &mut Vec<(u64, u64, PackedPte)>,
    ) -> Result<u64, Stop> {
        let mut cost = 0;
        targets.clear();
        let mut done = 0;
        while done < len {
            let a = addr + done;
            let page = CpuVa::new(a).page_num();
            let n = (PAGE_SIZE - a % PAGE_SIZE).min(len - done);
            match self.translate(w, gen_, page, write, n) {
                Ok((pte, c)) if !own_vram || self.same_hive(w.g, pte.vram_owner()) => {
                    cost += c;
                    targets.push((a, n, pte));
                }
                Ok((_, c)) | Err(c) => {
                    return Err(Stop::Fault {
                        cost: cost + c,
                        page,
                        a,
                    });
                }
            }
            done += n;
        }
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
            Some(owner) => self.hw.gpus[owner].vram.read_into(pte.addr() + off, n, out),
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
        // The shadow records the store for the page it was meant for, from
        // the bytes where it lands (see `crate::shadow`); it is taken out
        // for the while, as the store may land in another process's page.
        let mut shadow = std::mem::take(&mut self.procs[w.pi].shadow);
        let (n, span) = (a / PAGE_SIZE, (usize::try_from(off).unwrap_or(0), d.len()));
        let r = match pte.vram_owner() {
            Some(owner) => {
                // A page still lent to a load is copied before it is
                // written (copy on write), 4 KiB for this store. A kernel
                // whose waves store to pages that loads still hold (a
                // read-modify-write that keeps the load's `Data`, say)
                // would copy a page per store; its loads copy their bytes
                // from now on instead (the same bytes either way).
                let vpage = pte.addr() / PAGE_SIZE;
                let vram = &mut self.hw.gpus[owner].vram;
                if shadow.store(
                    n,
                    span,
                    vram,
                    |v| v.page(vpage),
                    |v| v.write(pte.addr() + off, d),
                ) {
                    self.sched.kernels[w.k].copy_loads = true;
                }
                Ok(())
            }
            None => self.iommu_page(w, at, (a, pte), true).map(|(owner, host)| {
                let mem = self.procs[owner].mm.pages_mut();
                let hp = host / PAGE_SIZE;
                shadow.store(n, span, mem, |m| m.page(hp), |m| m.write(host + off, d));
            }),
        };
        self.procs[w.pi].shadow = shadow;
        r
    }

    /// Records a completed load or store, counts it, and hands the wave
    /// its answer.
    #[inline(always)]
    fn finish_access(&mut self, w: &Wave, Req { kind, addr, len }: Req) {
        let k = w.k;
        let (kernel, wave) = (u32::try_from(k).unwrap_or(u32::MAX), w.index);
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        self.record(|| super::TraceEvent::Wave {
            kernel,
            wave,
            op: match kind {
                ReqKind::Store => super::WaveOp::Store { addr, len: len32 },
                ReqKind::Atomic => super::WaveOp::Atomic { addr, len: len32 },
                _ => super::WaveOp::Load { addr, len: len32 },
            },
        });
        let st = &mut self.sched.kernels[k].stats;
        st.accesses += 1;
        // (An atomic writes: it counts as a store, and among the atomics.)
        st.stores += u64::from(kind != ReqKind::Load);
        st.atomics += u64::from(kind == ReqKind::Atomic);
        st.bytes += len;
    }

    /// A CPU thread's request: the one CPU path (`Machine::cpu_fault_in`),
    /// then the bytes of host memory.
    #[inline(never)]
    fn perform_cpu(&mut self, w: &Wave, at: u64, req: Req) -> Result<u64, Parked> {
        let (k, Req { kind, addr, len }) = (w.k, req);
        let write = kind != ReqKind::Load;
        let pid = self.sched.kernels[k].pid;
        let t = match self.cpu_fault_in(pid, CpuVa::new(addr), len, write, at) {
            Ok(t) => t,
            Err(e) => {
                self.kill_with(k, at, e);
                return Err(Parked::Dead);
            }
        };
        let p = &mut self.procs[pid.0];
        if kind == ReqKind::Atomic {
            // The CPU's atomic: the old words, then the sums.
            let mut sums = w.slot.bufs().stored.take();
            let mut out = w.slot.out();
            p.mm.pages()
                .read_into(addr, usize::try_from(len).unwrap_or(0), out.vec());
            add_words(&mut sums, out.vec());
            p.shadow.write_host(p.mm.pages_mut(), addr, &sums);
            w.slot.answer(out);
        } else if write {
            let data = w.slot.bufs().stored.take();
            p.shadow.write_host(p.mm.pages_mut(), addr, &data);
            w.slot.answer_store(data);
        } else {
            let mut out = w.slot.out();
            p.mm.pages()
                .read_into(addr, usize::try_from(len).unwrap_or(0), out.vec());
            w.slot.answer(out);
        }
        self.finish_access(w, req);
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
    pub(super) fn kill_with(&mut self, k: usize, at: u64, e: AccessError) {
        let kern = &mut self.sched.kernels[k];
        if kern.fatal.is_none() {
            kern.fatal = Some(e);
            kern.stats.end_ns = kern.stats.end_ns.max(at);
        }
    }

    /// Ends the GPU kernels of `pid` whose queues stay stopped because the
    /// restore work failed (CPU threads run on).
    pub(super) fn kill_stopped_kernels(&mut self, pid: Pid, why: &str, errno: Errno) {
        let at = self.sched.clock_ns;
        for k in 0..self.sched.kernels.len() {
            let kern = &self.sched.kernels[k];
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
        let at = self.sched.clock_ns;
        for k in 0..self.sched.kernels.len() {
            if self.sched.kernels[k].pid == pid && !self.sched.kernels[k].done {
                self.kill(k, at, "the process has exited".into(), CpuVa::new(0), false);
            }
        }
        // Parked waves would never wake: run them once so they retire.
        let parked: Vec<usize> = std::mem::take(&mut self.sched.kwait)
            .into_iter()
            .flat_map(|(key, v)| {
                if key.1 == pid.0 {
                    v
                } else {
                    self.sched.kwait.entry(key).or_default().extend(v);
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
        self.sched.kwait.values().any(|v| !v.is_empty())
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
pub(super) enum Parked {
    /// Waiting for a retry fault on this page; `raised` when the fault
    /// entered the ring (the CAM filters repeats of a pending one).
    Faulted { page: PageNum, raised: bool },
    /// Its kernel died.
    Dead,
}

/// Kernel state the machine keeps.
pub(super) type KernelWaits = BTreeMap<(usize, usize, PageNum), Vec<usize>>;

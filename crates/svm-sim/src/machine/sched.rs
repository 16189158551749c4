//! In-flight GPU accesses (waves), fault delivery, deferred work, and the
//! seeded scheduler that interleaves them.
//!
//! # Concurrency model
//! Every piece of work is one atomic step with respect to every other:
//! - a wave step performs one memory instruction of a kernel wave through
//!   the GPU's MMU (`kernel.rs`) and raises a retry fault into its GPU's
//!   [`crate::ring::FaultRing`] at a miss; a scenario's GPU access is such
//!   a wave too ([`Machine::launch`]), so every GPU access takes that one
//!   path;
//! - a delivery takes a batch of a ring's faults (up to the profile's
//!   batch size, those that have arrived), hands each in turn to the
//!   engine's `restore_pages`, and wakes the waves waiting on its page;
//! - a process's deferred list work frees what munmap left behind (faults
//!   still in a ring from before the munmap are dropped when they arrive);
//! - a restore work, due `restore_delay_ns` (kfd's 1 ms) after an
//!   XNACK-off eviction, remaps and resumes the queues.
//!
//! Syscalls and ioctls of the scenario are steps too. Under a profile a
//! step runs on its own clock from its start time, and the locks it would
//! wait for are modelled as times (the process's `MmapLock`, its
//! `svms_lock_until`, the range's migrate lock); but no step sees another
//! halfway. A delivery that would wait for `svms->lock` does not run
//! before the lock is free (`deliverable_at`): its effects must not come
//! before those of the steps it waits for. That steps are atomic is the kernel's own locking: the fault handler holds the mmap
//! read lock from its range lookup to its last PTE, and munmap, set_attr,
//! the deferred work and the restore work take it for writing. So a munmap
//! that "arrives while a fault's window is migrating" waits for that fault
//! to finish, and then sees its PTEs; what varies is the order of whole
//! steps, and that is what the scheduler chooses.
//!
//! # Choosing the order
//! [`Interleave::Eager`] runs kernel work as soon as it exists: a fault is
//! delivered before the wave goes on, and munmap's deferred work runs
//! before munmap returns. [`Interleave::Seeded`] picks uniformly among the
//! steps that are ready, from a PCG stream seeded by the run's seed, and
//! leaves work pending between the caller's operations until
//! [`Machine::interleave`] or a wait runs it. The same seed gives the same
//! order, so a race is a seed to replay.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::cell::RefCell;
use std::rc::Rc;

use svm_core::addr::{CpuVa, PAGE_SIZE, PageNum};
use svm_core::gpu::GpuIndex;
use svm_core::policy::{BatchFault, MAX_BATCHES_PER_SERVICE, MAX_THROTTLED_PER_SERVICE, Replay};
use svm_core::process::{DropReason, FaultOutcome};

use super::kernel::Woken;
use super::{AccessError, AccessStats, KernelFn, KernelId, Machine, Pid};
use crate::ring::RingEntry;

/// Restore retries one [`Machine::advance_to`] runs before it skips the
/// rest (they would fail the same way: nothing else runs between them).
pub const MAX_RETRIES_PER_ADVANCE: u32 = 1000;
/// Steps at one simulated time after which a run reports a livelock.
const MAX_QUIESCE_STEPS: u64 = 50_000_000;

/// How pending work is ordered.
#[derive(Clone, Debug)]
pub enum Interleave {
    /// Kernel work first, at once; the default.
    Eager,
    /// A seeded random order among ready steps.
    Seeded {
        /// The seed, for reports.
        seed: u64,
        /// The stream.
        rng: Pcg64Mcg,
    },
}

/// A launched GPU access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaveId(usize);

/// How a launched access runs: how many times it walks its buffer, the
/// flag that ends it early, and (on the CPU) how many threads share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessPlan {
    /// Passes over the buffer (at least 1); with `until`, the most.
    pub passes: u32,
    /// After each pass, the 32-bit word at this address is read; the
    /// access ends once it holds this value.
    pub until: Option<(u64, u32)>,
    /// CPU threads, or a GPU kernel's waves, each taking an equal
    /// page-aligned slice.
    pub threads: u32,
    /// Simulated ns each thread or wave waits (computing) before its first
    /// access: a launch that starts its memory work later.
    pub start_ns: u64,
    /// The access's `data` are atomic operands (`WaveCtx::atomic_add`, a
    /// page's part an instruction), not bytes to store; it returns the old
    /// words as a read returns its bytes.
    pub atomic: bool,
}

impl AccessPlan {
    /// One pass, one thread.
    pub const ONCE: AccessPlan = AccessPlan {
        passes: 1,
        until: None,
        threads: 1,
        start_ns: 0,
        atomic: false,
    };
}

/// A GPU access in flight: a kernel of one wave that moves the access's
/// bytes page by page, one memory instruction a page, through the same
/// MMU path as every other wave.
#[derive(Debug)]
pub(super) struct Access {
    kernel: KernelId,
    /// What its loads returned, in order.
    out: Rc<RefCell<Vec<u8>>>,
}

/// The scheduler's state: simulated time, the kernels and their waves,
/// the caller's GPU accesses, and the order work runs in.
#[derive(Debug)]
pub(super) struct Sched {
    /// Simulated time, ns.
    pub(super) clock_ns: u64,
    /// Accesses in flight, by [`WaveId`]; a slot empties when collected.
    pub(super) waves: Vec<Option<Access>>,
    /// How pending work is ordered.
    pub(super) interleave: Interleave,
    /// The last IH timestamp handed out.
    pub(super) last_ts: u64,
    /// Restore failures per process since the current run began, and that
    /// run's horizon.
    pub(super) restore_failures: Vec<u32>,
    pub(super) restore_horizon: u64,
    /// Scratch list of ready steps, kept to save an allocation per step.
    pub(super) ready_buf: Vec<Work>,
    /// Per GPU, when its fault handler is free.
    pub(super) handler_free: Vec<u64>,
    /// When each range's migrate lock is free, by (process, first page).
    pub(super) migrate_lock: std::collections::BTreeMap<(usize, svm_core::addr::PageNum), u64>,
    /// The GPUs' compute shape.
    pub(super) shape: super::kernel::ComputeShape,
    /// Kernels launched, by [`KernelId`].
    pub(super) kernels: Vec<super::kernel::Kernel>,
    /// Kernel waves in flight, and free slots of that table.
    pub(super) kwaves: Vec<Option<super::kernel::KWave>>,
    pub(super) kwave_free: Vec<usize>,
    /// Kernel waves ready to run, by time.
    pub(super) kready: ReadyQueue,
    /// Kernel waves parked on a retry fault, by (GPU, process, page).
    pub(super) kwait: super::kernel::KernelWaits,
    /// Where the clock is published as it moves, for a progress display
    /// on another thread ([`Machine::watch_clock`]).
    pub(super) clock_watch: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// While a batch under a batch-wide replay is served: the handled
    /// faults whose waves wake at the replay, not when their own service
    /// ends.
    pub(super) replay_wakes: Option<Vec<(usize, RingEntry, svm_core::Result<FaultOutcome>)>>,
    /// Per GPU, a batch-flush still to run, at the next delivery (which
    /// cannot start before the replay).
    pub(super) flush_until: Vec<Option<Flush>>,
}

impl Sched {
    /// A scheduler for `gpus` GPUs, at time 0, eager.
    pub(super) fn new(gpus: usize) -> Self {
        Self {
            clock_ns: 0,
            waves: Vec::new(),
            interleave: Interleave::Eager,
            last_ts: 0,
            restore_failures: Vec::new(),
            restore_horizon: 0,
            ready_buf: Vec::new(),
            handler_free: vec![0; gpus],
            migrate_lock: std::collections::BTreeMap::new(),
            shape: super::kernel::ComputeShape::default(),
            kernels: Vec::new(),
            kwaves: Vec::new(),
            kwave_free: Vec::new(),
            kready: ReadyQueue::default(),
            kwait: std::collections::BTreeMap::new(),
            clock_watch: None,
            replay_wakes: None,
            flush_until: vec![None; gpus],
        }
    }
}

/// One step the scheduler may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Work {
    /// do_swap_page's `put_page` of the device pages CPU faults on a GPU
    /// held, once those faults have returned.
    PagePut(usize),
    Deliver(usize),
    Deferred(usize),
    Restore(usize),
    /// A process's fault policy's deadline (UVM's unpin work).
    PolicyTimer(usize),
    /// A GPU's access-counter notifications, for the driver.
    Notify(usize),
    /// The earliest kernel wave.
    KWave,
}

/// The wave of a GPU access of `len` bytes at `addr`: a load (`data` is
/// `None`) or a store of `data`, one instruction per page it touches, so
/// that a fault on a later page leaves the earlier ones done, as a wave
/// walking a buffer leaves them.
fn access_wave(
    addr: u64,
    len: u64,
    data: Option<Rc<[u8]>>,
    out: Rc<RefCell<Vec<u8>>>,
    plan: AccessPlan,
) -> KernelFn {
    // Each thread (a GPU access has one) takes an equal, page-aligned
    // slice of the access.
    let slice = len
        .div_ceil(u64::from(plan.threads.max(1)))
        .next_multiple_of(PAGE_SIZE);
    Rc::new(move |thread, ctx| {
        let (data, out) = (data.clone(), Rc::clone(&out));
        Box::pin(async move {
            let from = (u64::from(thread) * slice).min(len);
            let to = (from + slice).min(len);
            if plan.start_ns > 0 {
                ctx.compute(plan.start_ns).await;
            }
            for _ in 0..plan.passes.max(1) {
                let mut done = from;
                while done < to {
                    let a = addr + done;
                    let n = (PAGE_SIZE - a % PAGE_SIZE).min(to - done);
                    let (lo, hi) = (
                        usize::try_from(done).unwrap_or(usize::MAX),
                        usize::try_from(done + n).unwrap_or(usize::MAX),
                    );
                    match &data {
                        Some(d) if plan.atomic => {
                            let old = ctx.atomic_add(a, d[lo..hi].to_vec()).await;
                            out.borrow_mut()[lo..hi].copy_from_slice(&old);
                        }
                        Some(d) => {
                            ctx.store(a, d[lo..hi].to_vec()).await;
                        }
                        None => {
                            let got = ctx.load(a, hi - lo).await;
                            out.borrow_mut()[lo..hi].copy_from_slice(&got);
                        }
                    }
                    done += n;
                }
                // A kernel spinning on a flag reads it after every pass.
                if let Some((flag, value)) = plan.until {
                    let got = ctx.load(flag, 4).await;
                    if got[..] == value.to_le_bytes() {
                        break;
                    }
                }
            }
        })
    })
}

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

impl Machine {
    /// Orders pending work eagerly (`None`) or by a seeded random stream.
    pub fn set_seed(&mut self, seed: Option<u64>) {
        // Injected failures draw from the same seed (or 0, eager).
        self.hw.inject.reseed(seed.unwrap_or(0));
        self.sched.interleave = match seed {
            None => Interleave::Eager,
            Some(seed) => Interleave::Seeded {
                seed,
                rng: Pcg64Mcg::seed_from_u64(seed),
            },
        };
    }

    /// The interleaving seed, if the order is seeded.
    pub fn seed(&self) -> Option<u64> {
        match &self.sched.interleave {
            Interleave::Eager => None,
            Interleave::Seeded { seed, .. } => Some(*seed),
        }
    }

    /// Starts a GPU read (`data` is `None`, `len` bytes come back) or write
    /// of `data` at `addr`: a wave of one kernel, already on its CU (no
    /// launch latency), whose instructions go through the GPU's MMU as any
    /// kernel's do. It runs when the scheduler lets it: collect it with
    /// [`Machine::wait`].
    ///
    /// # Errors
    /// [`AccessError::NoGpu`] and [`AccessError::OutOfRange`] at once;
    /// a VM fault when the process has exited.
    pub fn launch(
        &mut self,
        pid: Pid,
        gpu_id: u32,
        addr: CpuVa,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<WaveId, AccessError> {
        self.launch_access(pid, Some(gpu_id), addr, len, data, AccessPlan::ONCE)
    }

    /// [`Machine::launch`] for a GPU (`gpu_id`) or the CPU (`None`: CPU
    /// threads of the process, which touch memory through the CPU's fault
    /// path and run alongside everything else), walking the buffer as
    /// `plan` says. A read returns what the last pass read.
    ///
    /// # Errors
    /// As [`Machine::launch`]; on the CPU, a signal when the process has
    /// exited.
    pub fn launch_access(
        &mut self,
        pid: Pid,
        gpu_id: Option<u32>,
        addr: CpuVa,
        len: u64,
        data: Option<&[u8]>,
        plan: AccessPlan,
    ) -> Result<WaveId, AccessError> {
        if let Some(g) = gpu_id {
            if self.gpu_index(g).is_none() {
                return Err(AccessError::NoGpu(g));
            }
            if self.procs[pid.index()].svm.exited() {
                return Err(AccessError::VmFault {
                    gpu_id: g,
                    addr,
                    write: data.is_some(),
                    why: "the process has exited".into(),
                    errno: svm_core::Errno::Efault,
                });
            }
        }
        if addr.checked_add(len).is_none() {
            return Err(AccessError::OutOfRange { addr, len });
        }
        if data.is_some_and(|d| d.len() as u64 != len) {
            return Err(AccessError::OutOfRange { addr, len });
        }
        // A load's (or an atomic's old) bytes, reserved once, fallibly.
        let buf = if data.is_none() || plan.atomic {
            let mut b = super::access_buffer(addr, len)?;
            // Reserved exactly: no reallocation.
            b.resize(usize::try_from(len).unwrap_or(0), 0);
            b
        } else {
            Vec::new()
        };
        let out = Rc::new(RefCell::new(buf));
        let f = access_wave(addr.raw(), len, data.map(Rc::from), Rc::clone(&out), plan);
        let kernel = match gpu_id {
            Some(g) => self.launch_wave(pid, g, plan.threads.max(1), f, 0)?,
            None => self.launch_cpu(pid, plan.threads.max(1), f)?,
        };
        let access = Access { kernel, out };
        let id = match self.sched.waves.iter().position(Option::is_none) {
            Some(i) => {
                self.sched.waves[i] = Some(access);
                i
            }
            None => {
                self.sched.waves.push(Some(access));
                self.sched.waves.len() - 1
            }
        };
        Ok(WaveId(id))
    }

    /// Whether a launched access has finished.
    pub fn wave_done(&self, w: WaveId) -> bool {
        self.sched
            .waves
            .get(w.0)
            .and_then(Option::as_ref)
            .is_some_and(|a| self.kernel_done(a.kernel))
    }

    /// Accesses launched and not yet collected.
    pub fn waves_in_flight(&self) -> usize {
        self.sched.waves.iter().flatten().count()
    }

    /// Runs pending work until the access finishes, and collects it.
    ///
    /// # Errors
    /// [`AccessError::VmFault`] for a fault the driver could not recover.
    ///
    /// # Panics
    /// If `w` was already collected.
    pub fn wait(&mut self, w: WaveId) -> Result<(Vec<u8>, AccessStats), AccessError> {
        let access = self.sched.waves[w.0].take().expect("wave in flight");
        let stats = self.finish_kernel(access.kernel)?;
        let out = access.out.take();
        Ok((
            out,
            AccessStats {
                faults: stats.faults,
                retries: stats.retries,
            },
        ))
    }

    /// A GPU reads (`data` is `None`, `len` bytes come back) or writes `data`
    /// at `addr` through its page table, faulting as the hardware would,
    /// and waits for it.
    ///
    /// # Errors
    /// [`AccessError::VmFault`] for a fault the driver cannot recover.
    pub fn gpu_access(
        &mut self,
        pid: Pid,
        gpu_id: u32,
        addr: CpuVa,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<(Vec<u8>, AccessStats), AccessError> {
        let w = self.launch(pid, gpu_id, addr, len, data)?;
        self.wait(w)
    }

    /// Lets simulated time pass, running the work that falls due.
    pub fn advance(&mut self, ns: u64) {
        self.record(|| super::TraceEvent::Advance { ns });
        self.advance_to(self.sched.clock_ns.saturating_add(ns));
    }

    /// Runs every step ready by `until`, moving the clock to each timed
    /// step's due time, then sets the clock to `until`.
    ///
    /// A restore work that fails reschedules itself `restore_delay_ns`
    /// (kfd's 1 ms) later, as kfd's
    /// does. Nothing else changes the process between two such retries, so
    /// after [`MAX_RETRIES_PER_ADVANCE`] of them in one call the rest would
    /// fail the same way: they are skipped and the next retry is left due
    /// `restore_delay_ns` after `until`.
    pub fn advance_to(&mut self, until: u64) {
        self.sched.restore_failures.clear();
        self.sched.restore_horizon = until;
        self.run(until, |_| false);
        self.sched.clock_ns = self.sched.clock_ns.max(until);
    }

    /// Runs what would run concurrently with the caller between two of its
    /// operations. Seeded: a seeded number of ready steps, waves included
    /// (each step goes on with probability 7/8). Eager: every ready kernel
    /// step, and waves only when waited for.
    pub fn interleave(&mut self) {
        loop {
            let (go, waves) = match &mut self.sched.interleave {
                Interleave::Eager => (true, false),
                Interleave::Seeded { rng, .. } => (rng.random_bool(0.875), true),
            };
            if !go {
                return;
            }
            let Some(work) = self.next_work(self.sched.clock_ns, waves) else {
                return;
            };
            self.do_work(work);
        }
    }

    /// Runs everything to the end: every wave finishes, every ring drains,
    /// the deferred and restore work run, with time moving on as needed.
    /// Results of finished waves stay to be collected.
    ///
    /// Returns `false` when work was still pending after a bound of steps
    /// (a livelock, which is a bug) or a restore work keeps failing.
    pub fn quiesce(&mut self) -> bool {
        self.sched.restore_failures.clear();
        self.sched.restore_horizon = self.sched.clock_ns;
        self.run(u64::MAX, |_| false);
        !self.work_pending()
    }

    /// Whether any work is left: waves still running, faults in a ring,
    /// deferred work, or a restore work scheduled.
    pub fn work_pending(&self) -> bool {
        self.mmu.rings.iter().any(|r| !r.is_empty())
            || !self.sched.kready.is_empty()
            || self.kwaves_parked()
            || self
                .procs
                .iter()
                .any(|p| p.svm.deferred_pending() || p.svm.restore_due_ns().is_some())
    }

    /// Publishes the simulated clock to `to` whenever it moves, so that
    /// another thread can show how far a long run has got (it changes
    /// nothing the run does).
    pub fn watch_clock(&mut self, to: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        self.sched.clock_watch = Some(to);
    }

    /// Runs steps until `stop` holds, nothing is ready, or the next timed
    /// step is after `until`.
    pub(super) fn run(&mut self, until: u64, stop: impl Fn(&Self) -> bool) {
        // A livelock is work that never lets time move: count the steps
        // since the clock last moved, not all steps (a big kernel takes
        // more than any fixed number of them).
        let mut steps = 0u64;
        let mut at = self.sched.clock_ns;
        while !stop(self) && steps < MAX_QUIESCE_STEPS {
            if self.sched.clock_ns != at {
                at = self.sched.clock_ns;
                steps = 0;
                if let Some(w) = &self.sched.clock_watch {
                    w.store(at, std::sync::atomic::Ordering::Relaxed);
                }
            }
            steps += 1;
            if let Some(work) = self.next_work(self.sched.clock_ns, true) {
                self.do_work(work);
                continue;
            }
            // Nothing ready now: move time to the next timed step.
            match self.next_timed() {
                Some(t) if t <= until => self.sched.clock_ns = self.sched.clock_ns.max(t),
                _ => return,
            }
        }
    }

    /// The earliest time something timed becomes ready.
    fn next_timed(&self) -> Option<u64> {
        let restore = self
            .procs
            .iter()
            .enumerate()
            .filter(|&(i, _)| !self.restores_capped(i))
            .filter_map(|(_, p)| p.svm.restore_due_ns())
            .min();
        let deliver = (0..self.hw.gpus.len())
            .filter_map(|g| self.deliverable_at(g))
            .min();
        let kwave = self.sched.kready.peek_time();
        let put = self.next_page_put().map(|(_, t)| t);
        let timer = self
            .procs
            .iter()
            .filter_map(|p| {
                p.svm
                    .policy_due_ns()
                    .into_iter()
                    .chain(p.svm.deferred_due_ns())
                    .min()
            })
            .min();
        let notice = (0..self.hw.gpus.len())
            .filter_map(|g| self.notice_due(g))
            .min();
        restore
            .into_iter()
            .chain(timer)
            .chain(notice)
            .chain(deliver)
            .chain(kwave)
            .chain(put)
            .min()
    }

    /// When ring `g`'s oldest fault can be handled: once it has arrived and
    /// the GPU's fault handler is free, or, when its process's
    /// `svms->lock` is held past then, when its handler can act after
    /// taking it (the lock's release plus the handler's fixed cost, when
    /// its service's effects begin). A delivery folds its lock waits into
    /// its own clock, but its effects happen when it runs: one that ran
    /// before the lock was free would migrate pages before the waves the
    /// previous service woke could retry, and GPUs sharing a range would
    /// undo each other's service forever.
    fn deliverable_at(&self, g: usize) -> Option<u64> {
        let e = self.mmu.rings[g].head()?;
        Some(self.handler_acts_at(g, e.proc_index, e.at))
    }

    /// When GPU `g`'s oldest access-counter notification can be served: as
    /// for a fault ([`Machine::deliverable_at`]), the handler being the
    /// same bottom half.
    fn notice_due(&self, g: usize) -> Option<u64> {
        let n = self.mmu.counters.notices[g].front()?;
        Some(self.handler_acts_at(g, n.proc, n.at))
    }

    /// When GPU `g`'s handler can act for process `pi` on work that
    /// arrived `at`: once the handler is free, or after the process's
    /// `svms->lock` is released and the handler's fixed cost paid.
    fn handler_acts_at(&self, g: usize, pi: usize, at: u64) -> u64 {
        let free = at.max(self.sched.handler_free[g]);
        let lock = self.procs[pi].svms_lock_until;
        if lock > free {
            lock + crate::timing::ns(self.hw.timing.handler_fixed_ns)
        } else {
            free
        }
    }

    /// Picks the next ready step, if any. Waves count only when `waves`.
    fn next_work(&mut self, now: u64, waves: bool) -> Option<Work> {
        let mut ready = std::mem::take(&mut self.sched.ready_buf);
        ready.clear();
        // Listed first: in eager order a CPU fault's put follows it at once.
        for (g, gpu) in self.hw.gpus.iter().enumerate() {
            if gpu.held_pages.values().any(|&t| t <= now) {
                ready.push(Work::PagePut(g));
            }
        }
        for g in 0..self.hw.gpus.len() {
            if self.deliverable_at(g).is_some_and(|t| t <= now) {
                ready.push(Work::Deliver(g));
            }
            if self.notice_due(g).is_some_and(|t| t <= now) {
                ready.push(Work::Notify(g));
            }
        }
        for (i, p) in self.procs.iter().enumerate() {
            if p.svm.deferred_due_ns().is_some_and(|d| d <= now) {
                ready.push(Work::Deferred(i));
            }
            if p.svm.restore_due_ns().is_some_and(|d| d <= now) && !self.restores_capped(i) {
                ready.push(Work::Restore(i));
            }
            if p.svm.policy_due_ns().is_some_and(|d| d <= now) {
                ready.push(Work::PolicyTimer(i));
            }
        }
        if waves && self.sched.kready.peek_time().is_some_and(|t| t <= now) {
            ready.push(Work::KWave);
        }
        let pick = match &mut self.sched.interleave {
            _ if ready.is_empty() => None,
            // Kernel work before waves, in the order listed.
            Interleave::Eager => Some(ready[0]),
            Interleave::Seeded { rng, .. } => Some(ready[rng.random_range(0..ready.len())]),
        };
        self.sched.ready_buf = ready;
        pick
    }

    /// Whether work other than kernel waves is ready at `now`.
    fn kernel_work_ready(&self, now: u64) -> bool {
        self.next_page_put().is_some_and(|(_, t)| t <= now)
            || (0..self.hw.gpus.len()).any(|g| {
                self.deliverable_at(g).is_some_and(|t| t <= now)
                    || self.notice_due(g).is_some_and(|t| t <= now)
            })
            || self.procs.iter().any(|p| {
                p.svm.deferred_due_ns().is_some_and(|d| d <= now)
                    || p.svm.restore_due_ns().is_some_and(|d| d <= now)
                    || p.svm.policy_due_ns().is_some_and(|d| d <= now)
            })
    }

    fn do_work(&mut self, work: Work) {
        match work {
            Work::PagePut(g) => self.put_held_pages(g, self.sched.clock_ns),
            Work::Deliver(g) => self.deliver(g),
            Work::Deferred(i) => self.flush_deferred(Pid(i)),
            Work::Restore(i) => self.run_restore(Pid(i)),
            Work::PolicyTimer(i) => {
                let (svm, mut env) = env!(self, Pid(i));
                svm.policy_timer(&mut env);
            }
            Work::Notify(g) => self.serve_notices(g),
            Work::KWave => self.run_kwaves(),
        }
    }

    /// The driver serves GPU `g`'s access-counter notifications (UVM's
    /// access-counter service, in the same bottom half as its faults): the
    /// arrived ones, up to the profile's batch size, for the batch cost,
    /// each after the locks a fault's service waits for. No wave waits on
    /// them. A notification whose service fails is counted and dropped,
    /// as UVM logs and drops it.
    fn serve_notices(&mut self, g: usize) {
        let Some(first) = self.mmu.counters.notices[g].front().copied() else {
            return;
        };
        let gpu = GpuIndex::new(g).expect("at most 64 GPUs");
        let fixed = crate::timing::ns(self.hw.timing.handler_fixed_ns);
        let mut now = first.at.max(self.sched.handler_free[g]);
        let start = now;
        now += crate::timing::ns(self.hw.timing.handler_batch_ns);
        let mut taken = 0;
        while taken < self.hw.timing.fault_batch {
            let Some(n) = self.mmu.counters.notices[g].front().copied() else {
                break;
            };
            if taken > 0 && n.at > now {
                break;
            }
            self.mmu.counters.notices[g].pop_front();
            taken += 1;
            self.hw.counters.access_counter_notices += 1;
            let pi = n.proc;
            now = self.procs[pi].mmap_lock.read_from(now);
            let svms_free = self.procs[pi].svms_lock_until;
            if svms_free > now {
                self.hw.counters.svms_lock_wait_ns += svms_free - now;
                now = svms_free;
            }
            let (range, at) = self.migrate_lock_from(pi, n.pages.start(), now);
            let (svm, mut env) = env!(self, Pid(pi));
            env.now = at + fixed;
            let served = svm.access_counter_notify(&mut env, gpu, n.pages);
            let end = env.now;
            self.migrate_lock_until(pi, range, end);
            let p = &mut self.procs[pi];
            p.mmap_lock.read_done(end);
            p.svms_lock_until = end;
            if served.is_err() {
                self.hw.counters.access_counter_failures += 1;
            }
            now = end;
        }
        self.hw.counters.handler_busy_ns += now - start;
        self.sched.handler_free[g] = now;
    }

    /// Runs the kernel waves due at the earliest time back to back, as
    /// picking them one by one would, until other work becomes ready.
    /// (The simulator's inner loop: kept apart from the rest of the
    /// scheduler's work so that it compiles on its own.)
    #[inline(never)]
    fn run_kwaves(&mut self) {
        let Some(t) = self.sched.kready.peek_time() else {
            return;
        };
        while self.sched.kready.peek_time() == Some(t) {
            let popped = match &mut self.sched.interleave {
                // The oldest of the earliest: FIFO.
                Interleave::Eager => self.sched.kready.pop(|_| 0),
                Interleave::Seeded { rng, .. } => self.sched.kready.pop(|n| rng.random_range(0..n)),
            };
            let Some((at, i)) = popped else {
                break;
            };
            // Only a fault raised by this step can make other work ready
            // at this same time.
            if self.step_kwave(i, at) && self.kernel_work_ready(self.sched.clock_ns) {
                break;
            }
        }
    }

    /// Runs process `pid`'s deferred work (`svm_range_deferred_list_work`,
    /// or its flush by `svm_range_list_lock_and_flush_work`). Since the
    /// checkpoint rule it does not wait for the fault rings: stragglers
    /// are dropped whenever they arrive.
    pub(super) fn flush_deferred(&mut self, pid: Pid) {
        if !self.procs[pid.0].svm.deferred_pending() {
            return;
        }
        // It takes the mmap lock for writing.
        let p = &self.procs[pid.0];
        let start = p.mmap_lock.write_from(self.sched.clock_ns);
        let (svm, mut env) = env!(self, pid);
        env.now = start;
        svm.deferred_list_work(&mut env);
        let end = env.now;
        self.procs[pid.0].mmap_lock.write_done(end);
    }

    /// Whether process `i`'s restore work has failed
    /// [`MAX_RETRIES_PER_ADVANCE`] times in this run: further retries would
    /// fail the same way.
    fn restores_capped(&self, i: usize) -> bool {
        self.sched.restore_failures.get(i).copied().unwrap_or(0) >= MAX_RETRIES_PER_ADVANCE
    }

    /// Runs a due restore work, counting failures against the process's
    /// retry cap for the current run. Once capped, its restore is left due
    /// 1 ms after the run's horizon and does not run again in this run.
    fn run_restore(&mut self, pid: Pid) {
        self.flush_deferred(pid);
        // Due at the clock; it takes the mmap lock for writing.
        let p = &self.procs[pid.0];
        let start = p.mmap_lock.write_from(self.sched.clock_ns);
        let (svm, mut env) = env!(self, pid);
        env.now = start;
        let ok = svm.restore_work(&mut env).is_ok();
        let end = env.now;
        self.procs[pid.0].mmap_lock.write_done(end);
        if ok {
            return;
        }
        if self.sched.restore_failures.len() < self.procs.len() {
            self.sched.restore_failures.resize(self.procs.len(), 0);
        }
        self.sched.restore_failures[pid.0] += 1;
        if self.restores_capped(pid.0) {
            // A wait for a kernel has no horizon (u64::MAX): the restore is
            // then left due after the clock, never at the end of time,
            // which the next run's clock would jump to and overflow.
            let horizon = match self.sched.restore_horizon {
                u64::MAX => self.sched.clock_ns,
                h => h.max(self.sched.clock_ns),
            };
            let later = horizon.saturating_add(self.procs[pid.0].svm.config().restore_delay_ns);
            self.procs[pid.0].svm.postpone_restore(later);
        }
        // It rescheduled itself; its queues stay stopped. Waves of the
        // process would wait forever: report why instead.
        let Some(why) = self.procs[pid.0].svm.restore_error().cloned() else {
            return;
        };
        let msg =
            format!("queues stay evicted: the restore work failed ({why}) and rescheduled itself");
        self.kill_stopped_kernels(pid, &msg, why.errno());
    }

    /// The GPU's fault handler takes a batch of faults from ring `g` (up
    /// to the profile's batch size, those that have arrived), hands each
    /// to the engine, and wakes the waves waiting on them when it is done
    /// with that fault.
    ///
    /// Time: the batch starts when the handler is free and pays the batch
    /// cost; each fault pays the fixed and per-page handler costs plus
    /// whatever its migration and mapping charge, after waiting for the
    /// process's mmap lock (held for writing by munmap and the workers) and
    /// for its range's migrate lock (held by a fault of another GPU).
    fn deliver(&mut self, g: usize) {
        self.flush_ring(g);
        let Some(first) = self.mmu.rings[g].head().copied() else {
            return;
        };
        let t = self.hw.timing.clone();
        // It starts when it could have: the fault had arrived and the
        // handler was free (events run in time order, so that is not after
        // the clock).
        let mut now = first.at.max(self.sched.handler_free[g]);
        let batch_start = now;
        now += crate::timing::ns(t.handler_batch_ns);
        if self.procs[first.proc_index].svm.fault_batched() {
            now = self.deliver_batch(g, now);
        } else {
            let mut taken = 0;
            while taken < t.fault_batch {
                let Some(e) = self.mmu.rings[g].head().copied() else {
                    break;
                };
                // Later faults join the batch only if they have arrived by then.
                if taken > 0 && e.at > now {
                    break;
                }
                self.mmu.rings[g].pop();
                taken += 1;
                now = self.serve_fault(g, &e, &[], now);
            }
        }
        self.hw.counters.handler_busy_ns += now - batch_start;
        self.sched.handler_free[g] = now;
    }

    /// When process `pi` gets the migrate lock of the range holding `page`
    /// (`prange->migrate_mutex`), asking at `now`: the wait is counted.
    /// Returns the range (by its start) and the time.
    pub(super) fn migrate_lock_from(
        &mut self,
        pi: usize,
        page: PageNum,
        now: u64,
    ) -> (Option<PageNum>, u64) {
        let range = self.procs[pi].svm.ranges().find(page).map(|r| r.start());
        let held = range.and_then(|r| self.sched.migrate_lock.get(&(pi, r)).copied());
        match held {
            Some(t) if t > now => {
                self.hw.counters.migrate_lock_wait_ns += t - now;
                (range, t)
            }
            _ => (range, now),
        }
    }

    /// The migrate lock [`Machine::migrate_lock_from`] gave is held until `end`.
    pub(super) fn migrate_lock_until(&mut self, pi: usize, range: Option<PageNum>, end: u64) {
        if let Some(r) = range {
            self.sched.migrate_lock.insert((pi, r), end);
        }
    }

    /// Serves fault `e` of ring `g` from `now` (with the faults of
    /// `coalesced` folded into it) and wakes the waves waiting on all of
    /// them; returns when the handler is done with it.
    fn serve_fault(
        &mut self,
        g: usize,
        e: &RingEntry,
        coalesced: &[RingEntry],
        mut now: u64,
    ) -> u64 {
        let gpu = GpuIndex::new(g).expect("at most 64 GPUs");
        let fixed = crate::timing::ns(self.hw.timing.handler_fixed_ns);
        let delivery = crate::timing::ns(self.hw.timing.fault_delivery_ns);
        let pi = e.proc_index;
        // amdgpu's IH timestamp filter: a fault raised before its range was
        // last validated is stale (the validation already answered it); it
        // is dropped before kfd's handler runs, and the wave retries.
        if self.config.ih_stale_filter
            && self.procs[pi]
                .svm
                .ranges()
                .find(e.page)
                .and_then(|r| r.validate_timestamp)
                .is_some_and(|v| e.ts <= v)
        {
            self.hw.counters.faults_ih_filtered += 1;
            let dropped = Ok(FaultOutcome::Dropped(DropReason::Duplicate));
            self.wake_after(g, e, now, &dropped);
            for c in coalesced {
                self.wake_after(g, c, now, &dropped);
            }
            return now;
        }
        // The mmap read lock waits for writers; `svms->lock`, which
        // the handler holds from the lookup to its last PTE, for a
        // fault of the process on another GPU; the range's migrate
        // lock for anyone else on the range.
        let taken = now;
        now = self.procs[pi].mmap_lock.read_from(now);
        let svms_free = self.procs[pi].svms_lock_until;
        if svms_free > now {
            self.hw.counters.svms_lock_wait_ns += svms_free - now;
            now = svms_free;
        }
        let (range, now) = self.migrate_lock_from(pi, e.page, now);
        let locked = now;
        // The per-page work is charged as it happens (copies, PTEs),
        // so the validate timestamp the engine records is when the
        // mapping really was done.
        let (svm, mut env) = env!(self, Pid(pi));
        env.now = now + fixed;
        let pages: Vec<PageNum> = coalesced.iter().map(|c| c.page).collect();
        let outcome = svm.restore_pages_coalesced(&mut env, gpu, e.page, e.access, e.ts, &pages);
        let end = env.now;
        // (The faults coalesced into this one share its outcome.)
        let (c, n) = (&mut self.hw.counters, 1 + coalesced.len() as u64);
        match &outcome {
            Ok(FaultOutcome::Resolved { .. }) => c.faults_served += n,
            Ok(FaultOutcome::Dropped(_)) => c.faults_dropped += n,
            Err(_) => c.faults_refused += n,
        }
        self.migrate_lock_until(pi, range, end);
        let p = &mut self.procs[pi];
        p.mmap_lock.read_done(end);
        p.svms_lock_until = end;
        if matches!(outcome, Ok(FaultOutcome::Resolved { .. })) {
            let raised = e.at.saturating_sub(delivery);
            self.rec.fault_latencies.push(end.saturating_sub(raised));
            // Its phases: delivered, queued for the handler, waiting for
            // locks; the rest (the handler's work) is what remains.
            let c = &mut self.hw.counters;
            c.served_latency_ns += end.saturating_sub(raised);
            c.served_delivery_ns += e.at - raised;
            c.served_queued_ns += taken.saturating_sub(e.at);
            c.served_lock_ns += locked.saturating_sub(taken);
        }
        self.wake_after(g, e, end, &outcome);
        for c in coalesced {
            self.wake_after(g, c, end, &outcome);
        }
        end
    }

    /// A batched policy's service of ring `g` from `now` (UVM reads its
    /// fault buffer so, `uvm_parent_gpu_service_replayable_faults`): the
    /// arrived faults, up to the batch size, are taken at once; each
    /// process's are served in the order its policy gives, coalesced as it
    /// says. Returns when the batch is done.
    ///
    /// When the GPU replays is the policy's ([`Replay`], asked of the
    /// first fault's process): after each service (`Block`); after the
    /// batch (`Batch`); after the batch, with the buffer flushed
    /// (`BatchFlush`, UVM's default: the faults it drops unserved retry
    /// with the replay); or once, after up to [`MAX_BATCHES_PER_SERVICE`]
    /// batches back to back (`Once`), each batch but the first paying the
    /// batch cost again, and fewer when [`MAX_THROTTLED_PER_SERVICE`] of
    /// them had a throttled fault.
    ///
    /// The flush goes as far as the PUT pointer the driver last read: the
    /// one read when the batch was fetched (`CACHED_PUT`: faults beyond
    /// the batch size), or, when more than `uvm_replay_update_put_ratio`
    /// ([`svm_core::policy::REPLAY_UPDATE_PUT_RATIO`]) percent of the batch were duplicates, one read again at the flush
    /// (`UPDATE_PUT`: what arrived during the service too).
    fn deliver_batch(&mut self, g: usize, mut now: u64) -> u64 {
        let Some(first) = self.mmu.rings[g].head().copied() else {
            return now;
        };
        let replay = self.procs[first.proc_index].svm.fault_replay();
        if replay == Replay::Block {
            return self.serve_one_batch(g, now).0;
        }
        self.sched.replay_wakes = Some(Vec::new());
        let batches = if replay == Replay::Once {
            MAX_BATCHES_PER_SERVICE
        } else {
            1
        };
        let mut throttled = 0;
        let mut fetched = Fetched::default();
        for b in 0..batches {
            if b > 0 {
                match self.mmu.rings[g].head() {
                    Some(e) if e.at <= now => {
                        now += crate::timing::ns(self.hw.timing.handler_batch_ns);
                    }
                    _ => break,
                }
            }
            let seen = self.sched.replay_wakes.as_ref().map_or(0, Vec::len);
            (now, fetched) = self.serve_one_batch(g, now);
            let was_throttled = self.sched.replay_wakes.as_ref().is_some_and(|w| {
                w[seen..].iter().any(|(_, _, o)| {
                    matches!(o, Ok(FaultOutcome::Dropped(DropReason::Throttled { .. })))
                })
            });
            if was_throttled {
                throttled += 1;
                if throttled >= MAX_THROTTLED_PER_SERVICE {
                    if b + 1 < batches {
                        self.hw.counters.services_cut_by_throttles += 1;
                    }
                    break;
                }
            }
        }
        // The replay: every handled fault's waves retry now.
        for (g, e, outcome) in self.sched.replay_wakes.take().unwrap_or_default() {
            self.wake_after(g, &e, now, &outcome);
        }
        if replay == Replay::BatchFlush {
            // The flush drops what reached the ring by the PUT it reads.
            // The waves that fault during the service have not run yet
            // (steps run in time order, and this one ran at its start), so
            // it runs at the next delivery, due at the replay at the latest.
            let ratio = usize::from(self.config.uvm_replay_update_put_ratio);
            let update_put = fetched.duplicates * 100 > fetched.taken * ratio;
            let flush = if update_put {
                self.hw.counters.flushes_update_put += 1;
                Flush::Until(now)
            } else {
                Flush::Cached {
                    put: fetched.put,
                    replay: now,
                }
            };
            self.sched.flush_until[g] = Some(flush);
        }
        now
    }

    /// A pending batch-flush of ring `g`: the faults that reached it by
    /// the PUT pointer the flush read are dropped unserved, and their
    /// waves retry at once and fault again.
    fn flush_ring(&mut self, g: usize) {
        let Some(flush) = self.sched.flush_until[g].take() else {
            return;
        };
        while let Some(e) = self.mmu.rings[g].head().copied() {
            let stop = match flush {
                Flush::Until(until) => e.at > until,
                Flush::Cached { put: (ts, at), .. } => e.ts > ts || e.at > at,
            };
            if stop {
                break;
            }
            self.mmu.rings[g].pop();
            self.hw.counters.faults_flushed += 1;
            let (Flush::Until(replay) | Flush::Cached { replay, .. }) = flush;
            self.wake_kwaves(g, e.proc_index, e.page, replay, Woken::Served);
        }
    }

    /// One batch: the arrived faults, up to the batch size, served as the
    /// policy orders and coalesces them. Returns when it is done, and what
    /// was fetched.
    fn serve_one_batch(&mut self, g: usize, mut now: u64) -> (u64, Fetched) {
        let gpu = GpuIndex::new(g).expect("at most 64 GPUs");
        let mut batch: Vec<RingEntry> = Vec::new();
        while batch.len() < usize::try_from(self.hw.timing.fault_batch.max(1)).unwrap_or(usize::MAX)
        {
            match self.mmu.rings[g].head().copied() {
                Some(e) if batch.is_empty() || e.at <= now => {
                    self.mmu.rings[g].pop();
                    batch.push(e);
                }
                _ => break,
            }
        }
        // Duplicates: faults of a page (and process) another fault of the
        // batch already names (`num_duplicate_faults`, counted as the
        // batch is preprocessed).
        let mut pages: Vec<(usize, u64)> =
            batch.iter().map(|e| (e.proc_index, e.page.raw())).collect();
        pages.sort_unstable();
        pages.dedup();
        // The PUT pointer read at the fetch covers what had been raised by
        // then (the waves that fault during the service run after this
        // step) and delivered.
        let fetched = Fetched {
            taken: batch.len(),
            duplicates: batch.len() - pages.len(),
            put: (self.mmu.rings[g].newest_ts().unwrap_or(0), now),
        };
        // Each process's faults, in the order its first fault came.
        let mut procs: Vec<usize> = Vec::new();
        for e in &batch {
            if !procs.contains(&e.proc_index) {
                procs.push(e.proc_index);
            }
        }
        for pi in procs {
            let mine: Vec<RingEntry> = batch
                .iter()
                .filter(|e| e.proc_index == pi)
                .copied()
                .collect();
            let faults: Vec<BatchFault> = mine
                .iter()
                .map(|e| BatchFault {
                    gpu,
                    page: e.page,
                    write: e.access.writes(),
                })
                .collect();
            for step in self.procs[pi].svm.order_batch(&faults) {
                let with: Vec<RingEntry> = step.with.iter().map(|&i| mine[i]).collect();
                now = self.serve_fault(g, &mine[step.serve], &with, now);
            }
        }
        (now, fetched)
    }

    /// Wakes the kernel waves a handled fault was for.
    fn wake_after(
        &mut self,
        g: usize,
        e: &RingEntry,
        end: u64,
        outcome: &svm_core::Result<FaultOutcome>,
    ) {
        if let Some(later) = &mut self.sched.replay_wakes {
            later.push((g, *e, outcome.clone()));
            return;
        }
        let (wake, woken) = match outcome {
            Ok(FaultOutcome::Resolved { .. }) => (end, Woken::Served),
            Ok(FaultOutcome::Dropped(DropReason::Throttled { after_ns })) => (
                end.saturating_add(self.config.gpu_retry_delay_ns.max(*after_ns)),
                Woken::Dropped,
            ),
            Ok(FaultOutcome::Dropped(_)) => (
                end.saturating_add(self.config.gpu_retry_delay_ns),
                Woken::Dropped,
            ),
            Err(err) => (
                end,
                Woken::Fatal {
                    why: err.to_string(),
                    write: e.access.writes(),
                    errno: err.errno(),
                },
            ),
        };
        self.wake_kwaves(g, e.proc_index, e.page, wake, woken);
    }

    /// Drops the ring entries of a process that exits
    /// (`svm_range_list_fini` drains its faults first); its waves die with
    /// its kernels (`Machine::cancel_kernels`).
    pub(super) fn cancel_process_work(&mut self, pid: Pid) {
        for r in &mut self.mmu.rings {
            r.forget_process(pid.0);
        }
    }
}

/// What one batch fetched from a fault ring: how many faults, how many
/// of them were duplicates of another in the batch, and where the PUT
/// pointer read at the fetch stood: the newest fault raised by then (its
/// IH timestamp) and the time (faults delivered by it); what the batch
/// left behind below it is past the batch size.
#[derive(Clone, Copy, Debug, Default)]
struct Fetched {
    taken: usize,
    duplicates: usize,
    put: (u64, u64),
}

/// How far a batch-flush goes (`fault_buffer_flush_locked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flush {
    /// `UPDATE_PUT`: the PUT pointer read again at the flush: every fault
    /// that reached the ring by the replay, at this time.
    Until(u64),
    /// `CACHED_PUT`: the PUT pointer read at the fetch ([`Fetched::put`]):
    /// the faults the batch left in the ring then; replayed at `replay`.
    Cached { put: (u64, u64), replay: u64 },
}

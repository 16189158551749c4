//! svm-workloads: kernels with CPU references, run on a simulated machine.
//!
//! # Overview
//! A [`Workload`] allocates its buffers in one process, fills them from the
//! CPU, registers them with SVM (or not: the heap workload leaves its memory
//! unregistered), launches kernels (grids of waves, see
//! `svm_sim::machine::WaveCtx`) and, in real mode, reads the results back
//! and compares them with the same computation done on the CPU. Every
//! number is a `u32` with wrapping arithmetic, so the comparison is exact.
//!
//! [`run`] wraps one workload with what a report needs: the kernels' own
//! statistics, the engine's fault and migration counts, the simulated time
//! from the first launch to the last wave, the time to the first result,
//! and the latency of every fault served.

#![forbid(unsafe_code)]

use std::rc::Rc;

use serde::Serialize;
use svm_core::addr::CpuVa;
use svm_core::uapi::{SVM_OP_SET_ATTR, SvmArgs, SvmAttribute, attr_type};
use svm_sim::machine::{AccessError, CpuIo, KernelFn, KernelStats, Machine, Pid};
use svm_sim::mm::{Backing, Mark, Prot};

pub mod experiments;
pub mod import;
mod kernels;
pub mod micro;
pub mod trace;

pub use kernels::ALL;

/// Sizes and repetitions of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Params {
    /// The main data size in bytes (each workload says how it reads it).
    pub size: u64,
    /// Iterations (kernel launches, time steps, rounds).
    pub iters: u32,
    /// Seed of the workload's own random choices (graphs, indices).
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            size: 4 << 20,
            iters: 2,
            seed: 1,
        }
    }
}

/// Why a workload could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// A GPU access the driver could not recover (the kernel died).
    #[error("{0}")]
    Access(#[from] AccessError),
    /// A syscall or ioctl failed.
    #[error("{what} failed: {why}")]
    Setup {
        /// Which call.
        what: &'static str,
        /// The error.
        why: String,
    },
    /// The parameters do not fit the workload.
    #[error("bad parameters for {workload}: {why}")]
    Params {
        /// The workload.
        workload: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// A workload.
pub trait Workload {
    /// Its name on the command line.
    fn name(&self) -> &'static str;
    /// One line on what it does and which path it exercises.
    fn describe(&self) -> &'static str;
    /// GPUs it needs.
    fn gpus(&self) -> usize {
        1
    }
    /// Bytes of memory it touches for `p` (what oversubscription scales).
    fn footprint(&self, p: &Params) -> u64;
    /// Whether it runs in phantom mode: its set-up and check keep no
    /// host data the size of its footprint (its words come from a
    /// formula), so a footprint far beyond the host's memory fits.
    fn phantom_ready(&self) -> bool {
        false
    }
    /// Runs it; returns whether the results matched the CPU reference.
    ///
    /// # Errors
    /// A kernel that died, or a setup call that failed.
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError>;
}

/// A workload by name.
pub fn by_name(name: &str) -> Option<&'static (dyn Workload + Sync)> {
    ALL.iter().copied().find(|w| w.name() == name)
}

/// What one run did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The workload.
    pub workload: String,
    /// Its parameters.
    pub params: Params,
    /// Results matched the CPU reference.
    pub verified: bool,
    /// Every kernel, in launch order.
    pub kernels: Vec<KernelStats>,
    /// Simulated ns from the first launch to the end of the last kernel.
    pub kernel_ns: u64,
    /// Simulated ns from the first launch to its first wave's end.
    pub first_result_ns: u64,
    /// GPU faults the engine saw (all GPUs; duplicates included).
    pub faults: u64,
    /// Bytes migrated to and from VRAM.
    pub migrated_bytes: u64,
    /// Latency of each fault served, raised to handled, in ns: p50 and p99.
    pub fault_p50_ns: u64,
    /// See `fault_p50_ns`.
    pub fault_p99_ns: u64,
    /// The simulated clock at the end.
    pub end_ns: u64,
    /// Simulated ns faults spent waiting for their process's
    /// `svms->lock`, held by another GPU's fault (where a multi-GPU run
    /// loses its time), and for a range's migrate lock.
    pub svms_lock_wait_ns: u64,
    /// See `svms_lock_wait_ns`.
    pub migrate_lock_wait_ns: u64,
    /// Simulated ns the fault handlers were busy.
    pub handler_busy_ns: u64,
    /// Simulated ns the copy engines were busy, and waited for one another.
    pub copy_busy_ns: u64,
    /// See `copy_busy_ns`.
    pub copy_wait_ns: u64,
}

/// A workload's handle on the machine: one process and its GPUs.
#[derive(Debug)]
pub struct Run<'m> {
    /// The machine.
    pub m: &'m mut Machine,
    /// The process.
    pub pid: Pid,
    /// gpu_ids it may use.
    pub gpu_ids: Vec<u32>,
    /// A migration granularity (log2 pages) every SET_ATTR adds, unless
    /// the call sets one itself: how a run tries a granularity on a
    /// workload that does not choose one.
    pub granularity: Option<u32>,
    /// Every SET_ATTR that grants a GPU ACCESS also prefetches to it
    /// (PREFETCH_LOC), unless the call sets a prefetch location itself:
    /// how a run tries eager placement on a workload that relies on faults.
    pub prefetch: bool,
    kernels: Vec<KernelStats>,
}

impl<'m> Run<'m> {
    /// A run for process `pid` on every GPU of the machine.
    pub fn new(m: &'m mut Machine, pid: Pid) -> Self {
        let gpu_ids = m.topology().gpus().iter().map(|g| g.id.raw()).collect();
        Self {
            m,
            pid,
            gpu_ids,
            granularity: None,
            prefetch: false,
            kernels: Vec::new(),
        }
    }

    /// Anonymous memory of `size` bytes, registered for `gpus` (by index)
    /// with the default attributes otherwise.
    ///
    /// # Errors
    /// mmap or SET_ATTR failing.
    pub fn alloc(&mut self, size: u64, gpus: &[usize]) -> Result<u64, WorkloadError> {
        // Whole pages, as mmap gives them and SET_ATTR wants them.
        let size = size.next_multiple_of(4096);
        let a = self.alloc_unregistered(size, Mark::None)?;
        if !gpus.is_empty() {
            let attrs = gpus
                .iter()
                .map(|&g| SvmAttribute::new(attr_type::ACCESS, self.gpu_ids[g]))
                .collect();
            self.set_attr(a, size, attrs)?;
        }
        Ok(a)
    }

    /// Anonymous memory SVM was never told of.
    ///
    /// # Errors
    /// mmap failing.
    pub fn alloc_unregistered(&mut self, size: u64, mark: Mark) -> Result<u64, WorkloadError> {
        let r = self
            .m
            .mmap(self.pid, None, size, Prot::RW, Backing::Anon, mark)
            .map_err(|e| WorkloadError::Setup {
                what: "mmap",
                why: e.to_string(),
            })?;
        Ok(r.start_va().raw())
    }

    /// SET_ATTR with raw attributes.
    ///
    /// # Errors
    /// The ioctl failing.
    pub fn set_attr(
        &mut self,
        addr: u64,
        size: u64,
        mut attrs: Vec<SvmAttribute>,
    ) -> Result<(), WorkloadError> {
        if let Some(g) = self.granularity
            && !attrs.iter().any(|a| a.ty == attr_type::GRANULARITY)
        {
            attrs.push(SvmAttribute::new(attr_type::GRANULARITY, g));
        }
        if self.prefetch
            && !attrs.iter().any(|a| a.ty == attr_type::PREFETCH_LOC)
            && let Some(gpu) = attrs
                .iter()
                .find(|a| a.ty == attr_type::ACCESS)
                .map(|a| a.value)
        {
            attrs.push(SvmAttribute::new(attr_type::PREFETCH_LOC, gpu));
        }
        let mut a = SvmArgs {
            start_addr: addr,
            size,
            op: SVM_OP_SET_ATTR,
            attrs,
        };
        self.m
            .svm_ioctl(self.pid, &mut a)
            .map_err(|e| WorkloadError::Setup {
                what: "SET_ATTR",
                why: e.to_string(),
            })
    }

    /// Whether the machine keeps no bytes (phantom mode): then
    /// [`Run::check_u32s`] still makes its access but checks nothing.
    pub fn phantom(&self) -> bool {
        self.m.is_phantom()
    }

    /// The CPU writes `v` at `addr`.
    ///
    /// # Errors
    /// A CPU fault the process would get a signal for.
    pub fn write_u32s(&mut self, addr: u64, v: &[u32]) -> Result<(), WorkloadError> {
        self.write_u32s_with(addr, v.len(), |i| v[i as usize])
    }

    /// The CPU writes `n` words at `addr`, word `i` being `f(i)`: one
    /// access, its bytes made a page at a time (no buffer of its size).
    ///
    /// # Errors
    /// A CPU fault the process would get a signal for.
    pub fn write_u32s_with(
        &mut self,
        addr: u64,
        n: usize,
        f: impl Fn(u32) -> u32,
    ) -> Result<(), WorkloadError> {
        let len = word_span(addr, n)?;
        let mut fill = |off: u64, part: &mut [u8]| {
            // (`word_span` bounds the words below 2^32.)
            let first = u32::try_from(off / 4).unwrap_or(u32::MAX);
            for (w, i) in part.chunks_exact_mut(4).zip(first..) {
                w.copy_from_slice(&f(i).to_le_bytes());
            }
        };
        self.m
            .cpu_io(self.pid, CpuVa::new(addr), len, CpuIo::Write(&mut fill))?;
        Ok(())
    }

    /// The CPU writes `word` to each of `n` words at `addr`, as a memset:
    /// the pages it covers whole hold no bytes of their own until they
    /// are written again (`svm_sim::pages`).
    ///
    /// # Errors
    /// A CPU fault the process would get a signal for.
    pub fn fill_u32s(&mut self, addr: u64, n: usize, word: u32) -> Result<(), WorkloadError> {
        let len = word_span(addr, n)?;
        self.m.cpu_io(
            self.pid,
            CpuVa::new(addr),
            len,
            CpuIo::Repeat(&mut |_| word),
        )?;
        Ok(())
    }

    /// The CPU reads `n` words at `addr`.
    ///
    /// # Errors
    /// A CPU fault the process would get a signal for.
    pub fn read_u32s(&mut self, addr: u64, n: usize) -> Result<Vec<u32>, WorkloadError> {
        let len = word_span(addr, n)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| WorkloadError::Setup {
            what: "read",
            why: format!("no host memory for {n} words"),
        })?;
        let mut see = |_: u64, part: &[u8]| out.extend(words(part));
        self.m
            .cpu_io(self.pid, CpuVa::new(addr), len, CpuIo::Read(&mut see))?;
        Ok(out)
    }

    /// The CPU reads `n` words at `addr` and says whether word `i` is
    /// `want(i)` for every `i`: one access, its bytes seen where they lie
    /// (no buffer of its size). `want` is asked for words in increasing
    /// order (once one differs, some may be skipped), so a reference may
    /// make its words as it goes.
    ///
    /// # Errors
    /// A CPU fault the process would get a signal for.
    pub fn check_u32s(
        &mut self,
        addr: u64,
        n: usize,
        mut want: impl FnMut(u32) -> u32,
    ) -> Result<bool, WorkloadError> {
        let len = word_span(addr, n)?;
        if self.phantom() {
            // The access still happens (pages in VRAM fault back); there
            // are no bytes to compare.
            self.m
                .cpu_io(self.pid, CpuVa::new(addr), len, CpuIo::Read(&mut |_, _| {}))?;
            return Ok(true);
        }
        let mut same = true;
        let mut see = |off: u64, part: &[u8]| {
            let first = u32::try_from(off / 4).unwrap_or(u32::MAX);
            same &= part
                .chunks_exact(4)
                .zip(first..)
                .all(|(w, i)| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) == want(i));
        };
        self.m
            .cpu_io(self.pid, CpuVa::new(addr), len, CpuIo::Read(&mut see))?;
        Ok(same)
    }

    /// Runs kernels on several GPUs at once, `(gpu index, waves, code)`
    /// each, and waits for all of them.
    ///
    /// # Errors
    /// The first kernel that died.
    pub fn launch_all(
        &mut self,
        launches: Vec<(usize, u32, KernelFn)>,
    ) -> Result<(), WorkloadError> {
        let mut ids = Vec::new();
        for (g, n, f) in launches {
            ids.push(self.m.launch_kernel(self.pid, self.gpu_ids[g], n, f)?);
        }
        let mut first_err = None;
        for id in ids {
            match self.m.wait_kernel(id) {
                Ok(st) => self.kernels.push(st),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Runs `n` CPU threads of `f` (in the GPUs' timeline) and waits for
    /// them.
    ///
    /// # Errors
    /// A thread got a signal.
    pub fn launch_cpu(&mut self, n: u32, f: KernelFn) -> Result<(), WorkloadError> {
        let id = self.m.launch_cpu(self.pid, n, f)?;
        let st = self.m.wait_kernel(id)?;
        self.kernels.push(st);
        Ok(())
    }

    /// Runs one kernel of `n` waves on GPU `g` and waits for it.
    ///
    /// # Errors
    /// The kernel died.
    pub fn launch(&mut self, g: usize, n: u32, f: KernelFn) -> Result<(), WorkloadError> {
        self.launch_all(vec![(g, n, f)])
    }
}

/// The bytes of `n` words at `addr`, which must be word-aligned (so that
/// every page's part of the access holds whole words).
fn word_span(addr: u64, n: usize) -> Result<u64, WorkloadError> {
    if addr % 4 != 0 || u32::try_from(n).is_err() {
        return Err(WorkloadError::Setup {
            what: "CPU access",
            why: format!("{n} words at {addr:#x}: words are 4-aligned, at most 2^32 of them"),
        });
    }
    Ok(n as u64 * 4)
}

/// Little-endian words of a byte buffer.
pub fn words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect()
}

/// Makes a [`KernelFn`] from an async closure body.
pub fn kernel<F, Fut>(f: F) -> KernelFn
where
    F: Fn(u32, svm_sim::machine::WaveCtx) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    Rc::new(move |w, ctx| Box::pin(f(w, ctx)))
}

/// A machine of the first `gpus` GPUs of `profile` (each with
/// `vram_bytes` of VRAM if given), boot XNACK on, priced by the profile.
///
/// # Errors
/// No GPU asked for, or more than the profile has.
pub fn machine(
    profile: &svm_sim::timing::Profile,
    gpus: usize,
    vram_bytes: Option<u64>,
) -> Result<Machine, WorkloadError> {
    machine_xnack(profile, gpus, vram_bytes, true)
}

/// [`machine`], booted with XNACK (retry faults) on or off.
///
/// # Errors
/// See [`machine`].
pub fn machine_xnack(
    profile: &svm_sim::timing::Profile,
    gpus: usize,
    vram_bytes: Option<u64>,
    xnack: bool,
) -> Result<Machine, WorkloadError> {
    let mut list = profile.gpus();
    if gpus == 0 || gpus > list.len() {
        return Err(WorkloadError::Setup {
            what: "machine",
            why: format!("{gpus} GPUs asked of a {}-GPU profile", list.len()),
        });
    }
    list.truncate(gpus);
    for g in &mut list {
        if let Some(v) = vram_bytes {
            g.vram_bytes = v;
        }
    }
    let footprint: u64 = list.iter().map(|g| g.vram_bytes).sum();
    let topo = svm_core::topology::Topology::new(list).map_err(|e| WorkloadError::Setup {
        what: "topology",
        why: e.to_string(),
    })?;
    let mut m = Machine::new(
        topo,
        xnack,
        svm_sim::machine::MemLimit::for_sysmem(footprint.max(8 << 30)),
    );
    m.apply_profile(profile);
    Ok(m)
}

/// Oversubscription levels the workloads are run at: the footprint as a
/// share of VRAM.
pub const OVERSUBSCRIPTION: [f64; 3] = [1.10, 1.25, 2.00];

/// A machine of `profile`'s GPUs (as many as `w` needs) whose VRAM each
/// holds `1 / factor` of `w`'s footprint for `p`, rounded to whole 2 MiB:
/// `factor` 1.25 is a footprint of 125% of VRAM.
///
/// # Errors
/// A factor that is not a finite number above 0.
pub fn oversubscribed_machine(
    profile: &svm_sim::timing::Profile,
    w: &dyn Workload,
    p: &Params,
    factor: f64,
) -> Result<Machine, WorkloadError> {
    let vram = oversubscribed_vram(w, p, factor)?;
    machine(profile, w.gpus().max(1), Some(vram))
}

/// The VRAM per GPU of [`oversubscribed_machine`]: `1 / factor` of `w`'s
/// footprint for `p`, in whole 2 MiB (at least one).
///
/// # Errors
/// A factor that is not a finite number above 0.
pub fn oversubscribed_vram(
    w: &dyn Workload,
    p: &Params,
    factor: f64,
) -> Result<u64, WorkloadError> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(WorkloadError::Params {
            workload: w.name(),
            why: format!("oversubscription {factor} is not a positive number"),
        });
    }
    let unit = 2u64 << 20;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let blocks = (w.footprint(p) as f64 / factor / unit as f64).floor() as u64;
    Ok(blocks.max(1) * unit)
}

/// The value at quantile `q` (0 to 1, nearest rank) of the sorted `v`;
/// 0 when `v` is empty.
pub fn percentile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// GPU faults process `pid` has seen, over all GPUs (duplicates included).
pub fn faults(m: &Machine, pid: Pid) -> u64 {
    m.process(pid)
        .svm
        .stats()
        .iter()
        .map(|(_, s)| s.faults)
        .sum()
}

/// Runs `w` as process `pid` on `m` and reports what it did.
///
/// # Errors
/// See [`Workload::run`].
pub fn run(
    m: &mut Machine,
    pid: Pid,
    w: &dyn Workload,
    p: &Params,
) -> Result<Report, WorkloadError> {
    run_with(m, pid, w, p, None)
}

/// [`run`] with every SET_ATTR given `granularity` (log2 pages) unless
/// the workload sets its own.
///
/// # Errors
/// See [`Workload::run`].
pub fn run_with(
    m: &mut Machine,
    pid: Pid,
    w: &dyn Workload,
    p: &Params,
    granularity: Option<u32>,
) -> Result<Report, WorkloadError> {
    run_opts(m, pid, w, p, granularity, false)
}

/// [`run_with`], and with `prefetch` every SET_ATTR that grants ACCESS
/// prefetches to that GPU (see [`Run::prefetch`]).
///
/// # Errors
/// See [`Workload::run`].
pub fn run_opts(
    m: &mut Machine,
    pid: Pid,
    w: &dyn Workload,
    p: &Params,
    granularity: Option<u32>,
    prefetch: bool,
) -> Result<Report, WorkloadError> {
    if m.topology().gpus().len() < w.gpus() {
        return Err(WorkloadError::Params {
            workload: w.name(),
            why: format!(
                "needs {} GPUs, the machine has {}",
                w.gpus(),
                m.topology().gpus().len()
            ),
        });
    }
    let before = m.counters();
    let lat_before = m.fault_latencies().len();
    let mut r = Run::new(m, pid);
    r.granularity = granularity;
    r.prefetch = prefetch;
    let verified = w.run(&mut r, p)?;
    let kernels = std::mem::take(&mut r.kernels);
    let m = r.m;
    let c = m.counters();
    let faults = faults(m, pid);
    let moved = (c.pages_to_vram - before.pages_to_vram)
        + (c.pages_zero_filled - before.pages_zero_filled)
        + (c.pages_to_ram - before.pages_to_ram)
        + (c.pages_peer - before.pages_peer);
    let mut lat: Vec<u64> = m.fault_latencies()[lat_before..].to_vec();
    lat.sort_unstable();
    let pct = |q: f64| percentile(&lat, q);
    let start = kernels.first().map_or(0, |k| k.launch_ns);
    let end = kernels.iter().map(|k| k.end_ns).max().unwrap_or(start);
    Ok(Report {
        workload: w.name().into(),
        params: *p,
        verified,
        first_result_ns: kernels
            .first()
            .map_or(0, |k| k.first_wave_done_ns.saturating_sub(k.launch_ns)),
        kernel_ns: end - start,
        kernels,
        faults,
        migrated_bytes: moved * 4096,
        fault_p50_ns: pct(0.5),
        fault_p99_ns: pct(0.99),
        end_ns: m.now_ns(),
        svms_lock_wait_ns: c.svms_lock_wait_ns - before.svms_lock_wait_ns,
        migrate_lock_wait_ns: c.migrate_lock_wait_ns - before.migrate_lock_wait_ns,
        handler_busy_ns: c.handler_busy_ns - before.handler_busy_ns,
        copy_busy_ns: c.copy_busy_ns - before.copy_busy_ns,
        copy_wait_ns: c.copy_wait_ns - before.copy_wait_ns,
    })
}

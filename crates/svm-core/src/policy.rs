//! The policy seam: what a GPU fault migrates and maps, and which VRAM
//! buffer an allocation that does not fit evicts.
//!
//! # Overview
//! A fault policy is a value behind [`FaultPolicy`]. The engine's fault
//! handler (`Process::restore_pages`, `process/fault.rs`) runs kfd's steps
//! up to the point where kfd decides what to move, hands the policy a
//! [`FaultCtx`] (the fault, its range with attributes and residency, kfd's
//! best location, the granularity window, the VRAM left on the faulting
//! GPU) and carries out the [`FaultPlan`] it returns: migrate these pages
//! there, map these pages on the faulting GPU (where they are, if nothing
//! migrates: a remote mapping), or serve nothing now and let the GPU retry
//! after a delay (a throttle). A policy keeps whatever history it needs in
//! itself (per range, per 2 MiB block, ...): each process gets its own
//! instance, made by the [`PolicyFactory`] of the run, and is told when
//! memory goes away ([`FaultPolicy::on_unmap`]) so that history of freed
//! memory can be dropped.
//!
//! kfd's own three variants are in `policy/kfd.rs`; eviction order, a
//! seam of its own, in `policy/victim.rs`; NVIDIA UVM's block service
//! with density prefetch and thrashing mitigation (`uvm`) in
//! `policy/uvm.rs`, its bitmap tree in `policy/uvm_prefetch.rs` and its
//! thrashing state in `policy/uvm_thrashing.rs`. Adding a policy is one file
//! and one line in [`registry`]; a policy outside this crate needs no
//! change to the engine at all (`Machine::set_fault_policy`, see the
//! simulator's `tests/it/policy.rs`).
//!
//! **Architecture Invariant:** policies are values, picked per run; the
//! engine never asks which policy it runs.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::addr::{PageNum, PageRange};
use crate::attr::Location;
use crate::gpu::{GpuId, GpuIndex, GpuMask};
use crate::range::SvmRange;

mod kfd;
mod uvm;
pub mod uvm_prefetch;
pub mod uvm_thrashing;
pub mod victim;
pub mod xe;

pub use kfd::{KfdPolicy, Policy};
pub use uvm::Uvm;
pub use victim::VictimPolicy;

/// What a policy may see of one GPU retry fault.
#[derive(Debug)]
pub struct FaultCtx<'a> {
    /// The faulting GPU, by index in the process, and its gpu_id.
    pub gpu: GpuIndex,
    /// See `gpu`.
    pub gpu_id: GpuId,
    /// The faulting page.
    pub page: PageNum,
    /// Whether the access was a write (an atomic is one).
    pub write: bool,
    /// Whether the access was an atomic that the GPU could not perform on
    /// the page where it is mapped ([`Access::Atomic`]).
    pub atomic: bool,
    /// Simulated time of the fault's handling.
    pub now_ns: u64,
    /// The range that holds the page: its pages, attributes, where its
    /// VRAM pages are (`actual_loc`, `vram`).
    pub range: &'a SvmRange,
    /// Where kfd would have the page (`svm_range_best_restore_location`).
    pub best: Location,
    /// The granularity-aligned window around the page, clipped to the
    /// range (kfd's partial-migration window).
    pub window: PageRange,
    /// Free VRAM pages on the faulting GPU: the pressure it is under.
    pub vram_free_pages: u64,
    /// The pages of the faults of the same batch that the policy coalesced
    /// into this one ([`FaultPolicy::order`]); empty when unbatched. Their
    /// waves retry after this fault is served, so a plan that maps them
    /// serves them too.
    pub coalesced: &'a [PageNum],
    /// Which pages system memory holds: with the range's VRAM pages,
    /// where every page of it is.
    pub host: HostView<'a>,
    /// The GPU of the range's preferred location, when that is a GPU's
    /// VRAM, by index in the process.
    pub preferred_gpu: Option<GpuIndex>,
    /// The faulting GPU reaches system memory through ATS
    /// ([`crate::topology::GpuDesc::ats`]).
    pub ats: bool,
    /// How the process's GPUs reach each other's VRAM.
    pub peers: PeerView<'a>,
}

/// How one GPU reaches another's VRAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerLink {
    /// It cannot map it (the pair has no peer access): moving pages
    /// between the two goes through system memory.
    None,
    /// Over PCIe peer-to-peer, once the driver enabled it between the two
    /// (UVM: `UvmEnablePeerAccess`; [`FaultPolicy::pcie_peers`]): a remote
    /// mapping and a direct copy, without native atomics.
    Pcie,
    /// Over a fast link of one hive (xGMI, NVLink): a remote mapping, a
    /// direct copy and native atomics (UVM's `has_fast_link` and
    /// `has_native_atomics`, set for NVLink peers at GPU registration,
    /// `enable_peers` in `uvm_va_space.c`).
    Fast,
}

/// How the process's GPUs reach each other's VRAM, by index in the process
/// (a GPU reaches its own as [`PeerLink::Fast`]).
#[derive(Clone, Copy)]
pub struct PeerView<'a>(pub &'a dyn Fn(GpuIndex, GpuIndex) -> PeerLink);

impl PeerView<'_> {
    /// How `from` reaches `to`'s VRAM.
    pub fn link(&self, from: GpuIndex, to: GpuIndex) -> PeerLink {
        (self.0)(from, to)
    }
}

impl fmt::Debug for PeerView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerView")
    }
}

/// Access counters a policy has a GPU run (UVM's
/// `uvm_perf_access_counter_*`): the GPU counts its accesses to memory
/// not its own, per region of `granularity_pages` of the address space,
/// and notifies the driver when a region's count reaches `threshold`
/// ([`FaultPolicy::on_access_counter`]); the count then starts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessCounterSpec {
    /// The region one counter covers, in pages (UVM: 2 MiB).
    pub granularity_pages: u64,
    /// Accesses that make a notification (UVM: 256).
    pub threshold: u32,
}

/// What system memory holds, as a policy may ask it
/// ([`crate::platform::Platform::host_holds`]).
#[derive(Clone, Copy)]
pub struct HostView<'a>(pub &'a dyn Fn(PageNum) -> bool);

impl HostView<'_> {
    /// Whether system memory holds `page`.
    pub fn holds(&self, page: PageNum) -> bool {
        (self.0)(page)
    }
}

impl fmt::Debug for HostView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostView")
    }
}

/// Pages to move, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The destination.
    pub to: Location,
    /// The pages (clipped to the range by the engine).
    pub pages: PageRange,
}

/// What a policy decides for one fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultPlan {
    /// Serve the fault now: migrate (if anything), then map `map` on the
    /// faulting GPU wherever its pages then are. Without a migration the
    /// pages are mapped where they are: a remote mapping, over the link.
    /// Make one with [`FaultPlan::serve`]; fields may grow.
    #[non_exhaustive]
    Serve {
        /// What to migrate first.
        migrate: Option<Migration>,
        /// The pages to map on the faulting GPU (clipped to the range; it
        /// should hold the faulting page, or the GPU faults again).
        map: PageRange,
        /// Other GPUs to map the same pages on, in the same step (UVM's
        /// accessed-by mappings, kfd's mapping to every GPU of the access
        /// bitmap). GPUs that may not access the range are left out.
        also: GpuMask,
    },
    /// Serve the fault with several runs of pages in one service: each
    /// run is migrated to `to` (the pages not there yet), then mapped on
    /// the faulting GPU and on `also`, run by run, in order. UVM services
    /// a va_block's faulted pages and its prefetch hint together, and
    /// they need not be contiguous. Runs are clipped to the range; empty
    /// ones are skipped. Make one with [`FaultPlan::serve_runs`].
    #[non_exhaustive]
    ServeRuns {
        /// Where every run goes.
        to: Location,
        /// The runs, in the order they are served.
        runs: Vec<PageRange>,
        /// Other GPUs to map the runs on (as for `Serve`).
        also: GpuMask,
        /// Runs mapped where their pages are, after the others, migrating
        /// nothing: remote mappings (UVM's pinned thrashing pages).
        remote: Vec<PageRange>,
    },
    /// Serve a read fault with read-only copies (UVM's read duplication):
    /// each run's pages are copied into the faulting GPU's VRAM, their
    /// residency left as it is, and mapped there read-only. A page no
    /// copy could be made of (resident nowhere yet, or no room) is mapped
    /// where it is. A write to a copied page, by any GPU or the CPU,
    /// drops every copy first. Refused (EINVAL) for a write fault: the
    /// write could never be served. Make one with
    /// [`FaultPlan::duplicate`].
    #[non_exhaustive]
    Duplicate {
        /// The runs, in the order they are served.
        runs: Vec<PageRange>,
    },
    /// Serve nothing now: the GPU retries no sooner than `after_ns` from
    /// now (a throttle, as UVM's thrashing mitigation does).
    Retry {
        /// The least delay before the retry, in ns.
        after_ns: u64,
    },
}

impl FaultPlan {
    /// Serve the fault: migrate `migrate` (if any), then map `map` on the
    /// faulting GPU.
    pub fn serve(migrate: Option<Migration>, map: PageRange) -> Self {
        FaultPlan::Serve {
            migrate,
            map,
            also: GpuMask::EMPTY,
        }
    }

    /// Serve the fault by migrating each of `runs` to `to` and mapping
    /// it on the faulting GPU, in order.
    pub fn serve_runs(to: Location, runs: Vec<PageRange>) -> Self {
        FaultPlan::ServeRuns {
            to,
            runs,
            also: GpuMask::EMPTY,
            remote: Vec::new(),
        }
    }

    /// Serve a read fault with read-only copies of `runs` on the faulting
    /// GPU ([`FaultPlan::Duplicate`]).
    pub fn duplicate(runs: Vec<PageRange>) -> Self {
        FaultPlan::Duplicate { runs }
    }

    /// Serve the fault as [`FaultPlan::serve_runs`] does, then map each
    /// of `remote` where its pages are.
    pub fn serve_runs_and_remote(
        to: Location,
        runs: Vec<PageRange>,
        remote: Vec<PageRange>,
    ) -> Self {
        FaultPlan::ServeRuns {
            to,
            runs,
            also: GpuMask::EMPTY,
            remote,
        }
    }

    /// The same plan, mapping on the GPUs of `gpus` too (a retry plan is
    /// left as it is).
    #[must_use]
    pub fn also_on(self, gpus: GpuMask) -> Self {
        match self {
            FaultPlan::Serve { migrate, map, .. } => FaultPlan::Serve {
                migrate,
                map,
                also: gpus,
            },
            FaultPlan::ServeRuns {
                to, runs, remote, ..
            } => FaultPlan::ServeRuns {
                to,
                runs,
                also: gpus,
                remote,
            },
            retry => retry,
        }
    }
}

/// One migration the engine carried out, whatever caused it, as a policy
/// sees it ([`FaultPolicy::on_migration`]): UVM's thrashing detection
/// counts the migrations it did not plan too (CPU faults, prefetches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationEvent {
    /// The pages that moved (one `migrate_vma` chunk's).
    pub pages: PageRange,
    /// Where they came from: `None` for system memory, else the GPU.
    pub from: Option<GpuIndex>,
    /// Where they went, likewise.
    pub to: Option<GpuIndex>,
    /// What asked for it.
    pub trigger: crate::events::MigrateTrigger,
    /// The first leg of a move between two GPUs, through system memory.
    pub staging: bool,
    /// When, in simulated ns.
    pub now_ns: u64,
}

/// When the GPU retries (replays) the faults of a batch, as UVM's
/// `uvm_perf_fault_replay_policy` says (docs/research/uvm.md §1.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replay {
    /// After each service of the batch (each va_block): its faults'
    /// waves retry as soon as it is done. kfd, which answers each fault on
    /// its own, and Xe, which acks chained faults with their leader's
    /// result, behave so.
    #[default]
    Block,
    /// After the whole batch; faults that arrived meanwhile wait in the
    /// ring for the next batch.
    Batch,
    /// After the whole batch, once the faults that arrived meanwhile are
    /// flushed from the buffer unserved: their waves retry with the
    /// replay and fault again (UVM's default).
    BatchFlush,
    /// Once, after the service run: up to
    /// [`MAX_BATCHES_PER_SERVICE`] batches back to back.
    Once,
}

/// Batches one run of UVM's fault service takes before it lets other
/// work go (`uvm_perf_fault_max_batches_per_service`).
pub const MAX_BATCHES_PER_SERVICE: usize = 20;

/// Batches with a throttled fault after which one run of UVM's fault
/// service stops early (`uvm_perf_fault_max_throttle_per_service`), so
/// that a thrashing page's nap does not hold the run's other faults.
pub const MAX_THROTTLED_PER_SERVICE: usize = 5;

/// The share of a batch's faults, in percent, that must be duplicates for
/// UVM's batch-flush to read the buffer's PUT pointer again and flush
/// what arrived during the service too (`UPDATE_PUT`); below it the flush
/// goes only to the PUT read when the batch was fetched (`CACHED_PUT`),
/// and what arrived since stays for the next batch: the default of
/// `uvm_perf_fault_replay_update_put_ratio` (knob
/// `uvm_replay_update_put_ratio`).
pub const REPLAY_UPDATE_PUT_RATIO: u8 = 50;

impl Replay {
    /// Every replay policy, in UVM's order.
    pub const ALL: [Replay; 4] = [
        Replay::Block,
        Replay::Batch,
        Replay::BatchFlush,
        Replay::Once,
    ];

    /// Its name in configurations.
    pub const fn name(self) -> &'static str {
        match self {
            Replay::Block => "block",
            Replay::Batch => "batch",
            Replay::BatchFlush => "batch-flush",
            Replay::Once => "once",
        }
    }

    /// Parses a name from [`Replay::name`].
    pub fn from_name(s: &str) -> Option<Replay> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// Whether a GPU's access-counter notifications migrate pages, as UVM's
/// `uvm_perf_access_counter_migration_enable` says (-1, 0, 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessCounters {
    /// UVM's -1: on for GPUs that reach system memory through ATS
    /// (Grace Hopper and later), off elsewhere.
    #[default]
    Auto,
    /// On for every GPU.
    On,
    /// Off: remote accesses are never counted.
    Off,
}

impl AccessCounters {
    /// Every setting, in UVM's order.
    pub const ALL: [AccessCounters; 3] = [
        AccessCounters::Auto,
        AccessCounters::On,
        AccessCounters::Off,
    ];

    /// Its name in configurations.
    pub const fn name(self) -> &'static str {
        match self {
            AccessCounters::Auto => "auto",
            AccessCounters::On => "on",
            AccessCounters::Off => "off",
        }
    }

    /// Parses a name from [`AccessCounters::name`].
    pub fn from_name(s: &str) -> Option<AccessCounters> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }

    /// Whether a GPU counts, `ats` saying whether it reaches system
    /// memory through ATS.
    pub const fn on_for(self, ats: bool) -> bool {
        match self {
            AccessCounters::Auto => ats,
            AccessCounters::On => true,
            AccessCounters::Off => false,
        }
    }
}

/// What a faulting access did, as the GPU's fault record says.
///
/// kfd's handler reads only whether it wrote (`write_fault`); Xe's
/// reads an atomic too (`XE_PAGEFAULT_ACCESS_TYPE_ATOMIC`, which forces
/// the range into the faulting tile's VRAM), and UVM's fault entries
/// carry it as an access type (`UVM_FAULT_ACCESS_TYPE_ATOMIC_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// A load.
    #[default]
    Read,
    /// A store.
    Write,
    /// A read-modify-write the GPU performs in memory. It faults where a
    /// store would, and also where the GPU has no atomics to the memory
    /// the page is mapped to (system memory or a peer's VRAM on a GPU
    /// whose atomics reach only its own VRAM,
    /// `crate::topology::GpuDesc::local_atomics`).
    Atomic,
}

impl Access {
    /// Whether it writes (a store or an atomic).
    pub const fn writes(self) -> bool {
        !matches!(self, Access::Read)
    }
}

/// One fault of a batch the GPU's handler took from its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFault {
    /// The faulting GPU.
    pub gpu: GpuIndex,
    /// The faulting page.
    pub page: PageNum,
    /// Whether the access was a write.
    pub write: bool,
}

/// One service of a batch: the fault `serve` (an index into the batch)
/// goes through the handler; the faults of `with` are coalesced into it
/// (not handled on their own; their waves retry once it is served).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchStep {
    /// The fault served.
    pub serve: usize,
    /// The faults coalesced into it.
    pub with: Vec<usize>,
}

/// What a policy may see when a GPU faults on memory no range holds
/// (kfd's `svm_range_create_unregistered_range`).
#[derive(Clone, Copy, Debug)]
pub struct NewRangeCtx<'a> {
    /// The faulting page.
    pub page: PageNum,
    /// The VMA that holds it.
    pub vma: PageRange,
    /// Where a new range may lie: the VMA, less the neighbouring ranges.
    pub room: PageRange,
    /// The range kfd makes: the `default_granularity` block around the
    /// page, clipped to `room`.
    pub kfd: PageRange,
    /// Which pages system memory holds (the CPU has touched them).
    pub host: HostView<'a>,
}

/// A GPU fault policy.
///
/// `plan` is called once per fault that reaches the point where kfd
/// decides what to move (not for duplicates, stragglers or faults kfd
/// refuses before that), with `&mut self` so the policy can keep state.
pub trait FaultPolicy: fmt::Debug {
    /// The name runs, reports and `--set policy=` use.
    fn name(&self) -> &str;

    /// Decides what the fault moves and maps.
    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan;

    /// Whether the GPU's handler takes a whole batch of arrived faults
    /// at once and asks [`FaultPolicy::order`] how to serve it, as UVM
    /// reads its replayable fault buffer. kfd's handler takes faults from
    /// the ring one by one, as they arrive: the default.
    fn batched(&self) -> bool {
        false
    }

    /// How to serve this process's faults of one batch (only asked when
    /// [`FaultPolicy::batched`]): in which order, and which are coalesced
    /// into which (UVM sorts by 2 MiB va_block and services each block
    /// once). Every index should appear once; the engine serves a fault
    /// the answer leaves out on its own, after the others, and ignores an
    /// index out of the batch or given twice. The default serves each
    /// fault alone, in ring order.
    fn order(&mut self, faults: &[BatchFault]) -> Vec<BatchStep> {
        (0..faults.len())
            .map(|serve| BatchStep {
                serve,
                with: Vec::new(),
            })
            .collect()
    }

    /// The range to make for a fault on memory no range holds. The engine
    /// clips it to `ctx.room`; one that then misses the faulting page is
    /// refused (EINVAL). The default is kfd's.
    fn new_range(&mut self, ctx: &NewRangeCtx<'_>) -> PageRange {
        ctx.kfd
    }

    /// Whether a munmap of part of a range splits it, as kfd does (the
    /// default). A policy that says no gets drm_gpusvm's rule: ranges never
    /// split; a partial munmap moves the range's pages that stay mapped
    /// back to system memory, unmaps the range from every GPU and drops it
    /// whole; the memory left gets a new range at its next fault.
    fn splits_ranges(&self) -> bool {
        true
    }

    /// Memory of `range` was unmapped from the CPU (munmap): history kept
    /// for it may go. The default keeps nothing, so does nothing.
    fn on_unmap(&mut self, range: PageRange) {
        let _ = range;
    }

    /// When the GPU retries a batch's faults (only asked when
    /// [`FaultPolicy::batched`]). The default: after each service.
    fn replay(&self) -> Replay {
        Replay::Block
    }

    /// The block no new range crosses, in pages, when the policy wants
    /// ranges smaller than kfd's `max_svm_range_pages`: UVM's va_blocks
    /// are 2 MiB, each with residency of its own. The default: none.
    fn block_pages(&self) -> Option<u64> {
        None
    }

    /// Whether a range's pages may be resident on several GPUs, as a UVM
    /// va_block's may: a fault's run bound for one GPU is carved out of a
    /// range whose VRAM is another's (a split) rather than moving the
    /// whole range through system memory, kfd's way. The default: no.
    fn per_page_residency(&self) -> bool {
        false
    }

    /// Whether a migration between two GPUs that reach each other by
    /// `_link` copies VRAM to VRAM directly over the peer link (drm_pagemap's
    /// device-to-device migration; UVM between peers, whose copy the
    /// source GPU pushes) rather than through system memory, kfd's way
    /// (`svm_migrate_vram_to_vram`; UVM's staging through the CPU for GPUs
    /// that are not peers). The default: no.
    fn direct_peer_migration(&self, _link: PeerLink) -> bool {
        false
    }

    /// Whether GPUs outside one hive reach each other's VRAM over PCIe
    /// peer-to-peer ([`PeerLink::Pcie`]): map it and copy to it directly.
    /// kfd maps peers' VRAM only within an xGMI hive
    /// (`svm_nodes_in_same_hive`); UVM after `UvmEnablePeerAccess`, which
    /// a CUDA program calls through `cudaDeviceEnablePeerAccess`. The
    /// default: no.
    fn pcie_peers(&self) -> bool {
        false
    }

    /// Whether a prefetch (PREFETCH_LOC) maps the range on the GPUs that
    /// may access it even when nothing had to move, as Xe's prefetch is
    /// a bind: `prefetch_ranges` migrates to the region (system memory
    /// for region 0) and then binds. kfd maps after a prefetch only what
    /// it migrated (XNACK on) or when the mapping changed: the default.
    fn prefetch_binds(&self) -> bool {
        false
    }

    /// Takes the run's configuration (called once the policy is the
    /// process's, and again when the configuration changes), for a
    /// policy's own knobs (`uvm_*`). The default reads nothing.
    fn configure(&mut self, config: &crate::config::Config) {
        let _ = config;
    }

    /// What the policy counted of its own decisions, by name, for reports
    /// (UVM: faults throttled, pages pinned and unpinned). The default:
    /// nothing.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The access counters this policy has a GPU run, `ats` saying whether
    /// the GPU reaches system memory through ATS. The default: none.
    /// A CPU fault on `page`, in VRAM, at `now_ns`: until when the CPU
    /// thread sleeps before the page may move (UVM throttles a thrashing
    /// page's CPU faults: `usleep_range` in `uvm_vm_fault`). `None`, the
    /// default: it moves now. `preferred` is the range's preferred
    /// location.
    fn cpu_fault_throttle(
        &mut self,
        page: PageNum,
        preferred: Option<Location>,
        now_ns: u64,
    ) -> Option<u64> {
        let _ = (page, preferred, now_ns);
        None
    }

    /// How long the CPU may not take back the pages an atomic's fault
    /// migrated into VRAM, ns (Xe's `atomic_svm_timeslice_ms`); 0, the
    /// default: no such hold.
    fn atomic_timeslice_ns(&self) -> u64 {
        0
    }

    fn access_counters(&self, ats: bool) -> Option<AccessCounterSpec> {
        let _ = ats;
        None
    }

    /// A GPU's access counter reached its threshold on a region: what to
    /// do for the region's part of one range (`ctx.window`; `ctx.page` is
    /// its first page, `ctx.write` false, `ctx.coalesced` empty). A plan
    /// is carried out as a fault's is, its migrations triggered by the
    /// access counter; a retry plan, like `None`, does nothing. The
    /// default: nothing.
    fn on_access_counter(&mut self, ctx: &FaultCtx<'_>) -> Option<FaultPlan> {
        let _ = ctx;
        None
    }

    /// Pages moved (any cause: `event.trigger`). The default ignores it.
    fn on_migration(&mut self, event: &MigrationEvent) {
        let _ = event;
    }

    /// When the policy next wants [`FaultPolicy::on_deadline`] called, in
    /// simulated ns (UVM unpins thrashing pages 150 ms after pinning).
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// The deadline came: the pages whose *remote* mappings go (every GPU
    /// mapping of them, but the one whose VRAM holds them); the next
    /// access of those GPUs faults again.
    fn on_deadline(&mut self, now_ns: u64) -> Vec<PageRange> {
        let _ = now_ns;
        Vec::new()
    }
}

/// Makes the fault policy of each new process (each gets an instance of
/// its own, so the history one keeps is its process's).
#[derive(Clone)]
pub struct PolicyFactory {
    /// The name its policies give.
    name: String,
    make: Arc<dyn Fn() -> Box<dyn FaultPolicy> + Send + Sync>,
}

impl PolicyFactory {
    /// A factory of the policies `make` makes.
    pub fn new(make: impl Fn() -> Box<dyn FaultPolicy> + Send + Sync + 'static) -> Self {
        let name = make().name().to_owned();
        Self {
            name,
            make: Arc::new(make),
        }
    }

    /// A new instance.
    pub fn make(&self) -> Box<dyn FaultPolicy> {
        (self.make)()
    }

    /// The name its policies give.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for PolicyFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PolicyFactory").field(&self.name).finish()
    }
}

/// The plain reason a policy takes fewer faults than another: kfd's, and
/// the one explanations give for a policy from outside the registry.
pub const MOVED_MORE: &str = "each of its faults moved more, so fewer pages were left to fault on";

/// One registered fault policy.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Its name (kebab-case).
    pub name: &'static str,
    /// One line on what it does, for `svmsim config` and `--help`.
    pub about: &'static str,
    /// Why its runs take fewer faults than another policy's, for
    /// explanations that compare runs (`svmsim compare --drivers`).
    pub fewer_faults: &'static str,
    /// Makes an instance.
    pub make: fn() -> Box<dyn FaultPolicy>,
}

impl Entry {
    /// A factory for runs.
    pub fn factory(&self) -> PolicyFactory {
        PolicyFactory::new(self.make)
    }
}

/// Every built-in fault policy, in the order `--help` lists them: one line
/// per policy file.
pub fn registry() -> impl Iterator<Item = &'static Entry> {
    kfd::ENTRIES
        .iter()
        .chain(uvm::ENTRIES.iter())
        .chain(xe::ENTRIES.iter())
}

/// The registered policy of this name.
pub fn lookup(name: &str) -> Option<&'static Entry> {
    registry().find(|e| e.name == name)
}

/// The names of every registered policy.
pub fn names() -> Vec<&'static str> {
    registry().map(|e| e.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_policy_makes_itself_under_its_name() {
        let names = names();
        assert_eq!(
            names,
            [
                "whole-range",
                "partial",
                "partial-migrate-whole-map",
                "uvm",
                "xe"
            ]
        );
        for e in registry() {
            assert_eq!((e.make)().name(), e.name);
            assert_eq!(lookup(e.name).map(|x| x.name), Some(e.name));
            assert!(!e.about.is_empty());
        }
        assert!(lookup("nope").is_none());
    }
}

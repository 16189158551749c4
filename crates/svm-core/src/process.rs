//! One process's SVM state and its API edge: SET_ATTR, GET_ATTR, XNACK mode, user queues, and the fault paths.
//!
//! # Overview
//! [`Process`] is the engine's `kfd_process` with its `svm_range_list`. Its
//! typed methods ([`Process::set_attr`], [`Process::get_attr`]) run the
//! kernel's steps in the kernel's order; [`Process::svm_ioctl`] and
//! [`Process::set_xnack_mode`] are the ioctl edge, where raw uAPI numbers come
//! in and errno values go out. The GPU fault handler is in `process/fault.rs`
//! ([`Process::restore_pages`]), migration and the CPU fault path in
//! `process/migrate.rs`, GPU mapping in `process/map.rs`.
//!
//! # Locking and deferred work
//! kfd takes `process_info->lock`, the mmap lock and `svms->lock` around these
//! calls and flushes the deferred munmap work first
//! (`svm_range_list_lock_and_flush_work`). The engine is called by one
//! simulated thread at a time, so each call is one atomic step; the
//! simulator's scheduler decides how steps interleave.
//!
//! munmap is two steps, as in kfd: [`Process::unmap_from_cpu`] (the
//! notifier) unmaps the GPUs, records the fault-ring checkpoints and splits
//! the ranges, and [`Process::deferred_list_work`] frees the unmapped
//! pieces later; set_attr and the restore work flush it first. Faults that
//! were in a ring at the munmap are dropped when they arrive (the
//! checkpoint rule), whenever that is.

use std::collections::BTreeMap;

use crate::addr::{CpuVa, PageCount, PageNum, PageRange};
use crate::attr::{
    AccessKind, AttrOp, AttrQuery, AttrValue, Attrs, Granularity, Location, SvmFlags,
};
use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};
use crate::events::UnmapTrigger;
use crate::gpu::{GpuId, GpuIndex, GpuMask, PerGpu};
use crate::kernel::Change;
use crate::platform::{Hardware, Platform, VramBuf};
use crate::policy::{FaultPolicy, KfdPolicy, PeerLink, Policy};
use crate::range::ListOp;
use crate::range_list::SvmRangeList;
use crate::topology::Topology;
use crate::uapi::{self, SvmArgs, SvmAttribute, attr_type};

/// A GPU as one process sees it (`kfd_process_device`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessDevice {
    /// The GPU's gpu_id.
    pub id: GpuId,
    /// Whether the GPU supports the SVM API; its index is then in `bitmap_supported`.
    pub svm: bool,
    /// Whether the GPU can run with retry faults.
    pub xnack: bool,
    /// Its xGMI hive.
    pub hive: Option<u64>,
    /// An APU: its SVM memory stays in system memory.
    pub apu: bool,
    /// Its graphics IP version, which decides how it chooses XNACK.
    pub gc: crate::pte::GcVersion,
    /// An APU with no device memory (`apu_prefer_gtt`).
    pub prefer_gtt: bool,
    /// It reaches system memory through ATS ([`crate::topology::GpuDesc::ats`]).
    pub ats: bool,
}

/// Per-GPU counters of one process (`/sys/class/kfd/kfd/proc/<pid>/stats_<gpuid>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GpuStats {
    /// GPU page faults seen, including dropped duplicates.
    pub faults: u64,
    /// Times this process's queues were stopped on this GPU for an eviction.
    pub queue_evictions: u64,
    /// Times they were resumed by the restore work.
    pub queue_restores: u64,
    /// Times the restore work failed and rescheduled itself 1 ms later,
    /// leaving the queues stopped.
    pub restore_reschedules: u64,
    /// VRAM buffers evicted to make room.
    pub evictions: u64,
    /// Pages migrated into this GPU's VRAM.
    pub page_in: u64,
    /// Pages migrated out of this GPU's VRAM.
    pub page_out: u64,
    /// Faults dropped as stragglers: they were in the ring when memory was
    /// unmapped (not counted in `faults`, as kfd's -EAGAIN is not).
    pub stragglers_dropped: u64,
    /// Faults not recovered because their range was being unmapped or not
    /// yet added (`svm_range_skip_recover`).
    pub unmapping_dropped: u64,
}

/// The served GPU faults of one size class: what a fault mapped was one
/// page, at most 64 KiB, at most 2 MiB, or more. Xe's GT statistics
/// count the same things per range size (`svm_{4K,64K,2M}_*`,
/// docs/research/xe.md §6); every driver's runs get them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SizeStats {
    /// Faults served (`svm_*_pagefault_count`, without Xe's retry passes).
    pub faults: u64,
    /// Their handling time, fault entry to its end, ns (`pagefault_us`).
    pub fault_ns: u64,
    /// Faults whose migration step ran (`migrate_count`).
    pub migrations: u64,
    /// Time in the migration step, ns (`migrate_us`).
    pub migrate_ns: u64,
    /// Pages copied into VRAM (`device_copy_kb` / 4).
    pub pages_to_vram: u64,
    /// Time mapping: the HMM walk, DMA maps and PTEs, ns
    /// (`get_pages_us` + `bind_us`).
    pub map_ns: u64,
    /// The part of `map_ns` spent writing PTEs and flushing TLBs
    /// (`bind_us`); the rest is the walk and DMA maps (`get_pages_us`).
    pub bind_ns: u64,
}

/// The size classes of [`SizeStats`], by name.
pub const SIZE_CLASSES: [&str; 4] = ["4K", "64K", "2M", "larger"];

/// The class of a fault that mapped `pages` pages.
pub fn size_class(pages: u64) -> usize {
    match pages {
        0..=1 => 0,
        2..=16 => 1,
        17..=512 => 2,
        _ => 3,
    }
}

/// A VRAM buffer of the process (`struct svm_range_bo`): shared by the split
/// siblings that reference it, freed when none does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmBo {
    /// The GPU whose VRAM holds it.
    pub gpu: GpuIndex,
    /// The platform's handle.
    pub buf: VramBuf,
    /// Its size in pages (the whole range it was made for).
    pub npages: u64,
    /// Its place in its GPU's LRU, from when it was last allocated,
    /// migrated into or mapped ([`crate::platform::Hardware::lru_bump`]):
    /// the key of VRAM eviction.
    pub lru: u64,
    /// Its LRU place when it was made: when its block first became
    /// resident on the GPU (UVM's eviction order).
    pub born: u64,
    /// Until when (simulated ns) the CPU may not take its pages back:
    /// Xe's `timeslice_expiration`, set when an atomic's fault migrated
    /// into it (`FaultPolicy::atomic_timeslice_ns`); 0 for none.
    pub cpu_hold_until: u64,
}

pub use crate::policy::VictimPolicy;

/// A user queue handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(u32);

impl QueueId {
    /// The raw queue id.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// What one successful set_attr did, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttrOutcome {
    /// Ranges the attributes were applied to.
    pub updated: usize,
    /// New ranges created in gaps.
    pub created: usize,
    /// Partly covered ranges that were cloned and split.
    pub split: usize,
    /// Split-off pieces remapped because their cut was not granularity aligned.
    pub remapped: usize,
    /// Calls to validate-and-map that found GPUs to map.
    pub mapped: usize,
}

/// One process's SVM state.
#[derive(Debug)]
pub struct Process {
    devices: PerGpu<ProcessDevice>,
    /// GPUs that support SVM (`svms->bitmap_supported`).
    bitmap_supported: GpuMask,
    xnack_enabled: bool,
    /// The mode the driver booted with (`!noretry`).
    xnack_boot: bool,
    queues: BTreeMap<QueueId, GpuIndex>,
    next_queue: u32,
    svms: SvmRangeList,
    /// `max_svm_range_pages`, fixed by the topology.
    max_pages: PageCount,
    /// The process id SMI events carry.
    pid: u32,
    /// How GPU faults migrate and map: this process's instance of the
    /// run's fault policy, with whatever history it keeps.
    policy: Box<dyn FaultPolicy>,
    /// When the fault policy next wants its deadline work, as it said
    /// after its last plan or deadline (a deadline it dropped since only
    /// makes the work run early, and find nothing).
    policy_due: Option<u64>,
    /// A migration between two GPUs is under way, and its leg to system
    /// memory is its staging leg (the policy's migration events say so).
    staging: bool,
    /// Set while a migration may not fail by injection: Xe's collector
    /// evicting what a partial munmap leaves (what Xe does when that
    /// fails is not modelled).
    uninjected: bool,
    /// Failed mappings that left PTEs at unmapped DMA addresses (kfd's
    /// behaviour; the checker names it).
    stale_after_failed_map: u64,
    /// When munmap's deferred work may run (`None`: none is queued, or it
    /// may run at once).
    deferred_due_ns: Option<u64>,
    /// The run's knobs (the policy's name, kfd's tunables, the review
    /// thread's options, the accounting mode).
    config: Config,
    /// VRAM buffers by id.
    bos: BTreeMap<u64, SvmBo>,
    /// Read-only copies of pages on GPUs that read them (`dup.rs`).
    dups: Duplicates,
    /// Time `validate_and_map` spent writing PTEs and flushing, ever: the
    /// bind part of a fault's mapping time ([`SizeStats::bind_ns`]).
    bind_ns: u64,
    next_bo: u64,
    /// A buffer may have lost its last reference since the last scan.
    bo_scan_needed: bool,
    stats: PerGpu<GpuStats>,
    /// Served faults per GPU by size class.
    size_stats: PerGpu<[SizeStats; 4]>,
    /// Ranges evicted and not yet restored (XNACK off; `svms->evicted_ranges`).
    evicted_ranges: u32,
    /// KFD memory-API buffers (hipMalloc) by handle (`kfd_bo.rs`).
    kfd_bos: BTreeMap<u64, kfd_bo::KfdBo>,
    next_kfd_bo: u64,
    /// KFD buffers evicted to GTT and not yet restored.
    evicted_bos: u32,
    /// When the process restore work brings them back.
    bo_restore_due_ns: Option<u64>,
    /// The user queues are stopped (by SVM eviction, KFD buffer eviction,
    /// or both) until every restore has run.
    queues_stopped: bool,
    /// Per GPU, the IH timestamp of the newest retry fault that was waiting
    /// in its ring when memory was last unmapped (`svms->checkpoint_ts`).
    /// Faults up to it are stragglers and are dropped.
    checkpoint_ts: PerGpu<Option<u64>>,
    /// When the scheduled restore work runs (1 ms after the first eviction,
    /// or after its own last failed run).
    restore_due_ns: Option<u64>,
    /// Why the last restore work failed, while it stays rescheduled.
    restore_error: Option<Error>,
    /// The process has exited; faults for it are dropped.
    exited: bool,
    /// Times a VRAM→RAM migration moved more pages than kfd's counter held
    /// (its `WARN_ONCE("Recorded vram pages(...) should not be less than
    /// migration pages(...)")`).
    vram_pages_warnings: u64,
}

impl Process {
    /// A new process on every GPU of `topology`.
    ///
    /// Its XNACK mode starts as `kfd_process_xnack_mode(p, false)` decides:
    /// on when the system boots with retry faults enabled (`xnack_default`)
    /// and every SVM GPU can run that way.
    pub fn new(topology: &Topology, xnack_default: bool) -> Self {
        let devices = PerGpu::from_vec(
            topology
                .gpus()
                .iter()
                .map(|g| ProcessDevice {
                    id: g.id,
                    svm: g.svm,
                    xnack: g.xnack,
                    hive: g.hive,
                    apu: g.apu,
                    gc: g.gc,
                    prefer_gtt: g.prefer_gtt,
                    ats: g.ats,
                })
                .collect(),
        );
        let n_gpus = devices.len();
        let stats = PerGpu::from_vec(vec![GpuStats::default(); n_gpus]);
        let size_stats = PerGpu::from_vec(vec![[SizeStats::default(); 4]; n_gpus]);
        let bitmap_supported = devices
            .iter()
            .filter(|(_, d)| d.svm)
            .map(|(i, _)| i)
            .collect();
        let mut p = Self {
            devices,
            bitmap_supported,
            xnack_enabled: false,
            xnack_boot: xnack_default,
            queues: BTreeMap::new(),
            next_queue: 1,
            svms: SvmRangeList::new(),
            max_pages: topology.max_svm_range_pages(),
            pid: 0,
            policy: Box::new(KfdPolicy(Policy::default())),
            staging: false,
            uninjected: false,
            stale_after_failed_map: 0,
            deferred_due_ns: None,
            policy_due: None,
            config: Config::default(),
            bos: BTreeMap::new(),
            dups: Duplicates::default(),
            bind_ns: 0,
            next_bo: 1,
            bo_scan_needed: false,
            stats,
            size_stats,
            evicted_ranges: 0,
            kfd_bos: BTreeMap::new(),
            next_kfd_bo: 1,
            evicted_bos: 0,
            bo_restore_due_ns: None,
            queues_stopped: false,
            checkpoint_ts: PerGpu::from_vec(vec![None; n_gpus]),
            restore_due_ns: None,
            restore_error: None,
            exited: false,
            vram_pages_warnings: 0,
        };
        p.xnack_enabled = p.xnack_blocker(false).is_none();
        p
    }

    /// Sets the process id SMI events carry.
    pub fn set_pid(&mut self, pid: u32) {
        self.pid = pid;
    }

    /// The process id its SMI events carry.
    pub fn smi_pid(&self) -> u32 {
        self.pid
    }

    /// The GPU-fault policy.
    pub fn fault_policy(&self) -> &dyn FaultPolicy {
        &*self.policy
    }

    /// Picks one of kfd's GPU-fault policies.
    pub fn set_policy(&mut self, policy: Policy) {
        self.set_fault_policy(Box::new(KfdPolicy(policy)));
    }

    /// Gives the process a fault policy of any kind (its own instance:
    /// the history it keeps is this process's).
    pub fn set_fault_policy(&mut self, mut policy: Box<dyn FaultPolicy>) {
        policy.name().clone_into(&mut self.config.policy);
        policy.configure(&self.config);
        self.policy_due = policy.next_deadline();
        self.policy = policy;
    }

    /// Takes every knob of `config`, a fresh instance of its policy among
    /// them (whatever history the old one kept is gone).
    ///
    /// # Errors
    /// A value [`Config::validate`] refuses; nothing changes then.
    pub fn set_config(&mut self, config: &Config) -> std::result::Result<(), ConfigError> {
        config.validate()?;
        let entry = crate::policy::lookup(&config.policy).expect("validated: a registered policy");
        self.configure(config.clone(), (entry.make)());
        Ok(())
    }

    /// Takes `config`'s knobs and `policy` as its fault policy (which may
    /// be one from outside the registry: `config.policy` becomes its name).
    pub fn configure(&mut self, config: Config, policy: Box<dyn FaultPolicy>) {
        self.svms.split_rule = if config.kernel.has(Change::SplitActualLoc) {
            crate::range::SplitRule::ActualLocFollowsVram
        } else {
            crate::range::SplitRule::Copied
        };
        self.config = config;
        self.set_fault_policy(policy);
    }

    /// The run's knobs as this process holds them.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether old system DMA mappings are unmapped in bulk after RAM→VRAM.
    pub fn set_bulk_dma_unmap(&mut self, on: bool) {
        self.config.bulk_dma_unmap = on;
    }

    /// Makes unmapping reach every GPU that mapped a range.
    ///
    /// Off by default, which is kfd's behaviour, and leaves GPU PTEs behind
    /// in cases the checker reports, among them:
    /// - kfd unmaps only the GPUs in `bitmap_access | bitmap_aip`
    ///   (`svm_range_unmap_from_gpus`), but a GPU whose preferred location is
    ///   itself can fault a range in and map it without either bit
    ///   (`svm_range_best_restore_location` returns the preferred location
    ///   first), so its PTEs outlive a munmap;
    /// - an eviction (XNACK off, or GPU_ALWAYS_MAPPED) leaves PTEs in place
    ///   for the restore work to rewrite, but with XNACK on the restore work
    ///   remaps only the in-place GPUs and the GPU holding the VRAM, so
    ///   another GPU keeps PTEs to where the pages were;
    /// - mapping a range that holds VRAM re-DMA-maps every chosen GPU's
    ///   slots, unmapping the old addresses, but writes no PTEs for a GPU
    ///   outside the VRAM owner's hive (`svm_range_map_to_gpus` skips it).
    ///   Since migration became partial a range can hold system pages that
    ///   such a GPU mapped earlier: its PTEs then point at unmapped DMA
    ///   addresses.
    ///
    /// On, unmapping covers every GPU with a DMA array for the range, an
    /// eviction also unmaps (harmless: the queues are stopped until the
    /// restore work remaps), and a skipped GPU's PTEs for the window are
    /// cleared.
    pub fn set_unmap_every_mapped_gpu(&mut self, on: bool) {
        self.config.unmap_every_mapped_gpu = on;
    }

    /// Asks the checker to compare kfd's own `vram_pages` counter (kept the
    /// kernel's way in every range) with the pages really in VRAM, to show
    /// the 2026 accounting drift (ROCm/TheRock #8239).
    pub fn set_kernel_accounting(&mut self, on: bool) {
        self.config.kernel_accounting = on;
    }

    /// With XNACK on, skips the eager validate-and-map after a prefetch
    /// migration, leaving it to GPU faults: the seed thread's proposal, which
    /// Philip Yang argued against because applications prefetch precisely to
    /// avoid faults. Off by default (the kernel maps eagerly).
    pub fn set_lazy_map_after_prefetch(&mut self, on: bool) {
        self.config.lazy_map_after_prefetch = on;
    }

    /// Picks how VRAM eviction chooses its victims.
    pub fn set_victim_policy(&mut self, policy: VictimPolicy) {
        self.config.victim_policy = policy;
    }

    /// Whether kfd's `vram_pages` counter is checked.
    pub fn kernel_accounting(&self) -> bool {
        self.config.kernel_accounting
    }

    /// How often kfd would have warned that a migration moved more pages
    /// than its counter recorded.
    pub fn vram_pages_warnings(&self) -> u64 {
        self.vram_pages_warnings
    }

    /// Per-GPU fault and migration counters.
    pub fn stats(&self) -> &PerGpu<GpuStats> {
        &self.stats
    }

    /// Served faults per GPU by size class ([`SIZE_CLASSES`]).
    pub fn size_stats(&self) -> &PerGpu<[SizeStats; 4]> {
        &self.size_stats
    }

    /// The VRAM buffers.
    pub fn bos(&self) -> impl Iterator<Item = (u64, &SvmBo)> {
        self.bos.iter().map(|(&id, b)| (id, b))
    }

    /// The buffer a range's VRAM pages live in.
    pub fn bo(&self, id: u64) -> Option<&SvmBo> {
        self.bos.get(&id)
    }

    /// Whether two GPUs of the process share an xGMI hive (a GPU shares one
    /// with itself; `svm_nodes_in_same_hive`).
    pub fn same_hive(&self, a: GpuIndex, b: GpuIndex) -> bool {
        a == b
            || matches!((self.devices[a].hive, self.devices[b].hive), (Some(x), Some(y)) if x == y)
    }

    /// How GPU `a` reaches GPU `b`'s VRAM: within a hive over its fast
    /// link, else over PCIe where the policy enables peers
    /// ([`FaultPolicy::pcie_peers`]), else not at all.
    pub fn peer_link(&self, a: GpuIndex, b: GpuIndex) -> PeerLink {
        peer_link(&self.devices, self.policy.pcie_peers(), a, b)
    }

    /// The process's GPUs in index order.
    pub fn devices(&self) -> &PerGpu<ProcessDevice> {
        &self.devices
    }

    /// GPUs that support SVM.
    pub fn bitmap_supported(&self) -> GpuMask {
        self.bitmap_supported
    }

    /// Whether the process has exited.
    pub fn exited(&self) -> bool {
        self.exited
    }

    /// Whether GPU retry faults are on.
    pub fn xnack_enabled(&self) -> bool {
        self.xnack_enabled
    }

    /// The SVM ranges.
    pub fn ranges(&self) -> &SvmRangeList {
        &self.svms
    }

    /// `max_svm_range_pages` for this process's ranges, or the fault
    /// policy's block when that is smaller (UVM's 2 MiB va_blocks): no new
    /// range crosses a multiple of it.
    pub fn max_range_pages(&self) -> PageCount {
        match self.policy.block_pages() {
            Some(b) if b > 0 && b < self.max_pages.raw() => PageCount::new(b),
            _ => self.max_pages,
        }
    }

    /// Open user queues and the GPU each runs on.
    pub fn queues(&self) -> impl Iterator<Item = (QueueId, GpuIndex)> + '_ {
        self.queues.iter().map(|(&q, &g)| (q, g))
    }

    /// The index of the GPU with this gpu_id (`kfd_process_gpuidx_from_gpuid`).
    pub fn gpuidx(&self, gpu_id: u32) -> Option<GpuIndex> {
        self.devices
            .iter()
            .find(|(_, d)| d.id.raw() == gpu_id)
            .map(|(i, _)| i)
    }

    /// Bytes this process holds against the system memory limit: every range
    /// while XNACK is off (nothing while it is on), and its KFD buffers in
    /// GTT.
    pub fn reserved_bytes(&self) -> u64 {
        let ranges = if self.xnack_enabled {
            0
        } else {
            self.svms.total_pages().bytes()
        };
        // KFD buffers in GTT hold system memory for their lifetime.
        let gtt: u64 = self
            .kfd_bos
            .values()
            .filter(|b| b.gtt)
            .map(|b| b.npages * crate::addr::PAGE_SIZE)
            .sum();
        ranges + gtt
    }

    /// The attributes a range created now starts with.
    fn default_attrs(&self) -> Attrs {
        let access = if self.xnack_enabled {
            self.bitmap_supported
        } else {
            GpuMask::EMPTY
        };
        self.new_range_attrs(access)
    }

    /// A new range's attributes with `access`, at the run's default
    /// granularity (`svms->default_granularity`).
    fn new_range_attrs(&self, access: GpuMask) -> Attrs {
        let mut a = Attrs::new_range(access);
        a.granularity = Granularity::from_uapi(u32::from(self.config.default_granularity));
        a
    }

    // ---------------------------------------------------------------------
    // The ioctl edge.

    /// `AMDKFD_IOC_SVM`: SET_ATTR or GET_ATTR with raw uAPI values.
    ///
    /// GET_ATTR writes its answers into `args.attrs`: locations and flags into
    /// `value`, and for ACCESS queries the answer into `type`.
    ///
    /// # Errors
    /// The error whose [`Error::errno`] the ioctl returns. (kfd answers an
    /// unknown op with a *positive* EINVAL, which user space sees as success
    /// with return value 22; svmsim reports it as EINVAL.)
    pub fn svm_ioctl(&mut self, pf: &mut dyn Hardware, args: &mut SvmArgs) -> Result {
        let range = Self::ioctl_range(args.start_addr, args.size)?;
        match args.op {
            uapi::SVM_OP_SET_ATTR => {
                let ops = self.check_attrs(&args.attrs)?;
                self.set_attr(pf, range, &ops).map(drop)
            }
            uapi::SVM_OP_GET_ATTR => self.get_attr_ioctl(pf, range, &mut args.attrs),
            op => Err(Error::UnknownOp(op)),
        }
    }

    /// Checks the byte range of an SVM ioctl and turns it into pages.
    ///
    /// # Errors
    /// [`Error::Misaligned`] when start or size is not page aligned or either
    /// is zero (`kfd_ioctl_svm`). The page range cannot overflow: both values
    /// are shifted down by the page size first, as `svm_ioctl` does.
    pub fn ioctl_range(start_addr: u64, size: u64) -> Result<PageRange> {
        let start = CpuVa::new(start_addr);
        let aligned = start.is_page_aligned() && CpuVa::new(size).is_page_aligned();
        if !aligned || start_addr == 0 || size == 0 {
            return Err(Error::Misaligned { start, size });
        }
        Ok(
            PageRange::from_start_len(start.page_num(), PageCount::from_bytes_ceil(size))
                .expect("page numbers of u64 byte values cannot overflow"),
        )
    }

    /// Validates raw SET_ATTR attributes and types them (`svm_range_check_attr`).
    ///
    /// # Errors
    /// EINVAL-class errors for an unknown type, an unknown GPU, a GPU without
    /// SVM named by ACCESS or ACCESS_IN_PLACE, or an UNDEFINED prefetch
    /// location. The first bad attribute decides.
    pub fn check_attrs(&self, raw: &[SvmAttribute]) -> Result<Vec<AttrOp>> {
        raw.iter().map(|a| self.check_attr(*a)).collect()
    }

    fn check_attr(&self, a: SvmAttribute) -> Result<AttrOp> {
        // Every attribute that names a GPU must name one of the process's
        // GPUs with SVM support: kfd applies one test after looking up the
        // index, whatever the attribute type.
        let gpu = |value: u32| -> Result<GpuIndex> {
            let gpu = self.gpuidx(value).ok_or(Error::UnknownGpu(value))?;
            if !self.bitmap_supported.contains(gpu) {
                return Err(Error::SvmUnsupported(value));
            }
            Ok(gpu)
        };
        let loc = |value: u32| -> Result<Location> {
            if value == uapi::SVM_LOCATION_SYSMEM {
                return Ok(Location::Sys);
            }
            Ok(Location::Vram(self.devices[gpu(value)?].id))
        };
        Ok(match a.ty {
            attr_type::PREFERRED_LOC => AttrOp::PreferredLoc(match a.value {
                uapi::SVM_LOCATION_UNDEFINED => None,
                v => Some(loc(v)?),
            }),
            // UNDEFINED is not exempt here: kfd looks it up as a gpu_id and
            // finds none.
            attr_type::PREFETCH_LOC => AttrOp::PrefetchLoc(loc(a.value)?),
            attr_type::ACCESS => AttrOp::Access(gpu(a.value)?),
            attr_type::ACCESS_IN_PLACE => AttrOp::AccessInPlace(gpu(a.value)?),
            attr_type::NO_ACCESS => AttrOp::NoAccess(gpu(a.value)?),
            attr_type::SET_FLAGS => AttrOp::SetFlags(SvmFlags::from_bits(a.value)),
            attr_type::CLR_FLAGS => AttrOp::ClrFlags(SvmFlags::from_bits(a.value)),
            attr_type::GRANULARITY => AttrOp::Granularity(a.value),
            ty => return Err(Error::UnknownAttrType(ty)),
        })
    }

    /// Types raw GET_ATTR queries.
    ///
    /// # Errors
    /// EINVAL-class errors for ACCESS_IN_PLACE, NO_ACCESS or an unknown type.
    pub fn check_queries(raw: &[SvmAttribute]) -> Result<Vec<AttrQuery>> {
        raw.iter()
            .map(|a| {
                Ok(match a.ty {
                    attr_type::PREFERRED_LOC => AttrQuery::PreferredLoc,
                    attr_type::PREFETCH_LOC => AttrQuery::PrefetchLoc,
                    attr_type::ACCESS => AttrQuery::Access(a.value),
                    attr_type::SET_FLAGS => AttrQuery::SetFlags,
                    attr_type::CLR_FLAGS => AttrQuery::ClrFlags,
                    attr_type::GRANULARITY => AttrQuery::Granularity,
                    attr_type::ACCESS_IN_PLACE | attr_type::NO_ACCESS => {
                        return Err(Error::NotQueryable(a.ty));
                    }
                    ty => return Err(Error::UnknownAttrType(ty)),
                })
            })
            .collect()
    }

    /// GET_ATTR with raw attributes: answers are written back in place, as
    /// the ioctl copies them out. Needs only shared access, so checkers and
    /// reports can query without changing anything.
    ///
    /// # Errors
    /// EFAULT for an unmapped VA (checked first), EINVAL for a bad query type
    /// or an unknown gpu_id in an ACCESS query.
    pub fn get_attr_ioctl(
        &self,
        pf: &dyn Platform,
        range: PageRange,
        attrs: &mut [SvmAttribute],
    ) -> Result {
        // kfd checks the VA before the query types.
        Self::is_valid(pf, range)?;
        let queries = Self::check_queries(attrs)?;
        let agg = Aggregate::over(self, range);
        // Answers are written in place one by one. An unknown gpu_id in an
        // ACCESS query stops the fill there, and the answers before it stay
        // written: kfd copies the buffer back to user space even on error.
        for (slot, q) in attrs.iter_mut().zip(queries) {
            *slot = Self::encode_value(slot.value, self.answer(&agg, q)?);
        }
        Ok(())
    }

    /// The uAPI form of one GET_ATTR answer.
    fn encode_value(input_value: u32, v: AttrValue) -> SvmAttribute {
        match v {
            AttrValue::PreferredLoc(l) => {
                SvmAttribute::new(attr_type::PREFERRED_LOC, Location::to_uapi(l))
            }
            AttrValue::PrefetchLoc(l) => {
                SvmAttribute::new(attr_type::PREFETCH_LOC, Location::to_uapi(l))
            }
            AttrValue::Access(_, kind) => SvmAttribute::new(kind.attr_type(), input_value),
            AttrValue::SetFlags(f) => SvmAttribute::new(attr_type::SET_FLAGS, f.bits()),
            AttrValue::ClrFlags(f) => SvmAttribute::new(attr_type::CLR_FLAGS, f.bits()),
            AttrValue::Granularity(g) => {
                SvmAttribute::new(attr_type::GRANULARITY, u32::from(g.log2()))
            }
        }
    }

    /// `AMDKFD_IOC_SET_XNACK_MODE`: a negative value queries; 0 or more sets.
    ///
    /// Returns the mode after the call (1 on, 0 off).
    ///
    /// # Errors
    /// EBUSY while the process has user queues; EPERM when enabling and a GPU
    /// cannot run with retry faults; ENOMEM when disabling and the ranges'
    /// memory cannot be reserved (the mode then stays on).
    pub fn set_xnack_mode(&mut self, pf: &mut dyn Platform, value: i32) -> Result<i32> {
        if value >= 0 {
            // Any positive value means "on". kfd compares the value with its
            // `bool`, so 2 while already on passes as a change and unreserves
            // every range a second time; svmsim does not copy that bug.
            self.set_xnack(pf, value != 0)?;
        }
        Ok(i32::from(self.xnack_enabled))
    }

    /// The first SVM GPU that cannot run this process with retry faults,
    /// as `kfd_process_xnack_mode(p, supported)` decides: `supported` asks
    /// whether the process may turn XNACK on (SET_XNACK_MODE), otherwise
    /// what its default is. Per GPU:
    /// 1. a GPU that cannot retry at all blocks;
    /// 2. asked for support, a GPU that chooses per process allows it;
    /// 3. GFX 10 and later (but GC 12.1) block: no shader preemption
    ///    during page faults;
    /// 4. otherwise the mode the driver booted with (`noretry`) decides.
    fn xnack_blocker(&self, supported: bool) -> Option<GpuId> {
        let fixed_12_1 = self
            .config
            .kernel
            .has(crate::kernel::Change::Gfx121XnackFixed);
        self.devices
            .iter()
            .find(|(_, d)| {
                d.svm
                    && !(d.xnack
                        && ((supported && d.gc.xnack_per_process(fixed_12_1))
                            || (d.gc.xnack_possible() && self.xnack_boot)))
            })
            .map(|(_, d)| d.id)
    }

    /// Sets the XNACK mode (`kfd_ioctl_set_xnack_mode`).
    ///
    /// # Errors
    /// See [`Process::set_xnack_mode`].
    pub fn set_xnack(&mut self, pf: &mut dyn Platform, enable: bool) -> Result {
        // 1. No mode change under running queues: their hardware state was set
        //    up for the current mode.
        if !self.queues.is_empty() {
            return Err(Error::QueuesActive(self.queues.len()));
        }
        // 2. Nothing to do.
        if enable == self.xnack_enabled {
            return Ok(());
        }
        // 3. Every GPU must be able to run with retry faults.
        if enable && let Some(id) = self.xnack_blocker(true) {
            return Err(Error::XnackUnsupported(id.raw()));
        }
        // 4. `svm_range_switch_xnack_reserve_mem`: with XNACK off every range
        //    holds system memory it may need when it cannot fault; reserve it
        //    all, or nothing.
        if enable {
            pf.unreserve_mem_limit(self.svms.total_pages().bytes());
        } else {
            let mut done = 0;
            for r in self.svms.iter() {
                let bytes = r.range().npages().bytes();
                if let Err(e) = pf.reserve_mem_limit(bytes) {
                    pf.unreserve_mem_limit(done);
                    return Err(e);
                }
                done += bytes;
            }
        }
        self.xnack_enabled = enable;
        Ok(())
    }

    /// Creates a user queue on the GPU with this gpu_id.
    ///
    /// # Errors
    /// [`Error::UnknownGpu`] (EINVAL) when the process has no such GPU.
    pub fn create_queue(&mut self, gpu_id: u32) -> Result<QueueId> {
        let gpu = self.gpuidx(gpu_id).ok_or(Error::UnknownGpu(gpu_id))?;
        let q = QueueId(self.next_queue);
        self.next_queue += 1;
        self.queues.insert(q, gpu);
        Ok(q)
    }

    /// Destroys a user queue.
    ///
    /// # Errors
    /// [`Error::NoSuchQueue`] (EINVAL) when there is no such queue.
    pub fn destroy_queue(&mut self, q: u32) -> Result {
        self.queues
            .remove(&QueueId(q))
            .map(drop)
            .ok_or(Error::NoSuchQueue(q))
    }

    // ---------------------------------------------------------------------
    // The typed API.

    /// Checks that every page of `range` lies in a VMA that SVM may manage
    /// (`svm_range_is_valid`).
    ///
    /// # Errors
    /// [`Error::NotMapped`] or [`Error::IoMapping`], both EFAULT.
    pub fn is_valid(pf: &dyn Platform, range: PageRange) -> Result {
        let mut page = range.start();
        while page < range.end() {
            let vma = pf.vma_at(page).ok_or(Error::NotMapped {
                range,
                page: page.raw(),
            })?;
            if vma.flags.io {
                return Err(Error::IoMapping {
                    range,
                    page: page.raw(),
                });
            }
            debug_assert!(
                vma.range.end() > page,
                "vma_at returned a VMA that ends before the page"
            );
            page = vma.range.end();
        }
        Ok(())
    }

    /// SET_ATTR over `range` with validated attributes (`svm_range_set_attr`).
    ///
    /// # Errors
    /// EFAULT when the VA is not fully mapped by ordinary VMAs; ENOMEM when
    /// new ranges cannot reserve system memory (XNACK off). On error the
    /// range list is as it was before the call.
    pub fn set_attr(
        &mut self,
        pf: &mut dyn Hardware,
        range: PageRange,
        ops: &[AttrOp],
    ) -> Result<SetAttrOutcome> {
        // 1. The attributes were checked by `check_attrs`.
        // 2.-3. Locks and the deferred-work flush (see the module's note).
        self.deferred_list_work(pf);
        // 4. The VA must be fully covered by VMAs SVM may manage.
        Self::is_valid(pf, range)?;
        // 5.-6. `svm_range_add`: plan the clones, splits and gap ranges.
        let plan = self
            .svms
            .plan_add(range, ops, self.default_attrs(), self.max_range_pages());
        // New ranges reserve system memory while XNACK is off
        // (`svm_range_new(.., update_mem_usage = true)`); a failure frees
        // everything made so far and leaves the list untouched.
        if !self.xnack_enabled {
            let mut done = 0;
            for r in &plan.new {
                let bytes = r.range().npages().bytes();
                if let Err(e) = pf.reserve_mem_limit(bytes) {
                    pf.unreserve_mem_limit(done);
                    return Err(e);
                }
                done += bytes;
            }
        }
        // 7.-8. Insert the new pieces, apply the attributes, drop the originals.
        //    The mapping update is one flag for the whole call.
        self.svms.commit(&plan, ops);
        let update_mapping = ops.iter().any(|op| op.updates_mapping(self.xnack_enabled));
        let mut out = SetAttrOutcome {
            updated: plan.update.len(),
            created: plan.new.len(),
            split: plan.remove.len(),
            remapped: plan.remap.len(),
            mapped: 0,
        };
        // 8a. Clearing GPU_READ_MOSTLY ends read duplication there: the
        //     copies go, the masters stay where they are (UVM's unset of
        //     ReadMostly, `uvm_va_range_unset_read_duplication`, keeps each
        //     page where a copy is; svmsim's master is that copy).
        let read_mostly = SvmFlags::from_bits(uapi::flag::GPU_READ_MOSTLY);
        if !self.dups.is_empty()
            && ops
                .iter()
                .any(|op| matches!(op, AttrOp::ClrFlags(f) if f.contains(read_mostly)))
        {
            for &start in &plan.update {
                let r = self.svms.get(start).expect("updated range");
                if !r.attrs.flags.contains(read_mostly) {
                    let whole = r.range();
                    self.collapse_duplicates(pf, whole, None);
                }
            }
        }
        // 8b. (2026) NO_ACCESS: `svm_range_apply_attrs` takes an IH
        //     checkpoint, so retry faults queued before the call are dropped
        //     rather than remap the range, and marks the GPUs to unmap.
        let no_access = if self.config.kernel.has(Change::NoAccessUnmaps) {
            ops.iter().fold(GpuMask::default(), |mut m, op| {
                if let AttrOp::NoAccess(g) = *op {
                    m.insert(g);
                }
                m
            })
        } else {
            GpuMask::default()
        };
        if !no_access.is_empty() && !plan.update.is_empty() {
            self.update_checkpoint_timestamp(pf);
        }
        // 9.-10. Migrate (prefetch) and map each updated range. A migration
        //    error is remembered, and the loop goes on with the next range.
        let mut ret = Ok(());
        for &start in &plan.update {
            // (2026) `svm_range_needs_unmap`: unmap the range from the GPUs
            // that lost access; a range no GPU maps any more is neither
            // migrated nor mapped.
            if !no_access.is_empty() {
                let whole = self.svms.get(start).expect("updated range").range();
                self.unmap_from_gpus(
                    pf,
                    start,
                    whole,
                    UnmapTrigger::UnmapFromCpu,
                    Some(no_access),
                );
                if !self.is_mapped(start) {
                    continue;
                }
            }
            let migrated = match self.trigger_migration(pf, start) {
                Ok(m) => m,
                Err(e) => {
                    ret = Err(e);
                    continue;
                }
            };
            let r = self.svms.get(start).expect("updated range is in the list");
            let xnack_off_or_always = !self.xnack_enabled
                || r.attrs
                    .flags
                    .contains(SvmFlags::from_bits(uapi::flag::GPU_ALWAYS_MAPPED));
            if migrated && xnack_off_or_always && self.is_mapped(start) {
                // The migration's notifier evicted the range; the restore
                // work remaps it.
                continue;
            }
            if migrated && self.xnack_enabled && self.config.lazy_map_after_prefetch {
                // The seed thread's option: GPUs fault the range in lazily.
                continue;
            }
            // Xe's prefetch is a bind: the range is mapped on every GPU
            // that may access it, whether or not it moved (kfd with XNACK
            // on maps only the in-place GPUs here).
            let binds = r.attrs.prefetch_loc.is_some() && self.policy.prefetch_binds();
            if !migrated && !update_mapping && !binds {
                continue;
            }
            let whole = r.range();
            let gpus = binds.then(|| r.attrs.access.or(r.attrs.access_in_place));
            match self.validate_and_map(pf, start, whole, gpus) {
                Ok(true) => out.mapped += 1,
                Ok(false) => {}
                Err(e) => {
                    // The remaining ranges are still processed; the ioctl
                    // returns the error (SVM:3809-3817).
                    migrate::note(pf, &e, crate::inject::Response::Returned);
                    ret = Err(e);
                }
            }
        }
        // 11. Pieces whose split point cuts a granularity block: rebuild their
        //     mappings, since a huge PTE may have spanned the cut.
        for &start in &plan.remap {
            let whole = self
                .svms
                .get(start)
                .expect("remap piece is in the list")
                .range();
            match self.validate_and_map(pf, start, whole, None) {
                Ok(true) => out.mapped += 1,
                Ok(false) => {}
                Err(e) => {
                    // The remaining ranges are still processed; the ioctl
                    // returns the error (SVM:3809-3817).
                    migrate::note(pf, &e, crate::inject::Response::Returned);
                    ret = Err(e);
                }
            }
        }
        self.release_bos(pf);
        ret.map(|()| out)
    }

    /// GET_ATTR over `range` (`svm_range_get_attr`).
    ///
    /// # Errors
    /// EFAULT when the VA is not fully mapped; EINVAL when an ACCESS query
    /// names a gpu_id the process does not have.
    pub fn get_attr(
        &self,
        pf: &dyn Platform,
        range: PageRange,
        queries: &[AttrQuery],
    ) -> Result<Vec<AttrValue>> {
        Self::is_valid(pf, range)?;
        let agg = Aggregate::over(self, range);
        queries.iter().map(|&q| self.answer(&agg, q)).collect()
    }

    /// One GET_ATTR answer from the combined attributes.
    fn answer(&self, agg: &Aggregate, q: AttrQuery) -> Result<AttrValue> {
        Ok(match q {
            AttrQuery::PreferredLoc => AttrValue::PreferredLoc(agg.preferred_loc),
            AttrQuery::PrefetchLoc => AttrValue::PrefetchLoc(agg.prefetch_loc),
            AttrQuery::Access(raw) => {
                let gpu = self.gpuidx(raw).ok_or(Error::UnknownGpu(raw))?;
                let kind = if agg.access.contains(gpu) {
                    AccessKind::Access
                } else if agg.access_in_place.contains(gpu) {
                    AccessKind::AccessInPlace
                } else {
                    AccessKind::NoAccess
                };
                AttrValue::Access(self.devices[gpu].id, kind)
            }
            AttrQuery::SetFlags => AttrValue::SetFlags(SvmFlags::from_bits(agg.flags_and)),
            AttrQuery::ClrFlags => AttrValue::ClrFlags(SvmFlags::from_bits(!agg.flags_or)),
            AttrQuery::Granularity => AttrValue::Granularity(agg.granularity),
        })
    }

    /// `svm_range_update_checkpoint_timestamp`: per GPU that supports SVM,
    /// the IH timestamp of the newest retry fault still in its ring, if
    /// any. Faults up to it are dropped (-EAGAIN) until a newer one comes.
    fn update_checkpoint_timestamp(&mut self, pf: &dyn Hardware) {
        for (g, _) in self.devices.iter() {
            if self.bitmap_supported.contains(g)
                && let Some(ts) = pf.ih_checkpoint(g)
            {
                self.checkpoint_ts[g] = Some(ts);
            }
        }
    }

    /// The munmap notifier (`svm_range_unmap_from_cpu`): unmaps `range`
    /// from the GPUs now and splits the ranges, parking the pieces with
    /// their deferred op. The unmapped pieces keep their DMA mappings, VRAM
    /// and reservation until [`Process::deferred_list_work`] frees them.
    pub fn unmap_from_cpu(&mut self, pf: &mut dyn Hardware, range: PageRange) {
        // The notifier runs only for ranges the unmap overlaps: memory SVM
        // has no range for leaves the checkpoints alone.
        if self.svms.overlapping(range).next().is_none() {
            return;
        }
        // The policy's history of this memory goes with it, and so do
        // its read duplicates.
        self.policy.on_unmap(range);
        self.collapse_duplicates(pf, range, None);
        // 2. (2024+) Remember, per GPU, the newest retry fault still in its
        //    ring: it and every older one are stragglers on memory that may
        //    be going away, dropped rather than served.
        self.update_checkpoint_timestamp(pf);
        // 4.-5. Children and parents alike: unmap the overlap from the GPUs
        //    (every overlapping child, even one already being freed, as
        //    kfd's child loop does), then split.
        let hit = self.svms.cuts(range);
        if !self.policy.splits_ranges() {
            // drm_gpusvm's rule instead of 4.-5.: a range never splits. A
            // range the munmap covers only in part first moves its pages
            // that stay mapped back to system memory (the garbage
            // collector's `drm_gpusvm_range_evict` of a partial unmap);
            // then it is unmapped from every GPU and goes whole, and the
            // memory left has no range until its next fault makes one.
            for (start, cut) in hit {
                let whole = self.svms.get(start).expect("overlapping range").range();
                for rest in [
                    PageRange::new(whole.start(), cut.start()),
                    PageRange::new(cut.end(), whole.end()),
                ] {
                    if !rest.is_empty() {
                        self.uninjected = true;
                        let moved = self.vram_to_ram(
                            pf,
                            start,
                            rest,
                            crate::events::MigrateTrigger::TtmEviction,
                        );
                        self.uninjected = false;
                        moved.expect("uninjected, VRAM to RAM does not fail");
                    }
                }
                self.unmap_from_gpus(pf, start, whole, UnmapTrigger::UnmapFromCpu, None);
                self.svms.unmap_split(whole);
            }
            self.schedule_deferred(pf);
            return;
        }
        for (start, cut) in hit {
            self.unmap_from_gpus(pf, start, cut, UnmapTrigger::UnmapFromCpu, None);
        }
        self.svms.unmap_split(range);
        // 6. The deferred list work is scheduled; the platform runs it.
        self.schedule_deferred(pf);
    }

    /// `schedule_deferred_list_work`: the worker runs as soon as the
    /// platform gets to it, or (injected) up to 10 ms later; work queued
    /// while one is waiting joins it.
    fn schedule_deferred(&mut self, pf: &mut dyn Hardware) {
        if !self.svms.has_pending_ops() || self.deferred_due_ns.is_some() {
            return;
        }
        if let Some(i) = pf.inject(crate::inject::Site::DeferredDelay) {
            pf.injected(
                crate::inject::Site::DeferredDelay,
                crate::inject::Response::Delayed,
            );
            let late = i.draw % crate::inject::MAX_INJECTED_DELAY_NS;
            self.deferred_due_ns = Some(pf.now_ns().saturating_add(late));
        }
    }

    /// Whether munmap left work for [`Process::deferred_list_work`].
    pub fn deferred_pending(&self) -> bool {
        self.svms.has_pending_ops()
    }

    /// When the worker may run munmap's deferred work: `None` when none
    /// is queued; the time it was scheduled for (at once, unless it was
    /// made late). A flush (SET_ATTR, the restore work, exit) does not wait.
    pub fn deferred_due_ns(&self) -> Option<u64> {
        self.svms
            .has_pending_ops()
            .then(|| self.deferred_due_ns.unwrap_or(0))
    }

    /// The fault-ring checkpoints the deferred work waits for: per GPU, the
    /// timestamp up to which the platform must have delivered retry faults
    /// before [`Process::deferred_list_work`] runs.
    pub fn deferred_checkpoints(&self) -> Vec<(GpuIndex, u64)> {
        self.checkpoint_ts
            .iter()
            .filter_map(|(g, ts)| ts.map(|t| (g, t)))
            .collect()
    }

    /// The deferred list work (`svm_range_deferred_list_work`): frees the
    /// pieces munmap left behind (`SVM_OP_UNMAP_RANGE`: their DMA mappings,
    /// VRAM pages and, XNACK off, their reservation) and turns the other
    /// parked pieces into ordinary ranges. Returns whether there was work.
    ///
    /// Since the checkpoint rule (2024, "Change kfd/svm page fault drain
    /// handling") the worker no longer waits for the fault rings: faults
    /// still in them are dropped by [`Process::restore_pages`] when they
    /// are up to a checkpoint. Only exit drains.
    pub fn deferred_list_work(&mut self, pf: &mut dyn Hardware) -> bool {
        if !self.svms.has_pending_ops() {
            return false;
        }
        self.deferred_due_ns = None;
        let gone = self.svms.apply_pending_ops();
        let pages: u64 = gone.iter().map(|r| r.range().npages().raw()).sum();
        for mut r in gone {
            // `svm_range_free(prange, do_unmap = true)`.
            for (gpu, addr) in r.dma.unmap_sys(0, r.range().npages().raw()) {
                pf.dma_unmap(gpu, addr);
            }
            r.bo = None;
            self.bo_scan_needed = true;
        }
        // Free pieces give back their reservation while XNACK is off.
        if !self.xnack_enabled {
            pf.unreserve_mem_limit(PageCount::new(pages).bytes());
        }
        self.release_bos(pf);
        true
    }

    /// Process exit (`svm_range_list_fini`): frees every range, its DMA
    /// mappings, VRAM and memory reservation. No notifier runs and no
    /// UNMAP_FROM_GPU is reported: the process's GPU VMs go away with it.
    pub fn exit(&mut self, pf: &mut dyn Hardware) {
        self.free_duplicates(pf);
        let gone = self.svms.clear();
        let pages: u64 = gone.iter().map(|r| r.range().npages().raw()).sum();
        for mut r in gone {
            for (gpu, addr) in r.dma.unmap_sys(0, r.range().npages().raw()) {
                pf.dma_unmap(gpu, addr);
            }
        }
        if !self.xnack_enabled {
            pf.unreserve_mem_limit(PageCount::new(pages).bytes());
        }
        self.bo_scan_needed = true;
        self.release_bos(pf);
        // The KFD buffers go too (`kfd_process_free_outstanding_kfd_bos`).
        for (_, b) in std::mem::take(&mut self.kfd_bos) {
            Self::release_kfd_bo(pf, b);
        }
        self.evicted_bos = 0;
        self.bo_restore_due_ns = None;
        self.queues_stopped = false;
        let everything = PageRange::new(PageNum::new(0), PageNum::new(u64::MAX));
        for (g, _) in self.devices.iter() {
            pf.unmap_ptes(g, everything);
        }
        self.queues.clear();
        self.checkpoint_ts = PerGpu::from_vec(vec![None; self.devices.len()]);
        self.evicted_ranges = 0;
        self.restore_due_ns = None;
        self.restore_error = None;
        self.exited = true;
    }
}

/// The combined attributes of the ranges a GET_ATTR covers.
struct Aggregate {
    preferred_loc: Option<Location>,
    prefetch_loc: Option<Location>,
    access: GpuMask,
    access_in_place: GpuMask,
    flags_and: u32,
    flags_or: u32,
    granularity: Granularity,
}

/// Tracks a location across ranges: the first range's value, UNDEFINED for
/// good once a range is UNDEFINED or differs.
#[derive(Clone, Copy)]
enum LocTrack {
    Unset,
    Same(Location),
    Undefined,
}

impl LocTrack {
    fn see(self, v: Option<Location>) -> Self {
        match (self, v) {
            (LocTrack::Undefined, _) | (_, None) => LocTrack::Undefined,
            (LocTrack::Unset, Some(l)) => LocTrack::Same(l),
            (LocTrack::Same(a), Some(b)) if a == b => LocTrack::Same(a),
            (LocTrack::Same(_), Some(_)) => LocTrack::Undefined,
        }
    }

    fn get(self) -> Option<Location> {
        match self {
            LocTrack::Same(l) => Some(l),
            LocTrack::Unset | LocTrack::Undefined => None,
        }
    }
}

impl Aggregate {
    /// Combines the ranges overlapping `range`; gaps between them are ignored.
    /// With no range at all, the defaults of a new range answer.
    fn over(p: &Process, range: PageRange) -> Self {
        // GET_ATTR flushes the deferred work first; pieces it would free
        // are not there for it.
        let mut it = p
            .svms
            .overlapping(range)
            .filter(|r| r.op != Some(ListOp::UnmapRange))
            .peekable();
        if it.peek().is_none() {
            let d = p.default_attrs();
            return Self {
                preferred_loc: d.preferred_loc,
                prefetch_loc: d.prefetch_loc,
                access: d.access,
                access_in_place: d.access_in_place,
                flags_and: d.flags.bits(),
                flags_or: d.flags.bits(),
                granularity: d.granularity,
            };
        }
        let mut pref = LocTrack::Unset;
        let mut pfch = LocTrack::Unset;
        let mut agg = Self {
            preferred_loc: None,
            prefetch_loc: None,
            access: p.bitmap_supported,
            access_in_place: p.bitmap_supported,
            flags_and: u32::MAX,
            flags_or: 0,
            granularity: Granularity::MAX,
        };
        for r in it {
            pref = pref.see(r.attrs.preferred_loc);
            pfch = pfch.see(r.attrs.prefetch_loc);
            agg.access = agg.access.and(r.attrs.access);
            agg.access_in_place = agg.access_in_place.and(r.attrs.access_in_place);
            agg.flags_and &= r.attrs.flags.bits();
            agg.flags_or |= r.attrs.flags.bits();
            agg.granularity = agg.granularity.min(r.attrs.granularity);
        }
        agg.preferred_loc = pref.get();
        agg.prefetch_loc = pfch.get();
        agg
    }
}

/// [`Process::peer_link`] over the devices alone, for a policy's
/// [`crate::policy::PeerView`] while the policy itself is borrowed.
fn peer_link(devices: &PerGpu<ProcessDevice>, pcie: bool, a: GpuIndex, b: GpuIndex) -> PeerLink {
    if a == b || matches!((devices[a].hive, devices[b].hive), (Some(x), Some(y)) if x == y) {
        PeerLink::Fast
    } else if pcie {
        PeerLink::Pcie
    } else {
        PeerLink::None
    }
}

mod fault;
pub use fault::{DropReason, FaultOutcome};
mod kfd_bo;
pub use kfd_bo::{KfdBo, MAX_KFD_BO_BYTES, PROCESS_BACK_OFF_TIME_NS, PROCESS_RESTORE_TIME_NS};
mod dup;
pub use dup::{DupBlock, Duplicates};
mod map;
mod migrate;

#[cfg(test)]
mod tests;

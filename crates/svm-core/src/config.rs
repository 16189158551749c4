//! Every knob of a run, in one serde value: the fault policy, kfd's
//! tunables, the review thread's options, the accounting mode, and the
//! GPU's side of retrying.
//!
//! # Overview
//! [`Config`] is what a run is, besides its workload and machine. It is
//! read from `--set KEY=VALUE`, from a `--config FILE.toml`, and from a
//! scenario's `[config]` table; every run's JSON carries it whole, so a
//! result file is enough to repeat its run. [`KNOBS`] is its catalogue:
//! each key with its default, unit, what it accepts and one line of
//! meaning (`svmsim config` prints it), and the one parser of a key's
//! value ([`Config::set`]).
//!
//! A run's `driver` (`kfd`, `uvm`, `xe`) is a set of defaults: its fault
//! policy and the tunables that driver fixes (UVM drops no fault as a
//! duplicate by time). Setting it resets those keys to the driver's values,
//! except the keys a user gave ([`Config::set`] remembers which), so
//! `--set policy=X --set driver=uvm` and `--set driver=uvm --set policy=X`
//! are one run. The CLI also picks the driver's profile family.
//!
//! The engine reads its part through `Process::set_config`; the GPU's
//! part (`gpu_retry_delay_ns`, `gpu_max_retries`) is read by the simulator,
//! whose hardware retries. Sizes and durations are written in the one
//! grammar of [`crate::units`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kernel::{Change, KernelVersion};
use crate::policy::{self, VictimPolicy};
use crate::units;

/// The longest duration a knob takes: an hour of simulated time, far past
/// any delay a driver would use, and far from overflowing the clock.
pub const MAX_DURATION_NS: u64 = 3_600_000_000_000;

/// The largest default granularity kfd takes
/// (`svms->default_granularity = min(svm_default_granularity, 0x1B)`).
pub const MAX_DEFAULT_GRANULARITY: u8 = 0x1B;

/// Every knob of a run. Fields are in the order `svmsim config` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whose driver the run models; its defaults ([`Driver::defaults`])
    /// fill the keys a user did not give.
    pub driver: Driver,
    /// The Linux release whose amdkfd the engine follows
    /// ([`crate::kernel`]: each 2024–2026 change from the release it
    /// arrived in).
    pub kernel: KernelVersion,
    /// The GPU fault policy, by registry name.
    pub policy: String,
    /// The granularity of a new range, log2 pages (kfd's module parameter
    /// `svm_default_granularity`, 2024); also the size of the range made
    /// for a fault on unregistered memory.
    pub default_granularity: u8,
    /// How VRAM eviction picks its victims.
    pub victim_policy: VictimPolicy,
    /// Faults on a range within this long of its last validation are
    /// dropped as duplicates (`AMDGPU_SVM_RANGE_RETRY_FAULT_PENDING`), ns.
    pub retry_fault_pending_ns: u64,
    /// The XNACK-off restore work runs this long after the first eviction,
    /// and a failing one reschedules itself this much later
    /// (`AMDGPU_SVM_RANGE_RESTORE_DELAY_MS`), ns.
    pub restore_delay_ns: u64,
    /// Unmap old system DMA mappings in bulk after RAM→VRAM (the review
    /// thread's option) rather than when each slot is rewritten.
    pub bulk_dma_unmap: bool,
    /// Migrate a 2 MiB-aligned, VRAM-contiguous window as one compound
    /// device page (the 2025–26 THP device-page work in drm_pagemap;
    /// amdkfd still migrates order-0 pages): one per-page cost and one
    /// copy job for its 512 pages.
    pub compound_device_pages: bool,
    /// With XNACK on, leave mapping after a prefetch to the GPU faults
    /// (the seed thread's proposal) rather than map eagerly.
    pub lazy_map_after_prefetch: bool,
    /// Unmap from every GPU that mapped a range, not only those with
    /// ACCESS or ACCESS_IN_PLACE: closes kfd's stale-PTE cases.
    pub unmap_every_mapped_gpu: bool,
    /// Keep kfd's own `vram_pages` counter the kernel's way and have the
    /// checker compare it with the truth (the 2026 drift).
    pub kernel_accounting: bool,
    /// amdgpu's IH drops a retry fault that is stale, raised before its
    /// range was last validated, before kfd's handler sees it
    /// (`amdgpu_gmc_filter_faults`'s timestamp check, whose reference the
    /// 2026 retry-fault series corrected); off, every fault reaches
    /// `svm_range_restore_pages`.
    pub ih_stale_filter: bool,
    /// How long a GPU waits before retrying a fault the driver dropped, ns.
    pub gpu_retry_delay_ns: u64,
    /// Faults in a row on one instruction after which a wave gives up
    /// (EBUSY): a livelock.
    pub gpu_max_retries: u32,
    /// UVM: when the GPU retries a batch's faults
    /// (`uvm_perf_fault_replay_policy`).
    pub uvm_replay_policy: policy::Replay,
    /// UVM: the percentage of a batch's faults that must be duplicates for
    /// its batch-flush to read PUT again and flush what arrived during the
    /// service too (`uvm_perf_fault_replay_update_put_ratio`).
    pub uvm_replay_update_put_ratio: u8,
    /// UVM: prefetch around a block's faults (`uvm_perf_prefetch_enable`);
    /// off, a fault moves its own page only (on-demand migration).
    pub uvm_prefetch: bool,
    /// UVM: the density prefetch's threshold, percent of a subtree's pages
    /// that must be resident or faulted (`uvm_perf_prefetch_threshold`).
    pub uvm_prefetch_threshold: u8,
    /// UVM: detect thrashing and throttle or pin thrashing pages
    /// (`uvm_perf_thrashing_enable`).
    pub uvm_thrashing: bool,
    /// UVM: whether access-counter notifications migrate pages
    /// (`uvm_perf_access_counter_migration_enable`): by default only on
    /// GPUs that reach system memory through ATS.
    pub uvm_access_counter_migration: policy::AccessCounters,
    /// UVM: remote accesses to a 2 MiB region that make a notification
    /// (`uvm_perf_access_counter_threshold`).
    pub uvm_access_counter_threshold: u16,
    /// UVM: serve reads of read-mostly memory (GPU_READ_MOSTLY) with
    /// read-only copies on the reading GPU (ReadMostly advice); off, they
    /// migrate as other memory does.
    pub uvm_read_duplication: bool,
    /// UVM: GPUs outside one hive are PCIe peers, as after
    /// `UvmEnablePeerAccess` (`cudaDeviceEnablePeerAccess`): each maps the
    /// others' VRAM and copies to it directly. GPUs of one hive (NVLink)
    /// are peers either way, as UVM enables NVLink peers at registration.
    pub uvm_pcie_peers: bool,
    /// UVM: tune the thrashing lapse as the 595 source does, whose shrink
    /// test repeats the grow test (docs/research/uvm.md §3.5); off, as it
    /// meant to.
    pub uvm_lapse_vote_bug: bool,
    /// Xe: a migration between two GPUs copies VRAM to VRAM over the peer
    /// link (drm_pagemap's device-to-device migration, re-enabled in
    /// 7.0-rc3); off, it goes through system memory (the tree between
    /// 2026-01-07 and its revert).
    pub xe_device_to_device: bool,
    /// Xe: after a migration an atomic forced into VRAM, the CPU may not
    /// take the pages back for this long (`atomic_svm_timeslice_ms`, 5 ms,
    /// the devmem allocation's `timeslice_expiration`): a CPU fault there
    /// waits it out. 0: none.
    pub xe_atomic_timeslice_ns: u64,
    /// Check the SDMA fence of a migration's copy and fail the chunk when
    /// its job failed (a fix kfd does not have); off, as kfd: the
    /// migration commits whatever the failed job left.
    pub check_copy_fence: bool,
    /// Failures to inject ([`crate::inject`]): where, when, with which
    /// errno; the draws come from the run's seed.
    pub inject: Vec<crate::inject::Rule>,
    /// The keys given through [`Config::set`], which a driver's defaults
    /// leave alone. Not part of the value: two configurations that run
    /// alike are equal, however their keys were given.
    #[serde(skip)]
    pub given: Given,
}

/// The knobs a user gave, by index in [`KNOBS`]; opaque outside this
/// module (public only so that `Config { .., ..c }` works everywhere).
#[derive(Clone, Copy, Debug, Default)]
pub struct Given(u64);

impl PartialEq for Given {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Given {}

/// Whose fault handling a run models. A driver is a set of defaults over
/// the same engine: its policy and the tunables it fixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// Linux amdkfd (`kfd_svm.c`): the specification of the engine.
    #[default]
    Kfd,
    /// NVIDIA UVM, 595 series (`kernel-open/nvidia-uvm/`,
    /// `docs/research/uvm.md`).
    Uvm,
    /// Intel Xe over drm_gpusvm and drm_pagemap (`xe_svm.c`,
    /// `docs/research/xe.md`).
    Xe,
}

impl Driver {
    /// Every driver, in the order `compare --drivers` lists them.
    pub const ALL: [Driver; 3] = [Driver::Kfd, Driver::Uvm, Driver::Xe];

    /// Its key value.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Kfd => "kfd",
            Driver::Uvm => "uvm",
            Driver::Xe => "xe",
        }
    }

    /// The driver of `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The keys this driver sets and its values for them, as
    /// [`Config::set`] reads them. Every driver sets the same keys.
    pub fn defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Driver::Kfd => &[
                ("policy", "partial"),
                ("retry_fault_pending_ns", "2ms"),
                ("victim_policy", "lru"),
                ("compound_device_pages", "false"),
            ],
            // UVM services every fault it reads from the buffer; the
            // duplicates of one batch are coalesced by the policy
            // (`uvm_gpu_replayable_faults.c`, docs/research/uvm.md §1),
            // never dropped by time.
            Driver::Uvm => &[
                ("policy", "uvm"),
                ("retry_fault_pending_ns", "0"),
                // 2 MiB root chunks in the order their blocks first became
                // resident (docs/research/uvm.md §4.1).
                ("victim_policy", "first-resident"),
                ("compound_device_pages", "false"),
            ],
            Driver::Xe => &[
                ("policy", "xe"),
                // No time window: Xe dedups by address, chaining faults
                // to its page-fault cache (docs/research/xe.md §2a).
                ("retry_fault_pending_ns", "0"),
                // TTM's LRU, as kfd's.
                ("victim_policy", "lru"),
                // 2 MiB device folios (the January 2026 THP series,
                // in mainline's drm_pagemap: xe.md §7).
                ("compound_device_pages", "true"),
            ],
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            driver: Driver::Kfd,
            kernel: KernelVersion::default(),
            policy: policy::Policy::default().name().to_owned(),
            default_granularity: 9,
            victim_policy: VictimPolicy::default(),
            retry_fault_pending_ns: 2_000_000,
            restore_delay_ns: 1_000_000,
            bulk_dma_unmap: false,
            compound_device_pages: false,
            lazy_map_after_prefetch: false,
            unmap_every_mapped_gpu: false,
            kernel_accounting: false,
            ih_stale_filter: false,
            gpu_retry_delay_ns: 100_000,
            gpu_max_retries: 10_000,
            uvm_replay_policy: policy::Replay::BatchFlush,
            uvm_replay_update_put_ratio: policy::REPLAY_UPDATE_PUT_RATIO,
            uvm_prefetch: true,
            uvm_prefetch_threshold: 51,
            uvm_thrashing: true,
            uvm_access_counter_migration: policy::AccessCounters::Auto,
            uvm_access_counter_threshold: 256,
            uvm_read_duplication: true,
            uvm_pcie_peers: false,
            uvm_lapse_vote_bug: true,
            xe_device_to_device: true,
            xe_atomic_timeslice_ns: 5_000_000,
            check_copy_fence: false,
            inject: Vec::new(),
            given: Given(0),
        }
    }
}

/// A key or value the configuration refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No such key.
    #[error("unknown key {key:?}; keys are: {known}")]
    UnknownKey {
        /// The key given.
        key: String,
        /// Close keys, or all of them.
        known: String,
    },
    /// A value the key does not take.
    #[error("{key}: {value:?} is not {accepts}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What the key takes.
        accepts: String,
    },
    /// `--set` wants `KEY=VALUE`.
    #[error("{0:?} is not KEY=VALUE")]
    NotAssignment(String),
}

/// One knob of [`Config`].
pub struct Knob {
    /// Its key.
    pub key: &'static str,
    /// Its unit, or what kind of value it is.
    pub unit: &'static str,
    /// One line of meaning.
    pub doc: &'static str,
    get: fn(&Config) -> String,
    set: fn(&mut Config, &str) -> Result<(), String>,
    accepts: fn() -> String,
}

impl fmt::Debug for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Knob").field("key", &self.key).finish()
    }
}

impl Knob {
    /// What values it takes, for `svmsim config` and error messages.
    pub fn accepts(&self) -> String {
        (self.accepts)()
    }

    /// Its value in `c`, written as [`Config::set`] reads it.
    pub fn get(&self, c: &Config) -> String {
        (self.get)(c)
    }
}

fn bool_of(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(String::new()),
    }
}

fn bools() -> String {
    "true or false (on/off)".into()
}

fn durations() -> String {
    "a duration up to 3600s: nanoseconds (1500) or a number with ns, us, ms or s (100us, 3ms)"
        .into()
}

macro_rules! bool_knob {
    ($key:literal, $field:ident, $doc:literal) => {
        Knob {
            key: $key,
            unit: "bool",
            doc: $doc,
            get: |c| c.$field.to_string(),
            set: |c, s| {
                c.$field = bool_of(s)?;
                Ok(())
            },
            accepts: bools,
        }
    };
}

macro_rules! duration_knob {
    ($key:literal, $field:ident, $doc:literal) => {
        Knob {
            key: $key,
            unit: "duration",
            doc: $doc,
            get: |c| units::show_duration(c.$field),
            set: |c, s| {
                let ns = units::parse_duration_ns(s).map_err(|_| String::new())?;
                if ns > MAX_DURATION_NS {
                    return Err(String::new());
                }
                c.$field = ns;
                Ok(())
            },
            accepts: durations,
        }
    };
}

/// A knob whose value is one of a type's names (`ALL`, `name`,
/// `from_name`).
macro_rules! name_knob {
    ($key:literal, $field:ident, $ty:ty, $doc:literal, $note:literal) => {
        Knob {
            key: $key,
            unit: "name",
            doc: $doc,
            get: |c| c.$field.name().to_owned(),
            set: |c, s| {
                c.$field = <$ty>::from_name(s.trim()).ok_or_else(String::new)?;
                Ok(())
            },
            accepts: || {
                let names: Vec<&str> = <$ty>::ALL.iter().map(|v| v.name()).collect();
                format!("one of: {}{}", names.join(", "), $note)
            },
        }
    };
}

macro_rules! number_knob {
    ($key:literal, $field:ident, $ty:ty, $lo:expr, $hi:expr, $unit:literal, $doc:literal, $note:literal) => {
        Knob {
            key: $key,
            unit: $unit,
            doc: $doc,
            get: |c| c.$field.to_string(),
            set: |c, s| {
                let n: $ty = s.trim().parse().map_err(|_| String::new())?;
                if !($lo..=$hi).contains(&n) {
                    return Err(String::new());
                }
                c.$field = n;
                Ok(())
            },
            accepts: || format!("a whole number from {} to {}{}", $lo, $hi, $note),
        }
    };
}

/// Every knob, in the order `svmsim config` lists them. A knob's key is
/// its field's name everywhere (`--set`, files, JSON); a duration's value
/// may carry its unit (`restore_delay_ns=500us`).
pub static KNOBS: &[Knob] = &[
    Knob {
        key: "driver",
        unit: "name",
        doc: "whose driver the run models: its policy and tunables, for the keys not given",
        get: |c| c.driver.name().to_owned(),
        set: |c, s| {
            let d = Driver::from_name(s.trim()).ok_or_else(String::new)?;
            c.driver = d;
            for (key, value) in d.defaults() {
                let i = index(key);
                if c.given.0 & (1 << i) == 0 {
                    (KNOBS[i].set)(c, value)?;
                }
            }
            Ok(())
        },
        accepts: || {
            let names: Vec<&str> = Driver::ALL.iter().map(|d| d.name()).collect();
            format!("one of: {}", names.join(", "))
        },
    },
    Knob {
        key: "kernel",
        unit: "release",
        doc: "the Linux release whose amdkfd the engine follows (2024-2026 changes gated by release)",
        get: |c| c.kernel.to_string(),
        set: |c, s| {
            c.kernel = s.parse().map_err(|_| String::new())?;
            Ok(())
        },
        accepts: || {
            let changes: Vec<String> = Change::ALL
                .iter()
                .map(|c| format!("{} {}", c.since(), c.name()))
                .collect();
            format!(
                "a release from {} to {} (changes: {})",
                KernelVersion::OLDEST,
                KernelVersion::NEWEST,
                changes.join(", ")
            )
        },
    },
    Knob {
        key: "policy",
        unit: "name",
        doc: "the GPU fault policy (what a fault migrates and maps)",
        get: |c| c.policy.clone(),
        set: |c, s| {
            let e = policy::lookup(s.trim()).ok_or_else(String::new)?;
            c.policy = e.name.to_owned();
            Ok(())
        },
        accepts: || format!("a policy: {}", policy::names().join(", ")),
    },
    number_knob!(
        "default_granularity",
        default_granularity,
        u8,
        0,
        MAX_DEFAULT_GRANULARITY,
        "log2 pages",
        "granularity of a new range and of a fault's unregistered range (svm_default_granularity)",
        " (9 = 2MiB)"
    ),
    name_knob!(
        "victim_policy",
        victim_policy,
        VictimPolicy,
        "which VRAM buffer an allocation that does not fit evicts first",
        ""
    ),
    duration_knob!(
        "retry_fault_pending_ns",
        retry_fault_pending_ns,
        "faults on a range this soon after its validation are duplicates (AMDGPU_SVM_RANGE_RETRY_FAULT_PENDING)"
    ),
    duration_knob!(
        "restore_delay_ns",
        restore_delay_ns,
        "XNACK off: the restore work runs this long after an eviction (AMDGPU_SVM_RANGE_RESTORE_DELAY_MS)"
    ),
    bool_knob!(
        "bulk_dma_unmap",
        bulk_dma_unmap,
        "unmap stale system DMA addresses in bulk after RAM->VRAM (the review thread's option)"
    ),
    bool_knob!(
        "compound_device_pages",
        compound_device_pages,
        "migrate 2MiB-aligned, VRAM-contiguous windows as one compound device page (THP device pages)"
    ),
    bool_knob!(
        "lazy_map_after_prefetch",
        lazy_map_after_prefetch,
        "XNACK on: leave mapping after a prefetch to GPU faults (the seed thread's proposal)"
    ),
    bool_knob!(
        "unmap_every_mapped_gpu",
        unmap_every_mapped_gpu,
        "unmap every GPU that mapped a range, closing kfd's stale-PTE cases"
    ),
    bool_knob!(
        "kernel_accounting",
        kernel_accounting,
        "keep kfd's vram_pages counter the kernel's way; the checker reports its drift"
    ),
    bool_knob!(
        "ih_stale_filter",
        ih_stale_filter,
        "amdgpu's IH drops retry faults raised before their range's last validation (the timestamp filter)"
    ),
    duration_knob!(
        "gpu_retry_delay_ns",
        gpu_retry_delay_ns,
        "how long a GPU waits before retrying a fault the driver dropped"
    ),
    number_knob!(
        "gpu_max_retries",
        gpu_max_retries,
        u32,
        1,
        u32::MAX,
        "count",
        "faults in a row on one instruction before the wave gives up with EBUSY",
        ""
    ),
    name_knob!(
        "uvm_replay_policy",
        uvm_replay_policy,
        policy::Replay,
        "UVM: when the GPU retries a batch's faults (uvm_perf_fault_replay_policy)",
        " (batch-flush: UVM's default)"
    ),
    number_knob!(
        "uvm_replay_update_put_ratio",
        uvm_replay_update_put_ratio,
        u8,
        0,
        100,
        "percent",
        "UVM: duplicates in a batch, in percent, above which batch-flush also drops the faults that arrived during the service (uvm_perf_fault_replay_update_put_ratio)",
        " (50: UVM's default)"
    ),
    bool_knob!(
        "uvm_prefetch",
        uvm_prefetch,
        "UVM: prefetch around a block's faults (uvm_perf_prefetch_enable); off: on-demand, page by page"
    ),
    number_knob!(
        "uvm_prefetch_threshold",
        uvm_prefetch_threshold,
        u8,
        1,
        100,
        "percent",
        "UVM: a subtree is prefetched when this share of its pages is resident or faulted",
        " (51: UVM's default)"
    ),
    bool_knob!(
        "uvm_thrashing",
        uvm_thrashing,
        "UVM: detect thrashing pages, throttle their faults and pin them (uvm_perf_thrashing_enable)"
    ),
    name_knob!(
        "uvm_access_counter_migration",
        uvm_access_counter_migration,
        policy::AccessCounters,
        "UVM: migrate a 2 MiB region a GPU accessed 256 times remotely (uvm_perf_access_counter_migration_enable)",
        " (auto: on for ATS GPUs only, UVM's -1)"
    ),
    number_knob!(
        "uvm_access_counter_threshold",
        uvm_access_counter_threshold,
        u16,
        1,
        u16::MAX,
        "count",
        "UVM: remote accesses to a 2 MiB region that make an access-counter notification",
        " (256: UVM's default)"
    ),
    bool_knob!(
        "uvm_read_duplication",
        uvm_read_duplication,
        "UVM: reads of GPU_READ_MOSTLY memory get read-only copies on the reading GPU; off: they migrate"
    ),
    bool_knob!(
        "uvm_pcie_peers",
        uvm_pcie_peers,
        "UVM: GPUs on PCIe are peers (UvmEnablePeerAccess): they map each other's VRAM and copy directly; off: through system memory"
    ),
    bool_knob!(
        "uvm_lapse_vote_bug",
        uvm_lapse_vote_bug,
        "UVM: tune the thrashing lapse as the 595 source does (short gaps grow it); off: as meant"
    ),
    bool_knob!(
        "xe_device_to_device",
        xe_device_to_device,
        "Xe: migrate between GPUs VRAM to VRAM over the peer link; off: through system memory"
    ),
    duration_knob!(
        "xe_atomic_timeslice_ns",
        xe_atomic_timeslice_ns,
        "Xe: a CPU fault waits this long after an atomic forced its pages into VRAM (atomic_svm_timeslice_ms)"
    ),
    bool_knob!(
        "check_copy_fence",
        check_copy_fence,
        "check a migration's SDMA fence and fail the chunk if its job failed (not in kfd); off: kfd commits undefined bytes"
    ),
    Knob {
        key: "inject",
        unit: "rules",
        doc: "failures to inject at the kernel's failure points, drawn from the seed (`svmsim inject-sites`); empty: none",
        get: |c| crate::inject::show_rules(&c.inject),
        set: |c, s| {
            c.inject = crate::inject::parse_rules(s)?;
            Ok(())
        },
        accepts: || format!("rules separated by commas: {}", crate::inject::RULE_GRAMMAR),
    },
];

/// The knob of `key`.
pub fn knob(key: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.key == key)
}

/// The index in [`KNOBS`] of a key the code names.
fn index(key: &str) -> usize {
    KNOBS
        .iter()
        .position(|k| k.key == key)
        .unwrap_or_else(|| unreachable!("{key} is a knob"))
}

/// Keys close to `key` (or all of them), for an error message.
fn close_keys(key: &str) -> String {
    let close: Vec<&str> = KNOBS
        .iter()
        .map(|k| k.key)
        .filter(|k| {
            k.contains(key)
                || key.contains(k)
                || k.split('_').any(|w| w.len() > 3 && key.contains(w))
        })
        .collect();
    let list = if close.is_empty() {
        KNOBS.iter().map(|k| k.key).collect()
    } else {
        close
    };
    list.join(", ")
}

impl Config {
    /// Sets `key` to `value`, written as the knob's unit reads it.
    ///
    /// # Errors
    /// An unknown key (with the close ones), or a value the key does not
    /// take (with what it does).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let i = KNOBS
            .iter()
            .position(|k| k.key == key.trim())
            .ok_or_else(|| ConfigError::UnknownKey {
                key: key.to_owned(),
                known: close_keys(key),
            })?;
        let k = &KNOBS[i];
        // Applied to a copy, so that a refused value changes nothing.
        let mut next = self.clone();
        (k.set)(&mut next, value).map_err(|_| ConfigError::BadValue {
            key: k.key,
            value: value.to_owned(),
            accepts: k.accepts(),
        })?;
        next.given.0 |= 1 << i;
        *self = next;
        Ok(())
    }

    /// kfd's defaults with `driver`'s over them.
    pub fn for_driver(driver: Driver) -> Self {
        let mut c = Config::default();
        (KNOBS[index("driver")].set)(&mut c, driver.name())
            .unwrap_or_else(|_| unreachable!("every driver's defaults are valid"));
        c
    }

    /// Applies one `KEY=VALUE`.
    ///
    /// # Errors
    /// As [`Config::set`], or text without `=`.
    pub fn assign(&mut self, kv: &str) -> Result<(), ConfigError> {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| ConfigError::NotAssignment(kv.to_owned()))?;
        self.set(k, v)
    }

    /// The value of `key`, as [`Config::set`] reads it back.
    pub fn get(&self, key: &str) -> Option<String> {
        knob(key).map(|k| k.get(self))
    }

    /// Checks what serde cannot: the policy is registered, the numbers are
    /// in range. A value read from a file goes through this.
    ///
    /// # Errors
    /// The first key whose value is refused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for k in KNOBS {
            let v = k.get(self);
            let mut probe = Config::default();
            (k.set)(&mut probe, &v).map_err(|_| ConfigError::BadValue {
                key: k.key,
                value: v.clone(),
                accepts: k.accepts(),
            })?;
        }
        Ok(())
    }

    /// The keys whose values differ from the defaults of the run's
    /// driver, as `KEY=VALUE`; the driver comes first when it is not kfd,
    /// so that the list, applied in order, makes this configuration.
    pub fn changes(&self) -> Vec<String> {
        let d = Config::for_driver(self.driver);
        KNOBS
            .iter()
            .filter(|k| k.key == "driver" && self.driver != Driver::Kfd || k.get(self) != k.get(&d))
            .map(|k| format!("{}={}", k.key, k.get(self)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_reads_back_what_it_prints() {
        let c = Config::default();
        for k in KNOBS {
            let mut d = Config::default();
            d.set(k.key, &k.get(&c)).unwrap();
            assert_eq!(d, c, "{}", k.key);
            assert!(!k.doc.is_empty() && !k.accepts().is_empty());
        }
        c.validate().unwrap();
        assert!(c.changes().is_empty());
    }

    #[test]
    fn every_field_is_a_knob_in_order() {
        // A field added without a knob could not be set or listed.
        // (The text keeps the struct's order; a `Value` would sort it.)
        let mut c = Config::default();
        c.set("inject", "dma_map@1").unwrap();
        let text = serde_json::to_string(&c).unwrap();
        let back: Config = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut fields: Vec<(usize, &str)> = v
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k.as_str()))
            .collect();
        fields.sort_unstable();
        let fields: Vec<&str> = fields.into_iter().map(|(_, k)| k).collect();
        let keys: Vec<&str> = KNOBS.iter().map(|k| k.key).collect();
        assert_eq!(fields, keys);
    }

    #[test]
    fn keys_set_their_fields() {
        let mut c = Config::default();
        // key=value, and what it sets
        c.assign("policy=whole-range").unwrap();
        c.assign("default_granularity=4").unwrap();
        c.assign("victim_policy=largest").unwrap();
        c.assign("retry_fault_pending_ns=3ms").unwrap();
        c.assign("restore_delay_ns=500us").unwrap();
        c.assign("bulk_dma_unmap=on").unwrap();
        c.assign("gpu_retry_delay_ns=1500").unwrap();
        c.assign("gpu_max_retries=7").unwrap();
        assert_eq!(c.policy, "whole-range");
        assert_eq!(c.default_granularity, 4);
        assert_eq!(c.victim_policy, VictimPolicy::Largest);
        assert_eq!(c.retry_fault_pending_ns, 3_000_000);
        assert_eq!(c.restore_delay_ns, 500_000);
        assert!(c.bulk_dma_unmap);
        assert_eq!(c.gpu_retry_delay_ns, 1500);
        assert_eq!(c.gpu_max_retries, 7);
        assert_eq!(c.changes().len(), 8);
    }

    #[test]
    fn a_driver_sets_its_keys_but_not_those_given() {
        // kfd's defaults are the defaults; every driver sets the same keys.
        assert_eq!(Config::for_driver(Driver::Kfd), Config::default());
        assert!(KNOBS.len() <= 64, "Given is a u64 of knob indices");
        let keys = |d: Driver| d.defaults().iter().map(|(k, _)| *k).collect::<Vec<_>>();
        for d in Driver::ALL {
            assert_eq!(keys(d), keys(Driver::Kfd), "{d}");
            assert_eq!(Driver::from_name(d.name()), Some(d));
        }
        let uvm = Config::for_driver(Driver::Uvm);
        assert_eq!(uvm.policy, "uvm");
        assert_eq!(uvm.retry_fault_pending_ns, 0);
        assert_eq!(uvm.changes(), ["driver=uvm"]);
        // A given key stays, in either order.
        for order in [
            ["policy=whole-range", "driver=uvm"],
            ["driver=uvm", "policy=whole-range"],
        ] {
            let mut c = Config::default();
            for kv in order {
                c.assign(kv).unwrap();
            }
            assert_eq!(c.policy, "whole-range", "{order:?}");
            assert_eq!(c.retry_fault_pending_ns, 0, "{order:?}");
            assert_eq!(c.changes(), ["driver=uvm", "policy=whole-range"]);
        }
        // Back to kfd restores kfd's values of the keys not given.
        let mut c = uvm.clone();
        c.set("driver", "kfd").unwrap();
        assert_eq!(c, Config::default());
        // `changes`, applied in order, makes the configuration again.
        let mut c = Config::default();
        c.assign("retry_fault_pending_ns=1ms").unwrap();
        c.assign("driver=uvm").unwrap();
        let mut again = Config::default();
        for kv in c.changes() {
            again.assign(&kv).unwrap();
        }
        assert_eq!(again, c);
        assert_eq!(again.retry_fault_pending_ns, 1_000_000);
        assert!(Config::default().set("driver", "amdgpu").is_err());
    }

    #[test]
    fn bad_keys_and_values_name_the_key_and_what_it_takes() {
        let mut c = Config::default();
        let e = c.assign("polcy=partial").unwrap_err().to_string();
        assert!(e.contains("\"polcy\"") && e.contains("policy"), "{e}");
        let e = c.set("policy", "fastest").unwrap_err().to_string();
        assert!(
            e.starts_with("policy: \"fastest\"") && e.contains("partial"),
            "{e}"
        );
        let e = c.set("default_granularity", "28").unwrap_err().to_string();
        assert!(e.contains("0 to 27"), "{e}");
        let e = c
            .set("restore_delay_ns", "3 weeks")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("restore_delay_ns:") && e.contains("ms"),
            "{e}"
        );
        assert!(c.set("bulk_dma_unmap", "maybe").is_err());
        let e = c
            .set("gpu_retry_delay_ns", "18446744073709551615")
            .unwrap_err()
            .to_string();
        assert!(e.contains("up to 3600s"), "{e}");
        c.set("restore_delay_ns", "3600s").unwrap();
        c.set("restore_delay_ns", "1ms").unwrap();
        assert!(c.set("gpu_max_retries", "0").is_err());
        assert!(matches!(
            c.assign("policy"),
            Err(ConfigError::NotAssignment(_))
        ));
        assert_eq!(c, Config::default(), "a refused value changes nothing");
        let bad = Config {
            policy: "nope".into(),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }
}

//! One run: a workload under one configuration, with what the reports
//! need recorded along the way.

use serde::{Deserialize, Serialize};
use svm_core::config::{Config, ConfigError};
use svm_sim::machine::{Machine, SmiEvent, timeline::Timeline};
use svm_sim::timing::Profile;
use svm_workloads::{Params, Report, Workload, WorkloadError};

/// One configuration of one workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "SpecRepr", try_from = "SpecRepr")]
pub struct RunSpec {
    /// The workload's name (`svmsim workloads`).
    pub workload: String,
    /// Its data size in bytes.
    pub size: u64,
    /// Its iterations.
    pub iters: u32,
    /// A built-in profile's name, or a profile file.
    pub profile: String,
    /// GPUs in the machine (default: what the workload needs).
    pub gpus: Option<usize>,
    /// VRAM per GPU in bytes (default: the profile's).
    pub vram: Option<u64>,
    /// Size VRAM so that the footprint is this share of it (1.25: 125%).
    pub oversubscribe: Option<f64>,
    /// Migration granularity, log2 pages, for every SET_ATTR (default:
    /// the workload's, or kfd's 9).
    pub granularity: Option<u32>,
    /// Boot with XNACK (retry faults) on (`"on"` or `"off"` in JSON).
    pub xnack: bool,
    /// Prefetch every buffer to the GPU it is registered for
    /// (PREFETCH_LOC with the ACCESS), as an XNACK-off application does.
    #[serde(default)]
    pub prefetch: bool,
    /// The seed: the workload's random choices and the interleaving.
    pub seed: u64,
    /// Every knob of the engine (the fault policy among them), resolved.
    pub config: Config,
    /// Phantom mode: no page keeps bytes (`svm_sim::pages`), so results
    /// cannot be checked; the memory system runs as with real bytes, and
    /// footprints far beyond the host's memory fit.
    #[serde(default)]
    pub phantom: bool,
}

/// [`RunSpec`] as files hold it: the policy stays a field of its own, as
/// schema `svmsim.runs/1` had it (and /2 has), beside the whole configuration (which
/// a file written before it existed lacks).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecRepr {
    workload: String,
    size: u64,
    iters: u32,
    profile: String,
    gpus: Option<usize>,
    vram: Option<u64>,
    oversubscribe: Option<f64>,
    /// The same as `config.policy`.
    policy: String,
    granularity: Option<u32>,
    #[serde(with = "onoff")]
    xnack: bool,
    #[serde(default)]
    prefetch: bool,
    seed: u64,
    #[serde(default)]
    config: Option<Config>,
    #[serde(default)]
    phantom: bool,
}

impl From<RunSpec> for SpecRepr {
    fn from(s: RunSpec) -> Self {
        Self {
            workload: s.workload,
            size: s.size,
            iters: s.iters,
            profile: s.profile,
            gpus: s.gpus,
            vram: s.vram,
            oversubscribe: s.oversubscribe,
            policy: s.config.policy.clone(),
            granularity: s.granularity,
            xnack: s.xnack,
            prefetch: s.prefetch,
            seed: s.seed,
            config: Some(s.config),
            phantom: s.phantom,
        }
    }
}

impl TryFrom<SpecRepr> for RunSpec {
    type Error = String;

    fn try_from(r: SpecRepr) -> Result<Self, String> {
        let config = match r.config {
            None => Config {
                policy: r.policy,
                ..Config::default()
            },
            Some(c) if c.policy == r.policy => c,
            Some(c) => {
                return Err(format!(
                    "policy {:?} and config.policy {:?} disagree",
                    r.policy, c.policy
                ));
            }
        };
        Ok(Self {
            workload: r.workload,
            size: r.size,
            iters: r.iters,
            profile: r.profile,
            gpus: r.gpus,
            vram: r.vram,
            oversubscribe: r.oversubscribe,
            granularity: r.granularity,
            xnack: r.xnack,
            prefetch: r.prefetch,
            seed: r.seed,
            config,
            phantom: r.phantom,
        })
    }
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            workload: "stream".into(),
            size: 64 << 20,
            iters: 2,
            profile: "mi210".into(),
            gpus: None,
            vram: None,
            oversubscribe: None,
            granularity: None,
            xnack: true,
            prefetch: false,
            seed: 1,
            config: Config::default(),
            phantom: false,
        }
    }
}

/// The largest `size` a real-data run takes.
pub const MAX_SIZE: u64 = 4 << 30;

/// The largest phantom run: 4 TiB, a billion pages of bookkeeping.
pub const MAX_PHANTOM_SIZE: u64 = 4 << 40;
/// The least VRAM a GPU may have: one 2 MiB block.
pub const MIN_VRAM: u64 = 2 << 20;
/// The largest oversubscription factor.
pub const MAX_OVERSUBSCRIPTION: f64 = 16.0;
/// The most iterations a run takes.
pub const MAX_ITERS: u32 = 100_000;
/// The most page touches (footprint pages times iterations) a run may need.
pub const MAX_PAGE_TOUCHES: u64 = svm_sim::limits::MAX_PAGE_TOUCHES;

/// What a run needs of the host, estimated from its spec before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostNeed {
    /// Host memory, bytes: every byte of the footprint three times (the
    /// process's pages, the checker's shadow, the workload's CPU
    /// reference), 64 bytes of bookkeeping per page, the TLBs, and 64 MiB.
    pub bytes: u64,
    /// Page touches: footprint pages times iterations (the work).
    pub page_touches: u64,
}

/// The host memory runs may take at once: half of the machine's memory
/// (`MemTotal` of /proc/meminfo), or 8 GiB where that cannot be read.
pub fn default_host_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024) / 2)
        })
        .unwrap_or(8 << 30)
}

/// A configuration that cannot run, named by the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The flag or field.
    pub field: &'static str,
    /// What is wrong and what would do.
    pub message: String,
}

fn spec_err(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

/// Edits (insertions, deletions, substitutions) from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// "Did you mean" for `name` among `known`: the names a typo away (or
/// holding it, or held by it), then every name, so the list is whole.
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.into_iter().collect();
    let near = (name.chars().count() / 3).max(2);
    let close: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| {
            (!name.is_empty() && (k.contains(name) || name.contains(k)))
                || edit_distance(name, k) <= near
        })
        .collect();
    let all = known.join(", ");
    if close.is_empty() {
        format!("expected one of: {all}")
    } else {
        format!(
            "did you mean {}? expected one of: {all}",
            close.join(" or ")
        )
    }
}

/// The profile a run gets when it names none: its driver's family, with
/// GPUs enough for `gpus` (kfd: an MI210, or an MI250X node for two or
/// more; UVM: PCIe GPUs of the `uvm-pcie` profile; Xe: `xe`'s).
pub fn default_profile(driver: svm_core::config::Driver, gpus: usize) -> &'static str {
    use svm_core::config::Driver;
    match driver {
        Driver::Kfd if gpus > 1 => "mi250x",
        Driver::Kfd => "mi210",
        Driver::Uvm => "uvm-pcie",
        Driver::Xe => "xe",
    }
}

/// A profile by built-in name or file path.
///
/// # Errors
/// Neither a built-in name nor a readable, valid profile file.
pub fn load_profile(name: &str) -> Result<Profile, SpecError> {
    if let Ok(p) = Profile::built_in(name) {
        return Ok(p);
    }
    if name.ends_with(".toml") || name.contains('/') {
        let text = crate::input::read_text(
            std::path::Path::new(name),
            crate::input::MAX_PROFILE_BYTES,
            "profile",
        )
        .map_err(|e| spec_err("profile", e))?;
        return Profile::parse(name, &text).map_err(|e| spec_err("profile", e.to_string()));
    }
    Err(spec_err(
        "profile",
        format!(
            "unknown profile {name:?}; {} (or a .toml file)",
            suggest(name, svm_sim::timing::BUILT_IN.iter().map(|(n, _)| *n))
        ),
    ))
}

impl RunSpec {
    /// The workload, policy and profile the spec names.
    ///
    /// # Errors
    /// An unknown name, or values that cannot work together.
    pub fn resolve(&self) -> Result<(&'static (dyn Workload + Sync), Profile), SpecError> {
        let w = svm_workloads::by_name(&self.workload).ok_or_else(|| {
            spec_err(
                "workload",
                format!(
                    "unknown workload {:?}; {}",
                    self.workload,
                    suggest(&self.workload, svm_workloads::ALL.iter().map(|w| w.name()))
                ),
            )
        })?;
        self.check_config()?;
        let profile = load_profile(&self.profile)?;
        if self.size < 4096 {
            return Err(spec_err("size", "must be at least 4096 bytes (one page)"));
        }
        if self.phantom && !w.phantom_ready() {
            return Err(spec_err(
                "phantom",
                format!(
                    "{} keeps host data the size of its footprint (its input or CPU reference); \
                     phantom mode runs {}",
                    w.name(),
                    svm_workloads::ALL
                        .iter()
                        .filter(|w| w.phantom_ready())
                        .map(|w| w.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if self.phantom && self.size > MAX_PHANTOM_SIZE {
            return Err(spec_err(
                "size",
                format!(
                    "{} is above {}, the most a phantom run tracks",
                    crate::size::show(self.size),
                    crate::size::show(MAX_PHANTOM_SIZE)
                ),
            ));
        }
        if !self.phantom && self.size > MAX_SIZE {
            return Err(spec_err(
                "size",
                format!(
                    "{} is above {}: real-data runs keep every byte, and the workloads' CPU \
                     references a copy (footprints beyond host memory run with --phantom)",
                    crate::size::show(self.size),
                    crate::size::show(MAX_SIZE)
                ),
            ));
        }
        if self.iters == 0 || self.iters > MAX_ITERS {
            return Err(spec_err(
                "iters",
                format!("{} is not between 1 and {MAX_ITERS}", self.iters),
            ));
        }
        if let Some(v) = self.vram
            && !(MIN_VRAM..=svm_sim::limits::MAX_VRAM_BYTES).contains(&v)
        {
            return Err(spec_err(
                "vram",
                format!(
                    "{} is not between {} (one 2MiB block) and {}",
                    crate::size::show(v),
                    crate::size::show(MIN_VRAM),
                    crate::size::show(svm_sim::limits::MAX_VRAM_BYTES)
                ),
            ));
        }
        if let Some(g) = self.granularity
            && g > 0x3f
        {
            return Err(spec_err(
                "granularity",
                format!("{g} is above 63 (log2 pages)"),
            ));
        }
        if let Some(f) = self.oversubscribe
            && !(f.is_finite() && f > 0.0 && f <= MAX_OVERSUBSCRIPTION)
        {
            return Err(spec_err(
                "oversubscribe",
                format!(
                    "must be a number above 0 and at most {MAX_OVERSUBSCRIPTION} (1.25 = 125%)"
                ),
            ));
        }
        if self.oversubscribe.is_some() && self.vram.is_some() {
            return Err(spec_err(
                "oversubscribe",
                "give either --vram or --oversubscribe, not both",
            ));
        }
        if let Some(f) = self.oversubscribe {
            let p = Params {
                size: self.size,
                iters: self.iters,
                seed: self.seed,
            };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let vram = (w.footprint(&p) as f64 / f) as u64;
            if vram > svm_sim::limits::MAX_VRAM_BYTES {
                return Err(spec_err(
                    "oversubscribe",
                    format!(
                        "{f} asks for {} of VRAM per GPU for {}'s {} footprint, above {}; \
                         use a factor of at least {:.2e}",
                        crate::size::show(vram),
                        w.name(),
                        crate::size::show(w.footprint(&p)),
                        crate::size::show(svm_sim::limits::MAX_VRAM_BYTES),
                        w.footprint(&p) as f64 / svm_sim::limits::MAX_VRAM_BYTES as f64
                    ),
                ));
            }
            if vram < MIN_VRAM {
                return Err(spec_err(
                    "oversubscribe",
                    format!(
                        "{f} leaves {} of VRAM for {}'s {} footprint, below one 2MiB block; \
                         use a larger --size or a smaller factor",
                        crate::size::show(vram),
                        w.name(),
                        crate::size::show(w.footprint(&p))
                    ),
                ));
            }
        }
        let gpus = self.gpus.unwrap_or(w.gpus());
        let have = profile.gpus().len();
        if gpus < w.gpus() || gpus == 0 || gpus > have {
            let need = gpus.max(w.gpus()).max(1);
            let fits: Vec<String> = svm_sim::timing::BUILT_IN
                .iter()
                .filter_map(|(n, _)| Profile::built_in(n).ok())
                .filter(|p| p.gpus().len() >= need)
                .map(|p| format!("{} ({} GPUs)", p.name, p.gpus().len()))
                .collect();
            let fits = if fits.is_empty() {
                format!("no built-in profile has {need}")
            } else {
                format!("profiles with enough: {}", fits.join(", "))
            };
            return Err(spec_err(
                "gpus",
                format!(
                    "{gpus} GPUs: {} needs at least {}, profile {} has {have}; {fits}",
                    w.name(),
                    w.gpus(),
                    profile.name
                ),
            ));
        }
        Ok((w, profile))
    }

    /// What the run needs of the host ([`HostNeed`]), from its spec.
    ///
    /// # Errors
    /// A spec that does not resolve.
    pub fn host_need(&self) -> Result<HostNeed, SpecError> {
        let (w, profile) = self.resolve()?;
        let p = Params {
            size: self.size,
            iters: self.iters,
            seed: self.seed,
        };
        let footprint = w.footprint(&p);
        let pages = footprint.div_ceil(4096);
        let g = &profile.gpu;
        let gpus = self.gpus.unwrap_or(w.gpus()) as u64;
        let tlbs =
            svm_sim::limits::tlb_bytes(gpus, u64::from(g.compute_units), u64::from(g.tlb_entries));
        // Phantom: no bytes, only the pages' bookkeeping.
        let bytes_per_footprint_byte = if self.phantom { 0 } else { 3 };
        Ok(HostNeed {
            bytes: footprint
                .saturating_mul(bytes_per_footprint_byte)
                .saturating_add(pages.saturating_mul(64))
                .saturating_add(tlbs)
                .saturating_add(64 << 20),
            page_touches: pages.saturating_mul(u64::from(self.iters)),
        })
    }

    /// The fault policy's name.
    pub fn policy(&self) -> &str {
        &self.config.policy
    }

    /// Checks the configuration (a spec read from a file may hold
    /// anything), naming the key at fault.
    ///
    /// # Errors
    /// The first refused key: an unknown policy with the known ones, or a
    /// value out of range with what the key takes.
    pub fn check_config(&self) -> Result<(), SpecError> {
        self.config.validate().map_err(|e| match e {
            ConfigError::BadValue {
                key: "policy",
                value,
                ..
            } => spec_err(
                "policy",
                format!(
                    "unknown policy {value:?}; {}",
                    suggest(&value, svm_core::policy::names())
                ),
            ),
            ConfigError::BadValue {
                key,
                value,
                accepts,
            } => spec_err(key, format!("{value:?} is not {accepts}")),
            other => spec_err("config", other.to_string()),
        })
    }

    /// The machine a run of this spec starts from, recording what
    /// `capture` asks for.
    fn machine(
        &self,
        profile: &Profile,
        gpus: usize,
        vram: Option<u64>,
        capture: Capture,
    ) -> Result<Machine, SpecError> {
        let mut m = svm_workloads::machine_xnack(profile, gpus, vram, self.xnack)
            .map_err(|e| spec_err("gpus", e.to_string()))?;
        self.check_config()?;
        m.set_config(&self.config)
            .map_err(|e| spec_err("config", e.to_string()))?;
        m.set_seed(Some(self.seed));
        m.set_smi_log(capture.events);
        if capture.timeline {
            m.start_timeline();
        }
        if capture.trace {
            m.start_recording();
        }
        Ok(m)
    }

    /// A short label: what differs between runs of a comparison.
    pub fn label(&self) -> String {
        let mut s = self.policy().to_owned();
        for kv in self.config_changes() {
            s += &format!(" {kv}");
        }
        if let Some(g) = self.granularity {
            s += &format!(" g{g}");
        }
        if !self.xnack {
            s += " xnack-off";
        }
        if self.prefetch {
            s += " prefetch";
        }
        if let Some(f) = self.oversubscribe {
            s += &format!(" {:.0}%", f * 100.0);
        }
        s
    }

    /// The knobs other than the policy that differ from the defaults, as
    /// `KEY=VALUE` (the policy has a name and a flag of its own).
    pub fn config_changes(&self) -> Vec<String> {
        self.config
            .changes()
            .into_iter()
            .filter(|kv| !kv.starts_with("policy="))
            .collect()
    }

    /// The command line that runs this spec again.
    pub fn repro(&self) -> String {
        if let Some(file) = self.workload.strip_prefix("trace:") {
            let mut s = format!(
                "svmsim replay {file} --profile {} --policy {} --seed {}",
                self.profile,
                self.policy(),
                self.seed
            );
            for kv in self.config_changes() {
                s += &format!(" --set {kv}");
            }
            if let Some(g) = self.gpus {
                s += &format!(" --gpus {g}");
            }
            if let Some(v) = self.vram {
                s += &format!(" --vram {}", crate::size::show(v));
            }
            if !self.xnack {
                s += " --xnack off";
            }
            return s;
        }
        let mut s = format!(
            "svmsim run {} --size {} --iters {} --profile {} --policy {} --seed {}",
            self.workload,
            crate::size::show(self.size),
            self.iters,
            self.profile,
            self.policy(),
            self.seed
        );
        for kv in self.config_changes() {
            s += &format!(" --set {kv}");
        }
        if let Some(g) = self.gpus {
            s += &format!(" --gpus {g}");
        }
        if let Some(v) = self.vram {
            s += &format!(" --vram {}", crate::size::show(v));
        }
        if let Some(f) = self.oversubscribe {
            s += &format!(" --oversubscribe {f}");
        }
        if let Some(g) = self.granularity {
            s += &format!(" --granularity {g}");
        }
        if !self.xnack {
            s += " --xnack off";
        }
        if self.prefetch {
            s += " --prefetch";
        }
        if self.phantom {
            s += " --phantom";
        }
        s
    }
}

/// What to keep of a run besides its numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// The SMI event log.
    pub events: bool,
    /// The hardware timeline and the per-fault latencies.
    pub timeline: bool,
    /// The access trace (`--record`), encoded.
    pub trace: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Status {
    /// Finished, and the results matched the CPU reference.
    Ok,
    /// Finished, but the results did not match (a bug).
    Mismatch,
    /// Finished in phantom mode: no bytes were kept, so the results were
    /// not checked.
    Unchecked,
    /// A kernel died: a memory access fault the driver could not recover
    /// (XNACK off, or a fault the engine refused).
    Killed {
        /// The fault as the driver reports it.
        error: String,
    },
}

/// Defines [`Metrics`] and its column list from one field list: every
/// metric is a `u64`, its JSON key and its CSV column are the field's
/// name, in this order (`Metrics::COLUMNS`, `Metrics::values`).
macro_rules! metrics {
    ($($(#[$meta:meta])* $name:ident,)*) => {
        /// The numbers of a run, whether or not it finished.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        pub struct Metrics {
            $($(#[$meta])* pub $name: u64,)*
        }

        impl Metrics {
            /// Every metric's name, in order: the JSON keys and CSV columns.
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Every metric's value, in the order of [`Metrics::COLUMNS`].
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name),*]
            }
        }
    };
}

metrics! {
    /// Simulated ns from the first launch to the end of the last kernel.
    kernel_ns,
    /// Simulated ns from the first launch to its first wave's end.
    first_result_ns,
    /// GPU faults the engine saw (duplicates included).
    faults,
    /// Bytes migrated to and from VRAM (zero-filled pages included).
    migrated_bytes,
    /// Pages moved to VRAM (copied or zero-filled) and back to RAM.
    pages_to_vram,
    /// See `pages_to_vram`.
    pages_to_ram,
    /// Fault latency, raised to handled: p50 and p99, ns.
    fault_p50_ns,
    /// See `fault_p50_ns`.
    fault_p99_ns,
    /// Time faults waited on `svms->lock` and on migrate locks, ns.
    svms_lock_wait_ns,
    /// See `svms_lock_wait_ns`.
    migrate_lock_wait_ns,
    /// Copy-engine busy time, ns.
    copy_busy_ns,
    /// Queue evictions (XNACK off, or VRAM eviction).
    queue_evictions,
    /// TLB flushes, both kinds.
    tlb_flushes,
    /// Simulated clock at the end, ns.
    end_ns,
    /// Memory instructions the run's GPU waves and CPU threads performed,
    /// and how many were loads and stores: with the host's wall time, a
    /// rate.
    #[serde(default)]
    accesses,
    /// See `accesses`.
    #[serde(default)]
    reads,
    /// See `accesses`.
    #[serde(default)]
    writes,
    /// The atomics among the writes, and the retry faults atomics raised
    /// (to pages not mapped and, on a GPU whose atomics reach only its own
    /// VRAM, to pages mapped elsewhere). Absent when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    atomics,
    /// See `atomics`.
    #[serde(default, skip_serializing_if = "is_zero")]
    atomic_faults,
    /// Simulated ns CPU faults waited out Xe's atomic timeslice before
    /// taking pages back (`xe_atomic_timeslice_ns`). Absent when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    cpu_timeslice_wait_ns,
    /// Simulated ns CPU faults slept because the fault policy throttled
    /// them (UVM's thrashing throttle). Absent when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    cpu_throttle_wait_ns,
    /// Faults a batch-flush dropped from the buffer unserved (UVM's
    /// BATCH_FLUSH), the flushes that read PUT again because most of
    /// their batch were duplicates (`UPDATE_PUT`), and the service runs
    /// cut short after 5 throttled batches. Absent when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    faults_flushed,
    /// See `faults_flushed`.
    #[serde(default, skip_serializing_if = "is_zero")]
    flushes_update_put,
    /// See `faults_flushed`.
    #[serde(default, skip_serializing_if = "is_zero")]
    services_cut_by_throttles,
    /// Simulated ns the kernels' waves lived, summed over the waves, and
    /// the parts of it they spent parked on retry faults and held by
    /// stopped queues (the rest they computed and reached memory).
    #[serde(default)]
    wave_ns,
    /// See `wave_ns`.
    #[serde(default)]
    fault_stall_ns,
    /// See `wave_ns`.
    #[serde(default)]
    held_ns,
    /// Simulated ns the fault handlers were busy.
    #[serde(default)]
    handler_busy_ns,
    /// What became of the waves' faults: written into a ring, or
    /// filtered by its CAM as a repeat of a pending one; then served,
    /// dropped (the wave retries: `faults_retried` counts the retries) or
    /// refused by the handler, or dropped before it by the IH's stale
    /// filter or a batch flush (`faults_before_handler`).
    #[serde(default)]
    faults_raised,
    /// See `faults_raised`.
    #[serde(default)]
    faults_filtered,
    /// See `faults_raised`.
    #[serde(default)]
    faults_served,
    /// See `faults_raised`.
    #[serde(default)]
    faults_dropped,
    /// See `faults_raised`.
    #[serde(default)]
    faults_refused,
    /// See `faults_raised`.
    #[serde(default)]
    faults_before_handler,
    /// See `faults_raised`.
    #[serde(default)]
    faults_retried,
    /// Time the handlers spent on the served faults' migrations, and on
    /// mapping them (the HMM walk, DMA maps, PTE writes and flushes;
    /// `fault_bind_ns` the PTE writes and flushes alone), ns.
    #[serde(default)]
    fault_migrate_ns,
    /// See `fault_migrate_ns`.
    #[serde(default)]
    fault_map_ns,
    /// See `fault_migrate_ns`.
    #[serde(default)]
    fault_bind_ns,
    /// Pages the accesses touched, by where the PTE led: the GPU's own
    /// VRAM, a peer's, system memory over the host link (GPU waves only).
    #[serde(default)]
    touches_local,
    /// See `touches_local`.
    #[serde(default)]
    touches_peer,
    /// See `touches_local`.
    #[serde(default)]
    touches_sys,
    /// Bytes the GPU accesses loaded and stored, by the same three places
    /// as `touches_local`.
    #[serde(default)]
    bytes_local,
    /// See `bytes_local`.
    #[serde(default)]
    bytes_peer,
    /// See `bytes_local`.
    #[serde(default)]
    bytes_sys,
    /// The served faults' latency, raised to handled, summed (what
    /// `fault_p50_ns` and `fault_p99_ns` are percentiles of), and its
    /// phases, which add up to it: the delivery to the handler's ring,
    /// the wait there for the handler, the waits for the mmap lock,
    /// `svms->lock` and the range's migrate lock, and the handler's own
    /// work (`fault_migrate_ns` and `fault_map_ns` are parts of it), ns.
    #[serde(default)]
    fault_latency_ns,
    /// See `fault_latency_ns`.
    #[serde(default)]
    fault_delivery_ns,
    /// See `fault_latency_ns`.
    #[serde(default)]
    fault_queued_ns,
    /// See `fault_latency_ns`.
    #[serde(default)]
    fault_lock_ns,
    /// See `fault_latency_ns`.
    #[serde(default)]
    fault_handler_ns,
}

/// Whether a count is zero (a field left out of the JSON then).
#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Metrics {
    /// What the machine's counters give, whether or not the run finished.
    fn counted(c: &svm_sim::gpu::HwCounters) -> Self {
        Self {
            pages_to_vram: c.pages_to_vram + c.pages_zero_filled,
            pages_to_ram: c.pages_to_ram,
            queue_evictions: c.queue_evictions,
            tlb_flushes: c.tlb_flush_legacy + c.tlb_flush_heavyweight,
            atomic_faults: c.atomic_faults,
            cpu_timeslice_wait_ns: c.cpu_timeslice_wait_ns,
            cpu_throttle_wait_ns: c.cpu_throttle_wait_ns,
            faults_flushed: c.faults_flushed,
            flushes_update_put: c.flushes_update_put,
            services_cut_by_throttles: c.services_cut_by_throttles,
            faults_raised: c.faults_raised,
            faults_filtered: c.faults_filtered,
            faults_served: c.faults_served,
            faults_dropped: c.faults_dropped,
            faults_refused: c.faults_refused,
            faults_before_handler: c.faults_ih_filtered + c.faults_flushed,
            fault_latency_ns: c.served_latency_ns,
            fault_delivery_ns: c.served_delivery_ns,
            fault_queued_ns: c.served_queued_ns,
            fault_lock_ns: c.served_lock_ns,
            fault_handler_ns: c
                .served_latency_ns
                .saturating_sub(c.served_delivery_ns + c.served_queued_ns + c.served_lock_ns),
            ..Self::default()
        }
    }

    fn from_report(r: &Report, m: &Machine) -> Self {
        Self {
            kernel_ns: r.kernel_ns,
            first_result_ns: r.first_result_ns,
            faults: r.faults,
            migrated_bytes: r.migrated_bytes,
            fault_p50_ns: r.fault_p50_ns,
            fault_p99_ns: r.fault_p99_ns,
            svms_lock_wait_ns: r.svms_lock_wait_ns,
            migrate_lock_wait_ns: r.migrate_lock_wait_ns,
            copy_busy_ns: r.copy_busy_ns,
            end_ns: r.end_ns,
            faults_retried: r.kernels.iter().map(|k| k.retries).sum(),
            touches_local: r.kernels.iter().map(|k| k.touches_local).sum(),
            touches_peer: r.kernels.iter().map(|k| k.touches_peer).sum(),
            touches_sys: r.kernels.iter().map(|k| k.touches_sys).sum(),
            bytes_local: r.kernels.iter().map(|k| k.bytes_local).sum(),
            bytes_peer: r.kernels.iter().map(|k| k.bytes_peer).sum(),
            bytes_sys: r.kernels.iter().map(|k| k.bytes_sys).sum(),
            wave_ns: r.kernels.iter().map(|k| k.wave_ns).sum(),
            fault_stall_ns: r.kernels.iter().map(|k| k.fault_stall_ns).sum(),
            held_ns: r.kernels.iter().map(|k| k.held_ns).sum(),
            handler_busy_ns: r.handler_busy_ns,
            // (Accesses are set from the machine's counts at the end:
            // `finish`.)
            ..Self::counted(&m.counters())
        }
    }

    /// What a machine counted by now for processes `pids`, its kernels'
    /// stats summed: a scenario's numbers (which has no workload's report).
    pub fn of_machine(m: &Machine, pids: &[svm_sim::machine::Pid]) -> Self {
        let mut x = pids
            .first()
            .map_or_else(Self::default, |&p| Self::from_machine(m, p));
        x.faults = pids.iter().map(|&p| svm_workloads::faults(m, p)).sum();
        for (gpu_id, _, k) in m.kernels() {
            if gpu_id == 0 {
                continue;
            }
            x.faults_retried += k.retries;
            x.touches_local += k.touches_local;
            x.touches_peer += k.touches_peer;
            x.touches_sys += k.touches_sys;
            x.bytes_local += k.bytes_local;
            x.bytes_peer += k.bytes_peer;
            x.bytes_sys += k.bytes_sys;
            x.wave_ns += k.wave_ns;
            x.fault_stall_ns += k.fault_stall_ns;
            x.held_ns += k.held_ns;
        }
        for &p in pids {
            x.add_phases(&m.process(p).svm);
        }
        x
    }

    /// Adds process `svm`'s served faults' migrate, map and bind time
    /// (from the engine's size classes).
    fn add_phases(&mut self, svm: &svm_core::process::Process) {
        for (_, classes) in svm.size_stats().iter() {
            for s in classes {
                self.fault_migrate_ns += s.migrate_ns;
                self.fault_map_ns += s.map_ns;
                self.fault_bind_ns += s.bind_ns;
            }
        }
    }

    /// What the machine counted, for a run that did not finish.
    fn from_machine(m: &Machine, pid: svm_sim::machine::Pid) -> Self {
        let c = m.counters();
        let mut lat = m.fault_latencies().to_vec();
        lat.sort_unstable();
        let pct = |q: f64| svm_workloads::percentile(&lat, q);
        let moved = c.pages_to_vram + c.pages_zero_filled + c.pages_to_ram + c.pages_peer;
        Self {
            kernel_ns: m.now_ns(),
            first_result_ns: 0,
            faults: svm_workloads::faults(m, pid),
            migrated_bytes: moved * 4096,
            fault_p50_ns: pct(0.5),
            fault_p99_ns: pct(0.99),
            svms_lock_wait_ns: c.svms_lock_wait_ns,
            migrate_lock_wait_ns: c.migrate_lock_wait_ns,
            copy_busy_ns: c.copy_busy_ns,
            end_ns: m.now_ns(),
            handler_busy_ns: c.handler_busy_ns,
            ..Self::counted(&c)
        }
    }
}

/// Process `svm`'s served faults on `gpu_id` by size class, named as
/// Xe's GT statistics are.
fn gt_stats(
    svm: &svm_core::process::Process,
    gpu_id: u32,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Some(g) = svm.gpuidx(gpu_id) else {
        return out;
    };
    let us = |ns: u64| ns / 1000;
    for (class, s) in svm_core::process::SIZE_CLASSES
        .iter()
        .zip(&svm.size_stats()[g])
    {
        if s.faults == 0 && s.pages_to_vram == 0 {
            continue;
        }
        for (name, v) in [
            ("pagefault_count", s.faults),
            ("pagefault_us", us(s.fault_ns)),
            ("migrate_count", s.migrations),
            ("migrate_us", us(s.migrate_ns)),
            ("device_copy_kb", s.pages_to_vram * 4),
            ("get_pages_us", us(s.map_ns - s.bind_ns)),
            ("bind_us", us(s.bind_ns)),
        ] {
            out.insert(format!("svm_{class}_{name}"), v);
        }
    }
    out
}

/// Buffers a run reports at most (`Outcome::buffers`).
pub const MAX_BUFFERS: usize = 8;

/// What the driver did to one buffer of the run's process (a VMA:
/// `svm_sim::traffic`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferOut {
    /// Its first address, and its size in bytes.
    pub addr: u64,
    /// See `addr`.
    pub bytes: u64,
    /// GPU faults that reached the driver on it.
    pub faults: u64,
    /// Bytes moved into VRAM, and back to system memory.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// Bytes that arrived, by where: a GPU by its gpu_id, system memory
    /// as 0.
    pub arrivals: std::collections::BTreeMap<u32, u64>,
}

impl BufferOut {
    /// It moved more than twice its size.
    pub fn thrashing(&self) -> bool {
        svm_sim::traffic::thrashes(self.bytes, self.bytes_in + self.bytes_out)
    }
}

/// The buffers of `pid` that cost most: the most moved, then the most
/// faulted, at most [`MAX_BUFFERS`].
pub fn buffers(m: &Machine, pid: svm_sim::machine::Pid) -> Vec<BufferOut> {
    let mut v: Vec<BufferOut> = m
        .process(pid)
        .traffic
        .buffers()
        .into_iter()
        .filter(|(_, b)| b.faults > 0 || b.moved() > 0)
        .map(|(addr, b)| BufferOut {
            addr: addr.raw(),
            bytes: b.pages * 4096,
            faults: b.faults,
            bytes_in: b.pages_in * 4096,
            bytes_out: b.pages_out * 4096,
            arrivals: b.arrivals.iter().map(|(&k, &n)| (k, n * 4096)).collect(),
        })
        .collect();
    v.sort_by(|a, b| {
        (b.bytes_in + b.bytes_out, b.faults, a.addr).cmp(&(
            a.bytes_in + a.bytes_out,
            a.faults,
            b.addr,
        ))
    });
    v.truncate(MAX_BUFFERS);
    v
}

/// A GPU's state at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEnd {
    /// Its node index in the machine (its place in this list): with the
    /// gpu_id, its name in every output ([`gpu_name`]).
    #[serde(default)]
    pub node: usize,
    /// Its gpu_id.
    pub gpu_id: u32,
    /// VRAM allocated to buffers, bytes.
    pub vram_used_bytes: u64,
    /// Its VRAM, bytes (what the residency plot draws as capacity).
    #[serde(default)]
    pub vram_bytes: u64,
    /// This GPU's DMA entries that no longer point at their page (a
    /// system mapping of a page now in VRAM, or a VRAM address of a page
    /// that moved away): stale until it faults on them again (the review
    /// thread's point).
    pub stale_dma_pages: u64,
    /// Its served faults by the size of what each mapped, under the names
    /// of Xe's GT statistics (`svm_2M_pagefault_count`, `_pagefault_us`,
    /// `_migrate_count`, `_migrate_us`, `_device_copy_kb`, `_get_pages_us`
    /// and `_bind_us`); classes with no fault are left out.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub gt_stats: std::collections::BTreeMap<String, u64>,
    /// Loads and stores its waves performed.
    #[serde(default)]
    pub reads: u64,
    /// See `reads`.
    #[serde(default)]
    pub writes: u64,
}

/// A switch written `"on"` or `"off"`, as the command line and the CSV
/// write XNACK; reading also takes the booleans of `svmsim.runs/2` (shard
/// files written before `/3`).
pub mod onoff {
    use serde::{Deserialize, Deserializer, Serializer};

    /// # Errors
    /// The serializer's.
    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *v { "on" } else { "off" })
    }

    /// # Errors
    /// A value that is neither `"on"`, `"off"` nor a boolean.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OnOff {
            B(bool),
            S(String),
        }
        match OnOff::deserialize(d)? {
            OnOff::B(b) => Ok(b),
            OnOff::S(s) if s == "on" => Ok(true),
            OnOff::S(s) if s == "off" => Ok(false),
            OnOff::S(s) => Err(serde::de::Error::custom(format!("{s:?} is not on or off"))),
        }
    }

    /// An optional switch, written as [`serialize`] writes one.
    pub mod opt {
        use serde::Serializer;

        /// # Errors
        /// The serializer's.
        #[allow(clippy::ref_option)]
        pub fn serialize<S: Serializer>(v: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => super::serialize(b, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Kernels an outcome lists at most (a workload launches a few per
/// iteration; a trace may launch thousands).
pub const MAX_KERNELS: usize = 256;

/// One kernel of a run: where it ran and what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelOut {
    /// Its number in launch order.
    pub kernel: u32,
    /// The GPU's node index and gpu_id (`None` and 0 for CPU threads).
    pub node: Option<usize>,
    /// See `node`.
    pub gpu_id: u32,
    /// It died (a fatal fault or signal).
    pub failed: bool,
    /// What it did (`svm_sim::machine::KernelStats`).
    #[serde(flatten)]
    pub stats: svm_sim::machine::KernelStats,
}

/// How every output names a GPU: its node index in the machine (the order
/// of the profile's or scenario's GPUs, as KFD numbers its topology nodes)
/// and its gpu_id, as in "GPU 1 (0x2002)". JSON gives both as numbers.
pub fn gpu_name(node: usize, gpu_id: u32) -> String {
    format!("GPU {node} ({gpu_id:#x})")
}

/// A run's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// What ran.
    pub spec: RunSpec,
    /// Its name in tables and plots: what sets it apart from the runs
    /// shown with it (see `runs::relabel`).
    #[serde(skip)]
    pub label: String,
    /// GPUs in the machine.
    pub gpus: usize,
    /// How it ended.
    pub status: Status,
    /// Its numbers.
    pub metrics: Metrics,
    /// Each GPU at the end.
    pub gpu_end: Vec<GpuEnd>,
    /// What the fault policy counted of its own decisions (UVM: faults
    /// throttled, faults served with a pinned page, pins ended).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub policy_counters: std::collections::BTreeMap<String, u64>,
    /// The buffers the driver worked on most (faults taken, bytes moved),
    /// at most [`MAX_BUFFERS`], the most moved first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buffers: Vec<BufferOut>,
    /// Each kernel (and CPU thread group), in launch order, at most
    /// [`MAX_KERNELS`]; `kernels_left_out` counts the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelOut>,
    /// Kernels past [`MAX_KERNELS`], not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kernels_left_out: u64,
    /// The invariant checkers at the end: `None` when every one held.
    pub violation: Option<String>,
    /// A replay's comparison with the real run its trace was imported
    /// from (`svmsim replay --against`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<crate::against::Against>,
    /// With failures injected (`--inject`): per site, what it reached,
    /// injected and made the engine do.
    #[serde(default, skip_serializing_if = "Vec::is_empty", skip_deserializing)]
    pub injection: Vec<svm_sim::inject::SiteCoverage>,
    /// SMI events, when captured.
    #[serde(skip)]
    pub events: Vec<SmiEvent>,
    /// The hardware timeline, when captured.
    #[serde(skip)]
    pub timeline: Option<Timeline>,
    /// Every fault's latency in ns, when the timeline is captured.
    #[serde(skip)]
    pub fault_latencies: Vec<u64>,
    /// The encoded access trace, when captured.
    #[serde(skip)]
    pub trace: Option<Vec<u8>>,
    /// Host wall-clock seconds the run took (not in the JSON: it varies).
    #[serde(skip)]
    pub wall_s: f64,
}

impl Outcome {
    /// The name of the GPU with `gpu_id` ([`gpu_name`]); "system memory"
    /// for 0, the id alone for a GPU this run did not have.
    pub fn gpu_name(&self, gpu_id: u32) -> String {
        place_name(self.gpu_end.iter().map(|g| g.gpu_id), gpu_id)
    }
}

/// What `gpu_id` names among a machine's GPUs (`gpus`, their gpu_ids in
/// node order): the GPU by [`gpu_name`], or system memory for 0.
pub fn place_name(mut gpus: impl Iterator<Item = u32>, gpu_id: u32) -> String {
    if gpu_id == 0 {
        return "system memory".into();
    }
    match gpus.position(|g| g == gpu_id) {
        Some(i) => gpu_name(i, gpu_id),
        None => format!("GPU {gpu_id:#x}"),
    }
}

/// Runs `spec`.
///
/// # Errors
/// A spec that cannot run (unknown names, impossible sizes).
pub fn run(spec: &RunSpec, capture: Capture) -> Result<Outcome, SpecError> {
    run_watched(spec, capture, None)
}

/// [`run`], publishing the simulated clock to `clock` as it moves (for a
/// progress display on another thread).
///
/// # Errors
/// See [`run`].
pub fn run_watched(
    spec: &RunSpec,
    capture: Capture,
    clock: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<Outcome, SpecError> {
    let t0 = std::time::Instant::now();
    let (w, profile) = spec.resolve()?;
    let params = Params {
        size: spec.size,
        iters: spec.iters,
        seed: spec.seed,
    };
    let gpus = spec.gpus.unwrap_or(w.gpus()).max(1);
    let vram = match spec.oversubscribe {
        Some(f) => Some(
            svm_workloads::oversubscribed_vram(w, &params, f)
                .map_err(|e| spec_err("oversubscribe", e.to_string()))?,
        ),
        None => spec.vram,
    };
    let mut m = spec.machine(&profile, gpus, vram, capture)?;
    if spec.phantom {
        m.set_phantom();
    }
    if let Some(c) = clock {
        m.watch_clock(c);
    }
    let pid = m.spawn(w.name());
    let result = svm_workloads::run_opts(&mut m, pid, w, &params, spec.granularity, spec.prefetch);
    let (status, metrics) = match result {
        Ok(r) => (
            if spec.phantom {
                Status::Unchecked
            } else if r.verified {
                Status::Ok
            } else {
                Status::Mismatch
            },
            Metrics::from_report(&r, &m),
        ),
        Err(WorkloadError::Params { why, .. }) => return Err(spec_err("size", why)),
        Err(e) => (
            Status::Killed {
                error: e.to_string(),
            },
            Metrics::from_machine(&m, pid),
        ),
    };
    let trace = capture
        .trace
        .then(|| svm_workloads::trace::encode(&m.take_trace()));
    Ok(finish(
        spec, gpus, status, metrics, pid, m, capture, trace, t0,
    ))
}

/// The prefix of a spec's workload that names a trace file instead of a
/// built-in workload (`trace:app.trace`): what `replay` runs, and what a
/// compare or a sweep point over a trace runs.
pub const TRACE_PREFIX: &str = "trace:";

/// A trace read and decoded once, for every run that replays it (the runs
/// of a compare, the points of a sweep, on any number of threads).
#[derive(Debug)]
pub struct Trace {
    /// The file, as the user named it (what `trace:NAME` holds).
    pub name: String,
    events: Vec<svm_sim::machine::TraceEvent>,
}

impl Trace {
    /// Reads `bytes` of file `name`: the binary form (it starts with
    /// `SVMTRACE`) or, otherwise, the CSV form; `csv` insists on the
    /// latter. At most the events a replay within `host_budget` holds.
    ///
    /// # Errors
    /// Field `trace`: the file is neither form, or is corrupt, or holds
    /// more than the budget allows.
    pub fn parse(name: &str, bytes: &[u8], csv: bool, host_budget: u64) -> Result<Self, SpecError> {
        use svm_workloads::trace;
        let max = max_trace_events(host_budget);
        let events = if !csv && bytes.starts_with(trace::MAGIC) {
            trace::decode(bytes, max).map_err(|e| trace_err(name, &e, host_budget))?
        } else {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                spec_err(
                    "trace",
                    format!(
                        "{name}: not an svmsim trace (it does not start with {:?}) and not the \
                         CSV form (it is not UTF-8 text)",
                        String::from_utf8_lossy(trace::MAGIC)
                    ),
                )
            })?;
            trace::from_csv(text, max).map_err(|e| match e {
                // Neither form: say so, not only what the CSV lacks.
                trace::TraceError::Csv { line: 1, why } if !csv => spec_err(
                    "trace",
                    format!(
                        "{name}: not an svmsim trace (it does not start with {:?}) and not the \
                         CSV form ({why})",
                        String::from_utf8_lossy(trace::MAGIC)
                    ),
                ),
                e => trace_err(name, &e, host_budget),
            })?
        };
        Ok(Self {
            name: name.to_owned(),
            events,
        })
    }

    /// The GPUs a machine needs to replay it: up to the highest profile
    /// GPU it names (`svm_sim::timing::gpu_id`), at least one.
    pub fn gpus(&self) -> usize {
        svm_workloads::trace::gpu_ids(&self.events)
            .into_iter()
            .filter_map(svm_sim::timing::gpu_index)
            .max()
            .map_or(1, |i| i as usize + 1)
    }

    /// What replaying it under `spec` takes of the host, bytes.
    fn host_bytes(&self, spec: &RunSpec, profile: &Profile, gpus: usize) -> u64 {
        let g = &profile.gpu;
        let granularity = spec
            .granularity
            .and_then(|g| u8::try_from(g).ok())
            .unwrap_or(spec.config.default_granularity);
        svm_workloads::trace::host_bytes(&self.events, granularity)
            .saturating_add(svm_sim::limits::tlb_bytes(
                gpus as u64,
                u64::from(g.compute_units),
                u64::from(g.tlb_entries),
            ))
            .saturating_add(64 << 20)
    }
}

/// The traces a set of specs replays, by name.
pub type Traces = [Trace];

/// The trace `spec` replays, if it names one: found in `traces`, or an
/// error naming it when it was not read.
fn trace_of<'t>(spec: &RunSpec, traces: &'t Traces) -> Option<Result<&'t Trace, SpecError>> {
    let name = spec.workload.strip_prefix(TRACE_PREFIX)?;
    Some(
        traces
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| spec_err("workload", format!("trace {name} was not read"))),
    )
}

/// The GPUs a run of `workload` (a built-in workload or `trace:FILE` of
/// `traces`) needs by default.
pub fn gpus_needed(workload: &str, traces: &Traces) -> usize {
    match workload.strip_prefix(TRACE_PREFIX) {
        Some(name) => traces
            .iter()
            .find(|t| t.name == name)
            .map_or(1, Trace::gpus),
        None => svm_workloads::by_name(workload).map_or(1, |w| w.gpus()),
    }
}

/// Runs `spec`: its workload, or the trace of `traces` it names.
///
/// # Errors
/// As [`run`] and [`replay`].
pub fn run_any(
    spec: &RunSpec,
    traces: &Traces,
    capture: Capture,
    host_budget: u64,
) -> Result<Outcome, SpecError> {
    match trace_of(spec, traces) {
        Some(t) => replay(spec, t?, capture, host_budget),
        None => run(spec, capture),
    }
}

/// Checks `spec` can run: its names and values resolve, and the trace it
/// names (if any) is among `traces`.
///
/// # Errors
/// The field at fault.
pub fn check_any(spec: &RunSpec, traces: &Traces) -> Result<(), SpecError> {
    match trace_of(spec, traces) {
        Some(t) => {
            t?;
            spec.check_config()?;
            load_profile(&spec.profile).map(drop)
        }
        None => spec.resolve().map(drop),
    }
}

/// What `spec` needs of the host ([`HostNeed`]): a workload's from its
/// spec, a trace's from its events.
///
/// # Errors
/// A spec that does not resolve.
pub fn host_need(spec: &RunSpec, traces: &Traces) -> Result<HostNeed, SpecError> {
    match trace_of(spec, traces) {
        Some(t) => {
            let t = t?;
            let profile = load_profile(&spec.profile)?;
            let gpus = spec.gpus.unwrap_or_else(|| t.gpus());
            Ok(HostNeed {
                bytes: t.host_bytes(spec, &profile, gpus),
                page_touches: 0,
            })
        }
        None => spec.host_need(),
    }
}

/// Replays `trace` on the machine `spec` describes (its workload, size and
/// iterations are ignored: the trace is the workload; a granularity
/// applies to every SET_ATTR of the trace and to the ranges it makes).
///
/// # Errors
/// A spec that cannot run, a trace that needs more than `host_budget`, or
/// one that cannot be replayed (field `trace`).
pub fn replay(
    spec: &RunSpec,
    trace: &Trace,
    capture: Capture,
    host_budget: u64,
) -> Result<Outcome, SpecError> {
    let t0 = std::time::Instant::now();
    let name = &trace.name;
    let mut spec = spec.clone();
    spec.workload = format!("{TRACE_PREFIX}{name}");
    spec.check_config()?;
    let profile = load_profile(&spec.profile)?;
    let gpus = spec.gpus.unwrap_or_else(|| trace.gpus());
    let need = trace.host_bytes(&spec, &profile, gpus);
    if need > host_budget {
        return Err(spec_err(
            "trace",
            format!(
                "{name}: replaying it needs about {} of host memory (its events, and the pages \
                 its accesses touch twice over), above the budget of {}; use --max-host-mem",
                crate::size::human(need),
                crate::size::human(host_budget)
            ),
        ));
    }
    let mut events = std::borrow::Cow::Borrowed(&trace.events[..]);
    if let Some(g) = spec.granularity {
        // As the kernel caps svm_default_granularity (0x1B).
        spec.config
            .set("default_granularity", &g.min(0x1B).to_string())
            .map_err(|e| spec_err("granularity", e.to_string()))?;
        svm_workloads::trace::set_granularity(events.to_mut(), g);
    }
    // A replay records no trace of its own.
    let capture = Capture {
        trace: false,
        ..capture
    };
    let mut m = spec.machine(&profile, gpus, spec.vram, capture)?;
    let kernels = svm_workloads::trace::replay(&mut m, &events)
        .map_err(|e| spec_err("trace", format!("{name}: {e}")))?;
    drop(events);
    let status = match kernels.iter().find_map(|k| k.as_ref().err()) {
        None => Status::Ok,
        Some(e) => Status::Killed {
            error: e.to_string(),
        },
    };
    let pid = m
        .processes()
        .next()
        .map(|(p, _)| p)
        .ok_or_else(|| spec_err("trace", format!("{name}: the trace starts no process")))?;
    let mut metrics = Metrics::from_machine(&m, pid);
    let ok: Vec<_> = kernels.iter().filter_map(|k| k.as_ref().ok()).collect();
    if let (Some(first), Some(end)) = (ok.first(), ok.iter().map(|k| k.end_ns).max()) {
        metrics.kernel_ns = end - first.launch_ns;
        metrics.first_result_ns = first.first_wave_done_ns.saturating_sub(first.launch_ns);
    }
    Ok(finish(
        &spec, gpus, status, metrics, pid, m, capture, None, t0,
    ))
}

/// The most trace events a replay within `host_budget` holds.
pub fn max_trace_events(host_budget: u64) -> usize {
    let n = host_budget / svm_workloads::trace::EVENT_HOST_BYTES;
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A trace that cannot be read, named by its file; a limit of events says
/// the way out.
pub fn trace_err(name: &str, e: &svm_workloads::trace::TraceError, host_budget: u64) -> SpecError {
    use svm_workloads::trace::TraceError;
    let hint = match e {
        // The limits the budget sets.
        TraceError::Limit {
            what: "events" | "lines" | "2 MiB blocks touched",
            ..
        } => format!(
            " (the events a replay holds within the host budget of {}; use --max-host-mem)",
            crate::size::human(host_budget)
        ),
        _ => String::new(),
    };
    spec_err("trace", format!("{name}: {e}{hint}"))
}

/// The end of a run: checks, per-GPU state, what was captured.
#[allow(clippy::too_many_arguments)]
fn finish(
    spec: &RunSpec,
    gpus: usize,
    status: Status,
    mut metrics: Metrics,
    pid: svm_sim::machine::Pid,
    mut m: Machine,
    capture: Capture,
    trace: Option<Vec<u8>>,
    t0: std::time::Instant,
) -> Outcome {
    let violation = svm_sim::check::check(&m).err().map(|v| v.to_string());
    let counts = m.access_counts();
    let all = counts.total();
    (metrics.accesses, metrics.reads, metrics.writes) = (all.total(), all.reads, all.writes);
    metrics.atomics = all.atomics;
    // The served faults' phases, from the engine's size classes.
    metrics.add_phases(&m.process(pid).svm);
    let gpu_end: Vec<GpuEnd> = m
        .gpus()
        .iter()
        .zip(&counts.gpus)
        .enumerate()
        .map(|(node, (g, rw))| {
            let gpu_id = g.desc.id.raw();
            GpuEnd {
                node,
                gpu_id,
                vram_used_bytes: g.vram_used_bytes(),
                vram_bytes: g.desc.vram_bytes,
                stale_dma_pages: m.stale_dma(pid, gpu_id),
                gt_stats: gt_stats(&m.process(pid).svm, gpu_id),
                reads: rw.reads,
                writes: rw.writes,
            }
        })
        .collect();
    let fault_latencies = if capture.timeline {
        m.fault_latencies().to_vec()
    } else {
        Vec::new()
    };
    let ids: Vec<u32> = gpu_end.iter().map(|g| g.gpu_id).collect();
    let all_kernels = m.kernels().count();
    let kernels: Vec<KernelOut> = m
        .kernels()
        .take(MAX_KERNELS)
        .enumerate()
        .map(|(i, (gpu_id, failed, s))| KernelOut {
            kernel: u32::try_from(i).unwrap_or(u32::MAX),
            node: ids.iter().position(|&g| g == gpu_id && gpu_id != 0),
            gpu_id,
            failed,
            stats: *s,
        })
        .collect();
    Outcome {
        spec: spec.clone(),
        label: spec.label(),
        gpus,
        status,
        metrics,
        gpu_end,
        policy_counters: m
            .process(pid)
            .svm
            .policy_counters()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        buffers: buffers(&m, pid),
        kernels_left_out: (all_kernels - kernels.len()) as u64,
        kernels,
        violation,
        against: None,
        injection: if m.injection().active() {
            m.injection().coverage()
        } else {
            Vec::new()
        },
        events: m.events().to_vec(),
        timeline: m.take_timeline(),
        fault_latencies,
        trace,
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XNACK is written on/off; a spec of an older file (a boolean) still
    /// reads, and anything else is refused.
    #[test]
    fn xnack_is_on_or_off_and_old_booleans_still_read() {
        let spec = RunSpec {
            xnack: false,
            ..RunSpec::default()
        };
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["xnack"], "off");
        let back: RunSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, spec);
        let mut old = v.clone();
        old["xnack"] = serde_json::json!(false);
        assert_eq!(serde_json::from_value::<RunSpec>(old).unwrap(), spec);
        let mut bad = v;
        bad["xnack"] = serde_json::json!("maybe");
        let e = serde_json::from_value::<RunSpec>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not on or off"), "{e}");
    }

    /// A typo gets the names it is near, and every name after them.
    #[test]
    fn did_you_mean_names_the_near_ones_then_all() {
        let known = ["mi210", "mi250x", "mi300x", "uvm-pcie", "xe"];
        assert_eq!(
            suggest("mi21", known),
            "did you mean mi210? expected one of: mi210, mi250x, mi300x, uvm-pcie, xe"
        );
        assert_eq!(
            suggest("qqqqqqq", known),
            "expected one of: mi210, mi250x, mi300x, uvm-pcie, xe"
        );
        assert_eq!(edit_distance("strem", "stream"), 1);
        assert_eq!(edit_distance("", "xe"), 2);
    }
}

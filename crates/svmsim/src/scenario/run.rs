//! Running a scenario: each operation against a simulated machine, checked against its expectation and the invariants.

use std::collections::BTreeMap;

use serde::Serialize;
use svm_core::addr::CpuVa;
use svm_core::addr::PAGE_SIZE;
use svm_core::events::{self, Kind};
use svm_core::uapi::{
    SVM_LOCATION_SYSMEM, SVM_LOCATION_UNDEFINED, SVM_OP_GET_ATTR, SVM_OP_SET_ATTR, SvmArgs,
    SvmAttribute, attr_type,
};
use svm_sim::check;
use svm_sim::machine::{
    AccessError, AccessPlan, AccessStats, CpuIo, Machine, MemLimit, Pid, WaveId,
};

use super::de::SMI_EVENTS;
use super::doc::ScenarioError;
use super::parse::{
    AddrExpr, AttrExpect, CounterExpect, Expect, Fill, FillCheck, OpKind, OpSpec, Scenario,
    SmiExpect, SmiValue, Until,
};
use svm_core::events::Scanned;

/// The result of one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OpResult {
    /// It succeeded.
    Ok,
    /// It failed with this errno.
    Error {
        /// Symbolic errno, such as `EFAULT`.
        errno: String,
        /// Its number.
        code: i32,
        /// Why, in words.
        message: String,
    },
}

/// One GET_ATTR answer, decoded for reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttrOut {
    /// The attribute name of the query (`access` for ACCESS queries).
    pub attr: String,
    /// The raw value written back.
    pub value: u32,
    /// The value in words: a location, flag names, a granularity, or the
    /// access answer (`access`, `access_in_place`, `no_access`).
    pub text: String,
    /// For ACCESS queries, the GPU asked about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
}

/// What happened in one operation.
#[derive(Clone, Debug, Serialize)]
pub struct OpRecord {
    /// 0-based position in the file.
    pub index: usize,
    /// Line of the op in the file.
    pub line: usize,
    /// Process name.
    pub process: String,
    /// Operation name.
    pub op: &'static str,
    /// The arguments, resolved, in words.
    pub args: String,
    /// The result.
    pub result: OpResult,
    /// GET_ATTR answers, in query order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<AttrOut>>,
    /// The address mmap returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The XNACK mode after a set_xnack.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::exec::onoff::opt::serialize"
    )]
    pub xnack: Option<bool>,
    /// Faults and retries a GPU access took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessStats>,
    /// The expectation, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Why the result did not meet the expectation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
    /// The simulated clock when the op returned, in ns (0 throughout
    /// without a profile).
    pub end_ns: u64,
}

/// One SVM range in the final state.
#[derive(Clone, Debug, Serialize)]
pub struct RangeOut {
    /// First page.
    pub start: String,
    /// Last page, inclusive.
    pub last: String,
    /// First byte address.
    pub start_addr: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Preferred location in words.
    pub preferred_loc: String,
    /// Prefetch location in words.
    pub prefetch_loc: String,
    /// GPUs with ACCESS.
    pub access: Vec<String>,
    /// GPUs with ACCESS_IN_PLACE.
    pub access_in_place: Vec<String>,
    /// Flag names (unknown bits in hex).
    pub flags: String,
    /// Raw flag bits.
    pub flags_raw: u32,
    /// Granularity, log2 pages.
    pub granularity: u8,
    /// Whether the range is mapped to a GPU.
    pub mapped_to_gpu: bool,
    /// Pages in VRAM (`vram_pages`, derived from the pages).
    pub vram_pages: u64,
    /// The GPU whose VRAM holds them, or `sysmem`.
    pub actual_loc: String,
    /// Runs of pages by location, in page order.
    pub residency: Vec<RunOut>,
    /// Per GPU: PTEs, DMA entries and stale DMA entries of this range.
    pub gpus: Vec<RangeGpuOut>,
    /// Times the range was evicted (queues stopped for it, or VRAM taken).
    pub evictions: u32,
    /// Times the restore work remapped it.
    pub restores: u32,
}

/// A run of pages that live in one place.
#[derive(Clone, Debug, Serialize)]
pub struct RunOut {
    /// Page offset from the range's start.
    pub offset: u64,
    /// Pages in the run.
    pub npages: u64,
    /// `sysmem` or a GPU name.
    pub loc: String,
}

/// What one GPU holds of a range.
#[derive(Clone, Debug, Serialize)]
pub struct RangeGpuOut {
    /// GPU name.
    pub gpu: String,
    /// Valid PTEs.
    pub ptes: u64,
    /// Non-empty DMA entries.
    pub dma: u64,
    /// DMA entries whose page has moved since they were written.
    pub stale: u64,
}

/// One VMA in the final state.
#[derive(Clone, Debug, Serialize)]
pub struct VmaOut {
    /// First byte address.
    pub start_addr: String,
    /// One past the last byte.
    pub end_addr: String,
    /// Protection, as `rw-`.
    pub prot: String,
    /// `anon`, `file:NAME` or `io`.
    pub backing: String,
    /// `heap`, `stack` or empty.
    pub mark: String,
}

/// One process in the final state.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessOut {
    /// Its name.
    pub name: String,
    /// Its XNACK mode (`"on"` or `"off"` in JSON).
    #[serde(serialize_with = "crate::exec::onoff::serialize")]
    pub xnack: bool,
    /// Open queues, by label (or id).
    pub queues: Vec<String>,
    /// Its VMAs.
    pub vmas: Vec<VmaOut>,
    /// Its SVM ranges.
    pub ranges: Vec<RangeOut>,
    /// Per GPU: faults, pages in and out.
    pub stats: Vec<GpuStatsOut>,
    /// The buffers the driver worked on most (as a run's `buffers`,
    /// docs/runs-json.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buffers: Vec<crate::exec::BufferOut>,
}

/// One GPU's counters in one process.
#[derive(Clone, Debug, Serialize)]
pub struct GpuStatsOut {
    /// GPU name.
    pub gpu: String,
    /// Faults, pages in and pages out.
    #[serde(flatten)]
    pub stats: svm_core::process::GpuStats,
}

/// One GPU of the system.
#[derive(Clone, Debug, Serialize)]
pub struct GpuOut {
    /// Its node index (the order of `[[system.gpu]]`): with the gpu_id,
    /// how every output names it, "GPU 1 (0x2002)".
    pub node: usize,
    /// The name the scenario file gave it (what its ops refer to it by).
    pub name: String,
    /// gpu_id.
    pub id: String,
    /// VRAM bytes.
    pub vram_bytes: u64,
    /// SVM support.
    pub svm: bool,
    /// XNACK capability.
    pub xnack: bool,
    /// xGMI hive.
    pub hive: Option<u64>,
    /// Graphics IP version, which picked its PTE rules.
    pub gc: String,
}

/// Who evicted whose VRAM on one GPU, how often, at what cost.
#[derive(Clone, Debug, Serialize)]
pub struct EvictionOut {
    /// The GPU whose VRAM was reclaimed.
    pub gpu: String,
    /// The process whose allocation needed the room, or `"outside"` for
    /// pressure from outside SVM (`evict_vram`).
    pub by: String,
    /// The process whose buffers went.
    pub victim: String,
    /// Buffers evicted.
    pub buffers: u64,
    /// Pages moved back to system memory.
    pub pages: u64,
    /// Simulated ns the evictions took.
    pub ns: u64,
}

/// The machine as the run saw it.
#[derive(Clone, Debug, Serialize)]
pub struct SystemOut {
    /// GPUs in node order.
    pub gpus: Vec<GpuOut>,
    /// Boot-time XNACK default (`"on"` or `"off"` in JSON).
    #[serde(serialize_with = "crate::exec::onoff::serialize")]
    pub xnack_default: bool,
    /// `max_svm_range_pages`.
    pub max_svm_range_pages: u64,
    /// System memory bytes.
    pub sysmem_bytes: u64,
    /// The SVM memory limit and its use at the end.
    pub mem_limit: MemLimit,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Schema id of this JSON form.
    pub schema: &'static str,
    /// Scenario name.
    pub name: String,
    /// Scenario file.
    pub file: String,
    /// Scenario description.
    pub description: String,
    /// The machine.
    pub system: SystemOut,
    /// Per-operation results.
    pub ops: Vec<OpRecord>,
    /// The final state per process.
    pub processes: Vec<ProcessOut>,
    /// Operations whose result did not meet the expectation.
    pub mismatches: usize,
    /// A broken invariant, if one was found (the run stops there).
    pub violation: Option<String>,
    /// The ops after which the invariants were checked: every op, or under
    /// the linear schedule (`svm_sim::check::Schedule`) every op while the
    /// state was small, fewer beyond, and always the last.
    pub checked_ops: usize,
    /// Every expectation held and no invariant broke.
    pub passed: bool,
    /// The GPU-fault policy of the run.
    pub policy: String,
    /// Every knob of the run, resolved: enough, with the file and the
    /// seed, to repeat it.
    pub config: svm_core::config::Config,
    /// The scheduler's seed, when work interleaved in a seeded order.
    pub seed: Option<u64>,
    /// The profile that priced the run, if any.
    pub profile: Option<String>,
    /// The simulated clock at the end, in ns.
    pub end_ns: u64,
    /// Hardware counters at the end.
    pub counters: svm_sim::gpu::HwCounters,
    /// The run's numbers, as a workload run's (`docs/runs-json.md`): the
    /// faults' fates and phases, the waves' time, the bytes by place.
    pub metrics: crate::exec::Metrics,
    /// VRAM evictions: who evicted whom, per GPU.
    pub evictions: Vec<EvictionOut>,
    /// SMI events, in order, each with the gpu_id it was raised on (in
    /// JSON, as kfd's text line).
    pub events: Vec<svm_sim::machine::SmiEvent>,
    /// With failures injected: per site, what it reached, injected and
    /// made the engine do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub injection: Vec<svm_sim::inject::SiteCoverage>,
    /// The machine's GPUs in node order (each has an SMI event file).
    #[serde(skip)]
    pub gpu_ids: Vec<svm_core::gpu::GpuId>,
}

impl RunReport {
    /// How the outputs name the GPU or place `gpu_id` (0: system memory).
    pub fn gpu_name(&self, gpu_id: u32) -> String {
        crate::exec::place_name(self.gpu_ids.iter().map(|g| g.raw()), gpu_id)
    }
}

/// The id of the JSON schema `docs/scenario-json.md` describes.
pub const SCHEMA: &str = "svmsim.scenario.v3";

/// Names GPUs and locations for output: a GPU as every output names it,
/// by node index and gpu_id (`crate::exec::gpu_name`, "GPU 1 (0x2002)");
/// the name the scenario file gave it is shown beside it once, in the
/// system line (`SystemOut`'s `name`).
struct Names {
    gpus: Vec<(u32, String)>,
}

impl Names {
    fn gpu(&self, id: u32) -> String {
        self.gpus
            .iter()
            .find(|(g, _)| *g == id)
            .map_or_else(|| format!("{id:#x}"), |(_, n)| n.clone())
    }

    fn location(&self, v: u32) -> String {
        match v {
            SVM_LOCATION_SYSMEM => "sysmem".into(),
            SVM_LOCATION_UNDEFINED => "undefined".into(),
            id => self.gpu(id),
        }
    }

    fn loc_opt(&self, l: Option<svm_core::attr::Location>) -> String {
        self.location(svm_core::attr::Location::to_uapi(l))
    }
}

fn attr_name(ty: u32) -> String {
    match ty {
        attr_type::PREFERRED_LOC => "preferred_loc".into(),
        attr_type::PREFETCH_LOC => "prefetch_loc".into(),
        attr_type::ACCESS => "access".into(),
        attr_type::ACCESS_IN_PLACE => "access_in_place".into(),
        attr_type::NO_ACCESS => "no_access".into(),
        attr_type::SET_FLAGS => "set_flags".into(),
        attr_type::CLR_FLAGS => "clr_flags".into(),
        attr_type::GRANULARITY => "granularity".into(),
        t => format!("type{t}"),
    }
}

fn fmt_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    for (u, m) in UNITS {
        if bytes >= m && bytes % m == 0 {
            return format!("{}{u}", bytes / m);
        }
    }
    format!("{bytes}B")
}

fn fmt_attrs(names: &Names, attrs: &[SvmAttribute]) -> String {
    attrs
        .iter()
        .map(|a| {
            let v = match a.ty {
                attr_type::PREFERRED_LOC | attr_type::PREFETCH_LOC => names.location(a.value),
                attr_type::ACCESS | attr_type::ACCESS_IN_PLACE | attr_type::NO_ACCESS => {
                    names.gpu(a.value)
                }
                attr_type::SET_FLAGS | attr_type::CLR_FLAGS => {
                    svm_core::attr::SvmFlags::from_bits(a.value).to_string()
                }
                _ => format!("{:#x}", a.value),
            };
            format!("{}={v}", attr_name(a.ty))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A launched access (with the read check for its wait), or why it could
/// not start.
type Launched = Result<(WaveId, Option<Fill>), AccessError>;

struct Runner<'a> {
    sc: &'a Scenario,
    m: Machine,
    pids: Vec<Pid>,
    names: Names,
    /// Mapping starts by (process, label).
    labels: BTreeMap<(usize, String), u64>,
    /// Queue ids by (process, label).
    queues: BTreeMap<(usize, String), u32>,
    /// KFD buffer handles by (process, label).
    buffers: BTreeMap<(usize, String), u64>,
    /// Launched GPU accesses by (process, label), with the read check to
    /// apply when they are waited for.
    /// A launch that failed at once keeps its error for the wait.
    launches: BTreeMap<(usize, String), Launched>,
    /// Per process, how many of the machine's SMI events its last `smi`
    /// op had seen.
    smi_seen: BTreeMap<usize, usize>,
}

impl Runner<'_> {
    /// Records an access's result and checks a read against `check_fill`.
    fn access_result(
        rec: &mut OpRecord,
        r: &Result<(Vec<u8>, Option<AccessStats>), AccessError>,
        check_fill: Option<Fill>,
    ) {
        rec.result = Self::result(r, AccessError::errno);
        if let Ok((bytes, stats)) = r {
            rec.access = *stats;
            if let Some(want) = check_fill {
                let mut check = FillCheck::new(want);
                check.feed(bytes);
                Self::checked(rec, &check);
            }
        }
    }

    fn checked(rec: &mut OpRecord, check: &FillCheck) {
        let (expect, mismatch) = check.finish();
        rec.expect = Some(expect);
        rec.mismatch = mismatch;
    }

    /// A CPU access made once: its bytes stream past, page by page, and
    /// are neither built nor kept whole (a fill of uniform pages stores
    /// them as such), so a large access costs no buffer of its size.
    fn cpu_access(
        &mut self,
        rec: &mut OpRecord,
        (pid, at, size): (Pid, CpuVa, u64),
        (fill, check_fill): (Option<Fill>, Option<Fill>),
    ) {
        let mut check = check_fill.map(FillCheck::new);
        let r = match fill {
            Some(f) if f.uniform_pages(at.raw()) => {
                self.m
                    .cpu_io(pid, at, size, CpuIo::Repeat(&mut |off| f.word_at(off & !3)))
            }
            Some(f) => self.m.cpu_io(
                pid,
                at,
                size,
                CpuIo::Write(&mut |off, part| f.write_part(off, part)),
            ),
            None => self.m.cpu_io(
                pid,
                at,
                size,
                CpuIo::Read(&mut |_, part| {
                    if let Some(c) = &mut check {
                        c.feed(part);
                    }
                }),
            ),
        };
        rec.result = Self::result(&r, AccessError::errno);
        if let (Ok(()), Some(c)) = (&r, &check) {
            Self::checked(rec, c);
        }
    }

    /// A `smi` op: the process's lines since its last one (on `gpu`'s
    /// stream, or every GPU's in time order) must hold the expected events
    /// in order, each line scanned by its event's format as kfd's tests
    /// read them, and the fields given compared.
    fn smi(
        &mut self,
        op: &OpSpec,
        rec: &mut OpRecord,
        gpu: Option<u32>,
        expect: &[SmiExpect],
    ) -> Result<(), ScenarioError> {
        let pid = self.pids[op.process];
        let os_pid = self.m.process(pid).svm.smi_pid();
        let events = self.m.events();
        let from = self.smi_seen.insert(op.process, events.len()).unwrap_or(0);
        let mut lines: Vec<(u64, String)> = events[from.min(events.len())..]
            .iter()
            .filter(|e| e.event.pid == os_pid && gpu.is_none_or(|g| e.gpu_id.raw() == g))
            .map(|e| (e.event.ts_ns, e.event.to_string()))
            .collect();
        lines.sort_by_key(|&(t, _)| t);
        let mut want = Vec::new();
        for (i, e) in expect.iter().enumerate() {
            let mut fields = Vec::new();
            for (name, v) in &e.fields {
                let v = match v {
                    SmiValue::Addr(a) => Scanned::Num(
                        i64::try_from(self.addr(op, &format!("expect[{i}].addr"), a)? / PAGE_SIZE)
                            .unwrap_or(i64::MAX),
                    ),
                    SmiValue::Num(n) => Scanned::Num(*n),
                    SmiValue::Char(c) => Scanned::Char(*c),
                };
                fields.push((*name, v));
            }
            want.push((e.event, fields));
        }
        let show = |(id, f): &(u32, Vec<(&str, Scanned)>)| {
            let name = SMI_EVENTS
                .iter()
                .find(|(_, i)| i == id)
                .map_or("?", |(n, _)| n);
            let f: Vec<String> = f
                .iter()
                .map(|(n, v)| match v {
                    Scanned::Num(x) => format!("{n}={x:#x}"),
                    Scanned::Char(c) => format!("{n}={c}"),
                })
                .collect();
            format!(
                "{name}{}{}",
                if f.is_empty() { "" } else { " " },
                f.join(" ")
            )
        };
        rec.args = format!("{} line(s)", lines.len());
        rec.expect = Some(want.iter().map(show).collect::<Vec<_>>().join(", "));
        let mut at = 0;
        for (n, w) in want.iter().enumerate() {
            let hit = lines[at..].iter().position(|(_, l)| {
                svm_core::events::scan(l)
                    .is_some_and(|(id, got)| id == w.0 && w.1.iter().all(|f| got.contains(f)))
            });
            match hit {
                Some(k) => at += k + 1,
                None => {
                    let tail: Vec<&str> = lines[at..]
                        .iter()
                        .map(|(_, l)| l.as_str())
                        .take(8)
                        .collect();
                    rec.mismatch = Some(format!(
                        "event {n} ({}) not found{}; lines left: [{}]",
                        show(w),
                        if n > 0 { " after the previous one" } else { "" },
                        tail.join("; ")
                    ));
                    break;
                }
            }
        }
        Ok(())
    }

    fn place(&self, op: &OpSpec, field: &str, message: String) -> ScenarioError {
        ScenarioError {
            file: self.sc.file.clone(),
            line: op.line,
            column: 1,
            field: format!("op[{}].{field}", op.index),
            message,
        }
    }

    fn addr(&self, op: &OpSpec, field: &str, e: &AddrExpr) -> Result<u64, ScenarioError> {
        let base = match &e.label {
            None => 0,
            Some(l) => *self.labels.get(&(op.process, l.clone())).ok_or_else(|| {
                self.place(
                    op,
                    field,
                    format!("mapping {l:?} does not exist: its mmap failed or it was never made"),
                )
            })?,
        };
        u64::try_from(i128::from(base) + e.offset)
            .map_err(|_| self.place(op, field, "address out of the 64-bit range".into()))
    }

    fn result<T, E: std::fmt::Display>(
        r: &Result<T, E>,
        errno: impl Fn(&E) -> svm_core::Errno,
    ) -> OpResult {
        match r {
            Ok(_) => OpResult::Ok,
            Err(e) => OpResult::Error {
                errno: errno(e).name().into(),
                code: errno(e).code(),
                message: e.to_string(),
            },
        }
    }

    fn svm_result<T>(r: &Result<T, svm_core::Error>) -> OpResult {
        Self::result(r, svm_core::Error::errno)
    }

    fn mm_result<T>(r: &Result<T, svm_sim::mm::MmError>) -> OpResult {
        Self::result(r, svm_sim::mm::MmError::errno)
    }

    /// A GPU's access (`gpu_id` given) or the CPU's, written or read; a
    /// launched one is left in flight under its name.
    #[allow(clippy::too_many_arguments)]
    fn access(
        &mut self,
        op: &OpSpec,
        rec: &mut OpRecord,
        gpu_id: Option<u32>,
        addr: &AddrExpr,
        size: u64,
        (fill, check_fill, atomic_add): (Option<Fill>, Option<Fill>, Option<u32>),
        (launch, repeat, until, threads, start): (Option<&str>, u32, Option<&Until>, u32, u64),
    ) -> Result<(), ScenarioError> {
        let pid = self.pids[op.process];
        let a = self.addr(op, "addr", addr)?;
        let who = gpu_id.map_or_else(|| "cpu".to_string(), |g| self.names.gpu(g));
        let until = until
            .map(|u| Ok((self.addr(op, "until.addr", &u.addr)?, u.value)))
            .transpose()?;
        let plan = AccessPlan {
            passes: repeat,
            until,
            threads,
            start_ns: start,
            atomic: atomic_add.is_some(),
        };
        rec.args = format!(
            "{who} {} {a:#x} +{}{}{}{}{}{}{}",
            match (atomic_add, fill) {
                (Some(_), _) => "atomic",
                (None, Some(_)) => "write",
                (None, None) => "read",
            },
            fmt_size(size),
            match (atomic_add, fill) {
                (Some(v), _) => format!(" add={v:#x}"),
                (None, f) => f.map(|f| format!(" fill={f}")).unwrap_or_default(),
            },
            if threads > 1 {
                format!(
                    " {}={threads}",
                    if gpu_id.is_some() { "waves" } else { "threads" }
                )
            } else {
                String::new()
            },
            if repeat > 1 {
                format!(" repeat={repeat}")
            } else {
                String::new()
            },
            until
                .map(|(f, v)| format!(" until {f:#x}=={v:#x}"))
                .unwrap_or_default(),
            if start > 0 {
                format!(" start+{start}ns")
            } else {
                String::new()
            },
            launch
                .as_ref()
                .map(|l| format!(" launch={l}"))
                .unwrap_or_default()
        );
        let at = CpuVa::new(a);
        if gpu_id.is_none() && launch.is_none() && plan == AccessPlan::ONCE {
            self.cpu_access(rec, (pid, at, size), (fill, check_fill));
            return Ok(());
        }
        // (A GPU's waves, or CPU threads, take the bytes whole; an
        // atomic's are its operands, the value in every word.)
        let data = match atomic_add {
            Some(v) => Some(
                v.to_le_bytes()
                    .repeat(usize::try_from(size / 4).unwrap_or(0)),
            ),
            None => fill.map(|f| f.bytes(size)),
        };
        if let Some(label) = launch {
            let w = self
                .m
                .launch_access(pid, gpu_id, at, size, data.as_deref(), plan);
            rec.result = Self::result(&w, AccessError::errno);
            self.launches
                .insert((op.process, label.to_owned()), w.map(|w| (w, check_fill)));
            return Ok(());
        }
        let r = match gpu_id {
            Some(g) if plan == AccessPlan::ONCE => self
                .m
                .gpu_access(pid, g, at, size, data.as_deref())
                .map(|(v, st)| (v, Some(st))),
            _ => self
                .m
                .launch_access(pid, gpu_id, at, size, data.as_deref(), plan)
                .and_then(|w| self.m.wait(w))
                .map(|(v, st)| (v, Some(st))),
        };
        Self::access_result(rec, &r, check_fill);
        Ok(())
    }

    fn step(&mut self, op: &OpSpec) -> Result<OpRecord, ScenarioError> {
        let pid = self.pids[op.process];
        let mut rec = OpRecord {
            index: op.index,
            line: op.line,
            process: self.sc.processes[op.process].clone(),
            op: op.kind.name(),
            args: String::new(),
            result: OpResult::Ok,
            values: None,
            addr: None,
            xnack: None,
            access: None,
            expect: None,
            mismatch: None,
            end_ns: 0,
        };
        match &op.kind {
            OpKind::Mmap {
                label,
                addr,
                size,
                prot,
                backing,
                file,
                mark,
                ..
            } => {
                let backing = backing.backing(file.as_deref());
                let fixed = addr
                    .as_ref()
                    .map(|a| self.addr(op, "addr", a))
                    .transpose()?;
                rec.args = format!(
                    "{}{} {prot} {}{}",
                    label.as_ref().map(|l| format!("{l} ")).unwrap_or_default(),
                    fmt_size(*size),
                    backing,
                    fixed.map(|a| format!(" at {a:#x}")).unwrap_or_default()
                );
                let r = self.m.mmap(
                    pid,
                    fixed.map(CpuVa::new),
                    *size,
                    *prot,
                    backing,
                    (*mark).into(),
                );
                rec.result = Self::mm_result(&r);
                if let Ok(range) = r {
                    let start = range.start_va().raw();
                    rec.addr = Some(format!("{start:#x}"));
                    if let Some(l) = label {
                        self.labels.insert((op.process, l.clone()), start);
                    }
                }
            }
            OpKind::Munmap { addr, size, .. } => {
                let a = self.addr(op, "addr", addr)?;
                rec.args = format!("{a:#x} +{}", fmt_size(*size));
                rec.result = Self::mm_result(&self.m.munmap(pid, CpuVa::new(a), *size));
            }
            OpKind::Mprotect {
                addr, size, prot, ..
            } => {
                let a = self.addr(op, "addr", addr)?;
                rec.args = format!("{a:#x} +{} {prot}", fmt_size(*size));
                rec.result = Self::mm_result(&self.m.mprotect(pid, CpuVa::new(a), *size, *prot));
            }
            OpKind::SetAttr {
                addr, size, attrs, ..
            } => {
                let a = self.addr(op, "addr", addr)?;
                rec.args = format!(
                    "{a:#x} +{} {}",
                    fmt_size(*size),
                    fmt_attrs(&self.names, attrs)
                );
                let mut args = SvmArgs {
                    start_addr: a,
                    size: *size,
                    op: SVM_OP_SET_ATTR,
                    attrs: attrs.clone(),
                };
                rec.result = Self::svm_result(&self.m.svm_ioctl(pid, &mut args));
            }
            OpKind::GetAttr {
                addr, size, query, ..
            } => {
                let query = query.as_deref().unwrap_or_default();
                let a = self.addr(op, "addr", addr)?;
                rec.args = format!(
                    "{a:#x} +{} {}",
                    fmt_size(*size),
                    query
                        .iter()
                        .map(|q| if q.ty == attr_type::ACCESS {
                            format!("access({})", self.names.gpu(q.value))
                        } else {
                            attr_name(q.ty)
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                let mut args = SvmArgs {
                    start_addr: a,
                    size: *size,
                    op: SVM_OP_GET_ATTR,
                    attrs: query.to_vec(),
                };
                let r = self.m.svm_ioctl(pid, &mut args);
                rec.result = Self::svm_result(&r);
                if r.is_ok() {
                    rec.values = Some(
                        query
                            .iter()
                            .zip(&args.attrs)
                            .map(|(q, out)| self.decode(q, out))
                            .collect(),
                    );
                }
            }
            OpKind::SetXnack { value, .. } => {
                rec.args = if *value < 0 {
                    "query".into()
                } else {
                    format!("enable={}", *value != 0)
                };
                let r = self.m.set_xnack_mode(pid, *value);
                rec.result = Self::svm_result(&r);
                rec.xnack = Some(self.m.process(pid).svm.xnack_enabled());
            }
            OpKind::QueueCreate { label, gpu_id, .. } => {
                rec.args = format!(
                    "{}on {}",
                    label.as_ref().map(|l| format!("{l} ")).unwrap_or_default(),
                    self.names.gpu(*gpu_id)
                );
                let r = self.m.create_queue(pid, *gpu_id);
                rec.result = Self::svm_result(&r);
                if let (Ok(q), Some(l)) = (&r, label) {
                    self.queues.insert((op.process, l.clone()), q.raw());
                }
            }
            OpKind::AllocBo {
                label,
                gpu_id,
                size,
                ..
            } => {
                rec.args = format!("{label} {} on {}", fmt_size(*size), self.names.gpu(*gpu_id));
                let r = self.m.alloc_vram_bo(pid, *gpu_id, *size);
                rec.result = Self::svm_result(&r);
                if let Ok(h) = r {
                    self.buffers.insert((op.process, label.clone()), h);
                }
            }
            OpKind::FreeBo { label, .. } => {
                rec.args = label.clone();
                // A buffer whose allocation failed has no handle: EINVAL.
                let h = self
                    .buffers
                    .remove(&(op.process, label.clone()))
                    .unwrap_or(0);
                rec.result = Self::svm_result(&self.m.free_vram_bo(pid, h));
            }
            OpKind::QueueDestroy { label, .. } => {
                rec.args = label.clone();
                // A queue whose creation failed has no id; destroying it is EINVAL.
                let q = self
                    .queues
                    .remove(&(op.process, label.clone()))
                    .unwrap_or(0);
                rec.result = Self::svm_result(&self.m.destroy_queue(pid, q));
            }
            OpKind::GpuAccess {
                gpu_id,
                addr,
                size,
                fill,
                check_fill,
                atomic_add,
                launch,
                repeat,
                until,
                waves,
                start,
                ..
            } => {
                self.access(
                    op,
                    &mut rec,
                    Some(*gpu_id),
                    addr,
                    *size,
                    (*fill, *check_fill, *atomic_add),
                    (launch.as_deref(), *repeat, until.as_ref(), *waves, *start),
                )?;
            }
            OpKind::CpuAccess {
                addr,
                size,
                fill,
                check_fill,
                atomic_add,
                launch,
                threads,
                repeat,
                until,
                start,
                ..
            } => {
                self.access(
                    op,
                    &mut rec,
                    None,
                    addr,
                    *size,
                    (*fill, *check_fill, *atomic_add),
                    (launch.as_deref(), *repeat, until.as_ref(), *threads, *start),
                )?;
            }
            OpKind::Wait { label, .. } => {
                rec.args = label.clone();
                // The parser made sure the launch came first.
                let launched = self
                    .launches
                    .remove(&(op.process, label.clone()))
                    .ok_or_else(|| {
                        self.place(op, "access", format!("{label:?} was not launched"))
                    })?;
                let (r, check_fill) = match launched {
                    Ok((w, check_fill)) => {
                        (self.m.wait(w).map(|(v, st)| (v, Some(st))), check_fill)
                    }
                    Err(e) => (Err(e), None),
                };
                Self::access_result(&mut rec, &r, check_fill);
            }
            OpKind::DontNeed { addr, size, .. } => {
                let a = self.addr(op, "addr", addr)?;
                rec.args = format!("{a:#x} +{}", fmt_size(*size));
                rec.result = Self::mm_result(&self.m.madvise_dontneed(pid, CpuVa::new(a), *size));
            }
            OpKind::AdvanceTime { ns } => {
                rec.args = format!("{ns} ns");
                self.m.advance(*ns);
            }
            OpKind::Prefetch {
                addr, size, loc, ..
            } => {
                let a = self.addr(op, "addr", addr)?;
                let attrs = vec![SvmAttribute {
                    ty: attr_type::PREFETCH_LOC,
                    value: *loc,
                }];
                rec.args = format!(
                    "{a:#x} +{} {}",
                    fmt_size(*size),
                    fmt_attrs(&self.names, &attrs)
                );
                let mut args = SvmArgs {
                    start_addr: a,
                    size: *size,
                    op: SVM_OP_SET_ATTR,
                    attrs,
                };
                rec.result = Self::svm_result(&self.m.svm_ioctl(pid, &mut args));
            }
            OpKind::EvictVram { gpu_id, need, .. } => {
                let r = self.m.evict_vram(*gpu_id, *need);
                rec.args = format!(
                    "{} {}{}",
                    self.names.gpu(*gpu_id),
                    need.map_or_else(
                        || "all".to_string(),
                        |n| format!("until {} free", fmt_size(n))
                    ),
                    r.as_ref()
                        .map(|n| format!(": {n} buffer(s) evicted"))
                        .unwrap_or_default()
                );
                rec.result = Self::result(&r, svm_sim::machine::AccessError::errno);
            }
            OpKind::Exit {} => self.m.exit(pid),
            OpKind::Residency { addr, size, expect } => {
                let a = self.addr(op, "addr", addr)?;
                rec.args = format!("{a:#x} +{}", fmt_size(*size));
                let got = self.residency_runs(pid, a, *size);
                let mut want = Vec::new();
                for (i, w) in expect.iter().enumerate() {
                    want.push((
                        self.addr(op, &format!("expect[{i}].addr"), &w.addr)?,
                        w.size,
                        w.loc,
                    ));
                }
                let show = |v: &[(u64, u64, u32)]| {
                    v.iter()
                        .map(|&(s, n, l)| {
                            format!("{s:#x}+{} {}", fmt_size(n), self.names.location(l))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                rec.expect = Some(show(&want));
                if got != want {
                    rec.mismatch = Some(format!("pages live at [{}]", show(&got)));
                }
            }
            OpKind::Smi { gpu, expect } => self.smi(op, &mut rec, *gpu, expect)?,
            OpKind::Fork { child } => {
                let index = self
                    .sc
                    .processes
                    .iter()
                    .position(|n| n == child)
                    .expect("the parser registered the child");
                let c = self.m.fork(pid, child);
                self.pids[index] = c;
                // The child sees the parent's mappings under their labels.
                let inherited: Vec<(String, u64)> = self
                    .labels
                    .iter()
                    .filter(|((p, _), _)| *p == op.process)
                    .map(|((_, l), &a)| (l.clone(), a))
                    .collect();
                for (l, a) in inherited {
                    self.labels.insert((index, l), a);
                }
                rec.args = format!("child {child}");
            }
            OpKind::Counters { expect } => {
                let mut bad = Vec::new();
                let mut seen = Vec::new();
                for CounterExpect { name, gpu, want } in expect {
                    let got = self.counter(pid, name, *gpu);
                    let label = gpu.map_or_else(
                        || name.clone(),
                        |g| format!("{name}({})", self.names.gpu(g)),
                    );
                    seen.push(format!("{label}={want}"));
                    if got != *want {
                        bad.push(format!("{label}: expected {want}, got {got}"));
                    }
                }
                rec.args = seen.join(" ");
                rec.expect = Some(rec.args.clone());
                if !bad.is_empty() {
                    rec.mismatch = Some(bad.join("; "));
                }
            }
            OpKind::Ranges { addr, size, expect } => {
                // The parser made sure a window has both or neither.
                let win = addr
                    .as_ref()
                    .zip(*size)
                    .map(|(a, s)| Ok::<_, ScenarioError>((self.addr(op, "addr", a)?, s)))
                    .transpose()?;
                let mut want = Vec::new();
                for (i, r) in expect.iter().enumerate() {
                    want.push((
                        self.addr(op, &format!("expect[{i}].addr"), &r.addr)?,
                        r.size,
                        r.mapped,
                    ));
                }
                let got: Vec<(u64, u64, bool)> = self
                    .m
                    .process(pid)
                    .svm
                    .ranges()
                    .iter()
                    .map(|r| {
                        (
                            r.range().start_va().raw(),
                            r.range().npages().bytes(),
                            r.mapped_to_gpu,
                        )
                    })
                    .filter(|&(s, n, _)| {
                        win.is_none_or(|(ws, wn)| s < ws.saturating_add(wn) && ws < s + n)
                    })
                    .collect();
                rec.args =
                    win.map_or_else(|| "all".into(), |(a, s)| format!("{a:#x} +{}", fmt_size(s)));
                let show = |v: &[(u64, u64, Option<bool>)]| {
                    if v.is_empty() {
                        return "no ranges".to_string();
                    }
                    v.iter()
                        .map(|(s, n, m)| {
                            format!(
                                "{s:#x}+{}{}",
                                fmt_size(*n),
                                m.map_or("", |m| if m { " mapped" } else { " unmapped" })
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                rec.expect = Some(show(&want));
                let matches = got.len() == want.len()
                    && got
                        .iter()
                        .zip(&want)
                        .all(|(g, w)| g.0 == w.0 && g.1 == w.1 && w.2.is_none_or(|m| m == g.2));
                if !matches {
                    let got_v: Vec<_> = got.iter().map(|&(s, n, m)| (s, n, Some(m))).collect();
                    rec.mismatch = Some(format!("ranges are [{}]", show(&got_v)));
                }
            }
        }
        if let Some(e) = op.kind.expect() {
            rec.expect = Some(self.describe(e));
            rec.mismatch = self.compare(e, &rec);
        }
        Ok(rec)
    }

    /// Where the pages of `[addr, addr+size)` live, as runs of
    /// `(address, bytes, location)`; pages outside every range are in
    /// system memory.
    fn residency_runs(&self, pid: Pid, addr: u64, size: u64) -> Vec<(u64, u64, u32)> {
        let svm = &self.m.process(pid).svm;
        let mut runs: Vec<(u64, u64, u32)> = Vec::new();
        let first = addr / PAGE_SIZE;
        for page in first..(addr + size).div_ceil(PAGE_SIZE) {
            let p = svm_core::addr::PageNum::new(page);
            let loc = svm
                .ranges()
                .find(p)
                .filter(|r| r.vram.get(r.index(p)))
                .and_then(|r| r.actual_loc)
                .map_or(0, |g| svm.devices()[g].id.raw());
            match runs.last_mut() {
                Some(last) if last.2 == loc => last.1 += PAGE_SIZE,
                _ => runs.push((page * PAGE_SIZE, PAGE_SIZE, loc)),
            }
        }
        runs
    }

    /// The value of a named counter (see `parse::GPU_COUNTERS` and friends).
    fn counter(&self, pid: Pid, name: &str, gpu: Option<u32>) -> u64 {
        let svm = &self.m.process(pid).svm;
        if let Some(id) = gpu {
            let Some(g) = svm.gpuidx(id) else { return 0 };
            let st = svm.stats()[g];
            return match name {
                "faults" => st.faults,
                "page_in" => st.page_in,
                "page_out" => st.page_out,
                "stragglers_dropped" => st.stragglers_dropped,
                "unmapping_dropped" => st.unmapping_dropped,
                _ => self.m.stale_dma(pid, id),
            };
        }
        let c = self.m.counters();
        let event = |id: u32| {
            self.m
                .events()
                .iter()
                .filter(|e| e.event.kind.id() == id)
                .count() as u64
        };
        let rescheduled = || {
            self.m
                .events()
                .iter()
                .filter(|e| {
                    matches!(
                        e.event.kind,
                        Kind::QueueRestore {
                            rescheduled: true,
                            ..
                        }
                    )
                })
                .count() as u64
        };
        match name {
            "pages_to_vram" => c.pages_to_vram,
            "pages_zero_filled" => c.pages_zero_filled,
            "pages_to_ram" => c.pages_to_ram,
            "pages_faulted_in" => c.pages_faulted_in,
            "copy_jobs" => c.copy_jobs,
            "cpu_faults" => c.cpu_faults,
            "atomic_faults" => c.atomic_faults,
            "cpu_timeslice_wait_ns" => c.cpu_timeslice_wait_ns,
            "cpu_throttle_wait_ns" => c.cpu_throttle_wait_ns,
            "faults_ih_filtered" => c.faults_ih_filtered,
            "dma_maps" => c.dma_maps,
            "dma_unmaps" => c.dma_unmaps,
            "ptes_written" => c.ptes_written,
            "ptes_cleared" => c.ptes_cleared,
            "tlb_flush_legacy" => c.tlb_flush_legacy,
            "tlb_flush_heavyweight" => c.tlb_flush_heavyweight,
            "vram_allocs" => c.vram_allocs,
            "vram_frees" => c.vram_frees,
            "bad_dma_unmaps" => c.bad_dma_unmaps,
            "queue_evictions" => c.queue_evictions,
            "queue_restores" => c.queue_restores,
            "queue_eviction" => event(events::QUEUE_EVICTION),
            // A rescheduled restore is its own count, not a restore.
            "queue_restore" => event(events::QUEUE_RESTORE) - rescheduled(),
            "queue_restore_rescheduled" => rescheduled(),
            "migrate_start" => event(events::MIGRATE_START),
            "migrate_end" => event(events::MIGRATE_END),
            "page_fault_start" => event(events::PAGE_FAULT_START),
            "page_fault_end" => event(events::PAGE_FAULT_END),
            _ => event(events::UNMAP_FROM_GPU),
        }
    }

    fn decode(&self, q: &SvmAttribute, out: &SvmAttribute) -> AttrOut {
        let (text, gpu) = match q.ty {
            attr_type::ACCESS => (attr_name(out.ty), Some(self.names.gpu(q.value))),
            attr_type::PREFERRED_LOC | attr_type::PREFETCH_LOC => {
                (self.names.location(out.value), None)
            }
            attr_type::SET_FLAGS | attr_type::CLR_FLAGS => (
                svm_core::attr::SvmFlags::from_bits(out.value).to_string(),
                None,
            ),
            _ => (out.value.to_string(), None),
        };
        AttrOut {
            attr: attr_name(q.ty),
            value: out.value,
            text,
            gpu,
        }
    }

    fn describe(&self, e: &Expect) -> String {
        match e {
            Expect::Ok => "ok".into(),
            Expect::Errno(n) => n.name().into(),
            Expect::Xnack(x) => format!("xnack={x}"),
            Expect::Attrs(a) => {
                let mut v = Vec::new();
                let n = &self.names;
                if let Some(x) = a.preferred_loc {
                    v.push(format!("preferred_loc={}", n.location(x)));
                }
                if let Some(x) = a.prefetch_loc {
                    v.push(format!("prefetch_loc={}", n.location(x)));
                }
                if let Some(x) = a.set_flags {
                    v.push(format!(
                        "set_flags={}",
                        svm_core::attr::SvmFlags::from_bits(x)
                    ));
                }
                if let Some(x) = a.clr_flags {
                    v.push(format!("clr_flags={:#x}", x));
                }
                if let Some(x) = a.granularity {
                    v.push(format!("granularity={x}"));
                }
                for (id, t) in &a.access {
                    v.push(format!("access({})={}", n.gpu(*id), attr_name(*t)));
                }
                v.join(" ")
            }
        }
    }

    fn compare(&self, e: &Expect, rec: &OpRecord) -> Option<String> {
        let got = match &rec.result {
            OpResult::Ok => "ok".to_string(),
            OpResult::Error { errno, .. } => errno.clone(),
        };
        match e {
            Expect::Ok => (got != "ok").then(|| format!("expected ok, got {got}")),
            Expect::Errno(n) => {
                (got != n.name()).then(|| format!("expected {}, got {got}", n.name()))
            }
            Expect::Xnack(x) => {
                if got != "ok" {
                    Some(format!("expected xnack={x}, got {got}"))
                } else {
                    (rec.xnack != Some(*x)).then(|| {
                        format!(
                            "expected xnack={x}, got xnack={}",
                            rec.xnack.unwrap_or_default()
                        )
                    })
                }
            }
            Expect::Attrs(a) => {
                let Some(values) = &rec.values else {
                    return Some(format!("expected attributes, got {got}"));
                };
                self.compare_attrs(a, values)
            }
        }
    }

    fn compare_attrs(&self, a: &AttrExpect, values: &[AttrOut]) -> Option<String> {
        let mut bad = Vec::new();
        let mut want = |name: &str, w: Option<u32>, text: &dyn Fn(u32) -> String| {
            if let Some(w) = w
                && let Some(got) = values.iter().find(|v| v.attr == name)
                && got.value != w
            {
                bad.push(format!("{name}: expected {}, got {}", text(w), got.text));
            }
        };
        let loc = |v: u32| self.names.location(v);
        let flags = |v: u32| svm_core::attr::SvmFlags::from_bits(v).to_string();
        let num = |v: u32| v.to_string();
        want("preferred_loc", a.preferred_loc, &loc);
        want("prefetch_loc", a.prefetch_loc, &loc);
        want("set_flags", a.set_flags, &flags);
        want("clr_flags", a.clr_flags, &flags);
        want("granularity", a.granularity, &num);
        for (id, ty) in &a.access {
            let gpu = self.names.gpu(*id);
            if let Some(got) = values
                .iter()
                .find(|v| v.attr == "access" && v.gpu.as_deref() == Some(gpu.as_str()))
                && got.text != attr_name(*ty)
            {
                bad.push(format!(
                    "access({gpu}): expected {}, got {}",
                    attr_name(*ty),
                    got.text
                ));
            }
        }
        (!bad.is_empty()).then(|| bad.join("; "))
    }

    /// The run's eviction log, with GPUs and processes by name.
    fn evictions(&self) -> Vec<EvictionOut> {
        let proc_name = |i: usize| {
            self.m
                .processes()
                .nth(i)
                .map_or_else(|| format!("process {i}"), |(_, p)| p.name.clone())
        };
        self.m
            .evictions()
            .rows()
            .map(|e| EvictionOut {
                gpu: self.names.gpu(e.gpu_id),
                by: e.by.map_or_else(|| "outside".to_owned(), proc_name),
                victim: proc_name(e.victim),
                buffers: e.buffers,
                pages: e.pages,
                ns: e.ns,
            })
            .collect()
    }

    fn final_state(&self) -> Vec<ProcessOut> {
        self.m
            .processes()
            .enumerate()
            .map(|(idx, (pid, p))| {
                let svm = &p.svm;
                let gpu_names = |mask: svm_core::gpu::GpuMask| -> Vec<String> {
                    mask.iter()
                        .map(|g| self.names.gpu(svm.devices()[g].id.raw()))
                        .collect()
                };
                ProcessOut {
                    name: p.name.clone(),
                    xnack: svm.xnack_enabled(),
                    buffers: crate::exec::buffers(&self.m, pid),
                    stats: svm
                        .devices()
                        .iter()
                        .map(|(g, d)| GpuStatsOut {
                            gpu: self.names.gpu(d.id.raw()),
                            stats: svm.stats()[g],
                        })
                        .collect(),
                    // Open queues as the engine has them, named by their label
                    // when the scenario gave one.
                    queues: svm
                        .queues()
                        .map(|(q, _)| {
                            let label = self
                                .queues
                                .iter()
                                .find(|((pi, _), id)| *pi == idx && **id == q.raw())
                                .map(|((_, l), _)| l.as_str())
                                .unwrap_or_default();
                            format!("{label}#{}", q.raw())
                        })
                        .collect(),
                    vmas: p
                        .mm
                        .vmas()
                        .map(|v| VmaOut {
                            start_addr: format!("{:#x}", v.range.start_va().raw()),
                            end_addr: format!("{:#x}", v.range.end().va().raw()),
                            prot: v.prot.to_string(),
                            backing: v.backing.to_string(),
                            mark: v.mark.to_string(),
                        })
                        .collect(),
                    ranges: svm
                        .ranges()
                        .iter()
                        .map(|r| RangeOut {
                            start: format!("{:#x}", r.start().raw()),
                            last: format!("{:#x}", r.last().raw()),
                            start_addr: format!("{:#x}", r.range().start_va().raw()),
                            size_bytes: r.range().npages().bytes(),
                            preferred_loc: self.names.loc_opt(r.attrs.preferred_loc),
                            prefetch_loc: self.names.loc_opt(r.attrs.prefetch_loc),
                            access: gpu_names(r.attrs.access),
                            access_in_place: gpu_names(r.attrs.access_in_place),
                            flags: r.attrs.flags.to_string(),
                            flags_raw: r.attrs.flags.bits(),
                            granularity: r.attrs.granularity.log2(),
                            mapped_to_gpu: r.mapped_to_gpu,
                            vram_pages: r.vram_pages(),
                            evictions: r.evictions,
                            restores: r.restores,
                            actual_loc: r.actual_loc.map_or_else(
                                || "sysmem".into(),
                                |g| self.names.gpu(svm.devices()[g].id.raw()),
                            ),
                            residency: r
                                .vram
                                .runs()
                                .into_iter()
                                .map(|(a, b, in_vram)| RunOut {
                                    offset: a,
                                    npages: b - a,
                                    loc: match (in_vram, r.actual_loc) {
                                        (true, Some(g)) => {
                                            self.names.gpu(svm.devices()[g].id.raw())
                                        }
                                        _ => "sysmem".into(),
                                    },
                                })
                                .collect(),
                            gpus: svm
                                .devices()
                                .iter()
                                .map(|(g, d)| {
                                    let ptes = self.m.page_tables(pid)[g.get()].count_in(r.range());
                                    let dma = r.dma.count_set(g);
                                    RangeGpuOut {
                                        gpu: self.names.gpu(d.id.raw()),
                                        ptes,
                                        dma,
                                        stale: self.m.stale_dma_in(pid, d.id.raw(), r.range()),
                                    }
                                })
                                .collect(),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// Runs a parsed scenario.
///
/// Stops early only when an invariant breaks (a bug in svmsim, reported in
/// [`RunReport::violation`]); mismatched expectations are recorded and the
/// run goes on.
///
/// The invariants are checked after the ops `checks` picks, and always
/// after the last.
///
/// # Errors
/// An address expression that cannot be resolved at run time (a label whose
/// mmap failed), placed at its op.
pub fn run(sc: &Scenario, mut checks: check::Schedule) -> Result<RunReport, ScenarioError> {
    let s = &sc.system;
    let mut m = Machine::new(
        s.topology.clone(),
        s.xnack,
        MemLimit {
            limit_bytes: s.mem_limit_bytes,
            used_bytes: 0,
        },
    );
    m.set_config(&s.config)
        .expect("the parser validated the scenario's config");
    m.set_seed(s.seed);
    if let Some(p) = &s.profile {
        m.apply_profile(p);
    }
    // Processes a fork makes get their pid then; until then they hold the
    // first's (no op of theirs runs before the fork: the parser says so).
    let first = m.spawn(&sc.processes[0]);
    let pids: Vec<Pid> = std::iter::once(first)
        .chain(sc.processes.iter().zip(&sc.forked).skip(1).map(
            |(n, &f)| {
                if f { first } else { m.spawn(n) }
            },
        ))
        .collect();
    // Each process's own XNACK mode, set as it starts.
    for ((&pid, x), &f) in pids.iter().zip(&sc.process_xnack).zip(&sc.forked) {
        if let Some((enable, refused)) = x
            && !f
            && m.set_xnack_mode(pid, i32::from(*enable)).is_err()
        {
            return Err(refused.clone());
        }
    }
    let names = Names {
        gpus: s
            .topology
            .gpus()
            .iter()
            .enumerate()
            .map(|(node, g)| (g.id.raw(), crate::exec::gpu_name(node, g.id.raw())))
            .collect(),
    };
    let mut r = Runner {
        sc,
        m,
        pids,
        names,
        labels: BTreeMap::new(),
        queues: BTreeMap::new(),
        buffers: BTreeMap::new(),
        launches: BTreeMap::new(),
        smi_seen: BTreeMap::new(),
    };
    let mut ops = Vec::new();
    let mut violation = None;
    let mut checked_ops = 0;
    // The op after which the last check held, to say where a break lies.
    let mut clean: Option<usize> = None;
    for (n, op) in sc.ops.iter().enumerate() {
        // With a seed, concurrent work gets its turn before each op.
        if s.seed.is_some() {
            r.m.interleave();
        }
        let mut rec = r.step(op)?;
        rec.end_ns = r.m.now_ns();
        ops.push(rec);
        if !(checks.due(&r.m) || n + 1 == sc.ops.len()) {
            continue;
        }
        checked_ops += 1;
        if let Err(v) = check::check(&r.m) {
            let since = match clean {
                Some(c) if c + 1 < op.index => format!(
                    " (checked last after op {c}: it broke in ops {}..={}; \
                     `svmsim scenario --check-every-op` names the op)",
                    c + 1,
                    op.index
                ),
                _ => String::new(),
            };
            violation = Some(format!(
                "after op {} (line {}): {v}{since}",
                op.index, op.line
            ));
            break;
        }
        clean = Some(op.index);
    }
    let max_pages = r.m.process(r.pids[0]).svm.max_range_pages().raw();
    let mismatches = ops.iter().filter(|o| o.mismatch.is_some()).count();
    Ok(RunReport {
        schema: SCHEMA,
        passed: mismatches == 0 && violation.is_none(),
        policy: s.config.policy.clone(),
        config: s.config.clone(),
        seed: s.seed,
        profile: s.profile.as_ref().map(|p| p.name.clone()),
        end_ns: r.m.now_ns(),
        counters: r.m.counters(),
        metrics: crate::exec::Metrics::of_machine(&r.m, &r.pids),
        evictions: r.evictions(),
        events: r.m.events().to_vec(),
        injection: if r.m.injection().active() {
            r.m.injection().coverage()
        } else {
            Vec::new()
        },
        gpu_ids: s.topology.gpus().iter().map(|g| g.id).collect(),
        name: sc.name.clone(),
        file: sc.file.clone(),
        description: sc.description.clone(),
        system: SystemOut {
            gpus: s
                .topology
                .gpus()
                .iter()
                .enumerate()
                .map(|(node, g)| GpuOut {
                    node,
                    name: g.name.clone(),
                    id: format!("{:#x}", g.id.raw()),
                    vram_bytes: g.vram_bytes,
                    svm: g.svm,
                    xnack: g.xnack,
                    hive: g.hive,
                    gc: g.gc.to_string(),
                })
                .collect(),
            xnack_default: s.xnack,
            max_svm_range_pages: max_pages,
            sysmem_bytes: s.sysmem_bytes,
            mem_limit: r.m.mem_limit(),
        },
        mismatches,
        processes: r.final_state(),
        ops,
        violation,
        checked_ops,
    })
}

/// `size` bytes of a repeated little-endian 32-bit pattern.
/// Formats a byte count with the largest unit that divides it.
pub fn size_text(bytes: u64) -> String {
    fmt_size(bytes)
}

//! The scenario file format: a system, processes, and a list of operations with expectations.
//!
//! The format is documented for users in `docs/scenario.md`; this module is
//! its one implementation. Names (GPUs, processes, mappings, queues) are
//! resolved here, so a reference to an unknown name is an error that points
//! at its line before anything runs. Attribute values become raw uAPI
//! numbers here too, so the run goes through the same ioctl edge as user
//! space.

use std::collections::BTreeMap;

use svm_core::Errno;
use svm_core::attr::SvmFlags;
use svm_core::config::Config;
use svm_core::gpu::GpuId;
use svm_core::topology::{GpuDesc, Topology};
use svm_core::uapi::{SVM_LOCATION_SYSMEM, SVM_LOCATION_UNDEFINED, SvmAttribute, attr_type};
use svm_sim::mm::{Backing, Mark, Prot};

use super::doc::{ScenarioError, Source, Table, Value};

/// The machine a scenario runs on.
#[derive(Clone, Debug)]
pub struct SystemSpec {
    /// The GPUs.
    pub topology: Topology,
    /// Boot-time XNACK default (amdgpu's `noretry = 0`).
    pub xnack: bool,
    /// System memory in bytes.
    pub sysmem_bytes: u64,
    /// The SVM system-memory limit in bytes.
    pub mem_limit_bytes: u64,
    /// Every knob of the run: the `[config]` table, and the knobs
    /// `[system]` may name too (`policy`, `bulk_dma_unmap`, ...).
    pub config: Config,
    /// The scheduler's seed: with one, concurrent work (in-flight faults,
    /// deferred and restore work) interleaves with the operations in a
    /// seeded order; without, kernel work runs at once.
    pub seed: Option<u64>,
    /// The built-in profile that prices every action (its timing and
    /// compute shape; the GPUs stay the scenario's). None: untimed.
    pub profile: Option<svm_sim::timing::Profile>,
}

/// A place in the address space: a mapping's label plus an offset, or a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrExpr {
    /// The mapping whose start the offset counts from.
    pub label: Option<String>,
    /// Bytes from the label's start (or from 0).
    pub offset: i128,
}

/// An expected range of a `ranges` check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeExpect {
    /// Its start.
    pub addr: AddrExpr,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is mapped to a GPU, if the check cares.
    pub mapped: Option<bool>,
}

/// What one operation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `mmap`; `label` names the mapping for later address expressions.
    Mmap {
        label: Option<String>,
        addr: Option<AddrExpr>,
        size: u64,
        prot: Prot,
        backing: Backing,
        mark: Mark,
    },
    /// `munmap`.
    Munmap { addr: AddrExpr, size: u64 },
    /// `mprotect`.
    Mprotect {
        addr: AddrExpr,
        size: u64,
        prot: Prot,
    },
    /// `madvise(MADV_DONTNEED)`.
    DontNeed { addr: AddrExpr, size: u64 },
    /// SVM SET_ATTR with raw attributes.
    SetAttr {
        addr: AddrExpr,
        size: u64,
        attrs: Vec<SvmAttribute>,
    },
    /// SVM GET_ATTR with raw queries.
    GetAttr {
        addr: AddrExpr,
        size: u64,
        query: Vec<SvmAttribute>,
    },
    /// SET_XNACK_MODE with a raw value (negative queries).
    SetXnack { value: i32 },
    /// Create a user queue on a GPU.
    QueueCreate { label: Option<String>, gpu_id: u32 },
    /// Destroy a user queue created earlier.
    QueueDestroy { label: String },
    /// Compare the process's ranges inside a window.
    Ranges {
        window: Option<(AddrExpr, u64)>,
        expect: Vec<RangeExpect>,
    },
    /// A GPU (or, with `gpu_id` `None`, the CPU) reads or writes memory.
    Access {
        gpu_id: Option<u32>,
        addr: AddrExpr,
        size: u64,
        /// Write this 32-bit pattern, or read.
        fill: Option<u32>,
        /// On a read, every word must hold this pattern.
        check_fill: Option<u32>,
        /// Leave the GPU access in flight under this name; a later `wait`
        /// collects it.
        launch: Option<String>,
    },
    /// Wait for a launched GPU access and check its result.
    Wait { label: String },
    /// SET_ATTR with PREFETCH_LOC alone: move the range to `loc`.
    Prefetch { addr: AddrExpr, size: u64, loc: u32 },
    /// Force VRAM pressure on a GPU until `need` bytes are free (every SVM
    /// buffer there when `None`).
    EvictVram { gpu_id: u32, need: Option<u64> },
    /// The process exits.
    Exit,
    /// Let simulated time pass; deferred and restore work falls due.
    AdvanceTime { ns: u64 },
    /// Compare where the pages of a window live.
    Residency {
        addr: AddrExpr,
        size: u64,
        expect: Vec<(AddrExpr, u64, u32)>,
    },
    /// Compare counters: per-GPU fault and migration counts, stale DMA
    /// entries, hardware counters and SMI events seen.
    Counters {
        expect: Vec<(String, Option<u32>, u64)>,
    },
}

impl OpKind {
    /// The name the file uses for this operation.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Mmap { .. } => "mmap",
            OpKind::Munmap { .. } => "munmap",
            OpKind::Mprotect { .. } => "mprotect",
            OpKind::DontNeed { .. } => "madvise_dontneed",
            OpKind::SetAttr { .. } => "set_attr",
            OpKind::GetAttr { .. } => "get_attr",
            OpKind::SetXnack { .. } => "set_xnack",
            OpKind::QueueCreate { .. } => "queue_create",
            OpKind::QueueDestroy { .. } => "queue_destroy",
            OpKind::Ranges { .. } => "ranges",
            OpKind::Access {
                gpu_id: Some(_), ..
            } => "gpu_access",
            OpKind::Wait { .. } => "wait",
            OpKind::Access { gpu_id: None, .. } => "cpu_access",
            OpKind::Prefetch { .. } => "prefetch",
            OpKind::EvictVram { .. } => "evict_vram",
            OpKind::Exit => "exit",
            OpKind::AdvanceTime { .. } => "advance_time",
            OpKind::Residency { .. } => "residency",
            OpKind::Counters { .. } => "counters",
        }
    }
}

/// Expected GET_ATTR answers; only the listed ones are compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrExpect {
    /// PREFERRED_LOC value.
    pub preferred_loc: Option<u32>,
    /// PREFETCH_LOC value.
    pub prefetch_loc: Option<u32>,
    /// SET_FLAGS value.
    pub set_flags: Option<u32>,
    /// CLR_FLAGS value.
    pub clr_flags: Option<u32>,
    /// GRANULARITY value.
    pub granularity: Option<u32>,
    /// For each gpu_id, the attribute type the ACCESS query must come back as.
    pub access: BTreeMap<u32, u32>,
}

/// What an operation is expected to return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Success.
    Ok,
    /// This errno.
    Errno(Errno),
    /// Success with these GET_ATTR answers.
    Attrs(AttrExpect),
    /// Success with this XNACK mode afterwards.
    Xnack(bool),
}

/// One operation of the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSpec {
    /// 0-based position in the file.
    pub index: usize,
    /// Line of its `[[op]]` header.
    pub line: usize,
    /// Index into [`Scenario::processes`].
    pub process: usize,
    /// What it does.
    pub kind: OpKind,
    /// What it should return, if stated.
    pub expect: Option<Expect>,
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file name as given.
    pub file: String,
    /// Its `name`, or the file name.
    pub name: String,
    /// Its `description`.
    pub description: String,
    /// The machine.
    pub system: SystemSpec,
    /// Process names, in spawn order.
    pub processes: Vec<String>,
    /// The operations.
    pub ops: Vec<OpSpec>,
}

/// Parses a byte size: an integer, or a string in the one size grammar
/// (`"16KiB"`, `"2 MiB"`, `"3 pages"`, `"0x4000"`; `svm_core::units`).
fn size_of_str(s: &str) -> Option<u64> {
    svm_core::units::parse_size(s).ok()
}

const SIZE_HELP: &str = "expected a size: bytes as an integer, or a string such as \"16KiB\", \"2 MiB\", \"3 pages\", \"0x4000\"";

fn size(v: &Value<'_, '_>) -> Result<u64, ScenarioError> {
    if let Some(i) = v.int_opt()? {
        return u64::try_from(i).map_err(|_| v.error("a size cannot be negative"));
    }
    let s = v.str().map_err(|_| v.error(SIZE_HELP))?;
    svm_core::units::parse_size(s).map_err(|e| v.error(format!("expected a size: {e}")))
}

/// The parser's running state: names defined so far.
struct Ctx<'s> {
    src: Source<'s>,
    gpus: Vec<GpuDesc>,
    processes: Vec<String>,
    /// Mapping labels per process.
    labels: Vec<Vec<String>>,
    /// Queue labels per process.
    queues: Vec<Vec<String>>,
    /// Launched accesses per process not yet waited for, with the error to
    /// give if none is.
    launches: Vec<Vec<(String, ScenarioError)>>,
}

impl Ctx<'_> {
    fn gpu_by_name(&self, v: &Value<'_, '_>, name: &str) -> Result<u32, ScenarioError> {
        self.gpus
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.id.raw())
            .ok_or_else(|| {
                let names: Vec<_> = self.gpus.iter().map(|g| g.name.as_str()).collect();
                v.error(format!(
                    "no GPU named {name:?}; the system has: {}",
                    names.join(", ")
                ))
            })
    }

    /// A GPU: its name, or a raw gpu_id as an integer (which may be unknown on purpose).
    fn gpu(&self, v: &Value<'_, '_>) -> Result<u32, ScenarioError> {
        match v.int_opt()? {
            Some(_) => v.int::<u32>(),
            None => self.gpu_by_name(v, v.str()?),
        }
    }

    /// A location: `"sysmem"`, `"undefined"`, a GPU name, or a raw integer.
    fn location(&self, v: &Value<'_, '_>) -> Result<u32, ScenarioError> {
        if v.int_opt()?.is_some() {
            return v.int::<u32>();
        }
        match v.str()? {
            "sysmem" => Ok(SVM_LOCATION_SYSMEM),
            "undefined" => Ok(SVM_LOCATION_UNDEFINED),
            name => self.gpu_by_name(v, name),
        }
    }

    fn addr(&self, v: &Value<'_, '_>, process: usize) -> Result<AddrExpr, ScenarioError> {
        if let Some(i) = v.int_opt()? {
            return Ok(AddrExpr {
                label: None,
                offset: i,
            });
        }
        let s = v.str().map_err(|_| {
            v.error("expected an address: an integer, or a string such as \"buf\", \"buf+8KiB\", \"0x10000\"")
        })?;
        // `head(+|-)term(+|-)term...`: a label or number, then size terms.
        let cut = s.find(['+', '-']).unwrap_or(s.len());
        let head = s[..cut].trim();
        let mut offset: i128 = 0;
        let mut rest = &s[cut..];
        while let Some(sign) = rest.chars().next() {
            let body = &rest[1..];
            let end = body.find(['+', '-']).unwrap_or(body.len());
            let term = &body[..end];
            let n = size_of_str(term)
                .ok_or_else(|| v.error(format!("{term:?} in {s:?}: {SIZE_HELP}")))?;
            offset += if sign == '+' {
                i128::from(n)
            } else {
                -i128::from(n)
            };
            rest = &body[end..];
        }
        if let Some(n) =
            size_of_str(head).filter(|_| head.starts_with(|c: char| c.is_ascii_digit()))
        {
            return Ok(AddrExpr {
                label: None,
                offset: i128::from(n) + offset,
            });
        }
        if !self.labels[process].iter().any(|l| l == head) {
            return Err(v.error(format!(
                "no mapping labelled {head:?} in process {:?} before this op",
                self.processes[process]
            )));
        }
        Ok(AddrExpr {
            label: Some(head.to_owned()),
            offset,
        })
    }

    fn flags(&self, v: &Value<'_, '_>) -> Result<u32, ScenarioError> {
        if v.int_opt()?.is_some() {
            return v.int::<u32>();
        }
        let names: Vec<String> = match v.get() {
            toml::de::DeValue::Array(_) => v
                .array()?
                .iter()
                .map(|x| x.str().map(str::to_owned))
                .collect::<Result<_, _>>()?,
            _ => v
                .str()?
                .split('|')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        names.iter().try_fold(0u32, |acc, n| {
            let f = SvmFlags::from_name(n).ok_or_else(|| {
                let known: Vec<_> = SvmFlags::NAMES.iter().map(|(_, n)| *n).collect();
                v.error(format!(
                    "unknown flag {n:?}; known flags: {}",
                    known.join(", ")
                ))
            })?;
            Ok(acc | f.bits())
        })
    }
}

const ATTR_NAMES: [(&str, u32); 8] = [
    ("preferred_loc", attr_type::PREFERRED_LOC),
    ("prefetch_loc", attr_type::PREFETCH_LOC),
    ("access", attr_type::ACCESS),
    ("access_in_place", attr_type::ACCESS_IN_PLACE),
    ("no_access", attr_type::NO_ACCESS),
    ("set_flags", attr_type::SET_FLAGS),
    ("clr_flags", attr_type::CLR_FLAGS),
    ("granularity", attr_type::GRANULARITY),
];

fn attr_type_of(v: &Value<'_, '_>, name: &str) -> Result<u32, ScenarioError> {
    ATTR_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<_> = ATTR_NAMES.iter().map(|(n, _)| *n).collect();
            v.error(format!(
                "unknown attribute {name:?}; expected one of: {}, or {{ type = N, value = N }}",
                names.join(", ")
            ))
        })
}

/// One SET_ATTR attribute: `{ name = value }` or `{ type = N, value = N }`.
fn set_attr_item(ctx: &Ctx<'_>, v: &Value<'_, '_>) -> Result<SvmAttribute, ScenarioError> {
    let t = v.table()?;
    if t.get("type").is_some() {
        t.only(&["type", "value"])?;
        return Ok(SvmAttribute::new(
            t.req("type")?.int()?,
            t.req("value")?.int()?,
        ));
    }
    let entries = t.entries();
    let [(name, val)] = entries.as_slice() else {
        return Err(t.error("an attribute is a table with one key, such as { access = \"gpu0\" }"));
    };
    let ty = attr_type_of(val, name)?;
    let value = match ty {
        attr_type::PREFERRED_LOC | attr_type::PREFETCH_LOC => ctx.location(val)?,
        attr_type::ACCESS | attr_type::ACCESS_IN_PLACE | attr_type::NO_ACCESS => ctx.gpu(val)?,
        attr_type::SET_FLAGS | attr_type::CLR_FLAGS => ctx.flags(val)?,
        _ => val.int()?,
    };
    Ok(SvmAttribute::new(ty, value))
}

/// One GET_ATTR query: `"name"`, `{ access = "gpu0" }` or `{ type = N, value = N }`.
fn query_item(ctx: &Ctx<'_>, v: &Value<'_, '_>) -> Result<SvmAttribute, ScenarioError> {
    if let Ok(name) = v.str() {
        let ty = attr_type_of(v, name)?;
        if ty == attr_type::ACCESS {
            return Err(v.error("an access query names its GPU: { access = \"gpu0\" }"));
        }
        return Ok(SvmAttribute::new(ty, 0));
    }
    set_attr_item(ctx, v)
}

/// The answer names of an ACCESS query.
fn access_kind(v: &Value<'_, '_>) -> Result<u32, ScenarioError> {
    match v.str()? {
        "access" => Ok(attr_type::ACCESS),
        "access_in_place" => Ok(attr_type::ACCESS_IN_PLACE),
        "no_access" => Ok(attr_type::NO_ACCESS),
        s => Err(v.error(format!(
            "{s:?}: expected \"access\", \"access_in_place\" or \"no_access\""
        ))),
    }
}

/// `expect` of a get_attr: a table of answers.
fn attr_expect(ctx: &Ctx<'_>, t: &Table<'_, '_>) -> Result<AttrExpect, ScenarioError> {
    t.only(&[
        "preferred_loc",
        "prefetch_loc",
        "set_flags",
        "clr_flags",
        "granularity",
        "access",
    ])?;
    let mut e = AttrExpect::default();
    for (key, v) in t.entries() {
        match key {
            "preferred_loc" => e.preferred_loc = Some(ctx.location(&v)?),
            "prefetch_loc" => e.prefetch_loc = Some(ctx.location(&v)?),
            "set_flags" => e.set_flags = Some(ctx.flags(&v)?),
            "clr_flags" => e.clr_flags = Some(ctx.flags(&v)?),
            "granularity" => e.granularity = Some(v.int()?),
            "access" => {
                for (gpu, kind) in v.table()?.entries() {
                    let id = ctx.gpu_by_name(&kind, gpu)?;
                    e.access.insert(id, access_kind(&kind)?);
                }
            }
            _ => unreachable!("checked by only()"),
        }
    }
    Ok(e)
}

fn errno_or_ok(v: &Value<'_, '_>) -> Result<Expect, ScenarioError> {
    let s = v.str()?;
    if s.eq_ignore_ascii_case("ok") {
        return Ok(Expect::Ok);
    }
    Errno::from_name(s).map(Expect::Errno).ok_or_else(|| {
        let names: Vec<_> = Errno::ALL.iter().map(|e| e.name()).collect();
        v.error(format!(
            "{s:?}: expected \"ok\" or an errno: {}",
            names.join(", ")
        ))
    })
}

fn prot(v: Option<Value<'_, '_>>) -> Result<Prot, ScenarioError> {
    match v {
        None => Ok(Prot::RW),
        Some(v) => {
            let s = v.str()?;
            Prot::parse(s).ok_or_else(|| {
                v.error(format!(
                    "{s:?}: expected protection such as \"rw\", \"r\", \"rwx\", \"none\""
                ))
            })
        }
    }
}

fn label(v: Option<Value<'_, '_>>) -> Result<Option<String>, ScenarioError> {
    v.map(|v| {
        let s = v.str()?;
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(v.error(format!("{s:?}: a label is letters, digits and '_'")));
        }
        Ok(s.to_owned())
    })
    .transpose()
}

fn parse_gpu(
    ctx_gpus: &[GpuDesc],
    v: &Value<'_, '_>,
    index: usize,
    default_gc: svm_core::pte::GcVersion,
) -> Result<GpuDesc, ScenarioError> {
    let t = v.table()?;
    t.only(&["name", "id", "vram", "svm", "xnack", "hive", "apu", "gc"])?;
    let name = match t.get("name") {
        Some(n) => n.str()?.to_owned(),
        None => format!("gpu{index}"),
    };
    if ctx_gpus.iter().any(|g| g.name == name) {
        return Err(t.error(format!("GPU name {name:?} is used twice")));
    }
    let id = match t.get("id") {
        Some(idv) => {
            let raw: u32 = idv.int()?;
            GpuId::new(raw).ok_or_else(|| {
                idv.error(format!(
                    "{raw:#x} is reserved (0 is sysmem, 0xffffffff undefined)"
                ))
            })?
        }
        None => GpuId::new(0x1002 + 0x1000 * u32::try_from(index).expect("at most 64 GPUs"))
            .expect("non-zero"),
    };
    if let Some(other) = ctx_gpus.iter().find(|g| g.id == id) {
        return Err(t.error(format!("gpu_id {id} is already used by {:?}", other.name)));
    }
    Ok(GpuDesc {
        name,
        id,
        vram_bytes: t
            .get("vram")
            .map(|v| size(&v))
            .transpose()?
            .unwrap_or(16 << 30),
        svm: t.get("svm").map(|v| v.bool()).transpose()?.unwrap_or(true),
        xnack: t
            .get("xnack")
            .map(|v| v.bool())
            .transpose()?
            .unwrap_or(true),
        hive: t.get("hive").map(|v| v.int()).transpose()?,
        apu: t.get("apu").map(|v| v.bool()).transpose()?.unwrap_or(false),
        gc: match t.get("gc") {
            None => default_gc,
            Some(v) => {
                let s = v.str()?;
                svm_core::pte::GcVersion::parse(s).ok_or_else(|| {
                    v.error(format!(
                        "{s:?}: expected a graphics IP version such as \"9.4.3\""
                    ))
                })?
            }
        },
    })
}

/// Parses a scenario from its text.
///
/// # Errors
/// The first problem found, placed at its file, line and field.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    with_root(file, text, |root| parse_root(file, root))
}

/// Parses `text` as TOML and hands its root table to `f`.
fn with_root<R>(
    file: &str,
    text: &str,
    f: impl FnOnce(Table<'_, '_>) -> Result<R, ScenarioError>,
) -> Result<R, ScenarioError> {
    let src = Source { file, text };
    let doc = src.parse()?;
    f(Table {
        src,
        path: String::new(),
        span: doc.span(),
        table: doc.get_ref(),
    })
}

fn parse_root(file: &str, root: Table<'_, '_>) -> Result<Scenario, ScenarioError> {
    let src = root.src;
    root.only(&["name", "description", "system", "config", "process", "op"])?;
    let name = root
        .get("name")
        .map(|v| v.str().map(str::to_owned))
        .transpose()?;
    let description = root
        .get("description")
        .map(|v| v.str().map(str::to_owned))
        .transpose()?;

    // The system.
    let sys = root.req("system")?.table()?;
    let mut keys = vec!["xnack", "sysmem", "mem_limit", "gpu"];
    keys.extend(SYSTEM_KNOBS);
    keys.extend(["seed", "profile"]);
    sys.only(&keys)?;
    let config = parse_config(&sys, root.get("config"))?;
    let profile = match sys.get("profile") {
        None => None,
        Some(v) => {
            Some(svm_sim::timing::Profile::built_in(v.str()?).map_err(|e| v.error(e.message))?)
        }
    };
    // A GPU without its own `gc` has the profile's GPUs' version.
    let default_gc = profile.as_ref().map(|p| p.gc()).unwrap_or_default();
    let mut gpus = Vec::new();
    if let Some(list) = sys.get("gpu") {
        for (i, g) in list.array()?.iter().enumerate() {
            let desc = parse_gpu(&gpus, g, i, default_gc)?;
            gpus.push(desc);
        }
    }
    if gpus.is_empty() {
        return Err(sys.error("a system needs at least one [[system.gpu]]"));
    }
    let topology = Topology::new(gpus.clone()).map_err(|e| sys.error(e.to_string()))?;
    let sysmem_bytes = sys
        .get("sysmem")
        .map(|v| size(&v))
        .transpose()?
        .unwrap_or(64 << 30);
    let mem_limit_bytes = sys
        .get("mem_limit")
        .map(|v| size(&v))
        .transpose()?
        .unwrap_or(sysmem_bytes - (sysmem_bytes >> 4));
    let system = SystemSpec {
        topology,
        xnack: sys
            .get("xnack")
            .map(|v| v.bool())
            .transpose()?
            .unwrap_or(true),
        sysmem_bytes,
        mem_limit_bytes,
        config,
        seed: sys.get("seed").map(|v| v.int::<u64>()).transpose()?,
        profile,
    };

    // The processes.
    let mut processes = Vec::new();
    if let Some(list) = root.get("process") {
        for p in list.array()? {
            let t = p.table()?;
            t.only(&["name"])?;
            let n = t.req("name")?;
            let name = n.str()?.to_owned();
            if processes.contains(&name) {
                return Err(n.error(format!("process {name:?} is defined twice")));
            }
            processes.push(name);
        }
    }
    if processes.is_empty() {
        processes.push("p0".to_owned());
    }
    let mut ctx = Ctx {
        src,
        gpus,
        labels: vec![Vec::new(); processes.len()],
        queues: vec![Vec::new(); processes.len()],
        launches: vec![Vec::new(); processes.len()],
        processes,
    };

    // The operations.
    let mut ops = Vec::new();
    if let Some(list) = root.get("op") {
        for (index, v) in list.array()?.iter().enumerate() {
            ops.push(parse_op(&mut ctx, v, index)?);
        }
    }
    // An access left in flight to the end would have no result to report.
    if let Some((_, e)) = ctx.launches.iter().flatten().next() {
        return Err(e.clone());
    }
    Ok(Scenario {
        file: file.to_owned(),
        name: name.unwrap_or_else(|| file.to_owned()),
        description: description.unwrap_or_default(),
        system,
        processes: ctx.processes,
        ops,
    })
}

const OPS: &str = "mmap, munmap, mprotect, madvise_dontneed, set_attr, get_attr, set_xnack, queue_create, queue_destroy, ranges, gpu_access, cpu_access, wait, prefetch, evict_vram, exit, advance_time (or sleep), residency, counters";

/// Names of the per-GPU counters a `counters` op may check.
pub const GPU_COUNTERS: [&str; 6] = [
    "faults",
    "page_in",
    "page_out",
    "stale_dma",
    "stragglers_dropped",
    "unmapping_dropped",
];
/// Names of the machine-wide counters a `counters` op may check.
pub const HW_COUNTERS: [&str; 14] = [
    "queue_evictions",
    "queue_restores",
    "pages_to_vram",
    "pages_zero_filled",
    "pages_to_ram",
    "dma_maps",
    "dma_unmaps",
    "ptes_written",
    "ptes_cleared",
    "tlb_flush_legacy",
    "tlb_flush_heavyweight",
    "vram_allocs",
    "vram_frees",
    "bad_dma_unmaps",
];
/// Names of the SMI event counts a `counters` op may check.
pub const EVENT_COUNTERS: [&str; 8] = [
    "queue_eviction",
    "queue_restore",
    "queue_restore_rescheduled",
    "migrate_start",
    "migrate_end",
    "page_fault_start",
    "page_fault_end",
    "unmap_from_gpu",
];

/// The knobs `[system]` takes too, as scenario files wrote them before
/// `[config]` (each is a key of `svmsim config`).
const SYSTEM_KNOBS: [&str; 6] = [
    "policy",
    "bulk_dma_unmap",
    "kernel_accounting",
    "unmap_every_mapped_gpu",
    "lazy_map_after_prefetch",
    "victim_policy",
];

/// The run's knobs: the `[config]` table (any key of `svmsim config`),
/// and the few `[system]` also takes (the older spelling). A key given in
/// both is refused rather than one silently winning.
fn parse_config(
    sys: &Table<'_, '_>,
    table: Option<Value<'_, '_>>,
) -> Result<Config, ScenarioError> {
    let mut config = Config::default();
    let mut set = |key: &str, v: &Value<'_, '_>| set_knob(&mut config, key, v);
    for key in SYSTEM_KNOBS {
        if let Some(v) = sys.get(key) {
            set(key, &v)?;
        }
    }
    if let Some(t) = table {
        let t = t.table()?;
        t.only(&knob_keys())?;
        for (key, v) in t.entries() {
            if SYSTEM_KNOBS.contains(&key) && sys.get(key).is_some() {
                return Err(v.error(format!(
                    "`{key}` is given in [system] too; keep one (`[config]` is the place for knobs)"
                )));
            }
            set(key, &v)?;
        }
    }
    Ok(config)
}

/// Every key of `svmsim config`.
fn knob_keys() -> Vec<&'static str> {
    svm_core::config::KNOBS.iter().map(|k| k.key).collect()
}

/// Sets knob `key` from `v`; a refused value is an error at `v`.
fn set_knob(config: &mut Config, key: &str, v: &Value<'_, '_>) -> Result<(), ScenarioError> {
    let text = knob_text(v)?;
    config.set(key, &text).map_err(|e| match e {
        svm_core::config::ConfigError::BadValue { value, accepts, .. } => {
            v.error(format!("{value:?} is not {accepts}"))
        }
        other => v.error(other.to_string()),
    })
}

/// Reads a configuration file (`--config FILE.toml`): a table of knobs,
/// as `svmsim config --toml` writes it, applied over `base`.
///
/// # Errors
/// TOML that does not parse, an unknown key or a refused value, at its
/// file, line and column.
pub fn config_file(file: &str, text: &str, base: Config) -> Result<Config, ScenarioError> {
    with_root(file, text, |root| {
        root.only(&knob_keys())?;
        let mut config = base;
        for (key, v) in root.entries() {
            set_knob(&mut config, key, &v)?;
        }
        Ok(config)
    })
}

/// A knob's value as [`Config::set`] reads it: a string as written, an
/// integer in digits, a boolean as `true`/`false`.
fn knob_text(v: &Value<'_, '_>) -> Result<String, ScenarioError> {
    if let Ok(b) = v.bool() {
        return Ok(b.to_string());
    }
    if let Some(i) = v.int_opt()? {
        return Ok(i.to_string());
    }
    v.str()
        .map(str::to_owned)
        .map_err(|_| v.error("expected a string, a whole number or a boolean"))
}

/// Parses a duration: integer nanoseconds, or a string in the one
/// duration grammar (`"3ms"`, `"100us"`, `"2s"`, `"50ns"`; `svm_core::units`).
fn duration(v: &Value<'_, '_>) -> Result<u64, ScenarioError> {
    if let Some(i) = v.int_opt()? {
        return u64::try_from(i).map_err(|_| v.error("a duration cannot be negative"));
    }
    svm_core::units::parse_duration_ns(v.str()?)
        .map_err(|e| v.error(format!("expected a duration: {e}")))
}

fn parse_op(ctx: &mut Ctx<'_>, v: &Value<'_, '_>, index: usize) -> Result<OpSpec, ScenarioError> {
    let t = v.table()?;
    let line = ctx.src.line_col(t.span.start).0;
    let what = t.req("do")?;
    let process = match t.get("process") {
        None => 0,
        Some(p) => {
            let name = p.str()?;
            ctx.processes
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| {
                    p.error(format!(
                        "no process named {name:?}; declared: {}",
                        ctx.processes.join(", ")
                    ))
                })?
        }
    };
    let common = ["do", "process", "expect"];
    let allow = |extra: &[&str]| -> Result<(), ScenarioError> {
        let all: Vec<&str> = common.iter().chain(extra).copied().collect();
        t.only(&all)
    };
    let expect_str = || t.get("expect").map(|e| errno_or_ok(&e)).transpose();
    // Ops that cannot fail take no `expect`; one given is a mistake, not a
    // check to skip silently.
    let no_expect = || match t.get("expect") {
        Some(e) => Err(e.error("this op cannot fail; it takes no `expect`")),
        None => Ok(None),
    };
    let (kind, expect) = match what.str()? {
        "mmap" => {
            allow(&["name", "addr", "size", "prot", "backing", "file", "mark"])?;
            let label = label(t.get("name"))?;
            let addr = t.get("addr").map(|a| ctx.addr(&a, process)).transpose()?;
            let backing = match t.get("backing") {
                None => Backing::Anon,
                Some(b) => match b.str()? {
                    "anon" => Backing::Anon,
                    "io" => Backing::Io,
                    "file" => Backing::File(
                        t.get("file")
                            .map(|f| f.str().map(str::to_owned))
                            .transpose()?
                            .unwrap_or_else(|| "file".into()),
                    ),
                    s => {
                        return Err(
                            b.error(format!("{s:?}: expected \"anon\", \"file\" or \"io\""))
                        );
                    }
                },
            };
            let mark = match t.get("mark") {
                None => Mark::None,
                Some(m) => match m.str()? {
                    "heap" => Mark::Heap,
                    "stack" => Mark::Stack,
                    s => return Err(m.error(format!("{s:?}: expected \"heap\" or \"stack\""))),
                },
            };
            let kind = OpKind::Mmap {
                label: label.clone(),
                addr,
                size: size(&t.req("size")?)?,
                prot: prot(t.get("prot"))?,
                backing,
                mark,
            };
            if let Some(l) = label {
                ctx.labels[process].push(l);
            }
            (kind, expect_str()?)
        }
        "madvise_dontneed" => {
            allow(&["addr", "size"])?;
            let kind = OpKind::DontNeed {
                addr: ctx.addr(&t.req("addr")?, process)?,
                size: size(&t.req("size")?)?,
            };
            (kind, expect_str()?)
        }
        "munmap" | "mprotect" => {
            let is_prot = what.str()? == "mprotect";
            allow(if is_prot {
                &["addr", "size", "prot"]
            } else {
                &["addr", "size"]
            })?;
            let addr = ctx.addr(&t.req("addr")?, process)?;
            let size = size(&t.req("size")?)?;
            let kind = if is_prot {
                OpKind::Mprotect {
                    addr,
                    size,
                    prot: prot(Some(t.req("prot")?))?,
                }
            } else {
                OpKind::Munmap { addr, size }
            };
            (kind, expect_str()?)
        }
        "set_attr" => {
            allow(&["addr", "size", "attrs"])?;
            let attrs = t
                .req("attrs")?
                .array()?
                .iter()
                .map(|a| set_attr_item(ctx, a))
                .collect::<Result<_, _>>()?;
            let kind = OpKind::SetAttr {
                addr: ctx.addr(&t.req("addr")?, process)?,
                size: size(&t.req("size")?)?,
                attrs,
            };
            (kind, expect_str()?)
        }
        "get_attr" => {
            allow(&["addr", "size", "query"])?;
            let expect = match t.get("expect") {
                None => None,
                Some(e) if e.str().is_ok() => Some(errno_or_ok(&e)?),
                Some(e) => Some(Expect::Attrs(attr_expect(ctx, &e.table()?)?)),
            };
            let query: Vec<SvmAttribute> = match t.get("query") {
                Some(q) => q
                    .array()?
                    .iter()
                    .map(|a| query_item(ctx, a))
                    .collect::<Result<_, _>>()?,
                None => default_query(ctx, expect.as_ref()),
            };
            if let (Some(Expect::Attrs(e)), Some(q)) = (&expect, t.get("query")) {
                check_expect_is_queried(e, &query, &q)?;
            }
            let kind = OpKind::GetAttr {
                addr: ctx.addr(&t.req("addr")?, process)?,
                size: size(&t.req("size")?)?,
                query,
            };
            (kind, expect)
        }
        "set_xnack" => {
            allow(&["enable"])?;
            let value = match t.get("enable") {
                None => -1,
                Some(e) => match e.int_opt()? {
                    Some(_) => e.int()?,
                    None => i32::from(e.bool()?),
                },
            };
            let expect = match t.get("expect") {
                None => None,
                Some(e) if e.bool().is_ok() => Some(Expect::Xnack(e.bool()?)),
                Some(e) => Some(errno_or_ok(&e)?),
            };
            (OpKind::SetXnack { value }, expect)
        }
        "queue_create" => {
            allow(&["name", "gpu"])?;
            let label = label(t.get("name"))?;
            let gpu_id = ctx.gpu(&t.req("gpu")?)?;
            if let Some(l) = &label {
                ctx.queues[process].push(l.clone());
            }
            (OpKind::QueueCreate { label, gpu_id }, expect_str()?)
        }
        "queue_destroy" => {
            allow(&["queue"])?;
            let q = t.req("queue")?;
            let name = q.str()?.to_owned();
            if !ctx.queues[process].contains(&name) {
                return Err(q.error(format!(
                    "no queue named {name:?} was created before this op"
                )));
            }
            (OpKind::QueueDestroy { label: name }, expect_str()?)
        }
        "ranges" => {
            allow(&["addr", "size"])?;
            let window = match (t.get("addr"), t.get("size")) {
                (Some(a), Some(s)) => Some((ctx.addr(&a, process)?, size(&s)?)),
                (None, None) => None,
                _ => return Err(t.error("a ranges window needs both `addr` and `size`")),
            };
            let list = t.req("expect")?;
            let mut expect = Vec::new();
            for item in list.array()? {
                let r = item.table()?;
                r.only(&["addr", "size", "mapped"])?;
                expect.push(RangeExpect {
                    addr: ctx.addr(&r.req("addr")?, process)?,
                    size: size(&r.req("size")?)?,
                    mapped: r.get("mapped").map(|m| m.bool()).transpose()?,
                });
            }
            (OpKind::Ranges { window, expect }, None)
        }
        "gpu_access" | "cpu_access" => {
            let gpu = what.str()? == "gpu_access";
            allow(if gpu {
                &[
                    "gpu",
                    "addr",
                    "size",
                    "write",
                    "fill",
                    "check_fill",
                    "launch",
                ]
            } else {
                &["addr", "size", "write", "fill", "check_fill"]
            })?;
            let gpu_id = if gpu {
                Some(ctx.gpu(&t.req("gpu")?)?)
            } else {
                None
            };
            let write = t
                .get("write")
                .map(|w| w.bool())
                .transpose()?
                .unwrap_or(false);
            let fill = t.get("fill").map(|f| f.int::<u32>()).transpose()?;
            if write != fill.is_some() {
                return Err(
                    t.error("a write needs `fill` (a 32-bit pattern), and only a write has one")
                );
            }
            let check_fill = t.get("check_fill").map(|f| f.int::<u32>()).transpose()?;
            if write && check_fill.is_some() {
                return Err(t.error("`check_fill` checks what a read returns; this is a write"));
            }
            let size_v = t.req("size")?;
            let nbytes = size(&size_v)?;
            if nbytes > svm_sim::machine::MAX_ACCESS_BYTES {
                return Err(size_v.error("one access moves at most 1 GiB"));
            }
            let launch = match t.get("launch") {
                None => None,
                Some(l) => {
                    let name = l.str()?.to_owned();
                    if ctx.launches[process].iter().any(|(n, _)| *n == name) {
                        return Err(l.error(format!(
                            "access {name:?} is already in flight; wait for it first"
                        )));
                    }
                    if t.get("expect").is_some() {
                        return Err(t.error(format!(
                            "a launched access has no result yet; put `expect` on the `wait` for {name:?}"
                        )));
                    }
                    let never = l.error(format!(
                        "access {name:?} is launched but never waited for; add {{ do = \"wait\", access = \"{name}\" }}"
                    ));
                    ctx.launches[process].push((name.clone(), never));
                    Some(name)
                }
            };
            let kind = OpKind::Access {
                gpu_id,
                addr: ctx.addr(&t.req("addr")?, process)?,
                size: nbytes,
                fill: if write { fill } else { None },
                check_fill,
                launch,
            };
            (kind, expect_str()?)
        }
        "wait" => {
            allow(&["access"])?;
            let a = t.req("access")?;
            let name = a.str()?.to_owned();
            let Some(i) = ctx.launches[process].iter().position(|(n, _)| *n == name) else {
                return Err(a.error(format!(
                    "no access named {name:?} is in flight in this process; launch one with `launch = \"{name}\"` on a gpu_access"
                )));
            };
            ctx.launches[process].remove(i);
            (OpKind::Wait { label: name }, expect_str()?)
        }
        "advance_time" | "sleep" => {
            allow(&["time"])?;
            (
                OpKind::AdvanceTime {
                    ns: duration(&t.req("time")?)?,
                },
                no_expect()?,
            )
        }
        "prefetch" => {
            allow(&["addr", "size", "loc"])?;
            let kind = OpKind::Prefetch {
                addr: ctx.addr(&t.req("addr")?, process)?,
                size: size(&t.req("size")?)?,
                loc: ctx.location(&t.req("loc")?)?,
            };
            (kind, expect_str()?)
        }
        "evict_vram" => {
            allow(&["gpu", "need"])?;
            let kind = OpKind::EvictVram {
                gpu_id: ctx.gpu(&t.req("gpu")?)?,
                need: t.get("need").map(|n| size(&n)).transpose()?,
            };
            (kind, expect_str()?)
        }
        "exit" => {
            allow(&[])?;
            (OpKind::Exit, no_expect()?)
        }
        "residency" => {
            allow(&["addr", "size"])?;
            let mut expect = Vec::new();
            for item in t.req("expect")?.array()? {
                let r = item.table()?;
                r.only(&["addr", "size", "loc"])?;
                expect.push((
                    ctx.addr(&r.req("addr")?, process)?,
                    size(&r.req("size")?)?,
                    ctx.location(&r.req("loc")?)?,
                ));
            }
            let kind = OpKind::Residency {
                addr: ctx.addr(&t.req("addr")?, process)?,
                size: size(&t.req("size")?)?,
                expect,
            };
            (kind, None)
        }
        "counters" => {
            allow(&[])?;
            let mut expect = Vec::new();
            for (key, v) in t.req("expect")?.table()?.entries() {
                if GPU_COUNTERS.contains(&key) {
                    for (gpu, n) in v.table()?.entries() {
                        expect.push((key.to_owned(), Some(ctx.gpu_by_name(&n, gpu)?), n.int()?));
                    }
                } else if HW_COUNTERS.contains(&key) || EVENT_COUNTERS.contains(&key) {
                    expect.push((key.to_owned(), None, v.int()?));
                } else {
                    let all: Vec<&str> = GPU_COUNTERS
                        .iter()
                        .chain(&HW_COUNTERS)
                        .chain(&EVENT_COUNTERS)
                        .copied()
                        .collect();
                    return Err(v.error(format!(
                        "unknown counter {key:?}; known: {}",
                        all.join(", ")
                    )));
                }
            }
            (OpKind::Counters { expect }, None)
        }
        other => return Err(what.error(format!("unknown op {other:?}; expected one of: {OPS}"))),
    };
    Ok(OpSpec {
        index,
        line,
        process,
        kind,
        expect,
    })
}

/// Without a `query`, ask what `expect` names, or everything.
fn default_query(ctx: &Ctx<'_>, expect: Option<&Expect>) -> Vec<SvmAttribute> {
    use attr_type::*;
    let all_gpus = || {
        ctx.gpus
            .iter()
            .map(|g| SvmAttribute::new(ACCESS, g.id.raw()))
            .collect::<Vec<_>>()
    };
    let mut q = Vec::new();
    match expect {
        Some(Expect::Attrs(e)) => {
            let pairs = [
                (e.preferred_loc.is_some(), PREFERRED_LOC),
                (e.prefetch_loc.is_some(), PREFETCH_LOC),
                (e.set_flags.is_some(), SET_FLAGS),
                (e.clr_flags.is_some(), CLR_FLAGS),
                (e.granularity.is_some(), GRANULARITY),
            ];
            q.extend(
                pairs
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|&(_, t)| SvmAttribute::new(t, 0)),
            );
            q.extend(e.access.keys().map(|&id| SvmAttribute::new(ACCESS, id)));
        }
        _ => {
            q.extend([PREFERRED_LOC, PREFETCH_LOC].map(|t| SvmAttribute::new(t, 0)));
            q.extend(all_gpus());
            q.extend([SET_FLAGS, CLR_FLAGS, GRANULARITY].map(|t| SvmAttribute::new(t, 0)));
        }
    }
    q
}

fn check_expect_is_queried(
    e: &AttrExpect,
    query: &[SvmAttribute],
    at: &Value<'_, '_>,
) -> Result<(), ScenarioError> {
    use attr_type::*;
    let has = |t: u32| query.iter().any(|a| a.ty == t);
    let named = [
        (e.preferred_loc.is_some(), PREFERRED_LOC, "preferred_loc"),
        (e.prefetch_loc.is_some(), PREFETCH_LOC, "prefetch_loc"),
        (e.set_flags.is_some(), SET_FLAGS, "set_flags"),
        (e.clr_flags.is_some(), CLR_FLAGS, "clr_flags"),
        (e.granularity.is_some(), GRANULARITY, "granularity"),
    ];
    for (on, t, name) in named {
        if on && !has(t) {
            return Err(at.error(format!(
                "`expect` names {name}, which the query does not ask for"
            )));
        }
    }
    for id in e.access.keys() {
        if !query.iter().any(|a| a.ty == ACCESS && a.value == *id) {
            return Err(at.error(format!(
                "`expect` names access for gpu_id {id:#x}, which the query does not ask for"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GPU's `gc` key sets its graphics IP version; without it, the
    /// profile's, or GC 9.4.2.
    #[test]
    fn gpus_carry_their_ip_version() {
        use svm_core::pte::GcVersion;
        let text = "[system]\n[[system.gpu]]\ngc = \"9.4.3\"\n[[system.gpu]]\n";
        let s = parse("t.toml", text).unwrap();
        let gcs: Vec<_> = s.system.topology.gpus().iter().map(|g| g.gc).collect();
        assert_eq!(gcs, [GcVersion(9, 4, 3), GcVersion(9, 4, 2)]);
        // With a profile, a GPU without `gc` has the profile's version.
        let text =
            "[system]\nprofile = \"mi300x\"\n[[system.gpu]]\n[[system.gpu]]\ngc = \"9.4.2\"\n";
        let s = parse("t.toml", text).unwrap();
        let gcs: Vec<_> = s.system.topology.gpus().iter().map(|g| g.gc).collect();
        assert_eq!(gcs, [GcVersion(9, 4, 3), GcVersion(9, 4, 2)]);
    }

    #[test]
    fn sizes() {
        // Table: (text, bytes)
        let cases = [
            ("4096", Some(4096)),
            ("16KiB", Some(16 << 10)),
            ("2 MiB", Some(2 << 20)),
            ("3 pages", Some(3 * 4096)),
            ("1 page", Some(4096)),
            ("0x4000", Some(0x4000)),
            ("1_024", Some(1024)),
            ("12 bananas", None),
            ("", None),
            ("99999999999999TiB", None),
        ];
        for (s, want) in cases {
            assert_eq!(size_of_str(s), want, "{s:?}");
        }
    }
}

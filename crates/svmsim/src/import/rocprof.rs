//! rocprofv3's KFD trace as JSON (`rocprofv3 --kfd-trace --output-format
//! json`), read into the importer's records (`svm_workloads::import`).
//!
//! Two producers are read, each keyed on field names, not on enum
//! numbers (which moved between versions):
//!
//! - **rocprofv3** (rocprofiler-sdk 1.2 and later, the KFD API split of
//!   June 2025): `["rocprofiler-sdk-tool"][i]["buffer_records"]["kfd"]`, one
//!   flat array of records of eight kinds told apart by their keys (the
//!   serializer writes no `kind`): paired page migrations, page faults and
//!   queue evictions (`start_timestamp`, `end_timestamp`) and events
//!   (`timestamp`) of migrations, faults, queues, unmaps and dropped
//!   events. Agents are `{"handle": N}`, resolved through the element's
//!   `agents` (`id.handle` → `type`, `gpu_id`); addresses are
//!   `{"handle": BYTES}`. Operation numbers are those of
//!   `rocprofiler-sdk/kfd/kfd_id.h`; where the element's
//!   `strings.buffer_records` names them, the names are checked.
//! - **rocprofiler-sdk-json-tool** (rocprofiler-sdk 0.5, 2024):
//!   `["rocprofiler-sdk-json-tool"][i]["buffer_records"]["page_migration"]`,
//!   the single PAGE_MIGRATION kind: each record `start_timestamp`,
//!   `end_timestamp`, `pid` and one of the objects `page_fault` (`node_id`,
//!   `address`, `read_fault`, `migrated`), `page_migrate` (`start_addr`,
//!   `end_addr`, `from_node`, `to_node`, `trigger`), `queue_suspend`
//!   (`node_id`, `trigger`, `rescheduled`), `unmap_from_gpu` (`node_id`,
//!   `start_addr`, `end_addr`, `trigger`); nodes resolved through
//!   `agents` (`node_id` → `type`, `gpu_id`).
//!
//! Anything else (a document with neither key, a record whose keys fit
//! no kind) is refused, naming the record.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;
use svm_workloads::import::{Effect, Record, Report, What};

/// The largest JSON file read: its parsed tree takes several times its
/// size.
pub const MAX_JSON_BYTES: u64 = 256 << 20;

/// The producers this reader takes, for the refusal of others.
pub const PRODUCERS: &str = "rocprofv3 --kfd-trace --output-format json (rocprofiler-sdk 1.2+: \
    [\"rocprofiler-sdk-tool\"][*][\"buffer_records\"][\"kfd\"]) and rocprofiler-sdk-json-tool \
    (rocprofiler-sdk 0.5: [\"rocprofiler-sdk-json-tool\"][*][\"buffer_records\"][\"page_migration\"])";

const PAGE_SHIFT: u32 = 12;

/// The KFD kinds, in the order of their kind numbers (24 on, in
/// rocprofiler-sdk 1.2's `fwd.h`), and their operations' names in enum
/// order (`rocprofiler-sdk/kfd/kfd_id.h`): an operation's number is the
/// index of its name.
pub const KINDS: [(&str, &[&str]); 8] = [
    (
        "KFD_EVENT_PAGE_MIGRATE",
        &[
            "PREFETCH",
            "PAGEFAULT_GPU",
            "PAGEFAULT_CPU",
            "TTM_EVICTION",
            "END",
        ],
    ),
    (
        "KFD_EVENT_PAGE_FAULT",
        &[
            "START",
            "START_READ_FAULT",
            "START_WRITE_FAULT",
            "END_PAGE_MIGRATED",
            "END_PAGE_UPDATED",
        ],
    ),
    (
        "KFD_EVENT_QUEUE",
        &[
            "EVICT_SVM",
            "EVICT_USERPTR",
            "EVICT_TTM",
            "EVICT_SUSPEND",
            "EVICT_CRIU_CHECKPOINT",
            "EVICT_CRIU_RESTORE",
            "RESTORE_RESCHEDULED",
            "RESTORE",
        ],
    ),
    (
        "KFD_EVENT_UNMAP_FROM_GPU",
        &["MMU_NOTIFY", "MMU_NOTIFY_MIGRATE", "UNMAP_FROM_CPU"],
    ),
    ("KFD_EVENT_DROPPED_EVENTS", &["DROPPED_EVENTS"]),
    (
        "KFD_PAGE_MIGRATE",
        &["PREFETCH", "PAGEFAULT_GPU", "PAGEFAULT_CPU", "TTM_EVICTION"],
    ),
    (
        "KFD_PAGE_FAULT",
        &[
            "READ_FAULT_MIGRATED",
            "READ_FAULT_UPDATED",
            "WRITE_FAULT_MIGRATED",
            "WRITE_FAULT_UPDATED",
        ],
    ),
    (
        "KFD_QUEUE",
        &[
            "EVICT_SVM",
            "EVICT_USERPTR",
            "EVICT_TTM",
            "EVICT_SUSPEND",
            "EVICT_CRIU_CHECKPOINT",
            "EVICT_CRIU_RESTORE",
        ],
    ),
];

/// The full enumerator name of operation `op` of `kind`
/// (`ROCPROFILER_KFD_EVENT_PAGE_MIGRATE_PREFETCH`), as rocpd's strings
/// hold it.
pub fn operation_name(kind: &str, op: &str) -> String {
    format!("ROCPROFILER_{kind}_{op}")
}

/// The operations' names of `kind` (one of [`KINDS`]).
fn ops_of(kind: &str) -> &'static [&'static str] {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, o)| o)
}

/// Whether `bytes` look like a rocprofiler JSON document.
pub fn detect(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let s = String::from_utf8_lossy(head);
    s.trim_start().starts_with('{')
        && (s.contains("\"rocprofiler-sdk-tool\"") || s.contains("\"rocprofiler-sdk-json-tool\""))
}

/// Where a record is, for errors.
struct At<'a> {
    path: &'a str,
    index: usize,
}

impl At<'_> {
    fn err(&self, field: &str, why: impl std::fmt::Display) -> String {
        format!("{}[{}]: {field}: {why}", self.path, self.index)
    }
}

fn num(v: &Value, at: &At<'_>, field: &str) -> Result<u64, String> {
    match v.get(field) {
        Some(x) => x
            .as_u64()
            .ok_or_else(|| at.err(field, format!("{x} is not a non-negative integer"))),
        None => Err(at.err(field, "missing")),
    }
}

fn small(v: &Value, at: &At<'_>, field: &str) -> Result<u32, String> {
    let n = num(v, at, field)?;
    u32::try_from(n).map_err(|_| at.err(field, format!("{n} is too large")))
}

/// A `{"handle": N}` field.
fn handle(v: &Value, at: &At<'_>, field: &str) -> Result<u64, String> {
    match v.get(field) {
        Some(x) => match x.get("handle").and_then(Value::as_u64) {
            Some(h) => Ok(h),
            None => Err(at.err(field, format!("{x} is not {{\"handle\": N}}"))),
        },
        None => Err(at.err(field, "missing")),
    }
}

fn signed(v: &Value, at: &At<'_>, field: &str) -> Result<i64, String> {
    match v.get(field) {
        Some(x) => x
            .as_i64()
            .ok_or_else(|| at.err(field, format!("{x} is not an integer"))),
        None => Err(at.err(field, "missing")),
    }
}

/// A byte range `[start, end)` as pages; the end at or past the start.
fn pages(start: u64, end: u64, at: &At<'_>, field: &str) -> Result<(u64, u64), String> {
    if end < start {
        return Err(at.err(
            field,
            format!("ends at {end:#x}, before its start {start:#x}"),
        ));
    }
    let (s, e) = (start >> PAGE_SHIFT, end.div_ceil(1 << PAGE_SHIFT));
    if e > (1u64 << 57) >> PAGE_SHIFT {
        return Err(at.err(field, "the range leaves the address space"));
    }
    Ok((s, e - s))
}

/// A place: what an agent (or a node) is, as the importer's records
/// want it: a GPU's gpu_id, or 0 for system memory.
struct Places {
    gpus: BTreeMap<u64, u32>,
    cpus: Vec<u64>,
}

impl Places {
    /// From an element's `agents`, keyed by `key` (`id` handle or
    /// `node_id`).
    fn of(element: &Value, by_node: bool) -> Self {
        let mut gpus = BTreeMap::new();
        let mut cpus = Vec::new();
        for a in element
            .get("agents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = if by_node {
                a.get("node_id").and_then(Value::as_u64)
            } else {
                a.get("id")
                    .and_then(|i| i.get("handle"))
                    .and_then(Value::as_u64)
            };
            let Some(key) = key else { continue };
            match a.get("type").and_then(Value::as_u64) {
                Some(2) => {
                    let node = a.get("node_id").and_then(Value::as_u64).unwrap_or(key);
                    // A GPU's gpu_id, or one made of its node where the
                    // agent list gives none.
                    let id = a
                        .get("gpu_id")
                        .and_then(Value::as_u64)
                        .and_then(|g| u32::try_from(g).ok())
                        .filter(|&g| g != 0)
                        .unwrap_or_else(|| 0x1_0000 + u32::try_from(node).unwrap_or(0));
                    gpus.insert(key, id);
                }
                _ => cpus.push(key),
            }
        }
        Self { gpus, cpus }
    }

    /// The place of `key`; 0 (system memory) for a CPU's, for 0 (the
    /// SDK's unknown agent) and for keys the list lacks (counted).
    fn place(&self, key: u64, report: &mut Report) -> u32 {
        if let Some(&g) = self.gpus.get(&key) {
            return g;
        }
        if key != 0 && !self.cpus.contains(&key) {
            report.unknown_places += 1;
        }
        0
    }
}

/// The names `strings.buffer_records` gives the operations of the kind
/// named `kind`, if any.
fn operation_names<'v>(element: &'v Value, kind: &str) -> Option<Vec<&'v str>> {
    element
        .get("strings")?
        .get("buffer_records")?
        .as_array()?
        .iter()
        .find(|k| k.get("kind").and_then(Value::as_str) == Some(kind))?
        .get("operations")?
        .as_array()
        .map(|ops| ops.iter().filter_map(Value::as_str).collect())
}

/// Checks that operation `op` of `kind` is named `want` (a suffix of
/// the full enumerator name) where the document names it.
fn check_op(
    names: &BTreeMap<&'static str, Option<Vec<&str>>>,
    kind: &'static str,
    op: u64,
    want: &str,
    at: &At<'_>,
) -> Result<(), String> {
    if let Some(Some(list)) = names.get(kind)
        && let Some(name) = usize::try_from(op).ok().and_then(|i| list.get(i))
        && !name.ends_with(want)
    {
        return Err(at.err(
            "operation",
            format!(
                "{op} is {name} in this file's strings, where this reader takes it for {want}: \
                 a rocprofiler-sdk whose KFD operations this reader does not know"
            ),
        ));
    }
    Ok(())
}

/// The kind of a split-API record, from its keys.
pub(super) fn kind_of(r: &Value) -> Option<&'static str> {
    let has = |k: &str| r.get(k).is_some();
    let paired = has("start_timestamp") && has("end_timestamp");
    Some(if has("src_agent") {
        if paired {
            "KFD_PAGE_MIGRATE"
        } else {
            "KFD_EVENT_PAGE_MIGRATE"
        }
    } else if has("count") {
        "KFD_EVENT_DROPPED_EVENTS"
    } else if has("agent_id") && has("start_address") {
        "KFD_EVENT_UNMAP_FROM_GPU"
    } else if has("agent_id") && has("address") {
        if paired {
            "KFD_PAGE_FAULT"
        } else {
            "KFD_EVENT_PAGE_FAULT"
        }
    } else if has("agent_id") {
        if paired {
            "KFD_QUEUE"
        } else {
            "KFD_EVENT_QUEUE"
        }
    } else {
        return None;
    })
}

/// Reads a rocprofiler JSON document into records, at most `max`.
///
/// # Errors
/// Not JSON, neither producer's document, a record of no known kind or
/// with a bad field (its path, index and field), or more than `max`
/// records.
pub fn read(name: &str, bytes: &[u8], max: usize) -> Result<(Vec<Record>, Report), String> {
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{name}: not JSON ({e})"))?;
    let mut report = Report::default();
    let mut out = Vec::new();
    if let Some(tool) = doc.get("rocprofiler-sdk-tool") {
        for (n, element) in elements(tool).enumerate() {
            let path = format!("{name}: rocprofiler-sdk-tool[{n}].buffer_records.kfd");
            split(&path, element, max, &mut out, &mut report)?;
        }
    } else if let Some(tool) = doc.get("rocprofiler-sdk-json-tool") {
        for (n, element) in elements(tool).enumerate() {
            single(name, n, element, max, &mut out, &mut report)?;
        }
    } else {
        return Err(format!(
            "{name}: not a rocprofiler KFD trace; this reader takes {PRODUCERS}"
        ));
    }
    Ok((out, report))
}

/// The per-process elements of a tool's document (an array; a single
/// object is taken as one).
fn elements(tool: &Value) -> impl Iterator<Item = &Value> {
    match tool {
        Value::Array(a) => a.iter().collect::<Vec<_>>().into_iter(),
        other => vec![other].into_iter(),
    }
}

/// Where a reader puts the records of one input record: at most `max`
/// in all, each with the input record's line and pid.
struct Sink<'o> {
    out: &'o mut Vec<Record>,
    max: usize,
    line: usize,
    pid: u32,
}

impl Sink<'_> {
    fn one(&mut self, ts: u64, gpu: u32, what: What) -> Result<(), String> {
        if self.out.len() >= self.max {
            return Err(format!(
                "more than {} KFD records, the most an import holds within the host budget \
                 (use --max-host-mem)",
                self.max
            ));
        }
        self.out.push(Record {
            line: self.line,
            gpu,
            ts,
            pid: self.pid,
            what,
        });
        Ok(())
    }

    /// A migration's start, and its end when `end` is given; it is in
    /// the log of the GPU it moved to, else of the one it moved from.
    fn migration(
        &mut self,
        (start, end): (u64, Option<u64>),
        (page, pages): (u64, u64),
        (from, to, trigger): (u32, u32, u32),
        error: bool,
    ) -> Result<(), String> {
        let gpu = if to != 0 { to } else { from };
        self.one(
            start,
            gpu,
            What::Migrate {
                page,
                pages,
                from,
                to,
                trigger,
            },
        )?;
        match end {
            Some(e) => self.migration_end(e.max(start), (page, pages), (from, to, trigger), error),
            None => Ok(()),
        }
    }

    /// A migration's end.
    fn migration_end(
        &mut self,
        ts: u64,
        (page, pages): (u64, u64),
        (from, to, trigger): (u32, u32, u32),
        error: bool,
    ) -> Result<(), String> {
        let gpu = if to != 0 { to } else { from };
        self.one(
            ts,
            gpu,
            What::Effect(Effect::MigrateEnd {
                page,
                pages,
                from,
                to,
                trigger,
                error,
            }),
        )
    }

    /// A GPU fault from `start` to `end`.
    fn fault(
        &mut self,
        (start, end): (u64, u64),
        gpu: u32,
        page: u64,
        (write, migrated): (bool, bool),
    ) -> Result<(), String> {
        self.one(start, gpu, What::Fault { page, write })?;
        self.one(
            end.max(start),
            gpu,
            What::Effect(Effect::FaultEnd {
                page,
                migrated: Some(migrated),
            }),
        )
    }

    /// A queue evicted at `start` and restored at `end`.
    fn queue(
        &mut self,
        (start, end): (u64, u64),
        gpu: u32,
        rescheduled: bool,
    ) -> Result<(), String> {
        self.one(start, gpu, What::Effect(Effect::QueueEviction))?;
        self.one(
            end.max(start),
            gpu,
            What::Effect(Effect::QueueRestore { rescheduled }),
        )
    }
}

/// The page of a byte address.
fn page_of(address: u64, at: &At<'_>, field: &str) -> Result<u64, String> {
    let page = address >> PAGE_SHIFT;
    if page >= (1u64 << 57) >> PAGE_SHIFT {
        return Err(at.err(field, "outside the address space"));
    }
    Ok(page)
}

/// A paired record's times.
fn span(r: &Value, at: &At<'_>) -> Result<(u64, u64), String> {
    Ok((num(r, at, "start_timestamp")?, num(r, at, "end_timestamp")?))
}

/// The 2025 split kinds (rocprofv3) of one process's `element`
/// (`agents`, `strings`, `buffer_records.kfd`); errors name a record as
/// `path[index]`.
pub(super) fn split(
    path: &str,
    element: &Value,
    max: usize,
    out: &mut Vec<Record>,
    report: &mut Report,
) -> Result<(), String> {
    let Some(records) = element.get("buffer_records").and_then(|b| b.get("kfd")) else {
        // A process that had no KFD events.
        return Ok(());
    };
    let records = records
        .as_array()
        .ok_or_else(|| format!("{path}: not an array"))?;
    let places = Places::of(element, false);
    let names: BTreeMap<&'static str, Option<Vec<&str>>> = [
        "KFD_PAGE_MIGRATE",
        "KFD_EVENT_PAGE_MIGRATE",
        "KFD_PAGE_FAULT",
        "KFD_EVENT_PAGE_FAULT",
        "KFD_QUEUE",
        "KFD_EVENT_QUEUE",
        "KFD_EVENT_UNMAP_FROM_GPU",
    ]
    .into_iter()
    .map(|k| (k, operation_names(element, k)))
    .collect();
    // Event-kind migration starts waiting for their END, by pid, range and
    // places: their triggers.
    let mut open: BTreeMap<(u32, u64, u64, u32, u32), VecDeque<u32>> = BTreeMap::new();
    let line0 = out.len();
    // An operation number below `n`, or the error naming the kind.
    let op_below = |op: u64, n: u64, kind: &str, at: &At<'_>| {
        u32::try_from(op)
            .ok()
            .filter(|&o| u64::from(o) < n)
            .ok_or_else(|| {
                at.err(
                    "operation",
                    format!("{op}: {kind} operations are 0 to {}", n - 1),
                )
            })
    };
    for (i, r) in records.iter().enumerate() {
        let at = At { path, index: i };
        let kind = kind_of(r).ok_or_else(|| {
            at.err(
                "kind",
                "its fields fit no KFD record kind (page migrate, page fault, queue, unmap, \
                 dropped events)",
            )
        })?;
        *report.events.entry(kind).or_default() += 1;
        report.lines += 1;
        let pid = small(r, &at, "pid")?;
        let op = num(r, &at, "operation")?;
        let mut sink = Sink {
            out: &mut *out,
            max,
            line: line0 + i + 1,
            pid,
        };
        match kind {
            "KFD_PAGE_MIGRATE" | "KFD_EVENT_PAGE_MIGRATE" => {
                let range = pages(
                    handle(r, &at, "start_address")?,
                    handle(r, &at, "end_address")?,
                    &at,
                    "end_address",
                )?;
                let from = places.place(handle(r, &at, "src_agent")?, report);
                let to = places.place(handle(r, &at, "dst_agent")?, report);
                let error = signed(r, &at, "error_code").unwrap_or(0) != 0;
                if kind == "KFD_PAGE_MIGRATE" {
                    let t = op_below(op, 4, kind, &at)?;
                    check_op(&names, kind, op, ops_of(kind)[t as usize], &at)?;
                    let (s, e) = span(r, &at)?;
                    sink.migration((s, Some(e)), range, (from, to, t), error)?;
                } else {
                    let ts = num(r, &at, "timestamp")?;
                    let o = op_below(op, 5, kind, &at)?;
                    let key = (pid, range.0, range.1, from, to);
                    if o < 4 {
                        check_op(&names, kind, op, ops_of(kind)[o as usize], &at)?;
                        open.entry(key).or_default().push_back(o);
                        sink.migration((ts, None), range, (from, to, o), error)?;
                    } else {
                        check_op(&names, kind, op, "END", &at)?;
                        // The trigger of the start it ends (a GPU fault's
                        // if its start is not in the file).
                        let t = open
                            .get_mut(&key)
                            .and_then(VecDeque::pop_front)
                            .unwrap_or(1);
                        sink.migration_end(ts, range, (from, to, t), error)?;
                    }
                }
            }
            "KFD_PAGE_FAULT" | "KFD_EVENT_PAGE_FAULT" => {
                let gpu = places.place(handle(r, &at, "agent_id")?, report);
                let page = page_of(handle(r, &at, "address")?, &at, "address")?;
                if kind == "KFD_PAGE_FAULT" {
                    let o = op_below(op, 4, kind, &at)?;
                    check_op(&names, kind, op, ops_of(kind)[o as usize], &at)?;
                    sink.fault(span(r, &at)?, gpu, page, (o >= 2, o % 2 == 0))?;
                } else {
                    let ts = num(r, &at, "timestamp")?;
                    let o = op_below(op, 5, kind, &at)?;
                    check_op(&names, kind, op, ops_of(kind)[o as usize], &at)?;
                    let what = match o {
                        0 | 1 => What::Fault { page, write: false },
                        2 => What::Fault { page, write: true },
                        _ => What::Effect(Effect::FaultEnd {
                            page,
                            migrated: Some(o == 3),
                        }),
                    };
                    sink.one(ts, gpu, what)?;
                }
            }
            "KFD_QUEUE" | "KFD_EVENT_QUEUE" => {
                let gpu = places.place(handle(r, &at, "agent_id")?, report);
                if kind == "KFD_QUEUE" {
                    op_below(op, 6, kind, &at)?;
                    sink.queue(span(r, &at)?, gpu, false)?;
                } else {
                    let ts = num(r, &at, "timestamp")?;
                    let what = match op_below(op, 8, kind, &at)? {
                        0..=5 => What::Effect(Effect::QueueEviction),
                        6 => {
                            check_op(&names, kind, op, "RESTORE_RESCHEDULED", &at)?;
                            What::Effect(Effect::QueueRestore { rescheduled: true })
                        }
                        _ => {
                            check_op(&names, kind, op, "RESTORE", &at)?;
                            What::Effect(Effect::QueueRestore { rescheduled: false })
                        }
                    };
                    sink.one(ts, gpu, what)?;
                }
            }
            "KFD_EVENT_UNMAP_FROM_GPU" => {
                let gpu = places.place(handle(r, &at, "agent_id")?, report);
                let (page, count) = pages(
                    handle(r, &at, "start_address")?,
                    handle(r, &at, "end_address")?,
                    &at,
                    "end_address",
                )?;
                let trigger = op_below(op, 3, kind, &at)?;
                check_op(&names, kind, op, ops_of(kind)[trigger as usize], &at)?;
                let ts = num(r, &at, "timestamp")?;
                sink.one(
                    ts,
                    gpu,
                    What::Unmap {
                        page,
                        pages: count,
                        trigger,
                    },
                )?;
            }
            _ => {
                let ts = num(r, &at, "timestamp")?;
                let count = num(r, &at, "count")?;
                report.dropped = report.dropped.saturating_add(count);
                sink.one(ts, 0, What::Dropped(count))?;
            }
        }
    }
    Ok(())
}

/// The 2024 single PAGE_MIGRATION kind (rocprofiler-sdk-json-tool).
fn single(
    name: &str,
    n: usize,
    element: &Value,
    max: usize,
    out: &mut Vec<Record>,
    report: &mut Report,
) -> Result<(), String> {
    let path = format!("{name}: rocprofiler-sdk-json-tool[{n}].buffer_records.page_migration");
    let Some(records) = element
        .get("buffer_records")
        .and_then(|b| b.get("page_migration"))
    else {
        return Ok(());
    };
    let records = records
        .as_array()
        .ok_or_else(|| format!("{path}: not an array"))?;
    let places = Places::of(element, true);
    let line0 = out.len();
    for (i, r) in records.iter().enumerate() {
        let at = At {
            path: &path,
            index: i,
        };
        report.lines += 1;
        let pid = small(r, &at, "pid")?;
        let times = span(r, &at)?;
        let mut sink = Sink {
            out: &mut *out,
            max,
            line: line0 + i + 1,
            pid,
        };
        let flag = |o: &Value, f: &str| -> Result<bool, String> {
            match o.get(f) {
                Some(Value::Bool(b)) => Ok(*b),
                Some(x) => x
                    .as_u64()
                    .map(|v| v != 0)
                    .ok_or_else(|| at.err(f, format!("{x} is not a flag"))),
                None => Err(at.err(f, "missing")),
            }
        };
        let mut count = |what: &'static str| *report.events.entry(what).or_default() += 1;
        if let Some(o) = r.get("page_fault") {
            count("PAGE_MIGRATION page_fault");
            let gpu = places.place(num(o, &at, "node_id")?, report);
            let page = page_of(num(o, &at, "address")?, &at, "page_fault.address")?;
            let write = !flag(o, "read_fault")?;
            sink.fault(times, gpu, page, (write, flag(o, "migrated")?))?;
        } else if let Some(o) = r.get("page_migrate") {
            count("PAGE_MIGRATION page_migrate");
            let range = pages(
                num(o, &at, "start_addr")?,
                num(o, &at, "end_addr")?,
                &at,
                "page_migrate.end_addr",
            )?;
            let from = places.place(num(o, &at, "from_node")?, report);
            let to = places.place(num(o, &at, "to_node")?, report);
            let trigger = small(o, &at, "trigger")?;
            if trigger > 3 {
                return Err(at.err(
                    "page_migrate.trigger",
                    format!("{trigger}: migration triggers are 0 to 3"),
                ));
            }
            sink.migration((times.0, Some(times.1)), range, (from, to, trigger), false)?;
        } else if let Some(o) = r.get("queue_suspend") {
            count("PAGE_MIGRATION queue_suspend");
            let gpu = places.place(num(o, &at, "node_id")?, report);
            sink.queue(times, gpu, flag(o, "rescheduled")?)?;
        } else if let Some(o) = r.get("unmap_from_gpu") {
            count("PAGE_MIGRATION unmap_from_gpu");
            let gpu = places.place(num(o, &at, "node_id")?, report);
            let (page, pages) = pages(
                num(o, &at, "start_addr")?,
                num(o, &at, "end_addr")?,
                &at,
                "unmap_from_gpu.end_addr",
            )?;
            let trigger = small(o, &at, "trigger")?;
            if trigger > 2 {
                return Err(at.err(
                    "unmap_from_gpu.trigger",
                    format!("{trigger}: unmap triggers are 0 to 2"),
                ));
            }
            sink.one(
                times.0,
                gpu,
                What::Unmap {
                    page,
                    pages,
                    trigger,
                },
            )?;
        } else {
            return Err(at.err(
                "kind",
                "none of page_fault, page_migrate, queue_suspend, unmap_from_gpu",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event kinds (one record an event): a migration's start and END
    /// paired by range and places (the END gets the start's trigger), a
    /// fault's start and end, queue evictions and restores, unmaps and
    /// dropped events; agents resolved, an unknown one counted.
    #[test]
    fn event_kinds_read_as_their_records() {
        let doc = r#"{"rocprofiler-sdk-tool": [{
          "agents": [{"id": {"handle": 7}, "type": 2, "gpu_id": 4098},
                     {"id": {"handle": 3}, "type": 1}],
          "buffer_records": {"kfd": [
            {"operation": 2, "timestamp": 10, "pid": 5, "start_address": {"handle": 8192},
             "end_address": {"handle": 16384}, "src_agent": {"handle": 7},
             "dst_agent": {"handle": 3}, "prefetch_agent": {"handle": 0},
             "preferred_agent": {"handle": 0}, "error_code": 0},
            {"operation": 4, "timestamp": 20, "pid": 5, "start_address": {"handle": 8192},
             "end_address": {"handle": 16384}, "src_agent": {"handle": 7},
             "dst_agent": {"handle": 3}, "prefetch_agent": {"handle": 0},
             "preferred_agent": {"handle": 0}, "error_code": -12},
            {"operation": 2, "timestamp": 30, "pid": 5, "agent_id": {"handle": 7},
             "address": {"handle": 12288}},
            {"operation": 3, "timestamp": 40, "pid": 5, "agent_id": {"handle": 7},
             "address": {"handle": 12288}},
            {"operation": 0, "timestamp": 50, "pid": 5, "agent_id": {"handle": 9}},
            {"operation": 6, "timestamp": 60, "pid": 5, "agent_id": {"handle": 7}},
            {"operation": 2, "timestamp": 70, "pid": 5, "agent_id": {"handle": 7},
             "start_address": {"handle": 0}, "end_address": {"handle": 4096}},
            {"operation": 0, "timestamp": 80, "pid": 5, "count": 4}
          ]}}]}"#;
        let (r, report) = read("t.json", doc.as_bytes(), 100).unwrap();
        let what: Vec<(u64, u32, What)> = r.iter().map(|m| (m.ts, m.gpu, m.what)).collect();
        let range = (2, 2);
        assert_eq!(
            what,
            vec![
                (
                    10,
                    0x1002,
                    What::Migrate {
                        page: range.0,
                        pages: range.1,
                        from: 0x1002,
                        to: 0,
                        trigger: 2
                    }
                ),
                (
                    20,
                    0x1002,
                    What::Effect(Effect::MigrateEnd {
                        page: 2,
                        pages: 2,
                        from: 0x1002,
                        to: 0,
                        trigger: 2,
                        error: true
                    })
                ),
                (
                    30,
                    0x1002,
                    What::Fault {
                        page: 3,
                        write: true
                    }
                ),
                (
                    40,
                    0x1002,
                    What::Effect(Effect::FaultEnd {
                        page: 3,
                        migrated: Some(true)
                    })
                ),
                (50, 0, What::Effect(Effect::QueueEviction)),
                (
                    60,
                    0x1002,
                    What::Effect(Effect::QueueRestore { rescheduled: true })
                ),
                (
                    70,
                    0x1002,
                    What::Unmap {
                        page: 0,
                        pages: 1,
                        trigger: 2
                    }
                ),
                (80, 0, What::Dropped(4)),
            ]
        );
        assert_eq!(
            (report.unknown_places, report.dropped, report.lines),
            (1, 4, 8)
        );
        assert_eq!(report.events["KFD_EVENT_PAGE_MIGRATE"], 2);
    }
}

//! Synthetic inputs for the readers: a run's records written in another
//! producer's documented schema (no real trace files of these formats
//! are public). Every document says it is synthetic (`"synthetic"` in
//! rocprofv3's `metadata`). `cargo run -p svmsim --example fixtures`
//! writes the committed ones (`crates/svmsim/tests/fixtures/`); the
//! tests check the readers on them and that they are what this module
//! writes today.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Value, json};
use svm_workloads::import::{Effect, Record, What};

use super::rocprof::{KINDS, operation_name};

/// What every synthetic document says of itself.
pub const SYNTHETIC: &str = "synthetic: written by svmsim (crates/svmsim/src/import/fixtures.rs) \
    from a simulated run, following the producer's documented schema; not a real trace";

const PAGE: u64 = 4096;

/// A migration, for pairing its start with its end: pid, first page,
/// pages, from, to, trigger.
type MigrationKey = (u32, u64, u64, u32, u32, u32);
/// A fault, for pairing: GPU, pid, page.
type FaultKey = (u32, u32, u64);

/// The agents of `records`: the CPU (handle 1) and a GPU per gpu_id
/// (handles from 2), as rocprofv3 lists them.
fn agents(records: &[Record]) -> (Vec<Value>, BTreeMap<u32, u64>) {
    let mut gpus: BTreeSet<u32> = BTreeSet::new();
    for r in records {
        if r.gpu != 0 {
            gpus.insert(r.gpu);
        }
        if let What::Migrate { from, to, .. } = r.what {
            gpus.extend([from, to].into_iter().filter(|&g| g != 0));
        }
    }
    let mut list =
        vec![json!({"id": {"handle": 1}, "type": 1, "node_id": 0, "gpu_id": 0, "name": "CPU"})];
    let mut handles = BTreeMap::new();
    for (i, g) in gpus.into_iter().enumerate() {
        let h = 2 + i as u64;
        handles.insert(g, h);
        list.push(json!({
            "id": {"handle": h}, "type": 2, "node_id": 1 + i as u64, "gpu_id": g,
            "name": "gfx90a", "gpu_index": i
        }));
    }
    (list, handles)
}

/// One producer record: a start paired with its end, or an event.
#[derive(Clone, Copy, Debug)]
enum Pair {
    Migration {
        end: u64,
        page: u64,
        pages: u64,
        from: u32,
        to: u32,
        trigger: u32,
        error: bool,
    },
    Fault {
        end: u64,
        gpu: u32,
        page: u64,
        write: bool,
        migrated: Option<bool>,
    },
    Queue {
        end: u64,
        gpu: u32,
        rescheduled: bool,
    },
    Unmap {
        gpu: u32,
        page: u64,
        pages: u64,
        trigger: u32,
    },
    Dropped(u64),
}

/// `records` (in time order) as producer records: each start paired with
/// its end (the oldest open one of its key), a start without an end left
/// out, as the SDK does; in the order of their starts.
fn pairs(records: &[Record]) -> Vec<(u64, u32, Pair)> {
    let mut out: Vec<((u64, usize), u32, Pair)> = Vec::new();
    let mut migrations: BTreeMap<MigrationKey, VecDeque<(u64, usize)>> = BTreeMap::new();
    let mut faults: BTreeMap<FaultKey, VecDeque<(u64, usize, bool)>> = BTreeMap::new();
    let mut queues: BTreeMap<(u32, u32), VecDeque<(u64, usize)>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let at = (r.ts, i);
        match r.what {
            What::Migrate {
                page,
                pages,
                from,
                to,
                trigger,
            } => migrations
                .entry((r.pid, page, pages, from, to, trigger))
                .or_default()
                .push_back(at),
            What::Effect(Effect::MigrateEnd {
                page,
                pages,
                from,
                to,
                trigger,
                error,
            }) => {
                if let Some(start) = migrations
                    .get_mut(&(r.pid, page, pages, from, to, trigger))
                    .and_then(VecDeque::pop_front)
                {
                    let end = r.ts;
                    out.push((
                        start,
                        r.pid,
                        Pair::Migration {
                            end,
                            page,
                            pages,
                            from,
                            to,
                            trigger,
                            error,
                        },
                    ));
                }
            }
            What::Fault { page, write } => faults
                .entry((r.gpu, r.pid, page))
                .or_default()
                .push_back((r.ts, i, write)),
            What::Effect(Effect::FaultEnd { page, migrated }) => {
                if let Some((s, k, write)) = faults
                    .get_mut(&(r.gpu, r.pid, page))
                    .and_then(VecDeque::pop_front)
                {
                    let (end, gpu) = (r.ts, r.gpu);
                    out.push((
                        (s, k),
                        r.pid,
                        Pair::Fault {
                            end,
                            gpu,
                            page,
                            write,
                            migrated,
                        },
                    ));
                }
            }
            What::Effect(Effect::QueueEviction) => {
                queues.entry((r.gpu, r.pid)).or_default().push_back(at);
            }
            What::Effect(Effect::QueueRestore { rescheduled }) => {
                if let Some(start) = queues
                    .get_mut(&(r.gpu, r.pid))
                    .and_then(VecDeque::pop_front)
                {
                    let (end, gpu) = (r.ts, r.gpu);
                    out.push((
                        start,
                        r.pid,
                        Pair::Queue {
                            end,
                            gpu,
                            rescheduled,
                        },
                    ));
                }
            }
            What::Unmap {
                page,
                pages,
                trigger,
            } => out.push((
                at,
                r.pid,
                Pair::Unmap {
                    gpu: r.gpu,
                    page,
                    pages,
                    trigger,
                },
            )),
            What::Dropped(n) => out.push((at, r.pid, Pair::Dropped(n))),
            What::CpuFault { .. } | What::Effect(Effect::Copied { .. }) => {}
        }
    }
    out.sort_by_key(|(at, _, _)| *at);
    out.into_iter()
        .map(|((ts, _), pid, p)| (ts, pid, p))
        .collect()
}

/// `records` (in time order) as rocprofv3's `--kfd-trace` JSON writes
/// them: paired page migrations, page faults and queue evictions; unmaps,
/// dropped events and rescheduled queue restores as events (rocprofv3
/// asks for no other event kinds).
pub fn rocprofv3(records: &[Record], pid: u64) -> Value {
    let (agent_list, handles) = agents(records);
    let agent = |g: u32| json!({"handle": handles.get(&g).copied().unwrap_or(1)});
    let addr = |page: u64| json!({"handle": page * PAGE});
    let mut kfd: Vec<Value> = Vec::new();
    for (ts, pid, p) in pairs(records) {
        let v = match p {
            Pair::Migration {
                end,
                page,
                pages,
                from,
                to,
                trigger,
                error,
            } => json!({
                "size": 120, "operation": trigger, "start_timestamp": ts, "end_timestamp": end,
                "pid": pid, "start_address": addr(page), "end_address": addr(page + pages),
                "src_agent": agent(from), "dst_agent": agent(to),
                "prefetch_agent": {"handle": 0}, "preferred_agent": {"handle": 0},
                "error_code": i32::from(error) * -14
            }),
            Pair::Fault {
                end,
                gpu,
                page,
                write,
                migrated,
            } => json!({
                "size": 56, "operation": u8::from(write) * 2 + u8::from(migrated == Some(false)),
                "start_timestamp": ts, "end_timestamp": end, "pid": pid,
                "agent_id": agent(gpu), "address": addr(page)
            }),
            Pair::Queue {
                end,
                gpu,
                rescheduled: true,
            } => {
                // The eviction's record, then the rescheduling's event.
                kfd.push(json!({
                    "size": 48, "operation": 0, "start_timestamp": ts, "end_timestamp": end,
                    "pid": pid, "agent_id": agent(gpu)
                }));
                json!({"size": 40, "operation": 6, "timestamp": end, "pid": pid, "agent_id": agent(gpu)})
            }
            Pair::Queue { end, gpu, .. } => json!({
                "size": 48, "operation": 0, "start_timestamp": ts, "end_timestamp": end,
                "pid": pid, "agent_id": agent(gpu)
            }),
            Pair::Unmap {
                gpu,
                page,
                pages,
                trigger,
            } => json!({
                "size": 56, "operation": trigger, "timestamp": ts, "pid": pid,
                "agent_id": agent(gpu), "start_address": addr(page), "end_address": addr(page + pages)
            }),
            Pair::Dropped(n) => json!({
                "size": 32, "operation": 0, "timestamp": ts, "pid": pid, "count": n
            }),
        };
        kfd.push(v);
    }
    // Kinds numbered as rocprofiler-sdk 1.2 numbers them (24 on); the
    // others' places left empty, as the SDK leaves them.
    let mut strings = vec![json!({"kind": "", "operations": []}); 24 + KINDS.len()];
    for (n, (kind, ops)) in KINDS.iter().enumerate() {
        strings[24 + n] = json!({
            "kind": kind,
            "operations": ops.iter().map(|o| operation_name(kind, o)).collect::<Vec<_>>()
        });
    }
    json!({"rocprofiler-sdk-tool": [{
        "metadata": {"pid": pid, "command": ["app"], "synthetic": SYNTHETIC},
        "agents": agent_list,
        "strings": {"buffer_records": strings},
        "buffer_records": {"kfd": kfd}
    }]})
}

/// `records` as the 2024 rocprofiler-sdk-json-tool wrote its single
/// PAGE_MIGRATION kind: each start paired with its end in one record, by
/// node (dropped events it did not record).
pub fn json_tool_2024(records: &[Record], pid: u64) -> Value {
    let (agent_list, handles) = agents(records);
    let node = |g: u32| handles.get(&g).map_or(0, |h| h - 1);
    let mut out: Vec<Value> = Vec::new();
    for (ts, pid, p) in pairs(records) {
        let mut v = json!({"size": 160, "kind": 12, "start_timestamp": ts, "end_timestamp": ts, "pid": pid});
        match p {
            Pair::Migration {
                end,
                page,
                pages,
                from,
                to,
                trigger,
                ..
            } => {
                v["operation"] = json!(1);
                v["end_timestamp"] = json!(end);
                v["page_migrate"] = json!({
                    "start_addr": page * PAGE, "end_addr": (page + pages) * PAGE,
                    "from_node": node(from), "to_node": node(to),
                    "prefetch_node": 0, "preferred_node": 0, "trigger": trigger
                });
            }
            Pair::Fault {
                end,
                gpu,
                page,
                write,
                migrated,
            } => {
                v["operation"] = json!(2);
                v["end_timestamp"] = json!(end);
                v["page_fault"] = json!({
                    "node_id": node(gpu), "address": page * PAGE,
                    "read_fault": u8::from(!write), "migrated": u8::from(migrated != Some(false))
                });
            }
            Pair::Queue {
                end,
                gpu,
                rescheduled,
            } => {
                v["operation"] = json!(3);
                v["end_timestamp"] = json!(end);
                v["queue_suspend"] = json!({"node_id": node(gpu), "trigger": 0, "rescheduled": u8::from(rescheduled)});
            }
            Pair::Unmap {
                gpu,
                page,
                pages,
                trigger,
            } => {
                v["operation"] = json!(4);
                v["unmap_from_gpu"] = json!({
                    "node_id": node(gpu), "start_addr": page * PAGE,
                    "end_addr": (page + pages) * PAGE, "trigger": trigger
                });
            }
            Pair::Dropped(_) => continue,
        }
        out.push(v);
    }
    // The json-tool lists agents by node: the CPU is node 0.
    let agents: Vec<Value> = agent_list
        .into_iter()
        .map(|mut a| {
            let h = a["id"]["handle"].as_u64().unwrap_or(1);
            a["node_id"] = json!(h - 1);
            a
        })
        .collect();
    json!({"rocprofiler-sdk-json-tool": [{
        "metadata": {"pid": pid, "synthetic": SYNTHETIC},
        "agents": agents,
        "buffer_records": {"page_migration": out}
    }]})
}

/// The run the committed fixtures are made of: ping-pong at 1 MiB on two
/// GPUs (faults, migrations both ways, CPU faults, unmaps).
///
/// # Errors
/// The run cannot be made.
pub fn fixture_run() -> Result<Vec<Record>, String> {
    let spec = crate::exec::RunSpec {
        workload: "ping-pong".into(),
        size: 1 << 20,
        iters: 1,
        profile: "mi250x".into(),
        ..crate::exec::RunSpec::default()
    };
    let capture = crate::exec::Capture {
        events: true,
        ..crate::exec::Capture::default()
    };
    let o = crate::exec::run(&spec, capture).map_err(|e| e.to_string())?;
    records_of(&o)
}

/// The SMI events of a run, as the importer's records.
///
/// # Errors
/// The events do not read back (the formats disagree).
pub fn records_of(o: &crate::exec::Outcome) -> Result<Vec<Record>, String> {
    let gpus = crate::smi::RunEvents::of_outcome(o).gpus;
    let texts: Vec<(u32, String)> = gpus
        .iter()
        .map(|g| (g.raw(), crate::smi::gpu_text(*g, &o.events)))
        .collect();
    let sources: Vec<svm_workloads::import::Source<'_>> = texts
        .iter()
        .map(|(g, t)| svm_workloads::import::Source {
            text: t,
            gpu: Some(*g),
        })
        .collect();
    svm_workloads::import::kfd_records(&sources, svm_workloads::trace::MAX_EVENTS)
        .map(|(r, _)| r)
        .map_err(|e| e.to_string())
}

/// The committed fixtures: (file name, contents). The database is made
/// in `scratch` (a directory), then read.
///
/// # Errors
/// The run cannot be made, or the database written.
pub fn documents(scratch: &std::path::Path) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let records = fixture_run()?;
    let pretty =
        |v: &Value| (serde_json::to_string_pretty(v).unwrap_or_default() + "\n").into_bytes();
    let doc = rocprofv3(&records, 1000);
    // A database, made in `scratch` and read back.
    let made = |what: &str, write: &dyn Fn(&std::path::Path) -> Result<(), String>| {
        let db = scratch.join(format!("{what}-fixture-{}.sqlite", std::process::id()));
        let _ = std::fs::remove_file(&db);
        write(&db)?;
        let bytes = std::fs::read(&db).map_err(|e| format!("{}: {e}", db.display()));
        let _ = std::fs::remove_file(&db);
        bytes
    };
    Ok(vec![
        ("rocprofv3-ping-pong.json", pretty(&doc)),
        (
            "json-tool-2024-ping-pong.json",
            pretty(&json_tool_2024(&records, 1000)),
        ),
        (
            "nsys-ping-pong.sqlite",
            made("nsys", &|p| nsys(&records, p))?,
        ),
        ("rocpd-ping-pong.db", made("rocpd", &|p| rocpd(&doc, p))?),
    ])
}

/// The tables of an Nsight Systems export that the reader reads, as the
/// 2026.4 schema reference gives them (schema 3.28.1), with the enum
/// tables their columns name and the export's version.
const NSYS_SCHEMA: &str = "
CREATE TABLE META_DATA_EXPORT (name TEXT NOT NULL, value TEXT);
CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ENUM_CUDA_UNIF_MEM_ACCESS_TYPE (id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT);
CREATE TABLE ENUM_CUDA_UNIF_MEM_MIGRATION (id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT);
CREATE TABLE ENUM_CUDA_MEMCPY_OPER (id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT);
CREATE TABLE TARGET_INFO_GPU (vmId INTEGER NOT NULL, id INTEGER NOT NULL, name TEXT, busLocation TEXT, isDiscrete INTEGER, l2CacheSize INTEGER, totalMemory INTEGER, memoryBandwidth INTEGER, clockRate INTEGER, smCount INTEGER, pwGpuId INTEGER, uuid TEXT, luid INTEGER, chipName TEXT, cuDevice INTEGER, ctxCount INTEGER, ctxId INTEGER, computeMajor INTEGER, computeMinor INTEGER, smMajor INTEGER, smMinor INTEGER, numaNodeId INTEGER);
CREATE TABLE CUDA_UM_GPU_PAGE_FAULT_EVENTS (start INTEGER NOT NULL, end INTEGER NOT NULL, globalPid INTEGER NOT NULL, deviceId INTEGER NOT NULL, address INTEGER NOT NULL, numberOfPageFaults INTEGER NOT NULL, faultAccessType INTEGER NOT NULL REFERENCES ENUM_CUDA_UNIF_MEM_ACCESS_TYPE(id));
CREATE TABLE CUDA_UM_CPU_PAGE_FAULT_EVENTS (start INTEGER NOT NULL, globalPid INTEGER NOT NULL, address INTEGER NOT NULL, originalFaultPc INTEGER, CpuInstruction INTEGER NOT NULL REFERENCES StringIds(id), module INTEGER NOT NULL REFERENCES StringIds(id), unresolvedFaultPc INTEGER, sourceFile INTEGER, sourceLine INTEGER);
CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, greenContextId INTEGER, streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, bytes INTEGER NOT NULL, copyKind INTEGER NOT NULL REFERENCES ENUM_CUDA_MEMCPY_OPER(id), deprecatedSrcId INTEGER, srcKind INTEGER, dstKind INTEGER, srcDeviceId INTEGER, srcContextId INTEGER, dstDeviceId INTEGER, dstContextId INTEGER, migrationCause INTEGER REFERENCES ENUM_CUDA_UNIF_MEM_MIGRATION(id), graphNodeId INTEGER, virtualAddress INTEGER, copyCount INTEGER);
INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_SCHEMA_VERSION', '3.28.1');
INSERT INTO StringIds VALUES (1, '[unknown]');
INSERT INTO ENUM_CUDA_UNIF_MEM_ACCESS_TYPE VALUES (1, 'CUDA_UNIF_MEM_ACCESS_TYPE_READ', 'Read'), (2, 'CUDA_UNIF_MEM_ACCESS_TYPE_WRITE', 'Write'), (3, 'CUDA_UNIF_MEM_ACCESS_TYPE_ATOMIC', 'Atomic'), (4, 'CUDA_UNIF_MEM_ACCESS_TYPE_PREFETCH', 'Prefetch');
INSERT INTO ENUM_CUDA_UNIF_MEM_MIGRATION VALUES (1, 'CUDA_UNIF_MEM_MIGRATION_USER', 'User prefetch'), (2, 'CUDA_UNIF_MEM_MIGRATION_COHERENCE', 'Page fault'), (4, 'CUDA_UNIF_MEM_MIGRATION_EVICTION', 'Eviction');
INSERT INTO ENUM_CUDA_MEMCPY_OPER VALUES (11, 'CUDA_MEMCPY_KIND_UVM_HTOD', 'Unified Host-to-Device'), (12, 'CUDA_MEMCPY_KIND_UVM_DTOH', 'Unified Device-to-Host'), (13, 'CUDA_MEMCPY_KIND_UVM_DTOD', 'Unified Device-to-Device');
";

/// `records` as an Nsight Systems SQLite export of the same run on CUDA
/// GPUs would hold them, written to `path` (which must not exist): a GPU
/// fault a fault group of one, a migration a unified-memory copy (its
/// cause USER for a prefetch, COHERENCE for a fault's, EVICTION), and a
/// CPU fault's migration also a CPU fault.
///
/// # Errors
/// The database cannot be written.
pub fn nsys(records: &[Record], path: &std::path::Path) -> Result<(), String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let mut db = rusqlite::Connection::open(path).map_err(err)?;
    db.execute_batch(NSYS_SCHEMA).map_err(err)?;
    db.execute(
        "INSERT INTO META_DATA_EXPORT VALUES ('SYNTHETIC', ?1)",
        [SYNTHETIC],
    )
    .map_err(err)?;
    let (_, handles) = agents(records);
    // Devices in gpu_id order, numbered from 0.
    let device = |g: u32| {
        handles
            .get(&g)
            .map_or(0, |h| i64::try_from(h - 2).unwrap_or(0))
    };
    let global = |p: u32| i64::from(p) << 24;
    // SQLite integers are i64.
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let tx = db.transaction().map_err(err)?;
    for &g in handles.keys() {
        tx.execute(
            "INSERT INTO TARGET_INFO_GPU (vmId, id, name, cuDevice) VALUES (0, ?1, 'H100', ?1)",
            [device(g)],
        )
        .map_err(err)?;
    }
    for (ts, p, pair) in pairs(records) {
        let (ts, gp) = (int(ts), global(p));
        match pair {
            Pair::Fault {
                end,
                gpu,
                page,
                write,
                ..
            } => {
                tx.execute(
                    "INSERT INTO CUDA_UM_GPU_PAGE_FAULT_EVENTS VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
                    rusqlite::params![
                        ts,
                        int(end),
                        gp,
                        device(gpu),
                        int(page * PAGE),
                        if write { 2 } else { 1 }
                    ],
                )
                .map_err(err)?;
            }
            Pair::Migration {
                end,
                page,
                pages,
                from,
                to,
                trigger,
                ..
            } => {
                if trigger == 2 {
                    tx.execute(
                        "INSERT INTO CUDA_UM_CPU_PAGE_FAULT_EVENTS (start, globalPid, address, \
                         CpuInstruction, module) VALUES (?1, ?2, ?3, 1, 1)",
                        rusqlite::params![ts, gp, int(page * PAGE)],
                    )
                    .map_err(err)?;
                }
                let kind = match (from, to) {
                    (0, _) => 11,
                    (_, 0) => 12,
                    _ => 13,
                };
                let cause = match trigger {
                    0 => 1,
                    3 => 4,
                    _ => 2,
                };
                let dev = device(if to != 0 { to } else { from });
                let src = (from != 0).then(|| device(from));
                let dst = (to != 0).then(|| device(to));
                tx.execute(
                    "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY (start, end, deviceId, contextId, \
                     streamId, globalPid, bytes, copyKind, srcDeviceId, dstDeviceId, \
                     migrationCause, virtualAddress) VALUES (?1, ?2, ?3, 1, 1, ?4, ?5, ?6, ?7, ?8, \
                     ?9, ?10)",
                    rusqlite::params![
                        ts,
                        int(end),
                        dev,
                        gp,
                        int(pages * PAGE),
                        kind,
                        src,
                        dst,
                        cause,
                        int(page * PAGE)
                    ],
                )
                .map_err(err)?;
            }
            Pair::Queue { .. } | Pair::Unmap { .. } | Pair::Dropped(_) => {}
        }
    }
    tx.commit().map_err(err)
}

/// The UUID the synthetic rocpd database's tables carry.
const ROCPD_UUID: &str = "00000000_0000_7000_8000_000000000000";

/// A rocprofv3 document (`rocprofv3`'s) as the rocpd writer stores it,
/// written to `path` (which must not exist): schema 3's tables (the
/// columns the reader reads and their neighbours) under the database's
/// UUID, the views without it, and each KFD record a region and an event
/// whose `extdata` is the record's fields (`{"kfd":{"record":{"index":I,
/// "data":{..}}}}`, agents as node ids).
///
/// # Errors
/// The database cannot be written.
pub fn rocpd(doc: &Value, path: &std::path::Path) -> Result<(), String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let mut db = rusqlite::Connection::open(path).map_err(err)?;
    let u = ROCPD_UUID;
    let guid = u.replace('_', "-");
    let mut schema = String::new();
    for (t, cols) in [
        (
            "metadata",
            "\"id\" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \"tag\" TEXT NOT NULL, \"value\" TEXT NOT NULL",
        ),
        (
            "string",
            "\"id\" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \"guid\" TEXT NOT NULL, \"string\" TEXT NOT NULL UNIQUE",
        ),
        (
            "info_agent",
            "\"id\" INTEGER NOT NULL PRIMARY KEY, \"guid\" TEXT NOT NULL, \"nid\" INTEGER NOT NULL, \"pid\" INTEGER NOT NULL, \"type\" TEXT CHECK (\"type\" IN ('CPU', 'GPU', 'NIC')), \"absolute_index\" INTEGER, \"logical_index\" INTEGER, \"type_index\" INTEGER, \"uuid\" INTEGER, \"name\" TEXT, \"model_name\" TEXT, \"vendor_name\" TEXT, \"product_name\" TEXT, \"user_name\" TEXT, \"extdata\" JSONB DEFAULT '{}' NOT NULL",
        ),
        (
            "event",
            "\"id\" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \"guid\" TEXT NOT NULL, \"category_id\" INTEGER, \"stack_id\" INTEGER, \"parent_stack_id\" INTEGER, \"correlation_id\" INTEGER, \"call_stack\" JSONB DEFAULT '{}' NOT NULL, \"line_info\" JSONB DEFAULT '{}' NOT NULL, \"extdata\" JSONB DEFAULT '{}' NOT NULL",
        ),
        (
            "region",
            "\"id\" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \"guid\" TEXT NOT NULL, \"nid\" INTEGER NOT NULL, \"pid\" INTEGER NOT NULL, \"tid\" INTEGER NOT NULL, \"start\" BIGINT NOT NULL, \"end\" BIGINT NOT NULL, \"name_id\" INTEGER NOT NULL, \"event_id\" INTEGER, \"extdata\" JSONB DEFAULT '{}' NOT NULL",
        ),
    ] {
        schema += &format!(
            "CREATE TABLE `rocpd_{t}_{u}` ({cols});\nCREATE VIEW `rocpd_{t}` AS SELECT * FROM `rocpd_{t}_{u}`;\n"
        );
    }
    db.execute_batch(&schema).map_err(err)?;
    let tx = db.transaction().map_err(err)?;
    for (tag, value) in [
        ("schema_version", "3"),
        ("uuid", u),
        ("guid", &guid),
        ("synthetic", SYNTHETIC),
    ] {
        tx.execute(
            &format!("INSERT INTO rocpd_metadata_{u} (tag, value) VALUES (?1, ?2)"),
            [tag, value],
        )
        .map_err(err)?;
    }
    // The strings: every kind and operation name, ids in this order.
    let mut strings: Vec<String> = Vec::new();
    for (kind, ops) in KINDS {
        strings.push(kind.to_owned());
        strings.extend(ops.iter().map(|o| operation_name(kind, o)));
    }
    for s in &strings {
        tx.execute(
            &format!("INSERT INTO rocpd_string_{u} (guid, string) VALUES (?1, ?2)"),
            [&guid, s],
        )
        .map_err(err)?;
    }
    let id_of = |s: &str| {
        strings
            .iter()
            .position(|x| x == s)
            .map_or(0, |i| i as i64 + 1)
    };
    let element = &doc["rocprofiler-sdk-tool"][0];
    // Agents by node id: the JSON's handle less one.
    let node = |h: u64| h.saturating_sub(1);
    for a in element["agents"].as_array().into_iter().flatten() {
        let h = a["id"]["handle"].as_u64().unwrap_or(1);
        let ty = if a["type"] == 2 { "GPU" } else { "CPU" };
        let ext = json!({"gpu_id": a["gpu_id"], "node_id": node(h)}).to_string();
        tx.execute(
            &format!(
                "INSERT INTO rocpd_info_agent_{u} (id, guid, nid, pid, type, absolute_index, name, \
                 extdata) VALUES (?1, ?2, 1, 1, ?3, ?1, ?4, ?5)"
            ),
            rusqlite::params![
                node(h) as i64,
                guid,
                ty,
                a["name"].as_str().unwrap_or(""),
                ext
            ],
        )
        .map_err(err)?;
    }
    let int = |v: &Value| v.as_u64().and_then(|x| i64::try_from(x).ok()).unwrap_or(0);
    for r in element["buffer_records"]["kfd"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(kind) = super::rocprof::kind_of(r) else {
            continue;
        };
        let (index, (_, ops)) = KINDS
            .iter()
            .enumerate()
            .find(|(_, (k, _))| *k == kind)
            .expect("a kind of KINDS");
        let op = usize::try_from(r["operation"].as_u64().unwrap_or(0)).unwrap_or(0);
        let mut data = serde_json::Map::new();
        for (key, field) in [
            ("start_address", "start_address"),
            ("end_address", "end_address"),
            ("address", "address"),
            ("src_agent", "src_agent_id"),
            ("dst_agent", "dst_agent_id"),
            ("agent_id", "agent_id"),
        ] {
            if let Some(h) = r.get(key).and_then(|v| v["handle"].as_u64()) {
                let v = if field.ends_with("agent_id") {
                    node(h)
                } else {
                    h
                };
                data.insert(field.into(), json!(v));
            }
        }
        for key in ["error_code", "count"] {
            if let Some(v) = r.get(key) {
                data.insert(key.into(), v.clone());
            }
        }
        let ext = json!({"kfd": {"record": {"index": index + 1, "data": data}}}).to_string();
        tx.execute(
            &format!(
                "INSERT INTO rocpd_event_{u} (guid, category_id, stack_id, parent_stack_id, \
                 correlation_id, extdata) VALUES (?1, ?2, 0, 0, 0, ?3)"
            ),
            rusqlite::params![guid, id_of(kind), ext],
        )
        .map_err(err)?;
        let event = tx.last_insert_rowid();
        let (start, end) = match r.get("timestamp") {
            Some(t) => (int(t), int(t)),
            None => (int(&r["start_timestamp"]), int(&r["end_timestamp"])),
        };
        tx.execute(
            &format!(
                "INSERT INTO rocpd_region_{u} (guid, nid, pid, tid, start, end, name_id, event_id) \
                 VALUES (?1, 1, 1, ?2, ?3, ?4, ?5, ?6)"
            ),
            rusqlite::params![
                guid,
                int(&r["pid"]),
                start,
                end,
                id_of(&operation_name(kind, ops.get(op).copied().unwrap_or(""))),
                event
            ],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

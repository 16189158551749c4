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
    let kinds = [
        (
            "KFD_PAGE_MIGRATE",
            29,
            vec!["PREFETCH", "PAGEFAULT_GPU", "PAGEFAULT_CPU", "TTM_EVICTION"],
        ),
        (
            "KFD_PAGE_FAULT",
            30,
            vec![
                "READ_FAULT_MIGRATED",
                "READ_FAULT_UPDATED",
                "WRITE_FAULT_MIGRATED",
                "WRITE_FAULT_UPDATED",
            ],
        ),
        (
            "KFD_QUEUE",
            31,
            vec![
                "EVICT_SVM",
                "EVICT_USERPTR",
                "EVICT_TTM",
                "EVICT_SUSPEND",
                "EVICT_CRIU_CHECKPOINT",
                "EVICT_CRIU_RESTORE",
            ],
        ),
        (
            "KFD_EVENT_QUEUE",
            26,
            vec![
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
            27,
            vec!["MMU_NOTIFY", "MMU_NOTIFY_MIGRATE", "UNMAP_FROM_CPU"],
        ),
        ("KFD_EVENT_DROPPED_EVENTS", 28, vec!["DROPPED_EVENTS"]),
    ];
    let mut strings = vec![json!({"kind": "", "operations": []}); 32];
    for (kind, n, ops) in kinds {
        let prefix = kind.strip_prefix("KFD_EVENT_").map_or_else(
            || format!("ROCPROFILER_{kind}_"),
            |k| format!("ROCPROFILER_KFD_EVENT_{k}_"),
        );
        strings[n] = json!({
            "kind": kind,
            "operations": ops.iter().map(|o| format!("{prefix}{o}")).collect::<Vec<_>>()
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
    let db = scratch.join(format!("nsys-fixture-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&db);
    nsys(&records, &db)?;
    let bytes = std::fs::read(&db).map_err(|e| format!("{}: {e}", db.display()));
    let _ = std::fs::remove_file(&db);
    Ok(vec![
        (
            "rocprofv3-ping-pong.json",
            pretty(&rocprofv3(&records, 1000)),
        ),
        (
            "json-tool-2024-ping-pong.json",
            pretty(&json_tool_2024(&records, 1000)),
        ),
        ("nsys-ping-pong.sqlite", bytes?),
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

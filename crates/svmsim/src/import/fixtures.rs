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
        migrated: bool,
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
                "size": 56, "operation": u8::from(write) * 2 + u8::from(!migrated),
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
                    "read_fault": u8::from(!write), "migrated": u8::from(migrated)
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

/// The committed fixtures: (file name, contents).
///
/// # Errors
/// The run cannot be made.
pub fn documents() -> Result<Vec<(&'static str, String)>, String> {
    let records = fixture_run()?;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    Ok(vec![
        (
            "rocprofv3-ping-pong.json",
            pretty(&rocprofv3(&records, 1000)),
        ),
        (
            "json-tool-2024-ping-pong.json",
            pretty(&json_tool_2024(&records, 1000)),
        ),
    ])
}

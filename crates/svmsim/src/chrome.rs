//! The timeline as Chrome trace-event JSON (`--timeline FILE`), stamped
//! with simulated time: it opens in Perfetto UI (ui.perfetto.dev) or
//! `chrome://tracing`. The format is documented in `docs/timeline.md`.
//!
//! Each GPU is a process with tracks (threads) for its faults, its
//! migrations (named by trigger), its queue evictions and TLB flushes, and
//! its copy engine's two directions; counters give its VRAM in use and
//! its resident pages. Times are microseconds, as the format wants.

use serde_json::{Value, json};
use svm_sim::machine::timeline::Timeline;

use crate::exec::Outcome;
use crate::series;

const FAULTS: u32 = 1;
const MIGRATIONS: u32 = 2;
const QUEUES: u32 = 3;
const TLB: u32 = 4;
const COPY_IN: u32 = 5;
const COPY_OUT: u32 = 6;

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn meta(pid: u32, tid: Option<u32>, name: &str) -> Value {
    match tid {
        None => {
            json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})
        }
        Some(t) => {
            json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": t, "args": {"name": name}})
        }
    }
}

fn span(pid: u32, tid: u32, name: &str, start: u64, end: u64, args: Value) -> Value {
    json!({"ph": "X", "name": name, "cat": "svm", "pid": pid, "tid": tid,
           "ts": us(start), "dur": us(end.saturating_sub(start)), "args": args})
}

/// The trace-event document of one run.
pub fn trace(o: &Outcome) -> Value {
    let gpu_ids: Vec<u32> = o.gpu_end.iter().map(|g| g.gpu_id).collect();
    // Trace pids: GPU k is k + 1.
    let pid_of = |gpu_id: u32| -> u32 {
        gpu_ids
            .iter()
            .position(|&g| g == gpu_id)
            .and_then(|i| u32::try_from(i + 1).ok())
            .unwrap_or(0)
    };
    let mut ev = Vec::new();
    for (i, &g) in gpu_ids.iter().enumerate() {
        let pid = u32::try_from(i + 1).unwrap_or(0);
        ev.push(meta(pid, None, &format!("GPU {g:#x}")));
        for (tid, name) in [
            (FAULTS, "page faults"),
            (MIGRATIONS, "migrations"),
            (QUEUES, "queue eviction / restore"),
            (TLB, "TLB flushes"),
            (COPY_IN, "copy engine: to VRAM"),
            (COPY_OUT, "copy engine: to RAM"),
        ] {
            ev.push(meta(pid, Some(tid), name));
        }
    }
    let (faults, migs, queues) = series::smi_spans(o);
    for (list, tid) in [(&faults, FAULTS), (&migs, MIGRATIONS), (&queues, QUEUES)] {
        for s in list {
            let args: serde_json::Map<String, Value> = s
                .args
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
                .collect();
            ev.push(span(
                pid_of(s.gpu_id),
                tid,
                &s.name,
                s.start_ns,
                s.end_ns,
                Value::Object(args),
            ));
        }
    }
    if let Some(t) = &o.timeline {
        hardware(&mut ev, t, &gpu_ids, &pid_of);
    }
    json!({
        "traceEvents": ev,
        "displayTimeUnit": "ns",
        "otherData": {
            "schema": "svmsim.timeline/1",
            "workload": o.spec.workload,
            "policy": o.spec.policy(),
            "seed": o.spec.seed,
            "repro": o.spec.repro(),
            "clock": "simulated",
        },
    })
}

fn hardware(ev: &mut Vec<Value>, t: &Timeline, gpu_ids: &[u32], pid_of: &dyn Fn(u32) -> u32) {
    for f in &t.tlb_flushes {
        ev.push(json!({"ph": "i", "s": "t", "name": if f.heavy { "TLB flush (heavyweight)" } else { "TLB flush (legacy)" },
                       "cat": "svm", "pid": pid_of(f.gpu_id), "tid": TLB, "ts": us(f.at_ns)}));
    }
    for c in &t.copies {
        let tid = if c.to_vram { COPY_IN } else { COPY_OUT };
        let name = if c.to_vram {
            "copy to VRAM"
        } else {
            "copy to RAM"
        };
        ev.push(span(
            pid_of(c.gpu_id),
            tid,
            name,
            c.start_ns,
            c.end_ns,
            json!({"pages": c.pages, "bytes": c.pages * 4096}),
        ));
    }
    for v in &t.vram {
        ev.push(json!({"ph": "C", "name": "VRAM used (MiB)", "pid": pid_of(v.gpu_id), "tid": 0,
                       "ts": us(v.at_ns), "args": {"MiB": v.used_bytes as f64 / f64::from(1 << 20)}}));
    }
    if let Some(map) = series::residency(t, gpu_ids, 1, 1, None) {
        for (i, list) in map.resident.iter().enumerate() {
            let pid = u32::try_from(i + 1).unwrap_or(0);
            for &(at, n) in list {
                ev.push(
                    json!({"ph": "C", "name": "resident pages", "pid": pid, "tid": 0,
                               "ts": us(at), "args": {"pages": n}}),
                );
            }
        }
    }
}

/// Checks that `v` is a trace-event document this module could have
/// written: a `traceEvents` array whose events each have a known phase,
/// the fields that phase needs, and numeric times. Used by the tests and
/// by `svmsim` itself before writing.
///
/// # Errors
/// The first event that breaks the format, by index.
pub fn validate(v: &Value) -> Result<usize, String> {
    let list = v
        .get("traceEvents")
        .and_then(Value::as_array)
        .ok_or("no traceEvents array")?;
    for (i, e) in list.iter().enumerate() {
        let ph = e
            .get("ph")
            .and_then(Value::as_str)
            .ok_or(format!("event {i}: no ph"))?;
        let need: &[&str] = match ph {
            "X" => &["name", "pid", "tid", "ts", "dur"],
            "i" | "C" => &["name", "pid", "ts"],
            "M" => &["name", "pid", "args"],
            _ => return Err(format!("event {i}: unknown phase {ph:?}")),
        };
        for f in need {
            if e.get(*f).is_none() {
                return Err(format!("event {i} ({ph}): no {f}"));
            }
        }
        for f in ["ts", "dur"] {
            if let Some(x) = e.get(f)
                && !x.as_f64().is_some_and(|t| t.is_finite() && t >= 0.0)
            {
                return Err(format!("event {i}: {f} is not a time: {x}"));
            }
        }
        if ph == "C" && !e.get("args").is_some_and(Value::is_object) {
            return Err(format!("event {i}: a counter without args"));
        }
    }
    Ok(list.len())
}

/// One document for several runs: run `k`'s GPUs become trace processes
/// `100 k + 1 ...`, named after the run, so runs sit one above another.
pub fn trace_many(outs: &[Outcome]) -> Value {
    if let [one] = outs {
        return trace(one);
    }
    let mut all = Vec::new();
    for (k, o) in outs.iter().enumerate() {
        let label = o.label.clone();
        let off = 100 * u64::try_from(k).unwrap_or(0);
        let mut v = trace(o);
        if let Some(list) = v.get_mut("traceEvents").and_then(Value::as_array_mut) {
            for e in list.iter_mut() {
                if let Some(p) = e.get("pid").and_then(Value::as_u64) {
                    e["pid"] = json!(p + off);
                }
                if e.get("name").and_then(Value::as_str) == Some("process_name")
                    && let Some(n) = e.pointer("/args/name").and_then(Value::as_str)
                {
                    e["args"]["name"] = json!(format!("{label}: {n}"));
                }
            }
            all.append(list);
        }
    }
    json!({
        "traceEvents": all,
        "displayTimeUnit": "ns",
        "otherData": {
            "schema": "svmsim.timeline/1",
            "runs": outs.iter().map(|o| o.label.clone()).collect::<Vec<_>>(),
            "repro": outs.iter().map(|o| o.spec.repro()).collect::<Vec<_>>(),
            "clock": "simulated",
        },
    })
}

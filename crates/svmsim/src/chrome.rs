//! The timeline as Chrome trace-event JSON (`--timeline FILE`), stamped
//! with simulated time: it opens in Perfetto UI (ui.perfetto.dev) or
//! `chrome://tracing`. The format is documented in `docs/timeline.md`.
//!
//! Each GPU is a process with tracks (threads) for its kernels, the waves
//! of its first CUs, its faults, its migrations (named by trigger), its
//! page-table updates, its queue evictions and TLB flushes, and its copy
//! engine's two directions; counters give its VRAM in use, its resident
//! pages and its waves running. The CPU is a process of its own, with the
//! page faults that pulled pages back to system memory and the threads a
//! scenario or workload ran. Flow arrows join what caused what: a fault to
//! its migration, the migration to the page-table update that mapped it,
//! and that to the waves it woke. Times are microseconds, as the format
//! wants.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use svm_core::events::MigrateTrigger;
use svm_sim::machine::timeline::Timeline;

use crate::exec::Outcome;
use crate::series;

const FAULTS: u32 = 1;
const MIGRATIONS: u32 = 2;
const QUEUES: u32 = 3;
const TLB: u32 = 4;
const COPY_IN: u32 = 5;
const COPY_OUT: u32 = 6;
const MAPS: u32 = 7;
const KERNELS: u32 = 8;
/// The CPU process's own track of page faults.
const CPU_FAULTS: u32 = 1;
/// Wave (and CPU thread) lanes: `LANES + 100 * cu + slot`.
const LANES: u32 = 100;
/// The CUs whose waves are drawn one by one. A GPU runs thousands of
/// waves at once (228 CUs of 8 on an MI300A), too many tracks to read;
/// the `waves running` counter counts every wave of every CU.
pub const WAVE_CUS: u32 = 4;
/// A track whose spans overlap without nesting (two processes' faults on
/// one GPU, say) continues on sub-tracks `tid + SUBLANE * k`.
const SUBLANE: u32 = 10_000;
/// Counter points at most per counter; more are merged into this many
/// equal time buckets, each showing its peak.
const COUNTER_POINTS: usize = 2000;

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

/// What a slice is, for the flows between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Other,
    /// A served GPU fault on `page`.
    Fault {
        gpu: u32,
        page: u64,
    },
    /// A migration of `[page, page + npages)`.
    Migration {
        gpu: u32,
        page: u64,
        npages: u64,
        trigger: Option<MigrateTrigger>,
    },
    /// A page-table update.
    Map {
        gpu: u32,
        page: u64,
        npages: u64,
    },
    /// Wave (kernel, index) parked on `page`, woken at the slice's end.
    Stall {
        gpu: u32,
        page: u64,
        kernel: u32,
        index: u32,
    },
    /// A CPU fault on `page`.
    CpuFault {
        page: u64,
    },
    /// A wave or thread, by (kernel, index).
    Wave {
        kernel: u32,
        index: u32,
    },
}

/// One span before its track is fixed.
struct Slice {
    pid: u32,
    /// The logical track; the lane (`tid`) is chosen so spans nest.
    track: u32,
    tid: u32,
    name: String,
    start: u64,
    end: u64,
    args: Value,
    role: Role,
}

impl Slice {
    fn new(pid: u32, track: u32, name: impl Into<String>, (start, end): (u64, u64)) -> Self {
        Slice {
            pid,
            track,
            tid: track,
            name: name.into(),
            start,
            end: end.max(start),
            args: json!({}),
            role: Role::Other,
        }
    }

    fn with(mut self, args: Value, role: Role) -> Self {
        self.args = args;
        self.role = role;
        self
    }

    fn event(&self) -> Value {
        json!({"ph": "X", "name": self.name, "cat": "svm", "pid": self.pid, "tid": self.tid,
               "ts": us(self.start), "dur": us(self.end - self.start), "args": self.args})
    }
}

/// Spreads each logical track's slices over as few lanes as keep every
/// lane in order: on the migrations track a slice may lie within one
/// before it (an eviction a migration made), elsewhere it must follow
/// (two waves or two faults are never parent and child). Perfetto draws a
/// lane as a stack. Returns the lanes each track used. Stalls are left to
/// their waves.
fn place(slices: &mut [Slice]) -> BTreeMap<(u32, u32), u32> {
    let mut order: Vec<usize> = (0..slices.len())
        .filter(|&i| !matches!(slices[i].role, Role::Stall { .. }))
        .collect();
    order.sort_by_key(|&i| {
        let s = &slices[i];
        (s.pid, s.track, s.start, std::cmp::Reverse(s.end))
    });
    // Per (pid, track): each lane's stack of open ends.
    let mut lanes: BTreeMap<(u32, u32), Vec<Vec<u64>>> = BTreeMap::new();
    for i in order {
        let s = &slices[i];
        let list = lanes.entry((s.pid, s.track)).or_default();
        let mut k = 0;
        loop {
            if k == list.len() {
                list.push(Vec::new());
            }
            let stack = &mut list[k];
            while stack.last().is_some_and(|&e| e <= s.start) {
                stack.pop();
            }
            let nests = s.track == MIGRATIONS;
            if stack.last().is_none_or(|&e| nests && s.end <= e) {
                stack.push(s.end);
                break;
            }
            k += 1;
        }
        let sub = u32::try_from(k).unwrap_or(u32::MAX);
        slices[i].tid = slices[i].track.saturating_add(SUBLANE.saturating_mul(sub));
    }
    lanes
        .into_iter()
        .map(|(key, l)| (key, u32::try_from(l.len()).unwrap_or(u32::MAX)))
        .collect()
}

/// A counter of how many intervals are open over time, at most
/// [`COUNTER_POINTS`] points (each bucket's peak when merged).
fn open_count(mut edges: Vec<(u64, i64)>) -> Vec<(u64, i64)> {
    edges.sort_unstable();
    let mut points: Vec<(u64, i64)> = Vec::new();
    let mut n = 0;
    for (t, d) in edges {
        n += d;
        match points.last_mut() {
            Some(l) if l.0 == t => l.1 = n,
            _ => points.push((t, n)),
        }
    }
    if points.len() <= COUNTER_POINTS {
        return points;
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let width = (t1 - t0).div_ceil(COUNTER_POINTS as u64 - 1).max(1);
    let mut merged: Vec<(u64, i64)> = Vec::new();
    for (t, n) in points {
        let b = t0 + (t - t0) / width * width;
        match merged.last_mut() {
            Some(l) if l.0 == b => l.1 = l.1.max(n),
            _ => merged.push((b, n)),
        }
    }
    merged
}

/// The trace-event document of one run.
pub fn trace(o: &Outcome) -> Value {
    let gpu_ids: Vec<u32> = o.gpu_end.iter().map(|g| g.gpu_id).collect();
    // Trace pids: GPU k is k + 1; the CPU comes after them.
    let pid_of = |gpu_id: u32| -> u32 {
        gpu_ids
            .iter()
            .position(|&g| g == gpu_id)
            .and_then(|i| u32::try_from(i + 1).ok())
            .unwrap_or(0)
    };
    let cpu_pid = u32::try_from(gpu_ids.len() + 1).unwrap_or(u32::MAX);
    let mut ev = Vec::new();
    let mut names: BTreeMap<(u32, u32), String> = BTreeMap::new();
    for (i, &g) in gpu_ids.iter().enumerate() {
        let pid = u32::try_from(i + 1).unwrap_or(0);
        ev.push(meta(pid, None, &crate::exec::gpu_name(i, g)));
        for (tid, name) in [
            (KERNELS, "kernels"),
            (FAULTS, "page faults"),
            (MIGRATIONS, "migrations"),
            (MAPS, "page-table updates"),
            (QUEUES, "queue eviction / restore"),
            (TLB, "TLB flushes"),
            (COPY_IN, "copy engine: to VRAM"),
            (COPY_OUT, "copy engine: to RAM"),
        ] {
            names.insert((pid, tid), name.into());
        }
    }
    let mut slices = Vec::new();
    let (faults, migs, queues) = series::smi_spans(o);
    for (list, tid) in [(&faults, FAULTS), (&migs, MIGRATIONS), (&queues, QUEUES)] {
        for s in list {
            let args: serde_json::Map<String, Value> = s
                .args
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect();
            let role = match tid {
                FAULTS => Role::Fault {
                    gpu: s.gpu_id,
                    page: s.page,
                },
                MIGRATIONS => Role::Migration {
                    gpu: s.gpu_id,
                    page: s.page,
                    npages: s.npages,
                    trigger: s.trigger,
                },
                _ => Role::Other,
            };
            slices.push(
                Slice::new(
                    pid_of(s.gpu_id),
                    tid,
                    s.name.clone(),
                    (s.start_ns, s.end_ns),
                )
                .with(Value::Object(args), role),
            );
        }
    }
    if let Some(t) = &o.timeline {
        hardware(&mut ev, &mut slices, t, &gpu_ids, &pid_of);
        work(&mut ev, &mut slices, &mut names, t, &pid_of, cpu_pid);
    }
    let lanes = place(&mut slices);
    // Stalls sit on their wave's lane, inside it.
    let wave_tid: BTreeMap<(u32, u32), u32> = slices
        .iter()
        .filter_map(|s| match s.role {
            Role::Wave { kernel, index } => Some(((kernel, index), s.tid)),
            _ => None,
        })
        .collect();
    for s in &mut slices {
        if let Role::Stall { kernel, index, .. } = s.role
            && let Some(&tid) = wave_tid.get(&(kernel, index))
        {
            s.tid = tid;
        }
    }
    for ((pid, track), n) in lanes {
        let base = names.get(&(pid, track)).cloned().unwrap_or_default();
        for k in 1..n {
            names.insert(
                (pid, track.saturating_add(SUBLANE.saturating_mul(k))),
                format!("{base} ({})", k + 1),
            );
        }
    }
    let flows = flows(&slices, &mut ev);
    for ((pid, tid), name) in &names {
        ev.push(meta(*pid, Some(*tid), name));
    }
    ev.extend(slices.iter().map(Slice::event));
    json!({
        "traceEvents": ev,
        "displayTimeUnit": "ns",
        "otherData": {
            "schema": "svmsim.timeline/2",
            "workload": o.spec.workload,
            "policy": o.spec.policy(),
            "seed": o.spec.seed,
            "repro": o.spec.repro(),
            "clock": "simulated",
            "waves_drawn": format!("the waves of CUs 0-{} of each GPU", WAVE_CUS - 1),
            "flows": flows,
        },
    })
}

fn hardware(
    ev: &mut Vec<Value>,
    slices: &mut Vec<Slice>,
    t: &Timeline,
    gpu_ids: &[u32],
    pid_of: &dyn Fn(u32) -> u32,
) {
    for f in &t.tlb_flushes {
        ev.push(json!({"ph": "i", "s": "t", "name": if f.heavy { "TLB flush (heavyweight)" } else { "TLB flush (legacy)" },
                       "cat": "svm", "pid": pid_of(f.gpu_id), "tid": TLB, "ts": us(f.at_ns)}));
    }
    for c in &t.copies {
        let (tid, name) = if c.to_vram {
            (COPY_IN, "copy to VRAM")
        } else {
            (COPY_OUT, "copy to RAM")
        };
        slices.push(
            Slice::new(pid_of(c.gpu_id), tid, name, (c.start_ns, c.end_ns)).with(
                json!({"pages": c.pages, "bytes": c.pages * 4096}),
                Role::Other,
            ),
        );
    }
    for m in &t.maps {
        slices.push(
            Slice::new(pid_of(m.gpu_id), MAPS, "map", (m.start_ns, m.end_ns)).with(
                json!({"pages": m.npages, "address": format!("{:#x}", m.page * 4096)}),
                Role::Map {
                    gpu: m.gpu_id,
                    page: m.page,
                    npages: m.npages,
                },
            ),
        );
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

/// Kernels, waves, their stalls, CPU threads and CPU faults.
fn work(
    ev: &mut Vec<Value>,
    slices: &mut Vec<Slice>,
    names: &mut BTreeMap<(u32, u32), String>,
    t: &Timeline,
    pid_of: &dyn Fn(u32) -> u32,
    cpu_pid: u32,
) {
    let cpu_kernel: BTreeMap<u32, bool> = t.kernels.iter().map(|k| (k.kernel, k.cpu)).collect();
    let threads = t.kernels.iter().any(|k| k.cpu);
    if threads || !t.cpu_faults.is_empty() {
        ev.push(meta(cpu_pid, None, "CPU"));
    }
    if !t.cpu_faults.is_empty() {
        names.insert((cpu_pid, CPU_FAULTS), "page faults (migrate to RAM)".into());
    }
    if threads {
        names.insert((cpu_pid, KERNELS), "thread groups".into());
    }
    for k in &t.kernels {
        let pid = if k.cpu { cpu_pid } else { pid_of(k.gpu_id) };
        let what = if k.cpu { "CPU threads" } else { "kernel" };
        let name = if k.failed {
            format!("{what} {} (failed)", k.kernel)
        } else {
            format!("{what} {}", k.kernel)
        };
        slices.push(Slice::new(pid, KERNELS, name, (k.start_ns, k.end_ns)).with(
            json!({"kernel": k.kernel, "waves": k.waves, "accesses": k.accesses,
                       "faults": k.faults, "fault_stall_us": us(k.fault_stall_ns)}),
            Role::Other,
        ));
    }
    let mut running: BTreeMap<u32, Vec<(u64, i64)>> = BTreeMap::new();
    for w in &t.waves {
        let cpu = cpu_kernel.get(&w.kernel).copied().unwrap_or(false);
        let pid = if cpu { cpu_pid } else { pid_of(w.gpu_id) };
        let edges = running.entry(pid).or_default();
        edges.push((w.start_ns, 1));
        edges.push((w.end_ns, -1));
        if !cpu && w.cu >= WAVE_CUS {
            continue;
        }
        let track = LANES + 100 * w.cu;
        names.entry((pid, track)).or_insert_with(|| {
            if cpu {
                "threads".into()
            } else {
                format!("CU {} waves", w.cu)
            }
        });
        let name = if cpu {
            format!("thread {}", w.index)
        } else {
            format!("wave {}", w.index)
        };
        slices.push(Slice::new(pid, track, name, (w.start_ns, w.end_ns)).with(
            json!({"kernel": w.kernel, "wave": w.index, "cu": w.cu}),
            Role::Wave {
                kernel: w.kernel,
                index: w.index,
            },
        ));
    }
    for (pid, edges) in running {
        let name = if pid == cpu_pid {
            "threads running"
        } else {
            "waves running"
        };
        for (at, n) in open_count(edges) {
            ev.push(json!({"ph": "C", "name": name, "pid": pid, "tid": 0,
                           "ts": us(at), "args": {"waves": n}}));
        }
    }
    let drawn: BTreeMap<(u32, u32), u32> = slices
        .iter()
        .filter_map(|s| match s.role {
            Role::Wave { kernel, index } => Some(((kernel, index), s.pid)),
            _ => None,
        })
        .collect();
    for st in &t.stalls {
        let Some(&pid) = drawn.get(&(st.kernel, st.index)) else {
            continue;
        };
        let name = match st.outcome {
            0 => "stalled on a fault",
            1 => "stalled on a fault (dropped, retried)",
            _ => "stalled on a fault (refused)",
        };
        slices.push(Slice::new(pid, 0, name, (st.start_ns, st.end_ns)).with(
            json!({"kernel": st.kernel, "wave": st.index,
                       "address": format!("{:#x}", st.page * 4096)}),
            Role::Stall {
                gpu: st.gpu_id,
                page: st.page,
                kernel: st.kernel,
                index: st.index,
            },
        ));
    }
    for f in &t.cpu_faults {
        slices.push(
            Slice::new(cpu_pid, CPU_FAULTS, "CPU fault", (f.start_ns, f.end_ns)).with(
                json!({"address": format!("{:#x}", f.page * 4096),
                       "access": if f.write { "write" } else { "read" },
                       "process": f.pid, "wait_us": us(f.wait_ns)}),
                Role::CpuFault { page: f.page },
            ),
        );
    }
}
/// Draws the causes as flow arrows (trace-event flow events `s` and
/// `f`, the end bound to its enclosing slice): a GPU fault to the
/// migrations it made, the last of them (or the fault) to the page-table
/// updates that mapped its page, and the last step to the waves parked on
/// that page that it woke; a CPU fault to its migration to RAM. A step
/// belongs to a fault when it starts within the fault's span, on the same
/// GPU, and covers the faulting page. Returns the arrows drawn.
fn flows(slices: &[Slice], ev: &mut Vec<Value>) -> u64 {
    // By start time, per GPU; CPU-fault migrations on every GPU together.
    let mut migs: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut cpu_migs: Vec<usize> = Vec::new();
    let mut maps: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut stalls: BTreeMap<(u32, u64), Vec<usize>> = BTreeMap::new();
    for (i, s) in slices.iter().enumerate() {
        match s.role {
            Role::Migration {
                gpu,
                trigger: Some(MigrateTrigger::PagefaultGpu),
                ..
            } => migs.entry(gpu).or_default().push(i),
            Role::Migration {
                trigger: Some(MigrateTrigger::PagefaultCpu),
                ..
            } => cpu_migs.push(i),
            Role::Map { gpu, .. } => maps.entry(gpu).or_default().push(i),
            Role::Stall { gpu, page, .. } => stalls.entry((gpu, page)).or_default().push(i),
            _ => {}
        }
    }
    let by_start = |l: &mut Vec<usize>| l.sort_by_key(|&i| (slices[i].start, i));
    migs.values_mut().for_each(by_start);
    maps.values_mut().for_each(by_start);
    by_start(&mut cpu_migs);
    let covers = |s: &Slice, page: u64| match s.role {
        Role::Migration {
            page: p, npages, ..
        }
        | Role::Map {
            page: p, npages, ..
        } => (p..p.saturating_add(npages)).contains(&page),
        _ => false,
    };
    // The steps in `list` that start within `f` and cover `page`.
    let within = |list: Option<&Vec<usize>>, f: &Slice, page: u64| -> Vec<usize> {
        let Some(list) = list else {
            return Vec::new();
        };
        let from = list.partition_point(|&i| slices[i].start < f.start);
        list[from..]
            .iter()
            .take_while(|&&i| slices[i].start <= f.end)
            .copied()
            .filter(|&i| covers(&slices[i], page))
            .collect()
    };
    let mut id: u64 = 0;
    let mut arrow = |ev: &mut Vec<Value>, a: &Slice, b: &Slice, name: &str| {
        id += 1;
        let ts = a.start;
        ev.push(json!({"ph": "s", "id": id, "name": name, "cat": "cause",
                       "pid": a.pid, "tid": a.tid, "ts": us(ts)}));
        ev.push(
            json!({"ph": "f", "bp": "e", "id": id, "name": name, "cat": "cause",
                       "pid": b.pid, "tid": b.tid, "ts": us(ts.clamp(b.start, b.end))}),
        );
    };
    for f in slices {
        match f.role {
            Role::Fault { gpu, page } => {
                let ms = within(migs.get(&gpu), f, page);
                for &m in &ms {
                    arrow(ev, f, &slices[m], "fault → migration");
                }
                let mut last = ms.last().map_or(f, |&m| &slices[m]);
                let mapped = within(maps.get(&gpu), f, page);
                for &m in &mapped {
                    arrow(ev, last, &slices[m], "→ page-table update");
                }
                if let Some(&m) = mapped.last() {
                    last = &slices[m];
                }
                // The waves it woke: parked on the page before the fault
                // ended, woken as it ended.
                for &w in stalls.get(&(gpu, page)).map_or(&[][..], Vec::as_slice) {
                    let st = &slices[w];
                    if st.start <= f.end && st.end == f.end {
                        arrow(ev, last, st, "→ wave woken");
                    }
                }
            }
            Role::CpuFault { page } => {
                for m in within(Some(&cpu_migs), f, page) {
                    arrow(ev, f, &slices[m], "CPU fault → migration");
                }
            }
            _ => {}
        }
    }
    id
}

/// Checks that `v` is a trace-event document this module could have
/// written: a `traceEvents` array whose events each have a known phase,
/// the fields that phase needs, and numeric times; the spans of each
/// track nest (none overlaps another partly, which Perfetto would draw
/// wrongly); and every flow has one start and one end, each inside a span
/// of its track. Used by the tests and by `svmsim` itself before writing.
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
            "s" | "f" => &["name", "id", "pid", "tid", "ts"],
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
    structure(list)?;
    Ok(list.len())
}

/// The nesting and flow rules of [`validate`], times in whole ns.
fn structure(list: &[Value]) -> Result<(), String> {
    let ns = |e: &Value, f: &str| -> u64 {
        // The times were checked finite and non-negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let t = (e.get(f).and_then(Value::as_f64).unwrap_or(0.0) * 1000.0).round() as u64;
        t
    };
    let track = |e: &Value| {
        (
            e.get("pid").and_then(Value::as_u64).unwrap_or(0),
            e.get("tid").and_then(Value::as_u64).unwrap_or(0),
        )
    };
    // Per (pid, tid): each span's start and end, and its event index.
    type Spans = Vec<(u64, u64, usize)>;
    let mut spans: BTreeMap<(u64, u64), Spans> = BTreeMap::new();
    for (i, e) in list.iter().enumerate() {
        if e["ph"] == "X" {
            let s = ns(e, "ts");
            spans
                .entry(track(e))
                .or_default()
                .push((s, s + ns(e, "dur"), i));
        }
    }
    for l in spans.values_mut() {
        l.sort_by_key(|&(s, e, i)| (s, std::cmp::Reverse(e), i));
        let mut open: Vec<(u64, usize)> = Vec::new();
        for &(s, e, i) in l.iter() {
            while open.last().is_some_and(|&(end, _)| end <= s) {
                open.pop();
            }
            if let Some(&(end, j)) = open.last()
                && e > end
            {
                return Err(format!(
                    "event {i} overlaps event {j} on its track without nesting in it"
                ));
            }
            open.push((e, i));
        }
    }
    // A flow bound inside some span is inside a top-level one: those are
    // disjoint and sorted, so a binary search finds it.
    let tops: BTreeMap<(u64, u64), Vec<(u64, u64)>> = spans
        .iter()
        .map(|(k, l)| {
            let mut top: Vec<(u64, u64)> = Vec::new();
            for &(s, e, _) in l {
                if top.last().is_none_or(|&(_, end)| s >= end) {
                    top.push((s, e));
                }
            }
            (*k, top)
        })
        .collect();
    let mut flows: BTreeMap<u64, [u32; 2]> = BTreeMap::new();
    for (i, e) in list.iter().enumerate() {
        let end = match e["ph"].as_str() {
            Some("s") => 0,
            Some("f") => 1,
            _ => continue,
        };
        let id = e["id"]
            .as_u64()
            .ok_or(format!("event {i}: a flow id that is not a number"))?;
        flows.entry(id).or_default()[end] += 1;
        let t = ns(e, "ts");
        let inside = tops.get(&track(e)).is_some_and(|l| {
            let k = l.partition_point(|&(s, _)| s <= t);
            k > 0 && t <= l[k - 1].1
        });
        if !inside {
            return Err(format!(
                "event {i}: flow {id} is bound to no span of its track"
            ));
        }
    }
    if let Some((id, n)) = flows.iter().find(|(_, n)| **n != [1, 1]) {
        return Err(format!(
            "flow {id} has {} start(s) and {} end(s), not one of each",
            n[0], n[1]
        ));
    }
    Ok(())
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
                // Flow ids are per run: run k's get k in their top bits.
                if let Some(id) = e.get("id").and_then(Value::as_u64) {
                    e["id"] = json!(id | (off / 100) << 40);
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
            "schema": "svmsim.timeline/2",
            "runs": outs.iter().map(|o| o.label.clone()).collect::<Vec<_>>(),
            "repro": outs.iter().map(|o| o.spec.repro()).collect::<Vec<_>>(),
            "clock": "simulated",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(track: u32, start: u64, end: u64) -> Slice {
        Slice::new(1, track, "s", (start, end))
    }

    #[test]
    fn lanes_keep_each_track_in_order_and_nest_only_migrations() {
        // Two waves at once take two lanes; a third after them reuses the
        // first. A migration within a migration nests on its lane.
        let mut s = vec![
            slice(LANES, 0, 10),
            slice(LANES, 0, 5),
            slice(LANES, 10, 12),
            slice(MIGRATIONS, 0, 10),
            slice(MIGRATIONS, 2, 4),
            slice(MIGRATIONS, 5, 20),
        ];
        let lanes = place(&mut s);
        let tids: Vec<u32> = s.iter().map(|x| x.tid).collect();
        assert_eq!(
            tids,
            [
                LANES,
                LANES + SUBLANE,
                LANES,
                MIGRATIONS,
                MIGRATIONS,
                MIGRATIONS + SUBLANE
            ]
        );
        assert_eq!(lanes[&(1, LANES)], 2);
        assert_eq!(lanes[&(1, MIGRATIONS)], 2);
    }

    #[test]
    fn a_busy_counter_is_merged_into_buckets_that_keep_their_peak() {
        let few = open_count(vec![(0, 1), (5, 1), (5, -1), (9, -1)]);
        assert_eq!(few, [(0, 1), (5, 1), (9, 0)]);
        let mut edges = Vec::new();
        for i in 0..10_000u64 {
            edges.push((i * 10, 1));
            edges.push((i * 10 + 3, -1));
        }
        edges.push((50_000, 1));
        edges.push((50_001, 1));
        edges.push((50_002, -1));
        edges.push((50_004, -1));
        let many = open_count(edges);
        assert!(many.len() <= COUNTER_POINTS, "{}", many.len());
        // The two overlapping intervals near 50 us (three open at once,
        // with a wave of the regular ones) still show as the peak.
        assert_eq!(many.iter().map(|p| p.1).max(), Some(3));
    }

    #[test]
    fn the_validator_wants_nested_spans_and_whole_flows() {
        let x = |tid: u32, ts: f64, dur: f64| json!({"ph": "X", "name": "a", "pid": 1, "tid": tid, "ts": ts, "dur": dur});
        let flow = |ph: &str, tid: u32, ts: f64| json!({"ph": ph, "name": "c", "id": 7, "pid": 1, "tid": tid, "ts": ts, "bp": "e"});
        let doc = |list: Vec<Value>| json!({ "traceEvents": list });
        assert!(validate(&doc(vec![x(1, 0.0, 10.0), x(1, 2.0, 3.0), x(1, 10.0, 1.0)])).is_ok());
        let e = validate(&doc(vec![x(1, 0.0, 10.0), x(1, 5.0, 10.0)])).unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        let whole = vec![
            x(1, 0.0, 2.0),
            x(2, 3.0, 2.0),
            flow("s", 1, 1.0),
            flow("f", 2, 4.0),
        ];
        assert!(validate(&doc(whole)).is_ok());
        let e = validate(&doc(vec![x(1, 0.0, 2.0), flow("s", 1, 1.0)])).unwrap_err();
        assert!(e.contains("not one of each"), "{e}");
        let e = validate(&doc(vec![
            x(1, 0.0, 2.0),
            flow("s", 1, 1.0),
            flow("f", 2, 4.0),
        ]))
        .unwrap_err();
        assert!(e.contains("bound to no span"), "{e}");
    }
}

//! A set of runs as the user sees it: the terminal table, and the
//! versioned JSON and CSV forms (schema `svmsim.runs/3`, documented in
//! `docs/runs-json.md`).

use comfy_table::{Cell, CellAlignment, Color, Table, presets};
use serde::Serialize;

use crate::exec::{Outcome, RunSpec, Status};
use crate::size;

/// The schema name and version of `--json` and `--csv` output.
pub const SCHEMA: &str = "svmsim.runs/3";

/// Simulated ns as a short time.
pub fn time(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// Names for runs shown together: the policy, plus every other setting
/// that differs between them (a sweep over sizes names the size).
pub fn labels(specs: &[RunSpec]) -> Vec<String> {
    type Field = fn(&RunSpec) -> String;
    let fields: [Field; 11] = [
        |s| s.workload.clone(),
        |s| size::show(s.size),
        |s| format!("{} iters", s.iters),
        |s| s.profile.clone(),
        |s| s.gpus.map_or(String::new(), |g| format!("{g} GPUs")),
        |s| {
            s.vram
                .map_or(String::new(), |v| format!("VRAM {}", size::show(v)))
        },
        |s| {
            s.oversubscribe
                .map_or(String::new(), |f| format!("{:.0}%", f * 100.0))
        },
        |s| s.granularity.map_or(String::new(), |g| format!("g{g}")),
        |s| {
            if s.xnack {
                String::new()
            } else {
                "xnack-off".into()
            }
        },
        |s| {
            if s.prefetch {
                "prefetch".into()
            } else {
                String::new()
            }
        },
        |s| format!("seed {}", s.seed),
    ];
    if specs.len() <= 1 {
        return specs.iter().map(RunSpec::label).collect();
    }
    let varying: Vec<&Field> = fields
        .iter()
        .filter(|f| specs.iter().any(|s| f(s) != f(&specs[0])))
        .collect();
    let drivers_vary = specs
        .iter()
        .any(|s| s.config.driver != specs[0].config.driver);
    specs
        .iter()
        .map(|s| {
            let mut parts = Vec::new();
            if drivers_vary {
                parts.push(s.config.driver.name().to_owned());
            }
            parts.push(s.policy().to_owned());
            parts.extend(varying.iter().map(|f| f(s)).filter(|x| !x.is_empty()));
            parts.join(" ")
        })
        .collect()
}

/// A setting that differs between runs shown together: its name, and each
/// run's value as text and, when it is a number, as that number.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The setting (`size`, `policy`, a configuration key).
    pub name: String,
    /// Each run's value.
    pub values: Vec<(String, Option<f64>)>,
}

impl Axis {
    /// Whether every value is a number (the axis can be drawn to scale).
    pub fn numeric(&self) -> bool {
        self.values.iter().all(|v| v.1.is_some())
    }
}

/// The settings that differ between `specs` (what a sweep's grid varies,
/// found again from the runs, so merged shards have them too).
pub fn axes(specs: &[RunSpec]) -> Vec<Axis> {
    type Field = (&'static str, fn(&RunSpec) -> (String, Option<f64>));
    let fields: [Field; 12] = [
        ("workload", |s| (s.workload.clone(), None)),
        ("policy", |s| (s.policy().to_owned(), None)),
        ("size", |s| (size::show(s.size), Some(s.size as f64))),
        ("iters", |s| (s.iters.to_string(), Some(f64::from(s.iters)))),
        ("profile", |s| (s.profile.clone(), None)),
        ("gpus", |s| {
            s.gpus.map_or(("profile's".into(), None), |g| {
                (g.to_string(), Some(g as f64))
            })
        }),
        ("vram", |s| {
            s.vram.map_or(("profile's".into(), None), |v| {
                (size::show(v), Some(v as f64))
            })
        }),
        ("oversubscribe", |s| {
            s.oversubscribe.map_or(("none".into(), None), |f| {
                (format!("{:.0}%", f * 100.0), Some(f))
            })
        }),
        ("granularity", |s| {
            s.granularity.map_or(("workload's".into(), None), |g| {
                (g.to_string(), Some(f64::from(g)))
            })
        }),
        ("xnack", |s| {
            (if s.xnack { "on" } else { "off" }.into(), None)
        }),
        ("prefetch", |s| {
            (if s.prefetch { "on" } else { "off" }.into(), None)
        }),
        ("seed", |s| (s.seed.to_string(), Some(s.seed as f64))),
    ];
    let mut out: Vec<Axis> = Vec::new();
    for (name, f) in fields {
        let values: Vec<(String, Option<f64>)> = specs.iter().map(f).collect();
        if values.iter().any(|v| v.0 != values[0].0) {
            out.push(Axis {
                name: name.into(),
                values,
            });
        }
    }
    // Configuration keys (`--set`, a sweep's knobs), each its own axis.
    let changes: Vec<Vec<(String, String)>> = specs
        .iter()
        .map(|s| {
            s.config_changes()
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect()
        })
        .collect();
    let mut keys: Vec<&String> = changes.iter().flatten().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if out.iter().any(|a| &a.name == key) {
            continue;
        }
        let values: Vec<(String, Option<f64>)> = changes
            .iter()
            .map(|c| {
                let v = c
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or_else(|| "default".to_owned(), |(_, v)| v.clone());
                let n = v.parse::<f64>().ok().filter(|x| x.is_finite());
                (v, n)
            })
            .collect();
        if values.iter().any(|v| v.0 != values[0].0) {
            out.push(Axis {
                name: key.clone(),
                values,
            });
        }
    }
    out
}

/// Sets each outcome's label from [`labels`].
pub fn relabel(outs: &mut [Outcome]) {
    let specs: Vec<RunSpec> = outs.iter().map(|o| o.spec.clone()).collect();
    for (o, l) in outs.iter_mut().zip(labels(&specs)) {
        o.label = l;
    }
}

/// `x / base` of kernel time, as `1.00x` (`-` without a base).
pub fn ratio(x: u64, base: u64) -> String {
    if base == 0 {
        return "-".into();
    }
    show_ratio(x as f64 / base as f64)
}

/// A ratio as `1.00x`; below 0.1, with three decimals (`0.004x`), so a
/// run 250 times faster does not read `0.00x`.
pub fn show_ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}x")
    } else {
        format!("{r:.2}x")
    }
}

fn status_text(s: &Status) -> String {
    match s {
        Status::Ok => "ok".into(),
        Status::Mismatch => "MISMATCH".into(),
        Status::Unchecked => "ok, unchecked".into(),
        Status::Killed { .. } => "killed".into(),
    }
}

/// A column of the comparison table: its header and its cell for a run
/// (given the baseline's kernel time).
type Column = (&'static str, fn(&Outcome, u64) -> Cell);

/// The table's columns, in order.
const COLUMNS: [Column; 10] = [
    ("status", |o, _| {
        Cell::new(status_text(&o.status)).fg(match o.status {
            Status::Ok => Color::Green,
            _ => Color::Red,
        })
    }),
    ("kernel time", |o, _| right(time(o.metrics.kernel_ns))),
    ("vs base", |o, base| right(ratio(o.metrics.kernel_ns, base))),
    ("first result", |o, _| {
        right(time(o.metrics.first_result_ns))
    }),
    ("faults", |o, _| right(o.metrics.faults.to_string())),
    ("migrated", |o, _| {
        right(size::human(o.metrics.migrated_bytes))
    }),
    ("fault p50", |o, _| right(time(o.metrics.fault_p50_ns))),
    ("fault p99", |o, _| right(time(o.metrics.fault_p99_ns))),
    ("lock wait", |o, _| {
        right(time(
            o.metrics.svms_lock_wait_ns + o.metrics.migrate_lock_wait_ns,
        ))
    }),
    ("stale DMA", |o, _| {
        let stale: u64 = o.gpu_end.iter().map(|g| g.stale_dma_pages).sum();
        right(format!("{stale} pages"))
    }),
];

/// The columns a narrow terminal loses first, one at a time: the
/// configuration, status, kernel time and faults always stay.
const DROP_ORDER: [&str; 6] = [
    "stale DMA",
    "first result",
    "fault p99",
    "lock wait",
    "fault p50",
    "vs base",
];

/// Characters of `line` a terminal shows (colour escapes take none).
fn visible(line: &str) -> usize {
    let mut n = 0;
    let mut esc = false;
    for c in line.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

/// The comparison table; `baseline` indexes the run the ratios divide by.
pub fn table(runs: &[Outcome], baseline: usize) -> Table {
    table_of(runs, baseline, &[])
}

fn table_of(runs: &[Outcome], baseline: usize, dropped: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    // The NO_COLOR convention (no-color.org): any value turns colour off.
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        t.force_no_tty();
    }
    let cols: Vec<&Column> = COLUMNS.iter().filter(|c| !dropped.contains(&c.0)).collect();
    let mut header = vec!["config"];
    header.extend(cols.iter().map(|c| c.0));
    t.set_header(header);
    let base = runs.get(baseline).map_or(0, |o| o.metrics.kernel_ns);
    for (i, o) in runs.iter().enumerate() {
        let mut label = o.label.clone();
        if i == baseline && runs.len() > 1 {
            label += " (base)";
        }
        let mut row = vec![Cell::new(label)];
        row.extend(cols.iter().map(|c| (c.1)(o, base)));
        t.add_row(row);
    }
    t
}

/// [`table`] fitted to `width` columns (a terminal's): whole cells,
/// never cut, with the columns of [`DROP_ORDER`] left out one by one
/// until it fits. Returns the table and the columns left out. Without a
/// width (output piped) it is the whole table, the same bytes every time.
pub fn table_fitted(
    runs: &[Outcome],
    baseline: usize,
    width: Option<usize>,
) -> (Table, Vec<&'static str>) {
    let mut dropped: Vec<&'static str> = Vec::new();
    loop {
        let t = table_of(runs, baseline, &dropped);
        let fits = width.is_none_or(|w| t.to_string().lines().all(|l| visible(l) <= w));
        match DROP_ORDER.get(dropped.len()) {
            Some(next) if !fits => dropped.push(next),
            _ => return (t, dropped),
        }
    }
}

/// One run in the JSON document.
#[derive(Debug, Serialize)]
struct JsonRun<'a> {
    label: String,
    #[serde(flatten)]
    outcome: &'a Outcome,
    /// `--explain on`: the explanation's lines (`crate::explain::run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    what_happened: Option<Vec<String>>,
    kernel_time_ratio: Option<f64>,
    repro: String,
}

/// The JSON document of a set of runs (serialized as it is, its keys in
/// the order of the structs' fields: the schema first, each run's label
/// before its numbers).
#[derive(Debug, Serialize)]
pub struct RunsJson<'a> {
    schema: &'static str,
    baseline: Option<String>,
    runs: Vec<JsonRun<'a>>,
}

/// The JSON document of a set of runs.
pub fn json(runs: &[Outcome], baseline: usize) -> RunsJson<'_> {
    let base = runs.get(baseline).map_or(0, |o| o.metrics.kernel_ns);
    let list: Vec<JsonRun<'_>> = runs
        .iter()
        .map(|o| JsonRun {
            label: o.label.clone(),
            outcome: o,
            what_happened: None,
            kernel_time_ratio: (base > 0).then(|| o.metrics.kernel_ns as f64 / base as f64),
            repro: o.spec.repro(),
        })
        .collect();
    RunsJson {
        schema: SCHEMA,
        baseline: runs.get(baseline).map(|o| o.label.clone()),
        runs: list,
    }
}

impl RunsJson<'_> {
    /// The document with each run's explanation (`--explain on`).
    #[must_use]
    pub fn explained(mut self) -> Self {
        for r in &mut self.runs {
            r.what_happened = Some(crate::explain::run(r.outcome));
        }
        self
    }
}

/// The CSV columns before the metrics, in order.
pub const CSV_HEAD: [&str; 14] = [
    "schema",
    "label",
    "workload",
    "size",
    "iters",
    "profile",
    "gpus",
    "policy",
    "granularity",
    "xnack",
    "oversubscribe",
    "seed",
    "status",
    "kernel_time_ratio",
];

/// The CSV columns after the metrics.
pub const CSV_TAIL: [&str; 2] = ["stale_dma_pages", "invariants"];

/// Every CSV column, in order: the spec and status, every metric of the
/// JSON's `metrics` under the same name ([`crate::exec::Metrics::COLUMNS`],
/// the one list of them), then the end state.
pub fn csv_columns() -> Vec<&'static str> {
    CSV_HEAD
        .iter()
        .chain(crate::exec::Metrics::COLUMNS)
        .chain(&CSV_TAIL)
        .copied()
        .collect()
}

/// The CSV form: a header row, then a row per run.
pub fn csv(runs: &[Outcome], baseline: usize) -> String {
    let base = runs.get(baseline).map_or(0, |o| o.metrics.kernel_ns);
    // Written in memory: a write cannot fail, and quoting is the crate's.
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(csv_columns())
        .expect("writing CSV to memory");
    for o in runs {
        let s = &o.spec;
        let m = &o.metrics;
        let opt = |v: Option<String>| v.unwrap_or_default();
        let mut row = vec![
            SCHEMA.to_string(),
            o.label.clone(),
            s.workload.clone(),
            s.size.to_string(),
            s.iters.to_string(),
            s.profile.clone(),
            o.gpus.to_string(),
            s.policy().to_owned(),
            opt(s.granularity.map(|g| g.to_string())),
            if s.xnack { "on" } else { "off" }.to_owned(),
            opt(s.oversubscribe.map(|f| f.to_string())),
            s.seed.to_string(),
            match &o.status {
                Status::Killed { error } => format!("killed: {error}"),
                st => status_text(st),
            },
            if base > 0 {
                format!("{:.4}", m.kernel_ns as f64 / base as f64)
            } else {
                String::new()
            },
        ];
        row.extend(m.values().iter().map(u64::to_string));
        row.push(
            o.gpu_end
                .iter()
                .map(|g| g.stale_dma_pages)
                .sum::<u64>()
                .to_string(),
        );
        row.push(o.violation.clone().unwrap_or_else(|| "held".into()));
        w.write_record(&row).expect("writing CSV to memory");
    }
    let bytes = w.into_inner().expect("flushing CSV to memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrow_terminal_loses_whole_columns_in_order_never_cut_cells() {
        let spec = crate::exec::RunSpec {
            workload: "stream".into(),
            size: 1 << 20,
            iters: 1,
            ..crate::exec::RunSpec::default()
        };
        let o = crate::exec::run(&spec, crate::exec::Capture::default()).unwrap();
        let outs = [o.clone(), o];
        let (whole, dropped) = table_fitted(&outs, 0, None);
        assert!(dropped.is_empty());
        let whole = whole.to_string();
        let width = whole.lines().map(visible).max().unwrap();
        assert!(whole.contains("stale DMA") && whole.contains("first result"));
        // Two columns too narrow: the first of the drop order go, the
        // rest of the table is as it was.
        let (t, dropped) = table_fitted(&outs, 0, Some(width - 20));
        assert_eq!(dropped, DROP_ORDER[..dropped.len()]);
        assert!(!dropped.is_empty());
        let t = t.to_string();
        assert!(t.lines().all(|l| visible(l) <= width - 20), "{t}");
        assert!(t.contains("kernel time") && !t.contains("stale DMA"));
        // Far too narrow: every droppable column goes, the core stays.
        let (t, dropped) = table_fitted(&outs, 0, Some(10));
        assert_eq!(dropped, DROP_ORDER);
        let t = t.to_string();
        for core in ["config", "status", "kernel time", "faults", "migrated"] {
            assert!(t.contains(core), "{core}: {t}");
        }
        assert_eq!(visible("\x1b[32mok\x1b[0m"), 2);
    }
}

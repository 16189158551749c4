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
    // Other knobs a run sets apart from its driver's defaults, where the
    // runs differ in them (a sweep over `victim_policy` or `inject`), as
    // `key=value`; driver and policy are named above, and the knobs a
    // driver's defaults change come with its name.
    let changed: Vec<std::collections::BTreeMap<String, String>> = specs
        .iter()
        .map(|s| {
            s.config
                .changes()
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect()
        })
        .collect();
    let own = |k: &svm_core::config::Knob, i: usize| changed[i].get(k.key);
    let knobs: Vec<&svm_core::config::Knob> = svm_core::config::KNOBS
        .iter()
        .filter(|k| !matches!(k.key, "driver" | "policy"))
        .filter(|k| (0..specs.len()).any(|i| own(k, i) != own(k, 0)))
        .collect();
    specs
        .iter()
        .map(|s| {
            let mut parts = Vec::new();
            // A driver's own policy has the driver's name: said once
            // (`uvm`, not `uvm uvm`).
            let driver = s.config.driver.name();
            if drivers_vary {
                parts.push(driver.to_owned());
            }
            if !(drivers_vary && s.policy() == driver) {
                parts.push(s.policy().to_owned());
            }
            parts.extend(varying.iter().map(|f| f(s)).filter(|x| !x.is_empty()));
            parts.extend(knobs.iter().map(|k| match k.get(&s.config) {
                v if v.is_empty() => format!("no {}", k.key),
                v => format!("{}={v}", k.key),
            }));
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

/// The table's own columns, in order, each with the key `--columns`
/// names it by: the JSON's and CSV's name for what it shows, or, for
/// `lock_wait`, which adds two of them, a name of its own.
const KEYS: [&str; 10] = [
    "status",
    "kernel_ns",
    "kernel_time_ratio",
    "first_result_ns",
    "faults",
    "migrated_bytes",
    "fault_p50_ns",
    "fault_p99_ns",
    "lock_wait",
    "stale_dma_pages",
];

/// The table's own columns, in the order of [`KEYS`]: the default table.
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

/// A column a table can show: one of its own ([`COLUMNS`]), or any
/// metric of the JSON and CSV ([`crate::exec::Metrics::COLUMNS`]), shown
/// under its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    /// `COLUMNS[i]`.
    Own(usize),
    /// `Metrics::COLUMNS[i]`.
    Metric(usize),
}

impl Col {
    /// The name `--columns` knows it by.
    pub fn key(self) -> &'static str {
        match self {
            Col::Own(i) => KEYS[i],
            Col::Metric(i) => crate::exec::Metrics::COLUMNS[i],
        }
    }

    fn header(self) -> &'static str {
        match self {
            Col::Own(i) => COLUMNS[i].0,
            Col::Metric(i) => crate::exec::Metrics::COLUMNS[i],
        }
    }

    fn cell(self, o: &Outcome, base: u64) -> Cell {
        match self {
            Col::Own(i) => (COLUMNS[i].1)(o, base),
            Col::Metric(i) => {
                let key = crate::exec::Metrics::COLUMNS[i];
                let v = o.metrics.values()[i];
                right(metric_text(key, v))
            }
        }
    }
}

/// A metric's value as the table shows it, by what its name says it
/// counts: a time, bytes, or a plain count.
fn metric_text(key: &str, v: u64) -> String {
    if key.ends_with("_ns") {
        time(v)
    } else if key.ends_with("_bytes") || key.starts_with("bytes_") {
        size::human(v)
    } else {
        v.to_string()
    }
}

/// The default table's columns.
pub fn default_columns() -> Vec<Col> {
    (0..COLUMNS.len()).map(Col::Own).collect()
}

/// The columns `--columns` names: keys (the table's own, [`KEYS`], and
/// every metric's), separated by commas; `all` for the table's own then
/// every other metric; a list with a key that starts with `+` adds its
/// keys to the default table. An unknown key is an error that lists every key.
pub fn parse_columns(list: &str) -> Result<Vec<Col>, String> {
    let metrics = crate::exec::Metrics::COLUMNS;
    let find = |key: &str| -> Option<Col> {
        KEYS.iter()
            .position(|k| *k == key)
            .map(Col::Own)
            .or_else(|| metrics.iter().position(|k| *k == key).map(Col::Metric))
    };
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(format!("an empty column name in {list:?}"));
    }
    if items == ["all"] {
        let mut cols = default_columns();
        cols.extend(
            metrics
                .iter()
                .enumerate()
                .filter(|(_, k)| !KEYS.contains(k))
                .map(|(i, _)| Col::Metric(i)),
        );
        return Ok(cols);
    }
    let adding = items.iter().any(|i| i.starts_with('+'));
    let mut cols = if adding {
        default_columns()
    } else {
        Vec::new()
    };
    for item in items {
        let key = item.strip_prefix('+').unwrap_or(item);
        let col = find(key).ok_or_else(|| {
            let mut known: Vec<&str> = KEYS.to_vec();
            known.extend(metrics.iter().filter(|k| !KEYS.contains(k)));
            known.push("all");
            format!("no column {key:?}: {}", crate::exec::suggest(key, known))
        })?;
        if !cols.contains(&col) {
            cols.push(col);
        }
    }
    Ok(cols)
}

/// The comparison table; `baseline` indexes the run the ratios divide by.
pub fn table(runs: &[Outcome], baseline: usize) -> Table {
    table_of(runs, baseline, &default_columns())
}

/// A table in this house's style.
fn new_table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    // The NO_COLOR convention (no-color.org): any value turns colour off.
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        t.force_no_tty();
    }
    t
}

/// Each run's label, the baseline's marked when there are several.
fn row_labels(runs: &[Outcome], baseline: usize) -> Vec<String> {
    runs.iter()
        .enumerate()
        .map(|(i, o)| {
            if i == baseline && runs.len() > 1 {
                format!("{} (base)", o.label)
            } else {
                o.label.clone()
            }
        })
        .collect()
}

fn table_of(runs: &[Outcome], baseline: usize, cols: &[Col]) -> Table {
    let mut t = new_table();
    let mut header = vec!["config"];
    header.extend(cols.iter().map(|c| c.header()));
    t.set_header(header);
    let base = runs.get(baseline).map_or(0, |o| o.metrics.kernel_ns);
    for (o, label) in runs.iter().zip(row_labels(runs, baseline)) {
        let mut row = vec![Cell::new(label)];
        row.extend(cols.iter().map(|c| c.cell(o, base)));
        t.add_row(row);
    }
    t
}

/// The table turned on its side: a row per column, a column per run, for
/// a choice of columns too many to read across.
fn table_transposed(runs: &[Outcome], baseline: usize, cols: &[Col]) -> Table {
    let mut t = new_table();
    let mut header = vec!["column".to_owned()];
    header.extend(row_labels(runs, baseline));
    t.set_header(header);
    let base = runs.get(baseline).map_or(0, |o| o.metrics.kernel_ns);
    for c in cols {
        let mut row = vec![Cell::new(c.header())];
        row.extend(runs.iter().map(|o| c.cell(o, base)));
        t.add_row(row);
    }
    t
}

/// Columns past which a table of chosen columns is printed on its side
/// when there is no terminal to measure (piped: the same bytes every
/// time).
const MAX_ACROSS: usize = 12;

/// The table for `width` columns (a terminal's), and the columns left
/// out. The default table ([`default_columns`]) loses the columns of
/// [`DROP_ORDER`] one by one until it fits, whole cells, never cut. A
/// table of chosen columns (`--columns`) keeps them all and is turned on
/// its side when it does not fit, or, piped, past [`MAX_ACROSS`]
/// columns. Without a width (output piped) it is the same bytes every
/// time.
pub fn table_fitted(
    runs: &[Outcome],
    baseline: usize,
    cols: &[Col],
    width: Option<usize>,
) -> (Table, Vec<&'static str>) {
    let fits = |t: &Table| width.is_none_or(|w| t.to_string().lines().all(|l| visible(l) <= w));
    if cols != default_columns() {
        let t = table_of(runs, baseline, cols);
        let across = match width {
            Some(_) => fits(&t),
            None => cols.len() <= MAX_ACROSS,
        };
        if across {
            return (t, Vec::new());
        }
        return (table_transposed(runs, baseline, cols), Vec::new());
    }
    let mut dropped: Vec<&'static str> = Vec::new();
    loop {
        let kept: Vec<Col> = cols
            .iter()
            .copied()
            .filter(|c| !dropped.contains(&c.header()))
            .collect();
        let t = table_of(runs, baseline, &kept);
        match DROP_ORDER.get(dropped.len()) {
            Some(next) if !fits(&t) => dropped.push(next),
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

/// The per-kernel CSV's columns: the run's label, the kernel and its GPU,
/// then every field of `svm_sim::machine::KernelStats` under its name and
/// in its order (the JSON's `kernels`).
pub fn kernel_csv_columns() -> Vec<&'static str> {
    let mut v = vec!["schema", "label", "kernel", "node", "gpu_id", "failed"];
    v.extend(crate::probe::names::<svm_sim::machine::KernelStats>());
    v
}

/// The per-kernel CSV (`--kernels-csv`): a header row, then a row per
/// kernel of each run, in launch order (the kernels the JSON lists, at
/// most [`crate::exec::MAX_KERNELS`] a run).
pub fn kernels_csv(runs: &[Outcome]) -> String {
    let columns = kernel_csv_columns();
    let stats = &columns[6..];
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(&columns).expect("writing CSV to memory");
    for o in runs {
        for k in &o.kernels {
            let values = serde_json::to_value(k.stats).unwrap_or_default();
            let mut row = vec![
                SCHEMA.to_string(),
                o.label.clone(),
                k.kernel.to_string(),
                k.node.map(|n| n.to_string()).unwrap_or_default(),
                k.gpu_id.to_string(),
                k.failed.to_string(),
            ];
            row.extend(stats.iter().map(|f| values[*f].to_string()));
            w.write_record(&row).expect("writing CSV to memory");
        }
    }
    let bytes = w.into_inner().expect("flushing CSV to memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short run to draw tables of.
    fn stream_1mib() -> Outcome {
        let spec = crate::exec::RunSpec {
            workload: "stream".into(),
            size: 1 << 20,
            iters: 1,
            ..crate::exec::RunSpec::default()
        };
        crate::exec::run(&spec, crate::exec::Capture::default()).unwrap()
    }

    #[test]
    fn a_narrow_terminal_loses_whole_columns_in_order_never_cut_cells() {
        let o = stream_1mib();
        let outs = [o.clone(), o];
        let all = default_columns();
        let (whole, dropped) = table_fitted(&outs, 0, &all, None);
        assert!(dropped.is_empty());
        let whole = whole.to_string();
        let width = whole.lines().map(visible).max().unwrap();
        assert!(whole.contains("stale DMA") && whole.contains("first result"));
        // Two columns too narrow: the first of the drop order go, the
        // rest of the table is as it was.
        let (t, dropped) = table_fitted(&outs, 0, &all, Some(width - 20));
        assert_eq!(dropped, DROP_ORDER[..dropped.len()]);
        assert!(!dropped.is_empty());
        let t = t.to_string();
        assert!(t.lines().all(|l| visible(l) <= width - 20), "{t}");
        assert!(t.contains("kernel time") && !t.contains("stale DMA"));
        // Far too narrow: every droppable column goes, the core stays.
        let (t, dropped) = table_fitted(&outs, 0, &all, Some(10));
        assert_eq!(dropped, DROP_ORDER);
        let t = t.to_string();
        for core in ["config", "status", "kernel time", "faults", "migrated"] {
            assert!(t.contains(core), "{core}: {t}");
        }
        assert_eq!(visible("\x1b[32mok\x1b[0m"), 2);
    }

    /// The columns docs/runs-json.md lists are the ones written.
    #[test]
    fn labels_name_the_knobs_that_set_runs_apart_and_not_a_drivers_defaults() {
        let spec = |kv: &[&str]| {
            let mut s = RunSpec::default();
            for x in kv {
                s.config.assign(x).unwrap();
            }
            s
        };
        let l = labels(&[spec(&[]), spec(&["victim_policy=largest"])]);
        assert_eq!(l[1], "partial victim_policy=largest");
        assert_eq!(l[0], "partial victim_policy=lru");
        let l = labels(&[spec(&[]), spec(&["inject=dma_map@1"])]);
        assert_eq!(l, ["partial no inject", "partial inject=dma_map@1"]);
        // uvm's own victim policy and retry window come with its name.
        let l = labels(&[spec(&[]), spec(&["driver=uvm"])]);
        assert_eq!(l, ["kfd partial", "uvm"]);
    }

    #[test]
    fn the_documented_csv_headers_are_the_written_ones() {
        let doc = include_str!("../../../docs/runs-json.md");
        let line = |first: &str| {
            doc.lines()
                .find(|l| l.starts_with(first))
                .unwrap_or_else(|| panic!("docs/runs-json.md lists no header starting {first}"))
        };
        assert_eq!(line("schema,label,workload,"), csv_columns().join(","));
        assert_eq!(line("schema,label,kernel,"), kernel_csv_columns().join(","));
    }

    #[test]
    fn columns_name_any_metric_and_a_long_choice_turns_on_its_side() {
        let metrics = crate::exec::Metrics::COLUMNS;
        let k = |key: &str| Col::Metric(metrics.iter().position(|m| *m == key).unwrap());
        // A metric by its JSON name; the table's own by their keys, which
        // are the metrics' names where they show one.
        assert_eq!(
            parse_columns("bytes_sys, kernel_ns").unwrap(),
            [k("bytes_sys"), Col::Own(1)]
        );
        // `+` adds to the default table, once each.
        let plus = parse_columns("+faults_served,fault_queued_ns,+faults").unwrap();
        assert_eq!(plus.len(), COLUMNS.len() + 2);
        assert_eq!(
            plus[COLUMNS.len()..],
            [k("faults_served"), k("fault_queued_ns")]
        );
        // `all`: every metric once, the table's own first.
        let all = parse_columns("all").unwrap();
        for m in metrics.iter().chain(&KEYS) {
            assert_eq!(all.iter().filter(|c| c.key() == *m).count(), 1, "{m}");
        }
        // Bad names are refused with the near ones and every key.
        let e = parse_columns("bytes_sis").unwrap_err();
        assert!(
            e.contains("did you mean bytes_sys?") && e.contains("lock_wait"),
            "{e}"
        );
        assert_eq!(e.matches("kernel_ns").count(), 1, "{e}");
        assert!(parse_columns("faults,,status").is_err());
        // Piped, a choice of more than MAX_ACROSS columns prints on its
        // side: a row per column, a column per run.
        let o = stream_1mib();
        let (t, dropped) = table_fitted(std::slice::from_ref(&o), 0, &all, None);
        assert!(dropped.is_empty());
        let t = t.to_string();
        let row = t.lines().find(|l| l.contains("bytes_local")).unwrap();
        assert!(row.contains(&size::human(o.metrics.bytes_local)), "{row}");
        assert_eq!(
            t.lines().filter(|l| l.contains("fault_queued_ns")).count(),
            1
        );
        let few = parse_columns("faults_served,bytes_local").unwrap();
        let (t, _) = table_fitted(std::slice::from_ref(&o), 0, &few, None);
        let t = t.to_string();
        assert!(
            t.lines().next().is_some() && t.contains("faults_served ┆ bytes_local"),
            "{t}"
        );
    }
}

//! Real against simulated: what a real run's SMI messages say its driver
//! did, beside what svmsim did replaying the trace imported from them
//! (`svmsim replay TRACE --against SOURCE`, docs/import.md). Both sides
//! are counted by one function, `svm_workloads::import::tally`: the real
//! run's lines as read, svmsim's own events as the lines `--events` would
//! write.
//!
//! This is the calibration loop. Each row says what to expect of it
//! ([`Expect`]): rows the trace carries must match; rows that are the
//! engine's answer match when the replay runs the real run's driver,
//! granularity and XNACK mode on a machine like the real one; rows of
//! time are what a profile is tuned by; and some rows cannot match,
//! because what caused them is not in the messages.

use serde::{Deserialize, Serialize};
use svm_core::gpu::GpuId;
use svm_workloads::import::{Source, Tally};

use crate::exec::Outcome;

/// What a row should do, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The trace holds the cause (a prefetch, a CPU fault, a munmap): the
    /// replay does it again, so the figures must be equal.
    Carried,
    /// The engine's answer to what the trace holds (faults, the migrations
    /// and unmaps that serve them): equal under the real run's driver,
    /// policy, granularity and XNACK mode, up to retries the real GPU
    /// raised and the trace does not hold.
    Engine,
    /// A time: the profile's costs give it, so the ratio is what a
    /// profile is calibrated by.
    Calibration,
    /// Caused by what the messages do not say (other processes' VRAM, the
    /// kernel's event buffer overflowing): no reason to match.
    Outside,
}

impl Expect {
    /// The word the table prints.
    pub fn word(self) -> &'static str {
        match self {
            Expect::Carried => "equal",
            Expect::Engine => "equal under the real driver",
            Expect::Calibration => "calibration",
            Expect::Outside => "not in the trace",
        }
    }
}

/// One figure of both runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What is counted.
    pub what: String,
    /// Its unit: `count`, `bytes` or `ns`.
    pub unit: String,
    /// The real run's figure.
    pub real: u64,
    /// svmsim's.
    pub simulated: u64,
    /// simulated / real; none when the real run has none.
    pub ratio: Option<f64>,
    /// What to expect of it.
    pub expect: Expect,
}

impl Row {
    /// `v`, a figure of this row, as the tables print it.
    pub fn show(&self, v: u64) -> String {
        match self.unit.as_str() {
            "bytes" => crate::size::human(v),
            "ns" => crate::runs::time(v),
            _ => v.to_string(),
        }
    }

    /// The ratio as the tables print it: `-` when neither run has any,
    /// `new` when only svmsim's does.
    pub fn ratio_text(&self) -> String {
        match self.ratio {
            Some(x) => format!("{x:.2}x"),
            None if self.simulated == 0 => "-".into(),
            None => "new".into(),
        }
    }
}

/// The comparison of a replay with the real run it was imported from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Against {
    /// The real run's messages: the file or directory named.
    pub source: String,
    /// What the real run's messages say.
    pub real: Tally,
    /// What the replay's say.
    pub simulated: Tally,
    /// Both, figure by figure.
    pub rows: Vec<Row>,
}

/// The most lines a tally of the replay's own events reads (as many as
/// any import).
const MAX_LINES: usize = svm_workloads::trace::MAX_EVENTS;

/// What the SMI events of `o` (a replay run with its events captured)
/// say, counted as the real run's lines are.
///
/// # Errors
/// None in practice: the events' own lines fail to parse only if the
/// formats of `svm_sim` and the importer disagree, which the tests rule
/// out; the message says which line.
pub fn tally_of(o: &Outcome) -> Result<Tally, String> {
    let gpus: Vec<GpuId> = crate::smi::RunEvents::of_outcome(o).gpus;
    let texts: Vec<(u32, String)> = gpus
        .iter()
        .map(|g| (g.raw(), crate::smi::gpu_text(*g, &o.events)))
        .collect();
    let sources: Vec<Source<'_>> = texts
        .iter()
        .map(|(g, t)| Source {
            text: t,
            gpu: Some(*g),
        })
        .collect();
    svm_workloads::import::tally(&sources, MAX_LINES)
        .map_err(|e| format!("internal: the replay's own SMI events do not read back: {e}"))
}

/// The rows of `real` against `simulated`.
pub fn compare(source: &str, real: Tally, simulated: Tally) -> Against {
    const PAGE: u64 = 4096;
    let mean = |ns: u64, n: u64| ns.checked_div(n).unwrap_or(0);
    let figures = |t: &Tally| -> Vec<(&'static str, &'static str, u64, Expect)> {
        vec![
            ("GPU faults", "count", t.gpu_faults, Expect::Engine),
            (
                "GPU faults that stored",
                "count",
                t.gpu_fault_writes,
                Expect::Engine,
            ),
            (
                "faults that migrated (M)",
                "count",
                t.faults_migrated,
                Expect::Engine,
            ),
            (
                "faults that only mapped (U)",
                "count",
                t.faults_updated,
                Expect::Engine,
            ),
            (
                "migrations for GPU faults",
                "count",
                t.migrations[1],
                Expect::Engine,
            ),
            (
                "migrations for CPU faults",
                "count",
                t.migrations[2],
                // The trace holds the CPU's reads; whether one faults is
                // where the driver left the page.
                Expect::Engine,
            ),
            (
                "prefetch migrations",
                "count",
                t.migrations[0],
                Expect::Carried,
            ),
            (
                "eviction migrations (TTM)",
                "count",
                t.migrations[3],
                Expect::Outside,
            ),
            (
                "bytes of ranges migrated to VRAM",
                "bytes",
                t.pages_to_vram * PAGE,
                Expect::Engine,
            ),
            (
                "bytes of ranges migrated to system",
                "bytes",
                t.pages_to_ram * PAGE,
                Expect::Engine,
            ),
            (
                "migrations that failed",
                "count",
                t.migration_errors,
                Expect::Outside,
            ),
            (
                "mean migration time",
                "ns",
                mean(t.migration_ns, t.migrations_timed),
                Expect::Calibration,
            ),
            (
                "mean fault time (start to end)",
                "ns",
                mean(t.fault_ns, t.faults_timed),
                Expect::Calibration,
            ),
            (
                "queue evictions",
                "count",
                t.queue_evictions,
                Expect::Engine,
            ),
            ("queue restores", "count", t.queue_restores, Expect::Engine),
            (
                "unmaps by MMU notifier",
                "count",
                t.unmaps[0],
                Expect::Outside,
            ),
            (
                "unmaps for migrations",
                "count",
                t.unmaps[1],
                Expect::Engine,
            ),
            (
                "unmaps from the CPU (munmap)",
                "count",
                t.unmaps[2],
                Expect::Carried,
            ),
            ("events dropped", "count", t.dropped, Expect::Outside),
            (
                "first to last message",
                "ns",
                t.span_ns,
                Expect::Calibration,
            ),
        ]
    };
    let rows = figures(&real)
        .into_iter()
        .zip(figures(&simulated))
        .map(|((what, unit, r, expect), (_, _, s, _))| Row {
            what: what.to_owned(),
            unit: unit.to_owned(),
            real: r,
            simulated: s,
            ratio: (r > 0).then(|| s as f64 / r as f64),
            expect,
        })
        .collect();
    Against {
        source: source.to_owned(),
        real,
        simulated,
        rows,
    }
}

/// The comparison as a table, with a line on how to read it.
pub fn table(a: &Against) -> String {
    use comfy_table::{Cell, CellAlignment, Table, presets};
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_header(["", "real", "svmsim", "ratio", "expect"]);
    let right = |x: String| Cell::new(x).set_alignment(CellAlignment::Right);
    for r in &a.rows {
        t.add_row(vec![
            Cell::new(&r.what),
            right(r.show(r.real)),
            right(r.show(r.simulated)),
            right(r.ratio_text()),
            Cell::new(r.expect.word()),
        ]);
    }
    let off: Vec<&str> = a
        .rows
        .iter()
        .filter(|r| r.expect == Expect::Carried && r.real != r.simulated)
        .map(|r| r.what.as_str())
        .collect();
    let mut s = format!("Real run ({}) against its replay:\n{t}\n", a.source);
    if off.is_empty() {
        s += "What the trace carries came back equal. The engine's rows match when the replay \
              runs the real driver, granularity and XNACK mode on a machine like the real one; \
              the times are what a profile is calibrated by (docs/import.md).\n";
    } else {
        s += &format!(
            "Not equal, though the trace carries their cause: {} (the import left some out: see \
             its report).\n",
            off.join(", ")
        );
    }
    s
}

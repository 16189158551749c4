//! `svmsim diff A.json B.json`: what changed between two result files
//! (the `--json` output of `run`, `compare`, `sweep` or `merge`), for a
//! user iterating on a policy: the settings that differ, and every metric
//! of A and B with B's ratio to A. Runs are paired by label (a file of one
//! run pairs with a file of one run whatever their labels). The format is
//! in `docs/runs-json.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

/// Runs a file may hold (a sweep has at most `sweep::MAX_POINTS`).
const MAX_RUNS: usize = 100_000;

/// One side of the diff: a file's runs, by label.
#[derive(Debug)]
pub struct Side {
    /// The file, as given.
    pub name: String,
    runs: Vec<(String, Value)>,
}

/// Reads a result file.
///
/// # Errors
/// `FILE: ...` naming the line and column of bad JSON, or the field that
/// is missing or of the wrong kind.
pub fn read(name: &str, text: &str) -> Result<Side, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "{name}: line {}, column {}: not JSON ({e})",
            e.line(),
            e.column()
        )
    })?;
    let schema = v.get("schema").and_then(Value::as_str).ok_or_else(|| {
        format!(
            "{name}: no \"schema\" field: is it the --json output of svmsim run, compare, sweep \
             or merge?"
        )
    })?;
    if !matches!(schema, "svmsim.runs/1" | "svmsim.runs/2" | "svmsim.runs/3") {
        return Err(format!(
            "{name}: field \"schema\" is {schema:?}; diff reads \"svmsim.runs/1\" to \
             \"svmsim.runs/3\" (the --json output of run, compare, sweep and merge)"
        ));
    }
    let list = v
        .get("runs")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{name}: no \"runs\" array"))?;
    if list.len() > MAX_RUNS {
        return Err(format!(
            "{name}: field \"runs\" has {} runs; diff reads at most {MAX_RUNS}",
            list.len()
        ));
    }
    let mut runs = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let label = r
            .get("label")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name}: runs[{i}]: no \"label\" string"))?;
        for f in ["spec", "metrics"] {
            if !r.get(f).is_some_and(Value::is_object) {
                return Err(format!("{name}: runs[{i}] ({label}): no \"{f}\" object"));
            }
        }
        runs.push((label.to_owned(), r.clone()));
    }
    Ok(Side {
        name: name.to_owned(),
        runs,
    })
}

/// The leaves of `v` under `prefix`, keyed `a.b[0].c`.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(&format!("{prefix}[{i}]"), x, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// A metric of both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// `metrics.kernel_ns`, `gpu_end[0].reads`, `policy_counters.x`.
    pub key: String,
    /// A's value, and B's (`None`: the run has no such metric).
    pub a: Option<f64>,
    /// See `a`.
    pub b: Option<f64>,
}

impl Metric {
    fn changed(&self) -> bool {
        self.a != self.b
    }

    /// B / A, when both are there and A is not 0.
    fn ratio(&self) -> Option<f64> {
        match (self.a, self.b) {
            (Some(a), Some(b)) if a != 0.0 => Some(b / a),
            _ => None,
        }
    }
}

/// Two runs compared.
#[derive(Debug)]
pub struct Pair {
    /// The runs' labels.
    pub a: String,
    /// See `a`.
    pub b: String,
    /// Settings (spec keys, status) that differ: key, A's, B's.
    pub settings: Vec<(String, String, String)>,
    /// Every metric, those that changed first (in key order, then the rest).
    pub metrics: Vec<Metric>,
}

/// What changed between two files.
#[derive(Debug)]
pub struct Diff {
    /// The files.
    pub a: String,
    /// See `a`.
    pub b: String,
    /// The runs paired.
    pub pairs: Vec<Pair>,
    /// Runs of one file with no partner in the other.
    pub only_a: Vec<String>,
    /// See `only_a`.
    pub only_b: Vec<String>,
}

impl Diff {
    /// Whether anything differs (diff(1)'s exit status 1).
    pub fn differs(&self) -> bool {
        !self.only_a.is_empty()
            || !self.only_b.is_empty()
            || self
                .pairs
                .iter()
                .any(|p| !p.settings.is_empty() || p.metrics.iter().any(Metric::changed))
    }
}

fn pair(a: &Value, b: &Value) -> Pair {
    let label = |r: &Value| r["label"].as_str().unwrap_or_default().to_owned();
    let mut sa = BTreeMap::new();
    let mut sb = BTreeMap::new();
    leaves("", &a["spec"], &mut sa);
    leaves("", &b["spec"], &mut sb);
    leaves("status", &a["status"], &mut sa);
    leaves("status", &b["status"], &mut sb);
    let keys: std::collections::BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
    let show = |v: Option<&Value>| v.map_or_else(|| "(none)".to_owned(), Value::to_string);
    let settings = keys
        .into_iter()
        .filter(|k| sa.get(*k) != sb.get(*k))
        .map(|k| (k.clone(), show(sa.get(k)), show(sb.get(k))))
        .collect();
    let numbers = |r: &Value| {
        let mut m = BTreeMap::new();
        for f in ["metrics", "gpu_end", "policy_counters"] {
            if let Some(x) = r.get(f) {
                leaves(f, x, &mut m);
            }
        }
        m.into_iter()
            .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
            .collect::<BTreeMap<String, f64>>()
    };
    let (na, nb) = (numbers(a), numbers(b));
    let keys: std::collections::BTreeSet<&String> = na.keys().chain(nb.keys()).collect();
    let mut metrics: Vec<Metric> = keys
        .into_iter()
        .map(|k| Metric {
            key: k.clone(),
            a: na.get(k).copied(),
            b: nb.get(k).copied(),
        })
        .collect();
    // Changed first; the sort is stable, so each part stays in key order.
    metrics.sort_by_key(|m| !m.changed());
    Pair {
        a: label(a),
        b: label(b),
        settings,
        metrics,
    }
}

/// Pairs the runs of `a` and `b` and compares each pair: by label, or, a
/// run each, the two whatever their labels; files of as many runs with no
/// label in common pair in order.
pub fn diff(a: &Side, b: &Side) -> Diff {
    let mut pairs = Vec::new();
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let common = a
        .runs
        .iter()
        .any(|(l, _)| b.runs.iter().any(|(m, _)| l == m));
    if (a.runs.len() == 1 && b.runs.len() == 1) || (!common && a.runs.len() == b.runs.len()) {
        for ((_, x), (_, y)) in a.runs.iter().zip(&b.runs) {
            pairs.push(pair(x, y));
        }
    } else {
        for (l, x) in &a.runs {
            match b.runs.iter().find(|(m, _)| m == l) {
                Some((_, y)) => pairs.push(pair(x, y)),
                None => only_a.push(l.clone()),
            }
        }
        only_b = b
            .runs
            .iter()
            .filter(|(m, _)| !a.runs.iter().any(|(l, _)| l == m))
            .map(|(m, _)| m.clone())
            .collect();
    }
    Diff {
        a: a.name.clone(),
        b: b.name.clone(),
        pairs,
        only_a,
        only_b,
    }
}

fn number(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
    }
}

/// The diff for people: per pair, the settings that differ, then every
/// metric that changed with A, B, B / A and B - A, then the names of
/// those that did not.
pub fn text(d: &Diff) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "A: {}\nB: {}", d.a, d.b);
    for p in &d.pairs {
        let _ = writeln!(s, "\nrun {:?} (A) against {:?} (B)", p.a, p.b);
        if p.settings.is_empty() {
            s += "  settings: the same\n";
        } else {
            s += "  settings that differ:\n";
            let w = p.settings.iter().map(|x| x.0.len()).max().unwrap_or(0);
            for (k, a, b) in &p.settings {
                let _ = writeln!(s, "    {k:<w$}  {a} -> {b}");
            }
        }
        let changed: Vec<&Metric> = p.metrics.iter().filter(|m| m.changed()).collect();
        if changed.is_empty() {
            s += "  metrics: every one the same\n";
        } else {
            let w = changed.iter().map(|m| m.key.len()).max().unwrap_or(0);
            let _ = writeln!(
                s,
                "  metrics that changed:\n    {:<w$}  {:>16}  {:>16}  {:>8}  {:>16}",
                "metric", "A", "B", "B / A", "B - A"
            );
            for m in &changed {
                let ratio = m.ratio().map_or("-".into(), crate::runs::show_ratio);
                let delta = match (m.a, m.b) {
                    (Some(a), Some(b)) => {
                        let d = b - a;
                        if d > 0.0 {
                            format!("+{}", number(Some(d)))
                        } else {
                            number(Some(d))
                        }
                    }
                    _ => "-".into(),
                };
                let _ = writeln!(
                    s,
                    "    {:<w$}  {:>16}  {:>16}  {ratio:>8}  {delta:>16}",
                    m.key,
                    number(m.a),
                    number(m.b)
                );
            }
        }
        let same: Vec<&str> = p
            .metrics
            .iter()
            .filter(|m| !m.changed())
            .map(|m| m.key.as_str())
            .collect();
        if !same.is_empty() && !changed.is_empty() {
            // Wrapped at 78 columns, whatever the terminal: the same bytes
            // every time.
            let mut line = String::from("  the same in both:");
            for (i, k) in same.iter().enumerate() {
                let sep = if i + 1 < same.len() { "," } else { "" };
                if line.len() + 1 + k.len() + sep.len() > 78 {
                    let _ = writeln!(s, "{line}");
                    line = String::from("   ");
                }
                let _ = write!(line, " {k}{sep}");
            }
            let _ = writeln!(s, "{line}");
        }
    }
    for (who, list) in [("A", &d.only_a), ("B", &d.only_b)] {
        if !list.is_empty() {
            let _ = writeln!(s, "\nonly in {who}: {}", list.join(", "));
        }
    }
    s
}

/// The diff as JSON (`svmsim.diff/1`, docs/runs-json.md).
pub fn json(d: &Diff) -> Value {
    json!({
        "schema": "svmsim.diff/1",
        "a": d.a,
        "b": d.b,
        "differs": d.differs(),
        "pairs": d.pairs.iter().map(|p| json!({
            "a": p.a,
            "b": p.b,
            "settings": p.settings.iter().map(|(k, a, b)| json!({"key": k, "a": a, "b": b})).collect::<Vec<_>>(),
            "metrics": p.metrics.iter().map(|m| json!({
                "key": m.key, "a": m.a, "b": m.b, "ratio": m.ratio(), "changed": m.changed(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "only_in_a": d.only_a,
        "only_in_b": d.only_b,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(runs: &[(&str, u64, u64)]) -> String {
        let runs: Vec<Value> = runs
            .iter()
            .map(|(l, size, ns)| {
                json!({"label": l, "spec": {"size": size, "config": {"policy": "partial"}},
                       "status": {"kind": "ok"},
                       "metrics": {"kernel_ns": ns, "faults": 10},
                       "gpu_end": [{"gpu_id": 4098, "reads": 5}]})
            })
            .collect();
        json!({"schema": "svmsim.runs/2", "runs": runs}).to_string()
    }

    #[test]
    fn a_diff_names_the_settings_and_every_metric_with_its_ratio() {
        let a = read("a.json", &file(&[("partial", 1, 100)])).unwrap();
        let b = read("b.json", &file(&[("other", 4, 250)])).unwrap();
        let d = diff(&a, &b);
        assert!(d.differs());
        let p = &d.pairs[0];
        assert_eq!(p.settings, [("size".into(), "1".into(), "4".into())]);
        let k = &p.metrics[0];
        assert_eq!(
            (k.key.as_str(), k.ratio()),
            ("metrics.kernel_ns", Some(2.5))
        );
        // Every metric is there: the unchanged ones after.
        let keys: Vec<&str> = p.metrics.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "metrics.kernel_ns",
                "gpu_end[0].gpu_id",
                "gpu_end[0].reads",
                "metrics.faults"
            ]
        );
        let t = text(&d);
        assert!(
            t.contains("size  1 -> 4") && t.contains("2.50x") && t.contains("+150"),
            "{t}"
        );
        assert!(t.contains("the same in both: gpu_end[0].gpu_id,"), "{t}");
        assert!(t.lines().all(|l| l.len() <= 100), "{t}");
        assert_eq!(json(&d)["pairs"][0]["metrics"][0]["ratio"], 2.5);
        // A file against itself: nothing differs.
        assert!(!diff(&a, &a).differs());
    }

    #[test]
    fn runs_pair_by_label_and_the_unpaired_are_named() {
        let a = read("a", &file(&[("x", 1, 1), ("y", 1, 1)])).unwrap();
        let b = read("b", &file(&[("y", 1, 2), ("z", 1, 1), ("w", 1, 1)])).unwrap();
        let d = diff(&a, &b);
        assert_eq!(d.pairs.len(), 1);
        assert_eq!((d.pairs[0].a.as_str(), d.pairs[0].b.as_str()), ("y", "y"));
        assert_eq!(
            (d.only_a.clone(), d.only_b.clone()),
            (vec!["x".to_owned()], vec!["z".to_owned(), "w".to_owned()])
        );
    }

    #[test]
    fn a_bad_file_is_named_with_where_and_what() {
        let e = read("r.json", "{\n  \"schema\": 3,\n").unwrap_err();
        assert!(e.starts_with("r.json: line 3"), "{e}");
        let e = read("r.json", "{\"schema\": \"svmsim.sweep/1\"}").unwrap_err();
        assert!(e.contains("field \"schema\""), "{e}");
        let e = read(
            "r.json",
            "{\"schema\": \"svmsim.runs/2\", \"runs\": [{\"label\": \"a\"}]}",
        )
        .unwrap_err();
        assert_eq!(e, "r.json: runs[0] (a): no \"spec\" object");
        let e = read("r.json", "[]").unwrap_err();
        assert!(e.contains("no \"schema\""), "{e}");
    }
}

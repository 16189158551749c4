//! Parameter sweeps: a grid of run configurations from a TOML file, run
//! in parallel on this machine's cores, optionally one shard of it (for a
//! cluster's job array), and shard results merged back into one.
//!
//! ```toml
//! [base]                 # fields every point shares (RunSpec's)
//! workload = "stream"
//! size = "64MiB"
//!
//! [grid]                 # each key a list; the points are every combination
//! policy = ["whole-range", "partial"]
//! granularity = [0, 9]
//! ```
//!
//! The format is in `docs/sweep.md`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::exec::{self, Capture, Outcome, RunSpec};

/// The schema of a shard's result file.
pub const SCHEMA: &str = "svmsim.sweep/1";

/// The most points a sweep's grid may have (the product of its axes).
pub const MAX_POINTS: usize = 1_000_000;

/// A sweep file's error: the file, the line when known, the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map_or(String::new(), |l| format!(":{l}")))]
pub struct SweepError {
    /// The file.
    pub file: String,
    /// The line, 1-based.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// The line of `key = ...` in `text`, after the line of `[section]`.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let start = text
        .lines()
        .position(|l| l.trim() == format!("[{section}]"))?;
    text.lines()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|(i, _)| i + 1)
}

fn size_of(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("{i} is not a size")),
        Value::String(s) => crate::size::parse(s),
        other => Err(format!("{other} is not a size (write \"2MiB\" or 4096)")),
    }
}

fn int_of(v: &Value) -> Result<u64, String> {
    v.as_integer()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| format!("{v} is not a whole number"))
}

/// Sets field `key` of `spec` from a TOML value.
fn set(spec: &mut RunSpec, key: &str, v: &Value) -> Result<(), String> {
    let text = || {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{v} is not a string"))
    };
    match key {
        "workload" => spec.workload = text()?,
        // A trace file (as `svmsim replay` takes), replayed at the point.
        "trace" => spec.workload = format!("{}{}", exec::TRACE_PREFIX, text()?),
        "profile" => spec.profile = text()?,
        "size" => spec.size = size_of(v)?,
        "vram" => spec.vram = Some(size_of(v)?),
        "iters" => spec.iters = u32::try_from(int_of(v)?).map_err(|e| e.to_string())?,
        "gpus" => spec.gpus = Some(usize::try_from(int_of(v)?).map_err(|e| e.to_string())?),
        "granularity" => {
            spec.granularity = Some(u32::try_from(int_of(v)?).map_err(|e| e.to_string())?)
        }
        "seed" => spec.seed = int_of(v)?,
        "xnack" => {
            spec.xnack = match v {
                Value::Boolean(b) => *b,
                Value::String(s) if s == "on" => true,
                Value::String(s) if s == "off" => false,
                _ => return Err(format!("{v} is not on, off, true or false")),
            }
        }
        "prefetch" => {
            spec.prefetch = v
                .as_bool()
                .ok_or_else(|| format!("{v} is not true or false"))?;
        }
        "oversubscribe" => {
            spec.oversubscribe = Some(
                v.as_float()
                    .or_else(|| v.as_integer().map(|i| i as f64))
                    .ok_or_else(|| format!("{v} is not a number"))?,
            );
        }
        // Every knob of `svmsim config` is a field too (`policy` among them).
        _ if svm_core::config::knob(key).is_some() => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Integer(i) => i.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => return Err(format!("{other} is not a string, number or boolean")),
            };
            spec.config.set(key, &text).map_err(|e| match e {
                svm_core::config::ConfigError::BadValue { value, accepts, .. } => {
                    format!("{value:?} is not {accepts}")
                }
                other => other.to_string(),
            })?;
        }
        _ => {
            let knobs: Vec<&str> = svm_core::config::KNOBS.iter().map(|k| k.key).collect();
            return Err(format!(
                "unknown field {key:?}; fields are workload, trace, size, iters, profile, gpus, vram, \
                 oversubscribe, granularity, xnack, prefetch, seed, and the knobs of \
                 `svmsim config`: {}",
                knobs.join(", ")
            ));
        }
    }
    Ok(())
}

/// A parsed sweep: its points, in grid order.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// Every point.
    pub points: Vec<RunSpec>,
    /// The fields `[grid]` varies, in file order.
    pub axes: Vec<String>,
}

impl Sweep {
    /// A fingerprint of the points (FNV-1a of their JSON): shards of one
    /// grid carry the same one, whatever path the file was given by.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(&self.points).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Parses a sweep file, reading each trace its points replay once with
/// `read_trace` (given the name the file gives); returns them beside the
/// points.
///
/// # Errors
/// A syntax error, an unknown section or field, a bad value, or a trace
/// that cannot be read, with the file, line and field.
pub fn parse(
    file: &str,
    text: &str,
    read_trace: &mut dyn FnMut(&str) -> Result<exec::Trace, String>,
) -> Result<(Sweep, Vec<exec::Trace>), SweepError> {
    let err = |line: Option<usize>, message: String| SweepError {
        file: file.to_owned(),
        line,
        message,
    };
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        err(line, e.message().to_owned())
    })?;
    for k in doc.keys() {
        if k != "base" && k != "grid" {
            return Err(err(
                None,
                format!("unknown section [{k}]; a sweep has [base] and [grid]"),
            ));
        }
    }
    let mut base = RunSpec::default();
    if let Some(b) = doc.get("base") {
        let b = b
            .as_table()
            .ok_or_else(|| err(None, "[base] must be a table".into()))?;
        for (k, v) in b {
            set(&mut base, k, v)
                .map_err(|m| err(line_of(text, "base", k), format!("field {k}: {m}")))?;
        }
    }
    let mut points = vec![base];
    let mut axes = Vec::new();
    if let Some(g) = doc.get("grid") {
        let g = g
            .as_table()
            .ok_or_else(|| err(None, "[grid] must be a table".into()))?;
        // The grid's size, before a point is made.
        let mut total: usize = 1;
        for (k, v) in g {
            let n = v.as_array().map_or(1, Vec::len).max(1);
            total = total
                .checked_mul(n)
                .filter(|&t| t <= MAX_POINTS)
                .ok_or_else(|| {
                    err(
                        line_of(text, "grid", k),
                        format!(
                            "field {k}: the grid has more than {MAX_POINTS} points (the product of \
                         its lists' lengths); split it into several sweeps"
                        ),
                    )
                })?;
        }
        for (k, v) in g {
            axes.push(k.clone());
            let line = line_of(text, "grid", k);
            let list = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| err(line, format!("field {k}: a grid value is a non-empty list")))?;
            let mut next = Vec::with_capacity(points.len() * list.len());
            for p in &points {
                for x in list {
                    let mut q = p.clone();
                    set(&mut q, k, x).map_err(|m| err(line, format!("field {k}: {m}")))?;
                    next.push(q);
                }
            }
            points = next;
        }
    }
    let field_line =
        |field: &str| line_of(text, "grid", field).or_else(|| line_of(text, "base", field));
    let mut traces: Vec<exec::Trace> = Vec::new();
    for p in &points {
        if let Some(name) = p.workload.strip_prefix(exec::TRACE_PREFIX)
            && !traces.iter().any(|t| t.name == name)
        {
            let t = read_trace(name).map_err(|m| {
                err(
                    field_line("trace").or_else(|| field_line("workload")),
                    format!("field trace: {m}"),
                )
            })?;
            traces.push(t);
        }
    }
    // Like `svmsim run`: without a profile, a point gets its driver's,
    // with GPUs enough.
    let profile_set = ["base", "grid"]
        .iter()
        .any(|t| doc.get(*t).and_then(|v| v.get("profile")).is_some());
    if !profile_set {
        for p in &mut points {
            let need = p
                .gpus
                .unwrap_or_else(|| exec::gpus_needed(&p.workload, &traces));
            crate::exec::default_profile(p.config.driver, need).clone_into(&mut p.profile);
        }
    }
    // Names and values that cannot run are caught now, not hours in.
    for p in &points {
        exec::check_any(p, &traces).map_err(|e| {
            let line = field_line(e.field).or_else(|| field_line("workload"));
            err(line, format!("field {}: {}", e.field, e.message))
        })?;
    }
    Ok((Sweep { points, axes }, traces))
}

/// `K/N`: shard K (1-based) of N.
///
/// # Errors
/// Not of that form, or K outside 1..=N.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("--shard {s}: write K/N, for example 2/8"))?;
    let k: usize = k
        .trim()
        .parse()
        .map_err(|_| format!("--shard {s}: K is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("--shard {s}: N is not a number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!(
            "--shard {s} is out of range: K must be between 1 and N (N >= 1)"
        ));
    }
    Ok((k, n))
}

/// What a point is guessed to cost, to balance shards: the bytes it
/// touches, times its iterations. (A grid that varies the size gives
/// points thousands of times apart; other settings matter less, and
/// nothing cheaper than running a point tells them.)
fn work(p: &RunSpec) -> u128 {
    u128::from(p.size.max(1)) * u128::from(p.iters.max(1))
}

/// The indices (ascending) shard `k` of `n` runs. Points are dealt, the
/// costliest first ([`work`], grid order among equals), each to the shard
/// with the least work so far (then the fewest points, then the lowest
/// number): every task computes the same split from the grid alone, and
/// the shards get similar work, not only similar counts.
pub fn shard_indices(points: &[RunSpec], (k, n): (usize, usize)) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(work(&points[i])), i));
    let mut load: Vec<(u128, usize)> = vec![(0, 0); n.max(1)];
    let mut mine = Vec::new();
    for i in order {
        let s = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[s].0 += work(&points[i]);
        load[s].1 += 1;
        if s + 1 == k {
            mine.push(i);
        }
    }
    mine.sort_unstable();
    mine
}

/// Runs the points `indices` of `points` on `jobs` threads, calling
/// `done` after each. Results come back in `indices` order.
///
/// # Errors
/// The first point that could not run.
pub fn run_points(
    points: &[RunSpec],
    traces: &exec::Traces,
    indices: &[usize],
    jobs: usize,
    (capture, host_budget): (Capture, u64),
    done: &(dyn Fn(&Outcome) + Sync),
) -> Result<Vec<Outcome>, exec::SpecError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome, exec::SpecError>>>> =
        Mutex::new(vec![None; indices.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, indices.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&p) = indices.get(i) else { break };
                    let r = exec::run_any(&points[p], traces, capture, host_budget);
                    if let Ok(o) = &r {
                        done(o);
                    }
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .map(|r| r.expect("every index ran"))
        .collect()
}

/// A shard's result file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardFile {
    /// [`SCHEMA`].
    pub schema: String,
    /// The sweep file it came from (as given; for people).
    pub sweep: String,
    /// [`Sweep::fingerprint`] of its grid (what merge checks).
    pub grid: String,
    /// Points in the whole grid.
    pub total: usize,
    /// This shard: (K, N).
    pub shard: (usize, usize),
    /// Its points: (index in the grid, outcome).
    pub points: Vec<(usize, Outcome)>,
}

/// Reads a shard's result file.
///
/// # Errors
/// `NAME: not a shard file (...)`, with serde's line and column.
pub fn read_shard(name: &str, text: &str) -> Result<ShardFile, String> {
    serde_json::from_str(text).map_err(|e| format!("{name}: not a shard file ({e})"))
}

/// Joins shard files into the whole grid's outcomes, in grid order.
///
/// # Errors
/// Files of different sweeps or schemas, or points missing.
pub fn merge(files: &[(String, ShardFile)]) -> Result<Vec<Outcome>, String> {
    let Some((_, first)) = files.first() else {
        return Err("no shard files given".into());
    };
    if first.total > MAX_POINTS {
        return Err(format!(
            "{}: a grid of {} points; a sweep has at most {MAX_POINTS}",
            files[0].0, first.total
        ));
    }
    let mut slots: Vec<Option<Outcome>> = vec![None; first.total];
    // Which file gave each point: a point given twice is refused.
    let mut from: Vec<usize> = vec![usize::MAX; first.total];
    for (n, (name, f)) in files.iter().enumerate() {
        if f.schema != SCHEMA {
            return Err(format!(
                "{name}: schema {:?}, expected {SCHEMA:?}",
                f.schema
            ));
        }
        if f.total != first.total || f.grid != first.grid {
            return Err(format!(
                "{name}: from another grid ({:?}, {} points, fingerprint {}) than {:?} \
                 ({} points, fingerprint {}): was the sweep file edited between shards?",
                f.sweep, f.total, f.grid, first.sweep, first.total, first.grid
            ));
        }
        for (i, o) in &f.points {
            let slot = slots
                .get_mut(*i)
                .ok_or_else(|| format!("{name}: point {i} is outside the grid"))?;
            if slot.is_some() {
                let other = files.get(from[*i]).map_or(name, |(o, _)| o);
                return Err(format!(
                    "{name}: point {i} is in both {other} and {name}: merge each shard's file once"
                ));
            }
            *slot = Some(o.clone());
            from[*i] = n;
        }
    }
    let missing: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| i)
        .collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(ToString::to_string).collect();
        let more = if missing.len() > 10 {
            format!(" and {} more", missing.len() - 10)
        } else {
            String::new()
        };
        let what = if missing.len() == 1 {
            "point"
        } else {
            "points"
        };
        let verb = if missing.len() == 1 { "is" } else { "are" };
        return Err(format!(
            "{what} {}{more} {verb} missing: merge every shard's file",
            shown.join(", ")
        ));
    }
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a sweep of workloads (a trace is refused).
    fn plain(file: &str, text: &str) -> Result<Sweep, SweepError> {
        parse(file, text, &mut |n| Err(format!("no trace here ({n})"))).map(|(s, _)| s)
    }

    /// A trace's points read it once, get the GPUs it needs, and are
    /// refused with the line of the field when it cannot be read.
    #[test]
    fn trace_points_read_the_trace_once() {
        let mut m = svm_workloads::machine(
            &svm_sim::timing::Profile::built_in("mi250x").unwrap(),
            2,
            None,
        )
        .unwrap();
        m.start_recording();
        let pid = m.spawn("t");
        let _ = m.alloc_vram_bo(pid, svm_sim::timing::gpu_id(1), 1 << 20);
        let bytes = svm_workloads::trace::encode(&m.take_trace());
        let mut reads = 0;
        let text = "[base]\ntrace = \"a.trace\"\n[grid]\npolicy = [\"partial\", \"whole-range\"]\n";
        let (s, traces) = parse("t.toml", text, &mut |n| {
            reads += 1;
            exec::Trace::parse(n, &bytes, false, 1 << 30).map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(reads, 1);
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].gpus(), 2);
        assert!(s.points.iter().all(|p| p.workload == "trace:a.trace"));
        assert_eq!(s.points[0].profile, "mi250x", "two GPUs' default profile");
        let e = plain("t.toml", text).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string()
                .contains("field trace: no trace here (a.trace)"),
            "{e}"
        );
    }

    #[test]
    fn grid_is_the_product_in_order() {
        let s = plain(
            "t.toml",
            "[base]\nworkload = \"stream\"\nsize = \"1MiB\"\n[grid]\npolicy = [\"whole-range\", \"partial\"]\ngranularity = [0, 9]\n",
        )
        .unwrap();
        assert_eq!(s.points.len(), 4);
        assert_eq!(s.points[0].size, 1 << 20);
        assert_eq!(
            (s.points[1].policy(), s.points[1].granularity),
            ("partial", Some(0))
        );
        assert_eq!(s.points[3].granularity, Some(9));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = plain("t.toml", "[base]\nworkload = \"stream\"\nsize = \"2MB\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().starts_with("t.toml:3: field size"), "{e}");
        let e = plain("t.toml", "[grid]\npolicy = [\"fast\"]\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("whole-range"), "{e}");
        let e = plain("t.toml", "[base]\nwidth = 3\n").unwrap_err();
        assert!(e.to_string().contains("unknown field \"width\""), "{e}");
        let e = plain("t.toml", "[base\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn shards_split_the_grid() {
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
        assert!(parse_shard("4/3").is_err());
        assert!(parse_shard("0/3").is_err());
        assert!(parse_shard("3").is_err());
        let point = |size: u64| RunSpec {
            size,
            ..RunSpec::default()
        };
        let grid: Vec<RunSpec> = (0..10).map(|_| point(1 << 20)).collect();
        let all: Vec<usize> = (1..=3).flat_map(|k| shard_indices(&grid, (k, 3))).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        // Equal points: counts within one.
        let counts: Vec<usize> = (1..=3)
            .map(|k| shard_indices(&grid, (k, 3)).len())
            .collect();
        assert_eq!(counts, [4, 3, 3]);
        // Sizes alternating in grid order (a size axis varies fastest):
        // dealing every other point would give one shard all the big ones.
        let grid: Vec<RunSpec> = (0..12)
            .map(|i| point(if i % 2 == 0 { 4 << 20 } else { 64 << 20 }))
            .collect();
        let loads: Vec<u128> = (1..=2)
            .map(|k| {
                shard_indices(&grid, (k, 2))
                    .iter()
                    .map(|&i| work(&grid[i]))
                    .sum()
            })
            .collect();
        assert_eq!(loads[0], loads[1]);
        // More shards than points: the rest are empty, none is refused.
        assert!(shard_indices(&grid[..2], (3, 3)).is_empty());
    }
}

//! The suite benchmark (`svmsim bench`, and `cargo bench -p svmsim --bench
//! suite`): every built-in workload at the sizes asked for, each run in a
//! process of its own so that its peak RSS is its own, beside baselines
//! measured in the same run on the same machine: the TLB-hit kernel's
//! access rate, the host's memcpy bandwidth, its memory latency, and what
//! migrating the same bytes costs the simulator. This machine is shared and noisy, so every
//! target is a ratio against a baseline of the same run
//! (`docs/performance.md`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use comfy_table::{Cell, CellAlignment, Table, presets};
use serde::Serialize;

use crate::size;

/// This process's peak resident set so far, in bytes (`VmHWM`), where the
/// system says it (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's CPU time so far, user and system, in seconds, and its
/// minor page faults (`/proc/self/stat`: fields 10, 14 and 15, times in
/// the kernel's fixed 100 ticks a second), where the system says them.
pub fn cpu_times() -> Option<(f64, f64, u64)> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted from the last ')', which ends it.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    let ticks = |n: usize| field(n).map(|t| t as f64 / 100.0);
    Some((ticks(14)?, ticks(15)?, field(10)?))
}

/// What `svmsim run --host-stats FILE` writes: the run's host cost.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct HostStats {
    /// Wall-clock seconds the run took (set-up and checks included).
    pub wall_s: f64,
    /// The process's peak RSS at the end, bytes (`null` where unknown).
    pub peak_rss_bytes: Option<u64>,
    /// The process's CPU seconds in user space and in the kernel, and
    /// its minor page faults (first touches of fresh memory, mostly):
    /// what the simulator did against what the OS did to give it memory.
    #[serde(default)]
    pub user_s: Option<f64>,
    #[serde(default)]
    pub sys_s: Option<f64>,
    #[serde(default)]
    pub minor_faults: Option<u64>,
}

impl HostStats {
    /// This process's, for a run of `wall_s` seconds.
    pub fn now(wall_s: f64) -> Self {
        let cpu = cpu_times();
        Self {
            wall_s,
            peak_rss_bytes: peak_rss_bytes(),
            user_s: cpu.map(|c| c.0),
            sys_s: cpu.map(|c| c.1),
            minor_faults: cpu.map(|c| c.2),
        }
    }
}

/// The baselines, measured in the same run as the workloads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Baselines {
    /// The TLB-hit kernel (`svm_workloads::micro`): simulated accesses
    /// per host second, median of several runs.
    pub tlb_hit_per_s: f64,
    /// Host memcpy of a buffer of [`MIGRATE_BYTES`], bytes per second.
    pub memcpy_bytes_per_s: f64,
    /// The host's memory latency: nanoseconds a load takes when each
    /// depends on the last and all fall at random over [`MIGRATE_BYTES`]
    /// (a cache miss and, mostly, a host TLB miss each): what a simulated
    /// access that reads a random page of a large footprint (bfs's and
    /// gups's gathers) pays at least, on top of its own work.
    pub miss_ns: f64,
    /// Prefetching the same bytes to VRAM and back (two migrations a
    /// round, real bytes, invariants unchecked): bytes moved per host
    /// second.
    pub migrate_bytes_per_s: f64,
}

/// Bytes the memcpy and migration baselines move at a time.
pub const MIGRATE_BYTES: u64 = 64 << 20;

/// The host's memcpy bandwidth: the best of a few copies of
/// [`MIGRATE_BYTES`] (the first touches the pages).
pub fn memcpy_rate() -> f64 {
    let n = usize::try_from(MIGRATE_BYTES).unwrap_or(usize::MAX);
    let src = vec![0x5au8; n];
    let mut dst = vec![0u8; n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    MIGRATE_BYTES as f64 / best.max(1e-9)
}

/// The host's memory latency ([`Baselines::miss_ns`]): a chase through
/// one random cycle over [`MIGRATE_BYTES`] of `u32` indices (Sattolo's
/// shuffle, fixed seed), best of three.
pub fn miss_latency_ns() -> f64 {
    use rand::{RngExt, SeedableRng};
    let n = usize::try_from(MIGRATE_BYTES / 4).unwrap_or(1 << 24);
    let mut next: Vec<u32> = (0..u32::try_from(n).unwrap_or(u32::MAX)).collect();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(0x1a7e);
    for i in (1..n).rev() {
        let j = rng.random_range(0..i);
        next.swap(i, j);
    }
    const STEPS: u32 = 1 << 21;
    let mut best = f64::INFINITY;
    let mut at = 0u32;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..STEPS {
            at = next[at as usize];
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(at);
    best * 1e9 / f64::from(STEPS)
}

/// What the simulator's migration costs on the host: a buffer of
/// [`MIGRATE_BYTES`] the CPU wrote, prefetched to the GPU and back to
/// system memory, three rounds (the first, which faults the host pages
/// in, not counted); bytes moved per second.
///
/// # Errors
/// The machine refusing the set-up (it should not).
pub fn migrate_rate() -> Result<f64, String> {
    use svm_core::uapi::{SvmAttribute, attr_type};
    let p = svm_sim::timing::Profile::built_in("mi210").map_err(|e| e.to_string())?;
    let mut m =
        svm_workloads::machine(&p, 1, Some(4 * MIGRATE_BYTES)).map_err(|e| e.to_string())?;
    let pid = m.spawn("migrate");
    let mut r = svm_workloads::Run::new(&mut m, pid);
    let gpu = r.gpu_ids[0];
    let a = r.alloc(MIGRATE_BYTES, &[0]).map_err(|e| e.to_string())?;
    let words = usize::try_from(MIGRATE_BYTES / 4).unwrap_or(0);
    r.write_u32s_with(a, words, |i| i)
        .map_err(|e| e.to_string())?;
    let mut secs = 0.0;
    for round in 0..4 {
        let t = Instant::now();
        for loc in [gpu, 0] {
            r.set_attr(
                a,
                MIGRATE_BYTES,
                vec![SvmAttribute::new(attr_type::PREFETCH_LOC, loc)],
            )
            .map_err(|e| e.to_string())?;
        }
        if round > 0 {
            secs += t.elapsed().as_secs_f64();
        }
    }
    if !r.check_u32s(a, words, |i| i).map_err(|e| e.to_string())? {
        return Err("the migrated bytes came back changed".into());
    }
    Ok(6.0 * MIGRATE_BYTES as f64 / f64::max(secs, 1e-9))
}

/// Measures the baselines.
///
/// # Errors
/// See [`migrate_rate`].
pub fn baselines() -> Result<Baselines, String> {
    Ok(Baselines {
        tlb_hit_per_s: svm_workloads::micro::tlb_hit_rate(7),
        memcpy_bytes_per_s: memcpy_rate(),
        miss_ns: miss_latency_ns(),
        migrate_bytes_per_s: migrate_rate()?,
    })
}

/// One workload at one size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The workload.
    pub workload: String,
    /// Its size, bytes.
    pub size: u64,
    /// Bytes it touches (`Workload::footprint`).
    pub footprint: u64,
    /// `ok`, `MISMATCH`, `killed: …`, or why it did not run.
    pub status: String,
    /// Simulated memory instructions (GPU waves and CPU threads).
    pub accesses: u64,
    /// GPU faults the driver saw.
    pub faults: u64,
    /// Bytes migrated either way.
    pub migrated_bytes: u64,
    /// Host wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Its peak RSS, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Its CPU seconds in user space and in the kernel, and its minor
    /// page faults ([`HostStats`]).
    pub user_s: Option<f64>,
    pub sys_s: Option<f64>,
    pub minor_faults: Option<u64>,
}

impl Row {
    /// Simulated accesses per host second over the whole run.
    pub fn rate(&self) -> f64 {
        self.accesses as f64 / self.wall_s.max(1e-9)
    }
}

/// Runs `workload` at `size` in a child process of `exe` (the svmsim
/// binary), so that its peak RSS is its own. A run the child refuses
/// (above the host budget, say) is a row that says so.
///
/// # Errors
/// The child could not be started, or said nothing readable.
pub fn run_workload(
    exe: &Path,
    workload: &str,
    size: u64,
    iters: u32,
    scratch: &Path,
    max_host_mem: Option<u64>,
) -> Result<Row, String> {
    let w = svm_workloads::by_name(workload).ok_or_else(|| format!("no workload {workload}"))?;
    let footprint = w.footprint(&svm_workloads::Params {
        size,
        iters,
        seed: 1,
    });
    let stats = scratch.join(format!("{workload}-{size}.host.json"));
    let t = Instant::now();
    let mut cmd = Command::new(exe);
    if let Some(b) = max_host_mem {
        cmd.args(["--max-host-mem", &b.to_string()]);
    }
    let out = cmd
        .args(["run", workload, "--size", &size::show(size), "--iters"])
        .arg(iters.to_string())
        .arg("--json")
        .arg("--host-stats")
        .arg(&stats)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let wall_parent = t.elapsed().as_secs_f64();
    let mut row = Row {
        workload: workload.to_owned(),
        size,
        footprint,
        status: String::new(),
        accesses: 0,
        faults: 0,
        migrated_bytes: 0,
        wall_s: wall_parent,
        peak_rss_bytes: None,
        user_s: None,
        sys_s: None,
        minor_faults: None,
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    let Some(run) = json.as_ref().and_then(|v| v["runs"].get(0)) else {
        let err = String::from_utf8_lossy(&out.stderr);
        row.status = format!(
            "did not run: {}",
            err.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
        );
        return Ok(row);
    };
    let m = &run["metrics"];
    let num = |k: &str| m[k].as_u64().unwrap_or(0);
    row.accesses = num("accesses");
    row.faults = num("faults");
    row.migrated_bytes = num("migrated_bytes");
    let st = &run["status"];
    row.status = match st["kind"].as_str() {
        Some("ok") => "ok".into(),
        Some("mismatch") => "MISMATCH".into(),
        Some("killed") => format!("killed: {}", st["error"].as_str().unwrap_or("?")),
        _ => st.to_string(),
    };
    if let Ok(text) = std::fs::read_to_string(&stats)
        && let Ok(h) = serde_json::from_str::<HostStats>(&text)
    {
        row.wall_s = h.wall_s;
        row.peak_rss_bytes = h.peak_rss_bytes;
        row.user_s = h.user_s;
        row.sys_s = h.sys_s;
        row.minor_faults = h.minor_faults;
    }
    let _ = std::fs::remove_file(&stats);
    Ok(row)
}

/// Host seconds as ns, for `runs::time`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn seconds_ns(s: f64) -> u64 {
    // (A wall time is positive and far below 584 years.)
    (s.max(0.0) * 1e9) as u64
}

/// Bytes per second as a size.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn rate_bytes(x: f64) -> String {
    // (A rate is positive and far below 2^64.)
    size::human(x.max(0.0) as u64)
}

/// A count, short.
fn count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// The results as the terminal shows them: the baselines, a row per run,
/// and, for each workload run at more than one size, how its host time
/// grew against its data.
pub fn table(b: &Baselines, rows: &[Row]) -> String {
    let mut s = format!(
        "baselines (this machine, this run): TLB-hit kernel {}/s; memcpy {}/s; \
         a dependent load missing the host's caches {:.0} ns; \
         migration {}/s = {:.2}x memcpy's time\n\n",
        count(b.tlb_hit_per_s),
        rate_bytes(b.memcpy_bytes_per_s),
        b.miss_ns,
        rate_bytes(b.migrate_bytes_per_s),
        b.memcpy_bytes_per_s / b.migrate_bytes_per_s.max(1.0),
    );
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "workload",
        "size",
        "status",
        "accesses",
        "faults",
        "migrated",
        "wall",
        "accesses/s",
        "vs TLB-hit",
        "ns/access",
        "peak RSS",
        "RSS/footprint",
    ]);
    let right = |x: String| Cell::new(x).set_alignment(CellAlignment::Right);
    for r in rows {
        let rss = r.peak_rss_bytes;
        t.add_row(vec![
            Cell::new(&r.workload),
            right(size::show(r.size)),
            Cell::new(&r.status),
            right(count(r.accesses as f64)),
            right(count(r.faults as f64)),
            right(size::human(r.migrated_bytes)),
            right(crate::runs::time(seconds_ns(r.wall_s))),
            right(count(r.rate())),
            right(format!("{:.3}", r.rate() / b.tlb_hit_per_s.max(1.0))),
            right(format!("{:.0}", 1e9 / r.rate().max(1e-9))),
            right(rss.map_or("?".into(), size::human)),
            right(rss.map_or("?".into(), |x| {
                format!("{:.2}", x as f64 / r.footprint.max(1) as f64)
            })),
        ]);
    }
    s.push_str(&t.to_string());
    s.push('\n');
    let mut scaling = Vec::new();
    for r in rows {
        if let Some(small) = rows
            .iter()
            .filter(|x| x.workload == r.workload && x.size < r.size && x.status == "ok")
            .min_by_key(|x| x.size)
            && r.status == "ok"
        {
            let grew = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.1}x", b / a.max(0.01)),
                _ => "?".into(),
            };
            scaling.push(format!(
                "  {:18} {} -> {}: {:.1}x the data, {:.1}x the accesses, {:.1}x the host time \
                 ({} user, {} system)",
                r.workload,
                size::show(small.size),
                size::show(r.size),
                r.footprint as f64 / small.footprint.max(1) as f64,
                r.accesses as f64 / small.accesses.max(1) as f64,
                r.wall_s / small.wall_s.max(1e-9),
                grew(small.user_s, r.user_s),
                grew(small.sys_s, r.sys_s),
            ));
        }
    }
    if !scaling.is_empty() {
        s.push_str("\nscaling:\n");
        s.push_str(&scaling.join("\n"));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    /// This process's CPU times read back, and grow with work done.
    #[test]
    fn cpu_times_come_from_proc() {
        let Some((u0, s0, f0)) = super::cpu_times() else {
            return; // not Linux
        };
        let mut v = vec![0u8; 8 << 20];
        for (b, x) in v.iter_mut().zip((0..251u8).cycle()) {
            *b = x;
        }
        std::hint::black_box(&v);
        let (u1, s1, f1) = super::cpu_times().unwrap();
        assert!(u1 >= u0 && s1 >= s0, "{u0} {u1} {s0} {s1}");
        assert!(f1 > f0, "8 MiB touched: {f0} -> {f1} faults");
    }
}

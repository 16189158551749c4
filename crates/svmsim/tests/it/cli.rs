//! The subcommands of issue 6: each runs, and each class of bad input gets
//! a clear error and exit code 2.

use std::path::PathBuf;

use super::{stderr, stdout, svmsim};

/// A fresh scratch directory under the target dir (kept out of the repo).
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn ok(args: &[&str]) -> String {
    let o = svmsim(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn usage_error(args: &[&str]) -> String {
    let o = svmsim(args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?}\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

#[test]
fn the_demo_compares_three_policies_and_says_why() {
    let out = ok(&["run"]);
    for p in [
        "whole-range (base)",
        "partial ",
        "partial-migrate-whole-map",
    ] {
        assert!(out.contains(p), "{p} missing:\n{out}");
    }
    assert!(out.contains("What differed, and why:"), "{out}");
    assert!(out.contains("Try next:"), "{out}");
    assert!(
        out.contains("seed 1; repeat with: svmsim run --seed 1\n"),
        "{out}"
    );
    // No colour codes when stdout is not a terminal.
    assert!(!out.contains('\u{1b}'), "escape codes in piped output");
}

#[test]
fn run_one_workload_prints_a_row_and_the_repro() {
    let out = ok(&[
        "run", "stream", "--size", "1MiB", "--iters", "1", "--seed", "5",
    ]);
    assert!(out.contains("partial"), "{out}");
    assert!(
        out.contains("seed 5; repeat with: svmsim run stream --size 1MiB --iters 1 --seed 5\n"),
        "{out}"
    );
    let v = ok(&[
        "run",
        "stream",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--verbose",
    ]);
    assert!(v.contains("VRAM in use") && v.contains("wall time"), "{v}");
    let q = ok(&["run", "stream", "--size", "1MiB", "--iters", "1", "--quiet"]);
    assert!(q.is_empty(), "quiet printed: {q}");
}

#[test]
fn xnack_off_reports_eager_mapping_and_a_killed_heap_kernel() {
    // Registered buffers map eagerly; the run finishes.
    let out = ok(&[
        "run", "stream", "--size", "1MiB", "--iters", "1", "--xnack", "off", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][0]["status"]["kind"], "ok", "{out}");
    assert_eq!(v["runs"][0]["spec"]["xnack"], "off");
    // Memory SVM never heard of cannot be served without retry faults: the
    // queue dies with the GPU's memory access fault.
    let out = ok(&[
        "run",
        "unregistered-heap",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--xnack",
        "off",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][0]["status"]["kind"], "killed", "{out}");
    let err = v["runs"][0]["status"]["error"].as_str().unwrap();
    assert!(err.contains("0x1002"), "{err}");
}

#[test]
fn compare_prints_one_table_with_ratios_to_the_baseline() {
    let out = ok(&[
        "compare",
        "gups",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--granularities",
        "0,9",
        "--baseline",
        "partial g9",
    ]);
    assert_eq!(
        out.matches("x │").count() + out.matches("x ┆").count(),
        6,
        "{out}"
    );
    assert!(out.contains("partial g9 (base)"), "{out}");
    assert!(out.contains("1.00x"), "{out}");
    let csv = ok(&["compare", "gups", "--size", "1MiB", "--iters", "1", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("schema,label,workload"), "{csv}");
    assert!(
        lines[1].starts_with("svmsim.runs/3,whole-range,gups,1048576"),
        "{csv}"
    );
}

const GRID: &str = "[base]\nworkload = \"stream\"\nsize = \"1MiB\"\niters = 1\n\n[grid]\npolicy = [\"whole-range\", \"partial\"]\ngranularity = [0, 9]\n";

#[test]
fn sweep_shards_and_merge_give_the_whole_grid() {
    let d = scratch("sweep");
    let grid = d.join("grid.toml");
    std::fs::write(&grid, GRID).unwrap();
    let g = grid.to_str().unwrap();
    let whole = ok(&["sweep", g, "--json", "-j", "2"]);
    let whole: serde_json::Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["runs"].as_array().unwrap().len(), 4);
    let mut files = Vec::new();
    for k in 1..=3 {
        let f = d.join(format!("shard-{k}.json"));
        let o = svmsim(&[
            "sweep",
            g,
            "--shard",
            &format!("{k}/3"),
            "--out",
            f.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        files.push(f.to_str().unwrap().to_owned());
    }
    let mut args = vec!["merge", "--json"];
    args.extend(files.iter().map(String::as_str));
    let merged: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(
        merged["runs"], whole["runs"],
        "merged shards differ from the whole sweep"
    );
    // The merged report has the tables, and the plots the numbers give:
    // kernel time by each setting the grid varies; the plots over time
    // need the runs themselves.
    let rep = d.join("merged-report");
    let mut args = vec!["merge", "--report", rep.to_str().unwrap(), "-q"];
    args.extend(files.iter().map(String::as_str));
    ok(&args);
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(
        html.contains("partial g9") && html.contains("merged from shard files"),
        "merged report"
    );
    for axis in ["policy", "granularity"] {
        assert!(
            html.contains(&format!("id=\"plot-by-{axis}\""))
                && rep.join(format!("by-{axis}.svg")).exists(),
            "no kernel time by {axis} in the merged report"
        );
    }
    assert!(html.contains("<nav class=\"toc\">") && html.contains("href=\"#plot-by-policy\""));
    assert!(
        !html.contains("plot-migrated"),
        "a plot over time from numbers alone"
    );
    // A shard missing is named.
    let err = usage_error(&["merge", &files[0], &files[1]]);
    assert!(err.contains("missing"), "{err}");
    // More shards than points: the spare ones run nothing, say so, print
    // no table, and their files merge with the rest.
    let spare = d.join("spare.json");
    let o = svmsim(&[
        "sweep",
        g,
        "--shard",
        "5/5",
        "--out",
        spare.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no points (the grid has 4)"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "an empty shard printed a table");
    let mut args = vec!["merge", "--json"];
    args.extend(files.iter().map(String::as_str));
    args.push(spare.to_str().unwrap());
    let merged: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(merged["runs"], whole["runs"]);
}

#[test]
fn diff_names_what_changed_between_two_result_files() {
    let d = scratch("diff");
    let (a, b) = (d.join("a.json"), d.join("b.json"));
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "stream", "--size", "1MiB", "--iters", "1", "--json"];
        args.extend_from_slice(extra);
        ok(&args)
    };
    std::fs::write(&a, run(&[])).unwrap();
    std::fs::write(&b, run(&["--set", "default_granularity=0"])).unwrap();
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let o = svmsim(&["diff", sa, sb]);
    assert_eq!(o.status.code(), Some(1), "they differ: {}", stderr(&o));
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(t.contains("config.default_granularity  9 -> 0"), "{t}");
    assert!(t.contains("metrics.kernel_ns") && t.contains("x  "), "{t}");
    let o = svmsim(&["diff", sa, sb, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "svmsim.diff/1");
    assert_eq!(v["differs"], true);
    let kernel = v["pairs"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "metrics.kernel_ns")
        .unwrap()
        .clone();
    let ratio = kernel["b"].as_f64().unwrap() / kernel["a"].as_f64().unwrap();
    assert!((kernel["ratio"].as_f64().unwrap() - ratio).abs() < 1e-12);
    // The same file twice: exit 0.
    let o = svmsim(&["diff", sa, sa]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Not a result file: a usage error naming it and the field.
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{\"schema\": \"svmsim.timeline/2\"}").unwrap();
    let err = usage_error(&["diff", sa, bad.to_str().unwrap()]);
    assert!(
        err.contains("bad.json") && err.contains("\"schema\""),
        "{err}"
    );
}

#[test]
fn replay_of_a_recording_gives_the_recorded_run() {
    let d = scratch("replay");
    let t = d.join("bfs.trace");
    let run = ok(&[
        "run",
        "bfs",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--record",
        t.to_str().unwrap(),
        "--json",
    ]);
    let rep = ok(&["replay", t.to_str().unwrap(), "--json"]);
    let (run, rep): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&run).unwrap(),
        serde_json::from_str(&rep).unwrap(),
    );
    for k in [
        "faults",
        "migrated_bytes",
        "kernel_ns",
        "fault_p50_ns",
        "pages_to_vram",
    ] {
        assert_eq!(
            run["runs"][0]["metrics"][k], rep["runs"][0]["metrics"][k],
            "{k}"
        );
    }
    assert_eq!(
        rep["runs"][0]["spec"]["workload"],
        format!("trace:{}", t.display())
    );
    // A granularity replaces the one the recording's SET_ATTRs give.
    let g0 = ok(&[
        "replay",
        t.to_str().unwrap(),
        "--granularity",
        "0",
        "--json",
    ]);
    let g0: serde_json::Value = serde_json::from_str(&g0).unwrap();
    let faults = |v: &serde_json::Value| v["runs"][0]["metrics"]["faults"].as_u64().unwrap();
    assert!(
        faults(&g0) > 2 * faults(&rep),
        "{} against {}",
        faults(&g0),
        faults(&rep)
    );
    // The CSV form (docs/trace.md): two kernels on one GPU.
    let csv = d.join("a.csv");
    std::fs::write(
        &csv,
        "kernel,gpu_id,wave,op,addr,len\n0,0x1002,0,load,0x7f0000000000,256\n0,0x1002,1,store,0x7f0000200000,256\n1,0x1002,0,load,0x7f0000200000,256\n",
    )
    .unwrap();
    let out = ok(&["replay", csv.to_str().unwrap(), "--csv-input", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][0]["status"]["kind"], "ok", "{out}");
    assert!(
        v["runs"][0]["metrics"]["faults"].as_u64().unwrap() >= 2,
        "{out}"
    );
    std::fs::write(
        &csv,
        "kernel,gpu_id,wave,op,addr,len\n0,0x1002,0,jump,0,1\n",
    )
    .unwrap();
    let e = usage_error(&["replay", csv.to_str().unwrap(), "--csv-input"]);
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn listings_have_a_line_each() {
    let p = ok(&["profiles"]);
    assert_eq!(p.lines().count(), svm_sim::timing::BUILT_IN.len(), "{p}");
    assert!(p.lines().all(|l| l.split_whitespace().count() > 2), "{p}");
    let w = ok(&["workloads"]);
    assert_eq!(w.lines().count(), svm_workloads::ALL.len(), "{w}");
    assert!(w.contains("shared-buffer"), "{w}");
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for c in [
        "run",
        "compare",
        "sweep",
        "merge",
        "replay",
        "scenario",
        "profiles",
        "workloads",
    ] {
        let h = ok(&[c, "--help"]);
        assert!(h.contains("Example"), "{c} --help has no examples:\n{h}");
    }
    let h = ok(&["--help"]);
    assert!(h.contains("Exit codes"), "{h}");
}

#[test]
fn bad_input_names_the_flag_and_suggests_the_fix() {
    let e = usage_error(&["run", "stream", "--frobnicate"]);
    assert!(e.contains("--frobnicate"), "{e}");
    let e = usage_error(&["run", "stream", "--size", "2MB"]);
    assert!(e.contains("--size") && e.contains("MiB"), "{e}");
    let e = usage_error(&["run", "stream", "--size", "lots"]);
    assert!(e.contains("2MiB"), "{e}");
    let e = usage_error(&["run", "streem"]);
    assert!(
        e.contains("unknown workload \"streem\"") && e.contains("stream"),
        "{e}"
    );
    let e = usage_error(&["run", "stream", "--policy", "fast"]);
    assert!(e.contains("--policy") && e.contains("whole-range"), "{e}");
    let e = usage_error(&["compare", "stream", "--policies", "partial,fast"]);
    assert!(e.contains("--policies") && e.contains("\"fast\""), "{e}");
    let e = usage_error(&["run", "stream", "--profile", "mi999"]);
    assert!(e.contains("--profile") && e.contains("mi210"), "{e}");
    let e = usage_error(&["run", "ping-pong", "--gpus", "1"]);
    assert!(
        e.contains("--gpus") && e.contains("needs at least 2"),
        "{e}"
    );
    let e = usage_error(&["sweep", "no/such/file.toml"]);
    assert!(e.contains("cannot read no/such/file.toml"), "{e}");
    let e = usage_error(&["replay", "no/such.trace"]);
    assert!(e.contains("cannot read"), "{e}");
    let e = usage_error(&["scenario", "no/such.toml"]);
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn bad_sweep_files_and_shards_are_placed() {
    let d = scratch("bad-sweep");
    let cases = [
        ("[base\n", "grid.toml:1"),
        (
            "[base]\nworkload = \"stream\"\nsize = \"2MB\"\n",
            "grid.toml:3: field size",
        ),
        ("[grid]\npolicy = [\"fast\"]\n", "grid.toml:2: field policy"),
        (
            "[grid]\nworkload = [\"stream\", \"gupps\"]\n",
            "grid.toml:2: field workload",
        ),
        ("[base]\nwidth = 1\n", "unknown field \"width\""),
        ("[stuff]\n", "unknown section [stuff]"),
    ];
    for (text, want) in cases {
        let f = d.join("grid.toml");
        std::fs::write(&f, text).unwrap();
        let e = usage_error(&["sweep", f.to_str().unwrap()]);
        assert!(e.contains(want), "{text:?}: wanted {want:?} in {e}");
    }
    let f = d.join("grid.toml");
    std::fs::write(&f, GRID).unwrap();
    for s in ["4/3", "0/3", "3", "a/b"] {
        let e = usage_error(&["sweep", f.to_str().unwrap(), "--shard", s]);
        assert!(e.contains("--shard"), "{s}: {e}");
    }
}

#[test]
fn output_that_cannot_be_written_is_refused_or_internal() {
    // A path that cannot be written is found before the run: a usage error.
    let o = svmsim(&[
        "run",
        "stream",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--events",
        "/no/such/dir/e.smi",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write /no/such/dir/e.smi"));
    // Standard output failing mid-run (a full disk) is an I/O error: exit 4.
    let full = std::fs::File::options().write(true).open("/dev/full");
    if let Ok(full) = full {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_svmsim"))
            .arg("workloads")
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("cannot write to stdout"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn every_example_sweep_parses() {
    let dir = super::root().join("examples/sweeps");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let (s, _) = svmsim::sweep::parse(&p.display().to_string(), &text, &mut |t| {
            Err(format!("the examples replay no trace ({t})"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.points.is_empty());
        n += 1;
    }
    assert!(n > 0, "no sweeps in {}", dir.display());
}

#[test]
fn a_malformed_profile_file_is_placed() {
    let d = scratch("bad-profile");
    let f = d.join("gpu.toml");
    std::fs::write(
        &f,
        "name = \"x\"\ndescription = \"y\"\n[gpu]\ncount = \"two\"\n",
    )
    .unwrap();
    let e = usage_error(&[
        "run",
        "stream",
        "--size",
        "1MiB",
        "--profile",
        f.to_str().unwrap(),
    ]);
    assert!(
        e.contains("--profile") && e.contains("gpu.toml:4:9") && e.contains("count = \"two\""),
        "{e}"
    );
}

#[test]
fn run_takes_a_scenario_file_too() {
    let a = ok(&["run", "examples/munmap-race.toml", "--seed", "3"]);
    let b = ok(&["scenario", "examples/munmap-race.toml", "--seed", "3"]);
    assert_eq!(a, b);
    let e = usage_error(&["run", "examples/munmap-race.toml", "--timeline", "t.json"]);
    assert!(e.contains("--timeline"), "{e}");
    let e = usage_error(&["run", "no/such.toml"]);
    assert!(e.contains("cannot read no/such.toml"), "{e}");
}

#[test]
fn impossible_configurations_are_usage_errors() {
    for (args, want) in [
        (&["run", "stream", "--size", "1TiB"][..], "--size"),
        (&["run", "stream", "--iters", "0"][..], "--iters"),
        (&["run", "stream", "--vram", "4096"][..], "--vram"),
        (
            &["run", "stream", "--size", "4MiB", "--oversubscribe", "100"][..],
            "--oversubscribe",
        ),
        (
            &["run", "stream", "--size", "4MiB", "--oversubscribe", "4"][..],
            "below one 2MiB block",
        ),
        (
            &["run", "stream", "--oversubscribe", "nan"][..],
            "--oversubscribe",
        ),
        (
            &["run", "stream", "--granularity", "64"][..],
            "--granularity",
        ),
        (
            &["run", "stream", "--gpus", "9", "--profile", "mi300x"][..],
            "no built-in profile has 9",
        ),
        (
            &["run", "--size", "8MiB"][..],
            "the demo's configuration is fixed",
        ),
        (&["compare", "stream", "--policies", ","][..], "--policies"),
        (
            &["compare", "stream", "--policies", "bogus"][..],
            "--policies",
        ),
        (
            &["compare", "stream", "--granularities", "0,64"][..],
            "--granularities",
        ),
        (&["compare", "stream", "-j", "0"][..], "--jobs 0"),
        (
            &["run", "stream", "--timeline", "/no/such/dir/t.json"][..],
            "cannot write /no/such/dir/t.json",
        ),
    ] {
        let e = usage_error(args);
        assert!(e.contains(want), "{args:?}: wanted {want:?} in {e}");
    }
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_svmsim"))
        .arg("workloads")
        .current_dir(super::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end at once.
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn repro_commands_parse_back() {
    let out = ok(&[
        "run", "stream", "--size", "1572865", "--iters", "1", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let repro = v["runs"][0]["repro"].as_str().unwrap();
    assert!(repro.contains("--size 1572865"), "{repro}");
    let args: Vec<&str> = repro.split_whitespace().skip(1).collect();
    let again = ok(&[&args[..], &["--json"]].concat());
    assert_eq!(again, out);
}

/// The README shows the demo's output; it must be what the demo prints.
#[test]
fn readme_shows_the_real_demo_output() {
    let readme = std::fs::read_to_string(super::root().join("README.md")).unwrap();
    let at = readme
        .find("```text\n")
        .expect("a text block in the README")
        + "```text\n".len();
    let block = &readme[at..at + readme[at..].find("```").unwrap()];
    let out = ok(&["run"]);
    assert_eq!(
        block.trim_end(),
        out.trim_end(),
        "README's demo output is stale: paste `svmsim run`'s"
    );
}

/// A run's JSON counts the accesses its waves made, per GPU and in total,
/// so any run gives an access rate (issue 18, item 1).
#[test]
fn the_json_counts_reads_and_writes_per_gpu_and_in_total() {
    // stream at 768 KiB: three arrays of 256 KiB, one 256-byte wave
    // instruction per 64 words: 1024 stores and 2048 loads a launch.
    let out = ok(&[
        "run", "stream", "--size", "768KiB", "--iters", "3", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let run = &v["runs"][0];
    let m = &run["metrics"];
    assert_eq!(m["writes"], 3 * 1024, "{m}");
    assert_eq!(m["reads"], 3 * 2048, "{m}");
    assert_eq!(m["accesses"], 9 * 1024, "{m}");
    assert_eq!(run["gpu_end"][0]["writes"], 3 * 1024);
    // Two GPUs: each has its own count, and they add up to the total.
    let out = ok(&["run", "multi-gpu-split", "--size", "768KiB", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let run = &v["runs"][0];
    let per_gpu: Vec<u64> = (0..2)
        .map(|g| {
            let e = &run["gpu_end"][g];
            e["reads"].as_u64().unwrap() + e["writes"].as_u64().unwrap()
        })
        .collect();
    assert!(per_gpu.iter().all(|&n| n > 0), "{per_gpu:?}");
    assert_eq!(
        run["metrics"]["accesses"].as_u64().unwrap(),
        per_gpu.iter().sum::<u64>()
    );
}

/// `svmsim bench` runs each workload in a child, with the baselines of the
/// same run, and says per run what it did and cost; `--host-stats` is how
/// a child reports its cost (issue 18, item 1).
#[test]
fn the_suite_benchmark_reports_rates_rss_and_baselines() {
    let out = ok(&[
        "bench",
        "--sizes",
        "256KiB,1MiB",
        "--workloads",
        "stream,ping-pong",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let b = &v["baselines"];
    for k in [
        "tlb_hit_per_s",
        "memcpy_bytes_per_s",
        "miss_ns",
        "migrate_bytes_per_s",
    ] {
        assert!(b[k].as_f64().unwrap() > 0.0, "{k}: {b}");
    }
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["accesses"].as_u64().unwrap() > 0, "{r}");
        assert!(r["wall_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["peak_rss_bytes"].as_u64().unwrap() > r["footprint"].as_u64().unwrap(),
            "{r}"
        );
    }
    // Four times the data, about four times the accesses (the arrays are
    // whole wave instructions): the row counts what the run did.
    let acc = |i: usize| rows[i]["accesses"].as_u64().unwrap() as f64;
    assert!(
        (acc(2) / acc(0) - 4.0).abs() < 0.01,
        "{} {}",
        acc(0),
        acc(2)
    );
    // The table form names the baselines and the scaling.
    let text = ok(&["bench", "--sizes", "256KiB,512KiB", "--workloads", "stream"]);
    assert!(
        text.contains("TLB-hit kernel") && text.contains("memcpy"),
        "{text}"
    );
    assert!(
        text.contains("scaling:") && text.contains("stream"),
        "{text}"
    );
    let bad = usage_error(&["bench", "--workloads", "nope"]);
    assert!(bad.contains("no workload nope"), "{bad}");
}

#[test]
fn host_stats_are_written_for_a_workload_run_only() {
    let d = scratch("host-stats");
    let f = d.join("h.json");
    ok(&[
        "run",
        "stream",
        "--size",
        "256KiB",
        "--host-stats",
        f.to_str().unwrap(),
    ]);
    let h: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    assert!(h["wall_s"].as_f64().unwrap() > 0.0);
    assert!(h["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    // CPU time and page faults, as the process's /proc/self/stat says
    // them: it touched at least its footprint's pages.
    assert!(h["user_s"].as_f64().unwrap() >= 0.0, "{h}");
    assert!(h["sys_s"].as_f64().unwrap() >= 0.0, "{h}");
    assert!(h["minor_faults"].as_u64().unwrap() > 64, "{h}");
    let e = usage_error(&["run", "--host-stats", f.to_str().unwrap()]);
    assert!(e.contains("--host-stats"), "{e}");
}

/// `--phantom` keeps no bytes: the run's memory system is the real run's
/// (same simulated times), its status says the data went unchecked, and
/// a workload that would keep host data of its footprint's size is
/// refused (issue 18, item 5).
#[test]
fn phantom_runs_the_same_memory_system_without_bytes() {
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "stream", "--size", "3MiB", "--json"];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).expect("JSON");
        v["runs"][0].clone()
    };
    let (real, phantom) = (run(&[]), run(&["--phantom"]));
    assert_eq!(real["status"]["kind"], "ok");
    assert_eq!(phantom["status"]["kind"], "unchecked");
    for k in [
        "kernel_ns",
        "faults",
        "migrated_bytes",
        "accesses",
        "end_ns",
    ] {
        assert_eq!(real["metrics"][k], phantom["metrics"][k], "{k}");
    }
    let text = ok(&[
        "run",
        "first-touch",
        "--size",
        "8MiB",
        "--gpus",
        "2",
        "--phantom",
    ]);
    assert!(
        text.contains("ok, unchecked") && text.contains("data checks off"),
        "{text}"
    );
    assert!(
        text.contains("--phantom"),
        "the repro line keeps the flag: {text}"
    );
    // The same workload with bytes checks that untouched memory reads zero.
    let text = ok(&["run", "first-touch", "--size", "8MiB", "--gpus", "2"]);
    assert!(text.contains("┆ ok "), "{text}");
    let e = usage_error(&["run", "gups", "--phantom"]);
    assert!(e.contains("phantom") && e.contains("first-touch"), "{e}");
    let e = usage_error(&["run", "first-touch", "--phantom", "--size", "8TiB"]);
    assert!(e.contains("phantom run"), "{e}");
}

/// `compare` runs its configurations on several cores, and what it prints
/// does not depend on how many (issue 18, item 4).
#[test]
fn compare_output_is_the_same_on_one_core_or_many() {
    for fmt in ["--json", "--csv"] {
        let base = [
            "compare",
            "shared-buffer",
            "--size",
            "1MiB",
            "--granularities",
            "0,9",
            fmt,
        ];
        let one = ok(&[&base[..], &["-j", "1"]].concat());
        let many = ok(&[&base[..], &["-j", "4"]].concat());
        assert_eq!(one, many, "{fmt}");
    }
}

/// Every run explains itself under its table: where the time went, the
/// buffer that cost most, thrashing where a buffer moved more than twice
/// its size (with who pulled it), and a command to try; JSON carries the
/// lines only when asked, and CSV puts them on stderr.
#[test]
fn a_run_says_what_happened_and_json_only_when_asked() {
    let t = ok(&["run", "multi-gpu-split", "--size", "4MiB", "--iters", "1"]);
    let block = &t[t.find("What happened:").expect("an explanation")..];
    assert!(block.contains("parked on faults"), "{block}");
    assert!(
        block.contains("Its waves raised") && block.contains("the handlers served"),
        "{block}"
    );
    assert!(
        block.contains("Its GPU accesses moved") && block.contains("in their own VRAM"),
        "{block}"
    );
    // The served faults' latency, phase by phase.
    assert!(
        block.contains("A served fault took")
            && block.contains("waiting for locks")
            && block.contains("in the handler"),
        "{block}"
    );
    assert!(block.contains("The buffer that cost most"), "{block}");
    assert!(
        block.contains("Thrashing:")
            && block.contains("GPU 0 (0x1002)")
            && block.contains("GPU 1 (0x2002)"),
        "{block}"
    );
    assert!(
        block.contains("Try next:\n  svmsim compare multi-gpu-split"),
        "{block}"
    );
    // A run that moves each buffer once does not thrash.
    let t = ok(&["run", "reduction", "--size", "4MiB", "--iters", "1"]);
    assert!(
        t.contains("What happened:") && !t.contains("Thrashing"),
        "{t}"
    );
    let args = [
        "run",
        "multi-gpu-split",
        "--size",
        "4MiB",
        "--iters",
        "1",
        "--json",
    ];
    let quiet = ok(&args);
    assert!(!quiet.contains("what_happened"), "{quiet}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&[&args[..], &["--explain", "on"]].concat())).unwrap();
    let run = &v["runs"][0];
    let lines: Vec<&str> = run["what_happened"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("Thrashing:")),
        "{lines:?}"
    );
    let b = &run["buffers"][0];
    assert!(
        b["bytes_in"].as_u64().unwrap() + b["bytes_out"].as_u64().unwrap()
            > 2 * b["bytes"].as_u64().unwrap()
    );
    let o = svmsim(&[
        "run",
        "reduction",
        "--size",
        "4MiB",
        "--csv",
        "--explain",
        "on",
    ]);
    assert!(stdout(&o).starts_with("schema,") && stderr(&o).contains("What happened:"));
    // The demo explains itself its own way, once.
    let demo = ok(&["run"]);
    assert!(demo.contains("What differed, and why:") && !demo.contains("What happened:"));
}

/// The fault counters add up: every fault a ring took was served,
/// dropped or refused by a handler, or dropped before it; the pages the
/// GPUs touched are counted once, by where they were.
#[test]
fn the_fault_counters_account_for_every_fault() {
    for (w, extra) in [
        ("stream", &[][..]),
        ("ping-pong", &[][..]),
        ("shared-buffer", &["--driver", "uvm"][..]),
        ("false-sharing", &["--driver", "xe"][..]),
    ] {
        let args = [
            &["run", w, "--size", "4MiB", "--iters", "1", "--json"][..],
            extra,
        ]
        .concat();
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        let m = &v["runs"][0]["metrics"];
        let n = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("{w}: no {k}"));
        // (`faults` is what the driver saw: never more than the waves raised.)
        assert!(
            n("faults") <= n("faults_raised") + n("faults_filtered"),
            "{w}"
        );
        assert_eq!(
            n("faults_raised"),
            n("faults_served")
                + n("faults_dropped")
                + n("faults_refused")
                + n("faults_before_handler"),
            "{w}"
        );
        assert!(n("faults_served") > 0 && n("touches_local") > 0, "{w}");
        assert!(n("fault_map_ns") >= n("fault_bind_ns"), "{w}");
    }
}

/// `--version` names the crate version and the revision it was built
/// from; a command lists only the options that act in it (replay's trace
/// fixes size, iterations, granularity, oversubscription and prefetch).
#[test]
fn the_version_is_real_and_help_lists_only_what_acts() {
    let v = ok(&["--version"]);
    let want = format!("svmsim {} (", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&want) && v.trim_end().ends_with(')'), "{v}");
    assert!(!v.contains("0.0.0"), "{v}");
    let help = ok(&["replay", "--help"]);
    for f in ["--size", "--iters", "--oversubscribe", "--prefetch"] {
        assert!(!help.contains(f), "replay --help lists {f}:\n{help}");
    }
    assert!(
        help.contains("--profile") && help.contains("--policy") && help.contains("--granularity"),
        "{help}"
    );
}

/// The JSON lists each kernel with its GPU (node index and gpu_id) and
/// what it did; the kernels add up to the run's totals.
#[test]
fn json_lists_each_kernel_and_its_gpu() {
    let d = scratch("kernels");
    let kcsv = d.join("kernels.csv");
    let j = ok(&[
        "run",
        "multi-gpu-split",
        "--size",
        "1MiB",
        "--iters",
        "2",
        "--json",
        "--kernels-csv",
        kcsv.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    let r = &v["runs"][0];
    let kernels = r["kernels"].as_array().expect("kernels");
    assert!(kernels.len() >= 2, "{kernels:?}");
    let sum = |f: &str| kernels.iter().map(|k| k[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("accesses"), r["metrics"]["accesses"].as_u64().unwrap());
    assert_eq!(
        sum("retries"),
        r["metrics"]["faults_retried"].as_u64().unwrap()
    );
    for (i, g) in r["gpu_end"].as_array().unwrap().iter().enumerate() {
        assert_eq!(g["node"], i);
    }
    // The bytes by place are the GPU kernels' bytes, and the served
    // faults' phases add up to their latency, the handler's own work
    // holding the migrations and mappings.
    let m = |f: &str| r["metrics"][f].as_u64().unwrap();
    let gpu_bytes: u64 = kernels
        .iter()
        .filter(|k| !k["node"].is_null())
        .map(|k| k["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        m("bytes_local") + m("bytes_peer") + m("bytes_sys"),
        gpu_bytes
    );
    assert!(m("bytes_local") > 0 && m("fault_latency_ns") > 0);
    assert_eq!(
        m("fault_delivery_ns") + m("fault_queued_ns") + m("fault_lock_ns") + m("fault_handler_ns"),
        m("fault_latency_ns")
    );
    assert!(m("fault_migrate_ns") + m("fault_map_ns") <= m("fault_handler_ns"));
    // Both GPUs ran kernels, each named by its node and gpu_id.
    for node in [0, 1] {
        let k = kernels
            .iter()
            .find(|k| k["node"] == node)
            .expect("a kernel per GPU");
        assert_eq!(k["gpu_id"], r["gpu_end"][node]["gpu_id"]);
        assert!(k["waves"].as_u64().unwrap() > 0 && k["end_ns"].as_u64() > k["launch_ns"].as_u64());
    }
    assert!(
        r.get("kernels_left_out").is_none(),
        "nothing left out of a short run"
    );
    // The per-kernel CSV: a row per kernel of the JSON, every field of it
    // under the same name with the same value.
    let text = std::fs::read_to_string(&kcsv).unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(str::to_owned).collect();
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), kernels.len());
    for (row, k) in rows.iter().zip(kernels) {
        assert_eq!(&row[0], "svmsim.runs/3");
        assert_eq!(&row[1], r["label"].as_str().unwrap());
        for (name, cell) in header.iter().zip(row.iter()).skip(2) {
            let want = match &k[name.as_str()] {
                serde_json::Value::Null => String::new(),
                v => v.to_string(),
            };
            assert_eq!(cell, want, "{name}");
        }
        let fields = k.as_object().unwrap().len();
        assert_eq!(header.len() - 2, fields, "{header:?}");
    }
}

/// CSV and JSON carry the same metrics: a column per key of the JSON's
/// `metrics`, under the same name, with the same value (the JSON leaves
/// some out when zero).
#[test]
fn csv_and_json_carry_the_same_metrics() {
    let args = [
        "run",
        "histogram",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--driver",
        "xe",
    ];
    let v: serde_json::Value =
        serde_json::from_str(&ok(&[&args[..], &["--json"]].concat())).unwrap();
    assert_eq!(v["schema"], "svmsim.runs/3");
    let metrics = v["runs"][0]["metrics"].as_object().unwrap();
    let csv = ok(&[&args[..], &["--csv"]].concat());
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |k: &str| head.iter().position(|h| *h == k);
    for (k, want) in metrics {
        let i = col(k).unwrap_or_else(|| panic!("no CSV column {k}"));
        assert_eq!(row[i], want.to_string(), "{k}");
    }
    // A CSV metric the JSON leaves out is one it leaves out for being 0.
    let (first, last) = (col("kernel_ns").unwrap(), col("stale_dma_pages").unwrap());
    for i in first..last {
        assert!(
            metrics.contains_key(head[i]) || row[i] == "0",
            "{}",
            head[i]
        );
    }
    assert_eq!(row[col("xnack").unwrap()], "on");
}

/// A scenario's report says what its buffers cost, as a run's
/// explanation does, and its JSON carries them.
#[test]
fn a_scenario_reports_its_buffers() {
    let t = ok(&["run", "examples/xe-atomics.toml"]);
    assert!(
        t.contains("The buffer that cost most: 16.0KiB")
            && t.contains("16.0KiB back to system memory"),
        "{t}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["run", "examples/xe-atomics.toml", "--json"])).unwrap();
    let b = &v["processes"][0]["buffers"][0];
    assert_eq!(
        (b["bytes_in"].as_u64(), b["bytes_out"].as_u64()),
        (Some(16384), Some(16384)),
        "{v}"
    );
}

/// Any runs side by side say what differed between them, not only a
/// comparison of drivers; `--explain off` leaves both blocks out.
#[test]
fn a_compare_of_granularities_says_what_differed() {
    let args = [
        "compare",
        "stream",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--policies",
        "partial",
        "--granularities",
        "0,9",
    ];
    let t = ok(&args);
    assert!(t.contains("What happened:\n  - partial g0:"), "{t}");
    assert!(
        t.contains("What differed, and why:\n  - partial g0 (the baseline)"),
        "{t}"
    );
    assert!(t.contains("faults against"), "{t}");
    let quiet = ok(&[&args[..], &["--explain", "off"]].concat());
    assert!(
        !quiet.contains("What happened") && !quiet.contains("What differed"),
        "{quiet}"
    );
}

/// A sweep of many points explains its fastest and its slowest in full
/// (and names the ones that thrashed), not every point.
#[test]
fn a_large_sweep_explains_its_fastest_and_slowest() {
    let dir = scratch("explain-sweep");
    let grid = dir.join("g.toml");
    std::fs::write(&grid, format!("{GRID}xnack = [true, false]\n")).unwrap();
    let t = ok(&["sweep", grid.to_str().unwrap()]);
    let block = &t[t.find("What happened:").expect("an explanation")..];
    assert!(
        block.contains("8 runs; the fastest and the slowest follow"),
        "{block}"
    );
    assert_eq!(block.matches("\n  - ").count(), 2, "{block}");
}

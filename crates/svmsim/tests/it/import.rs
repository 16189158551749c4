//! `svmsim import`: a run's own SMI messages (`--events`) imported and
//! replayed (docs/import.md, "What comes back").

use std::collections::BTreeSet;
use std::path::Path;

use super::cli::scratch;
use super::{stderr, stdout, svmsim};

fn ok(args: &[&str]) -> String {
    let o = svmsim(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}\n{}", stderr(&o));
    stdout(&o)
}

/// The messages of every file in `dir` with event id `id`, fields after
/// the timestamp and pid.
fn messages(dir: &Path, id: &str) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            let w: Vec<&str> = l.split(' ').collect();
            if w[0] == id {
                out.push(w[3..].join(" "));
            }
        }
    }
    out
}

/// Runs `workload`, imports its SMI messages and replays the trace on the
/// same machine: (the run's GPU faults, the replay's).
fn round_trip(workload: &str, gpus: &str) -> (Vec<String>, Vec<String>, String) {
    round_trip_with(workload, gpus, &[])
}

/// [`round_trip`], the run and the replay both given `extra` flags.
fn round_trip_with(
    workload: &str,
    gpus: &str,
    extra: &[&str],
) -> (Vec<String>, Vec<String>, String) {
    let d = scratch(&format!("import-{workload}-{}", extra.len()));
    let (run, again, trace) = (d.join("run"), d.join("again"), d.join("t.trace"));
    let s = |p: &Path| p.display().to_string();
    let (run_s, again_s, trace_s) = (s(&run), s(&again), s(&trace));
    let run_args = [
        &[
            "run", workload, "--size", "4MiB", "--gpus", gpus, "--events", &run_s,
        ][..],
        extra,
    ]
    .concat();
    ok(&run_args);
    let report = ok(&["import", &run_s, "-o", &trace_s]);
    let replay_args = [
        &["replay", &trace_s, "--gpus", gpus, "--events", &again_s][..],
        extra,
    ]
    .concat();
    ok(&replay_args);
    let faults = |dir: &Path| messages(dir, "7");
    // Migrations for GPU faults (trigger 1): their windows.
    let windows = |dir: &Path| -> BTreeSet<String> {
        messages(dir, "5")
            .into_iter()
            .filter(|m| m.ends_with(" 1"))
            .map(|m| m.split(' ').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        windows(&run),
        windows(&again),
        "{workload}: the same windows migrate"
    );
    (faults(&run), faults(&again), report)
}

/// A run whose every fault is a first touch comes back fault for fault:
/// the same pages, accesses and order.
#[test]
fn first_touches_come_back_fault_for_fault() {
    let (run, again, report) = round_trip("first-touch", "1");
    assert!(!run.is_empty());
    assert_eq!(run, again);
    assert!(
        report.contains("GPUs: 0x1002 as GPU 0 (0x1002)"),
        "{report}"
    );
    assert!(
        report.contains(&format!("{} GPU faults as first touches", run.len())),
        "{report}"
    );
}

/// Where kfd served several faults of one window (waves that faulted at
/// once, served 2 ms apart through its duplicate window), the replay's
/// first touches fault each window once: its faults are some of the
/// run's, and the same windows migrate.
#[test]
fn repeated_faults_of_a_window_come_back_as_its_first() {
    for w in ["stream", "reduction"] {
        let (run, again, _) = round_trip(w, "1");
        let seen: BTreeSet<&String> = run.iter().collect();
        assert!(!again.is_empty() && again.len() <= run.len(), "{w}");
        assert!(
            again.iter().all(|f| seen.contains(f)),
            "{w}: {again:?} not in {run:?}"
        );
    }
}

/// With the IH's stale-fault filter (the 2026 amdgpu retry-fault series,
/// `ih_stale_filter`), kfd no longer re-serves the stale entries of a deep
/// retry ring, and a run comes back fault for fault: the same pages,
/// accesses and order, one GPU or two.
#[test]
fn with_the_ih_stale_filter_a_run_comes_back_fault_for_fault() {
    for (w, gpus) in [
        ("stream", "1"),
        ("bfs", "1"),
        ("ping-pong", "2"),
        ("multi-gpu-split", "2"),
    ] {
        let (run, again, _) = round_trip_with(w, gpus, &["--set", "ih_stale_filter=on"]);
        assert!(!run.is_empty(), "{w}");
        assert_eq!(run, again, "{w}");
    }
}

/// Bad input: a directory without SMI files, a per-GPU file of no known
/// GPU, a bad line (file, line and field named), and an output that is
/// the input; nothing is written.
#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let d = scratch("import-bad");
    let s = |p: &Path| p.display().to_string();
    let out = d.join("t.trace");
    let err = |args: &[&str]| {
        let o = svmsim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!out.exists());
        stderr(&o)
    };
    assert!(err(&["import", &s(&d), "-o", &s(&out)]).contains("no gpu-0x<gpu_id>.smi file"));
    let raw = d.join("events.txt");
    std::fs::write(&raw, "7 100 -1 @7f(1002) W\n").unwrap();
    assert!(err(&["import", &s(&raw), "-o", &s(&out)]).contains("--gpu-id"));
    let bad = d.join("gpu-0x1002.smi");
    std::fs::write(&bad, "7 100 -1 @7f(1002) W\n7 101 -1 @80(1002) Q\n").unwrap();
    let e = err(&["import", &s(&bad), "-o", &s(&out)]);
    assert!(e.contains("gpu-0x1002.smi:2: access"), "{e}");
    let e = err(&["import", &s(&bad), "-o", &s(&bad)]);
    assert!(e.contains("gpu-0x1002.smi"), "{e}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap().lines().count(), 2);
    // Nor onto a file of an input directory.
    let dir = d.join("smi");
    std::fs::create_dir(&dir).unwrap();
    let member = dir.join("gpu-0x1002.smi");
    std::fs::write(&member, "7 100 -1 @7f(1002) W\n").unwrap();
    let o = svmsim(&["import", &s(&dir), "-o", &s(&member)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&member).unwrap(),
        "7 100 -1 @7f(1002) W\n"
    );
    // Given the GPU, the plain file imports.
    ok(&["import", &s(&raw), "--gpu-id", "0x1002", "-o", &s(&out)]);
    assert!(out.exists());
}

/// An imported trace is a workload like any other: `compare` runs it under
/// each driver (the kfd row is what `replay` gives, and `-j 1` prints what
/// `-j 2` does), a sweep replays it at each point, and a granularity
/// applies to the ranges it makes.
#[test]
fn an_imported_trace_compares_and_sweeps_like_a_workload() {
    let d = scratch("import-compare");
    let s = |p: &Path| p.display().to_string();
    let (smi, trace) = (d.join("smi"), d.join("app.trace"));
    ok(&["run", "stream", "--size", "4MiB", "--events", &s(&smi)]);
    ok(&["import", &s(&smi), "-o", &s(&trace)]);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&ok(&a)).unwrap()
    };
    let metric =
        |v: &serde_json::Value, run: usize, k: &str| v["runs"][run]["metrics"][k].as_u64().unwrap();
    let t = s(&trace);
    let replay = json(&["replay", &t]);
    let cmp = ["compare", &t, "--drivers", "kfd,uvm,xe"];
    let both = json(&[&cmp[..], &["-j", "2"]].concat());
    let runs = both["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for (r, driver) in runs.iter().zip(["kfd", "uvm", "xe"]) {
        assert_eq!(r["status"]["kind"], "ok", "{driver}: {r}");
        assert_eq!(r["spec"]["workload"], format!("trace:{t}"));
        assert_eq!(r["spec"]["config"]["driver"], driver);
    }
    for k in ["faults", "migrated_bytes", "kernel_ns"] {
        assert_eq!(metric(&both, 0, k), metric(&replay, 0, k), "{k}");
    }
    assert_ne!(metric(&both, 1, "kernel_ns"), metric(&both, 0, "kernel_ns"));
    assert_eq!(
        ok(&[&cmp[..], &["-j", "1"]].concat()),
        ok(&[&cmp[..], &["-j", "2"]].concat())
    );
    // Granularity 0 migrates page by page: more faults than 2 MiB windows.
    let sweep = d.join("g.toml");
    std::fs::write(
        &sweep,
        format!("[base]\ntrace = {t:?}\n[grid]\ngranularity = [0, 9]\n"),
    )
    .unwrap();
    let sw = json(&["sweep", &s(&sweep)]);
    assert_eq!(sw["runs"].as_array().unwrap().len(), 2);
    assert_eq!(metric(&sw, 1, "faults"), metric(&replay, 0, "faults"));
    assert!(
        metric(&sw, 0, "faults") > 4 * metric(&sw, 1, "faults"),
        "{}",
        sw["runs"]
    );
    let g0 = json(&["replay", &t, "--granularity", "0"]);
    assert_eq!(metric(&g0, 0, "faults"), metric(&sw, 0, "faults"));
    // What a trace's accesses fix is refused, and a missing trace named.
    let o = svmsim(&["compare", &t, "--size", "1MiB"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--size: a trace's accesses"),
        "{}",
        stderr(&o)
    );
    let missing = s(&d.join("none.trace"));
    let o = svmsim(&["compare", &missing]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
}

/// `replay --against` sets the real run's messages beside the replay's,
/// row by row, in the table, the JSON and the HTML report: what the trace
/// carries (CPU faults, munmaps) comes back equal, and both sides are
/// counted alike (a replay against its own messages matches itself).
#[test]
fn a_replay_against_its_source_prints_both_side_by_side() {
    let d = scratch("import-against");
    let s = |p: &Path| p.display().to_string();
    let (smi, trace, again) = (d.join("smi"), d.join("app.trace"), d.join("again"));
    ok(&["run", "ping-pong", "--size", "4MiB", "--events", &s(&smi)]);
    ok(&["import", &s(&smi), "-o", &s(&trace)]);
    let t = s(&trace);
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "replay",
        &t,
        "--against",
        &s(&smi),
        "--json",
        "--events",
        &s(&again),
    ]))
    .unwrap();
    let a = &v["runs"][0]["against"];
    assert_eq!(a["source"], s(&smi));
    let rows = a["rows"].as_array().unwrap();
    let row = |what: &str| {
        rows.iter()
            .find(|r| r["what"] == what)
            .unwrap_or_else(|| panic!("no row {what}: {a}"))
    };
    // Under the real driver, the CPU faults come back too.
    let cpu = row("migrations for CPU faults");
    assert!(cpu["real"].as_u64().unwrap() > 0, "{a}");
    assert_eq!(cpu["real"], cpu["simulated"], "{a}");
    assert_eq!(row("prefetch migrations")["expect"], "carried");
    for r in rows.iter().filter(|r| r["expect"] == "carried") {
        assert_eq!(r["real"], r["simulated"], "{r}");
    }
    let faults = row("GPU faults");
    assert!(faults["real"].as_u64().unwrap() > 0);
    // The simulated side is the replay's: the faults it served.
    assert_eq!(
        faults["simulated"], v["runs"][0]["metrics"]["faults_served"],
        "{a}"
    );
    assert_eq!(
        faults["ratio"].as_f64().unwrap(),
        faults["simulated"].as_f64().unwrap() / faults["real"].as_f64().unwrap()
    );
    assert!(row("mean migration time")["real"].as_u64().unwrap() > 0);
    // The import keeps the time between faults and between the host's
    // steps: the replay takes about as long as the real run.
    let span = row("first to last message")["ratio"].as_f64().unwrap();
    assert!((0.9..1.15).contains(&span), "{span}: {a}");
    // The replay against its own messages: every row equal.
    let own: serde_json::Value =
        serde_json::from_str(&ok(&["replay", &t, "--against", &s(&again), "--json"])).unwrap();
    for r in own["runs"][0]["against"]["rows"].as_array().unwrap() {
        assert_eq!(r["real"], r["simulated"], "{r}");
    }
    // The table and the report.
    let text = ok(&["replay", &t, "--against", &s(&smi)]);
    assert!(
        text.contains(&format!("Real run ({}) against its replay", s(&smi))),
        "{text}"
    );
    assert!(text.contains("migrations for CPU faults"), "{text}");
    let report = d.join("report");
    ok(&["replay", &t, "--against", &s(&smi), "--report", &s(&report)]);
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("id=\"against\"") && html.contains("unmaps for migrations"));
    // Bad input: a missing source, and an output onto a file it reads.
    let o = svmsim(&["replay", &t, "--against", &s(&d.join("none"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    let member = smi.join("gpu-0x1002.smi");
    let before = std::fs::read(&member).unwrap();
    let o = svmsim(&[
        "replay",
        &t,
        "--against",
        &s(&smi),
        "--timeline",
        &s(&member),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read(&member).unwrap(), before);
}

/// `--allocations`: the run's own buffers as the list give the trace's
/// buffers, and the replay against the run keeps what the trace carries;
/// a bad list is named by file and line, and never overwritten.
#[test]
fn an_allocation_list_gives_the_buffers_of_the_trace() {
    let d = scratch("import-allocations");
    let s = |p: &Path| p.display().to_string();
    let (smi, trace, list) = (d.join("smi"), d.join("app.trace"), d.join("allocs.csv"));
    let run: serde_json::Value = serde_json::from_str(&ok(&[
        "run",
        "ping-pong",
        "--size",
        "4MiB",
        "--events",
        &s(&smi),
        "--json",
    ]))
    .unwrap();
    let mut csv = String::from("address,bytes,name\n");
    let mut want = Vec::new();
    for (i, b) in run["runs"][0]["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let (a, n) = (b["addr"].as_u64().unwrap(), b["bytes"].as_u64().unwrap());
        csv += &format!("{a:#x},{n},buffer{i}\n");
        want.push((a, n));
    }
    assert!(!want.is_empty());
    std::fs::write(&list, &csv).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "import",
        &s(&smi),
        "-o",
        &s(&trace),
        "--allocations",
        &s(&list),
        "--json",
    ]))
    .unwrap();
    let r = &v["report"];
    assert_eq!(r["listed"], true);
    assert_eq!(r["outside"], 0, "{r}");
    let got: Vec<(u64, u64)> = r["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b[0].as_u64().unwrap(), b[1].as_u64().unwrap()))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let a: serde_json::Value = serde_json::from_str(&ok(&[
        "replay",
        &s(&trace),
        "--against",
        &s(&smi),
        "--json",
    ]))
    .unwrap();
    for row in a["runs"][0]["against"]["rows"].as_array().unwrap() {
        if row["expect"] == "carried" {
            assert_eq!(row["real"], row["simulated"], "{row}");
        }
    }
    // The list is an input, never an output; a bad line is named.
    let o = svmsim(&[
        "import",
        &s(&smi),
        "-o",
        &s(&list),
        "--allocations",
        &s(&list),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&list).unwrap(), csv);
    std::fs::write(&list, "address,bytes\n0x1000,many\n").unwrap();
    let o = svmsim(&[
        "import",
        &s(&smi),
        "-o",
        &s(&d.join("t2")),
        "--allocations",
        &s(&list),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("allocs.csv:2: bytes"), "{}", stderr(&o));
}

/// The committed rocprofv3 fixtures are what the generator writes today,
/// are told from their content, and import to the same trace as the SMI
/// messages of the run they were made of.
#[test]
fn rocprofv3_json_imports_as_the_smi_messages_it_was_made_of() {
    let dir = super::root().join("crates/svmsim/tests/fixtures");
    let d = scratch("import-rocprof");
    let s = |p: &Path| p.display().to_string();
    for (name, bytes) in svmsim::import::fixtures::documents(&d).unwrap() {
        assert!(
            std::fs::read(dir.join(name)).unwrap() == bytes,
            "{name} is stale: cargo run -p svmsim --example fixtures"
        );
        assert!(
            String::from_utf8_lossy(&bytes).contains("synthetic"),
            "{name}"
        );
    }
    let smi = d.join("smi");
    ok(&[
        "run",
        "ping-pong",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--profile",
        "mi250x",
        "--events",
        &s(&smi),
    ]);
    let from_smi = d.join("smi.trace");
    ok(&["import", &s(&smi), "-o", &s(&from_smi)]);
    let want = std::fs::read(&from_smi).unwrap();
    for (name, format) in [
        ("rocprofv3-ping-pong.json", "rocprofv3-json"),
        ("json-tool-2024-ping-pong.json", "rocprofv3-json"),
        ("nsys-ping-pong.sqlite", "nsys-sqlite"),
        ("rocpd-ping-pong.db", "rocpd"),
    ] {
        let out = d.join(format!("{name}.trace"));
        let v: serde_json::Value = serde_json::from_str(&ok(&[
            "import",
            &s(&dir.join(name)),
            "-o",
            &s(&out),
            "--json",
        ]))
        .unwrap();
        assert_eq!(v["format"], format);
        assert!(v["report"]["gpu_faults"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["report"]["unknown_places"], 0, "{v}");
        assert_eq!(std::fs::read(&out).unwrap(), want, "{name}: another trace");
    }
    // The real run against its replay reads the JSON too.
    let text = ok(&[
        "replay",
        &s(&from_smi),
        "--gpus",
        "2",
        "--against",
        &s(&dir.join("rocprofv3-ping-pong.json")),
    ]);
    assert!(text.contains("migrations for CPU faults"), "{text}");
}

/// Bad rocprofiler JSON: not JSON, another producer's, a record of no
/// kind, a bad field, operations named otherwise: each refused with the
/// record and field named, and nothing written.
#[test]
fn bad_rocprofv3_json_is_named_by_record_and_field() {
    let d = scratch("import-rocprof-bad");
    let out = d.join("t.trace");
    let err = |doc: &str| {
        let f = d.join("in.json");
        std::fs::write(&f, doc).unwrap();
        let o = svmsim(&[
            "import",
            f.to_str().unwrap(),
            "--format",
            "rocprofv3-json",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{doc}");
        assert!(!out.exists());
        stderr(&o)
    };
    assert!(err("{\"rocprofiler-sdk-tool\": [").contains("not JSON"));
    assert!(err("{\"other\": 1}").contains("rocprofv3 --kfd-trace"));
    let rec = |r: &str| {
        format!(
            "{{\"rocprofiler-sdk-tool\": [{{\"agents\": [], \"buffer_records\": {{\"kfd\": [{r}]}}}}]}}"
        )
    };
    let e = err(&rec("{\"pid\": 1, \"operation\": 0}"));
    assert!(e.contains("buffer_records.kfd[0]: kind"), "{e}");
    let e = err(&rec(
        "{\"pid\": 1, \"operation\": 9, \"start_timestamp\": 1, \"end_timestamp\": 2, \
         \"agent_id\": {\"handle\": 0}, \"address\": {\"handle\": 4096}}",
    ));
    assert!(e.contains("kfd[0]: operation: 9"), "{e}");
    let e = err(&rec(
        "{\"pid\": 1, \"operation\": 0, \"timestamp\": 1, \"agent_id\": {\"handle\": 0}, \
         \"start_address\": {\"handle\": 8192}, \"end_address\": {\"handle\": 4096}}",
    ));
    assert!(
        e.contains("end_address: ends at 0x1000, before its start 0x2000"),
        "{e}"
    );
    let e = err(&rec(
        "{\"pid\": -1, \"operation\": 0, \"timestamp\": 1, \"count\": 3}",
    ));
    assert!(e.contains("kfd[0]: pid: -1"), "{e}");
    // Operation numbers this reader takes for others' names.
    let e = err(
        "{\"rocprofiler-sdk-tool\": [{\"strings\": {\"buffer_records\": [{\"kind\": \"KFD_PAGE_FAULT\", \
         \"operations\": [\"ROCPROFILER_KFD_PAGE_FAULT_WRITE_FAULT_UPDATED\"]}]}, \"buffer_records\": \
         {\"kfd\": [{\"pid\": 1, \"operation\": 0, \"start_timestamp\": 1, \"end_timestamp\": 2, \
         \"agent_id\": {\"handle\": 0}, \"address\": {\"handle\": 4096}}]}}]}",
    );
    assert!(e.contains("does not know"), "{e}");
}

/// Bad Nsight Systems exports: not a database, no unified-memory table,
/// a schema version not read, a missing column, a negative address; each
/// refused, naming the table, row and column, and nothing written.
#[test]
fn bad_nsys_exports_are_named_by_table_row_and_column() {
    let d = scratch("import-nsys-bad");
    let out = d.join("t.trace");
    let mut n = 0;
    let mut err = |sql: &str, format: &str| {
        n += 1;
        let f = d.join(format!("in{n}.sqlite"));
        if sql.is_empty() {
            std::fs::write(&f, "not a database at all").unwrap();
        } else {
            rusqlite::Connection::open(&f)
                .unwrap()
                .execute_batch(sql)
                .unwrap();
        }
        let o = svmsim(&[
            "import",
            f.to_str().unwrap(),
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{sql}");
        assert!(!out.exists());
        stderr(&o)
    };
    let e = err("", "nsys-sqlite");
    assert!(
        e.contains("not an SQLite database") || e.contains("not a database"),
        "{e}"
    );
    let e = err("CREATE TABLE KERNELS (x INTEGER);", "auto");
    assert!(e.contains("no unified-memory table"), "{e}");
    let fault = "CREATE TABLE CUDA_UM_CPU_PAGE_FAULT_EVENTS (start INTEGER, globalPid INTEGER, address INTEGER);";
    let e = err(
        &format!(
            "{fault} CREATE TABLE META_DATA_EXPORT (name TEXT, value TEXT); \
             INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_SCHEMA_VERSION', '9.0.0');"
        ),
        "auto",
    );
    assert!(e.contains("schema version 9.0.0"), "{e}");
    let e = err(
        "CREATE TABLE CUDA_UM_CPU_PAGE_FAULT_EVENTS (start INTEGER, address INTEGER);",
        "auto",
    );
    assert!(
        e.contains("CUDA_UM_CPU_PAGE_FAULT_EVENTS has no column globalPid"),
        "{e}"
    );
    let e = err(
        &format!("{fault} INSERT INTO CUDA_UM_CPU_PAGE_FAULT_EVENTS VALUES (5, 0, -4096);"),
        "auto",
    );
    assert!(
        e.contains("CUDA_UM_CPU_PAGE_FAULT_EVENTS row 1: address: -4096"),
        "{e}"
    );
    // Enums renumbered: refused by name.
    let e = err(
        &format!(
            "{fault} CREATE TABLE ENUM_CUDA_MEMCPY_OPER (id INTEGER, name TEXT, label TEXT); \
             INSERT INTO ENUM_CUDA_MEMCPY_OPER VALUES (11, 'CUDA_MEMCPY_KIND_SOMETHING', 'x');"
        ),
        "auto",
    );
    assert!(e.contains("names 11 CUDA_MEMCPY_KIND_SOMETHING"), "{e}");
}

/// rocpd's `extdata` in each of the writer's three layouts (the variant
/// `kfd.record`, the earlier `kfd.kfd`, and a map of strings) reads to
/// the same trace; a region of an unknown operation is named.
#[test]
fn rocpd_reads_every_extdata_layout_and_names_a_bad_region() {
    let dir = super::root().join("crates/svmsim/tests/fixtures");
    let d = scratch("import-rocpd");
    let s = |p: &Path| p.display().to_string();
    let want = d.join("want.trace");
    ok(&[
        "import",
        &s(&dir.join("rocpd-ping-pong.db")),
        "-o",
        &s(&want),
    ]);
    let want = std::fs::read(&want).unwrap();
    let variant = |ext: &str, layout: usize| -> String {
        let v: serde_json::Value = serde_json::from_str(ext).unwrap();
        let data = v["kfd"]["record"]["data"].clone();
        match layout {
            1 => serde_json::json!({"kfd": {"kfd": {"index": 0, "data": data}}}).to_string(),
            _ => {
                let list: Vec<serde_json::Value> = data
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| serde_json::json!({"key": k, "value": v.to_string()}))
                    .collect();
                serde_json::json!({"kfd": list}).to_string()
            }
        }
    };
    for layout in [1, 2] {
        let db = d.join(format!("layout{layout}.db"));
        std::fs::copy(dir.join("rocpd-ping-pong.db"), &db).unwrap();
        let c = rusqlite::Connection::open(&db).unwrap();
        let rows: Vec<(i64, String)> = c
            .prepare("SELECT id, extdata FROM rocpd_event")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let table: String = c
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'rocpd_event_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        for (id, ext) in rows {
            c.execute(
                &format!("UPDATE `{table}` SET extdata = ?1 WHERE id = ?2"),
                rusqlite::params![variant(&ext, layout), id],
            )
            .unwrap();
        }
        drop(c);
        let out = d.join(format!("layout{layout}.trace"));
        ok(&["import", &s(&db), "-o", &s(&out)]);
        assert_eq!(std::fs::read(&out).unwrap(), want, "layout {layout}");
    }
    // An operation name no kind has.
    let db = d.join("bad.db");
    std::fs::copy(dir.join("rocpd-ping-pong.db"), &db).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    let table: String = c
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'rocpd_string_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    c.execute(
        &format!(
            "UPDATE `{table}` SET string = 'ROCPROFILER_KFD_PAGE_FAULT_SOMETHING_NEW' \
             WHERE string = 'ROCPROFILER_KFD_PAGE_FAULT_READ_FAULT_MIGRATED'"
        ),
        [],
    )
    .unwrap();
    drop(c);
    let o = svmsim(&["import", &s(&db), "-o", &s(&d.join("bad.trace"))]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("KFD region") && e.contains("SOMETHING_NEW"),
        "{e}"
    );
}

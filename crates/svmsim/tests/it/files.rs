//! No lost files: an output that names an input (or another output) is
//! refused before anything is written, and a refused command leaves every
//! file byte-identical.

use std::path::{Path, PathBuf};

use super::cli::scratch;
use super::{root, stderr, svmsim};

/// Every file under `dir` with its bytes, sorted by path.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                out.push((p, b));
            }
        }
    }
    out.sort();
    out
}

/// A scratch directory with a recorded trace, a profile, a config file, a
/// scenario, a sweep file and a shard file, each a real input.
fn inputs(test: &str) -> PathBuf {
    // A directory for each test: nextest runs tests at once, and a shared
    // one would be emptied under the other test's feet.
    let d = scratch(&format!("files-{test}"));
    let p = |n: &str| d.join(n).display().to_string();
    let small = ["--size", "256KiB", "--iters", "1"];
    let run = svmsim(&[&["run", "stream", "--record", &p("a.trace")][..], &small].concat());
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    std::fs::copy(root().join("profiles/mi210.toml"), d.join("p.toml")).unwrap();
    std::fs::write(d.join("c.toml"), "victim_policy = \"largest\"\n").unwrap();
    std::fs::copy(root().join("examples/basic-vram.toml"), d.join("s.toml")).unwrap();
    std::fs::write(
        d.join("grid.toml"),
        "[base]\nworkload = \"stream\"\nsize = \"256KiB\"\niters = 1\n[grid]\npolicy = [\"partial\"]\n",
    )
    .unwrap();
    let sw = svmsim(&[
        "sweep",
        &p("grid.toml"),
        "--out",
        &p("shard.json"),
        "-j",
        "1",
    ]);
    assert_eq!(sw.status.code(), Some(0), "{}", stderr(&sw));
    d
}

#[test]
fn an_output_that_names_an_input_is_refused_and_nothing_changes() {
    let d = inputs("names-an-input");
    let p = |n: &str| d.join(n).display().to_string();
    let small = ["--size", "256KiB", "--iters", "1"];
    // Table: (command line, the input it names as an output)
    let cases: Vec<Vec<String>> = vec![
        vec![
            "replay".into(),
            p("a.trace"),
            "--timeline".into(),
            p("a.trace"),
        ],
        vec![
            "replay".into(),
            p("a.trace"),
            "--events".into(),
            p("a.trace"),
            "--events-format".into(),
            "prefixed".into(),
        ],
        [
            &[
                "run".into(),
                "stream".into(),
                "--profile".into(),
                p("p.toml"),
                "--record".into(),
                p("p.toml"),
            ][..],
            &small.map(String::from),
        ]
        .concat(),
        [
            &[
                "run".into(),
                "stream".into(),
                "--config".into(),
                p("c.toml"),
                "--timeline".into(),
                p("c.toml"),
            ][..],
            &small.map(String::from),
        ]
        .concat(),
        // Through a symbolic path: the same file by another name.
        [
            &[
                "run".into(),
                "stream".into(),
                "--config".into(),
                p("c.toml"),
                "--timeline".into(),
                format!(
                    "{}/../{}/c.toml",
                    d.display(),
                    d.file_name().unwrap().to_string_lossy()
                ),
            ][..],
            &small.map(String::from),
        ]
        .concat(),
        [
            &[
                "compare".into(),
                "stream".into(),
                "--config".into(),
                p("c.toml"),
                "--events".into(),
                p("c.toml"),
                "--events-format".into(),
                "prefixed".into(),
            ][..],
            &small.map(String::from),
        ]
        .concat(),
        vec![
            "sweep".into(),
            p("grid.toml"),
            "--out".into(),
            p("grid.toml"),
        ],
        vec![
            "sweep".into(),
            p("grid.toml"),
            "--timeline".into(),
            p("grid.toml"),
        ],
        vec![
            "merge".into(),
            p("shard.json"),
            "--report".into(),
            d.display().to_string(),
            "--json".into(),
        ],
        vec![
            "scenario".into(),
            p("s.toml"),
            "--events".into(),
            p("s.toml"),
            "--events-format".into(),
            "prefixed".into(),
        ],
        // A report directory whose index.html is an input.
        [
            &[
                "run".into(),
                "stream".into(),
                "--config".into(),
                p("index.html"),
                "--report".into(),
                d.display().to_string(),
            ][..],
            &small.map(String::from),
        ]
        .concat(),
        // Two outputs that are one file.
        [
            &[
                "run".into(),
                "stream".into(),
                "--timeline".into(),
                p("t.json"),
                "--record".into(),
                p("t.json"),
            ][..],
            &small.map(String::from),
        ]
        .concat(),
    ];
    std::fs::write(d.join("index.html"), "victim_policy = \"lru\"\n").unwrap();
    // merge's report would write index.html into the directory of an input
    // that is not index.html: allowed; make that case a clash instead.
    std::fs::copy(d.join("shard.json"), d.join("plot.svg")).unwrap();
    let cases: Vec<Vec<String>> = cases
        .into_iter()
        .map(|c| {
            c.into_iter()
                .map(|a| {
                    if a == p("shard.json") {
                        p("plot.svg")
                    } else {
                        a
                    }
                })
                .collect()
        })
        .collect();
    for args in &cases {
        let before = snapshot(&d);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = svmsim(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("is an input of this command") || err.contains("are the same output"),
            "{args:?}: {err}"
        );
        assert_eq!(snapshot(&d), before, "{args:?} changed a file");
    }
}

#[test]
fn a_refused_run_writes_no_output() {
    let d = inputs("refused-run");
    let p = |n: &str| d.join(n).display().to_string();
    std::fs::write(d.join("t.json"), "old").unwrap();
    let before = snapshot(&d);
    // A bad knob is refused after the outputs are named: none is written.
    let out = svmsim(&[
        "run",
        "stream",
        "--size",
        "256KiB",
        "--timeline",
        &p("t.json"),
        "--report",
        &p("rep"),
        "--set",
        "victim_policy=nope",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(snapshot(&d), before);
    assert!(!d.join("rep").exists(), "the report directory was made");
    // A good one replaces the old file whole and leaves no temporary.
    let out = svmsim(&[
        "run",
        "stream",
        "--size",
        "256KiB",
        "--iters",
        "1",
        "--timeline",
        &p("t.json"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::read(d.join("t.json")).unwrap().starts_with(b"{"));
    let stray: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "temporaries left: {stray:?}");
}

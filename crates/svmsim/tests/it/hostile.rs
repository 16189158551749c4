//! Hostile input, per input kind (flags, profiles, scenarios, sweep files,
//! traces, shard files, config files): malformed, truncated, huge,
//! negative, NaN, duplicated and self-referencing. Each case asserts the
//! exit code (2: the user's input), the error's words (which names the
//! source and the limit), and that no file in its directory changed,
//! including an output file that was there before.

use svm_sim::machine::TraceEvent;
use svm_workloads::trace;

use super::cli::scratch;
use super::files::snapshot;
use super::{root, stderr, svmsim};

/// One hostile input: the files it writes, the command line (`{d}` is its
/// directory), and words the error must hold.
struct Case {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: &'static str,
    want: &'static str,
}

fn case(
    name: &'static str,
    file: &'static str,
    body: impl Into<Vec<u8>>,
    args: &'static str,
    want: &'static str,
) -> Case {
    Case {
        name,
        files: vec![(file, body.into())],
        args,
        want,
    }
}

/// Runs every case in a directory of its own that also holds `out.json`,
/// which the command would write; asserts exit 2, the words, and that
/// every file is as it was.
fn refused(kind: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let d = scratch(&format!("hostile-{kind}-{}", c.name));
        std::fs::write(d.join("out.json"), "keep me\n").unwrap();
        for (f, b) in &c.files {
            std::fs::write(d.join(f), b).unwrap();
        }
        let before = snapshot(&d);
        let dir = d.display().to_string();
        let args: Vec<String> = c
            .args
            .split_whitespace()
            .map(|a| a.replace("{d}", &dir))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = svmsim(&args);
        let err = stderr(&o);
        if o.status.code() != Some(2) || !err.contains(c.want) {
            failures.push(format!(
                "{kind}/{}: exit {:?}, want 2 and {:?}; stderr:\n{err}",
                c.name,
                o.status.code(),
                c.want
            ));
        }
        if snapshot(&d) != before {
            failures.push(format!("{kind}/{}: a file changed", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn example(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap()
}

fn half(s: &str) -> Vec<u8> {
    s.as_bytes()[..s.len() / 2].to_vec()
}

#[test]
fn hostile_flags() {
    refused(
        "flags",
        vec![
            case(
                "malformed",
                "x",
                "",
                "run stream --size 12parsecs --timeline {d}/out.json",
                "--size",
            ),
            case(
                "negative",
                "x",
                "",
                "run stream --size=-4096 --timeline {d}/out.json",
                "--size",
            ),
            case(
                "nan",
                "x",
                "",
                "run stream --oversubscribe NaN --timeline {d}/out.json",
                "--oversubscribe",
            ),
            case(
                "tiny",
                "x",
                "",
                "run stream --oversubscribe 1e-11 --timeline {d}/out.json",
                "--oversubscribe",
            ),
            case(
                "huge-iters",
                "x",
                "",
                "run stream --iters 1000000000 --timeline {d}/out.json",
                "--iters",
            ),
            case(
                "huge-size",
                "x",
                "",
                "run stream --size 64TiB --timeline {d}/out.json",
                "--size",
            ),
            case(
                "huge-vram",
                "x",
                "",
                "run stream --vram 72057594037927936 --timeline {d}/out.json",
                "--vram",
            ),
            case(
                "huge-gpus",
                "x",
                "",
                "run stream --gpus 65 --timeline {d}/out.json",
                "--gpus",
            ),
            case(
                "over-budget",
                "x",
                "",
                "run stream --size 1GiB --max-host-mem 1MiB --timeline {d}/out.json",
                "--max-host-mem",
            ),
            case(
                "self",
                "x",
                "",
                "run stream --size 64KiB --iters 1 --timeline {d}/out.json --record {d}/out.json",
                "out.json",
            ),
        ],
    );
}

#[test]
fn hostile_profiles() {
    let good = example("profiles/mi210.toml");
    let run = "run stream --size 64KiB --iters 1 --profile {d}/p.toml --timeline {d}/out.json";
    let with = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        good.replacen(from, to, 1)
    };
    let dup = with(
        "compute_units = 104",
        "compute_units = 104\ncompute_units = 8",
    );
    refused(
        "profile",
        vec![
            case("malformed", "p.toml", "[gpu\ncount = 1\n", run, "p.toml:1"),
            case("truncated", "p.toml", half(&good), run, "p.toml"),
            case(
                "huge",
                "p.toml",
                with("compute_units = 104", "compute_units = 4000000000"),
                run,
                "compute_units",
            ),
            case(
                "huge-tlb",
                "p.toml",
                with("tlb_entries = 64", "tlb_entries = 10000000"),
                run,
                "tlb_entries",
            ),
            case(
                "huge-vram",
                "p.toml",
                with(
                    "vram_bytes = 68719476736",
                    "vram_bytes = 9223372036854775807",
                ),
                run,
                "vram_bytes",
            ),
            case(
                "negative",
                "p.toml",
                with("vram_bytes = 68719476736", "vram_bytes = -1"),
                run,
                "vram_bytes",
            ),
            case(
                "nan",
                "p.toml",
                with("access_vram_ns = 600.0", "access_vram_ns = nan"),
                run,
                "p.toml",
            ),
            case("duplicated", "p.toml", dup, run, "compute_units"),
            case(
                "self",
                "p.toml",
                good.clone(),
                "run stream --size 64KiB --iters 1 --profile {d}/p.toml --record {d}/p.toml",
                "p.toml",
            ),
        ],
    );
}

#[test]
fn hostile_scenarios() {
    let good = example("examples/basic-vram.toml");
    let run = "scenario {d}/s.toml --events {d}/out.json --events-format prefixed";
    let gpus: String = (0..65)
        .map(|i| format!("[[system.gpu]]\nname = \"g{i}\"\n"))
        .collect();
    let mmap = |size: &str| {
        format!("[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = {size}\n")
    };
    let prefetch = "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = \"64TiB\"\n\
                    [[op]]\ndo = \"prefetch\"\naddr = \"b\"\nsize = \"64TiB\"\nloc = \"gpu0\"\n";
    refused(
        "scenario",
        vec![
            case("malformed", "s.toml", "[system\n", run, "s.toml:1"),
            case("truncated", "s.toml", half(&good), run, "s.toml:"),
            case(
                "huge-gpus",
                "s.toml",
                format!("[system]\n{gpus}"),
                run,
                "at most 64",
            ),
            case("huge-work", "s.toml", prefetch, run, "may move or map"),
            case(
                "huge-access",
                "s.toml",
                format!(
                    "{}[[op]]\ndo = \"cpu_access\"\naddr = \"b\"\nsize = \"2GiB\"\n",
                    mmap("\"4GiB\"")
                ),
                run,
                "at most 1 GiB",
            ),
            case(
                "over-budget",
                "s.toml",
                format!(
                    "{}[[op]]\ndo = \"cpu_access\"\naddr = \"b\"\nsize = \"1GiB\"\nwrite = true\nfill = 7\n",
                    mmap("\"1GiB\"")
                ),
                "scenario {d}/s.toml --max-host-mem 1GiB --events {d}/out.json --events-format prefixed",
                "above the budget of 1.00GiB; use --max-host-mem",
            ),
            // Registering access with XNACK off maps, and so faults in,
            // every page: 2 GiB of zeroed pages against a 1 GiB budget.
            case(
                "over-budget-fault-in",
                "s.toml",
                "[system]\nxnack = false\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = \"2GiB\"\n\
                     [[op]]\ndo = \"set_attr\"\naddr = \"b\"\nsize = \"2GiB\"\nattrs = [{ access = \"gpu0\" }]\n",
                "scenario {d}/s.toml --max-host-mem 1GiB --events {d}/out.json --events-format prefixed",
                "above the budget of 1.00GiB; use --max-host-mem",
            ),
            case(
                "huge-vram",
                "s.toml",
                "[system]\n[[system.gpu]]\nvram = 18446744073709551615\n",
                run,
                "a GPU has 2 MiB to 16 TiB of VRAM",
            ),
            case("negative", "s.toml", mmap("-4096"), run, "size"),
            case("nan", "s.toml", mmap("nan"), run, "size"),
            case(
                "duplicated",
                "s.toml",
                format!(
                    "{}[[op]]\ndo = \"mmap\"\nname = \"b\"\nsize = 4096\n",
                    mmap("4096")
                ),
                run,
                "\"b\"",
            ),
            case(
                "self-label",
                "s.toml",
                "[system]\n[[system.gpu]]\n[[op]]\ndo = \"mmap\"\nname = \"b\"\naddr = \"b\"\nsize = 4096\n",
                run,
                "s.toml:",
            ),
            case(
                "self-output",
                "s.toml",
                good.clone(),
                "scenario {d}/s.toml --events {d}/s.toml --events-format prefixed",
                "s.toml",
            ),
        ],
    );
}

#[test]
fn hostile_sweeps() {
    let base = "[base]\nworkload = \"stream\"\nsize = \"64KiB\"\niters = 1\n";
    let run = "sweep {d}/g.toml --out {d}/out.json -j 1";
    let seeds: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let huge = format!(
        "{base}[grid]\nseed = [{}]\ngranularity = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\npolicy = [\"partial\", \"whole-range\"]\n",
        seeds.join(", ")
    );
    refused(
        "sweep",
        vec![
            case("malformed", "g.toml", "[grid\n", run, "g.toml:1"),
            case(
                "truncated",
                "g.toml",
                "[base]\nworkload = \"str",
                run,
                "g.toml",
            ),
            case("huge", "g.toml", huge, run, "1000000 points"),
            case(
                "negative",
                "g.toml",
                format!("{base}[grid]\nseed = [1]\n").replace("iters = 1", "iters = -1"),
                run,
                "iters",
            ),
            case(
                "nan",
                "g.toml",
                format!("{base}[grid]\noversubscribe = [nan]\n"),
                run,
                "oversubscribe",
            ),
            case(
                "duplicated",
                "g.toml",
                format!("{base}[grid]\nseed = [1]\nseed = [2]\n"),
                run,
                "g.toml:6: duplicate key",
            ),
            case(
                "self",
                "g.toml",
                format!("{base}[grid]\nseed = [1]\n"),
                "sweep {d}/g.toml --out {d}/g.toml -j 1",
                "g.toml",
            ),
        ],
    );
}

#[test]
fn hostile_traces() {
    // A real trace, recorded once.
    let d = scratch("hostile-trace-source");
    let rec = d.join("a.trace");
    let o = svmsim(&[
        "run",
        "stream",
        "--size",
        "256KiB",
        "--iters",
        "1",
        "--record",
        &rec.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let good = std::fs::read(&rec).unwrap();
    let cpu = |len| {
        trace::encode(&[
            TraceEvent::Spawn { name: "p".into() },
            TraceEvent::Cpu {
                pid: 0,
                addr: 0x7f00_0000_0000,
                len,
                write: true,
            },
        ])
    };
    let run = "replay {d}/a.trace --timeline {d}/out.json";
    let csv = "replay {d}/a.csv --csv-input --timeline {d}/out.json";
    let head = "kernel,gpu_id,wave,op,addr,len\n";
    refused(
        "trace",
        vec![
            case(
                "malformed",
                "a.trace",
                "nonsense",
                run,
                "not an svmsim trace",
            ),
            case(
                "truncated",
                "a.trace",
                good[..good.len() / 2].to_vec(),
                run,
                "corrupt trace",
            ),
            case(
                "huge",
                "a.trace",
                cpu(1 << 50),
                run,
                "bytes of a CPU access 1125899906842624 is above the limit",
            ),
            case(
                "over-budget",
                "a.trace",
                good.clone(),
                "replay {d}/a.trace --max-host-mem 1MiB --timeline {d}/out.json",
                "--max-host-mem",
            ),
            case("csv-malformed", "a.csv", "kernel,gpu\n", csv, "header"),
            case(
                "csv-truncated",
                "a.csv",
                format!("{head}0,0x1002,0,load,0x7f0000000000"),
                csv,
                "line 2",
            ),
            case(
                "csv-huge",
                "a.csv",
                format!("{head}0,0x1002,0,load,0x7f0000000000,4294967295\n"),
                csv,
                "line 2: bytes of a wave instruction",
            ),
            case(
                "csv-negative",
                "a.csv",
                format!("{head}0,0x1002,0,load,0x7f0000000000,-4\n"),
                csv,
                "line 2: len \"-4\" is not a number",
            ),
            case(
                "csv-nan",
                "a.csv",
                format!("{head}0,0x1002,0,load,0x7f0000000000,nan\n"),
                csv,
                "line 2: len \"nan\" is not a number",
            ),
            case(
                "csv-duplicated",
                "a.csv",
                format!(
                    "{head}0,0x1002,0,load,0x7f0000000000,4\n0,0x2002,0,load,0x7f0000000000,4\n"
                ),
                csv,
                "line 3: kernel 0 runs on gpu_id 0x1002",
            ),
            case(
                "self",
                "a.trace",
                good.clone(),
                "replay {d}/a.trace --timeline {d}/a.trace",
                "a.trace",
            ),
        ],
    );
}

#[test]
fn hostile_shards() {
    // A real shard file, written once.
    let d = scratch("hostile-shard-source");
    std::fs::write(
        d.join("g.toml"),
        "[base]\nworkload = \"stream\"\nsize = \"64KiB\"\niters = 1\n[grid]\npolicy = [\"partial\", \"whole-range\"]\n",
    )
    .unwrap();
    let sh = d.join("s.json");
    let o = svmsim(&[
        "sweep",
        &d.join("g.toml").display().to_string(),
        "--out",
        &sh.display().to_string(),
        "-j",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let good = std::fs::read_to_string(&sh).unwrap();
    let total = |v: &str| good.replacen("\"total\": 2", &format!("\"total\": {v}"), 1);
    assert!(good.contains("\"total\": 2"), "{good}");
    let run = "merge {d}/s.json --report {d}/rep";
    refused(
        "shard",
        vec![
            case("malformed", "s.json", "{", run, "not a shard file"),
            case("truncated", "s.json", half(&good), run, "not a shard file"),
            case(
                "huge",
                "s.json",
                total("1000000000000"),
                run,
                "at most 1000000",
            ),
            case("negative", "s.json", total("-1"), run, "not a shard file"),
            case("nan", "s.json", total("NaN"), run, "not a shard file"),
            Case {
                name: "duplicated",
                files: vec![
                    ("s.json", good.clone().into()),
                    ("t.json", good.clone().into()),
                ],
                args: "merge {d}/s.json {d}/t.json --report {d}/rep",
                want: "both",
            },
            case(
                "self",
                "s.json",
                good.clone(),
                "merge {d}/s.json --report {d}/s.json",
                "s.json",
            ),
        ],
    );
}

#[test]
fn hostile_configs() {
    let run = "run stream --size 64KiB --iters 1 --config {d}/c.toml --timeline {d}/out.json";
    refused(
        "config",
        vec![
            case("malformed", "c.toml", "victim_policy = \n", run, "c.toml:1"),
            case(
                "truncated",
                "c.toml",
                "victim_policy = \"larg",
                run,
                "c.toml:1",
            ),
            case(
                "unknown",
                "c.toml",
                "victim_polcy = \"largest\"\n",
                run,
                "victim_polcy",
            ),
            case(
                "huge",
                "c.toml",
                "restore_delay_ns = 1e300\n",
                run,
                "restore_delay_ns",
            ),
            case(
                "negative",
                "c.toml",
                "restore_delay_ns = -1\n",
                run,
                "restore_delay_ns",
            ),
            case(
                "nan",
                "c.toml",
                "restore_delay_ns = nan\n",
                run,
                "restore_delay_ns",
            ),
            case(
                "duplicated",
                "c.toml",
                "victim_policy = \"largest\"\nvictim_policy = \"lru\"\n",
                run,
                "c.toml:2:1: duplicate key",
            ),
            case(
                "self",
                "c.toml",
                "victim_policy = \"largest\"\n",
                "run stream --size 64KiB --iters 1 --config {d}/c.toml --record {d}/c.toml",
                "c.toml",
            ),
        ],
    );
}

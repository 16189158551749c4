//! Every knob of a run is reachable from every command, and every result
//! carries the configuration it ran under.

use super::cli::scratch;
use super::{stderr, stdout, svmsim};

fn run(args: &[&str]) -> (i32, String, String) {
    let o = svmsim(args);
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}\n{out}\n{err}");
    out
}

fn usage(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 2, "{args:?}\n{out}\n{err}");
    err
}

const SMALL: [&str; 6] = ["run", "stream", "--size", "1MiB", "--iters", "1"];

#[test]
fn svmsim_config_lists_every_key_with_its_default_unit_and_meaning() {
    let out = ok(&["config"]);
    for k in svm_core::config::KNOBS {
        let d = k.get(&svm_core::config::Config::default());
        assert!(
            out.contains(&format!("{} = {d}\n", k.key)),
            "{}:\n{out}",
            k.key
        );
        assert!(
            out.contains(k.doc) && out.contains(&format!("[{}]", k.unit)),
            "{}",
            k.key
        );
    }
    for e in svm_core::policy::registry() {
        assert!(out.contains(e.name) && out.contains(e.about), "{}", e.name);
    }
    // A changed value says so, and the TOML form reads back.
    let out = ok(&["config", "--set", "victim_policy=largest"]);
    assert!(
        out.contains("victim_policy = largest  (set; default lru)"),
        "{out}"
    );
    let toml = ok(&[
        "config",
        "--set",
        "restore_delay_ns=3ms",
        "--set",
        "policy=whole-range",
        "--toml",
    ]);
    let dir = scratch("config-toml");
    let f = dir.join("c.toml");
    std::fs::write(&f, &toml).unwrap();
    let again = ok(&["config", "--config", f.to_str().unwrap(), "--toml"]);
    assert_eq!(again, toml);
    assert!(toml.contains("restore_delay_ns = \"3ms\""), "{toml}");
}

#[test]
fn set_reaches_the_run_and_its_json_carries_the_whole_config() {
    let out = ok(&[
        &SMALL[..],
        &[
            "--set",
            "default_granularity=4",
            "--set",
            "bulk_dma_unmap=on",
            "--json",
        ],
    ]
    .concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let run = &v["runs"][0];
    let c = &run["spec"]["config"];
    assert_eq!(c["default_granularity"], 4);
    assert_eq!(c["bulk_dma_unmap"], true);
    assert_eq!(c["policy"], "partial");
    for k in svm_core::config::KNOBS {
        assert!(c.get(k.key).is_some(), "{} missing from {c}", k.key);
    }
    // The label and the repro name what changed; the repro repeats it.
    let label = run["label"].as_str().unwrap();
    assert!(
        label.contains("default_granularity=4") && label.contains("bulk_dma_unmap=true"),
        "{label}"
    );
    let repro = run["repro"].as_str().unwrap();
    assert!(repro.contains("--set default_granularity=4"), "{repro}");
    let args: Vec<&str> = repro.split_whitespace().skip(1).collect();
    assert_eq!(ok(&[&args[..], &["--json"]].concat()), out);
    // The knob changed the run: a smaller default granularity, other faults.
    let plain: serde_json::Value =
        serde_json::from_str(&ok(&[&SMALL[..], &["--json"]].concat())).unwrap();
    assert_ne!(plain["runs"][0]["metrics"], run["metrics"]);
}

#[test]
fn a_config_file_is_read_and_set_wins_over_it() {
    let dir = scratch("config-file");
    let f = dir.join("knobs.toml");
    std::fs::write(
        &f,
        "policy = \"whole-range\"\nvictim_policy = \"largest\"\n",
    )
    .unwrap();
    let out = ok(&[
        &SMALL[..],
        &[
            "--config",
            f.to_str().unwrap(),
            "--set",
            "victim_policy=lru",
            "--json",
        ],
    ]
    .concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][0]["spec"]["config"]["policy"], "whole-range");
    assert_eq!(v["runs"][0]["spec"]["config"]["victim_policy"], "lru");
    // A bad file names the file, the line and the key.
    std::fs::write(&f, "policy = \"partial\"\nrestore_delay_ns = \"soon\"\n").unwrap();
    let e = usage(&[&SMALL[..], &["--config", f.to_str().unwrap()]].concat());
    assert!(
        e.contains("knobs.toml:2:") && e.contains("restore_delay_ns") && e.contains("duration"),
        "{e}"
    );
    std::fs::write(&f, "granularity = 4\n").unwrap();
    let e = usage(&[&SMALL[..], &["--config", f.to_str().unwrap()]].concat());
    assert!(
        e.contains("knobs.toml:1:") && e.contains("default_granularity"),
        "{e}"
    );
}

#[test]
fn unknown_keys_and_bad_values_are_refused_with_what_they_accept() {
    let e = usage(&[&SMALL[..], &["--set", "victim_polcy=lru"]].concat());
    assert!(
        e.contains("unknown key \"victim_polcy\"") && e.contains("victim_policy"),
        "{e}"
    );
    let e = usage(&[&SMALL[..], &["--set", "default_granularity=40"]].concat());
    assert!(
        e.contains("default_granularity") && e.contains("0 to 27"),
        "{e}"
    );
    let e = usage(&[&SMALL[..], &["--set", "policy"]].concat());
    assert!(e.contains("KEY=VALUE"), "{e}");
    let e = usage(&[&SMALL[..], &["--policy", "parital"]].concat());
    assert!(e.contains("partial"), "{e}");
    // The demo's configuration is fixed.
    let e = usage(&["run", "--set", "bulk_dma_unmap=on"]);
    assert!(e.contains("--set"), "{e}");
}

#[test]
fn every_command_takes_set() {
    // compare: --set applies to every run; the policy list is --policies'.
    let out = ok(&[
        "compare",
        "stream",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--policies",
        "partial,whole-range",
        "--set",
        "victim_policy=largest",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for r in v["runs"].as_array().unwrap() {
        assert_eq!(r["spec"]["config"]["victim_policy"], "largest");
    }
    let e = usage(&[
        "compare",
        "stream",
        "--set",
        "policy=partial",
        "--policies",
        "all",
    ]);
    assert!(e.contains("--policies"), "{e}");
    // Alone, --set policy=X compares that one policy (across the other axes).
    let out = ok(&[
        "compare",
        "stream",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--set",
        "policy=whole-range",
        "--granularities",
        "4,9",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter().all(|r| r["spec"]["policy"] == "whole-range"),
        "{out}"
    );
    // replay
    let dir = scratch("config-replay");
    let t = dir.join("s.trace");
    ok(&[&SMALL[..], &["--record", t.to_str().unwrap()]].concat());
    let out = ok(&[
        "replay",
        t.to_str().unwrap(),
        "--set",
        "gpu_retry_delay_ns=50us",
        "--json",
    ]);
    assert!(out.contains("\"gpu_retry_delay_ns\": 50000"), "{out}");
    // scenario: over the file's own [config]
    let out = ok(&[
        "scenario",
        "examples/timed-fault.toml",
        "--set",
        "retry_fault_pending_ns=0",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["config"]["retry_fault_pending_ns"], 0);
    let e = usage(&["scenario", "examples/timed-fault.toml", "--set", "nope=1"]);
    assert!(e.contains("unknown key"), "{e}");
}

#[test]
fn a_sweep_axis_can_be_any_knob() {
    let dir = scratch("config-sweep");
    let f = dir.join("grid.toml");
    std::fs::write(
        &f,
        "[base]\nworkload = \"stream\"\nsize = \"1MiB\"\niters = 1\n\n[grid]\nvictim_policy = [\"lru\", \"largest\"]\ndefault_granularity = [4, 9]\n",
    )
    .unwrap();
    let out = ok(&["sweep", f.to_str().unwrap(), "--json", "-j", "1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let got: Vec<(String, u64)> = runs
        .iter()
        .map(|r| {
            let c = &r["spec"]["config"];
            (
                c["victim_policy"].as_str().unwrap().to_owned(),
                c["default_granularity"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("lru".into(), 4),
            ("largest".into(), 4),
            ("lru".into(), 9),
            ("largest".into(), 9)
        ]
    );
    // --set over the grid's own axis is refused; over another key it applies.
    let e = usage(&["sweep", f.to_str().unwrap(), "--set", "victim_policy=lru"]);
    assert!(e.contains("varies it"), "{e}");
    let out = ok(&[
        "sweep",
        f.to_str().unwrap(),
        "--set",
        "bulk_dma_unmap=on",
        "--json",
        "-j",
        "1",
    ]);
    assert_eq!(out.matches("\"bulk_dma_unmap\": true").count(), 4);
    // A bad knob value in a sweep file is placed.
    std::fs::write(
        &f,
        "[base]\nworkload = \"stream\"\n\n[grid]\nvictim_policy = [\"lru\", \"biggest\"]\n",
    )
    .unwrap();
    let e = usage(&["sweep", f.to_str().unwrap()]);
    assert!(
        e.contains("grid.toml:5") && e.contains("victim_policy") && e.contains("largest"),
        "{e}"
    );
}

#[test]
fn a_scenario_holds_the_same_table() {
    let dir = scratch("config-scenario");
    let f = dir.join("s.toml");
    let body = "[[system.gpu]]\nname = \"gpu0\"\nvram = \"1GiB\"\n\n[[op]]\ndo = \"mmap\"\nname = \"buf\"\nsize = \"4MiB\"\n";
    std::fs::write(&f, format!("[system]\nxnack = true\n\n[config]\npolicy = \"whole-range\"\ndefault_granularity = 4\n\n{body}")).unwrap();
    let out = ok(&["scenario", f.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["config"]["policy"], "whole-range");
    assert_eq!(v["config"]["default_granularity"], 4);
    // The same key in [system] and [config] is refused, placed.
    std::fs::write(&f, format!("[system]\nxnack = true\npolicy = \"partial\"\n\n[config]\npolicy = \"whole-range\"\n\n{body}")).unwrap();
    let e = usage(&["scenario", f.to_str().unwrap()]);
    assert!(e.contains("s.toml:6:") && e.contains("[system] too"), "{e}");
    std::fs::write(
        &f,
        format!("[system]\nxnack = true\n\n[config]\nvictim = \"lru\"\n\n{body}"),
    )
    .unwrap();
    let e = usage(&["scenario", f.to_str().unwrap()]);
    assert!(
        e.contains("s.toml:5:") && e.contains("victim_policy"),
        "{e}"
    );
}

#[test]
fn the_report_names_every_knob_the_run_changed() {
    let dir = scratch("config-report");
    let d = dir.join("r");
    ok(&[
        &SMALL[..],
        &[
            "--set",
            "bulk_dma_unmap=on",
            "--report",
            d.to_str().unwrap(),
        ],
    ]
    .concat());
    let page = std::fs::read_to_string(d.join("index.html")).unwrap();
    assert!(page.contains("<th>other knobs</th>"), "no knobs column");
    assert!(
        page.contains("<td>bulk_dma_unmap=true</td>"),
        "knob missing from the report"
    );
}

#[test]
fn a_driver_picks_its_policy_defaults_and_profile_and_each_stays_overridable() {
    let json = |extra: &[&str]| -> serde_json::Value {
        let mut a = SMALL.to_vec();
        a.extend_from_slice(extra);
        a.push("--json");
        let v: serde_json::Value = serde_json::from_str(&ok(&a)).unwrap();
        v["runs"][0]["spec"].clone()
    };
    let s = json(&["--driver", "uvm"]);
    assert_eq!(s["profile"], "uvm-pcie", "{s}");
    assert_eq!(s["policy"], "uvm", "{s}");
    assert_eq!(s["config"]["driver"], "uvm", "{s}");
    assert_eq!(s["config"]["retry_fault_pending_ns"], 0, "{s}");
    // --set driver=uvm is the same run; a given key stays, in either order.
    assert_eq!(json(&["--set", "driver=uvm"]), s);
    for args in [
        ["--policy", "partial", "--set", "driver=uvm"],
        ["--set", "driver=uvm", "--policy", "partial"],
    ] {
        let t = json(&args);
        assert_eq!(t["policy"], "partial", "{args:?}");
        assert_eq!(t["config"]["retry_fault_pending_ns"], 0, "{args:?}");
        assert_eq!(t["profile"], "uvm-pcie", "{args:?}");
    }
    let t = json(&[
        "--driver",
        "uvm",
        "--set",
        "retry_fault_pending_ns=1ms",
        "--profile",
        "mi210",
    ]);
    assert_eq!(t["config"]["retry_fault_pending_ns"], 1_000_000, "{t}");
    assert_eq!(t["profile"], "mi210", "{t}");
    // kfd is the default.
    let k = json(&[]);
    assert_eq!(k["config"]["driver"], "kfd", "{k}");
    assert_eq!(k["profile"], "mi210", "{k}");
    let e = usage(&["run", "stream", "--driver", "amdgpu"]);
    assert!(e.contains("kfd") && e.contains("uvm"), "{e}");
    let e = usage(&["run", "stream", "--set", "driver=cuda"]);
    assert!(
        e.contains("driver") && e.contains("one of: kfd, uvm, xe"),
        "{e}"
    );
}

#[test]
fn compare_drivers_runs_each_driver_with_ratios_against_the_first_and_explains() {
    let out = ok(&[
        "compare",
        "stream",
        "--size",
        "4MiB",
        "--iters",
        "1",
        "--drivers",
        "kfd,uvm",
    ]);
    assert!(out.contains("kfd partial mi210 (base)"), "{out}");
    assert!(
        out.contains("uvm uvm-pcie") && !out.contains("uvm uvm uvm-pcie"),
        "{out}"
    );
    assert!(out.contains("What differed, and why:"), "{out}");
    assert!(
        out.contains("fewer): it reads the fault buffer in batches"),
        "{out}"
    );
    assert!(
        out.contains("It ran on its driver's machine, uvm-pcie, not mi210"),
        "{out}"
    );
    // One machine for both: no line about the hardware.
    let out = ok(&[
        "compare",
        "stream",
        "--size",
        "4MiB",
        "--iters",
        "1",
        "--drivers",
        "all",
        "--profile",
        "uvm-pcie",
    ]);
    assert!(
        out.contains("kfd partial (base)") && out.contains("│ uvm "),
        "{out}"
    );
    assert!(!out.contains("driver's machine"), "{out}");
    // --policies under --drivers: each policy under each driver.
    let csv = ok(&[
        "compare",
        "stream",
        "--size",
        "1MiB",
        "--iters",
        "1",
        "--drivers",
        "kfd,uvm",
        "--policies",
        "partial",
        "--csv",
    ]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let e = usage(&["compare", "stream", "--drivers", "kfd,nv"]);
    assert!(
        e.contains("\"nv\" is not a driver; drivers are: kfd, uvm, xe"),
        "{e}"
    );
    let e = usage(&["compare", "stream", "--drivers", "kfd,uvm,kfd"]);
    assert!(e.contains("--drivers: kfd is given twice"), "{e}");
    let e = usage(&["compare", "stream", "--drivers", "kfd", "--driver", "uvm"]);
    assert!(e.contains("--driver"), "{e}");
}

#[test]
fn a_sweep_varies_the_driver_and_each_point_gets_its_drivers_profile() {
    let dir = scratch("sweep-driver");
    let f = dir.join("drivers.toml");
    std::fs::write(
        &f,
        "[base]\nworkload = \"stream\"\nsize = \"1MiB\"\niters = 1\n\n[grid]\ndriver = [\"kfd\", \"uvm\"]\n",
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["sweep", f.to_str().unwrap(), "--json"])).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    assert_eq!(runs[0]["spec"]["profile"], "mi210");
    assert_eq!(runs[1]["spec"]["profile"], "uvm-pcie");
    assert_eq!(runs[1]["spec"]["policy"], "uvm");
}

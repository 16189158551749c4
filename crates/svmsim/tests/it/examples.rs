//! The scenarios in `examples/`.

use crate::{root, stdout, svmsim};

fn example_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".toml"))
        .map(|n| format!("examples/{n}"))
        .collect();
    v.sort();
    v
}

#[test]
fn there_are_examples_for_each_kfdtest_port() {
    let files = example_files();
    for want in [
        "split-system-range",
        "set-get-attributes",
        "xnack-mode",
        "prefetch-get",
        "errors",
    ] {
        assert!(
            files.iter().any(|f| f.contains(want)),
            "examples/{want}.toml is missing"
        );
    }
}

#[test]
fn every_example_passes_in_text_and_json() {
    for f in example_files() {
        let out = svmsim(&["scenario", &f]);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{f}:\n{text}\n{}",
            crate::stderr(&out)
        );
        assert!(text.contains("PASSED"), "{f}:\n{text}");

        let again = svmsim(&["scenario", &f]);
        assert_eq!(
            out.stdout, again.stdout,
            "{f}: two runs printed different bytes"
        );

        let out = svmsim(&["scenario", &f, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{f} --json");
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
        assert_eq!(v["schema"], "svmsim.scenario.v3", "{f}");
        assert_eq!(v["passed"], true, "{f}");
        assert_eq!(v["mismatches"], 0, "{f}");
        assert!(v["violation"].is_null(), "{f}");
        let ops = v["ops"].as_array().expect("ops array");
        assert!(!ops.is_empty(), "{f}");
        for op in ops {
            assert!(
                op["line"].as_u64().is_some_and(|l| l > 0),
                "{f}: op without a line"
            );
            assert!(op["mismatch"].is_null(), "{f}: {op}");
        }
        assert!(
            v["processes"].as_array().is_some_and(|p| !p.is_empty()),
            "{f}"
        );
    }
}

#[test]
fn default_scenario_runs_without_a_file_and_is_deterministic() {
    let a = svmsim(&["scenario"]);
    let b = svmsim(&["scenario"]);
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(a.stdout, b.stdout, "two runs of the default differ");
    let text = stdout(&a);
    assert!(text.contains("split-system-range"));
    // The final table shows case 5's five ranges.
    assert!(text.contains("ranges of p0"));
    assert!(text.matches("host_access|coherent").count() >= 5);

    let j1 = svmsim(&["scenario", "--json"]);
    let j2 = svmsim(&["scenario", "--json"]);
    assert_eq!(j1.stdout, j2.stdout, "two JSON runs of the default differ");
    let v: serde_json::Value = serde_json::from_slice(&j1.stdout).unwrap();
    let ranges = v["processes"][0]["ranges"].as_array().unwrap();
    let sizes: Vec<u64> = ranges
        .iter()
        .map(|r| r["size_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![8192, 8192, 16384, 8192, 90112]);
    assert!(ranges.iter().all(|r| r["mapped_to_gpu"] == true));
    // A GPU is named by node index and gpu_id, as every output names it;
    // the file's own name for it is in the system line.
    assert!(ranges.iter().all(|r| r["access"][0] == "GPU 0 (0x1002)"));
    assert_eq!(v["system"]["gpus"][0]["name"], "gpu0");
    assert_eq!(v["system"]["gpus"][0]["node"], 0);
    assert!(text.contains("system: GPU 0 (0x1002) \"gpu0\""), "{text}");
    // The built-in default suggests itself without a file.
    assert!(text.contains("Try next:\n  svmsim scenario --"), "{text}");
}

/// A scenario explains itself as a workload run does: where the time
/// went, the faults' fates and phases, the bytes by place, the buffer
/// that thrashed, one command to try; and its JSON has the same metrics.
#[test]
fn a_scenario_says_what_happened() {
    let f = "examples/many-devices-one-range.toml";
    let text = stdout(&svmsim(&["scenario", f]));
    let block = &text[text.find("What happened:").expect("an explanation")..];
    for part in [
        "The scenario ran 27.77 ms of simulated time (mi210 profile)",
        "parked on faults",
        "faults waited",
        "the handlers served 8",
        "A served fault took",
        "Its GPU accesses moved 32.0MiB",
        "Try next:\n  svmsim scenario examples/many-devices-one-range.toml --driver uvm",
    ] {
        assert!(block.contains(part), "{part}:\n{block}");
    }
    assert!(
        text.contains("Thrashing:") && text.contains("GPU 3 (0x4002) 4.00MiB"),
        "{text}"
    );
    let j = svmsim(&["scenario", f, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let m = &v["metrics"];
    assert_eq!(m["faults_served"], 8);
    assert_eq!(m["bytes_local"], 32 << 20);
    let sum: u64 = [
        "fault_delivery_ns",
        "fault_queued_ns",
        "fault_lock_ns",
        "fault_handler_ns",
    ]
    .iter()
    .map(|k| m[*k].as_u64().unwrap())
    .sum();
    assert_eq!(sum, m["fault_latency_ns"].as_u64().unwrap());
}

/// `--seed` picks the interleaving: one seed replays byte for byte, and
/// the seeds differ in what concurrent work did.
#[test]
fn a_seed_replays_and_seeds_differ() {
    let f = "examples/munmap-race.toml";
    let run = |seed: &str| svmsim(&["scenario", f, "--json", "--seed", seed]);
    let a = run("3");
    assert_eq!(a.stdout, run("3").stdout, "seed 3 did not replay");
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(v["seed"], 3);
    // What happened, without the seed field itself.
    let outputs: std::collections::BTreeSet<String> = (1..=6)
        .map(|s| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&run(&s.to_string()).stdout).unwrap();
            v.as_object_mut().unwrap().remove("seed");
            v.to_string()
        })
        .collect();
    assert!(outputs.len() > 1, "six seeds gave one interleaving");
    let text = stdout(&svmsim(&["scenario", f]));
    assert!(
        text.contains("seed 7 (replay: svmsim scenario examples/munmap-race.toml --seed 7)"),
        "{text}"
    );
}

/// Untimed, VRAM is reclaimed in TTM's LRU order across processes, and the
/// report says who evicted whom.
#[test]
fn oversubscribed_vram_reports_who_evicted_whom() {
    let out = svmsim(&["scenario", "examples/vram-oversubscribed.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    let rows: Vec<(String, String, u64, u64)> = v["evictions"]
        .as_array()
        .expect("an evictions list")
        .iter()
        .map(|r| {
            (
                r["by"].as_str().expect("by").to_owned(),
                r["victim"].as_str().expect("victim").to_owned(),
                r["buffers"].as_u64().expect("buffers"),
                r["pages"].as_u64().expect("pages"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("b".to_owned(), "b".to_owned(), 2, 1024),
            ("c".to_owned(), "a".to_owned(), 4, 2048),
        ]
    );
    let text = stdout(&svmsim(&["scenario", "examples/vram-oversubscribed.toml"]));
    assert!(text.contains("VRAM evictions (who evicted whom)"), "{text}");
}

/// The 2025 refcount race: the example passes on today's kernel, and
/// under the kernel before the fix the checker stops it naming the page.
#[test]
fn refcount_race_example_fails_before_the_fix() {
    let f = "examples/vram-refcount-race.toml";
    let ok = svmsim(&["scenario", f]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let old = svmsim(&["scenario", f, "--set", "kernel=6.17"]);
    assert_eq!(old.status.code(), Some(3), "{}", stdout(&old));
    assert!(
        stdout(&old).contains("invariant refcount broken: gpu0: VRAM page"),
        "{}",
        stdout(&old)
    );
}

/// Two processes in their own XNACK modes, a GPU kernel looping until a
/// flag, CPU threads alongside it, pattern checks: and the same file in
/// either mode from the command line.
#[test]
fn concurrent_threads_example_and_xnack_override() {
    let f = "examples/concurrent-threads.toml";
    let out = svmsim(&["scenario", f]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Forced off, the first process's GPU can no longer fault on the flag:
    // the kernel's wave dies (a fatal VM fault), and the file says so.
    let off = svmsim(&["scenario", f, "--xnack", "off"]);
    assert_eq!(off.status.code(), Some(1), "{}", stdout(&off));
    assert!(
        stdout(&off).contains("(wait, line 85): expected ok, got EFAULT"),
        "{}",
        stdout(&off)
    );
}

/// The fault storm: with amdgpu's IH stale-fault filter on, the stale
/// faults stop in the IH and fewer reach kfd's handler.
#[test]
fn fault_storm_example_with_the_ih_filter() {
    let f = "examples/fault-storm.toml";
    let on = svmsim(&["scenario", f, "--set", "ih_stale_filter=on"]);
    assert_eq!(on.status.code(), Some(1), "{}", stdout(&on));
    assert!(
        stdout(&on).contains(
            "faults(GPU 0 (0x1002)): expected 95, got 65; faults_ih_filtered: expected 0, got 90"
        ),
        "{}",
        stdout(&on)
    );
}

/// The KFDTest ports among the examples run on each GPU of an eight-GPU
/// machine, as current KFDTest runs a case per GPU node: each file's GPUs
/// keep their names (so its ops and expectations still name them), and
/// other GPUs are put before and after them, so that the GPU under test
/// takes each place in the topology (each gpu index, each default id).
#[test]
fn kfdtest_example_ports_pass_on_each_gpu_node() {
    let ports = [
        "basic-vram",
        "prefetch-get",
        "set-get-attributes",
        "split-system-range",
        "xnack-mode",
    ];
    let dir = std::env::temp_dir().join(format!("svmsim-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for port in ports {
        let text = std::fs::read_to_string(root().join(format!("examples/{port}.toml"))).unwrap();
        let first = text.find("[[system.gpu]]").expect("a GPU");
        let after = text[first..]
            .find("[[op]]")
            .map_or(text.len(), |i| first + i);
        let pad = |j: usize| {
            format!(
                "[[system.gpu]]\nname = \"node{j}\"\nid = {:#x}\n\n",
                0x10_0002 + 0x1000 * j
            )
        };
        for node in 0..8 {
            let before: String = (0..node).map(pad).collect();
            let behind: String = (node..7).map(pad).collect();
            let variant = format!(
                "{}{before}{}{behind}{}",
                &text[..first],
                &text[first..after],
                &text[after..]
            );
            let path = dir.join(format!("{port}-node{node}.toml"));
            std::fs::write(&path, variant).unwrap();
            let out = svmsim(&["scenario", path.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{port} with its GPU at node {node}:\n{}",
                stdout(&out)
            );
        }
    }
}

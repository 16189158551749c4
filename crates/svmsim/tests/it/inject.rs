//! Failures on purpose over the built-in workloads: with failures injected
//! at random sites, rates and seeds, every run ends as the kernel would
//! leave it (finished, or killed by the SIGBUS or fatal GPU fault the
//! injected failure causes), its results and memory are checked byte for
//! byte, every injected failure is handled exactly once, and the same
//! seed fails the same calls.
//!
//! `SVM_WORKLOAD_SWARM` sets the number of runs (default 48); a failure
//! prints the run's one-line repro.

use svm_core::config::Config;
use svm_core::inject::{Rule, Site, When};
use svmsim::exec::{Capture, RunSpec, Status, run};

use crate::{stderr, stdout, svmsim};

const WORKLOADS: [&str; 8] = [
    "stream",
    "ping-pong",
    "producer-consumer",
    "multi-gpu-split",
    "reduction",
    "shared-buffer",
    "unregistered-heap",
    "bfs",
];

/// SplitMix64: the test's own draws, from the run's number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Run `n`'s spec: a workload, XNACK on or off, a prefetch now and then,
/// and one to three rules.
fn spec(n: u64) -> RunSpec {
    let d = |k: u64| mix(n.wrapping_mul(16) + k);
    let pick = |x: u64, n: usize| usize::try_from(x % n as u64).unwrap();
    let workload = WORKLOADS[pick(d(0), WORKLOADS.len())];
    let mut rules = Vec::new();
    for k in 0..=d(1) % 3 {
        let site = Site::ALL[pick(d(2 + k), Site::ALL.len())];
        let when = match d(5 + k) % 4 {
            0 => When::Nth(1 + d(8 + k) % 30),
            1 => When::Every(1 + d(8 + k) % 4),
            2 => When::Probability(500_000),
            _ => When::Probability(50_000),
        };
        rules.push(Rule {
            site,
            when,
            errno: None,
        });
    }
    let mut config = Config::default();
    config
        .set("inject", &svm_core::inject::show_rules(&rules))
        .unwrap();
    // kfd's unchecked fence loses bytes by design (its own test below).
    config.set("check_copy_fence", "on").unwrap();
    RunSpec {
        workload: workload.into(),
        size: 2 << 20,
        iters: 2,
        xnack: d(11) % 4 != 0,
        prefetch: d(12) % 3 == 0,
        seed: d(13) % 1000,
        profile: "mi250x".into(),
        gpus: Some(2),
        config,
        ..RunSpec::default()
    }
}

fn repro(s: &RunSpec) -> String {
    format!(
        "svmsim run {} --profile mi250x --gpus 2 --size 2MiB --iters 2 --xnack {} {}--seed {} --set check_copy_fence=on --set inject={}",
        s.workload,
        if s.xnack { "on" } else { "off" },
        if s.prefetch { "--prefetch " } else { "" },
        s.seed,
        svm_core::inject::show_rules(&s.config.inject)
    )
}

#[test]
fn workloads_under_injected_failures_lose_no_byte() {
    let runs: u64 = std::env::var("SVM_WORKLOAD_SWARM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let (mut killed, mut injected) = (0, 0);
    for n in 0..runs {
        let s = spec(n);
        let o = run(&s, Capture::default()).unwrap_or_else(|e| panic!("{}: {e}", repro(&s)));
        assert_eq!(o.violation, None, "run {n}: {}", repro(&s));
        match &o.status {
            Status::Ok => {}
            // A kernel killed by what an injected failure does (the CPU's
            // SIGBUS, a GPU fault the driver could not serve, a wave that
            // gave up retrying a fault mapping kept failing).
            // (A run the workload kills without any rule, such as an
            // unregistered heap under XNACK off, is killed either way.)
            Status::Killed { error } => {
                let clean = RunSpec {
                    config: Config::default(),
                    ..s.clone()
                };
                let dies_anyway = matches!(
                    run(&clean, Capture::default()).unwrap().status,
                    Status::Killed { .. }
                );
                assert!(
                    error.contains("injected") || error.contains("retr") || dies_anyway,
                    "run {n} killed by something not injected: {error}; {}",
                    repro(&s)
                );
                killed += 1;
            }
            other => panic!("run {n}: {other:?}: {}", repro(&s)),
        }
        assert!(!o.injection.is_empty(), "run {n}: no coverage table");
        for c in &o.injection {
            let handled: u64 = c.responses.values().sum();
            assert_eq!(
                handled,
                c.injected,
                "run {n}, {}: {} injected, {handled} handled; {}",
                c.site,
                c.injected,
                repro(&s)
            );
            assert!(c.injected <= c.reached);
            injected += c.injected;
        }
    }
    eprintln!("{runs} runs: {injected} failures injected, {killed} runs killed by them");
    assert!(injected > 0 && killed > 0 && killed < runs);
}

#[test]
fn the_same_seed_fails_the_same_calls_and_another_seed_others() {
    let mut s = RunSpec {
        workload: "ping-pong".into(),
        size: 2 << 20,
        iters: 2,
        profile: "mi250x".into(),
        gpus: Some(2),
        ..RunSpec::default()
    };
    s.config
        .set("inject", "hmm_busy=0.3,migrate_collect=0.5")
        .unwrap();
    let json = |s: &RunSpec| serde_json::to_string(&run(s, Capture::default()).unwrap()).unwrap();
    let a = json(&s);
    assert!(a.contains("\"injection\""));
    assert_eq!(a, json(&s));
    s.seed += 1;
    assert_ne!(a, json(&s));
}

#[test]
fn a_failed_vram_allocation_falls_back_and_maps_in_system_memory() {
    let mut s = RunSpec {
        workload: "stream".into(),
        size: 2 << 20,
        iters: 1,
        ..RunSpec::default()
    };
    let clean = run(&s, Capture::default()).unwrap();
    s.config.set("inject", "vram_alloc=1").unwrap();
    let o = run(&s, Capture::default()).unwrap();
    assert_eq!(o.status, Status::Ok, "the fault is handled, not fatal");
    assert_eq!(o.violation, None);
    assert_eq!(o.metrics.pages_to_vram, 0, "nothing reached VRAM");
    assert!(clean.metrics.pages_to_vram > 0);
    let c = &o.injection[Site::VramAlloc.index()];
    assert!(c.injected > 0);
    assert_eq!(c.responses.get("fallback"), Some(&c.injected));
}

#[test]
fn a_failed_sdma_fence_loses_bytes_as_kfd_does_and_the_checker_names_it() {
    let mut s = RunSpec {
        workload: "stream".into(),
        size: 2 << 20,
        iters: 1,
        ..RunSpec::default()
    };
    s.config.set("inject", "copy_fence@1").unwrap();
    let o = run(&s, Capture::default()).unwrap();
    let v = o.violation.expect("the checker finds the lost bytes");
    assert!(
        v.contains("copy_fence") && v.contains("svm_migrate_copy_done"),
        "{v}"
    );
    let c = &o.injection[Site::CopyFence.index()];
    assert_eq!((c.injected, c.responses.get("corrupted")), (1, Some(&1)));
    // Checked, the fence fails the chunk: the pages stay, nothing is lost.
    s.config.set("check_copy_fence", "on").unwrap();
    let o = run(&s, Capture::default()).unwrap();
    assert_eq!(o.violation, None);
    assert_eq!(o.status, Status::Ok);
    assert_eq!(o.injection[Site::CopyFence.index()].injected, 1);
}

#[test]
fn the_cli_takes_rules_lists_sites_and_reports_coverage() {
    let o = svmsim(&["inject-sites", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), Site::ALL.len());
    assert_eq!(v[0]["function"], "svm_range_vram_node_new");

    let o = svmsim(&[
        "run",
        "stream",
        "--size",
        "2MiB",
        "--iters",
        "1",
        "--json",
        "--inject",
        "hmm_busy@2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cov = &v["runs"][0]["injection"][Site::HmmBusy.index()];
    assert_eq!(cov["injected"], 1);
    assert_eq!(cov["responses"]["retried"], 1);
    assert_eq!(v["runs"][0]["spec"]["config"]["inject"][0]["nth"], 2);

    let o = svmsim(&["run", "stream", "--size", "2MiB", "--inject", "hmm_busy@2"]);
    let text = stdout(&o);
    assert!(text.contains("Injected failures: 1"), "{text}");
    assert!(
        text.contains("--inject hmm_busy@2"),
        "the repro line keeps the rule: {text}"
    );

    for (bad, says) in [
        ("nosuch=0.5", "no injection site"),
        ("dma_map=2", "probability"),
        ("dma_map@0", "call count"),
        ("dma_map@1:ENOPE", "errno"),
    ] {
        let o = svmsim(&["run", "stream", "--size", "2MiB", "--inject", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains(says), "{bad}: {}", stderr(&o));
    }
}

//! Every workload, in real mode, against its CPU reference; twice under the
//! same seed for determinism; and a check per policy.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use svm_core::policy::Policy;
use svm_sim::check;
use svm_sim::machine::Machine;
use svm_sim::timing::Profile;
use svm_workloads::{ALL, Params, Report};

/// A two-GPU MI250X-class machine scaled down to 64 MiB of VRAM per GPU.
fn machine(seed: u64, policy: Policy) -> Machine {
    let p = Profile::built_in("mi250x").unwrap();
    let mut m = svm_workloads::machine(&p, 2, Some(64 << 20)).unwrap();
    m.set_policy(policy);
    m.set_seed(Some(seed));
    m
}

fn run(name: &str, seed: u64, policy: Policy) -> (Report, u64) {
    let w = svm_workloads::by_name(name).unwrap();
    let mut m = machine(seed, policy);
    let pid = m.spawn("w");
    let p = Params {
        size: 2 << 20,
        iters: 2,
        seed,
    };
    let r = svm_workloads::run(&mut m, pid, w, &p).unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Err(v) = check::check(&m) {
        panic!("{name}: {v}");
    }
    let mut h = DefaultHasher::new();
    format!("{r:?}").hash(&mut h);
    for e in m.events() {
        e.hash(&mut h);
    }
    m.counters().copy_busy_ns.hash(&mut h);
    (r, h.finish())
}

#[test]
fn every_workload_matches_its_cpu_reference() {
    for w in ALL {
        let (r, _) = run(w.name(), 1, Policy::Partial);
        assert!(r.verified, "{} computed the wrong result", w.name());
        assert!(!r.kernels.is_empty() && r.kernel_ns > 0, "{r:?}");
        assert!(r.faults > 0, "{}: no fault at all", w.name());
    }
}

#[test]
fn every_workload_is_deterministic_under_a_seed() {
    for w in ALL {
        let (_, a) = run(w.name(), 7, Policy::Partial);
        let (_, b) = run(w.name(), 7, Policy::Partial);
        assert_eq!(a, b, "{} differs between two runs of one seed", w.name());
    }
}

#[test]
fn workloads_verify_under_every_policy() {
    for policy in Policy::ALL {
        for name in ["stream", "ping-pong", "stencil2d"] {
            let (r, _) = run(name, 3, policy);
            assert!(r.verified, "{name} under {policy:?}");
        }
    }
}

/// Footprints of 110%, 125% and 200% of VRAM: VRAM runs out, buffers are
/// evicted, and the results still match.
#[test]
fn oversubscribed_workloads_evict_and_still_verify() {
    let profile = Profile::built_in("mi210").unwrap();
    for name in ["stream", "gemm", "stencil2d", "gups", "reduction"] {
        for factor in svm_workloads::OVERSUBSCRIPTION {
            let w = svm_workloads::by_name(name).unwrap();
            // GEMM's work grows as the cube of its side: keep it small.
            // The others are large enough that VRAM holds a few 2 MiB
            // ranges: since 6.10 a migration first reserves its whole range
            // against the KFD VRAM limit, and a VRAM barely larger than one
            // range refuses them all (they stay in system memory).
            let size = if name == "gemm" { 1 << 20 } else { 8 << 20 };
            let p = Params {
                size,
                iters: 2,
                seed: 1,
            };
            let mut m = svm_workloads::oversubscribed_machine(&profile, w, &p, factor).unwrap();
            let pid = m.spawn("w");
            let r = svm_workloads::run(&mut m, pid, w, &p)
                .unwrap_or_else(|e| panic!("{name} at {factor}: {e}"));
            assert!(r.verified, "{name} at {factor}");
            let evictions: u64 = m
                .process(pid)
                .svm
                .stats()
                .iter()
                .map(|(_, s)| s.evictions)
                .sum();
            assert!(
                evictions > 0 || m.counters().pages_to_ram > 0,
                "{name} at {factor}: VRAM never ran out"
            );
            if let Err(v) = check::check(&m) {
                panic!("{name} at {factor}: {v}");
            }
        }
    }
}

/// Two GPUs at once on one process: faults wait for the other GPU's fault
/// holding the process's `svms->lock`, and the report says how long.
#[test]
fn a_two_gpu_split_reports_lock_waits() {
    let p = Profile::built_in("mi250x").unwrap();
    let mut m = svm_workloads::machine(&p, 2, Some(64 << 20)).unwrap();
    let pid = m.spawn("w");
    let w = svm_workloads::by_name("multi-gpu-split").unwrap();
    let r = svm_workloads::run(&mut m, pid, w, &Params::default()).unwrap();
    assert!(r.verified);
    assert!(r.svms_lock_wait_ns > 0, "{r:?}");
    assert!(r.handler_busy_ns > 0 && r.copy_busy_ns > 0, "{r:?}");
}

/// The host-side word I/O the workloads verify with: a streamed write
/// reads back word for word, and the check says no when one word differs
/// (or the words are not where it looks).
#[test]
fn streamed_word_io_reads_back_and_the_check_can_fail() {
    let mut m = machine(1, Policy::Partial);
    let pid = m.spawn("w");
    let mut r = svm_workloads::Run::new(&mut m, pid);
    // Three pages and a bit, so parts end at page boundaries mid-stream.
    let n = 3 * 1024 + 7;
    let a = r.alloc(4 * 4096, &[]).unwrap();
    r.write_u32s_with(a, n, |i| i.wrapping_mul(2_654_435_761))
        .unwrap();
    let got = r.read_u32s(a, n).unwrap();
    assert!(
        got.iter()
            .zip(0u32..)
            .all(|(&w, i)| w == i.wrapping_mul(2_654_435_761))
    );
    assert_eq!(got.len(), n);
    assert!(
        r.check_u32s(a, n, |i| i.wrapping_mul(2_654_435_761))
            .unwrap()
    );
    r.write_u32s(a + 4 * 2049, &[5]).unwrap();
    assert!(
        !r.check_u32s(a, n, |i| i.wrapping_mul(2_654_435_761))
            .unwrap()
    );
    assert!(
        !r.check_u32s(a + 4, n - 1, |i| i.wrapping_mul(2_654_435_761))
            .unwrap()
    );
    // A fill from a word inside a page: its ragged first page and the
    // whole pages after it read the same.
    r.fill_u32s(a + 4 * 5, n - 5, 0x0bad_cafe).unwrap();
    assert!(r.check_u32s(a + 4 * 5, n - 5, |_| 0x0bad_cafe).unwrap());
    assert!(!r.check_u32s(a, n, |_| 0x0bad_cafe).unwrap());
    // Unaligned word I/O is an error, not a wrong answer.
    assert!(r.write_u32s(a + 2, &[1]).is_err());
    assert!(r.fill_u32s(a + 2, 1, 0).is_err());
}

//! Traces: a recorded run replays identically; the binary form round-trips;
//! bad bytes are errors, never panics; the CSV form runs.

use svm_core::policy::Policy;
use svm_sim::check;
use svm_sim::machine::{Machine, SmiEvent};
use svm_sim::timing::Profile;
use svm_workloads::trace::{self, TraceError};
use svm_workloads::{ALL, Params};

fn machine(seed: u64) -> Machine {
    let p = Profile::built_in("mi250x").unwrap();
    let mut m = svm_workloads::machine(&p, 2, Some(64 << 20)).unwrap();
    m.set_policy(Policy::Partial);
    m.set_seed(Some(seed));
    m
}

/// What a run did to the memory system.
fn outcome(m: &Machine) -> (Vec<SmiEvent>, String, u64) {
    (
        m.events().to_vec(),
        format!("{:?}", m.counters()),
        m.now_ns(),
    )
}

#[test]
fn every_workload_replays_identically_from_its_trace() {
    for w in ALL {
        let p = Params {
            size: 1 << 20,
            iters: 2,
            seed: 3,
        };
        let mut m = machine(11);
        m.start_recording();
        let pid = m.spawn("w");
        let report = svm_workloads::run(&mut m, pid, w, &p).unwrap();
        let events = m.take_trace();
        let bytes = trace::encode(&events);
        assert_eq!(
            trace::decode(&bytes).unwrap(),
            events,
            "{}: round trip",
            w.name()
        );
        let mut again = machine(11);
        let kernels = trace::replay(&mut again, &trace::decode(&bytes).unwrap()).unwrap();
        let stats: Vec<_> = kernels.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            stats,
            report.kernels,
            "{}: kernel statistics differ",
            w.name()
        );
        assert_eq!(
            outcome(&again),
            outcome(&m),
            "{}: the memory system differs",
            w.name()
        );
        check::check(&again).unwrap();
        // Compact: a few bytes per wave operation.
        let ops = events
            .iter()
            .filter(|e| matches!(e, svm_sim::machine::TraceEvent::Wave { .. }))
            .count();
        assert!(
            bytes.len() < 16 * ops + 4096,
            "{}: {} bytes for {ops} ops",
            w.name(),
            bytes.len()
        );
    }
}

#[test]
fn corrupt_traces_are_errors_not_panics() {
    let mut m = machine(1);
    m.start_recording();
    let pid = m.spawn("w");
    svm_workloads::run(
        &mut m,
        pid,
        svm_workloads::by_name("gups").unwrap(),
        &Params::default(),
    )
    .unwrap();
    let bytes = trace::encode(&m.take_trace());
    assert!(matches!(
        trace::decode(b"nonsense"),
        Err(TraceError::Header(_))
    ));
    // A well-formed trace asking the impossible is an error, not a hang.
    use svm_sim::machine::TraceEvent;
    for bad in [
        vec![TraceEvent::Wait { kernel: 0 }],
        vec![
            TraceEvent::Spawn { name: "p".into() },
            TraceEvent::Launch {
                pid: 0,
                gpu_id: 0x1002,
                waves: u32::MAX,
            },
        ],
        vec![TraceEvent::Exit { pid: 3 }],
    ] {
        assert!(trace::replay(&mut machine(1), &bad).is_err(), "{bad:?}");
    }
    for cut in [11, bytes.len() / 2, bytes.len() - 1] {
        assert!(trace::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Flipped bytes decode to something or fail, but never panic.
    let mut x = 12345u64;
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let i = 10 + (x >> 33) as usize % (b.len() - 10);
            b[i] ^= x.to_le_bytes()[2];
        }
        let _ = trace::decode(&b);
    }
}

#[test]
fn a_csv_trace_runs() {
    let csv = "kernel,gpu_id,wave,op,addr,len\n\
               0,0x1002,0,load,0x7f0000000000,256\n\
               0,0x1002,0,compute,0,500\n\
               0,0x1002,1,store,0x7f0000200000,256\n\
               1,0x2002,0,load,0x7f0000200000,256\n";
    let events = trace::from_csv(csv).unwrap();
    let mut m = machine(2);
    let ks = trace::replay(&mut m, &events).unwrap();
    assert_eq!(ks.len(), 2);
    let k0 = ks[0].as_ref().unwrap();
    assert_eq!((k0.waves, k0.accesses), (2, 2));
    assert!(k0.faults >= 2);
    check::check(&m).unwrap();
    for (bad, want) in [
        ("kernel,gpu\n", "header"),
        (
            "kernel,gpu_id,wave,op,addr,len\n0,1,0,fetch,0,4\n",
            "expected load",
        ),
        (
            "kernel,gpu_id,wave,op,addr,len\n0,1,0,load,zz,4\n",
            "not a number",
        ),
        ("kernel,gpu_id,wave,op,addr,len\n0,1,0,load,0\n", "fields"),
        // The line counts the blank one and a quoted field's text.
        (
            "kernel,gpu_id,wave,op,addr,len\n0,1,0,\"load\",0,4\n\n0,1,0,fetch,0,4\n",
            "line 4",
        ),
    ] {
        let e = trace::from_csv(bad).unwrap_err().to_string();
        assert!(e.contains(want), "{bad:?}: {e}");
    }
}

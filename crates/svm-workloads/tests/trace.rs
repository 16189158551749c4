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
            trace::decode(&bytes, trace::MAX_EVENTS).unwrap(),
            events,
            "{}: round trip",
            w.name()
        );
        let mut again = machine(11);
        let kernels = trace::replay(
            &mut again,
            &trace::decode(&bytes, trace::MAX_EVENTS).unwrap(),
        )
        .unwrap();
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
        trace::decode(b"nonsense", trace::MAX_EVENTS),
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
        assert!(
            trace::decode(&bytes[..cut], trace::MAX_EVENTS).is_err(),
            "cut at {cut}"
        );
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
        let _ = trace::decode(&b, trace::MAX_EVENTS);
    }
}

#[test]
fn a_csv_trace_runs() {
    let csv = "kernel,gpu_id,wave,op,addr,len\n\
               0,0x1002,0,load,0x7f0000000000,256\n\
               0,0x1002,0,compute,0,500\n\
               0,0x1002,1,store,0x7f0000200000,256\n\
               1,0x2002,0,load,0x7f0000200000,256\n";
    let events = trace::from_csv(csv, trace::MAX_EVENTS).unwrap();
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
        let e = trace::from_csv(bad, trace::MAX_EVENTS)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{bad:?}: {e}");
    }
}

/// Every count and size in a trace is checked against its limit as it is
/// read, before anything is allocated for it.
#[test]
fn limits_are_checked_while_reading() {
    use svm_sim::limits as l;
    use svm_sim::machine::{TraceEvent, WaveOp};
    let spawn = || TraceEvent::Spawn { name: "p".into() };
    let wave = |len| TraceEvent::Wave {
        kernel: 0,
        wave: 0,
        op: WaveOp::Store { addr: 0, len },
    };
    let limit_of =
        |events: &[TraceEvent], max_events| match trace::decode(&trace::encode(events), max_events)
        {
            Err(TraceError::Limit {
                what, value, max, ..
            }) => (what, value, max),
            other => panic!("{events:?}: {other:?}"),
        };
    // A CPU access of 2^50 bytes (a 22-byte file once asked for that).
    let cpu = TraceEvent::Cpu {
        pid: 0,
        addr: 0,
        len: 1 << 50,
        write: true,
    };
    assert_eq!(
        limit_of(&[spawn(), cpu], trace::MAX_EVENTS),
        ("bytes of a CPU access", 1 << 50, l::MAX_ACCESS_BYTES)
    );
    assert_eq!(
        limit_of(&[spawn(), wave(u32::MAX)], trace::MAX_EVENTS),
        (
            "bytes of a wave instruction",
            u64::from(u32::MAX),
            l::MAX_WAVE_OP_BYTES
        )
    );
    let launch = TraceEvent::Launch {
        pid: 0,
        gpu_id: 0x1002,
        waves: l::MAX_LAUNCH_WAVES + 1,
    };
    assert_eq!(
        limit_of(&[spawn(), launch], trace::MAX_EVENTS).0,
        "waves of a launch"
    );
    let spawns = vec![spawn(); l::MAX_PROCESSES as usize + 1];
    assert_eq!(
        limit_of(&spawns, trace::MAX_EVENTS),
        (
            "processes",
            u64::from(l::MAX_PROCESSES) + 1,
            u64::from(l::MAX_PROCESSES)
        )
    );
    // The event count a host budget allows, and no more.
    let ten: Vec<_> = std::iter::once(spawn())
        .chain((0..9).map(|_| wave(64)))
        .collect();
    assert_eq!(trace::decode(&trace::encode(&ten), 10).unwrap().len(), 10);
    assert_eq!(limit_of(&ten, 9), ("events", 10, 9));

    // CSV: the line is named.
    let head = "kernel,gpu_id,wave,op,addr,len\n";
    for (body, want) in [
        (
            "0,1,16777216,load,0,4\n",
            "line 2: wave 16777216 is above the limit",
        ),
        (
            "0,1,0,load,0,2147483648\n",
            "line 2: bytes of a wave instruction",
        ),
        (
            "0,1,0,load,0,4\n0,1,0,load,0,4\n0,1,0,load,0,4\n",
            "line 4: lines 3",
        ),
    ] {
        let e = trace::from_csv(&format!("{head}{body}"), 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{body:?}: {e}");
    }
    // A CSV trace touching many 2 MiB blocks is counted by its blocks.
    let spread: String = (0..8)
        .map(|i| format!("0,1,0,load,{},4\n", i << 21))
        .collect();
    let e = trace::from_csv(&format!("{head}{spread}"), 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 MiB blocks touched 6"), "{e}");
}

/// A fork and KFD buffers are recorded, round-trip and replay to the same
/// run: the child is the next process, and its writes stay its own.
#[test]
fn a_fork_and_kfd_buffers_replay_identically() {
    use svm_core::addr::CpuVa;
    use svm_sim::mm::{Backing, Mark, Prot};
    let run = |m: &mut Machine| {
        let p = m.spawn("parent");
        let buf = m
            .mmap(p, None, 1 << 20, Prot::RW, Backing::Anon, Mark::None)
            .unwrap()
            .start_va();
        m.cpu_access(p, buf, 8, Some(&[1; 8])).unwrap();
        let c = m.fork(p, "child");
        m.cpu_access(c, buf, 8, Some(&[2; 8])).unwrap();
        let h = m.alloc_vram_bo(p, 0x1002, 4 << 20).unwrap();
        assert!(m.alloc_vram_bo(p, 0x1002, 1 << 50).is_err());
        m.free_vram_bo(p, h).unwrap();
        (p, c, buf)
    };
    let mut m = machine(5);
    m.start_recording();
    let (p, c, buf) = run(&mut m);
    let events = m.take_trace();
    let bytes = trace::encode(&events);
    assert_eq!(trace::decode(&bytes, trace::MAX_EVENTS).unwrap(), events);
    let mut again = machine(5);
    trace::replay(&mut again, &events).unwrap();
    assert_eq!(outcome(&again), outcome(&m));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, svm_sim::machine::TraceEvent::AllocBo { .. }))
            .count(),
        2
    );
    // (A trace keeps no bytes: the replay writes its fill pattern.)
    let read = |pid| m.page_bytes(pid, CpuVa::new(buf.raw()).page_num())[0];
    assert_eq!((read(p), read(c)), (1, 2));
    check::check(&again).unwrap();
}

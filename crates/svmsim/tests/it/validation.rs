//! The three drivers against published figures (docs/validation.md): each
//! anchor is a ratio or a time from a paper or a patch series, measured
//! here with the profiles' constants, none of them tuned for the test.
//! Where svmsim's model cannot reach an anchor, the test holds the
//! mechanism instead and docs/validation.md says by how much and why.
//! Last, a behaviour docs/drivers.md quotes.

use svm_core::config::{Config, Driver};
use svmsim::exec::{Capture, RunSpec, run};

/// Kernel time and faults of `workload` at 16 MiB under the uvm driver
/// on `uvm-pcie`, with `set` applied and VRAM at `oversubscribe`.
fn uvm(workload: &str, set: &[&str], oversubscribe: Option<f64>) -> (u64, u64) {
    let mut config = Config::for_driver(Driver::Uvm);
    for kv in set {
        config.assign(kv).unwrap();
    }
    let spec = RunSpec {
        workload: workload.into(),
        size: 16 << 20,
        profile: "uvm-pcie".into(),
        oversubscribe,
        config,
        ..RunSpec::default()
    };
    let o = run(&spec, Capture::default()).unwrap();
    assert_eq!(o.status, svmsim::exec::Status::Ok, "{workload} {set:?}");
    (o.metrics.kernel_ns, o.metrics.faults)
}

fn within(x: f64, lo: f64, hi: f64) -> bool {
    (lo * 0.75..=hi * 1.25).contains(&x)
}

/// UVMSmart, 110% oversubscription: on-demand migration with 2 MiB
/// eviction is 57-66x slower than tree prefetch without
/// oversubscription (bfs, fdtd); tree prefetch with tree eviction 3.1-3.7x.
/// svmsim: stream for the first (a streaming kernel re-reading all of its
/// data each iteration, so every iteration refetches what eviction took),
/// bfs for the second; first-resident eviction stands for UVM's. UVMSmart
/// retries each fault when its own far-fault service ends, which is the
/// `block` replay; under the driver's BATCH_FLUSH the first ratio is
/// 210 (docs/validation.md says why).
#[test]
fn uvmsmart_oversubscription_ratios() {
    let block = "uvm_replay_policy=block";
    let (base, _) = uvm("stream", &[block], None);
    let (lru, _) = uvm("stream", &[block, "uvm_prefetch=off"], Some(1.1));
    let r = lru as f64 / base as f64;
    eprintln!("stream: on-demand at 110% / tree prefetch = {r:.1}");
    assert!(within(r, 57.0, 66.0), "{r:.1}");
    let (flush, _) = uvm("stream", &["uvm_prefetch=off"], Some(1.1));
    let (flush_base, _) = uvm("stream", &[], None);
    let f = flush as f64 / flush_base as f64;
    eprintln!("stream, batch-flush: {f:.1}");
    assert!(
        f > r,
        "a flushed batch's faults come back: {f:.1} against {r:.1}"
    );
    let (base, _) = uvm("bfs", &[block], None);
    let (tree, _) = uvm("bfs", &[block], Some(1.1));
    let r = tree as f64 / base as f64;
    eprintln!("bfs: tree prefetch at 110% / without = {r:.2}");
    assert!(within(r, 3.1, 3.7), "{r:.2}");
}

/// UVMSmart: tree prefetch is 30-43x faster than on-demand migration.
/// svmsim cannot reach it (docs/validation.md): UVMSmart's on-demand time
/// is its faults times a fixed 45 µs far-fault latency, one after the
/// other, while here faults of many waves are served together, 256 to a
/// batch (a fault here is one service of a block, its batch's other
/// faults on the block coalesced). What holds is the mechanism: the
/// prefetch takes fewer services and less time.
#[test]
fn uvm_tree_prefetch_beats_on_demand_by_its_faults() {
    for w in ["stream", "stencil2d", "bfs"] {
        let (tree, tf) = uvm(w, &[], None);
        let (od, of) = uvm(w, &["uvm_prefetch=off"], None);
        let r = od as f64 / tree as f64;
        eprintln!("{w}: on-demand / tree = {r:.1} ({of} faults against {tf})");
        assert!(of > tf, "{w}: {of} faults on demand, {tf} with the tree");
        assert!(r > 1.5, "{w}: {r:.1}");
    }
}

/// Allen & Ge (SC'21): fault-driven streaming ran at 1-1.4 GB/s on a
/// Titan V, against about 12 GB/s of memcpy on the same link. The
/// uvm-pcie profile was fitted to their batch times and memcpy curve, not
/// to this.
#[test]
fn allen_ge_fault_driven_streaming_rate() {
    let spec = RunSpec {
        workload: "stream".into(),
        size: 256 << 20,
        iters: 1,
        profile: "uvm-pcie".into(),
        config: Config::for_driver(Driver::Uvm),
        phantom: true,
        ..RunSpec::default()
    };
    let o = run(&spec, Capture::default()).unwrap();
    let gb_s = o.metrics.migrated_bytes as f64 / o.metrics.kernel_ns as f64;
    eprintln!("uvm fault-driven streaming: {gb_s:.2} GB/s");
    assert!(within(gb_s, 1.0, 1.4), "{gb_s:.2} GB/s");
}

/// False sharing between two GPUs without peer mappings: under uvm every
/// page goes back and forth through system memory, each hop of a page
/// about 3 ms after the last, beyond the 500 µs lapse, so thrashing is
/// never detected and the pages cross hundreds of times; kfd's 2 ms
/// window lets each GPU finish its passes while it holds a range.
#[test]
fn false_sharing_is_slow_under_uvm_and_its_thrashing_never_fires() {
    let run = |driver: Driver| {
        let spec = RunSpec {
            workload: "false-sharing".into(),
            size: 4 << 20,
            iters: 2,
            profile: "uvm-pcie".into(),
            config: Config::for_driver(driver),
            ..RunSpec::default()
        };
        let o = run(&spec, Capture::default()).unwrap();
        assert_eq!(o.status, svmsim::exec::Status::Ok, "{driver}");
        o
    };
    let kfd = run(Driver::Kfd);
    let uvm = run(Driver::Uvm);
    assert!(uvm.metrics.migrated_bytes > 500 * kfd.metrics.migrated_bytes);
    assert!(uvm.metrics.kernel_ns > 100 * kfd.metrics.kernel_ns);
    assert_eq!(uvm.policy_counters.get("throttled_faults"), Some(&0));
}

/// Two GPUs reading one read-mostly table at once: under uvm each gets
/// read-only copies and the table stays put; without read duplication
/// (as kfd, which has the flag but one residency per page) the pages go
/// back and forth between the readers.
#[test]
fn read_shared_is_served_by_copies_under_uvm_and_moves_without_them() {
    let run = |driver: Driver, set: &[(&str, &str)]| {
        let mut config = Config::for_driver(driver);
        for (k, v) in set {
            config.set(k, v).unwrap();
        }
        let spec = RunSpec {
            workload: "read-shared".into(),
            size: 4 << 20,
            iters: 4,
            profile: "uvm-pcie".into(),
            config,
            ..RunSpec::default()
        };
        let o = run(&spec, Capture::default()).unwrap();
        assert_eq!(o.status, svmsim::exec::Status::Ok, "{driver} {set:?}");
        o
    };
    let copies = run(Driver::Uvm, &[]);
    let moved = run(Driver::Uvm, &[("uvm_read_duplication", "off")]);
    let kfd = run(Driver::Kfd, &[]);
    // The table's pages, a third of 4 MiB, copied once to each GPU.
    let table = (4u64 << 20) / 3 / 4096;
    let copied = copies.policy_counters.get("read_duplicated_pages").copied();
    assert_eq!(copied, Some(2 * table));
    // (At 4 MiB 4.7 ms against 17 ms, 5.3 MiB moved against 20 MiB.)
    assert!(moved.metrics.kernel_ns > 3 * copies.metrics.kernel_ns);
    assert!(moved.metrics.migrated_bytes > 3 * copies.metrics.migrated_bytes);
    assert!(kfd.metrics.kernel_ns > copies.metrics.kernel_ns);
    assert_eq!(moved.policy_counters.get("read_duplicated_pages"), None);
}

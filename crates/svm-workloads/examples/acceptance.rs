//! The acceptance experiment: a stream over the first half of a 1 GiB range
//! on one MI210-class GPU, XNACK on, under `whole-range` and `partial`.
//!
//! `cargo run --release -p svm-workloads --example acceptance [RANGE_MIB]`

use svm_core::policy::Policy;
use svm_sim::timing::Profile;
use svm_workloads::experiments::first_touch_stream;

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let profile = Profile::built_in("mi210").expect("built-in profile");
    println!(
        "stream over the first {} MiB of a {mib} MiB range, {} profile, XNACK on\n",
        mib / 2,
        profile.name
    );
    println!(
        "{:<12} {:>10} {:>14} {:>8} {:>16} {:>14} {:>12} {:>12} {:>8}",
        "policy",
        "first mig",
        "migrated",
        "faults",
        "first result",
        "kernel",
        "fault p50",
        "fault p99",
        "verified"
    );
    for policy in [Policy::WholeRange, Policy::Partial] {
        let t = std::time::Instant::now();
        let r = first_touch_stream(&profile, policy, size, size / 2).expect("experiment runs");
        let ms = |ns: u64| format!("{:.3} ms", ns as f64 / 1e6);
        println!(
            "{:<12} {:>10} {:>14} {:>8} {:>16} {:>14} {:>12} {:>12} {:>8}   ({:.1} s wall)",
            r.policy,
            format!("{} pg", r.first_migration_pages),
            format!("{} MiB", r.migrated_bytes >> 20),
            r.faults,
            ms(r.first_result_ns),
            ms(r.kernel_ns),
            ms(r.fault_p50_ns),
            ms(r.fault_p99_ns),
            r.verified,
            t.elapsed().as_secs_f64()
        );
        println!(
            "{:<12} {} migrations, {} GPU unmaps, handler busy {}",
            "",
            r.migrations,
            r.unmaps,
            ms(r.handler_busy_ns)
        );
    }
}

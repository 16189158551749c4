//! The acceptance experiment for partial migration: a stream over a 1 GiB
//! range on one MI210-class GPU, XNACK on, under `whole-range` and
//! `partial`. (`cargo run --release -p svm-workloads --example acceptance`
//! prints the same comparison.)

use svm_core::policy::Policy;
use svm_sim::timing::Profile;
use svm_workloads::experiments::first_touch_stream;

const GIB: u64 = 1 << 30;

#[test]
fn partial_migration_moves_only_touched_windows_and_answers_sooner() {
    let p = Profile::built_in("mi210").unwrap();
    // Touch half the range so that "the touched windows" and "the range"
    // differ.
    let whole = first_touch_stream(&p, Policy::WholeRange, GIB, GIB / 2).unwrap();
    let part = first_touch_stream(&p, Policy::Partial, GIB, GIB / 2).unwrap();
    eprintln!("{whole:#?}\n{part:#?}");
    assert!(whole.verified && part.verified);
    // whole-range: the first fault moves the whole range.
    assert_eq!(whole.first_migration_pages, GIB / 4096);
    assert_eq!(whole.migrated_bytes, GIB);
    // partial: a 2 MiB window per fault, and only the touched windows.
    assert_eq!(part.first_migration_pages, 512);
    assert_eq!(part.migrated_bytes, part.windows_touched * (2 << 20));
    assert_eq!(part.migrated_bytes, GIB / 2);
    // The first result comes sooner. (The whole kernel need not end
    // sooner: each window pays the fault's fixed costs again.)
    assert!(
        part.first_result_ns < whole.first_result_ns,
        "{part:?} {whole:?}"
    );
    assert!(part.faults > whole.faults);
    assert!(part.fault_p50_ns > 0 && part.fault_p99_ns >= part.fault_p50_ns);
}

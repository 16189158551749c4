//! What phantom mode keeps per page, counted by divan's allocation
//! profiler: a first touch of 256 MiB (65 536 pages) on one MI300X-class
//! GPU. The machine's state stays alive as the benched value, so the
//! bytes allocated minus the bytes freed in one run are what the run
//! keeps; divide by 65 536 for bytes per page (each page is mapped on the
//! one GPU). Baseline in the same run: the same machine before the touch.
//!
//! Run: `cargo bench -p svm-workloads --bench phantom`.

use divan::Bencher;
use svm_sim::timing::Profile;
use svm_workloads::experiments::phantom_first_touch_on;

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

const FOOTPRINT: u64 = 256 << 20;

fn machine() -> svm_sim::machine::Machine {
    svm_workloads::machine(&Profile::built_in("mi300x").unwrap(), 1, None).unwrap()
}

#[divan::bench(sample_count = 10)]
fn first_touch_256mib(b: Bencher) {
    b.with_inputs(machine)
        .bench_local_values(|m| phantom_first_touch_on(m, FOOTPRINT, 1).unwrap());
}

/// The machine alone: what it allocates before any page is touched.
#[divan::bench(sample_count = 10)]
fn empty_machine(b: Bencher) {
    b.bench_local(machine);
}

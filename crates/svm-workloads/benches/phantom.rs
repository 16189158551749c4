//! What phantom mode keeps per page, counted by divan's allocation
//! profiler: a first touch of 256 MiB (65 536 pages) on one MI300X-class
//! GPU. The machine's state stays alive as the benched value, so the
//! bytes allocated minus the bytes freed in one run are what the run
//! keeps; divide by 65 536 for bytes per page (each page is mapped on the
//! one GPU). Baseline in the same run: the same machine before the touch.
//!
//! Count a run's kept bytes as `alloc + grow - dealloc` (divan reports a
//! `realloc` as growth). The marginal cost of a page is the difference
//! between the 256 MiB and 64 MiB runs divided by 49 152.
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

/// A quarter of the footprint: the difference from `first_touch_256mib`,
/// over the 49 152 pages between them, is the cost of one more page with
/// every fixed cost (the machine, the range, the kernel) taken out.
#[divan::bench(sample_count = 10)]
fn first_touch_64mib(b: Bencher) {
    b.with_inputs(machine)
        .bench_local_values(|m| phantom_first_touch_on(m, FOOTPRINT / 4, 1).unwrap());
}

/// The machine alone: what it allocates before any page is touched.
#[divan::bench(sample_count = 10)]
fn empty_machine(b: Bencher) {
    b.bench_local(machine);
}

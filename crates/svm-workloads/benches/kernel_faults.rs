//! Retry faults served through a GPU's fault ring, next to a baseline
//! measured in the same run.
//!
//! - `faults_4k_kernel`: one wave per page of a 4 MiB buffer registered as
//!   1024 one-page ranges: 1024 retry faults served through the ring,
//!   untimed. (Within one range, kfd drops faults for 2 ms after each
//!   validation, so a single range cannot show the handler's rate.)
//! - `tlb_hit_after_faults_kernel`: `tlb_hit_kernel` of
//!   `benches/kernel.rs` on a heap that the fault kernel has just used and
//!   freed (three runs, made and dropped in each sample's setup, besides
//!   `faults_4k_kernel` before it in this process): the waves' state then
//!   lands wherever the allocator has room, and the step is slower for it
//!   (see `docs/performance.md`).
//! - `host_reads`: the baseline of `benches/kernel.rs`.
//!
//! Run: `cargo bench -p svm-workloads --bench kernel_faults`.

use divan::Bencher;

#[path = "support/kernels.rs"]
mod support;

fn main() {
    divan::main();
}

#[divan::bench]
fn faults_4k_kernel(b: Bencher) {
    b.with_inputs(support::fault_machine)
        .bench_local_values(|(mut m, pid, a)| {
            support::run_faults(&mut m, pid, a);
            m
        });
}

#[divan::bench]
fn tlb_hit_after_faults_kernel(b: Bencher) {
    support::tlb_hits(b, true, support::LOADS, true);
}

#[divan::bench]
fn host_reads(b: Bencher) {
    support::host_reads(b);
}

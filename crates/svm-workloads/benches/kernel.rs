//! Kernel execution speed, next to a baseline measured in the same run.
//!
//! - `tlb_hit_kernel`: 832 waves (104 CUs × 8) each load 256 bytes
//!   64 times from a 256 KiB working set already mapped in VRAM, so almost
//!   every lookup hits the CU TLB: 53 248 simulated memory instructions.
//!   The set holds data (the CPU wrote it before the prefetch), and each
//!   wave checks the first word of every load, so every load hands real
//!   bytes to its wave. Divide the count by the time for simulated
//!   accesses per second.
//! - `tlb_hit_long_kernel`: four times the loads per wave; with
//!   `tlb_hit_kernel`, the difference is the cost of 159 744 accesses
//!   without the kernel's fixed costs.
//! - `tlb_hit_zero_kernel`: the same over a set never written, whose
//!   pages read as zero: what a kernel reading fresh memory costs.
//! - `write_back_kernel`: the same grid, each wave loading its 256 bytes and
//!   storing them back changed, 32 times (64 instructions), keeping each
//!   load's bytes while it stores: the kernel switches its loads from
//!   lending pages to copying bytes after its first store. (Named to run
//!   last: divan runs a file's benchmarks in name order, and this one's
//!   stores leave the heap changed for those after it.)
//! - `compute_only_kernel`: the same grid with compute instructions only,
//!   which isolates the executor's cost per instruction (scheduling,
//!   polling the wave) from the memory path's.
//! - `host_reads`: the baseline, the same 53 248 reads of 256 bytes from a
//!   host buffer, each copied into a fresh vector: a measure of this
//!   machine's speed at the moment, to compare the others against.
//!
//! Run: `cargo bench -p svm-workloads --bench kernel`. The fault kernel,
//! and this file's TLB-hit kernel after it, are in
//! `benches/kernel_faults.rs`, so that the heap a fault-heavy run leaves
//! does not weigh on these (divan runs a file's benchmarks in one process,
//! in name order; see `docs/performance.md`).

use divan::Bencher;
use svm_workloads::kernel;

#[path = "support/kernels.rs"]
mod support;
use support::{LOADS, WAVES, grid, machine, tlb_hits};

fn main() {
    divan::main();
}

#[divan::bench]
fn tlb_hit_kernel(b: Bencher) {
    tlb_hits(b, true, LOADS, false);
}

#[divan::bench]
fn tlb_hit_long_kernel(b: Bencher) {
    tlb_hits(b, true, 4 * LOADS, false);
}

#[divan::bench]
fn tlb_hit_zero_kernel(b: Bencher) {
    tlb_hits(b, false, LOADS, false);
}

#[divan::bench]
fn write_back_kernel(b: Bencher) {
    b.with_inputs(|| {
        let (mut m, pid) = machine(grid());
        let a = support::resident(&mut m, pid, support::SET, support::SET, true, true);
        (m, pid, a)
    })
    .bench_local_values(|(mut m, pid, a)| {
        support::run_write_back(&mut m, pid, a, LOADS / 2);
        m
    });
}

#[divan::bench]
fn host_reads(b: Bencher) {
    support::host_reads(b);
}

/// The executor alone: the same grid, each wave issuing 64 compute
/// instructions instead of loads (no TLB, no bytes). What is left of
/// `tlb_hit_kernel` beyond this is the memory path.
#[divan::bench]
fn compute_only_kernel(b: Bencher) {
    b.with_inputs(|| machine(grid()))
        .bench_local_values(|(mut m, pid)| {
            let f = kernel(move |_w, ctx| async move {
                for _ in 0..LOADS {
                    divan::black_box(ctx.compute(3).await);
                }
            });
            support::run_kernel(&mut m, pid, WAVES, f);
            m
        });
}

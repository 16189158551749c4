//! What the kernel benchmarks share: the kernels themselves are the
//! library's (`svm_workloads::micro`, which the suite benchmark also
//! uses); here are the divan harnesses around them and the host baseline.

// Each benchmark file uses a part of it.
#![allow(dead_code)]

use divan::Bencher;
pub use svm_workloads::micro::*;

/// Benchmarks the TLB-hit kernel (see [`run_tlb_hits`]), on a fresh
/// machine each sample; `after_faults` first runs the fault kernel three
/// times on machines of its own, dropped before the sample's machine is
/// made, so that the waves' state lands in the heap they leave.
pub fn tlb_hits(b: Bencher, data: bool, loads: u64, after_faults: bool) {
    b.with_inputs(|| {
        if after_faults {
            for _ in 0..3 {
                let (mut m, pid, a) = fault_machine();
                run_faults(&mut m, pid, a);
            }
        }
        let (mut m, pid) = machine(grid());
        let a = resident(&mut m, pid, SET, SET, true, data);
        (m, pid, a)
    })
    .bench_local_values(|(mut m, pid, a)| {
        run_tlb_hits(&mut m, pid, a, data, loads);
        m
    });
}

/// The baseline: the TLB-hit kernel's 53 248 reads of 256 bytes done by
/// the host, each copied into a fresh vector: this machine's speed at the
/// moment, to compare the others against.
pub fn host_reads(b: Bencher) {
    let buf = vec![7u8; usize::try_from(SET).unwrap()];
    b.bench_local(|| {
        let mut sum = 0u64;
        for w in 0..u64::from(WAVES) {
            let off = usize::try_from((w * 256) % SET).unwrap();
            for _ in 0..LOADS {
                let v: Vec<u8> = buf[off..off + 256].to_vec();
                sum += u64::from(divan::black_box(v)[0]);
            }
        }
        sum
    });
}

//! Kernel execution speed, next to baselines measured in the same run.
//!
//! - `tlb_hit_kernel`: 832 waves (104 CUs × 8) each load 256 bytes
//!   64 times from a 256 KiB working set already mapped in VRAM, so almost
//!   every lookup hits the CU TLB: 53 248 simulated memory instructions.
//!   The set holds data (the CPU wrote it before the prefetch), and each
//!   wave checks the first word of every load, so every load hands real
//!   bytes to its wave. Divide the count by the time for simulated
//!   accesses per second.
//! - `tlb_hit_zero_kernel`: the same over a set never written, whose
//!   pages read as zero: what a kernel reading fresh memory costs.
//! - `compute_only_kernel`: the same grid with compute instructions only,
//!   which isolates the executor's cost per instruction (scheduling,
//!   polling the wave) from the memory path's.
//! - `host_reads`: the baseline, the same 53 248 reads of 256 bytes from a
//!   host buffer, each copied into a fresh vector: a measure of this
//!   machine's speed at the moment, to compare the others against.
//! - `faults_4k_kernel`: one wave per page of a 4 MiB buffer registered as
//!   1024 one-page ranges: 1024 retry faults served through the ring,
//!   untimed. (Within one range, kfd drops faults for 2 ms after each
//!   validation, so a single range cannot show the handler's rate.)
//!
//! Run: `cargo bench -p svm-workloads --bench kernel`.

use divan::Bencher;
use svm_core::topology::Topology;
use svm_core::uapi::{SvmAttribute, attr_type};
use svm_sim::machine::{ComputeShape, Machine, MemLimit, Pid};
use svm_workloads::{Run, kernel};

fn main() {
    divan::main();
}

const WAVES: u32 = 832;
const LOADS: u64 = 64;
const SET: u64 = 256 << 10;

fn machine(shape: ComputeShape) -> (Machine, Pid) {
    let p = svm_sim::timing::Profile::built_in("mi210").unwrap();
    let mut gpus = p.gpus();
    gpus[0].vram_bytes = 1 << 30;
    let mut m = Machine::new(
        Topology::new(gpus).unwrap(),
        true,
        MemLimit::for_sysmem(8 << 30),
    );
    m.apply_profile(&p);
    m.set_compute_shape(shape);
    let pid = m.spawn("bench");
    (m, pid)
}

/// A buffer of `size` bytes registered for the GPU in ranges of `piece`
/// bytes, prefetched there or not, written by the CPU first or not.
fn resident(m: &mut Machine, pid: Pid, size: u64, piece: u64, prefetch: bool, data: bool) -> u64 {
    let mut r = Run::new(m, pid);
    let gpu = r.gpu_ids[0];
    let a = r.alloc(size, &[]).unwrap();
    if data {
        let words: Vec<u32> = (0..size / 4).map(|i| u32::try_from(i).unwrap()).collect();
        r.write_u32s(a, &words).unwrap();
    }
    for at in (a..a + size).step_by(usize::try_from(piece).unwrap()) {
        let mut attrs = vec![
            SvmAttribute::new(attr_type::GRANULARITY, 0),
            SvmAttribute::new(attr_type::ACCESS, gpu),
        ];
        if prefetch {
            attrs.push(SvmAttribute::new(attr_type::PREFETCH_LOC, gpu));
        }
        // Different granularities make neighbours separate ranges.
        attrs[0] = SvmAttribute::new(
            attr_type::GRANULARITY,
            u32::try_from((at / piece) % 2).unwrap(),
        );
        r.set_attr(at, piece, attrs).unwrap();
    }
    a
}

#[divan::bench]
fn tlb_hit_kernel(b: Bencher) {
    tlb_hits(b, true, LOADS);
}

/// Four times the loads per wave: with `tlb_hit_kernel`, the difference
/// is the cost of 159 744 accesses without the kernel's fixed costs.
#[divan::bench]
fn tlb_hit_long_kernel(b: Bencher) {
    tlb_hits(b, true, 4 * LOADS);
}

#[divan::bench]
fn tlb_hit_zero_kernel(b: Bencher) {
    tlb_hits(b, false, LOADS);
}

fn tlb_hits(b: Bencher, data: bool, loads: u64) {
    b.with_inputs(|| {
        let (mut m, pid) = machine(ComputeShape {
            compute_units: 104,
            waves_per_cu: 8,
            tlb_entries: 64,
        });
        let a = resident(&mut m, pid, SET, SET, true, data);
        (m, pid, a)
    })
    .bench_local_values(|(mut m, pid, a)| {
        let k = m
            .launch_kernel(
                pid,
                0x1002,
                WAVES,
                kernel(move |w, ctx| async move {
                    // Each wave reads its own 256-byte slot of the set,
                    // whose first word the CPU wrote as its index.
                    let off = (u64::from(w) * 256) % SET;
                    let want = if data {
                        u32::try_from(off / 4).unwrap()
                    } else {
                        0
                    };
                    for _ in 0..loads {
                        let v = ctx.load(a + off, 256).await;
                        let first = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                        assert_eq!(divan::black_box(first), want);
                    }
                }),
            )
            .unwrap();
        let st = m.wait_kernel(k).unwrap();
        assert_eq!(st.accesses, u64::from(WAVES) * loads);
        m
    });
}

#[divan::bench]
fn host_reads(b: Bencher) {
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

#[divan::bench]
fn faults_4k_kernel(b: Bencher) {
    const SIZE: u64 = 4 << 20;
    b.with_inputs(|| {
        let mut m = Machine::new(
            Topology::new(svm_sim::timing::Profile::built_in("mi210").unwrap().gpus()).unwrap(),
            true,
            MemLimit::for_sysmem(8 << 30),
        );
        let pid = m.spawn("bench");
        // One range per page: the 2 ms duplicate window is per range, so
        // pages of one range would mostly be dropped and retried.
        let a = resident(&mut m, pid, SIZE, 4096, false, false);
        (m, pid, a)
    })
    .bench_local_values(|(mut m, pid, a)| {
        let k = m
            .launch_kernel(
                pid,
                0x1002,
                u32::try_from(SIZE / 4096).unwrap(),
                kernel(move |w, ctx| async move {
                    divan::black_box(ctx.load(a + u64::from(w) * 4096, 4).await);
                }),
            )
            .unwrap();
        let st = m.wait_kernel(k).unwrap();
        assert!(st.faults >= SIZE / 4096);
        m
    });
}

/// The executor alone: the same grid, each wave issuing 64 compute
/// instructions instead of loads (no TLB, no bytes). What is left of
/// `tlb_hit_kernel` beyond this is the memory path.
#[divan::bench]
fn compute_only_kernel(b: Bencher) {
    b.with_inputs(|| {
        let (m, pid) = machine(ComputeShape {
            compute_units: 104,
            waves_per_cu: 8,
            tlb_entries: 64,
        });
        (m, pid)
    })
    .bench_local_values(|(mut m, pid)| {
        let k = m
            .launch_kernel(
                pid,
                0x1002,
                WAVES,
                kernel(move |_w, ctx| async move {
                    for _ in 0..LOADS {
                        divan::black_box(ctx.compute(3).await);
                    }
                }),
            )
            .unwrap();
        m.wait_kernel(k).unwrap();
        m
    });
}

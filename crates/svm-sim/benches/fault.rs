//! GPU fault service and migration throughput, each next to a host memcpy of
//! the same bytes measured in the same run.
//!
//! - `faults_4k`: a GPU touches every page of a 4 MiB range with 4 KiB
//!   granularity: 1024 faults, each migrating and mapping one page.
//! - `faults_2m`: the same range with 2 MiB granularity, touched once per
//!   window: 2 faults, each moving 512 pages.
//! - `prefetch_round_trip`: set_attr prefetches the range to VRAM and back:
//!   8 MiB of copies.
//! - `memcpy_4m` / `memcpy_8m`: the baselines.
//!
//! Divide a figure by its baseline's: the machine is shared, only ratios
//! mean anything. Run: `cargo bench -p svm-sim --bench fault`.

use divan::Bencher;
use svm_core::addr::CpuVa;
use svm_core::uapi::{SVM_OP_SET_ATTR, SvmArgs, SvmAttribute, attr_type};
use svm_sim::machine::{Machine, Pid};

#[path = "support/machine.rs"]
mod support;

use support::{GPU, one_gpu};

fn main() {
    divan::main();
}

const PAGE: u64 = 4096;
const BASE: u64 = 0x4000_0000;
const SIZE: u64 = 4 << 20;
/// [`SIZE`] as a buffer length.
const LEN: usize = 4 << 20;

fn set(m: &mut Machine, pid: Pid, attrs: &[(u32, u32)]) {
    let attrs = attrs
        .iter()
        .map(|&(t, v)| SvmAttribute::new(t, v))
        .collect();
    let mut a = SvmArgs {
        start_addr: BASE,
        size: SIZE,
        op: SVM_OP_SET_ATTR,
        attrs,
    };
    m.svm_ioctl(pid, &mut a).unwrap();
}

/// A machine with one 1 GiB GPU and a 4 MiB range filled with bytes.
fn machine(granularity: u32) -> (Machine, Pid) {
    let (mut m, pid) = one_gpu(1 << 30, true, BASE, SIZE);
    m.cpu_access(pid, CpuVa::new(BASE), SIZE, Some(&vec![0x5a; LEN]))
        .unwrap();
    set(
        &mut m,
        pid,
        &[
            (attr_type::ACCESS, GPU),
            (attr_type::GRANULARITY, granularity),
        ],
    );
    (m, pid)
}

/// Touches one word every `stride` bytes, letting 3 ms pass between touches
/// so no fault is dropped as a duplicate.
fn touch(m: &mut Machine, pid: Pid, stride: u64) {
    for off in (0..SIZE).step_by(usize::try_from(stride).unwrap()) {
        m.advance(3_000_000);
        m.gpu_access(pid, GPU, CpuVa::new(BASE + off), 4, None)
            .unwrap();
    }
}

#[divan::bench]
fn faults_4k(b: Bencher) {
    b.with_inputs(|| machine(0))
        .bench_local_values(|(mut m, pid)| {
            touch(&mut m, pid, PAGE);
            m
        });
}

#[divan::bench]
fn faults_2m(b: Bencher) {
    b.with_inputs(|| machine(9))
        .bench_local_values(|(mut m, pid)| {
            touch(&mut m, pid, 2 << 20);
            m
        });
}

#[divan::bench]
fn prefetch_round_trip(b: Bencher) {
    b.with_inputs(|| machine(9))
        .bench_local_values(|(mut m, pid)| {
            set(&mut m, pid, &[(attr_type::PREFETCH_LOC, GPU)]);
            set(&mut m, pid, &[(attr_type::PREFETCH_LOC, 0)]);
            m
        });
}

#[divan::bench]
fn memcpy_4m(b: Bencher) {
    let src = vec![0x5au8; LEN];
    let mut dst = vec![0u8; LEN];
    b.bench_local(|| {
        dst.copy_from_slice(divan::black_box(&src));
        divan::black_box(&dst);
    });
}

#[divan::bench]
fn memcpy_8m(b: Bencher) {
    let src = vec![0x5au8; 2 * LEN];
    let mut dst = vec![0u8; 2 * LEN];
    b.bench_local(|| {
        dst.copy_from_slice(divan::black_box(&src));
        divan::black_box(&dst);
    });
}

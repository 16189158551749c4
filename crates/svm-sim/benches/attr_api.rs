//! The attribute API against its baseline, the naive per-page reference model.
//!
//! Both sides run the same operations on a 64 MiB mapping: `n` one-page
//! SET_ATTR calls at a stride (which fragment the range list into about 2n
//! ranges), then GET_ATTR over the whole mapping. Compare each `engine_*`
//! figure with the `refmodel_*` figure of the same `n` from the same run; the
//! machine is shared, so only the ratio means anything.
//!
//! Run: `cargo bench -p svm-sim --bench attr_api`.

use divan::Bencher;
use svm_core::uapi::{SVM_OP_SET_ATTR, SvmArgs, SvmAttribute, attr_type};
use svm_sim::machine::{Machine, Pid};
use svm_sim::refmodel::{RefGpu, RefModel};

#[path = "support/machine.rs"]
mod support;

use support::{GPU, one_gpu};

fn main() {
    divan::main();
}

const PAGE: u64 = 4096;
const BASE: u64 = 0x4000_0000;
const PAGES: u64 = 16 << 10; // 64 MiB
const NS: [u64; 3] = [16, 256, 2048];

fn attrs(i: u64) -> Vec<SvmAttribute> {
    vec![
        SvmAttribute::new(attr_type::ACCESS, GPU),
        SvmAttribute::new(attr_type::GRANULARITY, u32::try_from(i % 10).unwrap()),
    ]
}

fn query() -> Vec<SvmAttribute> {
    vec![
        SvmAttribute::new(attr_type::PREFERRED_LOC, 0),
        SvmAttribute::new(attr_type::ACCESS, GPU),
        SvmAttribute::new(attr_type::SET_FLAGS, 0),
        SvmAttribute::new(attr_type::GRANULARITY, 0),
    ]
}

fn machine() -> (Machine, Pid) {
    one_gpu(16 << 30, false, BASE, PAGES * PAGE)
}

fn model() -> RefModel {
    let mut r = RefModel::new(
        vec![RefGpu {
            id: GPU,
            svm: true,
            xnack: true,
        }],
        false,
        60 << 30,
    );
    r.mmap(BASE / PAGE, PAGES, false);
    r
}

fn page_of(i: u64, n: u64) -> u64 {
    BASE + (i * (PAGES / n) + 1) * PAGE
}

/// One SET_ATTR through the engine's ioctl edge.
fn set(m: &mut Machine, pid: Pid, start_addr: u64, size: u64, attrs: Vec<SvmAttribute>) {
    let mut a = SvmArgs {
        start_addr,
        size,
        op: SVM_OP_SET_ATTR,
        attrs,
    };
    m.svm_ioctl(pid, &mut a).unwrap();
}

#[divan::bench(args = NS)]
fn engine_set_attr(b: Bencher, n: u64) {
    b.with_inputs(machine).bench_local_values(|(mut m, pid)| {
        for i in 0..n {
            set(&mut m, pid, page_of(i, n), PAGE, attrs(i));
        }
        m
    });
}

#[divan::bench(args = NS)]
fn refmodel_set_attr(b: Bencher, n: u64) {
    b.with_inputs(model).bench_local_values(|mut r| {
        for i in 0..n {
            r.set_attr(page_of(i, n), PAGE, &attrs(i)).unwrap();
        }
        r
    });
}

#[divan::bench(args = NS)]
fn engine_get_attr_whole(b: Bencher, n: u64) {
    let (mut m, pid) = machine();
    set(&mut m, pid, BASE, PAGES * PAGE, attrs(0));
    for i in 0..n {
        set(&mut m, pid, page_of(i, n), PAGE, attrs(i));
    }
    b.bench_local(|| {
        let mut a = query();
        m.svm_get_attr(pid, BASE, PAGES * PAGE, &mut a).unwrap();
        a
    });
}

#[divan::bench(args = NS)]
fn refmodel_get_attr_whole(b: Bencher, n: u64) {
    let mut r = model();
    r.set_attr(BASE, PAGES * PAGE, &attrs(0)).unwrap();
    for i in 0..n {
        r.set_attr(page_of(i, n), PAGE, &attrs(i)).unwrap();
    }
    b.bench_local(|| r.get_attr(BASE, PAGES * PAGE, &query()).unwrap());
}

//! Scenario work is linear in the ops: `n` ops of one-page `mmap` and
//! `set_attr` pairs (each pair a new VMA and a new range, so the state grows
//! with every op), parsed and run.
//!
//! Compare the time per op (divan's item throughput) of the largest `n`
//! with that of the smallest from the same run: linear work keeps the ratio
//! near 1. Before the gap search walked covered runs and checks were put
//! on a linear schedule, 10k ops took 6.6 s and 40k ops 44 s.
//!
//! Run: `cargo bench -p svmsim --bench scenario`.

use divan::{Bencher, counter::ItemsCount};
use svm_sim::check::Schedule;
use svmsim::scenario;

fn main() {
    divan::main();
}

/// A scenario of `ops` ops: `ops / 2` one-page maps, each given a
/// granularity, the pairs placed one below the other by mmap.
fn text(ops: usize) -> String {
    let mut s = String::from("[system]\n[[system.gpu]]\n");
    for i in 0..ops / 2 {
        s.push_str(&format!(
            "[[op]]\ndo = \"mmap\"\nname = \"b{i}\"\nsize = 4096\n\
             [[op]]\ndo = \"set_attr\"\naddr = \"b{i}\"\nsize = 4096\nattrs = [{{ granularity = 0 }}]\n"
        ));
    }
    s
}

#[divan::bench(args = [1_000, 10_000, 100_000], sample_count = 3, sample_size = 1)]
fn parse_and_run(b: Bencher, ops: usize) {
    let t = text(ops);
    b.counter(ItemsCount::new(ops)).bench(|| {
        let sc = scenario::parse("bench.toml", &t).expect("the bench scenario parses");
        let r = scenario::run(&sc, Schedule::linear()).expect("the bench scenario runs");
        assert!(r.passed);
        r.ops.len()
    });
}

#[divan::bench(args = [1_000, 10_000, 100_000], sample_count = 3, sample_size = 1)]
fn parse_only(b: Bencher, ops: usize) {
    let t = text(ops);
    b.counter(ItemsCount::new(ops)).bench(|| {
        scenario::parse("bench.toml", &t)
            .expect("the bench scenario parses")
            .ops
            .len()
    });
}

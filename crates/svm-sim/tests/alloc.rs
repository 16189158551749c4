//! The fault → migrate → map path allocates nothing per page.
//!
//! Its own test binary: the allocator that counts is global, so nothing
//! else may run beside the one test.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY};

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;
use support::*;

#[global_allocator]
static COUNTED: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations of one GPU retry fault that migrates and maps `pages`
/// pages of written system memory (a granularity window of that size),
/// after a fault of the same size on another range warmed every
/// structure up.
fn fault_allocations(order: u32) -> (usize, u64) {
    let window = PAGE << order;
    let mut k = Kfd::new(true);
    let one = |k: &mut Kfd| {
        let buf = k.mmap(window);
        k.set(buf, window, &[(ACCESS, GPU0), (GRANULARITY, order)])
            .unwrap();
        k.cpu_write(buf, &vec![0xab; usize::try_from(window).unwrap()]);
        let region = Region::new(COUNTED);
        k.m.gpu_access(k.pid, GPU0, svm_core::addr::CpuVa::new(buf), 4, None)
            .unwrap();
        let n = region.change().allocations;
        assert_eq!(k.vram_pages_in(buf, window), window / PAGE);
        n
    };
    one(&mut k);
    one(&mut k);
    (one(&mut k), window / PAGE)
}

/// Windows from 16 to 2048 pages: the allocations of a fault are a
/// handful whatever its size (a few lists that grow by doubling, the
/// page table's index for new addresses), not one a page nor one a group
/// of pages. (Measured: 16 to 21.)
#[test]
fn a_fault_allocates_nothing_per_page_it_migrates() {
    let counts: Vec<(u64, usize)> = [4, 6, 8, 9, 10, 11]
        .into_iter()
        .map(|order| {
            let (n, pages) = fault_allocations(order);
            eprintln!("{pages} pages: {n} allocations");
            (pages, n)
        })
        .collect();
    let (_, least) = counts[0];
    for &(pages, n) in &counts {
        assert!(
            n <= least + 8 && n < 32,
            "a fault of {pages} pages made {n} allocations, one of 16 pages {least}: {counts:?}"
        );
    }
}

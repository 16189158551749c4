//! Mapping faults pages in, as `hmm_range_fault` does for kfd.
//!
//! kfd's `svm_range_validate_and_map` asks hmm for every page of what it
//! maps with HMM_PFN_REQ_FAULT, and with REQ_WRITE when the VMA is
//! writable (the access that led there does not matter). A never-touched
//! page of a writable mapping therefore becomes a zeroed system page of its
//! own, which a later migration copies; one of a read-only mapping maps the
//! shared zero page, which `migrate_vma_setup` collects as a hole, so
//! moving it to VRAM is a clear, not a copy.

use svm_core::gpu::GpuIndex;
use svm_core::uapi::attr_type::{ACCESS, PREFERRED_LOC, PREFETCH_LOC};
use svm_sim::mm::{Backing, Mark, Prot};

use crate::support::*;

const PAGES: u64 = 16;
const BYTES: usize = 16 * 4096;

/// (faulted in, copied to VRAM, zero-filled, page_in of GPU 0).
fn moved(k: &Kfd) -> (u64, u64, u64, u64) {
    let c = k.m.counters();
    let st = k.m.process(k.pid).svm.stats()[GpuIndex::new(0).unwrap()];
    (
        c.pages_faulted_in,
        c.pages_to_vram,
        c.pages_zero_filled,
        st.page_in,
    )
}

/// XNACK off: registering access maps the range at once, so its
/// never-touched pages are faulted in and a later prefetch copies them.
#[test]
fn xnack_off_registration_faults_pages_in_and_migration_copies_them() {
    let mut k = Kfd::new(false);
    let buf = k.mmap(PAGES * PAGE);
    k.set(buf, PAGES * PAGE, &[(ACCESS, GPU0)]).unwrap();
    assert_eq!(moved(&k), (PAGES, 0, 0, 0));
    k.set(buf, PAGES * PAGE, &[(PREFETCH_LOC, GPU0)]).unwrap();
    assert_eq!(moved(&k), (PAGES, PAGES, 0, PAGES));
    assert_eq!(k.cpu_read(buf, PAGES * PAGE), vec![0; BYTES]);
    k.check();
}

/// The prefetch that comes before the mapping in one SET_ATTR migrates
/// holes (cleared VRAM pages, no copy); mapping then finds them in VRAM
/// and faults nothing in.
#[test]
fn prefetch_before_mapping_clears_vram_for_holes() {
    let mut k = Kfd::new(false);
    let buf = k.mmap(PAGES * PAGE);
    k.set(buf, PAGES * PAGE, &[(PREFETCH_LOC, GPU0), (ACCESS, GPU0)])
        .unwrap();
    assert_eq!(moved(&k), (0, 0, PAGES, PAGES));
    k.check();
}

/// A read-only mapping is faulted in for reading: the shared zero page,
/// still a hole to migration.
#[test]
fn read_only_mappings_keep_their_holes() {
    let mut k = Kfd::new(false);
    let buf =
        k.m.mmap(
            k.pid,
            None,
            PAGES * PAGE,
            Prot::READ,
            Backing::Anon,
            Mark::None,
        )
        .unwrap()
        .start_va()
        .raw();
    k.set(buf, PAGES * PAGE, &[(ACCESS, GPU0)]).unwrap();
    assert_eq!(moved(&k).0, 0);
    k.set(buf, PAGES * PAGE, &[(PREFETCH_LOC, GPU0)]).unwrap();
    assert_eq!(moved(&k), (0, 0, PAGES, PAGES));
    k.check();
}

/// XNACK on, a GPU read fault served in system memory (preferred location
/// system memory) write-faults its window in, because the VMA is writable.
#[test]
fn a_gpu_read_fault_served_in_system_memory_faults_the_window_in() {
    let mut k = Kfd::new(true);
    assert!(k.xnack());
    let buf = k.mmap(PAGES * PAGE);
    k.set(buf, PAGES * PAGE, &[(PREFERRED_LOC, 0), (ACCESS, GPU0)])
        .unwrap();
    assert_eq!(moved(&k).0, 0, "XNACK on maps nothing at registration");
    assert_eq!(k.gpu_read(GPU0, buf, 4), [0; 4]);
    // The range is smaller than the granularity window: all of it.
    assert_eq!(moved(&k), (PAGES, 0, 0, 0));
    k.check();
}

/// XNACK on, a GPU fault that migrates: holes become cleared VRAM pages,
/// and the mapping finds them in VRAM, so nothing is faulted in.
#[test]
fn a_gpu_fault_that_migrates_clears_vram_for_holes() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(PAGES * PAGE);
    k.set(buf, PAGES * PAGE, &[(ACCESS, GPU0)]).unwrap();
    k.gpu_write(GPU0, buf, &[7; 4]);
    assert_eq!(moved(&k), (0, 0, PAGES, PAGES));
    // Touched by the CPU first, the pages hold bytes and are copied.
    let buf2 = k.mmap(PAGES * PAGE);
    k.cpu_write(buf2, &vec![1; BYTES]);
    k.set(buf2, PAGES * PAGE, &[(ACCESS, GPU0)]).unwrap();
    k.gpu_read(GPU0, buf2, 4);
    assert_eq!(moved(&k), (0, PAGES, PAGES, 2 * PAGES));
    k.check();
}

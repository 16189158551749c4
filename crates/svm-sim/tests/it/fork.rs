//! fork() with copy-on-write: the parent's GPU mappings see the fork's
//! notifier, writes break the sharing page by page, and each side keeps
//! its own bytes (the checker compares both with their shadows).

use svm_core::addr::CpuVa;
use svm_core::uapi::attr_type::{ACCESS, PREFERRED_LOC};

use crate::support::*;

/// Sharing is counted per page: the fork shares every populated page; a
/// child's write leaves the page the parent's alone (no notifier), the
/// parent's own write copies it (a notifier), and the child's exit ends
/// the rest.
#[test]
fn writes_break_sharing_page_by_page() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(4 * PAGE);
    k.cpu_write(buf, &words((4 * PAGE / 4) as usize, |i| i));
    let child = k.m.fork(k.pid, "child");
    assert_eq!(k.m.process(k.pid).mm.cow_pages(), 4);
    k.m.cpu_access(child, CpuVa::new(buf), 4, Some(&[9; 4]))
        .unwrap();
    assert_eq!(k.m.process(k.pid).mm.cow_pages(), 3);
    k.cpu_write(buf + PAGE, &[7; 4]);
    assert_eq!(k.m.process(k.pid).mm.cow_pages(), 2);
    // Each side reads its own bytes.
    assert_eq!(k.cpu_read(buf, 4), 0u32.to_le_bytes());
    assert_eq!(
        k.m.cpu_access(child, CpuVa::new(buf + PAGE), 4, None)
            .unwrap(),
        1024u32.to_le_bytes() // word PAGE / 4
    );
    k.m.exit(child);
    assert_eq!(k.m.process(k.pid).mm.cow_pages(), 0);
    k.check();
}

/// XNACK on: the fork unmaps the parent's GPU, which faults again; the
/// revalidation faults the pages in for writing, breaking their sharing,
/// and the parent GPU's writes never reach the child.
#[test]
fn xnack_on_fork_unmaps_and_the_gpu_refaults() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(2 * MIB);
    k.cpu_write(buf, &words((2 * MIB / 4) as usize, |i| i));
    k.set(buf, 2 * MIB, &[(PREFERRED_LOC, 0), (ACCESS, GPU0)])
        .unwrap();
    k.gpu_read(GPU0, buf, 4);
    let before = k.stats().faults;
    let child = k.m.fork(k.pid, "child");
    assert_eq!(k.m.process(k.pid).mm.cow_pages(), 512);
    // Past the 2 ms in which a refault of the just-validated range is a
    // duplicate (retried until then, and counted each time).
    k.m.advance(3_000_000);
    k.gpu_write(GPU0, buf, &[0xee; 4096]);
    assert_eq!(k.stats().faults, before + 1, "the GPU faulted again");
    assert_eq!(
        k.m.process(k.pid).mm.cow_pages(),
        0,
        "revalidation broke sharing"
    );
    assert_eq!(
        k.m.cpu_access(child, CpuVa::new(buf), 4, None).unwrap(),
        0u32.to_le_bytes()
    );
    k.check();
}

/// XNACK off: the fork stops the parent's queues; the restore work maps
/// the range again (no GPU fault) and breaks the sharing as it does.
#[test]
fn xnack_off_fork_evicts_and_restores_the_queues() {
    let mut k = Kfd::new(false);
    let buf = k.mmap(2 * MIB);
    k.cpu_write(buf, &[5; 4096]);
    k.set(buf, 2 * MIB, &[(PREFERRED_LOC, 0), (ACCESS, GPU0)])
        .unwrap();
    let c0 = k.m.counters();
    let _child = k.m.fork(k.pid, "child");
    let c1 = k.m.counters();
    assert!(c1.queue_evictions > c0.queue_evictions, "{c1:?}");
    k.m.advance(2_000_000);
    let c2 = k.m.counters();
    assert!(c2.queue_restores > c1.queue_restores, "{c2:?}");
    assert_eq!(k.m.process(k.pid).mm.cow_pages(), 0);
    assert_eq!(k.gpu_read(GPU0, buf, 4), [5; 4]);
    assert_eq!(k.stats().faults, 0);
    k.check();
}

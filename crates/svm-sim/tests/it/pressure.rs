//! Memory pressure from outside SVM (`evict_vram`) and the restore work's
//! reschedule rule, with XNACK off.

use svm_core::addr::CpuVa;
use svm_core::error::Errno;
use svm_core::events::Kind;
use svm_core::gpu::GpuIndex;
use svm_sim::machine::{AccessError, MAX_RETRIES_PER_ADVANCE};
use svm_sim::mm::Prot;

use crate::support::*;

const MS: u64 = 1_000_000;

/// QUEUE_RESTORE events: (restored, rescheduled).
fn restore_events(k: &Kfd) -> (usize, usize) {
    let q: Vec<bool> =
        k.m.events()
            .iter()
            .filter_map(|e| match e.event.kind {
                Kind::QueueRestore { rescheduled, .. } => Some(rescheduled),
                _ => None,
            })
            .collect();
    let rescheduled = q.iter().filter(|r| **r).count();
    (q.len() - rescheduled, rescheduled)
}

/// `svm_range_restore_work` cannot map a range whose VMA became PROT_NONE
/// (hmm_range_fault answers EFAULT): it reschedules itself every 1 ms with a
/// QUEUE_RESTORE `R` event per GPU and leaves the queues stopped, so a GPU
/// access reports the failure. Once the VMA is readable again, the next run
/// restores the range and resumes the queues.
#[test]
fn restore_work_reschedules_until_the_range_can_be_mapped() {
    let mut k = Kfd::new(false);
    let buf = k.mmap(2 * MIB);
    k.cpu_write(buf, &[5; 64]);
    k.register(buf, 2 * MIB, GPU0, GPU0, 0).unwrap();
    let t0 = k.m.now_ns();
    let none = Prot {
        read: false,
        write: false,
        exec: false,
    };
    k.m.mprotect(k.pid, CpuVa::new(buf), PAGE, none).unwrap();
    assert!(
        k.m.process(k.pid).svm.restore_pending(),
        "the notifier evicted"
    );
    k.m.advance(3 * MS + MS / 2);
    // Two GPUs, three failed runs at 1, 2 and 3 ms.
    assert_eq!(restore_events(&k), (0, 6));
    let r =
        k.m.events()
            .iter()
            .filter(|e| {
                matches!(
                    e.event.kind,
                    Kind::QueueRestore {
                        rescheduled: true,
                        ..
                    }
                )
            })
            .nth(2);
    assert_eq!(r.unwrap().event.ts_ns, t0 + 2 * MS);
    let g0 = GpuIndex::new(0).unwrap();
    assert_eq!(k.m.process(k.pid).svm.stats()[g0].restore_reschedules, 3);
    match k.m.gpu_access(k.pid, GPU0, CpuVa::new(buf + PAGE), 4, None) {
        Err(AccessError::VmFault { errno, why, .. }) => {
            assert_eq!(errno, Errno::Efault);
            assert!(why.contains("restore work failed"), "{why}");
        }
        other => panic!("the queues are stopped, yet the access gave {other:?}"),
    }
    // The access waited for the 4 ms retry, which failed again.
    assert_eq!(restore_events(&k), (0, 8));
    k.m.mprotect(k.pid, CpuVa::new(buf), PAGE, Prot::RW)
        .unwrap();
    assert_eq!(k.gpu_read(GPU0, buf, 4), [5; 4]);
    assert_eq!(restore_events(&k), (2, 8));
    assert_eq!(k.m.now_ns(), t0 + 5 * MS);
    assert!(!k.m.process(k.pid).svm.restore_pending());
    k.check();
}

/// A long wait does not spin forever on a restore that keeps failing: after
/// `MAX_RETRIES_PER_ADVANCE` retries the rest are skipped and the next is
/// left due 1 ms after the wait.
#[test]
fn a_long_wait_caps_the_retries_of_a_failing_restore() {
    let mut k = Kfd::with_gpus(vec![gpu("gpu0", GPU0, 16 * GIB, true)], false);
    let buf = k.mmap(2 * MIB);
    k.register(buf, 2 * MIB, GPU0, GPU0, 0).unwrap();
    let none = Prot {
        read: false,
        write: false,
        exec: false,
    };
    k.m.mprotect(k.pid, CpuVa::new(buf), 2 * MIB, none).unwrap();
    let t0 = k.m.now_ns();
    k.m.advance(3600 * 1000 * MS);
    let cap = usize::try_from(MAX_RETRIES_PER_ADVANCE).unwrap();
    assert_eq!(restore_events(&k), (0, cap));
    assert_eq!(k.m.now_ns(), t0 + 3600 * 1000 * MS);
    assert_eq!(
        k.m.process(k.pid).svm.restore_due_ns(),
        Some(k.m.now_ns() + MS)
    );
    k.check();
}

/// `evict_vram` evicts SVM buffers least recently used first across
/// processes, only as many as the requested free space needs; the ranges go
/// back to system memory whole and their data survives. Without a size it
/// empties the GPU; an unknown GPU is an error.
#[test]
fn forced_pressure_evicts_lru_first_across_processes() {
    let mut k = Kfd::with_gpus(vec![gpu("gpu0", GPU0, GIB, true)], false);
    let a = k.mmap(8 * MIB);
    k.cpu_write(a, &[0xa; 16]);
    k.register(a, 8 * MIB, GPU0, GPU0, 0).unwrap();
    k.m.advance(MS);
    let q = k.m.spawn("q");
    let mut kq = Kfd::attach(k.m, q);
    let b = kq.mmap(8 * MIB);
    kq.cpu_write(b, &[0xb; 16]);
    kq.register(b, 8 * MIB, GPU0, GPU0, 0).unwrap();
    let (m, p) = (kq.m, k.pid);
    let mut k = Kfd::attach(m, p);
    assert_eq!(k.vram_pages_in(a, 8 * MIB), 2048);
    let free = |k: &Kfd| k.m.gpus()[0].vram.buddy().free_pages();
    let need = (free(&k) + 1024) * PAGE;
    // 4 MiB more than is free: a's buffer, used longest ago, goes.
    assert_eq!(k.m.evict_vram(GPU0, Some(need)).unwrap(), 1);
    assert_eq!(k.vram_pages_in(a, 8 * MIB), 0, "a whole range goes");
    assert!(free(&k) * PAGE >= need);
    assert_eq!(
        k.m.process(q)
            .svm
            .ranges()
            .iter()
            .filter(|r| r.actual_loc.is_some())
            .count(),
        1
    );
    // Nothing more is needed: nothing more goes.
    assert_eq!(k.m.evict_vram(GPU0, Some(need)).unwrap(), 0);
    assert_eq!(k.m.evict_vram(GPU0, None).unwrap(), 1);
    assert_eq!(k.m.process(q).svm.bos().count(), 0);
    k.check();
    assert_eq!(k.gpu_read(GPU0, a, 16), [0xa; 16]);
    let mut kq = Kfd::attach(k.m, q);
    assert_eq!(kq.gpu_read(GPU0, b, 16), [0xb; 16]);
    assert!(matches!(
        kq.m.evict_vram(0x1234, None),
        Err(AccessError::NoGpu(0x1234))
    ));
    kq.check();
}

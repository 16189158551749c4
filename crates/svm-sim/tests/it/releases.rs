//! The `kernel` knob: each 2024–2026 change from the release it arrived in
//! (`svm_core::kernel`), and the older behaviour before it.

use svm_core::addr::CpuVa;
use svm_core::gpu::GpuIndex;
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY, NO_ACCESS, PREFETCH_LOC, SET_FLAGS};

use crate::support::*;

fn at(kernel: &str, xnack: bool) -> Kfd {
    let mut k = Kfd::new(xnack);
    let mut c = k.m.config().clone();
    c.kernel = kernel.parse().unwrap();
    k.m.set_config(&c).unwrap();
    k
}

/// 6.9: a split piece without VRAM pages says system memory; before, it
/// kept the range's `actual_loc`.
#[test]
fn split_pieces_take_actual_loc_from_their_pages_since_6_9() {
    for (kernel, stale) in [("6.8", true), ("6.9", false), ("7.3", false)] {
        let mut k = at(kernel, true);
        let buf = k.mmap(4 * PAGE);
        k.set(buf, 4 * PAGE, &[(GRANULARITY, 0)]).unwrap();
        k.gpu_read(GPU0, buf, 4 * PAGE);
        assert_eq!(k.vram_pages_in(buf, 4 * PAGE), 4);
        // The CPU pulls page 0 back (a one-page window), then a flag
        // change on page 0 alone splits it off.
        k.cpu_read(buf, 4);
        assert_eq!(k.vram_pages_in(buf, 4 * PAGE), 3, "{kernel}");
        k.set(
            buf,
            PAGE,
            &[(SET_FLAGS, svm_core::uapi::flag::GPU_READ_MOSTLY)],
        )
        .unwrap();
        let svm = &k.m.process(k.pid).svm;
        let head = svm.ranges().find(CpuVa::new(buf).page_num()).unwrap();
        assert_eq!(head.range().npages().raw(), 1, "{kernel}");
        assert_eq!(head.vram_pages(), 0, "{kernel}");
        assert_eq!(head.actual_loc.is_some(), stale, "{kernel}: {head:?}");
        let tail = svm
            .ranges()
            .find(CpuVa::new(buf + PAGE).page_num())
            .unwrap();
        assert_eq!(tail.actual_loc, Some(GpuIndex::new(0).unwrap()), "{kernel}");
        k.check();
    }
}

/// 7.3: NO_ACCESS unmaps the GPUs it names; a range no GPU maps any more
/// is then neither migrated nor mapped by the same call. Before, the
/// GPU kept its PTEs and the prefetch ran.
#[test]
fn no_access_unmaps_since_7_3() {
    for (kernel, unmaps) in [("7.2", false), ("7.3", true)] {
        let mut k = at(kernel, false);
        let buf = k.mmap(16 * PAGE);
        k.set(buf, 16 * PAGE, &[(ACCESS, GPU1)]).unwrap();
        assert_eq!(k.m.page_tables(k.pid)[1].len(), 16, "{kernel}");
        k.set(buf, 16 * PAGE, &[(NO_ACCESS, GPU1), (PREFETCH_LOC, GPU0)])
            .unwrap();
        let left = k.m.page_tables(k.pid)[1].len();
        assert_eq!(left == 0, unmaps, "{kernel}: gpu1 keeps {left} PTEs");
        let in_vram = k.vram_pages_in(buf, 16 * PAGE);
        assert_eq!(in_vram == 0, unmaps, "{kernel}: {in_vram} pages prefetched");
        k.check();
    }
}

/// 7.3: NO_ACCESS also takes an IH checkpoint, so a retry fault already in
/// the GPU's ring when access was revoked is dropped as a straggler rather
/// than served. Up to 7.2 only a CPU unmap takes one.
#[test]
fn no_access_drops_faults_queued_before_it_since_7_3() {
    let mut tried = 0;
    for seed in 1..=64u64 {
        let mut dropped = Vec::new();
        for kernel in ["7.2", "7.3"] {
            let mut k = at(kernel, true);
            k.m.set_seed(Some(seed));
            let buf = k.mmap(16 * PAGE);
            let w = k.m.launch(k.pid, GPU1, CpuVa::new(buf), 4, None).unwrap();
            for _ in 0..16 {
                if k.m.faults_pending() {
                    break;
                }
                k.m.interleave();
            }
            if !k.m.faults_pending() {
                break;
            }
            k.set(buf, 16 * PAGE, &[(NO_ACCESS, GPU1)]).unwrap();
            assert!(k.m.quiesce());
            let _ = k.m.wait(w);
            let st = k.m.process(k.pid).svm.stats()[GpuIndex::new(1).unwrap()];
            dropped.push(st.stragglers_dropped);
            k.check();
        }
        if let [old, new] = dropped[..] {
            tried += 1;
            assert_eq!(old, 0, "seed {seed}: 7.2 drops nothing");
            assert!(new >= 1, "seed {seed}: 7.3 drops the queued fault");
        }
    }
    assert!(tried > 0, "no seed left a fault in the ring");
}

/// 6.10: a migration to VRAM first reserves its whole range against the
/// KFD VRAM limit, so SVM cannot push out a buffer hipMalloc placed there:
/// the prefetch fails quietly, the pages stay in system memory and are
/// mapped there. Before, TTM made room by evicting the KFD buffer, whose
/// process's queues stopped until the restore work brought it back
/// (evicting SVM's buffers in turn).
#[test]
fn the_vram_limit_gate_keeps_kfd_buffers_in_vram_since_6_10() {
    for (kernel, gated) in [("6.9", false), ("6.10", true), ("7.3", true)] {
        let mut k = at(kernel, false);
        let k0 = GpuIndex::new(0).unwrap();
        // 16 GiB of VRAM, the limit 8 MiB less: a KFD buffer takes all
        // but 1 MiB of what the limit allows, and 9 MiB of VRAM are left
        // for SVM's 16 MiB.
        let limit = 16 * GIB - 8 * MIB;
        let bo = k.m.alloc_vram_bo(k.pid, GPU0, limit - MIB).unwrap();
        // The limit is full for another KFD buffer: ENOMEM.
        let err = k.m.alloc_vram_bo(k.pid, GPU0, 2 * MIB).unwrap_err();
        assert_eq!(err.errno(), svm_core::Errno::Enomem, "{kernel}");
        let buf = k.mmap(16 * MIB);
        k.cpu_write(buf, &vec![3; 16 << 20]);
        k.set(buf, 16 * MIB, &[(ACCESS, GPU0), (PREFETCH_LOC, GPU0)])
            .unwrap();
        let resident = |k: &Kfd| {
            k.m.process(k.pid)
                .svm
                .kfd_bos()
                .find(|&(id, _)| id == bo)
                .is_some_and(|(_, b)| b.buf.is_some())
        };
        let stats = k.m.process(k.pid).svm.stats()[k0];
        if gated {
            assert_eq!(k.vram_pages_in(buf, 16 * MIB), 0, "{kernel}");
            assert!(resident(&k), "{kernel}: the KFD buffer stays");
            assert_eq!(stats.queue_evictions, 0, "{kernel}");
        } else {
            assert_eq!(k.vram_pages_in(buf, 16 * MIB), 16 * MIB / PAGE, "{kernel}");
            assert!(!resident(&k), "{kernel}: TTM evicted the KFD buffer");
            assert_eq!(stats.queue_evictions, 1, "{kernel}");
            // The process restore work, 100 ms later, brings it back and
            // evicts SVM's buffers to make room; the queues resume.
            k.m.advance(svm_core::process::PROCESS_RESTORE_TIME_NS + 1);
            assert!(k.m.quiesce());
            assert!(resident(&k), "{kernel}: restored");
            assert!(!k.m.process(k.pid).svm.restore_pending(), "{kernel}");
            assert!(k.vram_pages_in(buf, 16 * MIB) < 16 * MIB / PAGE, "{kernel}");
        }
        assert_eq!(k.cpu_read(buf, 16 * MIB), vec![3; 16 << 20]);
        k.check();
        k.m.free_vram_bo(k.pid, bo).unwrap();
        assert_eq!(
            k.m.gpus()[0].kfd_vram_used,
            0,
            "{kernel}: accounting balanced"
        );
        assert_eq!(
            k.m.free_vram_bo(k.pid, bo).unwrap_err().errno(),
            svm_core::Errno::Einval
        );
    }
}

//! Machine-level behaviour: processes, MAP_FIXED, the memory limit, chunking, I/O mappings.

use svm_core::Errno;
use svm_core::addr::CpuVa;
use svm_core::topology::Topology;
use svm_core::uapi::{SVM_LOCATION_UNDEFINED as UNDEF, attr_type::*};
use svm_sim::check;
use svm_sim::machine::{Machine, MemLimit};
use svm_sim::mm::{Backing, Mark, Prot};

use crate::support::*;

#[test]
fn processes_have_their_own_ranges_and_modes_but_share_the_limit() {
    let topo = Topology::new(vec![gpu("gpu0", GPU0, 16 * GIB, true)]).unwrap();
    let mut m = Machine::new(
        topo,
        true,
        MemLimit {
            limit_bytes: 24 * PAGE,
            used_bytes: 0,
        },
    );
    let a = m.spawn("a");
    let b = m.spawn("b");
    assert_eq!(m.set_xnack_mode(a, 0), Ok(0));
    assert_eq!(m.set_xnack_mode(b, 0), Ok(0));
    let fixed = Some(CpuVa::new(0x100_0000));
    for pid in [a, b] {
        m.mmap(pid, fixed, 16 * PAGE, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
    }
    let set = |m: &mut Machine, pid, pages: u64| {
        let mut args = svm_core::uapi::SvmArgs {
            start_addr: 0x100_0000,
            size: pages * PAGE,
            op: svm_core::uapi::SVM_OP_SET_ATTR,
            attrs: vec![svm_core::uapi::SvmAttribute::new(GRANULARITY, 4)],
        };
        m.svm_ioctl(pid, &mut args).map(drop).map_err(|e| e.errno())
    };
    assert_eq!(set(&mut m, a, 16), Ok(()));
    // The same VA in process b is a different range, but the limit is shared.
    assert_eq!(set(&mut m, b, 16), Err(Errno::Enomem));
    assert_eq!(set(&mut m, b, 8), Ok(()));
    check::check(&m).unwrap();
    assert_eq!(m.mem_limit().used_bytes, 24 * PAGE);
    // XNACK on for a gives its reservation back; b can now grow.
    assert_eq!(m.set_xnack_mode(a, 1), Ok(1));
    assert_eq!(set(&mut m, b, 16), Ok(()));
    check::check(&m).unwrap();
    assert_eq!(m.process(a).svm.ranges().len(), 1);
    assert_eq!(m.process(b).svm.ranges().len(), 2);
    m.exit(b);
    check::check(&m).unwrap();
    assert_eq!(m.mem_limit().used_bytes, 0);
}

#[test]
fn map_fixed_over_a_range_unmaps_it() {
    let mut k = Kfd::new(false);
    let buf = k.mmap(8 * PAGE);
    k.register(buf, 8 * PAGE, GPU0, 0, 3).unwrap();
    k.m.mmap(
        k.pid,
        Some(CpuVa::new(buf + 2 * PAGE)),
        2 * PAGE,
        Prot::RW,
        Backing::Anon,
        Mark::None,
    )
    .unwrap();
    k.check();
    assert_eq!(k.ranges_from(buf), vec![(0, 2, true), (4, 4, true)]);
    // The new mapping is plain memory again: defaults answer.
    assert_eq!(
        k.get(buf + 2 * PAGE, PAGE, &[(PREFERRED_LOC, 0), (ACCESS, GPU0)]),
        Ok(vec![(PREFERRED_LOC, UNDEF), (NO_ACCESS, GPU0)])
    );
}

#[test]
fn io_and_file_mappings() {
    let mut k = Kfd::new(true);
    let io =
        k.m.mmap(k.pid, None, 4 * PAGE, Prot::RW, Backing::Io, Mark::None)
            .unwrap()
            .start_va()
            .raw();
    assert_eq!(k.register(io, 4 * PAGE, GPU0, 0, 3), Err(Errno::Efault));
    assert_eq!(k.get(io, PAGE, &[(PREFERRED_LOC, 0)]), Err(Errno::Efault));
    // A file mapping can be registered; it simply cannot migrate later.
    let file =
        k.m.mmap(
            k.pid,
            None,
            4 * PAGE,
            Prot::RW,
            Backing::File("data.bin".into()),
            Mark::None,
        )
        .unwrap()
        .start_va()
        .raw();
    assert_eq!(k.register(file, 4 * PAGE, GPU0, GPU0, 3), Ok(()));
    // An anonymous mapping next to the I/O one: a range spanning both fails whole.
    let anon =
        k.m.mmap(
            k.pid,
            Some(CpuVa::new(io + 4 * PAGE)),
            4 * PAGE,
            Prot::RW,
            Backing::Anon,
            Mark::Heap,
        )
        .unwrap();
    assert_eq!(anon.start_va().raw(), io + 4 * PAGE);
    assert_eq!(
        k.register(io + 2 * PAGE, 4 * PAGE, GPU0, 0, 3),
        Err(Errno::Efault)
    );
    // Only the file range exists.
    assert_eq!(k.m.process(k.pid).svm.ranges().len(), 1);
}

#[test]
fn mprotect_keeps_ranges() {
    let mut k = Kfd::new(false);
    let buf = k.mmap(8 * PAGE);
    k.register(buf, 8 * PAGE, GPU0, 0, 3).unwrap();
    k.m.mprotect(k.pid, CpuVa::new(buf), 4 * PAGE, Prot::parse("r").unwrap())
        .unwrap();
    k.check();
    assert_eq!(k.ranges_from(buf), vec![(0, 8, true)]);
    assert_eq!(
        k.get(buf, 8 * PAGE, &[(PREFERRED_LOC, 0)]),
        Ok(vec![(PREFERRED_LOC, 0)])
    );
}

#[test]
fn gap_ranges_are_chunked_at_max_svm_range_pages() {
    // 64 MiB of VRAM: VRAM/32 is 2 MiB, so no new range crosses a 2 MiB boundary.
    let mut k = Kfd::with_gpus(
        vec![
            gpu("small", GPU0, 64 << 20, true),
            gpu("big", GPU1, 64 * GIB, true),
        ],
        false,
    );
    assert_eq!(k.m.process(k.pid).svm.max_range_pages().raw(), 512);
    let base = 0x4000_0000 + (1 << 20); // 1 MiB past a 2 MiB boundary
    k.m.mmap(
        k.pid,
        Some(CpuVa::new(base)),
        5 << 20,
        Prot::RW,
        Backing::Anon,
        Mark::None,
    )
    .unwrap();
    k.set(base, 5 << 20, &[(GRANULARITY, 9)]).unwrap();
    assert_eq!(
        k.ranges_from(base),
        vec![(0, 256, false), (256, 512, false), (768, 512, false)]
    );
}

#[test]
fn failed_set_attr_changes_nothing() {
    let topo = Topology::new(vec![gpu("gpu0", GPU0, 16 * GIB, true)]).unwrap();
    let mut m = Machine::new(
        topo,
        false,
        MemLimit {
            limit_bytes: 20 * PAGE,
            used_bytes: 0,
        },
    );
    let pid = m.spawn("p");
    let base = m
        .mmap(pid, None, 32 * PAGE, Prot::RW, Backing::Anon, Mark::None)
        .unwrap()
        .start_va()
        .raw();
    let args = |start: u64, pages: u64, attrs: Vec<(u32, u32)>| svm_core::uapi::SvmArgs {
        start_addr: start,
        size: pages * PAGE,
        op: svm_core::uapi::SVM_OP_SET_ATTR,
        attrs: attrs
            .into_iter()
            .map(|(t, v)| svm_core::uapi::SvmAttribute::new(t, v))
            .collect(),
    };
    m.svm_ioctl(
        pid,
        &mut args(base + 4 * PAGE, 8, vec![(ACCESS, GPU0), (GRANULARITY, 2)]),
    )
    .unwrap();
    m.svm_ioctl(pid, &mut args(base + 16 * PAGE, 8, vec![(GRANULARITY, 3)]))
        .unwrap();
    let before: Vec<_> = m.process(pid).svm.ranges().iter().cloned().collect();
    // Splits both ranges and needs 4 + 4 + 4 new pages: more than the 4 left.
    let err = m
        .svm_ioctl(pid, &mut args(base, 28, vec![(SET_FLAGS, 0x10)]))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::Enomem);
    let after: Vec<_> = m.process(pid).svm.ranges().iter().cloned().collect();
    assert_eq!(before, after);
    assert_eq!(m.mem_limit().used_bytes, 16 * PAGE);
    check::check(&m).unwrap();
}

/// VRAM eviction crosses processes, as TTM's does: the least recently
/// validated buffer of another process makes room, and its bytes survive
/// in system memory. The order is the device's LRU, not time: an untimed
/// run (every timestamp 0) evicts the same buffer.
#[test]
fn vram_eviction_takes_another_process_buffer() {
    use svm_core::uapi::{SVM_OP_SET_ATTR, SvmArgs, SvmAttribute};
    for timed in [true, false] {
        let topo = Topology::new(vec![gpu("gpu0", GPU0, 4 << 20, true)]).unwrap();
        let mut m = Machine::new(topo, true, MemLimit::for_sysmem(GIB));
        let (a, b) = (m.spawn("a"), m.spawn("b"));
        let base = CpuVa::new(0x4000_0000);
        for (pid, fill) in [(a, 0xaau8), (b, 0xbb)] {
            m.mmap(
                pid,
                Some(base),
                3 << 20,
                Prot::RW,
                Backing::Anon,
                Mark::None,
            )
            .unwrap();
            m.cpu_access(pid, base, 3 << 20, Some(&vec![fill; 3 << 20]))
                .unwrap();
            if timed {
                m.advance(1_000_000);
            }
            let mut args = SvmArgs {
                start_addr: base.raw(),
                size: 3 << 20,
                op: SVM_OP_SET_ATTR,
                attrs: vec![SvmAttribute::new(PREFETCH_LOC, GPU0)],
            };
            m.svm_ioctl(pid, &mut args).unwrap();
            check::check(&m).unwrap();
        }
        let in_vram = |m: &Machine, pid| {
            m.process(pid)
                .svm
                .ranges()
                .iter()
                .map(|r| r.vram_pages())
                .sum::<u64>()
        };
        // 4 MiB of VRAM makes max_svm_range_pages 2 MiB, so each 3 MiB
        // mapping is two ranges with two buffers (512 + 256 pages). b's
        // first buffer needed 512 pages: a's least recently validated
        // buffer (its first range) went; its second stays.
        assert_eq!(
            in_vram(&m, b),
            768,
            "timed {timed}: b's prefetch got the VRAM"
        );
        assert_eq!(in_vram(&m, a), 256, "timed {timed}: a's older buffer went");
        assert_eq!(
            m.process(a).svm.stats()[svm_core::gpu::GpuIndex::new(0).unwrap()].evictions,
            1
        );
        let log: Vec<_> = m.evictions().rows().copied().collect();
        assert_eq!(log.len(), 1, "timed {timed}: {log:?}");
        assert_eq!(
            (log[0].by, log[0].victim, log[0].buffers, log[0].pages),
            (Some(1), 0, 1, 512)
        );
        let back = m.cpu_access(a, base, 3 << 20, None).unwrap();
        assert!(back.iter().all(|&x| x == 0xaa));
        let back = m.cpu_access(b, base, 3 << 20, None).unwrap();
        assert!(back.iter().all(|&x| x == 0xbb));
        check::check(&m).unwrap();
    }
}

/// A piece whose pages all left the buffer it shares with split siblings
/// keeps naming it, and its next migration to that GPU reuses it
/// (`svm_range_validate_svm_bo`) instead of allocating a buffer for the
/// piece. The buffer goes when the last page leaves (`svm_range_bo_release`),
/// and the pieces forget it.
#[test]
fn split_siblings_reuse_their_shared_buffer() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(4 * MIB);
    k.cpu_write(buf, &words((MIB / 4) as usize, |i| i + 1));
    k.register(buf, 4 * MIB, GPU0, GPU0, 0).unwrap();
    assert_eq!(k.m.counters().vram_allocs, 1);
    // A different granularity in the middle splits the range in three.
    k.set(buf + MIB, MIB, &[(GRANULARITY, 8)]).unwrap();
    assert_eq!(k.ranges_from(buf).len(), 3);
    // The CPU pulls the middle piece back (its window is the whole piece).
    assert_eq!(k.cpu_read(buf + MIB, 4), [0; 4]);
    assert_eq!(k.vram_pages_in(buf + MIB, MIB), 0);
    let mid =
        k.m.process(k.pid)
            .svm
            .ranges()
            .find(CpuVa::new(buf + MIB).page_num())
            .unwrap();
    assert!(mid.bo.is_some() && mid.actual_loc.is_none());
    // GPU0 faults it back in: same buffer, no new allocation.
    k.gpu_read(GPU0, buf + MIB, 4);
    assert_eq!(k.vram_pages_in(buf + MIB, MIB), MIB / PAGE);
    assert_eq!(k.m.counters().vram_allocs, 1);
    assert_eq!(k.cpu_read(buf, 4), 1u32.to_le_bytes());
    // Every page leaves: the buffer is freed and nobody names it.
    for at in [buf, buf + MIB, buf + 2 * MIB] {
        k.cpu_read(at, 4);
    }
    k.set(buf, 4 * MIB, &[(PREFETCH_LOC, 0)]).unwrap();
    assert_eq!(k.m.counters().vram_frees, 1);
    assert!(
        k.m.process(k.pid)
            .svm
            .ranges()
            .iter()
            .all(|r| r.bo.is_none())
    );
    k.check();
}

/// A watched clock follows the simulated clock as the machine runs (what
/// the command line's progress display reads), and watching changes
/// nothing the run does.
#[test]
fn a_watched_clock_follows_the_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let run = |watch: bool| {
        let mut k = Kfd::new(true);
        k.m.set_timing(svm_sim::timing::Profile::built_in("mi210").unwrap().timing);
        let clock = Arc::new(AtomicU64::new(0));
        if watch {
            k.m.watch_clock(Arc::clone(&clock));
        }
        let buf = k.mmap(64 * PAGE);
        k.register(buf, 64 * PAGE, GPU0, 0, 0).unwrap();
        k.cpu_write(buf, &[1; 4096]);
        k.gpu_write(GPU0, buf, &[2; 64 * 4096]);
        (
            clock.load(Ordering::Relaxed),
            k.m.now_ns(),
            format!("{:?}", k.m.counters()),
        )
    };
    let (seen, now, counters) = run(true);
    assert!(seen > 0 && seen <= now, "{seen} {now}");
    let (unseen, now2, counters2) = run(false);
    assert_eq!((unseen, now2, counters2), (0, now, counters));
}

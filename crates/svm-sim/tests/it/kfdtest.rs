//! Ports of KFDTest's KFDSVMRangeTest cases that exercise the attribute API.
//!
//! Every case is a `TEST_P` over XNACK off (0) and on (1) in KFDTest, and
//! current KFDTest runs most SVM cases once per GPU node; here
//! [`kfd_test!`] makes one test function per mode that runs the case on
//! each GPU of a multi-GPU profile ([`KFDTEST_PROFILE`], untimed), with
//! `k.node` the GPU under test and `k.peer` the next one. Node ids are already
//! translated to gpu_ids, as libhsakmt does before the ioctl: node 0 (the CPU)
//! is gpu_id 0, SYSMEM.
//!
//! Unlike KFDTest, which only checks that each registration succeeds, the
//! split cases assert the exact ranges and their attributes afterwards.

use svm_core::Errno;
use svm_core::addr::CpuVa;
use svm_core::uapi::{SVM_LOCATION_UNDEFINED as UNDEF, attr_type::*, flag};

use crate::support::*;

const HA_CO: u32 = flag::HOST_ACCESS | flag::COHERENT;

/// Defines `mod $name { fn xnack_off(); fn xnack_on(); }` running `$body(&mut Kfd)`
/// on each GPU node.
macro_rules! kfd_test {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn xnack_off() {
                run(false, $body);
            }

            #[test]
            fn xnack_on() {
                run(true, $body);
            }
        }
    };
}

/// Runs a case on each GPU of [`KFDTEST_PROFILE`] in one XNACK mode.
fn run(xnack: bool, body: impl Fn(&mut Kfd)) {
    Kfd::on_each_node(&Kfd::profile_gpus(|_| {}), xnack, |k| {
        assert_eq!(k.xnack(), xnack, "gpu {:#x}", k.node);
        body(k);
    });
}

// SetGetAttributesTest: defaults on an unregistered page, then a SET read back.
kfd_test!(set_get_attributes, |k: &mut Kfd| {
    let buf = k.mmap(PAGE);
    let query = [
        (PREFETCH_LOC, 0),
        (PREFERRED_LOC, 0),
        (SET_FLAGS, 0),
        (GRANULARITY, 0),
        (ACCESS, k.node),
    ];
    let access = if k.xnack() { ACCESS } else { NO_ACCESS };
    assert_eq!(
        k.get(buf, PAGE, &query).unwrap(),
        vec![
            (PREFETCH_LOC, UNDEF),
            (PREFERRED_LOC, UNDEF),
            (SET_FLAGS, HA_CO),
            (GRANULARITY, 9),
            (access, k.node)
        ]
    );
    let flags = flag::HOST_ACCESS | flag::GPU_EXEC | flag::COHERENT;
    let set = [
        (PREFETCH_LOC, k.node),
        (PREFERRED_LOC, k.node),
        (SET_FLAGS, flags),
        (GRANULARITY, 0x3F),
        (ACCESS, k.node),
    ];
    k.set(buf, PAGE, &set).unwrap();
    assert_eq!(
        k.get(buf, PAGE, &query).unwrap(),
        vec![
            (PREFETCH_LOC, k.node),
            (PREFERRED_LOC, k.node),
            (SET_FLAGS, flags),
            (GRANULARITY, 0x3F),
            (ACCESS, k.node)
        ]
    );
    // One range now holds the page, prefetched to gpu0 and mapped there in
    // both modes: with XNACK on, set_attr still maps the GPU that holds the
    // range after a prefetch (apps prefetch to avoid faults).
    assert_eq!(k.ranges_from(buf), vec![(0, 1, true)]);
});

// InvalidRangeTest: registering an address with no VMA fails (EFAULT).
kfd_test!(invalid_range, |k: &mut Kfd| {
    assert_eq!(
        k.register(0x10000, 0x1000, k.node, 0, HA_CO),
        Err(Errno::Efault)
    );
    assert!(k.ranges_from(0).is_empty());
});

// XNACKModeTest: toggle twice; with a queue on any GPU, setting the mode is EBUSY.
kfd_test!(xnack_mode, |k: &mut Kfd| {
    let pid = k.pid;
    let orig = k.m.set_xnack_mode(pid, -1).unwrap();
    for _ in 0..2 {
        let enable = i32::from(k.m.set_xnack_mode(pid, -1).unwrap() == 0);
        assert_eq!(k.m.set_xnack_mode(pid, enable), Ok(enable));
        for gpu in [k.node, k.peer] {
            let q = k.m.create_queue(pid, gpu).unwrap();
            for v in [0, 1] {
                assert_eq!(
                    k.m.set_xnack_mode(pid, v).map_err(|e| e.errno()),
                    Err(Errno::Ebusy)
                );
            }
            k.m.destroy_queue(pid, q.raw()).unwrap();
        }
    }
    assert_eq!(k.m.set_xnack_mode(pid, -1), Ok(orig));
});

/// XNACKModeTest on a machine where the GPU under test cannot fault:
/// enabling is EPERM (libhsakmt's NOT_SUPPORTED, which the test accepts),
/// disabling works.
#[test]
fn xnack_mode_not_supported() {
    let n = Kfd::profile_gpus(|_| {}).len();
    for index in 0..n {
        let mut gpus = Kfd::profile_gpus(|_| {});
        gpus[index].xnack = false;
        let mut k = Kfd::with_gpus(gpus, true);
        k.select(index);
        assert!(
            !k.xnack(),
            "gpu {:#x}: default mode must be off when a GPU cannot fault",
            k.node
        );
        assert_eq!(
            k.m.set_xnack_mode(k.pid, 1).map_err(|e| e.errno()),
            Err(Errno::Eperm)
        );
        assert_eq!(k.m.set_xnack_mode(k.pid, 0), Ok(0));
    }
}

/// The ranges of every split case carry the registration's attributes.
fn assert_registered_attrs(k: &mut Kfd, buf: u64, size: u64) {
    let got = k
        .get(
            buf,
            size,
            &[
                (PREFETCH_LOC, 0),
                (PREFERRED_LOC, 0),
                (SET_FLAGS, 0),
                (CLR_FLAGS, 0),
                (ACCESS, k.node),
                (ACCESS, k.peer),
                (GRANULARITY, 0),
            ],
        )
        .unwrap();
    let gpu1 = if k.xnack() { ACCESS } else { NO_ACCESS };
    assert_eq!(
        got,
        vec![
            (PREFETCH_LOC, 0),
            (PREFERRED_LOC, 0),
            (SET_FLAGS, HA_CO),
            (CLR_FLAGS, !HA_CO),
            (ACCESS, k.node),
            (gpu1, k.peer),
            (GRANULARITY, 9)
        ]
    );
}

// SplitSystemRangeTest and SplitVramRangeTest, case by case. BufSize is 16
// pages; every range is registered with RegisterSVMRange(gpu0, prefetch,
// HOST_ACCESS|COHERENT), prefetch being sysmem for the first test and gpu0
// for the second. Expected ranges are (first page from the buffer, pages,
// mapped_to_gpu): in system memory, ACCESS maps eagerly with XNACK off and
// nothing is mapped yet with XNACK on; in VRAM both modes map after the
// prefetch. VRAM pieces share their parent's buffer at their own offsets
// (`svm_range_split_nodes`); the checkers verify that after every step.
mod split_range {
    use super::*;

    const N: u64 = 16;

    fn reg(k: &mut Kfd, at: u32, addr: u64, size: u64) {
        k.register(addr, size, k.node, at, HA_CO).unwrap();
    }

    /// Runs one case in both modes, with the ranges in system memory and in
    /// VRAM: `setup` registers, `want` lists (page, npages).
    fn case(map_pages: u64, setup: impl Fn(&mut Kfd, u32, u64), want: &[(u64, u64)]) {
        each(|k, in_vram| {
            let at = if in_vram { k.node } else { 0 };
            let xnack = k.xnack();
            let buf = k.mmap(map_pages * PAGE);
            setup(k, at, buf);
            let mapped = at == k.node || !xnack;
            let want: Vec<_> = want.iter().map(|&(p, n)| (p, n, mapped)).collect();
            let ctx = format!("gpu {:#x} prefetch {at:#x} xnack {xnack}", k.node);
            assert_eq!(k.ranges_from(buf), want, "{ctx}");
            // Every registered page is where it was prefetched to.
            let registered: u64 = want.iter().map(|&(_, n, _)| n).sum();
            let in_vram = if at == k.node { registered } else { 0 };
            assert_eq!(k.vram_pages_in(buf, map_pages * PAGE), in_vram, "{ctx}");
            if at == 0 {
                assert_registered_attrs(k, buf, map_pages * PAGE);
            }
            // Delete the objects: munmap drops every range and frees VRAM.
            k.munmap(buf, map_pages * PAGE);
            assert!(k.ranges_from(buf).is_empty());
            assert!(k.node_vram_empty(), "{ctx}: VRAM left");
        });
    }

    /// Runs `f` on each GPU node in both modes, with the ranges prefetched
    /// to system memory (`false`) and to the node's VRAM (`true`).
    fn each(f: impl Fn(&mut Kfd, bool)) {
        for xnack in [false, true] {
            for in_vram in [false, true] {
                Kfd::on_each_node(&Kfd::profile_gpus(|_| {}), xnack, |k| f(k, in_vram));
            }
        }
    }

    #[test]
    fn case1_one_page_inside() {
        // B = 1 page at +8 KiB: the clone is split into head, B and tail.
        case(
            N,
            |k, at, b| {
                reg(k, at, b, N * PAGE);
                reg(k, at, b + 2 * PAGE, PAGE);
            },
            &[(0, 2), (2, 1), (3, 13)],
        );
    }

    #[test]
    fn case2_1_tail() {
        case(
            N,
            |k, at, b| {
                reg(k, at, b, N * PAGE);
                reg(k, at, b + PAGE, (N - 1) * PAGE);
            },
            &[(0, 1), (1, 15)],
        );
    }

    #[test]
    fn case2_2_overlap_past_end() {
        // 18 pages mapped, A = first 16, B = 16 pages at +8 KiB: the last two
        // pages of B become a new range.
        case(
            N + 2,
            |k, at, b| {
                reg(k, at, b, N * PAGE);
                reg(k, at, b + 2 * PAGE, N * PAGE);
            },
            &[(0, 2), (2, 14), (16, 2)],
        );
    }

    #[test]
    fn case3_head() {
        case(
            N,
            |k, at, b| {
                reg(k, at, b, N * PAGE);
                reg(k, at, b, (N - 2) * PAGE);
            },
            &[(0, 14), (14, 2)],
        );
    }

    #[test]
    fn case4_1_identical() {
        // Fully contained: updated in place, no split.
        case(
            N,
            |k, at, b| {
                reg(k, at, b, N * PAGE);
                reg(k, at, b, N * PAGE);
            },
            &[(0, 16)],
        );
    }

    #[test]
    fn case4_2_superset() {
        case(
            N + 2,
            |k, at, b| {
                reg(k, at, b, N * PAGE);
                reg(k, at, b, (N + 2) * PAGE);
            },
            &[(0, 16), (16, 2)],
        );
    }

    #[test]
    fn case5_superset_of_two_with_gaps() {
        // 16 pages + 64 KiB mapped; A = 2 pages at +8 KiB, B = 2 pages at
        // +32 KiB, C = the whole mapping: C keeps A and B and fills the gaps.
        case(
            N + 16,
            |k, at, b| {
                reg(k, at, b + 2 * PAGE, 2 * PAGE);
                reg(k, at, b + 8 * PAGE, 2 * PAGE);
                reg(k, at, b, (N + 16) * PAGE);
            },
            &[(0, 2), (2, 2), (4, 4), (8, 2), (10, 22)],
        );
    }

    #[test]
    fn case6_munmap_registered() {
        each(|k, in_vram| {
            let at = if in_vram { k.node } else { 0 };
            let buf = k.mmap(N * PAGE);
            reg(k, at, buf + 2 * PAGE, 2 * PAGE);
            let mapped = at == k.node || !k.xnack();
            assert_eq!(k.ranges_from(buf), vec![(2, 2, mapped)]);
            k.munmap(buf, N * PAGE);
            assert!(k.ranges_from(buf).is_empty());
            assert!(k.node_vram_empty());
            assert_eq!(
                k.get(buf + 2 * PAGE, PAGE, &[(PREFETCH_LOC, 0)]),
                Err(Errno::Efault)
            );
        });
    }

    /// The same attributes over an already-mapped range are skipped, so a
    /// SET without PREFETCH_LOC (which always counts as a change) does not
    /// split a mapped range. With XNACK on, nothing was mapped and it splits.
    #[test]
    fn same_attrs_on_mapped_range_do_not_split() {
        each(|k, in_vram| {
            if in_vram {
                return;
            }
            let xnack = k.xnack();
            let buf = k.mmap(N * PAGE);
            reg(k, 0, buf, N * PAGE);
            k.set(
                buf + 2 * PAGE,
                PAGE,
                &[(SET_FLAGS, HA_CO), (ACCESS, k.node)],
            )
            .unwrap();
            let want: &[(u64, u64, bool)] = if xnack {
                &[(0, 2, false), (2, 1, false), (3, 13, false)]
            } else {
                &[(0, 16, true)]
            };
            assert_eq!(k.ranges_from(buf), want, "gpu {:#x} xnack {xnack}", k.node);
        });
    }
}

// PrefetchTest, the GET half: EFAULT after munmap, UNDEFINED across ranges
// with different prefetch locations.
kfd_test!(prefetch_get, |k: &mut Kfd| {
    let size = 16 * 1024;
    let buf = k.mmap(size);
    k.register(buf, size, k.node, 0, HA_CO).unwrap();
    k.munmap(buf, size);
    assert_eq!(k.get(buf, size, &[(PREFETCH_LOC, 0)]), Err(Errno::Efault));

    let buf = k.mmap(size);
    k.register(buf, size, k.node, 0, HA_CO).unwrap();
    assert_eq!(
        k.get(buf, size, &[(PREFETCH_LOC, 0)]),
        Ok(vec![(PREFETCH_LOC, 0)])
    );
    let upper = buf + size / 2;
    k.set(upper, size / 2, &[(PREFETCH_LOC, k.node)]).unwrap();
    // The prefetch moved the upper half, and only it.
    assert_eq!(k.vram_pages_in(upper, size / 2), size / 2 / PAGE);
    assert_eq!(k.vram_pages_in(buf, size / 2), 0);
    assert_eq!(
        k.get(upper, size / 2, &[(PREFETCH_LOC, 0)]),
        Ok(vec![(PREFETCH_LOC, k.node)])
    );
    assert_eq!(
        k.get(buf, size, &[(PREFETCH_LOC, 0)]),
        Ok(vec![(PREFETCH_LOC, UNDEF)])
    );
    // The lower half is untouched.
    assert_eq!(
        k.get(buf, size / 2, &[(PREFETCH_LOC, 0)]),
        Ok(vec![(PREFETCH_LOC, 0)])
    );
});

// ---------------------------------------------------------------------------
// Fault-path ports. The GPU work KFDTest does by dispatch or SDMA becomes
// gpu_read/gpu_write/gpu_copy; every step runs the checkers (PTEs against
// page locations, VRAM buffers, DMA mappings, bytes against the shadow).

const PATTERN: u32 = 0x0101_0101;

// BasicSystemMemTest: copy one dword between two system-memory ranges.
kfd_test!(basic_system_mem, |k: &mut Kfd| {
    let src = k.mmap(PAGE);
    let dst = k.mmap(PAGE);
    k.register(src, PAGE, k.node, 0, HA_CO).unwrap();
    k.register(dst, PAGE, k.node, 0, HA_CO).unwrap();
    k.cpu_write(src, &PATTERN.to_le_bytes());
    k.gpu_copy(k.node, src, dst, 4);
    assert_eq!(k.cpu_read(dst, 4), PATTERN.to_le_bytes());
    assert_eq!(k.vram_pages_in(src, PAGE) + k.vram_pages_in(dst, PAGE), 0);
    // XNACK off maps at set_attr; XNACK on maps on the two faults.
    let faults = k.stats().faults;
    assert_eq!(faults, if k.xnack() { 2 } else { 0 });
});

// BasicVramTest: through a range prefetched to VRAM and back out.
// PartialUnmapSysMemTest: munmap a hole out of a registered, filled range;
// the GPU still reads the pieces on both sides of it. Run here with the
// range in system memory (the test) and in VRAM (the same split on buffer
// pages, which must stay where they are and be freed with the hole).
kfd_test!(partial_unmap_sys_mem, |k: &mut Kfd| {
    for at in [0, k.node] {
        let n = 16;
        // Top-down mmap: dst lands above buf, out of buf's range picture.
        let dst = k.mmap(PAGE);
        let buf = k.mmap(n * PAGE);
        k.register(dst, PAGE, k.node, 0, HA_CO).unwrap();
        k.cpu_write(
            buf,
            &words(usize::try_from(n * PAGE / 4).unwrap(), |_| PATTERN),
        );
        k.register(buf, n * PAGE, k.node, at, HA_CO).unwrap();
        let node = k.node;
        let in_vram = |pages: u64| if at == node { pages } else { 0 };
        assert_eq!(k.vram_pages_in(buf, n * PAGE), in_vram(n));
        k.munmap(buf + 2 * PAGE, 4 * PAGE);
        let mapped = at == k.node || !k.xnack();
        let pieces: Vec<_> = k.ranges_from(buf).into_iter().filter(|r| r.0 < n).collect();
        assert_eq!(
            pieces,
            vec![(0, 2, mapped), (6, 10, mapped)],
            "prefetch {at:#x}"
        );
        assert_eq!(k.vram_pages_in(buf, n * PAGE), in_vram(n - 4));
        k.gpu_copy(k.node, buf + 6 * PAGE, dst, 4);
        assert_eq!(k.cpu_read(dst, 4), PATTERN.to_le_bytes());
        k.cpu_write(dst, &[0; 4]);
        k.gpu_copy(k.node, buf, dst, 4);
        assert_eq!(k.cpu_read(dst, 4), PATTERN.to_le_bytes());
        k.munmap(buf, n * PAGE);
        k.munmap(dst, PAGE);
        assert!(k.node_vram_empty(), "prefetch {at:#x}: VRAM left");
    }
});

kfd_test!(basic_vram, |k: &mut Kfd| {
    let src = k.mmap(PAGE);
    let loc = k.mmap(PAGE);
    let dst = k.mmap(PAGE);
    k.register(src, PAGE, k.node, 0, HA_CO).unwrap();
    k.register(loc, PAGE, k.node, k.node, HA_CO).unwrap();
    k.register(dst, PAGE, k.node, 0, HA_CO).unwrap();
    assert_eq!(k.vram_pages_in(loc, PAGE), 1);
    k.cpu_write(src, &PATTERN.to_le_bytes());
    k.gpu_copy(k.node, src, loc, 4);
    k.gpu_copy(k.node, loc, dst, 4);
    assert_eq!(k.cpu_read(dst, 4), PATTERN.to_le_bytes());
    assert_eq!(
        k.vram_pages_in(loc, PAGE),
        1,
        "the GPU worked on the range in VRAM"
    );
});

// MigrateTest (scaled to 1 MiB): prefetch to VRAM, GPU copies in, the CPU
// reads every word back through CPU faults, and the GPU copies once more.
kfd_test!(migrate, |k: &mut Kfd| {
    let size = 1 << 20;
    let n = (size / 4) as usize;
    let data = k.mmap(size);
    let buf = k.mmap(size);
    let buf2 = k.mmap(size);
    for b in [data, buf, buf2] {
        k.register(b, size, k.node, 0, HA_CO).unwrap();
    }
    let want = words(n, |i| i);
    k.cpu_write(data, &want);
    for _ in 0..3 {
        for b in [buf, buf2] {
            k.set(b, size, &[(PREFETCH_LOC, k.node)]).unwrap();
            assert_eq!(k.vram_pages_in(b, size), size / PAGE);
        }
        k.gpu_copy(k.node, data, buf, size);
        k.gpu_copy(k.node, data, buf2, size);
        for b in [buf, buf2] {
            assert_eq!(k.cpu_read(b, size), want);
            assert_eq!(
                k.vram_pages_in(b, size),
                0,
                "CPU faults brought every window back"
            );
        }
    }
    k.gpu_copy(k.node, data, buf, size);
    assert_eq!(k.cpu_read(buf, size), want);
    let counters = k.m.counters();
    assert!(counters.pages_to_vram > 0 && counters.pages_to_ram > 0);
    // XNACK off: CPU faults evict the GPU-mapped range (queues stop) and the
    // restore work remaps it before the GPU runs again. XNACK on unmaps
    // instead, and the GPU faults.
    if k.xnack() {
        assert_eq!(counters.queue_evictions, 0);
    } else {
        assert!(counters.queue_restores > 0, "{counters:?}");
        assert!(counters.queue_evictions >= counters.queue_restores);
    }
});

// MigratePolicyTest: the CPU reads and rewrites a range the GPU filled in VRAM.
kfd_test!(migrate_policy, |k: &mut Kfd| {
    let size = 1 << 20;
    let n = (size / 8) as usize;
    let data = k.mmap(size);
    let buf = k.mmap(size);
    k.register(data, size, k.node, 0, HA_CO).unwrap();
    k.register(buf, size, k.node, 0, HA_CO).unwrap();
    let q = |f: &dyn Fn(u64) -> u64| {
        (0..n as u64)
            .flat_map(|i| f(i).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    k.cpu_write(data, &q(&|i| i));
    k.set(buf, size, &[(PREFETCH_LOC, k.node)]).unwrap();
    k.gpu_copy(k.node, data, buf, size);
    assert_eq!(k.cpu_read(buf, size), q(&|i| i));
    k.cpu_write(buf, &q(&|i| i + 1));
    k.gpu_copy(k.node, buf, data, size);
    for i in (0..n as u64).step_by(512) {
        assert_eq!(k.cpu_read(data + i * 8, 8), (i + 1).to_le_bytes());
    }
});

// MigrateAccessInPlaceTest (scaled): an in-place GPU works on a range whose
// pages the CPU keeps pulling back to system memory.
kfd_test!(migrate_access_in_place, |k: &mut Kfd| {
    let size = 1 << 20;
    let buf = k.mmap(size);
    k.set(buf, size, &[(ACCESS_IN_PLACE, k.node)]).unwrap();
    k.set(buf, size, &[(PREFETCH_LOC, k.node)]).unwrap();
    assert_eq!(k.vram_pages_in(buf, size), size / PAGE);
    for off in (0..size).step_by(4096) {
        k.cpu_write(buf + off, &0x1234_u32.to_le_bytes());
    }
    assert_eq!(k.vram_pages_in(buf, size), 0);
    let fill = words((size / 4) as usize, |_| 0x55AA_AA55);
    k.gpu_write(k.node, buf, &fill);
    for off in (0..size).step_by(4096) {
        assert_eq!(k.cpu_read(buf + off, 4), 0x55AA_AA55_u32.to_le_bytes());
    }
    // In place: the GPU never pulled the range back into VRAM.
    assert_eq!(k.vram_pages_in(buf, size), 0);
});

// MultiGPUMigrationTest: ranges hop from GPU to GPU (through system memory,
// as kfd migrates between devices).
kfd_test!(multi_gpu_migration, |k: &mut Kfd| {
    let size = 1 << 20;
    let n = (size / 4) as usize;
    let buf = k.mmap(size);
    let data = k.mmap(size);
    k.cpu_write(buf, &words(n, |i| i));
    for gpu in [k.node, k.peer] {
        for b in [buf, data] {
            k.set(b, size, &[(ACCESS, gpu), (PREFETCH_LOC, gpu)])
                .unwrap();
        }
        // With XNACK off, once both GPUs have ACCESS both must map the range:
        // outside one hive the best prefetch location falls back to system
        // memory; inside one, the other GPU maps the VRAM over xGMI.
        let want = if k.xnack() || gpu == k.node || k.same_hive(k.node, k.peer) {
            size / PAGE
        } else {
            0
        };
        assert_eq!(k.vram_pages_in(buf, size), want, "prefetch to {gpu:#x}");
    }
    for gpu in [k.node, k.peer] {
        k.gpu_copy(gpu, buf, data, size);
        for i in (0..n as u64).step_by(512) {
            assert_eq!(
                k.cpu_read(data + i * 4, 4),
                u32::try_from(i).unwrap().to_le_bytes()
            );
        }
    }
});

// ReadOnlyRangeTest: a GPU reads a read-only page, and its write faults fatally.
kfd_test!(read_only_range, |k: &mut Kfd| {
    let buf = k.mmap(2 * PAGE);
    let out = k.mmap(PAGE);
    k.register(buf, 2 * PAGE, k.node, 0, HA_CO).unwrap();
    k.register(out, PAGE, k.node, 0, HA_CO).unwrap();
    k.cpu_write(buf, &[0x55; 16]);
    k.m.mprotect(
        k.pid,
        svm_core::addr::CpuVa::new(buf),
        PAGE,
        svm_sim::mm::Prot::parse("r").unwrap(),
    )
    .unwrap();
    k.gpu_copy(k.node, buf, out, 4);
    assert_eq!(k.cpu_read(out, 1), [0x55]);
    let err =
        k.m.gpu_access(
            k.pid,
            k.node,
            svm_core::addr::CpuVa::new(buf),
            4,
            Some(&[1, 2, 3, 4]),
        )
        .unwrap_err();
    // XNACK on: the retry fault is refused with EPERM. XNACK off: there is no
    // retry; the read-only PTE makes the write a fatal fault.
    let want = if k.xnack() {
        Errno::Eperm
    } else {
        Errno::Efault
    };
    assert_eq!(err.errno(), want, "{err}");
    assert_eq!(
        k.cpu_read(buf, 1),
        [0x55],
        "the failed write changed nothing"
    );
});

// MigrateFileBackedRangeTest: file pages stay in the page cache.
kfd_test!(migrate_file_backed, |k: &mut Kfd| {
    let f =
        k.m.mmap(
            k.pid,
            None,
            PAGE,
            svm_sim::mm::Prot::RW,
            svm_sim::mm::Backing::File("t".into()),
            svm_sim::mm::Mark::None,
        )
        .unwrap()
        .start_va()
        .raw();
    k.cpu_write(f, &[0x30; 4]);
    k.register(f, PAGE, k.node, k.node, HA_CO).unwrap();
    assert_eq!(k.vram_pages_in(f, PAGE), 0, "file pages do not migrate");
    k.gpu_write(k.node, f, &0x3333_3333_u32.to_le_bytes());
    assert_eq!(k.cpu_read(f, 1), [0x33]);
});

// VramOvercommitTest (scaled: 16 MiB of VRAM): registering VRAM + 8 MiB
// with prefetch to the GPU succeeds, in many ranges and in one giant one
// split at max_svm_range_pages; earlier ranges are evicted to system memory
// to make room, and every byte survives.
kfd_test!(vram_overcommit, |k: &mut Kfd| {
    let _ = k;
    for giant in [false, true] {
        let mut k = k.with_vram(16 << 20);
        let chunk: u64 = 4 << 20;
        let total = 24u64 << 20;
        let mut bufs = Vec::new();
        if giant {
            let b = k.mmap(total);
            k.cpu_write(b, &words((total / 4) as usize, |i| i));
            k.register(b, total, k.node, k.node, 0).unwrap();
            bufs.push((b, total));
        } else {
            for n in 0..(total / chunk) {
                let b = k.mmap(chunk);
                let seed = u32::try_from(n).unwrap() << 24;
                k.cpu_write(b, &words((chunk / 4) as usize, |i| seed | i));
                k.register(b, chunk, k.node, k.node, 0).unwrap();
                bufs.push((b, chunk));
            }
        }
        let resident: u64 = bufs.iter().map(|&(b, n)| k.vram_pages_in(b, n)).sum();
        assert!(
            resident > 0 && resident <= (64 << 20) / PAGE,
            "giant {giant}: {resident}"
        );
        assert!(k.stats().evictions > 0);
        for (n, &(b, size)) in bufs.iter().enumerate() {
            let seed = if giant {
                0
            } else {
                u32::try_from(n).unwrap() << 24
            };
            assert_eq!(
                k.cpu_read(b, size),
                words((size / 4) as usize, |i| seed | i),
                "giant {giant} buffer {n}"
            );
        }
    }
});

// VramOvercommitTest at its real size: VRAM + 1 GiB registered with
// prefetch to the GPU (256 MiB of VRAM, so the giant range splits at 8 MiB
// into 160 ranges). One word in every 16th page is written so that the
// bytes to check stay small; the other pages are never populated and must
// read as zero wherever they went.
kfd_test!(vram_overcommit_by_1gib, |k: &mut Kfd| {
    let vram = 256 * MIB;
    let total = vram + GIB;
    for giant in [false, true] {
        let mut k = k.with_vram(vram);
        let chunk = if giant { total } else { vram };
        let bufs: Vec<u64> = (0..total / chunk).map(|_| k.mmap(chunk)).collect();
        let mark =
            |b: u64, p: u64| u32::try_from(((b >> 12) + p) & 0x7fff_ffff).unwrap() | 0x8000_0000;
        for &b in &bufs {
            for p in (0..chunk / PAGE).step_by(16) {
                k.m.cpu_access(
                    k.pid,
                    CpuVa::new(b + p * PAGE),
                    4,
                    Some(&mark(b, p).to_le_bytes()),
                )
                .unwrap();
            }
            assert_eq!(
                k.register(b, chunk, k.node, k.node, 0),
                Ok(()),
                "giant {giant}"
            );
        }
        assert!(k.stats().evictions > 0);
        let resident: u64 = bufs.iter().map(|&b| k.vram_pages_in(b, chunk)).sum();
        assert!(
            resident > 0 && resident <= vram / PAGE,
            "giant {giant}: {resident}"
        );
        for &b in &bufs {
            for p in (0..chunk / PAGE).step_by(8) {
                let want = if p % 16 == 0 { mark(b, p) } else { 0 };
                let got =
                    k.m.cpu_access(k.pid, CpuVa::new(b + p * PAGE), 4, None)
                        .unwrap();
                assert_eq!(got, want.to_le_bytes(), "giant {giant}: page {p} of {b:#x}");
            }
        }
        k.check();
    }
});

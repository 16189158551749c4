//! The `kernel` knob: each 2024–2026 change from the release it arrived in
//! (`svm_core::kernel`), and the older behaviour before it.

use svm_core::addr::CpuVa;
use svm_core::gpu::GpuIndex;
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY, NO_ACCESS, PREFETCH_LOC, SET_FLAGS};

use svm_core::pte::GcVersion;
use svm_core::topology::GpuDesc;

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

/// One process on the GPUs of built-in profile `profile`, the driver
/// booted with XNACK `boot` (`!noretry`), following release `kernel`.
fn booted(profile: &str, boot: bool, kernel: &str, edit: impl Fn(&mut GpuDesc)) -> Kfd {
    let mut gpus = svm_sim::timing::Profile::built_in(profile).unwrap().gpus();
    gpus.iter_mut().for_each(edit);
    let mut m = svm_sim::machine::Machine::new(
        svm_core::topology::Topology::new(gpus).unwrap(),
        boot,
        svm_sim::machine::MemLimit::for_sysmem(64 * GIB),
    );
    let pid = m.spawn("p0");
    let mut k = Kfd::attach(m, pid);
    let mut c = k.m.config().clone();
    c.kernel = kernel.parse().unwrap();
    k.m.set_config(&c).unwrap();
    k
}

/// 7.2: GC 12.1 no longer chooses XNACK per process. Its mode is the one
/// the driver loaded with: turning it on after an XNACK-off boot is EPERM,
/// turning it off after an XNACK-on boot is allowed (and back on again).
/// Before 7.2, GC 12.1 chose per process as GC 9.4.2 still does.
#[test]
fn gc_12_1_xnack_is_fixed_at_load_since_7_2() {
    // (profile, gc override, kernel, boot, may turn on)
    let cases = [
        ("gc121", None, "7.2", false, false),
        ("gc121", None, "7.3", false, false),
        ("gc121", None, "7.1", false, true),
        ("gc121", None, "7.3", true, true),
        ("mi210", None, "7.3", false, true),
        // GFX 11 never runs with retry faults (no shader preemption
        // during page faults).
        ("mi210", Some(GcVersion(11, 0, 0)), "7.3", true, false),
    ];
    for (profile, gc, kernel, boot, may) in cases {
        let ctx = format!("{profile} gc {gc:?} kernel {kernel} boot {boot}");
        let mut k = booted(profile, boot, kernel, |g| {
            if let Some(v) = gc {
                g.gc = v;
            }
        });
        let possible = gc.is_none_or(|v| v.xnack_possible());
        assert_eq!(k.xnack(), boot && possible, "{ctx}: default");
        let on = k.m.set_xnack_mode(k.pid, 1).map_err(|e| e.errno());
        assert_eq!(on.is_ok(), may, "{ctx}: {on:?}");
        if !may {
            assert_eq!(on, Err(svm_core::Errno::Eperm), "{ctx}");
        }
        // Turning XNACK off is always allowed.
        assert_eq!(k.m.set_xnack_mode(k.pid, 0), Ok(0), "{ctx}");
        assert_eq!(k.m.set_xnack_mode(k.pid, 1).is_ok(), may, "{ctx}: again");
    }
}

/// An `apu_prefer_gtt` APU (MI300A-style) has no device memory: prefetch
/// and faults leave every page in system memory in both modes, and a KFD
/// "VRAM" buffer lives in GTT, charged to the system memory limit, however
/// large it is next to the carve-out.
#[test]
fn prefer_gtt_apu_has_no_device_memory() {
    for xnack in [false, true] {
        let mut k = booted("mi300a", true, "7.3", |_| {});
        k.m.set_xnack_mode(k.pid, i32::from(xnack)).unwrap();
        let (node, peer) = (k.node, k.peer);
        let buf = k.mmap(4 * MIB);
        k.cpu_write(buf, &[3; 64]);
        k.register(buf, 4 * MIB, node, node, 0).unwrap();
        k.set(buf, 4 * MIB, &[(ACCESS, peer)]).unwrap();
        k.gpu_write(node, buf + 8, &[9; 8]);
        assert_eq!(
            k.gpu_read(peer, buf, 16),
            [3, 3, 3, 3, 3, 3, 3, 3, 9, 9, 9, 9, 9, 9, 9, 9]
        );
        assert_eq!(k.vram_pages_in(buf, 4 * MIB), 0, "xnack {xnack}");
        assert_eq!(k.m.counters().pages_to_vram, 0, "xnack {xnack}");

        let carve_out = k.m.gpus()[0].desc.vram_bytes;
        let before = k.m.mem_limit().used_bytes;
        let bo = k.m.alloc_vram_bo(k.pid, node, 4 * carve_out).unwrap();
        assert_eq!(k.m.mem_limit().used_bytes - before, 4 * carve_out);
        assert_eq!(k.m.gpus()[0].kfd_vram_used, 0);
        assert_eq!(k.m.gpus()[0].vram_used_bytes(), 0);
        // More than system memory can hold is ENOMEM, and keeps nothing.
        let e = k.m.alloc_vram_bo(k.pid, node, 100 * GIB).unwrap_err();
        assert_eq!(e.errno(), svm_core::Errno::Enomem, "{e}");
        assert_eq!(k.m.mem_limit().used_bytes - before, 4 * carve_out);
        k.check();
        k.m.free_vram_bo(k.pid, bo).unwrap();
        assert_eq!(k.m.mem_limit().used_bytes, before);
    }
    // apu_prefer_gtt is an APU's setting only.
    let mut g = svm_sim::timing::Profile::built_in("mi210").unwrap().gpus();
    g[0].prefer_gtt = true;
    assert!(svm_core::topology::Topology::new(g).is_err());
}

/// The 2025 device-page refcount race, run under seeds: a CPU thread's
/// fault migrates a window out of VRAM and holds the faulting page until
/// its `put_page`; a GPU fault on the same page, delivered in between,
/// migrates the window back into the same buffer pages. Before 6.18 the
/// migration reset the held page's count, the put then dropped it to 0
/// under the new data, and the checker fails the run; since 6.18 the
/// migration takes a reference and every seed passes.
#[test]
fn a_held_vram_page_is_never_reused_early_since_6_18() {
    use svm_sim::machine::AccessPlan;
    let run = |kernel: &str, seed: u64| -> Result<(), String> {
        let mut k = at(kernel, true);
        k.m.set_seed(Some(seed));
        let raw = k.mmap(8 * MIB);
        let buf = raw.next_multiple_of(4 * MIB);
        k.cpu_write(buf, &words((4 * MIB / 4) as usize, |i| i));
        k.set(
            buf,
            4 * MIB,
            &[(GRANULARITY, 9), (ACCESS, GPU0), (PREFETCH_LOC, GPU0)],
        )
        .unwrap();
        assert_eq!(k.vram_pages_in(buf, 4 * MIB), 1024);
        // Past the 2 ms in which a fault on a just-validated range is a
        // duplicate.
        k.m.advance(3_000_000);
        let cpu =
            k.m.launch_access(k.pid, None, CpuVa::new(buf), 4, None, AccessPlan::ONCE)
                .unwrap();
        let gpu = k.m.launch(k.pid, GPU0, CpuVa::new(buf), 4, None).unwrap();
        let (c, _) = k.m.wait(cpu).unwrap();
        let (g, _) = k.m.wait(gpu).unwrap();
        assert_eq!((c, g), (vec![0; 4], vec![0; 4]), "seed {seed}");
        svm_sim::check::check(&k.m).map_err(|v| v.to_string())
    };
    let mut raced = None;
    for seed in 0..64 {
        run("7.3", seed).unwrap_or_else(|v| panic!("7.3, seed {seed}: {v}"));
        if raced.is_none()
            && let Err(v) = run("6.17", seed)
        {
            assert!(v.contains("refcount"), "{v}");
            raced = Some(seed);
        }
    }
    assert!(raced.is_some(), "no seed of 64 reached the race under 6.17");
}

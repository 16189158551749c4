//! The timing model: what a fault costs under a profile, and contention.

use svm_core::addr::CpuVa;
use svm_core::events;
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY};
use svm_sim::timing::Profile;

use crate::support::*;

/// The time of the first SMI event with this kfd event id.
fn first_event_ns(k: &Kfd, id: u32) -> u64 {
    k.m.events()
        .iter()
        .find(|e| e.event.kind.id() == id)
        .unwrap()
        .event
        .ts_ns
}

fn timed(k: &mut Kfd) -> svm_sim::timing::Timing {
    let t = Profile::built_in("mi210").unwrap().timing;
    k.m.set_timing(t.clone());
    t
}

/// One fault migrating a 2 MiB window: delivery, the handler, a 2 MiB copy
/// at PCIe 4 speed, PTEs and a flush; the SMI lines carry the handler's
/// own clock.
#[test]
fn a_fault_costs_delivery_handler_and_copy() {
    let mut k = Kfd::new(true);
    let t = timed(&mut k);
    let buf = k.mmap(2 * MIB);
    k.cpu_write(buf, &words((2 * MIB / 4) as usize, |i| i));
    k.set(buf, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    let t0 = k.m.now_ns();
    assert_eq!(k.gpu_read(GPU0, buf, 4), 0u32.to_le_bytes());
    let took = k.m.now_ns() - t0;
    let copy = t.host_link.setup_ns + (2 * MIB) as f64 / t.host_link.bytes_per_ns;
    // 512 pages moved, each paying the driver's per-page cost, in one
    // transfer; 512 PTEs written.
    let pages = (2 * MIB / PAGE) as f64;
    let floor = t.fault_delivery_ns
        + t.handler_fixed_ns
        + copy
        + pages * t.migrate_page_ns
        + pages * t.pte_write_ns;
    assert!(took as f64 >= floor, "{took} ns < {floor}");
    // The rest is flushes and the page walk.
    assert!(
        (took as f64) < floor + 50_000.0,
        "{took} ns, far above {floor}"
    );
    let c = k.m.counters();
    assert!(c.copy_busy_ns as f64 >= copy * 0.99, "{c:?}");
    assert!(c.handler_busy_ns > 0 && c.handler_busy_ns <= took);
    let stamp = |id: u32| first_event_ns(&k, id);
    // PAGE_FAULT_START, MIGRATE_START, MIGRATE_END and PAGE_FAULT_END in
    // order, the copy between the migration events.
    let (fault, mig, mig_end, fault_end) = (
        stamp(events::PAGE_FAULT_START),
        stamp(events::MIGRATE_START),
        stamp(events::MIGRATE_END),
        stamp(events::PAGE_FAULT_END),
    );
    assert!(fault <= mig && mig < mig_end && mig_end < fault_end);
    assert!((mig_end - mig) as f64 >= copy * 0.99);
    k.check();
}

/// Two GPUs fault the same range at once: each handler runs on its own
/// GPU, but the process's `svms->lock` (held from the lookup to the last
/// PTE) serialises them, and the wait is counted.
#[test]
fn faults_of_two_gpus_of_one_process_wait_for_its_svms_lock() {
    let mut k = Kfd::new(true);
    timed(&mut k);
    let buf = k.mmap(4 * MIB);
    k.set(
        buf,
        4 * MIB,
        &[(GRANULARITY, 9), (ACCESS, GPU0), (ACCESS, GPU1)],
    )
    .unwrap();
    let a = k.m.launch(k.pid, GPU0, CpuVa::new(buf), 4, None).unwrap();
    let b =
        k.m.launch(k.pid, GPU1, CpuVa::new(buf + 2 * MIB), 4, None)
            .unwrap();
    k.m.wait(a).unwrap();
    k.m.wait(b).unwrap();
    assert!(k.m.counters().svms_lock_wait_ns > 0, "{:?}", k.m.counters());
    k.check();
}

/// Without a profile nothing costs anything: the untimed protocol model.
#[test]
fn the_default_timing_charges_nothing() {
    let mut k = Kfd::new(true);
    let buf = k.mmap(2 * MIB);
    k.set(buf, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    k.gpu_read(GPU0, buf, 4);
    assert_eq!(k.m.now_ns(), 0);
    assert_eq!(k.m.counters().copy_busy_ns, 0);
}

/// A profile's GPUs carry its graphics IP version, and their PTEs follow
/// that version's rules (`svm_range_get_pte_flags`). With the default
/// flags (coherent), an MI200-class GPU (GC 9.4.2) maps its own VRAM
/// unsnooped and CC, an MI300X-class GPU (GC 9.4.3) snooped and RW; a
/// range made non-coherent maps system memory NC on the first and UC on
/// the second.
#[test]
fn each_profile_s_gpus_write_their_own_version_s_ptes() {
    use svm_core::pte::{GcVersion, Mtype};
    use svm_core::uapi::{attr_type::CLR_FLAGS, flag::COHERENT};
    let snooped = |m| (true, m);
    for (name, gc, vram, sys, sys_nc) in [
        (
            "mi210",
            GcVersion(9, 4, 2),
            (false, Mtype::Cc),
            snooped(Mtype::Uc),
            snooped(Mtype::Nc),
        ),
        (
            "mi300x",
            GcVersion(9, 4, 3),
            snooped(Mtype::Rw),
            snooped(Mtype::Uc),
            snooped(Mtype::Uc),
        ),
    ] {
        let p = Profile::built_in(name).unwrap();
        assert_eq!(p.gc(), gc, "{name}");
        let mut g = p.gpus().swap_remove(0);
        (g.id, g.vram_bytes, g.hive) = (svm_core::gpu::GpuId::new(GPU0).unwrap(), GIB, None);
        assert_eq!(g.gc, gc, "{name}");
        // XNACK off: registering maps at once.
        let mut k = Kfd::with_gpus(vec![g], false);
        let buf = k.mmap(6 * MIB);
        for i in 0..3 {
            k.cpu_write(buf + i * 2 * MIB, &[1; 8]);
        }
        k.set(buf + 4 * MIB, 2 * MIB, &[(CLR_FLAGS, COHERENT)])
            .unwrap();
        k.register(buf, 2 * MIB, GPU0, GPU0, 0).unwrap();
        k.register(buf + 2 * MIB, 4 * MIB, GPU0, 0, 0).unwrap();
        let pt = &k.m.page_tables(k.pid)[0];
        let flags = |a: u64| {
            let pte = pt.walk(CpuVa::new(a).page_num()).expect("mapped");
            (pte.flags.snooped, pte.flags.mtype)
        };
        assert_eq!(flags(buf), vram, "{name}: a page in its VRAM");
        assert_eq!(flags(buf + 2 * MIB), sys, "{name}: a page in system memory");
        assert_eq!(
            flags(buf + 4 * MIB),
            sys_nc,
            "{name}: the same, not coherent"
        );
        k.check();
    }
}

/// The PAGE_FAULT_START..PAGE_FAULT_END time of one GPU read faulting a
/// populated, 2 MiB-aligned 2 MiB range in under `profile`, with or
/// without compound device pages.
fn fault_2mib_ns(profile: &str, compound: bool) -> u64 {
    fault_2mib_ns_under(profile, svm_core::config::Driver::Kfd, compound)
}

/// [`fault_2mib_ns`] under `driver`'s defaults.
fn fault_2mib_ns_under(profile: &str, driver: svm_core::config::Driver, compound: bool) -> u64 {
    let mut k = Kfd::new(true);
    k.m.set_timing(Profile::built_in(profile).unwrap().timing);
    let mut c = svm_core::config::Config::for_driver(driver);
    c.compound_device_pages = compound;
    k.m.set_config(&c).unwrap();
    let raw = k.mmap(4 * MIB);
    let buf = raw.next_multiple_of(2 * MIB);
    k.cpu_write(buf, &words((2 * MIB / 4) as usize, |i| i));
    k.set(buf, 2 * MIB, &[(GRANULARITY, 9), (ACCESS, GPU0)])
        .unwrap();
    let jobs = k.m.counters().copy_jobs;
    assert_eq!(k.gpu_read(GPU0, buf + 16, 4), 4u32.to_le_bytes());
    // One job either way: the window's VRAM is one contiguous 2 MiB run.
    assert_eq!(k.m.counters().copy_jobs - jobs, 1, "{profile}");
    assert_eq!(k.vram_pages_in(buf, 2 * MIB), 512);
    let stamp = |id: u32| first_event_ns(&k, id);
    stamp(events::PAGE_FAULT_END) - stamp(events::PAGE_FAULT_START)
}

/// The per-4 KiB cost model against the one published comparison: Xe's
/// 2 MiB fault took 966 µs with 4 KiB device pages and 132 µs with one
/// 2 MiB page (7.3×; dri-devel 2025-12-16, landscape-2026.md A1). Under
/// the `mi210` profile (PCIe 4, close to the ~20 GB/s copy of that data)
/// the same fault must land within ±25% of that ratio, and the per-page
/// share it implies must be the profile's 1.4 µs.
#[test]
fn a_2mib_fault_with_4k_pages_costs_about_7x_one_compound_page() {
    let small = fault_2mib_ns("mi210", false) as f64;
    let huge = fault_2mib_ns("mi210", true) as f64;
    let ratio = small / huge;
    assert!(
        (7.3 * 0.75..=7.3 * 1.25).contains(&ratio),
        "{small} ns / {huge} ns = {ratio:.2}"
    );
    let per_page = (small - huge) / 512.0;
    assert!(
        (1_300.0..=1_500.0).contains(&per_page),
        "{per_page:.0} ns per page"
    );
    for p in ["mi250x", "mi300x"] {
        let (s, h) = (fault_2mib_ns(p, false), fault_2mib_ns(p, true));
        eprintln!("{p}: {s} ns / {h} ns = {:.2}", s as f64 / h as f64);
    }
    eprintln!("mi210: {small} ns / {huge} ns = {ratio:.2}");
}

/// The same published fault under the `xe` driver on the `xe` profile,
/// as absolute times: 966 µs with 4 KiB device pages and 132 µs with one
/// 2 MiB page (docs/research/xe.md §6), each within ±25%. The profile
/// was fitted to the parts (copy, per-page and per-folio software, the
/// fixed rest); the totals are predicted.
#[test]
fn an_xe_2mib_fault_takes_the_published_966_and_132_us() {
    use svm_core::config::Driver;
    let small = fault_2mib_ns_under("xe", Driver::Xe, false) as f64 / 1e3;
    let huge = fault_2mib_ns_under("xe", Driver::Xe, true) as f64 / 1e3;
    eprintln!("xe: {small:.0} us with 4 KiB pages, {huge:.0} us with a 2 MiB page");
    assert!((966.0 * 0.75..=966.0 * 1.25).contains(&small), "{small} us");
    assert!((132.0 * 0.75..=132.0 * 1.25).contains(&huge), "{huge} us");
}

/// The size-class statistics of one 2 MiB fault under the xe driver, as
/// Xe's GT statistics would show it: one `svm_2M` fault that migrated
/// 2048 KiB, whose handling time is the fault's, split into migration and
/// mapping; nothing in the 4K or 64K classes.
#[test]
fn a_2mib_fault_counts_in_the_2m_class() {
    let mut k = Kfd::new(true);
    k.m.set_timing(Profile::built_in("xe").unwrap().timing);
    k.m.set_config(&svm_core::config::Config::for_driver(
        svm_core::config::Driver::Xe,
    ))
    .unwrap();
    let raw = k.mmap(4 * MIB);
    let buf = raw.next_multiple_of(2 * MIB);
    k.cpu_write(buf, &words((2 * MIB / 4) as usize, |i| i));
    k.set(buf, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    k.gpu_read(GPU0, buf + 16, 4);
    let stamp = |id: u32| first_event_ns(&k, id);
    let handled = stamp(events::PAGE_FAULT_END) - stamp(events::PAGE_FAULT_START);
    let svm = &k.m.process(k.pid).svm;
    let s = svm.size_stats()[svm.gpuidx(GPU0).unwrap()];
    assert_eq!(svm_core::process::SIZE_CLASSES[2], "2M");
    assert_eq!((s[0].faults, s[1].faults, s[2].faults), (0, 0, 1));
    assert_eq!((s[2].migrations, s[2].pages_to_vram), (1, 512));
    assert!(
        s[2].fault_ns >= handled && s[2].fault_ns <= handled + 10_000,
        "{s:?} {handled}"
    );
    assert!(
        s[2].migrate_ns + s[2].map_ns <= s[2].fault_ns && s[2].migrate_ns > s[2].map_ns,
        "{s:?}"
    );
    // The map splits into bind (512 PTEs and a light flush: 7.1 us on
    // this profile, against Xe's published 10 us) and get_pages (the
    // rest).
    let t = Profile::built_in("xe").unwrap().timing;
    let bind =
        512 * svm_sim::timing::ns(t.pte_write_ns) + svm_sim::timing::ns(t.tlb_flush_light_ns);
    assert_eq!(s[2].bind_ns, bind, "{s:?}");
    assert!(s[2].bind_ns <= s[2].map_ns);
}

/// A copy job covers at most 2 MiB of physically contiguous VRAM, and a
/// never-populated page ends one (it arrives as a cleared VRAM page,
/// uncopied): a 4 MiB window with one hole at page 100 is three jobs.
#[test]
fn copy_jobs_end_at_holes_and_at_2mib() {
    let mut k = Kfd::new(true);
    timed(&mut k);
    let raw = k.mmap(8 * MIB);
    let buf = raw.next_multiple_of(4 * MIB);
    k.cpu_write(buf, &vec![1; usize::try_from(100 * PAGE).unwrap()]);
    k.cpu_write(
        buf + 101 * PAGE,
        &vec![2; usize::try_from(4 * MIB - 101 * PAGE).unwrap()],
    );
    k.set(buf, 4 * MIB, &[(GRANULARITY, 10), (ACCESS, GPU0)])
        .unwrap();
    k.gpu_read(GPU0, buf, 4);
    let c = k.m.counters();
    assert_eq!((c.pages_to_vram, c.pages_zero_filled), (1023, 1), "{c:?}");
    assert_eq!(c.copy_jobs, 3, "{c:?}");
    assert_eq!(k.gpu_read(GPU0, buf + 100 * PAGE, 4), [0; 4]);
    k.check();
}

/// Every copy of a device, in either direction and from any process, runs
/// on its one buffer-funcs ring: a CPU fault of one process pulling pages
/// out of GPU0 holds the ring while another process's GPU fault waits to
/// copy into GPU0.
#[test]
fn copies_of_both_directions_share_one_ring() {
    let mut k = Kfd::new(true);
    timed(&mut k);
    // Process q's range sits in GPU0's VRAM.
    let q = k.m.spawn("q");
    let mut kq = Kfd::attach(k.m, q);
    let _ = kq.m.set_xnack_mode(q, 1);
    let b = kq.mmap(2 * MIB);
    kq.cpu_write(b, &vec![7; usize::try_from(2 * MIB).unwrap()]);
    kq.register(b, 2 * MIB, GPU0, GPU0, 0).unwrap();
    let mut k = Kfd::attach(kq.m, k.pid);
    let a = k.mmap(2 * MIB);
    k.cpu_write(a, &vec![5; usize::try_from(2 * MIB).unwrap()]);
    k.set(a, 2 * MIB, &[(ACCESS, GPU0)]).unwrap();
    let before = k.m.counters().copy_wait_ns;
    // p's GPU fault is delivered a few µs after q's CPU fault took the ring.
    let w = k.m.launch(k.pid, GPU0, CpuVa::new(a), 4, None).unwrap();
    k.m.cpu_access(q, CpuVa::new(b), 4, None).unwrap();
    k.m.wait(w).unwrap();
    assert!(k.m.counters().copy_wait_ns > before, "{:?}", k.m.counters());
    k.check();
}

/// An access that loops ends at its flag: with the flag already set it
/// makes one pass, without it all of them (in simulated time, about that
/// many times longer).
#[test]
fn a_looping_access_stops_at_its_flag() {
    use svm_sim::machine::AccessPlan;
    let took = |flag_set: bool| {
        let mut k = Kfd::new(true);
        timed(&mut k);
        let buf = k.mmap(64 * 1024);
        let flag = k.mmap(PAGE);
        k.cpu_write(buf, &[1; 64 * 1024]);
        k.cpu_write(flag, &u32::from(flag_set).to_le_bytes());
        k.set(buf, 64 * 1024, &[(ACCESS, GPU0)]).unwrap();
        k.set(flag, PAGE, &[(ACCESS, GPU0)]).unwrap();
        // Map both first: the loop's passes then cost only their loads.
        k.gpu_read(GPU0, buf, 4);
        k.gpu_read(GPU0, flag, 4);
        let t0 = k.m.now_ns();
        let plan = AccessPlan {
            passes: 100,
            until: Some((flag, 1)),
            threads: 1,
            start_ns: 0,
            atomic: false,
        };
        let w =
            k.m.launch_access(k.pid, Some(GPU0), CpuVa::new(buf), 64 * 1024, None, plan)
                .unwrap();
        let (bytes, _) = k.m.wait(w).unwrap();
        assert_eq!(bytes, vec![1; 64 * 1024]);
        k.m.now_ns() - t0
    };
    let (once, all) = (took(true), took(false));
    assert!(all > 50 * once, "{all} ns vs {once} ns");
}

/// A launch may start its memory work later: each of its threads waits
/// `start_ns` first, so an access launched now lands after other work.
#[test]
fn a_launch_starts_its_accesses_after_its_delay() {
    use svm_sim::machine::AccessPlan;
    let mut k = Kfd::new(true);
    let buf = k.mmap(PAGE);
    let plan = AccessPlan {
        start_ns: 1_000_000,
        threads: 2,
        ..AccessPlan::ONCE
    };
    let w =
        k.m.launch_access(k.pid, None, CpuVa::new(buf), 8, Some(&[3; 8]), plan)
            .unwrap();
    // Untimed, nothing else costs time: the clock moves by the delay alone.
    k.m.wait(w).unwrap();
    assert_eq!(k.m.now_ns(), 1_000_000);
    assert_eq!(k.cpu_read(buf, 8), [3; 8]);
}

//! The run's configuration reaches what each knob names.

use svm_core::addr::CpuVa;
use svm_core::config::Config;
use svm_core::uapi::attr_type::{ACCESS, GRANULARITY};

use crate::support::*;

fn with(kv: &[&str]) -> Kfd {
    let mut c = Config::default();
    for s in kv {
        c.assign(s).unwrap();
    }
    let mut k = Kfd::new(true);
    k.m.set_config(&c).unwrap();
    k
}

#[test]
fn the_default_granularity_sizes_new_ranges_and_their_fault_windows() {
    let mut k = with(&["default_granularity=4"]);
    let buf = k.mmap(4 * MIB);
    k.set(buf, 4 * MIB, &[(ACCESS, GPU0)]).unwrap();
    assert_eq!(
        k.get(buf, PAGE, &[(GRANULARITY, 0)]).unwrap(),
        [(GRANULARITY, 4)]
    );
    k.gpu_read(GPU0, buf, 4);
    assert_eq!(k.vram_pages_in(buf, 4 * MIB), 16, "a 64 KiB window moved");
    // A fault on memory never registered makes a 16-page range.
    let raw = k.mmap(MIB);
    k.gpu_read(GPU0, raw + 17 * PAGE, 4);
    let r =
        k.m.process(k.pid)
            .svm
            .ranges()
            .find(CpuVa::new(raw + 17 * PAGE).page_num())
            .unwrap();
    assert_eq!(r.range().npages().raw(), 16);
}

#[test]
fn the_duplicate_window_and_the_gpu_retries_follow_the_config() {
    // Two windows of one range, one after the other: the second fault
    // falls in the first's 2 ms and is dropped, unless the window is 0.
    for (pending, retried) in [("2ms", true), ("0", false)] {
        let mut k = with(&[&format!("retry_fault_pending_ns={pending}")]);
        let buf = k.mmap(4 * MIB);
        k.set(buf, 4 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 4)])
            .unwrap();
        k.gpu_read(GPU0, buf, 4);
        let (_, st) =
            k.m.gpu_access(k.pid, GPU0, CpuVa::new(buf + MIB), 4, None)
                .unwrap();
        assert_eq!(st.retries > 0, retried, "pending {pending}: {st:?}");
    }
    // With every retry dropped and at most 3 retries, the wave gives up.
    let mut k = with(&["gpu_max_retries=3", "gpu_retry_delay_ns=1us"]);
    let buf = k.mmap(4 * MIB);
    k.set(buf, 4 * MIB, &[(ACCESS, GPU0), (GRANULARITY, 4)])
        .unwrap();
    k.gpu_read(GPU0, buf, 4);
    // The 2 ms window needs about 2000 retries 1 us apart: more than 3.
    let e =
        k.m.gpu_access(k.pid, GPU0, CpuVa::new(buf + MIB), 4, None)
            .unwrap_err();
    assert_eq!(e.errno(), svm_core::Errno::Ebusy, "{e}");
    assert!(e.to_string().contains("after 3 retries"), "{e}");
}

#[test]
fn a_bad_config_is_refused_and_changes_nothing() {
    let mut k = Kfd::new(true);
    let bad = Config {
        policy: "fastest".into(),
        ..Config::default()
    };
    assert!(k.m.set_config(&bad).is_err());
    assert_eq!(k.m.config(), &Config::default());
    assert_eq!(k.m.process(k.pid).svm.config(), &Config::default());
}

/// Pressure from outside SVM follows the run's victim policy, as the
/// engine's own allocations do: LRU takes the buffer used longest ago,
/// `largest` the biggest one.
#[test]
fn outside_pressure_evicts_in_the_victim_policy_s_order() {
    use svm_core::uapi::attr_type::PREFETCH_LOC;
    for (policy, small_stays) in [("lru", false), ("largest", true)] {
        let mut k = with(&[&format!("victim_policy={policy}")]);
        // An old small buffer, then a newer large one, both in GPU 0's VRAM.
        let small = k.mmap(2 * MIB);
        k.set(small, 2 * MIB, &[(PREFETCH_LOC, GPU0)]).unwrap();
        k.m.advance(1_000_000);
        let large = k.mmap(8 * MIB);
        k.set(large, 8 * MIB, &[(PREFETCH_LOC, GPU0)]).unwrap();
        assert_eq!(k.vram_pages_in(small, 2 * MIB), 512);
        assert_eq!(k.vram_pages_in(large, 8 * MIB), 2048);
        // Room for one page more than is free: one buffer must go.
        let free = k.m.gpus()[0].vram.buddy().free_pages();
        let evicted = k.m.evict_vram(GPU0, Some((free + 1) * PAGE)).unwrap();
        assert_eq!(evicted, 1, "{policy}");
        assert_eq!(
            k.vram_pages_in(small, 2 * MIB) == 512,
            small_stays,
            "{policy}: the small, older buffer"
        );
        assert_eq!(
            k.vram_pages_in(large, 8 * MIB) == 2048,
            !small_stays,
            "{policy}: the large, newer buffer"
        );
        k.check();
    }
}

//! Phantom data mode: no bytes kept, the memory system unchanged.

use svm_core::policy::Policy;
use svm_sim::check;
use svm_sim::timing::Profile;
use svm_workloads::Params;
use svm_workloads::experiments::phantom_first_touch;

/// A workload whose accesses do not depend on the data makes the same
/// faults, migrations, events and timing with and without bytes.
#[test]
fn phantom_mode_changes_no_decision_of_the_memory_system() {
    let p = Profile::built_in("mi250x").unwrap();
    for name in ["stream", "stencil2d", "ping-pong"] {
        let run = |phantom: bool| {
            let mut m = svm_workloads::machine(&p, 2, Some(64 << 20)).unwrap();
            if phantom {
                m.set_phantom();
            }
            m.set_policy(Policy::Partial);
            let pid = m.spawn("w");
            let w = svm_workloads::by_name(name).unwrap();
            let r = svm_workloads::run(&mut m, pid, w, &Params::default()).unwrap();
            check::check(&m).unwrap();
            let events = m.events().to_vec();
            (r.kernels, events, format!("{:?}", m.counters()), r.verified)
        };
        let (real, phantom) = (run(false), run(true));
        assert!(real.3, "{name}: real mode verifies");
        // (Phantom mode has no bytes to verify: its check answers yes
        // without comparing, and `svmsim` reports the run unchecked.)
        assert_eq!(
            (&real.0, &real.1, &real.2),
            (&phantom.0, &phantom.1, &phantom.2),
            "{name}"
        );
    }
}

/// A first touch of 4 GiB over eight MI300X-class GPUs keeps no bytes.
#[test]
fn phantom_first_touch_over_eight_gpus() {
    let p = Profile::built_in("mi300x").unwrap();
    let r = phantom_first_touch(&p, 4 << 30, 8).unwrap();
    assert_eq!(r.pages, (4u64 << 30) / 4096);
    assert_eq!(r.pages_in_vram, r.pages);
    assert!(r.faults >= r.pages / 512 && r.kernel_ns > 0, "{r:?}");
}

//! `svmsim compare`: what differed between runs of one workload (drivers,
//! policies, granularities, XNACK modes), and why, in lines that quote the
//! numbers.
//!
//! Each run is measured against the baseline (the first run, unless
//! `--baseline` says otherwise). A line says what the run's policy does
//! (its registry entry), then where its numbers part from the baseline's
//! and the mechanism behind each difference: fewer faults because faults
//! are read and served in batches a 2 MiB block at a time, more bytes
//! because a prefetch moved pages no access asked for, a different machine
//! because each driver brought its own profile family.

use std::fmt::Write as _;

use crate::exec::{Outcome, Status, load_profile};
use crate::runs::time;
use crate::size;

/// A ratio as the table shows it.
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

/// What `o`'s policy does, from the registry.
fn about(o: &Outcome) -> &'static str {
    svm_core::policy::lookup(o.spec.policy()).map_or("", |e| e.about)
}

/// The profile costs on which two runs' machines differ, as
/// `name: a against b`.
fn machine_differences(o: &Outcome, base: &Outcome) -> Vec<String> {
    let (Ok(p), Ok(q)) = (
        load_profile(&o.spec.profile),
        load_profile(&base.spec.profile),
    ) else {
        return Vec::new();
    };
    let (t, u) = (&p.timing, &q.timing);
    let mut v = Vec::new();
    if t.host_link.bytes_per_ns != u.host_link.bytes_per_ns {
        v.push(format!(
            "host link {:.0} GB/s against {:.0}",
            t.host_link.bytes_per_ns, u.host_link.bytes_per_ns
        ));
    }
    if t.fault_batch != u.fault_batch {
        v.push(format!(
            "up to {} faults a batch against {}",
            t.fault_batch, u.fault_batch
        ));
    }
    let handler = |t: &svm_sim::timing::Timing| t.handler_batch_ns + t.handler_fixed_ns;
    if handler(t) != handler(u) {
        v.push(format!(
            "{:.0} µs of handler cost a batch or fault against {:.0}",
            handler(t) / 1e3,
            handler(u) / 1e3
        ));
    }
    if t.migrate_page_ns != u.migrate_page_ns {
        v.push(format!(
            "{:.1} µs of software a migrated page against {:.1}",
            t.migrate_page_ns / 1e3,
            u.migrate_page_ns / 1e3
        ));
    }
    v
}

/// The explanation of a driver comparison, `baseline` being the index of
/// the run the ratios divide by.
pub fn explain(outs: &[Outcome], baseline: usize) -> String {
    let mut s = String::from("What differed, and why:\n");
    let Some(base) = outs.get(baseline) else {
        return s;
    };
    if outs
        .iter()
        .any(|o| o.status != Status::Ok && o.status != Status::Unchecked)
    {
        s += "  Some runs did not finish cleanly: see the status column.\n";
    }
    let bm = &base.metrics;
    let _ = writeln!(
        s,
        "  - {} (the baseline): {}. {} faults, {} migrated, first result after {}.",
        base.label,
        about(base),
        bm.faults,
        size::human(bm.migrated_bytes),
        time(bm.first_result_ns)
    );
    for (i, o) in outs.iter().enumerate() {
        if i == baseline {
            continue;
        }
        let m = &o.metrics;
        let _ = writeln!(
            s,
            "  - {}: {}. Its kernels took {} the baseline's time ({} against {}).",
            o.label,
            about(o),
            crate::runs::show_ratio(ratio(m.kernel_ns, bm.kernel_ns)),
            time(m.kernel_ns),
            time(bm.kernel_ns)
        );
        if m.faults * 2 <= bm.faults {
            let why = svm_core::policy::lookup(o.spec.policy())
                .map_or(svm_core::policy::MOVED_MORE, |e| e.fewer_faults);
            let _ = writeln!(
                s,
                "    It took {} faults against {} ({:.0}x fewer): {why}.",
                m.faults,
                bm.faults,
                ratio(bm.faults, m.faults)
            );
        } else if m.faults >= bm.faults * 2 {
            let _ = writeln!(
                s,
                "    It took {} faults against {} ({:.1}x more): each served less of the range.",
                m.faults,
                bm.faults,
                ratio(m.faults, bm.faults)
            );
        }
        let moved = ratio(m.migrated_bytes, bm.migrated_bytes);
        if !(0.9..=1.1).contains(&moved) {
            let why = if moved > 1.0 {
                "it moved pages no access had asked for yet (a prefetch), or moved pages back \
                 and forth"
            } else {
                "it left pages where they were and mapped them remotely, or moved only what \
                 was touched"
            };
            let _ = writeln!(
                s,
                "    It migrated {} against {} ({}): {why}.",
                size::human(m.migrated_bytes),
                size::human(bm.migrated_bytes),
                crate::runs::show_ratio(moved)
            );
        }
        if m.first_result_ns != bm.first_result_ns {
            let _ = writeln!(
                s,
                "    Its first result came after {} against {}, the fault latency's median was {} \
                 against {}.",
                time(m.first_result_ns),
                time(bm.first_result_ns),
                time(m.fault_p50_ns),
                time(bm.fault_p50_ns)
            );
        }
        let count = |k: &str| o.policy_counters.get(k).copied().unwrap_or(0);
        let (throttled, pinned) = (count("throttled_faults"), count("pinned_faults"));
        let cpu = count("throttled_cpu_faults");
        if throttled + pinned + cpu > 0 {
            let _ = writeln!(
                s,
                "    Its thrashing mitigation throttled {throttled} GPU faults and {cpu} CPU \
                 faults (each waited out a 0.5 ms nap, the CPU's asleep) and served {pinned} \
                 with their page pinned, mapped where it was pinned rather than moved again."
            );
        }
        let (copied, dropped) = (
            count("read_duplicated_pages"),
            count("read_duplicates_dropped"),
        );
        if copied > 0 {
            let _ = writeln!(
                s,
                "    It served reads of read-mostly memory with read-only copies: {copied} pages \
                 copied to the GPUs that read them, their masters left in place; {dropped} \
                 copies dropped again (a write, an unmap, or VRAM wanted)."
            );
        }
        let (notices, hot) = (
            count("access_counter_notices"),
            count("access_counter_pages"),
        );
        if notices > 0 {
            let _ = writeln!(
                s,
                "    Its access counters called {notices} 2 MiB regions hot and moved {hot} \
                 pages the GPU had been reading remotely."
            );
        }
        if m.atomic_faults != bm.atomic_faults {
            let _ = writeln!(
                s,
                "    {} of its {} atomics faulted, against {} of {}. Under uvm and xe an \
                 atomic's fault moves its pages into the faulting GPU's VRAM, and a GPU whose \
                 atomics reach only its own VRAM (Xe's and NVIDIA's on PCIe) faults wherever \
                 else they are mapped; the CPU's next touch takes them back.",
                m.atomic_faults, m.atomics, bm.atomic_faults, bm.atomics
            );
        }
        if m.cpu_timeslice_wait_ns > 0 {
            let _ = writeln!(
                s,
                "    Its CPU faults waited {} in all for Xe's atomic timeslice: pages an atomic \
                 forced into VRAM stay there {} against the CPU (xe_atomic_timeslice_ns).",
                time(m.cpu_timeslice_wait_ns),
                time(o.spec.config.xe_atomic_timeslice_ns)
            );
        }
        if m.queue_evictions != bm.queue_evictions {
            let _ = writeln!(
                s,
                "    It stopped the queues {} times against {}.",
                m.queue_evictions, bm.queue_evictions
            );
        }
        if o.spec.profile != base.spec.profile {
            let diff = machine_differences(o, base);
            let _ = writeln!(
                s,
                "    It ran on its driver's machine, {}, not {}{}{}: part of the difference is \
                 the hardware's. Give --profile NAME to run every driver on one machine.",
                o.spec.profile,
                base.spec.profile,
                if diff.is_empty() { "" } else { ": " },
                diff.join(", ")
            );
        }
    }
    s
}

//! The built-in demo (`svmsim run` with no workload): the partial-migration
//! review's situation. Two GPUs with XNACK on share one buffer the CPU
//! filled; GPU 0 updates its first half, then GPU 1 the middle half. The
//! three fault policies run it, and the explanation says what differed.

use std::fmt::Write as _;

use crate::exec::{Outcome, RunSpec, Status};
use crate::runs::time;
use crate::size;

/// The demo's runs: the same spec under each policy, whole-range first
/// (the baseline: kfd before the 2023 change).
pub fn specs(seed: u64) -> Vec<RunSpec> {
    svm_core::policy::Policy::ALL
        .iter()
        .map(|p| RunSpec {
            workload: "shared-buffer".into(),
            size: 64 << 20,
            iters: 1,
            profile: "mi250x".into(),
            gpus: Some(2),
            policy: p.name().into(),
            seed,
            ..RunSpec::default()
        })
        .collect()
}

fn by<'a>(outs: &'a [Outcome], policy: &str) -> Option<&'a Outcome> {
    outs.iter().find(|o| o.spec.policy == policy)
}

/// What differed between the demo's runs, and why, in a few lines that
/// quote the numbers.
pub fn explain(outs: &[Outcome]) -> String {
    let mut s = String::from("What differed, and why:\n");
    let (Some(whole), Some(part), Some(wmap)) = (
        by(outs, "whole-range"),
        by(outs, "partial"),
        by(outs, "partial-migrate-whole-map"),
    ) else {
        return s + "  (the demo needs all three policies)\n";
    };
    if outs.iter().any(|o| o.status != Status::Ok) {
        s += "  Some runs did not finish cleanly: see the status column.\n";
    }
    let buf = size::show(whole.spec.size);
    let _ = writeln!(
        s,
        "  - whole-range (kfd before 2023): GPU 0's first fault moved the whole {buf} range to its \
         VRAM before the first wave could go on (first result after {}); GPU 1's faults then pulled \
         it all across again, and the CPU's read-back brought it home: {} migrated in all.",
        time(whole.metrics.first_result_ns),
        size::show(whole.metrics.migrated_bytes)
    );
    let faster = whole.metrics.first_result_ns as f64 / part.metrics.first_result_ns.max(1) as f64;
    let _ = writeln!(
        s,
        "  - partial (kfd since 2024): each fault moved only the 2MiB window around it, so the first \
         result came after {} ({faster:.0}x sooner) and only the touched windows moved: {} in all, \
         over {} faults against {}.",
        time(part.metrics.first_result_ns),
        size::show(part.metrics.migrated_bytes),
        part.metrics.faults,
        whole.metrics.faults
    );
    if part.metrics.kernel_ns > whole.metrics.kernel_ns {
        let _ = writeln!(
            s,
            "    Its kernels took longer in all ({} against {}): it served {} faults to \
             whole-range's {}, and each paid delivery, the handler and a mapping of its own.",
            time(part.metrics.kernel_ns),
            time(whole.metrics.kernel_ns),
            part.metrics.faults,
            whole.metrics.faults
        );
    }
    let _ = writeln!(
        s,
        "  - partial-migrate-whole-map (the reverted v4): windows migrate, but the whole range is \
         mapped at once, so untouched pages are mapped in system memory and never fault again: {} \
         migrated, {} faults.",
        size::show(wmap.metrics.migrated_bytes),
        wmap.metrics.faults
    );
    let stale: Vec<String> = outs
        .iter()
        .map(|o| {
            let n: u64 = o.gpu_end.iter().map(|g| g.stale_dma_pages).sum();
            format!("{} {n}", o.spec.policy)
        })
        .collect();
    let _ = writeln!(
        s,
        "  - Stale DMA entries at the end: a GPU's entries that no longer point at their page (a \
         system mapping of a page since moved to VRAM, or a VRAM address of a page since moved \
         away). kfd keeps them until that GPU faults on the page again, as the review thread \
         noted: {}.",
        stale.join(", ")
    );
    s += "\nTry next:\n\
          \x20 svmsim run shared-buffer --gpus 2 --profile mi250x --timeline t.json   # open t.json in ui.perfetto.dev\n\
          \x20 svmsim run --report report/                                          # the demo as an HTML report with plots\n\
          \x20 svmsim compare stream --size 256MiB --granularities 0,9             # one workload, policies x granularities\n\
          \x20 svmsim workloads; svmsim profiles                                    # what else is built in\n";
    s
}

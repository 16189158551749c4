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
            config: svm_core::config::Config {
                policy: p.name().into(),
                ..Default::default()
            },
            seed,
            ..RunSpec::default()
        })
        .collect()
}

fn by<'a>(outs: &'a [Outcome], policy: &str) -> Option<&'a Outcome> {
    outs.iter().find(|o| o.spec.policy() == policy)
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
        size::human(whole.metrics.migrated_bytes)
    );
    let faster = whole.metrics.first_result_ns as f64 / part.metrics.first_result_ns.max(1) as f64;
    let _ = writeln!(
        s,
        "  - partial (kfd since the November 2023 re-land): each fault moved only the 2MiB window \
         around it, so the first result came after {} ({faster:.0}x sooner). Only windows a GPU \
         touched moved, but the middle half crossed twice (GPU 0 to system memory, then to GPU 1: \
         VRAM to VRAM goes through RAM), and the read-back brought it home: {} in all, over {} \
         faults against {}.",
        time(part.metrics.first_result_ns),
        size::human(part.metrics.migrated_bytes),
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
        "  - partial-migrate-whole-map (the October 2023 patch, reverted): the first fault migrates \
         its window but maps the whole range, so every other page is mapped where it is, in system \
         memory, and GPU accesses there never fault again and never migrate: only {} moved, over \
         {} faults, and most accesses went over the link.",
        size::human(wmap.metrics.migrated_bytes),
        wmap.metrics.faults
    );
    let stale: Vec<String> = outs
        .iter()
        .map(|o| {
            let n: u64 = o.gpu_end.iter().map(|g| g.stale_dma_pages).sum();
            format!("{} {n}", o.spec.policy())
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
          \x20 svmsim run --report report/        # this demo as an HTML report with plots\n\
          \x20 svmsim run --timeline t.json      # its timeline: open t.json in ui.perfetto.dev\n\
          \x20 svmsim run shared-buffer --size 64MiB --iters 1 --policy whole-range --xnack off\n\
          \x20 \x20                                # one run of it, any setting changed\n\
          \x20 svmsim compare stream --size 16MiB --granularities 0,9   # policies x granularities\n\
          \x20 svmsim workloads; svmsim profiles  # what else is built in\n";
    s
}

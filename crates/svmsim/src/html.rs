//! The HTML report (`--report DIR`): one self-contained page, with the
//! configuration, the results table, every plot inline as SVG, the
//! invariant-check summary and the commands that repeat each run. No
//! script, no external asset: it opens offline, from a mail attachment.

use std::fmt::Write as _;
use std::path::Path;

use crate::exec::{Outcome, Status};
use crate::{plots, runs, series, size};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A figure: (id, title, what to read in it, SVG).
pub type Figure = (String, String, &'static str, String);

/// Plots of `outs`, leaving out any with nothing to draw (no page moved,
/// no fault served: an XNACK-off run, or results merged from shards).
///
/// # Errors
/// A plot that could not be drawn.
pub fn figures(outs: &[Outcome]) -> Result<Vec<Figure>, String> {
    let refs: Vec<&Outcome> = outs.iter().filter(|o| o.timeline.is_some()).collect();
    let moved = refs.iter().any(|o| {
        o.timeline.as_ref().is_some_and(|t| {
            t.moves
                .iter()
                .any(|m| m.to != svm_sim::machine::timeline::Place::Gone)
        })
    });
    let faulted = refs.iter().any(|o| !o.fault_latencies.is_empty());
    let mut f = Vec::new();
    if moved {
        f.push((
            "migrated".to_string(),
            "Migrated bytes over time".to_string(),
            "Steps are migrations. A policy that moves whole ranges climbs in a few tall steps; a partial one climbs window by window, and stops at what was touched.",
            plots::migrated(&refs)?,
        ));
    }
    if faulted {
        f.push((
            "latency-cdf".to_string(),
            "Fault latency (CDF)".to_string(),
            "How long faults waited, from the wave raising them to the handler finishing. Curves to the left are better; a long tail is faults queued behind big migrations or a held lock.",
            plots::latency_cdf(&refs)?,
        ));
    }
    if refs.iter().any(|o| {
        o.timeline
            .as_ref()
            .is_some_and(|t| t.vram.iter().any(|v| v.used_bytes > 0))
    }) {
        f.push((
            "vram".to_string(),
            "Resident in VRAM over time".to_string(),
            "Pages of the process resident in each GPU's VRAM, with that GPU's VRAM size dashed in the same colour. Residency pressed against the dashed line means eviction is running; a saw-tooth below it is pages moving back and forth.",
            plots::vram(&refs)?,
        ));
    }
    // One frame for every map: the same address origin, height and time.
    let frame = series::common_extent(refs.iter().filter_map(|o| o.timeline.as_ref()));
    for (i, o) in outs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.timeline.is_some())
    {
        if let Some(svg) = plots::residency(o, frame)? {
            f.push((
                format!("residency-{i}"),
                format!("Residency map: {}", o.label.clone()),
                "Address (up) against time (right), coloured by where most pages of each band were: grey is system memory, colours are GPUs' VRAM, white is unmapped. Every run's map has the same axes.",
                svg,
            ));
        }
    }
    // A metric against each setting the runs differ in: from the numbers
    // alone, so merged shards get them too.
    for (axis, svg) in plots::by_parameter(outs)? {
        let id: String = axis
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        f.push((
            format!("by-{id}"),
            format!("Kernel time by {axis}"),
            "Each run's kernel time against this setting, one line per combination of the other settings (small multiples when there are more than eight). The y axis is log when the times span a hundredfold or more.",
            svg,
        ));
    }
    Ok(f)
}

/// Whether a file of this name is one a report writes.
pub fn writes(name: &str) -> bool {
    name == "index.html" || name.ends_with(".svg")
}

/// Stages `DIR/index.html` and each plot as `DIR/NAME.svg` (written when
/// the command commits its outputs); returns the page's path.
///
/// # Errors
/// A plot that could not be drawn.
pub fn stage(
    dir: &Path,
    title: &str,
    outs: &[Outcome],
    baseline: usize,
    out: &mut crate::output::Staged,
) -> Result<std::path::PathBuf, String> {
    let figs = figures(outs)?;
    for (id, _, _, svg) in &figs {
        out.file(&dir.join(format!("{id}.svg")), svg.clone().into_bytes());
    }
    let p = dir.join("index.html");
    out.file(&p, page(title, outs, baseline, &figs).into_bytes());
    Ok(p)
}

fn page(
    title: &str,
    outs: &[Outcome],
    baseline: usize,
    figs: &[(String, String, &'static str, String)],
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{CSS}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    h += "<p class=\"lead\">svmsim: an executable model of amdkfd shared virtual memory. \
          Times are simulated; every run repeats from its seed with the command shown.</p>\n";
    // Contents: every section, and every plot under its own.
    h += "<nav class=\"toc\"><b>Contents</b><ol>\
          <li><a href=\"#configuration\">Configuration</a></li>\
          <li><a href=\"#results\">Results</a></li>\
          <li><a href=\"#what-happened\">What happened</a></li>\
          <li><a href=\"#plots\">Plots</a>";
    if !figs.is_empty() {
        h += "<ol>";
        for (id, title, _, _) in figs {
            let _ = write!(h, "<li><a href=\"#plot-{id}\">{}</a></li>", esc(title));
        }
        h += "</ol>";
    }
    if outs.iter().any(|o| o.against.is_some()) {
        h += "</li><li><a href=\"#against\">Real against simulated</a>";
    }
    h += "</li><li><a href=\"#invariants\">Invariant checks</a></li>\
          <li><a href=\"#repro\">Repeat a run</a></li></ol></nav>\n";
    // Configuration.
    h += "<h2 id=\"configuration\">Configuration</h2>\n<table><tr><th>run</th><th>workload</th><th>size</th>\
          <th>iterations</th><th>profile</th><th>GPUs</th><th>policy</th><th>granularity</th><th>XNACK</th>\
          <th>oversubscription</th><th>seed</th><th>other knobs</th></tr>\n";
    for o in outs {
        let s = &o.spec;
        let label = &o.label;
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(label),
            esc(&s.workload),
            size::show(s.size),
            s.iters,
            esc(&s.profile),
            o.gpus,
            esc(s.policy()),
            s.granularity
                .map_or("workload's (default 9)".into(), |g| g.to_string()),
            if s.xnack { "on" } else { "off" },
            s.oversubscribe
                .map_or("-".into(), |f| format!("{:.0}%", f * 100.0)),
            s.seed,
            {
                // What `svmsim config` would show as set, so the page
                // says every knob the run differs in.
                let changes = s.config_changes();
                if changes.is_empty() {
                    "defaults".to_owned()
                } else {
                    esc(&changes.join(", "))
                }
            }
        );
    }
    h += "</table>\n";
    // Results.
    let base = outs.get(baseline).map_or(0, |o| o.metrics.kernel_ns);
    h += "<h2 id=\"results\">Results</h2>\n<table><tr><th>run</th><th>status</th><th>kernel time</th>\
          <th>vs base</th><th>first result</th><th>faults</th><th>migrated</th><th>fault p50</th>\
          <th>fault p99</th><th>lock wait</th><th>copy busy</th><th>stale DMA</th></tr>\n";
    for (i, o) in outs.iter().enumerate() {
        let m = &o.metrics;
        let (cls, st) = match &o.status {
            Status::Ok => ("ok", "ok".to_string()),
            Status::Mismatch => ("bad", "result mismatch".to_string()),
            Status::Unchecked => ("ok", "ok, data unchecked (phantom)".to_string()),
            Status::Killed { error } => ("bad", format!("killed: {error}")),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}{}</td><td class=\"{cls}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} pages</td></tr>",
            esc(&o.label.clone()),
            if i == baseline && outs.len() > 1 {
                " (base)"
            } else {
                ""
            },
            esc(&st),
            runs::time(m.kernel_ns),
            if base > 0 {
                runs::ratio(m.kernel_ns, base)
            } else {
                "-".into()
            },
            runs::time(m.first_result_ns),
            m.faults,
            size::human(m.migrated_bytes),
            runs::time(m.fault_p50_ns),
            runs::time(m.fault_p99_ns),
            runs::time(m.svms_lock_wait_ns + m.migrate_lock_wait_ns),
            runs::time(m.copy_busy_ns),
            o.gpu_end.iter().map(|g| g.stale_dma_pages).sum::<u64>()
        );
    }
    h += "</table>\n<p class=\"note\">Kernel time runs from the first launch to the last wave. \
          First result is when the first wave of the first kernel ended. Lock wait is time faults spent \
          waiting for the process's <code>svms-&gt;lock</code> and for ranges' migrate locks. Stale DMA counts \
          a GPU's DMA entries that no longer point at their page (a system mapping of a page since moved to VRAM, \
          or a VRAM address of a page since moved away); kfd keeps them until that GPU faults on the page again.</p>\n";
    // What happened: each run's explanation (`crate::explain`).
    h += "<h2 id=\"what-happened\">What happened</h2>\n";
    for o in outs {
        let _ = writeln!(h, "<h3>{}</h3>\n<ul>", esc(&o.label));
        for l in crate::explain::run(o) {
            let _ = writeln!(h, "<li>{}</li>", esc(&l));
        }
        h += "</ul>\n";
    }
    // Real against simulated (`replay --against`).
    if outs.iter().any(|o| o.against.is_some()) {
        h += "<h2 id=\"against\">Real against simulated</h2>\n";
    }
    for o in outs {
        let Some(a) = &o.against else { continue };
        let _ = writeln!(
            h,
            "<h3>{} against {}</h3>\n<table><tr><th></th><th>real</th><th>svmsim</th><th>ratio</th>\
             <th>expect</th></tr>",
            esc(&o.label),
            esc(&a.source)
        );
        for r in &a.rows {
            let off = r.expect == crate::against::Expect::Carried && r.real != r.simulated;
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td></tr>",
                esc(&r.what),
                r.show(r.real),
                r.show(r.simulated),
                if off { " class=\"bad\"" } else { "" },
                r.ratio_text(),
                esc(r.expect.word())
            );
        }
        h += "</table>\n<p class=\"note\">Rows marked <i>equal</i> the trace carries (prefetches, CPU \
              faults, munmaps): they must come back. The engine's rows match when the replay runs the \
              real run's driver, granularity and XNACK mode on a machine like the real one. Times are \
              what a profile is calibrated by. Evictions, notifier unmaps and dropped events come from \
              what the messages do not say (other processes, the kernel's event buffer).</p>\n";
    }
    // Plots.
    h += "<h2 id=\"plots\">Plots</h2>\n";
    if outs.iter().all(|o| o.timeline.is_none()) {
        h += "<p class=\"note\">These results were merged from shard files, which keep numbers \
              only: the plots below are drawn from them. For the plots over time (migrations, fault \
              latency, residency), pass <code>--report</code> to <code>svmsim sweep</code> itself.</p>\n";
    } else if figs.is_empty() {
        h += "<p class=\"note\">No plots: no page moved and no fault was served in these runs \
              (with XNACK off and no prefetch, data stays in system memory).</p>\n";
    }
    for (id, title, how, svg) in figs {
        let _ = writeln!(
            h,
            "<figure class=\"plot\" id=\"plot-{id}\"><figcaption><b>{}</b>: {}</figcaption>{}</figure>",
            esc(title),
            esc(how),
            svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
                .trim()
        );
    }
    // Invariants.
    h += "<h2 id=\"invariants\">Invariant checks</h2>\n<ul>\n";
    for o in outs {
        match &o.violation {
            None => {
                let _ = writeln!(
                    h,
                    "<li class=\"ok\">{}: every checker held at the end of the run.</li>",
                    esc(&o.label.clone())
                );
            }
            Some(v) => {
                let _ = writeln!(
                    h,
                    "<li class=\"bad\">{}: {}</li>",
                    esc(&o.label.clone()),
                    esc(v)
                );
            }
        }
    }
    h += "</ul>\n<h2 id=\"repro\">Repeat a run</h2>\n<pre>";
    for o in outs {
        h += &esc(&o.spec.repro());
        h.push('\n');
    }
    h += "</pre>\n</body></html>\n";
    h
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}\
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}\
.ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}.note,.lead{color:#555}\
nav.toc{background:#f6f6f6;padding:.6em 1em;margin:1em 0}nav.toc ol{margin:.2em 0}\
figure{margin:1.2em 0}figcaption{margin-bottom:.4em}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}";

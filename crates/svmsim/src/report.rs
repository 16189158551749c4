//! Printing a run: tables for people, JSON for programs.
//!
//! The text form is an op log followed by the final range table of every
//! process; the JSON form is [`crate::scenario::RunReport`] serialized, with
//! the schema documented in `docs/scenario-json.md`. Both are pure functions
//! of the report, so the same run prints the same bytes.

use std::fmt::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

use crate::scenario::run::{OpResult, RunReport, size_text};

/// Columns of the text tables.
const WIDTH: u16 = 150;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    // A fixed width, not the terminal's: the same run must print the same bytes.
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_width(WIDTH);
    t.set_header(header.to_vec());
    t
}

/// The report as text: header, op log, final ranges and the verdict.
pub fn text(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario {} ({})", r.name, r.file);
    if !r.description.is_empty() {
        for line in r.description.trim().lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let gpus: Vec<String> = r
        .system
        .gpus
        .iter()
        .map(|g| {
            let mut caps = vec![size_text(g.vram_bytes)];
            caps.push(if g.svm { "svm".into() } else { "no-svm".into() });
            caps.push(if g.xnack {
                "xnack".into()
            } else {
                "no-xnack".into()
            });
            if let Some(h) = g.hive {
                caps.push(format!("hive {h}"));
            }
            caps.push(format!("GC {}", g.gc));
            let id = u32::from_str_radix(g.id.trim_start_matches("0x"), 16).unwrap_or(0);
            format!(
                "{} \"{}\" ({})",
                crate::exec::gpu_name(g.node, id),
                g.name,
                caps.join(", ")
            )
        })
        .collect();
    let _ = writeln!(out, "system: {}", gpus.join("; "));
    let _ = writeln!(
        out,
        "        boot xnack {}, max range {} ({} pages), memory limit {} of {}",
        if r.system.xnack_default { "on" } else { "off" },
        size_text(r.system.max_svm_range_pages * 4096),
        r.system.max_svm_range_pages,
        size_text(r.system.mem_limit.limit_bytes),
        size_text(r.system.sysmem_bytes),
    );

    let mut ops = table(&["#", "line", "proc", "op", "arguments", "result", "expect"]);
    for o in &r.ops {
        let mut result = match &o.result {
            OpResult::Ok => "ok".to_string(),
            // A fatal fault says where, on which GPU, and why.
            OpResult::Error { errno, message, .. } if o.op.ends_with("_access") => {
                format!("{errno}: {message}")
            }
            OpResult::Error { errno, .. } => errno.clone(),
        };
        if let Some(a) = &o.addr {
            let _ = write!(result, " {a}");
        }
        if let Some(a) = o.access
            && a.faults > 0
        {
            let _ = write!(result, " ({} faults, {} retries)", a.faults, a.retries);
        }
        if let Some(x) = o.xnack {
            let _ = write!(result, " xnack={}", if x { "on" } else { "off" });
        }
        if let Some(vals) = &o.values {
            for v in vals {
                match &v.gpu {
                    Some(g) => {
                        let _ = write!(result, "\n{}({g})={}", v.attr, v.text);
                    }
                    None => {
                        let _ = write!(result, "\n{}={}", v.attr, v.text);
                    }
                }
            }
        }
        let expect = match (&o.expect, &o.mismatch) {
            (_, Some(m)) => format!("MISMATCH: {m}"),
            (Some(e), None) => format!("{e} ✓"),
            (None, None) => String::new(),
        };
        ops.add_row(vec![
            o.index.to_string(),
            o.line.to_string(),
            o.process.clone(),
            o.op.to_string(),
            o.args.clone(),
            result,
            expect,
        ]);
    }
    let _ = writeln!(out, "\noperations:\n{ops}");

    for p in &r.processes {
        let _ = writeln!(
            out,
            "\nranges of {} (xnack {}, {} VMA(s), queues: {}):",
            p.name,
            if p.xnack { "on" } else { "off" },
            p.vmas.len(),
            if p.queues.is_empty() {
                "none".to_string()
            } else {
                p.queues.join(", ")
            }
        );
        if p.ranges.is_empty() {
            let _ = writeln!(out, "  (no SVM ranges)");
            continue;
        }
        let mut t = table(&[
            "address",
            "size",
            "preferred",
            "prefetch",
            "access",
            "in place",
            "flags",
            "gran",
            "mapped",
            "where (pages)",
            "pte/dma/stale",
        ]);
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                // (A GPU's name has spaces: one a line.)
                v.join("\n")
            }
        };
        for g in &p.ranges {
            t.add_row(vec![
                g.start_addr.clone(),
                size_text(g.size_bytes),
                g.preferred_loc.clone(),
                g.prefetch_loc.clone(),
                list(&g.access),
                list(&g.access_in_place),
                g.flags.clone(),
                g.granularity.to_string(),
                if g.mapped_to_gpu {
                    "yes".into()
                } else {
                    "no".into()
                },
                g.residency
                    .iter()
                    .map(|r| format!("{}:{}", r.loc, r.npages))
                    .collect::<Vec<_>>()
                    .join(" "),
                g.gpus
                    .iter()
                    .filter(|x| x.ptes + x.dma > 0)
                    .map(|x| format!("{} {}/{}/{}", x.gpu, x.ptes, x.dma, x.stale))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ]);
        }
        let _ = writeln!(out, "{t}");
        let busy: Vec<String> = p
            .stats
            .iter()
            .filter(|g| g.stats.faults + g.stats.page_in + g.stats.page_out > 0)
            .map(|g| {
                format!(
                    "{}: {} faults, {} pages in, {} out",
                    g.gpu, g.stats.faults, g.stats.page_in, g.stats.page_out
                )
            })
            .collect();
        if !busy.is_empty() {
            let _ = writeln!(out, "  {}", busy.join("; "));
        }
        // What happened to its buffers (the runs' explanation's lines).
        for l in crate::explain::buffers(&p.buffers, &|id| r.gpu_name(id)) {
            let _ = writeln!(out, "  {l}");
        }
    }

    let c = &r.counters;
    let _ = writeln!(
        out,
        "\nhardware ({} policy): {} pages to VRAM ({} zero-filled), {} to RAM, {} faulted in; {} DMA maps, {} unmaps; {} PTEs written, {} cleared; TLB flushes {} legacy, {} heavyweight; {} SMI events",
        r.policy,
        c.pages_to_vram,
        c.pages_zero_filled,
        c.pages_to_ram,
        c.pages_faulted_in,
        c.dma_maps,
        c.dma_unmaps,
        c.ptes_written,
        c.ptes_cleared,
        c.tlb_flush_legacy,
        c.tlb_flush_heavyweight,
        r.events.len()
    );
    if !r.evictions.is_empty() {
        let mut t = table(&[
            "GPU",
            "evicted by",
            "victim",
            "buffers",
            "pages back",
            "time",
        ]);
        for e in &r.evictions {
            t.add_row(vec![
                e.gpu.clone(),
                e.by.clone(),
                e.victim.clone(),
                e.buffers.to_string(),
                e.pages.to_string(),
                format!("{:.3} ms", e.ns as f64 / 1e6),
            ]);
        }
        let _ = writeln!(out, "VRAM evictions (who evicted whom):\n{t}");
    }
    if let Some(p) = &r.profile {
        let _ = writeln!(
            out,
            "timing: {p} profile, {:.3} ms simulated",
            r.end_ns as f64 / 1e6
        );
        let ms = |ns: u64| ns as f64 / 1e6;
        if c.migrate_lock_wait_ns + c.svms_lock_wait_ns + c.copy_wait_ns > 0 {
            let _ = writeln!(
                out,
                "waits (summed over every waiter): ranges' migrate locks {:.3} ms, svms locks {:.3} ms, copy rings {:.3} ms",
                ms(c.migrate_lock_wait_ns),
                ms(c.svms_lock_wait_ns),
                ms(c.copy_wait_ns)
            );
        }
    }
    match r.seed {
        Some(seed) => {
            let _ = writeln!(
                out,
                "scheduler: seeded order, seed {seed} (replay: svmsim scenario {} --seed {seed})",
                r.file
            );
        }
        None => {
            let _ = writeln!(out, "scheduler: eager order (kernel work runs at once)");
        }
    }
    let (lines, next) = crate::explain::scenario(r);
    let _ = writeln!(out, "\nWhat happened:");
    for l in lines {
        let _ = writeln!(out, "  {l}");
    }
    let _ = writeln!(out, "Try next:\n  {next}");
    if !r.injection.is_empty() {
        let _ = write!(out, "\n{}", crate::inject::coverage_table(&r.injection));
    }
    let expected = r.ops.iter().filter(|o| o.expect.is_some()).count();
    if let Some(v) = &r.violation {
        let _ = writeln!(out, "\nFAILED: {v}");
    } else if r.mismatches > 0 {
        let _ = writeln!(
            out,
            "\nFAILED: {} of {expected} expectation(s) did not hold:",
            r.mismatches
        );
        for o in r.ops.iter().filter(|o| o.mismatch.is_some()) {
            let _ = writeln!(
                out,
                "  op {} ({}, line {}): {}",
                o.index,
                o.op,
                o.line,
                o.mismatch.as_deref().unwrap_or_default()
            );
        }
    } else {
        let checked = if r.checked_ops == r.ops.len() {
            "after every op".to_owned()
        } else {
            format!(
                "after {} of them (linear schedule; --check-every-op checks after each)",
                r.checked_ops
            )
        };
        let _ = writeln!(
            out,
            "\nPASSED: {} op(s), {expected} expectation(s) held, invariants checked {checked}",
            r.ops.len()
        );
    }
    out
}

/// The report as pretty JSON.
///
/// # Panics
/// Never in practice: the report holds only strings, numbers and booleans.
pub fn json(r: &RunReport) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("a run report always serializes");
    s.push('\n');
    s
}

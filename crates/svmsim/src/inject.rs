//! Failure injection on the command line: `svmsim inject-sites` and the
//! coverage table a run with `--inject` prints.
//!
//! The sites, their kernel functions and responses are the engine's
//! (`svm_core::inject`); the counts are the simulator's
//! (`svm_sim::inject`). This module only lays them out.

use comfy_table::{Cell, CellAlignment, Table, presets};
use serde::Serialize;
use svm_core::inject::{Response, Site};
use svm_sim::inject::SiteCoverage;

/// One line of `svmsim inject-sites --json`.
#[derive(Debug, Serialize)]
struct SiteLine {
    site: &'static str,
    function: &'static str,
    errno: Option<&'static str>,
    source: &'static str,
    response: &'static str,
}

/// Every site with its kernel function, default errno and the kernel's
/// response, as a table, or as JSON.
pub fn sites(json: bool) -> String {
    if json {
        let lines: Vec<SiteLine> = Site::ALL
            .iter()
            .map(|s| {
                let i = s.info();
                SiteLine {
                    site: i.name,
                    function: i.function,
                    errno: i.errno.map(svm_core::Errno::name),
                    source: i.source,
                    response: i.response,
                }
            })
            .collect();
        return serde_json::to_string_pretty(&lines).unwrap_or_default() + "\n";
    }
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_header(["site", "kernel function", "errno", "what kfd does next"]);
    for s in Site::ALL {
        let i = s.info();
        t.add_row(vec![
            Cell::new(i.name),
            Cell::new(i.function),
            Cell::new(i.errno.map_or("(none)", svm_core::Errno::name)),
            Cell::new(i.response),
        ]);
    }
    format!(
        "{t}\nInject with --inject SITE=P (each call, probability P), SITE@N (the Nth call) or \
         SITE/N (every Nth call), each optionally :ERRNO; repeatable, or `inject = \"...\"` / \
         [[config.inject]] in files. The draws come from the run's seed. docs/failures.md has \
         the kernel's source lines for each response.\n"
    )
}

/// What the engine did with a site's failures, in report order: `fallback 3`.
fn did(r: &SiteCoverage) -> Vec<String> {
    Response::ALL
        .iter()
        .filter_map(|resp| r.responses.get(resp.name()).map(|n| format!("{resp} {n}")))
        .collect()
}

/// The coverage of several runs (a compare, a sweep): one table, a column
/// per run of `injected / reached` and what the engine did; one run's is
/// [`coverage_table`].
pub fn coverage_tables(runs: &[(&str, &[SiteCoverage])]) -> String {
    match runs {
        [] => return String::new(),
        [(label, rows)] => return format!("{label}: {}", coverage_table(rows)),
        _ => {}
    }
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    let mut header = vec!["site".to_owned()];
    header.extend(runs.iter().map(|(l, _)| (*l).to_owned()));
    t.set_header(header);
    for s in Site::ALL {
        let mut row = vec![Cell::new(s.name())];
        for (_, rows) in runs {
            let cell = rows
                .iter()
                .find(|r| r.site == s.name())
                .map_or_else(String::new, |r| {
                    let did = did(r);
                    let mut c = format!("{} / {}", r.injected, r.reached);
                    if !did.is_empty() {
                        c += &format!(": {}", did.join(", "));
                    }
                    c
                });
            row.push(Cell::new(cell));
        }
        t.add_row(row);
    }
    format!("Injected failures (injected / reached, and what the engine did), per run:\n{t}\n")
}

/// A run's coverage of error paths: per site, calls, failures injected,
/// and what the engine did with them.
pub fn coverage_table(rows: &[SiteCoverage]) -> String {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "site",
        "kernel function",
        "reached",
        "injected",
        "what the engine did",
    ]);
    let right = |x: u64| Cell::new(x).set_alignment(CellAlignment::Right);
    for r in rows {
        let did = did(r);
        t.add_row(vec![
            Cell::new(r.site),
            Cell::new(r.function),
            right(r.reached),
            right(r.injected),
            Cell::new(did.join(", ")),
        ]);
    }
    let injected: u64 = rows.iter().map(|r| r.injected).sum();
    let unreached: Vec<&str> = rows
        .iter()
        .filter(|r| r.reached == 0)
        .map(|r| r.site)
        .collect();
    let mut s = format!("Injected failures: {injected}\n{t}\n");
    if !unreached.is_empty() {
        s += &format!(
            "Not reached by this run (no call passed them): {}.\n",
            unreached.join(", ")
        );
    }
    s
}

//! The timeline is valid Chrome trace-event JSON with the promised tracks;
//! the HTML report is self-contained and loads in headless Chromium with
//! no console message and every plot drawn.

use std::process::Command;

use super::cli::scratch;
use super::{stderr, svmsim};

#[test]
fn timeline_is_valid_trace_event_json_with_every_track() {
    let d = scratch("timeline");
    let t = d.join("t.json");
    let o = svmsim(&[
        "run",
        "ping-pong",
        "--size",
        "4MiB",
        "--iters",
        "2",
        "--profile",
        "mi250x",
        "--timeline",
        t.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&t).unwrap()).expect("valid JSON");
    let n = svmsim::chrome::validate(&v).expect("valid trace events");
    assert!(n > 20, "{n} events");
    let ev = v["traceEvents"].as_array().unwrap();
    let names = |ph: &str| -> Vec<String> {
        ev.iter()
            .filter(|e| e["ph"] == ph)
            .map(|e| {
                if ph == "M" {
                    e["args"]["name"].as_str().unwrap().to_owned()
                } else {
                    e["name"].as_str().unwrap().to_owned()
                }
            })
            .collect()
    };
    let meta = names("M");
    for want in [
        "GPU 0x1002",
        "GPU 0x2002",
        "page faults",
        "migrations",
        "queue eviction / restore",
        "TLB flushes",
        "copy engine: to VRAM",
        "copy engine: to RAM",
    ] {
        assert!(meta.iter().any(|m| m == want), "no {want} track: {meta:?}");
    }
    let spans = names("X");
    for want in [
        "fault (migrated)",
        "migrate: GPU page fault",
        "copy to VRAM",
        "copy to RAM",
    ] {
        assert!(spans.iter().any(|m| m == want), "no {want} span");
    }
    let counters = names("C");
    assert!(counters.iter().any(|c| c == "VRAM used (MiB)"));
    assert!(counters.iter().any(|c| c == "resident pages"));
    assert!(names("i").iter().any(|c| c.starts_with("TLB flush")));
    // Every span lies inside the run's simulated time.
    let end_us = ev
        .iter()
        .filter_map(|e| e["ts"].as_f64())
        .fold(0.0, f64::max);
    assert!(end_us > 0.0);
    assert_eq!(v["otherData"]["clock"], "simulated");
    // Queue eviction and restore: XNACK off, prefetched, oversubscribed.
    let t2 = d.join("t2.json");
    let o = svmsim(&[
        "run",
        "stream",
        "--size",
        "16MiB",
        "--iters",
        "1",
        "--xnack",
        "off",
        "--prefetch",
        "--oversubscribe",
        "1.25",
        "--timeline",
        t2.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v2: serde_json::Value = serde_json::from_slice(&std::fs::read(&t2).unwrap()).unwrap();
    svmsim::chrome::validate(&v2).expect("valid trace events");
    let evicted = v2["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "queues evicted" && e["tid"] == 3)
        .count();
    assert!(evicted > 0, "no queue eviction span");
    // The validator does reject what is not trace-event JSON.
    assert!(svmsim::chrome::validate(&serde_json::json!({"traceEvents": [{"ph": "Q"}]})).is_err());
    assert!(svmsim::chrome::validate(&serde_json::json!({"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": -1, "dur": 1}]})).is_err());
    assert!(svmsim::chrome::validate(&serde_json::json!({})).is_err());
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned)
}

#[test]
fn html_report_is_self_contained_and_loads_in_chromium() {
    let d = scratch("report");
    let o = svmsim(&["run", "--report", d.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = d.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: no external asset, no script.
    // (SVG's xmlns is a name, not a fetch.)
    for bad in ["<script", "<link", " src=", "href=", "url(", "@import"] {
        assert!(!html.contains(bad), "{bad} in the report");
    }
    let plots = [
        "migrated",
        "latency-cdf",
        "vram",
        "residency-0",
        "residency-1",
        "residency-2",
    ];
    for p in plots {
        assert!(
            html.contains(&format!("id=\"plot-{p}\"")),
            "plot {p} missing"
        );
    }
    assert!(html.contains("Invariant checks") && html.contains("every checker held"));
    // The residency map's legend sits beside the map, not on it: the
    // only rectangles in the legend's strip are its 12-pixel swatches, and
    // every cell of the map (white, unmapped, ones too) ends left of it.
    let svg = std::fs::read_to_string(d.join("residency-0.svg")).unwrap();
    let attr = |tag: &str, name: &str| -> u32 {
        let at = tag.find(&format!(" {name}=\"")).expect("attribute") + name.len() + 3;
        tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
    };
    let legend_x = svg
        .split("<text")
        .find(|t| t.contains("system memory"))
        .map(|t| attr(t, "x"))
        .expect("a legend");
    let strip = legend_x - 20;
    let (mut cells, mut swatches) = (0, 0);
    // (The first rectangle is the background.)
    for r in svg.split("<rect").skip(2) {
        let (x, w, h) = (attr(r, "x"), attr(r, "width"), attr(r, "height"));
        if x + w <= strip {
            cells += 1;
        } else {
            assert!(
                x >= strip && (w, h) == (12, 12),
                "a {w}x{h} rectangle at x = {x} reaches into the legend at x = {strip}"
            );
            swatches += 1;
        }
    }
    assert!(cells > 10, "a map of {cells} cells");
    assert!(swatches >= 2, "{swatches} swatches");
    // A line chart's legend is a band above its plot: below the legend's
    // lowest row, only the data's lines (long ones, not 18-pixel keys).
    let svg = std::fs::read_to_string(d.join("migrated.svg")).unwrap();
    let points = |pl: &str| -> Vec<(u32, u32)> {
        let pts = &pl[pl.find("points=\"").expect("points") + 8..];
        pts[..pts.find('"').unwrap()]
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    };
    let lines: Vec<Vec<(u32, u32)>> = svg.split("<polyline").skip(1).map(points).collect();
    // (A key: one level 18-pixel stroke.)
    let band = lines
        .iter()
        .filter(|l| l.len() == 2 && l[0].1 == l[1].1 && l[1].0 == l[0].0 + 18)
        .map(|k| k[0].1)
        .max()
        .expect("legend keys");
    let data: Vec<&Vec<(u32, u32)>> = lines.iter().filter(|l| l.len() > 2).collect();
    assert!(!data.is_empty());
    for l in data {
        assert!(
            l.iter().all(|&(_, y)| y > band + 8),
            "a line reaches the legend band"
        );
    }
    assert!(
        html.contains("svmsim run shared-buffer"),
        "no repro command"
    );

    // In a browser. CI installs Chromium and sets SVMSIM_BROWSER_TEST=1, so
    // there a missing browser fails the test; elsewhere it is skipped.
    let Some(chrome) = chromium() else {
        assert!(
            std::env::var_os("SVMSIM_BROWSER_TEST").is_none(),
            "SVMSIM_BROWSER_TEST is set but no Chromium is installed"
        );
        eprintln!("skipped the browser half: no chromium (apt-get install chromium)");
        return;
    };
    let profile = d.join("chromium-profile");
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let out = Command::new(&chrome)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(&url)
        .output()
        .expect("chromium runs");
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console messages:\n{}",
        console.join("\n")
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    for p in plots {
        let at = dom
            .find(&format!("id=\"plot-{p}\""))
            .unwrap_or_else(|| panic!("plot {p} not in the DOM"));
        let fig = &dom[at..];
        let fig = &fig[..fig.find("</figure>").expect("figure closes")];
        assert!(
            fig.contains("<svg") && (fig.contains("<polyline") || fig.contains("<rect")),
            "plot {p} is empty"
        );
    }
    // A screenshot to look at, outside the repository.
    let shot = d.join("report.png");
    let s = Command::new(&chrome)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--window-size=1200,3800",
            &format!("--screenshot={}", shot.display()),
        ])
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        s.status.success() && shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&s.stderr)
    );
}

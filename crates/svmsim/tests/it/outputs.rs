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
        "GPU 0 (0x1002)",
        "GPU 1 (0x2002)",
        "CPU",
        "kernels",
        "CU 0 waves",
        "page-table updates",
        "page faults (migrate to RAM)",
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
        "kernel 0",
        "wave 0",
        "stalled on a fault",
        "fault (migrated)",
        "migrate: GPU page fault",
        "map",
        "copy to VRAM",
        "copy to RAM",
        "CPU fault",
        "migrate: CPU page fault",
    ] {
        assert!(spans.iter().any(|m| m == want), "no {want} span");
    }
    // Causes are arrows: a fault to its migration, that to the map, the
    // map to the waves it woke; a CPU fault to its migration to RAM. (The
    // validator checked each has one start and one end, inside spans.)
    let flows = names("s");
    for want in [
        "fault → migration",
        "→ page-table update",
        "→ wave woken",
        "CPU fault → migration",
    ] {
        assert!(flows.iter().any(|m| m == want), "no {want} flow: {flows:?}");
    }
    assert_eq!(names("f").len(), flows.len());
    assert_eq!(v["otherData"]["flows"], flows.len());
    // Counts are numbers, not strings.
    let mig = ev
        .iter()
        .find(|e| e["name"] == "migrate: GPU page fault")
        .unwrap();
    assert!(
        mig["args"]["pages"].is_u64() && mig["args"]["bytes"].is_u64(),
        "{mig}"
    );
    let kernel = ev.iter().find(|e| e["name"] == "kernel 0").unwrap();
    for k in ["waves", "accesses", "faults"] {
        assert!(
            kernel["args"][k].as_u64().is_some_and(|n| n > 0),
            "{kernel}"
        );
    }
    let counters = names("C");
    assert!(counters.iter().any(|c| c == "waves running"));
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
    // CPU threads get a track of their own in the CPU process.
    let t3 = d.join("t3.json");
    let o = svmsim(&[
        "run",
        "producer-consumer",
        "--size",
        "4MiB",
        "--iters",
        "1",
        "--timeline",
        t3.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v3: serde_json::Value = serde_json::from_slice(&std::fs::read(&t3).unwrap()).unwrap();
    svmsim::chrome::validate(&v3).expect("valid trace events");
    let cpu = v3["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "process_name" && e["args"]["name"] == "CPU")
        .expect("a CPU process")["pid"]
        .clone();
    let ev3 = v3["traceEvents"].as_array().unwrap();
    assert!(
        ev3.iter()
            .any(|e| e["pid"] == cpu && e["name"] == "thread 0")
    );
    assert!(
        ev3.iter()
            .any(|e| e["pid"] == cpu && e["name"].as_str().unwrap().starts_with("CPU threads"))
    );
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
    for bad in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!html.contains(bad), "{bad} in the report");
    }
    // Links only within the page: the table of contents.
    assert!(
        html.split("href=").skip(1).all(|l| l.starts_with("\"#")),
        "a link out of the page"
    );
    let plots = [
        "migrated",
        "latency-cdf",
        "vram",
        "residency-0",
        "residency-1",
        "residency-2",
        "by-policy",
    ];
    for p in plots {
        assert!(
            html.contains(&format!("id=\"plot-{p}\"")),
            "plot {p} missing"
        );
        assert!(
            html.contains(&format!("href=\"#plot-{p}\"")),
            "plot {p} not in the contents"
        );
    }
    for section in [
        "configuration",
        "results",
        "what-happened",
        "plots",
        "invariants",
        "repro",
    ] {
        assert!(
            html.contains(&format!("id=\"{section}\""))
                && html.contains(&format!("href=\"#{section}\"")),
            "section {section}"
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
    let strip = legend_x.saturating_sub(20);
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
    // No line of a line chart passes under a legend entry (its key and
    // its text).
    for chart in ["migrated.svg", "latency-cdf.svg", "vram.svg"] {
        let svg = std::fs::read_to_string(d.join(chart)).unwrap();
        if let Err(e) = lines_clear_of_legend(&svg) {
            panic!("{chart}: {e}");
        }
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

/// The value of attribute `name` in an SVG tag's text.
fn svg_attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[at..at + tag[at..].find('"')?])
}

/// Checks that no data line of a line chart (a 2-pixel polyline that is
/// not an 18-pixel legend key) crosses a legend entry: its key and the
/// text just right of it, whose width is taken as 7 pixels a character
/// (more than the font needs).
fn lines_clear_of_legend(svg: &str) -> Result<(), String> {
    type Pt = (f64, f64);
    let mut keys: Vec<Pt> = Vec::new();
    let mut data: Vec<Vec<Pt>> = Vec::new();
    for tag in svg.split("<polyline").skip(1) {
        let tag = &tag[..tag.find("/>").unwrap_or(tag.len())];
        if svg_attr(tag, "stroke-width") != Some("2") {
            continue;
        }
        let pts: Vec<Pt> = svg_attr(tag, "points")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|p| {
                let (x, y) = p.split_once(',')?;
                Some((x.parse().ok()?, y.parse().ok()?))
            })
            .collect();
        if let [a, b] = pts[..]
            && a.1 == b.1
            && b.0 == a.0 + 18.0
        {
            keys.push(a);
        } else {
            data.push(pts);
        }
    }
    if keys.is_empty() || data.is_empty() {
        return Err(format!("{} keys, {} lines", keys.len(), data.len()));
    }
    // Each key's entry: from the key to the end of the text beside it.
    let boxes: Vec<(f64, f64, f64, f64)> = keys
        .iter()
        .map(|&(x, y)| {
            let text = svg
                .split("<text")
                .skip(1)
                .find(|t| {
                    let at = |n| svg_attr(t, n).and_then(|v| v.parse::<f64>().ok());
                    at("x").is_some_and(|tx| (x + 18.0..=x + 40.0).contains(&tx))
                        && at("y").is_some_and(|ty| (ty - y).abs() <= 8.0)
                })
                .and_then(|t| {
                    Some(
                        t[t.find('>')? + 1..t.find("</text>")?]
                            .trim()
                            .chars()
                            .count(),
                    )
                })
                .unwrap_or(0);
            (x - 2.0, y - 8.0, x + 24.0 + 7.0 * text as f64, y + 8.0)
        })
        .collect();
    // Whether segment a-b meets the box (clipped against each side).
    let meets = |a: Pt, b: Pt, (x0, y0, x1, y1): (f64, f64, f64, f64)| {
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        for (p, q) in [
            (-dx, a.0 - x0),
            (dx, x1 - a.0),
            (-dy, a.1 - y0),
            (dy, y1 - a.1),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    return false;
                }
            } else {
                let r = q / p;
                if p < 0.0 {
                    t0 = t0.max(r);
                } else {
                    t1 = t1.min(r);
                }
            }
        }
        t0 <= t1
    };
    for line in &data {
        for seg in line.windows(2) {
            for &bx in &boxes {
                if meets(seg[0], seg[1], bx) {
                    return Err(format!(
                        "segment {:?}-{:?} crosses the legend entry {bx:?}",
                        seg[0], seg[1]
                    ));
                }
            }
        }
    }
    Ok(())
}

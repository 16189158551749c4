//! SVG plots of one or more runs (plotters, SVG backend, no font files):
//! migrated bytes over time, the fault-latency CDF, the residency map and
//! VRAM use over time. Each function returns the SVG text.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::exec::Outcome;
use crate::series;

const W: u32 = 760;
const H: u32 = 400;
/// Height of each VRAM panel's plot, under its band.
const VRAM_PLOT_H: u32 = 208;
/// Width of the residency map's legend strip.
const LEGEND_W: u32 = 170;

/// Series colours: Okabe and Ito's colour-blind safe set (less its black,
/// which the axes use) and Tol's wine, eight that never repeat: a chart
/// with more series than this draws small multiples instead.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(136, 34, 85),
    RGBColor(240, 228, 66),
];

/// The colour of the other series behind a small multiple's own.
const CONTEXT: RGBColor = RGBColor(205, 205, 205);

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

type Line = (String, Vec<(f64, f64)>);

/// How an axis shows its values: to scale, on a log scale (when they span
/// orders of magnitude), or as named categories at 0, 1, 2, ...
#[derive(Clone, Debug, Default)]
struct Scale {
    desc: String,
    log: bool,
    cats: Vec<String>,
}

/// A log axis is used when the largest value is this many times the
/// smallest positive one: at 20x, the small values on a linear axis are
/// a line along its floor.
const LOG_SPAN: f64 = 20.0;

impl Scale {
    fn linear(desc: &str) -> Self {
        Scale {
            desc: desc.into(),
            ..Scale::default()
        }
    }

    /// Linear, or log when `values` span [`LOG_SPAN`] or more.
    fn fitted(desc: &str, values: impl Iterator<Item = f64>) -> Self {
        let (lo, hi) = values
            .filter(|v| *v > 0.0 && v.is_finite())
            .fold((f64::MAX, 0.0_f64), |(l, h), v| (l.min(v), h.max(v)));
        let log = hi > 0.0 && hi / lo >= LOG_SPAN;
        Scale {
            desc: if log {
                format!("{desc}, log scale")
            } else {
                desc.into()
            },
            log,
            cats: Vec::new(),
        }
    }

    /// Where `v` goes on the chart's (linear) coordinates; on a log axis
    /// values at or below 0 sit at `floor`, the smallest positive one.
    fn to(&self, v: f64, floor: f64) -> f64 {
        if self.log { v.max(floor).log10() } else { v }
    }

    /// The tick label at chart coordinate `c`.
    fn label(&self, c: f64) -> String {
        if !self.cats.is_empty() {
            let k = c.round();
            if (c - k).abs() > 0.01 || k < 0.0 {
                return String::new();
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return self.cats.get(k as usize).cloned().unwrap_or_default();
        }
        let v = if self.log { 10f64.powf(c) } else { c };
        number(v)
    }
}

/// A tick value, short: 0.001, 0.25, 12, 3.5k, 2M.
fn number(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 0.1 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.4}"))
    }
}

/// The drawn extent of `series` on scales `xs`, `ys`, in chart
/// coordinates: (x from, x to), (y from, y to), and the log floors.
#[derive(Clone, Copy, Debug)]
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
    floor: (f64, f64),
}

fn frame(series: &[Line], xs: &Scale, ys: &Scale) -> Frame {
    let pts = || series.iter().flat_map(|s| s.1.iter().copied());
    let floor = |f: fn(&(f64, f64)) -> f64| {
        pts()
            .map(|p| f(&p))
            .filter(|v| *v > 0.0)
            .fold(f64::MAX, f64::min)
            .min(1e300)
    };
    let floor = (floor(|p| p.0), floor(|p| p.1));
    let ext = |f: fn(&(f64, f64)) -> f64, s: &Scale, fl: f64| {
        let (lo, hi) = pts()
            .map(|p| s.to(f(&p), fl))
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
        if lo > hi {
            return (0.0, 1.0);
        }
        // Linear axes start at 0 (unless a value is below it).
        let lo = if s.log || !s.cats.is_empty() {
            lo
        } else {
            lo.min(0.0)
        };
        let pad = ((hi - lo) * 0.05).max(if s.log { 0.1 } else { 1e-9 });
        if s.cats.is_empty() {
            (if s.log { lo - pad } else { lo }, hi + pad)
        } else {
            (lo - 0.3, hi + 0.3)
        }
    };
    Frame {
        x: ext(|p| p.0, xs, floor.0),
        y: ext(|p| p.1, ys, floor.1),
        floor,
    }
}

/// A line chart of several labelled series: one chart when its colours
/// tell them apart, else small multiples.
fn lines(title: &str, x: &Scale, y: &Scale, series: &[Line]) -> Result<String, String> {
    if series.len() > PALETTE.len() {
        return multiples(title, x, y, series);
    }
    let labels: Vec<&str> = series.iter().map(|s| s.0.as_str()).collect();
    let mut buf = String::new();
    {
        // The plot keeps its height; the band grows with the legend.
        let h = PLOT_H + band_height(&labels, W);
        let root = SVGBackend::with_string(&mut buf, (W, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let f = frame(series, x, y);
        draw_lines(&root, title, (x, y), series, f, (None, &[]))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Small multiples: a panel per series on the same axes, the series in
/// colour over the others in grey, two panels a row; at most
/// [`MAX_PANELS`], the title saying how many are left out.
fn multiples(title: &str, x: &Scale, y: &Scale, series: &[Line]) -> Result<String, String> {
    const COLS: u32 = 2;
    const PANEL_H: u32 = 230;
    const HEAD: u32 = 34;
    let shown = &series[..series.len().min(MAX_PANELS)];
    let n = u32::try_from(shown.len()).unwrap_or(1).max(1);
    let rows = n.div_ceil(COLS);
    let mut buf = String::new();
    {
        let root =
            SVGBackend::with_string(&mut buf, (W, HEAD + rows * PANEL_H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (head, body) = root.split_vertically(HEAD);
        let more = series.len() - shown.len();
        let title = if more > 0 {
            format!(
                "{title} ({} of {}, {more} left out)",
                shown.len(),
                series.len()
            )
        } else {
            title.to_owned()
        };
        head.draw(&Text::new(
            fit(&title, 18, i32::try_from(W).unwrap_or(760) - 24),
            (i32::try_from(W / 2).unwrap_or(0), 8),
            ("sans-serif", 18)
                .into_font()
                .into_text_style(&head)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(|e| e.to_string())?;
        let f = frame(series, x, y);
        let panels = body.split_evenly((rows as usize, COLS as usize));
        for (i, (area, s)) in panels.iter().zip(shown).enumerate() {
            let others: Vec<Line> = series
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, l)| l.clone())
                .collect();
            draw_lines(
                area,
                &s.0,
                (x, y),
                std::slice::from_ref(s),
                f,
                (Some(&others), &[]),
            )?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Small multiples drawn at most.
const MAX_PANELS: usize = 24;

/// Draws `series` on `area` within `f`: the title, a band with the
/// legend, then the plot, so the legend never covers a line. A small
/// multiple (`context` given) has its series' name as title and no
/// legend, and draws `context` in grey behind it. `levels` are dashed
/// horizontal lines (series colour, height): a capacity.
fn draw_lines(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    (xs, ys): (&Scale, &Scale),
    series: &[Line],
    f: Frame,
    (context, levels): (Option<&[Line]>, &[(usize, f64)]),
) -> Result<(), String> {
    let (w, _) = area.dim_in_pixel();
    let labels: Vec<&str> = if context.is_some() {
        Vec::new()
    } else {
        series.iter().map(|s| s.0.as_str()).collect()
    };
    let band_h = if context.is_some() {
        LEGEND_TOP - 4
    } else {
        band_height(&labels, w)
    };
    let (band, plot) = area.split_vertically(band_h);
    let (bw, _) = band.dim_in_pixel();
    let room = i32::try_from(bw).unwrap_or(i32::MAX).saturating_sub(24);
    let px = if context.is_some() { 14 } else { 18 };
    band.draw(&Text::new(
        fit(title, px, room),
        (i32::try_from(bw / 2).unwrap_or(0), 8),
        ("sans-serif", px)
            .into_font()
            .into_text_style(&band)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(|e| e.to_string())?;
    for e in legend_rows(&labels, w) {
        let (x, y) = (
            e.x,
            i32::try_from(LEGEND_TOP + LEGEND_ROW * e.row + LEGEND_ROW / 2).unwrap_or(0),
        );
        if let Some(i) = e.series {
            band.draw(&PathElement::new(
                vec![(x, y), (x + 18, y)],
                colour(i).stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        }
        band.draw(&Text::new(
            e.text,
            (x + 24, y),
            ("sans-serif", 13)
                .into_font()
                .into_text_style(&band)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(|e| e.to_string())?;
    }
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .margin_top(4)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(f.x.0..f.x.1, f.y.0..f.y.1)
        .map_err(|e| e.to_string())?;
    // A log axis over two decades or more is labelled at the powers of
    // ten only (its other ticks, at 10^0.5, read as odd numbers).
    let sparse = |s: &Scale, (lo, hi): (f64, f64), c: f64| {
        if s.log && hi - lo >= 2.0 && (c - c.round()).abs() > 0.01 {
            String::new()
        } else {
            s.label(c)
        }
    };
    let x_label = |c: &f64| sparse(xs, f.x, *c);
    let y_label = |c: &f64| sparse(ys, f.y, *c);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(xs.desc.as_str())
        .y_desc(ys.desc.as_str())
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .light_line_style(WHITE.mix(0.0));
    if !xs.cats.is_empty() {
        mesh.x_labels(xs.cats.len().clamp(2, 12) * 4);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    let to = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .map(|&(x, y)| (xs.to(x, f.floor.0), ys.to(y, f.floor.1)))
            .collect()
    };
    for (_, pts) in context.unwrap_or(&[]) {
        chart
            .draw_series(LineSeries::new(to(pts), CONTEXT.stroke_width(1)))
            .map_err(|e| e.to_string())?;
    }
    for &(i, y) in levels {
        let y = ys.to(y, f.floor.1);
        chart
            .draw_series(DashedLineSeries::new(
                [(f.x.0, y), (f.x.1, y)],
                6,
                5,
                colour(i).stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
    }
    for (i, (_, pts)) in series.iter().enumerate() {
        let c = colour(i);
        let pts = to(pts);
        // A single point (a category with one run) shows as a dot.
        if pts.len() == 1 || !xs.cats.is_empty() {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where the title's band puts its first legend row, and a row's height.
const LEGEND_TOP: u32 = 30;
const LEGEND_ROW: u32 = 18;
/// Legend rows a line chart shows at most; past them, one entry says how
/// many series are left out.
const LEGEND_MAX_ROWS: u32 = 5;
/// A line chart's plot height, under its band.
const PLOT_H: u32 = H - LEGEND_TOP - LEGEND_ROW - 4;

/// One legend entry: its series (`None` for the line saying how many are
/// left out), its text, where it starts and its row.
#[derive(Debug, PartialEq)]
struct Entry {
    series: Option<usize>,
    text: String,
    x: i32,
    row: u32,
}

/// The estimated width in pixels of `c` at `px` pixels (an average Latin
/// glyph is about half the size; CJK and other wide glyphs a whole one).
fn char_px(c: char, px: u32) -> i32 {
    let half = i32::try_from(px / 2 + 1).unwrap_or(8);
    if u32::from(c) >= 0x2E80 {
        2 * half
    } else {
        half
    }
}

/// The estimated width in pixels of `s` at `px` pixels.
fn text_px(s: &str, px: u32) -> i32 {
    s.chars().map(|c| char_px(c, px)).sum()
}

/// `s` shortened with an ellipsis to at most `max` pixels at `px` pixels.
fn fit(s: &str, px: u32, max: i32) -> String {
    if text_px(s, px) <= max {
        return s.to_owned();
    }
    let mut room = max - char_px('…', px);
    let mut out: String = s
        .chars()
        .take_while(|&c| {
            room -= char_px(c, px);
            room >= 0
        })
        .collect();
    out.push('…');
    out
}

/// Lays the legend of `labels` out left to right in rows across `width`
/// pixels, from the plot's left edge, at most [`LEGEND_MAX_ROWS`] rows; a
/// label too long for a row is shortened.
fn legend_rows(labels: &[&str], width: u32) -> Vec<Entry> {
    const KEY: i32 = 24;
    const GAP: i32 = 24;
    let left = 76;
    let right = i32::try_from(width).unwrap_or(i32::MAX).saturating_sub(12);
    let room = (right - left - KEY - GAP).max(40);
    let (mut x, mut row) = (left, 0);
    let mut out: Vec<Entry> = Vec::with_capacity(labels.len());
    for (i, l) in labels.iter().enumerate() {
        let text = fit(l, 13, room);
        let w = KEY + text_px(&text, 13) + GAP;
        if x > left && x + w > right {
            (x, row) = (left, row + 1);
        }
        if row == LEGEND_MAX_ROWS {
            // The rest do not fit: the last row ends with how many are
            // left out, making room for it if it must.
            let last = LEGEND_MAX_ROWS - 1;
            loop {
                let text = format!("and {} more", labels.len() - out.len());
                let (x, row) = match out.last() {
                    Some(e) if e.row == last => (e.x + KEY + text_px(&e.text, 13) + GAP, last),
                    _ => (left, last),
                };
                if row == last && x > left && x + text_px(&text, 13) > right {
                    out.pop();
                    continue;
                }
                out.push(Entry {
                    series: None,
                    text,
                    x,
                    row,
                });
                return out;
            }
        }
        out.push(Entry {
            series: Some(i),
            text,
            x,
            row,
        });
        x += w;
    }
    out
}

/// The height of the title and legend band above a line chart of
/// `labels` drawn `width` pixels wide.
fn band_height(labels: &[&str], width: u32) -> u32 {
    let rows = legend_rows(labels, width)
        .iter()
        .map(|e| e.row + 1)
        .max()
        .unwrap_or(0)
        .max(1);
    LEGEND_TOP + LEGEND_ROW * rows + 4
}

/// Step series: each point holds until the next.
fn steps(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * 2);
    for (i, &(x, y)) in pts.iter().enumerate() {
        if i > 0 {
            out.push((x, pts[i - 1].1));
        }
        out.push((x, y));
    }
    out
}

/// Migrated bytes over time, one line per run. When the runs' lengths
/// differ tenfold or more, time is each run's share of its own length, so
/// a fast run is not a spike at the left; bytes go on a log scale when
/// the runs' totals span orders of magnitude.
///
/// # Errors
/// The plotting library failing.
pub fn migrated(runs: &[&Outcome]) -> Result<String, String> {
    let raw: Vec<(String, Vec<(u64, u64)>)> = runs
        .iter()
        .filter_map(|o| {
            let t = o.timeline.as_ref()?;
            Some((o.label.clone(), series::migrated_over_time(t)))
        })
        .collect();
    let ends: Vec<u64> = raw
        .iter()
        .map(|(_, p)| p.last().map_or(0, |q| q.0))
        .collect();
    let (short, long) = ends
        .iter()
        .filter(|&&e| e > 0)
        .fold((u64::MAX, 0), |(l, h), &e| (l.min(e), h.max(e)));
    let normalized = long > 0 && long >= short.saturating_mul(10);
    let series: Vec<Line> = raw
        .iter()
        .zip(&ends)
        .map(|((label, pts), &end)| {
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .map(|&(t, b)| {
                    let x = if normalized {
                        t as f64 / end.max(1) as f64
                    } else {
                        ms(t)
                    };
                    (x, mib(b))
                })
                .collect();
            (label.clone(), steps(&pts))
        })
        .collect();
    let totals = series.iter().filter_map(|s| s.1.last().map(|p| p.1));
    let x = Scale::linear(if normalized {
        "share of each run's simulated time"
    } else {
        "simulated time (ms)"
    });
    let y = Scale::fitted("migrated (MiB)", totals);
    lines("Migrated bytes over time", &x, &y, &series)
}

/// The fault-latency CDF, one step line per run; latency on a log scale
/// when it spans orders of magnitude (it usually does: a fault served at
/// once against one queued behind a migration).
///
/// # Errors
/// The plotting library failing.
pub fn latency_cdf(runs: &[&Outcome]) -> Result<String, String> {
    let series: Vec<Line> = runs
        .iter()
        .map(|o| {
            let cdf = series::latency_cdf(&o.fault_latencies);
            // One point per distinct latency (its highest share), from 0.
            let mut pts: Vec<(f64, f64)> = Vec::with_capacity(cdf.len() + 1);
            for (l, q) in cdf {
                let x = l as f64 / 1e3;
                match pts.last_mut() {
                    Some(p) if p.0 == x => p.1 = q,
                    _ => {
                        if pts.is_empty() {
                            pts.push((x, 0.0));
                        }
                        pts.push((x, q));
                    }
                }
            }
            (o.label.clone(), steps(&pts))
        })
        .collect();
    let x = Scale::fitted(
        "latency, raised to handled (µs)",
        series.iter().flat_map(|s| s.1.iter().map(|p| p.0)),
    );
    lines(
        "Fault latency (CDF)",
        &x,
        &Scale::linear("share of faults"),
        &series,
    )
}

/// Residency over time: a panel per run, a line per GPU of the process's
/// pages resident in its VRAM (in the residency map's colours), and that
/// GPU's VRAM size as a dashed line of the same colour, on one time axis.
/// The scale is log when the capacity dwarfs what is resident.
///
/// # Errors
/// The plotting library failing.
pub fn vram(runs: &[&Outcome]) -> Result<String, String> {
    type Panel = (String, Vec<Line>, Vec<(usize, f64)>);
    let panels: Vec<Panel> = runs
        .iter()
        .filter_map(|o| {
            let t = o.timeline.as_ref()?;
            let gpu_ids: Vec<u32> = o.gpu_end.iter().map(|g| g.gpu_id).collect();
            let map = series::residency(t, &gpu_ids, 1, 1, None);
            let lines = o
                .gpu_end
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let mut pts: Vec<(f64, f64)> = vec![(0.0, 0.0)];
                    if let Some(list) = map.as_ref().and_then(|m| m.resident.get(i)) {
                        pts.extend(list.iter().map(|&(at, n)| (ms(at), mib(n * 4096))));
                    }
                    (o.gpu_name(g.gpu_id), steps(&pts))
                })
                .collect();
            let caps = o
                .gpu_end
                .iter()
                .enumerate()
                .filter(|(_, g)| g.vram_bytes > 0)
                .map(|(i, g)| (i, mib(g.vram_bytes)))
                .collect();
            Some((o.label.clone(), lines, caps))
        })
        .collect();
    // One frame for every panel, capacities included.
    let mut all: Vec<Line> = panels.iter().flat_map(|p| p.1.clone()).collect();
    let xmax = all
        .iter()
        .flat_map(|l| l.1.iter().map(|q| q.0))
        .fold(0.0, f64::max);
    for p in &panels {
        for &(_, c) in &p.2 {
            all.push((String::new(), vec![(0.0, c), (xmax, c)]));
        }
    }
    let x = Scale::linear("simulated time (ms)");
    let y = Scale::fitted(
        "resident in VRAM (MiB)",
        all.iter().flat_map(|l| l.1.iter().map(|p| p.1)),
    );
    let shared = frame(&all, &x, &y);
    // Runs whose lengths differ tenfold get a time axis each, so the
    // short ones are not squeezed into the left edge.
    let lengths: Vec<f64> = panels
        .iter()
        .map(|p| {
            p.1.iter()
                .flat_map(|l| l.1.iter().map(|q| q.0))
                .fold(0.0, f64::max)
        })
        .collect();
    let (short, long) = lengths
        .iter()
        .filter(|&&l| l > 0.0)
        .fold((f64::MAX, 0.0_f64), |(s, l), &x| (s.min(x), l.max(x)));
    let own_axis = long > 0.0 && long >= 10.0 * short;
    // Each panel: its band (which grows with its legend), then a plot of
    // a fixed height.
    let heights: Vec<u32> = panels
        .iter()
        .map(|(_, lines, _)| {
            let labels: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
            VRAM_PLOT_H + band_height(&labels, W)
        })
        .collect();
    let total = heights.iter().sum::<u32>().max(1);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (W, total)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut rest = root.clone();
        for (((label, lines, caps), &h), &len) in panels.iter().zip(&heights).zip(&lengths) {
            let (area, below) = rest.split_vertically(h);
            rest = below;
            let mut f = shared;
            if own_axis {
                f.x = (0.0, len.max(1e-9) * 1.02);
            }
            draw_lines(
                &area,
                &format!(
                    "Resident in VRAM (dashed: its size){}: {label}",
                    if own_axis { ", own time axis" } else { "" }
                ),
                (&x, &y),
                lines,
                f,
                (None, caps),
            )?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// A metric against each setting that differs between the runs (a
/// sweep's axes, found again from the runs, so merged shards get them
/// too): kernel time on the y axis, the setting's values on the x axis (to
/// scale when numbers, log when they span orders of magnitude, else as
/// categories), one line per combination of the other settings. Works
/// from the numbers alone, without timelines. Returns (setting, SVG).
///
/// # Errors
/// The plotting library failing.
pub fn by_parameter(outs: &[Outcome]) -> Result<Vec<(String, String)>, String> {
    let specs: Vec<crate::exec::RunSpec> = outs.iter().map(|o| o.spec.clone()).collect();
    let axes = crate::runs::axes(&specs);
    let mut out = Vec::new();
    for (k, axis) in axes.iter().enumerate() {
        let numeric = axis.numeric();
        // Sizes read in MiB, not in bytes.
        let (unit, desc) = if matches!(axis.name.as_str(), "size" | "vram") {
            (f64::from(1 << 20), format!("{} (MiB)", axis.name))
        } else {
            (1.0, axis.name.clone())
        };
        // Categories in order of first appearance.
        let mut cats: Vec<String> = Vec::new();
        for v in &axis.values {
            if !cats.contains(&v.0) {
                cats.push(v.0.clone());
            }
        }
        if cats.len() < 2 {
            continue;
        }
        // The lines: runs alike in every other setting.
        let mut groups: Vec<Line> = Vec::new();
        for (i, o) in outs.iter().enumerate() {
            if !matches!(
                o.status,
                crate::exec::Status::Ok | crate::exec::Status::Unchecked
            ) {
                continue;
            }
            let label: Vec<String> = axes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, a)| format!("{}={}", a.name, a.values[i].0))
                .collect();
            let label = if label.is_empty() {
                "every run".to_owned()
            } else {
                label.join(" ")
            };
            let v = &axis.values[i];
            let x = if numeric {
                v.1.unwrap_or(0.0) / unit
            } else {
                cats.iter().position(|c| *c == v.0).unwrap_or(0) as f64
            };
            let y = ms(o.metrics.kernel_ns);
            match groups.iter_mut().find(|g| g.0 == label) {
                Some(g) => g.1.push((x, y)),
                None => groups.push((label, vec![(x, y)])),
            }
        }
        for g in &mut groups {
            g.1.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        // A setting that moved with the others (drivers with their
        // profiles) draws only single points: nothing to read against it.
        if !groups.iter().any(|g| g.1.len() > 1) {
            continue;
        }
        let x = if numeric {
            Scale::fitted(
                &desc,
                axis.values.iter().filter_map(|v| v.1.map(|x| x / unit)),
            )
        } else {
            Scale {
                desc: axis.name.clone(),
                log: false,
                cats,
            }
        };
        let y = Scale::fitted(
            "kernel time (ms)",
            groups.iter().flat_map(|g| g.1.iter().map(|p| p.1)),
        );
        let svg = lines(&format!("Kernel time by {}", axis.name), &x, &y, &groups)?;
        out.push((axis.name.clone(), svg));
    }
    // Runs that differ in settings moving together: each run a category.
    if out.is_empty() && outs.len() > 1 {
        let pts: Vec<(f64, f64)> = outs
            .iter()
            .enumerate()
            .map(|(i, o)| (i as f64, ms(o.metrics.kernel_ns)))
            .collect();
        let y = Scale::fitted("kernel time (ms)", pts.iter().map(|p| p.1));
        let x = Scale {
            desc: "run".into(),
            log: false,
            cats: outs.iter().map(|o| o.label.clone()).collect(),
        };
        let svg = lines("Kernel time by run", &x, &y, &[("runs".into(), pts)])?;
        out.push(("run".into(), svg));
    }
    Ok(out)
}

/// The place colours of the residency map: RAM, then each GPU.
fn place_colour(code: u8) -> RGBColor {
    match code {
        0 => RGBColor(200, 200, 200),
        255 => WHITE,
        254 => BLACK,
        k => colour(usize::from(k) - 1),
    }
}

/// Where the pages were over time: address against time, coloured by
/// place (grey: system memory; one colour per GPU's VRAM; white:
/// unmapped), over `frame` (see `series::residency`; give several runs the
/// same frame so their maps compare). `None` when no page moved.
///
/// # Errors
/// The plotting library failing.
pub fn residency(o: &Outcome, frame: Option<(u64, u64, u64)>) -> Result<Option<String>, String> {
    let Some(t) = &o.timeline else {
        return Ok(None);
    };
    let gpu_ids: Vec<u32> = o.gpu_end.iter().map(|g| g.gpu_id).collect();
    let Some(map) = series::residency(t, &gpu_ids, 160, 128, frame) else {
        return Ok(None);
    };
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        // The legend has a strip of its own on the right: every cell of the
        // map is data, so a legend inside the plot would hide some.
        let (plot, key) = root.split_horizontally(W - LEGEND_W);
        let tmax = ms(*map.times.last().unwrap_or(&1)).max(1e-9);
        let (lo, hi) = map.pages;
        let amax = mib((hi - lo) * 4096).max(1e-9);
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                format!("Residency map: {}", o.label.clone()),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..tmax, 0.0..amax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("simulated time (ms)")
            .y_desc(format!("offset from {:#x} (MiB)", lo * 4096))
            .disable_mesh()
            .draw()
            .map_err(|e| e.to_string())?;
        let mut rects = Vec::new();
        for (j, row) in map.cells.iter().enumerate() {
            let x0 = if j == 0 { 0.0 } else { ms(map.times[j - 1]) };
            let x1 = ms(map.times[j]);
            // One rectangle per run of equal cells: the map stays small
            // however fine the grid.
            let na = row.len();
            let mut i = 0;
            while i < na {
                let c = row[i];
                let mut k = i + 1;
                while k < na && row[k] == c {
                    k += 1;
                }
                let y0 = amax * i as f64 / na as f64;
                let y1 = amax * k as f64 / na as f64;
                rects.push(Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    place_colour(c).filled(),
                ));
                i = k;
            }
        }
        chart.draw_series(rects).map_err(|e| e.to_string())?;
        // A legend of the places, one row each, below the caption's height:
        // system memory, each GPU's VRAM, and white for unmapped pages.
        let mut legend = vec![("system memory".to_string(), Some(0u8))];
        for (i, g) in gpu_ids.iter().enumerate() {
            legend.push((
                format!("VRAM of {}", crate::exec::gpu_name(i, *g)),
                Some(u8::try_from(i + 1).unwrap_or(254)),
            ));
        }
        // As many rows as the strip holds; past that, one line says how
        // many GPUs are left out (their colours repeat the palette's
        // anyway).
        let fit = usize::try_from((H - 56) / 20).unwrap_or(2) - 1;
        if legend.len() > fit {
            let left_out = legend.len() - (fit - 1);
            legend.truncate(fit - 1);
            legend.push((format!("and {left_out} more GPUs"), None));
        }
        legend.push(("not mapped".to_string(), Some(255)));
        let mut y = 44;
        for (label, code) in legend {
            if let Some(code) = code {
                let swatch = [(8, y), (20, y + 12)];
                key.draw(&Rectangle::new(swatch, place_colour(code).filled()))
                    .map_err(|e| e.to_string())?;
                key.draw(&Rectangle::new(swatch, BLACK.stroke_width(1)))
                    .map_err(|e| e.to_string())?;
            }
            key.draw(&Text::new(label, (26, y), ("sans-serif", 13)))
                .map_err(|e| e.to_string())?;
            y += 20;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_palette_never_repeats_and_more_series_make_small_multiples() {
        for (i, a) in PALETTE.iter().enumerate() {
            assert!(PALETTE[i + 1..].iter().all(|b| a != b), "{a:?} repeats");
            assert_ne!(*a, CONTEXT);
        }
        let series = |n: usize| -> Vec<Line> {
            (0..n)
                .map(|i| (format!("series {i}"), vec![(0.0, 0.0), (1.0, i as f64)]))
                .collect()
        };
        let x = Scale::linear("x");
        let y = Scale::linear("y");
        // Eight: one chart with a legend entry each.
        let one = lines("t", &x, &y, &series(8)).unwrap();
        assert_eq!(one.matches("\nseries ").count(), 8);
        // Nine: a panel each, titled with its series, the others in grey.
        let many = lines("t", &x, &y, &series(9)).unwrap();
        assert_eq!(many.matches("\nseries ").count(), 9);
        assert!(many.contains("#CDCDCD"), "no context lines");
        // Past the cap, the title says how many are left out.
        let lots = lines("t", &x, &y, &series(MAX_PANELS + 3)).unwrap();
        assert!(lots.contains("3 left out"));
    }

    #[test]
    fn values_spanning_orders_of_magnitude_get_a_log_axis() {
        assert!(!Scale::fitted("ms", [1.0, 19.0].into_iter()).log);
        let s = Scale::fitted("ms", [0.0, 1.0, 100.0].into_iter());
        assert!(s.log && s.desc.ends_with("log scale"));
        // Zero sits at the floor, labels read as numbers.
        assert!((s.to(0.0, 1.0) - 0.0).abs() < 1e-12);
        assert!((s.to(100.0, 1.0) - 2.0).abs() < 1e-12);
        assert_eq!(s.label(3.0), "1000");
        assert_eq!(number(25_000.0), "25k");
        assert_eq!(number(0.25), "0.25");
        let c = Scale {
            cats: vec!["a".into(), "b".into()],
            ..Scale::default()
        };
        assert_eq!((c.label(1.0), c.label(0.5)), ("b".into(), String::new()));
    }

    #[test]
    fn steps_hold_each_value_until_the_next() {
        let s = steps(&[(1.0, 0.0), (2.0, 0.5), (4.0, 1.0)]);
        assert_eq!(
            s,
            [(1.0, 0.0), (2.0, 0.0), (2.0, 0.5), (4.0, 0.5), (4.0, 1.0)]
        );
    }

    fn end(e: &Entry) -> i32 {
        e.x + 24 + text_px(&e.text, 13)
    }

    /// Legend entries fill a row left to right and wrap when the next
    /// would pass the right edge; past the last row one entry says how
    /// many are left out; a label wider than the plot is shortened.
    #[test]
    fn legend_entries_wrap_into_rows_and_stay_inside() {
        let right = i32::try_from(W).unwrap() - 12;
        let rows = legend_rows(&["whole-range", "partial", "partial-migrate-whole-map"], W);
        assert!(rows.iter().all(|e| e.row == 0 && e.series.is_some()));
        assert!(rows.windows(2).all(|p| end(&p[0]) < p[1].x));

        let many: Vec<String> = (0..60)
            .map(|i| format!("a rather long label {i:02}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let rows = legend_rows(&many, W);
        let last = rows.last().unwrap();
        assert_eq!(last.row, LEGEND_MAX_ROWS - 1, "{rows:?}");
        assert_eq!(last.series, None);
        let shown = rows.iter().filter(|e| e.series.is_some()).count();
        assert_eq!(last.text, format!("and {} more", 60 - shown));
        assert!(
            rows.iter().all(|e| e.x >= 76 && end(e) <= right),
            "{rows:?}"
        );
        assert_eq!(
            band_height(&many, W),
            LEGEND_TOP + LEGEND_ROW * LEGEND_MAX_ROWS + 4
        );

        let wide = "x".repeat(300);
        let rows = legend_rows(&[&wide, "b"], W);
        assert!(rows[0].text.ends_with('…') && end(&rows[0]) <= right);
        assert_eq!((rows[1].x, rows[1].row), (76, 1));
        // Wide glyphs count double.
        assert_eq!(text_px("显存", 13), 2 * text_px("ab", 13));
    }
}

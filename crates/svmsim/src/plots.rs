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

/// Series colours, one per run (policy) or GPU: ten, then they repeat.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(99, 99, 99),
];

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

/// A line chart of several labelled series.
fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[Line]) -> Result<String, String> {
    let labels: Vec<&str> = series.iter().map(|s| s.0.as_str()).collect();
    let mut buf = String::new();
    {
        // The plot keeps its height; the band grows with the legend.
        let h = PLOT_H + band_height(&labels, W);
        let root = SVGBackend::with_string(&mut buf, (W, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let xmax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(0.0, f64::max);
        draw_lines(&root, title, (x_desc, y_desc), series, xmax, 0)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Draws `series` on `area`, x from 0 to `xmax`, colours from `first`:
/// the title, a band with the legend, then the plot, so the legend never
/// covers a line.
fn draw_lines(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Line],
    xmax: f64,
    first: usize,
) -> Result<(), String> {
    let xmax = xmax.max(1e-9);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-9);
    let (w, _) = area.dim_in_pixel();
    let labels: Vec<&str> = series.iter().map(|s| s.0.as_str()).collect();
    let (band, plot) = area.split_vertically(band_height(&labels, w));
    let (bw, _) = band.dim_in_pixel();
    let room = i32::try_from(bw).unwrap_or(i32::MAX).saturating_sub(24);
    band.draw(&Text::new(
        fit(title, 18, room),
        (i32::try_from(bw / 2).unwrap_or(0), 8),
        ("sans-serif", 18)
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
                colour(first + i).stroke_width(2),
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
        .build_cartesian_2d(0.0..xmax * 1.02, 0.0..ymax * 1.08)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (_, pts)) in series.iter().enumerate() {
        let c = colour(first + i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
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

/// Migrated bytes over time, one line per run.
///
/// # Errors
/// The plotting library failing.
pub fn migrated(runs: &[&Outcome]) -> Result<String, String> {
    let series: Vec<Line> = runs
        .iter()
        .filter_map(|o| {
            let t = o.timeline.as_ref()?;
            let pts: Vec<(f64, f64)> = series::migrated_over_time(t)
                .into_iter()
                .map(|(t, b)| (ms(t), mib(b)))
                .collect();
            Some((o.label.clone(), steps(&pts)))
        })
        .collect();
    lines(
        "Migrated bytes over time",
        "simulated time (ms)",
        "migrated (MiB)",
        &series,
    )
}

/// The fault-latency CDF, one line per run.
///
/// # Errors
/// The plotting library failing.
pub fn latency_cdf(runs: &[&Outcome]) -> Result<String, String> {
    // Milliseconds when the tail reaches them, else microseconds.
    let max = runs
        .iter()
        .flat_map(|o| o.fault_latencies.iter())
        .max()
        .copied()
        .unwrap_or(0);
    let (div, unit) = if max >= 10_000_000 {
        (1e6, "ms")
    } else {
        (1e3, "µs")
    };
    let series: Vec<Line> = runs
        .iter()
        .map(|o| {
            let pts = series::latency_cdf(&o.fault_latencies)
                .into_iter()
                .map(|(l, q)| (l as f64 / div, q))
                .collect();
            (o.label.clone(), pts)
        })
        .collect();
    lines(
        "Fault latency (CDF)",
        &format!("latency, raised to handled ({unit})"),
        "share of faults",
        &series,
    )
}

/// VRAM in use over time: a panel per run, a line per GPU (in the
/// residency map's colours), on one time axis.
///
/// # Errors
/// The plotting library failing.
pub fn vram(runs: &[&Outcome]) -> Result<String, String> {
    let panels: Vec<(String, Vec<Line>)> = runs
        .iter()
        .filter_map(|o| {
            let t = o.timeline.as_ref()?;
            let lines = o
                .gpu_end
                .iter()
                .map(|g| {
                    let pts: Vec<(f64, f64)> = t
                        .vram
                        .iter()
                        .filter(|v| v.gpu_id == g.gpu_id)
                        .map(|v| (ms(v.at_ns), mib(v.used_bytes)))
                        .collect();
                    (o.gpu_name(g.gpu_id), steps(&pts))
                })
                .collect();
            Some((o.label.clone(), lines))
        })
        .collect();
    let xmax = panels
        .iter()
        .flat_map(|p| p.1.iter().flat_map(|l| l.1.iter().map(|q| q.0)))
        .fold(0.0, f64::max);
    // Each panel: its band (which grows with its legend), then a plot of
    // a fixed height.
    let heights: Vec<u32> = panels
        .iter()
        .map(|(_, lines)| {
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
        for ((label, lines), &h) in panels.iter().zip(&heights) {
            let (area, below) = rest.split_vertically(h);
            rest = below;
            draw_lines(
                &area,
                &format!("VRAM in use: {label}"),
                ("simulated time (ms)", "VRAM (MiB)"),
                lines,
                xmax,
                0,
            )?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
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

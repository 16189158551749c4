//! Time series drawn from a run's timeline and SMI events: what the plots
//! and the Perfetto timeline show.

use std::collections::BTreeMap;

use svm_core::addr::{PageCount, PageNum};
use svm_core::attr::Location;
use svm_core::events::{Kind, MigrateTrigger};
use svm_core::gpu::GpuId;
use svm_sim::machine::timeline::{PageMove, Place, Timeline};

use crate::exec::Outcome;

/// Cumulative bytes migrated (both directions) at each move's end.
pub fn migrated_over_time(t: &Timeline) -> Vec<(u64, u64)> {
    let mut moves: Vec<&PageMove> = t.moves.iter().filter(|m| m.to != Place::Gone).collect();
    moves.sort_by_key(|m| m.at_ns);
    let mut total = 0;
    let mut out = vec![(0, 0)];
    for m in moves {
        total += m.npages * 4096;
        out.push((m.at_ns, total));
    }
    out
}

/// The empirical CDF of fault latencies: (latency ns, share of faults).
pub fn latency_cdf(lat: &[u64]) -> Vec<(u64, f64)> {
    let mut v = lat.to_vec();
    v.sort_unstable();
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, &l)| (l, (i + 1) as f64 / n))
        .collect()
}

/// A place as a small code: 0 system memory, 1.. a GPU (by its index in
/// `gpu_ids`, plus one), 255 unmapped.
fn code(p: Place, gpu_ids: &[u32]) -> u8 {
    match p {
        Place::Ram => 0,
        Place::Vram(id) => gpu_ids
            .iter()
            .position(|&g| g == id)
            .and_then(|i| u8::try_from(i + 1).ok())
            .unwrap_or(254),
        Place::Gone => 255,
    }
}

/// Where the pages were over time, on a grid.
#[derive(Clone, Debug, PartialEq)]
pub struct ResidencyMap {
    /// First and last page (exclusive) the moves touched.
    pub pages: (u64, u64),
    /// The grid's time boundaries: cell `j` ends at `times[j]`.
    pub times: Vec<u64>,
    /// `cells[j][i]`: the place most pages of address bin `i` were at, at
    /// `times[j]` (codes as in [`code`]: 0 RAM, k GPU k, 255 unmapped).
    pub cells: Vec<Vec<u8>>,
    /// Resident pages per GPU over time (one list per GPU, at each move).
    pub resident: Vec<Vec<(u64, u64)>>,
}

/// The pages (first, end) and the last move's time of process 0 in `t`.
pub fn extent(t: &Timeline) -> Option<(u64, u64, u64)> {
    let moved = t.moves.iter().filter(|m| m.pid == 0 && m.to != Place::Gone);
    let lo = moved.clone().map(|m| m.page).min()?;
    let hi = moved.map(|m| m.page + m.npages).max()?;
    let end = t
        .moves
        .iter()
        .filter(|m| m.pid == 0)
        .map(|m| m.at_ns)
        .max()
        .unwrap_or(0);
    Some((lo, hi, end))
}

/// The union of several runs' extents, so their maps share axes.
pub fn common_extent<'a>(ts: impl IntoIterator<Item = &'a Timeline>) -> Option<(u64, u64, u64)> {
    ts.into_iter()
        .filter_map(extent)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1), a.2.max(b.2)))
}

/// Address-space cells the replay keeps at most: beyond this many pages,
/// a cell stands for several pages (and resident counts are in cells
/// times their size), so a sparse address space cannot exhaust memory.
const MAX_CELLS: u64 = 1 << 22;

/// Replays the moves of process 0 into a residency grid of `tbins` times
/// by `abins` address bins over `frame` (pages from, pages to, end time;
/// this run's own extent if `None`), and per-GPU resident page counts.
pub fn residency(
    t: &Timeline,
    gpu_ids: &[u32],
    tbins: usize,
    abins: usize,
    frame: Option<(u64, u64, u64)>,
) -> Option<ResidencyMap> {
    let mut moves: Vec<&PageMove> = t.moves.iter().filter(|m| m.pid == 0).collect();
    moves.sort_by_key(|m| m.at_ns);
    let (lo, hi, end) = frame.or_else(|| extent(t))?;
    let end = end.max(1);
    let span = hi.checked_sub(lo).filter(|&s| s > 0)?;
    let unit = span.div_ceil(MAX_CELLS).max(1);
    let mut place = vec![0u8; usize::try_from(span.div_ceil(unit)).ok()?];
    let mut counts = vec![0u64; gpu_ids.len() + 1];
    let mut resident: Vec<Vec<(u64, u64)>> = vec![vec![(0, 0)]; gpu_ids.len()];
    let tbins = tbins.max(1);
    let abins = abins.max(1);
    let mut times = Vec::with_capacity(tbins);
    let mut cells = Vec::with_capacity(tbins);
    let mut next = 0;
    let snapshot = |place: &[u8]| -> Vec<u8> {
        (0..abins)
            .map(|i| {
                let a = place.len() * i / abins;
                let b = (place.len() * (i + 1) / abins).max(a + 1).min(place.len());
                let mut hist = [0u32; 256];
                for &c in &place[a.min(b)..b] {
                    hist[c as usize] += 1;
                }
                (0..=255u8)
                    .max_by_key(|&c| (hist[c as usize], std::cmp::Reverse(c)))
                    .unwrap_or(0)
            })
            .collect()
    };
    let gpus = 1..=gpu_ids.len();
    for j in 0..tbins {
        let until = end * (j as u64 + 1) / tbins as u64;
        while next < moves.len() && moves[next].at_ns <= until {
            let m = moves[next];
            let c = code(m.to, gpu_ids);
            let a = (m.page.clamp(lo, hi) - lo) / unit;
            let b = ((m.page + m.npages).clamp(lo, hi) - lo).div_ceil(unit);
            for p in &mut place[usize::try_from(a).ok()?..usize::try_from(b).ok()?] {
                if gpus.contains(&usize::from(*p)) {
                    counts[usize::from(*p)] -= unit;
                }
                *p = c;
                if gpus.contains(&usize::from(c)) {
                    counts[usize::from(c)] += unit;
                }
            }
            for (g, r) in resident.iter_mut().enumerate() {
                if r.last().map(|x| x.1) != Some(counts[g + 1]) {
                    r.push((m.at_ns, counts[g + 1]));
                }
            }
            next += 1;
        }
        times.push(until);
        cells.push(snapshot(&place));
    }
    Some(ResidencyMap {
        pages: (lo, hi),
        times,
        cells,
        resident,
    })
}

/// A span on a GPU's track, from a pair of SMI events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The GPU (gpu_id) whose track it is on.
    pub gpu_id: u32,
    /// What it is.
    pub name: String,
    /// When, ns.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// The pages it concerns: the faulting page, or the migrated run.
    pub page: u64,
    /// See `page`.
    pub npages: u64,
    /// A migration's cause.
    pub trigger: Option<MigrateTrigger>,
    /// Arguments shown on selection: counts as numbers, addresses and
    /// places as text.
    pub args: Vec<(&'static str, serde_json::Value)>,
}

/// Faults and migrations as spans, queue evictions as spans to their
/// restore, from the SMI stream.
pub fn smi_spans(o: &Outcome) -> (Vec<Span>, Vec<Span>, Vec<Span>) {
    let mut faults = Vec::new();
    let mut migs = Vec::new();
    let mut queues = Vec::new();
    let mut open_fault: BTreeMap<(GpuId, PageNum), (u64, bool)> = BTreeMap::new();
    let mut open_mig: BTreeMap<(GpuId, PageNum, PageCount), u64> = BTreeMap::new();
    let mut open_q: BTreeMap<GpuId, u64> = BTreeMap::new();
    for e in &o.events {
        let ts = e.event.ts_ns;
        match e.event.kind {
            Kind::PageFaultStart {
                addr,
                gpu_id,
                write,
            } => {
                open_fault.insert((gpu_id, addr), (ts, write));
            }
            Kind::PageFaultEnd {
                addr,
                gpu_id,
                migrated,
            } => {
                if let Some((start, write)) = open_fault.remove(&(gpu_id, addr)) {
                    faults.push(Span {
                        gpu_id: gpu_id.raw(),
                        name: if migrated {
                            "fault (migrated)"
                        } else {
                            "fault (mapped)"
                        }
                        .into(),
                        start_ns: start,
                        end_ns: ts.max(start),
                        page: addr.raw(),
                        npages: 1,
                        trigger: None,
                        args: vec![
                            ("address", format!("{:#x}", addr.va().raw()).into()),
                            ("access", if write { "write" } else { "read" }.into()),
                        ],
                    });
                }
            }
            Kind::MigrateStart { start, npages, .. } => {
                open_mig.insert((e.gpu_id, start, npages), ts);
            }
            Kind::MigrateEnd {
                start,
                npages,
                from,
                to,
                trigger,
                ..
            } => {
                if let Some(s) = open_mig.remove(&(e.gpu_id, start, npages)) {
                    let place = |l: Location| match l {
                        Location::Sys => "system memory".to_string(),
                        Location::Vram(g) => o.gpu_name(g.raw()),
                    };
                    migs.push(Span {
                        gpu_id: e.gpu_id.raw(),
                        name: format!("migrate: {}", trigger.name()),
                        start_ns: s,
                        end_ns: ts.max(s),
                        page: start.raw(),
                        npages: npages.raw(),
                        trigger: Some(trigger),
                        args: vec![
                            ("pages", npages.raw().into()),
                            ("bytes", npages.raw().saturating_mul(4096).into()),
                            ("address", format!("{:#x}", start.va().raw()).into()),
                            ("from", place(from).into()),
                            ("to", place(to).into()),
                        ],
                    });
                }
            }
            Kind::QueueEviction { gpu_id, .. } => {
                open_q.entry(gpu_id).or_insert(ts);
            }
            Kind::QueueRestore {
                gpu_id,
                rescheduled,
            } => {
                if !rescheduled && let Some(s) = open_q.remove(&gpu_id) {
                    queues.push(Span {
                        gpu_id: gpu_id.raw(),
                        name: "queues evicted".into(),
                        start_ns: s,
                        end_ns: ts.max(s),
                        page: 0,
                        npages: 0,
                        trigger: None,
                        args: Vec::new(),
                    });
                }
            }
            Kind::UnmapFromGpu { .. } => {}
        }
    }
    (faults, migs, queues)
}

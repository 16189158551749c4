//! The workloads: each a kernel (or a few) and the CPU computation it is
//! checked against.
//!
//! A wave instruction moves at most 256 bytes (64 lanes of 4 bytes), as a
//! GCN/CDNA wave's coalesced load does; loops below step by that.
//!
//! Indices here are word counts of buffers that live in this process's
//! memory, so they fit `usize` and `u32` lane values by construction; the
//! casts between them are not checked one by one.
#![allow(clippy::cast_possible_truncation)]

use svm_sim::machine::WaveCtx;
use svm_sim::mm::Mark;

use crate::{Params, Run, Workload, WorkloadError, kernel};

/// Bytes of one wave instruction.
const LANE_BYTES: u64 = 256;

/// Every workload, in the order `svmsim workloads` lists them.
pub static ALL: [&(dyn Workload + Sync); 17] = [
    &Stream,
    &Gemm,
    &Stencil2d,
    &Conv3d,
    &Bfs,
    &Gups,
    &Pathfinder,
    &Reduction,
    &MultiGpuSplit,
    &PingPong,
    &SharedBuffer,
    &ProducerConsumer,
    &UnregisteredHeap,
    &FirstTouch,
    &FalseSharing,
    &ReadShared,
    &Histogram,
];

fn seq(n: usize, f: impl Fn(u32) -> u32) -> Vec<u32> {
    (0..n)
        .map(|i| f(u32::try_from(i).unwrap_or(u32::MAX)))
        .collect()
}

fn bad(workload: &'static str, why: impl Into<String>) -> WorkloadError {
    WorkloadError::Params {
        workload,
        why: why.into(),
    }
}

/// Words per array, from a byte size split over `arrays` arrays, in whole
/// wave instructions.
fn words_per(p: &Params, arrays: u64, name: &'static str) -> Result<u64, WorkloadError> {
    let n = p.size / arrays / LANE_BYTES * LANE_BYTES / 4;
    if n == 0 {
        return Err(bad(
            name,
            format!("size {} is below {} bytes", p.size, arrays * LANE_BYTES),
        ));
    }
    Ok(n)
}

/// Loads `n` words at `a` in wave instructions.
async fn load(ctx: &WaveCtx, a: u64, n: u64) -> Vec<u32> {
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    load_into(ctx, a, n, &mut out).await;
    out
}

/// [`load`] onto the end of `out`.
async fn load_into(ctx: &WaveCtx, a: u64, n: u64, out: &mut Vec<u32>) {
    let mut off = 0;
    while off < n * 4 {
        let len = (n * 4 - off).min(LANE_BYTES);
        ctx.load_u32s_into(a + off, usize::try_from(len / 4).unwrap_or(0), out)
            .await;
        off += len;
    }
}

/// Stores words at `a` in wave instructions.
async fn store(ctx: &WaveCtx, a: u64, v: &[u32]) {
    for (i, chunk) in v.chunks((LANE_BYTES / 4) as usize).enumerate() {
        ctx.store_u32s(a + i as u64 * LANE_BYTES, chunk).await;
    }
}

/// An element-wise kernel over words `[base, base + n)`: each of the waves
/// takes `per` words, reads them from `src` (and `src2`, if given), and
/// writes `f` of them to `dst`.
fn elementwise(
    src: u64,
    src2: Option<u64>,
    dst: u64,
    base: u64,
    n: u64,
    per: u64,
    f: fn(u32, u32) -> u32,
) -> svm_sim::machine::KernelFn {
    kernel(move |w, ctx| async move {
        let lo = base + u64::from(w) * per;
        let hi = (lo + per).min(base + n);
        let mut i = lo;
        // (Three buffers for the whole wave: its loop allocates nothing.)
        let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
        while i < hi {
            let k = (hi - i).min(LANE_BYTES / 4);
            x.clear();
            load_into(&ctx, src + i * 4, k, &mut x).await;
            y.clear();
            match src2 {
                Some(b) => load_into(&ctx, b + i * 4, k, &mut y).await,
                None => y.resize(x.len(), 0),
            }
            z.clear();
            z.extend(x.iter().zip(&y).map(|(p, q)| f(*p, *q)));
            store(&ctx, dst + i * 4, &z).await;
            i += k;
        }
    })
}

/// Splits `n` items into at most `waves` chunks of whole wave instructions.
fn chunks(n: u64, waves: u64) -> (u32, u64) {
    let per = n.div_ceil(waves.max(1)).next_multiple_of(LANE_BYTES / 4);
    (u32::try_from(n.div_ceil(per)).unwrap_or(u32::MAX), per)
}

/// stream: `c = a + b` over three arrays, `iters` times.
struct Stream;

impl Workload for Stream {
    fn name(&self) -> &'static str {
        "stream"
    }
    fn describe(&self) -> &'static str {
        "vector add c = a + b over three arrays (size split in three); streaming faults, window by window"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn phantom_ready(&self) -> bool {
        true
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 3, self.name())?;
        let [a, b, c] = [0, 1, 2].map(|_| r.alloc(n * 4, &[0]));
        let (a, b, c) = (a?, b?, c?);
        let nu = usize::try_from(n).unwrap_or(0);
        r.write_u32s_with(a, nu, |i| i)?;
        r.write_u32s_with(b, nu, |i| i.wrapping_mul(7))?;
        let (waves, per) = chunks(n, 512);
        for _ in 0..p.iters.max(1) {
            r.launch(
                0,
                waves,
                elementwise(a, Some(b), c, 0, n, per, u32::wrapping_add),
            )?;
        }
        r.check_u32s(c, nu, |i| i.wrapping_mul(8))
    }
}

/// Tiled GEMM: `C = A × B` of N×N words, one 16×16 tile of C per wave.
struct Gemm;

const TILE: u64 = 16;

fn gemm_n(p: &Params) -> u64 {
    // Three N×N matrices of words in `size` bytes, N a multiple of the tile.
    let n = ((p.size / 12) as f64).sqrt() as u64 / TILE * TILE;
    n.max(TILE)
}

impl Workload for Gemm {
    fn name(&self) -> &'static str {
        "gemm"
    }
    fn describe(&self) -> &'static str {
        "tiled matrix multiply C = A x B (16x16 tiles, wrapping u32); reuse-heavy, row-strided access"
    }
    fn footprint(&self, p: &Params) -> u64 {
        3 * gemm_n(p) * gemm_n(p) * 4
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = gemm_n(p);
        let nn = usize::try_from(n * n).unwrap_or(0);
        let bytes = n * n * 4;
        let (a, b, c) = (
            r.alloc(bytes, &[0])?,
            r.alloc(bytes, &[0])?,
            r.alloc(bytes, &[0])?,
        );
        let (av, bv) = (|i: u32| i % 13 + 1, |i: u32| (i / 3) % 7);
        r.write_u32s_with(a, nn, av)?;
        r.write_u32s_with(b, nn, bv)?;
        let tiles = n / TILE;
        let waves = u32::try_from(tiles * tiles).unwrap_or(u32::MAX);
        r.launch(
            0,
            waves,
            kernel(move |w, ctx| async move {
                let (ti, tj) = (u64::from(w) / tiles, u64::from(w) % tiles);
                let mut acc = vec![0u32; (TILE * TILE) as usize];
                for tk in 0..tiles {
                    let mut at = Vec::new();
                    let mut bt = Vec::new();
                    for row in 0..TILE {
                        at.extend(
                            load(&ctx, a + ((ti * TILE + row) * n + tk * TILE) * 4, TILE).await,
                        );
                        bt.extend(
                            load(&ctx, b + ((tk * TILE + row) * n + tj * TILE) * 4, TILE).await,
                        );
                    }
                    ctx.compute(TILE * TILE * 4).await;
                    for i in 0..TILE as usize {
                        for j in 0..TILE as usize {
                            let mut s = acc[i * TILE as usize + j];
                            for k in 0..TILE as usize {
                                s = s.wrapping_add(
                                    at[i * TILE as usize + k]
                                        .wrapping_mul(bt[k * TILE as usize + j]),
                                );
                            }
                            acc[i * TILE as usize + j] = s;
                        }
                    }
                }
                for row in 0..TILE {
                    let lo = (row * TILE) as usize;
                    store(
                        &ctx,
                        c + ((ti * TILE + row) * n + tj * TILE) * 4,
                        &acc[lo..lo + TILE as usize],
                    )
                    .await;
                }
            }),
        )?;
        let nu = usize::try_from(n).unwrap_or(0);
        // The CPU reference, k outermost so that a row of B is made once
        // (wrapping sums do not care about the order).
        let mut want = vec![0u32; nn];
        let mut brow = vec![0u32; nu];
        for k in 0..nu {
            for (j, x) in brow.iter_mut().enumerate() {
                *x = bv((k * nu + j) as u32);
            }
            for i in 0..nu {
                let x = av((i * nu + k) as u32);
                for (w, &y) in want[i * nu..(i + 1) * nu].iter_mut().zip(&brow) {
                    *w = w.wrapping_add(x.wrapping_mul(y));
                }
            }
        }
        r.check_u32s(c, nn, |i| want[i as usize])
    }
}

/// The side of a square grid of words filling `bytes / arrays`.
fn side(p: &Params, arrays: u64) -> u64 {
    (((p.size / arrays / 4) as f64).sqrt() as u64 / 64 * 64).max(64)
}

/// One 5-point stencil step on the CPU (borders copied).
/// One row of a 5-point stencil step: the average of each inside word
/// and its four neighbours (the row's ends kept). The GPU kernel and the
/// CPU reference both use it: the check is of the memory system, which
/// must hand both the same rows.
fn stencil_row(up: &[u32], mid: &[u32], down: &[u32]) -> Vec<u32> {
    let mut out = mid.to_vec();
    for x in 1..mid.len().saturating_sub(1) {
        out[x] = mid[x]
            .wrapping_add(up[x])
            .wrapping_add(down[x])
            .wrapping_add(mid[x - 1])
            .wrapping_add(mid[x + 1])
            / 5;
    }
    out
}

/// The rows of a square grid after `steps` 5-point stencil steps (border
/// kept), made in order: each step keeps the last three rows it made,
/// which is all the next step needs, so the reference costs
/// `3 × steps` rows rather than grids.
struct StencilRows<F> {
    side: usize,
    init: F,
    /// Per step (0: the input): the next row to make, and the last three
    /// made.
    levels: Vec<(usize, KeptRows)>,
}

/// A step's last rows made: (row index, words).
type KeptRows = std::collections::VecDeque<(usize, Vec<u32>)>;

impl<F: Fn(u32) -> u32> StencilRows<F> {
    fn new(side: usize, steps: usize, init: F) -> Self {
        Self {
            side,
            init,
            levels: vec![(0, KeptRows::new()); steps + 1],
        }
    }

    /// Row `i` after every step; rows are asked for in order.
    fn row(&mut self, i: usize) -> &[u32] {
        let top = self.levels.len() - 1;
        self.advance(top, i);
        let w = &self.levels[top].1;
        &w.iter().find(|(k, _)| *k == i).expect("row just made").1
    }

    /// Makes step `t`'s rows up to `i`.
    fn advance(&mut self, t: usize, i: usize) {
        let side = self.side;
        while self.levels[t].0 <= i {
            let j = self.levels[t].0;
            let row = if t == 0 {
                (0..side)
                    .map(|x| (self.init)(u32::try_from(j * side + x).unwrap_or(u32::MAX)))
                    .collect()
            } else {
                self.advance(t - 1, (j + 1).min(side - 1));
                let prev = &self.levels[t - 1].1;
                let get = |k: usize| &prev.iter().find(|(n, _)| *n == k).expect("kept").1;
                let mid = get(j);
                if j == 0 || j + 1 == side {
                    mid.clone()
                } else {
                    stencil_row(get(j - 1), mid, get(j + 1))
                }
            };
            let level = &mut self.levels[t];
            level.1.push_back((j, row));
            if level.1.len() > 3 {
                level.1.pop_front();
            }
            level.0 += 1;
        }
    }
}

/// 2D stencil (hotspot-like): 5-point average, ping-ponging two grids.
struct Stencil2d;

impl Workload for Stencil2d {
    fn name(&self) -> &'static str {
        "stencil2d"
    }
    fn describe(&self) -> &'static str {
        "2D 5-point stencil (hotspot) over two ping-pong grids; neighbour rows shared between waves"
    }
    fn footprint(&self, p: &Params) -> u64 {
        2 * side(p, 2) * side(p, 2) * 4
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let s = side(p, 2);
        let su = usize::try_from(s).unwrap_or(0);
        let bytes = s * s * 4;
        let bufs = [r.alloc(bytes, &[0])?, r.alloc(bytes, &[0])?];
        let init = |i: u32| i.wrapping_mul(2_654_435_761) >> 8;
        r.write_u32s_with(bufs[0], su * su, init)?;
        r.write_u32s_with(bufs[1], su * su, init)?;
        let iters = p.iters.max(1) as usize;
        for it in 0..iters {
            let (src, dst) = (bufs[it % 2], bufs[(it + 1) % 2]);
            // One wave per interior row.
            r.launch(
                0,
                u32::try_from(s - 2).unwrap_or(0),
                kernel(move |w, ctx| async move {
                    let i = u64::from(w) + 1;
                    let up = load(&ctx, src + (i - 1) * s * 4, s).await;
                    let mid = load(&ctx, src + i * s * 4, s).await;
                    let down = load(&ctx, src + (i + 1) * s * 4, s).await;
                    store(&ctx, dst + i * s * 4, &stencil_row(&up, &mid, &down)).await;
                }),
            )?;
        }
        let last = bufs[iters % 2];
        // The CPU reference, row by row in order (three rows a step kept,
        // not a grid).
        let mut rows = StencilRows::new(su, iters, init);
        let mut row = (usize::MAX, Vec::new());
        r.check_u32s(last, su * su, |i| {
            let (at, j) = (i as usize / su, i as usize % su);
            if row.0 != at {
                row = (at, rows.row(at).to_vec());
            }
            row.1[j]
        })
    }
}

/// 3D convolution: a 7-point stencil on a cube, one wave per (z, y) row.
struct Conv3d;

fn cube(p: &Params) -> u64 {
    (((p.size / 8) as f64).cbrt() as u64 / 16 * 16).max(16)
}

impl Workload for Conv3d {
    fn name(&self) -> &'static str {
        "conv3d"
    }
    fn describe(&self) -> &'static str {
        "3D 7-point convolution on a cube (SRAD-like volume pass); plane-strided access"
    }
    fn footprint(&self, p: &Params) -> u64 {
        2 * cube(p).pow(3) * 4
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let d = cube(p);
        let du = usize::try_from(d).unwrap_or(0);
        let bytes = d * d * d * 4;
        let (src, dst) = (r.alloc(bytes, &[0])?, r.alloc(bytes, &[0])?);
        let init = |i: u32| i % 1009;
        r.write_u32s_with(src, du * du * du, init)?;
        r.write_u32s_with(dst, du * du * du, init)?;
        let rows = u32::try_from((d - 2) * (d - 2)).unwrap_or(0);
        r.launch(
            0,
            rows,
            kernel(move |w, ctx| async move {
                let (z, y) = (u64::from(w) / (d - 2) + 1, u64::from(w) % (d - 2) + 1);
                let row = |zz: u64, yy: u64| src + ((zz * d + yy) * d) * 4;
                let c = load(&ctx, row(z, y), d).await;
                let n = [
                    load(&ctx, row(z - 1, y), d).await,
                    load(&ctx, row(z + 1, y), d).await,
                    load(&ctx, row(z, y - 1), d).await,
                    load(&ctx, row(z, y + 1), d).await,
                ];
                let mut out = c.clone();
                for x in 1..d as usize - 1 {
                    let mut s = c[x]
                        .wrapping_mul(2)
                        .wrapping_add(c[x - 1])
                        .wrapping_add(c[x + 1]);
                    for v in &n {
                        s = s.wrapping_add(v[x]);
                    }
                    out[x] = s;
                }
                store(&ctx, dst + ((z * d + y) * d) * 4, &out).await;
            }),
        )?;
        // The CPU reference, point by point from the input's formula: the
        // border keeps its input, the inside is the 7-point sum.
        let d32 = u32::try_from(d).unwrap_or(u32::MAX);
        let want = move |i: u32| {
            let (z, y, x) = (i / (d32 * d32), i / d32 % d32, i % d32);
            let inside = |v: u32| v > 0 && v + 1 < d32;
            if !(inside(z) && inside(y) && inside(x)) {
                return init(i);
            }
            let (dy, dz) = (d32, d32 * d32);
            [i - 1, i + 1, i - dz, i + dz, i - dy, i + dy]
                .into_iter()
                .fold(init(i).wrapping_mul(2), |s, j| s.wrapping_add(init(j)))
        };
        r.check_u32s(dst, du * du * du, want)
    }
}

/// BFS on a seeded random graph (CSR), level-synchronous: one kernel per
/// level, one wave per 64 vertices.
struct Bfs;

const DEGREE: u64 = 8;

fn bfs_vertices(p: &Params) -> u64 {
    // offsets + edges + levels: (1 + DEGREE + 1) words per vertex.
    (p.size / ((2 + DEGREE) * 4) / 64 * 64).max(64)
}

impl Workload for Bfs {
    fn name(&self) -> &'static str {
        "bfs"
    }
    fn describe(&self) -> &'static str {
        "level-synchronous BFS on a seeded random graph (CSR); irregular, data-dependent gathers"
    }
    fn footprint(&self, p: &Params) -> u64 {
        bfs_vertices(p) * (2 + DEGREE) * 4
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let v = bfs_vertices(p);
        let vu = usize::try_from(v).unwrap_or(0);
        // Edge j goes to a vertex drawn from the seed and j alone, so the
        // CPU reference makes it again rather than keep the graph.
        let seed = p.seed;
        let vertices = u32::try_from(v).unwrap_or(u32::MAX);
        let edge = move |j: u32| -> u32 {
            let mut x = seed ^ u64::from(j).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 31;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 29;
            u32::try_from(x % u64::from(vertices)).unwrap_or(0)
        };
        let (o, e, l) = (
            r.alloc((v + 1) * 4, &[0])?,
            r.alloc(v * DEGREE * 4, &[0])?,
            r.alloc(v * 4, &[0])?,
        );
        r.write_u32s_with(o, vu + 1, |i| i * DEGREE as u32)?;
        r.write_u32s_with(e, vu * DEGREE as usize, edge)?;
        let unvisited = |i: u32| if i == 0 { 0 } else { u32::MAX };
        r.write_u32s_with(l, vu, unvisited)?;
        // The CPU reference.
        let mut want: Vec<u32> = (0..vertices).map(unvisited).collect();
        // (Frontiers of u32 vertex numbers: at the widest level they are
        // a good part of the vertices.)
        let mut frontier = vec![0u32];
        let mut next = Vec::new();
        let mut depth = 0u32;
        while !frontier.is_empty() {
            next.clear();
            for &x in &frontier {
                let first = x * DEGREE as u32;
                for j in first..first + DEGREE as u32 {
                    let y = edge(j);
                    if want[y as usize] == u32::MAX {
                        want[y as usize] = depth + 1;
                        next.push(y);
                    }
                }
            }
            std::mem::swap(&mut frontier, &mut next);
            depth += 1;
        }
        // The GPU: each level scans every vertex of that level and labels
        // its unvisited neighbours (writes of the same value race benignly).
        for level in 0..depth {
            r.launch(
                0,
                u32::try_from(v / 64).unwrap_or(0),
                kernel(move |w, ctx| async move {
                    let base = u64::from(w) * 64;
                    let mine = load(&ctx, l + base * 4, 64).await;
                    for (k, &lv) in mine.iter().enumerate() {
                        if lv != level {
                            continue;
                        }
                        let x = base + k as u64;
                        let nb = load(&ctx, e + x * DEGREE * 4, DEGREE).await;
                        for y in nb {
                            let cur = ctx.load_u32s(l + u64::from(y) * 4, 1).await;
                            if cur[0] == u32::MAX {
                                ctx.store_u32s(l + u64::from(y) * 4, &[level + 1]).await;
                            }
                        }
                    }
                }),
            )?;
        }
        r.check_u32s(l, vu, |i| want[i as usize])
    }
}

/// GUPS: random read-modify-write updates; each wave owns a slice of the
/// table so that the result is exact.
struct Gups;

impl Workload for Gups {
    fn name(&self) -> &'static str {
        "gups"
    }
    fn describe(&self) -> &'static str {
        "GUPS random updates (table[i] ^= v, seeded indices); one page per access, no locality"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 1, self.name())?;
        let nu = usize::try_from(n).unwrap_or(0);
        let t = r.alloc(n * 4, &[0])?;
        r.write_u32s_with(t, nu, |i| i)?;
        let waves = 256u64.min(n / 64);
        let slice = n / waves;
        let updates = 64 * u64::from(p.iters.max(1));
        let seed = p.seed;
        let idx = move |w: u64, u: u64| -> (u64, u32) {
            let mut x = seed ^ (w << 32) ^ u;
            x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            ((x % slice) + w * slice, (x >> 32) as u32)
        };
        r.launch(
            0,
            u32::try_from(waves).unwrap_or(0),
            kernel(move |w, ctx| async move {
                for u in 0..updates {
                    let (i, v) = idx(u64::from(w), u);
                    let cur = ctx.load_u32s(t + i * 4, 1).await;
                    ctx.store_u32s(t + i * 4, &[cur[0] ^ v]).await;
                }
            }),
        )?;
        // The CPU reference: word i is i, XORed with every update that
        // hit it (a map of the words updated, not a copy of the table).
        let mut hit: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
        for w in 0..waves {
            for u in 0..updates {
                let (i, v) = idx(w, u);
                *hit.entry(i).or_insert(0) ^= v;
            }
        }
        r.check_u32s(t, nu, |i| i ^ hit.get(&u64::from(i)).copied().unwrap_or(0))
    }
}

/// Pathfinder: row-by-row dynamic programming, one kernel per row.
struct Pathfinder;

impl Workload for Pathfinder {
    fn name(&self) -> &'static str {
        "pathfinder"
    }
    fn describe(&self) -> &'static str {
        "pathfinder dynamic programming: one launch per row, each reading the last row's costs"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let rows = u64::from(p.iters.max(2)) + 1;
        let cols = (p.size / 4 / (rows + 2) / 64 * 64).max(64);
        let cu = usize::try_from(cols).unwrap_or(0);
        let wall = r.alloc(rows * cols * 4, &[0])?;
        let bufs = [r.alloc(cols * 4, &[0])?, r.alloc(cols * 4, &[0])?];
        // The wall's costs come from a formula, so the CPU reference
        // keeps one row, not the wall.
        let wv = |i: u32| i.wrapping_mul(40503) % 10;
        r.write_u32s_with(wall, cu * rows as usize, wv)?;
        r.write_u32s_with(bufs[0], cu, wv)?;
        let mut want = seq(cu, wv);
        for row in 1..rows {
            let (src, dst) = (bufs[(row as usize + 1) % 2], bufs[row as usize % 2]);
            r.launch(
                0,
                u32::try_from(cols / 64).unwrap_or(0),
                kernel(move |w, ctx| async move {
                    let lo = u64::from(w) * 64;
                    let from = lo.saturating_sub(1);
                    let to = (lo + 65).min(cols);
                    let prev = load(&ctx, src + from * 4, to - from).await;
                    let cost = load(&ctx, wall + (row * cols + lo) * 4, 64).await;
                    let mut out = Vec::with_capacity(64);
                    for k in 0..64u64 {
                        let j = lo + k;
                        let at = |x: u64| prev[(x - from) as usize];
                        let mut m = at(j);
                        if j > 0 {
                            m = m.min(at(j - 1));
                        }
                        if j + 1 < cols {
                            m = m.min(at(j + 1));
                        }
                        out.push(cost[k as usize].wrapping_add(m));
                    }
                    store(&ctx, dst + lo * 4, &out).await;
                }),
            )?;
            // In place (a row is a fifth of the data): `left` keeps the
            // last row's word the one before just replaced.
            let base = row as usize * cu;
            let mut left = u32::MAX;
            for j in 0..cu {
                let old = want[j];
                let mut m = old.min(left);
                if j + 1 < cu {
                    m = m.min(want[j + 1]);
                }
                want[j] = wv((base + j) as u32).wrapping_add(m);
                left = old;
            }
        }
        r.check_u32s(bufs[(rows as usize - 1) % 2], cu, |i| want[i as usize])
    }
}

/// Tree reduction: each wave sums its chunk, then one wave sums those.
struct Reduction;

impl Workload for Reduction {
    fn name(&self) -> &'static str {
        "reduction"
    }
    fn describe(&self) -> &'static str {
        "tree reduction (wrapping sum) in two launches: read-once streaming, then a tiny second pass"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 1, self.name())?;
        let nu = usize::try_from(n).unwrap_or(0);
        let a = r.alloc(n * 4, &[0])?;
        let data = |i: u32| i.wrapping_mul(2_246_822_519);
        r.write_u32s_with(a, nu, data)?;
        let (waves, per) = chunks(n, 256);
        let part = r.alloc(u64::from(waves).next_multiple_of(64) * 4, &[0])?;
        r.launch(
            0,
            waves,
            kernel(move |w, ctx| async move {
                let lo = u64::from(w) * per;
                let hi = (lo + per).min(n);
                // Summed an instruction at a time: a wave's share is
                // 1/256 of the data, and all waves hold theirs at once.
                let (mut s, mut v, mut i) = (0u32, Vec::new(), lo);
                while i < hi {
                    let k = (hi - i).min(LANE_BYTES / 4);
                    v.clear();
                    load_into(&ctx, a + i * 4, k, &mut v).await;
                    s = v.iter().fold(s, |x, y| x.wrapping_add(*y));
                    i += k;
                }
                ctx.store_u32s(part + u64::from(w) * 4, &[s]).await;
            }),
        )?;
        let out = r.alloc(LANE_BYTES, &[0])?;
        r.launch(
            0,
            1,
            kernel(move |_, ctx| async move {
                let v = load(&ctx, part, u64::from(waves)).await;
                let s = v.iter().fold(0u32, |x, y| x.wrapping_add(*y));
                ctx.store_u32s(out, &[s]).await;
            }),
        )?;
        let want = (0..n as u32).fold(0u32, |x, i| x.wrapping_add(data(i)));
        Ok(r.read_u32s(out, 1)? == [want])
    }
}

/// Data-parallel vector add split across two GPUs.
struct MultiGpuSplit;

impl Workload for MultiGpuSplit {
    fn name(&self) -> &'static str {
        "multi-gpu-split"
    }
    fn describe(&self) -> &'static str {
        "vector add split in halves over two GPUs at once; each GPU pulls only its half"
    }
    fn gpus(&self) -> usize {
        2
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn phantom_ready(&self) -> bool {
        true
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 3, self.name())? / 128 * 128;
        let nu = usize::try_from(n).unwrap_or(0);
        let arrays: Result<Vec<u64>, _> = (0..3).map(|_| r.alloc(n * 4, &[0, 1])).collect();
        let [a, b, c] = <[u64; 3]>::try_from(arrays?).expect("three arrays");
        r.write_u32s_with(a, nu, |i| i)?;
        r.write_u32s_with(b, nu, |i| i ^ 0x55)?;
        let half = n / 2;
        let (waves, per) = chunks(half, 256);
        let part = |base| elementwise(a, Some(b), c, base, half, per, u32::wrapping_add);
        r.launch_all(vec![(0, waves, part(0)), (1, waves, part(half))])?;
        r.check_u32s(c, nu, |i| i.wrapping_add(i ^ 0x55))
    }
}

/// Two GPUs take turns incrementing one shared buffer.
struct PingPong;

impl Workload for PingPong {
    fn name(&self) -> &'static str {
        "ping-pong"
    }
    fn describe(&self) -> &'static str {
        "two GPUs take turns incrementing one shared buffer; every turn migrates it back and forth"
    }
    fn gpus(&self) -> usize {
        2
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn phantom_ready(&self) -> bool {
        true
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 1, self.name())?;
        let nu = usize::try_from(n).unwrap_or(0);
        let a = r.alloc(n * 4, &[0, 1])?;
        // (Not `fill_u32s`: every page is written by the first turn, and
        // copying a shared page then costs more than writing it now.)
        r.write_u32s_with(a, nu, |_| 0)?;
        let (waves, per) = chunks(n, 256);
        let turns = p.iters.max(2);
        for t in 0..turns {
            let g = usize::try_from(t % 2).unwrap_or(0);
            r.launch(g, waves, elementwise(a, None, a, 0, n, per, |x, _| x + 1))?;
        }
        r.check_u32s(a, nu, |_| turns)
    }
}

/// The review thread's situation: two GPUs touch overlapping parts of one
/// buffer the CPU filled, with XNACK on.
///
/// GPU 0 updates the first half; GPU 1 then updates the middle half, half
/// of it GPU 0's data and half of it never touched by a GPU. Whether the
/// first fault moves the whole buffer or one window, where the pages end up,
/// and what GPU 1 pays for pages GPU 0 pulled away, is what the policies
/// differ on.
struct SharedBuffer;

impl Workload for SharedBuffer {
    fn name(&self) -> &'static str {
        "shared-buffer"
    }
    fn describe(&self) -> &'static str {
        "two GPUs update overlapping halves of one CPU-filled buffer, in turns (the partial-migration review's case)"
    }
    fn gpus(&self) -> usize {
        2
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 4, self.name())? * 4;
        let nu = usize::try_from(n).unwrap_or(0);
        let a = r.alloc(n * 4, &[0, 1])?;
        r.write_u32s_with(a, nu, |i| i.wrapping_mul(7))?;
        let half = n / 2;
        let iters = p.iters.max(1);
        for _ in 0..iters {
            let (waves, per) = chunks(half, 256);
            // GPU 0: words [0, n/2) += 1.
            r.launch(
                0,
                waves,
                elementwise(a, None, a, 0, half, per, |x, _| x.wrapping_add(1)),
            )?;
            // GPU 1: words [n/4, 3n/4) *= 3.
            r.launch(
                1,
                waves,
                elementwise(a, None, a, n / 4, half, per, |x, _| x.wrapping_mul(3)),
            )?;
        }
        // The CPU reference, word by word: each turn adds 1 to the first
        // half, then triples the middle half.
        let want = move |i: u32| {
            let (add, mul) = (
                u64::from(i) < half,
                (n / 4..n / 4 + half).contains(&u64::from(i)),
            );
            (0..iters).fold(i.wrapping_mul(7), |w, _| {
                let w = if add { w.wrapping_add(1) } else { w };
                if mul { w.wrapping_mul(3) } else { w }
            })
        };
        r.check_u32s(a, nu, want)
    }
}

/// The CPU produces, the GPU consumes, in turns.
struct ProducerConsumer;

impl Workload for ProducerConsumer {
    fn name(&self) -> &'static str {
        "producer-consumer"
    }
    fn describe(&self) -> &'static str {
        "CPU threads write a buffer, a GPU kernel doubles it into another, the CPU reads it back; in turns"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 2, self.name())?;
        let nu = usize::try_from(n).unwrap_or(0);
        let (inp, out) = (r.alloc(n * 4, &[0])?, r.alloc(n * 4, &[0])?);
        let (waves, per) = chunks(n, 256);
        let mut ok = true;
        for t in 0..p.iters.max(1) {
            // Four producer threads, in the GPU's timeline.
            let (threads, tper) = chunks(n, 4);
            r.launch_cpu(
                threads,
                kernel(move |w, ctx| async move {
                    let lo = u64::from(w) * tper;
                    let hi = (lo + tper).min(n);
                    // Made an instruction at a time: a thread's share is
                    // a quarter of the data.
                    let mut v = Vec::new();
                    let mut i = lo;
                    while i < hi {
                        let k = (hi - i).min(LANE_BYTES / 4);
                        v.clear();
                        v.extend((i..i + k).map(|x| (x as u32) ^ t));
                        store(&ctx, inp + i * 4, &v).await;
                        i += k;
                    }
                }),
            )?;
            r.launch(
                0,
                waves,
                elementwise(inp, None, out, 0, n, per, |x, _| x.wrapping_mul(2)),
            )?;
            ok &= r.check_u32s(out, nu, |i| (i ^ t).wrapping_mul(2))?;
        }
        Ok(ok)
    }
}

/// Two GPUs at once on the two halves of every page: each page is wanted
/// by both, all the time.
struct FalseSharing;

impl Workload for FalseSharing {
    fn name(&self) -> &'static str {
        "false-sharing"
    }
    fn describe(&self) -> &'static str {
        "two GPUs at once each increment their own half of every page, iters times: pages thrash between them"
    }
    fn gpus(&self) -> usize {
        2
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn phantom_ready(&self) -> bool {
        true
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        // Words per page, and per half.
        const PAGE_WORDS: u64 = 1024;
        const HALF: u64 = PAGE_WORDS / 2;
        let n = words_per(p, 1, self.name())? / PAGE_WORDS * PAGE_WORDS;
        if n == 0 {
            return Err(bad(self.name(), "size must be at least one page"));
        }
        let nu = usize::try_from(n).unwrap_or(0);
        let a = r.alloc(n * 4, &[0, 1])?;
        r.write_u32s_with(a, nu, |_| 0)?;
        let pages = n / PAGE_WORDS;
        let passes = p.iters.max(1);
        // One wave per 16 pages on each GPU, each pass over its pages'
        // halves.
        let per = 16;
        let waves = u32::try_from(pages.div_ceil(per)).unwrap_or(u32::MAX);
        let half = move |g: u64| {
            kernel(move |w, ctx| async move {
                let lo = u64::from(w) * per;
                let hi = (lo + per).min(pages);
                let mut v = Vec::new();
                for _ in 0..passes {
                    for pg in lo..hi {
                        let at = a + (pg * PAGE_WORDS + g * HALF) * 4;
                        v.clear();
                        load_into(&ctx, at, HALF, &mut v).await;
                        for x in &mut v {
                            *x += 1;
                        }
                        store(&ctx, at, &v).await;
                    }
                }
            })
        };
        r.launch_all(vec![(0, waves, half(0)), (1, waves, half(1))])?;
        r.check_u32s(a, nu, |_| passes)
    }
}

/// Two GPUs at once read one table, marked read-mostly, each into an
/// output of its own: weights broadcast to every GPU.
struct ReadShared;

impl Workload for ReadShared {
    fn name(&self) -> &'static str {
        "read-shared"
    }
    fn describe(&self) -> &'static str {
        "two GPUs at once read one GPU_READ_MOSTLY table into outputs of their own, iters passes: read duplication's case"
    }
    fn gpus(&self) -> usize {
        2
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn phantom_ready(&self) -> bool {
        true
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        use svm_core::uapi::{SvmAttribute, attr_type, flag};
        // Whole pages: the table's flags are set over it alone.
        let n = words_per(p, 3, self.name())? / 1024 * 1024;
        if n == 0 {
            return Err(bad(self.name(), "size must be at least three pages"));
        }
        let nu = usize::try_from(n).unwrap_or(0);
        let table = r.alloc(n * 4, &[0, 1])?;
        r.set_attr(
            table,
            n * 4,
            vec![SvmAttribute::new(
                attr_type::SET_FLAGS,
                flag::GPU_READ_MOSTLY,
            )],
        )?;
        let (out0, out1) = (r.alloc(n * 4, &[0])?, r.alloc(n * 4, &[1])?);
        r.write_u32s_with(table, nu, |i| i.wrapping_mul(7))?;
        let (waves, per) = chunks(n, 256);
        for _ in 0..p.iters.max(1) {
            r.launch_all(vec![
                (
                    0,
                    waves,
                    elementwise(table, None, out0, 0, n, per, |x, _| x.wrapping_add(1)),
                ),
                (
                    1,
                    waves,
                    elementwise(table, None, out1, 0, n, per, |x, _| x.wrapping_mul(3)),
                ),
            ])?;
        }
        let ok = r.check_u32s(out0, nu, |i| i.wrapping_mul(7).wrapping_add(1))?;
        Ok(ok && r.check_u32s(out1, nu, |i| i.wrapping_mul(21))?)
    }
}

/// Bins of [`Histogram`]: four pages of words.
const BINS: u64 = 4096;

/// The bin of input word `i` (a multiplicative hash's top bits).
fn bin_of(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761) >> 20
}

/// A histogram as GPU codes write one: each wave counts its slice of the
/// input into bins of its own, then adds them to the global bins with
/// atomics; the bins prefer system memory, where the host reads them
/// after each pass.
struct Histogram;

impl Workload for Histogram {
    fn name(&self) -> &'static str {
        "histogram"
    }
    fn describe(&self) -> &'static str {
        "waves count keys into private bins and add them to 4096 global bins with atomics; the bins prefer system memory and the CPU reads them after each of iters passes: the atomics' case"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size + BINS * 4
    }
    fn phantom_ready(&self) -> bool {
        false
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        use svm_core::uapi::{SVM_LOCATION_SYSMEM, SvmAttribute, attr_type};
        let n = words_per(p, 1, self.name())?;
        let nu = usize::try_from(n).unwrap_or(0);
        let input = r.alloc(n * 4, &[0])?;
        let bins = r.alloc(BINS * 4, &[0])?;
        r.set_attr(
            bins,
            BINS * 4,
            vec![SvmAttribute::new(
                attr_type::PREFERRED_LOC,
                SVM_LOCATION_SYSMEM,
            )],
        )?;
        r.write_u32s_with(input, nu, bin_of)?;
        let binsu = usize::try_from(BINS).unwrap_or(0);
        r.write_u32s_with(bins, binsu, |_| 0)?;
        let mut want = vec![0u32; binsu];
        for i in 0..u32::try_from(n).unwrap_or(u32::MAX) {
            want[bin_of(i) as usize] += 1;
        }
        let (waves, per) = chunks(n, 256);
        let mut ok = true;
        for pass in 1..=p.iters.max(1) {
            r.launch(
                0,
                waves,
                kernel(move |w, ctx| async move {
                    let lo = u64::from(w) * per;
                    let hi = (lo + per).min(n);
                    let (mut mine, mut v, mut i) = (vec![0u32; binsu], Vec::new(), lo);
                    while i < hi {
                        let k = (hi - i).min(LANE_BYTES / 4);
                        v.clear();
                        load_into(&ctx, input + i * 4, k, &mut v).await;
                        for &key in &v {
                            mine[key as usize % binsu] += 1;
                        }
                        i += k;
                    }
                    let lane = (LANE_BYTES / 4) as usize;
                    for (c, chunk) in mine.chunks(lane).enumerate() {
                        if chunk.iter().any(|&x| x != 0) {
                            let at = bins + (c * lane) as u64 * 4;
                            ctx.atomic_add_u32s(at, chunk).await;
                        }
                    }
                }),
            )?;
            let got = r.read_u32s(bins, binsu)?;
            ok &= got
                .iter()
                .zip(&want)
                .all(|(g, w)| *g == w.wrapping_mul(pass));
        }
        Ok(ok)
    }
}

/// Heap memory never registered with SVM: the GPU reaches it through
/// unregistered ranges that prefer system memory.
struct UnregisteredHeap;

impl Workload for UnregisteredHeap {
    fn name(&self) -> &'static str {
        "unregistered-heap"
    }
    fn describe(&self) -> &'static str {
        "malloc-like heap never registered: GPU faults create unregistered ranges that stay in system memory"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn phantom_ready(&self) -> bool {
        true
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let n = words_per(p, 1, self.name())?;
        let nu = usize::try_from(n).unwrap_or(0);
        let a = r.alloc_unregistered(n * 4, Mark::Heap)?;
        r.write_u32s_with(a, nu, |i| i)?;
        let (waves, per) = chunks(n, 256);
        r.launch(
            0,
            waves,
            elementwise(a, None, a, 0, n, per, |x, _| x.wrapping_add(1)),
        )?;
        r.check_u32s(a, nu, |i| i.wrapping_add(1))
    }
}

/// First touch over every GPU of the machine: the footprint split evenly,
/// each GPU granted ACCESS to its share only, its waves loading one word
/// of every page of it, `iters` passes (the first faults everything in,
/// the rest hit). Nothing was written, so every word must read zero.
pub(crate) struct FirstTouch;

/// Pages a first-touch wave loads from.
const TOUCH_WAVE_PAGES: u64 = 64;

impl FirstTouch {
    /// Each GPU's share of `size` over `gpus`: whole pages.
    pub(crate) fn share(size: u64, gpus: u64) -> u64 {
        size / gpus.max(1) / 4096 * 4096
    }
}

impl Workload for FirstTouch {
    fn name(&self) -> &'static str {
        "first-touch"
    }
    fn describe(&self) -> &'static str {
        "every GPU of the machine (--gpus N) touches each page of its share once per pass; \
         with --phantom, footprints far beyond host memory"
    }
    fn footprint(&self, p: &Params) -> u64 {
        p.size
    }
    fn phantom_ready(&self) -> bool {
        true
    }
    fn run(&self, r: &mut Run<'_>, p: &Params) -> Result<bool, WorkloadError> {
        let gpus = r.gpu_ids.len();
        let share = Self::share(p.size, gpus as u64);
        if share == 0 {
            return Err(bad(
                self.name(),
                format!("size {} is below a page per GPU ({gpus} GPUs)", p.size),
            ));
        }
        let base = r.alloc_unregistered(share * gpus as u64, Mark::None)?;
        for g in 0..gpus {
            let id = r.gpu_ids[g];
            r.set_attr(
                base + g as u64 * share,
                share,
                vec![svm_core::uapi::SvmAttribute::new(
                    svm_core::uapi::attr_type::ACCESS,
                    id,
                )],
            )?;
        }
        let per_wave = TOUCH_WAVE_PAGES * 4096;
        let waves = u32::try_from(share.div_ceil(per_wave)).unwrap_or(u32::MAX);
        let zero = std::rc::Rc::new(std::cell::Cell::new(true));
        for _ in 0..p.iters.max(1) {
            let launches = (0..gpus)
                .map(|g| {
                    let start = base + g as u64 * share;
                    let zero = std::rc::Rc::clone(&zero);
                    let f = kernel(move |w, ctx| {
                        let zero = std::rc::Rc::clone(&zero);
                        async move {
                            let lo = start + u64::from(w) * per_wave;
                            for at in (lo..(lo + per_wave).min(start + share)).step_by(4096) {
                                let d = ctx.load(at, 4).await;
                                if d.iter().any(|&b| b != 0) {
                                    zero.set(false);
                                }
                            }
                        }
                    });
                    (g, waves, f)
                })
                .collect();
            r.launch_all(launches)?;
        }
        Ok(zero.get())
    }
}

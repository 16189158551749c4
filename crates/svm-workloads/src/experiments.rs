//! Experiments kept as tests and as examples.
//!
//! [`first_touch_stream`] is the acceptance experiment for partial
//! migration: one GPU streams over one large registered range, XNACK on,
//! under a policy; the report says how the first fault migrated, how many
//! bytes moved in all, when the first wave had its result, and what the
//! faults cost.

use serde::Serialize;
use svm_core::events::Kind;
use svm_core::policy::Policy;
use svm_core::uapi::{SvmAttribute, attr_type};
use svm_sim::machine::Machine;
use svm_sim::timing::Profile;

use crate::{Run, WorkloadError, kernel};

/// What one run of [`first_touch_stream`] measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamReport {
    /// The policy.
    pub policy: String,
    /// Bytes of the range.
    pub range_bytes: u64,
    /// Pages the first migration moved (its MIGRATE_START event).
    pub first_migration_pages: u64,
    /// Distinct granularity windows the kernel touched.
    pub windows_touched: u64,
    /// Bytes moved into VRAM in all.
    pub migrated_bytes: u64,
    /// GPU faults the engine saw.
    pub faults: u64,
    /// Simulated ns from the launch to the first wave's result.
    pub first_result_ns: u64,
    /// Simulated ns from the launch to the last wave.
    pub kernel_ns: u64,
    /// Fault latency, raised to handled: median and 99th percentile.
    pub fault_p50_ns: u64,
    /// See `fault_p50_ns`.
    pub fault_p99_ns: u64,
    /// Every word came back doubled.
    pub verified: bool,
    /// Migrations (MIGRATE_START events) and GPU unmaps (UNMAP_FROM_GPU).
    pub migrations: u64,
    /// See `migrations`.
    pub unmaps: u64,
    /// Simulated ns the fault handler was busy.
    pub handler_busy_ns: u64,
}

/// Streams `x = 2x + 1` over the first `touched` bytes of a `size`-byte
/// range on one GPU of `profile`, XNACK on, under `policy`.
///
/// # Errors
/// A kernel that died or a setup call that failed.
pub fn first_touch_stream(
    profile: &Profile,
    policy: Policy,
    size: u64,
    touched: u64,
) -> Result<StreamReport, WorkloadError> {
    let mut m = crate::machine(profile, 1, None)?;
    m.set_policy(policy);
    let pid = m.spawn("stream");
    let mut r = Run::new(&mut m, pid);
    let x = r.alloc(size, &[])?;
    let gpu = r.gpu_ids[0];
    r.set_attr(x, size, vec![SvmAttribute::new(attr_type::ACCESS, gpu)])?;
    let n = touched / 4;
    // The CPU writes every word (so every page is populated and must be
    // copied, not zero-filled), a chunk at a time to bound host memory.
    // Word values wrap: only the low 32 bits of the index matter.
    let f = |i: u64| u32::try_from(i & 0xffff_ffff).unwrap_or(0).wrapping_mul(3);
    const CHUNK: usize = 4 << 20;
    for c in (0..n).step_by(CHUNK) {
        let v: Vec<u32> = (c..(c + CHUNK as u64).min(n)).map(f).collect();
        r.write_u32s(x + c * 4, &v)?;
    }
    let waves = u32::try_from((touched / (256 << 10)).max(1)).unwrap_or(u32::MAX);
    let per = n / u64::from(waves);
    r.launch(
        0,
        waves,
        kernel(move |w, ctx| async move {
            let lo = u64::from(w) * per;
            let mut i = lo;
            while i < lo + per {
                let v = ctx.load_u32s(x + i * 4, 64).await;
                let z: Vec<u32> = v
                    .iter()
                    .map(|a| a.wrapping_mul(2).wrapping_add(1))
                    .collect();
                ctx.store_u32s(x + i * 4, &z).await;
                i += 64;
            }
        }),
    )?;
    let k = r.kernels[0];
    let mut verified = true;
    for c in (0..n).step_by(CHUNK) {
        let len = (c + CHUNK as u64).min(n) - c;
        let back = r.read_u32s(x + c * 4, usize::try_from(len).unwrap_or(0))?;
        verified &= back
            .iter()
            .zip(c..)
            .all(|(b, i)| *b == f(i).wrapping_mul(2).wrapping_add(1));
    }
    let m = r.m;
    let first_migration_pages = m
        .events()
        .iter()
        .find_map(|e| match e.event.kind {
            Kind::MigrateStart { npages, .. } => Some(npages.raw()),
            _ => None,
        })
        .unwrap_or(0);
    let mut lat = m.fault_latencies().to_vec();
    lat.sort_unstable();
    let pct = |q: f64| {
        #[allow(clippy::cast_possible_truncation)]
        let i = ((lat.len().saturating_sub(1)) as f64 * q).round() as usize;
        lat.get(i).copied().unwrap_or(0)
    };
    let window = 2 << 20;
    Ok(StreamReport {
        policy: policy.name().into(),
        range_bytes: size,
        first_migration_pages,
        windows_touched: touched.div_ceil(window),
        migrated_bytes: (m.counters().pages_to_vram + m.counters().pages_zero_filled) * 4096,
        faults: crate::faults(m, pid),
        first_result_ns: k.first_wave_done_ns - k.launch_ns,
        kernel_ns: k.end_ns - k.launch_ns,
        fault_p50_ns: pct(0.5),
        fault_p99_ns: pct(0.99),
        verified,
        migrations: m
            .events()
            .iter()
            .filter(|e| matches!(e.event.kind, Kind::MigrateStart { .. }))
            .count() as u64,
        unmaps: m
            .events()
            .iter()
            .filter(|e| matches!(e.event.kind, Kind::UnmapFromGpu { .. }))
            .count() as u64,
        handler_busy_ns: m.counters().handler_busy_ns,
    })
}

/// What [`phantom_first_touch`] measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhantomReport {
    /// Bytes of the footprint.
    pub footprint: u64,
    /// GPUs that shared it.
    pub gpus: u32,
    /// Pages touched (all of them).
    pub pages: u64,
    /// GPU faults the engine saw.
    pub faults: u64,
    /// Pages that arrived in VRAM.
    pub pages_in_vram: u64,
    /// Simulated ns from the launches to the last wave.
    pub kernel_ns: u64,
}

/// Phantom mode at scale: `footprint` bytes split evenly over the first
/// `gpus` GPUs of `profile`, each GPU's waves touching one word of every
/// page of its share once (first touch, partial policy). No byte is kept
/// anywhere, so the footprint may exceed the host's memory many times.
///
/// # Errors
/// A kernel that died or a setup call that failed.
pub fn phantom_first_touch(
    profile: &Profile,
    footprint: u64,
    gpus: usize,
) -> Result<PhantomReport, WorkloadError> {
    phantom_first_touch_on(crate::machine(profile, gpus, None)?, footprint, gpus).map(|(r, _)| r)
}

/// [`phantom_first_touch`] on a given machine, which is handed back with
/// its state (so that what the state costs can be measured).
///
/// # Errors
/// See [`phantom_first_touch`].
pub fn phantom_first_touch_on(
    mut m: Machine,
    footprint: u64,
    gpus: usize,
) -> Result<(PhantomReport, Machine), WorkloadError> {
    m.set_phantom();
    // Nobody reads this run's event log: keep none, so the state left
    // behind is the pages' own.
    m.set_smi_log(false);
    m.set_policy(Policy::Partial);
    // The machine's first `gpus` GPUs: the `first-touch` workload runs on
    // every GPU of its run.
    let pid = m.spawn("phantom");
    let mut r = Run::new(&mut m, pid);
    r.gpu_ids.truncate(gpus);
    let share = crate::kernels::FirstTouch::share(footprint, gpus as u64);
    if share == 0 || r.gpu_ids.len() < gpus {
        return Err(WorkloadError::Params {
            workload: "phantom-first-touch",
            why: format!("less than a page per GPU, or fewer than {gpus} GPUs"),
        });
    }
    let p = crate::Params {
        size: footprint,
        iters: 1,
        seed: 1,
    };
    crate::Workload::run(&crate::kernels::FirstTouch, &mut r, &p)?;
    let kernel_ns = r
        .kernels
        .iter()
        .map(|k| k.end_ns - k.launch_ns)
        .max()
        .unwrap_or(0);
    let report = PhantomReport {
        footprint: share * gpus as u64,
        gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
        pages: share * gpus as u64 / 4096,
        faults: crate::faults(&m, pid),
        pages_in_vram: m.counters().pages_to_vram + m.counters().pages_zero_filled,
        kernel_ns,
    };
    Ok((report, m))
}

//! The entry points the fuzz targets drive (`fuzz/`, `docs/fuzzing.md`),
//! and the corpus tests replay on stable Rust: each takes arbitrary bytes
//! and feeds them to one reader the way the command line does, or to the
//! kfd-style attribute API. Each returns normally for every input; a panic,
//! an abort, a hang or a broken invariant is a finding.

use svm_core::addr::CpuVa;
use svm_core::config::Config;
use svm_core::uapi::{SVM_OP_GET_ATTR, SVM_OP_SET_ATTR, SvmArgs, SvmAttribute};
use svm_sim::check;
use svm_sim::mm::{Backing, Mark, Prot};
use svm_sim::timing::Profile;
use svm_workloads::trace;

use crate::scenario;
use crate::sweep;

/// A fuzz target's entry point.
pub type Entry = fn(&[u8]);

/// The fuzz targets, by name: what `fuzz/fuzz_targets/NAME.rs` calls and
/// the corpus directories are named after.
pub const TARGETS: [(&str, Entry); 8] = [
    ("scenario", scenario_file),
    ("profile", profile_file),
    ("trace", trace_file),
    ("shard", shard_file),
    ("attr_api", attr_api),
    ("import_smi", import_smi),
    ("import_rocprofv3", import_rocprofv3),
    ("import_sqlite", import_sqlite),
];

/// Records a fuzzed import may make: the build is linear in them.
const IMPORT_RECORDS: usize = 1 << 14;

/// Each reader's records, as `svmsim import` reads them.
type Reading = Result<
    (
        Vec<svm_workloads::import::Record>,
        svm_workloads::import::Report,
    ),
    String,
>;

/// kfd SMI lines, as one GPU's file and as a prefixed one, and the bytes
/// as an allocation list; see [`built`].
pub fn import_smi(data: &[u8]) {
    use svm_workloads::import;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = import::allocations(text);
    built(
        [Some(0x1002), None]
            .into_iter()
            .map(|gpu| {
                import::kfd_records(&[import::Source { text, gpu }], IMPORT_RECORDS)
                    .map_err(|e| e.to_string())
            })
            .collect(),
    );
}

/// A rocprofiler JSON document (rocprofv3's or the 2024 json-tool's);
/// see [`built`].
pub fn import_rocprofv3(data: &[u8]) {
    built(vec![crate::import::rocprof::read(
        "fuzz.json",
        data,
        IMPORT_RECORDS,
    )]);
}

/// An SQLite database, read as an Nsight Systems export and as rocpd;
/// see [`built`]. SQLite reads files: the bytes go to one of this
/// process's own.
pub fn import_sqlite(data: &[u8]) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("svmsim-fuzz-{}-{n}.sqlite", std::process::id()));
    if std::fs::write(&p, data).is_ok() {
        built(vec![
            crate::import::nsys::read(&p, IMPORT_RECORDS),
            crate::import::rocpd::read(&p, IMPORT_RECORDS),
        ]);
    }
    let _ = std::fs::remove_file(&p);
}

/// What every import reader's records go through: a tally, and a trace
/// (also within an allocation list's buffer) that must decode as any
/// trace does.
fn built(readings: Vec<Reading>) {
    use svm_workloads::import;
    for (mut records, report) in readings.into_iter().flatten() {
        records.sort_by_key(|m| (m.ts, m.line));
        let _ = import::tally_records(&records);
        let list = [(0x7f00_0000_0000, 2 << 20)];
        for allocations in [None, Some(&list[..])] {
            if let Ok(i) =
                import::from_records(records.clone(), report.clone(), 1 << 16, allocations)
            {
                let bytes = trace::encode(&i.events);
                assert_eq!(
                    trace::decode(&bytes, usize::MAX).as_ref(),
                    Ok(&i.events),
                    "an imported trace decodes"
                );
            }
        }
    }
}

/// Events a fuzzed trace may hold to be replayed as well as decoded: a
/// replay of more is correct but too slow for one input a second.
const REPLAY_EVENTS: usize = 256;

/// Waves a fuzzed trace may launch in all to be replayed: a launch of
/// millions of empty waves is correct (a 5M-wave launch replays in half a
/// second) but too slow for one input a second.
const REPLAY_WAVES: u64 = 1 << 16;

/// A scenario file, as `svmsim scenario FILE` reads it; parsed scenarios
/// with small ops also run (the run checks its invariants).
pub fn scenario_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sc) = scenario::parse("fuzz.toml", text) else {
        return;
    };
    // Ops move at most 1 GiB each, which is correct and too much for a
    // fuzz input's memory limit; a few small ones run.
    if sc.ops.len() <= 64 && sc.ops.iter().all(|op| op.kind.page_touches(true) <= 256) {
        if let Ok(r) = scenario::run(&sc, check::Schedule::every_step()) {
            assert!(r.violation.is_none(), "{:?}", r.violation);
        }
    }
    let _ = scenario::parse::config_file("fuzz.toml", text, Default::default());
}

/// A profile file, as `--profile FILE` reads it.
pub fn profile_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Profile::parse("fuzz.toml", text) {
        // What a run asks of a parsed profile.
        let _ = (p.gc(), p.gpus());
    }
}

/// A trace, binary or CSV, as `svmsim replay` reads it; small ones replay.
pub fn trace_file(data: &[u8]) {
    let events = match trace::decode(data, trace::MAX_EVENTS) {
        Ok(e) => e,
        Err(_) => match std::str::from_utf8(data) {
            Ok(text) => match trace::from_csv(text, trace::MAX_EVENTS) {
                Ok(e) => e,
                Err(_) => return,
            },
            Err(_) => return,
        },
    };
    // Round trip: what decodes encodes to bytes that decode the same.
    let again = trace::decode(&trace::encode(&events), trace::MAX_EVENTS);
    assert_eq!(again.as_ref(), Ok(&events), "a decoded trace re-encodes");
    let waves: u64 = events
        .iter()
        .map(|e| match e {
            svm_sim::machine::TraceEvent::Launch { waves, .. } => u64::from(*waves),
            _ => 0,
        })
        .sum();
    if events.len() > REPLAY_EVENTS
        || waves > REPLAY_WAVES
        || trace::host_bytes(
            &events,
            svm_core::config::Config::default().default_granularity,
        ) > 64 << 20
    {
        return;
    }
    let Ok(profile) = Profile::built_in("mi250x") else {
        return;
    };
    let Ok(mut m) = svm_workloads::machine(&profile, 2, Some(64 << 20)) else {
        return;
    };
    if trace::replay(&mut m, &events).is_ok() {
        if let Err(v) = check::check(&m) {
            panic!("{v}");
        }
    }
}

/// A shard's result file, as `svmsim merge` reads it.
pub fn shard_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = sweep::read_shard("fuzz.json", text) {
        let _ = sweep::merge(&[("fuzz.json".into(), f)]);
    }
}

/// The attribute API: the bytes are a program of SET_ATTR, GET_ATTR,
/// XNACK-mode, munmap and access calls over an 8 MiB mapping of an
/// untimed two-GPU machine with 4 MiB of VRAM each (so VRAM runs out).
/// Every call's answer is an errno or success, and the invariants hold
/// after every fourth call and after the last (checking after each took
/// most of the time; a broken invariant stays broken, so it is still
/// found, at most three calls late).
///
/// It runs with `unmap_every_mapped_gpu` on. Under kfd's own rule up to
/// 7.2 (off) the fuzzer's first finds were kfd's stale-PTE bug, which
/// svmsim reproduces on purpose: munmap unmaps only GPUs with ACCESS or
/// ACCESS_IN_PLACE, so a GPU that mapped the range without either keeps
/// PTEs to freed memory (`fuzz/regressions/attr_api/kfd-stale-pte-*`, and
/// [`attr_api_as`] to replay them under any configuration).
pub fn attr_api(data: &[u8]) {
    let config = Config {
        unmap_every_mapped_gpu: true,
        ..Config::default()
    };
    if let Err(v) = attr_api_as(data, &config) {
        panic!("{v}");
    }
}

/// [`attr_api`]'s program under `config` (its `kernel` and
/// `unmap_every_mapped_gpu` decide which GPUs an unmap reaches); the first
/// broken invariant, with the call it was found after.
///
/// # Errors
/// The broken invariant, or a configuration the machine refuses.
pub fn attr_api_as(data: &[u8], config: &Config) -> Result<(), String> {
    use svm_core::topology::{GpuDesc, Topology};
    let gpu = |i: u32| GpuDesc {
        name: format!("gpu{i}"),
        id: svm_core::gpu::GpuId::new(0x1002 + 0x1000 * i).expect("a valid gpu_id"),
        vram_bytes: 4 << 20,
        svm: true,
        xnack: true,
        hive: None,
        apu: false,
        prefer_gtt: false,
        ats: false,
        local_atomics: false,
        gc: svm_core::pte::GcVersion::DEFAULT,
    };
    let Ok(topology) = Topology::new(vec![gpu(0), gpu(1)]) else {
        return Ok(());
    };
    let mut m = svm_sim::machine::Machine::new(
        topology,
        true,
        svm_sim::machine::MemLimit::for_sysmem(1 << 30),
    );
    m.set_config(config).map_err(|e| e.to_string())?;
    let pid = m.spawn("fuzz");
    const BASE: u64 = 0x7000_0000_0000;
    const LEN: u64 = 8 << 20;
    if m.mmap(
        pid,
        Some(CpuVa::new(BASE)),
        LEN,
        Prot::RW,
        Backing::Anon,
        Mark::None,
    )
    .is_err()
    {
        return Ok(());
    }
    let ids: Vec<u32> = m.gpus().iter().map(|g| g.desc.id.raw()).collect();
    let mut b = Bytes(data);
    // An address mostly inside the mapping (page-aligned or not), or raw.
    let addr = |b: &mut Bytes<'_>| {
        let v = b.u64();
        match v & 3 {
            0 => v,
            1 => BASE + (v >> 2) % LEN,
            _ => BASE + (((v >> 2) % LEN) & !0xfff),
        }
    };
    let size = |b: &mut Bytes<'_>| {
        let v = b.u64();
        if v & 1 == 0 {
            v >> 1
        } else {
            ((v >> 1) % (LEN / 4096) + 1) * 4096
        }
    };
    // A value mostly meaningful for its attribute: a gpu_id, a location.
    let value = |b: &mut Bytes<'_>| {
        let v = b.u32();
        match v & 3 {
            0 => v,
            1 => ids[(v as usize >> 2) % ids.len()],
            2 => 0,
            _ => (v >> 2) % 64,
        }
    };
    for call in 0..32 {
        let Some(op) = b.next() else { break };
        match op % 6 {
            0 | 1 => {
                let n = b.next().unwrap_or(0) % 8;
                let attrs = (0..n)
                    .map(|_| {
                        SvmAttribute::new(u32::from(b.next().unwrap_or(0) % 10), value(&mut b))
                    })
                    .collect();
                let mut args = SvmArgs {
                    start_addr: addr(&mut b),
                    size: size(&mut b),
                    op: if op % 6 == 0 {
                        SVM_OP_SET_ATTR
                    } else {
                        SVM_OP_GET_ATTR
                    },
                    attrs,
                };
                let _ = m.svm_ioctl(pid, &mut args);
            }
            2 => {
                let _ = m.set_xnack_mode(pid, i32::from(b.next().unwrap_or(0) % 3) - 1);
            }
            3 => {
                let _ = m.munmap(pid, CpuVa::new(addr(&mut b)), size(&mut b));
            }
            4 => {
                let gpu = ids[usize::from(b.next().unwrap_or(0)) % ids.len()];
                let (a, len) = (addr(&mut b), size(&mut b) % (64 << 10));
                let data = vec![0x5a; usize::try_from(len).unwrap_or(0)];
                let write = b.next().unwrap_or(0) & 1 == 1;
                let _ = m.gpu_access(pid, gpu, CpuVa::new(a), len, write.then_some(&data[..]));
            }
            _ => {
                let (a, len) = (addr(&mut b), size(&mut b) % (64 << 10));
                let _ = m.cpu_access(pid, CpuVa::new(a), len, None);
            }
        }
        if call % 4 == 3 {
            check::check(&m).map_err(|v| format!("after call {call}: {v}"))?;
        }
    }
    check::check(&m).map_err(|v| format!("at the end: {v}"))
}

/// The fuzz input, read from the front; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u64(&mut self) -> u64 {
        let mut v = [0u8; 8];
        for x in &mut v {
            *x = self.next().unwrap_or(0);
        }
        u64::from_le_bytes(v)
    }

    fn u32(&mut self) -> u32 {
        let mut v = [0u8; 4];
        for x in &mut v {
            *x = self.next().unwrap_or(0);
        }
        u32::from_le_bytes(v)
    }
}

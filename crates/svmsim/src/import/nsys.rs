//! Nsight Systems' SQLite export (`nsys export --type sqlite`) of a run
//! profiled with unified-memory tracing, read into the importer's records
//! (`svm_workloads::import`).
//!
//! Read from NVIDIA's SQLite Schema Reference (Nsight Systems 2021.5,
//! schema 2.7.1, to 2026.4, schema 3.28.1), by column name:
//!
//! - `CUDA_UM_GPU_PAGE_FAULT_EVENTS` (`start`, `end`, `globalPid`,
//!   `deviceId`, `address`, `numberOfPageFaults`, `faultAccessType`): a
//!   GPU fault group on a page, from when the driver began serving it to
//!   when it queued the replay; a write for access types 2 (WRITE) and 3
//!   (ATOMIC) of `CUpti_ActivityUnifiedMemoryAccessType`.
//! - `CUDA_UM_CPU_PAGE_FAULT_EVENTS` (`start`, `globalPid`, `address`): a
//!   CPU fault.
//! - `CUPTI_ACTIVITY_KIND_MEMCPY` rows of copy kinds 11, 12 and 13
//!   (`CUDA_MEMCPY_KIND_UVM_HTOD`, `_DTOH`, `_DTOD`): the migrations, with
//!   `bytes`, `virtualAddress`, `deviceId`, `srcDeviceId`, `dstDeviceId`
//!   and `migrationCause` (`CUpti_ActivityUnifiedMemoryMigrationCause`: 1
//!   USER, a prefetch the application asked for; 2 COHERENCE, a fault's;
//!   3 PREFETCH, the driver's own; 4 EVICTION; 5 ACCESS_COUNTERS).
//!
//! `globalPid` holds the pid in bits 24..48. Device ids become GPUs
//! (device `d` as `d + 1`, renumbered by the importer). A user prefetch
//! goes into the trace as a prefetch; the other migrations are the
//! driver's answer, counted by the tally.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use svm_workloads::import::{Effect, Record, Report, What};

/// The first bytes of an SQLite database file.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The tables read.
pub const TABLES: [&str; 3] = [
    "CUDA_UM_GPU_PAGE_FAULT_EVENTS",
    "CUDA_UM_CPU_PAGE_FAULT_EVENTS",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
];

/// The export schema majors read: 2 (Nsight Systems 2021.5 on) and 3
/// (to 2026.4 at least).
const MAJORS: [u32; 2] = [2, 3];

const PAGE_SHIFT: u32 = 12;

/// The enum values read, by table: (id, the end of its name).
const ENUMS: [(&str, &[(i64, &str)]); 3] = [
    (
        "ENUM_CUDA_MEMCPY_OPER",
        &[(11, "UVM_HTOD"), (12, "UVM_DTOH"), (13, "UVM_DTOD")],
    ),
    (
        "ENUM_CUDA_UNIF_MEM_MIGRATION",
        &[
            (1, "USER"),
            (2, "COHERENCE"),
            (3, "PREFETCH"),
            (4, "EVICTION"),
            (5, "ACCESS_COUNTERS"),
        ],
    ),
    (
        "ENUM_CUDA_UNIF_MEM_ACCESS_TYPE",
        &[(1, "READ"), (2, "WRITE"), (3, "ATOMIC"), (4, "PREFETCH")],
    ),
];

/// Whether `head` (a file's first bytes) is an SQLite database.
pub fn detect(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// The pid in a `globalPid` (`<hw:8><vm:8><pid:24><tid:24>`).
fn pid_of(global: i64) -> u32 {
    u32::try_from((global >> 24) & 0x00ff_ffff).unwrap_or(0)
}

/// Reads the unified-memory records of the export at `path`, at most
/// `max`.
///
/// # Errors
/// Not an SQLite file, not an export with unified-memory tables, a schema
/// version not read, a missing column, a bad value (its table, row and
/// column), or more than `max` records.
pub fn read(path: &Path, max: usize) -> Result<(Vec<Record>, Report), String> {
    let name = path.display().to_string();
    let sql = |e: rusqlite::Error| format!("{name}: {e}");
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| format!("{name}: not an SQLite database ({e})"))?;
    let has = |t: &str| tables.iter().any(|x| x == t);
    if !TABLES.iter().any(|t| has(t)) {
        return Err(format!(
            "{name}: no unified-memory table ({}): profile with nsys profile \
             --cuda-um-gpu-page-faults=true --cuda-um-cpu-page-faults=true, then nsys export \
             --type sqlite",
            TABLES.join(", ")
        ));
    }
    for meta in ["META_DATA_EXPORT", "EXPORT_META_DATA"] {
        if !has(meta) {
            continue;
        }
        let v: Option<String> = db
            .query_row(
                &format!("SELECT value FROM {meta} WHERE name = 'EXPORT_SCHEMA_VERSION'"),
                [],
                |r| r.get(0),
            )
            .ok();
        if let Some(v) = v {
            let major = v.split('.').next().and_then(|m| m.parse::<u32>().ok());
            if !major.is_some_and(|m| MAJORS.contains(&m)) {
                return Err(format!(
                    "{name}: export schema version {v}; this reader takes versions 2.x and 3.x \
                     (Nsight Systems 2021.5 to 2026.4)"
                ));
            }
        }
    }
    let columns = |t: &str| -> Result<Vec<String>, String> {
        db.prepare(&format!("PRAGMA table_info({t})"))
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(1))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sql)
    };
    let need = |t: &str, cols: &[&str]| -> Result<(), String> {
        let have = columns(t)?;
        match cols
            .iter()
            .find(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c)))
        {
            Some(c) => Err(format!("{name}: table {t} has no column {c}")),
            None => Ok(()),
        }
    };
    // Bounded before a row is held.
    let mut total: u64 = 0;
    let mut count = |q: &str| -> Result<(), String> {
        let n: i64 = db.query_row(q, [], |r| r.get(0)).map_err(sql)?;
        total = total.saturating_add(u64::try_from(n).unwrap_or(0));
        if total > max as u64 {
            return Err(format!(
                "{name}: more than {max} unified-memory records, the most an import holds within \
                 the host budget (use --max-host-mem)"
            ));
        }
        Ok(())
    };
    // The numbers read, checked against the names the export's enum
    // tables give them (where it has them): a release that renumbered
    // is refused rather than misread.
    for (table, expected) in ENUMS {
        if !has(table) {
            continue;
        }
        for &(id, suffix) in expected {
            let got: Option<String> = db
                .query_row(
                    &format!("SELECT name FROM {table} WHERE id = ?1"),
                    [id],
                    |r| r.get(0),
                )
                .ok();
            if let Some(got) = got
                && !got.ends_with(suffix)
            {
                return Err(format!(
                    "{name}: {table} names {id} {got}, where this reader takes {id} for {suffix}: \
                     an Nsight Systems release whose enums this reader does not know"
                ));
            }
        }
    }
    let um_copies = "FROM CUPTI_ACTIVITY_KIND_MEMCPY WHERE copyKind IN (11, 12, 13)";
    if has(TABLES[0]) {
        need(
            TABLES[0],
            &[
                "start",
                "end",
                "globalPid",
                "deviceId",
                "address",
                "numberOfPageFaults",
                "faultAccessType",
            ],
        )?;
        count(&format!("SELECT count(*) FROM {}", TABLES[0]))?;
    }
    if has(TABLES[1]) {
        need(TABLES[1], &["start", "globalPid", "address"])?;
        count(&format!("SELECT count(*) FROM {}", TABLES[1]))?;
    }
    if has(TABLES[2]) {
        need(
            TABLES[2],
            &[
                "start",
                "end",
                "globalPid",
                "deviceId",
                "bytes",
                "copyKind",
                "srcDeviceId",
                "dstDeviceId",
                "migrationCause",
                "virtualAddress",
            ],
        )?;
        count(&format!("SELECT count(*) {um_copies}"))?;
    }
    let mut out: Vec<Record> = Vec::new();
    let mut report = Report::default();
    let bad = |t: &str, row: i64, col: &str, v: i64| {
        format!("{name}: {t} row {row}: {col}: {v} is negative")
    };
    let unsigned =
        |t: &str, row: i64, col: &str, v: i64| u64::try_from(v).map_err(|_| bad(t, row, col, v));
    let page_of = |t: &str, row: i64, a: i64| -> Result<u64, String> {
        let p = unsigned(t, row, "address", a)? >> PAGE_SHIFT;
        if p >= (1u64 << 57) >> PAGE_SHIFT {
            return Err(format!(
                "{name}: {t} row {row}: address: {a:#x} is outside the address space"
            ));
        }
        Ok(p)
    };
    let device = |t: &str, row: i64, col: &str, d: i64| -> Result<u32, String> {
        u32::try_from(d)
            .ok()
            .and_then(|d| d.checked_add(1))
            .ok_or_else(|| format!("{name}: {t} row {row}: {col}: {d} is not a device id"))
    };
    if has(TABLES[0]) {
        let t = TABLES[0];
        let mut s = db
            .prepare(&format!(
                "SELECT rowid, start, end, globalPid, deviceId, address, faultAccessType FROM {t}"
            ))
            .map_err(sql)?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(sql)?;
        for row in rows {
            let (id, start, end, gp, dev, addr, access) = row.map_err(sql)?;
            let (start, end) = (
                unsigned(t, id, "start", start)?,
                unsigned(t, id, "end", end)?,
            );
            let (gpu, page, pid) = (
                device(t, id, "deviceId", dev)?,
                page_of(t, id, addr)?,
                pid_of(gp),
            );
            let line = out.len() + 1;
            *report.events.entry("gpu page fault").or_default() += 1;
            out.push(Record {
                line,
                gpu,
                ts: start,
                pid,
                what: What::Fault {
                    page,
                    write: matches!(access, 2 | 3),
                },
            });
            out.push(Record {
                line,
                gpu,
                ts: end.max(start),
                pid,
                what: What::Effect(Effect::FaultEnd {
                    page,
                    migrated: None,
                }),
            });
        }
    }
    if has(TABLES[1]) {
        let t = TABLES[1];
        let mut s = db
            .prepare(&format!("SELECT rowid, start, globalPid, address FROM {t}"))
            .map_err(sql)?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(sql)?;
        for row in rows {
            let (id, start, gp, addr) = row.map_err(sql)?;
            let ts = unsigned(t, id, "start", start)?;
            let page = page_of(t, id, addr)?;
            *report.events.entry("cpu page fault").or_default() += 1;
            out.push(Record {
                line: out.len() + 1,
                gpu: 0,
                ts,
                pid: pid_of(gp),
                what: What::CpuFault { page },
            });
        }
    }
    if has(TABLES[2]) {
        let t = TABLES[2];
        let mut s = db
            .prepare(&format!(
                "SELECT rowid, start, end, globalPid, deviceId, bytes, copyKind, srcDeviceId, \
                 dstDeviceId, migrationCause, virtualAddress {um_copies}"
            ))
            .map_err(sql)?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    [
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ],
                    r.get::<_, Option<i64>>(3)?,
                    [
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                    ],
                    [r.get::<_, Option<i64>>(7)?, r.get::<_, Option<i64>>(8)?],
                    r.get::<_, Option<i64>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                ))
            })
            .map_err(sql)?;
        for row in rows {
            let ([id, start, end], gp, [dev, bytes, kind], [src, dst], cause, va) =
                row.map_err(sql)?;
            let (start, end) = (
                unsigned(t, id, "start", start)?,
                unsigned(t, id, "end", end)?,
            );
            let bytes = unsigned(t, id, "bytes", bytes)?;
            let va = va.ok_or_else(|| {
                format!("{name}: {t} row {id}: virtualAddress: none, on a unified-memory copy")
            })?;
            let page = page_of(t, id, va)?;
            let pages =
                (unsigned(t, id, "virtualAddress", va)? + bytes).div_ceil(1 << PAGE_SHIFT) - page;
            let gpu_of = |d: Option<i64>, col: &str| match d {
                Some(d) => device(t, id, col, d),
                None => device(t, id, "deviceId", dev),
            };
            // HtoD: to the device; DtoH: from it; DtoD: between two.
            let (from, to) = match kind {
                11 => (0, gpu_of(dst, "dstDeviceId")?),
                12 => (gpu_of(src, "srcDeviceId")?, 0),
                _ => (gpu_of(src, "srcDeviceId")?, gpu_of(dst, "dstDeviceId")?),
            };
            let gp = gp.unwrap_or(0);
            let pid = pid_of(gp);
            let gpu = if to != 0 { to } else { from };
            let cause = cause.unwrap_or(0);
            let name_of = match cause {
                1 => "um copy: user prefetch",
                2 => "um copy: coherence (fault)",
                3 => "um copy: driver prefetch",
                4 => "um copy: eviction",
                5 => "um copy: access counters",
                _ => "um copy: unknown cause",
            };
            *report.events.entry(name_of).or_default() += 1;
            let line = out.len() + 1;
            if cause == 1 {
                // The application's prefetch: into the trace.
                let trigger = 0;
                out.push(Record {
                    line,
                    gpu,
                    ts: start,
                    pid,
                    what: What::Migrate {
                        page,
                        pages,
                        from,
                        to,
                        trigger,
                    },
                });
                out.push(Record {
                    line,
                    gpu,
                    ts: end.max(start),
                    pid,
                    what: What::Effect(Effect::MigrateEnd {
                        page,
                        pages,
                        from,
                        to,
                        trigger,
                        error: false,
                    }),
                });
            } else {
                // kfd's triggers: a fault's (the GPU's, or the CPU's
                // when it went to system memory), an eviction.
                let trigger = match cause {
                    4 => 3,
                    _ if to == 0 => 2,
                    _ => 1,
                };
                out.push(Record {
                    line,
                    gpu,
                    ts: start,
                    pid,
                    what: What::Effect(Effect::Copied {
                        page,
                        pages,
                        to,
                        trigger,
                        ns: end.saturating_sub(start),
                    }),
                });
            }
        }
    }
    report.lines = out.len() as u64;
    Ok((out, report))
}

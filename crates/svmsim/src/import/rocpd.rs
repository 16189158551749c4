//! rocpd, rocprofv3's SQLite output (`--output-format rocpd`), with the
//! KFD records of `--kfd-trace` (rocprofiler-sdk 1.3 on), read into the
//! importer's records.
//!
//! Read from the producer's sources (ROCm/rocm-systems,
//! `projects/rocprofiler-sdk/`: `source/share/rocprofiler-sdk-rocpd/
//! rocpd_tables.sql` and `rocpd_views.sql`, schema version 3;
//! `source/lib/output/generateRocpd.cpp`'s `insert_kfd_event_data`;
//! `lib/output/kfd_info.hpp`). A KFD record is a `rocpd_region` row (its
//! `start` and `end`, both the event's time for an event kind; `tid` the
//! record's pid; `name_id` its operation's name) and the `rocpd_event`
//! it points at (`category_id` the kind's name, `extdata` the record's
//! fields as JSON). The tables' names carry the database's UUID; the
//! views without it (`rocpd_region`, `rocpd_event`, `rocpd_string`,
//! `rocpd_info_agent`) are what is read.
//!
//! `extdata` has had three layouts while the writer was made, all read:
//! `{"kfd":{"record":{"index":I,"data":{..}}}}` (a variant; agents are
//! node ids, left out when unknown), `{"kfd":{"kfd":{"index":I,"data":
//! {..}}}}` (agents -1 when unknown), and `{"kfd":[{"key":K,"value":V}]}`
//! (a map of strings). Fields: `start_address`, `end_address`,
//! `src_agent_id`, `dst_agent_id`, `error_code` (migrations);
//! `agent_id`, `address` (faults); `agent_id` (queues); `agent_id`,
//! `start_address`, `end_address` (unmaps); `count` (dropped events).
//! Agents are resolved through `rocpd_info_agent` (`id` the node id,
//! `type` CPU or GPU, `extdata.gpu_id`).
//!
//! Each row becomes the rocprofv3 JSON record it was written from, its
//! operation numbered by its name, and is read as `rocprof` reads those:
//! one reader of KFD records, whatever held them.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use svm_workloads::import::{Record, Report};

use super::rocprof::{KINDS, operation_name};

/// Whether `path` is a rocpd database: SQLite with a `rocpd_region` view
/// or table.
pub fn detect(path: &Path) -> bool {
    let Ok(db) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    db.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name = 'rocpd_region'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// An agent field of `data`: a node id, or `None` for unknown (-1, or
/// left out).
fn node(data: &Value, key: &str) -> Option<u64> {
    match data.get(key)? {
        Value::String(s) => s.parse::<i64>().ok().and_then(|n| u64::try_from(n).ok()),
        v => v.as_u64(),
    }
}

/// A number field of `data` (written as a number, or as a string by the
/// map layout).
fn number(data: &Value, key: &str) -> Option<Value> {
    match data.get(key)? {
        Value::String(s) => s
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| s.parse::<i64>().map(Value::from))
            .ok(),
        v if v.is_number() => Some(v.clone()),
        _ => None,
    }
}

/// The record's fields in `extdata`, whichever layout holds them.
fn fields(extdata: &Value) -> Option<Value> {
    let kfd = extdata.get("kfd")?;
    if let Some(list) = kfd.as_array() {
        let mut m = serde_json::Map::new();
        for kv in list {
            let k = kv.get("key")?.as_str()?;
            m.insert(k.to_owned(), kv.get("value")?.clone());
        }
        return Some(Value::Object(m));
    }
    kfd.get("record")
        .or_else(|| kfd.get("kfd"))?
        .get("data")
        .cloned()
}

/// Reads the KFD records of the rocpd database at `path`, at most `max`.
///
/// # Errors
/// Not a rocpd database, a region whose kind, operation or fields cannot
/// be read (its place among the KFD regions, in id order, and the
/// field), or more than `max` records.
pub fn read(path: &Path, max: usize) -> Result<(Vec<Record>, Report), String> {
    let name = path.display().to_string();
    let sql = |e: rusqlite::Error| format!("{name}: {e}");
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    if !detect(path) {
        return Err(format!(
            "{name}: not a rocpd database (no rocpd_region); this reader takes rocprofv3 \
             --kfd-trace --output-format rocpd (rocprofiler-sdk 1.3+, schema 3)"
        ));
    }
    let from = "FROM rocpd_region R JOIN rocpd_event E ON E.id = R.event_id AND E.guid = R.guid \
                JOIN rocpd_string C ON C.id = E.category_id AND C.guid = E.guid \
                JOIN rocpd_string N ON N.id = R.name_id AND N.guid = R.guid \
                WHERE C.string LIKE 'KFD\\_%' ESCAPE '\\'";
    let n: i64 = db
        .query_row(&format!("SELECT count(*) {from}"), [], |r| r.get(0))
        .map_err(sql)?;
    // Each region makes up to two records.
    if u64::try_from(n).unwrap_or(0).saturating_mul(2) > max as u64 {
        return Err(format!(
            "{name}: {n} KFD regions, more than an import holds within the host budget (use \
             --max-host-mem)"
        ));
    }
    // Agents by node id, as rocprofv3's JSON lists them by handle.
    let mut agents = Vec::new();
    let mut s = db
        .prepare("SELECT id, type, extdata FROM rocpd_info_agent")
        .map_err(sql)?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(sql)?;
    for row in rows {
        let (id, ty, ext) = row.map_err(sql)?;
        let gpu_id = ext
            .and_then(|e| serde_json::from_str::<Value>(&e).ok())
            .and_then(|e| e.get("gpu_id").and_then(Value::as_u64))
            .unwrap_or(0);
        let ty = if ty.as_deref() == Some("GPU") { 2 } else { 1 };
        agents.push(json!({"id": {"handle": id}, "node_id": id, "type": ty, "gpu_id": gpu_id}));
    }
    let mut s = db
        .prepare(&format!(
            "SELECT C.string, N.string, R.start, R.end, R.tid, E.extdata {from} ORDER BY R.id"
        ))
        .map_err(sql)?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(sql)?;
    let mut records = Vec::new();
    for (i, row) in rows.enumerate() {
        let (kind, op, start, end, tid, ext) = row.map_err(sql)?;
        let err = |field: &str, why: String| format!("{name}: KFD region {i}: {field}: {why}");
        let (kind, ops) = KINDS.iter().find(|(k, _)| *k == kind).ok_or_else(|| {
            err(
                "category",
                format!("{kind:?} is no KFD kind this reader knows"),
            )
        })?;
        let operation = ops
            .iter()
            .position(|o| operation_name(kind, o) == op)
            .ok_or_else(|| err("name", format!("{op:?} is no operation of {kind}")))?;
        let ext: Value = serde_json::from_str(ext.as_deref().unwrap_or("{}"))
            .map_err(|e| err("extdata", format!("not JSON ({e})")))?;
        let data = fields(&ext).ok_or_else(|| {
            err(
                "extdata",
                "no KFD fields (kfd.record.data, kfd.kfd.data or a kfd key list)".into(),
            )
        })?;
        let ts = |t: i64, f: &str| u64::try_from(t).map_err(|_| err(f, format!("{t} is negative")));
        let (start, end) = (ts(start, "start")?, ts(end, "end")?);
        let mut r = json!({"operation": operation, "pid": tid});
        if kind.starts_with("KFD_EVENT_") {
            r["timestamp"] = json!(start);
        } else {
            r["start_timestamp"] = json!(start);
            r["end_timestamp"] = json!(end);
        }
        let agent = |k: &str| json!({"handle": node(&data, k).unwrap_or(u64::MAX)});
        let put = |r: &mut Value, k: &str| -> Result<(), String> {
            r[k] = json!({"handle": number(&data, k).and_then(|v| v.as_u64()).ok_or_else(|| err(k, "missing or not an address".into()))?});
            Ok(())
        };
        match *kind {
            "KFD_EVENT_PAGE_MIGRATE" | "KFD_PAGE_MIGRATE" => {
                put(&mut r, "start_address")?;
                put(&mut r, "end_address")?;
                r["src_agent"] = agent("src_agent_id");
                r["dst_agent"] = agent("dst_agent_id");
                r["error_code"] = number(&data, "error_code").unwrap_or(json!(0));
            }
            "KFD_EVENT_PAGE_FAULT" | "KFD_PAGE_FAULT" => {
                r["agent_id"] = agent("agent_id");
                put(&mut r, "address")?;
            }
            "KFD_EVENT_UNMAP_FROM_GPU" => {
                r["agent_id"] = agent("agent_id");
                put(&mut r, "start_address")?;
                put(&mut r, "end_address")?;
            }
            "KFD_EVENT_DROPPED_EVENTS" => {
                r["count"] =
                    number(&data, "count").ok_or_else(|| err("count", "missing".into()))?;
            }
            _ => r["agent_id"] = agent("agent_id"),
        }
        records.push(r);
    }
    // An unknown agent is none of the list's (u64::MAX), counted as such.
    let element = json!({"agents": agents, "buffer_records": {"kfd": records}});
    let mut out = Vec::new();
    let mut report = Report::default();
    super::rocprof::split(
        &format!("{name}: KFD regions"),
        &element,
        max,
        &mut out,
        &mut report,
    )?;
    Ok((out, report))
}

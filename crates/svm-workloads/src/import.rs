//! Real runs in: kfd SMI event lines turned into an svmsim trace
//! (`docs/import.md`).
//!
//! # Overview
//! A performance engineer has the SMI messages of a real run: the lines a
//! read of `AMDKFD_IOC_SMI_EVENTS` files gives, one file per GPU, or one
//! file with each line prefixed by its gpu_id (svmsim's `--events` writes
//! both). [`kfd_smi`] reads them and makes a trace that replays what the
//! application did, as far as the messages say it:
//!
//! - **GPUs** from the gpu_ids, renumbered in ascending order to the
//!   replaying machine's (`0x1002`, `0x2002`, ...): [`Report::gpus`].
//! - **Processes** from the pids, in the order they first appear.
//! - **Buffers** from every page a message names (fault addresses,
//!   migration and unmap ranges), clustered into VMAs: each maximal run of
//!   touched 2 MiB blocks is one mapping, registered (ACCESS) for every
//!   GPU of the run.
//! - **GPU faults** (PAGE_FAULT_START, `W` a store, `R` a load of a word
//!   of the page) as first touches, in time order: a stretch of one
//!   GPU's faults with nothing else between becomes a kernel, its faults
//!   dealt round robin to up to [`WAVES`] waves, so that they overlap as
//!   a real kernel's many waves' do and keep their order.
//! - **CPU faults** (MIGRATE_START with trigger 2, page fault on the CPU)
//!   as CPU reads of the page.
//! - **Prefetches** (MIGRATE_START with trigger 0) as SET_ATTR
//!   PREFETCH_LOC over their range, to where they went.
//! - **munmaps** (UNMAP_FROM_GPU with trigger 2, unmap from the CPU) as
//!   munmaps of their range; a later touch maps the block again.
//!
//! What the driver did in answer (migrations for GPU faults and TTM
//! evictions, fault ends, queue evictions and restores, other unmaps) is
//! the engine's to do again on replay: it is counted in the report, not
//! put in the trace. So is what SMI does not say: the accesses that did
//! not fault, compute time, which wave faulted.
//!
//! Every line is checked: a line that does not follow its event's kernel
//! format is an error that names the line and the field. An event id the
//! kernel does not define is refused; ids that are not SVM's (VM faults,
//! thermal throttling, GPU resets, process start and end) are counted
//! and left out.

use std::collections::{BTreeMap, BTreeSet};

use svm_core::uapi::attr_type;
use svm_sim::machine::{TraceEvent, WaveOp};

use crate::trace::MAX_EVENTS;

/// Waves a kernel of imported faults has at most.
pub const WAVES: u32 = 64;

/// Bytes of a 2 MiB block: the unit buffers are clustered in.
const BLOCK: u64 = 2 << 20;

/// A page, in bytes.
const PAGE: u64 = 4096;

/// The first gpu_id the replaying machine gives (`0x1002`, then every
/// `0x1000`).
const FIRST_GPU_ID: u32 = 0x1002;

/// Why SMI lines could not be imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// A line that does not follow its format.
    #[error("line {line}: {field}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// The field (or `event id`).
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// More than the import can hold.
    #[error("{what} {value} is above the limit of {max}")]
    Limit {
        /// What is counted.
        what: &'static str,
        /// How many.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// Nothing to replay: no SVM message in the input.
    #[error("no SVM event in the input (GPU faults, migrations, unmaps)")]
    Empty,
}

/// What an import mapped, and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Lines read (blank and `#` lines not counted).
    pub lines: u64,
    /// Messages by event name.
    pub events: BTreeMap<&'static str, u64>,
    /// Each GPU's gpu_id in the input and in the trace.
    pub gpus: Vec<(u32, u32)>,
    /// The pids, in trace process order.
    pub pids: Vec<u32>,
    /// The buffers (VMAs) made: address and length.
    pub buffers: Vec<(u64, u64)>,
    /// GPU faults turned into first touches.
    pub gpu_faults: u64,
    /// CPU faults turned into CPU reads.
    pub cpu_faults: u64,
    /// Prefetches turned into SET_ATTR PREFETCH_LOC.
    pub prefetches: u64,
    /// munmaps.
    pub unmaps: u64,
    /// Kernels made of the GPU faults.
    pub kernels: u64,
    /// Messages of what the driver did in answer, left for the engine:
    /// migrations for faults and evictions, fault ends, queue evictions
    /// and restores, unmaps from notifiers and migrations.
    pub effects: u64,
    /// Messages that are not SVM's (VM faults, thermal, resets, process
    /// start and end), left out.
    pub not_svm: u64,
    /// Events the kernel reported it dropped (its DROPPED_EVENT message):
    /// the input misses that many.
    pub dropped: u64,
    /// Runs of a prefixed file past the first (`# svmsim run` lines),
    /// left out.
    pub runs_left_out: u64,
    /// Faults, migrations and unmaps outside every buffer of the
    /// allocation list, left out.
    pub outside: u64,
    /// The buffers came from an allocation list, not from clustering.
    pub listed: bool,
    /// Agents or nodes a record names that the input's agent list does
    /// not, taken as system memory.
    pub unknown_places: u64,
}

/// An import: the trace and its report.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The trace, as [`crate::trace::decode`] gives one.
    pub events: Vec<TraceEvent>,
    /// What was mapped.
    pub report: Report,
}

/// One record of a real run, whatever format held it: what
/// [`from_records`] builds a trace from and [`tally_records`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it came from, for errors and to keep the input's order among
    /// equal times (a line number, a row number).
    pub line: usize,
    /// The GPU it is of (a kfd gpu_id, or a reader's own numbering).
    pub gpu: u32,
    /// When, in ns.
    pub ts: u64,
    /// The process.
    pub pid: u32,
    /// What happened.
    pub what: What,
}

/// What a record says. Pages are 4 KiB page numbers; places are gpu_ids,
/// 0 for system memory; triggers are kfd's (`KFD_MIGRATE_TRIGGER_*`:
/// prefetch 0, GPU page fault 1, CPU page fault 2, TTM eviction 3;
/// `KFD_SVM_UNMAP_TRIGGER_*`: MMU notifier 0, for a migration 1, unmap
/// from the CPU 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// A GPU page fault (its handling started): a first touch.
    Fault {
        /// The page.
        page: u64,
        /// A store (else a load).
        write: bool,
    },
    /// A CPU page fault on the application's memory, where the format
    /// logs it apart from the migration that served it: a CPU read.
    CpuFault {
        /// The page.
        page: u64,
    },
    /// A migration started. Trigger 0 (a prefetch) goes into the trace
    /// as SET_ATTR PREFETCH_LOC, trigger 2 as a CPU read, where the
    /// format has no [`What::CpuFault`].
    Migrate {
        /// The first page.
        page: u64,
        /// Pages.
        pages: u64,
        /// From.
        from: u32,
        /// To.
        to: u32,
        /// Why.
        trigger: u32,
    },
    /// An unmap from a GPU; trigger 2 (a munmap) goes into the trace.
    Unmap {
        /// The first page.
        page: u64,
        /// Pages.
        pages: u64,
        /// Why.
        trigger: u32,
    },
    /// What the driver did in answer: left to the engine on replay, but
    /// counted by [`tally`].
    Effect(Effect),
    /// Records the producer said it dropped.
    Dropped(u64),
}

/// A record of what the driver did in answer to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A migration ended.
    MigrateEnd {
        /// The first page.
        page: u64,
        /// Pages.
        pages: u64,
        /// From.
        from: u32,
        /// To.
        to: u32,
        /// Why.
        trigger: u32,
        /// It ended with an error code.
        error: bool,
    },
    /// A migration recorded whole, start and duration in one record (as
    /// a copy is in formats that log copies, not migrations).
    Copied {
        /// The first page.
        page: u64,
        /// Pages.
        pages: u64,
        /// To (0: system memory).
        to: u32,
        /// Why.
        trigger: u32,
        /// How long it took, ns.
        ns: u64,
    },
    /// A GPU fault's handling ended.
    FaultEnd {
        /// The page.
        page: u64,
        /// It migrated (`Some(true)`) or only mapped (`Some(false)`);
        /// `None` where the format does not say.
        migrated: Option<bool>,
    },
    /// A queue was evicted.
    QueueEviction,
    /// A queue was restored.
    QueueRestore {
        /// Rescheduled rather than restored now.
        rescheduled: bool,
    },
}

/// The SVM event names, by id.
fn name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x5 => "migrate_start",
        0x6 => "migrate_end",
        0x7 => "page_fault_start",
        0x8 => "page_fault_end",
        0x9 => "queue_eviction",
        0xa => "queue_restore",
        0xb => "unmap_from_gpu",
        0xe => "dropped_event",
        _ => return None,
    })
}

/// Reads a field: `what` names it in errors.
struct Fields<'a> {
    line: usize,
    rest: &'a str,
}

impl<'a> Fields<'a> {
    fn err(&self, field: &'static str, why: impl Into<String>) -> ImportError {
        ImportError::Line {
            line: self.line,
            field,
            why: why.into(),
        }
    }

    /// The text up to the next `sep` (or the end), after `prefix`.
    fn take(
        &mut self,
        field: &'static str,
        prefix: &str,
        sep: char,
    ) -> Result<&'a str, ImportError> {
        let rest = self.rest.strip_prefix(prefix).ok_or_else(|| {
            self.err(
                field,
                format!("expected {prefix:?} before it in {:?}", self.rest),
            )
        })?;
        let (v, after) = rest.split_once(sep).unwrap_or((rest, ""));
        if v.is_empty() {
            return Err(self.err(field, "missing"));
        }
        self.rest = after;
        Ok(v)
    }

    fn dec(&mut self, field: &'static str, prefix: &str, sep: char) -> Result<u64, ImportError> {
        let v = self.take(field, prefix, sep)?;
        v.parse()
            .map_err(|_| self.err(field, format!("{v:?} is not a decimal number")))
    }

    fn hex(&mut self, field: &'static str, prefix: &str, sep: char) -> Result<u64, ImportError> {
        let v = self.take(field, prefix, sep)?;
        u64::from_str_radix(v, 16)
            .map_err(|_| self.err(field, format!("{v:?} is not a hexadecimal number")))
    }

    fn hex32(&mut self, field: &'static str, prefix: &str, sep: char) -> Result<u32, ImportError> {
        let v = self.hex(field, prefix, sep)?;
        u32::try_from(v).map_err(|_| self.err(field, format!("{v:#x} does not fit 32 bits")))
    }

    fn small(&mut self, field: &'static str, prefix: &str, sep: char) -> Result<u32, ImportError> {
        let v = self.take(field, prefix, sep)?;
        v.parse::<i32>()
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.err(field, format!("{v:?} is not a small number")))
    }

    fn char(&mut self, field: &'static str, allowed: &str) -> Result<char, ImportError> {
        let v = self.take(field, "", ' ')?;
        let mut c = v.chars();
        match (c.next(), c.next()) {
            (Some(ch), None) if allowed.contains(ch) => Ok(ch),
            _ => Err(self.err(field, format!("{v:?} is not one of {allowed:?}"))),
        }
    }

    fn end(&self) -> Result<(), ImportError> {
        if self.rest.trim().is_empty() {
            Ok(())
        } else {
            Err(self.err("end of line", format!("unexpected {:?}", self.rest)))
        }
    }
}

/// The largest page number a message may name (a 57-bit address space).
const MAX_PAGE: u64 = (1 << 57) / PAGE;

/// Parses one message (after its event id) in the kernel's format for
/// `id` (`KFD_EVENT_FMT_*`, `include/uapi/linux/kfd_ioctl.h`).
fn parse(line: usize, gpu: u32, id: u8, body: &str) -> Result<Option<Record>, ImportError> {
    if name(id).is_none() {
        // Not SVM's: VM faults, thermal throttling, resets, process
        // start and end.
        return Ok(None);
    }
    let mut f = Fields { line, rest: body };
    let ts = f.dec("timestamp", "", ' ')?;
    let pid = f.small("pid", "-", ' ')?;
    let range = |f: &mut Fields<'_>| -> Result<(u64, u64), ImportError> {
        let page = f.hex("page", "@", '(')?;
        let pages = f.hex("pages", "", ')')?;
        f.rest = f.rest.strip_prefix(' ').unwrap_or(f.rest);
        if page >= MAX_PAGE || pages > MAX_PAGE - page {
            return Err(f.err("pages", "the range leaves the address space"));
        }
        Ok((page, pages))
    };
    let what = match id {
        0x5 | 0x6 => {
            let (page, pages) = range(&mut f)?;
            let from = f.hex32("from", "", '-')?;
            let to = f.hex32("to", ">", ' ')?;
            let (trigger, error) = if id == 0x5 {
                let _prefetch = f.hex32("prefetch location", "", ':')?;
                let _preferred = f.hex32("preferred location", "", ' ')?;
                (f.small("trigger", "", ' ')?, 0)
            } else {
                let t = f.small("trigger", "", ' ')?;
                let e = f.take("error code", "", ' ')?;
                let e = e
                    .parse::<i32>()
                    .map_err(|_| f.err("error code", format!("{e:?} is not a number")))?;
                (t, e)
            };
            if trigger > 3 {
                return Err(f.err(
                    "trigger",
                    format!("{trigger}: migration triggers are 0 to 3"),
                ));
            }
            if id == 0x5 {
                What::Migrate {
                    page,
                    pages,
                    from,
                    to,
                    trigger,
                }
            } else {
                What::Effect(Effect::MigrateEnd {
                    page,
                    pages,
                    from,
                    to,
                    trigger,
                    error: error != 0,
                })
            }
        }
        0x7 | 0x8 => {
            let page = f.hex("page", "@", '(')?;
            if page >= MAX_PAGE {
                return Err(f.err("page", "outside the address space"));
            }
            let _node = f.hex32("gpu_id", "", ')')?;
            f.rest = f.rest.strip_prefix(' ').unwrap_or(f.rest);
            let c = if id == 0x7 {
                f.char("access", "RW")?
            } else {
                f.char("outcome", "MU")?
            };
            if id == 0x7 {
                What::Fault {
                    page,
                    write: c == 'W',
                }
            } else {
                What::Effect(Effect::FaultEnd {
                    page,
                    migrated: Some(c == 'M'),
                })
            }
        }
        0x9 => {
            let _node = f.hex32("gpu_id", "", ' ')?;
            let _trigger = f.small("trigger", "", ' ')?;
            What::Effect(Effect::QueueEviction)
        }
        0xa => {
            let _node = f.hex32("gpu_id", "", ' ')?;
            let r = f.char("rescheduled", "R0")?;
            What::Effect(Effect::QueueRestore {
                rescheduled: r == 'R',
            })
        }
        0xb => {
            let (page, pages) = range(&mut f)?;
            let _node = f.hex32("gpu_id", "", ' ')?;
            let trigger = f.small("trigger", "", ' ')?;
            if trigger > 2 {
                return Err(f.err("trigger", format!("{trigger}: unmap triggers are 0 to 2")));
            }
            What::Unmap {
                page,
                pages,
                trigger,
            }
        }
        0xe => {
            let n = f.dec("count", "", ' ')?;
            What::Dropped(n)
        }
        _ => return Ok(None),
    };
    f.end()?;
    Ok(Some(Record {
        line,
        gpu,
        ts,
        pid,
        what,
    }))
}

/// One input: its lines and, for a file of one GPU's messages (kfd's
/// form), that GPU's id; `None` for the prefixed form.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The text.
    pub text: &'a str,
    /// The gpu_id of a per-GPU file.
    pub gpu: Option<u32>,
}

/// Reads SMI messages and makes a trace of them (see the module doc).
/// `max_events` bounds the trace, as [`crate::trace::decode`]'s does.
///
/// # Errors
/// A line that does not follow its event's format (its number and
/// field), an event id the kernel does not define, a count past its
/// limit, or nothing of SVM's in the input.
pub fn kfd_smi(
    sources: &[Source<'_>],
    max_events: usize,
    allocations: Option<&[(u64, u64)]>,
) -> Result<Imported, ImportError> {
    let max_events = max_events.min(MAX_EVENTS) as u64;
    let (msgs, report) = messages(sources, max_events)?;
    build(&msgs, report, max_events, allocations)
}

/// Makes a trace of the records another format's reader made (see the
/// module doc): `report` holds what the reader counted (its records by
/// name, its dropped ones); the records are put in time order first, a
/// tie keeping their `line` order.
///
/// # Errors
/// A count past its limit, or nothing of SVM's in the records.
pub fn from_records(
    mut records: Vec<Record>,
    report: Report,
    max_events: usize,
    allocations: Option<&[(u64, u64)]>,
) -> Result<Imported, ImportError> {
    let max_events = max_events.min(MAX_EVENTS) as u64;
    if records.len() as u64 > max_events {
        return Err(ImportError::Limit {
            what: "records",
            value: records.len() as u64,
            max: max_events,
        });
    }
    records.sort_by_key(|m| (m.ts, m.line));
    build(&records, report, max_events, allocations)
}

/// The most allocations a list may give.
pub const MAX_ALLOCATIONS: usize = 1 << 20;

/// Reads an allocation list: the application's buffers, taken as the
/// trace's instead of clustering the pages the messages name. One
/// allocation a line, `ADDRESS,BYTES` (hexadecimal with `0x`, or
/// decimal), after a header line `address,bytes`; `#` lines are
/// comments, and a third field (a name) is allowed and ignored. Each is
/// widened to whole pages; they are returned in address order.
///
/// # Errors
/// A line that is not of that form (its number and field), an empty or
/// address-space-leaving allocation, two that overlap, or more than
/// [`MAX_ALLOCATIONS`].
pub fn allocations(text: &str) -> Result<Vec<(u64, u64)>, ImportError> {
    let mut out: Vec<(u64, u64, usize)> = Vec::new();
    let mut header = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let err = |field, why: String| ImportError::Line { line, field, why };
        let f: Vec<&str> = t.split(',').map(str::trim).collect();
        if !header {
            if f.len() < 2 || f[0] != "address" || f[1] != "bytes" {
                return Err(err(
                    "header",
                    "an allocation list starts with the header address,bytes".into(),
                ));
            }
            header = true;
            continue;
        }
        if f.len() < 2 || f.len() > 3 {
            return Err(err(
                "bytes",
                "a line is ADDRESS,BYTES or ADDRESS,BYTES,NAME".into(),
            ));
        }
        let num = |field: &'static str, v: &str| -> Result<u64, ImportError> {
            match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            }
            .map_err(|_| {
                err(
                    field,
                    format!("{v:?} is not a number (0x hexadecimal or decimal)"),
                )
            })
        };
        let (addr, bytes) = (num("address", f[0])?, num("bytes", f[1])?);
        if bytes == 0 {
            return Err(err("bytes", "an allocation of no bytes".into()));
        }
        let end = addr
            .checked_add(bytes)
            .filter(|&e| e <= MAX_PAGE * PAGE)
            .ok_or_else(|| err("bytes", "the allocation leaves the address space".into()))?;
        let (s, e) = (addr / PAGE * PAGE, end.div_ceil(PAGE) * PAGE);
        out.push((s, e - s, line));
        if out.len() > MAX_ALLOCATIONS {
            return Err(ImportError::Limit {
                what: "allocations",
                value: out.len() as u64,
                max: MAX_ALLOCATIONS as u64,
            });
        }
    }
    if !header {
        return Err(ImportError::Line {
            line: 1,
            field: "header",
            why: "an allocation list starts with the header address,bytes".into(),
        });
    }
    out.sort_unstable();
    for w in out.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            let (a, b) = (w[0].2.min(w[1].2), w[0].2.max(w[1].2));
            return Err(ImportError::Line {
                line: b,
                field: "address",
                why: format!("overlaps the allocation of line {a} (pages included)"),
            });
        }
    }
    Ok(out.into_iter().map(|(a, l, _)| (a, l)).collect())
}

/// The records of kfd SMI `sources` (at most `max_lines` lines), in time
/// order, and the report's counts of what was read: what [`kfd_smi`]
/// builds from, for [`from_records`] and [`tally_records`].
///
/// # Errors
/// As [`kfd_smi`].
pub fn kfd_records(
    sources: &[Source<'_>],
    max_lines: usize,
) -> Result<(Vec<Record>, Report), ImportError> {
    messages(sources, max_lines.min(MAX_EVENTS) as u64)
}

/// See [`kfd_records`].
fn messages(sources: &[Source<'_>], max_events: u64) -> Result<(Vec<Record>, Report), ImportError> {
    let mut report = Report::default();
    let mut msgs: Vec<Record> = Vec::new();
    let mut line_base = 0usize;
    for src in sources {
        let mut runs = 0u64;
        for (i, raw) in src.text.lines().enumerate() {
            let line = line_base + i + 1;
            let t = raw.trim_end();
            if t.trim().is_empty() {
                continue;
            }
            if let Some(c) = t.strip_prefix('#') {
                if c.trim_start().starts_with("svmsim run") {
                    runs += 1;
                }
                continue;
            }
            if runs > 1 {
                continue;
            }
            report.lines += 1;
            if report.lines > max_events {
                return Err(ImportError::Limit {
                    what: "lines",
                    value: report.lines,
                    max: max_events,
                });
            }
            let err = |field, why: String| ImportError::Line { line, field, why };
            let (gpu, rest) = match src.gpu {
                Some(g) => (g, t),
                None => {
                    let (g, rest) = t.split_once(' ').ok_or_else(|| {
                        err(
                            "gpu_id",
                            "a prefixed line is a gpu_id, a space, then the message".into(),
                        )
                    })?;
                    let g = u32::from_str_radix(g, 16)
                        .map_err(|_| err("gpu_id", format!("{g:?} is not a hexadecimal gpu_id")))?;
                    (g, rest)
                }
            };
            let (id, body) = rest.split_once(' ').ok_or_else(|| {
                err(
                    "event id",
                    "a message is an event id, a space, then its fields".into(),
                )
            })?;
            let id = u8::from_str_radix(id, 16)
                .ok()
                .filter(|&v| (1..=0xe).contains(&v))
                .ok_or_else(|| {
                    err(
                        "event id",
                        format!("{id:?}: kfd's SMI events are 1 to e (KFD_SMI_EVENT_*)"),
                    )
                })?;
            match parse(line, gpu, id, body)? {
                Some(m) => {
                    *report.events.entry(name(id).expect("parsed")).or_default() += 1;
                    msgs.push(m);
                }
                None => report.not_svm += 1,
            }
        }
        report.runs_left_out += runs.saturating_sub(1);
        line_base += src.text.lines().count();
    }
    // Time order; a tie keeps the input's order.
    msgs.sort_by_key(|m| (m.ts, m.line));
    Ok((msgs, report))
}

/// What a run's SMI messages say the driver did: the figures the real
/// run and its replay are compared by (`svmsim replay --against`).
/// Durations pair each start with its end: a migration's by GPU, pid,
/// range, places and trigger, a fault's by GPU, pid and page, the oldest
/// open start first.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// GPU faults (PAGE_FAULT_START).
    pub gpu_faults: u64,
    /// CPU faults, where the format logs them apart from migrations
    /// (kfd's SMI does not: its CPU faults are migrations with trigger 2).
    pub cpu_faults: u64,
    /// Of them, stores (`W`).
    pub gpu_fault_writes: u64,
    /// Faults that ended migrating (PAGE_FAULT_END `M`).
    pub faults_migrated: u64,
    /// Faults that ended updating the mapping only (`U`).
    pub faults_updated: u64,
    /// Summed time from a fault's start to its end, ns, and the faults
    /// that had both.
    pub fault_ns: u64,
    /// See `fault_ns`.
    pub faults_timed: u64,
    /// Migrations (MIGRATE_START) by trigger: prefetch, GPU page fault,
    /// CPU page fault, TTM eviction (KFD_MIGRATE_TRIGGER_*).
    pub migrations: [u64; 4],
    /// Pages they moved, by trigger.
    pub migrated_pages: [u64; 4],
    /// Pages moved to a GPU's VRAM.
    pub pages_to_vram: u64,
    /// Pages moved to system memory.
    pub pages_to_ram: u64,
    /// Migrations that ended with an error code.
    pub migration_errors: u64,
    /// Summed time from a migration's start to its end, ns, and the
    /// migrations that had both.
    pub migration_ns: u64,
    /// See `migration_ns`.
    pub migrations_timed: u64,
    /// Queue evictions.
    pub queue_evictions: u64,
    /// Queue restores, and of them those rescheduled (`R`).
    pub queue_restores: u64,
    /// See `queue_restores`.
    pub restores_rescheduled: u64,
    /// Unmaps from a GPU by trigger: MMU notifier, MMU notifier for a
    /// migration, unmap from the CPU (KFD_SVM_UNMAP_TRIGGER_*).
    pub unmaps: [u64; 3],
    /// Pages they unmapped, by trigger.
    pub unmapped_pages: [u64; 3],
    /// Events the kernel said it dropped.
    pub dropped: u64,
    /// Time from the first SVM message to the last, ns: how long the
    /// driver was at work for the run.
    pub span_ns: u64,
}

impl Tally {
    /// A migration of `pages` to `to` (0: system memory) for `trigger`.
    fn moved(&mut self, trigger: u32, pages: u64, to: u32) {
        let i = (trigger as usize).min(3);
        self.migrations[i] += 1;
        self.migrated_pages[i] = self.migrated_pages[i].saturating_add(pages);
        if to == 0 {
            self.pages_to_ram = self.pages_to_ram.saturating_add(pages);
        } else {
            self.pages_to_vram = self.pages_to_vram.saturating_add(pages);
        }
    }
}

/// Counts what the messages of `sources` say (at most `max_lines` lines;
/// see [`Tally`]).
///
/// # Errors
/// As [`kfd_smi`], except that an input without SVM messages tallies to
/// zeros.
pub fn tally(sources: &[Source<'_>], max_lines: usize) -> Result<Tally, ImportError> {
    let (msgs, _) = messages(sources, max_lines.min(MAX_EVENTS) as u64)?;
    Ok(tally_records(&msgs))
}

/// Counts what `records` (in time order) say; see [`Tally`].
pub fn tally_records(msgs: &[Record]) -> Tally {
    use std::collections::VecDeque;
    let mut t = Tally {
        span_ns: match (msgs.first(), msgs.last()) {
            (Some(a), Some(b)) => b.ts.saturating_sub(a.ts),
            _ => 0,
        },
        ..Tally::default()
    };
    // GPU, pid, first page, pages, from, to, trigger.
    type MigrationKey = (u32, u32, u64, u64, u32, u32, u32);
    let mut open_migrations: BTreeMap<MigrationKey, VecDeque<u64>> = BTreeMap::new();
    let mut open_faults: BTreeMap<(u32, u32, u64), VecDeque<u64>> = BTreeMap::new();
    let trigger = |v: u32, n: usize| (v as usize).min(n - 1);
    for m in msgs {
        match m.what {
            What::CpuFault { .. } => t.cpu_faults += 1,
            What::Effect(Effect::Copied {
                pages,
                to,
                trigger: tr,
                ns,
                ..
            }) => {
                t.moved(tr, pages, to);
                t.migration_ns = t.migration_ns.saturating_add(ns);
                t.migrations_timed += 1;
            }
            What::Fault { page, write } => {
                t.gpu_faults += 1;
                t.gpu_fault_writes += u64::from(write);
                open_faults
                    .entry((m.gpu, m.pid, page))
                    .or_default()
                    .push_back(m.ts);
            }
            What::Effect(Effect::FaultEnd { page, migrated }) => {
                match migrated {
                    Some(true) => t.faults_migrated += 1,
                    Some(false) => t.faults_updated += 1,
                    None => {}
                }
                if let Some(s) = open_faults
                    .get_mut(&(m.gpu, m.pid, page))
                    .and_then(VecDeque::pop_front)
                {
                    t.fault_ns = t.fault_ns.saturating_add(m.ts.saturating_sub(s));
                    t.faults_timed += 1;
                }
            }
            What::Migrate {
                page,
                pages,
                from,
                to,
                trigger: tr,
            } => {
                t.moved(tr, pages, to);
                open_migrations
                    .entry((m.gpu, m.pid, page, pages, from, to, tr))
                    .or_default()
                    .push_back(m.ts);
            }
            What::Effect(Effect::MigrateEnd {
                page,
                pages,
                from,
                to,
                trigger: tr,
                error,
            }) => {
                t.migration_errors += u64::from(error);
                if let Some(s) = open_migrations
                    .get_mut(&(m.gpu, m.pid, page, pages, from, to, tr))
                    .and_then(VecDeque::pop_front)
                {
                    t.migration_ns = t.migration_ns.saturating_add(m.ts.saturating_sub(s));
                    t.migrations_timed += 1;
                }
            }
            What::Effect(Effect::QueueEviction) => t.queue_evictions += 1,
            What::Effect(Effect::QueueRestore { rescheduled }) => {
                t.queue_restores += 1;
                t.restores_rescheduled += u64::from(rescheduled);
            }
            What::Unmap {
                pages, trigger: tr, ..
            } => {
                let i = trigger(tr, 3);
                t.unmaps[i] += 1;
                t.unmapped_pages[i] = t.unmapped_pages[i].saturating_add(pages);
            }
            What::Dropped(n) => t.dropped = t.dropped.saturating_add(n),
        }
    }
    t
}

/// The mappings and buffers of `msgs` when no allocation list is given:
/// clustered from the pages the messages name.
fn clustered(msgs: &[Record], max_events: u64) -> Result<Vec<(u64, u64)>, ImportError> {
    let limit = |what, value: u64, max: u64| {
        if value > max {
            Err(ImportError::Limit { what, value, max })
        } else {
            Ok(())
        }
    };
    // Buffers: the pages migration and unmap ranges cover (the range-
    // clipped windows of the run), and the 2 MiB block of a fault no
    // range covers; cut where a range starts or ends, so that the run's
    // range boundaries come back.
    //
    // A prefetch names a whole range, a munmap's unmap what it took; a
    // migration for a fault or an eviction, and the unmap a notifier
    // makes for it, name a window, whose ends are
    // the range's only where they are not window-aligned: an edge on a
    // 2 MiB boundary (kfd's default granularity) is taken for a window's
    // and not cut, lest one range come back as several that a prefetch
    // would migrate apart.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut cuts: BTreeSet<u64> = BTreeSet::new();
    let window = BLOCK / PAGE;
    for m in msgs {
        let (page, pages, whole) = match m.what {
            What::Migrate {
                page,
                pages,
                trigger,
                ..
            } => (page, pages, trigger == 0),
            What::Unmap {
                page,
                pages,
                trigger,
            } => (page, pages, trigger == 2),
            What::Effect(Effect::Copied {
                page,
                pages,
                trigger,
                ..
            }) => (page, pages, trigger == 0),
            _ => continue,
        };
        if pages > 0 {
            spans.push((page, page + pages));
            for edge in [page, page + pages] {
                if whole || edge % window != 0 {
                    cuts.insert(edge);
                }
            }
            limit("ranges", spans.len() as u64, max_events / 4)?;
        }
    }
    let covered = merge(spans.clone());
    let within = |p: u64| {
        let i = covered.partition_point(|&(s, _)| s <= p);
        i > 0 && p < covered[i - 1].1
    };
    let block_pages = BLOCK / PAGE;
    for m in msgs {
        if let What::Fault { page, .. } | What::CpuFault { page } = m.what
            && !within(page)
        {
            let b = page / block_pages * block_pages;
            spans.push((b, b + block_pages));
            limit("ranges", spans.len() as u64, max_events / 4)?;
        }
    }
    // The mappings: maximal runs of covered pages; the buffers: their
    // pieces between cuts.
    let vmas: Vec<(u64, u64)> = merge(spans)
        .into_iter()
        .map(|(s, e)| (s * PAGE, (e - s) * PAGE))
        .collect();
    let mut buffers: Vec<(u64, u64)> = Vec::new();
    for &(addr, len) in &vmas {
        let (s, e) = (addr / PAGE, (addr + len) / PAGE);
        let mut at = s;
        for &c in cuts.range(s + 1..e) {
            buffers.push((at * PAGE, (c - at) * PAGE));
            at = c;
        }
        buffers.push((at * PAGE, (e - at) * PAGE));
        limit("buffers", buffers.len() as u64, max_events / 4)?;
    }
    Ok(buffers)
}

/// The trace of `msgs`, in time order.
fn build(
    msgs: &[Record],
    mut report: Report,
    max_events: u64,
    allocations: Option<&[(u64, u64)]>,
) -> Result<Imported, ImportError> {
    // GPUs: every gpu_id a message came from or names as a destination.
    // (0 is system memory: a CPU fault's record, where the format keeps
    // them apart, is of no GPU.)
    let mut real: BTreeSet<u32> = msgs.iter().map(|m| m.gpu).filter(|&g| g != 0).collect();
    for m in msgs {
        if let What::Migrate { to, .. } = m.what
            && to != 0
            && to != u32::MAX
        {
            real.insert(to);
        }
    }
    let limit = |what, value: u64, max: u64| {
        if value > max {
            Err(ImportError::Limit { what, value, max })
        } else {
            Ok(())
        }
    };
    limit(
        "GPUs",
        real.len() as u64,
        svm_core::gpu::MAX_GPU_INSTANCE as u64,
    )?;
    let ours: BTreeMap<u32, u32> = real
        .iter()
        .enumerate()
        .map(|(i, &g)| (g, FIRST_GPU_ID + 0x1000 * u32::try_from(i).unwrap_or(0)))
        .collect();
    report.gpus = ours.iter().map(|(&r, &o)| (r, o)).collect();
    let loc = |g: u32| if g == 0 || g == u32::MAX { 0 } else { ours[&g] };
    report.listed = allocations.is_some();
    let buffers = match allocations {
        Some(list) => list.to_vec(),
        None => clustered(msgs, max_events)?,
    };
    // The mappings: maximal runs of the buffers' pages.
    let vmas: Vec<(u64, u64)> = merge(
        buffers
            .iter()
            .map(|&(a, l)| (a / PAGE, (a + l) / PAGE))
            .collect(),
    )
    .into_iter()
    .map(|(s, e)| (s * PAGE, (e - s) * PAGE))
    .collect();
    // What lies outside every buffer (only an allocation list leaves
    // any) is left out of the trace, and counted.
    let inside = |page: u64| {
        let a = page * PAGE;
        let k = buffers.partition_point(|&(b, _)| b <= a);
        k > 0 && a < buffers[k - 1].0 + buffers[k - 1].1
    };
    report.buffers.clone_from(&buffers);
    let access: Vec<(u32, u32)> = ours.values().map(|&g| (attr_type::ACCESS, g)).collect();
    // Processes.
    let mut pids: Vec<u32> = Vec::new();
    for m in msgs {
        if !matches!(m.what, What::Effect(_) | What::Dropped(_)) && !pids.contains(&m.pid) {
            pids.push(m.pid);
        }
    }
    if pids.is_empty() {
        return Err(ImportError::Empty);
    }
    report.pids.clone_from(&pids);
    let mut ev: Vec<TraceEvent> = Vec::new();
    let xnack = msgs.iter().any(|m| matches!(m.what, What::Fault { .. }));
    for (p, &pid) in pids.iter().enumerate() {
        let p = u32::try_from(p).unwrap_or(u32::MAX);
        ev.push(TraceEvent::Spawn {
            name: format!("pid {pid}"),
        });
        if xnack {
            ev.push(TraceEvent::SetXnack { pid: p, value: 1 });
        }
        for &(addr, len) in &vmas {
            ev.push(TraceEvent::Mmap {
                pid: p,
                addr,
                len,
                prot: 3,
                mark: 0,
            });
        }
        for &(addr, size) in &buffers {
            ev.push(TraceEvent::SetAttr {
                pid: p,
                addr,
                size,
                attrs: access.clone(),
            });
        }
    }
    let proc_of =
        |pid: u32| u32::try_from(pids.iter().position(|&x| x == pid).unwrap_or(0)).unwrap_or(0);
    // Each fault's end (PAGE_FAULT_END of its GPU, pid and page, the
    // oldest open start first), for the time its wave was held.
    let mut ends: Vec<Option<u64>> = vec![None; msgs.len()];
    let mut open: BTreeMap<(u32, u32, u64), std::collections::VecDeque<usize>> = BTreeMap::new();
    for (i, m) in msgs.iter().enumerate() {
        match m.what {
            What::Fault { page, .. } => open.entry((m.gpu, m.pid, page)).or_default().push_back(i),
            What::Effect(Effect::FaultEnd { page, .. }) => {
                if let Some(s) = open
                    .get_mut(&(m.gpu, m.pid, page))
                    .and_then(std::collections::VecDeque::pop_front)
                {
                    ends[s] = Some(m.ts);
                }
            }
            _ => {}
        }
    }
    // The faults of one GPU of one process with nothing between them: a
    // kernel. Each is kept with its time and its end.
    let mut run: Vec<(u64, u64, WaveOp)> = Vec::new();
    let mut run_of: Option<(u32, u32)> = None;
    let mut kernels = 0u32;
    let mut unmapped: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    // Where the host is in the real run's time: the trace lets the time
    // between its steps pass (Advance), so that what the application did
    // between them (compute, I/O) is not lost.
    let mut host_at = msgs.first().map_or(0, |m| m.ts);
    let advance = |ev: &mut Vec<TraceEvent>, host_at: &mut u64, ts: u64| {
        if ts > *host_at {
            ev.push(TraceEvent::Advance { ns: ts - *host_at });
            *host_at = ts;
        }
    };
    // A wave that faults waits until the fault is served, then computes
    // until its next fault: dealt round robin, each fault is preceded by
    // the compute its wave would need to raise it when the real one was
    // raised, counted from the real end of the wave's last fault. So the
    // faults reach the engine spread as the real ones came, not at once.
    let flush = |ev: &mut Vec<TraceEvent>,
                 run: &mut Vec<(u64, u64, WaveOp)>,
                 of: &mut Option<(u32, u32)>,
                 kernels: &mut u32,
                 host_at: &mut u64| {
        let Some((pid, gpu_id)) = of.take().filter(|_| !run.is_empty()) else {
            return;
        };
        let waves = u32::try_from(run.len()).unwrap_or(WAVES).clamp(1, WAVES);
        let kernel = *kernels;
        *kernels += 1;
        advance(ev, host_at, run[0].0);
        ev.push(TraceEvent::Launch { pid, gpu_id, waves });
        let mut free_at = vec![run[0].0; waves as usize];
        let mut last = run[0].0;
        for (i, (ts, end, op)) in run.drain(..).enumerate() {
            let wave = u32::try_from(i % WAVES as usize).unwrap_or(0) % waves;
            let at = &mut free_at[wave as usize];
            if ts > *at {
                ev.push(TraceEvent::Wave {
                    kernel,
                    wave,
                    op: WaveOp::Compute { ns: ts - *at },
                });
            }
            ev.push(TraceEvent::Wave { kernel, wave, op });
            *at = end.max(ts);
            last = last.max(*at);
        }
        ev.push(TraceEvent::Wait { kernel });
        // The host waited for the kernel.
        *host_at = last;
    };
    // A touch of what a munmap took maps it again first: the munmap's
    // pages, registered as the buffers there were.
    let remap = |ev: &mut Vec<TraceEvent>,
                 unmapped: &mut BTreeMap<u32, Vec<(u64, u64)>>,
                 pid: u32,
                 addr: u64| {
        let Some(list) = unmapped.get_mut(&pid) else {
            return;
        };
        let Some(k) = list.iter().position(|&(s, e)| (s..e).contains(&addr)) else {
            return;
        };
        let (s, e) = list.swap_remove(k);
        ev.push(TraceEvent::Mmap {
            pid,
            addr: s,
            len: e - s,
            prot: 3,
            mark: 0,
        });
        for &(b, len) in &buffers {
            let (lo, hi) = (b.max(s), (b + len).min(e));
            if lo < hi {
                ev.push(TraceEvent::SetAttr {
                    pid,
                    addr: lo,
                    size: hi - lo,
                    attrs: access.clone(),
                });
            }
        }
    };
    for (i, m) in msgs.iter().enumerate() {
        let pid = proc_of(m.pid);
        if let What::Fault { page, .. }
        | What::CpuFault { page }
        | What::Migrate { page, .. }
        | What::Unmap { page, .. } = m.what
            && !inside(page)
        {
            report.outside += 1;
            continue;
        }
        match m.what {
            What::Fault { page, write } => {
                let gpu_id = ours[&m.gpu];
                let addr = page * PAGE;
                let needs_map = unmapped
                    .get(&pid)
                    .is_some_and(|l| l.iter().any(|&(s, e)| (s..e).contains(&addr)));
                if run_of != Some((pid, gpu_id)) || needs_map {
                    flush(&mut ev, &mut run, &mut run_of, &mut kernels, &mut host_at);
                }
                if needs_map {
                    remap(&mut ev, &mut unmapped, pid, addr);
                }
                run_of = Some((pid, gpu_id));
                let op = if write {
                    WaveOp::Store { addr, len: 4 }
                } else {
                    WaveOp::Load { addr, len: 4 }
                };
                run.push((m.ts, ends[i].unwrap_or(m.ts), op));
                report.gpu_faults += 1;
            }
            What::Migrate {
                page, trigger: 2, ..
            }
            | What::CpuFault { page } => {
                flush(&mut ev, &mut run, &mut run_of, &mut kernels, &mut host_at);
                advance(&mut ev, &mut host_at, m.ts);
                let addr = page * PAGE;
                remap(&mut ev, &mut unmapped, pid, addr);
                ev.push(TraceEvent::Cpu {
                    pid,
                    addr,
                    len: 4,
                    write: false,
                });
                report.cpu_faults += 1;
            }
            What::Migrate {
                page,
                pages,
                to,
                trigger: 0,
                ..
            } => {
                flush(&mut ev, &mut run, &mut run_of, &mut kernels, &mut host_at);
                advance(&mut ev, &mut host_at, m.ts);
                remap(&mut ev, &mut unmapped, pid, page * PAGE);
                ev.push(TraceEvent::SetAttr {
                    pid,
                    addr: page * PAGE,
                    size: pages.max(1) * PAGE,
                    attrs: vec![(attr_type::PREFETCH_LOC, loc(to))],
                });
                report.prefetches += 1;
            }
            What::Unmap {
                page,
                pages,
                trigger: 2,
            } => {
                flush(&mut ev, &mut run, &mut run_of, &mut kernels, &mut host_at);
                advance(&mut ev, &mut host_at, m.ts);
                ev.push(TraceEvent::Munmap {
                    pid,
                    addr: page * PAGE,
                    len: pages.max(1) * PAGE,
                });
                // Mapped again when touched.
                let list = unmapped.entry(pid).or_default();
                list.push((page * PAGE, (page + pages.max(1)) * PAGE));
                limit("munmaps", list.len() as u64, max_events / 4)?;
                report.unmaps += 1;
            }
            What::Dropped(n) => report.dropped += n,
            What::Migrate { .. } | What::Unmap { .. } | What::Effect(_) => report.effects += 1,
        }
        limit(
            "trace events",
            // (A fault takes two events: its compute and its access.)
            ev.len() as u64 + 2 * run.len() as u64 + 1,
            max_events,
        )?;
    }
    flush(&mut ev, &mut run, &mut run_of, &mut kernels, &mut host_at);
    report.kernels = u64::from(kernels);
    Ok(Imported { events: ev, report })
}

/// `spans` (page intervals) merged where they overlap or touch, in order.
fn merge(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    spans.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in spans {
        match out.last_mut() {
            Some((_, end)) if s <= *end => *end = (*end).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests;

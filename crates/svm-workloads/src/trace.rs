//! Traces: a run's access stream in a compact binary file, replayed on a
//! fresh machine; and a CSV form to bring accesses from other tools.
//!
//! The format is documented in `docs/trace.md`. A trace holds the calls a
//! run made (processes, mappings, SET_ATTR, XNACK mode, CPU accesses,
//! launches, waits, time) and every memory operation of every wave in its
//! program order, but no data: replayed stores write a fixed pattern. The
//! memory system therefore does exactly what it did when recorded (the
//! same faults, migrations, events and timing, under the same profile,
//! policy and seed), which is what a trace is for.

use std::collections::BTreeMap;
use std::rc::Rc;

use svm_core::addr::CpuVa;
use svm_core::uapi::{SVM_OP_SET_ATTR, SvmArgs, SvmAttribute};
use svm_sim::machine::{
    AccessError, KernelId, KernelStats, Machine, Pid, TraceEvent, WaveCtx, WaveOp,
};
use svm_sim::mm::{Backing, Mark, Prot};

use crate::kernel;

/// The first bytes of a trace file.
pub const MAGIC: &[u8; 8] = b"SVMTRACE";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;

/// Why a trace could not be read or replayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// Not a trace, or a version this build cannot read.
    #[error("not an svmsim trace (or version {0} is not supported)")]
    Header(u16),
    /// The bytes end or go wrong at `offset`.
    #[error("corrupt trace at byte {offset}: {why}")]
    Corrupt {
        /// Where.
        offset: usize,
        /// What.
        why: &'static str,
    },
    /// A CSV line that does not parse.
    #[error("line {line}: {why}")]
    Csv {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A count or size above its limit (`docs/files.md`), at `offset` of
    /// a binary trace or on `line` of a CSV one.
    #[error("{at}: {what} {value} is above the limit of {max}")]
    Limit {
        /// `byte N` or `line N`.
        at: String,
        /// What is counted.
        what: &'static str,
        /// How many or how large.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A call the replay could not make.
    #[error("replay: {0}")]
    Replay(String),
}

/// The most events a trace holds, whatever the host budget: a 1 GiB file
/// of two-byte records.
pub const MAX_EVENTS: usize = 1 << 29;

/// Host bytes one event takes while it is replayed: the event, and its
/// wave operation copied into its wave's program.
pub const EVENT_HOST_BYTES: u64 =
    (std::mem::size_of::<TraceEvent>() + std::mem::size_of::<WaveOp>() + 16) as u64;

/// The gpu_ids `events` allocate on or launch kernels on (CPU threads,
/// gpu_id 0, are not GPUs).
pub fn gpu_ids(events: &[TraceEvent]) -> std::collections::BTreeSet<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            TraceEvent::AllocBo { gpu_id, .. } | TraceEvent::Launch { gpu_id, .. } => {
                (*gpu_id != 0).then_some(*gpu_id)
            }
            _ => None,
        })
        .collect()
}

/// Gives every SET_ATTR of `events` migration granularity `g` (log2
/// pages): a granularity it sets becomes `g`, and one that sets none gains
/// it. With the run's `default_granularity` at `g` too, every range the
/// trace makes has granularity `g`, as a workload run with `--granularity`
/// does.
pub fn set_granularity(events: &mut [TraceEvent], g: u32) {
    use svm_core::uapi::attr_type::GRANULARITY;
    for e in events {
        if let TraceEvent::SetAttr { attrs, .. } = e {
            attrs.retain(|(ty, _)| *ty != GRANULARITY);
            attrs.push((GRANULARITY, g));
        }
    }
}

/// What a replay of `events` takes of host memory, estimated before it
/// runs: the events ([`EVENT_HOST_BYTES`] each), and for every page its
/// accesses can touch or its mappings fault in (no more than it maps):
/// the page, the checker's shadow of it, and 64 bytes of bookkeeping. A
/// SET_ATTR may map (and so fault in) all it names; a wave's access, the
/// widest granularity window (the run's `default_granularity` or one the
/// trace sets) on both sides.
pub fn host_bytes(events: &[TraceEvent], default_granularity: u8) -> u64 {
    const PAGE: u64 = 4096;
    let granularity = events
        .iter()
        .filter_map(|e| match e {
            TraceEvent::SetAttr { attrs, .. } => attrs
                .iter()
                .filter(|(ty, _)| *ty == svm_core::uapi::attr_type::GRANULARITY)
                .map(|&(_, v)| v)
                .max(),
            _ => None,
        })
        .fold(u32::from(default_granularity), u32::max);
    let window = 1u64.checked_shl(granularity).unwrap_or(u64::MAX);
    let (mut mapped, mut touched) = (0u64, 0u64);
    for e in events {
        let len = match e {
            TraceEvent::Mmap { len, .. } => {
                mapped = mapped.saturating_add(len.div_ceil(PAGE));
                continue;
            }
            TraceEvent::SetAttr { size, .. } => {
                touched = touched.saturating_add(size.div_ceil(PAGE));
                continue;
            }
            TraceEvent::Cpu { len, .. } => *len,
            TraceEvent::Wave {
                op:
                    WaveOp::Load { len, .. } | WaveOp::Store { len, .. } | WaveOp::Atomic { len, .. },
                ..
            } => {
                touched = touched.saturating_add(window.saturating_mul(2));
                u64::from(*len)
            }
            _ => continue,
        };
        // An access straddles at most one more page than its length fills.
        touched = touched.saturating_add(len.div_ceil(PAGE) + 1);
    }
    (events.len() as u64)
        .saturating_mul(EVENT_HOST_BYTES)
        .saturating_add(mapped.min(touched).saturating_mul(2 * PAGE + 64))
}

// Record tags.
const SPAWN: u8 = 1;
const MMAP: u8 = 2;
const MUNMAP: u8 = 3;
const SET_ATTR: u8 = 4;
const SET_XNACK: u8 = 5;
const CPU: u8 = 6;
const LAUNCH: u8 = 7;
const LOAD: u8 = 8;
const STORE: u8 = 9;
const COMPUTE: u8 = 10;
const WAIT: u8 = 11;
const ADVANCE: u8 = 12;
const EXIT: u8 = 13;
const FORK: u8 = 14;
const ALLOC_BO: u8 = 15;
const FREE_BO: u8 = 16;
/// An atomic add of 32-bit words (a tag newer builds added to version 1:
/// a trace with none reads anywhere).
const ATOMIC: u8 = 17;

/// LEB128: seven bits a byte, low first, the top bit saying more follow.
fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(u8::try_from(v & 0x7f).unwrap_or(0) | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).unwrap_or(0));
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes a record as bytes (see `docs/trace.md`).
pub fn encode(events: &[TraceEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + events.len() * 6);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Wave addresses are stored as the difference from the previous
    // wave operation's address: streams move in small steps.
    let mut last_addr = 0u64;
    for e in events {
        match e {
            TraceEvent::Spawn { name } => {
                out.push(SPAWN);
                put(&mut out, name.len() as u64);
                out.extend_from_slice(name.as_bytes());
            }
            TraceEvent::AllocBo { pid, gpu_id, bytes } => {
                out.push(ALLOC_BO);
                put(&mut out, u64::from(*pid));
                put(&mut out, u64::from(*gpu_id));
                put(&mut out, *bytes);
            }
            TraceEvent::FreeBo { pid, handle } => {
                out.push(FREE_BO);
                put(&mut out, u64::from(*pid));
                put(&mut out, *handle);
            }
            TraceEvent::Fork { pid, name } => {
                out.push(FORK);
                put(&mut out, u64::from(*pid));
                put(&mut out, name.len() as u64);
                out.extend_from_slice(name.as_bytes());
            }
            TraceEvent::Mmap {
                pid,
                addr,
                len,
                prot,
                mark,
            } => {
                out.push(MMAP);
                for v in [
                    u64::from(*pid),
                    *addr,
                    *len,
                    u64::from(*prot),
                    u64::from(*mark),
                ] {
                    put(&mut out, v);
                }
            }
            TraceEvent::Munmap { pid, addr, len } => {
                out.push(MUNMAP);
                for v in [u64::from(*pid), *addr, *len] {
                    put(&mut out, v);
                }
            }
            TraceEvent::SetAttr {
                pid,
                addr,
                size,
                attrs,
            } => {
                out.push(SET_ATTR);
                for v in [u64::from(*pid), *addr, *size, attrs.len() as u64] {
                    put(&mut out, v);
                }
                for &(t, v) in attrs {
                    put(&mut out, u64::from(t));
                    put(&mut out, u64::from(v));
                }
            }
            TraceEvent::SetXnack { pid, value } => {
                out.push(SET_XNACK);
                put(&mut out, u64::from(*pid));
                put(&mut out, zigzag(i64::from(*value)));
            }
            TraceEvent::Cpu {
                pid,
                addr,
                len,
                write,
            } => {
                out.push(CPU);
                for v in [u64::from(*pid), *addr, *len, u64::from(*write)] {
                    put(&mut out, v);
                }
            }
            TraceEvent::Launch { pid, gpu_id, waves } => {
                out.push(LAUNCH);
                for v in [u64::from(*pid), u64::from(*gpu_id), u64::from(*waves)] {
                    put(&mut out, v);
                }
            }
            TraceEvent::Wave { kernel, wave, op } => {
                let (tag, a, n) = match *op {
                    WaveOp::Load { addr, len } => (LOAD, addr, u64::from(len)),
                    WaveOp::Store { addr, len } => (STORE, addr, u64::from(len)),
                    WaveOp::Atomic { addr, len } => (ATOMIC, addr, u64::from(len)),
                    WaveOp::Compute { ns } => (COMPUTE, last_addr, ns),
                };
                out.push(tag);
                put(&mut out, u64::from(*kernel));
                put(&mut out, u64::from(*wave));
                if tag != COMPUTE {
                    put(&mut out, zigzag(a.wrapping_sub(last_addr) as i64));
                    last_addr = a;
                }
                put(&mut out, n);
            }
            TraceEvent::Wait { kernel } => {
                out.push(WAIT);
                put(&mut out, u64::from(*kernel));
            }
            TraceEvent::Advance { ns } => {
                out.push(ADVANCE);
                put(&mut out, *ns);
            }
            TraceEvent::Exit { pid } => {
                out.push(EXIT);
                put(&mut out, u64::from(*pid));
            }
        }
    }
    out
}

/// `value`, or [`TraceError::Limit`] placed by `at` when it is above
/// `max`: the one check of both readers.
fn within(
    at: impl FnOnce() -> String,
    what: &'static str,
    value: u64,
    max: u64,
) -> Result<u64, TraceError> {
    if value > max {
        return Err(TraceError::Limit {
            at: at(),
            what,
            value,
            max,
        });
    }
    Ok(value)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn err(&self, why: &'static str) -> TraceError {
        TraceError::Corrupt {
            offset: self.at,
            why,
        }
    }

    /// `value`, or an error when it is above `max`.
    fn within(&self, what: &'static str, value: u64, max: u64) -> Result<u64, TraceError> {
        within(|| format!("byte {}", self.at), what, value, max)
    }

    fn byte(&mut self) -> Result<u8, TraceError> {
        let v = *self
            .b
            .get(self.at)
            .ok_or_else(|| self.err("ends inside a record"))?;
        self.at += 1;
        Ok(v)
    }

    fn var(&mut self) -> Result<u64, TraceError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("a number longer than 64 bits"))
    }

    fn u32(&mut self) -> Result<u32, TraceError> {
        let v = self.var()?;
        u32::try_from(v).map_err(|_| self.err("a number above 32 bits"))
    }
}

/// Decodes a trace file of at most `max_events` events (at most
/// [`MAX_EVENTS`]; fewer to keep a replay within a host budget, see
/// [`EVENT_HOST_BYTES`]).
///
/// Every count and size is checked against its limit as it is read:
/// processes ([`MAX_PROCESSES`](svm_sim::limits::MAX_PROCESSES)), the bytes
/// of a CPU access and of a wave instruction, the waves of a launch.
///
/// # Errors
/// A bad header, bytes that end or go wrong, or a limit passed; never a
/// panic.
pub fn decode(b: &[u8], max_events: usize) -> Result<Vec<TraceEvent>, TraceError> {
    use svm_sim::limits as l;
    let max_events = max_events.min(MAX_EVENTS);
    if b.len() < 10 || &b[..8] != MAGIC {
        return Err(TraceError::Header(0));
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != VERSION {
        return Err(TraceError::Header(version));
    }
    let mut r = Reader { b, at: 10 };
    let mut out = Vec::new();
    let mut last_addr = 0u64;
    let mut spawns = 0u64;
    while r.at < b.len() {
        r.within("events", out.len() as u64 + 1, max_events as u64)?;
        let tag = r.byte()?;
        let e = match tag {
            SPAWN | FORK => {
                let parent = if tag == FORK { Some(r.u32()?) } else { None };
                let n = usize::try_from(r.var()?).map_err(|_| r.err("a name too long"))?;
                let end =
                    r.at.checked_add(n)
                        .filter(|&e| e <= b.len())
                        .ok_or_else(|| r.err("a name past the end"))?;
                let name = std::str::from_utf8(&b[r.at..end])
                    .map_err(|_| r.err("a name that is not UTF-8"))?
                    .to_owned();
                r.at = end;
                spawns += 1;
                r.within("processes", spawns, u64::from(l::MAX_PROCESSES))?;
                match parent {
                    Some(pid) => TraceEvent::Fork { pid, name },
                    None => TraceEvent::Spawn { name },
                }
            }
            MMAP => TraceEvent::Mmap {
                pid: r.u32()?,
                addr: r.var()?,
                len: r.var()?,
                prot: u8::try_from(r.var()?).map_err(|_| r.err("bad protection"))?,
                mark: u8::try_from(r.var()?).map_err(|_| r.err("bad mark"))?,
            },
            MUNMAP => TraceEvent::Munmap {
                pid: r.u32()?,
                addr: r.var()?,
                len: r.var()?,
            },
            SET_ATTR => {
                let (pid, addr, size) = (r.u32()?, r.var()?, r.var()?);
                let n = r.var()?;
                if n > 64 {
                    return Err(r.err("more attributes than any call has"));
                }
                let mut attrs = Vec::new();
                for _ in 0..n {
                    attrs.push((r.u32()?, r.u32()?));
                }
                TraceEvent::SetAttr {
                    pid,
                    addr,
                    size,
                    attrs,
                }
            }
            SET_XNACK => TraceEvent::SetXnack {
                pid: r.u32()?,
                value: i32::try_from(unzigzag(r.var()?)).map_err(|_| r.err("bad XNACK value"))?,
            },
            CPU => TraceEvent::Cpu {
                pid: r.u32()?,
                addr: r.var()?,
                len: {
                    let v = r.var()?;
                    r.within("bytes of a CPU access", v, l::MAX_ACCESS_BYTES)?
                },
                write: r.var()? != 0,
            },
            LAUNCH => TraceEvent::Launch {
                pid: r.u32()?,
                gpu_id: r.u32()?,
                waves: {
                    let v = r.u32()?;
                    r.within("waves of a launch", v.into(), l::MAX_LAUNCH_WAVES.into())?;
                    v
                },
            },
            LOAD | STORE | ATOMIC | COMPUTE => {
                let (kernel, wave) = (r.u32()?, r.u32()?);
                let op = if tag == COMPUTE {
                    WaveOp::Compute { ns: r.var()? }
                } else {
                    let addr = last_addr.wrapping_add(unzigzag(r.var()?) as u64);
                    last_addr = addr;
                    let len = r.u32()?;
                    r.within(
                        "bytes of a wave instruction",
                        len.into(),
                        l::MAX_WAVE_OP_BYTES,
                    )?;
                    match tag {
                        LOAD => WaveOp::Load { addr, len },
                        STORE => WaveOp::Store { addr, len },
                        _ => WaveOp::Atomic { addr, len },
                    }
                };
                TraceEvent::Wave { kernel, wave, op }
            }
            WAIT => TraceEvent::Wait { kernel: r.u32()? },
            ADVANCE => TraceEvent::Advance { ns: r.var()? },
            EXIT => TraceEvent::Exit { pid: r.u32()? },
            ALLOC_BO => TraceEvent::AllocBo {
                pid: r.u32()?,
                gpu_id: r.u32()?,
                bytes: r.var()?,
            },
            FREE_BO => TraceEvent::FreeBo {
                pid: r.u32()?,
                handle: r.var()?,
            },
            _ => return Err(r.err("an unknown record tag")),
        };
        out.push(e);
    }
    Ok(out)
}

/// What a replay's kernels came to, in launch order.
pub type Replayed = Vec<Result<KernelStats, AccessError>>;

/// The byte a replayed store writes.
const FILL: u8 = 0xa5;

/// Replays `events` on `m` (which should be configured as the recording
/// machine was: topology, profile, policy, seed).
///
/// # Errors
/// A call that cannot be made (a process that does not exist, a mapping
/// that fails) or a wait for a kernel never launched.
pub fn replay(m: &mut Machine, events: &[TraceEvent]) -> Result<Replayed, TraceError> {
    // Each wave's operations, in its program order.
    let mut programs: BTreeMap<(u32, u32), Vec<WaveOp>> = BTreeMap::new();
    for e in events {
        if let TraceEvent::Wave { kernel, wave, op } = e {
            programs.entry((*kernel, *wave)).or_default().push(*op);
        }
    }
    let mut pids: Vec<Pid> = Vec::new();
    let pid = |pids: &[Pid], p: u32| -> Result<Pid, TraceError> {
        pids.get(p as usize)
            .copied()
            .ok_or_else(|| TraceError::Replay(format!("process {p} was never spawned")))
    };
    let mut launched: Vec<KernelId> = Vec::new();
    let mut out = Vec::new();
    for e in events {
        match e {
            TraceEvent::Spawn { name } => pids.push(m.spawn(name)),
            // Results are the recorded run's: a refusal then is one now.
            TraceEvent::AllocBo {
                pid: p,
                gpu_id,
                bytes,
            } => {
                let _ = m.alloc_vram_bo(pid(&pids, *p)?, *gpu_id, *bytes);
            }
            TraceEvent::FreeBo { pid: p, handle } => {
                let _ = m.free_vram_bo(pid(&pids, *p)?, *handle);
            }
            TraceEvent::Fork { pid: p, name } => {
                let parent = pid(&pids, *p)?;
                pids.push(m.fork(parent, name));
            }
            TraceEvent::Mmap {
                pid: p,
                addr,
                len,
                prot,
                mark,
            } => {
                let prot = Prot {
                    read: prot & 1 != 0,
                    write: prot & 2 != 0,
                    exec: prot & 4 != 0,
                };
                let mark = match mark {
                    1 => Mark::Heap,
                    2 => Mark::Stack,
                    _ => Mark::None,
                };
                m.mmap(
                    pid(&pids, *p)?,
                    Some(CpuVa::new(*addr)),
                    *len,
                    prot,
                    Backing::Anon,
                    mark,
                )
                .map_err(|e| TraceError::Replay(format!("mmap at {addr:#x}: {e}")))?;
            }
            TraceEvent::Munmap { pid: p, addr, len } => {
                let _ = m.munmap(pid(&pids, *p)?, CpuVa::new(*addr), *len);
            }
            TraceEvent::SetAttr {
                pid: p,
                addr,
                size,
                attrs,
            } => {
                let mut a = SvmArgs {
                    start_addr: *addr,
                    size: *size,
                    op: SVM_OP_SET_ATTR,
                    attrs: attrs
                        .iter()
                        .map(|&(t, v)| SvmAttribute::new(t, v))
                        .collect(),
                };
                let _ = m.svm_ioctl(pid(&pids, *p)?, &mut a);
            }
            TraceEvent::SetXnack { pid: p, value } => {
                let _ = m.set_xnack_mode(pid(&pids, *p)?, *value);
            }
            TraceEvent::Cpu {
                pid: p,
                addr,
                len,
                write,
            } => {
                if *len > svm_sim::limits::MAX_ACCESS_BYTES {
                    return Err(TraceError::Replay(format!(
                        "a CPU access of {len} bytes (at most {})",
                        svm_sim::limits::MAX_ACCESS_BYTES
                    )));
                }
                let data = write.then(|| vec![FILL; usize::try_from(*len).unwrap_or(0)]);
                let _ = m.cpu_access(pid(&pids, *p)?, CpuVa::new(*addr), *len, data.as_deref());
            }
            TraceEvent::Launch {
                pid: p,
                gpu_id,
                waves,
            } => {
                let k = u32::try_from(launched.len()).unwrap_or(u32::MAX);
                if *waves > svm_sim::limits::MAX_LAUNCH_WAVES {
                    return Err(TraceError::Replay(format!(
                        "a launch of {waves} waves (at most {})",
                        svm_sim::limits::MAX_LAUNCH_WAVES
                    )));
                }
                // Only waves that did something have a program; the rest
                // replay as empty.
                let later = programs.split_off(&(k + 1, 0));
                let mine = std::mem::replace(&mut programs, later);
                let progs: Rc<BTreeMap<u32, Rc<Vec<WaveOp>>>> = Rc::new(
                    mine.into_iter()
                        .map(|((_, w), p)| (w, Rc::new(p)))
                        .collect(),
                );
                let f = kernel(move |w, ctx: WaveCtx| {
                    let prog = progs.get(&w).cloned().unwrap_or_default();
                    async move {
                        for op in prog.iter() {
                            match *op {
                                WaveOp::Load { addr, len } => {
                                    ctx.load(addr, len as usize).await;
                                }
                                WaveOp::Store { addr, len } => {
                                    ctx.store(addr, vec![FILL; len as usize]).await;
                                }
                                WaveOp::Atomic { addr, len } => {
                                    // Adds one to each word.
                                    let ones = 1u32.to_le_bytes().repeat(len as usize / 4);
                                    ctx.atomic_add(addr, ones).await;
                                }
                                WaveOp::Compute { ns } => {
                                    ctx.compute(ns).await;
                                }
                            }
                        }
                    }
                });
                // gpu_id 0 (never a GPU's) marks CPU threads.
                let id = if *gpu_id == 0 {
                    m.launch_cpu(pid(&pids, *p)?, *waves, f)
                } else {
                    m.launch_kernel(pid(&pids, *p)?, *gpu_id, *waves, f)
                }
                .map_err(|e| TraceError::Replay(format!("launch: {e}")))?;
                launched.push(id);
            }
            TraceEvent::Wait { kernel } => {
                let id = *launched.get(*kernel as usize).ok_or_else(|| {
                    TraceError::Replay(format!("wait for kernel {kernel}, never launched"))
                })?;
                out.push(m.wait_kernel(id));
            }
            TraceEvent::Advance { ns } => m.advance(*ns),
            TraceEvent::Exit { pid: p } => m.exit(pid(&pids, *p)?),
            TraceEvent::Wave { .. } => {}
        }
    }
    Ok(out)
}

/// A kernel read from CSV: its GPU, its wave count, its (wave, op) list.
type CsvKernel = (u32, u32, Vec<(u32, WaveOp)>);

/// Reads the CSV form: a header `kernel,gpu_id,wave,op,addr,len` and one
/// line per wave operation (`op` is `load`, `store` or `compute`; for
/// `compute`, `addr` is ignored and `len` is nanoseconds). Kernels run in
/// the order of their numbers, one after another. The trace maps every
/// 2 MiB block the accesses touch and registers it for the GPUs that touch
/// it, in one process.
///
/// At most `max_events` lines are read (as [`decode`]); wave numbers,
/// access lengths and gpu_ids are checked against their limits on the
/// line that holds them.
///
/// # Errors
/// A line that does not parse or passes a limit, with its number.
pub fn from_csv(text: &str, max_events: usize) -> Result<Vec<TraceEvent>, TraceError> {
    use svm_sim::limits as l;
    let max_events = max_events.min(MAX_EVENTS);
    const HEADER: [&str; 6] = ["kernel", "gpu_id", "wave", "op", "addr", "len"];
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let bad_header = || TraceError::Csv {
        line: 1,
        why: "expected the header kernel,gpu_id,wave,op,addr,len".into(),
    };
    if reader.headers().map_err(|_| bad_header())? != HEADER.as_slice() {
        return Err(bad_header());
    }
    let num = |s: &str, line: usize, what: &str| -> Result<u64, TraceError> {
        let s = s.trim();
        let v = match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse(),
        };
        v.map_err(|_| TraceError::Csv {
            line,
            why: format!("{what} {s:?} is not a number"),
        })
    };
    // kernel -> (gpu, waves, ops); blocks -> gpus touching them.
    let mut kernels: BTreeMap<u32, CsvKernel> = BTreeMap::new();
    let mut blocks: BTreeMap<u64, std::collections::BTreeSet<u32>> = BTreeMap::new();
    const BLOCK: u64 = 2 << 20;
    // The line a record starts on, counted in the text itself: the
    // reader's position is where it began to read, before the blank lines
    // it skipped. Records come in order, so the count goes on from the
    // last record's (counting from the start each time is quadratic).
    let bytes = text.as_bytes();
    let (mut seen_byte, mut seen_lines) = (0usize, 1usize);
    let mut line_at = |p: Option<&csv::Position>| {
        let mut byte = p.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
        byte = byte.min(bytes.len());
        while byte < bytes.len() && matches!(bytes[byte], b'\n' | b'\r') {
            byte += 1;
        }
        if byte < seen_byte {
            (seen_byte, seen_lines) = (0, 1);
        }
        seen_lines += bytes[seen_byte..byte]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        seen_byte = byte;
        seen_lines
    };
    let mut records = 0u64;
    for record in reader.records() {
        let record = record.map_err(|e| TraceError::Csv {
            line: line_at(e.position()),
            why: e.to_string(),
        })?;
        let line = line_at(record.position());
        records += 1;
        let limit = |what: &'static str, value: u64, max: u64| {
            within(|| format!("line {line}"), what, value, max).map(drop)
        };
        // Each line adds a wave event; launches, waits, maps come on top.
        limit("lines", records, max_events as u64 / 2)?;
        let f: Vec<&str> = record.iter().collect();
        if f.len() != 6 {
            return Err(TraceError::Csv {
                line,
                why: format!("{} fields, expected 6", f.len()),
            });
        }
        let too_big = |what: &str| TraceError::Csv {
            line,
            why: format!("{what} does not fit 32 bits"),
        };
        let kernel = u32::try_from(num(f[0], line, "kernel")?).map_err(|_| too_big("kernel"))?;
        let gpu = u32::try_from(num(f[1], line, "gpu_id")?).map_err(|_| too_big("gpu_id"))?;
        let wave = u32::try_from(num(f[2], line, "wave")?).map_err(|_| too_big("wave"))?;
        limit("wave", u64::from(wave), u64::from(l::MAX_LAUNCH_WAVES - 1))?;
        let addr = num(f[4], line, "addr")?;
        let len = num(f[5], line, "len")?;
        let op = match f[3].trim() {
            "load" | "store" | "atomic" => {
                limit("bytes of a wave instruction", len, l::MAX_WAVE_OP_BYTES)?;
                let len32 = u32::try_from(len).map_err(|_| too_big("len"))?;
                if len32 == 0 || addr.checked_add(len).is_none() {
                    return Err(TraceError::Csv {
                        line,
                        why: "an access needs 1 or more bytes inside the address space".into(),
                    });
                }
                if f[3].trim() == "atomic" && (addr % 4 != 0 || len % 4 != 0) {
                    return Err(TraceError::Csv {
                        line,
                        why:
                            "an atomic adds whole 32-bit words: addr and len must be multiples of 4"
                                .into(),
                    });
                }
                let mut b = addr / BLOCK;
                while b <= (addr + len - 1) / BLOCK {
                    blocks.entry(b).or_default().insert(gpu);
                    b += 1;
                }
                // Each block becomes a map and a SET_ATTR.
                limit(
                    "2 MiB blocks touched",
                    blocks.len() as u64,
                    max_events as u64 / 4,
                )?;
                match f[3].trim() {
                    "load" => WaveOp::Load { addr, len: len32 },
                    "store" => WaveOp::Store { addr, len: len32 },
                    _ => WaveOp::Atomic { addr, len: len32 },
                }
            }
            "compute" => WaveOp::Compute { ns: len },
            other => {
                return Err(TraceError::Csv {
                    line,
                    why: format!("op {other:?}: expected load, store, atomic or compute"),
                });
            }
        };
        let k = kernels.entry(kernel).or_insert((gpu, 0, Vec::new()));
        if k.0 != gpu {
            return Err(TraceError::Csv {
                line,
                why: format!("kernel {kernel} runs on gpu_id {:#x}, not {gpu:#x}", k.0),
            });
        }
        k.1 = k.1.max(wave.saturating_add(1));
        k.2.push((wave, op));
    }
    let mut ev = vec![TraceEvent::Spawn { name: "csv".into() }];
    for (&b, gpus) in &blocks {
        ev.push(TraceEvent::Mmap {
            pid: 0,
            addr: b * BLOCK,
            len: BLOCK,
            prot: 3,
            mark: 0,
        });
        ev.push(TraceEvent::SetAttr {
            pid: 0,
            addr: b * BLOCK,
            size: BLOCK,
            attrs: gpus
                .iter()
                .map(|&g| (svm_core::uapi::attr_type::ACCESS, g))
                .collect(),
        });
    }
    for (n, (_, (gpu, waves, ops))) in kernels.into_iter().enumerate() {
        let kernel = u32::try_from(n).unwrap_or(u32::MAX);
        ev.push(TraceEvent::Launch {
            pid: 0,
            gpu_id: gpu,
            waves,
        });
        for (wave, op) in ops {
            ev.push(TraceEvent::Wave { kernel, wave, op });
        }
        ev.push(TraceEvent::Wait { kernel });
    }
    Ok(ev)
}

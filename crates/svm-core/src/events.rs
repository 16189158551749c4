//! kfd SMI events (`kfd_smi_events.c`): the typed values the engine raises, and their text.
//!
//! # Overview
//! kfd reports SVM activity to tools through System Management Interface
//! events: `AMDKFD_IOC_SMI_EVENTS` opens one event file per GPU, and a read
//! of it gives that GPU's messages, one line each. The engine raises every
//! event as an [`Event`] through `Hardware::smi_event`, naming the GPU whose
//! stream gets it; the simulator keeps them typed and consumers match on
//! [`Kind`]. Addresses and sizes are in pages, `ts_ns` is simulated time in
//! nanoseconds (kfd's `ktime_get_boottime_ns()`), and `pid` is the process's
//! pid.
//!
//! Text is made in one place, [`Event`]'s `Display`: the event id in hex and
//! a space (`kfd_smi_event_add`'s `"%x "`), then the payload in the
//! kernel's `KFD_EVENT_FMT_*` format from `include/uapi/linux/kfd_ioctl.h`,
//! without the format's final newline (writers add it):
//!
//! | id | event | payload format |
//! |---|---|---|
//! | 5 | MIGRATE_START | `%lld -%d @%lx(%lx) %x->%x %x:%x %d` |
//! | 6 | MIGRATE_END | `%lld -%d @%lx(%lx) %x->%x %d %d` |
//! | 7 | PAGE_FAULT_START | `%lld -%d @%lx(%x) %c` |
//! | 8 | PAGE_FAULT_END | `%lld -%d @%lx(%x) %c` |
//! | 9 | QUEUE_EVICTION | `%lld -%d %x %d` |
//! | a | QUEUE_RESTORE | `%lld -%d %x %c` |
//! | b | UNMAP_FROM_GPU | `%lld -%d @%lx(%lx) %x %d` |
//!
//! These are the formats of current kernels: MIGRATE_END ends with the
//! migration's error code since 2024 ("Output migrate end event if migrate
//! failed"), and QUEUE_RESTORE always ends with a character, `R` when the
//! restore work failed and was rescheduled, `0` otherwise (since the 2025
//! fix that replaced the NUL byte the first macro version printed there).
//!
//! # Differences from the kernel
//! - kfd formats into a 96-byte buffer (`KFD_SMI_EVENT_MSG_SIZE`) and would
//!   cut a longer message; here nothing is cut. A message reaches 96 bytes
//!   only with timestamps beyond days of simulated time.
//! - kfd delivers an event only to clients that enabled its id in their
//!   mask and, for these per-process events, that belong to the same process
//!   (or are privileged and asked for all processes). The log here is what a
//!   privileged client with every SVM event enabled would read.
//!
//! The CLI writes the stream to disk (`svmsim::smi`).

use std::fmt;

use crate::addr::{PageCount, PageNum};
use crate::attr::Location;
use crate::gpu::GpuId;

/// `KFD_SMI_EVENT_MIGRATE_START`.
pub const MIGRATE_START: u32 = 5;
/// `KFD_SMI_EVENT_MIGRATE_END`.
pub const MIGRATE_END: u32 = 6;
/// `KFD_SMI_EVENT_PAGE_FAULT_START`.
pub const PAGE_FAULT_START: u32 = 7;
/// `KFD_SMI_EVENT_PAGE_FAULT_END`.
pub const PAGE_FAULT_END: u32 = 8;
/// `KFD_SMI_EVENT_QUEUE_EVICTION`.
pub const QUEUE_EVICTION: u32 = 9;
/// `KFD_SMI_EVENT_QUEUE_RESTORE`.
pub const QUEUE_RESTORE: u32 = 10;
/// `KFD_SMI_EVENT_UNMAP_FROM_GPU`.
pub const UNMAP_FROM_GPU: u32 = 11;

/// Why a migration ran (`KFD_MIGRATE_TRIGGER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MigrateTrigger {
    /// set_attr PREFETCH_LOC.
    Prefetch = 0,
    /// A GPU page fault.
    PagefaultGpu = 1,
    /// A CPU page fault.
    PagefaultCpu = 2,
    /// VRAM eviction.
    TtmEviction = 3,
    /// A GPU's access counters called a region hot (UVM's
    /// `UvmEventMigrationCauseAccessCounters`). Not a kfd trigger: kfd
    /// has no access counters, so its SMI lines never carry a 4.
    AccessCounter = 4,
}

impl MigrateTrigger {
    /// The uAPI number kfd prints.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// A short name for people (timelines, plots).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Prefetch => "prefetch",
            Self::PagefaultGpu => "GPU page fault",
            Self::PagefaultCpu => "CPU page fault",
            Self::TtmEviction => "TTM eviction",
            Self::AccessCounter => "access counter",
        }
    }
}

/// Why pages were unmapped from a GPU (`KFD_SVM_UNMAP_TRIGGER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum UnmapTrigger {
    /// An MMU notifier other than migration (mprotect, ...).
    MmuNotify = 0,
    /// The notifier of a migration.
    MmuNotifyMigrate = 1,
    /// munmap.
    UnmapFromCpu = 2,
}

impl UnmapTrigger {
    /// The uAPI number kfd prints.
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// Why a process's queues were stopped (`KFD_QUEUE_EVICTION_TRIGGER_*`).
///
/// The engine raises only [`EvictTrigger::Svm`]; the others are kfd's
/// non-SVM reasons, listed so that the type covers what the kernel prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EvictTrigger {
    /// An SVM range was evicted (XNACK off).
    Svm = 0,
    /// A userptr buffer was invalidated.
    Userptr = 1,
    /// TTM evicted a KFD buffer.
    Ttm = 2,
    /// The device was suspended.
    Suspend = 3,
    /// CRIU checkpoint.
    CriuCheckpoint = 4,
    /// CRIU restore.
    CriuRestore = 5,
}

impl EvictTrigger {
    /// The uAPI number kfd prints.
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// One SMI event: when, which process, and what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// Simulated time of the event, ns.
    pub ts_ns: u64,
    /// The process (kfd prints the pid after a `-`).
    pub pid: u32,
    /// The event and its fields.
    pub kind: Kind,
}

/// What an SMI event reports, one variant per kfd SVM event id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `PAGE_FAULT_START`: a GPU retry fault reached `restore_pages`.
    PageFaultStart {
        /// The faulting page.
        addr: PageNum,
        /// The faulting GPU.
        gpu_id: GpuId,
        /// A write fault (`W`), else a read (`R`).
        write: bool,
    },
    /// `PAGE_FAULT_END`: the fault was served.
    PageFaultEnd {
        /// The faulting page.
        addr: PageNum,
        /// The faulting GPU.
        gpu_id: GpuId,
        /// The migration branch ran (`M`), else the pages were only mapped
        /// (`U`, updated).
        migrated: bool,
    },
    /// `MIGRATE_START`: one `migrate_vma` chunk begins.
    MigrateStart {
        /// First page of the chunk.
        start: PageNum,
        /// Pages in the chunk.
        npages: PageCount,
        /// Where the pages come from.
        from: Location,
        /// Where they go.
        to: Location,
        /// The range's prefetch location (`None`: undefined, `ffffffff`).
        prefetch_loc: Option<Location>,
        /// The range's preferred location (`None`: undefined).
        preferred_loc: Option<Location>,
        /// Why.
        trigger: MigrateTrigger,
    },
    /// `MIGRATE_END`: that chunk is done.
    MigrateEnd {
        /// First page of the chunk.
        start: PageNum,
        /// Pages in the chunk.
        npages: PageCount,
        /// Where the pages came from.
        from: Location,
        /// Where they went.
        to: Location,
        /// Why.
        trigger: MigrateTrigger,
        /// 0, or the negative errno the migration failed with (kfd passes
        /// its `r`).
        error_code: i32,
    },
    /// `QUEUE_EVICTION`: the process's queues on the GPU stopped.
    QueueEviction {
        /// The GPU.
        gpu_id: GpuId,
        /// Why.
        trigger: EvictTrigger,
    },
    /// `QUEUE_RESTORE`: the restore work ran.
    QueueRestore {
        /// The GPU.
        gpu_id: GpuId,
        /// The restore failed and runs again later; the queues stay
        /// stopped (`R`, else `0`).
        rescheduled: bool,
    },
    /// `UNMAP_FROM_GPU`: pages were unmapped from a GPU.
    UnmapFromGpu {
        /// First page.
        addr: PageNum,
        /// Pages.
        npages: PageCount,
        /// The GPU.
        gpu_id: GpuId,
        /// Why.
        trigger: UnmapTrigger,
    },
}

impl Kind {
    /// The kfd event id (`enum kfd_smi_event`).
    pub const fn id(&self) -> u32 {
        match self {
            Self::PageFaultStart { .. } => PAGE_FAULT_START,
            Self::PageFaultEnd { .. } => PAGE_FAULT_END,
            Self::MigrateStart { .. } => MIGRATE_START,
            Self::MigrateEnd { .. } => MIGRATE_END,
            Self::QueueEviction { .. } => QUEUE_EVICTION,
            Self::QueueRestore { .. } => QUEUE_RESTORE,
            Self::UnmapFromGpu { .. } => UNMAP_FROM_GPU,
        }
    }
}

/// A location as kfd prints it with `%x`: 0 for system memory, else the gpu_id.
fn loc_raw(loc: Option<Location>) -> u32 {
    Location::to_uapi(loc)
}

impl fmt::Display for Event {
    /// The message a read of the GPU's SMI file gives, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ts, pid) = (self.ts_ns, self.pid);
        write!(f, "{:x} {ts} -{pid} ", self.kind.id())?;
        match self.kind {
            Kind::PageFaultStart {
                addr,
                gpu_id,
                write,
            } => {
                let rw = if write { 'W' } else { 'R' };
                write!(f, "@{:x}({:x}) {rw}", addr.raw(), gpu_id.raw())
            }
            Kind::PageFaultEnd {
                addr,
                gpu_id,
                migrated,
            } => {
                let mu = if migrated { 'M' } else { 'U' };
                write!(f, "@{:x}({:x}) {mu}", addr.raw(), gpu_id.raw())
            }
            Kind::MigrateStart {
                start,
                npages,
                from,
                to,
                prefetch_loc,
                preferred_loc,
                trigger,
            } => write!(
                f,
                "@{:x}({:x}) {:x}->{:x} {:x}:{:x} {}",
                start.raw(),
                npages.raw(),
                loc_raw(Some(from)),
                loc_raw(Some(to)),
                loc_raw(prefetch_loc),
                loc_raw(preferred_loc),
                trigger.raw()
            ),
            Kind::MigrateEnd {
                start,
                npages,
                from,
                to,
                trigger,
                error_code,
            } => write!(
                f,
                "@{:x}({:x}) {:x}->{:x} {} {error_code}",
                start.raw(),
                npages.raw(),
                loc_raw(Some(from)),
                loc_raw(Some(to)),
                trigger.raw()
            ),
            Kind::QueueEviction { gpu_id, trigger } => {
                write!(f, "{:x} {}", gpu_id.raw(), trigger.raw())
            }
            Kind::QueueRestore {
                gpu_id,
                rescheduled,
            } => {
                let r = if rescheduled { 'R' } else { '0' };
                write!(f, "{:x} {r}", gpu_id.raw())
            }
            Kind::UnmapFromGpu {
                addr,
                npages,
                gpu_id,
                trigger,
            } => write!(
                f,
                "@{:x}({:x}) {:x} {}",
                addr.raw(),
                npages.raw(),
                gpu_id.raw(),
                trigger.raw()
            ),
        }
    }
}

// The constructors below take the raw numbers kfd's `kfd_smi_event_*`
// helpers take, so that the engine's call sites read like kfd's; they turn
// them into typed fields.

fn gpu_id(raw: u32) -> GpuId {
    GpuId::new(raw).expect("an SMI event names one of the process's GPUs, whose gpu_id is valid")
}

/// A migration end: 0 for system memory, else a gpu_id (never UNDEFINED).
fn location(raw: u32) -> Location {
    Location::from_uapi(raw).expect("a migration goes from and to a defined location")
}

/// `PAGE_FAULT_START` (`kfd_smi_event_page_fault_start`).
pub fn page_fault_start(ts: u64, pid: u32, addr: u64, gpu: u32, write: bool) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::PageFaultStart {
            addr: PageNum::new(addr),
            gpu_id: gpu_id(gpu),
            write,
        },
    }
}

/// `PAGE_FAULT_END` (`kfd_smi_event_page_fault_end`).
pub fn page_fault_end(ts: u64, pid: u32, addr: u64, gpu: u32, migrated: bool) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::PageFaultEnd {
            addr: PageNum::new(addr),
            gpu_id: gpu_id(gpu),
            migrated,
        },
    }
}

/// `MIGRATE_START` (`kfd_smi_event_migration_start`); locations are uAPI
/// values (0 system memory, `0xffffffff` undefined, else a gpu_id).
#[expect(
    clippy::too_many_arguments,
    reason = "the kernel's event has these fields"
)]
pub fn migrate_start(
    ts: u64,
    pid: u32,
    start: u64,
    npages: u64,
    from: u32,
    to: u32,
    prefetch: u32,
    preferred: u32,
    trigger: MigrateTrigger,
) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::MigrateStart {
            start: PageNum::new(start),
            npages: PageCount::new(npages),
            from: location(from),
            to: location(to),
            prefetch_loc: Location::from_uapi(prefetch),
            preferred_loc: Location::from_uapi(preferred),
            trigger,
        },
    }
}

/// `MIGRATE_END` of a migration that succeeded (`kfd_smi_event_migration_end`
/// with `r == 0`): once a chunk has started, this model's migrations do not
/// fail, so the engine never reports an error code.
pub fn migrate_end(
    ts: u64,
    pid: u32,
    start: u64,
    npages: u64,
    from: u32,
    to: u32,
    trigger: MigrateTrigger,
) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::MigrateEnd {
            start: PageNum::new(start),
            npages: PageCount::new(npages),
            from: location(from),
            to: location(to),
            trigger,
            error_code: 0,
        },
    }
}

/// `UNMAP_FROM_GPU` (`kfd_smi_event_unmap_from_gpu`).
pub fn unmap_from_gpu(
    ts: u64,
    pid: u32,
    addr: u64,
    npages: u64,
    gpu: u32,
    trigger: UnmapTrigger,
) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::UnmapFromGpu {
            addr: PageNum::new(addr),
            npages: PageCount::new(npages),
            gpu_id: gpu_id(gpu),
            trigger,
        },
    }
}

/// `QUEUE_EVICTION` for an SVM eviction (`kfd_smi_event_queue_eviction`
/// with `KFD_QUEUE_EVICTION_TRIGGER_SVM`).
pub fn queue_eviction(ts: u64, pid: u32, gpu: u32) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::QueueEviction {
            gpu_id: gpu_id(gpu),
            trigger: EvictTrigger::Svm,
        },
    }
}

/// `QUEUE_RESTORE`: the queues run again (`kfd_smi_event_queue_restore`).
pub fn queue_restore(ts: u64, pid: u32, gpu: u32) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::QueueRestore {
            gpu_id: gpu_id(gpu),
            rescheduled: false,
        },
    }
}

/// `QUEUE_RESTORE` marked rescheduled (`kfd_smi_event_queue_restore_rescheduled`):
/// the restore work failed and runs again 1 ms later; the queues stay stopped.
pub fn queue_restore_rescheduled(ts: u64, pid: u32, gpu: u32) -> Event {
    Event {
        ts_ns: ts,
        pid,
        kind: Kind::QueueRestore {
            gpu_id: gpu_id(gpu),
            rescheduled: true,
        },
    }
}

/// The payload formats of the SVM events, as a scanner reads them: `{name}`
/// a field, `:x` hex, `:d` decimal (a sign allowed), `:c` one character.
/// The same fields, in the same order, as the kernel's `KFD_EVENT_FMT_*`
/// (see the module doc).
const SCAN_FORMATS: [(u32, &str); 7] = [
    (
        MIGRATE_START,
        "@{addr:x}({size:x}) {from:x}->{to:x} {prefetch_loc:x}:{preferred_loc:x} {trigger:d}",
    ),
    (
        MIGRATE_END,
        "@{addr:x}({size:x}) {from:x}->{to:x} {trigger:d} {error:d}",
    ),
    (PAGE_FAULT_START, "@{addr:x}({gpu:x}) {rw:c}"),
    (PAGE_FAULT_END, "@{addr:x}({gpu:x}) {mu:c}"),
    (QUEUE_EVICTION, "{gpu:x} {trigger:d}"),
    (QUEUE_RESTORE, "{gpu:x} {flag:c}"),
    (UNMAP_FROM_GPU, "@{addr:x}({size:x}) {gpu:x} {trigger:d}"),
];

/// The names of the payload fields [`scan`] gives for event `id` (none
/// for an id it does not know).
pub fn scan_fields(id: u32) -> Vec<&'static str> {
    let Some((_, fmt)) = SCAN_FORMATS.iter().find(|(i, _)| *i == id) else {
        return Vec::new();
    };
    fmt.split('{')
        .skip(1)
        .filter_map(|s| s.split_once(':').map(|(n, _)| n))
        .collect()
}

/// One field a scanned line gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// A number (`%x`, `%d`, `%ld`, `%lld`).
    Num(i64),
    /// A character (`%c`).
    Char(char),
}

/// Reads an SMI line back into its event id and named fields, as kfd's own
/// tests read them (`sscanf` with the event's format): `id`, `ts`, `pid`,
/// then the payload's fields by the names of [`SCAN_FORMATS`]. `None` for a
/// line that does not follow its id's format.
pub fn scan(line: &str) -> Option<(u32, Vec<(&'static str, Scanned)>)> {
    let (id, rest) = line.split_once(' ')?;
    let id = u32::from_str_radix(id, 16).ok()?;
    let fmt = SCAN_FORMATS.iter().find(|(i, _)| *i == id)?.1;
    let mut fields = vec![("id", Scanned::Num(i64::from(id)))];
    let rest = scan_with("{ts:d} -{pid:d} ", rest, &mut fields)?;
    let rest = scan_with(fmt, rest, &mut fields)?;
    rest.is_empty().then_some((id, fields))
}

/// Matches `text` against `fmt`, pushing its fields; returns what is left.
fn scan_with<'t>(
    fmt: &'static str,
    mut text: &'t str,
    out: &mut Vec<(&'static str, Scanned)>,
) -> Option<&'t str> {
    let mut f = fmt;
    while !f.is_empty() {
        if let Some(spec) = f.strip_prefix('{') {
            let end = spec.find('}')?;
            let (name, conv) = spec[..end].split_once(':')?;
            f = &spec[end + 1..];
            let (value, left) = match conv {
                "c" => {
                    let c = text.chars().next()?;
                    (Scanned::Char(c), &text[c.len_utf8()..])
                }
                "x" => {
                    let n = text
                        .find(|c: char| !c.is_ascii_hexdigit())
                        .unwrap_or(text.len());
                    let v = u64::from_str_radix(&text[..n], 16).ok()?;
                    (Scanned::Num(i64::try_from(v).ok()?), &text[n..])
                }
                _ => {
                    let sign = usize::from(text.starts_with('-'));
                    let n = sign
                        + text[sign..]
                            .find(|c: char| !c.is_ascii_digit())
                            .unwrap_or(text.len() - sign);
                    (Scanned::Num(text[..n].parse().ok()?), &text[n..])
                }
            };
            out.push((name, value));
            text = left;
        } else {
            let c = f.chars().next()?;
            text = text.strip_prefix(c)?;
            f = &f[c.len_utf8()..];
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests;

//! kfd SMI event lines (`kfd_smi_events.c`), formatted as the kernel formats them.
//!
//! Each line is `"<id in hex> <payload>"`. Addresses and sizes are in pages,
//! `ts` in nanoseconds of simulated time, and the pid is printed with a
//! leading `-` as the kernel does. The engine hands lines to
//! `Hardware::smi_event`; the CLI writes the stream to a file.

use std::fmt::Write as _;

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
pub enum MigrateTrigger {
    /// set_attr PREFETCH_LOC.
    Prefetch = 0,
    /// A GPU page fault.
    PagefaultGpu = 1,
    /// A CPU page fault.
    PagefaultCpu = 2,
    /// VRAM eviction.
    TtmEviction = 3,
}

/// Why pages were unmapped from a GPU (`KFD_SVM_UNMAP_TRIGGER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnmapTrigger {
    /// An MMU notifier other than migration (mprotect, ...).
    MmuNotify = 0,
    /// The notifier of a migration.
    MmuNotifyMigrate = 1,
    /// munmap.
    UnmapFromCpu = 2,
}

fn line(id: u32, payload: std::fmt::Arguments<'_>) -> String {
    let mut s = format!("{id:x} ");
    let _ = s.write_fmt(payload);
    s
}

/// `PAGE_FAULT_START`: `ts -pid @addr(gpu_id) R|W`.
pub fn page_fault_start(ts: u64, pid: u32, addr: u64, gpu_id: u32, write: bool) -> String {
    let rw = if write { 'W' } else { 'R' };
    line(
        PAGE_FAULT_START,
        format_args!("{ts} -{pid} @{addr:x}({gpu_id:x}) {rw}"),
    )
}

/// `PAGE_FAULT_END`: `ts -pid @addr(gpu_id) M|U` (migrated, or only mapped).
pub fn page_fault_end(ts: u64, pid: u32, addr: u64, gpu_id: u32, migrated: bool) -> String {
    let mu = if migrated { 'M' } else { 'U' };
    line(
        PAGE_FAULT_END,
        format_args!("{ts} -{pid} @{addr:x}({gpu_id:x}) {mu}"),
    )
}

/// `MIGRATE_START`: `ts -pid @start(npages) from->to prefetch:preferred trigger`.
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
) -> String {
    let t = trigger as u32;
    line(
        MIGRATE_START,
        format_args!(
            "{ts} -{pid} @{start:x}({npages:x}) {from:x}->{to:x} {prefetch:x}:{preferred:x} {t}"
        ),
    )
}

/// `MIGRATE_END`: `ts -pid @start(npages) from->to trigger`.
pub fn migrate_end(
    ts: u64,
    pid: u32,
    start: u64,
    npages: u64,
    from: u32,
    to: u32,
    trigger: MigrateTrigger,
) -> String {
    let t = trigger as u32;
    line(
        MIGRATE_END,
        format_args!("{ts} -{pid} @{start:x}({npages:x}) {from:x}->{to:x} {t}"),
    )
}

/// `UNMAP_FROM_GPU`: `ts -pid @addr(npages) gpu_id trigger`.
pub fn unmap_from_gpu(
    ts: u64,
    pid: u32,
    addr: u64,
    npages: u64,
    gpu_id: u32,
    trigger: UnmapTrigger,
) -> String {
    let t = trigger as u32;
    line(
        UNMAP_FROM_GPU,
        format_args!("{ts} -{pid} @{addr:x}({npages:x}) {gpu_id:x} {t}"),
    )
}

/// `QUEUE_EVICTION`: `ts -pid gpu_id trigger` (trigger 0: SVM).
pub fn queue_eviction(ts: u64, pid: u32, gpu_id: u32) -> String {
    line(QUEUE_EVICTION, format_args!("{ts} -{pid} {gpu_id:x} 0"))
}

/// `QUEUE_RESTORE`: `ts -pid gpu_id`.
pub fn queue_restore(ts: u64, pid: u32, gpu_id: u32) -> String {
    line(QUEUE_RESTORE, format_args!("{ts} -{pid} {gpu_id:x}"))
}

/// `QUEUE_RESTORE` with the rescheduled mark: `ts -pid gpu_id R`
/// (`kfd_smi_event_queue_restore_rescheduled`: the restore work failed and
/// runs again 1 ms later; the queues stay stopped).
pub fn queue_restore_rescheduled(ts: u64, pid: u32, gpu_id: u32) -> String {
    line(QUEUE_RESTORE, format_args!("{ts} -{pid} {gpu_id:x} R"))
}

/// One SMI event line, read back (what a tool subscribed to the event
/// stream gets). Addresses and sizes are in pages, times in ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// `PAGE_FAULT_START`.
    PageFaultStart {
        /// When.
        ts: u64,
        /// The process.
        pid: u32,
        /// The faulting page.
        addr: u64,
        /// The GPU.
        gpu_id: u32,
        /// A write fault.
        write: bool,
    },
    /// `PAGE_FAULT_END`.
    PageFaultEnd {
        /// When.
        ts: u64,
        /// The process.
        pid: u32,
        /// The faulting page.
        addr: u64,
        /// The GPU.
        gpu_id: u32,
        /// Pages were migrated (not only mapped).
        migrated: bool,
    },
    /// `MIGRATE_START`.
    MigrateStart {
        /// When.
        ts: u64,
        /// The process.
        pid: u32,
        /// First page.
        start: u64,
        /// Pages.
        npages: u64,
        /// Source and destination gpu_id (0: system memory).
        from: u32,
        /// See `from`.
        to: u32,
        /// Why.
        trigger: u32,
    },
    /// `MIGRATE_END`.
    MigrateEnd {
        /// When.
        ts: u64,
        /// The process.
        pid: u32,
        /// First page.
        start: u64,
        /// Pages.
        npages: u64,
        /// Source and destination gpu_id (0: system memory).
        from: u32,
        /// See `from`.
        to: u32,
        /// Why.
        trigger: u32,
    },
    /// `QUEUE_EVICTION`.
    QueueEviction {
        /// When.
        ts: u64,
        /// The process.
        pid: u32,
        /// The GPU.
        gpu_id: u32,
    },
    /// `QUEUE_RESTORE` (`rescheduled`: the restore failed and runs again).
    QueueRestore {
        /// When.
        ts: u64,
        /// The process.
        pid: u32,
        /// The GPU.
        gpu_id: u32,
        /// See the variant.
        rescheduled: bool,
    },
    /// `UNMAP_FROM_GPU`.
    UnmapFromGpu {
        /// When.
        ts: u64,
        /// The process.
        pid: u32,
        /// First page.
        addr: u64,
        /// Pages.
        npages: u64,
        /// The GPU.
        gpu_id: u32,
        /// Why.
        trigger: u32,
    },
}

impl Parsed {
    /// The event's time.
    pub fn ts(&self) -> u64 {
        match *self {
            Self::PageFaultStart { ts, .. }
            | Self::PageFaultEnd { ts, .. }
            | Self::MigrateStart { ts, .. }
            | Self::MigrateEnd { ts, .. }
            | Self::QueueEviction { ts, .. }
            | Self::QueueRestore { ts, .. }
            | Self::UnmapFromGpu { ts, .. } => ts,
        }
    }
}

/// `"@addr(n)"`: a hex address and a hex count.
fn at_count(f: &str) -> Option<(u64, u64)> {
    let (a, n) = f.strip_prefix('@')?.strip_suffix(')')?.split_once('(')?;
    Some((hex(a)?, hex(n)?))
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

fn hex32(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 16).ok()
}

/// Reads one line of the format above; `None` for anything else.
pub fn parse(line: &str) -> Option<Parsed> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let id = hex32(f.first()?)?;
    let ts: u64 = f.get(1)?.parse().ok()?;
    let pid: u32 = f.get(2)?.strip_prefix('-')?.parse().ok()?;
    let ev = match (id, f.len()) {
        (PAGE_FAULT_START | PAGE_FAULT_END, 5) => {
            let (addr, gpu) = at_count(f[3])?;
            let gpu_id = u32::try_from(gpu).ok()?;
            match (id, f[4]) {
                (PAGE_FAULT_START, "R" | "W") => Parsed::PageFaultStart {
                    ts,
                    pid,
                    addr,
                    gpu_id,
                    write: f[4] == "W",
                },
                (PAGE_FAULT_END, "M" | "U") => Parsed::PageFaultEnd {
                    ts,
                    pid,
                    addr,
                    gpu_id,
                    migrated: f[4] == "M",
                },
                _ => return None,
            }
        }
        (MIGRATE_START, 7) | (MIGRATE_END, 6) => {
            let (start, npages) = at_count(f[3])?;
            let (from, to) = f[4].split_once("->")?;
            let (from, to) = (hex32(from)?, hex32(to)?);
            let trigger: u32 = f[f.len() - 1].parse().ok()?;
            if id == MIGRATE_START {
                let (a, b) = f[5].split_once(':')?;
                hex32(a)?;
                hex32(b)?;
                Parsed::MigrateStart {
                    ts,
                    pid,
                    start,
                    npages,
                    from,
                    to,
                    trigger,
                }
            } else {
                Parsed::MigrateEnd {
                    ts,
                    pid,
                    start,
                    npages,
                    from,
                    to,
                    trigger,
                }
            }
        }
        (QUEUE_EVICTION, 5) => Parsed::QueueEviction {
            ts,
            pid,
            gpu_id: hex32(f[3])?,
        },
        (QUEUE_RESTORE, 4 | 5) => Parsed::QueueRestore {
            ts,
            pid,
            gpu_id: hex32(f[3])?,
            rescheduled: match f.get(4) {
                None => false,
                Some(&"R") => true,
                Some(_) => return None,
            },
        },
        (UNMAP_FROM_GPU, 6) => {
            let (addr, npages) = at_count(f[3])?;
            Parsed::UnmapFromGpu {
                ts,
                pid,
                addr,
                npages,
                gpu_id: hex32(f[4])?,
                trigger: f[5].parse().ok()?,
            }
        }
        _ => return None,
    };
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            page_fault_start(1000, 42, 0x7f000, 0x1002, true),
            "7 1000 -42 @7f000(1002) W"
        );
        assert_eq!(
            page_fault_end(2000, 42, 0x7f000, 0x1002, false),
            "8 2000 -42 @7f000(1002) U"
        );
        assert_eq!(
            migrate_start(
                5,
                1,
                0x200,
                0x200,
                0,
                0x1002,
                0xffffffff,
                0,
                MigrateTrigger::PagefaultGpu
            ),
            "5 5 -1 @200(200) 0->1002 ffffffff:0 1"
        );
        assert_eq!(
            migrate_end(6, 1, 0x200, 0x200, 0x1002, 0, MigrateTrigger::PagefaultCpu),
            "6 6 -1 @200(200) 1002->0 2"
        );
        assert_eq!(
            unmap_from_gpu(7, 1, 0x10, 4, 0x2002, UnmapTrigger::UnmapFromCpu),
            "b 7 -1 @10(4) 2002 2"
        );
    }

    #[test]
    fn parse_reads_back_every_format() {
        let lines = [
            page_fault_start(1000, 42, 0x7f000, 0x1002, true),
            page_fault_end(2000, 42, 0x7f000, 0x1002, false),
            migrate_start(
                5,
                1,
                0x200,
                0x200,
                0,
                0x1002,
                0xffff_ffff,
                0,
                MigrateTrigger::PagefaultGpu,
            ),
            migrate_end(6, 1, 0x200, 0x200, 0x1002, 0, MigrateTrigger::PagefaultCpu),
            unmap_from_gpu(7, 1, 0x10, 4, 0x2002, UnmapTrigger::UnmapFromCpu),
            queue_eviction(8, 1, 0x1002),
            queue_restore(9, 1, 0x1002),
            queue_restore_rescheduled(10, 1, 0x1002),
        ];
        let parsed: Vec<Parsed> = lines.iter().map(|l| parse(l).unwrap()).collect();
        assert_eq!(
            parsed[0],
            Parsed::PageFaultStart {
                ts: 1000,
                pid: 42,
                addr: 0x7f000,
                gpu_id: 0x1002,
                write: true
            }
        );
        assert_eq!(
            parsed[2],
            Parsed::MigrateStart {
                ts: 5,
                pid: 1,
                start: 0x200,
                npages: 0x200,
                from: 0,
                to: 0x1002,
                trigger: 1
            }
        );
        assert_eq!(
            parsed[4],
            Parsed::UnmapFromGpu {
                ts: 7,
                pid: 1,
                addr: 0x10,
                npages: 4,
                gpu_id: 0x2002,
                trigger: 2
            }
        );
        assert_eq!(
            parsed[7],
            Parsed::QueueRestore {
                ts: 10,
                pid: 1,
                gpu_id: 0x1002,
                rescheduled: true
            }
        );
        let ts: Vec<u64> = parsed.iter().map(Parsed::ts).collect();
        assert_eq!(ts, [1000, 2000, 5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn parse_rejects_other_lines() {
        for l in [
            "",
            "7",
            "7 x -1 @1(2) R",
            "7 1 -1 @1(2) X",
            "5 1 -1 @1(2) 0->1 0:0",
            "ff 1 -1",
            "a 1 -1 2 Q",
        ] {
            assert_eq!(parse(l), None, "{l:?}");
        }
    }
}

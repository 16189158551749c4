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
}

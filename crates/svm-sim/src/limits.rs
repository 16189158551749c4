//! The limits of what one simulated machine may be, checked before
//! anything is allocated for it.
//!
//! Each is far above any real part (the largest GPU of 2026 has 304 CUs
//! and 192 GiB) and low enough that the simulator's own bookkeeping of it
//! fits a host. `docs/files.md` lists them with every other input limit.

/// GPUs in one machine (`MAX_GPU_INSTANCE`, kfd's too).
pub const MAX_GPUS: u32 = 64;

/// VRAM of one GPU: 16 TiB. A PTE holds a VRAM page's frame in 44 bits,
/// and the buddy allocator's orders stay small.
pub const MAX_VRAM_BYTES: u64 = 16 << 40;

/// The least VRAM of one GPU: one 2 MiB block.
pub const MIN_VRAM_BYTES: u64 = 2 << 20;

/// Compute units of one GPU.
pub const MAX_COMPUTE_UNITS: u32 = 1024;

/// Waves one CU keeps in flight.
pub const MAX_WAVES_PER_CU: u32 = 64;

/// Entries of one CU's TLB.
pub const MAX_TLB_ENTRIES: u32 = 65_536;

/// TLB entries of the whole machine (GPUs × CUs × entries): 2^24, so the
/// TLBs take at most 512 MiB of host memory.
pub const MAX_MACHINE_TLB_ENTRIES: u64 = 1 << 24;

/// Faults the handler takes in one batch.
pub const MAX_FAULT_BATCH: u32 = 65_536;

/// Processes one machine runs (a scenario's, a trace's).
pub const MAX_PROCESSES: u32 = 1024;

/// The most bytes one wave instruction of a kernel moves (a real one moves
/// at most a few KiB; its data is held in memory). A scenario's or a
/// workload's access has no such limit: it is a wave of one instruction
/// per page, and its bytes are reserved fallibly.
pub const MAX_WAVE_OP_BYTES: u64 = 1 << 30;

/// The most bytes one CPU access from a file (a scenario's `cpu_access`
/// or `gpu_access`, a trace's CPU record) moves: its bytes are held, and a
/// scenario writes them to its report.
pub const MAX_ACCESS_BYTES: u64 = 1 << 30;

/// Waves of one launch.
pub const MAX_LAUNCH_WAVES: u32 = 1 << 24;

/// The most page touches (pages moved, mapped or accessed) one run may
/// need: 2^32, hours of simulation at the half to one million pages a
/// second the engine moves. A workload's is its footprint times its
/// iterations; a scenario's the pages its ops may move or map.
pub const MAX_PAGE_TOUCHES: u64 = 1 << 32;

/// Host memory the TLBs of a machine of this shape take, in bytes (a set
/// of 4 ways is 128 bytes).
pub fn tlb_bytes(gpus: u64, compute_units: u64, tlb_entries: u64) -> u64 {
    let sets = u64::from(u32::try_from(tlb_entries.div_ceil(4).max(1)).unwrap_or(u32::MAX))
        .next_power_of_two();
    gpus.saturating_mul(compute_units)
        .saturating_mul(sets)
        .saturating_mul(128)
}

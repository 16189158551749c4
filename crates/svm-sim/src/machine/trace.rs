//! Recording what a run asked of the machine: processes, mappings,
//! attribute calls, CPU accesses, kernel launches and every memory
//! operation of every wave.
//!
//! The record is the *access stream*, not the data: a store records its
//! address and length, not its bytes, and a CPU write records that it
//! populated the pages. Replaying it (in `svm-workloads`) drives a fresh
//! machine through the same calls in the same order, so the memory system
//! does exactly what it did: the same faults, migrations, events and
//! timing. The encoding is documented in `docs/trace.md`.

use serde::Serialize;

use super::{KernelId, Machine, Pid};

/// One recorded call or wave operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TraceEvent {
    /// A process started.
    Spawn {
        /// Its name.
        name: String,
    },
    /// A KFD VRAM buffer was allocated (AMDKFD_IOC_ALLOC_MEMORY_OF_GPU).
    AllocBo {
        /// The process.
        pid: u32,
        /// The GPU's gpu_id.
        gpu_id: u32,
        /// Bytes asked for.
        bytes: u64,
    },
    /// A KFD buffer was freed, by the handle its allocation returned.
    FreeBo {
        /// The process.
        pid: u32,
        /// The handle.
        handle: u64,
    },
    /// A process forked a child (which gets the next process index).
    Fork {
        /// The parent.
        pid: u32,
        /// The child's name.
        name: String,
    },
    /// An anonymous mapping was made at `addr` (replayed as MAP_FIXED).
    Mmap {
        /// The process.
        pid: u32,
        /// Where it landed.
        addr: u64,
        /// Bytes.
        len: u64,
        /// `PROT_*` bits: read 1, write 2, exec 4.
        prot: u8,
        /// 0 none, 1 heap, 2 stack.
        mark: u8,
    },
    /// munmap.
    Munmap {
        /// The process.
        pid: u32,
        /// Start.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// SVM SET_ATTR.
    SetAttr {
        /// The process.
        pid: u32,
        /// Start.
        addr: u64,
        /// Bytes.
        size: u64,
        /// Raw (type, value) pairs.
        attrs: Vec<(u32, u32)>,
    },
    /// SET_XNACK_MODE.
    SetXnack {
        /// The process.
        pid: u32,
        /// The raw value.
        value: i32,
    },
    /// A CPU access.
    Cpu {
        /// The process.
        pid: u32,
        /// Start.
        addr: u64,
        /// Bytes.
        len: u64,
        /// A write (which populates the pages).
        write: bool,
    },
    /// A kernel launch; kernels are numbered in launch order.
    Launch {
        /// The process.
        pid: u32,
        /// The GPU.
        gpu_id: u32,
        /// Waves in the grid.
        waves: u32,
    },
    /// A wave's memory operation, in the wave's program order.
    Wave {
        /// The kernel (launch order).
        kernel: u32,
        /// The wave's index in the grid.
        wave: u32,
        /// What it did.
        op: WaveOp,
    },
    /// The caller waited for a kernel.
    Wait {
        /// The kernel (launch order).
        kernel: u32,
    },
    /// Simulated time was let pass.
    Advance {
        /// Nanoseconds.
        ns: u64,
    },
    /// A process exited.
    Exit {
        /// The process.
        pid: u32,
    },
}

/// A wave's memory operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WaveOp {
    /// A load of `len` bytes.
    Load {
        /// Address.
        addr: u64,
        /// Bytes.
        len: u32,
    },
    /// A store of `len` bytes.
    Store {
        /// Address.
        addr: u64,
        /// Bytes.
        len: u32,
    },
    /// An atomic add of `len` bytes of 32-bit words (`WaveCtx::atomic_add`).
    Atomic {
        /// Address.
        addr: u64,
        /// Bytes.
        len: u32,
    },
    /// Compute for `ns`.
    Compute {
        /// Nanoseconds.
        ns: u64,
    },
}

impl Machine {
    /// Starts recording every call and wave operation (dropping any earlier
    /// record).
    pub fn start_recording(&mut self) {
        self.rec.trace = Some(Vec::new());
    }

    /// Stops recording and returns the record.
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        self.rec.trace.take().unwrap_or_default()
    }

    /// Records `e` if recording.
    pub(super) fn record(&mut self, e: impl FnOnce() -> TraceEvent) {
        if let Some(t) = &mut self.rec.trace {
            t.push(e());
        }
    }

    pub(super) fn record_pid(pid: Pid) -> u32 {
        u32::try_from(pid.index()).unwrap_or(u32::MAX)
    }

    pub(super) fn record_kernel(k: KernelId) -> u32 {
        u32::try_from(k.0).unwrap_or(u32::MAX)
    }
}

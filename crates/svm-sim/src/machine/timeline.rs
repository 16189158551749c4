//! What the hardware did, and when: the parts of a run's timeline that the
//! kfd SMI event stream does not carry.
//!
//! The SMI stream already stamps faults, migrations and queue evictions
//! with simulated time (typed, `svm_core::events::Event`). The recorder adds
//! what only the simulated hardware sees: copy-engine transfers, TLB
//! flushes, page-table updates, every page that changed place, munmaps and
//! VRAM use; and what the waves did: each kernel, each wave, each wait of a
//! wave on a retry fault, and each CPU page fault. It is off
//! by default ([`Machine::start_timeline`]); when off, each hook is one
//! branch. Entries are appended in simulated-time order per source, not
//! globally (a nested eviction's copies may start before its caller's).

use serde::Serialize;

use super::Machine;

/// One copy-engine transfer: consecutive pages of one stream share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CopySpan {
    /// The GPU whose engine ran it.
    pub gpu_id: u32,
    /// Towards VRAM (else towards system memory).
    pub to_vram: bool,
    /// Simulated ns.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// Pages copied.
    pub pages: u64,
}

/// A TLB flush of one process on one GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TlbFlushMark {
    /// When it ended.
    pub at_ns: u64,
    /// The GPU.
    pub gpu_id: u32,
    /// Heavyweight (else legacy, the light flush).
    pub heavy: bool,
}

/// Where a page went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Place {
    /// System memory.
    Ram,
    /// This GPU's VRAM.
    Vram(u32),
    /// Unmapped from the process (munmap).
    Gone,
}

/// Pages `[page, page + npages)` of a process moved to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PageMove {
    /// When the move ended.
    pub at_ns: u64,
    /// The process index.
    pub pid: usize,
    /// First page number (virtual address / 4096).
    pub page: u64,
    /// Pages.
    pub npages: u64,
    /// The new place.
    pub to: Place,
}

/// A GPU's VRAM in use after an allocation or a free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VramSample {
    /// When.
    pub at_ns: u64,
    /// The GPU.
    pub gpu_id: u32,
    /// Bytes allocated to buffers.
    pub used_bytes: u64,
}

/// A GPU page-table update: PTEs written for consecutive pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MapSpan {
    /// The GPU.
    pub gpu_id: u32,
    /// Simulated ns.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// First page number.
    pub page: u64,
    /// PTEs written.
    pub npages: u64,
}

/// A kernel from launch to its last wave (or CPU threads, `gpu_id` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KernelSpan {
    /// Its number in the machine (launch order).
    pub kernel: u32,
    /// The GPU, or 0 for CPU threads.
    pub gpu_id: u32,
    /// CPU threads rather than GPU waves.
    pub cpu: bool,
    /// Launch, and the end of its last wave.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// Waves (threads) it ran to the end.
    pub waves: u64,
    /// Memory instructions.
    pub accesses: u64,
    /// Retry faults its waves raised.
    pub faults: u64,
    /// Summed over its waves: ns parked on retry faults.
    pub fault_stall_ns: u64,
    /// It died (a fatal fault, a signal).
    pub failed: bool,
}

/// One wave (or CPU thread) from dispatch to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WaveSpan {
    /// Its kernel ([`KernelSpan::kernel`]) and its index in the grid.
    pub kernel: u32,
    /// See `kernel`.
    pub index: u32,
    /// The GPU, or 0 for a CPU thread.
    pub gpu_id: u32,
    /// The CU that ran it.
    pub cu: u32,
    /// Simulated ns.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
}

/// A wave parked on a retry fault, until the driver woke it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StallSpan {
    /// The wave: its kernel and index.
    pub kernel: u32,
    /// See `kernel`.
    pub index: u32,
    /// The GPU.
    pub gpu_id: u32,
    /// The page it faulted on.
    pub page: u64,
    /// Simulated ns.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// How it was woken: 0 served, 1 dropped (it retries), 2 refused.
    pub outcome: u8,
}

/// A CPU page fault on a page in VRAM, to the end of its `migrate_to_ram`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CpuFaultSpan {
    /// The process index.
    pub pid: usize,
    /// The page.
    pub page: u64,
    /// A write.
    pub write: bool,
    /// Simulated ns: when the access faulted, and when it could go on.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// Of that, ns waited before the migration could start (a timeslice,
    /// a throttle, the mmap and migrate locks).
    pub wait_ns: u64,
}

/// The recorded timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Copy-engine transfers.
    pub copies: Vec<CopySpan>,
    /// TLB flushes.
    pub tlb_flushes: Vec<TlbFlushMark>,
    /// Pages that changed place, runs of neighbours merged.
    pub moves: Vec<PageMove>,
    /// VRAM use per GPU.
    pub vram: Vec<VramSample>,
    /// GPU page-table updates, neighbours merged.
    pub maps: Vec<MapSpan>,
    /// Kernels (and CPU thread groups), as they finish.
    pub kernels: Vec<KernelSpan>,
    /// Waves and CPU threads, as they finish.
    pub waves: Vec<WaveSpan>,
    /// Waves' waits on retry faults, as they end.
    pub stalls: Vec<StallSpan>,
    /// CPU page faults that migrated a page to system memory.
    pub cpu_faults: Vec<CpuFaultSpan>,
}

impl Timeline {
    /// A copy of one page of a stream on `gpu_id`'s engine that ends at
    /// `end_ns`; `new` when it starts a transfer.
    pub(super) fn copy(
        &mut self,
        gpu_id: u32,
        to_vram: bool,
        start_ns: u64,
        end_ns: u64,
        pages: u64,
    ) {
        self.copies.push(CopySpan {
            gpu_id,
            to_vram,
            start_ns,
            end_ns,
            pages,
        });
    }

    /// PTEs written; an update that continues the previous one (the same
    /// GPU, the next pages, no time between) merges into it.
    pub(super) fn mapped(&mut self, m: MapSpan) {
        if let Some(l) = self.maps.last_mut()
            && l.gpu_id == m.gpu_id
            && l.end_ns == m.start_ns
            && l.page + l.npages == m.page
        {
            l.npages += m.npages;
            l.end_ns = m.end_ns;
            return;
        }
        self.maps.push(m);
    }

    /// Pages moved; a move that continues the previous one merges into it.
    pub(super) fn moved(&mut self, m: PageMove) {
        if let Some(l) = self.moves.last_mut()
            && l.pid == m.pid
            && l.to == m.to
            && l.page + l.npages == m.page
        {
            l.npages += m.npages;
            l.at_ns = l.at_ns.max(m.at_ns);
            return;
        }
        self.moves.push(m);
    }
}

impl Machine {
    /// Starts recording the hardware timeline (dropping any recorded).
    pub fn start_timeline(&mut self) {
        self.rec.timeline = Some(Box::default());
        // Where VRAM use starts.
        let at_ns = self.sched.clock_ns;
        for g in &self.hw.gpus {
            let tl = self.rec.timeline.as_mut().expect("just set");
            tl.vram.push(VramSample {
                at_ns,
                gpu_id: g.desc.id.raw(),
                used_bytes: g.vram_used_bytes(),
            });
        }
    }

    /// The timeline recorded since [`Machine::start_timeline`], which stops.
    pub fn take_timeline(&mut self) -> Option<Timeline> {
        self.rec.timeline.take().map(|b| *b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_moves_merge_and_each_copy_job_is_a_span() {
        let mut t = Timeline::default();
        let mv = |page, to| PageMove {
            at_ns: page,
            pid: 0,
            page,
            npages: 1,
            to,
        };
        t.moved(mv(10, Place::Vram(1)));
        t.moved(mv(11, Place::Vram(1)));
        t.moved(mv(12, Place::Ram));
        t.moved(mv(20, Place::Ram));
        assert_eq!(t.moves.len(), 3);
        assert_eq!((t.moves[0].npages, t.moves[0].at_ns), (2, 11));
        // One span per copy job.
        t.copy(1, true, 0, 5, 512);
        t.copy(1, false, 7, 9, 1);
        assert_eq!(t.copies.len(), 2);
        assert_eq!((t.copies[0].end_ns, t.copies[0].pages), (5, 512));
    }
}

//! What the engine needs from the world around it: the process's memory map and the system memory limit.
//!
//! **Architecture Invariant:** the engine reaches the outside only through
//! [`Platform`] (memory map and memory limit) and [`Hardware`] (time, VRAM,
//! copy engine, DMA, GPU page tables, events). It never reads a clock, an RNG
//! or a file. `svm-sim` implements both over simulated hardware.

use crate::addr::{PageNum, PageRange};
use crate::error::Result;
use crate::events::Event;
use crate::gpu::GpuIndex;
use crate::inject::{Injected, Response, Site};
use crate::policy::victim::{BoKind, Candidate, Owner};
use crate::pte::{PteContext, PteFlags};

/// Protection and kind bits of a VMA, as `vm_flags` holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmFlags {
    /// `VM_READ`.
    pub read: bool,
    /// `VM_WRITE`.
    pub write: bool,
    /// `VM_EXEC`.
    pub exec: bool,
    /// `VM_IO | VM_PFNMAP | VM_MIXEDMAP`: device memory that SVM refuses.
    pub io: bool,
    /// File-backed: its pages stay in the page cache and never migrate.
    pub file: bool,
    /// The initial heap or stack: faults leave it in system memory.
    pub heap_stack: bool,
}

/// One VMA as the engine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    /// The pages the VMA covers.
    pub range: PageRange,
    /// Its flags.
    pub flags: VmFlags,
}

/// The hardware and kernel services one process's SVM engine calls.
pub trait Platform {
    /// The VMA that holds `page` in the calling process's mm (`vma_lookup`).
    fn vma_at(&self, page: PageNum) -> Option<VmaInfo>;

    /// Reserves `bytes` against the system-wide userptr memory limit
    /// (`amdgpu_amdkfd_reserve_mem_limit(.., KFD_IOC_ALLOC_MEM_FLAGS_USERPTR, ..)`).
    ///
    /// # Errors
    /// [`crate::Error::MemLimit`] when the reservation would pass the limit;
    /// nothing is reserved then.
    fn reserve_mem_limit(&mut self, bytes: u64) -> Result;

    /// Gives back a reservation made by [`Platform::reserve_mem_limit`].
    fn unreserve_mem_limit(&mut self, bytes: u64);

    /// `hmm_range_fault` with `HMM_PFN_REQ_FAULT` for one page in system
    /// memory, `| HMM_PFN_REQ_WRITE` when `write` (amdgpu_hmm.c sets it
    /// for a writable VMA, whatever the access that led here). A write
    /// fault gives a never-touched page a zeroed page of its own, which a
    /// later migration copies; a read fault maps the shared zero page,
    /// which `migrate_vma_setup` collects as a hole (`is_zero_pfn`), so
    /// the page stays one. Pages that hold bytes are left alone. Returns
    /// whether a page was populated.
    fn fault_in(&mut self, page: PageNum, write: bool) -> bool;

    /// Whether system memory holds `page` (a page of its own or the
    /// shared zero page written to it: anything but never touched, or
    /// moved to device memory). What a policy that asks "is this block
    /// resident anywhere" needs (UVM's first-touch rule).
    fn host_holds(&self, page: PageNum) -> bool;
}

/// A VRAM buffer the platform allocated for one `svm_bo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VramBuf(pub u64);

/// What a PTE points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PteTarget {
    /// A system page, through this DMA address of the mapping GPU.
    Sys(u64),
    /// A page of GPU `owner`'s VRAM at this device byte address.
    Vram {
        /// The GPU whose VRAM holds the page.
        owner: GpuIndex,
        /// Device byte address in that VRAM.
        addr: u64,
    },
}

/// One GPU page-table entry as the engine writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pte {
    /// Where it points.
    pub target: PteTarget,
    /// Its flags.
    pub flags: PteFlags,
}

/// Kinds of TLB invalidation (`TLB_FLUSH_LEGACY` after mapping,
/// `TLB_FLUSH_HEAVYWEIGHT` after unmapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlbFlush {
    /// After new mappings.
    Legacy,
    /// After removing mappings.
    Heavyweight,
}

/// Migration directions of the copy engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CopyDir {
    /// System page into VRAM.
    ToVram,
    /// VRAM page back to system memory.
    ToRam,
}

/// The GPUs, their VRAM, page tables, DMA mappings and copy engines, as the
/// fault path and migration need them (what kfd gets from amdgpu and hmm).
///
/// GPUs are named by the calling process's GPU index. Page tables are the
/// calling process's GPU VMs.
pub trait Hardware: Platform {
    /// Simulated time in nanoseconds (`ktime_get_boottime`).
    fn now_ns(&self) -> u64;

    /// How GPU `gpu` builds PTEs.
    fn pte_context(&self, gpu: GpuIndex) -> PteContext;

    /// Allocates `npages` of VRAM on `gpu`, cleared.
    ///
    /// # Errors
    /// [`crate::Error::VramExhausted`] when the pages are not there.
    fn vram_alloc(&mut self, gpu: GpuIndex, npages: u64) -> Result<VramBuf>;

    /// Reserves `bytes` of `gpu`'s VRAM against the KFD VRAM limit
    /// (`amdgpu_amdkfd_reserve_mem_limit(adev, size,
    /// KFD_IOC_ALLOC_MEM_FLAGS_VRAM, xcp_id)`: `vram_used + size` may not
    /// pass the VRAM less what page tables are set aside for).
    ///
    /// # Errors
    /// [`crate::Error::VramLimit`] (ENOSPC) when it would; nothing is
    /// reserved then.
    fn reserve_vram_limit(&mut self, gpu: GpuIndex, bytes: u64) -> Result;

    /// Gives back a reservation made by [`Hardware::reserve_vram_limit`].
    fn unreserve_vram_limit(&mut self, gpu: GpuIndex, bytes: u64);

    /// Free VRAM pages on `gpu` (what a policy weighs as pressure).
    fn vram_free_pages(&self, gpu: GpuIndex) -> u64;

    /// Frees a VRAM buffer.
    fn vram_free(&mut self, gpu: GpuIndex, buf: VramBuf);

    /// The device byte address of page `k` of a buffer.
    fn vram_addr(&self, gpu: GpuIndex, buf: VramBuf, k: u64) -> u64;

    /// Moves the bytes of the `n` virtual pages from `va` to or from pages
    /// `k..k + n` of a VRAM buffer: one run of a `migrate_vma` chunk
    /// (`svm_migrate_copy_to_vram` / `_to_ram`). To VRAM, each system page
    /// is released (its bytes now live in VRAM); an unpopulated page
    /// arrives as zeros without a copy. The driver's per-page work, the
    /// copy jobs (one per physically contiguous run of at most 2 MiB, on
    /// the device's one buffer-funcs ring) and the wait for the last one
    /// are the hardware's to charge. With `compound`, a 2 MiB-aligned,
    /// VRAM-contiguous 512 pages of the run move as one compound device
    /// page (one per-page cost, one job).
    #[allow(clippy::too_many_arguments)]
    fn copy_run(
        &mut self,
        dir: CopyDir,
        gpu: GpuIndex,
        buf: VramBuf,
        k: u64,
        va: PageNum,
        n: u64,
        compound: bool,
    );

    /// Moves pages `k..k + n` of VRAM buffer `src` on GPU `from` to pages
    /// `dk..dk + n` of buffer `dst` on GPU `to` (virtual pages `va..va + n`)
    /// in one direct copy over
    /// the peer link (drm_pagemap's device-to-device migration, driven by
    /// the source device): the driver's per-page work, and copy jobs of
    /// at most 2 MiB on `from`'s ring, priced by the peer link. With
    /// `compound`, each 512 pages aligned at `dk` move as one device folio
    /// (one per-folio cost).
    #[allow(clippy::too_many_arguments)]
    fn copy_peer_run(
        &mut self,
        from: GpuIndex,
        src: VramBuf,
        k: u64,
        to: GpuIndex,
        dst: VramBuf,
        dk: u64,
        va: PageNum,
        n: u64,
        compound: bool,
    );

    /// Copies the bytes of the `n` virtual pages from `va` into pages
    /// `k..k + n` of VRAM buffer `buf` on `gpu`, leaving them where they
    /// are (read duplication): from system memory when `from` is `None`,
    /// else from pages `fk..fk + n` of buffer `fbuf` on GPU `fgpu`, over
    /// the peer link. The per-page work and the copy jobs (at most 2 MiB
    /// each, on `gpu`'s ring) are the hardware's to charge.
    fn duplicate_run(
        &mut self,
        gpu: GpuIndex,
        buf: VramBuf,
        k: u64,
        va: PageNum,
        from: Option<(GpuIndex, VramBuf, u64)>,
        n: u64,
    );

    /// TTM moves a whole KFD buffer of `npages` between VRAM and GTT (an
    /// eviction or a restore): copy jobs of at most 2 MiB on the device's
    /// ring, waited for. Its bytes are not modelled, only the time.
    fn copy_bo(&mut self, gpu: GpuIndex, dir: CopyDir, npages: u64);

    /// DMA-maps system page `va` for `gpu` and returns its bus address.
    fn dma_map(&mut self, gpu: GpuIndex, va: PageNum) -> u64;

    /// Releases a DMA mapping.
    fn dma_unmap(&mut self, gpu: GpuIndex, addr: u64);

    /// Writes PTEs for consecutive pages from `start`.
    fn map_ptes(&mut self, gpu: GpuIndex, start: PageNum, ptes: &[Pte]);

    /// Clears the PTEs of `range`.
    fn unmap_ptes(&mut self, gpu: GpuIndex, range: PageRange);

    /// Invalidates the GPU's TLB.
    fn flush_tlb(&mut self, gpu: GpuIndex, kind: TlbFlush);

    /// Every VRAM buffer of *another* process on `gpu`, as eviction
    /// candidates: TTM evicts across processes.
    fn foreign_buffers(&self, gpu: GpuIndex) -> Vec<Candidate>;

    /// Moves a buffer to the tail of `gpu`'s LRU (TTM's
    /// `ttm_bo_move_to_lru_tail` when a BO is validated) and returns its
    /// new position: a count per device, shared by every process on it and
    /// independent of simulated time, so the least recently validated
    /// buffer of any process is the smallest.
    fn lru_bump(&mut self, gpu: GpuIndex) -> u64;

    /// Evicts buffer `bo` (of kind `kind`) of process `owner` on `gpu`:
    /// that process's eviction worker moves an SVM buffer's ranges to
    /// system memory and frees it; a KFD buffer goes to GTT and its owner's
    /// queues stop until its restore work. Returns the pages it moved, or
    /// `None` when there was no such buffer.
    fn evict_foreign(&mut self, gpu: GpuIndex, owner: usize, kind: BoKind, bo: u64) -> Option<u64>;

    /// Notes that making room on `gpu` evicted `victim`'s buffer, moving
    /// `pages` back to system memory in `ns` of simulated time (the
    /// report's "who evicted whom"). A platform that reports nothing may
    /// ignore it.
    fn note_eviction(&mut self, gpu: GpuIndex, victim: Owner, pages: u64, ns: u64) {
        let _ = (gpu, victim, pages, ns);
    }

    /// Stops the process's user queues on `gpu` (`kgd2kfd_quiesce_mm`).
    fn evict_queues(&mut self, gpu: GpuIndex);

    /// Resumes them (`kgd2kfd_resume_mm`).
    fn restore_queues(&mut self, gpu: GpuIndex);

    /// Raises an SMI event on `gpu`'s event stream (kfd's per-GPU SMI
    /// file); the platform keeps it typed, and text is made only where it
    /// is written out.
    fn smi_event(&mut self, gpu: GpuIndex, event: Event);

    /// The IH timestamp of the newest retry fault waiting in `gpu`'s fault
    /// ring, or `None` when the ring is empty (`amdgpu_ih_get_wptr` and
    /// `amdgpu_ih_decode_iv_ts` at the write pointer). A platform without
    /// a ring has nothing waiting.
    fn ih_checkpoint(&self, gpu: GpuIndex) -> Option<u64> {
        let _ = gpu;
        None
    }

    /// The engine passes failure point `site` ([`crate::inject`]): a
    /// failure to inject there, or `None` to go on. A platform without
    /// rules never fails.
    fn inject(&mut self, site: Site) -> Option<Injected> {
        let _ = site;
        None
    }

    /// The SDMA job of run `va..va + n` (buffer page `k` on) failed after
    /// the migration committed it (an injected [`Site::CopyFence`]): the
    /// pages at the destination hold whatever it left. A platform without
    /// bytes does nothing.
    fn corrupt_run(
        &mut self,
        dir: CopyDir,
        gpu: GpuIndex,
        buf: VramBuf,
        k: u64,
        va: PageNum,
        n: u64,
    ) {
        let _ = (dir, gpu, buf, k, va, n);
    }

    /// What the engine did with a failure injected at `site`, for the
    /// run's coverage of error paths.
    fn injected(&mut self, site: Site, response: Response) {
        let _ = (site, response);
    }
}

//! What the engine needs from the world around it: the process's memory map and the system memory limit.
//!
//! **Architecture Invariant:** the engine reaches the outside only through
//! [`Platform`]. It never reads a clock, an RNG or a file. `svm-sim` implements
//! this trait over simulated hardware; later issues add the DMA, VRAM, copy
//! engine and GPU page-table operations here.

use crate::addr::{PageNum, PageRange};
use crate::error::Result;

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
}

//! Simulated GPUs: VRAM with real bytes, an IOMMU for DMA mappings, per-process page tables, and hardware counters.
//!
//! Everything the engine does to hardware is counted in [`HwCounters`]:
//! pages copied each way, pages that arrived zero-filled, DMA maps and
//! unmaps, PTEs written and cleared, and TLB flushes by kind.

use std::collections::BTreeMap;

use serde::Serialize;
use svm_core::addr::{PAGE_SIZE, PageNum, PageRange};
use svm_core::platform::Pte;
use svm_core::topology::GpuDesc;

use crate::ring::FaultRing;
use crate::vram::{Vram, VramAlloc};

/// First DMA address the IOMMU hands out; far from any VRAM address so the
/// two are easy to tell apart in dumps.
const DMA_BASE: u64 = 0x1_0000_0000_0000;

/// Counters of what the engine asked of the hardware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HwCounters {
    /// Pages copied from system memory into VRAM.
    pub pages_to_vram: u64,
    /// Pages that arrived in VRAM without a copy (never written: zero).
    pub pages_zero_filled: u64,
    /// Pages copied from VRAM back to system memory.
    pub pages_to_ram: u64,
    /// DMA mappings made.
    pub dma_maps: u64,
    /// DMA mappings released.
    pub dma_unmaps: u64,
    /// DMA unmaps of addresses that were not mapped (an engine bug).
    pub bad_dma_unmaps: u64,
    /// PTEs written.
    pub ptes_written: u64,
    /// Valid PTEs cleared.
    pub ptes_cleared: u64,
    /// TLB flushes after mapping.
    pub tlb_flush_legacy: u64,
    /// TLB flushes after unmapping.
    pub tlb_flush_heavyweight: u64,
    /// VRAM buffers allocated.
    pub vram_allocs: u64,
    /// VRAM buffers freed.
    pub vram_frees: u64,
    /// User-queue evictions (per GPU).
    pub queue_evictions: u64,
    /// User-queue restores (per GPU).
    pub queue_restores: u64,
    /// Simulated ns the copy engines spent moving pages.
    pub copy_busy_ns: u64,
    /// Simulated ns copies waited for a busy copy engine.
    pub copy_wait_ns: u64,
    /// Simulated ns fault handlers spent serving faults.
    pub handler_busy_ns: u64,
    /// Simulated ns faults waited for a range's migrate lock held by a
    /// fault on another GPU.
    pub migrate_lock_wait_ns: u64,
}

/// One simulated GPU.
#[derive(Clone, Debug)]
pub struct SimGpu {
    /// Its description.
    pub desc: GpuDesc,
    /// Its VRAM.
    pub vram: Vram,
    /// Live VRAM buffers by handle.
    pub bufs: BTreeMap<u64, VramAlloc>,
    pub(crate) next_buf: u64,
    /// Live DMA mappings: bus address → (process index, virtual page).
    pub iommu: BTreeMap<u64, (usize, PageNum)>,
    pub(crate) next_dma: u64,
    /// Retry faults waiting for the driver.
    pub ring: FaultRing,
}

impl SimGpu {
    /// A GPU with empty VRAM.
    pub fn new(desc: GpuDesc) -> Self {
        let pages = desc.vram_bytes / PAGE_SIZE;
        Self {
            desc,
            vram: Vram::new(pages),
            bufs: BTreeMap::new(),
            next_buf: 1,
            iommu: BTreeMap::new(),
            next_dma: DMA_BASE,
            ring: FaultRing::default(),
        }
    }
}

/// One process's page table on one GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageTable {
    ptes: BTreeMap<PageNum, Pte>,
}

impl PageTable {
    /// The PTE of `page`, if valid.
    pub fn walk(&self, page: PageNum) -> Option<Pte> {
        self.ptes.get(&page).copied()
    }

    /// All valid PTEs in page order.
    pub fn iter(&self) -> impl Iterator<Item = (PageNum, &Pte)> {
        self.ptes.iter().map(|(&p, e)| (p, e))
    }

    /// Number of valid PTEs.
    pub fn len(&self) -> usize {
        self.ptes.len()
    }

    /// Whether no PTE is valid.
    pub fn is_empty(&self) -> bool {
        self.ptes.is_empty()
    }

    pub(crate) fn write(&mut self, start: PageNum, ptes: &[Pte]) {
        for (i, pte) in ptes.iter().enumerate() {
            self.ptes.insert(PageNum::new(start.raw() + i as u64), *pte);
        }
    }

    pub(crate) fn clear(&mut self, range: PageRange) -> u64 {
        let doomed: Vec<PageNum> = self
            .ptes
            .range(range.start()..range.end())
            .map(|(&p, _)| p)
            .collect();
        for p in &doomed {
            self.ptes.remove(p);
        }
        doomed.len() as u64
    }
}

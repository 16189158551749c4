//! Per-GPU DMA address arrays of a range (`prange->dma_addr[gpuidx]`).
//!
//! # Overview
//! For every GPU that has mapped part of a range, kfd keeps one address per
//! page: a system-memory DMA address, or a VRAM address tagged with
//! `SVM_RANGE_VRAM_DOMAIN`, or nothing. The rules this module keeps, from the
//! 2023 review thread and the patch that followed it:
//!
//! - an array is allocated the first time its GPU maps a page of the range
//!   and freed only with the range, never after a migration;
//! - VRAM entries are encoded apart from system DMA addresses, so they are
//!   never DMA-unmapped;
//! - before a slot is overwritten, a valid system mapping in it is unmapped
//!   (`svm_range_dma_map_dev`), so no system page is mapped twice;
//! - after RAM→VRAM migration the old system mappings may be unmapped in bulk
//!   ([`DmaArrays::unmap_sys`]), the option the thread discussed.
//!
//! An entry is *stale* when its page has moved since it was written: the
//! seed-thread case where GPU1 migrates a window and GPU2's entries still
//! name the old system pages until GPU2 faults again.
//!
//! Every [`crate::range::SvmRange`] carries one; `process/map.rs` fills it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gpu::GpuIndex;

/// Bit 0 of a kfd DMA entry marks a VRAM address (`SVM_RANGE_VRAM_DOMAIN`).
pub const SVM_RANGE_VRAM_DOMAIN: u64 = 1;

/// One slot of a DMA array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DmaEntry {
    /// Nothing mapped.
    #[default]
    Empty,
    /// A system page mapped for DMA at this bus address (page aligned).
    Sys(u64),
    /// A VRAM page at this device address (page aligned); never DMA-unmapped.
    Vram(u64),
}

impl DmaEntry {
    /// The kfd encoding: 0, the DMA address, or the VRAM address with bit 0 set.
    pub fn raw(self) -> u64 {
        match self {
            DmaEntry::Empty => 0,
            DmaEntry::Sys(a) => a,
            DmaEntry::Vram(a) => a | SVM_RANGE_VRAM_DOMAIN,
        }
    }

    /// The entry a kfd-encoded value stands for (see [`DmaEntry::raw`]).
    pub fn from_raw(raw: u64) -> Self {
        if raw == 0 {
            DmaEntry::Empty
        } else if raw & SVM_RANGE_VRAM_DOMAIN != 0 {
            DmaEntry::Vram(raw & !SVM_RANGE_VRAM_DOMAIN)
        } else {
            DmaEntry::Sys(raw)
        }
    }

    /// Whether the slot holds a system mapping that must be unmapped before
    /// it is dropped or overwritten (`svm_is_valid_dma_mapping`).
    pub fn is_sys_mapping(self) -> bool {
        matches!(self, DmaEntry::Sys(_))
    }
}

/// The DMA arrays of one range, one per GPU that has used it.
///
/// Entries are kept in kfd's own 8-byte encoding ([`DmaEntry::raw`]): a
/// bus address, a VRAM address with bit 0 set, or 0. Addresses are page
/// aligned and a bus address is never 0, so the encoding is exact, and it
/// halves what a page costs per GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaArrays {
    npages: u64,
    arrays: BTreeMap<GpuIndex, Vec<u64>>,
}

fn idx(i: u64) -> usize {
    usize::try_from(i).expect("page index fits in memory")
}

impl DmaArrays {
    /// No arrays yet for a range of `npages` pages.
    pub fn new(npages: u64) -> Self {
        Self {
            npages,
            arrays: BTreeMap::new(),
        }
    }

    /// Pages per array.
    pub fn npages(&self) -> u64 {
        self.npages
    }

    /// GPUs that have an array.
    pub fn gpus(&self) -> impl Iterator<Item = GpuIndex> + '_ {
        self.arrays.keys().copied()
    }

    /// Entries of `gpu` that are not empty; no work when the GPU has no
    /// array (a range never mapped on it).
    pub fn count_set(&self, gpu: GpuIndex) -> u64 {
        self.arrays
            .get(&gpu)
            .map_or(0, |a| a.iter().filter(|&&w| w != 0).count() as u64)
    }

    /// The entry of page `i` for `gpu` (Empty when the GPU has no array).
    pub fn get(&self, gpu: GpuIndex, i: u64) -> DmaEntry {
        self.arrays
            .get(&gpu)
            .map_or(DmaEntry::Empty, |a| DmaEntry::from_raw(a[idx(i)]))
    }

    /// Writes page `i`'s entry for `gpu`, allocating the array on first use.
    /// Returns the system DMA address the slot held, which the caller must
    /// unmap (kfd unmaps before it overwrites).
    ///
    /// # Panics
    /// If `i` is out of range.
    #[must_use = "a replaced system mapping must be DMA-unmapped"]
    pub fn set(&mut self, gpu: GpuIndex, i: u64, e: DmaEntry) -> Option<u64> {
        assert!(i < self.npages, "DMA slot {i} past {}", self.npages);
        let n = idx(self.npages);
        debug_assert!(e != DmaEntry::Sys(0), "bus address 0 is never handed out");
        let slot = &mut self.arrays.entry(gpu).or_insert_with(|| vec![0; n])[idx(i)];
        let old = DmaEntry::from_raw(std::mem::replace(slot, e.raw()));
        match old {
            DmaEntry::Sys(a) => Some(a),
            DmaEntry::Empty | DmaEntry::Vram(_) => None,
        }
    }

    /// Clears the system mappings of pages `[start, end)` on every GPU and
    /// returns them as `(gpu, address)` to unmap (`svm_range_dma_unmap`).
    /// VRAM entries stay: they are addresses, not mappings. The arrays stay
    /// allocated.
    pub fn unmap_sys(&mut self, start: u64, end: u64) -> Vec<(GpuIndex, u64)> {
        let mut out = Vec::new();
        for (&gpu, a) in &mut self.arrays {
            for slot in &mut a[idx(start)..idx(end.min(self.npages))] {
                if let DmaEntry::Sys(addr) = DmaEntry::from_raw(*slot) {
                    out.push((gpu, addr));
                    *slot = 0;
                }
            }
        }
        out
    }

    /// Pages `[start, end)` as arrays of their own, for a range split
    /// (`svm_range_split_array`): every GPU's array is sliced, none is shared.
    ///
    /// # Panics
    /// If the window is out of range.
    pub fn slice(&self, start: u64, end: u64) -> Self {
        assert!(
            start <= end && end <= self.npages,
            "DMA slice outside the range"
        );
        Self {
            npages: end - start,
            arrays: self
                .arrays
                .iter()
                .map(|(&g, a)| (g, a[idx(start)..idx(end)].to_vec()))
                .collect(),
        }
    }

    /// The number of VRAM-tagged entries of the *last* GPU with an array,
    /// which is what kfd's split counts as the new piece's `vram_pages`
    /// (`svm_range_copy_array` resets the count per array, so the last one
    /// wins). Kept to reproduce the 2026 `vram_pages` drift, not to account.
    pub fn kernel_split_vram_count(&self) -> u64 {
        self.arrays.values().next_back().map_or(0, |a| {
            a.iter()
                .filter(|&&r| matches!(DmaEntry::from_raw(r), DmaEntry::Vram(_)))
                .count() as u64
        })
    }

    /// Entries of `gpu` that no longer describe where their page is, given
    /// `current(i)`, the entry a fresh mapping of page `i` would write.
    /// Empty slots are never stale.
    pub fn stale(&self, gpu: GpuIndex, current: impl Fn(u64) -> DmaEntry) -> u64 {
        self.arrays.get(&gpu).map_or(0, |a| {
            a.iter()
                .enumerate()
                .map(|(i, &r)| (i, DmaEntry::from_raw(r)))
                .filter(|&(i, e)| e != DmaEntry::Empty && e != current(i as u64))
                .count() as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(i: usize) -> GpuIndex {
        GpuIndex::new(i).unwrap()
    }

    #[test]
    fn lazy_arrays_and_unmap_before_overwrite() {
        let mut d = DmaArrays::new(4);
        assert_eq!(d.gpus().count(), 0);
        assert_eq!(d.get(g(0), 2), DmaEntry::Empty);
        assert_eq!(d.set(g(0), 2, DmaEntry::Sys(0x5000)), None);
        assert_eq!(d.gpus().collect::<Vec<_>>(), vec![g(0)]);
        // Overwriting a system mapping hands it back for unmapping.
        assert_eq!(d.set(g(0), 2, DmaEntry::Vram(0x20_0000)), Some(0x5000));
        // A VRAM entry is not a mapping.
        assert_eq!(d.set(g(0), 2, DmaEntry::Sys(0x6000)), None);
        assert_eq!(DmaEntry::Vram(0x20_0000).raw(), 0x20_0001);
        assert!(!DmaEntry::Vram(0x1000).is_sys_mapping());
    }

    #[test]
    fn bulk_unmap_keeps_vram_entries_and_arrays() {
        let mut d = DmaArrays::new(4);
        for i in 0..4 {
            let _ = d.set(g(1), i, DmaEntry::Sys(0x1000 * (i + 1)));
        }
        let _ = d.set(g(1), 3, DmaEntry::Vram(0x9000));
        let _ = d.set(g(0), 0, DmaEntry::Sys(0x7000));
        let gone = d.unmap_sys(1, 4);
        assert_eq!(gone, vec![(g(1), 0x2000), (g(1), 0x3000)]);
        assert_eq!(d.get(g(1), 0), DmaEntry::Sys(0x1000));
        assert_eq!(d.get(g(1), 3), DmaEntry::Vram(0x9000));
        assert_eq!(d.gpus().count(), 2);
    }

    #[test]
    fn split_slices_every_array() {
        let mut d = DmaArrays::new(6);
        for i in 0..6 {
            let e = if i < 3 {
                DmaEntry::Vram(i * 0x1000)
            } else {
                DmaEntry::Sys(i * 0x1000)
            };
            let _ = d.set(g(0), i, e);
        }
        let _ = d.set(g(2), 1, DmaEntry::Vram(0x1000));
        let head = d.slice(0, 2);
        let tail = d.slice(2, 6);
        assert_eq!(head.npages(), 2);
        assert_eq!(tail.get(g(0), 0), DmaEntry::Vram(0x2000));
        assert_eq!(tail.get(g(0), 3), DmaEntry::Sys(0x5000));
        // kfd's split count looks at the last GPU's array only: gpu2 has one
        // VRAM entry in the head, none in the tail, whatever gpu0 says.
        assert_eq!(head.kernel_split_vram_count(), 1);
        assert_eq!(tail.kernel_split_vram_count(), 0);
    }

    #[test]
    fn stale_entries_are_counted_per_gpu() {
        // The seed-thread case: both GPUs mapped pages 0..4 in system memory;
        // GPU1 migrated pages 0..2 to its VRAM and remapped them; GPU2 did not.
        let mut d = DmaArrays::new(4);
        for i in 0..4 {
            let _ = d.set(g(1), i, DmaEntry::Sys(0x1000 * (i + 1)));
            let _ = d.set(g(2), i, DmaEntry::Sys(0x8000 + 0x1000 * i));
        }
        for i in 0..2 {
            let _ = d.set(g(1), i, DmaEntry::Vram(0x10_0000 + 0x1000 * i));
        }
        let now_gpu1 = |i: u64| {
            if i < 2 {
                DmaEntry::Vram(0x10_0000 + 0x1000 * i)
            } else {
                DmaEntry::Sys(0x1000 * (i + 1))
            }
        };
        assert_eq!(d.stale(g(1), now_gpu1), 0);
        let now_gpu2 = |i: u64| {
            if i < 2 {
                DmaEntry::Vram(0x10_0000 + 0x1000 * i)
            } else {
                DmaEntry::Sys(0x8000 + 0x1000 * i)
            }
        };
        assert_eq!(d.stale(g(2), now_gpu2), 2);
        assert_eq!(d.stale(g(0), now_gpu2), 0);
    }
}

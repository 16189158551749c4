//! Read duplication: read-only copies of pages in the VRAM of GPUs that
//! read them, beside the page's one residency (UVM's ReadMostly advice,
//! `uvm_va_block.c`'s read-duplicate service; here the range's
//! GPU_READ_MOSTLY flag under a policy that plans
//! [`crate::policy::FaultPlan::Duplicate`]).
//!
//! # Overview
//! A range keeps one residency per page (system memory, or the VRAM of
//! `actual_loc`): the master copy. A duplicate is a copy of a page in
//! another GPU's VRAM, kept per process in [`Duplicates`], by GPU and
//! 2 MiB block of the address space, apart from the ranges: splitting a
//! range, or moving its master, leaves the copies alone, since the bytes
//! are the same.
//!
//! **Invariant:** a page with a duplicate is written nowhere. Every GPU
//! maps it read-only (`validate_and_map` asks [`Duplicates::holders`]),
//! the duplicate's GPU to its copy; so a GPU's write faults, and the fault
//! collapses the duplicates first (`restore_pages`); a CPU write collapses
//! them before it writes (the simulator calls
//! [`Process::collapse_duplicates`] on every CPU write, as UVM revokes the
//! CPU's write access to duplicated pages). munmap, MADV_DONTNEED and the
//! other CPU-side notifiers collapse them too: the master's bytes change
//! or go. Clearing GPU_READ_MOSTLY (set_attr step 8a) collapses them
//! over what it clears. A duplicate is the cheapest VRAM to take back: an allocation
//! that does not fit drops the GPU's duplicates before it evicts anything
//! (nothing to copy back).

use std::collections::BTreeMap;

use super::Process;
use crate::addr::{PageNum, PageRange};
use crate::dma::DmaEntry;
use crate::gpu::{GpuIndex, GpuMask};
use crate::platform::{Hardware, TlbFlush, VramBuf};
use crate::residency::PageBits;

/// A page of a VRAM buffer: its GPU, the buffer, the buffer page.
type InVram = (GpuIndex, VramBuf, u64);

/// Pages of one block of duplicates: 2 MiB of the address space.
const BLOCK: u64 = 512;

/// One GPU's duplicates in one 2 MiB block: a VRAM buffer of the block's
/// 512 pages, page `k` of the block at buffer page `k`, and which of them
/// hold a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DupBlock {
    /// The buffer.
    pub buf: VramBuf,
    /// The pages that hold a copy.
    pub pages: PageBits,
}

/// A process's read duplicates, by (GPU, block).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Duplicates {
    blocks: BTreeMap<(GpuIndex, u64), DupBlock>,
    /// Pages copied, and copies dropped, since the process began.
    duplicated: u64,
    dropped: u64,
}

impl Duplicates {
    /// Whether no page has a duplicate.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Where GPU `gpu`'s copy of `page` is: its buffer and buffer page.
    pub fn copy_of(&self, gpu: GpuIndex, page: PageNum) -> Option<(VramBuf, u64)> {
        let k = page.raw() % BLOCK;
        let b = self.blocks.get(&(gpu, page.raw() / BLOCK))?;
        b.pages.get(k).then_some((b.buf, k))
    }

    /// The GPUs that hold a copy of `page`.
    pub fn holders(&self, page: PageNum) -> GpuMask {
        let block = page.raw() / BLOCK;
        self.blocks
            .iter()
            .filter(|((_, b), d)| *b == block && d.pages.get(page.raw() % BLOCK))
            .map(|((g, _), _)| *g)
            .collect()
    }

    /// Every buffer, with its GPU (for the checker).
    pub fn buffers(&self) -> impl Iterator<Item = (GpuIndex, VramBuf)> + '_ {
        self.blocks.iter().map(|((g, _), d)| (*g, d.buf))
    }

    /// Every copy: its GPU, page, buffer and buffer page (for the checker).
    pub fn copies(&self) -> impl Iterator<Item = (GpuIndex, PageNum, VramBuf, u64)> + '_ {
        self.blocks.iter().flat_map(|(&(g, block), d)| {
            d.pages
                .runs()
                .into_iter()
                .filter(|&(_, _, on)| on)
                .flat_map(move |(a, b, _)| {
                    (a..b).map(move |k| (g, PageNum::new(block * BLOCK + k), d.buf, k))
                })
        })
    }

    /// Pages copied and copies dropped, since the process began.
    pub fn counts(&self) -> (u64, u64) {
        (self.duplicated, self.dropped)
    }

    /// The (GPU, block) keys with copies over `pages`, on `only` if given.
    fn keys_over(&self, pages: PageRange, only: Option<GpuIndex>) -> Vec<(GpuIndex, u64)> {
        let (lo, hi) = (pages.start().raw() / BLOCK, pages.last().raw() / BLOCK);
        self.blocks
            .keys()
            .filter(|&&(g, b)| (lo..=hi).contains(&b) && only.is_none_or(|o| o == g))
            .copied()
            .collect()
    }
}

impl Process {
    /// The process's read duplicates.
    pub fn duplicates(&self) -> &Duplicates {
        &self.dups
    }

    /// Copies the pages of `run` that GPU `gpu` holds no copy of, and
    /// whose master is not in its VRAM, into its VRAM, leaving the masters
    /// where they are. Pages resident nowhere are skipped (a fault
    /// populates them). Stops at the first block whose buffer does not
    /// fit (after dropping nothing: a duplicate never evicts); its pages
    /// stay uncopied and are then mapped where they are. Returns the pages
    /// copied.
    pub(super) fn duplicate_run(
        &mut self,
        pf: &mut dyn Hardware,
        gpu: GpuIndex,
        run: PageRange,
    ) -> u64 {
        let mut copied = 0;
        // The pieces copied, by range, and the other GPUs that map them:
        // their mappings become read-only after (UVM revokes write access
        // to read-duplicated pages).
        let mut revoke: Vec<(PageNum, PageRange, GpuMask)> = Vec::new();
        let mut p = run.start();
        while p < run.end() {
            // A stretch of pages with one master place, in one block.
            let Some(r) = self.svms.find(p) else {
                p = PageNum::new(p.raw() + 1);
                continue;
            };
            let block = p.raw() / BLOCK;
            let end = run
                .end()
                .raw()
                .min(r.range().end().raw())
                .min((block + 1) * BLOCK);
            let master = |q: u64| -> Option<Option<InVram>> {
                let k = r.index(PageNum::new(q));
                if r.vram.get(k) {
                    let b = r.bo?;
                    let bo = self.bos.get(&b.id)?;
                    Some(Some((bo.gpu, bo.buf, b.offset + k)))
                } else if pf.host_holds(PageNum::new(q)) {
                    Some(None)
                } else {
                    None
                }
            };
            let mut todo: Vec<(u64, Option<InVram>)> = Vec::new();
            for q in p.raw()..end {
                let Some(m) = master(q) else {
                    continue;
                };
                if m.is_some_and(|(g, _, _)| g == gpu)
                    || self.dups.copy_of(gpu, PageNum::new(q)).is_some()
                {
                    continue;
                }
                todo.push((q, m));
            }
            // The other GPUs' mappings of these pages, by their DMA slots
            // (a mapping fills one): runs of pages each maps.
            let mut others: Vec<(PageRange, GpuIndex)> = Vec::new();
            for g in r.mapped_on.iter().filter(|&g| g != gpu) {
                for &(q, _) in &todo {
                    if r.dma.get(g, r.index(PageNum::new(q))) == DmaEntry::Empty {
                        continue;
                    }
                    match others.last_mut() {
                        Some((w, h)) if *h == g && w.end().raw() == q => {
                            *w = PageRange::new(w.start(), PageNum::new(q + 1));
                        }
                        _ => others.push((PageRange::new(PageNum::new(q), PageNum::new(q + 1)), g)),
                    }
                }
            }
            let piece = (r.start(), others, r.mapped_on.contains(gpu));
            p = PageNum::new(end);
            if todo.is_empty() {
                continue;
            }
            let buf = match self.dups.blocks.get(&(gpu, block)) {
                Some(d) => d.buf,
                None => match pf.vram_alloc(gpu, BLOCK) {
                    Ok(buf) => {
                        self.dups.blocks.insert(
                            (gpu, block),
                            DupBlock {
                                buf,
                                pages: PageBits::new(BLOCK),
                            },
                        );
                        buf
                    }
                    Err(_) => break,
                },
            };
            // One copy per run of pages whose masters are contiguous.
            let mut i = 0;
            while i < todo.len() {
                let (q0, m0) = todo[i];
                let mut j = i + 1;
                while j < todo.len()
                    && todo[j].0 == q0 + (j - i) as u64
                    && match (m0, todo[j].1) {
                        (None, None) => true,
                        (Some((g, b, k)), Some((g2, b2, k2))) => {
                            g == g2 && b == b2 && k2 == k + (j - i) as u64
                        }
                        _ => false,
                    }
                {
                    j += 1;
                }
                let n = (j - i) as u64;
                pf.duplicate_run(gpu, buf, q0 % BLOCK, PageNum::new(q0), m0, n);
                let d = self.dups.blocks.get_mut(&(gpu, block)).expect("made above");
                for q in q0..q0 + n {
                    d.pages.set(q % BLOCK, true);
                }
                copied += n;
                i = j;
            }
            let (first, last) = (todo[0].0, todo[todo.len() - 1].0);
            let window = PageRange::new(PageNum::new(first), PageNum::new(last + 1));
            // The copying GPU's old mappings of the pages go now: the
            // caller maps the copies, and if that fails, nothing maps
            // them writable.
            if piece.2 {
                pf.unmap_ptes(gpu, window);
                pf.flush_tlb(gpu, TlbFlush::Heavyweight);
            }
            revoke.extend(
                piece
                    .1
                    .into_iter()
                    .map(|(w, g)| (piece.0, w, GpuMask::only(g))),
            );
        }
        for (start, window, gpus) in revoke {
            // A window the VMA lost cannot be remapped: then unmapped. (So
            // is one whose mapping failed: its GPUs fault and retry it.)
            if let Err(e) = self.validate_and_map(pf, start, window, Some(gpus)) {
                super::migrate::note(pf, &e, crate::inject::Response::Retried);
                for g in gpus.iter() {
                    pf.unmap_ptes(g, window);
                    pf.flush_tlb(g, TlbFlush::Heavyweight);
                }
            }
        }
        self.dups.duplicated += copied;
        copied
    }

    /// Drops every copy of the pages of `pages` (on `only` if given):
    /// their GPUs' PTEs and DMA slots of them go, and a block's buffer
    /// with no copy left is freed. UVM's read-duplicate invalidation.
    /// Returns the copies dropped.
    pub fn collapse_duplicates(
        &mut self,
        pf: &mut dyn Hardware,
        pages: PageRange,
        only: Option<GpuIndex>,
    ) -> u64 {
        if self.dups.is_empty() || pages.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        for (g, block) in self.dups.keys_over(pages, only) {
            let lo = pages.start().raw().max(block * BLOCK);
            let hi = pages.end().raw().min((block + 1) * BLOCK);
            let d = self.dups.blocks.get_mut(&(g, block)).expect("listed");
            let mut runs: Vec<PageRange> = Vec::new();
            for q in lo..hi {
                if !d.pages.get(q % BLOCK) {
                    continue;
                }
                d.pages.set(q % BLOCK, false);
                dropped += 1;
                match runs.last_mut() {
                    Some(r) if r.end().raw() == q => {
                        *r = PageRange::new(r.start(), PageNum::new(q + 1));
                    }
                    _ => runs.push(PageRange::new(PageNum::new(q), PageNum::new(q + 1))),
                }
            }
            let empty = d.pages.count() == 0;
            for run in runs {
                pf.unmap_ptes(g, run);
                pf.flush_tlb(g, TlbFlush::Heavyweight);
                for q in run.pages() {
                    let Some(start) = self.svms.find(q).map(crate::range::SvmRange::start) else {
                        continue;
                    };
                    let r = self.svms.get_mut(start).expect("found above");
                    let k = r.index(q);
                    if matches!(r.dma.get(g, k), DmaEntry::Vram(_)) {
                        // (A VRAM slot holds no DMA mapping to undo.)
                        let _ = r.dma.set(g, k, DmaEntry::Empty);
                    }
                }
            }
            if empty {
                let d = self.dups.blocks.remove(&(g, block)).expect("listed");
                pf.vram_free(g, d.buf);
            }
        }
        self.dups.dropped += dropped;
        dropped
    }

    /// Drops every copy GPU `gpu` holds, to make room in its VRAM.
    /// Returns whether there was any.
    pub(super) fn drop_duplicates_on(&mut self, pf: &mut dyn Hardware, gpu: GpuIndex) -> bool {
        let blocks: Vec<u64> = self
            .dups
            .blocks
            .keys()
            .filter(|(g, _)| *g == gpu)
            .map(|&(_, b)| b)
            .collect();
        for &b in &blocks {
            let pages = PageRange::new(PageNum::new(b * BLOCK), PageNum::new((b + 1) * BLOCK));
            self.collapse_duplicates(pf, pages, Some(gpu));
        }
        !blocks.is_empty()
    }

    /// Frees every copy's buffer, the process going (its GPU mappings go
    /// with its VMs).
    pub(super) fn free_duplicates(&mut self, pf: &mut dyn Hardware) {
        for ((g, _), d) in std::mem::take(&mut self.dups.blocks) {
            pf.vram_free(g, d.buf);
        }
    }
}

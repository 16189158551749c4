//! Mapping ranges on GPUs: `svm_range_validate_and_map` and `svm_range_unmap_from_gpus`.
//!
//! Mapping a window DMA-maps its system pages (or encodes its VRAM pages) in
//! each chosen GPU's DMA array, writes PTEs for exactly that window, and
//! flushes the TLB. See `crate::dma` for the array rules and `crate::pte` for
//! the flags.

use super::Process;
use crate::addr::{PageNum, PageRange};
use crate::attr::SvmFlags;
use crate::dma::DmaEntry;
use crate::error::{Errno, Error, Result};
use crate::events::{self, UnmapTrigger};
use crate::gpu::{GpuIndex, GpuMask};
use crate::inject::Site;
use crate::kernel::Change;
use crate::platform::{Hardware, Pte, PteTarget, TlbFlush};
use crate::policy::PeerLink;
use crate::pte::{PteDomain, pte_flags};
use crate::uapi::flag;

impl Process {
    /// The GPUs a validate-and-map of range `start` maps when no single GPU
    /// is named (`gpuidx = MAX_GPU_INSTANCE`).
    fn map_bitmap(&self, start: PageNum) -> GpuMask {
        let r = self.svms.get(start).expect("range to map is in the list");
        if !self.xnack_enabled {
            return r.attrs.access.or(r.attrs.access_in_place);
        }
        // XNACK on: in-place GPUs map eagerly, and the GPU holding the
        // range's VRAM if it has ACCESS (a prefetch or a fault moved the range
        // there). Other GPUs fault and map lazily, unless the range asks to
        // stay mapped or already was.
        let mut b = r.attrs.access_in_place;
        if let Some(g) = r.actual_loc
            && r.attrs.access.contains(g)
        {
            b.insert(g);
        }
        let always = r
            .attrs
            .flags
            .contains(SvmFlags::from_bits(flag::GPU_ALWAYS_MAPPED));
        if self.config.kernel.has(Change::NoAccessUnmaps) {
            // 2026: update the GPUs that have it mapped, and with
            // GPU_ALWAYS_MAPPED every GPU with ACCESS.
            b = b.or(r.mapped_on);
            if always {
                b = b.or(r.attrs.access);
            }
        } else if b.is_empty() && (r.mapped_to_gpu || always) {
            b = r.attrs.access;
        }
        b
    }

    /// Whether some GPU has range `start` mapped, as the release asks it:
    /// kfd's per-range `mapped_to_gpu`, or from 2026 a non-empty
    /// `bitmap_mapped`.
    pub(super) fn is_mapped(&self, start: PageNum) -> bool {
        let r = self.svms.get(start).expect("range is in the list");
        if self.config.kernel.has(Change::NoAccessUnmaps) {
            !r.mapped_on.is_empty()
        } else {
            r.mapped_to_gpu
        }
    }

    /// Maps `window` of range `start` on `gpu`, or on the GPUs the XNACK
    /// rules pick (`svm_range_validate_and_map`). Returns whether any GPU
    /// was chosen.
    ///
    /// Only the window is walked and mapped. A GPU that cannot reach the
    /// VRAM of the GPU holding the range's (outside its hive, unless the
    /// policy makes PCIe peers: [`Process::peer_link`]) is skipped, as
    /// `svm_range_map_to_gpus` silently skips a GPU outside the hive.
    ///
    /// # Errors
    /// EFAULT when a page of the window has no VMA, or one without read
    /// permission; an injected failure of `hmm_range_fault` (EAGAIN),
    /// `dma_map_page` or the page-table update.
    pub(super) fn validate_and_map(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        window: PageRange,
        gpus: Option<GpuMask>,
    ) -> Result<bool> {
        let bitmap = gpus.unwrap_or_else(|| self.map_bitmap(start));
        if bitmap.is_empty() {
            return Ok(false);
        }
        // 2. The window must still be mapped by VMAs; note read-only ones.
        let mut readonly = Vec::with_capacity(usize::try_from(window.npages().raw()).unwrap_or(0));
        for page in window.pages() {
            let vma = pf.vma_at(page).ok_or(Error::FaultRefused {
                page: page.raw(),
                why: "no VMA behind the page",
                errno: Errno::Efault,
            })?;
            // hmm_range_fault with HMM_PFN_REQ_FAULT cannot fault a page the
            // VMA does not let anyone read (PROT_NONE): EFAULT.
            if !vma.flags.read {
                return Err(Error::FaultRefused {
                    page: page.raw(),
                    why: "the VMA behind the page is not readable",
                    errno: Errno::Efault,
                });
            }
            readonly.push(!vma.flags.write);
        }
        // 2b. `hmm_range_fault` faults the window in (HMM_PFN_REQ_FAULT,
        //     and REQ_WRITE for a writable VMA: kfd passes `readonly` from
        //     the VMA, not from the access), so a never-touched page of a
        //     writable mapping becomes a zeroed system page here, in every
        //     path that maps: XNACK-off registration, prefetch, restore
        //     work and GPU faults alike. Pages in VRAM are device pages
        //     hmm returns as they are.
        {
            let r = self.svms.get(start).expect("range to map is in the list");
            for (page, &ro) in window.pages().zip(&readonly) {
                if !r.vram.get(r.index(page)) {
                    pf.fault_in(page, !ro);
                }
            }
        }
        // 2c. `amdgpu_hmm_range_get_pages` returns -EBUSY as -EAGAIN when
        //     the notifier sequence moved during the walk (7.2 has no retry
        //     loop there): nothing is mapped, and the caller decides.
        if let Some(i) = pf.inject(Site::HmmBusy) {
            return Err(Error::Injected {
                site: Site::HmmBusy,
                errno: i.errno.unwrap_or(Errno::Eagain),
            });
        }
        let hives: Vec<(GpuIndex, bool)> = {
            let r = self.svms.get(start).expect("range to map is in the list");
            // A GPU with read copies of every VRAM page of the window maps
            // its copies, wherever the masters are.
            let copies_cover = |g: GpuIndex| {
                !self.dups.is_empty()
                    && window
                        .pages()
                        .all(|p| !r.vram.get(r.index(p)) || self.dups.copy_of(g, p).is_some())
            };
            bitmap
                .iter()
                .map(|g| {
                    let hive = r
                        .actual_loc
                        .is_none_or(|owner| self.peer_link(owner, g) != PeerLink::None);
                    (g, hive || copies_cover(g))
                })
                .collect()
        };
        let bo = self
            .svms
            .get(start)
            .filter(|r| r.vram_pages() > 0)
            .and_then(|r| r.bo)
            .map(|b| (b, self.bos[&b.id]));
        if let Some((bref, sbo)) = bo {
            // Mapping validates the buffer: the tail of its GPU's LRU.
            let lru = pf.lru_bump(sbo.gpu);
            self.bos.get_mut(&bref.id).expect("the range's buffer").lru = lru;
        }
        let r = self
            .svms
            .get_mut(start)
            .expect("range to map is in the list");
        // 3. Every chosen GPU's DMA array is filled first
        //    (`svm_range_dma_map`), and only then are PTEs written
        //    (`svm_range_map_to_gpus`), so a failing `dma_map_page` leaves
        //    every GPU's page table as it was.
        let mut tables = Vec::with_capacity(hives.len());
        let mut failed = None;
        'gpus: for (g, reachable) in hives {
            // A GPU outside the hive of the GPU holding the VRAM then gets
            // no PTEs (`svm_range_map_to_gpus` skips it).
            let ctx = pf.pte_context(g);
            let mut ptes = Vec::with_capacity(readonly.len());
            for (page, &ro) in window.pages().zip(&readonly) {
                let k = r.index(page);
                // A page with read duplicates is mapped read-only
                // everywhere, and on a GPU with a copy, to its copy
                // (`dup.rs`).
                let dups = !self.dups.is_empty();
                let copy = if dups {
                    self.dups.copy_of(g, page)
                } else {
                    None
                };
                let ro = ro || (dups && !self.dups.holders(page).is_empty());
                // 3. DMA-map system pages; encode VRAM pages.
                let (entry, target, domain) = if let Some((buf, dk)) = copy {
                    let addr = pf.vram_addr(g, buf, dk);
                    (
                        DmaEntry::Vram(addr),
                        PteTarget::Vram { owner: g, addr },
                        PteDomain::LocalVram,
                    )
                } else if r.vram.get(k) {
                    let (bref, sbo) = bo.expect("a range with VRAM pages has a buffer");
                    let addr = pf.vram_addr(sbo.gpu, sbo.buf, bref.offset + k);
                    let domain = if sbo.gpu == g {
                        PteDomain::LocalVram
                    } else {
                        PteDomain::HiveVram
                    };
                    (
                        DmaEntry::Vram(addr),
                        PteTarget::Vram {
                            owner: sbo.gpu,
                            addr,
                        },
                        domain,
                    )
                } else {
                    // `svm_range_dma_map_dev`: on a failing `dma_map_page`
                    // the pages before keep their new addresses (unmapped
                    // at the next map or at free) and this GPU's and the
                    // later GPUs' slots are left as they were.
                    if let Some(i) = pf.inject(Site::DmaMap) {
                        failed = Some(Error::Injected {
                            site: Site::DmaMap,
                            errno: i.errno.unwrap_or(Errno::Enomem),
                        });
                        tables.push((g, false, Vec::new()));
                        break 'gpus;
                    }
                    let addr = pf.dma_map(g, page);
                    (DmaEntry::Sys(addr), PteTarget::Sys(addr), PteDomain::Sys)
                };
                // A valid system mapping is unmapped before its slot is
                // overwritten, so no page stays mapped twice.
                if let Some(old) = r.dma.set(g, k, entry) {
                    pf.dma_unmap(g, old);
                }
                ptes.push(Pte {
                    target,
                    flags: pte_flags(ctx, r.attrs.flags, domain, ro),
                });
            }
            tables.push((g, reachable, ptes));
        }
        if let Some(e) = failed {
            // No PTE is written; the GPUs whose slots were re-mapped keep
            // PTEs at the addresses just unmapped.
            let rewritten: Vec<GpuIndex> = tables.iter().map(|t| t.0).collect();
            self.after_failed_map(pf, window, &rewritten);
            return Err(e);
        }
        for (n, (g, reachable, ptes)) in tables.iter().enumerate() {
            let g = *g;
            // 4. Update the GPU page table, then flush its TLB. A failing
            //    `amdgpu_vm_update_range` leaves the GPUs mapped before it
            //    mapped (no rollback) and stops there.
            let bind = pf.now_ns();
            if *reachable && let Some(i) = pf.inject(Site::PteUpdate) {
                let rest: Vec<GpuIndex> = tables[n..].iter().map(|t| t.0).collect();
                self.after_failed_map(pf, window, &rest);
                return Err(Error::Injected {
                    site: Site::PteUpdate,
                    errno: i.errno.unwrap_or(Errno::Enomem),
                });
            }
            let r = self
                .svms
                .get_mut(start)
                .expect("range to map is in the list");
            if *reachable {
                r.mapped_on.insert(g);
                pf.map_ptes(g, window.start(), ptes);
                pf.flush_tlb(g, TlbFlush::Legacy);
            } else if self.config.unmap_every_mapped_gpu {
                // kfd re-DMA-maps this GPU's slots above (unmapping the old
                // addresses) and then skips its PTEs, so PTEs it wrote
                // earlier for system pages of the window keep pointing at
                // addresses no longer mapped. Closing that: clear them.
                pf.unmap_ptes(g, window);
                pf.flush_tlb(g, TlbFlush::Heavyweight);
            }
            self.bind_ns += pf.now_ns() - bind;
        }
        let r = self
            .svms
            .get_mut(start)
            .expect("range to map is in the list");
        r.mapped_to_gpu = true;
        // Stamped once the mapping is done, as kfd stamps it after
        // `svm_range_map_to_gpus`: a slow mapping does not eat into the
        // 2 ms in which repeated faults count as duplicates.
        r.validate_timestamp = Some(pf.now_ns());
        Ok(true)
    }

    /// After a failed `dma_map_page` or page-table update: `gpus` had the
    /// window's DMA slots re-mapped (the old addresses unmapped) and got no
    /// PTEs, so their PTEs of the window, if any, point at addresses no
    /// longer mapped. kfd leaves them so (harmless where DMA addresses are
    /// physical ones, stale behind a translating IOMMU, which svmsim's
    /// is); `unmap_every_mapped_gpu` clears them, as it does for a GPU
    /// outside the hive.
    fn after_failed_map(&mut self, pf: &mut dyn Hardware, window: PageRange, gpus: &[GpuIndex]) {
        if self.config.unmap_every_mapped_gpu {
            for &g in gpus {
                pf.unmap_ptes(g, window);
                pf.flush_tlb(g, TlbFlush::Heavyweight);
            }
        } else {
            self.stale_after_failed_map += 1;
        }
    }

    /// Clears the PTEs of `window` of range `start` on the GPUs kfd unmaps
    /// (`svm_range_unmap_from_gpus`): `only` when given, else every GPU
    /// with access, or from 2026 every GPU that has it mapped
    /// (`bitmap_mapped`). Before 2026 a range never mapped is left alone
    /// and unmapping the whole range clears `mapped_to_gpu`; from 2026
    /// unmapping the whole range from a GPU clears that GPU's bit, and
    /// `mapped_to_gpu` is kfd's `mapping_done`, which only a mapping sets
    /// or clears.
    pub(super) fn unmap_from_gpus(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        window: PageRange,
        trigger: UnmapTrigger,
        only: Option<GpuMask>,
    ) {
        let pid = self.pid;
        let bitmap_mapped = self.config.kernel.has(Change::NoAccessUnmaps);
        let r = self
            .svms
            .get_mut(start)
            .expect("range to unmap is in the list");
        let whole = window == r.range();
        let gpus = if bitmap_mapped {
            let gpus = only.unwrap_or(r.mapped_on);
            if whole {
                for g in gpus.iter() {
                    r.mapped_on.remove(g);
                }
            }
            gpus
        } else {
            if !r.mapped_to_gpu {
                return;
            }
            if whole {
                r.mapped_to_gpu = false;
                r.mapped_on = GpuMask::default();
            }
            let mut gpus = only.unwrap_or(r.attrs.access.or(r.attrs.access_in_place));
            if self.config.unmap_every_mapped_gpu {
                gpus = gpus.or(r.dma.gpus().collect());
            }
            gpus
        };
        for g in gpus.iter() {
            let id = self.devices[g].id.raw();
            let line = events::unmap_from_gpu(
                pf.now_ns(),
                pid,
                window.start().raw(),
                window.npages().raw(),
                id,
                trigger,
            );
            pf.smi_event(g, line);
            pf.unmap_ptes(g, window);
            pf.flush_tlb(g, TlbFlush::Heavyweight);
        }
    }
}

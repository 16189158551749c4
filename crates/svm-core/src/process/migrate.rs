//! Migration between system memory and VRAM (`kfd_migrate.c`), and the buffers it fills.
//!
//! # Overview
//! RAM→VRAM moves the system pages of a window into the range's VRAM
//! buffer, allocating the buffer (sized for the *whole* range) on first use;
//! VRAM→RAM moves them back and skips pages already in RAM. Between two GPUs
//! the whole range goes to RAM first, then the window to the new GPU, as the
//! kernel does. Every migration invalidates the moved pages on the GPUs
//! first, as the `MMU_NOTIFY_MIGRATE` notifier would: with XNACK on it
//! unmaps them; with XNACK off it evicts the range, which the restore work
//! remaps.

use super::{Process, SvmBo};
use crate::addr::{PageNum, PageRange};
use crate::attr::{Location, SvmFlags};
use crate::error::{Errno, Error, Result};
use crate::events::{self, MigrateTrigger, UnmapTrigger};
use crate::gpu::GpuIndex;
use crate::inject::{Response, Site};
use crate::kernel::Change;
use crate::platform::{CopyDir, Hardware};
use crate::policy::victim::{BoKind, Candidate, Owner};
use crate::range::{BoRef, SvmRange};
use crate::uapi::flag;

/// One migration as its SMI events describe it.
struct Leg {
    /// The GPU whose event stream gets the lines.
    gpu: GpuIndex,
    /// Source: 0 for system memory, else a gpu_id.
    from: u32,
    /// Destination, likewise.
    to: u32,
    trigger: MigrateTrigger,
}

impl Process {
    /// The policy's view of a migration of `from` to `to` (`None`: system
    /// memory), for the runs it moves.
    fn migration_event(
        &self,
        from: Option<GpuIndex>,
        to: Option<GpuIndex>,
        trigger: MigrateTrigger,
    ) -> impl Fn(PageRange, u64) -> crate::policy::MigrationEvent + use<> {
        let staging = self.staging && to.is_none();
        move |pages, now_ns| crate::policy::MigrationEvent {
            pages,
            from,
            to,
            trigger,
            staging,
            now_ns,
        }
    }

    /// Emits MIGRATE_START (`begin`) or MIGRATE_END for `window` of range
    /// `start`, MIGRATE_END with the error its chunk failed with, if any.
    fn migrate_event(
        &self,
        pf: &mut dyn Hardware,
        leg: &Leg,
        start: PageNum,
        window: PageRange,
        begin: bool,
    ) {
        self.migrate_event_failed(pf, leg, start, window, begin, None);
    }

    fn migrate_event_failed(
        &self,
        pf: &mut dyn Hardware,
        leg: &Leg,
        start: PageNum,
        window: PageRange,
        begin: bool,
        error: Option<Errno>,
    ) {
        let (s, n) = (window.start().raw(), window.npages().raw());
        let line = if begin {
            let r = self.svms.get(start).expect("range to migrate");
            events::migrate_start(
                pf.now_ns(),
                self.pid,
                s,
                n,
                leg.from,
                leg.to,
                Location::to_uapi(r.attrs.prefetch_loc),
                Location::to_uapi(r.attrs.preferred_loc),
                leg.trigger,
            )
        } else {
            let mut e =
                events::migrate_end(pf.now_ns(), self.pid, s, n, leg.from, leg.to, leg.trigger);
            if let (Some(errno), events::Kind::MigrateEnd { error_code, .. }) = (error, &mut e.kind)
            {
                *error_code = -errno.code();
            }
            e
        };
        pf.smi_event(leg.gpu, line);
    }

    /// What the MMU notifier does for pages about to move or change
    /// (`svm_range_evict`): XNACK on (and not GPU_ALWAYS_MAPPED) unmaps the
    /// window from the GPUs; otherwise the range is marked invalid for the
    /// restore work, which remaps the whole range.
    pub(super) fn invalidate(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        window: PageRange,
        trigger: UnmapTrigger,
    ) {
        let r = self
            .svms
            .get(start)
            .expect("range to invalidate is in the list");
        let always = r
            .attrs
            .flags
            .contains(SvmFlags::from_bits(flag::GPU_ALWAYS_MAPPED));
        if self.xnack_enabled && !always {
            self.unmap_from_gpus(pf, start, window, trigger, None);
        } else if self.is_mapped(start) {
            // Queues are quiesced on the first eviction; the mappings stay
            // but may not be used until the restore work revalidates.
            if self.config.unmap_every_mapped_gpu {
                self.unmap_from_gpus(pf, start, window, trigger, None);
                // Still mapped as far as the restore work is concerned.
                self.svms
                    .get_mut(start)
                    .expect("range to invalidate")
                    .mapped_to_gpu = true;
            }
            let r = self
                .svms
                .get_mut(start)
                .expect("range to invalidate is in the list");
            r.invalid += 1;
            r.evictions += 1;
            self.evicted_ranges += 1;
            // The first eviction stops the queues on every GPU (unless a
            // KFD buffer's eviction already did); they stay stopped until
            // the restore work has remapped everything.
            if self.evicted_ranges == 1 {
                self.quiesce_queues(pf);
                // `queue_delayed_work(.., AMDGPU_SVM_RANGE_RESTORE_DELAY_MS)`;
                // a busy workqueue runs it later still.
                let late = pf.inject(Site::RestoreDelay).map_or(0, |i| {
                    pf.injected(Site::RestoreDelay, Response::Delayed);
                    i.draw % crate::inject::MAX_INJECTED_DELAY_NS
                });
                self.restore_due_ns = Some(
                    pf.now_ns()
                        .saturating_add(self.config.restore_delay_ns)
                        .saturating_add(late),
                );
            }
        }
    }

    /// RAM→VRAM over `window` of range `start` (`svm_migrate_ram_to_vram`);
    /// returns the pages moved.
    ///
    /// # Errors
    /// ENOSPC when the GPU has no room for the range's buffer, or (6.10+)
    /// when the KFD VRAM limit cannot take the range's size.
    pub(super) fn ram_to_vram(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        best: GpuIndex,
        window: PageRange,
        trigger: MigrateTrigger,
    ) -> Result<u64> {
        let npages = self
            .svms
            .get(start)
            .expect("range to migrate")
            .range()
            .npages()
            .raw();
        // (6.10) The whole range's size is reserved against the KFD VRAM
        // limit for the time of the migration, so that SVM cannot push out
        // buffers allocated through the KFD memory API
        // (`amdgpu_amdkfd_reserve_mem_limit` before
        // `svm_range_vram_node_new`); failure is -ENOSPC, and the caller
        // leaves the pages in system memory.
        if !self.config.kernel.has(Change::VramLimitGate) {
            return self.ram_to_vram_reserved(pf, start, best, window, trigger, npages);
        }
        let bytes = npages * crate::addr::PAGE_SIZE;
        if let Some(i) = pf.inject(Site::VramLimit) {
            // `amdgpu_amdkfd_reserve_mem_limit`'s -ENOMEM, which svm
            // returns as -ENOSPC; nothing was reserved or allocated.
            return Err(Error::Injected {
                site: Site::VramLimit,
                errno: i.errno.unwrap_or(Errno::Enospc),
            });
        }
        pf.reserve_vram_limit(best, bytes)?;
        let r = self.ram_to_vram_reserved(pf, start, best, window, trigger, npages);
        pf.unreserve_vram_limit(best, bytes);
        r
    }

    /// [`Process::ram_to_vram`] once the VRAM limit (if any) is reserved.
    fn ram_to_vram_reserved(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        best: GpuIndex,
        window: PageRange,
        trigger: MigrateTrigger,
        npages: u64,
    ) -> Result<u64> {
        // The buffer covers the whole range; split siblings share it, and a
        // range whose pages all left it reuses it while a sibling keeps it
        // alive on this GPU (`svm_range_validate_svm_bo`). A buffer on
        // another GPU is let go and a new one allocated.
        let reuse = self
            .svms
            .get(start)
            .and_then(|r| r.bo)
            .filter(|b| self.bos.get(&b.id).is_some_and(|x| x.gpu == best));
        let bref = match reuse {
            Some(b) => b,
            None => {
                let buf = self.vram_node_new(pf, best, npages)?;
                let id = self.next_bo;
                self.next_bo += 1;
                self.bos.insert(
                    id,
                    SvmBo {
                        gpu: best,
                        buf,
                        npages,
                        lru: 0,
                        born: 0,
                        cpu_hold_until: 0,
                    },
                );
                BoRef { id, offset: 0 }
            }
        };
        // Validated for the copy: it goes to the tail of the GPU's LRU.
        let lru = pf.lru_bump(best);
        let sbo = {
            let b = self
                .bos
                .get_mut(&bref.id)
                .expect("the range's buffer is in the table");
            b.lru = lru;
            if b.born == 0 {
                b.born = lru;
            }
            *b
        };
        let leg = Leg {
            gpu: best,
            from: 0,
            to: self.devices[best].id.raw(),
            trigger,
        };
        // One `migrate_vma` per VMA chunk of the window, stopping at a hole.
        let mut mpages = 0;
        let mut failed = None;
        for (chunk, vma) in vma_chunks(pf, window) {
            self.migrate_event(pf, &leg, start, chunk, true);
            // `migrate_vma_setup` raises the MIGRATE notifier over the chunk
            // whether or not any page gets collected.
            self.invalidate(pf, start, chunk, UnmapTrigger::MmuNotifyMigrate);
            // Only anonymous pages migrate; file pages stay in the page cache.
            let mut error = None;
            if !vma.flags.file && !vma.flags.io {
                // `migrate_vma_setup` may leave pages out (pinned, locked):
                // `cpages < npages`, and only the collected ones move. The
                // first `draw % npages` pages of the chunk are collected.
                let mut collected = chunk;
                if let Some(i) = pf.inject(Site::MigrateCollect) {
                    let n = i.draw % chunk.npages().raw();
                    collected =
                        PageRange::new(chunk.start(), PageNum::new(chunk.start().raw() + n));
                    pf.injected(Site::MigrateCollect, Response::Partial);
                }
                // The SDMA job of the chunk: when it cannot be submitted,
                // every destination page is released and no page of the
                // chunk migrates (`out_free_vram_pages`); MIGRATE_END
                // carries the error and the later chunks are not tried. A
                // job that fails once submitted goes unnoticed (its fence
                // is never checked), unless `check_copy_fence`.
                let moving = {
                    let r = self.svms.get(start).expect("range to migrate");
                    !runs(r, collected, false).is_empty()
                };
                let fence = match pf.inject(Site::CopyToVram) {
                    Some(i) => {
                        error = Some((Site::CopyToVram, i.errno.unwrap_or(Errno::Einval)));
                        None
                    }
                    None if moving => pf.inject(Site::CopyFence),
                    None => None,
                };
                if fence.is_some() && self.config.check_copy_fence {
                    let errno = fence.and_then(|f| f.errno).unwrap_or(Errno::Eio);
                    error = Some((Site::CopyFence, errno));
                }
                if error.is_none() {
                    let compound = self.config.compound_device_pages;
                    let event = self.migration_event(None, Some(best), trigger);
                    let r = self.svms.get_mut(start).expect("range to migrate");
                    let policy = &mut self.policy;
                    mpages += move_runs(
                        pf,
                        r,
                        collected,
                        (&sbo, bref),
                        (CopyDir::ToVram, compound, fence.is_some()),
                        &mut |e, now| {
                            policy.on_migration(&event(e, now));
                        },
                    );
                    if fence.is_some() {
                        pf.injected(Site::CopyFence, Response::Corrupted);
                    }
                }
            }
            self.migrate_event_failed(pf, &leg, start, chunk, false, error.map(|e| e.1));
            if let Some((site, errno)) = error {
                failed = Some(Error::Injected { site, errno });
                break;
            }
        }
        let r = self.svms.get_mut(start).expect("range to migrate");
        r.kernel_vram_pages = r.kernel_vram_pages.wrapping_add(mpages);
        if mpages == 0 {
            // A buffer allocated for nothing is freed again (and one
            // reused was already referenced): let the scan decide.
            self.bo_scan_needed = true;
        }
        if mpages > 0 {
            r.actual_loc = Some(best);
            r.bo = Some(bref);
            // The review thread's option: unmap the old system pages of every
            // GPU at once rather than when each slot is rewritten.
            // Only the pages that moved: a chunk that failed, and those
            // after it, keep their system pages and what maps them.
            if self.config.bulk_dma_unmap {
                let (from, to) = (
                    r.index(window.start()),
                    r.index(window.start()) + window.npages().raw(),
                );
                let moved: Vec<(u64, u64)> = r
                    .vram
                    .runs()
                    .into_iter()
                    .filter(|&(a, b, v)| v && a < to && b > from)
                    .map(|(a, b, _)| (a.max(from), b.min(to)))
                    .collect();
                for (a, b) in moved {
                    for (g, addr) in r.dma.unmap_sys(a, b) {
                        pf.dma_unmap(g, addr);
                    }
                }
            }
        }
        self.stats[best].page_in += mpages;
        // The earlier chunks' pages count (kfd applies `mpages` whatever
        // the error, MIG:553-555); then the error goes up.
        match failed {
            Some(e) => Err(e),
            None => Ok(mpages),
        }
    }

    /// A new VRAM buffer for a range (`svm_range_vram_node_new` once
    /// `svm_range_validate_svm_bo` found none to reuse).
    ///
    /// # Errors
    /// ENOSPC when the GPU has no room, or the injected failure (TTM unable
    /// to make room: -ENOMEM; nothing was allocated).
    fn vram_node_new(
        &mut self,
        pf: &mut dyn Hardware,
        gpu: GpuIndex,
        npages: u64,
    ) -> Result<crate::platform::VramBuf> {
        if let Some(i) = pf.inject(Site::VramAlloc) {
            return Err(Error::Injected {
                site: Site::VramAlloc,
                errno: i.errno.unwrap_or(Errno::Enomem),
            });
        }
        self.alloc_vram(pf, gpu, npages)
    }

    /// VRAM→RAM over `window` of range `start` (`svm_migrate_vram_to_ram`);
    /// pages already in RAM are skipped and not counted. Returns the pages
    /// moved.
    ///
    /// # Errors
    /// An injected failure of a chunk's system-page allocation or copy: no
    /// page of that chunk moved, and the later chunks were not tried.
    pub(super) fn vram_to_ram(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        window: PageRange,
        trigger: MigrateTrigger,
    ) -> Result<u64> {
        let (owner, bref) = {
            let r = self.svms.get(start).expect("range to migrate");
            let (Some(owner), Some(bref)) = (r.actual_loc, r.bo) else {
                return Ok(0); // already in RAM
            };
            (owner, bref)
        };
        let sbo = self.bos[&bref.id];
        let leg = Leg {
            gpu: owner,
            from: self.devices[owner].id.raw(),
            to: 0,
            trigger,
        };
        // One `migrate_vma` per VMA chunk; pages already in RAM are skipped
        // and not counted.
        let mut mpages = 0;
        for (chunk, _) in vma_chunks(pf, window) {
            self.migrate_event(pf, &leg, start, chunk, true);
            self.invalidate(pf, start, chunk, UnmapTrigger::MmuNotifyMigrate);
            // A chunk that has a page to move allocates system pages for
            // it and copies: either failing releases every page of the
            // chunk (`out_oom`), so none moves; MIGRATE_END carries the
            // error, the later chunks are not tried, and kfd's `vram_pages`
            // is left as it was, the earlier chunks' pages included
            // (MIG:862-866: its over-count, which the checker names under
            // `kernel_accounting`).
            let has_vram = {
                let r = self.svms.get(start).expect("range to migrate");
                chunk.pages().any(|p| r.vram.get(r.index(p)))
            };
            let mut failure = if has_vram && !self.uninjected {
                pf.inject(Site::RamAlloc)
                    .map(|i| (Site::RamAlloc, i.errno.unwrap_or(Errno::Enomem)))
                    .or_else(|| {
                        pf.inject(Site::CopyToRam)
                            .map(|i| (Site::CopyToRam, i.errno.unwrap_or(Errno::Einval)))
                    })
            } else {
                None
            };
            // A job that fails once submitted: unnoticed, unless
            // `check_copy_fence` (then as a copy error).
            let fence = if has_vram && failure.is_none() && !self.uninjected {
                pf.inject(Site::CopyFence)
            } else {
                None
            };
            if let Some(f) = fence
                && self.config.check_copy_fence
            {
                failure = Some((Site::CopyFence, f.errno.unwrap_or(Errno::Eio)));
            }
            if let Some((site, errno)) = failure {
                self.migrate_event_failed(pf, &leg, start, chunk, false, Some(errno));
                let r = self.svms.get_mut(start).expect("range to migrate");
                r.settle();
                self.stats[owner].page_out += mpages;
                return Err(Error::Injected { site, errno });
            }
            let compound = self.config.compound_device_pages;
            let event = self.migration_event(Some(owner), None, trigger);
            let r = self.svms.get_mut(start).expect("range to migrate");
            let policy = &mut self.policy;
            let poison = fence.is_some();
            mpages += move_runs(
                pf,
                r,
                chunk,
                (&sbo, bref),
                (CopyDir::ToRam, compound, poison),
                &mut |e, now| {
                    policy.on_migration(&event(e, now));
                },
            );
            if poison {
                pf.injected(Site::CopyFence, Response::Corrupted);
            }
            self.migrate_event(pf, &leg, start, chunk, false);
        }
        let r = self.svms.get_mut(start).expect("range to migrate");
        // kfd's counter: a warning when it holds fewer pages than moved, then
        // a u64 subtraction that may wrap.
        if r.kernel_vram_pages < mpages {
            self.vram_pages_warnings += 1;
        }
        r.kernel_vram_pages = r.kernel_vram_pages.wrapping_sub(mpages);
        // No VRAM page left: `actual_loc` goes back to system memory and the
        // buffer reference is dropped.
        r.settle();
        if r.vram_pages() == 0 {
            self.bo_scan_needed = true;
        }
        self.stats[owner].page_out += mpages;
        Ok(mpages)
    }

    /// Migrates `window` to `best`'s VRAM (`svm_migrate_to_vram`): directly
    /// from RAM, or, when another GPU holds pages, the whole range to RAM
    /// first.
    ///
    /// # Errors
    /// ENOSPC when VRAM is full; EDEADLK-class when the range cannot leave the
    /// other GPU.
    pub(super) fn migrate_to_vram(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        best: GpuIndex,
        window: PageRange,
        trigger: MigrateTrigger,
    ) -> Result<u64> {
        let r = self.svms.get(start).expect("range to migrate");
        if let Some(owner) = r.actual_loc.filter(|&g| g != best)
            && self
                .policy
                .direct_peer_migration(self.peer_link(owner, best))
        {
            // drm_pagemap's device-to-device migration: the VRAM pages go
            // straight across, then the window's system pages follow.
            let moved = self.vram_to_vram_direct(pf, start, owner, best, trigger)?;
            return Ok(moved + self.ram_to_vram(pf, start, best, window, trigger)?);
        }
        if r.actual_loc.is_some_and(|g| g != best) {
            // `svm_migrate_vram_to_vram`: no direct GPU-to-GPU migration.
            let whole = r.range();
            for _ in 0..3 {
                self.staging = true;
                let r = self.vram_to_ram(pf, start, whole, trigger);
                self.staging = false;
                r?;
                if self.svms.get(start).is_some_and(|r| r.actual_loc.is_none()) {
                    break;
                }
            }
            if self.svms.get(start).is_some_and(|r| r.actual_loc.is_some()) {
                return Err(Error::FaultRefused {
                    page: window.start().raw(),
                    why: "range stuck in another GPU's VRAM",
                    errno: Errno::Ebusy,
                });
            }
        }
        self.ram_to_vram(pf, start, best, window, trigger)
    }

    /// Moves every VRAM page of range `start` from `owner`'s VRAM to a new
    /// buffer on `best`, each run in one direct copy over the peer link
    /// (drm_pagemap with device-to-device migration, the 2025-12
    /// multi-device series), rather than through system memory. The range
    /// then holds its VRAM pages on `best`; its system pages stay where
    /// they are. Returns the pages moved.
    ///
    /// # Errors
    /// ENOSPC when `best` has no room for the range.
    fn vram_to_vram_direct(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        owner: GpuIndex,
        best: GpuIndex,
        trigger: MigrateTrigger,
    ) -> Result<u64> {
        let r = self.svms.get(start).expect("range to migrate");
        let whole = r.range();
        let npages = whole.npages().raw();
        let Some(old) = r.bo else {
            return Ok(0);
        };
        let old_buf = self.bos[&old.id].buf;
        let buf = self.vram_node_new(pf, best, npages)?;
        let id = self.next_bo;
        self.next_bo += 1;
        let lru = pf.lru_bump(best);
        self.bos.insert(
            id,
            SvmBo {
                gpu: best,
                buf,
                npages,
                lru,
                born: lru,
                cpu_hold_until: 0,
            },
        );
        let leg = Leg {
            gpu: best,
            from: self.devices[owner].id.raw(),
            to: self.devices[best].id.raw(),
            trigger,
        };
        self.migrate_event(pf, &leg, start, whole, true);
        self.invalidate(pf, start, whole, UnmapTrigger::MmuNotifyMigrate);
        let r = self.svms.get(start).expect("range to migrate");
        let moving = runs(r, whole, true);
        let mut moved = 0;
        for (k, p, n) in moving {
            let compound = self.config.compound_device_pages;
            pf.copy_peer_run(owner, old_buf, old.offset + k, best, buf, k, p, n, compound);
            let event = self.migration_event(Some(owner), Some(best), trigger);
            self.policy.on_migration(&event(
                PageRange::new(p, PageNum::new(p.raw() + n)),
                pf.now_ns(),
            ));
            moved += n;
        }
        let r = self.svms.get_mut(start).expect("range to migrate");
        r.bo = Some(BoRef { id, offset: 0 });
        r.actual_loc = Some(best);
        self.migrate_event(pf, &leg, start, whole, false);
        self.stats[owner].page_out += moved;
        self.stats[best].page_in += moved;
        // The old buffer goes once no sibling holds it.
        self.bo_scan_needed = true;
        Ok(moved)
    }

    /// Allocates VRAM for a buffer, evicting buffers on that GPU (this
    /// process's or another's) when it does not fit, as TTM evicts to make
    /// room: the least recently validated buffer of any process goes first
    /// (`ttm_bo_evict_first` over the device's LRU), the asking process's
    /// own other ranges included; only the buffer being made, not yet on
    /// the LRU, is safe. Each victim's ranges go back to system memory
    /// whole (trigger TTM_EVICTION), which invalidates their GPU mappings
    /// (XNACK off: the owner's queues stop until its restore work runs),
    /// and the buffer is freed. Each eviction is noted with the platform.
    ///
    /// # Errors
    /// ENOSPC when even an empty GPU (of this process's buffers) has no room.
    pub(super) fn alloc_vram(
        &mut self,
        pf: &mut dyn Hardware,
        gpu: GpuIndex,
        npages: u64,
    ) -> Result<crate::platform::VramBuf> {
        loop {
            let err = match pf.vram_alloc(gpu, npages) {
                Ok(buf) => return Ok(buf),
                // Read duplicates are the cheapest room: dropping one
                // copies nothing back.
                Err(_) if self.drop_duplicates_on(pf, gpu) => continue,
                Err(e) => e,
            };
            // TTM picks across processes: this process's buffers on the
            // GPU and every other's are candidates of one choice.
            let own = self.eviction_candidates(gpu, Owner::This);
            let foreign = pf.foreign_buffers(gpu);
            let Some(victim) = self.config.victim_policy.pick(own.chain(foreign)) else {
                return Err(err);
            };
            let t0 = pf.now_ns();
            let pages = match victim.owner {
                // An eviction that stopped (its migration failed, which it
                // reported) leaves the victim where it is: asking again
                // would pick it again, so the allocation fails as TTM's
                // does when it cannot make room.
                Owner::This => match self.evict_buffer(pf, victim.kind, victim.bo) {
                    Ok(pages) => Some(pages),
                    Err(_) => return Err(err),
                },
                Owner::Other(i) => pf.evict_foreign(gpu, i, victim.kind, victim.bo),
            };
            match pages {
                Some(pages) => {
                    let ns = pf.now_ns().saturating_sub(t0);
                    pf.note_eviction(gpu, victim.owner, pages, ns);
                }
                // A candidate the platform named but could not evict:
                // asking again would loop, so the allocation fails.
                None => return Err(err),
            }
        }
    }

    /// This process's VRAM buffers on `gpu`, SVM and KFD alike, as
    /// eviction candidates of `owner` (TTM's LRU holds both kinds).
    pub fn eviction_candidates(
        &self,
        gpu: GpuIndex,
        owner: Owner,
    ) -> impl Iterator<Item = Candidate> + '_ {
        let svm = self
            .bos
            .iter()
            .filter(move |(_, b)| b.gpu == gpu)
            .map(move |(&bo, b)| Candidate {
                owner,
                kind: BoKind::Svm,
                bo,
                lru: b.lru,
                born: b.born,
                npages: b.npages,
            });
        let kfd = self
            .kfd_bos
            .iter()
            .filter(move |(_, b)| b.gpu == gpu && b.buf.is_some())
            .map(move |(&bo, b)| Candidate {
                owner,
                kind: BoKind::Kfd,
                bo,
                lru: b.lru,
                born: b.lru,
                npages: b.npages,
            });
        svm.chain(kfd)
    }

    /// Evicts this process's buffer `id` of `kind` (the SVM eviction
    /// worker, or TTM moving a KFD buffer to GTT). Returns the pages moved.
    ///
    /// # Errors
    /// The SVM eviction worker stopped at a range whose migration failed:
    /// the buffer stays, with the pages not yet moved.
    pub fn evict_buffer(&mut self, pf: &mut dyn Hardware, kind: BoKind, id: u64) -> Result<u64> {
        match kind {
            BoKind::Svm => self.evict_bo(pf, id),
            BoKind::Kfd => Ok(self.evict_kfd_bo(pf, id)),
        }
    }

    /// `svm_range_evict_svm_bo_worker`: every range holding pages in the
    /// buffer goes back to system memory, whole, and the buffer is freed.
    /// Returns the pages moved back.
    ///
    /// # Errors
    /// A range's migration failed (injected): the walk stopped there.
    pub fn evict_bo(&mut self, pf: &mut dyn Hardware, id: u64) -> Result<u64> {
        let holders: Vec<(PageNum, PageRange)> = self
            .svms
            .iter()
            .filter(|r| r.bo.is_some_and(|b| b.id == id))
            .map(|r| (r.start(), r.range()))
            .collect();
        let gpu = self.bos[&id].gpu;
        let mut moved = 0;
        let mut stopped = None;
        for (start, whole) in holders {
            let r = self.svms.get_mut(start).expect("holder");
            if r.op == Some(crate::range::ListOp::UnmapRange) {
                // Unmapped memory waiting to be freed: no VMA, so nothing
                // migrates; its VRAM pages are simply let go, which is what
                // kfd's worker amounts to when `migrate_vma_setup` finds
                // no VMA.
                r.vram = crate::residency::PageBits::new(whole.npages().raw());
                r.settle();
                self.bo_scan_needed = true;
                continue;
            }
            match self.vram_to_ram(pf, start, whole, MigrateTrigger::TtmEviction) {
                Ok(n) => moved += n,
                Err(e) => {
                    // `svm_range_evict_svm_bo_worker` loops while `!r`: the
                    // first range that fails ends the walk, and the ranges
                    // left keep their VRAM pages (and the buffer its
                    // room). kfd then signals the eviction fence anyway;
                    // what TTM does with the pages still in the buffer is
                    // not modelled: they stay, so no byte is lost.
                    note(pf, &e, Response::EvictionStopped);
                    stopped = Some(e);
                    break;
                }
            }
            if let Some(r) = self.svms.get_mut(start) {
                r.evictions += 1;
            }
        }
        self.stats[gpu].evictions += 1;
        self.release_bos(pf);
        match stopped {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    /// Frees buffers that hold no page any more: the last reference rule
    /// (`svm_range_bo_release`). Ranges that still name a freed buffer
    /// (their pages all left it) forget it.
    ///
    /// Scans only when some path may have dropped a last reference, so the
    /// common call after a set_attr costs nothing.
    pub(super) fn release_bos(&mut self, pf: &mut dyn Hardware) {
        if !std::mem::take(&mut self.bo_scan_needed) {
            return;
        }
        let used: std::collections::BTreeSet<u64> = self
            .svms
            .iter()
            .filter(|r| r.vram_pages() > 0)
            .filter_map(|r| r.bo.map(|b| b.id))
            .collect();
        let forget: Vec<PageNum> = self
            .svms
            .iter()
            .filter(|r| r.bo.is_some_and(|b| !used.contains(&b.id)))
            .map(crate::range::SvmRange::start)
            .collect();
        for s in forget {
            self.svms.get_mut(s).expect("listed range").bo = None;
        }
        let dead: Vec<u64> = self
            .bos
            .keys()
            .copied()
            .filter(|id| !used.contains(id))
            .collect();
        for id in dead {
            let b = self.bos.remove(&id).expect("dead buffer is in the table");
            pf.vram_free(b.gpu, b.buf);
        }
    }

    /// The prefetch of set_attr (`svm_range_trigger_migration`): migrates the
    /// whole range to the best prefetch location. Returns whether it migrated.
    ///
    /// # Errors
    /// A failed VRAM migration (v6.8 behaviour: the range is skipped and the
    /// error returned after the others are processed).
    pub(super) fn trigger_migration(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
    ) -> Result<bool> {
        let Some(best) = self.best_prefetch_location(start) else {
            return Ok(false);
        };
        let r = self.svms.get(start).expect("range to prefetch");
        let whole = r.range();
        match best {
            Location::Sys if r.actual_loc.is_none() => Ok(false),
            Location::Sys => {
                // Only this direction's error reaches the ioctl
                // (`svm_range_trigger_migration`).
                self.vram_to_ram(pf, start, whole, MigrateTrigger::Prefetch)
                    .inspect_err(|e| note(pf, e, Response::Returned))?;
                Ok(true)
            }
            Location::Vram(id) => {
                let g = self.gpuidx(id.raw()).expect("prefetch GPU was checked");
                // Even when the range already sits on this GPU, migrate
                // again: `actual_loc` does not mean every page is there.
                match self.migrate_to_vram(pf, start, g, whole, MigrateTrigger::Prefetch) {
                    Ok(_) => Ok(true),
                    // (6.10) A prefetch is best effort: a failed one leaves
                    // the range where it is and is not an error.
                    Err(e) if self.config.kernel.has(Change::VramLimitGate) => {
                        note(pf, &e, Response::Swallowed);
                        Ok(false)
                    }
                    Err(e) => {
                        note(pf, &e, Response::Returned);
                        Err(e)
                    }
                }
            }
        }
    }

    /// `svm_range_best_prefetch_location`: the prefetch location, or system
    /// memory when a GPU that must reach the range is outside the hive.
    fn best_prefetch_location(&self, start: PageNum) -> Option<Location> {
        let r = self.svms.get(start).expect("range to prefetch");
        let best = r.attrs.prefetch_loc?;
        let Location::Vram(id) = best else {
            return Some(best);
        };
        let g = self.gpuidx(id.raw())?;
        // An app-APU has no VRAM of its own to prefetch into.
        if self.devices[g].apu {
            return Some(Location::Sys);
        }
        let others = if self.xnack_enabled {
            r.attrs.access_in_place
        } else {
            r.attrs.access.or(r.attrs.access_in_place)
        };
        if others.iter().any(|o| !self.same_hive(o, g)) {
            return Some(Location::Sys);
        }
        Some(best)
    }

    /// The CPU fault path (`svm_migrate_to_ram`): a CPU touched page `page`,
    /// which is in VRAM; the granularity window around it comes back.
    ///
    /// # Errors
    /// EFAULT (the kernel's SIGBUS) when no range holds the page.
    /// Until when the CPU may not take `page` back from VRAM (Xe's atomic
    /// timeslice, [`crate::process::SvmBo::cpu_hold_until`]): a CPU fault
    /// on it waits until then before `migrate_to_ram` (drm_pagemap's
    /// `__drm_pagemap_migrate_to_ram` returns 0 before the expiration, and
    /// the CPU faults again until it passes).
    pub fn cpu_hold_until(&self, page: PageNum) -> Option<u64> {
        let r = self.live_range(page)?;
        if !r.vram.get(r.index(page)) {
            return None;
        }
        let t = self.bos.get(&r.bo?.id)?.cpu_hold_until;
        (t > 0).then_some(t)
    }

    /// Until when a CPU fault on `page` (in VRAM) at `now_ns` sleeps
    /// before it may migrate, as the fault policy throttles it
    /// ([`crate::policy::FaultPolicy::cpu_fault_throttle`]).
    pub fn cpu_fault_throttle(&mut self, page: PageNum, now_ns: u64) -> Option<u64> {
        let r = self.live_range(page)?;
        if !r.vram.get(r.index(page)) {
            return None;
        }
        let preferred = r.attrs.preferred_loc;
        self.policy.cpu_fault_throttle(page, preferred, now_ns)
    }

    pub fn migrate_to_ram(&mut self, pf: &mut dyn Hardware, page: PageNum) -> Result {
        let r = self.live_range(page).ok_or(Error::FaultRefused {
            page: page.raw(),
            why: "no SVM range (SIGBUS)",
            errno: Errno::Efault,
        })?;
        if r.actual_loc.is_none() {
            return Ok(()); // already migrated
        }
        let start = r.start();
        let window = window(r.range(), page, r.attrs.granularity.log2());
        // Any error is VM_FAULT_SIGBUS (never VM_FAULT_OOM), MIG:1033.
        let moved = self.vram_to_ram(pf, start, window, MigrateTrigger::PagefaultCpu);
        self.release_bos(pf);
        moved.inspect_err(|e| note(pf, e, Response::Sigbus))?;
        Ok(())
    }

    /// The MMU notifier for a CPU-side change that is not an unmap
    /// (mprotect and the like): the GPUs lose the pages of `range`.
    pub fn cpu_invalidate(&mut self, pf: &mut dyn Hardware, range: PageRange) {
        // The master's bytes may change or go: its copies cannot stay.
        self.collapse_duplicates(pf, range, None);
        let hit = self.svms.cuts(range);
        for (start, cut) in hit {
            self.invalidate(pf, start, cut, UnmapTrigger::MmuNotify);
        }
    }

    /// `madvise(MADV_DONTNEED)` over `range`: the CPU page tables drop the
    /// pages, device-private ones included, so they read as zero afterwards.
    /// The notifier (a CLEAR event) takes the GPUs' mappings away. Pages that
    /// were in VRAM are freed behind kfd's back (`folio_free` drops the
    /// buffer reference per page); kfd's `vram_pages` counter does not hear
    /// of it, which is the second way it drifts (an over-count).
    pub fn cpu_zap(&mut self, pf: &mut dyn Hardware, range: PageRange) {
        self.cpu_invalidate(pf, range);
        let hit = self.svms.cuts(range);
        for (start, cut) in hit {
            let r = self.svms.get_mut(start).expect("zapped range");
            if r.op == Some(crate::range::ListOp::UnmapRange) {
                // Its device pages left the CPU page table at munmap; a
                // zap of whatever was mapped there since cannot reach them.
                continue;
            }
            for p in cut.pages() {
                let k = r.index(p);
                r.vram.set(k, false);
            }
            r.settle();
            if r.vram_pages() == 0 {
                self.bo_scan_needed = true;
            }
        }
        self.release_bos(pf);
    }

    /// Whether `page` sits in VRAM, so a CPU touch must fault it back.
    pub fn page_in_vram(&self, page: PageNum) -> bool {
        self.live_range(page)
            .is_some_and(|r| r.vram.get(r.index(page)))
    }

    /// The range holding `page` as the CPU sees it: a piece munmap left for
    /// the deferred work is no longer in the CPU page table (memory mapped
    /// there since is new memory), so it does not count.
    pub(super) fn live_range(&self, page: PageNum) -> Option<&crate::range::SvmRange> {
        self.svms
            .find(page)
            .filter(|r| r.op != Some(crate::range::ListOp::UnmapRange))
    }
}

/// The VMA chunks of `window`, in order, up to the first page no VMA holds
/// (the migration loops' `vma_lookup` ... `break`).
fn vma_chunks(pf: &dyn Hardware, window: PageRange) -> Vec<(PageRange, crate::platform::VmaInfo)> {
    let mut out = Vec::new();
    let mut at = window.start();
    while at < window.end() {
        let Some(vma) = pf.vma_at(at) else { break };
        let end = vma.range.end().min(window.end());
        out.push((PageRange::new(at, end), vma));
        at = end;
    }
    out
}

/// Tells the platform what the engine did with `e`, when it is an
/// injected failure: the run's coverage of error paths.
pub(super) fn note(pf: &mut dyn Hardware, e: &Error, response: Response) {
    if let Error::Injected { site, .. } = e {
        pf.injected(*site, response);
    }
}

/// The granularity window around `page`, clipped to `range`:
/// `[max(align_down(page, 2^g), start), min(align_up(page + 1, 2^g) - 1, last)]`.
pub(super) fn window(range: PageRange, page: PageNum, granularity: u8) -> PageRange {
    let size = 1u64 << granularity.min(63);
    let lo = page.raw() & !(size - 1);
    let hi = lo.saturating_add(size);
    PageRange::new(
        PageNum::new(lo).max(range.start()),
        PageNum::new(hi).min(range.end()),
    )
}

/// Moves the pages of `chunk` (inside range `r`, whose buffer is `bo` at
/// its offset) that are not yet on `dir`'s side, run by run (their bytes
/// lost to a failed SDMA job when `corrupt`), and flips their VRAM bits; `moved_run` hears of each run once it moved (with the
/// time then). Returns
/// the pages moved.
fn move_runs(
    pf: &mut dyn Hardware,
    r: &mut SvmRange,
    chunk: PageRange,
    (sbo, bref): (&SvmBo, BoRef),
    (dir, compound, corrupt): (CopyDir, bool, bool),
    moved_run: &mut dyn FnMut(PageRange, u64),
) -> u64 {
    let to_vram = dir == CopyDir::ToVram;
    let mut moved = 0;
    for (k, p, n) in runs(r, chunk, !to_vram) {
        pf.copy_run(dir, sbo.gpu, sbo.buf, bref.offset + k, p, n, compound);
        // `corrupt`: the job failed after `migrate_vma_pages` committed the
        // pages; kfd's `svm_migrate_copy_done` waits and looks no further.
        if corrupt {
            pf.corrupt_run(dir, sbo.gpu, sbo.buf, bref.offset + k, p, n);
        }
        (k..k + n).for_each(|k| r.vram.set(k, to_vram));
        moved += n;
        moved_run(PageRange::new(p, PageNum::new(p.raw() + n)), pf.now_ns());
    }
    moved
}

/// The runs of consecutive pages of `chunk` (inside range `r`) whose
/// VRAM bit is `in_vram`: the pages one direction of a migration moves,
/// as (index in the range, first virtual page, pages).
fn runs(r: &SvmRange, chunk: PageRange, in_vram: bool) -> Vec<(u64, PageNum, u64)> {
    let mut out: Vec<(u64, PageNum, u64)> = Vec::new();
    for p in chunk.pages() {
        let k = r.index(p);
        if r.vram.get(k) != in_vram {
            continue;
        }
        match out.last_mut() {
            Some((k0, _, n)) if *k0 + *n == k => *n += 1,
            _ => out.push((k, p, 1)),
        }
    }
    out
}

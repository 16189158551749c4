//! The GPU fault handler (`svm_range_restore_pages`) and the XNACK-off restore work.
//!
//! # Overview
//! A retry fault names a GPU, a page and whether it was a write. The
//! handler finds (or creates) the range, drops duplicates, checks the VMA
//! and the permission, picks where the page should live, migrates the
//! window around the fault there, and maps that same window on the faulting
//! GPU. How large "the window" is depends on the [`crate::policy::Policy`].
//!
//! "Try later" is a value, not an error: [`FaultOutcome::Dropped`] tells the
//! GPU to retry, exactly when the kernel returns 0 without mapping.

use super::Process;
use super::migrate::window;
use crate::addr::{PageCount, PageNum, PageRange};
use crate::attr::Location;
use crate::error::{Errno, Error, Result};
use crate::events::{self, MigrateTrigger, UnmapTrigger};
use crate::gpu::{GpuIndex, GpuMask};
use crate::inject::Response;
use crate::platform::Hardware;
use crate::policy::{
    Access, AccessCounterSpec, BatchFault, BatchStep, FaultCtx, FaultPlan, HostView, NewRangeCtx,
    PeerView,
};
use crate::range::{ListOp, SvmRange};

/// A fault plan's steps: (what to migrate, what to map), served in
/// order.
enum Steps {
    /// `FaultPlan::Serve`'s one step.
    One(Option<(Location, PageRange)>, Option<PageRange>),
    /// `FaultPlan::ServeRuns`: each run migrated to the location, then
    /// mapped; then each remote run mapped where it is.
    Runs(Location, Vec<PageRange>, Vec<PageRange>),
    /// `FaultPlan::Duplicate`: each run copied to the faulting GPU, then
    /// mapped there.
    Copy(Vec<PageRange>),
}

impl Steps {
    fn len(&self) -> usize {
        match self {
            Steps::One(..) => 1,
            Steps::Runs(_, runs, remote) => runs.len() + remote.len(),
            Steps::Copy(runs) => runs.len(),
        }
    }

    fn get(&self, k: usize) -> (Option<(Location, PageRange)>, Option<PageRange>) {
        match self {
            Steps::One(migrate, map) => (*migrate, *map),
            Steps::Runs(to, runs, _) if k < runs.len() => (Some((*to, runs[k])), Some(runs[k])),
            Steps::Runs(_, runs, remote) => (None, Some(remote[k - runs.len()])),
            Steps::Copy(runs) => (None, Some(runs[k])),
        }
    }

    /// Where the plan migrates to, if anywhere.
    fn to(&self) -> Option<Location> {
        match self {
            Steps::One(migrate, _) => migrate.map(|(to, _)| to),
            Steps::Runs(to, _, _) => Some(*to),
            Steps::Copy(_) => None,
        }
    }
}

/// A plan's steps and the GPUs they map on (the faulting GPU and the
/// plan's others that may map the range), clipped to the range `whole`
/// (what lies outside it is not the plan's to move); a retry's delay
/// as the error.
fn steps_of(
    plan: FaultPlan,
    whole: PageRange,
    gpu: GpuIndex,
    may_map: GpuMask,
) -> std::result::Result<(Steps, GpuMask), u64> {
    Ok(match plan {
        FaultPlan::Serve { migrate, map, also } => (
            Steps::One(
                migrate.and_then(|m| Some((m.to, m.pages.intersect(whole)?))),
                map.intersect(whole),
            ),
            GpuMask::only(gpu).or(also.and(may_map)),
        ),
        FaultPlan::ServeRuns {
            to,
            runs,
            also,
            remote,
        } => (
            Steps::Runs(
                to,
                runs.into_iter()
                    .filter_map(|r| r.intersect(whole))
                    .collect(),
                remote
                    .into_iter()
                    .filter_map(|r| r.intersect(whole))
                    .collect(),
            ),
            GpuMask::only(gpu).or(also.and(may_map)),
        ),
        FaultPlan::Duplicate { runs } => (
            Steps::Copy(
                runs.into_iter()
                    .filter_map(|r| r.intersect(whole))
                    .collect(),
            ),
            GpuMask::only(gpu),
        ),
        FaultPlan::Retry { after_ns } => return Err(after_ns),
    })
}

/// What carrying out a plan's steps came to ([`Process::carry_out`]).
struct Carried {
    /// A migration step ran.
    migrated: bool,
    /// The mapped run that holds the page, else the first one mapped.
    window: Option<PageRange>,
    /// The last map's result: an error ends the steps.
    mapped: Result<bool>,
    /// Time in the migration steps and in the map steps.
    migrate_ns: u64,
    map_ns: u64,
}

/// What a GPU fault came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The window is mapped; `migrated` says whether the migration step ran
    /// (kfd's 'M' in PAGE_FAULT_END), even if no page had to move.
    Resolved {
        /// The migration step ran.
        migrated: bool,
        /// The window that was migrated and mapped.
        window: PageRange,
    },
    /// Nothing was done; the GPU retries later.
    Dropped(DropReason),
}

/// Why a fault was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The range was validated less than 2 ms ago.
    Duplicate,
    /// The VMA went away (a stale fault after munmap).
    VmaRemoved,
    /// The process is gone (`kfd_lookup_process_by_pasid` finds nothing).
    ProcessGone,
    /// A straggler: the fault was already in the ring when memory was
    /// unmapped (its timestamp is not after the checkpoint).
    Straggler,
    /// The range is being unmapped, or split off and not yet added
    /// (`svm_range_skip_recover`).
    Unmapping,
    /// Mapping returned -EAGAIN (`hmm_range_fault` saw the notifier
    /// sequence move): uncounted, the GPU retries (SVM:3260-3271).
    Again,
    /// The fault policy throttled it: retry no sooner than `after_ns`.
    Throttled {
        /// The least delay before the retry, in ns.
        after_ns: u64,
    },
}

fn refused(page: PageNum, why: &'static str, errno: Errno) -> Error {
    Error::FaultRefused {
        page: page.raw(),
        why,
        errno,
    }
}

impl Process {
    /// Handles a retry fault of GPU `gpu` at `page` (`svm_range_restore_pages`).
    /// `ts` is the fault's IH timestamp, which orders it against munmap
    /// checkpoints.
    ///
    /// # Errors
    /// The fault is fatal: EFAULT (XNACK off, or no VMA to make a range
    /// from), EPERM (write to a read-only VMA), EACCES (the GPU may not
    /// access the range), ENOSPC-class errors when neither VRAM nor the
    /// fallback works.
    pub fn restore_pages(
        &mut self,
        pf: &mut dyn Hardware,
        gpu: GpuIndex,
        page: PageNum,
        access: Access,
        ts: u64,
    ) -> Result<FaultOutcome> {
        self.restore_pages_coalesced(pf, gpu, page, access, ts, &[])
    }

    /// Whether the fault policy serves faults in batches
    /// ([`crate::policy::FaultPolicy::batched`]).
    pub fn fault_batched(&self) -> bool {
        self.policy.batched()
    }

    /// When the GPU retries the faults of a batch its policy served
    /// ([`crate::policy::FaultPolicy::replay`]).
    pub fn fault_replay(&self) -> crate::policy::Replay {
        self.policy.replay()
    }

    /// How to serve this process's faults of one batch, as the fault
    /// policy orders and coalesces them; the answer is made whole: every
    /// fault is in exactly one step (a fault the policy left out is served
    /// alone, after the rest; an index out of the batch or given twice is
    /// ignored), so a wrong answer cannot lose a fault or serve one twice.
    pub fn order_batch(&mut self, faults: &[BatchFault]) -> Vec<BatchStep> {
        let mut seen = vec![false; faults.len()];
        let mut take = |i: usize| i < faults.len() && !std::mem::replace(&mut seen[i], true);
        let mut steps: Vec<BatchStep> = Vec::with_capacity(faults.len());
        for s in self.policy.order(faults) {
            if !take(s.serve) {
                continue;
            }
            let with = s.with.into_iter().filter(|&i| take(i)).collect();
            steps.push(BatchStep {
                serve: s.serve,
                with,
            });
        }
        steps.extend(
            (0..faults.len())
                .filter(|&i| !seen[i])
                .map(|serve| BatchStep {
                    serve,
                    with: Vec::new(),
                }),
        );
        steps
    }

    /// [`Process::restore_pages`] for a fault that others of its batch
    /// were coalesced into (`coalesced`: their pages, which the policy's
    /// plan sees).
    ///
    /// # Errors
    /// As [`Process::restore_pages`].
    pub fn restore_pages_coalesced(
        &mut self,
        pf: &mut dyn Hardware,
        gpu: GpuIndex,
        page: PageNum,
        access: Access,
        ts: u64,
        coalesced: &[PageNum],
    ) -> Result<FaultOutcome> {
        let write = access.writes();
        let now = pf.now_ns();
        // 2. A fault for a process that is gone is dropped.
        if self.exited {
            return Ok(FaultOutcome::Dropped(DropReason::ProcessGone));
        }
        // 4. Retry faults need XNACK (refused before the fault is counted,
        //    and before the locks).
        if !self.xnack_enabled {
            return Err(refused(page, "XNACK is off", Errno::Efault));
        }
        // 3. (2025 order: under the locks, before the lookup.) A fault that
        //    was in the ring when memory was unmapped is a straggler: drop
        //    it, uncounted (-EAGAIN). The first newer fault clears the
        //    checkpoint.
        if let Some(cp) = self.checkpoint_ts[gpu] {
            if ts <= cp {
                self.stats[gpu].stragglers_dropped += 1;
                return Ok(FaultOutcome::Dropped(DropReason::Straggler));
            }
            self.checkpoint_ts[gpu] = None;
        }
        // 19. Every fault from here on counts, duplicates included.
        self.stats[gpu].faults += 1;
        // 8. Find the range, or make one for memory never registered.
        let start = match self.svms.find(page) {
            Some(r) => r.start(),
            None => self.create_unregistered_range(pf, page)?,
        };
        // 10. A range being unmapped, or a split-off tail not added yet,
        //     is not recovered now; the GPU retries.
        let r = self.svms.get(start).expect("faulting range is in the list");
        if matches!(r.op, Some(ListOp::UnmapRange | ListOp::AddRange)) {
            self.stats[gpu].unmapping_dropped += 1;
            return Ok(FaultOutcome::Dropped(DropReason::Unmapping));
        }
        // 11. A fault on a range validated less than `retry_fault_pending_ns`
        //     (kfd: 2 ms) ago is a duplicate
        //     (maybe for another window of it); the GPU retries later.
        if r.validate_timestamp
            .is_some_and(|t| now < t.saturating_add(self.config.retry_fault_pending_ns))
        {
            return Ok(FaultOutcome::Dropped(DropReason::Duplicate));
        }
        // 12.-13. The VMA must still be there, and allow the access.
        let Some(vma) = pf.vma_at(page) else {
            return Ok(FaultOutcome::Dropped(DropReason::VmaRemoved));
        };
        if !vma.flags.read || (write && !vma.flags.write) {
            return Err(refused(page, "access not allowed by the VMA", Errno::Eperm));
        }
        // 14. Where should the page be?
        let best = self
            .best_restore_location(start, gpu)
            .ok_or_else(|| refused(page, "the GPU has no access to the range", Errno::Eacces))?;
        // 15.
        let id = self.devices[gpu].id.raw();
        pf.smi_event(
            gpu,
            events::page_fault_start(now, self.pid, page.raw(), id, write),
        );
        // A write drops the range's read duplicates first: no page with a
        // copy may be written (`dup.rs`).
        if write {
            let whole = self.svms.get(start).expect("faulting range").range();
            self.collapse_duplicates(pf, whole, None);
        }
        // 16. What to migrate and what to map: the policy's decision (kfd's
        //     own is the granularity window, or the whole range).
        let r = self.svms.get(start).expect("faulting range is in the list");
        let whole = r.range();
        let (devices, pcie) = (&self.devices, self.policy.pcie_peers());
        let ctx = FaultCtx {
            gpu,
            gpu_id: self.devices[gpu].id,
            page,
            write,
            atomic: access == Access::Atomic,
            now_ns: now,
            range: r,
            best,
            window: window(whole, page, r.attrs.granularity.log2()),
            vram_free_pages: pf.vram_free_pages(gpu),
            coalesced,
            host: HostView(&|p| pf.host_holds(p)),
            preferred_gpu: self.preferred_gpu(r),
            ats: self.devices[gpu].ats,
            peers: PeerView(&|a, b| super::peer_link(devices, pcie, a, b)),
        };
        // The GPUs that may map the range at all: a plan's other GPUs are
        // clipped to them.
        let may_map = r.attrs.access.or(r.attrs.access_in_place);
        // A plan is clipped to the range; what lies outside it is not this
        // fault's to move (a map that misses the page leaves the GPU
        // faulting, which ends in the retry limit). It comes to steps of
        // (what to migrate, what to map): one for `Serve`, one a run for
        // `ServeRuns`.
        let plan = self.policy.plan(&ctx);
        // Only a plan makes a policy deadline (UVM pins a page): the
        // scheduler asks every step, so it is kept here, not asked.
        self.policy_due = self.policy.next_deadline();
        let (steps, map_on) = match steps_of(plan, whole, gpu, may_map) {
            Ok(s) => s,
            Err(after_ns) => {
                // Throttled: the fault ends unserved and the GPU retries
                // later; the range stays as it is.
                pf.smi_event(
                    gpu,
                    events::page_fault_end(pf.now_ns(), self.pid, page.raw(), id, false),
                );
                return Ok(FaultOutcome::Dropped(DropReason::Throttled { after_ns }));
            }
        };
        // A plan that moves pages to a GPU the process does not have, or
        // serves a write with read-only copies, is the policy's bug: the
        // fault ends unserved and is refused (a policy is code from
        // outside the engine; it must not panic it).
        let bug = if !self.plan_is_ours(&steps) {
            Some("the fault policy planned a migration to a GPU the process does not have")
        } else if write && matches!(steps, Steps::Copy(_)) {
            Some("the fault policy planned read-only copies for a write")
        } else {
            None
        };
        if let Some(why) = bug {
            pf.smi_event(
                gpu,
                events::page_fault_end(pf.now_ns(), self.pid, page.raw(), id, false),
            );
            return Err(refused(page, why, Errno::Einval));
        }
        // For the size-class statistics: pages that came into VRAM.
        let paged_in = |s: &Self| s.stats.iter().map(|(_, g)| g.page_in).sum::<u64>();
        let paged_in_before = paged_in(self);
        let bind_before = self.bind_ns;
        let Carried {
            migrated,
            window,
            mapped,
            migrate_ns,
            map_ns,
        } = self.carry_out(
            pf,
            (gpu, start, page),
            &steps,
            map_on,
            MigrateTrigger::PagefaultGpu,
        );
        let map = window.unwrap_or(PageRange::new(page, page));
        if mapped.is_ok() {
            let s = &mut self.size_stats[gpu][crate::process::size_class(map.npages().raw())];
            s.faults += 1;
            s.fault_ns += pf.now_ns().saturating_sub(now);
            s.migrations += u64::from(migrated);
            s.migrate_ns += migrate_ns;
            s.map_ns += map_ns;
            s.bind_ns += (self.bind_ns - bind_before).min(map_ns);
        }
        // Xe's atomic timeslice: the pages an atomic's fault forced into
        // VRAM stay there this long against the CPU (`timeslice_expiration`
        // of the devmem allocation, set when its copy is done).
        let hold = self.policy.atomic_timeslice_ns();
        if access == Access::Atomic && migrated && mapped.is_ok() && hold > 0 {
            let until = pf.now_ns().saturating_add(hold);
            let bo = self.live_range(page).and_then(|r| r.bo);
            if let Some(b) = bo.and_then(|b| self.bos.get_mut(&b.id)) {
                b.cpu_hold_until = until;
            }
        }
        let moved = paged_in(self) - paged_in_before;
        self.size_stats[gpu][crate::process::size_class(map.npages().raw())].pages_to_vram += moved;
        self.release_bos(pf);
        // 18.
        pf.smi_event(
            gpu,
            events::page_fault_end(pf.now_ns(), self.pid, page.raw(), id, migrated),
        );
        if let Err(e) = &mapped {
            if e.errno() == Errno::Eagain {
                // "recover vm fault later": not counted in the faults, and
                // the GPU retries (SVM:3260-3271).
                self.stats[gpu].faults -= 1;
                super::migrate::note(pf, e, Response::Retried);
                return Ok(FaultOutcome::Dropped(DropReason::Again));
            }
            // A negative return: amdgpu writes a no-retry PTE and the GPU
            // takes a VM fault (§10).
            super::migrate::note(pf, e, Response::Fatal);
        }
        mapped?;
        Ok(FaultOutcome::Resolved {
            migrated,
            window: map,
        })
    }

    /// The GPU of `r`'s preferred location, when that is a GPU of the
    /// process.
    fn preferred_gpu(&self, r: &SvmRange) -> Option<GpuIndex> {
        match r.attrs.preferred_loc {
            Some(Location::Vram(id)) => self.gpuidx(id.raw()),
            _ => None,
        }
    }

    /// The access counters GPU `gpu` runs for this process, as its fault
    /// policy asks ([`crate::policy::FaultPolicy::access_counters`]).
    pub fn access_counters(&self, gpu: GpuIndex) -> Option<AccessCounterSpec> {
        self.policy.access_counters(self.devices[gpu].ats)
    }

    /// GPU `gpu`'s access counter reached its threshold on `region` (UVM's
    /// access-counter service, `uvm_gpu_access_counters.c`). No wave waits
    /// on it. For each range the region overlaps, in address order, the
    /// fault policy decides what to migrate and map
    /// ([`crate::policy::FaultPolicy::on_access_counter`]), and the plan is
    /// carried out as a fault's is, its migrations triggered by the access
    /// counter. A range being unmapped, or outside any VMA the GPU may
    /// read, or one the GPU may not access, is left alone, as a fault on
    /// it would be dropped or refused.
    ///
    /// # Errors
    /// A plan that migrates to a GPU the process does not have, or a map
    /// that failed; the ranges after it are left.
    pub fn access_counter_notify(
        &mut self,
        pf: &mut dyn Hardware,
        gpu: GpuIndex,
        region: PageRange,
    ) -> Result<()> {
        if self.exited {
            return Ok(());
        }
        let starts: Vec<PageNum> = self.svms.overlapping(region).map(|r| r.start()).collect();
        for start in starts {
            // An earlier range's plan may have carved ranges: what was a
            // start may be one no more.
            let Some(r) = self.svms.get(start) else {
                continue;
            };
            if matches!(r.op, Some(ListOp::UnmapRange | ListOp::AddRange)) {
                continue;
            }
            let Some(w) = r.range().intersect(region) else {
                continue;
            };
            if !pf.vma_at(w.start()).is_some_and(|v| v.flags.read) {
                continue;
            }
            let Some(best) = self.best_restore_location(start, gpu) else {
                continue;
            };
            let r = self.svms.get(start).expect("looked up above");
            let whole = r.range();
            let may_map = r.attrs.access.or(r.attrs.access_in_place);
            let (devices, pcie) = (&self.devices, self.policy.pcie_peers());
            let ctx = FaultCtx {
                gpu,
                gpu_id: self.devices[gpu].id,
                page: w.start(),
                write: false,
                atomic: false,
                now_ns: pf.now_ns(),
                range: r,
                best,
                window: w,
                vram_free_pages: pf.vram_free_pages(gpu),
                coalesced: &[],
                host: HostView(&|p| pf.host_holds(p)),
                preferred_gpu: self.preferred_gpu(r),
                ats: self.devices[gpu].ats,
                peers: PeerView(&|a, b| super::peer_link(devices, pcie, a, b)),
            };
            let plan = self.policy.on_access_counter(&ctx);
            self.policy_due = self.policy.next_deadline();
            let Some(Ok((steps, map_on))) = plan.map(|p| steps_of(p, whole, gpu, may_map)) else {
                continue;
            };
            if !self.plan_is_ours(&steps) {
                return Err(refused(
                    w.start(),
                    "the fault policy planned a migration to a GPU the process does not have",
                    Errno::Einval,
                ));
            }
            let done = self.carry_out(
                pf,
                (gpu, start, w.start()),
                &steps,
                map_on,
                MigrateTrigger::AccessCounter,
            );
            self.release_bos(pf);
            // UVM logs a failed notification service and clears it.
            if let Err(e) = &done.mapped {
                super::migrate::note(pf, e, Response::Swallowed);
            }
            done.mapped?;
        }
        Ok(())
    }

    /// Whether every GPU the plan's steps migrate to is the process's.
    fn plan_is_ours(&self, steps: &Steps) -> bool {
        match steps.to() {
            Some(Location::Vram(to)) => self.gpuidx(to.raw()).is_some(),
            _ => true,
        }
    }

    /// Steps 16 (the migrations) and 17 (the maps) of a plan for `page`
    /// of the range at `start`, run by run, `trigger` naming the cause of
    /// its migrations. A GPU fault and an access-counter notification both
    /// come here: one way to carry out a plan.
    fn carry_out(
        &mut self,
        pf: &mut dyn Hardware,
        (gpu, start, page): (GpuIndex, PageNum, PageNum),
        steps: &Steps,
        map_on: GpuMask,
        trigger: MigrateTrigger,
    ) -> Carried {
        let mut migrated = false;
        let mut window = None;
        let mut mapped = Ok(false);
        let per_page = self.policy.per_page_residency();
        let (mut migrate_ns, mut map_ns) = (0, 0);
        for k in 0..steps.len() {
            let (migrate, map) = steps.get(k);
            let t = pf.now_ns();
            let mut failed = None;
            if per_page {
                // The range may have been carved into pieces (by this
                // fault's earlier runs or by earlier faults): each piece
                // of the run is migrated on its own.
                if let Some((to, run)) = migrate {
                    let mut p = run.start();
                    while let Some((s, w)) = self.piece_at(p, run) {
                        let s = self.carve_for(s, w, to);
                        match self.migrate_for_fault(pf, s, Some((to, w)), trigger) {
                            Ok(m) => migrated |= m,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                        p = w.end();
                    }
                }
            } else {
                match self.migrate_for_fault(pf, start, migrate, trigger) {
                    Ok(m) => migrated |= m,
                    Err(e) => failed = Some(e),
                }
            }
            // `out_migrate_fail`: the migration and its fallback both
            // failed; nothing of this run is mapped and the fault ends
            // with the error.
            if let Some(e) = failed {
                mapped = Err(e);
                migrate_ns += pf.now_ns() - t;
                break;
            }
            if let (Steps::Copy(_), Some(run)) = (steps, map) {
                migrated |= self.duplicate_run(pf, gpu, run) > 0;
            }
            let t2 = pf.now_ns();
            migrate_ns += t2 - t;
            // 17. Map on the faulting GPU (and the plan's others). A
            //     failure is logged, the fault still ends (18.), and then
            //     the error is returned; the runs after it are not served.
            if let Some(map) = map {
                if window.is_none() || map.contains(page) {
                    window = Some(map);
                }
                if per_page {
                    let mut p = map.start();
                    while let Some((s, w)) = self.piece_at(p, map) {
                        mapped = self.validate_and_map(pf, s, w, Some(map_on));
                        if mapped.is_err() {
                            break;
                        }
                        p = w.end();
                    }
                } else {
                    mapped = self.validate_and_map(pf, start, map, Some(map_on));
                }
                map_ns += pf.now_ns() - t2;
                if mapped.is_err() {
                    break;
                }
            }
        }
        Carried {
            migrated,
            window,
            mapped,
            migrate_ns,
            map_ns,
        }
    }

    /// The range that holds `page` (within `within`), and its part of
    /// `within` from `page` on; `None` past `within` or in a hole.
    fn piece_at(&self, page: PageNum, within: PageRange) -> Option<(PageNum, PageRange)> {
        if page >= within.end() {
            return None;
        }
        let r = self.svms.find(page)?;
        let w = r.range().intersect(PageRange::new(page, within.end()))?;
        Some((r.start(), w))
    }

    /// With per-page residency: when `w` of the range at `start` is to go
    /// to one GPU's VRAM while the range's VRAM is another's, `w` becomes
    /// a range of its own, so that the rest stays where it is rather than
    /// going through system memory with it (`svm_migrate_vram_to_vram`
    /// moves whole ranges). Returns the start of the range that holds `w`.
    fn carve_for(&mut self, start: PageNum, w: PageRange, to: Location) -> PageNum {
        let Location::Vram(id) = to else {
            return start;
        };
        let Some(g) = self.gpuidx(id.raw()) else {
            return start;
        };
        let r = self.svms.get(start).expect("piece_at found it");
        if r.actual_loc.is_none_or(|a| a == g) {
            return start;
        }
        self.svms.carve(start, w).unwrap_or(start)
    }

    /// Step 16's migration of a fault's plan (`migrate`: where, and which
    /// pages of the range at `start`). Returns whether the migration step
    /// ran: kfd reports "migrated" ('M' in PAGE_FAULT_END) whenever it ran
    /// without error, even if no page had to move, and after a fallback
    /// that left every page where it was (SVM:3239-3241).
    ///
    /// # Errors
    /// The migration to system memory failed, that of the plan or the
    /// fallback's (`out_migrate_fail`): the fault ends with it.
    fn migrate_for_fault(
        &mut self,
        pf: &mut dyn Hardware,
        start: PageNum,
        migrate: Option<(Location, PageRange)>,
        trigger: MigrateTrigger,
    ) -> Result<bool> {
        let Some((best, mig)) = migrate else {
            return Ok(false);
        };
        let r = self.svms.get(start).expect("faulting range is in the list");
        if r.actual_loc.is_none() && best == Location::Sys {
            return Ok(false);
        }
        match best {
            Location::Vram(id) => {
                let g = self
                    .gpuidx(id.raw())
                    .expect("checked before: the plan's GPU is the process's");
                if let Err(e) = self.migrate_to_vram(pf, start, g, mig, trigger) {
                    // Fall back to system memory when VRAM fails: pages on
                    // another GPU come back, pages in RAM stay (r = 0), and
                    // the window is mapped where its pages are.
                    let r = self.svms.get(start).expect("faulting range is in the list");
                    if r.actual_loc.is_some_and(|a| a != g)
                        && let Err(e2) = self.vram_to_ram(pf, start, mig, trigger)
                    {
                        super::migrate::note(pf, &e, Response::Fatal);
                        return Err(e2);
                    }
                    super::migrate::note(pf, &e, Response::Fallback);
                }
            }
            Location::Sys => {
                self.vram_to_ram(pf, start, mig, trigger)?;
            }
        }
        Ok(true)
    }

    /// `svm_range_best_restore_location`: where a fault of `gpu` wants the
    /// range, or `None` when the GPU may not access it.
    fn best_restore_location(&self, start: PageNum, gpu: GpuIndex) -> Option<Location> {
        // An app-APU keeps SVM memory in system memory.
        if self.devices[gpu].apu {
            return Some(Location::Sys);
        }
        let r = self.svms.get(start).expect("faulting range is in the list");
        let me = Location::Vram(self.devices[gpu].id);
        match r.attrs.preferred_loc {
            Some(l) if l == me || l == Location::Sys => return Some(l),
            Some(Location::Vram(id)) => {
                if let Some(p) = self.gpuidx(id.raw())
                    && self.same_hive(p, gpu)
                {
                    return Some(Location::Vram(id));
                }
            }
            _ => {}
        }
        if r.attrs.access.contains(gpu) {
            return Some(me);
        }
        if r.attrs.access_in_place.contains(gpu) {
            return Some(match r.actual_loc {
                Some(a) if self.same_hive(a, gpu) => Location::Vram(self.devices[a].id),
                _ => Location::Sys,
            });
        }
        None
    }

    /// Creates a range for a fault on memory never registered
    /// (`svm_range_create_unregistered_range`): the 2 MiB-aligned window
    /// around the fault, clipped to the VMA and to the neighbouring ranges.
    /// Heap and stack ranges prefer system memory.
    fn create_unregistered_range(
        &mut self,
        pf: &mut dyn Hardware,
        page: PageNum,
    ) -> Result<PageNum> {
        let vma = pf
            .vma_at(page)
            .ok_or_else(|| refused(page, "no VMA at the faulting address", Errno::Efault))?;
        // The room a new range has: the VMA, less its neighbours.
        let mut room_hi = vma.range.end();
        if let Some(next) = self
            .svms
            .overlapping(PageRange::new(page, PageNum::new(u64::MAX)))
            .next()
        {
            room_hi = room_hi.min(next.start());
        }
        let mut room_lo = vma.range.start();
        if let Some(prev) = self.svms.iter().filter(|r| r.range().end() <= page).last() {
            room_lo = room_lo.max(prev.range().end());
        }
        let room = PageRange::new(room_lo, room_hi);
        // kfd's: `1UL << svms->default_granularity` pages since 2024.
        let size = PageCount::new(1 << self.config.default_granularity.min(63));
        let kfd = PageRange::new(
            page.align_down(size).max(room_lo),
            page.align_down(size).add(size).min(room_hi),
        );
        let ctx = NewRangeCtx {
            page,
            vma: vma.range,
            room,
            kfd,
            host: HostView(&|p| pf.host_holds(p)),
        };
        // The policy's choice (kfd's unless it says otherwise), within the
        // room; a range that misses the page is the policy's bug.
        let range = self
            .policy
            .new_range(&ctx)
            .intersect(room)
            .filter(|r| r.contains(page))
            .ok_or_else(|| {
                refused(
                    page,
                    "the fault policy made a range that does not hold the faulting page",
                    Errno::Einval,
                )
            })?;
        let mut attrs = self.new_range_attrs(self.bitmap_supported);
        if vma.flags.heap_stack {
            attrs.preferred_loc = Some(Location::Sys);
        }
        // XNACK is on here, so the new range reserves no system memory.
        let plan = self
            .svms
            .plan_add(range, &[], attrs, self.max_range_pages());
        self.svms.commit(&plan, &[]);
        let _ = pf;
        Ok(self
            .svms
            .find(page)
            .expect("the new range holds the page")
            .start())
    }

    /// The XNACK-off restore work (`svm_range_restore_work`): revalidates and
    /// remaps, whole, every range evicted since the last run, then resumes
    /// the queues. When a range cannot be mapped it stops there, reschedules
    /// itself 1 ms later (QUEUE_RESTORE with `R`) and leaves the queues
    /// stopped; the kernel retries until the mapping succeeds. The
    /// simulator runs it when simulated time reaches
    /// [`Process::restore_due_ns`], 1 ms after the first eviction; a GPU
    /// access while the queues are stopped waits until then.
    ///
    /// The kernel also reschedules when a range is evicted again while the
    /// work runs (its `cmpxchg` on the range's `invalid` and on
    /// `evicted_ranges` fail): an MMU notifier on another CPU, racing with
    /// the work. Here nothing runs while the work does, and the work itself
    /// only maps pages where they are (it migrates nothing: VRAM pages
    /// stay put, and a GPU outside their hive gets no PTEs), so no
    /// eviction can come between its snapshot and its end; that check is
    /// not modelled.
    ///
    /// # Errors
    /// A range that cannot be mapped now (a page without a readable VMA).
    pub fn restore_work(&mut self, pf: &mut dyn Hardware) -> Result {
        // `restore_process_worker`, when due: KFD buffers evicted to GTT
        // come back into VRAM (kfd_bo.rs).
        if self.evicted_bos > 0 && self.bo_restore_due_ns.is_some_and(|d| d <= pf.now_ns()) {
            self.restore_kfd_bos(pf);
        }
        if self.evicted_ranges == 0 {
            if self.queues_stopped && self.evicted_bos == 0 {
                self.resume_queues(pf);
            }
            return Ok(());
        }
        // `svm_range_list_lock_and_flush_work`.
        self.deferred_list_work(pf);
        let invalid: Vec<PageNum> = self
            .svms
            .iter()
            .filter(|r| r.invalid > 0)
            .map(SvmRange::start)
            .collect();
        for start in invalid {
            let whole = self.svms.get(start).expect("evicted range").range();
            if let Err(e) = self.validate_and_map(pf, start, whole, None) {
                // out_reschedule: the ranges restored so far stay valid;
                // this one and the rest wait for the next run.
                super::migrate::note(pf, &e, Response::Rescheduled);
                self.restore_due_ns =
                    Some(pf.now_ns().saturating_add(self.config.restore_delay_ns));
                for (g, d) in self.devices.iter() {
                    self.stats[g].restore_reschedules += 1;
                    pf.smi_event(
                        g,
                        events::queue_restore_rescheduled(pf.now_ns(), self.pid, d.id.raw()),
                    );
                }
                self.restore_error = Some(e.clone());
                return Err(e);
            }
            let r = self.svms.get_mut(start).expect("evicted range");
            r.invalid = 0;
            r.restores += 1;
        }
        self.evicted_ranges = 0;
        self.restore_due_ns = None;
        self.restore_error = None;
        // The queues resume once nothing evicted is left (a KFD buffer
        // still in GTT keeps them stopped until its restore).
        if self.evicted_bos == 0 {
            self.resume_queues(pf);
        }
        Ok(())
    }

    /// How many failed mappings (an injected `dma_map_page` or page-table
    /// failure) left PTEs at DMA addresses no longer mapped, as kfd does.
    pub fn stale_after_failed_map(&self) -> u64 {
        self.stale_after_failed_map
    }

    /// Why the restore work last failed, while it stays rescheduled.
    pub fn restore_error(&self) -> Option<&Error> {
        self.restore_error
            .as_ref()
            .filter(|_| self.evicted_ranges > 0)
    }

    /// Moves a pending restore work to `due_ns`: the simulator skips
    /// retries that would repeat a failure with nothing changed between
    /// them.
    pub fn postpone_restore(&mut self, due_ns: u64) {
        if self.evicted_ranges > 0 {
            self.restore_due_ns = Some(due_ns);
        }
    }

    /// Whether queues are stopped waiting for the restore work.
    pub fn restore_pending(&self) -> bool {
        self.queues_stopped
    }

    /// What the fault policy counted of its decisions
    /// ([`crate::policy::FaultPolicy::counters`]), and the read duplicates
    /// the engine made and dropped for its plans, if any.
    pub fn policy_counters(&self) -> Vec<(&'static str, u64)> {
        let mut c = self.policy.counters();
        let (copied, dropped) = self.dups.counts();
        if copied > 0 {
            c.push(("read_duplicated_pages", copied));
            c.push(("read_duplicates_dropped", dropped));
        }
        c
    }

    /// When the fault policy's next deadline is
    /// ([`crate::policy::FaultPolicy::next_deadline`]).
    pub fn policy_due_ns(&self) -> Option<u64> {
        self.policy_due
    }

    /// The fault policy's deadline work: the remote mappings of the pages
    /// it gives up go (UVM's `thrashing_unpin_pages`), every GPU's but the
    /// one whose VRAM holds them; those GPUs fault again at their next
    /// access.
    pub fn policy_timer(&mut self, pf: &mut dyn Hardware) {
        let now = pf.now_ns();
        let due = self.policy.on_deadline(now);
        self.policy_due = self.policy.next_deadline();
        for pages in due {
            let cuts: Vec<(PageNum, PageRange, Option<GpuIndex>)> = self
                .svms
                .overlapping(pages)
                .filter_map(|r| {
                    let w = r.range().intersect(pages)?;
                    let holder = r
                        .actual_loc
                        .filter(|_| w.pages().any(|p| r.vram.get(r.index(p))));
                    Some((r.start(), w, holder))
                })
                .collect();
            for (start, w, holder) in cuts {
                let r = self.svms.get(start).expect("listed above");
                let mut gpus = r.mapped_on.or(r.attrs.access.or(r.attrs.access_in_place));
                if let Some(h) = holder {
                    gpus.remove(h);
                }
                self.unmap_from_gpus(pf, start, w, UnmapTrigger::MmuNotify, Some(gpus));
            }
        }
    }

    /// When the next restore work is due (SVM ranges' or KFD buffers'),
    /// if queues are stopped.
    pub fn restore_due_ns(&self) -> Option<u64> {
        let svm = self.restore_due_ns.filter(|_| self.evicted_ranges > 0);
        let bos = self.bo_restore_due_ns.filter(|_| self.evicted_bos > 0);
        match (svm, bos) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

//! A simulated machine: GPUs, the system memory limit, a clock, and processes with address spaces and SVM state.
//!
//! [`Machine`] is what scenarios and tests drive. Each call is one syscall,
//! ioctl or memory access of one process: mm calls go to the process's
//! [`AddressSpace`], SVM calls to its `svm_core::process::Process`, with a
//! `Platform`/`Hardware` implementation built for the call from the
//! address space, the GPUs and the machine-wide memory limit.
//!
//! GPU accesses walk the process's page table on that GPU; a missing or
//! read-only PTE raises a retry fault that the engine's `restore_pages`
//! serves (XNACK on), or a fatal VM fault (XNACK off). CPU accesses to pages
//! in VRAM take the engine's `migrate_to_ram` path first.

use std::collections::BTreeMap;

use serde::Serialize;
use svm_core::addr::{CpuVa, PAGE_SIZE, PageNum, PageRange};
use svm_core::config::{Config, ConfigError};
use svm_core::events::Event;
use svm_core::gpu::{GpuId, GpuIndex};
use svm_core::platform::{CopyDir, Hardware, Platform, Pte, TlbFlush, VmaInfo, VramBuf};
use svm_core::policy::victim::{BoKind, Candidate, Owner};
use svm_core::policy::{Policy, PolicyFactory};
use svm_core::process::{Process, QueueId};
use svm_core::pte::PteContext;
use svm_core::topology::Topology;
use svm_core::uapi::{SvmArgs, SvmAttribute};
use svm_core::{Errno, Error, Result};

use crate::gpu::{EvictionLog, HwCounters, PageTable, SimGpu};
use crate::mm::{AddressSpace, Backing, Mark, MmError, Prot};
use crate::pages::{PAGE_BYTES, PageStore};
use crate::ring::FaultRing;
use crate::shadow::Shadow;
use crate::timing::{self, Link, Timing};

/// One past the last byte of `[addr, addr + len)` with `len` rounded up to
/// whole pages, or `None` when that leaves the 64-bit space.
fn page_end(addr: CpuVa, len: u64) -> Option<CpuVa> {
    addr.checked_add(len.checked_next_multiple_of(PAGE_SIZE)?)
}

/// The system-wide limit on memory that XNACK-off SVM ranges reserve
/// (`kfd_mem_limit.max_system_mem_limit` and `system_mem_used`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemLimit {
    /// Bytes that may be reserved.
    pub limit_bytes: u64,
    /// Bytes reserved now.
    pub used_bytes: u64,
}

impl MemLimit {
    /// A limit of 15/16 of `sysmem_bytes`, the default svmsim uses.
    ///
    /// amdgpu derives its limit from total RAM in
    /// `amdgpu_amdkfd_gpuvm_init_mem_limits`, and the formula has changed
    /// across kernel versions; scenarios that depend on it set it explicitly.
    pub fn for_sysmem(sysmem_bytes: u64) -> Self {
        Self {
            limit_bytes: sysmem_bytes - (sysmem_bytes >> 4),
            used_bytes: 0,
        }
    }
}

/// One SMI event and the GPU whose event stream it was raised on.
///
/// It serializes as `{ "gpu_id": n, "line": "<kfd text>" }`: JSON is an
/// output edge, where the event becomes kfd's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SmiEvent {
    /// The GPU's gpu_id.
    pub gpu_id: GpuId,
    /// The event.
    #[serde(rename = "line", serialize_with = "kfd_text")]
    pub event: Event,
}

fn kfd_text<S: serde::Serializer>(e: &Event, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(e)
}

/// The KFD VRAM limit of `g` (`amdgpu_amdkfd_reserve_mem_limit`): its
/// VRAM less what is set aside for page tables, `ESTIMATE_PT_SIZE` of
/// system memory (1/16384 of it, at least `AMDGPU_VM_RESERVED_VRAM`,
/// 8 MiB). System memory is taken from the SVM limit, 15/16 of it.
///
/// svmsim caps the reserve at a quarter of the VRAM, which no real GPU
/// reaches (it takes one below 32 MiB): the few-MiB GPUs of tests and of
/// oversubscription runs would otherwise have no room for SVM at all.
fn kfd_vram_limit(g: &SimGpu, limit: &MemLimit) -> u64 {
    let sysmem = limit.limit_bytes / 15 * 16;
    let reserve = (sysmem >> 14).max(8 << 20).min(g.desc.vram_bytes / 4);
    g.desc.vram_bytes - reserve
}

/// The [`Platform`] and [`Hardware`] one process's engine sees during one call.
struct Env<'a> {
    proc_index: usize,
    mm: &'a mut AddressSpace,
    /// Its buffers' faults and moves, counted from the SMI events.
    traffic: &'a mut crate::traffic::Traffic,
    limit: &'a mut MemLimit,
    gpus: &'a mut [SimGpu],
    /// Every process's page tables (this one's at `proc_index`).
    pts: &'a mut [Vec<PageTable>],
    /// Every process's TLB generation per GPU: a flush bumps it, and the
    /// CUs' TLBs drop entries of older generations.
    tlb_gens: &'a mut [Vec<u64>],
    /// The GPUs' fault rings, read for the fault filter's checkpoint.
    rings: &'a [FaultRing],
    /// This step's own clock: it starts at the step's time and every
    /// charged action moves it on.
    now: u64,
    timing: &'a Timing,
    /// Per GPU, when its buffer-funcs ring (the one SDMA ring every
    /// migration copy of the device goes through) is free again.
    copy_busy: &'a mut [u64],
    /// Whether a migration reusing a device page someone still holds takes
    /// a reference ([`svm_core::kernel::Change::VramPageRefcount`]) rather
    /// than reset its count.
    refcount_fix: bool,
    counters: &'a mut HwCounters,
    /// Who evicted whom.
    evictions: &'a mut EvictionLog,
    /// The run's failure injection.
    inject: &'a mut crate::inject::Injector,
    /// The SMI event log, when someone reads it (see
    /// [`Machine::set_smi_log`]).
    events: Option<&'a mut Vec<SmiEvent>>,
    /// The hardware timeline, when recorded.
    timeline: Option<&'a mut timeline::Timeline>,
    /// The other processes, before and after this one: VRAM eviction may
    /// take their buffers, as TTM evicts whatever is least recently used.
    before: &'a mut [SimProcess],
    after: &'a mut [SimProcess],
}

impl Env<'_> {
    /// Charges `ns` of this step's time.
    fn charge(&mut self, ns: f64) {
        self.now += timing::ns(ns);
    }

    /// Moves this step's clock to `t` if that is later (a nested step ran).
    fn charge_to(&mut self, t: u64) {
        self.now = self.now.max(t);
    }

    /// Submits one copy job of `npages` to or from `gpu`'s VRAM at this
    /// step's time: a GART-map job and a copy job on the device's one
    /// buffer-funcs ring, which runs them after whatever it holds (the
    /// link's `setup_ns` per job, then the bytes over its bandwidth). The
    /// CPU does not wait; returns when the job ends.
    fn submit_copy(&mut self, gpu: usize, dir: CopyDir, npages: u64) -> u64 {
        let link = self.timing.host_link;
        self.submit_job(gpu, link, Some(dir), npages)
    }

    /// A copy job of `npages` over `link` on `gpu`'s one ring: it starts
    /// when the ring is free and returns when it ends. Host copies (`dir`)
    /// go on the timeline.
    fn submit_job(&mut self, gpu: usize, link: Link, dir: Option<CopyDir>, npages: u64) -> u64 {
        let start = self.now.max(self.copy_busy[gpu]);
        let t = link.transfer_ns(npages * PAGE_SIZE);
        self.counters.copy_wait_ns += start - self.now;
        self.counters.copy_busy_ns += t;
        self.counters.copy_jobs += 1;
        self.copy_busy[gpu] = start + t;
        if let (Some(tl), Some(dir)) = (self.timeline.as_deref_mut(), dir) {
            let gpu_id = self.gpus[gpu].desc.id.raw();
            tl.copy(gpu_id, dir == CopyDir::ToVram, start, start + t, npages);
        }
        start + t
    }

    /// Moves one page's bytes between system memory and VRAM page `vpage`
    /// of `gpu`, and counts it.
    fn move_page(&mut self, dir: CopyDir, gpu: usize, vpage: u64, va: PageNum) {
        let g = &mut self.gpus[gpu];
        // `svm_migrate_get_vram_page` on a page a CPU fault still holds:
        // since the 2025 fix it takes a reference of its own; before, it
        // reset the count to 1, losing the holder's.
        if dir == CopyDir::ToVram && !self.refcount_fix && g.held_pages.contains_key(&vpage) {
            g.refcount_reset.insert(vpage);
        }
        let to = match dir {
            CopyDir::ToVram => g.desc.id.raw(),
            CopyDir::ToRam => 0,
        };
        self.traffic.moved(self.mm, va, to);
        match dir {
            CopyDir::ToVram => match self.mm.pages_mut().take(va.raw()) {
                Some(p) => {
                    g.vram.put(vpage, Some(p));
                    self.counters.pages_to_vram += 1;
                }
                None => {
                    // Never written: the cleared buffer page already reads zero.
                    g.vram.put(vpage, None);
                    self.counters.pages_zero_filled += 1;
                }
            },
            CopyDir::ToRam => {
                let p = g.vram.take(vpage);
                self.mm.pages_mut().put(va.raw(), p);
                self.counters.pages_to_ram += 1;
            }
        }
    }

    /// Records `gpu`'s VRAM use now, if a timeline is recorded.
    fn sample_vram(&mut self, gpu: GpuIndex) {
        if let Some(tl) = self.timeline.as_deref_mut() {
            let g = &self.gpus[gpu.get()];
            tl.vram.push(timeline::VramSample {
                at_ns: self.now,
                gpu_id: g.desc.id.raw(),
                used_bytes: g.vram_used_bytes(),
            });
        }
    }
}

impl Platform for Env<'_> {
    fn vma_at(&self, page: PageNum) -> Option<VmaInfo> {
        self.mm.vma_info(page)
    }

    fn host_holds(&self, page: PageNum) -> bool {
        self.mm.pages().is_populated(page.raw())
    }

    fn reserve_mem_limit(&mut self, bytes: u64) -> Result {
        let l = &mut *self.limit;
        match l.used_bytes.checked_add(bytes) {
            Some(total) if total <= l.limit_bytes => {
                l.used_bytes = total;
                Ok(())
            }
            _ => Err(Error::MemLimit {
                need_bytes: bytes,
                used_bytes: l.used_bytes,
                limit_bytes: l.limit_bytes,
            }),
        }
    }

    fn unreserve_mem_limit(&mut self, bytes: u64) {
        self.limit.used_bytes = self
            .limit
            .used_bytes
            .checked_sub(bytes)
            .expect("memory limit: more unreserved than reserved");
    }

    fn fault_in(&mut self, page: PageNum, write: bool) -> bool {
        // A write fault on a page shared with a fork child gives this
        // process its own copy (the bytes stay; the revalidation's own
        // retry loop covers the invalidation the copy raises).
        if write {
            self.mm.cow_break(page.raw());
        }
        // A read fault maps the shared zero page: the page stays a hole.
        if !write || !self.mm.pages_mut().fault_in(page.raw()) {
            return false;
        }
        self.counters.pages_faulted_in += 1;
        self.now += timing::ns(self.timing.fault_in_ns);
        true
    }
}

impl Hardware for Env<'_> {
    fn now_ns(&self) -> u64 {
        self.now
    }

    fn inject(&mut self, site: svm_core::inject::Site) -> Option<svm_core::inject::Injected> {
        self.inject.ask(site)
    }

    fn injected(&mut self, site: svm_core::inject::Site, response: svm_core::inject::Response) {
        self.inject.note(site, response);
    }

    fn corrupt_run(
        &mut self,
        dir: CopyDir,
        gpu: GpuIndex,
        buf: VramBuf,
        k: u64,
        va: PageNum,
        n: u64,
    ) {
        // The destination holds what the failed job left: a poison word.
        let poison = crate::inject::POISON;
        for i in 0..n {
            let page = va.raw() + i;
            match dir {
                CopyDir::ToVram => {
                    let g = &mut self.gpus[gpu.get()];
                    let vpage = g.bufs[&buf.0]
                        .page(k + i)
                        .expect("buffer page inside the buffer");
                    g.vram.fill(vpage, poison);
                }
                CopyDir::ToRam => self.mm.pages_mut().fill(page, poison),
            }
            self.inject.mark_corrupted(self.proc_index, page);
        }
    }

    fn pte_context(&self, gpu: GpuIndex) -> PteContext {
        // Each GPU's own IP version picks its rules (an MI300X-class GPU,
        // GC 9.4.3, snoops and types its mappings unlike an MI200).
        let d = &self.gpus[gpu.get()].desc;
        PteContext {
            apu: d.apu,
            ..PteContext::dgpu(d.gc)
        }
    }

    fn vram_alloc(&mut self, gpu: GpuIndex, npages: u64) -> Result<VramBuf> {
        let g = &mut self.gpus[gpu.get()];
        let alloc = g.vram.alloc(npages).map_err(|_| Error::VramExhausted {
            gpu: gpu.get(),
            npages,
        })?;
        let id = g.next_buf;
        g.next_buf += 1;
        g.bufs.insert(id, alloc);
        self.counters.vram_allocs += 1;
        self.sample_vram(gpu);
        Ok(VramBuf(id))
    }

    fn vram_free(&mut self, gpu: GpuIndex, buf: VramBuf) {
        let g = &mut self.gpus[gpu.get()];
        let alloc = g
            .bufs
            .remove(&buf.0)
            .expect("freeing a VRAM buffer that is not live");
        g.vram.free(alloc);
        self.counters.vram_frees += 1;
        self.sample_vram(gpu);
    }

    fn vram_addr(&self, gpu: GpuIndex, buf: VramBuf, k: u64) -> u64 {
        let alloc = &self.gpus[gpu.get()].bufs[&buf.0];
        alloc.page(k).expect("buffer page inside the buffer") * PAGE_SIZE
    }

    fn copy_run(
        &mut self,
        dir: CopyDir,
        gpu: GpuIndex,
        buf: VramBuf,
        k: u64,
        va: PageNum,
        n: u64,
        compound: bool,
    ) {
        // `svm_migrate_copy_to_vram` / `_to_ram`, page by page: the
        // driver's own work on each page (collect, dma_map_page, the
        // migrate_vma bookkeeping and page references), and a copy job
        // whenever the physically contiguous run of VRAM pages breaks, a
        // never-populated page (which arrives zero-filled, uncopied)
        // interrupts it, or it reaches AMDGPU_GTT_MAX_TRANSFER_SIZE
        // (2 MiB). The jobs run on the device's ring while the CPU goes
        // on; `svm_migrate_copy_done` then waits for the last one.
        const FOLIO: u64 = 512;
        let g = gpu.get();
        let per_page = self.timing.migrate_page_ns;
        let populated =
            |s: &Self, j: u64| dir == CopyDir::ToRam || s.mm.pages().is_populated(va.raw() + j);
        let mut job: Option<(u64, u64)> = None; // (next VRAM page, pages)
        let mut done = self.now;
        let mut i = 0;
        while i < n {
            let alloc = &self.gpus[g].bufs[&buf.0];
            let vpage = alloc.page(k + i).expect("buffer page inside the buffer");
            // A compound device page: 512 pages aligned in VA and VRAM and
            // contiguous in VRAM move as one folio.
            let folio = compound
                && (va.raw() + i) % FOLIO == 0
                && vpage % FOLIO == 0
                && i + FOLIO <= n
                && alloc.page(k + i + FOLIO - 1) == Some(vpage + FOLIO - 1);
            if folio {
                if let Some((_, pages)) = job.take() {
                    done = self.submit_copy(g, dir, pages);
                }
                self.charge(self.timing.migrate_folio_ns);
                let any = (i..i + FOLIO).any(|j| populated(self, j));
                for j in 0..FOLIO {
                    self.move_page(dir, g, vpage + j, PageNum::new(va.raw() + i + j));
                }
                if any {
                    done = self.submit_copy(g, dir, FOLIO);
                }
                i += FOLIO;
                continue;
            }
            self.charge(per_page);
            if populated(self, i) {
                job = match job {
                    Some((next, pages)) if next == vpage && pages < FOLIO => {
                        Some((vpage + 1, pages + 1))
                    }
                    other => {
                        if let Some((_, pages)) = other {
                            done = self.submit_copy(g, dir, pages);
                        }
                        Some((vpage + 1, 1))
                    }
                };
            } else if let Some((_, pages)) = job.take() {
                done = self.submit_copy(g, dir, pages);
            }
            self.move_page(dir, g, vpage, PageNum::new(va.raw() + i));
            i += 1;
        }
        if let Some((_, pages)) = job {
            done = self.submit_copy(g, dir, pages);
        }
        self.charge_to(done);
        if let Some(tl) = self.timeline.as_deref_mut() {
            tl.moved(timeline::PageMove {
                at_ns: self.now,
                pid: self.proc_index,
                page: va.raw(),
                npages: n,
                to: match dir {
                    CopyDir::ToVram => timeline::Place::Vram(self.gpus[g].desc.id.raw()),
                    CopyDir::ToRam => timeline::Place::Ram,
                },
            });
        }
    }

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
    ) {
        // One job per run of at most 2 MiB on the source's ring, priced by
        // the peer link; the driver's per-page work as a migration's, or
        // one folio's for 512 aligned pages moving as a device folio.
        let (f, t) = (from.get(), to.get());
        let mut done = self.now;
        let mut job = 0;
        let mut in_folio = 0u64;
        for i in 0..n {
            if in_folio == 0 && compound && (dk + i) % 512 == 0 && i + 512 <= n {
                self.charge(self.timing.migrate_folio_ns);
                in_folio = 512;
            }
            if in_folio > 0 {
                in_folio -= 1;
            } else {
                self.charge(self.timing.migrate_page_ns);
            }
            let s = self.gpus[f].bufs[&src.0]
                .page(k + i)
                .expect("source page inside its buffer");
            let d = self.gpus[t].bufs[&dst.0]
                .page(dk + i)
                .expect("destination page inside its buffer");
            let p = self.gpus[f].vram.take(s);
            self.gpus[t].vram.put(d, p);
            self.counters.pages_peer += 1;
            let id = self.gpus[t].desc.id.raw();
            self.traffic.moved(self.mm, PageNum::new(va.raw() + i), id);
            job += 1;
            if job == 512 || i + 1 == n {
                let link = self.timing.peer_link;
                done = self.submit_job(f, link, None, job);
                job = 0;
            }
        }
        self.now = self.now.max(done);
    }

    fn duplicate_run(
        &mut self,
        gpu: GpuIndex,
        buf: VramBuf,
        k: u64,
        va: PageNum,
        from: Option<(GpuIndex, VramBuf, u64)>,
        n: u64,
    ) {
        // Page by page, the driver's per-page work as a migration's; the
        // bytes are shared, not moved (a write to either side copies them
        // first); one job per 2 MiB on the destination's ring, over the
        // host link from system memory or the peer link from a GPU.
        let t = gpu.get();
        let mut done = self.now;
        let mut job = 0;
        for i in 0..n {
            self.charge(self.timing.migrate_page_ns);
            let page = match from {
                None if self.mm.pages().is_phantom() => self
                    .mm
                    .pages()
                    .is_populated(va.raw() + i)
                    .then_some(crate::pages::Page::Phantom),
                None => self
                    .mm
                    .pages()
                    .lend((va.raw() + i) * PAGE_SIZE)
                    .cloned()
                    .map(crate::pages::Page::Bytes),
                Some((f, src, fk)) => {
                    let s = self.gpus[f.get()].bufs[&src.0]
                        .page(fk + i)
                        .expect("source page inside its buffer");
                    self.gpus[f.get()]
                        .vram
                        .lend(s * PAGE_SIZE)
                        .cloned()
                        .map(crate::pages::Page::Bytes)
                }
            };
            let d = self.gpus[t].bufs[&buf.0]
                .page(k + i)
                .expect("destination page inside its buffer");
            self.gpus[t].vram.put(d, page);
            self.counters.pages_duplicated += 1;
            job += 1;
            if job == 512 || i + 1 == n {
                done = match from {
                    None => self.submit_copy(t, CopyDir::ToVram, job),
                    Some((f, _, _)) => {
                        let link = self.timing.peer_link;
                        self.submit_job(f.get(), link, None, job)
                    }
                };
                job = 0;
            }
        }
        self.charge_to(done);
    }

    fn copy_bo(&mut self, gpu: GpuIndex, dir: CopyDir, npages: u64) {
        // TTM's blit (`amdgpu_ttm_copy_mem_to_mem`) goes through the GART
        // window in pieces of at most 2 MiB; the move's fence is waited for.
        let mut done = self.now;
        let mut left = npages;
        while left > 0 {
            let n = left.min(512);
            done = self.submit_copy(gpu.get(), dir, n);
            left -= n;
        }
        self.charge_to(done);
    }

    fn dma_map(&mut self, gpu: GpuIndex, va: PageNum) -> u64 {
        self.charge(self.timing.dma_map_ns);
        let g = &mut self.gpus[gpu.get()];
        let addr = g.next_dma;
        g.next_dma += PAGE_SIZE;
        g.iommu.insert(addr, (self.proc_index, va));
        self.counters.dma_maps += 1;
        addr
    }

    fn dma_unmap(&mut self, gpu: GpuIndex, addr: u64) {
        if self.gpus[gpu.get()].iommu.remove(&addr).is_some() {
            self.counters.dma_unmaps += 1;
        } else {
            self.counters.bad_dma_unmaps += 1;
        }
    }

    fn map_ptes(&mut self, gpu: GpuIndex, start: PageNum, ptes: &[Pte]) {
        let t = self.now;
        self.charge(self.timing.pte_write_ns * ptes.len() as f64);
        if let Some(tl) = self.timeline.as_deref_mut() {
            tl.mapped(timeline::MapSpan {
                gpu_id: self.gpus[gpu.get()].desc.id.raw(),
                start_ns: t,
                end_ns: self.now,
                page: start.raw(),
                npages: ptes.len() as u64,
            });
        }
        self.pts[self.proc_index][gpu.get()].write(start, ptes);
        self.counters.ptes_written += ptes.len() as u64;
    }

    fn unmap_ptes(&mut self, gpu: GpuIndex, range: PageRange) {
        let n = self.pts[self.proc_index][gpu.get()].clear(range);
        self.charge(self.timing.pte_write_ns * n as f64);
        self.counters.ptes_cleared += n;
    }

    fn flush_tlb(&mut self, gpu: GpuIndex, kind: TlbFlush) {
        match kind {
            TlbFlush::Legacy => {
                self.charge(self.timing.tlb_flush_light_ns);
                self.counters.tlb_flush_legacy += 1;
            }
            TlbFlush::Heavyweight => {
                self.charge(self.timing.tlb_flush_heavy_ns);
                self.counters.tlb_flush_heavyweight += 1;
            }
        }
        // Cached translations of this process on the GPU are gone.
        self.tlb_gens[self.proc_index][gpu.get()] += 1;
        if let Some(tl) = self.timeline.as_deref_mut() {
            tl.tlb_flushes.push(timeline::TlbFlushMark {
                at_ns: self.now,
                gpu_id: self.gpus[gpu.get()].desc.id.raw(),
                heavy: kind == TlbFlush::Heavyweight,
            });
        }
    }

    fn vram_free_pages(&self, gpu: GpuIndex) -> u64 {
        self.gpus[gpu.get()].vram.buddy().free_pages()
    }

    fn foreign_buffers(&self, gpu: GpuIndex) -> Vec<Candidate> {
        let offset = self.proc_index + 1;
        self.before
            .iter()
            .enumerate()
            .chain(self.after.iter().enumerate().map(|(i, p)| (i + offset, p)))
            .flat_map(|(i, p)| p.svm.eviction_candidates(gpu, Owner::Other(i)))
            .collect()
    }

    fn lru_bump(&mut self, gpu: GpuIndex) -> u64 {
        let g = &mut self.gpus[gpu.get()];
        g.lru_clock += 1;
        g.lru_clock
    }

    fn note_eviction(&mut self, gpu: GpuIndex, victim: Owner, pages: u64, ns: u64) {
        let victim = match victim {
            Owner::This => self.proc_index,
            Owner::Other(i) => i,
        };
        let gpu_id = self.gpus[gpu.get()].desc.id.raw();
        self.evictions
            .note(gpu_id, Some(self.proc_index), victim, pages, ns);
    }

    fn reserve_vram_limit(&mut self, gpu: GpuIndex, bytes: u64) -> Result {
        let limit_bytes = kfd_vram_limit(&self.gpus[gpu.get()], self.limit);
        let g = &mut self.gpus[gpu.get()];
        match g.kfd_vram_used.checked_add(bytes) {
            Some(total) if total <= limit_bytes => {
                g.kfd_vram_used = total;
                Ok(())
            }
            _ => Err(Error::VramLimit {
                gpu: gpu.get(),
                need_bytes: bytes,
                used_bytes: g.kfd_vram_used,
                limit_bytes,
                errno: svm_core::Errno::Enospc,
            }),
        }
    }

    fn unreserve_vram_limit(&mut self, gpu: GpuIndex, bytes: u64) {
        let g = &mut self.gpus[gpu.get()];
        g.kfd_vram_used = g
            .kfd_vram_used
            .checked_sub(bytes)
            .expect("KFD VRAM accounting unbalanced");
    }

    fn evict_foreign(&mut self, gpu: GpuIndex, i: usize, kind: BoKind, id: u64) -> Option<u64> {
        let p = match i.cmp(&self.proc_index) {
            std::cmp::Ordering::Less => &mut self.before[i],
            std::cmp::Ordering::Equal => return None,
            std::cmp::Ordering::Greater => &mut self.after[i - self.proc_index - 1],
        };
        let exists = match kind {
            BoKind::Svm => p.svm.bo(id).is_some_and(|b| b.gpu == gpu),
            BoKind::Kfd => p
                .svm
                .kfd_bos()
                .any(|(k, b)| k == id && b.gpu == gpu && b.buf.is_some()),
        };
        if !exists {
            return None;
        }
        // The victim's own eviction worker runs, against its own memory map
        // and page tables, on the same hardware.
        let mut env = Env {
            proc_index: i,
            mm: &mut p.mm,
            traffic: &mut p.traffic,
            limit: &mut *self.limit,
            gpus: &mut *self.gpus,
            pts: &mut *self.pts,
            tlb_gens: &mut *self.tlb_gens,
            rings: self.rings,
            now: self.now,
            timing: self.timing,
            copy_busy: &mut *self.copy_busy,
            refcount_fix: self.refcount_fix,
            counters: &mut *self.counters,
            evictions: &mut *self.evictions,
            inject: &mut *self.inject,
            events: self.events.as_deref_mut(),
            timeline: self.timeline.as_deref_mut(),
            before: &mut [],
            after: &mut [],
        };
        let pages = p.svm.evict_buffer(&mut env, kind, id);
        let end = env.now;
        self.charge_to(end);
        // An eviction that stopped leaves the buffer: not a victim now.
        pages.ok()
    }

    fn evict_queues(&mut self, _gpu: GpuIndex) {
        self.charge(self.timing.queue_evict_ns);
        self.counters.queue_evictions += 1;
    }

    fn restore_queues(&mut self, _gpu: GpuIndex) {
        self.charge(self.timing.queue_restore_ns);
        self.counters.queue_restores += 1;
    }

    fn smi_event(&mut self, gpu: GpuIndex, event: Event) {
        let gpu_id = self.gpus[gpu.get()].desc.id;
        self.traffic.record(self.mm, &event.kind);
        if let Some(events) = self.events.as_deref_mut() {
            events.push(SmiEvent { gpu_id, event });
        }
    }

    fn ih_checkpoint(&self, gpu: GpuIndex) -> Option<u64> {
        self.rings[gpu.get()].newest_ts()
    }
}

/// A process identifier, the index of the process in its machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pid(usize);

impl Pid {
    /// The raw index.
    pub const fn index(self) -> usize {
        self.0
    }
}

/// One simulated process.
#[derive(Debug)]
pub struct SimProcess {
    /// A name for reports.
    pub name: String,
    /// Its VMAs and host bytes.
    pub mm: AddressSpace,
    /// Its SVM state.
    pub svm: Process,
    /// What its accesses wrote, a digest a page: the naive model its
    /// memory is checked against (see `crate::shadow`).
    pub shadow: Shadow,
    /// Its mmap lock, in simulated time.
    pub mmap_lock: MmapLock,
    /// When the fault handler holding its `svms->lock` lets it go: faults
    /// of one process are served one at a time, whatever their GPU.
    pub svms_lock_until: u64,
    /// For a fork child: its parent (machine index) and the pages it still
    /// shares with it copy-on-write.
    pub cow_parent: Option<(usize, std::collections::BTreeSet<u64>)>,
    /// What the driver did to each of its buffers (`crate::traffic`).
    pub traffic: crate::traffic::Traffic,
}

/// A process's mmap lock in simulated time: the one place its bookkeeping
/// lives. Writers (an ioctl, munmap, the deferred and the restore work)
/// hold it alone; readers (GPU fault handlers, CPU faults back from VRAM)
/// share it. A step asks when it gets the lock, runs on its own clock from
/// then, and says when it let go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapLock {
    /// When the last writer lets it go.
    write_until: u64,
    /// When the last reader lets it go.
    read_until: u64,
}

impl MmapLock {
    /// When a writer that wants the lock at `at` gets it: after the writer
    /// and every reader before it.
    pub fn write_from(&self, at: u64) -> u64 {
        at.max(self.write_until).max(self.read_until)
    }

    /// A writer let go at `end`.
    pub fn write_done(&mut self, end: u64) {
        self.write_until = self.write_until.max(end);
    }

    /// When a reader that wants the lock at `at` gets it: after the writer
    /// (readers do not wait for each other).
    pub fn read_from(&self, at: u64) -> u64 {
        at.max(self.write_until)
    }

    /// A reader let go at `end`.
    pub fn read_done(&mut self, end: u64) {
        self.read_until = self.read_until.max(end);
    }
}

/// A GPU access the hardware could not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A fatal GPU VM fault: the queue is killed and a memory exception
    /// reported to the process.
    #[error("GPU {gpu_id:#x} VM fault at {addr} ({}): {why}", if *.write { "write" } else { "read" })]
    VmFault {
        /// The GPU.
        gpu_id: u32,
        /// Faulting byte address.
        addr: CpuVa,
        /// Whether it was a write.
        write: bool,
        /// Why it could not be recovered.
        why: String,
        /// The errno the fault handler returned (EFAULT when XNACK is off).
        errno: Errno,
    },
    /// A CPU access the process would get a signal for.
    #[error("CPU {kind} at {addr}: {why}")]
    Signal {
        /// `SIGSEGV` or `SIGBUS`.
        kind: &'static str,
        /// Faulting byte address.
        addr: CpuVa,
        /// Why.
        why: String,
    },
    /// No such GPU.
    #[error("no GPU with gpu_id {0:#x}")]
    NoGpu(u32),
    /// The access runs past the end of the address space, or one wave
    /// instruction moves more than [`MAX_WAVE_OP_BYTES`](crate::limits::MAX_WAVE_OP_BYTES).
    #[error(
        "access of {len:#x} bytes at {addr} is out of range (it must end below 2^64; one wave \
         instruction moves at most {:#x} bytes)",
        crate::limits::MAX_WAVE_OP_BYTES
    )]
    OutOfRange {
        /// Start.
        addr: CpuVa,
        /// Length.
        len: u64,
    },
    /// An atomic whose address or length is not a whole number of 4-byte
    /// words.
    #[error("atomic of {len:#x} bytes at {addr}: atomics add aligned 32-bit words")]
    MisalignedAtomic {
        /// Start.
        addr: CpuVa,
        /// Length.
        len: u64,
    },
    /// The host could not hold the access's bytes (a read returns them).
    #[error("the host cannot hold the {len:#x} bytes of an access at {addr}")]
    NoMemory {
        /// Start.
        addr: CpuVa,
        /// Length.
        len: u64,
    },
}

/// A buffer of `len` bytes, reserved fallibly: a huge access is an error,
/// never an abort.
pub(crate) fn access_buffer(addr: CpuVa, len: u64) -> Result<Vec<u8>, AccessError> {
    let n = usize::try_from(len).map_err(|_| AccessError::NoMemory { addr, len })?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| AccessError::NoMemory { addr, len })?;
    Ok(v)
}

impl AccessError {
    /// The errno a scenario reports for it.
    pub fn errno(&self) -> Errno {
        match self {
            AccessError::VmFault { errno, .. } => *errno,
            AccessError::Signal { .. } => Errno::Efault,
            AccessError::NoGpu(_)
            | AccessError::OutOfRange { .. }
            | AccessError::MisalignedAtomic { .. } => Errno::Einval,
            AccessError::NoMemory { .. } => Errno::Enomem,
        }
    }
}

/// What a CPU access does with its bytes ([`Machine::cpu_io`]): each
/// part, at most a page, comes with its offset from the access's start.
pub enum CpuIo<'a> {
    /// A read: each part is shown to the closure.
    Read(&'a mut dyn FnMut(u64, &[u8])),
    /// A write: the closure fills each part.
    Write(&'a mut dyn FnMut(u64, &mut [u8])),
    /// A write of one 32-bit word repeated through each part: the closure
    /// gives the word for the part at each offset, its bytes in order
    /// from the access's start (byte `off` of the access is byte
    /// `off % 4` of its word). A whole page written so is stored as a
    /// uniform page (`crate::pages`): no bytes of its own.
    Repeat(&'a mut dyn FnMut(u64) -> u32),
}

impl std::fmt::Debug for CpuIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CpuIo::Read(_) => "CpuIo::Read",
            CpuIo::Write(_) => "CpuIo::Write",
            CpuIo::Repeat(_) => "CpuIo::Repeat",
        })
    }
}

/// A page of zeros, for reads of pages that hold none.
static ZERO_PAGE: [u8; PAGE_BYTES] = [0; PAGE_BYTES];

/// What a GPU access took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccessStats {
    /// Retry faults raised.
    pub faults: u64,
    /// Faults the driver dropped (the GPU retried).
    pub retries: u64,
}

/// A whole simulated machine: the platform (GPUs with their VRAM, IOMMU
/// and fault ring, host memory limits, copy engines, counters, the cost
/// model), the processes (each an address space, an engine `Process` and
/// its page tables), the scheduler, the MMU, and what is being recorded.
#[derive(Debug)]
pub struct Machine {
    /// The platform: GPUs, host memory, copy engines, what actions cost.
    hw: Hw,
    // The processes, and what they run under.
    procs: Vec<SimProcess>,
    /// Makes each process's fault policy.
    policy: PolicyFactory,
    /// The run's knobs: each process gets them at spawn; the GPU's side
    /// (`gpu_retry_delay_ns`, `gpu_max_retries`) and the eviction order of
    /// outside pressure are read here.
    config: Config,
    /// Simulated time, kernels and their waves, and the order of work.
    sched: sched::Sched,
    /// The GPUs' translation: TLBs and what a walk costs.
    mmu: mmu::Mmu,
    /// What is being recorded: SMI events, the timeline, the trace.
    rec: Recorder,
}

/// The platform under the engine: the GPUs (VRAM and its buffers, the
/// IOMMU's DMA mappings), host memory's SVM limit, the copy engines, the
/// hardware counters and what each action costs. `Env` lends it to one
/// process's engine as its `Platform` and `Hardware`.
#[derive(Debug)]
struct Hw {
    topology: Topology,
    /// amdgpu's boot-time XNACK mode (`noretry = 0`), each process's start.
    xnack_default: bool,
    limit: MemLimit,
    gpus: Vec<SimGpu>,
    counters: HwCounters,
    /// Who evicted whose VRAM.
    evictions: EvictionLog,
    /// What actions cost.
    timing: Timing,
    /// Per GPU, when its buffer-funcs ring is free.
    copy_busy: Vec<u64>,
    /// Device-page reference counts that went wrong (the 2025 refcount
    /// race), for the checker.
    refcount_violations: Vec<String>,
    /// What a wave's load from a page never written lends.
    zero_page: crate::pages::PageBytes,
    /// Phantom data mode: no page keeps bytes.
    phantom: bool,
    /// The run's failure injection: its rules, draws and coverage.
    inject: crate::inject::Injector,
}

/// What a run records besides its state.
#[derive(Debug)]
struct Recorder {
    events: Vec<SmiEvent>,
    /// Whether SMI events are kept (someone is subscribed).
    smi_log: bool,
    /// The hardware timeline, when recorded.
    timeline: Option<Box<timeline::Timeline>>,
    /// The record being made, when recording.
    trace: Option<Vec<TraceEvent>>,
    /// For every fault served, ns from its raising to the handler's end.
    fault_latencies: Vec<u64>,
}

/// Splits the machine into the one process's parts and an [`Env`].
macro_rules! env {
    ($m:expr, $pid:expr) => {{
        let m = &mut *$m;
        let (before, rest) = m.procs.split_at_mut($pid.0);
        let (p, after) = rest.split_first_mut().expect("pid from this machine");
        (
            &mut p.svm,
            $crate::machine::Env {
                proc_index: $pid.0,
                mm: &mut p.mm,
                traffic: &mut p.traffic,
                limit: &mut m.hw.limit,
                gpus: &mut m.hw.gpus,
                pts: &mut m.mmu.pts,
                tlb_gens: &mut m.mmu.tlb_gens,
                rings: &m.mmu.rings,
                now: m.sched.clock_ns,
                timing: &m.hw.timing,
                copy_busy: &mut m.hw.copy_busy,
                refcount_fix: m
                    .config
                    .kernel
                    .has(svm_core::kernel::Change::VramPageRefcount),
                counters: &mut m.hw.counters,
                evictions: &mut m.hw.evictions,
                inject: &mut m.hw.inject,
                events: m.rec.smi_log.then_some(&mut m.rec.events),
                timeline: m.rec.timeline.as_deref_mut(),
                before,
                after,
            },
        )
    }};
}

mod kernel;
mod mmu;
mod sched;
pub mod timeline;
mod trace;
mod wave;
pub use kernel::{AccessCounts, ComputeShape, KernelId, KernelStats, ReadsWrites};
pub use sched::{AccessPlan, Interleave, MAX_RETRIES_PER_ADVANCE, WaveId};
pub use trace::{TraceEvent, WaveOp};
pub use wave::{Data, KernelFn, MemOp, WaveCtx};

impl Machine {
    /// A machine with these GPUs, boot-time XNACK default and memory limit.
    pub fn new(topology: Topology, xnack_default: bool, limit: MemLimit) -> Self {
        let gpus: Vec<SimGpu> = topology.gpus().iter().cloned().map(SimGpu::new).collect();
        let n_gpus = gpus.len();
        Self {
            hw: Hw {
                topology,
                xnack_default,
                limit,
                gpus,
                counters: HwCounters::default(),
                evictions: EvictionLog::default(),
                timing: Timing::ZERO,
                copy_busy: vec![0; n_gpus],
                refcount_violations: Vec::new(),
                zero_page: crate::pages::zero_page(),
                phantom: false,
                inject: crate::inject::Injector::default(),
            },
            procs: Vec::new(),
            policy: Policy::default().entry().factory(),
            config: Config::default(),
            sched: sched::Sched::new(n_gpus),
            mmu: mmu::Mmu {
                rings: vec![FaultRing::default(); n_gpus],
                counters: mmu::AccessCounters {
                    notices: vec![std::collections::VecDeque::new(); n_gpus],
                    ..mmu::AccessCounters::default()
                },
                ..mmu::Mmu::default()
            },
            rec: Recorder {
                events: Vec::new(),
                smi_log: true,
                timeline: None,
                trace: None,
                fault_latencies: Vec::new(),
            },
        }
    }

    /// Runs one of kfd's fault policies from now on, in every process.
    pub fn set_policy(&mut self, policy: Policy) {
        self.set_fault_policy(policy.entry().factory());
    }

    /// Runs the policies `factory` makes from now on: every process, and
    /// every process spawned later, gets an instance of its own (so a
    /// policy's history starts afresh).
    pub fn set_fault_policy(&mut self, factory: PolicyFactory) {
        for p in &mut self.procs {
            p.svm.set_fault_policy(factory.make());
        }
        factory.name().clone_into(&mut self.config.policy);
        self.policy = factory;
        self.refresh_access_counters();
    }

    /// Asks every process which access counters its policy has each GPU
    /// run, after its policy or configuration changed.
    fn refresh_access_counters(&mut self) {
        let gpus = self.hw.gpus.len();
        let specs: Vec<Vec<_>> = self
            .procs
            .iter()
            .map(|p| {
                (0..gpus)
                    .map(|g| {
                        p.svm
                            .access_counters(GpuIndex::new(g).expect("at most 64 GPUs"))
                    })
                    .collect()
            })
            .collect();
        let c = &mut self.mmu.counters;
        c.on = specs.iter().flatten().any(Option::is_some);
        c.specs = specs;
    }

    /// Takes every knob of `config` from now on, in every process and in
    /// every process spawned later (each with a fresh instance of the
    /// policy it names: a registered one, or the outside policy this
    /// machine runs, by its name).
    ///
    /// # Errors
    /// A value [`Config::validate`] refuses; nothing changes then.
    pub fn set_config(&mut self, config: &Config) -> Result<(), ConfigError> {
        let factory = match svm_core::policy::lookup(&config.policy) {
            Some(entry) => {
                config.validate()?;
                entry.factory()
            }
            // A policy from outside the registry (`set_fault_policy`) stays
            // while the config names it; the other knobs are checked alone.
            None if config.policy == self.policy.name() => {
                Config {
                    policy: Policy::default().name().to_owned(),
                    ..config.clone()
                }
                .validate()?;
                self.policy.clone()
            }
            None => {
                return Err(config
                    .validate()
                    .expect_err("a policy outside the registry does not validate"));
            }
        };
        for p in &mut self.procs {
            p.svm.configure(config.clone(), factory.make());
        }
        self.policy = factory;
        self.refresh_access_counters();
        if config.inject != self.config.inject {
            self.hw.inject =
                crate::inject::Injector::new(config.inject.clone(), self.seed().unwrap_or(0));
        }
        self.config = config.clone();
        Ok(())
    }

    /// The run's knobs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The run's failure injection: what each site reached, injected and
    /// made the engine do.
    pub fn injection(&self) -> &crate::inject::Injector {
        &self.hw.inject
    }

    /// Prices every action by `timing` from now on ([`Timing::ZERO`], the
    /// default, charges nothing).
    pub fn set_timing(&mut self, timing: Timing) {
        self.mmu.wave_costs = mmu::WaveCosts::of(&timing);
        self.hw.timing = timing;
    }

    /// What actions cost.
    pub fn timing(&self) -> &Timing {
        &self.hw.timing
    }

    /// For every retry fault served so far, in order, the simulated ns from
    /// the wave raising it to the handler finishing with it.
    pub fn fault_latencies(&self) -> &[u64] {
        &self.rec.fault_latencies
    }

    /// Switches to phantom data mode: from now on no page of host memory,
    /// VRAM or the shadow keeps bytes, only whether it was written (see
    /// `crate::pages`). Reads see zeros, so nothing a kernel computes can be
    /// checked; the memory system (faults, migrations, mappings, timing)
    /// runs as in real mode. Call it before anything is written.
    pub fn set_phantom(&mut self) {
        self.hw.phantom = true;
        for g in &mut self.hw.gpus {
            g.vram.set_phantom();
        }
        for p in &mut self.procs {
            *p.mm.pages_mut() = PageStore::phantom();
            p.shadow = Shadow::phantom();
        }
    }

    /// Whether the machine runs in phantom data mode.
    pub fn is_phantom(&self) -> bool {
        self.hw.phantom
    }

    /// A fresh page store for this machine's data mode.
    fn store(&self) -> PageStore {
        if self.hw.phantom {
            PageStore::phantom()
        } else {
            PageStore::new()
        }
    }

    /// A new process's shadow: one that records nothing on a phantom
    /// machine.
    fn new_shadow(&self) -> Shadow {
        if self.hw.phantom {
            Shadow::phantom()
        } else {
            Shadow::new()
        }
    }

    /// Applies a profile's timing, compute shape and fault buffers (whether
    /// they keep duplicates), before any fault (its GPUs are the
    /// topology's business: see [`crate::timing::Profile::gpus`]).
    pub fn apply_profile(&mut self, p: &crate::timing::Profile) {
        self.set_timing(p.timing.clone());
        self.set_compute_shape(kernel::ComputeShape {
            compute_units: p.gpu.compute_units,
            waves_per_cu: p.gpu.waves_per_cu,
            tlb_entries: p.gpu.tlb_entries,
        });
        for r in &mut self.mmu.rings {
            r.keep_duplicates(p.gpu.fault_duplicates);
        }
    }

    /// The GPUs.
    pub fn topology(&self) -> &Topology {
        &self.hw.topology
    }

    /// The simulated GPUs.
    pub fn gpus(&self) -> &[SimGpu] {
        &self.hw.gpus
    }

    /// The memory limit and its use.
    pub fn mem_limit(&self) -> MemLimit {
        self.hw.limit
    }

    /// Hardware counters.
    pub fn counters(&self) -> HwCounters {
        self.hw.counters
    }

    /// Who evicted whose VRAM, how often, and what it cost.
    pub fn evictions(&self) -> &EvictionLog {
        &self.hw.evictions
    }

    /// Keeps SMI events (the default) or not. kfd builds an event only
    /// for a subscribed reader and keeps none itself; a run that reads no
    /// event log (a large phantom run) leaves it off, so its memory grows
    /// with pages, not with faults.
    pub fn set_smi_log(&mut self, on: bool) {
        self.rec.smi_log = on;
    }

    /// SMI events so far.
    pub fn events(&self) -> &[SmiEvent] {
        &self.rec.events
    }

    /// Simulated time in nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.sched.clock_ns
    }

    /// Runs `f` as one of the caller's operations on process `pid`'s
    /// engine: it starts on the machine's clock, once the faults holding
    /// the process's mmap lock have finished, and its cost moves the clock.
    fn op<R>(&mut self, pid: Pid, f: impl FnOnce(&mut Process, &mut Env<'_>) -> R) -> R {
        let p = &self.procs[pid.0];
        let start = p.mmap_lock.write_from(self.sched.clock_ns);
        let (svm, mut env) = env!(self, pid);
        env.now = start;
        let r = f(svm, &mut env);
        let end = env.now;
        self.sched.clock_ns = end;
        self.procs[pid.0].mmap_lock.write_done(end);
        r
    }

    /// With eager ordering, kernel work an operation queued runs before the
    /// operation returns (the worker "runs soon"); a seeded order leaves it
    /// to [`Machine::interleave`] and the waits.
    fn after_op(&mut self) {
        if matches!(self.sched.interleave, Interleave::Eager) {
            self.interleave();
        }
    }

    /// Starts a process; it opens every GPU of the machine.
    pub fn spawn(&mut self, name: &str) -> Pid {
        self.record(|| TraceEvent::Spawn { name: name.into() });
        self.spawn_unrecorded(name)
    }

    /// [`Machine::spawn`] without a trace event (a fork records its own).
    fn spawn_unrecorded(&mut self, name: &str) -> Pid {
        let mut svm = Process::new(&self.hw.topology, self.hw.xnack_default);
        let pid = Pid(self.procs.len());
        svm.set_pid(u32::try_from(pid.0 + 1000).unwrap_or(u32::MAX));
        svm.configure(self.config.clone(), self.policy.make());
        let mut mm = AddressSpace::new();
        *mm.pages_mut() = self.store();
        let shadow = self.new_shadow();
        self.mmu
            .pts
            .push(vec![PageTable::default(); self.hw.gpus.len()]);
        self.mmu.tlb_gens.push(vec![0; self.hw.gpus.len()]);
        self.procs.push(SimProcess {
            name: name.to_owned(),
            mm,
            svm,
            shadow,
            mmap_lock: MmapLock::default(),
            svms_lock_until: 0,
            cow_parent: None,
            traffic: crate::traffic::Traffic::default(),
        });
        self.refresh_access_counters();
        pid
    }

    /// `fork()`: a child process named `name` gets a copy of `parent`'s
    /// address space. Its anonymous private pages in system memory are
    /// shared copy-on-write; the first write of either side breaks the
    /// sharing of that page. Like kfd, the child has no SVM state (it has
    /// not opened the device). Steps, as `copy_page_range` takes them:
    /// 1. the VMAs and their bytes are copied (pages shared by reference);
    /// 2. each private writable anonymous VMA of the parent is write
    ///    protected, an MMU notifier over it (`MMU_NOTIFY_PROTECTION_PAGE`)
    ///    that kfd serves with `svm_range_evict`: XNACK on, the GPUs lose
    ///    those pages and refault; XNACK off, the queues stop until the
    ///    restore work, whose revalidation faults the pages in for writing
    ///    and so breaks the sharing of every page it maps.
    ///
    /// A page of the parent's in VRAM (a device-private entry, which the
    /// kernel shares with the child and migrates on the child's first touch)
    /// is copied to the child at once: svmsim does not model a child's
    /// fault on a parent's device page.
    pub fn fork(&mut self, parent: Pid, name: &str) -> Pid {
        self.record(|| TraceEvent::Fork {
            pid: Self::record_pid(parent),
            name: name.into(),
        });
        let child = self.spawn_unrecorded(name);
        // 1.
        let mut mm = self.procs[parent.0].mm.fork();
        let in_vram: Vec<PageNum> = self.procs[parent.0]
            .svm
            .ranges()
            .iter()
            .flat_map(|r| r.range().pages())
            .filter(|&p| self.procs[parent.0].svm.page_in_vram(p))
            .collect();
        for p in in_vram {
            let bytes = self.page_bytes(parent, p);
            mm.pages_mut().write(p.va().raw(), &bytes);
        }
        let shadow = self.procs[parent.0].shadow.clone();
        let cow_vmas: Vec<PageRange> = self.procs[parent.0]
            .mm
            .vmas()
            .filter(|v| v.backing == Backing::Anon && v.prot.write)
            .map(|v| v.range)
            .collect();
        let shared: std::collections::BTreeSet<u64> = {
            let pm = &self.procs[parent.0].mm;
            pm.pages()
                .page_numbers()
                .filter(|&n| cow_vmas.iter().any(|r| r.contains(PageNum::new(n))))
                .collect()
        };
        for &n in &shared {
            self.procs[parent.0].mm.cow_share(n);
        }
        let c = &mut self.procs[child.0];
        c.mm = mm;
        c.shadow = shadow;
        c.cow_parent = Some((parent.0, shared));
        // 2.
        for range in cow_vmas {
            self.op(parent, |svm, env| svm.cpu_invalidate(env, range));
        }
        self.after_op();
        child
    }

    /// All processes in pid order.
    pub fn processes(&self) -> impl Iterator<Item = (Pid, &SimProcess)> {
        self.procs.iter().enumerate().map(|(i, p)| (Pid(i), p))
    }

    /// One process.
    ///
    /// # Panics
    /// If `pid` did not come from this machine.
    pub fn process(&self, pid: Pid) -> &SimProcess {
        &self.procs[pid.0]
    }

    /// A process's page table on each GPU.
    pub fn page_tables(&self, pid: Pid) -> &[PageTable] {
        &self.mmu.pts[pid.0]
    }

    /// Whether a retry fault waits in some GPU's ring.
    pub fn faults_pending(&self) -> bool {
        self.mmu.rings.iter().any(|r| !r.is_empty())
    }

    /// Process settings that are not syscalls (policy, DMA unmap mode).
    pub fn process_mut(&mut self, pid: Pid) -> &mut Process {
        &mut self.procs[pid.0].svm
    }

    /// `mmap`. With `fixed`, replaced pages go through the munmap notifier.
    ///
    /// # Errors
    /// See [`AddressSpace::mmap`].
    pub fn mmap(
        &mut self,
        pid: Pid,
        fixed: Option<CpuVa>,
        len: u64,
        prot: Prot,
        backing: Backing,
        mark: Mark,
    ) -> Result<PageRange, MmError> {
        // The notifier runs while the old VMAs still exist, before the new
        // mapping replaces them, so the engine can still see them.
        if let Some(addr) = fixed
            && addr.is_page_aligned()
            && let Some(end) = page_end(addr, len)
        {
            let r = PageRange::new(addr.page_num(), end.page_num());
            self.notify_unmap(pid, r);
        }
        let range = self.procs[pid.0]
            .mm
            .mmap(fixed, len, prot, backing, mark)?
            .0;
        self.after_op();
        self.record(|| TraceEvent::Mmap {
            pid: Self::record_pid(pid),
            addr: range.start_va().raw(),
            len: range.npages().bytes(),
            prot: u8::from(prot.read) | u8::from(prot.write) << 1 | u8::from(prot.exec) << 2,
            mark: match mark {
                Mark::None => 0,
                Mark::Heap => 1,
                Mark::Stack => 2,
            },
        });
        Ok(range)
    }

    fn notify_unmap(&mut self, pid: Pid, range: PageRange) {
        self.op(pid, |svm, env| svm.unmap_from_cpu(env, range));
        self.procs[pid.0]
            .shadow
            .drop_range(range.start().raw(), range.end().raw());
    }

    /// `munmap`: the MMU notifier's UNMAP drops the SVM pages, then the VMAs go.
    ///
    /// # Errors
    /// See [`AddressSpace::munmap`].
    pub fn munmap(&mut self, pid: Pid, addr: CpuVa, len: u64) -> Result<(), MmError> {
        // Check the request the way munmap does before notifying anyone.
        let mut probe = AddressSpace::new();
        probe.munmap(addr, len)?;
        let end = page_end(addr, len).expect("checked by munmap");
        self.notify_unmap(pid, PageRange::new(addr.page_num(), end.page_num()));
        let r = self.procs[pid.0].mm.munmap(addr, len).map(drop);
        if let Some(tl) = self.rec.timeline.as_deref_mut() {
            tl.moved(timeline::PageMove {
                at_ns: self.sched.clock_ns,
                pid: pid.0,
                page: addr.page_num().raw(),
                npages: end.page_num().raw() - addr.page_num().raw(),
                to: timeline::Place::Gone,
            });
        }
        self.after_op();
        self.record(|| TraceEvent::Munmap {
            pid: Self::record_pid(pid),
            addr: addr.raw(),
            len,
        });
        r
    }

    /// `mprotect`; GPUs lose their mappings of the pages, which fault back
    /// with the new permission.
    ///
    /// # Errors
    /// See [`AddressSpace::mprotect`].
    pub fn mprotect(&mut self, pid: Pid, addr: CpuVa, len: u64, prot: Prot) -> Result<(), MmError> {
        let r = self.procs[pid.0].mm.mprotect(addr, len, prot);
        // The notifier covers the VMAs that changed: all of them, or those
        // before the hole that stopped the walk.
        let changed_end = match &r {
            Ok(()) => page_end(addr, len).map(CpuVa::page_num),
            Err(MmError::NotMapped(hole)) => Some(*hole),
            Err(_) => None,
        };
        if let Some(end) = changed_end
            && addr.is_page_aligned()
            && end > addr.page_num()
        {
            self.op(pid, |svm, env| {
                svm.cpu_invalidate(env, PageRange::new(addr.page_num(), end));
            });
        }
        r
    }

    /// `madvise(MADV_DONTNEED)`: the pages are dropped and read as zero
    /// afterwards, wherever they were (see `Process::cpu_zap`).
    ///
    /// # Errors
    /// EINVAL for a misaligned address; ENOMEM when a page is not mapped.
    pub fn madvise_dontneed(&mut self, pid: Pid, addr: CpuVa, len: u64) -> Result<(), MmError> {
        if !addr.is_page_aligned() {
            return Err(MmError::Misaligned(addr));
        }
        let end = page_end(addr, len).ok_or(MmError::NotMapped(addr.page_num()))?;
        let range = PageRange::new(addr.page_num(), end.page_num());
        let mut page = range.start();
        while page < range.end() {
            let vma = self.procs[pid.0]
                .mm
                .vma_at(page)
                .ok_or(MmError::NotMapped(page))?;
            page = vma.range.end();
        }
        self.op(pid, |svm, env| svm.cpu_zap(env, range));
        let p = &mut self.procs[pid.0];
        p.mm.pages_mut()
            .drop_range(range.start().raw(), range.end().raw());
        p.mm.cow_forget(range);
        p.shadow.drop_range(range.start().raw(), range.end().raw());
        Ok(())
    }

    /// `AMDKFD_IOC_SVM`.
    ///
    /// # Errors
    /// See `svm_core::process::Process::svm_ioctl`.
    pub fn svm_ioctl(&mut self, pid: Pid, args: &mut SvmArgs) -> Result {
        // `svm_range_list_lock_and_flush_work`: the deferred work, and the
        // fault drain it waits for, run first.
        if args.op == svm_core::uapi::SVM_OP_SET_ATTR {
            self.record(|| TraceEvent::SetAttr {
                pid: Self::record_pid(pid),
                addr: args.start_addr,
                size: args.size,
                attrs: args.attrs.iter().map(|a| (a.ty, a.value)).collect(),
            });
        }
        self.flush_deferred(pid);
        self.op(pid, |svm, env| svm.svm_ioctl(env, args))
    }

    /// GET_ATTR through shared access: the same answers as [`Machine::svm_ioctl`]
    /// with `SVM_OP_GET_ATTR`, without touching the machine.
    ///
    /// # Errors
    /// See `svm_core::process::Process::get_attr_ioctl`.
    pub fn svm_get_attr(
        &self,
        pid: Pid,
        start_addr: u64,
        size: u64,
        attrs: &mut [SvmAttribute],
    ) -> Result {
        let p = &self.procs[pid.0];
        let range = Process::ioctl_range(start_addr, size)?;
        p.svm.get_attr_ioctl(&MmView(&p.mm), range, attrs)
    }

    /// `AMDKFD_IOC_SET_XNACK_MODE`.
    ///
    /// # Errors
    /// See `svm_core::process::Process::set_xnack_mode`.
    pub fn set_xnack_mode(&mut self, pid: Pid, value: i32) -> Result<i32> {
        self.record(|| TraceEvent::SetXnack {
            pid: Self::record_pid(pid),
            value,
        });
        self.op(pid, |svm, env| svm.set_xnack_mode(env, value))
    }

    /// `AMDKFD_IOC_CREATE_QUEUE` on the GPU with this gpu_id.
    ///
    /// # Errors
    /// EINVAL for an unknown GPU.
    pub fn create_queue(&mut self, pid: Pid, gpu_id: u32) -> Result<QueueId> {
        self.procs[pid.0].svm.create_queue(gpu_id)
    }

    /// `AMDKFD_IOC_DESTROY_QUEUE`.
    ///
    /// # Errors
    /// EINVAL for an unknown queue.
    pub fn destroy_queue(&mut self, pid: Pid, queue: u32) -> Result {
        self.procs[pid.0].svm.destroy_queue(queue)
    }

    /// The index of the GPU with this kfd gpu_id.
    fn gpu_index(&self, gpu_id: u32) -> Option<GpuIndex> {
        let g = self
            .hw
            .gpus
            .iter()
            .position(|x| x.desc.id.raw() == gpu_id)?;
        Some(GpuIndex::new(g).expect("at most 64 GPUs"))
    }

    /// Forces VRAM pressure on a GPU, as another TTM client allocating
    /// there would: SVM buffers on it are evicted, least recently used first
    /// across every process, until `need_bytes` of VRAM are free (every SVM
    /// buffer on the GPU when `None`). Each eviction is the owner's own
    /// eviction worker (`svm_range_evict_svm_bo_worker`): its ranges go back
    /// to system memory whole, with TTM_EVICTION migrations and, XNACK off,
    /// a queue eviction. Returns the buffers evicted.
    ///
    /// # Errors
    /// [`AccessError::NoGpu`] for an unknown GPU.
    pub fn evict_vram(&mut self, gpu_id: u32, need_bytes: Option<u64>) -> Result<u64, AccessError> {
        let gpu = self.gpu_index(gpu_id).ok_or(AccessError::NoGpu(gpu_id))?;
        let g = gpu.get();
        let need_pages = need_bytes.map(|b| b.div_ceil(PAGE_SIZE));
        let mut evicted = 0;
        while need_pages.is_none_or(|n| self.hw.gpus[g].vram.buddy().free_pages() < n) {
            // The run's eviction order, as an SVM allocation would choose
            // (no process asks, so every buffer is another's).
            let all = self
                .procs
                .iter()
                .enumerate()
                .flat_map(|(i, p)| p.svm.eviction_candidates(gpu, Owner::Other(i)));
            let Some(Candidate {
                owner: Owner::Other(i),
                kind,
                bo,
                ..
            }) = self.config.victim_policy.pick(all)
            else {
                break;
            };
            let t0 = self.sched.clock_ns;
            let Ok(pages) = self.op(Pid(i), |svm, env| svm.evict_buffer(env, kind, bo)) else {
                // The victim's eviction stopped (an injected failure): it
                // would be picked again, so the pressure gives up.
                break;
            };
            let ns = self.sched.clock_ns.saturating_sub(t0);
            let gpu_id = self.hw.gpus[g].desc.id.raw();
            self.hw.evictions.note(gpu_id, None, i, pages, ns);
            evicted += 1;
        }
        Ok(evicted)
    }

    /// Allocates a KFD VRAM buffer of `bytes` on GPU `gpu_id` for process
    /// `pid` (what hipMalloc does: `AMDKFD_IOC_ALLOC_MEMORY_OF_GPU` with
    /// the VRAM flag, placed at once). It holds the KFD VRAM limit for its
    /// lifetime and sits on the GPU's LRU beside SVM's buffers, so either
    /// may evict the other (see `svm_core::process::KfdBo`). Returns its
    /// handle.
    ///
    /// # Errors
    /// EINVAL for an unknown GPU or a bad size; ENOMEM when the KFD VRAM
    /// limit or VRAM cannot hold it.
    pub fn alloc_vram_bo(&mut self, pid: Pid, gpu_id: u32, bytes: u64) -> Result<u64, Error> {
        self.record(|| TraceEvent::AllocBo {
            pid: Self::record_pid(pid),
            gpu_id,
            bytes,
        });
        let r = self.op(pid, |svm, env| svm.alloc_memory_of_gpu(env, gpu_id, bytes));
        self.after_op();
        r
    }

    /// Frees a KFD VRAM buffer (`AMDKFD_IOC_FREE_MEMORY_OF_GPU`).
    ///
    /// # Errors
    /// EINVAL for an unknown handle.
    pub fn free_vram_bo(&mut self, pid: Pid, handle: u64) -> Result<(), Error> {
        self.record(|| TraceEvent::FreeBo {
            pid: Self::record_pid(pid),
            handle,
        });
        let r = self.op(pid, |svm, env| svm.free_memory_of_gpu(env, handle));
        self.after_op();
        r
    }

    /// Process exit: the SVM state goes, then the address space.
    pub fn exit(&mut self, pid: Pid) {
        self.record(|| TraceEvent::Exit {
            pid: Self::record_pid(pid),
        });
        // `svm_range_list_fini`: pending faults are drained (dropped: the
        // process is gone) and in-flight accesses die with it.
        self.cancel_process_work(pid);
        self.cancel_kernels(pid);
        self.op(pid, |svm, env| svm.exit(env));
        // A fork child's pages stop being shared with its parent.
        if let Some((parent, shared)) = self.procs[pid.0].cow_parent.take() {
            for n in shared {
                self.procs[parent].mm.cow_unshare(n);
            }
        }
        let (store, shadow) = (self.store(), self.new_shadow());
        let p = &mut self.procs[pid.0];
        p.mm = AddressSpace::new();
        *p.mm.pages_mut() = store;
        p.shadow = shadow;
    }

    /// A CPU reads (`data` is `None`) or writes `data` at `addr`, through
    /// the one CPU path (`Machine::cpu_io`). Returns the bytes read.
    ///
    /// # Errors
    /// See [`Machine::cpu_io`].
    pub fn cpu_access(
        &mut self,
        pid: Pid,
        addr: CpuVa,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<Vec<u8>, AccessError> {
        if addr.raw().checked_add(len).is_none() || data.is_some_and(|d| d.len() as u64 != len) {
            return Err(AccessError::OutOfRange { addr, len });
        }
        match data {
            Some(d) => {
                self.cpu_io(
                    pid,
                    addr,
                    len,
                    CpuIo::Write(&mut |off, part| {
                        let off = usize::try_from(off).unwrap_or(0);
                        part.copy_from_slice(&d[off..off + part.len()]);
                    }),
                )?;
                Ok(Vec::new())
            }
            None => {
                // Reserved once, before anything moves: growing it page by
                // page would double it, and the peak RSS with it.
                let mut out = access_buffer(addr, len)?;
                self.cpu_io(
                    pid,
                    addr,
                    len,
                    CpuIo::Read(&mut |_, part| {
                        out.extend_from_slice(part);
                    }),
                )?;
                Ok(out)
            }
        }
    }

    /// A CPU access of `len` bytes at `addr`, its bytes made or seen a
    /// page's part at a time, so that a large one needs no buffer of its
    /// size: the VMAs first, then pages in VRAM fault back to system
    /// memory (`Machine::cpu_fault_in`), then the bytes, page by page in
    /// address order (each part with its offset from `addr`). The caller
    /// waits for it: the clock moves to its end.
    ///
    /// # Errors
    /// [`AccessError::Signal`]: SIGSEGV for a page the VMA does not allow
    /// (nothing migrates, no byte moves), SIGBUS when the migration back
    /// fails.
    pub fn cpu_io(
        &mut self,
        pid: Pid,
        addr: CpuVa,
        len: u64,
        mut io: CpuIo<'_>,
    ) -> Result<(), AccessError> {
        if addr.raw().checked_add(len).is_none() {
            return Err(AccessError::OutOfRange { addr, len });
        }
        let write = !matches!(io, CpuIo::Read(_));
        self.record(|| TraceEvent::Cpu {
            pid: Self::record_pid(pid),
            addr: addr.raw(),
            len,
            write,
        });
        let end = self.cpu_fault_in(pid, addr, len, write, self.sched.clock_ns)?;
        self.sched.clock_ns = self.sched.clock_ns.max(end);
        // The access returns to user space: its faults' page references
        // are gone before anything else the caller does.
        for g in 0..self.hw.gpus.len() {
            self.put_held_pages(g, end);
        }
        let phantom = self.hw.phantom;
        let p = &mut self.procs[pid.0];
        let mut part = [0u8; PAGE_BYTES];
        let mut done = 0u64;
        while done < len {
            let at = addr.raw() + done;
            let (n, off) = (at / PAGE_SIZE, (at % PAGE_SIZE) as usize);
            let k = (PAGE_BYTES - off).min(usize::try_from(len - done).unwrap_or(usize::MAX));
            match &mut io {
                // A phantom store drops the bytes: only that the page was
                // written counts, so none are made.
                CpuIo::Write(_) | CpuIo::Repeat(_) if phantom => {
                    p.mm.pages_mut().write(at, &ZERO_PAGE[..k]);
                }
                CpuIo::Repeat(f) => {
                    // Byte `j` of the part is byte `(done + j) % 4` of
                    // its word: a page's first word is the word rotated.
                    let word = f(done);
                    let phase = (done % 4) as u32;
                    if k == PAGE_BYTES {
                        let first = word.rotate_right(8 * phase);
                        p.shadow.fill_host(p.mm.pages_mut(), n, first);
                    } else {
                        let bytes = word.to_le_bytes();
                        for (j, b) in part[..k].iter_mut().enumerate() {
                            *b = bytes[(j + phase as usize) % 4];
                        }
                        p.shadow.write_host(p.mm.pages_mut(), at, &part[..k]);
                    }
                }
                CpuIo::Write(f) => {
                    f(done, &mut part[..k]);
                    p.shadow.write_host(p.mm.pages_mut(), at, &part[..k]);
                }
                // Seen where it lies: no copy.
                CpuIo::Read(f) => match p.mm.pages().page(n) {
                    Some(page) => f(done, &page[off..off + k]),
                    None => f(done, &ZERO_PAGE[..k]),
                },
            }
            done += k as u64;
        }
        Ok(())
    }

    /// The CPU path of an access of `len` bytes at `addr` that starts at
    /// `at` (the caller's clock, or a CPU thread's): what the CPU's page
    /// fault does before the bytes can move. Returns when it is done.
    ///
    /// 1. Every page's VMA must exist, allow the access (`PROT_WRITE` for a
    ///    write, `PROT_READ` for a read) and not be device memory
    ///    (`AddressSpace::check_access`); otherwise the access is a SIGSEGV
    ///    and nothing has moved (the kernel resolves
    ///    the VMA before `svm_migrate_to_ram` is ever called, so a write
    ///    to a read-only range in VRAM does not migrate it first).
    /// 2. Each page in VRAM faults back to system memory: the window
    ///    around it migrates (`svm_migrate_to_ram`), on this access's
    ///    clock, holding the mmap lock for reading (after its writers).
    ///    A failure is a SIGBUS.
    /// 3. Each page then costs a host access.
    ///
    /// # Errors
    /// [`AccessError::Signal`], as above.
    pub(super) fn cpu_fault_in(
        &mut self,
        pid: Pid,
        addr: CpuVa,
        len: u64,
        write: bool,
        at: u64,
    ) -> Result<u64, AccessError> {
        if len == 0 {
            return Ok(at);
        }
        let last = addr
            .checked_add(len - 1)
            .ok_or_else(|| AccessError::Signal {
                kind: "SIGSEGV",
                addr,
                why: "address wraps".into(),
            })?;
        let pages = PageRange::new(addr.page_num(), PageNum::new(last.page_num().raw() + 1));
        // 1.
        self.procs[pid.0]
            .mm
            .check_access(addr.raw(), len, write)
            .map_err(|e| AccessError::Signal {
                kind: "SIGSEGV",
                addr: match &e {
                    MmError::Segv { page, .. } => page.va().max(addr),
                    _ => addr,
                },
                why: e.to_string(),
            })?;
        // 2.-3.
        let per_page = crate::timing::ns(self.hw.timing.cpu_access_ns);
        let mut t = at;
        if write {
            // UVM revokes the CPU's write access to read-duplicated
            // pages: the write's fault drops the copies first.
            if !self.procs[pid.0].svm.duplicates().is_empty() {
                let (svm, mut env) = env!(self, pid);
                env.now = t;
                svm.collapse_duplicates(&mut env, pages, None);
                t = env.now;
            }
            self.cow_write(pid, pages);
        }
        for page in pages.pages() {
            if self.procs[pid.0].svm.page_in_vram(page) {
                self.hw.counters.cpu_faults += 1;
                // do_swap_page holds the faulting device page from before
                // `migrate_to_ram` until its `put_page` after it returns.
                let held = self.vram_page_of(pid, page);
                let faulted_at = t;
                // Xe's atomic timeslice: the fault returns at once and the
                // CPU faults again until it expires (no lock held meanwhile).
                if let Some(until) = self.procs[pid.0].svm.cpu_hold_until(page)
                    && until > t
                {
                    self.hw.counters.cpu_timeslice_wait_ns += until - t;
                    t = until;
                }
                // UVM's thrashing throttle on a CPU fault: the thread sleeps
                // out the nap, then retries (the lock is not held).
                if let Some(until) = self.procs[pid.0].svm.cpu_fault_throttle(page, t)
                    && until > t
                {
                    self.hw.counters.cpu_throttle_wait_ns += until - t;
                    t = until;
                }
                let start = self.procs[pid.0].mmap_lock.read_from(t);
                // `svm_migrate_to_ram` holds the range's migrate lock
                // (`prange->migrate_mutex`) for the migration: CPU faults on
                // one range, from however many threads, run one at a time.
                let (range, start) = self.migrate_lock_from(pid.0, page, start);
                let (svm, mut env) = env!(self, pid);
                env.now = start;
                let r = svm.migrate_to_ram(&mut env, page);
                t = env.now;
                self.migrate_lock_until(pid.0, range, t);
                if let Some((g, vpage)) = held {
                    self.hw.gpus[g].held_pages.insert(vpage, t);
                }
                let p = &mut self.procs[pid.0];
                p.mmap_lock.read_done(t);
                if let Some(tl) = self.rec.timeline.as_deref_mut() {
                    tl.cpu_faults.push(timeline::CpuFaultSpan {
                        pid: pid.0,
                        page: page.raw(),
                        write,
                        start_ns: faulted_at,
                        end_ns: t,
                        wait_ns: start.saturating_sub(faulted_at),
                    });
                }
                r.map_err(|e| AccessError::Signal {
                    kind: "SIGBUS",
                    addr: page.va().max(addr),
                    why: e.to_string(),
                })?;
            }
            t += per_page;
        }
        Ok(t)
    }

    /// A CPU write by `pid` over `pages` breaks copy-on-write sharing with
    /// fork relatives. Its own shared pages get a new page each
    /// (`wp_page_copy`), an MMU notifier on the old one
    /// (`MMU_NOTIFY_CLEAR`), which kfd serves with `svm_range_evict`. A
    /// child's write leaves its parent the page's only user: the parent's
    /// next write reuses it in place (`wp_page_reuse`), with no notifier.
    fn cow_write(&mut self, pid: Pid, pages: PageRange) {
        let p = &mut self.procs[pid.0];
        let broke: Vec<PageNum> = pages.pages().filter(|n| p.mm.cow_break(n.raw())).collect();
        if let Some((parent, shared)) = &mut p.cow_parent {
            let parent = *parent;
            let mine: Vec<u64> = pages
                .pages()
                .map(|n| n.raw())
                .filter(|n| shared.remove(n))
                .collect();
            for n in mine {
                self.procs[parent].mm.cow_unshare(n);
            }
        }
        for n in broke {
            let one = PageRange::new(n, PageNum::new(n.raw() + 1));
            self.op(pid, |svm, env| svm.cpu_invalidate(env, one));
        }
    }

    /// The GPU and VRAM page that hold virtual page `page` of `pid`, if
    /// it is in VRAM.
    fn vram_page_of(&self, pid: Pid, page: PageNum) -> Option<(usize, u64)> {
        let p = &self.procs[pid.0];
        let r = p.svm.ranges().find(page)?;
        if !r.vram.get(r.index(page)) {
            return None;
        }
        let bref = r.bo?;
        let bo = p.svm.bo(bref.id)?;
        let g = bo.gpu.get();
        let vpage = self.hw.gpus[g]
            .bufs
            .get(&bo.buf.0)?
            .page(bref.offset + r.index(page))?;
        Some((g, vpage))
    }

    /// do_swap_page's `put_page` for the device pages CPU faults held on
    /// `gpu` whose faults have returned by `now`. A count a migration
    /// reset meanwhile drops to 0 under a page in use: `folio_free` runs
    /// on it and its buffer's count goes one short (the 2025 race).
    pub(super) fn put_held_pages(&mut self, gpu: usize, now: u64) {
        let g = &mut self.hw.gpus[gpu];
        let due: Vec<u64> = g
            .held_pages
            .iter()
            .filter(|&(_, &t)| t <= now)
            .map(|(&v, _)| v)
            .collect();
        for vpage in due {
            g.held_pages.remove(&vpage);
            if g.refcount_reset.remove(&vpage) {
                self.hw.refcount_violations.push(format!(
                    "{}: VRAM page {vpage:#x} was reused by a migration while a CPU fault still \
                     held it; the fault's put_page dropped its count to 0 under the new data \
                     (folio_free on a page in use, the buffer's count one short: the 2025 \
                     svm_bo refcount race, fixed by taking a reference instead of \
                     zone_device_page_init)",
                    g.desc.name
                ));
            }
        }
    }

    /// Device-page reference counts that went wrong, for the checker.
    pub fn refcount_violations(&self) -> &[String] {
        &self.hw.refcount_violations
    }

    /// When the earliest held device page is put.
    pub(super) fn next_page_put(&self) -> Option<(usize, u64)> {
        self.hw
            .gpus
            .iter()
            .enumerate()
            .filter_map(|(g, x)| x.held_pages.values().min().map(|&t| (g, t)))
            .min_by_key(|&(_, t)| t)
    }

    /// The bytes of page `page` of process `pid` wherever they live now,
    /// without faulting anything: for checkers and reports.
    pub fn page_bytes(&self, pid: Pid, page: PageNum) -> [u8; PAGE_BYTES] {
        self.page_ref(pid, page).copied().unwrap_or([0; PAGE_BYTES])
    }

    /// The bytes of `page` where they live, lent, or `None` when the page
    /// reads as zero: what [`Machine::page_bytes`] copies, without the copy.
    pub fn page_ref(&self, pid: Pid, page: PageNum) -> Option<&[u8; PAGE_BYTES]> {
        let (store, n) = self.page_home(pid, page);
        store.page(n)
    }

    /// The digest of `page` where it lives (`crate::shadow`), kept by its
    /// store while the page does not change: what the bytes checker
    /// compares, for every page after every step.
    pub fn page_digest(&self, pid: Pid, page: PageNum) -> u64 {
        let (store, n) = self.page_home(pid, page);
        store.digest(n)
    }

    /// The store that holds `page` now, and its number there: a VRAM page
    /// if its range says it is in VRAM, else the process's host page.
    fn page_home(&self, pid: Pid, page: PageNum) -> (&PageStore, u64) {
        let p = &self.procs[pid.0];
        if let Some(r) = p.svm.ranges().find(page)
            && r.vram.get(r.index(page))
        {
            let bref = r.bo.expect("a range with VRAM pages has a buffer");
            let bo = p.svm.bo(bref.id).expect("the buffer is in the table");
            let g = &self.hw.gpus[bo.gpu.get()];
            let vpage = g.bufs[&bo.buf.0]
                .page(bref.offset + r.index(page))
                .expect("page inside buffer");
            return (g.vram.store(), vpage);
        }
        (p.mm.pages(), page.raw())
    }

    /// Live DMA mappings of each GPU, by (gpu index, bus address) → (process index, page).
    pub fn dma_mappings(&self) -> BTreeMap<(usize, u64), (usize, PageNum)> {
        let mut out = BTreeMap::new();
        for (g, gpu) in self.hw.gpus.iter().enumerate() {
            for (&a, &v) in &gpu.iommu {
                out.insert((g, a), v);
            }
        }
        out
    }
}

/// The read-only [`Platform`] view GET_ATTR needs.
struct MmView<'a>(&'a AddressSpace);

impl Platform for MmView<'_> {
    fn vma_at(&self, page: PageNum) -> Option<VmaInfo> {
        self.0.vma_info(page)
    }

    fn host_holds(&self, page: PageNum) -> bool {
        self.0.pages().is_populated(page.raw())
    }

    fn reserve_mem_limit(&mut self, _bytes: u64) -> Result {
        unreachable!("GET_ATTR reserves no memory")
    }

    fn unreserve_mem_limit(&mut self, _bytes: u64) {
        unreachable!("GET_ATTR reserves no memory")
    }

    fn fault_in(&mut self, _page: PageNum, _write: bool) -> bool {
        unreachable!("GET_ATTR maps nothing")
    }
}

impl Machine {
    /// DMA entries of `gpu_id` in process `pid` whose page has moved since the
    /// entry was written: a system mapping of a page now in VRAM, or a VRAM
    /// address that is no longer the page's (the seed thread's GPU1/GPU2 case).
    pub fn stale_dma(&self, pid: Pid, gpu_id: u32) -> u64 {
        self.stale_dma_in(
            pid,
            gpu_id,
            PageRange::new(PageNum::new(0), PageNum::new(u64::MAX)),
        )
    }

    /// [`Machine::stale_dma`] for the ranges that overlap `window`.
    pub fn stale_dma_in(&self, pid: Pid, gpu_id: u32, window: PageRange) -> u64 {
        use svm_core::dma::DmaEntry;
        let Some(gpu) = self.gpu_index(gpu_id) else {
            return 0;
        };
        let p = &self.procs[pid.0];
        p.svm
            .ranges()
            .overlapping(window)
            // A range never mapped on this GPU has no entries to be stale.
            .filter(|r| r.dma.count_set(gpu) > 0)
            .map(|r| {
                let here = |k: u64| -> Option<u64> {
                    let bref = r.bo?;
                    let bo = p.svm.bo(bref.id)?;
                    self.hw.gpus[bo.gpu.get()].bufs[&bo.buf.0]
                        .page(bref.offset + k)
                        .map(|x| x * PAGE_SIZE)
                };
                (0..r.range().npages().raw())
                    .filter(|&k| match r.dma.get(gpu, k) {
                        DmaEntry::Empty => false,
                        DmaEntry::Sys(_) => r.vram.get(k),
                        DmaEntry::Vram(a) => !r.vram.get(k) || here(k) != Some(a),
                    })
                    .count() as u64
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check;

    /// The bytes checker compares every page where it lies with the
    /// shadow, a page that reads as zero on either side included.
    #[test]
    fn the_checker_finds_a_lost_byte_on_either_side() {
        let gpu = svm_core::topology::GpuDesc {
            name: "gpu0".into(),
            id: svm_core::gpu::GpuId::new(0x1002).unwrap(),
            vram_bytes: 16 << 20,
            svm: true,
            xnack: true,
            hive: None,
            apu: false,
            prefer_gtt: false,
            ats: false,
            local_atomics: false,
            gc: svm_core::pte::GcVersion::DEFAULT,
        };
        let fresh = || {
            let mut m = Machine::new(
                Topology::new(vec![gpu.clone()]).unwrap(),
                true,
                MemLimit::for_sysmem(1 << 30),
            );
            let pid = m.spawn("t");
            let base = CpuVa::new(0x7000_0000_0000);
            m.mmap(
                pid,
                Some(base),
                1 << 20,
                Prot::RW,
                Backing::Anon,
                Mark::None,
            )
            .unwrap();
            m.cpu_access(pid, base, 8192, Some(&[7; 8192])).unwrap();
            check::check(&m).unwrap();
            (m, pid, base.raw())
        };
        // The page changed behind the shadow's back.
        let (mut m, pid, base) = fresh();
        m.procs[pid.0].mm.pages_mut().write(base + 5, &[9]);
        assert_eq!(check::check(&m).unwrap_err().checker, "bytes");
        // A page the process wrote, lost (it would read as zero).
        let (mut m, pid, base) = fresh();
        m.procs[pid.0]
            .mm
            .pages_mut()
            .drop_range(base / 4096 + 1, base / 4096 + 2);
        assert_eq!(check::check(&m).unwrap_err().checker, "bytes");
        // A page never written that holds bytes.
        let (mut m, pid, base) = fresh();
        m.procs[pid.0].mm.pages_mut().write(base + 3 * 4096, &[1]);
        assert_eq!(check::check(&m).unwrap_err().checker, "bytes");
        // A page in VRAM: GPU stores keep the check holding; a byte of the
        // page changed behind the model's back does not, even after a
        // store covers it again.
        let (mut m, pid, base) = fresh();
        let mut args = svm_core::uapi::SvmArgs {
            start_addr: base,
            size: 1 << 20,
            op: svm_core::uapi::SVM_OP_SET_ATTR,
            attrs: vec![svm_core::uapi::SvmAttribute::new(
                svm_core::uapi::attr_type::PREFETCH_LOC,
                0x1002,
            )],
        };
        m.svm_ioctl(pid, &mut args).unwrap();
        let (g, vpage) = m.vram_page_of(pid, PageNum::new(base / 4096)).unwrap();
        m.gpu_access(pid, 0x1002, CpuVa::new(base + 8), 8, Some(&[3; 8]))
            .unwrap();
        check::check(&m).unwrap();
        m.hw.gpus[g].vram.write(vpage * 4096 + 100, &[0xee]);
        assert_eq!(check::check(&m).unwrap_err().checker, "bytes");
        m.gpu_access(pid, 0x1002, CpuVa::new(base + 96), 16, Some(&[7; 16]))
            .unwrap();
        assert_eq!(check::check(&m).unwrap_err().checker, "bytes");
    }
}

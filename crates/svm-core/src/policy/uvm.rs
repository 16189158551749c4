//! NVIDIA UVM's fault service, as driver 595.45.04 does it
//! (`docs/research/uvm.md` §1-3): the `uvm` policy, and the heart of the
//! `uvm` driver.
//!
//! A batch of faults is sorted by GPU, page and access type (writes
//! first) and grouped by 2 MiB block: each block is served once per
//! batch, with every fault of the batch on it (`service_fault_batch`,
//! `service_fault_batch_block`). The block's faulted pages go to one
//! destination: the preferred location if the range has one, else the
//! faulting GPU's VRAM (`uvm_va_block_select_residency` without
//! accessed-by or read duplication). To them the density prefetch adds
//! the block's pages its bitmap tree calls dense
//! ([`super::uvm_prefetch`]), and every run of the union is migrated and
//! mapped in one service (`FaultPlan::serve_runs`).
//!
//! A block resident nowhere (no page in VRAM or in system memory) whose
//! destination is its preferred location is filled whole on its first
//! fault (PF:404-412).
//!
//! Thrashing ([`super::uvm_thrashing`], knob `uvm_thrashing`): every
//! migration of a fault, a CPU fault or a prefetch is an event; a faulted
//! page that thrashes is throttled (left unserved for a nap: the GPU
//! retries) or pinned, and a pinned page is mapped where it is pinned,
//! remotely if that is elsewhere, until its 150 ms are up. Thrashing
//! pages are never prefetched.
//!
//! Memory advice (§5.1): the preferred location is the destination when
//! the faulting GPU can map it there, else the faulting GPU without
//! prefetch; ACCESS_IN_PLACE stands for AccessedBy (pages the GPU can
//! reach stay where they are and are mapped there).
//!
//! ATS (a GPU that reaches system memory through the CPU's page tables,
//! as a Grace Hopper's does; `FaultCtx::ats`): a fault migrates only the
//! pages no one holds yet (`uvm_ats_service_faults` with `skip_mapped`:
//! first touch populates on the GPU) and maps the block's pages the CPU
//! holds where they are. The GPU's access counters (on by default only
//! there, knob `uvm_access_counter_migration`) count its remote accesses
//! per 2 MiB region; at 256 (`uvm_access_counter_threshold`) the region's
//! pages come to the GPU ([`FaultPolicy::on_access_counter`]).
//!
//! ReadMostly (the range's GPU_READ_MOSTLY flag, knob
//! `uvm_read_duplication`): a read is served by read-only copies on the
//! faulting GPU ([`FaultPlan::Duplicate`], `process/dup.rs`), the pages
//! left where they are; a write anywhere drops the copies first.
//!
//! Not modelled yet (each named in issue 19): a CPU
//! fault's own throttle (CPU
//! faults migrate as kfd's do, and count as thrashing events). kfd's steps
//! before the policy still run: its 2 ms duplicate window drops a fault on
//! a range served less than `retry_fault_pending_ns` ago, which UVM does
//! not have, so the `uvm` driver sets it to 0.

use super::uvm_prefetch::{self, BLOCK_PAGES, Block, BlockMask};
use super::uvm_thrashing::{self, CPU, Hint, Reach, Thrashing};
use super::{
    AccessCounterSpec, BatchFault, BatchStep, Entry, FaultCtx, FaultPlan, FaultPolicy,
    MigrationEvent, PeerLink, PeerView,
};
use crate::addr::{PageNum, PageRange};
use crate::attr::{Location, SvmFlags};
use crate::events::MigrateTrigger;
use crate::gpu::GpuIndex;
use crate::uapi::flag;

/// UVM's policies.
pub(super) static ENTRIES: [Entry; 1] = [Entry {
    name: "uvm",
    about: "NVIDIA UVM (595): each 2 MiB block served once a batch, its faults plus the 51% density prefetch; thrashing pages throttled or pinned",
    fewer_faults: "it reads the fault buffer in batches, coalesces a batch's duplicates and serves each 2 MiB block once a batch, so the faults of one block's pages cost one service",
    make: || Box::new(Uvm::default()),
}];

/// See the module doc.
#[derive(Clone, Debug)]
pub struct Uvm {
    thrashing: Thrashing,
    thrashing_on: bool,
    replay: super::Replay,
    prefetch_on: bool,
    /// Faulted pages throttled, pinned, and pins ended; CPU faults
    /// throttled.
    throttled: u64,
    throttled_cpu: u64,
    pinned: u64,
    unpinned: u64,
    prefetch_threshold: u32,
    access_counters: super::AccessCounters,
    access_counter_threshold: u32,
    read_duplication: bool,
    /// GPUs outside one hive are PCIe peers (`UvmEnablePeerAccess`).
    pcie_peers: bool,
    /// Access-counter notifications served with a plan, and the pages
    /// they migrated.
    notices: u64,
    counter_pages: u64,
}

impl Default for Uvm {
    fn default() -> Self {
        Self {
            thrashing: Thrashing::new(true),
            thrashing_on: true,
            replay: super::Replay::BatchFlush,
            prefetch_on: true,
            throttled: 0,
            throttled_cpu: 0,
            pinned: 0,
            unpinned: 0,
            prefetch_threshold: uvm_prefetch::DEFAULT_THRESHOLD,
            access_counters: super::AccessCounters::Auto,
            access_counter_threshold: 256,
            read_duplication: true,
            pcie_peers: false,
            notices: 0,
            counter_pages: 0,
        }
    }
}

/// The 2 MiB block of the address space that holds `page`.
fn block_of(page: PageNum) -> u64 {
    page.raw() / BLOCK_PAGES as u64
}

/// The GPU index of processor `p`, if it is a GPU.
fn gpu_of(p: u8) -> Option<GpuIndex> {
    GpuIndex::new(usize::from(p.checked_sub(1)?))
}

/// How processor `p` reaches memory of processor `at`: a GPU maps system
/// memory, its own VRAM and its peers' (`accessible_from`, which
/// `enable_peers` in `uvm_va_space.c` fills for NVLink peers at
/// registration and for PCIe peers on `UvmEnablePeerAccess`); the CPU maps
/// only system memory (on PCIe; the coherent CPU mapping VRAM of a C2C
/// system is not modelled).
fn link(peers: PeerView<'_>, p: u8, at: u8) -> PeerLink {
    match (gpu_of(p), gpu_of(at)) {
        _ if p == at => PeerLink::Fast,
        (_, None) => PeerLink::Pcie,
        (Some(a), Some(b)) => peers.link(a, b),
        (None, Some(_)) => PeerLink::None,
    }
}

impl FaultPolicy for Uvm {
    fn name(&self) -> &str {
        "uvm"
    }

    fn configure(&mut self, config: &crate::config::Config) {
        self.thrashing_on = config.uvm_thrashing;
        self.thrashing = Thrashing::new(config.uvm_lapse_vote_bug);
        self.prefetch_on = config.uvm_prefetch;
        self.replay = config.uvm_replay_policy;
        self.prefetch_threshold = u32::from(config.uvm_prefetch_threshold);
        self.access_counters = config.uvm_access_counter_migration;
        self.access_counter_threshold = u32::from(config.uvm_access_counter_threshold);
        self.read_duplication = config.uvm_read_duplication;
        self.pcie_peers = config.uvm_pcie_peers;
    }

    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        let range = ctx.range.range();
        // The va_block: the 2 MiB block of the page, within its range.
        let lo = block_of(ctx.page) * BLOCK_PAGES as u64;
        let first = range.start().raw().max(lo);
        let end = range.end().raw().min(lo + BLOCK_PAGES as u64);
        let pages = usize::try_from(end - first).unwrap_or(BLOCK_PAGES);
        let me = uvm_thrashing::gpu(ctx.gpu.get());
        let reach = |p: u8, at: u8| link(ctx.peers, p, at) != PeerLink::None;
        // Fast access for the thrashing fast path: NVLink peers (a GPU's
        // fast access to system memory over C2C needs the CPU to map VRAM,
        // which is not modelled).
        let fast = |p: u8, at: u8| at != CPU && link(ctx.peers, p, at) == PeerLink::Fast;
        let preferred = match ctx.range.attrs.preferred_loc {
            Some(Location::Sys) => Some(CPU),
            Some(Location::Vram(_)) => ctx.preferred_gpu.map(|g| uvm_thrashing::gpu(g.get())),
            None => None,
        };
        // §5.1 rules 9 and 11: migrate to the preferred location when the
        // faulting GPU can map it there, else to the faulting GPU, and
        // then without prefetch (moving away from the preferred location,
        // §2.2).
        // An atomic fault means the GPU has no native atomics where the
        // page is mapped (`Access::Atomic`): mapping it elsewhere again
        // would only fault again, so it goes to the faulting GPU, whose
        // own VRAM takes atomics, whatever the preferred location
        // (modelled so; rule 11, with rules 7, 9 and a pin skipped).
        let (to, away) = match (ctx.range.attrs.preferred_loc, preferred) {
            (Some(_), _) if ctx.atomic && preferred != Some(me) => {
                (Location::Vram(ctx.gpu_id), true)
            }
            (Some(loc), Some(p)) if reach(me, p) => (loc, false),
            (Some(_), _) => (Location::Vram(ctx.gpu_id), true),
            (None, _) => (Location::Vram(ctx.gpu_id), false),
        };
        // AccessedBy (svmsim's ACCESS_IN_PLACE): the GPU maps the pages
        // where they are when it can reach them (rule 7), unless it is
        // the preferred location (rule 3).
        let accessed_by = !ctx.atomic
            && ctx.range.attrs.access_in_place.contains(ctx.gpu)
            && preferred != Some(me);
        // Pages already on the destination count in the tree. A range's
        // VRAM pages are all on one GPU (`actual_loc`).
        let in_vram = |i: usize| {
            let p = PageNum::new(first + i as u64);
            ctx.range.vram.get(ctx.range.index(p))
        };
        // Where a page of the block is, as a processor.
        let holder = |i: usize| match ctx.range.actual_loc {
            Some(g) if in_vram(i) => uvm_thrashing::gpu(g.get()),
            _ => CPU,
        };
        let mut faulted = BlockMask::EMPTY;
        let mut remote = BlockMask::EMPTY;
        let mut throttled_until: Option<u64> = None;
        for p in std::iter::once(ctx.page).chain(ctx.coalesced.iter().copied()) {
            if !(first..end).contains(&p.raw()) {
                continue;
            }
            let i = usize::try_from(p.raw() - first).unwrap_or(BLOCK_PAGES);
            let hint = if self.thrashing_on {
                let closest = Some(holder(i));
                let reach = Reach {
                    access: &reach,
                    fast: &fast,
                    closest,
                };
                self.thrashing
                    .hint(p.raw(), me, preferred, ctx.now_ns, &reach)
            } else {
                Hint::None
            };
            // (A pin maps in place, which an atomic fault cannot use.)
            let hint = match hint {
                Hint::Pin { .. } if ctx.atomic => Hint::None,
                h => h,
            };
            // Resident somewhere it can reach, for an accessed-by GPU:
            // mapped there.
            let resident = ctx.host.holds(p) || in_vram(i);
            if matches!(hint, Hint::Pin { .. }) {
                self.pinned += 1;
            }
            match hint {
                Hint::None if accessed_by && resident && reach(me, holder(i)) => {
                    remote.set(i);
                }
                Hint::None => faulted.set(i),
                Hint::Throttle { until_ns } => {
                    self.throttled += 1;
                    throttled_until = Some(throttled_until.map_or(until_ns, |t| t.min(until_ns)));
                }
                // Pinned where it is: mapped there, remotely or not.
                Hint::Pin { at } if at == holder(i) => remote.set(i),
                // Pinned at the requester: served as a fault is.
                Hint::Pin { at } if at == me => faulted.set(i),
                // Pinned in system memory while in VRAM: the faulting
                // page moves there alone and is mapped remotely (another
                // fault's page waits for its own fault).
                Hint::Pin { .. } if p == ctx.page => {
                    let page = PageRange::new(p, PageNum::new(p.raw() + 1));
                    return FaultPlan::serve(
                        Some(super::Migration {
                            to: Location::Sys,
                            pages: page,
                        }),
                        page,
                    );
                }
                Hint::Pin { .. } => {}
            }
        }
        if faulted == BlockMask::EMPTY && remote == BlockMask::EMPTY {
            if let Some(until) = throttled_until {
                return FaultPlan::Retry {
                    after_ns: until.saturating_sub(ctx.now_ns),
                };
            }
        }
        let mut resident = BlockMask::EMPTY;
        let mut anywhere = false;
        let on_faulting_gpu = ctx.range.actual_loc == Some(ctx.gpu);
        for i in 0..pages {
            let host = ctx.host.holds(PageNum::new(first + i as u64));
            anywhere |= host || in_vram(i);
            let here = match to {
                Location::Sys => host,
                Location::Vram(id) if id == ctx.gpu_id => on_faulting_gpu && in_vram(i),
                Location::Vram(_) => !on_faulting_gpu && in_vram(i),
            };
            if here {
                resident.set(i);
            }
        }
        let block = Block {
            pages,
            phase: usize::try_from(first % 16).unwrap_or(0),
        };
        let thrashing = if self.thrashing_on {
            self.thrashing
                .thrashing_pages(block_of(ctx.page), first, pages)
        } else {
            BlockMask::EMPTY
        };
        let hint = if faulted == BlockMask::EMPTY || !self.prefetch_on || away {
            BlockMask::EMPTY
        } else if !anywhere && ctx.range.attrs.preferred_loc == Some(to) {
            // First touch of the block, at its preferred location.
            BlockMask::range(0, pages).minus(&faulted)
        } else {
            uvm_prefetch::prefetch(
                block,
                &resident,
                &faulted,
                &thrashing,
                self.prefetch_threshold,
            )
        };
        // For system memory the driver drops the pages the CPU already
        // holds and maps (PF:433-440): only the faulted pages and what
        // comes back from VRAM are served.
        let hint = if to == Location::Sys {
            hint.minus(&resident)
        } else {
            hint
        };
        let to_runs = |m: &BlockMask| -> Vec<PageRange> {
            m.runs()
                .into_iter()
                .map(|(s, e)| {
                    PageRange::new(
                        PageNum::new(first + s as u64),
                        PageNum::new(first + e as u64),
                    )
                })
                .collect()
        };
        let served = faulted.union(&hint);
        // ReadMostly (svmsim's GPU_READ_MOSTLY flag): a read is served by
        // read-only copies on the faulting GPU, the pages staying where
        // they are (`uvm_va_block_select_residency` with read
        // duplication: the faulting processor, transfer mode COPY). Not
        // for ATS memory, which UVM's ATS path serves without it, nor when
        // some page is mapped in place (pinned or accessed-by).
        let read_mostly = ctx
            .range
            .attrs
            .flags
            .contains(SvmFlags::from_bits(flag::GPU_READ_MOSTLY));
        if self.read_duplication
            && read_mostly
            && !ctx.write
            && !ctx.ats
            && remote.is_empty()
            && !served.is_empty()
        {
            return FaultPlan::duplicate(to_runs(&served));
        }
        let (served, remote) = if ctx.ats && to == Location::Vram(ctx.gpu_id) {
            // ATS (`uvm_ats_service_faults`): a fault migrates only what no
            // one holds yet (`skip_mapped`: first touch populates on the
            // GPU); the GPU reaches what the CPU holds through ATS, with no
            // fault of its own, which one fault per block stands for here:
            // every page of the block the CPU holds is mapped where it is.
            let mut on_host = BlockMask::EMPTY;
            for i in 0..pages {
                if !in_vram(i) && ctx.host.holds(PageNum::new(first + i as u64)) {
                    on_host.set(i);
                }
            }
            (served.minus(&on_host), remote.union(&on_host))
        } else {
            (served, remote)
        };
        // The accessed-by GPUs are mapped too, where they can reach the
        // pages (`block_service_finish_map_accessed_by`).
        FaultPlan::serve_runs_and_remote(to, to_runs(&served), to_runs(&remote))
            .also_on(ctx.range.attrs.access_in_place)
    }

    fn access_counters(&self, ats: bool) -> Option<AccessCounterSpec> {
        self.access_counters
            .on_for(ats)
            .then_some(AccessCounterSpec {
                granularity_pages: BLOCK_PAGES as u64,
                threshold: self.access_counter_threshold,
            })
    }

    /// The access-counter service (`uvm_gpu_access_counters.c`, and
    /// `uvm_ats_service_access_counters` on ATS): the region's pages that
    /// are resident but not on the GPU migrate to it and are mapped there;
    /// pages that thrash stay where they are, and so does a region whose
    /// preferred location is elsewhere (migrating away from it is a
    /// fault's business, not a counter's).
    fn on_access_counter(&mut self, ctx: &FaultCtx<'_>) -> Option<FaultPlan> {
        if ctx
            .range
            .attrs
            .preferred_loc
            .is_some_and(|l| l != Location::Vram(ctx.gpu_id))
        {
            return None;
        }
        self.notices += 1;
        let on_gpu = ctx.range.actual_loc == Some(ctx.gpu);
        let mut runs: Vec<PageRange> = Vec::new();
        let mut lo = ctx.window.start().raw();
        // Block by block, so thrashing state (kept per block) applies.
        while lo < ctx.window.end().raw() {
            let block = lo / BLOCK_PAGES as u64;
            let end = ctx.window.end().raw().min((block + 1) * BLOCK_PAGES as u64);
            let pages = usize::try_from(end - lo).unwrap_or(BLOCK_PAGES);
            let thrashing = if self.thrashing_on {
                self.thrashing.thrashing_pages(block, lo, pages)
            } else {
                BlockMask::EMPTY
            };
            let mut moving = BlockMask::EMPTY;
            for i in 0..pages {
                let p = PageNum::new(lo + i as u64);
                let in_vram = ctx.range.vram.get(ctx.range.index(p));
                let elsewhere = if in_vram { !on_gpu } else { ctx.host.holds(p) };
                if elsewhere && !thrashing.get(i) {
                    moving.set(i);
                }
            }
            runs.extend(moving.runs().into_iter().map(|(s, e)| {
                PageRange::new(PageNum::new(lo + s as u64), PageNum::new(lo + e as u64))
            }));
            lo = end;
        }
        (!runs.is_empty()).then(|| FaultPlan::serve_runs(Location::Vram(ctx.gpu_id), runs))
    }

    fn batched(&self) -> bool {
        true
    }

    fn replay(&self) -> super::Replay {
        self.replay
    }

    /// A va_block is 2 MiB of the address space, with residency of its
    /// own: so is a range.
    fn block_pages(&self) -> Option<u64> {
        Some(BLOCK_PAGES as u64)
    }

    /// A va_block's pages are resident on one processor each, not one
    /// per block.
    fn per_page_residency(&self) -> bool {
        true
    }

    /// Between peers the source GPU pushes the pages over the peer link
    /// (`block_copy_resident_pages_between`, a GPU_TO_GPU channel); between
    /// GPUs that are not, they are staged through system memory
    /// (`block_populate_pages`' `pages_staged`), as kfd's are.
    fn direct_peer_migration(&self, link: PeerLink) -> bool {
        link != PeerLink::None
    }

    fn pcie_peers(&self) -> bool {
        self.pcie_peers
    }

    /// Sorted by GPU, page and access type (writes first), then one step
    /// per (GPU, 2 MiB block) with the block's other faults coalesced
    /// into its first: a block is served once a batch.
    fn order(&mut self, faults: &[BatchFault]) -> Vec<BatchStep> {
        let mut sorted: Vec<usize> = (0..faults.len()).collect();
        sorted.sort_by_key(|&i| {
            let f = &faults[i];
            (f.gpu.get(), f.page.raw(), !f.write, i)
        });
        let mut steps: Vec<BatchStep> = Vec::new();
        let mut last = None;
        for i in sorted {
            let key = (faults[i].gpu.get(), block_of(faults[i].page));
            match steps.last_mut() {
                Some(step) if last == Some(key) => step.with.push(i),
                _ => steps.push(BatchStep {
                    serve: i,
                    with: Vec::new(),
                }),
            }
            last = Some(key);
        }
        steps
    }

    /// Thrashing counts the migrations of faults (GPU or CPU) and of the
    /// density prefetch, which runs inside a fault's service; an API
    /// prefetch starts its pages over; an eviction, and the staging leg
    /// of a move between GPUs, are not events (TH:1290-1309).
    fn on_migration(&mut self, e: &MigrationEvent) {
        if e.trigger == MigrateTrigger::AccessCounter && !e.staging {
            self.counter_pages += e.pages.npages().raw();
        }
        if !self.thrashing_on || e.staging || e.trigger == MigrateTrigger::TtmEviction {
            return;
        }
        let counts = matches!(
            e.trigger,
            MigrateTrigger::PagefaultGpu | MigrateTrigger::PagefaultCpu
        );
        let to = e.to.map_or(CPU, |g| uvm_thrashing::gpu(g.get()));
        self.thrashing.on_migration(
            e.pages.start().raw(),
            e.pages.npages().raw(),
            to,
            counts,
            e.now_ns,
        );
    }

    fn next_deadline(&self) -> Option<u64> {
        self.thrashing.next_unpin_ns()
    }

    /// The thrashing hint with the CPU as the requester (§3.4): a
    /// throttle sleeps the CPU thread until its end (`uvm_vm_fault` drops
    /// the lock and `usleep_range`s, then retries); a pin lets the page
    /// move (the CPU can map only system memory on PCIe). The preferred
    /// location is the CPU's for system memory; a GPU's is not passed
    /// (the hint uses it only for pins).
    fn cpu_fault_throttle(
        &mut self,
        page: PageNum,
        preferred: Option<Location>,
        now_ns: u64,
    ) -> Option<u64> {
        if !self.thrashing_on {
            return None;
        }
        let preferred = (preferred == Some(Location::Sys)).then_some(CPU);
        // Where the page is is not asked: the CPU reaches no VRAM, so the
        // fast path cannot apply to it.
        let reach = Reach {
            access: &|p, at| at == CPU || p == at,
            fast: &|_, _| false,
            closest: None,
        };
        match self
            .thrashing
            .hint(page.raw(), CPU, preferred, now_ns, &reach)
        {
            Hint::Throttle { until_ns } if until_ns > now_ns => {
                self.throttled_cpu += 1;
                Some(until_ns)
            }
            _ => None,
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("throttled_faults", self.throttled),
            ("throttled_cpu_faults", self.throttled_cpu),
            ("pinned_faults", self.pinned),
            ("unpinned_pages", self.unpinned),
            ("access_counter_notices", self.notices),
            ("access_counter_pages", self.counter_pages),
        ]
    }

    fn on_deadline(&mut self, now_ns: u64) -> Vec<PageRange> {
        let mut pages: Vec<u64> = self
            .thrashing
            .unpin_due(now_ns)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        self.unpinned += pages.len() as u64;
        pages.sort_unstable();
        let mut out: Vec<PageRange> = Vec::new();
        for p in pages {
            match out.last_mut() {
                Some(r) if r.end().raw() == p => {
                    *r = PageRange::new(r.start(), PageNum::new(p + 1));
                }
                _ => out.push(PageRange::new(PageNum::new(p), PageNum::new(p + 1))),
            }
        }
        out
    }

    fn on_unmap(&mut self, range: PageRange) {
        self.thrashing
            .forget(range.start().raw(), range.end().raw());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attrs;
    use crate::gpu::{GpuId, GpuIndex, GpuMask};
    use crate::policy::{HostView, PeerLink, PeerView};
    use crate::range::SvmRange;

    const GPU: GpuId = GpuId::new(0x1002).unwrap();

    /// System memory holds every page below 1 << 20 (the CPU wrote them).
    fn below(p: PageNum) -> bool {
        p.raw() < 1 << 20
    }

    /// GPUs on PCIe without peers.
    fn apart(a: GpuIndex, b: GpuIndex) -> PeerLink {
        if a == b {
            PeerLink::Fast
        } else {
            PeerLink::None
        }
    }

    fn ctx<'a>(range: &'a SvmRange, page: u64, coalesced: &'a [PageNum]) -> FaultCtx<'a> {
        FaultCtx {
            gpu: GpuIndex::new(0).unwrap(),
            gpu_id: GPU,
            page: PageNum::new(page),
            write: false,
            atomic: false,
            now_ns: 0,
            range,
            best: Location::Vram(GPU),
            window: range.range(),
            vram_free_pages: 1 << 20,
            coalesced,
            host: HostView(&below),
            preferred_gpu: (range.attrs.preferred_loc == Some(Location::Vram(GPU)))
                .then(|| GpuIndex::new(0).unwrap()),
            ats: false,
            peers: PeerView(&apart),
        }
    }

    fn plan(range: &SvmRange, page: u64, others: &[u64]) -> (Location, Vec<(u64, u64)>) {
        let others: Vec<PageNum> = others.iter().map(|&p| PageNum::new(p)).collect();
        match Uvm::default().plan(&ctx(range, page, &others)) {
            FaultPlan::ServeRuns { to, runs, .. } => (
                to,
                runs.iter()
                    .map(|r| (r.start().raw(), r.end().raw()))
                    .collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    fn range(start: u64, pages: u64) -> SvmRange {
        SvmRange::new(
            PageRange::new(PageNum::new(start), PageNum::new(start + pages)),
            Attrs::new_range(GpuMask::first(1)),
        )
    }

    /// A lone fault takes its 64 KiB big page (kfd's would take its 2 MiB
    /// granularity window); faults in 3 of the 4 big pages of a 256 KiB
    /// subtree take all of it; the block ends at its 2 MiB.
    #[test]
    fn a_block_serves_its_faults_and_the_dense_subtrees_around_them() {
        let r = range(1024, 4096);
        assert_eq!(
            plan(&r, 1024 + 37, &[]),
            (Location::Vram(GPU), vec![(1056, 1072)])
        );
        assert_eq!(
            plan(&r, 1024, &[1024 + 20, 1024 + 40]),
            (Location::Vram(GPU), vec![(1024, 1088)])
        );
        // Coalesced faults of another block are not this block's.
        assert_eq!(plan(&r, 1024 + 5, &[1536 + 5]).1, vec![(1024, 1040)]);
        // Two far apart in one block: two runs in one service.
        assert_eq!(
            plan(&r, 1024 + 5, &[1024 + 300]).1,
            vec![(1024, 1040), (1312, 1328)]
        );
    }

    /// A range that starts inside a big page: the block is cut at the
    /// range, and big pages stay aligned in the address space.
    #[test]
    fn big_pages_are_aligned_in_the_address_space() {
        let r = range(1030, 100);
        // Page 1040 starts a big page: [1040, 1056).
        assert_eq!(plan(&r, 1045, &[]).1, vec![(1040, 1056)]);
        // A preferred location is the destination.
        let mut r = range(0, 512);
        r.attrs.preferred_loc = Some(Location::Sys);
        // Its pages are all in system memory: the fault maps its own page
        // there, and the hint drops what the CPU already holds.
        assert_eq!(plan(&r, 3, &[]), (Location::Sys, vec![(3, 4)]));
    }

    /// A block resident nowhere, faulting to its preferred location, is
    /// filled whole; one that system memory holds pages of takes the tree.
    #[test]
    fn a_first_touch_at_the_preferred_location_fills_the_block() {
        let mut r = range(2 << 20, 1024);
        r.attrs.preferred_loc = Some(Location::Vram(GPU));
        let start = 2 << 20;
        assert_eq!(
            plan(&r, start + 600, &[]).1,
            vec![(start + 512, start + 1024)]
        );
        let mut r = range(0, 1024);
        r.attrs.preferred_loc = Some(Location::Vram(GPU));
        assert_eq!(plan(&r, 600, &[]).1, vec![(592, 608)]);
    }

    /// One step per (GPU, block), writes first within a page, every fault
    /// of the batch in exactly one step.
    #[test]
    fn a_batch_is_served_once_per_block() {
        let g = |i| GpuIndex::new(i).unwrap();
        let f = |gpu, page, write| BatchFault {
            gpu: g(gpu),
            page: PageNum::new(page),
            write,
        };
        let batch = [
            f(0, 700, false),
            f(0, 10, false),
            f(1, 20, false),
            f(0, 10, true),
            f(0, 600, false),
            f(0, 511, false),
        ];
        let steps = Uvm::default().order(&batch);
        let got: Vec<(usize, Vec<usize>)> =
            steps.iter().map(|s| (s.serve, s.with.clone())).collect();
        // GPU 0 block 0: pages 10 (write first), 10, 511; GPU 0 block 1:
        // 600, 700; GPU 1 block 0: 20.
        assert_eq!(got, vec![(3, vec![1, 5]), (4, vec![0]), (2, vec![])]);
    }

    /// AccessedBy (ACCESS_IN_PLACE): a page system memory holds is mapped
    /// there, not migrated (rule 7); one resident nowhere migrates.
    #[test]
    fn an_accessed_by_gpu_maps_what_it_can_reach_where_it_is() {
        let mut r = range(0, 512);
        r.attrs.access_in_place = GpuMask::first(1);
        match Uvm::default().plan(&ctx(&r, 3, &[])) {
            FaultPlan::ServeRuns {
                runs, remote, also, ..
            } => {
                assert!(runs.is_empty(), "{runs:?}");
                assert_eq!(
                    remote,
                    vec![PageRange::new(PageNum::new(3), PageNum::new(4))]
                );
                assert_eq!(also, GpuMask::first(1));
            }
            other => panic!("{other:?}"),
        }
        // Above 1 << 20 system memory holds nothing: a first touch.
        let mut r = range(2 << 20, 512);
        r.attrs.access_in_place = GpuMask::first(1);
        let (_, runs) = plan(&r, (2 << 20) + 3, &[]);
        assert_eq!(runs, vec![((2 << 20), (2 << 20) + 16)]);
    }

    /// A preferred location the faulting GPU cannot map (another GPU's
    /// VRAM over PCIe): the page comes to the faulting GPU, without
    /// prefetch (rules 9 and 11, §2.2).
    #[test]
    fn a_preferred_gpu_out_of_reach_sends_the_page_to_the_faulting_gpu_alone() {
        let mut r = range(0, 512);
        r.attrs.preferred_loc = Some(Location::Vram(GpuId::new(0x2002).unwrap()));
        assert_eq!(plan(&r, 37, &[]), (Location::Vram(GPU), vec![(37, 38)]));
    }
}

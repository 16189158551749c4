//! Invariant checkers, run after every step of a scenario or property test.
//!
//! Verified here:
//! - the range list's own shape: ranges non-empty, filed by start, never overlapping;
//! - every SVM page lies in a VMA of its process that SVM may manage, except
//!   pieces munmap left for the deferred work;
//! - no GPU maps a page of such a piece: munmap unmapped it from the GPUs;
//! - no range crosses a `max_svm_range_pages` boundary (gap ranges are born
//!   chunked, and splits only shrink ranges);
//! - no GPU is both ACCESS and ACCESS_IN_PLACE, and both sets hold only SVM GPUs;
//! - the machine's reserved memory equals what the processes' ranges hold
//!   (every range while XNACK is off, nothing while it is on).
//!
//! - every valid GPU PTE points at its page's current location: the VRAM
//!   page of the range's buffer when the page is in VRAM, a live DMA mapping
//!   of that very page otherwise (ranges awaiting the XNACK-off restore work
//!   are exempt: their queues are stopped);
//! - no PTE covers a page outside every SVM range;
//! - a range with VRAM pages has `actual_loc` and a buffer on that GPU, and
//!   its pages fit inside the buffer; `vram_pages` is derived from the pages;
//! - VRAM buffers are exactly the live buffers of the processes: none leaks,
//!   none is shared by two processes;
//! - every system DMA entry names a live mapping of its own page, and every
//!   live mapping is held by exactly one entry (no leak, no double unmap);
//! - with kernel accounting on, kfd's own `vram_pages` counter equals the
//!   pages really in VRAM (off by default: it drifts, which is the point);
//! - every page's bytes, wherever they live, equal what the process's
//!   accesses wrote (the per-page shadow model): no byte lost or stale;
//! - a page with read duplicates is mapped writable nowhere, a GPU with a
//!   copy of it maps the copy, and every copy holds the page's bytes;
//! - no device page a CPU fault still holds (do_swap_page's reference,
//!   until its `put_page`) had its count reset by a migration reusing it:
//!   the hardware tracks those references, and a put that would drop a
//!   page in use to 0 (the 2025 refcount race, before 6.18) fails the run.
//!
//! Not verified here:
//! - that the attributes are the *right* ones: the reference model
//!   ([`crate::refmodel`]) answers that, page by page;
//! - PTE flags (MTYPE, snoop, write and exec bits): `svm_core::pte` has a
//!   table test of the rules, and the checker only checks where PTEs point;
//! - PTEs of ranges waiting for the XNACK-off restore work: their queues are
//!   stopped, so a stale PTE there cannot be used;
//! - TLB contents: each entry carries the flush generation it was filled
//!   in, so a flush makes every older entry unreachable by construction
//!   (`machine/mmu.rs`); that the engine flushes after every unmap is not
//!   checked here;
//! - the order and content of SMI events: tests and scenarios count them.

use std::fmt;

use svm_core::range::ListOp;

use crate::machine::Machine;

/// A broken invariant: which checker found it and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker's name.
    pub checker: &'static str,
    /// What it saw.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {} broken: {}", self.checker, self.message)
    }
}

fn fail(checker: &'static str, message: String) -> Result<(), Violation> {
    Err(Violation { checker, message })
}

/// What one [`check`] of `m` costs, roughly, in units of about 6 ns (on
/// the machine the weights were measured on): each range is visited by
/// several checkers (8), each VMA, PTE and DMA mapping once or twice (2),
/// each page holding bytes is compared with its shadow (16). Itself
/// O(processes + GPUs).
pub fn cost(m: &Machine) -> u64 {
    let mappings: usize = m.gpus().iter().map(|g| g.iommu.len()).sum();
    let mut n = 2 * mappings as u64;
    for (pid, p) in m.processes() {
        let ptes: usize = m.page_tables(pid).iter().map(|pt| pt.len()).sum();
        n += 8 * p.svm.ranges().len() as u64 + 2 * (p.mm.vma_count() + ptes) as u64;
        n += 16 * (p.mm.pages().populated() + p.shadow.populated()) as u64;
    }
    n
}

/// When to check a long run of steps so that checking stays linear in
/// the steps.
///
/// A check after every step costs O(state) each time, so a run whose state
/// grows with its steps (a scenario of 20k mmaps) spends quadratic time
/// checking: 44 s of its 44. The linear schedule starts with a credit of
/// [`Schedule::CREDIT`] units of [`cost`] (about a second of checking),
/// gives each step [`Schedule::PER_STEP`] more, and checks after a step
/// when what is saved covers a check. A run whose checks fit the credit
/// (every example, every KFDTest case) is checked after every step; a
/// longer one after every `cost / PER_STEP`-th step once the credit is
/// spent. Checking then costs at most `CREDIT + PER_STEP × steps` units.
/// A violation is still found, at most `cost / PER_STEP` steps late; the
/// every-step schedule pins the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    every_step: bool,
    saved: u64,
}

impl Schedule {
    /// The check work a step brings with it under the linear schedule.
    pub const PER_STEP: u64 = 1024;

    /// The check work the linear schedule may spend before it paces checks.
    pub const CREDIT: u64 = 1 << 27;

    /// Check after every step, whatever it costs.
    pub fn every_step() -> Self {
        Self {
            every_step: true,
            saved: 0,
        }
    }

    /// Check as often as keeps the checking linear.
    pub fn linear() -> Self {
        Self {
            every_step: false,
            saved: Self::CREDIT,
        }
    }

    /// Whether to check `m` now, after one more step. Counts the check as
    /// done when it says yes.
    pub fn due(&mut self, m: &Machine) -> bool {
        if self.every_step {
            return true;
        }
        self.saved = self.saved.saturating_add(Self::PER_STEP);
        let c = cost(m);
        if c > self.saved {
            return false;
        }
        self.saved -= c;
        true
    }
}

/// Runs every checker over the machine.
///
/// # Errors
/// The first violation found.
pub fn check(m: &Machine) -> Result<(), Violation> {
    let mut reserved = 0u64;
    for (_, p) in m.processes() {
        let svm = &p.svm;
        if let Err(e) = svm.ranges().check() {
            return fail("range_list", format!("{}: {e}", p.name));
        }
        let max = svm.max_range_pages();
        let supported = svm.bitmap_supported();
        // Ranges and VMAs are both in address order: one walk down each.
        let mut vmas = p.mm.vmas().peekable();
        for r in svm.ranges().iter() {
            let range = r.range();
            // A piece munmap left for the deferred work has lost its VMA.
            let unmapped = r.op == Some(ListOp::UnmapRange);
            let mut page = if unmapped { range.end() } else { range.start() };
            while page < range.end() {
                while vmas.next_if(|v| v.range.end() <= page).is_some() {}
                match vmas.peek() {
                    Some(v) if v.range.contains(page) && v.backing != crate::mm::Backing::Io => {
                        page = v.range.end();
                    }
                    _ => {
                        return fail(
                            "range_in_vma",
                            format!("{}: page {page} of range {range} has no usable VMA", p.name),
                        );
                    }
                }
            }
            if range.start().align_down(max) != range.last().align_down(max) {
                return fail(
                    "max_range_pages",
                    format!("{}: range {range} crosses a {max}-page boundary", p.name),
                );
            }
            let a = &r.attrs;
            if !a.access.and(a.access_in_place).is_empty() {
                return fail(
                    "access_exclusive",
                    format!(
                        "{}: range {range} has GPUs both ACCESS and ACCESS_IN_PLACE",
                        p.name
                    ),
                );
            }
            if a.access.or(a.access_in_place).and(supported) != a.access.or(a.access_in_place) {
                return fail(
                    "access_supported",
                    format!(
                        "{}: range {range} grants access to a GPU without SVM",
                        p.name
                    ),
                );
            }
        }
        reserved += svm.reserved_bytes();
    }
    check_hardware(m)?;
    let limit = m.mem_limit();
    if limit.used_bytes != reserved {
        return fail(
            "mem_limit",
            format!(
                "{:#x} bytes reserved, but the ranges account for {reserved:#x}",
                limit.used_bytes
            ),
        );
    }
    Ok(())
}

/// The hardware-facing invariants (see the module doc).
fn check_hardware(m: &Machine) -> Result<(), Violation> {
    use std::collections::BTreeMap;

    use svm_core::dma::DmaEntry;
    use svm_core::platform::PteTarget;

    if let Some(v) = m.refcount_violations().first() {
        return fail("refcount", v.clone());
    }
    if m.counters().bad_dma_unmaps > 0 {
        return fail(
            "dma",
            format!(
                "{} DMA unmaps of unmapped addresses",
                m.counters().bad_dma_unmaps
            ),
        );
    }
    let mappings = m.dma_mappings();
    let mut held: BTreeMap<(usize, u64), u32> = BTreeMap::new();
    let mut bufs: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    for (pid, p) in m.processes() {
        let svm = &p.svm;
        // SVM's buffers and the resident KFD buffers each hold their own
        // VRAM, once.
        let kfd = svm
            .kfd_bos()
            .filter_map(|(_, b)| b.buf.map(|buf| (b.gpu, buf)));
        let dups = svm.duplicates().buffers();
        for (gpu, buf) in svm
            .bos()
            .map(|(_, b)| (b.gpu, b.buf))
            .chain(kfd)
            .chain(dups)
        {
            if bufs.insert((gpu.get(), buf.0), pid.index()).is_some() {
                return fail("vram", format!("{}: buffer {} held twice", p.name, buf.0));
            }
        }
        for r in svm.ranges().iter() {
            let n = r.range().npages().raw();
            if r.vram.len() != n {
                return fail(
                    "residency",
                    format!(
                        "{}: range {} tracks {} pages",
                        p.name,
                        r.range(),
                        r.vram.len()
                    ),
                );
            }
            if let Some(b) = r.bo
                && svm.bo(b.id).is_none()
            {
                return fail(
                    "residency",
                    format!(
                        "{}: range {} names freed buffer {}",
                        p.name,
                        r.range(),
                        b.id
                    ),
                );
            }
            if r.vram_pages() > 0 {
                let (Some(owner), Some(bref)) = (r.actual_loc, r.bo) else {
                    return fail(
                        "residency",
                        format!(
                            "{}: range {} has VRAM pages but no buffer",
                            p.name,
                            r.range()
                        ),
                    );
                };
                let Some(bo) = svm.bo(bref.id) else {
                    return fail(
                        "residency",
                        format!("{}: range {} names a freed buffer", p.name, r.range()),
                    );
                };
                if bo.gpu != owner || bref.offset + n > bo.npages {
                    return fail(
                        "residency",
                        format!("{}: range {} does not fit its buffer", p.name, r.range()),
                    );
                }
            }
            if svm.kernel_accounting() && r.kernel_vram_pages != r.vram_pages() {
                return fail(
                    "vram_pages",
                    format!(
                        "{}: range {} records {} VRAM pages but holds {}",
                        p.name,
                        r.range(),
                        r.kernel_vram_pages as i64,
                        r.vram_pages()
                    ),
                );
            }
            for g in r.dma.gpus() {
                for k in 0..n {
                    if let DmaEntry::Sys(a) = r.dma.get(g, k) {
                        let page = svm_core::addr::PageNum::new(r.start().raw() + k);
                        if mappings.get(&(g.get(), a)) != Some(&(pid.index(), page)) {
                            return fail(
                                "dma",
                                format!(
                                    "{}: DMA entry {a:#x} of page {page} is not a live mapping of it",
                                    p.name
                                ),
                            );
                        }
                        *held.entry((g.get(), a)).or_default() += 1;
                    }
                }
            }
        }
        // PTEs against the truth.
        for (gi, pt) in m.page_tables(pid).iter().enumerate() {
            for (page, pte) in pt.iter() {
                let Some(r) = svm.ranges().find(page) else {
                    return fail(
                        "gpu_pt",
                        format!("{}: gpu{gi} maps page {page} outside every range", p.name),
                    );
                };
                if r.op == Some(ListOp::UnmapRange) {
                    return fail(
                        "gpu_pt",
                        format!(
                            "{}: gpu{gi} still maps page {page}, which munmap unmapped",
                            p.name
                        ),
                    );
                }
                // A page with read duplicates is written nowhere; a GPU
                // with a copy maps its copy.
                let gpu = svm_core::gpu::GpuIndex::new(gi).expect("at most 64 GPUs");
                let dups = svm.duplicates();
                if !dups.is_empty() && !dups.holders(page).is_empty() {
                    if pte.flags.writeable {
                        return fail(
                            "read_duplicate",
                            format!(
                                "{}: gpu{gi} maps page {page} writable while it has read duplicates",
                                p.name
                            ),
                        );
                    }
                    if let Some((buf, k)) = dups.copy_of(gpu, page) {
                        let at = m.gpus()[gi].bufs[&buf.0].page(k).map(|x| x * 4096);
                        if pte.target
                            != (PteTarget::Vram {
                                owner: gpu,
                                addr: at.unwrap_or(u64::MAX),
                            })
                        {
                            return fail(
                                "read_duplicate",
                                format!(
                                    "{}: gpu{gi} holds a copy of page {page} but its PTE points at {:?}",
                                    p.name, pte.target
                                ),
                            );
                        }
                        continue;
                    }
                }
                if r.invalid > 0 {
                    continue;
                }
                let k = r.index(page);
                let ok = match pte.target {
                    PteTarget::Vram { owner, addr } => {
                        r.vram.get(k)
                            && r.actual_loc == Some(owner)
                            && r.bo
                                .and_then(|b| svm.bo(b.id).map(|bo| (b, bo)))
                                .is_some_and(|(b, bo)| {
                                    m.gpus()[bo.gpu.get()].bufs[&bo.buf.0]
                                        .page(b.offset + k)
                                        .map(|x| x * 4096)
                                        == Some(addr)
                                })
                    }
                    PteTarget::Sys(a) => {
                        !r.vram.get(k) && mappings.get(&(gi, a)) == Some(&(pid.index(), page))
                    }
                };
                if !ok {
                    let why = if svm.stale_after_failed_map() > 0 {
                        " (kfd leaves PTEs at the old DMA addresses after a failed dma_map_page or \
                         page-table update, as injected here; --set unmap_every_mapped_gpu=on clears them)"
                    } else {
                        ""
                    };
                    return fail(
                        "gpu_pt",
                        format!(
                            "{}: gpu{gi} PTE of page {page} points at {:?}, not where the page is{why}",
                            p.name, pte.target
                        ),
                    );
                }
            }
        }
        // Bytes against the shadow (a phantom machine keeps neither).
        if p.shadow.is_off() {
            continue;
        }
        // Only pages that can hold bytes: written, in host memory, or in
        // VRAM. (Walking every VMA page made each step slow for large maps.)
        // (A sorted vector, not a set: this runs after every step.)
        let mut pages: Vec<u64> =
            p.mm.pages()
                .page_numbers()
                .chain(p.shadow.page_numbers())
                .collect();
        for r in svm.ranges().iter() {
            if r.op == Some(ListOp::UnmapRange) || r.vram.count() == 0 {
                continue;
            }
            for (a, b, in_vram) in r.vram.runs() {
                if in_vram {
                    pages.extend((a..b).map(|k| r.start().raw() + k));
                }
            }
        }
        pages.sort_unstable();
        pages.dedup();
        for page in pages.into_iter().map(svm_core::addr::PageNum::new) {
            // A piece munmap left is gone for the process; the deferred
            // work frees what is left of it.
            if svm
                .ranges()
                .find(page)
                .is_some_and(|r| r.op == Some(ListOp::UnmapRange))
            {
                continue;
            }
            // Compared where it lies, a page that reads as zero included
            // (its digest is zero, as is a page's never written).
            let got = m.page_digest(pid, page);
            if got != p.shadow.expected(page.raw()) {
                let why = if m.injection().is_corrupted(pid.index(), page.raw()) {
                    " (an SDMA job that failed after its migration was committed left it \
                     undefined: kfd never checks svm_migrate_copy_done's fence, injected \
                     copy_fence; --set check_copy_fence=on fails the chunk instead)"
                } else {
                    ""
                };
                return fail(
                    "bytes",
                    format!(
                        "{}: page {page} does not hold what was written to it{why}",
                        p.name
                    ),
                );
            }
        }
    }
    // Every read duplicate holds what was written to its page.
    for (_, p) in m.processes() {
        if p.shadow.is_off() {
            continue;
        }
        for (g, page, buf, k) in p.svm.duplicates().copies() {
            let gpu = &m.gpus()[g.get()];
            let same = gpu.bufs[&buf.0]
                .page(k)
                .is_some_and(|v| gpu.vram.store().digest(v) == p.shadow.expected(page.raw()));
            if !same {
                return fail(
                    "read_duplicate",
                    format!(
                        "{}: gpu{} copy of page {page} differs from what was written",
                        p.name,
                        g.get()
                    ),
                );
            }
        }
    }
    for &(g, a) in mappings.keys() {
        if held.get(&(g, a)) != Some(&1) {
            return fail(
                "dma",
                format!(
                    "gpu{g} DMA mapping {a:#x} is held by {} entries",
                    held.get(&(g, a)).copied().unwrap_or(0)
                ),
            );
        }
    }
    for (g, gpu) in m.gpus().iter().enumerate() {
        for id in gpu.bufs.keys() {
            if !bufs.contains_key(&(g, *id)) {
                return fail(
                    "vram",
                    format!("gpu{g} buffer {id} leaked: no process holds it"),
                );
            }
        }
    }
    if bufs
        .keys()
        .any(|&(g, id)| !m.gpus()[g].bufs.contains_key(&id))
    {
        return fail("vram", "a process holds a freed buffer".into());
    }
    Ok(())
}

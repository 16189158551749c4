//! A simulated process address space: VMAs made by mmap, munmap and mprotect.
//!
//! The engine sees it through `svm_core::platform::Platform::vma_at`. VMAs are
//! kept in a `BTreeMap` keyed by first page, never overlap, and are split
//! when munmap or mprotect covers part of one, as Linux splits them. Adjacent
//! VMAs are not merged: their identity does not matter to SVM, and keeping
//! them apart keeps the table easy to read.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use svm_core::Errno;
use svm_core::addr::{CpuVa, PAGE_SIZE, PageCount, PageNum, PageRange};
use svm_core::platform::{VmFlags, VmaInfo};

use crate::pages::PageStore;

/// Lowest address mmap hands out.
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;
/// One past the highest user address (x86-64 with 4-level page tables).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Where mmap without an address starts looking, downwards.
pub const MMAP_BASE: u64 = 0x7f00_0000_0000;

/// Read, write and execute permission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Prot {
    /// `PROT_READ`.
    pub read: bool,
    /// `PROT_WRITE`.
    pub write: bool,
    /// `PROT_EXEC`.
    pub exec: bool,
}

impl Prot {
    /// `PROT_READ`.
    pub const READ: Prot = Prot {
        read: true,
        write: false,
        exec: false,
    };

    /// `PROT_READ | PROT_WRITE`.
    pub const RW: Prot = Prot {
        read: true,
        write: true,
        exec: false,
    };

    /// Parses `"rw"`, `"r-x"`, `"rwx"`, `"none"` and the like.
    pub fn parse(s: &str) -> Option<Prot> {
        if s == "none" || s == "---" {
            return Some(Prot::default());
        }
        let mut p = Prot::default();
        for c in s.chars() {
            match c {
                'r' => p.read = true,
                'w' => p.write = true,
                'x' => p.exec = true,
                '-' => {}
                _ => return None,
            }
        }
        Some(p)
    }
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |on, ch| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x')
        )
    }
}

/// What backs a VMA.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// Anonymous private memory: SVM can migrate it.
    Anon,
    /// A file mapping (its pages stay in the page cache).
    File(String),
    /// Device memory (`VM_IO | VM_PFNMAP`): SVM refuses it with EFAULT.
    Io,
}

/// `anon`, `file:NAME` or `io`.
impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Anon => f.write_str("anon"),
            Backing::File(name) => write!(f, "file:{name}"),
            Backing::Io => f.write_str("io"),
        }
    }
}

/// What the VMA is used for, as `/proc/PID/maps` labels it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// An ordinary mapping.
    #[default]
    None,
    /// `[heap]`.
    Heap,
    /// `[stack]`.
    Stack,
}

/// `heap`, `stack`, or nothing.
impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mark::None => "",
            Mark::Heap => "heap",
            Mark::Stack => "stack",
        })
    }
}

/// One VMA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vma {
    /// The pages it covers.
    pub range: PageRange,
    /// Its protection.
    pub prot: Prot,
    /// What backs it.
    pub backing: Backing,
    /// Heap or stack label.
    pub mark: Mark,
}

impl Vma {
    /// The engine's view of it.
    pub fn info(&self) -> VmaInfo {
        VmaInfo {
            range: self.range,
            flags: VmFlags {
                read: self.prot.read,
                write: self.prot.write,
                exec: self.prot.exec,
                io: self.backing == Backing::Io,
                file: matches!(self.backing, Backing::File(_)),
                heap_stack: self.mark != Mark::None,
            },
        }
    }
}

/// Why an mm call failed, with the errno Linux returns for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MmError {
    /// The address is not page aligned (EINVAL).
    #[error("address {0} is not page aligned")]
    Misaligned(CpuVa),
    /// mmap or munmap of zero bytes (EINVAL).
    #[error("length is zero")]
    ZeroLength,
    /// munmap of a range that leaves the user address space (EINVAL).
    #[error("{addr}+{len:#x} lies outside the user address space")]
    OutOfRange { addr: CpuVa, len: u64 },
    /// A fixed mapping below `mmap_min_addr` (EPERM).
    #[error("{0} is below mmap_min_addr ({MMAP_MIN_ADDR:#x})")]
    BelowMinAddr(CpuVa),
    /// The mapping does not fit in the user address space, or no free gap
    /// is large enough (ENOMEM).
    #[error("no room for {len:#x} bytes")]
    NoSpace { len: u64 },
    /// mprotect reached a page with no VMA (ENOMEM).
    #[error("page {0} is not mapped")]
    NotMapped(PageNum),
    /// A CPU access the page's protection forbids, or to an unmapped page:
    /// the process would get SIGSEGV (reported as EFAULT).
    #[error("{kind} of page {page} faults (SIGSEGV)")]
    Segv { page: PageNum, kind: &'static str },
}

impl MmError {
    /// The errno Linux returns.
    pub fn errno(&self) -> Errno {
        match self {
            MmError::Misaligned(_) | MmError::ZeroLength | MmError::OutOfRange { .. } => {
                Errno::Einval
            }
            MmError::BelowMinAddr(_) => Errno::Eperm,
            MmError::NoSpace { .. } | MmError::NotMapped(_) => Errno::Enomem,
            MmError::Segv { .. } => Errno::Efault,
        }
    }
}

/// `len` rounded up to whole pages, as every mm call rounds it, or `None`
/// when that overflows.
fn page_len(len: u64) -> Option<u64> {
    len.checked_next_multiple_of(PAGE_SIZE)
}

/// The VMAs of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressSpace {
    vmas: BTreeMap<PageNum, Vma>,
    /// The pages some VMA covers, as maximal runs `start -> end`: what the
    /// top-down search for a free gap walks, so that `mmap` after `mmap`
    /// (each placed just below the last) crosses one run, not every VMA.
    /// Linux keeps the same answer in the maple tree's gap tracking.
    covered: BTreeMap<PageNum, PageNum>,
    /// The bytes of host pages, by virtual page number; unmapped pages drop theirs.
    data: PageStore,
    /// Pages still shared copy-on-write with fork children, and how many
    /// children share each: this process's next write to one breaks the
    /// sharing (a new page, and an MMU notifier on the old one).
    cow: BTreeMap<u64, u32>,
}

impl AddressSpace {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fork child's copy: the same VMAs and bytes (pages are shared by
    /// reference until either side writes, as the page store lends them),
    /// sharing nothing copy-on-write of its own yet.
    pub fn fork(&self) -> Self {
        let mut child = self.clone();
        child.cow.clear();
        child
    }

    /// A fork child now shares page `n` copy-on-write.
    pub fn cow_share(&mut self, n: u64) {
        *self.cow.entry(n).or_insert(0) += 1;
    }

    /// A child that shared page `n` wrote its own copy of it.
    pub fn cow_unshare(&mut self, n: u64) {
        if let Some(c) = self.cow.get_mut(&n) {
            *c -= 1;
            if *c == 0 {
                self.cow.remove(&n);
            }
        }
    }

    /// This process writes page `n`: if it was shared copy-on-write, the
    /// sharing breaks (`wp_page_copy`). Returns whether it was shared.
    pub fn cow_break(&mut self, n: u64) -> bool {
        self.cow.remove(&n).is_some()
    }

    /// Pages of `range` are gone (unmapped, dropped): nothing of them is
    /// shared any more.
    pub fn cow_forget(&mut self, range: PageRange) {
        let (a, b) = (range.start().raw(), range.end().raw());
        self.cow.retain(|&p, _| !(a..b).contains(&p));
    }

    /// Pages shared copy-on-write with fork children.
    pub fn cow_pages(&self) -> usize {
        self.cow.len()
    }

    /// VMAs in address order.
    pub fn vmas(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.values()
    }

    /// Number of VMAs.
    pub fn vma_count(&self) -> usize {
        self.vmas.len()
    }

    /// The VMA that holds `page`.
    pub fn vma_at(&self, page: PageNum) -> Option<&Vma> {
        self.vmas
            .range(..=page)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.range.contains(page))
    }

    /// The engine's view of the VMA that holds `page`.
    pub fn vma_info(&self, page: PageNum) -> Option<VmaInfo> {
        self.vma_at(page).map(Vma::info)
    }

    /// Maps `len` bytes, rounded up to whole pages. With `fixed`, at exactly
    /// that address, replacing whatever was there (`MAP_FIXED`); the replaced
    /// pages are returned so the caller can run the munmap notifier over them.
    /// Without, at the highest free gap below [`MMAP_BASE`].
    ///
    /// # Errors
    /// As Linux: EINVAL for a zero length or a misaligned fixed address,
    /// EPERM below `mmap_min_addr`, ENOMEM when it does not fit.
    pub fn mmap(
        &mut self,
        fixed: Option<CpuVa>,
        len: u64,
        prot: Prot,
        backing: Backing,
        mark: Mark,
    ) -> Result<(PageRange, Vec<PageRange>), MmError> {
        if len == 0 {
            return Err(MmError::ZeroLength);
        }
        let len = page_len(len)
            .filter(|&l| l <= TASK_SIZE)
            .ok_or(MmError::NoSpace { len })?;
        let npages = PageCount::from_bytes_ceil(len);
        let range = match fixed {
            Some(addr) => {
                if !addr.is_page_aligned() {
                    return Err(MmError::Misaligned(addr));
                }
                if addr.raw() < MMAP_MIN_ADDR {
                    return Err(MmError::BelowMinAddr(addr));
                }
                match addr.checked_add(len) {
                    Some(end) if end.raw() <= TASK_SIZE => {
                        PageRange::from_start_len(addr.page_num(), npages).expect("below TASK_SIZE")
                    }
                    _ => return Err(MmError::NoSpace { len }),
                }
            }
            None => self.find_gap(npages).ok_or(MmError::NoSpace { len })?,
        };
        let replaced = self.unmap_pages(range);
        self.cover(range);
        self.vmas.insert(
            range.start(),
            Vma {
                range,
                prot,
                backing,
                mark,
            },
        );
        Ok((range, replaced))
    }

    /// The highest free run of `npages` pages below [`MMAP_BASE`].
    ///
    /// The walk crosses the covered runs above the gap it picks: one for
    /// maps placed one below the other, more only when munmap has left
    /// holes too small for the request.
    fn find_gap(&self, npages: PageCount) -> Option<PageRange> {
        let floor = CpuVa::new(MMAP_MIN_ADDR).page_num();
        let mut top = CpuVa::new(MMAP_BASE).page_num();
        for (&start, &end) in self.covered.range(..top).rev() {
            if end < top && top.raw() - end.raw() >= npages.raw() {
                break;
            }
            top = top.min(start);
        }
        let start = top.raw().checked_sub(npages.raw())?;
        (start >= floor.raw()).then(|| PageRange::new(PageNum::new(start), top))
    }

    /// Adds `range`, which no VMA covers, to the covered runs, joining the
    /// runs it touches.
    fn cover(&mut self, range: PageRange) {
        let (mut start, mut end) = (range.start(), range.end());
        if let Some((&s, &e)) = self.covered.range(..start).next_back() {
            if e == start {
                self.covered.remove(&s);
                start = s;
            }
        }
        if let Some(e) = self.covered.remove(&end) {
            end = e;
        }
        self.covered.insert(start, end);
    }

    /// Takes `range` out of the covered runs, keeping what lies outside it.
    fn uncover(&mut self, range: PageRange) {
        let (start, end) = (range.start(), range.end());
        let first = self
            .covered
            .range(..start)
            .next_back()
            .filter(|&(_, &e)| e > start)
            .map(|(&s, _)| s);
        let hit: Vec<(PageNum, PageNum)> = first
            .into_iter()
            .map(|s| (s, self.covered[&s]))
            .chain(self.covered.range(start..end).map(|(&s, &e)| (s, e)))
            .collect();
        for (s, e) in hit {
            self.covered.remove(&s);
            if s < start {
                self.covered.insert(s, start);
            }
            if e > end {
                self.covered.insert(end, e);
            }
        }
    }

    /// Unmaps `[addr, addr+len)`, the length rounded up to whole pages, and
    /// returns the pages that were mapped. Unmapping pages that are not
    /// mapped is not an error, as in Linux.
    ///
    /// # Errors
    /// EINVAL for a misaligned address, a zero length, or a range outside
    /// the user address space.
    pub fn munmap(&mut self, addr: CpuVa, len: u64) -> Result<Vec<PageRange>, MmError> {
        if !addr.is_page_aligned() {
            return Err(MmError::Misaligned(addr));
        }
        if len == 0 {
            return Err(MmError::ZeroLength);
        }
        let end = page_len(len)
            .and_then(|l| addr.checked_add(l))
            .filter(|e| e.raw() <= TASK_SIZE)
            .ok_or(MmError::OutOfRange { addr, len })?;
        Ok(self.unmap_pages(PageRange::new(addr.page_num(), end.page_num())))
    }

    fn unmap_pages(&mut self, range: PageRange) -> Vec<PageRange> {
        // The pages' contents go with the mapping: a new mapping reads zero.
        self.data.drop_range(range.start().raw(), range.end().raw());
        self.cow_forget(range);
        let hit = self.split_around(range);
        self.uncover(range);
        hit.iter()
            .map(|start| {
                self.vmas
                    .remove(start)
                    .expect("split VMA is in the table")
                    .range
            })
            .collect()
    }

    /// Splits VMAs at the edges of `range` and returns the starts of the
    /// VMAs now lying inside it.
    fn split_around(&mut self, range: PageRange) -> Vec<PageNum> {
        for at in [range.start(), range.end()] {
            if let Some(v) = self.vma_at(at).filter(|v| v.range.start() < at).cloned() {
                let (head, tail) = v.range.split_at(at);
                self.vmas.insert(
                    head.start(),
                    Vma {
                        range: head,
                        ..v.clone()
                    },
                );
                self.vmas.insert(tail.start(), Vma { range: tail, ..v });
            }
        }
        self.vmas
            .range(range.start()..range.end())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Checks that every page of `[addr, addr+len)` is mapped with the
    /// protection a CPU access needs (a write needs `PROT_WRITE`, a read
    /// `PROT_READ`) and is not device memory: the one rule of the CPU path.
    ///
    /// # Errors
    /// [`MmError::Segv`] naming the first page that refuses.
    pub fn check_access(&self, addr: u64, len: u64, write: bool) -> Result<(), MmError> {
        let kind = if write { "write" } else { "read" };
        let Some(last) = len.checked_sub(1).and_then(|l| addr.checked_add(l)) else {
            return Ok(());
        };
        let mut page = CpuVa::new(addr).page_num();
        let end = CpuVa::new(last).page_num();
        while page <= end {
            let v = self.vma_at(page).ok_or(MmError::Segv { page, kind })?;
            if (write && !v.prot.write) || (!write && !v.prot.read) || v.backing == Backing::Io {
                return Err(MmError::Segv { page, kind });
            }
            page = v.range.end();
        }
        Ok(())
    }

    /// A CPU read of host memory: the bytes at `addr`, zeros where never written.
    ///
    /// # Errors
    /// [`MmError::Segv`] when a page is unmapped, not readable, or device memory.
    pub fn read(&self, addr: CpuVa, buf: &mut [u8]) -> Result<(), MmError> {
        self.check_access(addr.raw(), buf.len() as u64, false)?;
        self.data.read(addr.raw(), buf);
        Ok(())
    }

    /// A CPU write of host memory.
    ///
    /// # Errors
    /// [`MmError::Segv`] when a page is unmapped, not writable, or device memory.
    pub fn write(&mut self, addr: CpuVa, data: &[u8]) -> Result<(), MmError> {
        self.check_access(addr.raw(), data.len() as u64, true)?;
        self.data.write(addr.raw(), data);
        Ok(())
    }

    /// The page store behind host memory, keyed by virtual page number, for
    /// the migration code that moves whole pages in and out.
    pub fn pages_mut(&mut self) -> &mut PageStore {
        &mut self.data
    }

    /// The page store, read-only.
    pub fn pages(&self) -> &PageStore {
        &self.data
    }

    /// Changes the protection of `[addr, addr+len)`, the length rounded up
    /// to whole pages.
    ///
    /// As in Linux (`do_mprotect_pkey`), VMAs change one after the other: a
    /// hole stops the walk with ENOMEM, and the VMAs before it keep their new
    /// protection. A zero length does nothing.
    ///
    /// # Errors
    /// EINVAL for a misaligned address; ENOMEM when the range wraps or
    /// reaches a page with no VMA.
    pub fn mprotect(&mut self, addr: CpuVa, len: u64, prot: Prot) -> Result<(), MmError> {
        if !addr.is_page_aligned() {
            return Err(MmError::Misaligned(addr));
        }
        if len == 0 {
            return Ok(());
        }
        let end = page_len(len)
            .and_then(|l| addr.checked_add(l))
            .ok_or(MmError::NotMapped(addr.page_num()))?;
        let range = PageRange::new(addr.page_num(), end.page_num());
        // The first page must be mapped before anything changes.
        if self.vma_at(range.start()).is_none() {
            return Err(MmError::NotMapped(range.start()));
        }
        let mut page = range.start();
        while page < range.end() {
            let Some(v) = self.vma_at(page) else {
                return Err(MmError::NotMapped(page));
            };
            let piece = v.range.intersect(range).expect("the VMA holds the page");
            let start = self.split_around(piece)[0];
            self.vmas
                .get_mut(&start)
                .expect("split VMA is in the table")
                .prot = prot;
            page = piece.end();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn spans(a: &AddressSpace) -> Vec<(u64, u64, String)> {
        a.vmas()
            .map(|v| {
                (
                    v.range.start().raw(),
                    v.range.end().raw(),
                    v.prot.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn mmap_top_down_and_fixed() {
        let mut a = AddressSpace::new();
        let (r1, _) = a
            .mmap(None, 4 * P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        let (r2, _) = a
            .mmap(None, 2 * P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        assert_eq!(r1.end(), CpuVa::new(MMAP_BASE).page_num());
        assert_eq!(r2.end(), r1.start());
        let (r3, replaced) = a
            .mmap(
                Some(CpuVa::new(0x10000)),
                P,
                Prot::RW,
                Backing::Io,
                Mark::None,
            )
            .unwrap();
        assert_eq!(r3.start(), PageNum::new(0x10));
        assert!(replaced.is_empty());
        // MAP_FIXED over part of r1 replaces it.
        let (_, replaced) = a
            .mmap(
                Some(r1.start().va()),
                P,
                Prot::default(),
                Backing::Anon,
                Mark::None,
            )
            .unwrap();
        assert_eq!(
            replaced,
            vec![PageRange::from_start_len(r1.start(), PageCount::new(1)).unwrap()]
        );
        assert_eq!(a.vmas().count(), 4);
    }

    #[test]
    fn gap_search_skips_full_holes() {
        let mut a = AddressSpace::new();
        let (r1, _) = a
            .mmap(None, 4 * P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        a.mmap(None, 4 * P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        // A one-page hole in r1 is too small for two pages.
        a.munmap(r1.start().va(), P).unwrap();
        let (r3, _) = a
            .mmap(None, 2 * P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        assert!(r3.end() <= PageNum::new(r1.start().raw() - 4));
        let (r4, _) = a
            .mmap(None, P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        assert_eq!(r4.start(), r1.start());
    }

    /// The covered runs are the VMAs merged, and the gap search over them
    /// picks what a walk over every VMA picks, under any mix of mmap,
    /// MAP_FIXED and munmap near the top of the mmap area.
    #[test]
    fn covered_runs_match_a_walk_over_every_vma() {
        use proptest::prelude::*;
        let base = CpuVa::new(MMAP_BASE).page_num().raw();
        let op = prop_oneof![
            (1u64..6).prop_map(|n| (0u8, 0u64, n)),
            (0u64..40, 1u64..6).prop_map(|(at, n)| (1u8, at, n)),
            (0u64..40, 1u64..6).prop_map(|(at, n)| (2u8, at, n)),
        ];
        proptest!(|(ops in proptest::collection::vec(op, 1..60))| {
            let mut a = AddressSpace::new();
            for (kind, at, n) in ops {
                let fixed = CpuVa::new((base - 40 + at) * P);
                match kind {
                    0 => {
                        let naive = naive_gap(&a, PageCount::new(n));
                        prop_assert_eq!(a.find_gap(PageCount::new(n)), naive);
                        a.mmap(None, n * P, Prot::RW, Backing::Anon, Mark::None).unwrap();
                    }
                    1 => {
                        a.mmap(Some(fixed), n * P, Prot::RW, Backing::Anon, Mark::None).unwrap();
                    }
                    _ => {
                        a.munmap(fixed, n * P).unwrap();
                    }
                }
                let mut merged: Vec<(PageNum, PageNum)> = Vec::new();
                for v in a.vmas() {
                    match merged.last_mut() {
                        Some(last) if last.1 == v.range.start() => last.1 = v.range.end(),
                        _ => merged.push((v.range.start(), v.range.end())),
                    }
                }
                let covered: Vec<_> = a.covered.iter().map(|(&s, &e)| (s, e)).collect();
                prop_assert_eq!(covered, merged);
            }
        });
    }

    /// The gap search as a walk down every VMA.
    fn naive_gap(a: &AddressSpace, npages: PageCount) -> Option<PageRange> {
        let mut top = CpuVa::new(MMAP_BASE).page_num();
        for v in a.vmas.values().rev() {
            if v.range.start() >= top {
                continue;
            }
            if v.range.end() < top && top.raw() - v.range.end().raw() >= npages.raw() {
                break;
            }
            top = top.min(v.range.start());
        }
        let start = top.raw().checked_sub(npages.raw())?;
        (start >= MMAP_MIN_ADDR / P).then(|| PageRange::new(PageNum::new(start), top))
    }

    #[test]
    fn munmap_and_mprotect_split() {
        let mut a = AddressSpace::new();
        a.mmap(
            Some(CpuVa::new(0x10000)),
            8 * P,
            Prot::RW,
            Backing::Anon,
            Mark::Heap,
        )
        .unwrap();
        a.mprotect(CpuVa::new(0x12000), 2 * P, Prot::parse("r").unwrap())
            .unwrap();
        assert_eq!(
            spans(&a),
            vec![
                (0x10, 0x12, "rw-".into()),
                (0x12, 0x14, "r--".into()),
                (0x14, 0x18, "rw-".into())
            ]
        );
        let gone = a.munmap(CpuVa::new(0x13000), 2 * P).unwrap();
        assert_eq!(gone.len(), 2);
        assert_eq!(
            spans(&a),
            vec![
                (0x10, 0x12, "rw-".into()),
                (0x12, 0x13, "r--".into()),
                (0x15, 0x18, "rw-".into())
            ]
        );
        assert_eq!(
            a.mprotect(CpuVa::new(0x12000), 4 * P, Prot::RW)
                .unwrap_err()
                .errno(),
            Errno::Enomem
        );
        // Linux changes the VMAs before the hole and stops there.
        assert_eq!(spans(&a)[1].2, "rw-");
        // A hole at the start changes nothing.
        let err = a.mprotect(CpuVa::new(0x13000), 3 * P, Prot::default());
        assert_eq!(err.unwrap_err().errno(), Errno::Enomem);
        assert_eq!(spans(&a)[2].2, "rw-");
        assert_eq!(a.mprotect(CpuVa::new(0x13000), 0, Prot::default()), Ok(()));
    }

    #[test]
    fn bad_requests() {
        let mut a = AddressSpace::new();
        let fixed = |a: &mut AddressSpace, addr: u64, len: u64| {
            a.mmap(
                Some(CpuVa::new(addr)),
                len,
                Prot::RW,
                Backing::Anon,
                Mark::None,
            )
            .map(drop)
            .map_err(|e| e.errno())
        };
        // Table: (addr, len, munmap errno, MAP_FIXED mmap result)
        let cases = [
            (0x10001, P, Err(Errno::Einval), Err(Errno::Einval)), // misaligned address
            (0x10000, 0, Err(Errno::Einval), Err(Errno::Einval)), // zero length
            (0x10000, 10, Ok(()), Ok(())),                        // length rounds up
            (0x1000, P, Ok(()), Err(Errno::Eperm)),               // below mmap_min_addr
            (TASK_SIZE, P, Err(Errno::Einval), Err(Errno::Enomem)), // past the top
            (u64::MAX - 0xfff, P, Err(Errno::Einval), Err(Errno::Enomem)), // wraps
        ];
        for (addr, len, unmap, map) in cases {
            let got = a
                .munmap(CpuVa::new(addr), len)
                .map(drop)
                .map_err(|e| e.errno());
            assert_eq!(got, unmap, "munmap {addr:#x}+{len:#x}");
            assert_eq!(fixed(&mut a, addr, len), map, "mmap {addr:#x}+{len:#x}");
        }
        assert_eq!(
            a.vma_at(PageNum::new(0x10)).unwrap().range.npages(),
            PageCount::new(1)
        );
        assert_eq!(
            a.mmap(None, 1 << 50, Prot::RW, Backing::Anon, Mark::None)
                .unwrap_err()
                .errno(),
            Errno::Enomem
        );
        // mprotect: misaligned is EINVAL, a wrapping range ENOMEM.
        assert_eq!(
            a.mprotect(CpuVa::new(0x10001), P, Prot::RW)
                .unwrap_err()
                .errno(),
            Errno::Einval
        );
        assert_eq!(
            a.mprotect(CpuVa::new(0x10000), u64::MAX, Prot::RW)
                .unwrap_err()
                .errno(),
            Errno::Enomem
        );
    }

    #[test]
    fn host_bytes_follow_the_mapping() {
        let mut a = AddressSpace::new();
        let base = CpuVa::new(0x10000);
        a.mmap(Some(base), 4 * P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        let mut buf = [9u8; 4];
        a.read(CpuVa::new(0x10ffe), &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
        a.write(CpuVa::new(0x10ffe), b"wxyz").unwrap();
        a.read(CpuVa::new(0x10ffe), &mut buf).unwrap();
        assert_eq!(&buf, b"wxyz");
        // Read-only and unmapped pages fault.
        a.mprotect(CpuVa::new(0x11000), P, Prot::parse("r").unwrap())
            .unwrap();
        assert_eq!(
            a.write(CpuVa::new(0x11000), b"a").unwrap_err().errno(),
            Errno::Efault
        );
        a.read(CpuVa::new(0x11000), &mut buf[..1]).unwrap();
        assert!(a.read(CpuVa::new(0x20000), &mut buf).is_err());
        // munmap drops the contents; a new mapping reads zero.
        a.munmap(base, 4 * P).unwrap();
        a.mmap(Some(base), 4 * P, Prot::RW, Backing::Anon, Mark::None)
            .unwrap();
        a.read(CpuVa::new(0x10ffe), &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
        assert_eq!(a.pages().populated(), 0);
    }

    #[test]
    fn prot_parse() {
        assert_eq!(Prot::parse("rw").unwrap(), Prot::RW);
        assert_eq!(Prot::parse("r-x").unwrap().to_string(), "r-x");
        assert_eq!(Prot::parse("none").unwrap(), Prot::default());
        assert!(Prot::parse("rq").is_none());
    }
}

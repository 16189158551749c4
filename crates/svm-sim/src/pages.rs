//! A sparse store of 4 KiB pages holding real bytes; pages never written read as zero.
//!
//! Host memory (keyed by virtual page in `crate::mm`) and VRAM (keyed by page
//! offset in `crate::vram`) both keep their contents here. A page that was
//! never written, or was dropped, costs nothing and reads as zeros, which is
//! what a fresh anonymous page or cleared VRAM shows.
//!
//! # Shared pages
//! A page's bytes sit behind a reference count ([`PageBytes`]), so that a
//! wave's load can lend the page it reads instead of copying the bytes
//! out. Writing a page that is still lent copies it first (copy on
//! write): the load keeps the bytes it read, exactly as if they had been
//! copied when it was performed.
//!
//! # Uniform pages
//! A page all of whose 32-bit words hold one value (a fresh zero-filled
//! page, a page a fill wrote whole) shares one page of that value per
//! thread ([`PageStore::fill`]): a store of such pages costs a pointer a
//! page, so a large scenario of uniform data takes little memory. The
//! shared page is never written; the first store to a page copies it
//! (copy on write, as for a lent page). Up to [`MAX_UNIFORM`] values get
//! a shared page; past that a fill writes bytes of its own.
//!
//! # The page pool
//! A page a store drops (unmapped, freed, overwritten by a moved page)
//! goes to a per-thread pool, and the next page a store needs comes from
//! there: churn of pages reuses memory the process already has, instead
//! of returning it to the allocator and faulting fresh pages (which the
//! OS must clear) back in. The pool holds at most [`POOL_PAGES`]: it
//! only holds pages that were live before, so it never raises the peak.
//!
//! # Phantom mode
//! A phantom store keeps no bytes, only which pages were written (one bit
//! a page, in 64-page words): writes are dropped, reads see zeros, and a
//! moved page carries only that it was populated, which is what decides
//! between a copy and a zero fill. Footprints far beyond the host's memory
//! then cost a bit a page.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use svm_core::addr::PAGE_SIZE;

/// Bytes in a page, as a `usize`.
pub const PAGE_BYTES: usize = 1 << svm_core::addr::PAGE_SHIFT;

/// A page's bytes, shared by the store and the loads that lent them (see
/// the module doc).
pub type PageBytes = Rc<[u8; PAGE_BYTES]>;

/// One page moved out of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// Its bytes.
    Bytes(PageBytes),
    /// A populated page of a phantom store (no bytes kept).
    Phantom,
}

/// The byte offset of `addr` inside its page.
fn offset_in_page(addr: u64) -> usize {
    usize::try_from(addr % PAGE_SIZE).expect("a page offset is below 4096")
}

/// Pages the pool keeps at most (64 MiB).
const POOL_PAGES: usize = 1 << 14;

/// Empty groups the pool keeps at most (the groups of 4 GiB of pages).
const POOL_GROUPS: usize = 1 << 14;

/// Values with a shared uniform page, at most (1 MiB of pages a thread).
pub const MAX_UNIFORM: usize = 256;

thread_local! {
    /// Pages no store holds any more (see the module doc).
    static POOL: RefCell<Vec<PageBytes>> = const { RefCell::new(Vec::new()) };
    /// Groups no store holds any more, empty.
    #[allow(clippy::vec_box, reason = "the boxes are what is reused")]
    static GROUP_POOL: RefCell<Vec<Box<Group>>> = const { RefCell::new(Vec::new()) };
    /// The shared page of each value, with its digest (see the module doc).
    static UNIFORM: RefCell<BTreeMap<u32, (PageBytes, u64)>> =
        const { RefCell::new(BTreeMap::new()) };
}

/// A page of its own, to overwrite whole: from the pool (holding what it
/// held) or new.
fn blank_page() -> PageBytes {
    POOL.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Rc::new([0; PAGE_BYTES]))
}

/// A page of zeros of its own.
pub fn zero_page() -> PageBytes {
    let mut p = blank_page();
    Rc::make_mut(&mut p).fill(0);
    p
}

/// A page of its own holding `src`'s bytes.
fn copy_page(src: &[u8; PAGE_BYTES]) -> PageBytes {
    let mut p = blank_page();
    Rc::make_mut(&mut p).copy_from_slice(src);
    p
}

/// Gives a page a store dropped to the pool, unless something else (a
/// load that lent it, the uniform table) still holds it.
fn recycle(p: PageBytes) {
    if Rc::strong_count(&p) == 1 && Rc::weak_count(&p) == 0 {
        POOL.with_borrow_mut(|pool| {
            if pool.len() < POOL_PAGES {
                pool.push(p);
            }
        });
    }
}

/// The shared page every word of which is `word`, and its digest; `None`
/// when [`MAX_UNIFORM`] other values have one (zero always has).
fn uniform(word: u32) -> Option<(PageBytes, u64)> {
    UNIFORM.with_borrow_mut(|u| {
        if let Some((p, d)) = u.get(&word) {
            return Some((Rc::clone(p), *d));
        }
        if u.len() >= MAX_UNIFORM - 1 && word != 0 {
            return None;
        }
        let mut p = Rc::new([0; PAGE_BYTES]);
        for w in Rc::make_mut(&mut p).chunks_exact_mut(4) {
            w.copy_from_slice(&word.to_le_bytes());
        }
        let d = crate::shadow::digest(Some(&p));
        u.insert(word, (Rc::clone(&p), d));
        Some((p, d))
    })
}

/// Whether `p` is a shared uniform page (not a page a load lent).
fn is_uniform(p: &PageBytes) -> bool {
    let word = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    UNIFORM.with_borrow(|u| u.get(&word).is_some_and(|(c, _)| Rc::ptr_eq(c, p)))
}

/// Pages in a group of [`Frames`].
const GROUP: usize = 64;

/// A group of [`GROUP`] consecutive pages, and how many of them hold
/// bytes; with each page's digest (`crate::shadow`) once asked for, kept
/// until the page changes.
#[derive(Clone, Debug)]
struct Group {
    pages: [Option<PageBytes>; GROUP],
    held: u32,
    digests: [Cell<u64>; GROUP],
    /// Which of `digests` are up to date, a bit a page.
    known: Cell<u64>,
}

/// Groups are equal when their pages are (digests are a cache).
impl PartialEq for Group {
    fn eq(&self, other: &Self) -> bool {
        self.held == other.held && self.pages == other.pages
    }
}

impl Eq for Group {}

impl Group {
    /// An empty group: one a store dropped (see the module doc's pool),
    /// or new.
    fn empty() -> Box<Self> {
        GROUP_POOL.with_borrow_mut(Vec::pop).unwrap_or_else(|| {
            Box::new(Self {
                pages: [const { None }; GROUP],
                held: 0,
                digests: [const { Cell::new(0) }; GROUP],
                known: Cell::new(0),
            })
        })
    }

    /// Gives an emptied group to the pool. (Its digests are stale, but
    /// none is known: a page's removal forgot its digest.)
    fn recycle(g: Box<Self>) {
        debug_assert!(g.held == 0 && g.known.get() == 0);
        GROUP_POOL.with_borrow_mut(|pool| {
            if pool.len() < POOL_GROUPS {
                pool.push(g);
            }
        });
    }

    /// Page `i` is about to change: its digest is no longer known.
    #[inline(always)]
    fn touch(&mut self, i: usize) {
        *self.known.get_mut() &= !(1 << i);
    }
}

/// In a VRAM store, groups with keys below this sit in a directory
/// indexed by key (VRAM offsets start at zero; 2^20 keys cover 256 GiB),
/// higher ones in a map. The directory only grows as far as its highest
/// group: 8 bytes for each 64 pages below it. Host stores (virtual pages,
/// anywhere in the address space) keep every group in the map.
const DENSE_GROUPS: u64 = 1 << 20;

/// Pages by number, in groups of [`GROUP`]. A lookup finds the group
/// (an index into the directory for low numbers, else a search of a map
/// with a 64th of the keys a map of pages would have), then indexes an
/// array: a wave's load from VRAM, the simulator's hottest read, never
/// searches. A group costs 512 bytes of pointers, an eighth of a page at
/// worst.
///
/// The directory keeps the length it grew to (shrinking it as groups empty
/// would redo the growth whenever a page near its end comes and goes), so
/// equality compares the groups that exist, not the fields.
#[derive(Clone, Debug, Default)]
struct Frames {
    dense: Vec<Option<Box<Group>>>,
    sparse: BTreeMap<u64, Box<Group>>,
    len: usize,
    /// Groups below this key go in the directory (0: none do).
    dense_limit: u64,
}

impl PartialEq for Frames {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.groups().eq(other.groups())
    }
}

impl Eq for Frames {}

/// Where page `n` is: its group's key and its index there.
#[inline(always)]
fn group_of(n: u64) -> (u64, usize) {
    let i = usize::try_from(n % GROUP as u64).expect("below the group size");
    (n / GROUP as u64, i)
}

/// A dense group key as an index (it is below [`DENSE_GROUPS`]).
#[inline(always)]
fn dense_index(g: u64) -> usize {
    usize::try_from(g).expect("dense keys fit an index")
}

impl Frames {
    /// Group `g`. A wave's load from VRAM comes through here, so the
    /// directory's lookup is always inline and the map's never.
    #[inline(always)]
    fn group(&self, g: u64) -> Option<&Group> {
        if g < self.dense_limit {
            self.dense.get(dense_index(g))?.as_deref()
        } else {
            self.sparse_group(g)
        }
    }

    #[inline(never)]
    fn sparse_group(&self, g: u64) -> Option<&Group> {
        self.sparse.get(&g).map(|b| &**b)
    }

    fn group_mut(&mut self, g: u64) -> Option<&mut Group> {
        if g < self.dense_limit {
            self.dense.get_mut(dense_index(g))?.as_deref_mut()
        } else {
            self.sparse.get_mut(&g).map(|b| &mut **b)
        }
    }

    /// Group `g`, made empty first if it does not exist.
    #[inline]
    fn group_or_empty(&mut self, g: u64) -> &mut Group {
        Self::group_in(&mut self.dense, &mut self.sparse, self.dense_limit, g)
    }

    /// [`Frames::group_or_empty`], borrowing only the two tables.
    #[inline]
    fn group_in<'a>(
        dense: &'a mut Vec<Option<Box<Group>>>,
        sparse: &'a mut BTreeMap<u64, Box<Group>>,
        dense_limit: u64,
        g: u64,
    ) -> &'a mut Group {
        if g < dense_limit {
            let i = dense_index(g);
            if dense.len() <= i {
                dense.resize_with(i + 1, || None);
            }
            dense[i].get_or_insert_with(Group::empty)
        } else {
            sparse.entry(g).or_insert_with(Group::empty)
        }
    }

    /// Forgets group `g`, which holds no page any more.
    fn drop_group(&mut self, g: u64) {
        let gone = if g < self.dense_limit {
            self.dense.get_mut(dense_index(g)).and_then(Option::take)
        } else {
            self.sparse.remove(&g)
        };
        if let Some(group) = gone {
            Group::recycle(group);
        }
    }

    #[inline(always)]
    fn get(&self, n: u64) -> Option<&PageBytes> {
        let (g, i) = group_of(n);
        self.group(g)?.pages[i].as_ref()
    }

    /// Page `n`'s digest: the one kept, or worked out (and kept) if the
    /// page changed since it was last asked for.
    fn digest(&self, n: u64) -> u64 {
        let (g, i) = group_of(n);
        let Some(group) = self.group(g) else {
            return 0;
        };
        let Some(page) = &group.pages[i] else {
            return 0;
        };
        let known = group.known.get();
        if known >> i & 1 == 1 {
            return group.digests[i].get();
        }
        let d = crate::shadow::digest(Some(page));
        group.digests[i].set(d);
        group.known.set(known | 1 << i);
        d
    }

    fn contains(&self, n: u64) -> bool {
        self.get(n).is_some()
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Page `n`, to write, zero-filled first if it holds no bytes yet (and
    /// copied first if it is shared: then the flag says whether it was
    /// lent, not uniform).
    #[inline]
    fn get_or_zero(&mut self, n: u64) -> (&mut [u8; PAGE_BYTES], bool) {
        let (g, i) = group_of(n);
        let group = Self::group_in(&mut self.dense, &mut self.sparse, self.dense_limit, g);
        group.touch(i);
        let slot = &mut group.pages[i];
        if slot.is_none() {
            group.held += 1;
            self.len += 1;
        }
        let page = slot.get_or_insert_with(zero_page);
        let mut lent = false;
        if Rc::strong_count(page) > 1 {
            lent = !is_uniform(page);
            *page = copy_page(page);
        }
        // (Now its own: `make_mut` copies nothing.)
        (Rc::make_mut(page), lent)
    }

    fn insert(&mut self, n: u64, page: PageBytes) {
        let (g, i) = group_of(n);
        let group = self.group_or_empty(g);
        group.touch(i);
        match group.pages[i].replace(page) {
            Some(old) => recycle(old),
            None => {
                group.held += 1;
                self.len += 1;
            }
        }
    }

    /// [`Frames::insert`] of a page whose digest is known.
    fn insert_known(&mut self, n: u64, page: PageBytes, digest: u64) {
        self.insert(n, page);
        let (g, i) = group_of(n);
        let group = self.group_or_empty(g);
        group.digests[i].set(digest);
        group.known.set(group.known.get() | 1 << i);
    }

    /// Pages with bytes of their own (not a shared uniform page).
    fn own(&self) -> usize {
        self.groups()
            .flat_map(|(_, g)| g.pages.iter().flatten())
            .filter(|p| !is_uniform(p))
            .count()
    }

    fn remove(&mut self, n: u64) -> Option<PageBytes> {
        let (g, i) = group_of(n);
        let group = self.group_mut(g)?;
        let page = group.pages[i].take()?;
        group.touch(i);
        group.held -= 1;
        let emptied = group.held == 0;
        self.len -= 1;
        if emptied {
            self.drop_group(g);
        }
        Some(page)
    }

    /// The groups that exist, by key, in order.
    fn groups(&self) -> impl Iterator<Item = (u64, &Group)> + '_ {
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter_map(|(g, e)| Some((g as u64, e.as_deref()?)));
        dense.chain(self.sparse.iter().map(|(&g, b)| (g, &**b)))
    }

    /// The numbers of the pages that hold bytes, in order.
    fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.groups().flat_map(|(g, group)| {
            group
                .pages
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_some())
                .map(move |(i, _)| g * GROUP as u64 + i as u64)
        })
    }

    /// Drops pages `[start, end)`.
    fn drop_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (first, last) = (start / GROUP as u64, (end - 1) / GROUP as u64);
        let dense_end = (last + 1).min(self.dense.len() as u64);
        let mut keys: Vec<u64> = (first..dense_end)
            .filter(|&g| self.dense[dense_index(g)].is_some())
            .collect();
        keys.extend(self.sparse.range(first..=last).map(|(&g, _)| g));
        for g in keys {
            let first = g * GROUP as u64;
            for n in first.max(start)..(first + GROUP as u64).min(end) {
                if let Some(p) = self.remove(n) {
                    recycle(p);
                }
            }
        }
    }
}

/// Pages by number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageStore {
    pages: Frames,
    /// Phantom mode: populated bits, 64 pages a word, by `page / 64`.
    phantom: Option<BTreeMap<u64, u64>>,
}

impl PageStore {
    /// An empty store: every page reads as zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store for VRAM, whose page numbers start at zero (see
    /// [`DENSE_GROUPS`]).
    pub fn for_vram() -> Self {
        Self {
            pages: Frames {
                dense_limit: DENSE_GROUPS,
                ..Frames::default()
            },
            phantom: None,
        }
    }

    /// An empty phantom store (see the module doc).
    pub fn phantom() -> Self {
        Self {
            pages: Frames::default(),
            phantom: Some(BTreeMap::new()),
        }
    }

    /// Whether this store keeps no bytes.
    pub fn is_phantom(&self) -> bool {
        self.phantom.is_some()
    }

    fn set_bit(bits: &mut BTreeMap<u64, u64>, n: u64, on: bool) -> bool {
        let w = bits.entry(n / 64).or_insert(0);
        let mask = 1u64 << (n % 64);
        let was = *w & mask != 0;
        if on {
            *w |= mask;
        } else {
            *w &= !mask;
            if *w == 0 {
                bits.remove(&(n / 64));
            }
        }
        was
    }

    /// Pages that hold bytes (were written and not dropped since).
    pub fn populated(&self) -> usize {
        match &self.phantom {
            Some(b) => b.values().map(|w| w.count_ones() as usize).sum(),
            None => self.pages.len(),
        }
    }

    /// The numbers of the pages that hold bytes, in order.
    pub fn page_numbers(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        match &self.phantom {
            Some(b) => Box::new(b.iter().flat_map(|(&k, &w)| {
                (0..64)
                    .filter(move |i| w >> i & 1 == 1)
                    .map(move |i| k * 64 + i)
            })),
            None => Box::new(self.pages.keys()),
        }
    }

    /// Whether page `n` holds bytes.
    pub fn is_populated(&self, n: u64) -> bool {
        match &self.phantom {
            Some(b) => b.get(&(n / 64)).is_some_and(|w| w >> (n % 64) & 1 == 1),
            None => self.pages.contains(n),
        }
    }

    /// The digest of page `n` (`crate::shadow::digest`), kept from the
    /// last time it was asked for if the page has not changed since: the
    /// bytes checker asks for every page after every step.
    pub fn digest(&self, n: u64) -> u64 {
        self.pages.digest(n)
    }

    /// Page `n`, or `None` if it reads as zero.
    pub fn page(&self, n: u64) -> Option<&[u8; PAGE_BYTES]> {
        self.pages.get(n).map(|p| &**p)
    }

    /// The page holding byte address `addr`, to lend, or `None` if it
    /// reads as zero.
    #[inline(always)]
    pub fn lend(&self, addr: u64) -> Option<&PageBytes> {
        self.pages.get(addr / PAGE_SIZE)
    }

    /// Reads `buf.len()` bytes from byte address `addr` (page `addr / 4096`
    /// onwards), zeros where nothing was written.
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let (n, off) = (at / PAGE_SIZE, offset_in_page(at));
            let len = (PAGE_BYTES - off).min(buf.len() - done);
            match self.pages.get(n) {
                Some(p) => buf[done..done + len].copy_from_slice(&p[off..off + len]),
                None => buf[done..done + len].fill(0),
            }
            done += len;
        }
    }

    /// Appends `len` bytes from byte address `addr` to `out` (what
    /// [`PageStore::read`] would give, without zeroing a buffer first).
    pub fn read_into(&self, addr: u64, len: usize, out: &mut Vec<u8>) {
        let off = offset_in_page(addr);
        if off + len <= PAGE_BYTES {
            // Within one page (a wave's load, usually): no loop.
            match self.pages.get(addr / PAGE_SIZE) {
                Some(p) => out.extend_from_slice(&p[off..off + len]),
                None => out.resize(out.len() + len, 0),
            }
            return;
        }
        let mut done = 0;
        while done < len {
            let at = addr + done as u64;
            let (n, off) = (at / PAGE_SIZE, offset_in_page(at));
            let k = (PAGE_BYTES - off).min(len - done);
            match self.pages.get(n) {
                Some(p) => out.extend_from_slice(&p[off..off + k]),
                None => out.resize(out.len() + k, 0),
            }
            done += k;
        }
    }

    /// Writes `data` at byte address `addr`, populating pages as needed.
    /// Returns whether it had to copy a page that was lent (see the
    /// module doc).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        if let Some(bits) = &mut self.phantom {
            if !data.is_empty() {
                for n in addr / PAGE_SIZE..=(addr + data.len() as u64 - 1) / PAGE_SIZE {
                    Self::set_bit(bits, n, true);
                }
            }
            return false;
        }
        let mut done = 0;
        let mut copied = false;
        while done < data.len() {
            let at = addr + done as u64;
            let (n, off) = (at / PAGE_SIZE, offset_in_page(at));
            let len = (PAGE_BYTES - off).min(data.len() - done);
            let (p, lent) = self.pages.get_or_zero(n);
            p[off..off + len].copy_from_slice(&data[done..done + len]);
            copied |= lent;
            done += len;
        }
        copied
    }

    /// Populates page `n` with zeros if it holds no bytes (a
    /// never-touched anonymous page write-faulted in). Returns whether it
    /// did.
    pub fn fault_in(&mut self, n: u64) -> bool {
        if self.is_populated(n) {
            return false;
        }
        self.fill(n, 0);
        true
    }

    /// Makes every 32-bit word of page `n` hold `word`: a shared uniform
    /// page (see the module doc), or bytes of its own once
    /// [`MAX_UNIFORM`] values have one.
    pub fn fill(&mut self, n: u64, word: u32) {
        if let Some(b) = &mut self.phantom {
            Self::set_bit(b, n, true);
            return;
        }
        match uniform(word) {
            Some((p, d)) => self.pages.insert_known(n, p, d),
            None => {
                let (p, _) = self.pages.get_or_zero(n);
                for w in p.chunks_exact_mut(4) {
                    w.copy_from_slice(&word.to_le_bytes());
                }
            }
        }
    }

    /// Pages that hold bytes of their own: [`PageStore::populated`] less
    /// the pages that share a uniform page (a phantom store: none).
    pub fn own_pages(&self) -> usize {
        if self.is_phantom() {
            return 0;
        }
        self.pages.own()
    }

    /// Removes page `n` and returns its bytes, or `None` if it read as zero.
    pub fn take(&mut self, n: u64) -> Option<Page> {
        match &mut self.phantom {
            Some(b) => Self::set_bit(b, n, false).then_some(Page::Phantom),
            None => self.pages.remove(n).map(Page::Bytes),
        }
    }

    /// Puts bytes at page `n` (`None` makes it read as zero).
    pub fn put(&mut self, n: u64, page: Option<Page>) {
        if let Some(b) = &mut self.phantom {
            Self::set_bit(b, n, page.is_some());
            return;
        }
        match page {
            Some(Page::Bytes(p)) => {
                self.pages.insert(n, p);
            }
            // A phantom page landing in a real store reads as zero.
            Some(Page::Phantom) => self.fill(n, 0),
            None => {
                if let Some(p) = self.pages.remove(n) {
                    recycle(p);
                }
            }
        }
    }

    /// Drops pages `[start, end)`: they read as zero afterwards.
    pub fn drop_range(&mut self, start: u64, end: u64) {
        if let Some(b) = &mut self.phantom {
            let doomed: Vec<u64> = b
                .range(start / 64..end.div_ceil(64))
                .map(|(&k, _)| k)
                .collect();
            for k in doomed {
                for n in (k * 64).max(start)..(k * 64 + 64).min(end) {
                    Self::set_bit(b, n, false);
                }
            }
            return;
        }
        self.pages.drop_range(start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_reads_zero_and_writes_span_pages() {
        let mut s = PageStore::new();
        let mut buf = [0xffu8; 8];
        s.read(0x1ffc, &mut buf);
        assert_eq!(buf, [0; 8]);
        s.write(0x1ffc, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(s.populated(), 2);
        s.read(0x1ffc, &mut buf);
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut one = [0u8; 1];
        s.read(0x2003, &mut one);
        assert_eq!(one, [8]);
    }

    #[test]
    fn take_put_and_drop() {
        let mut s = PageStore::new();
        s.write(0x3000, b"abc");
        let p = s.take(3);
        assert!(matches!(p, Some(Page::Bytes(_))));
        assert!(!s.is_populated(3));
        s.put(7, p);
        assert_eq!(&s.page(7).unwrap()[..3], b"abc");
        s.put(7, None);
        assert_eq!(s.populated(), 0);
        s.write(0x8000, b"x");
        s.write(0x9000, b"y");
        s.drop_range(8, 9);
        assert!(!s.is_populated(8));
        assert!(s.is_populated(9));
    }

    #[test]
    fn a_phantom_store_keeps_only_which_pages_were_written() {
        let mut s = PageStore::phantom();
        s.write(0x1ffc, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(s.populated(), 2);
        let mut buf = [0xffu8; 4];
        s.read(0x1ffc, &mut buf);
        assert_eq!(buf, [0; 4]);
        assert_eq!(s.page_numbers().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s.take(1), Some(Page::Phantom));
        assert_eq!(s.take(1), None);
        s.put(700, Some(Page::Phantom));
        assert!(s.is_populated(700) && s.page(700).is_none());
        s.drop_range(0, 1000);
        assert_eq!(s.populated(), 0);
    }

    /// The grouped store against a map of pages, under random writes,
    /// moves and drops. Fixed seed; on failure the case number is printed.
    #[test]
    fn matches_a_naive_map() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(11);
        for case in 0..100 {
            // Cases alternate between a host store (groups in a map) and
            // a VRAM store (a directory below the limit).
            let mut s = if case % 4 < 2 {
                PageStore::new()
            } else {
                PageStore::for_vram()
            };
            let mut model: BTreeMap<u64, u8> = BTreeMap::new();
            // Odd cases straddle the directory's end, where groups move
            // from the directory to the map.
            let base = if case % 2 == 0 {
                0
            } else {
                DENSE_GROUPS * GROUP as u64 - 150
            };
            for _ in 0..60 {
                let n = base + rng.random_range(0..300u64);
                match rng.random_range(0..4) {
                    0 => {
                        let b = rng.random_range(1..=255u8);
                        s.write(n * PAGE_SIZE + 17, &[b]);
                        model.insert(n, b);
                    }
                    1 => {
                        let got = s.take(n).map(|p| match p {
                            Page::Bytes(b) => b[17],
                            Page::Phantom => 0,
                        });
                        assert_eq!(got, model.remove(&n), "case {case}: take {n}");
                    }
                    2 => {
                        let to = base + rng.random_range(0..300u64);
                        let page = s.take(n);
                        let b = model.remove(&n);
                        s.put(to, page);
                        match b {
                            Some(b) => model.insert(to, b),
                            None => model.remove(&to),
                        };
                    }
                    _ => {
                        let end = n + rng.random_range(0..130u64);
                        s.drop_range(n, end);
                        model.retain(|&k, _| !(n..end).contains(&k));
                    }
                }
                assert_eq!(s.populated(), model.len(), "case {case}");
                let keys: Vec<u64> = s.page_numbers().collect();
                let want: Vec<u64> = model.keys().copied().collect();
                assert_eq!(keys, want, "case {case}");
                for (&k, &b) in &model {
                    let mut one = [0u8];
                    s.read(k * PAGE_SIZE + 17, &mut one);
                    assert_eq!(one[0], b, "case {case}: page {k}");
                }
            }
            // Emptied, the store is equal to a new one (the directory's
            // empty entries do not count).
            s.drop_range(base, base + 500);
            assert_eq!(s, PageStore::new(), "case {case}");
        }
    }

    /// Filled pages share one page of their value until written; a write
    /// copies the page (not reported as a lent page) and changes no other.
    #[test]
    fn filled_pages_share_one_page_until_written() {
        let mut s = PageStore::new();
        for n in 0..1000 {
            s.fill(n, 0xdead_beef);
        }
        s.fault_in(2000);
        assert_eq!((s.populated(), s.own_pages()), (1001, 0));
        let mut word = [0u8; 4];
        s.read(999 * PAGE_SIZE + 4092, &mut word);
        assert_eq!(u32::from_le_bytes(word), 0xdead_beef);
        let before = s.digest(5);
        assert_eq!(before, s.digest(6));
        assert!(
            !s.write(5 * PAGE_SIZE + 8, &[1]),
            "a uniform page is not lent"
        );
        assert_eq!(s.own_pages(), 1);
        assert_ne!(s.digest(5), before);
        assert_eq!(s.digest(6), before);
        assert_eq!(s.digest(5), crate::shadow::digest(s.page(5)));
        s.read(6 * PAGE_SIZE + 8, &mut word);
        assert_eq!(
            u32::from_le_bytes(word),
            0xdead_beef,
            "the shared page is intact"
        );
        s.read(5 * PAGE_SIZE + 8, &mut word);
        assert_eq!(word, [1, 0xbe, 0xad, 0xde]);
        // A moved page stays shared: moving copies no bytes.
        let p = s.take(7);
        let mut vram = PageStore::for_vram();
        vram.put(0, p);
        assert_eq!((vram.populated(), vram.own_pages()), (1, 0));
        // A write to a lent (not uniform) page says so.
        s.write(3000 * PAGE_SIZE, &[9]);
        let lent = Rc::clone(s.lend(3000 * PAGE_SIZE).unwrap());
        assert!(s.write(3000 * PAGE_SIZE + 1, &[9]));
        assert_eq!(lent[1], 0, "the lent page keeps its bytes");
    }

    /// Past [`MAX_UNIFORM`] values, a fill writes bytes of its own, and
    /// they read the same.
    #[test]
    fn fills_past_the_shared_values_hold_bytes_of_their_own() {
        let mut s = PageStore::new();
        let values = u32::try_from(MAX_UNIFORM).unwrap() + 10;
        for v in 1..=values {
            s.fill(u64::from(v), v);
        }
        assert_eq!(s.populated(), MAX_UNIFORM + 10);
        assert!(s.own_pages() >= 10, "{} own pages", s.own_pages());
        for v in 1..=values {
            let mut word = [0u8; 4];
            s.read(u64::from(v) * PAGE_SIZE + 100, &mut word);
            assert_eq!(u32::from_le_bytes(word), v);
            assert_eq!(
                s.digest(u64::from(v)),
                crate::shadow::digest(s.page(u64::from(v)))
            );
        }
        // Zero always has its shared page.
        let own = s.own_pages();
        s.fault_in(100_000);
        assert_eq!(s.own_pages(), own);
    }

    /// Dropped pages go to the pool and come back as the next pages a
    /// store needs, holding the bytes they are given.
    #[test]
    fn dropped_pages_are_reused() {
        let mut s = PageStore::new();
        for n in 0..64 {
            s.write(n * PAGE_SIZE, &[0xaa; 64]);
        }
        let mut before: Vec<*const [u8; PAGE_BYTES]> = (0..64)
            .map(|n| Rc::as_ptr(s.lend(n * PAGE_SIZE).unwrap()))
            .collect();
        s.drop_range(0, 64);
        for n in 100..164 {
            s.write(n * PAGE_SIZE + 1, &[0x55]);
        }
        let mut after: Vec<*const [u8; PAGE_BYTES]> = (100..164)
            .map(|n| Rc::as_ptr(s.lend(n * PAGE_SIZE).unwrap()))
            .collect();
        before.sort_unstable();
        after.sort_unstable();
        assert_eq!(before, after, "the same 64 pages, from the pool");
        // A reused page is zeroed first: only the written byte shows.
        let mut buf = [0xffu8; 4];
        s.read(100 * PAGE_SIZE, &mut buf);
        assert_eq!(buf, [0, 0x55, 0, 0]);
    }
}

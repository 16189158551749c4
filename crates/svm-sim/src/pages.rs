//! A sparse store of 4 KiB pages holding real bytes; pages never written read as zero.
//!
//! Host memory (keyed by virtual page in `crate::mm`) and VRAM (keyed by page
//! offset in `crate::vram`) both keep their contents here. A page that was
//! never written, or was dropped, costs nothing and reads as zeros, which is
//! what a fresh anonymous page or cleared VRAM shows.
//!
//! # Phantom mode
//! A phantom store keeps no bytes, only which pages were written (one bit
//! a page, in 64-page words): writes are dropped, reads see zeros, and a
//! moved page carries only that it was populated, which is what decides
//! between a copy and a zero fill. Footprints far beyond the host's memory
//! then cost a bit a page.

use std::collections::BTreeMap;

use svm_core::addr::PAGE_SIZE;

/// Bytes in a page, as a `usize`.
pub const PAGE_BYTES: usize = 1 << svm_core::addr::PAGE_SHIFT;

/// One page moved out of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// Its bytes.
    Bytes(Box<[u8; PAGE_BYTES]>),
    /// A populated page of a phantom store (no bytes kept).
    Phantom,
}

/// The byte offset of `addr` inside its page.
fn offset_in_page(addr: u64) -> usize {
    usize::try_from(addr % PAGE_SIZE).expect("a page offset is below 4096")
}

fn zero_page() -> Box<[u8; PAGE_BYTES]> {
    Box::new([0; PAGE_BYTES])
}

/// Pages in a group of [`Frames`].
const GROUP: usize = 64;

/// A group of [`GROUP`] consecutive pages, and how many of them hold bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    pages: [Option<Box<[u8; PAGE_BYTES]>>; GROUP],
    held: u32,
}

impl Group {
    fn empty() -> Box<Self> {
        Box::new(Self {
            pages: [const { None }; GROUP],
            held: 0,
        })
    }
}

/// Pages by number, in groups of [`GROUP`]: a lookup searches a map with a
/// 64th of the keys a map of pages would have (accesses hit the same few
/// groups over and over), then indexes an array. A group costs 512 bytes
/// of pointers, an eighth of a page at worst.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Frames {
    groups: BTreeMap<u64, Box<Group>>,
    len: usize,
}

/// Where page `n` is: its group's key and its index there.
fn group_of(n: u64) -> (u64, usize) {
    let i = usize::try_from(n % GROUP as u64).expect("below the group size");
    (n / GROUP as u64, i)
}

impl Frames {
    fn get(&self, n: u64) -> Option<&[u8; PAGE_BYTES]> {
        let (g, i) = group_of(n);
        self.groups.get(&g)?.pages[i].as_deref()
    }

    fn contains(&self, n: u64) -> bool {
        self.get(n).is_some()
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Page `n`, zero-filled first if it holds no bytes yet.
    fn get_or_zero(&mut self, n: u64) -> &mut [u8; PAGE_BYTES] {
        let (g, i) = group_of(n);
        let group = self.groups.entry(g).or_insert_with(Group::empty);
        let slot = &mut group.pages[i];
        if slot.is_none() {
            group.held += 1;
            self.len += 1;
        }
        slot.get_or_insert_with(zero_page)
    }

    fn insert(&mut self, n: u64, page: Box<[u8; PAGE_BYTES]>) {
        let (g, i) = group_of(n);
        let group = self.groups.entry(g).or_insert_with(Group::empty);
        if group.pages[i].replace(page).is_none() {
            group.held += 1;
            self.len += 1;
        }
    }

    fn remove(&mut self, n: u64) -> Option<Box<[u8; PAGE_BYTES]>> {
        let (g, i) = group_of(n);
        let group = self.groups.get_mut(&g)?;
        let page = group.pages[i].take()?;
        group.held -= 1;
        self.len -= 1;
        if group.held == 0 {
            self.groups.remove(&g);
        }
        Some(page)
    }

    /// The numbers of the pages that hold bytes, in order.
    fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.groups.iter().flat_map(|(&g, group)| {
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
        let keys: Vec<u64> = self
            .groups
            .range(start / GROUP as u64..=(end - 1) / GROUP as u64)
            .map(|(&g, _)| g)
            .collect();
        for g in keys {
            let first = g * GROUP as u64;
            for n in first.max(start)..(first + GROUP as u64).min(end) {
                self.remove(n);
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

    /// Page `n`, or `None` if it reads as zero.
    pub fn page(&self, n: u64) -> Option<&[u8; PAGE_BYTES]> {
        self.pages.get(n)
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
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        if let Some(bits) = &mut self.phantom {
            if !data.is_empty() {
                for n in addr / PAGE_SIZE..=(addr + data.len() as u64 - 1) / PAGE_SIZE {
                    Self::set_bit(bits, n, true);
                }
            }
            return;
        }
        let mut done = 0;
        while done < data.len() {
            let at = addr + done as u64;
            let (n, off) = (at / PAGE_SIZE, offset_in_page(at));
            let len = (PAGE_BYTES - off).min(data.len() - done);
            let p = self.pages.get_or_zero(n);
            p[off..off + len].copy_from_slice(&data[done..done + len]);
            done += len;
        }
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
            Some(Page::Phantom) => {
                self.pages.insert(n, zero_page());
            }
            None => {
                self.pages.remove(n);
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
            let mut s = PageStore::new();
            let mut model: BTreeMap<u64, u8> = BTreeMap::new();
            for _ in 0..60 {
                let n = rng.random_range(0..300u64);
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
                        let to = rng.random_range(0..300u64);
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
        }
    }
}

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

/// Pages by number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageStore {
    pages: BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
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
            pages: BTreeMap::new(),
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
            None => Box::new(self.pages.keys().copied()),
        }
    }

    /// Whether page `n` holds bytes.
    pub fn is_populated(&self, n: u64) -> bool {
        match &self.phantom {
            Some(b) => b.get(&(n / 64)).is_some_and(|w| w >> (n % 64) & 1 == 1),
            None => self.pages.contains_key(&n),
        }
    }

    /// Page `n`, or `None` if it reads as zero.
    pub fn page(&self, n: u64) -> Option<&[u8; PAGE_BYTES]> {
        self.pages.get(&n).map(|p| &**p)
    }

    /// Reads `buf.len()` bytes from byte address `addr` (page `addr / 4096`
    /// onwards), zeros where nothing was written.
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let (n, off) = (at / PAGE_SIZE, offset_in_page(at));
            let len = (PAGE_BYTES - off).min(buf.len() - done);
            match self.pages.get(&n) {
                Some(p) => buf[done..done + len].copy_from_slice(&p[off..off + len]),
                None => buf[done..done + len].fill(0),
            }
            done += len;
        }
    }

    /// Appends `len` bytes from byte address `addr` to `out` (what
    /// [`PageStore::read`] would give, without zeroing a buffer first).
    pub fn read_into(&self, addr: u64, len: usize, out: &mut Vec<u8>) {
        let mut done = 0;
        while done < len {
            let at = addr + done as u64;
            let (n, off) = (at / PAGE_SIZE, offset_in_page(at));
            let k = (PAGE_BYTES - off).min(len - done);
            match self.pages.get(&n) {
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
            let p = self.pages.entry(n).or_insert_with(zero_page);
            p[off..off + len].copy_from_slice(&data[done..done + len]);
            done += len;
        }
    }

    /// Removes page `n` and returns its bytes, or `None` if it read as zero.
    pub fn take(&mut self, n: u64) -> Option<Page> {
        match &mut self.phantom {
            Some(b) => Self::set_bit(b, n, false).then_some(Page::Phantom),
            None => self.pages.remove(&n).map(Page::Bytes),
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
                self.pages.remove(&n);
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
        let doomed: Vec<u64> = self.pages.range(start..end).map(|(&n, _)| n).collect();
        for n in doomed {
            self.pages.remove(&n);
        }
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
}

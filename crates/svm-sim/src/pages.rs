//! A sparse store of 4 KiB pages holding real bytes; pages never written read as zero.
//!
//! Host memory (keyed by virtual page in `crate::mm`) and VRAM (keyed by page
//! offset in `crate::vram`) both keep their contents here. A page that was
//! never written, or was dropped, costs nothing and reads as zeros, which is
//! what a fresh anonymous page or cleared VRAM shows.

use std::collections::BTreeMap;

use svm_core::addr::PAGE_SIZE;

/// Bytes in a page, as a `usize`.
pub const PAGE_BYTES: usize = 1 << svm_core::addr::PAGE_SHIFT;

/// One page of bytes.
pub type Page = Box<[u8; PAGE_BYTES]>;

/// The byte offset of `addr` inside its page.
fn offset_in_page(addr: u64) -> usize {
    usize::try_from(addr % PAGE_SIZE).expect("a page offset is below 4096")
}

fn zero_page() -> Page {
    Box::new([0; PAGE_BYTES])
}

/// Pages by number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageStore {
    pages: BTreeMap<u64, Page>,
}

impl PageStore {
    /// An empty store: every page reads as zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pages that hold bytes (were written and not dropped since).
    pub fn populated(&self) -> usize {
        self.pages.len()
    }

    /// The numbers of the pages that hold bytes, in order.
    pub fn page_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.keys().copied()
    }

    /// Whether page `n` holds bytes.
    pub fn is_populated(&self, n: u64) -> bool {
        self.pages.contains_key(&n)
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

    /// Writes `data` at byte address `addr`, populating pages as needed.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
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
        self.pages.remove(&n)
    }

    /// Puts bytes at page `n` (`None` makes it read as zero).
    pub fn put(&mut self, n: u64, page: Option<Page>) {
        match page {
            Some(p) => {
                self.pages.insert(n, p);
            }
            None => {
                self.pages.remove(&n);
            }
        }
    }

    /// Drops pages `[start, end)`: they read as zero afterwards.
    pub fn drop_range(&mut self, start: u64, end: u64) {
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
        assert!(p.is_some());
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
}

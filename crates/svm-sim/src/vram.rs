//! One GPU's VRAM: a buddy-managed arena of pages that hold real bytes.
//!
//! Allocation goes through [`crate::buddy::Buddy`]; contents live in a
//! [`crate::pages::PageStore`] keyed by page offset. Freed pages are dropped,
//! so a new allocation reads as zero, like VRAM cleared on allocation. The
//! engine places a range's pages VA-linearly in such an allocation, as
//! `svm_bo` does.

use crate::buddy::{AllocFlags, Block, Buddy, BuddyError};
use crate::pages::{Page, PageStore};

/// A GPU's VRAM.
#[derive(Clone, Debug)]
pub struct Vram {
    buddy: Buddy,
    data: PageStore,
}

/// A set of blocks that together hold `npages` pages, addressed linearly:
/// page `k` of the allocation is the `k`-th page across the blocks in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VramAlloc {
    blocks: Vec<Block>,
    npages: u64,
}

impl VramAlloc {
    /// The blocks, in the order pages are laid out.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Pages the allocation was asked for (its blocks may hold more when the
    /// request was rounded up to whole minimum-size blocks).
    pub fn npages(&self) -> u64 {
        self.npages
    }

    /// The VRAM page offset of page `k`, or `None` past the end.
    pub fn page(&self, k: u64) -> Option<u64> {
        if k >= self.npages {
            return None;
        }
        let mut k = k;
        for b in &self.blocks {
            if k < b.pages() {
                return Some(b.offset + k);
            }
            k -= b.pages();
        }
        None
    }
}

impl Vram {
    /// VRAM of `pages` pages, all free and zero.
    pub fn new(pages: u64) -> Self {
        Self {
            buddy: Buddy::new(pages),
            data: PageStore::for_vram(),
        }
    }

    /// The allocator, for statistics and checks.
    pub fn buddy(&self) -> &Buddy {
        &self.buddy
    }

    /// Allocates `npages` pages, 2 MiB blocks first, single pages if VRAM is
    /// fragmented.
    ///
    /// # Errors
    /// [`BuddyError::NoSpace`] when the pages are not there.
    pub fn alloc(&mut self, npages: u64) -> Result<VramAlloc, BuddyError> {
        let blocks = self
            .buddy
            .alloc_with_fallback(npages, AllocFlags::default())?;
        Ok(VramAlloc { blocks, npages })
    }

    /// Frees an allocation; its pages read as zero afterwards.
    pub fn free(&mut self, a: VramAlloc) {
        for b in a.blocks {
            self.data.drop_range(b.offset, b.end());
            self.buddy.free(b);
        }
    }

    /// The bytes of VRAM page `offset`, or `None` when it reads as zero.
    pub fn page(&self, offset: u64) -> Option<&[u8; crate::pages::PAGE_BYTES]> {
        self.data.page(offset)
    }

    /// Its bytes, by page offset.
    pub fn store(&self) -> &PageStore {
        &self.data
    }

    /// Keeps no bytes from now on (phantom mode; see `crate::pages`).
    pub fn set_phantom(&mut self) {
        self.data = PageStore::phantom();
    }

    /// Replaces the bytes of VRAM page `offset` (`None` zeroes it).
    pub fn put(&mut self, offset: u64, page: Option<Page>) {
        self.data.put(offset, page);
    }

    /// Makes every word of VRAM page `offset` hold `word`.
    pub fn fill(&mut self, offset: u64, word: u32) {
        self.data.fill(offset, word);
    }

    /// Takes the bytes out of VRAM page `offset`, leaving it zero.
    pub fn take(&mut self, offset: u64) -> Option<Page> {
        self.data.take(offset)
    }

    /// The page holding a VRAM byte address, to lend, or `None` if it
    /// reads as zero.
    #[inline(always)]
    pub fn lend(&self, addr: u64) -> Option<&crate::pages::PageBytes> {
        self.data.lend(addr)
    }

    /// Appends `len` bytes at a VRAM byte address to `out`.
    pub fn read_into(&self, addr: u64, len: usize, out: &mut Vec<u8>) {
        self.data.read_into(addr, len, out);
    }

    /// Reads bytes at a VRAM byte address.
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        self.data.read(addr, buf);
    }

    /// Writes bytes at a VRAM byte address.
    ///
    /// Returns whether it had to copy a page that was lent.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        self.data.write(addr, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_pages_across_blocks() {
        let mut v = Vram::new(4096);
        // Fragment: hold page 0 so the first 2 MiB block is split.
        let hold = v.alloc(1).unwrap();
        let a = v.alloc(1000).unwrap();
        assert_eq!(a.npages(), 1000);
        let pages: Vec<u64> = (0..1000).map(|k| a.page(k).unwrap()).collect();
        let mut sorted = pages.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000, "two pages of one allocation share VRAM");
        assert!(!pages.contains(&hold.page(0).unwrap()));
        assert_eq!(a.page(1000), None);
        v.buddy().check().unwrap();
    }

    #[test]
    fn freed_pages_read_zero() {
        let mut v = Vram::new(64);
        let a = v.alloc(4).unwrap();
        let p = a.page(2).unwrap();
        v.write(p * 4096 + 10, b"hello");
        let mut buf = [0u8; 5];
        v.read(p * 4096 + 10, &mut buf);
        assert_eq!(&buf, b"hello");
        v.free(a);
        let b = v.alloc(64).unwrap();
        assert_eq!(b.page(p), Some(p));
        v.read(p * 4096 + 10, &mut buf);
        assert_eq!(buf, [0; 5]);
        assert_eq!(v.buddy().free_pages(), 0);
    }
}

//! A VRAM page allocator in the style of `drm_buddy`: power-of-two blocks, split on allocation and merged with their buddy on free.
//!
//! # Overview
//! The arena is `total` pages. Like `drm_buddy_init`, a size that is not a
//! power of two is covered by several *roots*, largest first from offset 0;
//! blocks never merge across roots. A block of order `k` covers `2^k` pages
//! and starts at a multiple of `2^k`.
//!
//! [`Buddy::alloc`] gives `npages` as a list of blocks, like
//! `drm_buddy_alloc_blocks`: it takes the largest block that still fits the
//! remaining size and steps down an order whenever none is free, never below
//! the requested minimum. So a fragmented arena still serves a request out of
//! small blocks ([`Buddy::alloc_with_fallback`] first asks for 2 MiB blocks,
//! as amdgpu's VRAM manager does, then for single pages), and a request fails
//! only when the pages are not there. Contiguous requests take one block and
//! give back the tail they do not need, as `drm_buddy_block_trim` does.
//!
//! Choices are deterministic: the lowest suitable address, or the highest for
//! top-down requests, so a run never depends on set iteration order.
//!
//! Every simulated GPU's VRAM (`crate::vram`) is one of these.

use std::collections::{BTreeMap, BTreeSet};

/// The largest block order: 2^40 pages (4 PiB), far beyond any simulated GPU.
pub const MAX_ORDER: u8 = 40;

/// One allocated block: `2^order` pages at page offset `offset` of the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// First page, a multiple of `2^order`.
    pub offset: u64,
    /// log2 of the page count.
    pub order: u8,
}

impl Block {
    /// Pages in the block.
    pub const fn pages(self) -> u64 {
        1 << self.order
    }

    /// One past the last page.
    pub const fn end(self) -> u64 {
        self.offset + self.pages()
    }
}

/// How an allocation may be placed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFlags {
    /// Prefer the highest addresses (`DRM_BUDDY_TOPDOWN_ALLOCATION`).
    pub top_down: bool,
    /// One physically contiguous run (`DRM_BUDDY_CONTIGUOUS_ALLOCATION`).
    pub contiguous: bool,
    /// Only pages in `[start, end)` (`DRM_BUDDY_RANGE_ALLOCATION`).
    pub range: Option<(u64, u64)>,
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuddyError {
    /// Zero pages asked for, or a minimum order above the request.
    #[error("invalid request of {npages} pages with minimum order {min_order}")]
    Invalid { npages: u64, min_order: u8 },
    /// Not enough free blocks of at least the minimum order (ENOSPC).
    #[error(
        "no space for {npages} pages in blocks of order {min_order} or more ({free} pages free)"
    )]
    NoSpace {
        npages: u64,
        min_order: u8,
        free: u64,
    },
}

/// The allocator.
///
/// # Invariants
/// Free and allocated blocks never overlap, together cover the arena, and no
/// two free buddies of one root are both free (they would have merged).
#[derive(Clone, Debug)]
pub struct Buddy {
    total: u64,
    /// Roots as (offset, order), largest first.
    roots: Vec<Block>,
    /// Free blocks by order, by offset.
    free: Vec<BTreeSet<u64>>,
    /// Allocated blocks by offset.
    used: BTreeMap<u64, u8>,
    free_pages: u64,
}

impl Buddy {
    /// An empty arena of `total` pages.
    pub fn new(total: u64) -> Self {
        let mut free = vec![BTreeSet::new(); usize::from(MAX_ORDER) + 1];
        let mut roots = Vec::new();
        let mut offset = 0;
        let mut rest = total;
        while rest > 0 {
            let order = u8::try_from(rest.ilog2())
                .expect("ilog2 of u64 fits in u8")
                .min(MAX_ORDER);
            roots.push(Block { offset, order });
            free[usize::from(order)].insert(offset);
            offset += 1 << order;
            rest -= 1 << order;
        }
        Self {
            total,
            roots,
            free,
            used: BTreeMap::new(),
            free_pages: total,
        }
    }

    /// Pages in the arena.
    pub fn total_pages(&self) -> u64 {
        self.total
    }

    /// Pages not allocated.
    pub fn free_pages(&self) -> u64 {
        self.free_pages
    }

    /// The order of the largest free block, if any page is free.
    pub fn largest_free_order(&self) -> Option<u8> {
        (0..=MAX_ORDER)
            .rev()
            .find(|&o| !self.free[usize::from(o)].is_empty())
    }

    /// Number of free blocks of each order, from order 0 up to the largest.
    pub fn free_blocks_by_order(&self) -> Vec<usize> {
        let top = self.largest_free_order().map_or(0, |o| usize::from(o) + 1);
        self.free[..top].iter().map(BTreeSet::len).collect()
    }

    /// Allocated blocks in address order.
    pub fn allocated(&self) -> impl Iterator<Item = Block> + '_ {
        self.used
            .iter()
            .map(|(&offset, &order)| Block { offset, order })
    }

    /// Free blocks in address order.
    pub fn free_blocks(&self) -> Vec<Block> {
        let mut v: Vec<Block> = self
            .free
            .iter()
            .enumerate()
            .flat_map(|(o, set)| {
                let order = u8::try_from(o).expect("order index fits in u8");
                set.iter().map(move |&offset| Block { offset, order })
            })
            .collect();
        v.sort();
        v
    }

    /// The root that holds page `offset`.
    fn root_of(&self, offset: u64) -> Block {
        *self
            .roots
            .iter()
            .find(|r| r.offset <= offset && offset < r.end())
            .expect("offset inside the arena")
    }

    /// The best free block containing an aligned run of `2^order` pages in
    /// the allowed window, and where that run starts.
    fn find(&self, order: u8, flags: AllocFlags) -> Option<(Block, u64)> {
        let size = 1u64 << order;
        let (lo, hi) = flags.range.unwrap_or((0, self.total));
        let mut best: Option<(Block, u64)> = None;
        for o in order..=MAX_ORDER {
            for &offset in &self.free[usize::from(o)] {
                let b = Block { offset, order: o };
                let (s, e) = (b.offset.max(lo), b.end().min(hi));
                if s >= e {
                    continue;
                }
                let first = s.next_multiple_of(size);
                let last = (e / size)
                    .checked_mul(size)
                    .and_then(|x| x.checked_sub(size));
                let pick = if flags.top_down {
                    last.filter(|&l| l >= s)
                } else {
                    Some(first).filter(|&f| f + size <= e)
                };
                let Some(at) = pick else { continue };
                let better = match best {
                    None => true,
                    Some((bb, bat)) if flags.top_down => {
                        at > bat || (at == bat && b.order < bb.order)
                    }
                    Some((bb, bat)) => {
                        // Bottom-up without a window is the classic buddy
                        // choice: the smallest order that fits, lowest first.
                        if flags.range.is_none() {
                            b.order < bb.order
                        } else {
                            at < bat
                        }
                    }
                };
                if better {
                    best = Some((b, at));
                }
            }
            if best.is_some() && !flags.top_down && flags.range.is_none() {
                break;
            }
        }
        best
    }

    /// Takes the aligned run of `2^order` pages at `at` out of free block `b`,
    /// splitting `b` and freeing the halves it does not need.
    fn carve(&mut self, b: Block, at: u64, order: u8) -> Block {
        let removed = self.free[usize::from(b.order)].remove(&b.offset);
        assert!(removed, "carving a block that is not free");
        let mut cur = b;
        while cur.order > order {
            let half = cur.order - 1;
            let lower = Block {
                offset: cur.offset,
                order: half,
            };
            let upper = Block {
                offset: cur.offset + (1 << half),
                order: half,
            };
            let (keep, spare) = if at < upper.offset {
                (lower, upper)
            } else {
                (upper, lower)
            };
            self.free[usize::from(half)].insert(spare.offset);
            cur = keep;
        }
        debug_assert_eq!(cur.offset, at, "carve landed off target");
        self.used.insert(cur.offset, cur.order);
        self.free_pages -= cur.pages();
        cur
    }

    /// Allocates one block of exactly `2^order` pages, or `None`.
    pub fn alloc_block(&mut self, order: u8, flags: AllocFlags) -> Option<Block> {
        let (b, at) = self.find(order, flags)?;
        Some(self.carve(b, at, order))
    }

    /// Allocates `npages` pages as blocks of order `min_order` or more
    /// (`drm_buddy_alloc_blocks`). The request is rounded up to whole
    /// minimum-size blocks; contiguous requests are one block with its
    /// unneeded tail given back.
    ///
    /// # Errors
    /// [`BuddyError::Invalid`] for zero pages; [`BuddyError::NoSpace`] when the
    /// pages cannot be found, and then nothing stays allocated.
    pub fn alloc(
        &mut self,
        npages: u64,
        min_order: u8,
        flags: AllocFlags,
    ) -> Result<Vec<Block>, BuddyError> {
        if npages == 0 || min_order > MAX_ORDER {
            return Err(BuddyError::Invalid { npages, min_order });
        }
        let no_space = |s: &Self| BuddyError::NoSpace {
            npages,
            min_order,
            free: s.free_pages,
        };
        let unit = 1u64 << min_order;
        let want = npages
            .checked_next_multiple_of(unit)
            .ok_or_else(|| no_space(self))?;
        if want > self.free_pages {
            return Err(no_space(self));
        }
        if flags.contiguous {
            let order = u8::try_from(want.next_power_of_two().ilog2()).expect("fits in u8");
            if order > MAX_ORDER {
                return Err(no_space(self));
            }
            let b = self
                .alloc_block(order, flags)
                .ok_or_else(|| no_space(self))?;
            return Ok(self.trim(b, want));
        }
        let mut got = Vec::new();
        let mut rest = want;
        let mut order = u8::try_from(rest.ilog2())
            .expect("fits in u8")
            .min(MAX_ORDER);
        while rest > 0 {
            // Never take more than what is left to allocate.
            while (1u64 << order) > rest {
                order -= 1;
            }
            match self.alloc_block(order, flags) {
                Some(b) => {
                    rest -= b.pages();
                    got.push(b);
                }
                None if order > min_order => order -= 1,
                None => {
                    for b in got {
                        self.free(b);
                    }
                    return Err(no_space(self));
                }
            }
        }
        got.sort();
        Ok(got)
    }

    /// [`Buddy::alloc`] with 2 MiB blocks when the request is a multiple of
    /// 2 MiB, falling back to single pages when that fails, as amdgpu's VRAM
    /// manager retries with a smaller minimum block size.
    ///
    /// # Errors
    /// As [`Buddy::alloc`] with minimum order 0.
    pub fn alloc_with_fallback(
        &mut self,
        npages: u64,
        flags: AllocFlags,
    ) -> Result<Vec<Block>, BuddyError> {
        const ORDER_2M: u8 = 9;
        if npages >= 1 << ORDER_2M
            && npages % (1 << ORDER_2M) == 0
            && let Ok(blocks) = self.alloc(npages, ORDER_2M, flags)
        {
            return Ok(blocks);
        }
        self.alloc(npages, 0, flags)
    }

    /// Keeps the first `keep` pages of an allocated block and frees the rest
    /// (`drm_buddy_block_trim`); returns the blocks kept, in address order.
    fn trim(&mut self, b: Block, keep: u64) -> Vec<Block> {
        let end = b.offset + keep;
        // Split `b` into the aligned sub-blocks that lie wholly before or
        // wholly after `end`.
        let (mut kept, mut spare) = (Vec::new(), Vec::new());
        let mut stack = vec![b];
        while let Some(x) = stack.pop() {
            if x.end() <= end {
                kept.push(x);
            } else if x.offset >= end {
                spare.push(x);
            } else {
                let half = x.order - 1;
                stack.push(Block {
                    offset: x.offset + (1 << half),
                    order: half,
                });
                stack.push(Block {
                    offset: x.offset,
                    order: half,
                });
            }
        }
        self.used.remove(&b.offset);
        for x in kept.iter().chain(&spare) {
            self.used.insert(x.offset, x.order);
        }
        // Freeing the spare pieces merges them back with their buddies.
        for x in spare {
            self.free(x);
        }
        kept.sort();
        kept
    }

    /// Frees an allocated block and merges it with free buddies.
    ///
    /// # Panics
    /// If the block is not allocated as given: a double free is a bug in the
    /// caller, never an input error.
    pub fn free(&mut self, b: Block) {
        assert_eq!(
            self.used.remove(&b.offset),
            Some(b.order),
            "freeing a block that is not allocated: {b:?}"
        );
        self.free_pages += b.pages();
        let root = self.root_of(b.offset);
        let mut cur = b;
        while cur.order < root.order {
            let buddy = cur.offset ^ (1 << cur.order);
            if !self.free[usize::from(cur.order)].remove(&buddy) {
                break;
            }
            cur = Block {
                offset: cur.offset.min(buddy),
                order: cur.order + 1,
            };
        }
        self.free[usize::from(cur.order)].insert(cur.offset);
    }

    /// Checks the invariants: free and used blocks are aligned, disjoint,
    /// cover the arena, no two free buddies coexist, and the free count adds up.
    ///
    /// # Errors
    /// The first violation.
    pub fn check(&self) -> Result<(), String> {
        let mut all: Vec<(Block, bool)> =
            self.free_blocks().into_iter().map(|b| (b, true)).collect();
        all.extend(self.allocated().map(|b| (b, false)));
        all.sort();
        let mut at = 0;
        let mut free = 0;
        for &(b, is_free) in &all {
            if b.offset % b.pages() != 0 {
                return Err(format!("{b:?} is not aligned"));
            }
            if b.offset != at {
                return Err(format!("{b:?} does not start at {at} (gap or overlap)"));
            }
            at = b.end();
            if is_free {
                free += b.pages();
                let root = self.root_of(b.offset);
                let buddy = b.offset ^ (1 << b.order);
                if b.order < root.order && self.free[usize::from(b.order)].contains(&buddy) {
                    return Err(format!("{b:?} and its buddy are both free"));
                }
            }
        }
        if at != self.total {
            return Err(format!("blocks cover {at} of {} pages", self.total));
        }
        if free != self.free_pages {
            return Err(format!(
                "free count {} but free blocks hold {free}",
                self.free_pages
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

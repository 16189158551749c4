//! NVIDIA UVM's density prefetch over one 2 MiB va_block, as driver
//! 595.45.04 computes it (`uvm_perf_prefetch.c`; `docs/research/uvm.md`
//! §2 has the whole specification with line numbers).
//!
//! When a block's faults of one batch all go to one processor, UVM adds
//! to them the pages of the block that a bitmap tree says are dense
//! enough: the tree's leaves are the block's pages, set where a page is
//! resident on the destination or faulted; a faulted page pulls in the
//! largest aligned subtree around it whose set leaves are strictly more
//! than `threshold` percent of it (51 by default). Before that, every
//! 64 KiB big page holding a fault and no thrashing page is set whole, so
//! a lone fault yields at least its big page.
//!
//! Steps, numbered as `uvm_perf_prefetch_prenotify_fault_migrations`
//! takes them for a GPU destination (the first-touch and
//! preferred-location cases around them are the policy's):
//! 1. leaves = resident | faulted (`init_bitmap_tree_from_region`);
//! 2. if the block does not start on a big page, the tree is shifted by
//!    `offset` so that its nodes line up with big pages
//!    (`update_bitmap_tree_from_va_block`);
//! 3. big pages (and the prefix and suffix outside whole big pages, one
//!    unit each) with a fault and no thrashing page are set whole
//!    (`grow_fault_granularity`);
//! 4. each faulted page that is not thrashing takes the largest
//!    qualifying subtree, walking from its leaf to the root
//!    (`compute_prefetch_region`), and the union is taken
//!    (`compute_prefetch_mask`);
//! 5. the faulted pages and the thrashing pages are removed.
//!
//! One quirk is kept as the driver has it: turning a subtree back into
//! block pages, a subtree that starts in the shift's padding starts at
//! block page `offset` rather than 0 (the clamp compares a block index
//! with a tree index), so in a block that starts `16 - offset` pages
//! before its first big page, pages below `offset` are never prefetched.

/// Pages in a va_block (2 MiB of 4 KiB pages).
pub const BLOCK_PAGES: usize = 512;

/// Pages in a big page (64 KiB).
pub const BIG_PAGE_PAGES: usize = 16;

/// UVM's default `uvm_perf_prefetch_threshold`, in percent.
pub const DEFAULT_THRESHOLD: u32 = 51;

/// A set of a va_block's pages, bit `i` for the block's page `i`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMask([u64; BLOCK_PAGES / 64]);

impl BlockMask {
    /// No page.
    pub const EMPTY: Self = Self([0; BLOCK_PAGES / 64]);

    /// Pages `[start, end)` (clipped to the block).
    pub fn range(start: usize, end: usize) -> Self {
        let mut m = Self::EMPTY;
        for i in start..end.min(BLOCK_PAGES) {
            m.set(i);
        }
        m
    }

    /// Adds page `i` (ignored past the block).
    pub fn set(&mut self, i: usize) {
        if i < BLOCK_PAGES {
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    /// Whether page `i` is in.
    pub fn get(&self, i: usize) -> bool {
        i < BLOCK_PAGES && self.0[i / 64] >> (i % 64) & 1 == 1
    }

    /// Pages in.
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether no page is in.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The pages in, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..BLOCK_PAGES).filter(|&i| self.get(i))
    }

    /// Pages of `[start, end)` that are in.
    fn count_in(&self, start: usize, end: usize) -> usize {
        (start..end.min(BLOCK_PAGES))
            .filter(|&i| self.get(i))
            .count()
    }

    /// The pages of `self` not in `other`.
    #[must_use]
    pub fn minus(&self, other: &Self) -> Self {
        Self(std::array::from_fn(|k| self.0[k] & !other.0[k]))
    }

    /// The pages of either.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        Self(std::array::from_fn(|k| self.0[k] | other.0[k]))
    }

    /// The runs of consecutive pages in, as `[start, end)`, in order.
    pub fn runs(&self) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for p in self.iter() {
            match out.last_mut() {
                Some((_, end)) if *end == p => *end += 1,
                _ => out.push((p, p + 1)),
            }
        }
        out
    }
}

/// One va_block as the prefetch sees it.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// Its pages (at most [`BLOCK_PAGES`]: a block ends where its range
    /// or its 2 MiB does).
    pub pages: usize,
    /// Where its first page lies within a big page (its virtual page
    /// number modulo [`BIG_PAGE_PAGES`]): big pages are aligned in the
    /// address space, not in the block.
    pub phase: usize,
}

/// The pages the tree adds to a block's faults (step 5's result): never
/// a faulted page, never a thrashing page, never past the block.
pub fn prefetch(
    block: Block,
    resident: &BlockMask,
    faulted: &BlockMask,
    thrashing: &BlockMask,
    threshold: u32,
) -> BlockMask {
    let n = block.pages.min(BLOCK_PAGES);
    if n == 0 {
        return BlockMask::EMPTY;
    }
    // The block's whole big pages: [first_big, big_end).
    let first_big = (BIG_PAGE_PAGES - block.phase % BIG_PAGE_PAGES) % BIG_PAGE_PAGES;
    let whole = n.saturating_sub(first_big) / BIG_PAGE_PAGES;
    let big = (whole > 0).then(|| (first_big, first_big + whole * BIG_PAGE_PAGES));

    // Steps 1-2: the leaves, shifted by `offset` when the block starts
    // inside a big page (tree leaf `i + offset` is block page `i`).
    let offset = match big {
        Some((first, _)) if first > 0 => BIG_PAGE_PAGES - first,
        _ => 0,
    };
    let leaf_count = n + offset;
    let level_count = leaf_count.next_power_of_two().ilog2() as usize + 1;
    let mut tree = vec![false; leaf_count];
    for i in 0..n {
        tree[i + offset] = resident.get(i) || faulted.get(i);
    }

    // Step 3: units with a fault and no thrashing page are set whole.
    let mut units = Vec::new();
    match big {
        None => units.push((0, n)),
        Some((first, end)) => {
            if first > 0 {
                units.push((0, first));
            }
            units.extend(
                (first..end)
                    .step_by(BIG_PAGE_PAGES)
                    .map(|p| (p, p + BIG_PAGE_PAGES)),
            );
            if end < n {
                units.push((end, n));
            }
        }
    }
    for (start, end) in units {
        if faulted.count_in(start, end) > 0 && thrashing.count_in(start, end) == 0 {
            tree[start + offset..end + offset].fill(true);
        }
    }

    // Step 4: each faulted page that is not thrashing takes the largest
    // subtree around it that is dense enough (a higher level overwrites
    // a lower one; density need not grow with the level).
    let mut out = BlockMask::EMPTY;
    for p in faulted.minus(thrashing).iter().filter(|&p| p < n) {
        let leaf = p + offset;
        let mut region = None;
        for level in (0..level_count).rev() {
            let leaves = 1usize << (level_count - 1 - level);
            let start = leaf / leaves * leaves;
            let end = (start + leaves).min(leaf_count);
            let set = tree[start..end].iter().filter(|&&b| b).count();
            if set as u64 * 100 > (end - start) as u64 * u64::from(threshold) {
                region = Some((start, end));
            }
        }
        let Some((start, end)) = region else {
            continue;
        };
        // Back to block pages, with the driver's clamp (see the module
        // doc's quirk).
        let first = if start < offset {
            offset
        } else {
            start - offset
        };
        let outer = if end < offset {
            offset
        } else {
            (end - offset).min(n)
        };
        for i in first..outer {
            out.set(i);
        }
        if outer == n {
            // (The driver stops once a region reaches the block's end.)
            break;
        }
    }
    // Step 5.
    out.minus(faulted).minus(thrashing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIGNED: Block = Block {
        pages: BLOCK_PAGES,
        phase: 0,
    };

    fn faults(pages: &[usize]) -> BlockMask {
        let mut m = BlockMask::EMPTY;
        for &p in pages {
            m.set(p);
        }
        m
    }

    /// The hint for faults on `pages` of an aligned block, at the default
    /// threshold.
    fn hint(resident: &BlockMask, pages: &[usize], thrashing: &BlockMask) -> BlockMask {
        prefetch(
            ALIGNED,
            resident,
            &faults(pages),
            thrashing,
            DEFAULT_THRESHOLD,
        )
    }

    /// With the faulted pages, what a fault of `pages` migrates.
    fn served(block: Block, resident: &BlockMask, pages: &[usize]) -> Vec<(usize, usize)> {
        let f = faults(pages);
        let all = prefetch(block, resident, &f, &BlockMask::EMPTY, DEFAULT_THRESHOLD).union(&f);
        runs(&all)
    }

    fn runs(m: &BlockMask) -> Vec<(usize, usize)> {
        m.runs()
    }

    /// The specification's worked examples, on a fresh aligned block.
    #[test]
    fn the_worked_examples() {
        let none = BlockMask::EMPTY;
        // One fault: its 64 KiB (128 KiB would be 16/32 = 50 %, not > 51).
        assert_eq!(served(ALIGNED, &none, &[37]), [(32, 48)]);
        // Faults in both big pages of a 128 KiB subtree: 128 KiB.
        assert_eq!(served(ALIGNED, &none, &[33, 50]), [(32, 64)]);
        // Faults in 3 of the 4 big pages of a 256 KiB subtree: 48/64.
        assert_eq!(served(ALIGNED, &none, &[0, 20, 40]), [(0, 64)]);
        // Two far apart: two big pages, nothing between.
        assert_eq!(served(ALIGNED, &none, &[5, 300]), [(0, 16), (288, 304)]);
    }

    /// Pages already resident on the destination count as set: a fault
    /// late in a half-resident block pulls in much of it.
    #[test]
    fn resident_pages_make_the_tree_denser() {
        let half = BlockMask::range(0, 256);
        // 256 resident + 16 grown of the 512: the root is 272/512 = 53 %.
        let got = hint(&half, &[300], &BlockMask::EMPTY);
        assert_eq!(runs(&got), [(0, 300), (301, 512)]);
        // Resident pages are in the region too: the policy moves only
        // what is not there yet.
        let mostly = BlockMask::range(0, 240);
        let got = hint(&mostly, &[300], &BlockMask::EMPTY);
        // 240 + 16 = 256 of 512 is 50 %: not the root; the 256-page
        // subtree at 256 holds only the grown 16: its 64 KiB.
        assert_eq!(runs(&got), [(288, 300), (301, 304)]);
    }

    /// A thrashing page is neither grown around nor prefetched, and
    /// faults on it pull in nothing.
    #[test]
    fn thrashing_pages_are_left_alone() {
        let thrash = faults(&[40]);
        let got = hint(&BlockMask::EMPTY, &[33, 40], &thrash);
        // The big page [32, 48) holds a thrashing page: not grown, and
        // page 33 alone is 1 of 2, 1 of 4, ...: only itself.
        assert!(got.is_empty(), "{:?}", runs(&got));
        let got = hint(&BlockMask::EMPTY, &[40], &thrash);
        assert!(got.is_empty());
    }

    /// A block shorter than 2 MiB (its range ends) and one that starts
    /// inside a big page: the tree is cut at the block and shifted to
    /// big pages, and the prefix below the shift is never prefetched (the
    /// driver's clamp).
    #[test]
    fn short_and_unaligned_blocks() {
        let none = BlockMask::EMPTY;
        let short = Block {
            pages: 40,
            phase: 0,
        };
        // Big pages [0,16) [16,32), suffix [32,40): a fault in the
        // suffix takes the suffix whole. Subtrees are cut at the block's
        // end, so [32,64) counts as its 8 pages, all set: it qualifies,
        // and the root's 8 of 40 does not.
        assert_eq!(served(short, &none, &[35]), [(32, 40)]);
        // A block 10 pages before its first big page: offset 6.
        let unaligned = Block {
            pages: 100,
            phase: 6,
        };
        // A fault in the prefix [0,10): the prefix is grown, the subtree
        // of tree leaves [0,16) is 10/16 dense, so it qualifies; back in
        // block pages it starts at 6, not 0.
        assert_eq!(served(unaligned, &none, &[2]), [(2, 3), (6, 10)]);
        // A fault in a whole big page behaves as in an aligned block.
        assert_eq!(served(unaligned, &none, &[30]), [(26, 42)]);
        // So the clamp can make a lower threshold prefetch less: with the
        // prefix resident, the subtree of tree leaves [0,32) is 22/32
        // dense; at 75 % the big page [6,22) is all, at 51 % the larger
        // subtree wins and comes back as [10,22).
        let block = Block {
            pages: 273,
            phase: 10,
        };
        let prefix = BlockMask::range(0, 6);
        let at = |t| {
            let f = faults(&[8]);
            runs(&prefetch(block, &prefix, &f, &BlockMask::EMPTY, t).union(&f))
        };
        assert_eq!(at(75), [(6, 22)]);
        assert_eq!(at(51), [(8, 9), (10, 22)]);
    }

    /// Lowering the threshold never takes pages away, except below the
    /// shift where the driver's clamp drops them (a larger subtree that
    /// reaches into the padding starts at `offset`); and the result never
    /// holds a faulted or thrashing page (random blocks, fixed seed; a
    /// failure prints its case).
    #[test]
    fn lower_thresholds_prefetch_supersets() {
        let mut x: u64 = 0x5eed;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for case in 0..300 {
            let block = Block {
                pages: 1 + usize::try_from(next(512)).unwrap(),
                phase: usize::try_from(next(16)).unwrap(),
            };
            let mut masks = [BlockMask::EMPTY; 3];
            for (k, m) in masks.iter_mut().enumerate() {
                let n = next([40, 12, 3][k]);
                for _ in 0..n {
                    m.set(usize::try_from(next(block.pages as u64)).unwrap());
                }
            }
            let [resident, faulted, thrashing] = masks;
            let first_big = (16 - block.phase % 16) % 16;
            let offset = if first_big > 0 && block.pages >= first_big + 16 {
                16 - first_big
            } else {
                0
            };
            let mut last: Option<BlockMask> = None;
            for t in [90, 75, 51, 30, 10] {
                let got = prefetch(block, &resident, &faulted, &thrashing, t);
                assert!(
                    got.iter()
                        .all(|p| p < block.pages && !faulted.get(p) && !thrashing.get(p)),
                    "case {case} threshold {t}: {block:?}"
                );
                if let Some(prev) = last {
                    assert!(
                        prev.minus(&got).iter().all(|p| p < offset),
                        "case {case}: threshold {t} dropped pages {:?} ({block:?})",
                        runs(&prev.minus(&got))
                    );
                }
                last = Some(got);
            }
        }
    }
}

//! The shadow model of a process's memory: for each virtual page, a
//! digest of what its accesses wrote there, which the bytes checker
//! (`crate::check`) compares with the page wherever it lies.
//!
//! # Why a digest, not a copy
//! A copy of every written page would double the host memory a run takes
//! and copy every store twice. A digest costs 8 bytes a page, and a store
//! updates it in time proportional to the bytes stored.
//!
//! # The digest
//! A page is 1024 little-endian 32-bit lanes `x_i`; its digest is the
//! linear form `L(x) = Σ W_i · x_i mod 2^64`, with fixed odd 32-bit
//! weights `W_i` drawn once from a seeded generator (products of 32-bit
//! numbers, which the host does several at a time). Because `L` is
//! linear, a store that changes the lanes `S` of the page where it lands,
//! from `r` to `r'`, adds `L(r') − L(r)` (summed over `S` only) to the
//! expected digest `E` of the virtual page it was meant for. So
//! `E − L(R)`, with `R` the page's real bytes, changes only when memory
//! changes in a way no access asked for: a page migrated without its
//! bytes, a store through a stale mapping to a page that is no longer
//! where the data lives, bytes written behind the model's back. Once
//! nonzero it stays so, even if later stores overwrite the damage, and the
//! checker reports the page.
//!
//! Every change of a single lane is found (an odd weight times a nonzero
//! difference below 2^32 is not a multiple of 2^64). Changes of several
//! lanes escape with a chance of about 2^-32 (nothing in the simulator
//! chooses bytes against the weights); a broken migration changes many
//! pages, and each is a separate chance to be caught.
//!
//! A phantom machine keeps no bytes, so its shadow records nothing.

use std::collections::BTreeMap;

use svm_core::addr::PAGE_SIZE;

use crate::pages::{PAGE_BYTES, PageStore};

/// Lanes in a page.
const LANES: usize = PAGE_BYTES / 4;

/// The weights, one per lane: odd.
static WEIGHTS: [u32; LANES] = weights();

const fn weights() -> [u32; LANES] {
    let mut w = [0u32; LANES];
    let mut state: u64 = 0x5eed_5ad0_u64;
    let mut i = 0;
    while i < LANES {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        w[i] = (z >> 32) as u32 | 1;
        i += 1;
    }
    w
}

/// `Σ W_i · x_i mod 2^64` over lanes `lanes` of `page` (a page that reads
/// as zero: `None`).
#[inline]
fn partial(page: Option<&[u8; PAGE_BYTES]>, lanes: std::ops::Range<usize>) -> u64 {
    let Some(page) = page else { return 0 };
    let bytes = &page[lanes.start * 4..lanes.end * 4];
    bytes
        .chunks_exact(4)
        .zip(&WEIGHTS[lanes])
        .fold(0u64, |acc, (x, &w)| {
            let x = u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            acc.wrapping_add(u64::from(w) * u64::from(x))
        })
}

/// The digest of a whole page (`None`: a page that reads as zero, whose
/// digest is 0).
pub fn digest(page: Option<&[u8; PAGE_BYTES]>) -> u64 {
    partial(page, 0..LANES)
}

/// The lanes a store of `len` bytes at offset `off` in its page touches.
#[inline]
pub fn lanes(off: usize, len: usize) -> std::ops::Range<usize> {
    off / 4..(off + len).div_ceil(4).min(LANES)
}

/// Digests in groups of 64 pages, each with which of its pages were
/// written.
const GROUP: usize = 64;

/// Page `n`'s group key and its index there.
#[inline]
fn split(n: u64) -> (u64, usize) {
    let i = usize::try_from(n % GROUP as u64).expect("below the group size");
    (n / GROUP as u64, i)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    digests: [u64; GROUP],
    written: u64,
}

/// Expected digests by virtual page (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shadow {
    groups: BTreeMap<u64, Box<Group>>,
    /// Phantom mode: nothing is recorded.
    off: bool,
}

impl Shadow {
    /// An empty shadow: every page is expected to read as zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shadow that records nothing (phantom mode).
    pub fn phantom() -> Self {
        Self {
            groups: BTreeMap::new(),
            off: true,
        }
    }

    /// Whether it records nothing.
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// What page `n` is expected to digest to.
    pub fn expected(&self, n: u64) -> u64 {
        let (k, i) = split(n);
        self.groups.get(&k).map_or(0, |g| g.digests[i])
    }

    /// Pages written (and not dropped since), in order.
    pub fn page_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.groups.iter().flat_map(|(&k, g)| {
            (0..GROUP as u64)
                .filter(move |i| g.written >> i & 1 == 1)
                .map(move |i| k * GROUP as u64 + i)
        })
    }

    /// Pages written (and not dropped since).
    pub fn populated(&self) -> usize {
        self.groups
            .values()
            .map(|g| g.written.count_ones() as usize)
            .sum()
    }

    /// Records a store meant for virtual page `n`: `before` and `after`
    /// are [`partial`] sums of the lanes it changed, read where it landed
    /// before and after it.
    fn add(&mut self, n: u64, before: u64, after: u64) {
        let (k, i) = split(n);
        let g = self.groups.entry(k).or_insert_with(|| {
            Box::new(Group {
                digests: [0; GROUP],
                written: 0,
            })
        });
        g.digests[i] = g.digests[i].wrapping_add(after).wrapping_sub(before);
        g.written |= 1 << i;
    }

    /// Writes `data` at byte offset `off` of a page through `write`,
    /// recording it for virtual page `n`: `page` reads the page where the
    /// store lands, before and after. Returns what `write` returned.
    ///
    /// Every store goes through here, so that no byte changes without the
    /// model seeing it.
    pub fn store<S, R>(
        &mut self,
        n: u64,
        (off, len): (usize, usize),
        store: &mut S,
        page: impl Fn(&S) -> Option<&[u8; PAGE_BYTES]>,
        write: impl FnOnce(&mut S) -> R,
    ) -> R {
        if self.off {
            return write(store);
        }
        let lanes = lanes(off, len);
        let before = partial(page(store), lanes.clone());
        let r = write(store);
        let after = partial(page(store), lanes);
        self.add(n, before, after);
        r
    }

    /// Writes `data` at virtual address `addr` of host memory `mem`, page
    /// by page through [`Shadow::store`]. Returns whether a page had to
    /// be copied because it was lent (see `crate::pages`).
    pub fn write_host(&mut self, mem: &mut PageStore, addr: u64, data: &[u8]) -> bool {
        if self.off {
            return mem.write(addr, data);
        }
        let mut copied = false;
        let mut done = 0;
        while done < data.len() {
            let at = addr + done as u64;
            let (n, off) = page_and_offset(at);
            let len = (PAGE_BYTES - off).min(data.len() - done);
            let part = &data[done..done + len];
            copied |= self.store(n, (off, len), mem, |m| m.page(n), |m| m.write(at, part));
            done += len;
        }
        copied
    }

    /// Makes every word of host page `n` of `mem` hold `word`
    /// ([`PageStore::fill`]), recording it as a store of the whole page.
    /// The page's digest before and after comes from the store, which
    /// keeps it: a fill of a uniform page reads no byte.
    pub fn fill_host(&mut self, mem: &mut PageStore, n: u64, word: u32) {
        if self.off {
            return mem.fill(n, word);
        }
        let before = mem.digest(n);
        mem.fill(n, word);
        self.add(n, before, mem.digest(n));
    }

    /// Forgets pages `[start, end)` (unmapped: they read as zero again).
    pub fn drop_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let keys: Vec<u64> = self
            .groups
            .range(split(start).0..=split(end - 1).0)
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            let g = self.groups.get_mut(&k).expect("a key just listed");
            let first = k * GROUP as u64;
            for n in first.max(start)..(first + GROUP as u64).min(end) {
                let i = split(n).1;
                g.digests[i] = 0;
                g.written &= !(1 << i);
            }
            if g.written == 0 {
                self.groups.remove(&k);
            }
        }
    }
}

/// The virtual page of byte address `a` and the offset in it.
#[inline]
pub fn page_and_offset(a: u64) -> (u64, usize) {
    (
        a / PAGE_SIZE,
        usize::try_from(a % PAGE_SIZE).expect("a page offset is below 4096"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(sh: &mut Shadow, mem: &mut PageStore, a: u64, d: &[u8]) {
        let (n, off) = page_and_offset(a);
        sh.store(n, (off, d.len()), mem, |m| m.page(n), |m| m.write(a, d));
    }

    /// Stores keep the expected digest equal to the page's, whatever their
    /// alignment; changes behind the shadow's back are found.
    #[test]
    fn tracks_stores_and_finds_changes_behind_its_back() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(3);
        let mut sh = Shadow::new();
        let mut mem = PageStore::new();
        for _ in 0..500 {
            let a = rng.random_range(0..3 * 4096u64);
            let len = rng.random_range(0..=(4096 - a % 4096).min(300));
            let d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            write(&mut sh, &mut mem, a, &d);
        }
        for n in 0..3 {
            assert_eq!(sh.expected(n), digest(mem.page(n)), "page {n}");
        }
        // One byte changed behind its back, in any lane, is found; so is a
        // page lost (it reads as zero) and one that gained bytes.
        for at in [0u64, 1, 2, 3, 4095, 2048] {
            let mut m = mem.clone();
            let mut b = [0u8];
            m.read(at, &mut b);
            m.write(at, &[b[0] ^ 0x80]);
            assert_ne!(sh.expected(0), digest(m.page(0)), "byte {at}");
        }
        let mut m = mem.clone();
        m.drop_range(1, 2);
        assert_ne!(sh.expected(1), digest(m.page(1)));
        m.write(5 * 4096, &[1]);
        assert_ne!(sh.expected(5), digest(m.page(5)));
        // Damage a later store covers is still found.
        let mut m = mem.clone();
        m.write(100, &[0xaa; 4]);
        let mut s2 = sh.clone();
        write(&mut s2, &mut m, 96, &[0; 16]);
        assert_ne!(s2.expected(0), digest(m.page(0)));
        // Dropped pages are expected to read as zero.
        sh.drop_range(0, 2);
        assert_eq!((sh.expected(0), sh.populated()), (0, 1));
        assert_eq!(sh.page_numbers().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_weights_are_odd() {
        assert!(WEIGHTS.iter().all(|&w| w % 2 == 1));
    }
}

//! Where each page of a range lives: the authoritative per-page location.
//!
//! **Architecture Invariant:** one authoritative location per page. A range's
//! pages are each in system memory or in the VRAM of the range's
//! `actual_loc` GPU (kfd never spreads one range over two GPUs' VRAM: a move
//! between GPUs goes through system memory). [`PageBits`] records, per page,
//! "in VRAM"; `vram_pages` is its population count, derived from the bits
//! (`PageBits` keeps the count beside them, changed only with them; debug
//! builds recount on every read).

use serde::{Deserialize, Serialize};

/// A fixed-length set of page indices, one bit per page.
///
/// It keeps its population count as bits change, so [`PageBits::count`]
/// (a range's VRAM pages, asked for every range on every buffer scan) costs
/// nothing however large the range. Its words are allocated when the first
/// bit is set: a range that never had a page in VRAM (most of a large
/// SET_ATTR) costs no memory per page, as kfd's ranges cost none until
/// they are mapped. Scans go a word at a time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Repr")]
pub struct PageBits {
    /// Empty, or `len` bits rounded up to words; empty means all clear.
    words: Vec<u64>,
    len: u64,
    #[serde(skip)]
    ones: u64,
}

/// The serialized form: the count is derived again on reading.
#[derive(Deserialize)]
struct Repr {
    words: Vec<u64>,
    len: u64,
}

impl From<Repr> for PageBits {
    fn from(r: Repr) -> Self {
        let ones = r.words.iter().map(|w| u64::from(w.count_ones())).sum();
        Self {
            words: r.words,
            len: r.len,
            ones,
        }
    }
}

/// Equal when they cover as many pages and the same ones are set, whether
/// or not the words are allocated.
impl PartialEq for PageBits {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.ones == other.ones
            && (self.ones == 0 || self.words == other.words)
    }
}

impl Eq for PageBits {}

fn word_count(len: u64) -> usize {
    usize::try_from(len.div_ceil(64)).expect("page count fits in memory")
}

fn index(i: u64) -> (usize, u32) {
    (
        usize::try_from(i / 64).expect("page index fits in memory"),
        u32::try_from(i % 64).expect("bit index below 64"),
    )
}

impl PageBits {
    /// `len` clear bits.
    pub fn new(len: u64) -> Self {
        Self {
            words: Vec::new(),
            len,
            ones: 0,
        }
    }

    /// Number of pages covered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it covers no page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Word `w`, zero when the words are not allocated.
    fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    /// Whether page `i` is set.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn get(&self, i: u64) -> bool {
        assert!(i < self.len, "page index {i} past {}", self.len);
        let (w, b) = index(i);
        self.word(w) >> b & 1 == 1
    }

    /// Sets or clears page `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn set(&mut self, i: u64, on: bool) {
        assert!(i < self.len, "page index {i} past {}", self.len);
        let (w, b) = index(i);
        let was = self.word(w) >> b & 1 == 1;
        if on && !was {
            if self.words.is_empty() {
                self.words = vec![0; word_count(self.len)];
            }
            self.words[w] |= 1 << b;
            self.ones += 1;
        } else if !on && was {
            self.words[w] &= !(1 << b);
            self.ones -= 1;
        }
    }

    /// Number of set pages.
    pub fn count(&self) -> u64 {
        debug_assert_eq!(
            self.ones,
            self.words
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum::<u64>(),
            "cached count"
        );
        self.ones
    }

    /// The 64 bits from page `i` on (bits past the end read clear).
    fn bits_from(&self, i: u64) -> u64 {
        let (w, b) = index(i);
        let lo = self.word(w) >> b;
        if b == 0 {
            lo
        } else {
            lo | self.word(w + 1) << (64 - b)
        }
    }

    /// Number of set pages in `[start, end)`.
    pub fn count_range(&self, start: u64, end: u64) -> u64 {
        let end = end.min(self.len);
        if self.ones == 0 || start >= end {
            return 0;
        }
        let mut n = 0;
        let mut i = start;
        while i < end {
            let take = (end - i).min(64);
            let mask = if take == 64 { !0 } else { (1 << take) - 1 };
            n += u64::from((self.bits_from(i) & mask).count_ones());
            i += take;
        }
        n
    }

    /// Pages `[start, end)` as a new set.
    ///
    /// # Panics
    /// If the window is out of range.
    pub fn slice(&self, start: u64, end: u64) -> Self {
        assert!(
            start <= end && end <= self.len,
            "slice outside the page set"
        );
        let mut out = Self::new(end - start);
        if self.count_range(start, end) == 0 {
            return out;
        }
        out.words = (0..word_count(end - start) as u64)
            .map(|j| {
                let i = start + 64 * j;
                let take = (end - i).min(64);
                let mask = if take == 64 { !0 } else { (1 << take) - 1 };
                self.bits_from(i) & mask
            })
            .collect();
        out.ones = out.words.iter().map(|w| u64::from(w.count_ones())).sum();
        out
    }

    /// The first page at or after `i` whose bit is not `v`, or the length.
    fn next_change(&self, i: u64, v: bool) -> u64 {
        if !v && self.ones == 0 {
            return self.len;
        }
        let mut i = i;
        while i < self.len {
            let (w, b) = index(i);
            let word = if v { !self.word(w) } else { self.word(w) };
            let rest = word >> b;
            if rest != 0 {
                return (i + u64::from(rest.trailing_zeros())).min(self.len);
            }
            i += 64 - u64::from(b);
        }
        self.len
    }

    /// Runs of equal bits as `(start, end, set)`, in order.
    pub fn runs(&self) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.len {
            let v = self.get(i);
            let end = self.next_change(i, v);
            out.push((i, end, v));
            i = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_slice_and_runs() {
        let mut b = PageBits::new(130);
        for i in [0, 1, 64, 65, 129] {
            b.set(i, true);
        }
        assert_eq!(b.count(), 5);
        assert_eq!(b.count_range(60, 70), 2);
        let s = b.slice(63, 130);
        assert_eq!(s.len(), 67);
        assert_eq!(s.count(), 3);
        assert!(s.get(1));
        b.set(1, false);
        assert_eq!(b.runs()[..2], [(0, 1, true), (1, 64, false)]);
        assert_eq!(*b.runs().last().unwrap(), (129, 130, true));
    }

    #[test]
    fn count_follows_changes_and_survives_serde() {
        let mut b = PageBits::new(200);
        for i in [0, 5, 64, 199, 5] {
            b.set(i, true);
        }
        b.set(64, false);
        b.set(63, false);
        assert_eq!(b.count(), 3);
        let json = serde_json::to_string(&b).unwrap();
        let back: PageBits = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.count(), 3);
        assert_eq!(b.slice(0, 100).count(), 2);
    }

    /// The word-wise scans say what a bit-by-bit walk says, and a set never
    /// written equals one whose bits were all cleared again.
    #[test]
    #[allow(clippy::cast_possible_truncation)] // lengths below 300
    fn word_scans_match_a_walk_over_every_bit() {
        use proptest::prelude::*;
        proptest!(|(len in 1u64..300, sets in proptest::collection::vec((0u64..300, any::<bool>()), 0..80), a in 0u64..300, b in 0u64..300)| {
            let mut bits = PageBits::new(len);
            let mut naive = vec![false; len as usize];
            for (i, on) in sets {
                let i = i % len;
                bits.set(i, on);
                naive[i as usize] = on;
            }
            let (lo, hi) = (a.min(b) % (len + 1), a.max(b).min(len));
            let lo = lo.min(hi);
            let want = naive[lo as usize..hi as usize].iter().filter(|&&x| x).count() as u64;
            prop_assert_eq!(bits.count_range(lo, hi), want);
            let s = bits.slice(lo, hi);
            for i in lo..hi {
                prop_assert_eq!(s.get(i - lo), naive[i as usize]);
            }
            prop_assert_eq!(s.count(), want);
            let mut runs: Vec<(u64, u64, bool)> = Vec::new();
            for (i, &v) in naive.iter().enumerate() {
                let i = i as u64;
                match runs.last_mut() {
                    Some(last) if last.2 == v => last.1 = i + 1,
                    _ => runs.push((i, i + 1, v)),
                }
            }
            prop_assert_eq!(bits.runs(), runs);
            let mut cleared = bits.clone();
            for i in 0..len {
                cleared.set(i, false);
            }
            prop_assert_eq!(cleared, PageBits::new(len));
        });
    }
}

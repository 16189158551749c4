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
/// nothing however large the range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Repr")]
pub struct PageBits {
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
            words: vec![0; word_count(len)],
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

    /// Whether page `i` is set.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn get(&self, i: u64) -> bool {
        assert!(i < self.len, "page index {i} past {}", self.len);
        let (w, b) = index(i);
        self.words[w] >> b & 1 == 1
    }

    /// Sets or clears page `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn set(&mut self, i: u64, on: bool) {
        assert!(i < self.len, "page index {i} past {}", self.len);
        let (w, b) = index(i);
        let was = self.words[w] >> b & 1 == 1;
        if on && !was {
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

    /// Number of set pages in `[start, end)`.
    pub fn count_range(&self, start: u64, end: u64) -> u64 {
        (start..end.min(self.len)).filter(|&i| self.get(i)).count() as u64
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
        for i in start..end {
            if self.get(i) {
                out.set(i - start, true);
            }
        }
        out
    }

    /// Runs of equal bits as `(start, end, set)`, in order.
    pub fn runs(&self) -> Vec<(u64, u64, bool)> {
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        for i in 0..self.len {
            let v = self.get(i);
            match out.last_mut() {
                Some(last) if last.2 == v => last.1 = i + 1,
                _ => out.push((i, i + 1, v)),
            }
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
}

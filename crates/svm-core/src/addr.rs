//! Address and page types: byte addresses, page numbers, page counts and page ranges.
//!
//! The kfd ioctl takes byte addresses and sizes; inside the driver a range is
//! the inclusive page interval `[start, last]`. svmsim keeps one convention
//! inside: [`PageRange`] is half-open (`start..end`). Where kfd parity needs the
//! inclusive bound it is spelled [`PageRange::last`], and the conversion happens
//! at the API edge (see `crate::process`).
//!
//! There is no arithmetic between address spaces: a [`CpuVa`] becomes a
//! [`PageNum`] through a named method, never through `+` or `-`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// log2 of the page size; every simulated machine uses 4 KiB pages.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in a page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// A CPU virtual address in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CpuVa(u64);

impl CpuVa {
    /// Wraps a raw byte address.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw byte address.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether the address sits on a page boundary.
    pub const fn is_page_aligned(self) -> bool {
        self.0 % PAGE_SIZE == 0
    }

    /// The page that holds this address (rounds down).
    pub const fn page_num(self) -> PageNum {
        PageNum(self.0 >> PAGE_SHIFT)
    }

    /// The address `bytes` further on, or `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Self> {
        self.0.checked_add(bytes).map(Self)
    }
}

impl fmt::Debug for CpuVa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuVa({:#x})", self.0)
    }
}

impl fmt::Display for CpuVa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A virtual page number (a byte address shifted right by [`PAGE_SHIFT`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PageNum(u64);

impl PageNum {
    /// Wraps a raw page number.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw page number.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The byte address of the first byte of this page.
    ///
    /// Page numbers come from byte addresses, so the shift cannot overflow for
    /// any page number svmsim creates; a larger one saturates.
    pub const fn va(self) -> CpuVa {
        CpuVa(self.0.saturating_mul(PAGE_SIZE))
    }

    /// The page `n` pages further on, saturating at `u64::MAX`.
    pub const fn add(self, n: PageCount) -> Self {
        Self(self.0.saturating_add(n.0))
    }

    /// The number of pages from `base` up to `self`.
    ///
    /// # Panics
    /// If `base` lies after `self`: callers compute offsets inside a range.
    pub fn offset_from(self, base: PageNum) -> PageCount {
        PageCount(
            self.0
                .checked_sub(base.0)
                .expect("page offset taken from a base that lies after the page"),
        )
    }

    /// Rounds down to a multiple of `align` pages (`align` a power of two).
    pub fn align_down(self, align: PageCount) -> Self {
        debug_assert!(align.0.is_power_of_two());
        Self(self.0 & !(align.0 - 1))
    }

    /// Whether the page number is a multiple of `align` pages (`align` a power of two).
    pub fn is_aligned(self, align: PageCount) -> bool {
        debug_assert!(align.0.is_power_of_two());
        self.0 & (align.0 - 1) == 0
    }
}

impl fmt::Debug for PageNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageNum({:#x})", self.0)
    }
}

impl fmt::Display for PageNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A number of pages.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct PageCount(u64);

impl PageCount {
    /// Wraps a raw page count.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw count.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The size in bytes, saturating at `u64::MAX`.
    pub const fn bytes(self) -> u64 {
        self.0.saturating_mul(PAGE_SIZE)
    }

    /// The pages needed to hold `bytes` bytes, rounding up.
    pub const fn from_bytes_ceil(bytes: u64) -> Self {
        Self(bytes.div_ceil(PAGE_SIZE))
    }
}

impl fmt::Display for PageCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A half-open interval of pages, `start..end`.
///
/// # Invariants
/// `start <= end`. An empty range (`start == end`) is allowed as a value but
/// no SVM range is ever empty.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageRange {
    start: PageNum,
    end: PageNum,
}

impl PageRange {
    /// The pages `start..end`.
    ///
    /// # Panics
    /// If `end < start`.
    pub fn new(start: PageNum, end: PageNum) -> Self {
        assert!(start <= end, "page range ends before it starts");
        Self { start, end }
    }

    /// The kfd form: the inclusive interval `[start, last]`.
    ///
    /// # Panics
    /// If `last < start` or `last` is `u64::MAX`.
    pub fn from_start_last(start: PageNum, last: PageNum) -> Self {
        let end = last
            .0
            .checked_add(1)
            .expect("inclusive last page overflows");
        Self::new(start, PageNum(end))
    }

    /// `npages` pages starting at `start`, or `None` if the end overflows.
    pub fn from_start_len(start: PageNum, npages: PageCount) -> Option<Self> {
        Some(Self::new(start, PageNum(start.0.checked_add(npages.0)?)))
    }

    /// First page.
    pub const fn start(self) -> PageNum {
        self.start
    }

    /// One past the last page.
    pub const fn end(self) -> PageNum {
        self.end
    }

    /// The last page, inclusive, as kfd names it.
    ///
    /// # Panics
    /// If the range is empty.
    pub fn last(self) -> PageNum {
        assert!(!self.is_empty(), "empty page range has no last page");
        PageNum(self.end.0 - 1)
    }

    /// Number of pages.
    pub const fn npages(self) -> PageCount {
        PageCount(self.end.0 - self.start.0)
    }

    /// Whether the range holds no page.
    pub const fn is_empty(self) -> bool {
        self.start.0 == self.end.0
    }

    /// Whether `page` lies inside.
    pub fn contains(self, page: PageNum) -> bool {
        self.start <= page && page < self.end
    }

    /// Whether `other` lies entirely inside.
    pub fn contains_range(self, other: PageRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges share a page.
    pub fn overlaps(self, other: PageRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The pages both ranges hold, or `None` if they share none.
    pub fn intersect(self, other: PageRange) -> Option<PageRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(PageRange { start, end })
    }

    /// Splits at `at` into `start..at` and `at..end`.
    ///
    /// # Panics
    /// If `at` lies outside `start..=end`.
    pub fn split_at(self, at: PageNum) -> (PageRange, PageRange) {
        assert!(
            self.start <= at && at <= self.end,
            "split point outside the range"
        );
        (
            PageRange {
                start: self.start,
                end: at,
            },
            PageRange {
                start: at,
                end: self.end,
            },
        )
    }

    /// The byte address of the first page.
    pub const fn start_va(self) -> CpuVa {
        self.start.va()
    }

    /// Iterates the pages in order.
    pub fn pages(self) -> impl DoubleEndedIterator<Item = PageNum> {
        (self.start.0..self.end.0).map(PageNum)
    }
}

impl fmt::Debug for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageRange({:#x}..{:#x})", self.start.0, self.end.0)
    }
}

/// Shows the kfd form `[start last]` in page numbers, as the driver's debug dumps do.
impl fmt::Display for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "[empty at {:#x}]", self.start.0)
        } else {
            write!(f, "[{:#x} {:#x}]", self.start.0, self.end.0 - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(start: u64, end: u64) -> PageRange {
        PageRange::new(PageNum::new(start), PageNum::new(end))
    }

    #[test]
    fn va_to_page_rounds_down() {
        assert_eq!(CpuVa::new(0x1fff).page_num(), PageNum::new(1));
        assert_eq!(CpuVa::new(0x2000).page_num(), PageNum::new(2));
        assert!(CpuVa::new(0x3000).is_page_aligned());
        assert!(!CpuVa::new(0x3001).is_page_aligned());
    }

    #[test]
    fn inclusive_and_half_open_agree() {
        let r = PageRange::from_start_last(PageNum::new(0x10), PageNum::new(0x1f));
        assert_eq!(r, pr(0x10, 0x20));
        assert_eq!(r.last(), PageNum::new(0x1f));
        assert_eq!(r.npages(), PageCount::new(16));
        assert_eq!(r.to_string(), "[0x10 0x1f]");
    }

    #[test]
    fn overlap_and_intersection() {
        // Table: (a, b, overlapping pages)
        let cases = [
            ((0, 4), (4, 8), None),         // touching, no shared page
            ((0, 5), (4, 8), Some((4, 5))), // one page shared
            ((2, 3), (0, 8), Some((2, 3))), // contained
            ((0, 8), (0, 8), Some((0, 8))), // identical
            ((9, 12), (0, 8), None),        // disjoint
        ];
        for ((a0, a1), (b0, b1), want) in cases {
            let (a, b) = (pr(a0, a1), pr(b0, b1));
            assert_eq!(a.intersect(b), want.map(|(s, e)| pr(s, e)), "{a:?} & {b:?}");
            assert_eq!(a.overlaps(b), want.is_some(), "{a:?} overlaps {b:?}");
        }
    }

    #[test]
    fn split_and_align() {
        let (h, t) = pr(0, 16).split_at(PageNum::new(3));
        assert_eq!((h, t), (pr(0, 3), pr(3, 16)));
        assert_eq!(
            PageNum::new(0x2ff).align_down(PageCount::new(0x200)),
            PageNum::new(0x200)
        );
        assert!(PageNum::new(0x400).is_aligned(PageCount::new(0x200)));
        assert!(!PageNum::new(0x401).is_aligned(PageCount::new(0x200)));
    }

    #[test]
    fn from_start_len_rejects_overflow() {
        assert!(PageRange::from_start_len(PageNum::new(u64::MAX), PageCount::new(2)).is_none());
    }
}

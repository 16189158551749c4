//! One SVM range: a page interval with attributes (`struct svm_range`).
//!
//! Ranges live in [`crate::range_list::SvmRangeList`]. This range holds
//! the attributes and `mapped_to_gpu`; residency, DMA arrays and the VRAM
//! buffer join it with the fault path.

use serde::{Deserialize, Serialize};

use crate::addr::{PageNum, PageRange};
use crate::attr::Attrs;

/// A contiguous run of pages that share attributes.
///
/// # Invariants
/// The page range is never empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvmRange {
    range: PageRange,
    /// The range's attributes.
    pub attrs: Attrs,
    /// Some part of the range is, or was since its last full unmap, mapped on a GPU.
    ///
    /// kfd keeps this per range, not per page. It gates the "same attributes
    /// and already mapped" shortcut of set_attr and, later, XNACK-off eviction.
    pub mapped_to_gpu: bool,
}

impl SvmRange {
    /// A new, never-mapped range.
    ///
    /// # Panics
    /// If `range` is empty.
    pub fn new(range: PageRange, attrs: Attrs) -> Self {
        assert!(!range.is_empty(), "an SVM range holds at least one page");
        Self {
            range,
            attrs,
            mapped_to_gpu: false,
        }
    }

    /// The pages of the range.
    pub fn range(&self) -> PageRange {
        self.range
    }

    /// First page (kfd `start`).
    pub fn start(&self) -> PageNum {
        self.range.start()
    }

    /// Last page, inclusive (kfd `last`).
    pub fn last(&self) -> PageNum {
        self.range.last()
    }

    /// A copy of this range narrowed to `sub`, as `svm_range_clone` followed by
    /// `svm_range_split` makes it: attributes and mapping state are copied.
    ///
    /// # Panics
    /// If `sub` is empty or not inside the range.
    pub fn piece(&self, sub: PageRange) -> Self {
        assert!(
            !sub.is_empty(),
            "an SVM range piece holds at least one page"
        );
        assert!(
            self.range.contains_range(sub),
            "piece lies outside its range"
        );
        Self {
            range: sub,
            ..self.clone()
        }
    }
}

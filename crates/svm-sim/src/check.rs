//! Invariant checkers, run after every step of a scenario or property test.
//!
//! Verified here:
//! - the range list's own shape: ranges non-empty, filed by start, never overlapping;
//! - every SVM page lies in a VMA of its process that SVM may manage;
//! - no range crosses a `max_svm_range_pages` boundary (gap ranges are born
//!   chunked, and splits only shrink ranges);
//! - no GPU is both ACCESS and ACCESS_IN_PLACE, and both sets hold only SVM GPUs;
//! - the machine's reserved memory equals what the processes' ranges hold
//!   (every range while XNACK is off, nothing while it is on).
//!
//! Not verified here: that the attributes are the *right* ones. The reference
//! model ([`crate::refmodel`]) answers that, page by page.

use std::fmt;

use crate::machine::Machine;

/// A broken invariant: which checker found it and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker's name.
    pub checker: &'static str,
    /// What it saw.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {} broken: {}", self.checker, self.message)
    }
}

fn fail(checker: &'static str, message: String) -> Result<(), Violation> {
    Err(Violation { checker, message })
}

/// Runs every checker over the machine.
///
/// # Errors
/// The first violation found.
pub fn check(m: &Machine) -> Result<(), Violation> {
    let mut reserved = 0u64;
    for (_, p) in m.processes() {
        let svm = &p.svm;
        if let Err(e) = svm.ranges().check() {
            return fail("range_list", format!("{}: {e}", p.name));
        }
        let max = svm.max_range_pages();
        let supported = svm.bitmap_supported();
        for r in svm.ranges().iter() {
            let range = r.range();
            let mut page = range.start();
            while page < range.end() {
                match p.mm.vma_info(page) {
                    Some(v) if !v.flags.io => page = v.range.end(),
                    _ => {
                        return fail(
                            "range_in_vma",
                            format!("{}: page {page} of range {range} has no usable VMA", p.name),
                        );
                    }
                }
            }
            if range.start().align_down(max) != range.last().align_down(max) {
                return fail(
                    "max_range_pages",
                    format!("{}: range {range} crosses a {max}-page boundary", p.name),
                );
            }
            let a = &r.attrs;
            if !a.access.and(a.access_in_place).is_empty() {
                return fail(
                    "access_exclusive",
                    format!(
                        "{}: range {range} has GPUs both ACCESS and ACCESS_IN_PLACE",
                        p.name
                    ),
                );
            }
            if a.access.or(a.access_in_place).and(supported) != a.access.or(a.access_in_place) {
                return fail(
                    "access_supported",
                    format!(
                        "{}: range {range} grants access to a GPU without SVM",
                        p.name
                    ),
                );
            }
        }
        reserved += svm.reserved_bytes();
    }
    let limit = m.mem_limit();
    if limit.used_bytes != reserved {
        return fail(
            "mem_limit",
            format!(
                "{:#x} bytes reserved, but the ranges account for {reserved:#x}",
                limit.used_bytes
            ),
        );
    }
    Ok(())
}

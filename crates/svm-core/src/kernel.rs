//! Which kernel the engine follows: the amdkfd changes of 2024–2026, each
//! with the release it arrived in.
//!
//! The run's `kernel` knob ([`crate::config::Config::kernel`]) names a
//! Linux release; the engine asks [`KernelVersion::has`] before it takes a
//! path a [`Change`] introduced, so one run follows one kernel and a sweep
//! over `kernel` shows what each change did. The default is the newest
//! release modelled. The oldest is 6.8, the first with partial migration;
//! what came before it is the `whole-range` policy's business.
//!
//! Each change cites where it was read (commit, mail). A release marked
//! "my reading" is inferred from the date the change was posted or queued,
//! not from a tag.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Linux release, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// 6 in 6.10.
    pub major: u8,
    /// 10 in 6.10.
    pub minor: u8,
}

impl KernelVersion {
    /// The oldest release modelled: partial migration arrived in 6.8.
    pub const OLDEST: KernelVersion = KernelVersion::new(6, 8);
    /// The newest release modelled, the default.
    pub const NEWEST: KernelVersion = KernelVersion::new(7, 3);

    /// `major.minor`.
    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }

    /// Whether this release has `change`.
    pub fn has(self, change: Change) -> bool {
        self >= change.since()
    }
}

impl Default for KernelVersion {
    fn default() -> Self {
        Self::NEWEST
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for KernelVersion {
    type Err = String;

    /// `6.10`, `v7.3`; a release outside [`KernelVersion::OLDEST`] ..=
    /// [`KernelVersion::NEWEST`] is refused.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let (a, b) = t
            .split_once('.')
            .ok_or_else(|| format!("{s:?} is not major.minor"))?;
        let v = KernelVersion::new(
            a.parse().map_err(|_| format!("{s:?}: bad major"))?,
            b.parse().map_err(|_| format!("{s:?}: bad minor"))?,
        );
        if !(Self::OLDEST..=Self::NEWEST).contains(&v) {
            return Err(format!("{v} is not modelled"));
        }
        Ok(v)
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KernelVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A change to amdkfd's SVM behaviour that the engine follows from the
/// release it arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// A split piece keeps `actual_loc` only if it holds VRAM pages, and
    /// the kept piece drops it when its count reaches 0. Before, every
    /// piece copied it: a piece could say VRAM and hold none.
    SplitActualLoc,
    /// A migration to VRAM first reserves the whole range's size against
    /// the KFD VRAM limit (`amdgpu_amdkfd_reserve_mem_limit`) and drops it
    /// at the end; failure (-ENOSPC) leaves the pages in system memory and
    /// maps them there, and a failed prefetch is not an error.
    VramLimitGate,
    /// SET_ATTR NO_ACCESS unmaps the range from the GPUs it names that
    /// have it mapped (`svm_range_needs_unmap`), and takes an IH
    /// checkpoint on them, so retry faults queued before it are dropped.
    /// Before, GPUs that lost access kept their PTEs ("TODO: unmap ranges
    /// from GPU that lost access").
    NoAccessUnmaps,
    /// A migration that reuses a VRAM page takes a reference on it
    /// (`get_page` + `lock_page` in `svm_migrate_get_vram_page`) instead
    /// of resetting its count (`zone_device_page_init`). Before, a page a
    /// CPU fault still held (do_swap_page's reference, until its
    /// `put_page`) could be reused by a GPU fault's migration, and the
    /// CPU fault's put then dropped the count to 0 under a page in use.
    VramPageRefcount,
    /// GC 12.1 leaves `KFD_SUPPORT_XNACK_PER_PROCESS`: its XNACK mode is
    /// the one the driver loaded with (`noretry`). A process may still
    /// turn XNACK off when the driver booted with it on (the driver takes
    /// the XNACK-off path while the hardware keeps retrying), but not on
    /// when it booted off. Before, GC 12.1 chose per process like MI200.
    Gfx121XnackFixed,
}

impl Change {
    /// Every change, oldest first.
    pub const ALL: [Change; 5] = [
        Change::SplitActualLoc,
        Change::VramLimitGate,
        Change::VramPageRefcount,
        Change::Gfx121XnackFixed,
        Change::NoAccessUnmaps,
    ];

    /// The release it arrived in.
    pub const fn since(self) -> KernelVersion {
        match self {
            Change::SplitActualLoc => KernelVersion::new(6, 9),
            Change::VramLimitGate => KernelVersion::new(6, 10),
            Change::VramPageRefcount => KernelVersion::new(6, 18),
            Change::Gfx121XnackFixed => KernelVersion::new(7, 2),
            Change::NoAccessUnmaps => KernelVersion::new(7, 3),
        }
    }

    /// Its name in docs and `svmsim config`.
    pub const fn name(self) -> &'static str {
        match self {
            Change::SplitActualLoc => "split-actual-loc",
            Change::VramLimitGate => "vram-limit-gate",
            Change::VramPageRefcount => "vram-page-refcount",
            Change::Gfx121XnackFixed => "gfx12.1-xnack-fixed",
            Change::NoAccessUnmaps => "no-access-unmaps",
        }
    }

    /// Where it was read.
    pub const fn source(self) -> &'static str {
        match self {
            Change::SplitActualLoc => {
                "Philip Yang, amd-gfx 2024-01 (svm_range_split_adjust no longer copies actual_loc); \
                 6.9 is my reading of the posting date"
            }
            Change::VramLimitGate => {
                "1e214f7faaf5 \"drm/amdkfd: Add VRAM accounting for SVM migration\" \
                 (6.6.y stable 2024-06-06; in 6.10)"
            }
            Change::VramPageRefcount => {
                "Philip Yang, \"drm/amdkfd: Fix svm_bo and vram page refcount\" \
                 (Message-ID 20250926210331.17401-1-Philip.Yang@amd.com, 2025-09/10; \
                 6.18 is my reading)"
            }
            Change::Gfx121XnackFixed => {
                "05c0109e12e1 \"drm/amdkfd: Limit per-process xnack support for GFX12.1\" \
                 (amd-gfx 2026-04-22; 7.2 is my reading)"
            }
            Change::NoAccessUnmaps => {
                "b96f26104946 \"drm/amdkfd: Unmap svm range from GPU set to no-access\" and \
                 48f1d2a10eb9 \"Add helper svm_range_update_checkpoint_timestamp\" \
                 (linux-next next-20260813; 7.3 is my reading)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_order_and_gate() {
        assert_eq!("6.10".parse(), Ok(KernelVersion::new(6, 10)));
        assert_eq!("v7.3".parse(), Ok(KernelVersion::NEWEST));
        assert!(KernelVersion::new(6, 9) < KernelVersion::new(6, 10));
        for bad in ["6", "6.x", "6.7", "7.4", "", "256.1"] {
            assert!(bad.parse::<KernelVersion>().is_err(), "{bad}");
        }
        let v = KernelVersion::new(6, 9);
        assert!(v.has(Change::SplitActualLoc) && !v.has(Change::VramLimitGate));
        for c in Change::ALL {
            assert!(KernelVersion::NEWEST.has(c), "{}", c.name());
            assert!(!KernelVersion::OLDEST.has(c), "{}", c.name());
        }
        assert_eq!(KernelVersion::default().to_string(), "7.3");
    }
}

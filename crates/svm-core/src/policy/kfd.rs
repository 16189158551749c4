//! kfd's fault policies: how much a GPU fault migrates and maps.
//!
//! The three here are the kernel's own history around the 2023
//! partial-migration work, so the same workload can be replayed under
//! each. All three move the faulting range's pages to kfd's best location
//! (`svm_range_best_restore_location`); they differ only in how much.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Entry, FaultCtx, FaultPlan, FaultPolicy, Migration};

/// What a GPU fault migrates and maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Before the 2023 patch: the fault migrates and maps the whole range.
    WholeRange,
    /// The merged combined patch (18eb61bd5a6a): migrate and map the
    /// granularity window around the fault.
    #[default]
    Partial,
    /// The reverted v4: migrate the window, map the whole range. The rest of
    /// the range gets mapped in system memory and then never faults, so it
    /// never migrates.
    PartialMigrateWholeMap,
}

impl Policy {
    /// Every policy, for sweeps and parsers.
    pub const ALL: [Policy; 3] = [
        Policy::WholeRange,
        Policy::Partial,
        Policy::PartialMigrateWholeMap,
    ];

    /// The name scenarios and the CLI use.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::WholeRange => "whole-range",
            Policy::Partial => "partial",
            Policy::PartialMigrateWholeMap => "partial-migrate-whole-map",
        }
    }

    /// Parses a name from [`Policy::name`].
    pub fn from_name(s: &str) -> Option<Policy> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether the fault migrates only the window.
    pub const fn migrates_window(self) -> bool {
        !matches!(self, Policy::WholeRange)
    }

    /// Whether the fault maps only the window.
    pub const fn maps_window(self) -> bool {
        matches!(self, Policy::Partial)
    }
}

impl Policy {
    /// Its registry entry.
    pub fn entry(self) -> &'static Entry {
        &ENTRIES[self as usize]
    }
}

/// kfd's variants, in [`Policy::ALL`] order.
pub(super) static ENTRIES: [Entry; 3] = [
    Entry {
        name: "whole-range",
        about: "kfd before 2023: a fault migrates and maps its whole range",
        fewer_faults: super::MOVED_MORE,
        make: || Box::new(KfdPolicy(Policy::WholeRange)),
    },
    Entry {
        name: "partial",
        about: "kfd since 2023 (18eb61bd5a6a): migrate and map the granularity window",
        fewer_faults: super::MOVED_MORE,
        make: || Box::new(KfdPolicy(Policy::Partial)),
    },
    Entry {
        name: "partial-migrate-whole-map",
        about: "the reverted 2023 v4: migrate the window, map the whole range",
        fewer_faults: super::MOVED_MORE,
        make: || Box::new(KfdPolicy(Policy::PartialMigrateWholeMap)),
    },
];

/// One of kfd's variants as a [`FaultPolicy`]. It keeps no state: kfd
/// decides from the range alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfdPolicy(pub Policy);

impl FaultPolicy for KfdPolicy {
    fn name(&self) -> &str {
        self.0.name()
    }

    /// kfd's step 16 (`svm_range_restore_pages`): the migration window is
    /// the granularity window (or the whole range), and so is the mapping
    /// window; the migration always runs toward the best location, which
    /// is a no-op for pages already there.
    fn plan(&mut self, ctx: &FaultCtx<'_>) -> FaultPlan {
        let whole = ctx.range.range();
        let pages = if self.0.migrates_window() {
            ctx.window
        } else {
            whole
        };
        let map = if self.0.maps_window() {
            ctx.window
        } else {
            whole
        };
        FaultPlan::serve(
            Some(Migration {
                to: ctx.best,
                pages,
            }),
            map,
        )
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_name(p.name()), Some(p));
            assert_eq!(p.entry().name, p.name());
        }
        assert_eq!(Policy::default(), Policy::Partial);
        assert!(Policy::PartialMigrateWholeMap.migrates_window());
        assert!(!Policy::PartialMigrateWholeMap.maps_window());
    }
}

//! Migration policies: how much a GPU fault migrates and maps.
//!
//! **Architecture Invariant:** policies are values, picked per run. The three
//! here are the kernel's own history around the 2023 partial-migration work,
//! so the same workload can be replayed under each.

use std::fmt;

use serde::{Deserialize, Serialize};

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
        }
        assert_eq!(Policy::default(), Policy::Partial);
        assert!(Policy::PartialMigrateWholeMap.migrates_window());
        assert!(!Policy::PartialMigrateWholeMap.maps_window());
    }
}

//! Eviction order: which VRAM buffer goes when an allocation does not fit.
//!
//! One choice for every caller: the engine's own allocation
//! (`Process::alloc_vram`, which sees its process's buffers and, through
//! the platform, every other process's on the GPU, as TTM evicts across
//! processes) and VRAM pressure from outside SVM (the simulator's
//! `Machine::evict_vram`, which has no process of its own). Each strategy
//! is one arm of [`VictimPolicy::pick`].

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

/// Whose buffer a candidate is, as the asking process sees it. The asking
/// process's own buffers order first among equals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// The process that needs the room.
    This,
    /// Another process, by its index on the machine.
    Other(usize),
}

/// What a VRAM buffer holds, as TTM's LRU mixes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoKind {
    /// An SVM buffer (`svm_bo`): evicting it migrates its ranges to
    /// system memory.
    Svm,
    /// A buffer of the KFD memory API (hipMalloc): evicting it moves it
    /// to GTT and stops its process's queues until the restore work.
    Kfd,
}

/// A VRAM buffer that could be evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Whose it is.
    pub owner: Owner,
    /// What it holds.
    pub kind: BoKind,
    /// Its id in its process's table of that kind.
    pub bo: u64,
    /// Its place in the GPU's LRU: the device's count when it was last
    /// validated (allocated, migrated into or mapped); smaller is older
    /// ([`crate::platform::Hardware::lru_bump`]).
    pub lru: u64,
    /// Its place in the GPU's LRU when it was made, never bumped since:
    /// for an SVM buffer, when its range first became resident there.
    pub born: u64,
    /// Its size in pages.
    pub npages: u64,
}

/// How VRAM eviction picks its victims when an allocation does not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VictimPolicy {
    /// The buffer validated longest ago first, across processes, the
    /// asking process's own included (TTM's per-device LRU). Positions are
    /// unique on a device; between platforms that repeat them, the asking
    /// process's own, then the lower process, then the older buffer.
    #[default]
    Lru,
    /// The asking process's largest buffer first, so fewer ranges move;
    /// then the largest of the others.
    Largest,
    /// The buffer whose block first became resident longest ago, however
    /// recently it was migrated into or mapped: NVIDIA UVM's USED list
    /// of 2 MiB root chunks (`pick_root_chunk_to_evict`,
    /// `uvm_pmm_gpu.c`; a chunk goes to the list's tail only when it is
    /// allocated or its block first becomes resident, never on a map,
    /// docs/research/uvm.md §4.1). Under the uvm driver a range is at
    /// most a 2 MiB block, so a buffer is a root chunk.
    FirstResident,
}

impl VictimPolicy {
    /// Every strategy, for parsers and `svmsim config`.
    pub const ALL: [VictimPolicy; 3] = [
        VictimPolicy::Lru,
        VictimPolicy::Largest,
        VictimPolicy::FirstResident,
    ];

    /// Its name in configurations.
    pub const fn name(self) -> &'static str {
        match self {
            VictimPolicy::Lru => "lru",
            VictimPolicy::Largest => "largest",
            VictimPolicy::FirstResident => "first-resident",
        }
    }

    /// Parses a name from [`VictimPolicy::name`].
    pub fn from_name(s: &str) -> Option<VictimPolicy> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The next victim among `candidates`, if any. The order is a function
    /// of the candidates alone (ties fall to owner, then buffer id), so
    /// runs replay.
    pub fn pick(self, candidates: impl IntoIterator<Item = Candidate>) -> Option<Candidate> {
        let c = candidates.into_iter();
        match self {
            VictimPolicy::Lru => c.min_by_key(|c| (c.lru, c.owner, c.kind, c.bo)),
            VictimPolicy::FirstResident => c.min_by_key(|c| (c.born, c.owner, c.kind, c.bo)),
            VictimPolicy::Largest => c.min_by_key(|c| {
                (
                    c.owner != Owner::This,
                    Reverse(c.npages),
                    c.owner,
                    c.kind,
                    c.bo,
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(owner: Owner, bo: u64, t: u64, n: u64) -> Candidate {
        Candidate {
            owner,
            kind: BoKind::Svm,
            bo,
            lru: t,
            born: bo,
            npages: n,
        }
    }

    #[test]
    fn each_strategy_orders_as_documented() {
        // owner      bo  LRU place  pages
        let all = [
            c(Owner::This, 1, 50, 8),        // own, newer, small
            c(Owner::This, 2, 70, 512),      // own, newest, largest of its own
            c(Owner::Other(0), 7, 10, 16),   // another's, oldest
            c(Owner::Other(3), 9, 10, 4096), // another's, as old, the largest
        ];
        assert_eq!(VictimPolicy::Lru.pick(all).map(|c| c.bo), Some(7));
        // (Made in the order of their ids, so bo 1 came first.)
        assert_eq!(VictimPolicy::FirstResident.pick(all).map(|c| c.bo), Some(1));
        assert_eq!(VictimPolicy::Largest.pick(all).map(|c| c.bo), Some(2));
        // Without own buffers, the largest of the others.
        assert_eq!(
            VictimPolicy::Largest
                .pick(all[2..].iter().copied())
                .map(|c| c.bo),
            Some(9)
        );
        // A tie in place goes to the asking process's own buffer.
        let tie = [c(Owner::Other(0), 1, 5, 1), c(Owner::This, 4, 5, 1)];
        assert_eq!(VictimPolicy::Lru.pick(tie).map(|c| c.bo), Some(4));
        assert_eq!(VictimPolicy::Lru.pick([]), None);
        for p in VictimPolicy::ALL {
            assert_eq!(VictimPolicy::from_name(p.name()), Some(p));
        }
    }
}

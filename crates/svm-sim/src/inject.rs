//! The simulator's side of failure injection: the run's rules, the draws
//! that decide them, and what was reached and injected at each site.
//!
//! A draw is a hash of the run's seed, the site and the call's number at
//! that site, not a step of a shared random stream: a rule's choices do
//! not move when another site is asked more or less often, and runs
//! without rules draw nothing, so adding injection leaves every other
//! decision of a run as it was.

use std::collections::BTreeMap;

use serde::Serialize;
use svm_core::inject::{Injected, Response, Rule, Site};

/// What a run's failure injection did, per site.
#[derive(Clone, Debug, Default)]
pub struct Injector {
    rules: Vec<Rule>,
    seed: u64,
    /// Calls per site, by [`Site::index`].
    reached: [u64; Site::ALL.len()],
    injected: [u64; Site::ALL.len()],
    responses: BTreeMap<(Site, Response), u64>,
    /// Pages whose bytes a failed SDMA job left undefined (by process
    /// index and virtual page), for the checker to name.
    corrupted: std::collections::BTreeSet<(usize, u64)>,
}

/// The word a page a failed SDMA job left holds: any value would do, this
/// one is easy to spot in a dump.
pub const POISON: u32 = 0xdead_5d3a;

/// One site's line of a run's coverage of error paths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SiteCoverage {
    /// The site's name.
    pub site: &'static str,
    /// The kernel function that fails there.
    pub function: &'static str,
    /// Times the engine passed it.
    pub reached: u64,
    /// Times it failed.
    pub injected: u64,
    /// What the engine did, by response name, with how often.
    pub responses: BTreeMap<&'static str, u64>,
}

/// SplitMix64's finalizer: a well-mixed 64-bit value of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Injector {
    /// Rules for a run whose seed is `seed`; counts start at zero.
    pub fn new(rules: Vec<Rule>, seed: u64) -> Self {
        Self {
            rules,
            seed,
            ..Self::default()
        }
    }

    /// Draws from `seed` from now on (the counts stay).
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// Whether any rule is set.
    pub fn active(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The engine passes `site`: a failure, when a rule says so.
    pub fn ask(&mut self, site: Site) -> Option<Injected> {
        let i = site.index();
        self.reached[i] += 1;
        if self.rules.is_empty() {
            return None;
        }
        let n = self.reached[i];
        let d = mix(self.seed ^ mix(((i as u64) << 48) ^ n));
        // The top bits, scaled to millionths (below 1e6, so it fits).
        let ppm = u32::try_from(((d >> 32) * 1_000_000) >> 32).unwrap_or(u32::MAX);
        let rule = self
            .rules
            .iter()
            .find(|r| r.site == site && r.fires(n, ppm))?;
        self.injected[i] += 1;
        Some(Injected {
            errno: rule.errno(),
            draw: mix(d),
        })
    }

    /// The engine did `response` with a failure injected at `site`.
    pub fn note(&mut self, site: Site, response: Response) {
        *self.responses.entry((site, response)).or_default() += 1;
    }

    /// Every site with what it reached, injected and made the engine do.
    pub fn coverage(&self) -> Vec<SiteCoverage> {
        Site::ALL
            .iter()
            .map(|&s| SiteCoverage {
                site: s.name(),
                function: s.info().function,
                reached: self.reached[s.index()],
                injected: self.injected[s.index()],
                responses: self
                    .responses
                    .iter()
                    .filter(|((site, _), _)| *site == s)
                    .map(|((_, r), n)| (r.name(), *n))
                    .collect(),
            })
            .collect()
    }

    /// Page `page` of process `proc_index` lost its bytes to a failed
    /// SDMA job.
    pub fn mark_corrupted(&mut self, proc_index: usize, page: u64) {
        self.corrupted.insert((proc_index, page));
    }

    /// Whether it did.
    pub fn is_corrupted(&self, proc_index: usize, page: u64) -> bool {
        self.corrupted.contains(&(proc_index, page))
    }

    /// Failures injected over all sites.
    pub fn total_injected(&self) -> u64 {
        self.injected.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<Rule> {
        svm_core::inject::parse_rules(text).unwrap()
    }

    #[test]
    fn the_nth_call_fails_and_no_other() {
        let mut j = Injector::new(rules("dma_map@3"), 7);
        let got: Vec<bool> = (0..5).map(|_| j.ask(Site::DmaMap).is_some()).collect();
        assert_eq!(got, [false, false, true, false, false]);
        assert!(j.ask(Site::HmmBusy).is_none());
        let c = &j.coverage()[Site::DmaMap.index()];
        assert_eq!((c.reached, c.injected), (5, 1));
    }

    #[test]
    fn a_probability_holds_over_many_calls_and_the_seed_decides_which() {
        let calls = |seed| {
            let mut j = Injector::new(rules("hmm_busy=0.2"), seed);
            (0..10_000)
                .map(|_| j.ask(Site::HmmBusy).is_some())
                .collect::<Vec<_>>()
        };
        let a = calls(1);
        let n = a.iter().filter(|&&x| x).count();
        assert!((1800..2200).contains(&n), "{n} of 10000 at 0.2");
        assert_eq!(a, calls(1), "the same seed draws the same calls");
        assert_ne!(a, calls(2), "another seed draws others");
    }

    #[test]
    fn draws_at_one_site_do_not_move_with_calls_at_another() {
        let mut a = Injector::new(rules("dma_map=0.5,hmm_busy=0.5"), 3);
        let mut b = a.clone();
        for _ in 0..100 {
            b.ask(Site::HmmBusy);
        }
        let x: Vec<_> = (0..50).map(|_| a.ask(Site::DmaMap)).collect();
        let y: Vec<_> = (0..50).map(|_| b.ask(Site::DmaMap)).collect();
        assert_eq!(x, y);
    }

    #[test]
    fn without_rules_nothing_fails_but_calls_are_counted() {
        let mut j = Injector::new(Vec::new(), 0);
        assert!((0..100).all(|_| j.ask(Site::VramAlloc).is_none()));
        assert_eq!(j.coverage()[0].reached, 100);
        assert_eq!(j.total_injected(), 0);
    }
}

//! Failures on purpose: the kernel's failure points, each a [`Site`] the
//! engine asks about as it passes, and the rules that say when one fails.
//!
//! # Overview
//! Each site is a place where amdkfd (or what it calls) can fail, named
//! after the kernel function that fails there, with the errno the kernel
//! sees at that point and what kfd does next ([`SiteInfo`]). The engine
//! asks the platform at each one ([`crate::platform::Hardware::inject`]);
//! the simulator answers from the run's rules ([`Rule`]: the Nth call,
//! every Nth call, or with a probability drawn from the run's seed), so a
//! failing run replays exactly. An injected failure travels as
//! [`crate::Error::Injected`] and is handled where the kernel handles that
//! errno; the handler tells the platform what it did ([`Response`]), which
//! the run reports per site: the coverage of its error paths.
//!
//! The responses follow Linux 7.2 (docs/research/kfd-failures.md gives the
//! source lines of each; docs/failures.md says what svmsim does with them).
//!
//! This module holds names and data only: the draws are the simulator's
//! (the engine reads no RNG).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Errno;

/// A failure point of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Site {
    /// `svm_range_vram_node_new`: a new VRAM buffer for a range cannot be
    /// created (TTM could not make room by eviction).
    VramAlloc,
    /// `amdgpu_amdkfd_reserve_mem_limit` before a migration to VRAM: the
    /// KFD VRAM limit cannot take the range's size.
    VramLimit,
    /// `migrate_vma_setup` towards VRAM collects fewer pages than asked
    /// (pinned, locked or under writeback): only those migrate.
    MigrateCollect,
    /// `svm_migrate_copy_memory_gart` towards VRAM: the SDMA job cannot be
    /// submitted (ring off, job allocation).
    CopyToVram,
    /// `svm_migrate_copy_memory_gart` towards system memory.
    CopyToRam,
    /// `svm_migrate_copy_done`: the migration's SDMA job fails after it was
    /// submitted (error or timeout). kfd waits on the fence and never looks
    /// at its error: the migration commits undefined bytes.
    CopyFence,
    /// `svm_migrate_get_sys_page` (`alloc_page_vma`) in a migration to
    /// system memory.
    RamAlloc,
    /// `dma_map_page` in `svm_range_dma_map_dev`, mapping a system page
    /// for a GPU.
    DmaMap,
    /// `hmm_range_fault` in `amdgpu_hmm_range_get_pages`: the notifier
    /// sequence moved (-EBUSY, returned as -EAGAIN).
    HmmBusy,
    /// `amdgpu_vm_update_range` in `svm_range_map_to_gpu`: the GPU page
    /// table cannot be updated (page-table allocation, VM evicting).
    PteUpdate,
    /// `svm_range_restore_work` runs late (the workqueue is busy).
    RestoreDelay,
    /// `svm_range_deferred_list_work` runs late.
    DeferredDelay,
}

/// What the kernel does when a site fails, as data.
#[derive(Debug)]
pub struct SiteInfo {
    /// The site's name on the command line and in files.
    pub name: &'static str,
    /// The kernel function that fails.
    pub function: &'static str,
    /// The errno the kernel sees there by default (`None`: a delay).
    pub errno: Option<Errno>,
    /// Where the kernel handles it (docs/research/kfd-failures.md).
    pub source: &'static str,
    /// What kfd does next, in one line.
    pub response: &'static str,
}

impl Site {
    /// Every site, in the order `svmsim inject-sites` lists them.
    pub const ALL: [Site; 12] = [
        Site::VramAlloc,
        Site::VramLimit,
        Site::MigrateCollect,
        Site::CopyToVram,
        Site::CopyToRam,
        Site::CopyFence,
        Site::RamAlloc,
        Site::DmaMap,
        Site::HmmBusy,
        Site::PteUpdate,
        Site::RestoreDelay,
        Site::DeferredDelay,
    ];

    /// The kernel's side of the site.
    pub const fn info(self) -> &'static SiteInfo {
        match self {
            Site::VramAlloc => &SiteInfo {
                name: "vram_alloc",
                function: "svm_range_vram_node_new",
                errno: Some(Errno::Enomem),
                source: "kfd_svm.c svm_range_vram_node_new; kfd_migrate.c svm_migrate_ram_to_vram; kfd_svm.c svm_range_restore_pages (fallback)",
                response: "no migration: a GPU fault falls back to system memory and maps the window where it is (handled, PAGE_FAULT_END 'M'); a prefetch is best effort",
            },
            Site::VramLimit => &SiteInfo {
                name: "vram_limit",
                function: "amdgpu_amdkfd_reserve_mem_limit",
                errno: Some(Errno::Enospc),
                source: "kfd_migrate.c svm_migrate_ram_to_vram (-ENOMEM returned as -ENOSPC)",
                response: "as vram_alloc: nothing allocated, no SMI event; the fault falls back, the prefetch is not an error",
            },
            Site::MigrateCollect => &SiteInfo {
                name: "migrate_collect",
                function: "migrate_vma_setup",
                errno: None,
                source: "kfd_migrate.c svm_migrate_vma_to_vram (cpages < npages)",
                response: "only the collected pages migrate (mpages counts them); the rest stay in system memory and the window is mapped mixed; MIGRATE_END error 0",
            },
            Site::CopyToVram => &SiteInfo {
                name: "copy_to_vram",
                function: "svm_migrate_copy_memory_gart",
                errno: Some(Errno::Einval),
                source: "kfd_migrate.c svm_migrate_copy_to_vram (out_free_vram_pages), svm_migrate_ram_to_vram",
                response: "no page of the VMA chunk migrates, MIGRATE_END carries the error, later chunks are not tried; the fault falls back, the prefetch is not an error",
            },
            Site::CopyToRam => &SiteInfo {
                name: "copy_to_ram",
                function: "svm_migrate_copy_memory_gart",
                errno: Some(Errno::Einval),
                source: "kfd_migrate.c svm_migrate_copy_to_ram (out_oom), svm_migrate_vram_to_ram, svm_migrate_to_ram",
                response: "no page of the chunk migrates, MIGRATE_END carries the error: a CPU fault gets SIGBUS, a GPU fault's fallback is fatal, a prefetch returns it, eviction stops",
            },
            Site::CopyFence => &SiteInfo {
                name: "copy_fence",
                function: "svm_migrate_copy_done",
                errno: None,
                source: "kfd_migrate.c svm_migrate_copy_done (dma_fence_wait's result discarded, the fence's error never read), svm_migrate_vma_to_vram/_to_ram (migrate_vma_pages commits first)",
                response: "nothing: the migration commits as if the copy finished (MIGRATE_END error 0) and the moved pages hold what the failed job left, which the checker names; with check_copy_fence on, the chunk fails as a copy error (EIO) instead",
            },
            Site::RamAlloc => &SiteInfo {
                name: "ram_alloc",
                function: "svm_migrate_get_sys_page",
                errno: Some(Errno::Enomem),
                source: "kfd_migrate.c svm_migrate_copy_to_ram (alloc_page_vma), svm_migrate_to_ram (VM_FAULT_SIGBUS)",
                response: "as copy_to_ram with ENOMEM: the CPU fault gets SIGBUS (never VM_FAULT_OOM)",
            },
            Site::DmaMap => &SiteInfo {
                name: "dma_map",
                function: "dma_map_page",
                errno: Some(Errno::Enomem),
                source: "kfd_svm.c svm_range_dma_map_dev, svm_range_validate_and_map",
                response: "pages mapped so far keep their DMA addresses, no PTE of the window is written: a GPU fault is fatal, the restore work reschedules in 1 ms, SET_ATTR returns the error",
            },
            Site::HmmBusy => &SiteInfo {
                name: "hmm_busy",
                function: "hmm_range_fault",
                errno: Some(Errno::Eagain),
                source: "amdgpu_hmm.c amdgpu_hmm_range_get_pages (-EBUSY to -EAGAIN, no retry loop); kfd_svm.c svm_range_restore_pages",
                response: "nothing mapped: a GPU fault returns 0 uncounted and the GPU retries, the restore work reschedules, SET_ATTR returns EAGAIN",
            },
            Site::PteUpdate => &SiteInfo {
                name: "pte_update",
                function: "amdgpu_vm_update_range",
                errno: Some(Errno::Enomem),
                source: "kfd_svm.c svm_range_map_to_gpu, svm_range_map_to_gpus",
                response: "GPUs mapped before stay mapped (no rollback), this GPU and the rest are not: a GPU fault is fatal, the restore work reschedules, SET_ATTR returns the error",
            },
            Site::RestoreDelay => &SiteInfo {
                name: "restore_delay",
                function: "svm_range_restore_work",
                errno: None,
                source: "kfd_svm.c svm_range_evict (queue_delayed_work), svm_range_restore_work",
                response: "the restore work runs up to 10 ms late: the queues stay stopped meanwhile",
            },
            Site::DeferredDelay => &SiteInfo {
                name: "deferred_delay",
                function: "svm_range_deferred_list_work",
                errno: None,
                source: "kfd_svm.c svm_range_add_list_work (schedule_deferred_list_work), svm_range_skip_recover, svm_range_list_lock_and_flush_work",
                response: "munmap's deferred work runs up to 10 ms late: faults on the pieces it has not handled are skipped and retried; a SET_ATTR or restore work flushes it first",
            },
        }
    }

    /// Its name.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// The site named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Its position in [`Site::ALL`], which lists the sites in their
    /// declaration order (a test holds it): asked at every site passed.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The longest delay [`Site::RestoreDelay`] or [`Site::DeferredDelay`]
/// adds, ns.
pub const MAX_INJECTED_DELAY_NS: u64 = 10_000_000;

/// When a rule fires, counting the calls of its site from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// The Nth call only.
    Nth(u64),
    /// Every Nth call.
    Every(u64),
    /// Each call with this probability, in millionths.
    Probability(u32),
}

/// One injection rule: a site, when it fails, and with which errno
/// (`None`: the site's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RuleSpec", into = "RuleSpec")]
pub struct Rule {
    /// Where.
    pub site: Site,
    /// When.
    pub when: When,
    /// The errno, when not the site's own.
    pub errno: Option<Errno>,
}

/// The most rules a run takes.
pub const MAX_RULES: usize = 64;

/// What a rule's text must look like, for error messages.
pub const RULE_GRAMMAR: &str = "SITE=P (each call with probability P, 0 to 1), SITE@N (the Nth call), or SITE/N (every Nth call), each optionally followed by :ERRNO; sites: `svmsim inject-sites`";

impl Rule {
    /// Reads `SITE=P`, `SITE@N` or `SITE/N`, optionally with `:ERRNO`.
    ///
    /// # Errors
    /// What is wrong with the text, in one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (body, errno) = match text.split_once(':') {
            Some((b, e)) => {
                let e = Errno::from_name(e.trim())
                    .ok_or_else(|| format!("{text:?}: {:?} is not an errno name", e.trim()))?;
                (b, Some(e))
            }
            None => (text, None),
        };
        let at = body
            .find(['=', '@', '/'])
            .ok_or_else(|| format!("{text:?} is not a rule: {RULE_GRAMMAR}"))?;
        let (name, rest) = body.split_at(at);
        let site = Site::from_name(name.trim()).ok_or_else(|| {
            format!(
                "{text:?}: no injection site {:?} (`svmsim inject-sites` lists them)",
                name.trim()
            )
        })?;
        let (op, value) = rest.split_at(1);
        let value = value.trim();
        let count = || -> Result<u64, String> {
            match value.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!(
                    "{text:?}: {value:?} is not a call count (1 or more)"
                )),
            }
        };
        let when =
            match op {
                "@" => When::Nth(count()?),
                "/" => When::Every(count()?),
                _ => When::Probability(parse_probability(value).ok_or_else(|| {
                    format!("{text:?}: {value:?} is not a probability from 0 to 1")
                })?),
            };
        Ok(Self { site, when, errno })
    }

    /// The errno it injects.
    pub fn errno(&self) -> Option<Errno> {
        self.errno.or(self.site.info().errno)
    }

    /// Whether it fires on the `n`th call (from 1) of its site, given
    /// that call's uniform draw in millionths (0 to 999 999).
    pub fn fires(&self, n: u64, draw_ppm: u32) -> bool {
        match self.when {
            When::Nth(k) => n == k,
            When::Every(k) => n % k == 0,
            When::Probability(p) => draw_ppm < p,
        }
    }
}

/// A probability written as a decimal from 0 to 1 (or a percentage,
/// `5%`), in millionths.
fn parse_probability(s: &str) -> Option<u32> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(p) => (p.trim(), 10_000.0),
        None => (s, 1_000_000.0),
    };
    let p: f64 = num.parse().ok()?;
    let ppm = (p * scale).round();
    if !(0.0..=1_000_000.0).contains(&ppm) || !p.is_finite() {
        return None;
    }
    // Bounded to 0..=1e6 just above, so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(ppm as u32)
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.when {
            When::Nth(n) => write!(f, "{}@{n}", self.site)?,
            When::Every(n) => write!(f, "{}/{n}", self.site)?,
            When::Probability(p) => {
                let whole = p / 1_000_000;
                let frac = p % 1_000_000;
                if frac == 0 {
                    write!(f, "{}={whole}", self.site)?;
                } else {
                    let digits = format!("{frac:06}");
                    write!(f, "{}={whole}.{}", self.site, digits.trim_end_matches('0'))?;
                }
            }
        }
        if let Some(e) = self.errno {
            write!(f, ":{e}")?;
        }
        Ok(())
    }
}

/// A rule as a file writes it: `{ site = "dma_map", probability = 0.01 }`,
/// with exactly one of `nth`, `every` and `probability`, and maybe `errno`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    site: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nth: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    errno: Option<String>,
}

impl TryFrom<RuleSpec> for Rule {
    type Error = String;

    fn try_from(s: RuleSpec) -> Result<Self, String> {
        let site = Site::from_name(&s.site).ok_or_else(|| {
            format!(
                "no injection site {:?} (`svmsim inject-sites` lists them)",
                s.site
            )
        })?;
        let errno = match &s.errno {
            Some(e) => {
                Some(Errno::from_name(e).ok_or_else(|| format!("{e:?} is not an errno name"))?)
            }
            None => None,
        };
        let when = match (s.nth, s.every, s.probability) {
            (Some(n), None, None) if n >= 1 => When::Nth(n),
            (None, Some(n), None) if n >= 1 => When::Every(n),
            (None, None, Some(p)) => When::Probability(
                parse_probability(&p.to_string())
                    .ok_or_else(|| format!("probability {p} is not from 0 to 1"))?,
            ),
            _ => {
                return Err(format!(
                    "site {:?}: give exactly one of nth, every (each 1 or more) and probability",
                    s.site
                ));
            }
        };
        Ok(Rule { site, when, errno })
    }
}

impl From<Rule> for RuleSpec {
    fn from(r: Rule) -> Self {
        let mut s = RuleSpec {
            site: r.site.name().to_owned(),
            errno: r.errno.map(|e| e.name().to_owned()),
            ..RuleSpec::default()
        };
        match r.when {
            When::Nth(n) => s.nth = Some(n),
            When::Every(n) => s.every = Some(n),
            When::Probability(p) => s.probability = Some(f64::from(p) / 1e6),
        }
        s
    }
}

/// Reads a list of rules separated by commas or spaces (`""`: none).
///
/// # Errors
/// The first rule refused, or more than [`MAX_RULES`].
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let rules = text
        .split([',', ' '])
        .filter(|s| !s.trim().is_empty())
        .map(Rule::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if rules.len() > MAX_RULES {
        return Err(format!("{} rules; at most {MAX_RULES}", rules.len()));
    }
    Ok(rules)
}

/// Writes rules as [`parse_rules`] reads them.
pub fn show_rules(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A failure the platform injects at a site: the errno, and a draw the
/// site may use to choose how it fails (how many pages are collected,
/// how late a worker runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    /// What fails.
    pub errno: Option<Errno>,
    /// A uniform 64-bit draw of this call.
    pub draw: u64,
}

/// What the engine did with an injected failure, where it handled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Response {
    /// A GPU fault fell back to system memory and mapped the window where
    /// its pages are (handled).
    Fallback,
    /// Fewer pages migrated than asked; the rest stayed and were mapped
    /// where they are.
    Partial,
    /// The GPU fault returned 0 uncounted; the GPU retries it.
    Retried,
    /// The GPU fault failed (`restore_pages` returned an error).
    Fatal,
    /// The CPU access got SIGBUS.
    Sigbus,
    /// The restore work rescheduled itself.
    Rescheduled,
    /// An ioctl returned the error.
    Returned,
    /// The caller went on without it (a best-effort prefetch).
    Swallowed,
    /// The eviction stopped; the buffer's pages stayed in VRAM.
    EvictionStopped,
    /// The work ran late.
    Delayed,
    /// The migration went on as if it had succeeded, and the pages it
    /// moved lost their bytes (kfd's unchecked fence).
    Corrupted,
}

impl Response {
    /// Every response, in report order.
    pub const ALL: [Response; 11] = [
        Response::Fallback,
        Response::Partial,
        Response::Retried,
        Response::Fatal,
        Response::Sigbus,
        Response::Rescheduled,
        Response::Returned,
        Response::Swallowed,
        Response::EvictionStopped,
        Response::Delayed,
        Response::Corrupted,
    ];

    /// Its name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Response::Fallback => "fallback",
            Response::Partial => "partial",
            Response::Retried => "retried",
            Response::Fatal => "fatal",
            Response::Sigbus => "sigbus",
            Response::Rescheduled => "rescheduled",
            Response::Returned => "returned",
            Response::Swallowed => "swallowed",
            Response::EvictionStopped => "eviction-stopped",
            Response::Delayed => "delayed",
            Response::Corrupted => "corrupted",
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_back_what_they_print() {
        for text in [
            "dma_map=0.01",
            "vram_alloc@3",
            "hmm_busy/2:EFAULT",
            "copy_to_ram=1",
            "pte_update=0",
        ] {
            let r = Rule::parse(text).unwrap();
            assert_eq!(r.to_string(), text);
            assert_eq!(Rule::parse(&r.to_string()).unwrap(), r);
        }
        assert_eq!(
            Rule::parse("dma_map=5%").unwrap().when,
            When::Probability(50_000)
        );
        let rules = parse_rules("dma_map=0.5, vram_alloc@1").unwrap();
        assert_eq!(show_rules(&rules), "dma_map=0.5,vram_alloc@1");
        assert!(parse_rules("").unwrap().is_empty());
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("nosuch=0.1", "no injection site"),
            ("dma_map=1.5", "probability"),
            ("dma_map=-0.1", "probability"),
            ("dma_map=NaN", "probability"),
            ("dma_map@0", "call count"),
            ("dma_map/x", "call count"),
            ("dma_map", "is not a rule"),
            ("dma_map@1:EWHAT", "errno"),
        ] {
            let e = Rule::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let many = vec!["dma_map@1"; MAX_RULES + 1].join(",");
        assert!(parse_rules(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn rules_fire_on_their_calls() {
        let nth = Rule::parse("dma_map@3").unwrap();
        assert_eq!(
            (1..=6).filter(|&n| nth.fires(n, 0)).collect::<Vec<_>>(),
            [3]
        );
        let every = Rule::parse("dma_map/2").unwrap();
        assert_eq!(
            (1..=6).filter(|&n| every.fires(n, 0)).collect::<Vec<_>>(),
            [2, 4, 6]
        );
        let p = Rule::parse("dma_map=0.25").unwrap();
        assert!(p.fires(1, 249_999) && !p.fires(1, 250_000));
        assert!(!Rule::parse("dma_map=0").unwrap().fires(1, 0));
        assert!(Rule::parse("dma_map=1").unwrap().fires(1, 999_999));
    }

    #[test]
    fn every_site_has_a_name_a_function_and_a_response() {
        for (i, s) in Site::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(Site::from_name(s.name()), Some(s));
            let info = s.info();
            assert!(!info.function.is_empty() && !info.response.is_empty());
        }
    }

    #[test]
    fn a_file_rule_takes_exactly_one_trigger() {
        let r: Rule = serde_json::from_str(r#"{"site": "dma_map", "probability": 0.5}"#).unwrap();
        assert_eq!(r, Rule::parse("dma_map=0.5").unwrap());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"site":"dma_map","probability":0.5}"#
        );
        let e = serde_json::from_str::<Rule>(r#"{"site": "dma_map", "nth": 1, "every": 2}"#)
            .unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
    }
}

//! The timing model: what each hardware and driver action costs in simulated
//! nanoseconds, and the profiles (TOML files in `profiles/`) that set it.
//!
//! # Overview
//! Every call the engine makes through `Hardware` is charged here: a
//! migration pays the driver's work per 4 KiB page and a copy job per
//! physically contiguous run of at most 2 MiB (setup latency plus bytes
//! over the link's bandwidth), the jobs of a device one after another on
//! its one ring; a DMA map, a PTE write and a TLB flush each cost a
//! constant, and the fault handler pays a fixed cost. A step's cost moves that step's own clock, so SMI
//! timestamps inside one fault are ordered, and the step's end is when its
//! effects (a mapped window, a woken wave) take hold.
//!
//! [`Timing::ZERO`] charges nothing: the machine then behaves as an
//! untimed model, which is what the protocol tests use so that their
//! counts do not depend on calibration.
//!
//! A profile file documents each constant with its source, or marks it as an
//! assumption; `docs/profiles.md` says which numbers were fitted and which
//! were predicted.

use serde::{Deserialize, Serialize};
use svm_core::pte::GcVersion;

/// A link's cost: a fixed setup latency plus bytes over bandwidth.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Latency before the first byte moves, ns.
    pub setup_ns: f64,
    /// Bandwidth in bytes per ns (= GB/s).
    pub bytes_per_ns: f64,
}

impl Link {
    /// A link that costs nothing.
    pub const FREE: Link = Link {
        setup_ns: 0.0,
        bytes_per_ns: f64::INFINITY,
    };

    /// Nanoseconds to move `bytes` in one transfer.
    pub fn transfer_ns(&self, bytes: u64) -> u64 {
        let t = self.setup_ns + bytes as f64 / self.bytes_per_ns;
        // Whole nanoseconds, never negative; an infinite bandwidth is free.
        ns(t.ceil())
    }
}

/// The shape of one GPU of a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuShape {
    /// GPUs in the node.
    pub count: u32,
    /// VRAM per GPU, bytes (an integer, or a size such as `"64GiB"`).
    #[serde(deserialize_with = "svm_core::units::de_size")]
    pub vram_bytes: u64,
    /// Compute units per GPU.
    pub compute_units: u32,
    /// Waves one CU keeps in flight.
    pub waves_per_cu: u32,
    /// Entries of each CU's TLB (4 KiB pages).
    pub tlb_entries: u32,
    /// Whether the GPUs share an xGMI hive.
    pub xgmi_hive: bool,
    /// Whether the GPUs run with retry faults (XNACK).
    pub xnack: bool,
    /// The GPUs' graphics IP version, such as `"9.4.3"`, which picks the
    /// rules for their PTEs (GC 9.4.2, MI200 class, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_version: Option<String>,
    /// APUs: SVM memory stays in system memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apu: bool,
    /// APUs whose VRAM allocations go to GTT (`apu_prefer_gtt`): no device
    /// memory at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apu_prefer_gtt: bool,
    /// GPUs that reach system memory coherently through ATS, as a Grace
    /// Hopper superchip's does over NVLink-C2C
    /// (`svm_core::topology::GpuDesc::ats`); their access counters count
    /// accesses to memory not their own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ats: bool,
    /// GPUs whose atomics reach only their own VRAM: an atomic to system
    /// memory or a peer faults (`svm_core::topology::GpuDesc::local_atomics`;
    /// Xe's discrete GPUs, NVIDIA GPUs on PCIe).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_atomics: bool,
    /// GPUs whose fault buffer takes every retry fault, repeats of a
    /// pending one included, as NVIDIA's replayable fault buffer does
    /// (UVM finds and coalesces the duplicates of a batch itself, and
    /// counts them: `num_duplicate_faults`); without it the ring's retry
    /// CAM filters repeats (AMD's GC 9.4.x and later,
    /// `amdgpu_gmc_filter_faults`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fault_duplicates: bool,
}

/// Every cost the simulator charges, in ns unless a name says otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// A wave's memory instruction that hits in VRAM, beyond the TLB.
    pub access_vram_ns: f64,
    /// The same to system memory over the host link (the round trip).
    pub access_sysmem_ns: f64,
    /// A TLB hit.
    pub tlb_hit_ns: f64,
    /// A TLB miss, before the page walk.
    pub tlb_miss_ns: f64,
    /// A page walk of the GPU's page table.
    pub page_walk_ns: f64,
    /// From a retry fault entering the ring to the handler seeing it.
    pub fault_delivery_ns: f64,
    /// Faults the handler takes from the ring in one batch.
    pub fault_batch: u32,
    /// Handler CPU time per batch of faults.
    pub handler_batch_ns: f64,
    /// Handler CPU time per fault (`svm_range_restore_pages`).
    pub handler_fixed_ns: f64,
    /// The driver's CPU work per 4 KiB page migrated: collecting it,
    /// `dma_map_page` of the system page, the migrate_vma setup and
    /// finalize bookkeeping and the page references. (`handler_per_page_ns`
    /// in older profiles.)
    #[serde(alias = "handler_per_page_ns")]
    pub migrate_page_ns: f64,
    /// The same for one 2 MiB compound device page (with
    /// `compound_device_pages`): its whole software share, once.
    pub migrate_folio_ns: f64,
    /// `hmm_range_fault` faulting in a never-touched page for a mapping
    /// (`handle_mm_fault`: a zeroed page allocated and mapped).
    pub fault_in_ns: f64,
    /// DMA-mapping one system page for a GPU.
    pub dma_map_ns: f64,
    /// Writing one PTE.
    pub pte_write_ns: f64,
    /// A legacy (light) TLB flush after mapping.
    pub tlb_flush_light_ns: f64,
    /// A heavyweight TLB flush after unmapping.
    pub tlb_flush_heavy_ns: f64,
    /// Stopping a process's queues on one GPU.
    pub queue_evict_ns: f64,
    /// Resuming them.
    pub queue_restore_ns: f64,
    /// A copy between system memory and a GPU (per direction, one at a time).
    pub host_link: Link,
    /// A copy between two GPUs (xGMI in a hive, else PCIe peer).
    pub peer_link: Link,
    /// A kernel launch, from the call to the first wave running.
    pub launch_ns: f64,
    /// A CPU thread's memory operation on host memory (per page touched).
    pub cpu_access_ns: f64,
}

impl Timing {
    /// Charges nothing: an untimed model.
    pub const ZERO: Timing = Timing {
        access_vram_ns: 0.0,
        access_sysmem_ns: 0.0,
        tlb_hit_ns: 0.0,
        tlb_miss_ns: 0.0,
        page_walk_ns: 0.0,
        fault_delivery_ns: 0.0,
        fault_batch: 1,
        handler_batch_ns: 0.0,
        handler_fixed_ns: 0.0,
        migrate_page_ns: 0.0,
        migrate_folio_ns: 0.0,
        fault_in_ns: 0.0,
        dma_map_ns: 0.0,
        pte_write_ns: 0.0,
        tlb_flush_light_ns: 0.0,
        tlb_flush_heavy_ns: 0.0,
        queue_evict_ns: 0.0,
        queue_restore_ns: 0.0,
        host_link: Link::FREE,
        peer_link: Link::FREE,
        launch_ns: 0.0,
        cpu_access_ns: 0.0,
    };

    /// Whether this model charges anything.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
}

/// Whole nanoseconds of a cost.
pub fn ns(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Saturates at u64::MAX (about 584 years), far past any run.
        #[allow(clippy::cast_possible_truncation)]
        let n = x.round() as u64;
        n
    } else {
        0
    }
}

/// A named profile: a GPU shape and its timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// One line on what it models.
    pub description: String,
    /// The GPUs.
    pub gpu: GpuShape,
    /// The costs.
    pub timing: Timing,
}

/// Why a profile could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ProfileError {
    /// The file (or built-in name).
    pub file: String,
    /// What is wrong, with line and column when the parser knows them.
    pub message: String,
}

/// The profiles shipped in `profiles/`, by name.
pub const BUILT_IN: [(&str, &str); 9] = [
    ("mi210", include_str!("../../../profiles/mi210.toml")),
    ("mi250x", include_str!("../../../profiles/mi250x.toml")),
    ("mi300x", include_str!("../../../profiles/mi300x.toml")),
    ("mi300a", include_str!("../../../profiles/mi300a.toml")),
    ("gc121", include_str!("../../../profiles/gc121.toml")),
    ("uvm-pcie", include_str!("../../../profiles/uvm-pcie.toml")),
    ("uvm-gh", include_str!("../../../profiles/uvm-gh.toml")),
    (
        "uvm-nvlink",
        include_str!("../../../profiles/uvm-nvlink.toml"),
    ),
    ("xe", include_str!("../../../profiles/xe.toml")),
];

/// The line of `key = ...` in `[section]` of `text`, for errors serde's
/// value checks cannot place.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            inside = t.trim_start_matches('[').trim_end_matches(']').trim() == section;
        } else if inside
            && t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

/// The kfd-style gpu_id of a profile's GPU `index` (0x1002, 0x2002, ..):
/// distinct, nonzero, and stable across runs, so that a trace or SMI log
/// names the same GPU on replay.
pub const fn gpu_id(index: u32) -> u32 {
    0x1002 + 0x1000 * index
}

/// The index of the profile GPU whose gpu_id is `id` ([`gpu_id`]'s
/// inverse), or `None` for an id no profile gives.
pub const fn gpu_index(id: u32) -> Option<u32> {
    if id >= 0x1002 && (id - 0x1002) % 0x1000 == 0 {
        Some((id - 0x1002) / 0x1000)
    } else {
        None
    }
}

impl Profile {
    /// Parses a profile file.
    ///
    /// # Errors
    /// A syntax error, an unknown or missing field (with its line), or a
    /// value that makes no sense (a zero bandwidth, no compute units).
    pub fn parse(file: &str, text: &str) -> Result<Self, ProfileError> {
        let err = |message: String| ProfileError {
            file: file.to_owned(),
            message,
        };
        // A syntax or field error placed at file:line:column, as every
        // other input's.
        let p: Profile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let start = before.rfind('\n').map_or(0, |n| n + 1);
                let col = before.len() - start + 1;
                let source = text[start..].lines().next().unwrap_or("").trim();
                (format!("{file}:{line}:{col}"), source)
            });
            match at {
                // The line itself names the field.
                Some((at, source)) if !source.is_empty() => ProfileError {
                    file: at,
                    message: format!("{} (in `{source}`)", e.message().trim()),
                },
                other => ProfileError {
                    file: other.map_or_else(|| file.to_owned(), |(at, _)| at),
                    message: e.message().trim().to_owned(),
                },
            }
        })?;
        let t = &p.timing;
        for (name, v) in [
            ("timing.host_link.bytes_per_ns", t.host_link.bytes_per_ns),
            ("timing.peer_link.bytes_per_ns", t.peer_link.bytes_per_ns),
        ] {
            if v.is_nan() || v <= 0.0 {
                return Err(err(format!("{name} must be positive, not {v}")));
            }
        }
        let costs = [
            t.access_vram_ns,
            t.access_sysmem_ns,
            t.tlb_hit_ns,
            t.tlb_miss_ns,
            t.page_walk_ns,
            t.fault_delivery_ns,
            t.handler_batch_ns,
            t.handler_fixed_ns,
            t.migrate_page_ns,
            t.migrate_folio_ns,
            t.fault_in_ns,
            t.dma_map_ns,
            t.pte_write_ns,
            t.tlb_flush_light_ns,
            t.tlb_flush_heavy_ns,
            t.queue_evict_ns,
            t.queue_restore_ns,
            t.host_link.setup_ns,
            t.peer_link.setup_ns,
            t.launch_ns,
            t.cpu_access_ns,
        ];
        if costs.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
            return Err(err(
                "every cost must be a finite number of ns, 0 or more".into()
            ));
        }
        let g = &p.gpu;
        use crate::limits as l;
        // Each count within its limit, placed at its line.
        let at = |section: &str, key: &str, what: String| ProfileError {
            file: match line_of(text, section, key) {
                Some(n) => format!("{file}:{n}"),
                None => file.to_owned(),
            },
            message: format!("field `{section}.{key}`: {what}"),
        };
        #[rustfmt::skip]
        let counts = [
            ("gpu", "count", g.count, l::MAX_GPUS),
            ("gpu", "compute_units", g.compute_units, l::MAX_COMPUTE_UNITS),
            ("gpu", "waves_per_cu", g.waves_per_cu, l::MAX_WAVES_PER_CU),
            ("gpu", "tlb_entries", g.tlb_entries, l::MAX_TLB_ENTRIES),
            ("timing", "fault_batch", t.fault_batch, l::MAX_FAULT_BATCH),
        ];
        for (section, key, v, max) in counts {
            if v == 0 || v > max {
                return Err(at(section, key, format!("{v} is not between 1 and {max}")));
            }
        }
        let tlbs = u64::from(g.count)
            .saturating_mul(u64::from(g.compute_units))
            .saturating_mul(u64::from(g.tlb_entries));
        if tlbs > l::MAX_MACHINE_TLB_ENTRIES {
            return Err(at(
                "gpu",
                "tlb_entries",
                format!(
                    "{} GPUs x {} CUs x {} entries is {tlbs} TLB entries; a machine holds at most {}",
                    g.count,
                    g.compute_units,
                    g.tlb_entries,
                    l::MAX_MACHINE_TLB_ENTRIES
                ),
            ));
        }
        if !(l::MIN_VRAM_BYTES..=l::MAX_VRAM_BYTES).contains(&g.vram_bytes) {
            return Err(at(
                "gpu",
                "vram_bytes",
                format!("{} is not between 2 MiB and 16 TiB", g.vram_bytes),
            ));
        }
        if g.apu_prefer_gtt && !g.apu {
            return Err(at(
                "gpu",
                "apu_prefer_gtt",
                "only an APU prefers GTT; set `apu = true` too".into(),
            ));
        }
        if let Some(v) = &g.gc_version
            && GcVersion::parse(v).is_none()
        {
            return Err(err(format!(
                "gpu.gc_version must be a version such as \"9.4.3\", not {v:?}"
            )));
        }
        Ok(p)
    }

    /// A built-in profile by name.
    ///
    /// # Errors
    /// An unknown name, listing the known ones.
    pub fn built_in(name: &str) -> Result<Self, ProfileError> {
        let (_, text) = BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError {
                file: name.to_owned(),
                message: format!(
                    "no built-in profile of that name; known: {}",
                    BUILT_IN.map(|(n, _)| n).join(", ")
                ),
            })?;
        Self::parse(&format!("profiles/{name}.toml"), text)
    }

    /// The GPUs' graphics IP version.
    pub fn gc(&self) -> GcVersion {
        self.gpu
            .gc_version
            .as_deref()
            .and_then(GcVersion::parse)
            .unwrap_or_default()
    }

    /// The GPUs of the node, named `gpu0`.. with kfd-style gpu_ids
    /// ([`gpu_id`]).
    pub fn gpus(&self) -> Vec<svm_core::topology::GpuDesc> {
        (0..self.gpu.count)
            .map(|i| svm_core::topology::GpuDesc {
                name: format!("gpu{i}"),
                id: svm_core::gpu::GpuId::new(gpu_id(i)).expect("nonzero id"),
                vram_bytes: self.gpu.vram_bytes,
                svm: true,
                xnack: self.gpu.xnack,
                hive: self.gpu.xgmi_hive.then_some(1),
                apu: self.gpu.apu,
                prefer_gtt: self.gpu.apu_prefer_gtt,
                ats: self.gpu.ats,
                local_atomics: self.gpu.local_atomics,
                gc: self.gc(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse() {
        for (name, _) in BUILT_IN {
            let p = Profile::built_in(name).unwrap();
            assert_eq!(p.name, name);
            assert!(!p.timing.is_zero());
        }
        assert!(
            Profile::built_in("mi999")
                .unwrap_err()
                .message
                .contains("mi210")
        );
    }

    #[test]
    fn bad_profiles_name_the_field() {
        let good = BUILT_IN[0].1;
        let bad = good.replace("fault_batch =", "fault_batch_typo =");
        let e = Profile::parse("x.toml", &bad).unwrap_err();
        assert!(e.message.contains("fault_batch_typo"), "{e}");
        // Placed at file:line:column.
        let line = 1 + good[..good.find("fault_batch =").unwrap()]
            .matches('\n')
            .count();
        assert_eq!(e.file, format!("x.toml:{line}:1"), "{e}");
        let bad = good.replacen("bytes_per_ns = ", "bytes_per_ns = 0.0 #", 1);
        let e = Profile::parse("x.toml", &bad).unwrap_err();
        assert!(e.message.contains("must be positive"), "{e}");
        let bad = good.replacen("gc_version = \"9.4.2\"", "gc_version = \"gfx90a\"", 1);
        let e = Profile::parse("x.toml", &bad).unwrap_err();
        assert!(e.message.contains("gpu.gc_version"), "{e}");
        // A size in the grammar flags use; a decimal unit is refused.
        let sized = good.replacen("vram_bytes = 68719476736", "vram_bytes = \"64GiB\"", 1);
        assert_ne!(sized, good);
        assert_eq!(
            Profile::parse("x.toml", &sized).unwrap(),
            Profile::parse("x.toml", good).unwrap()
        );
        let bad = good.replacen("vram_bytes = 68719476736", "vram_bytes = \"64GB\"", 1);
        let e = Profile::parse("x.toml", &bad).unwrap_err();
        assert!(e.message.contains("GiB"), "{e}");
        // Absent, it is GC 9.4.2.
        let old = good.replacen("gc_version = \"9.4.2\"", "", 1);
        assert_eq!(
            Profile::parse("x.toml", &old).unwrap().gc(),
            GcVersion(9, 4, 2)
        );
    }

    #[test]
    fn a_link_charges_setup_plus_bytes() {
        let l = Link {
            setup_ns: 2000.0,
            bytes_per_ns: 12.0,
        };
        assert_eq!(l.transfer_ns(12_000), 3000);
        assert_eq!(Link::FREE.transfer_ns(1 << 30), 0);
    }
}

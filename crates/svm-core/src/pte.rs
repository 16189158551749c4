//! GPU page-table entry flags for SVM pages (`svm_range_get_pte_flags`).
//!
//! What a PTE says about a page depends on where the page lives (system
//! memory, this GPU's VRAM, or another GPU's), on the range's flags
//! (COHERENT, EXT_COHERENT, GPU_RO, GPU_EXEC), on the VMA's protection, and on
//! the GPU's graphics IP version, which picks the memory type (MTYPE) and
//! whether accesses snoop the CPU caches. The rules follow the kernel's, IP
//! version by IP version.
//!
//! `process/map.rs` builds every PTE with [`pte_flags`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::attr::SvmFlags;
use crate::uapi::flag;

/// A graphics IP version (`IP_VERSION(major, minor, rev)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GcVersion(pub u8, pub u8, pub u8);

impl GcVersion {
    /// The version a GPU has unless told otherwise: GC 9.4.2 (MI200 class),
    /// which runs SVM with XNACK selectable per process.
    pub const DEFAULT: GcVersion = GcVersion(9, 4, 2);

    /// Whether kfd lets each process choose its XNACK mode on this GPU
    /// (`KFD_SUPPORT_XNACK_PER_PROCESS`): GC 9.4.2, 9.4.3, 9.4.4 and 9.5.0,
    /// and GC 12.1 in kernels before `gfx12_1_fixed` (the 7.2 change).
    pub fn xnack_per_process(self, gfx12_1_fixed: bool) -> bool {
        matches!(
            self,
            GcVersion(9, 4, 2) | GcVersion(9, 4, 3) | GcVersion(9, 4, 4) | GcVersion(9, 5, 0)
        ) || (self == GcVersion(12, 1, 0) && !gfx12_1_fixed)
    }

    /// Whether a process on this GPU may run with retry faults at all when
    /// the mode is not chosen per process. GFX 10 and later cannot preempt
    /// shaders stalled on a fault (`kfd_process_xnack_mode`: "GFXv10 and
    /// later GPUs do not support shader preemption during page faults"),
    /// except GC 12.1, whose retry mode is the driver's boot mode
    /// (reading of 05c0109e12e1, which allows XNACK on there).
    pub fn xnack_possible(self) -> bool {
        self < GcVersion(10, 1, 1) || self == GcVersion(12, 1, 0)
    }

    /// Parses `"9.4.3"`.
    pub fn parse(s: &str) -> Option<GcVersion> {
        let mut it = s.split('.').map(|p| p.trim().parse::<u8>().ok());
        let v = GcVersion(it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(v)
    }
}

impl Default for GcVersion {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for GcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The memory type of a mapping: how the GPU caches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mtype {
    /// Read-write cached, non-coherent (`MTYPE_RW`).
    Rw,
    /// Non-coherent (`MTYPE_NC`).
    Nc,
    /// Cache-coherent (`MTYPE_CC`).
    Cc,
    /// Uncached (`MTYPE_UC`).
    Uc,
}

/// Where the mapped page lives, seen from the GPU that maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PteDomain {
    /// System memory, reached by DMA.
    Sys,
    /// The VRAM of the mapping GPU itself.
    LocalVram,
    /// Another GPU's VRAM in the same xGMI hive.
    HiveVram,
    /// Another GPU's VRAM outside the hive (PCIe peer-to-peer).
    RemoteVram,
}

/// The GPU-wide facts the rules consult besides its IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteContext {
    /// Graphics IP version.
    pub gc: GcVersion,
    /// An APU: system memory is its local memory.
    pub apu: bool,
    /// Its xGMI link reaches the CPU (GC 9.4.2 snoops local VRAM then).
    pub xgmi_connected_to_cpu: bool,
    /// NUMA nodes of the host (GC 9.4.3+ APUs use the local MTYPE only on one).
    pub numa_nodes: u32,
    /// The `amdgpu.mtype_local` module parameter (1 NC, 2 CC, otherwise RW).
    pub mtype_local_param: u32,
}

impl PteContext {
    /// A discrete GPU of this IP version with default module parameters.
    pub fn dgpu(gc: GcVersion) -> Self {
        Self {
            gc,
            apu: false,
            xgmi_connected_to_cpu: false,
            numa_nodes: 1,
            mtype_local_param: 0,
        }
    }
}

/// The flags of one PTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PteFlags {
    /// The entry translates.
    pub valid: bool,
    /// The page is in system memory.
    pub system: bool,
    /// Accesses snoop CPU caches.
    pub snooped: bool,
    /// Reads allowed.
    pub readable: bool,
    /// Writes allowed.
    pub writeable: bool,
    /// Instruction fetch allowed.
    pub executable: bool,
    /// Cache policy.
    pub mtype: Mtype,
}

/// The PTE flags for a page of a range with `flags`, living in `domain`, in
/// a VMA that is read-only or not.
pub fn pte_flags(
    ctx: PteContext,
    flags: SvmFlags,
    domain: PteDomain,
    vma_readonly: bool,
) -> PteFlags {
    let bits = flags.bits();
    let coherent = bits & (flag::COHERENT | flag::EXT_COHERENT) != 0;
    let ext = bits & flag::EXT_COHERENT != 0;
    let vram = domain != PteDomain::Sys;
    let mut snoop = !vram;
    let gc = ctx.gc;
    let coherent_or = |yes, no| if coherent { yes } else { no };
    let mtype = match gc {
        GcVersion(9, 4, 1) | GcVersion(9, 4, 2) => match domain {
            PteDomain::LocalVram => {
                // GC 9.4.2 with its xGMI link to the CPU snoops even local VRAM.
                if gc == GcVersion(9, 4, 2) && ctx.xgmi_connected_to_cpu {
                    snoop = true;
                }
                coherent_or(Mtype::Cc, Mtype::Rw)
            }
            PteDomain::HiveVram => {
                snoop = true;
                coherent_or(Mtype::Uc, Mtype::Nc)
            }
            PteDomain::RemoteVram | PteDomain::Sys => coherent_or(Mtype::Uc, Mtype::Nc),
        },
        GcVersion(9, 4, 3) | GcVersion(9, 4, 4) | GcVersion(9, 5, 0) => {
            let mtype_local = if ext {
                Mtype::Cc
            } else {
                match ctx.mtype_local_param {
                    1 => Mtype::Nc,
                    2 => Mtype::Cc,
                    _ => Mtype::Rw,
                }
            };
            snoop = true;
            let before_9_5 = gc < GcVersion(9, 5, 0);
            match domain {
                PteDomain::LocalVram => mtype_local,
                PteDomain::HiveVram if !ext => Mtype::Nc,
                PteDomain::RemoteVram if before_9_5 => Mtype::Uc,
                PteDomain::HiveVram | PteDomain::RemoteVram => {
                    if ext {
                        Mtype::Uc
                    } else {
                        Mtype::Nc
                    }
                }
                PteDomain::Sys if ctx.apu => {
                    // On NUMA hosts locality is decided per page elsewhere.
                    if ctx.numa_nodes <= 1 {
                        mtype_local
                    } else if ext {
                        Mtype::Uc
                    } else {
                        Mtype::Nc
                    }
                }
                PteDomain::Sys => {
                    if before_9_5 || ext {
                        Mtype::Uc
                    } else {
                        Mtype::Nc
                    }
                }
            }
        }
        GcVersion(12, 0, 0) | GcVersion(12, 0, 1) => Mtype::Nc,
        _ => coherent_or(Mtype::Uc, Mtype::Nc),
    };
    PteFlags {
        valid: true,
        system: !vram,
        snooped: snoop,
        readable: true,
        // GPU_RO and a read-only VMA both take write permission away.
        writeable: bits & flag::GPU_RO == 0 && !vma_readonly,
        executable: bits & flag::GPU_EXEC != 0,
        mtype,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CO: u32 = flag::COHERENT;
    const EXT: u32 = flag::EXT_COHERENT;

    fn f(ctx: PteContext, flags: u32, d: PteDomain) -> (Mtype, bool, bool) {
        let p = pte_flags(ctx, SvmFlags::from_bits(flags), d, false);
        (p.mtype, p.snooped, p.system)
    }

    #[test]
    fn mtype_and_snoop_table() {
        use Mtype::*;
        use PteDomain::*;
        let v = |a, b, c| PteContext::dgpu(GcVersion(a, b, c));
        // Table: (context, range flags, domain) → (mtype, snooped, system)
        let cases = [
            (v(9, 4, 1), CO, LocalVram, (Cc, false, false)),
            (v(9, 4, 1), 0, LocalVram, (Rw, false, false)),
            (v(9, 4, 1), CO, HiveVram, (Uc, true, false)),
            (v(9, 4, 1), 0, RemoteVram, (Nc, false, false)),
            (v(9, 4, 1), CO, Sys, (Uc, true, true)),
            (v(9, 4, 2), 0, Sys, (Nc, true, true)),
            (
                PteContext {
                    xgmi_connected_to_cpu: true,
                    ..v(9, 4, 2)
                },
                0,
                LocalVram,
                (Rw, true, false),
            ),
            (v(9, 4, 3), 0, LocalVram, (Rw, true, false)),
            (v(9, 4, 3), EXT, LocalVram, (Cc, true, false)),
            (
                PteContext {
                    mtype_local_param: 1,
                    ..v(9, 4, 3)
                },
                0,
                LocalVram,
                (Nc, true, false),
            ),
            (v(9, 4, 3), 0, HiveVram, (Nc, true, false)),
            (v(9, 4, 3), EXT, HiveVram, (Uc, true, false)),
            (v(9, 4, 3), 0, RemoteVram, (Uc, true, false)),
            (v(9, 5, 0), 0, RemoteVram, (Nc, true, false)),
            (v(9, 5, 0), EXT, RemoteVram, (Uc, true, false)),
            (v(9, 4, 3), 0, Sys, (Uc, true, true)),
            (v(9, 5, 0), 0, Sys, (Nc, true, true)),
            (
                PteContext {
                    apu: true,
                    ..v(9, 4, 3)
                },
                0,
                Sys,
                (Rw, true, true),
            ),
            (
                PteContext {
                    apu: true,
                    numa_nodes: 2,
                    ..v(9, 4, 3)
                },
                0,
                Sys,
                (Nc, true, true),
            ),
            (v(12, 0, 0), CO, LocalVram, (Nc, false, false)),
            (v(10, 3, 0), CO, LocalVram, (Uc, false, false)),
            (v(10, 3, 0), 0, Sys, (Nc, true, true)),
        ];
        for (ctx, flags, domain, want) in cases {
            assert_eq!(
                f(ctx, flags, domain),
                want,
                "{} {flags:#x} {domain:?}",
                ctx.gc
            );
        }
    }

    #[test]
    fn permissions() {
        let ctx = PteContext::dgpu(GcVersion::DEFAULT);
        let p = |flags, ro| pte_flags(ctx, SvmFlags::from_bits(flags), PteDomain::Sys, ro);
        assert!(p(0, false).writeable);
        assert!(!p(flag::GPU_RO, false).writeable);
        assert!(!p(0, true).writeable);
        assert!(p(0, true).readable);
        assert!(!p(0, false).executable);
        assert!(p(flag::GPU_EXEC, false).executable);
        assert!(p(0, false).valid);
    }

    #[test]
    fn gc_version_parse() {
        assert_eq!(GcVersion::parse("9.4.3"), Some(GcVersion(9, 4, 3)));
        assert_eq!(GcVersion::parse("12.0.1").unwrap().to_string(), "12.0.1");
        assert_eq!(GcVersion::parse("9.4"), None);
        assert_eq!(GcVersion::parse("9.4.3.1"), None);
        assert_eq!(GcVersion::parse("9.x.3"), None);
    }
}

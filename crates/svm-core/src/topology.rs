//! The system description: GPUs with ids, VRAM, SVM support, XNACK capability and xGMI hives.
//!
//! kfd learns this from its topology (`kfd_topology.c`). Here it is data the
//! simulator or a scenario file hands in. [`Topology::max_svm_range_pages`]
//! derives the largest range `set_attr` creates, as `svm_range_set_max_pages`
//! does at device init.

use serde::{Deserialize, Serialize};

use crate::addr::PageCount;
use crate::gpu::{GpuId, MAX_GPU_INSTANCE};
use crate::pte::GcVersion;

/// One GPU of the system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDesc {
    /// A short name for reports, such as `gpu0`.
    pub name: String,
    /// The kfd gpu_id user space passes.
    pub id: GpuId,
    /// VRAM size in bytes.
    pub vram_bytes: u64,
    /// Whether the GPU supports the SVM API (gfx9 and later with SVM enabled).
    pub svm: bool,
    /// Whether the GPU can run with retry faults (XNACK on).
    pub xnack: bool,
    /// The xGMI hive the GPU belongs to, if any.
    pub hive: Option<u64>,
    /// An APU that keeps SVM memory in system memory (`gmc.is_app_apu`):
    /// prefetches and faults never move pages into its "VRAM".
    pub apu: bool,
    /// An APU whose "VRAM" allocations all go to GTT (`apu_prefer_gtt`,
    /// set when the carve-out is smaller than GTT): no device memory is
    /// registered for SVM (`kgd2kfd_init_zone_device` returns early), so
    /// nothing migrates, and KFD VRAM buffers live in system memory. Only
    /// an APU has it.
    #[serde(default)]
    pub prefer_gtt: bool,
    /// The GPU reaches system memory coherently, translating through the
    /// CPU's page tables (ATS, as NVIDIA's Grace Hopper does over C2C):
    /// UVM's fault service then leaves pages the CPU holds where they are
    /// (`skip_mapped` in `uvm_ats_faults.c`), and its access counters,
    /// on by default only here, migrate what the GPU uses remotely.
    #[serde(default)]
    pub ats: bool,
    /// Its atomics reach only its own VRAM: an atomic to a page mapped in
    /// system memory or in a peer's VRAM faults (`Access::Atomic`) and the
    /// driver decides. So Xe maps system pages without the atomic-enable
    /// bit on a discrete GPU (`xe_vma_need_vram_for_atomic`), and an
    /// NVIDIA GPU on PCIe has no native atomics to system memory (UVM's
    /// `native_atomics` masks). An AMD GPU's atomics reach system memory
    /// over PCIe AtomicOps and peers over xGMI, so kfd never sees an
    /// atomic fault: false unless a profile says so.
    ///
    /// [`Access::Atomic`]: crate::policy::Access::Atomic
    #[serde(default)]
    pub local_atomics: bool,
    /// Its graphics IP version, which picks the rules for its PTEs' memory
    /// types and snooping (`svm_range_get_pte_flags`).
    #[serde(default)]
    pub gc: GcVersion,
}

/// Why a topology was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// More GPUs than a process can index.
    #[error("{0} GPUs is more than the {MAX_GPU_INSTANCE} a process can use")]
    TooManyGpus(usize),
    /// Two GPUs share a gpu_id.
    #[error("gpu_id {0} is used twice")]
    DuplicateId(GpuId),
    /// Two GPUs share a name.
    #[error("GPU name {0:?} is used twice")]
    DuplicateName(String),
    /// `apu_prefer_gtt` on a GPU that is not an APU.
    #[error("GPU {0:?} prefers GTT but is not an APU (apu_prefer_gtt needs apu)")]
    PreferGttNotApu(String),
}

/// The GPUs of the machine, in kfd node order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    gpus: Vec<GpuDesc>,
}

impl Topology {
    /// Smallest `max_svm_range_pages`: 2 MiB.
    pub const MIN_RANGE_PAGES: u64 = 1 << 9;
    /// Largest `max_svm_range_pages`: 1 GiB.
    pub const MAX_RANGE_PAGES: u64 = 1 << 18;

    /// A topology of these GPUs, in node order.
    ///
    /// # Errors
    /// Too many GPUs, or a repeated id or name.
    pub fn new(gpus: Vec<GpuDesc>) -> Result<Self, TopologyError> {
        if gpus.len() > MAX_GPU_INSTANCE {
            return Err(TopologyError::TooManyGpus(gpus.len()));
        }
        for (i, g) in gpus.iter().enumerate() {
            if gpus[..i].iter().any(|h| h.id == g.id) {
                return Err(TopologyError::DuplicateId(g.id));
            }
            if gpus[..i].iter().any(|h| h.name == g.name) {
                return Err(TopologyError::DuplicateName(g.name.clone()));
            }
            if g.prefer_gtt && !g.apu {
                return Err(TopologyError::PreferGttNotApu(g.name.clone()));
            }
        }
        Ok(Self { gpus })
    }

    /// The GPUs in node order.
    pub fn gpus(&self) -> &[GpuDesc] {
        &self.gpus
    }

    /// The GPU with this gpu_id.
    pub fn gpu(&self, id: GpuId) -> Option<&GpuDesc> {
        self.gpus.iter().find(|g| g.id == id)
    }

    /// The largest range, in pages, that set_attr creates in one piece.
    ///
    /// Per GPU: VRAM/32 bytes as pages (`VRAM >> 17`), clamped to 2 MiB…1 GiB
    /// and rounded down to a power of two; the system takes the smallest.
    /// This keeps each range, and the whole-range VRAM buffer a migration
    /// allocates for it, small next to any GPU's VRAM. Without GPUs the 1 GiB
    /// cap applies.
    pub fn max_svm_range_pages(&self) -> PageCount {
        let pages = self
            .gpus
            .iter()
            .map(|g| {
                let p = (g.vram_bytes >> 17).clamp(Self::MIN_RANGE_PAGES, Self::MAX_RANGE_PAGES);
                1u64 << p.ilog2()
            })
            .min()
            .unwrap_or(Self::MAX_RANGE_PAGES);
        PageCount::new(pages)
    }

    /// Whether two GPUs share an xGMI hive.
    pub fn same_hive(&self, a: GpuId, b: GpuId) -> bool {
        match (
            self.gpu(a).and_then(|g| g.hive),
            self.gpu(b).and_then(|g| g.hive),
        ) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn gpu(name: &str, id: u32, vram_bytes: u64) -> GpuDesc {
        GpuDesc {
            name: name.into(),
            id: GpuId::new(id).unwrap(),
            vram_bytes,
            svm: true,
            xnack: true,
            hive: None,
            apu: false,
            prefer_gtt: false,
            ats: false,
            local_atomics: false,
            gc: GcVersion::DEFAULT,
        }
    }

    #[test]
    fn max_range_pages_is_vram_over_32_clamped_pow2() {
        // Table: (VRAM bytes, expected max range in bytes)
        let cases = [
            (16 * GIB, 512 * MIB), // 16 GiB / 32
            (64 * GIB, GIB),       // capped at 1 GiB
            (24 * GIB, 512 * MIB), // 768 MiB rounded down to a power of two
            (32 * MIB, 2 * MIB),   // 1 MiB raised to the 2 MiB floor
            (0, 2 * MIB),          // an APU without carve-out
        ];
        for (vram, want) in cases {
            let t = Topology::new(vec![gpu("g", 1, vram)]).unwrap();
            assert_eq!(t.max_svm_range_pages().bytes(), want, "vram {vram:#x}");
        }
    }

    #[test]
    fn smallest_gpu_decides() {
        let t = Topology::new(vec![gpu("a", 1, 64 * GIB), gpu("b", 2, 8 * GIB)]).unwrap();
        assert_eq!(t.max_svm_range_pages().bytes(), 256 * MIB);
        assert_eq!(
            Topology::new(vec![]).unwrap().max_svm_range_pages().bytes(),
            GIB
        );
    }

    #[test]
    fn rejects_duplicates() {
        assert!(matches!(
            Topology::new(vec![gpu("a", 1, GIB), gpu("b", 1, GIB)]),
            Err(TopologyError::DuplicateId(_))
        ));
        assert!(matches!(
            Topology::new(vec![gpu("a", 1, GIB), gpu("a", 2, GIB)]),
            Err(TopologyError::DuplicateName(_))
        ));
    }

    #[test]
    fn hives() {
        let mut a = gpu("a", 1, GIB);
        let mut b = gpu("b", 2, GIB);
        let c = gpu("c", 3, GIB);
        a.hive = Some(7);
        b.hive = Some(7);
        let t = Topology::new(vec![a, b, c]).unwrap();
        let id = |r| GpuId::new(r).unwrap();
        assert!(t.same_hive(id(1), id(2)));
        assert!(!t.same_hive(id(1), id(3)));
    }
}

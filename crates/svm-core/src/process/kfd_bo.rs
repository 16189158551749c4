//! VRAM buffers of the KFD memory API (what hipMalloc allocates:
//! `amdgpu_amdkfd_gpuvm_alloc_memory_of_gpu` with
//! KFD_IOC_ALLOC_MEM_FLAGS_VRAM), beside SVM.
//!
//! They are not SVM memory, but they share with SVM's buffers what SVM's
//! behaviour depends on: the GPU's VRAM, TTM's per-device LRU (either kind
//! may evict the other), and the KFD VRAM limit, which they hold for their
//! lifetime while an SVM migration holds it only while it runs (the 6.10
//! gate, [`crate::kernel::Change::VramLimitGate`]). Their bytes are not
//! modelled: only where they are.
//!
//! Evicting one is TTM moving it to GTT: its eviction fence stops every
//! queue of its process (`kgd2kfd_quiesce_mm`), and the process restore
//! work (`restore_process_worker`, [`PROCESS_RESTORE_TIME_NS`] later)
//! validates it back into VRAM, evicting in turn whatever the LRU gives,
//! then resumes the queues. A restore that finds no room tries again
//! [`PROCESS_BACK_OFF_TIME_NS`] later.

use super::Process;
use crate::error::{Errno, Error, Result};
use crate::events;
use crate::gpu::GpuIndex;
use crate::platform::{Hardware, VramBuf};

/// `PROCESS_RESTORE_TIME_MS` (kfd_process.c): the restore work runs this
/// long after an eviction.
pub const PROCESS_RESTORE_TIME_NS: u64 = 100_000_000;

/// `PROCESS_BACK_OFF_TIME_MS`: a failed restore tries again this much later.
pub const PROCESS_BACK_OFF_TIME_NS: u64 = 100_000_000;

/// The largest KFD buffer one call may ask for (a bound checked before
/// anything is reserved; VRAM itself is the real limit).
pub const MAX_KFD_BO_BYTES: u64 = 1 << 44;

/// One KFD VRAM buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfdBo {
    /// The GPU it belongs to.
    pub gpu: GpuIndex,
    /// Its size in pages.
    pub npages: u64,
    /// Its VRAM, or `None` while it is evicted to GTT (or always, when
    /// it was allocated in GTT).
    pub buf: Option<VramBuf>,
    /// Allocated in GTT from the start: an `apu_prefer_gtt` APU rewrites
    /// VRAM allocations to GTT, so the buffer holds system memory (charged
    /// to the system memory limit) and is never evicted or restored.
    pub gtt: bool,
    /// Its place in the GPU's LRU while resident.
    pub lru: u64,
}

impl Process {
    /// `amdgpu_amdkfd_gpuvm_alloc_memory_of_gpu` with a VRAM domain, placed
    /// at once: reserves the bytes against the KFD VRAM limit, then
    /// allocates VRAM, evicting on the LRU as TTM does. Returns the
    /// buffer's handle.
    ///
    /// # Errors
    /// EINVAL for an unknown GPU or a size of 0 or above
    /// [`MAX_KFD_BO_BYTES`]; ENOMEM when the limit or the VRAM cannot hold
    /// it (nothing is kept then); on an `apu_prefer_gtt` APU, ENOMEM when
    /// the system memory limit cannot.
    pub fn alloc_memory_of_gpu(
        &mut self,
        pf: &mut dyn Hardware,
        gpu_id: u32,
        bytes: u64,
    ) -> Result<u64> {
        let gpu = self.gpuidx(gpu_id).ok_or(Error::UnknownGpu(gpu_id))?;
        if bytes == 0 || bytes > MAX_KFD_BO_BYTES {
            return Err(Error::BadSize(bytes));
        }
        let npages = bytes.div_ceil(crate::addr::PAGE_SIZE);
        let size = npages * crate::addr::PAGE_SIZE;
        let id = self.next_kfd_bo;
        if self.devices[gpu].prefer_gtt {
            // `amdgpu_amdkfd_reserve_mem_limit` counts a GTT-domain
            // allocation against system memory.
            pf.reserve_mem_limit(size)?;
            self.next_kfd_bo += 1;
            self.kfd_bos.insert(
                id,
                KfdBo {
                    gpu,
                    npages,
                    buf: None,
                    gtt: true,
                    lru: 0,
                },
            );
            return Ok(id);
        }
        pf.reserve_vram_limit(gpu, size).map_err(|e| match e {
            Error::VramLimit {
                gpu,
                need_bytes,
                used_bytes,
                limit_bytes,
                ..
            } => Error::VramLimit {
                gpu,
                need_bytes,
                used_bytes,
                limit_bytes,
                errno: Errno::Enomem,
            },
            e => e,
        })?;
        let buf = match self.alloc_vram(pf, gpu, npages) {
            Ok(b) => b,
            Err(_) => {
                pf.unreserve_vram_limit(gpu, size);
                return Err(Error::OutOfVram {
                    gpu: gpu.get(),
                    npages,
                });
            }
        };
        self.next_kfd_bo += 1;
        let lru = pf.lru_bump(gpu);
        self.kfd_bos.insert(
            id,
            KfdBo {
                gpu,
                npages,
                buf: Some(buf),
                gtt: false,
                lru,
            },
        );
        Ok(id)
    }

    /// `amdgpu_amdkfd_gpuvm_free_memory_of_gpu`: frees the buffer's VRAM
    /// (if it is resident) and its reservation. A buffer freed while
    /// evicted no longer waits for the restore work.
    ///
    /// # Errors
    /// EINVAL for an unknown handle.
    pub fn free_memory_of_gpu(&mut self, pf: &mut dyn Hardware, id: u64) -> Result {
        let b = self.kfd_bos.remove(&id).ok_or(Error::NoSuchBuffer(id))?;
        if b.buf.is_none() && !b.gtt {
            self.evicted_bos -= 1;
        }
        Self::release_kfd_bo(pf, b);
        if self.evicted_bos == 0 && self.evicted_ranges == 0 && self.queues_stopped {
            self.resume_queues(pf);
        }
        Ok(())
    }

    /// Gives back what buffer `b` holds: its VRAM if resident, and its
    /// reservation (against the KFD VRAM limit, or the system memory
    /// limit for a GTT buffer).
    pub(super) fn release_kfd_bo(pf: &mut dyn Hardware, b: KfdBo) {
        let size = b.npages * crate::addr::PAGE_SIZE;
        if b.gtt {
            pf.unreserve_mem_limit(size);
            return;
        }
        if let Some(buf) = b.buf {
            pf.vram_free(b.gpu, buf);
        }
        pf.unreserve_vram_limit(b.gpu, size);
    }

    /// The KFD buffers, by handle.
    pub fn kfd_bos(&self) -> impl Iterator<Item = (u64, &KfdBo)> {
        self.kfd_bos.iter().map(|(&id, b)| (id, b))
    }

    /// TTM evicts KFD buffer `id` to GTT: its VRAM is freed, and its
    /// eviction fence stops the process's queues until the process restore
    /// work brings it back. Returns the pages moved.
    pub fn evict_kfd_bo(&mut self, pf: &mut dyn Hardware, id: u64) -> u64 {
        let Some(b) = self.kfd_bos.get_mut(&id) else {
            return 0;
        };
        let Some(buf) = b.buf.take() else {
            return 0;
        };
        let (gpu, npages) = (b.gpu, b.npages);
        pf.copy_bo(gpu, crate::platform::CopyDir::ToRam, npages);
        pf.vram_free(gpu, buf);
        self.stats[gpu].evictions += 1;
        self.evicted_bos += 1;
        self.quiesce_queues(pf);
        if self.bo_restore_due_ns.is_none() {
            self.bo_restore_due_ns = Some(pf.now_ns().saturating_add(PROCESS_RESTORE_TIME_NS));
        }
        npages
    }

    /// The KFD half of the restore work (`restore_process_worker`):
    /// validates every evicted buffer back into VRAM. Returns whether all
    /// came back; otherwise it is due again [`PROCESS_BACK_OFF_TIME_NS`]
    /// later.
    pub(super) fn restore_kfd_bos(&mut self, pf: &mut dyn Hardware) -> bool {
        let evicted: Vec<(u64, GpuIndex, u64)> = self
            .kfd_bos
            .iter()
            .filter(|(_, b)| b.buf.is_none() && !b.gtt)
            .map(|(&id, b)| (id, b.gpu, b.npages))
            .collect();
        for (id, gpu, npages) in evicted {
            let Ok(buf) = self.alloc_vram(pf, gpu, npages) else {
                self.bo_restore_due_ns = Some(pf.now_ns().saturating_add(PROCESS_BACK_OFF_TIME_NS));
                return false;
            };
            pf.copy_bo(gpu, crate::platform::CopyDir::ToVram, npages);
            let lru = pf.lru_bump(gpu);
            let b = self.kfd_bos.get_mut(&id).expect("listed buffer");
            b.buf = Some(buf);
            b.lru = lru;
            self.evicted_bos -= 1;
        }
        self.bo_restore_due_ns = None;
        true
    }

    /// Stops the user queues on every GPU, once for however many evictions
    /// (SVM ranges or KFD buffers) are outstanding.
    pub(super) fn quiesce_queues(&mut self, pf: &mut dyn Hardware) {
        if self.queues_stopped {
            return;
        }
        self.queues_stopped = true;
        for (g, d) in self.devices.iter() {
            pf.smi_event(g, events::queue_eviction(pf.now_ns(), self.pid, d.id.raw()));
            pf.evict_queues(g);
            self.stats[g].queue_evictions += 1;
        }
    }

    /// Resumes the user queues on every GPU.
    pub(super) fn resume_queues(&mut self, pf: &mut dyn Hardware) {
        self.queues_stopped = false;
        for (g, d) in self.devices.iter() {
            pf.restore_queues(g);
            self.stats[g].queue_restores += 1;
            pf.smi_event(g, events::queue_restore(pf.now_ns(), self.pid, d.id.raw()));
        }
    }
}

//! A simulated machine: the GPUs, the system memory limit, and processes with address spaces and SVM state.
//!
//! [`Machine`] is what scenarios and tests drive. Each call is one syscall or
//! ioctl of one process: mm calls go to the process's [`AddressSpace`], SVM
//! calls to its `svm_core::process::Process`, with a [`Platform`]
//! implementation built for the call from the address space and the
//! machine-wide memory limit.

use serde::Serialize;
use svm_core::addr::{CpuVa, PageRange};
use svm_core::platform::{Platform, VmaInfo};
use svm_core::process::{Process, QueueId};
use svm_core::topology::Topology;
use svm_core::uapi::{SvmArgs, SvmAttribute};
use svm_core::{Error, Result};

use crate::mm::{AddressSpace, Backing, Mark, MmError, Prot};

/// The system-wide limit on memory that XNACK-off SVM ranges reserve
/// (`kfd_mem_limit.max_system_mem_limit` and `system_mem_used`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemLimit {
    /// Bytes that may be reserved.
    pub limit_bytes: u64,
    /// Bytes reserved now.
    pub used_bytes: u64,
}

impl MemLimit {
    /// A limit of 15/16 of `sysmem_bytes`, the default svmsim uses.
    ///
    /// amdgpu derives its limit from total RAM in
    /// `amdgpu_amdkfd_gpuvm_init_mem_limits`, and the formula has changed
    /// across kernel versions; scenarios that depend on it set it explicitly.
    pub fn for_sysmem(sysmem_bytes: u64) -> Self {
        Self {
            limit_bytes: sysmem_bytes - (sysmem_bytes >> 4),
            used_bytes: 0,
        }
    }
}

/// The [`Platform`] one process's engine sees during one call.
struct Env<'a> {
    mm: &'a AddressSpace,
    limit: &'a mut MemLimit,
}

impl Platform for Env<'_> {
    fn vma_at(&self, page: svm_core::addr::PageNum) -> Option<VmaInfo> {
        self.mm.vma_info(page)
    }

    fn reserve_mem_limit(&mut self, bytes: u64) -> Result {
        let l = &mut *self.limit;
        match l.used_bytes.checked_add(bytes) {
            Some(total) if total <= l.limit_bytes => {
                l.used_bytes = total;
                Ok(())
            }
            _ => Err(Error::MemLimit {
                need_bytes: bytes,
                used_bytes: l.used_bytes,
                limit_bytes: l.limit_bytes,
            }),
        }
    }

    fn unreserve_mem_limit(&mut self, bytes: u64) {
        self.limit.used_bytes = self
            .limit
            .used_bytes
            .checked_sub(bytes)
            .expect("memory limit: more unreserved than reserved");
    }
}

/// A process identifier, the index of the process in its machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pid(usize);

impl Pid {
    /// The raw index.
    pub const fn index(self) -> usize {
        self.0
    }
}

/// One simulated process.
#[derive(Debug)]
pub struct SimProcess {
    /// A name for reports.
    pub name: String,
    /// Its VMAs.
    pub mm: AddressSpace,
    /// Its SVM state.
    pub svm: Process,
}

/// A whole simulated machine.
#[derive(Debug)]
pub struct Machine {
    topology: Topology,
    xnack_default: bool,
    limit: MemLimit,
    procs: Vec<SimProcess>,
}

impl Machine {
    /// A machine with these GPUs, boot-time XNACK default and memory limit.
    pub fn new(topology: Topology, xnack_default: bool, limit: MemLimit) -> Self {
        Self {
            topology,
            xnack_default,
            limit,
            procs: Vec::new(),
        }
    }

    /// The GPUs.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The memory limit and its use.
    pub fn mem_limit(&self) -> MemLimit {
        self.limit
    }

    /// Starts a process; it opens every GPU of the machine.
    pub fn spawn(&mut self, name: &str) -> Pid {
        self.procs.push(SimProcess {
            name: name.to_owned(),
            mm: AddressSpace::new(),
            svm: Process::new(&self.topology, self.xnack_default),
        });
        Pid(self.procs.len() - 1)
    }

    /// All processes in pid order.
    pub fn processes(&self) -> impl Iterator<Item = (Pid, &SimProcess)> {
        self.procs.iter().enumerate().map(|(i, p)| (Pid(i), p))
    }

    /// One process.
    ///
    /// # Panics
    /// If `pid` did not come from this machine.
    pub fn process(&self, pid: Pid) -> &SimProcess {
        &self.procs[pid.0]
    }

    fn parts(&mut self, pid: Pid) -> (&mut SimProcess, &mut MemLimit) {
        (&mut self.procs[pid.0], &mut self.limit)
    }

    /// `mmap`. With `fixed`, replaced pages go through the munmap notifier.
    ///
    /// # Errors
    /// See [`AddressSpace::mmap`].
    pub fn mmap(
        &mut self,
        pid: Pid,
        fixed: Option<CpuVa>,
        len: u64,
        prot: Prot,
        backing: Backing,
        mark: Mark,
    ) -> Result<PageRange, MmError> {
        let (p, limit) = self.parts(pid);
        let (range, replaced) = p.mm.mmap(fixed, len, prot, backing, mark)?;
        let mut env = Env { mm: &p.mm, limit };
        for r in replaced {
            p.svm.unmap_from_cpu(&mut env, r);
        }
        Ok(range)
    }

    /// `munmap`: the VMAs go, then the MMU notifier's UNMAP drops the SVM pages.
    ///
    /// # Errors
    /// See [`AddressSpace::munmap`].
    pub fn munmap(&mut self, pid: Pid, addr: CpuVa, len: u64) -> Result<(), MmError> {
        let (p, limit) = self.parts(pid);
        let gone = p.mm.munmap(addr, len)?;
        let mut env = Env { mm: &p.mm, limit };
        for r in gone {
            p.svm.unmap_from_cpu(&mut env, r);
        }
        Ok(())
    }

    /// `mprotect`.
    ///
    /// # Errors
    /// See [`AddressSpace::mprotect`].
    pub fn mprotect(&mut self, pid: Pid, addr: CpuVa, len: u64, prot: Prot) -> Result<(), MmError> {
        self.procs[pid.0].mm.mprotect(addr, len, prot)
    }

    /// `AMDKFD_IOC_SVM`.
    ///
    /// # Errors
    /// See `svm_core::process::Process::svm_ioctl`.
    pub fn svm_ioctl(&mut self, pid: Pid, args: &mut SvmArgs) -> Result {
        let (p, limit) = self.parts(pid);
        let mut env = Env { mm: &p.mm, limit };
        p.svm.svm_ioctl(&mut env, args)
    }

    /// GET_ATTR through shared access: the same answers as [`Machine::svm_ioctl`]
    /// with `SVM_OP_GET_ATTR`, without touching the machine.
    ///
    /// # Errors
    /// See `svm_core::process::Process::get_attr_ioctl`.
    pub fn svm_get_attr(
        &self,
        pid: Pid,
        start_addr: u64,
        size: u64,
        attrs: &mut [SvmAttribute],
    ) -> Result {
        let p = &self.procs[pid.0];
        // Queries reserve nothing; the copy only satisfies the Platform shape.
        let mut limit = self.limit;
        let env = Env {
            mm: &p.mm,
            limit: &mut limit,
        };
        let range = Process::ioctl_range(start_addr, size)?;
        p.svm.get_attr_ioctl(&env, range, attrs)
    }

    /// `AMDKFD_IOC_SET_XNACK_MODE`.
    ///
    /// # Errors
    /// See `svm_core::process::Process::set_xnack_mode`.
    pub fn set_xnack_mode(&mut self, pid: Pid, value: i32) -> Result<i32> {
        let (p, limit) = self.parts(pid);
        let mut env = Env { mm: &p.mm, limit };
        p.svm.set_xnack_mode(&mut env, value)
    }

    /// `AMDKFD_IOC_CREATE_QUEUE` on the GPU with this gpu_id.
    ///
    /// # Errors
    /// EINVAL for an unknown GPU.
    pub fn create_queue(&mut self, pid: Pid, gpu_id: u32) -> Result<QueueId> {
        self.procs[pid.0].svm.create_queue(gpu_id)
    }

    /// `AMDKFD_IOC_DESTROY_QUEUE`.
    ///
    /// # Errors
    /// EINVAL for an unknown queue.
    pub fn destroy_queue(&mut self, pid: Pid, queue: u32) -> Result {
        self.procs[pid.0].svm.destroy_queue(queue)
    }

    /// Process exit: the SVM state goes, then the address space.
    pub fn exit(&mut self, pid: Pid) {
        let (p, limit) = self.parts(pid);
        let mut env = Env { mm: &p.mm, limit };
        p.svm.exit(&mut env);
        p.mm = AddressSpace::new();
    }
}

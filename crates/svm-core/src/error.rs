//! Errors of the engine and the errno values the kfd ioctl returns for them.
//!
//! Inside the engine an error is an [`Error`] variant with typed fields. At
//! the API edge ([`crate::process`]) it becomes an [`Errno`], the value the
//! ioctl would return, via [`Error::errno`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::{CpuVa, PageRange};

/// The errno values the kfd SVM API can return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Errno {
    /// Operation not permitted (1).
    Eperm,
    /// I/O error (5).
    Eio,
    /// Try again (11).
    Eagain,
    /// Out of memory (12).
    Enomem,
    /// Permission denied (13).
    Eacces,
    /// Bad address (14).
    Efault,
    /// Device or resource busy (16).
    Ebusy,
    /// Invalid argument (22).
    Einval,
    /// No space left on device (28).
    Enospc,
    /// Address already in use (98).
    Eaddrinuse,
}

impl Errno {
    /// Every value, for parsers and tests.
    pub const ALL: [Errno; 10] = [
        Errno::Eperm,
        Errno::Eio,
        Errno::Eagain,
        Errno::Enomem,
        Errno::Eacces,
        Errno::Efault,
        Errno::Ebusy,
        Errno::Einval,
        Errno::Enospc,
        Errno::Eaddrinuse,
    ];

    /// The positive Linux errno number.
    pub const fn code(self) -> i32 {
        match self {
            Errno::Eperm => 1,
            Errno::Eio => 5,
            Errno::Eagain => 11,
            Errno::Enomem => 12,
            Errno::Eacces => 13,
            Errno::Efault => 14,
            Errno::Ebusy => 16,
            Errno::Einval => 22,
            Errno::Enospc => 28,
            Errno::Eaddrinuse => 98,
        }
    }

    /// The symbolic name, such as `"EINVAL"`.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Eperm => "EPERM",
            Errno::Eio => "EIO",
            Errno::Eagain => "EAGAIN",
            Errno::Enomem => "ENOMEM",
            Errno::Eacces => "EACCES",
            Errno::Efault => "EFAULT",
            Errno::Ebusy => "EBUSY",
            Errno::Einval => "EINVAL",
            Errno::Enospc => "ENOSPC",
            Errno::Eaddrinuse => "EADDRINUSE",
        }
    }

    /// Parses a symbolic name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the engine's API can refuse, with the facts of the refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// start {start} or size {size:#x} is not page aligned, or one of them is zero
    #[error("start {start} or size {size:#x} is not page aligned, or one of them is zero")]
    Misaligned { start: CpuVa, size: u64 },
    /// The ioctl op is neither SET_ATTR nor GET_ATTR.
    #[error("unknown SVM op {0}")]
    UnknownOp(u32),
    /// The attribute type is not one kfd knows.
    #[error("unknown attribute type {0}")]
    UnknownAttrType(u32),
    /// The attribute type exists but may not be used as a GET_ATTR query.
    #[error("attribute type {0} cannot be queried")]
    NotQueryable(u32),
    /// A gpu_id that is not one of the process's GPUs.
    #[error("gpu_id {0:#x} is not a GPU of this process")]
    UnknownGpu(u32),
    /// An attribute named a GPU without SVM support.
    #[error("GPU {0:#x} does not support SVM")]
    SvmUnsupported(u32),
    /// Part of the range is not covered by a VMA.
    #[error("page {page:#x} of {range} is not mapped")]
    NotMapped { range: PageRange, page: u64 },
    /// Part of the range is an I/O or PFN mapping, which SVM cannot manage.
    #[error("page {page:#x} of {range} lies in a VM_IO/VM_PFNMAP/VM_MIXEDMAP mapping")]
    IoMapping { range: PageRange, page: u64 },
    /// Reserving system memory for a new range would pass the limit (XNACK off).
    #[error(
        "reserving {need_bytes:#x} bytes would pass the system memory limit ({used_bytes:#x} of {limit_bytes:#x} in use)"
    )]
    MemLimit {
        need_bytes: u64,
        used_bytes: u64,
        limit_bytes: u64,
    },
    /// The process has user queues, so its XNACK mode cannot change.
    #[error("the process has {0} user queue(s); XNACK mode cannot change")]
    QueuesActive(usize),
    /// A GPU of the process cannot run with retry faults.
    #[error("GPU {0:#x} cannot run with XNACK on")]
    XnackUnsupported(u32),
    /// GPU VRAM could not hold a new buffer.
    #[error("GPU {gpu} has no room for {npages} VRAM pages")]
    VramExhausted { gpu: usize, npages: u64 },
    /// A GPU fault was refused (the `svm_range_restore_pages` error).
    #[error("GPU fault at page {page:#x} refused: {why}")]
    FaultRefused {
        page: u64,
        why: &'static str,
        errno: Errno,
    },
    /// A queue was asked for on a GPU the process does not have, or destroyed twice.
    #[error("no such queue {0}")]
    NoSuchQueue(u32),
    /// Reserving VRAM against the KFD VRAM limit would pass it
    /// (`amdgpu_amdkfd_reserve_mem_limit` with KFD_IOC_ALLOC_MEM_FLAGS_VRAM):
    /// ENOMEM to an allocation, ENOSPC to an SVM migration.
    #[error(
        "reserving {need_bytes:#x} bytes of GPU {gpu}'s VRAM would pass the KFD VRAM limit ({used_bytes:#x} of {limit_bytes:#x} in use)"
    )]
    VramLimit {
        gpu: usize,
        need_bytes: u64,
        used_bytes: u64,
        limit_bytes: u64,
        errno: Errno,
    },
    /// No KFD buffer with this handle.
    #[error("no such buffer {0}")]
    NoSuchBuffer(u64),
    /// A KFD buffer size of 0, or above the bound.
    #[error("a buffer of {0:#x} bytes")]
    BadSize(u64),
    /// TTM could not place a KFD buffer in VRAM even after evicting what
    /// it could (the allocation ioctl's ENOMEM).
    #[error("GPU {gpu}'s VRAM cannot hold a {npages}-page buffer")]
    OutOfVram { gpu: usize, npages: u64 },
    /// A failure injected at a kernel failure point ([`crate::inject`]).
    #[error("injected failure at {site} ({function}): {errno}", function = site.info().function)]
    Injected {
        site: crate::inject::Site,
        errno: Errno,
    },
}

impl Error {
    /// The errno the kfd ioctl returns for this error.
    pub const fn errno(&self) -> Errno {
        match self {
            Error::Misaligned { .. }
            | Error::UnknownOp(_)
            | Error::UnknownAttrType(_)
            | Error::NotQueryable(_)
            | Error::UnknownGpu(_)
            | Error::SvmUnsupported(_)
            | Error::NoSuchQueue(_)
            | Error::NoSuchBuffer(_)
            | Error::BadSize(_) => Errno::Einval,
            Error::NotMapped { .. } | Error::IoMapping { .. } => Errno::Efault,
            Error::MemLimit { .. } | Error::OutOfVram { .. } => Errno::Enomem,
            Error::QueuesActive(_) => Errno::Ebusy,
            Error::XnackUnsupported(_) => Errno::Eperm,
            Error::VramExhausted { .. } => Errno::Enospc,
            Error::FaultRefused { errno, .. }
            | Error::VramLimit { errno, .. }
            | Error::Injected { errno, .. } => *errno,
        }
    }
}

/// The engine's result type.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_round_trip() {
        for e in Errno::ALL {
            assert_eq!(Errno::from_name(e.name()), Some(e));
            assert_eq!(Errno::from_name(&e.name().to_lowercase()), Some(e));
        }
        assert_eq!(Errno::Einval.code(), 22);
        assert_eq!(Errno::Eaddrinuse.code(), 98);
        assert_eq!(Errno::from_name("EWHAT"), None);
    }
}

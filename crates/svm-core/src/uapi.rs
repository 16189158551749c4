//! The kfd SVM uAPI, value for value (`include/uapi/linux/kfd_ioctl.h`).
//!
//! These numbers are what user space passes and receives. They live only at
//! the API edge: `crate::process` turns them into typed values ([`crate::attr`])
//! on the way in and back into numbers on the way out.

use serde::{Deserialize, Serialize};

/// `KFD_IOCTL_SVM_OP_SET_ATTR`.
pub const SVM_OP_SET_ATTR: u32 = 0;
/// `KFD_IOCTL_SVM_OP_GET_ATTR`.
pub const SVM_OP_GET_ATTR: u32 = 1;

/// `KFD_IOCTL_SVM_LOCATION_SYSMEM`: system memory.
pub const SVM_LOCATION_SYSMEM: u32 = 0;
/// `KFD_IOCTL_SVM_LOCATION_UNDEFINED`: no location chosen, or ranges disagree.
pub const SVM_LOCATION_UNDEFINED: u32 = 0xffff_ffff;

/// Attribute types (`enum kfd_ioctl_svm_attr_type`).
pub mod attr_type {
    /// Preferred location: a gpu_id, SYSMEM or UNDEFINED.
    pub const PREFERRED_LOC: u32 = 0;
    /// Prefetch location: a gpu_id or SYSMEM; triggers migration in set_attr.
    pub const PREFETCH_LOC: u32 = 1;
    /// The GPU named by `value` may access the range and migrate it.
    pub const ACCESS: u32 = 2;
    /// The GPU named by `value` may access the range in place, without migration.
    pub const ACCESS_IN_PLACE: u32 = 3;
    /// The GPU named by `value` may not access the range.
    pub const NO_ACCESS: u32 = 4;
    /// Sets the flags in `value`.
    pub const SET_FLAGS: u32 = 5;
    /// Clears the flags in `value`.
    pub const CLR_FLAGS: u32 = 6;
    /// Migration granularity, log2 of pages.
    pub const GRANULARITY: u32 = 7;
}

/// Range flags (`KFD_IOCTL_SVM_FLAG_*`).
pub mod flag {
    /// The CPU may access the range.
    pub const HOST_ACCESS: u32 = 0x1;
    /// Fine-grained coherence (MTYPE and snooping of the mapping).
    pub const COHERENT: u32 = 0x2;
    /// Use the range only inside one xGMI hive.
    pub const HIVE_LOCAL: u32 = 0x4;
    /// GPUs map the range read-only.
    pub const GPU_RO: u32 = 0x8;
    /// GPUs map the range executable.
    pub const GPU_EXEC: u32 = 0x10;
    /// Mostly read by GPUs.
    pub const GPU_READ_MOSTLY: u32 = 0x20;
    /// Keep the range mapped on GPUs even with XNACK on.
    pub const GPU_ALWAYS_MAPPED: u32 = 0x40;
    /// Extended coherence across devices.
    pub const EXT_COHERENT: u32 = 0x80;
}

/// One `struct kfd_ioctl_svm_attribute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvmAttribute {
    /// An [`attr_type`] value.
    #[serde(rename = "type")]
    pub ty: u32,
    /// A location, gpu_id, flag set or granularity, depending on `ty`.
    pub value: u32,
}

impl SvmAttribute {
    /// An attribute from its two raw fields.
    pub const fn new(ty: u32, value: u32) -> Self {
        Self { ty, value }
    }
}

/// `struct kfd_ioctl_svm_args`: the whole SVM ioctl request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvmArgs {
    /// Start of the VA range in bytes; page aligned.
    pub start_addr: u64,
    /// Size in bytes; page aligned and non-zero.
    pub size: u64,
    /// [`SVM_OP_SET_ATTR`] or [`SVM_OP_GET_ATTR`].
    pub op: u32,
    /// The attributes (`nattr` of them). GET_ATTR writes its answers back here.
    pub attrs: Vec<SvmAttribute>,
}

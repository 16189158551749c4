//! svm-core: the svmsim engine, a user-space model of the amdkfd SVM subsystem.
//!
//! The engine holds each process's SVM ranges and their attributes and answers
//! the kfd SVM ioctls the way the kernel does, step by step. It reaches memory
//! maps and hardware only through [`platform::Platform`].
//!
//! **Architecture Invariant:** svm-core never reads a clock, an RNG or the
//! filesystem, and never spawns a thread.
//!
//! Start with [`process::Process`]; the range structure is in
//! [`range_list`], the attribute vocabulary in [`attr`] and [`uapi`].

#![forbid(unsafe_code)]

pub mod addr;
pub mod attr;
pub mod config;
pub mod dma;
pub mod error;
pub mod events;
pub mod gpu;
pub mod inject;
pub mod kernel;
pub mod platform;
pub mod policy;
pub mod process;
pub mod pte;
pub mod range;
pub mod range_list;
pub mod residency;
pub mod topology;
pub mod uapi;
pub mod units;

pub use error::{Errno, Error, Result};

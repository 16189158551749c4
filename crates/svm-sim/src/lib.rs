//! svm-sim: the simulated platform under the svmsim engine.
//!
//! It provides what the engine reaches through `svm_core::platform`: process
//! address spaces ([`mm`]), the system memory limit and a [`machine::Machine`]
//! that holds GPUs and processes. [`check`] verifies the engine's invariants
//! after every step, and [`refmodel`] is the naive per-page model the property
//! tests compare the engine against.

#![forbid(unsafe_code)]

pub mod buddy;
pub mod check;
pub mod gpu;
pub mod inject;
pub mod limits;
pub mod machine;
pub mod mm;
pub mod pages;
pub mod refmodel;
pub mod ring;
pub mod shadow;
pub mod timing;
pub mod traffic;
pub mod vram;

//! svmsim: the command line over the engine and the simulated platform.
//!
//! The binary (`src/main.rs`) only parses arguments and picks a subcommand;
//! everything it runs lives here so tests can call it: [`scenario`] parses
//! and runs scenario files, [`report`] prints their outcome, [`smi`] writes
//! the SMI event log.

#![forbid(unsafe_code)]

pub mod against;
pub mod chrome;
pub mod demo;
pub mod diff;
pub mod drivers;
pub mod exec;
pub mod explain;
pub mod fuzz;
pub mod html;
pub mod import;
pub mod inject;
pub mod input;
pub mod output;
pub mod plots;
pub mod probe;
pub mod progress;
pub mod report;
pub mod runs;
pub mod scenario;
pub mod series;
pub mod size;
pub mod smi;
pub mod suite;
pub mod sweep;

//! Integration tests of the `svmsim` binary and its scenario runner.

// The subcommands, and bad input to each.
mod cli;

// Golden --json output on fixed seeds.
mod golden;

// Every knob reachable: --set, --config, `svmsim config`, scenario [config], sweep axes.
mod config;

// The timeline is valid trace-event JSON; the HTML report loads in Chromium.
mod outputs;

// Every example scenario runs, passes, and prints the same bytes twice.
// New example files are picked up automatically.
mod examples;

// Malformed files, failed expectations and their exit codes.
mod failures;

// Random and mutated scenario text: errors, never panics.
mod robust;

// The SMI log: kfd's formats read back as sscanf would, one file per GPU.
mod smi;

// No lost files: outputs that name inputs are refused, nothing changes.
mod files;

// The drivers against published figures (docs/validation.md).
mod validation;

// Real runs in: SMI messages imported as a trace and replayed.
mod import;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `svmsim` with `args` from the workspace root.
pub fn svmsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svmsim"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the svmsim binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 output")
}

// The fuzz targets' seeds and past crashers, replayed on stable.
mod fuzz_corpus;

// Hostile input, per input kind: the error class, and no file changed.
mod hostile;

// Failures injected at the kernel's failure points, over the workloads.
mod inject;

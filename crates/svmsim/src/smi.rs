//! The SMI event log on disk, in kfd's text (`docs/events.md`).
//!
//! kfd gives every GPU its own SMI event file (`AMDKFD_IOC_SMI_EVENTS`
//! returns one fd per gpu_id), so its messages name no GPU of their own.
//! `--events PATH` writes a run's typed events ([`SmiEvent`]) in one of two
//! layouts, [`EventsFormat`]:
//!
//! - `kfd` (the default): `PATH` is a directory with one file per GPU of the
//!   machine, `gpu-0x<gpu_id>.smi`, every line one message exactly as a
//!   read of that GPU's SMI file gives it (`svm_core::events`), a GPU that
//!   raised nothing an empty file. Several runs (compare, sweep, the demo)
//!   get one subdirectory each, `<row>-<label>/`, numbered from 1 in table
//!   order.
//! - `prefixed`: one file, each line the gpu_id in hex, a space, then the
//!   message; when several runs share the file, each run's lines follow a
//!   comment line `# svmsim run LABEL`.
//!
//! Text is made here, from the typed events, and nowhere else in the CLI.
//! Every file is written atomically (`crate::output`); files of other GPUs
//! or runs already in the directory are left alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use svm_core::gpu::GpuId;
use svm_sim::machine::SmiEvent;

use crate::exec::Outcome;
use crate::output;
use crate::scenario::RunReport;

/// How `--events` lays the SMI log out on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsFormat {
    /// A directory of per-GPU files, byte for byte what kfd's SMI files give.
    #[default]
    Kfd,
    /// One file, each line prefixed with the gpu_id of its GPU.
    Prefixed,
}

/// One run's SMI events, as the log writers see them.
#[derive(Clone, Debug)]
pub struct RunEvents<'a> {
    /// The run's label (shown when several runs share a log).
    pub label: &'a str,
    /// The machine's GPUs, in node order: each gets a file, events or not.
    pub gpus: Vec<GpuId>,
    /// The events in the order they were raised.
    pub events: &'a [SmiEvent],
}

impl<'a> RunEvents<'a> {
    /// A workload run's events.
    pub fn of_outcome(o: &'a Outcome) -> Self {
        Self {
            label: &o.label,
            gpus: o
                .gpu_end
                .iter()
                .filter_map(|g| GpuId::new(g.gpu_id))
                .collect(),
            events: &o.events,
        }
    }

    /// A scenario's events.
    pub fn of_scenario(r: &'a RunReport) -> Self {
        Self {
            label: &r.name,
            gpus: r.gpu_ids.clone(),
            events: &r.events,
        }
    }

    /// The GPUs that get a file: the machine's, then any other that raised
    /// an event (none, on a consistent machine).
    fn streams(&self) -> Vec<GpuId> {
        let mut gpus = self.gpus.clone();
        for e in self.events {
            if !gpus.contains(&e.gpu_id) {
                gpus.push(e.gpu_id);
            }
        }
        gpus
    }
}

/// One GPU's SMI file: its events' messages, one line each.
pub fn gpu_text(gpu: GpuId, events: &[SmiEvent]) -> String {
    let mut s = String::new();
    for e in events.iter().filter(|e| e.gpu_id == gpu) {
        let _ = writeln!(s, "{}", e.event);
    }
    s
}

/// The `prefixed` form of `runs`: one text.
pub fn prefixed(runs: &[RunEvents<'_>]) -> String {
    let mut s = String::new();
    for r in runs {
        if runs.len() > 1 {
            let _ = writeln!(s, "# svmsim run {}", r.label);
        }
        for e in r.events {
            let _ = writeln!(s, "{:x} {}", e.gpu_id.raw(), e.event);
        }
    }
    s
}

/// The file name of a GPU's SMI log.
pub fn gpu_file(gpu: GpuId) -> String {
    format!("gpu-{gpu}.smi")
}

/// A label as part of a directory name: letters, digits, `.`, `_` and `-`
/// stay, every other run of characters becomes one `-`. The row number in
/// front of it keeps any label (`..` too) inside the directory.
fn slug(label: &str) -> String {
    let mut s = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() || "._".contains(c) || (c == '-' && !s.ends_with('-')) {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    match s.trim_matches('-') {
        "" => "run".into(),
        s => s.into(),
    }
}

/// The `kfd` form of `runs`: every file, its path relative to `--events`,
/// and its contents.
pub fn kfd_files(runs: &[RunEvents<'_>]) -> Vec<(PathBuf, String)> {
    let width = runs.len().to_string().len();
    let mut files = Vec::new();
    for (k, r) in runs.iter().enumerate() {
        let dir = if runs.len() > 1 {
            PathBuf::from(format!("{:0width$}-{}", k + 1, slug(r.label)))
        } else {
            PathBuf::new()
        };
        for g in r.streams() {
            files.push((dir.join(gpu_file(g)), gpu_text(g, r.events)));
        }
    }
    files
}

/// Checks, before a run, that [`write`] will be able to write `path`;
/// creates and truncates nothing.
///
/// # Errors
/// What is wrong, naming `path`.
pub fn check(path: &Path, format: EventsFormat) -> Result<(), String> {
    match format {
        EventsFormat::Prefixed => output::check_file(path),
        EventsFormat::Kfd if path.is_dir() => {
            output::check_dir(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        EventsFormat::Kfd if path.exists() => Err(format!(
            "cannot write {}: it is a file, and --events-format kfd writes a directory of \
             per-GPU files (--events-format prefixed writes one file)",
            path.display()
        )),
        // The directory is made by `write`; its parent must take it.
        EventsFormat::Kfd => output::check_file(path),
    }
}

/// Whether a file of this name is one `--events-format kfd` writes.
pub fn writes(name: &str) -> bool {
    name.starts_with("gpu-") && name.ends_with(".smi")
}

/// What `--events` writes at `path` in `format`, for the clash check.
pub fn target(path: &Path, format: EventsFormat) -> output::Target<'_> {
    match format {
        EventsFormat::Prefixed => output::Target::File(path),
        EventsFormat::Kfd => output::Target::Dir { dir: path, writes },
    }
}

/// Stages the SMI log of `runs` at `path` in `format` (written when the
/// command commits its outputs).
pub fn stage(path: &Path, format: EventsFormat, runs: &[RunEvents<'_>], out: &mut output::Staged) {
    match format {
        EventsFormat::Prefixed => out.file(path, prefixed(runs).into_bytes()),
        EventsFormat::Kfd => {
            out.dir(path);
            let mut dirs: Vec<PathBuf> = Vec::new();
            for (rel, text) in kfd_files(runs) {
                let p = path.join(rel);
                if let Some(d) = p
                    .parent()
                    .filter(|d| *d != path && !dirs.iter().any(|x| x == d))
                {
                    dirs.push(d.to_owned());
                    out.dir(d);
                }
                out.file(&p, text.into_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svm_core::events;

    fn id(raw: u32) -> GpuId {
        GpuId::new(raw).unwrap()
    }

    fn ev(gpu: u32, ts: u64) -> SmiEvent {
        SmiEvent {
            gpu_id: id(gpu),
            event: events::queue_restore(ts, 1, gpu),
        }
    }

    #[test]
    fn kfd_files_split_by_gpu_without_prefix() {
        let events = [ev(0x1002, 1), ev(0x2002, 2), ev(0x1002, 3)];
        let run = RunEvents {
            label: "partial",
            gpus: vec![id(0x1002), id(0x2002), id(0x3002)],
            events: &events,
        };
        let files = kfd_files(std::slice::from_ref(&run));
        let want = [
            ("gpu-0x1002.smi", "a 1 -1 1002 0\na 3 -1 1002 0\n"),
            ("gpu-0x2002.smi", "a 2 -1 2002 0\n"),
            // A GPU that raised nothing still has its (empty) file.
            ("gpu-0x3002.smi", ""),
        ];
        let got: Vec<(String, &str)> = files
            .iter()
            .map(|(p, t)| (p.display().to_string(), t.as_str()))
            .collect();
        let want: Vec<(String, &str)> = want.iter().map(|(p, t)| (p.to_string(), *t)).collect();
        assert_eq!(got, want);
        assert_eq!(
            prefixed(std::slice::from_ref(&run)),
            "1002 a 1 -1 1002 0\n2002 a 2 -1 2002 0\n1002 a 3 -1 1002 0\n"
        );
    }

    #[test]
    fn several_runs_get_numbered_directories() {
        let events = [ev(0x1002, 1)];
        let runs: Vec<RunEvents<'_>> = ["partial g9", "whole-range 125%", "../..", ""]
            .into_iter()
            .map(|label| RunEvents {
                label,
                gpus: vec![id(0x1002)],
                events: &events,
            })
            .collect();
        let names: Vec<String> = kfd_files(&runs)
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "1-partial-g9/gpu-0x1002.smi",
                "2-whole-range-125/gpu-0x1002.smi",
                "3-..-../gpu-0x1002.smi",
                "4-run/gpu-0x1002.smi",
            ]
        );
        assert!(prefixed(&runs).starts_with("# svmsim run partial g9\n1002 a 1"));
    }
}

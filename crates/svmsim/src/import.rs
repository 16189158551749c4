//! `svmsim import`: a real run's records read from files (kfd SMI
//! messages, rocprofv3's KFD trace) and made a trace
//! (`svm_workloads::import`), with a report of what was mapped
//! (docs/import.md).

pub mod fixtures;
pub mod nsys;
pub mod rocpd;
pub mod rocprof;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use svm_workloads::import::{self, Imported, Record, Report, Source, Tally};

use crate::input;

/// The formats `svmsim import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Raw kfd SMI messages: a directory of per-GPU files, one such
    /// file, or a file of prefixed lines.
    KfdSmi,
    /// rocprofv3's `--kfd-trace` JSON (and rocprofiler-sdk-json-tool's).
    Rocprofv3Json,
    /// Nsight Systems' SQLite export with unified-memory tracing.
    NsysSqlite,
    /// rocprofv3's SQLite output (rocpd) with KFD records.
    Rocpd,
}

impl Format {
    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::KfdSmi => "kfd-smi",
            Format::Rocprofv3Json => "rocprofv3-json",
            Format::NsysSqlite => "nsys-sqlite",
            Format::Rocpd => "rocpd",
        }
    }

    /// What it is, for the report.
    pub fn what(self) -> &'static str {
        match self {
            Format::KfdSmi => "kfd SMI messages",
            Format::Rocprofv3Json => "rocprofv3 KFD trace",
            Format::NsysSqlite => "Nsight Systems unified-memory events",
            Format::Rocpd => "rocpd KFD records",
        }
    }
}

/// A real run's input, read and checked: its format, the files read,
/// and its records in time order.
#[derive(Debug)]
pub struct Input {
    /// The format it was read as.
    pub format: Format,
    /// Every file read (a directory's members among them).
    pub files: Vec<PathBuf>,
    records: Vec<Record>,
    report: Report,
}

/// The format of `path`, from its content: a directory is kfd SMI files;
/// a rocprofiler JSON document is one; anything else is taken for SMI
/// lines.
fn detect(path: &Path) -> Format {
    if path.is_dir() {
        return Format::KfdSmi;
    }
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    if rocprof::detect(&head[..n]) {
        Format::Rocprofv3Json
    } else if nsys::detect(&head[..n]) {
        if rocpd::detect(path) {
            Format::Rocpd
        } else {
            Format::NsysSqlite
        }
    } else {
        Format::KfdSmi
    }
}

/// Reads `path` as `format` (detected when `None`), at most `max`
/// records; `gpu_id` names the GPU of a per-GPU SMI file.
///
/// # Errors
/// What cannot be read, and a bad record named by file and line (or
/// record path and index).
pub fn load(
    path: &Path,
    format: Option<Format>,
    gpu_id: Option<u32>,
    max: usize,
) -> Result<Input, String> {
    let format = format.unwrap_or_else(|| detect(path));
    match format {
        Format::KfdSmi => {
            let files = read(path, gpu_id)?;
            let sources: Vec<Source<'_>> = files
                .iter()
                .map(|(_, gpu, text)| Source { text, gpu: *gpu })
                .collect();
            let (records, report) =
                import::kfd_records(&sources, max).map_err(|e| located(&files, e))?;
            Ok(Input {
                format,
                files: files.into_iter().map(|(p, _, _)| p).collect(),
                records,
                report,
            })
        }
        Format::Rocprofv3Json => {
            let bytes = input::read(path, rocprof::MAX_JSON_BYTES, "rocprofiler JSON file")?;
            let (records, report) = rocprof::read(&path.display().to_string(), &bytes, max)?;
            Ok(Input::of(format, path, records, report))
        }
        Format::NsysSqlite => {
            let (records, report) = nsys::read(path, max)?;
            Ok(Input::of(format, path, records, report))
        }
        Format::Rocpd => {
            let (records, report) = rocpd::read(path, max)?;
            Ok(Input::of(format, path, records, report))
        }
    }
}

impl Input {
    /// One file's records, put in time order.
    fn of(format: Format, path: &Path, mut records: Vec<Record>, report: Report) -> Self {
        records.sort_by_key(|m| (m.ts, m.line));
        Self {
            format,
            files: vec![path.to_owned()],
            records,
            report,
        }
    }

    /// The trace of its records, its buffers from `allocations` when
    /// given.
    ///
    /// # Errors
    /// A limit passed, or nothing of SVM's in the input.
    pub fn import(
        &self,
        max_events: usize,
        allocations: Option<&[(u64, u64)]>,
    ) -> Result<Imported, String> {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        import::from_records(
            self.records.clone(),
            self.report.clone(),
            max_events,
            allocations,
        )
        .map_err(|e| format!("{}: {e}", names.join(", ")))
    }

    /// What its records say the driver did.
    pub fn tally(&self) -> Tally {
        import::tally_records(&self.records)
    }
}

/// Files a directory of per-GPU SMI files may hold at most.
const MAX_FILES: usize = svm_core::gpu::MAX_GPU_INSTANCE;

/// The gpu_id in a per-GPU file's name (`gpu-0x<gpu_id>.smi`, as kfd's
/// form of `--events` names them).
pub fn gpu_of_name(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let hex = name.strip_prefix("gpu-0x")?.strip_suffix(".smi")?;
    u32::from_str_radix(hex, 16).ok()
}

/// Whether `text` is in the prefixed form: its first message line starts
/// with a gpu_id before the event id and timestamp (`1002 7 123 -4 ...`),
/// where a per-GPU line starts with the event id (`7 123 -4 ...`).
fn prefixed(text: &str) -> bool {
    let Some(first) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return false;
    };
    let f: Vec<&str> = first.split(' ').take(4).collect();
    f.len() == 4 && f[2].bytes().all(|b| b.is_ascii_digit()) && f[3].starts_with('-')
}

/// The texts to import from `path`: a directory's `gpu-0x*.smi` files, a
/// file of one GPU's messages (its gpu_id from its name or `gpu_id`), or
/// a prefixed file. Returns each file's path and text.
///
/// # Errors
/// What cannot be read, too many or too large files, a directory with no
/// SMI file, or a per-GPU file whose GPU nobody names.
pub fn read(
    path: &Path,
    gpu_id: Option<u32>,
) -> Result<Vec<(PathBuf, Option<u32>, String)>, String> {
    let text = |p: &Path| -> Result<String, String> {
        let bytes = input::read(p, input::MAX_TRACE_BYTES, "SMI event file")?;
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", p.display()))
    };
    if path.is_dir() {
        let entries =
            std::fs::read_dir(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut files: Vec<(PathBuf, u32)> = Vec::new();
        for e in entries {
            let p = e
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .path();
            if let Some(g) = gpu_of_name(&p) {
                files.push((p, g));
                if files.len() > MAX_FILES {
                    return Err(format!(
                        "{}: more than {MAX_FILES} gpu-0x*.smi files, the GPUs a process can use",
                        path.display()
                    ));
                }
            }
        }
        if files.is_empty() {
            return Err(format!(
                "{}: no gpu-0x<gpu_id>.smi file in the directory (the form `--events DIR` writes)",
                path.display()
            ));
        }
        files.sort();
        let mut total = 0u64;
        let mut out = Vec::new();
        for (p, g) in files {
            let t = text(&p)?;
            total += t.len() as u64;
            if total > input::MAX_TRACE_BYTES {
                return Err(format!(
                    "{}: the files hold more than {} bytes, the limit for SMI events",
                    path.display(),
                    input::MAX_TRACE_BYTES
                ));
            }
            out.push((p, Some(g), t));
        }
        return Ok(out);
    }
    let t = text(path)?;
    let gpu = gpu_id.or_else(|| gpu_of_name(path));
    // (A prefixed file names its GPUs itself.)
    if gpu.is_none() && !prefixed(&t) {
        return Err(format!(
            "{}: one GPU's messages, but which GPU? Name the file gpu-0x<gpu_id>.smi or give --gpu-id",
            path.display()
        ));
    }
    Ok(vec![(path.to_owned(), gpu, t)])
}

/// Reads the allocation list `path` (`svm_workloads::import::allocations`).
///
/// # Errors
/// What cannot be read, and a bad line as `FILE:LINE: FIELD: WHY`.
pub fn allocations(path: &Path) -> Result<Vec<(u64, u64)>, String> {
    let text = input::read_text(path, input::MAX_TRACE_BYTES, "allocation list")?;
    import::allocations(&text).map_err(|e| match e {
        import::ImportError::Line { line, field, why } => {
            format!("{}:{line}: {field}: {why}", path.display())
        }
        other => format!("{}: {other}", path.display()),
    })
}

/// An import error, its line found in the file that holds it.
fn located(files: &[(PathBuf, Option<u32>, String)], e: import::ImportError) -> String {
    match e {
        import::ImportError::Line { line, field, why } => {
            // Lines are numbered across the files in order: find the file.
            let mut first = 0;
            for (p, _, t) in files {
                let n = t.lines().count();
                if line <= first + n {
                    return format!("{}:{}: {field}: {why}", p.display(), line - first);
                }
                first += n;
            }
            format!("line {line}: {field}: {why}")
        }
        other => {
            let names: Vec<String> = files
                .iter()
                .map(|(p, _, _)| p.display().to_string())
                .collect();
            format!("{}: {other}", names.join(", "))
        }
    }
}

/// The report as text: what went into the trace and what did not.
pub fn text(input: &str, format: Format, r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "imported {input} ({}): {} {}",
        format.what(),
        r.lines,
        if format == Format::KfdSmi {
            "lines"
        } else {
            "records"
        }
    );
    let gpus: Vec<String> = r
        .gpus
        .iter()
        .enumerate()
        .map(|(i, (real, ours))| format!("{real:#x} as GPU {i} ({ours:#x})"))
        .collect();
    let _ = writeln!(s, "  GPUs: {}", gpus.join(", "));
    let pids: Vec<String> = r.pids.iter().map(|p| format!("pid {p}")).collect();
    let _ = writeln!(s, "  processes: {}", pids.join(", "));
    let bytes: u64 = r.buffers.iter().map(|&(_, l)| l).sum();
    let mut shown: Vec<String> = r
        .buffers
        .iter()
        .take(4)
        .map(|&(a, l)| format!("{a:#x} +{}", crate::size::show(l)))
        .collect();
    if r.buffers.len() > 4 {
        shown.push(format!("{} more", r.buffers.len() - 4));
    }
    let _ = writeln!(
        s,
        "  buffers: {} ({} in all, {}): {}",
        r.buffers.len(),
        crate::size::show(bytes),
        if r.listed {
            "from the allocation list"
        } else {
            "cut where the run's ranges began and ended"
        },
        shown.join(", ")
    );
    let _ = writeln!(
        s,
        "  into the trace: {} GPU faults as first touches in {} kernels (up to {} waves each), {} CPU faults as CPU reads, {} prefetches, {} munmaps",
        r.gpu_faults,
        r.kernels,
        import::WAVES,
        r.cpu_faults,
        r.prefetches,
        r.unmaps
    );
    let _ = writeln!(
        s,
        "  left to the engine: {} messages of what the driver did in answer (migrations for faults and evictions, fault ends, queue evictions and restores, notifier unmaps)",
        r.effects
    );
    // What did not make it in: each count with what it means.
    let missing: Vec<String> = [
        (
            r.dropped,
            "events the kernel dropped: the run had more than these",
        ),
        (r.not_svm, "messages that are not SVM's left out"),
        (
            r.unknown_places,
            "agents or nodes the input's agent list does not name, taken as system memory",
        ),
        (
            r.outside,
            "faults, migrations and unmaps outside every listed allocation",
        ),
        (
            r.runs_left_out,
            "runs after the first left out (# svmsim run lines)",
        ),
    ]
    .into_iter()
    .filter(|&(n, _)| n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !missing.is_empty() {
        let _ = writeln!(s, "  not imported: {}", missing.join("; "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_gpu_file_is_told_from_a_prefixed_one() {
        assert!(prefixed("# svmsim run x\n1002 7 100 -4 @7f(1002) W\n"));
        assert!(!prefixed("7 100 -4 @7f(1002) W\n"));
        assert_eq!(gpu_of_name(Path::new("d/gpu-0x2002.smi")), Some(0x2002));
        assert_eq!(gpu_of_name(Path::new("d/gpu-2002.smi")), None);
    }
}

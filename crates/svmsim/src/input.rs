//! Input files, read within a limit: a file larger than its kind may be
//! is refused before its bytes are held (`docs/files.md` lists the limits).

use std::io::Read as _;
use std::path::Path;

/// A scenario file.
pub const MAX_SCENARIO_BYTES: u64 = 16 << 20;
/// A sweep file.
pub const MAX_SWEEP_BYTES: u64 = 16 << 20;
/// A profile file.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;
/// A `--config` file.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A trace, binary or CSV.
pub const MAX_TRACE_BYTES: u64 = 1 << 30;
/// A shard's result file.
pub const MAX_SHARD_BYTES: u64 = 1 << 30;

/// The bytes of `path`, at most `max` of them.
///
/// # Errors
/// `cannot read PATH: ...`: the I/O error, or the file is larger than
/// `max` (what it is, named by `kind`).
pub fn read(path: &Path, max: u64, kind: &str) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one
    // (a pipe or /dev/zero has no length to ask first).
    f.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "cannot read {}: larger than {} bytes, the limit for a {kind}",
            path.display(),
            max
        ));
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
///
/// # Errors
/// As [`read`], or the bytes are not UTF-8.
pub fn read_text(path: &Path, max: u64, kind: &str) -> Result<String, String> {
    String::from_utf8(read(path, max, kind)?)
        .map_err(|_| format!("cannot read {}: not UTF-8 text", path.display()))
}

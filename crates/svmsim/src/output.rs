//! Output files that appear whole or not at all.
//!
//! Every file is written under a temporary name in its own directory and
//! renamed into place once complete, so a reader (or a crash) never sees
//! half a file, and an old file stays intact until its replacement is
//! ready. Before a long run, [`check_dir`] makes sure the directory will
//! take the file, without creating or truncating anything.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// The directory a file of `path` lives in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary name beside `path`: hidden, and unique per process so that
/// two runs writing the same output do not share one.
fn temp_name(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    parent(path).join(format!(".{name}.{what}-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over `path`.
///
/// # Errors
/// The I/O error; the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_name(path, "tmp");
    let r = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        // Best effort: the temporary may not exist if the open failed.
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Checks that a file can be created in `dir`, by creating and removing a
/// probe file there.
///
/// # Errors
/// The I/O error (a missing or read-only directory).
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let probe = temp_name(&dir.join("probe"), "probe");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

/// Checks that `path` can be written as a file: it is not a directory, and
/// its directory takes new files. Nothing is created or truncated.
///
/// # Errors
/// What is wrong, naming `path`.
pub fn check_file(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "cannot write {}: it is a directory",
            path.display()
        ));
    }
    check_dir(parent(path)).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("svmsim-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn write_replaces_whole_and_leaves_no_temporary() {
        let d = scratch("replace");
        let p = d.join("f.txt");
        fs::write(&p, "old").unwrap();
        write_atomic(&p, b"new contents").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new contents");
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.txt"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let d = scratch("fail");
        // Renaming a file over a non-empty directory fails.
        let p = d.join("taken");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), "x").unwrap();
        assert!(write_atomic(&p, b"new").is_err());
        assert!(p.join("inside").exists());
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn checks_create_nothing() {
        let d = scratch("check");
        check_file(&d.join("new.txt")).unwrap();
        check_dir(&d).unwrap();
        assert!(check_file(&d).unwrap_err().contains("is a directory"));
        assert!(check_file(&d.join("no/such/f")).is_err());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(&d).unwrap();
    }
}

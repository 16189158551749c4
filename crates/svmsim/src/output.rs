//! Output files that appear whole or not at all, and never over an input.
//!
//! Every file is written under a temporary name in its own directory and
//! renamed into place once complete, so a reader (or a crash) never sees
//! half a file, and an old file stays intact until its replacement is
//! ready. A command stages all its outputs ([`Staged`]) and commits them
//! together once its work is done: first every temporary, then the
//! renames, so a write that fails leaves every existing file as it was.
//! Before a long run, [`check_dir`] makes sure the directory will take
//! the file, without creating or truncating anything, and
//! [`refuse_clashes`] makes sure no output is one of the command's
//! inputs (or another output).

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

/// The outputs of a command, held until [`Staged::commit`].
#[derive(Debug, Default)]
pub struct Staged {
    /// Directories to make first (their parents must exist).
    dirs: Vec<PathBuf>,
    /// Files and their bytes, in the order given.
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Staged {
    /// A directory the files need (made at commit, if it is not there).
    pub fn dir(&mut self, dir: &Path) {
        self.dirs.push(dir.to_owned());
    }

    /// A file to write.
    pub fn file(&mut self, path: &Path, bytes: Vec<u8>) {
        self.files.push((path.to_owned(), bytes));
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty()
    }

    /// Writes every file: each under a temporary name beside it, synced;
    /// once all are written, each is renamed into place. Returns the paths
    /// written.
    ///
    /// # Errors
    /// The first file that could not be written, named. The temporaries
    /// are removed; if the failure came before the renames (a full disk, a
    /// missing directory), no existing file changed.
    pub fn commit(self) -> Result<Vec<PathBuf>, String> {
        // A rename over a directory would fail half way: refuse it first.
        if let Some((p, _)) = self.files.iter().find(|(p, _)| p.is_dir()) {
            return Err(format!("cannot write {}: it is a directory", p.display()));
        }
        for d in &self.dirs {
            match fs::create_dir(d) {
                Err(e) if !(e.kind() == io::ErrorKind::AlreadyExists && d.is_dir()) => {
                    return Err(format!("cannot create {}: {e}", d.display()));
                }
                _ => {}
            }
        }
        let mut temps: Vec<(PathBuf, &Path)> = Vec::with_capacity(self.files.len());
        let cleanup = |temps: &[(PathBuf, &Path)]| {
            for (t, _) in temps {
                let _ = fs::remove_file(t);
            }
        };
        for (path, bytes) in &self.files {
            let tmp = temp_name(path, "tmp");
            let r = (|| {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                f.write_all(bytes)?;
                f.sync_all()
            })();
            if let Err(e) = r {
                let _ = fs::remove_file(&tmp);
                cleanup(&temps);
                return Err(format!("cannot write {}: {e}", path.display()));
            }
            temps.push((tmp, path));
        }
        for (i, (tmp, path)) in temps.iter().enumerate() {
            if let Err(e) = fs::rename(tmp, path) {
                cleanup(&temps[i..]);
                return Err(format!("cannot write {}: {e}", path.display()));
            }
        }
        Ok(self.files.into_iter().map(|(p, _)| p).collect())
    }
}

/// Something a command writes.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// One file.
    File(&'a Path),
    /// Files in a directory (and below it) whose names `writes` accepts,
    /// such as a report's `index.html` and plots.
    Dir {
        /// The directory.
        dir: &'a Path,
        /// Which file names the command writes there.
        writes: fn(&str) -> bool,
    },
}

impl Target<'_> {
    fn path(&self) -> &Path {
        match self {
            Target::File(p) | Target::Dir { dir: p, .. } => p,
        }
    }
}

/// Where `path` is, with symbolic links and `..` resolved: the path itself
/// if it exists, else its directory's resolved path and its name.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    Some(fs::canonicalize(parent(path)).ok()?.join(name))
}

/// Whether `a` and `b` are one file: the same device and inode when both
/// exist (hard links too), else the same resolved path.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if let (Ok(x), Ok(y)) = (fs::metadata(a), fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    matches!((resolved(a), resolved(b)), (Some(x), Some(y)) if x == y)
}

/// Whether file `input` is one a `Dir` target would write.
fn written_by(input: &Path, dir: &Path, writes: fn(&str) -> bool) -> bool {
    let (Some(i), Some(d)) = (resolved(input), resolved(dir)) else {
        return false;
    };
    i.starts_with(&d) && i.file_name().is_some_and(|n| writes(&n.to_string_lossy()))
}

/// Refuses outputs that would overwrite one of `inputs`, or each other,
/// before anything is opened for writing.
///
/// # Errors
/// The clash, naming both paths.
pub fn refuse_clashes(inputs: &[&Path], outputs: &[Target<'_>]) -> Result<(), String> {
    for out in outputs {
        for input in inputs {
            let clash = match *out {
                Target::File(p) => same_file(p, input),
                Target::Dir { dir, writes } => written_by(input, dir, writes),
            };
            if clash {
                return Err(format!(
                    "{} is an input of this command; writing it would destroy it (choose another output)",
                    out.path().display()
                ));
            }
        }
    }
    for (i, a) in outputs.iter().enumerate() {
        for b in &outputs[i + 1..] {
            let clash = match (*a, *b) {
                (Target::File(x), Target::File(y)) => same_file(x, y),
                (Target::File(f), Target::Dir { dir, writes })
                | (Target::Dir { dir, writes }, Target::File(f)) => written_by(f, dir, writes),
                (Target::Dir { dir: x, .. }, Target::Dir { dir: y, .. }) => same_file(x, y),
            };
            if clash {
                return Err(format!(
                    "{} and {} are the same output; give each its own",
                    a.path().display(),
                    b.path().display()
                ));
            }
        }
    }
    Ok(())
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
        let mut s = Staged::default();
        s.file(&p, b"new contents".to_vec());
        s.commit().unwrap();
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
        let mut s = Staged::default();
        s.file(&d.join("first"), b"1".to_vec());
        s.file(&p, b"new".to_vec());
        assert!(s.commit().is_err());
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

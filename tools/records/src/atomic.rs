//! Replacing a file atomically: readers (and a run after a crash) see either the old file or the
//! whole new one, never a partial file under the final name.
//!
//! Every writer of a finished file in the project goes through here, so there is one naming
//! scheme for work in progress: a hidden file in the same directory as the final file,
//! `.<final file name>.<random>.tmp` (the random part is 6 ASCII letters or digits). Same
//! directory, so the rename never crosses a file system; hidden and `.tmp`, so listings of shards
//! or checkpoints skip it ([`is_temp_name`]).
//!
//! The sequence, for [`write`](fn@write) and [`AtomicFile::commit`]:
//! 1. create the temporary next to the final path and write the bytes;
//! 2. fsync the temporary (its data is on disk before its name is);
//! 3. rename it over the final path (atomic on POSIX file systems);
//! 4. fsync the directory (the rename itself survives a power cut).
//!
//! A temporary dropped without a commit is removed. One left behind by a killed process is
//! recognised by [`is_temp_name`] and removed by [`remove_stale_temps`].

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Length of the random part of a temporary's name.
const RANDOM_LEN: usize = 6;

/// A failed step of an atomic write. Each names the path and the step; the OS error is the
/// `source()` (print with the chain, anyhow's `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    /// `path` has no file name (e.g. `/` or `..`).
    #[error("{}: not a file path", .path.display())]
    NotAFile { path: PathBuf },
    /// A step on one path: creating, writing or fsyncing the temporary for `path`, fsyncing a
    /// directory, listing or cleaning a directory.
    #[error("{}: {step}", .path.display())]
    Io {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    /// The rename of the finished temporary over the final path.
    #[error("cannot rename {} to {}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// [`write_set`] stopped at a rename after replacing `replaced`; the other files of the set
    /// keep their old content.
    #[error("replaced only {} of the set", path_list(.replaced))]
    PartlyReplaced {
        replaced: Vec<PathBuf>,
        source: Box<AtomicError>,
    },
}

fn path_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    list.join(", ")
}

fn io_error<'a>(path: &'a Path, step: &'static str) -> impl FnOnce(io::Error) -> AtomicError + 'a {
    move |source| AtomicError::Io {
        path: path.to_path_buf(),
        step,
        source,
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A new empty temporary beside `path`, named `.<file name>.<random>.tmp`.
fn create_temp(path: &Path) -> Result<NamedTempFile, AtomicError> {
    let name = path
        .file_name()
        .ok_or_else(|| AtomicError::NotAFile {
            path: path.to_path_buf(),
        })?
        .to_string_lossy();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .suffix(".tmp")
        .rand_bytes(RANDOM_LEN);
    // The final file gets the permissions a plain File::create would give it (0666 minus the
    // umask), not tempfile's private 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder
        .tempfile_in(parent_dir(path))
        .map_err(io_error(path, "cannot create a temporary file beside it"))
}

/// fsyncs `temp`, renames it to `path`, fsyncs the directory.
fn persist(temp: NamedTempFile, path: &Path) -> Result<(), AtomicError> {
    sync_temp(&temp)?;
    rename_temp(temp, path)?;
    sync_dir(parent_dir(path))
}

fn sync_temp(temp: &NamedTempFile) -> Result<(), AtomicError> {
    temp.as_file()
        .sync_all()
        .map_err(io_error(temp.path(), "cannot fsync"))
}

/// Renames `temp` over `path`; a temporary that could not be renamed is removed.
fn rename_temp(temp: NamedTempFile, path: &Path) -> Result<(), AtomicError> {
    let from = temp.path().to_path_buf();
    temp.persist(path).map_err(|e| AtomicError::Rename {
        from,
        to: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// A temporary beside `path` holding `bytes`, not yet fsynced.
fn temp_with(path: &Path, bytes: &[u8]) -> Result<NamedTempFile, AtomicError> {
    let mut temp = create_temp(path)?;
    temp.write_all(bytes)
        .map_err(io_error(temp.path(), "cannot write"))?;
    Ok(temp)
}

/// Replaces `path` with `bytes` atomically (temporary, write, fsync, rename, fsync directory).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    persist(temp_with(path, bytes)?, path)
}

/// Replaces several files that belong together (a report and its plot): every temporary is
/// written and fsynced before the first rename, so a failure while writing (a full disk) leaves
/// all of the old files in place rather than some new beside some old. The renames come last;
/// one of them failing (a permission, a directory in the way) is the one way to a mixed set,
/// and its error names the files already replaced.
pub fn write_set(files: &[(&Path, &[u8])]) -> Result<(), AtomicError> {
    let mut ready = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let temp = temp_with(path, bytes)?;
        sync_temp(&temp)?;
        ready.push((temp, *path));
    }
    let mut replaced: Vec<PathBuf> = Vec::with_capacity(ready.len());
    for (temp, path) in ready {
        if let Err(source) = rename_temp(temp, path) {
            let source = Box::new(source);
            return Err(AtomicError::PartlyReplaced { replaced, source });
        }
        replaced.push(path.to_path_buf());
    }
    let mut dirs: Vec<&Path> = files.iter().map(|(p, _)| parent_dir(p)).collect();
    dirs.sort();
    dirs.dedup();
    dirs.into_iter().try_for_each(sync_dir)
}

/// A file written under a temporary name and renamed over its final path by
/// [`AtomicFile::commit`]. Buffered. Dropped without a commit, the temporary is removed and the
/// final path is untouched.
pub struct AtomicFile {
    inner: BufWriter<NamedTempFile>,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts a file that will replace `path` on [`AtomicFile::commit`].
    pub fn create(path: &Path) -> Result<AtomicFile, AtomicError> {
        Self::with_capacity(path, 64 * 1024)
    }

    /// As [`AtomicFile::create`], with a write buffer of `capacity` bytes.
    pub fn with_capacity(path: &Path, capacity: usize) -> Result<AtomicFile, AtomicError> {
        Ok(AtomicFile {
            inner: BufWriter::with_capacity(capacity, create_temp(path)?),
            path: path.to_path_buf(),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the bytes are while the file is written.
    pub fn temp_path(&self) -> &Path {
        self.inner.get_ref().path()
    }

    /// Flushes, fsyncs, renames over the final path and fsyncs the directory.
    pub fn commit(self) -> Result<(), AtomicError> {
        let AtomicFile { mut inner, path } = self;
        if let Err(source) = inner.flush() {
            return Err(AtomicError::Io {
                path: inner.get_ref().path().to_path_buf(),
                step: "cannot write",
                source,
            });
        }
        let (temp, _) = inner.into_parts();
        persist(temp, &path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Commits a file another library wrote under a temporary name (e.g. TensorFlow's SaveV2):
/// fsyncs `from`, renames it to `to`, fsyncs the directory of `to`.
pub fn commit_rename(from: &Path, to: &Path) -> Result<(), AtomicError> {
    File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(io_error(from, "cannot fsync"))?;
    fs::rename(from, to).map_err(|source| AtomicError::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })?;
    sync_dir(parent_dir(to))
}

/// fsyncs a directory, so renames and creations in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "cannot fsync directory"))
}

/// True for the names this module gives temporaries: `.<name>.<random>.tmp` with a non-empty
/// name and a random part of ASCII letters and digits.
pub fn is_temp_name(file_name: &str) -> bool {
    let Some(middle) = file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    match middle.rsplit_once('.') {
        Some((name, random)) => {
            !name.is_empty()
                && random.len() == RANDOM_LEN
                && random.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// Removes the temporaries ([`is_temp_name`]) in `dir`, left by killed writers; returns how many.
/// Only call it when no writer is working in `dir`.
pub fn remove_stale_temps(dir: &Path) -> Result<usize, AtomicError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io_error(dir, "cannot list directory"))? {
        let entry = entry.map_err(io_error(dir, "cannot list directory"))?;
        let is_temp = entry.file_name().to_str().is_some_and(is_temp_name);
        if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                // Gone meanwhile: nothing left to clean.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(AtomicError::Io {
                        path,
                        step: "cannot remove stale temporary file",
                        source,
                    })
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_set_replaces_nothing_when_a_file_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tsv"), dir.path().join("b.png"));
        write_set(&[(&a, b"a1"), (&b, b"b1")]).unwrap();
        assert_eq!(names(dir.path()), ["a.tsv", "b.png"]);
        // The second file cannot be created (its parent is missing): the first keeps its old
        // content and no temporary is left.
        let missing = dir.path().join("gone").join("c.png");
        let err = write_set(&[(&a, b"a2"), (&missing, b"c")]).unwrap_err();
        assert!(err.to_string().contains("c.png"), "{err}");
        assert_eq!(fs::read(&a).unwrap(), b"a1");
        assert_eq!(names(dir.path()), ["a.tsv", "b.png"]);
        write_set(&[(&a, b"a3"), (&b, b"b3")]).unwrap();
        assert_eq!(
            (fs::read(&a).unwrap(), fs::read(&b).unwrap()),
            (b"a3".to_vec(), b"b3".to_vec())
        );
    }

    #[test]
    fn write_set_names_what_it_replaced_when_a_rename_fails() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.tsv");
        // A non-empty directory where the second file should go: its rename fails.
        let blocked = dir.path().join("b.png");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("keep"), b"x").unwrap();
        let err = write_set(&[(&a, b"new"), (&blocked, b"png")]).unwrap_err();
        let AtomicError::PartlyReplaced { replaced, source } = &err else {
            panic!("{err}");
        };
        assert_eq!(replaced, std::slice::from_ref(&a));
        assert!(err.to_string().contains("a.tsv"), "{err}");
        assert!(matches!(**source, AtomicError::Rename { .. }), "{source}");
        assert_eq!(fs::read(&a).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["a.tsv", "b.png"], "no temporary left");
    }

    #[test]
    fn write_lands_the_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn atomic_file_commit_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        fs::write(&path, b"old contents").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        let temp = file.temp_path().to_path_buf();
        assert!(is_temp_name(temp.file_name().unwrap().to_str().unwrap()));
        assert_eq!(temp.parent(), Some(dir.path()));
        file.write_all(b"new").unwrap();
        file.write_all(b" contents").unwrap();
        // Not visible before the commit.
        assert_eq!(fs::read(&path).unwrap(), b"old contents");
        file.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(names(dir.path()), ["shard"]);
    }

    #[test]
    fn drop_without_commit_leaves_no_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never");
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(&[7; 100_000]).unwrap();
        drop(file);
        assert!(names(dir.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn committed_files_get_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        let atomic = dir.path().join("atomic");
        write(&atomic, b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&atomic), mode(&plain));
    }

    #[test]
    fn commit_rename_moves_a_finished_file() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("model.tempstate123");
        let to = dir.path().join("model.index");
        fs::write(&from, b"tf").unwrap();
        commit_rename(&from, &to).unwrap();
        assert_eq!(names(dir.path()), ["model.index"]);
        let err = commit_rename(&from, &to).unwrap_err();
        assert!(err.to_string().contains("model.tempstate123"), "{err}");
    }

    #[test]
    fn temp_names_are_recognised_and_stale_ones_removed() {
        for name in [
            ".train-00000-of-00004.a1B2c3.tmp",
            ".build-records.json.zzzzzz.tmp",
        ] {
            assert!(is_temp_name(name), "{name}");
        }
        for name in [
            "train-00000-of-00004",
            "train-00000-of-00004.tmp",
            ".train-00000-of-00004",
            "..a1B2c3.tmp",
            ".x.abc.tmp",
            ".x.a-b_c1.tmp",
            ".tmp",
        ] {
            assert!(!is_temp_name(name), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["keep", ".hidden", "keep.tmp"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        // Two temporaries left by "killed" writers.
        for path in ["a", "b"] {
            let file = AtomicFile::create(&dir.path().join(path)).unwrap();
            let (_, temp) = file.inner.into_inner().unwrap().keep().unwrap();
            assert!(temp.exists());
        }
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 2);
        assert_eq!(names(dir.path()), [".hidden", "keep", "keep.tmp"]);
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 0);
    }
}

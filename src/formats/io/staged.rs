//! Atomic writes: a file is written under a temporary name beside its
//! destination and renamed into place only on commit, so a failed run
//! leaves no partial output.
//!
//! What the destination is decides how it is written:
//! * a regular file, or nothing yet: staged and renamed (atomic);
//! * a symbolic link: followed, and its final target replaced atomically
//!   (the link stays a link);
//! * a device, FIFO or socket (`/dev/null`, `/dev/stdout`, a named pipe):
//!   written through, never renamed over (renaming would replace the
//!   device node with a regular file);
//! * a directory: an error.
//!
//! Temporary files are registered while they exist, so that a program can
//! remove them when it is interrupted ([`remove_pending_files`], which the
//! `lstm` CLI calls on SIGINT/SIGTERM).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::io_err;
use crate::error::{Error, Result};

/// Temporary files that exist right now (written, not yet renamed or
/// removed).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock cannot leave the list inconsistent
    // (each operation is one push or retain), so poisoning is ignored.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

fn forget(tmp: &Path) {
    pending().retain(|p| p != tmp);
}

/// Removes every temporary file a [`Staged`] write has created and not yet
/// renamed or removed. For signal handlers (SIGINT/SIGTERM) of programs
/// that write outputs: call it, then exit. Returns how many were removed.
pub fn remove_pending_files() -> usize {
    let mut list = pending();
    let n = list
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count();
    list.clear();
    n
}

/// Where the bytes of a write to `path` go.
#[derive(Debug, PartialEq)]
pub(crate) enum Destination {
    /// Staged beside this regular file (existing or not) and renamed.
    Replace(PathBuf),
    /// Written through: a device, FIFO or socket.
    WriteThrough(PathBuf),
}

/// Resolves `path`: symbolic links are followed to their final target
/// (which need not exist yet); the kind of file found decides how it is
/// written.
pub(crate) fn destination(path: &Path) -> Result<Destination> {
    let mut p = path.to_path_buf();
    // Follow links one at a time (a dangling link's target is created);
    // 40 is Linux's own limit (ELOOP).
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Destination::Replace(p));
            }
            Err(e) => return Err(io_err(path)(e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&p).map_err(io_err(path))?;
            p = match p.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
            continue;
        }
        if ft.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: is a directory, not a file to write",
                path.display()
            )));
        }
        return Ok(if ft.is_file() {
            Destination::Replace(p)
        } else {
            Destination::WriteThrough(p)
        });
    }
    Err(Error::Invalid(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// A file written to a temporary name beside its destination, waiting to be
/// renamed into place by [`Staged::commit`]. Dropped without commit, the
/// temporary file is removed: a failed run leaves no partial output. (A
/// device or FIFO destination is written through at once instead; commit
/// then has nothing left to do.)
#[derive(Debug)]
pub struct Staged {
    /// `(temporary, destination)` while a rename is pending.
    rename: Option<(PathBuf, PathBuf)>,
    /// The path the caller named (for messages).
    path: PathBuf,
}

impl Staged {
    /// Writes the whole file under a temporary name beside `path`'s final
    /// target (see the module docs for links and devices).
    pub fn write(
        path: impl AsRef<Path>,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<Staged> {
        let path = path.as_ref();
        let dest = match destination(path)? {
            Destination::WriteThrough(dev) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&dev)
                    .map_err(io_err(path))?;
                let mut w = BufWriter::new(file);
                write(&mut w)?;
                w.flush().map_err(io_err(path))?;
                return Ok(Staged {
                    rename: None,
                    path: path.to_path_buf(),
                });
            }
            Destination::Replace(dest) => dest,
        };
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        // Registered before it exists, so an interrupt at any point finds it.
        pending().push(tmp.clone());
        let staged = Staged {
            rename: Some((tmp.clone(), dest)),
            path: path.to_path_buf(),
        };
        let file = File::create(&tmp).map_err(io_err(path))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(path))?;
        Ok(staged)
    }

    /// Renames the temporary file to its destination.
    pub fn commit(mut self) -> Result<()> {
        if let Some((tmp, dest)) = self.rename.take() {
            let renamed = std::fs::rename(&tmp, &dest).map_err(io_err(&self.path));
            if renamed.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            forget(&tmp);
            renamed?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.rename.take() {
            let _ = std::fs::remove_file(&tmp);
            forget(&tmp);
        }
    }
}

/// Writes a file atomically: staged under a temporary name, then renamed
/// (or written through, for a device or FIFO).
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    Staged::write(path, write)?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lstm-staged-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn destinations() {
        let d = scratch_dir("dest");
        let f = d.join("f.npy");
        assert_eq!(destination(&f).unwrap(), Destination::Replace(f.clone()));
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(destination(&f).unwrap(), Destination::Replace(f.clone()));
        #[cfg(unix)]
        {
            let link = d.join("link.npy");
            std::os::unix::fs::symlink("f.npy", &link).unwrap();
            assert_eq!(destination(&link).unwrap(), Destination::Replace(f.clone()));
            let dangling = d.join("dangling.npy");
            std::os::unix::fs::symlink("new.npy", &dangling).unwrap();
            assert_eq!(
                destination(&dangling).unwrap(),
                Destination::Replace(d.join("new.npy"))
            );
            let a = d.join("a");
            std::os::unix::fs::symlink("b", &a).unwrap();
            std::os::unix::fs::symlink("a", d.join("b")).unwrap();
            assert!(
                destination(&a)
                    .unwrap_err()
                    .to_string()
                    .contains("symbolic links")
            );
            assert_eq!(
                destination(Path::new("/dev/null")).unwrap(),
                Destination::WriteThrough("/dev/null".into())
            );
        }
        assert!(
            destination(&d)
                .unwrap_err()
                .to_string()
                .contains("directory")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pending_files_are_registered_until_commit_or_drop() {
        let d = scratch_dir("pending");
        let f = d.join("out.bin");
        let s = Staged::write(&f, |w| w.write_all(b"abc").map_err(io_err(&f))).unwrap();
        let tmp = s.rename.as_ref().unwrap().0.clone();
        assert!(tmp.exists() && pending().contains(&tmp));
        s.commit().unwrap();
        assert!(!tmp.exists() && !pending().contains(&tmp));
        assert_eq!(std::fs::read(&f).unwrap(), b"abc");
        let s = Staged::write(&f, |w| w.write_all(b"new").map_err(io_err(&f))).unwrap();
        let tmp = s.rename.as_ref().unwrap().0.clone();
        drop(s);
        assert!(!tmp.exists() && !pending().contains(&tmp));
        assert_eq!(std::fs::read(&f).unwrap(), b"abc");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

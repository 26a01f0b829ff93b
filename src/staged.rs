//! Atomic writes: a file is written under a temporary name beside its
//! destination and renamed into place only on commit, so a failed run
//! leaves no partial output.
//!
//! What the destination is decides how it is written:
//! * a regular file, or nothing yet: staged and renamed (atomic). The
//!   temporary file is created afresh (`O_EXCL`, never following or reusing
//!   a path already there) under a short, unpredictable name
//!   (`.lstm-<pid>-<n>-<nanos>.tmp`, so any name valid for the destination
//!   fits); a file it replaces passes its permissions and, where allowed,
//!   its owner and group on to the new one;
//! * a symbolic link: followed, and its final target (which need not exist
//!   yet) replaced atomically; the link stays a link;
//! * this process's stdout or stderr (`/dev/stdout`, `/dev/fd/1`,
//!   `/proc/self/fd/1`, and 2 likewise; any link in the chain): written to
//!   the descriptor itself, whatever it is open on (a pipe, a terminal, a
//!   file the shell redirected it to), at its offset;
//! * any other path that resolves through `/proc/` (another descriptor),
//!   or whose target is not a regular file (a device, FIFO or socket:
//!   `/dev/null`, a named pipe): written through, opened by the path as
//!   given, never renamed over (renaming would replace the device node, or
//!   the file behind the descriptor, with a new file). A regular file
//!   reached through `/proc/` is appended to. A regular file elsewhere under
//!   `/dev/` (`/dev/shm`) is an ordinary file: staged and renamed;
//! * a directory: an error.
//!
//! [`same_file`] tells whether two paths land on one file (resolved
//! destinations, or one inode: symbolic and hard links), [`check_replaceable`]
//! whether a destination can be replaced, both before anything is written;
//! [`commit_all`] renames several staged files one after the other (not
//! atomically together: a failure after the first rename says which files
//! were already replaced).
//!
//! Temporary files are registered while they exist, so that a program can
//! remove them when it is interrupted ([`remove_pending_files`], which the
//! `lstm` CLI calls on SIGINT/SIGTERM).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

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
    /// Written through (the path as given: the kernel resolves it): a
    /// device, FIFO or socket, or a path through `/proc/`.
    WriteThrough(PathBuf),
    /// This process's own stdout (1) or stderr (2), by way of this path
    /// (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`): written to the
    /// descriptor itself, so that the bytes land at its offset (reopening
    /// the path would start a file at 0, under what the shell wrote before,
    /// and leave the shell's offset behind, so what it writes next would
    /// overwrite them).
    Stdio(u8, PathBuf),
}

/// Whether `p` is this process's `/proc/<pid>/fd/1` or `/fd/2` (its
/// directory resolved: `/proc/self/fd`, `/dev/fd`).
fn own_stdio(p: &Path) -> Option<u8> {
    let fd = match p.file_name()?.to_str()? {
        "1" => 1,
        "2" => 2,
        _ => return None,
    };
    let dir = p.parent()?.canonicalize().ok()?;
    (dir == Path::new(&format!("/proc/{}/fd", std::process::id()))).then_some(fd)
}

/// Whether `p` lies in `/proc/`, its directory resolved (so `/dev/fd/1`,
/// whose directory is a link to `/proc/self/fd`, does).
fn under_proc(p: &Path) -> bool {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let resolved = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    resolved.starts_with("/proc") || p.starts_with("/proc")
}

/// Resolves `path`: symbolic links are followed to their final target
/// (which need not exist yet); the kind of file found, and whether any link
/// on the way lies in `/proc/`, decide how it is written.
pub(crate) fn destination(path: &Path) -> Result<Destination> {
    let mut p = path.to_path_buf();
    let mut through_proc = false;
    // Follow links one at a time (a dangling link's target is created);
    // 40 is Linux's own limit (ELOOP).
    for _ in 0..40 {
        through_proc |= cfg!(target_os = "linux") && under_proc(&p);
        if through_proc && let Some(fd) = own_stdio(&p) {
            return Ok(Destination::Stdio(fd, path.to_path_buf()));
        }
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            // `/proc/self/fd/1` on a pipe reads as `pipe:[…]`, a name
            // that does not exist: the kernel opens it all the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && through_proc => {
                return Ok(Destination::WriteThrough(path.to_path_buf()));
            }
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
        return Ok(if ft.is_file() && !through_proc {
            Destination::Replace(p)
        } else {
            Destination::WriteThrough(path.to_path_buf())
        });
    }
    Err(Error::Invalid(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// The directory a write to `path` is staged in and renamed into: that of
/// its final target, symbolic links followed (dangling ones too); `None`
/// where the write goes through instead (a device, a FIFO, stdout) or the
/// path does not resolve.
pub fn rename_dir(path: impl AsRef<Path>) -> Option<PathBuf> {
    match destination(path.as_ref()).ok()? {
        Destination::Replace(p) => Some(dest_dir(&p)),
        _ => None,
    }
}

/// `p` absolute, its directory resolved (links, `..`) when it exists.
fn absolute(p: &Path) -> PathBuf {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (dir.canonicalize(), p.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
    }
}

/// Where a write lands: the resolved destination (absolute), whether it
/// would be replaced (renamed over), and the file there now as
/// `(device, inode)`.
type Landing = (PathBuf, bool, Option<(u64, u64)>);

/// Where a write to `path` lands.
fn landing(path: &Path) -> Result<Landing> {
    let (p, replaced) = match destination(path)? {
        Destination::Replace(p) => (p, true),
        Destination::WriteThrough(p) | Destination::Stdio(_, p) => (p, false),
    };
    #[cfg(unix)]
    let id = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&p).ok().map(|m| (m.dev(), m.ino()))
    };
    #[cfg(not(unix))]
    let id = None;
    Ok((absolute(&p), replaced, id))
}

/// Whether writing `output` would replace or write the file `other` names
/// (an output or an input): the same resolved destination (symbolic links
/// followed, dangling ones too) or, for files that exist, the same inode
/// (hard links). Two outputs that are both written through (say, both
/// `/dev/null`) do not count: nothing is renamed over. A path that cannot
/// be resolved (a loop of links, a directory) is no match here; writing to
/// it is an error of its own.
pub fn same_file(output: &Path, other: &Path) -> bool {
    match (landing(output), landing(other)) {
        (Ok((pa, ra, ia)), Ok((pb, rb, ib))) => {
            (ra || rb) && (pa == pb || (ia.is_some() && ia == ib))
        }
        _ => output == other,
    }
}

/// Checks, before anything is written, that a write to `path` can be
/// committed: it resolves (not a directory, no loop of links); a file it
/// would replace can be opened for writing (an immutable or append-only
/// file, or one read-only for this user, is an error: its rename would
/// fail, or replace what its owner protected); and a temporary file can be
/// created in its directory. Devices and FIFOs are not opened (a FIFO
/// would block). What it cannot foresee: a sticky directory whose file
/// belongs to someone else, a disk that fills, the file system changing
/// in between.
pub fn check_replaceable(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let Destination::Replace(dest) = destination(path)? else {
        return Ok(());
    };
    if dest.exists() {
        OpenOptions::new()
            .write(true)
            .open(&dest)
            .map_err(io_err(path))?;
    }
    let (tmp, file) = create_temp(&dest_dir(&dest)).map_err(io_err(path))?;
    drop(file);
    let _ = std::fs::remove_file(&tmp);
    forget(&tmp);
    Ok(())
}

fn dest_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh temporary name: short (any destination name fits beside it) and
/// hard to predict (pid, a counter and the clock's nanoseconds).
fn temp_name() -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(".lstm-{}-{n}-{nanos}.tmp", std::process::id()).into()
}

/// Creates a new temporary file in `dir` (registered in the pending list)
/// under a fresh name.
fn create_temp(dir: &Path) -> std::io::Result<(PathBuf, File)> {
    create_temp_named(dir, temp_name)
}

/// Creates a new file in `dir` under the first of `name`'s names that
/// exists nowhere yet (`O_EXCL`: a link planted under the name is never
/// followed, a file never reused), trying up to 16 names.
fn create_temp_named(
    dir: &Path,
    mut name: impl FnMut() -> OsString,
) -> std::io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(name());
        // Registered before it exists, so an interrupt at any point finds
        // it (removing a name that does not exist is harmless; one that
        // exists already is not ours and is forgotten below).
        pending().push(tmp.clone());
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) => {
                forget(&tmp);
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("16 tries"))
}

/// Gives the temporary file the permissions (and, best effort, the owner
/// and group) of the file it will replace, if there is one.
fn copy_metadata(file: &File, dest: &Path, path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(dest) else {
        return Ok(());
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Before the mode: a change of owner may clear set-id bits.
        let _ = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()));
    }
    file.set_permissions(meta.permissions())
        .map_err(io_err(path))
}

/// Writes to stdout or stderr and flushes it.
fn write_stdio(
    out: &mut dyn Write,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    write(out)?;
    out.flush().map_err(io_err(path))
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
            Destination::Stdio(fd, _) => {
                if fd == 1 {
                    write_stdio(&mut std::io::stdout().lock(), path, write)?;
                } else {
                    write_stdio(&mut std::io::stderr().lock(), path, write)?;
                }
                return Ok(Staged {
                    rename: None,
                    path: path.to_path_buf(),
                });
            }
            Destination::WriteThrough(through) => {
                // A regular file reached through /proc (stdout redirected
                // to a file): appended to, like a write to the descriptor.
                let append = std::fs::metadata(&through).is_ok_and(|m| m.is_file());
                let file = OpenOptions::new()
                    .write(true)
                    .append(append)
                    .open(&through)
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
        if dest.file_name().is_none() {
            return Err(Error::Invalid(format!(
                "{}: not a file path",
                path.display()
            )));
        }
        let (tmp, file) = create_temp(&dest_dir(&dest)).map_err(io_err(path))?;
        let staged = Staged {
            rename: Some((tmp, dest)),
            path: path.to_path_buf(),
        };
        let dest = &staged.rename.as_ref().expect("just set").1;
        copy_metadata(&file, dest, path)?;
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

    /// The path the caller named.
    pub fn path(&self) -> &Path {
        &self.path
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

/// Commits staged files one after the other. Two renames cannot be atomic
/// together: if a rename fails after others succeeded, the error names the
/// file that was not replaced and those that already were (written-through
/// files were written when staged, and count as already written); the
/// files after it keep their old content.
pub fn commit_all(staged: Vec<Staged>) -> Result<()> {
    let mut done: Vec<String> = Vec::new();
    for s in staged {
        let path = s.path.clone();
        let renamed = s.rename.is_some();
        if let Err(e) = s.commit() {
            if done.is_empty() {
                return Err(e);
            }
            let (kind, why) = match &e {
                Error::Io { source, .. } => (source.kind(), source.to_string()),
                other => (std::io::ErrorKind::Other, other.to_string()),
            };
            return Err(Error::Io {
                path,
                source: std::io::Error::new(
                    kind,
                    format!(
                        "{why}; not replaced, it keeps its old content, but {} (outputs \
                         are renamed one after the other)",
                        done.join(" and ")
                    ),
                ),
            });
        }
        done.push(format!(
            "{} was already {}",
            path.display(),
            if renamed { "replaced" } else { "written" }
        ));
    }
    Ok(())
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
        // The process's own descriptors, whatever they are open on (a
        // pipe's `pipe:[…]` target does not exist): only stat'ed here.
        #[cfg(target_os = "linux")]
        for (p, fd) in [
            ("/dev/stdout", 1),
            ("/dev/fd/1", 1),
            ("/proc/self/fd/1", 1),
            ("/dev/stderr", 2),
        ] {
            assert_eq!(
                destination(Path::new(p)).unwrap(),
                Destination::Stdio(fd, p.into())
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

    /// Issue 17 review, point 3: the temporary file never follows or
    /// reuses a path planted where it is created. The old name was
    /// predictable (`.out.npy.tmp<pid>`): a symbolic link or a hard link
    /// planted there had its target overwritten.
    #[cfg(unix)]
    #[test]
    fn temporary_files_never_follow_planted_links() {
        let d = scratch_dir("planted");
        let f = d.join("out.npy");
        let victim = d.join("victim");
        let planted = d.join(format!(".out.npy.tmp{}", std::process::id()));
        for hard in [false, true] {
            std::fs::write(&victim, b"victim").unwrap();
            let _ = std::fs::remove_file(&planted);
            if hard {
                std::fs::hard_link(&victim, &planted).unwrap();
            } else {
                std::os::unix::fs::symlink(&victim, &planted).unwrap();
            }
            write_atomic(&f, |w| w.write_all(b"new").map_err(io_err(&f))).unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"victim", "hard: {hard}");
            assert_eq!(std::fs::read(&f).unwrap(), b"new");
            assert!(std::fs::symlink_metadata(&f).unwrap().file_type().is_file());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Issue 17 review, point 4: an output name of 247 bytes (valid: the
    /// limit is 255) is written; the old temporary name was longer than
    /// the limit ("File name too long").
    #[test]
    fn long_output_names_are_written() {
        let d = scratch_dir("long");
        let f = d.join(format!("{}.npy", "y".repeat(243)));
        assert_eq!(f.file_name().unwrap().len(), 247);
        write_atomic(&f, |w| w.write_all(b"abc").map_err(io_err(&f))).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"abc");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The temporary file skips names already taken, by a symbolic link,
    /// a hard link or a file, and leaves what they point to alone.
    #[cfg(unix)]
    #[test]
    fn temporary_files_skip_taken_names() {
        let d = scratch_dir("taken");
        let victim = d.join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("a")).unwrap();
        std::fs::hard_link(&victim, d.join("b")).unwrap();
        let mut names = ["a", "b", "c"].into_iter().map(OsString::from);
        let (tmp, mut f) = create_temp_named(&d, || names.next().unwrap()).unwrap();
        assert_eq!(tmp, d.join("c"));
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert!(pending().contains(&tmp));
        assert!(!pending().contains(&d.join("a")) && !pending().contains(&d.join("b")));
        forget(&tmp);
        let err = create_temp_named(&d, || "a".into()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Issue 17 review, point 8: when the second of two renames fails,
    /// the error names the file not replaced and the one already replaced.
    #[test]
    fn a_failed_second_rename_says_what_was_already_replaced() {
        let d = scratch_dir("commit_all");
        let (y, s) = (d.join("y.npy"), d.join("s.npz"));
        for p in [&y, &s] {
            std::fs::write(p, b"old").unwrap();
        }
        let sy = Staged::write(&y, |w| w.write_all(b"new").map_err(io_err(&y))).unwrap();
        let ss = Staged::write(&s, |w| w.write_all(b"new").map_err(io_err(&s))).unwrap();
        // The second rename fails: its temporary file is gone.
        std::fs::remove_file(&ss.rename.as_ref().unwrap().0).unwrap();
        let err = commit_all(vec![sy, ss]).unwrap_err().to_string();
        assert!(err.starts_with(&s.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("{} was already replaced", y.display())),
            "{err}"
        );
        assert_eq!(std::fs::read(&y).unwrap(), b"new");
        assert_eq!(std::fs::read(&s).unwrap(), b"old");
        // The first rename failing: its own error, nothing replaced.
        let sy = Staged::write(&y, |w| w.write_all(b"2").map_err(io_err(&y))).unwrap();
        let ss = Staged::write(&s, |w| w.write_all(b"2").map_err(io_err(&s))).unwrap();
        std::fs::remove_file(&sy.rename.as_ref().unwrap().0).unwrap();
        let tmp = ss.rename.as_ref().unwrap().0.clone();
        let err = commit_all(vec![sy, ss]).unwrap_err().to_string();
        assert!(!err.contains("already"), "{err}");
        assert!(!tmp.exists(), "the second temporary file was left");
        assert_eq!(std::fs::read(&s).unwrap(), b"old");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Same file: by resolved destination (dangling links too) or inode;
    /// write-through outputs never collide with each other.
    #[cfg(unix)]
    #[test]
    fn same_file_follows_links_and_inodes() {
        let d = scratch_dir("same");
        let t = |n: &str| d.join(n);
        std::os::unix::fs::symlink("s.npz", t("l1")).unwrap();
        std::os::unix::fs::symlink("target", t("l2")).unwrap();
        std::os::unix::fs::symlink("target", t("l3")).unwrap();
        std::fs::write(t("h1"), b"x").unwrap();
        std::fs::hard_link(t("h1"), t("h2")).unwrap();
        assert!(same_file(&t("l1"), &t("s.npz")));
        assert!(same_file(&t("l2"), &t("l3")));
        assert!(same_file(&t("h1"), &t("h2")));
        assert!(!same_file(&t("h1"), &t("l1")));
        assert!(!same_file(Path::new("/dev/null"), Path::new("/dev/null")));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

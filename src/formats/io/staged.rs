//! Atomic writes: a file is written under a temporary name beside its
//! destination and renamed into place only on commit, so a failed run
//! leaves no partial output.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::io_err;
use crate::error::{Error, Result};

/// A file written to a temporary name beside its destination, waiting to be
/// renamed into place by [`Staged::commit`]. Dropped without commit, the
/// temporary file is removed: a failed run leaves no partial output.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl Staged {
    /// Writes the whole file under a temporary name in `path`'s folder.
    pub fn write(
        path: impl AsRef<Path>,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<Staged> {
        let path = path.as_ref();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp).map_err(io_err(path))?;
        let staged = Staged {
            tmp,
            path: path.to_path_buf(),
            committed: false,
        };
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
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a file atomically: staged under a temporary name, then renamed.
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    Staged::write(path, write)?.commit()
}

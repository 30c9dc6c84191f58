//! Reading files of a local checkpoint directory through a memory map (no copy into the heap).

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::error::{Error, Result};

/// Maps the file at `path` of `fs` read-only.
///
/// # Errors
/// [`Error::NotFound`] if it does not exist; [`Error::Corrupt`] if a directory stands there; storage errors.
#[allow(unsafe_code)]
pub(super) fn map_file(fs: &LocalFileSystem, path: &Path) -> Result<Bytes> {
    let file_path = fs
        .path_to_filesystem(path)
        .map_err(|e| Error::storage(path, e))?;
    let file = std::fs::File::open(&file_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_string(),
        },
        _ => local_error(path, e),
    })?;
    let meta = file.metadata().map_err(|e| local_error(path, e))?;
    if meta.is_dir() {
        // Not a storage failure that a retry could fix: what is there is not a file of ours.
        return Err(Error::corrupt(
            path,
            "a directory stands where a file should be",
        ));
    }
    if meta.len() == 0 {
        // An empty file cannot be mapped on every platform; it is simply empty.
        return Ok(Bytes::new());
    }
    // SAFETY: checkpoint files are immutable once written: every file is written once under a new name
    // (object_store writes to a staging file and renames it into place) and never modified in place, only
    // deleted. Deleting (unlinking) a mapped file keeps its pages valid on Unix. The one remaining hazard, a
    // foreign process truncating the file while it is mapped, is outside the storage contract
    // (docs/formats.md) and would make any reader fail.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| local_error(path, e))?;
    Ok(Bytes::from_owner(map))
}

/// An I/O error of the local directory at `path`, as the storage error `object_store`'s local store gives.
pub(super) fn local_error(path: &Path, e: std::io::Error) -> Error {
    Error::storage(
        path,
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        },
    )
}

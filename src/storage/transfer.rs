//! Copies of whole local files to and from checkpoint storage, with their size and CRC32 computed while
//! they stream (the RocksDB backend's uploads and restore downloads).

use std::path::Path as LocalPath;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CheckpointStorage;
use crate::error::{Error, Result};

/// Bytes read from a local file per chunk of an upload.
const CHUNK_BYTES: usize = 4 << 20;

/// Size and checksum of a transferred file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transferred {
    /// Bytes.
    pub(crate) size_bytes: u64,
    /// CRC32 of the whole file.
    pub(crate) crc32: u32,
}

fn local_error(path: &LocalPath, e: std::io::Error) -> Error {
    Error::local(path.display().to_string(), e)
}

/// Uploads the local file `local` to `relative` (multipart above 8 MiB; to a local-directory storage,
/// a kernel copy renamed into place). On error, the partial upload is aborted and nothing is left at
/// `relative`.
///
/// # Errors
/// [`Error::Storage`] for a local read or a store error.
pub(crate) async fn upload_file(
    storage: &CheckpointStorage,
    local: &LocalPath,
    relative: &str,
) -> Result<Transferred> {
    if let Some(dir) = storage.local_dir() {
        let target = dir.file(&storage.path(relative))?;
        let (source, fsync) = (local.to_path_buf(), dir.fsync());
        return tokio::task::spawn_blocking(move || copy_in(&source, &target, fsync))
            .await
            .map_err(|e| Error::local(relative, e))?;
    }
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| local_error(local, e))?;
    // Chunks no larger than the file: an SST of a few KiB is not read into a zeroed 4 MiB buffer.
    let len = file
        .metadata()
        .await
        .map_or(CHUNK_BYTES as u64, |m| m.len());
    let mut writer = storage.writer(relative);
    let mut hasher = crc32fast::Hasher::new();
    let mut size_bytes = 0u64;
    loop {
        let remaining = len.saturating_sub(size_bytes).clamp(1, CHUNK_BYTES as u64);
        let mut chunk = Vec::with_capacity(remaining as usize);
        let filled = match (&mut file)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut chunk)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                writer.abort().await;
                return Err(local_error(local, e));
            }
        };
        if filled == 0 {
            break;
        }
        hasher.update(&chunk);
        size_bytes += filled as u64;
        if let Err(e) = writer.write(chunk).await {
            writer.abort().await;
            return Err(e);
        }
    }
    writer.finish().await?;
    Ok(Transferred {
        size_bytes,
        crc32: hasher.finalize(),
    })
}

/// Downloads `relative` into the new local file `local` and checks it against the expected size and
/// CRC32.
///
/// From a local-directory storage, the file is hard-linked when `hard_link` is set and both are on one
/// file system (stored files are immutable, and RocksDB never writes an SST in place; it is what
/// RocksDB's own checkpoints do), otherwise copied by the kernel; the local file's CRC32 is then
/// verified all the same.
///
/// # Errors
/// [`Error::NotFound`] if the object is missing; [`Error::Corrupt`] naming the object if its size or
/// checksum differ; [`Error::Storage`] for store or local write errors.
pub(crate) async fn download_file(
    storage: &CheckpointStorage,
    relative: &str,
    local: &LocalPath,
    expected: Transferred,
    hard_link: bool,
) -> Result<()> {
    let path = storage.path(relative);
    if let Some(dir) = storage.local_dir() {
        let source = dir.file(&path)?;
        let local = local.to_path_buf();
        let shown = path.clone();
        return tokio::task::spawn_blocking(move || {
            copy_verified(&source, &local, expected, hard_link, &shown)
        })
        .await
        .map_err(|e| Error::local(relative, e))?;
    }
    let result = storage
        .object_store()
        .get(&path)
        .await
        .map_err(|e| Error::storage(&path, e))?;
    if result.meta.size != expected.size_bytes {
        return Err(Error::corrupt(
            &path,
            format!(
                "size {} bytes, the handle says {}",
                result.meta.size, expected.size_bytes
            ),
        ));
    }
    let mut out = tokio::fs::File::create(local)
        .await
        .map_err(|e| local_error(local, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut stream = result.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::storage(&path, e))?;
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| local_error(local, e))?;
    }
    out.flush().await.map_err(|e| local_error(local, e))?;
    let crc = hasher.finalize();
    if crc != expected.crc32 {
        return Err(Error::corrupt(
            &path,
            format!("CRC32 {crc:08x}, the handle says {:08x}", expected.crc32),
        ));
    }
    Ok(())
}

/// Puts the local file `source` at the new path `local` (a hard link when `hard_link` is set and both are
/// on one file system, a copy otherwise) and checks it against `expected`; errors name `shown`.
///
/// # Errors
/// [`Error::NotFound`] if `source` is missing; [`Error::Corrupt`] if its size or CRC32 differ (nothing is
/// left at `local` then); [`Error::Storage`] for local I/O errors. The local-directory path of
/// [`download_file`], and local recovery's restore of a RocksDB file.
pub(crate) fn copy_verified(
    source: &LocalPath,
    local: &LocalPath,
    expected: Transferred,
    hard_link: bool,
    shown: &dyn std::fmt::Display,
) -> Result<()> {
    use std::io::Read;
    let meta = match std::fs::metadata(source) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: shown.to_string(),
            });
        }
        Err(e) => return Err(local_error(source, e)),
    };
    if meta.len() != expected.size_bytes {
        return Err(Error::corrupt(
            shown,
            format!(
                "size {} bytes, the handle says {}",
                meta.len(),
                expected.size_bytes
            ),
        ));
    }
    if !(hard_link && std::fs::hard_link(source, local).is_ok()) {
        std::fs::copy(source, local).map_err(|e| local_error(local, e))?;
    }
    let mut file = std::fs::File::open(local).map_err(|e| local_error(local, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| local_error(local, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let crc = hasher.finalize();
    if crc != expected.crc32 {
        // Never leave a link to a bad file where RocksDB would open it.
        let _ = std::fs::remove_file(local);
        return Err(Error::corrupt(
            shown,
            format!("CRC32 {crc:08x}, the handle says {:08x}", expected.crc32),
        ));
    }
    Ok(())
}

/// The local-directory path of [`CheckpointStorage::upload_file`]: the kernel copies the file to a
/// temporary name next to the target (`copy_file_range`), the CRC32 is computed from the source (in the
/// page cache), then the copy is synced if asked and renamed into place, so a reader never sees a partial
/// file (as `LocalFileSystem::put` does).
fn copy_in(source: &LocalPath, target: &LocalPath, fsync: bool) -> Result<Transferred> {
    use std::io::Read;
    let dir = target
        .parent()
        .ok_or_else(|| Error::local(target.display(), "no parent directory"))?;
    super::durable::create_dirs(dir, fsync)?;
    let mut tmp_name = target.as_os_str().to_owned();
    tmp_name.push(format!(
        ".{:016x}.tmp",
        std::process::id() as u64 ^ source.as_os_str().len() as u64
    ));
    let tmp = std::path::PathBuf::from(tmp_name);
    let result = (|| {
        let size_bytes = std::fs::copy(source, &tmp).map_err(|e| local_error(&tmp, e))?;
        let mut file = std::fs::File::open(source).map_err(|e| local_error(source, e))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| local_error(source, e))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            hasher.update(&buf[..n]);
        }
        if read != size_bytes {
            return Err(Error::local(
                source.display(),
                "file changed while it was uploaded",
            ));
        }
        if fsync {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| local_error(&tmp, e))?;
        }
        std::fs::rename(&tmp, target).map_err(|e| local_error(target, e))?;
        if fsync {
            super::durable::sync_dir(dir)?;
        }
        Ok(Transferred {
            size_bytes,
            crc32: hasher.finalize(),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

//! Copies of whole local files to and from checkpoint storage, with their size and CRC32 computed while
//! they stream (the LSM backend's uploads and restore downloads).

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

impl CheckpointStorage {
    /// Uploads the local file `local` to `relative` (multipart above 8 MiB). On error, the partial upload
    /// is aborted and nothing is left at `relative`.
    ///
    /// # Errors
    /// [`Error::Storage`] for a local read or a store error.
    pub(crate) async fn upload_file(
        &self,
        local: &LocalPath,
        relative: &str,
    ) -> Result<Transferred> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| local_error(local, e))?;
        let mut writer = self.writer(relative);
        let mut hasher = crc32fast::Hasher::new();
        let mut size_bytes = 0u64;
        loop {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let mut filled = 0;
            while filled < chunk.len() {
                match file.read(&mut chunk[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        writer.abort().await;
                        return Err(local_error(local, e));
                    }
                }
            }
            if filled == 0 {
                break;
            }
            chunk.truncate(filled);
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
        &self,
        relative: &str,
        local: &LocalPath,
        expected: Transferred,
        hard_link: bool,
    ) -> Result<()> {
        let path = self.path(relative);
        if let Some(fs) = &self.local {
            let source = fs
                .path_to_filesystem(&path)
                .map_err(|e| Error::storage(&path, e))?;
            let local = local.to_path_buf();
            let shown = path.clone();
            return tokio::task::spawn_blocking(move || {
                copy_local(&source, &local, expected, hard_link, &shown)
            })
            .await
            .map_err(|e| Error::local(relative, e))?;
        }
        let result = self
            .store
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
}

/// The local-directory path of [`CheckpointStorage::download_file`]: link or copy, then verify.
fn copy_local(
    source: &LocalPath,
    local: &LocalPath,
    expected: Transferred,
    hard_link: bool,
    shown: &object_store::path::Path,
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

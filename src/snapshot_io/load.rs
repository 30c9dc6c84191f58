//! Reading the owned key groups of a keyed snapshot file (the canonical format) named by a state handle:
//! shared by the heap backend's restore and the RocksDB backend's import of canonical snapshots.

use crate::error::{Error, Result};
use crate::format::keyed_file::read::{self as keyed_file, HEADER_PREFIX};
use crate::format::keyed_file::{FOOTER_LEN, FileHeader, IndexEntry};
use crate::key_group::KeyGroupRange;
use crate::snapshot::handle::{HandleFormat, KeyedStateHandle, StateFile};
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::{CheckpointStorage, RangeSource};

pub(crate) use crate::snapshot_io::loaded::LoadedFile;

/// Reads and checks one handle's file; decodes the key groups in `range`. With `local` (local recovery),
/// an intact local copy of the file (its size and CRC32 the handle's) is read instead of checkpoint
/// storage; a missing or damaged one is reported in the result's `sources` and storage read. A
/// [`HandleFormat::KeyedChain`] handle (heap incremental) is read whole: every file of the chain, merged
/// into the records of its newest state (`snapshot_io/chain/mod.rs`). A file's key groups are decompressed
/// on up to `threads` threads (the calling one included; a file under 1 MiB uses one).
///
/// # Errors
/// [`Error::InvalidArgument`] if the handle is neither a keyed-file (canonical) handle nor a chain
/// (`restorer` names the backend that refuses it); [`Error::NotFound`] if a file is missing;
/// [`Error::Corrupt`] naming the file if its size, CRC32, footer, index, header or a frame is wrong, or
/// a chain's files do not fit together.
pub(crate) async fn load_handle(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    range: KeyGroupRange,
    restorer: &str,
    local: Option<&LocalCopies>,
    threads: usize,
) -> Result<LoadedFile> {
    let files = load_parts(storage, handle, range, restorer, local, threads).await?;
    crate::snapshot_io::chain::merge(files)
}

/// As [`load_handle`], with a chain's files returned as they are, oldest first (one file for a
/// keyed-file handle), for a restore that visits a chain's records itself (`snapshot_io/chain/mod.rs`).
///
/// # Errors
/// As [`load_handle`].
pub(crate) async fn load_parts(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    range: KeyGroupRange,
    restorer: &str,
    local: Option<&LocalCopies>,
    threads: usize,
) -> Result<Vec<LoadedFile>> {
    if handle.format == HandleFormat::KeyedChain {
        if handle.files.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "a chain handle of backend {} lists no file",
                handle.backend_id
            )));
        }
        let loads = handle
            .files
            .iter()
            .enumerate()
            // The oldest file of a chain is a full file, or a delta once rolling materialization left
            // the chain's full file behind; every later one is a delta.
            .map(|(i, file)| {
                let delta = (i > 0).then_some(true);
                load_file(storage, handle, file, range, local, delta, threads)
            });
        return futures::future::try_join_all(loads).await;
    }
    if handle.format != HandleFormat::KeyedFile {
        return Err(Error::InvalidArgument(format!(
            "the {restorer} backend cannot restore backend {}'s {:?} snapshot of checkpoint {}: only a \
             canonical snapshot (keyed file) restores on any backend; restore it with the backend that \
             wrote it and take a canonical savepoint, or convert it with `statectl savepoint convert`",
            handle.backend_id, handle.format, handle.checkpoint_id
        )));
    }
    let [file] = handle.files.as_slice() else {
        return Err(Error::InvalidArgument(format!(
            "a keyed-file handle has exactly one file, backend {} lists {}",
            handle.backend_id,
            handle.files.len()
        )));
    };
    Ok(vec![
        load_file(storage, handle, file, range, local, Some(false), threads).await?,
    ])
}

/// Reads and checks `file` of `handle` (a delta file if `delta` is `Some(true)`, a full one if
/// `Some(false)`, either if `None`), as [`load_handle`] does for a handle of one file.
async fn load_file(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    file: &StateFile,
    range: KeyGroupRange,
    local: Option<&LocalCopies>,
    delta: Option<bool>,
    threads: usize,
) -> Result<LoadedFile> {
    let mut sources = RestoreSources::default();
    let local_bytes = match local {
        None => None,
        Some(local) => {
            let copy = local.file(storage, handle, file);
            let read = tokio::task::spawn_blocking(move || copy.read())
                .await
                .map_err(|e| Error::IllegalState(format!("local copy reader panicked: {e}")))?;
            read.inspect_err(|why| sources.fell_back(&file.path, why))
                .ok()
        }
    };
    let from_local = local_bytes.is_some();
    // A file this restore needs whole is read whole, so that its CRC32 is checked on every store.
    let whole = handle.key_groups.intersection(&range) == handle.key_groups;
    let source = if let Some(bytes) = local_bytes {
        // Size and CRC32 checked against the handle already.
        sources.local(file.size_bytes);
        RangeSource::Bytes {
            bytes: bytes.into(),
            path: storage.path(&file.path),
        }
    } else if whole {
        RangeSource::Bytes {
            bytes: storage.read(&file.path).await?,
            path: storage.path(&file.path),
        }
    } else {
        storage.open(&file.path).await?
    };
    let path = source.path().to_string();
    if source.len() != file.size_bytes {
        return Err(Error::corrupt(
            &path,
            format!(
                "file has {} bytes, its handle says {}: truncated or replaced",
                source.len(),
                file.size_bytes
            ),
        ));
    }
    if let RangeSource::Bytes { bytes, .. } = &source
        && crc32fast::hash(bytes) != file.crc32
    {
        return Err(Error::corrupt(
            &path,
            "file checksum does not match its handle",
        ));
    }
    let (index, header, header_len) = read_index_and_header(&source, &path, true).await?;
    let index = index.unwrap_or_default();
    if let Some(delta) = delta
        && header.rewrite.is_some() != delta
    {
        let (is, expected) = if delta {
            ("a full file", "a delta")
        } else {
            ("a delta file", "a full file")
        };
        return Err(Error::corrupt(
            &path,
            format!("{is} where its handle has {expected}"),
        ));
    }
    if header.max_parallelism != handle.max_parallelism || header.key_groups != handle.key_groups {
        return Err(Error::corrupt(
            &path,
            format!(
                "file holds key groups {} of max parallelism {}, its handle says {} of {}",
                header.key_groups,
                header.max_parallelism,
                handle.key_groups,
                handle.max_parallelism
            ),
        ));
    }
    let wanted: Vec<_> = index
        .iter()
        .filter(|e| range.contains(e.key_group))
        .filter(|e| header.key_groups.contains(e.key_group) && e.offset >= header_len)
        .copied()
        .collect();
    if wanted.len() != index.iter().filter(|e| range.contains(e.key_group)).count() {
        return Err(Error::corrupt(
            &path,
            "index lists a key group outside the file's range or inside its header",
        ));
    }
    let ranges: Vec<_> = wanted.iter().map(|e| e.offset..e.offset + e.len).collect();
    if !from_local {
        sources.remote(if whole {
            file.size_bytes
        } else {
            ranges.iter().map(|r| r.end - r.start).sum()
        });
    }
    let blocks = source.read_many(&ranges).await?;
    let decode_path = path.clone();
    let groups = tokio::task::spawn_blocking(move || {
        decode_groups(
            wanted.into_iter().zip(blocks).collect(),
            threads,
            &decode_path,
        )
    })
    .await
    .map_err(|e| Error::IllegalState(format!("restore decoder panicked: {e}")))??;
    Ok(LoadedFile {
        path,
        header,
        groups,
        sources,
    })
}

/// Below this many stored bytes a file's key groups are decompressed on one thread (a thread costs more
/// than it saves).
const PARALLEL_FROM_BYTES: usize = 1 << 20;

/// The decoded records of each key group of `blocks` (index entry, its stored frames), in order: runs of
/// key groups of about equal stored bytes decompressed on up to `threads` threads (the calling one
/// included).
fn decode_groups(
    blocks: Vec<(IndexEntry, bytes::Bytes)>,
    threads: usize,
    path: &str,
) -> Result<Vec<(u32, Vec<u8>)>> {
    let total: usize = blocks.iter().map(|(_, b)| b.len()).sum();
    let parts = if total < PARALLEL_FROM_BYTES {
        1
    } else {
        threads.clamp(1, blocks.len().max(1))
    };
    let runs = crate::parallel::runs_by_weight(blocks, parts, |(_, b)| b.len());
    let decoded = crate::parallel::run_each(runs, |_, run| {
        run.into_iter()
            .map(|(e, bytes)| {
                Ok((
                    e.key_group,
                    keyed_file::decode_frames(&bytes, e.offset, path)?,
                ))
            })
            .collect::<Result<Vec<_>>>()
    });
    let mut groups = Vec::new();
    for run in decoded {
        groups.extend(run?);
    }
    Ok(groups)
}

/// The header of the keyed snapshot file `file` (its states with kinds and codec ids, and its key groups),
/// read with three ranged reads (footer, header prefix, header).
///
/// # Errors
/// [`Error::NotFound`] if the file is missing; [`Error::Corrupt`] naming it if its footer or header is bad.
pub(crate) async fn read_header(storage: &CheckpointStorage, file: &str) -> Result<FileHeader> {
    let source = storage.open(file).await?;
    let path = source.path().to_string();
    Ok(read_index_and_header(&source, &path, false).await?.1)
}

/// The index (if `with_index`), the header and the header's length in bytes of the keyed file `source`:
/// footer first, then the index, then the header's prefix and the header.
async fn read_index_and_header(
    source: &RangeSource,
    path: &str,
    with_index: bool,
) -> Result<(Option<Vec<IndexEntry>>, FileHeader, u64)> {
    let len = source.len();
    if len < HEADER_PREFIX + FOOTER_LEN as u64 {
        return Err(Error::corrupt(
            path,
            format!("truncated: {len} bytes is shorter than any snapshot file"),
        ));
    }
    let footer_bytes = source
        .read(len.saturating_sub(FOOTER_LEN as u64)..len)
        .await?;
    let footer = keyed_file::parse_footer(&footer_bytes, len, path)?;
    let index = if with_index {
        let index_bytes = source
            .read(footer.index_offset..footer.index_offset + footer.index_len)
            .await?;
        Some(keyed_file::parse_index(&index_bytes, &footer, path)?)
    } else {
        None
    };
    let prefix = source.read(0..HEADER_PREFIX.min(len)).await?;
    let header_len = keyed_file::header_len(&prefix, &footer, path)?;
    let header = keyed_file::parse_header(&source.read(0..header_len).await?, path)?;
    Ok((index, header, header_len))
}

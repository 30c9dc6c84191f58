//! The keyed snapshot file: key-group-partitioned records in checksummed, optionally zstd-compressed
//! frames, with a per-key-group offset index at the end. Byte layout: `docs/formats.md`, "Keyed snapshot
//! file". Both the writer and the reader are backend-independent.

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;
use crate::key_group::KeyGroupRange;
use crate::snapshot::state_meta::StateMeta;

/// First 8 bytes of a keyed snapshot file, and its last 8.
pub(crate) const MAGIC: &[u8; 8] = b"SBKEYED\x01";
/// Format version of a full file (every record of its key groups): what savepoints and full
/// checkpoints are.
pub(crate) const VERSION: u16 = 1;
/// Format version of a delta file of a heap incremental checkpoint (`docs/formats.md`, "Delta files"):
/// the header also lists the states whose records replace every earlier one, and a record may be a
/// tombstone ([`TOMBSTONE`]).
pub(crate) const DELTA_VERSION: u16 = 2;
/// Format version of a delta file that may also hold append records ([`APPEND`]); otherwise as
/// [`DELTA_VERSION`], which a delta without appends still is, so that older readers read it.
pub(crate) const APPEND_VERSION: u16 = 3;
/// Format version of a delta file that may also hold patch records ([`PATCH`]) beside append records.
pub(crate) const PATCH_VERSION: u16 = 4;
/// Format version of a delta file that also holds some key groups *whole* (rolling materialization,
/// [`FileHeader::whole`]): version 4 plus that range at the end of the header.
pub(crate) const WHOLE_VERSION: u16 = 5;
/// Bit of a record's `state` word that marks a tombstone in a delta file: the key and namespace are
/// removed, the value bytes are empty.
pub(crate) const TOMBSTONE: u32 = 1 << 31;
/// Bit of a record's `state` word that marks an append record in a delta file of version
/// [`APPEND_VERSION`]: its value is a list value whose elements follow those of the entry's record in
/// an earlier file of the chain.
pub(crate) const APPEND: u32 = 1 << 30;
/// Bit of a record's `state` word that marks a patch record in a delta file of version
/// [`PATCH_VERSION`]: its value holds the user keys of the entry's map put (with their values) and
/// removed since the entry's record in an earlier file of the chain.
pub(crate) const PATCH: u32 = 1 << 29;
/// A delta file's record that changes part of an entry written in an earlier file of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ElementRecord {
    /// [`APPEND`]: a list value of the elements appended to the entry's list.
    Append,
    /// [`PATCH`]: the user keys of the entry's map put (with their values) and removed.
    Patch,
}

/// Size of the fixed footer in bytes.
pub(crate) const FOOTER_LEN: usize = 32;
/// Size of the fixed part of the header (magic, version, body length).
const HEADER_PREFIX_LEN: usize = 14;
/// Frames never claim more than this many uncompressed bytes (1 GiB).
pub(crate) const MAX_FRAME_RAW_LEN: u32 = 1 << 30;

/// zstd level of frames unless the writer is told otherwise (the heap backend's default, and the level
/// of canonical savepoints the RocksDB backend writes).
pub(crate) const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Uncompressed bytes after which a frame is closed unless the writer is told otherwise (the heap
/// backend's default, and the frame size of canonical savepoints the RocksDB backend writes): 1 MiB.
pub(crate) const DEFAULT_FRAME_BYTES: usize = 1 << 20;
/// A zstd frame never claims more than this many times its stored bytes. zstd can expand ~32,000 times, so
/// without this bound a small hostile file could make restore allocate gigabytes; the writer stores a frame
/// uncompressed rather than exceed it (only state of one byte repeated could), so no file this crate wrote
/// is refused. A restore thus allocates at most 1,024 times the bytes it read.
pub(crate) const MAX_EXPANSION: u64 = 1024;

const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// Header of a keyed snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub(crate) max_parallelism: u32,
    pub(crate) key_groups: KeyGroupRange,
    pub(crate) states: Vec<StateMeta>,
    /// `None` for a full file (version 1). For a delta file (version 2): the indices of the states whose
    /// records here replace all their records of earlier files of the chain (rewritten whole: a state
    /// registered anew, or one whose changes were not tracked); the other states' records and tombstones
    /// apply on top of the earlier files'.
    pub(crate) rewrite: Option<Vec<u32>>,
    /// A delta file that may hold append records (versions 3 and 4); false for every other file.
    pub(crate) appends: bool,
    /// A delta file that may hold patch records (versions 4 and 5); false for every other file.
    pub(crate) patches: bool,
    /// For a delta file of version 5: the key groups (inside `key_groups`) it holds *whole*: every live
    /// entry of every state of the header, as upserts, so that a chain's earlier files are not read for
    /// them. Empty for every other file (a full file is whole for all its key groups: see
    /// [`FileHeader::whole_range`]).
    pub(crate) whole: KeyGroupRange,
}

impl FileHeader {
    /// The format version of a file with this header.
    pub(crate) fn version(&self) -> u16 {
        match (&self.rewrite, self.appends, self.patches) {
            (Some(_), _, _) if !self.whole.is_empty() => WHOLE_VERSION,
            (Some(_), _, true) => PATCH_VERSION,
            (Some(_), true, false) => APPEND_VERSION,
            (Some(_), false, false) => DELTA_VERSION,
            (None, _, _) => VERSION,
        }
    }

    /// The key groups this file holds whole: all of `key_groups` for a full file, [`FileHeader::whole`]
    /// for a delta.
    pub(crate) fn whole_range(&self) -> KeyGroupRange {
        match self.rewrite {
            None => self.key_groups,
            Some(_) => self.whole,
        }
    }
}

/// One index entry: the frames of `key_group` occupy `[offset, offset + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) key_group: u32,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// Settings of the writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterOptions {
    /// zstd level, or `None` to store frames uncompressed.
    pub(crate) zstd_level: Option<i32>,
    /// Uncompressed bytes after which a frame is closed.
    pub(crate) frame_bytes: usize,
}

/// Writes a keyed snapshot file as a stream of byte chunks (see [`KeyedFileWriter::take_output`]).
pub(crate) struct KeyedFileWriter {
    out: Vec<u8>,
    /// Bytes handed out by `take_output` so far.
    flushed: u64,
    crc: crc32fast::Hasher,
    frame: Vec<u8>,
    index: Vec<IndexEntry>,
    group: Option<(u32, u64)>,
    options: WriterOptions,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    records: u64,
    raw_bytes: u64,
    version: u16,
}

/// What a finished file is: its size, CRC32 and content counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileSummary {
    pub(crate) size: u64,
    pub(crate) crc32: u32,
    pub(crate) records: u64,
    /// Uncompressed record bytes (the "state size").
    pub(crate) raw_bytes: u64,
}

impl KeyedFileWriter {
    /// Starts a file with `header`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the zstd level is rejected or a header string is over 4 GiB.
    pub(crate) fn new(header: &FileHeader, options: WriterOptions) -> Result<Self> {
        if (header.appends || header.patches || !header.whole.is_empty())
            && header.rewrite.is_none()
        {
            return Err(Error::InvalidArgument(
                "append or patch records or a whole range asked of a full keyed file".into(),
            ));
        }
        if header.whole.intersection(&header.key_groups) != header.whole {
            return Err(Error::InvalidArgument(format!(
                "whole range {} outside the file's key groups {}",
                header.whole, header.key_groups
            )));
        }
        let compressor = options
            .zstd_level
            .map(|level| {
                zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::InvalidArgument(format!("zstd level {level}: {e}")))
            })
            .transpose()?;
        // The writer is only ever given validated settings, but a frame size above the format's limit must
        // not turn into an allocation failure: capacities are capped by the limit.
        let frame_capacity = options.frame_bytes.min(MAX_FRAME_RAW_LEN as usize);
        let mut out = Vec::with_capacity(frame_capacity);
        out.extend_from_slice(MAGIC);
        out.put_u16(header.version());
        let mut body = Vec::new();
        body.put_u32(header.max_parallelism);
        body.put_u32(header.key_groups.start());
        body.put_u32(header.key_groups.len());
        body.try_put_count(header.states.len(), "state count")?;
        for s in &header.states {
            body.try_put_bytes(s.name.as_bytes(), "state name")?;
            body.put_u8(s.kind.tag());
            body.try_put_bytes(s.key_codec.as_bytes(), "key codec")?;
            body.try_put_bytes(s.namespace_codec.as_bytes(), "namespace codec")?;
            body.try_put_bytes(s.value_codec.as_bytes(), "value codec")?;
            body.try_put_bytes(s.user_key_codec.as_bytes(), "user key codec")?;
        }
        if let Some(rewrite) = &header.rewrite {
            body.try_put_count(rewrite.len(), "rewritten state count")?;
            for &state in rewrite {
                body.put_u32(state);
            }
            if !header.whole.is_empty() {
                body.put_u32(header.whole.start());
                body.put_u32(header.whole.start() + header.whole.len());
            }
        }
        out.try_put_count(body.len(), "header length")?;
        out.extend_from_slice(&body);
        out.put_u32(crc32fast::hash(&body));
        Ok(KeyedFileWriter {
            out,
            flushed: 0,
            crc: crc32fast::Hasher::new(),
            frame: Vec::with_capacity(frame_capacity + frame_capacity / 4),
            index: Vec::new(),
            group: None,
            options,
            compressor,
            records: 0,
            raw_bytes: 0,
            version: header.version(),
        })
    }

    fn offset(&self) -> u64 {
        self.flushed + self.out.len() as u64
    }

    /// Starts the records of `key_group`; groups must come in ascending order.
    pub(crate) fn begin_key_group(&mut self, key_group: u32) -> Result<()> {
        self.end_key_group()?;
        if self.index.last().is_some_and(|e| e.key_group >= key_group) {
            return Err(Error::InvalidArgument(format!(
                "key group {key_group} written out of order"
            )));
        }
        self.group = Some((key_group, self.offset()));
        Ok(())
    }

    /// Appends one record of state `state` (its index in the header) to the current key group; the three
    /// closures append the key, namespace and value bytes.
    #[inline]
    pub(crate) fn add_record(
        &mut self,
        state: u32,
        key: impl FnOnce(&mut Vec<u8>),
        namespace: impl FnOnce(&mut Vec<u8>),
        value: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        let start = self.frame.len();
        self.frame.put_u32(state);
        self.frame.put_len_prefixed(key);
        self.frame.put_len_prefixed(namespace);
        self.frame.put_len_prefixed(value);
        self.records += 1;
        self.raw_bytes += (self.frame.len() - start) as u64;
        if self.frame.len() >= self.options.frame_bytes {
            self.flush_frame()?;
        }
        Ok(())
    }

    /// Appends a tombstone of `(key, namespace)` of state `state` to the current key group: a delta
    /// file's record that removes the entry the earlier files of the chain may hold.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] in a full file, which has no tombstones.
    pub(crate) fn add_tombstone(
        &mut self,
        state: u32,
        key: impl FnOnce(&mut Vec<u8>),
        namespace: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        if self.version == VERSION {
            return Err(Error::InvalidArgument(
                "a tombstone written into a full keyed file".into(),
            ));
        }
        self.add_record(state | TOMBSTONE, key, namespace, |_| {})
    }

    /// Appends an element record of `(key, namespace)` of state `state` to the current key group: a
    /// delta file's record whose value holds what changed in the entry's list or map since its record in
    /// an earlier file of the chain ([`ElementRecord`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] in a file whose header does not allow records of that kind.
    pub(crate) fn add_element(
        &mut self,
        kind: ElementRecord,
        state: u32,
        key: impl FnOnce(&mut Vec<u8>),
        namespace: impl FnOnce(&mut Vec<u8>),
        value: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        let (bit, since, what) = match kind {
            ElementRecord::Append => (APPEND, APPEND_VERSION, "an append"),
            ElementRecord::Patch => (PATCH, PATCH_VERSION, "a patch"),
        };
        if self.version < since {
            return Err(Error::InvalidArgument(format!(
                "{what} record written into a keyed file of a version without them"
            )));
        }
        self.add_record(state | bit, key, namespace, value)
    }

    fn flush_frame(&mut self) -> Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        if self.frame.len() > MAX_FRAME_RAW_LEN as usize {
            return Err(Error::InvalidArgument(format!(
                "a record of {} bytes exceeds the frame limit of {MAX_FRAME_RAW_LEN} bytes",
                self.frame.len()
            )));
        }
        let compressed = match &mut self.compressor {
            Some(c) => Some(
                c.compress(&self.frame)
                    .map_err(|e| Error::InvalidArgument(format!("zstd compression failed: {e}")))?,
            ),
            None => None,
        };
        let (codec, stored): (u8, &[u8]) = match &compressed {
            Some(c)
                if c.len() < self.frame.len()
                    && self.frame.len() as u64 <= c.len() as u64 * MAX_EXPANSION =>
            {
                (CODEC_ZSTD, c)
            }
            _ => (CODEC_NONE, &self.frame),
        };
        self.out.put_u8(codec);
        self.out.put_u32(self.frame.len() as u32);
        self.out.put_u32(stored.len() as u32);
        self.out.put_u32(crc32fast::hash(stored));
        self.out.extend_from_slice(stored);
        self.frame.clear();
        Ok(())
    }

    /// Closes the current key group (if any) and records it in the index if it has records.
    pub(crate) fn end_key_group(&mut self) -> Result<()> {
        self.flush_frame()?;
        if let Some((key_group, offset)) = self.group.take() {
            let len = self.offset() - offset;
            if len > 0 {
                self.index.push(IndexEntry {
                    key_group,
                    offset,
                    len,
                });
            }
        }
        Ok(())
    }

    /// Bytes of the file written so far (those handed out and those still buffered), once the frame
    /// in progress is flushed: what a key group occupies is the difference across its
    /// [`KeyedFileWriter::end_key_group`].
    pub(crate) fn written(&self) -> u64 {
        self.offset()
    }

    /// Records and uncompressed record bytes written so far, `(records, bytes)`.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.records, self.raw_bytes)
    }

    /// Bytes written since the last call; the caller streams them to storage in order.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        let chunk = std::mem::take(&mut self.out);
        self.crc.update(&chunk);
        self.flushed += chunk.len() as u64;
        chunk
    }

    /// Writes index and footer; returns the last bytes and the file's summary.
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, FileSummary)> {
        self.end_key_group()?;
        let index_offset = self.offset();
        let mut index = Vec::with_capacity(4 + self.index.len() * 20);
        index.put_u32(self.index.len() as u32);
        for e in &self.index {
            index.put_u32(e.key_group);
            index.put_u64(e.offset);
            index.put_u64(e.len);
        }
        self.out.extend_from_slice(&index);
        self.out.put_u64(index_offset);
        self.out.put_u64(index.len() as u64);
        self.out.put_u32(crc32fast::hash(&index));
        self.out.put_u16(self.version);
        self.out.put_u16(0);
        self.out.extend_from_slice(MAGIC);
        let last = self.take_output();
        let summary = FileSummary {
            size: self.flushed,
            crc32: self.crc.finalize(),
            records: self.records,
            raw_bytes: self.raw_bytes,
        };
        Ok((last, summary))
    }
}

pub(crate) mod read;
#[cfg(test)]
mod tests;

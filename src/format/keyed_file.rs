//! The keyed snapshot file: key-group-partitioned records in checksummed, optionally zstd-compressed
//! frames, with a per-key-group offset index at the end. Byte layout: `docs/formats.md`, "Keyed snapshot
//! file". Both the writer and the reader are backend-independent.

use std::io::Read;

use crate::error::{Error, Result};
use crate::format::bytes::{Decoder, PutExt};
use crate::keyed::descriptor::{StateKind, StateMeta};
use crate::keyed::key_group::KeyGroupRange;

/// First 8 bytes of a keyed snapshot file, and its last 8.
pub(crate) const MAGIC: &[u8; 8] = b"SBKEYED\x01";
/// Current format version.
pub(crate) const VERSION: u16 = 1;
/// Size of the fixed footer in bytes.
pub(crate) const FOOTER_LEN: usize = 32;
/// Size of the fixed part of the header (magic, version, body length).
const HEADER_PREFIX_LEN: usize = 14;
/// Frames never claim more than this many uncompressed bytes (1 GiB).
pub(crate) const MAX_FRAME_RAW_LEN: u32 = 1 << 30;

const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// Header of a keyed snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub(crate) max_parallelism: u32,
    pub(crate) key_groups: KeyGroupRange,
    pub(crate) states: Vec<StateMeta>,
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
        out.put_u16(VERSION);
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
            Some(c) if c.len() < self.frame.len() => (CODEC_ZSTD, c),
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
        self.out.put_u16(VERSION);
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

/// Parsed footer: where the index is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Footer {
    pub(crate) index_offset: u64,
    pub(crate) index_len: u64,
    index_crc: u32,
}

/// Parses the last [`FOOTER_LEN`] bytes of a file of `file_len` bytes.
pub(crate) fn parse_footer(bytes: &[u8], file_len: u64, path: &str) -> Result<Footer> {
    if file_len < (HEADER_PREFIX_LEN + 4 + FOOTER_LEN) as u64 || bytes.len() != FOOTER_LEN {
        return Err(Error::corrupt(
            path,
            format!("truncated: {file_len} bytes is shorter than an empty snapshot"),
        ));
    }
    let mut d = Decoder::new(bytes, file_len - FOOTER_LEN as u64, path);
    let index_offset = d.u64("index offset")?;
    let index_len = d.u64("index length")?;
    let index_crc = d.u32("index crc")?;
    let version = d.u16("footer version")?;
    let reserved = d.u16("reserved")?;
    if d.take(8, "magic")? != MAGIC {
        return Err(Error::corrupt(
            path,
            "bad magic at the end: not a keyed snapshot file or truncated",
        ));
    }
    if version != VERSION {
        return Err(Error::corrupt(
            path,
            format!("unsupported format version {version}, this build reads {VERSION}"),
        ));
    }
    if reserved != 0 {
        return Err(Error::corrupt(
            path,
            format!("unknown footer flags {reserved:#x}"),
        ));
    }
    if index_offset.checked_add(index_len) != Some(file_len - FOOTER_LEN as u64) {
        return Err(Error::corrupt(
            path,
            "index does not end where the footer starts",
        ));
    }
    Ok(Footer {
        index_offset,
        index_len,
        index_crc,
    })
}

/// Parses and validates the index bytes against the footer.
pub(crate) fn parse_index(bytes: &[u8], footer: &Footer, path: &str) -> Result<Vec<IndexEntry>> {
    if crc32fast::hash(bytes) != footer.index_crc {
        return Err(Error::corrupt(path, "index checksum mismatch"));
    }
    let mut d = Decoder::new(bytes, footer.index_offset, path);
    let n = d.count("index entry count", 20)?;
    let mut index = Vec::with_capacity(n);
    let mut previous: Option<&IndexEntry> = None;
    for _ in 0..n {
        let e = IndexEntry {
            key_group: d.u32("key group")?,
            offset: d.u64("key group offset")?,
            len: d.u64("key group length")?,
        };
        let in_order =
            previous.is_none_or(|p| p.key_group < e.key_group && p.offset + p.len <= e.offset);
        let in_file = e
            .offset
            .checked_add(e.len)
            .is_some_and(|end| end <= footer.index_offset);
        if !in_order || !in_file || e.len == 0 {
            return Err(d.error(format!(
                "index entry of key group {} is out of order or out of the file",
                e.key_group
            )));
        }
        index.push(e);
        previous = index.last();
    }
    d.finish("index")?;
    Ok(index)
}

/// Length of the header given its first [`HEADER_PREFIX_LEN`] bytes; it must end before the index.
pub(crate) fn header_len(prefix: &[u8], footer: &Footer, path: &str) -> Result<u64> {
    let mut d = Decoder::new(prefix, 0, path);
    if d.take(8, "magic")? != MAGIC {
        return Err(Error::corrupt(path, "bad magic: not a keyed snapshot file"));
    }
    let version = d.u16("version")?;
    if version != VERSION {
        return Err(Error::corrupt(
            path,
            format!("unsupported format version {version}, this build reads {VERSION}"),
        ));
    }
    let len = HEADER_PREFIX_LEN as u64 + u64::from(d.u32("header length")?) + 4;
    if len > footer.index_offset {
        return Err(Error::corrupt(path, "header overlaps the data"));
    }
    Ok(len)
}

/// Bytes to read to learn the header length.
pub(crate) const HEADER_PREFIX: u64 = HEADER_PREFIX_LEN as u64;

/// Parses the whole header (`header_len` bytes from offset 0).
pub(crate) fn parse_header(bytes: &[u8], path: &str) -> Result<FileHeader> {
    let mut d = Decoder::new(bytes, 0, path);
    d.take(HEADER_PREFIX_LEN - 4, "magic and version")?;
    let body = d.bytes("header")?;
    let crc = d.u32("header crc")?;
    d.finish("header")?;
    if crc32fast::hash(body) != crc {
        return Err(Error::corrupt(path, "header checksum mismatch"));
    }
    let mut d = Decoder::new(body, HEADER_PREFIX_LEN as u64, path);
    let max_parallelism = d.u32("max parallelism")?;
    let start = d.u32("key-group start")?;
    let count = d.u32("key-group count")?;
    let key_groups = match count {
        0 => KeyGroupRange::EMPTY,
        n => start
            .checked_add(n - 1)
            .and_then(|end| KeyGroupRange::new(start, end).ok())
            .filter(|r| r.end().is_some_and(|e| e < max_parallelism))
            .ok_or_else(|| d.error("key-group range does not fit max parallelism"))?,
    };
    let n = d.count("state count", 21)?;
    let mut states = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.str("state name")?.to_string();
        let tag = d.u8("state kind")?;
        let kind =
            StateKind::from_tag(tag).ok_or_else(|| d.error(format!("unknown state kind {tag}")))?;
        states.push(StateMeta {
            name,
            kind,
            key_codec: d.str("key codec")?.to_string(),
            namespace_codec: d.str("namespace codec")?.to_string(),
            value_codec: d.str("value codec")?.to_string(),
            user_key_codec: d.str("user key codec")?.to_string(),
        });
    }
    d.finish("header body")?;
    Ok(FileHeader {
        max_parallelism,
        key_groups,
        states,
    })
}

/// Decodes the frames of one key group (`bytes` starts at file offset `offset`) into raw record bytes.
pub(crate) fn decode_frames(bytes: &[u8], offset: u64, path: &str) -> Result<Vec<u8>> {
    let mut d = Decoder::new(bytes, offset, path);
    let mut raw = Vec::new();
    while !d.is_empty() {
        let codec = d.u8("frame codec")?;
        let raw_len = d.u32("frame raw length")?;
        let stored_len = d.u32("frame stored length")? as usize;
        let crc = d.u32("frame crc")?;
        if raw_len > MAX_FRAME_RAW_LEN {
            return Err(d.error(format!("frame claims {raw_len} bytes, above the limit")));
        }
        let stored = d.take(stored_len, "frame")?;
        if crc32fast::hash(stored) != crc {
            return Err(d.error("frame checksum mismatch"));
        }
        let start = raw.len();
        match codec {
            CODEC_NONE => raw.extend_from_slice(stored),
            CODEC_ZSTD => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(stored)
                    .map_err(|e| d.error(format!("zstd: {e}")))?;
                (&mut decoder)
                    .take(u64::from(raw_len) + 1)
                    .read_to_end(&mut raw)
                    .map_err(|e| d.error(format!("zstd frame does not decode: {e}")))?;
            }
            other => return Err(d.error(format!("unknown frame codec {other}"))),
        }
        if raw.len() - start != raw_len as usize {
            return Err(d.error(format!(
                "frame decodes to {} bytes, its header says {raw_len}",
                raw.len() - start
            )));
        }
    }
    Ok(raw)
}

/// One record of a decoded key group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) state: u32,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// Iterates the records of raw bytes from [`decode_frames`].
pub(crate) fn records<'a>(
    raw: &'a [u8],
    path: &'a str,
) -> impl Iterator<Item = Result<Record<'a>>> + 'a {
    let mut d = Decoder::new(raw, 0, path);
    let mut failed = false;
    std::iter::from_fn(move || {
        if d.is_empty() || failed {
            return None;
        }
        let record = (|| {
            Ok(Record {
                state: d.u32("record state")?,
                key: d.bytes("record key")?,
                namespace: d.bytes("record namespace")?,
                value: d.bytes("record value")?,
            })
        })();
        failed = record.is_err();
        Some(record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FileHeader {
        FileHeader {
            max_parallelism: 16,
            key_groups: KeyGroupRange::new(0, 15).unwrap(),
            states: vec![StateMeta {
                name: "s".into(),
                kind: StateKind::Value,
                key_codec: "u64:be".into(),
                namespace_codec: "unit".into(),
                value_codec: "u64:be".into(),
                user_key_codec: String::new(),
            }],
        }
    }

    fn write(level: Option<i32>) -> (Vec<u8>, FileSummary) {
        let mut w = KeyedFileWriter::new(
            &header(),
            WriterOptions {
                zstd_level: level,
                frame_bytes: 64,
            },
        )
        .unwrap();
        let mut file = Vec::new();
        for kg in [1u32, 5, 9] {
            w.begin_key_group(kg).unwrap();
            for i in 0..20u64 {
                w.add_record(
                    0,
                    |b| b.extend_from_slice(&(i * 100 + u64::from(kg)).to_be_bytes()),
                    |_| {},
                    |b| b.extend_from_slice(&i.to_be_bytes()),
                )
                .unwrap();
            }
            file.extend(w.take_output());
        }
        let (last, summary) = w.finish().unwrap();
        file.extend(last);
        (file, summary)
    }

    fn read_all(file: &[u8]) -> Result<Vec<(u32, u64, u64)>> {
        let path = "test";
        let len = file.len() as u64;
        let footer = parse_footer(&file[file.len().saturating_sub(FOOTER_LEN)..], len, path)?;
        let index = parse_index(
            &file[footer.index_offset as usize..(footer.index_offset + footer.index_len) as usize],
            &footer,
            path,
        )?;
        let hl = header_len(&file[..HEADER_PREFIX_LEN], &footer, path)?;
        assert_eq!(parse_header(&file[..hl as usize], path)?, header());
        let mut out = Vec::new();
        for e in index {
            let raw = decode_frames(
                &file[e.offset as usize..(e.offset + e.len) as usize],
                e.offset,
                path,
            )?;
            for r in records(&raw, path) {
                let r = r?;
                out.push((
                    e.key_group,
                    u64::from_be_bytes(r.key.try_into().unwrap()),
                    u64::from_be_bytes(r.value.try_into().unwrap()),
                ));
            }
        }
        Ok(out)
    }

    #[test]
    fn round_trip_compressed_and_plain() {
        for level in [None, Some(1), Some(3)] {
            let (file, summary) = write(level);
            assert_eq!(summary.size, file.len() as u64);
            assert_eq!(summary.crc32, crc32fast::hash(&file));
            assert_eq!(summary.records, 60);
            let got = read_all(&file).unwrap();
            assert_eq!(got.len(), 60);
            assert_eq!(got[21], (5, 105, 1));
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let (file, _) = write(Some(1));
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x5a;
            let err = read_all(&bad).expect_err(&format!("flip at byte {i} went unnoticed"));
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (file, _) = write(Some(1));
        for len in 0..file.len() {
            assert!(
                read_all(&file[..len]).is_err(),
                "truncation to {len} bytes was accepted"
            );
        }
    }
}

//! Reading a keyed snapshot file: footer, index, header, frames and records, each checked before use
//! (format in `docs/formats.md`, "Keyed snapshot file").

use super::{
    APPEND_VERSION, CODEC_NONE, CODEC_ZSTD, DELTA_VERSION, FOOTER_LEN, FileHeader,
    HEADER_PREFIX_LEN, IndexEntry, MAGIC, MAX_EXPANSION, MAX_FRAME_RAW_LEN, PATCH_VERSION, VERSION,
    WHOLE_VERSION,
};
use crate::error::{Error, Result};
use crate::format::bytes::Decoder;
use crate::key_group::KeyGroupRange;

/// Parsed footer: where the index is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Footer {
    pub(crate) index_offset: u64,
    pub(crate) index_len: u64,
    index_crc: u32,
    /// Format version: [`VERSION`] (a full file), [`DELTA_VERSION`], [`APPEND_VERSION`],
    /// [`PATCH_VERSION`] or [`WHOLE_VERSION`] (a delta file).
    pub(crate) version: u16,
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
    if !(VERSION..=WHOLE_VERSION).contains(&version) {
        return Err(Error::corrupt(
            path,
            format!(
                "unsupported format version {version}, this build reads {VERSION} to {WHOLE_VERSION}"
            ),
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
        version,
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
    if version != footer.version {
        return Err(Error::corrupt(
            path,
            format!(
                "header says format version {version}, footer {}",
                footer.version
            ),
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
    d.take(HEADER_PREFIX_LEN - 6, "magic")?;
    let version = d.u16("version")?;
    let body = d.bytes("header")?;
    let crc = d.u32("header crc")?;
    d.finish("header")?;
    if crc32fast::hash(body) != crc {
        return Err(Error::corrupt(path, "header checksum mismatch"));
    }
    let mut d = Decoder::new(body, HEADER_PREFIX_LEN as u64, path);
    let max_parallelism = d.u32("max parallelism")?;
    let key_groups = d.key_group_range(max_parallelism)?;
    let n = d.count("state count", 21)?;
    let mut states = Vec::with_capacity(n);
    for _ in 0..n {
        states.push(d.state_meta()?);
    }
    let rewrite = if version >= DELTA_VERSION {
        let count = d.count("rewritten state count", 4)?;
        let mut rewrite = Vec::with_capacity(count);
        for _ in 0..count {
            let state = d.u32("rewritten state")?;
            if state as usize >= states.len() || rewrite.last().is_some_and(|&p| p >= state) {
                return Err(d.error(format!(
                    "rewritten state {state} is not a state of the header, or out of order"
                )));
            }
            rewrite.push(state);
        }
        Some(rewrite)
    } else {
        None
    };
    let whole = if version >= WHOLE_VERSION {
        let (first, end) = (d.u32("whole range start")?, d.u32("whole range end")?);
        let inside =
            key_groups.contains(first) && first < end && end - 1 <= key_groups.end().unwrap_or(0);
        match inside.then(|| KeyGroupRange::new(first, end - 1)) {
            Some(Ok(whole)) => whole,
            _ => {
                return Err(d.error(format!(
                    "whole range [{first}, {end}) is empty or outside the file's key groups {key_groups}"
                )));
            }
        }
    } else {
        KeyGroupRange::EMPTY
    };
    d.finish("header body")?;
    Ok(FileHeader {
        max_parallelism,
        key_groups,
        states,
        rewrite,
        appends: version >= APPEND_VERSION,
        patches: version >= PATCH_VERSION,
        whole,
    })
}

/// Decodes the frames of one key group (`bytes` starts at file offset `offset`) into raw record bytes.
///
/// The frame headers are checked first (codec, `raw_len` at most [`MAX_FRAME_RAW_LEN`], a stored frame's
/// `raw_len` equal to its stored length, a zstd frame's at most [`MAX_EXPANSION`] times it); only then is
/// the sum of the declared lengths allocated, once.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` and the offset for a bad header, checksum or payload.
/// Runs `f` with this thread's zstd decompression context. Creating a context costs more than
/// decompressing a small frame (a heap incremental chain has a frame per key group in each delta file:
/// `docs/heap-incremental.md`, "Measured"), so each thread keeps one.
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let z = match &mut *slot {
            Some(z) => z,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        f(z)
    })
}

pub(crate) fn decode_frames(bytes: &[u8], offset: u64, path: &str) -> Result<Vec<u8>> {
    let mut frames = Vec::new();
    let mut total: u64 = 0;
    let mut d = Decoder::new(bytes, offset, path);
    while !d.is_empty() {
        let codec = d.u8("frame codec")?;
        let raw_len = d.u32("frame raw length")?;
        let stored_len = d.u32("frame stored length")?;
        let crc = d.u32("frame crc")?;
        let declared_ok = match codec {
            CODEC_NONE => raw_len == stored_len,
            CODEC_ZSTD => u64::from(raw_len) <= u64::from(stored_len) * MAX_EXPANSION,
            other => return Err(d.error(format!("unknown frame codec {other}"))),
        };
        if raw_len > MAX_FRAME_RAW_LEN || !declared_ok {
            return Err(d.error(format!(
                "frame claims {raw_len} bytes from {stored_len} stored, above the limit"
            )));
        }
        let stored = d.take(stored_len as usize, "frame")?;
        frames.push((codec, raw_len, crc, stored));
        total += u64::from(raw_len);
    }
    let capacity = usize::try_from(total)
        .map_err(|_| Error::corrupt(path, "key group larger than this machine's address space"))?;
    let mut raw = Vec::with_capacity(capacity);
    let mut d = Decoder::new(bytes, offset, path);
    for (codec, raw_len, crc, stored) in frames {
        d.take(13, "frame header")?;
        if crc32fast::hash(stored) != crc {
            return Err(d.error("frame checksum mismatch"));
        }
        let start = raw.len();
        if codec == CODEC_ZSTD {
            // Appended into the capacity reserved above (no zero-fill first); a frame that decodes to
            // more than the capacity fails, one of another length than `raw_len` fails below.
            let mut cursor = std::io::Cursor::new(&mut raw);
            cursor.set_position(start as u64);
            with_decompressor(|z| z.decompress_to_buffer(stored, &mut cursor))
                .map_err(|e| d.error(format!("zstd frame does not decode: {e}")))?;
        } else {
            raw.extend_from_slice(stored);
        }
        if raw.len() - start != raw_len as usize {
            return Err(d.error(format!(
                "frame decodes to {} bytes, its header says {raw_len}",
                raw.len() - start
            )));
        }
        d.take(stored.len(), "frame")?;
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

/// Iterates the records of raw bytes from [`decode_frames`]; stops after the first error.
pub(crate) fn records<'a>(
    raw: &'a [u8],
    path: &'a str,
) -> impl Iterator<Item = Result<Record<'a>>> + 'a {
    let mut at = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if at == raw.len() || failed {
            return None;
        }
        match parse_record(raw, at) {
            Some((record, next)) => {
                at = next;
                Some(Ok(record))
            }
            None => {
                failed = true;
                Some(Err(record_error(raw, at, path)))
            }
        }
    })
}

/// The record at byte `at` of `raw` and the offset after it, or `None` if it runs past the end: one
/// bounds check per field and nothing else, since a restore parses every record at least twice.
#[inline]
fn parse_record(raw: &[u8], at: usize) -> Option<(Record<'_>, usize)> {
    let word = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = raw.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes))
    };
    let field = |at: usize| -> Option<(&[u8], usize)> {
        let start = at.checked_add(4)?;
        let end = start.checked_add(word(at)? as usize)?;
        Some((raw.get(start..end)?, end))
    };
    let state = word(at)?;
    let (key, at) = field(at + 4)?;
    let (namespace, at) = field(at)?;
    let (value, at) = field(at)?;
    Some((
        Record {
            state,
            key,
            namespace,
            value,
        },
        at,
    ))
}

/// The error of the malformed record at byte `at` of `raw`, naming its field and offset.
#[cold]
#[inline(never)]
fn record_error(raw: &[u8], at: usize, path: &str) -> Error {
    let mut d = Decoder::new(&raw[at..], at as u64, path);
    let parsed = (|| {
        d.u32("record state")?;
        d.bytes("record key")?;
        d.bytes("record namespace")?;
        d.bytes("record value")?;
        Ok(())
    })();
    parsed.err().unwrap_or_else(|| d.error("malformed record"))
}

/// Checks that `key` (codec bytes) hashes to `key_group` of `max_parallelism`, the key group whose frames
/// hold it.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` otherwise.
pub(crate) fn check_key_group(
    key: &[u8],
    max_parallelism: u32,
    key_group: u32,
    path: &str,
) -> Result<()> {
    let actual = crate::key_group::key_group_for_hash(
        crate::key_group::stable_key_hash(key),
        max_parallelism,
    );
    if actual != key_group {
        return Err(Error::corrupt(
            path,
            format!("a key of key group {actual} is stored in key group {key_group}"),
        ));
    }
    Ok(())
}

//! Entry points for `cargo fuzz` (cargo feature `fuzzing`; not a stable API). The checksum repairs let a
//! fuzzer's mutations of valid files reach the decoders instead of stopping at a CRC32 mismatch; the LSM
//! row decoders are pure Rust and need no RocksDB.

use crate::format::keyed_file::FOOTER_LEN;
use crate::format::keyed_file::read::{HEADER_PREFIX, parse_footer};

use crate::format::lsm_rows as keys;

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn put_crc(b: &mut [u8], at: usize, crc: u32) {
    if let Some(slot) = b.get_mut(at..at + 4) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Rewrites every checksum of a keyed snapshot file (`docs/formats.md`) that its structure lets one find:
/// the header's, each frame's (walking the frames of each index entry), the index's in the footer.
/// Returns the CRC32 of the whole repaired file, for its handle. Bytes that do not parse stay as they are.
pub fn repair_keyed_file(bytes: &mut [u8]) -> u32 {
    let len = bytes.len();
    // Header: magic (8), version (2), body length (4), body, CRC32.
    if let Some(body_len) = u32_at(bytes, 10) {
        let start = HEADER_PREFIX as usize;
        if let Some(end) = start.checked_add(body_len).filter(|e| e + 4 <= len) {
            let crc = crc32fast::hash(&bytes[start..end]);
            put_crc(bytes, end, crc);
        }
    }
    if len >= FOOTER_LEN {
        // The footer parses only with a correct layout; the index CRC is what it checks later.
        if let Ok(footer) = parse_footer(&bytes[len - FOOTER_LEN..], len as u64, "fuzz") {
            let (io, il) = (footer.index_offset as usize, footer.index_len as usize);
            let index = bytes[io..io + il].to_vec();
            // Index: count u32, then 20-byte entries (key group u32, offset u64, len u64).
            let count = u32_at(&index, 0).unwrap_or(0);
            for e in 0..count.min(index.len() / 20) {
                let at = 4 + e * 20;
                let field = |o: usize| {
                    index
                        .get(at + o..at + o + 8)
                        .and_then(|s| s.try_into().ok())
                        .map(u64::from_le_bytes)
                };
                let (Some(off), Some(glen)) = (field(4), field(12)) else {
                    break;
                };
                let (mut pos, end) = (
                    off as usize,
                    off.saturating_add(glen).min(io as u64) as usize,
                );
                // Frame: codec (1), raw length (4), stored length (4), CRC32 (4), payload.
                while pos < end && end - pos >= 13 {
                    let Some(stored) = u32_at(bytes, pos + 5) else {
                        break;
                    };
                    let Some(payload_end) = (pos + 13).checked_add(stored).filter(|e| *e <= end)
                    else {
                        break;
                    };
                    let crc = crc32fast::hash(&bytes[pos + 13..payload_end]);
                    put_crc(bytes, pos + 9, crc);
                    pos = payload_end;
                }
            }
            let crc = crc32fast::hash(&bytes[io..io + il]);
            put_crc(bytes, len - FOOTER_LEN + 16, crc);
        }
    }
    crc32fast::hash(bytes)
}

/// Rewrites the body checksum of a `_metadata` file (magic (8), version (2), body length (4), body,
/// CRC32), if the length fits.
pub fn repair_metadata(bytes: &mut [u8]) {
    if let Some(body_len) = u32_at(bytes, 10)
        && let Some(end) = 14usize
            .checked_add(body_len)
            .filter(|e| e + 4 <= bytes.len())
    {
        let crc = crc32fast::hash(&bytes[14..end]);
        put_crc(bytes, end, crc);
    }
}

/// Runs the RocksDB backend's row decoders on `bytes`: a row key and a timer row at both key-group widths,
/// a list value, a state's meta information. None may panic; a decoded row key re-encodes to a prefix of
/// the input, a decoded timer row to the input, and a decoded meta to bytes that decode to the same meta.
///
/// # Panics
/// When a decoder breaks one of those properties (that is the finding).
pub fn lsm_decoders(bytes: &[u8]) {
    for max_parallelism in [128, 32_768] {
        if let Ok(row) = keys::split_row_key(bytes, max_parallelism) {
            let mut again = keys::key_group_prefix(row.key_group, max_parallelism);
            keys::push_varint(row.key.len() as u32, &mut again);
            again.extend_from_slice(row.key);
            keys::push_varint(row.namespace.len() as u32, &mut again);
            again.extend_from_slice(row.namespace);
            assert!(
                bytes.starts_with(&again),
                "a row key does not re-encode to its bytes"
            );
        }
    }
    for max_parallelism in [128, 32_768] {
        if let Ok(timer) = keys::split_timer_row(bytes, max_parallelism) {
            let mut prefix = Vec::new();
            keys::key_prefix(timer.key_group, max_parallelism, timer.key, &mut prefix);
            let mut again = Vec::new();
            keys::push_timer_row(&prefix, max_parallelism, timer.timestamp, &mut again, |o| {
                o.extend_from_slice(timer.namespace)
            });
            assert_eq!(again, bytes, "a timer row does not re-encode to its bytes");
        }
    }
    if let Ok(elements) = keys::split_list(bytes) {
        let mut again = Vec::new();
        for e in &elements {
            keys::push_list_element(e, &mut again);
        }
        assert_eq!(again, bytes, "a list value does not re-encode to its bytes");
    }
    if let Ok(meta) = keys::decode_meta(bytes, "fuzz") {
        let again = keys::decode_meta(&keys::encode_meta(&meta), "fuzz").expect("re-decodes");
        assert_eq!(again, meta);
    }
}

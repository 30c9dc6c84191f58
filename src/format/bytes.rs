//! Little-endian field encoding and a bounds-checked decoder shared by the file formats.
//!
//! Decoding never trusts a length: every read checks it against the bytes that remain and reports the file
//! and the offset on failure.

use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::snapshot::state_meta::{StateKind, StateMeta};

/// Appends little-endian fields to a buffer.
pub(crate) trait PutExt {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    /// `u32` length, then the bytes.
    fn put_bytes(&mut self, v: &[u8]);
    /// `u32` length, then the UTF-8 bytes.
    #[cfg_attr(
        not(feature = "rocksdb"),
        allow(dead_code, reason = "used by the LSM backend")
    )]
    fn put_str(&mut self, v: &str);
    /// Writes a `u32` length placeholder, lets `f` append, then patches the length in.
    fn put_len_prefixed(&mut self, f: impl FnOnce(&mut Vec<u8>));
    /// `u32` length, then the bytes; [`Error::InvalidArgument`] naming `what` if longer than `u32::MAX`
    /// (never a silent truncation).
    fn try_put_bytes(&mut self, v: &[u8], what: &str) -> Result<()>;
    /// `u32` count of `n` items; [`Error::InvalidArgument`] naming `what` above `u32::MAX`.
    fn try_put_count(&mut self, n: usize, what: &str) -> Result<()>;
}

/// `n` as a `u32` length or count of a format field.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `what` if `n` exceeds `u32::MAX`.
pub(crate) fn u32_len(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::InvalidArgument(format!(
            "{what} of {n} exceeds the format's limit of {} (u32)",
            u32::MAX
        ))
    })
}

impl PutExt for Vec<u8> {
    #[inline]
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    #[inline]
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn put_bytes(&mut self, v: &[u8]) {
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v);
    }
    #[inline]
    fn put_str(&mut self, v: &str) {
        self.put_bytes(v.as_bytes());
    }
    #[inline]
    fn put_len_prefixed(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let at = self.len();
        self.extend_from_slice(&[0; 4]);
        f(self);
        // Over 4 GiB saturates (never wraps to a small, plausible length); such a record exceeds the
        // 1 GiB frame limit, which the keyed file writer then reports.
        let len = u32::try_from(self.len() - at - 4).unwrap_or(u32::MAX);
        self[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    fn try_put_bytes(&mut self, v: &[u8], what: &str) -> Result<()> {
        self.put_u32(u32_len(v.len(), what)?);
        self.extend_from_slice(v);
        Ok(())
    }
    fn try_put_count(&mut self, n: usize, what: &str) -> Result<()> {
        self.put_u32(u32_len(n, what)?);
        Ok(())
    }
}

/// Bounds-checked reader over a byte slice of the file `path`, starting at file offset `base`.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
    path: &'a str,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8], base: u64, path: &'a str) -> Self {
        Decoder {
            buf,
            pos: 0,
            base,
            path,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The error for a malformed field at the current position.
    pub(crate) fn error(&self, reason: impl std::fmt::Display) -> Error {
        Error::corrupt(
            self.path,
            format!("{reason} (at byte {})", self.base + self.pos as u64),
        )
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(n, what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The error of a field of `n` bytes past the end; apart from [`Decoder::take`] so that the reads
    /// of a record inline into their callers (a restore parses millions of them).
    #[cold]
    #[inline(never)]
    fn truncated(&self, n: usize, what: &str) -> Error {
        self.error(format!(
            "truncated: {what} needs {n} bytes, {} remain",
            self.remaining()
        ))
    }

    #[inline]
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    #[inline]
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    #[inline]
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    #[inline]
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A `u32`-length-prefixed byte string.
    #[inline]
    pub(crate) fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }
    /// A `u32`-length-prefixed UTF-8 string.
    pub(crate) fn str(&mut self, what: &str) -> Result<&'a str> {
        let bytes = self.bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| self.error(format!("{what} is not UTF-8")))
    }
    /// A key-group range stored as `start u32, count u32` (count 0: the empty range), which must fit
    /// `max_parallelism` (keyed snapshot file header, metadata handles).
    pub(crate) fn key_group_range(&mut self, max_parallelism: u32) -> Result<KeyGroupRange> {
        let start = self.u32("key-group start")?;
        match self.u32("key-group count")? {
            0 => Ok(KeyGroupRange::EMPTY),
            n => start
                .checked_add(n - 1)
                .and_then(|end| KeyGroupRange::new(start, end).ok())
                .filter(|r| r.end().is_some_and(|e| e < max_parallelism))
                .ok_or_else(|| self.error("key-group range does not fit max parallelism")),
        }
    }
    /// A state's meta information: name, kind tag, then the key, namespace, value and user-key codec ids
    /// (keyed snapshot file header, LSM state meta rows).
    pub(crate) fn state_meta(&mut self) -> Result<StateMeta> {
        let name = self.str("state name")?.to_string();
        let tag = self.u8("state kind")?;
        let kind = StateKind::from_tag(tag)
            .ok_or_else(|| self.error(format!("unknown state kind {tag}")))?;
        Ok(StateMeta {
            name,
            kind,
            key_codec: self.str("key codec")?.to_string(),
            namespace_codec: self.str("namespace codec")?.to_string(),
            value_codec: self.str("value codec")?.to_string(),
            user_key_codec: self.str("user key codec")?.to_string(),
        })
    }
    /// A count of items that each take at least `min_item_bytes`; rejects counts the rest cannot hold.
    pub(crate) fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(self.error(format!("{what} {n} exceeds the remaining bytes")));
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self, what: &str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("{} trailing bytes after {what}", self.remaining())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut buf = Vec::new();
        buf.put_u16(7);
        buf.put_str("chk");
        buf.put_len_prefixed(|b| b.put_u64(9));
        let mut d = Decoder::new(&buf, 0, "f");
        assert_eq!(d.u16("a").unwrap(), 7);
        assert_eq!(d.str("b").unwrap(), "chk");
        assert_eq!(d.bytes("c").unwrap(), &9u64.to_le_bytes());
        d.finish("all").unwrap();
        let mut short = Decoder::new(&buf[..5], 0, "f");
        short.u16("a").unwrap();
        let err = short.str("b").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(err.path(), Some("f"));
    }
}

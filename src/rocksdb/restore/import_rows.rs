//! The rows a canonical restore builds for one state, sorted and written into SST files on several
//! threads, one contiguous key-group range each (`import.rs` decodes the records into them); batch access
//! (`bulk.rs`) keeps a batch's row keys in the same form.

use std::path::{Path, PathBuf};

use rocksdb::{Options, SstFileWriter};

use crate::error::Error;
use crate::rocksdb::db::db_error;

/// Below this many rows a state is sorted and written on the calling thread alone.
const PARALLEL_FROM_ROWS: usize = 64 << 10;

/// The rows of one state: keys and values in one buffer, sorted by key before they are written.
#[derive(Default)]
pub(crate) struct Rows {
    buf: Vec<u8>,
    pub(crate) items: Vec<Row>,
}

/// One row of [`Rows`]: the first 16 bytes of its key (zero-padded, big-endian), so that sorting compares
/// integers and reads the buffer only on ties (a row key of a `u64` key in the void namespace is 11
/// bytes: a sort by full keys spent a third of a restore in `memcmp`); where the row starts in the
/// buffer, its key and value lengths.
#[derive(Clone, Copy)]
pub(crate) struct Row {
    prefix: u128,
    start: usize,
    key_len: u32,
    value_len: u32,
}

impl Rows {
    /// Empty rows with room for `rows` rows of `bytes` bytes in all.
    pub(crate) fn with_capacity(rows: usize, bytes: usize) -> Self {
        Rows {
            buf: Vec::with_capacity(bytes),
            items: Vec::with_capacity(rows),
        }
    }

    pub(crate) fn push(
        &mut self,
        key: impl FnOnce(&mut Vec<u8>),
        value: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.buf.len();
        key(&mut self.buf);
        let key_len = self.buf.len() - start;
        let mut prefix = [0u8; 16];
        let n = key_len.min(16);
        prefix[..n].copy_from_slice(&self.buf[start..start + n]);
        value(&mut self.buf);
        let value_len = self.buf.len() - start - key_len;
        self.items.push(Row {
            prefix: u128::from_be_bytes(prefix),
            start,
            key_len: key_len as u32,
            value_len: value_len as u32,
        });
    }

    fn key(&self, row: Row) -> &[u8] {
        &self.buf[row.start..row.start + row.key_len as usize]
    }

    fn value(&self, row: Row) -> &[u8] {
        let at = row.start + row.key_len as usize;
        &self.buf[at..at + row.value_len as usize]
    }

    /// Sorts `rows` by key: by prefix, then (on equal prefixes) by the whole key. A strictly smaller
    /// zero-padded prefix is a strictly smaller key, so the order is the keys' byte order.
    fn sort(&self, rows: &mut [Row]) {
        rows.sort_unstable_by(|a, b| self.cmp_keys(*a, *b));
    }

    /// The byte order of two rows' keys, by prefix first.
    fn cmp_keys(&self, a: Row, b: Row) -> std::cmp::Ordering {
        a.prefix
            .cmp(&b.prefix)
            .then_with(|| self.key(a).cmp(self.key(b)))
    }

    /// The key of the `i`-th row pushed.
    pub(crate) fn key_at(&self, i: usize) -> &[u8] {
        self.key(self.items[i])
    }

    /// Positions `0..items.len()` in key order, equal keys by position (what a batch's sorted
    /// `multi_get` and `WriteBatch` want); compares as [`Rows::sort`].
    pub(crate) fn sorted_positions(&self) -> Vec<usize> {
        let mut at: Vec<usize> = (0..self.items.len()).collect();
        at.sort_unstable_by(|&a, &b| self.cmp_keys(self.items[a], self.items[b]).then(a.cmp(&b)));
        at
    }

    /// Whether two neighbours of sorted `rows` have the same key.
    fn has_duplicate(&self, rows: &[Row]) -> bool {
        rows.windows(2)
            .any(|w| w[0].prefix == w[1].prefix && self.key(w[0]) == self.key(w[1]))
    }
}

/// Why [`write_sorted`] failed.
pub(crate) enum SortError {
    /// Two rows have the same key (two records of one key and namespace, and user key).
    Duplicate,
    /// RocksDB could not write a file.
    Other(Error),
}

/// The key group of a row from its prefix: the first byte of the key if max parallelism is at most 128,
/// else the first two (`docs/formats.md`, "RocksDB backend rows").
fn key_group(row: &Row, max_parallelism: u32) -> usize {
    let width = if max_parallelism <= 128 { 8 } else { 16 };
    (row.prefix >> (128 - width)) as usize
}

/// Sorts `rows` and writes them into SST files named `<stem>-<n>.sst`, on up to `threads` threads (the
/// calling one included), each a contiguous range of key groups with about equal rows; returns the files,
/// in key order, for one ingestion. A thread's files are removed if it fails.
///
/// # Errors
/// [`SortError::Duplicate`] if two rows have the same key; [`SortError::Other`] if RocksDB cannot write.
pub(crate) fn write_sorted(
    rows: Rows,
    options: &Options,
    stem: &Path,
    max_parallelism: u32,
    threads: usize,
) -> Result<Vec<PathBuf>, SortError> {
    let parts = if rows.items.len() < PARALLEL_FROM_ROWS {
        1
    } else {
        threads.max(1)
    };
    // Cut the key groups into `parts` contiguous ranges of about equal rows.
    let groups = max_parallelism as usize;
    let mut per_group = vec![0usize; groups + 1];
    for row in &rows.items {
        per_group[key_group(row, max_parallelism).min(groups)] += 1;
    }
    let total = rows.items.len();
    let (mut part_of, mut part, mut seen) = (vec![0usize; groups + 1], 0usize, 0usize);
    for (g, count) in per_group.iter().enumerate() {
        part_of[g] = part;
        seen += count;
        if part + 1 < parts && seen * parts >= total * (part + 1) {
            part += 1;
        }
    }
    let mut split: Vec<Vec<Row>> = vec![Vec::new(); part + 1];
    for row in &rows.items {
        split[part_of[key_group(row, max_parallelism).min(groups)]].push(*row);
    }
    let write = |n: usize, mut part: Vec<Row>| -> Result<Option<PathBuf>, SortError> {
        if part.is_empty() {
            return Ok(None);
        }
        rows.sort(&mut part);
        if rows.has_duplicate(&part) {
            return Err(SortError::Duplicate);
        }
        let sst = PathBuf::from(format!("{}-{n}.sst", stem.display()));
        let name = sst.display().to_string();
        let written = (|| {
            let mut writer = SstFileWriter::create(options);
            writer.open(&sst)?;
            for row in part {
                writer.put(rows.key(row), rows.value(row))?;
            }
            writer.finish()
        })();
        match written {
            Ok(()) => Ok(Some(sst)),
            Err(e) => {
                let _ = std::fs::remove_file(&sst);
                Err(SortError::Other(db_error(name, e)))
            }
        }
    };
    let results = crate::parallel::run_each(split, write);
    let mut files = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok(file) => files.extend(file),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        None => Ok(files),
        Some(e) => {
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rows;

    /// The prefix sort orders exactly as a sort by whole keys: keys of every length around 16 bytes,
    /// trailing zero bytes, keys that are prefixes of others, equal prefixes with different tails.
    #[test]
    fn prefix_sort_is_the_byte_order_of_whole_keys() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40usize {
            for _ in 0..25 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Few distinct bytes, so that prefixes collide often.
                keys.push((0..len).map(|i| ((x >> (i % 60)) & 3) as u8).collect());
            }
        }
        keys.push(vec![1; 16]);
        keys.push([vec![1; 16], vec![0]].concat());
        keys.push([vec![1; 16], vec![0, 0]].concat());
        keys.push(vec![1; 15]);
        let mut rows = Rows::default();
        for (i, k) in keys.iter().enumerate() {
            rows.push(
                |o| o.extend_from_slice(k),
                |o| o.extend_from_slice(&i.to_le_bytes()),
            );
        }
        let mut items = rows.items.clone();
        rows.sort(&mut items);
        rows.items = items;
        let sorted: Vec<&[u8]> = rows.items.iter().map(|r| rows.key(*r)).collect();
        let mut expected: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        expected.sort();
        assert_eq!(sorted, expected);
        for r in &rows.items {
            let i = usize::from_le_bytes(rows.value(*r).try_into().unwrap());
            assert_eq!(rows.key(*r), keys[i].as_slice(), "each key keeps its value");
        }
    }
}

//! A key group's cached timer rows: sorted, in one byte buffer (no allocation per row, where a boxed row
//! per cached timer made allocation and freeing a sixth of firing's cost).

use std::collections::VecDeque;
use std::ops::Range;

/// Bytes of rows no longer cached that a buffer keeps before it is compacted, at least (below this,
/// or below the live bytes, compaction would cost more than the memory it frees).
const MIN_DEAD_BYTES: usize = 64 << 10;

/// Sorted rows whose bytes live in one buffer: `spans[i]` is the `i`-th row's range of `bytes`. Popping or
/// removing a row leaves its bytes behind (a popped row stays readable until the next write), and they are
/// reclaimed when the cache empties and is written again, or by a compaction once they outweigh the live
/// rows and [`MIN_DEAD_BYTES`].
#[derive(Default)]
pub(super) struct Rows {
    bytes: Vec<u8>,
    spans: VecDeque<Range<usize>>,
    /// Bytes of `bytes` that no span covers.
    dead: usize,
}

impl Rows {
    /// Rows cached.
    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no row is cached.
    pub(super) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of a row `span` (from [`Rows::pop_front`], valid until the next write).
    pub(super) fn get(&self, span: Range<usize>) -> &[u8] {
        &self.bytes[span]
    }

    /// The earliest row.
    pub(super) fn front(&self) -> Option<&[u8]> {
        self.spans.front().map(|s| &self.bytes[s.clone()])
    }

    /// Takes the earliest row out; its bytes stay readable through [`Rows::get`] until the next write.
    pub(super) fn pop_front(&mut self) -> Option<Range<usize>> {
        let span = self.spans.pop_front()?;
        self.dead += span.len();
        Some(span)
    }

    /// Takes the last row out, as its own bytes.
    pub(super) fn pop_back(&mut self) -> Option<Box<[u8]>> {
        let span = self.spans.pop_back()?;
        self.dead += span.len();
        Some(self.bytes[span].into())
    }

    /// Appends `row`, which sorts after every cached row (a refill reading forward).
    pub(super) fn push_back(&mut self, row: &[u8]) {
        let span = self.store(row);
        self.spans.push_back(span);
    }

    /// Caches `row` at its place; whether it was not cached yet.
    pub(super) fn insert(&mut self, row: &[u8]) -> bool {
        match self.find(row) {
            Ok(_) => false,
            Err(at) => {
                let span = self.store(row);
                self.spans.insert(at, span);
                true
            }
        }
    }

    /// Removes `row`; whether it was cached.
    pub(super) fn remove(&mut self, row: &[u8]) -> bool {
        let Ok(at) = self.find(row) else {
            return false;
        };
        if let Some(span) = self.spans.remove(at) {
            self.dead += span.len();
        }
        true
    }

    /// Forgets every row.
    pub(super) fn clear(&mut self) {
        self.spans.clear();
        self.bytes.clear();
        self.dead = 0;
    }

    fn find(&self, row: &[u8]) -> Result<usize, usize> {
        self.spans
            .binary_search_by(|s| self.bytes[s.clone()].cmp(row))
    }

    /// Copies `row` into the buffer (emptied first when no row is cached, compacted first when dead bytes
    /// outweigh the live ones); its span.
    fn store(&mut self, row: &[u8]) -> Range<usize> {
        if self.spans.is_empty() {
            self.bytes.clear();
            self.dead = 0;
        } else if self.dead > MIN_DEAD_BYTES && self.dead > self.bytes.len() - self.dead {
            self.compact();
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(row);
        start..self.bytes.len()
    }

    /// Rewrites the buffer with the cached rows only, in order.
    fn compact(&mut self) {
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.dead);
        for span in &mut self.spans {
            let start = bytes.len();
            bytes.extend_from_slice(&self.bytes[span.clone()]);
            *span = start..bytes.len();
        }
        self.bytes = bytes;
        self.dead = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Random inserts, removes and pops against a sorted set, with enough dead bytes for compactions and
    /// every popped row read back before the next write.
    #[test]
    fn rows_match_a_sorted_set_through_pops_removes_and_compactions() {
        let mut rows = Rows::default();
        let mut model = BTreeSet::new();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut compacted = false;
        for _ in 0..200_000 {
            let before = rows.bytes.len();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let row: Vec<u8> = (x % 5_000).to_be_bytes().repeat(1 + (x >> 60) as usize);
            match (x >> 32) % 4 {
                0 | 1 => assert_eq!(rows.insert(&row), model.insert(row)),
                2 => assert_eq!(rows.remove(&row), model.remove(&row)),
                _ => {
                    let popped = rows.pop_front().map(|s| rows.get(s).to_vec());
                    assert_eq!(popped, model.pop_first());
                }
            }
            // Emptied buffers hold one row after a write; a compacted one keeps many.
            compacted |= rows.bytes.len() < before && rows.len() > 1;
            assert_eq!(rows.len(), model.len());
            assert_eq!(rows.front(), model.first().map(Vec::as_slice));
        }
        assert!(compacted);
        let all: Vec<Vec<u8>> = std::iter::from_fn(|| rows.pop_back().map(Vec::from)).collect();
        assert!(all.iter().rev().eq(model.iter()));
    }
}

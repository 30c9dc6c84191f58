//! TTL states on the RocksDB backend (`docs/ttl.md`): their row values start with the 8-byte big-endian
//! time of their last write (a list's each element), so whether a row is live is read off its bytes,
//! whatever the value's type: for key listings, canonical savepoints and the compaction filter, which
//! removes expired rows as RocksDB compacts (Flink's `FlinkCompactionFilter`, through rust-rocksdb's
//! compaction filter factory).

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::Arc;

use parking_lot::RwLock;
use rocksdb::CompactionDecision;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::format::lsm_rows::{push_list_element, split_list, split_row_key};
use crate::keyed::backend::StateId;
use crate::keyed::ttl::{STAMP_BYTES, SharedTtlTime, StateTtlConfig, TtlTimes, split_stamp};
use crate::keyed::ttl_refresh::{Mark, ReadMarks, SharedMarks};
use crate::snapshot::state_meta::StateKind;

/// Which rows of one TTL state are live: those with a part (the value; a list element) written after
/// the cutoff.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowExpiry {
    list: bool,
    cutoff: u64,
}

impl RowExpiry {
    /// The expiry of a state of `kind` with `ttl` at `times`' now (the clock read again); `None` if no row
    /// can have expired (no TTL, or now below it) or, when `for_reads`, if reads return expired values.
    pub(crate) fn at(
        kind: StateKind,
        ttl: Option<StateTtlConfig>,
        times: &TtlTimes,
        for_reads: bool,
    ) -> Option<RowExpiry> {
        Some(RowExpiry {
            list: kind == StateKind::List,
            cutoff: ttl?.cutoff(times, for_reads)?,
        })
    }

    /// The expiry of a state of `kind` with `ttl` at `now_ms`; `None` while nothing can have expired.
    fn at_ms(kind: StateKind, ttl: StateTtlConfig, now_ms: u64) -> Option<RowExpiry> {
        Some(RowExpiry {
            list: kind == StateKind::List,
            cutoff: ttl.cutoff_at(now_ms)?,
        })
    }

    /// Whether a stamped encoding (`[last update u64 BE][value]`: a value, a list element) was written
    /// after the cutoff; one too short to hold a timestamp counts as live (its read reports it corrupt).
    pub(crate) fn part_live(&self, bytes: &[u8]) -> bool {
        bytes
            .first_chunk::<STAMP_BYTES>()
            .is_none_or(|ts| u64::from_be_bytes(*ts) > self.cutoff)
    }

    /// Whether row value `value` has a live part (a malformed list counts as live: reading it fails).
    pub(crate) fn live(&self, value: &[u8]) -> bool {
        if !self.list {
            return self.part_live(value);
        }
        split_list(value).map_or(true, |elements| elements.iter().any(|e| self.part_live(e)))
    }
}

/// Which rows a key listing of a TTL state counts: live ones, and ones a queued read keeps alive
/// (`OnReadAndWrite`, `keyed/ttl_refresh.rs`).
#[derive(Debug)]
pub(crate) struct ListedRows {
    expiry: RowExpiry,
    marks: Option<ReadMarks>,
}

impl ListedRows {
    /// For state `id` of `kind` with `ttl` at `times`' now (the clock read again); `None` if every row
    /// counts (no TTL, nothing can have expired, or reads return expired values).
    pub(crate) fn at(
        id: StateId,
        kind: StateKind,
        ttl: Option<StateTtlConfig>,
        times: &TtlTimes,
    ) -> Option<ListedRows> {
        Some(ListedRows {
            expiry: RowExpiry::at(kind, ttl, times, true)?,
            marks: times.refreshes().marks_of(id.0),
        })
    }

    /// Whether the row of `key` and `ns` (as encoded in the row key) with value `value` counts.
    pub(crate) fn live(&self, key: &[u8], ns: &[u8], value: &[u8]) -> bool {
        self.expiry.live(value)
            || (self.marks.as_ref()).is_some_and(|m| m.keeps_some(key, ns, self.expiry.cutoff))
    }
}

/// The TTL of each column family of one backend, as its compaction filters read it: set when a state is
/// registered (with or without TTL; a restored state has none until then), with the backend's clock and
/// watermark, and the reads of `OnReadAndWrite` states not written yet. Cloned into every column
/// family's compaction filter factory.
#[derive(Clone, Debug)]
pub(crate) struct TtlFilters {
    time: Arc<SharedTtlTime>,
    marks: SharedMarks,
    max_parallelism: u32,
    states: Arc<RwLock<HashMap<String, FilteredState>>>,
}

/// A TTL state as its compaction filter sees it.
#[derive(Clone, Copy, Debug)]
struct FilteredState {
    id: StateId,
    kind: StateKind,
    ttl: StateTtlConfig,
}

/// The name RocksDB logs for the compaction filter of TTL states.
const FILTER_NAME: &CStr = c"sb-ttl";

impl TtlFilters {
    /// No column family with TTL yet; time read from `times`' shared clock and watermark, queued reads
    /// from its refreshes; row keys of a backend with `max_parallelism`.
    pub(crate) fn new(times: &TtlTimes, max_parallelism: u32) -> Self {
        TtlFilters {
            time: times.shared(),
            marks: times.refreshes().shared(),
            max_parallelism,
            states: Arc::default(),
        }
    }

    /// Column family `cf` holds state `id` of `kind` with `ttl` (or without: `None`) from now on.
    pub(crate) fn set(&self, cf: &str, id: StateId, kind: StateKind, ttl: Option<StateTtlConfig>) {
        let mut states = self.states.write();
        match ttl {
            Some(ttl) => states.insert(cf.to_string(), FilteredState { id, kind, ttl }),
            None => states.remove(cf),
        };
    }

    /// The compaction filter factory of column family `cf`.
    pub(crate) fn factory(&self, cf: &str) -> TtlFilterFactory {
        TtlFilterFactory {
            cf: cf.to_string(),
            filters: self.clone(),
        }
    }
}

/// Makes one [`TtlFilter`] per compaction of a column family, with the cutoff of that moment.
pub(crate) struct TtlFilterFactory {
    cf: String,
    filters: TtlFilters,
}

impl CompactionFilterFactory for TtlFilterFactory {
    type Filter = TtlFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> TtlFilter {
        let state = self.filters.states.read().get(&self.cf).copied();
        let expiry = state
            .and_then(|s| RowExpiry::at_ms(s.kind, s.ttl, self.filters.time.now_ms(s.ttl.time)));
        TtlFilter {
            expiry,
            state,
            filters: self.filters.clone(),
            changed: Vec::new(),
        }
    }

    fn name(&self) -> &CStr {
        FILTER_NAME
    }
}

/// Removes the rows of one compaction that have expired: a value or map row written at or before the
/// cutoff, a list row all of whose elements were; a list row with some live elements is rewritten
/// without the expired ones. Rows written through the merge operator (list appends) are seen once a
/// compaction has merged them into a value. What a queued read of an `OnReadAndWrite` state keeps
/// alive is kept (its new stamp is written at the backend's next record edge).
pub(crate) struct TtlFilter {
    /// `None`: the column family has no TTL, or nothing can have expired.
    expiry: Option<RowExpiry>,
    state: Option<FilteredState>,
    filters: TtlFilters,
    /// The rewritten list row of the last call (see `filter`).
    changed: Vec<u8>,
}

impl CompactionFilter for TtlFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> CompactionDecision {
        let Some(expiry) = self.expiry else {
            return CompactionDecision::Keep;
        };
        if !expiry.list {
            let kept = kept_by_read(self.state, expiry, &self.filters, key, value);
            return match expiry.part_live(value) || kept {
                true => CompactionDecision::Keep,
                false => CompactionDecision::Remove,
            };
        }
        // A malformed list is kept: reading it reports it.
        let Ok(elements) = split_list(value) else {
            return CompactionDecision::Keep;
        };
        let (state, filters) = (self.state, &self.filters);
        let live = |e: &[u8]| expiry.part_live(e) || kept_by_read(state, expiry, filters, key, e);
        let kept = elements.iter().filter(|e| live(e)).count();
        if kept == elements.len() {
            return CompactionDecision::Keep;
        }
        if kept == 0 {
            return CompactionDecision::Remove;
        }
        self.changed.clear();
        for e in elements.iter().filter(|e| live(e)) {
            push_list_element(e, &mut self.changed);
        }
        CompactionDecision::Change(self.changed_row())
    }

    fn name(&self) -> &CStr {
        FILTER_NAME
    }
}

/// Whether a queued read keeps the expired part `part` (a value, a map entry's value, a list element:
/// stamp first) of row `key` of `state` alive against `expiry`.
fn kept_by_read(
    state: Option<FilteredState>,
    expiry: RowExpiry,
    filters: &TtlFilters,
    key: &[u8],
    part: &[u8],
) -> bool {
    let Some(state) = state else { return false };
    let (Ok(row), Ok((stamp, _))) = (
        split_row_key(key, filters.max_parallelism),
        split_stamp(part),
    ) else {
        return false;
    };
    let entry = Mark {
        key: row.key,
        ns: row.namespace,
        uk: (state.kind == StateKind::Map).then_some(row.user_key),
    };
    (filters.marks).keeps(state.id.0, entry, stamp, expiry.cutoff, state.ttl.ttl_ms)
}

impl TtlFilter {
    /// The rewritten row, for `Decision::Change`, whose slice rust-rocksdb types `'static`.
    #[allow(
        unsafe_code,
        reason = "rust-rocksdb's Decision::Change takes &'static [u8]; without it a partly expired list stays whole"
    )]
    fn changed_row(&self) -> &'static [u8] {
        // SAFETY: the slice points into `self.changed`, which is neither changed nor dropped until this
        // filter is called again or dropped. rust-rocksdb's filter callback (`compaction_filter.rs`,
        // `filter_callback`) only stores the pointer and length in RocksDB's out-parameters, and RocksDB's
        // C wrapper (`db/c.cc`, `rocksdb_compactionfilter_t::Filter`) copies the bytes into its own
        // `std::string` (`new_value->assign`) as soon as the callback returns, before either can happen.
        // Nothing else sees the `'static` lifetime.
        unsafe { std::slice::from_raw_parts(self.changed.as_ptr(), self.changed.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::lsm_rows::encode_list;
    use crate::keyed::ttl::Stamped;

    #[test]
    fn a_row_is_live_while_any_part_was_written_after_the_cutoff() {
        let stamp = |v: u32, t: u64| Stamped {
            value: v,
            last_update_ms: t,
        };
        let value = RowExpiry {
            list: false,
            cutoff: 10,
        };
        let mut row = Vec::new();
        crate::codec::Codec::encode(&stamp(1, 10), &mut row);
        assert!(!value.live(&row));
        row.clear();
        crate::codec::Codec::encode(&stamp(1, 11), &mut row);
        assert!(value.live(&row) && value.live(&[1, 2]));
        let list = RowExpiry {
            list: true,
            cutoff: 10,
        };
        assert!(list.live(&encode_list(&[stamp(1, 3), stamp(2, 12)])));
        assert!(!list.live(&encode_list(&[stamp(1, 3), stamp(2, 10)])));
        assert!(
            list.live(&[0x05, 1]),
            "malformed: left for the read to report"
        );
    }
}

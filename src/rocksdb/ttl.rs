//! TTL states on the RocksDB backend (`docs/ttl.md`): their row values start with the 8-byte big-endian
//! time of their last write (a list's each element), so whether a row is live is read off its bytes,
//! whatever the value's type: for key listings now, canonical savepoints and the compaction filter.

use crate::format::lsm_rows::split_list;
use crate::keyed::ttl::{STAMP_BYTES, StateTtlConfig, TtlTimes, TtlVisibility};
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
        let ttl = ttl?;
        if for_reads && ttl.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp {
            return None;
        }
        let cutoff = times.now_ms(ttl.time, true).checked_sub(ttl.ttl_ms)?;
        Some(RowExpiry {
            list: kind == StateKind::List,
            cutoff,
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

//! The RocksDB backend's timer queues (`docs/timers.md`): the timers of a service and time domain are the
//! rows of its column family (`[key group][timestamp BE][key len][key][namespace]`, empty values), and
//! this component keeps, per owned key group, a cache of its earliest rows, as Flink's
//! `RocksDBCachingPriorityQueueSet` does, plus an ordered index of the key groups' earliest timestamps
//! (Flink's `KeyGroupPartitionedPriorityQueue`).
//!
//! A key group's cache holds exactly the live rows below its *bound* (all of them when there is no bound):
//! a refill reads forward from the bound only, with the next key group as the iterator's upper bound, so
//! the fired timers' rows, which are all below the bound, are never stepped over again (Flink's RocksDB
//! timers slowed down over their tombstones, FLINK-40584). The cache is a cache: every registration and
//! deletion goes to the DB first, so a snapshot of the DB holds the timers whatever the cache holds, and a
//! restored backend starts with empty caches.
//!
//! Registrations and deletions of a queue are held as pending writes ([`pending`]) and written as one
//! `WriteBatch` sorted by row, so the memtable takes them in key order; written when a batch is full and
//! before anything reads the column family past the cache: a refill, a count, a snapshot
//! (`TimerQueues::flush_all`). Fired timers write no tombstone each: a key group's fired rows always lie
//! below its earliest live row (a registration below the last fired row writes them off first), so one
//! range deletion per key group, from its first fired row to its earliest live row, deletes them, written
//! before a snapshot or a count and every [`FIRED_RANGE_ROWS`] fired timers (a tombstone per fired timer
//! was more than half of firing's cost; successive ranges do not overlap, which RocksDB fragments in
//! quadratic time). A dropped state's pending writes are dropped with it. A batch that fails is gone, so
//! its queue is marked lost: every later access to it and every snapshot of the backend fail
//! (`IllegalState`) until the backend is restored, rather than answer or checkpoint timers with
//! registrations or deletions missing. A refill that fails leaves the cache as it was, to be retried.

mod cache;
mod pending;

use std::collections::BTreeSet;

use rocksdb::{ColumnFamily, WriteBatch};

use crate::keyed::heads::KeyGroupHeads;

use crate::error::Result;
use crate::format::lsm_rows::{key_group_prefix, split_timer_row, timer_row_timestamp};
use crate::key_group::KeyGroupRange;
use crate::keyed::backend::{StateId, StateKey};
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::timers::Timer;
use crate::rocksdb::current::CurrentKeyPrefix;
use crate::rocksdb::db::{Db, db_error};
use crate::rocksdb::rows::scan_prefix;
use cache::Rows;
use pending::PendingWrites;

/// A queue's column family, looked up only when a refill or a write needs it: RocksDB's lookup by name
/// (a string-keyed map) on every fired timer was a twelfth of firing's instructions.
pub(crate) type CfOf<'a, 'd> = &'a dyn Fn() -> Result<&'d ColumnFamily>;

/// Rows a refill reads into a key group's cache; a cache grown by registrations below its bound to
/// twice this gives back its last rows (the bound moves down).
const CACHE_ROWS: usize = 512;

/// Rows a queue fires before their range deletions are written (also written before a snapshot or a
/// count): at most one range tombstone per key group per this many fired timers.
const FIRED_RANGE_ROWS: usize = 64 << 10;

/// Bytes of a `WriteBatch`'s header (sequence number and count).
const BATCH_HEADER: usize = 12;

/// One key group's earliest timers.
struct GroupCache {
    /// The live rows below `bound`, every one of them, sorted (a refill appends in order, firing pops the
    /// front; a registration or deletion below the bound inserts or removes at its place, within at most
    /// twice [`CACHE_ROWS`]).
    rows: Rows,
    /// `None`: `rows` is the whole key group. `Some(b)`: rows from `b` on are in the DB only.
    bound: Option<Box<[u8]>>,
}

/// The first and the last row a key group fired since its last range deletion (the last one's buffer
/// is reused as the key group fires on).
type FiredSpan = (Box<[u8]>, Vec<u8>);

/// The caches of one service and domain over the owned key groups.
struct Queue {
    /// The owned key groups and the max parallelism (to name a key group's rows).
    range: KeyGroupRange,
    max_parallelism: u32,
    groups: Vec<GroupCache>,
    /// The earliest cached timestamp of every key group with cached rows.
    heads: KeyGroupHeads,
    /// Key groups whose cache is empty but whose rows beyond the bound are unknown: refilled before the
    /// earliest timer is answered.
    unknown: BTreeSet<usize>,
    /// Writes not yet in the DB.
    pending: PendingWrites,
    /// Per key group index, the first and the last row fired since the key group's last range deletion
    /// (fired in row order: a registration below the last one writes the range deletions first). Fired
    /// rows are deleted by one range deletion per key group now and then, not a tombstone per row.
    fired_span: Vec<Option<FiredSpan>>,
    /// The key groups with a `fired_span`, and the rows fired since the last range deletions.
    fired: Vec<usize>,
    fired_rows: usize,
    /// A batch of pending writes that failed (RocksDB's error): they are gone, so the queue answers
    /// nothing more and no snapshot holds it until the backend is restored.
    lost: Option<String>,
}

/// The timer queues of one RocksDB backend, by the state id of their column family.
pub(crate) struct TimerQueues {
    queues: Vec<Option<Queue>>,
    /// The owned key groups.
    range: KeyGroupRange,
    max_parallelism: u32,
}

impl Queue {
    /// Nothing cached; every key group unknown (a new or restored DB).
    fn new(range: KeyGroupRange, max_parallelism: u32) -> Queue {
        Queue {
            range,
            max_parallelism,
            groups: range
                .iter()
                .map(|kg| GroupCache {
                    rows: Rows::default(),
                    bound: Some(key_group_prefix(kg, max_parallelism).into()),
                })
                .collect(),
            heads: KeyGroupHeads::new(range.len() as usize),
            unknown: (0..range.len() as usize).collect(),
            pending: PendingWrites::default(),
            fired_span: vec![None; range.len() as usize],
            fired: Vec::new(),
            fired_rows: 0,
            lost: None,
        }
    }

    /// Whether writes wait for the DB.
    fn dirty(&self) -> bool {
        !self.pending.is_empty() || !self.fired.is_empty()
    }

    /// The end of key group index `kg`'s rows below its earliest live row, none of them live (fired,
    /// deleted or never there): its earliest cached row, else its bound, else the next key group's first
    /// row (nothing of the key group is live).
    fn live_from(&self, kg: usize) -> Vec<u8> {
        let group = &self.groups[kg];
        match (group.rows.front(), group.bound.as_deref()) {
            (Some(row), _) | (None, Some(row)) => row.to_vec(),
            (None, None) => {
                let next = self.range.start() + kg as u32 + 1;
                key_group_prefix(next, self.max_parallelism)
            }
        }
    }

    /// Writes the pending writes to `cf`, sorted by row, and with `ranges` the range deletions of the rows
    /// fired since the last ones: per key group that fired, from its first fired row to its earliest live
    /// row (past its last fired row), so successive ranges of a key group do not overlap (RocksDB
    /// fragments overlapping range tombstones in time quadratic in their number).
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB (the writes are dropped: the cache may then disagree with the
    /// DB, so the queue is marked lost: every later access and every snapshot fails until the backend is
    /// restored).
    fn flush(&mut self, db: &Db, cf: &ColumnFamily, ranges: bool) -> Result<()> {
        if self.pending.is_empty() && (!ranges || self.fired.is_empty()) {
            return Ok(());
        }
        // Sized once: growing it by doubling copied the batch over and over.
        let mut batch = WriteBatch::with_capacity_bytes(BATCH_HEADER + self.pending.batch_bytes());
        self.pending.drain_into(cf, &mut batch);
        if ranges {
            // After the rows: a put in the batch below a key group's earliest live row is of a timer
            // fired or deleted since, which the range deletion then covers.
            for kg in std::mem::take(&mut self.fired) {
                let end = self.live_from(kg);
                if let Some((start, _)) = self.fired_span[kg].take() {
                    batch.delete_range_cf(cf, &start[..], &end[..]);
                }
            }
            self.fired_rows = 0;
        }
        write_batch(db, batch).inspect_err(|e| self.lost = Some(e.to_string()))
    }

    /// Queues a write; writes the queue's pending writes once they fill a batch.
    fn push(&mut self, db: &Db, cf: CfOf<'_, '_>, row: &[u8], put: bool) -> Result<()> {
        if self.pending.push(row, put) {
            // The row is pending and the caller's cache change comes after: a column family not found
            // here leaves them apart, as a failed write does, so it marks the queue lost the same way.
            let cf = cf().inspect_err(|e| self.lost = Some(e.to_string()))?;
            self.flush(db, cf, false)?;
        }
        Ok(())
    }

    fn head(&self, kg: usize) -> Option<u64> {
        timer_row_timestamp(self.groups[kg].rows.front()?, self.max_parallelism)
    }

    /// Re-files key group `kg` in the head index and the unknown set after its cache changed.
    fn rehead(&mut self, kg: usize) {
        self.heads.set(kg, self.head(kg));
        let group = &self.groups[kg];
        if group.rows.is_empty() && group.bound.is_some() {
            self.unknown.insert(kg);
        } else if !self.unknown.is_empty() {
            self.unknown.remove(&kg);
        }
    }

    /// [`Queue::rehead`] for key group `kg` after its earliest row was taken (it held the earliest head,
    /// and a key group with cached rows is not unknown).
    fn rehead_popped(&mut self, kg: usize) {
        self.heads.replace_first(self.head(kg));
        let group = &self.groups[kg];
        if group.rows.is_empty() && group.bound.is_some() {
            self.unknown.insert(kg);
        }
    }

    /// Reads the next rows of key group `kg` from its bound into its empty cache.
    fn refill(&mut self, db: &Db, cf: &ColumnFamily, kg: usize) -> Result<()> {
        let end = key_group_prefix(self.range.start() + kg as u32 + 1, self.max_parallelism);
        let group = &mut self.groups[kg];
        let Some(bound) = group.bound.take() else {
            return Ok(());
        };
        let mut it = db.iter_below(cf, &end);
        it.seek(&bound);
        while let Some(row) = it.key() {
            if group.rows.len() == CACHE_ROWS {
                group.bound = Some(row.into());
                break;
            }
            group.rows.push_back(row);
            it.next();
        }
        if let Err(e) = it.status() {
            // As before the refill, to be retried: an empty cache below the old bound (without the
            // bound the rows not read would count as no timers).
            group.rows.clear();
            group.bound = Some(bound);
            self.rehead(kg);
            return Err(db_error("timer refill", e));
        }
        self.rehead(kg);
        Ok(())
    }

    /// Refills every key group whose earliest rows are unknown, writing the pending writes first (fired rows
    /// are below the bounds, which only a registration moves down, writing their range deletions first).
    fn refill_unknown(&mut self, db: &Db, cf: CfOf<'_, '_>) -> Result<()> {
        if self.unknown.is_empty() {
            return Ok(());
        }
        let cf = cf()?;
        self.flush(db, cf, false)?;
        while let Some(kg) = self.unknown.pop_first() {
            self.refill(db, cf, kg)?;
        }
        Ok(())
    }

    /// Writes timer row `row` of key group index `kg` to `cf` and caches it if it is below the bound.
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB.
    fn register(&mut self, db: &Db, cf: CfOf<'_, '_>, kg: usize, row: &[u8]) -> Result<()> {
        if self.fired_span[kg]
            .as_ref()
            .is_some_and(|(_, last)| row < last.as_slice())
        {
            // Fired rows not yet range-deleted must stay below the key group's earliest live row (their
            // range ends there, and a refill starts above it): below the last of them, they go first.
            self.flush(db, cf()?, true)?;
        }
        self.push(db, cf, row, true)?;
        let group = &mut self.groups[kg];
        if group.bound.as_deref().is_some_and(|b| row >= b) || !group.rows.insert(row) {
            return Ok(());
        }
        if group.rows.len() > 2 * CACHE_ROWS {
            // Everything below the last row stays cached: it becomes the bound (a live row, so above
            // every fired row still to be range-deleted).
            group.bound = group.rows.pop_back();
        }
        self.rehead(kg);
        Ok(())
    }

    /// Deletes timer row `row` of key group index `kg` from `cf` and from the cache.
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB.
    fn delete(&mut self, db: &Db, cf: CfOf<'_, '_>, kg: usize, row: &[u8]) -> Result<()> {
        let group = &mut self.groups[kg];
        if group.bound.as_deref().is_none_or(|b| row < b) {
            // Below the bound every live row is cached: a row not cached is no timer (and no tombstone).
            if !group.rows.remove(row) {
                return Ok(());
            }
            self.rehead(kg);
        }
        self.push(db, cf, row, false)
    }
}

/// Writes one batch of a queue's pending writes (in tests, the one `tests::FAIL_FLUSH` names fails).
fn write_batch(db: &Db, batch: WriteBatch) -> Result<()> {
    #[cfg(test)]
    if tests::FAIL_FLUSH.with(|f| f.replace(false)) {
        return Err(crate::Error::local("timer writes", "injected write error"));
    }
    db.write(batch, "timer writes")
}

/// The error of every access to a timer queue, and of every snapshot, after a batch of its writes failed.
fn lost_writes(id: StateId, why: &str) -> crate::Error {
    crate::Error::IllegalState(format!(
        "the timers of state id {} lost writes ({why}): registrations or deletions are missing, so no \
         timer is answered and no snapshot is taken; restore the backend from its checkpoint",
        id.0
    ))
}

impl TimerQueues {
    /// No queue yet, for the key groups of `identity`.
    pub(crate) fn new(identity: &SubtaskIdentity) -> Self {
        TimerQueues {
            queues: Vec::new(),
            range: identity.key_groups(),
            max_parallelism: identity.max_parallelism(),
        }
    }

    /// The queue of `id`, made on first use.
    ///
    /// # Errors
    /// [`crate::Error::IllegalState`] if a batch of its writes failed ([`lost_writes`]).
    fn queue(&mut self, id: StateId) -> Result<&mut Queue> {
        let i = id.0 as usize;
        if self.queues.len() <= i {
            self.queues.resize_with(i + 1, || None);
        }
        let (range, max_parallelism) = (self.range, self.max_parallelism);
        let q = self.queues[i].get_or_insert_with(|| Queue::new(range, max_parallelism));
        match &q.lost {
            Some(why) => Err(lost_writes(id, why)),
            None => Ok(q),
        }
    }

    /// Writes every queue's pending writes (before a snapshot); `cf_of` finds a queue's column family.
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB; `cf_of`'s errors; [`crate::Error::IllegalState`] if a batch
    /// of a queue's writes failed before (the snapshot would miss them).
    pub(crate) fn flush_all<'d>(
        &mut self,
        db: &'d Db,
        cf_of: impl Fn(StateId) -> Result<&'d ColumnFamily>,
    ) -> Result<()> {
        for (i, queue) in self.queues.iter_mut().enumerate() {
            let id = StateId(i as u32);
            if let Some(why) = queue.as_ref().and_then(|q| q.lost.as_deref()) {
                return Err(lost_writes(id, why));
            }
            if let Some(q) = queue.as_mut().filter(|q| q.dirty()) {
                q.flush(db, cf_of(id)?, true)?;
            }
        }
        Ok(())
    }

    /// Forgets the cache and the pending writes of `id` (its column family is dropped).
    pub(crate) fn forget(&mut self, id: StateId) {
        if let Some(q) = self.queues.get_mut(id.0 as usize) {
            *q = None;
        }
    }

    /// The earliest timestamp of `id`'s timers.
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB (refilling a key group's cache).
    pub(crate) fn next(&mut self, db: &Db, cf: CfOf<'_, '_>, id: StateId) -> Result<Option<u64>> {
        Ok(self.known(db, cf, id)?.heads.first().map(|(ts, _)| ts))
    }

    /// The queue of `id` with every key group's earliest rows cached (unknown key groups refilled).
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB (refilling a key group's cache).
    fn known(&mut self, db: &Db, cf: CfOf<'_, '_>, id: StateId) -> Result<&mut Queue> {
        let q = self.queue(id)?;
        q.refill_unknown(db, cf)?;
        Ok(q)
    }

    /// Registers (`add`) or deletes the current key's timer `(ns, timestamp)` of `id` in `cf`.
    ///
    /// # Errors
    /// [`crate::Error::IllegalState`] without a current key; [`crate::Error::Local`] from RocksDB.
    #[allow(clippy::too_many_arguments, reason = "the timer and where it goes")]
    pub(crate) fn write<K: StateKey, N: StateKey>(
        &mut self,
        db: &Db,
        cf: CfOf<'_, '_>,
        id: StateId,
        current: &mut CurrentKeyPrefix<K>,
        ns: &N,
        timestamp: u64,
        add: bool,
    ) -> Result<()> {
        let mut row = current.take_buffer();
        let result = current
            .timer_row(ns, timestamp, self.max_parallelism, &mut row)
            .and_then(|()| {
                let kg = current
                    .key_group()
                    .map_or(0, |g| (g - self.range.start()) as usize);
                let q = self.queue(id)?;
                if add {
                    q.register(db, cf, kg, &row)
                } else {
                    q.delete(db, cf, kg, &row)
                }
            });
        current.give_back(row);
        result
    }

    /// Removes the earliest timer of `id` if its timestamp is at most `time` (deleted from `cf`) and
    /// makes its key the current key.
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB; [`crate::Error::Corrupt`] for a row or key that does not
    /// decode.
    pub(crate) fn pop_due<K: StateKey, N: StateKey>(
        &mut self,
        db: &Db,
        cf: CfOf<'_, '_>,
        id: StateId,
        time: u64,
        current: &mut CurrentKeyPrefix<K>,
    ) -> Result<Option<Timer<K, N>>> {
        let max_parallelism = self.max_parallelism;
        let q = self.known(db, cf, id)?;
        let Some((_, kg)) = q.heads.first().filter(|&(ts, _)| ts <= time) else {
            return Ok(None);
        };
        let Some(span) = q.groups[kg].rows.pop_front() else {
            return Ok(None);
        };
        q.rehead_popped(kg);
        // Readable until the key group's cache is written again.
        let row = q.groups[kg].rows.get(span);
        let parts = split_timer_row(row, max_parallelism)?;
        let (key, namespace) = (K::decode(parts.key)?, N::decode(parts.namespace)?);
        current.set_encoded(key.clone(), parts.key, parts.key_group, max_parallelism);
        let timestamp = parts.timestamp;
        // Deleted with the key group's other fired rows by one range deletion, written before a snapshot
        // or a count reads the column family, or after [`FIRED_RANGE_ROWS`] fired rows.
        match &mut q.fired_span[kg] {
            None => {
                q.fired.push(kg);
                q.fired_span[kg] = Some((row.into(), row.to_vec()));
            }
            Some((_, last)) => {
                last.clear();
                last.extend_from_slice(row);
            }
        }
        q.fired_rows += 1;
        if q.fired_rows >= FIRED_RANGE_ROWS {
            q.flush(db, cf()?, true)?;
        }
        Ok(Some(Timer {
            key,
            namespace,
            timestamp,
        }))
    }

    /// Timers of `cf` (a scan of the column family).
    ///
    /// # Errors
    /// [`crate::Error::Local`] from RocksDB.
    pub(crate) fn count(&mut self, db: &Db, cf: &ColumnFamily, id: StateId) -> Result<u64> {
        self.queue(id)?.flush(db, cf, true)?;
        let mut count = 0;
        scan_prefix(db, cf, &[], |_, _| {
            count += 1;
            Ok(true)
        })?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests;

//! State time-to-live (`docs/ttl.md`), as Flink's `StateTtlConfig`: the setting a state descriptor carries,
//! the stored form of a TTL state's values (the value and the time of its last write, inline), and the
//! times a backend reads expiry against (processing time from its [`Clock`], event time from the last
//! watermark the engine passed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::clock::{Clock, SystemClock, advance_tick, last_tick_ms, start_ticking};
use crate::codec::{Codec, Migration, WrittenCodec};
use crate::error::{Error, Result};
use crate::keyed::ttl_refresh::Refreshes;

/// When an entry of a TTL state expires, and whether a read may still see it (Flink's `StateTtlConfig`).
/// Plain data: build it with [`StateTtlConfig::new`] and struct update syntax.
///
/// An entry (a value; a list element; a map entry) written at time `t` (ms, in the chosen [`TtlTime`])
/// expires at `t + ttl_ms`: from then on no read returns it under [`TtlVisibility::NeverReturnExpired`].
/// Every write (create, update, add, put) restarts its clock; a read does too under
/// [`TtlUpdate::OnReadAndWrite`] (the default, as Flink's, is [`TtlUpdate::OnCreateAndWrite`]).
///
/// ```
/// use statebackend::keyed::{StateTtlConfig, TtlTime};
/// let ttl = StateTtlConfig { time: TtlTime::EventTime, ..StateTtlConfig::new(60_000) };
/// assert_eq!(ttl.ttl_ms, 60_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateTtlConfig {
    /// Time to live after the last write, in milliseconds of [`StateTtlConfig::time`]; at least 1
    /// (registering a state with 0 is [`Error::InvalidArgument`]).
    pub ttl_ms: u64,
    /// Whether an expired entry not yet cleaned up may still be read (default: never).
    pub visibility: TtlVisibility,
    /// Which time the entry lives in (default: processing time).
    pub time: TtlTime,
    /// Whether reads restart the clock too (default: writes only).
    pub update: TtlUpdate,
}

impl StateTtlConfig {
    /// `ttl_ms` milliseconds of processing time, expired entries never returned.
    pub fn new(ttl_ms: u64) -> Self {
        StateTtlConfig {
            ttl_ms,
            visibility: TtlVisibility::NeverReturnExpired,
            time: TtlTime::ProcessingTime,
            update: TtlUpdate::OnCreateAndWrite,
        }
    }

    /// # Errors
    /// [`Error::InvalidArgument`] naming `state` if `ttl_ms` is 0.
    pub(crate) fn check(&self, state: &str) -> Result<()> {
        if self.ttl_ms == 0 {
            return Err(Error::InvalidArgument(format!(
                "state `{state}`: a TTL of 0 ms would expire every entry as it is written"
            )));
        }
        Ok(())
    }

    /// Whether an entry last written at `last_update_ms` has expired at `now_ms`: `last_update_ms +
    /// ttl_ms <= now_ms` (as Flink's `TtlUtils.expired`; saturating, so an entry of the far future never
    /// expires by overflow).
    #[inline]
    pub(crate) fn expired(&self, last_update_ms: u64, now_ms: u64) -> bool {
        last_update_ms.saturating_add(self.ttl_ms) <= now_ms
    }

    /// `value` as written at `now_ms`.
    #[inline]
    pub(crate) fn stamp<V>(&self, value: V, now_ms: u64) -> Stamped<V> {
        Stamped {
            value,
            last_update_ms: now_ms,
        }
    }

    /// The value of a stored entry if a read at `now_ms` returns it, by reference.
    #[inline]
    pub(crate) fn read_ref<'v, V>(
        &self,
        stored: Option<&'v Stamped<V>>,
        now_ms: u64,
    ) -> Option<&'v V> {
        stored
            .filter(|s| self.visible(s.last_update_ms, now_ms))
            .map(|s| &s.value)
    }

    /// The cutoff at `now_ms`: an entry last written at or before it has expired (the same test as
    /// [`StateTtlConfig::expired`], as one comparison per entry); `None` while nothing can have expired
    /// (`now_ms` below the TTL).
    #[inline]
    pub(crate) fn cutoff_at(&self, now_ms: u64) -> Option<u64> {
        now_ms.checked_sub(self.ttl_ms)
    }

    /// The cutoff now on `times` (the clock read again; the last watermark): for cleanup, or with
    /// `for_reads` for a read, which has none when it returns expired values until they are cleaned up.
    pub(crate) fn cutoff(&self, times: &TtlTimes, for_reads: bool) -> Option<u64> {
        if for_reads && self.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp {
            return None;
        }
        self.cutoff_at(times.now_ms(self.time))
    }

    /// The time a value restored without a stamp is given when this TTL is switched on across a restore
    /// (`keyed/ttl_switch.rs`), so it lives a full TTL from the restore: processing time from the clock;
    /// event time from the last watermark or, before the first one, the clock's time (event times are
    /// taken to be epoch milliseconds; if they are not, such values outlive their TTL rather than expire
    /// at the first watermark).
    pub(crate) fn restored_at(&self, times: &TtlTimes) -> u64 {
        match times.now_ms(self.time) {
            0 => times.now_ms(TtlTime::ProcessingTime),
            now => now,
        }
    }

    /// Whether a read at `now_ms` returns an entry last written at `last_update_ms`.
    #[inline]
    pub(crate) fn visible(&self, last_update_ms: u64, now_ms: u64) -> bool {
        self.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp
            || !self.expired(last_update_ms, now_ms)
    }
}

/// What restarts an entry's time to live (Flink's `StateTtlConfig.UpdateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TtlUpdate {
    /// Creating and writing it (value update, list add or update, map put, reduce, aggregate add).
    #[default]
    OnCreateAndWrite,
    /// Also reading it: a read that returns a value, list elements or map entries stamps them with the
    /// read's time, as a write would (Flink's `OnReadAndWrite`). Reads borrow the backend shared, so the
    /// new stamps are written when the backend is next borrowed mutably (a new current key, a write to a
    /// TTL state, a snapshot); until then every read path sees them (`docs/ttl.md`). A read that restarts
    /// something costs a write (on RocksDB a read and a write of the row), as Flink's.
    OnReadAndWrite,
}

/// Whether reads return entries that expired but are still stored (Flink's `StateVisibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TtlVisibility {
    /// An expired entry is never returned (it reads as absent).
    #[default]
    NeverReturnExpired,
    /// An expired entry is returned until a cleanup removes it (fewer checks; the entry may outlive its
    /// TTL by the time until the next cleanup).
    ReturnExpiredIfNotCleanedUp,
}

/// The time an entry's TTL is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TtlTime {
    /// The backend's clock ([`KeyedStateBackend::set_clock`](crate::KeyedStateBackend::set_clock),
    /// the system clock unless another is set), read at each access to the state (on the system clock
    /// one relaxed load of its clock thread's tick, at most a millisecond behind).
    #[default]
    ProcessingTime,
    /// The last watermark the engine passed to
    /// [`KeyedStateBackend::set_ttl_watermark`](crate::KeyedStateBackend::set_ttl_watermark) (0 before
    /// the first): an entry lives `ttl_ms` of event time past the watermark at its last write. Flink's
    /// TTL knows processing time only (FLINK-12005).
    EventTime,
}

/// A stored value of a TTL state: the value and the time of its last write (ms, in the state's
/// [`TtlTime`]), inline (no allocation of its own on the heap backend). Its codec is `ttl(<value codec>)`:
/// the 8-byte big-endian timestamp, then the value's encoding (`docs/formats.md`). The last write's time
/// rather than the expiry time is stored, so a TTL changed across a restore applies to every restored
/// entry without a rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<V> {
    /// The user's value.
    pub value: V,
    /// When it was last written, in ms of the state's time.
    pub last_update_ms: u64,
}

/// Bytes of the timestamp in front of a stamped value's encoding.
pub(crate) const STAMP_BYTES: usize = 8;

impl<V: Codec + 'static> Codec for Stamped<V> {
    const ID: &'static str = "ttl";

    /// `ttl(<V's codec id>)`.
    fn codec_id() -> String {
        format!("ttl({})", V::codec_id())
    }

    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.last_update_ms.to_be_bytes());
        self.value.encode(out);
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let (ts, value) = split_stamp(bytes)?;
        Ok(Stamped {
            value: V::decode(value)?,
            last_update_ms: ts,
        })
    }

    /// A stamp in front of a value `V` migrates from (`ttl(u32:be)` read as `ttl(u64:be)`); a value
    /// stored without a stamp is read by the state's registration (TTL switched on: `keyed/ttl_switch.rs`).
    fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
        stamped_migration_from::<V>(written)
    }
}

/// What [`Stamped`]'s codec reads: a stamp in front of another value codec's bytes (`ttl(<x>)` with `x`
/// not `V`'s identity), through `V`'s migration from `x`.
pub(crate) fn stamped_migration_from<V: Codec + 'static>(
    written: &WrittenCodec<'_>,
) -> Option<Migration<Stamped<V>>> {
    let inner = stamped_inner(written.id)?;
    let value = V::migration_from(&WrittenCodec::parse(inner))?;
    Some(Arc::new(move |bytes: &[u8]| {
        let (ts, rest) = split_stamp(bytes)?;
        Ok(Stamped {
            value: value(rest)?,
            last_update_ms: ts,
        })
    }))
}

/// `<x>` of a stored identity `ttl(<x>)`.
pub(crate) fn stamped_inner(stored: &str) -> Option<&str> {
    stored.strip_prefix("ttl(")?.strip_suffix(')')
}

/// A stamped value's timestamp and the value's bytes.
///
/// # Errors
/// [`Error::Corrupt`] if `bytes` is shorter than the stamp.
pub(crate) fn split_stamp(bytes: &[u8]) -> Result<(u64, &[u8])> {
    match bytes.split_first_chunk::<STAMP_BYTES>() {
        Some((ts, rest)) => Ok((u64::from_be_bytes(*ts), rest)),
        None => Err(Error::corrupt(
            "<ttl value>",
            format!(
                "{} bytes, shorter than the {STAMP_BYTES}-byte timestamp",
                bytes.len()
            ),
        )),
    }
}

/// The times a backend's TTL states expire against: its clock (processing time), read at each access
/// to a TTL state, and the last event-time watermark the engine passed. A component of each backend,
/// injected through `set_clock`; what background threads read of it (RocksDB's compaction filter) is
/// [`SharedTtlTime`].
#[derive(Debug)]
pub struct TtlTimes {
    clock: Arc<dyn Clock>,
    /// Whether `clock` is the default [`SystemClock`].
    system_clock: bool,
    /// Whether processing time is the system clock's thread tick ([`last_tick_ms`], inlined): the system
    /// clock, once a processing-time TTL state started its thread.
    ticking: bool,
    /// Whether records are counted (while ticking, or for the heap's incremental cleanup).
    counting: bool,
    /// Records counted (for the exact reading every [`EXACT_READ_EVERY`]).
    records: u32,
    /// The greatest watermark passed (ms), 0 before the first.
    watermark_ms: u64,
    /// The same clock and watermark for other threads.
    shared: Arc<SharedTtlTime>,
    /// Reads of `OnReadAndWrite` states whose new stamps are not written yet (shared with RocksDB's
    /// compaction filter).
    refreshes: Refreshes,
}

impl Default for TtlTimes {
    fn default() -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        TtlTimes {
            clock: clock.clone(),
            system_clock: true,
            ticking: false,
            counting: false,
            records: 0,
            watermark_ms: 0,
            shared: Arc::new(SharedTtlTime {
                clock: RwLock::new(clock),
                watermark_ms: AtomicU64::new(0),
            }),
            refreshes: Refreshes::default(),
        }
    }
}

/// Records between two exact readings of the clock in [`TtlTimes::on_new_key`] (and two steps of the
/// heap's incremental cleanup).
pub(crate) const EXACT_READ_EVERY: u32 = 1 << 10;

/// A backend's TTL times as other threads read them (RocksDB's compaction filter): its clock and its last
/// watermark, kept in step by [`TtlTimes`].
#[derive(Debug)]
pub(crate) struct SharedTtlTime {
    clock: RwLock<Arc<dyn Clock>>,
    watermark_ms: AtomicU64,
}

impl SharedTtlTime {
    /// Now in `time` (ms): the clock read now, or the last watermark.
    #[cfg_attr(
        not(feature = "rocksdb"),
        allow(
            dead_code,
            reason = "only RocksDB's compaction filter reads it from another thread"
        )
    )]
    pub(crate) fn now_ms(&self, time: TtlTime) -> u64 {
        match time {
            TtlTime::ProcessingTime => self.clock.read().now_ms_coarse(),
            TtlTime::EventTime => self.watermark_ms.load(Ordering::Acquire),
        }
    }
}

impl TtlTimes {
    /// Reads of `OnReadAndWrite` states not written yet (`keyed/ttl_refresh.rs`).
    #[inline]
    pub(crate) fn refreshes(&self) -> &Refreshes {
        &self.refreshes
    }

    /// Reads processing time from `clock` from now on.
    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        *self.shared.clock.write() = clock.clone();
        self.clock = clock;
        self.system_clock = false;
        self.ticking = false;
    }

    /// Moves the event time of TTL states to `watermark_ms` (a smaller watermark than one passed
    /// before is ignored: watermarks do not go back).
    pub(crate) fn set_watermark(&mut self, watermark_ms: u64) {
        self.watermark_ms = self.watermark_ms.max(watermark_ms);
        (self.shared.watermark_ms).fetch_max(watermark_ms, Ordering::AcqRel);
    }

    /// The clock and watermark for other threads, kept in step with these.
    #[cfg_attr(
        not(feature = "rocksdb"),
        allow(
            dead_code,
            reason = "only RocksDB's compaction filter reads it from another thread"
        )
    )]
    pub(crate) fn shared(&self) -> Arc<SharedTtlTime> {
        self.shared.clone()
    }

    /// A state living in `time` was registered: a processing-time state on the system clock starts its
    /// clock thread and reads its tick from now on.
    pub(crate) fn watch(&mut self, time: TtlTime) {
        if time == TtlTime::ProcessingTime && self.system_clock && !self.ticking {
            self.ticking = start_ticking();
            self.counting |= self.ticking;
        }
    }

    /// The current key changed (a new record). Returns whether this record is a [`EXACT_READ_EVERY`]th
    /// one (counted while ticking or once [`TtlTimes::count_records`] asked: the heap's incremental
    /// cleanup runs on them); while ticking, such a record also moves the tick to an exact reading of the
    /// system clock (so that a tick that fell behind, its thread not scheduled, lags by that many records
    /// at most).
    #[inline]
    pub(crate) fn on_new_key(&mut self) -> bool {
        if !self.counting {
            return false;
        }
        self.records = self.records.wrapping_add(1);
        let every = self.records.is_multiple_of(EXACT_READ_EVERY);
        if every && self.ticking {
            advance_tick(SystemClock.now_ms());
        }
        every
    }

    /// Records are counted from now on, so that [`TtlTimes::on_new_key`] tells every 1,024th.
    pub(crate) fn count_records(&mut self) {
        self.counting = true;
    }

    /// Now in `time` (ms): the clock's coarse reading ([`Clock::now_ms_coarse`]; on the system clock one
    /// relaxed load of its tick), or the last watermark in event time. Read at each access to a TTL state
    /// rather than sampled once per record: a copy stored per record cost a heap TTL write up to a sixth
    /// of its time in one build (`docs/ttl.md`).
    #[inline]
    pub(crate) fn now_ms(&self, time: TtlTime) -> u64 {
        match time {
            TtlTime::ProcessingTime if self.ticking => last_tick_ms(),
            TtlTime::ProcessingTime => self.clock.now_ms_coarse(),
            TtlTime::EventTime => self.watermark_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_stamped_value_is_its_timestamp_then_the_value_and_short_bytes_are_corrupt() {
        let s = Stamped {
            value: 7u32,
            last_update_ms: 0x0102_0304_0506_0708,
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 7]);
        assert_eq!(Stamped::<u32>::decode(&out).unwrap(), s);
        assert!(matches!(
            Stamped::<u32>::decode(&out[..7]),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(Stamped::<u64>::codec_id(), "ttl(u64:be)");
    }

    #[test]
    fn expiry_is_at_last_update_plus_ttl_and_never_by_overflow() {
        let ttl = StateTtlConfig::new(100);
        assert!(!ttl.expired(1_000, 1_099));
        assert!(ttl.expired(1_000, 1_100));
        assert!(!ttl.expired(u64::MAX - 5, u64::MAX - 1));
        let lax = StateTtlConfig {
            visibility: TtlVisibility::ReturnExpiredIfNotCleanedUp,
            ..ttl
        };
        assert!(lax.visible(1_000, 5_000) && !ttl.visible(1_000, 5_000));
        assert!(StateTtlConfig::new(0).check("s").is_err());
    }

    #[test]
    fn processing_time_is_read_at_each_access_and_watermarks_do_not_go_back() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_millis(500)));
        let mut times = TtlTimes::default();
        times.set_clock(clock.clone());
        times.watch(TtlTime::ProcessingTime);
        assert_eq!(times.now_ms(TtlTime::ProcessingTime), 500);
        clock.advance(Duration::from_millis(10));
        assert_eq!(times.now_ms(TtlTime::ProcessingTime), 510);
        assert_eq!(times.now_ms(TtlTime::EventTime), 0);
        times.set_watermark(40);
        times.set_watermark(30);
        assert_eq!(times.now_ms(TtlTime::EventTime), 40);
        let shared = times.shared();
        assert_eq!(shared.now_ms(TtlTime::EventTime), 40);
        assert_eq!(shared.now_ms(TtlTime::ProcessingTime), 510);
        times.set_clock(Arc::new(ManualClock::new(UNIX_EPOCH)));
        assert_eq!(
            shared.now_ms(TtlTime::ProcessingTime),
            0,
            "a new clock is seen by other threads"
        );
    }

    #[test]
    fn the_system_clock_is_its_ticks_and_a_tick_left_behind_catches_up_within_1024_records() {
        let mut times = TtlTimes::default();
        times.watch(TtlTime::ProcessingTime);
        assert!(times.ticking, "the clock thread starts on this machine");
        let before = SystemClock.now_ms();
        let now = times.now_ms(TtlTime::ProcessingTime);
        assert!(now + 1_000 >= before && now <= SystemClock.now_ms());
        // A tick that lags (its thread not scheduled) is moved to an exact reading by the 1,024th record.
        let exact_at_start = SystemClock.now_ms();
        for _ in 0..EXACT_READ_EVERY {
            let _ = times.on_new_key();
        }
        assert!(times.now_ms(TtlTime::ProcessingTime) >= exact_at_start);
    }
}

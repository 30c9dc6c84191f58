//! Timers kept by the state backend (as Flink's `InternalTimerService`): per timer service and time domain a
//! set of `(key, namespace, timestamp)`, partitioned by the key's key group like keyed state, snapshotted
//! with it and restored at any parallelism. Firing is bounded and resumable: an engine fires at most `max`
//! timers per call and processes barriers between calls (FLINK-20217), and a call that left due timers
//! says so ([`Fired::More`]), so none is skipped at the end of input (FLINK-39481). Design:
//! `docs/timers.md`.

use std::marker::PhantomData;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::keyed::backend::{KeyedStateBackend, StateId, StateKey};
use crate::snapshot::state_meta::{StateKind, StateMeta};

/// Prefix of the state names under which timers are stored: `_timer/<service>/<domain>`. No other state
/// may take such a name.
pub(crate) const TIMER_STATE_PREFIX: &str = "_timer/";

/// The codec id recorded as the value codec of a timer state: the timestamp as 8 bytes big-endian.
pub(crate) const TIMESTAMP_CODEC: &str = "timestamp-ms-u64-be";

/// A time domain of a timer service (as Flink's `TimeDomain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Timers fire when the watermark reaches them.
    EventTime,
    /// Timers fire when the processing-time clock reaches them.
    ProcessingTime,
}

impl TimeDomain {
    /// The last part of the domain's state name (`event` or `processing`).
    pub fn as_str(self) -> &'static str {
        match self {
            TimeDomain::EventTime => "event",
            TimeDomain::ProcessingTime => "processing",
        }
    }
}

/// The name of the state holding the timers of service `service` in `domain`.
pub(crate) fn timer_state_name(service: &str, domain: TimeDomain) -> String {
    format!("{TIMER_STATE_PREFIX}{service}/{}", domain.as_str())
}

/// The error of registering a state of kind [`StateKind::Timers`] as a state: timers come from a
/// timer service.
pub(crate) fn timers_not_a_state(name: &str) -> crate::Error {
    crate::Error::InvalidArgument(format!(
        "state `{name}`: timers are registered through a timer service, not as a keyed state"
    ))
}

/// What a snapshot records about the timers of one service and domain: kind [`StateKind::Timers`], the
/// key and namespace codecs, the timestamp as the value codec.
pub(crate) fn timer_state_meta<K: Codec, N: Codec>(service: &str, domain: TimeDomain) -> StateMeta {
    StateMeta {
        name: timer_state_name(service, domain),
        kind: StateKind::Timers,
        key_codec: K::codec_id(),
        namespace_codec: N::codec_id(),
        value_codec: TIMESTAMP_CODEC.to_string(),
        user_key_codec: String::new(),
    }
}

/// Refuses a keyed state named like timers (`_timer/...`): only a timer service may own such a name.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the state.
pub(crate) fn check_state_name(meta: &StateMeta) -> Result<()> {
    if meta.kind != StateKind::Timers && meta.name.starts_with(TIMER_STATE_PREFIX) {
        return Err(Error::InvalidArgument(format!(
            "state name `{}` is reserved for timer services (prefix `{TIMER_STATE_PREFIX}`)",
            meta.name
        )));
    }
    Ok(())
}

/// Describes a timer service with namespaces of type `N` (as Flink's `getInternalTimerService(name,
/// namespaceSerializer, ...)`): its timers are stored as the states `_timer/<name>/event` and
/// `_timer/<name>/processing`.
pub struct TimerServiceDescriptor<N> {
    pub(crate) name: String,
    _types: PhantomData<fn() -> N>,
}

impl<N> TimerServiceDescriptor<N> {
    /// A timer service named `name` (unique within an operator; `/` is allowed).
    pub fn new(name: impl Into<String>) -> Self {
        TimerServiceDescriptor {
            name: name.into(),
            _types: PhantomData,
        }
    }
}

/// One fired timer: the key it was registered under (the current key while it fires), its namespace and
/// its timestamp (ms, the engine's time scale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N> {
    /// The key the timer was registered under.
    pub key: K,
    /// The namespace it was registered in (a window, `VoidNamespace`, ...).
    pub namespace: N,
    /// When it fires.
    pub timestamp: u64,
}

/// What a bounded firing call left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// `max` timers fired and due ones remain: call again (after processing barriers and records).
    More,
    /// No timer at or before the time remains.
    Done,
}

/// The handle of a timer service, obtained with [`KeyedStateBackend::timer_service`]; like a state
/// object, it takes the backend as an argument. Timers are registered and deleted under the backend's
/// current key; registering a timer twice is one timer, deleting an absent one does nothing.
#[derive(Debug)]
pub struct TimerService<N> {
    event: StateId,
    processing: StateId,
    _types: PhantomData<fn() -> N>,
}

impl<N> Clone for TimerService<N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<N> Copy for TimerService<N> {}

impl<N: StateKey> TimerService<N> {
    pub(crate) fn new(event: StateId, processing: StateId) -> Self {
        TimerService {
            event,
            processing,
            _types: PhantomData,
        }
    }

    /// The state id of `domain`'s timers.
    fn id(&self, domain: TimeDomain) -> StateId {
        match domain {
            TimeDomain::EventTime => self.event,
            TimeDomain::ProcessingTime => self.processing,
        }
    }

    /// Registers a timer of the current key in `namespace` firing at `timestamp` (ms) in `domain`; a
    /// timer already there stays one timer.
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a current key; [`Error::InvalidArgument`] if the handle is not
    /// this backend's; [`Error::Local`] from RocksDB.
    pub fn register<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: u64,
    ) -> Result<()> {
        backend.timer_register(self.id(domain), namespace, timestamp)
    }

    /// [`TimerService::register`] in event time.
    ///
    /// # Errors
    /// As [`TimerService::register`].
    pub fn register_event_time<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: u64,
    ) -> Result<()> {
        self.register(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// [`TimerService::register`] in processing time.
    ///
    /// # Errors
    /// As [`TimerService::register`].
    pub fn register_processing_time<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: u64,
    ) -> Result<()> {
        self.register(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// Deletes the current key's timer in `namespace` at `timestamp` in `domain`, if there is one.
    ///
    /// # Errors
    /// As [`TimerService::register`].
    pub fn delete<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: u64,
    ) -> Result<()> {
        backend.timer_delete(self.id(domain), namespace, timestamp)
    }

    /// The earliest timestamp of `domain`'s timers (any key), for an engine that schedules wake-ups.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the handle is not this backend's; [`Error::Local`] from RocksDB.
    pub fn next_timer<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
    ) -> Result<Option<u64>> {
        backend.timer_next::<N>(self.id(domain))
    }

    /// Timers of `domain` (all keys), for statistics and tests.
    ///
    /// # Errors
    /// As [`TimerService::next_timer`].
    pub fn len<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
    ) -> Result<u64> {
        backend.timer_count::<N>(self.id(domain))
    }

    /// Fires at most `max` timers of `domain` with timestamps up to `time` (inclusive), earliest first
    /// (ties in an order of the backend's choosing): each is removed, its key made the current key, and
    /// `on_timer` called with it, so the handler reads and writes that key's state and may register timers
    /// (the same one again included: still due, it fires again, in this call or a later one, as Flink's
    /// `advanceWatermark` loop does).
    ///
    /// Returns [`Fired::More`] if `max` timers fired and due ones remain: the engine processes what it
    /// must (barriers first) and calls again. At the end of input an engine calls with `u64::MAX` until
    /// [`Fired::Done`]. The current key afterwards is the last fired timer's.
    ///
    /// # Errors
    /// Those of [`TimerService::next_timer`], and the first error of `on_timer`, which stops the call (the
    /// timer it was given is already removed).
    pub fn fire_until<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        time: u64,
        max: usize,
        mut on_timer: impl FnMut(&mut B, Timer<K, N>) -> Result<()>,
    ) -> Result<Fired> {
        let id = self.id(domain);
        for _ in 0..max {
            match backend.timer_pop_due::<N>(id, time)? {
                Some(timer) => on_timer(backend, timer)?,
                None => return Ok(Fired::Done),
            }
        }
        Ok(match backend.timer_next::<N>(id)? {
            Some(next) if next <= time => Fired::More,
            _ => Fired::Done,
        })
    }

    /// [`TimerService::fire_until`] in event time, up to the watermark `watermark`.
    ///
    /// # Errors
    /// As [`TimerService::fire_until`].
    pub fn fire_event_time<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        watermark: u64,
        max: usize,
        on_timer: impl FnMut(&mut B, Timer<K, N>) -> Result<()>,
    ) -> Result<Fired> {
        self.fire_until(backend, TimeDomain::EventTime, watermark, max, on_timer)
    }

    /// [`TimerService::fire_until`] in processing time, up to `now`.
    ///
    /// # Errors
    /// As [`TimerService::fire_until`].
    pub fn fire_processing_time<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        now: u64,
        max: usize,
        on_timer: impl FnMut(&mut B, Timer<K, N>) -> Result<()>,
    ) -> Result<Fired> {
        self.fire_until(backend, TimeDomain::ProcessingTime, now, max, on_timer)
    }
}

//! The simulation's object store: `InMemory` behind seeded faults (fail before or after the effect, lose
//! a delete, delete and then fail, fail a listing, let a write land only after its caller gave up, delay
//! to reorder completions) and crashes at a chosen call (the caller's future is dropped), with
//! `last_modified` from its own clock (the simulated clock plus a skew), and optionally ignoring
//! `PutMode::Create` as some S3-compatible servers do.
//!
//! A fault decision is a hash of the seed, the operation, the path with its random parts blanked out, and
//! how often that (operation, path) was seen: it does not depend on how concurrent futures interleave, so
//! a seed replays the same faults.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use parking_lot::Mutex;
use statebackend::{Clock, ManualClock};
use tokio::sync::Notify;

/// The named steps of the multi-step protocols a crash can cut (`docs/protocol.md`).
pub const CRASH_POINTS: [&str; 7] = [
    "reserve", "upload", "metadata", "stats", "register", "subsume", "delete",
];

/// How faults are drawn.
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    /// Per call: the call fails (before any effect).
    pub fail: f64,
    /// Per write or delete: it takes effect, then reports an error (a timeout after the server applied
    /// it; S3's bulk delete is not retried).
    pub fail_after_effect: f64,
    /// Per write: it reports an error at once and takes effect later, after the caller's read-back saw
    /// nothing (a request stuck in a proxy).
    pub land_later: f64,
    /// Per delete: it reports success and does nothing.
    pub lose_delete: f64,
    /// Per call: it yields to other futures a few times first (reorders concurrent completions).
    pub delay: f64,
    /// Per listing: it fails.
    pub fail_list: f64,
}

/// A crash armed for the current operation: at its `at`-th store call, or at its first call of protocol
/// step `point`.
#[derive(Debug, Clone, Copy)]
pub enum CrashAt {
    Call(u32),
    Point(&'static str),
}

/// A crash armed for the current operation.
#[derive(Debug, Clone, Copy)]
struct CrashPlan {
    at: CrashAt,
    after_effect: bool,
}

#[derive(Default)]
struct State {
    rates: Option<FaultRates>,
    occurrences: HashMap<(u8, String), u32>,
    crash: Option<CrashPlan>,
    calls: u32,
    crashed_at: Option<&'static str>,
    written: HashMap<String, SystemTime>,
    /// `_metadata` objects whose put reported success to its caller.
    metadata_ok: std::collections::HashSet<String>,
    /// Writes that reported an error and land later ([`SimStore::land_delayed`]).
    delayed: Vec<(Path, PutPayload, PutOptions)>,
    /// The store's clock runs this many seconds ahead of the simulated clock (behind if negative).
    skew_secs: i64,
    /// Creates overwrite (`If-None-Match: *` ignored).
    ignore_create: bool,
    /// Events counted by kind (faults injected).
    counts: std::collections::BTreeMap<&'static str, u32>,
}

/// The fault-injecting store.
pub struct SimStore {
    inner: Arc<InMemory>,
    shared: Arc<Shared>,
}

/// What the store and its `'static` streams share.
struct Shared {
    seed: u64,
    clock: Arc<ManualClock>,
    state: Mutex<State>,
    crash: Mutex<Arc<Notify>>,
}

impl fmt::Debug for SimStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimStore(seed {})", self.shared.seed)
    }
}

impl fmt::Display for SimStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimStore")
    }
}

/// Operations, for fault decisions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put = 1,
    Get = 2,
    Delete = 3,
    List = 4,
}

/// `path` with every run of 12 or more hex digits (random ids) replaced by `#`.
fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut run = String::new();
    for c in path.chars().chain(std::iter::once('/')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if run.len() >= 12 {
            out.push('#');
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// The protocol step a call belongs to.
fn crash_point(op: Op, path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or("");
    match op {
        Op::Put if name == "_trigger" => "reserve",
        Op::Put if name == "_metadata" => "metadata",
        Op::Put if name == "_stats" => "stats",
        Op::Put => "upload",
        Op::Delete if name == "_metadata" => "subsume",
        Op::Delete => "delete",
        Op::List => "register",
        Op::Get => "read",
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What a call meets.
enum Decision {
    Proceed { delay: u32 },
    Fail,
    FailAfterEffect,
    LandLater,
    LoseDelete,
    Crash { after_effect: bool },
}

impl SimStore {
    pub fn new(seed: u64, clock: Arc<ManualClock>) -> Arc<Self> {
        Arc::new(SimStore {
            inner: Arc::new(InMemory::new()),
            shared: Arc::new(Shared {
                seed,
                clock,
                state: Mutex::new(State::default()),
                crash: Mutex::new(Arc::new(Notify::new())),
            }),
        })
    }

    /// The store without faults (for the invariant checks).
    pub fn inner(&self) -> Arc<InMemory> {
        self.inner.clone()
    }

    /// Faults from now on (`None`: none).
    pub fn set_faults(&self, rates: Option<FaultRates>) {
        self.shared.state.lock().rates = rates;
    }

    /// The store's clock runs `secs` seconds ahead of the simulated one (behind if negative).
    pub fn set_skew(&self, secs: i64) {
        self.shared.state.lock().skew_secs = secs;
    }

    /// Whether creates overwrite from now on (a store that ignores `If-None-Match: *`).
    pub fn set_ignore_create(&self, ignore: bool) {
        self.shared.state.lock().ignore_create = ignore;
    }

    /// Faults injected so far, by kind.
    pub fn fault_counts(&self) -> std::collections::BTreeMap<&'static str, u32> {
        self.shared.state.lock().counts.clone()
    }

    /// Lands the writes that reported an error earlier (each as its caller asked: a create onto an
    /// existing object does nothing); returns their paths.
    pub async fn land_delayed(&self) -> Vec<String> {
        let delayed = std::mem::take(&mut self.shared.state.lock().delayed);
        let mut landed = Vec::new();
        for (location, payload, opts) in delayed {
            if self.inner.put_opts(&location, payload, opts).await.is_ok() {
                self.stamp(&location);
                landed.push(location.to_string());
            }
        }
        landed
    }

    /// Crashes the caller at its `at`-th store call from now (1-based) or at its first call of a protocol
    /// step, before or after that call's effect; the returned signal fires when it does.
    pub fn arm_crash(&self, at: CrashAt, after_effect: bool) -> Arc<Notify> {
        let mut s = self.shared.state.lock();
        s.crash = Some(CrashPlan { at, after_effect });
        s.calls = 0;
        s.crashed_at = None;
        let signal = Arc::new(Notify::new());
        *self.shared.crash.lock() = signal.clone();
        signal
    }

    /// Whether a put of checkpoint `id`'s metadata reported success to its caller.
    pub fn metadata_written(&self, id: u64) -> bool {
        self.shared
            .state
            .lock()
            .metadata_ok
            .contains(&format!("job/chk-{id}/_metadata"))
    }

    /// Disarms the crash; returns the crash point if it fired.
    pub fn disarm(&self) -> Option<&'static str> {
        let mut s = self.shared.state.lock();
        s.crash = None;
        s.crashed_at.take()
    }

    fn decide(&self, op: Op, path: &Path) -> Decision {
        self.shared.decide(op, path)
    }

    async fn crash_now(&self) -> ! {
        self.shared.crash_now().await
    }

    fn stamp(&self, location: &Path) {
        self.shared.stamp(location);
    }

    fn restamp(&self, meta: ObjectMeta) -> ObjectMeta {
        self.shared.restamp(meta)
    }

    fn injected(location: &Path, what: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "SimStore",
            source: format!("injected {what} on {location}").into(),
        }
    }

    async fn delay(n: u32) {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }
}

impl Shared {
    fn decide(&self, op: Op, path: &Path) -> Decision {
        let mut s = self.state.lock();
        s.calls += 1;
        let point = crash_point(op, path.as_ref());
        if let Some(plan) = s.crash
            && match plan.at {
                CrashAt::Call(n) => s.calls == n,
                CrashAt::Point(p) => p == point,
            }
        {
            s.crash = None;
            s.crashed_at = Some(point);
            return Decision::Crash {
                after_effect: plan.after_effect,
            };
        }
        let Some(rates) = s.rates else {
            return Decision::Proceed { delay: 0 };
        };
        let key = (op as u8, normalize(path.as_ref()));
        let n = s.occurrences.entry(key.clone()).or_default();
        *n += 1;
        let mut h = splitmix(self.seed ^ splitmix(u64::from(*n) ^ ((op as u64) << 56)));
        for b in key.1.bytes() {
            h = splitmix(h ^ u64::from(b));
        }
        let unit = |h: u64| (h >> 11) as f64 / (1u64 << 53) as f64;
        let (roll, roll2) = (unit(h), unit(splitmix(h)));
        let writes = matches!(op, Op::Put | Op::Delete);
        let fail = if op == Op::List {
            rates.fail_list
        } else {
            rates.fail
        };
        let decision = if roll < fail {
            Decision::Fail
        } else if writes && roll < fail + rates.fail_after_effect {
            Decision::FailAfterEffect
        } else if op == Op::Put && roll < fail + rates.fail_after_effect + rates.land_later {
            Decision::LandLater
        } else if op == Op::Delete && roll < fail + rates.fail_after_effect + rates.lose_delete {
            Decision::LoseDelete
        } else if roll2 < rates.delay {
            Decision::Proceed {
                delay: 1 + (splitmix(h ^ 7) % 6) as u32,
            }
        } else {
            Decision::Proceed { delay: 0 }
        };
        let counted = match (&decision, op) {
            (Decision::Fail, Op::List) => Some("list failed"),
            (Decision::FailAfterEffect, Op::Delete) => Some("delete failed after it took effect"),
            (Decision::FailAfterEffect, _) => Some("write failed after it took effect"),
            (Decision::LandLater, _) => Some("write landed late"),
            (Decision::LoseDelete, _) => Some("delete lost"),
            _ => None,
        };
        if let Some(kind) = counted {
            *s.counts.entry(kind).or_default() += 1;
        }
        decision
    }

    /// The store's time.
    fn now(&self, skew_secs: i64) -> SystemTime {
        let t = self.clock.now();
        if skew_secs >= 0 {
            t + std::time::Duration::from_secs(skew_secs as u64)
        } else {
            t - std::time::Duration::from_secs(skew_secs.unsigned_abs())
        }
    }

    async fn crash_now(&self) -> ! {
        let signal = self.crash.lock().clone();
        signal.notify_one();
        std::future::pending::<()>().await;
        unreachable!("a crashed call never returns")
    }

    fn stamp(&self, location: &Path) {
        let mut state = self.state.lock();
        let now = self.now(state.skew_secs);
        state.written.insert(location.as_ref().to_string(), now);
    }

    fn restamp(&self, mut meta: ObjectMeta) -> ObjectMeta {
        if let Some(t) = self.state.lock().written.get(meta.location.as_ref()) {
            meta.last_modified = (*t).into();
        }
        meta
    }
}

#[async_trait::async_trait]
impl ObjectStore for SimStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let opts = if self.shared.state.lock().ignore_create
            && matches!(opts.mode, object_store::PutMode::Create)
        {
            PutOptions {
                mode: object_store::PutMode::Overwrite,
                ..opts
            }
        } else {
            opts
        };
        let decision = self.decide(Op::Put, location);
        match decision {
            Decision::Fail => Err(Self::injected(location, "write failure")),
            Decision::FailAfterEffect => {
                self.inner.put_opts(location, payload, opts).await?;
                self.stamp(location);
                Err(Self::injected(
                    location,
                    "error after the write took effect",
                ))
            }
            Decision::LandLater => {
                self.shared
                    .state
                    .lock()
                    .delayed
                    .push((location.clone(), payload, opts));
                Err(Self::injected(location, "timeout (the write lands later)"))
            }
            Decision::Crash { after_effect } => {
                if after_effect && self.inner.put_opts(location, payload, opts).await.is_ok() {
                    self.stamp(location);
                }
                self.crash_now().await
            }
            Decision::LoseDelete | Decision::Proceed { .. } => {
                if let Decision::Proceed { delay } = decision {
                    Self::delay(delay).await;
                }
                let result = self.inner.put_opts(location, payload, opts).await;
                if result.is_ok() {
                    self.stamp(location);
                    if location.as_ref().ends_with("/_metadata") {
                        let mut state = self.shared.state.lock();
                        state.metadata_ok.insert(location.as_ref().to_string());
                    }
                }
                result
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        // Files of the simulation stay below the buffered writer's 8 MiB: single puts.
        self.stamp(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.decide(Op::Get, location) {
            Decision::Fail => Err(Self::injected(location, "read failure")),
            Decision::Crash { .. } => self.crash_now().await,
            Decision::Proceed { delay } => {
                Self::delay(delay).await;
                let mut result = self.inner.get_opts(location, options).await?;
                result.meta = self.restamp(result.meta);
                Ok(result)
            }
            _ => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self.decide(Op::Get, location) {
            Decision::Fail => Err(Self::injected(location, "read failure")),
            Decision::Crash { .. } => self.crash_now().await,
            _ => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let shared = self.shared.clone();
        let inner = self.inner.clone();
        locations
            .then(move |location| {
                let (shared, inner) = (shared.clone(), inner.clone());
                async move {
                    let location = location?;

                    let delete_one = |location: Path| {
                        let inner = inner.clone();
                        async move {
                            let mut one =
                                inner.delete_stream(futures::stream::iter([Ok(location)]).boxed());
                            one.next().await.expect("one result")
                        }
                    };
                    match shared.decide(Op::Delete, &location) {
                        Decision::Fail => Err(SimStore::injected(&location, "delete failure")),
                        Decision::LoseDelete => Ok(location),
                        Decision::Crash { after_effect } => {
                            if after_effect {
                                let _ = delete_one(location).await;
                            }
                            shared.crash_now().await
                        }
                        Decision::Proceed { delay } => {
                            SimStore::delay(delay).await;
                            delete_one(location).await
                        }
                        Decision::FailAfterEffect => {
                            delete_one(location.clone()).await?;
                            Err(SimStore::injected(
                                &location,
                                "error after the delete took effect",
                            ))
                        }
                        Decision::LandLater => delete_one(location).await,
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let shared = self.shared.clone();
        let at = prefix.cloned().unwrap_or_default();
        let listed = {
            let shared = shared.clone();
            self.inner
                .list(prefix)
                .map(move |m| m.map(|m| shared.restamp(m)))
        };
        futures::stream::once(async move {
            match shared.decide(Op::List, &at) {
                Decision::Fail => {
                    futures::stream::once(
                        async move { Err(SimStore::injected(&at, "list failure")) },
                    )
                    .boxed()
                }
                Decision::Crash { .. } => shared.crash_now().await,
                _ => listed.boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let at = prefix.cloned().unwrap_or_default();
        match self.decide(Op::List, &at) {
            Decision::Fail => Err(Self::injected(&at, "list failure")),
            Decision::Crash { .. } => self.crash_now().await,
            Decision::Proceed { delay } => {
                Self::delay(delay).await;
                self.inner.list_with_delimiter(prefix).await
            }
            _ => self.inner.list_with_delimiter(prefix).await,
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.stamp(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.stamp(to);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn random_parts_of_names_are_blanked() {
        assert_eq!(
            normalize("job/shared/op-0-0123456789abcdef-7-fedcba9876543210-000012.sst"),
            "job/shared/op-0-#-7-#-000012.sst"
        );
        assert_eq!(normalize("job/chk-12/_metadata"), "job/chk-12/_metadata");
    }
}

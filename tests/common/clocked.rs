//! An in-memory `ObjectStore` whose clock is a test's: every write is stamped with the `ManualClock`'s
//! time (plus a skew, the store's clock running ahead or behind the coordinator's), and listings and
//! reads report those stamps as `last_modified`. The orphan sweep measures ages on the store's clock, so a
//! test ages files by advancing the clock.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use parking_lot::Mutex;
use statebackend::{CheckpointStorage, Clock, ManualClock};

/// The store.
pub struct ClockedStore {
    inner: InMemory,
    clock: Arc<ManualClock>,
    /// Added to the clock's time: the store's clock is this far ahead (negative: behind), in seconds.
    skew_secs: Mutex<i64>,
    stamps: Arc<Mutex<HashMap<String, SystemTime>>>,
}

impl fmt::Debug for ClockedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClockedStore")
    }
}

impl fmt::Display for ClockedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClockedStore")
    }
}

impl ClockedStore {
    pub fn new(clock: Arc<ManualClock>) -> Arc<Self> {
        Arc::new(ClockedStore {
            inner: InMemory::new(),
            clock,
            skew_secs: Mutex::new(0),
            stamps: Arc::default(),
        })
    }

    /// The store's clock runs `secs` seconds ahead of the test's clock (behind if negative).
    #[allow(
        dead_code,
        reason = "used by some of the test crates that include this module"
    )]
    pub fn set_skew(&self, secs: i64) {
        *self.skew_secs.lock() = secs;
    }

    fn now(&self) -> SystemTime {
        let skew = *self.skew_secs.lock();
        let t = self.clock.now();
        if skew >= 0 {
            t + Duration::from_secs(skew as u64)
        } else {
            t - Duration::from_secs(skew.unsigned_abs())
        }
    }

    fn stamp(&self, location: &Path) {
        let now = self.now();
        self.stamps.lock().insert(location.to_string(), now);
    }

    fn restamp(stamps: &Mutex<HashMap<String, SystemTime>>, mut meta: ObjectMeta) -> ObjectMeta {
        if let Some(t) = stamps.lock().get(meta.location.as_ref()) {
            meta.last_modified = (*t).into();
        }
        meta
    }
}

/// Storage of job `job_id` on a [`ClockedStore`] driven by a new manual clock; the store itself too.
#[allow(
    dead_code,
    reason = "used by some of the test crates that include this module"
)]
pub fn clocked_storage(job_id: &str) -> (CheckpointStorage, Arc<ManualClock>, Arc<ClockedStore>) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let store = ClockedStore::new(clock.clone());
    let storage = CheckpointStorage::new(store.clone(), job_id).unwrap();
    (storage, clock, store)
}

#[async_trait::async_trait]
impl ObjectStore for ClockedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.stamp(location);
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.stamp(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut r = self.inner.get_opts(location, options).await?;
        r.meta = Self::restamp(&self.stamps, r.meta);
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let stamps = self.stamps.clone();
        self.inner
            .list(prefix)
            .map(move |m| m.map(|m| Self::restamp(&stamps, m)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
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

//! An `ObjectStore` wrapper that fails writes and deletes of chosen paths on demand (fault injection).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use parking_lot::Mutex;

/// What happens to an operation on a path that matches an armed pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writes fail before taking effect.
    FailWrite,
    /// Writes take effect, then report an error (a timeout after the server applied the request).
    FailWriteAfterEffect,
    /// Deletes fail before taking effect.
    FailDelete,
    /// Deletes report success but do nothing (a lost delete).
    LoseDelete,
    /// Deletes take effect, then report an error (S3's bulk delete timing out after it was applied).
    DeleteThenFail,
    /// Listings below a matching prefix fail (a burst of 503s).
    FailList,
    /// Reads (and heads) of matching objects fail.
    FailRead,
    /// Creates (`PutMode::Create`) of matching objects overwrite an existing object instead of refusing
    /// (an S3-compatible server that ignores `If-None-Match: *`).
    IgnoreCreate,
}

/// Injects [`Fault`]s into operations on paths containing an armed pattern, and counts the bytes reads
/// return; over an in-memory store, or any other.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    armed: Mutex<Vec<(String, Fault)>>,
    /// Bytes returned by reads (whole objects and ranges) since the last `take_bytes_read`.
    bytes_read: std::sync::atomic::AtomicU64,
}

impl FaultyStore {
    /// Over a new in-memory store.
    pub fn new() -> Arc<Self> {
        Self::over(Arc::new(object_store::memory::InMemory::new()))
    }

    /// Over `inner` (an S3 client, say).
    #[allow(
        dead_code,
        reason = "used by some of the crates that include this module"
    )]
    pub fn over(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            armed: Mutex::default(),
            bytes_read: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Writes to paths containing `pattern` fail from now on.
    pub fn fail_writes_to(&self, pattern: &str) {
        self.arm(pattern, Fault::FailWrite);
    }

    /// Operations on paths containing `pattern` meet `fault` from now on.
    pub fn arm(&self, pattern: &str, fault: Fault) {
        self.armed.lock().push((pattern.to_string(), fault));
    }

    /// Bytes returned by reads since the last call (and resets the count).
    #[allow(
        dead_code,
        reason = "used by some of the test crates that include this module"
    )]
    pub fn take_bytes_read(&self) -> u64 {
        self.bytes_read
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// Operations succeed again.
    pub fn heal(&self) {
        self.armed.lock().clear();
    }

    fn fault(&self, location: &Path, kinds: &[Fault]) -> Option<Fault> {
        self.armed
            .lock()
            .iter()
            .find(|(p, f)| location.as_ref().contains(p.as_str()) && kinds.contains(f))
            .map(|(_, f)| *f)
    }

    fn injected(location: &Path, what: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "FaultyStore",
            source: format!("injected {what} failure on {location}").into(),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore")
    }
}

const WRITES: [Fault; 2] = [Fault::FailWrite, Fault::FailWriteAfterEffect];

impl FaultyStore {
    fn list_fault(&self, prefix: Option<&Path>) -> Option<object_store::Error> {
        let at = prefix.cloned().unwrap_or_default();
        self.fault(&at, &[Fault::FailList])
            .map(|_| Self::injected(&at, "list"))
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let ignore = self.fault(location, &[Fault::IgnoreCreate]).is_some()
            && matches!(opts.mode, object_store::PutMode::Create);
        let opts = if ignore {
            PutOptions {
                mode: object_store::PutMode::Overwrite,
                ..opts
            }
        } else {
            opts
        };
        match self.fault(location, &WRITES) {
            Some(Fault::FailWrite) => Err(Self::injected(location, "write")),
            Some(_) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(Self::injected(location, "write (after it took effect)"))
            }
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if self.fault(location, &[Fault::FailWrite]).is_some() {
            return Err(Self::injected(location, "write"));
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if self.fault(location, &[Fault::FailRead]).is_some() {
            return Err(Self::injected(location, "read"));
        }
        // A `head` request (how `ObjectStoreExt::head` is made) returns no bytes.
        let head = options.head;
        let got = self.inner.get_opts(location, options).await?;
        if !head {
            self.bytes_read.fetch_add(
                got.range.end - got.range.start,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(got)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let got = self.inner.get_ranges(location, ranges).await?;
        let n: usize = got.iter().map(Bytes::len).sum();
        self.bytes_read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let armed = self.armed.lock().clone();
        let inner = self.inner.clone();
        locations
            .then(move |location| {
                let armed = armed.clone();
                let inner = inner.clone();
                async move {
                    let location = location?;
                    let fault = armed
                        .iter()
                        .find(|(p, f)| {
                            location.as_ref().contains(p.as_str())
                                && matches!(
                                    f,
                                    Fault::FailDelete | Fault::LoseDelete | Fault::DeleteThenFail
                                )
                        })
                        .map(|(_, f)| *f);
                    let delete = |location: Path| {
                        let mut one =
                            inner.delete_stream(futures::stream::iter([Ok(location)]).boxed());
                        async move { one.next().await.unwrap() }
                    };
                    match fault {
                        Some(Fault::FailDelete) => Err(Self::injected(&location, "delete")),
                        Some(Fault::DeleteThenFail) => {
                            delete(location.clone()).await?;
                            Err(Self::injected(&location, "delete (after it took effect)"))
                        }
                        Some(_) => Ok(location),
                        None => delete(location).await,
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.list_fault(prefix) {
            Some(e) => futures::stream::once(async move { Err(e) }).boxed(),
            None => self.inner.list(prefix),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        if let Some(e) = self.list_fault(prefix) {
            return Err(e);
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        if self.fault(to, &WRITES).is_some() {
            return Err(Self::injected(to, "write"));
        }
        self.inner.rename_opts(from, to, options).await
    }
}

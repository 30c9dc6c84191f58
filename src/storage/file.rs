//! One stored file: written as a stream ([`FileWriter`], a single put below one part, a multipart upload
//! above) and read by ranges ([`RangeSource`]). A multipart upload that does not complete is aborted,
//! also when its writer is dropped, and an abort that fails is kept in the storage's [`AbortQueue`] and
//! retried, since the store bills and keeps incomplete uploads until they are aborted
//! (`docs/faults.md`, "Multipart uploads").

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, UploadPart};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Bytes of one part of a multipart upload (S3's minimum is 5 MiB); a file that ends below it is one put.
pub(crate) const PART_BYTES: usize = 8 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A multipart upload whose abort failed, with the path it was to write.
type PendingAbort = (Path, Box<dyn MultipartUpload>);

/// Multipart uploads whose abort failed (the store was down, say), retried by
/// [`AbortQueue::retry`] at the next upload and at every orphan sweep. Shared by a storage's clones.
#[derive(Debug, Default, Clone)]
pub(crate) struct AbortQueue {
    uploads: Arc<Mutex<Vec<PendingAbort>>>,
}

impl AbortQueue {
    fn push(&self, path: Path, upload: Box<dyn MultipartUpload>) {
        self.uploads.lock().push((path, upload));
    }

    /// Uploads still waiting for a successful abort.
    pub(crate) fn len(&self) -> usize {
        self.uploads.lock().len()
    }

    /// Tries every queued abort once; those that fail again stay queued. Returns how many were aborted.
    pub(crate) async fn retry(&self) -> usize {
        let queued = std::mem::take(&mut *self.uploads.lock());
        let mut aborted = 0;
        for (path, mut upload) in queued {
            match upload.abort().await {
                Ok(()) => aborted += 1,
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "aborting an incomplete multipart upload failed again; retried later");
                    self.push(path, upload);
                }
            }
        }
        aborted
    }

    /// Aborts `upload` now; queues it if that fails.
    async fn abort(&self, path: Path, mut upload: Box<dyn MultipartUpload>) {
        if let Err(e) = upload.abort().await {
            tracing::warn!(path = %path, error = %e, "aborting a multipart upload failed; retried later");
            self.push(path, upload);
        }
    }

    /// Aborts `upload` from a `Drop`: on the current tokio runtime if there is one (queued if that
    /// fails), else queued for the next retry.
    fn abort_detached(&self, path: Path, upload: Box<dyn MultipartUpload>) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let queue = self.clone();
                rt.spawn(async move { queue.abort(path, upload).await });
            }
            Err(_) => self.push(path, upload),
        }
    }
}

/// A file being streamed to storage: bytes are buffered up to [`PART_BYTES`]; a file that ends below that
/// is one put, a larger one a multipart upload with up to four parts in flight. An upload that does not
/// complete ([`FileWriter::abort`], an error, or the writer dropped) is aborted.
pub(crate) struct FileWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    aborts: AbortQueue,
    buffer: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: FuturesUnordered<UploadPart>,
}

impl FileWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, aborts: AbortQueue) -> Self {
        FileWriter {
            store,
            path,
            aborts,
            buffer: Vec::new(),
            upload: None,
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Appends `chunk`; sends full parts.
    ///
    /// # Errors
    /// Storage errors of starting the upload or of a part (the writer should then be aborted).
    pub(crate) async fn write(&mut self, chunk: Vec<u8>) -> Result<()> {
        if self.buffer.is_empty() && chunk.len() < PART_BYTES {
            self.buffer = chunk;
        } else {
            self.buffer.extend_from_slice(&chunk);
        }
        while self.buffer.len() >= PART_BYTES {
            let rest = self.buffer.split_off(PART_BYTES);
            let part = std::mem::replace(&mut self.buffer, rest);
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        if self.upload.is_none() {
            // Aborts that failed before may go through now.
            if self.aborts.len() > 0 {
                self.aborts.retry().await;
            }
            let upload = self
                .store
                .put_multipart_opts(&self.path, Default::default())
                .await
                .map_err(|e| Error::storage(&self.path, e))?;
            self.upload = Some(upload);
        }
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.next_part_done().await?;
        }
        if let Some(upload) = &mut self.upload {
            self.in_flight
                .push(upload.put_part(PutPayload::from(Bytes::from(part))));
        }
        Ok(())
    }

    async fn next_part_done(&mut self) -> Result<()> {
        match self.in_flight.next().await {
            Some(r) => r.map_err(|e| Error::storage(&self.path, e)),
            None => Ok(()),
        }
    }

    /// Sends what is buffered and completes the file.
    ///
    /// # Errors
    /// Storage errors; the upload is then aborted (the object may or may not exist: a single put or a
    /// completion can take effect and report an error).
    pub(crate) async fn finish(mut self) -> Result<()> {
        let result = self.finish_inner().await;
        if result.is_err() {
            self.abort_now().await;
        }
        result
    }

    async fn finish_inner(&mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.buffer);
        if self.upload.is_none() {
            return self
                .store
                .put(&self.path, PutPayload::from(Bytes::from(rest)))
                .await
                .map(|_| ())
                .map_err(|e| Error::storage(&self.path, e));
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        while !self.in_flight.is_empty() {
            self.next_part_done().await?;
        }
        if let Some(upload) = &mut self.upload {
            upload
                .complete()
                .await
                .map_err(|e| Error::storage(&self.path, e))?;
        }
        self.upload = None;
        Ok(())
    }

    /// Gives up the file: aborts the multipart upload if one was started (queued for a retry if the abort
    /// fails).
    pub(crate) async fn abort(mut self) {
        self.abort_now().await;
    }

    async fn abort_now(&mut self) {
        self.in_flight.clear();
        if let Some(upload) = self.upload.take() {
            self.aborts.abort(self.path.clone(), upload).await;
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // A dropped asynchronous phase (a cancelled checkpoint) never leaves an upload open.
        if let Some(upload) = self.upload.take() {
            self.in_flight.clear();
            self.aborts.abort_detached(self.path.clone(), upload);
        }
    }
}

/// Random access to one stored file.
pub(crate) enum RangeSource {
    /// The whole file in memory (or memory-mapped).
    Bytes { bytes: Bytes, path: Path },
    /// A remote object read with range requests.
    Remote {
        store: Arc<dyn ObjectStore>,
        path: Path,
        len: u64,
    },
}

impl RangeSource {
    pub(crate) fn len(&self) -> u64 {
        match self {
            RangeSource::Bytes { bytes, .. } => bytes.len() as u64,
            RangeSource::Remote { len, .. } => *len,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            RangeSource::Bytes { path, .. } | RangeSource::Remote { path, .. } => path,
        }
    }

    /// Bytes `range` of the file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the range exceeds the file; [`Error::Storage`]/[`Error::NotFound`] from the store.
    pub(crate) async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end || range.end > self.len() {
            return Err(Error::corrupt(
                self.path(),
                format!("range {range:?} exceeds the file of {} bytes", self.len()),
            ));
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        match self {
            RangeSource::Bytes { bytes, .. } => {
                Ok(bytes.slice(range.start as usize..range.end as usize))
            }
            RangeSource::Remote { store, path, .. } => store
                .get_range(path, range)
                .await
                .map_err(|e| Error::storage(path, e)),
        }
    }

    /// Several ranges at once (coalesced by the store).
    pub(crate) async fn read_many(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self {
            RangeSource::Remote { store, path, len } => {
                if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > *len) {
                    return Err(Error::corrupt(
                        path,
                        format!("range {r:?} exceeds the file of {len} bytes"),
                    ));
                }
                store
                    .get_ranges(path, ranges)
                    .await
                    .map_err(|e| Error::storage(path, e))
            }
            RangeSource::Bytes { .. } => {
                let mut out = Vec::with_capacity(ranges.len());
                for r in ranges {
                    out.push(self.read(r.clone()).await?);
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{PutMultipartOptions, PutOptions, PutResult};

    use super::*;

    /// A store whose multipart uploads are counted (open until completed or aborted) and whose aborts fail
    /// while `down` is set.
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemory,
        open: Arc<Mutex<usize>>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    #[derive(Debug)]
    struct CountedUpload {
        inner: Box<dyn MultipartUpload>,
        open: Arc<Mutex<usize>>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait::async_trait]
    impl MultipartUpload for CountedUpload {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            self.inner.put_part(data)
        }
        async fn complete(&mut self) -> object_store::Result<PutResult> {
            let r = self.inner.complete().await;
            *self.open.lock() -= 1;
            r
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(object_store::Error::Generic {
                    store: "Counting",
                    source: "store down".into(),
                });
            }
            *self.open.lock() -= 1;
            self.inner.abort().await
        }
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            *self.open.lock() += 1;
            Ok(Box::new(CountedUpload {
                inner: self.inner.put_multipart_opts(location, opts).await?,
                open: self.open.clone(),
                down: self.down.clone(),
            }))
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn writer(store: &Arc<Counting>, aborts: &AbortQueue) -> FileWriter {
        FileWriter::new(store.clone(), Path::from("f"), aborts.clone())
    }

    /// Incomplete multipart uploads leaked in a running process: a dropped asynchronous phase never
    /// aborted its upload, and an abort tried while the store was down was never tried again.
    #[tokio::test]
    async fn dropped_and_failed_uploads_are_aborted_and_retried() {
        let store = Arc::new(Counting::default());
        let aborts = AbortQueue::default();
        let part = vec![7u8; PART_BYTES + 1];
        // Dropped mid-upload: aborted on the runtime.
        let mut w = writer(&store, &aborts);
        w.write(part.clone()).await.unwrap();
        assert_eq!(*store.open.lock(), 1);
        drop(w);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*store.open.lock(), 0, "a dropped writer aborts its upload");
        // Aborted while the store is down: queued, then retried once it is back.
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut w = writer(&store, &aborts);
        w.write(part.clone()).await.unwrap();
        w.abort().await;
        assert_eq!((*store.open.lock(), aborts.len()), (1, 1));
        assert_eq!(aborts.retry().await, 0, "still down");
        store.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(aborts.retry().await, 1);
        assert_eq!((*store.open.lock(), aborts.len()), (0, 0));
    }

    #[tokio::test]
    async fn small_files_are_one_put_and_large_ones_complete_in_order() {
        let store = Arc::new(Counting::default());
        let aborts = AbortQueue::default();
        let mut w = writer(&store, &aborts);
        w.write(b"small".to_vec()).await.unwrap();
        w.finish().await.unwrap();
        assert_eq!(*store.open.lock(), 0);
        let got = store.inner.get(&Path::from("f")).await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"small");
        let mut w = writer(&store, &aborts);
        let mut expected = Vec::new();
        for i in 0..(3 * PART_BYTES / (1 << 20) + 1) {
            let chunk = vec![i as u8; 1 << 20];
            expected.extend_from_slice(&chunk);
            w.write(chunk).await.unwrap();
        }
        w.finish().await.unwrap();
        assert_eq!(*store.open.lock(), 0);
        let got = store.inner.get(&Path::from("f")).await.unwrap();
        assert!(got.bytes().await.unwrap() == expected);
    }
}

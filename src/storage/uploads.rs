//! Incomplete multipart uploads under the job's prefix, found and aborted by the orphan sweep where the
//! store can list them (S3's `ListMultipartUploads`; `docs/faults.md`, "Multipart uploads"). Such an upload
//! is invisible to LIST and billed until it is aborted; a process killed mid-upload, an abort sent while
//! the store was down, or a `CreateMultipartUpload` whose answer was lost leaves one. Stores without such a
//! listing need a bucket lifecycle rule (`docs/protocol.md`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use object_store::path::Path;

use crate::error::Result;

/// One incomplete multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// The object it would create.
    pub path: Path,
    /// The store's upload id.
    pub upload_id: String,
    /// When the store started it (the store's clock).
    pub initiated: SystemTime,
}

/// A store that lists its incomplete multipart uploads and aborts one by id.
pub(crate) trait UploadLister: Send + Sync + fmt::Debug {
    /// Every incomplete upload whose object path starts with `prefix`.
    fn list<'a>(&'a self, prefix: &'a Path) -> BoxFuture<'a, Result<Vec<IncompleteUpload>>>;
    /// Aborts `upload` (an upload already gone is not an error).
    fn abort<'a>(&'a self, upload: &'a IncompleteUpload) -> BoxFuture<'a, Result<()>>;
}

/// The store's incomplete multipart uploads, where it can list them (S3); nothing elsewhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct Multipart {
    lister: Option<Arc<dyn UploadLister>>,
}

impl Multipart {
    pub(crate) fn new(lister: Option<Arc<dyn UploadLister>>) -> Self {
        Multipart { lister }
    }

    /// Aborts the incomplete multipart uploads under `root` started at least `min_age` before `now` (the
    /// store's clock), where the store can list them; returns how many. Younger ones may be uploads in
    /// flight.
    ///
    /// # Errors
    /// Storage errors while listing or aborting.
    pub(crate) async fn abort_stale(
        &self,
        root: &Path,
        min_age: Duration,
        now: SystemTime,
    ) -> Result<usize> {
        let Some(lister) = &self.lister else {
            return Ok(0);
        };
        let mut aborted = 0;
        for upload in lister.list(root).await? {
            // The store clock is a `Last-Modified` (whole seconds) and `Initiated` has milliseconds: an
            // upload begun within the clock's last second looks younger than zero, which is age zero.
            let old = now
                .duration_since(upload.initiated)
                .unwrap_or(Duration::ZERO)
                >= min_age;
            if old {
                tracing::info!(path = %upload.path, upload_id = %upload.upload_id, "aborting a stale multipart upload");
                lister.abort(&upload).await?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// Incomplete multipart uploads under `root`, where the store can list them; `None` where it cannot.
    ///
    /// # Errors
    /// Storage errors while listing.
    pub(crate) async fn incomplete(&self, root: &Path) -> Result<Option<Vec<IncompleteUpload>>> {
        match &self.lister {
            Some(lister) => lister.list(root).await.map(Some),
            None => Ok(None),
        }
    }
}

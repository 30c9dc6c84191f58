//! Opening checkpoint storage: in a local directory (the embedded default), in memory, in any object store,
//! or named by a URL, with the settings remote stores need (timeouts, retries).
//!
//! Schemes: a plain path or `file:///dir` (local directory), `memory://` (in memory), and, behind cargo
//! features, `s3://bucket/prefix` (`aws`), `gs://bucket/prefix` (`gcp`), `az://container/prefix` (`azure`).
//! Cloud stores take their credentials, region and endpoint from the usual environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` with `AWS_ALLOW_HTTP=true` for
//! an S3-compatible server on plain HTTP; `GOOGLE_*`; `AZURE_*`), as `object_store`'s `from_env` builders
//! read them.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

use object_store::local::LocalFileSystem;

use super::CheckpointStorage;
use super::durable::{self, LocalDir};
use super::file::AbortQueue;
use super::uploads::{Multipart, UploadLister};
use crate::error::{Error, Result};
use crate::ids::{IdSource, RandomIds};

/// Settings of checkpoint storage (plain data). Timeouts and retries apply to remote stores: a request
/// fails after `request_timeout`, and a failed one is retried (exponential backoff, at most `max_retries`
/// times) only while less than `retry_timeout` has passed since it was first sent. A request is thus over
/// within `retry_timeout + request_timeout`; with the defaults a hung store fails a request in 10 s (a
/// timed-out request is not retried; quick failures such as a 503 are) and a checkpoint's asynchronous
/// phase in about 20 s (its upload, then the delete of what it may have written), not minutes
/// (`object_store`'s own defaults: 30 s per request, retried for up to 3 minutes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Longest time one request may take, connection and body included (default 10 s: an 8 MiB part
    /// needs at least 0.8 MiB/s).
    pub request_timeout: Duration,
    /// Longest time to connect (default 5 s).
    pub connect_timeout: Duration,
    /// Retries of a failed request, with exponential backoff (default 3).
    pub max_retries: usize,
    /// No retry starts this long after the request was first sent (default 10 s).
    pub retry_timeout: Duration,
    /// Local directory: sync every file (and new directories) before it counts as written (default true).
    pub fsync: bool,
    /// An S3-compatible server to use instead of AWS (e.g. `http://127.0.0.1:5055`; plain HTTP is then
    /// allowed); overrides `AWS_ENDPOINT`. Default `None`.
    pub endpoint: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            fsync: true,
            endpoint: None,
        }
    }
}

impl CheckpointStorage {
    /// Storage in the local directory `dir` (created if missing), under `dir/<job_id>/`. This is the embedded
    /// default. With `settings.fsync` (the default), every file is synced to disk before it counts as
    /// written; the remote-store settings do not apply.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `dir` cannot be created or `job_id` is not a valid path segment.
    pub fn local(
        dir: impl AsRef<std::path::Path>,
        job_id: &str,
        settings: &StorageConfig,
    ) -> Result<Self> {
        let fsync = settings.fsync;
        let dir = dir.as_ref();
        durable::create_dirs(dir, fsync).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot create checkpoint directory {}: {e}",
                dir.display()
            ))
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| {
                Error::InvalidArgument(format!("checkpoint directory {}: {e}", dir.display()))
            })?
            .with_automatic_cleanup(true)
            .with_fsync(fsync);
        let fs = Arc::new(fs);
        let mut storage = CheckpointStorage::new(fs.clone(), job_id)?;
        storage.location = std::fs::canonicalize(dir)
            .ok()
            .map(|d| format!("file://{}", d.display()));
        storage.local = Some(LocalDir::new(fs, fsync));
        Ok(storage)
    }

    /// Storage in memory (tests, or jobs that only need to survive task failures within the process).
    pub fn in_memory(job_id: &str) -> Result<Self> {
        CheckpointStorage::new(Arc::new(InMemory::new()), job_id)
    }

    /// Storage in any object store (S3, GCS, Azure, ...), under `<job_id>/`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `job_id` is empty or not a valid path segment.
    pub fn new(store: Arc<dyn ObjectStore>, job_id: &str) -> Result<Self> {
        CheckpointStorage::with_prefix(store, &Path::default(), job_id)
    }

    /// Storage in any object store under `<prefix>/<job_id>/`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `job_id` is empty or not a valid path segment.
    pub fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &Path, job_id: &str) -> Result<Self> {
        let job = Path::parse(job_id)
            .ok()
            .filter(|p| p.parts().count() >= 1)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("job id `{job_id}` is not a valid path"))
            })?;
        let root: Path = prefix.parts().chain(job.parts()).collect();
        Ok(CheckpointStorage {
            store,
            root,
            local: None,
            ids: Arc::new(RandomIds),
            aborts: AbortQueue::default(),
            uploads: Multipart::default(),
            location: None,
        })
    }

    /// The same storage drawing the ids of the names it writes (uploads, coordinator and backend ids,
    /// probes) from `ids` instead of the operating system's random generator: a simulation passes a
    /// [`crate::ids::SeededIds`] so that every name follows from its seed.
    pub fn with_id_source(mut self, ids: Arc<dyn IdSource>) -> Self {
        self.ids = ids;
        self
    }

    /// Storage named by `url` (see the module docs for schemes), under `<url path>/<job_id>/`.
    ///
    /// A string without a scheme is a local path. Nothing is contacted here: a store that does not answer,
    /// or lacks conditional create, fails the coordinator's `open`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL that does not parse, an unknown scheme, a cloud scheme whose
    /// cargo feature is off, bad cloud settings, or an invalid `job_id`.
    pub fn from_url(url: &str, job_id: &str, settings: &StorageConfig) -> Result<Self> {
        let parsed = match ::url::Url::parse(url) {
            Ok(u) if u.scheme().len() > 1 => u,
            // No scheme (or a Windows drive letter): a local path.
            _ => return CheckpointStorage::local(url, job_id, settings),
        };
        let invalid =
            |what: String| Error::InvalidArgument(format!("checkpoint storage `{url}`: {what}"));
        let prefix = Path::parse(parsed.path()).map_err(|e| invalid(e.to_string()))?;
        let uploads;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| invalid("not a local path".into()))?;
                return CheckpointStorage::local(dir, job_id, settings);
            }
            // Every `memory://` storage is a store of its own.
            "memory" => {
                return CheckpointStorage::with_prefix(Arc::new(InMemory::new()), &prefix, job_id);
            }
            scheme => {
                let (store, lister) = cloud(scheme, &parsed, settings).map_err(invalid)?;
                uploads = lister;
                store
            }
        };
        let mut storage = CheckpointStorage::with_prefix(store, &prefix, job_id)?;
        storage.uploads = Multipart::new(uploads);
        storage.set_location(format!(
            "{}://{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default()
        ));
        Ok(storage)
    }
}

/// Our timeouts as `object_store` client settings (set as configuration keys, so that what the `from_env`
/// builders read, such as `AWS_ALLOW_HTTP` or a proxy, stays), and our retries.
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
fn client(
    settings: &StorageConfig,
) -> (
    [(object_store::ClientConfigKey, String); 2],
    object_store::RetryConfig,
) {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let keys = [
        (
            object_store::ClientConfigKey::Timeout,
            ms(settings.request_timeout),
        ),
        (
            object_store::ClientConfigKey::ConnectTimeout,
            ms(settings.connect_timeout),
        ),
    ];
    let retry = object_store::RetryConfig {
        max_retries: settings.max_retries,
        retry_timeout: settings.retry_timeout,
        backoff: object_store::BackoffConfig::default(),
    };
    (keys, retry)
}

/// A cloud object store and, where it can list incomplete multipart uploads, its lister.
type CloudStore = (Arc<dyn ObjectStore>, Option<Arc<dyn UploadLister>>);

/// A cloud store for `scheme` and, where it can list incomplete multipart uploads, its lister; or why not.
#[allow(unused_variables)]
fn cloud(
    scheme: &str,
    url: &::url::Url,
    settings: &StorageConfig,
) -> std::result::Result<CloudStore, String> {
    let bucket_url = format!("{scheme}://{}", url.host_str().unwrap_or_default());
    match scheme {
        #[cfg(feature = "aws")]
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let (keys, retry) = client(settings);
            // The bucket named explicitly too: `with_url` is only parsed at `build`, and the upload
            // listing reads the bucket from the builder.
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(url.host_str().unwrap_or_default())
                .with_url(bucket_url)
                .with_retry(retry);
            for (key, value) in keys {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            if let Some(endpoint) = &settings.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            let store = Arc::new(builder.clone().build().map_err(|e| e.to_string())?);
            let lister = super::s3_uploads::S3Uploads::new(
                &builder,
                store.clone(),
                settings.request_timeout,
            )?;
            Ok((store, Some(Arc::new(lister))))
        }
        #[cfg(feature = "gcp")]
        "gs" => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let (keys, retry) = client(settings);
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(bucket_url)
                .with_retry(retry);
            for (key, value) in keys {
                builder = builder.with_config(GoogleConfigKey::Client(key), value);
            }
            builder
                .build()
                .map(|s| (Arc::new(s) as Arc<dyn ObjectStore>, None))
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "azure")]
        "az" | "azure" | "abfs" | "abfss" => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let (keys, retry) = client(settings);
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(bucket_url)
                .with_retry(retry);
            for (key, value) in keys {
                builder = builder.with_config(AzureConfigKey::Client(key), value);
            }
            builder
                .build()
                .map(|s| (Arc::new(s) as Arc<dyn ObjectStore>, None))
                .map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "aws"))]
        "s3" | "s3a" => Err("s3:// needs the cargo feature `aws`".into()),
        #[cfg(not(feature = "gcp"))]
        "gs" => Err("gs:// needs the cargo feature `gcp`".into()),
        #[cfg(not(feature = "azure"))]
        "az" | "azure" | "abfs" | "abfss" => {
            Err(format!("{scheme}:// needs the cargo feature `azure`"))
        }
        other => Err(format!(
            "unknown scheme `{other}` (file, memory, s3, gs, az, or a plain path)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_local_memory_and_refuse_the_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StorageConfig::default();
        let plain =
            CheckpointStorage::from_url(dir.path().to_str().unwrap(), "job", &settings).unwrap();
        assert_eq!(plain.path("x").as_ref(), "job/x");
        let file_url = format!("file://{}", dir.path().display());
        let local = CheckpointStorage::from_url(&file_url, "job", &settings).unwrap();
        assert_eq!(local.path("x").as_ref(), "job/x");
        let memory = CheckpointStorage::from_url("memory:///team/a", "job", &settings).unwrap();
        assert_eq!(
            memory.path("chk-1/_metadata").as_ref(),
            "team/a/job/chk-1/_metadata"
        );
        let root = CheckpointStorage::from_url("memory://", "job", &settings).unwrap();
        assert_eq!(root.path("x").as_ref(), "job/x");
        for bad in ["ftp://host/dir", "hdfs://namenode/ck"] {
            let err = CheckpointStorage::from_url(bad, "job", &settings).unwrap_err();
            assert_eq!(
                err.kind(),
                crate::ErrorKind::InvalidArgument,
                "{bad}: {err}"
            );
        }
        #[cfg(not(feature = "aws"))]
        assert!(
            CheckpointStorage::from_url("s3://bucket/p", "job", &settings)
                .unwrap_err()
                .to_string()
                .contains("feature `aws`")
        );
    }
}

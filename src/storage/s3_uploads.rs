//! S3's incomplete multipart uploads for the orphan sweep (`uploads.rs`): `ListMultipartUploads`, signed
//! with `object_store`'s own SigV4 authorizer and sent with its HTTP client; aborts go through
//! `object_store`'s `MultipartStore`.

use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{
    ClientConfigKey, ClientOptions, HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector,
};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use quick_xml::events::Event;

use super::uploads::{IncompleteUpload, UploadLister};
use crate::error::{Error, Result};

/// The S3 bucket of a storage, for listing its incomplete uploads.
pub(crate) struct S3Uploads {
    store: Arc<AmazonS3>,
    client: HttpClient,
    /// `https://bucket.s3.region.amazonaws.com` or `<endpoint>/<bucket>`, no trailing slash.
    bucket_url: String,
    region: String,
}

impl std::fmt::Debug for S3Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Uploads({})", self.bucket_url)
    }
}

impl S3Uploads {
    /// The listing for the bucket `builder` was configured for (before `build`), with `store` built
    /// from it.
    pub(crate) fn new(
        builder: &AmazonS3Builder,
        store: Arc<AmazonS3>,
        timeout: std::time::Duration,
    ) -> std::result::Result<Self, String> {
        let value = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
        let bucket = value(AmazonS3ConfigKey::Bucket).ok_or("no bucket")?;
        let region = value(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = value(AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let bucket_url = match value(AmazonS3ConfigKey::Endpoint) {
            Some(endpoint) if virtual_hosted => endpoint.trim_end_matches('/').to_string(),
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        let allow_http = value(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || bucket_url.starts_with("http://");
        let options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(timeout);
        let client = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| e.to_string())?;
        Ok(S3Uploads {
            store,
            client,
            bucket_url,
            region,
        })
    }

    /// One page of `ListMultipartUploads` under `prefix`, after the markers.
    async fn page(
        &self,
        prefix: &str,
        markers: Option<NextMarkers>,
    ) -> Result<(Vec<IncompleteUpload>, Option<NextMarkers>)> {
        let mut query: Vec<(&str, String)> =
            vec![("uploads", String::new()), ("prefix", prefix.to_string())];
        if let Some((key, id)) = &markers {
            query.push(("key-marker", key.clone()));
            query.push(("upload-id-marker", id.clone()));
        }
        let mut url = url::Url::parse(&format!("{}/", self.bucket_url))
            .map_err(|e| Error::InvalidArgument(format!("S3 bucket URL: {e}")))?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &query {
                pairs.append_pair(k, v);
            }
        }
        // `uploads` is a key without a value.
        let url = url.as_str().replacen("uploads=&", "uploads&", 1);
        let failed = |what: String| Error::Storage {
            path: format!("{}?uploads", self.bucket_url),
            source: object_store::Error::Generic {
                store: "S3",
                source: what.into(),
            },
        };
        let mut request = http::Request::builder()
            .method("GET")
            .uri(&url)
            .body(HttpRequestBody::empty())
            .map_err(|e| failed(e.to_string()))?;
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| failed(e.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(failed(format!(
                "ListMultipartUploads answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        parse(&body).map_err(failed)
    }
}

/// The markers of the next page of a listing: `(NextKeyMarker, NextUploadIdMarker)`.
type NextMarkers = (String, String);

/// Uploads and the next markers of a `ListMultipartUploadsResult` document.
fn parse(xml: &[u8]) -> std::result::Result<(Vec<IncompleteUpload>, Option<NextMarkers>), String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let (mut uploads, mut path, mut text) = (Vec::new(), Vec::<String>::new(), String::new());
    let (mut key, mut id, mut initiated) = (String::new(), String::new(), String::new());
    let (mut truncated, mut next_key, mut next_id) = (false, String::new(), String::new());
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| e.to_string())?
        {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => {
                // An entity (`&amp;`) inside a value: the five XML ones.
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                text.push_str(match name.as_str() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    other => return Err(format!("unknown entity &{other};")),
                });
            }
            Event::End(_) => {
                let value = std::mem::take(&mut text);
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                match names.as_slice() {
                    [.., "Upload", "Key"] => key = value,
                    [.., "Upload", "UploadId"] => id = value,
                    [.., "Upload", "Initiated"] => initiated = value,
                    [_, "IsTruncated"] => truncated = value.trim() == "true",
                    [_, "NextKeyMarker"] => next_key = value,
                    [_, "NextUploadIdMarker"] => next_id = value,
                    [.., "Upload"] => {
                        let at = chrono::DateTime::parse_from_rfc3339(initiated.trim())
                            .map_err(|e| format!("Initiated `{initiated}`: {e}"))?;
                        uploads.push(IncompleteUpload {
                            path: Path::parse(&key).unwrap_or_else(|_| Path::from(key.as_str())),
                            upload_id: std::mem::take(&mut id),
                            initiated: SystemTime::from(at.with_timezone(&chrono::Utc)),
                        });
                        key.clear();
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let next = (truncated && !next_key.is_empty()).then_some((next_key, next_id));
    Ok((uploads, next))
}

impl UploadLister for S3Uploads {
    fn list<'a>(&'a self, prefix: &'a Path) -> BoxFuture<'a, Result<Vec<IncompleteUpload>>> {
        async move {
            let prefix = format!("{prefix}/");
            let (mut all, mut markers) = (Vec::new(), None);
            loop {
                let (uploads, next) = self.page(&prefix, markers).await?;
                all.extend(uploads);
                match next {
                    Some(m) => markers = Some(m),
                    None => return Ok(all),
                }
            }
        }
        .boxed()
    }

    fn abort<'a>(&'a self, upload: &'a IncompleteUpload) -> BoxFuture<'a, Result<()>> {
        async move {
            match self
                .store
                .abort_multipart(&upload.path, &upload.upload_id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Error::storage(&upload.path, e)),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_multipart_uploads_result_parses_with_markers_and_entities() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>job/shared/x&amp;y</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>job/chk-3/a.keyed</Key><UploadId>u1</UploadId>
<Initiator><ID>i</ID></Initiator><Initiated>2026-12-03T07:00:00.000Z</Initiated></Upload>
  <Upload><Key>job/shared/x&amp;y</Key><UploadId>u2</UploadId>
<Initiated>2026-12-03T08:30:00Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let (uploads, next) = parse(xml).unwrap();
        assert_eq!(uploads.len(), 2);
        assert_eq!(uploads[0].path.as_ref(), "job/chk-3/a.keyed");
        assert_eq!(uploads[1].path.as_ref(), "job/shared/x&y");
        assert_eq!(uploads[1].upload_id, "u2");
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_286_600);
        assert_eq!(uploads[1].initiated, at);
        assert_eq!(next, Some(("job/shared/x&y".into(), "u2".into())));
    }
}

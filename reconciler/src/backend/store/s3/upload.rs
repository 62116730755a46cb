//! Uploading files: one `PUT` up to [`PART_SIZE`], a multipart upload of parts read in
//! order above it, memory bounded by [`PARTS_IN_FLIGHT`]. With a known SHA-256, only
//! bytes with that hash are stored: a single `PUT` is signed with it, a multipart upload
//! hashes its parts on the way and completes only if the whole matches.

use std::path::Path;
use std::sync::Arc;

use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::{normalize_etag, S3Store, PARTS_IN_FLIGHT, PART_SIZE};
use crate::backend::store::object::{ObjectMeta, ObjectStore};
use crate::backend::store::{Error, Result};

/// S3's limit on the number of parts of an upload; bigger files get bigger parts.
const MAX_PARTS: u64 = 10_000;

/// Signs a request with a payload SHA-256 the caller already has, instead of the SDK
/// hashing the body again. The signature covers it (`x-amz-content-sha256`), and the
/// server checks the body it receives against it, as it would the SDK's own hash.
#[derive(Debug)]
struct KnownPayloadSha256(String);

impl Intercept for KnownPayloadSha256 {
    fn name(&self) -> &'static str {
        "KnownPayloadSha256"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

impl S3Store {
    /// Uploads `file` (of `size` bytes) as a multipart upload. Parts are read in order, so
    /// that with `sha256` the whole file is hashed on the way and the upload is completed
    /// only if the hash matches (aborted otherwise).
    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        (source, file): (&Path, std::fs::File),
        size: u64,
        sha256: Option<&str>,
    ) -> Result<()> {
        let c = self.connection().await?;
        let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS).next_multiple_of(1024 * 1024));
        let parts = size.div_ceil(part_size);
        let upload = c
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.error("put", key, e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| Error::S3 {
                op: "put",
                key: key.to_string(),
                store: self.url(),
                status: None,
                code: "InvalidResponse".into(),
                message: "the server started a multipart upload without an id".into(),
            })?
            .to_string();

        let file = Arc::new(file);
        let hasher = sha256.map(|_| Arc::new(std::sync::Mutex::new(Sha256::new())));
        let uploaded: Result<Vec<CompletedPart>> = futures::stream::iter(1..=parts)
            // One part read at a time, in order (and hashed, when checked), while up to
            // PARTS_IN_FLIGHT earlier parts are on their way.
            .map(|number| {
                let file = file.clone();
                let hasher = hasher.clone();
                async move {
                    let offset = (number - 1) * part_size;
                    let len = part_size.min(size - offset) as usize;
                    let body = tokio::task::spawn_blocking(move || {
                        let body = read_at(&file, offset, len)?;
                        if let Some(hasher) = &hasher {
                            hasher.lock().expect("hasher lock").update(&body);
                        }
                        Ok::<_, std::io::Error>(body)
                    })
                    .await
                    .map_err(Error::from_join)?
                    .map_err(|e| self.io("read", key, e))?;
                    Ok::<_, Error>((number, body))
                }
            })
            .buffered(1)
            .map(|read| {
                let upload_id = upload_id.clone();
                async move {
                    let (number, body) = read?;
                    let part = c
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(&upload_id)
                        .part_number(number as i32)
                        .content_length(body.len() as i64)
                        .body(ByteStream::from(body))
                        .send()
                        .await
                        .map_err(|e| self.error("put", key, e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number as i32)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build())
                }
            })
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        let uploaded = uploaded.and_then(|completed| {
            let (Some(expected), Some(hasher)) = (sha256, hasher) else {
                return Ok(completed);
            };
            let actual = hex::encode(hasher.lock().expect("hasher lock").clone().finalize());
            if actual != expected {
                return Err(Error::ContentMismatch {
                    key: key.to_string(),
                    store: self.url(),
                    path: source.display().to_string(),
                    sha256: expected.to_string(),
                });
            }
            Ok(completed)
        });
        let result = match uploaded {
            Ok(mut completed) => {
                completed.sort_by_key(|p| p.part_number());
                c.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("put", key, e))
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Parts of an unfinished upload are invisible but stored (and billed).
            let _ = c
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// Writes a file: one `PUT` up to [`PART_SIZE`], a multipart upload above. With
    /// `sha256`, only bytes with that hash are stored.
    pub(super) async fn upload_file(
        &self,
        key: &str,
        source: &Path,
        sha256: Option<&str>,
    ) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        let path = source.to_path_buf();
        let (file, size) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            Ok::<_, std::io::Error>((file, size))
        })
        .await
        .map_err(Error::from_join)?
        .map_err(|e| self.io("read", key, e))?;
        if size <= PART_SIZE {
            // Allocated here and filled on the blocking pool: the runtime's few threads
            // allocate and free every body, so memory is reused rather than spread over a
            // heap per pool thread (in the s3sync bench, a peak of 150 MiB became 70).
            let body = Vec::with_capacity(size as usize);
            let body = tokio::task::spawn_blocking(move || {
                let (mut file, mut body) = (file, body);
                std::io::Read::read_to_end(&mut file, &mut body)?;
                Ok::<_, std::io::Error>(body)
            })
            .await
            .map_err(Error::from_join)?
            .map_err(|e| self.io("read", key, e))?;
            let checked = sha256.map(|sha256| (sha256, source));
            return self.put_once(key, &full, Bytes::from(body), checked).await;
        }
        self.put_multipart(key, &full, (source, file), size, sha256)
            .await?;
        // The etag of a multipart object is the server's to compute: ask for it.
        self.head_full(key, &full)
            .await?
            .ok_or_else(|| self.precondition(key))
    }

    /// One unconditional `PUT` (retried by the SDK). With `checked`, the known SHA-256 of
    /// `body` (read from the file named) is the signed payload hash: the SDK does not hash
    /// the body again, and the server refuses a body that does not match it.
    pub(super) async fn put_once(
        &self,
        key: &str,
        full: &str,
        body: Bytes,
        checked: Option<(&str, &Path)>,
    ) -> Result<ObjectMeta> {
        let c = self.connection().await?;
        let size = body.len() as u64;
        let request = c
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(size as i64)
            .body(ByteStream::from(body.clone()));
        let sent = match checked {
            Some((sha256, _)) => {
                request
                    .customize()
                    .interceptor(KnownPayloadSha256(sha256.to_string()))
                    .send()
                    .await
            }
            None => request.send().await,
        };
        match sent {
            Ok(out) => Ok(ObjectMeta {
                key: key.to_string(),
                size,
                etag: normalize_etag(out.e_tag()),
            }),
            // Servers answer a body that does not match its signed hash differently (AWS
            // and MinIO: `XAmzContentSHA256Mismatch`; s3s: a 500 after the body): when a
            // checked write fails, the bytes sent say whether that was the reason.
            Err(e) => match checked {
                Some((expected, source)) if hex::encode(Sha256::digest(&body)) != expected => {
                    Err(Error::ContentMismatch {
                        key: key.to_string(),
                        store: self.url(),
                        path: source.display().to_string(),
                        sha256: expected.to_string(),
                    })
                }
                _ => Err(self.error("write", key, e)),
            },
        }
    }
}

fn read_at(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    #[cfg(unix)]
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset)?;
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
    }
    Ok(Bytes::from(buf))
}

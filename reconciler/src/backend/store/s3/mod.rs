//! The S3 store (`s3://bucket/prefix`): objects are keys under the prefix of one bucket,
//! on AWS S3 or any S3-compatible server (MinIO, Ceph, Garage, s3s, …).
//!
//! What it owns: turning the [`ObjectStore`] operations into S3 requests, and S3's
//! answers into the store's typed [`Error`]s. What it must not do: know the layout
//! (that is [`super::Store`]'s), or let a credential reach a message.
//!
//! Flow and guarantees:
//! - The client is built lazily on the first request, so opening a store is cheap and
//!   synchronous. The region, credentials and SDK settings the workspace leaves open come
//!   from the caller's [`AwsChain`] (the CLI's is the standard AWS chain: environment,
//!   profile, web identity, container, and instance metadata only on an EC2 instance or
//!   with `AWS_EC2_METADATA_DISABLED=false`); the library itself reads no environment
//!   and no `~/.aws`. Without a chain, only the workspace's options and
//!   [`S3Store::with_credentials`] count. A chain that finds no credentials is
//!   [`Error::NoCredentials`] (the server was not asked), not a refusal. A workspace's
//!   `endpoint`, `region` and `path_style` override the chain; with an endpoint (the
//!   workspace's, or the chain's: `AWS_ENDPOINT_URL`) and no `path_style`, path-style
//!   addressing is used (what self-hosted servers expect). No region anywhere means
//!   [`FALLBACK_REGION`].
//! - `IfAbsent` is `If-None-Match: *`, `IfMatch` is `If-Match`; 412, and 409
//!   `ConditionalRequestConflict` (a concurrent conditional write), are
//!   [`Error::PreconditionFailed`]. So the lock and the state are only as safe as the
//!   server's conditional writes are atomic. AWS S3 and MinIO's are; s3s-fs 0.14's are
//!   not (it checks, then writes: concurrent creators can all win), which is why the
//!   tests put a serializing front before it (`tests/support/s3_server.rs`). Don't keep
//!   a shared store on a server like that.
//! - Large files go up as multipart uploads of [`PART_SIZE`] parts, read in order, at
//!   most [`PARTS_IN_FLIGHT`] on their way and one being read per file, so memory stays
//!   bounded (40 MiB per file). A multipart object becomes visible only when the upload
//!   completes; a failed upload is aborted (best effort: a bucket lifecycle rule for
//!   incomplete uploads removes what an abort could not). `get_file` writes a temporary
//!   file beside the target and renames it into place.
//! - `put_file_checked` stores a file only if it still has the SHA-256 the caller knows.
//!   A single `PUT` is signed with that hash as its payload hash (`x-amz-content-sha256`)
//!   instead of the SDK hashing the body again, and the server checks the body against
//!   it; a multipart upload hashes the parts as it reads them and is completed only if
//!   the whole matches (each part is still signed with its own hash).
//! - Requests are retried with jittered exponential backoff on throttling, 5xx answers,
//!   timeouts and connection errors (the SDK's standard retry mode), so a server that
//!   restarts mid-upload is ridden out if it comes back within the retries.
//! - Errors name the bucket and endpoint and say what to check. They are made of the
//!   server's error code and message only, never of the SDK's error values (which
//!   carry requests), and every message is scrubbed of the secret key and session
//!   token in use, in case a server echoes one.
//!
//! Caveats:
//! - S3 etags are content hashes: rewriting the same bytes keeps the etag. Every record
//!   compared by etag (lock, state) changes on each write (heartbeat, serial), so a
//!   compare-and-swap never sees an A-B-A.
//! - Conditional delete (`If-Match` on `DELETE`) is recent in S3 and missing from some
//!   servers, which then delete regardless. The store probes for it once (a conditional
//!   delete of a key that does not exist: a server that checks answers 404 or 412) and,
//!   where it is missing, emulates it by comparing the etag with `HEAD` first. The
//!   emulation leaves a window of one round trip in which a write landing between the
//!   `HEAD` and the `DELETE` is deleted; for the lock this needs a lease that already
//!   ran out, taken over within that round trip.
//! - Listings that omit etags (some servers do) are completed with one `HEAD` per key.
//! - The first request of a store looks the bucket up (`HEAD` of the bucket, which needs
//!   the `s3:ListBucket` permission listing needs anyway), so a missing bucket, a bucket
//!   in another region or an unreachable endpoint is reported as such by any operation
//!   (S3-compatible servers differ in what they answer to a `GET` or `PUT` there).
//! - A conditional write whose answer is lost (a timeout, a dropped connection) may
//!   have landed; its retry then fails its condition. The store retries conditional
//!   writes itself and, when a retry fails its condition after such a loss, reads the
//!   object back: if it holds exactly the bytes written, the write is taken as done.
//!   Records written conditionally (lock, state, journal) are unique, so no one else's
//!   write can hold the same bytes.
//!
//! Files: `connect` (the client, built on the first request, and [`AwsChain`]),
//! `upload` (files, in one `PUT` or a multipart upload), `conditional` (the
//! compare-and-swap writes and deletes), `error` (S3's answers as the store's errors).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use super::object::{check_key, Condition, ObjectMeta, ObjectStore};
use super::{Error, Result, StoreOptions};

mod conditional;
mod connect;
mod error;
mod upload;

pub use connect::AwsChain;
use connect::{Connection, StaticCredentials};
use error::strip_userinfo;

/// The size of one part of a multipart upload (S3 allows 5 MiB to 5 GiB). Files up to
/// this size go up in one `PUT`.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// How many parts of one file are read and uploaded at the same time.
pub const PARTS_IN_FLIGHT: usize = 4;
/// Attempts per request, the first included (the SDK's default is 3).
const MAX_ATTEMPTS: u32 = 6;
/// Attempts to read a whole object whose body broke off after the answer began (the SDK
/// retries a request, not a body).
const BODY_ATTEMPTS: u32 = 3;

/// The region used when neither the workspace nor the AWS chain names one. S3-compatible
/// servers accept it; AWS redirects to the bucket's region with a clear error.
pub const FALLBACK_REGION: &str = "us-east-1";

/// An S3 bucket and prefix as an [`ObjectStore`].
pub struct S3Store {
    bucket: String,
    /// Empty, or `a/b/`: always ends with `/` when not empty.
    prefix: String,
    options: StoreOptions,
    credentials: Option<StaticCredentials>,
    connection: OnceCell<Connection>,
    /// Set once the bucket was found (see [`S3Store::check_bucket`]).
    bucket_found: OnceCell<()>,
    /// Whether the server checks `If-Match` on `DELETE`; probed once.
    conditional_delete: OnceCell<bool>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: the client's configuration is no one's business in a message.
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field(
                "endpoint",
                &self.options.endpoint.as_deref().map(strip_userinfo),
            )
            .field("region", &self.options.region)
            .field("path_style", &self.options.path_style)
            .field("explicit_credentials", &self.credentials.is_some())
            .finish()
    }
}

impl S3Store {
    /// Makes a store for `s3://bucket/prefix` with a workspace's options. Sends nothing:
    /// the client is built, and credentials resolved, on the first request.
    pub fn new(url: &str, options: &StoreOptions) -> Result<S3Store> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("an S3 store URL starts with `s3://`"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(invalid(
                "the bucket name must be 3 to 63 lowercase letters, digits, `.` or `-`",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !check_key(prefix) {
            return Err(invalid(
                "the prefix must be `/`-separated names, without empty, `.` or `..` parts",
            ));
        }
        if let Some(endpoint) = &options.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(Error::InvalidUrl {
                    url: endpoint.clone(),
                    reason: "the endpoint must be an `http://` or `https://` URL".into(),
                });
            }
        }
        Ok(S3Store {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            options: options.clone(),
            credentials: None,
            connection: OnceCell::new(),
            bucket_found: OnceCell::new(),
            conditional_delete: OnceCell::new(),
        })
    }

    /// Uses these credentials instead of the AWS chain.
    pub fn with_credentials(
        mut self,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> S3Store {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: session_token.map(str::to_string),
        });
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix keys live under: empty, or ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, key: &str) -> Result<String> {
        if !check_key(key) {
            return Err(Error::InvalidKey(key.to_string()));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn precondition(&self, key: &str) -> Error {
        Error::PreconditionFailed {
            key: key.to_string(),
            store: self.url(),
        }
    }

    fn io(&self, op: &'static str, key: &str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            key: key.to_string(),
            store: self.url(),
            source,
        }
    }

    async fn head_full(&self, key: &str, full: &str) -> Result<Option<ObjectMeta>> {
        let c = self.connection().await?;
        match c
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: normalize_etag(out.e_tag()),
            })),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                if e.code() == Some("NoSuchBucket") {
                    return Err(self.error("stat", key, e));
                }
                Ok(None)
            }
            // The answer to a `HEAD` has no body, so no error code: refused credentials
            // and missing permissions both read 403. Ask again with a `GET` of one byte,
            // whose answer says which.
            Err(e)
                if e.code().is_none()
                    && matches!(
                        e.raw_response().map(|r| r.status().as_u16()),
                        Some(400 | 403)
                    ) =>
            {
                match c
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(full)
                    .range("bytes=0-0")
                    .send()
                    .await
                {
                    Err(detailed) => Err(self.error("stat", key, detailed)),
                    Ok(_) => Err(self.error("stat", key, e)),
                }
            }
            Err(e) => Err(self.error("stat", key, e)),
        }
    }

    async fn write_body(&self, key: &str, body: ByteStream, tmp: &Path) -> Result<()> {
        let mut file = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| self.io("write", key, e))?;
        let mut body = body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.body_error("read", key, e))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| self.io("write", key, e))?;
        }
        file.flush().await.map_err(|e| self.io("write", key, e))?;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn url(&self) -> String {
        let base = format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'));
        let base = base.trim_end_matches('/').to_string();
        match &self.options.endpoint {
            Some(endpoint) => format!("{base} (at {})", strip_userinfo(endpoint)),
            None => base,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectMeta)>> {
        let full = self.full_key(key)?;
        let c = self.connection().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = match c
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
                Err(e) => return Err(self.error("read", key, e)),
            };
            // Bytes and metadata come from one answer: they belong to one version.
            let etag = normalize_etag(out.e_tag());
            match out.body.collect().await {
                Ok(body) => {
                    let bytes = body.into_bytes();
                    return Ok(Some((
                        bytes.clone(),
                        ObjectMeta {
                            key: key.to_string(),
                            size: bytes.len() as u64,
                            etag,
                        },
                    )));
                }
                Err(_) if attempt < BODY_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => return Err(self.body_error("read", key, e)),
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let full = self.full_key(key)?;
        self.head_full(key, &full).await
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        if condition == Condition::None {
            return self.put_once(key, &full, body, None).await;
        }
        self.put_conditional(key, &full, body, &condition).await
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<ObjectMeta> {
        self.upload_file(key, source, None).await
    }

    async fn put_file_checked(&self, key: &str, source: &Path, sha256: &str) -> Result<ObjectMeta> {
        let valid = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(Error::Backend(format!(
                "`{sha256}` is not a SHA-256 in lowercase hex (uploading `{key}`)"
            )));
        }
        self.upload_file(key, source, Some(sha256)).await
    }

    async fn get_file(&self, key: &str, dest: &Path) -> Result<()> {
        let full = self.full_key(key)?;
        let c = self.connection().await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.io("write", key, e))?;
        }
        let tmp = temp_beside(dest);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let out = match c
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("NoSuchKey") => {
                    break Err(self.io(
                        "read",
                        key,
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
                    ))
                }
                Err(e) => break Err(self.error("read", key, e)),
            };
            match self.write_body(key, out.body, &tmp).await {
                Ok(()) => break Ok(()),
                Err(_) if attempt < BODY_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest).await.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io("write", key, e)
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if prefix.starts_with('/') || prefix.split('/').any(|s| s == ".." || s == ".") {
            return Err(Error::InvalidKey(prefix.to_string()));
        }
        // No separate bucket check: a listing of a missing bucket answers `NoSuchBucket`
        // itself, and one that succeeds proves the bucket is there. So an unchanged store
        // costs one request (the state cache's listing).
        let c = self.connection.get_or_try_init(|| self.connect()).await?;
        let mut pages = c
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{prefix}", self.prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let mut without_etag = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", prefix, e))?;
            let _ = self.bucket_found.set(());
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.prefix.as_str()))
                else {
                    continue;
                };
                // Folder markers (`a/`) and keys this store could not have written are
                // not objects of the store.
                if !check_key(key) {
                    continue;
                }
                if object.e_tag().is_none() {
                    without_etag.push(out.len());
                }
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: normalize_etag(object.e_tag()),
                });
            }
        }
        // Some servers list without etags; the contract promises them.
        let heads: Vec<(usize, Option<ObjectMeta>)> = futures::stream::iter(without_etag)
            .map(|i| {
                let key = out[i].key.clone();
                async move {
                    let full = format!("{}{key}", self.prefix);
                    self.head_full(&key, &full).await.map(|m| (i, m))
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut gone = Vec::new();
        for (i, meta) in heads {
            match meta {
                Some(meta) => out[i] = meta,
                // Deleted since it was listed.
                None => gone.push(i),
            }
        }
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            out.remove(i);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        let full = self.full_key(key)?;
        let c = self.connection().await?;
        match condition {
            Condition::None => c
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error("delete", key, e)),
            Condition::IfAbsent => Err(self.precondition(key)),
            Condition::IfMatch(etag) => self.delete_if_match(key, &full, &etag).await,
        }
    }
}

/// Returns whether `name` is a bucket name S3 accepts (the common rules).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// Etags as S3 sends them are quoted (`"…"`), sometimes weak (`W/"…"`); the store
/// compares them bare.
fn normalize_etag(etag: Option<&str>) -> String {
    let etag = etag.unwrap_or("");
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"').to_string()
}

fn quote_etag(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    path.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> Result<S3Store> {
        S3Store::new(url, &StoreOptions::default())
    }

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let s = store("s3://cairn-data/teams/risk/").unwrap();
        assert_eq!(s.bucket(), "cairn-data");
        assert_eq!(s.prefix(), "teams/risk/");
        assert_eq!(s.url(), "s3://cairn-data/teams/risk");
        let s = store("s3://cairn-data").unwrap();
        assert_eq!(s.prefix(), "");
        assert_eq!(s.url(), "s3://cairn-data");
        assert_eq!(store("s3://cairn-data/").unwrap().url(), "s3://cairn-data");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for url in [
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3://-bucket",
            "s3://b_u",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "gs://bucket",
        ] {
            match store(url) {
                Err(Error::InvalidUrl { url: u, reason }) => {
                    assert_eq!(u, url);
                    assert!(!reason.is_empty());
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let options = StoreOptions {
            endpoint: Some("localhost:9000".into()),
            ..StoreOptions::default()
        };
        assert!(matches!(
            S3Store::new("s3://bucket", &options),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn the_url_names_the_endpoint_without_user_information() {
        let options = StoreOptions {
            endpoint: Some("http://key:secret@127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            path_style: None,
            ..StoreOptions::default()
        };
        let s = S3Store::new("s3://bucket/p", &options).unwrap();
        assert_eq!(s.url(), "s3://bucket/p (at http://127.0.0.1:9000)");
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn etags_compare_bare() {
        assert_eq!(normalize_etag(Some("\"abc\"")), "abc");
        assert_eq!(normalize_etag(Some("W/\"abc-2\"")), "abc-2");
        assert_eq!(normalize_etag(Some("abc")), "abc");
        assert_eq!(quote_etag("abc"), "\"abc\"");
    }

    #[test]
    fn keys_map_under_the_prefix_and_are_checked() {
        let s = store("s3://bucket/p/q").unwrap();
        assert_eq!(s.full_key("a/b").unwrap(), "p/q/a/b");
        assert!(matches!(s.full_key("../a"), Err(Error::InvalidKey(_))));
        let s = store("s3://bucket").unwrap();
        assert_eq!(s.full_key("a").unwrap(), "a");
    }
}

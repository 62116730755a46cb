//! Conditional writes and deletes (`IfAbsent`, `IfMatch`): the compare-and-swap the lock
//! and the state rely on. They go through the client without the SDK's retries and retry
//! themselves, so that a retry failing its condition after an answer was lost can check
//! whether the earlier attempt landed. Conditional delete is probed for once and emulated
//! (`HEAD`, then `DELETE`) on servers that ignore `If-Match` there (see the caveats in
//! [`super`]).

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::error::{is_precondition, is_transient};
use super::{normalize_etag, quote_etag, S3Store, MAX_ATTEMPTS};
use crate::backend::store::object::{Condition, ObjectMeta, ObjectStore};
use crate::backend::store::Result;

impl S3Store {
    /// A `PUT` under `condition` (not [`Condition::None`]) of `body` to `full`, the full
    /// key of `key`.
    pub(super) async fn put_conditional(
        &self,
        key: &str,
        full: &str,
        body: Bytes,
        condition: &Condition,
    ) -> Result<ObjectMeta> {
        let c = self.connection().await?;
        let size = body.len() as u64;
        let mut landed_maybe = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = c
                .once
                .put_object()
                .bucket(&self.bucket)
                .key(full)
                .content_length(size as i64)
                .body(ByteStream::from(body.clone()));
            let request = match condition {
                Condition::IfMatch(etag) => request.if_match(quote_etag(etag)),
                _ => request.if_none_match("*"),
            };
            match request.send().await {
                Ok(out) => {
                    return Ok(ObjectMeta {
                        key: key.to_string(),
                        size,
                        etag: normalize_etag(out.e_tag()),
                    })
                }
                // `If-Match` on a missing key: AWS answers 404 `NoSuchKey`.
                Err(e)
                    if is_precondition(&e)
                        || (matches!(condition, Condition::IfMatch(_))
                            && e.code() == Some("NoSuchKey")) =>
                {
                    // An earlier attempt may have written the object and lost the answer:
                    // then the object is ours, byte for byte.
                    if landed_maybe {
                        if let Some((current, meta)) = self.get(key).await? {
                            if current == body {
                                return Ok(meta);
                            }
                        }
                    }
                    return Err(self.precondition(key));
                }
                Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    landed_maybe = true;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.error("write", key, e)),
            }
        }
    }

    /// A `DELETE` of `full`, the full key of `key`, only if its etag is `etag`.
    pub(super) async fn delete_if_match(&self, key: &str, full: &str, etag: &str) -> Result<()> {
        let c = self.connection().await?;
        if !self.checks_conditional_delete().await? {
            // Emulated (see the module's caveats): compare, then delete.
            match self.head_full(key, full).await? {
                Some(meta) if meta.etag == etag => {}
                _ => return Err(self.precondition(key)),
            }
            return c
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(full)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error("delete", key, e));
        }
        let mut landed_maybe = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match c
                .once
                .delete_object()
                .bucket(&self.bucket)
                .key(full)
                .if_match(quote_etag(etag))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e)
                    if is_precondition(&e)
                        || (e.raw_response().map(|r| r.status().as_u16()) == Some(404)
                            && e.code() != Some("NoSuchBucket")) =>
                {
                    // An earlier attempt may have deleted it and lost the answer.
                    if landed_maybe && self.head_full(key, full).await?.is_none() {
                        return Ok(());
                    }
                    return Err(self.precondition(key));
                }
                Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    landed_maybe = true;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.error("delete", key, e)),
            }
        }
    }

    /// Whether the server checks `If-Match` on `DELETE`: a conditional delete of a key
    /// that cannot exist is refused (404 or 412) by a server that checks, and succeeds
    /// on one that ignores the header.
    async fn checks_conditional_delete(&self) -> Result<bool> {
        self.conditional_delete
            .get_or_try_init(|| async {
                let c = self.connection().await?;
                let probe = format!(
                    "{}.cairn/probe-{}",
                    self.prefix,
                    uuid::Uuid::new_v4().simple()
                );
                match c
                    .client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&probe)
                    .if_match("\"cairn-probe\"")
                    .send()
                    .await
                {
                    Ok(_) => Ok(false),
                    Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                        Some(404 | 412) if e.code() != Some("NoSuchBucket") => Ok(true),
                        _ => Err(self.error("delete", ".cairn/probe", e)),
                    },
                }
            })
            .await
            .copied()
    }
}

/// Jittered exponential backoff before attempt `attempt + 1`: 100–200 ms, then
/// doubling, at most 8 s.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64
        .saturating_mul(1 << attempt.min(6).saturating_sub(1))
        .min(8000);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u64;
    Duration::from_millis(base / 2 + base / 2 * jitter / 1000)
}

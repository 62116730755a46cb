//! The object-store interface every store backend implements: keys, bytes, conditional
//! writes. The domain layout on top of it (datasets, models, runs, lock, journal, state)
//! lives in [`super::Store`] and is written once for all backends.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

use super::Result;

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Changes whenever the object is rewritten; used for compare-and-swap.
    pub etag: String,
}

/// A precondition on a write or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Write unconditionally.
    None,
    /// Write only if no object has this key (S3 `If-None-Match: *`).
    IfAbsent,
    /// Write or delete only if the object still has this etag (S3 `If-Match`).
    IfMatch(String),
}

/// A flat key space of immutable-until-rewritten objects. Keys use `/` separators and never
/// start with `/` or contain `..` segments (checked by [`check_key`]).
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// The store's URL, for messages. Never contains credentials.
    fn url(&self) -> String;

    /// Returns the object's bytes and metadata, or `None` if there is no such key.
    async fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectMeta)>>;

    /// Returns the object's metadata, or `None`.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Writes an object. A failed condition gives [`super::Error::PreconditionFailed`].
    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<ObjectMeta>;

    /// Writes an object from a local file, streaming large files.
    async fn put_file(&self, key: &str, path: &Path) -> Result<ObjectMeta>;

    /// Writes an object from a local file whose SHA-256 the caller already knows
    /// (`sha256`, lowercase hex), and stores it only if its bytes still have that hash:
    /// otherwise nothing is stored and the answer is [`super::Error::ContentMismatch`].
    /// The known hash spares a hashing pass where the backend needs one anyway (S3 signs
    /// the payload's SHA-256, which the server checks against the bytes it receives).
    async fn put_file_checked(&self, key: &str, path: &Path, sha256: &str) -> Result<ObjectMeta>;

    /// Copies an object into a local file (created or replaced).
    async fn get_file(&self, key: &str, dest: &Path) -> Result<()>;

    /// Lists every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; deleting a missing key is not an error unless a condition is set.
    async fn delete(&self, key: &str, condition: Condition) -> Result<()>;
}

/// Returns whether a key is well formed: relative, `/`-separated, no empty, `.` or `..`
/// segments.
pub fn check_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && !key.contains('\\')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

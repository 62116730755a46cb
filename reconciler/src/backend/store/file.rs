//! The folder store (`file://…`): objects are files under a root folder.
//!
//! Writes go to a temporary file beside the target and are renamed into place, so a
//! reader never sees half an object. `IfAbsent` uses `link(2)`, which fails atomically
//! when the target exists. `IfMatch` takes a short-lived `<key>.cas` guard created with
//! `O_EXCL`, compares, then renames; a guard left by a killed process is ignored after
//! [`STALE_GUARD`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::object::{check_key, Condition, ObjectMeta, ObjectStore};
use super::{Error, Result};

/// A compare-and-swap guard older than this was left by a dead process.
const STALE_GUARD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        FileStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if !check_key(key) {
            return Err(Error::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    fn io(&self, op: &'static str, key: &str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            key: key.to_string(),
            store: self.url(),
            source,
        }
    }
}

fn etag_of(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0u64;
    format!("{:x}-{:x}-{:x}", meta.len(), mtime, ino)
}

/// A missing key, or a path through a file (`a/b` where `a` is an object): no object.
fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn is_internal(name: &str) -> bool {
    name.starts_with(".tmp-") || name.ends_with(".cas")
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = format!(".tmp-{}", uuid::Uuid::new_v4().simple());
    path.with_file_name(name)
}

/// Copies `source` to `dest` (created), returning the SHA-256 of the bytes copied, in
/// lowercase hex.
fn copy_hashed(source: &Path, dest: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};
    let mut from = std::fs::File::open(source)?;
    let mut to = std::fs::File::create(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    to.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

fn write_temp(path: &Path, body: &[u8]) -> std::io::Result<PathBuf> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = temp_beside(path);
    std::fs::write(&tmp, body)?;
    Ok(tmp)
}

impl FileStore {
    fn put_sync(&self, key: &str, body: &[u8], condition: &Condition) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let tmp = write_temp(&path, body).map_err(|e| self.io("write", key, e))?;
        let result = match condition {
            Condition::None => std::fs::rename(&tmp, &path).map_err(|e| self.io("write", key, e)),
            Condition::IfAbsent => {
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        Err(Error::PreconditionFailed {
                            key: key.to_string(),
                            store: self.url(),
                        })
                    }
                    Err(e) => Err(self.io("create", key, e)),
                }
            }
            Condition::IfMatch(expected) => self.swap(key, &path, &tmp, Some(expected)),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        let meta = std::fs::metadata(&path).map_err(|e| self.io("stat", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: meta.len(),
            etag: etag_of(&meta),
        })
    }

    /// Copies a file in as `key` (renamed into place once whole); with `sha256`, only if
    /// the bytes copied have that hash.
    async fn copy_in(&self, key: &str, source: &Path, sha256: Option<&str>) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        let source = source.to_path_buf();
        let sha256 = sha256.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| this.io("write", &key, e))?;
            }
            let tmp = temp_beside(&path);
            // Always a copy: a hard link would let later edits of the source rewrite a
            // stored, immutable version. Unchecked, the kernel's (copy_file_range where it
            // can); checked, read and hashed on the way, so what is kept is what matched.
            let copied = match &sha256 {
                None => std::fs::copy(&source, &tmp).map(|_| true),
                Some(expected) => copy_hashed(&source, &tmp).map(|actual| actual == *expected),
            };
            match copied {
                Ok(true) => {}
                Ok(false) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(Error::ContentMismatch {
                        key,
                        store: this.url(),
                        path: source.display().to_string(),
                        sha256: sha256.unwrap_or_default(),
                    });
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(this.io("copy", &key, e));
                }
            }
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                this.io("write", &key, e)
            })?;
            let meta = std::fs::metadata(&path).map_err(|e| this.io("stat", &key, e))?;
            Ok(ObjectMeta {
                key,
                size: meta.len(),
                etag: etag_of(&meta),
            })
        })
        .await
        .map_err(Error::from_join)?
    }

    /// Replaces `path` by `tmp` if its etag is still `expected`.
    fn swap(&self, key: &str, path: &Path, tmp: &Path, expected: Option<&String>) -> Result<()> {
        let guard = self.take_guard(key, path)?;
        let current = std::fs::metadata(path).ok().map(|m| etag_of(&m));
        let result = if current.as_ref() != expected {
            Err(Error::PreconditionFailed {
                key: key.to_string(),
                store: self.url(),
            })
        } else {
            std::fs::rename(tmp, path).map_err(|e| self.io("replace", key, e))
        };
        let _ = std::fs::remove_file(&guard);
        result
    }
}

#[async_trait]
impl ObjectStore for FileStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectMeta)>> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            // One open file for both the metadata and the bytes: a concurrent rename can't
            // pair old bytes with a new etag.
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if is_absent(&e) => return Ok(None),
                Err(e) => return Err(this.io("read", &key, e)),
            };
            let meta = file.metadata().map_err(|e| this.io("stat", &key, e))?;
            if !meta.is_file() {
                return Ok(None);
            }
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            std::io::Read::read_to_end(&mut file, &mut bytes)
                .map_err(|e| this.io("read", &key, e))?;
            Ok(Some((
                Bytes::from(bytes),
                ObjectMeta {
                    key,
                    size: meta.len(),
                    etag: etag_of(&meta),
                },
            )))
        })
        .await
        .map_err(Error::from_join)?
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: meta.len(),
                etag: etag_of(&meta),
            })),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(self.io("stat", key, e)),
        }
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<ObjectMeta> {
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || this.put_sync(&key, &body, &condition))
            .await
            .map_err(Error::from_join)?
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<ObjectMeta> {
        self.copy_in(key, source, None).await
    }

    async fn put_file_checked(&self, key: &str, source: &Path, sha256: &str) -> Result<ObjectMeta> {
        self.copy_in(key, source, Some(sha256)).await
    }

    async fn get_file(&self, key: &str, dest: &Path) -> Result<()> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| this.io("write", &key, e))?;
            }
            // A copy, so a job that writes to its inputs can't change the store; zeros
            // stay holes, so a sparse input costs no more disk than the store's copy.
            crate::sparse::copy(&path, &dest).map_err(|e| this.io("read", &key, e))?;
            Ok(())
        })
        .await
        .map_err(Error::from_join)?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // Start from the deepest folder the prefix names completely.
            let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
            let start = if dir_part.is_empty() {
                root.clone()
            } else {
                root.join(dir_part)
            };
            let mut out = Vec::new();
            if dir_part.split('/').any(|s| s == ".." || s == ".") || prefix.starts_with('/') {
                return Err(Error::InvalidKey(prefix.clone()));
            }
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if is_absent(&e) => continue,
                    Err(e) => return Err(this.io("list", &prefix, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| this.io("list", &prefix, e))?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if is_internal(name) {
                        continue;
                    }
                    let path = entry.path();
                    let meta = entry.metadata().map_err(|e| this.io("list", &prefix, e))?;
                    if meta.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let Ok(rel) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = rel
                        .components()
                        .filter_map(|c| c.as_os_str().to_str())
                        .collect::<Vec<_>>()
                        .join("/");
                    if key.starts_with(&prefix) {
                        out.push(ObjectMeta {
                            key,
                            size: meta.len(),
                            etag: etag_of(&meta),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(Error::from_join)?
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || match condition {
            Condition::None => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(this.io("delete", &key, e)),
            },
            Condition::IfAbsent => Err(Error::PreconditionFailed {
                key: key.clone(),
                store: this.url(),
            }),
            Condition::IfMatch(expected) => {
                // Move the object aside under the guard, then remove it.
                let aside = temp_beside(&path);
                let guard_result = {
                    let current = std::fs::metadata(&path).ok().map(|m| etag_of(&m));
                    if current.as_ref() != Some(&expected) {
                        Err(Error::PreconditionFailed {
                            key: key.clone(),
                            store: this.url(),
                        })
                    } else {
                        this.swap_out(&key, &path, &aside, &expected)
                    }
                };
                guard_result?;
                let _ = std::fs::remove_file(&aside);
                Ok(())
            }
        })
        .await
        .map_err(Error::from_join)?
    }
}

impl FileStore {
    /// Takes the compare-and-swap guard of `path` (`<name>.cas`, created with `O_EXCL`).
    /// A guard older than [`STALE_GUARD`] was left by a dead process and is taken over;
    /// a racer doing the same loses at the etag comparison that follows, because the
    /// winner's rename changes the etag.
    fn take_guard(&self, key: &str, path: &Path) -> Result<PathBuf> {
        let guard = path.with_file_name(format!(
            "{}.cas",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object")
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&guard)
        {
            Ok(_) => Ok(guard),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let stale = std::fs::metadata(&guard)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > STALE_GUARD);
                if !stale {
                    return Err(Error::PreconditionFailed {
                        key: key.to_string(),
                        store: self.url(),
                    });
                }
                std::fs::write(&guard, b"").map_err(|e| self.io("lock", key, e))?;
                Ok(guard)
            }
            Err(e) => Err(self.io("lock", key, e)),
        }
    }

    /// Moves `path` to `aside` if its etag is still `expected`, under the same guard as
    /// [`FileStore::swap`].
    fn swap_out(&self, key: &str, path: &Path, aside: &Path, expected: &str) -> Result<()> {
        let precondition = || Error::PreconditionFailed {
            key: key.to_string(),
            store: self.url(),
        };
        let guard = self.take_guard(key, path)?;
        let current = std::fs::metadata(path).ok().map(|m| etag_of(&m));
        let result = if current.as_deref() != Some(expected) {
            Err(precondition())
        } else {
            std::fs::rename(path, aside).map_err(|e| self.io("delete", key, e))
        };
        let _ = std::fs::remove_file(&guard);
        result
    }
}

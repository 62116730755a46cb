//! Content addressing of dataset and model sources: the version of a folder is the hash of
//! its sorted file list with each file's size and SHA-256.
//!
//! Hashing is the slow part of planning, so a cache remembers each file's SHA-256 by its
//! fingerprint (size, modification time and inode on disk; blob id in Git): a file whose
//! fingerprint hasn't changed is not read again. The cache is a plain JSON file that can
//! be deleted at any time.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::source::{join_rel, open_regular};
use crate::manifest::{Fingerprint, Snapshot, TreeFile};

/// Length of version ids in hex characters (48 bits: collisions are not a concern for
/// the versions of one dataset).
pub const VERSION_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list `{path}`")]
    List {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One hashed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedFile {
    /// Path relative to the source folder.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The content of a source folder and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub version: String,
    pub files: Vec<HashedFile>,
    pub total_bytes: u64,
}

/// Returns the version id of a file list (which must be sorted by path).
pub fn version_of(files: &[HashedFile]) -> String {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(f.path.as_bytes());
        hasher.update([0]);
        hasher.update(f.size.to_le_bytes());
        hasher.update(f.sha256.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())[..VERSION_LEN].to_string()
}

/// The SHA-256 of a file's bytes, in lowercase hex (streamed, not read whole).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_reader(open_regular(path)?, &|_| {})
}

/// Returns the short hex SHA-256 of some bytes, for ids derived from specs.
pub fn short_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..VERSION_LEN].to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: u128,
    inode: u64,
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// Absolute path on disk → entry.
    disk: HashMap<String, CacheEntry>,
    /// Git blob id → SHA-256.
    blobs: HashMap<String, String>,
}

/// The fingerprint → SHA-256 cache.
#[derive(Debug)]
pub struct HashCache {
    path: Option<PathBuf>,
    data: Mutex<CacheFile>,
    dirty: Mutex<bool>,
}

impl HashCache {
    /// A cache that is never saved.
    pub fn in_memory() -> HashCache {
        HashCache {
            path: None,
            data: Mutex::new(CacheFile::default()),
            dirty: Mutex::new(false),
        }
    }

    /// Loads the cache at `path`; a missing or unreadable cache starts empty.
    pub fn load(path: &Path) -> HashCache {
        let data = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|c| c.version == 1)
            .unwrap_or_default();
        HashCache {
            path: Some(path.to_path_buf()),
            data: Mutex::new(data),
            dirty: Mutex::new(false),
        }
    }

    /// Writes the cache back if it changed (atomically: temp file, then rename).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !*self.dirty.lock().expect("cache lock") {
            return Ok(());
        }
        let mut data = self.data.lock().expect("cache lock");
        data.version = 1;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&*data).expect("cache serializes"))?;
        std::fs::rename(&tmp, path)?;
        *self.dirty.lock().expect("cache lock") = false;
        Ok(())
    }

    fn lookup(&self, disk_path: Option<&Path>, file: &TreeFile) -> Option<String> {
        let data = self.data.lock().expect("cache lock");
        match &file.fingerprint {
            Fingerprint::Disk { mtime_ns, inode } => {
                let key = disk_path?.to_str()?;
                data.disk
                    .get(key)
                    .filter(|e| e.size == file.size && e.mtime_ns == *mtime_ns && e.inode == *inode)
                    .map(|e| e.sha256.clone())
            }
            Fingerprint::Blob(oid) => data.blobs.get(oid).cloned(),
        }
    }

    fn remember(&self, disk_path: Option<&Path>, file: &TreeFile, sha256: &str) {
        let mut data = self.data.lock().expect("cache lock");
        match &file.fingerprint {
            Fingerprint::Disk { mtime_ns, inode } => {
                let Some(key) = disk_path.and_then(|p| p.to_str()) else {
                    return;
                };
                data.disk.insert(
                    key.to_string(),
                    CacheEntry {
                        size: file.size,
                        mtime_ns: *mtime_ns,
                        inode: *inode,
                        sha256: sha256.to_string(),
                    },
                );
            }
            Fingerprint::Blob(oid) => {
                data.blobs.insert(oid.clone(), sha256.to_string());
            }
        }
        *self.dirty.lock().expect("cache lock") = true;
    }
}

fn sha256_reader(
    mut reader: impl Read,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        on_bytes(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hashes the folder (or file) `dir` of the snapshot, reading only files the cache doesn't
/// know. `on_bytes` is called with the number of bytes read as hashing proceeds.
pub fn hash_source(
    snapshot: &Snapshot,
    dir: &str,
    cache: &HashCache,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Content, Error> {
    let listed = snapshot.files(dir).map_err(|source| Error::List {
        path: dir.to_string(),
        source,
    })?;
    // A source naming one file lists that file under its own name.
    let single_file = listed.len() == 1
        && dir.rsplit('/').next() == Some(listed[0].path.as_str())
        && snapshot.entry(dir) == Some(crate::manifest::EntryKind::File);
    let files: Vec<HashedFile> = listed
        .par_iter()
        .map(|file| {
            let rel = if single_file {
                dir.to_string()
            } else {
                join_rel(dir, &file.path)
            };
            let disk = snapshot.disk_path(&rel);
            if let Some(sha256) = cache.lookup(disk.as_deref(), file) {
                return Ok(HashedFile {
                    path: file.path.clone(),
                    size: file.size,
                    sha256,
                });
            }
            let read_err = |source| Error::Read {
                path: rel.clone(),
                source,
            };
            let sha256 = match &disk {
                Some(path) => {
                    let f = open_regular(path).map_err(read_err)?;
                    sha256_reader(f, on_bytes).map_err(read_err)?
                }
                None => {
                    let bytes = snapshot.read(&rel).map_err(read_err)?;
                    sha256_reader(&bytes[..], on_bytes).map_err(read_err)?
                }
            };
            cache.remember(disk.as_deref(), file, &sha256);
            Ok(HashedFile {
                path: file.path.clone(),
                size: file.size,
                sha256,
            })
        })
        .collect::<Result<_, Error>>()?;
    let total_bytes = files.iter().map(|f| f.size).sum();
    Ok(Content {
        version: version_of(&files),
        files,
        total_bytes,
    })
}

/// Hashes a folder on disk that is not part of a snapshot (a job's output folder).
///
/// As with sources, links to folders are not followed (a job that writes `ln -s . self`
/// must not make hashing endless), links to files are followed only when they stay
/// inside the folder (a job can't publish `/etc/passwd` as a model file), and anything
/// that is not a regular file is refused.
pub fn hash_folder(dir: &Path) -> Result<Content, Error> {
    let mut files = Vec::new();
    let list_err = |source| Error::List {
        path: dir.display().to_string(),
        source,
    };
    let real_dir = dir.canonicalize().map_err(list_err)?;
    let mut stack = vec![(real_dir.clone(), String::new())];
    while let Some((folder, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&folder).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let rel = join_rel(&prefix, &name);
            let refuse = |why: String| Error::List {
                path: dir.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
            };
            let file_type = entry.file_type().map_err(list_err)?;
            if file_type.is_dir() {
                stack.push((entry.path(), rel));
                continue;
            }
            if file_type.is_symlink() {
                let target = entry.path().canonicalize().map_err(|e| {
                    refuse(format!(
                        "`{rel}` is a symbolic link that can't be followed: {e}"
                    ))
                })?;
                if !target.starts_with(&real_dir) {
                    return Err(refuse(format!(
                        "`{rel}` is a symbolic link that leads outside the folder"
                    )));
                }
                if target.is_dir() {
                    return Err(refuse(format!(
                        "`{rel}` is a symbolic link to a folder, and links to folders are not followed"
                    )));
                }
            } else if !file_type.is_file() {
                return Err(refuse(format!("`{rel}` is not a regular file")));
            }
            let read_err = |source| Error::Read {
                path: entry.path().display().to_string(),
                source,
            };
            let f = open_regular(&entry.path()).map_err(read_err)?;
            let size = f.metadata().map_err(read_err)?.len();
            let sha256 = sha256_reader(f, &|_| {}).map_err(read_err)?;
            files.push(HashedFile {
                path: rel,
                size,
                sha256,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let total_bytes = files.iter().map(|f| f.size).sum();
    Ok(Content {
        version: version_of(&files),
        files,
        total_bytes,
    })
}

/// How two versions of a folder differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContentDiff {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub removed: Vec<String>,
}

impl ContentDiff {
    pub fn between(old: &[HashedFile], new: &[HashedFile]) -> ContentDiff {
        let old_map: HashMap<&str, &HashedFile> =
            old.iter().map(|f| (f.path.as_str(), f)).collect();
        let new_map: HashMap<&str, &HashedFile> =
            new.iter().map(|f| (f.path.as_str(), f)).collect();
        let mut diff = ContentDiff::default();
        for f in new {
            match old_map.get(f.path.as_str()) {
                None => diff.added.push(f.path.clone()),
                Some(o) if o.sha256 != f.sha256 => diff.modified.push(f.path.clone()),
                _ => {}
            }
        }
        for f in old {
            if !new_map.contains_key(f.path.as_str()) {
                diff.removed.push(f.path.clone());
            }
        }
        diff
    }

    /// "3 files added, 1 modified".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let plural = |n: usize| if n == 1 { "file" } else { "files" };
        if !self.added.is_empty() {
            parts.push(format!(
                "{} {} added",
                self.added.len(),
                plural(self.added.len())
            ));
        }
        if !self.modified.is_empty() {
            let n = self.modified.len();
            parts.push(if parts.is_empty() {
                format!("{n} {} modified", plural(n))
            } else {
                format!("{n} modified")
            });
        }
        if !self.removed.is_empty() {
            let n = self.removed.len();
            parts.push(if parts.is_empty() {
                format!("{n} {} removed", plural(n))
            } else {
                format!("{n} removed")
            });
        }
        if parts.is_empty() {
            "same files".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Checks a downloaded file against the SHA-256 its version recorded.
pub fn verify_sha256(path: &Path, expected: &str, what: &str) -> Result<(), String> {
    let actual = tokio::task::block_in_place(|| sha256_file(path))
        .map_err(|e| format!("cannot read back {}: {e}", path.display()))?;
    if actual != expected {
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "{what}: `{}` arrived with SHA-256 {actual}, but the version records {expected}; the stored copy is damaged",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, sha: &str) -> HashedFile {
        HashedFile {
            path: path.into(),
            size: 1,
            sha256: sha.into(),
        }
    }

    #[test]
    fn version_depends_on_paths_and_contents() {
        let a = version_of(&[f("a.csv", "1"), f("b.csv", "2")]);
        assert_eq!(a.len(), VERSION_LEN);
        assert_ne!(a, version_of(&[f("a.csv", "1"), f("b.csv", "3")]));
        assert_ne!(a, version_of(&[f("a.csv", "1"), f("c.csv", "2")]));
        assert_eq!(a, version_of(&[f("a.csv", "1"), f("b.csv", "2")]));
    }

    #[cfg(unix)]
    #[test]
    fn an_output_folder_with_hostile_links_is_refused() {
        // A link to a file outside the folder would publish it as a model file.
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("model.bin"), b"weights").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.path().join("passwd")).unwrap();
        let err = hash_folder(out.path()).unwrap_err();
        assert!(
            format!("{:?}", err).contains("leads outside the folder"),
            "{err:?}"
        );

        // A link back to the folder would make the walk endless.
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("model.bin"), b"weights").unwrap();
        std::os::unix::fs::symlink(".", out.path().join("self")).unwrap();
        let err = hash_folder(out.path()).unwrap_err();
        assert!(
            format!("{:?}", err).contains("links to folders are not followed"),
            "{err:?}"
        );

        // A link to a file inside the folder is hashed under its own name.
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("model.bin"), b"weights").unwrap();
        std::os::unix::fs::symlink("model.bin", out.path().join("latest.bin")).unwrap();
        let content = hash_folder(out.path()).unwrap();
        let paths: Vec<&str> = content.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["latest.bin", "model.bin"]);
        assert_eq!(content.files[0].sha256, content.files[1].sha256);
    }

    #[test]
    fn describes_differences() {
        let old = [f("a", "1"), f("b", "2"), f("c", "3")];
        let new = [f("a", "1"), f("b", "9"), f("d", "4"), f("e", "5")];
        let d = ContentDiff::between(&old, &new);
        assert_eq!(d.describe(), "2 files added, 1 modified, 1 removed");
    }
}

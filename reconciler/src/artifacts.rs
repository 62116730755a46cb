//! Moving versions between a workspace's store and a folder: fetching a dataset or model
//! version (every file checked against the SHA-256 its version recorded), and storing a
//! folder a job wrote as a model or dataset version with its lineage.
//!
//! The local target's applier uses these for job inputs and outputs; on Kubernetes the
//! pods do the same through `cairn fetch` and `cairn upload`, so a version moved by a pod
//! is exactly one moved by Cairn itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};

use crate::backend::store::{
    self, now_rfc3339, DatasetVersion, FileEntry, ModelRecord, ProducedBy, Store,
};
use crate::content;
use crate::manifest::source::join_inside;

/// Errors from moving versions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not a version reference")]
    BadReference(
        String,
        #[source] Option<Box<dyn std::error::Error + Send + Sync>>,
    ),
    #[error("{0} is not in the store")]
    Missing(String),
    #[error("{reference} lists a file outside its folder: `{path}`")]
    Escapes { reference: String, path: String },
    #[error("{reference}: `{path}` arrived with SHA-256 {actual}, but the version records {expected}; the stored copy is damaged")]
    Checksum {
        reference: String,
        path: String,
        actual: String,
        expected: String,
    },
    /// `output` is `model.<name>` or `dataset.<name>`.
    #[error("the job wrote nothing into {} for {output}", .folder.display())]
    EmptyOutput { output: String, folder: PathBuf },
    #[error("cannot read or write {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Content(#[from] content::Error),
}

impl Error {
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::BadReference(..) => Some(
                "references look like `dataset.<name>@<version>` or `model.<name>@<version>`"
                    .into(),
            ),
            Error::Missing(_) => Some(
                "the version was never stored, or the store is another one: check CAIRN_STORE"
                    .into(),
            ),
            Error::Checksum { .. } => {
                Some("the stored file was changed or damaged after it was stored".into())
            }
            Error::EmptyOutput { .. } => Some(
                "the job must write its output into the folder its `outputs` placeholder names"
                    .into(),
            ),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parsed `dataset.<name>@<version>` or `model.<name>@<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    pub kind: VersionKind,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    Dataset,
    Model,
}

impl VersionRef {
    pub fn parse(text: &str) -> Result<VersionRef> {
        let bad = || Error::BadReference(text.to_string(), None);
        let (what, version) = text.split_once('@').ok_or_else(bad)?;
        let (kind, name) = what.split_once('.').ok_or_else(bad)?;
        let kind = match kind {
            "dataset" => VersionKind::Dataset,
            "model" => VersionKind::Model,
            _ => return Err(bad()),
        };
        if name.is_empty() || version.is_empty() || version.contains('/') || name.contains('/') {
            return Err(bad());
        }
        Ok(VersionRef {
            kind,
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            VersionKind::Dataset => "dataset",
            VersionKind::Model => "model",
        };
        write!(f, "{kind}.{}@{}", self.name, self.version)
    }
}

/// Files from this size up fetched from an object store get their zero blocks punched
/// back into holes ([`crate::sparse::punch_holes`]).
const SPARSE_CHECK: u64 = 1 << 20;

/// What a fetch moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub files: usize,
    pub bytes: u64,
}

/// Downloads every file of a dataset or model version into `dest` (emptied first),
/// checking each against its recorded SHA-256.
pub async fn fetch(store: &Store, reference: &str, dest: &Path) -> Result<Fetched> {
    let parsed = VersionRef::parse(reference)?;
    let files = match parsed.kind {
        VersionKind::Dataset => store
            .dataset_version(&parsed.name, &parsed.version)
            .await?
            .map(|v| v.files),
        VersionKind::Model => store
            .model_version(&parsed.name, &parsed.version)
            .await?
            .map(|v| v.files),
    }
    .ok_or_else(|| Error::Missing(reference.to_string()))?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    match std::fs::remove_dir_all(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dest)(e)),
    }
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let from_folder = store.url().starts_with("file://");
    let mut fetched = Fetched { files: 0, bytes: 0 };
    for f in files {
        let Some(rel) = join_inside("", &f.path) else {
            return Err(Error::Escapes {
                reference: reference.to_string(),
                path: f.path.clone(),
            });
        };
        let target = dest.join(rel);
        store.objects().get_file(&f.key, &target).await?;
        if !from_folder && f.size >= SPARSE_CHECK {
            // An object store writes a sparse file's holes out as zeros: punch them again,
            // so the copy costs the disk its data needs (the folder store copies holes).
            let punched = target.clone();
            let _ = tokio::task::spawn_blocking(move || crate::sparse::punch_holes(&punched)).await;
        }
        let hashed = target.clone();
        let actual = tokio::task::spawn_blocking(move || content::sha256_file(&hashed))
            .await
            .map_err(|e| io(&target)(std::io::Error::other(e)))?
            .map_err(io(&target))?;
        if actual != f.sha256 {
            let _ = std::fs::remove_file(&target);
            return Err(Error::Checksum {
                reference: reference.to_string(),
                path: f.path.clone(),
                actual,
                expected: f.sha256.clone(),
            });
        }
        fetched.files += 1;
        fetched.bytes += f.size;
    }
    Ok(fetched)
}

/// Where a model version came from.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// The job's name (`train-risk`).
    pub job: Option<String>,
    pub run_id: Option<String>,
    /// Input name → the version reference the run read.
    pub inputs: BTreeMap<String, String>,
    pub commit: Option<String>,
    pub metrics: Option<serde_json::Value>,
}

/// Model files uploaded at once: a model is a few large files (each a multipart upload
/// with its own parts in flight) or many small ones.
pub const MODEL_UPLOADS: usize = 4;

/// Stores `folder` as `model.<model>@<version>`: every file ([`MODEL_UPLOADS`] at a
/// time, each checked against the hash just computed), then the `_model.json` marker
/// last, so a half-stored version is never visible; a retried upload writes the same
/// keys again and converges.
pub async fn store_model(
    store: &Store,
    model: &str,
    version: &str,
    format: &str,
    folder: &Path,
    lineage: Lineage,
) -> Result<ModelRecord> {
    let content = content::hash_folder(folder)?;
    if content.files.is_empty() {
        return Err(Error::EmptyOutput {
            output: format!("model.{model}"),
            folder: folder.to_path_buf(),
        });
    }
    let files = upload(store, folder, &content.files, &BTreeMap::new(), |path| {
        Store::model_file_key(model, version, path)
    })
    .await?;
    let record = ModelRecord {
        model: model.to_string(),
        version: version.to_string(),
        format: format.to_string(),
        job: lineage.job,
        run_id: lineage.run_id,
        inputs: lineage.inputs,
        commit: lineage.commit,
        metrics: lineage.metrics,
        files,
        created_at: now_rfc3339(),
        trials: Vec::new(),
    };
    store.commit_model_version(&record).await?;
    Ok(record)
}

/// Stores `folder` as `dataset.<dataset>@<version>`, the output of a run: a file any
/// committed version of the dataset already holds (same SHA-256) is referenced, not
/// stored again; the others are uploaded ([`MODEL_UPLOADS`] at a time, each checked
/// against the hash just computed), then the `_version.json` marker last. A version
/// already committed is left as it is.
pub async fn store_dataset(
    store: &Store,
    dataset: &str,
    version: &str,
    folder: &Path,
    lineage: Lineage,
) -> Result<DatasetVersion> {
    if let Some(existing) = store.dataset_version(dataset, version).await? {
        return Ok(existing);
    }
    let content = content::hash_folder(folder)?;
    if content.files.is_empty() {
        return Err(Error::EmptyOutput {
            output: format!("dataset.{dataset}"),
            folder: folder.to_path_buf(),
        });
    }
    let known: BTreeMap<String, String> = store
        .dataset_versions(dataset)
        .await?
        .into_iter()
        .flat_map(|v| v.files)
        .map(|f| (f.sha256, f.key))
        .collect();
    let files = upload(store, folder, &content.files, &known, |path| {
        Store::dataset_file_key(dataset, version, path)
    })
    .await?;
    let record = DatasetVersion {
        dataset: dataset.to_string(),
        version: version.to_string(),
        total_bytes: content.total_bytes,
        files,
        created_at: now_rfc3339(),
        commit: lineage.commit,
        produced_by: Some(ProducedBy {
            job: lineage.job.unwrap_or_default(),
            run_id: lineage.run_id.unwrap_or_else(|| version.to_string()),
            inputs: lineage.inputs,
        }),
    };
    store.commit_dataset_version(&record).await?;
    Ok(record)
}

/// Stores one output folder of a run: `reference` is `model.<name>@<run id>` or
/// `dataset.<name>@<run id>`; `format` is a model's (`custom` when unknown). Returns
/// how many files the version holds.
pub async fn store_output(
    store: &Store,
    reference: &str,
    format: &str,
    folder: &Path,
    lineage: Lineage,
) -> Result<usize> {
    let parsed = VersionRef::parse(reference)?;
    match parsed.kind {
        VersionKind::Model => store_model(
            store,
            &parsed.name,
            &parsed.version,
            format,
            folder,
            lineage,
        )
        .await
        .map(|r| r.files.len()),
        VersionKind::Dataset => {
            store_dataset(store, &parsed.name, &parsed.version, folder, lineage)
                .await
                .map(|r| r.files.len())
        }
    }
}

/// Uploads the files of `folder` just hashed ([`MODEL_UPLOADS`] at a time), each to
/// `key_of(path)` and stored only with the bytes that were hashed; a file whose SHA-256
/// is in `known` is not uploaded but referenced at the key given there.
async fn upload(
    store: &Store,
    folder: &Path,
    hashed: &[content::HashedFile],
    known: &BTreeMap<String, String>,
    key_of: impl Fn(&str) -> String,
) -> Result<Vec<FileEntry>> {
    // Collected first: a lazy iterator of futures borrowing `f` makes the whole future
    // not `Send` (rustc's higher-ranked closure lifetimes), which targets need.
    #[allow(clippy::needless_collect)]
    let uploads: Vec<_> = hashed
        .iter()
        .map(|f| {
            let stored = known.get(&f.sha256).cloned();
            let key = stored.clone().unwrap_or_else(|| key_of(&f.path));
            async move {
                if stored.is_none() {
                    store
                        .objects()
                        .put_file_checked(&key, &folder.join(&f.path), &f.sha256)
                        .await?;
                }
                Ok::<_, Error>(FileEntry {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                    key,
                })
            }
        })
        .collect();
    futures::stream::iter(uploads)
        .buffered(MODEL_UPLOADS)
        .try_collect()
        .await
}

/// Reads `metrics.json` from the first output folder that has one.
pub fn read_metrics<'a>(folders: impl IntoIterator<Item = &'a Path>) -> Option<serde_json::Value> {
    folders.into_iter().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("metrics.json")).ok()?;
        serde_json::from_str(&text).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = VersionRef::parse("dataset.loans@3f9a2c1").unwrap();
        assert_eq!(r.kind, VersionKind::Dataset);
        assert_eq!(r.name, "loans");
        assert_eq!(r.version, "3f9a2c1");
        assert_eq!(r.to_string(), "dataset.loans@3f9a2c1");
        for bad in [
            "loans@1",
            "dataset.loans",
            "job.x@1",
            "dataset.@1",
            "model.a@",
            "model.a@../b",
        ] {
            assert!(VersionRef::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Checking what a store holds against what its versions recorded (`cairn verify`).
//!
//! A committed dataset or model version lists each file with its size, SHA-256 and the key
//! holding its bytes. [`Store::verify`] reads every version marker, then every key they
//! name — each key once, however many versions share it — and reports the files that are
//! missing, have another size, or hash to something else, and the markers that are not
//! valid records. Run records (`_run.json`) are read too, and the attempt logs they name
//! must exist (logs carry no recorded hash). Plans trust the markers (that is what makes a no-op plan cost one
//! listing), so a deleted or bit-flipped object is only noticed here or when it is
//! downloaded.
//!
//! Memory stays bounded: bytes go through a scratch file, [`CONCURRENCY`] at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::{DatasetVersion, Error, FileEntry, ModelRecord, Result, RunRecord, Store};

/// Objects read and hashed at once.
const CONCURRENCY: usize = 4;

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Markers read (dataset and model versions, job runs).
    pub versions: usize,
    /// Distinct stored objects checked.
    pub objects: usize,
    /// Their bytes, as recorded.
    pub bytes: u64,
    /// One entry per damaged file of a version (a file shared by two versions is listed
    /// for both), and per damaged marker.
    pub damaged: Vec<Damaged>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.damaged.is_empty()
    }
}

/// A damaged file of a version, or a damaged version marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damaged {
    /// `dataset.<name>@<version>`, `model.<name>@<version>` or `job.<name> run <id>`; the
    /// marker's key when the marker itself is damaged.
    pub version: String,
    /// The version's marker (`…/_version.json`, `…/_model.json`): removing it makes the
    /// next apply store the version again.
    pub marker: String,
    /// The file's path inside the version (empty for a damaged marker).
    pub path: String,
    /// The store key that holds (or should hold) the bytes.
    pub key: String,
    pub problem: Problem,
}

/// What is wrong with a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Problem {
    /// No object has the key.
    Missing,
    /// The object has another size than recorded.
    Size { recorded: u64, stored: u64 },
    /// The object's bytes hash to another SHA-256 than recorded.
    Hash { recorded: String, stored: String },
    /// The marker is not a valid record.
    Record { reason: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing from the store"),
            Problem::Size { recorded, stored } => {
                write!(f, "{stored} bytes stored, {recorded} recorded")
            }
            Problem::Hash { recorded, stored } => write!(
                f,
                "its bytes changed: SHA-256 {} stored, {} recorded",
                &stored[..stored.len().min(12)],
                &recorded[..recorded.len().min(12)]
            ),
            Problem::Record { reason } => write!(f, "not a valid version record: {reason}"),
        }
    }
}

/// A version marker, as far as checking its files goes.
struct Version {
    label: String,
    marker: String,
    files: Vec<FileEntry>,
}

impl Store {
    /// Re-reads every stored dataset and model version and checks its files' sizes and
    /// SHA-256 (see the module doc). `scratch` is a folder for the bytes on their way
    /// through; it is created if needed and left empty.
    pub async fn verify(&self, scratch: &Path) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut versions = Vec::new();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut run_logs: Vec<(String, String, String)> = Vec::new();
        for (prefix, marker_name) in [
            ("datasets/", "/_version.json"),
            ("models/", "/_model.json"),
            ("runs/", "/_run.json"),
        ] {
            for meta in self.objects.list(prefix).await? {
                if !meta.key.ends_with(marker_name) {
                    sizes.insert(meta.key, meta.size);
                    continue;
                }
                let read = if prefix == "datasets/" {
                    self.get_json::<DatasetVersion>(&meta.key).await.map(|v| {
                        v.map(|(v, _)| (format!("dataset.{}@{}", v.dataset, v.version), v.files))
                    })
                } else if prefix == "runs/" {
                    self.get_json::<RunRecord>(&meta.key).await.map(|r| {
                        r.map(|(r, _)| {
                            let label = format!("job.{} run {}", r.job, r.run_id);
                            for log in r.logs {
                                run_logs.push((label.clone(), meta.key.clone(), log));
                            }
                            (label, Vec::new())
                        })
                    })
                } else {
                    self.get_json::<ModelRecord>(&meta.key).await.map(|v| {
                        v.map(|(m, _)| (format!("model.{}@{}", m.model, m.version), m.files))
                    })
                };
                match read {
                    Ok(Some((label, files))) => versions.push(Version {
                        label,
                        marker: meta.key,
                        files,
                    }),
                    Ok(None) => {}
                    Err(Error::Corrupt { key, source, .. }) => report.damaged.push(Damaged {
                        version: key.clone(),
                        marker: key.clone(),
                        path: String::new(),
                        key,
                        problem: Problem::Record {
                            reason: source.to_string(),
                        },
                    }),
                    Err(e) => return Err(e),
                }
            }
        }
        report.versions = versions.len();

        // Each key once: its recorded SHA-256 → what is wrong with it, if anything.
        let mut wanted: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for v in &versions {
            for f in &v.files {
                wanted
                    .entry(f.key.clone())
                    .or_insert((f.size, f.sha256.clone()));
            }
        }
        report.objects = wanted.len();
        report.bytes = wanted.values().map(|(size, _)| size).sum();
        tokio::fs::create_dir_all(scratch)
            .await
            .map_err(|source| self.scratch_error(scratch, source))?;
        let checked: Vec<(String, Result<Option<Problem>>)> =
            stream::iter(wanted.into_iter().map(|(key, (size, sha256))| {
                let stored = sizes.get(&key).copied();
                async move {
                    let problem = self
                        .check_object(&key, size, &sha256, stored, scratch)
                        .await;
                    (key, problem)
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut problems: HashMap<String, Problem> = HashMap::new();
        for (key, problem) in checked {
            if let Some(problem) = problem? {
                problems.insert(key, problem);
            }
        }
        for v in &versions {
            for f in &v.files {
                if let Some(problem) = problems.get(&f.key) {
                    report.damaged.push(Damaged {
                        version: v.label.clone(),
                        marker: v.marker.clone(),
                        path: f.path.clone(),
                        key: f.key.clone(),
                        problem: problem.clone(),
                    });
                }
            }
        }
        for (label, marker, key) in run_logs {
            if !sizes.contains_key(&key) {
                report.damaged.push(Damaged {
                    path: key.rsplit('/').next().unwrap_or(&key).to_string(),
                    version: label,
                    marker,
                    key,
                    problem: Problem::Missing,
                });
            }
        }
        report
            .damaged
            .sort_by(|a, b| (&a.version, &a.path).cmp(&(&b.version, &b.path)));
        Ok(report)
    }

    /// Checks one object against its recorded size and SHA-256; `stored` is its size in
    /// the listing (`None`: not listed).
    async fn check_object(
        &self,
        key: &str,
        size: u64,
        sha256: &str,
        stored: Option<u64>,
        scratch: &Path,
    ) -> Result<Option<Problem>> {
        let Some(stored) = stored else {
            return Ok(Some(Problem::Missing));
        };
        if stored != size {
            return Ok(Some(Problem::Size {
                recorded: size,
                stored,
            }));
        }
        let file = scratch.join(format!("verify-{}", uuid::Uuid::new_v4().simple()));
        let fetched = self.objects.get_file(key, &file).await;
        let hashed = match fetched {
            Ok(()) => {
                let path = file.clone();
                tokio::task::spawn_blocking(move || crate::content::sha256_file(&path))
                    .await
                    .map_err(Error::from_join)?
                    .map_err(|source| self.scratch_error(&file, source))
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&file).await;
        let actual = hashed?;
        Ok((actual != sha256).then(|| Problem::Hash {
            recorded: sha256.to_string(),
            stored: actual,
        }))
    }

    fn scratch_error(&self, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            op: "verify through the scratch file",
            key: path.display().to_string(),
            store: self.url(),
            source,
        }
    }
}

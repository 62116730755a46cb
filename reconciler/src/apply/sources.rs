//! What an apply carries out in the store alone: dataset versions and imported model
//! versions uploaded from the manifests' source folders (only the files no earlier
//! version holds, resuming what an interrupted apply stored), models and datasets
//! produced by a run checked for, and resources whose applied value is only recorded (workspaces).

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde_json::Value;

use super::Applier;
use crate::address::Kind;
use crate::backend::job::str_field;
use crate::backend::store::{self, now_rfc3339, DatasetVersion, FileEntry, ModelRecord, Store};
use crate::backend::target::{Applied, ChangeError};
use crate::content;
use crate::diagnostics::error_chain;
use crate::manifest::source::join_inside;
use crate::plan::{Action, Plan, ResourceChange};

/// How many small files (at most [`SMALL_FILE`] bytes) of one dataset are transferred at
/// once: small uploads are bound by round trips, so many go in parallel.
const TRANSFER_CONCURRENCY: usize = 32;
/// How many large files are transferred at once (each is itself a parallel multipart
/// upload on S3), which bounds the memory in flight.
const LARGE_TRANSFER_CONCURRENCY: usize = 2;
/// The size up to which a file counts as small.
const SMALL_FILE: u64 = 8 << 20;

impl Applier<'_> {
    /// Carries out a change no compute target hosts.
    pub(super) async fn store_change(
        &self,
        plan: &Plan,
        change: &ResourceChange,
        store: &Store,
    ) -> Result<Applied, ChangeError> {
        let after = change.after.clone();
        let done = |value: Option<Value>, message: Option<String>| {
            Ok(Applied {
                value,
                message,
                events: Vec::new(),
            })
        };
        let plan_error =
            |what: &str| ChangeError::Plan(format!("the plan has no value for this {what}"));
        match (change.kind, change.action()) {
            (_, Action::Delete) => done(
                None,
                Some("removed from the state; stored versions are kept".into()),
            ),
            (kind @ (Kind::Dataset | Kind::Model), Action::Create | Action::Update) => {
                let after = after.ok_or_else(|| plan_error(kind.as_str()))?;
                let source = match kind {
                    Kind::Dataset => SourceKind::Dataset,
                    _ => SourceKind::Model,
                };
                if after.get("from_job").is_some_and(|j| !j.is_null()) {
                    // Written by a run of its job, which stored it: only checked for.
                    let version = str_field(&after, "version").map_err(ChangeError::Plan)?;
                    let present = match source {
                        SourceKind::Dataset => {
                            store.has_dataset_version(&change.name, &version).await?
                        }
                        SourceKind::Model => {
                            store.has_model_version(&change.name, &version).await?
                        }
                    };
                    if !present {
                        return Err(ChangeError::Failed(format!(
                            "{kind} version {version} is not in the store: the job that produces it did not record it"
                        )));
                    }
                } else {
                    self.upload_source(plan, change, store, &after, source)
                        .await
                        .map_err(ChangeError::Failed)?;
                }
                done(Some(after), None)
            }
            (_, Action::Create | Action::Update | Action::Replace) => done(after, None),
            (kind, action) => Err(ChangeError::Unsupported(format!(
                "{} of a {kind} needs a compute target, and the plan names none",
                action.as_str()
            ))),
        }
    }

    /// Uploads a dataset version (or an imported model version) from the manifests'
    /// source folder, storing only files no earlier version holds.
    async fn upload_source(
        &self,
        plan: &Plan,
        change: &ResourceChange,
        store: &Store,
        after: &Value,
        kind: SourceKind,
    ) -> Result<(), String> {
        let version = str_field(after, "version")?;
        let source = str_field(after, "source")?;
        let path = join_inside(&change.workspace, &source)
            .ok_or("the source leads outside the manifests root")?;
        let address = change.address.clone();
        let on_bytes = |_n: u64| {};
        let content = tokio::task::block_in_place(|| {
            content::hash_source(self.snapshot, &path, self.cache, &on_bytes)
        })
        .map_err(|e| error_chain(&e))?;
        if content.version != version {
            return Err(format!(
                "the content changed since the plan was made (planned version {version}, found {}); run `cairn plan` again",
                content.version
            ));
        }
        let name = &change.name;
        let already = match kind {
            SourceKind::Dataset => store.has_dataset_version(name, &version).await,
            SourceKind::Model => store.has_model_version(name, &version).await,
        }
        .map_err(|e| error_chain(&e))?;
        if already {
            return Ok(());
        }
        // Files an earlier version already stores are referenced, not copied.
        let mut known: HashMap<String, String> = HashMap::new();
        if kind == SourceKind::Dataset {
            if let Some(old) = change
                .before
                .as_ref()
                .and_then(|b| b.get("version"))
                .and_then(Value::as_str)
            {
                if let Ok(Some(previous)) = store.dataset_version(name, old).await {
                    known.extend(previous.files.into_iter().map(|f| (f.sha256, f.key)));
                }
            }
        }
        let mut entries = Vec::with_capacity(content.files.len());
        let mut uploads = Vec::new();
        for file in &content.files {
            let key = match known.get(&file.sha256) {
                Some(key) => key.clone(),
                None => {
                    let key = match kind {
                        SourceKind::Dataset => Store::dataset_file_key(name, &version, &file.path),
                        SourceKind::Model => Store::model_file_key(name, &version, &file.path),
                    };
                    let rel = if content.files.len() == 1
                        && self.snapshot.entry(&path) == Some(crate::manifest::EntryKind::File)
                    {
                        path.clone()
                    } else {
                        format!("{path}/{}", file.path)
                    };
                    uploads.push((key.clone(), rel, file.size, file.sha256.clone()));
                    key
                }
            };
            entries.push(FileEntry {
                path: file.path.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
                key,
            });
        }
        if !uploads.is_empty() {
            self.events.note(
                &address,
                &format!(
                    "uploading {} file(s), {}",
                    uploads.len(),
                    crate::plan::human_bytes(uploads.iter().map(|u| u.2).sum())
                ),
            );
        }
        let objects = store.objects().clone();
        // Resume: files an interrupted apply already stored are not sent again. One listing
        // of the version's folder finds them (not one request per file).
        let mut stored: HashMap<String, u64> = HashMap::new();
        if !uploads.is_empty() {
            let prefix = match kind {
                SourceKind::Dataset => Store::dataset_file_key(name, &version, ""),
                SourceKind::Model => Store::model_file_key(name, &version, ""),
            };
            if let Ok(listed) = objects.list(&prefix).await {
                stored.extend(listed.into_iter().map(|m| (m.key, m.size)));
            }
        }
        uploads.retain(|(key, _, size, _)| stored.get(key) != Some(size));
        let (small, large): (Vec<_>, Vec<_>) = uploads
            .into_iter()
            .partition(|(_, _, size, _)| *size <= SMALL_FILE);
        for (batch, parallel) in [
            (small, TRANSFER_CONCURRENCY),
            (large, LARGE_TRANSFER_CONCURRENCY),
        ] {
            let results: Vec<Result<(), String>> =
                futures::stream::iter(batch.into_iter().map(|(key, rel, size, sha256)| {
                    let objects = objects.clone();
                    let address = address.clone();
                    async move {
                        let result = match self.snapshot.disk_path(&rel) {
                            // Stored only if the bytes are still the ones hashed (the hash
                            // may come from the cache, by fingerprint).
                            Some(disk) => objects
                                .put_file_checked(&key, &disk, &sha256)
                                .await
                                .map(|_| ()),
                            None => {
                                let bytes = self.snapshot.read(&rel).map_err(|e| e.to_string())?;
                                objects
                                    .put(&key, bytes.into(), store::Condition::None)
                                    .await
                                    .map(|_| ())
                            }
                        };
                        self.events.bytes(&address, size);
                        result.map_err(|e| error_chain(&e))
                    }
                }))
                .buffer_unordered(parallel)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<()>, String>>()?;
        }

        let total_bytes = content.total_bytes;
        match kind {
            SourceKind::Dataset => store
                .commit_dataset_version(&DatasetVersion {
                    dataset: name.clone(),
                    version,
                    files: entries,
                    total_bytes,
                    created_at: now_rfc3339(),
                    commit: plan.revision.clone(),
                    produced_by: None,
                })
                .await
                .map_err(|e| error_chain(&e)),
            SourceKind::Model => store
                .commit_model_version(&ModelRecord {
                    model: name.clone(),
                    version,
                    format: after
                        .get("format")
                        .and_then(Value::as_str)
                        .unwrap_or("custom")
                        .to_string(),
                    job: None,
                    run_id: None,
                    inputs: BTreeMap::new(),
                    commit: plan.revision.clone(),
                    metrics: None,
                    files: entries,
                    created_at: now_rfc3339(),
                    trials: Vec::new(),
                })
                .await
                .map_err(|e| error_chain(&e)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Dataset,
    Model,
}

//! Datasets and models: a dataset's new content version (and what changed in it), a
//! model or dataset version produced by a run, a model imported from a folder.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{change, Error, Planner, Result, Versions};
use crate::address::{Address, Kind, Reference};
use crate::backend::store::Store;
use crate::content::{self, Content, ContentDiff};
use crate::desired::Resource;
use crate::manifest::Spec;
use crate::plan::{human_bytes, plural, Action, ResourceChange};

impl Planner<'_> {
    pub(super) async fn dataset(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        content: &Content,
    ) -> Result<ResourceChange> {
        let Spec::Dataset(spec) = &resource.spec else {
            unreachable!()
        };
        let after = json!({
            "source": spec.source.as_ref().map(|s| s.get_ref()),
            "format": spec.format.get_ref(),
            "version": content.version,
            "files": content.files.len(),
            "bytes": content.total_bytes,
            "tags": spec.tags,
        });
        let old_version = before
            .as_ref()
            .and_then(|b| b.get("version"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if old_version.as_deref() == Some(content.version.as_str()) {
            return Ok(self.simple(resource, before, after));
        }
        let ws = &resource.address.workspace;
        let store_err = |source| Error::Store {
            workspace: ws.clone(),
            source,
        };
        let stored = store
            .has_dataset_version(&resource.address.name, &content.version)
            .await
            .map_err(store_err)?;
        let size = human_bytes(content.total_bytes);
        let files = plural(content.files.len(), "file");
        let (action, mut reason) = match &old_version {
            None => (
                Action::Create,
                format!("new dataset: {files}, {size} (version {})", content.version),
            ),
            Some(old) => {
                let described = match store
                    .dataset_version(&resource.address.name, old)
                    .await
                    .map_err(store_err)?
                {
                    Some(previous) => {
                        let old_files: Vec<content::HashedFile> = previous
                            .files
                            .iter()
                            .map(|f| content::HashedFile {
                                path: f.path.clone(),
                                size: f.size,
                                sha256: f.sha256.clone(),
                            })
                            .collect();
                        ContentDiff::between(&old_files, &content.files).describe()
                    }
                    None => "new content".to_string(),
                };
                (
                    Action::Update,
                    format!(
                        "{} changed: {described} (version {old} → {})",
                        resource.address.local(),
                        content.version
                    ),
                )
            }
        };
        if stored {
            reason.push_str("; this version is already stored");
        }
        let mut change = change(resource, action, reason, before, Some(after));
        if change.changes.is_empty() && action == Action::Update {
            change.actions = vec![Action::NoOp];
        }
        Ok(change)
    }

    /// A model trained by a job, or a dataset a job writes: each of the job's runs is a
    /// version, named after the run.
    pub(super) async fn produced(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
        running: &BTreeSet<Address>,
    ) -> Result<ResourceChange> {
        let (from_job, format, tags) = match &resource.spec {
            Spec::Model(m) => (&m.from_job, serde_json::to_value(m.format.get_ref()), None),
            Spec::Dataset(d) => (
                &d.from_job,
                serde_json::to_value(d.format.get_ref()),
                Some(&d.tags),
            ),
            _ => unreachable!("only models and datasets come from jobs"),
        };
        let ws = resource.address.workspace.as_str();
        let job = from_job
            .as_ref()
            .and_then(|j| Reference::parse(j.get_ref()).ok())
            .map(|j| Address::new(ws, Kind::Job, j.name));
        let version = job
            .as_ref()
            .and_then(|j| versions.get(j))
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let mut after = json!({
            "version": version,
            "from_job": from_job.as_ref().map(|j| j.get_ref()),
            "format": format.expect("formats serialize"),
        });
        if let Some(tags) = tags {
            after["tags"] = json!(tags);
        }
        let old = before
            .as_ref()
            .and_then(|b| b.get("version"))
            .and_then(Value::as_str);
        if old == Some(version.as_str()) {
            return Ok(self.simple(resource, before, after));
        }
        let job_local = job.as_ref().map(Address::local).unwrap_or_default();
        let action = if before.is_none() {
            Action::Create
        } else {
            Action::Update
        };
        let reason = if job.as_ref().is_some_and(|j| running.contains(j)) {
            format!("new version {version}, produced by run {version} of {job_local}")
        } else {
            let name = &resource.address.name;
            let stored = match resource.address.kind {
                Kind::Dataset => store.has_dataset_version(name, &version).await,
                _ => store.has_model_version(name, &version).await,
            }
            .map_err(|source| Error::Store {
                workspace: ws.to_string(),
                source,
            })?;
            if stored {
                format!("version {version} (already produced by {job_local}) becomes current")
            } else {
                format!("version {version} of {job_local} is missing from the store; the apply will fail until the run is repeated")
            }
        };
        Ok(change(resource, action, reason, before, Some(after)))
    }

    pub(super) fn imported_model(
        &self,
        resource: &Resource,
        before: Option<Value>,
        content: &Content,
    ) -> ResourceChange {
        let Spec::Model(spec) = &resource.spec else {
            unreachable!()
        };
        let after = json!({
            "version": content.version,
            "source": spec.source.as_ref().map(|s| s.get_ref()),
            "format": spec.format.get_ref(),
            "files": content.files.len(),
            "bytes": content.total_bytes,
        });
        let mut c = self.simple(resource, before, after);
        if c.action() == Action::Create {
            c.reason = format!(
                "imported model: {}, {} (version {})",
                plural(content.files.len(), "file"),
                human_bytes(content.total_bytes),
                content.version
            );
        }
        c
    }
}

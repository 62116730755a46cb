//! The planner: makes a [`Plan`] (what `apply` will do, to which resource, and why).
//!
//! The planner pairs each desired resource with what the workspace's store says was
//! applied (`state.json`) and what exists there (dataset versions, runs, model versions),
//! and decides an [`Action`] with a human reason. Versions flow down the graph in apply
//! order: a dataset's content hash becomes part of the identity of the jobs that read it,
//! a job's run id becomes the version of the model it outputs. So one plan shows the whole
//! chain "data changed → retrain → new model version".
//!
//! What is the same on every compute target is decided here; what only a target knows
//! (what serves an endpoint now, the objects a resource needs on it, whether the work
//! fits) comes from the [`Targets`] ([`crate::backend::target`]). Plans are
//! deterministic: the same manifests, store and live state give byte-identical plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::address::{Address, Kind, Reference};
use crate::backend::store::{self, Store};
use crate::backend::target::{kind_name, EndpointRollout, Observed, PlanScope, Targets};
use crate::content::{self, Content, ContentDiff, HashCache};
use crate::desired::{DesiredState, Resource};
use crate::diagnostics::{error_chain, Diagnostic, Diagnostics, Location};
use crate::events::Events;
use crate::manifest::source::join_inside;
use crate::manifest::{Snapshot, Spec};
use crate::plan::{
    diff_values, human_bytes, plural, redact, Action, Plan, PlanSource, PlanSummary, PlanWorkspace,
    ResourceChange,
};
use crate::serving::{self, Decision, DeploymentValue, EndpointValue, LiveEndpoint, RolloutValue};

/// Errors that stop planning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the store of workspace `{workspace}` failed")]
    Store {
        workspace: String,
        #[source]
        source: store::Error,
    },
    #[error("no store is open for workspace `{0}`")]
    NoStore(String),
    #[error("the plan can't be made: {} problem(s) found", .0.error_count())]
    Blocked(Diagnostics),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the planner needs.
pub struct Planner<'a> {
    pub snapshot: &'a Snapshot,
    pub desired: &'a DesiredState,
    /// One store per workspace to plan.
    pub stores: &'a BTreeMap<String, Store>,
    pub cache: &'a HashCache,
    pub events: &'a dyn Events,
    /// The manifests root as the user gave it, and `--rev`.
    pub source: PlanSource,
    /// The compute targets, observed: what serves, what objects are live, capacity.
    pub targets: &'a Targets,
    /// Plan the removal of everything the selected workspaces' states record, as if the
    /// manifests declared nothing there (`cairn destroy`).
    pub destroy: bool,
}

/// Versions known while walking the graph: dataset content, model version, job run id.
type Versions = HashMap<Address, String>;

impl Planner<'_> {
    /// Makes the plan for every workspace that has a store in `stores`.
    pub async fn plan(&self) -> Result<Plan> {
        let selected: BTreeSet<&str> = self.stores.keys().map(String::as_str).collect();
        let mut diagnostics = Diagnostics::new();

        // Read the states while the sources are hashed.
        let mut reads = Vec::new();
        for name in &selected {
            let store = self
                .stores
                .get(*name)
                .ok_or_else(|| Error::NoStore(name.to_string()))?
                .clone();
            reads.push((
                name.to_string(),
                tokio::spawn(async move { store.state().await }),
            ));
        }
        let contents = if self.destroy {
            HashMap::new()
        } else {
            tokio::task::block_in_place(|| self.hash_sources(&selected, &mut diagnostics))
        };

        let mut states = BTreeMap::new();
        let mut workspaces = Vec::new();
        for (name, read) in reads {
            let state = read
                .await
                .map_err(|e| Error::Store {
                    workspace: name.clone(),
                    source: store::Error::Backend(format!("the state read stopped: {e}")),
                })?
                .map_err(|source| Error::Store {
                    workspace: name.clone(),
                    source,
                })?;
            workspaces.push(PlanWorkspace {
                name: name.clone(),
                store: self.stores[&name].url(),
                state_serial: state.state.serial,
                state_etag: state.etag.clone(),
            });
            states.insert(name, state.state);
        }

        let mut versions: Versions = HashMap::new();
        let mut running: BTreeSet<Address> = BTreeSet::new();
        let mut changes = Vec::new();
        let notes = Vec::new();
        for resource in &self.desired.resources {
            let ws = resource.address.workspace.as_str();
            if !selected.contains(ws) || self.destroy {
                continue;
            }
            let store = &self.stores[ws];
            // Taken out of the state: what is left afterwards is no longer declared.
            let before = states
                .get_mut(ws)
                .and_then(|state| state.resources.remove(&resource.address.to_string()))
                .map(|e| e.value);
            let decided = match &resource.spec {
                Spec::Workspace(spec) => Some(self.simple(
                    resource,
                    before,
                    json!({
                        "environment": spec.environment,
                        "store": spec.store_url(),
                        "namespace": spec.namespace.as_ref().map(|n| n.get_ref().clone()).unwrap_or_else(|| ws.to_string()),
                        "labels": spec.labels,
                        "description": spec.description,
                    }),
                )),
                Spec::Compute(spec) => match self.targets.for_compute(spec) {
                    None => {
                        diagnostics.push(self.unsupported(resource, &format!("its target `{}` is not connected to this plan", kind_name(*spec.target.get_ref()))));
                        None
                    }
                    Some(target) => {
                        let mut change = self.simple(resource, before, strip_description(serde_json::to_value(spec).expect("specs serialize")));
                        change.target = Some(target.name().to_string());
                        Some(change)
                    }
                },
                Spec::Dataset(_) => match contents.get(&resource.address) {
                    Some(content) => {
                        versions.insert(resource.address.clone(), content.version.clone());
                        Some(self.dataset(resource, store, before, content).await?)
                    }
                    None => None,
                },
                Spec::Job(_) => {
                    let change = self.job(resource, store, before, &versions).await?;
                    if let Some(after) = &change.after {
                        if let Some(run_id) = after.get("run_id").and_then(Value::as_str) {
                            versions.insert(resource.address.clone(), run_id.to_string());
                        }
                    }
                    if change.action() == Action::Run {
                        running.insert(resource.address.clone());
                    }
                    Some(change)
                }
                Spec::Model(spec) => {
                    if spec.from_job.is_some() {
                        let change = self.trained_model(resource, store, before, &versions, &running).await?;
                        if let Some(v) = change.after.as_ref().and_then(|a| a.get("version")).and_then(Value::as_str) {
                            versions.insert(resource.address.clone(), v.to_string());
                        }
                        Some(change)
                    } else {
                        match contents.get(&resource.address) {
                            Some(content) => {
                                versions.insert(resource.address.clone(), content.version.clone());
                                Some(self.imported_model(resource, before, content))
                            }
                            None => None,
                        }
                    }
                }
                Spec::Endpoint(_) => self.endpoint(resource, store, before, &versions, &mut diagnostics).await?,
            };
            if let Some(change) = decided {
                changes.push(change);
            }
        }

        // Whatever the state records but the manifests no longer declare is deleted.
        // (Declared resources were taken out above; the check also covers those left out
        // of this plan.)
        let leftovers = states.values().any(|s| !s.resources.is_empty());
        let declared: BTreeSet<String> = if leftovers && !self.destroy {
            self.desired
                .resources
                .iter()
                .map(|r| r.address.to_string())
                .collect()
        } else {
            BTreeSet::new()
        };
        for (ws, state) in &states {
            for (address, entry) in &state.resources {
                if declared.contains(address) {
                    continue;
                }
                let name = address
                    .split_once('/')
                    .and_then(|(_, local)| local.split_once('.'))
                    .map_or(address.as_str(), |(_, n)| n)
                    .to_string();
                // An endpoint's value names the target that serves it; what else the state
                // records is the store's alone (a target's objects find their owner below).
                let target = (entry.kind == Kind::Endpoint)
                    .then(|| serde_json::from_value::<EndpointValue>(entry.value.clone()).ok())
                    .flatten()
                    .map(|v| v.target);
                changes.push(ResourceChange {
                    address: address.clone(),
                    workspace: ws.clone(),
                    kind: entry.kind,
                    name,
                    actions: vec![Action::Delete],
                    reason: if self.destroy {
                        "destroyed: the workspace is torn down".to_string()
                    } else {
                        "no longer declared in the manifests".to_string()
                    },
                    target,
                    changes: Vec::new(),
                    before: Some(entry.value.clone()),
                    after: None,
                    depends_on: Vec::new(),
                    rollout: None,
                    objects: Vec::new(),
                    sensitive: Vec::new(),
                });
            }
        }

        if self.destroy {
            self.order_teardown(&mut changes);
        }

        // Each target adds its part: objects, capacity.
        for ws in &selected {
            let scope = PlanScope {
                snapshot: self.snapshot,
                desired: self.desired,
                workspace: ws,
                versions: &versions,
                running: &running,
                destroy: self.destroy,
            };
            for target in self.targets.iter() {
                target.plan(&scope, &mut changes, &mut diagnostics);
            }
        }

        diagnostics.sort();
        if diagnostics.has_errors() {
            return Err(Error::Blocked(diagnostics));
        }
        let mut plan = Plan {
            format_version: "1".to_string(),
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
            revision: self.snapshot.head_commit(),
            source: self.source.clone(),
            workspaces,
            resource_changes: changes,
            notes,
            policy: None,
            summary: PlanSummary::default(),
        };
        plan.summarize();
        Ok(plan)
    }

    fn loc(&self, resource: &Resource, span: std::ops::Range<usize>) -> Location {
        Location::new(
            &resource.file,
            self.snapshot.text(&resource.file).unwrap_or(""),
            span,
        )
    }

    fn unsupported(&self, resource: &Resource, what: &str) -> Diagnostic {
        Diagnostic::error("unsupported", format!("{}: {what}", resource.address))
            .at(self.loc(resource, resource.name_span.clone()))
            .help("plan the workspaces that run on the local target with `--workspace <name>`")
    }

    /// Hashes every dataset and imported model source of the selected workspaces, in
    /// parallel.
    fn hash_sources(
        &self,
        selected: &BTreeSet<&str>,
        diagnostics: &mut Diagnostics,
    ) -> HashMap<Address, Content> {
        use rayon::prelude::*;
        let sources: Vec<(&Resource, &toml::Spanned<String>)> = self
            .desired
            .resources
            .iter()
            .filter(|r| selected.contains(r.address.workspace.as_str()))
            .filter_map(|r| match &r.spec {
                Spec::Dataset(d) => Some((r, &d.source)),
                Spec::Model(m) if m.from_job.is_none() => m.source.as_ref().map(|s| (r, s)),
                _ => None,
            })
            .collect();
        let results: Vec<(&Resource, Result<Content, Diagnostic>)> = sources
            .par_iter()
            .map(|(r, source)| {
                let text = source.get_ref();
                if text.contains("://") {
                    return (
                        *r,
                        Err(self.unsupported(r, "object-store sources (`s3://…`) are not available yet")),
                    );
                }
                let Some(path) = join_inside(&r.address.workspace, text) else {
                    return (*r, Err(Diagnostic::error("path-escape", "source leads outside the manifests root").at(self.loc(r, source.span()))));
                };
                let address = r.address.to_string();
                self.events.hashing(&address, 0, 0);
                let on_bytes = |n: u64| self.events.bytes(&address, n);
                let result = content::hash_source(self.snapshot, &path, self.cache, &on_bytes).map_err(|e| {
                    Diagnostic::error("unreadable-source", format!("cannot read the source of {}: {}", r.address.local(), error_chain(&e)))
                        .at(self.loc(r, source.span()))
                        .help("check that the folder exists and is readable; with `--rev`, that it is committed")
                });
                self.events.finished(&address, "hashed", None);
                (*r, result)
            })
            .collect();
        let mut out = HashMap::new();
        for (r, result) in results {
            match result {
                Ok(content) => {
                    if let Spec::Dataset(d) = &r.spec {
                        if let Some(pin) = &d.version {
                            if !content.version.starts_with(pin.get_ref().as_str()) {
                                diagnostics.push(
                                    Diagnostic::error(
                                        "version-mismatch",
                                        format!(
                                            "{} is pinned to version {}, but its content is version {}",
                                            r.address.local(),
                                            pin.get_ref(),
                                            content.version
                                        ),
                                    )
                                    .at(self.loc(r, pin.span()))
                                    .help("the data changed since it was pinned: restore it, or update `version` to the new one"),
                                );
                                continue;
                            }
                        }
                    }
                    out.insert(r.address.clone(), content);
                }
                Err(d) => diagnostics.push(d),
            }
        }
        out
    }

    /// Orders a destroy's deletes in reverse dependency order, as Terraform does: a
    /// resource goes only after everything that uses it (an endpoint before its model
    /// and compute), and the workspace last.
    fn order_teardown(&self, changes: &mut [ResourceChange]) {
        let deleted: BTreeSet<String> = changes
            .iter()
            .filter(|c| c.action() == Action::Delete)
            .map(|c| c.address.clone())
            .collect();
        let mut users: HashMap<String, BTreeSet<String>> = HashMap::new();
        for resource in &self.desired.resources {
            let user = resource.address.to_string();
            if !deleted.contains(&user) {
                continue;
            }
            for dependency in &resource.dependencies {
                users
                    .entry(dependency.address.to_string())
                    .or_default()
                    .insert(user.clone());
            }
        }
        for change in changes.iter_mut().filter(|c| c.action() == Action::Delete) {
            let mut after: BTreeSet<String> = users.remove(&change.address).unwrap_or_default();
            if change.kind == Kind::Workspace {
                after.extend(
                    deleted
                        .iter()
                        .filter(|a| a.split('/').next() == Some(change.workspace.as_str()))
                        .filter(|a| **a != change.address)
                        .cloned(),
                );
            }
            change.depends_on = after.into_iter().collect();
        }
    }

    /// Create, update or no-op, decided by comparing `after` with the applied value.
    fn simple(&self, resource: &Resource, before: Option<Value>, after: Value) -> ResourceChange {
        let (action, reason) = match &before {
            None => (Action::Create, format!("new {}", resource.kind())),
            Some(b) if *b == after => (Action::NoOp, "up to date".to_string()),
            Some(b) => {
                let fields: Vec<String> = diff_values(Some(b), Some(&after))
                    .into_iter()
                    .map(|c| c.path)
                    .collect();
                (Action::Update, format!("changed: {}", fields.join(", ")))
            }
        };
        change(resource, action, reason, before, Some(after))
    }

    async fn dataset(
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
            "source": spec.source.get_ref(),
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

    async fn job(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
    ) -> Result<ResourceChange> {
        let mut change = self.job_change(resource, store, before, versions).await?;
        if let Spec::Job(spec) = &resource.spec {
            change.target = self.target_of(resource, spec.compute.get_ref());
        }
        Ok(change)
    }

    /// A job: its run id from its spec and input versions, run when no successful run
    /// of that id is recorded.
    async fn job_change(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
    ) -> Result<ResourceChange> {
        let Spec::Job(spec) = &resource.spec else {
            unreachable!()
        };
        let ws = resource.address.workspace.as_str();
        let mut inputs = BTreeMap::new();
        for (name, value) in &spec.inputs {
            let Ok(r) = Reference::parse(value.get_ref()) else {
                continue;
            };
            let version = r.pin.clone().or_else(|| {
                versions
                    .get(&Address::new(ws, r.kind, r.name.clone()))
                    .cloned()
            });
            inputs.insert(
                name.get_ref().clone(),
                format!(
                    "{}.{}@{}",
                    r.kind,
                    r.name,
                    version.unwrap_or_else(|| "unknown".into())
                ),
            );
        }
        let identity = json!({
            "job": resource.address.name,
            "compute": spec.compute.get_ref(),
            "instance_type": spec.instance_type.as_ref().map(|s| s.get_ref()),
            "image": spec.image.as_ref().map(|s| s.get_ref()),
            "command": spec.command.as_ref().map(|c| c.get_ref()),
            "env": spec.env,
            "gpus": spec.gpus(),
            "instances": spec.instances(),
            "inputs": inputs,
        });
        let run_id = content::short_hash(identity.to_string().as_bytes());
        let outputs: BTreeMap<String, String> = spec
            .outputs
            .iter()
            .filter_map(|(name, value)| {
                let r = Reference::parse(value.get_ref()).ok()?;
                Some((name.get_ref().clone(), format!("model.{}@{run_id}", r.name)))
            })
            .collect();
        let after = json!({
            "run_id": run_id,
            "compute": spec.compute.get_ref(),
            "instance_type": spec.instance_type.as_ref().map(|s| s.get_ref()),
            "image": spec.image.as_ref().map(|s| s.get_ref()),
            "command": spec.command.as_ref().map(|c| c.get_ref()),
            "env": spec.env,
            "gpus": spec.gpus(),
            "instances": spec.instances(),
            "timeout": spec.timeout.as_ref().map(|t| t.get_ref().to_string()),
            "retries": spec.retries,
            "inputs": inputs,
            "outputs": outputs,
        });

        let old_run = before
            .as_ref()
            .and_then(|b| b.get("run_id"))
            .and_then(Value::as_str);
        if old_run == Some(run_id.as_str()) {
            return Ok(self.simple(resource, before, after));
        }
        let existing = store
            .run(&resource.address.name, &run_id)
            .await
            .map_err(|source| Error::Store {
                workspace: ws.to_string(),
                source,
            })?;
        if existing.is_some_and(|r| r.status == store::RunStatus::Succeeded) {
            let reason = format!("run {run_id} already succeeded; recording it as the current run");
            return Ok(change(
                resource,
                Action::Update,
                reason,
                before,
                Some(after),
            ));
        }
        let reason = match &before {
            None => format!("first run ({run_id})"),
            Some(b) => {
                let mut why = Vec::new();
                let old_inputs = b.get("inputs").cloned().unwrap_or(Value::Null);
                for (name, now) in &inputs {
                    let was = old_inputs.get(name).and_then(Value::as_str);
                    if was != Some(now.as_str()) {
                        match was {
                            Some(was) => why.push(format!(
                                "{} → {}",
                                was,
                                now.rsplit('@').next().unwrap_or(now)
                            )),
                            None => why.push(format!("new input {now}")),
                        }
                    }
                }
                let spec_fields: Vec<String> = diff_values(Some(b), Some(&after))
                    .into_iter()
                    .map(|c| c.path)
                    .filter(|p| {
                        !p.starts_with("inputs") && !p.starts_with("outputs") && p != "run_id"
                    })
                    .collect();
                if !spec_fields.is_empty() {
                    why.push(format!("spec changed: {}", spec_fields.join(", ")));
                }
                if why.is_empty() {
                    format!("no successful run {run_id} yet")
                } else {
                    format!("inputs or spec changed: {}", why.join("; "))
                }
            }
        };
        Ok(change(resource, Action::Run, reason, before, Some(after)))
    }

    /// The name of the target hosting resources on `compute_ref` (`compute.<name>`).
    fn target_of(&self, resource: &Resource, compute_ref: &str) -> Option<String> {
        let compute = self.compute_of(resource, compute_ref)?;
        Some(self.targets.for_compute(compute)?.name().to_string())
    }

    fn compute_of(
        &self,
        resource: &Resource,
        reference: &str,
    ) -> Option<&crate::manifest::ComputeSpec> {
        let r = Reference::parse(reference).ok()?;
        let address = Address::new(resource.address.workspace.clone(), Kind::Compute, r.name);
        match &self.desired.get(&address)?.spec {
            Spec::Compute(c) => Some(c),
            _ => None,
        }
    }

    async fn trained_model(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
        running: &BTreeSet<Address>,
    ) -> Result<ResourceChange> {
        let Spec::Model(spec) = &resource.spec else {
            unreachable!()
        };
        let ws = resource.address.workspace.as_str();
        let job = spec
            .from_job
            .as_ref()
            .and_then(|j| Reference::parse(j.get_ref()).ok())
            .map(|j| Address::new(ws, Kind::Job, j.name));
        let version = job
            .as_ref()
            .and_then(|j| versions.get(j))
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let after = json!({
            "version": version,
            "from_job": spec.from_job.as_ref().map(|j| j.get_ref()),
            "format": spec.format.get_ref(),
        });
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
            let stored = store
                .has_model_version(&resource.address.name, &version)
                .await
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

    /// An endpoint: its deployments resolved to model versions, compared with what the
    /// state recorded and what serves now.
    async fn endpoint(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
        diagnostics: &mut Diagnostics,
    ) -> Result<Option<ResourceChange>> {
        let Spec::Endpoint(spec) = &resource.spec else {
            unreachable!()
        };
        let ws = resource.address.workspace.as_str();
        let Some(compute) = self.compute_of(resource, spec.compute.get_ref()) else {
            return Ok(None);
        };
        let Some(target) = self.targets.for_compute(compute) else {
            // The compute's own change says its target is missing.
            return Ok(None);
        };
        let mut deployments = BTreeMap::new();
        for (name, d) in &spec.deployments {
            let d = d.get_ref();
            let Ok(r) = Reference::parse(d.model.get_ref()) else {
                continue;
            };
            let model = Address::new(ws, Kind::Model, r.name.clone());
            let (version, pinned) = match &r.pin {
                Some(pin) => {
                    let known = versions.get(&model) == Some(pin)
                        || store
                            .has_model_version(&r.name, pin)
                            .await
                            .map_err(|source| Error::Store {
                                workspace: ws.to_string(),
                                source,
                            })?;
                    if !known {
                        diagnostics.push(
                            Diagnostic::error(
                                "model-version",
                                format!(
                                    "{} serves model.{}@{pin}, which is not in the store",
                                    resource.address.local(),
                                    r.name
                                ),
                            )
                            .at(self.loc(resource, d.model.span()))
                            .help("pin a version that exists (`cairn status` lists the current one), or drop the pin to follow the newest"),
                        );
                    }
                    (pin.clone(), true)
                }
                None => (
                    versions
                        .get(&model)
                        .cloned()
                        .unwrap_or_else(|| "unknown".into()),
                    false,
                ),
            };
            deployments.insert(
                name.get_ref().clone(),
                DeploymentValue {
                    model: r.name.clone(),
                    revision: serving::revision(&version, &d.env),
                    version,
                    pinned,
                    replicas: d.replicas(),
                    env: d.env.clone(),
                },
            );
        }
        let rollout = match &spec.rollout {
            Some(r) => {
                let r = r.get_ref();
                RolloutValue {
                    steps: r.steps.get_ref().clone(),
                    step_wait: r
                        .step_wait
                        .as_ref()
                        .map_or_else(|| "30s".to_string(), |d| d.to_string()),
                    max_error_rate: r.max_error_rate.as_ref().map(|v| *v.get_ref()),
                    max_p99_ms: r.max_p99_ms.as_ref().map(|v| *v.get_ref()),
                    auto_rollback: r.auto_rollback,
                    mirror: r.mirror.as_ref().map(|m| *m.get_ref()),
                    scale_down_delay: r.scale_down_delay.as_ref().map_or_else(
                        || {
                            humantime::format_duration(serving::DEFAULT_SCALE_DOWN_DELAY)
                                .to_string()
                        },
                        |d| d.to_string(),
                    ),
                }
            }
            None => RolloutValue::immediate(),
        };
        let after = EndpointValue {
            compute: spec.compute.get_ref().clone(),
            target: target.name().to_string(),
            port: spec.port.as_ref().map(|p| *p.get_ref()),
            auth: serde_json::to_value(spec.auth)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_else(|| "key".into()),
            traffic: spec.weights().map(|(n, w)| (n.to_string(), w)).collect(),
            mirror: spec.mirror.as_ref().and_then(|m| {
                m.get_ref()
                    .iter()
                    .next()
                    .map(|(n, p)| serving::MirrorValue {
                        deployment: n.get_ref().clone(),
                        percent: *p.get_ref(),
                    })
            }),
            deployments,
            rollout,
        };
        let before_value: Option<EndpointValue> = before
            .as_ref()
            .and_then(|b| serde_json::from_value(b.clone()).ok());
        let address = resource.address.to_string();
        let observed;
        let live = match target.live_endpoint(&address) {
            Observed::Live(live) => live,
            Observed::Unknown => {
                // Not observed: assume what the state recorded still serves.
                observed = before_value.as_ref().map(assumed_live);
                observed.as_ref()
            }
        };
        let after_json = serde_json::to_value(&after).expect("endpoint values serialize");
        let mut rollout_plan = None;
        let (action, reason) = match serving::decide(before_value.as_ref(), &after, live) {
            Decision::NoOp => (Action::NoOp, "up to date".to_string()),
            Decision::Create(reason) => (Action::Create, reason),
            Decision::Update(reason) => (Action::Update, reason),
            Decision::Rollout(reason, mut plan) => {
                target.shape_rollout(
                    &EndpointRollout {
                        address: &resource.address,
                        compute,
                        compute_ref: spec.compute.get_ref(),
                        after: &after,
                        live,
                    },
                    &mut plan,
                );
                rollout_plan = Some(plan);
                (Action::Rollout, reason)
            }
        };
        let mut c = change(resource, action, reason, before, Some(after_json));
        c.rollout = rollout_plan;
        c.target = Some(target.name().to_string());
        Ok(Some(c))
    }

    fn imported_model(
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

fn change(
    resource: &Resource,
    action: Action,
    reason: String,
    before: Option<Value>,
    after: Option<Value>,
) -> ResourceChange {
    let changes = if action == Action::NoOp || before.is_none() {
        Vec::new()
    } else {
        diff_values(before.as_ref(), after.as_ref())
    };
    ResourceChange {
        address: resource.address.to_string(),
        workspace: resource.address.workspace.clone(),
        kind: resource.kind(),
        name: resource.address.name.clone(),
        actions: vec![action],
        reason,
        before,
        after,
        changes,
        depends_on: resource
            .dependencies
            .iter()
            .map(|d| d.address.to_string())
            .collect(),
        rollout: None,
        target: None,
        objects: Vec::new(),
        sensitive: redact::marked(&resource.spec),
    }
}

/// What the state says serves an endpoint, for plans made without observing serving.
fn assumed_live(value: &EndpointValue) -> LiveEndpoint {
    LiveEndpoint {
        port: value.port,
        serving: true,
        error: None,
        backends: value
            .deployments
            .iter()
            .filter(|(_, d)| d.replicas > 0)
            .map(|(n, d)| {
                (
                    n.clone(),
                    serving::LiveBackend {
                        deployment: n.clone(),
                        revision: d.revision.clone(),
                        replicas: d.replicas,
                        ready_replicas: d.replicas,
                    },
                )
            })
            .collect(),
        weights: value.traffic.clone(),
        idle: Default::default(),
    }
}

fn strip_description(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.remove("description");
    }
    value
}

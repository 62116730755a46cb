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
use crate::backend::target::{kind_name, PlanScope, Targets};
use crate::content::HashCache;
use crate::desired::{DesiredState, Resource};
use crate::diagnostics::{Diagnostic, Diagnostics, Location, Severity};
use crate::events::Events;
use crate::manifest::{Snapshot, Spec};
use crate::plan::{
    diff_values, redact, Action, Plan, PlanSource, PlanSummary, PlanWorkspace, ResourceChange,
};
use crate::serving::{self, EndpointValue, LiveEndpoint};

mod data;
mod endpoints;
mod jobs;
mod sources;

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
                Spec::Dataset(spec) if spec.from_job.is_some() => {
                    let change = self.produced(resource, store, before, &versions, &running).await?;
                    if let Some(v) = change.after.as_ref().and_then(|a| a.get("version")).and_then(Value::as_str) {
                        versions.insert(resource.address.clone(), v.to_string());
                    }
                    Some(change)
                }
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
                        let change = self.produced(resource, store, before, &versions, &running).await?;
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
        // What a target could not check (capacity it may not read) is said, not refused.
        let mut notes = notes;
        for warning in diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            let note = match &warning.help {
                Some(help) => format!("{} ({help})", warning.message),
                None => warning.message.clone(),
            };
            if !notes.contains(&note) {
                notes.push(note);
            }
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
                        scaled: Vec::new(),
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

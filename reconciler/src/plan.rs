//! Plans: what `apply` will do, to which resource, and why.
//!
//! The planner pairs each desired resource with what the workspace's store says was
//! applied (`state.json`) and what exists there (dataset versions, runs, model versions),
//! and decides an [`Action`] with a human reason. Versions flow down the graph in apply
//! order: a dataset's content hash becomes part of the identity of the jobs that read it,
//! a job's run id becomes the version of the model it outputs. So one plan shows the whole
//! chain "data changed → retrain → new model version".
//!
//! A plan is plain data, serialisable as JSON (`cairn plan -o plan.json`), and applying a
//! saved plan does exactly what it lists. Plans are deterministic: the same manifests and
//! the same store give byte-identical plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::address::{Address, Kind, Reference};
use crate::backend::kubernetes::{compute_namespace, revision_object_name, Renderer};
use crate::backend::store::{self, Store};
use crate::content::{self, Content, ContentDiff, HashCache};
use crate::desired::{DesiredState, Resource};
use crate::diagnostics::{error_chain, Diagnostic, Diagnostics, Location};
use crate::events::Events;
use crate::manifest::source::join_inside;
use crate::manifest::{Snapshot, Spec, Target};
use crate::plan_objects::{self, KubeLive, ObjectChange};
use crate::serving::{
    self, Decision, DeploymentValue, EndpointValue, LiveEndpoint, RolloutPlan, RolloutValue,
};

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
    /// Run a job.
    Run,
    /// Roll a new version out to an endpoint.
    Rollout,
}

impl Action {
    /// The symbol in text plans.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Run => "▶",
            Action::Rollout => "»",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::NoOp => "no-op",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Run => "run",
            Action::Rollout => "rollout",
        }
    }
}

/// One field that differs between what was applied and what is declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// `command[3]`, `env.SEED`, `version`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// The planned change of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    pub workspace: String,
    pub kind: Kind,
    pub name: String,
    pub actions: Vec<Action>,
    /// Why, in one line: "dataset.loans changed: 1 file modified".
    pub reason: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Addresses this change waits for during apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// For a rollout: the weights at each step and the gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPlan>,
    /// For resources on Kubernetes: the objects to create, update, replace or delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectChange>,
    /// `env` keys the manifest marks sensitive (besides those that look like secrets):
    /// their values are hidden wherever the plan is shown or saved ([`crate::redact`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
}

impl ResourceChange {
    pub fn action(&self) -> Action {
        self.actions.first().copied().unwrap_or(Action::NoOp)
    }

    pub fn is_noop(&self) -> bool {
        self.action() == Action::NoOp
    }

    /// `kind.name`, the address inside the workspace.
    pub fn local(&self) -> String {
        format!("{}.{}", self.kind, self.name)
    }
}

/// Where the plan's manifests came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSource {
    /// The manifests root as given.
    pub root: String,
    /// The Git revision as given (`--rev`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
}

/// The state of a workspace's store the plan was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanWorkspace {
    pub name: String,
    pub store: String,
    pub state_serial: u64,
    /// Changes whenever the state is written; a saved plan whose etag no longer matches
    /// is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_etag: Option<String>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub run: usize,
    pub rollout: usize,
    pub unchanged: usize,
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub cairn_version: String,
    /// The Git commit the manifests were read at: the `--rev` commit, or for a working
    /// tree the commit `HEAD` points at (uncommitted changes included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub source: PlanSource,
    pub workspaces: Vec<PlanWorkspace>,
    pub resource_changes: Vec<ResourceChange>,
    /// Things the reader should know that are not changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What the policies said; `None` when they were not evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyReport>,
    pub summary: PlanSummary,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resource_changes.iter().any(|c| !c.is_noop())
    }

    /// The changes that do something.
    pub fn changes(&self) -> impl Iterator<Item = &ResourceChange> {
        self.resource_changes.iter().filter(|c| !c.is_noop())
    }

    /// The plan as JSON, with its sensitive `env` values hidden (see [`crate::redact`]):
    /// a saved plan holds no secret; applying it restores them from the manifests.
    pub fn to_json(&self) -> String {
        let redacted = crate::redact::plan(self, crate::redact::Redaction::Sensitive);
        serde_json::to_string_pretty(&redacted).expect("plans serialize")
    }

    /// A short hash of the plan's content, recorded in the journal.
    pub fn hash(&self) -> String {
        content::short_hash(self.to_json().as_bytes())
    }

    pub fn from_json(text: &str) -> Result<Plan, serde_json::Error> {
        serde_json::from_str(text)
    }

    fn summarize(&mut self) {
        let mut s = PlanSummary::default();
        for c in &self.resource_changes {
            match c.action() {
                Action::NoOp => s.unchanged += 1,
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1
                }
                Action::Delete => s.destroy += 1,
                Action::Run => s.run += 1,
                Action::Rollout => s.rollout += 1,
            }
        }
        self.summary = s;
    }
}

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
    /// GPUs found on this machine (for jobs on the local target).
    pub local_gpus: usize,
    pub events: &'a dyn Events,
    /// The manifests root as the user gave it, and `--rev`.
    pub source: PlanSource,
    /// What serves each endpoint now, by address; `None` when serving was not observed
    /// (endpoints are then compared with the state alone).
    pub serving: Option<&'a BTreeMap<String, LiveEndpoint>>,
    /// What is live on Kubernetes; needed when a planned workspace has a `kubernetes`
    /// compute.
    pub kube: Option<&'a KubeLive>,
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
        let contents =
            tokio::task::block_in_place(|| self.hash_sources(&selected, &mut diagnostics));

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
            if !selected.contains(ws) {
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
                Spec::Compute(spec) => {
                    if *spec.target.get_ref() == Target::Kubernetes && self.kube.is_none() {
                        diagnostics.push(self.unsupported(resource, "its clusters were not observed"));
                        None
                    } else {
                        Some(self.simple(resource, before, strip_description(serde_json::to_value(spec).expect("specs serialize"))))
                    }
                }
                Spec::Dataset(_) => match contents.get(&resource.address) {
                    Some(content) => {
                        versions.insert(resource.address.clone(), content.version.clone());
                        Some(self.dataset(resource, store, before, content).await?)
                    }
                    None => None,
                },
                Spec::Job(_) => {
                    let change = self.job(resource, store, before, &versions, &mut diagnostics).await?;
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
        let declared: BTreeSet<String> = if leftovers {
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
                changes.push(ResourceChange {
                    address: address.clone(),
                    workspace: ws.clone(),
                    kind: entry.kind,
                    name,
                    actions: vec![Action::Delete],
                    reason: "no longer declared in the manifests".to_string(),
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

        if let Some(kube) = self.kube {
            self.kubernetes(
                kube,
                &selected,
                &versions,
                &running,
                &mut changes,
                &mut diagnostics,
            );
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

    /// The Kubernetes objects of the planned workspaces: rendered with the versions
    /// found while planning, paired with the live ones, attached to the resources that
    /// own them; and the GPUs the planned runs ask for, checked against each
    /// namespace's quota and the cluster's nodes.
    fn kubernetes(
        &self,
        kube: &KubeLive,
        selected: &BTreeSet<&str>,
        versions: &Versions,
        running: &BTreeSet<Address>,
        changes: &mut Vec<ResourceChange>,
        diagnostics: &mut Diagnostics,
    ) {
        let on_kubernetes = |ws: &str| {
            self.desired.resources.iter().any(|r| {
                r.address.workspace == ws
                    && matches!(&r.spec, Spec::Compute(c) if *c.target.get_ref() == Target::Kubernetes)
            })
        };
        let renderer = match Renderer::from_snapshot(self.snapshot) {
            Ok(r) => r.with_revision(self.snapshot.head_commit()),
            Err(e) => {
                diagnostics.push(kube_diagnostic(&e));
                return;
            }
        };
        for ws in selected.iter().copied().filter(|ws| on_kubernetes(ws)) {
            let desired = match renderer.desired_objects(self.desired, ws, versions) {
                Ok(objects) => objects,
                Err(e) => {
                    diagnostics.push(kube_diagnostic(&e));
                    continue;
                }
            };
            let current_jobs = desired
                .iter()
                .filter(|o| o.kind == "Job")
                .filter(|o| {
                    plan_objects::address_of(&o.value)
                        .and_then(|a| Address::parse(&a))
                        .is_some_and(|a| running.contains(&a))
                })
                .map(|o| o.key())
                .collect();
            let live: Vec<_> = kube
                .objects
                .iter()
                .filter(|o| o.is_managed_by(ws))
                .cloned()
                .collect();
            for (address, objects) in plan_objects::compare(&desired, &live, &current_jobs) {
                match changes.iter_mut().find(|c| c.address == address) {
                    Some(change) => {
                        if change.is_noop() {
                            change.actions = vec![Action::Update];
                            change.reason = plan_objects::summarize(&objects);
                        }
                        change.objects = objects;
                    }
                    None => changes.push(orphans(ws, &address, objects)),
                }
            }
            self.gpu_capacity(kube, ws, changes, diagnostics);
        }
    }

    /// Refuses runs, and the endpoint revisions a change starts, that need more GPUs
    /// than their namespace's quota leaves free or than the cluster's nodes have. A
    /// rollout runs the new revision beside the old one, so its GPUs count in full.
    fn gpu_capacity(
        &self,
        kube: &KubeLive,
        ws: &str,
        changes: &[ResourceChange],
        diagnostics: &mut Diagnostics,
    ) {
        /// One workload asking for GPUs: its resource, GPUs, how they add up, and the
        /// manifest's `gpus` line.
        struct Need<'r> {
            resource: &'r Resource,
            gpus: u64,
            how: String,
            at: Option<std::ops::Range<usize>>,
            run: bool,
        }
        let gpus_of = |n: u64| format!("{n} GPU{}", if n == 1 { "" } else { "s" });
        let resources: HashMap<String, &Resource> = self
            .desired
            .resources
            .iter()
            .filter(|r| r.address.workspace == ws)
            .map(|r| (r.address.to_string(), r))
            .collect();
        // (context, namespace) → what needs GPUs there.
        let mut needs: BTreeMap<(Option<String>, String), Vec<Need>> = BTreeMap::new();
        for change in changes.iter().filter(|c| c.workspace == ws) {
            let Some(&resource) = resources.get(&change.address) else {
                continue;
            };
            match &resource.spec {
                Spec::Job(job) if change.action() == Action::Run => {
                    let Some(compute) = self.compute_of(resource, job.compute.get_ref()) else {
                        continue;
                    };
                    if *compute.target.get_ref() != Target::Kubernetes || job.gpus() == 0 {
                        continue;
                    }
                    let gpus = u64::from(job.gpus()) * u64::from(job.instances());
                    let how = if job.instances() > 1 {
                        format!("{} instances × {} GPUs", job.instances(), job.gpus())
                    } else {
                        gpus_of(u64::from(job.gpus()))
                    };
                    let namespace = self.kube_namespace(ws, compute);
                    let context = compute.context.as_ref().map(|c| c.get_ref().clone());
                    needs.entry((context, namespace)).or_default().push(Need {
                        resource,
                        gpus,
                        how,
                        at: job.gpus.as_ref().map(|g| g.span()),
                        run: true,
                    });
                }
                Spec::Endpoint(endpoint) => {
                    // The Deployments this change creates: new revisions.
                    for o in change.objects.iter().filter(|o| {
                        o.kind == "Deployment"
                            && matches!(o.action, Action::Create | Action::Replace)
                    }) {
                        let Some(object) = &o.object else { continue };
                        let replicas = object
                            .pointer("/spec/replicas")
                            .and_then(Value::as_u64)
                            .unwrap_or(1);
                        let per_pod: u64 = object
                            .pointer("/spec/template/spec/containers")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|c| {
                                let gpus = c.pointer("/resources/requests/nvidia.com~1gpu")?;
                                gpus.as_u64()
                                    .or_else(|| gpus.as_str().and_then(|g| g.parse().ok()))
                            })
                            .sum();
                        if per_pod == 0 || replicas == 0 {
                            continue;
                        }
                        let deployment = object
                            .pointer("/metadata/labels/cairn.dev~1deployment")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let at = endpoint
                            .deployments
                            .iter()
                            .find(|(name, _)| name.get_ref() == deployment)
                            .and_then(|(_, d)| d.get_ref().gpus.as_ref().map(|g| g.span()));
                        needs
                            .entry((o.context.clone(), o.namespace.clone().unwrap_or_default()))
                            .or_default()
                            .push(Need {
                                resource,
                                gpus: replicas * per_pod,
                                how: format!(
                                    "deployment {deployment}: {replicas} replica{} × {}",
                                    if replicas == 1 { "" } else { "s" },
                                    gpus_of(per_pod)
                                ),
                                at,
                                run: false,
                            });
                    }
                }
                _ => {}
            }
        }
        for ((context, namespace), asks) in needs {
            let Some(capacity) = kube.capacity.get(&(context.clone(), namespace.clone())) else {
                continue;
            };
            let total: u64 = asks.iter().map(|n| n.gpus).sum();
            let place = match &context {
                Some(c) => format!("namespace `{namespace}` (context `{c}`)"),
                None => format!("namespace `{namespace}`"),
            };
            let mut problems = Vec::new();
            if let Some(hard) = capacity.quota_hard {
                let used = capacity.quota_used.unwrap_or(0);
                let free = hard.saturating_sub(used);
                if total > free {
                    problems.push(format!(
                        "its ResourceQuota allows {hard} GPUs and {used} are in use ({free} free)"
                    ));
                }
            }
            if let Some(nodes) = capacity.nodes_allocatable {
                if total > nodes {
                    problems.push(format!("the cluster's nodes have {nodes} allocatable GPUs"));
                }
            }
            if problems.is_empty() {
                continue;
            }
            let what = match (asks.iter().any(|n| n.run), asks.iter().any(|n| !n.run)) {
                (true, false) => "runs",
                (false, true) => "endpoint revisions",
                _ => "runs and endpoint revisions",
            };
            let asked: Vec<String> = asks
                .iter()
                .map(|n| {
                    format!(
                        "{} needs {} ({})",
                        n.resource.address.local(),
                        n.gpus,
                        n.how
                    )
                })
                .collect();
            for need in &asks {
                let mut d = Diagnostic::error(
                    "gpu-capacity",
                    format!(
                        "{}: the planned {what} need {} in {place}, but {}",
                        need.resource.address.local(),
                        gpus_of(total),
                        problems.join(", and ")
                    ),
                )
                .help(format!(
                    "{}; lower `gpus`, `instances` or `replicas`, or raise the quota",
                    asked.join("; ")
                ));
                if let Some(span) = &need.at {
                    d = d.at(self.loc(need.resource, span.clone()));
                }
                diagnostics.push(d);
            }
        }
    }

    /// The namespace a compute's objects live in.
    fn kube_namespace(&self, ws: &str, compute: &crate::manifest::ComputeSpec) -> String {
        match self.desired.get(&Address::workspace(ws)).map(|r| &r.spec) {
            Some(Spec::Workspace(spec)) => compute_namespace(ws, spec, compute),
            _ => ws.to_string(),
        }
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
        diagnostics: &mut Diagnostics,
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

        // GPUs on this machine are known now; a job that can't get them is refused here.
        if let Some(compute) = self.compute_of(resource, spec.compute.get_ref()) {
            let wanted = spec.gpus() as usize * spec.instances() as usize;
            if *compute.target.get_ref() == Target::Local && wanted > self.local_gpus {
                let span = spec
                    .gpus
                    .as_ref()
                    .map_or(resource.name_span.clone(), |g| g.span());
                diagnostics.push(
                    Diagnostic::error(
                        "no-gpus",
                        format!(
                            "{} needs {wanted} GPU(s), but this machine has {} (found through the CUDA driver)",
                            resource.address.local(),
                            self.local_gpus
                        ),
                    )
                    .at(self.loc(resource, span))
                    .help("set `gpus = 0` to train on the CPU, or run the job on a compute with GPUs"),
                );
            }
        }

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
        let target = *compute.target.get_ref();
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
            target: match target {
                Target::Local => "local",
                Target::Kubernetes => "kubernetes",
            }
            .to_string(),
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
        let live = match self.serving {
            Some(map) if target == Target::Local => map.get(&address),
            _ => {
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
                if target == Target::Kubernetes {
                    // On a cluster, backends are the revisions' Services: name them so.
                    let before_revisions: BTreeMap<String, String> = live
                        .map(|l| {
                            l.backends
                                .iter()
                                .map(|(n, b)| (n.clone(), b.revision.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let endpoint = resource.address.name.as_str();
                    let rename = |weights: &crate::rollout::Weights| -> crate::rollout::Weights {
                        weights
                            .iter()
                            .map(|(name, w)| {
                                let (deployment, revision) = match name.split_once('@') {
                                    Some((d, r)) => (d, Some(r.to_string())),
                                    None => (
                                        name.as_str(),
                                        before_revisions.get(name).cloned().or_else(|| {
                                            after.deployments.get(name).map(|d| d.revision.clone())
                                        }),
                                    ),
                                };
                                let object = revision.map_or_else(
                                    || name.clone(),
                                    |r| revision_object_name(endpoint, deployment, &r),
                                );
                                (object, *w)
                            })
                            .collect()
                    };
                    plan.from = rename(&plan.from);
                    plan.to = rename(&plan.to);
                    plan.steps = plan.steps.iter().map(rename).collect();
                }
                if target == Target::Kubernetes && compute.gateway.is_none() {
                    // A Service selector sends everything to one revision: one step.
                    plan.steps = vec![plan.to.clone()];
                    plan.summary = format!(
                        "all at once by the endpoint Service's selector (0/100), then held {} under the gates",
                        after.rollout.step_wait
                    );
                    if serving::effective_steps(&after.rollout.steps) != [100] {
                        plan.summary.push_str(&format!(
                            "; steps {} need a `gateway` on {}",
                            describe_steps(&after.rollout.steps),
                            spec.compute.get_ref()
                        ));
                    }
                } else if target == Target::Kubernetes {
                    plan.summary = format!("{} (HTTPRoute weights)", plan.summary);
                }
                rollout_plan = Some(plan);
                (Action::Rollout, reason)
            }
        };
        let mut c = change(resource, action, reason, before, Some(after_json));
        c.rollout = rollout_plan;
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

/// A job's run id computed again from its planned value (`after`), as the planner
/// computes it from the spec: a saved plan whose restored values give another id was
/// made with other values.
pub fn run_id_of(job: &str, after: &Value) -> String {
    let field = |k: &str| after.get(k).cloned().unwrap_or(Value::Null);
    let identity = json!({
        "job": job,
        "compute": field("compute"),
        "instance_type": field("instance_type"),
        "image": field("image"),
        "command": field("command"),
        "env": after.get("env").cloned().unwrap_or_else(|| json!({})),
        "gpus": field("gpus"),
        "instances": field("instances"),
        "inputs": after.get("inputs").cloned().unwrap_or_else(|| json!({})),
    });
    content::short_hash(identity.to_string().as_bytes())
}

/// `[10, 50, 100]`.
fn describe_steps(steps: &[u32]) -> String {
    let steps: Vec<String> = steps.iter().map(u32::to_string).collect();
    format!("[{}]", steps.join(", "))
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
        objects: Vec::new(),
        sensitive: crate::redact::marked(&resource.spec),
    }
}

/// A change for live objects whose resource is gone from both the manifests and the
/// state: they are deleted.
fn orphans(ws: &str, address: &str, objects: Vec<ObjectChange>) -> ResourceChange {
    let parsed = Address::parse(address);
    ResourceChange {
        address: if address.is_empty() {
            format!("{ws}/?")
        } else {
            address.to_string()
        },
        workspace: ws.to_string(),
        kind: parsed.as_ref().map_or(Kind::Compute, |a| a.kind),
        name: parsed.map_or_else(|| address.to_string(), |a| a.name),
        actions: vec![Action::Delete],
        reason: format!("no longer declared: {}", plan_objects::summarize(&objects)),
        before: None,
        after: None,
        changes: Vec::new(),
        depends_on: Vec::new(),
        rollout: None,
        sensitive: Vec::new(),
        objects,
    }
}

fn kube_diagnostic(e: &crate::backend::kubernetes::Error) -> Diagnostic {
    let d = Diagnostic::error("kubernetes", error_chain(e));
    match e.hint() {
        Some(h) => d.help(h),
        None => d,
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

/// Lists the leaf fields that differ between two JSON values, in key order. Arrays of
/// scalars compare as a whole; arrays of tables element by element.
pub fn diff_values(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    diff_into(&mut out, String::new(), before, after);
    out
}

fn diff_into(
    out: &mut Vec<FieldChange>,
    path: String,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                diff_into(
                    out,
                    join(key),
                    b.get(key).filter(|v| !v.is_null()),
                    a.get(key).filter(|v| !v.is_null()),
                );
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a)))
            if b.iter().chain(a).any(|v| v.is_object()) =>
        {
            for i in 0..b.len().max(a.len()) {
                diff_into(out, format!("{path}[{i}]"), b.get(i), a.get(i));
            }
        }
        (b, a) if b != a => out.push(FieldChange {
            path,
            before: b.cloned(),
            after: a.cloned(),
        }),
        _ => {}
    }
}

/// "1 file", "3 files".
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// "41.2 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_leaf_fields() {
        let b = json!({"a": 1, "env": {"X": "1", "Y": "2"}, "cmd": ["a", "b"]});
        let a = json!({"a": 1, "env": {"X": "1", "Z": "3"}, "cmd": ["a", "c"]});
        let paths: Vec<String> = diff_values(Some(&b), Some(&a))
            .into_iter()
            .map(|c| c.path)
            .collect();
        assert_eq!(paths, ["cmd", "env.Y", "env.Z"]);
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(42_188), "41.2 KiB");
    }
}

//! The Kubernetes part of a plan: the objects each resource needs in its clusters, how
//! they differ from what is live, and whether the GPUs the plan asks for fit.
//!
//! This module owns pairing desired objects (rendered from the templates) with live ones
//! (read before planning by label, see [`KubeLive`]) and turning the differences into
//! [`ObjectChange`]s grouped by the resource that owns them (the `cairn.dev/address`
//! annotation). It does no I/O: the CLI observes the clusters, the planner calls this.
//!
//! Rules:
//! - A desired object that is not live is created; one whose managed fields differ is
//!   updated, or replaced when a changed field is immutable (a Job's template); one that
//!   matches is left out of the plan.
//! - A live object carrying Cairn's labels for the workspace that nothing desires any
//!   more is deleted (pruned). Objects without the labels are never seen, so never
//!   touched; a namespace that exists without them is used as it is (not created).
//! - A run's Jobs (training, upload) are desired only while the run is planned: a
//!   finished run's Jobs are neither recreated nor compared, and Jobs of other runs are
//!   pruned. A planned run's Job that is already live and unchanged (an apply that died
//!   while waiting) is listed as a no-op, so the next apply waits for it instead of
//!   starting another. A run's outputs volume (PersistentVolumeClaim) is the same while
//!   the run is planned; apply deletes it after the upload, and one a finished run left
//!   behind (an apply that died) is pruned.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    diff, Capacity, KubeObject, LiveObject, ObjectKey, Renderer, ANNOTATION_ADDRESS, TARGET,
};
use crate::address::{Address, Kind};
use crate::backend::target::PlanScope;
use crate::diagnostics::{error_chain, Diagnostic, Diagnostics};
use crate::manifest::{Spec, Target};
use crate::plan::{Action, FieldChange, ObjectChange, ResourceChange};

/// What is live on Kubernetes for the workspaces being planned, read before planning.
#[derive(Debug, Clone, Default)]
pub struct KubeLive {
    /// Every object carrying Cairn's labels for those workspaces, in the namespaces
    /// their computes use.
    pub objects: Vec<LiveObject>,
    /// GPU capacity per (kube context, namespace).
    pub capacity: BTreeMap<(Option<String>, String), Capacity>,
    /// The (kube context, namespace) pairs the computes use that exist but are not the
    /// workspace's (a platform team's, another workspace's): apply uses them as they
    /// are, so they are neither planned for creation nor compared.
    pub foreign_namespaces: BTreeSet<(Option<String>, String)>,
    /// What observing could not see (RBAC), per workspace: shown as the plan's notes.
    pub notes: Vec<(String, String)>,
}

/// What the Kubernetes target reads off a planned object change.
pub trait ObjectChangeExt {
    /// The object's identity in its cluster.
    fn key(&self) -> ObjectKey;
    /// The desired object, for applying; `None` for a delete.
    fn desired(&self) -> Option<KubeObject>;
}

impl ObjectChangeExt for ObjectChange {
    fn key(&self) -> ObjectKey {
        ObjectKey::new(
            self.context.as_deref(),
            &self.api_version,
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }

    fn desired(&self) -> Option<KubeObject> {
        self.object.as_ref().map(|value| KubeObject {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            context: self.context.clone(),
            value: value.clone(),
        })
    }
}

/// Whether an object belongs to one run of a job: its Jobs and its outputs volume.
fn is_run_object(object: &KubeObject) -> bool {
    matches!(
        (object.kind.as_str(), object.api_version.as_str()),
        ("Job", "batch/v1") | ("PersistentVolumeClaim", "v1")
    )
}

/// Pairs `desired` with `live` and returns the changes by owning resource address.
/// `current_runs` holds the run objects (by key: Jobs, outputs volumes) whose runs are
/// planned: other desired Jobs are left alone, other outputs volumes pruned.
pub fn compare(
    desired: &[KubeObject],
    live: &[LiveObject],
    current_runs: &BTreeSet<ObjectKey>,
) -> BTreeMap<String, Vec<ObjectChange>> {
    let live_by_key: BTreeMap<ObjectKey, &LiveObject> =
        live.iter().map(|l| (l.key.clone(), l)).collect();
    let mut wanted: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut out: BTreeMap<String, Vec<ObjectChange>> = BTreeMap::new();
    for object in desired {
        let key = object.key();
        let is_run = is_run_object(object);
        if is_run && !current_runs.contains(&key) {
            // A finished run's Job: neither recreated nor compared, but kept. Its
            // outputs volume has been uploaded from: not wanted.
            if object.kind == "Job" {
                wanted.insert(key);
            }
            continue;
        }
        wanted.insert(key.clone());
        let address = address_of(&object.value).unwrap_or_default();
        let change = match live_by_key.get(&key) {
            None => Some(ObjectChange::new(
                Action::Create,
                object,
                Vec::new(),
                Vec::new(),
            )),
            Some(live) => {
                let d = diff(object, &live.value);
                if !d.immutable.is_empty() {
                    Some(ObjectChange::new(
                        Action::Replace,
                        object,
                        d.changes,
                        d.immutable,
                    ))
                } else if !d.changes.is_empty() {
                    Some(ObjectChange::new(
                        Action::Update,
                        object,
                        d.changes,
                        Vec::new(),
                    ))
                } else if is_run {
                    // Its run is planned: the apply waits for this Job (writes to this
                    // volume).
                    Some(ObjectChange::new(
                        Action::NoOp,
                        object,
                        Vec::new(),
                        Vec::new(),
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(change) = change {
            out.entry(address).or_default().push(change);
        }
    }
    for l in live {
        if wanted.contains(&l.key) {
            continue;
        }
        let address = address_of(&l.value).unwrap_or_default();
        out.entry(address).or_default().push(ObjectChange {
            action: Action::Delete,
            context: l.key.context.clone(),
            api_version: l.api_version.clone(),
            kind: l.key.kind.clone(),
            namespace: l.key.namespace.clone(),
            name: l.key.name.clone(),
            changes: Vec::new(),
            immutable: Vec::new(),
            object: None,
        });
    }
    out
}

impl ObjectChange {
    fn new(
        action: Action,
        object: &KubeObject,
        changes: Vec<FieldChange>,
        immutable: Vec<String>,
    ) -> ObjectChange {
        ObjectChange {
            action,
            context: object.context.clone(),
            api_version: object.api_version.clone(),
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            changes,
            immutable,
            object: Some(object.value.clone()),
        }
    }
}

/// The `cairn.dev/address` annotation of an object.
pub fn address_of(value: &Value) -> Option<String> {
    value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_ADDRESS))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// One line saying what happens to a resource's objects: "2 Kubernetes objects to
/// create (Namespace imaging-train, ResourceQuota …)" or "drift: Deployment x:
/// spec.replicas".
pub fn summarize(changes: &[ObjectChange]) -> String {
    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let mut parts = Vec::new();
    for (action, verb) in [
        (Action::Create, "to create"),
        (Action::Update, "to update"),
        (Action::Replace, "to replace"),
        (Action::Delete, "to delete"),
    ] {
        let n = count(action);
        if n > 0 {
            parts.push(format!("{n} {verb}"));
        }
    }
    let drifted: Vec<String> = changes
        .iter()
        .filter(|c| c.action == Action::Update || c.action == Action::Replace)
        .take(3)
        .map(|c| {
            let fields: Vec<&str> = c.changes.iter().take(3).map(|f| f.path.as_str()).collect();
            format!("{} ({})", c.describe(), fields.join(", "))
        })
        .collect();
    let mut line = format!(
        "Kubernetes object{}: {}",
        if changes.len() == 1 { "" } else { "s" },
        parts.join(", ")
    );
    if !drifted.is_empty() {
        line.push_str("; differs from the manifests: ");
        line.push_str(&drifted.join("; "));
    }
    line
}

/// The Kubernetes part of one workspace's plan: its objects rendered with the versions
/// found while planning, paired with the live ones, attached to the resources that own
/// them (those changes' target becomes `kubernetes`); and the GPUs the planned runs ask
/// for, checked against each namespace's quota and the cluster's nodes
/// ([`super::gpu_fit`]). A destroy desires no object: every live one is deleted.
pub fn plan_workspace(
    live: &KubeLive,
    scope: &PlanScope<'_>,
    changes: &mut Vec<ResourceChange>,
    diagnostics: &mut Diagnostics,
) {
    let ws = scope.workspace;
    let on_kubernetes = scope.desired.resources.iter().any(|r| {
        r.address.workspace == ws
            && matches!(&r.spec, Spec::Compute(c) if *c.target.get_ref() == Target::Kubernetes)
    });
    if !on_kubernetes {
        return;
    }
    let desired = if scope.destroy {
        Vec::new()
    } else {
        let rendered = Renderer::from_snapshot(scope.snapshot).and_then(|r| {
            r.with_revision(scope.snapshot.head_commit())
                .desired_objects(scope.desired, ws, scope.versions)
        });
        match rendered {
            Ok(objects) => objects
                .into_iter()
                .filter(|o| {
                    o.kind != "Namespace"
                        || !live
                            .foreign_namespaces
                            .contains(&(o.context.clone(), o.name.clone()))
                })
                .collect(),
            Err(e) => {
                // A template error is the same for every workspace: say it once.
                let d = kube_diagnostic(&e);
                if !diagnostics.iter().any(|known| *known == d) {
                    diagnostics.push(d);
                }
                return;
            }
        }
    };
    let current_runs = desired
        .iter()
        .filter(|o| is_run_object(o))
        .filter(|o| {
            address_of(&o.value)
                .and_then(|a| Address::parse(&a))
                .is_some_and(|a| scope.running.contains(&a))
        })
        .map(|o| o.key())
        .collect();
    let live_objects: Vec<_> = live
        .objects
        .iter()
        .filter(|o| o.is_managed_by(ws))
        .cloned()
        .collect();
    for (address, mut objects) in compare(&desired, &live_objects, &current_runs) {
        if scope.destroy {
            // A destroy leaves the namespaces in place, as Argo CD does with those it
            // creates: deleting one deletes whatever others keep in it (hand-made
            // Secrets, other teams' objects).
            objects.retain(|o| !(o.kind == "Namespace" && o.action == Action::Delete));
            if objects.is_empty() {
                continue;
            }
        }
        match changes.iter_mut().find(|c| c.address == address) {
            Some(change) => {
                if change.is_noop() {
                    change.actions = vec![Action::Update];
                    change.reason = summarize(&objects);
                }
                change.objects = objects;
                change.target = Some(TARGET.to_string());
            }
            None => changes.push(orphans(ws, &address, objects)),
        }
    }
    for (_, note) in live.notes.iter().filter(|(w, _)| w == ws) {
        diagnostics.push(Diagnostic::warning("kubernetes-access", note.clone()));
    }
    super::gpu_fit::check(live, scope, changes, diagnostics);
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
        reason: format!("no longer declared: {}", summarize(&objects)),
        before: None,
        after: None,
        changes: Vec::new(),
        depends_on: Vec::new(),
        rollout: None,
        sensitive: Vec::new(),
        target: Some(TARGET.to_string()),
        objects,
    }
}

fn kube_diagnostic(e: &super::Error) -> Diagnostic {
    let d = Diagnostic::error("kubernetes", error_chain(e));
    match e.hint() {
        Some(h) => d.help(h),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, api_version: &str, name: &str, address: &str, spec: Value) -> KubeObject {
        KubeObject {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
            context: None,
            value: json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {
                    "name": name,
                    "namespace": "ns",
                    "annotations": { ANNOTATION_ADDRESS: address },
                },
                "spec": spec,
            }),
        }
    }

    fn live(object: &KubeObject, spec: Value) -> LiveObject {
        let mut value = object.value.clone();
        value["spec"] = spec;
        value["metadata"]["resourceVersion"] = json!("7");
        LiveObject {
            key: object.key(),
            api_version: object.api_version.clone(),
            value,
        }
    }

    #[test]
    fn pairs_desired_with_live() {
        let same = object("Service", "v1", "same", "ws/endpoint.a", json!({"port": 1}));
        let changed = object(
            "Service",
            "v1",
            "changed",
            "ws/endpoint.a",
            json!({"port": 2}),
        );
        let missing = object(
            "Service",
            "v1",
            "missing",
            "ws/endpoint.b",
            json!({"port": 3}),
        );
        let old = object("Service", "v1", "old", "ws/endpoint.b", json!({"port": 4}));
        let live_objects = vec![
            live(&same, json!({"port": 1, "defaulted": true})),
            live(&changed, json!({"port": 9})),
            live(&old, json!({"port": 4})),
        ];
        let changes = compare(&[same, changed, missing], &live_objects, &BTreeSet::new());
        let a = &changes["ws/endpoint.a"];
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].action, Action::Update);
        assert_eq!(a[0].changes[0].path, "spec.port");
        let b: Vec<(Action, &str)> = changes["ws/endpoint.b"]
            .iter()
            .map(|c| (c.action, c.name.as_str()))
            .collect();
        assert_eq!(
            b,
            vec![(Action::Create, "missing"), (Action::Delete, "old")]
        );
    }

    #[test]
    fn finished_jobs_are_left_alone_and_old_ones_pruned() {
        let current = object(
            "Job",
            "batch/v1",
            "train-abc",
            "ws/job.train",
            json!({"x": 1}),
        );
        let finished = object(
            "Job",
            "batch/v1",
            "train-abc",
            "ws/job.train",
            json!({"x": 1}),
        );
        let old = object(
            "Job",
            "batch/v1",
            "train-old",
            "ws/job.train",
            json!({"x": 1}),
        );
        let live_objects = vec![live(&old, json!({"x": 1}))];
        // Planned run: created.
        let planned = compare(
            std::slice::from_ref(&current),
            &live_objects,
            &BTreeSet::from([current.key()]),
        );
        let actions: Vec<Action> = planned["ws/job.train"].iter().map(|c| c.action).collect();
        assert_eq!(actions, vec![Action::Create, Action::Delete]);
        // Finished run: nothing for it, the old run's Job is pruned.
        let done = compare(&[finished], &live_objects, &BTreeSet::new());
        let actions: Vec<(Action, &str)> = done["ws/job.train"]
            .iter()
            .map(|c| (c.action, c.name.as_str()))
            .collect();
        assert_eq!(actions, vec![(Action::Delete, "train-old")]);
    }
}

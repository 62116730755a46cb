//! The Kubernetes target against the test API server (`tests/support/kube_server/`),
//! through `cairn::backend::kubernetes::Clusters` built from a kubeconfig file, so that
//! the real `kube::Client` path runs unchanged.
//!
//! - `apply`: create every kind in wave order, re-apply with no writes, update a field,
//!   conflicts with another field manager and `force`, a write raced by another client,
//!   replacing a Job whose immutable field changed, objects Cairn does not own.
//! - `observe`: what is found by labels, drift after a hand edit, defaulted fields,
//!   missing namespaces, kinds the server does not serve.
//! - `prune`: only this workspace's labelled objects go, in reverse order; a Namespace
//!   holding anything Cairn doesn't own is kept, and the apply says why.
//! - `wait`: Jobs that succeed or fail (with their logs), Deployments that become
//!   available or time out.
//! - `capacity`: GPU quota, each node's free GPUs (allocatable less what its pods
//!   request), nodes and pods a role can't read; and in plans: a pod fits one node,
//!   GPUs in use are subtracted, a pool that can grow may wait for the autoscaler.
//! - `rbac`: the shipped Role and ClusterRole (`templates/rbac/`) bound in the server's
//!   RBAC mode: plan and apply with the Role alone, a missing `pods/proxy` named by
//!   the rollout's gate, cluster-scope operation with the ClusterRole.
//! - `world`: `cairn plan` and `cairn apply` through the library on a small workspace.
//! - `contexts`: two clusters in one kubeconfig, unknown contexts, unreachable servers.
//! - `strict`: strict field validation: a typo in an overridden template fails the
//!   apply naming the field, and nothing of the endpoint is written.

#[path = "../support/kube_server/mod.rs"]
mod kube_server;

mod apply;
mod capacity;
mod contexts;
mod observe;
mod prune;
mod rbac;
mod strict;
mod wait;
mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::backend::kubernetes::{
    Applied, ApplyOptions, Clusters, KubeObject, LiveObject, Outcome, Renderer, Scope,
};
use cairn::manifest::load_folder;
use cairn::{Address, Kind};
use serde_json::{json, Value};

use kube_server::KubeServer;

/// The workspace the tests' objects belong to.
pub const WS: &str = "fraud";

/// The namespace they live in.
pub const NS: &str = "fraud-ml";

/// A server and `Clusters` reading its kubeconfig (context `cairn-test`, current).
pub fn start() -> (KubeServer, Clusters) {
    let server = KubeServer::start();
    let clusters = clusters_for(&server);
    (server, clusters)
}

pub fn clusters_for(server: &KubeServer) -> Clusters {
    Clusters::from_kubeconfig_path(server.kubeconfig_path())
        .with_poll_interval(Duration::from_millis(20))
}

/// Cairn's labels and annotations for `address` in workspace `ws`.
pub fn metadata(ws: &str, name: &str, namespace: Option<&str>, address: &str) -> Value {
    let mut meta = json!({
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": "cairn", "cairn.dev/workspace": ws},
        "annotations": {"cairn.dev/address": address, "cairn.dev/spec-hash": "h1"},
    });
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    meta
}

pub fn object(value: Value) -> KubeObject {
    KubeObject {
        api_version: value["apiVersion"].as_str().unwrap().to_string(),
        kind: value["kind"].as_str().unwrap().to_string(),
        namespace: value["metadata"]["namespace"].as_str().map(str::to_string),
        name: value["metadata"]["name"].as_str().unwrap().to_string(),
        context: None,
        value,
    }
}

pub fn namespace(ws: &str, name: &str) -> KubeObject {
    object(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": metadata(ws, name, None, &format!("{ws}/workspace.{ws}")),
    }))
}

pub fn quota(ws: &str, gpus: u32) -> KubeObject {
    object(json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": metadata(ws, "gpu", Some(NS), &format!("{ws}/compute.gpu")),
        "spec": {"hard": {"requests.nvidia.com/gpu": gpus.to_string()}},
    }))
}

pub fn service_account(ws: &str) -> KubeObject {
    object(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": metadata(ws, &format!("cairn-{ws}"), Some(NS), &format!("{ws}/workspace.{ws}")),
    }))
}

pub fn job(ws: &str, name: &str, image: &str) -> KubeObject {
    object(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata(ws, name, Some(NS), &format!("{ws}/job.train")),
        "spec": {
            "backoffLimit": 1,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "train", "image": image, "resources": {"limits": {"cpu": "1"}}}],
            }},
        },
    }))
}

pub fn deployment(ws: &str, name: &str, replicas: u32) -> KubeObject {
    object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(ws, name, Some(NS), &format!("{ws}/endpoint.scoring")),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "server", "image": "registry.example/scoring:1",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                }]},
            },
        },
    }))
}

pub fn service(ws: &str, name: &str) -> KubeObject {
    object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(ws, name, Some(NS), &format!("{ws}/endpoint.scoring")),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }))
}

pub fn route(ws: &str, name: &str, weights: &[(&str, u32)]) -> KubeObject {
    let backends: Vec<Value> = weights
        .iter()
        .map(|(svc, w)| json!({"name": svc, "port": 80, "weight": w}))
        .collect();
    object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": metadata(ws, name, Some(NS), &format!("{ws}/endpoint.scoring")),
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "gateways"}],
            "rules": [{"backendRefs": backends}],
        },
    }))
}

/// One object of each kind Cairn renders, in apply order, for workspace `ws`.
pub fn every_kind(ws: &str) -> Vec<KubeObject> {
    vec![
        namespace(ws, NS),
        quota(ws, 8),
        object(json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": metadata(ws, &format!("cairn-{ws}"), Some(NS), &format!("{ws}/workspace.{ws}")),
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "1", "memory": "1Gi"}}]},
        })),
        service_account(ws),
        job(ws, "train-1", "registry.example/trainer:1"),
        deployment(ws, "scoring-blue", 2),
        service(ws, "scoring-blue"),
        service(ws, "scoring"),
        route(ws, "scoring", &[("scoring-blue", 100)]),
    ]
}

pub fn scope() -> Scope {
    Scope {
        context: None,
        namespace: NS.to_string(),
    }
}

/// Each object's outcome, as `Kind/name outcome`.
pub fn outcomes(applied: &[Applied]) -> Vec<String> {
    applied
        .iter()
        .map(|a| {
            let outcome = match &a.outcome {
                Outcome::Created => "created".to_string(),
                Outcome::Updated => "updated".to_string(),
                Outcome::Unchanged => "unchanged".to_string(),
                Outcome::Replaced => "replaced".to_string(),
                Outcome::Foreign => "foreign".to_string(),
                Outcome::Failed(e) => format!("failed: {e}"),
                Outcome::Skipped { reason } => format!("skipped: {reason}"),
            };
            format!("{}/{} {outcome}", a.key.kind, a.key.name)
        })
        .collect()
}

/// Applies with the default options and asserts nothing failed.
pub async fn apply_ok(clusters: &Clusters, objects: &[KubeObject]) -> Vec<Applied> {
    let applied = clusters
        .apply(objects, &ApplyOptions::default())
        .await
        .expect("apply");
    for a in &applied {
        assert!(a.error().is_none(), "{}: {:?}", a.key, a.outcome);
    }
    applied
}

/// The live objects as `Kind/name`.
pub fn names(objects: &[LiveObject]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o.key.kind, o.key.name))
        .collect()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the reconciler crate sits in the repository root")
        .to_path_buf()
}

/// The objects rendered for `manifests/imaging` (two contexts: `aks-gpu-westeurope`
/// for training, `onprem-radiology` for serving).
pub fn imaging_objects() -> Vec<KubeObject> {
    imaging_objects_from(&repo_root().join("manifests"))
}

/// The objects rendered for the `imaging` workspace of the manifests root `root`, with
/// the template overrides it holds.
pub fn imaging_objects_from(root: &Path) -> Vec<KubeObject> {
    let snapshot = load_folder(root).expect("the example manifests");
    let desired = match cairn::desired::resolve(&snapshot) {
        Ok(resolved) => resolved.state,
        Err(diagnostics) => panic!("the manifests are invalid: {diagnostics:?}"),
    };
    let versions = BTreeMap::from([
        (
            Address::new("imaging", Kind::Dataset, "chest-xrays"),
            "5d41402abc4b".to_string(),
        ),
        (
            Address::new("imaging", Kind::Job, "train-pneumonia"),
            "9f3c2a1b7d4e".to_string(),
        ),
        (
            Address::new("imaging", Kind::Model, "pneumonia-detector"),
            "9f3c2a1b7d4e".to_string(),
        ),
    ]);
    Renderer::from_snapshot(&snapshot)
        .expect("the templates")
        .with_revision(Some("0123456789abcdef0123456789abcdef01234567".into()))
        .desired_objects(&desired, "imaging", &versions)
        .expect("rendered objects")
}

//! Talking to Kubernetes clusters: connections per kubeconfig context, observing what
//! Cairn manages, server-side apply in waves, pruning, waiting for Jobs and
//! Deployments, and GPU capacity.
//!
//! This module owns every request Cairn makes to a Kubernetes API server. It takes the
//! [`KubeObject`](super::KubeObject)s rendered by `render.rs` and returns typed results; it never decides
//! *what* should change (that is the planner's, with [`diff`](super::diff)), never
//! prints, and never reads a token into a message.
//!
//! # Flow
//! 1. [`Clusters::new`] finds the kubeconfig (or the in-cluster service account) from
//!    the [`KubeconfigSources`] the caller read from the environment, but connects to
//!    nothing: a client per context is made on first use and cached, so a plan that
//!    touches no cluster never fails on a broken kubeconfig (`connect.rs`).
//! 2. [`Clusters::observe`] lists, by label selector, everything Cairn manages for a
//!    workspace in the given (context, namespace) scopes, for every kind Cairn renders
//!    and any others asked for. Kinds are resolved through API discovery once per
//!    context and API group version; a kind the server does not serve is skipped
//!    unless a desired object needs it.
//! 3. [`Clusters::apply`] applies objects with server-side apply (field manager
//!    `cairn`) in waves by kind, each wave with bounded concurrency. Each object is read
//!    first: an object that exists without Cairn's labels for the workspace is never
//!    taken over; one whose managed fields already match is not written at all; one
//!    whose immutable fields changed is replaced. Writes carry the `resourceVersion`
//!    that was read, so a concurrent change makes the write fail and the object is read
//!    and diffed again (a few times at most), never blindly overwritten.
//! 4. [`Clusters::prune`] deletes objects that are no longer desired, in reverse wave
//!    order, after checking the live object's labels again, with `uid` and
//!    `resourceVersion` preconditions.
//! 5. [`Clusters::wait_job`] and [`Clusters::wait_available`] poll (from 100 ms, backing
//!    off to the poll interval) until a Job finishes or a Deployment is available;
//!    [`Clusters::capacity`] reads GPU quota, and each node's GPUs less what its pods
//!    request, for plan-time checks.
//!
//! # Caveats
//! - A pre-existing Namespace without Cairn's labels for the workspace (`default`, one
//!   a platform team made, one another workspace made) is left alone and reported as
//!   [`Outcome::Foreign`]; Cairn applies the objects inside it but never the Namespace
//!   itself. Any other kind in that state is an error.
//! - A Namespace Cairn created is pruned only when it holds nothing but Cairn's objects
//!   for the workspace (deleting it deletes everything in it); otherwise it is kept and
//!   [`Pruned::kept`] says why.
//! - A namespaced role can't list Namespaces (cluster-scoped): [`Clusters::observe`]
//!   then reads the scopes' namespaces one by one; one it may not read either is left
//!   out, and the Kubernetes target uses it as it is.
//! - Log lines of a Job's pods are fetched by polling `pods/log` with timestamps (so a
//!   line is never repeated); a server or RBAC role without `pods/log` gives no lines,
//!   not an error.
//!
//! # Files
//! `connect.rs` (settings and clients), `discovery.rs` (kinds served), `observe.rs`
//! (listing and reading), `apply.rs`, `prune.rs`, `wait.rs` (Jobs and Deployments),
//! `keys.rs` (endpoint keys), `logs.rs` (a Job's pod logs), `scheduling.rs` (why its pods are not running), `scrape.rs` (the pod proxy), `capacity.rs` (GPUs) and
//! `error.rs`.

mod apply;
mod capacity;
mod connect;
mod discovery;
mod error;
mod keys;
mod logs;
mod observe;
mod prune;
mod replicas;
mod scheduling;
mod scrape;
mod wait;

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::{
    ObjectKey, ANNOTATION_ADDRESS, ANNOTATION_SPEC_HASH, LABEL_MANAGED_BY, LABEL_WORKSPACE,
};
use connect::{show_paths, Cluster, Source};
use discovery::KindCache;

pub use apply::{Applied, ApplyOptions, Outcome};
pub use capacity::{Capacity, NodeGpus, AUTOSCALED_NODE_LABEL};
pub use connect::KubeconfigSources;
pub use error::{Error, Result};
pub use prune::Pruned;
pub use wait::JobWait;

/// The kinds Cairn's templates render, in apply order (`apiVersion`, kind). Objects of
/// other kinds are applied after Services and before HTTPRoutes.
pub const SHIPPED_KINDS: [(&str, &str); 12] = [
    ("v1", "Namespace"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("v1", "ServiceAccount"),
    ("v1", "Secret"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "PersistentVolumeClaim"),
    ("batch/v1", "Job"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("v1", "Service"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
];

/// How many requests one call keeps in flight by default.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// How many times an object that changed under Cairn is read and applied again.
const ATTEMPTS: usize = 3;

/// The apply wave of a kind: the shipped kinds in order, other kinds after Services.
pub fn wave(kind: &str) -> usize {
    // The route comes last: other kinds go in its place, the route after them.
    let route = SHIPPED_KINDS.len() - 1;
    match SHIPPED_KINDS.iter().position(|(_, k)| *k == kind) {
        Some(i) if i < route => i,
        Some(_) => route + 1,
        None => route,
    }
}

/// The label selector of everything Cairn manages for `workspace`.
pub fn selector(workspace: &str) -> String {
    format!("{LABEL_MANAGED_BY}=cairn,{LABEL_WORKSPACE}={workspace}")
}

/// One (kube context, namespace) pair a workspace's objects live in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Scope {
    /// `None` is the kubeconfig's current context.
    pub context: Option<String>,
    pub namespace: String,
}

/// A kind to observe besides the shipped ones (one a template override adds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KindRef {
    /// `v1`, `apps/v1`, `monitoring.coreos.com/v1`.
    pub api_version: String,
    pub kind: String,
    /// Whether a cluster that does not serve it is an error (a desired object needs it)
    /// rather than simply holding none.
    pub required: bool,
}

/// An object Cairn manages, as the API server returned it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveObject {
    pub key: ObjectKey,
    pub api_version: String,
    /// The whole object (metadata, spec, status), with `apiVersion` and `kind`.
    pub value: Value,
}

impl LiveObject {
    /// Returns the `cairn.dev/address` annotation: the resource it was rendered for.
    pub fn address(&self) -> Option<&str> {
        self.annotation(ANNOTATION_ADDRESS)
    }

    /// Returns the `cairn.dev/spec-hash` annotation.
    pub fn spec_hash(&self) -> Option<&str> {
        self.annotation(ANNOTATION_SPEC_HASH)
    }

    /// Returns `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
    }

    /// Returns one label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        label(&self.value, key)
    }

    /// Returns one annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    }

    /// Whether it carries Cairn's labels for `workspace`.
    pub fn is_managed_by(&self, workspace: &str) -> bool {
        is_managed(&self.value, workspace)
    }
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

fn is_managed(object: &Value, workspace: &str) -> bool {
    label(object, LABEL_MANAGED_BY) == Some("cairn")
        && label(object, LABEL_WORKSPACE) == Some(workspace)
}

/// Connections to the clusters a workspace uses: one `kube::Client` per kubeconfig
/// context (`None` is the current context), made lazily and cached, with the kinds
/// each serves.
pub struct Clusters {
    source: Source,
    clients: Mutex<HashMap<Option<String>, Cluster>>,
    /// Per (context, apiVersion): the kinds that group version serves (empty when the
    /// server does not serve it).
    kinds: Mutex<KindCache>,
    concurrency: usize,
    poll: Duration,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the kubeconfig itself: it holds credentials.
        let source = match &self.source {
            Source::Kubeconfig { paths, .. } => format!("kubeconfig {}", show_paths(paths)),
            Source::InCluster => "in-cluster".to_string(),
            Source::Broken { paths, .. } => format!("broken kubeconfig {}", show_paths(paths)),
            Source::Missing { .. } => "no kubeconfig".to_string(),
        };
        f.debug_struct("Clusters").field("source", &source).finish()
    }
}

impl Clusters {
    /// Sets how many requests [`Clusters::observe`] and [`Clusters::prune`] keep in
    /// flight (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Clusters {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long a wait sleeps before reading again, `waited` into it: 100 ms at first,
    /// doubling each second waited up to the poll interval, so what is ready at once
    /// (a Deployment the cluster scales up in a second) isn't waited for a whole poll.
    fn backoff(&self, waited: Duration) -> Duration {
        let doublings = waited.as_secs().min(8) as u32;
        (Duration::from_millis(100) * 2u32.pow(doublings)).min(self.poll)
    }

    /// Sets how often the waits poll (2 s by default).
    pub fn with_poll_interval(mut self, poll: Duration) -> Clusters {
        self.poll = poll;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_follow_the_templates_with_other_kinds_before_routes() {
        let order: Vec<usize> = [
            "Namespace",
            "ResourceQuota",
            "LimitRange",
            "ServiceAccount",
            "Secret",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "Job",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Service",
            "ConfigMap",
            "HTTPRoute",
        ]
        .iter()
        .map(|k| wave(k))
        .collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }
}

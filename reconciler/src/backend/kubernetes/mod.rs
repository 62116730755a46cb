//! The Kubernetes target's desired objects: what a workspace's `kubernetes` computes,
//! jobs and endpoints become in a cluster, rendered from minijinja templates.
//!
//! This module owns the templates, rendering them safely, and the rules every rendered
//! object follows. Talking to clusters (observing, applying, pruning, waiting) is
//! `cluster/` ([`Clusters`]), and the managed-field diff of a rendered object against
//! its live counterpart is `diff.rs` ([`diff()`]); both take the [`KubeObject`]s made
//! here.
//!
//! # Objects
//!
//! [`Renderer::desired_objects`] renders everything one workspace declares on
//! Kubernetes, in apply order:
//!
//! | template | object | one per |
//! |---|---|---|
//! | `namespace.yaml.j2` | Namespace | kube context and namespace used by a compute |
//! | `resourcequota.yaml.j2` | ResourceQuota (`requests.nvidia.com/gpu`) | compute with `max_gpus` |
//! | `limitrange.yaml.j2` | LimitRange | namespace |
//! | `serviceaccount.yaml.j2` | ServiceAccount `cairn-<workspace>` | namespace |
//! | `job.yaml.j2` | Job `<job>-<run id>`; with outputs, PersistentVolumeClaim `<job>-<run id>-outputs` and Job `<job>-<run id>-upload`; with several instances, headless Service `<job>-<run id>` | job (its current run) |
//! | `deployment.yaml.j2` | Deployment `<endpoint>-<deployment>-<revision>` | endpoint deployment |
//! | `service.yaml.j2` | Service | endpoint deployment, plus the endpoint's own |
//! | `httproute.yaml.j2` | Gateway API HTTPRoute `<endpoint>` | endpoint on a compute with a `gateway` |
//!
//! A compute's namespace is its `namespace`, else the workspace's, else the workspace
//! name; each object carries the compute's kube `context` ([`KubeObject::context`];
//! `None` is the kubeconfig's current context). Names that a template needs (its own,
//! the Services a route points at) are decided here and handed to the templates, so an
//! override can change an object's shape without breaking the references between them.
//!
//! # Labels and annotations
//!
//! Every object carries, whatever its template says:
//! - labels `app.kubernetes.io/managed-by: cairn` and `cairn.dev/workspace: <workspace>`
//!   (how live objects are found: Cairn never touches an object without them), plus the
//!   templates' own (`app.kubernetes.io/name`, `cairn.dev/endpoint`, …) and the
//!   workspace's `labels`;
//! - annotations `cairn.dev/address` (the resource it was rendered for,
//!   `imaging/job.train-pneumonia`), `cairn.dev/revision` (the Git commit the manifests
//!   were read at, when known) and `cairn.dev/spec-hash`: a hash of the rendered object
//!   without the spec-hash and revision annotations, so that a commit that changes
//!   nothing about an object leaves its hash alone.
//!
//! # Templates and overrides
//!
//! The templates ship inside the binary (`templates/kubernetes/`). A repository
//! overrides any of them by putting a file of the same name in `templates/kubernetes/`
//! under its manifests root; it is read through the [`Snapshot`], so `--rev` renders the
//! committed override. A `.j2` file there that is not one of the names above is an
//! error (a typo would otherwise be silently ignored); other files are left alone. Each
//! template's header lists the variables it gets; besides those, every template gets
//! `workspace` (name, namespace, environment, store, labels), `cairn` (image, version)
//! and `metadata` (the labels and annotations to write).
//!
//! Templates render in a sandbox: no loader (so no file can be read or included, only
//! the eight templates by name), strict undefined variables (a typo is an error, not an
//! empty string), no auto-escaping, and a fuel limit so a runaway loop stops. Output is
//! parsed as YAML (several documents are allowed; empty ones are skipped) and every
//! object is checked for `apiVersion`, `kind`, `metadata.name`, a namespace when its
//! kind needs one, and valid names and labels, before anything could reach a cluster.
//!
//! [`Snapshot`]: crate::manifest::Snapshot

pub mod cluster;
mod cluster_api;
pub mod compute;
mod containers;
pub mod diff;
mod execute;
mod gpu_fit;
mod objects;
pub mod outputs_volume;
pub mod plan;
pub mod prometheus;
mod rendered;
mod rollout;
mod scale;
mod sweep;
mod templates;
pub mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use serde::Serialize;
use serde_json::Value;

use crate::address::Address;
use crate::diagnostics::Location;

pub use cluster::{
    Applied, ApplyOptions, Capacity, Clusters, Error as ClusterError, KindRef, LiveObject,
    NodeGpus, Outcome, Scope,
};
pub use cluster_api::ClusterApi;
pub use compute::{scopes, KubeCompute, TARGET};
pub use diff::{diff, ObjectDiff};
pub use objects::{
    compute_namespace, revision_object_name, DEFAULT_PORT, LABEL_DEPLOYMENT,
    LABEL_DEPLOYMENT_REVISION,
};
pub use plan::{KubeLive, ObjectChangeExt};
pub use templates::{
    Renderer, Template, TemplateSource, DEFAULT_CAIRN_IMAGE, OVERRIDE_DIR, TEMPLATES,
};
pub use traffic::{KubeRoute, KubeTraffic, ServiceBackend};

/// Label every managed object carries: `app.kubernetes.io/managed-by: cairn`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the workspace an object belongs to.
pub const LABEL_WORKSPACE: &str = "cairn.dev/workspace";
/// Annotation naming the resource an object was rendered for.
pub const ANNOTATION_ADDRESS: &str = "cairn.dev/address";
/// Annotation holding the hash of the rendered object.
pub const ANNOTATION_SPEC_HASH: &str = "cairn.dev/spec-hash";
/// Annotation holding the Git commit the manifests were read at.
pub const ANNOTATION_REVISION: &str = "cairn.dev/revision";

/// One rendered Kubernetes object, ready to be applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubeObject {
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped kinds (Namespace).
    pub namespace: Option<String>,
    pub name: String,
    /// The kubeconfig context of the compute it belongs to; `None` is the current one.
    pub context: Option<String>,
    /// The whole object, labels and annotations included.
    pub value: Value,
}

/// What identifies an object in a cluster: desired and live objects pair up by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub context: Option<String>,
    /// The API group (`apps`, `gateway.networking.k8s.io`); empty for the core group.
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of an object of `kind` in `api_version` (`apps/v1`: group `apps`; `v1`:
    /// the core group).
    pub fn new(
        context: Option<&str>,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> ObjectKey {
        ObjectKey {
            context: context.map(str::to_string),
            group: api_version
                .rsplit_once('/')
                .map_or("", |(group, _)| group)
                .to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind, self.name)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in namespace `{ns}`")?;
        }
        if let Some(context) = &self.context {
            write!(f, " (context `{context}`)")?;
        }
        Ok(())
    }
}

impl KubeObject {
    /// Returns the object's identity in its cluster.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(
            self.context.as_deref(),
            &self.api_version,
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }

    /// Returns the `cairn.dev/spec-hash` annotation.
    pub fn spec_hash(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ANNOTATION_SPEC_HASH))
            .and_then(Value::as_str)
    }
}

/// Versions the manifests don't say but the objects need: a dataset's content version,
/// a model's version and a job's run id, by address. This is what the planner learns
/// walking the desired state in order; pinned references (`model.x@v`) don't need one.
pub trait VersionLookup {
    fn version_of(&self, address: &Address) -> Option<&str>;
}

impl<S: BuildHasher> VersionLookup for HashMap<Address, String, S> {
    fn version_of(&self, address: &Address) -> Option<&str> {
        self.get(address).map(String::as_str)
    }
}

impl VersionLookup for BTreeMap<Address, String> {
    fn version_of(&self, address: &Address) -> Option<&str> {
        self.get(address).map(String::as_str)
    }
}

/// Errors from loading templates, rendering them and checking what they produce.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the template override `{path}`")]
    ReadOverride {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a valid template override: {problem}")]
    BadOverride { path: String, problem: String },
    #[error("`{path}` is not a template Cairn renders")]
    UnknownTemplate {
        path: String,
        /// The closest shipped template name.
        suggestion: Option<&'static str>,
    },
    /// A template that doesn't compile or fails while rendering.
    #[error("{location}: {message}{}{}", .shipped.then_some(" (template shipped with Cairn)").unwrap_or(""), .what.as_ref().map(|w| format!(", rendering {w}")).unwrap_or_default())]
    Template {
        /// Where in the template, e.g. `templates/kubernetes/job.yaml.j2:12:21`.
        location: Box<Location>,
        shipped: bool,
        message: String,
        /// The resource being rendered, if any.
        what: Option<String>,
        hint: Option<String>,
        #[source]
        source: minijinja::Error,
    },
    #[error("{template} rendered invalid YAML for {what}: {message}{}", yaml_place(*.line, *.column, .text))]
    Yaml {
        template: String,
        what: String,
        message: String,
        /// Where in the rendered output (1-based), when the parser knows.
        line: Option<u32>,
        column: Option<u32>,
        /// The output line at fault.
        text: String,
    },
    #[error("{template} rendered an object for {what} that Kubernetes would refuse: {problem}")]
    InvalidObject {
        template: String,
        what: String,
        problem: String,
    },
    #[error("{}", if first == second { format!("{first} renders {object} twice") } else { format!("{first} and {second} both render {object}") })]
    Duplicate {
        object: String,
        first: String,
        second: String,
    },
    #[error("workspace `{0}` is not declared")]
    UnknownWorkspace(String),
    #[error("{what}: no version is known for {needed}")]
    MissingVersion { what: String, needed: String },
    #[error("{what}: {problem}")]
    Unsupported {
        what: String,
        problem: String,
        hint: &'static str,
    },
}

impl Error {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::ReadOverride { .. } => {
                Some("check the file's permissions; with `--rev`, that it is committed".into())
            }
            Error::BadOverride { .. } => {
                Some(format!("a template override must be a UTF-8 file in `{OVERRIDE_DIR}/`"))
            }
            Error::UnknownTemplate { suggestion, .. } => Some(match suggestion {
                Some(name) => format!("did you mean `{name}`?"),
                None => format!(
                    "the templates that can be overridden are: {}",
                    TEMPLATES.map(|(name, _)| name).join(", ")
                ),
            }),
            Error::Template { hint, .. } => hint.clone(),
            Error::Yaml { .. } => Some(
                "write every value with `| tojson` (a JSON string or map is valid YAML, so quotes, colons and newlines stay safe), and check the indentation around the line shown"
                    .into(),
            ),
            Error::InvalidObject { .. } => Some(
                "every object needs `apiVersion`, `kind` and `metadata.name`, and `metadata.namespace` unless its kind is cluster-scoped; names are lowercase letters, digits and `-`"
                    .into(),
            ),
            Error::Duplicate { first, second, .. } if first == second => Some(
                "each object a template renders needs a name of its own; use the `name` variable"
                    .into(),
            ),
            Error::Duplicate { .. } => {
                Some("rename one of the resources, or give their computes different namespaces".into())
            }
            Error::UnknownWorkspace(_) => Some("`cairn validate` lists the workspaces".into()),
            Error::MissingVersion { .. } => Some(
                "plan the workspace first: versions of unpinned datasets, models and job runs come from the plan"
                    .into(),
            ),
            Error::Unsupported { hint, .. } => Some(hint.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn yaml_place(line: Option<u32>, column: Option<u32>, text: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => {
            format!(", at line {line}, column {column} of the output: `{text}`")
        }
        (Some(line), None) => format!(", near line {line} of the output: `{text}`"),
        _ => String::new(),
    }
}

//! The objects a compute target creates, changes or deletes for a resource, as the plan
//! lists them ([`crate::plan::ResourceChange::objects`]). Which objects a resource needs
//! and how they are compared with live ones is the target's business
//! ([`crate::backend`]); the plan only carries them, to be shown, checked and applied.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, FieldChange};

/// The label an object serving an endpoint deployment carries, with the deployment's
/// name as value (`metadata.labels` of the object): how a saved plan's hidden `env`
/// values find their way back into the object ([`super::redact::restore`]).
pub const DEPLOYMENT_LABEL: &str = "cairn.dev/deployment";

/// The planned change of one object a compute target manages for a resource (on
/// Kubernetes: a Deployment, a Job, a Service…). The target fills what its objects have:
/// `context`, `api_version` and `namespace` are where and in which schema version the
/// object lives (Kubernetes: the kubeconfig context, `apps/v1`, the namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectChange {
    /// Create, update, replace or delete; no-op only for a planned run's Job that is
    /// already live.
    pub action: Action,
    /// The kubeconfig context; `None` is the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The managed fields that differ (live → desired); empty for create and delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// For a replace: the immutable fields that force it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable: Vec<String>,
    /// The object to apply; `None` for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

impl ObjectChange {
    /// `Deployment imaging-serve/triage-blue-3f9a2c1` (with `@context` when not the
    /// current one).
    pub fn describe(&self) -> String {
        let mut s = format!("{} ", self.kind);
        if let Some(ns) = &self.namespace {
            s.push_str(ns);
            s.push('/');
        }
        s.push_str(&self.name);
        if let Some(context) = &self.context {
            s.push_str(" @");
            s.push_str(context);
        }
        s
    }
}

//! The kinds the server serves: one [`ResourceType`] row per kind, the built-in table
//! ([`builtin_resources`]), and registering a kind as installing a CRD would.

use super::state::State;

/// How a kind's names are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, at most 253.
    Subdomain,
    /// A DNS-1123 label: lower-case alphanumerics and `-`, at most 63.
    Label,
    /// A DNS-1035 label: a DNS-1123 label that starts with a letter (services).
    Label1035,
}

/// One kind the server serves: a row of its table.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource name in URLs, e.g. `deployments`.
    pub plural: String,
    pub namespaced: bool,
    /// Whether it has a `status` subresource.
    pub status: bool,
    pub names: NameRule,
    /// Served from a CRD: list items carry `apiVersion`/`kind`, strategic merge patch is
    /// refused.
    pub custom: bool,
    /// A delete answers with the object rather than a `Status`.
    pub delete_returns_object: bool,
    /// A delete without a propagation policy orphans dependents (batch/v1 jobs).
    pub orphan_by_default: bool,
}

impl ResourceType {
    /// A kind with a status subresource, DNS-1123 subdomain names, built in.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
            status: true,
            names: NameRule::Subdomain,
            custom: false,
            delete_returns_object: false,
            orphan_by_default: false,
        }
    }

    /// A custom resource (as a CRD would serve it).
    pub fn custom(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            custom: true,
            delete_returns_object: true,
            ..ResourceType::new(group, version, kind, plural, namespaced)
        }
    }

    pub fn without_status(mut self) -> Self {
        self.status = false;
        self
    }

    pub fn names(mut self, rule: NameRule) -> Self {
        self.names = rule;
        self
    }

    fn returns_deleted(mut self) -> Self {
        self.delete_returns_object = true;
        self
    }

    fn orphans(mut self) -> Self {
        self.orphan_by_default = true;
        self
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as the server's messages name it.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `Deployment.apps`, as `Invalid` messages name it.
    pub(super) fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// The kinds the server serves unless told otherwise.
pub fn builtin_resources() -> Vec<ResourceType> {
    use NameRule::*;
    type R = ResourceType;
    vec![
        // group, version, kind, plural, namespaced
        R::new("", "v1", "Namespace", "namespaces", false)
            .names(Label)
            .returns_deleted(),
        R::new("", "v1", "Service", "services", true).names(Label1035),
        R::new("", "v1", "ServiceAccount", "serviceaccounts", true)
            .without_status()
            .returns_deleted(),
        R::new("", "v1", "ResourceQuota", "resourcequotas", true),
        R::new("", "v1", "LimitRange", "limitranges", true).without_status(),
        R::new("", "v1", "Pod", "pods", true).returns_deleted(),
        R::new("", "v1", "Node", "nodes", false),
        R::new("", "v1", "ConfigMap", "configmaps", true).without_status(),
        R::new("", "v1", "Secret", "secrets", true).without_status(),
        R::new("", "v1", "Event", "events", true).without_status(),
        R::new(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
        )
        .returns_deleted(),
        R::new(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        )
        .without_status(),
        R::new("apps", "v1", "Deployment", "deployments", true),
        R::new(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        ),
        R::new("batch", "v1", "Job", "jobs", true)
            .names(Label)
            .orphans(),
        R::custom(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
            true,
        ),
    ]
}

pub(super) fn register(state: &mut State, resource: ResourceType) {
    assert!(
        !state.resources.iter().any(|r| r.group == resource.group
            && r.version == resource.version
            && (r.plural == resource.plural || r.kind == resource.kind)),
        "{}/{} is served already",
        resource.api_version(),
        resource.plural
    );
    state.resources.push(resource);
}

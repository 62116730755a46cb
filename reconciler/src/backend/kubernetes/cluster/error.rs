//! Errors from talking to clusters, each with a hint for the user, and how a client
//! error becomes one (never naming credentials).

use std::time::Duration;

use super::connect::Cluster;
use crate::backend::kubernetes::ObjectKey;

/// Turns a client error into ours: API answers keep their message; anything else is
/// the server being out of reach, named by its URL (never its credentials).
pub(super) fn request_error(
    cluster: &Cluster,
    action: &'static str,
    what: String,
    error: kube::Error,
) -> Error {
    match error {
        kube::Error::Api(status) => Error::Api {
            action,
            what,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        kube::Error::Auth(e) => Error::Context {
            context: cluster.name.clone(),
            message: format!("cannot authenticate: {e}"),
        },
        other => Error::Unreachable {
            context: cluster.name.clone(),
            server: cluster.server.clone(),
            source: Box::new(other),
        },
    }
}

fn known_contexts(known: &[String]) -> String {
    if known.is_empty() {
        "it has no contexts".to_string()
    } else {
        format!(
            "the known contexts are {}",
            known
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Errors from talking to clusters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no kubeconfig: {why}")]
    NoKubeconfig { why: String },
    #[error("cannot read the kubeconfig {paths}: {message}")]
    Kubeconfig { paths: String, message: String },
    #[error("context `{context}` is not in the kubeconfig {paths}; {}", known_contexts(.known))]
    UnknownContext {
        context: String,
        known: Vec<String>,
        paths: String,
    },
    #[error("the kubeconfig {paths} names no current context; {}", known_contexts(.known))]
    NoCurrentContext { known: Vec<String>, paths: String },
    #[error("cannot use context `{context}`: {message}")]
    Context { context: String, message: String },
    #[error("cannot reach the Kubernetes API server at {server} (context `{context}`): {source}")]
    Unreachable {
        context: String,
        server: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot {action} {what}: {message} ({code} {reason})")]
    Api {
        action: &'static str,
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{object}: {}", conflict_message(.fields, .managers))]
    Conflict {
        object: Box<ObjectKey>,
        /// The conflicting fields, as the server names them (`.spec.replicas`).
        fields: Vec<String>,
        /// The field managers that own them.
        managers: Vec<String>,
    },
    #[error("{object}: the cluster does not know the field{} {}", if .fields.len() == 1 { "" } else { "s" }, quoted(.fields))]
    UnknownField {
        object: Box<ObjectKey>,
        /// The fields, as the server names them (`spec.replicass`).
        fields: Vec<String>,
    },
    #[error("{object} exists and is not managed by Cairn for workspace `{workspace}`{}", .owner.as_ref().map(|o| format!(" (it belongs to workspace `{o}`)")).unwrap_or_default())]
    NotManaged {
        object: Box<ObjectKey>,
        workspace: String,
        /// The workspace that manages it, when another one does.
        owner: Option<String>,
    },
    #[error("the cluster of context `{context}` does not serve {api_version} {kind}")]
    KindNotServed {
        context: String,
        api_version: String,
        kind: String,
    },
    #[error("{object}: {problem}")]
    InvalidObject {
        object: Box<ObjectKey>,
        problem: String,
    },
    #[error("{job} failed: {reason}: {message}")]
    JobFailed {
        job: Box<ObjectKey>,
        reason: String,
        message: String,
    },
    #[error("{job}: only {running} of its {wanted} pods ran {} after it was admitted, so Cairn stopped it (the running ones would hold their GPUs waiting for the rest){}", humantime::format_duration(*.waited), reasons_list(.reasons))]
    NotScheduled {
        job: Box<ObjectKey>,
        /// How long the pods had to start once the Job was admitted.
        waited: Duration,
        running: i64,
        wanted: i64,
        /// What the cluster says: pods' scheduling conditions, warning events.
        reasons: Vec<String>,
    },
    #[error("{object} is not progressing: {reason}: {message} ({state})")]
    NotProgressing {
        object: Box<ObjectKey>,
        reason: String,
        message: String,
        state: String,
    },
    #[error("timed out after {} waiting for {what}: {state}", humantime::format_duration(*.waited))]
    Timeout {
        what: String,
        waited: Duration,
        state: String,
    },
    #[error("{object} kept changing while Cairn wrote it ({attempts} attempts)")]
    Raced {
        object: Box<ObjectKey>,
        attempts: usize,
    },
    #[error("{object} disappeared while Cairn waited for it")]
    Gone { object: Box<ObjectKey> },
}

fn reasons_list(reasons: &[String]) -> String {
    if reasons.is_empty() {
        "; the cluster gave no reason (no pod conditions or warning events Cairn may read)"
            .to_string()
    } else {
        let lines: String = reasons.iter().map(|r| format!("\n  - {r}")).collect();
        format!("; the cluster says:{lines}")
    }
}

fn quoted(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `kubectl explain` of the object holding a field: `deployment.spec` for
/// `spec.replicass`, `httproute.spec.rules.filters.requestMirror` for
/// `spec.rules[0].filters[0].requestMirror.percent`.
fn explain(kind: &str, field: &str) -> String {
    let mut path: Vec<String> = field
        .split('.')
        .map(|part| part.split('[').next().unwrap_or(part).to_string())
        .collect();
    path.pop();
    path.insert(0, kind.to_lowercase());
    path.join(".")
}

fn conflict_message(fields: &[String], managers: &[String]) -> String {
    let owners = managers
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = fields
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{owners} also manages {fields}, with another value")
}

impl Error {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NoKubeconfig { .. } => {
                "set KUBECONFIG or write ~/.kube/config (e.g. with your cloud's `get-credentials` command)".into()
            }
            Error::Kubeconfig { .. } => "check the file with `kubectl config view`".into(),
            Error::UnknownContext { .. } => {
                "set the compute's `context` to one of the known contexts, or add it to the kubeconfig".into()
            }
            Error::NoCurrentContext { .. } => {
                "set the compute's `context`, or pick one with `kubectl config use-context`".into()
            }
            Error::Context { .. } => {
                "check the context with `kubectl --context <context> get namespaces`".into()
            }
            Error::Unreachable { .. } => {
                "check that the cluster is up and reachable from here (VPN, firewall, proxy)".into()
            }
            Error::Api { code: 401, .. } => "the cluster refused the credentials: log in again".into(),
            Error::Api {
                code: 403, message, ..
            } => forbidden_hint(message),
            Error::Api { code: 422, .. } => {
                "the API server refused the object: check the template override that renders it".into()
            }
            Error::Api { .. } => return None,
            Error::Conflict { .. } => {
                "someone else (kubectl edit, an autoscaler, another tool) changed these fields; rerun with `--force-conflicts` to take them back, or remove them from the manifests to leave them to the other manager".into()
            }
            Error::UnknownField { object, fields } => format!(
                "a typo in an overridden template? Or a field newer than the cluster's version of {kind}: \
                 see what it declares with `kubectl explain {}`",
                explain(&object.kind, fields.first().map_or("", String::as_str)),
                kind = object.kind,
            ),
            Error::NotManaged { .. } => {
                "Cairn never takes over objects it did not create: delete or rename the object, or give the resource another name".into()
            }
            Error::KindNotServed { kind, .. } if kind == "HTTPRoute" => {
                "install the Gateway API CRDs in the cluster, or remove `gateway` from the compute".into()
            }
            Error::KindNotServed { .. } => "install the CRD that serves it, or remove the template override that renders it".into(),
            Error::InvalidObject { .. } => "check the template override that renders it".into(),
            Error::JobFailed { .. } => "read the job's logs: `kubectl logs job/<name>`".into(),
            Error::NotScheduled { .. } => {
                "the pods must all run at once: free or add nodes (GPUs, quota), use a `queue` (Kueue admits all pods or none), or raise the job's `schedule_timeout`".into()
            }
            Error::NotProgressing { .. } | Error::Timeout { .. } => {
                "look at the pods' events: `kubectl describe pods -l <selector>`".into()
            }
            Error::Raced { .. } => "another client keeps changing it; run again".into(),
            Error::Gone { .. } => "someone deleted it; run again".into(),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where Cairn's roles are, for hints.
const RBAC_TEMPLATES: &str = "templates/rbac/ (`role.yaml` for one namespace, `clusterrole.yaml` for the whole cluster) lists what Cairn needs";

/// What RBAC refused, read off the API server's message (`... cannot get resource
/// "pods/proxy" in API group "" in the namespace "ns"`): the verb, the resource, its
/// API group and the namespace (`None` at the cluster scope).
fn forbidden_permission(message: &str) -> Option<(String, String, String, Option<String>)> {
    let rest = &message[message.find(" cannot ")? + " cannot ".len()..];
    let (verb, rest) = rest.split_once(" resource \"")?;
    let (resource, rest) = rest.split_once("\" in API group \"")?;
    let (group, rest) = rest.split_once('"')?;
    let namespace = rest
        .strip_prefix(" in the namespace \"")
        .and_then(|r| r.split('"').next())
        .map(str::to_string);
    Some((
        verb.to_string(),
        resource.to_string(),
        group.to_string(),
        namespace,
    ))
}

/// The hint for a 403: the permission missing, how to check it, and where Cairn's roles
/// are.
fn forbidden_hint(message: &str) -> String {
    match forbidden_permission(message) {
        Some((verb, resource, group, namespace)) => {
            let in_group = if group.is_empty() {
                String::new()
            } else {
                format!(" (API group `{group}`)")
            };
            let (place, flag) = match &namespace {
                Some(ns) => (format!("in namespace `{ns}`"), format!(" -n {ns}")),
                None => ("at the cluster scope".to_string(), String::new()),
            };
            // `kubectl auth can-i get pods/x` would ask about the pod named x.
            let (plural, subresource) = match resource.split_once('/') {
                Some((p, sub)) => (p, format!(" --subresource={sub}")),
                None => (resource.as_str(), String::new()),
            };
            let qualified = if group.is_empty() {
                plural.to_string()
            } else {
                format!("{plural}.{group}")
            };
            format!(
                "the kubeconfig's user may not `{verb}` `{resource}`{in_group} {place}: grant it (check with `kubectl auth can-i {verb} {qualified}{subresource}{flag}`); {RBAC_TEMPLATES}"
            )
        }
        None => format!(
            "the kubeconfig's user lacks permission: check its RBAC roles with `kubectl auth can-i`; {RBAC_TEMPLATES}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_permission_and_where_the_roles_are() {
        let message = "pods \"web-0:8080\" is forbidden: User \"ci\" cannot get resource \"pods/proxy\" in API group \"\" in the namespace \"team\"";
        assert_eq!(
            forbidden_permission(message),
            Some((
                "get".into(),
                "pods/proxy".into(),
                String::new(),
                Some("team".into())
            ))
        );
        let hint = forbidden_hint(message);
        assert!(
            hint.contains("`kubectl auth can-i get pods --subresource=proxy -n team`"),
            "{hint}"
        );
        assert!(hint.contains("templates/rbac/"), "{hint}");
        let cluster = "namespaces is forbidden: User \"ci\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope";
        assert_eq!(
            forbidden_permission(cluster),
            Some(("list".into(), "namespaces".into(), String::new(), None))
        );
        let grouped = "deployments.apps \"x\" is forbidden: User \"ci\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"t\"";
        assert!(forbidden_hint(grouped).contains("can-i patch deployments.apps -n t"));
        // A webhook's own wording: the general hint.
        assert_eq!(forbidden_permission("denied by policy"), None);
        assert!(forbidden_hint("denied by policy").contains("templates/rbac/"));
    }
}

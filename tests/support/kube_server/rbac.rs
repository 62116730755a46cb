//! RBAC mode: once a test binds a Role (in a namespace) or a ClusterRole (everywhere)
//! to the kubeconfig's user, every request is authorized against those rules the way
//! the real RBAC authorizer does it, and anything they don't allow is a 403
//! `Forbidden` with the real server's message:
//!
//! ```text
//! pods "web-1:8080" is forbidden: User "cairn-test" cannot get resource "pods/proxy" in API group "" in the namespace "team-a"
//! ```
//!
//! The request's attributes are read off its path as the API server's `RequestInfo`
//! does: the verb from the method (`get`/`list`/`watch` for GET, `create`, `update`,
//! `patch`, `delete`/`deletecollection`), the resource and subresource (`pods/log`,
//! `pods/proxy`, `deployments/status`), the API group, and the namespace, which for
//! `/api/v1/namespaces/<name>` is the namespace itself (so a Role may grant `get` on its
//! own Namespace, as on a real cluster). A rule matches by `apiGroups`, `resources`
//! (`*`, `<resource>/<sub>`, `*/<sub>`), `verbs` and `resourceNames`. A server-side
//! apply that would create the object needs `create` besides `patch`, as the real
//! server asks. Discovery (`/api`, `/apis`, `/version`, health) is allowed to every
//! authenticated user, as the default `system:discovery` role does.
//!
//! Roles come as objects (parsed from YAML with [`role_from_yaml`], e.g. the shipped
//! `templates/rbac/role.yaml`); their rules are read strictly, so a typo in a role file
//! fails the test instead of silently granting nothing.

use axum::http::{header, Method};
use serde_json::{json, Value};

use super::controls::Verb;
use super::error::ApiError;
use super::path::{parse_path, Target};
use super::state::{Key, Shared, State};
use super::KubeServer;

/// The user the kubeconfig's token authenticates as.
pub const USER: &str = "cairn-test";

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

/// A role bound to the user: its rules hold in `namespace`, or everywhere (`None`, a
/// ClusterRoleBinding).
#[derive(Debug, Clone)]
pub(super) struct Binding {
    pub(super) namespace: Option<String>,
    pub(super) rules: Vec<Rule>,
}

/// What a request asks, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attributes {
    verb: &'static str,
    group: String,
    resource: String,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

/// Reads a Role or ClusterRole from YAML (one document).
pub fn role_from_yaml(text: &str) -> Value {
    let role: Value = serde_norway::from_str(text).expect("a role in YAML");
    let kind = role["kind"].as_str().unwrap_or("");
    assert!(
        matches!(kind, "Role" | "ClusterRole"),
        "not a Role or ClusterRole: {kind}"
    );
    role
}

/// The rules of a Role or ClusterRole object, read strictly.
pub fn rules_of(role: &Value) -> Vec<Rule> {
    let strings = |rule: &Value, key: &str| -> Vec<String> {
        match &rule[key] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .unwrap_or_else(|| panic!("{key} holds a non-string: {i}"))
                        .to_string()
                })
                .collect(),
            other => panic!("{key} is not a list: {other}"),
        }
    };
    role["rules"]
        .as_array()
        .expect("the role has rules")
        .iter()
        .map(|rule| {
            for key in rule.as_object().expect("a rule is a map").keys() {
                assert!(
                    matches!(
                        key.as_str(),
                        "apiGroups" | "resources" | "verbs" | "resourceNames"
                    ),
                    "unknown field `{key}` in rule {rule}"
                );
            }
            let rule = Rule {
                api_groups: strings(rule, "apiGroups"),
                resources: strings(rule, "resources"),
                verbs: strings(rule, "verbs"),
                resource_names: strings(rule, "resourceNames"),
            };
            assert!(
                !rule.verbs.is_empty() && !rule.resources.is_empty(),
                "a rule without verbs or resources: {rule:?}"
            );
            rule
        })
        .collect()
}

impl KubeServer {
    /// Binds a Role (or ClusterRole, as a RoleBinding would) to the user in
    /// `namespace`, and turns RBAC on: from now on only what the bound roles allow is
    /// served.
    pub fn bind_role(&self, namespace: &str, role: &Value) {
        self.shared.lock().rbac.push(Binding {
            namespace: Some(namespace.to_string()),
            rules: rules_of(role),
        });
    }

    /// Binds a ClusterRole to the user everywhere (a ClusterRoleBinding), and turns
    /// RBAC on.
    pub fn bind_cluster_role(&self, role: &Value) {
        assert_eq!(
            role["kind"], "ClusterRole",
            "only a ClusterRole binds cluster-wide"
        );
        self.shared.lock().rbac.push(Binding {
            namespace: None,
            rules: rules_of(role),
        });
    }

    /// The requests RBAC refused so far, as `METHOD path`.
    pub fn forbidden_requests(&self) -> Vec<String> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.status == 403)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

/// The 403 for a request the bound roles don't allow, with the verb it was recorded
/// as; `None` when RBAC is off, the request is allowed, or it isn't authenticated (the
/// router answers that with a 401).
pub(super) fn authorize(
    shared: &Shared,
    parts: &axum::http::request::Parts,
) -> Option<(ApiError, Verb)> {
    let authenticated = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token));
    if !authenticated {
        return None;
    }
    let state = shared.lock();
    if state.rbac.is_empty() {
        return None;
    }
    let attributes = attributes(&parts.method, parts.uri.path(), parts.uri.query())?;
    let allowed = |a: &Attributes| {
        state.rbac.iter().any(|b| {
            let applies = b.namespace.is_none() || b.namespace == a.namespace;
            applies && b.rules.iter().any(|r| matches(r, a))
        })
    };
    let mut denied = (!allowed(&attributes)).then(|| attributes.clone());
    if denied.is_none() && attributes.verb == "patch" && creates(&state, parts) {
        let create = Attributes {
            verb: "create",
            ..attributes.clone()
        };
        if !allowed(&create) {
            denied = Some(create);
        }
    }
    let denied = denied?;
    let verb = match attributes.verb {
        "get" => Verb::Get,
        "list" => Verb::List,
        "watch" => Verb::Watch,
        "create" => Verb::Create,
        "update" => Verb::Update,
        "patch" => Verb::Patch,
        "delete" => Verb::Delete,
        _ => Verb::DeleteCollection,
    };
    Some((forbidden(&denied), verb))
}

/// Whether a PATCH is a server-side apply of an object that doesn't exist yet.
fn creates(state: &State, parts: &axum::http::request::Parts) -> bool {
    let apply = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    if !apply {
        return false;
    }
    match parse_path(state, parts.uri.path()) {
        Ok(Target::Object {
            res,
            namespace,
            name,
            status: false,
        }) => !state
            .objects
            .contains_key(&Key::new(res, namespace.as_deref(), &name)),
        _ => false,
    }
}

/// A request's attributes; `None` for what isn't a resource request (discovery).
fn attributes(method: &Method, path: &str, query: Option<&str>) -> Option<Attributes> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return None,
    };
    let mut namespace = None;
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        // `/namespaces/<ns>/<resource>...`, unless it is the Namespace's own
        // subresource (`/namespaces/<ns>/status`).
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let resource = rest[0].to_string();
    let name = rest.get(1).map(|n| n.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match (method, name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "get",
    };
    Some(Attributes {
        verb,
        group: group.to_string(),
        resource,
        subresource,
        namespace,
        name,
    })
}

/// Whether one rule allows the request (the RBAC authorizer's `RuleAllows`).
fn matches(rule: &Rule, a: &Attributes) -> bool {
    let verb = rule.verbs.iter().any(|v| v == "*" || v == a.verb);
    let group = rule.api_groups.iter().any(|g| g == "*" || *g == a.group);
    let combined = match &a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.clone(),
    };
    let resource = rule.resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || a.subresource
                .as_ref()
                .is_some_and(|sub| r.strip_prefix("*/") == Some(sub.as_str()))
    });
    let name = rule.resource_names.is_empty()
        || a.name
            .as_ref()
            .is_some_and(|n| rule.resource_names.contains(n));
    verb && group && resource && name
}

/// The real server's 403 for a request RBAC refused.
fn forbidden(a: &Attributes) -> ApiError {
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let combined = match &a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.clone(),
    };
    let scope = match &a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let object = match &a.name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified,
    };
    let mut details = json!({"kind": a.resource});
    if let Some(name) = &a.name {
        details["name"] = json!(name);
    }
    if !a.group.is_empty() {
        details["group"] = json!(a.group);
    }
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{object} is forbidden: User \"{USER}\" cannot {} resource \"{combined}\" in API group \"{}\" {scope}",
            a.verb, a.group
        ),
    )
    .details(details)
}

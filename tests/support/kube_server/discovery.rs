//! API discovery: `/version`, `/api`, `/apis` and the group version documents, and
//! aggregated discovery (v2) when the client asks for it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::json_response;
use super::path::Discovery;
use super::state::{Shared, State};
use super::VERSION;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(super) fn discovery(shared: &Shared, what: &Discovery, accept: &str) -> Response {
    let state = shared.lock();
    let aggregated =
        accept.contains("as=APIGroupDiscoveryList") && accept.contains("g=apidiscovery.k8s.io");
    let groups = || {
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in state.resources.iter().filter(|r| !r.group.is_empty()) {
            if !seen.contains(&(r.group.clone(), r.version.clone())) {
                seen.push((r.group.clone(), r.version.clone()));
            }
        }
        seen
    };
    let group_json = |group: &str| {
        let versions: Vec<Value> = groups()
            .into_iter()
            .filter(|(g, _)| g == group)
            .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
            .collect();
        json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
    };
    match what {
        Discovery::Version => json_response(
            200,
            &json!({
                "major": VERSION.0, "minor": VERSION.1,
                "gitVersion": format!("v{}.{}.0", VERSION.0, VERSION.1),
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
                "platform": "linux/amd64",
            }),
        ),
        Discovery::Health => (StatusCode::OK, "ok").into_response(),
        Discovery::CoreVersions if aggregated => {
            aggregated_response(&state, &[(String::new(), "v1".to_string())])
        }
        Discovery::CoreVersions => json_response(
            200,
            &json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", shared.port)}],
            }),
        ),
        Discovery::Groups if aggregated => aggregated_response(&state, &groups()),
        Discovery::Groups => {
            let mut names: Vec<String> = Vec::new();
            for (g, _) in groups() {
                if !names.contains(&g) {
                    names.push(g);
                }
            }
            let list: Vec<Value> = names.iter().map(|g| group_json(g)).collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
            )
        }
        Discovery::Group(group) => {
            let mut g = group_json(group);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            json_response(200, &g)
        }
        Discovery::Resources(group, version) => {
            let mut resources = Vec::new();
            for r in state
                .resources
                .iter()
                .filter(|r| &r.group == group && &r.version == version)
            {
                resources.push(json!({
                    "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": VERBS,
                }));
                if r.status {
                    resources.push(json!({
                        "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            let group_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            json_response(
                200,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
            )
        }
    }
}

/// Aggregated discovery (apidiscovery.k8s.io/v2) for these group versions.
fn aggregated_response(state: &State, group_versions: &[(String, String)]) -> Response {
    let mut items: Vec<Value> = Vec::new();
    for (group, version) in group_versions {
        let resources: Vec<Value> = state
            .resources
            .iter()
            .filter(|r| &r.group == group && &r.version == version)
            .map(|r| {
                let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
                let mut d = json!({
                    "resource": r.plural, "responseKind": gvk,
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.kind.to_lowercase(), "verbs": VERBS,
                });
                if r.status {
                    d["subresources"] = json!([{"subresource": "status", "responseKind": gvk, "verbs": ["get", "patch", "update"]}]);
                }
                d
            })
            .collect();
        let version_json =
            json!({"version": version, "resources": resources, "freshness": "Current"});
        match items
            .iter_mut()
            .find(|i| i["metadata"]["name"] == json!(group))
        {
            Some(item) => item["versions"]
                .as_array_mut()
                .expect("versions")
                .push(version_json),
            None => items.push(json!({"metadata": {"name": group}, "versions": [version_json]})),
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")],
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
            .to_string(),
    )
        .into_response()
}

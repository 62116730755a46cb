//! The test Kubernetes API server (`tests/support/kube_server/`) against the real
//! `kube` client: what the Kubernetes target's tests will rely on it for.
//!
//! - `discovery`: `/version`, legacy and aggregated discovery, kinds registered later.
//! - `objects`: create, get, list by label and field, pages, replace, merge patch, delete.
//! - `apply`: server-side apply: idempotence, field managers, conflicts, force.
//! - `kinds`: the defaults and validation of deployments, jobs, pods and services.
//! - `status`: the `status` subresource and the test controls that drive it.
//! - `watch`: raw watches and kube-runtime's watcher.
//! - `strict`: what the server refuses, as the real one would.
//! - `schemas`: writes checked against the vendored Kubernetes v1.35 and Gateway API
//!   v1.3.0 schemas (unknown fields per `fieldValidation`, violations naming the field)
//!   and the rules beyond them (volume mounts, Service backends' ports, subdomains,
//!   Indexed Jobs).
//! - `controls`: kubeconfigs, request counts, seeding objects.

#[path = "../support/kube_server/mod.rs"]
mod kube_server;

mod apply;
mod controls;
mod discovery;
mod kinds;
mod objects;
mod schemas;
mod status;
mod strict;
mod watch;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use serde_json::{json, Value};

use kube_server::KubeServer;

/// A server and a client built from its kubeconfig.
async fn start() -> (KubeServer, Client) {
    let server = KubeServer::start();
    let client = server.client().await;
    (server, client)
}

/// A Deployment named `name` with `replicas` and `labels`, as JSON.
fn deployment_json(name: &str, replicas: i32, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    })
}

fn deployment(name: &str, replicas: i32, labels: Value) -> Deployment {
    serde_json::from_value(deployment_json(name, replicas, labels)).expect("a deployment")
}

/// The `Status` of an API error; panics on anything else.
#[track_caller]
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The managers in `metadata.managedFields`, as `manager/operation[/subresource]`.
fn managers(object: &Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut m = format!(
                "{}/{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            );
            if let Some(sub) = e["subresource"].as_str() {
                m.push('/');
                m.push_str(sub);
            }
            m
        })
        .collect()
}

/// The `fieldsV1` of one manager's entry (operation `Apply` or `Update`).
fn fields_of(object: &Value, manager: &str, operation: &str) -> Option<Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .map(|e| e["fieldsV1"].clone())
}

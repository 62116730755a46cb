use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::ResourceExt;
use serde_json::json;

use crate::kube_server::{KubeServer, Verb, CONTEXT, INITIAL_NAMESPACES};
use crate::{deployment_json, start};

/// A kubeconfig written anywhere, under any context name, is read the way a user's is.
#[tokio::test]
async fn a_written_kubeconfig_reaches_the_server() {
    let server = KubeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    server.write_kubeconfig(&path, "ml-prod");
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("ml-prod"));
    let options = KubeConfigOptions {
        context: Some("ml-prod".into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let mut expected: Vec<String> = INITIAL_NAMESPACES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    // The server's own file has the default context.
    let own = Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    assert_eq!(own.current_context.as_deref(), Some(CONTEXT));
}

#[tokio::test]
async fn requests_are_counted_by_verb() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    server.clear_requests();
    api.patch(
        "web",
        &PatchParams::apply("cairn"),
        &Patch::Apply(deployment_json("web", 1, json!({}))),
    )
    .await
    .unwrap();
    api.get("web").await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    let _ = api.get("missing").await;
    assert_eq!(server.count(Verb::Patch), 1);
    assert_eq!(server.count(Verb::Get), 2);
    assert_eq!(server.count(Verb::List), 1);
    assert_eq!(server.count(Verb::Create), 0);
    assert_eq!(server.writes(), 1);
    let requests = server.requests();
    let apply = &requests[0];
    assert_eq!(
        (
            apply.method.as_str(),
            apply.path.as_str(),
            apply.query.as_str()
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web",
            "&fieldManager=cairn"
        )
    );
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(apply.body.as_ref().unwrap()["spec"]["replicas"], 1);
    assert_eq!(
        server.request_log(),
        [
            "PATCH /apis/apps/v1/namespaces/default/deployments/web?fieldManager=cairn 201",
            "GET /apis/apps/v1/namespaces/default/deployments/web 200",
            "GET /apis/apps/v1/namespaces/default/deployments 200",
            "GET /apis/apps/v1/namespaces/default/deployments/missing 404",
        ]
    );
}

/// Synchronous tests (those that run the `cairn` binary) use the server without a
/// runtime of their own.
#[test]
fn the_server_serves_tests_without_a_runtime() {
    let server = KubeServer::start();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str, token: Option<&str>| {
        let mut request = agent.get(format!("{}{path}", server.url()));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    };
    let (status, body) = get("/api/v1/namespaces/default", Some(server.token()));
    assert_eq!(
        (status, body["metadata"]["name"].as_str()),
        (200, Some("default"))
    );
    let (status, body) = get("/api/v1/namespaces/default", None);
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (status, body) = get("/apis/apps/v1/deployments/x", Some(server.token()));
    assert_eq!(
        (status, body["kind"].as_str(), body["reason"].as_str()),
        (404, Some("Status"), Some("NotFound"))
    );
}

/// Objects another client made (here, seeded by the test) are served like any other;
/// `objects` lists everything.
#[tokio::test]
async fn seeded_objects_are_served_and_everything_is_listed() {
    let (server, client) = start().await;
    let seeded = server.create(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs", "namespace": "default"}, "data": {"x": "1"}}),
        "kubectl-create",
    );
    assert_eq!(
        seeded["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ours"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(api.get("theirs").await.unwrap().data.unwrap()["x"], "1");
    let everything: Vec<String> = server
        .objects()
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let mut expected: Vec<String> = INITIAL_NAMESPACES
        .iter()
        .map(|n| format!("Namespace {n}"))
        .collect();
    expected.sort();
    expected.extend(["ConfigMap ours".to_string(), "ConfigMap theirs".to_string()]);
    assert_eq!(everything, expected);
}

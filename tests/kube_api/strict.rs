use axum::http::Request;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::Status;
use serde_json::{json, Value};

use crate::kube_server::KubeServer;
use crate::{api_error, deployment, start};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
    )
    .unwrap()
}

/// Sends a raw request with the client (so with its token); returns the error `Status`.
async fn raw_error(client: &kube::Client, request: Request<Vec<u8>>) -> Status {
    api_error(client.request::<Value>(request).await)
}

fn post(path: &str, body: Value) -> Request<Vec<u8>> {
    Request::post(path)
        .header("Content-Type", "application/json")
        .body(body.to_string().into_bytes())
        .unwrap()
}

#[tokio::test]
async fn unknown_kinds_and_paths_are_not_found_with_a_status() {
    let (_server, client) = start().await;
    let widget = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &widget);
    let status = api_error(api.list(&ListParams::default()).await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        "the server could not find the requested resource"
    );
    // A served group, an unserved kind.
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    assert_eq!(api_error(sets.get("x").await).code, 404);
    // A namespaced kind without a namespace.
    let pods: Api<Pod> = Api::all(client.clone());
    let status = api_error(pods.get("x").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    // A subresource the server does not serve.
    let status = raw_error(
        &client,
        Request::get("/api/v1/namespaces/default/pods/x/log")
            .body(vec![])
            .unwrap(),
    )
    .await;
    assert_eq!(status.code, 404);
}

#[tokio::test]
async fn names_must_be_dns_names() {
    let (_server, client) = start().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for bad in ["Upper", "under_score", "-dash", "dot.", &"x".repeat(254)] {
        let status = api_error(maps.create(&PostParams::default(), &config_map(bad)).await);
        assert_eq!(
            (status.code, status.reason.as_str()),
            (422, "Invalid"),
            "{bad}"
        );
        assert!(
            status.message.starts_with(&format!(
                "ConfigMap \"{bad}\" is invalid: metadata.name: Invalid value"
            )),
            "{}",
            status.message
        );
        assert_eq!(status.details.unwrap().causes[0].field, "metadata.name");
    }
    maps.create(&PostParams::default(), &config_map("dotted.name-1"))
        .await
        .unwrap();
    // Services take DNS-1035 labels: no leading digit, no dot.
    let services: Api<Service> = Api::default_namespaced(client.clone());
    for bad in ["1web", "web.v1"] {
        let service: Service = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": bad}}),
        )
        .unwrap();
        let status = api_error(services.create(&PostParams::default(), &service).await);
        assert_eq!(status.code, 422, "{bad}");
        assert!(status.message.contains("DNS-1035"), "{}", status.message);
    }
    // Jobs take DNS-1123 labels: no dot.
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job: Job = serde_json::from_value(
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train.v1"}}),
    )
    .unwrap();
    let status = api_error(jobs.create(&PostParams::default(), &job).await);
    assert_eq!(
        status.message.split(':').next().unwrap(),
        "Job.batch \"train.v1\" is invalid"
    );
    // A missing name.
    let status = raw_error(
        &client,
        post(
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        ),
    )
    .await;
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains("name or generateName is required"),
        "{}",
        status.message
    );
    // generateName makes one.
    let made: Value = client
        .request(post(
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "run-"}}),
        ))
        .await
        .unwrap();
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("run-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn labels_and_annotations_must_be_valid() {
    let (_server, client) = start().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    let with_meta = |meta: Value| -> ConfigMap {
        let mut m = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta});
        m["metadata"]["name"] = json!("m");
        serde_json::from_value(m).unwrap()
    };
    for meta in [
        json!({"labels": {"cairn.dev/address": "endpoint.scorer/blue"}}),
        json!({"labels": {"bad key!": "x"}}),
        json!({"labels": {"k": "x".repeat(64)}}),
        json!({"annotations": {"Bad_Prefix.io/x": "y"}}),
    ] {
        let status = api_error(
            maps.create(&PostParams::default(), &with_meta(meta.clone()))
                .await,
        );
        assert_eq!(status.code, 422, "{meta}");
    }
    maps.create(
        &PostParams::default(),
        &with_meta(json!({
            "labels": {"app.kubernetes.io/managed-by": "cairn", "cairn.dev/workspace": "risk"},
            "annotations": {"cairn.dev/address": "endpoint.scorer/blue", "cairn.dev/spec-hash": "ab12"},
        })),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn duplicates_bodies_and_versions_are_checked() {
    let (_server, client) = start().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    maps.create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    let status = api_error(maps.create(&PostParams::default(), &config_map("a")).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "configmaps \"a\" already exists");
    // No kind, no apiVersion, the wrong kind.
    for body in [
        json!({"apiVersion": "v1", "metadata": {"name": "b"}}),
        json!({"kind": "ConfigMap", "metadata": {"name": "b"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"}}),
    ] {
        let status = raw_error(
            &client,
            post("/api/v1/namespaces/default/configmaps", body.clone()),
        )
        .await;
        assert_eq!(
            (status.code, status.reason.as_str()),
            (400, "BadRequest"),
            "{body}"
        );
    }
    // Another namespace in the body than in the URL.
    let status = raw_error(
        &client,
        post("/api/v1/namespaces/default/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "kube-system"}})),
    )
    .await;
    assert_eq!(status.code, 400);
    // A create carrying a resourceVersion (say, an object read back) is refused.
    let read = maps.get("a").await.unwrap();
    let mut copy = read.clone();
    copy.metadata.name = Some("copy".into());
    assert_eq!(
        api_error(maps.create(&PostParams::default(), &copy).await).code,
        500
    );
    // A replace without a resourceVersion is invalid; one under another name is refused.
    let mut unversioned = read.clone();
    unversioned.metadata.resource_version = None;
    assert_eq!(
        api_error(
            maps.replace("a", &PostParams::default(), &unversioned)
                .await
        )
        .code,
        422
    );
    assert_eq!(
        api_error(maps.replace("b", &PostParams::default(), &read).await).code,
        400
    );
}

#[tokio::test]
async fn patches_the_server_cannot_honour_are_refused() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    // A strategic merge patch of a list of objects would merge by key: refused.
    let containers =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:2"}]}}}});
    let status = api_error(
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(containers),
        )
        .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    // A strategic merge patch of a custom resource is refused as the real server does.
    let route = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &route);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"rules": [{"backendRefs": [{"name": "web-blue", "port": 80, "weight": 100}]}]},
    }))
    .unwrap();
    routes
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let status = api_error(
        routes
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {}})),
            )
            .await,
    );
    assert_eq!(status.code, 415);
    // Unknown query parameters say what the server does not do.
    let status = raw_error(
        &client,
        Request::get("/apis/apps/v1/namespaces/default/deployments?shiny=true")
            .body(vec![])
            .unwrap(),
    )
    .await;
    assert_eq!(status.code, 400);
    assert!(status.message.contains("\"shiny\""), "{}", status.message);
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let server = KubeServer::start();
    let config = kube::Config::new(server.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let status = api_error(maps.list(&ListParams::default()).await);
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
    // `/version` is public, as on a real cluster.
    client.apiserver_version().await.unwrap();
}

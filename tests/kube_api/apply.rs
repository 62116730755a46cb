use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::kube_server::Verb;
use crate::{api_error, deployment_json, fields_of, managers, start};

fn apply(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

fn json_of(d: &Deployment) -> Value {
    serde_json::to_value(d).unwrap()
}

#[tokio::test]
async fn applying_twice_is_idempotent() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let desired = deployment_json("web", 2, json!({"app.kubernetes.io/managed-by": "cairn"}));
    let first = api
        .patch("web", &apply("cairn"), &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(first.metadata.generation, Some(1));
    assert_eq!(managers(&json_of(&first)), ["cairn/Apply"]);
    let fields = fields_of(&json_of(&first), "cairn", "Apply").unwrap();
    assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        fields["f:metadata"]["f:labels"]["f:app.kubernetes.io/managed-by"],
        json!({})
    );
    // Lists are atomic: owned whole.
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"],
        json!({})
    );
    assert!(
        fields["f:metadata"].get("f:name").is_none(),
        "system metadata is nobody's: {fields}"
    );

    let rv = server.resource_version();
    let second = api
        .patch("web", &apply("cairn"), &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(second, first, "the same apply changes nothing");
    assert_eq!(second.metadata.generation, Some(1));
    assert_eq!(server.resource_version(), rv, "nothing was written");
    assert_eq!(server.count(Verb::Patch), 2);

    // A changed spec is written, and bumps the generation.
    let scaled = deployment_json("web", 3, json!({"app.kubernetes.io/managed-by": "cairn"}));
    let third = api
        .patch("web", &apply("cairn"), &Patch::Apply(&scaled))
        .await
        .unwrap();
    assert_eq!(third.metadata.generation, Some(2));
    assert_eq!(third.spec.unwrap().replicas, Some(3));
}

#[tokio::test]
async fn another_manager_changing_an_owned_field_conflicts_unless_forced() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.patch(
        "web",
        &apply("cairn"),
        &Patch::Apply(&deployment_json("web", 2, json!({}))),
    )
    .await
    .unwrap();
    let theirs = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 5},
    });
    let status = api_error(
        api.patch("web", &apply("autoscaler"), &Patch::Apply(&theirs))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"cairn\": .spec.replicas"
    );
    let causes = &status.details.as_ref().unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(
        (causes[0].reason.as_str(), causes[0].field.as_str()),
        ("FieldManagerConflict", ".spec.replicas")
    );
    assert_eq!(
        server
            .get::<Deployment>(Some("default"), "web")
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );

    // Applying the value the field already has is no conflict: both own it.
    let same = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2},
    });
    let shared = api
        .patch("web", &apply("autoscaler"), &Patch::Apply(&same))
        .await
        .unwrap();
    assert_eq!(
        managers(&json_of(&shared)),
        ["cairn/Apply", "autoscaler/Apply"]
    );

    // Forced, the field changes and moves to the new manager.
    let forced = api
        .patch("web", &apply("autoscaler").force(), &Patch::Apply(&theirs))
        .await
        .unwrap();
    assert_eq!(forced.spec.as_ref().unwrap().replicas, Some(5));
    let object = json_of(&forced);
    assert_eq!(
        fields_of(&object, "autoscaler", "Apply").unwrap()["f:spec"]["f:replicas"],
        json!({})
    );
    let cairn = fields_of(&object, "cairn", "Apply").unwrap();
    assert!(
        cairn["f:spec"].get("f:replicas").is_none(),
        "cairn lost .spec.replicas: {cairn}"
    );
    assert!(
        cairn["f:spec"].get("f:template").is_some(),
        "and kept the rest: {cairn}"
    );

    // Cairn's next apply of its old value now conflicts with the autoscaler.
    let status = api_error(
        api.patch(
            "web",
            &apply("cairn"),
            &Patch::Apply(&deployment_json("web", 2, json!({}))),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"autoscaler\": .spec.replicas"
    );
}

#[tokio::test]
async fn an_update_takes_the_fields_it_changes() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.patch(
        "web",
        &apply("cairn"),
        &Patch::Apply(&deployment_json("web", 2, json!({}))),
    )
    .await
    .unwrap();
    // kubectl scale: a merge patch by another manager, never a conflict.
    let scaled = api
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("kubectl".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let object = json_of(&scaled);
    assert_eq!(managers(&object), ["cairn/Apply", "kubectl/Update"]);
    assert_eq!(
        fields_of(&object, "kubectl", "Update").unwrap(),
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(fields_of(&object, "cairn", "Apply").unwrap()["f:spec"]
        .get("f:replicas")
        .is_none());
    let status = api_error(
        api.patch(
            "web",
            &apply("cairn"),
            &Patch::Apply(&deployment_json("web", 2, json!({}))),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"
    );
}

#[tokio::test]
async fn fields_dropped_from_an_apply_are_removed_unless_another_manager_owns_them() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let with_labels = deployment_json("web", 1, json!({"a": "1", "b": "2"}));
    api.patch("web", &apply("cairn"), &Patch::Apply(&with_labels))
        .await
        .unwrap();
    // Someone else also sets label b (same value) and adds c.
    api.patch(
        "web",
        &apply("ops"),
        &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"b": "2", "c": "3"}},
        })),
    )
    .await
    .unwrap();
    let without = deployment_json("web", 1, json!({}));
    let after = api
        .patch("web", &apply("cairn"), &Patch::Apply(&without))
        .await
        .unwrap();
    let labels: Vec<&str> = after.labels().keys().map(String::as_str).collect();
    assert_eq!(labels, ["b", "c"], "a is gone, b and c are ops'");
}

#[tokio::test]
async fn apply_creates_in_an_existing_namespace_only() {
    let (_server, client) = start().await;
    let api: Api<Service> = Api::namespaced(client, "nowhere");
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    });
    let status = api_error(
        api.patch("web", &apply("cairn"), &Patch::Apply(&service))
            .await,
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[tokio::test]
async fn apply_needs_a_field_manager_and_force_needs_apply() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(deployment_json("web", 1, json!({}))).unwrap(),
    )
    .await
    .unwrap();
    let status = api_error(
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Apply(&deployment_json("web", 1, json!({}))),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains("fieldManager: Required value"),
        "{}",
        status.message
    );
    // kube refuses to send `force` without apply; the server refuses it too.
    let forced_merge =
        axum::http::Request::patch("/apis/apps/v1/namespaces/default/deployments/web?force=true")
            .header("Content-Type", "application/merge-patch+json")
            .body(br#"{"spec": {"replicas": 2}}"#.to_vec())
            .unwrap();
    let status = api_error(client.request::<Value>(forced_merge).await);
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("force: Forbidden"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn dry_run_apply_answers_without_writing() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.patch(
        "web",
        &apply("cairn"),
        &Patch::Apply(&deployment_json("web", 1, json!({}))),
    )
    .await
    .unwrap();
    let rv = server.resource_version();
    let preview = api
        .patch(
            "web",
            &apply("cairn").dry_run(),
            &Patch::Apply(&deployment_json("web", 4, json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(preview.spec.unwrap().replicas, Some(4));
    assert_eq!(preview.metadata.generation, Some(2));
    assert_eq!(server.resource_version(), rv);
    let stored = server.get::<Deployment>(Some("default"), "web").unwrap();
    assert_eq!(stored.spec.unwrap().replicas, Some(1));
}

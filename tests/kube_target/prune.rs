use serde_json::json;

use crate::kube_server::Verb;
use crate::{apply_ok, deployment, every_kind, names, scope, start, NS, WS};

#[tokio::test]
async fn deletes_only_this_workspaces_labelled_objects_in_reverse_order() {
    let (server, clusters) = start();
    apply_ok(&clusters, &every_kind(WS)).await;
    apply_ok(&clusters, &[deployment("other", "theirs", 1)]).await;
    server.create(
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hand-made", "namespace": "default"},
            "spec": {"ports": [{"port": 80}]},
        }),
        "kubectl-create",
    );
    let mine = clusters.observe(WS, &[scope()]).await.unwrap();
    let theirs = clusters.observe("other", &[scope()]).await.unwrap();
    assert_eq!(names(&theirs), ["Deployment/theirs"]);

    // Everything but the namespace, and (by mistake) the other workspace's object.
    let mut doomed: Vec<_> = mine
        .iter()
        .filter(|o| o.key.kind != "Namespace")
        .cloned()
        .collect();
    doomed.extend(theirs.iter().cloned());
    server.clear_requests();
    let deleted = clusters.prune(WS, &doomed).await.unwrap();
    assert_eq!(deleted, 8);

    let deletes: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == Verb::Delete)
        .map(|r| {
            let body = r.body.unwrap();
            assert_eq!(body["propagationPolicy"], "Background");
            assert!(body["preconditions"]["uid"].is_string());
            assert!(body["preconditions"]["resourceVersion"].is_string());
            r.path.rsplit('/').nth(1).unwrap().to_string()
        })
        .collect();
    assert_eq!(
        deletes,
        [
            "httproutes",
            "services",
            "services",
            "deployments",
            "jobs",
            "serviceaccounts",
            "limitranges",
            "resourcequotas",
        ]
    );
    let left = clusters.observe(WS, &[scope()]).await.unwrap();
    assert_eq!(names(&left), ["Namespace/fraud-ml"]);
    assert!(server
        .object("apps/v1", "Deployment", Some(NS), "theirs")
        .is_some());
    assert!(server
        .object("v1", "Service", Some("default"), "hand-made")
        .is_some());
}

#[tokio::test]
async fn labels_are_checked_again_on_the_live_object() {
    let (server, clusters) = start();
    apply_ok(
        &clusters,
        &[crate::namespace(WS, NS), deployment(WS, "scoring-blue", 1)],
    )
    .await;
    let live = clusters.observe(WS, &[scope()]).await.unwrap();
    let doomed: Vec<_> = live
        .into_iter()
        .filter(|o| o.key.kind == "Deployment")
        .collect();

    // Since it was observed, someone took the Deployment out of Cairn's hands.
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/scoring-blue");
    server.interleave(
        "GET",
        &path,
        "kubectl-label",
        json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}),
    );
    let deleted = clusters.prune(WS, &doomed).await.unwrap();
    assert_eq!(deleted, 0);
    assert_eq!(server.count(Verb::Delete), 0);
    assert!(server
        .object("apps/v1", "Deployment", Some(NS), "scoring-blue")
        .is_some());
}

#[tokio::test]
async fn an_object_changed_between_read_and_delete_is_read_again() {
    let (server, clusters) = start();
    apply_ok(
        &clusters,
        &[crate::namespace(WS, NS), deployment(WS, "scoring-blue", 1)],
    )
    .await;
    let doomed: Vec<_> = clusters
        .observe(WS, &[scope()])
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.key.kind == "Deployment")
        .collect();
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/scoring-blue");
    server.interleave(
        "DELETE",
        &path,
        "kubectl-annotate",
        json!({"metadata": {"annotations": {"note": "x"}}}),
    );
    server.clear_requests();
    assert_eq!(clusters.prune(WS, &doomed).await.unwrap(), 1);
    let statuses: Vec<u16> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == Verb::Delete)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [409, 200]);
    assert!(server
        .object("apps/v1", "Deployment", Some(NS), "scoring-blue")
        .is_none());
}

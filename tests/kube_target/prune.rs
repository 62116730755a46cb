use serde_json::json;

use crate::kube_server::Verb;
use crate::world::{outcomes, World};
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
    let pruned = clusters.prune(WS, &doomed).await.unwrap();
    assert_eq!(pruned.deleted.len(), 8);
    assert_eq!(pruned.kept, []);

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
    let pruned = clusters.prune(WS, &doomed).await.unwrap();
    assert_eq!(pruned.deleted.len(), 0);
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
    assert_eq!(clusters.prune(WS, &doomed).await.unwrap().deleted.len(), 1);
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

/// A Secret someone made by hand in `namespace`.
fn hand_made_secret(server: &crate::kube_server::KubeServer, namespace: &str) {
    server.create(
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cairn-store", "namespace": namespace},
            "stringData": {"AWS_ACCESS_KEY_ID": "AKIA..."},
        }),
        "kubectl-create",
    );
}

#[tokio::test]
async fn a_namespace_holding_what_cairn_does_not_own_is_kept() {
    let (server, clusters) = start();
    apply_ok(&clusters, &every_kind(WS)).await;
    hand_made_secret(&server, NS);
    // Kubernetes' own objects in every namespace are no reason to keep one.
    server.create(
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kube-root-ca.crt", "namespace": NS}}),
        "kube-controller-manager",
    );
    let everything = clusters.observe(WS, &[scope()]).await.unwrap();
    let pruned = clusters.prune(WS, &everything).await.unwrap();
    assert_eq!(pruned.deleted.len(), 8, "{pruned:?}");
    let kept: Vec<String> = pruned
        .kept
        .iter()
        .map(|(key, why)| format!("{key}: {why}"))
        .collect();
    insta::assert_snapshot!("kept_namespace", kept.join("\n"));
    assert!(server.object("v1", "Namespace", None, NS).is_some());
    assert!(server
        .object("v1", "Secret", Some(NS), "cairn-store")
        .is_some());
}

#[tokio::test]
async fn a_namespace_holding_only_cairns_objects_is_deleted() {
    let (server, clusters) = start();
    apply_ok(&clusters, &every_kind(WS)).await;
    // Another workspace's object counts as not this workspace's.
    let everything = clusters.observe(WS, &[scope()]).await.unwrap();
    let pruned = clusters.prune(WS, &everything).await.unwrap();
    assert_eq!(pruned.deleted.len(), 9, "{pruned:?}");
    assert_eq!(pruned.kept, []);
    assert!(server.object("v1", "Namespace", None, NS).is_none());

    let (server, clusters) = start();
    apply_ok(&clusters, &every_kind(WS)).await;
    apply_ok(&clusters, &[deployment("other", "theirs", 1)]).await;
    let everything = clusters.observe(WS, &[scope()]).await.unwrap();
    let pruned = clusters.prune(WS, &everything).await.unwrap();
    assert_eq!(pruned.kept.len(), 1, "{pruned:?}");
    assert!(
        pruned.kept[0].1.contains("Deployment `theirs`"),
        "{pruned:?}"
    );
    assert!(server.object("v1", "Namespace", None, NS).is_some());
}

#[tokio::test]
async fn a_namespace_whose_contents_cairn_may_not_list_is_kept() {
    let (server, clusters) = start();
    apply_ok(&clusters, &every_kind(WS)).await;
    // ConfigMaps: a kind Cairn doesn't render, so only the contents check lists them.
    server.forbid("", "configmaps");
    let everything = clusters.observe(WS, &[scope()]).await.unwrap();
    let pruned = clusters.prune(WS, &everything).await.unwrap();
    assert_eq!(pruned.kept.len(), 1, "{pruned:?}");
    assert!(
        pruned.kept[0].1.contains("may not list the ConfigMaps"),
        "{pruned:?}"
    );
    assert!(server.object("v1", "Namespace", None, NS).is_some());
}

/// A second compute in namespace `team-b`, which apply creates.
const BATCH: &str =
    "[compute.batch]\ntarget = \"kubernetes\"\nnamespace = \"team-b\"\nroles = [\"train\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_compute_keeps_its_namespace_when_it_holds_a_hand_made_secret() {
    let world = World::new();
    world.write("batch.toml", Some(BATCH));
    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));
    let namespace = world.server.object("v1", "Namespace", None, "team-b");
    assert!(namespace.is_some(), "apply made namespace team-b");
    hand_made_secret(&world.server, "team-b");

    world.write("batch.toml", None);
    let (plan, report) = world.apply().await;
    assert!(
        plan.changes().any(|c| c
            .objects
            .iter()
            .any(|o| o.kind == "Namespace" && o.name == "team-b")),
        "the plan deletes the namespace"
    );
    assert!(report.success(), "{}", outcomes(&report));
    insta::assert_snapshot!("removed_compute_report", outcomes(&report));
    assert!(world
        .server
        .object("v1", "Namespace", None, "team-b")
        .is_some());
    assert!(world
        .server
        .object("v1", "Secret", Some("team-b"), "cairn-store")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_compute_deletes_its_namespace_when_only_cairns_objects_are_in_it() {
    let world = World::new();
    world.write("batch.toml", Some(BATCH));
    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));
    world.write("batch.toml", None);
    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));
    assert!(world
        .server
        .object("v1", "Namespace", None, "team-b")
        .is_none());
    assert!(!outcomes(&report).contains("kept"), "{}", outcomes(&report));
}

use std::collections::BTreeSet;

use cairn::backend::kubernetes::cluster::Error;
use cairn::backend::kubernetes::{ApplyOptions, Outcome};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::kube_server::Verb;
use crate::{
    apply_ok, deployment, every_kind, job, namespace, outcomes, route, service, start, NS, WS,
};

#[tokio::test]
async fn creates_every_kind_in_wave_order() {
    let (server, clusters) = start();
    let objects = every_kind(WS);
    let applied = apply_ok(&clusters, &objects).await;
    assert_eq!(
        outcomes(&applied),
        [
            "Namespace/fraud-ml created",
            "ResourceQuota/gpu created",
            "LimitRange/cairn-fraud created",
            "ServiceAccount/cairn-fraud created",
            "Job/train-1 created",
            "Deployment/scoring-blue created",
            "Service/scoring-blue created",
            "Service/scoring created",
            "HTTPRoute/scoring created",
        ]
    );
    assert!(applied.iter().all(|a| a.resource_version.is_some()));

    // Each write is a server-side apply by `cairn`, in wave order.
    let patches: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb.writes())
        .map(|r| {
            assert_eq!(r.verb, Verb::Patch, "{} {}", r.method, r.path);
            assert_eq!(
                r.content_type.as_deref(),
                Some("application/apply-patch+yaml")
            );
            assert!(r.query.contains("fieldManager=cairn"), "{}", r.query);
            assert!(!r.query.contains("force"), "{}", r.query);
            r.path
        })
        .collect();
    // Wave by wave; within a wave (the two Services) in any order.
    let kinds: Vec<&str> = patches
        .iter()
        .map(|p| p.rsplit('/').nth(1).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "namespaces",
            "resourcequotas",
            "limitranges",
            "serviceaccounts",
            "jobs",
            "deployments",
            "services",
            "services",
            "httproutes",
        ]
    );
    let mut patches = patches;
    patches.sort();
    let mut expected = [
        "/api/v1/namespaces/fraud-ml",
        "/api/v1/namespaces/fraud-ml/resourcequotas/gpu",
        "/api/v1/namespaces/fraud-ml/limitranges/cairn-fraud",
        "/api/v1/namespaces/fraud-ml/serviceaccounts/cairn-fraud",
        "/apis/batch/v1/namespaces/fraud-ml/jobs/train-1",
        "/apis/apps/v1/namespaces/fraud-ml/deployments/scoring-blue",
        "/api/v1/namespaces/fraud-ml/services/scoring-blue",
        "/api/v1/namespaces/fraud-ml/services/scoring",
        "/apis/gateway.networking.k8s.io/v1/namespaces/fraud-ml/httproutes/scoring",
    ];
    expected.sort();
    assert_eq!(patches, expected);
    let stored = server
        .object("apps/v1", "Deployment", Some(NS), "scoring-blue")
        .unwrap();
    assert_eq!(stored["metadata"]["labels"]["cairn.dev/workspace"], WS);
    assert_eq!(stored["metadata"]["managedFields"][0]["manager"], "cairn");
    assert_eq!(stored["metadata"]["managedFields"][0]["operation"], "Apply");
}

#[tokio::test]
async fn applying_again_writes_nothing() {
    let (server, clusters) = start();
    let objects = every_kind(WS);
    apply_ok(&clusters, &objects).await;
    let rv = server.resource_version();
    server.clear_requests();

    let again = apply_ok(&clusters, &objects).await;
    assert!(
        again
            .iter()
            .all(|a| matches!(a.outcome, Outcome::Unchanged)),
        "{:?}",
        outcomes(&again)
    );
    assert_eq!(server.writes(), 0, "{:#?}", server.request_log());
    assert_eq!(server.resource_version(), rv);
    // One read per object: the API server's defaults never look like drift.
    assert_eq!(server.count(Verb::Get), objects.len());
}

#[tokio::test]
async fn a_changed_field_is_the_only_write() {
    let (server, clusters) = start();
    let mut objects = every_kind(WS);
    apply_ok(&clusters, &objects).await;
    server.clear_requests();

    objects[5] = deployment(WS, "scoring-blue", 3);
    let applied = apply_ok(&clusters, &objects).await;
    let changed: Vec<String> = outcomes(&applied)
        .into_iter()
        .filter(|o| !o.ends_with("unchanged"))
        .collect();
    assert_eq!(changed, ["Deployment/scoring-blue updated"]);
    assert_eq!(server.writes(), 1);
    let stored = server.get::<Deployment>(Some(NS), "scoring-blue").unwrap();
    assert_eq!(stored.spec.unwrap().replicas, Some(3));
    // The write was conditional on the version read.
    let patch = server
        .requests()
        .into_iter()
        .find(|r| r.verb == Verb::Patch)
        .unwrap();
    assert!(patch.body.unwrap()["metadata"]["resourceVersion"].is_string());
}

#[tokio::test]
async fn a_field_another_manager_owns_conflicts_until_forced() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), deployment(WS, "scoring-blue", 2)];
    apply_ok(&clusters, &objects).await;

    // An autoscaler takes `spec.replicas` over.
    let api: Api<Deployment> = Api::namespaced(server.client().await, NS);
    let theirs = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "scoring-blue"},
        "spec": {"replicas": 5},
    });
    api.patch(
        "scoring-blue",
        &PatchParams::apply("autoscaler").force(),
        &Patch::Apply(&theirs),
    )
    .await
    .unwrap();

    let applied = clusters
        .apply(&objects, &ApplyOptions::default())
        .await
        .unwrap();
    let error = applied[1].error().expect("a conflict");
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "Deployment `scoring-blue` in namespace `fraud-ml`: `autoscaler` also manages `.spec.replicas`, with another value"
    );
    assert!(error.hint().unwrap().contains("--force-conflicts"));
    assert_eq!(
        server
            .get::<Deployment>(Some(NS), "scoring-blue")
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(5),
        "nothing changed"
    );

    let forced = clusters
        .apply(
            &objects,
            &ApplyOptions {
                force: true,
                ..ApplyOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes(&forced),
        [
            "Namespace/fraud-ml unchanged",
            "Deployment/scoring-blue updated"
        ]
    );
    let patch = server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.verb == Verb::Patch)
        .unwrap();
    assert!(patch.query.contains("force=true"), "{}", patch.query);
    assert_eq!(
        server
            .get::<Deployment>(Some(NS), "scoring-blue")
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );
}

#[tokio::test]
async fn a_write_raced_by_another_client_is_read_and_applied_again() {
    let (server, clusters) = start();
    let mut objects = vec![namespace(WS, NS), deployment(WS, "scoring-blue", 2)];
    apply_ok(&clusters, &objects).await;
    server.clear_requests();

    // Between Cairn's read and its write, someone else annotates the object.
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/scoring-blue");
    server.interleave(
        "PATCH",
        &path,
        "kubectl-annotate",
        json!({"metadata": {"annotations": {"team": "risk"}}}),
    );
    objects[1] = deployment(WS, "scoring-blue", 4);
    let applied = apply_ok(&clusters, &objects).await;
    assert_eq!(
        outcomes(&applied),
        [
            "Namespace/fraud-ml unchanged",
            "Deployment/scoring-blue updated"
        ]
    );
    let log: Vec<String> = server
        .request_log()
        .into_iter()
        .filter(|l| l.contains("/deployments/"))
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            format!(
                "{} {} {}",
                parts[0],
                parts[1].split('?').next().unwrap(),
                parts[2]
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            format!("GET {path} 200"),
            format!("PATCH {path} 409"),
            format!("GET {path} 200"),
            format!("PATCH {path} 200"),
        ]
    );
    let stored = server
        .object("apps/v1", "Deployment", Some(NS), "scoring-blue")
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 4);
    assert_eq!(
        stored["metadata"]["annotations"]["team"], "risk",
        "their change stays"
    );
}

#[tokio::test]
async fn a_changed_immutable_field_replaces_the_job() {
    let (server, clusters) = start();
    let mut objects = vec![namespace(WS, NS), job(WS, "train-1", "trainer:1")];
    apply_ok(&clusters, &objects).await;
    let before = server.get::<Job>(Some(NS), "train-1").unwrap();

    objects[1] = job(WS, "train-1", "trainer:2");
    server.clear_requests();
    let applied = apply_ok(&clusters, &objects).await;
    assert_eq!(
        outcomes(&applied),
        ["Namespace/fraud-ml unchanged", "Job/train-1 replaced"]
    );
    let after = server.get::<Job>(Some(NS), "train-1").unwrap();
    assert_ne!(after.metadata.uid, before.metadata.uid, "a new Job");
    let image = &after.spec.unwrap().template.spec.unwrap().containers[0].image;
    assert_eq!(image.as_deref(), Some("trainer:2"));
    let delete = server
        .requests()
        .into_iter()
        .find(|r| r.verb == Verb::Delete)
        .expect("a delete");
    assert_eq!(
        delete.body.as_ref().unwrap()["propagationPolicy"],
        "Foreground"
    );
    assert_eq!(
        delete.body.as_ref().unwrap()["preconditions"]["uid"],
        json!(before.metadata.uid.unwrap())
    );

    // Asked for, a replace happens even with nothing changed.
    let key = objects[1].key();
    let applied = clusters
        .apply(
            &objects,
            &ApplyOptions {
                replace: BTreeSet::from([key]),
                ..ApplyOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(outcomes(&applied)[1], "Job/train-1 replaced");
}

#[tokio::test]
async fn objects_cairn_did_not_create_are_never_taken_over() {
    let (server, clusters) = start();
    // The namespace exists already (a platform team made it), as do a Deployment
    // someone made by hand and a Service of another workspace.
    server.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        "platform-team",
    );
    server.create(
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "scoring-blue", "namespace": NS},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}},
                             "spec": {"containers": [{"name": "x", "image": "x:1"}]}},
            },
        }),
        "kubectl-create",
    );
    let theirs = service("other", "scoring");
    apply_ok(&clusters, std::slice::from_ref(&theirs)).await;
    let rv = server.resource_version();

    let objects = vec![
        namespace(WS, NS),
        deployment(WS, "scoring-blue", 2),
        service(WS, "scoring"),
        route(WS, "scoring", &[("scoring-blue", 100)]),
    ];
    let applied = clusters
        .apply(&objects, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(
        outcomes(&applied),
        [
            "Namespace/fraud-ml foreign",
            "Deployment/scoring-blue failed: Deployment `scoring-blue` in namespace `fraud-ml` exists and is not managed by Cairn for workspace `fraud`",
            "Service/scoring skipped: Deployment `scoring-blue` in namespace `fraud-ml` failed to apply",
            "HTTPRoute/scoring skipped: Deployment `scoring-blue` in namespace `fraud-ml` failed to apply",
        ]
    );
    assert!(applied[1]
        .error()
        .unwrap()
        .hint()
        .unwrap()
        .contains("never takes over"));
    assert_eq!(server.resource_version(), rv, "nothing was written");

    // Another workspace's object is named as such; another workspace's namespace is
    // used as it is.
    let applied = clusters
        .apply(&[namespace("other", "shared")], &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(outcomes(&applied), ["Namespace/shared created"]);
    let applied = clusters
        .apply(&[namespace(WS, "shared")], &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(outcomes(&applied), ["Namespace/shared foreign"]);
    let applied = clusters
        .apply(&objects[2..3], &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(
        outcomes(&applied),
        ["Service/scoring failed: Service `scoring` in namespace `fraud-ml` exists and is not managed by Cairn for workspace `fraud` (it belongs to workspace `other`)"]
    );
}

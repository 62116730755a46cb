use std::collections::BTreeMap;

use cairn::backend::kubernetes::cluster::Error;
use cairn::backend::kubernetes::{diff, KindRef, Scope};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::kube_server::{builtin_resources, KubeServer, Verb};
use crate::{
    apply_ok, clusters_for, deployment, every_kind, metadata, names, object, route, scope, service,
    start, NS, WS,
};

#[tokio::test]
async fn finds_this_workspaces_objects_by_label_in_wave_order() {
    let (server, clusters) = start();
    apply_ok(&clusters, &every_kind(WS)).await;
    // Beside them: another workspace's Deployment and one nobody labelled.
    apply_ok(&clusters, &[deployment("other", "theirs", 1)]).await;
    server.create(
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hand-made", "namespace": NS},
            "spec": {"ports": [{"port": 80}]},
        }),
        "kubectl-create",
    );

    let live = clusters.observe(WS, &[scope()]).await.unwrap();
    assert_eq!(
        names(&live),
        [
            "Namespace/fraud-ml",
            "ResourceQuota/gpu",
            "LimitRange/cairn-fraud",
            "ServiceAccount/cairn-fraud",
            "Job/train-1",
            "Deployment/scoring-blue",
            "Service/scoring",
            "Service/scoring-blue",
            "HTTPRoute/scoring",
        ]
    );
    let deployment = live.iter().find(|o| o.key.kind == "Deployment").unwrap();
    assert_eq!(deployment.api_version, "apps/v1");
    assert_eq!(deployment.key.group, "apps");
    assert_eq!(deployment.address(), Some("fraud/endpoint.scoring"));
    assert_eq!(deployment.spec_hash(), Some("h1"));
    assert_eq!(deployment.value["kind"], "Deployment");
    assert!(deployment.resource_version().is_some());
    assert!(deployment.is_managed_by(WS) && !deployment.is_managed_by("other"));

    // Every list asks for Cairn's labels for the workspace.
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == Verb::List)
        .collect();
    assert_eq!(
        lists.len(),
        12,
        "one list per kind: {:#?}",
        server.request_log()
    );
    for list in lists {
        assert!(
            list.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dcairn%2Ccairn.dev%2Fworkspace%3Dfraud"),
            "{}",
            list.query
        );
    }
}

#[tokio::test]
async fn nothing_changed_is_no_drift() {
    let (_server, clusters) = start();
    let desired = every_kind(WS);
    apply_ok(&clusters, &desired).await;
    let live = clusters.observe(WS, &[scope()]).await.unwrap();
    let live: BTreeMap<_, _> = live.iter().map(|o| (o.key.clone(), o)).collect();
    for object in &desired {
        let found = live.get(&object.key()).expect("observed");
        let d = diff(object, &found.value);
        assert!(d.is_empty(), "{}: {:#?}", object.key(), d.changes);
    }
}

#[tokio::test]
async fn a_hand_edit_shows_on_that_field_only() {
    let (server, clusters) = start();
    let desired = vec![crate::namespace(WS, NS), deployment(WS, "scoring-blue", 2)];
    apply_ok(&clusters, &desired).await;

    // `kubectl edit` changes the image (a merge patch replaces the whole list).
    let api: Api<Deployment> = Api::namespaced(server.client().await, NS);
    let mut containers = server
        .object("apps/v1", "Deployment", Some(NS), "scoring-blue")
        .unwrap()["spec"]["template"]["spec"]["containers"]
        .clone();
    containers[0]["image"] = json!("registry.example/scoring:hotfix");
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    api.patch(
        "scoring-blue",
        &params,
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": containers}}}})),
    )
    .await
    .unwrap();

    let live = clusters.observe(WS, &[scope()]).await.unwrap();
    let found = live.iter().find(|o| o.key == desired[1].key()).unwrap();
    let d = diff(&desired[1], &found.value);
    assert_eq!(
        d.changes
            .iter()
            .map(|c| (c.path.as_str(), c.before.clone(), c.after.clone()))
            .collect::<Vec<_>>(),
        [(
            "spec.template.spec.containers[0].image",
            Some(json!("registry.example/scoring:hotfix")),
            Some(json!("registry.example/scoring:1"))
        )]
    );
    assert!(!d.needs_replace());

    // The editor owns the field now: applying it back is a conflict, until forced.
    let applied = clusters.apply(&desired, &Default::default()).await.unwrap();
    let error = applied[1].error().expect("a conflict");
    assert!(
        error.to_string().ends_with(
            "`kubectl-edit` also manages `.spec.template.spec.containers`, with another value"
        ),
        "{error}"
    );
    server.clear_requests();
    let forced = clusters
        .apply(
            &desired,
            &cairn::backend::kubernetes::ApplyOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        forced[1].outcome,
        cairn::backend::kubernetes::Outcome::Updated
    ));
    assert_eq!(server.writes(), 1);
    let stored = server
        .object("apps/v1", "Deployment", Some(NS), "scoring-blue")
        .unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/scoring:1"
    );
}

#[tokio::test]
async fn a_namespace_that_does_not_exist_is_empty() {
    let (_server, clusters) = start();
    let live = clusters
        .observe(
            WS,
            &[Scope {
                context: None,
                namespace: "never-made".into(),
            }],
        )
        .await
        .unwrap();
    assert!(live.is_empty(), "{live:?}");
}

#[tokio::test]
async fn a_kind_the_server_does_not_serve_is_skipped_unless_desired() {
    // No Gateway API CRDs in this cluster.
    let server = KubeServer::with_resources(
        builtin_resources()
            .into_iter()
            .filter(|r| r.kind != "HTTPRoute")
            .collect(),
    );
    let clusters = clusters_for(&server);
    apply_ok(
        &clusters,
        &[crate::namespace(WS, NS), service(WS, "scoring")],
    )
    .await;
    let live = clusters.observe(WS, &[scope()]).await.unwrap();
    assert_eq!(names(&live), ["Namespace/fraud-ml", "Service/scoring"]);

    let desired = vec![
        crate::namespace(WS, NS),
        service(WS, "scoring"),
        route(WS, "scoring", &[("scoring", 100)]),
    ];
    let error = clusters
        .observe_desired(WS, &[], &desired)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the cluster of context `cairn-test` does not serve gateway.networking.k8s.io/v1 HTTPRoute"
    );
    assert!(error.hint().unwrap().contains("Gateway API"));

    let applied = clusters.apply(&desired, &Default::default()).await.unwrap();
    assert!(matches!(
        applied[2].error(),
        Some(Error::KindNotServed { .. })
    ));
}

#[tokio::test]
async fn kinds_an_override_adds_are_observed_when_asked_for() {
    let server = KubeServer::start();
    server.register(crate::kube_server::ResourceType::custom(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
        "servicemonitors",
        true,
    ));
    let clusters = clusters_for(&server);
    let monitor = object(json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": metadata(WS, "scoring", Some(NS), "fraud/endpoint.scoring"),
        "spec": {"endpoints": [{"port": "http"}]},
    }));
    let desired = vec![crate::namespace(WS, NS), monitor];
    let applied = apply_ok(&clusters, &desired).await;
    assert_eq!(
        crate::outcomes(&applied),
        [
            "Namespace/fraud-ml created",
            "ServiceMonitor/scoring created"
        ]
    );
    // Not asked for: not seen.
    let live = clusters.observe(WS, &[scope()]).await.unwrap();
    assert_eq!(names(&live), ["Namespace/fraud-ml"]);
    let live = clusters
        .observe_kinds(
            WS,
            &[scope()],
            &[KindRef {
                api_version: "monitoring.coreos.com/v1".into(),
                kind: "ServiceMonitor".into(),
                required: false,
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        names(&live),
        ["Namespace/fraud-ml", "ServiceMonitor/scoring"]
    );
    assert_eq!(live[1].key.group, "monitoring.coreos.com");
    let live = clusters.observe_desired(WS, &[], &desired).await.unwrap();
    assert_eq!(
        names(&live),
        ["Namespace/fraud-ml", "ServiceMonitor/scoring"]
    );
}

#[tokio::test]
async fn large_lists_come_in_pages() {
    let server = KubeServer::start();
    let clusters = clusters_for(&server);
    apply_ok(&clusters, &[crate::namespace(WS, NS)]).await;
    for i in 0..520 {
        server.create(
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": metadata(WS, &format!("cm-{i:03}"), Some(NS), "fraud/job.x"),
                "data": {"i": i.to_string()},
            }),
            "cairn",
        );
    }
    server.clear_requests();
    let live = clusters
        .observe_kinds(
            WS,
            &[scope()],
            &[KindRef {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                required: true,
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        live.iter().filter(|o| o.key.kind == "ConfigMap").count(),
        520
    );
    let pages = server
        .request_log()
        .into_iter()
        .filter(|l| l.contains("/configmaps?"))
        .count();
    assert_eq!(pages, 2);
}

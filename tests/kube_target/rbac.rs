//! What Cairn can do with the roles it ships (`templates/rbac/`), bound in the test API
//! server's RBAC mode: only what the role allows is served, the rest is the real
//! server's 403.

use cairn::apply::Status;
use serde_json::Value;

use std::sync::Arc;
use std::time::Duration;

use cairn::backend::kubernetes::Clusters;
use serde_json::json;

use crate::kube_server::{role_from_yaml, KubeServer};
use crate::repo_root;
use crate::world::{folder_store, outcomes, plan_error, plan_with, World, TEAM_NS};

fn shipped(file: &str) -> Value {
    let path = repo_root().join("templates/rbac").join(file);
    role_from_yaml(&std::fs::read_to_string(&path).expect("the shipped role"))
}

/// The shipped Role without `resource` in any rule (rules left empty are dropped).
fn role_without(resource: &str) -> Value {
    let mut role = shipped("role.yaml");
    let rules = role["rules"].as_array_mut().unwrap();
    for rule in rules.iter_mut() {
        let resources = rule["resources"].as_array_mut().unwrap();
        resources.retain(|r| r != resource);
    }
    rules.retain(|r| !r["resources"].as_array().unwrap().is_empty());
    role
}

/// The requests refused, once each.
fn refused(server: &KubeServer) -> Vec<String> {
    let mut seen = server.forbidden_requests();
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_role_plans_and_applies_in_its_namespace() {
    let world = World::new();
    world.admin_made_namespace();
    world.server.bind_role(TEAM_NS, &shipped("role.yaml"));

    let plan = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    insta::assert_snapshot!("role_plan_notes", plan.notes.join("\n"));
    let kinds: Vec<String> = plan
        .changes()
        .flat_map(|c| c.objects.iter().map(|o| o.kind.clone()))
        .collect();
    assert!(!kinds.contains(&"Namespace".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"HTTPRoute".to_string()), "{kinds:?}");

    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));
    // What the role may not do, Cairn did without: list Namespaces and nodes, and
    // pods outside its namespace.
    assert_eq!(
        refused(&world.server),
        ["GET /api/v1/namespaces", "GET /api/v1/nodes",]
    );
    let deployments: Vec<Value> = world
        .server
        .objects()
        .into_iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!(deployments[0]["metadata"]["namespace"], TEAM_NS);

    let again = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    assert!(
        !again.has_changes(),
        "{:?}",
        again.changes().map(|c| &c.reason).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_role_rolls_out_through_the_pod_proxy() {
    let world = World::new();
    world.admin_made_namespace();
    world.server.bind_role(TEAM_NS, &shipped("role.yaml"));
    world.serve_metrics();
    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));

    world.write("model/weights.bin", Some("version 2\n"));
    let (plan, report) = world.apply().await;
    assert!(plan.changes().any(|c| c.rollout.is_some()));
    assert!(report.success(), "{}", outcomes(&report));
    let endpoint = report
        .outcomes
        .iter()
        .find(|o| o.address == "team/endpoint.api")
        .expect("the endpoint's outcome");
    let message = endpoint.message.as_deref().unwrap_or("");
    assert!(message.starts_with("promoted"), "{message}");
    // The gates read the pods through the proxy; nothing else was refused.
    assert!(world
        .server
        .requests()
        .iter()
        .any(|r| r.path.ends_with(":8080/proxy/metrics") && r.status == 200));
    assert_eq!(
        refused(&world.server),
        ["GET /api/v1/namespaces", "GET /api/v1/nodes"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_cairn_may_not_read_is_used_as_it_is() {
    let world = World::new();
    world.admin_made_namespace();
    world.server.bind_role(TEAM_NS, &role_without("namespaces"));

    let plan = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    insta::assert_snapshot!("unreadable_namespace_notes", plan.notes.join("\n"));
    assert!(plan
        .changes()
        .all(|c| c.objects.iter().all(|o| o.kind != "Namespace")));
    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));
    assert!(refused(&world.server).contains(&format!("GET /api/v1/namespaces/{TEAM_NS}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pods_proxy_the_rollout_gate_names_the_missing_permission() {
    let world = World::new();
    world.admin_made_namespace();
    world.server.bind_role(TEAM_NS, &role_without("pods/proxy"));
    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));

    // A new model version: a rollout, whose first gate reads the pods' metrics.
    world.write("model/weights.bin", Some("version 2\n"));
    let (plan, report) = world.apply().await;
    assert!(plan.changes().any(|c| c.rollout.is_some()));
    let endpoint = report
        .outcomes
        .iter()
        .find(|o| o.address == "team/endpoint.api")
        .expect("the endpoint's outcome");
    assert_eq!(endpoint.status, Status::Failed, "{}", outcomes(&report));
    let message = endpoint.message.clone().unwrap_or_default();
    assert!(
        message.contains("cannot get resource \"pods/proxy\""),
        "{message}"
    );
    assert!(message.contains("templates/rbac/"), "{message}");
    insta::assert_snapshot!("missing_pods_proxy", message);
    // The old revision serves as before: the route names it alone.
    let route = world
        .server
        .object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some(TEAM_NS),
            "api",
        )
        .expect("the route");
    let backends = route["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "{route}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_cluster_role_works_at_the_cluster_scope() {
    let world = World::new();
    world.server.bind_cluster_role(&shipped("clusterrole.yaml"));

    let plan = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    assert_eq!(plan.notes, Vec::<String>::new());
    let (_, report) = world.apply().await;
    assert!(report.success(), "{}", outcomes(&report));
    assert_eq!(refused(&world.server), Vec::<String>::new());
    let namespace = world
        .server
        .object("v1", "Namespace", None, TEAM_NS)
        .expect("Cairn made the namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "cairn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_read_as_the_real_servers() {
    let world = World::new();
    world.admin_made_namespace();
    world.server.bind_role(TEAM_NS, &shipped("role.yaml"));
    let client = world.server.client().await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    // The Role grants Secrets (endpoint keys) but no ConfigMaps.
    let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), TEAM_NS);
    let other: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, "default");
    let mut messages = Vec::new();
    for error in [
        nodes.list(&Default::default()).await.unwrap_err(),
        config_maps.get("platform-settings").await.unwrap_err(),
        other
            .delete("web", &Default::default())
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        match error {
            kube::Error::Api(status) => {
                assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
                messages.push(status.message);
            }
            other => panic!("{other}"),
        }
    }
    insta::assert_snapshot!("refusals", messages.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plans_with_the_role_alone_in_each_namespace() {
    // Both of the example's contexts reach one server; an administrator made the two
    // namespaces and bound the shipped Role in each.
    let server = KubeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = server.kubeconfig("aks-gpu-westeurope");
    let second = server
        .kubeconfig("onprem-radiology")
        .replace("current-context: \"onprem-radiology\"\n", "");
    let (clusters_a, users_a, contexts_a) = sections(&config);
    let (clusters_b, users_b, contexts_b) = sections(&second);
    let merged = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters_a}{clusters_b}users:\n{users_a}{users_b}contexts:\n{contexts_a}{contexts_b}current-context: \"aks-gpu-westeurope\"\n"
    );
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, merged).unwrap();
    for namespace in ["imaging-train", "imaging-serve"] {
        server.create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            "kubectl-create",
        );
        server.bind_role(namespace, &shipped("role.yaml"));
    }
    let clusters = Arc::new(
        Clusters::from_kubeconfig_path(&kubeconfig).with_poll_interval(Duration::from_millis(20)),
    );
    let store = folder_store(&dir.path().join("store"));
    let plan = plan_with(&repo_root().join("manifests"), "imaging", &store, &clusters)
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    insta::assert_snapshot!("example_role_plan_notes", plan.notes.join("\n"));
    let objects: Vec<String> = plan
        .changes()
        .flat_map(|c| c.objects.iter().map(|o| format!("{} {}", o.kind, o.name)))
        .collect();
    assert!(
        objects.iter().any(|o| o.starts_with("Job train-pneumonia")),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.starts_with("Namespace")),
        "{objects:?}"
    );
    assert_eq!(
        refused(&server),
        ["GET /api/v1/namespaces", "GET /api/v1/nodes"]
    );
}

/// The `clusters:`, `users:` and `contexts:` entries of a one-context kubeconfig.
fn sections(kubeconfig: &str) -> (String, String, String) {
    let mut out = [String::new(), String::new(), String::new()];
    let mut current = None;
    for line in kubeconfig.lines() {
        match line {
            "clusters:" => current = Some(0),
            "users:" => current = Some(1),
            "contexts:" => current = Some(2),
            l if !l.starts_with(' ') && !l.starts_with('-') => current = None,
            l => {
                if let Some(i) = current {
                    out[i].push_str(l);
                    out[i].push('\n');
                }
            }
        }
    }
    let [a, b, c] = out;
    (a, b, c)
}

#[tokio::test]
async fn an_apply_that_creates_needs_create_besides_patch() {
    let (server, clusters) = crate::start();
    crate::apply_ok(&clusters, &[crate::namespace(crate::WS, crate::NS)]).await;
    let mut role = shipped("role.yaml");
    for rule in role["rules"].as_array_mut().unwrap() {
        if rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "serviceaccounts")
        {
            rule["verbs"] = json!(["get", "list", "patch", "delete"]);
        }
    }
    server.bind_role(crate::NS, &role);
    let account = crate::service_account(crate::WS);
    let applied = clusters
        .apply(std::slice::from_ref(&account), &Default::default())
        .await
        .unwrap();
    let error = applied[0]
        .error()
        .expect("creating needs `create`")
        .to_string();
    assert!(
        error.contains("cannot create resource \"serviceaccounts\" in API group \"\" in the namespace \"fraud-ml\""),
        "{error}"
    );
    // Made by someone who may (with another spec hash): then `patch` is all an apply
    // that changes it needs.
    let mut older = account.value.clone();
    older["metadata"]["annotations"]["cairn.dev/spec-hash"] = json!("h0");
    server.create(older, "admin");
    let force = cairn::backend::kubernetes::ApplyOptions {
        force: true,
        ..Default::default()
    };
    let applied = clusters.apply(&[account], &force).await.unwrap();
    assert!(
        matches!(
            applied[0].outcome,
            cairn::backend::kubernetes::Outcome::Updated
        ),
        "{:?}",
        applied[0].outcome
    );
}

#[tokio::test]
async fn a_namespace_cairn_made_is_read_by_name_when_namespaces_cannot_be_listed() {
    let (server, clusters) = crate::start();
    crate::apply_ok(&clusters, &[crate::namespace(crate::WS, crate::NS)]).await;
    server.bind_role(crate::NS, &shipped("role.yaml"));
    let live = clusters
        .observe(crate::WS, &[crate::scope()])
        .await
        .expect("observing with the Role alone");
    assert_eq!(crate::names(&live), ["Namespace/fraud-ml"]);
    assert_eq!(
        refused(&server),
        ["GET /api/v1/namespaces"],
        "listed, refused, then read by name"
    );
    // Without `get` on it either, it is left out rather than an error.
    let (server, clusters) = crate::start();
    crate::apply_ok(&clusters, &[crate::namespace(crate::WS, crate::NS)]).await;
    server.bind_role(crate::NS, &role_without("namespaces"));
    let live = clusters
        .observe(crate::WS, &[crate::scope()])
        .await
        .unwrap();
    assert_eq!(crate::names(&live), Vec::<String>::new());
}

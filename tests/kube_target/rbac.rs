//! What Cairn can do with the roles it ships (`templates/rbac/`), bound in the test API
//! server's RBAC mode: only what the role allows is served, the rest is the real
//! server's 403.

use cairn::apply::Status;
use serde_json::Value;

use crate::kube_server::{role_from_yaml, KubeServer};
use crate::repo_root;
use crate::world::{outcomes, plan_error, World, TEAM_NS};

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
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), TEAM_NS);
    let other: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, "default");
    let mut messages = Vec::new();
    for error in [
        nodes.list(&Default::default()).await.unwrap_err(),
        secrets.get("cairn-store").await.unwrap_err(),
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

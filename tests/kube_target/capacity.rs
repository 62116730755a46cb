use std::collections::BTreeMap;

use cairn::backend::kubernetes::{Capacity, NodeGpus};
use serde_json::json;

use crate::world::{plan_error, World, COMPUTE};
use crate::{apply_ok, namespace, quota, start, NS, WS};

fn node(server: &crate::kube_server::KubeServer, name: &str, gpus: Option<&str>) {
    server.create(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"pool": "gpu"}}}),
        "kubelet",
    );
    let mut allocatable = json!({"cpu": "32", "memory": "256Gi", "pods": "110"});
    if let Some(gpus) = gpus {
        allocatable["nvidia.com/gpu"] = json!(gpus);
    }
    server.set_status(
        "v1",
        "Node",
        None,
        name,
        json!({"allocatable": allocatable, "capacity": allocatable}),
    );
}

/// A pod in `default` requesting `gpus`, bound to `node` (or pending), in `phase`.
fn pod(
    server: &crate::kube_server::KubeServer,
    name: &str,
    node: Option<&str>,
    gpus: &str,
    phase: &str,
) {
    let mut spec = json!({"containers": [
        {"name": "a", "image": "x:1", "resources": {"limits": {"nvidia.com/gpu": gpus}}},
        {"name": "b", "image": "x:1"},
    ]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    server.create(
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        "kubelet",
    );
    server.set_status("v1", "Pod", Some("default"), name, json!({"phase": phase}));
}

fn gpu_node(name: &str, allocatable: u64, in_use: u64) -> NodeGpus {
    NodeGpus {
        name: name.into(),
        labels: BTreeMap::from([("pool".to_string(), "gpu".to_string())]),
        allocatable,
        in_use,
    }
}

#[tokio::test]
async fn gpu_quota_and_each_nodes_free_gpus() {
    let (server, clusters) = start();
    apply_ok(&clusters, &[namespace(WS, NS), quota(WS, 8)]).await;
    server.set_status(
        "v1",
        "ResourceQuota",
        Some(NS),
        "gpu",
        json!({"hard": {"requests.nvidia.com/gpu": "8"}, "used": {"requests.nvidia.com/gpu": "3"}}),
    );
    node(&server, "gpu-1", Some("4"));
    node(&server, "gpu-2", Some("4"));
    node(&server, "cpu-1", None);
    // Requested on gpu-1: 3 (limits stand for requests); finished and unbound pods
    // hold nothing.
    pod(&server, "running", Some("gpu-1"), "3", "Running");
    pod(&server, "done", Some("gpu-2"), "4", "Succeeded");
    pod(&server, "pending", None, "4", "Pending");
    assert_eq!(
        clusters.capacity(None, NS).await.unwrap(),
        Capacity {
            quota_hard: Some(8),
            quota_used: Some(3),
            nodes: Some(vec![gpu_node("gpu-1", 4, 3), gpu_node("gpu-2", 4, 0)]),
            in_use_known: true,
        }
    );
}

#[tokio::test]
async fn no_quota_and_unreadable_nodes_are_unknowns_not_errors() {
    let (server, clusters) = start();
    apply_ok(&clusters, &[namespace(WS, NS)]).await;
    assert_eq!(
        clusters.capacity(None, NS).await.unwrap(),
        Capacity {
            quota_hard: None,
            quota_used: None,
            nodes: Some(Vec::new()),
            in_use_known: true,
        }
    );
    node(&server, "gpu-1", Some("2"));
    // A role that may list nodes but not pods everywhere: GPUs in use are unknown.
    server.forbid("", "pods");
    assert_eq!(
        clusters.capacity(None, NS).await.unwrap(),
        Capacity {
            nodes: Some(vec![gpu_node("gpu-1", 2, 0)]),
            in_use_known: false,
            ..Capacity::default()
        }
    );
    // A namespaced role can't list nodes.
    server.forbid("", "nodes");
    assert_eq!(
        clusters.capacity(None, NS).await.unwrap(),
        Capacity::default()
    );
    // Nor quotas, which is an error: the plan can't check GPU requests.
    server.forbid("", "resourcequotas");
    let error = clusters.capacity(None, NS).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot list ResourceQuotas in namespace `fraud-ml`: resourcequotas is forbidden: User \"cairn-test\" cannot list resource \"resourcequotas\" in API group \"\" in the namespace \"fraud-ml\" (403 Forbidden)"
    );
    insta::assert_snapshot!("forbidden_quota_hint", error.hint().unwrap());
}

#[tokio::test]
async fn the_tightest_quota_wins() {
    let (server, clusters) = start();
    apply_ok(&clusters, &[namespace(WS, NS), quota(WS, 8)]).await;
    server.create(
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
               "metadata": {"name": "team-cap", "namespace": NS},
               "spec": {"hard": {"requests.nvidia.com/gpu": "2"}}}),
        "platform-team",
    );
    let capacity = clusters.capacity(None, NS).await.unwrap();
    assert_eq!(capacity.quota_hard, Some(2));
    assert_eq!(capacity.quota_used, None, "not counted yet");
}

/// A training job on the A100 pool: `instances` pods of `gpus` each.
fn train(world: &World, instances: u32, gpus: u32) {
    world.write(
        "train.toml",
        Some(&format!(
            "[job.train]\n\
             compute = \"compute.cluster\"\n\
             instance_type = \"a100\"\n\
             image = \"registry.example.com/train:1\"\n\
             gpus = {gpus}\n\
             instances = {instances}\n"
        )),
    );
}

/// The plan's refusals, one per line.
async fn refusals(world: &World) -> String {
    match world.plan().await {
        Ok(plan) => panic!("the plan was made: notes {:?}", plan.notes),
        Err(e) => plan_error(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_must_fit_on_one_node() {
    let world = World::new();
    // 4 GPUs in all, but no node has 4.
    world.node("a100-0", "a100", 2, &[]);
    world.node("a100-1", "a100", 2, &[]);
    train(&world, 1, 4);
    insta::assert_snapshot!("pod_larger_than_any_node", refusals(&world).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_pods_already_request_are_not_free() {
    let world = World::new();
    world.node("a100-0", "a100", 4, &[]);
    world.node("a100-1", "a100", 4, &[]);
    world.node("other-0", "other", 8, &[]);
    world.pod_on("someone-else", "a100-1", 1, "Running");
    world.pod_on("finished", "a100-0", 4, "Succeeded");
    train(&world, 2, 4);
    insta::assert_snapshot!("gpus_in_use", refusals(&world).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_fit_are_planned_without_a_word() {
    let world = World::new();
    world.node("a100-0", "a100", 4, &[]);
    world.node("a100-1", "a100", 4, &[]);
    world.pod_on("finished", "a100-0", 4, "Succeeded");
    train(&world, 2, 4);
    let plan = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    assert_eq!(plan.notes, Vec::<String>::new());
    assert!(plan.changes().any(|c| c.address == "team/job.train"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaled_pool_at_zero_nodes_may_wait_for_the_autoscaler() {
    let world = World::new();
    world.write(
        "compute.toml",
        Some(&COMPUTE.replace(
            "target = \"kubernetes\"\n",
            "target = \"kubernetes\"\nautoscale = true\n",
        )),
    );
    train(&world, 2, 4);
    let plan = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    insta::assert_snapshot!("autoscaled_at_zero", plan.notes.join("\n"));

    // The same pool without `autoscale`: refused.
    world.write("compute.toml", Some(COMPUTE));
    insta::assert_snapshot!("not_autoscaled_at_zero", refusals(&world).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_an_autoscaler_made_are_a_pool_that_can_grow() {
    let world = World::new();
    world.node("a100-0", "a100", 4, &[("karpenter.sh/nodepool", "a100")]);
    world.pod_on("busy", "a100-0", 4, "Running");
    train(&world, 2, 4);
    let plan = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    insta::assert_snapshot!("karpenter_pool", plan.notes.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_nodes_are_a_note_not_a_refusal() {
    let world = World::new();
    world.server.forbid("", "nodes");
    train(&world, 2, 4);
    let plan = world
        .plan()
        .await
        .unwrap_or_else(|e| panic!("{}", plan_error(&e)));
    insta::assert_snapshot!("nodes_unknown", plan.notes.join("\n"));
}

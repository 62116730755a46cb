use cairn::backend::kubernetes::Capacity;
use serde_json::json;

use crate::{apply_ok, namespace, quota, start, NS, WS};

fn node(server: &crate::kube_server::KubeServer, name: &str, gpus: Option<&str>) {
    server.create(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
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

#[tokio::test]
async fn gpu_quota_and_node_allocatable() {
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
    assert_eq!(
        clusters.capacity(None, NS).await.unwrap(),
        Capacity {
            quota_hard: Some(8),
            quota_used: Some(3),
            nodes_allocatable: Some(8),
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
            nodes_allocatable: Some(0),
        }
    );
    // A namespaced role can't list nodes.
    server.forbid("", "nodes");
    assert_eq!(
        clusters.capacity(None, NS).await.unwrap(),
        Capacity {
            quota_hard: None,
            quota_used: None,
            nodes_allocatable: None,
        }
    );
    // Nor quotas, which is an error: the plan can't check GPU requests.
    server.forbid("", "resourcequotas");
    let error = clusters.capacity(None, NS).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot list ResourceQuotas in namespace `fraud-ml`: resourcequotas is forbidden: User \"cairn-test\" cannot list resource \"resourcequotas\" in API group \"\" in the namespace \"fraud-ml\" (403 Forbidden)"
    );
    assert!(error.hint().unwrap().contains("RBAC"));
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

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde_json::json;

use crate::kube_server::{KubeServer, ResourceType, VERSION};
use crate::start;

#[tokio::test]
async fn version_reports_the_served_kubernetes() {
    let (_server, client) = start().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), VERSION);
}

/// Walks `/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>` as kube's discovery does.
#[tokio::test]
async fn discovery_finds_every_served_kind() {
    let (_server, client) = start().await;
    let discovery = Discovery::new(client).run().await.unwrap();
    let expect = [
        ("", "v1", "Namespace", "namespaces", Scope::Cluster),
        ("", "v1", "Service", "services", Scope::Namespaced),
        (
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            Scope::Namespaced,
        ),
        (
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            Scope::Namespaced,
        ),
        ("", "v1", "LimitRange", "limitranges", Scope::Namespaced),
        ("", "v1", "Pod", "pods", Scope::Namespaced),
        ("", "v1", "Node", "nodes", Scope::Cluster),
        ("apps", "v1", "Deployment", "deployments", Scope::Namespaced),
        ("batch", "v1", "Job", "jobs", Scope::Namespaced),
        (
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
            Scope::Namespaced,
        ),
    ];
    for (group, version, kind, plural, scope) in expect {
        let (resource, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
            .unwrap_or_else(|| panic!("{group}/{version} {kind} is discovered"));
        assert_eq!(resource.plural, plural);
        assert_eq!(caps.scope, scope, "{kind}");
        assert!(caps.supports_operation("patch") && caps.supports_operation("watch"));
    }
    assert!(discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "StatefulSet"))
        .is_none());
    let deployments = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .unwrap()
        .1;
    let subresources: Vec<&str> = deployments
        .subresources
        .iter()
        .map(|(r, _)| r.plural.as_str())
        .collect();
    assert_eq!(subresources, ["status"]);
}

#[tokio::test]
async fn aggregated_discovery_lists_the_same_kinds() {
    let (_server, client) = start().await;
    let discovery = Discovery::new(client).run_aggregated().await.unwrap();
    for (group, kind, scope) in [
        ("", "Pod", Scope::Namespaced),
        ("", "Namespace", Scope::Cluster),
        ("apps", "Deployment", Scope::Namespaced),
        ("batch", "Job", Scope::Namespaced),
        ("gateway.networking.k8s.io", "HTTPRoute", Scope::Namespaced),
    ] {
        let (_, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(group, "v1", kind))
            .unwrap_or_else(|| panic!("{group} {kind} is discovered"));
        assert_eq!(caps.scope, scope, "{kind}");
    }
}

/// The table is generic: a kind registered later (as a CRD would be) is discovered and
/// served like the built-in ones.
#[tokio::test]
async fn a_registered_kind_is_discovered_and_served() {
    let server = KubeServer::start();
    server.register(ResourceType::custom(
        "ml.example.com",
        "v1alpha1",
        "Experiment",
        "experiments",
        true,
    ));
    let client = server.client().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (resource, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "ml.example.com",
            "v1alpha1",
            "Experiment",
        ))
        .expect("the registered kind is discovered");
    assert_eq!(caps.scope, Scope::Namespaced);
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ml.example.com/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "sweep"}, "spec": {"trials": 4},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let list = api.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    // Custom resources' list items carry their type, as the real server sends them.
    assert_eq!(list.items[0].types.as_ref().unwrap().kind, "Experiment");
    assert_eq!(list.items[0].data["spec"]["trials"], 4);
}

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::{api_error, deployment, managers, start};

fn config_map(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }))
    .unwrap()
}

async fn names(api: &Api<ConfigMap>, params: &ListParams) -> Vec<String> {
    api.list(params)
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect()
}

#[tokio::test]
async fn create_sets_the_server_fields_and_get_reads_it_back() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let before = server.resource_version();
    let created = api
        .create(
            &PostParams::default(),
            &deployment("web", 2, json!({"app": "web"})),
        )
        .await
        .unwrap();
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(rv > before, "a new resource version: {rv} after {before}");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created
        .metadata
        .uid
        .as_deref()
        .is_some_and(|u| u.len() == 36));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.namespace().as_deref(), Some("default"));
    assert_eq!(
        managers(&serde_json::to_value(&created).unwrap()),
        ["unknown/Update"]
    );
    // The create answered what is stored.
    let got = api.get("web").await.unwrap();
    assert_eq!(got, created);
    assert_eq!(got.spec.unwrap().replicas, Some(2));
}

#[tokio::test]
async fn lists_select_by_label_and_by_name() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    api.create(
        &pp,
        &config_map("a", json!({"app": "web", "tier": "front"})),
    )
    .await
    .unwrap();
    api.create(&pp, &config_map("b", json!({"app": "web", "tier": "back"})))
        .await
        .unwrap();
    api.create(&pp, &config_map("c", json!({"app": "db"})))
        .await
        .unwrap();
    api.create(&pp, &config_map("d", json!({}))).await.unwrap();
    let labels = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&api, &labels("app=web")).await, ["a", "b"]);
    assert_eq!(names(&api, &labels("app==web,tier=back")).await, ["b"]);
    assert_eq!(names(&api, &labels("app!=web")).await, ["c", "d"]);
    assert_eq!(
        names(&api, &labels("tier in (front, back)")).await,
        ["a", "b"]
    );
    assert_eq!(names(&api, &labels("app notin (web)")).await, ["c", "d"]);
    assert_eq!(names(&api, &labels("tier")).await, ["a", "b"]);
    assert_eq!(names(&api, &labels("!tier")).await, ["c", "d"]);
    assert_eq!(names(&api, &labels("app,!tier")).await, ["c"]);
    assert_eq!(
        names(&api, &ListParams::default().fields("metadata.name=c")).await,
        ["c"]
    );
    assert_eq!(
        names(
            &api,
            &ListParams::default()
                .fields("metadata.name!=c")
                .labels("app")
        )
        .await,
        ["a", "b"]
    );
    // Another namespace holds none of them; the cluster-wide list sees them all.
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    assert!(names(&other, &ListParams::default()).await.is_empty());
    let all: Api<ConfigMap> = Api::all(client);
    assert_eq!(names(&all, &labels("app")).await, ["a", "b", "c"]);
}

#[tokio::test]
async fn lists_come_in_pages() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    for name in ["a", "b", "c", "d", "e"] {
        api.create(&PostParams::default(), &config_map(name, json!({})))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(2);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn a_replace_with_a_stale_resource_version_conflicts() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let created = api
        .create(&PostParams::default(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    let mut first = created.clone();
    first.spec.as_mut().unwrap().replicas = Some(3);
    let replaced = api
        .replace("web", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_eq!(
        replaced.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );
    assert_ne!(replaced.resource_version(), created.resource_version());
    // The same edit from the old version is refused, and changes nothing.
    let mut stale = created.clone();
    stale.spec.as_mut().unwrap().replicas = Some(5);
    let status = api_error(api.replace("web", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
    let stored = server.get::<Deployment>(Some("default"), "web").unwrap();
    assert_eq!(stored.spec.unwrap().replicas, Some(3));
    // A replace that changes only labels keeps the generation.
    let mut labelled = replaced.clone();
    labelled.labels_mut().insert("team".into(), "ml".into());
    let after = api
        .replace("web", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(2));
    assert_eq!(after.labels()["team"], "ml");
}

#[tokio::test]
async fn merge_patches_merge_maps_and_null_removes() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(
        &PostParams::default(),
        &deployment("web", 1, json!({"app": "web", "old": "x"})),
    )
    .await
    .unwrap();
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"old": null, "new": "y"}}, "spec": {"replicas": 4}}),
            ),
        )
        .await
        .unwrap();
    let labels: Vec<(&str, &str)> = patched
        .labels()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, [("app", "web"), ("new", "y")]);
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(4));
    assert_eq!(patched.metadata.generation, Some(2));
    // The containers list is untouched by a patch that does not name it.
    assert_eq!(
        patched.spec.unwrap().template.spec.unwrap().containers[0].name,
        "app"
    );
    // A strategic merge patch without lists of objects is a merge patch here.
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(5));
    // A patch that changes nothing writes nothing.
    let again = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), patched.metadata.resource_version);
}

#[tokio::test]
async fn delete_removes_and_a_second_delete_is_not_found() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    let stale = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let status = api_error(api.delete("web", &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let deleted = api
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    // Deployments answer with a Status, pods with the object, as the real server does.
    assert!(deleted.is_right(), "{deleted:?}");
    assert!(server.get::<Deployment>(Some("default"), "web").is_none());
    let status = api_error(api.get("web").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "deployments.apps \"web\" not found");
    let status = api_error(api.delete("web", &DeleteParams::default()).await);
    assert_eq!(status.code, 404);
}

#[tokio::test]
async fn finalizers_hold_a_delete_until_they_are_removed() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut held = config_map("held", json!({}));
    held.metadata.finalizers = Some(vec!["cairn.dev/cleanup".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    let answer = api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = answer.left().expect("the object, marked");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(server.get::<ConfigMap>(Some("default"), "held").is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(server.get::<ConfigMap>(Some("default"), "held").is_none());
}

#[tokio::test]
async fn deletes_cascade_to_dependents_unless_orphaned() {
    let (server, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let job = |name: &str| -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "train", "image": "registry.example/train:1"}]}}},
        }))
        .unwrap()
    };
    for name in ["kept", "gone"] {
        let created = jobs
            .create(&PostParams::default(), &job(name))
            .await
            .unwrap();
        server.create(
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{name}-pod"), "namespace": "default",
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                        "uid": created.uid().unwrap(), "controller": true}]},
                "spec": {"containers": [{"name": "train", "image": "registry.example/train:1"}]},
            }),
            "kube-controller-manager",
        );
    }
    // Jobs orphan their pods by default (batch/v1), as the real server does.
    jobs.delete("kept", &DeleteParams::default()).await.unwrap();
    let orphan = pods.get("kept-pod").await.unwrap();
    assert!(orphan.owner_references().is_empty());
    jobs.delete("gone", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(api_error(pods.get("gone-pod").await).code, 404);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_it_holds() {
    let (_server, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .unwrap();
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(created.labels()["kubernetes.io/metadata.name"], "team");
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    api.create(&PostParams::default(), &config_map("settings", json!({})))
        .await
        .unwrap();
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(api.get("settings").await).code, 404);
    let status = api_error(
        api.create(&PostParams::default(), &config_map("again", json!({})))
            .await,
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "namespaces \"team\" not found")
    );
}

#[tokio::test]
async fn delete_collection_deletes_the_selected() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        api.create(
            &PostParams::default(),
            &config_map(name, json!({"app": app})),
        )
        .await
        .unwrap();
    }
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await
        .unwrap();
    let list = deleted.left().expect("the deleted objects");
    let names: Vec<String> = list.items.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(self::names(&api, &ListParams::default()).await, ["c"]);
}

#[tokio::test]
async fn metadata_only_reads_answer_partial_objects() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(
        &PostParams::default(),
        &config_map("a", json!({"app": "web"})),
    )
    .await
    .unwrap();
    let meta = api.get_metadata("a").await.unwrap();
    assert_eq!(meta.labels()["app"], "web");
    let list = api
        .list_metadata(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].name_any(), "a");
}

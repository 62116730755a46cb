use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use crate::start;

fn config_map(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "1"},
    }))
    .unwrap()
}

/// `(type, name, data.k)` of the next `n` events.
async fn next_events(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
    n: usize,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event in time")
            .expect("the watch goes on")
            .expect("an event");
        let (kind, cm) = match event {
            WatchEvent::Added(cm) => ("ADDED", cm),
            WatchEvent::Modified(cm) => ("MODIFIED", cm),
            WatchEvent::Deleted(cm) => ("DELETED", cm),
            other => panic!("unexpected {other:?}"),
        };
        let k = cm
            .data
            .as_ref()
            .and_then(|d| d.get("k"))
            .cloned()
            .unwrap_or_default();
        out.push((kind.to_string(), cm.name_any(), k));
    }
    out
}

fn ev(kind: &str, name: &str, k: &str) -> (String, String, String) {
    (kind.into(), name.into(), k.into())
}

#[tokio::test]
async fn a_watch_sees_added_then_modified_then_deleted() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &config_map("before", "web"))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &config_map("cm", "web"))
        .await
        .unwrap();
    api.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("cm", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        next_events(&mut stream, 3).await,
        [
            ev("ADDED", "cm", "1"),
            ev("MODIFIED", "cm", "2"),
            ev("DELETED", "cm", "2")
        ],
        "from the listed version: nothing about `before`"
    );
}

#[tokio::test]
async fn a_watch_from_an_old_version_replays_and_from_zero_starts_with_what_exists() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &config_map("a", "web"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    let mut replay = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        next_events(&mut replay, 2).await,
        [ev("ADDED", "a", "1"), ev("MODIFIED", "a", "2")]
    );
    let mut current = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_events(&mut current, 1).await, [ev("ADDED", "a", "2")]);
}

#[tokio::test]
async fn a_selective_watch_sees_objects_enter_and_leave_its_selector() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = WatchParams::default().labels("app=web");
    let mut stream = api.watch(&params, &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &config_map("db", "db"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &config_map("web", "web"))
        .await
        .unwrap();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "old"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    assert_eq!(
        next_events(&mut stream, 3).await,
        [
            ev("ADDED", "web", "1"),
            ev("DELETED", "web", "1"),
            ev("ADDED", "db", "1")
        ]
    );
}

#[tokio::test]
async fn a_watch_ends_after_its_timeout() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    let events: Vec<_> =
        tokio::time::timeout(Duration::from_secs(10), stream.try_collect::<Vec<_>>())
            .await
            .expect("the watch ended")
            .unwrap();
    assert!(events.is_empty());
}

/// kube-runtime's watcher, with both initial strategies: a paged list then a watch, and a
/// streaming list (`sendInitialEvents`).
#[tokio::test]
async fn the_runtime_watcher_lists_then_follows() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &config_map(name, "web"))
            .await
            .unwrap();
    }
    for config in [
        watcher::Config::default().page_size(2),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut stream = watcher(api.clone(), config).boxed();
        let mut listed = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                .await
                .unwrap()
                .unwrap()
            {
                Some(watcher::Event::InitApply(cm)) => listed.push(cm.name_any()),
                Some(watcher::Event::InitDone) => break,
                Some(_) => {}
                None => panic!("the watcher ended"),
            }
        }
        assert_eq!(listed, ["a", "b", "c"]);
        api.patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "2"}})),
        )
        .await
        .unwrap();
        let applied = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap();
        match applied {
            Some(watcher::Event::Apply(cm)) => assert_eq!(cm.name_any(), "b"),
            other => panic!("expected b's change, got {other:?}"),
        }
        api.patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "1"}})),
        )
        .await
        .unwrap();
    }
}

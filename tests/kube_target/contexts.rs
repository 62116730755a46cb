use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Duration;

use cairn::backend::kubernetes::cluster::Error;
use cairn::backend::kubernetes::{diff, ApplyOptions, Clusters, Scope};

use crate::kube_server::KubeServer;
use crate::{imaging_objects, names, outcomes, scope, WS};

/// The error of a client that can't be made.
fn no_client(result: Result<kube::Client, Error>) -> Error {
    match result {
        Ok(_) => panic!("expected no client"),
        Err(e) => e,
    }
}

const TRAIN: &str = "aks-gpu-westeurope";
const SERVE: &str = "onprem-radiology";

/// Two clusters in one `KUBECONFIG` of two files, as kubectl merges them.
fn two_clusters() -> (KubeServer, KubeServer, Clusters, tempfile::TempDir) {
    let train = KubeServer::start();
    let serve = KubeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("train.yaml"), dir.path().join("serve.yaml"));
    train.write_kubeconfig(&a, TRAIN);
    serve.write_kubeconfig(&b, SERVE);
    let clusters =
        Clusters::from_kubeconfig_paths(&[a, b]).with_poll_interval(Duration::from_millis(20));
    (train, serve, clusters, dir)
}

fn stored(server: &KubeServer) -> Vec<String> {
    server
        .objects()
        .iter()
        .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "cairn")
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or("-"),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn objects_go_to_their_contexts_cluster() {
    let (train, serve, clusters, _dir) = two_clusters();
    let objects = imaging_objects();
    let applied = clusters
        .apply(&objects, &ApplyOptions::default())
        .await
        .unwrap();
    assert!(
        applied.iter().all(|a| a.error().is_none()),
        "{:#?}",
        outcomes(&applied)
    );
    let mut on_train = stored(&train);
    on_train.sort();
    assert_eq!(
        on_train,
        [
            "Job imaging-train/train-pneumonia-9f3c2a1b7d4e",
            "Job imaging-train/train-pneumonia-9f3c2a1b7d4e-upload",
            "LimitRange imaging-train/cairn-imaging",
            "Namespace -/imaging-train",
            "PersistentVolumeClaim imaging-train/train-pneumonia-9f3c2a1b7d4e-outputs",
            "ResourceQuota imaging-train/cairn-imaging-gpu-pool",
            "Service imaging-train/train-pneumonia-9f3c2a1b7d4e",
            "ServiceAccount imaging-train/cairn-imaging",
        ]
    );
    let mut on_serve = stored(&serve);
    on_serve.sort();
    assert_eq!(
        on_serve,
        [
            "Deployment imaging-serve/triage-blue-9f3c2a1b7d4e",
            "HTTPRoute imaging-serve/triage",
            "LimitRange imaging-serve/cairn-imaging",
            "Namespace -/imaging-serve",
            // Traffic to the triage pods on their auth proxy's port only.
            "NetworkPolicy imaging-serve/triage",
            "ResourceQuota imaging-serve/cairn-imaging-radiology-onprem",
            // The triage endpoint's key (`auth = "token"`).
            "Secret imaging-serve/triage-key",
            "Service imaging-serve/triage",
            "Service imaging-serve/triage-blue-9f3c2a1b7d4e",
            "ServiceAccount imaging-serve/cairn-imaging",
        ]
    );

    // Observed back from both, nothing differs from what was rendered.
    let live = clusters
        .observe_desired("imaging", &[], &objects)
        .await
        .unwrap();
    assert_eq!(live.len(), objects.len(), "{:?}", names(&live));
    let by_key: BTreeMap<_, _> = live.iter().map(|o| (o.key.clone(), o)).collect();
    for object in &objects {
        let found = by_key.get(&object.key()).expect("observed");
        assert_eq!(found.key.context, object.context);
        let d = diff(object, &found.value);
        assert!(d.is_empty(), "{}: {:#?}", object.key(), d.changes);
    }

    // Applied again: no writes on either cluster.
    train.clear_requests();
    serve.clear_requests();
    let again = clusters
        .apply(&objects, &ApplyOptions::default())
        .await
        .unwrap();
    assert!(
        outcomes(&again).iter().all(|o| o.ends_with("unchanged")),
        "{:#?}",
        outcomes(&again)
    );
    assert_eq!((train.writes(), serve.writes()), (0, 0));
}

#[tokio::test]
async fn an_unknown_context_names_the_known_ones() {
    let (_train, _serve, clusters, _dir) = two_clusters();
    let error = no_client(clusters.client(Some("aks-gpu-eastus")).await);
    assert!(matches!(error, Error::UnknownContext { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("context `aks-gpu-eastus` is not in the kubeconfig `"),
        "{message}"
    );
    assert!(
        message.ends_with("the known contexts are `aks-gpu-westeurope`, `onprem-radiology`"),
        "{message}"
    );
    assert!(error.hint().is_some());
    // The first file's current context is the current one.
    let applied = clusters
        .apply(&[crate::namespace(WS, "scratch")], &ApplyOptions::default())
        .await
        .unwrap();
    assert!(applied[0].error().is_none());
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_token() {
    let server = KubeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path, "gone");
    let token = server.token().to_string();
    let url = server.url();
    drop(server);

    let clusters = Clusters::from_kubeconfig_path(&path);
    let error = clusters.observe(WS, &[scope()]).await.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        chain.push_str(&format!(" / {s}"));
        source = s.source();
    }
    assert!(
        chain.starts_with(&format!(
            "cannot reach the Kubernetes API server at {url} (context `gone`): "
        )),
        "{chain}"
    );
    assert!(!chain.contains(&token), "{chain}");
    assert!(!format!("{error:?}").contains(&token));
    assert!(!format!("{clusters:?}").contains(&token));

    let error = clusters
        .apply(&[crate::namespace(WS, "x")], &ApplyOptions::default())
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(error.error(), Some(Error::Unreachable { .. })));
}

#[tokio::test]
async fn a_broken_or_missing_kubeconfig_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "clusters: [unclosed").unwrap();
    let error = no_client(Clusters::from_kubeconfig_path(&broken).client(None).await);
    assert!(matches!(error, Error::Kubeconfig { .. }), "{error:?}");
    assert!(error
        .to_string()
        .starts_with("cannot read the kubeconfig `"));

    let missing = dir.path().join("missing");
    let error = no_client(Clusters::from_kubeconfig_path(&missing).client(None).await);
    assert!(matches!(error, Error::Kubeconfig { .. }), "{error:?}");

    let no_current = dir.path().join("no-current");
    std::fs::write(
        &no_current,
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts:\n- name: a\n  context: {cluster: a, user: a}\n",
    )
    .unwrap();
    let error = no_client(
        Clusters::from_kubeconfig_path(&no_current)
            .client(None)
            .await,
    );
    assert!(
        error
            .to_string()
            .ends_with("names no current context; the known contexts are `a`"),
        "{error}"
    );
    // Contexts that are named still work... as far as their cluster exists.
    let error = no_client(
        Clusters::from_kubeconfig_path(&no_current)
            .client(Some("a"))
            .await,
    );
    assert!(matches!(error, Error::Context { .. }), "{error:?}");
}

#[tokio::test]
async fn each_context_is_connected_once() {
    let (train, serve, clusters, _dir) = two_clusters();
    let scopes = [
        Scope {
            context: Some(TRAIN.into()),
            namespace: "imaging-train".into(),
        },
        Scope {
            context: Some(SERVE.into()),
            namespace: "imaging-serve".into(),
        },
    ];
    clusters.observe("imaging", &scopes).await.unwrap();
    clusters.observe("imaging", &scopes).await.unwrap();
    // Discovery once per group version per cluster, whatever the number of calls.
    for server in [&train, &serve] {
        let discovery = server
            .request_log()
            .into_iter()
            .filter(|l| {
                !l.contains('?') && (l.starts_with("GET /api/v1 ") || l.starts_with("GET /apis/"))
            })
            .count();
        // core, apps, autoscaling (an autoscaled revision's HorizontalPodAutoscaler),
        // batch, gateway.networking.k8s.io and networking.k8s.io (the NetworkPolicy of
        // an authenticated endpoint).
        assert_eq!(discovery, 6, "{:#?}", server.request_log());
    }
}

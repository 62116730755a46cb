//! Strict field validation: Cairn applies with `fieldValidation=Strict`, and a field the
//! cluster's schema does not declare fails the apply with the object and the field
//! named, before anything of the object is written.

use std::fs;
use std::path::Path;
use std::time::Duration;

use cairn::backend::kubernetes::cluster::Error;
use cairn::backend::kubernetes::{ApplyOptions, Clusters, KubeObject, Outcome};

use crate::kube_server::{KubeServer, Verb};
use crate::{imaging_objects_from, outcomes, repo_root};

const SERVE: &str = "onprem-radiology";

/// Copies a folder recursively.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The example's objects for the serving cluster, rendered with a Deployment template
/// override whose `replicas` is misspelt, as a user's override might be.
fn objects_with_a_typo() -> (tempfile::TempDir, Vec<KubeObject>) {
    let shipped =
        fs::read_to_string(repo_root().join("templates/kubernetes/deployment.yaml.j2")).unwrap();
    let typo = shipped.replace(
        "  replicas: {{ deployment.replicas }}",
        "  replicass: {{ deployment.replicas }}",
    );
    assert_ne!(typo, shipped, "the shipped template's replicas line moved");
    let root = tempfile::tempdir().unwrap();
    copy_tree(
        &repo_root().join("manifests/imaging"),
        &root.path().join("imaging"),
    );
    let overrides = root.path().join("templates/kubernetes");
    fs::create_dir_all(&overrides).unwrap();
    fs::write(overrides.join("deployment.yaml.j2"), typo).unwrap();
    let objects = imaging_objects_from(root.path())
        .into_iter()
        .filter(|o| o.context.as_deref() == Some(SERVE))
        .collect();
    (root, objects)
}

#[tokio::test]
async fn a_typo_in_an_overridden_template_fails_the_apply_naming_the_field() {
    let server = KubeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, SERVE);
    let clusters =
        Clusters::from_kubeconfig_path(&kubeconfig).with_poll_interval(Duration::from_millis(20));
    let (_root, objects) = objects_with_a_typo();
    let deployment = objects.iter().find(|o| o.kind == "Deployment").unwrap();
    assert_eq!(
        deployment.value["spec"]["replicass"], 1,
        "rendered as written"
    );

    let applied = clusters
        .apply(&objects, &ApplyOptions::default())
        .await
        .unwrap();
    let failed = applied.iter().find(|a| a.key.kind == "Deployment").unwrap();
    let error = match &failed.outcome {
        Outcome::Failed(e @ Error::UnknownField { fields, .. }) => {
            assert_eq!(fields, &["spec.replicass"]);
            e
        }
        other => panic!("expected an unknown field, got {other:?}"),
    };
    insta::assert_snapshot!(
        "unknown_field",
        format!("error: {error}\nhint: {}\n", error.hint().unwrap())
    );

    // Nothing of the endpoint was written: not the Deployment (with the field dropped,
    // as a server under `Warn` would have stored it), and not the Services and the route
    // that would send traffic to it.
    assert_eq!(
        outcomes(&applied),
        [
            "Namespace/imaging-serve created",
            "ResourceQuota/cairn-imaging-radiology-onprem created",
            "LimitRange/cairn-imaging created",
            "ServiceAccount/cairn-imaging created",
            "Secret/triage-key created",
            "NetworkPolicy/triage created",
            &format!("Deployment/triage-blue-9f3c2a1b7d4e failed: {error}"),
            "Service/triage-blue-9f3c2a1b7d4e skipped: Deployment `triage-blue-9f3c2a1b7d4e` in \
             namespace `imaging-serve` (context `onprem-radiology`) failed to apply",
            "Service/triage skipped: Deployment `triage-blue-9f3c2a1b7d4e` in namespace \
             `imaging-serve` (context `onprem-radiology`) failed to apply",
            "HTTPRoute/triage skipped: Deployment `triage-blue-9f3c2a1b7d4e` in namespace \
             `imaging-serve` (context `onprem-radiology`) failed to apply",
        ]
    );
    let mut kinds: Vec<String> = server
        .objects()
        .iter()
        .filter(|o| o["metadata"]["namespace"] == "imaging-serve")
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "LimitRange",
            "NetworkPolicy",
            "ResourceQuota",
            "Secret",
            "ServiceAccount"
        ]
    );

    // Every write asked for strict validation; the Deployment's one apply was refused
    // with a 422, the server's answer to `spec.replicass` under strict validation.
    let writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb.writes())
        .collect();
    assert!(writes
        .iter()
        .all(|r| r.query.contains("fieldValidation=Strict")));
    let refused: Vec<(String, u16)> = writes
        .iter()
        .filter(|r| r.status >= 400)
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        refused,
        [(
            "/apis/apps/v1/namespaces/imaging-serve/deployments/triage-blue-9f3c2a1b7d4e"
                .to_string(),
            422
        )]
    );
    assert_eq!(server.count(Verb::Patch), 7);
}

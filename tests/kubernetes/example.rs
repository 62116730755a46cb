//! The objects rendered for the example workspace `manifests/imaging`: a training Job on
//! a cloud GPU pool and an endpoint on an on-premises cluster behind a gateway.

use cairn::backend::kubernetes::Renderer;
use cairn::manifest::load_folder;

use crate::{desired, imaging_versions, render, repo_root, yaml_stream, REVISION};

#[test]
fn imaging_objects_match_the_golden_stream() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    let objects = render(&snapshot).unwrap();
    insta::assert_snapshot!("imaging_objects", yaml_stream(&objects));
}

#[test]
fn objects_come_in_apply_order_with_their_contexts() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    let objects = render(&snapshot).unwrap();
    let listed: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {} {} {}",
                o.context.as_deref().unwrap_or("-"),
                o.kind,
                o.namespace.as_deref().unwrap_or("-"),
                o.name
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            "aks-gpu-westeurope Namespace - imaging-train",
            "onprem-radiology Namespace - imaging-serve",
            "aks-gpu-westeurope ResourceQuota imaging-train cairn-imaging-gpu-pool",
            "onprem-radiology ResourceQuota imaging-serve cairn-imaging-radiology-onprem",
            "aks-gpu-westeurope LimitRange imaging-train cairn-imaging",
            "onprem-radiology LimitRange imaging-serve cairn-imaging",
            "aks-gpu-westeurope ServiceAccount imaging-train cairn-imaging",
            "onprem-radiology ServiceAccount imaging-serve cairn-imaging",
            "onprem-radiology Secret imaging-serve triage-key",
            "onprem-radiology NetworkPolicy imaging-serve triage",
            "aks-gpu-westeurope PersistentVolumeClaim imaging-train train-pneumonia-9f3c2a1b7d4e-outputs",
            "aks-gpu-westeurope Job imaging-train train-pneumonia-9f3c2a1b7d4e",
            "aks-gpu-westeurope Job imaging-train train-pneumonia-9f3c2a1b7d4e-upload",
            "onprem-radiology Deployment imaging-serve triage-blue-9f3c2a1b7d4e",
            "aks-gpu-westeurope Service imaging-train train-pneumonia-9f3c2a1b7d4e",
            "onprem-radiology Service imaging-serve triage-blue-9f3c2a1b7d4e",
            "onprem-radiology Service imaging-serve triage",
            "onprem-radiology HTTPRoute imaging-serve triage",
        ]
    );
}

#[test]
fn rendering_is_deterministic() {
    let root = repo_root().join("manifests");
    let first = yaml_stream(&render(&load_folder(&root).unwrap()).unwrap());
    for _ in 0..3 {
        let again = yaml_stream(&render(&load_folder(&root).unwrap()).unwrap());
        assert_eq!(first, again, "same manifests, same bytes");
    }
}

#[test]
fn every_object_carries_the_labels_and_annotations_cairn_finds_it_by() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    for object in render(&snapshot).unwrap() {
        let metadata = &object.value["metadata"];
        let what = format!("{} {}", object.kind, object.name);
        assert_eq!(
            metadata["labels"]["app.kubernetes.io/managed-by"], "cairn",
            "{what}"
        );
        assert_eq!(
            metadata["labels"]["cairn.dev/workspace"], "imaging",
            "{what}"
        );
        assert_eq!(
            metadata["annotations"]["cairn.dev/revision"], REVISION,
            "{what}"
        );
        let address = metadata["annotations"]["cairn.dev/address"]
            .as_str()
            .unwrap();
        assert!(address.starts_with("imaging/"), "{what}: {address}");
        assert_eq!(object.spec_hash().map(str::len), Some(12), "{what}");
    }
}

#[test]
fn the_spec_hash_changes_with_the_object_but_not_with_the_revision() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    let state = desired(&snapshot);
    let hashes = |renderer: Renderer, versions| -> Vec<String> {
        renderer
            .desired_objects(&state, "imaging", &versions)
            .unwrap()
            .iter()
            .map(|o| o.spec_hash().unwrap().to_string())
            .collect()
    };
    let one = hashes(
        Renderer::shipped().with_revision(Some("a".repeat(40))),
        imaging_versions(),
    );
    let two = hashes(
        Renderer::shipped().with_revision(Some("b".repeat(40))),
        imaging_versions(),
    );
    assert_eq!(one, two, "a new commit alone changes no hash");

    let mut retrained = imaging_versions();
    for version in retrained.values_mut() {
        if version == crate::RUN_ID {
            *version = "0badc0ffee00".into();
        }
    }
    let three = hashes(Renderer::shipped(), retrained);
    let changed: Vec<usize> = (0..one.len()).filter(|&i| one[i] != three[i]).collect();
    // The run's outputs volume, its Jobs (training, upload) and headless Service, the
    // Deployment, its Service and the route name the new run or version.
    // The endpoint's key Secret and NetworkPolicy name no version.
    assert_eq!(
        changed,
        [10, 11, 12, 13, 14, 15, 17],
        "hashes: {one:?} → {three:?}"
    );
}

#[test]
fn a_workspace_on_the_local_target_renders_nothing() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    let objects = Renderer::shipped()
        .desired_objects(&desired(&snapshot), "credit-risk", &imaging_versions())
        .unwrap();
    assert!(objects.is_empty(), "{objects:?}");
}

#[test]
fn an_unknown_version_is_an_error_naming_what_is_missing() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    let mut versions = imaging_versions();
    versions.retain(|a, _| a.kind != cairn::Kind::Dataset);
    let error = Renderer::shipped()
        .desired_objects(&desired(&snapshot), "imaging", &versions)
        .unwrap_err();
    insta::assert_snapshot!("missing_version", crate::message(&error));
}

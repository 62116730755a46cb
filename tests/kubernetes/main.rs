//! The Kubernetes target's objects, rendered from templates
//! (`cairn::backend::kubernetes`).
//!
//! - `example`: the objects rendered for `manifests/imaging`, as a golden YAML stream,
//!   byte-identical run after run.
//! - `overrides`: a repository's `templates/kubernetes/<name>` replaces the shipped
//!   template, in a folder and at a Git revision.
//! - `serving`: endpoints with Cairn's reference server, weights, a mirror, and a
//!   compute without a gateway; stores pods can't reach.
//! - `validate`: every object rendered for the example and the fixtures passes
//!   `kubernetes-validate --strict` for Kubernetes 1.35, and the HTTPRoutes the vendored
//!   Gateway API v1.3.0 schema (`.ci/run` installs the tool; the tests fail without it).
//! - `errors`: undefined variables, invalid YAML, objects Kubernetes would refuse and
//!   the sandbox's refusal to read files, each a clear message (snapshots).
//!
//! Snapshots live in `snapshots/` next to this file. To accept new or changed ones:
//! `INSTA_UPDATE=always cargo test --test kubernetes`, then read every changed `.snap`.

mod errors;
mod example;
mod overrides;
mod serving;
mod validate;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cairn::backend::kubernetes::{KubeObject, Renderer};
use cairn::manifest::Snapshot;
use cairn::{Address, DesiredState, Kind};
use tempfile::TempDir;

/// The commit stamped as `cairn.dev/revision` in these tests.
pub const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";

/// The run id the tests give `job.train-pneumonia`, and so the version of the model it
/// produces.
pub const RUN_ID: &str = "9f3c2a1b7d4e";

/// The repository root (`Cargo.toml` of the workspace lives there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the reconciler crate sits in the repository root")
        .to_path_buf()
}

/// Versions the planner would know for `manifests/imaging`.
pub fn imaging_versions() -> BTreeMap<Address, String> {
    BTreeMap::from([
        (
            Address::new("imaging", Kind::Dataset, "chest-xrays"),
            "5d41402abc4b".to_string(),
        ),
        (
            Address::new("imaging", Kind::Job, "train-pneumonia"),
            RUN_ID.to_string(),
        ),
        (
            Address::new("imaging", Kind::Model, "pneumonia-detector"),
            RUN_ID.to_string(),
        ),
    ])
}

/// Resolves the desired state of a snapshot, which must be valid.
pub fn desired(snapshot: &Snapshot) -> DesiredState {
    match cairn::desired::resolve(snapshot) {
        Ok(resolved) => resolved.state,
        Err(diagnostics) => panic!("the manifests are invalid: {diagnostics:?}"),
    }
}

/// A manifests root in a temporary folder holding a copy of `manifests/imaging` and the
/// given files (path under the root → text).
pub fn imaging_root(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &repo_root().join("manifests/imaging"),
        &dir.path().join("imaging"),
    );
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// Copies a folder recursively, skipping hidden entries.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Cairn's image in these tests, so that a version bump leaves the golden files alone.
pub const CAIRN_IMAGE: &str = "ghcr.io/cairn-dev/cairn:test";

/// Renders the `imaging` workspace of a snapshot with its overrides.
pub fn render(snapshot: &Snapshot) -> Result<Vec<KubeObject>, cairn::backend::kubernetes::Error> {
    let renderer = Renderer::from_snapshot(snapshot)?
        .with_revision(Some(REVISION.to_string()))
        .with_cairn_image(CAIRN_IMAGE);
    renderer.desired_objects(&desired(snapshot), "imaging", &imaging_versions())
}

/// The objects as one YAML stream, each headed by a comment naming it and its context:
/// what `kubectl apply -f` would be given, in order.
pub fn yaml_stream(objects: &[KubeObject]) -> String {
    let mut out = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&format!(
            "# {}. {} {}{} (context: {})\n",
            i + 1,
            object.kind,
            object
                .namespace
                .as_deref()
                .map(|ns| format!("{ns}/"))
                .unwrap_or_default(),
            object.name,
            object.context.as_deref().unwrap_or("current"),
        ));
        out.push_str(&serde_norway::to_string(&object.value).unwrap());
    }
    out
}

/// An error's message followed by its hint, as the CLI shows them.
pub fn message(error: &cairn::backend::kubernetes::Error) -> String {
    match error.hint() {
        Some(hint) => format!("error: {error}\nhint: {hint}\n"),
        None => format!("error: {error}\n"),
    }
}

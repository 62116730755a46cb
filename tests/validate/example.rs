//! The example repository in `manifests/` is valid, and `cairn validate` says what it
//! holds; plus the other ways a run can end without an invalid manifest.

use std::fs;

use serde_json::json;

use crate::{cairn, diagnostics, example_manifests, repo_root, Run};

#[test]
fn the_example_repository_is_valid() {
    let root = example_manifests();
    let root_text = root.to_str().expect("a UTF-8 path");
    let run = Run::of(cairn(&repo_root()).args(["validate", root_text, "--color", "never"]));
    run.expect_exit(0, "cairn validate manifests");
    assert_eq!(
        run.stderr, "",
        "a valid repository prints nothing on stderr"
    );
    let pattern = regex_escape(root_text);
    insta::with_settings!({
        description => "cairn validate <repository>/manifests --color never  (stdout)",
        omit_expression => true,
        prepend_module_to_snapshot => false,
        snapshot_path => "snapshots",
        filters => vec![(pattern.as_str(), "[manifests]")],
    }, {
        insta::assert_snapshot!("example__summary", run.stdout);
    });
}

#[test]
fn the_example_repository_is_the_default_root() {
    // With no path, `cairn validate` reads `manifests/` when it exists.
    let run = Run::of(cairn(&repo_root()).args(["validate", "--color", "never"]));
    run.expect_exit(0, "cairn validate");
    assert!(
        run.stdout
            .starts_with("✓ manifests is valid: 3 workspaces, "),
        "{}",
        run.stdout
    );
}

#[test]
fn the_example_repository_as_json() {
    let run = Run::of(cairn(&repo_root()).args(["validate", "manifests", "--format", "json"]));
    run.expect_exit(0, "cairn validate manifests --format json");
    assert_eq!(run.stderr, "");
    let report = run.json("example");
    assert_eq!(report["valid"], true, "{report:#}");
    assert_eq!(report["format_version"], "1");
    assert_eq!(report["source"], "manifests");
    assert!(report["commit"].is_null(), "a folder has no commit");
    assert!(diagnostics(&report).is_empty(), "{report:#}");
    assert_eq!(
        report["summary"],
        json!({
            "resources": 22,
            "workspaces": [
                {
                    "name": "credit-risk",
                    "counts": { "compute": 1, "dataset": 6, "job": 4, "model": 1, "endpoint": 1 }
                },
                {
                    "name": "imaging",
                    "counts": { "compute": 2, "dataset": 1, "job": 1, "model": 1, "endpoint": 1 }
                },
                {
                    "name": "radiology-edge",
                    "counts": { "compute": 1, "model": 1, "endpoint": 1 }
                }
            ]
        }),
        "{report:#}"
    );
    // The total is the sum of the counts.
    let sum: u64 = report["summary"]["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["counts"].as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(report["summary"]["resources"], sum);
}

#[test]
fn warnings_alone_do_not_fail_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("stray");
    fs::create_dir_all(root.join("credit-risk")).unwrap();
    fs::write(
        root.join("credit-risk").join("workspace.toml"),
        "[workspace]\nenvironment = \"dev\"\n",
    )
    .unwrap();
    fs::write(
        root.join("credit-risk").join("compute.toml"),
        "[compute.branch-dc]\ntarget = \"local\"\n",
    )
    .unwrap();
    // A manifest outside any workspace folder is ignored, with a warning.
    fs::write(
        root.join("compute.toml"),
        "[compute.other]\ntarget = \"local\"\n",
    )
    .unwrap();

    let run = Run::of(cairn(tmp.path()).args(["validate", "stray", "--color", "never"]));
    run.expect_exit(0, "a warning only");
    insta::with_settings!({
        description => "cairn validate stray --color never  (stderr, then stdout)",
        omit_expression => true,
        prepend_module_to_snapshot => false,
        snapshot_path => "snapshots",
    }, {
        insta::assert_snapshot!(
            "example__warning-only",
            format!("{}--- stdout ---\n{}", run.stderr, run.stdout)
        );
    });

    let run = Run::of(cairn(tmp.path()).args(["validate", "stray", "--format", "json"]));
    run.expect_exit(0, "a warning only, as JSON");
    let report = run.json("stray");
    assert_eq!(report["valid"], true);
    let codes: Vec<_> = diagnostics(&report)
        .iter()
        .map(|d| (d["severity"].clone(), d["code"].clone()))
        .collect();
    assert_eq!(codes, [(json!("warning"), json!("stray-file"))]);
}

#[test]
fn a_gated_rollout_of_an_own_server_on_kubernetes_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("root/imaging");
    fs::create_dir_all(&ws).unwrap();
    fs::write(
        ws.join("workspace.toml"),
        "[workspace]\nenvironment = \"dev\"\n",
    )
    .unwrap();
    let serve = |gates: &str| {
        format!(
            "[compute.pool]\ntarget = \"kubernetes\"\nroles = [\"serve\"]\n\n\
             [model.classifier]\nsource = \"s3://vision-ml/models/classifier/\"\nformat = \"onnx\"\n\n\
             [endpoint.api]\ncompute = \"compute.pool\"\n\n\
             [endpoint.api.deployments.blue]\nmodel = \"model.classifier\"\n\
             image = \"registry.example.com/vision/server:2.1\"\n\
             command = [\"tritonserver\", \"--model-repository\", \"{{{{ model }}}}\", \"--http-port\", \"{{{{ port }}}}\"]\n\
             health = \"/v2/health/ready\"\n\n\
             [endpoint.api.rollout]\nsteps = [50, 100]\n{gates}"
        )
    };
    let codes = |gates: &str| {
        fs::write(ws.join("serve.toml"), serve(gates)).unwrap();
        let run = Run::of(cairn(tmp.path()).args(["validate", "root", "--format", "json"]));
        run.expect_exit(0, "warnings only");
        let report = run.json("root");
        diagnostics(&report)
            .iter()
            .map(|d| {
                (
                    d["severity"].clone(),
                    d["code"].clone(),
                    d["location"]["line"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        codes("max_error_rate = 0.01\n"),
        [(json!("warning"), json!("gate-metrics"), json!(15))]
    );
    // Without gates the probes are all a rollout needs.
    assert_eq!(codes(""), []);
}

#[test]
fn a_missing_root_is_an_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::of(cairn(tmp.path()).args(["validate", "no-such-folder", "--color", "never"]));
    run.expect_exit(1, "a missing root");
    assert!(
        run.stderr
            .starts_with("error: cannot read the manifests folder `no-such-folder`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\n  hint: "), "{}", run.stderr);

    let run = Run::of(cairn(tmp.path()).args(["validate", "no-such-folder", "--format", "json"]));
    run.expect_exit(1, "a missing root, as JSON");
    let report = run.json("missing root");
    assert_eq!(report["valid"], false);
    assert!(
        report["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-folder")),
        "{report:#}"
    );
    assert!(
        !report["error"]["hints"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

/// Escapes a literal for use as a regular expression in an insta filter.
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

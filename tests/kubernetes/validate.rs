//! Every object the templates render, for the example repository (`manifests/`) and for
//! this binary's fixtures, passes the official schemas of the Kubernetes version Cairn
//! targets (1.35, k8s-openapi's `v1_35`) in strict mode, unknown fields refused:
//! checked by `kubernetes-validate --strict` (PyPI), which `.ci/run` installs into
//! `.ci/venv`. It knows no CRDs, so the HTTPRoutes are checked against the Gateway API
//! v1.3.0 schema vendored for the test API server
//! (`tests/support/kube_server/schemas/`). The CRD's CEL rules (a Service backend needs
//! a port) are not JSON Schema: the test API server checks those when the Kubernetes
//! target's tests apply the same objects.
//!
//! Without `kubernetes-validate` (on PATH or in `.ci/venv/bin/`) these tests fail,
//! saying how to install it: in CI and elsewhere, never a silent pass.

use std::path::PathBuf;
use std::process::Command;

use std::collections::BTreeMap;

use cairn::backend::kubernetes::{KubeObject, Renderer};
use cairn::manifest::load_folder;
use cairn::{Address, Kind};
use serde_json::{json, Value};

use crate::{desired, render, repo_root, serving, CAIRN_IMAGE, RUN_ID};

/// The Kubernetes version the objects are validated for.
const KUBERNETES: &str = "1.35.0";

const GATEWAY_API_SCHEMA: &str =
    include_str!("../support/kube_server/schemas/gateway-api-v1.3.0-standard-httproute.json");

/// `kubernetes-validate` on PATH or where `.ci/run` installs it; fails, saying how to
/// get it, when it is neither.
fn kubernetes_validate() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubernetes-validate"))
            .find(|p| p.is_file())
    });
    let installed = repo_root().join(".ci/venv/bin/kubernetes-validate");
    match on_path.or_else(|| installed.is_file().then_some(installed)) {
        Some(tool) => tool,
        None => {
            let how =
                "run .ci/run, which installs it into .ci/venv, or: python3 -m venv .ci/venv && \
                       .ci/venv/bin/pip install kubernetes-validate==1.37.0";
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("kubernetes-validate is missing in CI: .ci/run should have installed it ({how})");
            }
            panic!(
                "kubernetes-validate was not found on PATH or in .ci/venv/bin/; these tests check \
                 the rendered objects with it and cannot pass without it: {how}"
            );
        }
    }
}

/// Runs `kubernetes-validate --strict` on the objects; returns its output. Each object
/// must be reported as passed: a kind it has no schema for would only be a warning.
fn validate_strict(objects: &[Value]) -> Result<String, String> {
    let tool = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    let stream: Vec<String> = objects
        .iter()
        .map(|o| serde_norway::to_string(o).unwrap())
        .collect();
    std::fs::write(&file, stream.join("---\n")).unwrap();
    let out = Command::new(&tool)
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = |o: &Value| {
        let resource = format!(
            "passed for resource {}/{} against version 1.35",
            o["kind"].as_str().unwrap().to_lowercase(),
            o["metadata"]["name"].as_str().unwrap()
        );
        text.lines()
            .any(|l| l.starts_with("INFO ") && l.ends_with(&resource))
    };
    if out.status.success() && objects.iter().all(passed) && !text.contains("WARN ") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The HTTPRoutes' problems against the vendored Gateway API schema, one line each.
fn gateway_api_errors(route: &Value) -> Vec<String> {
    let document: Value = serde_json::from_str(GATEWAY_API_SCHEMA).unwrap();
    let schema = json!({
        "$schema": document["$schema"],
        "$defs": document["$defs"],
        "$ref": "#/$defs/io.k8s.networking.gateway.v1.HTTPRoute",
    });
    let validator = jsonschema::draft202012::options().build(&schema).unwrap();
    validator
        .iter_errors(route)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Validates rendered objects: the built-in kinds with kubernetes-validate, HTTPRoutes
/// with the Gateway API schema. Returns how many of each.
fn check(what: &str, objects: &[KubeObject]) -> (usize, usize) {
    assert!(!objects.is_empty(), "{what} rendered nothing");
    let (routes, builtin): (Vec<&KubeObject>, Vec<&KubeObject>) =
        objects.iter().partition(|o| o.kind == "HTTPRoute");
    let values: Vec<Value> = builtin.iter().map(|o| o.value.clone()).collect();
    if let Err(output) = validate_strict(&values) {
        panic!("{what}: kubernetes-validate --strict {KUBERNETES} refused objects:\n{output}");
    }
    for route in &routes {
        assert_eq!(route.api_version, "gateway.networking.k8s.io/v1");
        let errors = gateway_api_errors(&route.value);
        assert!(
            errors.is_empty(),
            "{what}: HTTPRoute {} against Gateway API v1.3.0:\n{}",
            route.name,
            errors.join("\n")
        );
    }
    (builtin.len(), routes.len())
}

#[test]
fn the_example_objects_pass_the_official_schemas_strictly() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    let objects = render(&snapshot).unwrap();
    // Every kind the templates render, a multi-instance Job and its Service included.
    let kinds: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "Deployment",
            "HTTPRoute",
            "Job",
            "LimitRange",
            "Namespace",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "ResourceQuota",
            "Secret",
            "Service",
            "ServiceAccount"
        ]
    );
    assert_eq!(check("manifests/imaging", &objects), (17, 1));
}

#[test]
fn the_serving_fixtures_objects_pass_the_official_schemas_strictly() {
    let objects = serving::render(&serving::root(serving::WORKSPACE)).unwrap();
    // Weights, a mirror with a percentage (Gateway API v1.3), a revision with an
    // environment, a compute without a gateway.
    let (builtin, routes) = check("the serving fixture", &objects);
    assert_eq!(routes, 1);
    assert!(builtin > 8, "{builtin}");
    let route = objects.iter().find(|o| o.kind == "HTTPRoute").unwrap();
    assert_eq!(
        route.value["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"],
        20
    );
}

#[test]
fn a_deployments_own_command_and_probes_pass_the_official_schemas_strictly() {
    let objects = serving::render(&serving::root_serving(
        serving::WORKSPACE,
        serving::OWN_SERVER,
    ))
    .unwrap();
    let (builtin, _) = check("endpoints with their own serving process", &objects);
    assert!(
        objects.iter().filter(|o| o.kind == "Deployment").count() == 2,
        "{objects:?}"
    );
    assert!(builtin > 4, "{builtin}");
}

#[test]
fn autoscalers_pass_the_official_schemas_strictly() {
    let objects = serving::render(&serving::root_serving(
        serving::WORKSPACE,
        serving::AUTOSCALED,
    ))
    .unwrap();
    check("autoscaled deployments", &objects);
    assert_eq!(
        objects
            .iter()
            .filter(|o| o.kind == "HorizontalPodAutoscaler")
            .count(),
        2
    );
}

/// The Kubernetes workspace of the target contract suite (`tests/targets/`): a
/// single-instance CPU job with a timeout on a compute without instance types, quota or
/// gateway, and an endpoint served by Cairn's reference server behind the Service switch.
const CONTRACT: &[(&str, &str)] = &[
    (
        "contract/workspace.toml",
        "[workspace]\nenvironment = \"dev\"\nstore = \"s3://cairn-test/contract\"\n\
         endpoint = \"http://127.0.0.1:9000\"\npath_style = true\nregion = \"us-east-1\"\n",
    ),
    (
        "contract/compute.toml",
        "[compute.here]\ntarget = \"kubernetes\"\nnamespace = \"contract\"\n",
    ),
    (
        "contract/data.toml",
        "[dataset.loans]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
    ),
    (
        "contract/data/loans/loans.csv",
        "age,defaulted\n29,0\n51,1\n",
    ),
    (
        "contract/train.toml",
        "[job.train]\ncompute = \"compute.here\"\n\
         image = \"registry.example.com/contract/trainer:1.0\"\n\
         command = [\"sh\", \"-c\", \"train\", \"{{ inputs.loans }}\", \"{{ outputs.model }}\"]\n\
         inputs = { loans = \"dataset.loans\" }\noutputs = { model = \"model.scorer\" }\n\
         gpus = 0\nretries = 1\ntimeout = \"10m\"\n\n\
         [model.scorer]\nfrom_job = \"job.train\"\nformat = \"safetensors\"\n",
    ),
    (
        "contract/serve.toml",
        "[endpoint.api]\ncompute = \"compute.here\"\nauth = \"none\"\nport = 8080\n\n\
         [endpoint.api.deployments.blue]\nmodel = \"model.scorer\"\nreplicas = 1\n\n\
         [endpoint.api.traffic]\nblue = 100\n",
    ),
];

#[test]
fn the_contract_suites_objects_pass_the_official_schemas_strictly() {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in CONTRACT {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let snapshot = load_folder(dir.path()).unwrap();
    let versions = BTreeMap::from([
        (
            Address::new("contract", Kind::Dataset, "loans"),
            "5d41402abc4b".to_string(),
        ),
        (
            Address::new("contract", Kind::Job, "train"),
            RUN_ID.to_string(),
        ),
        (
            Address::new("contract", Kind::Model, "scorer"),
            RUN_ID.to_string(),
        ),
    ]);
    let objects = Renderer::from_snapshot(&snapshot)
        .unwrap()
        .with_cairn_image(CAIRN_IMAGE)
        .desired_objects(&desired(&snapshot), "contract", &versions)
        .unwrap();
    let job = objects.iter().find(|o| o.kind == "Job").expect("a Job");
    assert!(
        job.value["spec"].get("completionMode").is_none(),
        "one instance"
    );
    // Its `timeout` (10m) plus the default scheduling wait (10m), until apply sets it
    // from when every pod runs.
    assert_eq!(job.value["spec"]["activeDeadlineSeconds"], 1200);
    assert_eq!(
        check("the contract suite's workspace", &objects),
        (objects.len(), 0)
    );
}

/// The checks can fail: a misspelt field, a value of the wrong type and a mirror field
/// the schema doesn't declare are caught.
#[test]
fn the_checks_refuse_what_a_strict_server_refuses() {
    let snapshot = load_folder(&repo_root().join("manifests")).unwrap();
    let objects = render(&snapshot).unwrap();
    let mut deployment = objects
        .iter()
        .find(|o| o.kind == "Deployment")
        .unwrap()
        .value
        .clone();
    let replicas = deployment["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas")
        .unwrap();
    deployment["spec"]["replicass"] = replicas;
    let output = validate_strict(&[deployment]).unwrap_err();
    assert!(output.contains("'replicass' was unexpected"), "{output}");
    let mut job = objects
        .iter()
        .find(|o| o.kind == "Job")
        .unwrap()
        .value
        .clone();
    job["spec"]["backoffLimit"] = json!("two");
    let output = validate_strict(&[job]).unwrap_err();
    assert!(output.contains("spec.backoffLimit"), "{output}");

    let mut route = objects
        .iter()
        .find(|o| o.kind == "HTTPRoute")
        .unwrap()
        .value
        .clone();
    route["spec"]["rules"][0]["backendRefs"][0]["percentage"] = json!(10);
    let errors = gateway_api_errors(&route);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("percentage"), "{errors:?}");
}

//! Endpoints beyond the example: Cairn's reference server, several deployments with
//! their weights, a mirror, a revision that carries an environment, a compute without a
//! gateway, and stores pods can't reach.

use std::fs;

use cairn::backend::kubernetes::{KubeObject, Renderer};
use cairn::manifest::load_folder;
use cairn::{Address, Kind};
use serde_json::json;
use tempfile::TempDir;

use crate::{desired, message, CAIRN_IMAGE};

pub(crate) const WORKSPACE: &str = r#"
[workspace]
store = "s3://vision-ml/models"
endpoint = "http://minio.storage:9000"
path_style = true
"#;

const COMPUTE: &str = r#"
[compute.edge]
target = "kubernetes"

[compute.edge.instance_types.small]
cpu = "2"
memory = "4Gi"

[compute.edge-gw]
target = "kubernetes"
context = "edge-cluster"
namespace = "vision-serve"
gateway = "shared-gw"
"#;

const SERVE: &str = r#"
[model.classifier]
source = "models/classifier/"
format = "safetensors"

[endpoint.api]
compute = "compute.edge-gw"

[endpoint.api.deployments.blue]
model = "model.classifier@1a2b3c4d5e6f"
replicas = 2
cpu = "500m"
memory = "1Gi"

[endpoint.api.deployments.green]
model = "model.classifier"
env = { LOG_LEVEL = "debug" }

[endpoint.api.traffic]
blue = 100
green = 0

[endpoint.api.mirror]
green = 20

[endpoint.batch]
compute = "compute.edge"
port = 9000

[endpoint.batch.deployments.main]
model = "model.classifier"
instance_type = "small"
"#;

pub(crate) fn root(workspace: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("vision");
    fs::create_dir_all(ws.join("models/classifier")).unwrap();
    fs::write(ws.join("models/classifier/model.safetensors"), "weights").unwrap();
    fs::write(ws.join("workspace.toml"), workspace).unwrap();
    fs::write(ws.join("compute.toml"), COMPUTE).unwrap();
    fs::write(ws.join("serve.toml"), SERVE).unwrap();
    dir
}

pub(crate) fn render(dir: &TempDir) -> Result<Vec<KubeObject>, cairn::backend::kubernetes::Error> {
    let snapshot = load_folder(dir.path()).unwrap();
    let versions = [(
        Address::new("vision", Kind::Model, "classifier"),
        "77aa88bb99cc".to_string(),
    )]
    .into_iter()
    .collect::<std::collections::BTreeMap<_, _>>();
    Renderer::from_snapshot(&snapshot)?
        .with_cairn_image(CAIRN_IMAGE)
        .desired_objects(&desired(&snapshot), "vision", &versions)
}

fn find<'a>(objects: &'a [KubeObject], kind: &str, name: &str) -> &'a KubeObject {
    objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn deployments_weights_and_mirror() {
    let objects = render(&root(WORKSPACE)).unwrap();
    let listed: Vec<String> = objects
        .iter()
        .filter(|o| o.kind != "Namespace" && o.kind != "LimitRange" && o.kind != "ServiceAccount")
        .map(|o| {
            format!(
                "{} {} {}",
                o.context.as_deref().unwrap_or("-"),
                o.kind,
                o.key().namespace.unwrap_or_default() + "/" + &o.name
            )
        })
        .collect();
    // The green revision carries a hash of its environment; `batch` is on a compute
    // without a gateway, so it gets no route.
    assert_eq!(
        listed,
        [
            // Both endpoints authenticate (`auth` is `key` by default): their keys.
            "edge-cluster Secret vision-serve/api-key",
            "- Secret vision/batch-key",
            "edge-cluster NetworkPolicy vision-serve/api",
            "- NetworkPolicy vision/batch",
            "edge-cluster Deployment vision-serve/api-blue-1a2b3c4d5e6f",
            "edge-cluster Deployment vision-serve/api-green-77aa88bb99cc-28289b",
            "- Deployment vision/batch-main-77aa88bb99cc",
            "edge-cluster Service vision-serve/api-blue-1a2b3c4d5e6f",
            "edge-cluster Service vision-serve/api-green-77aa88bb99cc-28289b",
            "edge-cluster Service vision-serve/api",
            "- Service vision/batch-main-77aa88bb99cc",
            "- Service vision/batch",
            "edge-cluster HTTPRoute vision-serve/api",
        ]
    );

    let route = find(&objects, "HTTPRoute", "api");
    assert_eq!(
        route.value["spec"],
        json!({
            "parentRefs": [{"name": "shared-gw"}],
            "rules": [{
                "backendRefs": [
                    {"name": "api-blue-1a2b3c4d5e6f", "port": 8080, "weight": 100},
                    {"name": "api-green-77aa88bb99cc-28289b", "port": 8080, "weight": 0},
                ],
                "filters": [{
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": {"name": "api-green-77aa88bb99cc-28289b", "port": 8080},
                        "percent": 20,
                    },
                }],
            }],
        })
    );

    // Without an image, Cairn's reference server serves the fetched model.
    let batch = find(&objects, "Deployment", "batch-main-77aa88bb99cc");
    let server = &batch.value["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(server["image"], CAIRN_IMAGE);
    assert_eq!(
        server["command"],
        json!([
            "cairn",
            "serve",
            "--model",
            "/cairn/model",
            "--listen",
            "0.0.0.0:9000",
            "--name",
            "main",
            "--model-version",
            "77aa88bb99cc"
        ])
    );
    // No `cpu`/`memory` of its own: 80 % of the instance type's 2 CPUs and 4Gi, which
    // a node of that type can still allocate.
    assert_eq!(
        server["resources"],
        json!({"requests": {"cpu": "1600m", "memory": "3276Mi"}, "limits": {"memory": "3276Mi"}})
    );
    // Its own, as written.
    let blue = find(&objects, "Deployment", "api-blue-1a2b3c4d5e6f");
    assert_eq!(
        blue.value["spec"]["template"]["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}})
    );
    let fetch = &batch.value["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        fetch["env"],
        json!([
            {"name": "CAIRN_STORE", "value": "s3://vision-ml/models"},
            {"name": "CAIRN_STORE_ENDPOINT", "value": "http://minio.storage:9000"},
            {"name": "CAIRN_STORE_PATH_STYLE", "value": "true"},
            {"name": "CAIRN_WORKSPACE", "value": "vision"},
        ])
    );

    let green = find(&objects, "Deployment", "api-green-77aa88bb99cc-28289b");
    let env = &green.value["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "LOG_LEVEL", "value": "debug"})),
        "{env}"
    );
    assert_eq!(green.value["spec"]["replicas"], 1);
}

#[test]
fn a_local_folder_store_is_refused() {
    let dir = root("[workspace]\nstore = \"file://.cairn/store\"\n");
    let error = render(&dir).unwrap_err();
    insta::assert_snapshot!("file_store", message(&error));
}

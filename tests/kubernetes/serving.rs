//! Endpoints beyond the example: Cairn's reference server, several deployments with
//! their weights, a mirror, a revision that carries an environment, a compute without a
//! gateway, stores pods can't reach, and deployments serving their own process
//! (`command`, `health`, `health_port`).

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

/// Endpoints serving their own process: an image of the team's with a `command`, a
/// health path on a port of its own, behind the auth proxy; and a `command` in Cairn's
/// image, without auth, probed on the serving port.
pub(crate) const OWN_SERVER: &str = r#"
[model.classifier]
source = "models/classifier/"
format = "safetensors"

[endpoint.own]
compute = "compute.edge"
port = 9000

[endpoint.own.deployments.main]
model = "model.classifier"
image = "registry.example.com/vision/server:2.1"
command = ["python", "-m", "server", "--weights", "{{ model }}/model.safetensors", "--port", "{{port}}"]
health = "/v2/health/ready"
health_port = 8002

[endpoint.open]
compute = "compute.edge"
auth = "none"
port = 9100

[endpoint.open.deployments.main]
model = "model.classifier"
command = ["cairn", "serve", "--model", "{{ model }}", "--listen", "0.0.0.0:{{ port }}"]
health = "/healthz"
"#;

/// Autoscaled deployments: by request rate (a custom per-pod metric) with a scale-down
/// window, and by CPU.
pub(crate) const AUTOSCALED: &str = r#"
[model.classifier]
source = "models/classifier/"
format = "safetensors"

[endpoint.api]
compute = "compute.edge-gw"

[endpoint.api.deployments.blue]
model = "model.classifier"
replicas = { min = 2, max = 8, target_rps = 12.5, scale_down_window = "2m" }

[endpoint.api.traffic]
blue = 100

[endpoint.batch]
compute = "compute.edge"
port = 9000

[endpoint.batch.deployments.main]
model = "model.classifier"
replicas = { min = 1, max = 3, target_cpu = 70 }
"#;

pub(crate) fn root(workspace: &str) -> TempDir {
    root_serving(workspace, SERVE)
}

pub(crate) fn root_serving(workspace: &str, serve: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("vision");
    fs::create_dir_all(ws.join("models/classifier")).unwrap();
    fs::write(ws.join("models/classifier/model.safetensors"), "weights").unwrap();
    fs::write(ws.join("workspace.toml"), workspace).unwrap();
    fs::write(ws.join("compute.toml"), COMPUTE).unwrap();
    fs::write(ws.join("serve.toml"), serve).unwrap();
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

/// The one object of `kind` whose name starts with `prefix`.
fn find_prefixed<'a>(objects: &'a [KubeObject], kind: &str, prefix: &str) -> &'a KubeObject {
    let found: Vec<&KubeObject> = objects
        .iter()
        .filter(|o| o.kind == kind && o.name.starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{kind} {prefix}*: {found:?}");
    found[0]
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
            "77aa88bb99cc",
            // The protocol's model name: the endpoint's, whichever revision answers.
            "--model-name",
            "batch"
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

#[test]
fn a_deployments_own_command_and_probes_are_rendered() {
    let objects = render(&root_serving(WORKSPACE, OWN_SERVER)).unwrap();

    // Behind the auth proxy: the team's image runs its command with the pod's model
    // folder and the endpoint's port; the probes read its own path on its own port.
    let own = find_prefixed(&objects, "Deployment", "own-main-77aa88bb99cc-");
    let pod = &own.value["spec"]["template"]["spec"];
    let server = &pod["containers"][0];
    assert_eq!(server["image"], "registry.example.com/vision/server:2.1");
    assert_eq!(
        server["command"],
        json!([
            "python",
            "-m",
            "server",
            "--weights",
            "/cairn/model/model.safetensors",
            "--port",
            "9000"
        ])
    );
    assert_eq!(
        server["ports"],
        json!([{"name": "server", "containerPort": 9000, "protocol": "TCP"}])
    );
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(
            server[probe]["httpGet"],
            json!({"path": "/v2/health/ready", "port": 8002}),
            "{probe}"
        );
    }
    // The proxy in front is unchanged: it forwards to the server's port and answers
    // its own readiness.
    let auth = &pod["containers"][1];
    assert_eq!(auth["name"], "proxy");
    assert_eq!(
        auth["readinessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert!(
        auth["command"]
            .as_array()
            .unwrap()
            .contains(&json!("127.0.0.1:9000")),
        "{}",
        auth["command"]
    );

    // Without auth or an image: the command runs in Cairn's image, probed on `http`.
    let open = find_prefixed(&objects, "Deployment", "open-main-77aa88bb99cc-");
    let server = &open.value["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(server["image"], CAIRN_IMAGE);
    assert_eq!(
        server["command"],
        json!([
            "cairn",
            "serve",
            "--model",
            "/cairn/model",
            "--listen",
            "0.0.0.0:9100"
        ])
    );
    assert_eq!(
        server["readinessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    // A declared process is part of the revision: its objects get a name of their own.
    assert_ne!(open.name, "open-main-77aa88bb99cc");
}

#[test]
fn an_autoscaled_deployment_gets_a_horizontal_pod_autoscaler_and_no_replica_count() {
    let objects = render(&root_serving(WORKSPACE, AUTOSCALED)).unwrap();
    let blue = find_prefixed(&objects, "Deployment", "api-blue-");
    assert_eq!(blue.value["spec"].get("replicas"), None, "{}", blue.value);
    let hpa = find(&objects, "HorizontalPodAutoscaler", &blue.name);
    assert_eq!(hpa.api_version, "autoscaling/v2");
    assert_eq!(hpa.namespace.as_deref(), Some("vision-serve"));
    assert_eq!(
        hpa.value["spec"],
        json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": blue.name},
            "minReplicas": 2,
            "maxReplicas": 8,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {"name": "cairn_requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "12500m"},
                },
            }],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
        })
    );
    // It carries the revision's labels, so plans and prunes find it with the revision.
    assert_eq!(
        hpa.value["metadata"]["labels"]["cairn.dev/deployment-revision"],
        blue.value["metadata"]["labels"]["cairn.dev/deployment-revision"]
    );
    let main = find_prefixed(&objects, "Deployment", "batch-main-");
    let hpa = find(&objects, "HorizontalPodAutoscaler", &main.name);
    assert_eq!(
        hpa.value["spec"]["metrics"],
        json!([{
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        }])
    );
    assert_eq!(
        hpa.value["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    // A fixed count keeps its Deployment's replicas and gets no autoscaler.
    let fixed = render(&root(WORKSPACE)).unwrap();
    assert!(fixed.iter().all(|o| o.kind != "HorizontalPodAutoscaler"));
    assert_eq!(
        find_prefixed(&fixed, "Deployment", "api-blue-").value["spec"]["replicas"],
        2
    );
}

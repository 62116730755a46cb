use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::kube_server::parse_quantity;
use crate::{api_error, deployment_json, fields_of, start};

fn job_json(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {
            "metadata": {"labels": {"app.kubernetes.io/managed-by": "cairn"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": image}]},
        }},
    })
}

/// The `field: message` pairs of a 422.
fn causes(status: &kube::core::Status) -> Vec<String> {
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{}",
        status.message
    );
    status
        .details
        .as_ref()
        .unwrap()
        .causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

/// Reads show the defaults a real server fills; an apply does not own them, so a diff of
/// Cairn's fields never sees them.
#[tokio::test]
async fn defaults_show_on_reads_and_belong_to_no_applier() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let mut desired = deployment_json("web", 2, json!({}));
    desired["spec"].as_object_mut().unwrap().remove("replicas");
    let applied = api
        .patch("web", &PatchParams::apply("cairn"), &Patch::Apply(&desired))
        .await
        .unwrap();
    let object = serde_json::to_value(&applied).unwrap();
    let spec = &object["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(
        (pod["restartPolicy"].as_str(), pod["dnsPolicy"].as_str()),
        (Some("Always"), Some("ClusterFirst"))
    );
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    let owned = fields_of(&object, "cairn", "Apply").unwrap();
    assert!(owned["f:spec"].get("f:replicas").is_none(), "{owned}");
    assert!(
        owned["f:spec"].get("f:revisionHistoryLimit").is_none(),
        "{owned}"
    );
    // Applying the same again, defaults and all, writes nothing.
    let again = api
        .patch("web", &PatchParams::apply("cairn"), &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        applied.metadata.resource_version
    );
}

#[tokio::test]
async fn deployments_need_a_selector_matching_their_template() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let mut none = deployment_json("a", 1, json!({}));
    none["spec"].as_object_mut().unwrap().remove("selector");
    let status = api_error(
        api.patch("a", &PatchParams::apply("cairn"), &Patch::Apply(&none))
            .await,
    );
    assert_eq!(causes(&status), ["spec.selector: Required value"]);
    let mut other = deployment_json("a", 1, json!({}));
    other["spec"]["selector"]["matchLabels"]["app"] = json!("b");
    let status = api_error(
        api.patch("a", &PatchParams::apply("cairn"), &Patch::Apply(&other))
            .await,
    );
    assert!(
        status
            .message
            .starts_with("Deployment.apps \"a\" is invalid: spec.template.metadata.labels"),
        "{}",
        status.message
    );
    // Once made, the selector stays.
    api.patch(
        "a",
        &PatchParams::apply("cairn"),
        &Patch::Apply(deployment_json("a", 1, json!({}))),
    )
    .await
    .unwrap();
    let mut moved = deployment_json("a", 1, json!({}));
    moved["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
    moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    let status = api_error(
        api.patch("a", &PatchParams::apply("cairn"), &Patch::Apply(&moved))
            .await,
    );
    assert!(
        causes(&status)[0].starts_with("spec.selector: Invalid value"),
        "{status:?}"
    );
}

#[tokio::test]
async fn containers_need_names_and_images_and_sound_resources() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let with_containers = |containers: Value| {
        let mut d = deployment_json("web", 1, json!({}));
        d["spec"]["template"]["spec"]["containers"] = containers;
        d
    };
    let apply = |d: Value| {
        let api = api.clone();
        async move {
            api_error(
                api.patch("web", &PatchParams::apply("cairn"), &Patch::Apply(&d))
                    .await,
            )
        }
    };
    let status = apply(with_containers(
        json!([{"name": "app"}, {"name": "app", "image": "x:1"}, {"image": "x:1"}]),
    ))
    .await;
    assert_eq!(
        causes(&status),
        [
            "spec.template.spec.containers[0].image: Required value",
            "spec.template.spec.containers[1].name: Duplicate value: \"app\"",
            "spec.template.spec.containers[2].name: Required value",
        ]
    );
    let status = apply(with_containers(json!([]))).await;
    assert_eq!(
        causes(&status),
        ["spec.template.spec.containers: Required value"]
    );
    let status = apply(with_containers(
        json!([{"name": "app", "image": "x:1", "resources": {
            "requests": {"cpu": "2", "memory": "1.5cores", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "500m", "nvidia.com/gpu": "1.5"},
        }}]),
    ))
    .await;
    assert_eq!(
        causes(&status),
        [
            "spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]: Invalid value: \"1.5\": must be an integer",
            "spec.template.spec.containers[0].resources.requests[memory]: Invalid value: \"1.5cores\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.template.spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 500m",
            "spec.template.spec.containers[0].resources.requests[nvidia.com/gpu]: Invalid value: \"1\": must be equal to nvidia.com/gpu limit of 1.5",
        ]
    );
    api.patch(
        "web",
        &PatchParams::apply("cairn"),
        &Patch::Apply(with_containers(
            json!([{"name": "app", "image": "x:1", "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"cpu": 1, "memory": "1Gi", "nvidia.com/gpu": 2},
            }}]),
        )),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn jobs_get_a_generated_selector_and_an_immutable_template() {
    let (_server, client) = start().await;
    let api: Api<Job> = Api::default_namespaced(client);
    let job = api
        .patch(
            "train-1",
            &PatchParams::apply("cairn"),
            &Patch::Apply(job_json("train-1", "registry.example/train:1")),
        )
        .await
        .unwrap();
    let uid = job.metadata.uid.clone().unwrap();
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["batch.kubernetes.io/job-name"], "train-1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "cairn");
    assert_eq!(
        (spec.backoff_limit, spec.completions, spec.parallelism),
        (Some(6), Some(1), Some(1))
    );
    // The same apply is no change; a new image is a new job, not an update.
    let again = api
        .patch(
            "train-1",
            &PatchParams::apply("cairn"),
            &Patch::Apply(job_json("train-1", "registry.example/train:1")),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        job.metadata.resource_version
    );
    let status = api_error(
        api.patch(
            "train-1",
            &PatchParams::apply("cairn"),
            &Patch::Apply(job_json("train-1", "registry.example/train:2")),
        )
        .await,
    );
    assert!(
        causes(&status)[0].starts_with("spec.template: Invalid value"),
        "{status:?}"
    );
    assert!(
        status.message.ends_with("field is immutable"),
        "{}",
        status.message
    );
    // Job pods may not restart always; the policy is required.
    let mut always = job_json("train-2", "x:1");
    always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let status = api_error(
        api.patch(
            "train-2",
            &PatchParams::apply("cairn"),
            &Patch::Apply(&always),
        )
        .await,
    );
    assert_eq!(
        causes(&status),
        ["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
    );
    always["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("restartPolicy");
    let status = api_error(
        api.patch(
            "train-2",
            &PatchParams::apply("cairn"),
            &Patch::Apply(&always),
        )
        .await,
    );
    assert_eq!(
        causes(&status),
        ["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""]
    );
    // A selector of one's own needs manualSelector.
    let mut chosen = job_json("train-3", "x:1");
    chosen["spec"]["selector"] = json!({"matchLabels": {"app.kubernetes.io/managed-by": "cairn"}});
    let status = api_error(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(chosen).unwrap(),
        )
        .await,
    );
    assert!(
        causes(&status)[0].contains("`selector` will be auto-generated"),
        "{status:?}"
    );
}

#[tokio::test]
async fn services_get_an_address_and_port_defaults() {
    let (_server, client) = start().await;
    let api: Api<Service> = Api::default_namespaced(client);
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    });
    let made = api
        .patch("web", &PatchParams::apply("cairn"), &Patch::Apply(&service))
        .await
        .unwrap();
    let spec = made.spec.unwrap();
    let ip = spec.cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    // Re-applying without the address keeps it; asking for another is refused.
    let again = api
        .patch("web", &PatchParams::apply("cairn"), &Patch::Apply(&service))
        .await
        .unwrap();
    assert_eq!(again.spec.unwrap().cluster_ip, Some(ip));
    let mut moved = service.clone();
    moved["spec"]["clusterIP"] = json!("10.96.9.9");
    let status = api_error(
        api.patch("web", &PatchParams::apply("cairn"), &Patch::Apply(&moved))
            .await,
    );
    assert!(
        causes(&status)[0].starts_with("spec.clusterIP: Invalid value: \"10.96.9.9\""),
        "{status:?}"
    );
    // Ports: required, and named when there are several.
    let status = api_error(
        api.patch(
            "bare",
            &PatchParams::apply("cairn"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bare"}, "spec": {}})),
        )
        .await,
    );
    assert_eq!(causes(&status), ["spec.ports: Required value"]);
    let two = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "two"},
        "spec": {"ports": [{"port": 80}, {"port": 81}]}});
    let status = api_error(
        api.patch("two", &PatchParams::apply("cairn"), &Patch::Apply(&two))
            .await,
    );
    assert_eq!(
        causes(&status),
        [
            "spec.ports[0].name: Required value",
            "spec.ports[1].name: Required value"
        ]
    );
}

#[test]
fn quantities_parse_as_kubernetes_reads_them() {
    for (text, value) in [
        ("1", 1.0),
        ("500m", 0.5),
        ("1.5", 1.5),
        ("2Gi", 2.0 * 1024f64.powi(3)),
        ("1e3", 1000.0),
        ("128974848", 128974848.0),
        ("129M", 129e6),
    ] {
        assert_eq!(parse_quantity(text), Some(value), "{text}");
    }
    for bad in ["", "1.5cores", "Gi", "1..5", "1-2", "m"] {
        assert_eq!(parse_quantity(bad), None, "{bad}");
    }
}

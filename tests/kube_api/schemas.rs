//! Writes checked against the vendored schemas (Kubernetes v1.35.0, Gateway API v1.3.0)
//! and the rules beyond them, answered per verb as a real server answers (see
//! `tests/support/kube_server/schema.rs` for the one deliberate difference: an apply with
//! an unknown field is a 422 here, a 500 on a real 1.35 server).

use axum::http::Request;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::client::Body;
use serde_json::{json, Value};

use crate::{api_error, deployment_json, start};

/// `field: message (reason)` of each cause of a 422.
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
        .expect("details")
        .causes
        .iter()
        .map(|c| format!("{}: {} ({})", c.field, c.message, c.reason))
        .collect()
}

/// Cairn's own field manager, with strict field validation as Cairn applies.
fn strict_apply() -> PatchParams {
    PatchParams::apply("cairn").validation_strict()
}

fn with_typo(mut deployment: Value) -> Value {
    let replicas = deployment["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas")
        .unwrap();
    deployment["spec"]["replicass"] = replicas;
    deployment
}

fn routes(client: &kube::Client) -> Api<DynamicObject> {
    let route = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    Api::namespaced_with(client.clone(), "default", &route)
}

fn route(rule: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "gateways"}], "rules": [rule]},
    })
}

/// Issue 14's acceptance: "the test API server rejects `spec.replicass` with 422 under
/// strict validation". Server-side apply refuses an unknown field whatever
/// `fieldValidation` says, with the real server's message (whose code, a 500 there, is
/// the one difference: see `schema.rs`), dry run or not, and stores nothing.
#[tokio::test]
async fn the_test_api_server_rejects_spec_replicass_with_422_under_strict_validation() {
    let (server, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    let typo = with_typo(deployment_json("web", 2, json!({})));
    let expected = "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): \
                    .spec.replicass: field not declared in schema";
    for params in [
        strict_apply(),
        strict_apply().dry_run(),
        PatchParams::apply("cairn"),
        PatchParams::apply("cairn").validation_ignore(),
    ] {
        let status = api_error(
            deployments
                .patch("web", &params, &Patch::Apply(&typo))
                .await,
        );
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (422, "Invalid", expected),
            "{params:?}"
        );
    }
    assert!(server
        .object("apps/v1", "Deployment", Some("default"), "web")
        .is_none());
    let request = server.requests().into_iter().next().unwrap();
    assert!(
        request.query.contains("fieldValidation=Strict"),
        "{}",
        request.query
    );
    assert_eq!(request.status, 422);

    // Once the object exists, an apply that adds a typo is refused the same way, and
    // leaves it as it was.
    let good = deployment_json("web", 2, json!({}));
    deployments
        .patch("web", &strict_apply(), &Patch::Apply(&good))
        .await
        .unwrap();
    let before = server
        .object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    let mut nested = good.clone();
    nested["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let status = api_error(
        deployments
            .patch("web", &strict_apply(), &Patch::Apply(&nested))
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status.message.ends_with(
            ": .spec.template.spec.containers[0].imagePullPolicyy: field not declared in schema"
        ),
        "{}",
        status.message
    );
    assert_eq!(
        server
            .object("apps/v1", "Deployment", Some("default"), "web")
            .unwrap(),
        before
    );
    // Several, as structured-merge-diff lists them.
    nested["spec"]["paused"] = json!(false);
    nested["spec"]["pausd"] = json!(true);
    let status = api_error(
        deployments
            .patch("web", &strict_apply(), &Patch::Apply(&nested))
            .await,
    );
    assert!(
        status.message.ends_with(
            "Kind=Deployment): errors:\n  .spec.pausd: field not declared in schema\n  \
             .spec.template.spec.containers[0].imagePullPolicyy: field not declared in schema"
        ),
        "{}",
        status.message
    );
}

/// Create, update and merge patch decode the body as `fieldValidation` says: `Strict`
/// is a 400, `Warn` (the default) drops the field with a `Warning`, `Ignore` drops it.
#[tokio::test]
async fn create_update_and_patch_follow_field_validation() {
    let (server, client) = start().await;
    let typo = with_typo(deployment_json("web", 2, json!({})));
    let strict_create =
        Request::post("/apis/apps/v1/namespaces/default/deployments?fieldValidation=Strict")
            .header("Content-Type", "application/json")
            .body(typo.to_string().into_bytes())
            .unwrap();
    let status = api_error(client.request::<Value>(strict_create).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        status.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
         unknown field \"spec.replicass\""
    );
    assert!(server
        .object("apps/v1", "Deployment", Some("default"), "web")
        .is_none());

    // No fieldValidation: Warn. Created without the field, and told so.
    let warned = client
        .send(
            Request::post("/apis/apps/v1/namespaces/default/deployments")
                .header("Content-Type", "application/json")
                .body(typo.to_string().into_bytes())
                .unwrap()
                .map(Body::from),
        )
        .await
        .unwrap();
    assert_eq!(warned.status(), 201);
    let warnings: Vec<&str> = warned
        .headers()
        .get_all("Warning")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(warnings, ["299 - \"unknown field \\\"spec.replicass\\\"\""]);
    let stored = server
        .object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert!(stored["spec"].get("replicass").is_none(), "{stored:#}");
    assert_eq!(
        stored["spec"]["replicas"], 1,
        "the default, as the typo was dropped"
    );

    // Update and merge patch, strict: refused with the field named; ignored: dropped.
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut replaced = with_typo(deployment_json("web", 3, json!({})));
    replaced["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    let replace =
        Request::put("/apis/apps/v1/namespaces/default/deployments/web?fieldValidation=Strict")
            .header("Content-Type", "application/json")
            .body(replaced.to_string().into_bytes())
            .unwrap();
    let status = api_error(client.request::<Value>(replace).await);
    assert_eq!(status.code, 400);
    assert!(
        status
            .message
            .ends_with("strict decoding error: unknown field \"spec.replicass\""),
        "{}",
        status.message
    );
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "registry.example/app:2", "imagee": "x"}
    ]}}}});
    let status = api_error(
        deployments
            .patch(
                "web",
                &PatchParams::default().validation_strict(),
                &Patch::Merge(&patch),
            )
            .await,
    );
    assert_eq!(status.code, 400);
    assert!(
        status
            .message
            .ends_with("unknown field \"spec.template.spec.containers[0].imagee\""),
        "{}",
        status.message
    );
    let patched = deployments
        .patch(
            "web",
            &PatchParams::default().validation_ignore(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let container = &patched.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("registry.example/app:2"));
    let stored = server
        .object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert!(stored["spec"]["template"]["spec"]["containers"][0]
        .get("imagee")
        .is_none());
}

/// A value the schema refuses is a 422 naming the field, whatever the verb.
#[tokio::test]
async fn schema_violations_are_invalid_with_the_field_named() {
    let (server, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut wrong = deployment_json("web", 2, json!({}));
    wrong["spec"]["replicas"] = json!("three");
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 8080, "protocol": "TCP", "hostIP": 7}]);
    let status = api_error(
        deployments
            .patch("web", &strict_apply(), &Patch::Apply(&wrong))
            .await,
    );
    assert_eq!(
        causes(&status),
        [
            "spec.replicas: Invalid value: \"three\": must be of type integer (FieldValueInvalid)",
            "spec.template.spec.containers[0].ports[0].hostIP: Invalid value: 7: must be of type string (FieldValueInvalid)",
        ]
    );
    assert!(
        status
            .message
            .starts_with("Deployment.apps \"web\" is invalid: ["),
        "{}",
        status.message
    );
    // A Job's required field, through create: absent (the schema), or empty as a typed
    // client sends it (the rule).
    let jobs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::erase::<Job>(&()));
    for env in [json!({"value": "1"}), json!({"name": "", "value": "1"})] {
        let job: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "train", "image": "trainer:1", "env": [env]}
            ]}}},
        }))
        .unwrap();
        let status = api_error(jobs.create(&PostParams::default(), &job).await);
        assert_eq!(
            causes(&status),
            ["spec.template.spec.containers[0].env[0].name: Required value (FieldValueRequired)"]
        );
    }
    assert!(server.objects().iter().all(|o| o["kind"] != "Job"));
}

/// The rules behind issue 14's list of what the test server used to accept.
#[tokio::test]
async fn pod_templates_and_jobs_follow_the_real_servers_rules() {
    let (_server, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut unmounted = deployment_json("web", 1, json!({}));
    unmounted["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "model", "mountPath": "/cairn/model"}]);
    let status = api_error(
        deployments
            .patch("web", &strict_apply(), &Patch::Apply(&unmounted))
            .await,
    );
    assert_eq!(
        causes(&status),
        ["spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"model\" (FieldValueNotFound)"]
    );
    unmounted["spec"]["template"]["spec"]["volumes"] = json!([{"name": "model", "emptyDir": {}}]);
    deployments
        .patch("web", &strict_apply(), &Patch::Apply(&unmounted))
        .await
        .expect("with the volume it names");

    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-0a1b"},
        "spec": {
            "completionMode": "Indexed",
            "parallelism": 2,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "NotIn", "values": [0]}},
            ]},
            "template": {"spec": {
                "restartPolicy": "Never",
                "subdomain": "Train_0a1b",
                "containers": [{"name": "train", "image": "trainer:1", "ports": [
                    {"name": "rendezvous-ports", "containerPort": 29500}
                ]}],
                "volumes": [{"name": "work"}],
            }},
        },
    });
    let status = api_error(
        jobs.patch("train-0a1b", &strict_apply(), &Patch::Apply(&job))
            .await,
    );
    assert_eq!(
        causes(&status),
        [
            "spec.template.spec.volumes[0]: Required value: must specify a volume type (FieldValueRequired)",
            "spec.template.spec.containers[0].ports[0].name: Invalid value: \"rendezvous-ports\": \
             must be no more than 15 characters (FieldValueInvalid)",
            "spec.template.spec.subdomain: Invalid value: \"Train_0a1b\": a lowercase RFC 1123 label must \
             consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric \
             character (e.g. 'my-name',  or '123-abc', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?') (FieldValueInvalid)",
            "spec.completions: Required value: when completion mode is Indexed (FieldValueRequired)",
            "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"trainer\": must be one \
             of the container or initContainer names in the pod template (FieldValueInvalid)",
        ]
    );
    let fixed = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-0a1b"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "NotIn", "values": [0]}},
            ]},
            "template": {"spec": {
                "restartPolicy": "Never",
                "subdomain": "train-0a1b",
                "containers": [{"name": "train", "image": "trainer:1", "ports": [
                    {"name": "rendezvous", "containerPort": 29500}
                ]}],
                "volumes": [{"name": "work", "emptyDir": {}}],
            }},
        },
    });
    jobs.patch("train-0a1b", &strict_apply(), &Patch::Apply(&fixed))
        .await
        .expect("the same job, valid");
}

/// HTTPRoutes against Gateway API v1.3.0's CRD: its schema (`requestMirror.percent` is
/// standard since v1.3) and its CEL rules.
#[tokio::test]
async fn http_routes_follow_the_gateway_api_crd() {
    let (server, client) = start().await;
    let routes = routes(&client);
    let no_port = route(json!({"backendRefs": [{"name": "web-blue", "weight": 100}]}));
    let status = api_error(
        routes
            .patch("web", &strict_apply(), &Patch::Apply(&no_port))
            .await,
    );
    assert_eq!(
        causes(&status),
        ["spec.rules[0].backendRefs[0]: Invalid value: \"object\": Must have port for Service reference (FieldValueInvalid)"]
    );
    assert!(
        status
            .message
            .starts_with("HTTPRoute.gateway.networking.k8s.io \"web\" is invalid: "),
        "{}",
        status.message
    );

    let mirrored = |mirror: Value| {
        route(json!({
            "backendRefs": [{"name": "web-blue", "port": 80, "weight": 100}],
            "filters": [{"type": "RequestMirror", "requestMirror": mirror}],
        }))
    };
    let both = mirrored(json!({
        "backendRef": {"name": "web-green", "port": 80}, "percent": 10,
        "fraction": {"numerator": 1, "denominator": 10},
    }));
    let status = api_error(
        routes
            .patch("web", &strict_apply(), &Patch::Apply(&both))
            .await,
    );
    assert_eq!(
        causes(&status),
        ["spec.rules[0].filters[0].requestMirror: Invalid value: \"object\": Only one of percent or fraction \
          may be specified in HTTPRequestMirrorFilter (FieldValueInvalid)"]
    );
    let over = mirrored(json!({"backendRef": {"name": "web-green", "port": 80}, "percent": 101}));
    let status = api_error(
        routes
            .patch("web", &strict_apply(), &Patch::Apply(&over))
            .await,
    );
    assert_eq!(
        causes(&status),
        ["spec.rules[0].filters[0].requestMirror.percent: Invalid value: 101: must be less than or equal to 100 (FieldValueInvalid)"]
    );
    let misspelt =
        mirrored(json!({"backendRef": {"name": "web-green", "port": 80}, "percentage": 10}));
    let status = api_error(
        routes
            .patch("web", &strict_apply(), &Patch::Apply(&misspelt))
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status.message.ends_with(
            ": .spec.rules[0].filters[0].requestMirror.percentage: field not declared in schema"
        ),
        "{}",
        status.message
    );
    assert!(server.objects().iter().all(|o| o["kind"] != "HTTPRoute"));

    let good = mirrored(json!({"backendRef": {"name": "web-green", "port": 80}, "percent": 10}));
    routes
        .patch("web", &strict_apply(), &Patch::Apply(&good))
        .await
        .expect("a v1.3 mirror with a percentage");
}

/// Kinds without a vendored schema are stored as sent.
#[tokio::test]
async fn kinds_without_a_schema_are_not_checked() {
    let (server, client) = start().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    let map = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "notes"},
        "data": {"a": "b"}, "notAField": true,
    });
    maps.patch("notes", &strict_apply(), &Patch::Apply(&map))
        .await
        .unwrap();
    let stored = server
        .object("v1", "ConfigMap", Some("default"), "notes")
        .unwrap();
    assert_eq!(stored["notAField"], true);
}

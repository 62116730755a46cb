use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

use crate::{deployment, deployment_json, managers, start};

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "train", "image": "registry.example/train:1"}]}}},
    }))
    .unwrap()
}

#[tokio::test]
async fn status_writes_change_only_status_and_object_writes_never_status() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    // A create drops the status it is given.
    let mut given = deployment("web", 2, json!({}));
    given.status = Some(serde_json::from_value(json!({"replicas": 9})).unwrap());
    let created = api.create(&PostParams::default(), &given).await.unwrap();
    assert!(created.status.is_none());

    // A status patch changes the status, not the spec it also names.
    let patched = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"replicas": 7}, "status": {"replicas": 2, "readyReplicas": 1}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(patched.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(patched.metadata.generation, Some(1), "status is not spec");
    assert_eq!(
        managers(&serde_json::to_value(&patched).unwrap()),
        ["unknown/Update", "unknown/Update/status"]
    );

    // A write to the object leaves the status alone.
    let applied = api
        .patch(
            "web",
            &PatchParams::apply("cairn").force(),
            &Patch::Apply({
                let mut d = deployment_json("web", 3, json!({}));
                d["status"] = json!({"readyReplicas": 0});
                d
            }),
        )
        .await
        .unwrap();
    assert_eq!(applied.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(applied.spec.as_ref().unwrap().replicas, Some(3));

    // Replacing the status needs the current version, like any replace.
    let mut current = api.get_status("web").await.unwrap();
    current.status.as_mut().unwrap().ready_replicas = Some(3);
    let replaced = api
        .replace_status("web", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().ready_replicas, Some(3));
    let stale = api
        .replace_status("web", &PostParams::default(), &current)
        .await;
    assert!(matches!(stale, Err(kube::Error::Api(s)) if s.code == 409));

    // The control marks it available at its current generation.
    let available = server.deployment_available("default", "web");
    assert_eq!(
        available["status"]["observedGeneration"],
        available["metadata"]["generation"]
    );
    assert_eq!(available["status"]["availableReplicas"], 3);
    let seen = api.get("web").await.unwrap();
    let ready = seen.status.unwrap().conditions.unwrap();
    assert!(ready
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True"));
}

/// kube-runtime's `await_condition` (a watcher: list, then watch from its version) sees a
/// job the control completes.
#[tokio::test]
async fn a_waiting_client_sees_the_job_the_control_completes() {
    let (server, client) = start().await;
    let api: Api<Job> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &job("train"))
        .await
        .unwrap();
    let waiter = tokio::spawn(await_condition(
        api.clone(),
        "train",
        conditions::is_job_completed(),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    let done = server.job_succeeded("default", "train");
    assert_eq!(done["status"]["succeeded"], 1);
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("the waiter saw the job complete")
        .unwrap()
        .unwrap()
        .expect("the job");
    let conditions = seen.status.unwrap().conditions.unwrap();
    assert!(conditions
        .iter()
        .any(|c| c.type_ == "Complete" && c.status == "True"));
}

#[tokio::test]
async fn a_failed_job_reports_its_backoff_limit() {
    let (server, client) = start().await;
    let api: Api<Job> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &job("train"))
        .await
        .unwrap();
    server.job_failed("default", "train");
    let status = api.get_status("train").await.unwrap().status.unwrap();
    assert_eq!(status.failed, Some(3), "backoffLimit 2: three pods failed");
    let failed = status.conditions.unwrap();
    assert!(failed
        .iter()
        .any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("BackoffLimitExceeded")));
}

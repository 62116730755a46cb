use std::time::Duration;

use cairn::backend::kubernetes::cluster::Error;
use serde_json::json;

use crate::{apply_ok, deployment, job, namespace, start, NS, WS};

async fn later(f: impl FnOnce()) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    f();
}

#[tokio::test]
async fn a_job_that_succeeds_ends_the_wait() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), job(WS, "train-1", "trainer:1")];
    apply_ok(&clusters, &objects).await;
    let key = objects[1].key();
    let mut lines = Vec::new();
    let mut on_log = |l: &str| lines.push(l.to_string());
    let (waited, _) = tokio::join!(
        clusters.wait_job(&key, Duration::from_secs(10), &mut on_log),
        later(|| {
            server.job_succeeded(NS, "train-1");
        }),
    );
    waited.unwrap();
    assert!(lines.is_empty(), "no pods, no logs: {lines:?}");
}

#[tokio::test]
async fn a_job_that_fails_is_an_error_with_its_reason() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), job(WS, "train-1", "trainer:1")];
    apply_ok(&clusters, &objects).await;
    let key = objects[1].key();
    let mut on_log = |_: &str| {};
    let (waited, _) = tokio::join!(
        clusters.wait_job(&key, Duration::from_secs(10), &mut on_log),
        later(|| {
            server.job_failed(NS, "train-1");
        }),
    );
    let error = waited.unwrap_err();
    assert!(matches!(error, Error::JobFailed { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "Job `train-1` in namespace `fraud-ml` failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
}

#[tokio::test]
async fn a_job_that_takes_too_long_times_out() {
    let (_server, clusters) = start();
    let objects = vec![namespace(WS, NS), job(WS, "train-1", "trainer:1")];
    apply_ok(&clusters, &objects).await;
    let error = clusters
        .wait_job(
            &objects[1].key(),
            Duration::from_millis(100),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "timed out after 100ms waiting for Job `train-1` in namespace `fraud-ml`: 0 of 1 completions succeeded, 0 active, 0 failed"
    );
}

#[tokio::test]
async fn a_jobs_pod_logs_are_passed_on_once_each() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), job(WS, "train-1", "trainer:1")];
    apply_ok(&clusters, &objects).await;
    // The pod the job controller would start, with an init container that ran.
    server.create(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "train-1-abcde", "namespace": NS,
                         "labels": {"batch.kubernetes.io/job-name": "train-1", "job-name": "train-1"}},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [{"name": "fetch-data", "image": "cairn:1"}],
                "containers": [{"name": "train", "image": "trainer:1"}],
            },
        }),
        "kube-controller-manager",
    );
    server.set_status(
        "v1",
        "Pod",
        Some(NS),
        "train-1-abcde",
        json!({
            "phase": "Running",
            "initContainerStatuses": [{"name": "fetch-data", "image": "cairn:1", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
            "containerStatuses": [{"name": "train", "image": "trainer:1", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}}],
        }),
    );
    server.pod_log(NS, "train-1-abcde", "fetch-data", "fetched 3 files");
    server.pod_log(NS, "train-1-abcde", "train", "epoch 1 loss 0.9");

    let key = objects[1].key();
    let mut lines = Vec::new();
    let mut on_log = |l: &str| lines.push(l.to_string());
    let (waited, _) = tokio::join!(
        clusters.wait_job(&key, Duration::from_secs(10), &mut on_log),
        async {
            later(|| server.pod_log(NS, "train-1-abcde", "train", "epoch 2 loss 0.5")).await;
            later(|| {
                server.pod_log(NS, "train-1-abcde", "train", "saved model");
                server.job_succeeded(NS, "train-1");
            })
            .await;
        },
    );
    waited.unwrap();
    assert_eq!(
        lines,
        [
            "[train-1-abcde/fetch-data] fetched 3 files",
            "[train-1-abcde/train] epoch 1 loss 0.9",
            "[train-1-abcde/train] epoch 2 loss 0.5",
            "[train-1-abcde/train] saved model",
        ]
    );
}

#[tokio::test]
async fn a_deployment_that_becomes_available_ends_the_wait() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), deployment(WS, "scoring-blue", 2)];
    apply_ok(&clusters, &objects).await;
    let key = objects[1].key();
    let (waited, _) = tokio::join!(
        clusters.wait_available(&key, Duration::from_secs(10)),
        later(|| {
            server.deployment_available(NS, "scoring-blue");
        }),
    );
    waited.unwrap();
}

#[tokio::test]
async fn a_deployment_that_never_becomes_available_says_how_many_replicas_are_ready() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), deployment(WS, "scoring-blue", 3)];
    apply_ok(&clusters, &objects).await;
    server.set_status(
        "apps/v1",
        "Deployment",
        Some(NS),
        "scoring-blue",
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1,
               "availableReplicas": 1}),
    );
    let error = clusters
        .wait_available(&objects[1].key(), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "timed out after 100ms waiting for Deployment `scoring-blue` in namespace `fraud-ml` to be available: 1 of 3 replicas ready, 1 available, 3 updated"
    );

    // Past its progress deadline, it fails at once.
    server.set_status(
        "apps/v1",
        "Deployment",
        Some(NS),
        "scoring-blue",
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1,
               "availableReplicas": 1, "conditions": [
                   {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet \"scoring-blue-5d8\" has timed out progressing."}]}),
    );
    let error = clusters
        .wait_available(&objects[1].key(), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Deployment `scoring-blue` in namespace `fraud-ml` is not progressing: ProgressDeadlineExceeded: ReplicaSet \"scoring-blue-5d8\" has timed out progressing. (1 of 3 replicas ready, 1 available, 3 updated)"
    );
}

use std::time::Duration;

use cairn::backend::kubernetes::cluster::{Error, JobWait};
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
    let wait = JobWait::at_most(Duration::from_secs(10));
    let (waited, _) = tokio::join!(
        clusters.wait_job(&key, &wait, &mut on_log),
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
    let wait = JobWait::at_most(Duration::from_secs(10));
    let (waited, _) = tokio::join!(
        clusters.wait_job(&key, &wait, &mut on_log),
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
            &JobWait::at_most(Duration::from_millis(100)),
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
    let wait = JobWait::at_most(Duration::from_secs(10));
    let (waited, _) = tokio::join!(clusters.wait_job(&key, &wait, &mut on_log), async {
        later(|| server.pod_log(NS, "train-1-abcde", "train", "epoch 2 loss 0.5")).await;
        later(|| {
            server.pod_log(NS, "train-1-abcde", "train", "saved model");
            server.job_succeeded(NS, "train-1");
        })
        .await;
    },);
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

/// Resumes a suspended Job as Kueue does when it admits it (a merge patch by its own
/// field manager).
fn resume(server: &crate::kube_server::KubeServer, name: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .patch(&format!(
            "{}/apis/batch/v1/namespaces/{NS}/jobs/{name}?fieldManager=kueue-admission",
            server.url()
        ))
        .header("Authorization", &format!("Bearer {}", server.token()))
        .header("Content-Type", "application/merge-patch+json")
        .send(json!({"spec": {"suspend": false}}).to_string())
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Marks the Job started `seconds` ago with 2 pods, `ready` of them running; returns
/// its `startTime`.
fn active_for(
    server: &crate::kube_server::KubeServer,
    name: &str,
    seconds: i64,
    ready: u32,
) -> String {
    let started =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(seconds);
    let started = started.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    server.set_status(
        "batch/v1",
        "Job",
        Some(NS),
        name,
        json!({"startTime": started, "active": 2, "ready": ready}),
    );
    started
}

/// A Job of `parallelism` pods, optionally suspended in a Kueue queue.
fn gang_job(
    name: &str,
    parallelism: u32,
    queue: Option<&str>,
) -> cairn::backend::kubernetes::KubeObject {
    let mut job = job(WS, name, "trainer:1");
    job.value["spec"]["parallelism"] = json!(parallelism);
    job.value["spec"]["completions"] = json!(parallelism);
    job.value["spec"]["completionMode"] = json!("Indexed");
    job.value["spec"]["activeDeadlineSeconds"] = json!(7200);
    if let Some(queue) = queue {
        job.value["spec"]["suspend"] = json!(true);
        job.value["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = json!(queue);
    }
    job
}

fn deadline_of(server: &crate::kube_server::KubeServer, name: &str) -> Option<u64> {
    server
        .object("batch/v1", "Job", Some(NS), name)
        .and_then(|j| j["spec"]["activeDeadlineSeconds"].as_u64())
}

/// Only running time counts: once every pod runs, the deadline becomes the time the
/// Job has been active plus the job's timeout, set by its own field manager.
#[tokio::test]
async fn the_deadline_is_set_when_every_pod_runs() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), gang_job("train-1", 2, None)];
    apply_ok(&clusters, &objects).await;
    let key = objects[1].key();
    // The Job has been active (its pods Pending) for 90 s; one pod runs.
    let started = active_for(&server, "train-1", 90, 1);
    let wait = JobWait {
        timeout: Duration::from_secs(20),
        schedule_timeout: Duration::from_secs(20),
        run_timeout: Some(Duration::from_secs(30)),
    };
    let mut on_log = |_: &str| {};
    let (waited, _) = tokio::join!(clusters.wait_job(&key, &wait, &mut on_log), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            deadline_of(&server, "train-1"),
            Some(7200),
            "not while a pod is pending"
        );
        server.set_status(
            "batch/v1",
            "Job",
            Some(NS),
            "train-1",
            json!({"startTime": started, "active": 2, "ready": 2}),
        );
        for _ in 0..100 {
            if deadline_of(&server, "train-1") != Some(7200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.job_succeeded(NS, "train-1");
    },);
    waited.unwrap();
    let deadline = deadline_of(&server, "train-1").unwrap();
    assert!(
        (120..=123).contains(&deadline),
        "90 s active + 30 s: {deadline}"
    );
    let job = server
        .object("batch/v1", "Job", Some(NS), "train-1")
        .unwrap();
    let managers: Vec<&str> = job["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["fieldsV1"]["f:spec"]
                .get("f:activeDeadlineSeconds")
                .is_some()
        })
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["cairn-deadline"], "{job}");
}

/// A gang whose pods can't all be scheduled is stopped after the scheduling wait, and
/// the error gives the cluster's reasons: the pending pod's condition, the events.
#[tokio::test]
async fn a_gang_that_cannot_be_scheduled_fails_with_the_reasons() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), gang_job("train-1", 2, None)];
    apply_ok(&clusters, &objects).await;
    active_for(&server, "train-1", 5, 1);
    server.create(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "train-1-1-x7k2p", "namespace": NS,
                         "labels": {"batch.kubernetes.io/job-name": "train-1", "job-name": "train-1"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:1"}]},
        }),
        "kube-controller-manager",
    );
    server.set_status("v1", "Pod", Some(NS), "train-1-1-x7k2p", json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
            "lastProbeTime": null, "lastTransitionTime": "2026-12-01T10:00:01Z"}],
    }));
    let event = |name: &str, kind: &str, object: &str, reason: &str, message: &str, at: &str| {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": NS},
            "involvedObject": {"kind": kind, "namespace": NS, "name": object},
            "type": "Warning", "reason": reason, "message": message,
            "firstTimestamp": at, "lastTimestamp": at, "count": 1,
            "source": {"component": "default-scheduler"},
        })
    };
    server.create(
        event(
            "train-1-1-x7k2p.1",
            "Pod",
            "train-1-1-x7k2p",
            "FailedScheduling",
            "0/3 nodes are available: 2 Insufficient nvidia.com/gpu.",
            "2026-12-01T10:00:02Z",
        ),
        "kube-scheduler",
    );
    server.create(
        event(
            "other.1",
            "Pod",
            "someone-else",
            "FailedScheduling",
            "not ours",
            "2026-12-01T10:00:02Z",
        ),
        "kube-scheduler",
    );
    let wait = JobWait {
        timeout: Duration::from_secs(20),
        schedule_timeout: Duration::from_millis(300),
        run_timeout: Some(Duration::from_secs(3600)),
    };
    let started = std::time::Instant::now();
    let error = clusters
        .wait_job(&objects[1].key(), &wait, &mut |_: &str| {})
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, Error::NotScheduled { .. }), "{error:?}");
    insta::assert_snapshot!(error.to_string());
    // Stopped: its deadline is now, so the job controller ends the pod that runs.
    let deadline = deadline_of(&server, "train-1").unwrap();
    assert!((5..=8).contains(&deadline), "active for 5 s: {deadline}");
}

/// A Job in a Kueue queue is created suspended: apply says it is queued and waits, with
/// no scheduling clock, until Kueue resumes it.
#[tokio::test]
async fn a_queued_job_waits_for_admission() {
    let (server, clusters) = start();
    let objects = vec![namespace(WS, NS), gang_job("train-1", 2, Some("gpu-a100"))];
    apply_ok(&clusters, &objects).await;
    let wait = JobWait {
        timeout: Duration::from_secs(20),
        schedule_timeout: Duration::from_millis(200),
        run_timeout: None,
    };
    let mut lines = Vec::new();
    let mut on_log = |l: &str| lines.push(l.to_string());
    let key = objects[1].key();
    let (waited, _) = tokio::join!(clusters.wait_job(&key, &wait, &mut on_log), async {
        // Queued for longer than the scheduling wait: not a failure.
        tokio::time::sleep(Duration::from_millis(600)).await;
        resume(&server, "train-1");
        server.set_status(
            "batch/v1",
            "Job",
            Some(NS),
            "train-1",
            json!({"startTime": "2026-12-01T10:00:00Z", "active": 2, "ready": 2}),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.job_succeeded(NS, "train-1");
    },);
    waited.unwrap();
    assert_eq!(
        lines,
        ["queued in `gpu-a100`: waiting for Kueue to admit all 2 pods at once"]
    );
}

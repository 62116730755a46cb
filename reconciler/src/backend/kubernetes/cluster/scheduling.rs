//! Whether a Job's pods have started, and why they are not running yet: each pod's `PodScheduled` condition when it is
//! false (`Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.`) and
//! the warning events of the Job and its pods (`FailedCreate: pods "…" is forbidden:
//! exceeded quota …`, pod security admission), newest last, each said once.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};

use super::connect::Cluster;
use crate::backend::kubernetes::ObjectKey;

/// How many of the Job's pods have started a container (an init container counts: an
/// input's download is one, and the pod is neither Running nor Ready while it runs);
/// `None` when its pods can't be listed.
pub(super) async fn started_pods(cluster: &Cluster, job: &ObjectKey) -> Option<i64> {
    let namespace = job.namespace.as_ref()?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={}", job.name);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    let started = list
        .items
        .iter()
        .filter(|pod| {
            let Some(status) = &pod.status else {
                return false;
            };
            status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
                .any(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                })
        })
        .count();
    Some(i64::try_from(started).unwrap_or(i64::MAX))
}

/// How many reasons an error lists at most.
const MAX_REASONS: usize = 5;

/// The reasons the Job's pods are not all running, as lines; empty when the cluster
/// says nothing (or this role may not read pods or events).
pub(super) async fn unscheduled_reasons(cluster: &Cluster, job: &ObjectKey) -> Vec<String> {
    let Some(namespace) = &job.namespace else {
        return Vec::new();
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut pod_names = Vec::new();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={}", job.name);
    if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let unscheduled = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            if let Some(c) = unscheduled {
                let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
                let message = c.message.clone().unwrap_or_default();
                push(&mut reasons, format!("pod {name}: {reason}: {message}"));
            }
            pod_names.push(name);
        }
    }
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), namespace);
    if let Ok(list) = events.list(&ListParams::default().limit(500)).await {
        let mut warnings: Vec<&Event> = list
            .items
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| {
                let o = &e.involved_object;
                match o.kind.as_deref() {
                    Some("Job") => o.name.as_deref() == Some(job.name.as_str()),
                    Some("Pod") => o.name.as_ref().is_some_and(|n| pod_names.contains(n)),
                    _ => false,
                }
            })
            .collect();
        warnings.sort_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .or(e.first_timestamp.as_ref())
                .map(|t| t.0)
        });
        for event in warnings {
            let what = match event.involved_object.kind.as_deref() {
                Some("Pod") => format!(
                    "pod {}",
                    event.involved_object.name.as_deref().unwrap_or_default()
                ),
                _ => "the Job".to_string(),
            };
            push(
                &mut reasons,
                format!(
                    "{what}: {}: {}",
                    event.reason.as_deref().unwrap_or("Warning"),
                    event.message.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    if reasons.len() > MAX_REASONS {
        let more = reasons.len() - MAX_REASONS;
        reasons.drain(..more);
        reasons.insert(0, format!("({more} older reasons left out)"));
    }
    reasons
}

fn push(reasons: &mut Vec<String>, line: String) {
    let line = line.trim_end().to_string();
    if !reasons.contains(&line) {
        reasons.push(line);
    }
}

//! A Job's pod logs, passed on line by line while Cairn waits for the Job: polled from
//! `pods/log` with timestamps so a line is never repeated. A server or role without
//! `pods/log` gives no lines, never an error.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams};

use super::connect::Cluster;
use crate::backend::kubernetes::ObjectKey;

/// Which log lines of a Job's pods were passed on already: the last timestamp seen per
/// pod and container.
#[derive(Default)]
pub(super) struct LogCursor {
    last: HashMap<(String, String), Timestamp>,
    /// The server (or the role) has no `pods` or `pods/log`: stop asking.
    unavailable: bool,
}

impl LogCursor {
    pub(super) async fn pump(
        &mut self,
        cluster: &Cluster,
        job: &ObjectKey,
        on_log: &mut (dyn FnMut(&str) + Send),
    ) {
        if self.unavailable {
            return;
        }
        let Some(namespace) = &job.namespace else {
            return;
        };
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
        let selector = format!("batch.kubernetes.io/job-name={}", job.name);
        let list = match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404) => {
                self.unavailable = true;
                return;
            }
            // Logs are a courtesy: a failed read never fails the wait.
            Err(_) => return,
        };
        let mut items = list.items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for pod in items {
            let Some(pod_name) = pod.metadata.name.clone() else {
                continue;
            };
            let Some(status) = &pod.status else { continue };
            let started = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
                .filter(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                })
                .map(|c| c.name.clone());
            for container in started.collect::<Vec<_>>() {
                let cursor = (pod_name.clone(), container.clone());
                let last = self.last.get(&cursor).copied();
                let params = LogParams {
                    container: Some(container.clone()),
                    timestamps: true,
                    // Whole seconds, rounded down: the server filters by second, and
                    // lines up to `last` are skipped below.
                    since_time: last.and_then(|t| Timestamp::from_second(t.as_second()).ok()),
                    ..LogParams::default()
                };
                let text = match pods.logs(&pod_name, &params).await {
                    Ok(text) => text,
                    // No `pods/log` here (or not for this role): no logs at all.
                    Err(kube::Error::Api(status))
                        if status.code == 403
                            || (status.code == 404
                                && status
                                    .message
                                    .contains("could not find the requested resource")) =>
                    {
                        self.unavailable = true;
                        return;
                    }
                    Err(_) => continue,
                };
                for line in text.lines() {
                    let (stamp, rest) = line.split_once(' ').unwrap_or((line, ""));
                    let Ok(stamp) = stamp.parse::<Timestamp>() else {
                        on_log(&format!("[{pod_name}/{container}] {line}"));
                        continue;
                    };
                    if last.is_some_and(|l| stamp <= l) {
                        continue;
                    }
                    on_log(&format!("[{pod_name}/{container}] {rest}"));
                    self.last.insert(cursor.clone(), stamp);
                }
            }
        }
    }
}

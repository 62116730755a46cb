//! Waiting for Jobs to finish and Deployments to be available: polling (backing off
//! from 100 ms to the poll interval) and reading their status conditions.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::connect::Cluster;
use super::discovery::api_for;
use super::error::request_error;
use super::logs::LogCursor;
use super::observe::get;
use super::{Clusters, Error, Result};
use crate::backend::kubernetes::ObjectKey;

/// How [`Clusters::wait_job`] waits for a run's Job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobWait {
    /// The longest the whole wait may take (queued, scheduling and running).
    pub timeout: Duration,
    /// Once the Job is admitted (not suspended), how long its pods may take to all be
    /// running. Past it the Job is stopped and the wait fails with the reasons the
    /// cluster gives (the pods' scheduling conditions, the warning events): a gang
    /// that cannot start whole holds no GPUs for hours.
    pub schedule_timeout: Duration,
    /// The job's own `timeout`, counted from when every pod has started a container
    /// (read from the pods' container states: an input's download runs first, as an
    /// init container, and a pod need not be Ready to train): at that moment the Job's `activeDeadlineSeconds` is
    /// set to the time it has been active plus this, so time spent Pending never counts.
    pub run_timeout: Option<Duration>,
}

impl JobWait {
    /// A wait of at most `timeout` in all, with no scheduling bound of its own and no
    /// deadline to set.
    pub fn at_most(timeout: Duration) -> JobWait {
        JobWait {
            timeout,
            schedule_timeout: Duration::MAX,
            run_timeout: None,
        }
    }
}

/// The field manager of the deadline Cairn sets on a running Job: not `cairn`, so the
/// templates' fields and this one are owned apart.
const DEADLINE_MANAGER: &str = "cairn-deadline";

impl Clusters {
    /// Waits until a Job completes: its `Complete` condition is true, or `succeeded`
    /// reaches `completions`. A `Failed` condition is an error carrying its reason and
    /// message; so is running out of `wait.timeout`. A suspended Job (queued, Kueue
    /// admits it by resuming it) only waits. Once admitted, its pods must all run
    /// within `wait.schedule_timeout`, else the Job is stopped and the error says why
    /// they did not; once they run, its deadline is set from `wait.run_timeout`.
    /// Meanwhile passes each new log line of the Job's pods to `on_log`, as
    /// `[<pod>/<container>] <line>`, and says once when the Job is queued.
    pub async fn wait_job(
        &self,
        key: &ObjectKey,
        wait: &JobWait,
        on_log: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        let cluster = self.cluster(key.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &key.context, "batch/v1", "Job")
            .await?;
        let api = api_for(&cluster, &resolved, key.namespace.as_deref(), key)?;
        let mut logs = LogCursor::default();
        let start = Instant::now();
        let timeout = wait.timeout;
        // When the Job was first seen admitted, and whether its deadline is set.
        let mut admitted: Option<Instant> = None;
        let mut deadline_set = false;
        let mut said_queued = false;
        loop {
            let Some(job) = get(&api, &cluster, key).await? else {
                return Err(Error::Gone {
                    object: Box::new(key.clone()),
                });
            };
            let state = job_state(&job);
            if state != JobState::Running {
                logs.pump(&cluster, key, on_log).await;
            }
            match state {
                JobState::Succeeded => return Ok(()),
                JobState::Failed { reason, message } => {
                    return Err(Error::JobFailed {
                        job: Box::new(key.clone()),
                        reason,
                        message,
                    })
                }
                JobState::Running => {}
            }
            if job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
                // Queued (or preempted: a resumed Job starts its clock again).
                admitted = None;
                deadline_set = false;
                if !said_queued {
                    said_queued = true;
                    on_log(&queued_line(&job));
                }
            } else {
                let since = *admitted.get_or_insert_with(Instant::now);
                let wanted = pods_wanted(&job);
                // Ready pods have started; so have pods still in their init containers
                // (the inputs' downloads) or not ready, which only the pods tell.
                let ready = counter(&job, "ready") + counter(&job, "succeeded");
                let running = super::scheduling::started_pods(&cluster, key)
                    .await
                    .unwrap_or(0)
                    .max(ready);
                if running >= wanted {
                    if let (Some(run), false) = (wait.run_timeout, deadline_set) {
                        let active = active_for(&job).unwrap_or_else(|| since.elapsed());
                        set_deadline(&cluster, &api, key, active + run).await?;
                        deadline_set = true;
                    }
                } else if !deadline_set && since.elapsed() >= wait.schedule_timeout {
                    let reasons = super::scheduling::unscheduled_reasons(&cluster, key).await;
                    // Stop it: past its deadline the job controller ends its pods, and
                    // the Job stays to be looked at (`kubectl describe`).
                    let active = active_for(&job).unwrap_or_else(|| since.elapsed());
                    set_deadline(&cluster, &api, key, active).await?;
                    return Err(Error::NotScheduled {
                        job: Box::new(key.clone()),
                        waited: wait.schedule_timeout,
                        running,
                        wanted,
                        reasons,
                    });
                }
            }
            logs.pump(&cluster, key, on_log).await;
            if start.elapsed() >= timeout {
                // Nobody waits for it any more: stop it rather than leave it running
                // (best effort: the timeout is the error either way).
                if let Some(active) = active_for(&job) {
                    let _ = set_deadline(&cluster, &api, key, active).await;
                }
                return Err(Error::Timeout {
                    what: key.to_string(),
                    waited: timeout,
                    state: job_progress(&job),
                });
            }
            tokio::time::sleep(
                self.backoff(start.elapsed())
                    .min(timeout.saturating_sub(start.elapsed())),
            )
            .await;
        }
    }

    /// Waits until a Deployment is available: the controller has seen its latest
    /// generation, `availableReplicas` reaches `replicas` and the `Available` condition
    /// is true. A `Progressing` condition that is false (the progress deadline passed)
    /// ends the wait early with an error; so does `timeout`. Errors say how many
    /// replicas are ready.
    pub async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<()> {
        let cluster = self.cluster(key.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &key.context, "apps/v1", "Deployment")
            .await?;
        let api = api_for(&cluster, &resolved, key.namespace.as_deref(), key)?;
        let start = Instant::now();
        loop {
            let Some(deployment) = get(&api, &cluster, key).await? else {
                return Err(Error::Gone {
                    object: Box::new(key.clone()),
                });
            };
            let n = |p: &str| deployment.pointer(p).and_then(Value::as_i64);
            let generation = n("/metadata/generation").unwrap_or(0);
            let observed = n("/status/observedGeneration").unwrap_or(0);
            let replicas = n("/spec/replicas").unwrap_or(1);
            let available = n("/status/availableReplicas").unwrap_or(0);
            let ready = n("/status/readyReplicas").unwrap_or(0);
            let updated = n("/status/updatedReplicas").unwrap_or(0);
            let available_condition = condition(&deployment, "Available");
            if observed >= generation
                && available >= replicas
                && updated >= replicas
                && available_condition.is_some_and(|c| c.status == "True")
            {
                return Ok(());
            }
            let state = format!(
                "{ready} of {replicas} replicas ready, {available} available, {updated} updated"
            );
            if let Some(progressing) = condition(&deployment, "Progressing") {
                if progressing.status == "False" && observed >= generation {
                    return Err(Error::NotProgressing {
                        object: Box::new(key.clone()),
                        reason: progressing.reason,
                        message: progressing.message,
                        state,
                    });
                }
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("{key} to be available"),
                    waited: timeout,
                    state,
                });
            }
            tokio::time::sleep(
                self.backoff(start.elapsed())
                    .min(timeout.saturating_sub(start.elapsed())),
            )
            .await;
        }
    }
}

/// One condition of an object's status.
struct Condition {
    status: String,
    reason: String,
    message: String,
}

fn condition(object: &Value, kind: &str) -> Option<Condition> {
    let c = object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?;
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(Condition {
        status: s("status"),
        reason: s("reason"),
        message: s("message"),
    })
}

#[derive(Debug, PartialEq)]
enum JobState {
    Running,
    Succeeded,
    Failed { reason: String, message: String },
}

fn job_state(job: &Value) -> JobState {
    if let Some(failed) = condition(job, "Failed").filter(|c| c.status == "True") {
        return JobState::Failed {
            reason: failed.reason,
            message: failed.message,
        };
    }
    if condition(job, "Complete").is_some_and(|c| c.status == "True") {
        return JobState::Succeeded;
    }
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let succeeded = job
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if succeeded >= completions {
        return JobState::Succeeded;
    }
    JobState::Running
}

fn job_progress(job: &Value) -> String {
    let n = |k: &str| {
        job.pointer(&format!("/status/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    format!(
        "{} of {completions} completions succeeded, {} active, {} failed",
        n("succeeded"),
        n("active"),
        n("failed")
    )
}

/// How many pods must run at once: `parallelism` (1 when unset).
fn pods_wanted(job: &Value) -> i64 {
    job.pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(1)
}

fn counter(job: &Value, name: &str) -> i64 {
    job.pointer(&format!("/status/{name}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// How long the Job has been active, from its `status.startTime` (the clock
/// `activeDeadlineSeconds` counts on).
fn active_for(job: &Value) -> Option<Duration> {
    let started: k8s_openapi::jiff::Timestamp =
        job.pointer("/status/startTime")?.as_str()?.parse().ok()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    Some(Duration::from_secs(
        u64::try_from(now.as_second() - started.as_second()).unwrap_or(0),
    ))
}

/// Sets the Job's `activeDeadlineSeconds` (whole seconds, at least 1).
async fn set_deadline(
    cluster: &Cluster,
    api: &kube::Api<kube::api::DynamicObject>,
    key: &ObjectKey,
    deadline: Duration,
) -> Result<()> {
    let seconds = deadline.as_secs().max(1) + u64::from(deadline.subsec_nanos() > 0);
    let patch = serde_json::json!({"spec": {"activeDeadlineSeconds": seconds}});
    let params = kube::api::PatchParams {
        field_manager: Some(DEADLINE_MANAGER.into()),
        ..Default::default()
    }
    .validation_strict();
    api.patch(&key.name, &params, &kube::api::Patch::Merge(&patch))
        .await
        .map_err(|e| request_error(cluster, "set the deadline of", key.to_string(), e))?;
    Ok(())
}

/// What a suspended Job waits for.
fn queued_line(job: &Value) -> String {
    let pods = pods_wanted(job);
    let all = if pods == 1 {
        "its pod".to_string()
    } else {
        format!("all {pods} pods at once")
    };
    match job
        .pointer("/metadata/labels/kueue.x-k8s.io~1queue-name")
        .and_then(Value::as_str)
    {
        Some(queue) => format!("queued in `{queue}`: waiting for Kueue to admit {all}"),
        None => format!("the Job is suspended: waiting for it to be resumed to start {all}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states() {
        use serde_json::json;
        assert_eq!(job_state(&json!({"spec": {}})), JobState::Running);
        assert_eq!(
            job_state(&json!({"spec": {"completions": 2}, "status": {"succeeded": 2}})),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&json!({"status": {"conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}]}})),
            JobState::Failed {
                reason: "DeadlineExceeded".into(),
                message: "too slow".into()
            }
        );
    }
}

//! Waiting for Jobs to finish and Deployments to be available: polling (backing off
//! from 100 ms to the poll interval) and reading their status conditions.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::discovery::api_for;
use super::logs::LogCursor;
use super::observe::get;
use super::{Clusters, Error, Result};
use crate::backend::kubernetes::ObjectKey;

impl Clusters {
    /// Waits until a Job completes: its `Complete` condition is true, or `succeeded`
    /// reaches `completions`. A `Failed` condition is an error carrying its reason and
    /// message; so is running out of `timeout`. Meanwhile passes each new log line of
    /// the Job's pods to `on_log`, as `[<pod>/<container>] <line>`.
    pub async fn wait_job(
        &self,
        key: &ObjectKey,
        timeout: Duration,
        on_log: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        let cluster = self.cluster(key.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &key.context, "batch/v1", "Job")
            .await?;
        let api = api_for(&cluster, &resolved, key.namespace.as_deref(), key)?;
        let mut logs = LogCursor::default();
        let start = Instant::now();
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
            logs.pump(&cluster, key, on_log).await;
            if start.elapsed() >= timeout {
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

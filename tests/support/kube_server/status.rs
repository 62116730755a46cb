//! The status controls: what the controllers this server does not run would write (a
//! Job that succeeds or fails, a Deployment that becomes available, any status).

use serde_json::{json, Value};

use super::path::Target;
use super::state::now;
use super::writes::Writer;
use super::{KubeServer, CONTROLLER};

impl KubeServer {
    /// Replaces an object's `status` as a controller would (an update of the `status`
    /// subresource by [`CONTROLLER`]); returns the object.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Value {
        let res = self
            .shared
            .lock()
            .find_kind(api_version, kind)
            .expect("a kind the server serves");
        let target = Target::Object {
            res,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            status: true,
        };
        self.shared
            .update_with(&target, &Writer::test(CONTROLLER), |old| {
                let mut new = old.clone();
                new["status"] = status;
                Ok(new)
            })
            .unwrap_or_else(|e| panic!("set status: {}", e.message))
    }

    /// Marks a Job complete as the job controller does: one pod succeeded.
    pub fn job_succeeded(&self, namespace: &str, name: &str) -> Value {
        let now = now();
        self.set_status(
            "batch/v1",
            "Job",
            Some(namespace),
            name,
            json!({
                "startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
                "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                ],
            }),
        )
    }

    /// Marks a Job failed as the job controller does when its pods run out of retries.
    pub fn job_failed(&self, namespace: &str, name: &str) -> Value {
        let failed = self
            .object("batch/v1", "Job", Some(namespace), name)
            .and_then(|j| j["spec"]["backoffLimit"].as_u64())
            .unwrap_or(6)
            + 1;
        self.job_failed_with(
            namespace,
            name,
            failed,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        )
    }

    /// A failed Job's status: `failed` pods, and its `FailureTarget` and `Failed`
    /// conditions with `reason` and `message`.
    pub fn job_failed_with(
        &self,
        namespace: &str,
        name: &str,
        failed: u64,
        reason: &str,
        message: &str,
    ) -> Value {
        let now = now();
        let condition = |kind: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": message,
                   "lastProbeTime": now, "lastTransitionTime": now})
        };
        self.set_status(
            "batch/v1",
            "Job",
            Some(namespace),
            name,
            json!({
                "startTime": now, "failed": failed, "active": 0, "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [condition("FailureTarget"), condition("Failed")],
            }),
        )
    }

    /// Marks a Job's pods started as the job controller does: `startTime` (kept from an
    /// earlier call), `active` pods and how many of them are `ready`.
    pub fn job_running(&self, namespace: &str, name: &str, active: u64, ready: u64) -> Value {
        let job = self
            .object("batch/v1", "Job", Some(namespace), name)
            .unwrap_or_else(|| panic!("no job {namespace}/{name}"));
        let start = job["status"]["startTime"]
            .as_str()
            .map_or_else(now, str::to_string);
        self.set_status(
            "batch/v1",
            "Job",
            Some(namespace),
            name,
            json!({
                "startTime": start, "active": active, "ready": ready, "terminating": 0,
                "uncountedTerminatedPods": {},
            }),
        )
    }

    /// Marks a Job failed by its `podFailurePolicy` (a `FailJob` rule matched a
    /// container's exit code), as the job controller does.
    pub fn job_failed_by_policy(
        &self,
        namespace: &str,
        name: &str,
        pod: &str,
        container: &str,
        exit_code: i32,
        rule: usize,
    ) -> Value {
        let message = format!(
            "Container {container} for pod {namespace}/{pod} failed with exit code {exit_code} matching FailJob rule at index {rule}"
        );
        self.job_failed_with(namespace, name, 1, "PodFailurePolicy", &message)
    }

    /// Marks a Deployment rolled out and available at its generation, every replica
    /// (`spec.replicas`, 1 when unset) ready, as the deployment controller does.
    pub fn deployment_available(&self, namespace: &str, name: &str) -> Value {
        let now = now();
        let deployment = self
            .object("apps/v1", "Deployment", Some(namespace), name)
            .unwrap_or_else(|| panic!("no deployment {namespace}/{name}"));
        let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
        self.set_status(
            "apps/v1",
            "Deployment",
            Some(namespace),
            name,
            json!({
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability.",
                     "lastUpdateTime": now, "lastTransitionTime": now},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                     "message": format!("ReplicaSet \"{name}\" has successfully progressed."),
                     "lastUpdateTime": now, "lastTransitionTime": now},
                ],
            }),
        )
    }
}

//! Where a Kubernetes run's outputs wait to be uploaded: a PersistentVolumeClaim that
//! outlives the training pods, and the Job that uploads from it once they have ended.
//!
//! A pod keeps the GPUs it requests booked until it ends, whatever its containers are
//! doing, so an upload in the training pod holds every GPU of the run for as long as
//! it takes. Writing the outputs to a claim and uploading them from a second pod, one
//! without GPUs, frees them as soon as training ends.
//!
//! With several instances every pod mounts the claim (so it must be `ReadWriteMany`),
//! each under its own rank; the upload reads instance 0's, the one the
//! distributed-training contract says stores the outputs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::manifest::{ComputeSpec, JobSpec};

/// A run's outputs volume when its job names no `outputs_size`.
pub const DEFAULT_OUTPUTS_SIZE: &str = "10Gi";

/// How long the upload Job may run before the cluster stops it.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The name of the Job uploading run `job_object`'s outputs.
pub fn upload_job_name(job_object: &str) -> String {
    format!("{job_object}-upload")
}

/// The name of the claim run `job_object` writes its outputs to.
pub fn claim_name(job_object: &str) -> String {
    format!("{job_object}-outputs")
}

/// The templates' `job.outputs_volume` and `job.upload` for the run whose Job is
/// `job_object`; both null for a job without outputs (nothing to upload).
pub(super) fn vars(
    job_object: &str,
    spec: &JobSpec,
    compute: &ComputeSpec,
    upload_pod_labels: BTreeMap<&str, &str>,
) -> (Value, Value) {
    if spec.outputs.is_empty() {
        return (Value::Null, Value::Null);
    }
    let volume = json!({
        "claim": claim_name(job_object),
        "size": spec
            .outputs_size
            .as_ref()
            .map_or(DEFAULT_OUTPUTS_SIZE, |q| q.get_ref().as_str()),
        "access_mode": if spec.instances() > 1 { "ReadWriteMany" } else { "ReadWriteOnce" },
        "storage_class": compute.storage_class.as_ref().map(|c| c.get_ref()),
    });
    let upload = json!({
        "name": upload_job_name(job_object),
        "timeout_seconds": UPLOAD_TIMEOUT.as_secs(),
        "pod_labels": upload_pod_labels,
        // Reading files and sending them: a fraction of a core, memory for buffers.
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
    });
    (volume, upload)
}

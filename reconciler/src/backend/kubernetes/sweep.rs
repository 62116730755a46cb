//! A sweep on Kubernetes: each trial's objects (rendered at plan time, labelled with the
//! trial's run) are its own Job, outputs volume and upload Job. The trials' volumes and
//! headless Services are applied with the change's other objects; each trial's Job is
//! started when a slot of the sweep's `parallel` is free, waited for and recorded as any
//! run ([`crate::backend::sweep`] runs them and keeps the best).

use serde_json::Value;

use super::compute::KubeCompute;
use super::execute::{apply_objects, is_claim, is_upload_job, RunObjects};
use super::objects::LABEL_RUN;
use super::ClusterApi;
use crate::backend::job::str_field;
use crate::backend::sweep::{self, PlannedSweep};
use crate::backend::target::{ApplyContext, ChangeError};
use crate::plan::{ObjectChange, ResourceChange};

/// The run an object of a job belongs to (its `cairn.dev/run` label).
fn run_of(object: &ObjectChange) -> Option<&str> {
    object
        .object
        .as_ref()?
        .pointer("/metadata/labels")?
        .get(LABEL_RUN)?
        .as_str()
}

impl KubeCompute {
    /// Runs `sweep`, the planned sweep of `change`.
    pub(super) async fn sweep(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
        kube: &dyn ClusterApi,
        sweep: &PlannedSweep,
    ) -> Result<String, ChangeError> {
        let after = change
            .after
            .as_ref()
            .ok_or_else(|| ChangeError::Plan("the plan has no value for this job".into()))?;
        sweep::run(cx, change, after, sweep, |_, trial: Value| async move {
            let run_id = str_field(&trial, "run_id")?;
            let objects: Vec<&ObjectChange> = change
                .objects
                .iter()
                .filter(|o| run_of(o) == Some(run_id.as_str()))
                .collect();
            let job = objects
                .iter()
                .find(|o| o.kind == "Job" && !is_upload_job(o))
                .ok_or_else(|| format!("the plan has no Job for trial {run_id}"))?;
            apply_objects(kube, &[job]).await?;
            let run = RunObjects {
                after: &trial,
                job,
                upload: objects.iter().copied().find(|o| is_upload_job(o)),
                claims: objects.iter().copied().filter(|o| is_claim(o)).collect(),
            };
            self.wait_job(cx, change, kube, &run).await
        })
        .await
    }
}

//! Carrying out a change on Kubernetes: its objects applied in waves (workloads first,
//! waited for until available; a planned run's Job waited for until it finishes and its
//! outputs are in the store), its traffic moved by the rollout engine
//! ([`super::rollout`]), then the objects no longer desired deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::JobWait;
use super::compute::KubeCompute;
use super::objects::{ANNOTATION_GENERATED_KEY, COMPONENT_UPLOAD, LABEL_COMPONENT};
use super::outputs_volume::UPLOAD_TIMEOUT;
use super::plan::ObjectChangeExt as _;
use super::rollout::{failed, kube_route};
use super::{ClusterApi, ClusterError, KubeObject, ObjectKey};
use crate::address::Kind;
use crate::artifacts::{VersionKind, VersionRef};
use crate::backend::job::{PlannedJob, DEFAULT_SCHEDULE_TIMEOUT};
use crate::backend::store::{now_rfc3339, RunRecord, RunStatus, Store};
use crate::backend::sweep::PlannedSweep;
use crate::backend::target::{Applied, ApplyContext, ChangeError, Failure};
use crate::diagnostics::error_chain;
use crate::plan::{plural, Action, ObjectChange, ResourceChange};

/// How long a Deployment may take to become available.
const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a run's Job may take when its job declares no timeout.
const JOB_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Added to a declared timeout and the scheduling wait, for image pulls.
const JOB_START_SLACK: Duration = Duration::from_secs(600);

/// Whether apply generates this Secret's key (the shipped `secret.yaml.j2` marks it).
fn generates_key(object: &ObjectChange) -> bool {
    object
        .object
        .as_ref()
        .and_then(|o| o.pointer("/metadata/annotations"))
        .and_then(|a| a.get(ANNOTATION_GENERATED_KEY))
        .is_some()
}

/// Whether this is the Job that uploads a run's outputs (its pods are the `upload`
/// component).
pub(super) fn is_upload_job(object: &ObjectChange) -> bool {
    object.kind == "Job"
        && object
            .object
            .as_ref()
            .and_then(|o| o.pointer("/spec/template/metadata/labels"))
            .and_then(|l| l.get(LABEL_COMPONENT))
            .and_then(Value::as_str)
            == Some(COMPONENT_UPLOAD)
}

impl KubeCompute {
    /// A change on Kubernetes: its objects applied in order (a Job's run waited for,
    /// Deployments waited for until available before Services and routes move traffic
    /// to them), then the objects no longer desired deleted. An endpoint whose traffic
    /// moves is rolled out by the rollout engine on its HTTPRoute or Service between
    /// the two.
    pub(super) async fn execute(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
    ) -> Result<Applied, Failure> {
        let mut applied = 0;
        let mut deleted = 0;
        let mut kept: Vec<String> = Vec::new();
        let mut events = Vec::new();
        let mut summary = None;
        if !change.objects.is_empty() {
            let kube = self.api().ok_or_else(|| {
                ChangeError::Unsupported(
                    "this plan changes Kubernetes objects, but this apply has no cluster connection"
                        .into(),
                )
            })?;
            let (deletes, upserts): (Vec<&ObjectChange>, Vec<&ObjectChange>) = change
                .objects
                .iter()
                .partition(|o| o.action == Action::Delete);
            // Deployments first, then what routes traffic to them once they are ready. A
            // run's upload Job is applied by the wait for its training Job, once that
            // has succeeded.
            let (workloads, mut rest): (Vec<&ObjectChange>, Vec<&ObjectChange>) = upserts
                .into_iter()
                .filter(|o| !is_upload_job(o))
                .partition(|o| matches!(o.kind.as_str(), "Deployment" | "Job"));
            // A run's headless Service is how its pods find each other, and its
            // outputs volume where they write: both exist before the Job's pods start.
            if change.kind == Kind::Job {
                applied += self
                    .apply_batch(cx, change, kube, &rest)
                    .await
                    .map_err(ChangeError::Failed)?;
                rest.clear();
            }
            // An endpoint's key is in place before its pods mount it.
            let (secrets, others): (Vec<&ObjectChange>, Vec<&ObjectChange>) =
                rest.into_iter().partition(|o| o.kind == "Secret");
            rest = others;
            if !secrets.is_empty() {
                applied += self
                    .apply_batch(cx, change, kube, &secrets)
                    .await
                    .map_err(ChangeError::Failed)?;
                for secret in secrets.iter().filter(|o| generates_key(o)) {
                    let created = kube
                        .fill_key(&secret.key())
                        .await
                        .map_err(|e| ChangeError::Failed(failed(&secret.describe(), e)))?;
                    if created {
                        cx.events.note(
                            &change.address,
                            &format!(
                                "generated the endpoint's key in {} (read it with `kubectl get secret {} -n {} -o jsonpath='{{.data.key}}' | base64 -d`)",
                                secret.describe(),
                                secret.name,
                                secret.namespace.as_deref().unwrap_or("default"),
                            ),
                        );
                    }
                }
            }
            let sweep = match (change.kind, change.action(), &change.after) {
                (Kind::Job, Action::Run, Some(after)) => {
                    PlannedSweep::parse(after).map_err(ChangeError::Plan)?
                }
                _ => None,
            };
            match sweep {
                // Its trials' Jobs start `parallel` at a time, each waited for.
                Some(sweep) => {
                    summary = Some(self.sweep(cx, change, kube, &sweep).await?);
                    applied += workloads
                        .iter()
                        .filter(|o| o.action != Action::NoOp)
                        .count();
                }
                None => {
                    applied += self
                        .apply_batch(cx, change, kube, &workloads)
                        .await
                        .map_err(ChangeError::Failed)?
                }
            }
            // A new autoscaled revision starts as scaled as the one it replaces.
            for scale in super::scale::initial_scales(change, kube).await {
                cx.events.note(
                    &change.address,
                    &format!(
                        "starting {} with {} replicas, as many as the revision it replaces runs",
                        scale.describe, scale.replicas
                    ),
                );
                kube.set_replicas(&scale.deployment, scale.replicas)
                    .await
                    .map_err(|e| ChangeError::Failed(failed(&scale.describe, e)))?;
                kube.wait_available(&scale.deployment, DEPLOYMENT_TIMEOUT)
                    .await
                    .map_err(|e| ChangeError::Failed(failed(&scale.describe, e)))?;
            }
            let moving = match change.rollout {
                Some(_) if change.kind == Kind::Endpoint => {
                    kube_route(change, kube, &rest, &deletes)
                        .await
                        .map_err(ChangeError::Target)?
                }
                _ => None,
            };
            match moving {
                None => {
                    applied += self
                        .apply_batch(cx, change, kube, &rest)
                        .await
                        .map_err(ChangeError::Failed)?
                }
                Some(moving) => {
                    let (route, others): (Vec<&ObjectChange>, Vec<&ObjectChange>) =
                        rest.into_iter().partition(|o| o.key() == moving.route_key);
                    applied += self
                        .apply_batch(cx, change, kube, &others)
                        .await
                        .map_err(ChangeError::Failed)?;
                    match self
                        .kube_rollout(cx, change, kube, moving, &mut events)
                        .await
                    {
                        Ok(done) => summary = Some(done),
                        Err(message) => {
                            return Err(Failure {
                                error: ChangeError::Failed(message),
                                events,
                            })
                        }
                    }
                    applied += self
                        .apply_batch(cx, change, kube, &route)
                        .await
                        .map_err(ChangeError::Failed)?;
                }
            }
            if !deletes.is_empty() {
                let objects: Vec<(ObjectKey, String)> = deletes
                    .iter()
                    .map(|o| (o.key(), o.api_version.clone()))
                    .collect();
                let pruned = kube
                    .delete(&change.workspace, &objects)
                    .await
                    .map_err(|e| ChangeError::Target(failed("deleting objects", e)))?;
                deleted = pruned.deleted.len();
                for (key, reason) in &pruned.kept {
                    let line = format!("kept {key}: {reason}");
                    cx.events.note(&change.address, &line);
                    kept.push(line);
                }
            }
        }
        let value = if change.action() == Action::Delete {
            None
        } else {
            change.after.clone()
        };
        let objects = match (applied, deleted) {
            (0, 0) => None,
            (a, 0) => Some(format!("applied {}", plural(a, "Kubernetes object"))),
            (0, d) => Some(format!("deleted {}", plural(d, "Kubernetes object"))),
            // Two or more objects.
            (a, d) => Some(format!("applied {a} and deleted {d} Kubernetes objects")),
        };
        let mut message = match (summary, objects) {
            (Some(s), Some(o)) => Some(format!("{s}; {o}")),
            (s, o) => s.or(o),
        };
        if !kept.is_empty() {
            let kept = kept.join("; ");
            message = Some(message.map_or(kept.clone(), |m| format!("{m}; {kept}")));
        }
        Ok(Applied {
            value,
            message,
            events,
        })
    }

    /// Applies one batch of a change's objects, then waits for its Deployments to be
    /// available and a planned run's Job to finish. Returns how many it changed.
    async fn apply_batch(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
        kube: &dyn ClusterApi,
        batch: &[&ObjectChange],
    ) -> Result<usize, String> {
        apply_objects(kube, batch).await?;
        // An endpoint's Deployments come up together; the first that fails says why.
        let deployments: Vec<_> = batch
            .iter()
            .filter(|o| o.kind == "Deployment")
            .map(|o| {
                cx.events.note(
                    &change.address,
                    &format!("waiting for {} to be available", o.describe()),
                );
                async move {
                    kube.wait_available(&o.key(), DEPLOYMENT_TIMEOUT)
                        .await
                        .map_err(|e| failed(&o.describe(), e))
                }
            })
            .collect();
        futures::future::try_join_all(deployments).await?;
        if change.action() == Action::Run {
            let after = change
                .after
                .as_ref()
                .ok_or("the plan has no value for this job")?;
            for o in batch.iter().filter(|o| o.kind == "Job") {
                let run = RunObjects {
                    after,
                    job: o,
                    upload: change.objects.iter().find(|o| is_upload_job(o)),
                    claims: change.objects.iter().filter(|o| is_claim(o)).collect(),
                };
                self.wait_job(cx, change, kube, &run).await?;
            }
        }
        Ok(batch.iter().filter(|o| o.action != Action::NoOp).count())
    }

    /// Waits for a run's Job, then checks the pod stored its outputs and records the
    /// run in the store.
    pub(super) async fn wait_job(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
        kube: &dyn ClusterApi,
        run: &RunObjects<'_>,
    ) -> Result<(), String> {
        let store = cx.store;
        let RunObjects {
            after,
            job,
            upload,
            claims,
        } = run;
        let PlannedJob {
            run_id,
            inputs,
            outputs,
            retries,
            timeout,
            schedule_timeout,
        } = PlannedJob::parse(after)?;
        let schedule_timeout = schedule_timeout.unwrap_or(DEFAULT_SCHEDULE_TIMEOUT);
        // The cluster bounds each attempt (its deadline, the scheduling wait); apply's
        // own bound is for a cluster that does neither. Time queued counts here only.
        let wait = JobWait {
            timeout: timeout
                .map_or(JOB_TIMEOUT, |t| t + schedule_timeout + JOB_START_SLACK)
                .max(JOB_TIMEOUT),
            schedule_timeout,
            run_timeout: timeout,
        };
        cx.events.note(
            &change.address,
            &format!("waiting for {} (run {run_id})", job.describe()),
        );
        let started_at = now_rfc3339();
        let t = Instant::now();
        let address = change.address.clone();
        let events = cx.events;
        // Shown as they come, and kept (bounded) for `cairn logs`.
        let kept = std::sync::Arc::new(std::sync::Mutex::new(KeptLog::default()));
        let mut on_log = {
            let kept = kept.clone();
            move |line: &str| {
                events.note(&address, &format!("│ {line}"));
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        };
        let mut logs = Vec::new();
        let mut keep = |key: String| {
            let text = std::mem::take(&mut *kept.lock().unwrap_or_else(|e| e.into_inner()));
            logs.push(key.clone());
            async move {
                // A log that can't be stored costs the log, not the run.
                let _ = store.put_log(&key, text.finish()).await;
            }
        };
        // One Job per attempt: a failed one is replaced by a new one, every instance
        // together, up to `retries` times.
        let mut attempts = 1;
        let waited = loop {
            let waited = kube.wait_job(&job.key(), &wait, &mut on_log).await;
            keep(Store::run_log_key(&change.name, &run_id, attempts)).await;
            match waited {
                Err(e @ (ClusterError::JobFailed { .. } | ClusterError::NotScheduled { .. }))
                    if attempts <= retries =>
                {
                    cx.events.note(
                        &change.address,
                        &format!(
                            "attempt {attempts} of {} failed ({e}); running it again",
                            retries + 1
                        ),
                    );
                    let object = job
                        .desired()
                        .ok_or("the plan has no object for this job's Job")?;
                    kube.apply(&[object], false, &BTreeSet::from([job.key()]))
                        .await
                        .map_err(|e| failed("starting the job again", e))?;
                    attempts += 1;
                }
                other => break other,
            }
        };
        let mut error = waited.err().map(|e| error_chain(&e));
        // The training pods have ended (their GPUs are free): the outputs they left on
        // the run's volume are uploaded by a pod of their own, then the volume goes.
        if let (None, Some(upload)) = (&error, upload) {
            error = self
                .upload(cx, change, kube, upload, &mut on_log)
                .await
                .err();
            keep(format!("runs/{}/{run_id}/upload.log", change.name)).await;
        }
        let claims: Vec<(ObjectKey, String)> = claims
            .iter()
            .map(|o| (o.key(), o.api_version.clone()))
            .collect();
        if !claims.is_empty() {
            // Kept when the delete fails: the next plan prunes it.
            if let Err(e) = kube.delete(&change.workspace, &claims).await {
                cx.events.note(
                    &change.address,
                    &format!(
                        "the run's outputs volume was not deleted ({}); the next apply prunes it",
                        error_chain(&e)
                    ),
                );
            }
        }
        let mut produced = BTreeMap::new();
        let mut metrics = None;
        if error.is_none() {
            for (name, reference) in &outputs {
                let stored = match VersionRef::parse(reference) {
                    Ok(VersionRef {
                        kind: VersionKind::Model,
                        name: model,
                        ..
                    }) => match store.model_version(&model, &run_id).await {
                        Ok(Some(record)) => {
                            metrics = metrics.or(record.metrics);
                            Ok(Some(()))
                        }
                        other => other.map(|_| None),
                    },
                    Ok(VersionRef { name: dataset, .. }) => store
                        .has_dataset_version(&dataset, &run_id)
                        .await
                        .map(|present| present.then_some(())),
                    Err(e) => {
                        error = Some(error_chain(&e));
                        break;
                    }
                };
                match stored {
                    Ok(Some(())) => {
                        produced.insert(name.clone(), reference.clone());
                    }
                    Ok(None) => {
                        let what = reference.split('@').next().unwrap_or(reference);
                        error = Some(format!(
                            "{} succeeded but {what}@{run_id} is not in the store: `cairn upload` did not store it",
                            upload.unwrap_or(job).describe()
                        ));
                        break;
                    }
                    Err(e) => {
                        error = Some(error_chain(&e));
                        break;
                    }
                }
            }
        }
        let record = RunRecord {
            job: change.name.clone(),
            run_id: run_id.clone(),
            status: if error.is_none() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            attempts,
            started_at,
            finished_at: now_rfc3339(),
            duration_ms: t.elapsed().as_millis() as u64,
            exit_code: None,
            inputs,
            outputs: produced,
            metrics,
            logs,
            error: error.clone(),
            commit: cx.plan.revision.clone(),
            trials: Vec::new(),
        };
        store.put_run(&record).await.map_err(|e| error_chain(&e))?;
        match error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Starts the Job that uploads a run's outputs from its volume, and waits for it.
    async fn upload(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
        kube: &dyn ClusterApi,
        upload: &ObjectChange,
        on_log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<(), String> {
        let object = upload
            .desired()
            .ok_or("the plan has no object for this run's upload Job")?;
        cx.events.note(
            &change.address,
            &format!("uploading the outputs: {}", upload.describe()),
        );
        kube.apply(&[object], false, &BTreeSet::new())
            .await
            .map_err(|e| failed(&upload.describe(), e))?;
        kube.wait_job(
            &upload.key(),
            &JobWait::at_most(UPLOAD_TIMEOUT + JOB_START_SLACK),
            on_log,
        )
        .await
        .map_err(|e| failed(&upload.describe(), e))
    }
}

/// One run's objects in a change: its Job, the Job uploading its outputs and its
/// outputs volumes, with the run's planned value (a sweep's trial has its own).
pub(super) struct RunObjects<'a> {
    pub after: &'a Value,
    pub job: &'a ObjectChange,
    pub upload: Option<&'a ObjectChange>,
    pub claims: Vec<&'a ObjectChange>,
}

/// Whether this is a run's outputs volume that stays (not one the change deletes).
pub(super) fn is_claim(object: &ObjectChange) -> bool {
    object.kind == "PersistentVolumeClaim" && object.action != Action::Delete
}

/// Applies `batch` as the plan says: replaced objects deleted and created again, drifted
/// ones taken back.
pub(super) async fn apply_objects(
    kube: &dyn ClusterApi,
    batch: &[&ObjectChange],
) -> Result<(), String> {
    let replace: BTreeSet<ObjectKey> = batch
        .iter()
        .filter(|o| o.action == Action::Replace)
        .map(|o| o.key())
        .collect();
    // Objects the plan showed drifting are taken back from whoever changed them
    // (the plan was approved); others are applied without force, so an edit made
    // since the plan is a conflict, not silently overwritten.
    for force in [false, true] {
        let objects: Vec<KubeObject> = batch
            .iter()
            .filter(|o| (o.action == Action::Update) == force)
            .filter_map(|o| o.desired())
            .collect();
        if !objects.is_empty() {
            kube.apply(&objects, force, &replace)
                .await
                .map_err(|e| failed("applying objects", e))?;
        }
    }
    Ok(())
}

/// The most of one attempt's log kept for `cairn logs` (its pods' lines as the apply
/// read them); later lines are counted, not kept.
const MAX_KEPT_LOG: usize = 8 << 20;

#[derive(Default)]
struct KeptLog {
    text: String,
    dropped: usize,
}

impl KeptLog {
    fn push(&mut self, line: &str) {
        if self.text.len() + line.len() < MAX_KEPT_LOG {
            self.text.push_str(line);
            self.text.push('\n');
        } else {
            self.dropped += 1;
        }
    }

    fn finish(mut self) -> String {
        if self.dropped > 0 {
            self.text
                .push_str(&format!("[{} more lines not kept]\n", self.dropped));
        }
        self.text
    }
}

//! A job's sweep on this machine: each trial is a run of the job of its own
//! (`<run id>-t<n>`, its command's `{{ params.<name> }}` and `CAIRN_PARAM_<NAME>` set to
//! the trial's values), `parallel` at a time, each stored and recorded as any run (a
//! trial that already succeeded is not run again). The best trial by the sweep's pick
//! then becomes the run itself: its outputs are recorded as the versions named after the
//! sweep's run (the files are the trial's, not copied), with every trial's parameters and
//! metrics in the lineage.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde_json::Value;

use super::compute::LocalCompute;
use crate::artifacts::{VersionKind, VersionRef};
use crate::backend::job::{env_name, str_field, substitute};
use crate::backend::store::{now_rfc3339, ProducedBy, RunRecord, RunStatus, Trial};
use crate::backend::target::{ApplyContext, ChangeError};
use crate::diagnostics::error_chain;
use crate::manifest::sweep::Pick;
use crate::plan::ResourceChange;

impl LocalCompute {
    /// Runs the sweep in `after["sweep"]`; returns what happened, or why no trial could
    /// be kept.
    pub(super) async fn run_sweep(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
        after: &Value,
        sweep: &Value,
    ) -> Result<String, ChangeError> {
        let store = cx.store;
        let run_id = str_field(after, "run_id").map_err(ChangeError::Plan)?;
        let trials: Vec<BTreeMap<String, String>> =
            serde_json::from_value(sweep.get("trials").cloned().unwrap_or_default())
                .map_err(|e| ChangeError::Plan(format!("the sweep's trials are malformed: {e}")))?;
        let pick_text = sweep
            .get("pick")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let pick = Pick::parse(pick_text)
            .ok_or_else(|| ChangeError::Plan(format!("`{pick_text}` is not a pick")))?;
        let parallel = sweep
            .get("parallel")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1) as usize;

        let count = trials.len();
        // Collected first, each future owning its parameters: a lazy iterator of futures
        // borrowing them makes the whole future not `Send` (rustc's higher-ranked closure
        // lifetimes).
        #[allow(clippy::needless_collect)]
        let runs: Vec<_> = trials
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, params)| {
                let trial_id = format!("{run_id}-t{i}");
                let trial_after = trial_value(after, &run_id, &trial_id, &params);
                async move {
                    let done = store
                        .run(&change.name, &trial_id)
                        .await
                        .ok()
                        .flatten()
                        .filter(|r| r.status == RunStatus::Succeeded);
                    let outcome = match done {
                        Some(_) => Ok(()),
                        None => {
                            cx.events.note(
                                &change.address,
                                &format!("trial {} of {count}: {}", i + 1, describe(&params)),
                            );
                            self.run_job(cx, change, &trial_after).await.map(|_| ())
                        }
                    };
                    let record = store.run(&change.name, &trial_id).await.ok().flatten();
                    (i, trial_id, outcome, record)
                }
            })
            .collect();
        let mut finished: Vec<_> = futures::stream::iter(runs)
            .buffer_unordered(parallel)
            .collect()
            .await;
        finished.sort_by_key(|(i, ..)| *i);

        let mut recorded: Vec<Trial> = Vec::new();
        let mut best: Option<(usize, f64)> = None;
        let mut failures = Vec::new();
        for (i, trial_id, outcome, record) in &finished {
            let metrics = record.as_ref().and_then(|r| r.metrics.clone());
            let succeeded = outcome.is_ok();
            if let Err(e) = outcome {
                failures.push(format!("trial {}: {e}", i + 1));
            }
            let score = metrics
                .as_ref()
                .and_then(|m| m.get(&pick.metric))
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite());
            if let (true, Some(score)) = (succeeded, score) {
                if best.is_none_or(|(_, b)| pick.better(score, b)) {
                    best = Some((*i, score));
                }
            }
            recorded.push(Trial {
                run_id: trial_id.clone(),
                params: trials[*i].clone(),
                status: if succeeded {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                },
                metrics,
                picked: false,
            });
        }
        let Some((picked, score)) = best else {
            let why = if failures.len() == trials.len() {
                format!("every trial failed: {}", failures.join("; "))
            } else {
                format!(
                    "no trial that succeeded recorded `{}` in its metrics.json",
                    pick.metric
                )
            };
            return Err(ChangeError::Failed(format!(
                "the sweep kept nothing: {why}"
            )));
        };
        recorded[picked].picked = true;
        let trial = finished[picked].3.clone().ok_or_else(|| {
            ChangeError::Failed("the picked trial's run record is missing".into())
        })?;
        let mut outputs = BTreeMap::new();
        for (name, reference) in &trial.outputs {
            let parsed =
                VersionRef::parse(reference).map_err(|e| ChangeError::Failed(error_chain(&e)))?;
            let kept = VersionRef {
                version: run_id.clone(),
                ..parsed.clone()
            };
            self.keep(cx, &parsed, &kept, &recorded)
                .await
                .map_err(ChangeError::Failed)?;
            outputs.insert(name.clone(), kept.to_string());
        }
        let record = RunRecord {
            run_id: run_id.clone(),
            status: RunStatus::Succeeded,
            started_at: trial.started_at.clone(),
            finished_at: now_rfc3339(),
            outputs,
            trials: recorded,
            ..trial
        };
        store
            .put_run(&record)
            .await
            .map_err(|e| ChangeError::Failed(error_chain(&e)))?;
        let failed = if failures.is_empty() {
            String::new()
        } else {
            format!(" ({} failed)", failures.len())
        };
        Ok(format!(
            "sweep {run_id}: {} trials{failed}, kept trial {} ({}) with {} = {score}",
            trials.len(),
            picked + 1,
            describe(&trials[picked]),
            pick.metric
        ))
    }

    /// Records the picked trial's output `from` as `to` (same files), with the trials in
    /// its lineage.
    async fn keep(
        &self,
        cx: &ApplyContext<'_>,
        from: &VersionRef,
        to: &VersionRef,
        trials: &[Trial],
    ) -> Result<(), String> {
        let store = cx.store;
        let missing = || format!("{from} is not in the store");
        match from.kind {
            VersionKind::Model => {
                let mut record = store
                    .model_version(&from.name, &from.version)
                    .await
                    .map_err(|e| error_chain(&e))?
                    .ok_or_else(missing)?;
                record.version = to.version.clone();
                record.run_id = Some(to.version.clone());
                record.trials = trials.to_vec();
                record.created_at = now_rfc3339();
                store.commit_model_version(&record).await
            }
            VersionKind::Dataset => {
                let mut version = store
                    .dataset_version(&from.name, &from.version)
                    .await
                    .map_err(|e| error_chain(&e))?
                    .ok_or_else(missing)?;
                version.version = to.version.clone();
                version.produced_by = version.produced_by.map(|p| ProducedBy {
                    run_id: to.version.clone(),
                    ..p
                });
                version.created_at = now_rfc3339();
                store.commit_dataset_version(&version).await
            }
        }
        .map_err(|e| error_chain(&e))
    }
}

/// The job's value for one trial: its own run id and output versions, the parameters in
/// its command and environment, no sweep.
fn trial_value(
    after: &Value,
    run_id: &str,
    trial_id: &str,
    params: &BTreeMap<String, String>,
) -> Value {
    let mut value = after.clone();
    value["run_id"] = Value::String(trial_id.to_string());
    value["sweep_of"] = Value::String(run_id.to_string());
    if let Some(map) = value.as_object_mut() {
        map.remove("sweep");
    }
    if let Some(args) = value.get_mut("command").and_then(Value::as_array_mut) {
        for arg in args.iter_mut() {
            if let Some(text) = arg.as_str() {
                *arg = Value::String(substitute(text, |inner| {
                    let name = inner.strip_prefix("params.")?;
                    params.get(name.trim()).cloned()
                }));
            }
        }
    }
    if !value.get("env").is_some_and(Value::is_object) {
        value["env"] = Value::Object(Default::default());
    }
    for (name, v) in params {
        value["env"][format!("CAIRN_PARAM_{}", env_name(name))] = Value::String(v.clone());
    }
    if let Some(outputs) = value.get_mut("outputs").and_then(Value::as_object_mut) {
        for reference in outputs.values_mut() {
            if let Some((what, _)) = reference.as_str().and_then(|r| r.split_once('@')) {
                *reference = Value::String(format!("{what}@{trial_id}"));
            }
        }
    }
    value
}

/// `lr=0.1, l2=0`.
fn describe(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

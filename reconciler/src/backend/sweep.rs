//! A job's sweep, on any target: each trial is a run of the job of its own
//! (`<run id>-t<n>`, its command's `{{ params.<name> }}` and `CAIRN_PARAM_<NAME>` set to
//! the trial's values), `parallel` at a time, each stored and recorded as any run (a
//! trial that already succeeded is not run again). The best trial by the sweep's pick
//! then becomes the run itself: its outputs are recorded as the versions named after the
//! sweep's run (the files are the trial's, not copied), with every trial's parameters and
//! metrics in the lineage.
//!
//! A target brings only how one trial runs ([`run`]'s `run_trial`): a process here, a
//! Kubernetes Job there.

use std::collections::BTreeMap;
use std::future::Future;

use futures::StreamExt;
use serde_json::Value;

use crate::artifacts::{VersionKind, VersionRef};
use crate::backend::job::{env_name, str_field, substitute};
use crate::backend::store::{now_rfc3339, ProducedBy, RunRecord, RunStatus, Trial};
use crate::backend::target::{ApplyContext, ChangeError};
use crate::diagnostics::error_chain;
use crate::manifest::sweep::{trial_id, Pick};
use crate::plan::ResourceChange;

/// What a planned job's `after["sweep"]` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSweep {
    /// The sweep's run: the id its kept outputs are named after.
    pub run_id: String,
    /// Each trial's parameters, in order.
    pub trials: Vec<BTreeMap<String, String>>,
    pub pick: Pick,
    /// Trials run at once.
    pub parallel: usize,
}

impl PlannedSweep {
    /// The sweep of a planned job's value, if it has one; a malformed one says why.
    pub fn parse(after: &Value) -> Result<Option<PlannedSweep>, String> {
        let Some(sweep) = after.get("sweep").filter(|s| !s.is_null()) else {
            return Ok(None);
        };
        let trials = serde_json::from_value(sweep.get("trials").cloned().unwrap_or_default())
            .map_err(|e| format!("the sweep's trials are malformed: {e}"))?;
        let pick_text = sweep
            .get("pick")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let pick = Pick::parse(pick_text).ok_or_else(|| format!("`{pick_text}` is not a pick"))?;
        let parallel = sweep
            .get("parallel")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1) as usize;
        Ok(Some(PlannedSweep {
            run_id: str_field(after, "run_id")?,
            trials,
            pick,
            parallel,
        }))
    }

    /// The planned value of trial `i`: the job's, as [`trial_value`] makes it.
    pub fn trial(&self, after: &Value, i: usize) -> Value {
        trial_value(
            after,
            &self.run_id,
            &trial_id(&self.run_id, i),
            &self.trials[i],
        )
    }
}

/// Replaces `{{ params.<name> }}` in one argument with the trial's values.
pub fn with_params(arg: &str, params: &BTreeMap<String, String>) -> String {
    substitute(arg, |inner| {
        let name = inner.strip_prefix("params.")?;
        params.get(name.trim()).cloned()
    })
}

/// `CAIRN_PARAM_<NAME>` → value, for each of a trial's parameters.
pub fn param_env(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .map(|(name, v)| (format!("CAIRN_PARAM_{}", env_name(name)), v.clone()))
        .collect()
}

/// The job's value for one trial: its own run id and output versions, the parameters in
/// its command and environment, no sweep.
pub fn trial_value(
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
                *arg = Value::String(with_params(text, params));
            }
        }
    }
    if !value.get("env").is_some_and(Value::is_object) {
        value["env"] = Value::Object(Default::default());
    }
    for (name, v) in param_env(params) {
        value["env"][name] = Value::String(v);
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
pub fn describe(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the sweep of `change` (planned value `after`): `run_trial(i, trial's value)`
/// runs trial `i` and records its run, at most `sweep.parallel` at once; then keeps the
/// best. Returns what happened, or why no trial could be kept.
pub async fn run<F, Fut>(
    cx: &ApplyContext<'_>,
    change: &ResourceChange,
    after: &Value,
    sweep: &PlannedSweep,
    run_trial: F,
) -> Result<String, ChangeError>
where
    F: Fn(usize, Value) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let store = cx.store;
    let count = sweep.trials.len();
    // Collected first: each future owns its value and the store lookup it starts with.
    #[allow(clippy::needless_collect)]
    let runs: Vec<_> = (0..count)
        .map(|i| {
            let trial_after = sweep.trial(after, i);
            let trial_id = trial_id(&sweep.run_id, i);
            let params = &sweep.trials[i];
            let name = &change.name;
            let started = async move {
                let done = store
                    .run(name, &trial_id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.status == RunStatus::Succeeded);
                (done, trial_id)
            };
            let work = run_trial(i, trial_after);
            async move {
                let (done, trial_id) = started.await;
                let outcome = if done {
                    Ok(())
                } else {
                    cx.events.note(
                        &change.address,
                        &format!("trial {} of {count}: {}", i + 1, describe(params)),
                    );
                    work.await
                };
                let record = store.run(name, &trial_id).await.ok().flatten();
                (i, trial_id, outcome, record)
            }
        })
        .collect();
    let mut finished: Vec<_> = futures::stream::iter(runs)
        .buffer_unordered(sweep.parallel)
        .collect()
        .await;
    finished.sort_by_key(|(i, ..)| *i);
    conclude(cx, change, sweep, finished).await
}

/// A trial that ran (or had run): its index, run id, outcome and run record.
type Finished = (usize, String, Result<(), String>, Option<RunRecord>);

/// Picks the best trial that succeeded and keeps its outputs as the sweep run's.
async fn conclude(
    cx: &ApplyContext<'_>,
    change: &ResourceChange,
    sweep: &PlannedSweep,
    finished: Vec<Finished>,
) -> Result<String, ChangeError> {
    let PlannedSweep {
        run_id,
        trials,
        pick,
        ..
    } = sweep;
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
    let trial = finished[picked]
        .3
        .clone()
        .ok_or_else(|| ChangeError::Failed("the picked trial's run record is missing".into()))?;
    let mut outputs = BTreeMap::new();
    for (name, reference) in &trial.outputs {
        let parsed =
            VersionRef::parse(reference).map_err(|e| ChangeError::Failed(error_chain(&e)))?;
        let kept = VersionRef {
            version: run_id.clone(),
            ..parsed.clone()
        };
        keep(cx, &parsed, &kept, &recorded)
            .await
            .map_err(ChangeError::Failed)?;
        outputs.insert(name.clone(), kept.to_string());
    }
    let record = RunRecord {
        job: change.name.clone(),
        run_id: run_id.clone(),
        status: RunStatus::Succeeded,
        started_at: trial.started_at.clone(),
        finished_at: now_rfc3339(),
        outputs,
        trials: recorded,
        ..trial
    };
    cx.store
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

/// Records the picked trial's output `from` as `to` (same files), with the trials in its
/// lineage.
async fn keep(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trial_gets_its_id_params_and_outputs() {
        let after = json!({
            "run_id": "abc",
            "command": ["train", "--lr={{ params.lr }}", "{{ outputs.model }}"],
            "outputs": {"model": "model.m@abc"},
            "sweep": {"trials": [{"lr": "0.1"}, {"lr": "0.01"}], "pick": "max(auc)", "parallel": 2},
        });
        let sweep = PlannedSweep::parse(&after).unwrap().unwrap();
        assert_eq!(sweep.parallel, 2);
        let trial = sweep.trial(&after, 1);
        assert_eq!(trial["run_id"], "abc-t1");
        assert_eq!(trial["sweep_of"], "abc");
        assert_eq!(trial["command"][1], "--lr=0.01");
        assert_eq!(trial["command"][2], "{{ outputs.model }}");
        assert_eq!(trial["env"]["CAIRN_PARAM_LR"], "0.01");
        assert_eq!(trial["outputs"]["model"], "model.m@abc-t1");
        assert!(trial.get("sweep").is_none());
        assert_eq!(PlannedSweep::parse(&json!({"run_id": "x"})), Ok(None));
    }
}

//! Jobs: a run id from the job's spec and the versions of its inputs; a run is planned
//! only when no successful run of that id is recorded (a cache by content).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{change, Error, Planner, Result, Versions};
use crate::address::{Address, Reference};
use crate::backend::store::{self, Store};
use crate::content;
use crate::desired::Resource;
use crate::manifest::Spec;
use crate::plan::{diff_values, Action, ResourceChange};

impl Planner<'_> {
    pub(super) async fn job(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
    ) -> Result<ResourceChange> {
        let mut change = self.job_change(resource, store, before, versions).await?;
        if let Spec::Job(spec) = &resource.spec {
            change.target = self.target_of(resource, spec.compute.get_ref());
        }
        Ok(change)
    }

    /// A job: its run id from its spec and input versions, run when no successful run
    /// of that id is recorded.
    pub(super) async fn job_change(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
    ) -> Result<ResourceChange> {
        let Spec::Job(spec) = &resource.spec else {
            unreachable!()
        };
        let ws = resource.address.workspace.as_str();
        let mut inputs = BTreeMap::new();
        for (name, value) in &spec.inputs {
            let Ok(r) = Reference::parse(value.get_ref()) else {
                continue;
            };
            let version = r.pin.clone().or_else(|| {
                versions
                    .get(&Address::new(ws, r.kind, r.name.clone()))
                    .cloned()
            });
            inputs.insert(
                name.get_ref().clone(),
                format!(
                    "{}.{}@{}",
                    r.kind,
                    r.name,
                    version.unwrap_or_else(|| "unknown".into())
                ),
            );
        }
        let identity = json!({
            "job": resource.address.name,
            "compute": spec.compute.get_ref(),
            "instance_type": spec.instance_type.as_ref().map(|s| s.get_ref()),
            "image": spec.image.as_ref().map(|s| s.get_ref()),
            "command": spec.command.as_ref().map(|c| c.get_ref()),
            "env": spec.env,
            "gpus": spec.gpus(),
            "instances": spec.instances(),
            "inputs": inputs,
        });
        let sweep = spec.sweep.as_ref().map(|s| {
            let s = s.get_ref();
            json!({
                "trials": s.trials(),
                "pick": s.pick.get_ref(),
                "parallel": s.parallel(),
            })
        });
        let mut identity = identity;
        if let Some(sweep) = &sweep {
            identity["sweep"] = sweep.clone();
        }
        let run_id = content::short_hash(identity.to_string().as_bytes());
        let outputs: BTreeMap<String, String> = spec
            .outputs
            .iter()
            .filter_map(|(name, value)| {
                let r = Reference::parse(value.get_ref()).ok()?;
                Some((
                    name.get_ref().clone(),
                    format!("{}.{}@{run_id}", r.kind, r.name),
                ))
            })
            .collect();
        let after = json!({
            "run_id": run_id,
            "compute": spec.compute.get_ref(),
            "instance_type": spec.instance_type.as_ref().map(|s| s.get_ref()),
            "image": spec.image.as_ref().map(|s| s.get_ref()),
            "command": spec.command.as_ref().map(|c| c.get_ref()),
            "env": spec.env,
            "gpus": spec.gpus(),
            "instances": spec.instances(),
            "timeout": spec.timeout.as_ref().map(|t| t.get_ref().to_string()),
            "retries": spec.retries,
            "inputs": inputs,
            "outputs": outputs,
        });
        // Set only when declared, so plans of jobs that don't use them are unchanged.
        let mut after = after;
        let optional = [
            ("queue", spec.queue.as_ref().map(|q| q.get_ref().clone())),
            (
                "schedule_timeout",
                spec.schedule_timeout
                    .as_ref()
                    .map(|t| t.get_ref().to_string()),
            ),
            ("cpu", spec.cpu.as_ref().map(ToString::to_string)),
            ("memory", spec.memory.as_ref().map(ToString::to_string)),
            (
                "outputs_size",
                spec.outputs_size.as_ref().map(|q| q.get_ref().to_string()),
            ),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                after[key] = Value::String(value);
            }
        }
        if let Some(sweep) = sweep {
            after["sweep"] = sweep;
        }

        let old_run = before
            .as_ref()
            .and_then(|b| b.get("run_id"))
            .and_then(Value::as_str);
        if old_run == Some(run_id.as_str()) {
            return Ok(self.simple(resource, before, after));
        }
        let existing = store
            .run(&resource.address.name, &run_id)
            .await
            .map_err(|source| Error::Store {
                workspace: ws.to_string(),
                source,
            })?;
        if let Some(done) = existing.filter(|r| r.status == store::RunStatus::Succeeded) {
            let mut reason =
                format!("run {run_id} already succeeded; recording it as the current run");
            // Its metrics against the current run's: what merging it would change.
            if let (Some(metrics), Some(old)) = (&done.metrics, old_run) {
                let current = store
                    .run(&resource.address.name, old)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|r| r.metrics);
                if let Some(delta) = current
                    .as_ref()
                    .and_then(|c| crate::metric_delta::describe(metrics, c, &[]))
                {
                    reason.push_str(&format!(" ({delta} against run {old})"));
                }
            }
            return Ok(change(
                resource,
                Action::Update,
                reason,
                before,
                Some(after),
            ));
        }
        let reason = match &before {
            None => format!("first run ({run_id})"),
            Some(b) => {
                let mut why = Vec::new();
                let old_inputs = b.get("inputs").cloned().unwrap_or(Value::Null);
                for (name, now) in &inputs {
                    let was = old_inputs.get(name).and_then(Value::as_str);
                    if was != Some(now.as_str()) {
                        match was {
                            Some(was) => why.push(format!(
                                "{} → {}",
                                was,
                                now.rsplit('@').next().unwrap_or(now)
                            )),
                            None => why.push(format!("new input {now}")),
                        }
                    }
                }
                let spec_fields: Vec<String> = diff_values(Some(b), Some(&after))
                    .into_iter()
                    .map(|c| c.path)
                    .filter(|p| {
                        !p.starts_with("inputs") && !p.starts_with("outputs") && p != "run_id"
                    })
                    .collect();
                if !spec_fields.is_empty() {
                    why.push(format!("spec changed: {}", spec_fields.join(", ")));
                }
                if why.is_empty() {
                    format!("no successful run {run_id} yet")
                } else {
                    format!("inputs or spec changed: {}", why.join("; "))
                }
            }
        };
        let reason = match spec.sweep.as_ref().map(|s| s.get_ref()) {
            Some(s) => format!(
                "{reason}; a sweep of {} trials ({} at a time), the best by {} kept",
                s.trial_count(),
                s.parallel(),
                s.pick.get_ref()
            ),
            None => reason,
        };
        Ok(change(resource, Action::Run, reason, before, Some(after)))
    }
}

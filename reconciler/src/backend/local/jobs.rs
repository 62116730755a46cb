//! Running a job on this machine: its inputs fetched from the store into a run folder,
//! its command run with retries and a timeout as a process group
//! ([`super::LocalMachine`]), its outputs stored as model versions with lineage, and the
//! run recorded with its logs and metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::compute::LocalCompute;
use super::{job_group, Exit, JobRunner as _, Launch};
use crate::address::Kind;
use crate::artifacts;
use crate::backend::job::{env_name, expand, PlannedJob};
use crate::backend::store::{now_rfc3339, RunRecord, RunStatus, Store};
use crate::backend::target::{ApplyContext, ChangeError};
use crate::diagnostics::error_chain;
use crate::plan::{Plan, ResourceChange};

impl LocalCompute {
    /// Runs a job on the local target with retries; on success stores its outputs as
    /// model versions with lineage, and the run record.
    pub(super) async fn run_job(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
        after: &Value,
    ) -> Result<String, ChangeError> {
        let (plan, store) = (cx.plan, cx.store);
        let job = change.name.clone();
        let PlannedJob {
            run_id,
            inputs,
            outputs,
            retries,
            timeout,
        } = PlannedJob::parse(after).map_err(ChangeError::Plan)?;
        let work = self.work_dir.join("runs").join(&job).join(&run_id);
        // A job an earlier, killed apply left running in this folder is stopped, not
        // run a second time beside it; other runs' leftovers are removed.
        if let Some(pgid) = job_group::reap_leftover(&work).await {
            cx.events.note(
                &change.address,
                &format!("stopped process group {pgid}, left running here by an earlier apply"),
            );
        }
        remove_leftover_runs(&work).await;
        let command: Vec<String> =
            serde_json::from_value(after.get("command").cloned().unwrap_or_default())
                .map_err(|_| ChangeError::Plan("the job has no command".into()))?;
        let env: BTreeMap<String, String> =
            serde_json::from_value(after.get("env").cloned().unwrap_or_default())
                .unwrap_or_default();
        let gpus = after.get("gpus").and_then(Value::as_u64).unwrap_or(0) as usize;

        // Inputs: each version's files, fetched into the run's folder.
        let mut paths: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut env_vars = env.clone();
        for (name, reference) in &inputs {
            let dest = work.join("inputs").join(name);
            self.fetch_input(store, reference, &dest)
                .await
                .map_err(ChangeError::Failed)?;
            env_vars.insert(
                format!("CAIRN_INPUT_{}", env_name(name)),
                dest.display().to_string(),
            );
            paths.insert(format!("inputs.{name}"), dest);
        }
        for name in outputs.keys() {
            let dest = work.join("outputs").join(name);
            env_vars.insert(
                format!("CAIRN_OUTPUT_{}", env_name(name)),
                dest.display().to_string(),
            );
            paths.insert(format!("outputs.{name}"), dest);
        }
        env_vars.insert("CAIRN_RUN_ID".into(), run_id.clone());
        env_vars.insert("CAIRN_JOB".into(), change.address.clone());
        let command: Vec<String> = command
            .iter()
            .map(|arg| expand(arg, &paths, &run_id))
            .collect();
        let gpu_ids: Vec<u32> = self
            .machine
            .observe()
            .gpus
            .iter()
            .take(gpus)
            .map(|g| g.index)
            .collect();

        let started_at = now_rfc3339();
        let t = Instant::now();
        let mut logs = Vec::new();
        let mut last: Option<Exit> = None;
        let mut spawn_error = None;
        let mut last_launch: Option<Launch> = None;
        let attempts = retries + 1;
        for attempt in 1..=attempts {
            if attempt > 1 {
                cx.events
                    .note(&change.address, &format!("attempt {attempt} of {attempts}"));
            }
            for name in outputs.keys() {
                let dir = work.join("outputs").join(name);
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ChangeError::Target(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let log = work.join(format!("attempt-{attempt}.log"));
            let launch = Launch {
                command: command.clone(),
                env: env_vars.clone(),
                workdir: work.clone(),
                log: log.clone(),
                timeout,
                gpus: gpu_ids.clone(),
                base_env: self.child_env.clone(),
            };
            let result = self.machine.run(&launch).await;
            last_launch = Some(launch.clone());
            let key = Store::run_log_key(&job, &run_id, attempt);
            if log.exists() && store.objects().put_file(&key, &log).await.is_ok() {
                logs.push(key);
            }
            match result {
                Ok(exit) => {
                    let ok = exit.success();
                    last = Some(exit);
                    if ok {
                        break;
                    }
                }
                Err(e) => {
                    spawn_error = Some(error_chain(&e));
                    break;
                }
            }
        }
        let finished_at = now_rfc3339();
        let duration_ms = t.elapsed().as_millis() as u64;
        let succeeded = last.as_ref().is_some_and(Exit::success);
        let attempts_made = logs.len().max(1) as u32;
        // From the first output folder that has a `metrics.json`, else the run's folder.
        let folders: Vec<PathBuf> = outputs
            .keys()
            .map(|name| work.join("outputs").join(name))
            .chain(std::iter::once(work.clone()))
            .collect();
        let metrics = artifacts::read_metrics(folders.iter().map(PathBuf::as_path));

        let mut error = spawn_error;
        let mut produced = BTreeMap::new();
        if succeeded {
            for (name, reference) in &outputs {
                let model = reference
                    .split('@')
                    .next()
                    .unwrap_or(reference)
                    .trim_start_matches("model.")
                    .to_string();
                let dir = work.join("outputs").join(name);
                match self
                    .store_output(
                        plan,
                        store,
                        &model,
                        &run_id,
                        &job,
                        &dir,
                        &inputs,
                        metrics.clone(),
                    )
                    .await
                {
                    Ok(()) => {
                        produced.insert(name.clone(), reference.clone());
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        } else if error.is_none() {
            let exit = last.as_ref();
            let tail = match &last_launch {
                Some(launch) => match self.machine.logs(launch, 5).await {
                    t if t.is_empty() => String::new(),
                    t => format!("; last lines of the log:\n{t}"),
                },
                None => String::new(),
            };
            error = Some(match exit {
                Some(e) if e.timed_out => format!(
                    "timed out after {} (attempt {attempts_made} of {attempts}){tail}",
                    humantime::format_duration(Duration::from_secs(e.duration.as_secs()))
                ),
                Some(e) => format!(
                    "exited with code {} (attempt {attempts_made} of {attempts}){tail}",
                    e.code
                        .map_or("none (killed by a signal)".into(), |c| c.to_string())
                ),
                None => "did not run".into(),
            });
        }
        let record = RunRecord {
            job: job.clone(),
            run_id: run_id.clone(),
            status: if error.is_none() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            attempts: attempts_made,
            started_at,
            finished_at,
            duration_ms,
            exit_code: last.as_ref().and_then(|e| e.code),
            inputs: inputs.clone(),
            outputs: produced,
            metrics,
            logs,
            error: error.clone(),
            commit: plan.revision.clone(),
        };
        // Its outputs and logs are stored: the run's folder (a copy of every input) goes.
        remove_run_folder(&work).await;
        store.put_run(&record).await?;
        match error {
            None => Ok(format!(
                "run {run_id} succeeded in {}",
                humantime::format_duration(Duration::from_secs(duration_ms / 1000))
            )),
            Some(e) => Err(ChangeError::Failed(e)),
        }
    }

    async fn fetch_input(&self, store: &Store, reference: &str, dest: &Path) -> Result<(), String> {
        artifacts::fetch(store, reference, dest)
            .await
            .map(|_| ())
            .map_err(|e| format!("input {}", error_chain(&e)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_output(
        &self,
        plan: &Plan,
        store: &Store,
        model: &str,
        run_id: &str,
        job: &str,
        dir: &Path,
        inputs: &BTreeMap<String, String>,
        metrics: Option<Value>,
    ) -> Result<(), String> {
        let format = plan
            .resource_changes
            .iter()
            .find(|c| c.kind == Kind::Model && c.name == model)
            .and_then(|c| c.after.as_ref())
            .and_then(|a| a.get("format"))
            .and_then(Value::as_str)
            .unwrap_or("custom")
            .to_string();
        let lineage = artifacts::Lineage {
            job: Some(job.to_string()),
            run_id: Some(run_id.to_string()),
            inputs: inputs.clone(),
            commit: plan.revision.clone(),
            metrics,
        };
        artifacts::store_model(store, model, run_id, &format, dir, lineage)
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }
}

/// Removes a run's folder once its outputs and logs are stored.
async fn remove_run_folder(work: &Path) {
    let work = work.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
}

/// Removes the folders other runs of the same job left behind (an apply killed before
/// it cleaned up), except one whose job still runs (another apply's), so `.cairn/work`
/// holds at most the runs in progress.
async fn remove_leftover_runs(work: &Path) {
    let Some(job_dir) = work.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == work || !path.is_dir() {
            continue;
        }
        if !job_group::running(&path) {
            remove_run_folder(&path).await;
        }
    }
}

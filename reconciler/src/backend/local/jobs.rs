//! Running a job on this machine: its inputs fetched from the store into a run folder,
//! its command run with retries and a timeout as a process group
//! ([`super::LocalMachine`]), its outputs stored as model or dataset versions with
//! lineage, and the run recorded with its logs and metrics.
//!
//! A job with `instances = N` runs its command N times at once, as ranks 0 to N−1 of the
//! distributed-training contract ([`Distribution`]): `MASTER_ADDR=127.0.0.1`, a
//! `MASTER_PORT` found free for each attempt, and the job's `gpus` per rank through
//! `CUDA_VISIBLE_DEVICES` (rank `r` gets the `r`-th `gpus` of the machine's GPUs). The
//! contract's variables are set over the job's declared `env`, as the `CAIRN_*` ones
//! are. Each rank writes its own log (`attempt-A.rank-R.log`; a single-instance job keeps
//! `attempt-A.log`). Only rank 0's outputs are stored: the other ranks' `{{ outputs.x }}`
//! and `CAIRN_OUTPUT_*` name scratch folders of their own (`ranks/rank-R/outputs/x`), so
//! they cannot overwrite rank 0's. One rank failing stops the group and fails the
//! attempt, naming the rank; the timeout and `retries` act on the whole group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::compute::LocalCompute;
use super::{job_group, Exit, JobRunner as _, Launch, RankLaunch};
use crate::address::Kind;
use crate::artifacts;
use crate::backend::distribution::Distribution;
use crate::backend::job::{env_name, expand, PlannedJob};
use crate::backend::store::{now_rfc3339, RunRecord, RunStatus, Store};
use crate::backend::target::{ApplyContext, ChangeError};
use crate::diagnostics::error_chain;
use crate::plan::{Plan, ResourceChange};

impl LocalCompute {
    /// Runs a job on the local target with retries; on success stores its outputs as
    /// model or dataset versions with lineage, and the run record.
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
            // Local processes start at once: nothing to schedule.
            schedule_timeout: _,
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
        // A sweep's trials run side by side: none removes another's folder.
        if after.get("sweep_of").is_none() {
            remove_leftover_runs(&work).await;
        }
        let command: Vec<String> =
            serde_json::from_value(after.get("command").cloned().unwrap_or_default())
                .map_err(|_| ChangeError::Plan("the job has no command".into()))?;
        let env: BTreeMap<String, String> =
            serde_json::from_value(after.get("env").cloned().unwrap_or_default())
                .unwrap_or_default();
        let gpus = after.get("gpus").and_then(Value::as_u64).unwrap_or(0) as usize;
        let instances = after
            .get("instances")
            .and_then(Value::as_u64)
            .map_or(1, |n| n.max(1)) as usize;

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
        env_vars.insert("CAIRN_RUN_ID".into(), run_id.clone());
        env_vars.insert("CAIRN_JOB".into(), change.address.clone());
        let gpu_ids: Vec<u32> = self
            .machine
            .observe()
            .gpus
            .iter()
            .take(gpus * instances)
            .map(|g| g.index)
            .collect();
        // Each rank's outputs folder, and its command and variables naming them.
        let ranks: Vec<Rank> = (0..instances)
            .map(|rank| {
                let outputs_dir = rank_dir(&work, rank).join("outputs");
                let mut paths = paths.clone();
                let mut env = env_vars.clone();
                for name in outputs.keys() {
                    let dest = outputs_dir.join(name);
                    env.insert(
                        format!("CAIRN_OUTPUT_{}", env_name(name)),
                        dest.display().to_string(),
                    );
                    paths.insert(format!("outputs.{name}"), dest);
                }
                Rank {
                    command: command
                        .iter()
                        .map(|arg| expand(arg, &paths, &run_id))
                        .collect(),
                    env,
                    outputs: outputs_dir,
                    gpus: rank_gpus(&gpu_ids, rank, gpus),
                }
            })
            .collect();

        let started_at = now_rfc3339();
        let t = Instant::now();
        let mut logs = Vec::new();
        let mut last: Option<Exit> = None;
        let mut spawn_error = None;
        let mut last_launch: Option<Launch> = None;
        let mut attempts_made = 0;
        let attempts = retries + 1;
        for attempt in 1..=attempts {
            attempts_made = attempt;
            if attempt > 1 {
                cx.events
                    .note(&change.address, &format!("attempt {attempt} of {attempts}"));
            }
            for rank in &ranks {
                for name in outputs.keys() {
                    let dir = rank.outputs.join(name);
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        ChangeError::Target(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
            }
            // A port found free now; the group's ranks meet on it for this attempt.
            let distribution =
                Distribution::new(instances as u32, gpus as u32, "127.0.0.1", free_port()?);
            let launch = Launch {
                ranks: ranks
                    .iter()
                    .enumerate()
                    .map(|(r, rank)| {
                        let mut env = rank.env.clone();
                        env.extend(
                            distribution
                                .env(r as u32)
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v)),
                        );
                        RankLaunch {
                            command: rank.command.clone(),
                            env,
                            log: work.join(log_name(attempt, r, instances)),
                            gpus: rank.gpus.clone(),
                        }
                    })
                    .collect(),
                workdir: work.clone(),
                timeout,
                base_env: self.child_env.clone(),
            };
            let result = self.machine.run(&launch).await;
            for (r, process) in launch.ranks.iter().enumerate() {
                let key = log_key(&job, &run_id, attempt, r, instances);
                if process.log.exists()
                    && store.objects().put_file(&key, &process.log).await.is_ok()
                {
                    logs.push(key);
                }
            }
            last_launch = Some(launch);
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
        let attempts_made = attempts_made.max(1);
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
                let dir = work.join("outputs").join(name);
                match self
                    .store_output(
                        plan,
                        store,
                        reference,
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
            // The failing rank's log: the one that says why.
            let rank = exit.map_or(0, |e| e.rank);
            let tail = match &last_launch {
                Some(launch) => match self.machine.logs(launch, rank, 5).await {
                    t if t.is_empty() => String::new(),
                    t if instances > 1 => format!("; last lines of its log:\n{t}"),
                    t => format!("; last lines of the log:\n{t}"),
                },
                None => String::new(),
            };
            let who = if instances > 1 {
                format!("rank {rank} of {instances} ")
            } else {
                String::new()
            };
            error = Some(match exit {
                Some(e) if e.timed_out => format!(
                    "timed out after {} (attempt {attempts_made} of {attempts}){tail}",
                    humantime::format_duration(Duration::from_secs(e.duration.as_secs()))
                ),
                Some(e) => format!(
                    "{who}exited with code {} (attempt {attempts_made} of {attempts}){}{tail}",
                    e.code
                        .map_or("none (killed by a signal)".into(), |c| c.to_string()),
                    if instances > 1 {
                        "; the other ranks were stopped"
                    } else {
                        ""
                    }
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
            trials: Vec::new(),
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

    /// Stores one output folder as `reference` (`model.<name>@<run id>` or
    /// `dataset.<name>@<run id>`), with the run's lineage.
    #[allow(clippy::too_many_arguments)]
    async fn store_output(
        &self,
        plan: &Plan,
        store: &Store,
        reference: &str,
        run_id: &str,
        job: &str,
        dir: &Path,
        inputs: &BTreeMap<String, String>,
        metrics: Option<Value>,
    ) -> Result<(), String> {
        let model = reference
            .split('@')
            .next()
            .and_then(|r| r.strip_prefix("model."));
        let format = plan
            .resource_changes
            .iter()
            .find(|c| c.kind == Kind::Model && Some(c.name.as_str()) == model)
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
        artifacts::store_output(store, reference, &format, dir, lineage)
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }
}

/// One rank's part of a job's launch, the same for every attempt.
struct Rank {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    /// The folder holding its outputs' folders.
    outputs: PathBuf,
    gpus: Vec<u32>,
}

/// The folder a rank's outputs go under: the run's folder for rank 0 (whose outputs are
/// stored), a scratch folder of its own for every other rank.
fn rank_dir(work: &Path, rank: usize) -> PathBuf {
    if rank == 0 {
        work.to_path_buf()
    } else {
        work.join("ranks").join(format!("rank-{rank}"))
    }
}

/// The GPUs rank `rank` sees: the `rank`-th slice of `per_rank` ids.
fn rank_gpus(ids: &[u32], rank: usize, per_rank: usize) -> Vec<u32> {
    ids.iter()
        .skip(rank * per_rank)
        .take(per_rank)
        .copied()
        .collect()
}

/// A rank's log file in the run folder; a single-instance job keeps `attempt-A.log`.
fn log_name(attempt: u32, rank: usize, instances: usize) -> String {
    if instances == 1 {
        format!("attempt-{attempt}.log")
    } else {
        format!("attempt-{attempt}.rank-{rank}.log")
    }
}

/// Where a rank's log of an attempt is stored: beside the run's other logs, under the
/// same name as in the run folder.
fn log_key(job: &str, run_id: &str, attempt: u32, rank: usize, instances: usize) -> String {
    let single = Store::run_log_key(job, run_id, attempt);
    match single.strip_suffix(".log") {
        Some(stem) if instances > 1 => format!("{stem}.rank-{rank}.log"),
        _ => single,
    }
}

/// A TCP port on the loopback interface that nothing listens on now: asks the kernel for
/// one and lets it go. Another process could take it before rank 0 listens; the window
/// is the time it takes to start the ranks, and a rank that finds the port taken fails
/// the attempt, which `retries` runs again with a new port.
fn free_port() -> Result<u16, ChangeError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| {
            ChangeError::Target(format!("cannot find a free port for the job's ranks: {e}"))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_gets_its_own_slice_of_the_gpus() {
        let ids = [0, 1, 2, 3, 4, 5];
        assert_eq!(rank_gpus(&ids, 0, 2), [0, 1]);
        assert_eq!(rank_gpus(&ids, 2, 2), [4, 5]);
        assert_eq!(rank_gpus(&ids, 1, 3), [3, 4, 5]);
        assert!(rank_gpus(&ids, 1, 0).is_empty());
    }

    #[test]
    fn a_single_instance_keeps_its_log_name() {
        assert_eq!(log_name(2, 0, 1), "attempt-2.log");
        assert_eq!(log_name(2, 1, 3), "attempt-2.rank-1.log");
        assert_eq!(
            log_key("train", "abc", 1, 0, 1),
            "runs/train/abc/attempt-1.log"
        );
        assert_eq!(
            log_key("train", "abc", 1, 2, 3),
            "runs/train/abc/attempt-1.rank-2.log"
        );
        assert_eq!(rank_dir(Path::new("/w"), 0), Path::new("/w"));
        assert_eq!(rank_dir(Path::new("/w"), 2), Path::new("/w/ranks/rank-2"));
    }
}

//! The `local` compute target: this machine. Owns GPU discovery (through cudarc, loaded
//! at run time so machines without CUDA work) and running job processes with a timeout,
//! captured logs and `CUDA_VISIBLE_DEVICES`, in a clean environment ([`ChildEnv`]), as a
//! process group that dies with the apply ([`job_group`]).
//!
//! An attempt is a group of processes, one per rank of the job's instances
//! ([`Launch::ranks`]): all of them join one process group (rank 0 leads it), so one
//! signal, one watchdog and one pid record cover every rank. The attempt succeeds when
//! every rank exits 0; the first rank to fail (or the timeout) kills the whole group at
//! once, and [`Exit::rank`] names the rank whose exit it reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

pub mod child_env;
pub mod compute;
pub mod endpoints;
pub mod job_group;
mod jobs;
pub mod router;
pub mod supervisor;

pub use child_env::ChildEnv;
pub use compute::LocalCompute;

/// A GPU found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub memory_bytes: u64,
}

/// Returns the NVIDIA GPUs the CUDA driver reports, or none when no driver is installed.
pub fn detect_gpus() -> Vec<Gpu> {
    // The other cudarc calls panic when the driver library is missing; check first.
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Vec::new();
    }
    use cudarc::driver::result;
    if result::init().is_err() {
        return Vec::new();
    }
    let count = result::device::get_count().unwrap_or(0).max(0);
    (0..count)
        .filter_map(|ordinal| {
            let dev = result::device::get(ordinal).ok()?;
            let name = result::device::get_name(dev).unwrap_or_else(|_| "NVIDIA GPU".into());
            // SAFETY: `dev` was returned by `device::get`.
            let memory = unsafe { result::device::total_mem(dev) }.unwrap_or(0);
            Some(Gpu {
                index: ordinal as u32,
                name,
                memory_bytes: memory as u64,
            })
        })
        .collect()
}

/// Errors from running work on this machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the log file `{path}`")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for `{program}` failed")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the job's command is empty")]
    EmptyCommand,
}

/// The processes of one job attempt: one per rank, run together in `workdir`.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The processes, by rank (index 0 is rank 0); one for a single-instance job.
    pub ranks: Vec<RankLaunch>,
    pub workdir: PathBuf,
    /// How long the whole group may run.
    pub timeout: Option<Duration>,
    /// The environment every process starts from (the allow-listed part of the
    /// caller's); a rank's `env` and `CUDA_VISIBLE_DEVICES` are set on top. Nothing else
    /// is inherited.
    pub base_env: ChildEnv,
}

/// One rank's process of an attempt.
#[derive(Debug, Clone)]
pub struct RankLaunch {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Where its output (stdout and stderr) goes.
    pub log: PathBuf,
    /// GPU indexes to expose; an empty list hides all GPUs.
    pub gpus: Vec<u32>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code of [`Exit::rank`]; `None` when a signal ended it (or the timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    /// The rank this exit is about: the first to fail, or 0 when every rank succeeded
    /// or the group timed out.
    pub rank: u32,
}

impl Exit {
    pub fn success(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }
}

/// What a compute target offers right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub gpus: Vec<Gpu>,
    /// CPU cores available to jobs.
    pub cpus: usize,
    /// Memory in bytes, when known.
    pub memory_bytes: Option<u64>,
}

/// Whether a target can take work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub status: HealthStatus,
    pub message: String,
}

/// Where a local job's attempts run: [`LocalMachine`], processes on this machine. The
/// local target ([`LocalCompute`]) reads its capacity through [`JobRunner::observe`] and
/// runs attempts through [`JobRunner::run`] and [`JobRunner::logs`].
#[async_trait]
pub trait JobRunner: Send + Sync {
    /// What the target offers now: GPUs, CPUs, memory.
    fn observe(&self) -> &Capacity;

    /// Whether the target can take work now.
    async fn health(&self) -> Health;

    /// Runs one attempt, every rank at once, to completion (or timeout, or the first
    /// rank's failure, which stops the others), writing each rank's output to its log.
    async fn run(&self, launch: &Launch) -> Result<Exit, Error>;

    /// Returns the last `lines` non-empty lines rank `rank` of an attempt wrote.
    async fn logs(&self, launch: &Launch, rank: u32, lines: usize) -> String;
}

/// This machine.
#[derive(Debug, Clone, Default)]
pub struct LocalMachine {
    capacity: Capacity,
}

impl LocalMachine {
    /// Looks at this machine once: GPUs through the CUDA driver, CPUs, memory.
    pub fn detect() -> LocalMachine {
        LocalMachine::with_gpus(detect_gpus())
    }

    /// This machine, with the GPUs given (none: skip loading the CUDA driver).
    pub fn with_gpus(gpus: Vec<Gpu>) -> LocalMachine {
        LocalMachine {
            capacity: Capacity {
                gpus,
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                memory_bytes: total_memory(),
            },
        }
    }
}

/// `MemTotal` from `/proc/meminfo`, where there is one.
fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[async_trait]
impl JobRunner for LocalMachine {
    fn observe(&self) -> &Capacity {
        &self.capacity
    }

    async fn health(&self) -> Health {
        // The machine running Cairn is up by definition; GPUs that were found but no
        // longer answer make it degraded.
        if !self.capacity.gpus.is_empty() && detect_gpus().len() < self.capacity.gpus.len() {
            return Health {
                status: HealthStatus::Degraded,
                message: "some GPUs found earlier no longer answer".into(),
            };
        }
        Health {
            status: HealthStatus::Healthy,
            message: format!(
                "this machine: {} CPU(s), {} GPU(s)",
                self.capacity.cpus,
                self.capacity.gpus.len()
            ),
        }
    }

    async fn logs(&self, launch: &Launch, rank: u32, lines: usize) -> String {
        let Some(process) = launch.ranks.get(rank as usize) else {
            return String::new();
        };
        let Ok(text) = tokio::fs::read_to_string(&process.log).await else {
            return String::new();
        };
        let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    async fn run(&self, launch: &Launch) -> Result<Exit, Error> {
        if launch.ranks.iter().any(|r| r.command.is_empty()) || launch.ranks.is_empty() {
            return Err(Error::EmptyCommand);
        }
        let started = Instant::now();
        let mut group: Option<u32> = None;
        let mut watchdog = None;
        // Every rank is started before any is waited for: an exited rank 0 stays a zombie
        // until then, so the group's id stays taken while the others join it.
        let mut children = Vec::with_capacity(launch.ranks.len());
        for (rank, process) in launch.ranks.iter().enumerate() {
            let child = match spawn(launch, process, group).await {
                Ok(child) => child,
                Err(e) => {
                    // The ranks already started must not wait for one that never comes.
                    if let Some(pgid) = group {
                        kill_group(pgid);
                    }
                    drop(children);
                    drop(watchdog);
                    job_group::forget(&launch.workdir);
                    return Err(e);
                }
            };
            if rank == 0 {
                // The group dies with this process, however it ends (see `job_group`).
                group = child.id();
                if let Some(pgid) = group {
                    let _ = job_group::record(&launch.workdir, pgid);
                }
                watchdog = group.and_then(job_group::Watchdog::arm);
            }
            children.push(child);
        }
        let mut waits = tokio::task::JoinSet::new();
        for (rank, (mut child, process)) in children.into_iter().zip(&launch.ranks).enumerate() {
            let program = process.command[0].clone();
            waits.spawn(async move { (rank as u32, program, child.wait().await) });
        }
        let deadline = launch.timeout.map(|t| tokio::time::Instant::now() + t);
        let result = loop {
            let next = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, waits.join_next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            stop(group, &mut waits).await;
                            break Ok(Exit {
                                code: None,
                                timed_out: true,
                                duration: started.elapsed(),
                                rank: 0,
                            });
                        }
                    }
                }
                None => waits.join_next().await,
            };
            let Some(joined) = next else {
                // Every rank exited 0.
                break Ok(Exit {
                    code: Some(0),
                    timed_out: false,
                    duration: started.elapsed(),
                    rank: 0,
                });
            };
            let (rank, program, status) =
                joined.expect("a wait task neither panics nor is aborted here");
            match status {
                Ok(status) if status.success() => continue,
                Ok(status) => {
                    // One rank failed: the others would wait for it until the timeout.
                    stop(group, &mut waits).await;
                    break Ok(Exit {
                        code: status.code(),
                        timed_out: false,
                        duration: started.elapsed(),
                        rank,
                    });
                }
                Err(source) => {
                    stop(group, &mut waits).await;
                    break Err(Error::Wait { program, source });
                }
            }
        };
        drop(watchdog);
        job_group::forget(&launch.workdir);
        result
    }
}

/// Starts one rank's process: the leader of a new process group (`group` is `None`, for
/// rank 0) or a member of rank 0's.
async fn spawn(
    launch: &Launch,
    process: &RankLaunch,
    group: Option<u32>,
) -> Result<tokio::process::Child, Error> {
    let (program, args) = process.command.split_first().ok_or(Error::EmptyCommand)?;
    let log_error = |source| Error::Log {
        path: process.log.clone(),
        source,
    };
    if let Some(parent) = process.log.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(log_error)?;
    }
    let log = std::fs::File::create(&process.log).map_err(log_error)?;
    let log_err = log.try_clone().map_err(log_error)?;
    let visible = process
        .gpus
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut command = tokio::process::Command::new(resolve_program(program, &launch.workdir));
    launch.base_env.apply_tokio(&mut command);
    command
        .args(args)
        .current_dir(&launch.workdir)
        .envs(&process.env)
        .env("CUDA_VISIBLE_DEVICES", visible)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(group.and_then(|g| i32::try_from(g).ok()).unwrap_or(0));
    #[cfg(not(unix))]
    let _ = group;
    command.spawn().map_err(|source| Error::Spawn {
        program: program.clone(),
        source,
    })
}

/// Kills every rank of an attempt (the whole process group `group`, grandchildren
/// included) and waits for the ranks' processes.
async fn stop(
    group: Option<u32>,
    waits: &mut tokio::task::JoinSet<(u32, String, std::io::Result<std::process::ExitStatus>)>,
) {
    if let Some(pgid) = group {
        kill_group(pgid);
    }
    // SIGKILL can't be ignored: the ranks in the group end within moments. One that left
    // the group is killed when its task is aborted (`kill_on_drop`).
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while waits.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        waits.shutdown().await;
    }
}

/// `cairn` in a job's command means this very binary, so the example works without
/// installing Cairn on the PATH.
fn resolve_program(program: &str, _workdir: &Path) -> PathBuf {
    if program == "cairn" {
        if let Ok(me) = std::env::current_exe() {
            if me.file_stem().is_some_and(|s| s == "cairn") {
                return me;
            }
        }
    }
    PathBuf::from(program)
}

/// Sends `SIGKILL` to the process group `pgid`.
fn kill_group(pgid: u32) {
    #[cfg(unix)]
    if let Some(pgid) = i32::try_from(pgid).ok().filter(|p| *p > 1) {
        // A job's ranks share one process group, led by rank 0 (see `spawn`): signal the
        // whole group, so no rank or grandchild outlives the attempt. A negative pid
        // names the group; `pgid > 1` guarantees this is never `kill(-1)`, which would
        // signal every process.
        // SAFETY: plain system call on a process group this process created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(dir: &Path, scripts: &[&str], timeout: Option<Duration>) -> Launch {
        Launch {
            ranks: scripts
                .iter()
                .enumerate()
                .map(|(rank, script)| RankLaunch {
                    command: vec!["sh".into(), "-c".into(), script.to_string()],
                    env: BTreeMap::from([("RANK".to_string(), rank.to_string())]),
                    log: dir.join(format!("rank-{rank}.log")),
                    gpus: vec![rank as u32],
                })
                .collect(),
            workdir: dir.to_path_buf(),
            timeout,
            base_env: ChildEnv::allowed(std::env::vars_os()),
        }
    }

    #[tokio::test]
    async fn every_rank_runs_with_its_own_env_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo \"$RANK $CUDA_VISIBLE_DEVICES\"";
        let launch = launch(dir.path(), &[script, script, script], None);
        let exit = LocalMachine::default().run(&launch).await.unwrap();
        assert!(exit.success(), "{exit:?}");
        for rank in 0..3 {
            let log = std::fs::read_to_string(&launch.ranks[rank].log).unwrap();
            assert_eq!(log, format!("{rank} {rank}\n"));
        }
        assert!(!dir.path().join(job_group::RECORD).exists());
    }

    /// Rank 1 fails while rank 0 would sleep for a minute: the group stops at once and
    /// the exit names rank 1; rank 0's sleep (a grandchild) is gone too.
    #[tokio::test]
    async fn the_first_failing_rank_stops_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("sleeper.pid");
        let rank0 = format!("sleep 60 & echo $! > {}; wait", pid.display());
        let launch = launch(
            dir.path(),
            &[&rank0, "sleep 0.3; echo no >&2; exit 3", "sleep 60"],
            None,
        );
        let machine = LocalMachine::default();
        let exit = machine.run(&launch).await.unwrap();
        assert_eq!((exit.rank, exit.code, exit.timed_out), (1, Some(3), false));
        assert!(exit.duration < Duration::from_secs(10), "{exit:?}");
        assert_eq!(machine.logs(&launch, 1, 5).await, "no");
        let sleeper: i32 = std::fs::read_to_string(&pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, or a zombie waiting for init to reap it.
        let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "rank 0's child outlived the group: {stat}"
        );
    }

    #[tokio::test]
    async fn the_timeout_acts_on_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let launch = launch(
            dir.path(),
            &["true", "sleep 60"],
            Some(Duration::from_millis(500)),
        );
        let exit = LocalMachine::default().run(&launch).await.unwrap();
        assert!(exit.timed_out, "{exit:?}");
        assert!(exit.duration < Duration::from_secs(10), "{exit:?}");
    }
}

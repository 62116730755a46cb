//! The `local` compute target: this machine. Owns GPU discovery (through cudarc, loaded
//! at run time so machines without CUDA work) and running job processes with a timeout,
//! captured logs and `CUDA_VISIBLE_DEVICES`, in a clean environment ([`ChildEnv`]), as a
//! process group that dies with the apply ([`job_group`]).

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

/// A process to run for a job attempt.
#[derive(Debug, Clone)]
pub struct Launch {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    pub log: PathBuf,
    pub timeout: Option<Duration>,
    /// GPU indexes to expose; an empty list hides all GPUs.
    pub gpus: Vec<u32>,
    /// The environment the process starts from (the allow-listed part of the caller's);
    /// `env` and `CUDA_VISIBLE_DEVICES` are set on top. Nothing else is inherited.
    pub base_env: ChildEnv,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
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

    /// Runs one attempt to completion (or timeout), writing its output to `launch.log`.
    async fn run(&self, launch: &Launch) -> Result<Exit, Error>;

    /// Returns the last `lines` non-empty lines an attempt wrote.
    async fn logs(&self, launch: &Launch, lines: usize) -> String;
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

    async fn logs(&self, launch: &Launch, lines: usize) -> String {
        let Ok(text) = tokio::fs::read_to_string(&launch.log).await else {
            return String::new();
        };
        let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    async fn run(&self, launch: &Launch) -> Result<Exit, Error> {
        let (program, args) = launch.command.split_first().ok_or(Error::EmptyCommand)?;
        if let Some(parent) = launch.log.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| Error::Log {
                    path: launch.log.clone(),
                    source,
                })?;
        }
        let log = std::fs::File::create(&launch.log).map_err(|source| Error::Log {
            path: launch.log.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| Error::Log {
            path: launch.log.clone(),
            source,
        })?;
        let visible = launch
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
            .envs(&launch.env)
            .env("CUDA_VISIBLE_DEVICES", visible)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        // The job's group dies with this process, however it ends (see `job_group`).
        let group = child.id();
        if let Some(pgid) = group {
            let _ = job_group::record(&launch.workdir, pgid);
        }
        let _watchdog = group.and_then(job_group::Watchdog::arm);
        let waited = match launch.timeout {
            Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
            None => Some(child.wait().await),
        };
        let result = match waited {
            Some(status) => {
                let status = status.map_err(|source| Error::Wait {
                    program: program.clone(),
                    source,
                })?;
                Ok(Exit {
                    code: status.code(),
                    timed_out: false,
                    duration: started.elapsed(),
                })
            }
            None => {
                kill_group(&mut child).await;
                Ok(Exit {
                    code: None,
                    timed_out: true,
                    duration: started.elapsed(),
                })
            }
        };
        job_group::forget(&launch.workdir);
        result
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

async fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)
    {
        // The job leads its own process group (see `process_group(0)`): signal the whole
        // group, so no grandchild outlives the timeout. A negative pid names the group;
        // `pid > 1` guarantees this is never `kill(-1)`, which would signal every process.
        // SAFETY: plain system call on a process group this process created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
    let _ = child.wait().await;
}

//! The client: [`SupervisorClient`] talks to the daemon of one state folder over its Unix
//! socket, one connection per call, and [`ensure_running`] starts the watchdog (detached,
//! with the allow-listed environment only) when no daemon answers. The routing calls are
//! in [`super::routing`].

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::logs::{log_tail, LOG_TAIL_LINES};
use super::process::describe_exit;
use super::protocol::{Request, Response, MAX_MESSAGE_BYTES};
use super::replica::PORT_ATTEMPTS;
use super::state::{create_state_dir, socket_path};
use super::{DaemonInfo, DeploymentSpec, Error, ReplicaStatus, Result, LOG_FILE};
use crate::backend::local::child_env::ChildEnv;

/// How long [`ensure_running`] waits for a daemon it started to answer.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Talks to the daemon of one state folder. Holds no connection: each call opens one, so
/// a client can be dropped, cloned or made again at any time.
#[derive(Debug, Clone)]
pub struct SupervisorClient {
    state_dir: PathBuf,
    socket: PathBuf,
}

/// Returns a client of the daemon for `state_dir`, starting `program supervise --state
/// STATE_DIR` (`program` being the `cairn` binary) first when no daemon answers. That
/// process (the watchdog, which runs the daemon) starts with `env` only: the caller's
/// own environment never reaches the daemon or its replicas.
pub async fn ensure_running(
    state_dir: &Path,
    program: &Path,
    env: &ChildEnv,
) -> Result<SupervisorClient> {
    SupervisorClient::ensure_running(state_dir, program, env).await
}

impl SupervisorClient {
    /// A client of the daemon for `state_dir`, whether one runs or not.
    pub fn new(state_dir: &Path) -> Result<SupervisorClient> {
        let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let socket = socket_path(&state_dir)?;
        Ok(SupervisorClient { state_dir, socket })
    }

    /// See [`ensure_running`].
    pub async fn ensure_running(
        state_dir: &Path,
        program: &Path,
        env: &ChildEnv,
    ) -> Result<SupervisorClient> {
        let client = SupervisorClient::new(state_dir)?;
        if client.ping().await.is_ok() {
            return Ok(client);
        }
        create_state_dir(&client.state_dir)?;
        let log_path = client.state_dir.join(LOG_FILE);
        let log_error = |source| Error::Log {
            path: log_path.clone(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(log_error)?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(log_error)?;
        let mut command = std::process::Command::new(program);
        env.apply_std(&mut command);
        command
            .arg("supervise")
            .arg("--state")
            .arg(&client.state_dir)
            .current_dir(&client.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // SAFETY: `setsid` is async-signal-safe and touches no memory of this process. It
        // makes the daemon a session leader, away from the caller's terminal and signals,
        // so serving outlives `cairn apply`.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut daemon = command.spawn().map_err(|source| Error::SpawnDaemon {
            program: program.to_path_buf(),
            source,
        })?;
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        let mut exited = false;
        loop {
            if client.ping().await.is_ok() {
                break;
            }
            if !exited {
                if let Ok(Some(status)) = daemon.try_wait() {
                    // Exit 0: another daemon won the lock; it will answer.
                    if !status.success() {
                        return Err(Error::DaemonExited {
                            status: describe_exit(status),
                            log_tail: log_tail(&log_path, log_offset, LOG_TAIL_LINES),
                            log: log_path,
                        });
                    }
                    exited = true;
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    socket: client.socket.clone(),
                    waited: DAEMON_START_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !exited {
            // The daemon is this process's child until this process exits; reap it when it
            // ends, so a long-lived caller is not left with a zombie.
            std::thread::spawn(move || {
                let _ = daemon.wait();
            });
        }
        Ok(client)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Returns the daemon's pid and version, if one answers.
    pub async fn ping(&self) -> Result<DaemonInfo> {
        match self.request(&Request::Ping, Duration::from_secs(5)).await? {
            Response::Pong { pid, version } => Ok(DaemonInfo { pid, version }),
            other => Err(unexpected(other)),
        }
    }

    /// Starts every replica the specs ask for and lacks, waits until all are ready, then
    /// stops surplus replicas; returns the replicas of these deployments. Other revisions
    /// and deployments are left alone. On any failure, whatever this call started is
    /// stopped and [`Error::StartFailed`] names each failure.
    pub async fn apply(&self, specs: &[DeploymentSpec]) -> Result<Vec<ReplicaStatus>> {
        for spec in specs {
            spec.validate()?;
        }
        let slowest = specs
            .iter()
            .map(|s| s.ready_timeout)
            .max()
            .unwrap_or_default();
        let waited = slowest * PORT_ATTEMPTS as u32 + Duration::from_secs(120);
        let request = Request::Apply {
            deployments: specs.to_vec(),
        };
        replicas(self.request(&request, waited).await?)
    }

    /// Returns every replica, in order of endpoint, deployment, revision and index.
    pub async fn status(&self) -> Result<Vec<ReplicaStatus>> {
        replicas(
            self.request(&Request::Status, Duration::from_secs(10))
                .await?,
        )
    }

    /// Stops the replicas of one revision of a deployment, or of all its revisions when
    /// `revision` is `None`; returns what was stopped (nothing, when nothing matched).
    pub async fn stop(
        &self,
        endpoint: &str,
        deployment: &str,
        revision: Option<&str>,
    ) -> Result<Vec<ReplicaStatus>> {
        let request = Request::Stop {
            endpoint: endpoint.into(),
            deployment: deployment.into(),
            revision: revision.map(String::from),
        };
        replicas(self.request(&request, Duration::from_secs(120)).await?)
    }

    /// Stops every replica, then the daemon; returns once it no longer answers.
    pub async fn shutdown(&self) -> Result<Vec<ReplicaStatus>> {
        let stopped = replicas(
            self.request(&Request::Shutdown, Duration::from_secs(120))
                .await?,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().await.is_ok() {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    socket: self.socket.clone(),
                    waited: Duration::from_secs(10),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(stopped)
    }

    pub(super) async fn request(&self, request: &Request, waited: Duration) -> Result<Response> {
        let exchange = async {
            let io = |source| Error::Exchange {
                socket: self.socket.clone(),
                source,
            };
            let stream =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| Error::Connect {
                        socket: self.socket.clone(),
                        source,
                    })?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_vec(request).map_err(|e| Error::Protocol {
                message: e.to_string(),
            })?;
            line.push(b'\n');
            write.write_all(&line).await.map_err(io)?;
            let mut answer = Vec::new();
            BufReader::new(read)
                .take(MAX_MESSAGE_BYTES)
                .read_until(b'\n', &mut answer)
                .await
                .map_err(io)?;
            if answer.is_empty() {
                return Err(Error::Protocol {
                    message: "the supervisor closed the connection without answering".into(),
                });
            }
            serde_json::from_slice::<Response>(&answer).map_err(|e| Error::Protocol {
                message: e.to_string(),
            })
        };
        match tokio::time::timeout(waited, exchange).await {
            Ok(Ok(Response::Error { error })) => Err(error.into()),
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                socket: self.socket.clone(),
                waited,
            }),
        }
    }
}

fn replicas(response: Response) -> Result<Vec<ReplicaStatus>> {
    match response {
        Response::Replicas { replicas } => Ok(replicas),
        other => Err(unexpected(other)),
    }
}

pub(super) fn unexpected(response: Response) -> Error {
    Error::Protocol {
        message: format!("unexpected answer {response:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_state_folders_are_refused_before_binding() {
        let long = PathBuf::from("/tmp").join("x".repeat(120));
        assert!(matches!(
            SupervisorClient::new(&long),
            Err(Error::SocketPathTooLong { .. })
        ));
    }
}

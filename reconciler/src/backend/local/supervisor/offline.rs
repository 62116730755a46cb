//! Stopping without a daemon (`cairn supervise --stop`): [`stop_without_daemon`] stops
//! the watchdog that holds the folder and every process `state.json` records, with the
//! same pid checks as the daemon, and empties the state.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lock::{lock_holder, take_lock};
use super::process::{proc_stat, signal_process};
use super::recover::recorded_process;
use super::registry::{Deployment, Registry, Replica};
use super::state::{read_state, write_state, StateFile};
use super::{Error, ReplicaId, ReplicaStatus, Result, LOCK_FILE, SOCKET_FILE, STATE_FILE};

/// What [`stop_without_daemon`] stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineStop {
    /// The watchdog that held the folder and was asked to exit.
    pub watchdog: Option<u32>,
    /// The recorded replicas whose processes still ran.
    pub replicas: Vec<ReplicaStatus>,
}

/// Stops everything `state.json` of `state_dir` records while no daemon answers: a
/// watchdog that still holds the lock is asked to exit (SIGTERM) first; then, holding
/// the lock so that no daemon starts meanwhile, every recorded replica still alive (same
/// pid, same start time, leading its group) gets SIGTERM to its group, SIGKILL after
/// `grace`, and the state is emptied, so a later daemon restarts nothing. Fails with
/// [`Error::Unresponsive`] when the lock is still held after that.
pub async fn stop_without_daemon(state_dir: &Path, grace: Duration) -> Result<OfflineStop> {
    let dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    if !dir.join(STATE_FILE).exists() && !dir.join(LOCK_FILE).exists() {
        return Ok(OfflineStop::default());
    }
    let mut stopped = OfflineStop::default();
    let lock = match take_lock(&dir).await {
        Ok(lock) => lock,
        Err(Error::AlreadyRunning { .. }) => {
            let holder = lock_holder(&dir);
            if let Some((pid, ticks)) = holder {
                if proc_stat(pid)
                    .is_some_and(|s| s.start_ticks == ticks && !matches!(s.state, 'Z' | 'X' | 'x'))
                {
                    signal_process(pid, libc::SIGTERM);
                    stopped.watchdog = Some(pid);
                }
            }
            let deadline = Instant::now() + grace + Duration::from_secs(10);
            loop {
                match take_lock(&dir).await {
                    Ok(lock) => break lock,
                    Err(Error::AlreadyRunning { .. }) if Instant::now() < deadline => {}
                    Err(Error::AlreadyRunning { .. }) => {
                        return Err(Error::Unresponsive {
                            state_dir: dir,
                            pid: holder.map(|(pid, _)| pid),
                        })
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        Err(other) => return Err(other),
    };
    let state = read_state(&dir)?;
    let mut registry = Registry::default();
    let mut processes = Vec::new();
    for record in state.deployments {
        let key = record.spec.key();
        let mut replicas = BTreeMap::new();
        for replica in record.replicas {
            let id = ReplicaId {
                key: key.clone(),
                index: replica.index,
            };
            if let Some(running) = recorded_process(&dir, &id, &replica.observed) {
                processes.push(running);
                replicas.insert(
                    replica.index,
                    Replica {
                        observed: replica.observed,
                        control: None,
                    },
                );
            }
        }
        registry.deployments.insert(
            key,
            Deployment {
                spec: Arc::new(record.spec),
                confirmed: record.confirmed,
                stopping: true,
                replicas,
                scaled: record.scaled,
            },
        );
    }
    stopped.replicas = registry.statuses(&dir, |_| true);
    let poll = Duration::from_millis(20);
    futures::future::join_all(
        processes
            .iter_mut()
            .map(|running| running.terminate(grace, poll)),
    )
    .await;
    write_state(&dir, &StateFile::empty())?;
    let _ = std::fs::remove_file(dir.join(SOCKET_FILE));
    drop(lock);
    Ok(stopped)
}

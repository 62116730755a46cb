//! One replica's life: [`launch`] registers it and starts its task, which starts the
//! process on a free loopback port and waits until it is ready, watches it, restarts it
//! after a crash (with [`Backoff`]), and stops it when asked.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use super::daemon::{DaemonOptions, Shared};
use super::health::{probe, watch_health};
use super::logs::{log_tail, mentions_port_in_use, replica_log, LOG_TAIL_LINES};
use super::process::{proc_stat, Running};
use super::registry::{Control, Observed, Registry, Replica};
use super::{
    loopback, DeploymentSpec, Event, ReplicaId, ReplicaState, StartFailure, ADDR_PLACEHOLDER,
    PORT_PLACEHOLDER,
};
use crate::backend::local::child_env::ChildEnv;

/// Tries to start a replica when its port turns out to be taken.
pub(super) const PORT_ATTEMPTS: usize = 3;

/// How a replica's task begins.
pub(super) enum Init {
    /// An apply's first start; the outcome goes back to the apply.
    Start(oneshot::Sender<std::result::Result<(), StartError>>),
    /// A process a previous daemon started, alive and ready.
    Adopted(Box<Running>),
    /// A process that is gone; start it again after the backoff.
    Restart(String),
}

/// Why a start did not end with a ready replica.
#[derive(Debug)]
pub(super) enum StartError {
    /// Asked to stop before it was ready.
    Stopped,
    Failed(StartFailure),
}

/// Registers a replica and starts the task that watches it.
pub(super) fn launch(
    shared: &Arc<Shared>,
    registry: &mut Registry,
    id: ReplicaId,
    spec: Arc<DeploymentSpec>,
    observed: Observed,
    init: Init,
) {
    let Some(deployment) = registry.deployments.get_mut(&id.key) else {
        return;
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(replica_task(
        shared.clone(),
        id.clone(),
        spec,
        init,
        stopped,
    ));
    deployment.replicas.insert(
        id.index,
        Replica {
            observed,
            control: Some(Control { stop, task }),
        },
    );
}

/// Restart delays: doubling from the initial delay up to the maximum, back to the initial
/// delay after a replica stayed up long enough.
#[derive(Debug, Clone)]
struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    next: Duration,
}

impl Backoff {
    fn new(options: &DaemonOptions) -> Backoff {
        Backoff {
            initial: options.backoff_initial,
            max: options.backoff_max,
            reset_after: options.backoff_reset,
            next: options.backoff_initial,
        }
    }

    /// The replica ran this long before it crashed.
    fn ran_for(&mut self, uptime: Duration) {
        if uptime >= self.reset_after {
            self.next = self.initial;
        }
    }

    fn delay(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = (delay * 2).min(self.max);
        delay
    }
}

/// A replica's task: runs it, restarts it after each exit (with the backoff), and stops
/// it when asked.
async fn replica_task(
    shared: Arc<Shared>,
    id: ReplicaId,
    spec: Arc<DeploymentSpec>,
    init: Init,
    mut stop: watch::Receiver<bool>,
) {
    let options = shared.options.clone();
    let mut backoff = Backoff::new(&options);
    let mut port = None;
    // Whether the last start failed (exited or never answered before it was ready): a
    // replica in a crash loop always backs off.
    let mut start_failed = false;
    let (mut running, mut reason) = match init {
        Init::Start(reply) => match start(&shared, &id, &spec, None, &mut stop).await {
            Ok(running) => {
                let _ = reply.send(Ok(()));
                (Some(running), String::new())
            }
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        },
        Init::Adopted(running) => (Some(*running), String::new()),
        Init::Restart(reason) => (None, reason),
    };
    loop {
        if let Some(mut process) = running.take() {
            let up = Instant::now();
            let addr = process.addr();
            let pid = process.pid;
            let how = tokio::select! {
                how = process.exited(options.poll) => how,
                never = watch_health(&shared, &id, pid, addr, &spec.health_path) => match never {},
                _ = stopped(&mut stop) => {
                    let how = process.terminate(options.stop_grace, options.poll).await;
                    shared.event(Event::Stopped { replica: id.clone(), pid: process.pid, how });
                    return;
                }
            };
            shared.event(Event::Exited {
                replica: id.clone(),
                pid: process.pid,
                how: how.clone(),
            });
            backoff.ran_for(up.elapsed());
            port = Some(process.port);
            reason = how;
        }
        shared.update(&id, |o| {
            o.pid = None;
            o.start_ticks = None;
            o.state = ReplicaState::Crashed {
                reason: reason.clone(),
            };
        });
        // Per replica the delay grows; but a revision left with no ready replica serves
        // nothing, so a replica that served restarts after the first delay, never more.
        let delay = if !start_failed && !shared.has_ready_replica(&id.key) {
            options.backoff_initial
        } else {
            backoff.delay()
        };
        shared.event(Event::Restarting {
            replica: id.clone(),
            delay,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
        shared.update(&id, |o| {
            o.restarts = o.restarts.saturating_add(1);
            o.state = ReplicaState::Starting;
        });
        match start(&shared, &id, &spec, port, &mut stop).await {
            Ok(process) => {
                start_failed = false;
                running = Some(process);
            }
            Err(StartError::Stopped) => return,
            Err(StartError::Failed(failure)) => {
                start_failed = true;
                reason = failure.reason;
            }
        }
    }
}

/// Resolves once the replica is asked to stop (or nobody can ask any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Starts a replica and waits until it is ready; on another port when its port turns out
/// to be taken.
async fn start(
    shared: &Shared,
    id: &ReplicaId,
    spec: &DeploymentSpec,
    mut preferred: Option<u16>,
    stop: &mut watch::Receiver<bool>,
) -> std::result::Result<Running, StartError> {
    let options = &shared.options;
    let log = replica_log(&shared.dir, id);
    let fail = |reason: String, log_tail: String| {
        shared.event(Event::StartFailed {
            replica: id.clone(),
            reason: reason.clone(),
        });
        StartError::Failed(StartFailure {
            replica: id.clone(),
            reason,
            log: log.clone(),
            log_tail,
        })
    };
    for attempt in 1..=PORT_ATTEMPTS {
        let Some(port) = shared.pick_port(id, preferred.take()) else {
            return Err(fail("no free loopback port".into(), String::new()));
        };
        let mut running = spawn_replica(&shared.dir, &options.child_env, id, spec, port)
            .map_err(|reason| fail(reason, String::new()))?;
        shared.update(id, |o| {
            o.pid = Some(running.pid);
            o.start_ticks = running.start_ticks;
            o.state = ReplicaState::Starting;
        });
        shared.event(Event::Started {
            replica: id.clone(),
            pid: running.pid,
            addr: running.addr(),
        });
        match wait_ready(&mut running, spec, options.poll, stop).await {
            Ok(()) => {
                shared.update(id, |o| o.state = ReplicaState::Ready);
                shared.event(Event::Ready {
                    replica: id.clone(),
                    pid: running.pid,
                    addr: running.addr(),
                });
                return Ok(running);
            }
            Err(None) => {
                let how = running.terminate(options.stop_grace, options.poll).await;
                shared.event(Event::Stopped {
                    replica: id.clone(),
                    pid: running.pid,
                    how,
                });
                return Err(StartError::Stopped);
            }
            Err(Some(reason)) => {
                running.terminate(options.stop_grace, options.poll).await;
                shared.update(id, |o| {
                    o.pid = None;
                    o.start_ticks = None;
                });
                let tail = log_tail(&running.log, running.log_offset, LOG_TAIL_LINES);
                if attempt < PORT_ATTEMPTS && mentions_port_in_use(&tail) {
                    continue;
                }
                return Err(fail(reason, tail));
            }
        }
    }
    Err(fail(
        format!("its port was taken {PORT_ATTEMPTS} times in a row"),
        String::new(),
    ))
}

/// Polls until the replica answers its health path (`Ok`), exits or runs out of time
/// (`Err(Some(reason))`), or is asked to stop (`Err(None)`).
async fn wait_ready(
    running: &mut Running,
    spec: &DeploymentSpec,
    poll: Duration,
    stop: &mut watch::Receiver<bool>,
) -> std::result::Result<(), Option<String>> {
    let started = Instant::now();
    loop {
        if *stop.borrow() {
            return Err(None);
        }
        if running.has_exited() {
            let how = running.reap().await;
            return Err(Some(format!("{how} before it was ready")));
        }
        if probe(
            running.addr(),
            &spec.health_path,
            poll.max(Duration::from_millis(500)),
        )
        .await
        {
            return Ok(());
        }
        if started.elapsed() >= spec.ready_timeout {
            return Err(Some(format!(
                "not ready after {}: `{}` on {} never answered 200",
                humantime::format_duration(spec.ready_timeout),
                spec.health_path,
                running.addr()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stopped(stop) => return Err(None),
        }
    }
}

/// Starts the replica's process on `port`, its own process group, with the allow-listed
/// environment, its output appended to its log.
fn spawn_replica(
    dir: &Path,
    child_env: &ChildEnv,
    id: &ReplicaId,
    spec: &DeploymentSpec,
    port: u16,
) -> std::result::Result<Running, String> {
    let log = replica_log(dir, id);
    if let Some(parent) = log.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot create the log folder `{}`: {e}", parent.display()))?;
    }
    let open = || {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)?;
        writeln!(
            file,
            "--- cairn supervise: starting {id} on 127.0.0.1:{port} at {} ---",
            humantime::format_rfc3339_seconds(SystemTime::now())
        )?;
        let offset = file.metadata()?.len();
        let err = file.try_clone()?;
        Ok::<_, std::io::Error>((file, err, offset))
    };
    let (out, err, log_offset) =
        open().map_err(|e| format!("cannot write the log `{}`: {e}", log.display()))?;
    let args: Vec<String> = spec
        .command
        .iter()
        .map(|a| {
            a.replace(ADDR_PLACEHOLDER, &loopback(port).to_string())
                .replace(PORT_PLACEHOLDER, &port.to_string())
        })
        .collect();
    let Some((program, rest)) = args.split_first() else {
        return Err("the command is empty".into());
    };
    let workdir = spec.workdir.clone().unwrap_or_else(|| dir.to_path_buf());
    let mut command =
        tokio::process::Command::new(crate::backend::local::resolve_program(program, &workdir));
    // The allow-listed base environment only: the daemon's own never reaches a replica.
    child_env.apply_tokio(&mut command);
    command
        .args(rest)
        .current_dir(&workdir)
        .envs(&spec.env)
        .env("CAIRN_ENDPOINT", &id.key.endpoint)
        .env("CAIRN_DEPLOYMENT", &id.key.deployment)
        .env("CAIRN_REVISION", &id.key.revision)
        .env("CAIRN_REPLICA", id.index.to_string())
        .env("CAIRN_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own group, so stopping it reaches whatever it starts; and no kill on drop:
        // replicas outlive the daemon.
        .process_group(0)
        .kill_on_drop(false);
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start `{program}` in `{}`: {e}", workdir.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| format!("`{program}` exited at once"))?;
    Ok(Running {
        pid,
        start_ticks: proc_stat(pid).map(|s| s.start_ticks),
        port,
        child: Some(child),
        log,
        log_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let options = DaemonOptions::default();
        let mut backoff = Backoff::new(&options);
        let delays: Vec<u64> = (0..9).map(|_| backoff.delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        backoff.ran_for(Duration::from_secs(59));
        assert_eq!(backoff.delay(), Duration::from_secs(30));
        backoff.ran_for(Duration::from_secs(60));
        assert_eq!(backoff.delay(), Duration::from_millis(500));
        assert_eq!(backoff.delay(), Duration::from_secs(1));
    }
}

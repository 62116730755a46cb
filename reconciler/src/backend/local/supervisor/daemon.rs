//! The daemon: [`run_daemon`] takes the state folder (its lock, or the watchdog's),
//! takes over from the previous daemon ([`super::recover`]), serves requests on the
//! socket until shutdown or a signal, and leaves the replicas serving when it exits.
//! [`Shared`] is what its tasks share: options, the [`Registry`], the locks that order
//! changes, the link to the watchdog; each connection is answered by
//! [`handle_connection`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use super::apply::{apply, shutdown, stop, Scale};
use super::lock::take_lock;
use super::protocol::{Request, Response, WireError, MAX_MESSAGE_BYTES};
use super::recover::recover;
use super::registry::{Observed, Registry};
use super::state::{create_state_dir, read_state, socket_path, write_state};
use super::{
    routing, DeploymentKey, Error, Event, ReplicaId, ReplicaState, ReplicaStatus, Result,
    WatchdogLink,
};
use crate::backend::local::child_env::ChildEnv;

/// Timings of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonOptions {
    /// How long a stopped replica may take to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// The first restart delay after a crash.
    pub backoff_initial: Duration,
    /// The longest restart delay.
    pub backoff_max: Duration,
    /// A replica up this long restarts after [`DaemonOptions::backoff_initial`] again.
    pub backoff_reset: Duration,
    /// How often processes and readiness are polled.
    pub poll: Duration,
    /// How often a running replica's health path is checked.
    pub health_every: Duration,
    /// How long one health check may take.
    pub health_timeout: Duration,
    /// Failed health checks in a row after which a ready replica is not ready.
    pub health_failures: u32,
    /// The base environment of replicas (the spec's `env` and `CAIRN_*` go on top).
    pub child_env: ChildEnv,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            stop_grace: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            backoff_reset: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            health_every: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            health_failures: 3,
            child_env: ChildEnv::empty(),
        }
    }
}

/// Runs the daemon for `state_dir` until
/// [`SupervisorClient::shutdown`](super::SupervisorClient::shutdown), SIGTERM or SIGINT;
/// `events` hears what it does. Fails with [`Error::AlreadyRunning`] when another daemon
/// holds the folder. Under a watchdog ([`run_watchdog`](super::run_watchdog), which
/// passes `watchdog`), the lock and the routers' listening sockets come from the watchdog
/// and every new listening socket goes back to it.
pub async fn run_daemon(
    state_dir: &Path,
    options: DaemonOptions,
    watchdog: Option<WatchdogLink>,
    events: impl Fn(&Event) + Send + Sync + 'static,
) -> Result<()> {
    let dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    create_state_dir(&dir)?;
    let socket = socket_path(&dir)?;
    // Held until this function returns. Opened close-on-exec, like every descriptor Rust
    // opens, so replicas never inherit it and a killed daemon's lock dies with it (under a
    // watchdog, which holds it too, the lock outlives this daemon).
    let (_lock, inherited) = match &watchdog {
        Some(link) => {
            let handover = link.receive_handover()?;
            (handover.lock, handover.listeners)
        }
        None => (take_lock(&dir).await?, BTreeMap::new()),
    };
    let state = read_state(&dir)?;
    let (mut terminate, mut interrupt) = stop_signals()?;
    // A socket file left by a daemon that died; this one holds the lock, so it is stale.
    let _ = std::fs::remove_file(&socket);
    let listen_error = |source| Error::Listen {
        path: socket.clone(),
        source,
    };
    let listener = UnixListener::bind(&socket).map_err(listen_error)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(listen_error)?;

    let shared = Arc::new(Shared {
        dir,
        options,
        registry: Mutex::new(Registry::default()),
        serial: tokio::sync::Mutex::new(()),
        routing: tokio::sync::Mutex::new(()),
        router_ids: AtomicU64::new(0),
        closing: AtomicBool::new(false),
        exit: Notify::new(),
        events: Box::new(events),
        watchdog,
        inherited: Mutex::new(inherited),
    });
    recover(&shared, state).await;
    shared.forget_unclaimed();
    let mut chores = routing::spawn_chores(&shared);
    chores.push(super::autoscale::spawn_autoscaler(&shared));
    shared.event(Event::Listening {
        socket: socket.clone(),
        pid: std::process::id(),
    });
    if let Some(link) = &shared.watchdog {
        if let Err(e) = link.serving() {
            shared.event(Event::HandoverFailed {
                message: format!("cannot tell the watchdog this daemon serves: {e}"),
            });
        }
    }

    let reason = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle_connection(shared.clone(), stream));
                }
                Err(e) => {
                    shared.event(Event::BadRequest { message: format!("accept failed: {e}") });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shared.exit.notified() => break "shutdown requested",
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
        }
    };
    for chore in chores {
        chore.abort();
    }
    let left = shared.registry().replica_count();
    let _ = std::fs::remove_file(&socket);
    shared.event(Event::Exiting {
        reason: reason.into(),
        replicas_left: left,
    });
    Ok(())
}

/// SIGTERM and SIGINT, on which the daemon (and its watchdog) stop cleanly.
pub(super) fn stop_signals() -> Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{signal, SignalKind};
    let on = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| Error::Signal {
            signal: name,
            source,
        })
    };
    Ok((
        on(SignalKind::terminate(), "SIGTERM")?,
        on(SignalKind::interrupt(), "SIGINT")?,
    ))
}

pub(super) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) options: DaemonOptions,
    pub(super) registry: Mutex<Registry>,
    /// Serializes requests that change what runs (apply, stop, shutdown).
    pub(super) serial: tokio::sync::Mutex<()>,
    /// Serializes changes of routes (route, set_weights, unroute, rebinding, and the
    /// check that a stopped revision carries no traffic). Never held across an apply.
    pub(super) routing: tokio::sync::Mutex<()>,
    /// Numbers the routers this daemon binds.
    pub(super) router_ids: AtomicU64,
    /// Set by shutdown: later changes are refused.
    pub(super) closing: AtomicBool,
    pub(super) exit: Notify,
    pub(super) events: Box<dyn Fn(&Event) + Send + Sync>,
    /// The watchdog this daemon runs under, if any: it keeps the routers' listeners.
    pub(super) watchdog: Option<WatchdogLink>,
    /// Listening sockets the watchdog handed over, by endpoint, until a router takes them.
    pub(super) inherited: Mutex<BTreeMap<String, (SocketAddr, std::net::TcpListener)>>,
}

impl Shared {
    pub(super) fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere must not stop supervision: the data stays consistent enough.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn event(&self, event: Event) {
        (self.events)(&event);
    }

    pub(super) fn persist(&self, registry: &Registry) {
        if let Err(e) = write_state(&self.dir, &registry.to_file()) {
            self.event(Event::StateNotSaved {
                message: crate::diagnostics::error_chain(&e),
            });
        }
    }

    /// Changes one replica's record (if it is still registered), saves the state, and
    /// brings the endpoint's router up to date with its ready replicas.
    pub(super) fn update(&self, id: &ReplicaId, change: impl FnOnce(&mut Observed)) {
        let mut registry = self.registry();
        if let Some(replica) = registry.replica_mut(id) {
            change(&mut replica.observed);
            self.persist(&registry);
            self.sync_routes(&mut registry, &id.key.endpoint);
        }
    }

    /// Refuses a change once shutdown began.
    pub(super) fn refuse_if_closing(&self) -> Result<()> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::Refused {
                message: "the supervisor is shutting down".into(),
            });
        }
        Ok(())
    }

    /// Whether a replica of that revision is ready.
    pub(super) fn has_ready_replica(&self, key: &DeploymentKey) -> bool {
        self.registry().deployments.get(key).is_some_and(|d| {
            d.replicas
                .values()
                .any(|r| r.observed.state == ReplicaState::Ready)
        })
    }

    /// Picks a loopback port for a replica and records it: `preferred` when it is free,
    /// else one the kernel hands out that no other replica uses.
    pub(super) fn pick_port(&self, id: &ReplicaId, preferred: Option<u16>) -> Option<u16> {
        let mut registry = self.registry();
        let taken: BTreeSet<u16> = registry
            .deployments
            .iter()
            .flat_map(|(key, d)| {
                d.replicas
                    .iter()
                    .filter(move |(index, _)| !(key == &id.key && **index == id.index))
                    .filter_map(|(_, r)| r.observed.port)
            })
            .collect();
        let free = |port: u16| {
            !taken.contains(&port)
                && std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        };
        let port = preferred.filter(|p| free(*p)).or_else(|| {
            (0..32).find_map(|_| {
                let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
                let port = listener.local_addr().ok()?.port();
                (!taken.contains(&port)).then_some(port)
            })
        })?;
        if let Some(replica) = registry.replica_mut(id) {
            replica.observed.port = Some(port);
        }
        Some(port)
    }
}

async fn handle_connection(shared: Arc<Shared>, stream: UnixStream) {
    // SAFETY: `geteuid` cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if !stream.peer_cred().is_ok_and(|c| c.uid() == me) {
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    if BufReader::new(read)
        .take(MAX_MESSAGE_BYTES)
        .read_until(b'\n', &mut line)
        .await
        .is_err()
    {
        return;
    }
    let mut exit = false;
    let response = match serde_json::from_slice::<Request>(&line) {
        Err(e) => {
            let message = format!("not a request: {e}");
            shared.event(Event::BadRequest {
                message: message.clone(),
            });
            Response::Error {
                error: WireError::Refused { message },
            }
        }
        Ok(Request::Ping) => Response::Pong {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        Ok(Request::Status) => {
            let registry = shared.registry();
            Response::Replicas {
                replicas: registry.statuses(&shared.dir, |_| true),
            }
        }
        Ok(Request::Apply { deployments }) => {
            answer(apply(&shared, deployments, Scale::Keep).await)
        }
        Ok(Request::Stop {
            endpoint,
            deployment,
            revision,
        }) => answer(stop(&shared, &endpoint, &deployment, revision.as_deref()).await),
        Ok(Request::Shutdown) => {
            exit = true;
            answer(shutdown(&shared).await)
        }
        Ok(Request::Route { route }) => reply(routing::route(&shared, route).await, |route| {
            Response::Route { route }
        }),
        Ok(Request::SetWeights { endpoint, weights }) => reply(
            routing::set_weights(&shared, &endpoint, weights).await,
            |()| Response::Done,
        ),
        Ok(Request::SetMirror { endpoint, mirror }) => reply(
            routing::set_mirror(&shared, &endpoint, mirror).await,
            |()| Response::Done,
        ),
        Ok(Request::Routes) => Response::Routes {
            routes: routing::statuses(&shared),
        },
        Ok(Request::Ready { endpoint, backend }) => reply(
            routing::ready(&shared, &endpoint, &backend).await,
            |ready| Response::Ready { ready },
        ),
        Ok(Request::Stats { endpoint, backend }) => {
            reply(routing::stats(&shared, &endpoint, &backend), |stats| {
                Response::Stats { stats }
            })
        }
        Ok(Request::Unroute { endpoint }) => {
            routing::unroute(&shared, &endpoint).await;
            Response::Done
        }
        Ok(Request::StopLater {
            endpoint,
            deployment,
            revision,
            after_ms,
        }) => {
            let key = DeploymentKey {
                endpoint,
                deployment,
                revision,
            };
            reply(
                routing::stop_later(&shared, key, Duration::from_millis(after_ms)),
                |()| Response::Done,
            )
        }
    };
    // Encoding plain data cannot fail; should it, the client still gets a valid answer.
    let mut bytes = serde_json::to_vec(&response).unwrap_or_else(|_| {
        br#"{"result":"error","error":{"kind":"refused","message":"cannot encode the answer"}}"#
            .to_vec()
    });
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
    let _ = write.shutdown().await;
    if exit {
        shared.exit.notify_one();
    }
}

fn reply<T>(result: Result<T>, ok: impl FnOnce(T) -> Response) -> Response {
    match result {
        Ok(value) => ok(value),
        Err(error) => Response::Error {
            error: error.into(),
        },
    }
}

fn answer(result: std::result::Result<Vec<ReplicaStatus>, WireError>) -> Response {
    match result {
        Ok(replicas) => Response::Replicas { replicas },
        Err(error) => Response::Error { error },
    }
}

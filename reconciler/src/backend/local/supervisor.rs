//! The supervisor of local serving processes: runs each endpoint deployment of the `local`
//! target as supervised processes (replicas), restarts the ones that crash, hosts each
//! endpoint's traffic router in front of them, and keeps both serving after `cairn apply`
//! exits.
//!
//! Serving has to outlive the command that asked for it, so the supervisor is a small
//! daemon, one per state folder, run by a watchdog: `cairn supervise --state DIR` (a
//! hidden subcommand) is the watchdog ([`run_watchdog`], in `watchdog.rs`), which runs the
//! daemon ([`run_daemon`]) as its child, restarts it when it dies and keeps the routers'
//! listening sockets open meanwhile. A [`SupervisorClient`] talks to the daemon over a
//! Unix socket; [`ensure_running`] starts the watchdog (detached: its own session, its
//! output and the daemon's in `DIR/supervisor.log`, the allow-listed [`ChildEnv`] as its
//! only environment) when no daemon answers.
//!
//! Flow of [`SupervisorClient::apply`]: every replica a deployment lacks is started as
//! its own process group on a free loopback port (the daemon binds `127.0.0.1:0`, releases
//! the port and passes it through the `{{ port }}` / `{{ addr }}` placeholders of the
//! command), then its health path (`/healthz`) is polled until it answers 200. When every
//! replica of the request is ready the apply is confirmed and surplus replicas (a lower
//! `replicas`) are stopped; when one exits or is not ready in time, every replica the
//! request started is stopped again and the error names each failure with the last lines
//! of its log. Deployments are keyed by endpoint, deployment *and* revision, so a new
//! revision starts beside the old one, which keeps serving until [`SupervisorClient::stop`]
//! retires it (blue-green needs both).
//!
//! Routing (in `routing.rs`): [`SupervisorClient::route`] gives an endpoint one
//! [`super::router`] on its `listen` address, whose backends (the names the pin header
//! uses, e.g. `blue` or `blue@3f2a9c`) are deployment revisions that were applied. The
//! daemon keeps each router's addresses in step with its replicas: a replica is routed to
//! once Ready and no more once it crashed or is being stopped; one restarted on another
//! port is routed to there. The rollout engine then moves traffic with
//! [`SupervisorClient::set_weights`] (a route swap in memory and a state write, no process
//! started), reads [`SupervisorClient::ready`] and [`SupervisorClient::stats`] through
//! [`RouteTraffic`], and retires the old revision with [`SupervisorClient::stop_later`]
//! once drained.
//!
//! Guarantees:
//! - Nothing half-applied: an apply either leaves every replica it asked for ready, or
//!   stops all it started and leaves what ran before untouched. Replicas are recorded as
//!   unconfirmed until their apply succeeds; a daemon that dies mid-apply is replaced by
//!   one that tears unconfirmed replicas down instead of adopting them.
//! - A crashed replica is restarted (same port when it is still free) after a backoff of
//!   0.5 s doubling to 30 s, back to 0.5 s once a replica stayed up for 60 s; `restarts`
//!   counts every restart, like Kubernetes' restart count. A replica that served is
//!   restarted after the first delay (0.5 s), never more, when no replica of its revision
//!   is ready (the revision serves nothing meanwhile); one whose last start failed always
//!   backs off (a crash loop).
//! - Ready means answering now: every running replica's health path is checked each
//!   second (1 s timeout); after 3 failures in a row it is [`ReplicaState::NotReady`] and
//!   no longer routed to (a stopped or hung process), and ready again at its next answer.
//!   It is not restarted for that (no liveness probe).
//! - Serving survives the daemon: the watchdog restarts a daemon that dies (at once, or
//!   backing off to 30 s when it keeps dying within 10 s) and holds a copy of every
//!   router's listening socket, so while the daemon is down the ports stay bound and new
//!   connections wait in the kernel's backlog for the next daemon, which re-adopts the
//!   replicas and serves the routers on those same sockets. Only requests the dead
//!   daemon had accepted fail.
//! - Replicas start with [`DaemonOptions::child_env`] (the allow-listed variables the CLI
//!   passes) plus the spec's `env` and the `CAIRN_*` variables: never with the
//!   environment of the daemon or of the command that started it.
//! - Live state survives the daemon: desired and observed state are written to
//!   `DIR/state.json` (temporary file + rename) on every change. A new daemon re-adopts
//!   each recorded process still alive — same pid and start time in `/proc`, answering its
//!   health path — and restarts the others. With no daemon at all,
//!   [`stop_without_daemon`] (`cairn supervise --stop`) stops every process the state
//!   records, with the same pid checks.
//! - Stopping a replica sends SIGTERM to its process group, SIGKILL after a grace period
//!   (10 s), and SIGKILL to whatever the group still holds once the leader exits. Signals
//!   go through `libc::kill(-pgid)` with `pgid > 1`, never `kill(-1)`; a group is only
//!   signalled while its id is known to be reserved (an unreaped leader, or a live process
//!   with the recorded start time), so a reused pid is never hit.
//! - Only processes started by the same user may talk to the daemon (the socket is
//!   `0600` in a `0700` folder and peers are checked with `SO_PEERCRED`): requests run
//!   commands.
//! - A router binds before anything changes: a new router, or a new `listen`, whose port
//!   is in use fails with [`Error::PortInUse`] and leaves the previous router and routes
//!   as they were. Route changes swap the router's table atomically, so requests in flight
//!   finish where they started; a moved or closed router finishes its requests in flight.
//! - Traffic never goes to a stopped revision: [`SupervisorClient::stop`] (and a scheduled
//!   stop) of a revision a route gives weight is refused ([`Error::StillRouted`]); at 0 %
//!   it is first taken off the route and its mirror. A backend left with no ready replica
//!   keeps its last addresses, so its requests are answered 502.
//! - Routes and scheduled stops are in `state.json` too. A new daemon binds every recorded
//!   router again (same port, weights, key); a port it cannot bind is reported as not
//!   serving, with the reason, and tried again every 3 s. A stop that came due while no
//!   daemon ran happens at once.
//! - A route's key is never seen by the daemon: clients send the SHA-256 of it, which is
//!   what the router compares (in constant time) and what `state.json` holds.
//!
//! Files in the state folder: `supervisor.sock` (requests), `supervisor.lock` (`flock`,
//! held by the watchdog and its daemon for their whole lives: one supervisor per folder;
//! it holds the holder's pid and start time), `supervisor.log` (their output), `state.json`, and `logs/<endpoint>/<deployment>/<revision>/replica-N.log`
//! (each replica's stdout and stderr, appended across restarts).
//!
//! Protocol: one JSON request per connection, one line each way (`{"op": "apply",
//! "deployments": [...]}` → `{"result": "replicas", "replicas": [...]}` or `{"result":
//! "error", "error": {"kind": ..., ...}}`). Ops and their answers: `ping` → `pong`;
//! `status`, `apply`, `stop`, `shutdown` → `replicas`; `route` → `route`; `routes` →
//! `routes`; `ready` → `ready`; `stats` → `stats`; `set_weights`, `unroute`, `stop_later`
//! → `done`. Errors keep their variant across the socket.
//!
//! The daemon leaves its replicas serving when it is killed or gets SIGTERM (a new daemon
//! re-adopts them); only [`SupervisorClient::shutdown`] (or [`stop_without_daemon`])
//! stops everything, routers first.
//! It does no terminal I/O: it reports what happens as [`Event`]s, which `cairn supervise`
//! writes to its log.
//!
//! Caveats: Linux only (`/proc`, `waitid`, `SO_PEERCRED`). A process the daemon adopted is
//! not its child, so it is watched by polling `/proc` and its exit status is unknown, and
//! what its group held is left alone if another reaper collects the leader first. A
//! replica counts as crashed when its process exits, not when its health path stops
//! answering (no liveness probe). Ports are picked then released, so another program can
//! take one in between; a replica that fails with "address in use" is retried on another
//! port (three times). Commands should use absolute paths: replicas run in the spec's
//! `workdir`, by default the state folder, with only the allow-listed `PATH`. Routers run
//! inside the daemon: while it restarts, connections wait (a second or less) rather than
//! fail, but if the watchdog is gone too (both killed) nothing listens on the endpoint's
//! port until the next [`ensure_running`]; a router's counters start from 0 when it is
//! bound again (new daemon, new `listen`). While no daemon runs, a replica that crashes is
//! not restarted. Serving across reboots needs the supervisor run as a service
//! ([`systemd_unit`]). A scheduled stop whose revision
//! carries traffic by weight when it comes due is dropped, not postponed. A route's
//! `listen` must name a port (not 0), so that it stays the same across restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{oneshot, watch, Notify};

use crate::rollout::{Stats, Weights};

mod routing;
mod systemd;
mod watchdog;

pub use routing::{Backend, BackendStatus, RouteSpec, RouteStatus, RouteTraffic};
use routing::{Hosted, RetirementRecord};
pub use systemd::systemd_unit;
pub use watchdog::{run_watchdog, WatchdogLink, MAX_LISTENERS};

use super::child_env::ChildEnv;

/// The daemon's socket, in the state folder.
pub const SOCKET_FILE: &str = "supervisor.sock";
/// The lock the daemon holds (`flock`) for its whole life.
pub const LOCK_FILE: &str = "supervisor.lock";
/// The daemon's own output.
pub const LOG_FILE: &str = "supervisor.log";
/// Desired and observed state, rewritten on every change.
pub const STATE_FILE: &str = "state.json";
/// The folder of the replicas' logs.
pub const LOGS_DIR: &str = "logs";
/// In a command, replaced by the replica's port.
pub const PORT_PLACEHOLDER: &str = "{{ port }}";
/// In a command, replaced by the replica's address (`127.0.0.1:PORT`).
pub const ADDR_PLACEHOLDER: &str = "{{ addr }}";
/// How long a replica may take to answer its health path, unless the spec says.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The most replicas one deployment may ask for.
pub const MAX_REPLICAS: u32 = 64;

/// The largest request or response, in bytes.
const MAX_MESSAGE_BYTES: u64 = 16 << 20;
/// Version 2 added routes and scheduled stops; version 1 files still load.
const STATE_FORMAT_VERSION: u32 = 2;
/// How long [`ensure_running`] waits for a daemon it started to answer.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a starting daemon waits for the lock a previous one is releasing.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Log lines quoted when a replica fails to start.
const LOG_TAIL_LINES: usize = 12;
/// `sun_path` holds 108 bytes on Linux, the last one a NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Tries to start a replica when its port turns out to be taken.
const PORT_ATTEMPTS: usize = 3;
const NAME_MAX: usize = 128;

/// Errors from the supervisor, its client and its daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the supervisor's folder `{}`", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid deployment {deployment}: {reason}")]
    InvalidSpec { deployment: String, reason: String },
    #[error("{deployment} already runs with a different spec ({reason}); stop it first or apply it as a new revision")]
    Conflict { deployment: String, reason: String },
    #[error("{}", describe_failures(failures))]
    StartFailed { failures: Vec<StartFailure> },
    #[error("the supervisor refused the request: {message}")]
    Refused { message: String },
    #[error(
        "the socket path `{}` is longer than a Unix socket allows ({MAX_SOCKET_PATH} bytes); \
         use a shorter state folder",
        path.display()
    )]
    SocketPathTooLong { path: PathBuf },
    #[error("cannot reach the supervisor at `{}`", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the supervisor at `{}` failed", socket.display())]
    Exchange {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the supervisor at `{}` did not answer within {}",
        socket.display(),
        humantime::format_duration(*waited)
    )]
    Timeout { socket: PathBuf, waited: Duration },
    #[error("the supervisor's answer cannot be read: {message}")]
    Protocol { message: String },
    #[error("cannot write the supervisor's log `{}`", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the supervisor `{} supervise`", program.display())]
    SpawnDaemon {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the supervisor {status} before it answered; last lines of `{}`:\n{}",
        log.display(),
        indent(log_tail)
    )]
    DaemonExited {
        status: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error("another supervisor already runs for `{}`", state_dir.display())]
    AlreadyRunning { state_dir: PathBuf },
    #[error(
        "the supervisor of `{}` does not answer yet holds its lock{}; kill it and run \
         `cairn supervise --stop` again",
        state_dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Unresponsive {
        state_dir: PathBuf,
        pid: Option<u32>,
    },
    #[error("the supervisor daemon {how} before it served")]
    DaemonFailed { how: String },
    #[error("the supervisor's watchdog link failed: {reason}")]
    Handover { reason: String },
    #[error("cannot start the supervisor daemon `{} supervise`", program.display())]
    SpawnChild {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write a systemd unit: {reason}")]
    SystemdUnit { reason: String },
    #[error("cannot lock `{}`", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on `{}`", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot handle {signal}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the supervisor's state `{}`", path.display())]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the supervisor's state `{}` cannot be used: {message}; move it away to start \
         afresh (the processes it lists are then no longer supervised)",
        path.display()
    )]
    ParseState { path: PathBuf, message: String },
    #[error("cannot write the supervisor's state `{}`", path.display())]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid route for endpoint `{endpoint}`: {reason}")]
    InvalidRoute { endpoint: String, reason: String },
    #[error(
        "cannot route endpoint `{endpoint}` on {listen}: the port is in use{}; pick another \
         `listen` or free the port (the endpoint's routes are unchanged)",
        held_by(holder.as_deref())
    )]
    PortInUse {
        endpoint: String,
        listen: SocketAddr,
        /// The endpoint whose router holds the port, when it is one of this supervisor's.
        holder: Option<String>,
    },
    #[error(
        "cannot route endpoint `{endpoint}` on {listen}: {reason} (the endpoint's routes are \
         unchanged)"
    )]
    RouterBind {
        endpoint: String,
        listen: SocketAddr,
        reason: String,
    },
    #[error("endpoint `{endpoint}` has no router; create one with `route` first")]
    NoRoute { endpoint: String },
    #[error(
        "endpoint `{endpoint}` has no backend `{backend}`; its backends: {}",
        names_or_none(known)
    )]
    UnknownBackend {
        endpoint: String,
        backend: String,
        known: Vec<String>,
    },
    #[error(
        "the router of endpoint `{endpoint}` on {listen} is not serving: {reason}; the \
         supervisor tries to bind it again every few seconds"
    )]
    NotServing {
        endpoint: String,
        listen: SocketAddr,
        reason: String,
    },
    #[error(
        "`{deployment}` still gets {weight} % of the traffic of endpoint `{endpoint}` (backend \
         `{backend}`); set its weight to 0 first, then stop it"
    )]
    StillRouted {
        deployment: String,
        endpoint: String,
        backend: String,
        weight: u32,
    },
}

fn held_by(holder: Option<&str>) -> String {
    holder
        .map(|endpoint| format!(" (by the router of endpoint `{endpoint}`)"))
        .unwrap_or_default()
}

fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------
// What is asked for and what is reported.

/// One revision of an endpoint's deployment, to run as `replicas` processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub endpoint: String,
    pub deployment: String,
    /// The revision (typically the model version). Two revisions of a deployment run side
    /// by side until one is stopped.
    pub revision: String,
    /// Program and arguments. At least one argument holds [`PORT_PLACEHOLDER`] or
    /// [`ADDR_PLACEHOLDER`], so the replica listens where the supervisor expects it.
    /// `cairn` as the program means the supervisor's own binary.
    pub command: Vec<String>,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Added to the daemon's allow-listed base environment ([`DaemonOptions::child_env`]),
    /// with `CAIRN_ENDPOINT`, `CAIRN_DEPLOYMENT`,
    /// `CAIRN_REVISION`, `CAIRN_REPLICA` and `CAIRN_PORT`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where replicas run; the state folder when not given.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// The readiness probe: a path answered with 200 once the replica can serve.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// How long a replica may take to become ready.
    #[serde(
        rename = "ready_timeout_ms",
        with = "millis",
        default = "default_ready_timeout"
    )]
    pub ready_timeout: Duration,
}

fn default_replicas() -> u32 {
    1
}

fn default_health_path() -> String {
    "/healthz".to_string()
}

fn default_ready_timeout() -> Duration {
    DEFAULT_READY_TIMEOUT
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

impl DeploymentSpec {
    /// A spec running `command` once, with the defaults.
    pub fn new(
        endpoint: impl Into<String>,
        deployment: impl Into<String>,
        revision: impl Into<String>,
        command: Vec<String>,
    ) -> DeploymentSpec {
        DeploymentSpec {
            endpoint: endpoint.into(),
            deployment: deployment.into(),
            revision: revision.into(),
            command,
            replicas: 1,
            env: BTreeMap::new(),
            workdir: None,
            health_path: default_health_path(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// A spec running the reference model server: `CAIRN serve --model MODEL_DIR --listen
    /// 127.0.0.1:{{ port }} --name DEPLOYMENT --model-version REVISION`.
    pub fn cairn_serve(
        cairn: &Path,
        model_dir: &Path,
        endpoint: impl Into<String>,
        deployment: impl Into<String>,
        revision: impl Into<String>,
    ) -> Result<DeploymentSpec> {
        let (endpoint, deployment, revision) =
            (endpoint.into(), deployment.into(), revision.into());
        let utf8 = |path: &Path, what: &str| {
            path.to_str()
                .map(String::from)
                .ok_or_else(|| Error::InvalidSpec {
                    deployment: format!("`{endpoint}/{deployment}@{revision}`"),
                    reason: format!("the {what} path `{}` is not UTF-8", path.display()),
                })
        };
        let command = vec![
            utf8(cairn, "program")?,
            "serve".into(),
            "--model".into(),
            utf8(model_dir, "model")?,
            "--listen".into(),
            format!("127.0.0.1:{PORT_PLACEHOLDER}"),
            "--name".into(),
            deployment.clone(),
            "--model-version".into(),
            revision.clone(),
        ];
        Ok(DeploymentSpec::new(endpoint, deployment, revision, command))
    }

    pub fn key(&self) -> DeploymentKey {
        DeploymentKey {
            endpoint: self.endpoint.clone(),
            deployment: self.deployment.clone(),
            revision: self.revision.clone(),
        }
    }

    /// Checks names (they become folder names), the command, the limits.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|reason| Error::InvalidSpec {
            deployment: format!("`{}`", self.key()),
            reason,
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        check_name("endpoint", &self.endpoint)?;
        check_name("deployment", &self.deployment)?;
        check_name("revision", &self.revision)?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("the command is empty".into());
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err("the command holds a NUL character".into());
        }
        if !self.command[1..]
            .iter()
            .any(|a| a.contains(PORT_PLACEHOLDER) || a.contains(ADDR_PLACEHOLDER))
        {
            return Err(format!(
                "no argument of the command holds `{PORT_PLACEHOLDER}` or `{ADDR_PLACEHOLDER}`, \
                 so the supervisor cannot tell the replica where to listen"
            ));
        }
        if self.replicas > MAX_REPLICAS {
            return Err(format!(
                "{} replicas asked for, at most {MAX_REPLICAS} are allowed",
                self.replicas
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "the environment variable name {key:?} is not valid"
                ));
            }
            if value.contains('\0') {
                return Err(format!(
                    "the environment variable `{key}` holds a NUL character"
                ));
            }
        }
        if !self.health_path.starts_with('/')
            || self
                .health_path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "the health path {:?} must start with `/` and hold no spaces or control characters",
                self.health_path
            ));
        }
        if self.ready_timeout < Duration::from_millis(100)
            || self.ready_timeout > Duration::from_secs(3600)
        {
            return Err("the ready timeout must be between 100 ms and 1 h".into());
        }
        Ok(())
    }

    /// Whether `other` asks for the same processes, apart from how many.
    fn same_apart_from_replicas(&self, other: &DeploymentSpec) -> bool {
        DeploymentSpec {
            replicas: other.replicas,
            ..self.clone()
        } == *other
    }

    /// The first difference from `other`, for a conflict message.
    fn difference(&self, other: &DeploymentSpec) -> &'static str {
        if self.command != other.command {
            "the command differs"
        } else if self.env != other.env {
            "the environment differs"
        } else if self.workdir != other.workdir {
            "the working folder differs"
        } else if self.health_path != other.health_path {
            "the health path differs"
        } else {
            "the ready timeout differs"
        }
    }
}

/// Names become folder names and log lines: letters, digits, `.`, `_`, `-`, not starting
/// with `.`.
fn check_name(what: &str, name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the {what} name {name:?} must be 1 to {NAME_MAX} letters, digits, `.`, `_` or `-`, \
             not starting with `.`"
        ))
    }
}

/// A deployment revision: what [`SupervisorClient::apply`] starts and
/// [`SupervisorClient::stop`] stops.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeploymentKey {
    pub endpoint: String,
    pub deployment: String,
    pub revision: String,
}

impl fmt::Display for DeploymentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.endpoint, self.deployment, self.revision)
    }
}

/// One replica of a deployment revision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    #[serde(flatten)]
    pub key: DeploymentKey,
    pub index: u32,
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} replica {}", self.key, self.index)
    }
}

/// Where a replica stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Launched, not answering its health path yet.
    Starting,
    /// Answered its health path.
    Ready,
    /// Exited (or failed to restart); a restart is pending after the backoff.
    Crashed { reason: String },
    /// Running, but its health path stopped answering 200 (e.g. the process is stopped or
    /// overloaded): not routed to until it answers again. Not restarted for it.
    NotReady { reason: String },
    /// Being stopped.
    Stopping,
}

/// What the supervisor reports about one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub endpoint: String,
    pub deployment: String,
    pub revision: String,
    pub index: u32,
    /// The process (and process group) while one runs.
    pub pid: Option<u32>,
    /// Where it listens, while a process runs.
    pub addr: Option<SocketAddr>,
    pub state: ReplicaState,
    /// Restarts since it was first started.
    pub restarts: u32,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl ReplicaStatus {
    pub fn key(&self) -> DeploymentKey {
        DeploymentKey {
            endpoint: self.endpoint.clone(),
            deployment: self.deployment.clone(),
            revision: self.revision.clone(),
        }
    }
}

/// Why one replica of an apply did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailure {
    pub replica: ReplicaId,
    pub reason: String,
    pub log: PathBuf,
    /// The last lines the attempt wrote.
    pub log_tail: String,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.replica, self.reason)?;
        if !self.log_tail.is_empty() {
            write!(
                f,
                "; last lines of `{}`:\n{}",
                self.log.display(),
                indent(&self.log_tail)
            )?;
        }
        Ok(())
    }
}

fn describe_failures(failures: &[StartFailure]) -> String {
    let mut text = format!(
        "{} replica(s) failed to start; the apply was undone and what ran before keeps serving",
        failures.len()
    );
    for failure in failures {
        text.push_str("\n- ");
        text.push_str(&failure.to_string());
    }
    text
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The daemon answering a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
}

/// Something the daemon did, for its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Listening {
        socket: PathBuf,
        pid: u32,
    },
    Adopted {
        replica: ReplicaId,
        pid: u32,
        addr: SocketAddr,
    },
    /// A replica of an apply that never completed (the previous daemon died), torn down.
    Discarded {
        replica: ReplicaId,
        pid: u32,
    },
    Started {
        replica: ReplicaId,
        pid: u32,
        addr: SocketAddr,
    },
    Ready {
        replica: ReplicaId,
        pid: u32,
        addr: SocketAddr,
    },
    StartFailed {
        replica: ReplicaId,
        reason: String,
    },
    Exited {
        replica: ReplicaId,
        pid: u32,
        how: String,
    },
    Restarting {
        replica: ReplicaId,
        delay: Duration,
    },
    Stopped {
        replica: ReplicaId,
        pid: u32,
        how: String,
    },
    StateNotSaved {
        message: String,
    },
    /// A ready replica's health path stopped answering: taken off its routes.
    NotReady {
        replica: ReplicaId,
        pid: u32,
        reason: String,
    },
    /// A router's listening socket could not be handed to the watchdog (a daemon restart
    /// then closes that port for a moment).
    HandoverFailed {
        message: String,
    },
    /// The watchdog's daemon exited; it is started again after `delay`.
    DaemonRestarting {
        pid: u32,
        how: String,
        delay: Duration,
    },
    BadRequest {
        message: String,
    },
    Exiting {
        reason: String,
        replicas_left: usize,
    },
    /// An endpoint's router took its port and serves.
    RouterBound {
        endpoint: String,
        listen: SocketAddr,
    },
    /// An endpoint's router could not bind (or stopped serving); retried every few seconds.
    RouterFailed {
        endpoint: String,
        listen: SocketAddr,
        reason: String,
    },
    /// An endpoint's routes changed: weights, backends, mirror, key, or replica addresses.
    RoutesChanged {
        endpoint: String,
        change: String,
    },
    RouterClosed {
        endpoint: String,
        listen: SocketAddr,
    },
    RetireScheduled {
        deployment: DeploymentKey,
        after: Duration,
    },
    /// A revision whose stop was scheduled was stopped.
    Retired {
        deployment: DeploymentKey,
    },
    /// A scheduled stop was dropped (the revision carries traffic again, or was applied).
    RetireCancelled {
        deployment: DeploymentKey,
        reason: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Listening { socket, pid } => {
                write!(f, "supervisor {pid} listening on {}", socket.display())
            }
            Event::Adopted { replica, pid, addr } => {
                write!(f, "{replica}: adopted pid {pid}, serving on {addr}")
            }
            Event::Discarded { replica, pid } => write!(
                f,
                "{replica}: stopped pid {pid}, left over from an apply that never completed"
            ),
            Event::Started { replica, pid, addr } => {
                write!(f, "{replica}: started pid {pid} on {addr}")
            }
            Event::Ready { replica, pid, addr } => {
                write!(f, "{replica}: ready (pid {pid} on {addr})")
            }
            Event::StartFailed { replica, reason } => {
                write!(f, "{replica}: failed to start: {reason}")
            }
            Event::Exited { replica, pid, how } => write!(f, "{replica}: pid {pid} {how}"),
            Event::Restarting { replica, delay } => write!(
                f,
                "{replica}: restarting in {}",
                humantime::format_duration(*delay)
            ),
            Event::Stopped { replica, pid, how } => {
                write!(f, "{replica}: stopped pid {pid} ({how})")
            }
            Event::StateNotSaved { message } => write!(f, "state not saved: {message}"),
            Event::NotReady {
                replica,
                pid,
                reason,
            } => write!(
                f,
                "{replica}: not ready (pid {pid}: {reason}); not routed to until it answers"
            ),
            Event::HandoverFailed { message } => {
                write!(f, "listener not handed to the watchdog: {message}")
            }
            Event::DaemonRestarting { pid, how, delay } => write!(
                f,
                "watchdog: daemon pid {pid} {how}; starting it again in {}",
                humantime::format_duration(*delay)
            ),
            Event::BadRequest { message } => write!(f, "bad request: {message}"),
            Event::Exiting {
                reason,
                replicas_left,
            } => write!(
                f,
                "exiting ({reason}); {replicas_left} replica(s) left serving"
            ),
            Event::RouterBound { endpoint, listen } => {
                write!(f, "{endpoint}: router serving on {listen}")
            }
            Event::RouterFailed {
                endpoint,
                listen,
                reason,
            } => write!(
                f,
                "{endpoint}: router on {listen} not serving: {reason}; retrying"
            ),
            Event::RoutesChanged { endpoint, change } => {
                write!(f, "{endpoint}: routes changed: {change}")
            }
            Event::RouterClosed { endpoint, listen } => {
                write!(f, "{endpoint}: router on {listen} closed")
            }
            Event::RetireScheduled { deployment, after } => write!(
                f,
                "{deployment}: stops in {}",
                humantime::format_duration(*after)
            ),
            Event::Retired { deployment } => write!(f, "{deployment}: retired (scheduled stop)"),
            Event::RetireCancelled { deployment, reason } => {
                write!(f, "{deployment}: scheduled stop cancelled: {reason}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The wire protocol.

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Ping,
    Status,
    Apply {
        deployments: Vec<DeploymentSpec>,
    },
    Stop {
        endpoint: String,
        deployment: String,
        revision: Option<String>,
    },
    Shutdown,
    Route {
        route: RouteSpec,
    },
    SetWeights {
        endpoint: String,
        weights: Weights,
    },
    SetMirror {
        endpoint: String,
        mirror: Option<super::router::Mirror>,
    },
    Routes,
    Ready {
        endpoint: String,
        backend: String,
    },
    Stats {
        endpoint: String,
        backend: String,
    },
    Unroute {
        endpoint: String,
    },
    StopLater {
        endpoint: String,
        deployment: String,
        revision: String,
        after_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Response {
    Pong { pid: u32, version: String },
    Replicas { replicas: Vec<ReplicaStatus> },
    Route { route: RouteStatus },
    Routes { routes: Vec<RouteStatus> },
    Ready { ready: bool },
    Stats { stats: Stats },
    Done,
    Error { error: WireError },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireError {
    Invalid {
        deployment: String,
        reason: String,
    },
    Conflict {
        deployment: String,
        reason: String,
    },
    StartFailed {
        failures: Vec<StartFailure>,
    },
    Refused {
        message: String,
    },
    InvalidRoute {
        endpoint: String,
        reason: String,
    },
    PortInUse {
        endpoint: String,
        listen: SocketAddr,
        holder: Option<String>,
    },
    RouterBind {
        endpoint: String,
        listen: SocketAddr,
        reason: String,
    },
    NoRoute {
        endpoint: String,
    },
    UnknownBackend {
        endpoint: String,
        backend: String,
        known: Vec<String>,
    },
    NotServing {
        endpoint: String,
        listen: SocketAddr,
        reason: String,
    },
    StillRouted {
        deployment: String,
        endpoint: String,
        backend: String,
        weight: u32,
    },
}

impl From<WireError> for Error {
    fn from(error: WireError) -> Error {
        match error {
            WireError::Invalid { deployment, reason } => Error::InvalidSpec { deployment, reason },
            WireError::Conflict { deployment, reason } => Error::Conflict { deployment, reason },
            WireError::StartFailed { failures } => Error::StartFailed { failures },
            WireError::Refused { message } => Error::Refused { message },
            WireError::InvalidRoute { endpoint, reason } => {
                Error::InvalidRoute { endpoint, reason }
            }
            WireError::PortInUse {
                endpoint,
                listen,
                holder,
            } => Error::PortInUse {
                endpoint,
                listen,
                holder,
            },
            WireError::RouterBind {
                endpoint,
                listen,
                reason,
            } => Error::RouterBind {
                endpoint,
                listen,
                reason,
            },
            WireError::NoRoute { endpoint } => Error::NoRoute { endpoint },
            WireError::UnknownBackend {
                endpoint,
                backend,
                known,
            } => Error::UnknownBackend {
                endpoint,
                backend,
                known,
            },
            WireError::NotServing {
                endpoint,
                listen,
                reason,
            } => Error::NotServing {
                endpoint,
                listen,
                reason,
            },
            WireError::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            } => Error::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            },
        }
    }
}

impl From<Error> for WireError {
    fn from(error: Error) -> WireError {
        match error {
            Error::InvalidSpec { deployment, reason } => WireError::Invalid { deployment, reason },
            Error::Conflict { deployment, reason } => WireError::Conflict { deployment, reason },
            Error::StartFailed { failures } => WireError::StartFailed { failures },
            Error::InvalidRoute { endpoint, reason } => {
                WireError::InvalidRoute { endpoint, reason }
            }
            Error::PortInUse {
                endpoint,
                listen,
                holder,
            } => WireError::PortInUse {
                endpoint,
                listen,
                holder,
            },
            Error::RouterBind {
                endpoint,
                listen,
                reason,
            } => WireError::RouterBind {
                endpoint,
                listen,
                reason,
            },
            Error::NoRoute { endpoint } => WireError::NoRoute { endpoint },
            Error::UnknownBackend {
                endpoint,
                backend,
                known,
            } => WireError::UnknownBackend {
                endpoint,
                backend,
                known,
            },
            Error::NotServing {
                endpoint,
                listen,
                reason,
            } => WireError::NotServing {
                endpoint,
                listen,
                reason,
            },
            Error::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            } => WireError::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            },
            other => WireError::Refused {
                message: crate::diagnostics::error_chain(&other),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client.

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

    async fn request(&self, request: &Request, waited: Duration) -> Result<Response> {
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

fn unexpected(response: Response) -> Error {
    Error::Protocol {
        message: format!("unexpected answer {response:?}"),
    }
}

fn socket_path(state_dir: &Path) -> Result<PathBuf> {
    let path = state_dir.join(SOCKET_FILE);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(Error::SocketPathTooLong { path });
    }
    Ok(path)
}

fn create_state_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

// ---------------------------------------------------------------------------------------
// The daemon.

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

/// Runs the daemon for `state_dir` until [`SupervisorClient::shutdown`], SIGTERM or
/// SIGINT; `events` hears what it does. Fails with [`Error::AlreadyRunning`] when another
/// daemon holds the folder. Under a watchdog ([`run_watchdog`], which passes `watchdog`),
/// the lock and the routers' listening sockets come from the watchdog and every new
/// listening socket goes back to it.
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
    let chores = routing::spawn_chores(&shared);
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

/// Takes `supervisor.lock` (waiting [`LOCK_WAIT`] at most) and writes the holder's pid and
/// start time in it.
/// SIGTERM and SIGINT, on which the daemon (and its watchdog) stop cleanly.
fn stop_signals() -> Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
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

async fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| Error::Lock {
            path: path.clone(),
            source,
        })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: `flock` on a descriptor owned by `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // For people looking, and for `stop_without_daemon`: who holds it.
            let me = std::process::id();
            let ticks = proc_stat(me).map_or(0, |s| s.start_ticks);
            let _ = file.set_len(0);
            let _ = writeln!(file, "{me} {ticks}");
            return Ok(file);
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {}
            _ => {
                return Err(Error::Lock {
                    path,
                    source: error,
                })
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::AlreadyRunning {
                state_dir: dir.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Shared {
    dir: PathBuf,
    options: DaemonOptions,
    registry: Mutex<Registry>,
    /// Serializes requests that change what runs (apply, stop, shutdown).
    serial: tokio::sync::Mutex<()>,
    /// Serializes changes of routes (route, set_weights, unroute, rebinding, and the
    /// check that a stopped revision carries no traffic). Never held across an apply.
    routing: tokio::sync::Mutex<()>,
    /// Numbers the routers this daemon binds.
    router_ids: AtomicU64,
    /// Set by shutdown: later changes are refused.
    closing: AtomicBool,
    exit: Notify,
    events: Box<dyn Fn(&Event) + Send + Sync>,
    /// The watchdog this daemon runs under, if any: it keeps the routers' listeners.
    watchdog: Option<WatchdogLink>,
    /// Listening sockets the watchdog handed over, by endpoint, until a router takes them.
    inherited: Mutex<BTreeMap<String, (SocketAddr, std::net::TcpListener)>>,
}

#[derive(Default)]
struct Registry {
    deployments: BTreeMap<DeploymentKey, Deployment>,
    /// Endpoint name → its router.
    routes: BTreeMap<String, Hosted>,
    /// Revisions to stop, and when.
    retirements: BTreeMap<DeploymentKey, SystemTime>,
}

struct Deployment {
    /// The spec of the last apply that succeeded (or of this one, while unconfirmed).
    spec: Arc<DeploymentSpec>,
    /// Whether an apply of it ever succeeded.
    confirmed: bool,
    /// Taken off its routes and being stopped: no route may name it any more.
    stopping: bool,
    replicas: BTreeMap<u32, Replica>,
}

struct Replica {
    observed: Observed,
    /// The task watching it; taken when it is stopped.
    control: Option<Control>,
}

struct Control {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What `state.json` remembers of a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Observed {
    pid: Option<u32>,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`), which tells
    /// it from a later process given the same pid.
    start_ticks: Option<u64>,
    port: Option<u16>,
    state: ReplicaState,
    restarts: u32,
    /// Whether the apply that started it succeeded.
    confirmed: bool,
}

impl Observed {
    fn starting() -> Observed {
        Observed {
            pid: None,
            start_ticks: None,
            port: None,
            state: ReplicaState::Starting,
            restarts: 0,
            confirmed: false,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format_version: u32,
    deployments: Vec<DeploymentRecord>,
    /// Since version 2.
    #[serde(default)]
    routes: Vec<RouteSpec>,
    /// Since version 2.
    #[serde(default)]
    retirements: Vec<RetirementRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DeploymentRecord {
    spec: DeploymentSpec,
    confirmed: bool,
    replicas: Vec<ReplicaRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReplicaRecord {
    index: u32,
    #[serde(flatten)]
    observed: Observed,
}

impl Registry {
    fn replica_mut(&mut self, id: &ReplicaId) -> Option<&mut Replica> {
        self.deployments
            .get_mut(&id.key)?
            .replicas
            .get_mut(&id.index)
    }

    fn replica_count(&self) -> usize {
        self.deployments.values().map(|d| d.replicas.len()).sum()
    }

    fn ids(&self, keys: &[DeploymentKey]) -> Vec<ReplicaId> {
        keys.iter()
            .filter_map(|key| Some((key, self.deployments.get(key)?)))
            .flat_map(|(key, d)| {
                d.replicas.keys().map(|index| ReplicaId {
                    key: key.clone(),
                    index: *index,
                })
            })
            .collect()
    }

    fn statuses(&self, dir: &Path, wanted: impl Fn(&DeploymentKey) -> bool) -> Vec<ReplicaStatus> {
        let mut out = Vec::new();
        for (key, deployment) in self.deployments.iter().filter(|(k, _)| wanted(k)) {
            for (index, replica) in &deployment.replicas {
                let id = ReplicaId {
                    key: key.clone(),
                    index: *index,
                };
                let o = &replica.observed;
                out.push(ReplicaStatus {
                    endpoint: key.endpoint.clone(),
                    deployment: key.deployment.clone(),
                    revision: key.revision.clone(),
                    index: *index,
                    pid: o.pid,
                    addr: o.pid.and(o.port).map(loopback),
                    state: o.state.clone(),
                    restarts: o.restarts,
                    log: replica_log(dir, &id),
                });
            }
        }
        out
    }

    fn to_file(&self) -> StateFile {
        StateFile {
            format_version: STATE_FORMAT_VERSION,
            deployments: self
                .deployments
                .values()
                .map(|d| DeploymentRecord {
                    spec: (*d.spec).clone(),
                    confirmed: d.confirmed,
                    replicas: d
                        .replicas
                        .iter()
                        .map(|(index, r)| ReplicaRecord {
                            index: *index,
                            observed: r.observed.clone(),
                        })
                        .collect(),
                })
                .collect(),
            routes: self.routes.values().map(|h| h.spec.clone()).collect(),
            retirements: self
                .retirements
                .iter()
                .map(|(key, at)| RetirementRecord::new(key, *at))
                .collect(),
        }
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere must not stop supervision: the data stays consistent enough.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn event(&self, event: Event) {
        (self.events)(&event);
    }

    fn persist(&self, registry: &Registry) {
        if let Err(e) = write_state(&self.dir, &registry.to_file()) {
            self.event(Event::StateNotSaved {
                message: crate::diagnostics::error_chain(&e),
            });
        }
    }

    /// Changes one replica's record (if it is still registered), saves the state, and
    /// brings the endpoint's router up to date with its ready replicas.
    fn update(&self, id: &ReplicaId, change: impl FnOnce(&mut Observed)) {
        let mut registry = self.registry();
        if let Some(replica) = registry.replica_mut(id) {
            change(&mut replica.observed);
            self.persist(&registry);
            self.sync_routes(&mut registry, &id.key.endpoint);
        }
    }

    fn refuse_if_closing(&self) -> std::result::Result<(), WireError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(WireError::Refused {
                message: "the supervisor is shutting down".into(),
            });
        }
        Ok(())
    }

    /// Whether a replica of that revision is ready.
    fn has_ready_replica(&self, key: &DeploymentKey) -> bool {
        self.registry().deployments.get(key).is_some_and(|d| {
            d.replicas
                .values()
                .any(|r| r.observed.state == ReplicaState::Ready)
        })
    }

    /// Picks a loopback port for a replica and records it: `preferred` when it is free,
    /// else one the kernel hands out that no other replica uses.
    fn pick_port(&self, id: &ReplicaId, preferred: Option<u16>) -> Option<u16> {
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

/// Registers a replica and starts the task that watches it.
fn launch(
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
        Ok(Request::Apply { deployments }) => answer(apply(&shared, deployments).await),
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

async fn apply(
    shared: &Arc<Shared>,
    specs: Vec<DeploymentSpec>,
) -> std::result::Result<Vec<ReplicaStatus>, WireError> {
    let _serial = shared.serial.lock().await;
    shared.refuse_if_closing()?;
    let mut keys = BTreeSet::new();
    for spec in &specs {
        spec.validate()?;
        if !keys.insert(spec.key()) {
            return Err(WireError::Invalid {
                deployment: format!("`{}`", spec.key()),
                reason: "it is listed twice in one apply".into(),
            });
        }
    }
    let specs: Vec<Arc<DeploymentSpec>> = specs.into_iter().map(Arc::new).collect();
    let mut created = Vec::new();
    let mut started = Vec::new();
    let mut surplus = Vec::new();
    {
        let mut registry = shared.registry();
        // Every check before anything starts.
        for spec in &specs {
            if let Some(running) = registry.deployments.get(&spec.key()) {
                if !running.spec.same_apart_from_replicas(spec) {
                    return Err(WireError::Conflict {
                        deployment: format!("`{}`", spec.key()),
                        reason: running.spec.difference(spec).into(),
                    });
                }
            }
        }
        for spec in &specs {
            let key = spec.key();
            let deployment = registry.deployments.entry(key.clone()).or_insert_with(|| {
                created.push(key.clone());
                Deployment {
                    spec: spec.clone(),
                    confirmed: false,
                    stopping: false,
                    replicas: BTreeMap::new(),
                }
            });
            let missing: Vec<u32> = (0..spec.replicas)
                .filter(|i| !deployment.replicas.contains_key(i))
                .collect();
            surplus.extend(
                deployment
                    .replicas
                    .keys()
                    .filter(|i| **i >= spec.replicas)
                    .map(|index| ReplicaId {
                        key: key.clone(),
                        index: *index,
                    }),
            );
            for index in missing {
                let id = ReplicaId {
                    key: key.clone(),
                    index,
                };
                let (reply, outcome) = oneshot::channel();
                launch(
                    shared,
                    &mut registry,
                    id.clone(),
                    spec.clone(),
                    Observed::starting(),
                    Init::Start(reply),
                );
                started.push((id, outcome));
            }
        }
        shared.persist(&registry);
    }

    let outcomes = futures::future::join_all(started.iter_mut().map(|(_, outcome)| outcome)).await;
    let failures: Vec<StartFailure> = outcomes
        .into_iter()
        .zip(&started)
        .filter_map(|(outcome, (id, _))| match outcome {
            Ok(Ok(())) => None,
            Ok(Err(StartError::Failed(failure))) => Some(failure),
            Ok(Err(StartError::Stopped)) | Err(_) => Some(StartFailure {
                replica: id.clone(),
                reason: "stopped before it was ready".into(),
                log: replica_log(&shared.dir, id),
                log_tail: String::new(),
            }),
        })
        .collect();
    let started: Vec<ReplicaId> = started.into_iter().map(|(id, _)| id).collect();

    if !failures.is_empty() {
        stop_replicas(shared, &started).await;
        let mut registry = shared.registry();
        for key in &created {
            if registry
                .deployments
                .get(key)
                .is_some_and(|d| d.replicas.is_empty())
            {
                registry.deployments.remove(key);
            }
        }
        shared.persist(&registry);
        return Err(WireError::StartFailed { failures });
    }

    {
        let mut registry = shared.registry();
        for spec in &specs {
            if let Some(deployment) = registry.deployments.get_mut(&spec.key()) {
                deployment.spec = spec.clone();
                deployment.confirmed = true;
            }
            // Applying a revision again says it is wanted: a scheduled stop is dropped.
            if registry.retirements.remove(&spec.key()).is_some() {
                shared.event(Event::RetireCancelled {
                    deployment: spec.key(),
                    reason: "applied again".into(),
                });
            }
        }
        for id in &started {
            if let Some(replica) = registry.replica_mut(id) {
                replica.observed.confirmed = true;
            }
        }
        shared.persist(&registry);
    }
    stop_replicas(shared, &surplus).await;
    Ok(shared
        .registry()
        .statuses(&shared.dir, |k| keys.contains(k)))
}

async fn stop(
    shared: &Arc<Shared>,
    endpoint: &str,
    deployment: &str,
    revision: Option<&str>,
) -> std::result::Result<Vec<ReplicaStatus>, WireError> {
    let _serial = shared.serial.lock().await;
    shared.refuse_if_closing()?;
    let wanted = |k: &DeploymentKey| {
        k.endpoint == endpoint
            && k.deployment == deployment
            && revision.is_none_or(|r| k.revision == r)
    };
    let (keys, before) = {
        let registry = shared.registry();
        let keys: Vec<DeploymentKey> = registry
            .deployments
            .keys()
            .filter(|k| wanted(k))
            .cloned()
            .collect();
        (keys, registry.statuses(&shared.dir, wanted))
    };
    routing::take_off_routes(shared, &keys).await?;
    stop_deployments(shared, &keys).await;
    Ok(before)
}

async fn shutdown(shared: &Arc<Shared>) -> std::result::Result<Vec<ReplicaStatus>, WireError> {
    let _serial = shared.serial.lock().await;
    shared.closing.store(true, Ordering::SeqCst);
    // Routers first, so that no request goes to a replica being stopped.
    routing::close_all(shared).await;
    let (keys, before) = {
        let registry = shared.registry();
        let keys: Vec<DeploymentKey> = registry.deployments.keys().cloned().collect();
        (keys, registry.statuses(&shared.dir, |_| true))
    };
    stop_deployments(shared, &keys).await;
    Ok(before)
}

async fn stop_deployments(shared: &Arc<Shared>, keys: &[DeploymentKey]) {
    let ids = shared.registry().ids(keys);
    stop_replicas(shared, &ids).await;
    let mut registry = shared.registry();
    for key in keys {
        registry.deployments.remove(key);
        registry.retirements.remove(key);
    }
    shared.persist(&registry);
}

/// Stops the replicas (all at once) and forgets them.
async fn stop_replicas(shared: &Arc<Shared>, ids: &[ReplicaId]) {
    if ids.is_empty() {
        return;
    }
    let controls: Vec<Control> = {
        let mut registry = shared.registry();
        let controls = ids
            .iter()
            .filter_map(|id| {
                let replica = registry.replica_mut(id)?;
                replica.observed.state = ReplicaState::Stopping;
                replica.control.take()
            })
            .collect();
        shared.persist(&registry);
        // No new request goes to a replica being stopped.
        let endpoints: BTreeSet<&String> = ids.iter().map(|id| &id.key.endpoint).collect();
        for endpoint in endpoints {
            shared.sync_routes(&mut registry, endpoint);
        }
        controls
    };
    for control in &controls {
        // A task that already ended has dropped its receiver; nothing to stop then.
        let _ = control.stop.send(true);
    }
    futures::future::join_all(controls.into_iter().map(|c| c.task)).await;
    let mut registry = shared.registry();
    for id in ids {
        if let Some(deployment) = registry.deployments.get_mut(&id.key) {
            deployment.replicas.remove(&id.index);
        }
    }
    shared.persist(&registry);
}

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
    write_state(
        &dir,
        &StateFile {
            format_version: STATE_FORMAT_VERSION,
            deployments: Vec::new(),
            routes: Vec::new(),
            retirements: Vec::new(),
        },
    )?;
    let _ = std::fs::remove_file(dir.join(SOCKET_FILE));
    drop(lock);
    Ok(stopped)
}

/// The pid and start time `supervisor.lock` names.
fn lock_holder(dir: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let ticks = fields.next()?.parse().ok()?;
    (pid > 1).then_some((pid, ticks))
}

/// Takes over from a previous daemon: tears down what an unfinished apply left, adopts
/// live confirmed replicas that answer their health path, restarts the others.
async fn recover(shared: &Arc<Shared>, state: StateFile) {
    let StateFile {
        deployments,
        routes,
        retirements,
        ..
    } = state;
    let options = shared.options.clone();
    let mut discard = Vec::new();
    let mut candidates = Vec::new();
    {
        let mut registry = shared.registry();
        for record in deployments {
            let key = record.spec.key();
            let spec = Arc::new(record.spec);
            let keep = record.confirmed && spec.validate().is_ok();
            let mut seen = BTreeSet::new();
            for replica in record.replicas {
                let id = ReplicaId {
                    key: key.clone(),
                    index: replica.index,
                };
                let alive = live_process(&shared.dir, &id, &replica.observed);
                let wanted = keep
                    && replica.observed.confirmed
                    && replica.index < spec.replicas
                    && seen.insert(replica.index);
                if wanted {
                    candidates.push((id, spec.clone(), replica.observed, alive));
                } else if let Some(running) = alive {
                    discard.push((id, running));
                }
            }
            if keep {
                registry.deployments.insert(
                    key,
                    Deployment {
                        spec,
                        confirmed: true,
                        stopping: false,
                        replicas: BTreeMap::new(),
                    },
                );
            }
        }
    }

    let discarding = discard.into_iter().map(|(replica, mut running)| {
        let options = &options;
        async move {
            running.terminate(options.stop_grace, options.poll).await;
            shared.event(Event::Discarded {
                replica,
                pid: running.pid,
            });
        }
    });
    let probing = candidates.into_iter().map(|(id, spec, observed, alive)| {
        let options = &options;
        async move {
            let verdict = match alive {
                None => Err("was not running when the supervisor started".to_string()),
                Some(mut running) => {
                    if probe_until(running.addr(), &spec.health_path, Duration::from_secs(2)).await
                    {
                        Ok(running)
                    } else {
                        running.terminate(options.stop_grace, options.poll).await;
                        Err("did not answer its health path when the supervisor started"
                            .to_string())
                    }
                }
            };
            (id, spec, observed, verdict)
        }
    });
    let (_, probed) = futures::future::join(
        futures::future::join_all(discarding),
        futures::future::join_all(probing),
    )
    .await;

    let mut registry = shared.registry();
    for (id, spec, mut observed, verdict) in probed {
        let init = match verdict {
            Ok(running) => {
                shared.event(Event::Adopted {
                    replica: id.clone(),
                    pid: running.pid,
                    addr: running.addr(),
                });
                observed.state = ReplicaState::Ready;
                Init::Adopted(Box::new(running))
            }
            Err(reason) => {
                observed.pid = None;
                observed.start_ticks = None;
                observed.state = ReplicaState::Crashed {
                    reason: reason.clone(),
                };
                Init::Restart(reason)
            }
        };
        launch(shared, &mut registry, id, spec, observed, init);
    }
    // Replicas the state wants but does not list (lost while being written) start afresh.
    let missing: Vec<(ReplicaId, Arc<DeploymentSpec>)> = registry
        .deployments
        .iter()
        .flat_map(|(key, d)| {
            (0..d.spec.replicas)
                .filter(|i| !d.replicas.contains_key(i))
                .map(|index| {
                    (
                        ReplicaId {
                            key: key.clone(),
                            index,
                        },
                        d.spec.clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (id, spec) in missing {
        let reason = "was missing when the supervisor started".to_string();
        let observed = Observed {
            state: ReplicaState::Crashed {
                reason: reason.clone(),
            },
            confirmed: true,
            ..Observed::starting()
        };
        launch(
            shared,
            &mut registry,
            id,
            spec,
            observed,
            Init::Restart(reason),
        );
    }
    shared.persist(&registry);
    drop(registry);
    routing::recover(shared, routes, retirements).await;
}

/// The recorded process of a replica, when it still runs (same start time, leading its
/// group) and has a port to probe.
fn live_process(dir: &Path, id: &ReplicaId, observed: &Observed) -> Option<Running> {
    observed.port?;
    recorded_process(dir, id, observed)
}

/// The recorded process of a replica, when it still runs (same start time, leading its
/// group).
fn recorded_process(dir: &Path, id: &ReplicaId, observed: &Observed) -> Option<Running> {
    let pid = observed.pid?;
    if !is_alive(pid, observed.start_ticks) {
        return None;
    }
    Some(Running {
        pid,
        start_ticks: observed.start_ticks,
        port: observed.port.unwrap_or(0),
        child: None,
        log: replica_log(dir, id),
        log_offset: 0,
    })
}

// ---------------------------------------------------------------------------------------
// One replica's life.

/// How a replica's task begins.
enum Init {
    /// An apply's first start; the outcome goes back to the apply.
    Start(oneshot::Sender<std::result::Result<(), StartError>>),
    /// A process a previous daemon started, alive and ready.
    Adopted(Box<Running>),
    /// A process that is gone; start it again after the backoff.
    Restart(String),
}

#[derive(Debug)]
enum StartError {
    Stopped,
    Failed(StartFailure),
}

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

/// Checks a running replica's health path every [`DaemonOptions::health_every`], for as
/// long as the caller polls it: after [`DaemonOptions::health_failures`] failures in a
/// row a ready replica turns [`ReplicaState::NotReady`] (and its router stops sending it
/// requests); one answer makes it ready again. Never completes.
async fn watch_health(
    shared: &Shared,
    id: &ReplicaId,
    pid: u32,
    addr: SocketAddr,
    path: &str,
) -> std::convert::Infallible {
    let options = &shared.options;
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(options.health_every).await;
        if probe(addr, path, options.health_timeout).await {
            failures = 0;
            let mut back = false;
            shared.update(id, |o| {
                if matches!(o.state, ReplicaState::NotReady { .. }) {
                    o.state = ReplicaState::Ready;
                    back = true;
                }
            });
            if back {
                shared.event(Event::Ready {
                    replica: id.clone(),
                    pid,
                    addr,
                });
            }
            continue;
        }
        failures = failures.saturating_add(1);
        if failures != options.health_failures.max(1) {
            continue;
        }
        let reason = format!(
            "`{path}` on {addr} did not answer 200 within {} {failures} times in a row",
            humantime::format_duration(options.health_timeout)
        );
        let mut turned = false;
        shared.update(id, |o| {
            if o.state == ReplicaState::Ready {
                o.state = ReplicaState::NotReady {
                    reason: reason.clone(),
                };
                turned = true;
            }
        });
        if turned {
            shared.event(Event::NotReady {
                replica: id.clone(),
                pid,
                reason,
            });
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

fn mentions_port_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("address in use")
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
    let mut command = tokio::process::Command::new(super::resolve_program(program, &workdir));
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

fn replica_log(dir: &Path, id: &ReplicaId) -> PathBuf {
    dir.join(LOGS_DIR)
        .join(&id.key.endpoint)
        .join(&id.key.deployment)
        .join(&id.key.revision)
        .join(format!("replica-{}.log", id.index))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// A replica's process: a child of this daemon, or adopted from a previous one.
#[derive(Debug)]
struct Running {
    pid: u32,
    start_ticks: Option<u64>,
    port: u16,
    /// `None` when adopted: not our child, so watched through `/proc`.
    child: Option<tokio::process::Child>,
    log: PathBuf,
    /// Where this start's output begins in the log.
    log_offset: u64,
}

impl Running {
    fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// Whether the process has exited. A child is not reaped here, so its pid, and the
    /// group id it names, stay reserved until [`Running::reap`].
    fn has_exited(&self) -> bool {
        match self.child {
            Some(_) => child_exited(self.pid),
            None => !is_alive(self.pid, self.start_ticks),
        }
    }

    /// After the leader exited: kills what its group still holds, reaps the leader, and
    /// says how it ended.
    async fn reap(&mut self) -> String {
        let group_reserved = match self.child {
            Some(_) => true,
            // An adopted zombie still reserves its pid; once another reaper took it, the
            // pid may name someone else's group.
            None => proc_stat(self.pid).is_some_and(|s| Some(s.start_ticks) == self.start_ticks),
        };
        if group_reserved {
            signal_group(self.pid, libc::SIGKILL);
        }
        match self.child.take() {
            Some(mut child) => match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("exited (status unknown: {e})"),
            },
            None => "exited (adopted, so its exit status is unknown)".to_string(),
        }
    }

    async fn exited(&mut self, poll: Duration) -> String {
        while !self.has_exited() {
            tokio::time::sleep(poll).await;
        }
        self.reap().await
    }

    /// SIGTERM to the group, SIGKILL after `grace`; returns how it ended.
    async fn terminate(&mut self, grace: Duration, poll: Duration) -> String {
        if !self.has_exited() {
            signal_group(self.pid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while !self.has_exited() && Instant::now() < deadline {
                tokio::time::sleep(poll.min(Duration::from_millis(20))).await;
            }
            if !self.has_exited() {
                signal_group(self.pid, libc::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.has_exited() && Instant::now() < deadline {
                    tokio::time::sleep(poll.min(Duration::from_millis(20))).await;
                }
            }
        }
        self.reap().await
    }
}

/// Whether our child `pid` has exited, without reaping it.
fn child_exited(pid: u32) -> bool {
    let id = libc::id_t::from(pid);
    loop {
        // SAFETY: an all-zero `siginfo_t` is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                id,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            // SAFETY: waitid succeeded; `si_pid` is 0 when the child has not exited.
            return unsafe { info.si_pid() } != 0;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // ECHILD: already reaped, so gone.
            return true;
        }
    }
}

/// Sends `signal` to the process group `pgid` (a replica leads its own group).
fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // `pgid > 1` guarantees this is never `kill(-1)` (every process) or `kill(0)` (our
    // own group).
    if pgid <= 1 {
        return;
    }
    // SAFETY: plain system call; a negative pid names a process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Sends `signal` to the one process `pid` (> 1), e.g. a watchdog.
fn signal_process(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: plain system call on one process, by a pid > 1.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The fields of `/proc/PID/stat` the supervisor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    state: char,
    pgrp: i64,
    start_ticks: u64,
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // `PID (COMM) STATE PPID PGRP ...`: COMM may hold spaces and parentheses, so fields
    // are counted from the last `)`. STATE is field 3, PGRP 5, STARTTIME 22.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is still the process recorded: running (not a zombie), started at
/// `start_ticks`, leading its own group.
fn is_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    proc_stat(pid).is_some_and(|s| {
        !matches!(s.state, 'Z' | 'X' | 'x')
            && Some(s.start_ticks) == start_ticks
            && s.pgrp == i64::from(pid)
    })
}

fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGHUP => " (SIGHUP)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGTERM => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {signal}{name}")
        }
        None => "exited".to_string(),
    }
}

/// One GET of `path`; whether it answered 200 within `timeout`.
async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let mut parts = line.split_whitespace();
        let version = parts.next()?;
        Some(version.starts_with("HTTP/") && parts.next()? == "200")
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Probes until a 200 or `within` passed.
async fn probe_until(addr: SocketAddr, path: &str, within: Duration) -> bool {
    let started = Instant::now();
    loop {
        if probe(addr, path, Duration::from_millis(500)).await {
            return true;
        }
        if started.elapsed() >= within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `lines` non-empty lines of `path` written after `offset` (at most 64 KiB).
fn log_tail(path: &Path, offset: u64, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = offset.max(len.saturating_sub(64 * 1024));
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// What the last daemon of `state_dir` recorded in `state.json`, read without one running
/// (for plans, which must start nothing): its routes as specified (weights and backends
/// as they were last put in force) and the confirmed revisions it ran.
pub fn recorded(state_dir: &Path) -> Result<(Vec<RouteSpec>, Vec<DeploymentKey>)> {
    let state = read_state(state_dir)?;
    let revisions = state
        .deployments
        .iter()
        .filter(|d| d.confirmed)
        .map(|d| d.spec.key())
        .collect();
    Ok((state.routes, revisions))
}

fn read_state(dir: &Path) -> Result<StateFile> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(StateFile {
                format_version: STATE_FORMAT_VERSION,
                deployments: Vec::new(),
                routes: Vec::new(),
                retirements: Vec::new(),
            })
        }
        Err(source) => return Err(Error::ReadState { path, source }),
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| Error::ParseState {
        path: path.clone(),
        message: e.to_string(),
    })?;
    // Version 1 is version 2 without routes or scheduled stops (they default to none).
    if !(1..=STATE_FORMAT_VERSION).contains(&state.format_version) {
        return Err(Error::ParseState {
            path,
            message: format!(
                "format version {} (this supervisor reads 1 to {STATE_FORMAT_VERSION})",
                state.format_version
            ),
        });
    }
    Ok(state)
}

/// Writes the state to a temporary file, then renames it over `state.json`, so a reader
/// (or a daemon starting after a crash) never sees half a file.
fn write_state(dir: &Path, state: &StateFile) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let temporary = dir.join(format!("{STATE_FILE}.tmp"));
    let error = |source| Error::WriteState {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| error(std::io::Error::other(e)))?;
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(&bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DeploymentSpec {
        DeploymentSpec::new(
            "risk-api",
            "blue",
            "6b28a728a74d",
            vec![
                "/bin/server".into(),
                "--listen".into(),
                format!("127.0.0.1:{PORT_PLACEHOLDER}"),
            ],
        )
    }

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

    #[test]
    fn a_valid_spec_passes() {
        spec().validate().unwrap();
        let serve = DeploymentSpec::cairn_serve(
            Path::new("/usr/bin/cairn"),
            Path::new("/store/models/risk/v1"),
            "risk-api",
            "green",
            "v1",
        )
        .unwrap();
        serve.validate().unwrap();
        assert!(serve.command.contains(&"127.0.0.1:{{ port }}".to_string()));
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let cases: Vec<(DeploymentSpec, &str)> = vec![
            (
                DeploymentSpec {
                    endpoint: "../etc".into(),
                    ..spec()
                },
                "endpoint name",
            ),
            (
                DeploymentSpec {
                    revision: String::new(),
                    ..spec()
                },
                "revision name",
            ),
            (
                DeploymentSpec {
                    deployment: "a/b".into(),
                    ..spec()
                },
                "deployment name",
            ),
            (
                DeploymentSpec {
                    command: vec![],
                    ..spec()
                },
                "command is empty",
            ),
            (
                DeploymentSpec {
                    command: vec!["/bin/server".into(), "--listen".into(), ":8080".into()],
                    ..spec()
                },
                "where to listen",
            ),
            (
                DeploymentSpec {
                    replicas: MAX_REPLICAS + 1,
                    ..spec()
                },
                "at most",
            ),
            (
                DeploymentSpec {
                    env: [("A=B".to_string(), "x".to_string())].into(),
                    ..spec()
                },
                "environment variable name",
            ),
            (
                DeploymentSpec {
                    health_path: "/healthz HTTP/1.1\r\nX: y".into(),
                    ..spec()
                },
                "health path",
            ),
            (
                DeploymentSpec {
                    ready_timeout: Duration::ZERO,
                    ..spec()
                },
                "ready timeout",
            ),
        ];
        for (spec, expected) in cases {
            let error = spec.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn specs_differing_only_in_replicas_are_the_same_deployment() {
        let two = DeploymentSpec {
            replicas: 2,
            ..spec()
        };
        assert!(spec().same_apart_from_replicas(&two));
        let other = DeploymentSpec {
            env: [("X".to_string(), "1".to_string())].into(),
            ..spec()
        };
        assert!(!spec().same_apart_from_replicas(&other));
        assert_eq!(spec().difference(&other), "the environment differs");
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 226 0 0 0 1 0 0 0 20 0 \
                    3 0 987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 \
                    3 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn this_process_is_alive_only_with_its_start_time() {
        let me = std::process::id();
        let stat = proc_stat(me).unwrap();
        // The test harness is not a group leader; compare with the group it does lead.
        assert_eq!(
            is_alive(me, Some(stat.start_ticks)),
            stat.pgrp == i64::from(me)
        );
        assert!(!is_alive(me, Some(stat.start_ticks + 1)));
        assert!(!is_alive(me, None));
    }

    #[test]
    fn the_protocol_round_trips() {
        let request = Request::Apply {
            deployments: vec![spec()],
        };
        let line = serde_json::to_string(&request).unwrap();
        assert!(line.starts_with(r#"{"op":"apply""#), "{line}");
        assert!(line.contains(r#""ready_timeout_ms":60000"#), "{line}");
        let Request::Apply { deployments } = serde_json::from_str(&line).unwrap() else {
            panic!("not an apply: {line}");
        };
        assert_eq!(deployments, vec![spec()]);
        // Defaults for what a client leaves out.
        let minimal = r#"{"op":"apply","deployments":[{"endpoint":"e","deployment":"d",
            "revision":"r","command":["x","{{ port }}"]}]}"#;
        let Request::Apply { deployments } = serde_json::from_str(minimal).unwrap() else {
            panic!("not an apply");
        };
        assert_eq!(deployments[0].replicas, 1);
        assert_eq!(deployments[0].health_path, "/healthz");
        assert_eq!(deployments[0].ready_timeout, DEFAULT_READY_TIMEOUT);

        let failure = StartFailure {
            replica: ReplicaId {
                key: spec().key(),
                index: 1,
            },
            reason: "exited with code 1 before it was ready".into(),
            log: PathBuf::from("/state/logs/x.log"),
            log_tail: "error: cannot load the model".into(),
        };
        let response = Response::Error {
            error: WireError::StartFailed {
                failures: vec![failure.clone()],
            },
        };
        let line = serde_json::to_string(&response).unwrap();
        let Response::Error { error } = serde_json::from_str(&line).unwrap() else {
            panic!("not an error: {line}");
        };
        let message = Error::from(error).to_string();
        assert!(
            message.contains("risk-api/blue@6b28a728a74d replica 1: exited with code 1"),
            "{message}"
        );
        assert!(
            message.contains("| error: cannot load the model"),
            "{message}"
        );
        assert!(
            message.contains("what ran before keeps serving"),
            "{message}"
        );
    }

    #[test]
    fn state_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        registry.deployments.insert(
            spec().key(),
            Deployment {
                spec: Arc::new(spec()),
                confirmed: true,
                stopping: false,
                replicas: BTreeMap::from([(
                    0,
                    Replica {
                        observed: Observed {
                            pid: Some(1234),
                            start_ticks: Some(99),
                            port: Some(40000),
                            state: ReplicaState::Ready,
                            restarts: 2,
                            confirmed: true,
                        },
                        control: None,
                    },
                )]),
            },
        );
        write_state(dir.path(), &registry.to_file()).unwrap();
        assert!(!dir.path().join("state.json.tmp").exists());
        let read = read_state(dir.path()).unwrap();
        assert_eq!(read.deployments.len(), 1);
        assert_eq!(read.deployments[0].spec, spec());
        assert_eq!(read.deployments[0].replicas[0].observed.restarts, 2);
        let statuses = registry.statuses(dir.path(), |_| true);
        assert_eq!(statuses[0].addr, Some(loopback(40000)));
        assert!(statuses[0]
            .log
            .ends_with("logs/risk-api/blue/6b28a728a74d/replica-0.log"));

        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let error = read_state(dir.path()).unwrap_err().to_string();
        assert!(error.contains("move it away"), "{error}");
        assert!(read_state(&dir.path().join("missing"))
            .unwrap()
            .deployments
            .is_empty());
    }

    #[test]
    fn version_1_state_loads_and_routes_are_written_since_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = serde_json::json!({
            "format_version": 1,
            "deployments": [{"spec": spec(), "confirmed": true, "replicas": []}],
        });
        std::fs::write(dir.path().join(STATE_FILE), v1.to_string()).unwrap();
        let read = read_state(dir.path()).unwrap();
        assert_eq!(read.deployments[0].spec, spec());
        assert!(read.routes.is_empty() && read.retirements.is_empty());

        let mut registry = Registry::default();
        let route = RouteSpec {
            endpoint: "risk-api".into(),
            listen: loopback(8080),
            backends: [("blue".to_string(), Backend::new("blue", "6b28a728a74d"))].into(),
            weights: [("blue".to_string(), 100)].into(),
            mirror: None,
            key_sha256: Some("ab".repeat(32)),
        };
        registry
            .routes
            .insert("risk-api".into(), Hosted::new(route.clone()));
        registry.retirements.insert(
            spec().key(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(7),
        );
        write_state(dir.path(), &registry.to_file()).unwrap();
        let read = read_state(dir.path()).unwrap();
        assert_eq!(read.format_version, 2);
        assert_eq!(read.routes, vec![route]);
        assert_eq!(
            read.retirements,
            vec![RetirementRecord::new(
                &spec().key(),
                SystemTime::UNIX_EPOCH + Duration::from_secs(7)
            )]
        );

        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"format_version": 3, "deployments": []}"#,
        )
        .unwrap();
        let error = read_state(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("format version 3 (this supervisor reads 1 to 2)"),
            "{error}"
        );
    }

    #[test]
    fn routing_errors_cross_the_wire_typed() {
        let errors = [
            Error::PortInUse {
                endpoint: "risk-api".into(),
                listen: loopback(8080),
                holder: Some("fraud-api".into()),
            },
            Error::StillRouted {
                deployment: "risk-api/blue@v1".into(),
                endpoint: "risk-api".into(),
                backend: "blue".into(),
                weight: 40,
            },
            Error::NotServing {
                endpoint: "risk-api".into(),
                listen: loopback(8080),
                reason: "the port of 127.0.0.1:8080 is in use".into(),
            },
        ];
        for error in errors {
            let message = error.to_string();
            let line = serde_json::to_string(&Response::Error {
                error: error.into(),
            })
            .unwrap();
            let Response::Error { error } = serde_json::from_str(&line).unwrap() else {
                panic!("not an error: {line}");
            };
            let error = Error::from(error);
            assert!(!matches!(error, Error::Refused { .. }), "{error:?}");
            assert_eq!(error.to_string(), message);
        }
        let stats = Response::Stats {
            stats: Stats {
                requests: 2,
                errors: 0,
                latency: vec![(0.1, 2), (f64::INFINITY, 2)],
            },
        };
        let line = serde_json::to_string(&stats).unwrap();
        let Response::Stats { stats } = serde_json::from_str(&line).unwrap() else {
            panic!("not stats: {line}");
        };
        assert_eq!(stats.latency[1], (f64::INFINITY, 2));
    }

    #[test]
    fn log_tails_skip_blank_lines_and_earlier_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica-0.log");
        std::fs::write(&path, "old run\n").unwrap();
        let offset = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"one\n\ntwo\nthree\n")
            .unwrap();
        assert_eq!(log_tail(&path, offset, 2), "two\nthree");
        assert_eq!(log_tail(&path, offset, 10), "one\ntwo\nthree");
        assert_eq!(log_tail(&dir.path().join("none"), 0, 3), "");
        assert!(mentions_port_in_use(
            "error: cannot listen on 127.0.0.1:1: Address already in use (os error 98)"
        ));
    }

    #[test]
    fn long_state_folders_are_refused_before_binding() {
        let long = PathBuf::from("/tmp").join("x".repeat(120));
        assert!(matches!(
            SupervisorClient::new(&long),
            Err(Error::SocketPathTooLong { .. })
        ));
    }
}

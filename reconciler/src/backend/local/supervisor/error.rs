//! The supervisor's one error type: what its client, its daemon and its watchdog fail
//! with. The errors a request can meet keep their variant across the socket
//! ([`super::protocol`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::spec::StartFailure;
use super::state::MAX_SOCKET_PATH;

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

/// ` (by the router of endpoint …)`, when the port is held by one of this supervisor's.
fn held_by(holder: Option<&str>) -> String {
    holder
        .map(|endpoint| format!(" (by the router of endpoint `{endpoint}`)"))
        .unwrap_or_default()
}

/// The names, comma-separated, or `none`.
pub(super) fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The message of [`Error::StartFailed`]: one line per replica that failed.
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

/// Quotes `text` (a log tail) under a message, `    | ` before each line.
pub(super) fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

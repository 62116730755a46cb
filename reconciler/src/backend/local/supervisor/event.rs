//! What the daemon and its watchdog report: an [`Event`] per thing they do, which
//! `cairn supervise` writes to `supervisor.log` (the library does no terminal I/O).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{DeploymentKey, ReplicaId};

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
    /// The autoscaler changed how many replicas a revision runs (`why`: the measured rate
    /// against the target).
    Scaled {
        deployment: DeploymentKey,
        from: u32,
        to: u32,
        why: String,
    },
    /// The autoscaler could not start the replicas it wanted; it tries again later.
    ScaleFailed {
        deployment: DeploymentKey,
        to: u32,
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
            Event::Scaled {
                deployment,
                from,
                to,
                why,
            } => write!(f, "{deployment}: scaled {from} → {to} replicas ({why})"),
            Event::ScaleFailed {
                deployment,
                to,
                reason,
            } => write!(
                f,
                "{deployment}: could not scale to {to} replicas: {reason}; trying again"
            ),
        }
    }
}

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
//! output and the daemon's in `DIR/supervisor.log`, the allow-listed
//! [`ChildEnv`](super::child_env::ChildEnv) as its only environment) when no daemon answers.
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
//! Routing (in `routing/`): [`SupervisorClient::route`] gives an endpoint one
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
//! Protocol (`protocol.rs`): one JSON request per connection, one line each way (`{"op": "apply",
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
//!
//! Where things are: what is asked and reported in `spec.rs` and `event.rs`, [`Error`] in
//! `error.rs`; the client in `client.rs`; the daemon in `daemon.rs` (its loop and shared
//! state), `registry.rs` (what it runs), `apply.rs` (apply, stop, shutdown), `autoscale.rs` (the
//! autoscaler), `recover.rs`
//! (taking over from a previous daemon), `state.rs` (the state folder and `state.json`) and
//! `lock.rs`; one replica's life in `replica.rs`, its readiness checks in `health.rs`, its
//! process, `/proc` and signals in `process.rs`, its log in `logs.rs`; stopping with no
//! daemon in `offline.rs`; the routers in `routing/`, the watchdog in `watchdog.rs`, the
//! systemd unit in `systemd.rs`.

mod apply;
mod autoscale;
mod client;
mod daemon;
mod error;
mod event;
mod health;
mod lock;
mod logs;
mod offline;
mod process;
mod protocol;
mod recover;
mod registry;
mod replica;
mod routing;
mod spec;
mod state;
mod systemd;
mod watchdog;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

pub use client::{ensure_running, SupervisorClient};
pub use daemon::{run_daemon, DaemonOptions};
pub use error::{Error, Result};
pub use event::Event;
pub use offline::{stop_without_daemon, OfflineStop};
pub use routing::{BackendStatus, RouteBackend, RouteSpec, RouteStatus, RouteTraffic};
pub use spec::{
    DaemonInfo, DeploymentKey, DeploymentSpec, ReplicaId, ReplicaState, ReplicaStatus, ScaleSpec,
    StartFailure,
};
pub use state::recorded;
pub use systemd::systemd_unit;
pub use watchdog::{run_watchdog, WatchdogLink, MAX_LISTENERS};

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

/// The loopback address on `port`, where replicas listen.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

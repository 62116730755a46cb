//! The routers the daemon hosts: one [`router`](crate::backend::local::router) per
//! endpoint, in front of the ready replicas of the revisions its [`RouteSpec`] names. This
//! module owns what is asked for ([`RouteSpec`]) and reported ([`RouteStatus`]), the client
//! calls, and the daemon's side: binding, keeping each router's addresses in step with the
//! registry, counters sampled for a request rate, rebinding after a failed bind, and
//! scheduled stops. It never starts or stops a replica itself; [`super`] does (a scheduled
//! stop goes through its stop).
//!
//! Locks: route changes hold [`Shared::routing`](super::daemon::Shared::routing) (async, never across an apply), then the
//! registry (never across an await). A router's routes are always set under the registry
//! lock, from its spec and the registry's replicas, so two changes cannot interleave.
//!
//! Files: `spec.rs` (what is asked for and reported), `client.rs` (the client's calls and
//! [`RouteTraffic`]), `hosted.rs` (one router in the daemon and its table), `bind.rs`
//! (binding, and binding again), `daemon.rs` (the daemon's route requests and chores),
//! `retire.rs` (scheduled stops).

mod bind;
mod client;
mod daemon;
mod hosted;
mod retire;
mod spec;

pub use client::RouteTraffic;
pub(super) use daemon::{
    close_all, ready, recover, route, set_mirror, set_weights, spawn_chores, stats, statuses,
    take_off_routes, unroute,
};
pub(super) use hosted::Hosted;
pub(super) use retire::{stop_later, RetirementRecord};
pub use spec::{BackendStatus, RouteBackend, RouteSpec, RouteStatus};

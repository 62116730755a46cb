//! The local traffic router: one port in front of an endpoint's deployments on this
//! machine, splitting requests between them by weight. It is what the rollout engine
//! drives for `local` endpoints, through [`Handle`]'s [`Traffic`] implementation.
//!
//! Flow: [`bind`] takes the port first, so a port in use fails at once and before anything
//! starts; [`Router::run`] then proxies requests until its `shutdown` future completes.
//! [`Router::handle`] gives a cheap, cloneable [`Handle`] that changes the routes, probes
//! readiness and reads counters while the router runs.
//!
//! Design: shared-nothing workers, as nginx's (`worker` module): [`RouterOptions::workers`]
//! threads, each with a single-threaded runtime, accepting on its own copy of the
//! listening socket and forwarding over its own keep-alive connections to the replicas
//! (`pool` module), so a request never changes threads and takes no lock.
//!
//! For each request (any method and path, HTTP/1.1):
//! 0. With [`Routes::key_sha256`] set, a request without `Authorization: Bearer KEY`, or
//!    whose KEY does not hash to that digest (compared in constant time), is answered 401
//!    with `www-authenticate: Bearer`. The header is not passed on to the replicas.
//! 1. A request with the [`DEPLOYMENT_HEADER`] header goes to that deployment, whatever its
//!    weight (0 % included). An unknown name is 404 with the list of deployments.
//! 2. Otherwise the deployment is chosen by the weights: a smooth weighted round-robin
//!    schedule of 100 slots (nginx's algorithm), walked by one atomic counter, so every 100
//!    consecutive requests split exactly by the percents, interleaved. All weights 0 is 503.
//! 3. The body is read into memory (up to [`RouterOptions::max_body_bytes`], else 413), so
//!    that it can be retried and mirrored; the response is streamed back as it comes.
//! 4. The deployment's replicas are taken in round-robin order. A replica that refuses the
//!    connection (or does not accept it within [`RouterOptions::connect_timeout`]) is left
//!    out for [`RouterOptions::eject_for`] and the request goes to the next replica. Only
//!    connection failures are retried: a request that reached a replica is never sent
//!    twice. When no replica accepts, the answer is 502; when the replica does not answer
//!    within [`RouterOptions::request_timeout`], 504.
//! 5. With a mirror set, that percent of the weighted (not pinned) requests is also sent to
//!    the mirror deployment, on a task of its own: its response is read and dropped, and
//!    neither its outcome nor its latency reaches the client. At most
//!    [`RouterOptions::max_mirror_in_flight`] mirror requests run at once; past that, copies
//!    are skipped rather than queued.
//!
//! Errors the router answers itself (401, 404, 413, 502, 503, 504) are JSON `{"error": ...}`
//! and carry no [`DEPLOYMENT_HEADER`], since no deployment answered them.
//!
//! Counters: the router counts, per deployment, the requests it sent there (mirror copies
//! included: they are that deployment's traffic too), the errors (a 5xx answer, or no
//! answer at all: 502 and 504 above) and the latency from the request's arrival at the
//! router to the response headers, in the buckets of [`model_server::LATENCY_BUCKETS`]. Requests
//! that reach no deployment (no valid key, unknown pin, no traffic, a bad body) are not
//! counted. A connection failure that a retry recovered is not an error. Counters are
//! cumulative and keep counting across route changes.
//!
//! Guarantees:
//! - Changing routes ([`Handle::set_weights`], [`Handle::set_mirror`],
//!   [`Handle::set_routes`]) swaps an immutable table; requests in flight finish on the
//!   table they started with, so a traffic shift never fails a request.
//! - Graceful shutdown: when `shutdown` completes, the listener closes and requests in
//!   flight run to completion before `run` returns. Mirror copies still running then are
//!   dropped (their answers would be dropped anyway).
//! - Bad input is an error response, never a panic; no terminal I/O.
//!
//! Caveats: HTTP/1.1 to the replicas, no TLS, no connection upgrades (WebSocket); bodies
//! are buffered, so streaming uploads are not. Hop-by-hop headers are dropped both ways and
//! `x-forwarded-for` gets the client's address; other headers pass unchanged.

mod auth;
mod capture;
mod counters;
mod handle;
mod pool;
mod proxy;
mod routes;
mod server;
mod table;
mod upstream;
mod worker;

use std::net::SocketAddr;

pub use capture::Capture;
pub use handle::Handle;
pub use routes::{Mirror, RouterOptions, Routes};
pub use server::{bind, bind_listener, Router};

/// Errors from starting the router or from routes it cannot take. Failed requests are
/// not errors here: they are answered (4xx/5xx) and counted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the router on {addr} failed")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no deployment named `{name}` behind this router; it has: {}",
        list(known)
    )]
    UnknownDeployment { name: String, known: Vec<String> },
    #[error("weights must add up to 100 (or 0), got {sum}")]
    BadWeights { sum: u64 },
    #[error("the mirror to `{deployment}` is {percent} %; it must be at most 100 %")]
    BadMirror { deployment: String, percent: u32 },
    #[error(
        "the key digest must be the SHA-256 of the key as 64 hex digits, got {length} \
         characters; compute it with `printf %s KEY | sha256sum`"
    )]
    BadKeyDigest { length: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

//! The local traffic router: one port in front of an endpoint's deployments on this
//! machine, splitting requests between them by weight. It is what the rollout engine
//! drives for `local` endpoints, through [`Handle`]'s [`Traffic`] implementation.
//!
//! Flow: [`bind`] takes the port first, so a port in use fails at once and before anything
//! starts; [`Router::run`] then proxies requests until its `shutdown` future completes.
//! [`Router::handle`] gives a cheap, cloneable [`Handle`] that changes the routes, probes
//! readiness and reads counters while the router runs.
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
//!   flight run to completion before `run` returns. Mirror copies still running are left to
//!   finish on their own.
//! - Bad input is an error response, never a panic; no terminal I/O.
//!
//! Caveats: HTTP/1.1 to the replicas, no TLS, no connection upgrades (WebSocket); bodies
//! are buffered, so streaming uploads are not. Hop-by-hop headers are dropped both ways and
//! `x-forwarded-for` gets the client's address; other headers pass unchanged.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::join_all;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::diagnostics::error_chain;
use crate::rollout::{Stats, Traffic, TrafficError, Weights};
use crate::workload::model_server::{self, DEPLOYMENT_HEADER};

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

/// Where requests go: the deployments, their weights, an optional mirror, and the key
/// callers must present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Deployment name → the addresses of its replicas.
    pub deployments: BTreeMap<String, Vec<SocketAddr>>,
    /// Deployment name → percent of the requests, summing to 100 (or 0: no traffic).
    /// Deployments not named get none.
    pub weights: Weights,
    pub mirror: Option<Mirror>,
    /// When set, every request must carry `Authorization: Bearer KEY` where the SHA-256
    /// of KEY, in hex, is this; others are answered 401. Only the digest is held, so the
    /// key itself is never stored or logged.
    pub key_sha256: Option<String>,
}

impl Routes {
    /// Checks that the weights sum to 100 (or 0) and name deployments, that the mirror
    /// names a deployment and is at most 100 %, and that the key digest is SHA-256 hex.
    pub fn validate(&self) -> Result<()> {
        let unknown = |name: &str| Error::UnknownDeployment {
            name: name.to_string(),
            known: self.deployments.keys().cloned().collect(),
        };
        let sum: u64 = self.weights.values().map(|w| u64::from(*w)).sum();
        if sum != 0 && sum != 100 {
            return Err(Error::BadWeights { sum });
        }
        if let Some(name) = self
            .weights
            .keys()
            .find(|name| !self.deployments.contains_key(*name))
        {
            return Err(unknown(name));
        }
        if let Some(mirror) = &self.mirror {
            if !self.deployments.contains_key(&mirror.deployment) {
                return Err(unknown(&mirror.deployment));
            }
            if mirror.percent > 100 {
                return Err(Error::BadMirror {
                    deployment: mirror.deployment.clone(),
                    percent: mirror.percent,
                });
            }
        }
        if let Some(digest) = &self.key_sha256 {
            parse_digest(digest)?;
        }
        Ok(())
    }
}

/// The 32 bytes of a SHA-256 digest written as 64 hex digits.
fn parse_digest(digest: &str) -> Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    match hex::decode_to_slice(digest, &mut bytes) {
        Ok(()) => Ok(bytes),
        Err(_) => Err(Error::BadKeyDigest {
            length: digest.len(),
        }),
    }
}

/// Whether two digests are equal, in time independent of where they differ, so that
/// response times tell nothing about the expected digest.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A share of the weighted requests copied to one deployment, whose answers are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub deployment: String,
    /// 0 to 100.
    pub percent: u32,
}

/// Where to listen, the first routes, and the router's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterOptions {
    /// The address to listen on; port 0 picks a free port (see [`Router::local_addr`]).
    pub listen: SocketAddr,
    pub routes: Routes,
    /// Requests with a larger body are answered 413.
    pub max_body_bytes: usize,
    /// How long a replica may take to accept a connection before the next one is tried.
    pub connect_timeout: Duration,
    /// How long a replica may take to answer (to the response headers) before the request
    /// is answered 504. `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// How long a replica may take to answer `GET /healthz` in [`Handle::ready`].
    pub probe_timeout: Duration,
    /// How long a replica that refused a connection is skipped (it is still tried when
    /// every replica of its deployment is skipped).
    pub eject_for: Duration,
    /// Mirror copies in flight at most; more are skipped.
    pub max_mirror_in_flight: usize,
}

impl RouterOptions {
    /// Returns options with the default limits.
    pub fn new(listen: SocketAddr, routes: Routes) -> Self {
        RouterOptions {
            listen,
            routes,
            max_body_bytes: model_server::DEFAULT_MAX_BODY_BYTES,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Some(Duration::from_secs(60)),
            probe_timeout: Duration::from_secs(1),
            eject_for: Duration::from_secs(2),
            max_mirror_in_flight: 64,
        }
    }
}

/// Checks the routes and binds `options.listen`. Nothing is served until [`Router::run`].
pub async fn bind(options: RouterOptions) -> Result<Router> {
    // Checked before the port is taken, so bad routes leave the port free.
    Table::build(options.routes.clone(), None, &mut BTreeMap::new())?;
    let addr = options.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve_on(listener, options)
}

/// Checks the routes and takes `listener`, a socket already listening (one a previous
/// supervisor daemon bound, kept open across its restart); `options.listen` is only
/// what errors name. Connections waiting in its backlog are answered once it runs.
pub fn bind_listener(listener: std::net::TcpListener, options: RouterOptions) -> Result<Router> {
    let addr = options.listen;
    let bind_error = |source| Error::Bind { addr, source };
    listener.set_nonblocking(true).map_err(bind_error)?;
    serve_on(
        TcpListener::from_std(listener).map_err(bind_error)?,
        options,
    )
}

fn serve_on(listener: TcpListener, options: RouterOptions) -> Result<Router> {
    let mut counters = BTreeMap::new();
    let table = Table::build(options.routes.clone(), None, &mut counters)?;
    let addr = options.listen;
    let bind_error = |source| Error::Bind { addr, source };
    let local_addr = listener.local_addr().map_err(bind_error)?;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(options.connect_timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let shared = Arc::new(Shared {
        local_addr,
        table: RwLock::new(Arc::new(table)),
        counters: Mutex::new(counters),
        client,
        mirror_slots: Arc::new(Semaphore::new(
            options.max_mirror_in_flight.min(Semaphore::MAX_PERMITS),
        )),
        epoch: Instant::now(),
        options,
    });
    Ok(Router {
        listener,
        handle: Handle { shared },
    })
}

/// A bound router, not yet answering.
#[derive(Debug)]
pub struct Router {
    listener: TcpListener,
    handle: Handle,
}

impl Router {
    /// The address actually bound (the chosen port when [`RouterOptions::listen`] had 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// Returns a handle that changes routes and reads counters, also while running.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// A second descriptor of the listening socket (close-on-exec): while any copy is
    /// open the port stays bound and new connections wait in its backlog.
    pub fn listener_copy(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd as _;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Proxies requests until `shutdown` completes; the listener closes first and requests
    /// in flight finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Router { listener, handle } = self;
        let addr = handle.shared.local_addr;
        let app = axum::Router::new()
            .fallback(proxy)
            .with_state(handle.shared);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve { addr, source })
    }
}

/// Changes a router's routes and reads its counters; clones share one router.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// The address the router listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Returns the routes in force.
    pub fn routes(&self) -> Routes {
        self.shared.table().routes.clone()
    }

    /// Replaces the deployments, weights and mirror at once. Deployments whose replicas
    /// did not change keep their round-robin position and ejections.
    pub fn set_routes(&self, routes: Routes) -> Result<()> {
        self.shared.update(|_| Ok(routes))
    }

    /// Routes requests by these weights from now on; every name must be a deployment.
    pub fn set_weights(&self, weights: &Weights) -> Result<()> {
        self.shared.update(|current| {
            Ok(Routes {
                weights: weights.clone(),
                ..current.clone()
            })
        })
    }

    /// Sets or clears the mirror.
    pub fn set_mirror(&self, mirror: Option<Mirror>) -> Result<()> {
        self.shared.update(|current| {
            Ok(Routes {
                mirror,
                ..current.clone()
            })
        })
    }

    /// Returns whether every replica of the deployment answers `GET /healthz` with 200
    /// within [`RouterOptions::probe_timeout`]. A deployment without replicas is not ready.
    pub async fn ready(&self, deployment: &str) -> Result<bool> {
        let table = self.shared.table();
        let deployment = table.deployment(deployment)?;
        if deployment.replicas.is_empty() {
            return Ok(false);
        }
        let probes = deployment
            .replicas
            .iter()
            .map(|replica| self.shared.probe(replica.addr));
        Ok(join_all(probes).await.into_iter().all(|ok| ok))
    }

    /// Returns the deployment's cumulative counters, also for a deployment that was
    /// removed from the routes since.
    pub fn stats(&self, deployment: &str) -> Result<Stats> {
        let counters = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match counters.get(deployment) {
            Some(c) => Ok(c.snapshot()),
            None => Err(Error::UnknownDeployment {
                name: deployment.to_string(),
                known: counters.keys().cloned().collect(),
            }),
        }
    }
}

#[async_trait]
impl Traffic for Handle {
    async fn set_weights(&self, weights: &Weights) -> Result<(), TrafficError> {
        Handle::set_weights(self, weights).map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }

    async fn ready(&self, deployment: &str) -> Result<bool, TrafficError> {
        Handle::ready(self, deployment)
            .await
            .map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }

    async fn stats(&self, deployment: &str) -> Result<Stats, TrafficError> {
        Handle::stats(self, deployment).map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }

    async fn set_mirror(&self, mirror: Option<(&str, u32)>) -> Result<(), TrafficError> {
        let mirror = mirror.map(|(deployment, percent)| Mirror {
            deployment: deployment.to_string(),
            percent,
        });
        Handle::set_mirror(self, mirror).map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }
}

/// State shared by the request handler and the handles.
#[derive(Debug)]
struct Shared {
    options: RouterOptions,
    local_addr: SocketAddr,
    /// The routes in force; requests take a reference and keep it to the end.
    table: RwLock<Arc<Table>>,
    /// Every deployment's counters, by name, kept across route changes.
    counters: Mutex<BTreeMap<String, Arc<Counters>>>,
    client: Client<HttpConnector, Full<Bytes>>,
    mirror_slots: Arc<Semaphore>,
    /// The zero of [`Replica::ejected_until`].
    epoch: Instant,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Builds a table from the current routes changed by `change`, and puts it in force.
    fn update(&self, change: impl FnOnce(&Routes) -> Result<Routes>) -> Result<()> {
        // Held while building, so that concurrent changes apply one after the other.
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let routes = change(&table.routes)?;
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let new = Table::build(routes, Some(&table), &mut counters)?;
        *table = Arc::new(new);
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends the request to one of the deployment's replicas, trying the next one when a
    /// replica does not accept the connection.
    async fn forward(
        &self,
        deployment: &Deployment,
        outgoing: &Outgoing,
    ) -> Result<Response<hyper::body::Incoming>, Failure> {
        let n = deployment.replicas.len();
        if n == 0 {
            return Err(Failure::NoReplicas);
        }
        let first = deployment.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut order: Vec<&Replica> = (0..n)
            .map(|i| &deployment.replicas[first.wrapping_add(i) % n])
            .collect();
        // Replicas that refused recently go last (stable: round-robin order otherwise).
        order.sort_by_key(|r| r.ejected_until.load(Ordering::Relaxed) > now);

        let mut refused = Vec::new();
        let mut last_error = None;
        for replica in order {
            let Some(request) = outgoing.to(replica.addr) else {
                return Err(Failure::BadRequestTarget);
            };
            let sent = self.client.request(request);
            let result = match self.options.request_timeout {
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(Failure::Timeout {
                            addr: replica.addr,
                            after: limit,
                        })
                    }
                },
                None => sent.await,
            };
            match result {
                Ok(response) => {
                    replica.ejected_until.store(0, Ordering::Relaxed);
                    return Ok(response);
                }
                // The request never left: safe to send elsewhere.
                Err(error) if error.is_connect() => {
                    let until = self
                        .now_ms()
                        .saturating_add(duration_ms(self.options.eject_for));
                    replica.ejected_until.store(until, Ordering::Relaxed);
                    refused.push(replica.addr);
                    last_error = Some(error);
                }
                Err(error) => {
                    return Err(Failure::Failed {
                        addr: replica.addr,
                        reason: error_chain(&error),
                    })
                }
            }
        }
        Err(Failure::Refused {
            addrs: refused,
            reason: last_error.map(|e| error_chain(&e)).unwrap_or_default(),
        })
    }

    /// Whether `GET /healthz` on `addr` answers 200 in time.
    async fn probe(&self, addr: SocketAddr) -> bool {
        let Ok(uri) = Uri::try_from(format!("http://{addr}/healthz")) else {
            return false;
        };
        let mut request = axum::http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        let probe = async {
            match self.client.request(request).await {
                Ok(response) => {
                    let ok = response.status() == StatusCode::OK;
                    // Read to the end, so the connection can be reused.
                    let _ = response.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            }
        };
        tokio::time::timeout(self.options.probe_timeout, probe)
            .await
            .unwrap_or(false)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The routes in force, with what each request needs to pick a replica.
#[derive(Debug)]
struct Table {
    routes: Routes,
    /// The digest of the key requests must carry, when one is required.
    key_sha256: Option<[u8; 32]>,
    deployments: BTreeMap<String, Arc<Deployment>>,
    /// The weighted round-robin schedule: 100 slots, or none when all weights are 0.
    schedule: Vec<Arc<Deployment>>,
    next: AtomicUsize,
    mirror: Option<(Arc<Deployment>, u32)>,
    mirror_next: AtomicUsize,
}

impl Table {
    /// Checks `routes` and builds their table, reusing `previous`'s deployments whose
    /// replicas did not change and the counters of every deployment seen before.
    fn build(
        routes: Routes,
        previous: Option<&Table>,
        counters: &mut BTreeMap<String, Arc<Counters>>,
    ) -> Result<Table> {
        routes.validate()?;
        let key_sha256 = routes.key_sha256.as_deref().map(parse_digest).transpose()?;

        let deployments: BTreeMap<String, Arc<Deployment>> = routes
            .deployments
            .iter()
            .map(|(name, addrs)| {
                let reused = previous
                    .and_then(|t| t.deployments.get(name))
                    .filter(|d| d.replicas.iter().map(|r| r.addr).eq(addrs.iter().copied()));
                let deployment = match reused {
                    Some(d) => d.clone(),
                    None => Arc::new(Deployment {
                        name: name.clone(),
                        replicas: addrs
                            .iter()
                            .map(|&addr| Replica {
                                addr,
                                ejected_until: AtomicU64::new(0),
                            })
                            .collect(),
                        next: AtomicUsize::new(0),
                        counters: counters.entry(name.clone()).or_default().clone(),
                    }),
                };
                (name.clone(), deployment)
            })
            .collect();

        let schedule = smooth_schedule(&routes.weights)
            .into_iter()
            .filter_map(|name| deployments.get(name).cloned())
            .collect();
        let mirror = routes
            .mirror
            .as_ref()
            .filter(|m| m.percent > 0)
            .and_then(|m| Some((deployments.get(&m.deployment)?.clone(), m.percent)));
        Ok(Table {
            routes,
            key_sha256,
            deployments,
            schedule,
            next: AtomicUsize::new(0),
            mirror,
            mirror_next: AtomicUsize::new(0),
        })
    }

    fn deployment(&self, name: &str) -> Result<&Arc<Deployment>> {
        self.deployments
            .get(name)
            .ok_or_else(|| Error::UnknownDeployment {
                name: name.to_string(),
                known: self.names(),
            })
    }

    fn names(&self) -> Vec<String> {
        self.deployments.keys().cloned().collect()
    }

    /// The next deployment by weight, or `None` when no deployment has traffic.
    fn pick(&self) -> Option<&Arc<Deployment>> {
        if self.schedule.is_empty() {
            return None;
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        self.schedule.get(slot)
    }

    /// The mirror deployment, when this request is one to copy.
    fn pick_mirror(&self) -> Option<&Arc<Deployment>> {
        let (deployment, percent) = self.mirror.as_ref()?;
        // Slot i of every 100 is copied when ⌊(i+1)·p/100⌋ steps up: p slots, spread out.
        let slot = self.mirror_next.fetch_add(1, Ordering::Relaxed) % 100;
        let p = *percent as usize;
        ((slot + 1) * p / 100 > slot * p / 100).then_some(deployment)
    }
}

/// Returns 100 slots (one per percent) naming deployments in nginx's smooth weighted
/// round-robin order: each deployment appears as often as its weight, spread out. Empty
/// when all weights are 0.
fn smooth_schedule(weights: &Weights) -> Vec<&str> {
    let live: Vec<(&str, i64)> = weights
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(n, w)| (n.as_str(), i64::from(*w)))
        .collect();
    let total: i64 = live.iter().map(|(_, w)| w).sum();
    let mut current = vec![0i64; live.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, (_, w)) in current.iter_mut().zip(&live) {
            *c += w;
        }
        // The largest current weight wins; ties go to the first by name.
        let Some(best) =
            (0..live.len()).max_by(|&a, &b| current[a].cmp(&current[b]).then(b.cmp(&a)))
        else {
            break;
        };
        current[best] -= total;
        schedule.push(live[best].0);
    }
    schedule
}

/// One deployment as the router sees it.
#[derive(Debug)]
struct Deployment {
    name: String,
    replicas: Vec<Replica>,
    /// The round-robin position among the replicas.
    next: AtomicUsize,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct Replica {
    addr: SocketAddr,
    /// Milliseconds since [`Shared::epoch`] until which the replica is tried last; 0 when
    /// it is not ejected.
    ejected_until: AtomicU64,
}

/// Requests, errors and the latency histogram of one deployment, updated with relaxed
/// atomics: each value is exact, but a snapshot taken while requests finish may see one
/// in one counter and not yet in another.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; model_server::LATENCY_BUCKETS.len() + 1],
}

impl Counters {
    fn record(&self, error: bool, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = model_server::LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(model_server::LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let mut cumulative = 0;
        let latency = model_server::LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(le, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (le, cumulative)
            })
            .collect();
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency,
        }
    }
}

/// A request to forward, with its body in memory so that it can be sent more than once.
#[derive(Debug, Clone)]
struct Outgoing {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    body: Bytes,
}

impl Outgoing {
    /// Returns the request for one replica, or `None` if no URI can be made for it.
    fn to(&self, addr: SocketAddr) -> Option<axum::http::Request<Full<Bytes>>> {
        let authority = Authority::try_from(addr.to_string()).ok()?;
        let mut parts = axum::http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(self.path.clone());
        let uri = Uri::from_parts(parts).ok()?;
        let mut request = axum::http::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        Some(request)
    }
}

/// Why a request got no answer from its deployment.
#[derive(Debug)]
enum Failure {
    NoReplicas,
    BadRequestTarget,
    Refused {
        addrs: Vec<SocketAddr>,
        reason: String,
    },
    Failed {
        addr: SocketAddr,
        reason: String,
    },
    Timeout {
        addr: SocketAddr,
        after: Duration,
    },
}

impl Failure {
    fn into_response(self, deployment: &str) -> Response {
        let (status, message) = match self {
            Failure::NoReplicas => (
                StatusCode::BAD_GATEWAY,
                format!("deployment `{deployment}` has no replicas"),
            ),
            Failure::BadRequestTarget => (
                StatusCode::BAD_GATEWAY,
                format!("cannot make a request URI for deployment `{deployment}`"),
            ),
            Failure::Refused { addrs, reason } => {
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                (
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "no replica of deployment `{deployment}` accepted the connection ({}): \
                         {reason}",
                        addrs.join(", ")
                    ),
                )
            }
            Failure::Failed { addr, reason } => (
                StatusCode::BAD_GATEWAY,
                format!("replica {addr} of deployment `{deployment}` failed: {reason}"),
            ),
            Failure::Timeout { addr, after } => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "replica {addr} of deployment `{deployment}` did not answer within {}",
                    humantime::format_duration(after)
                ),
            ),
        };
        (
            status,
            Json(json!({"error": message, "deployment": deployment})),
        )
            .into_response()
    }
}

/// Headers that belong to one connection, not to the message (RFC 9110, 7.6.1), and
/// `expect`, which the router's own server answers.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// Removes hop-by-hop headers, those named by `connection` included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn error_response(status: StatusCode, message: String, table: &Table) -> Response {
    (
        status,
        Json(json!({"error": message, "deployments": table.names()})),
    )
        .into_response()
}

/// Checks the request's bearer key against the expected digest.
fn authorize(headers: &HeaderMap, expected: &[u8; 32]) -> std::result::Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("this endpoint requires a key: send `Authorization: Bearer <key>`");
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err("the `Authorization` header must be `Bearer <key>`");
    }
    let key = value[scheme.len()..].trim_ascii();
    let digest: [u8; 32] = Sha256::digest(key).into();
    if same_digest(&digest, expected) {
        Ok(())
    } else {
        Err("the key is not valid for this endpoint")
    }
}

/// A 401 answer asking for a bearer key; like the router's other own answers, it names
/// no deployment and is not counted.
fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        Json(json!({ "error": message })),
    )
        .into_response()
}

/// Answers every request: checks the key, picks the deployment, forwards, counts.
async fn proxy(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let start = Instant::now();
    let table = shared.table();
    let (mut parts, body) = request.into_parts();

    if let Some(expected) = &table.key_sha256 {
        if let Err(message) = authorize(&parts.headers, expected) {
            return unauthorized(message);
        }
        // The key is the router's; the replicas never see it (nor log it).
        parts.headers.remove(header::AUTHORIZATION);
    }

    let pinned = match parts.headers.get(DEPLOYMENT_HEADER) {
        None => None,
        Some(value) => {
            let name = String::from_utf8_lossy(value.as_bytes());
            let name = name.trim();
            match table.deployments.get(name) {
                Some(deployment) => Some(deployment.clone()),
                None => {
                    let message = format!(
                        "no deployment named `{name}` (from the `{DEPLOYMENT_HEADER}` header); \
                         this endpoint has: {}",
                        list(&table.names())
                    );
                    return error_response(StatusCode::NOT_FOUND, message, &table);
                }
            }
        }
    };

    let max = shared.options.max_body_bytes;
    let too_large = || {
        let message = format!("the request body is larger than the limit of {max} bytes");
        error_response(StatusCode::PAYLOAD_TOO_LARGE, message, &table)
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let body = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return too_large(),
        Err(error) => {
            let message = format!("cannot read the request body: {error}");
            return error_response(StatusCode::BAD_REQUEST, message, &table);
        }
    };

    let (deployment, weighted) = match pinned {
        Some(deployment) => (deployment, false),
        None => match table.pick() {
            Some(deployment) => (deployment.clone(), true),
            None => {
                let message = format!(
                    "no deployment carries traffic (every weight is 0); pin one with the \
                     `{DEPLOYMENT_HEADER}` header: {}",
                    list(&table.names())
                );
                return error_response(StatusCode::SERVICE_UNAVAILABLE, message, &table);
            }
        },
    };

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", value);
    }
    let outgoing = Outgoing {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        headers,
        body,
    };

    if weighted {
        if let Some(mirror) = table.pick_mirror() {
            if mirror.name != deployment.name {
                mirror_copy(&shared, mirror.clone(), outgoing.clone());
            }
        }
    }
    // The table is not needed any more; a route change may free it.
    drop(table);

    match shared.forward(&deployment, &outgoing).await {
        Ok(response) => {
            let failed = response.status().is_server_error();
            deployment.counters.record(failed, start.elapsed());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(failure) => {
            deployment.counters.record(true, start.elapsed());
            failure.into_response(&deployment.name)
        }
    }
}

/// Sends a copy of the request to the mirror deployment on its own task, unless too many
/// copies are in flight.
fn mirror_copy(shared: &Arc<Shared>, deployment: Arc<Deployment>, outgoing: Outgoing) {
    let Ok(slot) = shared.mirror_slots.clone().try_acquire_owned() else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let _slot = slot;
        // Timed from its own start: the copy's latency is the mirror deployment's.
        let start = Instant::now();
        match shared.forward(&deployment, &outgoing).await {
            Ok(response) => {
                let failed = response.status().is_server_error();
                deployment.counters.record(failed, start.elapsed());
                // Read to the end, so the connection can be reused; the answer is dropped.
                let _ = response.into_body().collect().await;
            }
            Err(_) => deployment.counters.record(true, start.elapsed()),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(&str, u32)]) -> Weights {
        pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    #[test]
    fn schedules_split_exactly_and_interleave() {
        let ninety_ten = weights(&[("blue", 90), ("green", 10)]);
        let schedule = smooth_schedule(&ninety_ten);
        assert_eq!(schedule.len(), 100);
        assert_eq!(schedule.iter().filter(|n| **n == "green").count(), 10);
        // Spread out: never two greens within 5 slots of each other.
        let greens: Vec<usize> = (0..100).filter(|&i| schedule[i] == "green").collect();
        assert!(greens.windows(2).all(|w| w[1] - w[0] >= 5), "{greens:?}");

        let thirds = weights(&[("a", 33), ("b", 33), ("c", 34)]);
        let schedule = smooth_schedule(&thirds);
        for (name, n) in [("a", 33), ("b", 33), ("c", 34)] {
            assert_eq!(schedule.iter().filter(|x| **x == name).count(), n);
        }
        assert_eq!(
            smooth_schedule(&weights(&[("blue", 0), ("green", 100)])),
            vec!["green"; 100]
        );
        assert!(smooth_schedule(&weights(&[("blue", 0)])).is_empty());
        assert!(smooth_schedule(&Weights::new()).is_empty());
    }

    fn routes() -> Routes {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Routes {
            deployments: [
                ("blue".to_string(), vec![addr]),
                ("green".to_string(), vec![addr]),
            ]
            .into(),
            weights: weights(&[("blue", 100)]),
            mirror: None,
            key_sha256: None,
        }
    }

    #[test]
    fn routes_are_checked() {
        let build = |routes: Routes| Table::build(routes, None, &mut BTreeMap::new());
        assert!(build(routes()).is_ok());
        let e = build(Routes {
            weights: weights(&[("blue", 60), ("green", 60)]),
            ..routes()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "weights must add up to 100 (or 0), got 120");
        let e = build(Routes {
            weights: weights(&[("blu", 100)]),
            ..routes()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no deployment named `blu` behind this router; it has: blue, green"
        );
        let mirror = |deployment: &str, percent| {
            build(Routes {
                mirror: Some(Mirror {
                    deployment: deployment.into(),
                    percent,
                }),
                ..routes()
            })
        };
        assert!(mirror("green", 50).is_ok());
        assert!(matches!(
            mirror("green", 101),
            Err(Error::BadMirror { percent: 101, .. })
        ));
        assert!(matches!(
            mirror("red", 10),
            Err(Error::UnknownDeployment { .. })
        ));
    }

    #[test]
    fn keys_are_checked_against_their_digest() {
        let digest = hex::encode(Sha256::digest(b"s3cret"));
        let expected = parse_digest(&digest).unwrap();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            authorize(&headers, &expected)
        };
        assert!(with("Bearer s3cret").is_ok());
        assert!(with("bearer  s3cret ").is_ok());
        assert_eq!(
            with("Bearer s3cre7"),
            Err("the key is not valid for this endpoint")
        );
        assert!(with("Basic czNjcmV0").unwrap_err().contains("Bearer <key>"));
        assert!(with("Bearer ").is_err());
        assert!(authorize(&HeaderMap::new(), &expected)
            .unwrap_err()
            .contains("requires a key"));
        assert!(same_digest(&expected, &expected));
        let mut other = expected;
        other[31] ^= 1;
        assert!(!same_digest(&expected, &other));

        let bad = |digest: &str| {
            Routes {
                key_sha256: Some(digest.into()),
                ..routes()
            }
            .validate()
        };
        assert!(bad(&digest).is_ok());
        assert!(matches!(
            bad("s3cret"),
            Err(Error::BadKeyDigest { length: 6 })
        ));
        assert!(bad(&digest.replace('a', "g")).is_err() || !digest.contains('a'));
    }

    #[test]
    fn mirror_copies_its_percent_of_every_hundred() {
        for percent in [0, 1, 20, 33, 50, 99, 100] {
            let table = Table::build(
                Routes {
                    mirror: Some(Mirror {
                        deployment: "green".into(),
                        percent,
                    }),
                    ..routes()
                },
                None,
                &mut BTreeMap::new(),
            )
            .unwrap();
            let copied = (0..300).filter(|_| table.pick_mirror().is_some()).count();
            assert_eq!(copied, 3 * percent as usize, "{percent}");
        }
    }

    #[test]
    fn counters_are_cumulative() {
        let counters = Counters::default();
        counters.record(false, Duration::from_micros(300));
        counters.record(true, Duration::from_secs(30));
        counters.record(false, Duration::from_millis(2));
        let stats = counters.snapshot();
        assert_eq!((stats.requests, stats.errors), (3, 1));
        assert_eq!(stats.latency.len(), model_server::LATENCY_BUCKETS.len() + 1);
        let at = |le: f64| stats.latency.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.00025), 0);
        assert_eq!(at(0.0005), 1);
        assert_eq!(at(0.0025), 2);
        assert_eq!(at(2.5), 2);
        assert_eq!(stats.latency.last(), Some(&(f64::INFINITY, 3)));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }
}

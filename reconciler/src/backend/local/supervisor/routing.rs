//! The routers the daemon hosts: one [`router`] per endpoint, in front of the ready
//! replicas of the revisions its [`RouteSpec`] names. This module owns what is asked for
//! ([`RouteSpec`]) and reported ([`RouteStatus`]), the client calls, and the daemon's side:
//! binding, keeping each router's addresses in step with the registry, counters sampled
//! for a request rate, rebinding after a failed bind, and scheduled stops. It never starts
//! or stops a replica itself; [`super`] does (a scheduled stop goes through its stop).
//!
//! Locks: route changes hold [`Shared::routing`] (async, never across an apply), then the
//! registry (never across an await). A router's routes are always set under the registry
//! lock, from its spec and the registry's replicas, so two changes cannot interleave.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{
    check_name, loopback, names_or_none, stop_deployments, unexpected, Deployment, DeploymentKey,
    Error, Event, Registry, ReplicaState, Request, Response, Result, Shared, SupervisorClient,
    NAME_MAX,
};
use crate::backend::local::router::{self, Mirror, RouterOptions};
use crate::diagnostics::error_chain;
use crate::rollout::{Stats, Traffic, Weights};

/// How far back [`BackendStatus::requests_per_s`] looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// How often the daemon samples its routers' counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often a router that could not bind is tried again.
const REBIND_EVERY: Duration = Duration::from_secs(3);
/// How often scheduled stops are checked.
const RETIRE_POLL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------
// What is asked for and what is reported.

/// The deployment revision serving one backend of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub deployment: String,
    pub revision: String,
}

impl Backend {
    pub fn new(deployment: impl Into<String>, revision: impl Into<String>) -> Backend {
        Backend {
            deployment: deployment.into(),
            revision: revision.into(),
        }
    }

    /// The deployment revision this backend names on `endpoint`.
    pub fn key(&self, endpoint: &str) -> DeploymentKey {
        DeploymentKey {
            endpoint: endpoint.to_string(),
            deployment: self.deployment.clone(),
            revision: self.revision.clone(),
        }
    }
}

/// An endpoint's router: where it listens, its backends, how traffic splits between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The supervisor's endpoint name (the same `endpoint` as in a deployment spec).
    pub endpoint: String,
    /// Where the router listens, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Router backend name (what the pin header names, e.g. `blue` or `blue@3f2a9c`) →
    /// the deployment revision serving it.
    pub backends: BTreeMap<String, Backend>,
    /// Backend name → percent, summing to 100 (or 0).
    pub weights: Weights,
    /// A share of the weighted requests copied to a backend.
    #[serde(default)]
    pub mirror: Option<Mirror>,
    /// When set, every request must carry `Authorization: Bearer KEY` whose SHA-256
    /// (lowercase hex) is this; else 401. Only the digest is sent and stored.
    #[serde(default)]
    pub key_sha256: Option<String>,
}

impl RouteSpec {
    /// Checks names, the port, weights, mirror and key digest (not whether the backends
    /// run: the daemon does).
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|reason| Error::InvalidRoute {
            endpoint: self.endpoint.clone(),
            reason,
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        check_name("endpoint", &self.endpoint)?;
        if self.listen.port() == 0 {
            return Err(
                "`listen` must name a port: port 0 would pick another one on every restart".into(),
            );
        }
        for (name, backend) in &self.backends {
            check_backend_name(name)?;
            check_name("deployment", &backend.deployment)?;
            check_name("revision", &backend.revision)?;
        }
        self.routes(&BTreeMap::new())
            .validate()
            .map_err(|error| match error {
                router::Error::UnknownDeployment { name, known } => format!(
                    "`{name}` is not one of its backends ({})",
                    names_or_none(&known)
                ),
                other => other.to_string(),
            })
    }

    /// The router's routes, with these addresses for the backends (none for the others).
    fn routes(&self, addrs: &BTreeMap<String, Vec<SocketAddr>>) -> router::Routes {
        router::Routes {
            deployments: self
                .backends
                .keys()
                .map(|name| (name.clone(), addrs.get(name).cloned().unwrap_or_default()))
                .collect(),
            weights: self.weights.clone(),
            mirror: self.mirror.clone(),
            key_sha256: self.key_sha256.clone(),
        }
    }

    fn weight(&self, backend: &str) -> u32 {
        self.weights.get(backend).copied().unwrap_or(0)
    }
}

/// Backend names travel in the pin header and log lines: letters, digits, `.`, `_`, `-`,
/// `@`, not starting with `.`.
fn check_backend_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the backend name {name:?} must be 1 to {NAME_MAX} letters, digits, `.`, `_`, `-` \
             or `@`, not starting with `.`"
        ))
    }
}

/// One backend of a router, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub deployment: String,
    pub revision: String,
    /// Replicas the supervisor has for that revision.
    pub replicas: u32,
    /// Of which Ready.
    pub ready_replicas: u32,
    /// The router's counters, cumulative since the router was bound.
    pub requests: u64,
    pub errors: u64,
    /// Requests per second over about the last 10 s.
    pub requests_per_s: f64,
}

/// One endpoint's router, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub endpoint: String,
    pub listen: SocketAddr,
    /// Whether the router is bound and answering (false e.g. after a daemon restart found
    /// the port taken).
    pub serving: bool,
    /// Why it is not serving.
    pub error: Option<String>,
    pub backends: BTreeMap<String, BackendStatus>,
    pub weights: Weights,
    pub mirror: Option<Mirror>,
    /// Whether requests must carry a key.
    pub auth: bool,
}

/// A scheduled stop, as `state.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RetirementRecord {
    #[serde(flatten)]
    deployment: DeploymentKey,
    /// When, in milliseconds since the Unix epoch: wall-clock time, so that a restarted
    /// daemon still stops it on time.
    at_unix_ms: u64,
}

impl RetirementRecord {
    pub(super) fn new(deployment: &DeploymentKey, at: SystemTime) -> RetirementRecord {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        RetirementRecord {
            deployment: deployment.clone(),
            at_unix_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_unix_ms)
    }
}

// ---------------------------------------------------------------------------------------
// The client.

impl SupervisorClient {
    /// Creates or updates the endpoint's router. Every backend must name a revision whose
    /// apply succeeded (else [`Error::InvalidSpec`]). A new router (or a changed `listen`)
    /// binds first: a port in use fails with [`Error::PortInUse`] and leaves the previous
    /// router and routes exactly as they were. Updating a running router swaps its routes
    /// atomically (requests in flight never fail).
    pub async fn route(&self, spec: &RouteSpec) -> Result<RouteStatus> {
        spec.validate()?;
        let request = Request::Route {
            route: spec.clone(),
        };
        match self.request(&request, Duration::from_secs(30)).await? {
            Response::Route { route } => Ok(route),
            other => Err(unexpected(other)),
        }
    }

    /// Sets only the weights: the fast path for rollout steps.
    pub async fn set_weights(&self, endpoint: &str, weights: &Weights) -> Result<()> {
        let request = Request::SetWeights {
            endpoint: endpoint.into(),
            weights: weights.clone(),
        };
        done(self.request(&request, Duration::from_secs(10)).await?)
    }

    /// Sets or clears only the mirror (the rollout's mirror phase).
    pub async fn set_mirror(&self, endpoint: &str, mirror: Option<Mirror>) -> Result<()> {
        let request = Request::SetMirror {
            endpoint: endpoint.into(),
            mirror,
        };
        done(self.request(&request, Duration::from_secs(10)).await?)
    }

    /// Returns every router, by endpoint name.
    pub async fn routes(&self) -> Result<Vec<RouteStatus>> {
        match self
            .request(&Request::Routes, Duration::from_secs(10))
            .await?
        {
            Response::Routes { routes } => Ok(routes),
            other => Err(unexpected(other)),
        }
    }

    /// Returns whether every replica of that backend is ready and answers its health path
    /// through the router's probe ([`router::Handle::ready`]).
    pub async fn ready(&self, endpoint: &str, backend: &str) -> Result<bool> {
        let request = Request::Ready {
            endpoint: endpoint.into(),
            backend: backend.into(),
        };
        match self.request(&request, Duration::from_secs(10)).await? {
            Response::Ready { ready } => Ok(ready),
            other => Err(unexpected(other)),
        }
    }

    /// Returns the backend's cumulative router counters.
    pub async fn stats(&self, endpoint: &str, backend: &str) -> Result<Stats> {
        let request = Request::Stats {
            endpoint: endpoint.into(),
            backend: backend.into(),
        };
        match self.request(&request, Duration::from_secs(10)).await? {
            Response::Stats { stats } => Ok(stats),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the endpoint's router; requests in flight finish first. No error when there
    /// is none.
    pub async fn unroute(&self, endpoint: &str) -> Result<()> {
        let request = Request::Unroute {
            endpoint: endpoint.into(),
        };
        done(self.request(&request, Duration::from_secs(60)).await?)
    }

    /// Stops that revision after `after`; its replicas keep serving pinned or 0 % traffic
    /// until then. Recorded in `state.json`, so a restarted daemon still stops it on time
    /// (at once if overdue). A later apply of the same revision cancels it, and so does
    /// weight given back to it: a revision that carries traffic when its time comes is not
    /// stopped. No error when the revision does not run.
    pub async fn stop_later(
        &self,
        endpoint: &str,
        deployment: &str,
        revision: &str,
        after: Duration,
    ) -> Result<()> {
        let request = Request::StopLater {
            endpoint: endpoint.into(),
            deployment: deployment.into(),
            revision: revision.into(),
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        };
        done(self.request(&request, Duration::from_secs(10)).await?)
    }
}

fn done(response: Response) -> Result<()> {
    match response {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// The rollout engine's view of one endpoint's router in the daemon.
#[derive(Debug, Clone)]
pub struct RouteTraffic {
    client: SupervisorClient,
    endpoint: String,
}

impl RouteTraffic {
    pub fn new(client: SupervisorClient, endpoint: impl Into<String>) -> RouteTraffic {
        RouteTraffic {
            client,
            endpoint: endpoint.into(),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[async_trait]
impl Traffic for RouteTraffic {
    async fn set_weights(&self, weights: &Weights) -> Result<(), String> {
        self.client
            .set_weights(&self.endpoint, weights)
            .await
            .map_err(|e| error_chain(&e))
    }

    async fn ready(&self, backend: &str) -> Result<bool, String> {
        self.client
            .ready(&self.endpoint, backend)
            .await
            .map_err(|e| error_chain(&e))
    }

    async fn stats(&self, backend: &str) -> Result<Stats, String> {
        self.client
            .stats(&self.endpoint, backend)
            .await
            .map_err(|e| error_chain(&e))
    }

    async fn set_mirror(&self, mirror: Option<(&str, u32)>) -> Result<(), String> {
        let mirror = mirror.map(|(deployment, percent)| Mirror {
            deployment: deployment.to_string(),
            percent,
        });
        self.client
            .set_mirror(&self.endpoint, mirror)
            .await
            .map_err(|e| error_chain(&e))
    }
}

// ---------------------------------------------------------------------------------------
// The daemon's side.

/// One endpoint's router in the daemon.
pub(super) struct Hosted {
    pub(super) spec: RouteSpec,
    /// The running router; `None` while its port cannot be bound.
    serving: Option<Serving>,
    /// Why it does not serve, while it does not.
    error: Option<String>,
    /// Backend → the addresses last routed to. A backend left without ready replicas
    /// keeps them, so its requests are answered 502 by the router.
    last: BTreeMap<String, Vec<SocketAddr>>,
    /// Backend → (when, cumulative requests), one sample a second over [`RATE_WINDOW`].
    samples: BTreeMap<String, VecDeque<(Instant, u64)>>,
}

/// A bound router and the task running it.
struct Serving {
    /// Tells this router from a later one of the same endpoint.
    id: u64,
    handle: router::Handle,
    close: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Stops accepting and waits (at most `grace`) for requests in flight to finish.
    async fn close(self, grace: Duration) {
        let _ = self.close.send(());
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

impl Hosted {
    pub(super) fn new(spec: RouteSpec) -> Hosted {
        Hosted {
            spec,
            serving: None,
            error: None,
            last: BTreeMap::new(),
            samples: BTreeMap::new(),
        }
    }

    /// Backend → the addresses of its revision's ready replicas, or the last known ones
    /// when none is ready.
    fn addresses(
        &mut self,
        deployments: &BTreeMap<DeploymentKey, Deployment>,
    ) -> BTreeMap<String, Vec<SocketAddr>> {
        let mut addrs = BTreeMap::new();
        for (name, backend) in &self.spec.backends {
            let ready = ready_addrs(deployments, &backend.key(&self.spec.endpoint));
            if ready.is_empty() {
                if let Some(last) = self.last.get(name) {
                    addrs.insert(name.clone(), last.clone());
                }
            } else {
                self.last.insert(name.clone(), ready.clone());
                addrs.insert(name.clone(), ready);
            }
        }
        let backends = &self.spec.backends;
        self.last.retain(|name, _| backends.contains_key(name));
        addrs
    }

    /// Puts the spec and the registry's ready replicas in force, when they differ from
    /// the routes in force; returns what changed.
    fn push(
        &mut self,
        deployments: &BTreeMap<DeploymentKey, Deployment>,
    ) -> std::result::Result<Option<String>, router::Error> {
        let addrs = self.addresses(deployments);
        let routes = self.spec.routes(&addrs);
        let Some(serving) = &self.serving else {
            return Ok(None);
        };
        let before = serving.handle.routes();
        if before == routes {
            return Ok(None);
        }
        let change = describe_change(&before, &routes);
        serving.handle.set_routes(routes)?;
        Ok(Some(change))
    }

    fn remove_backend(&mut self, name: &str) {
        self.spec.backends.remove(name);
        self.spec.weights.remove(name);
        if self
            .spec
            .mirror
            .as_ref()
            .is_some_and(|m| m.deployment == name)
        {
            self.spec.mirror = None;
        }
        self.last.remove(name);
        self.samples.remove(name);
    }

    /// Records every backend's request count, for the rate.
    fn sample(&mut self, now: Instant) {
        let Some(serving) = &self.serving else {
            self.samples.clear();
            return;
        };
        for name in self.spec.backends.keys() {
            let requests = serving.handle.stats(name).map_or(0, |s| s.requests);
            let samples = self.samples.entry(name.clone()).or_default();
            // Counters start again with a new router: earlier samples no longer compare.
            if samples.back().is_some_and(|(_, r)| *r > requests) {
                samples.clear();
            }
            samples.push_back((now, requests));
            while samples
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RATE_WINDOW)
            {
                samples.pop_front();
            }
        }
        let backends = &self.spec.backends;
        self.samples.retain(|name, _| backends.contains_key(name));
    }

    fn status(
        &self,
        deployments: &BTreeMap<DeploymentKey, Deployment>,
        now: Instant,
    ) -> RouteStatus {
        let backends = self
            .spec
            .backends
            .iter()
            .map(|(name, backend)| {
                let deployment = deployments.get(&backend.key(&self.spec.endpoint));
                let count = |ready_only: bool| {
                    deployment.map_or(0, |d| {
                        let n = d
                            .replicas
                            .values()
                            .filter(|r| !ready_only || r.observed.state == ReplicaState::Ready)
                            .count();
                        u32::try_from(n).unwrap_or(u32::MAX)
                    })
                };
                let stats = self
                    .serving
                    .as_ref()
                    .and_then(|s| s.handle.stats(name).ok())
                    .unwrap_or_default();
                let requests_per_s = self
                    .samples
                    .get(name)
                    .map_or(0.0, |s| rate(s, now, stats.requests));
                let status = BackendStatus {
                    deployment: backend.deployment.clone(),
                    revision: backend.revision.clone(),
                    replicas: count(false),
                    ready_replicas: count(true),
                    requests: stats.requests,
                    errors: stats.errors,
                    requests_per_s,
                };
                (name.clone(), status)
            })
            .collect();
        RouteStatus {
            endpoint: self.spec.endpoint.clone(),
            listen: self.spec.listen,
            serving: self.serving.is_some(),
            error: self.error.clone(),
            backends,
            weights: self.spec.weights.clone(),
            mirror: self.spec.mirror.clone(),
            auth: self.spec.key_sha256.is_some(),
        }
    }

    fn not_serving(&self) -> Error {
        Error::NotServing {
            endpoint: self.spec.endpoint.clone(),
            listen: self.spec.listen,
            reason: self
                .error
                .clone()
                .unwrap_or_else(|| "it is not bound".into()),
        }
    }

    fn unknown_backend(&self, backend: &str) -> Error {
        Error::UnknownBackend {
            endpoint: self.spec.endpoint.clone(),
            backend: backend.to_string(),
            known: self.spec.backends.keys().cloned().collect(),
        }
    }
}

/// The addresses of the revision's ready replicas.
fn ready_addrs(
    deployments: &BTreeMap<DeploymentKey, Deployment>,
    key: &DeploymentKey,
) -> Vec<SocketAddr> {
    deployments.get(key).map_or_else(Vec::new, |d| {
        d.replicas
            .values()
            .filter(|r| r.observed.state == ReplicaState::Ready)
            .filter_map(|r| r.observed.pid.and(r.observed.port).map(loopback))
            .collect()
    })
}

/// Requests per second since the oldest sample of the window (taken as at least 1 s ago,
/// so a router bound a moment ago does not report a burst as a huge rate).
fn rate(samples: &VecDeque<(Instant, u64)>, now: Instant, requests: u64) -> f64 {
    let Some((at, then)) = samples
        .iter()
        .find(|(at, _)| now.saturating_duration_since(*at) <= RATE_WINDOW)
    else {
        return 0.0;
    };
    let seconds = now.saturating_duration_since(*at).as_secs_f64().max(1.0);
    requests.saturating_sub(*then) as f64 / seconds
}

fn describe_weights(weights: &Weights) -> String {
    if weights.is_empty() {
        return "none".into();
    }
    weights
        .iter()
        .map(|(name, percent)| format!("{name} {percent} %"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What differs between two routes, for the log. Never shows the key digest.
fn describe_change(before: &router::Routes, after: &router::Routes) -> String {
    let addrs = |addrs: &[SocketAddr]| {
        if addrs.is_empty() {
            "no replica".to_string()
        } else {
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut parts = Vec::new();
    if before.weights != after.weights {
        parts.push(format!("weights {}", describe_weights(&after.weights)));
    }
    for (name, now) in &after.deployments {
        match before.deployments.get(name) {
            None => parts.push(format!("backend `{name}` added on {}", addrs(now))),
            Some(was) if was != now => {
                parts.push(format!("backend `{name}` now on {}", addrs(now)));
            }
            Some(_) => {}
        }
    }
    for name in before.deployments.keys() {
        if !after.deployments.contains_key(name) {
            parts.push(format!("backend `{name}` removed"));
        }
    }
    if before.mirror != after.mirror {
        parts.push(match &after.mirror {
            Some(m) => format!("mirror {} % to `{}`", m.percent, m.deployment),
            None => "no mirror".into(),
        });
    }
    if before.key_sha256 != after.key_sha256 {
        parts.push(
            match (&before.key_sha256, &after.key_sha256) {
                (_, None) => "no key required",
                (None, Some(_)) => "a key is required",
                (Some(_), Some(_)) => "the key changed",
            }
            .into(),
        );
    }
    parts.join("; ")
}

/// Whether two listen addresses take the same port.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn refuse_if_closing(shared: &Shared) -> Result<()> {
    if shared.closing.load(Ordering::SeqCst) {
        return Err(Error::Refused {
            message: "the supervisor is shutting down".into(),
        });
    }
    Ok(())
}

impl Shared {
    /// Brings the endpoint's router up to date with the registry's ready replicas.
    pub(super) fn sync_routes(&self, registry: &mut Registry, endpoint: &str) {
        let Registry {
            deployments,
            routes,
            ..
        } = registry;
        let Some(hosted) = routes.get_mut(endpoint) else {
            return;
        };
        let change = match hosted.push(deployments) {
            Ok(Some(change)) => change,
            Ok(None) => return,
            // Routes that passed validation always build; should one not, say so.
            Err(error) => format!("not applied: {}", error_chain(&error)),
        };
        self.event(Event::RoutesChanged {
            endpoint: endpoint.to_string(),
            change,
        });
    }
}

/// Binds a router for `spec` with `routes` and runs it on a task of its own: on the
/// socket the watchdog handed over for it, if any, else on a new one, whose copy then
/// goes to the watchdog.
async fn bind(shared: &Arc<Shared>, spec: &RouteSpec, routes: router::Routes) -> Result<Serving> {
    let options = RouterOptions::new(spec.listen, routes);
    let inherited = shared.take_inherited(&spec.endpoint, spec.listen);
    let fresh = inherited.is_none();
    let bound = match inherited {
        Some(listener) => {
            let bound = router::bind_listener(listener, options);
            if bound.is_err() {
                shared.forget_listener(&spec.endpoint, spec.listen);
            }
            bound
        }
        None => router::bind(options).await,
    };
    let router = bound.map_err(|error| match error {
        router::Error::Bind { source, .. } => match source.kind() {
            std::io::ErrorKind::AddrInUse => Error::PortInUse {
                endpoint: spec.endpoint.clone(),
                listen: spec.listen,
                holder: None,
            },
            std::io::ErrorKind::PermissionDenied => Error::RouterBind {
                endpoint: spec.endpoint.clone(),
                listen: spec.listen,
                reason: format!("{source}; ports below 1024 need privileges"),
            },
            _ => Error::RouterBind {
                endpoint: spec.endpoint.clone(),
                listen: spec.listen,
                reason: source.to_string(),
            },
        },
        other => Error::InvalidRoute {
            endpoint: spec.endpoint.clone(),
            reason: other.to_string(),
        },
    })?;
    if fresh {
        shared.keep_listener(&spec.endpoint, spec.listen, &router);
    }
    let handle = router.handle();
    let id = shared.router_ids.fetch_add(1, Ordering::Relaxed);
    let (close, closed) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let shared = shared.clone();
        let endpoint = spec.endpoint.clone();
        async move {
            // A dropped sender closes the router too.
            let shutdown = async {
                let _ = closed.await;
            };
            if let Err(error) = router.run(shutdown).await {
                router_failed(&shared, &endpoint, id, &error);
            }
        }
    });
    Ok(Serving {
        id,
        handle,
        close,
        task,
    })
}

/// A router stopped serving by itself: recorded as not serving, to be bound again.
fn router_failed(shared: &Shared, endpoint: &str, id: u64, error: &router::Error) {
    let reason = error_chain(error);
    let mut registry = shared.registry();
    let Some(hosted) = registry.routes.get_mut(endpoint) else {
        return;
    };
    if hosted.serving.as_ref().is_none_or(|s| s.id != id) {
        return;
    }
    hosted.serving = None;
    hosted.error = Some(reason.clone());
    let listen = hosted.spec.listen;
    drop(registry);
    // So that binding it again finds the port free.
    shared.forget_listener(endpoint, listen);
    shared.event(Event::RouterFailed {
        endpoint: endpoint.to_string(),
        listen,
        reason,
    });
}

/// What a failed bind leaves in [`RouteStatus::error`].
fn bind_failure(error: &Error) -> String {
    match error {
        Error::PortInUse { listen, .. } => format!("the port of {listen} is in use"),
        Error::RouterBind { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Every backend must name a revision whose apply succeeded and that is not being stopped.
fn check_backends(registry: &Registry, spec: &RouteSpec) -> Result<()> {
    for (name, backend) in &spec.backends {
        let key = backend.key(&spec.endpoint);
        let reason = match registry.deployments.get(&key) {
            Some(d) if d.confirmed && !d.stopping => continue,
            Some(d) if d.stopping => "is being stopped",
            Some(_) => "has not finished applying; route it once its apply succeeded",
            None => "does not run; apply it first",
        };
        return Err(Error::InvalidSpec {
            deployment: format!("`{key}`"),
            reason: format!("backend `{name}` of the route names it, but it {reason}"),
        });
    }
    Ok(())
}

pub(super) async fn route(shared: &Arc<Shared>, spec: RouteSpec) -> Result<RouteStatus> {
    spec.validate()?;
    let _routing = shared.routing.lock().await;
    refuse_if_closing(shared)?;
    let endpoint = spec.endpoint.clone();
    let (rebind, addrs) = {
        let registry = shared.registry();
        check_backends(&registry, &spec)?;
        if let Some(other) = registry
            .routes
            .values()
            .find(|h| h.spec.endpoint != endpoint && overlaps(h.spec.listen, spec.listen))
        {
            return Err(Error::PortInUse {
                endpoint,
                listen: spec.listen,
                holder: Some(other.spec.endpoint.clone()),
            });
        }
        let current = registry.routes.get(&endpoint);
        let rebind = current.is_none_or(|h| h.serving.is_none() || h.spec.listen != spec.listen);
        let mut scratch = Hosted::new(spec.clone());
        if let Some(current) = current {
            scratch.last = current.last.clone();
        }
        (rebind, scratch.addresses(&registry.deployments))
    };
    // Bound before anything changes, so a port in use leaves all as it was.
    let fresh = if rebind {
        Some(bind(shared, &spec, spec.routes(&addrs)).await?)
    } else {
        None
    };

    let now = Instant::now();
    let mut registry = shared.registry();
    let Registry {
        deployments,
        routes,
        ..
    } = &mut *registry;
    let previous = routes.remove(&endpoint);
    let (hosted, replaced, change) = match (previous, fresh) {
        (previous, Some(serving)) => {
            let mut hosted = Hosted::new(spec);
            let mut replaced = None;
            if let Some(previous) = previous {
                hosted.last = previous.last;
                replaced = previous.serving.map(|s| (previous.spec.listen, s));
            }
            hosted.serving = Some(serving);
            // Addresses may have changed while binding; routes built, so this cannot fail.
            let _ = hosted.push(deployments);
            hosted.sample(now);
            (hosted, replaced, None)
        }
        (Some(mut hosted), None) => {
            let before = std::mem::replace(&mut hosted.spec, spec);
            match hosted.push(deployments) {
                Ok(change) => (hosted, None, change),
                Err(error) => {
                    hosted.spec = before;
                    routes.insert(endpoint.clone(), hosted);
                    return Err(Error::InvalidRoute {
                        endpoint,
                        reason: error.to_string(),
                    });
                }
            }
        }
        (None, None) => {
            return Err(Error::Refused {
                message: format!("the router of endpoint `{endpoint}` went away; try again"),
            })
        }
    };
    let status = hosted.status(deployments, now);
    let bound = hosted.serving.as_ref().map(|s| s.handle.local_addr());
    routes.insert(endpoint.clone(), hosted);
    shared.persist(&registry);
    drop(registry);

    if rebind {
        shared.event(Event::RouterBound {
            endpoint: endpoint.clone(),
            listen: bound.unwrap_or(status.listen),
        });
    }
    if let Some(change) = change {
        shared.event(Event::RoutesChanged {
            endpoint: endpoint.clone(),
            change,
        });
    }
    if let Some((listen, old)) = replaced {
        // After the new socket's `keep`: the watchdog's copy of the old one is closed.
        shared.forget_listener(&endpoint, listen);
        let grace = shared.options.stop_grace;
        let shared = shared.clone();
        tokio::spawn(async move {
            old.close(grace).await;
            shared.event(Event::RouterClosed { endpoint, listen });
        });
    }
    Ok(status)
}

pub(super) async fn set_weights(
    shared: &Arc<Shared>,
    endpoint: &str,
    weights: Weights,
) -> Result<()> {
    change_route(shared, endpoint, |hosted| {
        if let Some(name) = weights
            .keys()
            .find(|name| !hosted.spec.backends.contains_key(*name))
        {
            return Err(hosted.unknown_backend(name));
        }
        let change = format!("weights {}", describe_weights(&weights));
        Ok((
            RouteSpec {
                weights,
                ..hosted.spec.clone()
            },
            change,
        ))
    })
    .await
}

pub(super) async fn set_mirror(
    shared: &Arc<Shared>,
    endpoint: &str,
    mirror: Option<Mirror>,
) -> Result<()> {
    change_route(shared, endpoint, |hosted| {
        if let Some(m) = &mirror {
            if !hosted.spec.backends.contains_key(&m.deployment) {
                return Err(hosted.unknown_backend(&m.deployment));
            }
        }
        let change = match &mirror {
            Some(m) => format!("mirror {}% to {}", m.percent, m.deployment),
            None => "mirror off".to_string(),
        };
        Ok((
            RouteSpec {
                mirror,
                ..hosted.spec.clone()
            },
            change,
        ))
    })
    .await
}

/// Puts in force the spec `change` makes from the endpoint's current one (with a line
/// for the log), keeping the current one when the router refuses it.
async fn change_route(
    shared: &Arc<Shared>,
    endpoint: &str,
    change: impl FnOnce(&Hosted) -> Result<(RouteSpec, String)>,
) -> Result<()> {
    let _routing = shared.routing.lock().await;
    refuse_if_closing(shared)?;
    let mut registry = shared.registry();
    let Registry {
        deployments,
        routes,
        ..
    } = &mut *registry;
    let hosted = routes.get_mut(endpoint).ok_or_else(|| Error::NoRoute {
        endpoint: endpoint.to_string(),
    })?;
    let (spec, change) = change(hosted)?;
    spec.validate()?;
    let before = std::mem::replace(&mut hosted.spec, spec);
    if let Err(error) = hosted.push(deployments) {
        hosted.spec = before;
        return Err(Error::InvalidRoute {
            endpoint: endpoint.to_string(),
            reason: error.to_string(),
        });
    }
    shared.persist(&registry);
    drop(registry);
    shared.event(Event::RoutesChanged {
        endpoint: endpoint.to_string(),
        change,
    });
    Ok(())
}

pub(super) fn statuses(shared: &Shared) -> Vec<RouteStatus> {
    let registry = shared.registry();
    let now = Instant::now();
    registry
        .routes
        .values()
        .map(|h| h.status(&registry.deployments, now))
        .collect()
}

pub(super) async fn ready(shared: &Shared, endpoint: &str, backend: &str) -> Result<bool> {
    let (handle, replicas_ready) = {
        let registry = shared.registry();
        let hosted = registry
            .routes
            .get(endpoint)
            .ok_or_else(|| Error::NoRoute {
                endpoint: endpoint.to_string(),
            })?;
        let key = hosted
            .spec
            .backends
            .get(backend)
            .ok_or_else(|| hosted.unknown_backend(backend))?
            .key(endpoint);
        let serving = hosted
            .serving
            .as_ref()
            .ok_or_else(|| hosted.not_serving())?;
        // Every replica asked for, not only those the router knows: a crashed one counts.
        let replicas_ready = registry.deployments.get(&key).is_some_and(|d| {
            !d.replicas.is_empty()
                && d.replicas.len() >= d.spec.replicas as usize
                && d.replicas
                    .values()
                    .all(|r| r.observed.state == ReplicaState::Ready)
        });
        (serving.handle.clone(), replicas_ready)
    };
    if !replicas_ready {
        return Ok(false);
    }
    handle
        .ready(backend)
        .await
        .map_err(|error| Error::UnknownBackend {
            endpoint: endpoint.to_string(),
            backend: backend.to_string(),
            known: match error {
                router::Error::UnknownDeployment { known, .. } => known,
                _ => Vec::new(),
            },
        })
}

pub(super) fn stats(shared: &Shared, endpoint: &str, backend: &str) -> Result<Stats> {
    let registry = shared.registry();
    let hosted = registry
        .routes
        .get(endpoint)
        .ok_or_else(|| Error::NoRoute {
            endpoint: endpoint.to_string(),
        })?;
    if !hosted.spec.backends.contains_key(backend) {
        return Err(hosted.unknown_backend(backend));
    }
    let serving = hosted
        .serving
        .as_ref()
        .ok_or_else(|| hosted.not_serving())?;
    serving
        .handle
        .stats(backend)
        .map_err(|_| hosted.unknown_backend(backend))
}

pub(super) async fn unroute(shared: &Shared, endpoint: &str) {
    let hosted = {
        let _routing = shared.routing.lock().await;
        let mut registry = shared.registry();
        let hosted = registry.routes.remove(endpoint);
        if hosted.is_some() {
            shared.persist(&registry);
        }
        hosted
    };
    let Some(hosted) = hosted else {
        return;
    };
    shared.forget_listener(endpoint, hosted.spec.listen);
    if let Some(serving) = hosted.serving {
        serving.close(shared.options.stop_grace).await;
    }
    shared.event(Event::RouterClosed {
        endpoint: endpoint.to_string(),
        listen: hosted.spec.listen,
    });
}

/// Closes every router (requests in flight finish) and forgets the routes.
pub(super) async fn close_all(shared: &Shared) {
    let hosted = {
        let _routing = shared.routing.lock().await;
        let mut registry = shared.registry();
        let hosted = std::mem::take(&mut registry.routes);
        shared.persist(&registry);
        hosted
    };
    let grace = shared.options.stop_grace;
    let closing = hosted.into_values().map(|hosted| async move {
        shared.forget_listener(&hosted.spec.endpoint, hosted.spec.listen);
        if let Some(serving) = hosted.serving {
            serving.close(grace).await;
        }
        shared.event(Event::RouterClosed {
            endpoint: hosted.spec.endpoint,
            listen: hosted.spec.listen,
        });
    });
    futures::future::join_all(closing).await;
}

pub(super) fn stop_later(shared: &Shared, key: DeploymentKey, after: Duration) -> Result<()> {
    let check = || {
        check_name("endpoint", &key.endpoint)?;
        check_name("deployment", &key.deployment)?;
        check_name("revision", &key.revision)
    };
    check().map_err(|reason| Error::InvalidSpec {
        deployment: format!("`{key}`"),
        reason,
    })?;
    refuse_if_closing(shared)?;
    let mut registry = shared.registry();
    if !registry.deployments.contains_key(&key) {
        return Ok(());
    }
    let at = SystemTime::now()
        .checked_add(after)
        .unwrap_or(SystemTime::now() + Duration::from_secs(100 * 365 * 86_400));
    registry.retirements.insert(key.clone(), at);
    shared.persist(&registry);
    drop(registry);
    shared.event(Event::RetireScheduled {
        deployment: key,
        after,
    });
    Ok(())
}

/// Takes the revisions off their routes before they are stopped: refused when one still
/// gets traffic by weight; else their backends (and a mirror to them) are removed and no
/// route may name them any more.
pub(super) async fn take_off_routes(shared: &Shared, keys: &[DeploymentKey]) -> Result<()> {
    let _routing = shared.routing.lock().await;
    let mut registry = shared.registry();
    for key in keys {
        let Some(hosted) = registry.routes.get(&key.endpoint) else {
            continue;
        };
        for (name, backend) in &hosted.spec.backends {
            let weight = hosted.spec.weight(name);
            if weight > 0 && backend.key(&key.endpoint) == *key {
                return Err(Error::StillRouted {
                    deployment: key.to_string(),
                    endpoint: key.endpoint.clone(),
                    backend: name.clone(),
                    weight,
                });
            }
        }
    }
    let mut changes = Vec::new();
    let Registry {
        deployments,
        routes,
        ..
    } = &mut *registry;
    for key in keys {
        if let Some(deployment) = deployments.get_mut(key) {
            deployment.stopping = true;
        }
        let Some(hosted) = routes.get_mut(&key.endpoint) else {
            continue;
        };
        let names: Vec<String> = hosted
            .spec
            .backends
            .iter()
            .filter(|(_, backend)| backend.key(&key.endpoint) == *key)
            .map(|(name, _)| name.clone())
            .collect();
        if names.is_empty() {
            continue;
        }
        for name in &names {
            hosted.remove_backend(name);
        }
        let _ = hosted.push(deployments);
        changes.push(Event::RoutesChanged {
            endpoint: key.endpoint.clone(),
            change: format!(
                "backend {} removed: `{key}` is being stopped",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    shared.persist(&registry);
    drop(registry);
    for change in changes {
        shared.event(change);
    }
    Ok(())
}

/// Restores the routes and scheduled stops a previous daemon recorded, and binds the
/// routers; a port that cannot be bound is recorded and tried again every few seconds.
pub(super) async fn recover(
    shared: &Arc<Shared>,
    routes: Vec<RouteSpec>,
    retirements: Vec<RetirementRecord>,
) {
    {
        let mut registry = shared.registry();
        for record in retirements {
            if registry.deployments.contains_key(&record.deployment) {
                let at = record.at();
                registry.retirements.insert(record.deployment, at);
            }
        }
        for spec in routes {
            if let Err(error) = spec.validate() {
                shared.event(Event::RouterFailed {
                    endpoint: spec.endpoint.clone(),
                    listen: spec.listen,
                    reason: format!("dropped the recorded route: {error}"),
                });
                continue;
            }
            let mut hosted = Hosted::new(spec);
            hosted.error = Some("not bound yet".into());
            registry.routes.insert(hosted.spec.endpoint.clone(), hosted);
        }
        shared.persist(&registry);
    }
    rebind_pending(shared).await;
}

/// Binds every router that does not serve.
async fn rebind_pending(shared: &Arc<Shared>) {
    let _routing = shared.routing.lock().await;
    if shared.closing.load(Ordering::SeqCst) {
        return;
    }
    let pending: Vec<(RouteSpec, router::Routes)> = {
        let mut registry = shared.registry();
        let Registry {
            deployments,
            routes,
            ..
        } = &mut *registry;
        routes
            .values_mut()
            .filter(|h| h.serving.is_none())
            .map(|h| {
                let addrs = h.addresses(deployments);
                (h.spec.clone(), h.spec.routes(&addrs))
            })
            .collect()
    };
    for (spec, routes) in pending {
        let result = bind(shared, &spec, routes).await;
        let mut registry = shared.registry();
        let Registry {
            deployments,
            routes,
            ..
        } = &mut *registry;
        let Some(hosted) = routes
            .get_mut(&spec.endpoint)
            .filter(|h| h.serving.is_none() && h.spec.listen == spec.listen)
        else {
            // Changed meanwhile; a router bound for nothing closes as it drops, and the
            // watchdog's copy of its socket with it.
            if result.is_ok() {
                shared.forget_listener(&spec.endpoint, spec.listen);
            }
            continue;
        };
        let event = match result {
            Ok(serving) => {
                hosted.serving = Some(serving);
                hosted.error = None;
                let _ = hosted.push(deployments);
                hosted.sample(Instant::now());
                Some(Event::RouterBound {
                    endpoint: spec.endpoint.clone(),
                    listen: spec.listen,
                })
            }
            Err(error) => {
                let reason = bind_failure(&error);
                // Said once, not every few seconds.
                let new = hosted.error.as_deref() != Some(reason.as_str());
                hosted.error = Some(reason.clone());
                new.then(|| Event::RouterFailed {
                    endpoint: spec.endpoint.clone(),
                    listen: spec.listen,
                    reason,
                })
            }
        };
        drop(registry);
        if let Some(event) = event {
            shared.event(event);
        }
    }
}

/// Stops a revision whose time came, unless it carries traffic again.
async fn retire(shared: &Arc<Shared>, key: DeploymentKey) {
    let _serial = shared.serial.lock().await;
    if shared.closing.load(Ordering::SeqCst) {
        return;
    }
    let due = shared
        .registry()
        .retirements
        .get(&key)
        .is_some_and(|at| *at <= SystemTime::now());
    if !due {
        return;
    }
    if let Err(error) = take_off_routes(shared, std::slice::from_ref(&key)).await {
        let mut registry = shared.registry();
        registry.retirements.remove(&key);
        shared.persist(&registry);
        drop(registry);
        shared.event(Event::RetireCancelled {
            deployment: key,
            reason: error.to_string(),
        });
        return;
    }
    stop_deployments(shared, std::slice::from_ref(&key)).await;
    shared.event(Event::Retired { deployment: key });
}

/// Starts the daemon's periodic work for routers: sampling counters, binding routers
/// again, running scheduled stops. The tasks run until aborted.
pub(super) fn spawn_chores(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let sampler = tokio::spawn({
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let now = Instant::now();
                for hosted in shared.registry().routes.values_mut() {
                    hosted.sample(now);
                }
            }
        }
    });
    let rebinder = tokio::spawn({
        let shared = shared.clone();
        async move {
            let start = tokio::time::Instant::now() + REBIND_EVERY;
            let mut tick = tokio::time::interval_at(start, REBIND_EVERY);
            loop {
                tick.tick().await;
                let pending = shared
                    .registry()
                    .routes
                    .values()
                    .any(|h| h.serving.is_none());
                if pending {
                    rebind_pending(&shared).await;
                }
            }
        }
    });
    let retirer = tokio::spawn({
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(RETIRE_POLL);
            loop {
                tick.tick().await;
                let now = SystemTime::now();
                let due: Vec<DeploymentKey> = shared
                    .registry()
                    .retirements
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in due {
                    retire(&shared, key).await;
                }
            }
        }
    });
    vec![sampler, rebinder, retirer]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RouteSpec {
        RouteSpec {
            endpoint: "risk-api".into(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            backends: [
                ("blue".to_string(), Backend::new("blue", "v1")),
                ("green@v2".to_string(), Backend::new("green", "v2")),
            ]
            .into(),
            weights: [("blue".to_string(), 90), ("green@v2".to_string(), 10)].into(),
            mirror: None,
            key_sha256: None,
        }
    }

    #[test]
    fn route_specs_are_checked() {
        spec().validate().unwrap();
        let cases: Vec<(RouteSpec, &str)> = vec![
            (
                RouteSpec {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    ..spec()
                },
                "must name a port",
            ),
            (
                RouteSpec {
                    endpoint: "a/b".into(),
                    ..spec()
                },
                "endpoint name",
            ),
            (
                RouteSpec {
                    backends: [("blue green".to_string(), Backend::new("blue", "v1"))].into(),
                    weights: Weights::new(),
                    ..spec()
                },
                "backend name",
            ),
            (
                RouteSpec {
                    weights: [("blue".to_string(), 90)].into(),
                    ..spec()
                },
                "add up to 100 (or 0), got 90",
            ),
            (
                RouteSpec {
                    weights: [("red".to_string(), 100)].into(),
                    ..spec()
                },
                "`red` is not one of its backends (blue, green@v2)",
            ),
            (
                RouteSpec {
                    mirror: Some(Mirror {
                        deployment: "green@v2".into(),
                        percent: 101,
                    }),
                    ..spec()
                },
                "at most 100 %",
            ),
            (
                RouteSpec {
                    key_sha256: Some("not-a-digest".into()),
                    ..spec()
                },
                "SHA-256 of the key as 64 hex digits",
            ),
        ];
        for (spec, expected) in cases {
            let error = spec.validate().unwrap_err();
            assert!(matches!(error, Error::InvalidRoute { .. }), "{error:?}");
            let message = error.to_string();
            assert!(
                message.starts_with("invalid route for endpoint `"),
                "{message}"
            );
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn rates_come_from_the_window() {
        let now = Instant::now();
        let mut samples = VecDeque::new();
        assert_eq!(rate(&samples, now, 50), 0.0);
        samples.push_back((now - Duration::from_secs(12), 0));
        samples.push_back((now - Duration::from_secs(4), 100));
        samples.push_back((now - Duration::from_secs(1), 300));
        // From the oldest sample of the last 10 s: 400 requests in 4 s.
        assert_eq!(rate(&samples, now, 500), 100.0);
        // A sample a moment ago counts as a second ago.
        let fresh = VecDeque::from([(now - Duration::from_millis(100), 0)]);
        assert_eq!(rate(&fresh, now, 40), 40.0);
    }

    #[test]
    fn changes_are_described_without_the_key() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let before = router::Routes {
            deployments: [("blue".to_string(), vec![a]), ("green".to_string(), vec![])].into(),
            weights: [("blue".to_string(), 100)].into(),
            mirror: None,
            key_sha256: None,
        };
        let after = router::Routes {
            deployments: [("blue".to_string(), vec![a, b])].into(),
            weights: [("blue".to_string(), 100)].into(),
            mirror: None,
            key_sha256: Some("ab".repeat(32)),
        };
        let text = describe_change(&before, &after);
        assert_eq!(
            text,
            "backend `blue` now on 127.0.0.1:1, 127.0.0.1:2; backend `green` removed; \
             a key is required"
        );
        assert!(!text.contains("abab"));
        assert_eq!(
            describe_weights(&spec().weights),
            "blue 90 %, green@v2 10 %"
        );
    }

    #[test]
    fn listen_addresses_overlap_by_port() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(at("127.0.0.1:8080"), at("127.0.0.1:8080")));
        assert!(overlaps(at("0.0.0.0:8080"), at("127.0.0.1:8080")));
        assert!(!overlaps(at("127.0.0.1:8080"), at("127.0.0.2:8080")));
        assert!(!overlaps(at("127.0.0.1:8080"), at("127.0.0.1:8081")));
    }

    #[test]
    fn retirements_keep_their_wall_clock_time() {
        let key = DeploymentKey {
            endpoint: "risk-api".into(),
            deployment: "blue".into(),
            revision: "v1".into(),
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let record = RetirementRecord::new(&key, at);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"endpoint":"risk-api","deployment":"blue","revision":"v1","at_unix_ms":1700000000123}"#
        );
        let back: RetirementRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.at(), at);
    }
}

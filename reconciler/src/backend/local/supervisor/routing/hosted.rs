//! One endpoint's router in the daemon ([`Hosted`]): its spec, the bound router if any,
//! the addresses last routed to, and the counters sampled for a request rate; and how
//! its table follows the registry's ready replicas ([`Shared::sync_routes`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::super::daemon::Shared;
use super::super::registry::{Deployment, Registry};
use super::super::{loopback, DeploymentKey, Error, Event, ReplicaState};
use super::{BackendStatus, RouteSpec, RouteStatus};
use crate::backend::local::router;
use crate::diagnostics::error_chain;
use crate::manifest::DEFAULT_HEALTH_PATH;
use crate::rollout::describe_weights;

/// How far back [`BackendStatus::requests_per_s`] looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// One endpoint's router in the daemon.
pub(crate) struct Hosted {
    pub(crate) spec: RouteSpec,
    /// The running router; `None` while its port cannot be bound.
    pub(super) serving: Option<Serving>,
    /// Why it does not serve, while it does not.
    pub(super) error: Option<String>,
    /// Backend → the addresses last routed to. A backend left without ready replicas
    /// keeps them, so its requests are answered 502 by the router.
    pub(super) last: BTreeMap<String, Vec<SocketAddr>>,
    /// Backend → (when, cumulative requests), one sample a second over [`RATE_WINDOW`].
    samples: BTreeMap<String, VecDeque<(Instant, u64)>>,
}

/// A bound router and the task running it.
pub(super) struct Serving {
    /// Tells this router from a later one of the same endpoint.
    pub(super) id: u64,
    pub(super) handle: router::Handle,
    pub(super) close: oneshot::Sender<()>,
    pub(super) task: JoinHandle<()>,
}

impl Serving {
    /// Stops accepting and waits (at most `grace`) for requests in flight to finish.
    pub(super) async fn close(self, grace: Duration) {
        let _ = self.close.send(());
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

impl Hosted {
    pub(crate) fn new(spec: RouteSpec) -> Hosted {
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
    pub(super) fn addresses(
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

    /// Backend → the health path its revision's replicas answer, for those not on the
    /// default (the router probes it for the rollout's readiness).
    pub(super) fn health_paths(
        &self,
        deployments: &BTreeMap<DeploymentKey, Deployment>,
    ) -> BTreeMap<String, String> {
        self.spec
            .backends
            .iter()
            .filter_map(|(name, backend)| {
                let spec = &deployments.get(&backend.key(&self.spec.endpoint))?.spec;
                (spec.health_path != DEFAULT_HEALTH_PATH)
                    .then(|| (name.clone(), spec.health_path.clone()))
            })
            .collect()
    }

    /// The router's routes for the registry's ready replicas.
    pub(super) fn routes(
        &mut self,
        deployments: &BTreeMap<DeploymentKey, Deployment>,
    ) -> router::Routes {
        let addrs = self.addresses(deployments);
        self.spec.routes(&addrs, self.health_paths(deployments))
    }

    /// Puts the spec and the registry's ready replicas in force, when they differ from
    /// the routes in force; returns what changed.
    pub(super) fn push(
        &mut self,
        deployments: &BTreeMap<DeploymentKey, Deployment>,
    ) -> std::result::Result<Option<String>, router::Error> {
        let routes = self.routes(deployments);
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

    pub(super) fn remove_backend(&mut self, name: &str) {
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
    pub(super) fn sample(&mut self, now: Instant) {
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

    pub(super) fn status(
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
                    autoscale: deployment.and_then(|d| d.spec.autoscale.clone()),
                    scaled: deployment.map(|d| d.scaled.clone()).unwrap_or_default(),
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

    pub(super) fn not_serving(&self) -> Error {
        Error::NotServing {
            endpoint: self.spec.endpoint.clone(),
            listen: self.spec.listen,
            reason: self
                .error
                .clone()
                .unwrap_or_else(|| "it is not bound".into()),
        }
    }

    pub(super) fn unknown_backend(&self, backend: &str) -> Error {
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

impl Shared {
    /// Brings the endpoint's router up to date with the registry's ready replicas.
    pub(crate) fn sync_routes(&self, registry: &mut Registry, endpoint: &str) {
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

#[cfg(test)]
mod tests {
    use super::super::spec::tests::spec;
    use super::*;

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
            health: BTreeMap::new(),
            capture: None,
            counter_keys: BTreeMap::new(),
        };
        let after = router::Routes {
            deployments: [("blue".to_string(), vec![a, b])].into(),
            weights: [("blue".to_string(), 100)].into(),
            mirror: None,
            key_sha256: Some("ab".repeat(32)),
            health: BTreeMap::new(),
            capture: None,
            counter_keys: BTreeMap::new(),
        };
        let text = describe_change(&before, &after);
        assert_eq!(
            text,
            "backend `blue` now on 127.0.0.1:1, 127.0.0.1:2; backend `green` removed; \
             a key is required"
        );
        assert!(!text.contains("abab"));
        // Weights are shown as the rollout shows them.
        let split = router::Routes {
            weights: spec().weights,
            ..after.clone()
        };
        assert_eq!(
            describe_change(&after, &split),
            "weights blue 90%, green@v2 10%"
        );
    }
}

//! The daemon's side of routing: the route requests (route, weights, mirror, readiness,
//! counters, unroute), taking revisions off their routes before they stop, closing every
//! router at shutdown, restoring the recorded routes, and the periodic chores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use super::super::daemon::Shared;
use super::super::registry::Registry;
use super::super::{DeploymentKey, Error, Event, ReplicaState, Result};
use super::bind::{bind, rebind_pending};
use super::hosted::Hosted;
use super::retire::{retire, RetirementRecord};
use super::{RouteSpec, RouteStatus};
use crate::backend::local::router::{self, Mirror};
use crate::rollout::{describe_weights, Stats, Weights};

/// How often the daemon samples its routers' counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often a router that could not bind is tried again.
const REBIND_EVERY: Duration = Duration::from_secs(3);
/// How often scheduled stops are checked.
const RETIRE_POLL: Duration = Duration::from_millis(200);

/// Whether two listen addresses take the same port.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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

pub(crate) async fn route(shared: &Arc<Shared>, spec: RouteSpec) -> Result<RouteStatus> {
    spec.validate()?;
    let _routing = shared.routing.lock().await;
    shared.refuse_if_closing()?;
    let endpoint = spec.endpoint.clone();
    let (rebind, routes) = {
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
        (rebind, scratch.routes(&registry.deployments))
    };
    // Bound before anything changes, so a port in use leaves all as it was.
    let fresh = if rebind {
        Some(bind(shared, &spec, routes).await?)
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

pub(crate) async fn set_weights(
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

pub(crate) async fn set_mirror(
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
    shared.refuse_if_closing()?;
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

pub(crate) fn statuses(shared: &Shared) -> Vec<RouteStatus> {
    let registry = shared.registry();
    let now = Instant::now();
    registry
        .routes
        .values()
        .map(|h| h.status(&registry.deployments, now))
        .collect()
}

pub(crate) async fn ready(shared: &Shared, endpoint: &str, backend: &str) -> Result<bool> {
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

pub(crate) fn stats(shared: &Shared, endpoint: &str, backend: &str) -> Result<Stats> {
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

pub(crate) async fn unroute(shared: &Shared, endpoint: &str) {
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
pub(crate) async fn close_all(shared: &Shared) {
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

/// Takes the revisions off their routes before they are stopped: refused when one still
/// gets traffic by weight; else their backends (and a mirror to them) are removed and no
/// route may name them any more.
pub(crate) async fn take_off_routes(shared: &Shared, keys: &[DeploymentKey]) -> Result<()> {
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
pub(crate) async fn recover(
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

/// Starts the daemon's periodic work for routers: sampling counters, binding routers
/// again, running scheduled stops. The tasks run until aborted.
pub(crate) fn spawn_chores(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
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

    #[test]
    fn listen_addresses_overlap_by_port() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(at("127.0.0.1:8080"), at("127.0.0.1:8080")));
        assert!(overlaps(at("0.0.0.0:8080"), at("127.0.0.1:8080")));
        assert!(!overlaps(at("127.0.0.1:8080"), at("127.0.0.2:8080")));
        assert!(!overlaps(at("127.0.0.1:8080"), at("127.0.0.1:8081")));
    }
}

//! Binding a router: on the socket the watchdog handed over, else on a new one (whose
//! copy goes to the watchdog); a router that stops serving by itself, and binding again
//! the routers that do not serve.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::super::daemon::Shared;
use super::super::registry::Registry;
use super::super::{Error, Event, Result};
use super::hosted::Serving;
use super::RouteSpec;
use crate::backend::local::router::{self, RouterOptions};
use crate::diagnostics::error_chain;

/// Binds a router for `spec` with `routes` and runs it on a task of its own: on the
/// socket the watchdog handed over for it, if any, else on a new one, whose copy then
/// goes to the watchdog.
pub(super) async fn bind(
    shared: &Arc<Shared>,
    spec: &RouteSpec,
    routes: router::Routes,
) -> Result<Serving> {
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

/// Binds every router that does not serve.
pub(super) async fn rebind_pending(shared: &Arc<Shared>) {
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
            .map(|h| (h.spec.clone(), h.routes(deployments)))
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

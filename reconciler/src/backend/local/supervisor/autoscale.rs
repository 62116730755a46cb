//! The autoscaler: every second, each autoscaled revision a router sends traffic to gets
//! the replicas its measured rate asks for ([`ScaleSpec::recommend`]: `ceil(rate /
//! target_rps)` within `min`–`max`, the rate the router measured over the last 10 s).
//!
//! As a HorizontalPodAutoscaler does: more replicas at once; fewer only when every
//! recommendation over the last `scale_down_window` asked for fewer, and never before a
//! revision has been watched that long (a daemon that just started has no history).
//! A change is an apply of the same spec with another count ([`Scale::Set`]), so new
//! replicas start, become ready and are routed to as any apply's are, and surplus ones
//! are taken off the route before they stop; each change is recorded with the revision
//! (`state.json`, shown by `cairn status`) and reported as an [`Event::Scaled`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use super::apply::{apply, Scale};
use super::daemon::Shared;
use super::registry::SCALE_HISTORY;
use super::{routing, DeploymentKey, DeploymentSpec, Event};
use crate::serving::ScaleChange;

/// How often recommendations are made.
const EVERY: Duration = Duration::from_secs(1);

/// One revision's recommendations, newest last.
struct Watched {
    since: Instant,
    recommendations: VecDeque<(Instant, u32)>,
}

/// Starts the autoscaler; it runs until aborted.
pub(super) fn spawn_autoscaler(shared: &Arc<Shared>) -> JoinHandle<()> {
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut watched: BTreeMap<DeploymentKey, Watched> = BTreeMap::new();
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            for (spec, from, rate) in decide(&shared, &mut watched, Instant::now()) {
                scale(&shared, spec, from, rate).await;
            }
        }
    })
}

/// The changes to make now: (the spec with its new count, the count now, the rate).
fn decide(
    shared: &Shared,
    watched: &mut BTreeMap<DeploymentKey, Watched>,
    now: Instant,
) -> Vec<(DeploymentSpec, u32, f64)> {
    let mut rates: BTreeMap<DeploymentKey, f64> = BTreeMap::new();
    for route in routing::statuses(shared) {
        if !route.serving {
            continue;
        }
        for backend in route.backends.values() {
            let key = DeploymentKey {
                endpoint: route.endpoint.clone(),
                deployment: backend.deployment.clone(),
                revision: backend.revision.clone(),
            };
            *rates.entry(key).or_default() += backend.requests_per_s;
        }
    }
    let registry = shared.registry();
    watched.retain(|key, _| rates.contains_key(key));
    let mut changes = Vec::new();
    for (key, rate) in rates {
        let Some(deployment) = registry.deployments.get(&key) else {
            continue;
        };
        let Some(bounds) = &deployment.spec.autoscale else {
            continue;
        };
        if !deployment.confirmed || deployment.stopping {
            continue;
        }
        let recommended = bounds.recommend(rate);
        let entry = watched.entry(key).or_insert_with(|| Watched {
            since: now,
            recommendations: VecDeque::new(),
        });
        entry.recommendations.push_back((now, recommended));
        while entry
            .recommendations
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > bounds.scale_down_window)
        {
            entry.recommendations.pop_front();
        }
        let current = deployment.spec.replicas;
        let target = if recommended > current {
            recommended
        } else if now.saturating_duration_since(entry.since) >= bounds.scale_down_window {
            entry
                .recommendations
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(current)
        } else {
            current
        };
        let target = target.clamp(bounds.min, bounds.max);
        if target != current {
            let spec = DeploymentSpec {
                replicas: target,
                ..(*deployment.spec).clone()
            };
            changes.push((spec, current, rate));
        }
    }
    changes
}

/// Applies one change and records it.
async fn scale(shared: &Arc<Shared>, spec: DeploymentSpec, from: u32, rate: f64) {
    let key = spec.key();
    let to = spec.replicas;
    let target = spec.autoscale.as_ref().map_or(0.0, |a| a.target_rps);
    match apply(shared, vec![spec], Scale::Set).await {
        Ok(_) => {
            let mut registry = shared.registry();
            let Some(deployment) = registry.deployments.get_mut(&key) else {
                return;
            };
            if deployment.spec.replicas != to {
                return;
            }
            let at = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            deployment.scaled.push(ScaleChange {
                at,
                from,
                to,
                requests_per_s: rate,
            });
            let excess = deployment.scaled.len().saturating_sub(SCALE_HISTORY);
            deployment.scaled.drain(..excess);
            shared.persist(&registry);
            drop(registry);
            shared.event(Event::Scaled {
                deployment: key,
                from,
                to,
                why: format!("{rate:.1} requests/s for {target} per replica"),
            });
        }
        Err(e) => shared.event(Event::ScaleFailed {
            deployment: key,
            to,
            reason: crate::diagnostics::error_chain(&super::Error::from(e)),
        }),
    }
}

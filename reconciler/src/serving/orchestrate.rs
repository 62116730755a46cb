//! Carrying an endpoint change out on any serving target ([`super::Serving`]): start the
//! declared revisions, route them at 0 %, walk traffic with the rollout engine
//! ([`crate::rollout::run`]) under the gates, then promote — or restore the previous
//! routes and stop the new revisions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::decide::{describe_serving, Layout};
use super::{
    canary_name, EndpointId, EndpointValue, Error, Result, RevisionSpec, RouteTable, Serving,
};
use crate::rollout::{
    self, describe_weights, Outcome, RolloutEvent, RolloutPolicy, Traffic, Weights,
};

/// Brings the endpoint's live serving to `after`. Returns a one-line summary; a failed
/// gate is an error ([`Error::RolledBack`], [`Error::Halted`]) after traffic was restored.
///
/// It works from what the target says serves, not from what the state recorded, so an
/// apply that died anywhere is finished by the next one: a new revision started but not
/// routed is routed at 0 % and rolled out; a rollout stopped part way walks the remaining
/// steps from where traffic is, holding that step under the gates again; one that moved
/// all traffic but died before the promotion holds the last step again and promotes; old
/// revisions that nothing routes to are stopped.
pub async fn apply(
    serving: &dyn Serving,
    endpoint: &EndpointId,
    after: &EndpointValue,
    on_event: &(dyn Fn(RolloutEvent) + Send + Sync),
    note: &(dyn Fn(&str) + Send + Sync),
) -> Result<String> {
    let live = serving.observe(endpoint).await?;
    let layout = Layout::of(after, live.as_ref());

    // 0. What nothing routes traffic to, and no rollback needs, stops before anything is
    // routed: no table this apply writes names a revision that might be stopped under it.
    let unneeded = layout
        .superseded
        .iter()
        .map(|(_, d, r)| (d, r))
        .chain(layout.idle.iter().map(|(d, r)| (d, r)));
    for (deployment, revision) in unneeded {
        note(&format!(
            "stopping {deployment}@{revision}: nothing routes traffic to it"
        ));
        serving
            .retire(endpoint, deployment, revision, Duration::ZERO)
            .await?;
    }

    // 1. Every declared revision runs and is ready.
    let revisions: Vec<RevisionSpec> = after
        .deployments
        .iter()
        .filter(|(_, d)| d.replicas > 0)
        .map(|(name, d)| RevisionSpec {
            deployment: name.clone(),
            revision: d.revision.clone(),
            model: d.model.clone(),
            version: d.version.clone(),
            replicas: starting_replicas(name, d, live.as_ref()),
            autoscale: d.autoscale.clone(),
            env: d.env.clone(),
            command: d.command.clone(),
            health: d.health().to_string(),
        })
        .collect();
    if !revisions.is_empty() {
        let names: Vec<String> = revisions
            .iter()
            .map(|r| format!("{}@{} ×{}", r.deployment, r.revision, r.replicas))
            .collect();
        note(&format!("starting {}", names.join(", ")));
    }
    serving.deploy(endpoint, &revisions).await?;

    let targets = &layout.targets;
    let mirror_of = |targets: &BTreeMap<String, String>| {
        after.mirror.as_ref().map(|m| {
            (
                targets
                    .get(&m.deployment)
                    .cloned()
                    .unwrap_or_else(|| m.deployment.clone()),
                m.percent,
            )
        })
    };
    let auth = after.auth != "none";
    let declared: BTreeMap<String, (String, String)> = after
        .deployments
        .iter()
        .filter(|(_, d)| d.replicas > 0)
        .map(|(name, d)| (targets[name].clone(), (name.clone(), d.revision.clone())))
        .collect();
    let to = layout.to.clone();

    let routed = live.as_ref().filter(|l| l.weights.values().any(|w| *w > 0));
    let Some(live) = routed else {
        // Nothing carries traffic: route straight to the declared weights.
        let routed = serving
            .route(
                endpoint,
                &RouteTable {
                    port: after.port,
                    backends: declared.clone(),
                    weights: to.clone(),
                    mirror: mirror_of(targets),
                    auth,
                    capture: after.monitor.as_ref().map(|m| (m.every(), m.max_capture)),
                },
            )
            .await;
        if let Err(e) = routed {
            // Without a router nothing can reach the revisions just started.
            if live.is_none() {
                for r in &revisions {
                    let _ = serving
                        .retire(endpoint, &r.deployment, &r.revision, Duration::ZERO)
                        .await;
                }
            }
            return Err(e);
        }
        if let Some(live) = &live {
            // What the old table named and the new one doesn't.
            for (name, b) in &live.backends {
                let kept = declared.get(name) == Some(&(b.deployment.clone(), b.revision.clone()));
                let stopped = layout.superseded.iter().any(|(n, _, _)| n == name);
                if !kept && !stopped {
                    note(&format!("stopping {}@{}", b.deployment, b.revision));
                    serving
                        .retire(endpoint, &b.deployment, &b.revision, Duration::ZERO)
                        .await?;
                }
            }
        }
        return Ok(format!("serving {}", describe_serving(after)));
    };

    // 2. New revisions join the router at 0 %, beside what serves.
    let mut backends: BTreeMap<String, (String, String)> = live
        .backends
        .iter()
        .filter(|(n, _)| !layout.superseded.iter().any(|(s, _, _)| s == *n))
        .map(|(n, b)| (n.clone(), (b.deployment.clone(), b.revision.clone())))
        .collect();
    // A backend name taken over by a declared revision carries nothing (see
    // `Layout::targets`): the revision it named is stopped once it is off the router.
    let mut replaced = Vec::new();
    for (name, value) in &declared {
        if let Some(old) = backends.insert(name.clone(), value.clone()) {
            if old != *value {
                replaced.push(old);
            }
        }
    }
    let full = |weights: &Weights| -> Weights {
        backends
            .keys()
            .map(|n| (n.clone(), weights.get(n).copied().unwrap_or(0)))
            .collect()
    };
    let joined = full(&layout.from);
    serving
        .route(
            endpoint,
            &RouteTable {
                port: after.port,
                backends: backends.clone(),
                weights: joined.clone(),
                mirror: mirror_of(targets),
                auth,
                capture: after.monitor.as_ref().map(|m| (m.every(), m.max_capture)),
            },
        )
        .await?;
    for (deployment, revision) in &replaced {
        note(&format!(
            "stopping {deployment}@{revision}: replaced in place"
        ));
        serving
            .retire(endpoint, deployment, revision, Duration::ZERO)
            .await?;
    }

    // 3. Traffic moves by the steps, watched by the gates: from where an unfinished
    // rollout left it, when one did.
    let summary;
    if layout.moves() {
        if let Some(at) = layout.resume_at {
            note(&format!(
                "an unfinished rollout left traffic at {}: resuming at {at}%",
                describe_weights(&layout.from)
            ));
        }
        let traffic = serving.traffic(endpoint);
        let policy = layout.rollout_value(&after.rollout).policy();
        let base = full(&layout.base);
        match walk(traffic.as_ref(), &base, &full(&to), &policy, on_event).await {
            Ok(_) => {
                summary = format!("promoted: {}", describe_serving(after));
            }
            // The reason is in the failed step's event and in the error: not noted again.
            Err(e @ (Error::RolledBack { .. } | Error::NotReady { .. })) => {
                // The new revisions are at 0 %: take them out and stop them.
                restore(
                    serving,
                    endpoint,
                    after,
                    &backends,
                    &base,
                    &layout.canaries(),
                    auth,
                )
                .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    } else {
        summary = format!("serving {}", describe_serving(after));
    }

    // 4. Promote: new revisions take their deployment's name; the revisions that served
    // until now stay at 0 % until they are retired, the others stop at once.
    let mut final_backends = BTreeMap::new();
    let mut final_weights = Weights::new();
    let mut keep: BTreeSet<(String, String)> = BTreeSet::new();
    for (name, d) in &after.deployments {
        if d.replicas == 0 {
            continue;
        }
        final_backends.insert(name.clone(), (name.clone(), d.revision.clone()));
        final_weights.insert(name.clone(), after.traffic.get(name).copied().unwrap_or(0));
        keep.insert((name.clone(), d.revision.clone()));
    }
    let delay = after.rollout.scale_down_delay();
    let mut retiring = Vec::new();
    for (name, (deployment, revision)) in &backends {
        let pair = (deployment.clone(), revision.clone());
        if keep.contains(&pair) {
            continue;
        }
        let served = layout.base.get(name).copied().unwrap_or(0) > 0;
        if served && after.deployments.contains_key(deployment) {
            let name = canary_name(deployment, revision);
            final_backends.insert(name.clone(), pair.clone());
            final_weights.insert(name, 0);
            retiring.push((pair, delay));
        } else {
            retiring.push((pair, Duration::ZERO));
        }
    }
    serving
        .route(
            endpoint,
            &RouteTable {
                port: after.port,
                backends: final_backends,
                weights: final_weights,
                mirror: after
                    .mirror
                    .as_ref()
                    .map(|m| (m.deployment.clone(), m.percent)),
                auth,
                capture: after.monitor.as_ref().map(|m| (m.every(), m.max_capture)),
            },
        )
        .await?;
    for ((deployment, revision), after_delay) in retiring {
        note(&format!(
            "retiring {deployment}@{revision} in {}",
            humantime::format_duration(after_delay)
        ));
        serving
            .retire(endpoint, &deployment, &revision, after_delay)
            .await?;
    }
    Ok(summary)
}

/// Walks traffic from `from` to `to` with the rollout engine under `policy`: the one way
/// every target's rollout runs ([`crate::rollout::run`] is called nowhere else). `Ok`
/// holds the weights it promoted; [`Error::RolledBack`] (a failed gate) and
/// [`Error::NotReady`] come after the engine put traffic back on `from`, so the caller
/// only undoes what it started; with [`Error::Halted`] traffic stays split
/// (`auto_rollback = false`).
pub async fn walk(
    traffic: &dyn Traffic,
    from: &Weights,
    to: &Weights,
    policy: &RolloutPolicy,
    on_event: &(dyn Fn(RolloutEvent) + Send + Sync),
) -> Result<Weights> {
    match rollout::run(traffic, from, to, policy, on_event).await? {
        Outcome::Promoted { weights } => Ok(weights),
        Outcome::RolledBack { step, reason, .. } => Err(Error::RolledBack { step, reason }),
        Outcome::Halted { step, reason, .. } => Err(Error::Halted { step, reason }),
        Outcome::NotReady { deployment } => Err(Error::NotReady { deployment }),
    }
}

/// After a failed rollout: the table as it was before (traffic where the last finished
/// rollout put it), then the new revisions stopped.
async fn restore(
    serving: &dyn Serving,
    endpoint: &EndpointId,
    after: &EndpointValue,
    backends: &BTreeMap<String, (String, String)>,
    base: &Weights,
    canaries: &BTreeSet<String>,
    auth: bool,
) -> Result<()> {
    let kept: BTreeMap<String, (String, String)> = backends
        .iter()
        .filter(|(n, _)| !canaries.contains(*n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let weights: Weights = kept
        .keys()
        .map(|n| (n.clone(), base.get(n).copied().unwrap_or(0)))
        .collect();
    let mirror = after
        .mirror
        .as_ref()
        .filter(|m| kept.contains_key(&m.deployment))
        .map(|m| (m.deployment.clone(), m.percent));
    serving
        .route(
            endpoint,
            &RouteTable {
                port: after.port,
                backends: kept,
                weights,
                mirror,
                auth,
                capture: after.monitor.as_ref().map(|m| (m.every(), m.max_capture)),
            },
        )
        .await?;
    for name in canaries {
        if let Some((deployment, revision)) = backends.get(name) {
            serving
                .retire(endpoint, deployment, revision, Duration::ZERO)
                .await?;
        }
    }
    Ok(())
}

/// The replicas a revision starts with: its declared count; autoscaled, the most any
/// live revision of the same deployment runs now, within the bounds (a rollout's new
/// revision starts as scaled as the one it replaces; a revision already running keeps
/// its own count, which the target's autoscaler owns).
fn starting_replicas(
    deployment: &str,
    value: &super::DeploymentValue,
    live: Option<&super::LiveEndpoint>,
) -> u32 {
    let Some(bounds) = &value.autoscale else {
        return value.replicas;
    };
    let running = live
        .into_iter()
        .flat_map(|l| l.backends.values())
        .filter(|b| b.deployment == deployment)
        .map(|b| b.replicas)
        .max()
        .unwrap_or(value.replicas);
    running.clamp(bounds.min, bounds.max.max(bounds.min))
}

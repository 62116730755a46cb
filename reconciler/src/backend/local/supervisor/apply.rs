//! The daemon's changes of what runs: [`apply`] (start what is missing, wait until all
//! is ready, or undo all of it), [`stop`] of a revision (taken off its routes first) and
//! [`shutdown`] (routers first, then every replica).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::daemon::Shared;
use super::logs::replica_log;
use super::protocol::WireError;
use super::registry::{Control, Deployment, Observed};
use super::replica::{launch, Init, StartError};
use super::{
    routing, DeploymentKey, DeploymentSpec, Event, ReplicaId, ReplicaState, ReplicaStatus,
    StartFailure,
};

/// Whose replica count an apply follows for an autoscaled revision already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scale {
    /// A client's apply: the count the autoscaler reached is kept (within the spec's
    /// bounds), so an apply never undoes a scale-up.
    Keep,
    /// The autoscaler's own change: the spec's count.
    Set,
}

/// Starts every replica the specs lack and waits until all are ready, then stops
/// surplus replicas; on any failure, stops all it started (see
/// [`SupervisorClient::apply`](super::SupervisorClient::apply)).
pub(super) async fn apply(
    shared: &Arc<Shared>,
    mut requested: Vec<DeploymentSpec>,
    scale: Scale,
) -> std::result::Result<Vec<ReplicaStatus>, WireError> {
    let _serial = shared.serial.lock().await;
    shared.refuse_if_closing()?;
    let mut keys = BTreeSet::new();
    for spec in &requested {
        spec.validate()?;
        if !keys.insert(spec.key()) {
            return Err(WireError::Invalid {
                deployment: format!("`{}`", spec.key()),
                reason: "it is listed twice in one apply".into(),
            });
        }
    }
    let mut created = Vec::new();
    let mut started = Vec::new();
    let mut surplus = Vec::new();
    let specs: Vec<Arc<DeploymentSpec>>;
    {
        let mut registry = shared.registry();
        if scale == Scale::Set {
            // Only what runs is scaled: a revision stopped meanwhile is not started again.
            requested.retain(|spec| {
                registry
                    .deployments
                    .get(&spec.key())
                    .is_some_and(|d| d.confirmed && !d.stopping)
            });
        }
        if scale == Scale::Keep {
            for spec in &mut requested {
                let running = registry.deployments.get(&spec.key());
                if let (Some(bounds), Some(running)) = (&spec.autoscale, running) {
                    spec.replicas = running.spec.replicas.clamp(bounds.min, bounds.max);
                }
            }
        }
        specs = requested.into_iter().map(Arc::new).collect();
        // Every check before anything starts.
        for spec in &specs {
            if let Some(running) = registry.deployments.get(&spec.key()) {
                if !running.spec.same_apart_from_replicas(spec) {
                    return Err(WireError::Conflict {
                        deployment: format!("`{}`", spec.key()),
                        reason: running.spec.difference(spec).into(),
                    });
                }
            }
        }
        for spec in &specs {
            let key = spec.key();
            let deployment = registry.deployments.entry(key.clone()).or_insert_with(|| {
                created.push(key.clone());
                Deployment {
                    spec: spec.clone(),
                    confirmed: false,
                    stopping: false,
                    replicas: BTreeMap::new(),
                    scaled: Vec::new(),
                }
            });
            let missing: Vec<u32> = (0..spec.replicas)
                .filter(|i| !deployment.replicas.contains_key(i))
                .collect();
            surplus.extend(
                deployment
                    .replicas
                    .keys()
                    .filter(|i| **i >= spec.replicas)
                    .map(|index| ReplicaId {
                        key: key.clone(),
                        index: *index,
                    }),
            );
            for index in missing {
                let id = ReplicaId {
                    key: key.clone(),
                    index,
                };
                let (reply, outcome) = oneshot::channel();
                launch(
                    shared,
                    &mut registry,
                    id.clone(),
                    spec.clone(),
                    Observed::starting(),
                    Init::Start(reply),
                );
                started.push((id, outcome));
            }
        }
        shared.persist(&registry);
    }

    let outcomes = futures::future::join_all(started.iter_mut().map(|(_, outcome)| outcome)).await;
    let failures: Vec<StartFailure> = outcomes
        .into_iter()
        .zip(&started)
        .filter_map(|(outcome, (id, _))| match outcome {
            Ok(Ok(())) => None,
            Ok(Err(StartError::Failed(failure))) => Some(failure),
            Ok(Err(StartError::Stopped)) | Err(_) => Some(StartFailure {
                replica: id.clone(),
                reason: "stopped before it was ready".into(),
                log: replica_log(&shared.dir, id),
                log_tail: String::new(),
            }),
        })
        .collect();
    let started: Vec<ReplicaId> = started.into_iter().map(|(id, _)| id).collect();

    if !failures.is_empty() {
        stop_replicas(shared, &started).await;
        let mut registry = shared.registry();
        for key in &created {
            if registry
                .deployments
                .get(key)
                .is_some_and(|d| d.replicas.is_empty())
            {
                registry.deployments.remove(key);
            }
        }
        shared.persist(&registry);
        return Err(WireError::StartFailed { failures });
    }

    {
        let mut registry = shared.registry();
        for spec in &specs {
            if let Some(deployment) = registry.deployments.get_mut(&spec.key()) {
                deployment.spec = spec.clone();
                deployment.confirmed = true;
            }
            // Applying a revision again says it is wanted: a scheduled stop is dropped.
            if registry.retirements.remove(&spec.key()).is_some() {
                shared.event(Event::RetireCancelled {
                    deployment: spec.key(),
                    reason: "applied again".into(),
                });
            }
        }
        for id in &started {
            if let Some(replica) = registry.replica_mut(id) {
                replica.observed.confirmed = true;
            }
        }
        shared.persist(&registry);
    }
    stop_replicas(shared, &surplus).await;
    Ok(shared
        .registry()
        .statuses(&shared.dir, |k| keys.contains(k)))
}

/// Stops the replicas of one revision, or of every revision of the deployment, once they
/// are taken off their routes; returns them as they were.
pub(super) async fn stop(
    shared: &Arc<Shared>,
    endpoint: &str,
    deployment: &str,
    revision: Option<&str>,
) -> std::result::Result<Vec<ReplicaStatus>, WireError> {
    let _serial = shared.serial.lock().await;
    shared.refuse_if_closing()?;
    let wanted = |k: &DeploymentKey| {
        k.endpoint == endpoint
            && k.deployment == deployment
            && revision.is_none_or(|r| k.revision == r)
    };
    let (keys, before) = {
        let registry = shared.registry();
        let keys: Vec<DeploymentKey> = registry
            .deployments
            .keys()
            .filter(|k| wanted(k))
            .cloned()
            .collect();
        (keys, registry.statuses(&shared.dir, wanted))
    };
    routing::take_off_routes(shared, &keys).await?;
    stop_deployments(shared, &keys).await;
    Ok(before)
}

/// Refuses later changes, closes every router, then stops every replica; returns them as
/// they were.
pub(super) async fn shutdown(
    shared: &Arc<Shared>,
) -> std::result::Result<Vec<ReplicaStatus>, WireError> {
    let _serial = shared.serial.lock().await;
    shared.closing.store(true, Ordering::SeqCst);
    // Routers first, so that no request goes to a replica being stopped.
    routing::close_all(shared).await;
    let (keys, before) = {
        let registry = shared.registry();
        let keys: Vec<DeploymentKey> = registry.deployments.keys().cloned().collect();
        (keys, registry.statuses(&shared.dir, |_| true))
    };
    stop_deployments(shared, &keys).await;
    Ok(before)
}

/// Stops every replica of these revisions and forgets the revisions.
pub(super) async fn stop_deployments(shared: &Arc<Shared>, keys: &[DeploymentKey]) {
    let ids = shared.registry().ids(keys);
    stop_replicas(shared, &ids).await;
    let mut registry = shared.registry();
    for key in keys {
        registry.deployments.remove(key);
        registry.retirements.remove(key);
    }
    shared.persist(&registry);
}

/// Stops the replicas (all at once) and forgets them.
async fn stop_replicas(shared: &Arc<Shared>, ids: &[ReplicaId]) {
    if ids.is_empty() {
        return;
    }
    let controls: Vec<Control> = {
        let mut registry = shared.registry();
        let controls = ids
            .iter()
            .filter_map(|id| {
                let replica = registry.replica_mut(id)?;
                replica.observed.state = ReplicaState::Stopping;
                replica.control.take()
            })
            .collect();
        shared.persist(&registry);
        // No new request goes to a replica being stopped.
        let endpoints: BTreeSet<&String> = ids.iter().map(|id| &id.key.endpoint).collect();
        for endpoint in endpoints {
            shared.sync_routes(&mut registry, endpoint);
        }
        controls
    };
    for control in &controls {
        // A task that already ended has dropped its receiver; nothing to stop then.
        let _ = control.stop.send(true);
    }
    futures::future::join_all(controls.into_iter().map(|c| c.task)).await;
    let mut registry = shared.registry();
    for id in ids {
        if let Some(deployment) = registry.deployments.get_mut(&id.key) {
            deployment.replicas.remove(&id.index);
        }
    }
    shared.persist(&registry);
}

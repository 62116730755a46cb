//! Taking over from a previous daemon: [`recover`] tears down what an unfinished apply
//! left, adopts the recorded replicas still alive (same pid and start time, answering
//! their health path), restarts the others, then restores the routes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::daemon::Shared;
use super::health::probe_until;
use super::logs::replica_log;
use super::process::{is_alive, Running};
use super::registry::{Deployment, Observed};
use super::replica::{launch, Init};
use super::state::StateFile;
use super::{routing, DeploymentSpec, Event, ReplicaId, ReplicaState};

/// Takes over from a previous daemon: tears down what an unfinished apply left, adopts
/// live confirmed replicas that answer their health path, restarts the others.
pub(super) async fn recover(shared: &Arc<Shared>, state: StateFile) {
    let StateFile {
        deployments,
        routes,
        retirements,
        ..
    } = state;
    let options = shared.options.clone();
    let mut discard = Vec::new();
    let mut candidates = Vec::new();
    {
        let mut registry = shared.registry();
        for record in deployments {
            let key = record.spec.key();
            let scaled = record.scaled;
            let spec = Arc::new(record.spec);
            let keep = record.confirmed && spec.validate().is_ok();
            let mut seen = BTreeSet::new();
            for replica in record.replicas {
                let id = ReplicaId {
                    key: key.clone(),
                    index: replica.index,
                };
                let alive = live_process(&shared.dir, &id, &replica.observed);
                let wanted = keep
                    && replica.observed.confirmed
                    && replica.index < spec.replicas
                    && seen.insert(replica.index);
                if wanted {
                    candidates.push((id, spec.clone(), replica.observed, alive));
                } else if let Some(running) = alive {
                    discard.push((id, running));
                }
            }
            if keep {
                registry.deployments.insert(
                    key,
                    Deployment {
                        spec,
                        confirmed: true,
                        stopping: false,
                        replicas: BTreeMap::new(),
                        scaled,
                    },
                );
            }
        }
    }

    let discarding = discard.into_iter().map(|(replica, mut running)| {
        let options = &options;
        async move {
            running.terminate(options.stop_grace, options.poll).await;
            shared.event(Event::Discarded {
                replica,
                pid: running.pid,
            });
        }
    });
    let probing = candidates.into_iter().map(|(id, spec, observed, alive)| {
        let options = &options;
        async move {
            let verdict = match alive {
                None => Err("was not running when the supervisor started".to_string()),
                Some(mut running) => {
                    if probe_until(running.addr(), &spec.health_path, Duration::from_secs(2)).await
                    {
                        Ok(running)
                    } else {
                        running.terminate(options.stop_grace, options.poll).await;
                        Err("did not answer its health path when the supervisor started"
                            .to_string())
                    }
                }
            };
            (id, spec, observed, verdict)
        }
    });
    let (_, probed) = futures::future::join(
        futures::future::join_all(discarding),
        futures::future::join_all(probing),
    )
    .await;

    {
        let mut registry = shared.registry();
        for (id, spec, mut observed, verdict) in probed {
            let init = match verdict {
                Ok(running) => {
                    shared.event(Event::Adopted {
                        replica: id.clone(),
                        pid: running.pid,
                        addr: running.addr(),
                    });
                    observed.state = ReplicaState::Ready;
                    Init::Adopted(Box::new(running))
                }
                Err(reason) => {
                    observed.pid = None;
                    observed.start_ticks = None;
                    observed.state = ReplicaState::Crashed {
                        reason: reason.clone(),
                    };
                    Init::Restart(reason)
                }
            };
            launch(shared, &mut registry, id, spec, observed, init);
        }
        // Replicas the state wants but does not list (lost while being written) start afresh.
        let missing: Vec<(ReplicaId, Arc<DeploymentSpec>)> = registry
            .deployments
            .iter()
            .flat_map(|(key, d)| {
                (0..d.spec.replicas)
                    .filter(|i| !d.replicas.contains_key(i))
                    .map(|index| {
                        (
                            ReplicaId {
                                key: key.clone(),
                                index,
                            },
                            d.spec.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for (id, spec) in missing {
            let reason = "was missing when the supervisor started".to_string();
            let observed = Observed {
                state: ReplicaState::Crashed {
                    reason: reason.clone(),
                },
                confirmed: true,
                ..Observed::starting()
            };
            launch(
                shared,
                &mut registry,
                id,
                spec,
                observed,
                Init::Restart(reason),
            );
        }
        shared.persist(&registry);
    }
    routing::recover(shared, routes, retirements).await;
}

/// The recorded process of a replica, when it still runs (same start time, leading its
/// group) and has a port to probe.
fn live_process(dir: &Path, id: &ReplicaId, observed: &Observed) -> Option<Running> {
    observed.port?;
    recorded_process(dir, id, observed)
}

/// The recorded process of a replica, when it still runs (same start time, leading its
/// group).
pub(super) fn recorded_process(dir: &Path, id: &ReplicaId, observed: &Observed) -> Option<Running> {
    let pid = observed.pid?;
    if !is_alive(pid, observed.start_ticks) {
        return None;
    }
    Some(Running {
        pid,
        start_ticks: observed.start_ticks,
        port: observed.port.unwrap_or(0),
        child: None,
        log: replica_log(dir, id),
        log_offset: 0,
    })
}

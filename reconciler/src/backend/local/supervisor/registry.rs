//! The daemon's registry: every deployment revision it runs, each replica's [`Observed`]
//! record (what `state.json` keeps of it) and the task watching it, the endpoints'
//! routers and the scheduled stops. Always used under [`super::daemon::Shared`]'s lock,
//! never across an await.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::logs::replica_log;
use super::routing::Hosted;
use super::{loopback, DeploymentKey, DeploymentSpec, ReplicaId, ReplicaState, ReplicaStatus};
use crate::serving::ScaleChange;

/// What the daemon runs and routes.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) deployments: BTreeMap<DeploymentKey, Deployment>,
    /// Endpoint name → its router.
    pub(super) routes: BTreeMap<String, Hosted>,
    /// Revisions to stop, and when.
    pub(super) retirements: BTreeMap<DeploymentKey, SystemTime>,
}

/// One deployment revision the daemon runs.
pub(super) struct Deployment {
    /// The spec of the last apply that succeeded (or of this one, while unconfirmed).
    pub(super) spec: Arc<DeploymentSpec>,
    /// Whether an apply of it ever succeeded.
    pub(super) confirmed: bool,
    /// Taken off its routes and being stopped: no route may name it any more.
    pub(super) stopping: bool,
    pub(super) replicas: BTreeMap<u32, Replica>,
    /// What the autoscaler did to it, oldest first (the last [`SCALE_HISTORY`]).
    pub(super) scaled: Vec<ScaleChange>,
}

/// How many scale changes a revision remembers.
pub(super) const SCALE_HISTORY: usize = 20;

/// One replica of a deployment revision.
pub(super) struct Replica {
    pub(super) observed: Observed,
    /// The task watching it; taken when it is stopped.
    pub(super) control: Option<Control>,
}

/// How the daemon stops a replica's task, and waits for it.
pub(super) struct Control {
    pub(super) stop: watch::Sender<bool>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// What `state.json` remembers of a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Observed {
    pub(super) pid: Option<u32>,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`), which tells
    /// it from a later process given the same pid.
    pub(super) start_ticks: Option<u64>,
    pub(super) port: Option<u16>,
    pub(super) state: ReplicaState,
    pub(super) restarts: u32,
    /// Whether the apply that started it succeeded.
    pub(super) confirmed: bool,
}

impl Observed {
    /// A replica about to start for the first time.
    pub(super) fn starting() -> Observed {
        Observed {
            pid: None,
            start_ticks: None,
            port: None,
            state: ReplicaState::Starting,
            restarts: 0,
            confirmed: false,
        }
    }
}

impl Registry {
    /// The replica `id`, while it is registered.
    pub(super) fn replica_mut(&mut self, id: &ReplicaId) -> Option<&mut Replica> {
        self.deployments
            .get_mut(&id.key)?
            .replicas
            .get_mut(&id.index)
    }

    /// How many replicas are registered.
    pub(super) fn replica_count(&self) -> usize {
        self.deployments.values().map(|d| d.replicas.len()).sum()
    }

    /// The replicas of these revisions.
    pub(super) fn ids(&self, keys: &[DeploymentKey]) -> Vec<ReplicaId> {
        keys.iter()
            .filter_map(|key| Some((key, self.deployments.get(key)?)))
            .flat_map(|(key, d)| {
                d.replicas.keys().map(|index| ReplicaId {
                    key: key.clone(),
                    index: *index,
                })
            })
            .collect()
    }

    /// Every replica of a `wanted` revision, in order of revision and index.
    pub(super) fn statuses(
        &self,
        dir: &Path,
        wanted: impl Fn(&DeploymentKey) -> bool,
    ) -> Vec<ReplicaStatus> {
        let mut out = Vec::new();
        for (key, deployment) in self.deployments.iter().filter(|(k, _)| wanted(k)) {
            for (index, replica) in &deployment.replicas {
                let id = ReplicaId {
                    key: key.clone(),
                    index: *index,
                };
                let o = &replica.observed;
                out.push(ReplicaStatus {
                    endpoint: key.endpoint.clone(),
                    deployment: key.deployment.clone(),
                    revision: key.revision.clone(),
                    index: *index,
                    pid: o.pid,
                    addr: o.pid.and(o.port).map(loopback),
                    state: o.state.clone(),
                    restarts: o.restarts,
                    log: replica_log(dir, &id),
                });
            }
        }
        out
    }
}

//! The control [`Handle`] of a running router: change its routes, probe readiness, read
//! counters; also the rollout engine's [`Traffic`] for `local` endpoints.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use futures::future::join_all;

use super::upstream::Shared;
use super::{Error, Mirror, Result, Routes};
use crate::diagnostics::error_chain;
use crate::rollout::{Stats, Traffic, TrafficError, Weights};

/// Changes a router's routes and reads its counters; clones share one router.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(super) shared: Arc<Shared>,
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

    /// Returns whether every replica of the deployment answers `GET` of its health path
    /// ([`Routes::health`], `/healthz` by default) with 200 within
    /// [`RouterOptions::probe_timeout`]. A deployment without replicas is not ready.
    pub async fn ready(&self, deployment: &str) -> Result<bool> {
        let table = self.shared.table();
        let path = table.routes.health_path(deployment);
        let deployment = table.deployment(deployment)?;
        if deployment.replicas.is_empty() {
            return Ok(false);
        }
        let probes = deployment
            .replicas
            .iter()
            .map(|replica| self.shared.probe(replica.addr, path));
        Ok(join_all(probes).await.into_iter().all(|ok| ok))
    }

    /// Returns the deployment's cumulative counters, also for a deployment that was
    /// removed from the routes since.
    pub fn stats(&self, deployment: &str) -> Result<Stats> {
        let key = self
            .shared
            .table()
            .routes
            .counter_key(deployment)
            .to_string();
        let counters = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match counters.get(&key) {
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

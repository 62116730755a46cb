//! The client's routing calls ([`SupervisorClient::route`], `set_weights`, `ready`, …)
//! and [`RouteTraffic`], the rollout engine's view of one endpoint's router.

use std::time::Duration;

use async_trait::async_trait;

use super::super::client::unexpected;
use super::super::protocol::{Request, Response};
use super::super::{Result, SupervisorClient};
use super::{RouteSpec, RouteStatus};
use crate::backend::local::router::Mirror;
use crate::diagnostics::error_chain;
use crate::rollout::{Stats, Traffic, TrafficError, Weights};

impl SupervisorClient {
    /// Creates or updates the endpoint's router. Every backend must name a revision whose
    /// apply succeeded (else [`Error::InvalidSpec`](super::super::Error::InvalidSpec)). A
    /// new router (or a changed `listen`) binds first: a port in use fails with
    /// [`Error::PortInUse`](super::super::Error::PortInUse) and leaves the previous router
    /// and routes exactly as they were. Updating a running router swaps its routes
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
    /// through the router's probe
    /// ([`router::Handle::ready`](crate::backend::local::router::Handle::ready)).
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
    async fn set_weights(&self, weights: &Weights) -> Result<(), TrafficError> {
        self.client
            .set_weights(&self.endpoint, weights)
            .await
            .map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }

    async fn ready(&self, backend: &str) -> Result<bool, TrafficError> {
        self.client
            .ready(&self.endpoint, backend)
            .await
            .map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }

    async fn stats(&self, backend: &str) -> Result<Stats, TrafficError> {
        self.client
            .stats(&self.endpoint, backend)
            .await
            .map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }

    async fn set_mirror(&self, mirror: Option<(&str, u32)>) -> Result<(), TrafficError> {
        let mirror = mirror.map(|(deployment, percent)| Mirror {
            deployment: deployment.to_string(),
            percent,
        });
        self.client
            .set_mirror(&self.endpoint, mirror)
            .await
            .map_err(|e| TrafficError::Unavailable(error_chain(&e)))
    }
}

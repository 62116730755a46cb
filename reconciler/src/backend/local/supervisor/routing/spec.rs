//! What is asked of a router and what it reports: a [`RouteSpec`] (where it listens, its
//! backends, the weights, the mirror, the key digest), checked before it reaches the
//! daemon, and a [`RouteStatus`] per router with a [`BackendStatus`] per backend.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::super::error::names_or_none;
use super::super::spec::{check_name, NAME_MAX};
use super::super::{DeploymentKey, Error, Result, ScaleSpec};
use crate::backend::local::router::{self, Capture, Mirror};
use crate::rollout::Weights;
use crate::serving::ScaleChange;

/// The deployment revision serving one backend of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteBackend {
    pub deployment: String,
    pub revision: String,
}

impl RouteBackend {
    pub fn new(deployment: impl Into<String>, revision: impl Into<String>) -> RouteBackend {
        RouteBackend {
            deployment: deployment.into(),
            revision: revision.into(),
        }
    }

    /// The deployment revision this backend names on `endpoint`.
    pub fn key(&self, endpoint: &str) -> DeploymentKey {
        DeploymentKey {
            endpoint: endpoint.to_string(),
            deployment: self.deployment.clone(),
            revision: self.revision.clone(),
        }
    }
}

/// An endpoint's router: where it listens, its backends, how traffic splits between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The supervisor's endpoint name (the same `endpoint` as in a deployment spec).
    pub endpoint: String,
    /// Where the router listens, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Router backend name (what the pin header names, e.g. `blue` or `blue@3f2a9c`) →
    /// the deployment revision serving it.
    pub backends: BTreeMap<String, RouteBackend>,
    /// Backend name → percent, summing to 100 (or 0).
    pub weights: Weights,
    /// A share of the weighted requests copied to a backend.
    #[serde(default)]
    pub mirror: Option<Mirror>,
    /// When set, every request must carry `Authorization: Bearer KEY` whose SHA-256
    /// (lowercase hex) is this; else 401. Only the digest is sent and stored.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Bodies of a share of the weighted requests written to files (input-drift
    /// monitoring).
    #[serde(default)]
    pub capture: Option<Capture>,
}

impl RouteSpec {
    /// Checks names, the port, weights, mirror and key digest (not whether the backends
    /// run: the daemon does).
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|reason| Error::InvalidRoute {
            endpoint: self.endpoint.clone(),
            reason,
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        check_name("endpoint", &self.endpoint)?;
        if self.listen.port() == 0 {
            return Err(
                "`listen` must name a port: port 0 would pick another one on every restart".into(),
            );
        }
        for (name, backend) in &self.backends {
            check_backend_name(name)?;
            check_name("deployment", &backend.deployment)?;
            check_name("revision", &backend.revision)?;
        }
        self.routes(&BTreeMap::new(), BTreeMap::new())
            .validate()
            .map_err(|error| match error {
                router::Error::UnknownDeployment { name, known } => format!(
                    "`{name}` is not one of its backends ({})",
                    names_or_none(&known)
                ),
                other => other.to_string(),
            })
    }

    /// The router's routes, with these addresses for the backends (none for the others)
    /// and these health paths (backend → path, for those not on `/healthz`).
    pub(super) fn routes(
        &self,
        addrs: &BTreeMap<String, Vec<SocketAddr>>,
        health: BTreeMap<String, String>,
    ) -> router::Routes {
        router::Routes {
            deployments: self
                .backends
                .keys()
                .map(|name| (name.clone(), addrs.get(name).cloned().unwrap_or_default()))
                .collect(),
            weights: self.weights.clone(),
            mirror: self.mirror.clone(),
            key_sha256: self.key_sha256.clone(),
            health,
            capture: self.capture.clone(),
            // By revision: a promoted revision takes its deployment's name, not the
            // requests the revision it replaces answered.
            counter_keys: self
                .backends
                .iter()
                .map(|(name, b)| (name.clone(), format!("{}@{}", b.deployment, b.revision)))
                .collect(),
        }
    }

    pub(super) fn weight(&self, backend: &str) -> u32 {
        self.weights.get(backend).copied().unwrap_or(0)
    }
}

/// Backend names travel in the pin header and log lines: letters, digits, `.`, `_`, `-`,
/// `@`, not starting with `.`.
fn check_backend_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the backend name {name:?} must be 1 to {NAME_MAX} letters, digits, `.`, `_`, `-` \
             or `@`, not starting with `.`"
        ))
    }
}

/// One backend of a router, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub deployment: String,
    pub revision: String,
    /// Replicas the supervisor has for that revision.
    pub replicas: u32,
    /// Of which Ready.
    pub ready_replicas: u32,
    /// The router's counters, cumulative since the router was bound.
    pub requests: u64,
    pub errors: u64,
    /// Requests per second over about the last 10 s.
    pub requests_per_s: f64,
    /// The revision's autoscaling, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<ScaleSpec>,
    /// What the autoscaler did to it, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<ScaleChange>,
}

/// One endpoint's router, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub endpoint: String,
    pub listen: SocketAddr,
    /// Whether the router is bound and answering (false e.g. after a daemon restart found
    /// the port taken).
    pub serving: bool,
    /// Why it is not serving.
    pub error: Option<String>,
    pub backends: BTreeMap<String, BackendStatus>,
    pub weights: Weights,
    pub mirror: Option<Mirror>,
    /// Whether requests must carry a key.
    pub auth: bool,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The route the routing unit tests use.
    pub(in crate::backend::local::supervisor::routing) fn spec() -> RouteSpec {
        RouteSpec {
            endpoint: "risk-api".into(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            backends: [
                ("blue".to_string(), RouteBackend::new("blue", "v1")),
                ("green@v2".to_string(), RouteBackend::new("green", "v2")),
            ]
            .into(),
            weights: [("blue".to_string(), 90), ("green@v2".to_string(), 10)].into(),
            mirror: None,
            key_sha256: None,
            capture: None,
        }
    }

    #[test]
    fn route_specs_are_checked() {
        spec().validate().unwrap();
        let cases: Vec<(RouteSpec, &str)> = vec![
            (
                RouteSpec {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    ..spec()
                },
                "must name a port",
            ),
            (
                RouteSpec {
                    endpoint: "a/b".into(),
                    ..spec()
                },
                "endpoint name",
            ),
            (
                RouteSpec {
                    backends: [("blue green".to_string(), RouteBackend::new("blue", "v1"))].into(),
                    weights: Weights::new(),
                    ..spec()
                },
                "backend name",
            ),
            (
                RouteSpec {
                    weights: [("blue".to_string(), 90)].into(),
                    ..spec()
                },
                "add up to 100 (or 0), got 90",
            ),
            (
                RouteSpec {
                    weights: [("red".to_string(), 100)].into(),
                    ..spec()
                },
                "`red` is not one of its backends (blue, green@v2)",
            ),
            (
                RouteSpec {
                    mirror: Some(Mirror {
                        deployment: "green@v2".into(),
                        percent: 101,
                    }),
                    ..spec()
                },
                "at most 100 %",
            ),
            (
                RouteSpec {
                    key_sha256: Some("not-a-digest".into()),
                    ..spec()
                },
                "SHA-256 of the key as 64 hex digits",
            ),
        ];
        for (spec, expected) in cases {
            let error = spec.validate().unwrap_err();
            assert!(matches!(error, Error::InvalidRoute { .. }), "{error:?}");
            let message = error.to_string();
            assert!(
                message.starts_with("invalid route for endpoint `"),
                "{message}"
            );
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }
}

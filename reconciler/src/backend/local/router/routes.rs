//! What a router is told: its [`Routes`] (deployments, weights, mirror, key digest), with
//! their checks, and the [`RouterOptions`] it starts with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::parse_digest;
use super::{Error, Result};
use crate::manifest::DEFAULT_HEALTH_PATH;
use crate::rollout::Weights;
use crate::workload::model_server;

/// Where requests go: the deployments, their weights, an optional mirror, and the key
/// callers must present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Deployment name → the addresses of its replicas.
    pub deployments: BTreeMap<String, Vec<SocketAddr>>,
    /// Deployment name → percent of the requests, summing to 100 (or 0: no traffic).
    /// Deployments not named get none.
    pub weights: Weights,
    pub mirror: Option<Mirror>,
    /// When set, every request must carry `Authorization: Bearer KEY` where the SHA-256
    /// of KEY, in hex, is this; others are answered 401. Only the digest is held, so the
    /// key itself is never stored or logged.
    pub key_sha256: Option<String>,
    /// Deployment name → the path its replicas answer 200 on once ready, for those not
    /// on [`DEFAULT_HEALTH_PATH`] (a deployment's own serving process may use another).
    pub health: BTreeMap<String, String>,
    /// A share of the weighted requests' bodies written to files, for input-drift
    /// monitoring.
    pub capture: Option<super::Capture>,
    /// Deployment name → the key its counters are kept under, for a name that is not its
    /// own key. The supervisor keys them by revision (`blue@3f9a…`), so that when a
    /// promoted revision takes its deployment's name, the requests each revision answered
    /// stay its own. Counters are cumulative per key, across route changes.
    pub counter_keys: BTreeMap<String, String>,
}

impl Routes {
    /// The key deployment `name`'s counters are kept under.
    pub fn counter_key<'a>(&'a self, name: &'a str) -> &'a str {
        self.counter_keys.get(name).map_or(name, String::as_str)
    }

    /// The readiness path of a deployment's replicas.
    pub fn health_path(&self, deployment: &str) -> &str {
        self.health
            .get(deployment)
            .map_or(DEFAULT_HEALTH_PATH, String::as_str)
    }
}

impl Routes {
    /// Checks that the weights sum to 100 (or 0) and name deployments, that the mirror
    /// names a deployment and is at most 100 %, and that the key digest is SHA-256 hex.
    pub fn validate(&self) -> Result<()> {
        let unknown = |name: &str| Error::UnknownDeployment {
            name: name.to_string(),
            known: self.deployments.keys().cloned().collect(),
        };
        let sum: u64 = self.weights.values().map(|w| u64::from(*w)).sum();
        if sum != 0 && sum != 100 {
            return Err(Error::BadWeights { sum });
        }
        if let Some(name) = self
            .weights
            .keys()
            .find(|name| !self.deployments.contains_key(*name))
        {
            return Err(unknown(name));
        }
        if let Some(mirror) = &self.mirror {
            if !self.deployments.contains_key(&mirror.deployment) {
                return Err(unknown(&mirror.deployment));
            }
            if mirror.percent > 100 {
                return Err(Error::BadMirror {
                    deployment: mirror.deployment.clone(),
                    percent: mirror.percent,
                });
            }
        }
        if let Some(digest) = &self.key_sha256 {
            parse_digest(digest)?;
        }
        Ok(())
    }
}

/// A share of the weighted requests copied to one deployment, whose answers are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub deployment: String,
    /// 0 to 100.
    pub percent: u32,
}

/// Where to listen, the first routes, and the router's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterOptions {
    /// The address to listen on; port 0 picks a free port (see [`Router::local_addr`]).
    pub listen: SocketAddr,
    pub routes: Routes,
    /// Requests with a larger body are answered 413.
    pub max_body_bytes: usize,
    /// How long a replica may take to accept a connection before the next one is tried.
    pub connect_timeout: Duration,
    /// How long a replica may take to answer (to the response headers) before the request
    /// is answered 504. `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// How long a replica may take to answer its health path in [`Handle::ready`].
    pub probe_timeout: Duration,
    /// How long a replica that refused a connection is skipped (it is still tried when
    /// every replica of its deployment is skipped).
    pub eject_for: Duration,
    /// Mirror copies in flight at most; more are skipped.
    pub max_mirror_in_flight: usize,
    /// Worker threads, each accepting and serving its own connections (nginx's
    /// `worker_processes`); by default one per core, at most 4.
    pub workers: usize,
}

impl RouterOptions {
    /// Returns options with the default limits.
    pub fn new(listen: SocketAddr, routes: Routes) -> Self {
        RouterOptions {
            listen,
            routes,
            max_body_bytes: model_server::DEFAULT_MAX_BODY_BYTES,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Some(Duration::from_secs(60)),
            probe_timeout: Duration::from_secs(1),
            eject_for: Duration::from_secs(2),
            max_mirror_in_flight: 64,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::backend::local::router::table::Table;

    pub(crate) fn weights(pairs: &[(&str, u32)]) -> Weights {
        pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    pub(crate) fn routes() -> Routes {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Routes {
            deployments: [
                ("blue".to_string(), vec![addr]),
                ("green".to_string(), vec![addr]),
            ]
            .into(),
            weights: weights(&[("blue", 100)]),
            mirror: None,
            key_sha256: None,
            health: BTreeMap::new(),
            capture: None,
            counter_keys: BTreeMap::new(),
        }
    }

    #[test]
    fn routes_are_checked() {
        let build = |routes: Routes| Table::build(routes, None, &mut BTreeMap::new());
        assert!(build(routes()).is_ok());
        let e = build(Routes {
            weights: weights(&[("blue", 60), ("green", 60)]),
            ..routes()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "weights must add up to 100 (or 0), got 120");
        let e = build(Routes {
            weights: weights(&[("blu", 100)]),
            ..routes()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no deployment named `blu` behind this router; it has: blue, green"
        );
        let mirror = |deployment: &str, percent| {
            build(Routes {
                mirror: Some(Mirror {
                    deployment: deployment.into(),
                    percent,
                }),
                ..routes()
            })
        };
        assert!(mirror("green", 50).is_ok());
        assert!(matches!(
            mirror("green", 101),
            Err(Error::BadMirror { percent: 101, .. })
        ));
        assert!(matches!(
            mirror("red", 10),
            Err(Error::UnknownDeployment { .. })
        ));
    }
}

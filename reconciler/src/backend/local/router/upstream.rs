//! The router's shared state, and how it sends a request to a deployment's replicas:
//! round-robin, ejecting replicas that refuse connections, retrying only connection
//! failures, with timeouts; and the answers it gives when none of that works.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::json;
use tokio::sync::Semaphore;

use super::counters::Counters;
use super::pool::{Pool, SendError};
use super::table::{Deployment, Replica, Table};
use super::{Result, RouterOptions, Routes};
use crate::diagnostics::error_chain;

/// State shared by the request handler and the handles.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) options: RouterOptions,
    pub(super) local_addr: SocketAddr,
    /// The routes in force; requests take a reference and keep it to the end.
    pub(super) table: RwLock<Arc<Table>>,
    /// Counts the tables put in force, so that workers see a change with one load.
    pub(super) generation: AtomicU64,
    /// Every deployment's counters, by name, kept across route changes.
    pub(super) counters: Mutex<BTreeMap<String, Arc<Counters>>>,
    /// For readiness probes, which run on the caller's runtime (requests go through each
    /// worker's own [`Pool`]).
    pub(super) client: Client<HttpConnector, Full<Bytes>>,
    pub(super) mirror_slots: Arc<Semaphore>,
    /// The zero of [`Replica::ejected_until`](super::table::Replica::ejected_until).
    pub(super) epoch: Instant,
}

impl Shared {
    pub(super) fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Builds a table from the current routes changed by `change`, and puts it in force.
    pub(super) fn update(&self, change: impl FnOnce(&Routes) -> Result<Routes>) -> Result<()> {
        // Held while building, so that concurrent changes apply one after the other.
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let routes = change(&table.routes)?;
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let new = Table::build(routes, Some(&table), &mut counters)?;
        *table = Arc::new(new);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends the request to one of the deployment's replicas over `pool`, trying the
    /// next one when a replica does not accept the connection.
    pub(super) async fn forward(
        &self,
        pool: &Rc<Pool>,
        deployment: &Deployment,
        outgoing: &Outgoing,
    ) -> Result<Response<hyper::body::Incoming>, Failure> {
        let n = deployment.replicas.len();
        if n == 0 {
            return Err(Failure::NoReplicas);
        }
        let first = deployment.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut order: Vec<&Replica> = (0..n)
            .map(|i| &deployment.replicas[first.wrapping_add(i) % n])
            .collect();
        // Replicas that refused recently go last (stable: round-robin order otherwise).
        order.sort_by_key(|r| r.ejected_until.load(Ordering::Relaxed) > now);

        let mut refused = Vec::new();
        let mut last_error = None;
        for replica in order {
            let Some(request) = outgoing.to(replica.addr) else {
                return Err(Failure::BadRequestTarget);
            };
            let sent = pool.send(replica.addr, request);
            let result = match self.options.request_timeout {
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(Failure::Timeout {
                            addr: replica.addr,
                            after: limit,
                        })
                    }
                },
                None => sent.await,
            };
            match result {
                Ok(response) => {
                    replica.ejected_until.store(0, Ordering::Relaxed);
                    return Ok(response);
                }
                // The request never left: safe to send elsewhere.
                Err(SendError::Connect(error)) => {
                    let until = self
                        .now_ms()
                        .saturating_add(duration_ms(self.options.eject_for));
                    replica.ejected_until.store(until, Ordering::Relaxed);
                    refused.push(replica.addr);
                    last_error = Some(error);
                }
                Err(SendError::Failed(error)) => {
                    return Err(Failure::Failed {
                        addr: replica.addr,
                        reason: error_chain(&error),
                    })
                }
            }
        }
        Err(Failure::Refused {
            addrs: refused,
            reason: last_error.map(|e| error_chain(&e)).unwrap_or_default(),
        })
    }

    /// Whether `GET <path>` on `addr` answers 200 in time.
    pub(super) async fn probe(&self, addr: SocketAddr, path: &str) -> bool {
        let Ok(uri) = Uri::try_from(format!("http://{addr}{path}")) else {
            return false;
        };
        let mut request = axum::http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        let probe = async {
            match self.client.request(request).await {
                Ok(response) => {
                    let ok = response.status() == StatusCode::OK;
                    // Read to the end, so the connection can be reused.
                    let _ = response.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            }
        };
        tokio::time::timeout(self.options.probe_timeout, probe)
            .await
            .unwrap_or(false)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request to forward, with its body in memory so that it can be sent more than once.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    pub(super) method: Method,
    pub(super) path: PathAndQuery,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Outgoing {
    /// Returns the request for one replica (origin-form, with a `host` header: the
    /// client's, else the replica's address), or `None` if no URI can be made for it.
    fn to(&self, addr: SocketAddr) -> Option<axum::http::Request<Full<Bytes>>> {
        let uri = Uri::from(self.path.clone());
        let mut request = axum::http::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        if !request.headers().contains_key(header::HOST) {
            let host = HeaderValue::try_from(addr.to_string()).ok()?;
            request.headers_mut().insert(header::HOST, host);
        }
        Some(request)
    }
}

/// Why a request got no answer from its deployment.
#[derive(Debug)]
pub(super) enum Failure {
    NoReplicas,
    BadRequestTarget,
    Refused {
        addrs: Vec<SocketAddr>,
        reason: String,
    },
    Failed {
        addr: SocketAddr,
        reason: String,
    },
    Timeout {
        addr: SocketAddr,
        after: Duration,
    },
}

impl Failure {
    pub(super) fn into_response(self, deployment: &str) -> Response {
        let (status, message) = match self {
            Failure::NoReplicas => (
                StatusCode::BAD_GATEWAY,
                format!("deployment `{deployment}` has no replicas"),
            ),
            Failure::BadRequestTarget => (
                StatusCode::BAD_GATEWAY,
                format!("cannot make a request URI for deployment `{deployment}`"),
            ),
            Failure::Refused { addrs, reason } => {
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                (
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "no replica of deployment `{deployment}` accepted the connection ({}): \
                         {reason}",
                        addrs.join(", ")
                    ),
                )
            }
            Failure::Failed { addr, reason } => (
                StatusCode::BAD_GATEWAY,
                format!("replica {addr} of deployment `{deployment}` failed: {reason}"),
            ),
            Failure::Timeout { addr, after } => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "replica {addr} of deployment `{deployment}` did not answer within {}",
                    humantime::format_duration(after)
                ),
            ),
        };
        (
            status,
            Json(json!({"error": message, "deployment": deployment})),
        )
            .into_response()
    }
}

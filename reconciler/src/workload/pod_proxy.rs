//! `cairn pod-proxy`: an endpoint's front door in each of its pods where nothing else
//! stands in the request path (a Kubernetes pod, whatever its server image). It listens
//! beside the server in the pod and passes requests on to it, and:
//! - with a key ([`PodProxyOptions::key_file`]), answers 401 to a request without
//!   `Authorization: Bearer <key>` (checked against the key file's SHA-256, in constant
//!   time, [`super::bearer`]), the `Authorization` header removed from the others so the
//!   key never reaches the server or its logs;
//! - with a capture ([`PodProxyOptions::capture`]), hands one in every `every` requests'
//!   bodies (as [`super::capture`] lines: bodies only, never headers) to a queue, without
//!   waiting: a full queue drops the copy. The CLI uploads the queue to the workspace
//!   store for `cairn drift`.
//!
//! `GET /healthz` and `GET /metrics` are passed on without a key and never captured, as
//! probes and the rollout gates need (request counts and latencies, no payloads). It
//! holds the key's digest only; the key file is read once at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::net::TcpListener;

use super::bearer::{authorize, key_digest, refuse};
use super::capture::Sampler;

/// Errors from starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the key file `{}`", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file `{}` is empty", path.display())]
    EmptyKey { path: PathBuf },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the proxy stopped")]
    Serve(#[source] std::io::Error),
}

/// What `cairn pod-proxy` is told.
#[derive(Debug, Clone)]
pub struct PodProxyOptions {
    pub listen: SocketAddr,
    /// The server it fronts (in the pod: `127.0.0.1:<port>`).
    pub upstream: SocketAddr,
    /// A file holding the key requests must carry (a mounted Secret); surrounding
    /// whitespace is ignored. None: requests are not authenticated here.
    pub key_file: Option<PathBuf>,
    pub capture: Option<ProxyCapture>,
}

/// Which requests a pod proxy captures, and where it hands them.
#[derive(Debug, Clone)]
pub struct ProxyCapture {
    /// One in this many requests is captured.
    pub every: u32,
    /// The deployment the pod serves, recorded with each request.
    pub deployment: String,
    /// Where capture lines go; the proxy never waits on it.
    pub queue: tokio::sync::mpsc::Sender<String>,
}

/// The most of a request body the proxy reads to capture it; a larger one is refused
/// (413), as `cairn serve` refuses it.
const MAX_CAPTURED_BODY: usize = super::model_server::DEFAULT_MAX_BODY_BYTES;

struct Shared {
    digest: Option<[u8; 32]>,
    upstream: Authority,
    client: Client<HttpConnector, Body>,
    capture: Option<(ProxyCapture, Sampler)>,
}

/// A bound proxy, not yet answering.
pub struct PodProxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl PodProxy {
    /// Reads the key (if any) and binds the listening socket.
    pub async fn bind(options: &PodProxyOptions) -> Result<PodProxy, Error> {
        let digest = match &options.key_file {
            Some(path) => Some(read_key(path)?),
            None => None,
        };
        let addr = options.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let upstream = Authority::try_from(options.upstream.to_string().as_str())
            .expect("a socket address is an authority");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let capture = options.capture.clone().map(|c| {
            let sampler = Sampler::new(c.every);
            (c, sampler)
        });
        Ok(PodProxy {
            listener,
            shared: Arc::new(Shared {
                digest,
                upstream,
                client,
                capture,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Answers until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(self.shared);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// The digest of the key in `path`.
fn read_key(path: &Path) -> Result<[u8; 32], Error> {
    let key = std::fs::read(path).map_err(|source| Error::KeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    if key.trim_ascii().is_empty() {
        return Err(Error::EmptyKey {
            path: path.to_path_buf(),
        });
    }
    Ok(key_digest(&key))
}

async fn forward(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    // Probes and the rollout gates' scrape read these without a key.
    let open = request.method() == axum::http::Method::GET
        && matches!(request.uri().path(), "/healthz" | "/metrics");
    if !open {
        if let Some(digest) = &shared.digest {
            if let Err(message) = authorize(request.headers(), digest) {
                return refuse(request.into_body(), message).await;
            }
        }
        if let Some((capture, sampler)) = &shared.capture {
            if sampler.take() {
                let (parts, body) = request.into_parts();
                let Ok(body) = axum::body::to_bytes(body, MAX_CAPTURED_BODY).await else {
                    return (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Json(json!({ "error": format!("the request body is over {MAX_CAPTURED_BODY} bytes") })),
                    )
                        .into_response();
                };
                if let Some(line) = super::capture::line(&capture.deployment, &body) {
                    let _ = capture.queue.try_send(line);
                }
                request = Request::from_parts(parts, Body::from(body));
            }
        }
    }
    request.headers_mut().remove(header::AUTHORIZATION);
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(shared.upstream.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some("/".parse().expect("a valid path"));
    }
    *request.uri_mut() = match Uri::from_parts(parts) {
        Ok(uri) => uri,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad request URI").into_response(),
    };
    match shared.client.request(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": format!("the server in this pod did not answer: {e}") })),
        )
            .into_response(),
    }
}

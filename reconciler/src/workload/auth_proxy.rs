//! `cairn auth-proxy`: an endpoint's front door where nothing else authenticates (a
//! Kubernetes pod, whatever its server image). It listens beside the server in the
//! pod, answers 401 to a request without `Authorization: Bearer <key>` (checked against
//! the key file's SHA-256, in constant time, [`super::bearer`]), and passes the others
//! on to the server, the `Authorization` header removed so the key never reaches the
//! server or its logs. `GET /healthz` and `GET /metrics` are passed on without a key,
//! as probes and the rollout gates need (request counts and latencies, no payloads).
//!
//! It holds the key's digest only; the key file is read once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
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

/// What `cairn auth-proxy` is told.
#[derive(Debug, Clone)]
pub struct AuthProxyOptions {
    pub listen: SocketAddr,
    /// The server it protects (in the pod: `127.0.0.1:<port>`).
    pub upstream: SocketAddr,
    /// A file holding the key (a mounted Secret); surrounding whitespace is ignored.
    pub key_file: PathBuf,
}

struct Shared {
    digest: [u8; 32],
    upstream: Authority,
    client: Client<HttpConnector, Body>,
}

/// A bound proxy, not yet answering.
pub struct AuthProxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl AuthProxy {
    /// Reads the key and binds the listening socket.
    pub async fn bind(options: &AuthProxyOptions) -> Result<AuthProxy, Error> {
        let key = std::fs::read(&options.key_file).map_err(|source| Error::KeyFile {
            path: options.key_file.clone(),
            source,
        })?;
        if key.trim_ascii().is_empty() {
            return Err(Error::EmptyKey {
                path: options.key_file.clone(),
            });
        }
        let digest = key_digest(&key);
        drop(key);
        let addr = options.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let upstream = Authority::try_from(options.upstream.to_string().as_str())
            .expect("a socket address is an authority");
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(AuthProxy {
            listener,
            shared: Arc::new(Shared {
                digest,
                upstream,
                client,
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

async fn forward(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    // Probes and the rollout gates' scrape read these without a key.
    let open = request.method() == axum::http::Method::GET
        && matches!(request.uri().path(), "/healthz" | "/metrics");
    if !open {
        if let Err(message) = authorize(request.headers(), &shared.digest) {
            return refuse(request.into_body(), message).await;
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

//! The reference model server: what `cairn serve` runs, and what an endpoint's deployments
//! are made of.
//!
//! Flow: [`bind`] takes the port first, so a port in use fails at once and before any work;
//! [`Server::run`] then answers requests while it loads `model.safetensors` on a blocking
//! thread. Until the model is loaded, `GET /healthz` answers 503 `{"status":"loading"}`
//! (a readiness probe holds traffic back) and `POST /v1/predict` answers 503; once loaded,
//! `/healthz` answers 200 `{"status":"ready","model":NAME,"version":VERSION}`.
//!
//! Routes:
//! - `POST /v1/predict`: a body `{"rows": [{"feature": number, ...}, ...]}` or a bare array
//!   of rows → `{"scores": [p, ...], "model": NAME, "version": VERSION}`, one probability
//!   per row, computed exactly as [`Model::predict`] does. Keys the model does not use are
//!   ignored. A body that is not JSON, a row without a feature or with a non-numeric one is
//!   400 `{"error": "...", "row": i}` (`row`, 0-based, only when one row is at fault); a body
//!   over [`ServeOptions::max_body_bytes`] or with more than [`ServeOptions::max_rows`] rows
//!   is 413.
//! - `GET /healthz`: readiness, as above.
//! - `GET /metrics`: Prometheus text exposition (format 0.0.4): `cairn_requests_total{code}`,
//!   `cairn_request_errors_total`, the `cairn_request_duration_seconds` histogram (all of
//!   prediction requests only, so probes and scrapes do not dilute them),
//!   `cairn_model_ready` and `cairn_model_info{model,version}`.
//!
//! Every response carries [`DEPLOYMENT_HEADER`] with the deployment's name, so a router in
//! front of several deployments (blue-green) can tell which one answered.
//!
//! Guarantees:
//! - `/healthz` never says ready unless the model is loaded. A model that fails to load
//!   stops the server (requests in flight finish) and [`Server::run`] returns the error.
//! - Graceful shutdown: when the `shutdown` future completes, the listener closes, idle
//!   connections are closed, and requests in flight run to completion before `run` returns.
//! - Bad input is an error response, never a panic; no terminal I/O (the CLI watches
//!   [`Server::status`] to print progress).
//!
//! Caveats: HTTP/1.1 only, no TLS and no authentication (put it behind a proxy for those);
//! scoring is on the request's task, which is fine for a logistic regression. At shutdown
//! an idle kept-alive connection is closed at once, so a client that sends on it at that
//! very moment sees the connection close: a router in front should stop routing to a
//! deployment (or retry) before stopping it.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::model::{self, Model, MODEL_FILE};
use super::served::{self, Served};

mod inference;
use crate::diagnostics::error_chain;

/// The response header that names the deployment, on every response.
pub const DEPLOYMENT_HEADER: &str = "x-cairn-deployment";

/// The default limit on a request body: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The default limit on rows in one prediction request.
pub const DEFAULT_MAX_ROWS: usize = 10_000;

/// Upper bounds (seconds) of the latency histogram's buckets, besides `+Inf`.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The media type of `/metrics`.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors from starting the server or loading its model. Bad requests are not errors
/// here: they are answered (4xx) and counted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the deployment name `{name}` cannot be sent in the `{DEPLOYMENT_HEADER}` header; \
         use visible ASCII characters"
    )]
    InvalidName { name: String },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the model from `{}`", dir.display())]
    Load {
        dir: PathBuf,
        // Boxed: the workload error is large and this one travels in every `Result`.
        #[source]
        source: Box<super::Error>,
    },
    #[error("the model loader for `{}` stopped unexpectedly", dir.display())]
    LoadTask {
        dir: PathBuf,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("the server on {addr} failed")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to serve, where, and under which name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// The folder holding `model.safetensors`.
    pub model_dir: PathBuf,
    /// The address to listen on; port 0 picks a free port (see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// The deployment's name (e.g. `blue`): sent in [`DEPLOYMENT_HEADER`], as `model` in
    /// responses and as the `model` label of `cairn_model_info`.
    pub name: String,
    /// The model version to report. `None`: the model folder's name when it looks like a
    /// version (see [`version_from_dir`]), else a content hash of the model file.
    pub version: Option<String>,
    /// Requests with a larger body are answered 413.
    pub max_body_bytes: usize,
    /// Prediction requests with more rows are answered 413.
    pub max_rows: usize,
    /// The model's name in the Open Inference Protocol's routes
    /// (`/v2/models/{name}/infer`); [`ServeOptions::name`] when absent. Name it after the
    /// model, not the deployment, so that clients keep their URL across a rollout.
    pub model_name: Option<String>,
}

impl ServeOptions {
    /// Returns options with the default limits and no explicit version.
    pub fn new(model_dir: impl Into<PathBuf>, listen: SocketAddr, name: impl Into<String>) -> Self {
        ServeOptions {
            model_dir: model_dir.into(),
            listen,
            name: name.into(),
            version: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_rows: DEFAULT_MAX_ROWS,
            model_name: None,
        }
    }

    /// The model's name in the inference protocol's routes.
    pub fn model_name(&self) -> &str {
        self.model_name.as_deref().unwrap_or(&self.name)
    }
}

/// Where the server stands; watch it with [`Server::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Listening; the model is being read.
    Loading,
    /// The model is loaded and predictions are answered.
    Ready {
        version: String,
        /// What the model reads: the reference model's feature names in tensor order,
        /// an ONNX model's input names.
        features: Vec<String>,
    },
    /// The model could not be loaded; the server is shutting down.
    Failed { reason: String },
}

/// Returns the folder's name when it looks like a model version: 7 to 64 lowercase hex
/// digits (Cairn's run and content ids, Git hashes) or a number with an optional `v` and
/// dot-separated parts (`3`, `v2`, `1.4.0`).
pub fn version_from_dir(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    let hex = (7..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let numbered = {
        let digits = name.strip_prefix('v').unwrap_or(name);
        !digits.is_empty()
            && digits
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    };
    (hex || numbered).then(|| name.to_string())
}

/// Binds `options.listen`. Nothing is loaded yet: [`Server::run`] does that while serving.
pub async fn bind(options: ServeOptions) -> Result<Server> {
    let deployment = HeaderValue::from_str(&options.name).map_err(|_| Error::InvalidName {
        name: options.name.clone(),
    })?;
    let addr = options.listen;
    let bind_error = |source| Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let (status, _) = watch::channel(Status::Loading);
    let shared = Arc::new(Shared {
        options,
        deployment,
        loaded: OnceLock::new(),
        load_error: Mutex::new(None),
        status,
        metrics: Metrics::new(),
    });
    Ok(Server {
        listener,
        local_addr,
        shared,
    })
}

/// Binds, then serves until `shutdown` completes (see [`Server::run`]).
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    bind(options).await?.run(shutdown).await
}

/// A bound server, not yet loading or answering.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Server {
    /// The address actually bound (the chosen port when [`ServeOptions::listen`] had 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns a receiver of the server's [`Status`], which starts at `Loading`.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Answers requests and loads the model, until `shutdown` completes or the model fails
    /// to load. Either way the listener closes first and requests in flight finish.
    /// Returns the load error, if loading failed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            listener,
            local_addr,
            shared,
        } = self;

        let loader = tokio::spawn(load_into(shared.clone()));
        let mut status = shared.status.subscribe();
        let failed = async move {
            if status
                .wait_for(|s| matches!(s, Status::Failed { .. }))
                .await
                .is_err()
            {
                // The sender lives as long as the router: never without a failure.
                std::future::pending::<()>().await;
            }
        };
        let signal = async move {
            tokio::select! {
                () = shutdown => {}
                () = failed => {}
            }
        };

        let served = axum::serve(listener, router(shared.clone()))
            .with_graceful_shutdown(signal)
            .await;
        // A load still running (shutdown came first) is left to finish on its own thread.
        loader.abort();
        served.map_err(|source| Error::Serve {
            addr: local_addr,
            source,
        })?;
        let load_error = shared
            .load_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match load_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// State shared by the handlers.
#[derive(Debug)]
struct Shared {
    options: ServeOptions,
    deployment: HeaderValue,
    /// Set once, when the model is loaded; read lock-free by every prediction.
    loaded: OnceLock<Loaded>,
    load_error: Mutex<Option<Error>>,
    status: watch::Sender<Status>,
    metrics: Metrics,
}

#[derive(Debug)]
struct Loaded {
    served: Served,
    version: String,
}

/// Loads the model on a blocking thread and publishes it (or the failure).
async fn load_into(shared: Arc<Shared>) {
    let dir = shared.options.model_dir.clone();
    let version = shared.options.version.clone();
    let task = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || load(&dir, version))
    };
    let result = match task.await {
        Ok(Ok(loaded)) => Ok(loaded),
        Ok(Err(source)) => Err(Error::Load {
            dir,
            source: Box::new(source),
        }),
        Err(source) => Err(Error::LoadTask { dir, source }),
    };
    match result {
        Ok(loaded) => {
            let status = Status::Ready {
                version: loaded.version.clone(),
                features: loaded.served.input_names(),
            };
            // `run` spawns one loader, so the cell is empty.
            let _ = shared.loaded.set(loaded);
            shared.status.send_replace(status);
        }
        Err(error) => {
            let reason = error_chain(&error);
            *shared
                .load_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
            shared.status.send_replace(Status::Failed { reason });
        }
    }
}

/// Loads the model a folder holds: `model.safetensors` (the reference model) or
/// `model.onnx`.
fn load(dir: &Path, version: Option<String>) -> super::Result<Loaded> {
    let (served, bytes) = served::load(dir, served::model_file(dir).unwrap_or(MODEL_FILE))?;
    let version = version
        .or_else(|| version_from_dir(dir))
        .unwrap_or_else(|| crate::content::short_hash(&bytes));
    Ok(Loaded { served, version })
}

fn router(shared: Arc<Shared>) -> Router {
    let predict_route = post(predict)
        .layer(DefaultBodyLimit::max(shared.options.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(shared.clone(), track));
    let infer_route = || {
        post(inference::infer)
            .layer(DefaultBodyLimit::max(shared.options.max_body_bytes))
            .route_layer(middleware::from_fn_with_state(shared.clone(), track))
    };
    Router::new()
        .route("/v1/predict", predict_route)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v2", get(inference::server_metadata))
        .route("/v2/health/live", get(inference::live))
        .route("/v2/health/ready", get(inference::ready))
        .route("/v2/models/{name}", get(inference::model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(inference::model_metadata_at),
        )
        .route("/v2/models/{name}/ready", get(inference::model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(inference::model_ready_at),
        )
        .route("/v2/models/{name}/infer", infer_route())
        .route("/v2/models/{name}/versions/{version}/infer", infer_route())
        .fallback(not_found)
        .layer(middleware::map_response_with_state(
            shared.clone(),
            add_deployment_header,
        ))
        .with_state(shared)
}

async fn add_deployment_header(
    State(shared): State<Arc<Shared>>,
    mut response: Response,
) -> Response {
    response
        .headers_mut()
        .insert(DEPLOYMENT_HEADER, shared.deployment.clone());
    response
}

/// Counts and times prediction requests, from arrival to response.
async fn track(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let response = next.run(request).await;
    shared
        .metrics
        .record(response.status().as_u16(), start.elapsed());
    response
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let body = match &*shared.status.borrow() {
        Status::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "loading"}),
        ),
        Status::Ready { version, .. } => (
            StatusCode::OK,
            json!({"status": "ready", "model": shared.options.name, "version": version}),
        ),
        Status::Failed { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "failed", "error": reason}),
        ),
    };
    (body.0, Json(body.1)).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = format!(
        "no route for {method} {}; the routes are POST /v1/predict, GET /healthz, GET /metrics, and the Open Inference Protocol's under /v2 (POST /v2/models/{{name}}/infer)",
        uri.path()
    );
    RequestError::new(StatusCode::NOT_FOUND, message).into_response()
}

#[derive(Serialize)]
struct Prediction<'a> {
    scores: Vec<f64>,
    model: &'a str,
    version: &'a str,
}

async fn predict(
    State(shared): State<Arc<Shared>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let Some(loaded) = shared.loaded.get() else {
        let error = RequestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading; retry once /healthz answers ready",
        );
        return error.into_response();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!(
                "the request body is larger than the limit of {} bytes; send fewer rows per \
                 request",
                shared.options.max_body_bytes
            );
            return RequestError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
        }
        Err(rejection) => {
            let message = format!("cannot read the request body: {}", rejection.body_text());
            return RequestError::new(rejection.status(), message).into_response();
        }
    };
    let Served::Reference(model) = &loaded.served else {
        let message = format!(
            "this server serves a {} model, which /v1/predict does not speak; use the Open Inference Protocol: POST /v2/models/{}/infer",
            loaded.served.platform(),
            shared.options.model_name()
        );
        return RequestError::new(StatusCode::NOT_FOUND, message).into_response();
    };
    match score(model, &body, shared.options.max_rows) {
        Ok(scores) => Json(Prediction {
            scores,
            model: &shared.options.name,
            version: &loaded.version,
        })
        .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let loaded = shared
        .loaded
        .get()
        .map(|l| (shared.options.name.as_str(), l.version.as_str()));
    let text = shared.metrics.render(loaded);
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// A request answered with an error status and `{"error": ..., "row": ...}`.
#[derive(Debug, Clone, PartialEq)]
struct RequestError {
    status: StatusCode,
    message: String,
    /// The 0-based row at fault, when there is one.
    row: Option<usize>,
}

impl RequestError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        RequestError {
            status,
            message: message.into(),
            row: None,
        }
    }

    fn bad_row(row: usize, message: String) -> Self {
        RequestError {
            status: StatusCode::BAD_REQUEST,
            message,
            row: Some(row),
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let body = match self.row {
            Some(row) => json!({"error": self.message, "row": row}),
            None => json!({"error": self.message}),
        };
        (self.status, Json(body)).into_response()
    }
}

const EXPECTED_BODY: &str =
    r#"expected {"rows": [{"feature": number, ...}, ...]} or an array of rows"#;

/// Returns one probability per row of a prediction body.
fn score(model: &Model, body: &[u8], max_rows: usize) -> Result<Vec<f64>, RequestError> {
    let bad = |message: String| RequestError::new(StatusCode::BAD_REQUEST, message);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(format!("the request body is empty; {EXPECTED_BODY}")));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the request body is not valid JSON ({e}); {EXPECTED_BODY}"
        ))
    })?;
    let rows = match &value {
        Value::Array(rows) => rows,
        Value::Object(object) => match object.get("rows") {
            Some(Value::Array(rows)) => rows,
            Some(other) => {
                return Err(bad(format!(
                    "`rows` is {}, not an array; {EXPECTED_BODY}",
                    describe(other)
                )))
            }
            None => return Err(bad(format!("the object has no `rows`; {EXPECTED_BODY}"))),
        },
        other => {
            return Err(bad(format!(
                "the body is {}; {EXPECTED_BODY}",
                describe(other)
            )))
        }
    };
    if rows.len() > max_rows {
        return Err(RequestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request has {} rows; at most {max_rows} are allowed per request",
                rows.len()
            ),
        ));
    }

    let mut standardized = vec![0.0; model.features.len()];
    let mut scores = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let Value::Object(row) = row else {
            return Err(RequestError::bad_row(
                i,
                format!(
                    "row {i} is {}; each row must be an object of feature values",
                    describe(row)
                ),
            ));
        };
        for (j, feature) in model.features.iter().enumerate() {
            let x = match row.get(feature) {
                Some(Value::Number(n)) => n.as_f64(),
                Some(other) => {
                    return Err(RequestError::bad_row(
                        i,
                        format!(
                            "row {i}: feature `{feature}` is {}; expected a number",
                            describe(other)
                        ),
                    ))
                }
                None => None,
            };
            let Some(x) = x else {
                return Err(RequestError::bad_row(
                    i,
                    format!(
                        "row {i} has no value for feature `{feature}`; the model needs: {}",
                        model.features.join(", ")
                    ),
                ));
            };
            standardized[j] = model::standardize(x, model.mean()[j], model.std()[j]);
        }
        // The same operations in the same order as `Model::predict`, without building a
        // map per row.
        let score = model::sigmoid(model.logit(&standardized));
        if !score.is_finite() {
            // Finite parameters can still overflow (a diverged fit): a fault of the
            // model version, not of the request.
            return Err(RequestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the model produced a non-finite score for row {i}; this model version is numerically broken"
                ),
            ));
        }
        scores.push(score);
    }
    Ok(scores)
}

/// Describes a JSON value for an error message: `a string ("x")`, `null`, ...
fn describe(value: &Value) -> String {
    const MAX: usize = 40;
    let mut text = value.to_string();
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    let kind = match value {
        Value::Null => return "null".to_string(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{kind} ({text})")
}

/// Request counters and the latency histogram, updated with relaxed atomics: each value
/// is exact, but one scrape may see a request in one counter and not yet in another.
#[derive(Debug)]
struct Metrics {
    /// Requests by status code, indexed by `code - 100` (codes 100..=599).
    codes: Box<[AtomicU64]>,
    errors: AtomicU64,
    /// Requests per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, code: u16, elapsed: Duration) {
        if let Some(counter) = usize::from(code)
            .checked_sub(100)
            .and_then(|i| self.codes.get(i))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if code >= 400 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Returns the text exposition; `model` is the deployment name and version once loaded.
    fn render(&self, model: Option<(&str, &str)>) -> String {
        let mut out = String::with_capacity(2048);
        // Writing to a `String` cannot fail.
        let _ = self.write(&mut out, model);
        out
    }

    fn write(&self, out: &mut String, model: Option<(&str, &str)>) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP cairn_requests_total Prediction requests (POST /v1/predict) answered, by \
             HTTP status code."
        )?;
        writeln!(out, "# TYPE cairn_requests_total counter")?;
        for (i, counter) in self.codes.iter().enumerate() {
            let code = i + 100;
            let n = counter.load(Ordering::Relaxed);
            // 200 and 400 are always present, so that rates start from zero.
            if n > 0 || code == 200 || code == 400 {
                writeln!(out, "cairn_requests_total{{code=\"{code}\"}} {n}")?;
            }
        }
        writeln!(
            out,
            "# HELP cairn_request_errors_total Prediction requests answered with a 4xx or 5xx \
             status."
        )?;
        writeln!(out, "# TYPE cairn_request_errors_total counter")?;
        writeln!(
            out,
            "cairn_request_errors_total {}",
            self.errors.load(Ordering::Relaxed)
        )?;

        writeln!(
            out,
            "# HELP cairn_request_duration_seconds Time to answer a prediction request, from \
             its arrival to its response."
        )?;
        writeln!(out, "# TYPE cairn_request_duration_seconds histogram")?;
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(le) => writeln!(
                    out,
                    "cairn_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                )?,
                None => writeln!(
                    out,
                    "cairn_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                )?,
            }
        }
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        writeln!(out, "cairn_request_duration_seconds_sum {sum}")?;
        // The count is the `+Inf` bucket, so the two always agree.
        writeln!(out, "cairn_request_duration_seconds_count {cumulative}")?;

        writeln!(
            out,
            "# HELP cairn_model_ready Whether the model is loaded and predictions are answered."
        )?;
        writeln!(out, "# TYPE cairn_model_ready gauge")?;
        writeln!(out, "cairn_model_ready {}", u8::from(model.is_some()))?;
        writeln!(
            out,
            "# HELP cairn_model_info The model served: the deployment name and the model \
             version."
        )?;
        writeln!(out, "# TYPE cairn_model_info gauge")?;
        if let Some((name, version)) = model {
            writeln!(
                out,
                "cairn_model_info{{model=\"{}\",version=\"{}\"}} 1",
                escape_label(name),
                escape_label(version)
            )?;
        }
        Ok(())
    }
}

/// Escapes a label value for the text format: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn model() -> Model {
        crate::workload::model::sample_model()
    }

    #[test]
    fn scores_match_predict_exactly() {
        let model = model();
        let body = br#"{"rows": [{"a": 12, "b": 3.5, "id": "x"}, {"b": -1e3, "a": 0.25}]}"#;
        let scores = score(&model, body, 10).unwrap();
        let rows = [[("a", 12.0), ("b", 3.5)], [("a", 0.25), ("b", -1e3)]];
        for (score, row) in scores.iter().zip(rows) {
            let row: BTreeMap<String, f64> = row.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            assert_eq!(*score, model.predict(&row).unwrap());
        }
        let bare = score(&model, br#"[{"a": 12, "b": 3.5}]"#, 10).unwrap();
        assert_eq!(bare, scores[..1]);
        assert_eq!(score(&model, b"[]", 10).unwrap(), Vec::<f64>::new());
    }

    #[test]
    fn bad_bodies_name_the_row() {
        let model = model();
        let err = |body: &str| score(&model, body.as_bytes(), 2).unwrap_err();

        let e = err(r#"{"rows": [{"a": 1, "b": 2}, {"a": 1}]}"#);
        assert_eq!((e.status, e.row), (StatusCode::BAD_REQUEST, Some(1)));
        assert_eq!(
            e.message,
            "row 1 has no value for feature `b`; the model needs: a, b"
        );
        let e = err(r#"[{"a": "7", "b": 2}]"#);
        assert_eq!(e.row, Some(0));
        assert_eq!(
            e.message,
            r#"row 0: feature `a` is a string ("7"); expected a number"#
        );
        let e = err(r#"[{"a": null, "b": 2}]"#);
        assert_eq!(e.message, "row 0: feature `a` is null; expected a number");
        let e = err(r#"[{"a": 1, "b": 2}, 5]"#);
        assert_eq!(e.row, Some(1));
        assert!(
            e.message.starts_with("row 1 is a number (5)"),
            "{}",
            e.message
        );

        for body in [
            "",
            "  ",
            "{",
            r#"{"rows": 3}"#,
            r#"{"row": []}"#,
            "42",
            "[1e999]",
        ] {
            let e = err(body);
            assert_eq!((e.status, e.row), (StatusCode::BAD_REQUEST, None), "{body}");
            assert!(e.message.contains(EXPECTED_BODY), "{body}: {}", e.message);
        }
        let e = err(r#"[{}, {}, {}]"#);
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("at most 2"), "{}", e.message);
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = format!(r#"[{{"a": "{}", "b": 1}}]"#, "é".repeat(100));
        let e = score(&model(), long.as_bytes(), 2).unwrap_err();
        assert!(
            e.message.contains('…') && e.message.len() < 150,
            "{}",
            e.message
        );
    }

    #[test]
    fn versions_from_folder_names() {
        let v = |name: &str| version_from_dir(Path::new("models/risk").join(name).as_path());
        assert_eq!(v("6b28a728a74d").as_deref(), Some("6b28a728a74d"));
        assert_eq!(v("v2").as_deref(), Some("v2"));
        assert_eq!(v("1.4.0").as_deref(), Some("1.4.0"));
        assert_eq!(v("3").as_deref(), Some("3"));
        for not in ["out", "model", "v", "1..2", "abc", "6B28A728A74D", "v1.x"] {
            assert_eq!(v(not), None, "{not}");
        }
        assert_eq!(version_from_dir(Path::new("/")), None);
    }

    #[test]
    fn metrics_text() {
        let metrics = Metrics::new();
        metrics.record(200, Duration::from_micros(300));
        metrics.record(200, Duration::from_secs(30));
        metrics.record(400, Duration::from_millis(2));
        let text = metrics.render(Some(("blue \"b\"", "v1")));
        for line in [
            r#"cairn_requests_total{code="200"} 2"#,
            r#"cairn_requests_total{code="400"} 1"#,
            "cairn_request_errors_total 1",
            r#"cairn_request_duration_seconds_bucket{le="0.00025"} 0"#,
            r#"cairn_request_duration_seconds_bucket{le="0.0005"} 1"#,
            r#"cairn_request_duration_seconds_bucket{le="0.0025"} 2"#,
            r#"cairn_request_duration_seconds_bucket{le="2.5"} 2"#,
            r#"cairn_request_duration_seconds_bucket{le="+Inf"} 3"#,
            "cairn_request_duration_seconds_sum 30.0023",
            "cairn_request_duration_seconds_count 3",
            "cairn_model_ready 1",
            r#"cairn_model_info{model="blue \"b\"",version="v1"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        let empty = Metrics::new().render(None);
        assert!(empty.contains("cairn_model_ready 0\n"));
        assert!(!empty.contains("cairn_model_info{"));
    }
}

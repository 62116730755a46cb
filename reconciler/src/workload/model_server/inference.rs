//! The model server's Open Inference Protocol routes (KServe v2, the protocol Triton,
//! KServe and MLServer clients speak), for every format it serves:
//!
//! - `GET /v2`: the server's name, version and extensions (none).
//! - `GET /v2/health/live`: 200 while the process serves; `GET /v2/health/ready`: 200
//!   once the model is loaded, 503 before.
//! - `GET /v2/models/{name}[/versions/{version}]`: the model's metadata (`platform`,
//!   `versions`, and its `inputs` and `outputs` with datatype and shape, `-1` for a
//!   dynamic dimension); `/ready` after it: 200 once loaded.
//! - `POST /v2/models/{name}[/versions/{version}]/infer`: JSON tensors in, JSON tensors
//!   out ([`crate::workload::oip`]). Counted and timed with `/v1/predict` in `/metrics`.
//!
//! `{name}` is the served model's name (`--model-name`, else the deployment's); another
//! name, or a version other than the one loaded, is 404. Errors are `{"error": "..."}`:
//! 400 for the request's fault (naming the input), 404 for an unknown model, 503 while
//! loading, 500 for the model's fault.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{Loaded, RequestError, Shared};
use crate::workload::oip;
use crate::workload::served::InferError;

/// `GET /v2`.
pub(super) async fn server_metadata() -> Response {
    Json(json!({
        "name": "cairn",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
    .into_response()
}

/// `GET /v2/health/live`.
pub(super) async fn live() -> Response {
    Json(json!({"live": true})).into_response()
}

/// `GET /v2/health/ready`.
pub(super) async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let ready = shared.loaded.get().is_some();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

/// The loaded model if `name` (and `version`, when given) are the served one's.
fn model<'a>(
    shared: &'a Shared,
    name: &str,
    version: Option<&str>,
) -> Result<&'a Loaded, RequestError> {
    let served = shared.options.model_name();
    if name != served {
        return Err(RequestError::new(
            StatusCode::NOT_FOUND,
            format!("unknown model `{name}`; this server serves `{served}`"),
        ));
    }
    let Some(loaded) = shared.loaded.get() else {
        return Err(RequestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model `{name}` is still loading; retry once /v2/health/ready answers 200"),
        ));
    };
    match version {
        Some(v) if v != loaded.version => Err(RequestError::new(
            StatusCode::NOT_FOUND,
            format!(
                "model `{name}` has no version `{v}`; this server serves version `{}`",
                loaded.version
            ),
        )),
        _ => Ok(loaded),
    }
}

fn metadata(shared: &Shared, name: &str, version: Option<&str>) -> Response {
    match model(shared, name, version) {
        Ok(loaded) => {
            let mut body = json!({
                "name": shared.options.model_name(),
                "versions": [loaded.version],
                "platform": loaded.served.platform(),
                "inputs": loaded.served.inputs(),
                "outputs": loaded.served.outputs(),
            });
            if let Some(parameters) = loaded.served.parameters() {
                body["parameters"] = parameters;
            }
            Json(body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /v2/models/{name}`.
pub(super) async fn model_metadata(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    metadata(&shared, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}`.
pub(super) async fn model_metadata_at(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&shared, &name, Some(&version))
}

fn readiness(shared: &Shared, name: &str, version: Option<&str>) -> Response {
    match model(shared, name, version) {
        Ok(_) => Json(json!({"name": name, "ready": true})).into_response(),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"name": name, "ready": false})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v2/models/{name}/ready`.
pub(super) async fn model_ready(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    readiness(&shared, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}/ready`.
pub(super) async fn model_ready_at(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    readiness(&shared, &name, Some(&version))
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
pub(super) async fn infer(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<Vec<(String, String)>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let name = param("name").unwrap_or_default();
    let version = param("version");
    if let Err(e) = model(&shared, &name, version.as_deref()) {
        return e.into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!(
                "the request body is larger than the limit of {} bytes; send fewer rows per request",
                shared.options.max_body_bytes
            );
            return RequestError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
        }
        Err(rejection) => {
            let message = format!("cannot read the request body: {}", rejection.body_text());
            return RequestError::new(rejection.status(), message).into_response();
        }
    };
    // Every element takes at least two bytes of JSON (`1,`): the body limit bounds them.
    let max_elements = shared.options.max_body_bytes / 2 + 1;
    let request = match oip::parse_request(&body, max_elements) {
        Ok(request) => request,
        Err(e) => return RequestError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let id = request.id.clone();
    let asked = request.outputs.clone();
    // A model computes for as long as it takes: off the async threads.
    let work = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let loaded = shared.loaded.get().expect("checked loaded above");
            loaded.served.infer(request.inputs)
        })
    };
    let outputs = match work.await {
        Ok(Ok(outputs)) => outputs,
        Ok(Err(InferError::Request(e))) => {
            return RequestError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Ok(Err(e)) => {
            return RequestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                .into_response()
        }
        Err(e) => {
            return RequestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the inference task failed: {e}"),
            )
            .into_response()
        }
    };
    let outputs = match oip::select_outputs(outputs, asked.as_deref()) {
        Ok(outputs) => outputs,
        Err(e) => return RequestError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let loaded = shared.loaded.get().expect("checked loaded above");
    let mut body = json!({
        "model_name": shared.options.model_name(),
        "model_version": loaded.version,
        "outputs": outputs.iter().map(oip::Tensor::to_json).collect::<Vec<Value>>(),
    });
    if let Some(id) = id {
        body["id"] = Value::String(id);
    }
    Json(body).into_response()
}

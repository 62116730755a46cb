//! The request handler: checks the key, picks the deployment (pinned or by weight),
//! buffers the body, forwards, counts, and sends mirror copies.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;

use super::auth::{authorize, refuse};
use super::list;
use super::table::{Deployment, Table};
use super::upstream::Outgoing;
use super::worker::Worker;
use crate::workload::model_server::DEPLOYMENT_HEADER;

/// Headers that belong to one connection, not to the message (RFC 9110, 7.6.1), and
/// `expect`, which the router's own server answers.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// Removes hop-by-hop headers, those named by `connection` included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn error_response(status: StatusCode, message: String, table: &Table) -> Response {
    (
        status,
        Json(json!({"error": message, "deployments": table.names()})),
    )
        .into_response()
}

/// Answers every request: checks the key, picks the deployment, forwards, counts.
pub(super) async fn proxy(
    worker: &Rc<Worker>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response {
    let start = Instant::now();
    let shared = &worker.shared;
    let table = worker.table();
    let (mut parts, body) = request.into_parts();

    if let Some(expected) = &table.key_sha256 {
        if let Err(message) = authorize(&parts.headers, expected) {
            return refuse(Body::new(body), message).await;
        }
        // The key is the router's; the replicas never see it (nor log it).
        parts.headers.remove(header::AUTHORIZATION);
    }

    let pinned = match parts.headers.get(DEPLOYMENT_HEADER) {
        None => None,
        Some(value) => {
            let name = String::from_utf8_lossy(value.as_bytes());
            let name = name.trim();
            match table.deployments.get(name) {
                Some(deployment) => Some(deployment.clone()),
                None => {
                    let message = format!(
                        "no deployment named `{name}` (from the `{DEPLOYMENT_HEADER}` header); \
                         this endpoint has: {}",
                        list(&table.names())
                    );
                    return error_response(StatusCode::NOT_FOUND, message, &table);
                }
            }
        }
    };

    let max = shared.options.max_body_bytes;
    let too_large = || {
        let message = format!("the request body is larger than the limit of {max} bytes");
        error_response(StatusCode::PAYLOAD_TOO_LARGE, message, &table)
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let body = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return too_large(),
        Err(error) => {
            let message = format!("cannot read the request body: {error}");
            return error_response(StatusCode::BAD_REQUEST, message, &table);
        }
    };

    let (deployment, weighted) = match pinned {
        Some(deployment) => (deployment, false),
        None => match table.pick() {
            Some(deployment) => (deployment.clone(), true),
            None => {
                let message = format!(
                    "no deployment carries traffic (every weight is 0); pin one with the \
                     `{DEPLOYMENT_HEADER}` header: {}",
                    list(&table.names())
                );
                return error_response(StatusCode::SERVICE_UNAVAILABLE, message, &table);
            }
        },
    };

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", value);
    }
    let outgoing = Outgoing {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        headers,
        body,
    };

    if weighted {
        if let Some(capture) = &table.capture {
            capture.offer(&deployment.name, &outgoing.body);
        }
        if let Some(mirror) = table.pick_mirror() {
            if mirror.name != deployment.name {
                mirror_copy(worker, mirror.clone(), outgoing.clone());
            }
        }
    }
    // The table is not needed any more; a route change may free it.
    drop(table);

    match shared.forward(&worker.pool, &deployment, &outgoing).await {
        Ok(response) => {
            let failed = response.status().is_server_error();
            deployment.counters.record(failed, start.elapsed());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(failure) => {
            deployment.counters.record(true, start.elapsed());
            failure.into_response(&deployment.name)
        }
    }
}

/// Sends a copy of the request to the mirror deployment on a task of its own (on this
/// worker's thread), unless too many copies are in flight.
fn mirror_copy(worker: &Rc<Worker>, deployment: Arc<Deployment>, outgoing: Outgoing) {
    let Ok(slot) = worker.shared.mirror_slots.clone().try_acquire_owned() else {
        return;
    };
    let worker = worker.clone();
    tokio::task::spawn_local(async move {
        let _slot = slot;
        // Timed from its own start: the copy's latency is the mirror deployment's.
        let start = Instant::now();
        let shared = &worker.shared;
        match shared.forward(&worker.pool, &deployment, &outgoing).await {
            Ok(response) => {
                let failed = response.status().is_server_error();
                deployment.counters.record(failed, start.elapsed());
                // Read to the end, so the connection can be reused; the answer is dropped.
                let _ = response.into_body().collect().await;
            }
            Err(_) => deployment.counters.record(true, start.elapsed()),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }
}

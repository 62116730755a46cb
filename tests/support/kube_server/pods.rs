//! Pods' subresources besides `status`: `pods/<name>/log` (the lines a test wrote, not
//! followed) and the pod proxy (`pods/<pod>:<port>/proxy/<path>`, GET only).

use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::controls::{RecordedRequest, Verb};
use super::error::{ApiError, ApiResult};
use super::path::Query;
use super::state::Shared;

/// `GET /api/v1/namespaces/<ns>/pods/<name>[:<port>]/proxy/<path>`: forwarded to the
/// address [`KubeServer::pod_address`] gave that pod's port, as the API server forwards
/// to the pod's IP. Strict like the real one: the pod must exist and be `Running`, and
/// only GET is forwarded (the tests need no more). `None` for any other path.
pub(super) async fn pod_proxy(
    shared: &Arc<Shared>,
    parts: &axum::http::request::Parts,
    record: &mut RecordedRequest,
) -> Option<Response> {
    let path = parts.uri.path();
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once("/pods/")?;
    let (pod, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("proxy")?;
    if !(rest.is_empty() || rest.starts_with('/')) || namespace.contains('/') {
        return None;
    }
    record.verb = Verb::Get;
    let answer = async {
        if parts.method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        let (name, port) = match pod.split(':').collect::<Vec<_>>().as_slice() {
            [name] => (name.to_string(), None),
            [name, port] | ["http", name, port] => (name.to_string(), Some(port.to_string())),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid pod proxy target \"{pod}\""
                )))
            }
        };
        let address = {
            let state = shared.lock();
            let object = state.pod(namespace, &name)?;
            if object["status"]["phase"] != "Running" {
                return Err(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("pod {name} is not running"),
                ));
            }
            let port: u16 = match port {
                Some(p) => p.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid port \"{p}\" for pod {name}"))
                })?,
                None => 80,
            };
            state
                .pod_addresses
                .get(&(namespace.to_string(), name.clone(), port))
                .cloned()
                .ok_or_else(|| {
                    ApiError::new(
                        503,
                        "ServiceUnavailable",
                        format!("error trying to reach service: dial tcp {name}:{port}: connect: connection refused"),
                    )
                })?
        };
        let mut url = format!("{address}{rest}");
        if let Some(query) = parts.uri.query() {
            url = format!("{url}?{query}");
        }
        let answer = tokio::task::spawn_blocking(move || {
            let mut response = ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, text))
        })
        .await
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        let (status, text) = answer.map_err(|e| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("error trying to reach service: {e}"),
            )
        })?;
        Ok((
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/plain")],
            text,
        )
            .into_response())
    };
    Some(match answer.await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    })
}

/// `GET /api/v1/namespaces/<ns>/pods/<name>/log`: the lines [`KubeServer::pod_log`]
/// wrote. `None` for any other path.
pub(super) fn pod_log_route(
    shared: &Arc<Shared>,
    parts: &axum::http::request::Parts,
    record: &mut RecordedRequest,
) -> ApiResult<Option<Response>> {
    let segments: Vec<&str> = parts.uri.path().split('/').skip(1).collect();
    let ["api", "v1", "namespaces", namespace, "pods", pod, "log"] = segments.as_slice() else {
        return Ok(None);
    };
    record.verb = Verb::Get;
    if parts.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let query = Query::parse(&parts.uri)?;
    query.only(
        "pods/log",
        &["container", "timestamps", "sinceTime", "tailLines"],
    )?;
    let state = shared.lock();
    let object = state.pod(namespace, pod)?;
    let names = |key: &str| -> Vec<String> {
        object["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    let container = match query.get("container") {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {pod}"
            )))
        }
        None if containers.len() == 1 && init.is_empty() => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}] or one of the init containers: [{}]",
                containers.join(" "),
                init.join(" ")
            )))
        }
    };
    let since = match query.get("sinceTime") {
        None => None,
        Some(t) => Some(t.parse::<k8s_openapi::jiff::Timestamp>().map_err(|_| {
            ApiError::bad_request(format!("sinceTime: invalid RFC 3339 time \"{t}\""))
        })?),
    };
    let timestamps = query.flag("timestamps")?;
    let lines: Vec<&(k8s_openapi::jiff::Timestamp, String)> = state
        .pod_logs
        .get(&(namespace.to_string(), pod.to_string(), container))
        .into_iter()
        .flatten()
        .filter(|(t, _)| since.is_none_or(|s| *t >= s))
        .collect();
    let skip = match query.get("tailLines") {
        None => 0,
        Some(n) => {
            let n: usize = n
                .parse()
                .map_err(|_| ApiError::bad_request(format!("tailLines: invalid value \"{n}\"")))?;
            lines.len().saturating_sub(n)
        }
    };
    let mut text = String::new();
    for (t, line) in lines.into_iter().skip(skip) {
        if timestamps {
            text.push_str(&format!("{t:.9} "));
        }
        text.push_str(line);
        text.push('\n');
    }
    Ok(Some(
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response(),
    ))
}

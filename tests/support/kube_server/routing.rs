//! Serving a request: authentication, counting and recording it, writes interleaved
//! before it, forbidden resources, and routing each verb on each target to discovery,
//! reads, watches and writes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::controls::{RecordedRequest, Verb};
use super::delete::DeleteOptions;
use super::discovery::discovery;
use super::error::{json_response, object_details, ApiError, ApiResult};
use super::path::{
    parse_path, Query, Target, DELETE_PARAMS, LIST_PARAMS, PATCH_PARAMS, WRITE_PARAMS,
};
use super::pods::{pod_log_route, pod_proxy};
use super::reads::{partial_list, partial_metadata};
use super::state::{Key, Shared, State};
use super::watch::watch;
use super::writes::{merge_patch, Writer};

/// The axum handler: every path.
pub(super) async fn serve(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Handling is synchronous: without a yield, a request would be answered before the
    // next connection's is even seen, and the count would only show the worker threads.
    tokio::task::yield_now().await;
    let response = serve_counted(&shared, request).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn serve_counted(shared: &Arc<Shared>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let mut record = RecordedRequest {
        verb: Verb::Discovery,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_type,
        body: serde_json::from_slice(&body).ok(),
        status: 0,
    };
    run_interleave(shared, parts.method.as_str(), parts.uri.path());
    if let Some((denied, verb)) = super::rbac::authorize(shared, &parts) {
        record.verb = verb;
        let response = denied.into_response();
        record.status = response.status().as_u16();
        shared.lock().requests.push(record);
        return response;
    }
    if let Some(response) = pod_proxy(shared, &parts, &mut record).await {
        record.status = response.status().as_u16();
        shared.lock().requests.push(record);
        return response;
    }
    let response = match route(shared, &parts, &body, &mut record) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    record.status = response.status().as_u16();
    shared.lock().requests.push(record);
    response
}

/// Runs the [`Interleave`] waiting for this request, if any.
fn run_interleave(shared: &Arc<Shared>, method: &str, path: &str) {
    let hook = {
        let mut state = shared.lock();
        let found = state
            .interleaves
            .iter()
            .position(|h| h.method == method && h.path == path);
        found.map(|i| state.interleaves.remove(i))
    };
    let Some(hook) = hook else { return };
    let target = parse_path(&shared.lock(), path);
    let result = target.and_then(|target| {
        shared.update_with(&target, &Writer::test(&hook.manager), |old| {
            let mut new = old.clone();
            merge_patch(&mut new, &hook.patch);
            Ok(new)
        })
    });
    if let Err(e) = result {
        panic!("the interleaved write on {path} failed: {}", e.message);
    }
}

/// The 403 RBAC would give a request on a resource [`KubeServer::forbid`] named.
pub(super) fn forbidden(state: &State, path: &str, method: &Method) -> Option<ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural, name @ ..] => (Some(*ns), *plural, name.first().copied()),
        [plural, name @ ..] => (None, *plural, name.first().copied()),
        _ => return None,
    };
    if !state
        .forbidden
        .contains(&(group.to_string(), plural.to_string()))
    {
        return None;
    }
    let verb = match (method, name) {
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "get",
    };
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let resource = name.map(|n| format!(" \"{n}\"")).unwrap_or_default();
    Some(
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{plural}{resource} is forbidden: User \"cairn-test\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}"
            ),
        )
        .details(json!({"kind": plural})),
    )
}

fn route(
    shared: &Arc<Shared>,
    parts: &axum::http::request::Parts,
    body: &[u8],
    record: &mut RecordedRequest,
) -> ApiResult<Response> {
    let path = parts.uri.path();
    let open = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz");
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token));
    if !open && !authorized {
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    if let Some(forbidden) = forbidden(&shared.lock(), path, &parts.method) {
        return Err(forbidden);
    }
    if let Some(response) = pod_log_route(shared, parts, record)? {
        return Ok(response);
    }
    let target = parse_path(&shared.lock(), path)?;
    let query = Query::parse(&parts.uri)?;
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let method = &parts.method;
    record.verb = match (&target, method) {
        (Target::Discovery(_), _) => Verb::Discovery,
        (Target::Collection { .. }, &Method::GET) if query.flag("watch")? => Verb::Watch,
        (Target::Collection { .. }, &Method::GET) => Verb::List,
        (Target::Collection { .. }, &Method::POST) => Verb::Create,
        (Target::Collection { .. }, &Method::DELETE) => Verb::DeleteCollection,
        (Target::Object { .. }, &Method::GET) => Verb::Get,
        (Target::Object { .. }, &Method::PUT) => Verb::Update,
        (Target::Object { .. }, &Method::PATCH) => Verb::Patch,
        (Target::Object { .. }, &Method::DELETE) => Verb::Delete,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    if accept.contains("as=Table")
        || accept.starts_with("application/vnd.kubernetes.protobuf") && !accept.contains("json")
    {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            format!("the test API server only answers JSON, not {accept}"),
        ));
    }
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let writer = |query: &Query| -> ApiResult<Writer> {
        let manager = match query.get("fieldManager") {
            Some(m) if m.is_empty() || m.len() > 128 => {
                return Err(ApiError::invalid(
                    "CreateOptions.meta.k8s.io",
                    "",
                    &[(
                        "fieldManager".into(),
                        format!("Invalid value: \"{m}\": must be 1 to 128 printable characters"),
                    )],
                ))
            }
            Some(m) => m.to_string(),
            // As the real server: the user agent up to its first `/`, else `unknown`
            // (kube-rs sends no user agent).
            None => match user_agent.split('/').next().unwrap_or("") {
                "" => "unknown".to_string(),
                prefix => prefix.to_string(),
            },
        };
        Ok(Writer::new(
            &manager,
            query.dry_run()?,
            query.field_validation()?,
        ))
    };
    match (record.verb, &target) {
        (Verb::Discovery, Target::Discovery(d)) => {
            if *method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            Ok(discovery(shared, d, &accept))
        }
        (
            Verb::Get,
            Target::Object {
                res,
                namespace,
                name,
                ..
            },
        ) => {
            query.only("get", &["resourceVersion"])?;
            let state = shared.lock();
            let object = state
                .objects
                .get(&Key::new(*res, namespace.as_deref(), name))
                .ok_or_else(|| ApiError::not_found(&state.resources[*res], name))?;
            let body = if metadata_only {
                partial_metadata(object)
            } else {
                object.clone()
            };
            Ok(json_response(200, &body))
        }
        (Verb::List, Target::Collection { res, namespace }) => {
            query.only("list", LIST_PARAMS)?;
            let list = shared.list(*res, namespace.as_deref(), &query)?;
            Ok(json_response(
                200,
                &if metadata_only {
                    partial_list(&list)
                } else {
                    list
                },
            ))
        }
        (Verb::Watch, Target::Collection { res, namespace }) => {
            query.only("watch", LIST_PARAMS)?;
            watch(shared, *res, namespace.clone(), &query, metadata_only)
        }
        (Verb::Create, Target::Collection { res, namespace }) => {
            query.only("create", WRITE_PARAMS)?;
            query.field_validation()?;
            if namespace.is_none() && shared.lock().resources[*res].namespaced {
                return Err(ApiError::method_not_allowed());
            }
            let object = parse_body(body)?;
            let writer = writer(&query)?;
            let created = shared.create(*res, namespace.as_deref(), object, &writer)?;
            Ok(with_warnings(json_response(201, &created), &writer))
        }
        (Verb::Update, Target::Object { .. }) => {
            query.only("update", WRITE_PARAMS)?;
            query.field_validation()?;
            let object = parse_body(body)?;
            let writer = writer(&query)?;
            let updated = shared.replace(&target, object, &writer)?;
            Ok(with_warnings(json_response(200, &updated), &writer))
        }
        (Verb::Patch, Target::Object { .. }) => {
            query.only("patch", PATCH_PARAMS)?;
            query.field_validation()?;
            let content_type = record.content_type.clone().unwrap_or_default();
            let force = query.flag("force")?;
            let patch = parse_body(body)?;
            let kind = content_type.split(';').next().unwrap_or("").trim();
            if kind == "application/apply-patch+yaml" {
                let manager = match query.get("fieldManager") {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => {
                        return Err(ApiError::invalid(
                            "PatchOptions.meta.k8s.io",
                            "",
                            &[(
                                "fieldManager".into(),
                                "Required value: is required for apply patch".into(),
                            )],
                        ))
                    }
                };
                let writer = Writer::new(&manager, query.dry_run()?, query.field_validation()?);
                let (object, created) = shared.apply(&target, patch, force, &writer)?;
                return Ok(json_response(if created { 201 } else { 200 }, &object));
            }
            if force {
                return Err(ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    &[(
                        "force".into(),
                        "Forbidden: may not be specified for non-apply patch".into(),
                    )],
                ));
            }
            let res = target.res().expect("an object");
            match kind {
                "application/merge-patch+json" => {}
                "application/strategic-merge-patch+json" => {
                    if shared.lock().resources[res].custom {
                        return Err(ApiError::unsupported_media(
                            "the body of the request was in an unknown format - accepted media types include: \
                             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                        ));
                    }
                    if let Some(why) = beyond_merge_patch(&patch) {
                        return Err(ApiError::unsupported_media(format!(
                            "the test API server treats a strategic merge patch as a merge patch, and this one {why}"
                        )));
                    }
                }
                "application/json-patch+json" => {
                    return Err(ApiError::unsupported_media(
                        "the test API server does not implement JSON patch (application/json-patch+json)",
                    ))
                }
                other => {
                    return Err(ApiError::unsupported_media(format!(
                        "the body of the request was in an unknown format ({other}) - accepted media types include: \
                         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
                         application/strategic-merge-patch+json"
                    )))
                }
            }
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let writer = writer(&query)?;
            let updated = shared.update_with(&target, &writer, |old| {
                let mut new = old.clone();
                merge_patch(&mut new, &patch);
                Ok(new)
            })?;
            Ok(with_warnings(json_response(200, &updated), &writer))
        }
        (
            Verb::Delete,
            Target::Object {
                res,
                namespace,
                name,
                status,
            },
        ) => {
            if *status {
                return Err(ApiError::method_not_allowed());
            }
            query.only("delete", DELETE_PARAMS)?;
            let options = DeleteOptions::parse(&query, body)?;
            let key = Key::new(*res, namespace.as_deref(), name);
            let (object, gone) = shared.delete(&key, &options)?;
            let state = shared.lock();
            let resource = &state.resources[*res];
            let mut response = if !gone || resource.delete_returns_object {
                json_response(if gone { 200 } else { 202 }, &object)
            } else {
                let mut details = object_details(resource, name);
                details["uid"] = object["metadata"]["uid"].clone();
                json_response(
                    200,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": details,
                    }),
                )
            };
            if options.propagation.is_none() && resource.orphan_by_default && !options.dry_run {
                response.headers_mut().insert(
                    "Warning",
                    "299 - \"child pods are preserved by default when jobs are deleted; set \
                     propagationPolicy=Background to remove them or set propagationPolicy=Orphan \
                     to suppress this warning\""
                        .parse()
                        .expect("header"),
                );
            }
            Ok(response)
        }
        (Verb::DeleteCollection, Target::Collection { res, namespace }) => {
            let mut allowed = DELETE_PARAMS.to_vec();
            allowed.extend([
                "labelSelector",
                "fieldSelector",
                "limit",
                "continue",
                "resourceVersion",
                "resourceVersionMatch",
                "timeoutSeconds",
            ]);
            query.only("deletecollection", &allowed)?;
            if namespace.is_none() && shared.lock().resources[*res].namespaced {
                return Err(ApiError::method_not_allowed());
            }
            let options = DeleteOptions::parse(&query, body)?;
            let mut list = shared.list(*res, namespace.as_deref(), &query)?;
            let mut deleted = Vec::new();
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                let key = Key::new(*res, namespace.as_deref(), name);
                if let Ok((object, _)) = shared.delete(&key, &options) {
                    deleted.push(object);
                }
            }
            list["items"] = Value::Array(deleted);
            list["metadata"] = json!({"resourceVersion": shared.lock().rv.to_string()});
            Ok(json_response(200, &list))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The write's warnings as `Warning: 299 - "<text>"` headers, as the real server sends
/// them.
fn with_warnings(mut response: Response, writer: &Writer) -> Response {
    for warning in writer.warnings.take() {
        let value = format!("299 - {}", Value::String(warning));
        if let Ok(value) = value.parse() {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request has no body"));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the test API server reads JSON bodies only (YAML is not supported): {e}"
        ))
    })
}

/// Why a strategic merge patch would not mean the same as a merge patch, if it would not:
/// it holds a `$` directive or a list of objects (which a strategic merge patch may merge
/// by key).
fn beyond_merge_patch(patch: &Value) -> Option<String> {
    match patch {
        Value::Object(map) => {
            for (k, v) in map {
                if k.starts_with('$') {
                    return Some(format!("holds the directive \"{k}\""));
                }
                if let Some(why) = beyond_merge_patch(v) {
                    return Some(why);
                }
            }
            None
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            Some("holds a list of objects, which it may merge by key".to_string())
        }
        _ => None,
    }
}

//! The errors the server answers with: the real server's `Status` objects and codes.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::resources::ResourceType;

#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) code: u16,
    pub(super) reason: &'static str,
    pub(super) message: String,
    pub(super) details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(super) fn details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// An unknown path, group, version, resource or subresource.
    pub(super) fn no_resource() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .details(json!({}))
    }

    pub(super) fn not_found(res: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .details(object_details(res, name))
    }

    pub(super) fn namespace_not_found(namespace: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .details(json!({"name": namespace, "kind": "namespaces"}))
    }

    pub(super) fn already_exists(res: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .details(object_details(res, name))
    }

    pub(super) fn conflict(res: &ResourceType, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.qualified()
            ),
        )
        .details(object_details(res, name))
    }

    pub(super) fn stale(res: &ResourceType, name: &str) -> ApiError {
        ApiError::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A 422 naming each invalid field: `(field, "Invalid value: ...")`.
    pub(super) fn invalid(kind: &str, name: &str, causes: &[(String, String)]) -> ApiError {
        let each: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let joined = if each.len() == 1 {
            each[0].clone()
        } else {
            format!("[{}]", each.join(", "))
        };
        let (kind_name, group) = match kind.split_once('.') {
            Some((k, g)) => (k, g),
            None => (kind, ""),
        };
        let mut details = json!({
            "name": name, "kind": kind_name,
            "causes": causes.iter().map(|(f, m)| json!({
                "reason": cause_reason(m),
                "message": m, "field": f,
            })).collect::<Vec<_>>(),
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {joined}"),
        )
        .details(details)
    }

    pub(super) fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .details(json!({}))
    }

    pub(super) fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }
}

/// The `StatusCause` reason the real server gives a field error, from its message.
fn cause_reason(message: &str) -> &'static str {
    [
        ("Required value", "FieldValueRequired"),
        ("Not found", "FieldValueNotFound"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
    ]
    .iter()
    .find(|(prefix, _)| message.starts_with(prefix))
    .map_or("FieldValueInvalid", |(_, reason)| reason)
}

pub(super) fn object_details(res: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

fn status_object(code: u16, reason: &str, message: &str, details: Option<&Value>) -> Value {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        status["details"] = d.clone();
    }
    status
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.code,
            &status_object(self.code, self.reason, &self.message, self.details.as_ref()),
        )
    }
}

pub(super) fn json_response(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).expect("status code"),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

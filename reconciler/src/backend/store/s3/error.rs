//! Turning S3's answers into the store's typed errors: what failed (the server's status,
//! code and message only, never the SDK's error values, which carry requests), whether
//! another attempt may succeed, and scrubbing the secrets in use from every message.

use std::fmt;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::connect::StaticCredentials;
use super::S3Store;
use crate::backend::store::object::ObjectStore;
use crate::backend::store::Error;

impl S3Store {
    /// Where requests go, for messages: the workspace's endpoint (without any user
    /// information in it) or AWS S3 in the region in use.
    pub(super) fn endpoint_label(&self) -> String {
        match &self.options.endpoint {
            Some(e) => strip_userinfo(e),
            None => match (self.connection.get(), &self.options.region) {
                (Some(c), _) => match &c.configured_endpoint {
                    Some(e) => strip_userinfo(e),
                    None => format!("AWS S3 in {}", c.region),
                },
                (None, Some(region)) => format!("AWS S3 in {region}"),
                (None, None) => "AWS S3".to_string(),
            },
        }
    }

    /// Removes the secrets in use from a message.
    pub(super) fn scrub(&self, text: String) -> String {
        let Some(connection) = self.connection.get() else {
            return scrub_static(&self.credentials, text);
        };
        let mut text = scrub_static(&self.credentials, text);
        for secret in &connection.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }

    /// Turns an SDK error into the store's error. Takes only the status, code and
    /// message out of it.
    pub(super) fn error<E>(&self, op: &'static str, key: &str, err: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let message = err.message().map(str::to_string);
        match &err {
            SdkError::TimeoutError(_) => {
                return Error::Unreachable {
                    endpoint: self.endpoint_label(),
                    bucket: self.bucket.clone(),
                    reason: "the request timed out".into(),
                }
            }
            SdkError::DispatchFailure(failure) => {
                if no_credentials(&err) {
                    return Error::NoCredentials {
                        store: self.url(),
                        endpoint: self.endpoint_label(),
                    };
                }
                // Loading them failed (a provider erred or timed out): nothing was sent,
                // so nothing was refused.
                if let Some(reason) = credentials_problem(&err) {
                    return Error::CredentialsUnavailable {
                        store: self.url(),
                        endpoint: self.endpoint_label(),
                        reason: self.scrub(reason),
                    };
                }
                if failure.is_io() || failure.is_timeout() {
                    let reason = failure
                        .as_connector_error()
                        .map(|e| chain(e))
                        .unwrap_or_else(|| "connection failed".into());
                    return Error::Unreachable {
                        endpoint: self.endpoint_label(),
                        bucket: self.bucket.clone(),
                        reason: self.scrub(reason),
                    };
                }
                return Error::S3 {
                    op,
                    key: key.to_string(),
                    store: self.url(),
                    status: None,
                    code: "RequestFailed".into(),
                    message: self.scrub(chain(&err)),
                };
            }
            SdkError::ConstructionFailure(_) => {
                return Error::S3 {
                    op,
                    key: key.to_string(),
                    store: self.url(),
                    status: None,
                    code: "InvalidRequest".into(),
                    message: self.scrub(chain(&err)),
                }
            }
            _ => {}
        }
        let code_str = code.as_deref().unwrap_or("");
        match (status, code_str) {
            (Some(412), _) | (_, "PreconditionFailed") => return self.precondition(key),
            (Some(409), "ConditionalRequestConflict") => return self.precondition(key),
            (_, "NoSuchBucket") => {
                return Error::NoSuchBucket {
                    bucket: self.bucket.clone(),
                    endpoint: self.endpoint_label(),
                }
            }
            (
                _,
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "InvalidClientTokenId"
                | "MissingSecurityHeader"
                | "NotSignedUp",
            ) => {
                let what = match code_str {
                    "SignatureDoesNotMatch" => {
                        "the signature does not match: the secret key is not this access key's"
                    }
                    "ExpiredToken" | "TokenRefreshRequired" => "the session token has expired",
                    "InvalidToken" => "the session token is not valid",
                    "MissingSecurityHeader" => "the request carried no credentials",
                    _ => "the server does not know this access key",
                };
                let access_key = self
                    .connection
                    .get()
                    .and_then(|c| c.access_key_id.clone())
                    .map_or(String::new(), |id| format!("access key `{id}`; "));
                let said = match message.as_deref() {
                    Some(m) if !m.is_empty() => format!("{code_str}: {m}"),
                    _ => code_str.to_string(),
                };
                return Error::Credentials {
                    store: self.url(),
                    reason: self.scrub(format!("{what} ({access_key}the server said {said})")),
                };
            }
            (_, "AccessDenied" | "AllAccessDisabled") | (Some(403), "") => {
                return Error::AccessDenied {
                    op,
                    key: key.to_string(),
                    bucket: self.bucket.clone(),
                    endpoint: self.endpoint_label(),
                }
            }
            _ => {}
        }
        Error::S3 {
            op,
            key: key.to_string(),
            store: self.url(),
            status,
            code: code.unwrap_or_else(|| match status {
                Some(s) => format!("HTTP {s}"),
                None => "Unknown".into(),
            }),
            message: self.scrub(message.unwrap_or_default()),
        }
    }

    pub(super) fn body_error(&self, op: &'static str, key: &str, e: impl fmt::Display) -> Error {
        Error::Unreachable {
            endpoint: self.endpoint_label(),
            bucket: self.bucket.clone(),
            reason: self.scrub(format!("the answer to {op} `{key}` broke off: {e}")),
        }
    }
}

/// Whether S3 refused a conditional write because its condition failed: 412, or 409
/// `ConditionalRequestConflict` (a concurrent conditional write to the same key).
pub(super) fn is_precondition<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let status = err.raw_response().map(|r| r.status().as_u16());
    status == Some(412)
        || err.code() == Some("PreconditionFailed")
        || (status == Some(409) && err.code() == Some("ConditionalRequestConflict"))
}

/// Whether another attempt may succeed: timeouts, broken connections, throttling, 5xx.
pub(super) fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(f) => f.is_io() || f.is_timeout(),
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map_or(0, |r| r.status().as_u16());
            status >= 500
                || status == 429
                || matches!(
                    err.code(),
                    Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
                )
        }
        _ => false,
    }
}

/// `http://user:pass@host/` → `http://host/`.
pub(super) fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn scrub_static(credentials: &Option<StaticCredentials>, mut text: String) -> String {
    if let Some(c) = credentials {
        for secret in std::iter::once(&c.secret_access_key).chain(&c.session_token) {
            if secret.len() >= 4 && text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
    }
    text
}

/// An error and its sources, each by its `Display`, joined by `: ` (repeats dropped).
/// Never their `Debug`, which for SDK errors holds whole requests and answers.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Whether a credentials error means that no provider of the chain had any credentials.
fn no_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(c) = e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return matches!(
                c,
                aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_)
            );
        }
        current = e.source();
    }
    false
}

/// Finds a credentials-provider failure in an error's chain and describes it.
fn credentials_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(c) = e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return Some(chain(c));
        }
        current = e.source();
    }
    // Identity resolution failures without a typed source still say so.
    let text = chain(err);
    (text.contains("credentials") && text.contains("provider")).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::store::StoreOptions;

    fn store(url: &str) -> crate::backend::store::Result<S3Store> {
        S3Store::new(url, &StoreOptions::default())
    }

    #[test]
    fn error_chains_show_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Error::Io {
            op: "read",
            key: "k".into(),
            store: "s3://b".into(),
            source: inner,
        };
        assert_eq!(chain(&outer), "read `k` in s3://b failed: refused");
    }

    #[test]
    fn static_secrets_are_scrubbed() {
        let s = store("s3://bucket").unwrap().with_credentials(
            "AKIDEXAMPLE",
            "CAIRNSECRETDONOTPRINT1234",
            Some("TOKEN5678"),
        );
        let text = s.scrub("x CAIRNSECRETDONOTPRINT1234 y TOKEN5678".into());
        assert_eq!(text, "x [redacted] y [redacted]");
        assert!(!format!("{s:?}").contains("CAIRNSECRET"));
    }
}

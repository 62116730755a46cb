//! Bearer-key checks, shared by everything that authenticates an endpoint's requests
//! (the local router, `cairn pod-proxy` in a Kubernetes pod): requests carry
//! `Authorization: Bearer KEY`, and the SHA-256 of KEY must match the expected digest,
//! compared in constant time. Only digests are kept; the key itself is never stored.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The SHA-256 of a key, as the checks compare it.
pub fn key_digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key.trim_ascii()).into()
}

/// Whether two digests are equal, in time independent of where they differ, so that
/// response times tell nothing about the expected digest.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Checks the request's bearer key against the expected digest.
pub fn authorize(headers: &HeaderMap, expected: &[u8; 32]) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("this endpoint requires a key: send `Authorization: Bearer <key>`");
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err("the `Authorization` header must be `Bearer <key>`");
    }
    if same_digest(&key_digest(&value[scheme.len()..]), expected) {
        Ok(())
    } else {
        Err("the key is not valid for this endpoint")
    }
}

/// How much of a refused request's body is read before the 401; past it the
/// connection is closed.
const DRAIN_LIMIT: usize = 1 << 20;

/// The 401 for a request without the key, once what the client is still sending has
/// been read (up to a bound), so that it gets the answer rather than a connection reset
/// mid-upload.
pub async fn refuse(body: axum::body::Body, message: &str) -> Response {
    let _ = axum::body::to_bytes(body, DRAIN_LIMIT).await;
    unauthorized(message)
}

/// A 401 answer asking for a bearer key.
pub fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        Json(json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_against_their_digest() {
        let expected = key_digest(b"s3cret");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            authorize(&headers, &expected)
        };
        assert!(with("Bearer s3cret").is_ok());
        assert!(with("bearer  s3cret ").is_ok());
        assert_eq!(
            with("Bearer s3cre7"),
            Err("the key is not valid for this endpoint")
        );
        assert!(with("Basic czNjcmV0").unwrap_err().contains("Bearer <key>"));
        assert!(with("Bearer ").is_err());
        assert!(authorize(&HeaderMap::new(), &expected)
            .unwrap_err()
            .contains("requires a key"));
        assert!(same_digest(&expected, &expected));
        let mut other = expected;
        other[31] ^= 1;
        assert!(!same_digest(&expected, &other));
        // A key file's trailing newline is not part of the key.
        assert_eq!(key_digest(b"s3cret\n"), expected);
    }
}

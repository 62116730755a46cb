//! The router's key check: requests carry `Authorization: Bearer KEY`, and the SHA-256
//! of KEY must match the digest in [`Routes::key_sha256`](super::Routes::key_sha256),
//! compared in constant time.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{Error, Result};

/// The 32 bytes of a SHA-256 digest written as 64 hex digits.
pub(super) fn parse_digest(digest: &str) -> Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    match hex::decode_to_slice(digest, &mut bytes) {
        Ok(()) => Ok(bytes),
        Err(_) => Err(Error::BadKeyDigest {
            length: digest.len(),
        }),
    }
}

/// Whether two digests are equal, in time independent of where they differ, so that
/// response times tell nothing about the expected digest.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Checks the request's bearer key against the expected digest.
pub(super) fn authorize(
    headers: &HeaderMap,
    expected: &[u8; 32],
) -> std::result::Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("this endpoint requires a key: send `Authorization: Bearer <key>`");
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err("the `Authorization` header must be `Bearer <key>`");
    }
    let key = value[scheme.len()..].trim_ascii();
    let digest: [u8; 32] = Sha256::digest(key).into();
    if same_digest(&digest, expected) {
        Ok(())
    } else {
        Err("the key is not valid for this endpoint")
    }
}

/// A 401 answer asking for a bearer key; like the router's other own answers, it names
/// no deployment and is not counted.
pub(super) fn unauthorized(message: &str) -> Response {
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
    use crate::backend::local::router::routes::tests::routes;
    use crate::backend::local::router::Routes;

    #[test]
    fn keys_are_checked_against_their_digest() {
        let digest = hex::encode(Sha256::digest(b"s3cret"));
        let expected = parse_digest(&digest).unwrap();
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

        let bad = |digest: &str| {
            Routes {
                key_sha256: Some(digest.into()),
                ..routes()
            }
            .validate()
        };
        assert!(bad(&digest).is_ok());
        assert!(matches!(
            bad("s3cret"),
            Err(Error::BadKeyDigest { length: 6 })
        ));
        assert!(bad(&digest.replace('a', "g")).is_err() || !digest.contains('a'));
    }
}

//! The router's key check: requests carry `Authorization: Bearer KEY`, and the SHA-256
//! of KEY must match the digest in [`Routes::key_sha256`](super::Routes::key_sha256)
//! (the check is [`crate::workload::bearer`]'s, shared with `cairn pod-proxy`).

use super::{Error, Result};

pub(super) use crate::workload::bearer::{authorize, refuse};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::router::routes::tests::routes;
    use crate::backend::local::router::Routes;

    #[test]
    fn key_digests_are_parsed() {
        let digest = hex::encode(crate::workload::bearer::key_digest(b"s3cret"));
        assert_eq!(
            parse_digest(&digest).unwrap(),
            crate::workload::bearer::key_digest(b"s3cret")
        );
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

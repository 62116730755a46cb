//! Endpoint keys: a Secret Cairn renders without data gets a random `data.key` once,
//! written by its own field manager and conditional on the `resourceVersion` read, so
//! a key already there (one a person set, or an earlier apply's) is never replaced and
//! two applies can't both write one. The key is never returned, logged or planned.

use base64::Engine as _;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::discovery::api_for;
use super::error::request_error;
use super::observe::{get, resource_version};
use super::{Clusters, Error, Result, ATTEMPTS};
use crate::backend::kubernetes::ObjectKey;

/// The field manager of generated keys.
const KEY_MANAGER: &str = "cairn-key";

impl Clusters {
    /// Puts a random key (64 hex digits: two UUIDv4s, 244 random bits) into the
    /// Secret's `data.key` when it has none; returns whether it wrote one.
    pub async fn fill_key(&self, secret: &ObjectKey) -> Result<bool> {
        let cluster = self.cluster(secret.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &secret.context, "v1", "Secret")
            .await?;
        let api = api_for(&cluster, &resolved, secret.namespace.as_deref(), secret)?;
        for _ in 0..ATTEMPTS {
            let Some(live) = get(&api, &cluster, secret).await? else {
                return Err(Error::Gone {
                    object: Box::new(secret.clone()),
                });
            };
            if live.pointer("/data/key").is_some_and(|k| !k.is_null()) {
                return Ok(false);
            }
            let key = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            let patch = json!({
                "metadata": {"resourceVersion": resource_version(&live)},
                "data": {"key": base64::engine::general_purpose::STANDARD.encode(key)},
            });
            let params = PatchParams {
                field_manager: Some(KEY_MANAGER.into()),
                ..Default::default()
            }
            .validation_strict();
            match api
                .patch(&secret.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                // Someone wrote it meanwhile: read again.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => {
                    return Err(request_error(
                        &cluster,
                        "write the key of",
                        secret.to_string(),
                        e,
                    ))
                }
            }
        }
        Err(Error::Raced {
            object: Box::new(secret.clone()),
            attempts: ATTEMPTS,
        })
    }
}

//! Setting a Deployment's replica count under Cairn's scaling field manager
//! (`cairn-scale`), not the one that applies its objects: a new autoscaled revision
//! starts as scaled as the one it replaces, and its HorizontalPodAutoscaler takes the
//! field over from there ([`crate::backend::kubernetes`]'s `scale.rs`).

use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::discovery::api_for;
use super::error::request_error;
use super::{Clusters, Result};
use crate::backend::kubernetes::ObjectKey;

/// The field manager of the replica counts Cairn sets.
const SCALE_MANAGER: &str = "cairn-scale";

impl Clusters {
    /// Sets `spec.replicas` of a Deployment.
    pub async fn set_replicas(&self, deployment: &ObjectKey, replicas: u32) -> Result<()> {
        let cluster = self.cluster(deployment.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &deployment.context, "apps/v1", "Deployment")
            .await?;
        let api = api_for(
            &cluster,
            &resolved,
            deployment.namespace.as_deref(),
            deployment,
        )?;
        let params = PatchParams {
            field_manager: Some(SCALE_MANAGER.into()),
            ..Default::default()
        }
        .validation_strict();
        api.patch(
            &deployment.name,
            &params,
            &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
        )
        .await
        .map(|_| ())
        .map_err(|e| request_error(&cluster, "scale", deployment.to_string(), e))
    }
}

//! The replicas a new autoscaled revision starts with on Kubernetes. Its Deployment is
//! rendered without `spec.replicas` (its HorizontalPodAutoscaler owns the count), so it
//! would start with one pod while the revision it replaces may run many. Once it is
//! created, Cairn sets its count to what the deployment's other revisions run now,
//! within the autoscaler's bounds, under a field manager of its own (`cairn-scale`): the
//! autoscaler's later changes take the field over, and Cairn's own applies, which never
//! set it, never reset it.

use serde_json::Value;

use super::objects::LABEL_DEPLOYMENT;
use super::plan::ObjectChangeExt as _;
use super::{ClusterApi, ObjectKey};
use crate::plan::{Action, ResourceChange};

/// A new autoscaled Deployment and the replicas it is to start with.
pub(super) struct InitialScale {
    pub deployment: ObjectKey,
    pub describe: String,
    pub replicas: u32,
}

/// The autoscaled Deployments this change creates that should start with more than one
/// replica: as many as the most any other live revision of the same deployment runs,
/// clamped to the bounds of its HorizontalPodAutoscaler in the change.
pub(super) async fn initial_scales(
    change: &ResourceChange,
    kube: &dyn ClusterApi,
) -> Vec<InitialScale> {
    let pointer = format!("/metadata/labels/{}", LABEL_DEPLOYMENT.replace('/', "~1"));
    let label =
        |object: &Value| -> Option<String> { object.pointer(&pointer)?.as_str().map(String::from) };
    let mut out = Vec::new();
    for created in change
        .objects
        .iter()
        .filter(|o| o.kind == "Deployment" && o.action == Action::Create)
    {
        let Some(hpa) = change.objects.iter().find(|o| {
            o.kind == "HorizontalPodAutoscaler"
                && o.name == created.name
                && o.action != Action::Delete
        }) else {
            continue;
        };
        let bounds = hpa.object.as_ref().and_then(|h| {
            let n = |p: &str| h.pointer(p).and_then(Value::as_u64);
            Some((n("/spec/minReplicas").unwrap_or(1), n("/spec/maxReplicas")?))
        });
        let deployment = created.object.as_ref().and_then(label);
        let (Some((min, max)), Some(deployment)) = (bounds, deployment) else {
            continue;
        };
        // The deployment's other revisions, as they run now (a revision the change
        // deletes is listed without its object: the live one says which it is).
        let mut running = 0u64;
        for other in change
            .objects
            .iter()
            .filter(|o| o.kind == "Deployment" && o.name != created.name)
        {
            let Ok(Some(live)) = kube.get(&other.key(), &other.api_version).await else {
                continue;
            };
            if label(&live).as_deref() == Some(deployment.as_str()) {
                let replicas = live.pointer("/spec/replicas").and_then(Value::as_u64);
                running = running.max(replicas.unwrap_or(1));
            }
        }
        let replicas = running.clamp(min, max.max(min));
        if replicas > 1 {
            out.push(InitialScale {
                deployment: created.key(),
                describe: created.describe(),
                replicas: u32::try_from(replicas).unwrap_or(u32::MAX),
            });
        }
    }
    out
}

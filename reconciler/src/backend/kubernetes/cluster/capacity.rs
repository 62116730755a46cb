//! GPU capacity for plan-time checks: a namespace's ResourceQuota GPU limits and
//! usage, and the GPUs allocatable on the cluster's nodes.

use k8s_openapi::api::core::v1::{Node, ResourceQuota};
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::error::request_error;
use super::{Clusters, Result};
use crate::backend::kubernetes::diff::parse_quantity;

/// The extended resource GPUs are requested as.
const GPU: &str = "nvidia.com/gpu";

/// GPUs available to a namespace, as far as the cluster lets Cairn see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// The tightest `requests.nvidia.com/gpu` (or `nvidia.com/gpu`) hard limit of the
    /// namespace's ResourceQuotas; `None` without one.
    pub quota_hard: Option<u64>,
    /// What that quota counts as used; `None` without a quota or before the quota
    /// controller has counted.
    pub quota_used: Option<u64>,
    /// The sum of `nvidia.com/gpu` allocatable over the nodes; `None` when nodes can't be
    /// listed (RBAC).
    pub nodes_allocatable: Option<u64>,
}

impl Clusters {
    /// Reads the GPUs a namespace may use: its ResourceQuotas' GPU limits and usage,
    /// and the GPUs allocatable on the cluster's nodes (`None` when nodes can't be
    /// listed: a namespaced role usually can't).
    pub async fn capacity(&self, context: Option<&str>, namespace: &str) -> Result<Capacity> {
        let cluster = self.cluster(context).await?;
        let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), namespace);
        let quotas = quotas.list(&ListParams::default()).await.map_err(|e| {
            request_error(
                &cluster,
                "list",
                format!("ResourceQuotas in namespace `{namespace}`"),
                e,
            )
        })?;
        let mut capacity = Capacity::default();
        for quota in &quotas.items {
            let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
            let used = quota.status.as_ref().and_then(|s| s.used.as_ref());
            for resource in [format!("requests.{GPU}"), GPU.to_string()] {
                if let Some(h) = hard
                    .and_then(|h| h.get(&resource))
                    .and_then(|q| whole(&q.0))
                {
                    // Every quota is enforced: the tightest one is the limit.
                    if capacity.quota_hard.is_none_or(|c| h < c) {
                        capacity.quota_hard = Some(h);
                        capacity.quota_used = used
                            .and_then(|u| u.get(&resource))
                            .and_then(|q| whole(&q.0));
                    }
                }
            }
        }
        let nodes: Api<Node> = Api::all(cluster.client.clone());
        capacity.nodes_allocatable = match nodes.list(&ListParams::default()).await {
            Ok(list) => Some(
                list.items
                    .iter()
                    .filter_map(|n| n.status.as_ref()?.allocatable.as_ref()?.get(GPU))
                    .filter_map(|q| whole(&q.0))
                    .sum(),
            ),
            Err(kube::Error::Api(status)) if status.code == 403 => None,
            Err(e) => return Err(request_error(&cluster, "list", "nodes".into(), e)),
        };
        Ok(capacity)
    }
}

/// A quantity as a whole number (rounded down); `None` when it isn't one.
fn whole(quantity: &str) -> Option<u64> {
    let nanos = parse_quantity(quantity)?;
    u64::try_from(nanos / 1_000_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_quantities() {
        assert_eq!(whole("4"), Some(4));
        assert_eq!(whole("1500m"), Some(1));
        assert_eq!(whole("-1"), None);
        assert_eq!(whole("x"), None);
    }
}

//! GPU capacity for plan-time checks: a namespace's ResourceQuota GPU limits and
//! usage, and each node's allocatable GPUs less what the pods bound to it request.
//!
//! What a role may not read is an unknown, never an error: a namespaced role can't list
//! nodes (`nodes: None`) nor pods at the cluster scope (`in_use_known: false`). The
//! namespace's quotas must be readable: without them no GPU request can be checked.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, ResourceQuota};
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::error::request_error;
use super::{Clusters, Result};
use crate::backend::kubernetes::diff::parse_quantity;

/// The extended resource GPUs are requested as.
const GPU: &str = "nvidia.com/gpu";

/// The label Karpenter puts on every node it provisions, naming the NodePool that
/// made it: that pool adds nodes when pods are pending, so a node carrying it is in a
/// pool that can grow.
pub const AUTOSCALED_NODE_LABEL: &str = "karpenter.sh/nodepool";

/// GPUs available to a namespace, as far as the cluster lets Cairn see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// The tightest `requests.nvidia.com/gpu` (or `nvidia.com/gpu`) hard limit of the
    /// namespace's ResourceQuotas; `None` without one.
    pub quota_hard: Option<u64>,
    /// What that quota counts as used; `None` without a quota or before the quota
    /// controller has counted.
    pub quota_used: Option<u64>,
    /// The cluster's schedulable nodes with GPUs, by name; `None` when nodes can't be
    /// listed (RBAC).
    pub nodes: Option<Vec<NodeGpus>>,
    /// Whether the GPUs requested by the pods on those nodes could be read (listing
    /// pods at the cluster scope); without, every node's `in_use` is 0.
    pub in_use_known: bool,
}

/// One node's GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeGpus {
    pub name: String,
    /// Its labels, matched against a pod's node selector.
    pub labels: BTreeMap<String, String>,
    /// `status.allocatable["nvidia.com/gpu"]`.
    pub allocatable: u64,
    /// What the pods bound to it (neither succeeded nor failed) request.
    pub in_use: u64,
}

impl NodeGpus {
    /// The GPUs left for new pods.
    pub fn free(&self) -> u64 {
        self.allocatable.saturating_sub(self.in_use)
    }

    /// Whether an autoscaler can add nodes like it ([`AUTOSCALED_NODE_LABEL`]).
    pub fn autoscaled(&self) -> bool {
        self.labels.contains_key(AUTOSCALED_NODE_LABEL)
    }

    /// Whether a pod with this node selector may run on it.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|l| l == v))
    }
}

impl Clusters {
    /// Reads the GPUs a namespace may use: its ResourceQuotas' GPU limits and usage,
    /// and the cluster's schedulable nodes with the GPUs their pods already request
    /// (unknowns where the role may not read nodes or pods).
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
        let nodes = match nodes.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(status)) if status.code == 403 => return Ok(capacity),
            Err(e) => return Err(request_error(&cluster, "list", "nodes".into(), e)),
        };
        let mut gpu_nodes: Vec<NodeGpus> = nodes
            .into_iter()
            .filter(|n| {
                !n.spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false)
            })
            .filter_map(|n| {
                let allocatable = n
                    .status
                    .as_ref()?
                    .allocatable
                    .as_ref()?
                    .get(GPU)
                    .and_then(|q| whole(&q.0))
                    .filter(|g| *g > 0)?;
                Some(NodeGpus {
                    name: n.metadata.name.unwrap_or_default(),
                    labels: n.metadata.labels.unwrap_or_default(),
                    allocatable,
                    in_use: 0,
                })
            })
            .collect();
        gpu_nodes.sort_by(|a, b| a.name.cmp(&b.name));
        match self.gpus_in_use(&cluster).await {
            Ok(Some(in_use)) => {
                capacity.in_use_known = true;
                for node in &mut gpu_nodes {
                    node.in_use = in_use.get(&node.name).copied().unwrap_or(0);
                }
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        capacity.nodes = Some(gpu_nodes);
        Ok(capacity)
    }

    /// The GPUs requested by the pods bound to each node that have not finished, by
    /// node name; `None` when pods can't be listed at the cluster scope.
    async fn gpus_in_use(
        &self,
        cluster: &super::connect::Cluster,
    ) -> Result<Option<HashMap<String, u64>>> {
        let pods: Api<Pod> = Api::all(cluster.client.clone());
        let mut params = ListParams::default().limit(500);
        let mut in_use: HashMap<String, u64> = HashMap::new();
        loop {
            let page = match pods.list(&params).await {
                Ok(page) => page,
                Err(kube::Error::Api(status)) if status.code == 403 => return Ok(None),
                Err(e) => return Err(request_error(cluster, "list", "pods".into(), e)),
            };
            for pod in &page.items {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed")) {
                    continue;
                }
                let Some(spec) = &pod.spec else { continue };
                let Some(node) = &spec.node_name else {
                    continue;
                };
                *in_use.entry(node.clone()).or_default() += pod_gpus(spec);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(Some(in_use)),
            }
        }
    }
}

/// The GPUs a pod requests, as the scheduler counts them: the sum over its containers,
/// or its largest init container if that is more (init containers run one at a time).
fn pod_gpus(spec: &k8s_openapi::api::core::v1::PodSpec) -> u64 {
    let gpus = |c: &k8s_openapi::api::core::v1::Container| {
        let resources = c.resources.as_ref();
        resources
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(GPU))
            .or_else(|| {
                resources
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get(GPU))
            })
            .and_then(|q| whole(&q.0))
            .unwrap_or(0)
    };
    let main: u64 = spec.containers.iter().map(gpus).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(gpus)
        .max()
        .unwrap_or(0);
    main.max(init)
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

    #[test]
    fn a_node_matches_a_selector_by_every_label() {
        let node = NodeGpus {
            name: "a".into(),
            labels: BTreeMap::from([
                ("agentpool".to_string(), "a100".to_string()),
                (AUTOSCALED_NODE_LABEL.to_string(), "gpu".to_string()),
            ]),
            allocatable: 4,
            in_use: 3,
        };
        assert!(node.matches(&BTreeMap::new()));
        assert!(node.matches(&BTreeMap::from([("agentpool".into(), "a100".into())])));
        assert!(!node.matches(&BTreeMap::from([("agentpool".into(), "t4".into())])));
        assert!(node.autoscaled());
        assert_eq!(node.free(), 1);
    }
}

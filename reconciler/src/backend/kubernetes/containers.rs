//! What the rendered pods' containers get besides their image and command:
//! - resources: CPU and memory as the job or deployment says, else a share of the
//!   instance type's ([`DEFAULT_REQUEST_PERCENT`]); memory limited to the same (a
//!   container past it is killed rather than the node), no CPU limit (throttling slows
//!   training without protecting anyone), and GPUs requested and limited alike, as
//!   Kubernetes requires for extended resources;
//! - a job's environment, with the distributed-training contract;
//! - the port of an authenticated endpoint's `cairn pod-proxy`;
//! - the instance type as templates see it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::backend::distribution::{Distribution, RANK_VARIABLES};
use crate::manifest::{InstanceType, Quantity};

/// An instance type as templates see it (`instance_type`).
pub(super) fn instance_vars(name: &str, it: &InstanceType) -> Value {
    json!({
        "name": name,
        "cpu": it.cpu.as_ref().map(|q| q.as_str()),
        "memory": it.memory.as_ref().map(|q| q.as_str()),
        "gpus": it.gpus,
        "gpu_type": it.gpu_type,
        "node_selector": it.node_selector,
        "tolerations": it.tolerations,
    })
}

/// The share of an instance type's nominal CPU and memory a pod requests when its job or
/// deployment names none: a node's allocatable is its capacity less what the kubelet,
/// the system and the eviction threshold reserve and what its DaemonSets request, so a
/// pod asking for the whole machine would never be scheduled.
pub const DEFAULT_REQUEST_PERCENT: u128 = 80;

/// A container's `resources`: CPU and memory as the job or deployment asks (else
/// [`DEFAULT_REQUEST_PERCENT`] of the instance type's), memory also as the limit, and
/// the GPUs as request and limit.
pub(super) fn resources(
    instance: Option<&InstanceType>,
    cpu: Option<&Quantity>,
    memory: Option<&Quantity>,
    gpus: u32,
) -> Value {
    let mut requests = Map::new();
    let mut limits = Map::new();
    let share = |q: &Quantity| q.millis() * DEFAULT_REQUEST_PERCENT / 100;
    let cpu = cpu.map(|q| q.as_str().to_string()).or_else(|| {
        let it = instance?.cpu.as_ref()?;
        Some(format!("{}m", share(it)))
    });
    let memory = memory.map(|q| q.as_str().to_string()).or_else(|| {
        let it = instance?.memory.as_ref()?;
        // Thousandths of a byte → whole MiB, rounded down (GiB when exact).
        let mib = share(it) / 1000 / (1 << 20);
        Some(if mib % 1024 == 0 {
            format!("{}Gi", mib / 1024)
        } else {
            format!("{mib}Mi")
        })
    });
    if let Some(cpu) = cpu {
        requests.insert("cpu".into(), cpu.into());
    }
    if let Some(memory) = memory {
        requests.insert("memory".into(), memory.clone().into());
        limits.insert("memory".into(), memory.into());
    }
    if gpus > 0 {
        requests.insert("nvidia.com/gpu".into(), gpus.to_string().into());
        limits.insert("nvidia.com/gpu".into(), gpus.to_string().into());
    }
    let mut out = Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}

/// Where `cairn pod-proxy` listens in the pods of an endpoint that authenticates or
/// captures requests: beside the server, which keeps the endpoint's port.
pub const POD_PROXY_PORT: u16 = 8440;

pub(super) fn pod_proxy_port(endpoint_port: u16) -> u16 {
    if endpoint_port == POD_PROXY_PORT {
        POD_PROXY_PORT + 1
    } else {
        POD_PROXY_PORT
    }
}

/// A job container's `env`: the job's variables and Cairn's, then the
/// distributed-training contract ([`Distribution`]); each instance's rank comes from
/// its completion index (the annotation every Indexed Job pod carries; 0 otherwise).
pub(super) fn job_env(mut env: BTreeMap<&str, String>, group: &Distribution) -> Value {
    for (name, value) in group.shared_env() {
        env.insert(name, value);
    }
    let mut list: Vec<Value> = env
        .into_iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    for name in RANK_VARIABLES {
        list.push(if group.instances > 1 {
            json!({"name": name, "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            }}})
        } else {
            json!({"name": name, "value": "0"})
        });
    }
    Value::Array(list)
}

/// `[{name, value}]`, sorted by name, as a container's `env` wants it.
pub(super) fn env_list<K: AsRef<str>>(env: BTreeMap<K, String>) -> Value {
    Value::Array(
        env.into_iter()
            .map(|(name, value)| json!({ "name": name.as_ref(), "value": value }))
            .collect(),
    )
}

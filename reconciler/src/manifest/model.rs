//! The manifest model: one struct per kind, exactly as written in TOML. Unknown fields are
//! rejected. Values that later checks point at are wrapped in [`Spanned`] so a finding can
//! name the file, line and column.
//!
//! Reference fields hold the text the user wrote (`"compute.gpu-east"`); they are read and
//! resolved by [`crate::desired`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use super::replicas::{Autoscale, Replicas};
use super::units::{Duration, Quantity};

/// A string with the place it was written.
pub type SpannedStr = Spanned<String>;
/// A map whose keys keep their places (names of deployments, inputs, …).
pub type SpannedMap<V> = BTreeMap<Spanned<String>, Spanned<V>>;

/// `[workspace]` in `<workspace>/workspace.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub environment: Environment,
    /// Where datasets, models, runs, the lock and the journal live: `file://…` (relative
    /// to the manifests root) or `s3://bucket/prefix`. Defaults to `file://.cairn/store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<SpannedStr>,
    /// S3 endpoint URL for S3-compatible servers (MinIO, Ceph, Garage, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SpannedStr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Kubernetes namespace for this workspace's objects; defaults to the workspace name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<SpannedStr>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl WorkspaceSpec {
    /// The store URL, with the embedded default.
    pub fn store_url(&self) -> &str {
        self.store
            .as_ref()
            .map_or(DEFAULT_STORE, |s| s.get_ref().as_str())
    }
}

/// The store used when a workspace names none: a folder under the manifests root.
pub const DEFAULT_STORE: &str = "file://.cairn/store";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    #[serde(alias = "development")]
    Dev,
    #[serde(alias = "test")]
    Staging,
    #[serde(alias = "prod")]
    Production,
}

/// `[compute.<name>]`: where jobs run and endpoints serve.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    pub target: Spanned<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Kubernetes: kubeconfig context; the current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<SpannedStr>,
    /// Kubernetes: namespace; the workspace's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<SpannedStr>,
    /// Kubernetes: a Gateway API gateway (`namespace/name` or `name`) for weighted traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SpannedStr>,
    /// Kubernetes: the machine shapes jobs and deployments can ask for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_types: SpannedMap<InstanceType>,
    /// Kubernetes: the node pool grows when pods are pending (a cluster autoscaler or
    /// Karpenter), so GPUs its nodes don't have now are not refused at plan time: the
    /// pods may wait for the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Spanned<bool>>,
    /// Kubernetes: the StorageClass of the volumes runs write their outputs to before
    /// they are uploaded; the cluster's default when absent. A job with several
    /// instances needs one that allows `ReadWriteMany`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<SpannedStr>,
    /// GPU quota: the most GPUs this compute may use at once. `0` means no GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpus: Option<Spanned<u32>>,
    /// Shut idle capacity down after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_shutdown: Option<Spanned<Duration>>,
    /// Where the compute is (`eu-west`, `on-prem-frankfurt`): data-sovereignty policies
    /// compare it with datasets' `region` tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<SpannedStr>,
    /// What the compute is for; both when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Spanned<Vec<Role>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ComputeSpec {
    /// Whether its node pool can grow (`autoscale = true`).
    pub fn autoscale(&self) -> bool {
        self.autoscale.as_ref().is_some_and(|a| *a.get_ref())
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|r| r.get_ref().contains(&role))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Kubernetes,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Train,
    Serve,
}

/// `[compute.<name>.instance_types.<type>]`: a machine shape.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceType {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    #[serde(default)]
    pub gpus: u32,
    /// e.g. `nvidia-a100-80gb`; informative, and used in node selectors by templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// A Kubernetes toleration, as in a pod spec.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// `[dataset.<name>]`: versioned data, read from a folder or produced by a job.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A folder relative to the workspace folder, or an object-store URL (`s3://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SpannedStr>,
    /// Or: `job.<name>` that writes it (a preparation or scoring step); each of its runs
    /// is a version, named after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_job: Option<SpannedStr>,
    pub format: Spanned<DataFormat>,
    /// Pin: the content must hash to this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SpannedStr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form tags; `pii` and `region` are read by the shipped policies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Csv,
    Tsv,
    Parquet,
    Json,
    Jsonl,
    Arrow,
    Images,
    Audio,
    Text,
    Binary,
}

/// `[job.<name>]`: a training (or any batch) job.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `compute.<name>`.
    pub compute: SpannedStr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<SpannedStr>,
    /// Container image (required on Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<SpannedStr>,
    /// Command and arguments; `{{ inputs.<name> }}` and `{{ outputs.<name> }}` expand to
    /// paths. Required on the local target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Spanned<Vec<SpannedStr>>>,
    /// Input name → `dataset.<name>` or `model.<name>`, optionally pinned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: SpannedMap<String>,
    /// Output name → `model.<name>` or `dataset.<name>` (which names the job in its
    /// `from_job`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: SpannedMap<String>,
    /// GPUs per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Spanned<u32>>,
    /// Instances (distributed training); 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `env` keys whose values are secrets: shown as `(sensitive)` in plans and logs
    /// (keys like `*_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*` are without being listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<SpannedStr>,
    /// Each attempt's running time (time spent queued or being scheduled not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<Duration>>,
    /// How many times a failed attempt runs again (every instance together).
    #[serde(default)]
    pub retries: u32,
    /// CPU each instance requests (Kubernetes); a share of the instance type's when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory each instance requests and is limited to (Kubernetes); a share of the
    /// instance type's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// A Kueue `LocalQueue` (Kubernetes): the run's Job is created suspended and Kueue
    /// admits all its pods at once, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<SpannedStr>,
    /// How long, once admitted, all instances may take to be running before the attempt
    /// fails with the cluster's reasons (Kubernetes; 10 minutes when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout: Option<Spanned<Duration>>,
    /// The size of the volume a run writes its outputs to, which outlives the training
    /// pods so that their GPUs are free while the outputs upload (Kubernetes; 10Gi when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_size: Option<Spanned<Quantity>>,
    /// A hyperparameter search: trials of the job, the best one's outputs kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Spanned<super::sweep::SweepSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The names of `sensitive` that `env` does not declare.
pub fn undeclared_sensitive<'a>(
    sensitive: &'a [SpannedStr],
    env: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a SpannedStr> {
    sensitive.iter().filter(|k| !env.contains_key(k.get_ref()))
}

impl JobSpec {
    pub fn gpus(&self) -> u32 {
        self.gpus.as_ref().map_or(0, |g| *g.get_ref())
    }

    pub fn instances(&self) -> u32 {
        self.instances.as_ref().map_or(1, |i| *i.get_ref())
    }
}

/// `[model.<name>]`: a versioned model, produced by a job or imported.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `job.<name>` that produces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_job: Option<SpannedStr>,
    /// Or: a folder relative to the workspace folder, or an object-store URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SpannedStr>,
    pub format: Spanned<ModelFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Quality gates every new version must pass before an endpoint that follows the
    /// model (an unpinned deployment) rolls it out; a version that fails stays
    /// registered. A pin is an explicit choice and is not gated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_if: Option<Spanned<Vec<SpannedStr>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Safetensors,
    Onnx,
    Custom,
}

/// `[endpoint.<name>]`: an online endpoint with blue-green deployments.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// `compute.<name>`.
    pub compute: SpannedStr,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Spanned<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub deployments: SpannedMap<DeploymentSpec>,
    /// Deployment name → percent of live traffic; all weights sum to 0 or 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Spanned<SpannedMap<u32>>>,
    /// Deployment name → percent of traffic copied to it (at most one, at most 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Spanned<SpannedMap<u32>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Spanned<RolloutSpec>>,
    /// Quality gates a new model version's metrics must pass before it is rolled out
    /// (`"auc >= 0.80"`, `"auc >= serving.auc - 0.005"`; [`crate::promotion`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_if: Option<Spanned<Vec<SpannedStr>>>,
    /// Input-drift monitoring: a share of the requests captured for `cairn drift`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Spanned<super::monitor::MonitorSpec>>,
}

impl EndpointSpec {
    /// Returns the declared weight of each deployment that has one.
    pub fn weights(&self) -> impl Iterator<Item = (&str, u32)> {
        self.traffic
            .iter()
            .flat_map(|t| t.get_ref().iter())
            .map(|(k, v)| (k.get_ref().as_str(), *v.get_ref()))
    }

    pub fn weight_of(&self, deployment: &str) -> u32 {
        self.weights()
            .find(|(name, _)| *name == deployment)
            .map_or(0, |(_, w)| w)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// A static key in the `Authorization: Bearer` header.
    #[default]
    Key,
    /// A short-lived token.
    Token,
    /// No authentication (refused in production by the shipped policies).
    None,
}

/// `[endpoint.<name>.deployments.<deployment>]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// `model.<name>` (follows the newest version) or `model.<name>@<version>` (pinned).
    pub model: SpannedStr,
    /// A count (1 when absent), or autoscaling bounds and a target ([`Replicas`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Spanned<Replicas>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<SpannedStr>,
    /// GPUs per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Spanned<u32>>,
    /// Serving image (Kubernetes); Cairn's reference server when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<SpannedStr>,
    /// CPU each replica requests (Kubernetes); see [`JobSpec::cpu`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory each replica requests and is limited to (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `env` keys whose values are secrets (see [`JobSpec::sensitive`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<SpannedStr>,
    /// A serving process to run instead of Cairn's reference server: program and
    /// arguments, where `{{ model }}` expands to the model version's folder (on this
    /// machine, or in the pod) and `{{ port }}` to the port it must listen on
    /// ([`SERVER_PLACEHOLDERS`]). On Kubernetes, the serving container's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Spanned<Vec<SpannedStr>>>,
    /// The readiness path, answered with 200 once a replica can serve; `/healthz` when
    /// absent ([`DEFAULT_HEALTH_PATH`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<SpannedStr>,
    /// The port the probes read `health` on, when not the serving port (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<Spanned<u16>>,
}

/// The placeholders a deployment's `command` may hold, as `{{ <name> }}`.
pub const SERVER_PLACEHOLDERS: [&str; 2] = ["model", "port"];

/// The readiness path of a deployment that declares no `health`.
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";

impl DeploymentSpec {
    /// The replicas a revision starts with: the count, or the autoscaling `min`.
    pub fn replicas(&self) -> u32 {
        self.replicas.as_ref().map_or(1, |r| r.get_ref().initial())
    }

    /// The most replicas it may run: the count, or the autoscaling `max`.
    pub fn most_replicas(&self) -> u32 {
        self.replicas.as_ref().map_or(1, |r| r.get_ref().most())
    }

    /// Its autoscaling, when `replicas` is a table.
    pub fn autoscale(&self) -> Option<&Autoscale> {
        self.replicas.as_ref().and_then(|r| r.get_ref().autoscale())
    }

    pub fn gpus(&self) -> u32 {
        self.gpus.as_ref().map_or(0, |g| *g.get_ref())
    }

    /// The declared `command`, as plain strings.
    pub fn command(&self) -> Option<Vec<String>> {
        self.command
            .as_ref()
            .map(|c| c.get_ref().iter().map(|a| a.get_ref().clone()).collect())
    }

    /// The readiness path: `health`, or [`DEFAULT_HEALTH_PATH`].
    pub fn health(&self) -> &str {
        self.health
            .as_ref()
            .map_or(DEFAULT_HEALTH_PATH, |h| h.get_ref().as_str())
    }
}

/// `[endpoint.<name>.rollout]`: how traffic moves to a new version.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Traffic percentages for the new version, increasing, ending at 100.
    pub steps: Spanned<Vec<u32>>,
    /// How long each step is held and watched; 30s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_wait: Option<Duration>,
    /// Largest tolerated error rate (0–1) during a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<Spanned<f64>>,
    /// Largest tolerated p99 latency in milliseconds during a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<Spanned<u64>>,
    /// Requests the new version must answer during a gated step before the gates judge
    /// it (fewer fails the step: no traffic is no evidence); 20 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<Spanned<u64>>,
    #[serde(default = "yes")]
    pub auto_rollback: bool,
    /// Percent of requests copied to the new version for one `step_wait` before any
    /// traffic moves (the gates judge its answers; clients never see them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Spanned<u32>>,
    /// How long the old version keeps its replicas after promotion; 5m when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<Duration>,
    /// Where the gates read each revision's requests, errors and latency on
    /// Kubernetes; each pod's `/metrics` (as `cairn serve` writes them) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Spanned<MetricsSpec>>,
}

/// `[endpoint.<name>.rollout.metrics]`: the gates read from Prometheus, by a preset's
/// queries or the manifest's own ([`crate::rollout_metrics`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// The Prometheus server's base URL, e.g. `http://prometheus.monitoring:9090`.
    pub prometheus: SpannedStr,
    /// Whose metric names the queries read: `cairn` (the default), `istio` or
    /// `linkerd` ([`crate::rollout_metrics::Preset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<SpannedStr>,
    /// PromQL templates replacing the preset's: a revision's cumulative requests, its
    /// failed requests, and its latency histogram's buckets summed by `le`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<SpannedStr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<SpannedStr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<SpannedStr>,
    /// The unit of the `le` bounds `latency` returns: `s` or `ms`; the preset's when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_unit: Option<SpannedStr>,
}

fn yes() -> bool {
    true
}

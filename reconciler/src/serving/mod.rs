//! Endpoints: what an endpoint's live serving should be, how a plan decides between
//! create, update and rollout, and how an apply gets there on any serving target.
//!
//! The declared side is an [`EndpointValue`]: each deployment resolved to a model version
//! and a *revision* (the version, plus a hash of the deployment's environment when it has
//! one), the traffic map, the mirror and the rollout policy. It is what the plan shows as
//! `after` and what the state records once applied.
//!
//! The live side is a [`LiveEndpoint`], observed through a [`Serving`] target: the router's
//! backends (name → deployment revision), their weights and readiness. A backend is named
//! after its deployment (`blue`); while a new revision of a deployment rolls out beside the
//! running one it is named `blue@<revision>`, which is also what the pin header takes.
//!
//! [`apply`] converges from whatever is live, so a rerun after a crash finishes the job:
//! 0. stop the revisions that carry no traffic and aren't declared (an old revision kept
//!    after an earlier promotion, one nothing routes to), so that no table the apply
//!    writes names a revision that a scheduled stop might take away under it;
//! 1. start every declared revision (the target waits until each replica is ready; a
//!    revision that fails to start is undone by the target and the old one keeps serving);
//! 2. put new revisions behind the router at 0 %;
//! 3. walk traffic from the live weights to the declared ones with the rollout engine
//!    ([`crate::rollout`]), gated by error rate and p99 latency;
//! 4. promote: name each new revision after its deployment, keep the old one at 0 % and
//!    retire it after `scale_down_delay` — or, when a gate fails, move all traffic back,
//!    stop the new revisions and fail the change saying why.
//!
//! A rollout is finished only by its promotion (step 4): until then its new revision
//! keeps the temporary name. So when an apply dies part way (or the target does), what
//! serves says how far it got, whatever the state recorded, and the next plan shows the
//! rollout again from there: the step traffic was left at is held again under the gates,
//! then the remaining steps, and a rollback goes back to the revision that served before.
//! A new, never-gated revision never gets traffic by skipping the steps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::rollout::{self, Traffic, Weights};

pub use crate::plan::endpoint::{
    deployment_revision, revision, DeploymentValue, EndpointValue, MirrorValue, RolloutPlan,
    RolloutValue, DEFAULT_SCALE_DOWN_DELAY,
};

/// One router backend as observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveBackend {
    pub deployment: String,
    pub revision: String,
    pub replicas: u32,
    pub ready_replicas: u32,
    /// What the target's autoscaler did to it, oldest first, where the target keeps
    /// that (the local supervisor does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<ScaleChange>,
}

/// The autoscaler's changes to an endpoint's revisions made after `since` (seconds since
/// the Unix epoch), as journal events (`{"event": "autoscaled", …}`), oldest first: an
/// apply of the endpoint records what the autoscaler did since the one before.
pub fn scale_events(live: &LiveEndpoint, since: u64) -> Vec<serde_json::Value> {
    let mut changes: Vec<(&LiveBackend, &ScaleChange)> = live
        .backends
        .values()
        .flat_map(|b| b.scaled.iter().map(move |c| (b, c)))
        .filter(|(_, c)| c.at > since)
        .collect();
    changes.sort_by_key(|(_, c)| c.at);
    changes
        .into_iter()
        .map(|(b, c)| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.at);
            serde_json::json!({
                "event": "autoscaled",
                "deployment": b.deployment,
                "revision": b.revision,
                "at": humantime::format_rfc3339_seconds(at).to_string(),
                "from": c.from,
                "to": c.to,
                "requests_per_s": (c.requests_per_s * 10.0).round() / 10.0,
            })
        })
        .collect()
}

/// One change an autoscaler made to a revision's replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleChange {
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    pub from: u32,
    pub to: u32,
    /// The request rate that asked for it.
    pub requests_per_s: f64,
}

/// What serves an endpoint now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEndpoint {
    pub port: Option<u16>,
    /// Whether the router answers.
    pub serving: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Router backend name → revision.
    pub backends: BTreeMap<String, LiveBackend>,
    pub weights: Weights,
    /// Revisions (deployment, revision) the target runs for the endpoint that no backend
    /// names, e.g. left by an apply that died between starting and routing them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub idle: BTreeSet<(String, String)>,
}

impl LiveEndpoint {
    /// The revision answering for `deployment` under its own name.
    pub fn revision_of(&self, deployment: &str) -> Option<&str> {
        self.backends.get(deployment).map(|b| b.revision.as_str())
    }

    /// Traffic per deployment (revisions of one deployment added up).
    pub fn deployment_weights(&self) -> Weights {
        let mut out = Weights::new();
        for (name, weight) in &self.weights {
            let deployment = self
                .backends
                .get(name)
                .map_or(name.as_str(), |b| b.deployment.as_str());
            *out.entry(deployment.to_string()).or_default() += weight;
        }
        out.retain(|_, w| *w > 0);
        out
    }
}

/// Names one endpoint on a target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointId {
    pub workspace: String,
    pub name: String,
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/endpoint.{}", self.workspace, self.name)
    }
}

/// One revision of a deployment to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionSpec {
    pub deployment: String,
    pub revision: String,
    pub model: String,
    pub version: String,
    /// How many replicas it starts with: the declared count, or for an autoscaled
    /// deployment as many as its serving revision runs now (within the bounds), so that
    /// a rollout's new revision can take its share of the load.
    pub replicas: u32,
    /// The bounds and target it scales by, when autoscaled.
    pub autoscale: Option<crate::manifest::Autoscale>,
    pub env: BTreeMap<String, String>,
    /// The serving process, placeholders unexpanded; Cairn's reference server when
    /// absent.
    pub command: Option<Vec<String>>,
    /// The readiness path its replicas answer.
    pub health: String,
}

/// The router's table for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    pub port: Option<u16>,
    /// Backend name → (deployment, revision).
    pub backends: BTreeMap<String, (String, String)>,
    pub weights: Weights,
    /// Backend name and percent.
    pub mirror: Option<(String, u32)>,
    /// Requests need the endpoint's key.
    pub auth: bool,
    /// Input-drift monitoring: capture one in this many requests, keeping at most this
    /// many bytes.
    pub capture: Option<(u32, u64)>,
}

/// Errors of serving targets and of applying endpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Target(String),
    #[error("the rollout engine failed: {0}")]
    Rollout(#[from] rollout::Error),
    #[error("rolled back {}: {reason}; all traffic is on the previous revision", at_step(*.step))]
    RolledBack { step: u32, reason: String },
    #[error(
        "halted at step {step}%: {reason}; traffic stays split as it was (auto_rollback is off)"
    )]
    Halted { step: u32, reason: String },
    #[error("{deployment} never became ready; traffic was not moved")]
    NotReady { deployment: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn at_step(step: u32) -> String {
    if step == 0 {
        "during the mirror phase, before any traffic moved".to_string()
    } else {
        format!("at step {step}%")
    }
}

/// A target that serves endpoints: the local supervisor and router, or Kubernetes.
#[async_trait]
pub trait Serving: Send + Sync {
    /// What serves the endpoint now; `None` when nothing does. A target whose serving
    /// outlives a control process (the local supervisor) starts that process first, so
    /// that the answer is what serves, not what was last recorded.
    async fn observe(&self, endpoint: &EndpointId) -> Result<Option<LiveEndpoint>>;
    /// Starts the revisions that are not running and scales the others to `replicas`;
    /// returns once every replica is ready. On failure nothing it started keeps running.
    async fn deploy(&self, endpoint: &EndpointId, revisions: &[RevisionSpec]) -> Result<()>;
    /// Puts the table in force (binding the port first when the router is new or moves).
    async fn route(&self, endpoint: &EndpointId, table: &RouteTable) -> Result<()>;
    /// The rollout engine's handle on the endpoint's traffic.
    fn traffic(&self, endpoint: &EndpointId) -> Box<dyn Traffic>;
    /// Stops a revision after `after` (at once for zero).
    async fn retire(
        &self,
        endpoint: &EndpointId,
        deployment: &str,
        revision: &str,
        after: Duration,
    ) -> Result<()>;
    /// Stops the router and every revision of the endpoint.
    async fn remove(&self, endpoint: &EndpointId) -> Result<()>;
}

/// The name a deployment's new revision has while it rolls out beside the old one.
pub fn canary_name(deployment: &str, revision: &str) -> String {
    format!("{deployment}@{revision}")
}

mod decide;
mod orchestrate;

pub use decide::{decide, effective_steps, Decision};
pub use orchestrate::{apply, walk};

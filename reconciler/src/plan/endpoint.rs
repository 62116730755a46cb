//! An endpoint as the plan records it: each deployment resolved to a model version and a
//! *revision*, the traffic map, the mirror and the rollout policy ([`EndpointValue`], the
//! plan's `after` and what the state records once applied), and what the plan shows
//! about a traffic shift ([`RolloutPlan`]). How a plan decides between create, update and
//! rollout, and how an apply gets there, is [`crate::serving`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::Autoscale;
use crate::rollout::{RolloutPolicy, Weights};
use crate::rollout_metrics::MetricsValue;

/// How long an old revision keeps its replicas after a promotion, unless declared.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(300);

/// An endpoint as declared, with versions resolved: the plan's `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointValue {
    /// `compute.<name>`.
    pub compute: String,
    /// The compute's target: `local` or `kubernetes`.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `key`, `token` or `none`.
    pub auth: String,
    pub deployments: BTreeMap<String, DeploymentValue>,
    /// Deployment → percent.
    pub traffic: Weights,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorValue>,
    pub rollout: RolloutValue,
    /// Conditions on a new model version's metrics before it is rolled out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promote_if: Vec<String>,
    /// Input-drift monitoring, when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorValue>,
}

/// `[endpoint.<name>.monitor]`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorValue {
    /// The share of requests captured.
    pub sample: f64,
    pub max_psi: f64,
    /// The most the capture keeps, in bytes.
    pub max_capture: u64,
}

impl MonitorValue {
    /// One in how many requests is captured.
    pub fn every(&self) -> u32 {
        (1.0 / self.sample.clamp(1e-6, 1.0)).round() as u32
    }
}

impl EndpointValue {
    /// The quality gates a new model version of `deployment` must pass: the endpoint's
    /// `promote_if`, then its model's own.
    pub fn gates_of(&self, deployment: &str) -> Vec<String> {
        let mut gates = self.promote_if.clone();
        for c in self
            .deployments
            .get(deployment)
            .iter()
            .flat_map(|d| &d.promote_if)
        {
            if !gates.contains(c) {
                gates.push(c.clone());
            }
        }
        gates
    }

    /// The quality gates of every deployment that `to` gives traffic (keyed by
    /// deployment or by `deployment@revision`).
    pub fn gates(&self, to: &Weights) -> Vec<String> {
        let mut gates = self.promote_if.clone();
        for (key, _) in to.iter().filter(|(_, w)| **w > 0) {
            let name = key.split('@').next().unwrap_or(key);
            for c in self.gates_of(name) {
                if !gates.contains(&c) {
                    gates.push(c);
                }
            }
        }
        gates
    }
}

/// One deployment of an endpoint, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentValue {
    /// The model's name.
    pub model: String,
    pub version: String,
    /// Whether the manifest pins the version (`model.x@v`) or follows the newest.
    pub pinned: bool,
    /// What runs: the version, plus a hash of `env` when there is one.
    pub revision: String,
    /// The replicas it runs, or with autoscaling those a new revision starts with (`min`).
    pub replicas: u32,
    /// Autoscaling bounds and target, when declared: the replicas then move between
    /// `min` and `max` with the load, and plans don't count that as drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The deployment's own serving process, placeholders unexpanded; Cairn's reference
    /// server when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The readiness path, when declared (`/healthz` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The model's own `promote_if`, when the deployment follows the model's newest
    /// version (a pin is not gated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promote_if: Vec<String>,
}

impl DeploymentValue {
    /// The readiness path its replicas answer.
    pub fn health(&self) -> &str {
        self.health
            .as_deref()
            .unwrap_or(crate::manifest::DEFAULT_HEALTH_PATH)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorValue {
    pub deployment: String,
    pub percent: u32,
}

/// `[endpoint.<name>.rollout]` with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutValue {
    pub steps: Vec<u32>,
    /// Humantime, e.g. `30s`.
    pub step_wait: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<u64>,
    /// Requests a gated step must see before it is judged; the engine's default when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    pub auto_rollback: bool,
    /// Percent of requests mirrored to the new revision before traffic moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<u32>,
    pub scale_down_delay: String,
    /// Where the gates read on Kubernetes, when not each pod's `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsValue>,
}

impl RolloutValue {
    /// Without a `[rollout]` table: switch at once when the new revision is ready.
    pub fn immediate() -> RolloutValue {
        RolloutValue {
            steps: vec![100],
            step_wait: "0s".into(),
            max_error_rate: None,
            max_p99_ms: None,
            min_requests: None,
            auto_rollback: true,
            mirror: None,
            scale_down_delay: humantime::format_duration(DEFAULT_SCALE_DOWN_DELAY).to_string(),
            metrics: None,
        }
    }

    pub fn step_wait(&self) -> Duration {
        humantime::parse_duration(&self.step_wait).unwrap_or_default()
    }

    pub fn scale_down_delay(&self) -> Duration {
        humantime::parse_duration(&self.scale_down_delay).unwrap_or(DEFAULT_SCALE_DOWN_DELAY)
    }

    /// The engine's policy.
    pub fn policy(&self) -> RolloutPolicy {
        let defaults = RolloutPolicy::default();
        RolloutPolicy {
            steps: self.steps.clone(),
            step_wait: self.step_wait(),
            max_error_rate: self.max_error_rate,
            max_p99_ms: self.max_p99_ms,
            auto_rollback: self.auto_rollback,
            mirror: self.mirror,
            min_requests: self.min_requests.unwrap_or(defaults.min_requests),
            ..defaults
        }
    }

    /// "10% → 50% → 100%, each held 10s; gates: error rate ≤ 1%, p99 ≤ 250 ms; automatic rollback".
    pub fn describe(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(|s| format!("{s}%")).collect();
        let mirror = self
            .mirror
            .map_or_else(String::new, |m| format!("mirror {m}% first, then "));
        let walk = if self.step_wait() == Duration::ZERO {
            format!("{}, without holding", steps.join(" → "))
        } else {
            format!("{}, each held {}", steps.join(" → "), self.step_wait)
        };
        let mut text = mirror + &walk;
        let mut gates = Vec::new();
        if let Some(rate) = self.max_error_rate {
            gates.push(format!("error rate ≤ {}%", trim_float(rate * 100.0)));
        }
        if let Some(p99) = self.max_p99_ms {
            gates.push(format!("p99 ≤ {p99} ms"));
        }
        if let (Some(n), false) = (self.min_requests, gates.is_empty()) {
            gates.push(format!(
                "judged on at least {n} request{}",
                if n == 1 { "" } else { "s" }
            ));
        }
        if gates.is_empty() {
            text.push_str("; no gates");
        } else {
            text.push_str(&format!("; gates: {}", gates.join(", ")));
            if let Some(metrics) = &self.metrics {
                text.push_str(&format!(", {}", metrics.describe()));
            }
        }
        text.push_str(if self.auto_rollback {
            "; automatic rollback"
        } else {
            "; halts without rolling back"
        });
        text
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What the plan shows about a traffic shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// Router backend → percent, now.
    pub from: Weights,
    /// Router backend → percent, at the end (new revisions under their temporary names).
    pub to: Weights,
    /// The weights at each step.
    pub steps: Vec<Weights>,
    pub step_wait: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<u64>,
    pub auto_rollback: bool,
    /// One line: steps, hold, gates.
    pub summary: String,
}

/// The revision of a deployment: its model version, plus a hash of its environment.
pub fn revision(version: &str, env: &BTreeMap<String, String>) -> String {
    if env.is_empty() {
        version.to_string()
    } else {
        let text = serde_json::to_string(env).unwrap_or_default();
        format!(
            "{version}-{}",
            &crate::content::short_hash(text.as_bytes())[..6]
        )
    }
}

/// The revision of a declared deployment: [`revision`] when it runs Cairn's reference
/// server with the default probes, otherwise the version plus a hash of its environment,
/// `command`, `health` and `health_port` together, so that changing any of them starts a
/// new revision beside the running one (and rolls out) instead of changing it in place.
pub fn deployment_revision(version: &str, spec: &crate::manifest::DeploymentSpec) -> String {
    let process = (
        spec.command(),
        spec.health.as_ref().map(|h| h.get_ref().as_str()),
        spec.health_port.as_ref().map(|p| *p.get_ref()),
    );
    if process == (None, None, None) {
        return revision(version, &spec.env);
    }
    let text = serde_json::to_string(&serde_json::json!({
        "env": spec.env,
        "command": process.0,
        "health": process.1,
        "health_port": process.2,
    }))
    .unwrap_or_default();
    format!(
        "{version}-{}",
        &crate::content::short_hash(text.as_bytes())[..6]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployments_own_process_is_part_of_its_revision() {
        let spec = |extra: &str| -> crate::manifest::DeploymentSpec {
            toml::from_str(&format!(
                "model = \"model.m\"\nenv = {{ A = \"1\" }}\n{extra}"
            ))
            .unwrap()
        };
        // Without a process of its own: the revision it always had.
        let plain = spec("");
        assert_eq!(
            deployment_revision("v1", &plain),
            revision("v1", &plain.env)
        );
        let command = spec("command = [\"serve\", \"{{ port }}\"]");
        let other = spec("command = [\"serve\", \"--port\", \"{{ port }}\"]");
        let health = spec("command = [\"serve\", \"{{ port }}\"]\nhealth = \"/ready\"");
        let port = spec("health_port = 8081");
        let revisions: std::collections::BTreeSet<String> =
            [&plain, &command, &other, &health, &port]
                .iter()
                .map(|d| deployment_revision("v1", d))
                .collect();
        assert_eq!(revisions.len(), 5, "{revisions:?}");
        assert!(revisions.iter().all(|r| r.starts_with("v1")));
        // Stable for the same declaration.
        assert_eq!(
            deployment_revision("v1", &command),
            deployment_revision("v1", &spec("command = [\"serve\", \"{{ port }}\"]"))
        );
    }

    #[test]
    fn min_requests_reaches_the_engine_and_the_plan() {
        let gated = RolloutValue {
            steps: vec![10, 100],
            step_wait: "30s".into(),
            max_error_rate: Some(0.01),
            min_requests: Some(5),
            ..RolloutValue::immediate()
        };
        assert_eq!(gated.policy().min_requests, 5);
        assert!(
            gated.describe().contains("judged on at least 5 requests"),
            "{}",
            gated.describe()
        );
        let default = RolloutValue {
            min_requests: None,
            ..gated
        };
        assert_eq!(
            default.policy().min_requests,
            RolloutPolicy::default().min_requests
        );
        assert!(!default.describe().contains("judged on"));
    }
}

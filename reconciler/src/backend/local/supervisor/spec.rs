//! What is asked of the supervisor and what it reports: a deployment revision to run
//! ([`DeploymentSpec`], checked before anything starts), the names of revisions and
//! replicas, a replica's state and status, and why one failed to start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::indent;
use super::{
    Error, Result, ADDR_PLACEHOLDER, DEFAULT_READY_TIMEOUT, MAX_REPLICAS, PORT_PLACEHOLDER,
};

/// The longest endpoint, deployment, revision or backend name.
pub(super) const NAME_MAX: usize = 128;

/// One revision of an endpoint's deployment, to run as `replicas` processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub endpoint: String,
    pub deployment: String,
    /// The revision (typically the model version). Two revisions of a deployment run side
    /// by side until one is stopped.
    pub revision: String,
    /// Program and arguments. At least one argument holds [`PORT_PLACEHOLDER`] or
    /// [`ADDR_PLACEHOLDER`], so the replica listens where the supervisor expects it.
    /// `cairn` as the program means the supervisor's own binary.
    pub command: Vec<String>,
    /// How many replicas run; with `autoscale`, how many to start with (an apply of a
    /// revision already running keeps the count the autoscaler reached).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Scale between bounds by the router's measured request rate ([`ScaleSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<ScaleSpec>,
    /// Added to the daemon's allow-listed base environment
    /// ([`DaemonOptions::child_env`](super::DaemonOptions::child_env)), with
    /// `CAIRN_ENDPOINT`, `CAIRN_DEPLOYMENT`, `CAIRN_REVISION`, `CAIRN_REPLICA` and
    /// `CAIRN_PORT`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where replicas run; the state folder when not given.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// The readiness probe: a path answered with 200 once the replica can serve.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// How long a replica may take to become ready.
    #[serde(
        rename = "ready_timeout_ms",
        with = "millis",
        default = "default_ready_timeout"
    )]
    pub ready_timeout: Duration,
}

fn default_replicas() -> u32 {
    1
}

/// A deployment revision's autoscaling: the daemon keeps its replicas between `min` and
/// `max`, at `ceil(rate / target_rps)` for the rate its router measures over the last
/// 10 s; more at once, fewer only when no recommendation over the last
/// `scale_down_window` asked for more (as a HorizontalPodAutoscaler does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSpec {
    pub min: u32,
    pub max: u32,
    /// Requests per second one replica is to take.
    pub target_rps: f64,
    #[serde(rename = "scale_down_window_ms", with = "millis")]
    pub scale_down_window: Duration,
}

impl ScaleSpec {
    /// The replicas for this rate, within the bounds.
    pub fn recommend(&self, requests_per_s: f64) -> u32 {
        let wanted = (requests_per_s / self.target_rps).ceil();
        let wanted = if wanted.is_finite() && wanted > 0.0 {
            wanted.min(f64::from(u32::MAX)) as u32
        } else {
            0
        };
        wanted.clamp(self.min, self.max.max(self.min))
    }
}

fn default_health_path() -> String {
    "/healthz".to_string()
}

fn default_ready_timeout() -> Duration {
    DEFAULT_READY_TIMEOUT
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

impl DeploymentSpec {
    /// A spec running `command` once, with the defaults.
    pub fn new(
        endpoint: impl Into<String>,
        deployment: impl Into<String>,
        revision: impl Into<String>,
        command: Vec<String>,
    ) -> DeploymentSpec {
        DeploymentSpec {
            endpoint: endpoint.into(),
            deployment: deployment.into(),
            revision: revision.into(),
            command,
            replicas: 1,
            autoscale: None,
            env: BTreeMap::new(),
            workdir: None,
            health_path: default_health_path(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// A spec running the reference model server: `CAIRN serve --model MODEL_DIR --listen
    /// 127.0.0.1:{{ port }} --name DEPLOYMENT --model-version REVISION`.
    pub fn cairn_serve(
        cairn: &Path,
        model_dir: &Path,
        endpoint: impl Into<String>,
        deployment: impl Into<String>,
        revision: impl Into<String>,
    ) -> Result<DeploymentSpec> {
        let (endpoint, deployment, revision) =
            (endpoint.into(), deployment.into(), revision.into());
        let utf8 = |path: &Path, what: &str| {
            path.to_str()
                .map(String::from)
                .ok_or_else(|| Error::InvalidSpec {
                    deployment: format!("`{endpoint}/{deployment}@{revision}`"),
                    reason: format!("the {what} path `{}` is not UTF-8", path.display()),
                })
        };
        let command = vec![
            utf8(cairn, "program")?,
            "serve".into(),
            "--model".into(),
            utf8(model_dir, "model")?,
            "--listen".into(),
            format!("127.0.0.1:{PORT_PLACEHOLDER}"),
            "--name".into(),
            deployment.clone(),
            "--model-version".into(),
            revision.clone(),
        ];
        Ok(DeploymentSpec::new(endpoint, deployment, revision, command))
    }

    pub fn key(&self) -> DeploymentKey {
        DeploymentKey {
            endpoint: self.endpoint.clone(),
            deployment: self.deployment.clone(),
            revision: self.revision.clone(),
        }
    }

    /// Checks names (they become folder names), the command, the limits.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|reason| Error::InvalidSpec {
            deployment: format!("`{}`", self.key()),
            reason,
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        check_name("endpoint", &self.endpoint)?;
        check_name("deployment", &self.deployment)?;
        check_name("revision", &self.revision)?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("the command is empty".into());
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err("the command holds a NUL character".into());
        }
        if !self.command[1..]
            .iter()
            .any(|a| a.contains(PORT_PLACEHOLDER) || a.contains(ADDR_PLACEHOLDER))
        {
            return Err(format!(
                "no argument of the command holds `{PORT_PLACEHOLDER}` or `{ADDR_PLACEHOLDER}`, \
                 so the supervisor cannot tell the replica where to listen"
            ));
        }
        if self.replicas > MAX_REPLICAS {
            return Err(format!(
                "{} replicas asked for, at most {MAX_REPLICAS} are allowed",
                self.replicas
            ));
        }
        if let Some(scale) = &self.autoscale {
            if scale.min == 0 || scale.min > scale.max || scale.max > MAX_REPLICAS {
                return Err(format!(
                    "autoscaling between {} and {} replicas: the bounds must satisfy 1 ≤ min ≤ max ≤ {MAX_REPLICAS}",
                    scale.min, scale.max
                ));
            }
            if !(scale.target_rps.is_finite() && scale.target_rps > 0.0) {
                return Err(format!(
                    "the autoscaling target of {} requests per second per replica is not a positive number",
                    scale.target_rps
                ));
            }
            if !(scale.min..=scale.max).contains(&self.replicas) {
                return Err(format!(
                    "{} replicas asked for, outside the autoscaling bounds {}–{}",
                    self.replicas, scale.min, scale.max
                ));
            }
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "the environment variable name {key:?} is not valid"
                ));
            }
            if value.contains('\0') {
                return Err(format!(
                    "the environment variable `{key}` holds a NUL character"
                ));
            }
        }
        if !self.health_path.starts_with('/')
            || self
                .health_path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "the health path {:?} must start with `/` and hold no spaces or control characters",
                self.health_path
            ));
        }
        if self.ready_timeout < Duration::from_millis(100)
            || self.ready_timeout > Duration::from_secs(3600)
        {
            return Err("the ready timeout must be between 100 ms and 1 h".into());
        }
        Ok(())
    }

    /// Whether `other` asks for the same processes, apart from how many (a count, or
    /// autoscaling bounds).
    pub(super) fn same_apart_from_replicas(&self, other: &DeploymentSpec) -> bool {
        DeploymentSpec {
            replicas: other.replicas,
            autoscale: other.autoscale.clone(),
            ..self.clone()
        } == *other
    }

    /// The first difference from `other`, for a conflict message.
    pub(super) fn difference(&self, other: &DeploymentSpec) -> &'static str {
        if self.command != other.command {
            "the command differs"
        } else if self.env != other.env {
            "the environment differs"
        } else if self.workdir != other.workdir {
            "the working folder differs"
        } else if self.health_path != other.health_path {
            "the health path differs"
        } else {
            "the ready timeout differs"
        }
    }
}

/// Names become folder names and log lines: letters, digits, `.`, `_`, `-`, not starting
/// with `.`.
pub(super) fn check_name(what: &str, name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the {what} name {name:?} must be 1 to {NAME_MAX} letters, digits, `.`, `_` or `-`, \
             not starting with `.`"
        ))
    }
}

/// A deployment revision: what [`SupervisorClient::apply`](super::SupervisorClient::apply)
/// starts and [`SupervisorClient::stop`](super::SupervisorClient::stop) stops.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeploymentKey {
    pub endpoint: String,
    pub deployment: String,
    pub revision: String,
}

impl fmt::Display for DeploymentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.endpoint, self.deployment, self.revision)
    }
}

/// One replica of a deployment revision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    #[serde(flatten)]
    pub key: DeploymentKey,
    pub index: u32,
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} replica {}", self.key, self.index)
    }
}

/// Where a replica stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Launched, not answering its health path yet.
    Starting,
    /// Answered its health path.
    Ready,
    /// Exited (or failed to restart); a restart is pending after the backoff.
    Crashed { reason: String },
    /// Running, but its health path stopped answering 200 (e.g. the process is stopped or
    /// overloaded): not routed to until it answers again. Not restarted for it.
    NotReady { reason: String },
    /// Being stopped.
    Stopping,
}

/// What the supervisor reports about one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub endpoint: String,
    pub deployment: String,
    pub revision: String,
    pub index: u32,
    /// The process (and process group) while one runs.
    pub pid: Option<u32>,
    /// Where it listens, while a process runs.
    pub addr: Option<SocketAddr>,
    pub state: ReplicaState,
    /// Restarts since it was first started.
    pub restarts: u32,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl ReplicaStatus {
    pub fn key(&self) -> DeploymentKey {
        DeploymentKey {
            endpoint: self.endpoint.clone(),
            deployment: self.deployment.clone(),
            revision: self.revision.clone(),
        }
    }
}

/// Why one replica of an apply did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailure {
    pub replica: ReplicaId,
    pub reason: String,
    pub log: PathBuf,
    /// The last lines the attempt wrote.
    pub log_tail: String,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.replica, self.reason)?;
        if !self.log_tail.is_empty() {
            write!(
                f,
                "; last lines of `{}`:\n{}",
                self.log.display(),
                indent(&self.log_tail)
            )?;
        }
        Ok(())
    }
}

/// The daemon answering a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The spec the supervisor's unit tests run.
    pub(in crate::backend::local::supervisor) fn spec() -> DeploymentSpec {
        DeploymentSpec::new(
            "risk-api",
            "blue",
            "6b28a728a74d",
            vec![
                "/bin/server".into(),
                "--listen".into(),
                format!("127.0.0.1:{PORT_PLACEHOLDER}"),
            ],
        )
    }

    #[test]
    fn a_valid_spec_passes() {
        spec().validate().unwrap();
        let serve = DeploymentSpec::cairn_serve(
            Path::new("/usr/bin/cairn"),
            Path::new("/store/models/risk/v1"),
            "risk-api",
            "green",
            "v1",
        )
        .unwrap();
        serve.validate().unwrap();
        assert!(serve.command.contains(&"127.0.0.1:{{ port }}".to_string()));
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let cases: Vec<(DeploymentSpec, &str)> = vec![
            (
                DeploymentSpec {
                    endpoint: "../etc".into(),
                    ..spec()
                },
                "endpoint name",
            ),
            (
                DeploymentSpec {
                    revision: String::new(),
                    ..spec()
                },
                "revision name",
            ),
            (
                DeploymentSpec {
                    deployment: "a/b".into(),
                    ..spec()
                },
                "deployment name",
            ),
            (
                DeploymentSpec {
                    command: vec![],
                    ..spec()
                },
                "command is empty",
            ),
            (
                DeploymentSpec {
                    command: vec!["/bin/server".into(), "--listen".into(), ":8080".into()],
                    ..spec()
                },
                "where to listen",
            ),
            (
                DeploymentSpec {
                    replicas: MAX_REPLICAS + 1,
                    ..spec()
                },
                "at most",
            ),
            (
                DeploymentSpec {
                    env: [("A=B".to_string(), "x".to_string())].into(),
                    ..spec()
                },
                "environment variable name",
            ),
            (
                DeploymentSpec {
                    health_path: "/healthz HTTP/1.1\r\nX: y".into(),
                    ..spec()
                },
                "health path",
            ),
            (
                DeploymentSpec {
                    ready_timeout: Duration::ZERO,
                    ..spec()
                },
                "ready timeout",
            ),
        ];
        for (spec, expected) in cases {
            let error = spec.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn specs_differing_only_in_replicas_are_the_same_deployment() {
        let two = DeploymentSpec {
            replicas: 2,
            ..spec()
        };
        assert!(spec().same_apart_from_replicas(&two));
        let other = DeploymentSpec {
            env: [("X".to_string(), "1".to_string())].into(),
            ..spec()
        };
        assert!(!spec().same_apart_from_replicas(&other));
        assert_eq!(spec().difference(&other), "the environment differs");
    }
}

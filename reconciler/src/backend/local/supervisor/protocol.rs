//! The wire protocol between [`super::SupervisorClient`] and the daemon: one JSON
//! [`Request`] per connection and one [`Response`], a line each way; errors travel as
//! [`WireError`], which keeps the variant of each [`Error`] a request can meet.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{DeploymentSpec, Error, ReplicaStatus, RouteSpec, RouteStatus, StartFailure};
use crate::backend::local::router::Mirror;
use crate::rollout::{Stats, Weights};

/// The largest request or response, in bytes.
pub(super) const MAX_MESSAGE_BYTES: u64 = 16 << 20;

/// A client's request, one per connection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Request {
    Ping,
    Status,
    Apply {
        deployments: Vec<DeploymentSpec>,
    },
    Stop {
        endpoint: String,
        deployment: String,
        revision: Option<String>,
    },
    Shutdown,
    Route {
        route: RouteSpec,
    },
    SetWeights {
        endpoint: String,
        weights: Weights,
    },
    SetMirror {
        endpoint: String,
        mirror: Option<Mirror>,
    },
    Routes,
    Ready {
        endpoint: String,
        backend: String,
    },
    Stats {
        endpoint: String,
        backend: String,
    },
    Unroute {
        endpoint: String,
    },
    StopLater {
        endpoint: String,
        deployment: String,
        revision: String,
        after_ms: u64,
    },
}

/// The daemon's answer to a request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(super) enum Response {
    Pong { pid: u32, version: String },
    Replicas { replicas: Vec<ReplicaStatus> },
    Route { route: RouteStatus },
    Routes { routes: Vec<RouteStatus> },
    Ready { ready: bool },
    Stats { stats: Stats },
    Done,
    Error { error: WireError },
}

/// An [`Error`] as it crosses the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum WireError {
    Invalid {
        deployment: String,
        reason: String,
    },
    Conflict {
        deployment: String,
        reason: String,
    },
    StartFailed {
        failures: Vec<StartFailure>,
    },
    Refused {
        message: String,
    },
    InvalidRoute {
        endpoint: String,
        reason: String,
    },
    PortInUse {
        endpoint: String,
        listen: SocketAddr,
        holder: Option<String>,
    },
    RouterBind {
        endpoint: String,
        listen: SocketAddr,
        reason: String,
    },
    NoRoute {
        endpoint: String,
    },
    UnknownBackend {
        endpoint: String,
        backend: String,
        known: Vec<String>,
    },
    NotServing {
        endpoint: String,
        listen: SocketAddr,
        reason: String,
    },
    StillRouted {
        deployment: String,
        endpoint: String,
        backend: String,
        weight: u32,
    },
}

impl From<WireError> for Error {
    fn from(error: WireError) -> Error {
        match error {
            WireError::Invalid { deployment, reason } => Error::InvalidSpec { deployment, reason },
            WireError::Conflict { deployment, reason } => Error::Conflict { deployment, reason },
            WireError::StartFailed { failures } => Error::StartFailed { failures },
            WireError::Refused { message } => Error::Refused { message },
            WireError::InvalidRoute { endpoint, reason } => {
                Error::InvalidRoute { endpoint, reason }
            }
            WireError::PortInUse {
                endpoint,
                listen,
                holder,
            } => Error::PortInUse {
                endpoint,
                listen,
                holder,
            },
            WireError::RouterBind {
                endpoint,
                listen,
                reason,
            } => Error::RouterBind {
                endpoint,
                listen,
                reason,
            },
            WireError::NoRoute { endpoint } => Error::NoRoute { endpoint },
            WireError::UnknownBackend {
                endpoint,
                backend,
                known,
            } => Error::UnknownBackend {
                endpoint,
                backend,
                known,
            },
            WireError::NotServing {
                endpoint,
                listen,
                reason,
            } => Error::NotServing {
                endpoint,
                listen,
                reason,
            },
            WireError::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            } => Error::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            },
        }
    }
}

impl From<Error> for WireError {
    fn from(error: Error) -> WireError {
        match error {
            Error::InvalidSpec { deployment, reason } => WireError::Invalid { deployment, reason },
            Error::Conflict { deployment, reason } => WireError::Conflict { deployment, reason },
            Error::StartFailed { failures } => WireError::StartFailed { failures },
            Error::Refused { message } => WireError::Refused { message },
            Error::InvalidRoute { endpoint, reason } => {
                WireError::InvalidRoute { endpoint, reason }
            }
            Error::PortInUse {
                endpoint,
                listen,
                holder,
            } => WireError::PortInUse {
                endpoint,
                listen,
                holder,
            },
            Error::RouterBind {
                endpoint,
                listen,
                reason,
            } => WireError::RouterBind {
                endpoint,
                listen,
                reason,
            },
            Error::NoRoute { endpoint } => WireError::NoRoute { endpoint },
            Error::UnknownBackend {
                endpoint,
                backend,
                known,
            } => WireError::UnknownBackend {
                endpoint,
                backend,
                known,
            },
            Error::NotServing {
                endpoint,
                listen,
                reason,
            } => WireError::NotServing {
                endpoint,
                listen,
                reason,
            },
            Error::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            } => WireError::StillRouted {
                deployment,
                endpoint,
                backend,
                weight,
            },
            other => WireError::Refused {
                message: crate::diagnostics::error_chain(&other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::spec::tests::spec;
    use super::super::{loopback, ReplicaId, DEFAULT_READY_TIMEOUT};
    use super::*;

    #[test]
    fn the_protocol_round_trips() {
        let request = Request::Apply {
            deployments: vec![spec()],
        };
        let line = serde_json::to_string(&request).unwrap();
        assert!(line.starts_with(r#"{"op":"apply""#), "{line}");
        assert!(line.contains(r#""ready_timeout_ms":60000"#), "{line}");
        let Request::Apply { deployments } = serde_json::from_str(&line).unwrap() else {
            panic!("not an apply: {line}");
        };
        assert_eq!(deployments, vec![spec()]);
        // Defaults for what a client leaves out.
        let minimal = r#"{"op":"apply","deployments":[{"endpoint":"e","deployment":"d",
            "revision":"r","command":["x","{{ port }}"]}]}"#;
        let Request::Apply { deployments } = serde_json::from_str(minimal).unwrap() else {
            panic!("not an apply");
        };
        assert_eq!(deployments[0].replicas, 1);
        assert_eq!(deployments[0].health_path, "/healthz");
        assert_eq!(deployments[0].ready_timeout, DEFAULT_READY_TIMEOUT);

        let failure = StartFailure {
            replica: ReplicaId {
                key: spec().key(),
                index: 1,
            },
            reason: "exited with code 1 before it was ready".into(),
            log: PathBuf::from("/state/logs/x.log"),
            log_tail: "error: cannot load the model".into(),
        };
        let response = Response::Error {
            error: WireError::StartFailed {
                failures: vec![failure.clone()],
            },
        };
        let line = serde_json::to_string(&response).unwrap();
        let Response::Error { error } = serde_json::from_str(&line).unwrap() else {
            panic!("not an error: {line}");
        };
        let message = Error::from(error).to_string();
        assert!(
            message.contains("risk-api/blue@6b28a728a74d replica 1: exited with code 1"),
            "{message}"
        );
        assert!(
            message.contains("| error: cannot load the model"),
            "{message}"
        );
        assert!(
            message.contains("what ran before keeps serving"),
            "{message}"
        );
    }

    #[test]
    fn routing_errors_cross_the_wire_typed() {
        let errors = [
            Error::PortInUse {
                endpoint: "risk-api".into(),
                listen: loopback(8080),
                holder: Some("fraud-api".into()),
            },
            Error::StillRouted {
                deployment: "risk-api/blue@v1".into(),
                endpoint: "risk-api".into(),
                backend: "blue".into(),
                weight: 40,
            },
            Error::NotServing {
                endpoint: "risk-api".into(),
                listen: loopback(8080),
                reason: "the port of 127.0.0.1:8080 is in use".into(),
            },
        ];
        for error in errors {
            let message = error.to_string();
            let line = serde_json::to_string(&Response::Error {
                error: error.into(),
            })
            .unwrap();
            let Response::Error { error } = serde_json::from_str(&line).unwrap() else {
                panic!("not an error: {line}");
            };
            let error = Error::from(error);
            assert!(!matches!(error, Error::Refused { .. }), "{error:?}");
            assert_eq!(error.to_string(), message);
        }
        let stats = Response::Stats {
            stats: Stats {
                requests: 2,
                errors: 0,
                latency: vec![(0.1, 2), (f64::INFINITY, 2)],
            },
        };
        let line = serde_json::to_string(&stats).unwrap();
        let Response::Stats { stats } = serde_json::from_str(&line).unwrap() else {
            panic!("not stats: {line}");
        };
        assert_eq!(stats.latency[1], (f64::INFINITY, 2));
    }
}

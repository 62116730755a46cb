//! The state folder and `state.json`: creating the folder (`0700`), the socket's path,
//! and the desired and observed state the daemon writes on every change (temporary file
//! and rename, so no reader sees half a file) and reads back when it starts; also read
//! without a daemon ([`recorded`]) for plans.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::registry::{Observed, Registry};
use super::routing::RetirementRecord;
use super::{DeploymentKey, DeploymentSpec, Error, Result, RouteSpec, SOCKET_FILE, STATE_FILE};
use crate::serving::ScaleChange;

/// Version 2 added routes and scheduled stops; version 1 files still load.
const STATE_FORMAT_VERSION: u32 = 2;
/// `sun_path` holds 108 bytes on Linux, the last one a NUL.
pub(super) const MAX_SOCKET_PATH: usize = 107;

/// The daemon's socket in `state_dir`, refused when too long for a Unix socket.
pub(super) fn socket_path(state_dir: &Path) -> Result<PathBuf> {
    let path = state_dir.join(SOCKET_FILE);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(Error::SocketPathTooLong { path });
    }
    Ok(path)
}

/// Creates the state folder (and its parents), readable by this user only.
pub(super) fn create_state_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// What `state.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StateFile {
    pub(super) format_version: u32,
    pub(super) deployments: Vec<DeploymentRecord>,
    /// Since version 2.
    #[serde(default)]
    pub(super) routes: Vec<RouteSpec>,
    /// Since version 2.
    #[serde(default)]
    pub(super) retirements: Vec<RetirementRecord>,
}

/// One deployment revision in `state.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct DeploymentRecord {
    pub(super) spec: DeploymentSpec,
    pub(super) confirmed: bool,
    pub(super) replicas: Vec<ReplicaRecord>,
    /// The autoscaler's changes (absent before autoscaling existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) scaled: Vec<ScaleChange>,
}

/// One replica in `state.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ReplicaRecord {
    pub(super) index: u32,
    #[serde(flatten)]
    pub(super) observed: Observed,
}

impl StateFile {
    /// Nothing runs, nothing is routed.
    pub(super) fn empty() -> StateFile {
        StateFile {
            format_version: STATE_FORMAT_VERSION,
            deployments: Vec::new(),
            routes: Vec::new(),
            retirements: Vec::new(),
        }
    }
}

impl Registry {
    /// What `state.json` is to hold now.
    pub(super) fn to_file(&self) -> StateFile {
        StateFile {
            format_version: STATE_FORMAT_VERSION,
            deployments: self
                .deployments
                .values()
                .map(|d| DeploymentRecord {
                    spec: (*d.spec).clone(),
                    confirmed: d.confirmed,
                    replicas: d
                        .replicas
                        .iter()
                        .map(|(index, r)| ReplicaRecord {
                            index: *index,
                            observed: r.observed.clone(),
                        })
                        .collect(),
                    scaled: d.scaled.clone(),
                })
                .collect(),
            routes: self.routes.values().map(|h| h.spec.clone()).collect(),
            retirements: self
                .retirements
                .iter()
                .map(|(key, at)| RetirementRecord::new(key, *at))
                .collect(),
        }
    }
}

/// What the last daemon of `state_dir` recorded in `state.json`, read without one running
/// (for plans, which must start nothing): its routes as specified (weights and backends
/// as they were last put in force) and the confirmed revisions it ran.
pub fn recorded(state_dir: &Path) -> Result<(Vec<RouteSpec>, Vec<DeploymentKey>)> {
    let state = read_state(state_dir)?;
    let revisions = state
        .deployments
        .iter()
        .filter(|d| d.confirmed)
        .map(|d| d.spec.key())
        .collect();
    Ok((state.routes, revisions))
}

pub(super) fn read_state(dir: &Path) -> Result<StateFile> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StateFile::empty()),
        Err(source) => return Err(Error::ReadState { path, source }),
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| Error::ParseState {
        path: path.clone(),
        message: e.to_string(),
    })?;
    // Version 1 is version 2 without routes or scheduled stops (they default to none).
    if !(1..=STATE_FORMAT_VERSION).contains(&state.format_version) {
        return Err(Error::ParseState {
            path,
            message: format!(
                "format version {} (this supervisor reads 1 to {STATE_FORMAT_VERSION})",
                state.format_version
            ),
        });
    }
    Ok(state)
}

/// Writes the state to a temporary file, then renames it over `state.json`, so a reader
/// (or a daemon starting after a crash) never sees half a file.
pub(super) fn write_state(dir: &Path, state: &StateFile) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let temporary = dir.join(format!("{STATE_FILE}.tmp"));
    let error = |source| Error::WriteState {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| error(std::io::Error::other(e)))?;
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(&bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::super::registry::{Deployment, Replica};
    use super::super::routing::Hosted;
    use super::super::spec::tests::spec;
    use super::super::{loopback, ReplicaState, RouteBackend};
    use super::*;

    #[test]
    fn state_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        registry.deployments.insert(
            spec().key(),
            Deployment {
                spec: Arc::new(spec()),
                confirmed: true,
                stopping: false,
                scaled: Vec::new(),
                replicas: BTreeMap::from([(
                    0,
                    Replica {
                        observed: Observed {
                            pid: Some(1234),
                            start_ticks: Some(99),
                            port: Some(40000),
                            state: ReplicaState::Ready,
                            restarts: 2,
                            confirmed: true,
                        },
                        control: None,
                    },
                )]),
            },
        );
        write_state(dir.path(), &registry.to_file()).unwrap();
        assert!(!dir.path().join("state.json.tmp").exists());
        let read = read_state(dir.path()).unwrap();
        assert_eq!(read.deployments.len(), 1);
        assert_eq!(read.deployments[0].spec, spec());
        assert_eq!(read.deployments[0].replicas[0].observed.restarts, 2);
        let statuses = registry.statuses(dir.path(), |_| true);
        assert_eq!(statuses[0].addr, Some(loopback(40000)));
        assert!(statuses[0]
            .log
            .ends_with("logs/risk-api/blue/6b28a728a74d/replica-0.log"));

        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let error = read_state(dir.path()).unwrap_err().to_string();
        assert!(error.contains("move it away"), "{error}");
        assert!(read_state(&dir.path().join("missing"))
            .unwrap()
            .deployments
            .is_empty());
    }

    #[test]
    fn version_1_state_loads_and_routes_are_written_since_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = serde_json::json!({
            "format_version": 1,
            "deployments": [{"spec": spec(), "confirmed": true, "replicas": []}],
        });
        std::fs::write(dir.path().join(STATE_FILE), v1.to_string()).unwrap();
        let read = read_state(dir.path()).unwrap();
        assert_eq!(read.deployments[0].spec, spec());
        assert!(read.routes.is_empty() && read.retirements.is_empty());

        let mut registry = Registry::default();
        let route = RouteSpec {
            endpoint: "risk-api".into(),
            listen: loopback(8080),
            backends: [(
                "blue".to_string(),
                RouteBackend::new("blue", "6b28a728a74d"),
            )]
            .into(),
            weights: [("blue".to_string(), 100)].into(),
            mirror: None,
            key_sha256: Some("ab".repeat(32)),
            capture: None,
        };
        registry
            .routes
            .insert("risk-api".into(), Hosted::new(route.clone()));
        registry.retirements.insert(
            spec().key(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(7),
        );
        write_state(dir.path(), &registry.to_file()).unwrap();
        let read = read_state(dir.path()).unwrap();
        assert_eq!(read.format_version, 2);
        assert_eq!(read.routes, vec![route]);
        assert_eq!(
            read.retirements,
            vec![RetirementRecord::new(
                &spec().key(),
                SystemTime::UNIX_EPOCH + Duration::from_secs(7)
            )]
        );

        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"format_version": 3, "deployments": []}"#,
        )
        .unwrap();
        let error = read_state(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("format version 3 (this supervisor reads 1 to 2)"),
            "{error}"
        );
    }
}

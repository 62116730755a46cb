//! Endpoints on this machine: the [`Serving`] target over the supervisor daemon.
//!
//! Each endpoint deployment revision runs as `cairn serve` replicas (or as its own
//! `command`, placeholders expanded) under the supervisor (`<root>/.cairn/serving`),
//! and the daemon hosts the endpoint's router on `127.0.0.1:<port>`, which probes each
//! revision's health path and counts its answers whatever serves. Model versions are copied out of the workspace's store into
//! `<serving>/models/<workspace>/<model>/<version>` before their replicas start (any store
//! works, not only folders), and an endpoint with `auth = "key"` (or `"token"`) gets a
//! random key in `<serving>/keys/<workspace>.<endpoint>.key` (mode 0600): the router
//! only ever sees its SHA-256.
//!
//! The supervisor knows an endpoint as `<workspace>.<endpoint>`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::child_env::ChildEnv;
use super::router::{Capture, Mirror};
use super::supervisor::{
    DeploymentSpec, ReplicaState, ReplicaStatus, RouteBackend, RouteSpec, RouteStatus,
    RouteTraffic, ScaleSpec, SupervisorClient, PORT_PLACEHOLDER,
};
use crate::backend::server_command;
use crate::backend::store::Store;
use crate::diagnostics::error_chain;
use crate::rollout::{Traffic, TrafficError};
use crate::serving::{
    EndpointId, Error, LiveBackend, LiveEndpoint, Result, RevisionSpec, RouteTable, Serving,
};

/// The folder of serving state under a manifests root's `.cairn`.
pub const SERVING_DIR: &str = "serving";

/// How long a replica may take to load its model and answer its health path.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Serving on this machine.
pub struct LocalEndpoints {
    dir: PathBuf,
    program: PathBuf,
    stores: BTreeMap<String, Store>,
    child_env: ChildEnv,
    client: tokio::sync::OnceCell<SupervisorClient>,
}

impl LocalEndpoints {
    /// Serving state in `dir`; `program` is the `cairn` binary (the daemon and the model
    /// server); `stores` hold the model versions, by workspace.
    pub fn new(dir: &Path, program: &Path, stores: BTreeMap<String, Store>) -> LocalEndpoints {
        LocalEndpoints {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            program: program.to_path_buf(),
            stores,
            child_env: ChildEnv::empty(),
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The base environment of the supervisor (and so of its replicas) when this starts
    /// one; none by default. The CLI passes [`ChildEnv::allowed`] of its own.
    pub fn with_child_env(mut self, env: ChildEnv) -> LocalEndpoints {
        self.child_env = env;
        self
    }

    /// The supervisor daemon's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(super::supervisor::LOG_FILE)
    }

    /// The supervisor's name for an endpoint.
    pub fn supervisor_name(endpoint: &EndpointId) -> String {
        format!("{}.{}", endpoint.workspace, endpoint.name)
    }

    /// Where the router writes the requests it captures for input-drift monitoring.
    pub fn capture_dir(&self, endpoint: &EndpointId) -> PathBuf {
        self.dir
            .join("capture")
            .join(Self::supervisor_name(endpoint))
    }

    /// The request bodies the endpoint's router captured, oldest first, at most the
    /// newest `limit` (lines that are not capture records are skipped).
    pub fn captured(&self, endpoint: &EndpointId, limit: usize) -> Vec<serde_json::Value> {
        let dir = self.capture_dir(endpoint);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<(u128, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stamp = name
                    .strip_prefix("capture-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()?;
                Some((stamp, e.path()))
            })
            .collect();
        files.sort();
        let mut bodies = std::collections::VecDeque::new();
        for (_, path) in files {
            use std::io::BufRead as _;
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            // Line by line: a capture file may be large, and only `limit` bodies stay.
            for line in std::io::BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if let Some(body) = crate::workload::capture::body_of(&line) {
                    bodies.push_back(body);
                    if bodies.len() > limit {
                        bodies.pop_front();
                    }
                }
            }
        }
        bodies.into()
    }

    /// Where an endpoint's key is kept.
    pub fn key_path(&self, endpoint: &EndpointId) -> PathBuf {
        self.dir
            .join("keys")
            .join(format!("{}.key", Self::supervisor_name(endpoint)))
    }

    /// A client of a running daemon, starting one when none answers.
    async fn client(&self) -> Result<&SupervisorClient> {
        self.client
            .get_or_try_init(|| async {
                SupervisorClient::ensure_running(&self.dir, &self.program, &self.child_env)
                    .await
                    .map_err(target)
            })
            .await
    }

    /// Every router, when a daemon runs; nothing otherwise (none is started).
    pub async fn routes(&self) -> Result<Vec<RouteStatus>> {
        if let Some(client) = self.client.get() {
            return client.routes().await.map_err(target);
        }
        let client = SupervisorClient::new(&self.dir).map_err(target)?;
        if !client.socket().exists() || client.ping().await.is_err() {
            return Ok(Vec::new());
        }
        client.routes().await.map_err(target)
    }

    /// What serves each of these endpoints now, by address; endpoints without a router
    /// are left out. Starts no daemon: while none runs, the routes its predecessor
    /// recorded are what a new one binds again, so they are reported (as not serving)
    /// with their weights, which say where an unfinished rollout left traffic.
    pub async fn observe_all(
        &self,
        endpoints: &[EndpointId],
    ) -> Result<BTreeMap<String, LiveEndpoint>> {
        let client = match self.client.get() {
            Some(c) => Some(c.clone()),
            None => {
                let client = SupervisorClient::new(&self.dir).map_err(target)?;
                let answers = client.socket().exists() && client.ping().await.is_ok();
                answers.then_some(client)
            }
        };
        let mut out = BTreeMap::new();
        let Some(client) = client else {
            let (routes, revisions) = super::supervisor::recorded(&self.dir).map_err(target)?;
            for endpoint in endpoints {
                let name = Self::supervisor_name(endpoint);
                if let Some(route) = routes.iter().find(|r| r.endpoint == name) {
                    let running = revisions
                        .iter()
                        .filter(|k| k.endpoint == name)
                        .map(|k| (k.deployment.clone(), k.revision.clone()));
                    out.insert(endpoint.to_string(), recorded_live(route, running));
                }
            }
            return Ok(out);
        };
        let routes = client.routes().await.map_err(target)?;
        let replicas = client.status().await.map_err(target)?;
        for endpoint in endpoints {
            let name = Self::supervisor_name(endpoint);
            if let Some(route) = routes.iter().find(|r| r.endpoint == name) {
                out.insert(endpoint.to_string(), live(route, &replicas));
            }
        }
        Ok(out)
    }

    /// Copies a model version out of the store, once.
    async fn materialize(&self, workspace: &str, model: &str, version: &str) -> Result<PathBuf> {
        let dir = self
            .dir
            .join("models")
            .join(workspace)
            .join(model)
            .join(version);
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
        let store = self.stores.get(workspace).ok_or_else(|| {
            Error::Target(format!("no store is open for workspace `{workspace}`"))
        })?;
        let record = store
            .model_version(model, version)
            .await
            .map_err(|e| Error::Target(error_chain(&e)))?
            .ok_or_else(|| {
                Error::Target(format!(
                    "model.{model}@{version} is not in the store of workspace `{workspace}`"
                ))
            })?;
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let io = |what: &str, path: &Path, e: std::io::Error| {
            Error::Target(format!("cannot {what} `{}`: {e}", path.display()))
        };
        std::fs::create_dir_all(&partial).map_err(|e| io("create", &partial, e))?;
        for file in &record.files {
            let Some(path) = crate::manifest::source::join_inside("", &file.path) else {
                return Err(Error::Target(format!(
                    "model.{model}@{version} lists a file outside its folder: {}",
                    file.path
                )));
            };
            let target = partial.join(path);
            store
                .objects()
                .get_file(&file.key, &target)
                .await
                .map_err(|e| Error::Target(error_chain(&e)))?;
            crate::content::verify_sha256(
                &target,
                &file.sha256,
                &format!("model.{model}@{version}"),
            )
            .map_err(Error::Target)?;
        }
        std::fs::write(partial.join(".complete"), b"").map_err(|e| io("write", &partial, e))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir).map_err(|e| io("move into place", &dir, e))?;
        Ok(dir)
    }

    /// The endpoint's key digest, making the key on first use.
    fn key_digest(&self, endpoint: &EndpointId) -> Result<String> {
        let path = self.key_path(endpoint);
        let key = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
            _ => {
                let dir = path.parent().expect("key paths have a folder");
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        Error::Target(format!("cannot create `{}`: {e}", dir.display()))
                    })?;
                let key = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| {
                        Error::Target(format!("cannot write `{}`: {e}", path.display()))
                    })?;
                writeln!(file, "{key}").map_err(|e| {
                    Error::Target(format!("cannot write `{}`: {e}", path.display()))
                })?;
                key
            }
        };
        Ok(hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// Traffic that can't be reached: every call fails with the same message.
struct Unreachable(String);

#[async_trait]
impl Traffic for Unreachable {
    async fn set_weights(
        &self,
        _: &crate::rollout::Weights,
    ) -> std::result::Result<(), TrafficError> {
        Err(TrafficError::Unavailable(self.0.clone()))
    }
    async fn ready(&self, _: &str) -> std::result::Result<bool, TrafficError> {
        Err(TrafficError::Unavailable(self.0.clone()))
    }
    async fn stats(&self, _: &str) -> std::result::Result<crate::rollout::Stats, TrafficError> {
        Err(TrafficError::Unavailable(self.0.clone()))
    }
}

fn target(e: super::supervisor::Error) -> Error {
    Error::Target(error_chain(&e))
}

/// A recorded route while no daemon runs: not serving, replicas unknown.
fn recorded_live(
    route: &RouteSpec,
    running: impl Iterator<Item = (String, String)>,
) -> LiveEndpoint {
    let named: BTreeSet<(String, String)> = route
        .backends
        .values()
        .map(|b| (b.deployment.clone(), b.revision.clone()))
        .collect();
    LiveEndpoint {
        port: Some(route.listen.port()),
        serving: false,
        error: Some(
            "no supervisor runs (apply starts one, which binds the router again)".to_string(),
        ),
        backends: route
            .backends
            .iter()
            .map(|(name, b)| {
                (
                    name.clone(),
                    LiveBackend {
                        deployment: b.deployment.clone(),
                        revision: b.revision.clone(),
                        replicas: 0,
                        ready_replicas: 0,
                        scaled: Vec::new(),
                    },
                )
            })
            .collect(),
        weights: route.weights.clone(),
        idle: running.filter(|r| !named.contains(r)).collect(),
    }
}

fn live(route: &RouteStatus, replicas: &[ReplicaStatus]) -> LiveEndpoint {
    let named: BTreeSet<(String, String)> = route
        .backends
        .values()
        .map(|b| (b.deployment.clone(), b.revision.clone()))
        .collect();
    let idle = replicas
        .iter()
        .filter(|r| r.endpoint == route.endpoint && !matches!(r.state, ReplicaState::Stopping))
        .map(|r| (r.deployment.clone(), r.revision.clone()))
        .filter(|r| !named.contains(r))
        .collect();
    LiveEndpoint {
        port: Some(route.listen.port()),
        serving: route.serving,
        error: route.error.clone(),
        backends: route
            .backends
            .iter()
            .map(|(name, b)| {
                (
                    name.clone(),
                    LiveBackend {
                        deployment: b.deployment.clone(),
                        revision: b.revision.clone(),
                        replicas: b.replicas,
                        ready_replicas: b.ready_replicas,
                        scaled: b.scaled.clone(),
                    },
                )
            })
            .collect(),
        weights: route.weights.clone(),
        idle,
    }
}

#[async_trait]
impl Serving for LocalEndpoints {
    /// Starts the daemon first when none runs: a new one binds the recorded routers
    /// again and re-adopts the replicas, so what it reports is what serves.
    async fn observe(&self, endpoint: &EndpointId) -> Result<Option<LiveEndpoint>> {
        let name = Self::supervisor_name(endpoint);
        let client = self.client().await?;
        let routes = client.routes().await.map_err(target)?;
        let replicas = client.status().await.map_err(target)?;
        Ok(routes
            .iter()
            .find(|r| r.endpoint == name)
            .map(|r| live(r, &replicas)))
    }

    async fn deploy(&self, endpoint: &EndpointId, revisions: &[RevisionSpec]) -> Result<()> {
        let name = Self::supervisor_name(endpoint);
        let mut specs = Vec::new();
        for r in revisions {
            let dir = self
                .materialize(&endpoint.workspace, &r.model, &r.version)
                .await?;
            let mut spec = match &r.command {
                Some(command) => DeploymentSpec::new(
                    name.clone(),
                    r.deployment.clone(),
                    r.revision.clone(),
                    // The supervisor fills its own port placeholder in per replica.
                    server_command::expand_all(command, &dir, PORT_PLACEHOLDER),
                ),
                None => {
                    let mut spec = DeploymentSpec::cairn_serve(
                        &self.program,
                        &dir,
                        name.clone(),
                        r.deployment.clone(),
                        r.revision.clone(),
                    )
                    .map_err(target)?;
                    // The Open Inference Protocol's model name: the endpoint's, the same
                    // for every revision, so that clients keep their URL across a rollout.
                    spec.command
                        .extend(["--model-name".to_string(), endpoint.name.clone()]);
                    spec
                }
            };
            spec.replicas = r.replicas;
            spec.autoscale = r.autoscale.as_ref().and_then(scale_spec);
            spec.env = r.env.clone();
            spec.health_path = r.health.clone();
            spec.ready_timeout = READY_TIMEOUT;
            specs.push(spec);
        }
        if specs.is_empty() {
            return Ok(());
        }
        self.client().await?.apply(&specs).await.map_err(target)?;
        Ok(())
    }

    async fn route(&self, endpoint: &EndpointId, table: &RouteTable) -> Result<()> {
        let Some(port) = table.port else {
            return Err(Error::Target(format!(
                "{endpoint} has no `port`; the local router needs one"
            )));
        };
        let spec = RouteSpec {
            endpoint: Self::supervisor_name(endpoint),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            backends: table
                .backends
                .iter()
                .map(|(n, (deployment, revision))| {
                    (
                        n.clone(),
                        RouteBackend {
                            deployment: deployment.clone(),
                            revision: revision.clone(),
                        },
                    )
                })
                .collect(),
            weights: table.weights.clone(),
            mirror: table.mirror.as_ref().map(|(deployment, percent)| Mirror {
                deployment: deployment.clone(),
                percent: *percent,
            }),
            key_sha256: if table.auth {
                Some(self.key_digest(endpoint)?)
            } else {
                None
            },
            capture: table.capture.map(|(every, max_bytes)| Capture {
                every,
                dir: self.capture_dir(endpoint),
                max_bytes,
            }),
        };
        self.client().await?.route(&spec).await.map_err(target)?;
        Ok(())
    }

    fn traffic(&self, endpoint: &EndpointId) -> Box<dyn Traffic> {
        // Used after `deploy` and `route`, which start the client; a fresh one works the
        // same.
        let client = match self.client.get() {
            Some(c) => Ok(c.clone()),
            None => SupervisorClient::new(&self.dir),
        };
        match client {
            Ok(client) => Box::new(RouteTraffic::new(client, Self::supervisor_name(endpoint))),
            Err(e) => Box::new(Unreachable(error_chain(&e))),
        }
    }

    async fn retire(
        &self,
        endpoint: &EndpointId,
        deployment: &str,
        revision: &str,
        after: Duration,
    ) -> Result<()> {
        let name = Self::supervisor_name(endpoint);
        let client = self.client().await?;
        if after.is_zero() {
            client
                .stop(&name, deployment, Some(revision))
                .await
                .map_err(target)?;
        } else {
            client
                .stop_later(&name, deployment, revision, after)
                .await
                .map_err(target)?;
        }
        Ok(())
    }

    async fn remove(&self, endpoint: &EndpointId) -> Result<()> {
        let name = Self::supervisor_name(endpoint);
        let client = SupervisorClient::new(&self.dir).map_err(target)?;
        if !client.socket().exists() || client.ping().await.is_err() {
            return Ok(());
        }
        client.unroute(&name).await.map_err(target)?;
        let replicas = client.status().await.map_err(target)?;
        let deployments: std::collections::BTreeSet<String> = replicas
            .iter()
            .filter(|r| r.endpoint == name)
            .map(|r| r.deployment.clone())
            .collect();
        for deployment in deployments {
            client
                .stop(&name, &deployment, None)
                .await
                .map_err(target)?;
        }
        Ok(())
    }
}

/// A deployment's autoscaling as the supervisor runs it (`None` for a CPU target, which
/// validation refuses on the local target).
fn scale_spec(autoscale: &crate::manifest::Autoscale) -> Option<ScaleSpec> {
    Some(ScaleSpec {
        min: autoscale.min,
        max: autoscale.max,
        target_rps: autoscale.target_rps?,
        scale_down_window: autoscale
            .scale_down_window
            .map_or(DEFAULT_SCALE_DOWN_WINDOW, |d| d.as_std()),
    })
}

/// How long the load must stay low before the supervisor removes replicas, unless the
/// deployment says: a HorizontalPodAutoscaler's default.
const DEFAULT_SCALE_DOWN_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

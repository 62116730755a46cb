//! Talking to Kubernetes clusters: connections per kubeconfig context, observing what
//! Cairn manages, server-side apply in waves, pruning, waiting for Jobs and
//! Deployments, and GPU capacity.
//!
//! This module owns every request Cairn makes to a Kubernetes API server. It takes the
//! [`KubeObject`]s rendered by `render.rs` and returns typed results; it never decides
//! *what* should change (that is the planner's, with [`diff`](super::diff)), never
//! prints, and never reads a token into a message.
//!
//! # Flow
//! 1. [`Clusters::new`] finds the kubeconfig (or the in-cluster service account) but
//!    connects to nothing: a client per context is made on first use and cached, so a
//!    plan that touches no cluster never fails on a broken kubeconfig.
//! 2. [`Clusters::observe`] lists, by label selector, everything Cairn manages for a
//!    workspace in the given (context, namespace) scopes, for every kind Cairn renders
//!    and any others asked for. Kinds are resolved through API discovery once per
//!    context and API group version; a kind the server does not serve is skipped
//!    unless a desired object needs it.
//! 3. [`Clusters::apply`] applies objects with server-side apply (field manager
//!    `cairn`) in waves by kind, each wave with bounded concurrency. Each object is read
//!    first: an object that exists without Cairn's labels for the workspace is never
//!    taken over; one whose managed fields already match is not written at all; one
//!    whose immutable fields changed is replaced. Writes carry the `resourceVersion`
//!    that was read, so a concurrent change makes the write fail and the object is read
//!    and diffed again (a few times at most), never blindly overwritten.
//! 4. [`Clusters::prune`] deletes objects that are no longer desired, in reverse wave
//!    order, after checking the live object's labels again, with `uid` and
//!    `resourceVersion` preconditions.
//! 5. [`Clusters::wait_job`] and [`Clusters::wait_available`] poll (from 100 ms, backing
//!    off to the poll interval) until a Job finishes or a Deployment is available; [`Clusters::capacity`] reads GPU quota and
//!    node allocatable for plan-time checks.
//!
//! # Caveats
//! - A pre-existing Namespace without Cairn's labels for the workspace (`default`, one
//!   a platform team made, one another workspace made) is left alone and reported as
//!   [`Outcome::Foreign`]; Cairn applies the objects inside it but never the Namespace
//!   itself. Any other kind in that state is an error.
//! - Pruning a Namespace Cairn created deletes everything in it, as `kubectl delete
//!   namespace` would.
//! - Log lines of a Job's pods are fetched by polling `pods/log` with timestamps (so a
//!   line is never repeated); a server or RBAC role without `pods/log` gives no lines,
//!   not an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, ResourceQuota};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::gvk::GroupVersion;
use kube::discovery::{self, ApiResource, Scope as ApiScope};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use super::diff::{diff, parse_quantity, FIELD_MANAGER};
use super::{
    KubeObject, ObjectKey, ANNOTATION_ADDRESS, ANNOTATION_SPEC_HASH, LABEL_MANAGED_BY,
    LABEL_WORKSPACE,
};

/// The kinds Cairn's templates render, in apply order (`apiVersion`, kind). Objects of
/// other kinds are applied after Services and before HTTPRoutes.
pub const SHIPPED_KINDS: [(&str, &str); 8] = [
    ("v1", "Namespace"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("v1", "ServiceAccount"),
    ("batch/v1", "Job"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
];

/// How many requests one call keeps in flight by default.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// How many times an object that changed under Cairn is read and applied again.
const ATTEMPTS: usize = 3;

/// The extended resource GPUs are requested as.
const GPU: &str = "nvidia.com/gpu";

/// The apply wave of a kind: the shipped kinds in order, other kinds after Services.
pub fn wave(kind: &str) -> usize {
    match SHIPPED_KINDS.iter().position(|(_, k)| *k == kind) {
        Some(i) if i < 7 => i,
        Some(_) => 8,
        None => 7,
    }
}

/// The label selector of everything Cairn manages for `workspace`.
pub fn selector(workspace: &str) -> String {
    format!("{LABEL_MANAGED_BY}=cairn,{LABEL_WORKSPACE}={workspace}")
}

/// One (kube context, namespace) pair a workspace's objects live in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Scope {
    /// `None` is the kubeconfig's current context.
    pub context: Option<String>,
    pub namespace: String,
}

/// A kind to observe besides the shipped ones (one a template override adds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KindRef {
    /// `v1`, `apps/v1`, `monitoring.coreos.com/v1`.
    pub api_version: String,
    pub kind: String,
    /// Whether a cluster that does not serve it is an error (a desired object needs it)
    /// rather than simply holding none.
    pub required: bool,
}

/// An object Cairn manages, as the API server returned it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveObject {
    pub key: ObjectKey,
    pub api_version: String,
    /// The whole object (metadata, spec, status), with `apiVersion` and `kind`.
    pub value: Value,
}

impl LiveObject {
    /// Returns the `cairn.dev/address` annotation: the resource it was rendered for.
    pub fn address(&self) -> Option<&str> {
        self.annotation(ANNOTATION_ADDRESS)
    }

    /// Returns the `cairn.dev/spec-hash` annotation.
    pub fn spec_hash(&self) -> Option<&str> {
        self.annotation(ANNOTATION_SPEC_HASH)
    }

    /// Returns `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
    }

    /// Returns one label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        label(&self.value, key)
    }

    /// Returns one annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    }

    /// Whether it carries Cairn's labels for `workspace`.
    pub fn is_managed_by(&self, workspace: &str) -> bool {
        is_managed(&self.value, workspace)
    }
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

fn is_managed(object: &Value, workspace: &str) -> bool {
    label(object, LABEL_MANAGED_BY) == Some("cairn")
        && label(object, LABEL_WORKSPACE) == Some(workspace)
}

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

/// How [`Clusters::apply`] applies.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Take over fields another field manager owns (`--force-conflicts`).
    pub force: bool,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Objects to delete and create again, whatever their diff says.
    pub replace: BTreeSet<ObjectKey>,
    /// How long a replaced object may take to go away.
    pub delete_timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            force: false,
            concurrency: DEFAULT_CONCURRENCY,
            replace: BTreeSet::new(),
            delete_timeout: Duration::from_secs(120),
        }
    }
}

/// What applying one object did.
#[derive(Debug)]
pub enum Outcome {
    Created,
    Updated,
    /// Its managed fields already matched: nothing was written.
    Unchanged,
    /// Deleted and created again (an immutable field changed, or it was asked for).
    Replaced,
    /// A Namespace that exists without Cairn's labels for this workspace: used, never
    /// changed.
    Foreign,
    Failed(Error),
    /// Not attempted because an earlier wave failed.
    Skipped {
        reason: String,
    },
}

/// One object's result from [`Clusters::apply`].
#[derive(Debug)]
pub struct Applied {
    pub key: ObjectKey,
    pub outcome: Outcome,
    /// The object's `resourceVersion` afterwards, when it exists.
    pub resource_version: Option<String>,
}

impl Applied {
    /// The error, when it failed.
    pub fn error(&self) -> Option<&Error> {
        match &self.outcome {
            Outcome::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether it wrote anything.
    pub fn changed(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Created | Outcome::Updated | Outcome::Replaced
        )
    }
}

/// Where the connection settings come from. Deliberately not `Debug`: a kubeconfig
/// holds credentials.
enum Source {
    Kubeconfig {
        config: Box<Kubeconfig>,
        paths: Vec<PathBuf>,
    },
    InCluster,
    /// The kubeconfig could not be read; the first `client` call says why.
    Broken {
        paths: Vec<PathBuf>,
        message: String,
    },
    Missing {
        why: String,
    },
}

/// One connected context.
#[derive(Clone)]
struct Cluster {
    client: kube::Client,
    /// The context's name (the current context's real name when asked for `None`).
    name: String,
    /// The API server URL.
    server: String,
}

/// A kind resolved through discovery.
#[derive(Debug, Clone)]
struct Resolved {
    resource: ApiResource,
    namespaced: bool,
}

type Kinds = HashMap<String, Resolved>;

/// Per (context, apiVersion), the kinds discovered, filled once.
type KindCache = HashMap<(Option<String>, String), Arc<OnceCell<Arc<Kinds>>>>;

/// Connections to the clusters a workspace uses: one `kube::Client` per kubeconfig
/// context (`None` is the current context), made lazily and cached, with the kinds
/// each serves.
pub struct Clusters {
    source: Source,
    clients: Mutex<HashMap<Option<String>, Cluster>>,
    /// Per (context, apiVersion): the kinds that group version serves (empty when the
    /// server does not serve it).
    kinds: Mutex<KindCache>,
    concurrency: usize,
    poll: Duration,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the kubeconfig itself: it holds credentials.
        let source = match &self.source {
            Source::Kubeconfig { paths, .. } => format!("kubeconfig {}", show_paths(paths)),
            Source::InCluster => "in-cluster".to_string(),
            Source::Broken { paths, .. } => format!("broken kubeconfig {}", show_paths(paths)),
            Source::Missing { .. } => "no kubeconfig".to_string(),
        };
        f.debug_struct("Clusters").field("source", &source).finish()
    }
}

impl Default for Clusters {
    fn default() -> Self {
        Clusters::new()
    }
}

impl Clusters {
    /// Finds the cluster settings as kubectl does: the files in `KUBECONFIG` (several
    /// paths, merged; missing ones ignored), else `~/.kube/config`, else the in-cluster
    /// service account when `KUBERNETES_SERVICE_HOST` is set. Reads the environment
    /// (the one place this module does); errors wait for the first [`Clusters::client`].
    pub fn new() -> Clusters {
        let from_env: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if !from_env.is_empty() {
            let existing: Vec<PathBuf> = from_env.iter().filter(|p| p.exists()).cloned().collect();
            if existing.is_empty() {
                return Clusters::with_source(Source::Missing {
                    why: format!(
                        "none of the files in KUBECONFIG exist ({})",
                        show_paths(&from_env)
                    ),
                });
            }
            return Clusters::from_kubeconfig_paths(&existing);
        }
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            let path = Path::new(&home).join(".kube").join("config");
            if path.exists() {
                return Clusters::from_kubeconfig_path(path);
            }
        }
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return Clusters::with_source(Source::InCluster);
        }
        Clusters::with_source(Source::Missing {
            why: "KUBECONFIG is not set, ~/.kube/config does not exist and Cairn is not running in a cluster".into(),
        })
    }

    /// Uses one kubeconfig file.
    pub fn from_kubeconfig_path(path: impl AsRef<Path>) -> Clusters {
        Clusters::from_kubeconfig_paths(&[path.as_ref().to_path_buf()])
    }

    /// Uses several kubeconfig files merged as kubectl merges `KUBECONFIG`: the first
    /// file to set a value wins.
    pub fn from_kubeconfig_paths(paths: &[PathBuf]) -> Clusters {
        let mut merged: Option<Kubeconfig> = None;
        for path in paths {
            let read = Kubeconfig::read_from(path).and_then(|next| match merged.take() {
                Some(config) => config.merge(next),
                None => Ok(next),
            });
            match read {
                Ok(config) => merged = Some(config),
                Err(e) => {
                    return Clusters::with_source(Source::Broken {
                        paths: vec![path.clone()],
                        message: e.to_string(),
                    })
                }
            }
        }
        Clusters::with_source(Source::Kubeconfig {
            config: Box::new(merged.unwrap_or_default()),
            paths: paths.to_vec(),
        })
    }

    /// Uses a kubeconfig already read.
    pub fn from_kubeconfig(config: Kubeconfig) -> Clusters {
        Clusters::with_source(Source::Kubeconfig {
            config: Box::new(config),
            paths: Vec::new(),
        })
    }

    fn with_source(source: Source) -> Clusters {
        Clusters {
            source,
            clients: Mutex::new(HashMap::new()),
            kinds: Mutex::new(HashMap::new()),
            concurrency: DEFAULT_CONCURRENCY,
            poll: Duration::from_secs(2),
        }
    }

    /// Sets how many requests [`Clusters::observe`] and [`Clusters::prune`] keep in
    /// flight (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Clusters {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long a wait sleeps before reading again, `waited` into it: 100 ms at first,
    /// doubling each second waited up to the poll interval, so what is ready at once
    /// (a Deployment the cluster scales up in a second) isn't waited for a whole poll.
    fn backoff(&self, waited: Duration) -> Duration {
        let doublings = waited.as_secs().min(8) as u32;
        (Duration::from_millis(100) * 2u32.pow(doublings)).min(self.poll)
    }

    /// Sets how often the waits poll (2 s by default).
    pub fn with_poll_interval(mut self, poll: Duration) -> Clusters {
        self.poll = poll;
        self
    }

    /// Returns the client for a kubeconfig context (`None`: the current one), making it
    /// on first use. Connects to nothing yet.
    pub async fn client(&self, context: Option<&str>) -> Result<kube::Client> {
        Ok(self.cluster(context).await?.client)
    }

    async fn cluster(&self, context: Option<&str>) -> Result<Cluster> {
        let mut clients = self.clients.lock().await;
        let wanted = context.map(str::to_string);
        if let Some(cluster) = clients.get(&wanted) {
            return Ok(cluster.clone());
        }
        let cluster = self.connect(context).await?;
        clients.insert(wanted, cluster.clone());
        Ok(cluster)
    }

    async fn connect(&self, context: Option<&str>) -> Result<Cluster> {
        let (config, name) = match &self.source {
            Source::Missing { why } => return Err(Error::NoKubeconfig { why: why.clone() }),
            Source::Broken { paths, message } => {
                return Err(Error::Kubeconfig {
                    paths: show_paths(paths),
                    message: message.clone(),
                })
            }
            Source::InCluster => {
                if let Some(context) = context {
                    return Err(Error::UnknownContext {
                        context: context.to_string(),
                        known: Vec::new(),
                        paths: "(in-cluster: no kubeconfig)".into(),
                    });
                }
                let config = kube::Config::incluster().map_err(|e| Error::Context {
                    context: "in-cluster".into(),
                    message: e.to_string(),
                })?;
                (config, "in-cluster".to_string())
            }
            Source::Kubeconfig { config, paths } => {
                let known: Vec<String> = config.contexts.iter().map(|c| c.name.clone()).collect();
                let name = match context {
                    Some(c) => c.to_string(),
                    None => match config.current_context.clone().filter(|c| !c.is_empty()) {
                        Some(c) => c,
                        None => {
                            return Err(Error::NoCurrentContext {
                                known,
                                paths: show_paths(paths),
                            })
                        }
                    },
                };
                if !known.contains(&name) {
                    return Err(Error::UnknownContext {
                        context: name,
                        known,
                        paths: show_paths(paths),
                    });
                }
                let options = KubeConfigOptions {
                    context: Some(name.clone()),
                    ..Default::default()
                };
                let config = kube::Config::from_custom_kubeconfig((**config).clone(), &options)
                    .await
                    .map_err(|e| Error::Context {
                        context: name.clone(),
                        message: e.to_string(),
                    })?;
                (config, name)
            }
        };
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| Error::Context {
            context: name.clone(),
            message: e.to_string(),
        })?;
        Ok(Cluster {
            client,
            name,
            server: server.trim_end_matches('/').to_string(),
        })
    }

    /// Resolves a kind through discovery (cached per context and group version);
    /// `None` when the server does not serve it.
    async fn resolve(
        &self,
        cluster: &Cluster,
        context: &Option<String>,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>> {
        let cell = self
            .kinds
            .lock()
            .await
            .entry((context.clone(), api_version.to_string()))
            .or_default()
            .clone();
        let kinds = cell
            .get_or_try_init(|| async {
                let gv: GroupVersion = api_version.parse().map_err(|_| Error::Api {
                    action: "discover",
                    what: format!("apiVersion `{api_version}`"),
                    code: 400,
                    reason: "BadRequest".into(),
                    message: "not a valid apiVersion".into(),
                })?;
                match discovery::pinned_group(&cluster.client, &gv).await {
                    Ok(group) => Ok(Arc::new(
                        group
                            .versioned_resources(&gv.version)
                            .into_iter()
                            .map(|(resource, caps)| {
                                let namespaced = caps.scope == ApiScope::Namespaced;
                                (
                                    resource.kind.clone(),
                                    Resolved {
                                        resource,
                                        namespaced,
                                    },
                                )
                            })
                            .collect::<Kinds>(),
                    )),
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        Ok(Arc::new(Kinds::new()))
                    }
                    Err(e) => Err(request_error(
                        cluster,
                        "discover",
                        format!("the API group version `{api_version}`"),
                        e,
                    )),
                }
            })
            .await?;
        Ok(kinds.get(kind).cloned())
    }

    /// Resolves a kind that must be served.
    async fn require(
        &self,
        cluster: &Cluster,
        context: &Option<String>,
        api_version: &str,
        kind: &str,
    ) -> Result<Resolved> {
        self.resolve(cluster, context, api_version, kind)
            .await?
            .ok_or_else(|| Error::KindNotServed {
                context: cluster.name.clone(),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }

    /// Lists everything Cairn manages for `workspace` in these scopes, for the kinds
    /// Cairn's templates render ([`SHIPPED_KINDS`]), none of them required. Objects come
    /// sorted by apply wave, then by key.
    pub async fn observe(&self, workspace: &str, scopes: &[Scope]) -> Result<Vec<LiveObject>> {
        self.observe_kinds(workspace, scopes, &[]).await
    }

    /// Lists what Cairn manages for `workspace` in the scopes of `desired` and `scopes`
    /// together, for the shipped kinds and every kind in `desired` (those required:
    /// a cluster that does not serve one is an error).
    pub async fn observe_desired(
        &self,
        workspace: &str,
        scopes: &[Scope],
        desired: &[KubeObject],
    ) -> Result<Vec<LiveObject>> {
        let mut all: BTreeSet<Scope> = scopes.iter().cloned().collect();
        let mut kinds: BTreeSet<KindRef> = BTreeSet::new();
        for object in desired {
            // A desired Namespace is a scope of its own.
            let namespace = match (&object.namespace, object.kind.as_str()) {
                (Some(ns), _) => Some(ns),
                (None, "Namespace") => Some(&object.name),
                (None, _) => None,
            };
            if let Some(namespace) = namespace {
                all.insert(Scope {
                    context: object.context.clone(),
                    namespace: namespace.clone(),
                });
            }
            kinds.insert(KindRef {
                api_version: object.api_version.clone(),
                kind: object.kind.clone(),
                required: true,
            });
        }
        let scopes: Vec<Scope> = all.into_iter().collect();
        let kinds: Vec<KindRef> = kinds.into_iter().collect();
        self.observe_kinds(workspace, &scopes, &kinds).await
    }

    /// Lists what Cairn manages for `workspace` in these scopes, for the shipped kinds
    /// and `kinds` (a kind in both counts as required if either says so).
    pub async fn observe_kinds(
        &self,
        workspace: &str,
        scopes: &[Scope],
        kinds: &[KindRef],
    ) -> Result<Vec<LiveObject>> {
        let mut wanted: BTreeMap<(String, String), bool> = SHIPPED_KINDS
            .iter()
            .map(|(v, k)| ((v.to_string(), k.to_string()), false))
            .collect();
        for k in kinds {
            *wanted
                .entry((k.api_version.clone(), k.kind.clone()))
                .or_default() |= k.required;
        }
        let mut by_context: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
        for scope in scopes {
            by_context
                .entry(scope.context.clone())
                .or_default()
                .insert(scope.namespace.clone());
        }
        // One list per (context, kind, namespace), or per (context, kind) when
        // cluster-scoped.
        let mut lists: Vec<(Cluster, Option<String>, Resolved, Option<String>)> = Vec::new();
        for (context, namespaces) in &by_context {
            let cluster = self.cluster(context.as_deref()).await?;
            for ((api_version, kind), required) in &wanted {
                let resolved = if *required {
                    Some(self.require(&cluster, context, api_version, kind).await?)
                } else {
                    self.resolve(&cluster, context, api_version, kind).await?
                };
                let Some(resolved) = resolved else { continue };
                if resolved.namespaced {
                    for ns in namespaces {
                        lists.push((
                            cluster.clone(),
                            context.clone(),
                            resolved.clone(),
                            Some(ns.clone()),
                        ));
                    }
                } else {
                    lists.push((cluster.clone(), context.clone(), resolved.clone(), None));
                }
            }
        }
        let selector = selector(workspace);
        let results: Vec<Result<Vec<LiveObject>>> = stream::iter(lists)
            .map(|(cluster, context, resolved, namespace)| {
                let selector = selector.clone();
                async move {
                    list(
                        &cluster,
                        &context,
                        &resolved,
                        namespace.as_deref(),
                        &selector,
                    )
                    .await
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut objects = BTreeMap::new();
        for result in results {
            for object in result? {
                objects.insert((wave(&object.key.kind), object.key.clone()), object);
            }
        }
        Ok(objects.into_values().collect())
    }

    /// Applies `objects` with server-side apply, in waves by kind (see [`wave`]), each
    /// wave's objects concurrently (at most `options.concurrency` in flight), and
    /// returns each object's outcome in the order given. A wave with a failure stops
    /// the later waves (their objects are [`Outcome::Skipped`]). Fails as a whole only
    /// when a context can't be used, before anything is written.
    pub async fn apply(
        &self,
        objects: &[KubeObject],
        options: &ApplyOptions,
    ) -> Result<Vec<Applied>> {
        let mut clusters: HashMap<Option<String>, Cluster> = HashMap::new();
        for object in objects {
            if !clusters.contains_key(&object.context) {
                let cluster = self.cluster(object.context.as_deref()).await?;
                clusters.insert(object.context.clone(), cluster);
            }
        }
        let mut waves: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, object) in objects.iter().enumerate() {
            waves.entry(wave(&object.kind)).or_default().push(i);
        }
        let mut results: Vec<Option<Applied>> = objects.iter().map(|_| None).collect();
        let mut failed: Option<ObjectKey> = None;
        for indices in waves.into_values() {
            if let Some(first) = &failed {
                for i in indices {
                    results[i] = Some(Applied {
                        key: objects[i].key(),
                        outcome: Outcome::Skipped {
                            reason: format!("{first} failed to apply"),
                        },
                        resource_version: None,
                    });
                }
                continue;
            }
            let done: Vec<(usize, Applied)> = stream::iter(indices)
                .map(|i| {
                    let object = &objects[i];
                    let cluster = &clusters[&object.context];
                    async move { (i, self.apply_one(cluster, object, options).await) }
                })
                .buffer_unordered(options.concurrency.max(1))
                .collect()
                .await;
            for (i, applied) in done {
                if matches!(applied.outcome, Outcome::Failed(_)) && failed.is_none() {
                    failed = Some(applied.key.clone());
                }
                results[i] = Some(applied);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn apply_one(
        &self,
        cluster: &Cluster,
        object: &KubeObject,
        options: &ApplyOptions,
    ) -> Applied {
        let key = object.key();
        match self.try_apply(cluster, object, options).await {
            Ok((outcome, resource_version)) => Applied {
                key,
                outcome,
                resource_version,
            },
            Err(e) => Applied {
                key,
                outcome: Outcome::Failed(e),
                resource_version: None,
            },
        }
    }

    async fn try_apply(
        &self,
        cluster: &Cluster,
        object: &KubeObject,
        options: &ApplyOptions,
    ) -> Result<(Outcome, Option<String>)> {
        let key = object.key();
        let resolved = self
            .require(cluster, &object.context, &object.api_version, &object.kind)
            .await?;
        let api = api_for(cluster, &resolved, object.namespace.as_deref(), &key)?;
        let workspace = label(&object.value, LABEL_WORKSPACE).unwrap_or_default();
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if options.force {
            params = params.force();
        }
        for _ in 0..ATTEMPTS {
            let live = get(&api, cluster, &key).await?;
            let Some(live) = live else {
                let applied = patch(&api, cluster, &key, &object.value, &params).await?;
                return Ok((Outcome::Created, resource_version(&applied)));
            };
            if !is_managed(&live, workspace) {
                // A namespace someone else made (a platform team, another workspace)
                // is used as it is.
                if object.kind == "Namespace" {
                    return Ok((Outcome::Foreign, resource_version(&live)));
                }
                return Err(Error::NotManaged {
                    object: Box::new(key),
                    workspace: workspace.to_string(),
                    owner: label(&live, LABEL_WORKSPACE)
                        .filter(|_| label(&live, LABEL_MANAGED_BY) == Some("cairn"))
                        .map(str::to_string),
                });
            }
            let before = resource_version(&live);
            let changes = diff(object, &live);
            if options.replace.contains(&key) || changes.needs_replace() {
                self.delete_and_wait(&api, cluster, &key, &live, options.delete_timeout)
                    .await?;
                let applied = patch(&api, cluster, &key, &object.value, &params).await?;
                return Ok((Outcome::Replaced, resource_version(&applied)));
            }
            if changes.is_empty() {
                return Ok((Outcome::Unchanged, before));
            }
            // The resourceVersion read makes the write conditional: if the object
            // changed since, it is read and diffed again.
            let mut body = object.value.clone();
            if let (Some(meta), Some(rv)) = (
                body.get_mut("metadata").and_then(Value::as_object_mut),
                &before,
            ) {
                meta.insert("resourceVersion".into(), Value::String(rv.clone()));
            }
            match api.patch(&key.name, &params, &Patch::Apply(&body)).await {
                Ok(applied) => {
                    let after = applied.metadata.resource_version.clone();
                    let outcome = if after == before {
                        Outcome::Unchanged
                    } else {
                        Outcome::Updated
                    };
                    return Ok((outcome, after));
                }
                Err(kube::Error::Api(status))
                    if status.code == 409 && !is_field_conflict(&status) =>
                {
                    continue;
                }
                Err(e) => return Err(apply_error(cluster, &key, e)),
            }
        }
        Err(Error::Raced {
            object: Box::new(key),
            attempts: ATTEMPTS,
        })
    }

    /// Deletes an object (foreground: its dependents first) if it is still the one
    /// read, and waits until it is gone.
    async fn delete_and_wait(
        &self,
        api: &Api<DynamicObject>,
        cluster: &Cluster,
        key: &ObjectKey,
        live: &Value,
        timeout: Duration,
    ) -> Result<()> {
        let uid = live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        let params = DeleteParams::foreground().preconditions(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        });
        match api.delete(&key.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(request_error(cluster, "delete", key.to_string(), e)),
        }
        let start = Instant::now();
        loop {
            match get(api, cluster, key).await? {
                None => return Ok(()),
                Some(now)
                    if now.pointer("/metadata/uid").and_then(Value::as_str) != uid.as_deref() =>
                {
                    return Ok(())
                }
                Some(_) => {}
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("{key} to be deleted"),
                    waited: timeout,
                    state: "it still exists (a finalizer may hold it)".into(),
                });
            }
            tokio::time::sleep(
                self.backoff(start.elapsed())
                    .min(timeout.saturating_sub(start.elapsed())),
            )
            .await;
        }
    }

    /// Deletes the objects that carry Cairn's labels for `workspace`, in reverse apply
    /// wave order, and returns how many it deleted. Each object is read again first:
    /// one that is gone is skipped, one whose live labels no longer say it is Cairn's
    /// for this workspace is left alone, and the delete is conditional on the `uid` and
    /// `resourceVersion` read. Objects passed that don't carry the labels are ignored.
    pub async fn prune(&self, workspace: &str, objects: &[LiveObject]) -> Result<usize> {
        let mut clusters: HashMap<Option<String>, Cluster> = HashMap::new();
        for object in objects {
            if !clusters.contains_key(&object.key.context) {
                let cluster = self.cluster(object.key.context.as_deref()).await?;
                clusters.insert(object.key.context.clone(), cluster);
            }
        }
        let mut waves: BTreeMap<std::cmp::Reverse<usize>, Vec<&LiveObject>> = BTreeMap::new();
        for object in objects.iter().filter(|o| o.is_managed_by(workspace)) {
            waves
                .entry(std::cmp::Reverse(wave(&object.key.kind)))
                .or_default()
                .push(object);
        }
        let mut deleted = 0;
        for wave_objects in waves.into_values() {
            // The futures are made first so the stream holds no closure over their
            // lifetimes (which callers behind `async_trait` could not prove `Send`).
            let prunes: Vec<_> = wave_objects
                .into_iter()
                .map(|object| {
                    let cluster = &clusters[&object.key.context];
                    self.prune_one(cluster, workspace, object)
                })
                .collect();
            let results: Vec<Result<bool>> = stream::iter(prunes)
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for result in results {
                if result? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    async fn prune_one(
        &self,
        cluster: &Cluster,
        workspace: &str,
        object: &LiveObject,
    ) -> Result<bool> {
        let key = &object.key;
        let resolved = self
            .require(cluster, &key.context, &object.api_version, &key.kind)
            .await?;
        let api = api_for(cluster, &resolved, key.namespace.as_deref(), key)?;
        for _ in 0..ATTEMPTS {
            let Some(live) = get(&api, cluster, key).await? else {
                return Ok(false);
            };
            if !is_managed(&live, workspace) {
                return Ok(false);
            }
            let params = DeleteParams::background().preconditions(Preconditions {
                uid: live
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                resource_version: resource_version(&live),
            });
            match api.delete(&key.name, &params).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
                // Changed since it was read: read it (and its labels) again.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(request_error(cluster, "delete", key.to_string(), e)),
            }
        }
        Err(Error::Raced {
            object: Box::new(key.clone()),
            attempts: ATTEMPTS,
        })
    }

    /// Waits until a Job completes: its `Complete` condition is true, or `succeeded`
    /// reaches `completions`. A `Failed` condition is an error carrying its reason and
    /// message; so is running out of `timeout`. Meanwhile passes each new log line of
    /// the Job's pods to `on_log`, as `[<pod>/<container>] <line>`.
    pub async fn wait_job(
        &self,
        key: &ObjectKey,
        timeout: Duration,
        on_log: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        let cluster = self.cluster(key.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &key.context, "batch/v1", "Job")
            .await?;
        let api = api_for(&cluster, &resolved, key.namespace.as_deref(), key)?;
        let mut logs = LogCursor::default();
        let start = Instant::now();
        loop {
            let Some(job) = get(&api, &cluster, key).await? else {
                return Err(Error::Gone {
                    object: Box::new(key.clone()),
                });
            };
            let state = job_state(&job);
            if state != JobState::Running {
                logs.pump(&cluster, key, on_log).await;
            }
            match state {
                JobState::Succeeded => return Ok(()),
                JobState::Failed { reason, message } => {
                    return Err(Error::JobFailed {
                        job: Box::new(key.clone()),
                        reason,
                        message,
                    })
                }
                JobState::Running => {}
            }
            logs.pump(&cluster, key, on_log).await;
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: key.to_string(),
                    waited: timeout,
                    state: job_progress(&job),
                });
            }
            tokio::time::sleep(
                self.backoff(start.elapsed())
                    .min(timeout.saturating_sub(start.elapsed())),
            )
            .await;
        }
    }

    /// Waits until a Deployment is available: the controller has seen its latest
    /// generation, `availableReplicas` reaches `replicas` and the `Available` condition
    /// is true. A `Progressing` condition that is false (the progress deadline passed)
    /// ends the wait early with an error; so does `timeout`. Errors say how many
    /// replicas are ready.
    pub async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<()> {
        let cluster = self.cluster(key.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &key.context, "apps/v1", "Deployment")
            .await?;
        let api = api_for(&cluster, &resolved, key.namespace.as_deref(), key)?;
        let start = Instant::now();
        loop {
            let Some(deployment) = get(&api, &cluster, key).await? else {
                return Err(Error::Gone {
                    object: Box::new(key.clone()),
                });
            };
            let n = |p: &str| deployment.pointer(p).and_then(Value::as_i64);
            let generation = n("/metadata/generation").unwrap_or(0);
            let observed = n("/status/observedGeneration").unwrap_or(0);
            let replicas = n("/spec/replicas").unwrap_or(1);
            let available = n("/status/availableReplicas").unwrap_or(0);
            let ready = n("/status/readyReplicas").unwrap_or(0);
            let updated = n("/status/updatedReplicas").unwrap_or(0);
            let available_condition = condition(&deployment, "Available");
            if observed >= generation
                && available >= replicas
                && updated >= replicas
                && available_condition.is_some_and(|c| c.status == "True")
            {
                return Ok(());
            }
            let state = format!(
                "{ready} of {replicas} replicas ready, {available} available, {updated} updated"
            );
            if let Some(progressing) = condition(&deployment, "Progressing") {
                if progressing.status == "False" && observed >= generation {
                    return Err(Error::NotProgressing {
                        object: Box::new(key.clone()),
                        reason: progressing.reason,
                        message: progressing.message,
                        state,
                    });
                }
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("{key} to be available"),
                    waited: timeout,
                    state,
                });
            }
            tokio::time::sleep(
                self.backoff(start.elapsed())
                    .min(timeout.saturating_sub(start.elapsed())),
            )
            .await;
        }
    }

    /// Reads one object as it is live; `None` when it does not exist.
    pub async fn get(&self, key: &ObjectKey, api_version: &str) -> Result<Option<Value>> {
        let cluster = self.cluster(key.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &key.context, api_version, &key.kind)
            .await?;
        let api = api_for(&cluster, &resolved, key.namespace.as_deref(), key)?;
        get(&api, &cluster, key).await
    }

    /// GETs `path` from every running pod matching the label `selector` in
    /// `namespace`, through the API server's pod proxy
    /// (`pods/<pod>:<port>/proxy/<path>`), all pods at once: `(pod, body)` per pod,
    /// by pod name. A pod that doesn't answer is an error naming it.
    pub async fn scrape(
        &self,
        context: Option<&str>,
        namespace: &str,
        selector: &str,
        port: u16,
        path: &str,
    ) -> Result<Vec<(String, String)>> {
        let cluster = self.cluster(context).await?;
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                request_error(
                    &cluster,
                    "list",
                    format!("pods matching `{selector}` in namespace `{namespace}`"),
                    e,
                )
            })?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        let path = path.trim_start_matches('/');
        let answers = futures::future::join_all(names.into_iter().map(|pod| {
            let cluster = &cluster;
            async move {
                let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path}");
                let request =
                    http::Request::get(&uri)
                        .body(Vec::new())
                        .map_err(|e| Error::Api {
                            action: "proxy",
                            what: uri.clone(),
                            code: 400,
                            reason: "BadRequest".into(),
                            message: e.to_string(),
                        })?;
                match cluster.client.request_text(request).await {
                    Ok(body) => Ok((pod, body)),
                    Err(e) => Err(request_error(
                        cluster,
                        "proxy",
                        format!("GET /{path} of pod `{pod}` in namespace `{namespace}`"),
                        e,
                    )),
                }
            }
        }))
        .await;
        answers.into_iter().collect()
    }

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

fn api_for(
    cluster: &Cluster,
    resolved: &Resolved,
    namespace: Option<&str>,
    key: &ObjectKey,
) -> Result<Api<DynamicObject>> {
    match (resolved.namespaced, namespace) {
        (true, Some(ns)) => Ok(Api::namespaced_with(
            cluster.client.clone(),
            ns,
            &resolved.resource,
        )),
        (false, None) => Ok(Api::all_with(cluster.client.clone(), &resolved.resource)),
        (true, None) => Err(Error::InvalidObject {
            object: Box::new(key.clone()),
            problem: format!(
                "{} is namespaced, and the object names no namespace",
                resolved.resource.kind
            ),
        }),
        (false, Some(ns)) => Err(Error::InvalidObject {
            object: Box::new(key.clone()),
            problem: format!(
                "{} is cluster-scoped, and the object names namespace `{ns}`",
                resolved.resource.kind
            ),
        }),
    }
}

/// Reads one object as JSON; `None` when it doesn't exist.
async fn get(
    api: &Api<DynamicObject>,
    cluster: &Cluster,
    key: &ObjectKey,
) -> Result<Option<Value>> {
    match api.get_opt(&key.name).await {
        Ok(Some(object)) => Ok(Some(to_json(object, &key.kind))),
        Ok(None) => Ok(None),
        Err(e) => Err(request_error(cluster, "read", key.to_string(), e)),
    }
}

async fn patch(
    api: &Api<DynamicObject>,
    cluster: &Cluster,
    key: &ObjectKey,
    body: &Value,
    params: &PatchParams,
) -> Result<Value> {
    api.patch(&key.name, params, &Patch::Apply(body))
        .await
        .map(|o| to_json(o, &key.kind))
        .map_err(|e| apply_error(cluster, key, e))
}

fn to_json(object: DynamicObject, kind: &str) -> Value {
    let mut value = serde_json::to_value(&object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.entry("kind")
            .or_insert_with(|| Value::String(kind.to_string()));
    }
    value
}

fn resource_version(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Lists one kind in one namespace (or cluster-wide) by label selector, page by page.
async fn list(
    cluster: &Cluster,
    context: &Option<String>,
    resolved: &Resolved,
    namespace: Option<&str>,
    selector: &str,
) -> Result<Vec<LiveObject>> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &resolved.resource),
        None => Api::all_with(cluster.client.clone(), &resolved.resource),
    };
    let mut out = Vec::new();
    let mut params = ListParams::default().labels(selector).limit(500);
    loop {
        let page = api.list(&params).await.map_err(|e| {
            let what = match namespace {
                Some(ns) => format!("{} objects in namespace `{ns}`", resolved.resource.kind),
                None => format!("{} objects", resolved.resource.kind),
            };
            request_error(cluster, "list", what, e)
        })?;
        for item in page.items {
            let name = item.metadata.name.clone().unwrap_or_default();
            let item_namespace = item.metadata.namespace.clone();
            let mut value = serde_json::to_value(&item).unwrap_or(Value::Null);
            if let Some(map) = value.as_object_mut() {
                map.insert(
                    "apiVersion".into(),
                    Value::String(resolved.resource.api_version.clone()),
                );
                map.insert("kind".into(), Value::String(resolved.resource.kind.clone()));
            }
            out.push(LiveObject {
                key: ObjectKey {
                    context: context.clone(),
                    group: resolved.resource.group.clone(),
                    kind: resolved.resource.kind.clone(),
                    namespace: item_namespace,
                    name,
                },
                api_version: resolved.resource.api_version.clone(),
                value,
            });
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

fn is_field_conflict(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "FieldManagerConflict"))
}

/// The error of an apply: a field-manager conflict gets its own, with the fields and
/// the managers that own them.
fn apply_error(cluster: &Cluster, key: &ObjectKey, error: kube::Error) -> Error {
    if let kube::Error::Api(status) = &error {
        if status.code == 409 && is_field_conflict(status) {
            let causes = status
                .details
                .as_ref()
                .map(|d| d.causes.as_slice())
                .unwrap_or_default();
            let mut fields = Vec::new();
            let mut managers = BTreeSet::new();
            for cause in causes.iter().filter(|c| c.reason == "FieldManagerConflict") {
                fields.push(cause.field.clone());
                // `conflict with "kubectl"` or `conflict with "kubectl" using apps/v1`.
                if let Some(name) = cause.message.split('"').nth(1) {
                    managers.insert(name.to_string());
                }
            }
            return Error::Conflict {
                object: Box::new(key.clone()),
                fields,
                managers: managers.into_iter().collect(),
            };
        }
    }
    request_error(cluster, "apply", key.to_string(), error)
}

/// Turns a client error into ours: API answers keep their message; anything else is
/// the server being out of reach, named by its URL (never its credentials).
fn request_error(
    cluster: &Cluster,
    action: &'static str,
    what: String,
    error: kube::Error,
) -> Error {
    match error {
        kube::Error::Api(status) => Error::Api {
            action,
            what,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        kube::Error::Auth(e) => Error::Context {
            context: cluster.name.clone(),
            message: format!("cannot authenticate: {e}"),
        },
        other => Error::Unreachable {
            context: cluster.name.clone(),
            server: cluster.server.clone(),
            source: Box::new(other),
        },
    }
}

/// One condition of an object's status.
struct Condition {
    status: String,
    reason: String,
    message: String,
}

fn condition(object: &Value, kind: &str) -> Option<Condition> {
    let c = object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?;
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(Condition {
        status: s("status"),
        reason: s("reason"),
        message: s("message"),
    })
}

#[derive(Debug, PartialEq)]
enum JobState {
    Running,
    Succeeded,
    Failed { reason: String, message: String },
}

fn job_state(job: &Value) -> JobState {
    if let Some(failed) = condition(job, "Failed").filter(|c| c.status == "True") {
        return JobState::Failed {
            reason: failed.reason,
            message: failed.message,
        };
    }
    if condition(job, "Complete").is_some_and(|c| c.status == "True") {
        return JobState::Succeeded;
    }
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let succeeded = job
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if succeeded >= completions {
        return JobState::Succeeded;
    }
    JobState::Running
}

fn job_progress(job: &Value) -> String {
    let n = |k: &str| {
        job.pointer(&format!("/status/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    format!(
        "{} of {completions} completions succeeded, {} active, {} failed",
        n("succeeded"),
        n("active"),
        n("failed")
    )
}

/// Which log lines of a Job's pods were passed on already: the last timestamp seen per
/// pod and container.
#[derive(Default)]
struct LogCursor {
    last: HashMap<(String, String), Timestamp>,
    /// The server (or the role) has no `pods` or `pods/log`: stop asking.
    unavailable: bool,
}

impl LogCursor {
    async fn pump(
        &mut self,
        cluster: &Cluster,
        job: &ObjectKey,
        on_log: &mut (dyn FnMut(&str) + Send),
    ) {
        if self.unavailable {
            return;
        }
        let Some(namespace) = &job.namespace else {
            return;
        };
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
        let selector = format!("batch.kubernetes.io/job-name={}", job.name);
        let list = match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404) => {
                self.unavailable = true;
                return;
            }
            // Logs are a courtesy: a failed read never fails the wait.
            Err(_) => return,
        };
        let mut items = list.items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for pod in items {
            let Some(pod_name) = pod.metadata.name.clone() else {
                continue;
            };
            let Some(status) = &pod.status else { continue };
            let started = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
                .filter(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                })
                .map(|c| c.name.clone());
            for container in started.collect::<Vec<_>>() {
                let cursor = (pod_name.clone(), container.clone());
                let last = self.last.get(&cursor).copied();
                let params = LogParams {
                    container: Some(container.clone()),
                    timestamps: true,
                    // Whole seconds, rounded down: the server filters by second, and
                    // lines up to `last` are skipped below.
                    since_time: last.and_then(|t| Timestamp::from_second(t.as_second()).ok()),
                    ..LogParams::default()
                };
                let text = match pods.logs(&pod_name, &params).await {
                    Ok(text) => text,
                    // No `pods/log` here (or not for this role): no logs at all.
                    Err(kube::Error::Api(status))
                        if status.code == 403
                            || (status.code == 404
                                && status
                                    .message
                                    .contains("could not find the requested resource")) =>
                    {
                        self.unavailable = true;
                        return;
                    }
                    Err(_) => continue,
                };
                for line in text.lines() {
                    let (stamp, rest) = line.split_once(' ').unwrap_or((line, ""));
                    let Ok(stamp) = stamp.parse::<Timestamp>() else {
                        on_log(&format!("[{pod_name}/{container}] {line}"));
                        continue;
                    };
                    if last.is_some_and(|l| stamp <= l) {
                        continue;
                    }
                    on_log(&format!("[{pod_name}/{container}] {rest}"));
                    self.last.insert(cursor.clone(), stamp);
                }
            }
        }
    }
}

fn show_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(given in memory)".to_string();
    }
    paths
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_contexts(known: &[String]) -> String {
    if known.is_empty() {
        "it has no contexts".to_string()
    } else {
        format!(
            "the known contexts are {}",
            known
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Errors from talking to clusters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no kubeconfig: {why}")]
    NoKubeconfig { why: String },
    #[error("cannot read the kubeconfig {paths}: {message}")]
    Kubeconfig { paths: String, message: String },
    #[error("context `{context}` is not in the kubeconfig {paths}; {}", known_contexts(.known))]
    UnknownContext {
        context: String,
        known: Vec<String>,
        paths: String,
    },
    #[error("the kubeconfig {paths} names no current context; {}", known_contexts(.known))]
    NoCurrentContext { known: Vec<String>, paths: String },
    #[error("cannot use context `{context}`: {message}")]
    Context { context: String, message: String },
    #[error("cannot reach the Kubernetes API server at {server} (context `{context}`): {source}")]
    Unreachable {
        context: String,
        server: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot {action} {what}: {message} ({code} {reason})")]
    Api {
        action: &'static str,
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{object}: {}", conflict_message(.fields, .managers))]
    Conflict {
        object: Box<ObjectKey>,
        /// The conflicting fields, as the server names them (`.spec.replicas`).
        fields: Vec<String>,
        /// The field managers that own them.
        managers: Vec<String>,
    },
    #[error("{object} exists and is not managed by Cairn for workspace `{workspace}`{}", .owner.as_ref().map(|o| format!(" (it belongs to workspace `{o}`)")).unwrap_or_default())]
    NotManaged {
        object: Box<ObjectKey>,
        workspace: String,
        /// The workspace that manages it, when another one does.
        owner: Option<String>,
    },
    #[error("the cluster of context `{context}` does not serve {api_version} {kind}")]
    KindNotServed {
        context: String,
        api_version: String,
        kind: String,
    },
    #[error("{object}: {problem}")]
    InvalidObject {
        object: Box<ObjectKey>,
        problem: String,
    },
    #[error("{job} failed: {reason}: {message}")]
    JobFailed {
        job: Box<ObjectKey>,
        reason: String,
        message: String,
    },
    #[error("{object} is not progressing: {reason}: {message} ({state})")]
    NotProgressing {
        object: Box<ObjectKey>,
        reason: String,
        message: String,
        state: String,
    },
    #[error("timed out after {} waiting for {what}: {state}", humantime::format_duration(*.waited))]
    Timeout {
        what: String,
        waited: Duration,
        state: String,
    },
    #[error("{object} kept changing while Cairn wrote it ({attempts} attempts)")]
    Raced {
        object: Box<ObjectKey>,
        attempts: usize,
    },
    #[error("{object} disappeared while Cairn waited for it")]
    Gone { object: Box<ObjectKey> },
}

fn conflict_message(fields: &[String], managers: &[String]) -> String {
    let owners = managers
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = fields
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{owners} also manages {fields}, with another value")
}

impl Error {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NoKubeconfig { .. } => {
                "set KUBECONFIG or write ~/.kube/config (e.g. with your cloud's `get-credentials` command)".into()
            }
            Error::Kubeconfig { .. } => "check the file with `kubectl config view`".into(),
            Error::UnknownContext { .. } => {
                "set the compute's `context` to one of the known contexts, or add it to the kubeconfig".into()
            }
            Error::NoCurrentContext { .. } => {
                "set the compute's `context`, or pick one with `kubectl config use-context`".into()
            }
            Error::Context { .. } => {
                "check the context with `kubectl --context <context> get namespaces`".into()
            }
            Error::Unreachable { .. } => {
                "check that the cluster is up and reachable from here (VPN, firewall, proxy)".into()
            }
            Error::Api { code: 401, .. } => "the cluster refused the credentials: log in again".into(),
            Error::Api { code: 403, .. } => {
                "the kubeconfig's user lacks permission: check its RBAC roles with `kubectl auth can-i`".into()
            }
            Error::Api { code: 422, .. } => {
                "the API server refused the object: check the template override that renders it".into()
            }
            Error::Api { .. } => return None,
            Error::Conflict { .. } => {
                "someone else (kubectl edit, an autoscaler, another tool) changed these fields; rerun with `--force-conflicts` to take them back, or remove them from the manifests to leave them to the other manager".into()
            }
            Error::NotManaged { .. } => {
                "Cairn never takes over objects it did not create: delete or rename the object, or give the resource another name".into()
            }
            Error::KindNotServed { kind, .. } if kind == "HTTPRoute" => {
                "install the Gateway API CRDs in the cluster, or remove `gateway` from the compute".into()
            }
            Error::KindNotServed { .. } => "install the CRD that serves it, or remove the template override that renders it".into(),
            Error::InvalidObject { .. } => "check the template override that renders it".into(),
            Error::JobFailed { .. } => "read the job's logs: `kubectl logs job/<name>`".into(),
            Error::NotProgressing { .. } | Error::Timeout { .. } => {
                "look at the pods' events: `kubectl describe pods -l <selector>`".into()
            }
            Error::Raced { .. } => "another client keeps changing it; run again".into(),
            Error::Gone { .. } => "someone deleted it; run again".into(),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_follow_the_templates_with_other_kinds_before_routes() {
        let order: Vec<usize> = [
            "Namespace",
            "ResourceQuota",
            "LimitRange",
            "ServiceAccount",
            "Job",
            "Deployment",
            "Service",
            "ConfigMap",
            "HTTPRoute",
        ]
        .iter()
        .map(|k| wave(k))
        .collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn job_states() {
        use serde_json::json;
        assert_eq!(job_state(&json!({"spec": {}})), JobState::Running);
        assert_eq!(
            job_state(&json!({"spec": {"completions": 2}, "status": {"succeeded": 2}})),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&json!({"status": {"conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}]}})),
            JobState::Failed {
                reason: "DeadlineExceeded".into(),
                message: "too slow".into()
            }
        );
    }

    #[test]
    fn whole_quantities() {
        assert_eq!(whole("4"), Some(4));
        assert_eq!(whole("1500m"), Some(1));
        assert_eq!(whole("-1"), None);
        assert_eq!(whole("x"), None);
    }
}

//! Connections to the clusters a workspace uses, and what Cairn does through them:
//! list the objects it manages, read GPU capacity, server-side apply, delete, and wait
//! for Jobs and Deployments.
//!
//! This module owns the `kube` client side of the Kubernetes target. One
//! [`kube::Client`] is made per kubeconfig context, lazily, and kept. Contexts come from
//! `KUBECONFIG` (several files, merged as kubectl does) or `~/.kube/config`; when there
//! is no kubeconfig and `KUBERNETES_SERVICE_HOST` is set (Cairn runs in a pod), the pod's
//! service account is the one current context.
//!
//! Objects are read and written generically (`DynamicObject` with an `ApiResource` made
//! from `apiVersion` and `kind`), so template overrides can add any kind. Writes use
//! server-side apply with field manager `cairn`. Only fields the plan showed as drift
//! (and the user approved) are taken back from another field manager; anywhere else
//! such a field is a conflict that names the fields, not a silent takeover. Deletes only
//! ever touch objects that still carry Cairn's labels.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::Value;

use super::diff::FIELD_MANAGER;
use super::target::{BoxError, KubeTarget};
use super::{KubeObject, ObjectKey, LABEL_MANAGED_BY, LABEL_WORKSPACE};

/// How many requests run at once against one cluster.
const CONCURRENCY: usize = 16;
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(200);

/// The kinds Cairn's templates render, in apply order: what `observe` lists.
pub const MANAGED_KINDS: [(&str, &str, bool); 8] = [
    ("v1", "Namespace", false),
    ("v1", "ResourceQuota", true),
    ("v1", "LimitRange", true),
    ("v1", "ServiceAccount", true),
    ("batch/v1", "Job", true),
    ("apps/v1", "Deployment", true),
    ("v1", "Service", true),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", true),
];

/// Errors from talking to clusters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no kubeconfig was found (`KUBECONFIG` or ~/.kube/config)")]
    NoKubeconfig {
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("the kube context `{context}` is not in the kubeconfig (it has: {known})")]
    UnknownContext { context: String, known: String },
    #[error("the kubeconfig names no current context")]
    NoCurrentContext,
    #[error("cannot configure a client for {what}")]
    Config {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what} on {cluster} failed")]
    Request {
        what: String,
        cluster: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} on {cluster}: conflict with another field manager: {message}")]
    Conflict {
        what: String,
        cluster: String,
        message: String,
    },
    #[error("{what} failed: {reason}")]
    JobFailed { what: String, reason: String },
    #[error("{what} did not {goal} within {}", humantime::format_duration(*.after))]
    Timeout {
        what: String,
        goal: &'static str,
        after: Duration,
        state: String,
    },
}

impl Error {
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::NoKubeconfig { .. } | Error::UnknownContext { .. } | Error::NoCurrentContext => {
                Some("set KUBECONFIG or write ~/.kube/config; `kubectl config get-contexts` lists what is there".into())
            }
            Error::Request { source, .. } => match source {
                kube::Error::Api(status) if status.code == 401 => {
                    Some("the credentials of this context were refused: log in again".into())
                }
                kube::Error::Api(status) if status.code == 403 => Some(
                    "the context's user may not do this: check its RBAC role in that namespace"
                        .into(),
                ),
                kube::Error::Api(_) => None,
                _ => Some("is the cluster reachable from here? `kubectl cluster-info` checks".into()),
            },
            Error::Conflict { .. } => Some(
                "someone changed fields Cairn manages since the plan was made: plan again to see the drift, then apply".into(),
            ),
            Error::Timeout { state, .. } => Some(state.clone()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One (kube context, namespace) a workspace uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// `None` is the kubeconfig's current context.
    pub context: Option<String>,
    pub namespace: String,
}

/// An object as it is live, found by Cairn's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    pub key: ObjectKey,
    pub api_version: String,
    /// The object as the API server returned it.
    pub value: Value,
}

impl LiveObject {
    /// The `cairn.dev/workspace` label.
    pub fn workspace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/labels")
            .and_then(|l| l.get(LABEL_WORKSPACE))
            .and_then(Value::as_str)
    }
}

/// GPUs a namespace may still ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// The tightest ResourceQuota on GPUs not made by Cairn: hard and used.
    pub quota_hard: Option<u64>,
    pub quota_used: Option<u64>,
    /// The GPUs the cluster's nodes have allocatable (`None` when nodes can't be read).
    pub nodes_allocatable: Option<u64>,
}

/// Clients per kube context, made when first needed.
pub struct Clusters {
    kubeconfig: Option<Kubeconfig>,
    read_error: Mutex<Option<kube::config::KubeconfigError>>,
    clients: tokio::sync::Mutex<BTreeMap<Option<String>, (kube::Client, String)>>,
}

impl Default for Clusters {
    fn default() -> Self {
        Clusters::new()
    }
}

impl Clusters {
    /// Reads the kubeconfig from `KUBECONFIG` or `~/.kube/config`.
    pub fn new() -> Clusters {
        match Kubeconfig::read() {
            Ok(k) => Clusters::with(Some(k), None),
            Err(e) => Clusters::with(None, Some(e)),
        }
    }

    fn with(
        kubeconfig: Option<Kubeconfig>,
        error: Option<kube::config::KubeconfigError>,
    ) -> Clusters {
        Clusters {
            kubeconfig,
            read_error: Mutex::new(error),
            clients: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn in_cluster() -> bool {
        std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    }

    /// Checks that `context` (or a current one) exists, without connecting.
    pub fn check_context(&self, context: Option<&str>) -> Result<()> {
        let Some(kubeconfig) = &self.kubeconfig else {
            if Clusters::in_cluster() && context.is_none() {
                return Ok(());
            }
            return Err(match self.read_error.lock().expect("lock").take() {
                Some(source) => Error::NoKubeconfig { source },
                None => Error::NoCurrentContext,
            });
        };
        match context {
            Some(name) => {
                if kubeconfig.contexts.iter().any(|c| c.name == name) {
                    Ok(())
                } else {
                    let known: Vec<&str> = kubeconfig
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    Err(Error::UnknownContext {
                        context: name.to_string(),
                        known: if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        },
                    })
                }
            }
            None if kubeconfig.current_context.is_some() => Ok(()),
            None => Err(Error::NoCurrentContext),
        }
    }

    /// The client for `context`, and a description of its cluster for messages.
    pub async fn client(&self, context: Option<&str>) -> Result<(kube::Client, String)> {
        let key = context.map(str::to_string);
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        self.check_context(context)?;
        let what = match context {
            Some(c) => format!("kube context `{c}`"),
            None => "the current kube context".to_string(),
        };
        let config = match &self.kubeconfig {
            Some(k) => {
                let options = KubeConfigOptions {
                    context: key.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(k.clone(), &options)
                    .await
                    .map_err(|e| Error::Config {
                        what: what.clone(),
                        source: Box::new(e),
                    })?
            }
            None => kube::Config::incluster().map_err(|e| Error::Config {
                what: what.clone(),
                source: Box::new(e),
            })?,
        };
        let cluster = format!("{what} ({})", config.cluster_url);
        let client = kube::Client::try_from(config).map_err(|e| Error::Config {
            what: what.clone(),
            source: Box::new(e),
        })?;
        clients.insert(key, (client.clone(), cluster.clone()));
        Ok((client, cluster))
    }

    /// Every object Cairn manages for `workspace` in `scopes`, listed by label, one
    /// list per kind and namespace, [`CONCURRENCY`] at a time. A kind the cluster does
    /// not serve (no Gateway API) has no objects.
    pub async fn observe(&self, workspace: &str, scopes: &[Scope]) -> Result<Vec<LiveObject>> {
        let selector = format!("{LABEL_MANAGED_BY}=cairn,{LABEL_WORKSPACE}={workspace}");
        let mut lists = Vec::new();
        let mut contexts: Vec<Option<String>> = Vec::new();
        for scope in scopes {
            if !contexts.contains(&scope.context) {
                contexts.push(scope.context.clone());
                for (api_version, kind, namespaced) in MANAGED_KINDS {
                    if !namespaced {
                        lists.push((scope.context.clone(), None, api_version, kind));
                    }
                }
            }
            for (api_version, kind, namespaced) in MANAGED_KINDS {
                if namespaced {
                    lists.push((
                        scope.context.clone(),
                        Some(scope.namespace.clone()),
                        api_version,
                        kind,
                    ));
                }
            }
        }
        let selector = &selector;
        let found: Vec<Vec<LiveObject>> = stream::iter(lists)
            .map(|(context, namespace, api_version, kind)| async move {
                let (client, cluster) = self.client(context.as_deref()).await?;
                let ar = api_resource(api_version, kind);
                let api: Api<DynamicObject> = match &namespace {
                    Some(ns) => Api::namespaced_with(client, ns, &ar),
                    None => Api::all_with(client, &ar),
                };
                let list = match api.list(&ListParams::default().labels(selector)).await {
                    Ok(list) => list,
                    // A kind the cluster doesn't serve, or a namespace not made yet.
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
                    Err(source) => {
                        return Err(Error::Request {
                            what: format!("listing {kind}s"),
                            cluster,
                            source,
                        })
                    }
                };
                Ok(list
                    .items
                    .into_iter()
                    .map(|item| {
                        let name = item.metadata.name.clone().unwrap_or_default();
                        let value = serde_json::to_value(&item).unwrap_or(Value::Null);
                        LiveObject {
                            key: ObjectKey {
                                context: context.clone(),
                                group: ar.group.clone(),
                                kind: kind.to_string(),
                                namespace: namespace.clone(),
                                name,
                            },
                            api_version: api_version.to_string(),
                            value,
                        }
                    })
                    .collect())
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut objects: Vec<LiveObject> = found.into_iter().flatten().collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// GPU capacity of `namespace`: the tightest GPU ResourceQuota Cairn did not make,
    /// and the nodes' allocatable GPUs (when the nodes can be read).
    pub async fn capacity(&self, context: Option<&str>, namespace: &str) -> Result<Capacity> {
        let (client, cluster) = self.client(context).await?;
        let quotas: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &api_resource("v1", "ResourceQuota"),
        );
        let mut capacity = Capacity::default();
        match quotas.list(&ListParams::default()).await {
            Ok(list) => {
                let mut tightest: Option<(u64, u64)> = None;
                for q in list.items {
                    let managed = q
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_MANAGED_BY))
                        .is_some_and(|v| v == "cairn");
                    if managed {
                        continue;
                    }
                    let gpus = |section: &str, field: &str| -> Option<u64> {
                        let map = q.data.get(section)?.get(field)?;
                        ["requests.nvidia.com/gpu", "nvidia.com/gpu"]
                            .iter()
                            .filter_map(|k| map.get(*k).and_then(quantity))
                            .min()
                    };
                    if let Some(hard) = gpus("spec", "hard") {
                        let used = gpus("status", "used").unwrap_or(0);
                        let free = hard.saturating_sub(used);
                        if tightest.is_none_or(|(h, u)| h.saturating_sub(u) > free) {
                            tightest = Some((hard, used));
                        }
                    }
                }
                if let Some((hard, used)) = tightest {
                    capacity.quota_hard = Some(hard);
                    capacity.quota_used = Some(used);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => {}
            Err(source) => {
                return Err(Error::Request {
                    what: format!("reading the quotas of namespace `{namespace}`"),
                    cluster,
                    source,
                })
            }
        }
        let nodes: Api<DynamicObject> = Api::all_with(client, &api_resource("v1", "Node"));
        if let Ok(list) = nodes.list(&ListParams::default()).await {
            if !list.items.is_empty() {
                capacity.nodes_allocatable = Some(
                    list.items
                        .iter()
                        .filter_map(|n| {
                            n.data
                                .pointer("/status/allocatable")
                                .and_then(|a| a.get("nvidia.com/gpu"))
                                .and_then(quantity)
                        })
                        .sum(),
                );
            }
        }
        Ok(capacity)
    }

    async fn api_for(
        &self,
        key: &ObjectKey,
        api_version: &str,
    ) -> Result<(Api<DynamicObject>, String)> {
        let (client, cluster) = self.client(key.context.as_deref()).await?;
        let ar = api_resource(api_version, &key.kind);
        let api = match &key.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &ar),
            None => Api::all_with(client, &ar),
        };
        Ok((api, cluster))
    }

    /// Server-side applies `objects`: consecutive objects of one kind go
    /// [`CONCURRENCY`] at a time, kinds one after another in the order given. `force`
    /// takes back fields another field manager changed.
    pub async fn apply_all(&self, objects: &[KubeObject], force: bool) -> Result<()> {
        let mut start = 0;
        while start < objects.len() {
            let kind = &objects[start].kind;
            let end = objects[start..]
                .iter()
                .position(|o| &o.kind != kind)
                .map_or(objects.len(), |n| start + n);
            let applies: Vec<_> = objects[start..end]
                .iter()
                .map(|o| self.apply_one(o, force))
                .collect();
            stream::iter(applies)
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
            start = end;
        }
        Ok(())
    }

    async fn apply_one(&self, object: &KubeObject, force: bool) -> Result<()> {
        let key = object.key();
        let (api, cluster) = self.api_for(&key, &object.api_version).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if force {
            params = params.force();
        }
        match api
            .patch(&object.name, &params, &Patch::Apply(&object.value))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict {
                what: format!("applying {key}"),
                cluster,
                message: s.message.clone(),
            }),
            Err(source) => Err(Error::Request {
                what: format!("applying {key}"),
                cluster,
                source,
            }),
        }
    }

    /// Deletes objects that still carry Cairn's labels (others are left alone) and
    /// waits until they are gone.
    pub async fn delete_all(&self, keys: &[ObjectKey]) -> Result<()> {
        for key in keys {
            let api_version = MANAGED_KINDS
                .iter()
                .find(|(v, k, _)| *k == key.kind && api_group(v) == key.group)
                .map_or_else(
                    || {
                        if key.group.is_empty() {
                            "v1".to_string()
                        } else {
                            format!("{}/v1", key.group)
                        }
                    },
                    |(v, _, _)| v.to_string(),
                );
            let (api, cluster) = self.api_for(key, &api_version).await?;
            let request = |source| Error::Request {
                what: format!("deleting {key}"),
                cluster: cluster.clone(),
                source,
            };
            let Some(live) = api.get_opt(&key.name).await.map_err(request)? else {
                continue;
            };
            let ours = live
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_MANAGED_BY))
                .is_some_and(|v| v == "cairn");
            if !ours {
                continue;
            }
            match api.delete(&key.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(request(e)),
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while api.get_opt(&key.name).await.map_err(request)?.is_some() {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: key.to_string(),
                        goal: "go away",
                        after: Duration::from_secs(120),
                        state: "a finalizer may hold it".into(),
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Waits for a Job's `Complete` (or `Failed`) condition.
    pub async fn wait_for_job(&self, key: &ObjectKey, timeout: Duration) -> Result<()> {
        let (api, cluster) = self.api_for(key, "batch/v1").await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = api.get(&key.name).await.map_err(|source| Error::Request {
                what: format!("reading {key}"),
                cluster: cluster.clone(),
                source,
            })?;
            let conditions = job
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let is = |t: &str| {
                conditions
                    .iter()
                    .find(|c| c["type"] == t && c["status"] == "True")
            };
            if is("Complete").is_some() {
                return Ok(());
            }
            if let Some(failed) = is("Failed") {
                return Err(Error::JobFailed {
                    what: key.to_string(),
                    reason: format!(
                        "{}: {}",
                        failed["reason"].as_str().unwrap_or("Failed"),
                        failed["message"].as_str().unwrap_or("")
                    ),
                });
            }
            if tokio::time::Instant::now() > deadline {
                let status = job.data.get("status").cloned().unwrap_or(Value::Null);
                return Err(Error::Timeout {
                    what: key.to_string(),
                    goal: "finish",
                    after: timeout,
                    state: format!(
                        "active pods: {}, failed: {}",
                        status["active"].as_u64().unwrap_or(0),
                        status["failed"].as_u64().unwrap_or(0)
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a Deployment has rolled out its generation with every replica
    /// available.
    pub async fn wait_for_deployment(&self, key: &ObjectKey, timeout: Duration) -> Result<()> {
        let (api, cluster) = self.api_for(key, "apps/v1").await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = api.get(&key.name).await.map_err(|source| Error::Request {
                what: format!("reading {key}"),
                cluster: cluster.clone(),
                source,
            })?;
            let generation = d.metadata.generation.unwrap_or(0);
            let status = d.data.get("status").cloned().unwrap_or(Value::Null);
            let wanted = d
                .data
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let observed = status["observedGeneration"].as_i64().unwrap_or(0);
            let available = status["availableReplicas"].as_u64().unwrap_or(0);
            let updated = status["updatedReplicas"].as_u64().unwrap_or(0);
            if observed >= generation && available >= wanted && updated >= wanted {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: key.to_string(),
                    goal: "become available",
                    after: timeout,
                    state: format!(
                        "{available} of {wanted} replicas available, {updated} up to date"
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait::async_trait]
impl KubeTarget for Clusters {
    async fn apply(&self, objects: &[KubeObject], force: bool) -> Result<(), BoxError> {
        Ok(self.apply_all(objects, force).await?)
    }

    async fn delete(&self, keys: &[ObjectKey]) -> Result<(), BoxError> {
        Ok(self.delete_all(keys).await?)
    }

    async fn wait_job(
        &self,
        key: &ObjectKey,
        timeout: Duration,
        _on_log: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), BoxError> {
        Ok(self.wait_for_job(key, timeout).await?)
    }

    async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<(), BoxError> {
        Ok(self.wait_for_deployment(key, timeout).await?)
    }
}

fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// A whole-number quantity (`"4"`, `4`, `"4000m"`).
fn quantity(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<u64>().ok().map(|m| m / 1000),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

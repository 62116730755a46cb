//! A strict, in-memory Kubernetes API server for tests: the real HTTP API on a free
//! loopback port, served by axum on a thread of its own, so that the real `kube::Client`
//! (built from a kubeconfig, as a user's would be) talks to it unchanged.
//!
//! It is generic: every kind it serves is one row of a table ([`ResourceType`]: group,
//! version, kind, plural, scope, whether it has a `status` subresource, its name rule).
//! [`builtin_resources`] serves core v1 (namespaces, services, serviceaccounts,
//! resourcequotas, limitranges, pods, nodes, configmaps, secrets), apps/v1 deployments,
//! batch/v1 jobs and gateway.networking.k8s.io/v1 httproutes; [`KubeServer::register`]
//! adds any other, as installing a CRD would.
//!
//! # What it implements
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>`,
//!   `/apis/<group>/<version>`, and aggregated discovery (v2) on `/api` and `/apis` when the
//!   client asks for it.
//! - Objects: get; list (`labelSelector` with `=`, `==`, `!=`, `in`, `notin`, exists, `!`;
//!   `fieldSelector` on `metadata.name` and `metadata.namespace`; `limit` and `continue`);
//!   create (`generateName` too; 409 `AlreadyExists`; the namespace must exist); replace
//!   (`metadata.resourceVersion` required and must match, else 409 `Conflict`); delete (with
//!   `propagationPolicy`, `preconditions`, finalizers, and owner-reference cascade);
//!   delete-collection; patch as `application/merge-patch+json`,
//!   `application/strategic-merge-patch+json` (as a merge patch: see below) and
//!   `application/apply-patch+yaml`; `dryRun=All` on every write.
//! - Server-side apply: `fieldManager` required; `metadata.managedFields` kept per manager,
//!   operation and subresource in the real `FieldsV1` form, at leaf granularity for maps
//!   (lists are atomic); a field owned by another manager with a different value is a 409
//!   `Conflict` (with a `FieldManagerConflict` cause per field) unless `force=true`, which
//!   moves the field to the applier; fields an applier stops applying are removed unless
//!   another manager owns them; updates (create, replace, merge patch) take ownership of the
//!   fields they change. A write that changes nothing is not written: no new
//!   `resourceVersion`, no watch event.
//! - Metadata: one global `resourceVersion` counter; `uid`, `creationTimestamp`;
//!   `generation` starts at 1 and is bumped when anything but `metadata` and `status`
//!   changes. Namespaces get the `kubernetes.io/metadata.name` label and phase `Active`.
//! - The real server's defaults and validation for the workload kinds, limited to what
//!   clients most often get wrong: Deployments (replicas, strategy, history and deadline
//!   defaults; a selector that matches the template; the selector is immutable), Jobs (the
//!   generated `controller-uid` selector and labels, `backoffLimit` and the like; restart
//!   policy `Never` or `OnFailure`; template, selector and completions immutable), Pods
//!   (only images may change), pod templates (containers named, unique, with an image;
//!   ports; resource quantities that parse, requests within limits, whole extended
//!   resources such as `nvidia.com/gpu` with requests equal to limits; pull policy,
//!   DNS policy and the like defaulted) and Services (a cluster IP, kept and immutable;
//!   ports required, named when several; protocol and target port defaulted). Defaults
//!   are owned by an updater that sent the object, never by an applier, as on a real
//!   server.
//! - The `status` subresource (get, replace, merge patch, apply): writes to the object
//!   ignore `status`, writes to `/status` change nothing else, creates drop `status`.
//! - Watch (`?watch=true`): `ADDED`/`MODIFIED`/`DELETED` JSON lines after a
//!   `resourceVersion` (synthetic `ADDED` for what exists when it is unset or `0`;
//!   `sendInitialEvents` with its closing `BOOKMARK`), filtered by the selectors (an object
//!   that stops matching is `DELETED`, one that starts is `ADDED`), ended after
//!   `timeoutSeconds`.
//! - `Accept: ...;as=PartialObjectMetadata[List]` (kube's `get_metadata`, `list_metadata`).
//! - Bearer-token authentication (401 without the kubeconfig's token).
//! - `pods/<name>/log` (not followed): the lines a test wrote with
//!   [`KubeServer::pod_log`], with `container`, `timestamps`, `sinceTime` and
//!   `tailLines`.
//!
//! # Test controls beyond the API
//! - [`KubeServer::interleave`]: another client's merge patch lands just before the next
//!   matching request, to test how a client handles objects changing under it.
//! - [`KubeServer::forbid`]: every request on a resource is a 403 `Forbidden`, as RBAC
//!   would answer a role without it.
//! - [`KubeServer::max_in_flight`]: the most requests the server was handling at once.
//! - [`KubeServer::pod_address`]: where a pod's port answers, for the pod proxy
//!   (`pods/<pod>:<port>/proxy/<path>`, GET only), as its IP would.
//!
//! # Strictness
//! When unsure it refuses, with the `Status` object and code the real server would give:
//! an unknown group, version, resource or subresource is a 404 `NotFound`; so is a
//! namespaced resource addressed without a namespace, or a create in a namespace that does
//! not exist; a body without `apiVersion`/`kind`, or with others than the URL's, is a 400;
//! a missing name, a name that is not a DNS-1123 subdomain or label (DNS-1035 for
//! services), or an invalid label or annotation key or label value is a 422 `Invalid`; a
//! create with a `resourceVersion` is refused. Query parameters it does not know are a 400
//! (the real server would ignore some of them: this server would rather say it does not
//! do what was asked). A strategic merge patch that holds a list of objects or a `$`
//! directive is refused (415), because merging lists by key is exactly what this server does
//! not do; so is one on a custom resource, as the real server refuses it.
//!
//! # What it deliberately does not do
//! - No schemas: other kinds (custom resources included) are stored as sent; nothing
//!   prunes unknown fields (`fieldValidation` is accepted and ignored); no associative
//!   lists: every list is atomic for server-side apply and for patches (the real server
//!   merges, e.g., `containers` by `name`). Apply bodies must be JSON (YAML is refused).
//!   No node ports or load balancers are allocated.
//! - No controllers: nothing runs pods, jobs or deployments. Tests drive status with the
//!   controls ([`KubeServer::set_status`], [`KubeServer::job_succeeded`],
//!   [`KubeServer::deployment_available`]). Deletion is immediate (namespaces too, with
//!   their contents) unless finalizers hold it; foreground and background propagation both
//!   delete dependents at once; `gracePeriodSeconds` is ignored.
//! - No JSON patch (`application/json-patch+json`: 415), no `/scale`, `/exec` or other
//!   subresources besides `status`, pods' `log` and pods' `proxy` (GET), no tables, protobuf, RBAC, admission, or old `/watch/` paths.
//! - A list is always the latest state: `resourceVersionMatch=Exact` on an older version
//!   is a 410, and `continue` tokens page through the current objects, not a snapshot.
//!
//! # Use
//! The server lives on its own thread and runtime, so it outlives any test runtime and
//! serves synchronous tests (a `cairn` child process) as well; dropping it stops it.
//!
//! ```ignore
//! let server = KubeServer::start();
//! let client = server.client().await; // read from its kubeconfig, as a user's would be
//! // or: server.write_kubeconfig(&path, "ml-prod"), then KUBECONFIG=path for the binary
//! let jobs: Api<Job> = Api::default_namespaced(client);
//! // ... the code under test applies job "train" ...
//! server.job_succeeded("default", "train"); // as the job controller would
//! assert_eq!(server.count(Verb::Patch), 1);
//! let everything = server.objects();
//! ```
//!
//! Include with `#[path = "../support/kube_server.rs"] mod kube_server;`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// The kubeconfig context (and cluster and user) name the server writes.
pub const CONTEXT: &str = "cairn-test";

/// The Kubernetes version `/version` reports.
pub const VERSION: (&str, &str) = ("1", "35");

/// The namespaces that exist when the server starts.
pub const INITIAL_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The manager the status controls write as.
pub const CONTROLLER: &str = "kube-controller-manager";

/// How a kind's names are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, at most 253.
    Subdomain,
    /// A DNS-1123 label: lower-case alphanumerics and `-`, at most 63.
    Label,
    /// A DNS-1035 label: a DNS-1123 label that starts with a letter (services).
    Label1035,
}

/// One kind the server serves: a row of its table.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource name in URLs, e.g. `deployments`.
    pub plural: String,
    pub namespaced: bool,
    /// Whether it has a `status` subresource.
    pub status: bool,
    pub names: NameRule,
    /// Served from a CRD: list items carry `apiVersion`/`kind`, strategic merge patch is
    /// refused.
    pub custom: bool,
    /// A delete answers with the object rather than a `Status`.
    pub delete_returns_object: bool,
    /// A delete without a propagation policy orphans dependents (batch/v1 jobs).
    pub orphan_by_default: bool,
}

impl ResourceType {
    /// A kind with a status subresource, DNS-1123 subdomain names, built in.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
            status: true,
            names: NameRule::Subdomain,
            custom: false,
            delete_returns_object: false,
            orphan_by_default: false,
        }
    }

    /// A custom resource (as a CRD would serve it).
    pub fn custom(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            custom: true,
            delete_returns_object: true,
            ..ResourceType::new(group, version, kind, plural, namespaced)
        }
    }

    pub fn without_status(mut self) -> Self {
        self.status = false;
        self
    }

    pub fn names(mut self, rule: NameRule) -> Self {
        self.names = rule;
        self
    }

    fn returns_deleted(mut self) -> Self {
        self.delete_returns_object = true;
        self
    }

    fn orphans(mut self) -> Self {
        self.orphan_by_default = true;
        self
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as the server's messages name it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `Deployment.apps`, as `Invalid` messages name it.
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// The kinds the server serves unless told otherwise.
pub fn builtin_resources() -> Vec<ResourceType> {
    use NameRule::*;
    type R = ResourceType;
    vec![
        // group, version, kind, plural, namespaced
        R::new("", "v1", "Namespace", "namespaces", false)
            .names(Label)
            .returns_deleted(),
        R::new("", "v1", "Service", "services", true).names(Label1035),
        R::new("", "v1", "ServiceAccount", "serviceaccounts", true)
            .without_status()
            .returns_deleted(),
        R::new("", "v1", "ResourceQuota", "resourcequotas", true),
        R::new("", "v1", "LimitRange", "limitranges", true).without_status(),
        R::new("", "v1", "Pod", "pods", true).returns_deleted(),
        R::new("", "v1", "Node", "nodes", false),
        R::new("", "v1", "ConfigMap", "configmaps", true).without_status(),
        R::new("", "v1", "Secret", "secrets", true).without_status(),
        R::new("apps", "v1", "Deployment", "deployments", true),
        R::new("batch", "v1", "Job", "jobs", true)
            .names(Label)
            .orphans(),
        R::custom(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
            true,
        ),
    ]
}

/// What a request did, in the API server's own verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// A request outside the resources: `/version`, `/api`, `/apis`, ...
    Discovery,
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    /// Whether it can change objects.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub verb: Verb,
    pub method: String,
    /// The path, e.g. `/apis/apps/v1/namespaces/default/deployments/web`.
    pub path: String,
    /// The raw query string.
    pub query: String,
    pub content_type: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    /// The answer's status code.
    pub status: u16,
}

/// The server. Dropping it stops it.
pub struct KubeServer {
    shared: Arc<Shared>,
    port: u16,
    /// Holds the kubeconfig.
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeServer {
    /// Starts a server for [`builtin_resources`] with the [`INITIAL_NAMESPACES`].
    pub fn start() -> KubeServer {
        KubeServer::with_resources(builtin_resources())
    }

    /// Starts a server for these kinds (which must include core v1 namespaces).
    pub fn with_resources(resources: Vec<ResourceType>) -> KubeServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("non-blocking socket");
        let port = listener.local_addr().expect("local address").port();
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                resources: Vec::new(),
                rv: 0,
                objects: BTreeMap::new(),
                events: Vec::new(),
                requests: Vec::new(),
                next_ip: 1,
                interleaves: Vec::new(),
                forbidden: BTreeSet::new(),
                pod_logs: BTreeMap::new(),
                pod_addresses: BTreeMap::new(),
            }),
            changed,
            token: format!("cairn-test-{}", uuid::Uuid::new_v4().simple()),
            port,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        for r in resources {
            register(&mut shared.lock(), r);
        }
        let ns = shared
            .lock()
            .find_kind("v1", "Namespace")
            .expect("the server serves namespaces");
        for name in INITIAL_NAMESPACES {
            let object =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            shared
                .create(ns, None, object, &Writer::test(CONTROLLER))
                .expect("initial namespace");
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app_state = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(serve).with_state(app_state);
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    served = axum::serve(listener, app).into_future() => served.expect("the server serves"),
                    _ = stopped => {}
                }
            });
            // Drops every connection, watches included.
            runtime.shutdown_background();
        });
        let server = KubeServer {
            shared,
            port,
            dir: tempfile::tempdir().expect("temporary folder"),
            stop: Some(stop),
            thread: Some(thread),
        };
        server.write_kubeconfig(&server.kubeconfig_path(), CONTEXT);
        server
    }

    /// Serves another kind from now on, as installing a CRD would.
    pub fn register(&self, resource: ResourceType) {
        register(&mut self.shared.lock(), resource);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig file written at start: one cluster, user and context, all named
    /// [`CONTEXT`], current, with namespace `default`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A kubeconfig whose one context, `context` (current), reaches this server.
    pub fn kubeconfig(&self, context: &str) -> String {
        let q = |s: &str| Value::String(s.to_string()).to_string();
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: {context}\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: {context}\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n    namespace: default\n\
             current-context: {context}\n\
             preferences: {{}}\n",
            context = q(context),
            url = q(&self.url()),
            token = q(self.token()),
        )
    }

    /// Writes [`KubeServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path, context: &str) {
        std::fs::write(path, self.kubeconfig(context)).expect("write the kubeconfig");
    }

    /// A client built from [`KubeServer::kubeconfig_path`] the way a user's is: read the
    /// file, pick the context. Call it inside a Tokio runtime.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig_path()).expect("kubeconfig");
        let options = kube::config::KubeConfigOptions {
            context: Some(CONTEXT.to_string()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("config from the kubeconfig");
        kube::Client::try_from(config).expect("client")
    }

    /// The stored object, if any.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.shared.lock();
        let res = state
            .find_kind(api_version, kind)
            .expect("a kind the server serves");
        state.objects.get(&Key::new(res, namespace, name)).cloned()
    }

    /// The stored object as a typed one, if any.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: k8s_openapi::Resource + serde::de::DeserializeOwned,
    {
        self.object(K::API_VERSION, K::KIND, namespace, name)
            .map(|v| serde_json::from_value(v).expect("a stored object of its kind"))
    }

    /// Every stored object, each with `apiVersion` and `kind`, by kind, namespace, name.
    pub fn objects(&self) -> Vec<Value> {
        self.shared.lock().objects.values().cloned().collect()
    }

    /// The stored objects of `kind` written after resourceVersion `since` (0: all of
    /// them): cheaper than [`KubeServer::objects`] for a loop that polls.
    pub fn changed_since(&self, kind: &str, since: u64) -> Vec<Value> {
        self.shared
            .lock()
            .objects
            .values()
            .filter(|o| o["kind"] == kind)
            .filter(|o| {
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v > since)
            })
            .cloned()
            .collect()
    }

    /// Stores an object as another client (`manager`) would create it; returns it.
    pub fn create(&self, object: Value, manager: &str) -> Value {
        let api_version = object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_string();
        let kind = object["kind"].as_str().expect("kind").to_string();
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        let res = self
            .shared
            .lock()
            .find_kind(&api_version, &kind)
            .expect("a kind the server serves");
        self.shared
            .create(res, namespace.as_deref(), object, &Writer::test(manager))
            .unwrap_or_else(|e| panic!("create: {}", e.message))
    }

    /// Replaces an object's `status` as a controller would (an update of the `status`
    /// subresource by [`CONTROLLER`]); returns the object.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Value {
        let res = self
            .shared
            .lock()
            .find_kind(api_version, kind)
            .expect("a kind the server serves");
        let target = Target::Object {
            res,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            status: true,
        };
        self.shared
            .update_with(&target, &Writer::test(CONTROLLER), |old| {
                let mut new = old.clone();
                new["status"] = status;
                Ok(new)
            })
            .unwrap_or_else(|e| panic!("set status: {}", e.message))
    }

    /// Marks a Job complete as the job controller does: one pod succeeded.
    pub fn job_succeeded(&self, namespace: &str, name: &str) -> Value {
        let now = now();
        self.set_status(
            "batch/v1",
            "Job",
            Some(namespace),
            name,
            json!({
                "startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
                "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                ],
            }),
        )
    }

    /// Marks a Job failed as the job controller does when its pods run out of retries.
    pub fn job_failed(&self, namespace: &str, name: &str) -> Value {
        let now = now();
        let failed = self
            .object("batch/v1", "Job", Some(namespace), name)
            .and_then(|j| j["spec"]["backoffLimit"].as_u64())
            .unwrap_or(6)
            + 1;
        self.set_status(
            "batch/v1",
            "Job",
            Some(namespace),
            name,
            json!({
                "startTime": now, "failed": failed, "active": 0, "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit",
                     "lastProbeTime": now, "lastTransitionTime": now},
                ],
            }),
        )
    }

    /// Marks a Deployment rolled out and available at its generation, every replica
    /// (`spec.replicas`, 1 when unset) ready, as the deployment controller does.
    pub fn deployment_available(&self, namespace: &str, name: &str) -> Value {
        let now = now();
        let deployment = self
            .object("apps/v1", "Deployment", Some(namespace), name)
            .unwrap_or_else(|| panic!("no deployment {namespace}/{name}"));
        let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
        self.set_status(
            "apps/v1",
            "Deployment",
            Some(namespace),
            name,
            json!({
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability.",
                     "lastUpdateTime": now, "lastTransitionTime": now},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                     "message": format!("ReplicaSet \"{name}\" has successfully progressed."),
                     "lastUpdateTime": now, "lastTransitionTime": now},
                ],
            }),
        )
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every request answered so far, one line each: `METHOD path[?query] status`, for
    /// asserting the exact calls a flow makes.
    pub fn request_log(&self) -> Vec<String> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|r| {
                let query = r.query.trim_start_matches('&');
                let sep = if query.is_empty() { "" } else { "?" };
                format!("{} {}{sep}{query} {}", r.method, r.path, r.status)
            })
            .collect()
    }

    /// How many requests of this verb were answered (whatever their status).
    pub fn count(&self, verb: Verb) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.verb == verb)
            .count()
    }

    /// How many requests could have changed objects.
    pub fn writes(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.verb.writes())
            .count()
    }

    /// Forgets the requests answered so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The current (last written) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Just before the next `method` request on `path` (e.g. `PATCH
    /// /apis/apps/v1/namespaces/ns/deployments/web`), `manager` merge-patches the object
    /// at `path` (an update, as `kubectl annotate` would): the request then sees an
    /// object changed since its client last read it. Once only.
    pub fn interleave(&self, method: &str, path: &str, manager: &str, patch: Value) {
        self.shared.lock().interleaves.push(Interleave {
            method: method.to_string(),
            path: path.to_string(),
            manager: manager.to_string(),
            patch,
        });
    }

    /// From now on, every request on `plural` of `group` (`""` for core) is a 403, as
    /// for a role without access to it.
    pub fn forbid(&self, group: &str, plural: &str) {
        self.shared
            .lock()
            .forbidden
            .insert((group.to_string(), plural.to_string()));
    }

    /// Appends a line to the log of `container` in pod `pod`, stamped now, as the
    /// kubelet would (the pod need not exist yet; its log is read through `pods/log`).
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        self.shared
            .lock()
            .pod_logs
            .entry((
                namespace.to_string(),
                pod.to_string(),
                container.to_string(),
            ))
            .or_default()
            .push((k8s_openapi::jiff::Timestamp::now(), line.to_string()));
    }

    /// Makes `port` of pod `pod` answer at `address` (`http://127.0.0.1:PORT`), as its
    /// IP would: the pod proxy (`pods/<pod>:<port>/proxy/<path>`) forwards there.
    pub fn pod_address(&self, namespace: &str, pod: &str, port: u16, address: &str) {
        self.shared.lock().pod_addresses.insert(
            (namespace.to_string(), pod.to_string(), port),
            address.to_string(),
        );
    }

    /// The most requests the server was handling at once (from the request's arrival
    /// to its answer; a watch counts until its answer starts).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts counting [`KubeServer::max_in_flight`] again.
    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn register(state: &mut State, resource: ResourceType) {
    assert!(
        !state.resources.iter().any(|r| r.group == resource.group
            && r.version == resource.version
            && (r.plural == resource.plural || r.kind == resource.kind)),
        "{}/{} is served already",
        resource.api_version(),
        resource.plural
    );
    state.resources.push(resource);
}

/// RFC 3339 to the second, as the API server writes times.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// State

struct Shared {
    state: Mutex<State>,
    /// The last resource version written; watches wait on it.
    changed: tokio::sync::watch::Sender<u64>,
    token: String,
    port: u16,
    /// Requests being handled now, and the most at once so far.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Another client's write that lands just before a request (see
/// [`KubeServer::interleave`]).
struct Interleave {
    method: String,
    path: String,
    manager: String,
    patch: Value,
}

struct State {
    resources: Vec<ResourceType>,
    /// The last resource version given out.
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change, in order (nothing is compacted).
    events: Vec<Event>,
    requests: Vec<RecordedRequest>,
    /// For service cluster IPs.
    next_ip: u32,
    interleaves: Vec<Interleave>,
    /// (group, plural) of the resources every request on is forbidden.
    forbidden: BTreeSet<(String, String)>,
    /// Log lines (RFC 3339 time, text) by namespace, pod and container.
    pod_logs: BTreeMap<(String, String, String), Vec<(k8s_openapi::jiff::Timestamp, String)>>,
    /// (namespace, pod, port) → the `http://host:port` the pod proxy forwards to.
    pod_addresses: BTreeMap<(String, String, u16), String>,
}

/// Where an object lives: its kind (an index into the table), namespace (`""` for
/// cluster-scoped kinds) and name. Ordered as lists are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    res: usize,
    namespace: String,
    name: String,
}

impl Key {
    fn new(res: usize, namespace: Option<&str>, name: &str) -> Key {
        Key {
            res,
            namespace: namespace.unwrap_or("").to_string(),
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

struct Event {
    rv: u64,
    kind: EventType,
    key: Key,
    /// The object after the change (before it, with the new version, for `DELETED`).
    object: Value,
    /// The object before a `MODIFIED` change, to tell when it enters or leaves a selector.
    old: Option<Value>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// A stored Pod, or the 404 the real server gives.
    fn pod(&self, namespace: &str, name: &str) -> ApiResult<&Value> {
        let res = self
            .find_kind("v1", "Pod")
            .ok_or_else(ApiError::no_resource)?;
        self.objects
            .get(&Key::new(res, Some(namespace), name))
            .ok_or_else(|| ApiError::not_found(&self.resources[res], name))
    }

    fn find_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.api_version() == api_version && r.kind == kind)
    }

    fn find_plural(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    }

    fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.find_kind("v1", "Namespace")
            .is_some_and(|ns| self.objects.contains_key(&Key::new(ns, None, namespace)))
    }

    /// Stores `object` (or removes the key when `None`) at a new resource version, and
    /// records the event. Returns the stored object (the last state, for a removal).
    fn commit(&mut self, key: &Key, object: Option<Value>) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let old = self.objects.remove(key);
        let (kind, mut stored) = match (object, &old) {
            (Some(o), None) => (EventType::Added, o),
            (Some(o), Some(_)) => (EventType::Modified, o),
            (None, Some(o)) => (EventType::Deleted, o.clone()),
            (None, None) => unreachable!("nothing to delete"),
        };
        stored["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        if kind != EventType::Deleted {
            self.objects.insert(key.clone(), stored.clone());
        }
        self.events.push(Event {
            rv,
            kind,
            key: key.clone(),
            object: stored.clone(),
            old: if kind == EventType::Modified {
                old
            } else {
                None
            },
        });
        stored
    }
}

// ---------------------------------------------------------------------------------------
// Errors: the `Status` objects the real server answers with.

#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// An unknown path, group, version, resource or subresource.
    fn no_resource() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .details(json!({}))
    }

    fn not_found(res: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .details(object_details(res, name))
    }

    fn namespace_not_found(namespace: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .details(json!({"name": namespace, "kind": "namespaces"}))
    }

    fn already_exists(res: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .details(object_details(res, name))
    }

    fn conflict(res: &ResourceType, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.qualified()
            ),
        )
        .details(object_details(res, name))
    }

    fn stale(res: &ResourceType, name: &str) -> ApiError {
        ApiError::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A 422 naming each invalid field: `(field, "Invalid value: ...")`.
    fn invalid(kind: &str, name: &str, causes: &[(String, String)]) -> ApiError {
        let each: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let joined = if each.len() == 1 {
            each[0].clone()
        } else {
            format!("[{}]", each.join(", "))
        };
        let (kind_name, group) = match kind.split_once('.') {
            Some((k, g)) => (k, g),
            None => (kind, ""),
        };
        let mut details = json!({
            "name": name, "kind": kind_name,
            "causes": causes.iter().map(|(f, m)| json!({
                "reason": if m.starts_with("Required") { "FieldValueRequired" } else { "FieldValueInvalid" },
                "message": m, "field": f,
            })).collect::<Vec<_>>(),
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {joined}"),
        )
        .details(details)
    }

    fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .details(json!({}))
    }

    fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }
}

fn object_details(res: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

fn status_object(code: u16, reason: &str, message: &str, details: Option<&Value>) -> Value {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        status["details"] = d.clone();
    }
    status
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.code,
            &status_object(self.code, self.reason, &self.message, self.details.as_ref()),
        )
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).expect("status code"),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------
// HTTP

/// What a path names.
#[derive(Debug, Clone)]
enum Target {
    /// A discovery document.
    Discovery(Discovery),
    /// A kind's objects: in one namespace, or all (`namespace: None`).
    Collection {
        res: usize,
        namespace: Option<String>,
    },
    /// One object, or its `status` subresource.
    Object {
        res: usize,
        namespace: Option<String>,
        name: String,
        status: bool,
    },
}

#[derive(Debug, Clone)]
enum Discovery {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    Resources(String, String),
}

impl Target {
    fn res(&self) -> Option<usize> {
        match self {
            Target::Discovery(_) => None,
            Target::Collection { res, .. } | Target::Object { res, .. } => Some(*res),
        }
    }
}

fn parse_path(state: &State, path: &str) -> ApiResult<Target> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Target::Discovery(Discovery::Version)),
        ["healthz" | "livez" | "readyz"] => return Ok(Target::Discovery(Discovery::Health)),
        ["api"] => return Ok(Target::Discovery(Discovery::CoreVersions)),
        ["apis"] => return Ok(Target::Discovery(Discovery::Groups)),
        ["apis", group] => {
            return if state.resources.iter().any(|r| r.group == *group) {
                Ok(Target::Discovery(Discovery::Group(group.to_string())))
            } else {
                Err(ApiError::no_resource())
            }
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_resource()),
    };
    if !state.serves_group_version(group, version) {
        return Err(ApiError::no_resource());
    }
    let find = |plural: &str| {
        state
            .find_plural(group, version, plural)
            .ok_or_else(ApiError::no_resource)
    };
    let namespaced = |res: usize| state.resources[res].namespaced;
    let object = |res: usize, ns: Option<&str>, name: &str, sub: Option<&str>| {
        if namespaced(res) != ns.is_some() {
            return Err(ApiError::no_resource());
        }
        let status = match sub {
            None => false,
            Some("status") if state.resources[res].status => true,
            Some(_) => return Err(ApiError::no_resource()),
        };
        Ok(Target::Object {
            res,
            namespace: ns.map(str::to_string),
            name: name.to_string(),
            status,
        })
    };
    let is_sub = |s: &str| matches!(s, "status" | "finalize");
    match rest {
        [] => Ok(Target::Discovery(Discovery::Resources(
            group.to_string(),
            version.to_string(),
        ))),
        // `/api/v1/namespaces/<name>/status` is the namespace's subresource.
        ["namespaces", ns, plural] if !(group.is_empty() && is_sub(plural)) => {
            let res = find(plural)?;
            if !namespaced(res) {
                return Err(ApiError::no_resource());
            }
            Ok(Target::Collection {
                res,
                namespace: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name] => object(find(plural)?, Some(ns), name, None),
        ["namespaces", ns, plural, name, sub] => object(find(plural)?, Some(ns), name, Some(sub)),
        [plural] => Ok(Target::Collection {
            res: find(plural)?,
            namespace: None,
        }),
        [plural, name] => object(find(plural)?, None, name, None),
        [plural, name, sub] => object(find(plural)?, None, name, Some(sub)),
        _ => Err(ApiError::no_resource()),
    }
}

/// The query parameters, each at most once.
struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(uri: &axum::http::Uri) -> ApiResult<Query> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?
            .0;
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::bad_request(format!(
                    "the query parameter \"{k}\" was given more than once"
                )));
            }
        }
        Ok(Query(map))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Refuses parameters outside `allowed` (see the module's doc).
    fn only(&self, verb: &str, allowed: &[&str]) -> ApiResult<()> {
        for key in self.0.keys() {
            if !allowed.contains(&key.as_str()) && key != "pretty" {
                return Err(ApiError::bad_request(format!(
                    "the test API server does not support the query parameter \"{key}\" on {verb}"
                )));
            }
        }
        Ok(())
    }

    fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value for {key}: \"{other}\", expected true or false"
            ))),
        }
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ))),
        }
    }

    fn field_validation(&self) -> ApiResult<()> {
        match self.get("fieldValidation") {
            None | Some("Ignore" | "Warn" | "Strict") => Ok(()),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }
}

const LIST_PARAMS: &[&str] = &[
    "labelSelector",
    "fieldSelector",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
];
const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_PARAMS: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "propagationPolicy",
    "orphanDependents",
];

/// The axum handler: every path.
async fn serve(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Handling is synchronous: without a yield, a request would be answered before the
    // next connection's is even seen, and the count would only show the worker threads.
    tokio::task::yield_now().await;
    let response = serve_counted(&shared, request).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn serve_counted(shared: &Arc<Shared>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let mut record = RecordedRequest {
        verb: Verb::Discovery,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_type,
        body: serde_json::from_slice(&body).ok(),
        status: 0,
    };
    run_interleave(shared, parts.method.as_str(), parts.uri.path());
    if let Some(response) = pod_proxy(shared, &parts, &mut record).await {
        record.status = response.status().as_u16();
        shared.lock().requests.push(record);
        return response;
    }
    let response = match route(shared, &parts, &body, &mut record) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    record.status = response.status().as_u16();
    shared.lock().requests.push(record);
    response
}

/// Runs the [`Interleave`] waiting for this request, if any.
fn run_interleave(shared: &Arc<Shared>, method: &str, path: &str) {
    let hook = {
        let mut state = shared.lock();
        let found = state
            .interleaves
            .iter()
            .position(|h| h.method == method && h.path == path);
        found.map(|i| state.interleaves.remove(i))
    };
    let Some(hook) = hook else { return };
    let target = parse_path(&shared.lock(), path);
    let result = target.and_then(|target| {
        shared.update_with(&target, &Writer::test(&hook.manager), |old| {
            let mut new = old.clone();
            merge_patch(&mut new, &hook.patch);
            Ok(new)
        })
    });
    if let Err(e) = result {
        panic!("the interleaved write on {path} failed: {}", e.message);
    }
}

/// The 403 RBAC would give a request on a resource [`KubeServer::forbid`] named.
fn forbidden(state: &State, path: &str, method: &Method) -> Option<ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural, name @ ..] => (Some(*ns), *plural, name.first().copied()),
        [plural, name @ ..] => (None, *plural, name.first().copied()),
        _ => return None,
    };
    if !state
        .forbidden
        .contains(&(group.to_string(), plural.to_string()))
    {
        return None;
    }
    let verb = match (method, name) {
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "get",
    };
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let resource = name.map(|n| format!(" \"{n}\"")).unwrap_or_default();
    Some(
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{plural}{resource} is forbidden: User \"cairn-test\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}"
            ),
        )
        .details(json!({"kind": plural})),
    )
}

/// `GET /api/v1/namespaces/<ns>/pods/<name>[:<port>]/proxy/<path>`: forwarded to the
/// address [`KubeServer::pod_address`] gave that pod's port, as the API server forwards
/// to the pod's IP. Strict like the real one: the pod must exist and be `Running`, and
/// only GET is forwarded (the tests need no more). `None` for any other path.
async fn pod_proxy(
    shared: &Arc<Shared>,
    parts: &axum::http::request::Parts,
    record: &mut RecordedRequest,
) -> Option<Response> {
    let path = parts.uri.path();
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once("/pods/")?;
    let (pod, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("proxy")?;
    if !(rest.is_empty() || rest.starts_with('/')) || namespace.contains('/') {
        return None;
    }
    record.verb = Verb::Get;
    let answer = async {
        if parts.method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        let (name, port) = match pod.split(':').collect::<Vec<_>>().as_slice() {
            [name] => (name.to_string(), None),
            [name, port] | ["http", name, port] => (name.to_string(), Some(port.to_string())),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid pod proxy target \"{pod}\""
                )))
            }
        };
        let address = {
            let state = shared.lock();
            let object = state.pod(namespace, &name)?;
            if object["status"]["phase"] != "Running" {
                return Err(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("pod {name} is not running"),
                ));
            }
            let port: u16 = match port {
                Some(p) => p.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid port \"{p}\" for pod {name}"))
                })?,
                None => 80,
            };
            state
                .pod_addresses
                .get(&(namespace.to_string(), name.clone(), port))
                .cloned()
                .ok_or_else(|| {
                    ApiError::new(
                        503,
                        "ServiceUnavailable",
                        format!("error trying to reach service: dial tcp {name}:{port}: connect: connection refused"),
                    )
                })?
        };
        let mut url = format!("{address}{rest}");
        if let Some(query) = parts.uri.query() {
            url = format!("{url}?{query}");
        }
        let answer = tokio::task::spawn_blocking(move || {
            let mut response = ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, text))
        })
        .await
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        let (status, text) = answer.map_err(|e| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("error trying to reach service: {e}"),
            )
        })?;
        Ok((
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/plain")],
            text,
        )
            .into_response())
    };
    Some(match answer.await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    })
}

/// `GET /api/v1/namespaces/<ns>/pods/<name>/log`: the lines [`KubeServer::pod_log`]
/// wrote. `None` for any other path.
fn pod_log_route(
    shared: &Arc<Shared>,
    parts: &axum::http::request::Parts,
    record: &mut RecordedRequest,
) -> ApiResult<Option<Response>> {
    let segments: Vec<&str> = parts.uri.path().split('/').skip(1).collect();
    let ["api", "v1", "namespaces", namespace, "pods", pod, "log"] = segments.as_slice() else {
        return Ok(None);
    };
    record.verb = Verb::Get;
    if parts.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let query = Query::parse(&parts.uri)?;
    query.only(
        "pods/log",
        &["container", "timestamps", "sinceTime", "tailLines"],
    )?;
    let state = shared.lock();
    let object = state.pod(namespace, pod)?;
    let names = |key: &str| -> Vec<String> {
        object["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    let container = match query.get("container") {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {pod}"
            )))
        }
        None if containers.len() == 1 && init.is_empty() => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}] or one of the init containers: [{}]",
                containers.join(" "),
                init.join(" ")
            )))
        }
    };
    let since = match query.get("sinceTime") {
        None => None,
        Some(t) => Some(t.parse::<k8s_openapi::jiff::Timestamp>().map_err(|_| {
            ApiError::bad_request(format!("sinceTime: invalid RFC 3339 time \"{t}\""))
        })?),
    };
    let timestamps = query.flag("timestamps")?;
    let lines: Vec<&(k8s_openapi::jiff::Timestamp, String)> = state
        .pod_logs
        .get(&(namespace.to_string(), pod.to_string(), container))
        .into_iter()
        .flatten()
        .filter(|(t, _)| since.is_none_or(|s| *t >= s))
        .collect();
    let skip = match query.get("tailLines") {
        None => 0,
        Some(n) => {
            let n: usize = n
                .parse()
                .map_err(|_| ApiError::bad_request(format!("tailLines: invalid value \"{n}\"")))?;
            lines.len().saturating_sub(n)
        }
    };
    let mut text = String::new();
    for (t, line) in lines.into_iter().skip(skip) {
        if timestamps {
            text.push_str(&format!("{t:.9} "));
        }
        text.push_str(line);
        text.push('\n');
    }
    Ok(Some(
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response(),
    ))
}

fn route(
    shared: &Arc<Shared>,
    parts: &axum::http::request::Parts,
    body: &[u8],
    record: &mut RecordedRequest,
) -> ApiResult<Response> {
    let path = parts.uri.path();
    let open = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz");
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token));
    if !open && !authorized {
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    if let Some(forbidden) = forbidden(&shared.lock(), path, &parts.method) {
        return Err(forbidden);
    }
    if let Some(response) = pod_log_route(shared, parts, record)? {
        return Ok(response);
    }
    let target = parse_path(&shared.lock(), path)?;
    let query = Query::parse(&parts.uri)?;
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let method = &parts.method;
    record.verb = match (&target, method) {
        (Target::Discovery(_), _) => Verb::Discovery,
        (Target::Collection { .. }, &Method::GET) if query.flag("watch")? => Verb::Watch,
        (Target::Collection { .. }, &Method::GET) => Verb::List,
        (Target::Collection { .. }, &Method::POST) => Verb::Create,
        (Target::Collection { .. }, &Method::DELETE) => Verb::DeleteCollection,
        (Target::Object { .. }, &Method::GET) => Verb::Get,
        (Target::Object { .. }, &Method::PUT) => Verb::Update,
        (Target::Object { .. }, &Method::PATCH) => Verb::Patch,
        (Target::Object { .. }, &Method::DELETE) => Verb::Delete,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    if accept.contains("as=Table")
        || accept.starts_with("application/vnd.kubernetes.protobuf") && !accept.contains("json")
    {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            format!("the test API server only answers JSON, not {accept}"),
        ));
    }
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let writer = |query: &Query| -> ApiResult<Writer> {
        let manager = match query.get("fieldManager") {
            Some(m) if m.is_empty() || m.len() > 128 => {
                return Err(ApiError::invalid(
                    "CreateOptions.meta.k8s.io",
                    "",
                    &[(
                        "fieldManager".into(),
                        format!("Invalid value: \"{m}\": must be 1 to 128 printable characters"),
                    )],
                ))
            }
            Some(m) => m.to_string(),
            // As the real server: the user agent up to its first `/`, else `unknown`
            // (kube-rs sends no user agent).
            None => match user_agent.split('/').next().unwrap_or("") {
                "" => "unknown".to_string(),
                prefix => prefix.to_string(),
            },
        };
        Ok(Writer {
            manager,
            dry_run: query.dry_run()?,
        })
    };
    match (record.verb, &target) {
        (Verb::Discovery, Target::Discovery(d)) => {
            if *method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            Ok(discovery(shared, d, &accept))
        }
        (
            Verb::Get,
            Target::Object {
                res,
                namespace,
                name,
                ..
            },
        ) => {
            query.only("get", &["resourceVersion"])?;
            let state = shared.lock();
            let object = state
                .objects
                .get(&Key::new(*res, namespace.as_deref(), name))
                .ok_or_else(|| ApiError::not_found(&state.resources[*res], name))?;
            let body = if metadata_only {
                partial_metadata(object)
            } else {
                object.clone()
            };
            Ok(json_response(200, &body))
        }
        (Verb::List, Target::Collection { res, namespace }) => {
            query.only("list", LIST_PARAMS)?;
            let list = shared.list(*res, namespace.as_deref(), &query)?;
            Ok(json_response(
                200,
                &if metadata_only {
                    partial_list(&list)
                } else {
                    list
                },
            ))
        }
        (Verb::Watch, Target::Collection { res, namespace }) => {
            query.only("watch", LIST_PARAMS)?;
            watch(shared, *res, namespace.clone(), &query, metadata_only)
        }
        (Verb::Create, Target::Collection { res, namespace }) => {
            query.only("create", WRITE_PARAMS)?;
            query.field_validation()?;
            if namespace.is_none() && shared.lock().resources[*res].namespaced {
                return Err(ApiError::method_not_allowed());
            }
            let object = parse_body(body)?;
            let created = shared.create(*res, namespace.as_deref(), object, &writer(&query)?)?;
            Ok(json_response(201, &created))
        }
        (Verb::Update, Target::Object { .. }) => {
            query.only("update", WRITE_PARAMS)?;
            query.field_validation()?;
            let object = parse_body(body)?;
            let updated = shared.replace(&target, object, &writer(&query)?)?;
            Ok(json_response(200, &updated))
        }
        (Verb::Patch, Target::Object { .. }) => {
            query.only("patch", PATCH_PARAMS)?;
            query.field_validation()?;
            let content_type = record.content_type.clone().unwrap_or_default();
            let force = query.flag("force")?;
            let patch = parse_body(body)?;
            let kind = content_type.split(';').next().unwrap_or("").trim();
            if kind == "application/apply-patch+yaml" {
                let manager = match query.get("fieldManager") {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => {
                        return Err(ApiError::invalid(
                            "PatchOptions.meta.k8s.io",
                            "",
                            &[(
                                "fieldManager".into(),
                                "Required value: is required for apply patch".into(),
                            )],
                        ))
                    }
                };
                let writer = Writer {
                    manager,
                    dry_run: query.dry_run()?,
                };
                let (object, created) = shared.apply(&target, patch, force, &writer)?;
                return Ok(json_response(if created { 201 } else { 200 }, &object));
            }
            if force {
                return Err(ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    &[(
                        "force".into(),
                        "Forbidden: may not be specified for non-apply patch".into(),
                    )],
                ));
            }
            let res = target.res().expect("an object");
            match kind {
                "application/merge-patch+json" => {}
                "application/strategic-merge-patch+json" => {
                    if shared.lock().resources[res].custom {
                        return Err(ApiError::unsupported_media(format!(
                            "the body of the request was in an unknown format - accepted media types include: \
                             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                        )));
                    }
                    if let Some(why) = beyond_merge_patch(&patch) {
                        return Err(ApiError::unsupported_media(format!(
                            "the test API server treats a strategic merge patch as a merge patch, and this one {why}"
                        )));
                    }
                }
                "application/json-patch+json" => {
                    return Err(ApiError::unsupported_media(
                        "the test API server does not implement JSON patch (application/json-patch+json)",
                    ))
                }
                other => {
                    return Err(ApiError::unsupported_media(format!(
                        "the body of the request was in an unknown format ({other}) - accepted media types include: \
                         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
                         application/strategic-merge-patch+json"
                    )))
                }
            }
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let writer = writer(&query)?;
            let updated = shared.update_with(&target, &writer, |old| {
                let mut new = old.clone();
                merge_patch(&mut new, &patch);
                Ok(new)
            })?;
            Ok(json_response(200, &updated))
        }
        (
            Verb::Delete,
            Target::Object {
                res,
                namespace,
                name,
                status,
            },
        ) => {
            if *status {
                return Err(ApiError::method_not_allowed());
            }
            query.only("delete", DELETE_PARAMS)?;
            let options = DeleteOptions::parse(&query, body)?;
            let key = Key::new(*res, namespace.as_deref(), name);
            let (object, gone) = shared.delete(&key, &options)?;
            let state = shared.lock();
            let resource = &state.resources[*res];
            let mut response = if !gone || resource.delete_returns_object {
                json_response(if gone { 200 } else { 202 }, &object)
            } else {
                let mut details = object_details(resource, name);
                details["uid"] = object["metadata"]["uid"].clone();
                json_response(
                    200,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": details,
                    }),
                )
            };
            if options.propagation.is_none() && resource.orphan_by_default && !options.dry_run {
                response.headers_mut().insert(
                    "Warning",
                    "299 - \"child pods are preserved by default when jobs are deleted; set \
                     propagationPolicy=Background to remove them or set propagationPolicy=Orphan \
                     to suppress this warning\""
                        .parse()
                        .expect("header"),
                );
            }
            Ok(response)
        }
        (Verb::DeleteCollection, Target::Collection { res, namespace }) => {
            let mut allowed = DELETE_PARAMS.to_vec();
            allowed.extend([
                "labelSelector",
                "fieldSelector",
                "limit",
                "continue",
                "resourceVersion",
                "resourceVersionMatch",
                "timeoutSeconds",
            ]);
            query.only("deletecollection", &allowed)?;
            if namespace.is_none() && shared.lock().resources[*res].namespaced {
                return Err(ApiError::method_not_allowed());
            }
            let options = DeleteOptions::parse(&query, body)?;
            let mut list = shared.list(*res, namespace.as_deref(), &query)?;
            let mut deleted = Vec::new();
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                let key = Key::new(*res, namespace.as_deref(), name);
                if let Ok((object, _)) = shared.delete(&key, &options) {
                    deleted.push(object);
                }
            }
            list["items"] = Value::Array(deleted);
            list["metadata"] = json!({"resourceVersion": shared.lock().rv.to_string()});
            Ok(json_response(200, &list))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request has no body"));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the test API server reads JSON bodies only (YAML is not supported): {e}"
        ))
    })
}

/// Why a strategic merge patch would not mean the same as a merge patch, if it would not:
/// it holds a `$` directive or a list of objects (which a strategic merge patch may merge
/// by key).
fn beyond_merge_patch(patch: &Value) -> Option<String> {
    match patch {
        Value::Object(map) => {
            for (k, v) in map {
                if k.starts_with('$') {
                    return Some(format!("holds the directive \"{k}\""));
                }
                if let Some(why) = beyond_merge_patch(v) {
                    return Some(why);
                }
            }
            None
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            Some("holds a list of objects, which it may merge by key".to_string())
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Discovery

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn discovery(shared: &Shared, what: &Discovery, accept: &str) -> Response {
    let state = shared.lock();
    let aggregated =
        accept.contains("as=APIGroupDiscoveryList") && accept.contains("g=apidiscovery.k8s.io");
    let groups = || {
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in state.resources.iter().filter(|r| !r.group.is_empty()) {
            if !seen.contains(&(r.group.clone(), r.version.clone())) {
                seen.push((r.group.clone(), r.version.clone()));
            }
        }
        seen
    };
    let group_json = |group: &str| {
        let versions: Vec<Value> = groups()
            .into_iter()
            .filter(|(g, _)| g == group)
            .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
            .collect();
        json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
    };
    match what {
        Discovery::Version => json_response(
            200,
            &json!({
                "major": VERSION.0, "minor": VERSION.1,
                "gitVersion": format!("v{}.{}.0", VERSION.0, VERSION.1),
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
                "platform": "linux/amd64",
            }),
        ),
        Discovery::Health => (StatusCode::OK, "ok").into_response(),
        Discovery::CoreVersions if aggregated => {
            aggregated_response(&state, &[(String::new(), "v1".to_string())])
        }
        Discovery::CoreVersions => json_response(
            200,
            &json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", shared.port)}],
            }),
        ),
        Discovery::Groups if aggregated => aggregated_response(&state, &groups()),
        Discovery::Groups => {
            let mut names: Vec<String> = Vec::new();
            for (g, _) in groups() {
                if !names.contains(&g) {
                    names.push(g);
                }
            }
            let list: Vec<Value> = names.iter().map(|g| group_json(g)).collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
            )
        }
        Discovery::Group(group) => {
            let mut g = group_json(group);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            json_response(200, &g)
        }
        Discovery::Resources(group, version) => {
            let mut resources = Vec::new();
            for r in state
                .resources
                .iter()
                .filter(|r| &r.group == group && &r.version == version)
            {
                resources.push(json!({
                    "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": VERBS,
                }));
                if r.status {
                    resources.push(json!({
                        "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            let group_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            json_response(
                200,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
            )
        }
    }
}

/// Aggregated discovery (apidiscovery.k8s.io/v2) for these group versions.
fn aggregated_response(state: &State, group_versions: &[(String, String)]) -> Response {
    let mut items: Vec<Value> = Vec::new();
    for (group, version) in group_versions {
        let resources: Vec<Value> = state
            .resources
            .iter()
            .filter(|r| &r.group == group && &r.version == version)
            .map(|r| {
                let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
                let mut d = json!({
                    "resource": r.plural, "responseKind": gvk,
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.kind.to_lowercase(), "verbs": VERBS,
                });
                if r.status {
                    d["subresources"] = json!([{"subresource": "status", "responseKind": gvk, "verbs": ["get", "patch", "update"]}]);
                }
                d
            })
            .collect();
        let version_json =
            json!({"version": version, "resources": resources, "freshness": "Current"});
        match items
            .iter_mut()
            .find(|i| i["metadata"]["name"] == json!(group))
        {
            Some(item) => item["versions"]
                .as_array_mut()
                .expect("versions")
                .push(version_json),
            None => items.push(json!({"metadata": {"name": group}, "versions": [version_json]})),
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")],
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
            .to_string(),
    )
        .into_response()
}

fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

fn partial_list(list: &Value) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(partial_metadata)
        .collect();
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list["metadata"], "items": items})
}

// ---------------------------------------------------------------------------------------
// Reads

impl Shared {
    /// A `<Kind>List` of the matching objects (one page of it, with `limit`).
    fn list(&self, res: usize, namespace: Option<&str>, query: &Query) -> ApiResult<Value> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let state = self.lock();
        match (query.get("resourceVersionMatch"), query.get("resourceVersion")) {
            (None, _) => {}
            (Some(_), None | Some("")) => {
                return Err(ApiError::invalid(
                    "ListOptions.meta.k8s.io",
                    "",
                    &[("resourceVersionMatch".into(), "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into())],
                ))
            }
            (Some("NotOlderThan"), Some(_)) => {}
            (Some("Exact"), Some(rv)) if rv == state.rv.to_string() => {}
            (Some("Exact"), Some(rv)) => {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    format!("the test API server only lists the latest state ({}), not resourceVersion {rv}", state.rv),
                ))
            }
            (Some(other), Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        }
        let limit = match query.get("limit") {
            None => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
            )
            .filter(|l| *l > 0),
        };
        let after: Option<Key> = match query.get("continue") {
            None | Some("") => None,
            Some(token) => Some(decode_continue(res, token)?),
        };
        let resource = &state.resources[res];
        let mut items = Vec::new();
        let mut more = None;
        for (key, object) in state.objects.iter() {
            if key.res != res
                || namespace.is_some_and(|ns| ns != key.namespace)
                || after.as_ref().is_some_and(|a| key <= a)
                || !labels.matches(object)
                || !fields.matches(object)
            {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                more = Some(items.len());
                break;
            }
            let mut item = object.clone();
            if !resource.custom {
                // Items of built-in kinds carry no apiVersion/kind, as the real server sends them.
                let map = item.as_object_mut().expect("an object");
                map.remove("apiVersion");
                map.remove("kind");
            }
            items.push(item);
        }
        let mut metadata = json!({"resourceVersion": state.rv.to_string()});
        if more.is_some() {
            let last = items.last().expect("a full page");
            let key = Key::new(
                res,
                last["metadata"]["namespace"].as_str(),
                last["metadata"]["name"].as_str().unwrap_or(""),
            );
            metadata["continue"] = json!(encode_continue(&key));
        }
        Ok(json!({
            "kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
            "metadata": metadata, "items": items,
        }))
    }
}

fn encode_continue(key: &Key) -> String {
    hex::encode(format!("{}\n{}", key.namespace, key.name))
}

fn decode_continue(res: usize, token: &str) -> ApiResult<Key> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let text = String::from_utf8(hex::decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (namespace, name) = text.split_once('\n').ok_or_else(bad)?;
    Ok(Key {
        res,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// A watch: the events after the asked version as JSON lines, until `timeoutSeconds`.
fn watch(
    shared: &Arc<Shared>,
    res: usize,
    namespace: Option<String>,
    query: &Query,
    metadata_only: bool,
) -> ApiResult<Response> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let timeout = match query.get("timeoutSeconds") {
        None => Duration::from_secs(1800),
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
        ),
    };
    let initial_events = query.flag("sendInitialEvents")?;
    if initial_events {
        if query.get("resourceVersionMatch") != Some("NotOlderThan")
            || !query.flag("allowWatchBookmarks")?
        {
            return Err(ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "",
                &[("sendInitialEvents".into(), "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks".into())],
            ));
        }
    } else if query.get("resourceVersionMatch").is_some() {
        return Err(ApiError::invalid(
            "ListOptions.meta.k8s.io",
            "",
            &[("resourceVersionMatch".into(), "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into())],
        ));
    }
    let state = shared.lock();
    let from = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a number"
            ))
        })?),
    };
    let resource = state.resources[res].clone();
    let filter = WatchFilter {
        res,
        namespace,
        labels,
        fields,
        metadata_only,
    };
    // Synthetic ADDED events for what exists, when no version (or 0) is given.
    let mut initial = String::new();
    let cursor = match from {
        Some(rv) if !initial_events => rv,
        _ => {
            for (key, object) in state.objects.iter() {
                if filter.selects_key(key) && filter.selects(object) {
                    initial.push_str(&filter.line("ADDED", object));
                    initial.push('\n');
                }
            }
            if initial_events {
                let bookmark = json!({
                    "kind": resource.kind, "apiVersion": resource.api_version(),
                    "metadata": {"resourceVersion": state.rv.to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "true"}},
                });
                initial.push_str(&json!({"type": "BOOKMARK", "object": bookmark}).to_string());
                initial.push('\n');
            }
            state.rv
        }
    };
    drop(state);
    let deadline = tokio::time::Instant::now() + timeout;
    let receiver = shared.changed.subscribe();
    let stream = futures::stream::unfold(
        (shared.clone(), filter, cursor, receiver, initial),
        move |(shared, filter, mut cursor, mut receiver, initial)| async move {
            if !initial.is_empty() {
                let chunk = Bytes::from(initial);
                return Some((
                    Ok::<_, std::io::Error>(chunk),
                    (shared, filter, cursor, receiver, String::new()),
                ));
            }
            loop {
                receiver.borrow_and_update();
                let mut lines = String::new();
                {
                    let state = shared.lock();
                    let start = state.events.partition_point(|e| e.rv <= cursor);
                    for event in &state.events[start..] {
                        cursor = event.rv;
                        if let Some(line) = filter.event(event) {
                            lines.push_str(&line);
                            lines.push('\n');
                        }
                    }
                }
                if !lines.is_empty() {
                    return Some((
                        Ok(Bytes::from(lines)),
                        (shared, filter, cursor, receiver, String::new()),
                    ));
                }
                match tokio::time::timeout_at(deadline, receiver.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return None,
                }
            }
        },
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct WatchFilter {
    res: usize,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    metadata_only: bool,
}

impl WatchFilter {
    fn selects_key(&self, key: &Key) -> bool {
        key.res == self.res
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
    }

    fn selects(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    fn line(&self, kind: &str, object: &Value) -> String {
        let object = if self.metadata_only {
            partial_metadata(object)
        } else {
            object.clone()
        };
        json!({"type": kind, "object": object}).to_string()
    }

    /// The line this watch sends for an event, if any: an object that starts matching the
    /// selectors is `ADDED`, one that stops is `DELETED`.
    fn event(&self, event: &Event) -> Option<String> {
        if !self.selects_key(&event.key) {
            return None;
        }
        let now = self.selects(&event.object);
        let kind = match (event.kind, event.old.as_ref().map(|o| self.selects(o))) {
            (EventType::Modified, Some(true)) if !now => "DELETED",
            (EventType::Modified, Some(false)) if now => "ADDED",
            (EventType::Modified, Some(false)) => return None,
            (kind, _) if now => kind.as_str(),
            _ => return None,
        };
        Some(self.line(kind, &event.object))
    }
}

// ---------------------------------------------------------------------------------------
// Writes

/// Who writes, and whether for real.
struct Writer {
    manager: String,
    dry_run: bool,
}

impl Writer {
    fn test(manager: &str) -> Writer {
        Writer {
            manager: manager.to_string(),
            dry_run: false,
        }
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything but `status` (for kinds with a status subresource).
    Main,
    /// `status` only.
    Status,
}

/// Metadata the server owns: never taken from a client's body, never in managed fields.
const SYSTEM_METADATA: [&str; 11] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

impl Shared {
    fn create(
        &self,
        res: usize,
        namespace: Option<&str>,
        mut object: Value,
        writer: &Writer,
    ) -> ApiResult<Value> {
        let mut state = self.lock();
        let resource = state.resources[res].clone();
        check_type(&resource, &object)?;
        let meta = object["metadata"].clone();
        let object_meta = meta.clone();
        if !meta.is_object() && !meta.is_null() {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let namespace = if resource.namespaced {
            let given = meta["namespace"].as_str();
            match (namespace, given) {
                (Some(url), Some(body)) if !body.is_empty() && url != body => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                (Some(url), _) => Some(url.to_string()),
                (None, Some(body)) if !body.is_empty() => Some(body.to_string()),
                (None, _) => {
                    return Err(ApiError::invalid(
                        &resource.qualified_kind(),
                        meta["name"].as_str().unwrap_or(""),
                        &[("metadata.namespace".into(), "Required value".into())],
                    ))
                }
            }
        } else {
            None
        };
        if meta["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::new(
                500,
                "InternalError",
                "Internal error occurred: resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
                format!("{prefix}{suffix}")
            }
            _ => {
                return Err(ApiError::invalid(
                    &resource.qualified_kind(),
                    "",
                    &[(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ))
            }
        };
        validate_meta(&resource, &name, &object)?;
        if let Some(ns) = &namespace {
            if !state.namespace_exists(ns) {
                return Err(ApiError::namespace_not_found(ns));
            }
        }
        let key = Key::new(res, namespace.as_deref(), &name);
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&resource, &name));
        }
        let time = now();
        {
            let meta = object["metadata"]
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut meta: Map<String, Value> = meta
                .into_iter()
                .filter(|(k, _)| !SYSTEM_METADATA.contains(&k.as_str()))
                .collect();
            meta.insert("name".into(), json!(name));
            if let Some(ns) = &namespace {
                meta.insert("namespace".into(), json!(ns));
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(time));
            meta.insert("generation".into(), json!(1));
            if let Some(prefix) = meta_given_prefix(&object_meta) {
                meta.insert("generateName".into(), json!(prefix));
            }
            object["metadata"] = Value::Object(meta);
        }
        let map = object.as_object_mut().expect("an object");
        if resource.status {
            map.remove("status");
        }
        if resource.group.is_empty() && resource.kind == "Namespace" {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            object["status"] = json!({"phase": "Active"});
        }
        prepare(&resource, None, &mut object)
            .map_err(|causes| ApiError::invalid(&resource.qualified_kind(), &name, &causes))?;
        if resource.group.is_empty() && resource.kind == "Service" {
            allocate_cluster_ip(&mut state, &mut object);
        }
        let fields = tracked_leaves(&object, &resource, Scope::Main);
        let entries = vec![ManagedEntry {
            manager: writer.manager.clone(),
            operation: "Update".into(),
            api_version: resource.api_version(),
            time,
            subresource: None,
            fields,
        }];
        write_managed(&mut object, &entries);
        if writer.dry_run {
            return Ok(object);
        }
        let stored = state.commit(&key, Some(object));
        self.changed.send_replace(state.rv);
        Ok(stored)
    }

    /// PUT: the whole object (or, on `/status`, its status) from the body, if its
    /// `resourceVersion` is the stored one.
    fn replace(&self, target: &Target, body: Value, writer: &Writer) -> ApiResult<Value> {
        let Target::Object {
            res,
            namespace,
            name,
            ..
        } = target
        else {
            unreachable!("an object")
        };
        let resource = self.lock().resources[*res].clone();
        check_type(&resource, &body)?;
        check_name(name, namespace.as_deref(), &body)?;
        let given = body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if given.is_empty() {
            return Err(ApiError::invalid(
                &resource.qualified_kind(),
                name,
                &[(
                    "metadata.resourceVersion".into(),
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        self.update_with(target, writer, |old| {
            if old["metadata"]["resourceVersion"].as_str() != Some(given.as_str()) {
                return Err(ApiError::stale(&resource, name));
            }
            Ok(body.clone())
        })
    }

    /// An update (operation `Update`): `change` makes the new object from the stored one;
    /// the server then keeps what the client may not change.
    fn update_with(
        &self,
        target: &Target,
        writer: &Writer,
        change: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let Target::Object {
            res,
            namespace,
            name,
            status,
        } = target
        else {
            unreachable!("an object")
        };
        let mut state = self.lock();
        let resource = state.resources[*res].clone();
        let key = Key::new(*res, namespace.as_deref(), name);
        let old = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&resource, name))?;
        let mut new = change(&old)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        check_type(&resource, &new)?;
        check_name(name, namespace.as_deref(), &new)?;
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
            if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::stale(&resource, name));
            }
        }
        let scope = if *status { Scope::Status } else { Scope::Main };
        new = keep_unwritable(&resource, &old, new, scope);
        validate_meta(&resource, name, &new)?;
        if resource.group.is_empty() && resource.kind == "Service" && new["spec"].is_object() {
            // What the server allocated stays when a client leaves it out.
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if new["spec"][field].is_null() && !old["spec"][field].is_null() {
                    new["spec"][field] = old["spec"][field].clone();
                }
            }
        }
        if scope == Scope::Main {
            prepare(&resource, Some(&old), &mut new)
                .map_err(|causes| ApiError::invalid(&resource.qualified_kind(), name, &causes))?;
        }
        // The writer owns every field it changed; nobody else does any more.
        let mut entries = read_managed(&old);
        let changed: BTreeSet<FieldPath> = tracked_leaves(&new, &resource, scope)
            .into_iter()
            .filter(|p| value_at(&old, p) != value_at(&new, p))
            .collect();
        let sub = status.then(|| "status".to_string());
        for e in entries.iter_mut() {
            e.fields.retain(|p| !changed.iter().any(|c| related(c, p)));
        }
        if !changed.is_empty() {
            upsert_entry(
                &mut entries,
                &writer.manager,
                "Update",
                &resource,
                sub,
                changed,
            );
        }
        self.finish_write(&mut state, &resource, &key, &old, new, entries, writer)
    }

    /// Server-side apply. Returns the object and whether it was created.
    fn apply(
        &self,
        target: &Target,
        config: Value,
        force: bool,
        writer: &Writer,
    ) -> ApiResult<(Value, bool)> {
        let Target::Object {
            res,
            namespace,
            name,
            status,
        } = target
        else {
            unreachable!("an object")
        };
        let resource = self.lock().resources[*res].clone();
        if !config.is_object() {
            return Err(ApiError::bad_request("an apply patch must be an object"));
        }
        check_type(&resource, &config)?;
        if config["metadata"]["name"].as_str().unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "metadata.name: Required value: name is required in an apply patch",
            ));
        }
        check_name(name, namespace.as_deref(), &config)?;
        if config["metadata"]
            .get("managedFields")
            .is_some_and(|m| !m.is_null() && m != &json!([]))
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let config = strip_nulls(&config);
        let key = Key::new(*res, namespace.as_deref(), name);
        let exists = self.lock().objects.contains_key(&key);
        if !exists {
            if *status {
                return Err(ApiError::not_found(&resource, name));
            }
            // Create, then own exactly what was applied.
            let mut created = self.create(
                *res,
                namespace.as_deref(),
                config.clone(),
                &Writer {
                    manager: writer.manager.clone(),
                    dry_run: true,
                },
            )?;
            let fields = tracked_leaves(&config, &resource, Scope::Main);
            let entry = ManagedEntry {
                manager: writer.manager.clone(),
                operation: "Apply".into(),
                api_version: resource.api_version(),
                time: now(),
                subresource: None,
                fields,
            };
            write_managed(&mut created, &[entry]);
            if writer.dry_run {
                return Ok((created, true));
            }
            let mut state = self.lock();
            if state.objects.contains_key(&key) {
                return Err(ApiError::already_exists(&resource, name));
            }
            let stored = state.commit(&key, Some(created));
            self.changed.send_replace(state.rv);
            return Ok((stored, true));
        }
        let mut state = self.lock();
        let old = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&resource, name))?;
        if let Some(rv) = config["metadata"]["resourceVersion"].as_str() {
            if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::stale(&resource, name));
            }
        }
        let scope = if *status { Scope::Status } else { Scope::Main };
        let sub = status.then(|| "status".to_string());
        let applied = tracked_leaves(&config, &resource, scope);
        let mut entries = read_managed(&old);
        let mine = |e: &ManagedEntry| {
            e.manager == writer.manager && e.operation == "Apply" && e.subresource == sub
        };

        // Conflicts: fields others own, whose value this apply would change.
        let mut conflicts: Vec<(String, String, FieldPath)> = Vec::new();
        for e in entries.iter().filter(|e| !mine(e)) {
            for p in &e.fields {
                for q in &applied {
                    if conflicts_with(&old, &config, p, q) {
                        let who = if e.operation == "Apply" {
                            format!("conflict with \"{}\"", e.manager)
                        } else {
                            format!("conflict with \"{}\" using {}", e.manager, e.api_version)
                        };
                        if !conflicts.iter().any(|(w, _, c)| *w == who && c == p) {
                            conflicts.push((who, e.manager.clone(), p.clone()));
                        }
                    }
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(apply_conflict(&resource, name, &conflicts));
        }
        let taken: BTreeSet<FieldPath> = conflicts.into_iter().map(|(_, _, p)| p).collect();
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            e.fields.retain(|p| !taken.contains(p));
        }
        // Fields this manager applied before and no longer does, and nobody else owns, go.
        let before: BTreeSet<FieldPath> = entries
            .iter()
            .find(|e| mine(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let mut new = old.clone();
        for p in before.difference(&applied) {
            let shared_with_others = entries
                .iter()
                .filter(|e| !mine(e))
                .any(|e| e.fields.contains(p));
            if !shared_with_others {
                remove_path(&mut new, p);
            }
        }
        merge_into(&mut new, &config);
        new = keep_unwritable(&resource, &old, new, scope);
        validate_meta(&resource, name, &new)?;
        if scope == Scope::Main {
            prepare(&resource, Some(&old), &mut new)
                .map_err(|causes| ApiError::invalid(&resource.qualified_kind(), name, &causes))?;
        }
        // The applier's entry keeps its place (a reordering alone would be a write).
        match entries.iter_mut().find(|e| mine(e)) {
            Some(e) => e.fields = applied,
            None => entries.push(ManagedEntry {
                manager: writer.manager.clone(),
                operation: "Apply".into(),
                api_version: resource.api_version(),
                time: now(),
                subresource: sub,
                fields: applied,
            }),
        }
        let object = self.finish_write(&mut state, &resource, &key, &old, new, entries, writer)?;
        Ok((object, false))
    }

    /// The common end of every update: prune managed fields to what exists, bump the
    /// generation on a spec change, skip a write that changes nothing, finish a deletion
    /// whose finalizers are gone.
    #[allow(clippy::too_many_arguments)]
    fn finish_write(
        &self,
        state: &mut State,
        resource: &ResourceType,
        key: &Key,
        old: &Value,
        mut new: Value,
        mut entries: Vec<ManagedEntry>,
        writer: &Writer,
    ) -> ApiResult<Value> {
        let exists = all_tracked_leaves(&new, resource);
        let old_entries = read_managed(old);
        for e in entries.iter_mut() {
            e.fields.retain(|p| exists.contains(p));
            let unchanged = old_entries.iter().any(|o| {
                o.manager == e.manager
                    && o.operation == e.operation
                    && o.subresource == e.subresource
                    && o.fields == e.fields
            });
            if !unchanged {
                e.time = now();
            }
        }
        entries.retain(|e| !e.fields.is_empty());
        write_managed(&mut new, &entries);
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(if spec_of(old) != spec_of(&new) {
            generation + 1
        } else {
            generation
        });
        if new == *old {
            return Ok(old.clone());
        }
        if writer.dry_run {
            return Ok(new);
        }
        let finalized = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        let stored = state.commit(key, Some(new));
        if finalized {
            let gone = state.commit(key, None);
            self.changed.send_replace(state.rv);
            return Ok(gone);
        }
        self.changed.send_replace(state.rv);
        Ok(stored)
    }

    /// Deletes an object, or marks it for deletion while finalizers hold it. Returns its
    /// last state and whether it is gone.
    fn delete(&self, key: &Key, options: &DeleteOptions) -> ApiResult<(Value, bool)> {
        let mut state = self.lock();
        let resource = state.resources[key.res].clone();
        let object = state
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&resource, &key.name))?;
        if let Some(uid) = &options.uid {
            if object["metadata"]["uid"].as_str() != Some(uid) {
                return Err(ApiError::conflict(
                    &resource,
                    &key.name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object["metadata"]["uid"].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(rv) = &options.resource_version {
            if object["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(ApiError::conflict(
                    &resource,
                    &key.name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        object["metadata"]["resourceVersion"].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        if options.dry_run {
            return Ok((object, true));
        }
        let orphan = match options.propagation.as_deref() {
            Some("Orphan") => true,
            Some(_) => false,
            None => resource.orphan_by_default,
        };
        let result = delete_now(&mut state, key, orphan);
        self.changed.send_replace(state.rv);
        Ok(result)
    }
}

/// Deletes (or, with finalizers, marks) an object and handles its dependents: orphaned
/// (their owner reference removed) or deleted in turn.
fn delete_now(state: &mut State, key: &Key, orphan: bool) -> (Value, bool) {
    let object = state
        .objects
        .get(key)
        .cloned()
        .expect("an object to delete");
    let finalizers = object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if finalizers {
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return (object, false);
        }
        let mut marked = object;
        marked["metadata"]["deletionTimestamp"] = json!(now());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return (state.commit(key, Some(marked)), false);
    }
    let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let is_namespace = {
        let r = &state.resources[key.res];
        r.group.is_empty() && r.kind == "Namespace"
    };
    let contents: Vec<Key> = state
        .objects
        .keys()
        .filter(|k| is_namespace && !k.namespace.is_empty() && k.namespace == key.name)
        .cloned()
        .collect();
    for k in contents {
        if state.objects.contains_key(&k) {
            delete_now(state, &k, false);
        }
    }
    let gone = state.commit(key, None);
    let dependents: Vec<Key> = state
        .objects
        .iter()
        .filter(|(_, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid.as_str())))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in dependents {
        if orphan {
            let mut o = state.objects[&k].clone();
            if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                if refs.is_empty() {
                    o["metadata"]
                        .as_object_mut()
                        .expect("metadata")
                        .remove("ownerReferences");
                }
            }
            state.commit(&k, Some(o));
        } else if state.objects.contains_key(&k) {
            delete_now(state, &k, false);
        }
    }
    (gone, true)
}

struct DeleteOptions {
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    fn parse(query: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut options = DeleteOptions {
            propagation: query.get("propagationPolicy").map(str::to_string),
            uid: None,
            resource_version: None,
            dry_run: query.dry_run()?,
        };
        if query.flag("orphanDependents")? {
            options.propagation = Some("Orphan".into());
        }
        if !body.is_empty() {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("DeleteOptions: {e}")))?;
            let map = v
                .as_object()
                .ok_or_else(|| ApiError::bad_request("DeleteOptions must be an object"))?;
            for (k, value) in map {
                match k.as_str() {
                    "kind" | "apiVersion" | "gracePeriodSeconds" => {}
                    "propagationPolicy" => options.propagation = value.as_str().map(str::to_string),
                    "orphanDependents" => {
                        if value.as_bool() == Some(true) {
                            options.propagation = Some("Orphan".into());
                        }
                    }
                    "dryRun" => {
                        let all = value
                            .as_array()
                            .is_some_and(|a| a.iter().all(|x| x == "All"));
                        if !all {
                            return Err(ApiError::bad_request(
                                "dryRun: Unsupported value: supported values: \"All\"",
                            ));
                        }
                        options.dry_run = !value.as_array().is_some_and(|a| a.is_empty());
                    }
                    "preconditions" => {
                        options.uid = value["uid"].as_str().map(str::to_string);
                        options.resource_version =
                            value["resourceVersion"].as_str().map(str::to_string);
                    }
                    other => {
                        return Err(ApiError::bad_request(format!(
                        "the test API server does not support the DeleteOptions field \"{other}\""
                    )))
                    }
                }
            }
        }
        match options.propagation.as_deref() {
            None | Some("Orphan" | "Background" | "Foreground") => Ok(options),
            Some(other) => Err(ApiError::invalid(
                "DeleteOptions.meta.k8s.io",
                "",
                &[(
                    "propagationPolicy".into(),
                    format!("Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                )],
            )),
        }
    }
}

/// The body's `apiVersion` and `kind` are there and are the URL's.
fn check_type(resource: &ResourceType, object: &Value) -> ApiResult<()> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    let kind = object["kind"].as_str().unwrap_or("");
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{object}'"
        )));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{object}'"
        )));
    }
    if api_version != resource.api_version() || kind != resource.kind {
        return Err(ApiError::bad_request(format!(
            "the object's {api_version}, Kind={kind} is not the {}, Kind={} this URL serves",
            resource.api_version(),
            resource.kind
        )));
    }
    Ok(())
}

/// The body names the URL's object (or no name, or no namespace).
fn check_name(name: &str, namespace: Option<&str>, object: &Value) -> ApiResult<()> {
    if let Some(given) = object["metadata"]["name"].as_str() {
        if given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
    }
    if let (Some(given), Some(url)) = (object["metadata"]["namespace"].as_str(), namespace) {
        if !given.is_empty() && given != url {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

/// The new object with what this write may not change taken from the old one: system
/// metadata always; `status` on the main resource, everything else on `/status`.
fn keep_unwritable(resource: &ResourceType, old: &Value, new: Value, scope: Scope) -> Value {
    let mut new = match scope {
        Scope::Status => {
            let mut kept = old.clone();
            match new.get("status") {
                Some(s) if !s.is_null() => kept["status"] = s.clone(),
                _ => {
                    kept.as_object_mut().expect("an object").remove("status");
                }
            }
            kept
        }
        Scope::Main => {
            let mut new = new;
            if resource.status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().expect("an object").remove("status");
                    }
                }
            }
            new
        }
    };
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for field in SYSTEM_METADATA {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                new["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove(field);
            }
        }
    }
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    new
}

fn meta_given_prefix(meta: &Value) -> Option<&str> {
    meta["generateName"].as_str().filter(|p| !p.is_empty())
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_of(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(map) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(k);
        }
    }
    v
}

fn allocate_cluster_ip(state: &mut State, object: &mut Value) {
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    if spec["type"].as_str() == Some("ExternalName") {
        return;
    }
    if spec["clusterIP"].is_null() {
        let n = state.next_ip;
        state.next_ip += 1;
        let ip = format!("10.96.{}.{}", n / 250, n % 250 + 1);
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    if spec["clusterIP"].as_str() != Some("None") {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
}

// ---------------------------------------------------------------------------------------
// Kinds: what the real server defaults and validates in the workload kinds served here,
// limited to what clients most often get wrong. Other kinds are stored as sent.

type Causes = Vec<(String, String)>;

/// Fills the defaults the real server fills when it decodes an object of these kinds (a
/// read shows them as a real cluster's would; an apply does not own them), and checks
/// what it validates. `old` is the stored object, for an update.
fn prepare(resource: &ResourceType, old: Option<&Value>, object: &mut Value) -> Result<(), Causes> {
    let mut causes = Causes::new();
    if !object["spec"].is_null() && !object["spec"].is_object() {
        causes.push(("spec".into(), "Invalid value: must be an object".into()));
        return Err(causes);
    }
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("apps", "Deployment") => prepare_deployment(old, object, &mut causes),
        ("batch", "Job") => prepare_job(old, object, &mut causes),
        ("", "Pod") => prepare_pod(old, object, &mut causes),
        ("", "Service") => prepare_service(old, object, &mut causes),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// Sets `value[key]` when it is absent or null (and `value` is a map).
fn set_default(value: &mut Value, key: &str, default: Value) {
    if let Some(map) = value.as_object_mut() {
        let v = map.entry(key).or_insert(Value::Null);
        if v.is_null() {
            *v = default;
        }
    }
}

/// `value[key]`, an empty map when absent; `None` when it is something else.
fn map_at<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = value.as_object_mut()?;
    let v = map.entry(key).or_insert_with(|| json!({}));
    if v.is_null() {
        *v = json!({});
    }
    v.is_object().then_some(v)
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, k| &v[*k])
}

/// A field that may not change once set.
fn immutable(old: &Value, new: &Value, path: &[&str], causes: &mut Causes) {
    let (before, after) = (at(old, path), at(new, path));
    if before != after {
        causes.push((
            path.join("."),
            format!("Invalid value: {after}: field is immutable"),
        ));
    }
}

fn prepare_deployment(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let spec = map_at(object, "spec").expect("a map");
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = map_at(spec, "strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            if let Some(rolling) = map_at(strategy, "rollingUpdate") {
                set_default(rolling, "maxUnavailable", json!("25%"));
                set_default(rolling, "maxSurge", json!("25%"));
            }
        }
    }
    if let Some(pod) = map_at(spec, "template").and_then(|t| map_at(t, "spec")) {
        default_pod_spec(pod, Some("Always"));
    }
    let spec = &object["spec"];
    if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
        causes.push((
            "spec.replicas".into(),
            format!(
                "Invalid value: {}: must be greater than or equal to 0",
                spec["replicas"]
            ),
        ));
    }
    validate_selector(spec, "deployment", causes);
    validate_pod_spec(
        &spec["template"]["spec"],
        "spec.template.spec",
        &["Always"],
        causes,
    );
    if let Some(old) = old {
        immutable(old, object, &["spec", "selector"], causes);
    }
}

fn prepare_job(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let spec = map_at(object, "spec").expect("a map");
    if old.is_none() && spec["manualSelector"] != true {
        if !spec["selector"].is_null() {
            causes.push((
                "spec.selector".into(),
                format!(
                    "Invalid value: {}: `selector` will be auto-generated",
                    spec["selector"]
                ),
            ));
        }
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        if let Some(labels) = map_at(spec, "template")
            .and_then(|t| map_at(t, "metadata"))
            .and_then(|m| map_at(m, "labels"))
        {
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", &uid),
                ("batch.kubernetes.io/job-name", &name),
                ("controller-uid", &uid),
                ("job-name", &name),
            ] {
                labels[k] = json!(v);
            }
        }
    }
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if spec["podFailurePolicy"].is_null() {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    if let Some(pod) = map_at(spec, "template").and_then(|t| map_at(t, "spec")) {
        default_pod_spec(pod, None);
    }
    let spec = &object["spec"];
    for field in ["parallelism", "completions", "backoffLimit"] {
        if spec[field].as_i64().is_some_and(|n| n < 0) {
            causes.push((
                format!("spec.{field}"),
                format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    spec[field]
                ),
            ));
        }
    }
    validate_selector(spec, "job", causes);
    validate_pod_spec(
        &spec["template"]["spec"],
        "spec.template.spec",
        &["OnFailure", "Never"],
        causes,
    );
    if let Some(old) = old {
        for path in [
            &["spec", "template"][..],
            &["spec", "selector"],
            &["spec", "completions"],
            &["spec", "completionMode"],
        ] {
            immutable(old, object, path, causes);
        }
    }
}

fn prepare_pod(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let spec = map_at(object, "spec").expect("a map");
    default_pod_spec(spec, Some("Always"));
    validate_pod_spec(
        &object["spec"],
        "spec",
        &["Always", "OnFailure", "Never"],
        causes,
    );
    if let Some(old) = old {
        // Only images (and a few scheduling fields) of a pod may change.
        let strip = |spec: &Value| {
            let mut s = spec.clone();
            for list in ["containers", "initContainers"] {
                for c in s[list].as_array_mut().into_iter().flatten() {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
            if let Some(s) = s.as_object_mut() {
                s.remove("activeDeadlineSeconds");
                s.remove("tolerations");
            }
            s
        };
        if strip(&old["spec"]) != strip(&object["spec"]) {
            causes.push((
                "spec".into(),
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, \
                 `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations`"
                    .into(),
            ));
        }
    }
}

fn prepare_service(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let spec = map_at(object, "spec").expect("a map");
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let kind = spec["type"].as_str().unwrap_or("").to_string();
    if kind != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    for port in spec["ports"].as_array_mut().into_iter().flatten() {
        set_default(port, "protocol", json!("TCP"));
        let number = port["port"].clone();
        set_default(port, "targetPort", number);
    }
    let spec = &object["spec"];
    if !matches!(
        kind.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push((
            "spec.type".into(),
            format!(
                "Unsupported value: \"{kind}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ),
        ));
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && !headless {
        causes.push(("spec.ports".into(), "Required value".into()));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match port["port"].as_i64() {
            None => causes.push((format!("{at}.port"), "Required value".into())),
            Some(p) if !(1..=65535).contains(&p) => causes.push((
                format!("{at}.port"),
                format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
            )),
            Some(_) => {}
        }
        match port["name"].as_str() {
            None | Some("") if ports.len() > 1 => {
                causes.push((format!("{at}.name"), "Required value".into()))
            }
            Some(n) if !n.is_empty() && !names.insert(n.to_string()) => {
                causes.push((format!("{at}.name"), format!("Duplicate value: \"{n}\"")))
            }
            _ => {}
        }
        let protocol = port["protocol"].as_str().unwrap_or("");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            causes.push((
                format!("{at}.protocol"),
                format!("Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
            ));
        }
    }
    if let Some(selector) = spec["selector"].as_object() {
        for (k, v) in selector {
            let bad_key = qualified_name_error(k).is_some();
            let bad_value = !v.as_str().is_some_and(is_label_value);
            if bad_key || bad_value {
                causes.push((
                    "spec.selector".into(),
                    format!("Invalid value: \"{k}\": {v}"),
                ));
            }
        }
    }
    if let Some(old) = old {
        if !old["spec"]["clusterIP"].is_null() {
            immutable(old, object, &["spec", "clusterIP"], causes);
        }
    }
}

/// The pod spec defaults of the fields most often read back.
fn default_pod_spec(spec: &mut Value, restart_policy: Option<&str>) {
    if let Some(policy) = restart_policy {
        set_default(spec, "restartPolicy", json!(policy));
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if !c.is_object() {
                continue;
            }
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            let image = c["image"].as_str().unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or("");
            let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "resources", json!({}));
            for p in c["ports"].as_array_mut().into_iter().flatten() {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// Containers (named, unique, with an image, valid ports and resources) and the restart
/// policy.
fn validate_pod_spec(spec: &Value, at: &str, restart_policies: &[&str], causes: &mut Causes) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push((format!("{at}.containers"), "Required value".into()));
    }
    let init = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for (list, items) in [("initContainers", &init), ("containers", &containers)] {
        for (i, c) in items.iter().enumerate() {
            let here = format!("{at}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => causes.push((format!("{here}.name"), "Required value".into())),
                Some(n) if !is_dns_label(n) => causes.push((
                    format!("{here}.name"),
                    format!("Invalid value: \"{n}\": {LABEL_MESSAGE}"),
                )),
                Some(n) if !names.insert(n.to_string()) => {
                    causes.push((format!("{here}.name"), format!("Duplicate value: \"{n}\"")))
                }
                Some(_) => {}
            }
            if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
                causes.push((format!("{here}.image"), "Required value".into()));
            }
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                match p["containerPort"].as_i64() {
                    None => causes.push((
                        format!("{here}.ports[{j}].containerPort"),
                        "Required value".into(),
                    )),
                    Some(n) if !(1..=65535).contains(&n) => causes.push((
                        format!("{here}.ports[{j}].containerPort"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    )),
                    Some(_) => {}
                }
            }
            validate_resources(&c["resources"], &format!("{here}.resources"), causes);
        }
    }
    let supported = restart_policies
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match spec["restartPolicy"].as_str() {
        None => causes.push((
            format!("{at}.restartPolicy"),
            format!("Required value: valid values: {supported}"),
        )),
        Some(p) if !restart_policies.contains(&p) => causes.push((
            format!("{at}.restartPolicy"),
            format!("Unsupported value: \"{p}\": supported values: {supported}"),
        )),
        Some(_) => {}
    }
}

/// Quantities parse; a request is at most its limit; extended resources (such as
/// `nvidia.com/gpu`) are whole numbers, and a request of one needs an equal limit.
fn validate_resources(resources: &Value, at: &str, causes: &mut Causes) {
    let mut parsed: BTreeMap<(&str, String), f64> = BTreeMap::new();
    for part in ["limits", "requests"] {
        for (name, q) in resources[part].as_object().into_iter().flatten() {
            let text = match q {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            let here = format!("{at}.{part}[{name}]");
            let Some(value) = parse_quantity(&text) else {
                causes.push((here, format!("Invalid value: \"{text}\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")));
                continue;
            };
            if value < 0.0 {
                causes.push((
                    here.clone(),
                    format!("Invalid value: \"{text}\": must be greater than or equal to 0"),
                ));
            }
            let extended = name.contains('/') && !name.contains("kubernetes.io/");
            if extended && value.fract() != 0.0 {
                causes.push((
                    here.clone(),
                    format!("Invalid value: \"{text}\": must be an integer"),
                ));
            }
            parsed.insert((part, name.clone()), value);
        }
    }
    for ((_, name), request) in parsed.iter().filter(|((p, _), _)| *p == "requests") {
        let limit = parsed.get(&("limits", name.clone())).copied();
        let extended = name.contains('/') && !name.contains("kubernetes.io/");
        let here = format!("{at}.requests[{name}]");
        let shown = resources["requests"][name]
            .to_string()
            .trim_matches('"')
            .to_string();
        match limit {
            _ if extended && limit != Some(*request) => causes.push((
                here,
                format!(
                    "Invalid value: \"{shown}\": must be equal to {name} limit of {}",
                    limit.unwrap_or(0.0)
                ),
            )),
            Some(l) if *request > l => causes.push((
                here,
                format!(
                    "Invalid value: \"{shown}\": must be less than or equal to {name} limit of {}",
                    resources["limits"][name].to_string().trim_matches('"')
                ),
            )),
            _ => {}
        }
    }
}

/// A Kubernetes quantity (`500m`, `2Gi`, `1e3`, `1.5`) as a number, if it is one.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number[1..].contains(['+', '-']) {
        return None;
    }
    let base: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(base * factor)
}

/// A Deployment's or Job's selector: there, not empty, valid, and matching the template's
/// labels.
fn validate_selector(spec: &Value, kind: &str, causes: &mut Causes) {
    let selector = &spec["selector"];
    if selector.is_null() {
        causes.push(("spec.selector".into(), "Required value".into()));
        return;
    }
    let labels = selector["matchLabels"].as_object().map_or(0, Map::len);
    let expressions = selector["matchExpressions"].as_array().map_or(0, Vec::len);
    if labels + expressions == 0 {
        causes.push((
            "spec.selector".into(),
            format!("Invalid value: {selector}: empty selector is invalid for {kind}"),
        ));
        return;
    }
    for (i, e) in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let op = e["operator"].as_str().unwrap_or("");
        if !matches!(op, "In" | "NotIn" | "Exists" | "DoesNotExist") {
            causes.push((
                format!("spec.selector.matchExpressions[{i}].operator"),
                format!("Invalid value: \"{op}\": not a valid selector operator"),
            ));
            return;
        }
    }
    let template_labels = &spec["template"]["metadata"]["labels"];
    if !selector_matches(selector, template_labels) {
        causes.push((
            "spec.template.metadata.labels".into(),
            format!(
                "Invalid value: {template_labels}: `selector` does not match template `labels`"
            ),
        ));
    }
}

/// Whether a `LabelSelector` (matchLabels, matchExpressions) selects these labels.
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        });
    by_label && by_expression
}

// ---------------------------------------------------------------------------------------
// Managed fields

/// A path of map keys from the object's root to a leaf (a scalar, a list, an empty map).
type FieldPath = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
struct ManagedEntry {
    manager: String,
    /// `Apply` or `Update`.
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
}

fn read_managed(object: &Value) -> Vec<ManagedEntry> {
    let mut entries = Vec::new();
    for e in object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut fields = BTreeSet::new();
        collect_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
        entries.push(ManagedEntry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            subresource: e["subresource"].as_str().map(str::to_string),
            fields,
        });
    }
    entries
}

fn collect_fields_v1(node: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(map) = node.as_object() else { return };
    if map.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in map {
        if let Some(field) = k.strip_prefix("f:") {
            prefix.push(field.to_string());
            collect_fields_v1(child, prefix, out);
            prefix.pop();
        }
    }
}

fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = json!({});
    for path in fields {
        let mut node = &mut root;
        for field in path {
            node = node
                .as_object_mut()
                .expect("a map")
                .entry(format!("f:{field}"))
                .or_insert_with(|| json!({}));
        }
    }
    root
}

fn write_managed(object: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&e.fields),
            });
            if let Some(sub) = &e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    let meta = object["metadata"].as_object_mut().expect("metadata");
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn upsert_entry(
    entries: &mut Vec<ManagedEntry>,
    manager: &str,
    operation: &str,
    resource: &ResourceType,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
) {
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == operation && e.subresource == subresource)
    {
        Some(e) => e.fields.extend(fields),
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: resource.api_version(),
            time: now(),
            subresource,
            fields,
        }),
    }
}

/// Whether a path is one a write in `scope` tracks.
fn tracked(path: &[String], resource: &ResourceType, scope: Scope) -> bool {
    match path.first().map(String::as_str) {
        None | Some("apiVersion" | "kind") => false,
        Some("metadata") => {
            scope == Scope::Main && path.len() > 1 && !SYSTEM_METADATA.contains(&path[1].as_str())
        }
        Some("status") if resource.status => scope == Scope::Status,
        Some(_) => scope == Scope::Main,
    }
}

fn leaves(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn tracked_leaves(object: &Value, resource: &ResourceType, scope: Scope) -> BTreeSet<FieldPath> {
    let mut all = BTreeSet::new();
    leaves(object, &mut Vec::new(), &mut all);
    all.into_iter()
        .filter(|p| tracked(p, resource, scope))
        .collect()
}

fn all_tracked_leaves(object: &Value, resource: &ResourceType) -> BTreeSet<FieldPath> {
    let mut all = tracked_leaves(object, resource, Scope::Main);
    all.extend(tracked_leaves(object, resource, Scope::Status));
    all
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = value;
    for field in path {
        v = v.as_object()?.get(field)?;
    }
    Some(v)
}

/// One path is the other or one of its ancestors.
fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Whether applying `config`'s leaf `q` changes `live`'s leaf `p`, owned by another.
fn conflicts_with(live: &Value, config: &Value, p: &FieldPath, q: &FieldPath) -> bool {
    let empty_map = |v: Option<&Value>| v.is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
    if p == q {
        return value_at(live, p) != value_at(config, q);
    }
    if p.starts_with(q) {
        // The apply sets an ancestor of the owned field to a leaf: it replaces it, unless
        // it is an empty map (which merges).
        return !empty_map(value_at(config, q));
    }
    if q.starts_with(p) {
        // The owned leaf is an ancestor of the applied field: unless it is an empty map,
        // the apply changes its type.
        return !empty_map(value_at(live, p));
    }
    false
}

fn apply_conflict(
    resource: &ResourceType,
    name: &str,
    conflicts: &[(String, String, FieldPath)],
) -> ApiError {
    let dotted = |p: &FieldPath| format!(".{}", p.join("."));
    let message = if conflicts.len() == 1 {
        let (who, _, p) = &conflicts[0];
        format!("Apply failed with 1 conflict: {who}: {}", dotted(p))
    } else {
        let mut m = format!("Apply failed with {} conflicts: ", conflicts.len());
        let mut by_who: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (who, _, p) in conflicts {
            by_who.entry(who.as_str()).or_default().push(dotted(p));
        }
        let parts: Vec<String> = by_who
            .iter()
            .map(|(who, paths)| {
                let who = who.replacen("conflict with", "conflicts with", 1);
                format!("{who}:\n- {}", paths.join("\n- "))
            })
            .collect();
        m.push_str(&parts.join("\n"));
        m
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(who, _, p)| json!({"reason": "FieldManagerConflict", "message": who, "field": dotted(p)}))
        .collect();
    let mut details = object_details(resource, name);
    details["causes"] = Value::Array(causes);
    ApiError::new(409, "Conflict", message).details(details)
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Removes a leaf, and the maps it leaves empty below the top level.
fn remove_path(value: &mut Value, path: &[String]) {
    fn go(v: &mut Value, path: &[String]) -> bool {
        let Some(map) = v.as_object_mut() else {
            return false;
        };
        match path {
            [] => false,
            [last] => {
                map.remove(last);
                map.is_empty()
            }
            [first, rest @ ..] => {
                let emptied = map.get_mut(first).is_some_and(|child| go(child, rest));
                if emptied {
                    map.remove(first);
                }
                map.is_empty()
            }
        }
    }
    if let [first, rest @ ..] = path {
        if let Some(child) = value.get_mut(first) {
            if rest.is_empty() {
                value.as_object_mut().expect("an object").remove(first);
            } else {
                go(child, rest);
            }
        }
    }
}

/// Server-side apply's merge: maps merge key by key, anything else replaces.
fn merge_into(target: &mut Value, config: &Value) {
    match (target.as_object_mut(), config.as_object()) {
        (Some(t), Some(c)) => {
            for (k, v) in c {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_into(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = config.clone(),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch.as_object() {
        Some(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        None => *target = patch.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Validation

const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_1035_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_dns_1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Why `key` is not a valid label or annotation key (`[prefix/]name`), if it is not.
pub fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || !is_dns_subdomain(p) {
            return Some(format!("prefix part {SUBDOMAIN_MESSAGE}"));
        }
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_qualified_part(name) {
        return Some(QUALIFIED_NAME_MESSAGE.into());
    }
    None
}

/// Whether `value` is a valid label value (empty, or a qualified name part).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_qualified_part(value)
}

/// The object's name, labels and annotations are valid.
fn validate_meta(resource: &ResourceType, name: &str, object: &Value) -> ApiResult<()> {
    let mut causes: Vec<(String, String)> = Vec::new();
    let (ok, message) = match resource.names {
        NameRule::Subdomain => (is_dns_subdomain(name), SUBDOMAIN_MESSAGE),
        NameRule::Label => (is_dns_label(name), LABEL_MESSAGE),
        NameRule::Label1035 => (is_dns_1035_label(name), LABEL_1035_MESSAGE),
    };
    if !ok {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {message}"),
        ));
    }
    let meta = &object["metadata"];
    if let Some(labels) = meta.get("labels").filter(|l| !l.is_null()) {
        match labels.as_object() {
            None => causes.push((
                "metadata.labels".into(),
                "Invalid value: must be a map of strings".into(),
            )),
            Some(map) => {
                for (k, v) in map {
                    if let Some(e) = qualified_name_error(k) {
                        causes.push((
                            "metadata.labels".into(),
                            format!("Invalid value: \"{k}\": {e}"),
                        ));
                    }
                    match v.as_str() {
                        Some(s) if is_label_value(s) => {}
                        Some(s) if s.len() > 63 => causes.push((
                            "metadata.labels".to_string(),
                            format!("Invalid value: \"{s}\": must be no more than 63 characters"),
                        )),
                        Some(s) => causes.push((
                            "metadata.labels".into(),
                            format!("Invalid value: \"{s}\": {LABEL_VALUE_MESSAGE}"),
                        )),
                        None => causes.push((
                            "metadata.labels".into(),
                            format!("Invalid value: {v}: must be a string"),
                        )),
                    }
                }
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").filter(|a| !a.is_null()) {
        match annotations.as_object() {
            None => causes.push((
                "metadata.annotations".into(),
                "Invalid value: must be a map of strings".into(),
            )),
            Some(map) => {
                let mut size = 0;
                for (k, v) in map {
                    if let Some(e) = qualified_name_error(k) {
                        causes.push((
                            "metadata.annotations".into(),
                            format!("Invalid value: \"{k}\": {e}"),
                        ));
                    }
                    match v.as_str() {
                        Some(s) => size += k.len() + s.len(),
                        None => causes.push((
                            "metadata.annotations".into(),
                            format!("Invalid value: {v}: must be a string"),
                        )),
                    }
                }
                if size > 256 * 1024 {
                    causes.push((
                        "metadata.annotations".into(),
                        "Too long: must have at most 262144 bytes".into(),
                    ));
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&resource.qualified_kind(), name, &causes))
    }
}

// ---------------------------------------------------------------------------------------
// Selectors

/// A parsed `labelSelector`: requirements that must all hold.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    Gt(String, i64),
    Lt(String, i64),
}

impl LabelSelector {
    /// Parses the selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
    /// `a`, `!a`, `a>1`, `a<1`, comma-separated.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!(
                    "unable to parse requirement: found '', expected: identifier in \"{text}\""
                ));
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
            Requirement::Gt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::Lt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<String>, String> {
    let mut parts = vec![String::new()];
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Err(format!("unexpected ')' in \"{text}\"")),
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("a part").push(c);
    }
    if depth != 0 {
        return Err(format!("unclosed '(' in \"{text}\""));
    }
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let check_key = |k: &str| -> Result<String, String> {
        match qualified_name_error(k) {
            None => Ok(k.to_string()),
            Some(e) => Err(format!("invalid label key \"{k}\": {e}")),
        }
    };
    let check_value = |v: &str| -> Result<String, String> {
        if is_label_value(v) {
            Ok(v.to_string())
        } else {
            Err(format!(
                "invalid label value: \"{v}\": {LABEL_VALUE_MESSAGE}"
            ))
        }
    };
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key.trim())?));
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (check_key(k.trim())?, check_value(v.trim())?);
            return Ok(if negate {
                Requirement::NotIn(k, vec![v])
            } else {
                Requirement::In(k, vec![v])
            });
        }
    }
    for (op, gt) in [(">", true), ("<", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let k = check_key(k.trim())?;
            let n = v
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("invalid integer value \"{}\" in \"{part}\"", v.trim()))?;
            return Ok(if gt {
                Requirement::Gt(k, n)
            } else {
                Requirement::Lt(k, n)
            });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = check_key(words[0])?;
        let rest = words[1].trim();
        let (negate, set) = if let Some(s) = rest.strip_prefix("notin") {
            (true, s)
        } else if let Some(s) = rest.strip_prefix("in") {
            (false, s)
        } else {
            return Err(format!(
                "unable to parse requirement \"{part}\": expected in, notin, =, ==, !=, gt, lt"
            ));
        };
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| {
                format!("unable to parse requirement \"{part}\": expected a set in parentheses")
            })?;
        let values = inner
            .split(',')
            .map(|v| check_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(if negate {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        });
    }
    Ok(Requirement::Exists(check_key(part)?))
}

/// A parsed `fieldSelector`: `metadata.name` and `metadata.namespace` with `=`, `==`, `!=`.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str().unwrap_or(""),
                _ => object["metadata"]["namespace"].as_str().unwrap_or(""),
            };
            (actual == value) == *equal
        })
    }
}

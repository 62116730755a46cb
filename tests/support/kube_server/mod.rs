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
//! - [`KubeServer::bind_role`], [`KubeServer::bind_cluster_role`]: RBAC mode
//!   (`rbac.rs`): only what the bound Role or ClusterRole allows is served, the rest is
//!   the real server's 403.
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
//! - Schemas: every write of a kind Cairn renders (Namespace, ServiceAccount,
//!   ResourceQuota, LimitRange, Secret, Service, Deployment, Job, and Gateway API's
//!   HTTPRoute) is
//!   checked against the official schemas vendored in `schemas/` (Kubernetes v1.35.0,
//!   Gateway API v1.3.0 standard channel; `schemas/README.md`): unknown fields as
//!   `fieldValidation` says (`schema.rs`: create, update and merge patch refuse them
//!   under `Strict` with a 400, drop them with a `Warning` under `Warn`, the default;
//!   server-side apply refuses them always, with a 422), any other violation a 422
//!   naming each field; and the rules no schema states (`rules.rs`: a volume mount
//!   naming no volume, a Service backend without a port, an invalid `subdomain`, an
//!   Indexed Job without `completions`, ...).
//!
//! # What it deliberately does not do
//! - Kinds without a vendored schema (Pods, Nodes, ConfigMaps, custom
//!   resources a test registers) are stored as sent, unknown fields included; no
//!   associative lists: every list is atomic for server-side apply and for patches (the real server
//!   merges, e.g., `containers` by `name`). Apply bodies must be JSON (YAML is refused).
//!   No node ports or load balancers are allocated.
//! - No controllers: nothing runs pods, jobs or deployments. Tests drive status with the
//!   controls ([`KubeServer::set_status`], [`KubeServer::job_succeeded`],
//!   [`KubeServer::deployment_available`]). Deletion is immediate (namespaces too, with
//!   their contents) unless finalizers hold it; foreground and background propagation both
//!   delete dependents at once; `gracePeriodSeconds` is ignored.
//! - No JSON patch (`application/json-patch+json`: 415), no `/scale`, `/exec` or other
//!   subresources besides `status`, pods' `log` and pods' `proxy` (GET), no tables, protobuf, admission, aggregated RBAC roles, or old `/watch/` paths.
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
//! # Files
//! `resources.rs` (the table of kinds), `state.rs`, `path.rs` and `routing.rs` (reading
//! and serving a request), `error.rs`, `discovery.rs`, `reads.rs`, `watch.rs`,
//! `writes.rs`, `apply.rs` (server-side apply and managed fields), `delete.rs`,
//! `workloads.rs` and `pod_spec.rs` (per-kind defaults and validation), `meta.rs`
//! (names, labels, annotations), `selectors.rs`, `pods.rs` (logs and proxy),
//! `status.rs` (the status controls), `controls.rs` (the other test controls),
//! `schema.rs` (the vendored schemas), `rules.rs` (validation rules beyond them) and
//! `rbac.rs` (RBAC mode).
//!
//! Include with `#[path = "../support/kube_server/mod.rs"] mod kube_server;`.

#![allow(dead_code)]

mod apply;
mod controls;
mod delete;
mod discovery;
mod error;
mod meta;
mod path;
mod pod_spec;
mod pods;
mod rbac;
mod reads;
mod resources;
mod routing;
mod rules;
mod schema;
mod selectors;
mod state;
mod status;
mod watch;
mod workloads;
mod writes;

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use resources::register;
use routing::serve;
use state::{Shared, State};
use writes::Writer;

// Not every test binary uses every one.
#[allow(unused_imports)]
pub use self::{
    controls::{RecordedRequest, Verb},
    meta::{is_dns_label, is_dns_subdomain, is_label_value, qualified_name_error},
    pod_spec::parse_quantity,
    rbac::{role_from_yaml, rules_of, Rule, USER},
    resources::{builtin_resources, NameRule, ResourceType},
    selectors::{FieldSelector, LabelSelector},
};

/// The kubeconfig context (and cluster and user) name the server writes.
pub const CONTEXT: &str = "cairn-test";

/// The Kubernetes version `/version` reports.
pub const VERSION: (&str, &str) = ("1", "35");

/// The namespaces that exist when the server starts.
pub const INITIAL_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The manager the status controls write as.
pub const CONTROLLER: &str = "kube-controller-manager";

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
                rbac: Vec::new(),
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

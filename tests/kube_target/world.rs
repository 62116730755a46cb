//! `cairn plan` and `cairn apply` through the library, as the CLI runs them (observe
//! the targets, plan, take the lock, apply), against the test API server, on a small
//! workspace of its own: a Kubernetes compute with a gateway and a GPU quota, an
//! imported model and an endpoint serving it with a two-step rollout.
//!
//! The workspace's manifests name an S3 store (pods are given that address) but the
//! planner and applier are handed a folder store: nothing here runs a pod, so nothing
//! reaches the S3 one. A "kubelet" thread plays the nodes: it makes every new
//! Deployment generation available and starts a Running pod for it. One node, `t4-0`
//! (two GPUs, pool `t4`), is where the endpoint's revisions fit.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::apply::{Applier, ApplyOptions, ApplyReport};
use cairn::backend::kubernetes::{Clusters, KubeCompute};
use cairn::backend::store::Store;
use cairn::backend::target::Targets;
use cairn::content::HashCache;
use cairn::events::Silent;
use cairn::manifest::load_folder;
use cairn::plan::{Plan, PlanSource};
use cairn::planner::Planner;
use serde_json::json;

use crate::kube_server::KubeServer;

/// The fixture's workspace and the namespace its compute uses.
pub const TEAM: &str = "team";
pub const TEAM_NS: &str = "team-a";

/// The compute: a gateway, a GPU quota, a T4 shape for serving and an A100 shape for
/// training, each on its node pool.
pub const COMPUTE: &str = "[compute.cluster]
target = \"kubernetes\"
gateway = \"gateways/public\"
max_gpus = 16

[compute.cluster.instance_types.t4]
gpus = 1
node_selector = { pool = \"t4\" }

[compute.cluster.instance_types.a100]
gpus = 4
node_selector = { pool = \"a100\" }
";

pub struct World {
    pub server: Arc<KubeServer>,
    /// Holds the manifests, the store and the kubeconfig.
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    store: Store,
    clusters: Arc<Clusters>,
    stop: Arc<AtomicBool>,
    kubelet: Option<std::thread::JoinHandle<()>>,
    /// Where the pods the kubelet starts answer their metrics, once set.
    metrics: Arc<Mutex<Option<String>>>,
}

impl World {
    /// A server, the fixture's manifests and a folder store.
    pub fn new() -> World {
        let server = Arc::new(KubeServer::start());
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = dir.path().join("repo");
        let ws = root.join(TEAM);
        std::fs::create_dir_all(ws.join("model")).unwrap();
        let write = |name: &str, text: &str| std::fs::write(ws.join(name), text).unwrap();
        write(
            "workspace.toml",
            &format!(
                "[workspace]\nstore = \"s3://cairn-test/{TEAM}\"\nregion = \"us-east-1\"\nnamespace = \"{TEAM_NS}\"\n"
            ),
        );
        write("compute.toml", COMPUTE);
        write("model/weights.bin", "version 1\n");
        write(
            "serve.toml",
            "[model.scorer]\n\
             source = \"model/\"\n\
             format = \"custom\"\n\
             \n\
             [endpoint.api]\n\
             compute = \"compute.cluster\"\n\
             auth = \"none\"\n\
             \n\
             [endpoint.api.deployments.blue]\n\
             model = \"model.scorer\"\n\
             replicas = 1\n\
             instance_type = \"t4\"\n\
             gpus = 1\n\
             \n\
             [endpoint.api.traffic]\n\
             blue = 100\n\
             \n\
             [endpoint.api.rollout]\n\
             steps = [50, 100]\n\
             step_wait = \"5s\"\n\
             max_error_rate = 0.05\n",
        );
        let store_dir = dir.path().join("store");
        let store =
            Store::open(&format!("file://{}", store_dir.display()), &root).expect("a folder store");
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, "team-cluster");
        let clusters = Arc::new(
            Clusters::from_kubeconfig_path(&kubeconfig)
                .with_poll_interval(Duration::from_millis(20)),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Mutex::new(None));
        let kubelet = {
            let (server, stop, metrics) = (server.clone(), stop.clone(), metrics.clone());
            std::thread::spawn(move || kubelet(&server, &stop, &metrics))
        };
        let world = World {
            server,
            _dir: dir,
            root,
            store,
            clusters,
            stop,
            kubelet: Some(kubelet),
            metrics,
        };
        // The serving pool: the endpoint's revisions (one GPU each) fit here.
        world.node("t4-0", "t4", 2, &[]);
        world
    }

    /// Writes a file of the workspace (`None` removes it).
    pub fn write(&self, name: &str, text: Option<&str>) {
        let path = self.root.join(TEAM).join(name);
        match text {
            Some(text) => std::fs::write(path, text).unwrap(),
            None => std::fs::remove_file(path).unwrap(),
        }
    }

    /// The namespace, made by an administrator before Cairn comes (no Cairn labels).
    pub fn admin_made_namespace(&self) {
        self.server.create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TEAM_NS}}),
            "kubectl-create",
        );
    }

    /// From now on the pods the kubelet starts answer `/metrics` through the pod proxy
    /// as `cairn serve` would under steady traffic: every read counts 100 more
    /// successful requests.
    pub fn serve_metrics(&self) {
        *self.metrics.lock().unwrap() = Some(metrics_server());
    }

    /// A node of `pool` with `gpus` allocatable GPUs and these extra labels.
    pub fn node(&self, name: &str, pool: &str, gpus: u32, labels: &[(&str, &str)]) {
        let mut all = serde_json::Map::new();
        all.insert("pool".into(), json!(pool));
        for (k, v) in labels {
            all.insert(k.to_string(), json!(v));
        }
        self.server.create(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": all}}),
            "kubelet",
        );
        let allocatable =
            json!({"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": gpus.to_string()});
        self.server.set_status(
            "v1",
            "Node",
            None,
            name,
            json!({"allocatable": allocatable, "capacity": allocatable}),
        );
    }

    /// Someone else's pod bound to `node`, requesting `gpus`, in `phase`.
    pub fn pod_on(&self, name: &str, node: &str, gpus: u32, phase: &str) {
        let gpus = gpus.to_string();
        self.server.create(
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "nodeName": node,
                    "containers": [{
                        "name": "work", "image": "other:1",
                        "resources": {"requests": {"nvidia.com/gpu": gpus}, "limits": {"nvidia.com/gpu": gpus}},
                    }],
                },
            }),
            "kubelet",
        );
        self.server
            .set_status("v1", "Pod", Some("default"), name, json!({"phase": phase}));
    }

    /// Observes the cluster and plans, as `cairn plan` does.
    pub async fn plan(&self) -> Result<Plan, cairn::planner::Error> {
        plan_with(&self.root, TEAM, &self.store, &self.clusters).await
    }

    /// Plans, then applies that plan under the workspace's lock, as `cairn apply
    /// --auto-approve` does.
    pub async fn apply(&self) -> (Plan, ApplyReport) {
        let plan = match self.plan().await {
            Ok(plan) => plan,
            Err(e) => panic!("the plan failed: {}", plan_error(&e)),
        };
        let snapshot = load_folder(&self.root).expect("the fixture's manifests");
        let targets = self.targets();
        // The executor reads nothing observed: a fresh target is what `apply` has.
        let stores = BTreeMap::from([(TEAM.to_string(), self.store.clone())]);
        let cache = HashCache::in_memory();
        let applier = Applier {
            snapshot: &snapshot,
            stores: &stores,
            targets: &targets,
            cache: &cache,
            events: &Silent,
            options: ApplyOptions {
                parallelism: 4,
                lock_timeout: Duration::ZERO,
                lock_lease: Duration::from_secs(60),
                holder: "tester@test".into(),
                user: "tester".into(),
                command: "cairn apply".into(),
            },
        };
        let locks = applier.lock([TEAM]).await.expect("the lock");
        let report = applier.apply(&plan, locks).await.expect("the apply starts");
        (plan, report)
    }

    fn targets(&self) -> Targets {
        Targets::new().with(Box::new(KubeCompute::new(Some(self.clusters.clone()))))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(kubelet) = self.kubelet.take() {
            let _ = kubelet.join();
        }
    }
}

/// Observes the clusters for `workspace` of the manifests at `root` and plans it with
/// `store` as its store, as `cairn plan -w <workspace>` does.
pub async fn plan_with(
    root: &Path,
    workspace: &str,
    store: &Store,
    clusters: &Arc<Clusters>,
) -> Result<Plan, cairn::planner::Error> {
    let snapshot = load_folder(root).expect("the manifests");
    let desired = match cairn::desired::resolve(&snapshot) {
        Ok(resolved) => resolved.state,
        Err(diagnostics) => panic!("the manifests are invalid: {diagnostics:?}"),
    };
    let targets = Targets::new().with(Box::new(KubeCompute::new(Some(clusters.clone()))));
    if let Err(e) = targets.observe(&desired, &[workspace.to_string()]).await {
        panic!("observing failed: {e}");
    }
    let stores = BTreeMap::from([(workspace.to_string(), store.clone())]);
    let cache = HashCache::in_memory();
    Planner {
        snapshot: &snapshot,
        desired: &desired,
        stores: &stores,
        cache: &cache,
        events: &Silent,
        source: PlanSource {
            root: root.display().to_string(),
            rev: None,
            uncommitted: false,
        },
        targets: &targets,
        destroy: false,
    }
    .plan()
    .await
}

/// A folder store in `dir`.
pub fn folder_store(dir: &Path) -> Store {
    Store::open(&format!("file://{}", dir.display()), dir).expect("a folder store")
}

/// A blocked plan's diagnostics, or the error.
pub fn plan_error(e: &cairn::planner::Error) -> String {
    match e {
        cairn::planner::Error::Blocked(diagnostics) => diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// Each change of a report as `address status: message`.
pub fn outcomes(report: &ApplyReport) -> String {
    report
        .outcomes
        .iter()
        .map(|o| {
            format!(
                "{} {}: {}\n",
                o.address,
                o.status.as_str(),
                o.message.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

/// Answers every request with `cairn serve`'s request counter, 100 higher each time.
fn metrics_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut requests = 0u64;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 8192];
            let _ = stream.read(&mut head);
            requests += 100;
            let body = format!(
                "# TYPE cairn_requests_total counter\ncairn_requests_total{{code=\"200\"}} {requests}\n"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

/// Plays the nodes until stopped: a new Deployment generation becomes available, with
/// one Running pod per replica carrying its template's labels (answering metrics at
/// `metrics`, when set).
fn kubelet(server: &KubeServer, stop: &AtomicBool, metrics: &Mutex<Option<String>>) {
    while !stop.load(Ordering::SeqCst) {
        for object in server.objects() {
            if object["kind"] != "Deployment"
                || object["status"]["observedGeneration"] == object["metadata"]["generation"]
            {
                continue;
            }
            let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
            let name = object["metadata"]["name"].as_str().unwrap_or("");
            let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
            for i in 0..replicas {
                let pod = format!("{name}-{i}");
                if server.object("v1", "Pod", Some(ns), &pod).is_some() {
                    continue;
                }
                server.create(
                    json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {
                            "name": pod, "namespace": ns,
                            "labels": object["spec"]["template"]["metadata"]["labels"],
                        },
                        "spec": {"containers": [{"name": "server", "image": "serve:1"}]},
                    }),
                    "kubelet",
                );
                server.set_status("v1", "Pod", Some(ns), &pod, json!({"phase": "Running"}));
                if let Some(address) = metrics.lock().unwrap().as_deref() {
                    server.pod_address(ns, &pod, 8080, address);
                }
            }
            server.deployment_available(ns, name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

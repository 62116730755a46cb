//! Tests of the local traffic router (`cairn::backend::local::router`), over real HTTP on
//! loopback, in front of real model servers (`cairn::workload::model_server`, in-process on port 0)
//! serving a model trained for the test. The `x-cairn-deployment` response header says
//! which deployment answered; each server's own `/metrics` says how many predictions it
//! served.
//!
//! - `split`: weights, replicas, the pin header, the mirror, what passes through.
//! - `shift`: weights changed (and a whole rollout run by the engine) under load.
//! - `capture`: request bodies captured for input-drift monitoring, never the key.
//! - `failures`: dead replicas, readiness, bind errors, limits.
//! - `load`: requests/s and p99 through the router and direct, with `wrk` (ignored: run
//!   by hand).

mod capture;
mod failures;
mod load;
mod shift;
mod split;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::backend::local::router::{self, Handle, Mirror, RouterOptions, Routes};
use cairn::rollout::Weights;
use cairn::workload::model_server::{self, ServeOptions};
use cairn::workload::{train, TrainOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// A prediction body the trained model accepts.
pub const BODY: &str = r#"{"rows": [{"age": 41, "income": 52000, "utilization": 0.3}]}"#;

/// Trains a small model on generated data; returns the folder holding it (and the
/// temporary folder that owns it).
fn trained() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("age,income,utilization,label\n");
    let mut x = 7u64;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..100 {
        let (age, income, utilization) = (20.0 + 50.0 * next(), 20e3 + 80e3 * next(), next());
        let label = u8::from(utilization + next() > 1.0);
        csv.push_str(&format!("{age:.1},{income:.0},{utilization:.3},{label}\n"));
    }
    let data = tmp.path().join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let dir = tmp.path().join("model");
    train(&TrainOptions {
        data,
        out: dir.clone(),
        ..TrainOptions::default()
    })
    .unwrap();
    (tmp, dir)
}

/// One model server.
pub struct Backend {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<model_server::Result<()>>>,
}

/// Model servers (deployment → replicas) and a router in front, on one runtime.
pub struct Rig {
    pub runtime: tokio::runtime::Runtime,
    _model: tempfile::TempDir,
    pub backends: BTreeMap<String, Vec<Backend>>,
    pub router: Option<RunningRouter>,
}

pub struct RunningRouter {
    pub addr: SocketAddr,
    pub handle: Handle,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<router::Result<()>>,
}

impl Rig {
    /// Starts `replicas` model servers for each deployment and waits until they are ready.
    pub fn new(layout: &[(&str, usize)]) -> Rig {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let (tmp, dir) = trained();
        let mut backends: BTreeMap<String, Vec<Backend>> = BTreeMap::new();
        for (name, replicas) in layout {
            let servers = (0..*replicas)
                .map(|_| {
                    let options = ServeOptions::new(&dir, "127.0.0.1:0".parse().unwrap(), *name);
                    let server = runtime.block_on(model_server::bind(options)).unwrap();
                    let addr = server.local_addr();
                    let (shutdown, signal) = oneshot::channel::<()>();
                    let task = runtime.spawn(server.run(async {
                        let _ = signal.await;
                    }));
                    Backend {
                        addr,
                        shutdown: Some(shutdown),
                        task: Some(task),
                    }
                })
                .collect();
            backends.insert(name.to_string(), servers);
        }
        for backend in backends.values().flatten() {
            wait_ready(backend.addr);
        }
        Rig {
            runtime,
            _model: tmp,
            backends,
            router: None,
        }
    }

    /// Routes to every replica of every deployment, by these weights.
    pub fn routes(&self, weights: &[(&str, u32)]) -> Routes {
        Routes {
            deployments: self
                .backends
                .iter()
                .map(|(name, servers)| (name.clone(), servers.iter().map(|s| s.addr).collect()))
                .collect(),
            weights: weights_of(weights),
            mirror: None,
            key_sha256: None,
            health: BTreeMap::new(),
            capture: None,
            counter_keys: BTreeMap::new(),
        }
    }

    /// Starts the router with `routes` and the default options (short probe timeout).
    pub fn start_router(&mut self, routes: Routes) -> SocketAddr {
        let mut options = RouterOptions::new("127.0.0.1:0".parse().unwrap(), routes);
        options.probe_timeout = Duration::from_millis(300);
        self.start_router_with(options)
    }

    pub fn start_router_with(&mut self, options: RouterOptions) -> SocketAddr {
        let bound = self.runtime.block_on(router::bind(options)).unwrap();
        let addr = bound.local_addr();
        let handle = bound.handle();
        assert_eq!(handle.local_addr(), addr);
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = self.runtime.spawn(bound.run(async {
            let _ = signal.await;
        }));
        self.router = Some(RunningRouter {
            addr,
            handle,
            shutdown: Some(shutdown),
            task,
        });
        addr
    }

    pub fn handle(&self) -> &Handle {
        &self.router.as_ref().expect("a router is running").handle
    }

    /// Shuts one model server down and waits until it stopped.
    pub fn stop_backend(&mut self, deployment: &str, replica: usize) {
        let backend = &mut self.backends.get_mut(deployment).unwrap()[replica];
        if let Some(shutdown) = backend.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = backend.task.take() {
            self.runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
                .expect("the server stops within 10 s")
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    /// Shuts the router down and returns what `run` returned.
    pub fn stop_router(&mut self) -> router::Result<()> {
        let mut running = self.router.take().expect("a router is running");
        if let Some(shutdown) = running.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), running.task).await })
            .expect("the router stops within 10 s")
            .expect("the router task does not panic")
    }

    /// Prediction requests the replicas of a deployment answered, from their `/metrics`.
    pub fn served(&self, deployment: &str) -> Vec<u64> {
        self.backends[deployment]
            .iter()
            .map(|b| predictions_served(b.addr))
            .collect()
    }
}

pub fn weights_of(pairs: &[(&str, u32)]) -> Weights {
    pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

pub fn mirror(deployment: &str, percent: u32) -> Option<Mirror> {
    Some(Mirror {
        deployment: deployment.to_string(),
        percent,
    })
}

/// A blocking HTTP client that returns error statuses as replies.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// A response: status, the deployment header, the body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub deployment: Option<String>,
    pub body: String,
}

impl Reply {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn reply(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply, ureq::Error> {
    let mut response = response?;
    let deployment = response
        .headers()
        .get("x-cairn-deployment")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    Ok(Reply {
        status: response.status().as_u16(),
        deployment,
        body: response.body_mut().read_to_string()?,
    })
}

/// `POST /v1/predict` with [`BODY`], pinned to a deployment or not.
pub fn try_predict(
    agent: &ureq::Agent,
    addr: SocketAddr,
    pin: Option<&str>,
) -> Result<Reply, ureq::Error> {
    let mut request = agent
        .post(format!("http://{addr}/v1/predict"))
        .header("content-type", "application/json");
    if let Some(pin) = pin {
        request = request.header("x-cairn-deployment", pin);
    }
    reply(request.send(BODY))
}

#[track_caller]
pub fn predict(agent: &ureq::Agent, addr: SocketAddr, pin: Option<&str>) -> Reply {
    try_predict(agent, addr, pin).unwrap_or_else(|e| panic!("POST /v1/predict: {e}"))
}

#[track_caller]
pub fn get(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> Reply {
    reply(agent.get(format!("http://{addr}{path}")).call())
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Sends `n` predictions; returns how many each deployment answered (all must be 200).
#[track_caller]
pub fn split(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let agent = agent();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = predict(&agent, addr, None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        *counts.entry(reply.deployment.unwrap()).or_insert(0) += 1;
    }
    counts
}

/// Polls `/healthz` until it answers 200 (panics after 10 s).
#[track_caller]
pub fn wait_ready(addr: SocketAddr) {
    let agent = agent();
    let started = Instant::now();
    loop {
        if let Ok(reply) = reply(agent.get(format!("http://{addr}/healthz")).call()) {
            if reply.status == 200 {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{addr} not ready after 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Prediction requests a model server answered (any status), from its `/metrics`.
#[track_caller]
pub fn predictions_served(addr: SocketAddr) -> u64 {
    let text = get(&agent(), addr, "/metrics").body;
    text.lines()
        .filter(|l| l.starts_with("cairn_requests_total{"))
        .map(|l| {
            let value = l.rsplit(' ').next().unwrap();
            value.parse::<f64>().unwrap() as u64
        })
        .sum()
}

/// Asserts `n` is within `tolerance` (a fraction of `total`) of `expected`.
#[track_caller]
pub fn assert_near(n: usize, expected: usize, total: usize, tolerance: f64) {
    let off = n.abs_diff(expected) as f64 / total as f64;
    assert!(
        off <= tolerance,
        "{n} is {:.1} % of {total} away from {expected}",
        off * 100.0
    );
}

/// An address that accepts connections and never answers on them.
pub struct BlackHole {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => held.push(stream),
                    Err(_) => return,
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        BlackHole { addr, accepted }
    }

    /// Connections accepted so far (each is held open).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// The error body the router answers with: `{"error": ..., ...}`.
#[track_caller]
pub fn router_error(reply: &Reply) -> Value {
    let body = reply.json();
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(
        reply.deployment, None,
        "the router's own errors name no deployment"
    );
    body
}

/// `json!` of a list of names.
pub fn names(names: &[&str]) -> Value {
    json!(names)
}

//! Serving pods and a gateway, for rollouts: nothing in the test API server runs
//! containers, so the kubelet starts one small HTTP server per pod of a Deployment
//! (`POST /v1/predict`, and `/metrics` in `cairn serve`'s Prometheus text), creates its
//! Pod object (labels from the pod template, phase `Running`) and tells the API server
//! where the pod's port answers, for the pod proxy Cairn's gates read `/metrics`
//! through. A gateway thread plays the Gateway API implementation (or kube-proxy): it
//! reads the live HTTPRoute's weights (or the endpoint Service's selector) and sends
//! prediction requests to the pods accordingly, over real HTTP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::kube_server::KubeServer;

/// One pod's counters.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// A running pod: where it answers and the labels it carries.
#[derive(Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub address: String,
}

/// The pods the kubelet started, on one tokio runtime.
pub struct Pods {
    runtime: tokio::runtime::Runtime,
    pods: Mutex<Vec<Pod>>,
    /// Pods started while this is set answer every prediction with a 500.
    pub broken: AtomicBool,
}

impl Pods {
    pub fn new() -> Pods {
        Pods {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            pods: Mutex::new(Vec::new()),
            broken: AtomicBool::new(false),
        }
    }

    pub fn all(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().clone()
    }

    /// Starts the pods of a Deployment (one per replica) and registers them.
    pub fn start(&self, server: &KubeServer, deployment: &Value) {
        let ns = deployment["metadata"]["namespace"].as_str().unwrap();
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
        let template = &deployment["spec"]["template"];
        let labels: BTreeMap<String, String> =
            serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
        let port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
            .as_u64()
            .expect("the serving container declares its port") as u16;
        for i in 0..replicas {
            let pod_name = format!("{name}-{i}");
            if self
                .pods
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.name == pod_name && p.namespace == ns)
            {
                continue;
            }
            let broken = self.broken.load(Ordering::SeqCst);
            let address = self.serve(broken);
            server.create(
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": ns, "labels": labels},
                    "spec": template["spec"].clone(),
                }),
                "kubelet",
            );
            server.set_status(
                "v1",
                "Pod",
                Some(ns),
                &pod_name,
                json!({"phase": "Running", "podIP": "10.0.0.1"}),
            );
            server.pod_address(ns, &pod_name, port, &address);
            self.pods.lock().unwrap().push(Pod {
                namespace: ns.to_string(),
                name: pod_name,
                labels: labels.clone(),
                address,
            });
        }
    }

    /// Starts one pod's HTTP server; returns `http://127.0.0.1:PORT`.
    fn serve(&self, broken: bool) -> String {
        use axum::routing::{get, post};
        let counters = Arc::new(Counters::default());
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let predict = {
            let counters = counters.clone();
            move || async move {
                if broken {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "model failed",
                    )
                } else {
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                    (axum::http::StatusCode::OK, "{\"score\": 0.5}")
                }
            }
        };
        let metrics = move || async move {
            let ok = counters.ok.load(Ordering::Relaxed);
            let failed = counters.failed.load(Ordering::Relaxed);
            let all = ok + failed;
            format!(
                "# TYPE cairn_requests_total counter\n\
                 cairn_requests_total{{code=\"200\"}} {ok}\n\
                 cairn_requests_total{{code=\"400\"}} 0\n\
                 cairn_requests_total{{code=\"500\"}} {failed}\n\
                 # TYPE cairn_request_errors_total counter\n\
                 cairn_request_errors_total {failed}\n\
                 # TYPE cairn_request_duration_seconds histogram\n\
                 cairn_request_duration_seconds_bucket{{le=\"0.005\"}} {all}\n\
                 cairn_request_duration_seconds_bucket{{le=\"0.05\"}} {all}\n\
                 cairn_request_duration_seconds_bucket{{le=\"+Inf\"}} {all}\n\
                 cairn_request_duration_seconds_sum {}\n\
                 cairn_request_duration_seconds_count {all}\n",
                all as f64 * 0.001
            )
        };
        let app = axum::Router::new()
            .route("/v1/predict", post(predict))
            .route("/metrics", get(metrics));
        self.runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        address
    }
}

/// What the gateway saw: each distinct split it sent traffic by, in order, and the
/// answers by status.
#[derive(Default)]
pub struct Seen {
    pub splits: Vec<BTreeMap<String, u32>>,
    pub answers: BTreeMap<u16, u64>,
}

/// Sends prediction requests to the endpoint `endpoint` in `namespace` as the live
/// HTTPRoute (or, without one, the endpoint Service's selector) says, until `stop`.
/// Splits are keyed by the backend Service (or, for a selector, the revision label).
pub fn gateway(
    server: &KubeServer,
    pods: &Pods,
    namespace: &str,
    endpoint: &str,
    stop: &AtomicBool,
    seen: &Mutex<Seen>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        // Backend → (weight, pods), from the live objects.
        let objects = server.objects();
        let find = |kind: &str, name: &str| {
            objects.iter().find(|o| {
                o["kind"] == kind
                    && o["metadata"]["namespace"] == namespace
                    && o["metadata"]["name"] == name
            })
        };
        let selects = |selector: &Value, pod: &crate::pods::Pod| {
            selector.as_object().is_some_and(|s| {
                s.iter()
                    .all(|(k, v)| pod.labels.get(k).map(String::as_str) == v.as_str())
            })
        };
        let all_pods = pods.all();
        let mut backends: Vec<(String, u32, Vec<String>)> = Vec::new();
        if let Some(route) = find("HTTPRoute", endpoint) {
            for r in route["spec"]["rules"][0]["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let name = r["name"].as_str().unwrap_or("").to_string();
                let weight = r["weight"].as_u64().unwrap_or(1) as u32;
                let addresses = find("Service", &name)
                    .map(|s| {
                        all_pods
                            .iter()
                            .filter(|p| {
                                p.namespace == namespace && selects(&s["spec"]["selector"], p)
                            })
                            .map(|p| p.address.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                backends.push((name, weight, addresses));
            }
        } else if let Some(service) = find("Service", endpoint) {
            let selector = &service["spec"]["selector"];
            let revision = selector["cairn.dev/deployment-revision"]
                .as_str()
                .unwrap_or("all")
                .to_string();
            let addresses = all_pods
                .iter()
                .filter(|p| p.namespace == namespace && selects(selector, p))
                .map(|p| p.address.clone())
                .collect();
            backends.push((revision, 100, addresses));
        }
        let split: BTreeMap<String, u32> = backends
            .iter()
            .filter(|(_, w, _)| *w > 0)
            .map(|(n, w, _)| (n.clone(), *w))
            .collect();
        {
            let mut seen = seen.lock().unwrap();
            if !split.is_empty() && seen.splits.last() != Some(&split) {
                seen.splits.push(split);
            }
        }
        let total: u32 = backends.iter().map(|(_, w, _)| w).sum();
        if total == 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // A batch of requests by weighted round robin over 100 slots, then read again.
        for _ in 0..20 {
            let slot = (sent % u64::from(total)) as u32;
            sent += 1;
            let mut upto = 0;
            let Some((_, _, addresses)) = backends.iter().find(|(_, w, _)| {
                upto += w;
                slot < upto
            }) else {
                continue;
            };
            if addresses.is_empty() {
                continue;
            }
            let address = &addresses[(sent as usize / 100) % addresses.len()];
            let status = agent
                .post(&format!("{address}/v1/predict"))
                .send("{\"instances\": [[0.1]]}")
                .map(|r| r.status().as_u16())
                .unwrap_or(599);
            *seen.lock().unwrap().answers.entry(status).or_default() += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

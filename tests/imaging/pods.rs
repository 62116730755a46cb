//! Serving pods and a gateway, for rollouts: nothing in the test API server runs
//! containers, so the kubelet starts one small HTTP server per pod of a Deployment
//! (`POST /v1/predict`, and `/metrics` in `cairn serve`'s Prometheus text and the
//! example's `onnx-server`'s, `onnx_server_requests_total{status}` and
//! `onnx_server_request_duration_seconds`), named as a ReplicaSet names pods, creates its
//! Pod object (labels from the pod template, phase `Running`) and tells the API server
//! where the pod's port answers, for the pod proxy Cairn's gates read `/metrics`
//! through. A pod whose template has Cairn's `proxy` container gets its pod proxy too
//! (the library code `cairn pod-proxy` runs, reading the key from the endpoint's Secret
//! as the mounted volume would, and uploading captured requests to the store its
//! variables name): the pod's address is then the proxy's, and the pod proxy reaches
//! `/metrics` through it too. A gateway thread plays the Gateway API implementation (or kube-proxy): it
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
    /// The Secret volumes the pods mounted (the key files of their pod proxies).
    volumes: tempfile::TempDir,
    /// The store's access key and secret, for pod proxies that upload captures.
    pub store_credentials: Mutex<Option<(String, String)>>,
}

/// How often a pod proxy started here uploads what it captured.
pub const CAPTURE_FLUSH: Duration = Duration::from_millis(200);

/// An endpoint's key as a client gets it: `data.key` of its Secret `<endpoint>-key`.
pub fn endpoint_key(server: &KubeServer, namespace: &str, endpoint: &str) -> Option<String> {
    use base64::Engine as _;
    let secret = server.object("v1", "Secret", Some(namespace), &format!("{endpoint}-key"))?;
    let data = secret["data"]["key"].as_str()?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    Some(String::from_utf8(key).unwrap())
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
            volumes: tempfile::tempdir().unwrap(),
            store_credentials: Mutex::new(None),
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
            // As a ReplicaSet names them: `<deployment>-<pod-template-hash>-<5 chars>`.
            let pod_name = format!("{name}-7c9d5f8b4-p{i:04}");
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
            let server_address = self.serve(broken);
            // With an `auth` container the pod's `http` port is Cairn's auth proxy, in
            // front of the server (the gates read the server's port directly).
            let address = match proxy_container(template) {
                Some(proxy) => self.pod_proxy(
                    server,
                    ns,
                    &pod_name,
                    template,
                    proxy,
                    port,
                    &server_address,
                ),
                None => server_address.clone(),
            };
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
            server.pod_address(ns, &pod_name, port, &server_address);
            // The gates read `/metrics` through the auth proxy's port when there is one.
            if let Some(proxy) = proxy_container(template) {
                let proxy_port = proxy["ports"][0]["containerPort"].as_u64().unwrap() as u16;
                server.pod_address(ns, &pod_name, proxy_port, &address);
            }
            self.pods.lock().unwrap().push(Pod {
                namespace: ns.to_string(),
                name: pod_name,
                labels: labels.clone(),
                address,
            });
        }
    }

    /// Starts the pod's `cairn pod-proxy` as its container says (its `--upstream` must be
    /// the server's port; with `--key-file`, the mounted key Secret; with
    /// `--capture-every`, the store in its `CAIRN_STORE*` variables, reached with
    /// [`Pods::store_credentials`]), with the library code the binary runs, on this
    /// machine's loopback; returns its address. Its captures are uploaded every
    /// [`CAPTURE_FLUSH`] (the binary's default is longer).
    #[allow(clippy::too_many_arguments)]
    fn pod_proxy(
        &self,
        server: &KubeServer,
        namespace: &str,
        pod: &str,
        template: &Value,
        proxy: &Value,
        server_port: u16,
        server_address: &str,
    ) -> String {
        use cairn::workload::pod_proxy::{PodProxy, PodProxyOptions, ProxyCapture};
        let command: Vec<&str> = proxy["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&command[..2], ["cairn", "pod-proxy"], "{proxy}");
        let arg = |name: &str| {
            let at = command.iter().position(|a| *a == name)?;
            Some(command[at + 1].to_string())
        };
        assert_eq!(
            arg("--upstream"),
            Some(format!("127.0.0.1:{server_port}")),
            "the proxy passes requests to the server"
        );
        let key_file = arg("--key-file").map(|key_file| {
            let mount = proxy["volumeMounts"][0]["mountPath"].as_str().unwrap();
            let volume = proxy["volumeMounts"][0]["name"].as_str().unwrap();
            assert_eq!(key_file, format!("{mount}/key"));
            let secret = template["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume)
                .unwrap()["secret"]["secretName"]
                .as_str()
                .unwrap();
            let endpoint = secret.strip_suffix("-key").unwrap();
            // The kubelet mounts the Secret: without its key the container can't start.
            let key = endpoint_key(server, namespace, endpoint)
                .unwrap_or_else(|| panic!("pod {pod}: the Secret {namespace}/{secret} has no key"));
            let file = self.volumes.path().join(format!("{namespace}-{pod}.key"));
            std::fs::write(&file, key).unwrap();
            file
        });
        let capture = arg("--capture-every").map(|every| {
            let endpoint = arg("--capture-endpoint").expect("--capture-endpoint");
            let env = |name: &str| {
                proxy["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"] == name)
                    .and_then(|e| e["value"].as_str())
                    .map(str::to_string)
            };
            let url = env("CAIRN_STORE").expect("the proxy is given the store");
            let options = cairn::backend::store::StoreOptions {
                endpoint: env("CAIRN_STORE_ENDPOINT"),
                region: env("CAIRN_STORE_REGION"),
                path_style: env("CAIRN_STORE_PATH_STYLE").map(|p| p == "true"),
                ..Default::default()
            };
            let (access, secret) = self
                .store_credentials
                .lock()
                .unwrap()
                .clone()
                .expect("the test world gives the pods the store's credentials");
            let objects = cairn::backend::store::S3Store::new(&url, &options)
                .unwrap()
                .with_credentials(&access, &secret, None);
            let store = cairn::backend::store::Store::new(Arc::new(objects));
            let upload = cairn::backend::store::CaptureUpload {
                endpoint,
                source: pod.to_string(),
                max_bytes: arg("--capture-max-bytes").unwrap().parse().unwrap(),
                flush: CAPTURE_FLUSH,
            };
            let (queue, received) = tokio::sync::mpsc::channel(1024);
            self.runtime.spawn(cairn::backend::store::upload_captures(
                store,
                upload,
                received,
                |e| panic!("uploading captures: {}", cairn::diagnostics::error_chain(e)),
            ));
            ProxyCapture {
                every: every.parse().unwrap(),
                deployment: arg("--capture-deployment").expect("--capture-deployment"),
                queue,
            }
        });
        let options = PodProxyOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: server_address
                .trim_start_matches("http://")
                .parse()
                .unwrap(),
            key_file,
            capture,
        };
        let proxy = self.runtime.block_on(PodProxy::bind(&options)).unwrap();
        let address = format!("http://{}", proxy.local_addr());
        self.runtime.spawn(proxy.run(std::future::pending()));
        address
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
                 cairn_request_duration_seconds_count {all}\n\
                 # TYPE onnx_server_requests_total counter\n\
                 onnx_server_requests_total{{status=\"200\"}} {ok}\n\
                 onnx_server_requests_total{{status=\"500\"}} {failed}\n\
                 # TYPE onnx_server_request_duration_seconds histogram\n\
                 onnx_server_request_duration_seconds_bucket{{le=\"0.005\"}} {all}\n\
                 onnx_server_request_duration_seconds_bucket{{le=\"0.05\"}} {all}\n\
                 onnx_server_request_duration_seconds_bucket{{le=\"+Inf\"}} {all}\n\
                 onnx_server_request_duration_seconds_sum {}\n\
                 onnx_server_request_duration_seconds_count {all}\n",
                all as f64 * 0.001,
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

/// The pod's `proxy` container (`cairn pod-proxy`), when its endpoint authenticates or
/// captures requests.
fn proxy_container(template: &Value) -> Option<&Value> {
    template["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "proxy")
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
    let mut key = None;
    while !stop.load(Ordering::SeqCst) {
        if key.is_none() {
            key = endpoint_key(server, namespace, endpoint);
        }
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
            // A client of an endpoint that authenticates sends its key.
            let mut request = agent.post(&format!("{address}/v1/predict"));
            if let Some(key) = &key {
                request = request.header("Authorization", &format!("Bearer {key}"));
            }
            let status = request
                .send("{\"instances\": [[0.1]]}")
                .map(|r| r.status().as_u16())
                .unwrap_or(599);
            *seen.lock().unwrap().answers.entry(status).or_default() += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

//! The Kubernetes target at scale, against the in-memory test API server
//! (`tests/support/kube_server/`) through a kubeconfig, as `cairn` would talk to a
//! cluster (`cargo bench --bench kube`; in a debug build: `cargo test --bench kube`).
//!
//! For N endpoints (250 and 1,000 by default; `CAIRN_BENCH_ENDPOINTS=100,400` to
//! choose), each four objects shaped as the shipped templates render them (a
//! Deployment, its revision's Service, the endpoint's Service, an HTTPRoute), plus
//! their Namespace:
//!
//! 1. first apply (everything created),
//! 2. plan with nothing changed: observe by labels, then diff every object,
//! 3. apply again with nothing changed (every object read, none written).
//!
//! Prints, for each phase, the median over `CAIRN_BENCH_REPEAT` runs (3; a fresh
//! server each): wall time, objects per second, requests made, the most requests the
//! server handled at once (the client keeps at most 16 in flight), and the ratio of the
//! largest N's times to the smallest's, which should be about the ratio of the Ns
//! (linear).

#[macro_use]
mod support;

#[path = "../../tests/support/kube_server/mod.rs"]
#[allow(unused_imports)]
mod kube_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn::backend::kubernetes::{diff, ApplyOptions, Clusters, KubeObject, Outcome, Scope};
use serde_json::{json, Value};

const WS: &str = "bench";
const NS: &str = "bench-serve";

fn meta(name: &str, namespace: Option<&str>, endpoint: &str, extra: Value) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/managed-by": "cairn",
        "cairn.dev/workspace": WS,
        "app.kubernetes.io/name": endpoint,
        "cairn.dev/endpoint": endpoint,
    });
    if let (Some(l), Some(e)) = (labels.as_object_mut(), extra.as_object()) {
        l.extend(e.clone());
    }
    let mut m = json!({
        "name": name,
        "labels": labels,
        "annotations": {
            "cairn.dev/address": format!("{WS}/endpoint.{endpoint}"),
            "cairn.dev/spec-hash": format!("{:016x}", name.len() * 7919),
            "cairn.dev/revision": "0123456789abcdef0123456789abcdef01234567",
        },
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn object(value: Value) -> KubeObject {
    KubeObject {
        api_version: value["apiVersion"].as_str().unwrap().to_string(),
        kind: value["kind"].as_str().unwrap().to_string(),
        namespace: value["metadata"]["namespace"].as_str().map(str::to_string),
        name: value["metadata"]["name"].as_str().unwrap().to_string(),
        context: None,
        value,
    }
}

/// The Namespace and four objects per endpoint, in apply order.
fn objects(endpoints: usize) -> Vec<KubeObject> {
    let mut namespace = vec![object(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": meta(NS, None, "none", json!({})),
    }))];
    let (mut deployments, mut services, mut routes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..endpoints {
        let endpoint = format!("ep-{i:04}");
        let revision = format!("{endpoint}-blue-9f3c2a1b7d4e");
        let selector = json!({"cairn.dev/endpoint": endpoint, "cairn.dev/deployment": "blue",
                              "cairn.dev/deployment-revision": "9f3c2a1b7d4e"});
        deployments.push(object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(&revision, Some(NS), &endpoint, json!({"cairn.dev/deployment": "blue"})),
            "spec": {
                "replicas": 2,
                "revisionHistoryLimit": 2,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": selector},
                    "spec": {
                        "serviceAccountName": "cairn-bench",
                        "initContainers": [{
                            "name": "fetch-model", "image": "ghcr.io/cairn-dev/cairn:0.1.0",
                            "command": ["cairn", "fetch", format!("model.m@9f3c2a1b7d4e"), "--to", "/cairn/model"],
                            "env": [{"name": "CAIRN_STORE", "value": "s3://bench/store"}],
                            "envFrom": [{"secretRef": {"name": "cairn-store", "optional": true}}],
                            "volumeMounts": [{"name": "model", "mountPath": "/cairn/model"}],
                        }],
                        "containers": [{
                            "name": "server", "image": "registry.example/serve:1",
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "env": [{"name": "CAIRN_DEPLOYMENT", "value": "blue"}],
                            "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                          "limits": {"cpu": "2", "memory": "2Gi"}},
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3},
                            "volumeMounts": [{"name": "model", "mountPath": "/cairn/model", "readOnly": true}],
                        }],
                        "volumes": [{"name": "model", "emptyDir": {}}],
                    },
                },
            },
        })));
        for (name, selector) in [
            (revision.clone(), selector.clone()),
            (endpoint.clone(), json!({"cairn.dev/endpoint": endpoint})),
        ] {
            services.push(object(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": meta(&name, Some(NS), &endpoint, json!({})),
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
                },
            })));
        }
        routes.push(object(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": meta(&endpoint, Some(NS), &endpoint, json!({})),
            "spec": {
                "parentRefs": [{"name": "gw", "namespace": "gateways"}],
                "rules": [{"backendRefs": [{"name": revision, "port": 8080, "weight": 100}]}],
            },
        })));
    }
    namespace.extend(deployments);
    namespace.extend(services);
    namespace.extend(routes);
    namespace
}

struct Phase {
    time: Duration,
    requests: usize,
    writes: usize,
    max_in_flight: usize,
}

struct Run {
    objects: usize,
    /// Of the plan: the time spent diffing (the rest is observing).
    diff: Duration,
    create: Phase,
    plan: Phase,
    reapply: Phase,
}

async fn measure<F: std::future::Future<Output = ()>>(
    server: &kube_server::KubeServer,
    f: F,
) -> Phase {
    server.clear_requests();
    server.reset_max_in_flight();
    let start = Instant::now();
    f.await;
    let time = start.elapsed();
    Phase {
        time,
        requests: server.requests().len(),
        writes: server.writes(),
        max_in_flight: server.max_in_flight(),
    }
}

async fn run(endpoints: usize) -> Run {
    let server = kube_server::KubeServer::start();
    let clusters = Clusters::from_kubeconfig_path(server.kubeconfig_path());
    let desired = objects(endpoints);
    clusters.client(None).await.expect("a client");

    let create = measure(&server, async {
        let applied = clusters
            .apply(&desired, &ApplyOptions::default())
            .await
            .unwrap();
        assert!(applied
            .iter()
            .all(|a| matches!(a.outcome, Outcome::Created)));
    })
    .await;

    let scopes = [Scope {
        context: None,
        namespace: NS.to_string(),
    }];
    let mut diff_time = Duration::ZERO;
    let plan = measure(&server, async {
        let live = clusters
            .observe_desired(WS, &scopes, &desired)
            .await
            .unwrap();
        assert_eq!(live.len(), desired.len());
        let start = Instant::now();
        let by_key: HashMap<_, _> = live.iter().map(|o| (o.key.clone(), &o.value)).collect();
        let changed = desired
            .iter()
            .filter(|o| !diff(o, by_key[&o.key()]).is_empty())
            .count();
        assert_eq!(changed, 0, "nothing changed");
        diff_time = start.elapsed();
    })
    .await;

    let reapply = measure(&server, async {
        let applied = clusters
            .apply(&desired, &ApplyOptions::default())
            .await
            .unwrap();
        assert!(applied
            .iter()
            .all(|a| matches!(a.outcome, Outcome::Unchanged)));
    })
    .await;
    assert_eq!(reapply.writes, 0);

    Run {
        objects: desired.len(),
        diff: diff_time,
        create,
        plan,
        reapply,
    }
}

/// The run whose time for `phase` is the median of `runs`.
fn median(runs: &[Run], phase: fn(&Run) -> &Phase) -> &Phase {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by_key(|r| phase(r).time);
    phase(sorted[sorted.len() / 2])
}

fn main() {
    let repeat: usize = std::env::var("CAIRN_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(if support::smoke() { 1 } else { 3 });
    let sizes: Vec<usize> = std::env::var("CAIRN_BENCH_ENDPOINTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| {
            if support::smoke() {
                vec![3, 6]
            } else {
                vec![250, 1000]
            }
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    figure!(
        "{:>9} {:>7}  {:<22} {:>9} {:>10} {:>9} {:>7} {:>10}",
        "endpoints",
        "objects",
        "phase",
        "time",
        "objects/s",
        "requests",
        "writes",
        "in flight"
    );
    let mut medians = Vec::new();
    for &n in &sizes {
        let runs: Vec<Run> = (0..repeat).map(|_| runtime.block_on(run(n))).collect();
        let objects = runs[0].objects;
        let (create, plan, reapply) = (
            median(&runs, |r| &r.create),
            median(&runs, |r| &r.plan),
            median(&runs, |r| &r.reapply),
        );
        for (name, phase) in [
            ("first apply (create)", create),
            ("plan, nothing changed", plan),
            ("apply, nothing changed", reapply),
        ] {
            figure!(
                "{:>9} {:>7}  {:<22} {:>8.3}s {:>10.0} {:>9} {:>7} {:>10}",
                n,
                objects,
                name,
                phase.time.as_secs_f64(),
                objects as f64 / phase.time.as_secs_f64(),
                phase.requests,
                phase.writes,
                phase.max_in_flight,
            );
        }
        let mut diffs: Vec<Duration> = runs.iter().map(|r| r.diff).collect();
        diffs.sort();
        figure!(
            "{:>9} {:>7}  {:<22} {:>8.3}s {:>10.0}",
            n,
            objects,
            "  of which diff",
            diffs[diffs.len() / 2].as_secs_f64(),
            objects as f64 / diffs[diffs.len() / 2].as_secs_f64(),
        );
        medians.push((n, [create.time, plan.time, reapply.time]));
    }
    figure!("(median of {repeat} runs each)");
    if let (Some((small_n, small)), Some((large_n, large))) = (medians.first(), medians.last()) {
        if large_n > small_n {
            let ratio = |i: usize| large[i].as_secs_f64() / small[i].as_secs_f64();
            figure!(
                "time ratio {large_n}/{small_n} endpoints (linear = {:.1}): create {:.2}, plan {:.2}, re-apply {:.2}",
                *large_n as f64 / *small_n as f64,
                ratio(0),
                ratio(1),
                ratio(2),
            );
        }
    }
    support::finish();
}

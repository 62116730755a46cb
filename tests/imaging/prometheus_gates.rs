//! The example's rollout on Kubernetes with its gates on Prometheus, as the example
//! declares them (`[endpoint.triage.rollout.metrics]`: the `onnx-server` image's own
//! metric names, by the example's queries): a real Prometheus (Debian's package,
//! started here) discovers the serving pods from a file the test keeps up to date, with
//! the `namespace` and `pod` labels Kubernetes discovery attaches, and scrapes them
//! every second. Cairn never reads a pod through the API server's proxy. A good version
//! is promoted step by step; a version whose pods answer 500 is rolled back by the
//! error-rate gate, with traffic back on the serving revision.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::prometheus::Prometheus;
use super::rollout::{
    apply_under_traffic, deployments, quick_rollout, retrain, weights_of_route, Gates,
};
use super::{kubelet_log, with_kubelet, Kubelet, World};

/// Keeps Prometheus' targets to the kubelet's pods, until `stop`.
fn discover(prometheus: &Prometheus, kubelet: &Kubelet, stop: &AtomicBool) {
    let mut listed = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let targets: Vec<(String, BTreeMap<String, String>)> = kubelet
            .pods
            .all()
            .into_iter()
            .map(|pod| {
                let labels = BTreeMap::from([
                    ("namespace".to_string(), pod.namespace.clone()),
                    ("pod".to_string(), pod.name.clone()),
                ]);
                let address = pod.address.trim_start_matches("http://").to_string();
                (address, labels)
            })
            .collect();
        if targets != listed {
            prometheus.set_targets(&targets);
            listed = targets;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn proxied_reads(world: &World) -> usize {
    world
        .serve
        .request_log()
        .iter()
        .filter(|l| l.contains("/proxy/"))
        .count()
}

#[test]
fn the_example_rolls_out_and_back_on_gates_read_from_prometheus() {
    let world = World::new();
    let prometheus = Prometheus::start();
    quick_rollout(&world, true, Gates::Prometheus(&prometheus.url()));
    // Prometheus answers with what it scraped last (every second here, once it has
    // discovered a new pod): steps of several scrape intervals, as the README advises,
    // so that a loaded machine still gets the evidence to the gates in time.
    let serve = world.root.join("imaging/serve.toml");
    let text = std::fs::read_to_string(&serve).unwrap();
    std::fs::write(
        &serve,
        text.replace("step_wait = \"5s\"", "step_wait = \"10s\""),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    with_kubelet(&world, |kubelet| {
        std::thread::scope(|s| {
            s.spawn(|| discover(&prometheus, kubelet, &stop));
            // Stops discovery however this ends (a failed assert included).
            let _stop = StopOnDrop(&stop);
            let first = world.cairn(&["apply", "-w", "imaging", "--auto-approve"]);
            assert_eq!(first.code, 0, "{}\n{}", first.both(), kubelet_log(kubelet));
            let v1 = deployments(&world);

            retrain(&world, 1);
            let plan = world.cairn(&["plan", "-w", "imaging"]);
            plan.ok();
            assert!(
                plan.stdout.contains(&format!(
                    "read from Prometheus at {} by the manifest's queries",
                    prometheus.url()
                )),
                "{}",
                plan.both()
            );
            let (apply, seen) = apply_under_traffic(&world, kubelet);
            assert_eq!(
                apply.code,
                0,
                "{}\n{}\n{}",
                apply.both(),
                kubelet_log(kubelet),
                prometheus.log()
            );
            for step in ["step 20%", "step 50%", "step 100%", "promoted"] {
                assert!(apply.stderr.contains(step), "{step}\n{}", apply.both());
            }
            let v2 = deployments(&world);
            assert_eq!(v2.len(), 1, "{v2:?}");
            assert_ne!(v2, v1);
            assert_eq!(weights_of_route(&world), [(v2[0].clone(), 100)]);
            assert_eq!(seen.answers.get(&500), None, "{:?}", seen.answers);
            // Prometheus saw the new revision's requests under its pods' names.
            let counted = prometheus.query(&format!(
                "sum(onnx_server_requests_total{{pod=~\"{}-.*\"}})",
                v2[0]
            ));
            assert!(
                counted[0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|n| n >= 20.0),
                "{counted}"
            );

            kubelet.pods.broken.store(true, Ordering::SeqCst);
            retrain(&world, 2);
            let (apply, seen) = apply_under_traffic(&world, kubelet);
            assert_eq!(apply.code, 1, "{}\n{}", apply.both(), kubelet_log(kubelet));
            assert!(
                apply.stderr.contains("rolled back at step"),
                "{}",
                apply.both()
            );
            assert!(apply.stderr.contains("error rate"), "{}", apply.both());
            assert!(seen.answers.get(&500).is_some(), "{:?}", seen.answers);
            assert_eq!(weights_of_route(&world), [(v2[0].clone(), 100)]);
            assert_eq!(deployments(&world), v2);

            // The gates never went through the API server to the pods.
            assert_eq!(proxied_reads(&world), 0);
        });
    });
}

//! Rollouts on Kubernetes, through the real binary: a retrain gives the unpinned `blue`
//! deployment a new model version, and `cairn apply` moves traffic to it by the rollout
//! steps, on the HTTPRoute's weights (the example's compute declares a gateway) or, on
//! a compute without one, by switching the endpoint Service's selector (0/100). The
//! gates read the pods' `/metrics` through the API server's pod proxy while a gateway
//! thread sends prediction requests as the live objects say. A new version whose pods
//! answer 500 is rolled back: traffic returns to the previous revision and the objects
//! the rollout started are deleted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::Value;

use super::pods::{gateway, Seen};
use super::{kubelet_log, objects_of, patch_as, with_kubelet, Kubelet, World};

/// Where the gates read in a test.
pub(super) enum Gates<'a> {
    /// Each pod's `/metrics` through the API server's pod proxy: the example's
    /// `rollout.metrics` table is removed.
    PodProxy,
    /// The example's own queries, on the Prometheus at this URL.
    Prometheus(&'a str),
}

/// Short steps so the test takes seconds: the gates still need 20 requests in a step to
/// judge it.
pub(super) fn quick_rollout(world: &World, gateway: bool, gates: Gates<'_>) {
    let serve = world.root.join("imaging/serve.toml");
    let text = std::fs::read_to_string(&serve).unwrap();
    let mut text = text
        .replace("steps = [5, 25, 50, 100]", "steps = [20, 50, 100]")
        .replace("step_wait = \"5m\"", "step_wait = \"5s\"");
    assert!(
        text.contains("step_wait = \"5s\""),
        "the example's rollout moved"
    );
    let table = text
        .find("\n# The onnx-server image writes its own metrics")
        .expect("the example's rollout.metrics table moved");
    match gates {
        Gates::PodProxy => text.truncate(table + 1),
        Gates::Prometheus(url) => {
            let declared = "prometheus = \"http://prometheus.monitoring:9090\"";
            assert!(text.contains(declared), "the example's Prometheus moved");
            text = text.replace(declared, &format!("prometheus = \"{url}\""));
        }
    }
    std::fs::write(&serve, text).unwrap();
    if !gateway {
        let compute = world.root.join("imaging/compute.toml");
        let text = std::fs::read_to_string(&compute).unwrap();
        let without = text.replace("gateway = \"imaging/radiology-gw\"\n", "");
        assert_ne!(without, text, "the example's gateway line moved");
        std::fs::write(&compute, without).unwrap();
    }
}

/// A new chest X-ray: a new dataset version, so the training job runs again and the
/// model gets a new version.
pub(super) fn retrain(world: &World, n: usize) {
    let path = world
        .root
        .join(format!("imaging/data/chest-xrays/cxr-new-{n}.pgm"));
    std::fs::write(path, format!("P2\n1 1\n255\n{n}\n")).unwrap();
}

pub(super) fn deployments(world: &World) -> Vec<String> {
    let mut names: Vec<String> = objects_of(&world.serve, "Deployment")
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Applies with a gateway thread sending traffic meanwhile; returns the run and what
/// the gateway saw during it.
pub(super) fn apply_under_traffic(world: &World, kubelet: &Kubelet) -> (support::Run, Seen) {
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            gateway(
                &world.serve,
                &kubelet.pods,
                "imaging-serve",
                "triage",
                &stop,
                &seen,
            )
        });
        let run = world.cairn(&["apply", "-w", "imaging", "--auto-approve"]);
        stop.store(true, Ordering::SeqCst);
        run
    });
    (run, seen.into_inner().unwrap())
}

use super::support;

pub(super) fn weights_of_route(world: &World) -> Vec<(String, u64)> {
    let route = &objects_of(&world.serve, "HTTPRoute")[0];
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn service_selector(world: &World) -> Value {
    world
        .serve
        .object("v1", "Service", Some("imaging-serve"), "triage")
        .unwrap()["spec"]["selector"]
        .clone()
}

#[test]
fn a_new_model_version_rolls_out_by_httproute_weights_and_a_failing_one_rolls_back() {
    let world = World::new();
    quick_rollout(&world, true, Gates::PodProxy);
    with_kubelet(&world, |kubelet| {
        let first = world.cairn(&["apply", "-w", "imaging", "--auto-approve"]);
        assert_eq!(first.code, 0, "{}\n{}", first.both(), kubelet_log(kubelet));
        let v1 = deployments(&world);
        assert_eq!(v1.len(), 1);

        // Retrain: the plan shows the stepped rollout on the HTTPRoute.
        retrain(&world, 1);
        let plan = world.cairn(&["plan", "-w", "imaging"]);
        plan.ok();
        assert!(
            plan.stdout.contains("» imaging/endpoint.triage"),
            "{}",
            plan.both()
        );
        assert!(
            plan.stdout.contains("(HTTPRoute weights)"),
            "{}",
            plan.both()
        );
        assert!(!plan.stdout.contains("not available"), "{}", plan.both());
        // Steps name the revisions' Services, as apply and the cluster do.
        assert!(
            plan.stdout
                .contains(&format!("step 1: {} 80%, triage-blue-", v1[0])),
            "{}",
            plan.both()
        );

        let (apply, seen) = apply_under_traffic(&world, kubelet);
        assert_eq!(apply.code, 0, "{}\n{}", apply.both(), kubelet_log(kubelet));
        for step in ["step 20%", "step 50%", "step 100%", "promoted"] {
            assert!(apply.stderr.contains(step), "{step}\n{}", apply.both());
        }
        // The old revision is gone, the new one takes everything.
        let v2 = deployments(&world);
        assert_eq!(v2.len(), 1, "{v2:?}");
        assert_ne!(v2, v1);
        assert_eq!(
            weights_of_route(&world),
            [(v2[0].clone(), 100)],
            "{}",
            apply.both()
        );
        // The gateway really sent traffic by the intermediate weights.
        let splits: Vec<Vec<u32>> = seen
            .splits
            .iter()
            .map(|s| s.values().copied().collect())
            .collect();
        assert!(
            seen.splits
                .iter()
                .any(|s| s.get(&v2[0]) == Some(&20) && s.get(&v1[0]) == Some(&80)),
            "{splits:?}"
        );
        assert!(
            seen.splits
                .iter()
                .any(|s| s.get(&v2[0]) == Some(&50) && s.get(&v1[0]) == Some(&50)),
            "{splits:?}"
        );
        assert_eq!(seen.answers.get(&500), None, "{:?}", seen.answers);
        // The gates read the pods' metrics through the API server's pod proxy.
        let proxied = world
            .serve
            .request_log()
            .iter()
            .filter(|l| l.contains("/proxy/metrics"))
            .count();
        assert!(proxied >= 3, "{proxied}");
        world
            .cairn(&["plan", "-w", "imaging", "--detailed-exitcode"])
            .code(0);

        // A version whose pods fail every request: the gates roll it back.
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
        // Traffic is back on the serving revision; what the rollout started is gone.
        assert_eq!(weights_of_route(&world), [(v2[0].clone(), 100)]);
        assert_eq!(deployments(&world), v2);
        // The rollout is still to do.
        let again = world.cairn(&["plan", "-w", "imaging"]);
        assert!(
            again.stdout.contains("» imaging/endpoint.triage"),
            "{}",
            again.both()
        );
    });
}

#[test]
fn without_a_gateway_the_service_selector_switches_and_switches_back() {
    let world = World::new();
    quick_rollout(&world, false, Gates::PodProxy);
    with_kubelet(&world, |kubelet| {
        let first = world.cairn(&["apply", "-w", "imaging", "--auto-approve"]);
        assert_eq!(first.code, 0, "{}\n{}", first.both(), kubelet_log(kubelet));
        assert!(objects_of(&world.serve, "HTTPRoute").is_empty());
        let v1 = deployments(&world);
        let revision = |world: &World| {
            service_selector(world)["cairn.dev/deployment-revision"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let r1 = revision(&world);
        assert!(v1[0].ends_with(&r1), "{v1:?} {r1}");

        retrain(&world, 1);
        let plan = world.cairn(&["plan", "-w", "imaging"]);
        plan.ok();
        assert!(
            plan.stdout
                .contains("all at once by the endpoint Service's selector (0/100)"),
            "{}",
            plan.both()
        );
        assert!(
            plan.stdout
                .contains("steps [20, 50, 100] need a `gateway` on compute.radiology-onprem"),
            "{}",
            plan.both()
        );

        let (apply, seen) = apply_under_traffic(&world, kubelet);
        assert_eq!(apply.code, 0, "{}\n{}", apply.both(), kubelet_log(kubelet));
        assert!(apply.stderr.contains("promoted"), "{}", apply.both());
        let r2 = revision(&world);
        assert_ne!(r2, r1);
        assert_eq!(deployments(&world).len(), 1);
        // Only ever one revision at a time.
        assert!(
            seen.splits.iter().all(|s| s.len() == 1),
            "{:?}",
            seen.splits
        );
        assert!(
            seen.splits.iter().any(|s| s.contains_key(&r2)),
            "{:?}",
            seen.splits
        );

        kubelet.pods.broken.store(true, Ordering::SeqCst);
        retrain(&world, 2);
        let (apply, _) = apply_under_traffic(&world, kubelet);
        assert_eq!(apply.code, 1, "{}\n{}", apply.both(), kubelet_log(kubelet));
        assert!(
            apply.stderr.contains("rolled back at step 100%"),
            "{}",
            apply.both()
        );
        assert_eq!(revision(&world), r2);
        assert_eq!(deployments(&world).len(), 1);
    });
}

#[test]
fn without_a_gateway_a_split_or_a_mirrored_rollout_is_refused() {
    let world = World::new();
    quick_rollout(&world, false, Gates::PodProxy);
    let serve = world.root.join("imaging/serve.toml");
    let text = std::fs::read_to_string(&serve).unwrap();
    let text = text.replace(
        "[endpoint.triage.traffic]\nblue = 100",
        "[endpoint.triage.deployments.green]\nmodel = \"model.pneumonia-detector\"\nreplicas = 1\n\
         instance_type = \"t4\"\ngpus = 1\nimage = \"registry.stmarys.example/radiology/onnx-server:1.18\"\n\n\
         [endpoint.triage.traffic]\nblue = 90\ngreen = 10",
    );
    assert!(
        text.contains("green = 10"),
        "the example's traffic map moved"
    );
    std::fs::write(&serve, text).unwrap();
    let plan = world.cairn(&["plan", "-w", "imaging"]);
    assert_eq!(plan.code, 1, "{}", plan.both());
    assert!(
        plan.stderr
            .contains("compute `radiology-onprem` has no `gateway`, so traffic can't be split"),
        "{}",
        plan.both()
    );
    assert!(
        plan.stderr.contains("imaging/serve.toml:"),
        "{}",
        plan.both()
    );
    assert!(
        plan.stderr.contains("blue = 90, green = 10"),
        "{}",
        plan.both()
    );

    // One deployment again, but the rollout mirrors requests first.
    let text = std::fs::read_to_string(&serve)
        .unwrap()
        .replace("blue = 90\ngreen = 10", "blue = 100")
        .replace("step_wait = \"5s\"", "step_wait = \"5s\"\nmirror = 20");
    std::fs::write(&serve, text).unwrap();
    let plan = world.cairn(&["plan", "-w", "imaging"]);
    assert_eq!(plan.code, 1, "{}", plan.both());
    assert!(
        plan.stderr.contains(
            "compute `radiology-onprem` has no `gateway`, so a rollout can't mirror requests"
        ),
        "{}",
        plan.both()
    );
    assert!(!plan.stderr.contains("can't be split"), "{}", plan.both());
}

#[test]
fn an_autoscaled_revision_rolls_out_as_scaled_as_the_one_it_replaces() {
    let world = World::new();
    quick_rollout(&world, true, Gates::PodProxy);
    let serve = world.root.join("imaging/serve.toml");
    let text = std::fs::read_to_string(&serve).unwrap();
    let autoscaled = text.replace(
        "replicas = 1\n",
        "replicas = { min = 1, max = 2, target_cpu = 70 }\n",
    );
    assert_ne!(autoscaled, text, "the example's replicas moved");
    std::fs::write(&serve, autoscaled).unwrap();
    with_kubelet(&world, |kubelet| {
        let first = world.cairn(&["apply", "-w", "imaging", "--auto-approve"]);
        assert_eq!(first.code, 0, "{}\n{}", first.both(), kubelet_log(kubelet));
        let v1 = deployments(&world);
        let hpa = world
            .serve
            .object(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                Some("imaging-serve"),
                &v1[0],
            )
            .expect("the revision's autoscaler");
        assert_eq!(
            (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
            (&serde_json::json!(1), &serde_json::json!(2))
        );

        // The autoscaler scales the serving revision to 2, as an HPA does.
        patch_as(
            &world.serve,
            &format!(
                "/apis/apps/v1/namespaces/imaging-serve/deployments/{}",
                v1[0]
            ),
            serde_json::json!({"spec": {"replicas": 2}}),
            "horizontal-pod-autoscaler",
        );
        support::wait_until("the second pod", std::time::Duration::from_secs(10), || {
            kubelet
                .pods
                .all()
                .iter()
                .filter(|p| p.name.starts_with(&v1[0]))
                .count()
                == 2
        });
        // Its count is the autoscaler's: no drift, and no apply takes it back.
        let plan = world.cairn(&["plan", "-w", "imaging", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "{}", plan.both());

        retrain(&world, 1);
        let (apply, _) = apply_under_traffic(&world, kubelet);
        assert_eq!(apply.code, 0, "{}\n{}", apply.both(), kubelet_log(kubelet));
        assert!(
            apply
                .stderr
                .contains("with 2 replicas, as many as the revision it replaces runs"),
            "{}",
            apply.both()
        );
        let v2 = deployments(&world);
        assert_eq!(v2.len(), 1, "{v2:?}");
        assert_ne!(v2, v1);
        let live = world
            .serve
            .object("apps/v1", "Deployment", Some("imaging-serve"), &v2[0])
            .unwrap();
        assert_eq!(live["spec"]["replicas"], 2, "{live}");
        // The old revision's autoscaler went with it; the new one has its own.
        let autoscalers: Vec<String> = objects_of(&world.serve, "HorizontalPodAutoscaler")
            .iter()
            .map(|h| h["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(autoscalers, v2);
    });
}

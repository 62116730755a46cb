//! Weights changed while clients send continuously: by hand, and by the rollout engine
//! through the router's `Traffic` implementation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use cairn::rollout::{self, Outcome, RolloutEvent, RolloutPolicy};

use crate::{agent, split, try_predict, weights_of, Rig};

/// Client threads sending predictions without pause until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Seen>>,
}

/// What the clients saw: answers by deployment, and every failure.
#[derive(Default)]
struct Seen {
    answered: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut seen = Seen::default();
                    while !stop.load(Ordering::Relaxed) {
                        match try_predict(&agent, addr, None) {
                            Ok(reply) if reply.status == 200 => {
                                *seen.answered.entry(reply.deployment.unwrap()).or_insert(0) += 1;
                            }
                            Ok(reply) => seen.failures.push(format!(
                                "{} from {:?}: {}",
                                reply.status, reply.deployment, reply.body
                            )),
                            Err(e) => seen.failures.push(e.to_string()),
                        }
                    }
                    seen
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = Seen::default();
        for thread in self.threads {
            let one = thread.join().unwrap();
            for (name, n) in one.answered {
                *seen.answered.entry(name).or_insert(0) += n;
            }
            seen.failures.extend(one.failures);
        }
        seen
    }
}

#[test]
fn weights_change_under_load_and_no_request_fails() {
    let mut rig = Rig::new(&[("blue", 2), ("green", 2)]);
    let addr = rig.start_router(rig.routes(&[("blue", 100), ("green", 0)]));
    let handle = rig.handle().clone();

    let load = Load::start(addr, 8);
    let started = Instant::now();
    let mut shifts = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        for green in [0, 10, 25, 50, 75, 90, 100, 50] {
            handle
                .set_weights(&weights_of(&[("blue", 100 - green), ("green", green)]))
                .unwrap();
            shifts += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let seen = load.stop();
    assert!(
        seen.failures.is_empty(),
        "{:?}",
        &seen.failures[..5.min(seen.failures.len())]
    );
    assert!(shifts > 50, "{shifts}");
    let total: usize = seen.answered.values().sum();
    assert!(total > 500, "{:?}", seen.answered);
    assert!(seen.answered["blue"] > 0 && seen.answered["green"] > 0);
    // The router's counters agree with the clients.
    for (name, n) in &seen.answered {
        let stats = handle.stats(name).unwrap();
        assert_eq!((stats.requests, stats.errors), (*n as u64, 0), "{name}");
    }

    // The last weights hold.
    handle
        .set_weights(&weights_of(&[("blue", 0), ("green", 100)]))
        .unwrap();
    assert_eq!(split(addr, 100).get("green"), Some(&100));
}

fn policy() -> RolloutPolicy {
    RolloutPolicy {
        steps: vec![10, 50, 100],
        step_wait: Duration::from_millis(400),
        max_error_rate: Some(0.01),
        max_p99_ms: Some(500),
        auto_rollback: true,
        min_requests: 20,
        ready_timeout: Duration::from_secs(5),
        poll: Duration::from_millis(50),
        mirror: None,
    }
}

#[test]
fn the_rollout_engine_moves_traffic_through_the_router() {
    let mut rig = Rig::new(&[("blue", 1), ("green", 2)]);
    let addr = rig.start_router(rig.routes(&[("blue", 100), ("green", 0)]));
    let handle = rig.handle().clone();

    let load = Load::start(addr, 8);
    let events = Mutex::new(Vec::new());
    let from = weights_of(&[("blue", 100), ("green", 0)]);
    let to = weights_of(&[("blue", 0), ("green", 100)]);
    let outcome = rig
        .runtime
        .block_on(rollout::run(&handle, &from, &to, &policy(), &|event| {
            events.lock().unwrap().push(event)
        }))
        .unwrap();
    let seen = load.stop();

    assert_eq!(
        outcome,
        Outcome::Promoted {
            weights: to.clone()
        }
    );
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert_eq!(handle.routes().weights, to);
    let events = events.into_inner().unwrap();
    assert_eq!(
        events[0],
        RolloutEvent::Ready {
            deployment: "green".into()
        }
    );
    let passed: Vec<(u32, u64)> = events
        .iter()
        .filter_map(|e| match e {
            RolloutEvent::StepPassed { step, requests, .. } => Some((*step, *requests)),
            _ => None,
        })
        .collect();
    assert_eq!(
        passed.iter().map(|p| p.0).collect::<Vec<_>>(),
        [10, 50, 100]
    );
    assert!(passed.iter().all(|p| p.1 >= 20), "{passed:?}");
    assert!(seen.answered["green"] > seen.answered.get("blue").copied().unwrap_or(0) / 10);
}

#[test]
fn a_deployment_that_fails_its_gate_is_rolled_back() {
    let mut rig = Rig::new(&[("blue", 1)]);
    // A replica that says it is ready and then answers every request with 500.
    let sick = rig.runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let mut routes = rig.routes(&[("blue", 100), ("green", 0)]);
    routes.deployments.insert("green".into(), vec![sick]);
    let addr = rig.start_router(routes);
    let handle = rig.handle().clone();

    let load = Load::start(addr, 4);
    let from = weights_of(&[("blue", 100), ("green", 0)]);
    let to = weights_of(&[("blue", 0), ("green", 100)]);
    let outcome = rig
        .runtime
        .block_on(rollout::run(&handle, &from, &to, &policy(), &|_| {}))
        .unwrap();
    // Back on blue: from now on every request succeeds.
    let after = split(addr, 50);
    let seen = load.stop();

    let Outcome::RolledBack {
        step,
        reason,
        weights,
    } = outcome
    else {
        panic!("expected a rollback, got {outcome:?}");
    };
    assert_eq!((step, &weights), (10, &from));
    assert!(reason.starts_with("error rate"), "{reason}");
    assert_eq!(handle.routes().weights, from);
    assert_eq!(after.get("blue"), Some(&50));
    // The clients saw green's 500s during the first step, and only those.
    assert!(!seen.failures.is_empty());
    assert!(
        seen.failures.iter().all(|f| f.starts_with("500")),
        "{:?}",
        seen.failures
    );
    let green = handle.stats("green").unwrap();
    assert_eq!(green.errors, green.requests);
    assert_eq!(green.requests, seen.failures.len() as u64);
}

//! Where requests go: weights, replicas, the pin header, the mirror, and what passes
//! through the router untouched.

use std::time::{Duration, Instant};

use cairn::rollout::Traffic;
use serde_json::json;

use crate::{
    agent, assert_near, get, mirror, names, predict, predictions_served, router_error, split,
    weights_of, BlackHole, Rig,
};

#[test]
fn weights_split_requests_and_replicas_take_turns() {
    let mut rig = Rig::new(&[("blue", 2), ("green", 1)]);
    let addr = rig.start_router(rig.routes(&[("blue", 90), ("green", 10)]));

    let counts = split(addr, 1000);
    assert_near(counts["blue"], 900, 1000, 0.03);
    assert_near(counts["green"], 100, 1000, 0.03);
    // The two blue replicas shared blue's requests evenly.
    let blue = rig.served("blue");
    assert_eq!(blue.iter().sum::<u64>(), counts["blue"] as u64);
    assert!(blue[0].abs_diff(blue[1]) <= 1, "{blue:?}");
    assert_eq!(rig.served("green"), [counts["green"] as u64]);

    // The router counted what it sent, each request in one latency bucket.
    let handle = rig.handle().clone();
    for (name, n) in &counts {
        let stats = rig.runtime.block_on(Traffic::stats(&handle, name)).unwrap();
        assert_eq!((stats.requests, stats.errors), (*n as u64, 0), "{name}");
        assert_eq!(stats.latency.len(), 15);
        assert_eq!(stats.latency.last(), Some(&(f64::INFINITY, *n as u64)));
        assert!(stats
            .latency
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        // Loopback predictions take well under a second.
        let under_1s = stats.latency.iter().find(|(le, _)| *le == 1.0).unwrap().1;
        assert_eq!(under_1s, *n as u64, "{name}: {:?}", stats.latency);
    }

    // All of it to green.
    rig.runtime
        .block_on(Traffic::set_weights(
            &handle,
            &weights_of(&[("blue", 0), ("green", 100)]),
        ))
        .unwrap();
    let counts = split(addr, 300);
    assert_eq!(counts.get("green"), Some(&300), "{counts:?}");
    assert_eq!(
        handle.routes().weights,
        weights_of(&[("blue", 0), ("green", 100)])
    );

    // All weights 0: nothing is routed without a pin.
    handle.set_weights(&weights_of(&[("blue", 0)])).unwrap();
    let reply = predict(&agent(), addr, None);
    assert_eq!(reply.status, 503);
    assert_eq!(
        router_error(&reply)["deployments"],
        names(&["blue", "green"])
    );
    assert!(rig.stop_router().is_ok());
}

#[test]
fn the_pin_header_chooses_the_deployment() {
    let mut rig = Rig::new(&[("blue", 1), ("green", 1)]);
    let addr = rig.start_router(rig.routes(&[("blue", 100), ("green", 0)]));
    let agent = agent();

    // Pinned to green at 0 %: green answers.
    for _ in 0..20 {
        let reply = predict(&agent, addr, Some("green"));
        assert_eq!(
            (reply.status, reply.deployment.as_deref()),
            (200, Some("green"))
        );
        assert_eq!(reply.json()["model"], "green");
    }
    assert_eq!(
        predict(&agent, addr, Some("blue")).deployment.as_deref(),
        Some("blue")
    );

    // An unknown name: 404 naming the deployments, sent nowhere.
    let reply = predict(&agent, addr, Some("purple"));
    assert_eq!(reply.status, 404);
    let body = router_error(&reply);
    assert_eq!(body["deployments"], names(&["blue", "green"]));
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("`purple`") && message.contains("blue, green"),
        "{message}"
    );
    assert_eq!(rig.served("blue"), [1]);
    assert_eq!(rig.served("green"), [20]);
    let handle = rig.handle();
    assert_eq!(handle.stats("green").unwrap().requests, 20);
    assert_eq!(handle.stats("blue").unwrap().requests, 1);
}

#[test]
fn mirrored_requests_reach_the_mirror_and_never_the_client() {
    let mut rig = Rig::new(&[("blue", 1), ("green", 1)]);
    let mut routes = rig.routes(&[("blue", 100), ("green", 0)]);
    routes.mirror = mirror("green", 20);
    let addr = rig.start_router(routes);

    let counts = split(addr, 500);
    assert_eq!(counts.get("blue"), Some(&500), "{counts:?}");
    // The copies are fire-and-forget: wait for them to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut mirrored = predictions_served(rig.backends["green"][0].addr);
    while mirrored < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        mirrored = predictions_served(rig.backends["green"][0].addr);
    }
    assert_near(mirrored as usize, 100, 500, 0.03);
    assert_eq!(rig.served("blue"), [500]);
    let handle = rig.handle();
    let green = handle.stats("green").unwrap();
    assert_eq!((green.requests, green.errors), (mirrored, 0));
    assert_eq!(handle.stats("blue").unwrap().requests, 500);

    // Pinned requests are not mirrored.
    let agent = agent();
    for _ in 0..50 {
        predict(&agent, addr, Some("blue"));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(predictions_served(rig.backends["green"][0].addr), mirrored);
}

#[test]
fn a_mirror_that_never_answers_costs_the_client_nothing() {
    let mut rig = Rig::new(&[("blue", 1)]);
    let hole = BlackHole::start();
    let mut routes = rig.routes(&[("blue", 100)]);
    routes.deployments.insert("shadow".into(), vec![hole.addr]);
    routes.mirror = mirror("shadow", 50);
    let addr = rig.start_router(routes);

    // Half the requests are copied to a replica that holds them until the request
    // timeout (60 s); the clients' answers come from blue at once all the same, and copies
    // past the in-flight limit are skipped rather than queued.
    let agent = agent();
    let started = Instant::now();
    for _ in 0..300 {
        let reply = predict(&agent, addr, None);
        assert_eq!(
            (reply.status, reply.deployment.as_deref()),
            (200, Some("blue"))
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The copies in flight are the limit (64 by default), each on its own connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while hole.accepted() < 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(hole.accepted(), 64);
    assert_eq!(rig.handle().stats("shadow").unwrap().requests, 0);
    // Clearing the mirror stops the copies.
    rig.handle().set_mirror(None).unwrap();
    assert_eq!(rig.handle().routes().mirror, None);
    assert_eq!(split(addr, 10)["blue"], 10);
}

#[test]
fn any_method_and_path_passes_through() {
    let mut rig = Rig::new(&[("blue", 1)]);
    let addr = rig.start_router(rig.routes(&[("blue", 100)]));
    let agent = agent();

    // The server's own answers, errors included, come back as they are.
    let health = get(&agent, addr, "/healthz");
    assert_eq!(
        (health.status, health.deployment.as_deref()),
        (200, Some("blue"))
    );
    assert_eq!(health.json()["status"], "ready");
    let metrics = get(&agent, addr, "/metrics?x=1");
    assert!(
        metrics.body.contains("cairn_model_ready 1"),
        "{}",
        metrics.body
    );
    let missing = get(&agent, addr, "/nowhere");
    assert_eq!(
        (missing.status, missing.deployment.as_deref()),
        (404, Some("blue"))
    );
    let bad = crate::reply(
        agent
            .post(format!("http://{addr}/v1/predict"))
            .header("content-type", "application/json")
            .send(r#"{"rows": [{"age": "old"}]}"#),
    )
    .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["row"], json!(0));

    // 4xx answers are the client's errors, not the deployment's.
    let stats = rig.handle().stats("blue").unwrap();
    assert_eq!((stats.requests, stats.errors), (4, 0));
}

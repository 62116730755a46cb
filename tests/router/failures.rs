//! Dead replicas, readiness, bind errors, bad routes, limits and shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn::backend::local::router::{self, Error, RouterOptions, Routes};
use cairn::rollout::Traffic;

use crate::{agent, mirror, predict, router_error, split, weights_of, BlackHole, Rig, BODY};

#[test]
fn a_dead_replica_is_skipped_and_not_counted_as_an_error() {
    let mut rig = Rig::new(&[("blue", 2), ("green", 1)]);
    let addr = rig.start_router(rig.routes(&[("blue", 100), ("green", 0)]));
    let handle = rig.handle().clone();
    assert_eq!(split(addr, 20)["blue"], 20);
    assert_eq!(rig.served("blue"), [10, 10]);

    // One blue replica goes away: its turns go to the other one, and nobody notices.
    rig.stop_backend("blue", 0);
    assert_eq!(split(addr, 200).get("blue"), Some(&200));
    let survivor = crate::predictions_served(rig.backends["blue"][1].addr);
    assert_eq!(survivor, 210);
    let stats = handle.stats("blue").unwrap();
    assert_eq!((stats.requests, stats.errors), (220, 0));
    assert!(!rig.runtime.block_on(handle.ready("blue")).unwrap());

    // The other one too: 502, counted against blue.
    rig.stop_backend("blue", 1);
    let agent = agent();
    for _ in 0..10 {
        let reply = predict(&agent, addr, None);
        assert_eq!(reply.status, 502, "{}", reply.body);
        let body = router_error(&reply);
        assert_eq!(body["deployment"], "blue");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("no replica of deployment `blue` accepted the connection"),
            "{message}"
        );
    }
    let stats = handle.stats("blue").unwrap();
    assert_eq!((stats.requests, stats.errors), (230, 10));
    // Green is untouched, and still reachable by pin.
    let reply = predict(&agent, addr, Some("green"));
    assert_eq!(
        (reply.status, reply.deployment.as_deref()),
        (200, Some("green"))
    );
    assert_eq!(handle.stats("green").unwrap().errors, 0);
}

#[test]
fn ready_means_every_replica_answers_its_probe() {
    let mut rig = Rig::new(&[("blue", 2)]);
    let hole = BlackHole::start();
    let mut routes = rig.routes(&[("blue", 100)]);
    routes.deployments.insert(
        "stuck".into(),
        vec![rig.backends["blue"][0].addr, hole.addr],
    );
    routes.deployments.insert("empty".into(), vec![]);
    rig.start_router(routes);
    let handle = rig.handle().clone();

    let ready = |name: &str| rig.runtime.block_on(Traffic::ready(&handle, name));
    assert_eq!(ready("blue"), Ok(true));
    // One replica holds the probe past the timeout (300 ms in these tests).
    let started = Instant::now();
    assert_eq!(ready("stuck"), Ok(false));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ready("empty"), Ok(false));
    let error = ready("purple").unwrap_err();
    assert_eq!(
        error.to_string(),
        "no deployment named `purple` behind this router; it has: blue, empty, stuck"
    );
    assert!(rig
        .runtime
        .block_on(Traffic::stats(&handle, "purple"))
        .is_err());

    rig.stop_backend("blue", 1);
    let ready = rig.runtime.block_on(Traffic::ready(&handle, "blue"));
    assert_eq!(ready, Ok(false));
}

#[test]
fn ready_probes_each_deployments_own_health_path() {
    let mut rig = Rig::new(&[("blue", 1)]);
    let server = rig.backends["blue"][0].addr;
    let mut routes = rig.routes(&[("blue", 100)]);
    // The same server behind three names: the model server answers `/healthz` and
    // `/metrics` with 200, and `/ready` with 404.
    routes.deployments.insert("metrics".into(), vec![server]);
    routes.deployments.insert("missing".into(), vec![server]);
    routes.health.insert("metrics".into(), "/metrics".into());
    routes.health.insert("missing".into(), "/ready".into());
    assert_eq!(routes.health_path("blue"), "/healthz");
    rig.start_router(routes);
    let handle = rig.handle().clone();
    let ready = |name: &str| rig.runtime.block_on(Traffic::ready(&handle, name));
    assert_eq!(ready("blue"), Ok(true));
    assert_eq!(ready("metrics"), Ok(true));
    assert_eq!(ready("missing"), Ok(false));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let routes = Routes {
        deployments: [("blue".to_string(), vec![addr])].into(),
        weights: weights_of(&[("blue", 100)]),
        mirror: None,
        key_sha256: None,
        health: Default::default(),
        capture: None,
        counter_keys: Default::default(),
    };
    let error = runtime
        .block_on(router::bind(RouterOptions::new(addr, routes.clone())))
        .unwrap_err();
    assert_eq!(error.to_string(), format!("cannot listen on {addr}"));
    let Error::Bind {
        addr: named,
        source,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*named, addr);
    assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);

    // Routes are checked before the port is taken: a bad table binds nothing.
    drop(taken);
    let bad = Routes {
        weights: weights_of(&[("blue", 50)]),
        ..routes.clone()
    };
    let error = runtime
        .block_on(router::bind(RouterOptions::new(addr, bad)))
        .unwrap_err();
    assert!(matches!(error, Error::BadWeights { sum: 50 }), "{error:?}");
    let again = std::net::TcpListener::bind(addr).expect("the port is still free");
    drop(again);
    let bound = runtime
        .block_on(router::bind(RouterOptions::new(addr, routes)))
        .unwrap();
    assert_eq!(bound.local_addr(), addr);
}

#[test]
fn bad_routes_are_refused_and_change_nothing() {
    let mut rig = Rig::new(&[("blue", 1), ("green", 1)]);
    let addr = rig.start_router(rig.routes(&[("blue", 90), ("green", 10)]));
    let handle = rig.handle().clone();
    let before = handle.routes();

    let error = rig
        .runtime
        .block_on(Traffic::set_weights(&handle, &weights_of(&[("blue", 90)])))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "weights must add up to 100 (or 0), got 90"
    );
    let error = handle
        .set_weights(&weights_of(&[("blue", 90), ("gren", 10)]))
        .unwrap_err();
    assert!(matches!(error, Error::UnknownDeployment { ref name, .. } if name == "gren"));
    let error = handle.set_mirror(mirror("green", 150)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the mirror to `green` is 150 %; it must be at most 100 %"
    );
    assert!(handle.set_mirror(mirror("red", 10)).is_err());
    assert_eq!(handle.routes(), before);

    // Replacing the whole table: green gets a replica list of blue's server.
    let mut routes = before.clone();
    routes
        .deployments
        .insert("green".into(), vec![rig.backends["blue"][0].addr]);
    routes.weights = weights_of(&[("green", 100)]);
    routes.deployments.remove("blue");
    handle.set_routes(routes.clone()).unwrap();
    assert_eq!(handle.routes(), routes);
    assert_eq!(split(addr, 10).get("blue"), Some(&10));
    // Blue's counters outlive its removal from the routes.
    assert!(handle.stats("blue").is_ok());
    assert_eq!(handle.stats("green").unwrap().requests, 10);
}

#[test]
fn a_body_over_the_limit_is_413() {
    let mut rig = Rig::new(&[("blue", 1)]);
    let mut options =
        RouterOptions::new("127.0.0.1:0".parse().unwrap(), rig.routes(&[("blue", 100)]));
    options.max_body_bytes = 1024;
    let addr = rig.start_router_with(options);
    let agent = agent();

    let big = format!(r#"{{"rows": [], "pad": "{}"}}"#, "x".repeat(2048));
    let reply = crate::reply(
        agent
            .post(format!("http://{addr}/v1/predict"))
            .header("content-type", "application/json")
            .send(big.as_str()),
    )
    .unwrap();
    assert_eq!(reply.status, 413);
    assert!(router_error(&reply)["error"]
        .as_str()
        .unwrap()
        .contains("1024 bytes"));
    // Chunked, without a length: the limit holds all the same.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let chunk = "y".repeat(600);
    write!(
        stream,
        "POST /v1/predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // Nothing reached blue.
    assert_eq!(rig.handle().stats("blue").unwrap().requests, 0);
    assert_eq!(rig.served("blue"), [0]);
    assert_eq!(predict(&agent, addr, None).status, 200);
}

#[test]
fn shutdown_lets_requests_in_flight_finish() {
    let mut rig = Rig::new(&[("blue", 1)]);
    let addr = rig.start_router(rig.routes(&[("blue", 100)]));

    // A request whose body is still arriving when the shutdown starts.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{}",
        BODY.len(),
        &BODY[..5]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let running = rig.router.as_mut().unwrap();
    let _ = running.shutdown.take().unwrap().send(());
    std::thread::sleep(Duration::from_millis(100));
    // The listener is closed: new connections are refused.
    assert!(TcpStream::connect(addr).is_err());

    stream.write_all(&BODY.as_bytes()[5..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("x-cairn-deployment: blue"), "{response}");
    assert!(rig.stop_router().is_ok());
}

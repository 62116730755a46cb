//! Routers hosted by the daemon: weights, the pin header and the key through a real
//! router in front of real replicas; a port in use; replicas that crash or move; a daemon
//! killed and replaced; stops refused while traffic flows, and scheduled stops.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cairn::backend::local::router::Mirror;
use cairn::backend::local::supervisor::{
    self, Error, ReplicaState, RouteBackend, RouteSpec, RouteStatus, RouteTraffic,
};
use cairn::rollout::{Traffic, Weights};
use serde_json::Value;

use crate::{gone, kill, of, pids, wait_gone, Fixture, ENDPOINT};

/// A loopback address with a port nobody listens on (free a moment ago).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn weights(pairs: &[(&str, u32)]) -> Weights {
    pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

/// A route on `listen` whose backends are `(name, deployment, revision)`.
pub fn route(
    listen: SocketAddr,
    backends: &[(&str, &str, &str)],
    split: &[(&str, u32)],
) -> RouteSpec {
    RouteSpec {
        endpoint: ENDPOINT.into(),
        listen,
        backends: backends
            .iter()
            .map(|(name, d, r)| (name.to_string(), RouteBackend::new(*d, *r)))
            .collect(),
        weights: weights(split),
        mirror: None,
        key_sha256: None,
        capture: None,
    }
}

/// What the router answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `x-cairn-deployment` header: which deployment served it.
    deployment: Option<String>,
    authenticate: Option<String>,
    body: Value,
}

/// Scores one row through the router at `addr`, with these request headers.
pub fn send(addr: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = agent
        .post(format!("http://{addr}/v1/predict"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request
        .send(r#"{"rows": [{"age": 30, "income": 50000, "utilization": 0.3}]}"#)
        .unwrap_or_else(|e| panic!("POST /v1/predict on {addr}: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (deployment, authenticate) = (header("x-cairn-deployment"), header("www-authenticate"));
    let text = response.body_mut().read_to_string().unwrap();
    Answer {
        status: response.status().as_u16(),
        deployment,
        authenticate,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// How many of `n` requests each deployment served; every one must succeed.
#[track_caller]
fn split(addr: SocketAddr, n: usize) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..n {
        let answer = send(addr, &[]);
        assert_eq!(answer.status, 200, "{answer:?}");
        *counts.entry(answer.deployment.unwrap()).or_default() += 1;
    }
    counts.into_iter().collect()
}

fn counts(pairs: &[(&str, usize)]) -> Vec<(String, usize)> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

/// Polls until `check` holds (10 s at most); the last failure message goes in the panic.
#[track_caller]
pub fn eventually<T>(
    what: &str,
    fixture: &Fixture,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "waited 10 s for {what}; last: {last}\nsupervisor log:\n{}",
                fixture.daemon_log()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Fixture {
    pub fn route(&self, spec: &RouteSpec) -> supervisor::Result<RouteStatus> {
        self.block_on(self.client.route(spec))
    }

    #[track_caller]
    pub fn the_route(&self) -> RouteStatus {
        let mut routes = self.block_on(self.client.routes()).unwrap();
        assert_eq!(routes.len(), 1, "{routes:#?}");
        routes.remove(0)
    }

    /// Applies `blue@v1` and `green@v2`, one replica each.
    fn blue_and_green(&self) {
        self.apply(&[self.spec("blue", "v1", 1), self.spec("green", "v2", 1)])
            .unwrap();
    }
}

const BLUE_GREEN: [(&str, &str, &str); 2] = [("blue", "blue", "v1"), ("green", "green", "v2")];

#[test]
fn weights_split_requests_and_the_pin_header_overrides_them() {
    let fixture = Fixture::start();
    fixture.blue_and_green();
    let listen = free_addr();

    let status = fixture
        .route(&route(listen, &BLUE_GREEN, &[("blue", 50), ("green", 50)]))
        .unwrap();
    assert!(status.serving, "{status:#?}");
    assert_eq!(status.listen, listen);
    assert_eq!(status.backends["green"].revision, "v2");
    assert_eq!(status.backends["blue"].ready_replicas, 1);
    assert_eq!(split(listen, 100), counts(&[("blue", 50), ("green", 50)]));

    // The pin header wins over the weights, 0 % included.
    fixture
        .block_on(
            fixture
                .client
                .set_weights(ENDPOINT, &weights(&[("blue", 100)])),
        )
        .unwrap();
    for _ in 0..5 {
        let answer = send(listen, &[("x-cairn-deployment", "green")]);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.deployment.as_deref(), Some("green"));
        assert_eq!(answer.body["version"], "v2", "{answer:?}");
    }
    assert_eq!(split(listen, 20), counts(&[("blue", 20)]));

    // Through the rollout engine's trait: a fast weight change, readiness, counters.
    let traffic = RouteTraffic::new(fixture.client.clone(), ENDPOINT);
    // A rollout step is fast: the median weight change takes well under 100 ms.
    let mut took: Vec<Duration> = (0..11)
        .map(|i| {
            let to = match i % 2 {
                0 => weights(&[("blue", 10), ("green", 90)]),
                _ => weights(&[("blue", 30), ("green", 70)]),
            };
            let started = Instant::now();
            fixture.block_on(traffic.set_weights(&to)).unwrap();
            started.elapsed()
        })
        .collect();
    took.sort();
    assert!(took[5] < Duration::from_millis(100), "{took:?}");
    assert_eq!(split(listen, 100), counts(&[("blue", 10), ("green", 90)]));
    assert!(fixture.block_on(traffic.ready("green")).unwrap());
    let green = fixture.block_on(traffic.stats("green")).unwrap();
    assert_eq!((green.requests, green.errors), (50 + 5 + 90, 0));
    assert_eq!(green.latency.last().unwrap().0, f64::INFINITY);
    assert_eq!(green.latency.last().unwrap().1, green.requests);

    // Bad weights are refused and change nothing.
    let error = fixture
        .block_on(
            fixture
                .client
                .set_weights(ENDPOINT, &weights(&[("red", 100)])),
        )
        .unwrap_err();
    assert!(matches!(error, Error::UnknownBackend { .. }), "{error:?}");
    assert!(
        error.to_string().contains("its backends: blue, green"),
        "{error}"
    );
    let error = fixture
        .block_on(
            fixture
                .client
                .set_weights(ENDPOINT, &weights(&[("blue", 60)])),
        )
        .unwrap_err();
    assert!(error.to_string().contains("got 60"), "{error}");
    let error = fixture
        .block_on(fixture.client.set_weights("other", &weights(&[])))
        .unwrap_err();
    assert!(matches!(error, Error::NoRoute { .. }), "{error:?}");
    assert_eq!(
        fixture.the_route().weights,
        weights(&[("blue", 10), ("green", 90)])
    );

    // Closed: the port is free again; closing twice is no error.
    fixture.block_on(fixture.client.unroute(ENDPOINT)).unwrap();
    assert!(refused(listen));
    assert!(fixture
        .block_on(fixture.client.routes())
        .unwrap()
        .is_empty());
    fixture.block_on(fixture.client.unroute(ENDPOINT)).unwrap();
    assert_eq!(fixture.state_json()["routes"], serde_json::json!([]));
}

#[test]
fn routes_report_requests_and_a_rate() {
    let fixture = Fixture::start();
    fixture.blue_and_green();
    let listen = free_addr();
    let mut spec = route(listen, &BLUE_GREEN, &[("blue", 100)]);
    spec.mirror = Some(Mirror {
        deployment: "green".into(),
        percent: 100,
    });
    fixture.route(&spec).unwrap();

    assert_eq!(split(listen, 30), counts(&[("blue", 30)]));
    let status = eventually("the mirror copies to be counted", &fixture, || {
        let status = fixture.the_route();
        match status.backends["green"].requests {
            30 => Ok(status),
            n => Err(format!("{n} mirror copies counted")),
        }
    });
    let blue = &status.backends["blue"];
    assert_eq!((blue.requests, blue.errors), (30, 0));
    assert!(blue.requests_per_s > 0.0, "{status:#?}");
    assert_eq!((blue.replicas, blue.ready_replicas), (1, 1));
    assert!(status.backends["green"].requests_per_s > 0.0, "{status:#?}");
    assert_eq!(status.mirror, spec.mirror);
    assert!(!status.auth);
    let stats = fixture
        .block_on(fixture.client.stats(ENDPOINT, "blue"))
        .unwrap();
    assert_eq!(stats.requests, 30);
    let error = fixture
        .block_on(fixture.client.stats(ENDPOINT, "red"))
        .unwrap_err();
    assert!(matches!(error, Error::UnknownBackend { .. }), "{error:?}");
}

#[test]
fn a_port_in_use_is_refused_and_the_router_keeps_serving() {
    let fixture = Fixture::start();
    fixture.blue_and_green();
    let listen = free_addr();
    fixture
        .route(&route(listen, &BLUE_GREEN, &[("blue", 100)]))
        .unwrap();

    // Moving to a port another program holds fails and changes nothing.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let error = fixture
        .route(&route(busy, &BLUE_GREEN, &[("green", 100)]))
        .unwrap_err();
    assert!(
        matches!(error, Error::PortInUse { holder: None, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("cannot route endpoint `{ENDPOINT}` on {busy}")),
        "{message}"
    );
    assert!(message.contains("the port is in use"), "{message}");
    let status = fixture.the_route();
    assert_eq!(status.listen, listen);
    assert_eq!(status.weights, weights(&[("blue", 100)]));
    assert_eq!(split(listen, 10), counts(&[("blue", 10)]));

    // Another endpoint on this router's port is refused by name.
    let mut other = route(listen, &[], &[]);
    other.endpoint = "fraud-api".into();
    let error = fixture.route(&other).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("in use (by the router of endpoint `risk-api`)"),
        "{error}"
    );

    // A backend that does not run is refused.
    let error = fixture
        .route(&route(listen, &[("blue", "blue", "v9")], &[("blue", 100)]))
        .unwrap_err();
    assert!(matches!(error, Error::InvalidSpec { .. }), "{error:?}");
    assert!(
        error.to_string().contains("does not run; apply it first"),
        "{error}"
    );
    assert_eq!(split(listen, 10), counts(&[("blue", 10)]));

    // A free port: the router moves, and the old port closes.
    drop(taken);
    let moved = free_addr();
    let status = fixture
        .route(&route(moved, &BLUE_GREEN, &[("green", 100)]))
        .unwrap();
    assert_eq!(status.listen, moved);
    assert_eq!(split(moved, 10), counts(&[("green", 10)]));
    eventually("the old port to close", &fixture, || {
        refused(listen)
            .then_some(())
            .ok_or("still open".to_string())
    });
}

#[test]
fn requests_need_the_key_when_one_is_set() {
    use sha2::Digest;
    let fixture = Fixture::start();
    fixture.blue_and_green();
    let listen = free_addr();
    let mut spec = route(listen, &BLUE_GREEN, &[("blue", 100)]);
    spec.key_sha256 = Some(hex::encode(sha2::Sha256::digest(b"s3cret-key")));
    assert!(fixture.route(&spec).unwrap().auth);

    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Basic czNjcmV0LWtleQ==")],
    ] {
        let answer = send(listen, &headers);
        assert_eq!(answer.status, 401, "{headers:?}: {answer:?}");
        assert_eq!(answer.authenticate.as_deref(), Some("Bearer"));
        assert!(answer.body["error"].is_string(), "{answer:?}");
        assert_eq!(answer.deployment, None);
    }
    let answer = send(listen, &[("authorization", "Bearer s3cret-key")]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.deployment.as_deref(), Some("blue"));
    // Refused requests are nobody's traffic.
    assert_eq!(fixture.the_route().backends["blue"].requests, 1);

    // Only the digest is kept; the key is nowhere.
    let state = std::fs::read_to_string(fixture.state_dir().join(supervisor::STATE_FILE)).unwrap();
    assert!(state.contains(spec.key_sha256.as_deref().unwrap()));
    assert!(!state.contains("s3cret-key"));
    assert!(!fixture.daemon_log().contains("s3cret-key"));
    assert!(!fixture
        .daemon_log()
        .contains(spec.key_sha256.as_deref().unwrap()));

    // A route update lifts it.
    spec.key_sha256 = None;
    assert!(!fixture.route(&spec).unwrap().auth);
    assert_eq!(send(listen, &[]).status, 200);
}

#[test]
fn a_crashed_replica_is_routed_to_again_where_it_restarts() {
    let fixture = Fixture::start();
    let applied = fixture.apply(&[fixture.spec("blue", "v1", 1)]).unwrap();
    let (pid, old) = (applied[0].pid.unwrap(), applied[0].addr.unwrap());
    let listen = free_addr();
    fixture
        .route(&route(listen, &[("blue", "blue", "v1")], &[("blue", 100)]))
        .unwrap();
    assert_eq!(split(listen, 3), counts(&[("blue", 3)]));

    // Killed, with its port taken meanwhile: it restarts on another port.
    kill(pid, libc::SIGKILL);
    wait_gone(&[pid]);
    let squatter = eventually("the old port to be free", &fixture, || {
        TcpListener::bind(old).map_err(|e| e.to_string())
    });
    let restarted = fixture.wait_status("the replica to restart", |s| {
        s.len() == 1 && s[0].state == ReplicaState::Ready && s[0].pid != Some(pid)
    });
    assert_ne!(restarted[0].addr, Some(old));
    drop(squatter);
    assert_eq!(split(listen, 3), counts(&[("blue", 3)]));

    // With no replica ready, the router answers 502 from the last known address.
    let pid = restarted[0].pid.unwrap();
    kill(pid, libc::SIGKILL);
    wait_gone(&[pid]);
    let answer = send(listen, &[]);
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.body["error"].is_string(), "{answer:?}");
    let back = fixture.wait_status("the replica to restart again", |s| {
        s.len() == 1 && s[0].state == ReplicaState::Ready && s[0].pid != Some(pid)
    });
    assert_eq!(back[0].restarts, 2);
    eventually("requests to succeed again", &fixture, || {
        let answer = send(listen, &[]);
        (answer.status == 200)
            .then_some(())
            .ok_or(format!("{answer:?}"))
    });
    assert!(fixture
        .daemon_log()
        .contains("routes changed: backend `blue` now on"));
}

#[test]
fn a_new_daemon_binds_the_routers_again() {
    let fixture = Fixture::start();
    fixture.blue_and_green();
    let listen = free_addr();
    fixture
        .route(&route(listen, &BLUE_GREEN, &[("blue", 80), ("green", 20)]))
        .unwrap();
    let before = fixture.status();

    // With its watchdog (which would keep the port and start the next daemon itself).
    fixture.kill_supervisor();
    eventually("the router to die with its daemon", &fixture, || {
        refused(listen)
            .then_some(())
            .ok_or("still open".to_string())
    });
    fixture.ensure_running();
    let status = fixture.the_route();
    assert!(status.serving, "{status:#?}");
    assert_eq!(status.listen, listen);
    assert_eq!(status.weights, weights(&[("blue", 80), ("green", 20)]));
    assert_eq!(split(listen, 100), counts(&[("blue", 80), ("green", 20)]));
    assert_eq!(pids(&fixture.status()), pids(&before), "replicas adopted");

    // Its port taken when the next daemon starts: recorded, and bound once free.
    fixture.kill_supervisor();
    let squatter = eventually("the router's port to be free", &fixture, || {
        TcpListener::bind(listen).map_err(|e| e.to_string())
    });
    fixture.ensure_running();
    let status = fixture.the_route();
    assert!(!status.serving, "{status:#?}");
    let error = status.error.unwrap_or_default();
    assert!(error.contains(&format!("{listen} is in use")), "{error}");
    let stats = fixture.block_on(fixture.client.stats(ENDPOINT, "blue"));
    assert!(matches!(stats, Err(Error::NotServing { .. })), "{stats:?}");
    drop(squatter);
    eventually("the router to be bound again", &fixture, || {
        let status = fixture.the_route();
        status.serving.then_some(()).ok_or(format!("{status:#?}"))
    });
    assert_eq!(split(listen, 100), counts(&[("blue", 80), ("green", 20)]));
    let log = fixture.daemon_log();
    assert!(log.contains("not serving"), "{log}");
    assert!(
        log.contains(&format!("router serving on {listen}")),
        "{log}"
    );

    // Shutdown closes it.
    fixture.block_on(fixture.client.shutdown()).unwrap();
    assert!(refused(listen));
}

#[test]
fn stop_is_refused_while_a_route_sends_traffic() {
    let fixture = Fixture::start();
    fixture.blue_and_green();
    let listen = free_addr();
    let mut spec = route(listen, &BLUE_GREEN, &[("blue", 100), ("green", 0)]);
    spec.mirror = Some(Mirror {
        deployment: "green".into(),
        percent: 50,
    });
    fixture.route(&spec).unwrap();

    let error = fixture
        .block_on(fixture.client.stop(ENDPOINT, "blue", None))
        .unwrap_err();
    assert!(
        matches!(error, Error::StillRouted { weight: 100, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(
            "`risk-api/blue@v1` still gets 100 % of the traffic of endpoint `risk-api` \
             (backend `blue`); set its weight to 0 first"
        ),
        "{error}"
    );
    assert_eq!(of(&fixture.status(), "v1").len(), 1, "blue still runs");

    // At 0 %, it is taken off the route (and the mirror), then stopped.
    let green = pids(&of(&fixture.status(), "v2"));
    fixture
        .block_on(fixture.client.stop(ENDPOINT, "green", Some("v2")))
        .unwrap();
    assert!(gone(green[0]));
    let status = fixture.the_route();
    assert_eq!(status.backends.keys().collect::<Vec<_>>(), ["blue"]);
    assert_eq!(status.weights, weights(&[("blue", 100)]));
    assert_eq!(status.mirror, None);
    assert_eq!(split(listen, 10), counts(&[("blue", 10)]));
    let answer = send(listen, &[("x-cairn-deployment", "green")]);
    assert_eq!(answer.status, 404, "{answer:?}");
}

#[test]
fn stop_later_retires_a_revision_on_time_even_across_a_daemon_restart() {
    let fixture = Fixture::start();
    let listen = free_addr();
    fixture
        .apply(&[
            fixture.spec("blue", "v1", 1),
            fixture.spec("blue", "v2", 1),
            fixture.spec("blue", "v3", 1),
        ])
        .unwrap();
    let backends = [
        ("blue@v1", "blue", "v1"),
        ("blue@v2", "blue", "v2"),
        ("blue@v3", "blue", "v3"),
    ];
    fixture
        .route(&route(listen, &backends, &[("blue@v2", 100)]))
        .unwrap();
    let v1 = pids(&of(&fixture.status(), "v1"));
    let v3 = pids(&of(&fixture.status(), "v3"));

    // v1 serves pinned requests until its time comes, then stops.
    let scheduled = Instant::now();
    fixture
        .block_on(
            fixture
                .client
                .stop_later(ENDPOINT, "blue", "v1", Duration::from_secs(1)),
        )
        .unwrap();
    let answer = send(listen, &[("x-cairn-deployment", "blue@v1")]);
    assert_eq!(answer.body["version"], "v1", "{answer:?}");
    // A weighted revision's scheduled stop is dropped when its time comes.
    fixture
        .block_on(
            fixture
                .client
                .stop_later(ENDPOINT, "blue", "v2", Duration::from_millis(100)),
        )
        .unwrap();
    wait_gone(&v1);
    let took = scheduled.elapsed();
    assert!(took >= Duration::from_secs(1), "stopped after {took:?}");
    let status = fixture.the_route();
    assert_eq!(
        status.backends.keys().collect::<Vec<_>>(),
        ["blue@v2", "blue@v3"]
    );
    assert_eq!(of(&fixture.status(), "v2").len(), 1);
    eventually("the retirement to be logged", &fixture, || {
        let log = fixture.daemon_log();
        log.contains("risk-api/blue@v1: retired")
            .then_some(())
            .ok_or(log)
    });
    assert!(fixture
        .daemon_log()
        .contains("risk-api/blue@v2: scheduled stop cancelled"));

    // Recorded: a daemon killed meanwhile is replaced by one that stops it on time.
    fixture
        .block_on(
            fixture
                .client
                .stop_later(ENDPOINT, "blue", "v3", Duration::from_secs(1)),
        )
        .unwrap();
    let old = fixture.daemon_pid();
    kill(old, libc::SIGKILL);
    wait_gone(&[old]);
    fixture.ensure_running();
    wait_gone(&v3);
    fixture.wait_status("v3 to be forgotten", |s| of(s, "v3").is_empty());
    let status = fixture.the_route();
    assert_eq!(status.backends.keys().collect::<Vec<_>>(), ["blue@v2"]);
    assert!(status.serving);
    assert_eq!(split(listen, 5), counts(&[("blue", 5)]));
}

#[test]
fn applying_a_revision_again_cancels_its_scheduled_stop() {
    let fixture = Fixture::start();
    let v1 = fixture.apply(&[fixture.spec("blue", "v1", 1)]).unwrap();
    fixture
        .block_on(
            fixture
                .client
                .stop_later(ENDPOINT, "blue", "v1", Duration::from_secs(1)),
        )
        .unwrap();
    assert_eq!(fixture.state_json()["retirements"][0]["revision"], "v1");
    fixture.apply(&[fixture.spec("blue", "v1", 1)]).unwrap();
    assert_eq!(fixture.state_json()["retirements"], serde_json::json!([]));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(pids(&fixture.status()), pids(&v1));
    // Nothing running by that name: nothing to schedule, and no error.
    fixture
        .block_on(
            fixture
                .client
                .stop_later(ENDPOINT, "blue", "v9", Duration::from_millis(1)),
        )
        .unwrap();
    assert!(fixture
        .daemon_log()
        .contains("scheduled stop cancelled: applied again"));
}

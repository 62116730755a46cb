//! Serving benchmark: predictions through the local router against the model server
//! reached directly and through nginx (the peer: Debian's package, as a reverse proxy with
//! keep-alive upstream connections), with the CPU each part spends per request; and how
//! fast a blue-green switch driven by the rollout engine moves traffic once the new
//! deployment is ready. Prints figures; it has no pass/fail threshold besides "no request
//! fails".
//!
//! Set-up, all on this machine: a model trained with the library on generated data; two
//! real `cairn serve` processes (`--name blue`, `--name green`, on free loopback ports); the
//! router (`cairn::backend::local::router`) in this process on a runtime of its own; and a
//! load generator in this process on another runtime: hyper HTTP/1.1 connections kept
//! alive, each sending real `POST /v1/predict` bodies one after the other.
//!
//! 1. Closed loop: `CAIRN_BENCH_CONNS` connections send as fast as answers come, for
//!    `CAIRN_BENCH_SECS` seconds: the maximum throughput and its latency (from send to the
//!    whole response).
//! 2. Open loop: `CAIRN_BENCH_RATE` requests/s (2,000 by default) spread over
//!    `CAIRN_BENCH_OPEN_CONNS` connections, each request due at a fixed time; latency is
//!    counted from when the request was due, so a stalled server is not hidden by the
//!    client waiting for it (no coordinated omission).
//!
//! Each runs against blue directly, through the router (all traffic to blue) and through
//! nginx (upstream blue), after a short warm-up, and they are printed side by side with
//! the CPU time (from `/proc/…/schedstat`) per request of the proxy (the router's worker
//! threads, or nginx's processes), of blue and of the load generator, and the proxy's
//! context switches per request. `CAIRN_BENCH_SKIP=nginx` leaves nginx out; smoke runs
//! (`cargo test`) always do.
//!
//! 3. Switch: the router sends 100 % to blue under open-loop load; green is started; the
//!    rollout engine (`cairn::rollout::run` with the router's `Handle` as `Traffic`, steps
//!    `[100]`, no step wait, polling readiness every 5 ms) waits for green to be ready and
//!    moves all traffic to it. The bench polls green's `/healthz` every 5 ms itself and
//!    measures from the first 200 to (a) the first response carrying
//!    `x-cairn-deployment: green` and (b) the last request that blue answered, after which
//!    every new request goes to green. Both can come out slightly negative: the bench's
//!    and the router's readiness polls are independent, 5 ms apart each. Repeated
//!    `CAIRN_BENCH_SWITCHES` times (a fresh green process and port each time); no request
//!    may fail.
//!
//! Knobs (environment): `CAIRN_BENCH_SECS` (default 4), `CAIRN_BENCH_CONNS` (16),
//! `CAIRN_BENCH_RATE` (2000), `CAIRN_BENCH_OPEN_CONNS` (64), `CAIRN_BENCH_SWITCHES` (5),
//! `CAIRN_BENCH_ROUTER_THREADS` (2: the router's workers, and nginx's worker processes),
//! `CAIRN_BENCH_CLIENT_THREADS` (2). With the defaults
//! the whole run takes well under two minutes.
//!
//! Caveat: the client, the router and both servers share this machine's cores, so the
//! router's figures include competing with the client for CPU: compare the columns with
//! each other, not with other machines.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::backend::local::router::{self, Handle, RouterOptions, Routes};
use cairn::rollout::{self, Outcome, RolloutEvent, RolloutPolicy, Weights};
use cairn::workload::{train, TrainOptions};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use support::cpu;
use tokio::net::TcpStream;

fn main() {
    let config = Config::from_env();
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let model = trained(tmp.path());

    let blue = Serving::start(&model, "blue", tmp.path());
    let router_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control")
        .enable_all()
        .build()
        .expect("the router's runtime");
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.client_threads)
        .thread_name("client")
        .enable_all()
        .build()
        .expect("the client's runtime");

    client.block_on(wait_ready(blue.addr, Duration::from_secs(20)));
    // Green's first port: nothing listens there until a switch starts it.
    let routes = routes(blue.addr, free_port());
    let mut options = RouterOptions::new("127.0.0.1:0".parse().unwrap(), routes);
    options.probe_timeout = Duration::from_millis(300);
    options.workers = config.router_threads;
    let bound = router_runtime
        .block_on(router::bind(options))
        .expect("the router binds");
    let router_addr = bound.local_addr();
    let handle = bound.handle();
    let (stop_router, router_stopped) = tokio::sync::oneshot::channel::<()>();
    let router_task = router_runtime.spawn(bound.run(async {
        let _ = router_stopped.await;
    }));

    figure!(
        "serving bench: {} CPU(s); blue {} (cairn serve), router {} (in process, {} thread(s)), \
         client {} thread(s); {} s per measurement",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        blue.addr,
        router_addr,
        config.router_threads,
        config.client_threads,
        config.secs.as_secs_f64()
    );

    let nginx = if skipped("nginx") {
        None
    } else {
        Some(Nginx::start(blue.addr, config.router_threads, tmp.path()))
    };
    let mut targets = vec![
        Target {
            label: "direct (blue)",
            addr: blue.addr,
            proxy: None,
        },
        Target {
            label: "router → blue",
            addr: router_addr,
            proxy: Some(cpu::Part::Threads("router-")),
        },
    ];
    if let Some(nginx) = &nginx {
        client.block_on(wait_ready(nginx.addr, Duration::from_secs(20)));
        targets.push(Target {
            label: "nginx → blue",
            addr: nginx.addr,
            proxy: Some(cpu::Part::Processes(vec![nginx.child.id()])),
        });
    }
    let replica = cpu::Part::Processes(vec![blue.child.id()]);
    let load_generator = cpu::Part::Threads("client");

    let bodies = Arc::new(bodies());
    let mut rows = Vec::new();
    for (pace, conns) in [
        (Pace::Closed, config.conns),
        (Pace::Open(config.rate), config.open_conns),
    ] {
        let mut measured = Vec::new();
        for target in &targets {
            // Warm-up: connections, caches, the proxy's pool to blue.
            client.block_on(load(
                target.addr,
                conns,
                pace,
                Duration::from_millis(500),
                &bodies,
                None,
            ));
            let parts = |p: &Option<cpu::Part>| p.as_ref().map(cpu::Part::usage);
            let before = (
                parts(&target.proxy),
                replica.usage(),
                load_generator.usage(),
            );
            let run = client.block_on(load(target.addr, conns, pace, config.secs, &bodies, None));
            let mut summary = run.summary();
            summary.proxy = parts(&target.proxy).zip(before.0).map(|(a, b)| a.since(b));
            summary.replica = Some(replica.usage().since(before.1));
            summary.client = Some(load_generator.usage().since(before.2));
            measured.push(summary);
        }
        rows.push((pace, conns, measured));
    }
    let labels: Vec<&str> = targets.iter().map(|t| t.label).collect();
    print!("{}", table(&labels, &rows));
    figure!(
        "(closed loop: each side runs at its own maximum, so latencies compare unlike loads; \
         the open loop compares them at the same rate. CPU from /proc schedstat of the \
         proxy's threads (router workers, or nginx's master and workers), of blue's process \
         and of the load generator's threads; switches are voluntary + involuntary context \
         switches of the proxy.)"
    );
    drop(nginx);

    let switches = switches(&config, &client, &handle, &model, blue.addr, tmp.path());

    let _ = stop_router.send(());
    let _ = router_runtime.block_on(router_task);
    drop(blue);
    figure!("total bench time {:.1} s", started.elapsed().as_secs_f64());

    let failed: u64 = rows
        .iter()
        .flat_map(|(_, _, measured)| measured.iter().map(|s| s.failures))
        .chain(switches.iter().map(|s| s.failures))
        .sum();
    assert_eq!(failed, 0, "requests failed (see above)");
    let stats = handle.stats("blue").expect("blue's counters");
    assert_eq!(stats.errors, 0, "the router counted errors on blue");
    support::finish();
}

/// The knobs, from the environment.
struct Config {
    secs: Duration,
    conns: usize,
    rate: f64,
    open_conns: usize,
    switches: usize,
    router_threads: usize,
    client_threads: usize,
}

impl Config {
    fn from_env() -> Config {
        use support::knob as var;
        Config {
            secs: Duration::from_secs_f64(var("CAIRN_BENCH_SECS", 4.0, 0.3)),
            conns: var("CAIRN_BENCH_CONNS", 16usize, 4).max(1),
            rate: var("CAIRN_BENCH_RATE", 2000.0, 200.0),
            open_conns: var("CAIRN_BENCH_OPEN_CONNS", 64usize, 8).max(1),
            switches: var("CAIRN_BENCH_SWITCHES", 5usize, 1),
            router_threads: var("CAIRN_BENCH_ROUTER_THREADS", 2usize, 2).max(1),
            client_threads: var("CAIRN_BENCH_CLIENT_THREADS", 2usize, 2).max(1),
        }
    }
}

/// What the load is sent to, and which threads are its proxy's.
struct Target {
    label: &'static str,
    addr: SocketAddr,
    proxy: Option<cpu::Part>,
}

/// Whether `CAIRN_BENCH_SKIP` (a comma-separated list) names `what`, or this is a smoke
/// run and `what` is a peer.
fn skipped(what: &str) -> bool {
    std::env::var("CAIRN_BENCH_SKIP").is_ok_and(|v| v.split(',').any(|s| s.trim() == what))
        || support::skip_peer(what)
}

/// Debian's nginx as the peer: a weighted reverse proxy with keep-alive connections to
/// the same upstream (blue; nginx's weights start at 1, so the router's 100/0 split is
/// an upstream of blue alone), as many worker processes as the router has workers, no
/// access log (the router writes none). Stopped on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(blue: SocketAddr, workers: usize, tmp: &Path) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "nginx is the serving bench's peer: install it (apt-get install nginx), or \
                 leave it out with CAIRN_BENCH_SKIP=nginx",
            );
        let dir = tmp.join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let d = dir.display();
        let config = format!(
            r#"{user}
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream blue_green {{
        server {blue} weight=100;
        keepalive 64;
        # nginx closes a kept-alive connection after 1,000 requests by default (both
        # sides); the router never does, and the load generator counts a closed
        # connection as a failed request.
        keepalive_requests 100000000;
    }}
    server {{
        listen {addr};
        keepalive_requests 100000000;
        location / {{
            proxy_pass http://blue_green;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#,
            user = if root { "user root;" } else { "" },
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Nginx { child, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: a plain kill(2) of our own child's pid; SIGQUIT is nginx's graceful stop.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let _ = self.child.wait();
    }
}

/// Trains the model the servers load, with the real trainer, on generated data.
fn trained(tmp: &Path) -> PathBuf {
    let mut csv = String::from("age,income,utilization,label\n");
    let mut rng = Lcg(7);
    for _ in 0..2_000 {
        let (age, income, utilization) = (
            20.0 + 50.0 * rng.float(),
            20e3 + 80e3 * rng.float(),
            rng.float(),
        );
        let label = u8::from(utilization + 0.01 * (45.0 - age) + rng.float() > 1.0);
        writeln!(csv, "{age:.1},{income:.0},{utilization:.3},{label}").unwrap();
    }
    let data = tmp.join("data.csv");
    std::fs::write(&data, csv).expect("the data is written");
    let dir = tmp.join("model");
    train(&TrainOptions {
        data,
        out: dir.clone(),
        ..TrainOptions::default()
    })
    .expect("the model trains");
    dir
}

/// Prediction bodies, one to three rows each, sent in turn.
fn bodies() -> Vec<Bytes> {
    let mut rng = Lcg(11);
    (0..32)
        .map(|i| {
            let rows: Vec<String> = (0..1 + i % 3)
                .map(|_| {
                    format!(
                        r#"{{"age": {:.0}, "income": {:.0}, "utilization": {:.3}}}"#,
                        18.0 + 60.0 * rng.float(),
                        10e3 + 120e3 * rng.float(),
                        rng.float()
                    )
                })
                .collect();
            Bytes::from(format!(r#"{{"rows": [{}]}}"#, rows.join(", ")))
        })
        .collect()
}

/// A tiny deterministic generator of numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn float(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Returns a loopback port nothing listens on (now).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

fn routes(blue: SocketAddr, green_port: u16) -> Routes {
    Routes {
        deployments: BTreeMap::from([
            ("blue".to_string(), vec![blue]),
            (
                "green".to_string(),
                vec![SocketAddr::from(([127, 0, 0, 1], green_port))],
            ),
        ]),
        weights: weights(100, 0),
        mirror: None,
        key_sha256: None,
        capture: None,
        counter_keys: BTreeMap::new(),
        health: BTreeMap::new(),
    }
}

fn weights(blue: u32, green: u32) -> Weights {
    Weights::from([("blue".to_string(), blue), ("green".to_string(), green)])
}

/// A running `cairn serve`, stopped (SIGTERM, then waited for) on drop.
struct Serving {
    child: Child,
    addr: SocketAddr,
}

impl Serving {
    fn start(model: &Path, name: &str, logs: &Path) -> Serving {
        Serving::start_on(model, name, free_port(), logs)
    }

    fn start_on(model: &Path, name: &str, port: u16, logs: &Path) -> Serving {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(logs.join(format!("{name}-{port}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--listen", &addr.to_string(), "--name", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cairn serve starts");
        Serving { child, addr }
    }

    /// Sends SIGTERM and waits until the server has finished its requests and exited.
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: a plain kill(2) of our own child's pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Polls `GET /healthz` every 5 ms until it answers 200; returns when it did.
async fn wait_ready(addr: SocketAddr, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if healthz(addr).await == Some(StatusCode::OK) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not ready after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET /healthz` on a fresh connection: the status, or `None` when nothing answers.
async fn healthz(addr: SocketAddr) -> Option<StatusCode> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header(HOST, addr.to_string())
        .body(Empty::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    Some(status)
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Each connection sends its next request when the answer to the last one is in.
    Closed,
    /// Requests per second over all connections, each due at a fixed time.
    Open(f64),
}

/// Which deployment answered, from `x-cairn-deployment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    Blue,
    Green,
    Other,
}

/// One answered request, kept during switches.
#[derive(Debug, Clone, Copy)]
struct Event {
    sent: Instant,
    done: Instant,
    by: Answered,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Seen {
    /// Latency of each successful request, in microseconds.
    latencies: Vec<u64>,
    failures: u64,
    first_failure: Option<String>,
    /// Every successful request, when asked for.
    events: Vec<Event>,
}

/// What all connections saw in one measurement.
struct Run {
    seen: Seen,
    elapsed: Duration,
}

/// Runs `conns` connections against `addr` for `duration` (or until `stop` is set).
async fn load(
    addr: SocketAddr,
    conns: usize,
    pace: Pace,
    duration: Duration,
    bodies: &Arc<Vec<Bytes>>,
    stop: Option<(Arc<AtomicBool>, bool)>,
) -> Run {
    let start = Instant::now();
    let deadline = start + duration;
    let (stop, keep_events) = stop.unwrap_or_else(|| (Arc::new(AtomicBool::new(false)), false));
    let workers: Vec<_> = (0..conns)
        .map(|index| {
            let bodies = bodies.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                connection(
                    addr,
                    index,
                    conns,
                    pace,
                    (start, deadline),
                    &bodies,
                    &stop,
                    keep_events,
                )
                .await
            })
        })
        .collect();
    let mut seen = Seen::default();
    for worker in workers {
        let one = worker.await.expect("a load connection does not panic");
        seen.latencies.extend(one.latencies);
        seen.failures += one.failures;
        if seen.first_failure.is_none() {
            seen.first_failure = one.first_failure;
        }
        seen.events.extend(one.events);
    }
    Run {
        seen,
        elapsed: start.elapsed(),
    }
}

/// One keep-alive connection's loop; reconnects after a failure.
#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: SocketAddr,
    index: usize,
    conns: usize,
    pace: Pace,
    (start, deadline): (Instant, Instant),
    bodies: &[Bytes],
    stop: &AtomicBool,
    keep_events: bool,
) -> Seen {
    let mut seen = Seen::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    for k in 0.. {
        let due = match pace {
            Pace::Closed => Instant::now(),
            Pace::Open(rate) => start + Duration::from_secs_f64((index + k * conns) as f64 / rate),
        };
        if due >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        if let Pace::Open(_) = pace {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        let body = bodies[(index + k) % bodies.len()].clone();
        match predict(&mut sender, addr, body).await {
            Ok(by) => {
                let done = Instant::now();
                let latency = done.saturating_duration_since(due);
                seen.latencies
                    .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                if keep_events {
                    seen.events.push(Event { sent, done, by });
                }
            }
            Err(error) => {
                seen.failures += 1;
                seen.first_failure.get_or_insert(error);
                sender = None;
            }
        }
    }
    seen
}

/// Sends one prediction on the connection (opening it when there is none).
async fn predict(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    body: Bytes,
) -> Result<Answered, String> {
    if sender.is_none() {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (new, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        tokio::spawn(connection);
        *sender = Some(new);
    }
    let sender = sender.as_mut().expect("just connected");
    sender
        .ready()
        .await
        .map_err(|e| format!("connection to {addr}: {e}"))?;
    let request = Request::post("/v1/predict")
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("POST {addr}/v1/predict: {e}"))?;
    let status = response.status();
    let by = match response
        .headers()
        .get("x-cairn-deployment")
        .map(|v| v.as_bytes())
    {
        Some(b"blue") => Answered::Blue,
        Some(b"green") => Answered::Green,
        _ => Answered::Other,
    };
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer of {addr}: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "{status} from {by:?}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(by)
}

/// One measurement's figures.
#[derive(Debug, Clone)]
struct Summary {
    requests: u64,
    failures: u64,
    first_failure: Option<String>,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU of the proxy (router or nginx), of blue, of the load generator.
    proxy: Option<cpu::Usage>,
    replica: Option<cpu::Usage>,
    client: Option<cpu::Usage>,
}

impl Run {
    fn summary(mut self) -> Summary {
        let latencies = &mut self.seen.latencies;
        latencies.sort_unstable();
        let quantile = |q: f64| -> f64 {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
            latencies[rank - 1] as f64 / 1000.0
        };
        let summary = Summary {
            requests: latencies.len() as u64,
            failures: self.seen.failures,
            first_failure: self.seen.first_failure.take(),
            rate: latencies.len() as f64 / self.elapsed.as_secs_f64(),
            p50_ms: quantile(0.50),
            p99_ms: quantile(0.99),
            max_ms: quantile(1.0),
            proxy: None,
            replica: None,
            client: None,
        };
        if let Some(failure) = &summary.first_failure {
            figure!(
                "  {} request(s) failed; the first: {failure}",
                summary.failures
            );
        }
        summary
    }
}

/// The side-by-side table: direct, through the router, through nginx, with the CPU each
/// part spent per request.
fn table(labels: &[&str], rows: &[(Pace, usize, Vec<Summary>)]) -> String {
    let mut out = String::new();
    write!(out, "\n{:<34}", "").unwrap();
    for label in labels {
        write!(out, " {label:>15}").unwrap();
    }
    writeln!(out).unwrap();
    for (pace, conns, measured) in rows {
        let title = match pace {
            Pace::Closed => format!("closed loop, {conns} connections"),
            Pace::Open(rate) => format!("open loop at {rate:.0} req/s, {conns} connections"),
        };
        writeln!(out, "{title}").unwrap();
        let rate_label = match pace {
            Pace::Closed => "  throughput (req/s)",
            Pace::Open(_) => "  achieved rate (req/s)",
        };
        let mut line = |label: &str, cell: &dyn Fn(&Summary) -> String| {
            write!(out, "{label:<34}").unwrap();
            for summary in measured {
                write!(out, " {:>15}", cell(summary)).unwrap();
            }
            writeln!(out).unwrap();
        };
        let direct = measured[0].rate;
        line(rate_label, &|s| format!("{:.0}", s.rate));
        line("  vs direct", &|s| {
            format!("{:+.1}%", (s.rate / direct - 1.0) * 100.0)
        });
        line("  latency p50 (ms)", &|s| format!("{:.3}", s.p50_ms));
        line("  latency p99 (ms)", &|s| format!("{:.3}", s.p99_ms));
        line("  latency max (ms)", &|s| format!("{:.3}", s.max_ms));
        let per = |usage: Option<cpu::Usage>, s: &Summary| match usage {
            Some(u) => format!("{:.1}", u.us_per(s.requests)),
            None => "-".to_string(),
        };
        line("  proxy CPU (µs/request)", &|s| per(s.proxy, s));
        line("  proxy switches / request", &|s| match s.proxy {
            Some(u) => format!("{:.2}", u.switches_per(s.requests)),
            None => "-".to_string(),
        });
        line("  replica CPU (µs/request)", &|s| per(s.replica, s));
        line("  client CPU (µs/request)", &|s| per(s.client, s));
        line("  requests ok / failed", &|s| {
            format!("{} / {}", s.requests, s.failures)
        });
    }
    out
}

/// One blue → green switch's figures, in milliseconds from green's first ready answer.
#[derive(Debug, Clone)]
struct Switch {
    /// From starting the process to its first ready answer.
    startup_ms: f64,
    /// To the rollout engine setting the weights (its `Step` event).
    weights_set_ms: f64,
    /// To the first response from green.
    first_green_ms: f64,
    /// To the send time of the last request blue answered: every later request went to
    /// green.
    all_green_ms: f64,
    requests: usize,
    failures: u64,
}

/// Runs the blue → green switches and prints their figures.
fn switches(
    config: &Config,
    client: &tokio::runtime::Runtime,
    handle: &Handle,
    model: &Path,
    blue: SocketAddr,
    logs: &Path,
) -> Vec<Switch> {
    let bodies = Arc::new(bodies());
    let mut results = Vec::new();
    figure!(
        "\nswitch blue → green under {:.0} req/s through the router (rollout engine, steps \
         [100], step_wait 0, readiness polled every 5 ms), {} time(s):",
        config.rate,
        config.switches
    );
    for round in 1..=config.switches {
        let port = free_port();
        handle
            .set_routes(routes(blue, port))
            .expect("the routes are valid");
        let green_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let result = client.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let traffic = tokio::spawn({
                let bodies = bodies.clone();
                let stop = stop.clone();
                let router = handle.local_addr();
                let (conns, rate) = (config.open_conns, config.rate);
                async move {
                    load(
                        router,
                        conns,
                        Pace::Open(rate),
                        Duration::from_secs(60),
                        &bodies,
                        Some((stop, true)),
                    )
                    .await
                }
            });
            // Load on blue alone first.
            tokio::time::sleep(Duration::from_millis(300)).await;

            let spawned = Instant::now();
            let green = Serving::start_on(model, "green", port, logs);
            let step_at: Arc<Mutex<Option<Instant>>> = Arc::default();
            let rollout = tokio::spawn({
                let handle = handle.clone();
                let step_at = step_at.clone();
                async move {
                    let policy = RolloutPolicy {
                        steps: vec![100],
                        step_wait: Duration::ZERO,
                        poll: Duration::from_millis(5),
                        ready_timeout: Duration::from_secs(30),
                        ..RolloutPolicy::default()
                    };
                    let on_event = move |event: RolloutEvent| {
                        if let RolloutEvent::Step { .. } = event {
                            step_at.lock().unwrap().get_or_insert(Instant::now());
                        }
                    };
                    rollout::run(
                        &handle,
                        &weights(100, 0),
                        &weights(0, 100),
                        &policy,
                        &on_event,
                    )
                    .await
                }
            });
            let ready = wait_ready(green_addr, Duration::from_secs(30)).await;
            let outcome = rollout
                .await
                .expect("the rollout does not panic")
                .expect("the rollout runs");
            assert!(
                matches!(outcome, Outcome::Promoted { .. }),
                "round {round}: {outcome:?}"
            );
            // Green alone for a while.
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::Relaxed);
            let run = traffic.await.expect("the load does not panic");
            let step_at = step_at
                .lock()
                .unwrap()
                .expect("the rollout set the weights");
            (green, spawned, ready, step_at, run)
        });
        let (green, spawned, ready, step_at, run) = result;
        // Back to blue before green stops, so that nothing is routed to a stopping server.
        handle
            .set_weights(&weights(100, 0))
            .expect("the weights are valid");
        green.stop();

        let signed_ms = |at: Instant| {
            if at >= ready {
                at.duration_since(ready).as_secs_f64() * 1000.0
            } else {
                -(ready.duration_since(at).as_secs_f64() * 1000.0)
            }
        };
        let first_green = run
            .seen
            .events
            .iter()
            .filter(|e| e.by == Answered::Green)
            .map(|e| e.done)
            .min()
            .expect("green answered");
        let last_blue = run
            .seen
            .events
            .iter()
            .filter(|e| e.by == Answered::Blue)
            .map(|e| e.sent)
            .max()
            .expect("blue answered");
        let others = run
            .seen
            .events
            .iter()
            .filter(|e| e.by == Answered::Other)
            .count();
        let switch = Switch {
            startup_ms: ready.duration_since(spawned).as_secs_f64() * 1000.0,
            weights_set_ms: signed_ms(step_at),
            first_green_ms: signed_ms(first_green),
            all_green_ms: signed_ms(last_blue),
            requests: run.seen.events.len(),
            failures: run.seen.failures + others as u64,
        };
        figure!(
            "  round {round}: green ready {:.0} ms after start; from ready: weights set {:+.1} ms, \
             first green answer {:+.1} ms, all new requests to green {:+.1} ms; {} requests, \
             {} failed",
            switch.startup_ms,
            switch.weights_set_ms,
            switch.first_green_ms,
            switch.all_green_ms,
            switch.requests,
            switch.failures
        );
        if let Some(failure) = &run.seen.first_failure {
            figure!("    first failure: {failure}");
        }
        results.push(switch);
    }
    if results.is_empty() {
        return results;
    }
    let stat = |f: fn(&Switch) -> f64| {
        let mut values: Vec<f64> = results.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        (values[values.len() / 2], values[values.len() - 1])
    };
    figure!(
        "{:<44} {:>10} {:>10}",
        "switch, from green's first ready answer",
        "median",
        "max"
    );
    for (label, f) in [
        (
            "  rollout engine sets the weights (ms)",
            (|s: &Switch| s.weights_set_ms) as fn(&Switch) -> f64,
        ),
        ("  first response from green (ms)", |s| s.first_green_ms),
        ("  100 % of new requests to green (ms)", |s| s.all_green_ms),
        ("  (green start-up to ready, ms)", |s| s.startup_ms),
    ] {
        let (median, max) = stat(f);
        figure!("{label:<44} {median:>10.1} {max:>10.1}");
    }
    figure!(
        "  failed requests during switches: {}",
        results.iter().map(|s| s.failures).sum::<u64>()
    );
    results
}

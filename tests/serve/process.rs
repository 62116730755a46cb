//! The real `cairn serve` binary. It listens on port 0 and reports the bound address on
//! stderr (`listening on http://ADDR`), which the tests read: no guessing a free port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    agent, assert_scores, corrupt_model, rows, trained, try_get, try_post, wait_ready, SlowRequest,
    VERSION,
};

/// A running `cairn serve`, with its stderr collected line by line.
pub(crate) struct Serving {
    child: Child,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Serving {
    pub(crate) fn spawn(model: &Path, extra: &[&str]) -> Serving {
        let mut args = vec!["serve", "--model", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        Serving::spawn_cairn(&args)
    }

    /// Any `cairn` command that reports `listening on http://ADDR` (`pod-proxy`).
    fn spawn_cairn(args: &[&str]) -> Serving {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let collected = stderr.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
        });
        Serving {
            child,
            stderr,
            lines,
            reader: Some(reader),
        }
    }

    /// The address from the `listening on http://ADDR` line (waits up to 10 s).
    #[track_caller]
    pub(crate) fn addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `listening on` line; stderr:\n{}", self.stderr()));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split(' ').next().unwrap_or_default();
                return addr
                    .parse()
                    .unwrap_or_else(|_| panic!("bad address in {line:?}"));
            }
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: sends a signal to our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits (up to 10 s) for the exit; returns the exit code and all of stderr.
    #[track_caller]
    fn wait(&mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "cairn serve did not exit in 10 s; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status.code().unwrap_or(-1), self.stderr())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // A failed test must not leave the server behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn serves_then_stops_on_sigterm_without_failing_a_request() {
    let trained = trained();
    let mut serving = Serving::spawn(
        &trained.dir,
        &["--listen", "127.0.0.1:0", "--name", "green"],
    );
    let addr = serving.addr();
    assert_eq!(
        wait_ready(addr),
        json!({"status": "ready", "model": "green", "version": VERSION})
    );

    let (json_rows, maps) = rows(20, 21);
    let body = json!({"rows": json_rows}).to_string();
    let reply = try_post(&agent(), addr, &body).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.deployment.as_deref(), Some("green"));
    assert_scores(&trained.model, &reply.json()["scores"], &maps);

    // A steady stream of requests from three clients. Before SIGTERM every request must
    // succeed; after it a client may find the port closed or its idle kept-alive
    // connection closed (and stops), but no request that gets an answer may get an error.
    let signalled = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let signalled = signalled.clone();
            let body = body.clone();
            thread::spawn(move || {
                let agent = agent();
                let mut ok = 0;
                loop {
                    match try_post(&agent, addr, &body) {
                        Ok(reply) => {
                            assert_eq!(reply.status, 200, "{}", reply.body);
                            ok += 1;
                        }
                        // The port closed, or a kept-alive connection was closed as it
                        // went idle, after SIGTERM (the flag is set just before it).
                        Err(e) if signalled.load(Ordering::SeqCst) => return (ok, e.to_string()),
                        Err(e) => panic!("request {ok} before SIGTERM failed: {e}"),
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    // And requests in flight: headers sent, bodies still arriving when SIGTERM comes.
    let mut slow: Vec<SlowRequest> = (0..4).map(|_| SlowRequest::start(addr, &body)).collect();
    thread::sleep(Duration::from_millis(150));
    signalled.store(true, Ordering::SeqCst);
    serving.signal(libc::SIGTERM);
    while slow.iter().any(|r| !r.done()) {
        for request in &mut slow {
            request.send(body.len() / 8 + 1);
        }
        thread::sleep(Duration::from_millis(25));
    }
    for request in slow {
        let (status, reply) = request.finish();
        assert_eq!(status, 200, "{reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_scores(&trained.model, &reply["scores"], &maps);
    }
    for client in clients {
        let (ok, _last) = client.join().unwrap();
        assert!(ok > 0, "a client never got an answer before SIGTERM");
    }

    let (code, stderr) = serving.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("SIGTERM: finishing requests in flight"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("ready: model version {VERSION}")),
        "{stderr}"
    );
    assert!(
        stderr.trim_end().ends_with("cairn serve: stopped"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_exits_1_naming_the_address() {
    let trained = trained();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut serving = Serving::spawn(&trained.dir, &["--listen", &addr]);
    let (code, stderr) = serving.wait();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: another process listens there"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// Runs `cairn serve` on a model that cannot be loaded: polls `/healthz` until the
/// process is gone (it must never say ready) and returns stderr.
fn fails_to_load(model: &Path) -> String {
    let mut serving = Serving::spawn(model, &["--listen", "127.0.0.1:0"]);
    let addr = serving.addr();
    let agent = agent();
    while let Ok(reply) = try_get(&agent, addr, "/healthz") {
        assert_ne!(reply.status, 200, "{}", reply.body);
    }
    let (code, stderr) = serving.wait();
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("ready"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot load the model from `{}`",
            model.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the folder must hold a `model.safetensors`"),
        "{stderr}"
    );
    stderr
}

#[test]
fn a_missing_model_exits_1() {
    let trained = trained();
    let missing = trained.tmp.path().join("models/risk/0123456789ab");
    let stderr = fails_to_load(&missing);
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}

#[test]
fn a_corrupt_model_exits_1() {
    let trained = trained();
    corrupt_model(&trained.dir);
    let stderr = fails_to_load(&trained.dir);
    assert!(
        stderr.contains("is not a valid safetensors file"),
        "{stderr}"
    );
}

/// `cairn pod-proxy` in front of `cairn serve`, as an authenticated endpoint's pod runs
/// them on Kubernetes: 401 without the key or with another, the server's answer with
/// it; `/healthz` open for probes; a missing key file is a clear error. With a capture,
/// the requests let through (bodies only: never the key) are in the store once it
/// stops.
#[test]
fn the_pod_proxy_lets_only_requests_with_the_key_through_and_captures_them() {
    let trained = trained();
    let server = Serving::spawn(&trained.dir, &["--listen", "127.0.0.1:0"]);
    let upstream = server.addr();
    wait_ready(upstream);
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    // As the mounted Secret gives it, with a trailing newline.
    std::fs::write(&key_file, "8c1f0e4b9a7d2c6e5f3a1b0d9e8c7f6a\n").unwrap();
    let store = tmp.path().join("store");
    let store_url = format!("file://{}", store.display());
    let mut proxy = Serving::spawn_cairn(&[
        "pod-proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.to_string(),
        "--key-file",
        key_file.to_str().unwrap(),
        "--capture-every",
        "1",
        "--capture-endpoint",
        "risk-api",
        "--capture-deployment",
        "blue",
        "--capture-source",
        "risk-api-blue-0",
        "--store",
        &store_url,
    ]);
    let addr = proxy.addr();
    let agent = agent();
    assert_eq!(crate::get(&agent, addr, "/healthz").status, 200);
    // The gates' scrape: open, and the server's own exposition.
    let metrics = crate::get(&agent, addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("cairn_requests_total"),
        "{}",
        metrics.body
    );

    let (json_rows, maps) = rows(5, 7);
    let body = json!({"rows": json_rows}).to_string();
    let post = |key: Option<&str>| {
        let mut request = agent
            .post(format!("http://{addr}/v1/predict"))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send(&body).unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    let (status, text) = post(None);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("requires a key"), "{text}");
    assert_eq!(post(Some("8c1f0e4b9a7d2c6e5f3a1b0d9e8c7f6b")).0, 401);
    let (status, text) = post(Some("8c1f0e4b9a7d2c6e5f3a1b0d9e8c7f6a"));
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_scores(&trained.model, &answer["scores"], &maps);

    // Stopped, it uploads what it captured: the one request let through, no key.
    proxy.signal(libc::SIGTERM);
    let (code, stderr) = proxy.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("uploaded 1 captured requests in 1 files"),
        "{stderr}"
    );
    let dir = store.join("captures/risk-api/risk-api-blue-0");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(!text.contains("8c1f0e4b9a7d2c6e5f3a1b0d9e8c7f6"), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["deployment"], "blue");
    assert_eq!(lines[0]["body"], json!({"rows": json_rows}));

    // No key file: exit 1, naming it (under the command's former name, still accepted).
    let mut missing = Serving::spawn_cairn(&[
        "auth-proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.to_string(),
        "--key-file",
        tmp.path().join("absent").to_str().unwrap(),
    ]);
    let (code, stderr) = missing.wait();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot read the key file"), "{stderr}");
    assert!(stderr.contains("absent"), "{stderr}");
}

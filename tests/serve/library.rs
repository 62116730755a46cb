//! The server in-process, bound to port 0, driven by a blocking client over loopback.

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use cairn::workload::model_server::{self, Error, ServeOptions, Status};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::{
    agent, assert_scores, corrupt_model, exposition, get, post, rows, trained, try_get, wait_ready,
    SlowRequest, FEATURES, VERSION,
};

/// A server running on its own runtime.
struct Running {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<model_server::Result<()>>,
}

impl Running {
    fn start(options: ServeOptions) -> Running {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(model_server::bind(options)).unwrap();
        let addr = server.local_addr();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = runtime.spawn(server.run(async {
            let _ = signal.await;
        }));
        Running {
            runtime,
            addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    fn shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Signals shutdown and returns what `run` returned.
    fn stop(mut self) -> model_server::Result<()> {
        self.shutdown();
        self.join()
    }

    /// Waits (up to 10 s) for `run` to return on its own.
    fn join(self) -> model_server::Result<()> {
        let task = self.task;
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
            .expect("the server stops within 10 s")
            .expect("the server task does not panic")
    }
}

fn options(dir: &std::path::Path) -> ServeOptions {
    ServeOptions::new(dir, "127.0.0.1:0".parse().unwrap(), "blue")
}

#[test]
fn predicts_what_the_model_predicts() {
    let trained = trained();
    let server = Running::start(options(&trained.dir));
    let health = wait_ready(server.addr);
    assert_eq!(
        health,
        json!({"status": "ready", "model": "blue", "version": VERSION})
    );
    let agent = agent();

    let (json_rows, maps) = rows(50, 7);
    let reply = post(&agent, server.addr, &json!({"rows": json_rows}).to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.deployment.as_deref(), Some("blue"));
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let body = reply.json();
    assert_eq!(
        (&body["model"], &body["version"]),
        (&json!("blue"), &json!(VERSION))
    );
    assert_scores(&trained.model, &body["scores"], &maps);

    // A bare array of rows, one row, and no rows.
    let reply = post(
        &agent,
        server.addr,
        &Value::from(json_rows[..3].to_vec()).to_string(),
    );
    assert_scores(&trained.model, &reply.json()["scores"], &maps[..3]);
    let reply = post(&agent, server.addr, &json!([json_rows[9]]).to_string());
    assert_scores(&trained.model, &reply.json()["scores"], &maps[9..10]);
    let reply = post(&agent, server.addr, r#"{"rows": []}"#);
    assert_eq!(reply.json()["scores"], json!([]));

    // Every response names the deployment, errors and unknown routes included.
    for path in ["/healthz", "/metrics", "/nowhere"] {
        let reply = get(&agent, server.addr, path);
        assert_eq!(reply.deployment.as_deref(), Some("blue"), "{path}");
    }
    let reply = get(&agent, server.addr, "/nowhere");
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("/v1/predict"));
    let reply = get(&agent, server.addr, "/v1/predict");
    assert_eq!(
        (reply.status, reply.deployment.as_deref()),
        (405, Some("blue"))
    );

    server.stop().unwrap();
}

#[test]
fn bad_requests_are_400_with_the_row_and_count_as_errors() {
    let trained = trained();
    let mut opts = options(&trained.dir);
    opts.max_body_bytes = 4096;
    opts.max_rows = 20;
    let server = Running::start(opts);
    wait_ready(server.addr);
    let agent = agent();
    let (json_rows, _) = rows(3, 1);

    let mut missing = json_rows.clone();
    missing[2].as_object_mut().unwrap().remove("income");
    let mut text = json_rows.clone();
    text[1]["age"] = json!("forty");
    let cases: [(String, Option<u64>, &str); 6] = [
        (
            json!({"rows": missing}).to_string(),
            Some(2),
            "no value for feature `income`",
        ),
        (
            json!({"rows": text}).to_string(),
            Some(1),
            "feature `age` is a string",
        ),
        (
            json!([json_rows[0], [1, 2, 3]]).to_string(),
            Some(1),
            "each row must be an object",
        ),
        ("{\"rows\": [".to_string(), None, "not valid JSON"),
        ("not json".to_string(), None, "not valid JSON"),
        (json!({"data": []}).to_string(), None, "no `rows`"),
    ];
    for (body, row, message) in &cases {
        let reply = post(&agent, server.addr, body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.deployment.as_deref(), Some("blue"));
        let json = reply.json();
        assert_eq!(json["row"].as_u64(), *row, "{body}: {json}");
        let error = json["error"].as_str().unwrap();
        assert!(error.contains(message), "{body}: {error}");
    }

    // Over the limits: 413, also counted.
    let big = json!({"rows": vec![json_rows[0].clone(); 60]}).to_string();
    assert!(big.len() > 4096);
    let reply = post(&agent, server.addr, &big);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("4096 bytes"));
    let many = json!(vec![json!({}); 21]).to_string();
    let reply = post(&agent, server.addr, &many);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("at most 20"));

    let ok = post(&agent, server.addr, &json!({"rows": json_rows}).to_string());
    assert_eq!(ok.status, 200);

    let samples = metrics(server.addr);
    assert_eq!(samples[r#"cairn_requests_total{code="400"}"#], 6.0);
    assert_eq!(samples[r#"cairn_requests_total{code="413"}"#], 2.0);
    assert_eq!(samples[r#"cairn_requests_total{code="200"}"#], 1.0);
    assert_eq!(samples["cairn_request_errors_total"], 8.0);
    assert_eq!(samples["cairn_request_duration_seconds_count"], 9.0);
    server.stop().unwrap();
}

/// Scrapes and checks `/metrics`.
#[track_caller]
fn metrics(addr: SocketAddr) -> exposition::Samples {
    let reply = get(&agent(), addr, "/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    exposition::parse(&reply.body).unwrap_or_else(|e| panic!("{e}\n{}", reply.body))
}

#[test]
fn metrics_count_requests_and_time_them() {
    let trained = trained();
    let server = Running::start(options(&trained.dir));
    wait_ready(server.addr);
    let agent = agent();

    let before = metrics(server.addr);
    assert_eq!(before[r#"cairn_requests_total{code="200"}"#], 0.0);
    assert_eq!(before["cairn_request_duration_seconds_count"], 0.0);

    let (json_rows, _) = rows(5, 3);
    let body = json!({"rows": json_rows}).to_string();
    for _ in 0..25 {
        assert_eq!(post(&agent, server.addr, &body).status, 200);
    }
    for _ in 0..3 {
        assert_eq!(post(&agent, server.addr, "[1]").status, 400);
    }
    // Probes and scrapes are not prediction requests.
    for _ in 0..5 {
        get(&agent, server.addr, "/healthz");
        metrics(server.addr);
    }

    let after = metrics(server.addr);
    assert_eq!(after[r#"cairn_requests_total{code="200"}"#], 25.0);
    assert_eq!(after[r#"cairn_requests_total{code="400"}"#], 3.0);
    assert_eq!(after["cairn_request_errors_total"], 3.0);
    assert_eq!(after["cairn_request_duration_seconds_count"], 28.0);
    assert_eq!(
        after[r#"cairn_request_duration_seconds_bucket{le="+Inf"}"#],
        28.0
    );
    let sum = after["cairn_request_duration_seconds_sum"];
    assert!(sum > 0.0 && sum < 28.0, "{sum}");
    assert_eq!(after["cairn_model_ready"], 1.0);
    assert_eq!(
        after[&format!(r#"cairn_model_info{{model="blue",version="{VERSION}"}}"#)],
        1.0
    );
    server.stop().unwrap();
}

#[test]
fn healthz_says_loading_until_the_model_is_read() {
    // The model file is a FIFO: loading blocks until the test writes the model into it.
    let trained = trained();
    let bytes = std::fs::read(trained.dir.join("model.safetensors")).unwrap();
    let dir = trained.tmp.path().join("v2");
    std::fs::create_dir(&dir).unwrap();
    let fifo = dir.join("model.safetensors");
    let path = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);

    let server = Running::start(options(&dir));
    let agent = agent();
    for _ in 0..5 {
        let reply = get(&agent, server.addr, "/healthz");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json(), json!({"status": "loading"}));
        std::thread::sleep(Duration::from_millis(10));
    }
    let (json_rows, maps) = rows(2, 5);
    let body = json!({"rows": json_rows}).to_string();
    let reply = post(&agent, server.addr, &body);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.json()["error"].as_str().unwrap().contains("loading"));
    let samples = metrics(server.addr);
    assert_eq!(samples["cairn_model_ready"], 0.0);
    assert!(!samples.keys().any(|k| k.starts_with("cairn_model_info")));

    std::fs::write(&fifo, bytes).unwrap();
    let health = wait_ready(server.addr);
    assert_eq!(health["version"], "v2");
    let reply = post(&agent, server.addr, &body);
    assert_scores(&trained.model, &reply.json()["scores"], &maps);
    let samples = metrics(server.addr);
    assert_eq!(samples[r#"cairn_requests_total{code="503"}"#], 1.0);
    assert_eq!(
        samples[r#"cairn_model_info{model="blue",version="v2"}"#],
        1.0
    );
    server.stop().unwrap();
}

#[test]
fn a_model_that_fails_to_load_stops_the_server() {
    let trained = trained();
    corrupt_model(&trained.dir);
    let server = Running::start(options(&trained.dir));
    let addr = server.addr;
    // Whatever /healthz answered before the server stopped, it was never ready.
    let agent = agent();
    let mut answers = Vec::new();
    while let Ok(reply) = try_get(&agent, addr, "/healthz") {
        answers.push(reply.status);
        assert_ne!(reply.status, 200, "{}", reply.body);
        if answers.len() > 1000 {
            panic!("the server still answers");
        }
    }
    let err = server.join().unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    let chain = cairn::diagnostics::error_chain(&err);
    assert!(
        chain.starts_with(&format!(
            "cannot load the model from `{}`",
            trained.dir.display()
        )) && chain.contains("is not a valid safetensors file"),
        "{chain}"
    );

    let missing = trained.tmp.path().join("no-such-model");
    let err = Running::start(options(&missing)).join().unwrap_err();
    let chain = cairn::diagnostics::error_chain(&err);
    assert!(
        chain.contains("no-such-model/model.safetensors") && chain.contains("No such file"),
        "{chain}"
    );
}

#[test]
fn shutdown_lets_requests_in_flight_finish() {
    let trained = trained();
    let mut server = Running::start(options(&trained.dir));
    wait_ready(server.addr);
    let (json_rows, maps) = rows(4, 11);
    let body = json!({"rows": json_rows}).to_string();
    let mut slow: Vec<SlowRequest> = (0..4)
        .map(|_| SlowRequest::start(server.addr, &body))
        .collect();
    // Let the server read the headers of each, then ask it to stop.
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
    std::thread::sleep(Duration::from_millis(100));
    for request in &mut slow {
        request.send(10);
    }
    // New connections are refused once the listener is closed.
    let refused = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        std::net::TcpStream::connect(server.addr).is_err()
    });
    assert!(refused, "the listener still accepts after shutdown");
    assert!(
        !server.task.is_finished(),
        "`run` returned with requests in flight"
    );
    for request in slow {
        let (status, reply) = request.finish();
        assert_eq!(status, 200, "{reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_scores(&trained.model, &reply["scores"], &maps);
    }
    server.join().unwrap();
}

#[test]
fn bind_errors_name_the_address() {
    let trained = trained();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(model_server::bind(ServeOptions::new(
            &trained.dir,
            addr,
            "blue",
        )))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Bind { addr: a, .. } if *a == addr),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("cannot listen on {addr}"));

    let mut bad_name = options(&trained.dir);
    bad_name.name = "blue\ngreen".into();
    let err = runtime.block_on(model_server::bind(bad_name)).unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
}

#[test]
fn the_version_comes_from_the_options_the_folder_or_the_content() {
    let trained = trained();
    let mut opts = options(&trained.dir);
    opts.version = Some("2024-06-01".into());
    let server = Running::start(opts);
    assert_eq!(wait_ready(server.addr)["version"], "2024-06-01");
    server.stop().unwrap();

    // A folder name that is not a version: a hash of the model file, stable across runs.
    let plain = trained.tmp.path().join("out");
    std::fs::create_dir(&plain).unwrap();
    std::fs::copy(
        trained.dir.join("model.safetensors"),
        plain.join("model.safetensors"),
    )
    .unwrap();
    let mut versions = Vec::new();
    for _ in 0..2 {
        let server = Running::start(options(&plain));
        versions.push(
            wait_ready(server.addr)["version"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        server.stop().unwrap();
    }
    assert_eq!(versions[0], versions[1]);
    assert_eq!(versions[0].len(), 12);
    assert!(
        versions[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "{versions:?}"
    );
}

#[test]
fn status_reports_loading_then_ready() {
    let trained = trained();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = model_server::bind(options(&trained.dir)).await.unwrap();
        let mut status = server.status();
        assert_eq!(*status.borrow(), Status::Loading);
        let (stop, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = signal.await;
        }));
        let ready = status
            .wait_for(|s| *s != Status::Loading)
            .await
            .unwrap()
            .clone();
        let features = FEATURES.map(String::from).to_vec();
        assert_eq!(
            ready,
            Status::Ready {
                version: VERSION.into(),
                features
            }
        );
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    });
}

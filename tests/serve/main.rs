//! Tests of the reference model server, over real HTTP on loopback.
//!
//! - `library`: the server in-process (`cairn::workload::model_server`), bound to port 0:
//!   predictions against `Model::predict`, bad requests, metrics, readiness while the
//!   model loads, a model that fails to load, graceful shutdown.
//! - `process`: the real `cairn serve` binary: serving, SIGTERM with requests in flight,
//!   a port in use, a missing or corrupt model.
//! - `oip`: the Open Inference Protocol, spoken to by a client nobody here wrote
//!   (`tritonclient[http]`), ONNX outputs checked against `onnxruntime`.
//! - `prometheus_gates`: the Kubernetes rollout gates' Prometheus reading against a real
//!   Prometheus scraping real `cairn serve` processes.
//! - `score`: `cairn score`, batch scoring of CSV folders (reference model and ONNX).
//! - `drift_stats`: PSI and KS of input drift against NumPy and SciPy on the same samples.
//! - `exposition`: a small checker of the Prometheus text format, used on `/metrics`.
//!
//! Every test trains its own small model with the library (`cairn::workload::train`) on a
//! generated CSV in a temporary folder.

mod drift_stats;
mod exposition;
mod library;
mod oip;
mod process;
#[path = "../support/prometheus.rs"]
mod prometheus;
mod prometheus_gates;
mod score;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::workload::{load_model, train, Model, TrainOptions};
use serde_json::{json, Value};

/// The feature columns of the generated data.
pub const FEATURES: [&str; 3] = ["age", "income", "utilization"];

/// The model folder's name: a version id, as in the store.
pub const VERSION: &str = "3f9c2a1b7d4e";

/// A trained model in a temporary folder.
pub struct Trained {
    /// Holds the folders; removed on drop.
    pub tmp: tempfile::TempDir,
    /// `<tmp>/models/risk/<VERSION>`, holding `model.safetensors`.
    pub dir: PathBuf,
    pub model: Model,
}

/// Generates a CSV of `n` rows (an id column, [`FEATURES`], `label`) and trains on it.
pub fn trained() -> Trained {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,age,income,utilization,label\n");
    let mut rng = Lcg(42);
    for i in 0..200 {
        let age = 20.0 + 50.0 * rng.float();
        let income = 20_000.0 + 80_000.0 * rng.float();
        let utilization = rng.float();
        let z = -0.04 * (age - 45.0) - (income - 60_000.0) / 20_000.0 + 3.0 * (utilization - 0.5);
        let label = u8::from(z + rng.float() - 0.5 > 0.0);
        csv.push_str(&format!(
            "r{i},{age:.1},{income:.0},{utilization:.3},{label}\n"
        ));
    }
    let data = tmp.path().join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let dir = tmp.path().join("models/risk").join(VERSION);
    let report = train(&TrainOptions {
        data,
        out: dir.clone(),
        ..TrainOptions::default()
    })
    .unwrap();
    assert_eq!(report.features, FEATURES);
    let model = load_model(&dir).unwrap();
    Trained { tmp, dir, model }
}

/// A tiny deterministic generator of numbers in [0, 1).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn float(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` rows of feature values (plus an `id` the model ignores), as JSON and as maps.
pub fn rows(n: usize, seed: u64) -> (Vec<Value>, Vec<BTreeMap<String, f64>>) {
    let mut rng = Lcg(seed);
    let mut json_rows = Vec::new();
    let mut maps = Vec::new();
    for i in 0..n {
        let values = [
            (18.0 + 60.0 * rng.float()).round(),
            10_000.0 + 120_000.0 * rng.float(),
            rng.float() * 1.2 - 0.1,
        ];
        let mut row = json!({"id": format!("q{i}")});
        let mut map = BTreeMap::new();
        for (name, value) in FEATURES.iter().zip(values) {
            row[*name] = json!(value);
            map.insert(name.to_string(), value);
        }
        json_rows.push(row);
        maps.push(map);
    }
    (json_rows, maps)
}

/// Asserts that `scores` are `model.predict` of each row, within 1e-9.
#[track_caller]
pub fn assert_scores(model: &Model, scores: &Value, rows: &[BTreeMap<String, f64>]) {
    let scores = scores.as_array().expect("scores is an array");
    assert_eq!(scores.len(), rows.len());
    for (i, (score, row)) in scores.iter().zip(rows).enumerate() {
        let expected = model.predict(row).unwrap();
        let got = score.as_f64().expect("a score is a number");
        assert!(
            (got - expected).abs() < 1e-9,
            "row {i}: served {got}, Model::predict {expected}"
        );
    }
}

/// A response: status, the deployment header, the body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub deployment: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Reply {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A blocking HTTP client that returns error statuses as replies.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn reply(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply, ureq::Error> {
    let mut response = response?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let deployment = header("x-cairn-deployment");
    let content_type = header("content-type");
    Ok(Reply {
        status: response.status().as_u16(),
        deployment,
        content_type,
        body: response.body_mut().read_to_string()?,
    })
}

pub fn try_get(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> Result<Reply, ureq::Error> {
    reply(agent.get(format!("http://{addr}{path}")).call())
}

#[track_caller]
pub fn get(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> Reply {
    try_get(agent, addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn try_post(agent: &ureq::Agent, addr: SocketAddr, body: &str) -> Result<Reply, ureq::Error> {
    reply(
        agent
            .post(format!("http://{addr}/v1/predict"))
            .header("content-type", "application/json")
            .send(body),
    )
}

#[track_caller]
pub fn post(agent: &ureq::Agent, addr: SocketAddr, body: &str) -> Reply {
    try_post(agent, addr, body).unwrap_or_else(|e| panic!("POST {body}: {e}"))
}

/// Polls `/healthz` until it answers 200 (panics after 10 s); returns the body. Every
/// answer before must be 503.
#[track_caller]
pub fn wait_ready(addr: SocketAddr) -> Value {
    let agent = agent();
    let started = Instant::now();
    loop {
        if let Ok(reply) = try_get(&agent, addr, "/healthz") {
            if reply.status == 200 {
                return reply.json();
            }
            assert_eq!(reply.status, 503, "{}", reply.body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/healthz on {addr} not ready after 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A prediction request written by hand on its own connection, its body sent in parts,
/// so that it can be kept in flight on purpose.
pub struct SlowRequest {
    stream: TcpStream,
    body: Vec<u8>,
    sent: usize,
}

impl SlowRequest {
    /// Connects and sends the headers and the first byte of `body`.
    pub fn start(addr: SocketAddr, body: &str) -> SlowRequest {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST /v1/predict HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut request = SlowRequest {
            stream,
            body: body.as_bytes().to_vec(),
            sent: 0,
        };
        request.send(1);
        request
    }

    /// Sends up to `n` more bytes of the body.
    pub fn send(&mut self, n: usize) {
        let end = self.sent.saturating_add(n).min(self.body.len());
        self.stream.write_all(&self.body[self.sent..end]).unwrap();
        self.stream.flush().unwrap();
        self.sent = end;
    }

    pub fn done(&self) -> bool {
        self.sent == self.body.len()
    }

    /// Sends the rest of the body and reads the response: (status, body).
    pub fn finish(mut self) -> (u16, String) {
        self.send(usize::MAX);
        read_response(&mut self.stream)
    }
}

/// Reads one HTTP/1.1 response with a `content-length`.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).expect("read the response");
        assert!(n > 0, "connection closed before the response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).expect("read the body");
        assert!(n > 0, "connection closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    (status, body)
}

/// Overwrites the start of the JSON header of `dir/model.safetensors`, as a bad copy would.
pub fn corrupt_model(dir: &Path) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..16].copy_from_slice(b"garbage!");
    std::fs::write(path, bytes).unwrap();
}

//! End-to-end serving on the local target: the real `cairn` binary applies a copy of the
//! example workspace (`manifests/credit-risk`: the reference trainer, model server,
//! supervisor and router, all real processes on loopback), then:
//!
//! - predictions through the router, with and without the endpoint's key;
//! - a retrain rolled out step by step under a continuous request loop: 0 failed requests;
//! - a deliberately broken model version rolled back automatically (caught while traffic
//!   is mirrored): 0 failed requests, the old version keeps all traffic, apply exits 1;
//! - faults: a model that can't load, a port in use, a supervisor killed with SIGKILL;
//! - unfinished rollouts (the supervisor or the apply killed mid-steps, the apply killed
//!   before its promotion): planned and walked again from where traffic is, under the gates;
//! - retrains in a row whose scheduled retirements come due during later rollouts;
//! - `custom`: the same flows with a deployment serving its own process (`command`);
//! - `monitor`: input-drift monitoring: captured requests against the training data.
//! - `pipeline`: the example's prep → train → evaluate and batch scoring → rollout chain.
//! - `sweep`: a six-trial sweep of the example's trainer, the best version served.
//! - `edge`: the example's `radiology-edge` workspace (an ONNX model over the Open
//!   Inference Protocol) as the quick start applies it.
//!
//! Every test stops its supervisor (and so every process it started) when it ends.

#[path = "../support/mod.rs"]
mod support;

mod autoscale;
mod custom;
mod edge;
mod monitor;
mod onnx;
mod pipeline;
mod promotion;
mod sweep;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::free_port;
use support::{copy_dir, wait_until, wait_with_deadline, Run};

const WS: &str = "credit-risk";
const ENDPOINT: &str = "credit-risk/endpoint.risk-api";

/// A copy of the example repository in a temporary folder, serving on a free port.
struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    port: u16,
}

impl Drop for Repo {
    fn drop(&mut self) {
        // Stops the routers and replicas this test started.
        let _ = self.cairn(&["supervise", "--stop", "--state", &self.serving_dir()]);
    }
}

impl Repo {
    /// The example workspace with short rollout steps; `rollout` replaces the endpoint's
    /// `[rollout]` table.
    fn example(rollout: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("repo");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/credit-risk");
        copy_dir(&example, &root.join(WS));
        let port = free_port();
        let repo = Repo {
            _dir: dir,
            root,
            port,
        };
        repo.write(
            "serve.toml",
            &format!(
                "[endpoint.risk-api]\n\
                 compute = \"compute.branch-dc\"\n\
                 auth = \"key\"\n\
                 port = {port}\n\
                 \n\
                 [endpoint.risk-api.deployments.blue]\n\
                 model = \"model.risk-scorer\"\n\
                 replicas = 1\n\
                 \n\
                 [endpoint.risk-api.traffic]\n\
                 blue = 100\n\
                 \n\
                 [endpoint.risk-api.rollout]\n{rollout}"
            ),
        );
        repo
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.root.join(WS).join(rel), text).unwrap();
    }

    fn serving_dir(&self) -> String {
        self.root.join(".cairn/serving").display().to_string()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn cairn(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .current_dir(&self.root)
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run::from(output, started.elapsed())
    }

    fn apply(&self) -> Run {
        self.cairn(&["apply", ".", "--auto-approve"])
    }

    fn key(&self) -> String {
        let path = self
            .root
            .join(".cairn/serving/keys/credit-risk.risk-api.key");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("the key {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// The state's value of a resource.
    fn state(&self, address: &str) -> Value {
        let path = self.root.join(".cairn/store/.cairn/state.json");
        let state: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        state["resources"][address]["value"].clone()
    }

    fn model_version(&self) -> String {
        self.state("credit-risk/model.risk-scorer")["version"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `cairn status --format json`: the endpoint's deployments as (name, revision, weight).
    fn deployments(&self) -> Vec<(String, String, u64)> {
        let run = self.cairn(&["status", ".", "--format", "json"]);
        run.ok();
        let status: Value = serde_json::from_str(&run.stdout).unwrap();
        let endpoints = status["workspaces"][0]["endpoints"].as_array().unwrap();
        let Some(endpoint) = endpoints.iter().find(|e| e["address"] == ENDPOINT) else {
            return Vec::new();
        };
        endpoint["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_string(),
                    d["revision"].as_str().unwrap().to_string(),
                    d["weight"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Changes one row of the training data.
    fn edit_data(&self) {
        let path = self.root.join(WS).join("data/loans/loans.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let last = lines[1].pop().unwrap();
        lines[1].push(if last == '0' { '1' } else { '0' });
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    /// Adds a copy of the first data row `n` more times: a new dataset version (and so a
    /// new run and model version) for every `n`.
    fn add_rows(&self, n: usize) {
        let path = self.root.join(WS).join("data/loans/loans.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        let row = text.lines().nth(1).unwrap().to_string();
        let mut text = text.trim_end().to_string();
        for _ in 0..n {
            text.push('\n');
            text.push_str(&row);
        }
        std::fs::write(&path, text + "\n").unwrap();
    }

    /// `cairn apply` running in the background, in its own process group.
    fn spawn_apply(&self, extra: &[&str]) -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["apply", ".", "--auto-approve"])
            .args(extra)
            .current_dir(&self.root)
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    /// The supervisor's `state.json`.
    fn supervisor_state(&self) -> Value {
        let path = self.root.join(".cairn/serving/state.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    }

    /// The weight the router gives the revision rolling out (`blue@…`), as recorded.
    fn canary_weight(&self) -> Option<u64> {
        let state = self.supervisor_state();
        let route = state["routes"].as_array()?.first()?.clone();
        route["weights"]
            .as_object()?
            .iter()
            .find(|(name, _)| name.starts_with("blue@"))
            .and_then(|(_, w)| w.as_u64())
    }

    /// The revisions the supervisor runs for the endpoint, sorted.
    fn running_revisions(&self) -> Vec<String> {
        let state = self.supervisor_state();
        let mut out: Vec<String> = state["deployments"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|d| d["spec"]["endpoint"] == "credit-risk.risk-api")
                    .map(|d| d["spec"]["revision"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// A crash of the whole supervisor: `kill -9` of its watchdog (which the lock file
    /// names, and which would restart the daemon) and of the daemon the watchdog runs.
    fn kill_supervisor(&self) {
        let serving = self.root.join(".cairn/serving");
        let lock = std::fs::read_to_string(serving.join("supervisor.lock")).unwrap();
        let watchdog: i32 = lock.split_whitespace().next().unwrap().parse().unwrap();
        assert!(watchdog > 1);
        let daemon = format!("supervise --state {} --watchdog-fd", serving.display());
        let daemon: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&daemon)
                })
            })
            .collect();
        assert_eq!(daemon.len(), 1, "{daemon:?}");
        kill_9(watchdog);
        kill_9(daemon[0]);
    }

    /// The rollout events the last apply journaled for the endpoint.
    fn last_rollout_events(&self) -> Vec<Value> {
        let journal_dir = self.root.join(".cairn/store/.cairn/journal");
        let mut records: Vec<PathBuf> = std::fs::read_dir(journal_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        records.sort();
        let last: Value =
            serde_json::from_str(&std::fs::read_to_string(records.last().unwrap()).unwrap())
                .unwrap();
        last["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["address"] == ENDPOINT)
            .map(|o| o["events"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Makes the job "train" by copying a prepared model folder.
    fn train_by_copying(&self, model_dir: &Path) {
        self.train_by_copying_as(model_dir, "safetensors");
    }

    /// Makes the job "train" by copying a prepared model folder of `format`.
    fn train_by_copying_as(&self, model_dir: &Path, format: &str) {
        self.write(
            "train.toml",
            &format!(
                "[job.train-risk]\n\
                 compute = \"compute.branch-dc\"\n\
                 command = [\"cp\", \"-r\", \"{}/.\", \"{{{{ outputs.model }}}}\"]\n\
                 inputs = {{ loans = \"dataset.loans\" }}\n\
                 outputs = {{ model = \"model.risk-scorer\" }}\n\
                 gpus = 0\n\
                 \n\
                 [model.risk-scorer]\n\
                 from_job = \"job.train-risk\"\n\
                 format = \"{format}\"\n",
                model_dir.display()
            ),
        );
    }
}

const ROWS: &str = r#"{"rows": [
  {"age": 29, "income": 42400, "loan_amount": 33600, "term_months": 48, "credit_score": 737, "debt_to_income": 0.536, "prior_defaults": 0, "employment_years": 14.6},
  {"age": 61, "income": 18000, "loan_amount": 30000, "term_months": 60, "credit_score": 520, "debt_to_income": 0.9, "prior_defaults": 3, "employment_years": 0.5}
]}"#;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POSTs the sample rows; returns the status and the body.
fn predict(
    agent: &ureq::Agent,
    addr: SocketAddr,
    key: Option<&str>,
) -> Result<(u16, Value), String> {
    let mut request = agent
        .post(format!("http://{addr}/v1/predict"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let mut response = request.send(ROWS).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// A request loop through the router on its own thread, bounded in count and time.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<LoadReport>,
}

#[derive(Debug, Default)]
struct LoadReport {
    requests: u64,
    /// Non-200 answers and transport errors, with what happened.
    failures: Vec<String>,
    /// The model version that answered each request, in order.
    versions: Vec<String>,
}

impl Load {
    fn start(addr: SocketAddr, key: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let agent = agent();
            let mut report = LoadReport::default();
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed)
                && report.requests < 200_000
                && started.elapsed() < Duration::from_secs(120)
            {
                report.requests += 1;
                match predict(&agent, addr, Some(&key)) {
                    Ok((200, body)) => report
                        .versions
                        .push(body["version"].as_str().unwrap_or("?").to_string()),
                    Ok((status, body)) => report.failures.push(format!("{status}: {body}")),
                    Err(e) => report.failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            report
        });
        Load { stop, thread }
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn apply_serves_then_rolls_out_a_retrained_model_under_load() {
    let repo = Repo::example(
        "steps = [10, 50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\nmax_p99_ms = 500\n",
    );
    let first = repo.apply();
    first.ok();
    assert!(
        first.stdout.contains("+ credit-risk/endpoint.risk-api"),
        "{}",
        first.both()
    );
    let v1 = repo.model_version();

    // Predictions from the trained model, only with the key.
    let agent = agent();
    let key = repo.key();
    let (status, body) = predict(&agent, repo.addr(), Some(&key)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], v1.as_str());
    let scores = body["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2);
    let (safe, risky) = (scores[0].as_f64().unwrap(), scores[1].as_f64().unwrap());
    assert!(risky > safe, "the risky applicant scores higher: {body}");
    let (status, _) = predict(&agent, repo.addr(), None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = predict(&agent, repo.addr(), Some("not-the-key")).unwrap();
    assert_eq!(status, 401);
    assert_eq!(repo.deployments(), [("blue".into(), v1.clone(), 100)]);

    // Nothing to do while it serves as declared.
    let again = repo.cairn(&["plan", ".", "--detailed-exitcode"]);
    again.code(0);

    // New data → new run → new model version → rollout, in one plan.
    repo.edit_data();
    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    for expected in [
        "~ credit-risk/dataset.loans",
        "▶ credit-risk/job.train-risk",
        "~ credit-risk/model.risk-scorer",
        "» credit-risk/endpoint.risk-api",
        "rollout: 10% → 50% → 100%, each held 5s; gates: error rate ≤ 1%, p99 ≤ 500 ms; automatic rollback",
        "1 to roll out.",
    ] {
        assert!(plan.stdout.contains(expected), "{expected:?} in\n{}", plan.both());
    }

    let load = Load::start(repo.addr(), key.clone());
    std::thread::sleep(Duration::from_millis(300));
    let second = repo.apply();
    std::thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    second.ok();
    let v2 = repo.model_version();
    assert_ne!(v1, v2);
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        report.failures.len(),
        report.requests,
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.requests > 100, "{report:?}");
    assert!(report.versions.contains(&v1) && report.versions.contains(&v2));
    assert_eq!(report.versions.last(), Some(&v2));
    // After the switch nothing goes back to the old version.
    let first_v2 = report.versions.iter().position(|v| *v == v2).unwrap();
    let last_v1 = report.versions.iter().rposition(|v| *v == v1).unwrap();
    assert!(last_v1 < report.versions.len() - 1);
    assert!(
        first_v2 < last_v1,
        "the versions overlapped during the steps"
    );

    // The new revision has the deployment's name and all traffic; the old one is kept
    // at 0 % until its scale-down delay runs out.
    let deployments = repo.deployments();
    assert!(
        deployments.contains(&("blue".into(), v2.clone(), 100)),
        "{deployments:?}"
    );
    assert!(
        deployments.contains(&(format!("blue@{v1}"), v1.clone(), 0)),
        "{deployments:?}"
    );

    // `cairn status` gives each revision the requests it answered, as the client counted
    // them (v1 also answered the one keyed prediction checked above; the 401s reached
    // no revision), whatever names the revisions carry after the promotion.
    let run = repo.cairn(&["status", ".", "--format", "json"]);
    run.ok();
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    let endpoint = status["workspaces"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == ENDPOINT)
        .unwrap()
        .clone();
    let served = |version: &str| -> u64 {
        endpoint["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["revision"] == version)
            .map(|d| d["requests"].as_u64().unwrap())
            .sum()
    };
    let answered =
        |version: &String| report.versions.iter().filter(|v| *v == version).count() as u64;
    assert_eq!(served(&v2), answered(&v2), "{endpoint:#}");
    assert_eq!(served(&v1), answered(&v1) + 1, "{endpoint:#}");

    // The journal records each step.
    let journal_dir = repo.root.join(".cairn/store/.cairn/journal");
    let mut records: Vec<PathBuf> = std::fs::read_dir(journal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    records.sort();
    let last: Value =
        serde_json::from_str(&std::fs::read_to_string(records.last().unwrap()).unwrap()).unwrap();
    let outcome = last["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["address"] == ENDPOINT)
        .unwrap();
    let events: Vec<&str> = outcome["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "ready",
            "step",
            "step-passed",
            "step",
            "step-passed",
            "step",
            "step-passed",
            "promoted"
        ]
    );
}

/// A model whose parameters are finite (it loads and answers `/healthz`) but whose every
/// score overflows to NaN: the server answers 500.
fn broken_model(dir: &Path) {
    let features: Vec<String> = [
        "age",
        "income",
        "loan_amount",
        "term_months",
        "credit_score",
        "debt_to_income",
        "prior_defaults",
        "employment_years",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let n = features.len();
    let mut weights = vec![0.0; n];
    weights[0] = 1.0;
    weights[1] = -1.0;
    let model = cairn::workload::Model::new(
        features,
        "defaulted".into(),
        weights,
        0.0,
        vec![-1e300; n],
        vec![1e-300; n],
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    model.save(dir).unwrap();
}

#[test]
fn a_broken_version_is_rolled_back_without_a_failed_request() {
    let repo = Repo::example(
        "steps = [10, 50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\nmirror = 50\n",
    );
    repo.apply().ok();
    let v1 = repo.model_version();
    let key = repo.key();

    let broken = repo.root.parent().unwrap().join("broken");
    broken_model(&broken);
    repo.train_by_copying(&broken);
    let plan = repo.cairn(&["plan", "."]);
    assert!(
        plan.stdout
            .contains("mirror 50% first, then 10% → 50% → 100%"),
        "{}",
        plan.both()
    );

    let load = Load::start(repo.addr(), key);
    std::thread::sleep(Duration::from_millis(300));
    let apply = repo.apply();
    std::thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    apply.code(1);
    assert!(
        apply
            .stderr
            .contains("rolled back during the mirror phase, before any traffic moved"),
        "{}",
        apply.both()
    );
    assert!(apply.stderr.contains("error rate"), "{}", apply.both());
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        report.failures.len(),
        report.requests,
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.requests > 100, "{report:?}");
    assert!(
        report.versions.iter().all(|v| *v == v1),
        "only the old version answered"
    );
    // All traffic on the old version, and the broken revision is gone.
    assert_eq!(repo.deployments(), [("blue".into(), v1.clone(), 100)]);
}

#[test]
fn a_model_that_cannot_load_leaves_the_old_version_serving() {
    let repo = Repo::example("steps = [100]\nstep_wait = \"0s\"\n");
    repo.apply().ok();
    let v1 = repo.model_version();
    let garbage = repo.root.parent().unwrap().join("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("model.safetensors"), b"not a model").unwrap();
    repo.train_by_copying(&garbage);

    let apply = repo.apply();
    apply.code(1);
    assert!(apply.stderr.contains("failed to start"), "{}", apply.both());
    assert!(
        apply.stderr.contains("model.safetensors"),
        "the replica's log tail names the file: {}",
        apply.both()
    );
    let (status, body) = predict(&agent(), repo.addr(), Some(&repo.key())).unwrap();
    assert_eq!((status, body["version"].as_str()), (200, Some(v1.as_str())));
    assert_eq!(repo.deployments(), [("blue".into(), v1, 100)]);
}

#[test]
fn a_port_in_use_is_a_clear_error_and_nothing_is_left_running() {
    let repo = Repo::example("steps = [100]\nstep_wait = \"0s\"\n");
    let _taken = TcpListener::bind(repo.addr()).unwrap();
    let apply = repo.apply();
    apply.code(1);
    assert!(
        apply.stderr.contains(&repo.port.to_string()),
        "the error names the port: {}",
        apply.both()
    );
    assert_eq!(repo.deployments(), []);
    // No replica was left behind either.
    let log = std::fs::read_to_string(repo.root.join(".cairn/serving/state.json")).unwrap();
    let state: Value = serde_json::from_str(&log).unwrap();
    let text = state.to_string();
    assert!(
        !text.contains("\"pid\":") || !text.contains("risk-api"),
        "{text}"
    );
}

#[test]
fn serving_comes_back_after_the_supervisor_is_killed() {
    let repo = Repo::example("steps = [100]\nstep_wait = \"0s\"\n");
    repo.apply().ok();
    let v1 = repo.model_version();
    let key = repo.key();
    repo.kill_supervisor();
    wait_until("the router to go away", Duration::from_secs(10), || {
        predict(&agent(), repo.addr(), Some(&key)).is_err()
    });

    let plan = repo.cairn(&["plan", "."]);
    assert!(plan.stdout.contains("not serving"), "{}", plan.both());
    repo.apply().ok();
    let (status, body) = predict(&agent(), repo.addr(), Some(&key)).unwrap();
    assert_eq!((status, body["version"].as_str()), (200, Some(v1.as_str())));
    assert_eq!(repo.deployments(), [("blue".into(), v1, 100)]);
    let log = std::fs::read_to_string(repo.root.join(".cairn/serving/supervisor.log")).unwrap();
    assert!(log.contains("adopted"), "the replica was re-adopted: {log}");
}

/// `kill -9 PID` of one process (a positive pid: never the `-PGID` form).
fn kill_9(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The steps a journaled rollout walked, with whether each passed its gates.
fn walked(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e["event"].as_str()? {
            "step" => Some(format!("step {}", e["step"])),
            "step-passed" => Some(format!("passed {}", e["step"])),
            "promoted" => Some("promoted".to_string()),
            _ => None,
        })
        .collect()
}

/// Kills the supervisor (and with it the router) while a rollout has moved part of the
/// traffic: the apply fails; the next plan shows the rollout again from the recorded split
/// (not an update that would serve the new, never-gated version to all traffic); the next
/// apply walks the remaining steps under the gates, and the old revision is retired.
#[test]
fn a_rollout_cut_short_by_a_supervisor_crash_is_rolled_out_again_under_its_gates() {
    let repo = Repo::example(
        "steps = [10, 50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\nscale_down_delay = \"2s\"\n",
    );
    repo.apply().ok();
    let v1 = repo.model_version();
    let key = repo.key();

    repo.add_rows(1);
    let load = Load::start(repo.addr(), key.clone());
    let apply = repo.spawn_apply(&[]);
    wait_until(
        "the rollout to move part of the traffic",
        Duration::from_secs(120),
        || repo.canary_weight().is_some_and(|w| w > 0 && w < 100),
    );
    repo.kill_supervisor();
    let cut = wait_with_deadline(apply, Duration::from_secs(60));
    load.finish();
    let cut_at = repo.canary_weight().unwrap();
    assert_ne!(cut.code, 0, "{}", cut.both());
    let v2 = repo.model_version();
    assert_ne!(v1, v2);

    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    for expected in [
        "» credit-risk/endpoint.risk-api",
        "not serving",
        "an unfinished rollout left it at",
        "rollout: resumed at",
        "each held 5s; gates: error rate ≤ 1%",
    ] {
        assert!(
            plan.stdout.contains(expected),
            "{expected:?} in\n{}",
            plan.both()
        );
    }
    assert!(
        !plan.stdout.contains("~ credit-risk/endpoint.risk-api"),
        "{}",
        plan.both()
    );

    let load = Load::start(repo.addr(), key);
    let again = repo.apply();
    let report = load.finish();
    again.ok();
    let steps = walked(&repo.last_rollout_events());
    assert_eq!(
        steps.last().map(String::as_str),
        Some("promoted"),
        "{steps:?}"
    );
    assert!(
        steps.iter().any(|s| s == "passed 100"),
        "the last step was held under the gates: {steps:?}"
    );
    assert_eq!(
        steps.first(),
        Some(&format!("step {cut_at}")),
        "resumed where it stopped, not from the start: {steps:?}"
    );
    assert!(report.versions.contains(&v2), "{report:?}");
    assert_eq!(report.versions.last(), Some(&v2));
    let deployments = repo.deployments();
    assert!(
        deployments.contains(&("blue".into(), v2.clone(), 100)),
        "{deployments:?}"
    );
    // The old revision is retired after its delay; nothing else is left running.
    wait_until(
        "the old revision to be retired",
        Duration::from_secs(60),
        || repo.running_revisions() == [v2.clone()],
    );
    let plan = repo.cairn(&["plan", ".", "--detailed-exitcode"]);
    plan.code(0);
}

/// Kills `cairn apply` itself half way through a rollout: the supervisor keeps the split;
/// the next plan resumes from it and the next apply promotes after the remaining gates.
#[test]
fn a_rollout_cut_short_by_a_killed_apply_is_resumed_where_it_stopped() {
    let repo = Repo::example(
        "steps = [10, 50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\nscale_down_delay = \"2s\"\n",
    );
    repo.apply().ok();
    let v1 = repo.model_version();
    let key = repo.key();

    repo.add_rows(1);
    let load = Load::start(repo.addr(), key.clone());
    let mut apply = repo.spawn_apply(&["--lock-lease", "1s"]);
    wait_until(
        "the rollout to move part of the traffic",
        Duration::from_secs(120),
        || repo.canary_weight().is_some_and(|w| w > 0 && w < 100),
    );
    apply.kill().unwrap();
    apply.wait().unwrap();
    let cut_at = repo.canary_weight().unwrap();
    // The lease of the killed apply's lock runs out.
    std::thread::sleep(Duration::from_secs(2));

    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    for expected in [
        "» credit-risk/endpoint.risk-api",
        "an unfinished rollout left it at",
        "rollout: resumed at",
    ] {
        assert!(
            plan.stdout.contains(expected),
            "{expected:?} in\n{}",
            plan.both()
        );
    }
    // Waits for the lease to run out rather than racing it on a loaded machine.
    let again = repo.cairn(&["apply", ".", "--auto-approve", "--lock-timeout", "30s"]);
    let report = load.finish();
    again.ok();
    let v2 = repo.model_version();
    assert_ne!(v1, v2, "{}", again.both());
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        report.failures.len(),
        report.requests,
        &report.failures[..report.failures.len().min(5)]
    );
    let steps = walked(&repo.last_rollout_events());
    assert_eq!(
        steps.last().map(String::as_str),
        Some("promoted"),
        "{steps:?}"
    );
    assert!(steps.iter().any(|s| s == "passed 100"), "{steps:?}");
    assert_eq!(steps.first(), Some(&format!("step {cut_at}")), "{steps:?}");
    let deployments = repo.deployments();
    assert!(
        deployments.contains(&("blue".into(), v2.clone(), 100)),
        "{deployments:?}"
    );
    wait_until(
        "the old revision to be retired",
        Duration::from_secs(60),
        || repo.running_revisions() == [v2.clone()],
    );
}

/// Retrains in a row with the example's one-minute `scale_down_delay`: each promotion
/// schedules the previous revision's retirement, which comes due while a later rollout
/// runs. The data changes every 20 s (a retrain starts 20 s after the previous one
/// started, or when it ended if it took longer); every apply succeeds.
#[test]
fn retrains_in_a_row_never_collide_with_scheduled_retirements() {
    let repo = Repo::example(
        "steps = [10, 50, 100]\nstep_wait = \"10s\"\nmirror = 50\nmax_error_rate = 0.01\nscale_down_delay = \"1m\"\n",
    );
    repo.apply().ok();
    let key = repo.key();
    let mut versions = vec![repo.model_version()];
    let mut started: Option<Instant> = None;
    for retrain in 1..=3 {
        if let Some(at) = started {
            std::thread::sleep(
                (at + Duration::from_secs(20)).saturating_duration_since(Instant::now()),
            );
        }
        started = Some(Instant::now());
        repo.add_rows(1);
        let load = Load::start(repo.addr(), key.clone());
        let apply = repo.apply();
        let report = load.finish();
        assert_eq!(apply.code, 0, "retrain {retrain}: {}", apply.both());
        let version = repo.model_version();
        assert!(!versions.contains(&version), "retrain {retrain}: {version}");
        assert!(
            report.failures.is_empty(),
            "retrain {retrain}: {} of {} requests failed: {:?}",
            report.failures.len(),
            report.requests,
            &report.failures[..report.failures.len().min(5)]
        );
        assert!(
            repo.deployments()
                .contains(&("blue".into(), version.clone(), 100)),
            "retrain {retrain}: {:?}",
            repo.deployments()
        );
        versions.push(version);
    }
}

/// Kills `cairn apply` after its last step moved all traffic, before the promotion: the
/// next apply holds that step again under the gates, then promotes and retires the old
/// revision (it doesn't count the unjudged step as passed, nor roll out from the start).
#[test]
fn a_rollout_killed_before_its_promotion_holds_its_last_step_again() {
    let repo = Repo::example(
        "steps = [50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\nscale_down_delay = \"2s\"\n",
    );
    repo.apply().ok();
    let v1 = repo.model_version();
    let key = repo.key();

    repo.add_rows(1);
    let load = Load::start(repo.addr(), key);
    let mut apply = repo.spawn_apply(&["--lock-lease", "1s"]);
    wait_until(
        "the rollout to move all traffic",
        Duration::from_secs(120),
        || repo.canary_weight() == Some(100),
    );
    apply.kill().unwrap();
    apply.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("rollout: resumed at 100%: 100%, each held 5s"),
        "{}",
        plan.both()
    );
    let again = repo.apply();
    let report = load.finish();
    again.ok();
    let v2 = repo.model_version();
    assert_ne!(v1, v2);
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        report.failures.len(),
        report.requests,
        &report.failures[..report.failures.len().min(5)]
    );
    assert_eq!(
        walked(&repo.last_rollout_events()),
        ["step 100", "passed 100", "promoted"]
    );
    let deployments = repo.deployments();
    assert!(
        deployments.contains(&("blue".into(), v2.clone(), 100)),
        "{deployments:?}"
    );
    wait_until(
        "the old revision to be retired",
        Duration::from_secs(60),
        || repo.running_revisions() == [v2.clone()],
    );
}

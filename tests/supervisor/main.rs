//! Tests of the supervisor of local serving processes
//! (`cairn::backend::local::supervisor`), with real processes on loopback: the real
//! `cairn` binary is both the daemon (`cairn supervise`) and the replicas (`cairn serve`),
//! serving models trained by `cairn::workload::train` on a generated CSV.
//!
//! - `lifecycle`: replicas start, serve and outlive the client; a killed replica is
//!   restarted; a killed daemon is replaced by one that re-adopts its replicas; stop and
//!   shutdown leave no process behind.
//! - `faults`: a model that fails to load, a replica that never gets ready, a port taken
//!   at start, a daemon killed mid-apply, invalid and conflicting requests: each is a clear
//!   error, and what served before keeps serving.
//! - `routing`: the routers the daemon hosts: weights, the pin header and the key through
//!   the router; a port in use; crashed replicas and a killed daemon; stops refused while
//!   traffic flows, and scheduled stops.
//! - `survival`: serving survives the daemon (SIGKILL under load), restarts of a revision
//!   with no ready replica, live readiness (a stopped replica), `--stop` with no daemon, a
//!   clean environment for the daemon and its replicas, the systemd unit.
//!
//! Every test has its own state folder and daemon; [`Fixture`] shuts the daemon down on
//! drop (and kills what it recorded if that fails), so no process outlives the tests.

#![cfg(target_os = "linux")]

mod faults;
mod lifecycle;
mod routing;
mod survival;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::backend::local::child_env::ChildEnv;
use cairn::backend::local::supervisor::{
    self, DeploymentSpec, ReplicaState, ReplicaStatus, SupervisorClient,
};
use cairn::workload::{train, TrainOptions};
use serde_json::Value;

/// The endpoint every test deploys.
pub const ENDPOINT: &str = "risk-api";

pub fn cairn() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

/// The base environment the CLI would pass: the allowed variables of this process's.
pub fn child_env() -> ChildEnv {
    ChildEnv::allowed(std::env::vars_os())
}

/// A state folder with its daemon, trained models, and a runtime for the async client.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub runtime: tokio::runtime::Runtime,
    pub client: SupervisorClient,
    trained: PathBuf,
}

impl Fixture {
    /// Trains a model and starts a daemon for a fresh state folder.
    pub fn start() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = runtime();
        let client = runtime
            .block_on(supervisor::ensure_running(
                &tmp.path().join("state"),
                cairn(),
                &child_env(),
            ))
            .unwrap();
        let trained = train_model(tmp.path());
        Fixture {
            tmp,
            runtime,
            client,
            trained,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A model folder named `version` (a copy of the trained model).
    pub fn model(&self, version: &str) -> PathBuf {
        let dir = self.tmp.path().join("models/risk").join(version);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["model.safetensors", "metrics.json"] {
                std::fs::copy(self.trained.join(file), dir.join(file)).unwrap();
            }
        }
        dir
    }

    /// A model folder named `version` whose `model.safetensors` is corrupt.
    pub fn corrupt_model(&self, version: &str) -> PathBuf {
        let dir = self.model(version);
        let path = dir.join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..16].copy_from_slice(b"garbage!");
        std::fs::write(path, bytes).unwrap();
        dir
    }

    /// `cairn serve` of the model `version` as `deployment`, revision `version`.
    pub fn spec(&self, deployment: &str, version: &str, replicas: u32) -> DeploymentSpec {
        let mut spec = DeploymentSpec::cairn_serve(
            cairn(),
            &self.model(version),
            ENDPOINT,
            deployment,
            version,
        )
        .unwrap();
        spec.replicas = replicas;
        spec
    }

    pub fn apply(&self, specs: &[DeploymentSpec]) -> supervisor::Result<Vec<ReplicaStatus>> {
        self.block_on(self.client.apply(specs))
    }

    #[track_caller]
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.block_on(self.client.status()).unwrap()
    }

    pub fn daemon_pid(&self) -> u32 {
        self.block_on(self.client.ping()).unwrap().pid
    }

    /// The watchdog's pid, from the lock file.
    pub fn watchdog_pid(&self) -> Option<u32> {
        let lock = std::fs::read_to_string(self.state_dir().join(supervisor::LOCK_FILE)).ok()?;
        lock.split_whitespace().next()?.parse().ok()
    }

    /// Kills the watchdog, then the daemon (SIGKILL), so that nothing restarts it.
    pub fn kill_supervisor(&self) -> u32 {
        let daemon = self.daemon_pid();
        let watchdog = self.watchdog_pid().expect("a watchdog holds the lock");
        assert_ne!(watchdog, daemon);
        kill(watchdog, libc::SIGKILL);
        wait_gone(&[watchdog]);
        kill(daemon, libc::SIGKILL);
        wait_gone(&[daemon]);
        daemon
    }

    /// Starts a supervisor for the fixture's folder when none answers.
    pub fn ensure_running(&self) -> SupervisorClient {
        self.block_on(supervisor::ensure_running(
            &self.state_dir(),
            cairn(),
            &child_env(),
        ))
        .unwrap()
    }

    /// Polls the status until `check` holds (10 s at most); returns it.
    #[track_caller]
    pub fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&[ReplicaStatus]) -> bool,
    ) -> Vec<ReplicaStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status();
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "waited 10 s for {what}; status: {status:#?}\nsupervisor log:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.state_dir().join(supervisor::LOG_FILE)).unwrap_or_default()
    }

    pub fn state_json(&self) -> Value {
        let text = std::fs::read_to_string(self.state_dir().join(supervisor::STATE_FILE)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Every pid `state.json` records, as a last resort for cleaning up.
    fn recorded_pids(&self) -> Vec<u32> {
        let Ok(text) = std::fs::read_to_string(self.state_dir().join(supervisor::STATE_FILE))
        else {
            return Vec::new();
        };
        let Ok(state) = serde_json::from_str::<Value>(&text) else {
            return Vec::new();
        };
        state["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["replicas"].as_array().into_iter().flatten())
            .filter_map(|r| r["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.block_on(self.client.shutdown()).is_ok() {
            return;
        }
        // The daemon is gone or stuck (a failed test): kill what it recorded, but only
        // processes that belong to this test (their command line names its folder).
        let mine = self.tmp.path().to_string_lossy().into_owned();
        let supervisor = processes_mentioning(&format!("supervise --state {mine}"));
        let watchdog = self.watchdog_pid();
        for pid in watchdog
            .into_iter()
            .chain(supervisor)
            .chain(self.recorded_pids())
        {
            if pid > 1 && cmdline(pid).contains(&mine) {
                kill(pid, libc::SIGKILL);
            }
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Trains on 200 generated rows of `age,income,utilization,label`; returns the model folder.
fn train_model(tmp: &Path) -> PathBuf {
    let mut csv = String::from("age,income,utilization,label\n");
    let mut seed = 42u64;
    let mut float = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..200 {
        let age = 20.0 + 50.0 * float();
        let income = 20_000.0 + 80_000.0 * float();
        let utilization = float();
        let z = -0.04 * (age - 45.0) - (income - 60_000.0) / 20_000.0 + 3.0 * (utilization - 0.5);
        let label = u8::from(z + float() - 0.5 > 0.0);
        csv.push_str(&format!("{age:.1},{income:.0},{utilization:.3},{label}\n"));
    }
    let data = tmp.join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let out = tmp.join("trained");
    train(&TrainOptions {
        data,
        out: out.clone(),
        epochs: 50,
        ..TrainOptions::default()
    })
    .unwrap();
    out
}

/// Scores one row on `addr`; returns the response's status, deployment header and body.
pub fn predict(addr: SocketAddr) -> (u16, Option<String>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .post(format!("http://{addr}/v1/predict"))
        .header("content-type", "application/json")
        .send(r#"{"rows": [{"age": 30, "income": 50000, "utilization": 0.3}]}"#)
        .unwrap_or_else(|e| panic!("POST /v1/predict on {addr}: {e}"));
    let deployment = response
        .headers()
        .get("x-cairn-deployment")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = response.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (response.status().as_u16(), deployment, json)
}

/// Asserts that every replica is ready and answers predictions as `deployment`, model
/// version `version`.
#[track_caller]
pub fn assert_serving(replicas: &[ReplicaStatus], deployment: &str, version: &str) {
    assert!(!replicas.is_empty());
    for replica in replicas {
        assert_eq!(replica.state, ReplicaState::Ready, "{replica:#?}");
        let addr = replica.addr.expect("a ready replica has an address");
        let (status, header, body) = predict(addr);
        assert_eq!(status, 200, "{body}");
        assert_eq!(header.as_deref(), Some(deployment));
        assert_eq!(body["version"], version, "{body}");
        let score = body["scores"][0].as_f64().expect("a score");
        assert!((0.0..=1.0).contains(&score), "{body}");
    }
}

/// The replicas of one revision.
pub fn of(replicas: &[ReplicaStatus], revision: &str) -> Vec<ReplicaStatus> {
    replicas
        .iter()
        .filter(|r| r.revision == revision)
        .cloned()
        .collect()
}

pub fn pids(replicas: &[ReplicaStatus]) -> Vec<u32> {
    replicas.iter().map(|r| r.pid.expect("a pid")).collect()
}

pub fn all_ready(replicas: &[ReplicaStatus]) -> bool {
    replicas.iter().all(|r| r.state == ReplicaState::Ready)
}

/// Fields of `/proc/PID/stat` after the command name: state is [0], pgrp [2], session [3].
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Whether the process is gone (or a zombie no one reaped yet: it runs no more).
pub fn gone(pid: u32) -> bool {
    stat_fields(pid).is_none_or(|f| f[0] == "Z" || f[0] == "X")
}

#[track_caller]
pub fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|p| gone(*p)) {
        assert!(Instant::now() < deadline, "processes {pids:?} still run");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !gone(*pid) && cmdline(*pid).contains(needle))
        .collect()
}

pub fn kill(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    assert!(pid > 1);
    // SAFETY: signals one process of this test, by a pid > 1.
    unsafe {
        libc::kill(pid, signal);
    }
}

//! The `local` target's fixture: this machine with the folder store. Jobs run as
//! processes; the endpoint is served by the local supervisor and router on a free
//! loopback port, and checked with real prediction requests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::fixture::{Job, Repo, Requests, TargetFixture, TargetManifests, ROWS};
use crate::support::free_port;
use crate::support::Run;

pub struct LocalFixture {
    repo: Repo,
}

impl Drop for LocalFixture {
    fn drop(&mut self) {
        // Stops the routers and replicas this test started.
        let serving = self.repo.root().join(".cairn/serving");
        let _ = self.repo.cairn(&[
            "supervise",
            "--stop",
            "--state",
            &serving.display().to_string(),
        ]);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POSTs [`ROWS`] to the endpoint with a bearer key; returns the status.
fn predict_with(agent: &ureq::Agent, addr: SocketAddr, key: Option<&str>, body: &str) -> u16 {
    let mut request = agent
        .post(format!("http://{addr}/v1/predict"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("Authorization", &format!("Bearer {key}"));
    }
    request
        .send(body)
        .map(|r| r.status().as_u16())
        .unwrap_or(599)
}

/// POSTs [`ROWS`] to the endpoint; returns the status and the body.
fn predict(agent: &ureq::Agent, addr: SocketAddr) -> Result<(u16, Value), String> {
    let mut response = agent
        .post(format!("http://{addr}/v1/predict"))
        .header("content-type", "application/json")
        .send(ROWS)
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

impl LocalFixture {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.repo.port()))
    }

    /// The revisions the supervisor runs for the endpoint.
    fn running_revisions(&self) -> Vec<String> {
        let path = self.repo.root().join(".cairn/serving/state.json");
        let state: Value = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        state["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["spec"]["endpoint"] == "contract.api")
            .map(|d| d["spec"]["revision"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

impl TargetFixture for LocalFixture {
    fn start(endpoint: bool) -> LocalFixture {
        let target = TargetManifests {
            workspace: "store = \"file://.cairn/store\"".into(),
            compute: "target = \"local\"\nmax_gpus = 0".into(),
            job: String::new(),
            port: free_port(),
        };
        let dir = tempfile::tempdir().expect("temporary folder");
        LocalFixture {
            repo: Repo::new(dir, target, None, endpoint, |_| {}),
        }
    }

    fn repo(&self) -> &Repo {
        &self.repo
    }

    fn failed_job_reason(&self) -> &'static str {
        "exited with code 3"
    }

    fn timed_out_reason(&self) -> &'static str {
        "timed out after 1s"
    }

    /// A few predictions through the router, every one answered by `version`.
    fn assert_serving(&self, version: &str) {
        let agent = agent();
        for _ in 0..10 {
            let (status, body) = predict(&agent, self.addr()).unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["version"], version, "{body}");
            assert_eq!(body["scores"].as_array().map(Vec::len), Some(2), "{body}");
        }
    }

    /// The router no longer answers, and the supervisor runs no replica of it.
    fn assert_not_serving(&self) {
        assert!(
            TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2)).is_err(),
            "something still listens on {}",
            self.addr()
        );
        assert_eq!(self.running_revisions(), Vec::<String>::new());
    }

    /// Nothing serves, and the endpoint's port is free for anyone to take.
    fn assert_torn_down(&self) {
        self.assert_not_serving();
        TcpListener::bind(self.addr())
            .unwrap_or_else(|e| panic!("the port {} is not freed: {e}", self.addr()));
    }

    /// Predictions through the router in a loop on another thread.
    fn apply_under_load(&self) -> (Run, Requests) {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = self.addr();
        let load = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut requests = Requests::default();
                while !stop.load(Ordering::Relaxed) {
                    match predict(&agent, addr) {
                        Ok((200, _)) => requests.ok += 1,
                        _ => requests.failed += 1,
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                requests
            })
        };
        let run = self.repo.apply();
        stop.store(true, Ordering::Relaxed);
        (run, load.join().unwrap())
    }

    /// A model whose parameters load but whose every score overflows to NaN (the server
    /// answers 500), "trained" by copying it.
    fn break_next_version(&self) {
        let dir = self.repo.scratch().join("broken");
        let model = cairn::workload::Model::new(
            vec!["age".into(), "income".into()],
            "defaulted".into(),
            vec![1.0, -1.0],
            0.0,
            vec![-1e300; 2],
            vec![1e-300; 2],
        )
        .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        model.save(&dir).unwrap();
        self.repo
            .set_job(&Job::script(format!("cp -r {}/. \"$2\"", dir.display())));
    }

    /// The key file apply wrote (mode 0600) under `.cairn/serving/keys/`.
    fn endpoint_key(&self) -> Option<String> {
        let dir = self.repo.root().join(".cairn/serving/keys");
        let mut keys = std::fs::read_dir(dir).ok()?.filter_map(Result::ok);
        let file = keys.next()?;
        assert!(keys.next().is_none(), "one endpoint, one key");
        Some(
            std::fs::read_to_string(file.path())
                .ok()?
                .trim()
                .to_string(),
        )
    }

    /// Through the router.
    fn predict_status(&self, key: Option<&str>) -> u16 {
        predict_with(&agent(), self.addr(), key, ROWS)
    }

    fn predict_body(&self, body: &str) -> u16 {
        predict_with(&agent(), self.addr(), None, body)
    }

    fn invoke_args(&self, _key_file: &std::path::Path) -> Vec<String> {
        Vec::new()
    }
}

//! A real Prometheus for tests: Debian's `prometheus` (2.42) on a free loopback port,
//! scraping every second the targets a test lists ([`Prometheus::set_targets`], a file
//! Prometheus discovers them from, with their labels, as Kubernetes discovery would
//! attach `namespace` and `pod`). Killed when dropped.
//!
//! `.ci/run` installs it; without it the tests that need it fail (never skip), saying
//! so. `CAIRN_PROMETHEUS` may name the binary.
//!
//! Include with `#[path = "../support/prometheus.rs"] mod prometheus;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Prometheus {
    child: Child,
    port: u16,
    /// `prometheus.yml`, `targets.json`, `data/` and `prometheus.log`.
    dir: tempfile::TempDir,
}

fn find_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_PROMETHEUS") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the Prometheus gate tests need a real Prometheus and it is not installed: \
                 run `.ci/run`, or `apt-get install prometheus`, or point CAIRN_PROMETHEUS \
                 at the binary"
            )
        })
}

impl Prometheus {
    /// Starts Prometheus with no targets and waits until it is ready.
    pub fn start() -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets = dir.path().join("targets.json");
        std::fs::write(&targets, "[]").unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: pods\n    file_sd_configs:\n      \
             - files: ['{}']\n        refresh_interval: 1s\n",
            targets.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(find_binary())
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let prometheus = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = ureq::get(&format!("{}/-/ready", prometheus.url()))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not get ready in 30 s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Scrapes these `host:port`s from now on, each with its labels (written
    /// atomically: Prometheus never reads half a file).
    pub fn set_targets(&self, targets: &[(String, BTreeMap<String, String>)]) {
        let groups: Vec<Value> = targets
            .iter()
            .map(|(address, labels)| json!({"targets": [address], "labels": labels}))
            .collect();
        let path = self.dir.path().join("targets.json");
        let tmp = self.dir.path().join("targets.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&groups).unwrap()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// An instant query's `data.result`.
    pub fn query(&self, query: &str) -> Value {
        let text = ureq::get(&format!("{}/api/v1/query", self.url()))
            .query("query", query)
            .call()
            .unwrap_or_else(|e| panic!("querying {query}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"].clone()
    }

    /// Waits until Prometheus scrapes `n` targets, all up.
    pub fn wait_up(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.query("up");
            let series = up.as_array().cloned().unwrap_or_default();
            if series.len() == n && series.iter().all(|s| s["value"][1] == "1") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not scrape {n} targets up in {timeout:?}: {up}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

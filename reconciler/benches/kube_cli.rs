//! `cairn plan` and `cairn apply` of N endpoints on Kubernetes, end to end through the
//! binary (`cargo bench --bench kube_cli`; in a debug build: `cargo test --bench
//! kube_cli`), against the in-memory test API server and a real S3 server (s3s-fs,
//! installed by `.ci/run`).
//!
//! A workspace declares one imported model and N endpoints on a `kubernetes` compute
//! with a gateway: each renders a Deployment, its revision's Service, the endpoint's
//! Service and an HTTPRoute (4 objects, plus the Namespace, LimitRange and
//! ServiceAccount). A "kubelet" thread marks each new Deployment available, as a
//! cluster would once its pods are ready. For each N (250 and 1,000 by default;
//! `CAIRN_BENCH_ENDPOINTS=100,400` to choose), on a fresh server and store:
//!
//! 1. `cairn plan` (nothing live: renders and lists everything; writes nothing),
//! 2. `cairn apply --auto-approve --parallelism P` (`CAIRN_BENCH_PARALLELISM`, 16),
//! 3. `cairn plan --detailed-exitcode` again (must say no changes: exit 0).
//!
//! Prints wall times, cairn's CPU time (user + system, through `getrusage`), API requests, the most requests the server handled at once, and
//! the ratio of the largest N's times to the smallest's (linear growth: about the ratio
//! of the Ns).

#[macro_use]
mod support;

#[path = "../../tests/support/kube_server/mod.rs"]
#[allow(unused_imports, dead_code)]
mod kube_server;

#[path = "../../tests/support/s3_server.rs"]
#[allow(unused_imports, dead_code)]
mod s3_server;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube_server::KubeServer;
use s3_server::{aws_credentials, S3Server, BUCKET, SECRET_KEY};

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");
const CONTEXT: &str = "bench";

fn sizes() -> Vec<usize> {
    std::env::var("CAIRN_BENCH_ENDPOINTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| {
            if support::smoke() {
                vec![3, 6]
            } else {
                vec![250, 1000]
            }
        })
}

/// Writes the workspace: one model, `n` endpoints.
fn manifests(root: &Path, n: usize, s3: &S3Server) {
    let ws = root.join("bench");
    std::fs::create_dir_all(ws.join("model")).unwrap();
    std::fs::write(ws.join("model/model.onnx"), "a tiny model").unwrap();
    std::fs::write(
        ws.join("workspace.toml"),
        format!(
            "[workspace]\nenvironment = \"dev\"\nstore = \"s3://{BUCKET}/bench\"\n\
             endpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\n",
            s3.endpoint()
        ),
    )
    .unwrap();
    std::fs::write(
        ws.join("compute.toml"),
        format!(
            "[compute.serve]\ntarget = \"kubernetes\"\ncontext = \"{CONTEXT}\"\n\
             namespace = \"bench-serve\"\ngateway = \"infra/gateway\"\nidle_shutdown = \"1h\"\n\
             roles = [\"serve\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        ws.join("model.toml"),
        "[model.scorer]\nsource = \"model/\"\nformat = \"onnx\"\n",
    )
    .unwrap();
    let mut endpoints = String::new();
    for i in 0..n {
        let _ = write!(
            endpoints,
            "[endpoint.e{i}]\ncompute = \"compute.serve\"\nport = 8080\nauth = \"key\"\n\
             [endpoint.e{i}.deployments.blue]\nmodel = \"model.scorer\"\nreplicas = 1\n\
             [endpoint.e{i}.traffic]\nblue = 100\n\n"
        );
    }
    std::fs::write(ws.join("endpoints.toml"), endpoints).unwrap();
}

struct Run {
    took: Duration,
    /// CPU time (user + system) the command used: steadier than wall time on a busy
    /// machine.
    cpu: Duration,
    code: Option<i32>,
    output: String,
}

/// CPU time used so far by this process's waited-for children.
fn children_cpu() -> Duration {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn cairn(root: &Path, kubeconfig: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(CAIRN);
    cmd.args(args)
        .arg(root)
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .stdin(Stdio::null());
    aws_credentials(&mut cmd, SECRET_KEY);
    let cpu = children_cpu();
    let started = Instant::now();
    let out = cmd.output().expect("cairn runs");
    Run {
        took: started.elapsed(),
        cpu: children_cpu() - cpu,
        code: out.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Marks new Deployment generations available until `stop`.
fn kubelet(server: &KubeServer, stop: &AtomicBool) {
    let mut seen = 0;
    while !stop.load(Ordering::SeqCst) {
        let now = server.resource_version();
        for object in server.changed_since("Deployment", seen) {
            if object["status"]["observedGeneration"] != object["metadata"]["generation"] {
                let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
                let name = object["metadata"]["name"].as_str().unwrap_or("");
                server.deployment_available(ns, name);
            }
        }
        seen = now;
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Figures {
    n: usize,
    objects: usize,
    plan: Duration,
    apply: Duration,
    again: Duration,
    /// CPU time of the plan, apply and no-op plan.
    cpu: [Duration; 3],
    apply_requests: usize,
    again_requests: usize,
    max_in_flight: usize,
}

fn measure(n: usize, parallelism: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let s3 = S3Server::start_serialized();
    manifests(&root, n, &s3);
    let server = KubeServer::start();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, CONTEXT);

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| kubelet(&server, &stop));
        let plan = cairn(&root, &kubeconfig, &["plan"]);
        assert_eq!(plan.code, Some(0), "plan failed:\n{}", plan.output);
        assert_eq!(server.writes(), 0, "the plan wrote to the cluster");

        server.clear_requests();
        server.reset_max_in_flight();
        let p = parallelism.to_string();
        let apply = cairn(
            &root,
            &kubeconfig,
            &["apply", "--auto-approve", "--parallelism", &p],
        );
        assert_eq!(apply.code, Some(0), "apply failed:\n{}", apply.output);
        let apply_requests = server.requests().len();
        let max_in_flight = server.max_in_flight();
        let objects = server
            .objects()
            .iter()
            .filter(|o| o["metadata"]["namespace"] == "bench-serve")
            .count();

        server.clear_requests();
        let again = cairn(&root, &kubeconfig, &["plan", "--detailed-exitcode"]);
        assert_eq!(again.code, Some(0), "not converged:\n{}", again.output);
        let again_requests = server.requests().len();
        stop.store(true, Ordering::SeqCst);
        Figures {
            n,
            objects,
            plan: plan.took,
            apply: apply.took,
            again: again.took,
            cpu: [plan.cpu, apply.cpu, again.cpu],
            apply_requests,
            again_requests,
            max_in_flight,
        }
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` from the harness is ignored.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let parallelism: usize = std::env::var("CAIRN_BENCH_PARALLELISM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    figure!(
        "cairn plan/apply of N endpoints on Kubernetes (test API server, s3s-fs store), apply --parallelism {parallelism}:"
    );
    let mut all = Vec::new();
    for n in sizes() {
        let f = measure(n, parallelism);
        figure!(
            "  {:>5} endpoints ({:>5} objects): plan {:>6.2} s | apply {:>6.2} s ({:>6.0} objects/s, {} requests, at most {} in flight) | no-op plan {:>5.2} s ({} requests)",
            f.n,
            f.objects,
            f.plan.as_secs_f64(),
            f.apply.as_secs_f64(),
            f.objects as f64 / f.apply.as_secs_f64(),
            f.apply_requests,
            f.max_in_flight,
            f.again.as_secs_f64(),
            f.again_requests,
        );
        figure!(
            "        cairn's CPU time: plan {:.2} s, apply {:.2} s, no-op plan {:.2} s",
            f.cpu[0].as_secs_f64(),
            f.cpu[1].as_secs_f64(),
            f.cpu[2].as_secs_f64()
        );
        all.push(f);
    }
    if let (Some(small), Some(large)) = (all.first(), all.last()) {
        if large.n > small.n {
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
            figure!(
                "  {}/{} endpoints: ×{:.1} the endpoints; plan ×{:.2}, apply ×{:.2}, no-op plan ×{:.2}",
                large.n,
                small.n,
                large.n as f64 / small.n as f64,
                ratio(large.plan, small.plan),
                ratio(large.apply, small.apply),
                ratio(large.again, small.again),
            );
            figure!(
                "  CPU time ×: plan ×{:.2}, apply ×{:.2}, no-op plan ×{:.2}",
                ratio(large.cpu[0], small.cpu[0]),
                ratio(large.cpu[1], small.cpu[1]),
                ratio(large.cpu[2], small.cpu[2]),
            );
        }
    }
    support::finish();
}

//! The node of the Kubernetes target's test world: nothing in the test API server runs
//! pods, so this thread plays the kubelet and the job and deployment controllers.
//!
//! - A new Job's pod runs here (each Job's on a thread of its own, side by side), step
//!   by step as the cluster would run it: each init
//!   container, then the main container, each as a real process with its command and
//!   environment (paths in its volumes mapped to folders here: [`Mounts`]). Cairn's own steps
//!   (`cairn fetch`, `cairn upload`) run the real binary against the S3 store; the
//!   job's own step runs its command as written. A step whose exit code matches a
//!   `FailJob` rule of the Job's `podFailurePolicy` fails the Job (`PodFailurePolicy`);
//!   any other failed pod is run again up to the Job's `backoffLimit`, then the Job is
//!   marked failed (`BackoffLimitExceeded`); a Job active longer than its
//!   `activeDeadlineSeconds` (read again while the pod runs: apply sets it) has its pod
//!   killed and is marked failed (`DeadlineExceeded`), as the job controller does. A
//!   suspended Job waits until it is resumed.
//! - A Deployment's new generation is marked available, and its serving pods are
//!   started ([`crate::pods::Pods`]: small HTTP servers answering predictions and
//!   `/metrics`, reachable through the API server's pod proxy).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kube_server::KubeServer;
use crate::pod_volumes::Mounts;
use crate::pods::Pods;
use crate::s3_server::{aws_credentials, SECRET_KEY};

/// The kubelet thread; dropping it stops it.
pub struct Kubelet {
    node: Arc<Node>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the thread works with.
pub struct Node {
    server: Arc<KubeServer>,
    /// One folder per pod run.
    work: PathBuf,
    pub pods: Pods,
    log: Mutex<Vec<String>>,
}

/// How one run of a Job's pod ended.
enum PodEnd {
    Succeeded,
    /// A step (container) exited non-zero.
    Failed {
        step: String,
        code: i32,
    },
    DeadlineExceeded,
}

/// The index of the Job's `podFailurePolicy` rule that fails the whole Job for this
/// container's exit code (`FailJob` with `onExitCodes`), as the job controller matches
/// them: in order, the first rule that matches decides.
fn fail_job_rule(job: &Value, container: &str, code: i32) -> Option<usize> {
    let rules = job["spec"]["podFailurePolicy"]["rules"].as_array()?;
    for (index, rule) in rules.iter().enumerate() {
        let Some(on) = rule.get("onExitCodes") else {
            continue;
        };
        if on["containerName"].as_str().is_some_and(|c| c != container) {
            continue;
        }
        let values: Vec<i64> = on["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        let listed = values.contains(&i64::from(code));
        let matched = match on["operator"].as_str() {
            Some("In") => listed,
            Some("NotIn") => !listed,
            _ => false,
        };
        if matched {
            return (rule["action"] == "FailJob").then_some(index);
        }
    }
    None
}

impl Kubelet {
    /// Starts playing the node of `server`, running pods under `work`.
    pub fn start(server: Arc<KubeServer>, work: PathBuf) -> Kubelet {
        std::fs::create_dir_all(&work).unwrap();
        let node = Arc::new(Node {
            server,
            work,
            pods: Pods::new(),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (node, stop) = (node.clone(), stop.clone());
            std::thread::spawn(move || node.run(&stop))
        };
        Kubelet {
            node,
            stop,
            thread: Some(thread),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// What it did, one entry per event.
    pub fn lines(&self) -> Vec<String> {
        self.node.log.lock().unwrap().clone()
    }

    /// What it did, for failure messages.
    pub fn log(&self) -> String {
        self.node.log.lock().unwrap().join("\n")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Node {
    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    /// Each Job's pod runs on a thread of its own, as a node runs pods side by side;
    /// they are waited for once stopped.
    fn run(self: &Arc<Self>, stop: &AtomicBool) {
        let mut started_jobs: BTreeSet<String> = BTreeSet::new();
        let mut pods = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            for object in self.server.objects() {
                let kind = object["kind"].as_str().unwrap_or("");
                let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
                let name = object["metadata"]["name"].as_str().unwrap_or("");
                let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
                match kind {
                    // A suspended Job waits for its queue (Kueue) to resume it.
                    "Job"
                        if object["status"].get("conditions").is_none()
                            && object["spec"]["suspend"] != true
                            && started_jobs.insert(uid) =>
                    {
                        let (node, ns, name) = (self.clone(), ns.to_string(), name.to_string());
                        pods.push(std::thread::spawn(move || {
                            node.run_job(&ns, &name, &object)
                        }));
                    }
                    "Deployment"
                        if object["status"]["observedGeneration"]
                            != object["metadata"]["generation"] =>
                    {
                        self.note(format!("Deployment {ns}/{name} available"));
                        let deployment = self.server.deployment_available(ns, name);
                        self.pods.start(&self.server, &deployment);
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        for pod in pods {
            let _ = pod.join();
        }
    }

    /// Runs a Job's pod until it succeeds, runs out of retries or of its deadline, and
    /// records how the Job ended. The deadline is read again as the pod runs (apply
    /// sets it once every pod runs) and counts from the Job's start.
    fn run_job(&self, ns: &str, name: &str, job: &Value) {
        let backoff_limit = job["spec"]["backoffLimit"].as_u64().unwrap_or(6);
        let started = Instant::now();
        let deadline = || {
            self.server
                .object("batch/v1", "Job", Some(ns), name)
                .and_then(|j| j["spec"]["activeDeadlineSeconds"].as_u64())
                .is_some_and(|s| started.elapsed() >= Duration::from_secs(s))
        };
        let pod = &job["spec"]["template"]["spec"];
        let init_count = pod["initContainers"].as_array().map_or(0, Vec::len);
        self.note(format!("Job {ns}/{name}: started"));
        for attempt in 0..=backoff_limit {
            let root = self.work.join(ns).join(format!("{name}-{attempt}"));
            // The pod, as the job controller creates it (owned by the Job, so a Job
            // deleted in the foreground takes it along) and the kubelet reports it: an
            // init container running leaves it Pending and not ready; the main
            // container running makes it ready.
            let pod_name = format!("{name}-{attempt}");
            self.server.create(
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {
                        "name": pod_name, "namespace": ns,
                        "labels": {"batch.kubernetes.io/job-name": name, "job-name": name},
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                            "uid": job["metadata"]["uid"], "controller": true,
                            "blockOwnerDeletion": true}],
                    },
                    "spec": pod.clone(),
                }),
                "kube-controller-manager",
            );
            self.server.job_running(ns, name, 1, 0);
            let on_step = |index: usize, step: &str| {
                let state = json!([{"name": step, "image": "", "imageID": "", "ready": index >= init_count,
                    "restartCount": 0, "state": {"running": {}}}]);
                let status = if index < init_count {
                    json!({"phase": "Pending", "initContainerStatuses": state})
                } else {
                    self.server.job_running(ns, name, 1, 1);
                    json!({"phase": "Running", "containerStatuses": state})
                };
                self.server
                    .set_status("v1", "Pod", Some(ns), &pod_name, status);
            };
            match self.run_pod(ns, &pod_name, &root, pod, &deadline, &on_step) {
                PodEnd::Succeeded => {
                    self.note(format!("Job {ns}/{name}: succeeded"));
                    self.server.job_succeeded(ns, name);
                    return;
                }
                PodEnd::Failed { step, code } => {
                    self.note(format!("Job {ns}/{name}: pod {attempt} failed"));
                    if let Some(rule) = fail_job_rule(job, &step, code) {
                        let pod_name = format!("{name}-{attempt}");
                        self.server
                            .job_failed_by_policy(ns, name, &pod_name, &step, code, rule);
                        return;
                    }
                }
                PodEnd::DeadlineExceeded => {
                    self.note(format!("Job {ns}/{name}: deadline exceeded"));
                    self.deadline_exceeded(ns, name);
                    return;
                }
            }
        }
        self.server.job_failed(ns, name);
    }

    /// Marks a Job failed as the job controller does past `activeDeadlineSeconds`.
    fn deadline_exceeded(&self, ns: &str, name: &str) {
        self.server.job_failed_with(
            ns,
            name,
            1,
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        );
    }

    /// Runs one pod's steps in order, in a fresh folder holding its `emptyDir` volumes
    /// (its claims' folders outlive it: [`Mounts`]).
    fn run_pod(
        &self,
        ns: &str,
        pod_name: &str,
        root: &Path,
        pod: &Value,
        past_deadline: &dyn Fn() -> bool,
        on_step: &dyn Fn(usize, &str),
    ) -> PodEnd {
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root).unwrap();
        let steps = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["containers"].as_array().into_iter().flatten());
        for (index, container) in steps.enumerate() {
            let step = container["name"].as_str().unwrap_or("?");
            on_step(index, step);
            let env: Vec<(String, String)> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let claims = self.work.join("claims");
            let mounts = match Mounts::of(&self.server, ns, pod, container, root, &claims, &env) {
                Ok(mounts) => mounts,
                Err(e) => {
                    self.note(format!("{step}: {e}"));
                    return PodEnd::Failed {
                        step: step.to_string(),
                        code: 1,
                    };
                }
            };
            let env: Vec<(String, String)> = env
                .into_iter()
                .map(|(k, v)| (k, mounts.local(&v)))
                .collect();
            // The job writes its outputs into folders of the pod's volume.
            for (key, dir) in &env {
                if key.starts_with("CAIRN_OUTPUT_") {
                    std::fs::create_dir_all(dir).unwrap();
                }
            }
            let command: Vec<String> = container["command"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| mounts.local(a.as_str().unwrap()))
                .collect();
            let Some(program) = command.first() else {
                self.note(format!(
                    "{step}: no command (the image's entrypoint can't run here)"
                ));
                return PodEnd::Failed {
                    step: step.to_string(),
                    code: 1,
                };
            };
            let program = if program == "cairn" {
                env!("CARGO_BIN_EXE_cairn")
            } else {
                program.as_str()
            };
            let log = root.join(format!("{step}.log"));
            let mut cmd = Command::new(program);
            cmd.args(&command[1..])
                .envs(env.iter().cloned())
                .env("NO_COLOR", "1")
                .current_dir(root)
                .stdin(Stdio::null())
                .stdout(File::create(&log).unwrap())
                .stderr(File::create(root.join(format!("{step}.err"))).unwrap());
            aws_credentials(&mut cmd, SECRET_KEY);
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0);
            let mut child = cmd.spawn().unwrap();
            let mut polls = 0u32;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                polls += 1;
                if polls % 5 == 0 && past_deadline() {
                    crate::support::kill_group(child.id());
                    let _ = child.wait();
                    return PodEnd::DeadlineExceeded;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let output = |ext: &str| {
                std::fs::read_to_string(root.join(format!("{step}.{ext}"))).unwrap_or_default()
            };
            self.note(format!(
                "{}: {step}: {command:?} {status}\n{}{}",
                root.display(),
                output("log"),
                output("err")
            ));
            // What the container wrote is its log, read through `pods/log`.
            for line in output("log").lines().chain(output("err").lines()) {
                self.server.pod_log(ns, pod_name, step, line);
            }
            if !status.success() {
                return PodEnd::Failed {
                    step: step.to_string(),
                    code: status.code().unwrap_or(137),
                };
            }
        }
        PodEnd::Succeeded
    }
}

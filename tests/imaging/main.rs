//! The `imaging` example on Kubernetes, end to end: the real `cairn` binary plans and
//! applies the example workspace against two test API servers (one kubeconfig, two
//! contexts: the cloud GPU pool and the on-premises cluster) and a real S3 server.
//!
//! Nothing runs pods in the test API server, so a small "kubelet" here plays the node:
//! for each new Job it runs the pod's steps as the cluster would, with the real binary
//! for Cairn's own containers (`cairn fetch` of the dataset version from S3, `cairn
//! upload` of the output folder as the model version) and a stand-in for the trainer's
//! image (`images/densenet-trainer/bin/torchrun`: the job's two pods run together and
//! rendezvous at instance 0 through the run's headless Service, with the env Cairn set,
//! before instance 0 writes a model file), then marks the Job complete; for each
//! Deployment it marks the rollout available.
//!
//! Checked: the first plan lists the objects per resource; apply converges (the model
//! version is in the store with its lineage, the Deployment serves it, the route sends
//! it all traffic); the next plan says "No changes"; a hand edit of a managed field by
//! another field manager shows as drift on that field only, and apply repairs it; a
//! Job asking for more GPUs than the namespace's quota is refused at plan time with the
//! numbers.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

#[path = "../support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

#[path = "../support/kube_server/mod.rs"]
#[allow(dead_code)]
mod kube_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../support/pod_volumes.rs"]
mod pod_volumes;
mod pods;
#[path = "../support/prometheus.rs"]
mod prometheus;
mod prometheus_gates;
mod rollout;

use pod_volumes::Mounts;

use kube_server::KubeServer;
use s3_server::{aws_credentials, S3Server, BUCKET, SECRET_KEY};
use support::{copy_dir, Run};

const TRAIN_CONTEXT: &str = "aks-gpu-westeurope";
const SERVE_CONTEXT: &str = "onprem-radiology";

/// The example's manifests copied into a temporary folder, its store pointed at the
/// test S3 server, with a kubeconfig naming both test clusters.
struct World {
    dir: tempfile::TempDir,
    root: PathBuf,
    kubeconfig: PathBuf,
    s3: S3Server,
    train: KubeServer,
    serve: KubeServer,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("repo");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/imaging");
        copy_dir(&example, &root.join("imaging"));
        let s3 = S3Server::start_serialized();
        let workspace = root.join("imaging/workspace.toml");
        let text = std::fs::read_to_string(&workspace).unwrap();
        let text = text
            .replace(
                "store = \"s3://st-marys-imaging/ml\"",
                &format!(
                    "store = \"s3://{BUCKET}/imaging\"\nendpoint = \"{}\"\npath_style = true",
                    s3.endpoint()
                ),
            )
            .replace("region = \"eu-west-1\"", "region = \"us-east-1\"");
        assert!(
            text.contains(&s3.endpoint()),
            "the example's store line moved"
        );
        std::fs::write(&workspace, text).unwrap();

        let train = KubeServer::start();
        let serve = KubeServer::start();
        // The GPU pool: two nodes with four GPUs each.
        for i in 0..2 {
            let node = format!("a100-{i}");
            // Labelled as the example's `a100` instance type selects.
            train.create(
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": node, "labels": {"agentpool": "a100"}}}),
                "kubelet",
            );
            train.set_status(
                "v1",
                "Node",
                None,
                &node,
                json!({"allocatable": {"cpu": "24", "memory": "220Gi", "nvidia.com/gpu": "4"}}),
            );
        }
        // The on-premises cluster: one node with two T4s (a rollout runs two revisions).
        serve.create(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "t4-0",
                   "labels": {"node.kubernetes.io/instance-type": "g4dn.2xlarge"}}}),
            "kubelet",
        );
        serve.set_status(
            "v1",
            "Node",
            None,
            "t4-0",
            json!({"allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2"}}),
        );
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            two_context_kubeconfig(&[(TRAIN_CONTEXT, &train), (SERVE_CONTEXT, &serve)]),
        )
        .unwrap();
        World {
            dir,
            root,
            kubeconfig,
            s3,
            train,
            serve,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(args)
            .arg(&self.root)
            .current_dir(self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        aws_credentials(&mut cmd, SECRET_KEY);
        cmd
    }

    fn cairn(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        Run::from(self.command(args).output().unwrap(), started.elapsed())
    }

    fn servers(&self) -> [(&str, &KubeServer); 2] {
        [(TRAIN_CONTEXT, &self.train), (SERVE_CONTEXT, &self.serve)]
    }
}

/// One kubeconfig reaching several test servers, one context each.
fn two_context_kubeconfig(servers: &[(&str, &KubeServer)]) -> String {
    let q = |s: &str| Value::String(s.to_string()).to_string();
    let mut clusters = String::new();
    let mut users = String::new();
    let mut contexts = String::new();
    for (name, server) in servers {
        let n = q(name);
        clusters.push_str(&format!(
            "- name: {n}\n  cluster:\n    server: {}\n",
            q(&server.url())
        ));
        users.push_str(&format!(
            "- name: {n}\n  user:\n    token: {}\n",
            q(server.token())
        ));
        contexts.push_str(&format!(
            "- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n"
        ));
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}users:\n{users}contexts:\n{contexts}current-context: {}\npreferences: {{}}\n",
        q(servers[0].0)
    )
}

/// Plays the nodes of both clusters until stopped: runs new Jobs' pods, makes new
/// Deployment generations available. Returns what it did, for failure messages.
struct Kubelet<'a> {
    world: &'a World,
    work: PathBuf,
    log: Mutex<Vec<String>>,
    /// When set, Jobs fail instead of running.
    fail_jobs: AtomicBool,
    /// The serving pods it started.
    pods: pods::Pods,
}

impl<'a> Kubelet<'a> {
    fn new(world: &'a World) -> Kubelet<'a> {
        let work = world.dir.path().join("nodes");
        std::fs::create_dir_all(&work).unwrap();
        Kubelet {
            world,
            work,
            log: Mutex::new(Vec::new()),
            fail_jobs: AtomicBool::new(false),
            pods: pods::Pods::new(),
        }
    }

    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            for (context, server) in self.world.servers() {
                for object in server.objects() {
                    let kind = object["kind"].as_str().unwrap_or("");
                    let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
                    let name = object["metadata"]["name"].as_str().unwrap_or("");
                    match kind {
                        "Job" if object["status"].get("conditions").is_none() => {
                            let ok = !self.fail_jobs.load(Ordering::SeqCst)
                                && self.run_pod(context, &object);
                            if ok {
                                server.job_succeeded(ns, name);
                            } else {
                                server.job_failed(ns, name);
                            }
                        }
                        "Deployment"
                            if object["status"]["observedGeneration"]
                                != object["metadata"]["generation"] =>
                        {
                            self.note(format!("{context}: Deployment {ns}/{name} available"));
                            let deployment = server.deployment_available(ns, name);
                            self.pods.start(server, &deployment);
                        }
                        _ => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The API server of the cluster named `context`.
    fn server(&self, context: &str) -> &'a KubeServer {
        self.world
            .servers()
            .into_iter()
            .find(|(c, _)| *c == context)
            .map(|(_, s)| s)
            .unwrap()
    }

    /// Runs a Job's pods together, one per completion index as an Indexed Job's are
    /// (one pod otherwise). Returns whether every pod succeeded.
    fn run_pod(&self, context: &str, job: &Value) -> bool {
        let server = self.server(context);
        let indexed = job["spec"]["completionMode"] == "Indexed";
        let pods = if indexed {
            job["spec"]["completions"].as_u64().unwrap_or(1)
        } else {
            1
        };
        let dns = ClusterDns::of(server, job, pods);
        // Every pod is active; none is ready while its init containers (the train step)
        // run.
        server.job_running(
            job["metadata"]["namespace"].as_str().unwrap(),
            job["metadata"]["name"].as_str().unwrap(),
            pods,
            0,
        );
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..pods)
                .map(|index| {
                    let dns = &dns;
                    s.spawn(move || self.run_one_pod(context, job, indexed.then_some(index), dns))
                })
                .collect();
            runs.into_iter().all(|run| run.join().unwrap())
        })
    }

    /// Runs one pod: init containers in order, then the main container, each as a real
    /// process with the environment the pod spec gives it (`valueFrom` the completion
    /// index resolved as the API server does, names resolved by [`ClusterDns`]).
    /// Cairn's containers run the real binary; others run their command with the
    /// image's `bin/` (from `images/`) first on PATH. Returns whether every step
    /// succeeded.
    fn run_one_pod(
        &self,
        context: &str,
        job: &Value,
        index: Option<u64>,
        dns: &ClusterDns,
    ) -> bool {
        let name = job["metadata"]["name"].as_str().unwrap();
        let server = self.server(context);
        let pod = &job["spec"]["template"]["spec"];
        let pod_name = match index {
            Some(i) => format!("{name}-{i}"),
            None => name.to_string(),
        };
        let root = self.work.join(context).join(&pod_name);
        let steps = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["containers"].as_array().into_iter().flatten());
        for container in steps {
            let step = container["name"].as_str().unwrap_or("?");
            let ns = job["metadata"]["namespace"].as_str().unwrap();
            let mut env: Vec<(String, String)> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let value = match (&e["valueFrom"], index) {
                        (Value::Null, _) => e["value"].as_str().unwrap_or("").to_string(),
                        (from, Some(i))
                            if from["fieldRef"]["fieldPath"]
                                == "metadata.annotations['batch.kubernetes.io/job-completion-index']" =>
                        {
                            i.to_string()
                        }
                        (from, _) => panic!("{pod_name}/{step}: cannot resolve {from}"),
                    };
                    (e["name"].as_str().unwrap().to_string(), dns.resolve(&value))
                })
                .collect();
            if let Some(i) = index {
                // The Job controller sets it in every container of an Indexed Job's pod.
                env.push(("JOB_COMPLETION_INDEX".into(), i.to_string()));
            }
            let claims = self.work.join(context).join("claims");
            let mounts = match Mounts::of(server, ns, pod, container, &root, &claims, &env) {
                Ok(mounts) => mounts,
                Err(e) => {
                    self.note(format!("{context}: {pod_name}/{step}: {e}"));
                    return false;
                }
            };
            let env: Vec<(String, String)> = env
                .into_iter()
                .map(|(k, v)| (k, mounts.local(&v)))
                .collect();
            let command: Vec<String> = container["command"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| mounts.local(a.as_str().unwrap()))
                .collect();
            let Some(program) = command.first() else {
                self.note(format!("{context}: {pod_name}/{step}: no command"));
                return false;
            };
            let mut cmd = if program == "cairn" {
                Command::new(env!("CARGO_BIN_EXE_cairn"))
            } else {
                let image = container["image"].as_str().unwrap_or("");
                let Some(bin) = image_bin(image) else {
                    self.note(format!("{context}: {pod_name}/{step}: image {image} is not in tests/imaging/images"));
                    return false;
                };
                let path = format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                let program = bin.join(program);
                let mut cmd = Command::new(if program.exists() {
                    program
                } else {
                    PathBuf::from(&command[0])
                });
                cmd.env("PATH", path);
                cmd
            };
            // The job writes its outputs into folders of the pod's volume.
            for (key, dir) in &env {
                if key.starts_with("CAIRN_OUTPUT_") {
                    std::fs::create_dir_all(dir).unwrap();
                }
            }
            std::fs::create_dir_all(&root).unwrap();
            cmd.args(&command[1..])
                .envs(env.iter().cloned())
                .env("NO_COLOR", "1")
                .current_dir(&root)
                .stdin(Stdio::null());
            aws_credentials(&mut cmd, SECRET_KEY);
            let out = cmd.output().unwrap();
            self.note(format!(
                "{context}: {pod_name}/{step}: {:?} exit {:?}\n{}{}",
                command,
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
            if !out.status.success() {
                return false;
            }
        }
        true
    }
}

/// The cluster's DNS for one Job's pods, as CoreDNS answers it: pod `<job>-<index>`
/// with `subdomain: S` is `<job>-<index>.S` (also `.<ns>.svc.cluster.local`) only when
/// a headless Service named S in its namespace selects it, and, before the pods are
/// ready (a rendezvous happens before), only with `publishNotReadyAddresses`. Each pod
/// gets its own loopback address, as each pod has its own IP.
struct ClusterDns {
    records: Vec<(String, String)>,
}

impl ClusterDns {
    fn of(server: &KubeServer, job: &Value, pods: u64) -> ClusterDns {
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let subnet = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = job["metadata"]["name"].as_str().unwrap();
        let ns = job["metadata"]["namespace"].as_str().unwrap();
        let template = &job["spec"]["template"];
        let Some(subdomain) = template["spec"]["subdomain"].as_str() else {
            return ClusterDns {
                records: Vec::new(),
            };
        };
        let labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let published = server.objects().into_iter().any(|o| {
            o["kind"] == "Service"
                && o["metadata"]["namespace"] == ns
                && o["metadata"]["name"] == subdomain
                && o["spec"]["clusterIP"] == "None"
                && o["spec"]["publishNotReadyAddresses"] == true
                && o["spec"]["selector"]
                    .as_object()
                    .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        });
        if !published {
            return ClusterDns {
                records: Vec::new(),
            };
        }
        let records = (0..pods)
            .flat_map(|i| {
                let ip = format!("127.1.{subnet}.{}", i + 1);
                let host = format!("{name}-{i}.{subdomain}");
                [
                    (format!("{host}.{ns}.svc.cluster.local"), ip.clone()),
                    (format!("{host}.{ns}.svc"), ip.clone()),
                    (host, ip),
                ]
            })
            .collect();
        ClusterDns { records }
    }

    /// A value that is a pod's DNS name, as the address it resolves to.
    fn resolve(&self, value: &str) -> String {
        self.records
            .iter()
            .find(|(name, _)| name == value)
            .map_or_else(|| value.to_string(), |(_, ip)| ip.clone())
    }
}

/// The `bin/` folder standing for an image (by its repository's last path segment)
/// under tests/imaging/images.
fn image_bin(image: &str) -> Option<PathBuf> {
    let repository = image.rsplit('/').next()?.split(':').next()?;
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/imaging/images")
        .join(repository)
        .join("bin");
    bin.is_dir().then_some(bin)
}

/// A merge patch by another field manager, as `kubectl edit` sends it.
fn patch_as(server: &KubeServer, path: &str, patch: Value, manager: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .patch(&format!("{}{path}?fieldManager={manager}", server.url()))
        .header("Authorization", &format!("Bearer {}", server.token()))
        .header("Content-Type", "application/merge-patch+json")
        .send(patch.to_string())
        .unwrap();
    assert_eq!(response.status(), 200, "patch {path}");
}

/// Runs `body` while a kubelet plays the nodes.
fn with_kubelet<T>(world: &World, body: impl FnOnce(&Kubelet) -> T) -> T {
    /// Stops the kubelet however the body ends (a failed assertion included), so the
    /// scope can join it.
    struct StopOnDrop<'s>(&'s AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let kubelet = Kubelet::new(world);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| kubelet.run(&stop));
        let _stop = StopOnDrop(&stop);
        body(&kubelet)
    })
}

fn kubelet_log(kubelet: &Kubelet) -> String {
    kubelet.log.lock().unwrap().join("\n")
}

fn objects_of(server: &KubeServer, kind: &str) -> Vec<Value> {
    server
        .objects()
        .into_iter()
        .filter(|o| o["kind"] == kind)
        .collect()
}

#[test]
fn the_imaging_example_plans_applies_and_converges_on_two_clusters() {
    let world = World::new();
    with_kubelet(&world, |kubelet| {
        let plan = world.cairn(&["plan", "-w", "imaging"]);
        plan.ok();
        for expected in [
            "+ imaging/compute.gpu-pool",
            "+ Namespace imaging-train @aks-gpu-westeurope",
            "+ ResourceQuota imaging-train/",
            "+ Namespace imaging-serve @onprem-radiology",
            "▶ imaging/job.train-pneumonia",
            "+ Job imaging-train/train-pneumonia-",
            "+ Deployment imaging-serve/triage-blue-",
            "+ HTTPRoute imaging-serve/triage",
        ] {
            assert!(
                plan.stdout.contains(expected),
                "{expected}\n{}",
                plan.both()
            );
        }
        // Planning wrote nothing to either cluster.
        assert_eq!(world.train.writes(), 0);
        assert_eq!(world.serve.writes(), 0);

        let apply = world.cairn(&["apply", "-w", "imaging", "--auto-approve"]);
        assert_eq!(
            apply.code,
            0,
            "{}\n--- kubelet:\n{}",
            apply.both(),
            kubelet_log(kubelet)
        );

        // Training ran on the GPU pool's cluster, serving on the on-premises one.
        // The run's training Job, then the Job that uploaded its outputs from the run's
        // volume once the training pods had ended (their GPUs free); the volume is gone.
        let mut jobs = objects_of(&world.train, "Job");
        jobs.sort_by_key(|j| j["metadata"]["name"].as_str().unwrap().len());
        assert_eq!(jobs.len(), 2, "{jobs:?}");
        let upload_name = jobs[1]["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            upload_name,
            format!("{}-upload", jobs[0]["metadata"]["name"].as_str().unwrap())
        );
        let train_pod = &jobs[0]["spec"]["template"]["spec"];
        assert_eq!(train_pod["containers"].as_array().unwrap().len(), 1);
        assert_eq!(train_pod["containers"][0]["name"], "train");
        let upload_pod = &jobs[1]["spec"]["template"]["spec"];
        assert_eq!(upload_pod["containers"][0]["name"], "upload");
        assert!(upload_pod["containers"][0]["resources"]["limits"]
            .get("nvidia.com/gpu")
            .is_none());
        // Each instance writes under its rank; instance 0's are the ones uploaded.
        assert_eq!(
            upload_pod["containers"][0]["volumeMounts"][0]["subPath"], "0",
            "{upload_pod}"
        );
        assert!(objects_of(&world.train, "PersistentVolumeClaim").is_empty());
        assert!(objects_of(&world.serve, "Job").is_empty());
        let deployments = objects_of(&world.serve, "Deployment");
        assert_eq!(deployments.len(), 1);
        assert!(objects_of(&world.train, "Deployment").is_empty());

        // The pod stored the model version named after the run, with its lineage.
        let run_id = jobs[0]["metadata"]["labels"]["cairn.dev/run"]
            .as_str()
            .unwrap()
            .to_string();
        let record: Value = serde_json::from_slice(
            &std::fs::read(world.s3.data_dir().join(BUCKET).join(format!(
                "imaging/models/pneumonia-detector/{run_id}/_model.json"
            )))
            .unwrap_or_else(|e| panic!("model record: {e}\n{}", kubelet_log(kubelet))),
        )
        .unwrap();
        assert_eq!(record["format"], "onnx");
        assert_eq!(record["job"], "train-pneumonia");
        assert!(record["inputs"]["xrays"]
            .as_str()
            .unwrap()
            .starts_with("dataset.chest-xrays@"));
        assert_eq!(record["metrics"]["auc"], 0.91);
        // Both pods of the 2-instance job rendezvoused at instance 0 (through the
        // headless Service) before it wrote the model.
        assert_eq!(record["metrics"]["nodes"], 2, "{}", kubelet_log(kubelet));
        assert_eq!(record["metrics"]["ranks_joined"], json!([0, 1]));

        // The Deployment fetches that version; the route sends it everything.
        let fetch =
            deployments[0]["spec"]["template"]["spec"]["initContainers"][0]["command"].to_string();
        assert!(
            fetch.contains(&format!("model.pneumonia-detector@{run_id}")),
            "{fetch}"
        );
        let route = &objects_of(&world.serve, "HTTPRoute")[0];
        let backends = &route["spec"]["rules"][0]["backendRefs"];
        assert_eq!(backends.as_array().unwrap().len(), 1, "{backends}");
        assert_eq!(backends[0]["weight"], 100);

        // Every object carries Cairn's labels and was applied by its field manager.
        for (_, server) in world.servers() {
            for o in server.objects() {
                let name = o["metadata"]["name"].as_str().unwrap_or("");
                let namespace = o["metadata"]["namespace"].as_str().unwrap_or(name);
                if !namespace.starts_with("imaging-") || o["kind"] == "Pod" {
                    continue; // the server's own (`default`), the kubelet's pods
                }
                assert_eq!(
                    o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "cairn",
                    "{o}"
                );
                assert_eq!(o["metadata"]["labels"]["cairn.dev/workspace"], "imaging");
                assert!(o["metadata"]["managedFields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["manager"] == "cairn" && m["operation"] == "Apply"));
            }
        }

        // Converged: nothing to do, and planning again writes nothing.
        let writes = world.train.writes() + world.serve.writes();
        let again = world.cairn(&["plan", "-w", "imaging", "--detailed-exitcode"]);
        assert_eq!(again.code, 0, "{}", again.both());
        assert!(again.stdout.contains("No changes"), "{}", again.both());
        assert_eq!(world.train.writes() + world.serve.writes(), writes);

        // Someone scales the Deployment by hand (another field manager): drift on that
        // field only.
        let name = deployments[0]["metadata"]["name"].as_str().unwrap();
        patch_as(
            &world.serve,
            &format!("/apis/apps/v1/namespaces/imaging-serve/deployments/{name}"),
            json!({"spec": {"replicas": 3}}),
            "kubectl-edit",
        );
        let drift = world.cairn(&["plan", "-w", "imaging", "--detailed-exitcode"]);
        assert_eq!(drift.code, 2, "{}", drift.both());
        let objects_section = drift
            .stdout
            .split("objects:")
            .nth(1)
            .unwrap_or_else(|| panic!("{}", drift.both()));
        assert!(
            objects_section.contains("~ spec.replicas: 3 → 1"),
            "{}",
            drift.both()
        );
        let field_lines = objects_section
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("~ spec") || l.trim_start().starts_with("~ metadata")
            })
            .count();
        assert_eq!(
            field_lines,
            1,
            "only the edited field drifts:\n{}",
            drift.both()
        );
        assert!(
            drift.stdout.contains("~ imaging/endpoint.triage"),
            "{}",
            drift.both()
        );

        // Apply puts it back.
        world
            .cairn(&["apply", "-w", "imaging", "--auto-approve"])
            .ok();
        let repaired = world
            .serve
            .object("apps/v1", "Deployment", Some("imaging-serve"), name)
            .unwrap();
        assert_eq!(repaired["spec"]["replicas"], 1);
        world
            .cairn(&["plan", "-w", "imaging", "--detailed-exitcode"])
            .code(0);
    });
}

/// A run's output with the renderer's line wrapping taken out, to compare messages.
fn unwrapped(run: &Run) -> String {
    run.both()
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("aks- gpu", "aks-gpu")
}

/// A namespace made by a platform team with a GPU quota of `hard`, `used` in use.
fn platform_quota(server: &KubeServer, namespace: &str, hard: u32, used: u32) {
    server.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        "platform-team",
    );
    server.create(
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "gpu-budget", "namespace": namespace},
            "spec": {"hard": {"requests.nvidia.com/gpu": hard.to_string()}},
        }),
        "platform-team",
    );
    server.set_status(
        "v1",
        "ResourceQuota",
        Some(namespace),
        "gpu-budget",
        json!({
            "hard": {"requests.nvidia.com/gpu": hard.to_string()},
            "used": {"requests.nvidia.com/gpu": used.to_string()},
        }),
    );
}

#[test]
fn a_job_needing_more_gpus_than_the_quota_is_refused_at_plan_time() {
    let world = World::new();
    // The platform team's own quota in the training namespace (not Cairn's).
    platform_quota(&world.train, "imaging-train", 6, 2);
    let plan = world.cairn(&["plan", "-w", "imaging"]);
    plan.code(1);
    let text = unwrapped(&plan);
    for expected in [
        "job.train-pneumonia",
        "need 8 GPUs in namespace `imaging-train` (context `aks-gpu-westeurope`)",
        "allows 6 GPUs and 2 are in use (4 free)",
        "2 instances × 4 GPUs",
        "train.toml",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    assert_eq!(world.train.writes(), 0, "planning wrote nothing");
}

#[test]
fn an_endpoint_revision_needing_more_gpus_than_the_quota_is_refused_at_plan_time() {
    let world = World::new();
    // The serving namespace's quota is used up by something else already.
    platform_quota(&world.serve, "imaging-serve", 1, 1);
    let plan = world.cairn(&["plan", "-w", "imaging"]);
    plan.code(1);
    let text = unwrapped(&plan);
    for expected in [
        "endpoint.triage: the planned endpoint revisions need 1 GPU in namespace `imaging-serve`",
        "allows 1 GPUs and 1 are in use (0 free)",
        "deployment blue: 1 replica × 1 GPU",
        "serve.toml",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    assert_eq!(world.serve.writes(), 0, "planning wrote nothing");
}

/// The example as a namespace-scoped user runs it: an administrator made the two
/// namespaces and bound the shipped Role (`templates/rbac/role.yaml`) in each, and
/// nothing else. Plan and apply succeed (the 2-instance job trains, the endpoint
/// serves behind its key), and the only requests refused are the cluster-scope reads
/// Cairn does without (namespace and node lists, pods of every namespace).
#[test]
fn the_imaging_example_plans_and_applies_with_only_the_shipped_role() {
    let world = World::new();
    let role = kube_server::role_from_yaml(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/rbac/role.yaml"),
        )
        .unwrap(),
    );
    for (server, namespace) in [
        (&world.train, "imaging-train"),
        (&world.serve, "imaging-serve"),
    ] {
        server.create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            "kubectl-admin",
        );
        server.bind_role(namespace, &role);
    }
    with_kubelet(&world, |kubelet| {
        let plan = world.cairn(&["plan", "-w", "imaging"]);
        plan.ok();
        assert!(
            !plan.stdout.contains("+ Namespace"),
            "the administrator's namespaces are used as they are\n{}",
            plan.both()
        );
        assert!(
            plan.stdout.contains("+ Job imaging-train/train-pneumonia-"),
            "{}",
            plan.both()
        );

        let apply = world.cairn(&["apply", "-w", "imaging", "--auto-approve"]);
        assert_eq!(
            apply.code,
            0,
            "{}\n--- kubelet:\n{}",
            apply.both(),
            kubelet_log(kubelet)
        );
        // The run's training Job and its upload Job.
        assert_eq!(objects_of(&world.train, "Job").len(), 2);
        assert_eq!(objects_of(&world.serve, "Deployment").len(), 1);
        assert!(
            pods::endpoint_key(&world.serve, "imaging-serve", "triage").is_some(),
            "the endpoint's key was made"
        );
        for server in [&world.train, &world.serve] {
            let refused = server.forbidden_requests();
            assert!(
                refused.iter().any(|r| r.starts_with("GET /api/v1/nodes")),
                "RBAC is on: the node list is refused ({refused:?})"
            );
            for refused in refused {
                let path = refused.split('?').next().unwrap_or(&refused);
                assert!(
                    matches!(
                        path,
                        "GET /api/v1/namespaces" | "GET /api/v1/nodes" | "GET /api/v1/pods"
                    ),
                    "refused: {refused}"
                );
            }
        }
        let again = world.cairn(&["plan", "-w", "imaging", "--detailed-exitcode"]);
        assert_eq!(again.code, 0, "nothing left to do\n{}", again.both());
    });
}

//! The `kubernetes` target's fixture: the strict test API server (one kubeconfig
//! context), a kubelet played by the test ([`crate::kubelet`]) and the workspace's store
//! on a real S3 server (`s3s-fs`), which the pods' `cairn fetch` and `cairn upload`
//! reach too.
//!
//! The namespace the compute uses, `contract`, is made by a platform team before Cairn
//! comes (no Cairn labels), with a ConfigMap of theirs in it; another ConfigMap sits in
//! `default`. Cairn uses the namespace as it is; a destroy must leave all three alone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::fixture::{Repo, Requests, TargetFixture, TargetManifests, WS};
use crate::kube_server::KubeServer;
use crate::kubelet::Kubelet;
use crate::pods::{gateway, Seen};
use crate::s3_server::{aws_credentials, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use crate::support::Run;

/// The namespace of the compute.
const NAMESPACE: &str = "contract";
/// The endpoint's name, as its objects are named.
const ENDPOINT: &str = "api";
/// The label Cairn puts on every object it manages for a workspace.
const LABEL_WORKSPACE: &str = "cairn.dev/workspace";

pub struct KubeFixture {
    // Dropped in this order: the kubelet before the servers it plays the node of.
    kubelet: Kubelet,
    repo: Repo,
    server: Arc<KubeServer>,
    _s3: S3Server,
    /// What others made, as (apiVersion, kind, namespace, name, resourceVersion).
    foreign: Vec<(String, String, Option<String>, String, String)>,
}

impl KubeFixture {
    /// Cairn's and others' objects of `kind` in the compute's namespace.
    pub(crate) fn objects_of(&self, kind: &str) -> Vec<Value> {
        self.server
            .objects()
            .into_iter()
            .filter(|o| o["kind"] == kind && o["metadata"]["namespace"] == NAMESPACE)
            .collect()
    }

    fn name(object: &Value) -> &str {
        object["metadata"]["name"].as_str().unwrap_or("")
    }

    /// The endpoint's objects, as `Kind name`, sorted.
    fn endpoint_objects(&self) -> Vec<String> {
        let address = format!("{WS}/endpoint.{ENDPOINT}");
        let mut out: Vec<String> = self
            .server
            .objects()
            .into_iter()
            .filter(|o| o["kind"] != "Pod")
            .filter(|o| o["metadata"]["annotations"]["cairn.dev/address"] == address.as_str())
            .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), Self::name(&o)))
            .collect();
        out.sort();
        out
    }

    /// Something a platform team made, without Cairn's labels.
    fn plant(&mut self, object: Value) {
        let made = self.server.create(object, "platform-team");
        let meta = &made["metadata"];
        self.foreign.push((
            made["apiVersion"].as_str().unwrap().to_string(),
            made["kind"].as_str().unwrap().to_string(),
            meta["namespace"].as_str().map(str::to_string),
            meta["name"].as_str().unwrap().to_string(),
            meta["resourceVersion"].as_str().unwrap().to_string(),
        ));
    }

    /// The cluster's API server.
    pub(crate) fn server(&self) -> &KubeServer {
        &self.server
    }

    /// What the kubelet did, in order.
    pub(crate) fn kubelet_log(&self) -> Vec<String> {
        self.kubelet.lines()
    }

    fn context(&self) -> String {
        format!("\n--- kubelet:\n{}", self.kubelet.log())
    }
}

impl TargetFixture for KubeFixture {
    fn start(endpoint: bool) -> KubeFixture {
        let dir = tempfile::tempdir().expect("temporary folder");
        let s3 = S3Server::start_serialized();
        let server = Arc::new(KubeServer::start());
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, "contract-cluster");
        let target = TargetManifests {
            workspace: format!(
                "store = \"s3://{BUCKET}/{WS}\"\nendpoint = \"{}\"\npath_style = true\nregion = \"us-east-1\"",
                s3.endpoint()
            ),
            compute: format!(
                "target = \"kubernetes\"\nnamespace = \"{NAMESPACE}\"\ngateway = \"contract-gw\""
            ),
            job: "image = \"registry.example.com/contract/trainer:1.0\"\n".into(),
            port: 8080,
        };
        let store: PathBuf = s3.data_dir().join(BUCKET).join(WS);
        let work = dir.path().join("node");
        let repo = Repo::new(dir, target, Some(store), endpoint, move |cmd| {
            cmd.env("KUBECONFIG", &kubeconfig);
            aws_credentials(cmd, SECRET_KEY);
        });
        let kubelet = Kubelet::start(server.clone(), work);
        *kubelet.node().pods.store_credentials.lock().unwrap() =
            Some((ACCESS_KEY.to_string(), SECRET_KEY.to_string()));
        let mut fixture = KubeFixture {
            kubelet,
            repo,
            server,
            _s3: s3,
            foreign: Vec::new(),
        };
        fixture.plant(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE},
        }));
        for namespace in [NAMESPACE, "default"] {
            fixture.plant(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "platform-settings", "namespace": namespace},
                "data": {"owner": "platform-team"},
            }));
        }
        fixture
    }

    fn repo(&self) -> &Repo {
        &self.repo
    }

    fn failed_job_reason(&self) -> &'static str {
        "failed: PodFailurePolicy: Container train for pod"
    }

    fn timed_out_reason(&self) -> &'static str {
        "failed: DeadlineExceeded"
    }

    /// One revision, of `version`, available; the endpoint's route sends it everything;
    /// its pods fetch that model version.
    fn assert_serving(&self, version: &str) {
        let revision = format!("{ENDPOINT}-blue-{version}");
        let deployments = self.objects_of("Deployment");
        let names: Vec<&str> = deployments.iter().map(Self::name).collect();
        assert_eq!(names, [revision.as_str()], "{}", self.context());
        let deployment = &deployments[0];
        let available = deployment["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Available" && c["status"] == "True");
        assert!(available, "{deployment}");
        let fetch =
            deployment["spec"]["template"]["spec"]["initContainers"][0]["command"].to_string();
        assert!(
            fetch.contains(&format!("model.scorer@{version}")),
            "{fetch}"
        );
        let services: Vec<String> = self
            .objects_of("Service")
            .iter()
            .map(|s| Self::name(s).to_string())
            .collect();
        assert!(services.contains(&revision), "{services:?}");
        assert!(services.contains(&ENDPOINT.to_string()), "{services:?}");
        let routes = self.objects_of("HTTPRoute");
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(
            routes[0]["spec"]["rules"][0]["backendRefs"],
            json!([{"name": revision, "port": 8080, "weight": 100}]),
            "{}",
            routes[0]
        );
        let pods = self.kubelet.node().pods.all();
        assert!(
            pods.iter()
                .any(|p| p.namespace == NAMESPACE && p.name.starts_with(&revision)),
            "a pod of {revision} runs"
        );
    }

    fn assert_not_serving(&self) {
        assert_eq!(
            self.endpoint_objects(),
            Vec::<String>::new(),
            "{}",
            self.context()
        );
    }

    /// No object of Cairn's is left (the kubelet's pods aside: a real cluster's
    /// controllers delete those with their Deployments); what the platform team made is
    /// there, unchanged, and Cairn never asked to delete it.
    fn assert_torn_down(&self) {
        self.assert_not_serving();
        let left: Vec<String> = self
            .server
            .objects()
            .into_iter()
            .filter(|o| o["kind"] != "Pod")
            .filter(|o| o["metadata"]["labels"][LABEL_WORKSPACE] == WS)
            .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), Self::name(&o)))
            .collect();
        assert_eq!(left, Vec::<String>::new());
        let requests = self.server.request_log();
        for (api_version, kind, namespace, name, resource_version) in &self.foreign {
            let object = self
                .server
                .object(api_version, kind, namespace.as_deref(), name)
                .unwrap_or_else(|| panic!("{kind} {name} was deleted"));
            assert_eq!(
                object["metadata"]["resourceVersion"].as_str(),
                Some(resource_version.as_str()),
                "{kind} {name} was changed: {object}"
            );
            let deleted = requests
                .iter()
                .filter(|r| r.starts_with("DELETE ") && r.contains(&format!("/{name} ")))
                .filter(|r| namespace.as_ref().is_none_or(|ns| r.contains(ns.as_str())))
                .count();
            assert_eq!(deleted, 0, "{kind} {name}: {requests:?}");
        }
    }

    /// A gateway thread sends predictions to the pods as the live HTTPRoute says.
    fn apply_under_load(&self) -> (Run, Requests) {
        let stop = AtomicBool::new(false);
        let seen = Mutex::new(Seen::default());
        let run = std::thread::scope(|s| {
            s.spawn(|| {
                gateway(
                    &self.server,
                    &self.kubelet.node().pods,
                    NAMESPACE,
                    ENDPOINT,
                    &stop,
                    &seen,
                )
            });
            let run = self.repo.apply();
            stop.store(true, Ordering::SeqCst);
            run
        });
        let seen = seen.into_inner().unwrap();
        let requests = Requests {
            ok: seen.answers.get(&200).copied().unwrap_or(0),
            failed: seen
                .answers
                .iter()
                .filter(|(status, _)| **status != 200)
                .map(|(_, n)| n)
                .sum(),
        };
        if run.code != 0 {
            eprintln!("{}", self.context());
        }
        (run, requests)
    }

    /// Pods started from now on answer every prediction with a 500; a new data row
    /// trains the next version.
    fn break_next_version(&self) {
        self.kubelet
            .node()
            .pods
            .broken
            .store(true, Ordering::SeqCst);
        self.repo.retrain();
    }

    /// `data.key` of the Secret `<endpoint>-key`, as `kubectl get secret` gives it.
    fn endpoint_key(&self) -> Option<String> {
        crate::pods::endpoint_key(&self.server, NAMESPACE, ENDPOINT)
    }

    /// To a pod of the endpoint, at its `http` port (where its Service sends traffic).
    fn predict_status(&self, key: Option<&str>) -> u16 {
        self.predict(key, crate::fixture::ROWS)
    }

    fn predict_body(&self, body: &str) -> u16 {
        self.predict(None, body)
    }

    /// A pod's `http` address stands in for the gateway's.
    fn invoke_args(&self, key_file: &std::path::Path) -> Vec<String> {
        let pods = self.kubelet.node().pods.all();
        let pod = pods
            .iter()
            .find(|p| p.namespace == NAMESPACE && p.name.starts_with(&format!("{ENDPOINT}-")))
            .unwrap_or_else(|| panic!("no pod of the endpoint{}", self.context()));
        if let Some(key) = self.endpoint_key() {
            std::fs::write(key_file, key).unwrap();
        }
        vec![
            "--url".into(),
            pod.address.clone(),
            "--key-file".into(),
            key_file.display().to_string(),
        ]
    }
}

impl KubeFixture {
    fn predict(&self, key: Option<&str>, body: &str) -> u16 {
        let pods = self.kubelet.node().pods.all();
        let pod = pods
            .iter()
            .find(|p| p.namespace == NAMESPACE && p.name.starts_with(&format!("{ENDPOINT}-")))
            .unwrap_or_else(|| panic!("no pod of the endpoint{}", self.context()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        let mut request = agent.post(&format!("{}/v1/predict", pod.address));
        if let Some(key) = key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        request
            .header("content-type", "application/json")
            .send(body)
            .map(|r| r.status().as_u16())
            .unwrap_or(599)
    }
}

//! What the suite asks of a target ([`TargetFixture`]) and what it shares across targets
//! ([`Repo`]): a manifests repository for the workspace `contract` in a temporary
//! folder, with one compute of the target (`compute.here`), a CSV dataset
//! (`dataset.loans`), a job (`job.train`) that trains a model (`model.scorer`) with the
//! reference trainer, and optionally an endpoint (`endpoint.api`) serving that model with
//! a two-step rollout. The target decides the workspace's store, the compute's table and
//! what a job needs there (an image); everything else is the same text on every target.
//!
//! Reading the outcome goes through what a user has: `cairn history --format json` for
//! the journal, and the store's files (a folder, or the S3 server's folder) for the
//! state, runs and versions.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::support::{toml_string, Run};

/// The workspace every fixture declares.
pub const WS: &str = "contract";
/// The endpoint's address.
pub const ENDPOINT: &str = "contract/endpoint.api";
/// The job's address.
pub const JOB: &str = "contract/job.train";
/// The model's address.
pub const MODEL: &str = "contract/model.scorer";

/// Training data for the reference trainer: two features and the label.
const LOANS_CSV: &str = "\
age,income,defaulted
29,42400,0
22,33800,0
54,40300,1
31,44700,0
61,18000,1
45,21000,1
38,52000,0
27,36500,0
58,19500,1
33,61000,0
";

/// The rows the suite asks endpoints to score.
pub const ROWS: &str = r#"{"rows": [{"age": 29, "income": 42400}, {"age": 61, "income": 18000}]}"#;

/// A test world on one target: its servers, a manifests repository using them, and the
/// checks only that target can make. Dropping it stops whatever it started.
pub trait TargetFixture: Sized {
    /// A fresh world whose manifests declare the job and model, and the endpoint when
    /// `endpoint` is set.
    fn start(endpoint: bool) -> Self;

    fn repo(&self) -> &Repo;

    /// What the report says of a job whose command exits with code 3.
    fn failed_job_reason(&self) -> &'static str;

    /// What the report says of a job that ran past its `timeout`.
    fn timed_out_reason(&self) -> &'static str;

    /// Asserts that the endpoint serves `version` of the model with all of its traffic.
    fn assert_serving(&self, version: &str);

    /// Asserts that nothing serves the endpoint and nothing of it is left on the target.
    fn assert_not_serving(&self);

    /// Asserts what a destroy leaves on the target: nothing of Cairn's, and what others
    /// made beside it untouched.
    fn assert_torn_down(&self);

    /// Runs `cairn apply --auto-approve` while clients send requests to the endpoint;
    /// returns the run and how the requests were answered.
    fn apply_under_load(&self) -> (Run, Requests);

    /// Makes the next model version one that starts but fails every request, and
    /// declares it (the next plan trains and rolls it out).
    fn break_next_version(&self);

    /// The endpoint's key, read where this target tells its users to read it; `None`
    /// when there is none.
    fn endpoint_key(&self) -> Option<String>;

    /// One prediction through the endpoint's front door (the router, a pod's `http`
    /// port), with `Authorization: Bearer <key>` when given; the answer's status.
    fn predict_status(&self, key: Option<&str>) -> u16;

    /// One prediction of `body` (no key) through the endpoint's front door; the answer's
    /// status.
    fn predict_body(&self, body: &str) -> u16;

    /// What `cairn invoke` needs besides the endpoint on this target: nothing where the
    /// machine knows the address and the key, else `--url` and `--key-file` (a user's
    /// gateway address and the Secret's key, written to `key_file`).
    fn invoke_args(&self, key_file: &Path) -> Vec<String>;
}

/// How the requests sent during an apply were answered.
#[derive(Debug, Default)]
pub struct Requests {
    pub ok: u64,
    /// Error answers and transport errors.
    pub failed: u64,
}

/// What a target puts in the shared manifests.
pub struct TargetManifests {
    /// Lines of the `[workspace]` table besides `environment`: the store.
    pub workspace: String,
    /// Lines of the `[compute.here]` table.
    pub compute: String,
    /// Extra lines of the `[job.train]` table (an image).
    pub job: String,
    /// The endpoint's port.
    pub port: u16,
}

/// How the fixture's job behaves. Every script runs as `sh -c SCRIPT train <inputs>
/// <outputs>` with `$CAIRN` the real binary, on every target.
#[derive(Debug, Clone)]
pub struct Job {
    pub script: String,
    pub retries: u32,
    pub timeout: Option<String>,
}

/// Trains with the reference trainer on the CPU.
pub const TRAIN: &str =
    r#"exec "$CAIRN" train --data "$1" --out "$2" --label defaulted --device cpu --epochs 50"#;

impl Job {
    pub fn script(script: impl Into<String>) -> Job {
        Job {
            script: script.into(),
            retries: 0,
            timeout: None,
        }
    }

    /// The reference trainer.
    pub fn train() -> Job {
        Job::script(TRAIN)
    }
}

/// A manifests repository in a temporary folder: `<tmp>/repo/contract/…`.
pub struct Repo {
    dir: tempfile::TempDir,
    root: PathBuf,
    /// Where the workspace store's objects are files on this machine.
    store: PathBuf,
    target: TargetManifests,
    /// Sets up a `cairn` command for the target (kubeconfig, credentials).
    configure: Box<dyn Fn(&mut Command) + Send + Sync>,
}

impl Repo {
    /// The shared manifests with `target`'s part, the job training with the reference
    /// trainer and, if `endpoint`, the endpoint. `store` is where the workspace store's
    /// objects are files on this machine (`None`: the folder store under the root).
    pub fn new(
        dir: tempfile::TempDir,
        target: TargetManifests,
        store: Option<PathBuf>,
        endpoint: bool,
        configure: impl Fn(&mut Command) + Send + Sync + 'static,
    ) -> Repo {
        // Canonical, so paths in messages match the ones the tests build.
        let root = dir.path().canonicalize().unwrap().join("repo");
        let store = store.unwrap_or_else(|| root.join(".cairn/store"));
        let repo = Repo {
            dir,
            root,
            store,
            target,
            configure: Box::new(configure),
        };
        repo.write(
            "workspace.toml",
            &format!(
                "[workspace]\nenvironment = \"dev\"\n{}\n",
                repo.target.workspace
            ),
        );
        repo.write(
            "compute.toml",
            &format!(
                "[compute.here]\nidle_shutdown = \"30m\"\n{}\n",
                repo.target.compute
            ),
        );
        repo.write(
            "data.toml",
            "[dataset.loans]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
        );
        repo.write("data/loans/loans.csv", LOANS_CSV);
        repo.set_job(&Job::train());
        if endpoint {
            repo.set_endpoint(true);
        }
        repo
    }

    /// The manifests root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A scratch folder beside the root (not part of the manifests).
    pub fn scratch(&self) -> PathBuf {
        let path = self.dir.path().canonicalize().unwrap().join("scratch");
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    pub fn port(&self) -> u16 {
        self.target.port
    }

    /// Writes a file of the workspace folder.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.root.join(WS).join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Replaces `train.toml`: the job and the model it trains.
    pub fn set_job(&self, job: &Job) {
        let mut toml = format!(
            "[job.train]\n\
             compute = \"compute.here\"\n\
             command = [\"sh\", \"-c\", {}, \"train\", \"{{{{ inputs.loans }}}}\", \"{{{{ outputs.model }}}}\"]\n\
             inputs = {{ loans = \"dataset.loans\" }}\n\
             outputs = {{ model = \"model.scorer\" }}\n\
             env = {{ CAIRN = {} }}\n\
             gpus = 0\n\
             retries = {}\n\
             {}",
            toml_string(&job.script),
            toml_string(env!("CARGO_BIN_EXE_cairn")),
            job.retries,
            self.target.job,
        );
        if let Some(t) = &job.timeout {
            toml.push_str(&format!("timeout = {}\n", toml_string(t)));
        }
        toml.push_str("\n[model.scorer]\nfrom_job = \"job.train\"\nformat = \"safetensors\"\n");
        self.write("train.toml", &toml);
    }

    /// Puts a preparation job before the training job: `job.prep` copies the loans into
    /// `dataset.features`, which `job.train` then reads instead of the loans.
    pub fn set_pipeline(&self) {
        let prep = format!(
            "[job.prep]\n\
             compute = \"compute.here\"\n\
             command = [\"sh\", \"-c\", {}, \"prep\", \"{{{{ inputs.loans }}}}\", \"{{{{ outputs.features }}}}\"]\n\
             inputs = {{ loans = \"dataset.loans\" }}\n\
             outputs = {{ features = \"dataset.features\" }}\n\
             gpus = 0\n\
             {}\n\
             [dataset.features]\n\
             from_job = \"job.prep\"\n\
             format = \"csv\"\n",
            toml_string(r#"cp "$1"/*.csv "$2"/"#),
            self.target.job,
        );
        self.write("prep.toml", &prep);
        let path = self.root.join(WS).join("train.toml");
        let train = std::fs::read_to_string(&path).unwrap().replace(
            "inputs = { loans = \"dataset.loans\" }",
            "inputs = { loans = \"dataset.features\" }",
        );
        std::fs::write(path, train).unwrap();
    }

    /// Sweeps the training job over `quality = [0.2, 0.9, 0.5]`, two trials at a time,
    /// keeping `max(auc)`: each trial trains, then writes its `quality` (given as
    /// `{{ params.quality }}`, checked against `CAIRN_PARAM_QUALITY`) as its AUC.
    /// Each trial appends `start <quality>` and `end <quality>` to `scratch/trials`,
    /// a second apart.
    pub fn set_sweep(&self) {
        let log = self.scratch().join("trials");
        let script = format!(
            "[ \"$3\" = \"$CAIRN_PARAM_QUALITY\" ] || {{ echo \"param $3 vs env $CAIRN_PARAM_QUALITY\" >&2; exit 1; }}\n\
             echo \"start $3\" >> {log}\n\
             sleep 1\n\
             \"$CAIRN\" train --data \"$1\" --out \"$2\" --label defaulted --device cpu --epochs 5 || exit 1\n\
             printf '{{\"auc\": %s}}' \"$3\" > \"$2/metrics.json\"\n\
             echo \"end $3\" >> {log}",
            log = log.display(),
        );
        self.set_job(&Job::script(script));
        let path = self.root.join(WS).join("train.toml");
        let toml = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "\"{{ outputs.model }}\"]",
                "\"{{ outputs.model }}\", \"{{ params.quality }}\"]",
            )
            .replace(
                "\n[model.scorer]",
                "\n[job.train.sweep]\nparams = { quality = [0.2, 0.9, 0.5] }\npick = \"max(auc)\"\nparallel = 2\n\n[model.scorer]",
            );
        std::fs::write(path, toml).unwrap();
    }

    /// Adds `[endpoint.api.monitor]`: every request captured, `max_psi = 0.2`.
    pub fn set_monitor(&self) {
        let path = self.root.join(WS).join("serve.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            path,
            format!("{text}\n[endpoint.api.monitor]\nsample = 1.0\nmax_psi = 0.2\n"),
        )
        .unwrap();
    }

    /// Commits the manifests (not Cairn's own `.cairn/`) on `main`, for the commands
    /// that read a revision (`cairn drift --rev HEAD`).
    pub fn commit(&self) {
        crate::support::git_commit_all(&self.root, "manifests");
    }

    /// The training rows (without the label) as one prediction request's body, every
    /// income times `scale`.
    pub fn loans_request(scale: f64) -> String {
        let rows: Vec<Value> = LOANS_CSV
            .lines()
            .skip(1)
            .map(|line| {
                let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
                serde_json::json!({"age": cells[0], "income": cells[1] * scale})
            })
            .collect();
        serde_json::json!({ "rows": rows }).to_string()
    }

    /// Declares the endpoint (or removes `serve.toml`): one deployment following the
    /// newest model version, rolled out in two short steps under an error-rate gate.
    pub fn set_endpoint(&self, on: bool) {
        if !on {
            std::fs::remove_file(self.root.join(WS).join("serve.toml")).unwrap();
            return;
        }
        self.write(
            "serve.toml",
            &format!(
                "[endpoint.api]\n\
                 compute = \"compute.here\"\n\
                 auth = \"none\"\n\
                 port = {}\n\
                 \n\
                 [endpoint.api.deployments.blue]\n\
                 model = \"model.scorer\"\n\
                 replicas = 1\n\
                 \n\
                 [endpoint.api.traffic]\n\
                 blue = 100\n\
                 \n\
                 [endpoint.api.rollout]\n\
                 steps = [50, 100]\n\
                 step_wait = \"5s\"\n\
                 max_error_rate = 0.05\n",
                self.target.port
            ),
        );
    }

    /// Sets the endpoint's `auth` (`none` as [`Repo::set_endpoint`] writes it).
    pub fn set_endpoint_auth(&self, auth: &str) {
        let path = self.root.join(WS).join("serve.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("auth = \"none\""), "{text}");
        std::fs::write(
            &path,
            text.replace("auth = \"none\"", &format!("auth = \"{auth}\"")),
        )
        .unwrap();
    }

    /// Adds a data row: a new dataset version, so the job runs again and the model gets
    /// a new version.
    pub fn retrain(&self) {
        let path = self.root.join(WS).join("data/loans/loans.csv");
        let mut text = std::fs::read_to_string(&path).unwrap();
        let rows = text.lines().count();
        text.push_str(&format!("{},30000,0\n", 20 + rows));
        std::fs::write(&path, text).unwrap();
    }

    /// The `cairn` command, with `ROOT` in `args` replaced by the manifests root.
    pub fn command(&self, args: &[&str]) -> Command {
        let root = self.root.display().to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(
            args.iter()
                .map(|a| if *a == "ROOT" { root.as_str() } else { a }),
        )
        .current_dir(self.dir.path())
        .env("USER", "tester")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        (self.configure)(&mut cmd);
        cmd
    }

    /// Runs `cairn <args>` to completion.
    pub fn cairn(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let output = self.command(args).output().expect("cairn runs");
        Run::from(output, started.elapsed())
    }

    /// `cairn apply ROOT --auto-approve`.
    pub fn apply(&self) -> Run {
        self.cairn(&["apply", "ROOT", "--auto-approve"])
    }

    /// The journal, oldest record first (`cairn history --format json`).
    pub fn journal(&self) -> Vec<Value> {
        let run = self.cairn(&["history", "ROOT", "--format", "json"]);
        run.ok();
        serde_json::from_str::<Value>(&run.stdout)
            .unwrap_or_else(|e| panic!("history is JSON: {e}\n{}", run.both()))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The last journaled outcome of the change to `address`.
    pub fn last_outcome(&self, address: &str) -> Value {
        self.journal()
            .iter()
            .rev()
            .flat_map(|r| r["outcomes"].as_array().cloned().unwrap_or_default())
            .find(|o| o["address"] == address)
            .unwrap_or_else(|| panic!("no journaled outcome for {address}"))
    }

    /// The workspace state: address → entry.
    pub fn state(&self) -> Value {
        let path = self.store.join(".cairn/state.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str::<Value>(&text).unwrap()["resources"].clone()
    }

    /// The model version the state records.
    pub fn model_version(&self) -> String {
        self.state()[MODEL]["value"]["version"]
            .as_str()
            .unwrap_or_else(|| panic!("no model version in the state: {}", self.state()))
            .to_string()
    }

    /// The job's run records in the store.
    pub fn runs(&self) -> Vec<Value> {
        self.runs_of("train")
    }

    /// The runs of one job, oldest first.
    pub fn runs_of(&self, job: &str) -> Vec<Value> {
        let dir = self.store.join("runs").join(job);
        let mut out: Vec<Value> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("_run.json")).ok())
            .map(|text| serde_json::from_str(&text).unwrap())
            .collect();
        out.sort_by_key(|r: &Value| r["started_at"].as_str().unwrap_or("").to_string());
        out
    }

    /// The record of version `version` of `model.scorer` (its `_model.json`).
    pub fn model_record(&self, version: &str) -> Value {
        let path = self
            .store
            .join("models/scorer")
            .join(version)
            .join("_model.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// The committed versions of `datasets/<name>` or `models/<name>` in the store.
    pub fn versions(&self, kind: &str, name: &str) -> Vec<String> {
        let marker = if kind == "datasets" {
            "_version.json"
        } else {
            "_model.json"
        };
        let mut out: Vec<String> = std::fs::read_dir(self.store.join(kind).join(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(marker).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// Every file of the store but Cairn's own (`.cairn/`: state, journal, lock).
    pub fn stored_files(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.store, &self.store, &mut out);
        out.retain(|f| !f.starts_with(".cairn/"));
        out.sort();
        out
    }
}

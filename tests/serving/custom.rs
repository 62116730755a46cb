//! An endpoint whose deployment runs its own serving process (`command`, `health`)
//! instead of `cairn serve`: a small HTTP server in Python's standard library
//! (`servers/echo_server.py`), driven by the same `cairn` commands as the reference
//! server's tests beside this file, with the same outcomes: created and serving through
//! the router (with the endpoint's key, the deployment's `env`), restarted by the
//! supervisor when it dies, rolled out to a retrained model under load and promoted, and
//! rolled back with the gate's reason when the new version's server answers 500.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::support::wait_until;
use super::{agent, kill_9, predict, Load, Repo, ENDPOINT};

/// The secret the deployment's `env` carries, which no output or log may show.
const SECRET: &str = "tok-5d1f0c9e-never-logged";

/// The Python interpreter itself (not a version manager's shim, which needs variables
/// the supervisor does not pass on).
fn python() -> PathBuf {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn echo_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/serving/servers/echo_server.py")
}

impl Repo {
    /// The example workspace, its endpoint served by the echo server (two replicas,
    /// readiness on `/ready`); `rollout` is the `[rollout]` table.
    fn echo(rollout: &str) -> Repo {
        let repo = Repo::example(rollout);
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
                 replicas = 2\n\
                 command = [{python:?}, {server:?}, \"--model\", \"{{{{ model }}}}\", \"--port\", \"{{{{ port }}}}\"]\n\
                 health = \"/ready\"\n\
                 env = {{ GREETING = \"hello\", SERVICE_TOKEN = \"{SECRET}\" }}\n\
                 sensitive = [\"SERVICE_TOKEN\"]\n\
                 \n\
                 [endpoint.risk-api.traffic]\n\
                 blue = 100\n\
                 \n\
                 [endpoint.risk-api.rollout]\n{rollout}",
                port = repo.port,
                python = python().display().to_string(),
                server = echo_server().display().to_string(),
            ),
        );
        repo
    }

    /// The revision the state records for the deployment.
    fn revision(&self) -> String {
        self.state(ENDPOINT)["deployments"]["blue"]["revision"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The echo server processes of this test (found by their model folder, which is
    /// under this test's own folder).
    fn echo_pids(&self) -> Vec<i32> {
        let models = self
            .root
            .join(".cairn/serving/models")
            .display()
            .to_string();
        let mut pids: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("echo_server.py") && c.contains(&models)
                })
            })
            .collect();
        pids.sort();
        pids
    }

    /// Everything the supervisor logged: its own log and every replica's.
    fn serving_logs(&self) -> String {
        let mut text = String::new();
        let mut stack = vec![self.root.join(".cairn/serving")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() && !path.ends_with("models") {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "log") {
                    text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        text
    }
}

#[test]
fn an_endpoint_serving_its_own_process_is_created_restarted_and_rolled_out() {
    let repo = Repo::echo(
        // 25 % of a request loop through a Python server on a loaded machine: enough
        // requests per step for the gates.
        "steps = [25, 50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\nmax_p99_ms = 500\nmin_requests = 10\n",
    );
    // Planned to a file and applied from it: the secret is hidden in the saved plan and
    // read back from the manifests, and the revision (which hashes the command) agrees.
    let plan = repo.cairn(&["plan", ".", "-o", "plan.json"]);
    plan.ok();
    assert!(
        plan.stdout.contains("+ credit-risk/endpoint.risk-api"),
        "{}",
        plan.both()
    );
    let saved = std::fs::read_to_string(repo.root.join("plan.json")).unwrap();
    assert!(!saved.contains(SECRET), "the saved plan holds the secret");
    assert!(
        saved.contains("echo_server.py"),
        "the saved plan shows the command"
    );
    let first = repo.cairn(&["apply", "plan.json", "--auto-approve"]);
    first.ok();
    let v1 = repo.model_version();
    let r1 = repo.revision();
    // The revision carries the command: changing it would start a new one beside it.
    assert!(r1.starts_with(&format!("{v1}-")), "{r1}");
    assert_eq!(repo.deployments(), [("blue".into(), r1.clone(), 100)]);

    // The echo server answers through the router, only with the key, with the model
    // version's folder as `{{ model }}` and the deployment's environment.
    let agent = agent();
    let key = repo.key();
    let (status, body) = predict(&agent, repo.addr(), Some(&key)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server"], "echo");
    assert_eq!(body["version"], v1.as_str());
    assert_eq!(body["rows"], 2);
    assert_eq!(body["greeting"], "hello");
    let (status, _) = predict(&agent, repo.addr(), None).unwrap();
    assert_eq!(status, 401);
    let pids = repo.echo_pids();
    assert_eq!(pids.len(), 2, "two replicas: {pids:?}");

    // Nothing to do while it serves as declared.
    repo.cairn(&["plan", ".", "--detailed-exitcode"]).code(0);

    // A replica killed is started again by the supervisor, and serves.
    kill_9(pids[0]);
    wait_until(
        "the killed replica to be replaced",
        Duration::from_secs(30),
        || {
            let now = repo.echo_pids();
            now.len() == 2 && !now.contains(&pids[0])
        },
    );
    wait_until(
        "the endpoint to answer again",
        Duration::from_secs(30),
        || (0..4).all(|_| predict(&agent, repo.addr(), Some(&key)).is_ok_and(|(s, _)| s == 200)),
    );

    // New data → new run → new model version → a rollout, as with `cairn serve`.
    repo.edit_data();
    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    for expected in [
        "» credit-risk/endpoint.risk-api",
        "rollout: 25% → 50% → 100%, each held 5s; gates: error rate ≤ 1%, p99 ≤ 500 ms, judged on at least 10 requests; automatic rollback",
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
    let r2 = repo.revision();
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
    let deployments = repo.deployments();
    assert!(
        deployments.contains(&("blue".into(), r2.clone(), 100)),
        "{deployments:?}"
    );
    assert!(
        deployments.contains(&(format!("blue@{r1}"), r1.clone(), 0)),
        "the old revision is kept at 0 % until its scale-down delay: {deployments:?}"
    );
    let events: Vec<String> = repo
        .last_rollout_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
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

    // The sensitive value reached the process (it ran) but no output or log.
    for (what, text) in [
        ("the plan", plan.both()),
        ("the applies", first.both() + &second.both()),
        ("the serving logs", repo.serving_logs()),
    ] {
        assert!(!text.contains(SECRET), "{what} show the secret:\n{text}");
    }
}

#[test]
fn a_version_whose_own_server_fails_the_gate_is_rolled_back() {
    let repo = Repo::echo(
        "steps = [50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.05\nmin_requests = 10\n",
    );
    repo.apply().ok();
    let v1 = repo.model_version();
    let r1 = repo.revision();
    let key = repo.key();

    // A new version the server loads (it answers `/ready`) but can't predict with.
    let broken = repo.root.parent().unwrap().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("FAIL"), b"").unwrap();
    std::fs::write(broken.join("weights.bin"), b"not really").unwrap();
    repo.train_by_copying(&broken);

    let load = Load::start(repo.addr(), key);
    std::thread::sleep(Duration::from_millis(300));
    let apply = repo.apply();
    std::thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    apply.code(1);
    assert!(
        apply.stderr.contains("rolled back at step 50%"),
        "{}",
        apply.both()
    );
    assert!(apply.stderr.contains("error rate"), "{}", apply.both());
    assert!(
        apply
            .stderr
            .contains("all traffic is on the previous revision"),
        "{}",
        apply.both()
    );
    // The router counted the new server's 500s (clients saw some during the step);
    // every answer that succeeded came from the old version.
    assert!(
        !report.failures.is_empty()
            && report
                .failures
                .iter()
                .all(|f| f.starts_with("500:") && f.contains("can't predict")),
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.versions.iter().all(|v| *v == v1), "{report:?}");

    // All traffic back on the old revision, and the broken one's processes are gone.
    assert_eq!(repo.deployments(), [("blue".into(), r1.clone(), 100)]);
    assert_eq!(repo.running_revisions(), [r1]);
    wait_until(
        "the broken replicas to stop",
        Duration::from_secs(30),
        || repo.echo_pids().len() == 2,
    );
    let (status, body) = predict(&agent(), repo.addr(), Some(&repo.key())).unwrap();
    assert_eq!((status, body["version"].as_str()), (200, Some(v1.as_str())));
}

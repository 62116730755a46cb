//! The contract every compute target keeps, one function per behaviour, written against
//! [`TargetFixture`] only (the real `cairn` binary on a manifests repository, what the
//! store and the journal record, and the target's own checks), so it runs unchanged on
//! every target. `main.rs` instantiates it once per target.

use std::time::Duration;

use serde_json::Value;

use crate::fixture::{Job, TargetFixture, ENDPOINT, JOB, MODEL, TRAIN, WS};

/// The changes of the last journal record, as `address: status`.
fn statuses(repo: &crate::fixture::Repo) -> Vec<String> {
    let journal = repo.journal();
    let last = journal.last().expect("a journal record");
    last["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}: {}",
                o["address"].as_str().unwrap(),
                o["status"].as_str().unwrap()
            )
        })
        .collect()
}

/// The steps a journaled rollout walked, with whether each passed its gates.
fn walked(outcome: &Value) -> Vec<String> {
    outcome["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| match e["event"].as_str()? {
            "step" => Some(format!("step {}", e["step"])),
            "step-passed" => Some(format!("passed {}", e["step"])),
            "gate-failed" => Some(format!("failed {}", e["step"])),
            "rolled-back" => Some("rolled back".to_string()),
            "promoted" => Some("promoted".to_string()),
            _ => None,
        })
        .collect()
}

/// Asserts a failed job's apply: exit 1, the job failed saying `why`, its model skipped
/// because of it, a failed run recorded, no model version, nothing of either in the
/// state, and the run planned again.
fn assert_job_failed<F: TargetFixture>(world: &F, apply: &crate::support::Run, why: &str) {
    let repo = world.repo();
    apply.code(1);
    assert!(
        apply.stdout.contains("Apply failed:") && apply.stdout.contains("1 failed, 1 skipped"),
        "{}",
        apply.both()
    );
    let job = repo.last_outcome(JOB);
    assert_eq!(job["status"], "failed", "{job}");
    let message = job["message"].as_str().unwrap_or("");
    assert!(message.contains(why), "{why:?} in {message:?}");
    assert!(
        apply.stderr.contains(&format!("✗ {JOB}: ")),
        "{}",
        apply.both()
    );
    let model = repo.last_outcome(MODEL);
    assert_eq!(model["status"], "skipped", "{model}");
    assert!(
        model["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{JOB} did not succeed")),
        "{model}"
    );
    let runs = repo.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    assert!(repo.versions("models", "scorer").is_empty());
    let state = repo.state();
    assert!(state.get(JOB).is_none(), "{state}");
    assert!(state.get(MODEL).is_none(), "{state}");
    assert!(
        state.get(format!("{WS}/dataset.loans")).is_some(),
        "{state}"
    );
    let plan = repo.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(2);
    assert!(plan.stdout.contains(&format!("▶ {JOB}")), "{}", plan.both());
}

/// 1. A job run that succeeds: its run is recorded with the model version it stored,
///    and the state records both.
pub fn a_job_run_succeeds<F: TargetFixture>() {
    let world = F::start(false);
    let repo = world.repo();
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(plan.stdout.contains(&format!("▶ {JOB}")), "{}", plan.both());

    let apply = repo.apply();
    apply.ok();
    assert!(apply.stdout.contains("Apply complete"), "{}", apply.both());
    let runs = repo.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["outputs"]["model"], format!("model.scorer@{run_id}"));
    assert_eq!(repo.versions("models", "scorer"), [run_id]);
    assert_eq!(repo.model_version(), run_id);
    assert_eq!(repo.state()[JOB]["value"]["run_id"], run_id);
    let model = repo.last_outcome(MODEL);
    assert_eq!(model["status"], "succeeded", "{model}");

    // Its logs are in the store: `cairn logs` prints them, the newest run or a named one.
    let logs = repo.cairn(&["logs", "train", "ROOT"]);
    logs.ok();
    assert!(
        logs.stdout.contains("model.safetensors and metrics.json"),
        "{}",
        logs.both()
    );
    let named = repo.cairn(&[
        "logs",
        &format!("job.train@{run_id}"),
        "ROOT",
        "--format",
        "json",
    ]);
    named.ok();
    let named: Value = serde_json::from_str(&named.stdout).unwrap();
    assert_eq!(named["run_id"], run_id);
    assert!(
        named["logs"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with(&format!("runs/train/{run_id}/attempt-1")),
        "{named}"
    );
    // The versions it stored, with their lineage.
    let models = repo.cairn(&["models", "ROOT"]);
    models.ok();
    assert!(models.stdout.contains(MODEL), "{}", models.both());
    assert!(
        models.stdout.contains(&format!("* {run_id}  ")),
        "{}",
        models.both()
    );
    assert!(
        models
            .stdout
            .contains(&format!("run {run_id} of job.train ← dataset.loans@")),
        "{}",
        models.both()
    );
    let datasets = repo.cairn(&["datasets", "ROOT", "--name", "loans", "--format", "json"]);
    datasets.ok();
    let datasets: Value = serde_json::from_str(&datasets.stdout).unwrap();
    assert_eq!(datasets[0]["address"], format!("{WS}/dataset.loans"));
    assert_eq!(datasets[0]["versions"][0]["current"], true, "{datasets}");
    assert_eq!(
        datasets[0]["versions"][0]["version"],
        run["inputs"]["loans"]
            .as_str()
            .unwrap()
            .split('@')
            .nth(1)
            .unwrap(),
        "{datasets}"
    );
    repo.cairn(&["models", "ROOT", "--name", "nope"]).code(1);

    let unknown = repo.cairn(&["logs", "train@000000000000", "ROOT"]);
    unknown.code(1);
    assert!(
        unknown
            .stderr
            .contains(&format!("its newest runs: {run_id}")),
        "{}",
        unknown.both()
    );
}

/// 1b. A job whose output is a dataset: each of its runs is a version of the dataset,
///     named after the run, which the next job reads; applied again, nothing runs.
pub fn a_dataset_a_job_writes_feeds_the_next_job<F: TargetFixture>() {
    let world = F::start(false);
    let repo = world.repo();
    repo.set_pipeline();
    let apply = repo.apply();
    apply.ok();
    let prep = repo.runs_of("prep");
    assert_eq!(prep.len(), 1, "{prep:?}");
    let prep_run = prep[0]["run_id"].as_str().unwrap();
    assert_eq!(prep[0]["status"], "succeeded", "{}", prep[0]);
    assert_eq!(
        prep[0]["outputs"]["features"],
        format!("dataset.features@{prep_run}")
    );
    assert_eq!(repo.versions("datasets", "features"), [prep_run]);
    let train = repo.runs();
    assert_eq!(train.len(), 1, "{train:?}");
    assert_eq!(
        train[0]["inputs"]["loans"],
        format!("dataset.features@{prep_run}"),
        "the training run read the prepared version: {}",
        train[0]
    );
    assert_eq!(
        repo.state()["contract/dataset.features"]["value"]["version"],
        prep_run
    );

    let again = repo.apply();
    again.ok();
    assert!(again.stdout.contains("No changes"), "{}", again.both());
}

/// 1c. A job's sweep: every trial runs (two at a time) with its parameters in its
///     command and environment, the best by the pick becomes the run and the model
///     version, with every trial in the lineage; applied again, nothing runs.
pub fn a_sweep_keeps_its_best_trial<F: TargetFixture>() {
    let world = F::start(false);
    let repo = world.repo();
    repo.set_sweep();
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("a sweep of 3 trials (2 at a time), the best by max(auc) kept"),
        "{}",
        plan.both()
    );
    let apply = repo.apply();
    apply.ok();
    assert!(
        apply
            .stderr
            .contains("kept trial 2 (quality=0.9) with auc = 0.9"),
        "{}",
        apply.both()
    );
    // Two at a time: the first two overlapped, and never more than two ran.
    let log = std::fs::read_to_string(repo.scratch().join("trials")).unwrap_or_default();
    let (mut running, mut most) = (0, 0);
    for line in log.lines() {
        running += if line.starts_with("start") { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(log.lines().count(), 6, "{log}");
    assert_eq!(
        most, 2,
        "at most `parallel` trials at once, and that many: {log}"
    );
    let runs = repo.runs();
    let sweep: Vec<&Value> = runs
        .iter()
        .filter(|r| r["trials"].as_array().is_some_and(|t| !t.is_empty()))
        .collect();
    assert_eq!(sweep.len(), 1, "one sweep run: {runs:?}");
    let sweep = sweep[0];
    let run_id = sweep["run_id"].as_str().unwrap();
    assert_eq!(runs.len(), 4, "the sweep's run and its 3 trials: {runs:?}");
    let trials = sweep["trials"].as_array().unwrap();
    let seen: Vec<(String, String, bool)> = trials
        .iter()
        .map(|t| {
            (
                t["run_id"].as_str().unwrap().to_string(),
                t["params"]["quality"].as_str().unwrap().to_string(),
                t["picked"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (format!("{run_id}-t0"), "0.2".to_string(), false),
            (format!("{run_id}-t1"), "0.9".to_string(), true),
            (format!("{run_id}-t2"), "0.5".to_string(), false),
        ]
    );
    assert!(
        trials.iter().all(|t| t["status"] == "succeeded"),
        "{trials:?}"
    );
    assert_eq!(sweep["outputs"]["model"], format!("model.scorer@{run_id}"));
    assert_eq!(repo.model_version(), run_id);
    let model = repo.model_record(run_id);
    assert_eq!(model["metrics"]["auc"], 0.9, "{model}");
    assert_eq!(model["trials"].as_array().map(Vec::len), Some(3), "{model}");

    let again = repo.apply();
    again.ok();
    assert!(again.stdout.contains("No changes"), "{}", again.both());
}

/// `cairn drift --format json` once the endpoint's captured requests hold `rows` rows
/// (captures are written on their own: a thread, an upload).
fn drift_with_rows(repo: &crate::fixture::Repo, rows: u64) -> (crate::support::Run, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run = repo.cairn(&["drift", "ROOT", "--rev", "HEAD", "--format", "json"]);
        let report: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        let seen = report["inputs"][0]["rows"].as_u64().unwrap_or(0);
        if seen >= rows || std::time::Instant::now() > deadline {
            assert_eq!(seen, rows, "captured rows: {}", run.both());
            return (run, report);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 4d. An endpoint with a monitor: the requests it answers are captured (bodies only),
///     and `cairn drift` compares them with the serving version's training data: rows
///     like the training rows are no drift, the same rows with incomes tripled are
///     (exit 2, `income` named).
pub fn an_endpoint_with_a_monitor_reports_input_drift<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    repo.set_monitor();
    repo.commit();
    repo.apply().ok();

    let quiet = repo.cairn(&["drift", "ROOT", "--rev", "HEAD"]);
    quiet.ok();
    assert!(
        quiet.stdout.contains("no requests captured yet"),
        "{}",
        quiet.both()
    );

    let same = crate::fixture::Repo::loans_request(1.0);
    for _ in 0..5 {
        assert_eq!(world.predict_body(&same), 200);
    }
    let (run, report) = drift_with_rows(repo, 50);
    run.ok();
    let inputs = &report["inputs"][0];
    assert_eq!(inputs["endpoint"], ENDPOINT, "{report:#}");
    assert!(
        inputs["training_data"]
            .as_str()
            .unwrap_or("")
            .starts_with("dataset.loans@"),
        "{report:#}"
    );
    let features = inputs["features"].as_array().unwrap();
    assert_eq!(features.len(), 2, "age and income: {report:#}");
    assert!(features.iter().all(|f| f["drifted"] == false), "{report:#}");

    let moved = crate::fixture::Repo::loans_request(3.0);
    for _ in 0..5 {
        assert_eq!(world.predict_body(&moved), 200);
    }
    let (run, _) = drift_with_rows(repo, 100);
    run.code(2);
    let text = repo.cairn(&["drift", "ROOT", "--rev", "HEAD"]);
    text.code(2);
    assert!(text.stdout.contains("! income: PSI"), "{}", text.both());
    assert!(!text.stdout.contains("! age:"), "{}", text.both());
}

/// 2a. A job whose command exits non-zero: a failed change, its model skipped.
pub fn a_failed_job_skips_its_dependents<F: TargetFixture>() {
    let world = F::start(false);
    let repo = world.repo();
    repo.set_job(&Job::script("echo 'bad data' >&2; exit 3"));
    let apply = repo.apply();
    assert_job_failed(&world, &apply, world.failed_job_reason());
}

/// 2b. A job that runs past its `timeout`: stopped, a failed change, its model skipped.
pub fn a_timed_out_job_skips_its_dependents<F: TargetFixture>() {
    let world = F::start(false);
    let repo = world.repo();
    repo.set_job(&Job {
        timeout: Some("1s".into()),
        ..Job::script("sleep 30")
    });
    let apply = repo.apply();
    assert_job_failed(&world, &apply, world.timed_out_reason());
    assert!(
        apply.took < Duration::from_secs(20),
        "the job was stopped at its timeout: {:?}",
        apply.took
    );
}

/// 3. `retries = 1`: the first attempt fails, the second succeeds and stores the model.
pub fn a_failed_attempt_is_retried<F: TargetFixture>() {
    let world = F::start(false);
    let repo = world.repo();
    let scratch = repo.scratch();
    let attempts = scratch.join("attempts");
    let marker = scratch.join("first-attempt-failed");
    let script = format!(
        "echo attempt >> {attempts}\n\
         if [ ! -e {marker} ]; then touch {marker}; echo 'first attempt fails' >&2; exit 1; fi\n\
         {TRAIN}",
        attempts = attempts.display(),
        marker = marker.display(),
    );
    repo.set_job(&Job {
        retries: 1,
        ..Job::script(script)
    });
    let apply = repo.apply();
    apply.ok();
    let tried = std::fs::read_to_string(&attempts).unwrap_or_default();
    assert_eq!(tried.lines().count(), 2, "two attempts ran: {tried:?}");
    let runs = repo.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    assert_eq!(runs[0]["attempts"], 2, "{runs:?}");
    let run_id = runs[0]["run_id"].as_str().unwrap();
    assert_eq!(repo.versions("models", "scorer"), [run_id]);
    assert_eq!(repo.model_version(), run_id);
}

/// 3b. An endpoint with `auth = "key"` answers 401 without its key, or with another,
///     and serves with it; a second apply keeps the key; no output shows it.
pub fn an_endpoint_with_a_key_refuses_requests_without_it<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    repo.set_endpoint_auth("key");
    let apply = repo.apply();
    apply.ok();
    let key = world
        .endpoint_key()
        .expect("the target gives the endpoint's key");
    assert!(
        key.len() >= 32,
        "a long random key: {} characters",
        key.len()
    );
    assert!(!apply.both().contains(&key), "the key is in the output");
    assert_eq!(world.predict_status(None), 401);
    assert_eq!(world.predict_status(Some("not-the-key")), 401);
    assert_eq!(world.predict_status(Some(&key)), 200);
    // `cairn invoke` sends the request with the key, and shows the answer, not the key.
    let rows = repo.scratch().join("rows.json");
    std::fs::write(&rows, crate::fixture::ROWS).unwrap();
    let mut args: Vec<String> = ["invoke", "api", "ROOT", "--data"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(rows.display().to_string());
    args.extend(world.invoke_args(&repo.scratch().join("key")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let invoked = repo.cairn(&args);
    invoked.ok();
    let answer: Value =
        serde_json::from_str(&invoked.stdout).unwrap_or_else(|e| panic!("{e}: {}", invoked.both()));
    // The serving pods of the Kubernetes world answer `{"score": …}`; `cairn serve` one
    // score per row.
    assert!(
        answer["scores"].as_array().map(Vec::len) == Some(2) || answer["score"].is_number(),
        "{answer}"
    );
    assert!(!invoked.both().contains(&key), "the key is in the output");
    let plan = repo.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(0);
    assert!(!plan.both().contains(&key));
    repo.apply().ok();
    assert_eq!(
        world.endpoint_key().as_deref(),
        Some(key.as_str()),
        "the key is kept"
    );
}

/// 4. An endpoint is created and serves the trained version.
pub fn an_endpoint_is_created<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout.contains(&format!("+ {ENDPOINT}")),
        "{}",
        plan.both()
    );
    let apply = repo.apply();
    apply.ok();
    let endpoint = repo.last_outcome(ENDPOINT);
    assert_eq!(endpoint["status"], "succeeded", "{endpoint}");
    let version = repo.model_version();
    assert_eq!(
        repo.state()[ENDPOINT]["value"]["deployments"]["blue"]["version"],
        version.as_str(),
        "{}",
        repo.state()
    );
    world.assert_serving(&version);
}

/// 5. A new model version is rolled out step by step under its gates, then promoted.
pub fn a_rollout_is_promoted<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    repo.apply().ok();
    let v1 = repo.model_version();

    repo.retrain();
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout.contains(&format!("» {ENDPOINT}")),
        "{}",
        plan.both()
    );
    let (apply, requests) = world.apply_under_load();
    apply.ok();
    let v2 = repo.model_version();
    assert_ne!(v1, v2);
    let endpoint = repo.last_outcome(ENDPOINT);
    assert_eq!(endpoint["status"], "succeeded", "{endpoint}");
    assert_eq!(
        walked(&endpoint),
        ["step 50", "passed 50", "step 100", "passed 100", "promoted"],
        "{endpoint}"
    );
    assert!(requests.ok > 0, "{requests:?}");
    assert_eq!(requests.failed, 0, "{requests:?}");
    world.assert_serving(&v2);
    // The text history shows the steps too, not only `--format json`.
    let history = repo.cairn(&["history", "ROOT"]);
    history.ok();
    let lines: Vec<&str> = history
        .stdout
        .lines()
        .skip_while(|l| !l.trim().starts_with(&format!("{ENDPOINT} rollout:")))
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .map(str::trim)
        .collect();
    let shape: Vec<String> = lines
        .iter()
        .map(|l| l.split(':').next().unwrap_or("").to_string())
        .collect();
    assert!(
        lines.first().is_some_and(|l| l.ends_with(" ready")),
        "{}",
        history.stdout
    );
    assert_eq!(
        shape[1..],
        [
            "step 50",
            "step 50 passed",
            "step 100",
            "step 100 passed",
            "promoted"
        ],
        "{}",
        history.stdout
    );
    assert!(
        lines[2].contains(" requests, error rate "),
        "{}",
        history.stdout
    );
}

/// 5b. A rollout whose step sees no traffic (no client sends any) is halted, saying so,
///     and the endpoint keeps its old version: gates fail closed.
pub fn a_rollout_without_traffic_is_halted<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    repo.apply().ok();
    let v1 = repo.model_version();

    repo.retrain();
    let apply = repo.apply();
    apply.code(1);
    let endpoint = repo.last_outcome(ENDPOINT);
    assert_eq!(endpoint["status"], "failed", "{endpoint}");
    let message = endpoint["message"].as_str().unwrap_or("");
    assert!(message.contains("no traffic to judge"), "{message}");
    assert_eq!(
        walked(&endpoint).iter().rev().take(2).collect::<Vec<_>>(),
        ["rolled back", "failed 50"],
        "{endpoint}"
    );
    assert_eq!(
        repo.state()[ENDPOINT]["value"]["deployments"]["blue"]["version"],
        v1.as_str()
    );
    world.assert_serving(&v1);
}

/// 6. A new version that fails its requests is rolled back: traffic stays on the old
///    one, the change fails saying why, and the rollout is still to do.
pub fn a_rollout_is_rolled_back_on_a_failed_gate<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    repo.apply().ok();
    let v1 = repo.model_version();

    world.break_next_version();
    let (apply, requests) = world.apply_under_load();
    apply.code(1);
    assert!(
        requests.failed > 0,
        "the broken version answered: {requests:?}"
    );
    let endpoint = repo.last_outcome(ENDPOINT);
    assert_eq!(endpoint["status"], "failed", "{endpoint}");
    let message = endpoint["message"].as_str().unwrap_or("");
    assert!(message.contains("rolled back"), "{message}");
    assert!(message.contains("error rate"), "{message}");
    let walked = walked(&endpoint);
    assert_eq!(
        walked.iter().rev().take(2).collect::<Vec<_>>(),
        ["rolled back", "failed 50"],
        "{walked:?}"
    );
    assert!(
        apply.stderr.contains(&format!("✗ {ENDPOINT}: ")),
        "{}",
        apply.both()
    );
    // The new model version is stored (its job ran), but the endpoint serves the old one.
    assert_ne!(repo.model_version(), v1);
    assert_eq!(
        repo.state()[ENDPOINT]["value"]["deployments"]["blue"]["version"],
        v1.as_str()
    );
    world.assert_serving(&v1);
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout.contains(&format!("» {ENDPOINT}")),
        "{}",
        plan.both()
    );
}

/// 7. An endpoint removed from the manifests is planned for deletion, and apply stops it.
pub fn a_removed_endpoint_is_pruned<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    repo.apply().ok();
    world.assert_serving(&repo.model_version());

    repo.set_endpoint(false);
    let plan = repo.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(2);
    assert!(
        plan.stdout.contains(&format!("- {ENDPOINT}")),
        "{}",
        plan.both()
    );
    assert!(plan.stdout.contains("1 to destroy"), "{}", plan.both());
    let apply = repo.apply();
    apply.ok();
    assert_eq!(statuses(repo), [format!("{ENDPOINT}: succeeded")]);
    assert!(repo.state().get(ENDPOINT).is_none(), "{}", repo.state());
    world.assert_not_serving();
    repo.cairn(&["plan", "ROOT", "--detailed-exitcode"]).code(0);
}

/// 8. Right after an apply, observing the target finds nothing to change.
pub fn nothing_changes_after_an_apply<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    // With a timeout: whatever the target did with it while the job ran (Kubernetes
    // sets the Job's deadline once its pods run) is no drift.
    // The job runs long enough for apply to see it running.
    repo.set_job(&Job {
        timeout: Some("10m".into()),
        ..Job::script(format!("sleep 2\n{TRAIN}"))
    });
    repo.apply().ok();
    let plan = repo.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(0);
    assert!(plan.stdout.contains("No changes"), "{}", plan.both());
}

/// 9a. `cairn destroy`: everything the state records is removed from the target (the
///     endpoint first), the state is empty, the journal has the record, stored versions
///     are kept, and the next plan creates everything again.
pub fn destroy_tears_the_workspace_down<F: TargetFixture>() {
    let world = F::start(true);
    let repo = world.repo();
    repo.apply().ok();
    let version = repo.model_version();
    world.assert_serving(&version);
    let records = repo.journal().len();

    let plan = repo.cairn(&["plan", "ROOT", "--destroy", "--detailed-exitcode"]);
    plan.code(2);
    for address in [ENDPOINT, MODEL, JOB] {
        assert!(
            plan.stdout.contains(&format!("- {address}")),
            "{}",
            plan.both()
        );
    }
    let destroy = repo.cairn(&["destroy", "ROOT", "--auto-approve"]);
    destroy.ok();
    let state = repo.state();
    assert_eq!(state.as_object().map(|s| s.len()), Some(0), "{state}");
    let journal = repo.journal();
    assert_eq!(journal.len(), records + 1);
    let record = journal.last().unwrap();
    assert_eq!(record["success"], true, "{record}");
    let outcomes = record["outcomes"].as_array().unwrap();
    assert!(outcomes.len() >= 5, "{record}");
    assert!(
        outcomes
            .iter()
            .all(|o| o["action"] == "delete" && o["status"] == "succeeded"),
        "{record}"
    );
    // The endpoint goes before the model it serves.
    let position = |a: &str| outcomes.iter().position(|o| o["address"] == a).unwrap();
    assert!(position(ENDPOINT) < position(MODEL), "{record}");
    world.assert_torn_down();
    // Versions and runs stay in the store for lineage.
    assert_eq!(
        repo.versions("models", "scorer"),
        std::slice::from_ref(&version)
    );
    assert_eq!(repo.runs().len(), 1);

    let again = repo.cairn(&["plan", "ROOT"]);
    again.ok();
    for created in [
        format!("+ {WS}/workspace"),
        format!("+ {WS}/compute.here"),
        format!("+ {WS}/dataset.loans"),
        format!("+ {ENDPOINT}"),
    ] {
        assert!(
            again.stdout.contains(&created),
            "{created}\n{}",
            again.both()
        );
    }
}

/// 9b. `cairn destroy --purge-store` also deletes the stored versions and runs.
pub fn destroy_can_purge_the_store<F: TargetFixture>() {
    let world = F::start(false);
    let repo = world.repo();
    repo.apply().ok();
    assert_eq!(repo.versions("models", "scorer").len(), 1);
    assert_eq!(repo.versions("datasets", "loans").len(), 1);

    let destroy = repo.cairn(&["destroy", "ROOT", "--auto-approve", "--purge-store"]);
    destroy.ok();
    assert!(destroy.stdout.contains("Purged"), "{}", destroy.both());
    assert_eq!(repo.stored_files(), Vec::<String>::new());
    assert!(repo.runs().is_empty());
    let verify = repo.cairn(&["verify", "ROOT"]);
    verify.ok();
    assert!(!verify.stdout.contains("scorer"), "{}", verify.both());
}

//! Jobs that fail: the failure is reported and recorded, dependents are skipped,
//! independent work goes on; retries and timeouts.

use std::time::Duration;

use crate::support::{manifests, Job, Root};

fn run_record(root: &Root) -> serde_json::Value {
    let runs = root.store_keys("runs/train");
    let key = runs
        .iter()
        .find(|k| k.ends_with("/_run.json"))
        .unwrap_or_else(|| panic!("no run record: {runs:?}"));
    root.store_json(key)
}

/// A job that exits 3: apply exits 1, the dataset succeeded, the model is skipped, and
/// the run record says failed.
#[test]
fn failed_job_skips_its_model() {
    let root = manifests(&Job::script("echo 'bad data' >&2; exit 3"));
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.code(1);
    assert!(
        apply
            .stdout
            .contains("Apply failed: 3 succeeded, 1 failed, 1 skipped"),
        "{}",
        apply.both()
    );
    assert!(
        apply.stderr.contains("✓ risk/dataset.loans: succeeded"),
        "{}",
        apply.both()
    );
    assert!(
        apply
            .stderr
            .contains("✗ risk/job.train: exited with code 3"),
        "{}",
        apply.both()
    );
    assert!(
        apply.stderr.contains("bad data"),
        "the log tail is shown: {}",
        apply.both()
    );
    assert!(
        apply
            .stderr
            .contains("risk/model.scorer: skipped: skipped because risk/job.train did not succeed"),
        "{}",
        apply.both()
    );

    let run = run_record(&root);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 3);
    assert_eq!(run["attempts"], 1);
    assert!(root.committed("models", "scorer").is_empty());
    assert_eq!(root.committed("datasets", "loans").len(), 1);

    // The journal has it, and the state has only what succeeded.
    let state = root.state();
    assert!(state.get("risk/dataset.loans").is_some());
    assert!(state.get("risk/job.train").is_none());
    assert!(state.get("risk/model.scorer").is_none());
    let history = root.cairn(&["history", "ROOT"]);
    history.ok();
    assert!(history.stdout.contains("FAILED"), "{}", history.both());

    // The failure stays planned: the next plan runs the job again.
    let plan = root.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(2);
    assert!(plan.stdout.contains("▶ risk/job.train"), "{}", plan.both());
    assert!(!plan.stdout.contains("dataset.loans"), "{}", plan.both());
}

/// `retries = 2` means three attempts, each with its own log.
#[test]
fn retries_make_three_attempts() {
    let root = manifests(&Job {
        retries: 2,
        ..Job::script("echo \"attempt of $CAIRN_RUN_ID\"; exit 3")
    });
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.code(1);
    assert!(apply.stderr.contains("attempt 2 of 3"), "{}", apply.both());
    assert!(apply.stderr.contains("attempt 3 of 3"), "{}", apply.both());
    assert!(
        apply.stderr.contains("exited with code 3 (attempt 3 of 3)"),
        "{}",
        apply.both()
    );
    let run = run_record(&root);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["attempts"], 3);
    let logs: Vec<&str> = run["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(logs.len(), 3, "{logs:?}");
    for (i, key) in logs.iter().enumerate() {
        assert!(key.ends_with(&format!("attempt-{}.log", i + 1)), "{key}");
        let text = std::fs::read_to_string(root.store().join(key)).unwrap();
        assert!(text.starts_with("attempt of "), "{key}: {text}");
    }
}

/// A retried job that succeeds on its second attempt produces the model.
#[test]
fn a_retry_can_succeed() {
    let marker = "$2/../../first-attempt-done";
    let script = format!(
        "if [ ! -e {marker} ]; then touch {marker}; exit 1; fi\n{}",
        crate::support::TRAIN
    );
    let root = manifests(&Job {
        retries: 1,
        ..Job::script(script)
    });
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    assert!(apply.stderr.contains("attempt 2 of 2"), "{}", apply.both());
    let run = run_record(&root);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["attempts"], 2);
    assert_eq!(root.committed("models", "scorer").len(), 1);
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
}

/// A job over its timeout is stopped and reported as timed out, within a few seconds.
///
/// Every `cairn` here runs with `kill` guarded (see `Root::kill_guard`): the local
/// target's `kill -KILL -<pgid>` would otherwise signal every process on machines with
/// procps-ng 4.0.2 (see `timeout_kills_the_jobs_children`).
#[test]
fn timeout_stops_the_job() {
    let root = manifests(&Job::default());
    let pidfile = root.scratch().join("sleeper.pid");
    root.set_job(&Job {
        timeout: Some("1s".into()),
        ..Job::script(format!(
            "sleep 30 & echo $! > {}\necho started\nwait\necho never",
            pidfile.display()
        ))
    });
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    let sleeper = std::fs::read_to_string(&pidfile).ok();
    // The job's child is ours to clean up if cairn left it behind.
    if let Some(pid) = &sleeper {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", pid.trim()])
            .stderr(std::process::Stdio::null())
            .status();
    }
    apply.code(1);
    assert!(
        apply.took < Duration::from_secs(10),
        "took {:?}",
        apply.took
    );
    assert!(apply.stderr.contains("timed out"), "{}", apply.both());
    assert!(
        apply.stderr.contains("started"),
        "the log tail is shown: {}",
        apply.both()
    );
    assert!(!apply.stderr.contains("never"), "{}", apply.both());
    let run = run_record(&root);
    assert_eq!(run["status"], "failed");
    assert!(
        run["error"].as_str().unwrap().contains("timed out"),
        "{run}"
    );
}

/// A timed-out job's whole process group is killed, so no child outlives the timeout,
/// and without signalling anything else.
#[test]
fn timeout_kills_the_jobs_children() {
    let root = manifests(&Job::default());
    let pidfile = root.scratch().join("sleeper.pid");
    root.set_job(&Job {
        timeout: Some("1s".into()),
        ..Job::script(format!("sleep 30 & echo $! > {}\nwait", pidfile.display()))
    });
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.code(1);
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    // A killed child that init has not reaped yet is a zombie, not alive.
    let alive = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .is_ok_and(|stat| !stat.contains(") Z "));
    if alive {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", pid.trim()])
            .status();
    }
    let kills = std::fs::read_to_string(root.kill_log()).unwrap_or_default();
    assert!(
        !kills.contains("refused"),
        "cairn ran an unsafe kill: {kills}"
    );
    assert!(
        !alive,
        "the job's child outlived the timeout; kill calls: {kills}"
    );
}

/// A stored file that no longer matches the SHA-256 its version recorded is refused when a
/// job fetches it: the run fails saying the stored copy is damaged, and nothing runs on it.
#[test]
fn a_damaged_stored_file_is_refused_by_its_checksum() {
    let root = manifests(&Job::default());
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let version = root.committed("datasets", "loans").pop().unwrap();
    let stored = root
        .store()
        .join("datasets/loans")
        .join(&version)
        .join("loans.csv");
    std::fs::write(&stored, "loan_id,age,income,defaulted\nL9,1,1,1\n").unwrap();
    // A new job spec: a new run, which fetches the dataset again.
    root.set_job(&Job {
        script: format!("echo retrained\n{}", crate::support::TRAIN),
        ..Job::default()
    });
    let run = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    run.code(1);
    assert!(
        run.stderr.contains("the stored copy is damaged"),
        "{}",
        run.both()
    );
    assert_eq!(
        root.committed("models", "scorer").len(),
        1,
        "no model version came from the damaged data"
    );
}

//! The store lock between applies: a second apply is refused (or waits), a lock left by a
//! killed apply is released with `cairn unlock`, and `cairn history` lists applies.

use std::time::Duration;

use crate::support::{
    hang_once, kill_apply_during_job, manifests, wait_until, wait_with_deadline, Job, Run, TRAIN,
};

/// A job that takes long enough for a second apply to meet its lock.
fn slow_job() -> Job {
    Job::script(format!("sleep 3\n{TRAIN}"))
}

/// Returns the lock id named in a "locked by" error.
fn lock_id(run: &Run) -> String {
    let (_, rest) = run
        .stderr
        .split_once("lock id ")
        .unwrap_or_else(|| panic!("no lock id: {}", run.both()));
    rest.chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// Two applies at once: exactly one wins; the other is refused, naming the holder and
/// the lock id, with a hint to unlock by that id.
#[test]
fn concurrent_applies_one_wins() {
    let root = manifests(&slow_job());
    let first = root.spawn(&["apply", "ROOT", "--auto-approve"]);
    let second = root.spawn(&["apply", "ROOT", "--auto-approve"]);
    let runs = [
        wait_with_deadline(first, Duration::from_secs(30)),
        wait_with_deadline(second, Duration::from_secs(30)),
    ];
    let winners = runs.iter().filter(|r| r.code == 0).count();
    assert_eq!(winners, 1, "{}\n{}", runs[0].both(), runs[1].both());
    let loser = runs.iter().find(|r| r.code != 0).unwrap();
    assert_eq!(loser.code, 1, "{}", loser.both());
    assert!(
        loser.stderr.contains("is locked by tester@"),
        "{}",
        loser.both()
    );
    assert!(loser.stderr.contains("cairn apply"), "{}", loser.both());
    let id = lock_id(loser);
    assert_eq!(id.len(), 12, "{}", loser.both());
    assert!(
        loser.stderr.contains(&format!("cairn unlock {id}")),
        "{}",
        loser.both()
    );
    // The loser ran nothing: one run, one journal record, and the lock is gone.
    assert_eq!(root.committed("models", "scorer").len(), 1);
    assert_eq!(root.store_keys(".cairn/journal").len(), 1);
    assert!(!root.store().join(".cairn/lock").exists());
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
}

/// With `--lock-timeout`, the second apply waits for the first and then has nothing left
/// to do (or does what is left).
#[test]
fn second_apply_waits_for_the_lock() {
    let root = manifests(&slow_job());
    let first = root.spawn(&["apply", "ROOT", "--auto-approve"]);
    wait_until("the first apply's lock", Duration::from_secs(20), || {
        root.store().join(".cairn/lock").exists()
    });
    let second = root.cairn(&["apply", "ROOT", "--auto-approve", "--lock-timeout", "30s"]);
    let first = wait_with_deadline(first, Duration::from_secs(30));
    first.ok();
    assert!(
        second.stderr.contains("waiting for the lock"),
        "{}",
        second.both()
    );
    second.ok();
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
}

/// A lock left by a killed apply (long lease) blocks the next apply, names its id, and
/// `cairn unlock <id>` releases it; `cairn history` lists the applies that finished.
#[test]
fn unlock_releases_a_dead_apply_and_history_lists_applies() {
    let root = manifests(&Job::default());
    let marker = root.scratch().join("started");
    root.set_job(&Job::script(hang_once(&marker)));

    let history = root.cairn(&["history", "ROOT"]);
    history.ok();
    assert!(
        history.stdout.contains("No applies recorded yet."),
        "{}",
        history.both()
    );

    let dead = root.spawn(&["apply", "ROOT", "--auto-approve"]);
    kill_apply_during_job(dead, &marker);

    let refused = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    refused.code(1);
    assert!(
        refused.stderr.contains("is locked by tester@"),
        "{}",
        refused.both()
    );
    let id = lock_id(&refused);

    let wrong = root.cairn(&["unlock", "000000000000", "ROOT"]);
    wrong.code(1);
    assert!(
        wrong.stderr.contains("no lock with id `000000000000`"),
        "{}",
        wrong.both()
    );

    let unlock = root.cairn(&["unlock", &id, "ROOT"]);
    unlock.ok();
    assert!(
        unlock.stdout.contains(&format!("Released lock {id}")),
        "{}",
        unlock.both()
    );
    assert!(unlock.stdout.contains("tester@"), "{}", unlock.both());
    assert!(!root.store().join(".cairn/lock").exists());

    // The job script no longer sleeps: the marker exists.
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();

    // One more apply that changes something, then the journal has two, oldest first.
    root.edit_row(50_000);
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let history = root.cairn(&["history", "ROOT"]);
    history.ok();
    // One line per apply (the indented lines under one are its runs' metrics).
    let lines: Vec<&str> = history
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' '))
        .collect();
    assert_eq!(lines.len(), 2, "{}", history.both());
    for line in &lines {
        assert!(line.contains("risk"), "{line}");
        assert!(line.contains("success"), "{line}");
        assert!(line.contains("by tester@"), "{line}");
        assert!(line.contains("working tree"), "{line}");
    }
    // The data change (dataset, run, model) is one of them. Both applies may start in
    // the same second, and history breaks such ties by a random id, so their order isn't
    // checked here (see the store suite's `journal_order_within_a_second`).
    assert!(
        lines.iter().any(|l| l.contains(" 3 ok")),
        "{}",
        history.both()
    );

    let json = root.cairn(&["history", "ROOT", "--format", "json"]);
    json.ok();
    let records: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r["success"] == true && r["workspace"] == "risk"));
    assert!(records
        .iter()
        .any(|r| r["outcomes"].as_array().unwrap().len() == 3));
}

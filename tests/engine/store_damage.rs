//! A store that was tampered with or damaged, and a store that can't be reached: each is
//! named with what to do, and nothing else is lost.
//! - a lock lease too long to be safe is refused; two applies with the longest lease
//!   allowed: exactly one proceeds;
//! - a damaged lock file: `apply` names `cairn unlock --force`, `status` shows it,
//!   `unlock --force` removes it;
//! - a damaged journal record: `history` and `status` skip it and name it;
//! - `cairn verify` finds a deleted and a bit-flipped stored file;
//! - an S3 store without credentials says so, without asking the instance metadata
//!   service (unless configured for it).

use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{manifests, wait_with_deadline, Job, Root, Run, TRAIN};

/// Two applies at once with the longest lease there is: one wins, the other is refused.
/// A lease past the bound is refused before anything is locked (it used to wrap around,
/// so the lock looked expired and a second apply took it over at once).
#[test]
fn extreme_lock_leases_are_refused_and_the_longest_still_excludes() {
    let root = manifests(&Job::script(format!("sleep 3\n{TRAIN}")));
    for (lease, why) in [
        // Past any duration Cairn takes, wherever it is written.
        ("18446744073709551615s", "over the limit of 30 days"),
        ("25h", "a lock lease is from 1s to 24h"),
        ("0s", "a lock lease is from 1s to 24h"),
    ] {
        let refused = root.cairn(&["apply", "ROOT", "--auto-approve", "--lock-lease", lease]);
        assert_ne!(refused.code, 0, "{}", refused.both());
        assert!(
            refused.stderr.contains("--lock-lease") && refused.stderr.contains(why),
            "{}",
            refused.both()
        );
    }
    let refused = root.cairn(&["apply", "ROOT", "--auto-approve", "--lock-timeout", "48h"]);
    assert!(
        refused.stderr.contains("a lock timeout is at most 24h"),
        "{}",
        refused.both()
    );
    assert!(!root.store().join(".cairn/lock").exists());

    let args = ["apply", "ROOT", "--auto-approve", "--lock-lease", "24h"];
    let first = root.spawn(&args);
    let second = root.spawn(&args);
    let runs = [
        wait_with_deadline(first, Duration::from_secs(30)),
        wait_with_deadline(second, Duration::from_secs(30)),
    ];
    assert_eq!(
        runs.iter().filter(|r| r.code == 0).count(),
        1,
        "{}\n{}",
        runs[0].both(),
        runs[1].both()
    );
    let loser = runs.iter().find(|r| r.code != 0).unwrap();
    assert!(loser.stderr.contains("is locked by"), "{}", loser.both());
    assert_eq!(root.committed("models", "scorer").len(), 1);
    assert_eq!(root.store_keys(".cairn/journal").len(), 1);
}

/// A lock file that is not a lock record blocks applies with the way out named; status
/// still works and shows it; `cairn unlock --force` removes it.
#[test]
fn a_damaged_lock_names_unlock_force() {
    let root = manifests(&Job::default());
    root.write(".cairn/store/.cairn/lock", "\u{0}\u{1}garbage");

    let refused = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    refused.code(1);
    assert!(
        refused.stderr.contains("`.cairn/lock`") && refused.stderr.contains("not a valid record"),
        "{}",
        refused.both()
    );
    assert!(
        refused.stderr.contains("hint: the lock file is damaged; if no apply is running, remove it with `cairn unlock --force`"),
        "{}",
        refused.both()
    );
    assert_eq!(root.committed("datasets", "loans").len(), 0);

    let status = root.cairn(&["status", "ROOT"]);
    status.ok();
    assert!(status.stdout.contains("lock: DAMAGED"), "{}", status.both());
    assert!(
        status.stdout.contains("cairn unlock --force"),
        "{}",
        status.both()
    );

    let unlock = root.cairn(&["unlock", "--force", "ROOT"]);
    unlock.ok();
    assert!(
        unlock
            .stdout
            .contains("Removed the damaged lock file on workspace `risk`"),
        "{}",
        unlock.both()
    );
    assert!(!root.store().join(".cairn/lock").exists());
    let again = root.cairn(&["unlock", "--force", "ROOT"]);
    again.ok();
    assert!(
        again.stdout.contains("No lock is held."),
        "{}",
        again.both()
    );

    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
}

/// One damaged journal record doesn't hide the others: `history` and `status` name it
/// and what to do, and show the rest.
#[test]
fn a_damaged_journal_record_is_skipped_and_named() {
    let root = manifests(&Job::default());
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    root.write(
        ".cairn/store/.cairn/journal/20990101T000000000Z-worktree-deadbeef.json",
        "{\"id\": \"trunc",
    );

    let history = root.cairn(&["history", "ROOT"]);
    history.ok();
    // One apply (the indented line under it is its run's metrics).
    assert_eq!(
        history
            .stdout
            .lines()
            .filter(|l| !l.starts_with(' '))
            .count(),
        1,
        "{}",
        history.both()
    );
    assert!(history.stdout.contains("success"), "{}", history.both());
    assert!(
        history.stderr.contains(
            "warning: skipped the damaged journal record `.cairn/journal/20990101T000000000Z-worktree-deadbeef.json`"
        ),
        "{}",
        history.both()
    );
    assert!(
        history.stderr.contains("hint: move `"),
        "{}",
        history.both()
    );

    let json = root.cairn(&["history", "ROOT", "--format", "json"]);
    json.ok();
    let records: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 1);

    let status = root.cairn(&["status", "ROOT"]);
    status.ok();
    assert!(status.stdout.contains("succeeded"), "{}", status.both());
    assert!(
        status.stderr.contains("damaged journal record"),
        "{}",
        status.both()
    );
}

/// Flips one byte of a stored dataset file and deletes a model file: plans don't notice
/// (they trust the version markers), `cairn verify` does, naming the version, the file
/// and the marker to remove.
#[test]
fn verify_finds_deleted_and_changed_stored_files() {
    let root = manifests(&Job::default());
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let verified = root.cairn(&["verify", "ROOT"]);
    verified.ok();
    assert!(
        verified.stdout.contains("risk  (file://")
            && verified
                .stdout
                .contains("3 records (versions and runs), 3 stored files"),
        "{}",
        verified.both()
    );
    assert!(
        verified.stdout.contains("all intact"),
        "{}",
        verified.both()
    );

    let data = root
        .store_keys("datasets/loans")
        .into_iter()
        .find(|k| k.ends_with("loans.csv"))
        .unwrap();
    let path = root.store().join(&data);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let model = root
        .store_keys("models/scorer")
        .into_iter()
        .find(|k| !k.ends_with("_model.json"))
        .unwrap();
    std::fs::remove_file(root.store().join(&model)).unwrap();

    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).code(0);
    let damaged = root.cairn(&["verify", "ROOT"]);
    damaged.code(1);
    let dataset_version = root.committed("datasets", "loans").remove(0);
    let model_version = root.committed("models", "scorer").remove(0);
    assert!(
        damaged.stdout.contains(&format!(
            "✗ dataset.loans@{dataset_version} loans.csv: its bytes changed"
        )),
        "{}",
        damaged.both()
    );
    assert!(
        damaged
            .stdout
            .contains(&format!("✗ model.scorer@{model_version} ")),
        "{}",
        damaged.both()
    );
    assert!(
        damaged.stdout.contains("missing from the store"),
        "{}",
        damaged.both()
    );
    assert!(
        damaged
            .stderr
            .contains("error: 2 damaged files in 2 versions"),
        "{}",
        damaged.both()
    );
    assert!(
        damaged
            .stderr
            .contains(&format!("datasets/loans/{dataset_version}/_version.json")),
        "{}",
        damaged.both()
    );
    let json = root.cairn(&["verify", "ROOT", "--format", "json"]);
    json.code(1);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let damaged = &report["workspaces"][0]["report"]["damaged"];
    assert_eq!(damaged.as_array().unwrap().len(), 2, "{report:#}");
    assert!(!root.path().join(".cairn/verify").exists());
}

/// A listener that counts connections (the stand-in instance metadata service).
fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
        }
    });
    (format!("http://{addr}"), count)
}

/// A metadata service that forbids every request, as IMDS does when it is disabled on
/// the instance.
fn forbidding_listener() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    format!("http://{addr}")
}

fn s3_plan_without_credentials(root: &Root, imds: &str, extra: &[(&str, &str)]) -> Run {
    let mut cmd = root.command(&["plan", "ROOT"]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let started = Instant::now();
    Run::from(cmd.output().expect("cairn runs"), started.elapsed())
}

/// No credentials anywhere and an endpoint nobody listens on: the error says there are
/// no credentials (not that they were refused), gives the hint, and the instance
/// metadata service is never asked — unless `AWS_EC2_METADATA_DISABLED=false` says to.
#[test]
fn missing_s3_credentials_are_named_and_instance_metadata_is_not_probed() {
    let root = manifests(&Job::default());
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    root.write(
        "risk/workspace.toml",
        &format!(
            "[workspace]\nenvironment = \"dev\"\nstore = \"s3://cairn-test/risk\"\n\
             endpoint = \"{endpoint}\"\nregion = \"us-east-1\"\npath_style = true\n"
        ),
    );
    let (imds, probes) = counting_listener();
    let run = s3_plan_without_credentials(&root, &imds, &[]);
    run.code(1);
    assert!(
        run.stderr
            .contains("no credentials for s3://cairn-test/risk")
            && run.stderr.contains("was not contacted"),
        "{}",
        run.both()
    );
    assert!(
        run.stderr
            .contains("hint: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{}",
        run.both()
    );
    for wrong in ["refused", "IMDS", "metadata"] {
        assert!(!run.stderr.contains(wrong), "{wrong}: {}", run.both());
    }
    assert_eq!(
        probes.load(Ordering::SeqCst),
        0,
        "the metadata service was asked"
    );

    // Configured for it, the chain does ask (so the count above can tell).
    let run = s3_plan_without_credentials(&root, &imds, &[("AWS_EC2_METADATA_DISABLED", "false")]);
    run.code(1);
    assert!(probes.load(Ordering::SeqCst) > 0, "{}", run.both());

    // A metadata service that forbids the request is a failure to load credentials, not
    // a refusal of them: nothing was sent to the store.
    let forbidding = forbidding_listener();
    let run = s3_plan_without_credentials(
        &root,
        &forbidding,
        &[("AWS_EC2_METADATA_DISABLED", "false")],
    );
    run.code(1);
    assert!(
        run.stderr
            .contains("could not load credentials for s3://cairn-test/risk")
            && run.stderr.contains("was not contacted"),
        "{}",
        run.both()
    );
    assert!(!run.stderr.contains("refused"), "{}", run.both());
    assert!(
        run.stderr
            .contains("hint: a credentials provider of the chain failed"),
        "{}",
        run.both()
    );
}

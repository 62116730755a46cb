//! The engine on an S3 store: the same flow as on the folder store, through the real
//! binary and a real S3 server (s3s-fs, SigV4 checked): apply, no changes, the data → run
//! chain, the journal; a wrong secret is a clear error that never shows the secret.

use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;

use crate::s3_server::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use crate::support::{manifests, Job, Root, Run};

/// The fixture with its workspace's store on the server, under `risk/`.
fn s3_root(server: &S3Server) -> Root {
    let root = manifests(&Job::default());
    root.write(
        "risk/workspace.toml",
        &format!(
            "[workspace]\nenvironment = \"dev\"\nstore = \"s3://{BUCKET}/risk\"\n\
             endpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\n",
            server.endpoint()
        ),
    );
    root
}

/// `cairn <args>` with the AWS chain's environment credentials.
fn cairn(root: &Root, args: &[&str], secret: &str) -> Run {
    let mut cmd = root.command(args);
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    Run::from(cmd.output().expect("cairn runs"), started.elapsed())
}

#[test]
fn apply_plan_and_the_data_chain_work_on_an_s3_store() {
    let server = S3Server::start_serialized();
    let root = s3_root(&server);
    let first = cairn(&root, &["apply", "ROOT", "--auto-approve"], SECRET_KEY);
    first.ok();
    let files = server.files();
    for expected in [
        "risk/datasets/loans/",
        "risk/models/scorer/",
        "risk/runs/train/",
        "risk/.cairn/journal/",
        "risk/.cairn/state.json",
    ] {
        assert!(
            files.iter().any(|f| f.contains(expected)),
            "{expected} in {files:?}"
        );
    }
    assert!(
        !root.store().exists(),
        "nothing was written to the folder store"
    );

    cairn(&root, &["plan", "ROOT", "--detailed-exitcode"], SECRET_KEY).code(0);
    root.edit_row(40000);
    let plan = cairn(&root, &["plan", "ROOT", "--detailed-exitcode"], SECRET_KEY);
    plan.code(2);
    assert!(
        plan.stdout.contains("~ risk/dataset.loans"),
        "{}",
        plan.both()
    );
    assert!(plan.stdout.contains("▶ risk/job.train"), "{}", plan.both());
    cairn(&root, &["apply", "ROOT", "--auto-approve"], SECRET_KEY).ok();
    cairn(&root, &["plan", "ROOT", "--detailed-exitcode"], SECRET_KEY).code(0);

    let history = cairn(&root, &["history", "ROOT", "--format", "json"], SECRET_KEY);
    history.ok();
    let records: Value = serde_json::from_str(&history.stdout).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(records.iter().all(|r| r["success"] == true));
}

#[test]
fn a_wrong_secret_is_a_clear_error_that_never_shows_it() {
    let server = S3Server::start();
    let root = s3_root(&server);
    let secret = "CAIRNSECRETDONOTPRINT1234";
    for args in [
        &["plan", "ROOT"][..],
        &["apply", "ROOT", "--auto-approve"][..],
        &["status", "ROOT"][..],
        &["history", "ROOT"][..],
    ] {
        let run = cairn(&root, args, secret);
        run.code(1);
        assert!(!run.both().contains(secret), "{args:?}: {}", run.both());
        assert!(
            run.stderr.contains(BUCKET) || run.stderr.contains(&server.endpoint()),
            "{args:?} names the bucket or endpoint: {}",
            run.both()
        );
    }
}

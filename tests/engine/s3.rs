//! The engine on an S3 store: the same flow as on the folder store, through the real
//! binary and a real S3 server (s3s-fs, SigV4 checked): apply, no changes, the data → run
//! chain, the journal; a wrong secret is a clear error that never shows the secret.

use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;

use crate::s3_server::{aws_credentials, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
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
    aws_credentials(&mut cmd, secret)
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

/// The S3 server dies while a large file is going up as a multipart upload and comes back
/// a second later: applying again converges, the version holds the right bytes, and no
/// half-uploaded version was ever visible.
#[test]
fn an_apply_converges_after_the_server_dies_mid_upload() {
    let mut server = S3Server::start();
    let root = s3_root(&server);
    // 96 MiB in one file: a multipart upload of 12 parts.
    let big = root.path().join("risk/data/loans/big.bin");
    let mut bytes = vec![0u8; 96 << 20];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for chunk in bytes.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&big, &bytes).unwrap();
    let expected = crate::support::sha256_file(&big);

    // A short lease: an apply that dies with the server may not release its lock.
    let mut cmd = root.command(&["apply", "ROOT", "--auto-approve", "--lock-lease", "2s"]);
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let apply = cmd.spawn().unwrap();
    // Kill the server once the large upload is under way: small files go first, then
    // the large one (a fraction of a second here).
    let started = Instant::now();
    while !server.files().iter().any(|f| f.ends_with("loans.csv")) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the upload never started: {:?}",
            server.files()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    server.kill();
    let no_marker = !server
        .files()
        .iter()
        .any(|f| f.contains("datasets/loans/") && f.ends_with("_version.json"));
    assert!(
        no_marker,
        "no version is visible before its files: {:?}",
        server.files()
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    server.restart();
    let first = crate::support::wait_with_deadline(apply, std::time::Duration::from_secs(120));

    // Whatever the interrupted apply managed, applying again converges.
    if first.code != 0 {
        cairn(
            &root,
            &["apply", "ROOT", "--auto-approve", "--lock-timeout", "20s"],
            SECRET_KEY,
        )
        .ok();
    }
    cairn(&root, &["plan", "ROOT", "--detailed-exitcode"], SECRET_KEY).code(0);
    let stored: Vec<String> = server
        .files()
        .into_iter()
        .filter(|f| f.contains("datasets/loans/") && f.ends_with("big.bin"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        crate::support::sha256_file(&server.data_dir().join(&stored[0])),
        expected
    );
}

/// On an S3 store the apply needs its AWS credentials; its job gets none of them. A
/// sparse input, which S3 sends with its holes written out, takes the run folder the disk
/// of its data only.
#[test]
fn on_an_s3_store_a_job_gets_no_aws_credential_and_sparse_inputs_stay_sparse() {
    let server = S3Server::start_serialized();
    let root = s3_root(&server);
    let report = root.scratch().join("job.txt");
    root.set_job(&Job::script(format!(
        "env > {r}.env\nstat -c '%b %B %s' \"$1/disk.img\" > {r}.alloc\necho ok > \"$2/model.bin\"",
        r = report.display()
    )));
    let image = root.path().join("risk/data/loans/disk.img");
    {
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"boot", 0).unwrap();
    }
    cairn(&root, &["apply", "ROOT", "--auto-approve"], SECRET_KEY).ok();
    let env = std::fs::read_to_string(report.with_extension("txt.env")).unwrap();
    assert!(!env.contains(SECRET_KEY), "{env}");
    assert!(!env.contains(ACCESS_KEY), "{env}");
    assert!(!env.contains("AWS_"), "{env}");
    let alloc = std::fs::read_to_string(report.with_extension("txt.alloc")).unwrap();
    let fields: Vec<u64> = alloc
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields[2], 64 << 20, "{alloc}");
    assert!(
        fields[0] * fields[1] < 4 << 20,
        "the input copy takes {alloc}"
    );
}

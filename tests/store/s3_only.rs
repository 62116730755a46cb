//! Behaviour only the S3 store has, against a real `s3s-fs`: typed errors for refused
//! credentials, a missing bucket and an unreachable endpoint (never showing a secret),
//! multipart uploads, a server killed mid-upload, and independent clients and processes
//! racing for the lock.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn::backend::store::{
    Condition, Error, ObjectStore, S3Store, Store, StoreOptions, PART_SIZE,
};

use super::s3_server::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

/// Recognisable credentials that must never appear in a message.
const FAKE_SECRET: &str = "CAIRNSECRETDONOTPRINT1234";
const FAKE_TOKEN: &str = "CAIRNTOKENDONOTPRINT5678";

const LEASE: Duration = Duration::from_secs(60);

fn assert_no_secret(what: &str, text: &str) {
    for secret in [FAKE_SECRET, FAKE_TOKEN, SECRET_KEY] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

/// Bytes that don't repeat with a short period, so a shifted or truncated copy differs.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs every object operation once; returns each one's error (`None` if it succeeded).
async fn every_operation(store: &dyn ObjectStore, scratch: &Path) -> Vec<(&'static str, Error)> {
    let source = scratch.join("source");
    std::fs::write(&source, b"bytes").unwrap();
    let dest = scratch.join("dest");
    let results: Vec<(&'static str, Result<(), Error>)> = vec![
        ("get", store.get("k").await.map(|_| ())),
        (
            "put",
            store
                .put("k", Bytes::from_static(b"x"), Condition::None)
                .await
                .map(|_| ()),
        ),
        (
            "put IfAbsent",
            store
                .put("k", Bytes::from_static(b"x"), Condition::IfAbsent)
                .await
                .map(|_| ()),
        ),
        ("put_file", store.put_file("k", &source).await.map(|_| ())),
        ("get_file", store.get_file("k", &dest).await),
        ("list", store.list("").await.map(|_| ())),
        ("delete", store.delete("k", Condition::None).await),
    ];
    assert!(!dest.exists(), "a failed get_file left a file");
    results
        .into_iter()
        .map(|(op, r)| match r {
            Ok(()) => panic!("{op} succeeded against {}", store.url()),
            Err(e) => (op, e),
        })
        .collect()
}

/// Wrong secrets, unknown keys and session tokens are refused with
/// [`Error::Credentials`], which names the store and gives a hint; neither it nor any
/// `Debug` output shows the secret key or the session token.
#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_are_typed_and_never_show_the_secret() {
    let server = S3Server::start();
    let scratch = tempfile::tempdir().unwrap();
    for (case, access_key, token) in [
        ("wrong secret", ACCESS_KEY, None),
        (
            "wrong secret and a session token",
            ACCESS_KEY,
            Some(FAKE_TOKEN),
        ),
        ("unknown access key", "AKIDCAIRNUNKNOWN", None),
    ] {
        let store = S3Store::new(&format!("s3://{BUCKET}/p"), &server.options())
            .unwrap()
            .with_credentials(access_key, FAKE_SECRET, token);
        assert_no_secret("the store's Debug", &format!("{store:?}"));
        for (op, e) in every_operation(&store, scratch.path()).await {
            assert!(
                matches!(e, Error::Credentials { .. }),
                "{case}, {op}: expected Credentials, got {e:?}"
            );
            let message = e.to_string();
            assert!(message.contains(BUCKET), "{case}, {op}: {message}");
            assert!(message.contains(&server.endpoint()), "{message}");
            assert!(message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
            assert_no_secret(&format!("{case}, {op}: the message"), &message);
            assert_no_secret(&format!("{case}, {op}: Debug"), &format!("{e:?}"));
        }
        // `head` gets no error body from S3: it still tells refused credentials apart.
        let e = store.head("k").await.unwrap_err();
        assert!(
            matches!(e, Error::Credentials { .. }),
            "{case}, head: {e:?}"
        );
        assert_no_secret("head", &format!("{e} {e:?}"));

        let layered = Store::new(Arc::new(store));
        let e = layered
            .try_lock("alice@ci", "cairn apply", LEASE)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Credentials { .. }), "{case}: {e:?}");
        assert_no_secret("try_lock", &format!("{e} {e:?} {layered:?}"));
    }
    // Nothing got in.
    assert!(server.store("p").list("").await.unwrap().is_empty());
}

/// A bucket that does not exist is [`Error::NoSuchBucket`], naming it and the endpoint,
/// for every operation (s3s-fs alone would answer `NoSuchKey` to a `GET`, and create
/// the bucket on a `PUT`: the store looks the bucket up first).
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_typed() {
    let server = S3Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let store = S3Store::new("s3://no-such-bucket/p", &server.options())
        .unwrap()
        .with_credentials(ACCESS_KEY, SECRET_KEY, None);
    let head = store.head("k").await.map(|_| ()).unwrap_err();
    for (op, e) in every_operation(&store, scratch.path())
        .await
        .into_iter()
        .chain([("head", head)])
    {
        match &e {
            Error::NoSuchBucket { bucket, endpoint } => {
                assert_eq!(bucket, "no-such-bucket", "{op}");
                assert_eq!(endpoint, &server.endpoint(), "{op}");
            }
            other => panic!("{op}: expected NoSuchBucket, got {other:?}"),
        }
        let message = e.to_string();
        assert!(
            message.contains("`no-such-bucket` does not exist"),
            "{message}"
        );
        assert!(message.contains(&server.endpoint()), "{message}");
        assert_no_secret(op, &format!("{e} {e:?}"));
    }
    assert!(
        !server.data_dir().join("no-such-bucket").exists(),
        "a write created the bucket"
    );
}

/// An endpoint nobody listens on is [`Error::Unreachable`], after the retries, quickly.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_typed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let options = StoreOptions {
        endpoint: Some(endpoint.clone()),
        region: None,
        path_style: None,
        ..StoreOptions::default()
    };
    let store = Store::new(Arc::new(
        S3Store::new(&format!("s3://{BUCKET}/p"), &options)
            .unwrap()
            .with_credentials(ACCESS_KEY, SECRET_KEY, None),
    ));
    let started = Instant::now();
    let e = store.state().await.unwrap_err();
    match &e {
        Error::Unreachable {
            endpoint: named, ..
        } => assert_eq!(named, &endpoint),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let message = e.to_string();
    assert!(message.contains(&endpoint), "{message}");
    assert!(message.contains("`endpoint`"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(store.url(), format!("s3://{BUCKET}/p (at {endpoint})"));
}

/// `put_file` sends one `PUT` up to [`PART_SIZE`] and a multipart upload above it; both
/// come back byte for byte, and the metadata it returns is the object's.
#[tokio::test(flavor = "multi_thread")]
async fn multipart_uploads_round_trip() {
    let server = S3Server::start();
    let store = server.store("multipart");
    let scratch = tempfile::tempdir().unwrap();
    let part = PART_SIZE as usize;
    for (i, len) in [part, part + 1, 3 * part + 12_345].into_iter().enumerate() {
        let source = scratch.path().join(format!("in-{i}"));
        let body = pseudo_random(len, i as u64);
        std::fs::write(&source, &body).unwrap();
        let key = format!("blobs/{i}.bin");
        let meta = store.put_file(&key, &source).await.unwrap();
        assert_eq!(meta.size, len as u64);
        assert_eq!(store.head(&key).await.unwrap(), Some(meta.clone()));
        let dest = scratch.path().join(format!("out-{i}"));
        store.get_file(&key, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == body, "{len} bytes differ");
    }
    // No upload left behind: the parts were assembled into the objects.
    let leftovers: Vec<String> = server
        .files()
        .into_iter()
        .filter(|f| f.contains("upload"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Waits until the server holds a part of an unfinished multipart upload.
async fn wait_for_a_part(server: &S3Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.files().iter().any(|f| f.contains(".part-")) {
        assert!(Instant::now() < deadline, "no part was uploaded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The server is killed in the middle of a multipart upload. Left down, the upload fails
/// (after its retries) and no object, whole or partial, is visible once it is back; a
/// retried `put_file` then stores the whole file. Killed and restarted at once, the
/// retries ride the restart out.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_upload() {
    let mut server = S3Server::start();
    let store = Arc::new(server.store("crash"));
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("model.safetensors");
    let body = pseudo_random(6 * PART_SIZE as usize + 777, 42);
    std::fs::write(&source, &body).unwrap();
    let key = "models/m/v1/model.safetensors";
    // An earlier object under a sibling key, to see that a listing shows only whole ones.
    store
        .put(
            "models/m/v1/README",
            Bytes::from_static(b"v1"),
            Condition::None,
        )
        .await
        .unwrap();

    // Killed and left down.
    let upload = {
        let store = store.clone();
        let source = source.clone();
        tokio::spawn(async move { store.put_file(key, &source).await })
    };
    wait_for_a_part(&server).await;
    server.kill();
    let e = upload.await.unwrap().unwrap_err();
    assert!(
        matches!(e, Error::Unreachable { .. }),
        "expected Unreachable, got {e:?}"
    );
    server.restart();
    assert!(store.head(key).await.unwrap().is_none(), "a partial object");
    let keys: Vec<String> = store
        .list("models/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["models/m/v1/README"]);

    // The retry converges.
    let meta = store.put_file(key, &source).await.unwrap();
    assert_eq!(meta.size, body.len() as u64);
    let dest = scratch.path().join("fetched");
    store.get_file(key, &dest).await.unwrap();
    assert!(
        std::fs::read(&dest).unwrap() == body,
        "the stored file differs"
    );

    // Killed and restarted at once: the same put_file survives.
    let key2 = "models/m/v2/model.safetensors";
    let upload = {
        let store = store.clone();
        let source = source.clone();
        tokio::spawn(async move { store.put_file(key2, &source).await })
    };
    wait_for_a_part(&server).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();
    let meta = upload
        .await
        .unwrap()
        .expect("the upload should survive a restart");
    assert_eq!(meta.size, body.len() as u64);
    store.get_file(key2, &dest).await.unwrap();
    assert!(
        std::fs::read(&dest).unwrap() == body,
        "the stored file differs"
    );
}

/// A conditional write that lands but whose answer is lost (here: answered 500 after
/// the server made it) is retried; the retry fails its condition against the write
/// itself, and the store recognises its own bytes instead of reporting a conflict. Other
/// writers' bytes still fail the condition.
#[tokio::test(flavor = "multi_thread")]
async fn a_conditional_write_whose_answer_is_lost() {
    let server = S3Server::start_serialized();
    let store = Store::new(Arc::new(server.store("lost")));

    server.lose_next_write_answers(1);
    let guard = store
        .try_lock("alice@ci", "cairn apply", LEASE)
        .await
        .expect("the lock this client wrote is its own");
    assert_eq!(store.lock_info().await.unwrap().unwrap().0, guard.info);

    server.lose_next_write_answers(1);
    let mut guard = guard;
    store.renew_lock(&mut guard).await.unwrap();
    assert_eq!(store.lock_info().await.unwrap().unwrap().0, guard.info);
    store.unlock(guard).await.unwrap();

    let objects = store.objects();
    server.lose_next_write_answers(1);
    objects
        .put("once", Bytes::from_static(b"mine"), Condition::IfAbsent)
        .await
        .unwrap();
    match objects
        .put("once", Bytes::from_static(b"other"), Condition::IfAbsent)
        .await
    {
        Err(Error::PreconditionFailed { .. }) => {}
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
}

/// Independent clients (each its own S3 client and store value) race for the lock of one
/// store: exactly one wins, every other is told who holds it. (Behind the front that
/// makes s3s-fs's conditional writes atomic; without it, several win.)
#[tokio::test(flavor = "multi_thread")]
async fn independent_clients_race_for_the_lock() {
    let server = S3Server::start_serialized();
    for round in 0..5 {
        let prefix = format!("race-{round}");
        let n = 8;
        let barrier = Arc::new(tokio::sync::Barrier::new(n));
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let store = Store::new(Arc::new(server.store(&prefix)));
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    // Connected before the start, so the race is on the lock alone.
                    store.state().await.unwrap();
                    barrier.wait().await;
                    store
                        .try_lock(&format!("client-{i}@host"), "cairn apply", LEASE)
                        .await
                })
            })
            .collect();
        let mut won = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(guard) => won.push(guard.info),
                Err(Error::Locked { .. }) => {}
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        let held = Store::new(Arc::new(server.store(&prefix)))
            .lock_info()
            .await
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(held, won[0], "round {round}");
    }
}

/// Set by [`two_processes_race_for_the_lock`] for the processes it starts.
const CONTENDER_ENV: &str = "CAIRN_TEST_LOCK_CONTENDER";

/// Not a test on its own: one contender of [`two_processes_race_for_the_lock`], run in
/// a process of its own. Takes `<endpoint> <prefix> <start, unix ms> <name>` from
/// `CAIRN_TEST_LOCK_CONTENDER` and prints `won` or `lost`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by two_processes_race_for_the_lock"]
async fn lock_contender() {
    let Ok(spec) = std::env::var(CONTENDER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [endpoint, prefix, start, name] = parts[..] else {
        panic!("bad {CONTENDER_ENV}: {spec}");
    };
    let options = StoreOptions {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        path_style: Some(true),
        ..StoreOptions::default()
    };
    let store = Store::new(Arc::new(
        S3Store::new(&format!("s3://{BUCKET}/{prefix}"), &options)
            .unwrap()
            .with_credentials(ACCESS_KEY, SECRET_KEY, None),
    ));
    store.state().await.unwrap();
    let start: u128 = start.parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    tokio::time::sleep(Duration::from_millis(start.saturating_sub(now) as u64)).await;
    match store
        .try_lock(&format!("{name}@host"), "cairn apply", LEASE)
        .await
    {
        Ok(_) => println!("CONTENDER {name} won"),
        Err(Error::Locked { holder, .. }) => println!("CONTENDER {name} lost to {holder}"),
        Err(e) => panic!("{e:?}"),
    }
}

/// Two processes, each with its own client, race for the lock of one store at the same
/// instant: exactly one wins. (Behind the front, as above.)
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_race_for_the_lock() {
    let server = S3Server::start_serialized();
    let exe = std::env::current_exe().unwrap();
    for round in 0..4 {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 1500;
        let children: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                std::process::Command::new(&exe)
                    .args([
                        "s3_only::lock_contender",
                        "--exact",
                        "--ignored",
                        "--nocapture",
                    ])
                    .env(
                        CONTENDER_ENV,
                        format!("{} race-{round} {start} {name}", server.endpoint()),
                    )
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut lines = Vec::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "a contender failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            lines.extend(
                stdout
                    .lines()
                    .filter(|l| l.starts_with("CONTENDER"))
                    .map(str::to_string),
            );
        }
        let won = lines.iter().filter(|l| l.ends_with("won")).count();
        assert_eq!(lines.len(), 2, "round {round}: {lines:?}");
        assert_eq!(won, 1, "round {round}: {lines:?}");
    }
}

/// What the user reads for each kind of failure (ports filtered out).
#[tokio::test(flavor = "multi_thread")]
async fn error_messages() {
    let server = S3Server::start();
    let url = format!("s3://{BUCKET}/team");
    let mut messages = Vec::new();
    for (access_key, secret) in [(ACCESS_KEY, FAKE_SECRET), ("AKIDCAIRNUNKNOWN", FAKE_SECRET)] {
        let store = S3Store::new(&url, &server.options())
            .unwrap()
            .with_credentials(access_key, secret, None);
        messages.push(store.get("k").await.unwrap_err().to_string());
    }
    let missing = S3Store::new("s3://no-such-bucket/team", &server.options())
        .unwrap()
        .with_credentials(ACCESS_KEY, SECRET_KEY, None);
    messages.push(missing.get("k").await.unwrap_err().to_string());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = StoreOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..StoreOptions::default()
    };
    let unreachable = S3Store::new(&url, &closed)
        .unwrap()
        .with_credentials(ACCESS_KEY, SECRET_KEY, None);
    messages.push(unreachable.get("k").await.unwrap_err().to_string());
    let store = server.store("team");
    store
        .put("k", Bytes::from_static(b"1"), Condition::IfAbsent)
        .await
        .unwrap();
    messages.push(
        store
            .put("k", Bytes::from_static(b"2"), Condition::IfAbsent)
            .await
            .unwrap_err()
            .to_string(),
    );
    for url in ["s3://Bad_Bucket/x", "s3://bucket/a/../b", "gs://bucket/x"] {
        messages.push(
            Store::open_with(url, Path::new("/"), &StoreOptions::default())
                .unwrap_err()
                .to_string(),
        );
    }
    for message in &messages {
        assert_no_secret("a message", message);
    }
    insta::with_settings!({filters => vec![(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT")]}, {
        insta::assert_snapshot!(messages.join("\n"));
    });
}

/// The process's peak resident memory so far (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Not a timed test: a measurement. Uploads and downloads a file (256 MiB, or
/// `CAIRN_THROUGHPUT_MIB`) against s3s-fs and prints the times and the peak memory:
/// `cargo test --test store -- --ignored s3_only::throughput --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn throughput() {
    let mib: usize = std::env::var("CAIRN_THROUGHPUT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let server = S3Server::start();
    let store = server.store("throughput");
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("big.bin");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        let block = pseudo_random(1024 * 1024, 9);
        for i in 0..mib {
            // Every MiB differs, so no part is a copy of another.
            let mut block = block.clone();
            block[..8].copy_from_slice(&(i as u64).to_le_bytes());
            file.write_all(&block).unwrap();
        }
    }
    let before = peak_rss_mib();
    let started = Instant::now();
    let meta = store.put_file("big.bin", &source).await.unwrap();
    let put = started.elapsed();
    let after_put = peak_rss_mib();
    let dest = scratch.path().join("back.bin");
    let started = Instant::now();
    store.get_file("big.bin", &dest).await.unwrap();
    let get = started.elapsed();
    assert_eq!(meta.size, (mib * 1024 * 1024) as u64);
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), meta.size);
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    println!(
        "THROUGHPUT {mib} MiB: put_file {put:.2?} ({:.0} MiB/s), get_file {get:.2?} ({:.0} MiB/s); \
         peak RSS {before:?} MiB before, {after_put:?} MiB after the upload",
        rate(put),
        rate(get)
    );
}

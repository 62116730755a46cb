//! Dataset transfer to an S3 store, side by side with `aws s3 sync`, against the same
//! local S3 server in one run (`cargo bench --bench s3sync`):
//!
//! 1. First upload of a generated dataset (1,000 files, 256 MiB by default): `cairn apply`
//!    (dataset version, manifests → store) vs `aws s3 sync` of the same folder. Wall time
//!    and peak memory (through `/usr/bin/time`).
//! 2. Re-sync of the unchanged dataset: `cairn plan` (nothing to do) vs `aws s3 sync`
//!    again, and the S3 requests each made (counted by the server's access log lines).
//!
//! Needs `s3s-fs` (installed by `.ci/run`) and `aws` (awscli from PyPI) on `PATH`.
//! Sizes: `CAIRN_BENCH_FILES` (1000), `CAIRN_BENCH_MB` (256).
//!
//! The dataset is on disk; the server keeps its objects in memory (`/dev/shm`, or the
//! folder `CAIRN_BENCH_S3_DIR` names; a temporary folder where neither exists). On disk,
//! the server's file system can decide the first upload by itself: s3s-fs creates two
//! files per object, all in one folder and so one after the other, and on ext4 without a
//! journal each creation first skips every inode freed in the last minute or more. After
//! thousands of deletions (this bench's own clean-up, a test suite's) 2,000 creations
//! take seconds whatever the client, which measures the disk, not the tools.

#[macro_use]
mod support;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");
const ACCESS_KEY: &str = "AKBENCHCAIRN";
const SECRET_KEY: &str = "SKBENCHCAIRNSECRET";

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(root: &Path, log: &Path, logging: bool) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(root.join("bench")).unwrap();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("s3s-fs")
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg(root)
        .env(
            "RUST_LOG",
            if logging { "s3s::service=debug" } else { "off" },
        )
        .env("NO_COLOR", "1")
        // The server logs (one line per request at debug level) on stdout.
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start s3s-fs ({e}); `.ci/run` installs it"));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "s3s-fs did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port }
}

fn with_env(cmd: &mut Command, port: u16) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
}

/// Runs a command under `/usr/bin/time`; returns wall time, peak RSS in MiB, and output.
fn measure(cmd: Command) -> (Duration, Option<f64>, String) {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let timed = Path::new("/usr/bin/time").exists();
    let mut run = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f").arg("PEAK_KB %M").arg(&program).args(&args);
        c
    } else {
        let mut c = Command::new(&program);
        c.args(&args);
        c
    };
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => run.env(k, v),
            None => run.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        run.current_dir(dir);
    }
    let started = Instant::now();
    let out = run.stdin(Stdio::null()).output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_KB "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0);
    let text = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{program:?} failed:\n{text}");
    (took, peak, text)
}

/// S3 requests the server logged since `from` bytes of its log.
fn requests_since(log: &Path, from: usize) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let new = &text[from.min(text.len())..];
    // s3s logs one `req: Request { method: M, uri: U, ...` line per request at debug level.
    let requests: Vec<&str> = new
        .lines()
        .filter_map(|l| l.split_once("req: Request { method: ").map(|(_, r)| r))
        .collect();
    let reads = requests
        .iter()
        .filter(|r| {
            let uri = r.split_once("uri: ").map_or("", |(_, u)| u);
            let uri = uri.split([',', ' ']).next().unwrap_or("");
            // Object reads: GET or HEAD of a key (not of the bucket, not a listing).
            let is_object = uri.trim_matches('/').contains('/');
            (r.starts_with("HEAD") || r.starts_with("GET")) && is_object && !uri.contains('?')
        })
        .count();
    (requests.len(), reads)
}

/// What one pass measured.
struct Figures {
    cairn_first: Duration,
    cairn_peak: Option<f64>,
    aws_first: Duration,
    aws_peak: Option<f64>,
    cairn_again: Duration,
    aws_again: Duration,
    /// Requests (all, object reads): first upload and re-sync, cairn then aws.
    requests: [(usize, usize); 4],
}

/// Where the server's objects go (see the module's doc).
fn storage_parent(tmp: &Path) -> PathBuf {
    match std::env::var_os("CAIRN_BENCH_S3_DIR") {
        Some(dir) => PathBuf::from(dir),
        None if Path::new("/dev/shm").is_dir() => "/dev/shm".into(),
        None => tmp.to_path_buf(),
    }
}

/// A fresh folder for the server's objects, removed when dropped.
fn server_storage(tmp: &Path) -> tempfile::TempDir {
    let parent = storage_parent(tmp);
    tempfile::Builder::new()
        .prefix("cairn-s3sync-")
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("cannot make a folder in {}: {e}", parent.display()))
}

/// The load average over the last minute, for the record.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "n/a".into())
}

/// Uploads with both tools, then re-syncs, against a fresh server; with `logging`, the
/// server logs each request (which slows it down: the timed pass runs without).
fn pass(tmp: &Path, root: &Path, data: &Path, logging: bool) -> Figures {
    let dir = tmp.join(if logging { "counted" } else { "timed" });
    let log = dir.join("s3s-fs.log");
    std::fs::create_dir_all(&dir).unwrap();
    let storage = server_storage(tmp);
    let server = start_server(storage.path(), &log, logging);
    let port = server.port;
    // A fresh start for cairn too: no state, no hash cache.
    let _ = std::fs::remove_dir_all(root.join(".cairn"));
    std::fs::write(
        root.join("bench/workspace.toml"),
        format!(
            "[workspace]\nenvironment = \"dev\"\nstore = \"s3://bench/cairn\"\n\
             endpoint = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\npath_style = true\n"
        ),
    )
    .unwrap();
    let cairn = |args: &[&str]| {
        let mut c = Command::new(CAIRN);
        c.args(args).arg(root);
        with_env(&mut c, port);
        c
    };
    // The peer, left out of a smoke run (its figures read 0).
    let with_aws = !support::smoke();
    let aws = || {
        let mut c = Command::new("aws");
        c.args(["s3", "sync"])
            .arg(data)
            .args(["s3://bench/awscli/", "--only-show-errors"]);
        with_env(&mut c, port);
        c
    };
    let mark = || std::fs::metadata(&log).map_or(0, |m| m.len() as usize);

    // Each tool starts with nothing dirty in the page cache: writing back the generated
    // data (or the other tool's upload) would otherwise land on whoever runs next.
    let settle = || {
        let _ = Command::new("sync").status();
    };
    settle();
    let m = mark();
    let (cairn_first, cairn_peak, _) = measure(cairn(&["apply", "--auto-approve"]));
    settle();
    let r0 = requests_since(&log, m);
    let m = mark();
    let (aws_first, aws_peak, _) = if with_aws {
        measure(aws())
    } else {
        (Duration::ZERO, None, String::new())
    };
    let r1 = requests_since(&log, m);
    settle();
    // Re-sync: the plan finds the dataset unchanged (an apply would also take and release
    // the lock: two more small requests).
    let m = mark();
    let (cairn_again, _, out) = measure(cairn(&["plan"]));
    let r2 = requests_since(&log, m);
    assert!(out.contains("No changes"), "{out}");
    let m = mark();
    let (aws_again, _, _) = if with_aws {
        measure(aws())
    } else {
        (Duration::ZERO, None, String::new())
    };
    let r3 = requests_since(&log, m);
    drop(server);
    drop(storage);
    Figures {
        cairn_first,
        cairn_peak,
        aws_first,
        aws_peak,
        cairn_again,
        aws_again,
        requests: [r0, r1, r2, r3],
    }
}

fn main() {
    let files = support::knob("CAIRN_BENCH_FILES", 1000, 16);
    let mb = support::knob("CAIRN_BENCH_MB", 256, 1);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");

    // The dataset: `files` files of pseudo-random bytes, `mb` MiB in all.
    let data = root.join("bench/data/big");
    std::fs::create_dir_all(&data).unwrap();
    let size = mb * 1024 * 1024 / files;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..files {
        let mut bytes = vec![0u8; size];
        for chunk in bytes.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        let dir = data.join(format!("shard-{:02}", i % 16));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::File::create(dir.join(format!("part-{i:05}.bin")))
            .unwrap()
            .write_all(&bytes)
            .unwrap();
    }
    std::fs::write(
        root.join("bench/data.toml"),
        "[dataset.big]\nsource = \"data/big/\"\nformat = \"parquet\"\n",
    )
    .unwrap();
    figure!(
        "s3sync: {files} files, {} MiB, against s3s-fs on loopback (objects under {})",
        size * files / (1024 * 1024),
        storage_parent(tmp.path()).display()
    );

    if support::smoke() {
        figure!("(smoke run: aws s3 sync not measured)");
    }
    let load_before = load_average();
    let timed = pass(tmp.path(), &root, &data, false);
    let load_after = load_average();
    let counted = pass(tmp.path(), &root, &data, true);

    let mib = |p: Option<f64>| p.map_or("n/a".into(), |v| format!("{v:.0} MiB"));
    let [r0, r1, r2, r3] = counted.requests;
    figure!();
    figure!("                                   cairn            aws s3 sync");
    figure!(
        "first upload, wall                 {:>9.2} s      {:>9.2} s   ({:.1}x)",
        timed.cairn_first.as_secs_f64(),
        timed.aws_first.as_secs_f64(),
        timed.aws_first.as_secs_f64() / timed.cairn_first.as_secs_f64()
    );
    figure!(
        "first upload, peak memory          {:>11}      {:>11}",
        mib(timed.cairn_peak),
        mib(timed.aws_peak)
    );
    figure!(
        "first upload, S3 requests          {:>11}      {:>11}",
        r0.0,
        r1.0
    );
    figure!(
        "unchanged re-sync, wall            {:>9.3} s      {:>9.3} s",
        timed.cairn_again.as_secs_f64(),
        timed.aws_again.as_secs_f64()
    );
    figure!(
        "unchanged re-sync, S3 requests     {:>11}      {:>11}",
        r2.0,
        r3.0
    );
    figure!(
        "unchanged re-sync, object reads    {:>11}      {:>11}",
        r2.1,
        r3.1
    );
    figure!(
        "(requests counted in a second pass with the server logging each one; wall times from the first, without)"
    );
    figure!(
        "(load average over 1 minute: {load_before} before the timed pass, {load_after} after)"
    );
    let _ = counted.cairn_first;
    let _ = (
        counted.aws_first,
        counted.cairn_again,
        counted.aws_again,
        counted.cairn_peak,
        counted.aws_peak,
    );
    support::finish();
}

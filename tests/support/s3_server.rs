//! A real S3 server for tests: `s3s-fs` (which checks SigV4 signatures) on a free
//! loopback port, serving a temporary folder with one bucket, [`BUCKET`], and one user
//! ([`ACCESS_KEY`], [`SECRET_KEY`]). Killed when dropped; can be killed and restarted
//! on the same port and data, as a crash would.
//!
//! `.ci/run` installs `s3s-fs`; without it the tests that need it fail (never skip),
//! saying so. `CAIRN_S3S_FS` may name the binary.
//!
//! s3s-fs 0.14 departs from S3 in two ways the store's contract can see:
//! - It checks `If-None-Match` and `If-Match` before it writes, not atomically with the
//!   write: of concurrent conditional `PUT`s that all pass the check, all succeed. AWS
//!   S3 (and MinIO) make the check and the write one step, which the lock and the state
//!   rely on.
//! - It keeps objects as files, so a key that is only a prefix of others (`a` of
//!   `a/b`) is a folder, and reading it answers 500 where S3 answers 404 `NoSuchKey`.
//!
//! [`S3Server::start_serialized`] puts a front on loopback that gives s3s-fs these two
//! S3 behaviours and nothing else: it passes every request through unchanged
//! (signatures included), holds a lock across each write that changes an object
//! (`PUT`, `POST`, `DELETE`; not the upload of a part), shared by reads, and answers
//! 404 `NoSuchKey` to a `GET` or `HEAD` of a folder. Use it for tests of the store's
//! contract; use [`S3Server::start`] (no front) for tests of crashes and errors, which
//! must see the server itself.
//!
//! Include with `#[path = "../support/s3_server.rs"] mod s3_server;`.

#![allow(dead_code)]

use std::future::IntoFuture;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::backend::store::{S3Store, StoreOptions};

pub const BUCKET: &str = "cairn-test";
pub const ACCESS_KEY: &str = "cairn-test-access";
pub const SECRET_KEY: &str = "cairn-test-secret-0123456789";

pub struct S3Server {
    child: Option<Child>,
    /// The port s3s-fs listens on.
    port: u16,
    front: Option<Front>,
    /// `data/` (the served root; the bucket is `data/<BUCKET>`) and `server.log`.
    dir: tempfile::TempDir,
    binary: PathBuf,
}

/// Finds `s3s-fs`: `$CAIRN_S3S_FS`, then `PATH`, then Cargo's bin folder.
fn find_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_S3S_FS") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"));
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("s3s-fs"));
    on_path
        .chain(cargo_bin)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 store tests need `s3s-fs` (a real S3 server) and it is not installed: \
                 run `.ci/run`, or `cargo install s3s-fs --version 0.14.1 --features binary \
                 --locked`, or point CAIRN_S3S_FS at the binary"
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl S3Server {
    /// Starts a server with an empty bucket.
    pub fn start() -> S3Server {
        let binary = find_binary();
        let dir = tempfile::tempdir().expect("temporary folder");
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).expect("bucket folder");
        let mut server = S3Server {
            child: None,
            port: 0,
            front: None,
            dir,
            binary,
        };
        // Another process may take the port between choosing and binding it: try again.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("s3s-fs did not start: {}", server.log());
    }

    /// Starts the process on `self.port`; returns whether it listens.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let mut command = Command::new(&self.binary);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log);
        #[cfg(target_os = "linux")]
        unsafe {
            // Dies with the test process, even when the test panics or is killed.
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start s3s-fs");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts a server with an empty bucket behind a front that makes its conditional
    /// writes atomic (see the module's doc).
    pub fn start_serialized() -> S3Server {
        let mut server = S3Server::start();
        server.front = Some(Front::start(server.port, server.data_dir()));
        server
    }

    /// Makes the front answer the next `n` writes with a 500 after s3s-fs made them, as
    /// if their answers were lost. Needs [`S3Server::start_serialized`].
    pub fn lose_next_write_answers(&self, n: usize) {
        let front = self.front.as_ref().expect("a server with a front");
        front
            .state
            .lose_answers
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The port clients connect to (the front's, if there is one).
    pub fn port(&self) -> u16 {
        self.front.as_ref().map_or(self.port, |f| f.port)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            path_style: Some(true),
            ..StoreOptions::default()
        }
    }

    /// The folder the server serves; the bucket is `data_dir()/BUCKET`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A store under `prefix` of the test bucket, with the test user's credentials.
    pub fn store(&self, prefix: &str) -> S3Store {
        S3Store::new(&format!("s3://{BUCKET}/{prefix}"), &self.options())
            .expect("store URL")
            .with_credentials(ACCESS_KEY, SECRET_KEY, None)
    }

    /// Kills the server as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not restart on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Every file under the served folder (objects, metadata, upload parts), relative.
    pub fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if let Ok(rel) = path.strip_prefix(root) {
                    out.push(rel.display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir(), &self.data_dir(), &mut out);
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.front.take();
        self.kill();
    }
}

/// The serializing front: a thread with its own runtime (tests each have theirs, and the
/// server outlives none of them), stopped when dropped.
struct Front {
    port: u16,
    state: Arc<FrontState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct FrontState {
    /// How many of the next writes get a 500 instead of s3s-fs's answer, after s3s-fs
    /// made them: a write that landed and whose answer was lost.
    lose_answers: std::sync::atomic::AtomicUsize,
    upstream: u16,
    /// The folder s3s-fs serves, to tell folders from objects.
    data: PathBuf,
    /// Held exclusively across a write, shared across a read.
    lock: tokio::sync::RwLock<()>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        axum::body::Body,
    >,
}

impl Front {
    fn start(upstream: u16, data: PathBuf) -> Front {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("front port");
        listener.set_nonblocking(true).expect("front socket");
        let port = listener.local_addr().expect("front address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(FrontState {
            lose_answers: std::sync::atomic::AtomicUsize::new(0),
            upstream,
            data,
            lock: tokio::sync::RwLock::new(()),
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        });
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("front runtime");
            runtime.block_on(async move {
                let state = shared;
                let app = axum::Router::new()
                    .fallback(forward)
                    .with_state(state);
                let listener = tokio::net::TcpListener::from_std(listener).expect("front");
                tokio::select! {
                    served = axum::serve(listener, app).into_future() => served.expect("front serves"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection the front still holds.
            runtime.shutdown_background();
        });
        Front {
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn forward(
    axum::extract::State(state): axum::extract::State<Arc<FrontState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;

    let query = request.uri().query().unwrap_or("");
    let upload_part = query.contains("partNumber=") && query.contains("uploadId=");
    let writes = matches!(
        *request.method(),
        Method::PUT | Method::POST | Method::DELETE
    ) && !upload_part;
    let _write;
    let _read;
    if writes {
        _write = state.lock.write().await;
    } else {
        _read = state.lock.read().await;
    }
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    // `/bucket/key…` (path style): a key that is a folder on disk is no object.
    if read {
        let path = request.uri().path().trim_start_matches('/');
        let key = path.split_once('/').map_or("", |(_, key)| key);
        let listing = request
            .uri()
            .query()
            .is_some_and(|q| q.contains("list-type"));
        if !key.is_empty() && !listing && !path.contains('%') && state.data.join(path).is_dir() {
            let body = if *request.method() == Method::HEAD {
                String::new()
            } else {
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
                 <Message>The specified key does not exist.</Message></Error>"
                    .to_string()
            };
            return (
                axum::http::StatusCode::NOT_FOUND,
                [(axum::http::header::CONTENT_TYPE, "application/xml")],
                body,
            )
                .into_response();
        }
    }
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = format!("http://127.0.0.1:{}{path}", state.upstream)
        .parse()
        .expect("upstream URI");
    // The `Host` header stays the client's: it is part of what the client signed.
    match state
        .client
        .request(axum::http::Request::from_parts(parts, body))
        .await
    {
        // s3s-fs has finished the request when it answers; the body of a `GET` is read
        // from a file it already opened.
        Ok(response) => {
            let lose = writes
                && state
                    .lose_answers
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
            if lose {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    [(axum::http::header::CONTENT_TYPE, "application/xml")],
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError\
                     </Code><Message>answer lost by the test front</Message></Error>",
                )
                    .into_response();
            }
            response.map(axum::body::Body::new)
        }
        Err(e) => (
            axum::http::StatusCode::BAD_GATEWAY,
            format!("the front could not reach s3s-fs: {e}"),
        )
            .into_response(),
    }
}

/// Gives a command the test credentials through the AWS chain's environment (with
/// `secret` as the secret key), and nothing from this machine's AWS settings.
pub fn aws_credentials<'c>(cmd: &'c mut Command, secret: &str) -> &'c mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
}

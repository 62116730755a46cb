//! `cairn pod-proxy`: the front door of an endpoint's server in a Kubernetes pod
//! (`templates/kubernetes/deployment.yaml.j2` adds it when the endpoint's `auth` is `key`
//! or `token`, or it has a `monitor`): checks the key, and captures a sample of requests
//! into the workspace store (`captures/<endpoint>/<pod>/`) for `cairn drift`. Runs until
//! SIGTERM or Ctrl-C, then uploads what it captured last. `auth-proxy` is its former
//! name, still accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn::backend::store::{upload_captures, CaptureUpload};
use cairn::workload::pod_proxy::{Error, PodProxy, PodProxyOptions, ProxyCapture};

use super::transfer::StoreArgs;
use super::{CommandError, ErrorKind, Outcome, Output};

/// Capture lines waiting for the uploader; past this, copies are dropped.
const QUEUE: usize = 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on; port 0 picks a free port (printed on stderr).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// The server to pass requests to (in a pod: `127.0.0.1:<port>`).
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,

    /// A file holding the key requests must carry as `Authorization: Bearer <key>` (in a
    /// pod: the endpoint's Secret, mounted). Without it, requests are not authenticated.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// Capture one in every N requests' bodies for input-drift monitoring (needs
    /// `--capture-endpoint` and the store).
    #[arg(long, value_name = "N", requires = "capture_endpoint", value_parser = clap::value_parser!(u32).range(1..))]
    capture_every: Option<u32>,

    /// The endpoint whose requests are captured (`captures/<endpoint>/` in the store).
    #[arg(long, value_name = "NAME", requires = "capture_every")]
    capture_endpoint: Option<String>,

    /// The deployment this pod serves, recorded with each captured request.
    #[arg(long, value_name = "NAME", default_value = "default")]
    capture_deployment: String,

    /// This writer's name in the store (a pod's name: `HOSTNAME` in a pod).
    #[arg(long, env = "HOSTNAME", value_name = "NAME", default_value = "proxy")]
    capture_source: String,

    /// The most this pod's capture files take in the store (the oldest go first).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    capture_max_bytes: u64,

    /// How often captured requests are uploaded, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    capture_flush: u64,

    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let runtime = super::runtime()?;
    let mut uploader = None;
    let capture = match (&args.capture_every, &args.capture_endpoint) {
        (Some(every), Some(endpoint)) => {
            let store = args.store.open()?;
            let (queue, received) = tokio::sync::mpsc::channel(QUEUE);
            let upload = CaptureUpload {
                endpoint: endpoint.clone(),
                source: args.capture_source.clone(),
                max_bytes: args.capture_max_bytes,
                flush: Duration::from_secs(args.capture_flush.max(1)),
            };
            let target = store.url();
            uploader = Some(
                runtime.spawn(upload_captures(store, upload, received, move |e| {
                    eprintln!(
                        "cairn pod-proxy: could not upload captured requests to {target}: {}",
                        cairn::diagnostics::error_chain(e)
                    )
                })),
            );
            Some(ProxyCapture {
                every: *every,
                deployment: args.capture_deployment.clone(),
                queue,
            })
        }
        _ => None,
    };
    let capturing = capture.as_ref().map(|c| c.every);
    let options = PodProxyOptions {
        listen: args.listen,
        upstream: args.upstream,
        key_file: args.key_file,
        capture,
    };
    runtime.block_on(async {
        let shutdown = super::serve::shutdown_signal("cairn pod-proxy")?;
        let proxy = PodProxy::bind(&options).await.map_err(error)?;
        let mut doing = vec![format!("passing requests to http://{}", options.upstream)];
        if options.key_file.is_some() {
            doing.push("with the key only".into());
        }
        if let Some(every) = capturing {
            doing.push(format!("capturing 1 in {every}"));
        }
        eprintln!(
            "cairn pod-proxy: listening on http://{} ({})",
            proxy.local_addr(),
            doing.join(", ")
        );
        let served = proxy.run(shutdown).await.map_err(error);
        // The proxy's queue is gone with it: the uploader sends what is left and ends.
        drop(options);
        if let Some(uploader) = uploader {
            if let Ok(stats) = uploader.await {
                eprintln!(
                    "cairn pod-proxy: uploaded {} captured requests in {} files ({} uploads failed)",
                    stats.lines, stats.files, stats.failed
                );
            }
        }
        served
    })?;
    eprintln!("cairn pod-proxy: stopped");
    Ok(Outcome::Success)
}

fn error(error: Error) -> CommandError {
    let hint = match &error {
        Error::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
            Some("another process listens there; choose another port with `--listen`")
        }
        Error::KeyFile { .. } | Error::EmptyKey { .. } => Some(
            "on Kubernetes the key is the endpoint's Secret `<endpoint>-key`, which apply creates",
        ),
        _ => None,
    };
    let kind = match &error {
        Error::Bind { .. } | Error::Serve(_) => ErrorKind::Target,
        _ => ErrorKind::User,
    };
    CommandError::from_error(kind, &error).hint_opt(hint.map(String::from))
}

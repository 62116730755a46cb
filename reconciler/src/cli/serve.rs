//! `cairn serve`: the model server. Loads `model.safetensors` (Cairn's reference model)
//! or `model.onnx` from a folder and answers the Open Inference Protocol (`/v2/...`),
//! `POST /v1/predict` (the reference model), `GET /healthz` and `GET /metrics` until
//! SIGTERM or Ctrl-C, then finishes the requests in flight and exits 0.
//!
//! Progress goes to stderr, one line per step: the bound address (useful with port 0),
//! readiness, shutdown. A port in use or a model that cannot be loaded exits 1.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use cairn::workload::model_server::{self, ServeOptions, Status};

use super::{CommandError, ErrorKind, Outcome, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model folder, e.g. a model version from the store: holding `model.safetensors`
    /// (Cairn's reference model) or `model.onnx` (any ONNX model).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,

    /// The address to listen on; port 0 picks a free port (printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// The deployment's name, sent in the `x-cairn-deployment` header and in responses.
    #[arg(long, default_value = "default")]
    name: String,

    /// The model version to report. Default: the model folder's name when it looks like
    /// a version (`6b28a728a74d`, `v3`, `1.2.0`), else a hash of the model file.
    /// (`--version` prints Cairn's own version.)
    #[arg(long, value_name = "VERSION")]
    model_version: Option<String>,

    /// The largest request body accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = model_server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// The most rows accepted in one prediction request.
    #[arg(long, value_name = "N", default_value_t = model_server::DEFAULT_MAX_ROWS)]
    max_rows: usize,

    /// The model's name in the Open Inference Protocol's routes
    /// (`/v2/models/NAME/infer`). Default: the deployment's `--name`.
    #[arg(long, value_name = "NAME")]
    model_name: Option<String>,
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let options = ServeOptions {
        model_dir: args.model,
        listen: args.listen,
        name: args.name,
        version: args.model_version,
        max_body_bytes: args.max_body_bytes,
        max_rows: args.max_rows,
        model_name: args.model_name,
    };
    let runtime = super::runtime()?;
    let result = runtime.block_on(async {
        // Handlers first, so that a signal arriving during start-up is not fatal.
        let shutdown = shutdown_signal("cairn serve")?;
        let dir = options.model_dir.clone();
        let name = options.name.clone();
        let server = model_server::bind(options).await.map_err(error)?;
        eprintln!(
            "cairn serve: listening on http://{} (deployment `{name}`), loading the model from {}",
            server.local_addr(),
            dir.display()
        );
        let mut status = server.status();
        tokio::spawn(async move {
            if let Ok(status) = status.wait_for(|s| *s != Status::Loading).await {
                if let Status::Ready { version, features } = &*status {
                    eprintln!(
                        "cairn serve: ready: model version {version}, inputs {}",
                        features.join(", ")
                    );
                }
            }
        });
        server.run(shutdown).await.map_err(error)
    });
    // A model still loading (shutdown during start-up) is not waited for.
    runtime.shutdown_background();
    result?;
    eprintln!("cairn serve: stopped");
    Ok(Outcome::Success)
}

fn error(error: model_server::Error) -> CommandError {
    let hint = match &error {
        model_server::Error::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            Some("another process listens there; choose another port with `--listen`")
        }
        model_server::Error::Load { .. } => {
            Some("the folder must hold a `model.safetensors` written by `cairn train`, or a `model.onnx`")
        }
        _ => None,
    };
    let kind = match &error {
        model_server::Error::Bind { .. } => ErrorKind::Target,
        _ => ErrorKind::User,
    };
    CommandError::from_error(kind, &error).hint_opt(hint.map(String::from))
}

/// Returns a future that completes on SIGTERM or SIGINT, after `program` says so on
/// stderr.
#[cfg(unix)]
pub(super) fn shutdown_signal(
    program: &'static str,
) -> Result<impl Future<Output = ()> + Send + 'static, CommandError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| CommandError::internal(format!("cannot handle {name}: {e}")))
    };
    let mut terminate = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = handler(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        eprintln!("{program}: {name}: finishing requests in flight, then exiting");
    })
}

/// Returns a future that completes on Ctrl-C, after saying so on stderr.
#[cfg(not(unix))]
pub(super) fn shutdown_signal(
    program: &'static str,
) -> Result<impl Future<Output = ()> + Send + 'static, CommandError> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        eprintln!("{program}: Ctrl-C: finishing requests in flight, then exiting");
    })
}

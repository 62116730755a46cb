//! `cairn auth-proxy`: the key check in front of an endpoint's server in a Kubernetes pod
//! (`templates/kubernetes/deployment.yaml.j2` adds it when the endpoint's `auth` is
//! `key` or `token`). Runs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn::workload::auth_proxy::{AuthProxy, AuthProxyOptions, Error};

use super::{CommandError, ErrorKind, Outcome, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on; port 0 picks a free port (printed on stderr).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// The server to pass authenticated requests to (in a pod: `127.0.0.1:<port>`).
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,

    /// A file holding the key requests must carry as `Authorization: Bearer <key>` (in a
    /// pod: the endpoint's Secret, mounted).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let options = AuthProxyOptions {
        listen: args.listen,
        upstream: args.upstream,
        key_file: args.key_file,
    };
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let shutdown = super::serve::shutdown_signal("cairn auth-proxy")?;
        let proxy = AuthProxy::bind(&options).await.map_err(error)?;
        eprintln!(
            "cairn auth-proxy: listening on http://{} (passing requests with the key to http://{})",
            proxy.local_addr(),
            options.upstream
        );
        proxy.run(shutdown).await.map_err(error)
    })?;
    eprintln!("cairn auth-proxy: stopped");
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

//! `cairn supervise --state DIR` (hidden): the daemon that keeps the local target's
//! endpoint deployments, and the router in front of each endpoint, serving after `cairn
//! apply` exits. Cairn starts it itself
//! (`cairn::backend::local::supervisor::ensure_running`), detached, with stdout and stderr
//! in `DIR/supervisor.log`; this command writes one timestamped line per event there.
//!
//! Exits 0 after a shutdown request, SIGTERM or SIGINT (replicas keep serving on the last
//! two), and also when another daemon already holds `DIR`; 1 when it cannot start.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use cairn::backend::local::supervisor::{self, DaemonOptions, Event};

use super::{CommandError, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supervisor's folder: socket, lock, state and the replicas' logs.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,

    /// Stop the daemon of DIR and everything it serves (routers and replicas), then exit.
    #[arg(long)]
    stop: bool,
}

pub fn run(args: Args, _output: Output) -> Result<u8, CommandError> {
    let runtime = super::runtime()?;
    if args.stop {
        return stop(&runtime, &args.state);
    }
    let result = runtime.block_on(supervisor::run_daemon(
        &args.state,
        DaemonOptions::default(),
        log,
    ));
    // Replica tasks end with the runtime; the replicas themselves keep running.
    runtime.shutdown_background();
    match result {
        Ok(()) => Ok(0),
        Err(supervisor::Error::AlreadyRunning { state_dir }) => {
            log_line(&format!(
                "another supervisor already runs for {}; leaving it be",
                state_dir.display()
            ));
            Ok(0)
        }
        Err(error) => Err(CommandError::from_error(&error)),
    }
}

/// `--stop`: shuts a running daemon down; nothing to do when none answers.
fn stop(runtime: &tokio::runtime::Runtime, state: &std::path::Path) -> Result<u8, CommandError> {
    let client =
        supervisor::SupervisorClient::new(state).map_err(|e| CommandError::from_error(&e))?;
    if !client.socket().exists() || runtime.block_on(client.ping()).is_err() {
        println!("No supervisor runs for {}.", state.display());
        return Ok(0);
    }
    let stopped = runtime
        .block_on(client.shutdown())
        .map_err(|e| CommandError::from_error(&e))?;
    println!(
        "Stopped the supervisor of {} and {} replica(s).",
        state.display(),
        stopped.len()
    );
    Ok(0)
}

fn log(event: &Event) {
    log_line(&event.to_string());
}

/// One line on stderr (the log file). A failed write is dropped: losing a log line must
/// not stop supervision.
fn log_line(line: &str) {
    let now = humantime::format_rfc3339_millis(SystemTime::now());
    let _ = writeln!(std::io::stderr().lock(), "{now} cairn supervise: {line}");
}

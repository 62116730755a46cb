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
}

pub fn run(args: Args, _output: Output) -> Result<u8, CommandError> {
    let runtime = super::runtime()?;
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

fn log(event: &Event) {
    log_line(&event.to_string());
}

/// One line on stderr (the log file). A failed write is dropped: losing a log line must
/// not stop supervision.
fn log_line(line: &str) {
    let now = humantime::format_rfc3339_millis(SystemTime::now());
    let _ = writeln!(std::io::stderr().lock(), "{now} cairn supervise: {line}");
}

//! `cairn supervise --state DIR` (hidden): the supervisor that keeps the local target's
//! endpoint deployments, and the router in front of each endpoint, serving after `cairn
//! apply` exits. Cairn starts it itself
//! (`cairn::backend::local::supervisor::ensure_running`), detached, with stdout and stderr
//! in `DIR/supervisor.log`; this command writes one timestamped line per event there.
//!
//! The process is the watchdog (`supervisor::run_watchdog`): it runs the daemon as
//! `cairn supervise --state DIR --watchdog-fd N` and restarts it when it dies, keeping
//! the routers' ports open meanwhile. Both start with the allow-listed environment
//! (`ChildEnv`) only, built here from this process's own.
//!
//! Exits 0 after a shutdown request, SIGTERM or SIGINT (replicas keep serving on the last
//! two), and also when another supervisor already holds `DIR`; 1 when it cannot start.
//! `--stop` stops the routers and every replica, also with no daemon running (from
//! `DIR/state.json`); `--print-systemd-unit` prints a unit that runs this command.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cairn::backend::local::child_env::ChildEnv;
use cairn::backend::local::supervisor::{self, DaemonOptions, Event, WatchdogLink};

use super::{CommandError, ErrorKind, Outcome, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supervisor's folder: socket, lock, state and the replicas' logs.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,

    /// Stop the supervisor of DIR and everything it serves (routers and replicas), then
    /// exit; with no supervisor answering, stop the replicas DIR/state.json records.
    #[arg(long, conflicts_with = "print_systemd_unit")]
    stop: bool,

    /// Print a systemd unit that runs `cairn supervise --state DIR` (serving across
    /// reboots and after logout), then exit.
    #[arg(long)]
    print_systemd_unit: bool,

    /// Run the daemon itself, under the watchdog that passed this descriptor.
    #[arg(long, hide = true, value_name = "FD")]
    watchdog_fd: Option<i32>,
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn"));
    if args.print_systemd_unit {
        let unit = supervisor::systemd_unit(&program, &args.state)
            .map_err(|e| CommandError::from_error(ErrorKind::Target, &e))?;
        print!("{unit}");
        return Ok(Outcome::Success);
    }
    let runtime = super::runtime()?;
    if args.stop {
        return stop(&runtime, &args.state);
    }
    let env = ChildEnv::allowed(std::env::vars_os());
    let result = match args.watchdog_fd {
        Some(fd) => WatchdogLink::inherited(fd).and_then(|link| {
            let options = DaemonOptions {
                child_env: env,
                ..DaemonOptions::default()
            };
            runtime.block_on(supervisor::run_daemon(
                &args.state,
                options,
                Some(link),
                log,
            ))
        }),
        None => runtime.block_on(supervisor::run_watchdog(&args.state, &program, &env, log)),
    };
    // Replica tasks end with the runtime; the replicas themselves keep running.
    runtime.shutdown_background();
    match result {
        Ok(()) => Ok(Outcome::Success),
        Err(supervisor::Error::AlreadyRunning { state_dir }) => {
            log_line(&format!(
                "another supervisor already runs for {}; leaving it be",
                state_dir.display()
            ));
            Ok(Outcome::Success)
        }
        Err(error) => Err(CommandError::from_error(ErrorKind::Target, &error)),
    }
}

/// `--stop`: shuts a running daemon down; with none answering, stops what its state
/// records.
fn stop(
    runtime: &tokio::runtime::Runtime,
    state: &std::path::Path,
) -> Result<Outcome, CommandError> {
    let client = supervisor::SupervisorClient::new(state)
        .map_err(|e| CommandError::from_error(ErrorKind::Target, &e))?;
    if client.socket().exists() && runtime.block_on(client.ping()).is_ok() {
        let stopped = runtime
            .block_on(client.shutdown())
            .map_err(|e| CommandError::from_error(ErrorKind::Target, &e))?;
        println!(
            "Stopped the supervisor of {} and {} replica(s).",
            state.display(),
            stopped.len()
        );
        return Ok(Outcome::Success);
    }
    let stopped = runtime
        .block_on(supervisor::stop_without_daemon(
            state,
            Duration::from_secs(10),
        ))
        .map_err(|e| CommandError::from_error(ErrorKind::Target, &e))?;
    if stopped.watchdog.is_none() && stopped.replicas.is_empty() {
        println!("No supervisor runs for {}.", state.display());
        return Ok(Outcome::Success);
    }
    let watchdog = stopped
        .watchdog
        .map(|pid| format!(" Asked its watchdog (pid {pid}) to exit."))
        .unwrap_or_default();
    println!(
        "No supervisor answered for {}.{watchdog} Stopped {} replica(s) its state recorded.",
        state.display(),
        stopped.replicas.len()
    );
    Ok(Outcome::Success)
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

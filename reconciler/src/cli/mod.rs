//! The `cairn` command line: argument parsing, output (text or JSON, colour or not) and
//! exit codes, all in one place. The library returns typed results; this module decides
//! how they look.
//!
//! A command ends in an [`Outcome`] (it ran to its end) or a [`CommandError`] (it
//! stopped), and every error is classified where it is made into an [`ErrorKind`].
//! [`Outcome::exit_code`] is the one table from those to exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; no changes (`plan --detailed-exitcode`), no drift (`drift`); `--help`, `--version` |
//! | 1 | an error of any kind but usage: [`ErrorKind::User`], [`ErrorKind::Policy`], [`ErrorKind::Conflict`], [`ErrorKind::Target`], [`ErrorKind::Internal`] |
//! | 2 | changes present (`plan --detailed-exitcode`), drift found (`drift`): never an error |
//! | 64 | a usage error: an unknown command or flag, a bad flag value, a missing argument (`EX_USAGE`) |
//!
//! Usage errors get their own code because clap's default, 2, means "changes present":
//! a typo in a workflow that allows 2 (`drift`) must not pass. The other kinds share 1
//! for now (scripts and the tests rely on it); a kind may get its own code later
//! without any command changing.

mod apply;
mod aws;
mod context;
mod destroy;
mod drift;
mod github;
mod history;
mod invoke;
mod lock;
mod logs;
mod plan;
mod pod_proxy;
mod policy;
mod progress;
mod render;
mod runs;
mod score;
mod serve;
mod split;
mod status;
#[cfg(target_os = "linux")]
mod supervise;
mod train;
mod transfer;
mod validate;
mod verify;
mod versions;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use cairn::diagnostics::error_chain;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// Cairn: GitOps for ML infrastructure. Plans and applies TOML manifests of workspaces,
/// compute, datasets, training jobs, models and endpoints.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// When to use colour: auto (a terminal and NO_COLOR unset), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests without touching anything live: syntax, fields, references,
    /// traffic maps, GPU quotas, paths. Reports every problem at once.
    Validate(validate::Args),
    /// Show what `apply` would change, and why: dataset versions, job runs, model
    /// versions and endpoint rollouts (steps and gates), in dependency order.
    Plan(plan::Args),
    /// Carry out a plan: a fresh one after confirmation, or a saved one exactly.
    Apply(apply::Args),
    /// Tear workspaces down: plan the removal of everything their states record
    /// (endpoints stopped, Kubernetes objects deleted, stored versions kept unless
    /// `--purge-store`), then apply it like `apply` does.
    Destroy(destroy::Args),
    /// Check whether what is live still matches the default branch: exit 0 when it
    /// does, 2 with a report per resource and field when it drifted, 1 on errors.
    /// `--github-issue` keeps one `drift` issue open while drift lasts.
    Drift(drift::Args),
    /// Show what is live per workspace: applied resources and their versions, the last
    /// apply, a held lock, and each endpoint's deployments, weights, health and request
    /// rates.
    Status(status::Args),
    /// Rego policies: run their unit tests (`cairn policy test`), or evaluate them
    /// against the manifests (`cairn policy eval`). `plan` and `apply` evaluate them
    /// on every run; a deny makes both exit 1.
    Policy(policy::Args),
    /// List past applies from the journal.
    History(history::Args),
    /// List recorded job runs, newest first, with their status, outputs and metrics.
    Runs(runs::Args),
    /// Print the logs a job's run stored (the newest run, or `JOB@RUN`).
    Logs(logs::Args),
    /// Send one request to an applied endpoint (with its key) and print the answer.
    Invoke(invoke::Args),
    /// List the stored versions of the declared models, newest first, with lineage and
    /// metrics.
    Models(versions::Args),
    /// List the stored versions of the declared datasets, newest first, with their size
    /// and origin.
    Datasets(versions::Args),
    /// Release a store lock left behind by an apply that died (`--force`: whatever lock
    /// is there, a damaged one included).
    Unlock(lock::Args),
    /// Re-read every stored dataset and model version and check each file's size and
    /// SHA-256 against what the version recorded; exit 1 when any is damaged.
    Verify(verify::Args),
    /// The reference trainer: fit a logistic regression on CSV data and write
    /// `model.safetensors` and `metrics.json` (what the example's job runs).
    Train(train::Args),
    /// Batch scoring: run a model folder (the reference model or ONNX) over a folder of
    /// CSV files and write the scores, one file per input; with `--label`, also the
    /// scores' AUC, accuracy and log loss (`metrics.json`).
    Score(score::Args),
    /// A preparation step: split a folder of CSV files into training and holdout rows by
    /// a seeded hash of a key column, so a row keeps its side when others change.
    Split(split::Args),
    /// The reference model server: load a model folder and answer `POST /v1/predict`,
    /// `GET /healthz` and `GET /metrics` until SIGTERM.
    Serve(serve::Args),
    /// The front door of an endpoint's server in a Kubernetes pod: with a key, answers
    /// 401 without `Authorization: Bearer <key>`; with a capture, keeps a sample of the
    /// requests in the workspace store for `cairn drift`; passes the rest on (what a pod
    /// of an endpoint with `auth` or `monitor` runs beside its server).
    #[command(alias = "auth-proxy")]
    PodProxy(pod_proxy::Args),
    /// Download a dataset or model version from a workspace store into a folder, each
    /// file checked against its SHA-256 (what a Kubernetes training pod runs first).
    Fetch(transfer::FetchArgs),
    /// Store folders a job wrote as model versions, with their lineage (what a
    /// Kubernetes training pod runs last).
    Upload(transfer::UploadArgs),
    /// The daemon that keeps local endpoints serving after `apply` exits (Cairn starts it
    /// itself); `--stop` stops it and everything it serves.
    #[cfg(target_os = "linux")]
    Supervise(supervise::Args),
    /// Print a shell completion script: `cairn completions bash > /etc/bash_completion.d/cairn`
    /// (also zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the manifests come from, shared by every command that reads them.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// The manifests root: a folder with one subfolder per workspace. Defaults to
    /// `manifests` when that folder exists, else the current folder.
    pub path: Option<PathBuf>,

    /// Read the manifests as of this Git revision (branch, tag or commit) instead of the
    /// working tree. The working copy is not touched.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
}

impl SourceArgs {
    pub fn root(&self) -> PathBuf {
        match &self.path {
            Some(p) => p.clone(),
            None if std::path::Path::new("manifests").is_dir() => PathBuf::from("manifests"),
            None => PathBuf::from("."),
        }
    }

    /// Reads the manifests from the folder or the revision.
    pub fn load(&self) -> Result<cairn::manifest::Snapshot, CommandError> {
        let root = self.root();
        // Defaulted to the current folder: it must look like a manifests root, or every
        // TOML file below it (a Cargo.toml, a pyproject.toml) would be read as manifests.
        if self.path.is_none() && self.rev.is_none() && root == std::path::Path::new(".") {
            let holds_a_workspace = std::fs::read_dir(&root)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.path().join("workspace.toml").is_file())
                })
                .unwrap_or(false);
            if !holds_a_workspace {
                let here = std::env::current_dir()
                    .map_or_else(|_| ".".to_string(), |d| d.display().to_string());
                return Err(CommandError::user(format!(
                    "{here} is not a manifests root: it has no `manifests` folder, and no folder in it has a workspace.toml"
                ))
                .hint_opt(Some(
                    "run Cairn where your workspaces' folders are, or name the root: `cairn status path/to/manifests`".into(),
                )));
            }
        }
        let snapshot = match &self.rev {
            Some(rev) => cairn::manifest::load_revision(&root, rev),
            None => cairn::manifest::load_folder(&root),
        };
        snapshot.map_err(|e| {
            let hint = e.hint();
            CommandError::user(error_chain(&e)).hint_opt(hint)
        })
    }
}

/// The arguments of a command that reports on workspaces: where the manifests are, which
/// workspaces, and text or JSON.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Only these workspaces.
    #[arg(short, long = "workspace", value_name = "NAME")]
    pub workspaces: Vec<String>,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// How output should look, decided once from flags and the environment.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub color_stdout: bool,
    pub color_stderr: bool,
    /// Draw progress bars (stderr is a terminal); otherwise print plain lines.
    pub progress: bool,
}

/// How a command that ran to its end finished. (One that stopped early returns a
/// [`CommandError`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked, and found no changes if it looked for them.
    Success,
    /// It found changes (`plan --detailed-exitcode`) or drift (`drift`).
    Changes,
    /// It printed its own report of a failure (invalid manifests from `validate`,
    /// failed changes from `apply`, failed policy tests): no further message is due.
    Failed(ErrorKind),
}

impl Outcome {
    /// The exit-code table (see the module documentation): the one place a code is
    /// chosen.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Changes => 2,
            Outcome::Failed(ErrorKind::Usage) => 64,
            Outcome::Failed(
                ErrorKind::User
                | ErrorKind::Policy
                | ErrorKind::Conflict
                | ErrorKind::Target
                | ErrorKind::Internal,
            ) => 1,
        }
    }
}

/// What kind of failure stopped a command, decided where the error is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line itself is wrong: an unknown command or flag, a bad value, a
    /// missing argument. Reported by clap, before any command runs.
    Usage,
    /// What the user gave is wrong or missing: invalid manifests, an unknown workspace or
    /// revision, arguments that don't fit together, an unreadable plan file, a missing
    /// token or pull request.
    User,
    /// The policies deny the plan (or the manifests).
    Policy,
    /// Someone else got there first: a lock held by another apply, a saved plan made
    /// stale by a later apply, a record changed under a conditional write.
    Conflict,
    /// Something Cairn talks to failed or can't be reached: a store, a cluster, the local
    /// supervisor, GitHub, a model server's port; or changes failed while applying.
    Target,
    /// Cairn itself failed (no async runtime, a task that panicked): a bug to report.
    Internal,
}

/// A failure the CLI reports: its kind (which picks the exit code), a message and hints.
#[derive(Debug)]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
    pub hints: Vec<String>,
}

impl CommandError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CommandError {
            kind,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    /// See [`ErrorKind::User`].
    pub fn user(message: impl Into<String>) -> Self {
        CommandError::new(ErrorKind::User, message)
    }

    /// See [`ErrorKind::Policy`].
    pub fn policy(message: impl Into<String>) -> Self {
        CommandError::new(ErrorKind::Policy, message)
    }

    /// See [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        CommandError::new(ErrorKind::Conflict, message)
    }

    /// See [`ErrorKind::Target`].
    pub fn target(message: impl Into<String>) -> Self {
        CommandError::new(ErrorKind::Target, message)
    }

    /// See [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        CommandError::new(ErrorKind::Internal, message)
    }

    pub fn hint_opt(mut self, hint: Option<String>) -> Self {
        self.hints.extend(hint);
        self
    }

    /// An error of `kind` with its whole chain of causes as the message, and the hint of
    /// the first cause that has one (a damaged lock: `cairn unlock --force`).
    pub fn from_error(kind: ErrorKind, error: &(dyn std::error::Error + 'static)) -> Self {
        CommandError::new(kind, error_chain(error)).hint_opt(known_hint(error))
    }

    /// A store error, classified by what went wrong: a lock or a conditional write lost
    /// to someone else is a conflict, a bad store URL the user's, the rest the store's.
    pub fn store(error: &cairn::backend::store::Error) -> Self {
        CommandError::from_error(store_kind(error), error)
    }
}

/// The kind of a store error (see [`CommandError::store`]).
pub fn store_kind(error: &cairn::backend::store::Error) -> ErrorKind {
    use cairn::backend::store::Error as E;
    match error {
        E::Locked { .. } | E::PreconditionFailed { .. } => ErrorKind::Conflict,
        E::InvalidUrl { .. } | E::Unsupported(_) | E::NoSuchLock { .. } => ErrorKind::User,
        E::Join(_) => ErrorKind::Internal,
        _ => ErrorKind::Target,
    }
}

/// The hint of the first error in the chain that knows what the user can do.
fn known_hint(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(hint) = e
            .downcast_ref::<cairn::backend::store::Error>()
            .and_then(cairn::backend::store::Error::hint)
        {
            return Some(hint);
        }
        current = e.source();
    }
    None
}

/// The async runtime for commands that talk to stores and processes.
pub fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::internal(format!("cannot start the async runtime: {e}")))
}

/// `user@host`, for locks and the journal.
pub fn user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage(&e).exit_code()),
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let auto = |tty: bool| tty && !no_color;
    let output = match cli.color {
        ColorChoice::Always => Output {
            color_stdout: true,
            color_stderr: true,
            progress: std::io::stderr().is_terminal(),
        },
        ColorChoice::Never => Output {
            color_stdout: false,
            color_stderr: false,
            progress: std::io::stderr().is_terminal(),
        },
        ColorChoice::Auto => Output {
            color_stdout: auto(std::io::stdout().is_terminal()),
            color_stderr: auto(std::io::stderr().is_terminal()),
            progress: std::io::stderr().is_terminal(),
        },
    };
    let result = match cli.command {
        Command::Validate(args) => validate::run(args, output),
        Command::Plan(args) => plan::run(args, output),
        Command::Apply(args) => apply::run(args, output),
        Command::Destroy(args) => destroy::run(args, output),
        Command::Drift(args) => drift::run(args, output),
        Command::Status(args) => status::run(args, output),
        Command::Policy(args) => policy::run(args, output),
        Command::History(args) => history::run(args, output),
        Command::Runs(args) => runs::run(args, output),
        Command::Logs(args) => logs::run(args, output),
        Command::Invoke(args) => invoke::run(args, output),
        Command::Models(args) => versions::models(args, output),
        Command::Datasets(args) => versions::datasets(args, output),
        Command::Unlock(args) => lock::run(args, output),
        Command::Verify(args) => verify::run(args, output),
        Command::Train(args) => train::run(args, output),
        Command::Score(args) => score::run(args, output),
        Command::Split(args) => split::run(args, output),
        Command::Serve(args) => serve::run(args, output),
        Command::PodProxy(args) => pod_proxy::run(args, output),
        Command::Fetch(args) => transfer::fetch(args, output),
        Command::Upload(args) => transfer::upload(args, output),
        #[cfg(target_os = "linux")]
        Command::Supervise(args) => supervise::run(args, output),
        Command::Completions { shell } => completions(shell),
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            render::command_error(&err, output);
            Outcome::Failed(err.kind)
        }
    };
    ExitCode::from(outcome.exit_code())
}

/// Prints what clap says about a command line it could not take, as clap prints it:
/// help and the version (asked for, on stdout) are a success; the rest, help shown for a
/// missing subcommand included (on stderr), is a usage error.
fn usage(error: &clap::Error) -> Outcome {
    // Nothing to do when the terminal is gone.
    let _ = error.print();
    if error.use_stderr() {
        Outcome::Failed(ErrorKind::Usage)
    } else {
        Outcome::Success
    }
}

/// `cairn completions SHELL`: the completion script, generated from the same definition
/// clap parses with.
fn completions(shell: clap_complete::Shell) -> Result<Outcome, CommandError> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
    Ok(Outcome::Success)
}

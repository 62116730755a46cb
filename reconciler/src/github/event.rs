//! The event GitHub Actions describes in the file at `GITHUB_EVENT_PATH`: for a
//! `pull_request` (or `pull_request_target`) run, the pull request's number, head and
//! base. The CLI reads the file; this module only reads the JSON.

use serde::Deserialize;

/// What Cairn needs from a `pull_request` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub number: u64,
    /// The head commit: what the pull request proposes.
    pub head_sha: String,
    pub head_ref: String,
    /// The base branch's commit when the event fired.
    pub base_sha: String,
    pub base_ref: String,
    /// `owner/name` of the base repository, when the event says.
    pub repository: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the event is not JSON")]
    Json(#[source] serde_json::Error),
    #[error("the event is not about a pull request (it has no `pull_request` object)")]
    NotAPullRequest,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    pull_request: Option<RawPr>,
    #[serde(default)]
    repository: Option<RawRepo>,
}

#[derive(Deserialize)]
struct RawPr {
    number: u64,
    head: RawRef,
    base: RawRef,
}

#[derive(Deserialize)]
struct RawRef {
    sha: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
}

#[derive(Deserialize)]
struct RawRepo {
    full_name: String,
}

impl PullRequestEvent {
    /// Reads a `pull_request` event. Other events (a `push`, a `schedule`) give
    /// [`Error::NotAPullRequest`].
    pub fn from_json(text: &str) -> Result<PullRequestEvent, Error> {
        let raw: Raw = serde_json::from_str(text).map_err(Error::Json)?;
        let pr = raw.pull_request.ok_or(Error::NotAPullRequest)?;
        Ok(PullRequestEvent {
            number: raw.number.unwrap_or(pr.number),
            head_sha: pr.head.sha,
            head_ref: pr.head.git_ref,
            base_sha: pr.base.sha,
            base_ref: pr.base.git_ref,
            repository: raw.repository.map(|r| r.full_name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_events_are_read() {
        let event = PullRequestEvent::from_json(
            r#"{"action": "synchronize", "number": 12,
                "pull_request": {"number": 12, "head": {"sha": "aaa", "ref": "feature"},
                                 "base": {"sha": "bbb", "ref": "main"}},
                "repository": {"full_name": "acme/infra"}}"#,
        )
        .unwrap();
        assert_eq!(event.number, 12);
        assert_eq!(
            (event.head_sha.as_str(), event.base_ref.as_str()),
            ("aaa", "main")
        );
        assert_eq!(event.repository.as_deref(), Some("acme/infra"));
        assert!(matches!(
            PullRequestEvent::from_json(r#"{"ref": "refs/heads/main"}"#),
            Err(Error::NotAPullRequest)
        ));
        assert!(matches!(
            PullRequestEvent::from_json("nope"),
            Err(Error::Json(_))
        ));
    }
}

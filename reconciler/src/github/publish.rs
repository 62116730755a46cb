//! The flows that keep GitHub in step with a plan or a drift check.
//!
//! Plan comments: one sticky comment per pull request and key (the workspace set), in as
//! many parts as it needs. A run lists the pull request's comments, finds the parts by
//! their markers, updates part i in place (skipping parts whose text did not change),
//! adds parts that are missing, and deletes parts left over from a longer plan (and
//! duplicates, keeping the oldest). Then it sets the commit status.
//!
//! Drift issues: one open issue labelled [`DRIFT_LABEL`] per key, found by label and
//! marker. Drift opens it or updates its body; a clean run comments and closes it.

use std::collections::BTreeMap;

use super::client::{Comment, GitHub, Issue, Result, StatusState};
use super::comment::parse_marker;
use super::Repo;
use crate::plan::Plan;

/// The commit status context Cairn sets on pull requests.
pub const STATUS_CONTEXT: &str = "cairn/plan";

/// The label of drift issues.
pub const DRIFT_LABEL: &str = "drift";

/// What keeping the sticky comment did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommentSync {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    /// The parts' URLs, in order.
    pub urls: Vec<String>,
}

/// Makes the comment parts on pull request `number` exactly `parts` (each already
/// carrying its marker for `key`).
pub async fn sync_comment(
    gh: &GitHub,
    repo: &Repo,
    number: u64,
    key: &str,
    parts: &[String],
) -> Result<CommentSync> {
    let comments = gh.list_comments(repo, number).await?;
    // Part number → existing comments carrying it, oldest first.
    let mut existing: BTreeMap<usize, Vec<Comment>> = BTreeMap::new();
    for c in comments {
        if let Some((k, part)) = parse_marker(c.body()) {
            if k == key {
                existing.entry(part).or_default().push(c);
            }
        }
    }
    let mut sync = CommentSync::default();
    for (i, body) in parts.iter().enumerate() {
        let part = i + 1;
        let mut found = existing.remove(&part).unwrap_or_default();
        let url = if found.is_empty() {
            sync.created += 1;
            gh.create_comment(repo, number, body).await?.html_url
        } else {
            let first = found.remove(0);
            for extra in found {
                gh.delete_comment(repo, extra.id).await?;
                sync.deleted += 1;
            }
            if first.body() == body {
                sync.unchanged += 1;
                first.html_url
            } else {
                sync.updated += 1;
                gh.update_comment(repo, first.id, body).await?.html_url
            }
        };
        sync.urls.push(url);
    }
    // Parts a longer plan left behind.
    for stale in existing.into_values().flatten() {
        gh.delete_comment(repo, stale.id).await?;
        sync.deleted += 1;
    }
    Ok(sync)
}

/// The commit status a plan earns: `failure` when a policy denies it, else `success`;
/// the description is the summary line (denials first), cut to 140 characters when set.
pub fn plan_status(plan: &Plan) -> (StatusState, String) {
    let line = crate::view::summary_line(plan);
    match &plan.policy {
        Some(p) if p.denied() => (
            StatusState::Failure,
            format!(
                "Denied by {} polic{}. {line}",
                p.deny.len(),
                if p.deny.len() == 1 { "y" } else { "ies" }
            ),
        ),
        _ if !plan.has_changes() => (StatusState::Success, "No changes.".into()),
        _ => (StatusState::Success, line),
    }
}

/// Sets the `cairn/plan` commit status on `sha`.
pub async fn set_status(
    gh: &GitHub,
    repo: &Repo,
    sha: &str,
    state: StatusState,
    description: &str,
    target_url: Option<&str>,
) -> Result<()> {
    gh.create_status(repo, sha, state, STATUS_CONTEXT, description, target_url)
        .await
}

/// The prefix of a drift issue's marker.
pub const DRIFT_MARKER_PREFIX: &str = "<!-- cairn:drift key=";

/// The hidden marker of the drift issue for `key`.
pub fn drift_marker(key: &str) -> String {
    format!("{DRIFT_MARKER_PREFIX}{key} -->")
}

/// What the drift check did to the issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftIssue {
    Opened {
        number: u64,
        url: String,
    },
    Updated {
        number: u64,
        url: String,
    },
    Closed {
        number: u64,
        url: String,
    },
    /// No drift and no open issue.
    NothingOpen,
}

/// Opens or updates the drift issue for `key` when `report` is `Some` (title, body
/// without marker); closes it with `closing_comment` when `None`.
pub async fn sync_drift_issue(
    gh: &GitHub,
    repo: &Repo,
    key: &str,
    report: Option<(&str, &str)>,
    closing_comment: &str,
) -> Result<DriftIssue> {
    let marker = drift_marker(key);
    let open: Vec<Issue> = gh
        .open_issues(repo, DRIFT_LABEL)
        .await?
        .into_iter()
        .filter(|i| i.body().contains(&marker))
        .collect();
    match (report, open.first()) {
        (Some((title, body)), existing) => {
            let body = format!("{marker}\n{body}");
            match existing {
                Some(issue) => {
                    let updated = if issue.body() == body && issue.title == title {
                        issue.clone()
                    } else {
                        gh.update_issue(repo, issue.number, Some(title), Some(&body), None)
                            .await?
                    };
                    Ok(DriftIssue::Updated {
                        number: issue.number,
                        url: updated.html_url,
                    })
                }
                None => {
                    let issue = gh.create_issue(repo, title, &body, &[DRIFT_LABEL]).await?;
                    Ok(DriftIssue::Opened {
                        number: issue.number,
                        url: issue.html_url,
                    })
                }
            }
        }
        (None, Some(_)) => {
            let mut last = None;
            for issue in &open {
                gh.create_comment(repo, issue.number, closing_comment)
                    .await?;
                let closed = gh
                    .update_issue(repo, issue.number, None, None, Some("closed"))
                    .await?;
                last = Some(DriftIssue::Closed {
                    number: issue.number,
                    url: closed.html_url,
                });
            }
            Ok(last.unwrap_or(DriftIssue::NothingOpen))
        }
        (None, None) => Ok(DriftIssue::NothingOpen),
    }
}

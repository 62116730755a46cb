//! The library's flows against the stand-in GitHub: the sticky comment is created once
//! and then updated in place, a 200,000-character plan goes out in parts that each fit,
//! parts a longer plan left behind are deleted, and others' comments are left alone.

use cairn::github::client::StatusState;
use cairn::github::comment::{self, CommentInput, COMMENT_TEMPLATE, GITHUB_COMMENT_LIMIT};
use cairn::github::publish::{plan_status, sync_comment, sync_drift_issue, DriftIssue};
use cairn::github::{GitHub, Repo};

use crate::comment::{big_plan, sample_plan};
use crate::github_server::FakeGitHub;
use crate::{REPO, TOKEN};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A client on `rt` (octocrab runs a task on the runtime it was made in).
fn connect(rt: &tokio::runtime::Runtime, url: &str) -> GitHub {
    let _inside = rt.enter();
    GitHub::connect(url, TOKEN).unwrap()
}

fn parts(plan: &cairn::plan::Plan) -> Vec<String> {
    comment::build(
        &CommentInput {
            plan,
            key: "risk",
            pr: None,
        },
        COMMENT_TEMPLATE,
    )
    .unwrap()
}

#[test]
fn the_sticky_comment_is_created_once_then_updated_in_place() {
    let server = FakeGitHub::start(REPO, TOKEN, &[7]);
    let other = server.add_comment(7, "LGTM <!-- not cairn -->");
    let rt = rt();
    let gh = connect(&rt, &server.url);
    let repo = Repo::parse(REPO).unwrap();

    let plan = sample_plan();
    let first = rt
        .block_on(sync_comment(&gh, &repo, 7, "risk", &parts(&plan)))
        .unwrap();
    assert_eq!((first.created, first.updated, first.deleted), (1, 0, 0));
    let comments = server.comments(7);
    assert_eq!(comments.len(), 2);
    let ours = comments[1].clone();
    assert!(ours
        .body
        .starts_with("<!-- cairn:plan key=risk part=1/1 -->"));

    // A new push: the same comment changes, nothing is added.
    server.clear_requests();
    let mut plan2 = sample_plan();
    plan2.revision = Some("b".repeat(40));
    let second = rt
        .block_on(sync_comment(&gh, &repo, 7, "risk", &parts(&plan2)))
        .unwrap();
    assert_eq!((second.created, second.updated, second.deleted), (0, 1, 0));
    let comments = server.comments(7);
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[0].id, other);
    assert_eq!(comments[0].body, "LGTM <!-- not cairn -->");
    assert_eq!(comments[1].id, ours.id);
    assert!(comments[1].body.contains(&"b".repeat(40)));
    let requests: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        requests,
        [
            "GET /repos/acme/ml-infra/issues/7/comments?per_page=100&page=1".to_string(),
            format!("PATCH /repos/acme/ml-infra/issues/comments/{}", ours.id),
        ]
    );
    assert!(server.requests().iter().all(|r| r.authorized));
    assert_eq!(
        server.requests()[1].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // The same plan again: nothing to write.
    let third = rt
        .block_on(sync_comment(&gh, &repo, 7, "risk", &parts(&plan2)))
        .unwrap();
    assert_eq!((third.created, third.updated, third.unchanged), (0, 0, 1));
    assert!(server.unexpected().is_empty(), "{:?}", server.unexpected());
}

#[test]
fn a_200k_plan_goes_out_in_parts_and_stale_parts_are_removed() {
    let server = FakeGitHub::start(REPO, TOKEN, &[8]);
    let rt = rt();
    let gh = connect(&rt, &server.url);
    let repo = Repo::parse(REPO).unwrap();

    let big = parts(&big_plan(220, "first"));
    let total: usize = big.iter().map(|p| p.chars().count()).sum();
    assert!(total >= 200_000, "{total}");
    let synced = rt
        .block_on(sync_comment(&gh, &repo, 8, "risk", &big))
        .unwrap();
    assert_eq!(synced.created, big.len());
    let comments = server.comments(8);
    assert_eq!(comments.len(), big.len());
    for (i, c) in comments.iter().enumerate() {
        // The stand-in refuses bodies over the limit, as GitHub does; check anyway.
        assert!(c.body.chars().count() <= GITHUB_COMMENT_LIMIT);
        assert!(c.body.starts_with(&format!(
            "<!-- cairn:plan key=risk part={}/{} -->",
            i + 1,
            big.len()
        )));
        if i > 0 {
            assert!(c.body.contains(&format!("part {} of {}", i + 1, big.len())));
        }
    }

    // A smaller plan: part 1 is updated, the rest deleted.
    server.clear_requests();
    let small = parts(&big_plan(20, "second"));
    assert_eq!(small.len(), 1);
    let synced = rt
        .block_on(sync_comment(&gh, &repo, 8, "risk", &small))
        .unwrap();
    assert_eq!(
        (synced.updated, synced.deleted),
        (1, big.len() - 1),
        "{synced:?}"
    );
    let left = server.comments(8);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, comments[0].id);
    assert!(left[0].body.contains("second-new"));
    let deletes: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    let expected: Vec<String> = comments[1..]
        .iter()
        .map(|c| format!("/repos/acme/ml-infra/issues/comments/{}", c.id))
        .collect();
    assert_eq!(deletes, expected);
}

#[test]
fn the_drift_issue_is_opened_updated_and_closed() {
    let server = FakeGitHub::start(REPO, TOKEN, &[3]);
    let rt = rt();
    let gh = connect(&rt, &server.url);
    let repo = Repo::parse(REPO).unwrap();
    let opened = rt
        .block_on(sync_drift_issue(
            &gh,
            &repo,
            "risk",
            Some(("Drift: 1", "body 1")),
            "closing",
        ))
        .unwrap();
    let DriftIssue::Opened { number, .. } = opened else {
        panic!("{opened:?}")
    };
    let updated = rt
        .block_on(sync_drift_issue(
            &gh,
            &repo,
            "risk",
            Some(("Drift: 2", "body 2")),
            "closing",
        ))
        .unwrap();
    assert!(matches!(updated, DriftIssue::Updated { number: n, .. } if n == number));
    // Another key's issue is someone else's.
    let issues = server.issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].body, "<!-- cairn:drift key=risk -->\nbody 2");
    assert_eq!(issues[0].labels, ["drift"]);
    let closed = rt
        .block_on(sync_drift_issue(&gh, &repo, "risk", None, "all clear"))
        .unwrap();
    assert!(matches!(closed, DriftIssue::Closed { number: n, .. } if n == number));
    assert_eq!(server.issues()[0].state, "closed");
    assert_eq!(server.comments(number)[0].body, "all clear");
    let again = rt
        .block_on(sync_drift_issue(&gh, &repo, "risk", None, "all clear"))
        .unwrap();
    assert_eq!(again, DriftIssue::NothingOpen);
}

#[test]
fn a_policy_deny_fails_the_commit_status() {
    let plan = sample_plan();
    assert_eq!(
        plan_status(&plan),
        (
            StatusState::Failure,
            "Denied by 1 policy. Plan: 1 to add, 2 to change, 1 to destroy, 1 to run, 1 to roll out."
                .to_string()
        )
    );
    let mut allowed = sample_plan();
    allowed.policy.as_mut().unwrap().deny.clear();
    assert_eq!(plan_status(&allowed).0, StatusState::Success);
    let mut unchanged = sample_plan();
    unchanged.resource_changes.truncate(1);
    unchanged.policy = None;
    assert_eq!(
        plan_status(&unchanged),
        (StatusState::Success, "No changes.".to_string())
    );
}

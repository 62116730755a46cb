//! The real `cairn` binary on real Git repositories against the stand-in GitHub:
//! `plan --comment` from a `pull_request` event and from flags, `drift --github-issue`,
//! a retried 502, and errors (401, 403, 404, no token) that say what is missing and
//! never show the token.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::github_server::FakeGitHub;
use crate::support::{manifests, Job, Root, Run};
use crate::{REPO, TOKEN};

/// Runs `cairn <args>` against `server` with the token and repository set the way
/// GitHub Actions sets them; `token: None` leaves GITHUB_TOKEN unset.
fn cairn(
    root: &Root,
    server: &FakeGitHub,
    args: &[&str],
    token: Option<&str>,
    event: Option<&Path>,
) -> Run {
    let mut cmd = root.command(args);
    for var in [
        "GITHUB_TOKEN",
        "GITHUB_EVENT_PATH",
        "GITHUB_REPOSITORY",
        "GITHUB_API_URL",
        "GITHUB_ACTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GITHUB_API_URL", &server.url)
        .env("GITHUB_REPOSITORY", REPO);
    if let Some(token) = token {
        cmd.env("GITHUB_TOKEN", token);
    }
    if let Some(event) = event {
        cmd.env("GITHUB_EVENT_PATH", event);
    }
    let started = Instant::now();
    let run = Run::from(cmd.output().expect("cairn runs"), started.elapsed());
    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "the token leaked:\n{}",
        run.both()
    );
    run
}

/// Writes a `pull_request` event for PR `number` from `base` to `head`.
fn event(root: &Root, number: u64, base: &str, head: &str) -> std::path::PathBuf {
    let path = root.scratch().join("event.json");
    let event = json!({
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"sha": head, "ref": "feature"},
            "base": {"sha": base, "ref": "main"}
        },
        "repository": {"full_name": REPO}
    });
    std::fs::write(&path, event.to_string()).unwrap();
    path
}

/// `cairn plan --rev <head> --comment` as the Action runs it for pull request `number`
/// (from `base` to `head`): the token set, the event file written.
fn plan_comment(root: &Root, server: &FakeGitHub, number: u64, base: &str, head: &str) -> Run {
    let ev = event(root, number, base, head);
    cairn(
        root,
        server,
        &["plan", "ROOT", "--rev", head, "--comment"],
        Some(TOKEN),
        Some(&ev),
    )
}

/// A repository with a base commit and a pull request's head commit that changes the
/// training data: `(root, base, head)`.
fn pull_request() -> (Root, String, String) {
    let root = manifests(&Job::default());
    let base = root.git_commit_all("base");
    root.edit_row(99_000);
    let head = root.git_commit_all("more income");
    (root, base, head)
}

#[test]
fn plan_comment_from_a_pull_request_event_is_posted_then_updated() {
    let (root, base, head) = pull_request();
    let server = FakeGitHub::start(REPO, TOKEN, &[7]);
    let run = plan_comment(&root, &server, 7, &base, &head);
    run.ok();
    assert!(run.stdout.contains("Plan: 4 to add"), "{}", run.both());
    assert!(
        run.stderr
            .contains("Posted the plan comment on acme/ml-infra#7 (1 part): https://github.test/"),
        "{}",
        run.both()
    );
    let comments = server.comments(7);
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    assert!(
        body.starts_with("<!-- cairn:plan key=risk part=1/1 -->\n"),
        "{body}"
    );
    assert!(
        body.contains(&format!("### Cairn plan for `risk` at {}", &head[..7])),
        "{body}"
    );
    assert!(
        body.contains("- `risk/dataset.loans`: `risk/data/loans/loans.csv`"),
        "{body}"
    );
    assert!(body.contains(&format!("at commit `{head}`")), "{body}");
    assert!(body.contains("```mermaid"), "{body}");
    // A new resource shows what it will be.
    assert!(body.contains("+ target: \"local\""), "{body}");
    assert!(
        body.contains("<summary>▶ <code>risk/job.train</code> run:"),
        "{body}"
    );

    let statuses = server.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].0, head);
    assert_eq!(statuses[0].1["context"], "cairn/plan");
    assert_eq!(statuses[0].1["state"], "success");
    assert_eq!(
        statuses[0].1["description"],
        "Plan: 4 to add, 0 to change, 0 to destroy, 1 to run, 0 to roll out."
    );
    assert_eq!(
        statuses[0].1["target_url"],
        format!(
            "https://github.test/acme/ml-infra/pull/7#issuecomment-{}",
            comments[0].id
        )
    );

    // Another push to the pull request: the same comment is updated.
    root.edit_row(55_000);
    let head2 = root.git_commit_all("less income");
    server.clear_requests();
    let run = plan_comment(&root, &server, 7, &base, &head2);
    run.ok();
    assert!(
        run.stderr.contains("Updated the plan comment"),
        "{}",
        run.both()
    );
    let after = server.comments(7);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, comments[0].id);
    assert!(after[0].body.contains(&format!("at commit `{head2}`")));
    let calls: Vec<(String, String)> = server
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            (
                "GET".into(),
                "/repos/acme/ml-infra/issues/7/comments?per_page=100&page=1".into()
            ),
            (
                "PATCH".into(),
                format!("/repos/acme/ml-infra/issues/comments/{}", comments[0].id)
            ),
            (
                "POST".into(),
                format!("/repos/acme/ml-infra/statuses/{head2}")
            ),
        ]
    );
    assert!(server.requests().iter().all(|r| r.authorized));
    assert!(server.unexpected().is_empty(), "{:?}", server.unexpected());
}

#[test]
fn plan_comment_from_flags_retries_a_502() {
    let (root, base, head) = pull_request();
    let server = FakeGitHub::start(REPO, TOKEN, &[12]);
    server.fail(
        Some("GET"),
        "/issues/12/comments",
        502,
        1,
        &[],
        "<html>bad gateway</html>",
    );
    let run = cairn(
        &root,
        &server,
        &[
            "plan",
            "ROOT",
            "--rev",
            &head,
            "--comment",
            "--pr",
            "12",
            "--sha",
            &head,
            "--base",
            &base,
        ],
        Some(TOKEN),
        None,
    );
    run.ok();
    let gets = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/issues/12/comments"))
        .count();
    assert_eq!(gets, 2, "the 502 is retried once");
    assert_eq!(server.comments(12).len(), 1);
    assert_eq!(server.statuses()[0].0, head);
}

#[test]
fn github_errors_say_what_is_missing_and_never_show_the_token() {
    let (root, _base, head) = pull_request();
    let plan = |server: &FakeGitHub, pr: &str, token: Option<&str>| {
        cairn(
            &root,
            server,
            &[
                "plan",
                "ROOT",
                "--rev",
                &head,
                "--comment",
                "--pr",
                pr,
                "--sha",
                &head,
            ],
            token,
            None,
        )
    };

    // A token GitHub does not accept.
    let server = FakeGitHub::start(REPO, "ghp_TheRightOne", &[7]);
    let run = plan(&server, "7", Some(TOKEN));
    run.code(1);
    assert!(
        run.stderr.contains("GitHub rejected the token (401 Unauthorized) while listing the pull request's comments"),
        "{}",
        run.both()
    );
    assert!(run.stderr.contains("check GITHUB_TOKEN"), "{}", run.both());

    // A pull request that does not exist (or that the token can't see).
    let server = FakeGitHub::start(REPO, TOKEN, &[7]);
    let run = plan(&server, "99", Some(TOKEN));
    run.code(1);
    assert!(
        run.stderr.contains("pull request #99 in acme/ml-infra was not found (404 Not Found while listing the pull request's comments)"),
        "{}",
        run.both()
    );

    // A token without the statuses permission.
    server.fail(
        Some("POST"),
        "/statuses/",
        403,
        1,
        &[],
        r#"{"message": "Resource not accessible by integration"}"#,
    );
    let run = plan(&server, "7", Some(TOKEN));
    run.code(1);
    assert!(
        run.stderr
            .contains("the token lacks `statuses: write` on acme/ml-infra"),
        "{}",
        run.both()
    );
    assert!(
        run.stderr.contains("permissions: { statuses: write }"),
        "{}",
        run.both()
    );

    // No token at all: nothing is sent.
    let server = FakeGitHub::start(REPO, TOKEN, &[7]);
    let run = plan(&server, "7", None);
    run.code(1);
    assert!(
        run.stderr.contains("GITHUB_TOKEN is not set"),
        "{}",
        run.both()
    );
    assert!(server.requests().is_empty());
    assert!(
        run.stdout.is_empty(),
        "fails before planning: {}",
        run.both()
    );
}

#[test]
fn a_plan_that_cannot_be_made_fails_the_commit_status() {
    let (root, base, _) = pull_request();
    root.write(
        "risk/train.toml",
        "[job.train]\ncompute = \"compute.nowhere\"\n",
    );
    let head = root.git_commit_all("broken");
    let server = FakeGitHub::start(REPO, TOKEN, &[7]);
    let run = plan_comment(&root, &server, 7, &base, &head);
    run.code(1);
    let statuses = server.statuses();
    assert_eq!(statuses.len(), 1, "{}", run.both());
    assert_eq!(statuses[0].0, head);
    assert_eq!(statuses[0].1["state"], "failure");
    let description = statuses[0].1["description"].as_str().unwrap();
    assert!(
        description.starts_with("The plan failed: the manifests in "),
        "{description}"
    );
    assert!(description.chars().count() <= 140);
    assert!(server.comments(7).is_empty());
}

/// Makes `main` the current branch at HEAD, whatever `git init` named it.
fn on_main(root: &Root) {
    let repo = git2::Repository::open(root.path()).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    if repo.find_branch("main", git2::BranchType::Local).is_err() {
        repo.branch("main", &head, false).unwrap();
    }
    repo.set_head("refs/heads/main").unwrap();
}

#[test]
fn drift_opens_an_issue_and_a_clean_check_closes_it() {
    let root = manifests(&Job::default());
    root.git_commit_all("base");
    on_main(&root);
    let server = FakeGitHub::start(REPO, TOKEN, &[]);
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();

    // Live matches main: exit 0, no issue.
    let run = cairn(
        &root,
        &server,
        &["drift", "ROOT", "--github-issue"],
        Some(TOKEN),
        None,
    );
    run.ok();
    assert!(run.stdout.starts_with("No drift."), "{}", run.both());
    assert!(server.issues().is_empty());

    // main moves on without an apply: drift.
    root.edit_row(99_000);
    let head = root.git_commit_all("more income");
    let run = cairn(
        &root,
        &server,
        &["drift", "ROOT", "--github-issue"],
        Some(TOKEN),
        None,
    );
    run.code(2);
    assert!(
        run.stdout.starts_with(&format!(
            "Drift: 3 resources live differ from the manifests at main ({}).",
            &head[..7]
        )),
        "{}",
        run.both()
    );
    assert!(
        run.stdout.contains("~ risk/dataset.loans"),
        "{}",
        run.both()
    );
    assert!(
        run.stdout.contains("- version: "),
        "per field: {}",
        run.both()
    );
    assert!(
        run.stderr.contains("Opened drift issue #1"),
        "{}",
        run.both()
    );
    let issues = server.issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].labels, ["drift"]);
    assert_eq!(issues[0].title, "Drift: 3 resources differ from main");
    assert!(issues[0]
        .body
        .starts_with("<!-- cairn:drift key=risk -->\n"));
    assert!(
        issues[0].body.contains("<code>risk/dataset.loans</code>"),
        "{}",
        issues[0].body
    );

    // The same report as JSON, without GitHub.
    let run = root.cairn(&["drift", "ROOT", "--format", "json"]);
    run.code(2);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["resources"][0]["address"], "risk/dataset.loans");
    assert_eq!(report["resources"][0]["fields"][0]["path"], "version");

    // Still drifted: the same issue.
    let run = cairn(
        &root,
        &server,
        &["drift", "ROOT", "--rev", "main", "--github-issue"],
        Some(TOKEN),
        None,
    );
    run.code(2);
    assert!(
        run.stderr.contains("Updated drift issue #1"),
        "{}",
        run.both()
    );
    assert_eq!(server.issues().len(), 1);

    // Applied: the check is clean and closes the issue with a comment.
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let run = cairn(
        &root,
        &server,
        &["drift", "ROOT", "--github-issue"],
        Some(TOKEN),
        None,
    );
    run.ok();
    assert!(
        run.stderr.contains("Closed drift issue #1"),
        "{}",
        run.both()
    );
    let issues = server.issues();
    assert_eq!(issues[0].state, "closed");
    let closing = server.comments(1);
    assert_eq!(closing.len(), 1);
    assert!(
        closing[0].body.starts_with("No drift found at main"),
        "{}",
        closing[0].body
    );
    assert!(server.unexpected().is_empty(), "{:?}", server.unexpected());
}

#[test]
fn drift_without_a_default_branch_says_so() {
    let root = manifests(&Job::default());
    let run = root.cairn(&["drift", "ROOT"]);
    run.code(1);
    assert!(
        run.stderr.contains("no default branch found") && run.stderr.contains("--rev"),
        "{}",
        run.both()
    );
}

/// The acceptance case end to end: a pull request that makes the production
/// `credit-risk` endpoint unauthenticated. `cairn plan --comment` exits 1, the comment
/// opens with the deny naming the file and the resource, and the commit status fails.
#[test]
fn a_pull_request_making_a_production_endpoint_unauthenticated_is_denied() {
    let root = manifests(&Job::default());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/credit-risk");
    crate::support::copy_dir(&example, &root.path().join("credit-risk"));
    let base = root.git_commit_all("base");
    let serve = root.path().join("credit-risk/serve.toml");
    let text = std::fs::read_to_string(&serve).unwrap();
    assert!(text.contains("auth = \"key\""));
    std::fs::write(&serve, text.replace("auth = \"key\"", "auth = \"none\"")).unwrap();
    let head = root.git_commit_all("open the scoring API");
    let server = FakeGitHub::start(REPO, TOKEN, &[9]);
    let run = plan_comment(&root, &server, 9, &base, &head);
    run.code(1);
    assert!(
        run.stderr
            .contains("the policies deny this plan (1 message); see the pull request comment"),
        "{}",
        run.both()
    );
    let comments = server.comments(9);
    assert_eq!(comments.len(), 1, "{}", run.both());
    let body = &comments[0].body;
    let deny = body.find("credit-risk/endpoint.risk-api").expect(body);
    let plan = body.find("| Workspace").unwrap_or(body.len());
    assert!(deny < plan, "the deny comes before the plan:\n{body}");
    assert!(body.contains("credit-risk/serve.toml"), "{body}");
    assert!(body.contains("Denied by policy"), "{body}");
    assert!(
        body.contains("- `credit-risk/endpoint.risk-api`: `credit-risk/serve.toml`"),
        "the PR's changed file is traced to the endpoint:\n{body}"
    );

    let statuses = server.statuses();
    assert_eq!(statuses.len(), 1, "{}", run.both());
    assert_eq!(statuses[0].0, head);
    assert_eq!(statuses[0].1["state"], "failure");
    let description = statuses[0].1["description"].as_str().unwrap();
    assert!(
        description.starts_with("Denied by 1 policy."),
        "{description}"
    );
    assert!(server.unexpected().is_empty(), "{:?}", server.unexpected());
}

/// The job's `env` in `risk/train.toml` (the fixture's job, with these variables).
fn job_env(root: &Root, env: &str) {
    let path = root.path().join("risk/train.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("retries = ", &format!("env = {{ {env} }}\nretries = "), 1);
    std::fs::write(path, text).unwrap();
}

/// A pull request that changes a job's `env`: the comment shows that each value
/// changed, never a value, sensitive-looking or not.
#[test]
fn plan_comment_shows_no_env_value() {
    let root = manifests(&Job::default());
    job_env(
        &root,
        "DB_PASSWORD = \"pw-PLANTED-1\", SEED = \"seed-PLANTED-1\"",
    );
    let base = root.git_commit_all("base");
    root.command(&["apply", "ROOT", "--auto-approve"])
        .output()
        .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
        .unwrap();
    root.set_job(&Job::default());
    job_env(
        &root,
        "DB_PASSWORD = \"pw-PLANTED-2\", SEED = \"seed-PLANTED-2\"",
    );
    let head = root.git_commit_all("new secrets");
    let server = FakeGitHub::start(REPO, TOKEN, &[9]);
    let run = plan_comment(&root, &server, 9, &base, &head);
    run.ok();
    let comments = server.comments(9);
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    for planted in ["pw-PLANTED", "seed-PLANTED"] {
        assert!(
            !body.contains(planted),
            "the comment shows `{planted}`:\n{body}"
        );
    }
    // The log shows what isn't sensitive, like `cairn plan`.
    assert!(!run.both().contains("pw-PLANTED"), "{}", run.both());
    assert!(run.stdout.contains("seed-PLANTED-2"), "{}", run.both());
    assert!(body.contains("+ env.SEED: (sensitive)"), "{body}");
    assert!(body.contains("- env.DB_PASSWORD: (sensitive)"), "{body}");
    insta::with_settings!({filters => vec![
        (r"\b[0-9a-f]{40}\b", "[COMMIT]"),
        (r"\b[0-9a-f]{7,12}\b", "[ID]"),
    ]}, {
        insta::assert_snapshot!("comment_without_env_values", body);
    });
}

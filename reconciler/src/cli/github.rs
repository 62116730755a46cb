//! GitHub from the command line: where the token, repository, pull request and commit
//! come from (flags, then the variables GitHub Actions sets), posting the plan comment
//! and commit status for `cairn plan --comment`, and turning the library's
//! [`cairn::github::Error`]s into messages with hints, all in one place.
//!
//! The token is read from `GITHUB_TOKEN` only (never a flag, so it stays out of process
//! lists and shell history) and goes straight to the client; nothing here prints it.

use cairn::changes::{self, PullRequestChanges};
use cairn::github::client::StatusState;
use cairn::github::comment::{self, CommentInput, COMMENT_TEMPLATE};
use cairn::github::publish::{self, CommentSync};
use cairn::github::{GitHub, PullRequestEvent, Repo};
use cairn::plan::Plan;

use super::context::Loaded;
use super::{CommandError, ErrorKind, SourceArgs};

/// The public API; GitHub Actions sets `GITHUB_API_URL` (also for Enterprise Server).
const DEFAULT_API: &str = "https://api.github.com";

/// Where GitHub is and which repository: shared by `plan --comment` and
/// `drift --github-issue`.
#[derive(Debug, Clone, clap::Args)]
pub struct GitHubArgs {
    /// The repository, `owner/name` [default: $GITHUB_REPOSITORY, or the event's].
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,

    /// GitHub's REST API base URL [default: $GITHUB_API_URL, or https://api.github.com].
    #[arg(long, value_name = "URL")]
    pub github_api: Option<String>,
}

/// `cairn plan --comment` and what it needs.
#[derive(Debug, Clone, clap::Args)]
pub struct CommentArgs {
    /// Post the plan as one sticky comment on the pull request (updated in place on each
    /// push) and set the `cairn/plan` commit status. Needs GITHUB_TOKEN; the pull
    /// request comes from the `pull_request` event GitHub Actions provides, or --pr.
    #[arg(long)]
    pub comment: bool,

    /// The pull request number [default: the event's].
    #[arg(long, value_name = "NUMBER", requires = "comment")]
    pub pr: Option<u64>,

    /// The commit to set the status on [default: the event's head commit, or the commit
    /// planned].
    #[arg(long, value_name = "SHA", requires = "comment")]
    pub sha: Option<String>,

    /// The revision the pull request merges into, for the list of resources it touches
    /// [default: the event's base commit].
    #[arg(long, value_name = "REV", requires = "comment")]
    pub base: Option<String>,

    #[command(flatten)]
    pub github: GitHubArgs,
}

/// A connected client and its repository.
pub struct Connection {
    pub gh: GitHub,
    pub repo: Repo,
}

/// The pull request a plan comment goes to.
pub struct PrTarget {
    pub conn: Connection,
    pub number: u64,
    pub sha: Option<String>,
    pub base: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The `pull_request` event of this workflow run, if there is one.
fn event() -> Result<Option<PullRequestEvent>, CommandError> {
    let Some(path) = env("GITHUB_EVENT_PATH") else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            return Err(CommandError::user(format!(
                "cannot read the GitHub event at {path} (GITHUB_EVENT_PATH): {e}"
            )))
        }
    };
    match PullRequestEvent::from_json(&text) {
        Ok(event) => Ok(Some(event)),
        Err(cairn::github::event::Error::NotAPullRequest) => Ok(None),
        Err(e) => Err(
            CommandError::from_error(ErrorKind::User, &e).hint_opt(Some(format!(
                "GITHUB_EVENT_PATH points at {path}, which should hold the event's JSON"
            ))),
        ),
    }
}

/// Connects to GitHub with the token from `GITHUB_TOKEN`; the client's worker runs on
/// `rt`.
pub fn connect(
    rt: &tokio::runtime::Runtime,
    args: &GitHubArgs,
    event_repo: Option<&str>,
) -> Result<Connection, CommandError> {
    let repo_text = args
        .repo
        .clone()
        .or_else(|| env("GITHUB_REPOSITORY"))
        .or_else(|| event_repo.map(str::to_string))
        .ok_or_else(|| {
            CommandError::user("no GitHub repository given").hint_opt(Some(
                "pass --repo owner/name (GitHub Actions sets GITHUB_REPOSITORY)".into(),
            ))
        })?;
    let repo = Repo::parse(&repo_text).ok_or_else(|| {
        CommandError::user(format!(
            "`{repo_text}` is not a GitHub repository: expected `owner/name`"
        ))
    })?;
    let token = env("GITHUB_TOKEN").ok_or_else(|| {
        CommandError::user("GITHUB_TOKEN is not set: Cairn needs a token to talk to GitHub")
            .hint_opt(Some(
            "in a workflow add `env: { GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }} }` to the step"
                .into(),
        ))
    })?;
    let api = args
        .github_api
        .clone()
        .or_else(|| env("GITHUB_API_URL"))
        .unwrap_or_else(|| DEFAULT_API.to_string());
    let gh = {
        let _inside = rt.enter();
        GitHub::connect(&api, &token).map_err(error)?
    };
    Ok(Connection { gh, repo })
}

/// Works out the pull request to comment on, before planning, so a missing token or
/// pull request fails fast.
pub fn pr_target(
    rt: &tokio::runtime::Runtime,
    args: &CommentArgs,
) -> Result<PrTarget, CommandError> {
    let event = event()?;
    let conn = connect(
        rt,
        &args.github,
        event.as_ref().and_then(|e| e.repository.as_deref()),
    )?;
    let number = args
        .pr
        .or(event.as_ref().map(|e| e.number))
        .ok_or_else(|| {
            CommandError::user("no pull request to comment on").hint_opt(Some(
                "run on a `pull_request` event (GITHUB_EVENT_PATH), or pass --pr NUMBER".into(),
            ))
        })?;
    let sha = args
        .sha
        .clone()
        .or_else(|| event.as_ref().map(|e| e.head_sha.clone()));
    if let Some(sha) = &sha {
        if sha.len() < 7 || sha.len() > 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(CommandError::user(format!(
                "`{sha}` is not a commit id (--sha takes the full hexadecimal id)"
            )));
        }
    }
    let base = args
        .base
        .clone()
        .or_else(|| event.as_ref().map(|e| e.base_sha.clone()));
    Ok(PrTarget {
        conn,
        number,
        sha,
        base,
    })
}

/// The one place GitHub errors become messages: the library's message and hint, plus
/// what to do about the token.
pub fn error(e: cairn::github::Error) -> CommandError {
    use cairn::github::Error as E;
    let kind = match e {
        E::BadApiUrl(_) | E::BadToken => ErrorKind::User,
        _ => ErrorKind::Target,
    };
    let mut err = CommandError::from_error(kind, &e).hint_opt(e.hint());
    if matches!(e, E::Unauthorized { .. }) {
        err.hints.push(
            "check GITHUB_TOKEN (in a workflow: `GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}`)"
                .into(),
        );
    }
    err
}

/// What the pull request changes: the changed files between its base and the commit
/// planned, and the resources they touch. `None` without a base.
fn pr_changes(
    plan: &Plan,
    loaded: &Loaded,
    source: &SourceArgs,
    base: Option<&str>,
) -> Option<PullRequestChanges> {
    let base = base?;
    let root = source.root();
    let head = plan.revision.clone()?;
    match changes::changed_files(&root, base, &head) {
        Ok(changed) => {
            let base_snapshot = cairn::manifest::load_revision(&root, &changed.base).ok();
            let touched = changes::touched(&changed, &loaded.desired, base_snapshot.as_ref());
            Some(PullRequestChanges {
                changed,
                touched,
                note: None,
            })
        }
        Err(e) => {
            let mut note = format!(
                "The resources this pull request touches are unknown: {}.",
                cairn::diagnostics::error_chain(&e)
            );
            if let Some(hint) = e.hint() {
                note.push_str(&format!(" Hint: {hint}."));
            }
            eprintln!("Note: {note}");
            Some(PullRequestChanges {
                changed: changes::ChangedFiles {
                    base: base.to_string(),
                    head,
                    files: Vec::new(),
                    outside: 0,
                },
                touched: Vec::new(),
                note: Some(note),
            })
        }
    }
}

/// Posts (or updates) the plan comment and sets the commit status. Returns an error
/// after posting when a policy denies the plan, so the check fails.
pub fn comment_on_plan(
    rt: &tokio::runtime::Runtime,
    target: &PrTarget,
    plan: &Plan,
    loaded: &Loaded,
    source: &SourceArgs,
) -> Result<(), CommandError> {
    let pr = pr_changes(plan, loaded, source, target.base.as_deref());
    let key = comment::key_for(plan);
    let input = CommentInput {
        plan,
        key: &key,
        pr: pr.as_ref(),
    };
    let parts = comment::build(&input, COMMENT_TEMPLATE)
        .map_err(|e| CommandError::from_error(ErrorKind::Internal, &e))?;
    let Connection { gh, repo } = &target.conn;
    let sync: CommentSync = rt
        .block_on(publish::sync_comment(gh, repo, target.number, &key, &parts))
        .map_err(error)?;
    let denied = plan.policy.as_ref().is_some_and(|p| p.denied());
    let sha = target.sha.clone().or_else(|| plan.revision.clone());
    match &sha {
        Some(sha) => {
            let (state, description) = publish::plan_status(plan);
            rt.block_on(publish::set_status(
                gh,
                repo,
                sha,
                state,
                &description,
                sync.urls.first().map(String::as_str),
            ))
            .map_err(error)?;
        }
        None => eprintln!("Note: no commit to set the status on (pass --sha)."),
    }
    eprintln!(
        "{} the plan comment on {repo}#{} ({} part{}{}): {}",
        if sync.created == parts.len() {
            "Posted"
        } else {
            "Updated"
        },
        target.number,
        parts.len(),
        if parts.len() == 1 { "" } else { "s" },
        if sync.deleted > 0 {
            format!(", {} outdated removed", sync.deleted)
        } else {
            String::new()
        },
        sync.urls.first().map(String::as_str).unwrap_or("")
    );
    if denied {
        let n = plan.policy.as_ref().map_or(0, |p| p.deny.len());
        return Err(CommandError::policy(format!(
            "the policies deny this plan ({n} message{}); see the pull request comment",
            if n == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

/// Best effort, when planning failed: a failing `cairn/plan` status saying why.
pub fn report_failure(rt: &tokio::runtime::Runtime, target: &PrTarget, why: &str) {
    let Some(sha) = &target.sha else { return };
    let description = format!("The plan failed: {why}");
    let result = rt.block_on(publish::set_status(
        &target.conn.gh,
        &target.conn.repo,
        sha,
        StatusState::Failure,
        &description,
        None,
    ));
    if let Err(e) = result {
        let e = error(e);
        eprintln!(
            "Note: could not set the failing commit status: {}",
            e.message
        );
    }
}

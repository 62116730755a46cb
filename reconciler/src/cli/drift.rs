//! `cairn drift`: plan the default branch's manifests against what is live; anything the
//! plan would change is drift. Monitored endpoints' captured requests are compared with
//! their serving model's training data (input drift). Exit 0 when nothing drifted, 2
//! when something did, 1 on errors. `--github-issue` keeps one issue labelled `drift`
//! open while drift lasts.

use cairn::drift::{DriftReport, DRIFT_MARKDOWN_TEMPLATE};
use cairn::github::comment::{key_for, GITHUB_COMMENT_LIMIT};
use cairn::github::publish::{self, DriftIssue};

use super::context;
use super::github::GitHubArgs;
use super::plan::{make_plan, PlanRequest};
use super::{CommandError, ErrorKind, Outcome, Output, PlanFormat, SourceArgs};

/// Revisions tried, in order, when `--rev` is not given.
const DEFAULT_REVS: [&str; 2] = ["origin/HEAD", "main"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests root: a folder with one subfolder per workspace. Defaults to
    /// `manifests` when that folder exists, else the current folder.
    pub path: Option<std::path::PathBuf>,

    /// The revision holding the truth [default: origin/HEAD, else main].
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,

    /// Check only these workspaces (repeatable). Default: every workspace that can be
    /// planned.
    #[arg(short, long = "workspace", value_name = "NAME")]
    pub workspaces: Vec<String>,

    /// Output format of the report.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,

    /// Open an issue labelled `drift` with the report (or update the open one), and
    /// close it with a comment when a later check finds no drift. Needs GITHUB_TOKEN.
    #[arg(long)]
    pub github_issue: bool,

    #[command(flatten)]
    pub github: GitHubArgs,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let rt = super::runtime()?;
    let conn = match args.github_issue {
        true => Some(super::github::connect(&rt, &args.github, None)?),
        false => None,
    };
    let mut source = SourceArgs {
        path: args.path.clone(),
        rev: args.rev.clone(),
    };
    if source.rev.is_none() {
        let found = cairn::changes::first_existing_revision(&source.root(), &DEFAULT_REVS);
        source.rev = Some(found.ok_or_else(|| {
            CommandError::user(format!(
                "no default branch found in the repository holding {}: neither {} names a commit",
                source.root().display(),
                DEFAULT_REVS.join(" nor ")
            ))
            .hint_opt(Some(
                "pass --rev with the branch that holds the truth".into(),
            ))
        })?);
    }
    let loaded = context::load(&source, output)?;
    let selection = context::select(&loaded, &args.workspaces)?;
    let cache = super::context::hash_cache(&loaded.root);
    let targets = context::targets(&loaded, &selection, std::collections::BTreeMap::new());
    let request = PlanRequest {
        source: &source,
        cache: &cache,
        destroy: false,
    };
    let plan = make_plan(&rt, &loaded, &selection, &targets, &request, output)?;
    let mut report = DriftReport::from_plan(&plan);
    let scratch = context::local_dir(&loaded.root).join("cache").join("drift");
    input_drift(&rt, &plan, &selection, &targets, &scratch, &mut report);

    match args.format {
        PlanFormat::Text => print!("{}", report.text()),
        PlanFormat::Json => println!("{}", report.to_json()),
        PlanFormat::Markdown => print!(
            "{}",
            report
                .markdown(DRIFT_MARKDOWN_TEMPLATE, GITHUB_COMMENT_LIMIT)
                .map_err(|e| CommandError::from_error(ErrorKind::Internal, &e))?
        ),
    }

    if let Some(conn) = &conn {
        let key = key_for(&plan);
        let body;
        let title = report.title();
        let issue_report = if report.drifted() {
            // Room for the marker on top.
            body = report
                .markdown(DRIFT_MARKDOWN_TEMPLATE, GITHUB_COMMENT_LIMIT - 200)
                .map_err(|e| CommandError::from_error(ErrorKind::Internal, &e))?;
            Some((title.as_str(), body.as_str()))
        } else {
            None
        };
        let closing = format!(
            "No drift found at {}: what is live matches the manifests again. Closing.",
            report.source()
        );
        let outcome = rt
            .block_on(publish::sync_drift_issue(
                &conn.gh,
                &conn.repo,
                &key,
                issue_report,
                &closing,
            ))
            .map_err(super::github::error)?;
        match outcome {
            DriftIssue::Opened { number, url } => {
                eprintln!("Opened drift issue #{number}: {url}")
            }
            DriftIssue::Updated { number, url } => {
                eprintln!("Updated drift issue #{number}: {url}")
            }
            DriftIssue::Closed { number, url } => {
                eprintln!("Closed drift issue #{number}: {url}")
            }
            DriftIssue::NothingOpen => {}
        }
    }
    Ok(if report.drifted() {
        Outcome::Changes
    } else {
        Outcome::Success
    })
}

/// The most captured requests of one endpoint a check reads (the newest).
const CAPTURED_REQUESTS: usize = 20_000;

/// Adds each monitored endpoint's input drift to `report`; an endpoint that can't be
/// checked is a note, not an error.
fn input_drift(
    rt: &tokio::runtime::Runtime,
    plan: &cairn::plan::Plan,
    selection: &context::Selection,
    targets: &cairn::backend::target::Targets,
    scratch: &std::path::Path,
    report: &mut DriftReport,
) {
    use cairn::address::Kind;
    use cairn::plan::endpoint::EndpointValue;
    for change in plan
        .resource_changes
        .iter()
        .filter(|c| c.kind == Kind::Endpoint)
    {
        // What serves: the applied value (the state's).
        let Some(serving) = change
            .before
            .as_ref()
            .and_then(|b| serde_json::from_value::<EndpointValue>(b.clone()).ok())
        else {
            continue;
        };
        if serving.monitor.is_none() {
            continue;
        }
        let (Some(store), Some(target)) = (
            selection.stores.get(&change.workspace),
            change.target.as_deref().and_then(|t| targets.get(t)),
        ) else {
            continue;
        };
        let bodies = match rt.block_on(target.captured_requests(
            store,
            &change.address,
            CAPTURED_REQUESTS,
        )) {
            Ok(bodies) => bodies,
            Err(e) => {
                report.notes.push(format!(
                    "{}: its captured requests could not be read: {}",
                    change.address,
                    cairn::diagnostics::error_chain(&e)
                ));
                continue;
            }
        };
        if bodies.is_empty() {
            report.notes.push(format!(
                "{}: no requests captured yet, so its inputs were not checked",
                change.address
            ));
            continue;
        }
        match rt.block_on(cairn::monitoring::check(
            store,
            &change.address,
            &serving,
            &bodies,
            scratch,
        )) {
            Ok(Some(inputs)) => report.inputs.push(inputs),
            Ok(None) => {}
            Err(e) => report.notes.push(format!(
                "{}: its inputs were not checked: {}",
                change.address,
                cairn::diagnostics::error_chain(&e)
            )),
        }
    }
}

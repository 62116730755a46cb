//! `cairn plan`: what `apply` would do, and why.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn::backend::local::{LocalTarget, Target};
use cairn::content::HashCache;
use cairn::plan::{Plan, PlanSource, Planner};
use cairn::serving::{EndpointId, LiveEndpoint};

use super::context::{self, Loaded, Selection};
use super::progress::Progress;
use super::{render, CommandError, ErrorKind, Outcome, Output, PlanFormat, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Plan only these workspaces (repeatable). Default: every workspace that can be
    /// planned.
    #[arg(short, long = "workspace", value_name = "NAME")]
    pub workspaces: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,

    /// Also save the plan as JSON, for `cairn apply <file>`.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Exit 2 when the plan has changes, 0 when it has none, 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,

    #[command(flatten)]
    pub github: super::github::CommentArgs,
}

/// Makes a plan from loaded manifests, hashing sources through `cache` (and saving it).
/// Shared with `apply`, which hands in the cache it uploads with, so that each file is
/// hashed once per run.
pub fn make_plan(
    rt: &tokio::runtime::Runtime,
    loaded: &Loaded,
    selection: &Selection,
    source: &SourceArgs,
    cache: &HashCache,
    output: Output,
) -> Result<Plan, CommandError> {
    // Looking for GPUs loads the CUDA driver library; only do it when a job wants GPUs.
    let wants_gpus = loaded
        .desired
        .resources
        .iter()
        .any(|r| matches!(&r.spec, cairn::manifest::Spec::Job(j) if j.gpus() > 0));
    let target = if wants_gpus {
        LocalTarget::detect()
    } else {
        LocalTarget::with_gpus(Vec::new())
    };
    let live = observe_serving(rt, loaded, selection)?;
    let kube = context::observe_kube(rt, loaded, selection)?;
    let progress = Progress::new(output.progress);
    let planner = Planner {
        snapshot: &loaded.snapshot,
        desired: &loaded.desired,
        stores: &selection.stores,
        cache,
        local_gpus: target.observe().gpus.len(),
        events: &progress,
        source: PlanSource {
            root: source.root().display().to_string(),
            rev: source.rev.clone(),
        },
        serving: Some(&live),
        kube: kube.as_ref(),
    };
    let result = rt.block_on(planner.plan());
    // A cache that can't be saved only costs time on the next plan.
    let _ = cache.save();
    let mut plan = match result {
        Ok(plan) => plan,
        Err(cairn::plan::Error::Blocked(diagnostics)) => {
            render::diagnostics(&loaded.snapshot, &diagnostics, output);
            return Err(CommandError::user(format!(
                "the plan can't be made: {} problem(s) above",
                diagnostics.error_count()
            )));
        }
        Err(e) => {
            let kind = match &e {
                cairn::plan::Error::Store { source, .. } => super::store_kind(source),
                // A workspace without an open store is the CLI's mistake.
                _ => ErrorKind::Internal,
            };
            return Err(CommandError::from_error(kind, &e));
        }
    };
    plan.notes.extend(selection.skipped.iter().cloned());
    let report = cairn::policy::check(&loaded.snapshot, &loaded.desired, &plan)
        .map_err(|e| super::policy::policy_error(&e))?;
    plan.policy = Some(report);
    Ok(plan)
}

/// What serves the selected workspaces' endpoints now (asks a running supervisor; starts
/// none).
fn observe_serving(
    rt: &tokio::runtime::Runtime,
    loaded: &Loaded,
    selection: &Selection,
) -> Result<BTreeMap<String, LiveEndpoint>, CommandError> {
    let endpoints: Vec<EndpointId> = loaded
        .desired
        .resources
        .iter()
        .filter(|r| r.kind() == cairn::Kind::Endpoint)
        .filter(|r| selection.stores.contains_key(&r.address.workspace))
        .map(|r| EndpointId {
            workspace: r.address.workspace.clone(),
            name: r.address.name.clone(),
        })
        .collect();
    if endpoints.is_empty() {
        return Ok(BTreeMap::new());
    }
    let serving = context::local_serving(loaded, BTreeMap::new());
    rt.block_on(serving.observe_all(&endpoints)).map_err(|e| {
        CommandError::from_error(ErrorKind::Target, &e).hint_opt(Some(format!(
            "the local supervisor's log is {}",
            context::serving_dir(&loaded.root)
                .join(cairn::backend::local::supervisor::LOG_FILE)
                .display()
        )))
    })
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let rt = super::runtime()?;
    // With --comment, the token and pull request are checked before planning.
    let target = match args.github.comment {
        true => Some(super::github::pr_target(&rt, &args.github)?),
        false => None,
    };
    let planned = context::load(&args.source, output).and_then(|loaded| {
        let selection = context::select(&loaded, &args.workspaces)?;
        let cache = context::hash_cache(&loaded.root);
        let plan = make_plan(&rt, &loaded, &selection, &args.source, &cache, output)?;
        Ok((loaded, plan))
    });
    let (loaded, plan) = match (planned, &target) {
        (Ok(planned), _) => planned,
        (Err(e), Some(target)) => {
            super::github::report_failure(&rt, target, &e.message);
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    if let Some(path) = &args.out {
        std::fs::write(path, plan.to_json()).map_err(|e| {
            CommandError::user(format!("cannot write the plan to {}: {e}", path.display()))
        })?;
    }
    print_plan(&plan, args.format, output)?;
    if let Some(target) = &target {
        super::github::comment_on_plan(&rt, target, &plan, &loaded, &args.source)?;
    }
    if let Some(path) = &args.out {
        eprintln!(
            "Saved the plan to {}. Apply exactly it with `cairn apply {}`.",
            path.display(),
            path.display()
        );
    }
    if let Some(report) = plan.policy.as_ref().filter(|r| r.denied()) {
        return Err(super::policy::denied(
            report,
            "the plan is denied by policy",
        ));
    }
    let outcome = if args.detailed_exitcode && plan.has_changes() {
        Outcome::Changes
    } else {
        Outcome::Success
    };
    // The process ends right after: freeing a large desired state and plan piece by piece
    // would only cost time.
    std::mem::forget(loaded);
    std::mem::forget(plan);
    Ok(outcome)
}

pub fn print_plan(plan: &Plan, format: PlanFormat, output: Output) -> Result<(), CommandError> {
    match format {
        PlanFormat::Text => print!("{}", cairn::render::text(plan, output.color_stdout)),
        PlanFormat::Json => println!("{}", plan.to_json()),
        PlanFormat::Markdown => {
            let text = cairn::render::markdown(plan, cairn::render::PLAN_MARKDOWN_TEMPLATE)
                .map_err(|e| CommandError::from_error(ErrorKind::Internal, &e))?;
            print!("{text}");
        }
    }
    Ok(())
}

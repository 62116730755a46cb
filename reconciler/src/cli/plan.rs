//! `cairn plan`: what `apply` would do, and why.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn::backend::target::Targets;
use cairn::content::HashCache;
use cairn::plan::{Plan, PlanSource};
use cairn::planner::Planner;

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

    /// Plan the removal of everything the workspaces' states record, as `cairn destroy`
    /// would (save it with `-o` and apply it with `cairn apply FILE`).
    #[arg(long)]
    pub destroy: bool,

    #[command(flatten)]
    pub github: super::github::CommentArgs,
}

/// Makes a plan from loaded manifests, hashing sources through `cache` (and saving it),
/// after observing `targets`. Shared with `apply`, which hands in the cache it uploads
/// with (so that each file is hashed once per run) and the targets it applies with.
pub fn make_plan(
    rt: &tokio::runtime::Runtime,
    loaded: &Loaded,
    selection: &Selection,
    targets: &Targets,
    plan: &PlanRequest,
    output: Output,
) -> Result<Plan, CommandError> {
    context::observe(rt, targets, loaded, selection)?;
    let progress = Progress::new(output.progress);
    let planner = Planner {
        snapshot: &loaded.snapshot,
        desired: &loaded.desired,
        stores: &selection.stores,
        cache: plan.cache,
        events: &progress,
        source: PlanSource {
            root: plan.source.root().display().to_string(),
            rev: plan.source.rev.clone(),
            uncommitted: loaded.snapshot.has_uncommitted_changes(),
        },
        targets,
        destroy: plan.destroy,
    };
    let result = rt.block_on(planner.plan());
    // A cache that can't be saved only costs time on the next plan.
    let _ = plan.cache.save();
    let mut plan = match result {
        Ok(plan) => plan,
        Err(cairn::planner::Error::Blocked(diagnostics)) => {
            render::diagnostics(&loaded.snapshot, &diagnostics, output);
            return Err(CommandError::user(format!(
                "the plan can't be made: {} problem(s) above",
                diagnostics.error_count()
            )));
        }
        Err(e) => {
            let kind = match &e {
                cairn::planner::Error::Store { source, .. } => super::store_kind(source),
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

/// What to plan besides the manifests: where they came from, the hash cache, and
/// whether it is a destroy.
pub struct PlanRequest<'a> {
    pub source: &'a SourceArgs,
    pub cache: &'a HashCache,
    pub destroy: bool,
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
        let targets = context::targets(&loaded, &selection, BTreeMap::new());
        let request = PlanRequest {
            source: &args.source,
            cache: &cache,
            destroy: args.destroy,
        };
        let plan = make_plan(&rt, &loaded, &selection, &targets, &request, output)?;
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
        PlanFormat::Text => print!("{}", cairn::view::text(plan, output.color_stdout)),
        PlanFormat::Json => println!("{}", plan.to_json()),
        PlanFormat::Markdown => {
            let text = cairn::view::markdown(plan, cairn::view::PLAN_MARKDOWN_TEMPLATE)
                .map_err(|e| CommandError::from_error(ErrorKind::Internal, &e))?;
            print!("{text}");
        }
    }
    Ok(())
}

//! `cairn apply`: carry out a plan — a fresh one (after confirmation) or a saved one,
//! exactly as saved.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::apply::{Applier, ApplyOptions, Status};
use cairn::backend::local::LocalTarget;
use cairn::backend::store::{Store, MAX_LOCK_LEASE};
use cairn::plan::Plan;

use super::context;
use super::plan::{make_plan, print_plan};
use super::progress::Progress;
use super::{CommandError, ErrorKind, Outcome, Output, PlanFormat, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved with `cairn plan -o FILE`, or the manifests root to plan and apply.
    #[arg(value_name = "PLAN_OR_PATH")]
    target: Option<PathBuf>,

    /// Read the manifests at this Git revision (when planning here).
    #[arg(long, value_name = "REV")]
    rev: Option<String>,

    /// Apply only these workspaces (repeatable).
    #[arg(short, long = "workspace", value_name = "NAME")]
    workspaces: Vec<String>,

    /// Don't ask for confirmation.
    #[arg(long)]
    auto_approve: bool,

    /// Changes carried out at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    parallelism: usize,

    /// How long to wait for a lock held by another apply, e.g. `30s` (at most 24h).
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = lock_timeout)]
    lock_timeout: cairn::manifest::Duration,

    /// How long the lock stays valid without a heartbeat, from 1s to 24h; a crashed
    /// apply's lock can be taken over after this.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = lock_lease)]
    lock_lease: cairn::manifest::Duration,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let saved = args.target.as_deref().filter(|p| p.is_file());
    let (saved_plan, source) = match saved {
        Some(path) => {
            let plan = read_plan(path)?;
            let source = SourceArgs {
                path: Some(PathBuf::from(&plan.source.root)),
                rev: plan.source.rev.clone(),
            };
            (Some(plan), source)
        }
        None => (
            None,
            SourceArgs {
                path: args.target.clone(),
                rev: args.rev.clone(),
            },
        ),
    };
    let loaded = context::load(&source, output)?;
    // A saved plan holds no secret: its hidden `env` values come back from the manifests,
    // which must still declare the values it was made with.
    let mut saved_plan = saved_plan;
    if let Some(plan) = &mut saved_plan {
        cairn::redact::restore(plan, &loaded.desired).map_err(|e| {
            CommandError::from_error(ErrorKind::Conflict, &e).hint_opt(Some(
                "the saved plan is stale: make a new one with `cairn plan -o plan.json` and review it".into(),
            ))
        })?;
    }
    let selection = match &saved_plan {
        Some(plan) => {
            let names: Vec<String> = plan.workspaces.iter().map(|w| w.name.clone()).collect();
            let mut selection = context::select(&loaded, &names)?;
            // The saved plan names its stores; they must be the ones the manifests name.
            for w in &plan.workspaces {
                if selection.stores.get(&w.name).map(Store::url).as_deref()
                    != Some(w.store.as_str())
                {
                    return Err(CommandError::conflict(format!(
                        "the saved plan was made for the store {} of workspace `{}`, which the manifests no longer name",
                        w.store, w.name
                    )));
                }
            }
            selection.skipped.clear();
            selection
        }
        None => context::select(&loaded, &args.workspaces)?,
    };

    // A saved plan is checked against the policies as they are now, before anything is
    // locked: its own report could be stale, or edited.
    if let Some(plan) = &saved_plan {
        let report = cairn::policy::check(&loaded.snapshot, &loaded.desired, plan)
            .map_err(|e| super::policy::policy_error(&e))?;
        if report.denied() {
            eprint!(
                "{}",
                cairn::render::policy_text(&report, output.color_stderr)
            );
            return Err(super::policy::denied(
                &report,
                "refusing to apply: the plan is denied by policy, nothing was applied",
            ));
        }
    }

    let rt = super::runtime()?;
    let local = context::local_dir(&loaded.root);
    // One cache for the plan and the uploads: what the plan hashed is not read again.
    let cache = context::hash_cache(&loaded.root);
    let target = LocalTarget::detect();
    let serving = context::local_serving(&loaded, selection.stores.clone());
    let progress = Progress::new(output.progress);
    let user = super::user();
    let applier = Applier {
        snapshot: &loaded.snapshot,
        stores: &selection.stores,
        target: &target,
        serving: Some(&serving),
        kube: selection
            .clusters
            .as_deref()
            .map(|c| c as &dyn cairn::backend::kubernetes::KubeTarget),
        cache: &cache,
        events: &progress,
        options: ApplyOptions {
            parallelism: args.parallelism,
            lock_timeout: args.lock_timeout.as_std(),
            lock_lease: args.lock_lease.as_std(),
            holder: user.clone(),
            user,
            command: "cairn apply".into(),
            work_dir: std::path::absolute(local.join("work"))
                .unwrap_or_else(|_| local.join("work")),
            // Job processes get the allow-listed variables only, never Cairn's credentials.
            child_env: cairn::backend::local::ChildEnv::allowed(std::env::vars_os()),
        },
    };

    // Lock first, then plan: waiting for another apply must not make the plan stale.
    let locks = rt
        .block_on(applier.lock(selection.stores.keys().map(String::as_str)))
        .map_err(apply_error)?;
    let was_saved = saved_plan.is_some();
    let plan = match saved_plan {
        Some(plan) => plan,
        None => {
            let plan = match make_plan(&rt, &loaded, &selection, &source, &cache, output) {
                Ok(plan) => plan,
                Err(e) => {
                    rt.block_on(applier.unlock(locks));
                    return Err(e);
                }
            };
            print_plan(&plan, PlanFormat::Text, output)?;
            if let Some(report) = plan.policy.as_ref().filter(|r| r.denied()) {
                rt.block_on(applier.unlock(locks));
                return Err(super::policy::denied(
                    report,
                    "refusing to apply: the plan is denied by policy, nothing was applied",
                ));
            }
            if plan.has_changes() && !args.auto_approve {
                if let Err(e) = confirm() {
                    rt.block_on(applier.unlock(locks));
                    return Err(e);
                }
            }
            plan
        }
    };
    if !plan.has_changes() {
        rt.block_on(applier.unlock(locks));
        if was_saved {
            println!("The saved plan has no changes to apply.");
        }
        return Ok(Outcome::Success);
    }
    let result = rt.block_on(applier.apply(&plan, locks));
    let _ = cache.save();
    report(result.map_err(apply_error)?)
}

/// `--lock-lease`: from 1 s to [`MAX_LOCK_LEASE`], so an expiry can't wrap around and
/// an apply that died can't hold the store for ever.
fn lock_lease(text: &str) -> Result<cairn::manifest::Duration, String> {
    let lease: cairn::manifest::Duration = text.parse()?;
    let bounds = Duration::from_secs(1)..=MAX_LOCK_LEASE;
    if !bounds.contains(&lease.as_std()) {
        return Err(format!(
            "a lock lease is from 1s to 24h, not {lease}: an apply that dies holds the store until its lease runs out"
        ));
    }
    Ok(lease)
}

/// `--lock-timeout`: at most [`MAX_LOCK_LEASE`] (waiting longer than a lease can last
/// waits for nothing).
fn lock_timeout(text: &str) -> Result<cairn::manifest::Duration, String> {
    let timeout: cairn::manifest::Duration = text.parse()?;
    if timeout.as_std() > MAX_LOCK_LEASE {
        return Err(format!(
            "a lock timeout is at most 24h, not {timeout}: no lock is held longer than its 24h lease"
        ));
    }
    Ok(timeout)
}

fn apply_error(e: cairn::apply::Error) -> CommandError {
    use cairn::apply::Error as E;
    match &e {
        E::Locked {
            source: cairn::backend::store::Error::Locked { id, .. },
            ..
        } => {
            let hint = format!(
                "wait for it (`--lock-timeout 5m`), or if that apply died, run `cairn unlock {id}`; an abandoned lock is also taken over once its lease runs out"
            );
            CommandError::from_error(ErrorKind::Conflict, &e).hint_opt(Some(hint))
        }
        E::Locked { source, .. } | E::Store { source, .. } => {
            CommandError::from_error(super::store_kind(source), &e)
        }
        E::Stale { .. } => CommandError::from_error(ErrorKind::Conflict, &e).hint_opt(Some(
            "make a new plan with `cairn plan -o plan.json` and review it".into(),
        )),
        E::NoStore(_) | E::NotLocked(_) => CommandError::from_error(ErrorKind::Internal, &e),
    }
}

fn report(report: cairn::apply::ApplyReport) -> Result<Outcome, CommandError> {
    let ok = report.count(Status::Succeeded);
    let failed = report.count(Status::Failed);
    let skipped = report.count(Status::Skipped);
    let secs = report.duration_ms as f64 / 1000.0;
    if report.success() {
        println!("Apply complete: {ok} succeeded in {secs:.1}s.");
        Ok(Outcome::Success)
    } else {
        for o in report
            .outcomes
            .iter()
            .filter(|o| o.status == Status::Failed)
        {
            eprintln!(
                "✗ {}: {}",
                o.address,
                o.message.as_deref().unwrap_or("failed")
            );
        }
        println!("Apply failed: {ok} succeeded, {failed} failed, {skipped} skipped in {secs:.1}s.");
        Ok(Outcome::Failed(ErrorKind::Target))
    }
}

fn read_plan(path: &Path) -> Result<Plan, CommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::user(format!("cannot read the plan {}: {e}", path.display())))?;
    Plan::from_json(&text).map_err(|e| {
        CommandError::user(format!("{} is not a Cairn plan: {e}", path.display()))
            .hint_opt(Some("make one with `cairn plan -o plan.json`".into()))
    })
}

fn confirm() -> Result<(), CommandError> {
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::user(
            "refusing to apply without confirmation: input is not a terminal",
        )
        .hint_opt(Some(
            "review the plan above, then run again with `--auto-approve`".into(),
        )));
    }
    print!("\nApply these changes? Only 'yes' is accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() != "yes" {
        return Err(CommandError::user("apply cancelled"));
    }
    Ok(())
}

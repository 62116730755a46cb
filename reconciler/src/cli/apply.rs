//! `cairn apply`: carry out a plan — a fresh one (after confirmation) or a saved one,
//! exactly as saved.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::apply::{Applier, ApplyOptions, Status};
use cairn::backend::store::{Store, MAX_LOCK_LEASE};
use cairn::plan::Plan;

use super::context;
use super::plan::{make_plan, print_plan, PlanRequest};
use super::progress::Progress;
use super::{CommandError, ErrorKind, Outcome, Output, PlanFormat, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved with `cairn plan -o FILE`, or the manifests root to plan and apply.
    #[arg(value_name = "PLAN_OR_PATH")]
    pub target: Option<PathBuf>,

    /// Read the manifests at this Git revision (when planning here).
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,

    /// Apply only these workspaces (repeatable).
    #[arg(short, long = "workspace", value_name = "NAME")]
    pub workspaces: Vec<String>,

    /// Don't ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,

    /// Read the confirmation from standard input even when it is not a terminal
    /// (`echo yes | cairn apply --input`). Without it, an apply whose input is not a
    /// terminal asks nothing and refuses, unless `--auto-approve`.
    #[arg(long, conflicts_with = "auto_approve")]
    pub input: bool,

    /// Changes carried out at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallelism: usize,

    /// How long to wait for a lock held by another apply, e.g. `30s` (at most 24h).
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = lock_timeout)]
    pub lock_timeout: cairn::manifest::Duration,

    /// How long the lock stays valid without a heartbeat, from 1s to 24h; a crashed
    /// apply's lock can be taken over after this.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = lock_lease)]
    pub lock_lease: cairn::manifest::Duration,
}

/// What `apply` and `destroy` share: apply a fresh plan (of the manifests, or of tearing
/// the workspaces down) or a saved one.
pub struct Request {
    pub args: Args,
    /// Plan the removal of everything the workspaces' states record.
    pub destroy: bool,
    /// After a successful destroy, delete the destroyed datasets', models' and jobs'
    /// versions and runs from the store too.
    pub purge_store: bool,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    execute(
        Request {
            args,
            destroy: false,
            purge_store: false,
        },
        output,
    )
}

pub fn execute(request: Request, output: Output) -> Result<Outcome, CommandError> {
    let args = &request.args;
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
        cairn::plan::redact::restore(plan, &loaded.desired).map_err(|e| {
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
            eprint!("{}", cairn::view::policy_text(&report, output.color_stderr));
            return Err(super::policy::denied(
                &report,
                "refusing to apply: the plan is denied by policy, nothing was applied",
            ));
        }
    }

    let rt = super::runtime()?;
    // One cache for the plan and the uploads: what the plan hashed is not read again.
    let cache = context::hash_cache(&loaded.root);
    let targets = context::targets(&loaded, &selection, selection.stores.clone());
    let progress = Progress::new(output.progress);
    let user = super::user();
    let applier = Applier {
        snapshot: &loaded.snapshot,
        stores: &selection.stores,
        targets: &targets,
        cache: &cache,
        events: &progress,
        options: ApplyOptions {
            parallelism: args.parallelism,
            lock_timeout: args.lock_timeout.as_std(),
            lock_lease: args.lock_lease.as_std(),
            holder: user.clone(),
            user,
            command: "cairn apply".into(),
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
            let plan_request = PlanRequest {
                source: &source,
                cache: &cache,
                destroy: request.destroy,
            };
            let plan = match make_plan(&rt, &loaded, &selection, &targets, &plan_request, output) {
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
                if let Err(e) = confirm(args.input) {
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
    let applied = result.map_err(apply_error)?;
    let success = applied.success();
    let outcome = report(applied)?;
    if success && request.purge_store {
        purge(&rt, &plan, &selection.stores)?;
    }
    Ok(outcome)
}

/// Deletes the stored versions and runs of the datasets, models and jobs `plan` removed.
fn purge(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    stores: &std::collections::BTreeMap<String, Store>,
) -> Result<(), CommandError> {
    let mut removed = 0;
    for change in plan
        .changes()
        .filter(|c| c.action() == cairn::plan::Action::Delete)
    {
        let Some(store) = stores.get(&change.workspace) else {
            continue;
        };
        removed += rt
            .block_on(store.purge(change.kind, &change.name))
            .map_err(|e| CommandError::from_error(super::store_kind(&e), &e))?;
    }
    println!(
        "Purged {} from the stores.",
        cairn::plan::plural(removed, "stored object")
    );
    Ok(())
}

/// `--lock-lease`: from 1 s to [`MAX_LOCK_LEASE`], so an expiry can't wrap around and
/// an apply that died can't hold the store for ever.
pub fn lock_lease(text: &str) -> Result<cairn::manifest::Duration, String> {
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
pub fn lock_timeout(text: &str) -> Result<cairn::manifest::Duration, String> {
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

/// Asks for `yes`: on a terminal, or with `--input` on whatever standard input is.
fn confirm(input: bool) -> Result<(), CommandError> {
    if !input && !std::io::stdin().is_terminal() {
        return Err(CommandError::user(
            "refusing to apply without confirmation: input is not a terminal",
        )
        .hint_opt(Some(
            "review the plan above, then run again with `--auto-approve`, or answer on standard input with `--input` (`echo yes | cairn apply --input`)".into(),
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

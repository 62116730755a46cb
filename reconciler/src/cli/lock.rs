//! `cairn unlock`: release a lock left by an apply that died.

use cairn::backend::store::BrokenLock;

use super::context;
use super::{CommandError, Outcome, Output, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lock id, as shown in the "locked by" error (not with `--force`).
    #[arg(required_unless_present = "force")]
    lock_id: Option<String>,

    /// Remove whatever lock the workspaces' stores hold, a damaged one included, without
    /// an id: `cairn unlock --force [PATH]`. Make sure no apply is running first.
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    source: SourceArgs,

    /// Only look in these workspaces' stores.
    #[arg(short, long = "workspace", value_name = "NAME")]
    workspaces: Vec<String>,
}

pub fn run(mut args: Args, output: Output) -> Result<Outcome, CommandError> {
    if args.force {
        // `cairn unlock --force PATH`: with no id to take, the one positional is the path.
        match (args.lock_id.take(), &args.source.path) {
            (Some(path), None) => args.source.path = Some(path.into()),
            (Some(id), Some(_)) => {
                return Err(CommandError::user(format!(
                    "`--force` removes whatever lock is held, without an id (got `{id}`)"
                ))
                .hint_opt(Some(
                    "run `cairn unlock --force [PATH]`, or `cairn unlock ID [PATH]`".into(),
                )))
            }
            (None, _) => {}
        }
    }
    let loaded = context::load(&args.source, output)?;
    let selection = context::select(&loaded, &args.workspaces)?;
    let rt = super::runtime()?;
    let Some(lock_id) = &args.lock_id else {
        let mut removed = 0;
        for (ws, store) in &selection.stores {
            match rt
                .block_on(store.break_lock())
                .map_err(|e| CommandError::store(&e))?
            {
                Some(BrokenLock::Held(info)) => println!(
                    "Removed lock {} on workspace `{ws}` (held by {} for `{}` since {}).",
                    info.id, info.holder, info.command, info.started_at
                ),
                Some(BrokenLock::Damaged { size }) => println!(
                    "Removed the damaged lock file on workspace `{ws}` ({size} bytes, not a lock record)."
                ),
                None => continue,
            }
            removed += 1;
        }
        if removed == 0 {
            println!("No lock is held.");
        }
        return Ok(Outcome::Success);
    };
    for (ws, store) in &selection.stores {
        match rt.block_on(store.force_unlock(lock_id)) {
            Ok(info) => {
                println!(
                    "Released lock {} on workspace `{ws}` (held by {} for `{}` since {}).",
                    info.id, info.holder, info.command, info.started_at
                );
                return Ok(Outcome::Success);
            }
            Err(cairn::backend::store::Error::NoSuchLock { .. }) => continue,
            Err(e) => return Err(CommandError::store(&e)),
        }
    }
    Err(
        CommandError::user(format!("no lock with id `{lock_id}` is held")).hint_opt(Some(
            "the apply may have finished and released it already".into(),
        )),
    )
}

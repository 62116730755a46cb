//! `cairn unlock`: release a lock left by an apply that died.

use super::context;
use super::{CommandError, Output, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lock id, as shown in the "locked by" error.
    lock_id: String,

    #[command(flatten)]
    source: SourceArgs,

    /// Only look in these workspaces' stores.
    #[arg(short, long = "workspace", value_name = "NAME")]
    workspaces: Vec<String>,
}

pub fn run(args: Args, output: Output) -> Result<u8, CommandError> {
    let loaded = context::load(&args.source, output)?;
    let selection = context::select(&loaded, &args.workspaces)?;
    let rt = super::runtime()?;
    for (ws, store) in &selection.stores {
        match rt.block_on(store.force_unlock(&args.lock_id)) {
            Ok(info) => {
                println!(
                    "Released lock {} on workspace `{ws}` (held by {} for `{}` since {}).",
                    info.id, info.holder, info.command, info.started_at
                );
                return Ok(0);
            }
            Err(cairn::backend::store::Error::NoSuchLock { .. }) => continue,
            Err(e) => return Err(CommandError::from_error(&e)),
        }
    }
    Err(
        CommandError::new(format!("no lock with id `{}` is held", args.lock_id)).hint_opt(Some(
            "the apply may have finished and released it already".into(),
        )),
    )
}

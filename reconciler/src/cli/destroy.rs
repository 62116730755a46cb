//! `cairn destroy`: tear workspaces down, like `terraform destroy` or `argocd app
//! delete`. It plans the removal of everything the workspaces' states record (endpoints
//! stopped, Kubernetes objects deleted; dataset and model versions and runs stay in the
//! store for lineage unless `--purge-store`), shows that plan, and applies it under the
//! same lock, policy checks and journal as `apply`. `cairn plan --destroy -o FILE` saves
//! such a plan for `cairn apply FILE`.

use std::path::PathBuf;

use super::{apply, CommandError, Outcome, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests root (they say which workspaces exist and where their stores and
    /// clusters are), or a destroy plan saved with `cairn plan --destroy -o FILE`.
    #[arg(value_name = "PATH_OR_PLAN")]
    target: Option<PathBuf>,

    /// Destroy only these workspaces (repeatable). Default: every workspace.
    #[arg(short, long = "workspace", value_name = "NAME")]
    workspaces: Vec<String>,

    /// Don't ask for confirmation.
    #[arg(long)]
    auto_approve: bool,

    /// Read the confirmation from standard input even when it is not a terminal
    /// (`echo yes | cairn destroy --input`).
    #[arg(long, conflicts_with = "auto_approve")]
    input: bool,

    /// Also delete the destroyed datasets' and models' versions and the jobs' runs from
    /// the stores (by default they are kept, so lineage stays readable).
    #[arg(long)]
    purge_store: bool,

    /// Changes carried out at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    parallelism: usize,

    /// How long to wait for a lock held by another apply, e.g. `30s` (at most 24h).
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = apply::lock_timeout)]
    lock_timeout: cairn::manifest::Duration,

    /// How long the lock stays valid without a heartbeat, from 1s to 24h.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = apply::lock_lease)]
    lock_lease: cairn::manifest::Duration,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    apply::execute(
        apply::Request {
            args: apply::Args {
                target: args.target,
                rev: None,
                workspaces: args.workspaces,
                auto_approve: args.auto_approve,
                input: args.input,
                parallelism: args.parallelism,
                lock_timeout: args.lock_timeout,
                lock_lease: args.lock_lease,
            },
            destroy: true,
            purge_store: args.purge_store,
        },
        output,
    )
}

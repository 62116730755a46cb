//! Backends: where the planner's observations come from and where the executor's writes
//! go. The planner and executor only ever talk to these traits: [`target::ComputeTarget`]
//! for compute targets, [`store::ObjectStore`] (behind [`store::Store`]) for stores.
//!
//! - [`target`]: the compute-target contract and the [`target::Targets`] of a command.
//! - [`store`]: datasets, models, runs, state, lock and journal, over any object store.
//! - [`local`]: the `local` compute target: this machine's GPUs and processes.
//! - [`kubernetes`]: the `kubernetes` compute target's objects, rendered from templates.
//! - [`job`], [`distribution`], [`rollout_log`], [`server_command`]: what both targets
//!   share: a planned job's value, the distributed-training contract, a rollout's
//!   record, a deployment's own serving command.

pub mod distribution;
pub mod job;
pub mod kubernetes;
pub mod local;
pub mod rollout_log;
pub mod server_command;
pub mod store;
pub mod sweep;
pub mod target;

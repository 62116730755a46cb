//! Backends: where the planner's observations come from and where the executor's writes
//! go. The planner and executor only ever talk to these traits.
//!
//! - [`store`]: datasets, models, runs, state, lock and journal, over any object store.
//! - [`local`]: the `local` compute target: this machine's GPUs and processes.
//! - [`kubernetes`]: the `kubernetes` compute target's objects, rendered from templates.

pub mod kubernetes;
pub mod local;
pub mod store;

//! End-to-end tests: the real `cairn` binary on real temporary folders, real Git
//! repositories and real job processes, with the folder store.
//!
//! - `flow`: plan → apply → no changes; the data → retrain → new model chain; saved plans.
//! - `failures`: failing, retried and timed-out jobs.
//! - `locking`: concurrent applies, `unlock`, `history`.
//! - `crash`: `kill -9` during a run or an upload, then convergence.
//!
//! Tests that need a lock lease to run out use short leases (`--lock-lease 2s`).

#[path = "../support/mod.rs"]
mod support;

mod crash;
mod failures;
mod flow;
mod locking;

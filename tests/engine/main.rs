//! End-to-end tests: the real `cairn` binary on real temporary folders, real Git
//! repositories and real job processes, with the folder store.
//!
//! - `flow`: plan → apply → no changes; the data → retrain → new model chain; saved plans.
//! - `failures`: failing, retried and timed-out jobs.
//! - `distributed`: jobs with `instances = N`: N ranks that meet, fail and retry together.
//! - `locking`: concurrent applies, `unlock`, `history`.
//! - `pipeline`: a job writing a dataset another job trains on.
//! - `sweep`: hyperparameter sweeps: trials, the pick, the lineage.
//! - `crash`: `kill -9` during a run or an upload, then convergence.
//! - `s3`: the same flow on an S3 store (a real S3 server on loopback).
//!
//! Tests that need a lock lease to run out use short leases (`--lock-lease 2s`).

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/s3_server.rs"]
mod s3_server;

mod crash;
mod distributed;
mod failures;
mod flow;
mod locking;
mod pipeline;
mod runs;
mod s3;
mod secrets;
mod store_damage;
mod sweep;

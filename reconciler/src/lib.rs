//! Cairn: a GitOps reconciler for machine-learning infrastructure.
//!
//! The library follows the pipeline, one module per stage:
//!
//! ```text
//! manifest (read files from a folder or a Git revision, parse TOML, keep spans)
//!   → desired (resolve references, validate, build the dependency graph)
//! ```
//!
//! Later stages (observe, diff, plan, policy, apply, rollout) build on
//! [`desired::DesiredState`]; [`policy`] checks the desired state and the plan against
//! Rego policies before anything is applied.
//!
//! The library never talks to the terminal and never reads the environment on its own:
//! it returns typed results ([`desired::DesiredState`], [`diagnostics::Diagnostics`]) and
//! the `cairn` binary decides how to show them and which exit code to use.

pub mod address;
pub mod apply;
pub mod artifacts;
pub mod backend;
pub mod changes;
pub mod content;
pub mod desired;
pub mod diagnostics;
pub mod drift;
pub mod events;
pub mod github;
pub mod manifest;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod render;
pub mod rollout;
pub mod serving;
pub mod sparse;
pub mod workload;

pub use address::{Address, Kind, Reference};
pub use desired::DesiredState;
pub use diagnostics::{Diagnostic, Diagnostics, Severity};

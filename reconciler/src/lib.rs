//! Cairn: a GitOps reconciler for machine-learning infrastructure.
//!
//! The library follows the pipeline, one module per stage, each importing only the
//! stages before it (`tests/architecture` checks there is no cycle):
//!
//! ```text
//! manifest   read files from a folder or a Git revision, parse TOML, keep spans
//!  → desired  resolve references, validate, build the dependency graph
//!  → planner  pair each resource with the store's state and what the targets observe;
//!             decide an action per resource (a plan: `plan`, plain data)
//!  → policy   check the desired state and the plan against Rego policies
//!  → view     show the plan (text, markdown); github: the pull-request comment
//!  → apply    locks, staleness, dependency waves, the journal; each change carried out
//!             in the store or on its compute target (backend::target)
//!  → rollout  the engine that moves traffic step by step under gates (serving: what an
//!             endpoint's rollout is and how any target gets there)
//! ```
//!
//! [`backend`] holds everything target- or store-specific behind two traits:
//! [`backend::target::ComputeTarget`] (`local`, `kubernetes`) and
//! [`backend::store::ObjectStore`] (folder, S3). [`workload`] holds the reference trainer
//! and model server the example runs; [`drift`] and [`changes`] read plans and pull
//! requests for the GitHub side.
//!
//! The library never talks to the terminal and never reads the environment on its own:
//! it returns typed results ([`desired::DesiredState`], [`plan::Plan`],
//! [`diagnostics::Diagnostics`]) and the `cairn` binary decides how to show them and
//! which exit code to use.

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
pub mod input_drift;
pub mod manifest;
pub mod metric_delta;
pub mod monitoring;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod promotion;
pub mod rollout;
pub mod rollout_metrics;
pub mod serving;
pub mod sparse;
pub mod view;
pub mod workload;

pub use address::{Address, Kind, Reference};
pub use desired::DesiredState;
pub use diagnostics::{Diagnostic, Diagnostics, Severity};

//! Manifests as written: reading files (from a folder or a Git revision), the TOML model
//! of every kind, units, and parsing with spans.
//!
//! This stage knows nothing about other resources: whether a reference resolves or a
//! traffic map adds up is checked in [`crate::desired`].

pub mod locate;
pub mod model;
pub mod monitor;
pub mod parse;
pub mod replicas;
pub mod source;
pub mod sweep;
pub mod units;

pub use model::*;
pub use parse::{parse_file, Declared, ParsedFile, Spec};
pub use source::{
    load_folder, load_revision, EntryKind, Error, Fingerprint, Origin, Snapshot, SourceFile,
    TreeFile, WalkError,
};
pub use units::{Duration, Quantity};

//! The records the store keeps beside the bytes of datasets, models and runs: a
//! version's files, a dataset version (and the run that wrote it), a run's outcome and a
//! model version's lineage. Their JSON is the store's format: fields are only added,
//! with defaults, so older stores stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One file of a dataset or model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the version, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The store key holding the bytes (possibly in an earlier version).
    pub key: String,
}

/// `_version.json`: a committed dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetVersion {
    pub dataset: String,
    pub version: String,
    pub files: Vec<FileEntry>,
    pub total_bytes: u64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The run that wrote it, for a dataset a job produces (none for one read from a
    /// source folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produced_by: Option<ProducedBy>,
}

/// The lineage of a dataset version a job wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducedBy {
    pub job: String,
    pub run_id: String,
    /// Input name → the version reference the run read.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

/// `_run.json`: the outcome of a job run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    pub run_id: String,
    pub status: RunStatus,
    pub attempts: u32,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Input name → `dataset.<name>@<version>` or `model.<name>@<version>`.
    pub inputs: BTreeMap<String, String>,
    /// Output name → `model.<name>@<version>` or `dataset.<name>@<version>`.
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// Store keys of the attempts' logs.
    pub logs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// A sweep's trials, in order (none for a plain run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<Trial>,
}

/// One trial of a sweep: its parameters, how it ended, its metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The trial's own run (`<run id>-t<n>`).
    pub run_id: String,
    pub params: BTreeMap<String, String>,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// Whether its outputs were kept (the pick).
    #[serde(default)]
    pub picked: bool,
}

/// `_model.json`: a model version and its lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub model: String,
    pub version: String,
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Input name → `dataset.<name>@<version>` (or model) the run read.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    pub files: Vec<FileEntry>,
    pub created_at: String,
    /// The sweep this version was picked from: every trial with its metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<Trial>,
}

//! The reference workloads: the trainer `cairn train` runs, and the model server `cairn
//! serve` runs ([`model_server`], which has its own module doc and error type), and the
//! front door `cairn pod-proxy` puts before a server in a pod, to check keys and capture
//! requests for whatever serves ([`pod_proxy`], with [`bearer`]'s key check and
//! [`capture`]'s lines).
//!
//! Training is one straight line, one file per stage:
//!
//! ```text
//! data   (read every *.csv of a folder, or one file; check the header, the label, the rows)
//!   → train (split rows by a seeded hash, standardize, fit logistic regression, score)
//!   → model (write `model.safetensors`; read it back and predict)
//! ```
//!
//! With several processes (a data-parallel group, [`TrainOptions::group`]), each epoch's
//! gradient is summed across them by [`allreduce`] (TCP, rank 0 in the middle).
//!
//! [`train`] writes two files into [`TrainOptions::out`]: [`MODEL_FILE`] (the weights and
//! the standardization, see [`Model`]) and [`METRICS_FILE`] (the [`TrainReport`] as pretty
//! JSON, metrics at the top level).
//!
//! Guarantees:
//! - Deterministic: the same data and options give byte-identical files on one device. The
//!   split hashes the row index with the seed, and the fit is a sequential, full-batch loop
//!   in `f64`. On the GPU ([`Device::Cuda`]) the two matrix products of each epoch are
//!   cuBLAS calls, whose sums agree with the CPU's within float rounding, not bit for bit;
//!   `metrics.json` names the device.
//! - No terminal I/O: results and errors are typed and the CLI renders them.
//! - Bad input is an [`Error`] that names the file and line, never a panic.
//!
//! Caveats: the whole table is held in memory (it is meant for example-sized data), and a
//! column with a single non-numeric or empty cell is skipped as a feature, not imputed.

pub mod allreduce;
pub mod bearer;
pub mod capture;
mod data;
mod model;
pub mod model_server;
pub mod oip;
pub mod onnx;
pub mod pod_proxy;
mod score;
pub mod served;
mod split;
mod train;

use std::path::PathBuf;

pub use allreduce::GroupOptions;
pub use model::{load_model, Model, FORMAT, MODEL_FILE};
pub use model_server::{bind, serve, ServeOptions, Server};
pub use score::{score, ScoreOptions, ScoreReport, BATCH_ROWS};
pub use split::{split, SplitOptions, SplitReport};
pub use train::{train, Device, Metrics, TrainOptions, TrainReport, METRICS_FILE};

/// Errors from reading training data, training, and reading or using a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the training data at `{}`", path.display())]
    ReadData {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no CSV files (`*.csv`) in the folder `{}`", path.display())]
    NoCsvFiles { path: PathBuf },
    #[error("cannot read CSV file `{}`", path.display())]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("no data rows in `{}`; expected a header line and at least one row", path.display())]
    EmptyData { path: PathBuf },
    #[error(
        "the header of `{}` differs from the header of `{}`: expected {}, found {}; every CSV \
         file of a dataset must have the same columns in the same order",
        path.display(), first.display(), expected.join(","), found.join(",")
    )]
    HeaderMismatch {
        path: PathBuf,
        first: PathBuf,
        expected: Vec<String>,
        found: Vec<String>,
    },
    #[error("column `{column}` appears more than once in the header of `{}`", path.display())]
    DuplicateColumn { path: PathBuf, column: String },
    #[error(
        "label column `{label}` not found in `{}`; the columns are: {}{}",
        path.display(),
        columns.join(", "),
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    LabelMissing {
        path: PathBuf,
        label: String,
        columns: Vec<String>,
        suggestion: Option<String>,
    },
    #[error(
        "{}:{line}: label `{label}` is `{value}` in data row {row}; labels must be 0 or 1",
        path.display()
    )]
    BadLabel {
        path: PathBuf,
        /// Line in the file, 1-based, counting the header.
        line: u64,
        /// Data row across all files, 1-based, not counting headers.
        row: usize,
        label: String,
        value: String,
    },
    #[error(
        "{}:{line}: the row has {found} field(s) but the header has {expected}",
        path.display()
    )]
    RaggedRow {
        path: PathBuf,
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error(
        "no numeric feature columns besides the label `{label}`{}",
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped because not every value is a number: {}", skipped.join(", "))
        }
    )]
    NoFeatures { label: String, skipped: Vec<String> },
    #[error("invalid training option `{name}` = {value}: expected {expected}")]
    InvalidOption {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "holdout {holdout} splits {rows} row(s) into {train_rows} for training and {test_rows} \
         for testing; both must be non-empty (use more data or change the holdout)"
    )]
    Split {
        holdout: f64,
        rows: usize,
        train_rows: usize,
        test_rows: usize,
    },
    #[error(
        "training diverged (weights are no longer finite) with learning rate {learning_rate}; \
         try a smaller learning rate"
    )]
    Diverged { learning_rate: f64 },
    #[error("cannot train on the GPU: {reason}")]
    GpuUnavailable { reason: String },
    #[error("training on the GPU failed while {operation}")]
    Gpu {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("data-parallel training failed")]
    Group(#[from] allreduce::Error),
    #[error("cannot create the output folder `{}`", path.display())]
    CreateOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode `{}`", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Onnx(onnx::Error),
    #[error("cannot read the model `{}`", path.display())]
    ReadModel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a valid safetensors file", path.display())]
    ModelFile {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("`{}` is not a `{}` model: {reason}", path.display(), model::FORMAT)]
    InvalidModel { path: PathBuf, reason: String },
    #[error(
        "the input has no value for feature `{feature}`; the model needs: {}",
        expected.join(", ")
    )]
    MissingFeature {
        feature: String,
        expected: Vec<String>,
    },
    #[error("no model in `{}`: expected `model.safetensors` (Cairn's reference model) or `model.onnx`", path.display())]
    NoModel { path: PathBuf },
    #[error("the model in `{}` can't score CSV rows: {reason}", path.display())]
    Unscorable { path: PathBuf, reason: String },
    #[error(
        "column `{column}` not found in `{}`; the columns are: {}{}",
        path.display(),
        columns.join(", "),
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    MissingColumn {
        path: PathBuf,
        column: String,
        columns: Vec<String>,
        suggestion: Option<String>,
    },
    #[error("{}:{line}: `{column}` is `{value}`; expected a number (0 or 1 for a label)", path.display())]
    BadCell {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error("{}:{line}: scoring the rows from this line failed: {reason}", path.display())]
    Infer {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

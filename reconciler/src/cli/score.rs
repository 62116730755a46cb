//! `cairn score`: batch scoring, the job a batch endpoint runs. Reads a model folder and
//! a folder of CSV files and writes one scored CSV per input file (see
//! `cairn::workload::score`).

use std::path::PathBuf;

use cairn::workload::{score, ScoreOptions};

use super::{CommandError, ErrorKind, Format, Outcome, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model folder: `model.safetensors` (Cairn's reference model) or `model.onnx`
    /// (one tabular input, `[-1, F]`).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,

    /// A CSV file, or a folder of CSV files with the same header.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,

    /// The folder to write the scored files into (one per input file, same name).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// A column copied into the scores to say which row each belongs to (e.g. `loan_id`).
    #[arg(long, value_name = "COLUMN")]
    id: Option<String>,

    /// A label column (0 or 1): copied, and the scores measured against it into
    /// `metrics.json` (AUC, accuracy, log loss): an evaluation step.
    #[arg(long, value_name = "COLUMN")]
    label: Option<String>,

    /// An ONNX model's input columns, in order (comma-separated); every column but
    /// `--id` and `--label` when absent. The reference model names its own.
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    features: Vec<String>,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let options = ScoreOptions {
        model: args.model,
        data: args.data,
        out: args.out,
        id: args.id,
        label: args.label,
        features: args.features,
    };
    let report = score(&options).map_err(|e| CommandError::from_error(ErrorKind::User, &e))?;
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialize")
        );
        return Ok(Outcome::Success);
    }
    println!(
        "Scored {} row{} of {} file{} into {} ({}).",
        report.rows,
        if report.rows == 1 { "" } else { "s" },
        report.files,
        if report.files == 1 { "" } else { "s" },
        options.out.display(),
        report.columns.join(", ")
    );
    if let Some(m) = &report.metrics {
        let auc = m
            .get("auc")
            .map_or("n/a (one class)".to_string(), |a| format!("{a:.3}"));
        println!(
            "Against `{}`: AUC {auc}, accuracy {:.3}, log loss {:.3}; wrote metrics.json.",
            options.label.as_deref().unwrap_or_default(),
            m["accuracy"],
            m["log_loss"]
        );
    }
    Ok(Outcome::Success)
}

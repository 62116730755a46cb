//! `cairn train`: the reference trainer. Reads a folder of CSV files, fits a logistic
//! regression, writes `model.safetensors` and `metrics.json`. The example workspace's job
//! runs it.

use std::path::PathBuf;

use cairn::workload::{train, Device, Error, TrainOptions};

use super::{CommandError, ErrorKind, Format, Outcome, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder of CSV files with the same header, or one CSV file.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,

    /// The folder to write the model and its metrics into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// The label column (values 0 or 1).
    #[arg(long, default_value = "label")]
    label: String,

    /// Passes of gradient descent over the training rows.
    #[arg(long, default_value_t = 300)]
    epochs: usize,

    #[arg(long, default_value_t = 0.1)]
    learning_rate: f64,

    /// L2 penalty on the weights.
    #[arg(long, default_value_t = 1e-3)]
    l2: f64,

    /// Share of rows held out to measure the model.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,

    /// Seed of the train/test split.
    #[arg(long, default_value_t = 7)]
    seed: u64,

    /// Where the matrix work runs: `auto` (GPU 0 through cuBLAS when the CUDA driver,
    /// cuBLAS and a GPU are there, else the CPU), `cpu`, or `cuda` (an error without a GPU).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

impl From<DeviceArg> for Device {
    fn from(device: DeviceArg) -> Device {
        match device {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
        }
    }
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let options = TrainOptions {
        data: args.data,
        out: args.out,
        label: args.label,
        epochs: args.epochs,
        learning_rate: args.learning_rate,
        l2: args.l2,
        holdout: args.holdout,
        seed: args.seed,
        device: args.device.into(),
    };
    let report = train(&options).map_err(|e| {
        let hint = matches!(e, Error::GpuUnavailable { .. })
            .then(|| "use `--device auto` or `--device cpu` to train on the CPU".to_string());
        CommandError::from_error(ErrorKind::User, &e).hint_opt(hint)
    })?;
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialize")
        );
        return Ok(Outcome::Success);
    }
    let m = &report.metrics;
    println!(
        "Trained a logistic regression on {} rows ({} train, {} test), {} features, label `{}`, \
         on {}.",
        report.rows,
        report.train_rows,
        report.test_rows,
        report.features.len(),
        report.label,
        report.device
    );
    if !report.skipped_columns.is_empty() {
        println!(
            "Skipped non-numeric columns: {}.",
            report.skipped_columns.join(", ")
        );
    }
    println!(
        "Test AUC {:.3}, accuracy {:.3}, log loss {:.3} (train {:.3}).",
        m.auc, m.accuracy, m.test_loss, m.loss
    );
    println!(
        "Wrote {}/model.safetensors and metrics.json.",
        options.out.display()
    );
    Ok(Outcome::Success)
}

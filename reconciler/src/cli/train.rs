//! `cairn train`: the reference trainer. Reads a folder of CSV files, fits a logistic
//! regression, writes `model.safetensors` and `metrics.json`. The example workspace's job
//! runs it.
//!
//! Data-parallel: when its environment holds the distributed-training contract with
//! `WORLD_SIZE` > 1 (`RANK`, `MASTER_ADDR`, `MASTER_PORT`, as a target sets them for a job
//! with `instances` > 1), this process trains as that rank of the group and only rank 0
//! writes the files (see `cairn::workload::train`). This file reads those variables; the
//! library reads none.

use std::path::PathBuf;
use std::time::Duration;

use cairn::workload::{train, Device, Error, GroupOptions, TrainOptions};

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

    /// With `WORLD_SIZE` > 1: how long the ranks may take to find each other, and how
    /// long one rank waits for the others during an epoch before it gives up.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    rendezvous_timeout: cairn::manifest::Duration,

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

/// The data-parallel group the contract's variables describe, or `None` for one process
/// (`WORLD_SIZE` unset or 1).
fn group_from_env(timeout: Duration) -> Result<Option<GroupOptions>, CommandError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let number = |name: &str, text: String| {
        text.trim().parse::<u32>().map_err(|_| {
            CommandError::new(
                ErrorKind::User,
                format!("`{name}` is `{text}`, not a whole number"),
            )
            .hint_opt(Some(
                "the distributed-training contract sets it; unset `WORLD_SIZE` to train in \
                 one process"
                    .into(),
            ))
        })
    };
    let Some(world) = var("WORLD_SIZE") else {
        return Ok(None);
    };
    let world_size = number("WORLD_SIZE", world)?;
    if world_size <= 1 {
        return Ok(None);
    }
    let missing = |name: &str| {
        CommandError::new(
            ErrorKind::User,
            format!("`WORLD_SIZE` is {world_size} but `{name}` is not set"),
        )
        .hint_opt(Some(
            "set `RANK`, `MASTER_ADDR` and `MASTER_PORT` too, or unset `WORLD_SIZE` to train \
             in one process"
                .into(),
        ))
    };
    let rank = number("RANK", var("RANK").ok_or_else(|| missing("RANK"))?)?;
    let master_addr = var("MASTER_ADDR").ok_or_else(|| missing("MASTER_ADDR"))?;
    let port = var("MASTER_PORT").ok_or_else(|| missing("MASTER_PORT"))?;
    let master_port = port.trim().parse::<u16>().map_err(|_| {
        CommandError::new(
            ErrorKind::User,
            format!("`MASTER_PORT` is `{port}`, not a port number"),
        )
    })?;
    Ok(Some(GroupOptions {
        world_size,
        rank,
        master_addr,
        master_port,
        timeout,
    }))
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let group = group_from_env(args.rendezvous_timeout.as_std())?;
    let rank = group.as_ref().map(|g| g.rank);
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
        group,
    };
    let report = train(&options).map_err(|e| {
        let hint = match &e {
            Error::GpuUnavailable { .. } => {
                Some("use `--device auto` or `--device cpu` to train on the CPU".to_string())
            }
            Error::Group(_) => Some(
                "every rank runs the same `cairn train` with the same `WORLD_SIZE`, \
                 `MASTER_ADDR` and `MASTER_PORT`, and reaches rank 0 within \
                 `--rendezvous-timeout`; a rank that failed first says why in its own output"
                    .to_string(),
            ),
            _ => None,
        };
        let kind = match e {
            Error::Group(_) => ErrorKind::Target,
            _ => ErrorKind::User,
        };
        CommandError::from_error(kind, &e).hint_opt(hint)
    })?;
    if let Some(rank) = rank.filter(|r| *r != 0) {
        if args.format == Format::Json {
            println!(
                "{}",
                serde_json::json!({ "rank": rank, "world_size": report.world_size })
            );
        } else {
            println!(
                "Rank {rank} of {} trained its shard; rank 0 writes the model.",
                report.world_size
            );
        }
        return Ok(Outcome::Success);
    }
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
         on {}{}.",
        report.rows,
        report.train_rows,
        report.test_rows,
        report.features.len(),
        report.label,
        report.device,
        if report.world_size > 1 {
            format!(" in {} processes", report.world_size)
        } else {
            String::new()
        }
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

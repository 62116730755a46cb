//! `cairn split`: a preparation step that splits a folder of CSV files into training and
//! holdout rows by a seeded hash of a key column (see `cairn::workload::split`).

use std::path::PathBuf;

use cairn::workload::{split, SplitOptions};

use super::{CommandError, ErrorKind, Format, Outcome, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A CSV file, or a folder of CSV files with the same header.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,

    /// The folder the training rows are written into (one file per input file).
    #[arg(long, value_name = "DIR")]
    train: PathBuf,

    /// The folder the holdout rows are written into.
    #[arg(long, value_name = "DIR")]
    holdout: PathBuf,

    /// The share of rows held out.
    #[arg(long, default_value_t = 0.2)]
    share: f64,

    /// The column whose value decides a row's side (e.g. `loan_id`), so a row keeps its
    /// side when others change; the row's position when absent.
    #[arg(long, value_name = "COLUMN")]
    key: Option<String>,

    #[arg(long, default_value_t = 7)]
    seed: u64,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args, _output: Output) -> Result<Outcome, CommandError> {
    let options = SplitOptions {
        data: args.data,
        train: args.train,
        holdout: args.holdout,
        share: args.share,
        key: args.key,
        seed: args.seed,
    };
    let report = split(&options).map_err(|e| CommandError::from_error(ErrorKind::User, &e))?;
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialize")
        );
    } else {
        println!(
            "Split {} rows of {} file{}: {} for training into {}, {} held out into {}.",
            report.train_rows + report.holdout_rows,
            report.files,
            if report.files == 1 { "" } else { "s" },
            report.train_rows,
            options.train.display(),
            report.holdout_rows,
            options.holdout.display()
        );
    }
    Ok(Outcome::Success)
}

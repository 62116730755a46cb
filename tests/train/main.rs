//! Tests of where `cairn train` runs its matrix work (`--device auto|cpu|cuda`): the real
//! binary on a generated CSV in a temporary folder, and the library
//! (`cairn::workload::train`) for comparing devices.
//!
//! Which tests check what depends on the machine: without a usable GPU, `--device cuda`
//! must be a clear error and `auto` must train on the CPU; with one, the GPU's numbers
//! must match the CPU's. Each test says on stderr which case it checked.
//!
//! `distributed`: data-parallel training, several `cairn train` processes under the
//! distributed-training contract's variables.

mod device;
mod distributed;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn::workload::{train, Device, Error, TrainOptions, TrainReport};

/// Writes a CSV of `rows` rows: an id, four features and a 0/1 `label` that depends on
/// them with noise.
pub fn csv(dir: &Path, rows: usize) -> PathBuf {
    let mut text = String::from("id,age,income,utilization,tenure,label\n");
    let mut state = 42u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..rows {
        let (age, income, utilization, tenure) = (
            20.0 + 50.0 * uniform(),
            20e3 + 80e3 * uniform(),
            uniform(),
            30.0 * uniform(),
        );
        let z = -0.04 * (age - 45.0) - (income - 60e3) / 20e3 + 3.0 * (utilization - 0.5)
            - 0.05 * (tenure - 15.0);
        let label = u8::from(z + 2.0 * uniform() - 1.0 > 0.0);
        writeln!(
            text,
            "r{i},{age:.1},{income:.0},{utilization:.4},{tenure:.2},{label}"
        )
        .unwrap();
    }
    let path = dir.join("data.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `cairn train` with these arguments.
pub fn cairn_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("train")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cairn runs")
}

/// Trains with the library on `device`, into `<dir>/<out>`.
pub fn train_on(data: &Path, dir: &Path, out: &str, device: Device) -> Result<TrainReport, Error> {
    train(&TrainOptions {
        data: data.to_path_buf(),
        out: dir.join(out),
        epochs: 500,
        device,
        ..TrainOptions::default()
    })
}

/// Returns why the GPU cannot be used here, or `None` when it can.
pub fn gpu_missing(data: &Path, dir: &Path) -> Option<String> {
    match train_on(data, dir, "probe", Device::Cuda) {
        Ok(_) => None,
        Err(Error::GpuUnavailable { reason }) => Some(reason),
        Err(other) => panic!("training on the GPU failed: {other:?}"),
    }
}

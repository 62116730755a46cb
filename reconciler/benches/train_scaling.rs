//! Scaling of data-parallel `cairn train`: the same training run with 1, 2 and 4
//! processes (the local target's ranks: one `cairn train` per rank, the distributed
//! contract's variables, gradients summed over loopback TCP each epoch). Prints each
//! group's wall time (best of `CAIRN_SCALING_RUNS`, default 3), its speedup over one
//! process and its scaling efficiency, `T₁ / (N · T_N)`, and checks every group gives the
//! one-process model (largest weight difference).
//!
//! The work is a generated CSV of `CAIRN_SCALING_ROWS` rows (default 400,000) and 16
//! features, `CAIRN_SCALING_EPOCHS` epochs (default 200), on the CPU. Reading the CSV is in
//! the time: every rank reads the whole file and keeps its shard, as it would from a
//! mounted dataset. On a machine with fewer cores than ranks the efficiency says so.
//!
//! Run: `cargo bench --bench train_scaling`.

#[macro_use]
mod support;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::workload::{load_model, Model};

const FEATURES: usize = 16;

/// A knob: `default` for a real run, `tiny` for a smoke run.
fn knob(name: &str, default: usize, tiny: usize) -> usize {
    support::knob(name, default, tiny)
}

/// A linearly separable-ish CSV from a fixed LCG, so every run trains on the same rows.
fn write_csv(path: &Path, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let header: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
    writeln!(out, "{},label", header.join(",")).unwrap();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    for _ in 0..rows {
        let x: Vec<f64> = (0..FEATURES).map(|_| next()).collect();
        let score: f64 = x
            .iter()
            .enumerate()
            .map(|(i, v)| v * (i as f64 - 7.5))
            .sum();
        let label = u8::from(score + next() > 0.0);
        let line: Vec<String> = x.iter().map(|v| format!("{v:.5}")).collect();
        writeln!(out, "{},{label}", line.join(",")).unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_rank(data: &Path, out: &Path, epochs: usize, world: u32, rank: u32, port: u16) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .arg("train")
        .args(["--data", data.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args(["--device", "cpu", "--epochs", &epochs.to_string()])
        .env_clear()
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if world > 1 {
        command
            .env("WORLD_SIZE", world.to_string())
            .env("RANK", rank.to_string())
            .env("NODE_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
    }
    command.spawn().expect("cairn starts")
}

/// One training run with `world` processes: its wall time and rank 0's model.
fn run_group(data: &Path, dir: &Path, epochs: usize, world: u32) -> (Duration, Model) {
    let out = dir.join(format!("world-{world}"));
    let _ = std::fs::remove_dir_all(&out);
    let port = free_port();
    let started = Instant::now();
    let ranks: Vec<Child> = (0..world)
        .map(|rank| spawn_rank(data, &out, epochs, world, rank, port))
        .collect();
    for (rank, child) in ranks.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "rank {rank} of {world} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let elapsed = started.elapsed();
    (elapsed, load_model(&out).expect("rank 0 wrote the model"))
}

fn max_difference(a: &Model, b: &Model) -> f64 {
    a.weights()
        .iter()
        .zip(b.weights())
        .map(|(x, y)| (x - y).abs())
        .fold((a.bias() - b.bias()).abs(), f64::max)
}

fn main() {
    let rows = knob("CAIRN_SCALING_ROWS", 400_000, 2_000);
    let epochs = knob("CAIRN_SCALING_EPOCHS", 200, 5);
    let runs = knob("CAIRN_SCALING_RUNS", 3, 1).max(1);
    let dir: PathBuf = tempfile::tempdir().unwrap().keep();
    let data = dir.join("data.csv");
    write_csv(&data, rows);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    figure!(
        "cairn train scaling: {rows} rows × {FEATURES} features, {epochs} epochs, CPU, \
         {cores} cores, best of {runs}"
    );
    figure!(
        "{:>9}  {:>9}  {:>8}  {:>10}  {:>22}",
        "processes",
        "wall",
        "speedup",
        "efficiency",
        "max |Δw| vs 1 process"
    );
    let mut one: Option<(Duration, Model)> = None;
    for world in [1u32, 2, 4] {
        let mut best: Option<(Duration, Model)> = None;
        for _ in 0..runs {
            let (t, model) = run_group(&data, &dir, epochs, world);
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, model));
            }
        }
        let (t, model) = best.unwrap();
        let (t1, diff) = match &one {
            None => (t, 0.0),
            Some((t1, m1)) => (*t1, max_difference(&model, m1)),
        };
        let speedup = t1.as_secs_f64() / t.as_secs_f64();
        figure!(
            "{world:>9}  {:>8.2}s  {speedup:>7.2}×  {:>9.0} %  {diff:>22.1e}",
            t.as_secs_f64(),
            100.0 * speedup / f64::from(world)
        );
        if one.is_none() {
            one = Some((t, model));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    support::finish();
}

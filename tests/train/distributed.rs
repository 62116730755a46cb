//! Data-parallel `cairn train`: the real binary started N times with the
//! distributed-training contract's variables (as the local target starts a job's ranks),
//! summing gradients over loopback TCP.
//!
//! The tolerance: the largest absolute difference between a group's weights (and bias)
//! and the one-process model's is under [`TOLERANCE`]. The gradient is the sum over the
//! shards divided by the total row count, so only the order of float additions differs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn::workload::{load_model, Model, MODEL_FILE};
use serde_json::Value;

use crate::csv;

/// The largest weight or bias difference allowed between a group and one process.
const TOLERANCE: f64 = 1e-9;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts rank `rank` of `world` (output folder `<dir>/rank-<rank>`), CPU only.
fn spawn_rank(data: &Path, dir: &Path, world: u32, rank: u32, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("train")
        .args(["--data", data.to_str().unwrap()])
        .args(["--out", dir.join(format!("rank-{rank}")).to_str().unwrap()])
        .args(["--device", "cpu"])
        .args(extra)
        .env_clear()
        .env("NO_COLOR", "1")
        .env("WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .env("NODE_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts")
}

/// Waits for a rank, killing it after `limit` (the test then fails: it hung).
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "a rank still ran after {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Trains with `world` processes; returns rank 0's model and metrics.
fn train_group(data: &Path, dir: &Path, world: u32) -> (Model, Value) {
    let port = free_port();
    let ranks: Vec<Child> = (0..world)
        .map(|rank| spawn_rank(data, dir, world, rank, port, &["--epochs", "400"]))
        .collect();
    for (rank, child) in ranks.into_iter().enumerate() {
        let output = wait_bounded(child, Duration::from_secs(120));
        assert!(
            output.status.success(),
            "rank {rank} of {world}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        if rank > 0 {
            assert!(
                text(&output.stdout).contains(&format!("Rank {rank} of {world} trained")),
                "{}",
                text(&output.stdout)
            );
            assert!(
                !dir.join(format!("rank-{rank}")).exists(),
                "only rank 0 writes"
            );
        }
    }
    let out = dir.join("rank-0");
    let metrics =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    (load_model(&out).unwrap(), metrics)
}

fn max_difference(a: &Model, b: &Model) -> f64 {
    a.weights()
        .iter()
        .zip(b.weights())
        .map(|(x, y)| (x - y).abs())
        .fold((a.bias() - b.bias()).abs(), f64::max)
}

/// 2 and 4 processes give the one-process model within [`TOLERANCE`], and say so in
/// `metrics.json`.
#[test]
fn two_and_four_processes_match_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = csv(tmp.path(), 3_001);
    let alone = tmp.path().join("alone");
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("train")
        .args(["--data", data.to_str().unwrap()])
        .args(["--out", alone.to_str().unwrap()])
        .args(["--device", "cpu", "--epochs", "400"])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let one = load_model(&alone).unwrap();
    let one_metrics: Value =
        serde_json::from_slice(&std::fs::read(alone.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(one_metrics["world_size"], 1);

    for world in [2, 4] {
        let dir = tmp.path().join(format!("world-{world}"));
        let (model, metrics) = train_group(&data, &dir, world);
        let diff = max_difference(&model, &one);
        eprintln!("{world} processes: largest weight difference {diff:e}");
        assert!(diff < TOLERANCE, "{world} processes differ by {diff}");
        assert_eq!(model.features, one.features);
        assert_eq!(metrics["world_size"], world);
        assert_eq!(metrics["train_rows"], one_metrics["train_rows"]);
        let auc = (metrics["auc"].as_f64().unwrap() - one_metrics["auc"].as_f64().unwrap()).abs();
        assert!(auc < 1e-9, "{metrics} vs {one_metrics}");
    }
    assert!(alone.join(MODEL_FILE).exists());
}

/// A rank killed mid-training (`SIGKILL`) makes every other rank fail at once, with the
/// lost rank named: rank 0 loses rank 1, rank 2 loses rank 0 when rank 0 gives up.
#[test]
fn a_killed_rank_fails_the_others_without_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let data = csv(tmp.path(), 500);
    let port = free_port();
    // Far more epochs than the test waits for: only the kill can end this training.
    let extra = ["--epochs", "100000000"];
    let mut ranks: Vec<Child> = (0..3)
        .map(|rank| spawn_rank(&data, tmp.path(), 3, rank, port, &extra))
        .collect();
    // Training has started once the group has joined; give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    for (rank, child) in ranks.iter_mut().enumerate() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "rank {rank} ended early"
        );
    }
    let mut victim = ranks.remove(1);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed = Instant::now();
    let outputs: Vec<Output> = ranks
        .into_iter()
        .map(|child| wait_bounded(child, Duration::from_secs(20)))
        .collect();
    eprintln!("the others failed {:?} after the kill", killed.elapsed());
    let (rank0, rank2) = (text(&outputs[0].stderr), text(&outputs[1].stderr));
    assert_eq!(outputs[0].status.code(), Some(1), "{rank0}");
    assert_eq!(outputs[1].status.code(), Some(1), "{rank2}");
    assert!(
        rank0.contains("data-parallel training failed: lost rank 1 at step"),
        "{rank0}"
    );
    assert!(rank2.contains("lost rank 0 at step"), "{rank2}");
    assert!(!tmp.path().join("rank-0").exists(), "nothing is written");
}

/// A rank that never comes is named by rank 0 once the rendezvous timeout is over.
#[test]
fn a_missing_rank_is_named_after_the_rendezvous_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = csv(tmp.path(), 100);
    let port = free_port();
    let extra = ["--rendezvous-timeout", "2s"];
    let started = Instant::now();
    let ranks: Vec<Child> = (0..2)
        .map(|rank| spawn_rank(&data, tmp.path(), 3, rank, port, &extra))
        .collect();
    let outputs: Vec<Output> = ranks
        .into_iter()
        .map(|child| wait_bounded(child, Duration::from_secs(20)))
        .collect();
    assert!(started.elapsed() < Duration::from_secs(15));
    let stderr = text(&outputs[0].stderr).replace(&port.to_string(), "PORT");
    assert_eq!(outputs[0].status.code(), Some(1), "{stderr}");
    insta::assert_snapshot!(stderr.trim_end());
    // Rank 1 had joined: it loses rank 0 when rank 0 gives up.
    assert_eq!(outputs[1].status.code(), Some(1));
    assert!(
        text(&outputs[1].stderr).contains("rank 0"),
        "{}",
        text(&outputs[1].stderr)
    );
}

/// The contract's variables half set are a clear error, before any data is read.
#[test]
fn a_half_set_contract_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["train", "--data", "nowhere.csv", "--out"])
        .arg(tmp.path().join("out"))
        .env_clear()
        .env("NO_COLOR", "1")
        .env("WORLD_SIZE", "2")
        .env("RANK", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    insta::assert_snapshot!(text(&output.stderr).trim_end());
}

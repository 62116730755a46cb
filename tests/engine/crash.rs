//! `kill -9` in the middle of an apply, then convergence: the next apply takes over the
//! dead apply's lock once its lease runs out, redoes what wasn't recorded, and nothing
//! half-written is ever visible as a version.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{
    hang_once, kill_apply_during_job, kill_group, manifests, sha256_file, wait_with_deadline, Job,
    Root,
};

/// Asserts that every committed dataset version's files are stored with the hashes its
/// marker lists.
fn assert_versions_complete(root: &Root, dataset: &str) {
    for version in root.committed("datasets", dataset) {
        let marker = root.store_json(&format!("datasets/{dataset}/{version}/_version.json"));
        for f in marker["files"].as_array().unwrap() {
            let stored = root.store().join(f["key"].as_str().unwrap());
            assert!(stored.is_file(), "{} of {version} is missing", f["key"]);
            assert_eq!(
                sha256_file(&stored),
                f["sha256"].as_str().unwrap(),
                "{}",
                f["key"]
            );
        }
    }
}

/// Kill -9 of `cairn apply` (and its job) during a run; the next apply waits for the
/// dead apply's 2 s lease, takes the lock over and converges.
#[test]
fn kill_during_run_then_apply_converges() {
    let root = manifests(&Job::default());
    let marker = root.scratch().join("started");
    root.set_job(&Job::script(hang_once(&marker)));

    let dead = root.spawn(&["apply", "ROOT", "--auto-approve", "--lock-lease", "2s"]);
    kill_apply_during_job(dead, &marker);

    // The dead apply left its lock and no model version.
    assert!(root.store().join(".cairn/lock").exists());
    assert!(root.committed("models", "scorer").is_empty());

    let started = Instant::now();
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve", "--lock-timeout", "20s"]);
    apply.ok();
    assert!(
        apply.stderr.contains("waiting for the lock"),
        "{}",
        apply.both()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();

    let models = root.committed("models", "scorer");
    assert_eq!(models.len(), 1);
    let run = root.store_json(&format!("runs/train/{}/_run.json", models[0]));
    assert_eq!(run["status"], "succeeded");
    assert!(!root.store().join(".cairn/lock").exists());
    assert_versions_complete(&root, "loans");
}

/// Writes `n` files of `size` pseudo-random bytes.
fn write_blobs(dir: &Path, n: usize, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..n {
        let body: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(format!("part-{i:03}.csv")), body).unwrap();
    }
}

fn with_bulk_dataset() -> Root {
    let root = manifests(&Job::default());
    root.write(
        "risk/bulk.toml",
        "[dataset.bulk]\nsource = \"data/bulk/\"\nformat = \"csv\"\n",
    );
    write_blobs(&root.path().join("risk/data/bulk"), 300, 256 * 1024);
    root
}

/// Kill -9 during a dataset upload. The folder store uploads by hard link when the store
/// and the manifests share a file system, so 300 × 256 KiB take a few milliseconds and
/// the kill lands at an arbitrary point (during the upload, or after). Whatever it hit,
/// no version is visible without all its files, and the next apply converges. The
/// deterministic half-uploaded case is `interrupted_upload_is_invisible_and_resumed`.
#[test]
fn kill_during_upload_then_apply_converges() {
    let root = with_bulk_dataset();
    let dataset_dir = root.store().join("datasets/bulk");
    let dead = root.spawn(&["apply", "ROOT", "--auto-approve", "--lock-lease", "1s"]);
    let pid = dead.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dataset_dir.exists() && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    kill_group(pid);
    let _ = wait_with_deadline(dead, Duration::from_secs(10));
    assert_versions_complete(&root, "bulk");

    let apply = root.cairn(&["apply", "ROOT", "--auto-approve", "--lock-timeout", "20s"]);
    apply.ok();
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
    assert_eq!(root.committed("datasets", "bulk").len(), 1);
    assert_versions_complete(&root, "bulk");
}

/// An upload interrupted half-way (files stored, marker not written; one file cut short)
/// is not a version: the plan still creates it, and the apply stores what is missing and
/// commits it.
#[test]
fn interrupted_upload_is_invisible_and_resumed() {
    let root = with_bulk_dataset();
    let plan_file = root.scratch().join("plan.json");
    root.cairn(&["plan", "ROOT", "-o", &plan_file.display().to_string()])
        .ok();
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    let version = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "risk/dataset.bulk")
        .map(|c| c["after"]["version"].as_str().unwrap().to_string())
        .unwrap();

    // What a killed upload leaves: the first 150 files, one of them cut short.
    let source = root.path().join("risk/data/bulk");
    let stored = root.store().join(format!("datasets/bulk/{version}"));
    std::fs::create_dir_all(&stored).unwrap();
    for i in 0..150 {
        let name = format!("part-{i:03}.csv");
        std::fs::copy(source.join(&name), stored.join(&name)).unwrap();
    }
    let cut = stored.join("part-149.csv");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    assert!(root.committed("datasets", "bulk").is_empty());
    let plan = root.cairn(&["plan", "ROOT"]);
    plan.ok();
    let line = plan
        .stdout
        .lines()
        .skip_while(|l| !l.contains("+ risk/dataset.bulk"))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("new dataset: 300 files"), "{}", plan.both());
    assert!(!line.contains("already stored"), "{}", plan.both());

    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    assert!(
        apply.stderr.contains("uploading 300 file(s)"),
        "the plan lists all files; resume skips the stored ones: {}",
        apply.both()
    );
    assert_eq!(root.committed("datasets", "bulk"), vec![version.clone()]);
    assert_versions_complete(&root, "bulk");
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
}

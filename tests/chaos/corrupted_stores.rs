//! An applied folder store, damaged in many ways, then `plan`, `status`, `history`,
//! `verify` and `apply`: none may panic, crash or hang, and at least one of them must
//! name the damage (the file, or what to run).

use std::path::Path;
use std::time::Duration;

use crate::support::{manifests, Job, Root};
use crate::{bounded, panicked, Ended};

fn first_with(store: &Path, dir: &str, suffix: &str) -> std::path::PathBuf {
    let mut stack = vec![store.join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                return p;
            }
        }
    }
    panic!("no {suffix} under {dir}");
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

type Damage = fn(&Path);

/// (case, damage to the store folder, a text some command's output must contain).
fn cases() -> Vec<(&'static str, Damage, &'static str)> {
    vec![
        (
            "state.json truncated",
            |s| {
                let p = s.join(".cairn/state.json");
                let t = std::fs::read(&p).unwrap();
                std::fs::write(&p, &t[..t.len() / 2]).unwrap();
            },
            "state.json",
        ),
        (
            "state.json is a JSON array",
            |s| std::fs::write(s.join(".cairn/state.json"), "[]").unwrap(),
            "state.json",
        ),
        (
            "state.json is empty",
            |s| std::fs::write(s.join(".cairn/state.json"), "").unwrap(),
            "state.json",
        ),
        (
            "state.json is a folder",
            |s| {
                std::fs::remove_file(s.join(".cairn/state.json")).unwrap();
                std::fs::create_dir(s.join(".cairn/state.json")).unwrap();
            },
            "state.json",
        ),
        (
            "state.json with a serial past u64",
            |s| {
                let p = s.join(".cairn/state.json");
                let t = std::fs::read_to_string(&p).unwrap();
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                let serial = v["serial"].to_string();
                std::fs::write(
                    &p,
                    t.replacen(
                        &format!("\"serial\":{serial}"),
                        "\"serial\":99999999999999999999999",
                        1,
                    ),
                )
                .unwrap();
            },
            "state.json",
        ),
        (
            "a garbage lock",
            |s| std::fs::write(s.join(".cairn/lock"), "\0\u{1}garbage").unwrap(),
            "cairn unlock --force",
        ),
        (
            "an empty lock",
            |s| std::fs::write(s.join(".cairn/lock"), "").unwrap(),
            "cairn unlock --force",
        ),
        (
            "a lock expiring at u64::MAX",
            |s| {
                std::fs::write(s.join(".cairn/lock"), r#"{"id":"abcdefabcdef","holder":"x@y","command":"cairn apply","pid":1,"started_at":"2026-01-01T00:00:00Z","heartbeat_at":"2026-01-01T00:00:00Z","expires_at":18446744073709551615}"#).unwrap()
            },
            "abcdefabcdef",
        ),
        (
            "a garbage journal record",
            |s| {
                let p = first_with(s, ".cairn/journal", ".json");
                std::fs::write(p, "{\"id\":").unwrap();
            },
            "journal",
        ),
        (
            "a journal record of the wrong shape",
            |s| {
                let p = first_with(s, ".cairn/journal", ".json");
                std::fs::write(p, "{\"id\": 5}").unwrap();
            },
            "journal",
        ),
        (
            "a dataset file deleted",
            |s| std::fs::remove_file(first_with(s, "datasets", ".csv")).unwrap(),
            "missing from the store",
        ),
        (
            "a dataset file bit-flipped",
            |s| flip_byte(&first_with(s, "datasets", ".csv"), 10),
            "its bytes changed",
        ),
        (
            "a dataset file truncated",
            |s| std::fs::write(first_with(s, "datasets", ".csv"), "x").unwrap(),
            "recorded",
        ),
        (
            "a dataset marker truncated",
            |s| {
                let p = first_with(s, "datasets", "_version.json");
                let t = std::fs::read(&p).unwrap();
                std::fs::write(&p, &t[..t.len() / 3]).unwrap();
            },
            "_version.json",
        ),
        (
            "a dataset marker deleted",
            |s| std::fs::remove_file(first_with(s, "datasets", "_version.json")).unwrap(),
            "dataset.loans",
        ),
        (
            "a model marker garbage",
            |s| std::fs::write(first_with(s, "models", "_model.json"), "not json").unwrap(),
            "_model.json",
        ),
        (
            "a model file deleted",
            |s| std::fs::remove_file(first_with(s, "models", "model.bin")).unwrap(),
            "missing from the store",
        ),
        (
            "a run record garbage",
            |s| std::fs::write(first_with(s, "runs", "_run.json"), "{").unwrap(),
            "_run.json",
        ),
        (
            "a dataset file replaced by a symlink to /etc/passwd",
            |s| {
                let p = first_with(s, "datasets", ".csv");
                std::fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
            },
            "loans.csv",
        ),
    ]
}

#[test]
#[ignore = "chaos harness (minutes): cargo test --release --test chaos -- --ignored --nocapture"]
fn corrupted_stores_are_named_and_never_crash() {
    let deadline = Duration::from_secs(120);
    let mut problems = Vec::new();
    let cases = cases();
    for (name, damage, named) in &cases {
        let root: Root = manifests(&Job::default());
        let applied = root.cairn(&["apply", "ROOT", "--auto-approve"]);
        assert_eq!(applied.code, 0, "{}", applied.both());
        damage(&root.store());
        let dir = root.path().to_path_buf();
        let mut seen = String::new();
        let mut outcome = Vec::new();
        for args in [
            &["plan", "."][..],
            &["status", "."],
            &["history", "."],
            &["verify", "."],
            &["apply", ".", "--auto-approve", "--lock-lease", "2s"],
        ] {
            match bounded(&dir, args, deadline, 4 << 30) {
                Ended::Exited(run) if panicked(&run) => problems.push(format!(
                    "{name}: `cairn {}` panicked\n{}",
                    args[0],
                    run.both()
                )),
                Ended::Exited(run) => {
                    outcome.push(format!("{} {}", args[0], run.code));
                    seen.push_str(&run.stdout);
                    seen.push_str(&run.stderr);
                }
                Ended::Signalled(run) => problems.push(format!(
                    "{name}: `cairn {}` was ended by a signal\n{}",
                    args[0],
                    run.both()
                )),
                Ended::Overran => {
                    problems.push(format!("{name}: `cairn {}` ran past {deadline:?}", args[0]))
                }
            }
        }
        if !seen.contains(named) {
            problems.push(format!(
                "{name}: no command named the damage (`{named}`):\n{seen}"
            ));
        }
        println!("{name}: {}", outcome.join(", "));
    }
    println!(
        "{} corrupted stores: {} problems",
        cases.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

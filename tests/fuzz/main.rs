//! Fuzzing the manifest loader and resolver with proptest.
//!
//! Each strategy generates whole repositories, written to a temporary folder as
//! `<root>/<workspace>/workspace.toml` plus other files, then loaded with
//! `cairn::manifest::load_folder` and resolved with `cairn::desired::resolve`. The
//! properties checked on every input are listed in [`check`]; in short: no panic, every
//! finding has a message and a location that points into a real file, and the result is
//! deterministic. Every 50th input also goes through the `cairn` binary (JSON and text
//! output) and through Git (`load_revision` on the same files committed).
//!
//! Strategies:
//! - `raw_bytes_and_text`: arbitrary bytes, arbitrary text and TOML-ish token soup as file
//!   content; odd folder and file names.
//! - `structured_manifests`: near-valid manifests from the real grammar (every kind and
//!   field, references among a small pool of names, traffic maps, mirrors, rollout steps,
//!   GPU counts at every u32 boundary, wrong types, unknown fields, unicode, long strings).
//! - `coherent_manifests`: repositories built to validate (references resolve, quotas fit,
//!   traffic adds up), then given 0-3 defects at the model level (a wrong or dangling value,
//!   a changed or added nested entry, a removed field, a renamed resource), to reach the
//!   checks that run only on otherwise valid input, and the success path.
//! - `mutated_examples`: byte flips, truncation, splices and token/number/string swaps of
//!   the example repository in `manifests/`.
//! - `pathological_sizes`: long repetitions, deep nesting, files at the 4 MiB limit, and
//!   dependency chains of up to 1,500 jobs with and without a cycle.
//!
//! Cases per strategy: 250 by default (about 15 s in a debug build on two cores), or
//! `PROPTEST_CASES` (the pathological strategy runs a tenth as many). A long run:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! Each strategy prints `fuzz: <strategy>: ran N inputs (…)`. A failure is shrunk to a
//! minimal repository, printed in full and saved in `tests/fuzz/main.regressions` (replayed
//! first on the next run).

mod check;
mod coherent;
mod mutate;
mod raw;
mod repo;
mod structured;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

use check::{check_repo, report, Tally};
use repo::Repo;

const DEFAULT_CASES: u32 = 250;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn run(name: &'static str, cases: u32, strategy: impl Strategy<Value = Repo>) {
    let config = Config {
        cases,
        source_file: Some(file!()),
        test_name: Some(name),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let tally = Tally::default();
    let mut runner = TestRunner::new(config);
    quiet_panics::install();
    quiet_panics::arm();
    let result = runner.run(&strategy, |repo| check_repo(&repo, &tally));
    quiet_panics::disarm();
    report(name, &tally);
    if let Err(e) = result {
        panic!("fuzz: {name} failed: {e}");
    }
}

/// While shrinking, a panicking input panics hundreds of times; only the first panic of
/// each strategy is printed (with its location), the rest are silenced. Panics on other
/// threads (rayon's) and outside a strategy run print as usual.
mod quiet_panics {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        /// 0: print; 1: print the next one, then silence; 2: silence.
        static STATE: Cell<u8> = const { Cell::new(0) };
    }

    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let state = STATE.with(Cell::get);
                if state != 2 {
                    default(info);
                }
                if state == 1 {
                    STATE.with(|s| s.set(2));
                }
            }));
        });
    }

    pub fn arm() {
        STATE.with(|s| s.set(1));
    }

    pub fn disarm() {
        STATE.with(|s| s.set(0));
    }
}

#[test]
fn raw_bytes_and_text() {
    run("raw_bytes_and_text", cases(), raw::repo());
}

#[test]
fn structured_manifests() {
    run("structured_manifests", cases(), structured::repo());
}

#[test]
fn coherent_manifests() {
    run("coherent_manifests", cases(), coherent::repo());
}

#[test]
fn mutated_examples() {
    run("mutated_examples", cases(), mutate::repo());
}

#[test]
fn pathological_sizes() {
    run(
        "pathological_sizes",
        (cases() / 10).max(1),
        raw::pathological(),
    );
}

/// The unmutated examples are valid, so mutations start from the success path.
#[test]
fn examples_are_valid() {
    let snapshot = cairn::manifest::load_folder(&mutate::examples_root()).unwrap();
    let resolved = cairn::desired::resolve(&snapshot);
    assert!(resolved.is_ok(), "{:?}", resolved.err());
    let mut repo = Repo::default();
    for (path, content) in mutate::examples() {
        repo.file(path.clone(), content.clone());
    }
    let tally = Tally::default();
    check_repo(&repo, &tally).unwrap();
    assert_eq!(tally.valid.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A long chain of jobs resolves, and the same chain closed into a cycle is reported
/// once, at the reference that closes it.
#[test]
fn long_chains_and_cycles() {
    let tally = Tally::default();
    for (cycle, pin) in [(false, false), (true, false), (true, true)] {
        let repo = raw::chain_repo(2_000, cycle, pin);
        check_repo(&repo, &tally).unwrap();
    }
    assert_eq!(tally.valid.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert!(tally.codes.lock().unwrap().contains("cycle"));
}

/// Regression, found by `coherent_manifests`: the serving GPU total adds `replicas × gpus`
/// of every deployment; at the `u32` limits the sum must neither overflow (a panic in
/// debug builds) nor wrap (a wrong total in the `gpu-quota` finding).
#[test]
fn huge_serving_gpu_requests_do_not_overflow() {
    let mut repo = Repo::default();
    repo.file("ws/workspace.toml", "[workspace]\n");
    repo.file(
        "ws/serve.toml",
        r#"[compute.c]
target = "kubernetes"
max_gpus = 4

[model.m]
source = "s3://bucket/m"
format = "onnx"

[endpoint.e]
compute = "compute.c"

[endpoint.e.deployments.a]
model = "model.m"
replicas = 4294967295
gpus = 4294967295

[endpoint.e.deployments.b]
model = "model.m"
replicas = 4294967295
gpus = 4294967295
"#,
    );
    let tally = Tally::default();
    check_repo(&repo, &tally).unwrap();
    let dir = tempfile::tempdir().unwrap();
    repo.write(dir.path());
    let snapshot = cairn::manifest::load_folder(dir.path()).unwrap();
    let diagnostics = cairn::desired::resolve(&snapshot).unwrap_err();
    let quota = diagnostics
        .iter()
        .find(|d| d.code == "gpu-quota" && d.message.starts_with("endpoints on"))
        .expect("a gpu-quota finding for the endpoints");
    // 2 × (2^32 − 1)^2 GPUs serving; the total can't be reported as less than that.
    let serving = 2 * u128::from(u32::MAX) * u128::from(u32::MAX);
    let need: u128 = quota.message["endpoints on compute.c need ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a GPU total in the message");
    assert!(need >= serving, "{}", quota.message);
}

//! A corpus of hostile repositories: each a small change to one valid local workspace,
//! built in a temporary folder (malformed TOML, huge numbers, hostile strings and paths,
//! links, pipes and sockets, dangling references). `cairn validate` and `cairn plan`
//! must refuse every one with exit 1 and a first error that names a place in the
//! repository and gives a hint; neither may panic, crash or run out of memory (each run
//! has a 4 GB address-space limit). The counts are printed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{cairn, first_error, Run};

const WORKSPACE: &str = "[workspace]\nenvironment = \"dev\"\n";
const COMPUTE: &str = "[compute.here]\ntarget = \"local\"\nmax_gpus = 0\n";
const DATA: &str = "[dataset.loans]\nsource = \"data/loans/\"\nformat = \"csv\"\n";
const TRAIN: &str = "[job.train]\ncompute = \"compute.here\"\n\
    command = [\"sh\", \"-c\", \"cp {{ inputs.loans }}/* {{ outputs.model }}/\"]\n\
    inputs = { loans = \"dataset.loans\" }\noutputs = { model = \"model.scorer\" }\ngpus = 0\n\n\
    [model.scorer]\nfrom_job = \"job.train\"\nformat = \"custom\"\n";
const SERVE: &str = "[endpoint.api]\ncompute = \"compute.here\"\nport = 18080\n\n\
    [endpoint.api.deployments.blue]\nmodel = \"model.scorer\"\nreplicas = 1\n\n\
    [endpoint.api.traffic]\nblue = 100\n\n\
    [endpoint.api.rollout]\nsteps = [50, 100]\nstep_wait = \"30s\"\n";

/// Writes the valid base repository: `<dir>/risk/…`.
fn base(dir: &Path) {
    let ws = dir.join("risk");
    fs::create_dir_all(ws.join("data/loans")).unwrap();
    for (name, text) in [
        ("workspace.toml", WORKSPACE),
        ("compute.toml", COMPUTE),
        ("data.toml", DATA),
        ("train.toml", TRAIN),
        ("serve.toml", SERVE),
        ("data/loans/a.csv", "id,y\n1,0\n2,1\n"),
    ] {
        fs::write(ws.join(name), text).unwrap();
    }
}

fn write(dir: &Path, rel: &str, text: impl AsRef<[u8]>) {
    fs::write(dir.join("risk").join(rel), text).unwrap();
}

/// Replaces `from` (which must be there) with `to` in a file of the workspace.
fn edit(dir: &Path, rel: &str, from: &str, to: &str) {
    let path = dir.join("risk").join(rel);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} has no `{from}`");
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn link(dir: &Path, target: &str, rel: &str) {
    std::os::unix::fs::symlink(target, dir.join("risk").join(rel)).unwrap();
}

fn mkfifo(dir: &Path, rel: &str) {
    let status = Command::new("mkfifo")
        .arg(dir.join("risk").join(rel))
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {rel}");
}

type Mutate = Box<dyn Fn(&Path)>;

fn case(name: &'static str, mutate: impl Fn(&Path) + 'static) -> (&'static str, Mutate) {
    (name, Box::new(mutate))
}

fn cases() -> Vec<(&'static str, Mutate)> {
    vec![
        // Malformed TOML and types.
        case("unclosed table header", |d| {
            write(d, "data.toml", "[dataset.loans\nsource = \"data/loans/\"\n")
        }),
        case("unterminated string", |d| {
            write(d, "data.toml", "[dataset.loans]\nsource = \"data/loans/\n")
        }),
        case("duplicate key", |d| {
            edit(d, "data.toml", "format", "source = \"x\"\nformat")
        }),
        case("invalid UTF-8", |d| {
            write(d, "data.toml", b"[dataset.loans]\nsource = \"\xff\xfe\"\n")
        }),
        case("a raw NUL byte", |d| {
            write(
                d,
                "data.toml",
                "[dataset.loans]\nsource = \"data/loans/\"\0\n",
            )
        }),
        case("10,000 nested arrays", |d| {
            write(
                d,
                "extra.toml",
                format!("x = {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
            )
        }),
        case("wrong type", |d| {
            edit(d, "serve.toml", "replicas = 1", "replicas = \"two\"")
        }),
        case("integer past i64", |d| {
            edit(
                d,
                "serve.toml",
                "replicas = 1",
                "replicas = 99999999999999999999",
            )
        }),
        case("negative gpus", |d| {
            edit(d, "train.toml", "gpus = 0", "gpus = -1")
        }),
        case("unknown field", |d| {
            edit(d, "train.toml", "gpus = 0", "gpu = 0")
        }),
        case("a table where a string goes", |d| {
            edit(
                d,
                "data.toml",
                "format = \"csv\"",
                "format = { csv = true }",
            )
        }),
        // Huge numbers and durations.
        case("a million replicas", |d| {
            edit(d, "serve.toml", "replicas = 1", "replicas = 1000000")
        }),
        case("a million instances", |d| {
            edit(d, "train.toml", "gpus = 0", "gpus = 0\ninstances = 1000000")
        }),
        case("four billion retries", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\nretries = 4000000000",
            )
        }),
        case("port 0", |d| {
            edit(d, "serve.toml", "port = 18080", "port = 0")
        }),
        case("port 70000", |d| {
            edit(d, "serve.toml", "port = 18080", "port = 70000")
        }),
        case("traffic over 100", |d| {
            edit(d, "serve.toml", "blue = 100", "blue = 150")
        }),
        case("max_p99_ms of u64::MAX", |d| {
            edit(
                d,
                "serve.toml",
                "step_wait",
                "max_p99_ms = 18446744073709551615\nstep_wait",
            )
        }),
        case("a timeout of 10^20 seconds", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\ntimeout = \"99999999999999999999s\"",
            )
        }),
        case("a timeout of u64::MAX seconds", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\ntimeout = \"18446744073709551615s\"",
            )
        }),
        case("a timeout of a million days", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\ntimeout = \"1000000d\"",
            )
        }),
        case("idle_shutdown of 31 days", |d| {
            edit(
                d,
                "compute.toml",
                "max_gpus",
                "idle_shutdown = \"31d\"\nmax_gpus",
            )
        }),
        case("scale_down_delay of a year", |d| {
            edit(
                d,
                "serve.toml",
                "step_wait",
                "scale_down_delay = \"1y\"\nstep_wait",
            )
        }),
        case("step_wait of 0s", |d| {
            edit(d, "serve.toml", "step_wait = \"30s\"", "step_wait = \"0s\"")
        }),
        case("step_wait of 1s", |d| {
            edit(d, "serve.toml", "step_wait = \"30s\"", "step_wait = \"1s\"")
        }),
        // Strings no process can receive.
        case("NUL in an env value", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\nenv = { A = \"x\\u0000y\" }",
            )
        }),
        case("NUL in an env name", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\nenv = { \"A\\u0000\" = \"x\" }",
            )
        }),
        case("an env name with =", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\nenv = { \"A=B\" = \"x\" }",
            )
        }),
        case("an empty env name", |d| {
            edit(
                d,
                "train.toml",
                "gpus = 0",
                "gpus = 0\nenv = { \"\" = \"x\" }",
            )
        }),
        case("NUL in the command", |d| {
            edit(d, "train.toml", "[\"sh\", \"-c\"", "[\"sh\\u0000\", \"-c\"")
        }),
        case("NUL in a deployment's env", |d| {
            edit(
                d,
                "serve.toml",
                "replicas = 1",
                "replicas = 1\nenv = { B = \"\\u0000\" }",
            )
        }),
        // Dangling references.
        case("a dangling compute", |d| {
            edit(d, "train.toml", "compute.here", "compute.nowhere")
        }),
        case("a dangling input", |d| {
            edit(d, "train.toml", "dataset.loans", "dataset.gone")
        }),
        case("a dangling model", |d| {
            edit(d, "serve.toml", "model.scorer", "model.gone")
        }),
        case("a reference across workspaces", |d| {
            edit(d, "train.toml", "dataset.loans", "other/dataset.loans")
        }),
        case("a job that reads its own output", |d| {
            edit(
                d,
                "train.toml",
                "loans = \"dataset.loans\"",
                "loans = \"model.scorer\"",
            )
        }),
        case("no workspace.toml", |d| {
            fs::remove_file(d.join("risk/workspace.toml")).unwrap()
        }),
        // Hostile paths.
        case("source ..", |d| edit(d, "data.toml", "data/loans/", "..")),
        case("source ../../..", |d| {
            edit(d, "data.toml", "data/loans/", "../../../../../../etc")
        }),
        case("absolute source", |d| {
            edit(d, "data.toml", "data/loans/", "/etc")
        }),
        case("source in .git", |d| {
            edit(d, "data.toml", "data/loans/", "../.git")
        }),
        case("source in the store", |d| {
            edit(d, "data.toml", "data/loans/", "../.cairn/store")
        }),
        case("a NUL in the source", |d| {
            edit(d, "data.toml", "data/loans/", "data\\u0000/loans")
        }),
        // Links, pipes and sockets.
        case("ln -s . self in the data", |d| {
            link(d, ".", "data/loans/self")
        }),
        case("a link to / in the data", |d| {
            link(d, "/", "data/loans/root")
        }),
        case("a link loop in the data", |d| {
            link(d, "b", "data/loans/a");
            link(d, "a", "data/loans/b");
        }),
        case("a link to /etc/passwd in the data", |d| {
            link(d, "/etc/passwd", "data/loans/passwd.csv")
        }),
        case("a broken link in the data", |d| {
            link(d, "gone.csv", "data/loans/old.csv")
        }),
        case("a FIFO in the data", |d| mkfifo(d, "data/loans/pipe.csv")),
        case("the source is a FIFO", |d| {
            fs::remove_dir_all(d.join("risk/data/loans")).unwrap();
            mkfifo(d, "data/loans");
        }),
        case("a socket in the data", |d| {
            let socket = std::os::unix::net::UnixListener::bind(d.join("risk/data/loans/s.sock"));
            std::mem::forget(socket.unwrap());
        }),
        case("a FIFO manifest", |d| mkfifo(d, "pipe.toml")),
        case("a manifest linked to /etc/passwd", |d| {
            link(d, "/etc/passwd", "passwd.toml")
        }),
        case("a manifest link loop", |d| {
            link(d, "loop.toml", "loop.toml")
        }),
        case("a compute.toml linked out of the root", |d| {
            let outside = d.parent().unwrap().join(format!(
                "{}-compute.toml",
                d.file_name().unwrap().to_string_lossy()
            ));
            fs::rename(d.join("risk/compute.toml"), &outside).unwrap();
            std::os::unix::fs::symlink(&outside, d.join("risk/compute.toml")).unwrap();
        }),
    ]
}

/// Runs `cairn <command> . --format json` (or text for plan) in `dir`, with 4 GB of
/// address space.
fn run(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 4000000 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(dir);
    for (k, v) in cairn(dir).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Run::of(&mut cmd)
}

/// Checks one case; returns the code of its first error.
fn check(name: &str, dir: &Path) -> Result<String, String> {
    let validate = run(dir, &["validate", ".", "--format", "json"]);
    if validate.stderr.contains("panicked") || validate.code != Some(1) {
        return Err(format!(
            "{name}: `cairn validate` exited {:?}, expected 1\n{}\n{}",
            validate.code, validate.stdout, validate.stderr
        ));
    }
    let report: serde_json::Value = serde_json::from_str(&validate.stdout)
        .map_err(|e| format!("{name}: not JSON ({e}): {}", validate.stdout))?;
    let Some(error) = first_error(&report) else {
        return Err(format!("{name}: no error reported: {report:#}"));
    };
    let code = error["code"].as_str().unwrap_or("?").to_string();
    let file = error["location"]["file"].as_str();
    let placed = file.is_some_and(|f| fs::symlink_metadata(dir.join(f)).is_ok());
    let unlocated_ok = error["location"].is_null() && code == "missing-workspace-file";
    if !placed && !unlocated_ok {
        return Err(format!(
            "{name}: the first error names no file of the repository: {error:#}"
        ));
    }
    if error["help"].as_str().is_none_or(|h| h.trim().is_empty()) {
        return Err(format!("{name}: the first error has no hint: {error:#}"));
    }
    let plan = run(dir, &["plan", ".", "--color", "never"]);
    if plan.stderr.contains("panicked") || plan.code != Some(1) {
        return Err(format!(
            "{name}: `cairn plan` exited {:?}, expected 1\n{}\n{}",
            plan.code, plan.stdout, plan.stderr
        ));
    }
    Ok(code)
}

#[test]
fn hostile_repositories_get_a_placed_error_with_a_hint_and_never_crash() {
    let tmp = tempfile::tempdir().unwrap();

    // The base is valid: every case below is refused because of its one change.
    let valid = tmp.path().join("base");
    base(&valid);
    run(&valid, &["validate", ".", "--color", "never"]).expect_exit(0, "the base repository");

    let cases = cases();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, (name, mutate)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i:02}"));
        base(&dir);
        mutate(&dir);
        match check(name, &dir) {
            Ok(code) => *codes.entry(code).or_default() += 1,
            Err(failure) => failures.push(failure),
        }
    }
    let summary = codes
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "hostile: {} repositories, {} refused by validate and plan with a placed error and a hint; first errors: {summary}",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} hostile repositories were not refused cleanly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

//! A corpus of hostile manifest repositories, each a small change to the test fixture
//! (a local workspace with a dataset, a job and a model), through `cairn validate` and
//! `cairn plan`: a clear error at validate (exit 1, naming the file) where the input is
//! wrong, and never a panic, a crash, a blown 2 GiB address-space limit or a hang.

use std::path::Path;
use std::time::Duration;

use crate::support::{manifests, Job, Root};
use crate::{bounded, panicked, Ended};

/// What a case must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `validate` exits 1 and names a manifest file (`risk/…`).
    Invalid,
    /// Valid or not, as long as it ends cleanly.
    Either,
}

const ENDPOINT: &str = "[endpoint.api]\ncompute = \"compute.here\"\nport = 18080\n\n\
    [endpoint.api.deployments.blue]\nmodel = \"model.scorer\"\nreplicas = 1\n\n\
    [endpoint.api.traffic]\nblue = 100\n";

fn endpoint_with(extra: &str) -> String {
    format!("{ENDPOINT}{extra}")
}

fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain system call with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

type Mutate = fn(&Root);

fn cases() -> Vec<(&'static str, Expect, Mutate)> {
    vec![
        ("unclosed table header", Expect::Invalid, |r| {
            r.write(
                "risk/data.toml",
                "[dataset.loans\nsource = \"data/loans/\"\n",
            )
        }),
        ("unterminated string", Expect::Invalid, |r| {
            r.write(
                "risk/data.toml",
                "[dataset.loans]\nsource = \"data/loans/\n",
            )
        }),
        ("duplicate key", Expect::Invalid, |r| {
            r.write(
                "risk/data.toml",
                "[dataset.loans]\nsource = \"data/loans/\"\nsource = \"x\"\nformat = \"csv\"\n",
            )
        }),
        ("invalid UTF-8", Expect::Invalid, |r| {
            std::fs::write(
                r.path().join("risk/data.toml"),
                b"[dataset.loans]\nsource = \"\xff\xfe\"\n",
            )
            .unwrap()
        }),
        ("NUL byte in the file", Expect::Invalid, |r| {
            r.write(
                "risk/data.toml",
                "[dataset.loans]\nsource = \"data/loans/\"\0\nformat = \"csv\"\n",
            )
        }),
        ("a byte-order mark", Expect::Either, |r| {
            r.write(
                "risk/data.toml",
                "\u{feff}[dataset.loans]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
            )
        }),
        ("an empty manifest", Expect::Either, |r| {
            r.write("risk/extra.toml", "")
        }),
        ("wrong type", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &endpoint_with("").replace("replicas = 1", "replicas = \"two\""),
            )
        }),
        ("integer past i64", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &endpoint_with("").replace("replicas = 1", "replicas = 99999999999999999999"),
            )
        }),
        ("a million replicas", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &endpoint_with("").replace("replicas = 1", "replicas = 1000000"),
            )
        }),
        ("negative gpus", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write("risk/train.toml", &t.replace("gpus = 0", "gpus = -1"));
        }),
        ("port 0", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &endpoint_with("").replace("port = 18080", "port = 0"),
            )
        }),
        ("port 70000", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &endpoint_with("").replace("port = 18080", "port = 70000"),
            )
        }),
        ("traffic over 100", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &endpoint_with("").replace("blue = 100", "blue = 150"),
            )
        }),
        (
            "traffic to an undeclared deployment",
            Expect::Invalid,
            |r| {
                r.write(
                    "risk/extra.toml",
                    &endpoint_with("").replace("blue = 100", "blue = 50\ngreen = 50"),
                )
            },
        ),
        ("step_wait 0s", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &endpoint_with("\n[endpoint.api.rollout]\nsteps = [50, 100]\nstep_wait = \"0s\"\n"),
            )
        }),
        ("a timeout of 10^20 seconds", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("gpus = 0", "gpus = 0\ntimeout = \"99999999999999999999s\""),
            );
        }),
        ("a timeout of a million days", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("gpus = 0", "gpus = 0\ntimeout = \"1000000d\""),
            );
        }),
        ("a dangling compute", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("compute.here", "compute.nowhere"),
            );
        }),
        ("a dangling input", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("dataset.loans", "dataset.gone"),
            );
        }),
        ("NUL in an env value", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("gpus = 0", "gpus = 0\nenv = { A = \"x\\u0000y\" }"),
            );
        }),
        ("an env key with =", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("gpus = 0", "gpus = 0\nenv = { \"A=B\" = \"x\" }"),
            );
        }),
        ("an empty env key", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("gpus = 0", "gpus = 0\nenv = { \"\" = \"x\" }"),
            );
        }),
        ("NUL in the command", Expect::Invalid, |r| {
            let t = std::fs::read_to_string(r.path().join("risk/train.toml")).unwrap();
            r.write(
                "risk/train.toml",
                &t.replace("[\"sh\", \"-c\"", "[\"sh\\u0000\", \"-c\""),
            );
        }),
        ("source ..", Expect::Invalid, |r| {
            r.write(
                "risk/data.toml",
                "[dataset.loans]\nsource = \"..\"\nformat = \"csv\"\n",
            )
        }),
        ("source ../../..", Expect::Invalid, |r| {
            r.write(
                "risk/data.toml",
                "[dataset.loans]\nsource = \"../../../../../../etc\"\nformat = \"csv\"\n",
            )
        }),
        ("absolute source", Expect::Invalid, |r| {
            r.write(
                "risk/data.toml",
                "[dataset.loans]\nsource = \"/etc\"\nformat = \"csv\"\n",
            )
        }),
        ("ln -s . self in the data", Expect::Either, |r| {
            symlink(".", r.path().join("risk/data/loans/self"))
        }),
        ("a symlink loop in the data", Expect::Invalid, |r| {
            let d = r.path().join("risk/data/loans");
            symlink(d.join("b"), d.join("a"));
            symlink(d.join("a"), d.join("b"));
        }),
        (
            "a symlink to /etc/passwd in the data",
            Expect::Invalid,
            |r| symlink("/etc/passwd", r.path().join("risk/data/loans/passwd.csv")),
        ),
        ("a symlink to / in the data", Expect::Either, |r| {
            symlink("/", r.path().join("risk/data/loans/root"))
        }),
        ("a FIFO in the data", Expect::Invalid, |r| {
            mkfifo(&r.path().join("risk/data/loans/pipe.csv"))
        }),
        ("the source is a FIFO", Expect::Invalid, |r| {
            let d = r.path().join("risk/data/loans");
            std::fs::remove_dir_all(&d).unwrap();
            mkfifo(&d);
        }),
        ("a FIFO manifest", Expect::Invalid, |r| {
            mkfifo(&r.path().join("risk/pipe.toml"))
        }),
        (
            "a manifest symlinked to /etc/passwd",
            Expect::Invalid,
            |r| symlink("/etc/passwd", r.path().join("risk/passwd.toml")),
        ),
        ("a symlinked compute.toml", Expect::Either, |r| {
            let p = r.path().join("risk");
            std::fs::rename(p.join("compute.toml"), r.path().join("compute.real")).unwrap();
            symlink(r.path().join("compute.real"), p.join("compute.toml"));
        }),
        ("a folder named x.toml", Expect::Either, |r| {
            std::fs::create_dir_all(r.path().join("risk/x.toml")).unwrap()
        }),
        ("10,000 nested arrays", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &format!("x = {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
            )
        }),
        ("10,000 nested inline tables", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &format!("x = {}1{}\n", "{a = ".repeat(10_000), "}".repeat(10_000)),
            )
        }),
        ("a 16 MB string", Expect::Either, |r| {
            r.write("risk/extra.toml", &format!("[dataset.big]\nsource = \"data/loans/\"\nformat = \"csv\"\ndescription = \"{}\"\n", "x".repeat(16 << 20)))
        }),
        ("a name with a slash", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                "[dataset.\"a/../b\"]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
            )
        }),
        ("a 10,000-character name", Expect::Invalid, |r| {
            r.write(
                "risk/extra.toml",
                &format!(
                    "[dataset.{}]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
                    "a".repeat(10_000)
                ),
            )
        }),
        ("a store URL with no bucket", Expect::Invalid, |r| {
            r.write(
                "risk/workspace.toml",
                "[workspace]\nenvironment = \"dev\"\nstore = \"s3://\"\n",
            )
        }),
        ("no workspace.toml", Expect::Invalid, |r| {
            std::fs::remove_file(r.path().join("risk/workspace.toml")).unwrap()
        }),
    ]
}

#[test]
#[ignore = "chaos harness (minutes): cargo test --release --test chaos -- --ignored --nocapture"]
fn hostile_manifests_get_clear_errors_and_never_crash() {
    const MEMORY: u64 = 2 << 30;
    let deadline = Duration::from_secs(60);
    let mut problems = Vec::new();
    let (mut invalid, mut valid) = (0, 0);
    let cases = cases();
    for (name, expect, mutate) in &cases {
        let root = manifests(&Job::default());
        mutate(&root);
        let dir = root.path().to_path_buf();
        let mut outcome = Vec::new();
        for command in ["validate", "plan"] {
            match bounded(&dir, &[command, "."], deadline, MEMORY) {
                Ended::Exited(run) if panicked(&run) => {
                    problems.push(format!("{name}: `cairn {command}` panicked\n{}", run.both()))
                }
                Ended::Exited(run) => {
                    if command == "validate" {
                        if run.code == 0 {
                            valid += 1;
                        } else {
                            invalid += 1;
                        }
                        if *expect == Expect::Invalid
                            && (run.code != 1 || !run.stderr.contains("risk/"))
                        {
                            problems.push(format!(
                                "{name}: `cairn validate` should fail naming the file\n{}",
                                run.both()
                            ));
                        }
                    }
                    outcome.push(format!("{command} exit {}", run.code));
                }
                Ended::Signalled(run) => problems.push(format!(
                    "{name}: `cairn {command}` was ended by a signal (a crash or the 2 GiB limit)\n{}",
                    run.both()
                )),
                Ended::Overran => problems.push(format!(
                    "{name}: `cairn {command}` ran past {deadline:?}"
                )),
            }
        }
        println!("{name}: {}", outcome.join(", "));
    }
    println!(
        "{} hostile repositories: {invalid} refused at validate, {valid} valid, {} problems",
        cases.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

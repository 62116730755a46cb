//! Exit codes, as the README's table gives them: 0 ok, 1 an error, 2 changes present or
//! drift found, 64 a usage error. 2 is what a CI step allows to keep a drift check or a
//! `plan --detailed-exitcode` green, so a typo on the command line must not exit 2.

use crate::support::{manifests, Job, Root};

/// What clap reports as a usage error: exit 64, its message on stderr, nothing on stdout.
#[track_caller]
fn usage_error(root: &Root, args: &[&str], says: &[&str]) {
    let run = root.cairn(args);
    run.code(64);
    for text in says {
        assert!(run.stderr.contains(text), "{text}: {}", run.both());
    }
    assert!(run.stdout.is_empty(), "{}", run.both());
}

#[test]
fn a_misspelt_flag_is_a_usage_error_not_drift() {
    let root = manifests(&Job::default());
    usage_error(
        &root,
        &["drift", "ROOT", "--rev", "HEAD", "--github-isue"],
        &[
            "unexpected argument '--github-isue'",
            "'--github-issue'",
            "Usage: cairn drift",
        ],
    );
}

#[test]
fn a_misspelt_command_is_a_usage_error() {
    let root = manifests(&Job::default());
    usage_error(
        &root,
        &["plna", "ROOT"],
        &["unrecognized subcommand 'plna'", "'plan'"],
    );
}

#[test]
fn a_bad_flag_value_is_a_usage_error() {
    let root = manifests(&Job::default());
    usage_error(
        &root,
        &["plan", "ROOT", "--format", "yaml"],
        &["invalid value 'yaml' for '--format"],
    );
    usage_error(
        &root,
        &["apply", "ROOT", "--lock-lease", "25h"],
        &["a lock lease is from 1s to 24h"],
    );
}

/// Without a command, clap shows the help on stderr: still a usage error, so that a
/// workflow whose command came out empty fails.
#[test]
fn a_missing_command_is_a_usage_error() {
    let root = manifests(&Job::default());
    usage_error(&root, &[], &["Usage: cairn", "Commands:"]);
    usage_error(&root, &["policy"], &["Usage: cairn policy"]);
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    let root = manifests(&Job::default());
    let help = root.cairn(&["--help"]);
    help.ok();
    assert!(
        help.stdout.contains("Usage: cairn") && help.stdout.contains("completions"),
        "{}",
        help.both()
    );
    let help = root.cairn(&["plan", "--help"]);
    help.ok();
    assert!(
        help.stdout.contains("--detailed-exitcode"),
        "{}",
        help.both()
    );
    let version = root.cairn(&["--version"]);
    version.ok();
    assert_eq!(
        version.stdout.trim(),
        format!("cairn {}", env!("CARGO_PKG_VERSION")),
        "{}",
        version.both()
    );
}

#[test]
fn changes_exit_2_and_errors_exit_1() {
    let root = manifests(&Job::default());
    let plan = root.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(2);
    assert!(plan.stdout.contains("4 to add"), "{}", plan.both());
    // Without the flag, changes are a success.
    root.cairn(&["plan", "ROOT"]).ok();

    // A user error found after parsing: a workspace that isn't there.
    let unknown = root.cairn(&["plan", "ROOT", "-w", "nope", "--detailed-exitcode"]);
    unknown.code(1);
    assert!(
        unknown.stderr.contains("there is no workspace `nope`"),
        "{}",
        unknown.both()
    );
}

#[test]
fn a_folder_that_is_not_a_manifests_root_is_said_so_not_validated() {
    let dir = tempfile::tempdir().unwrap();
    // Someone else's TOML: not manifests, and not to be reported as broken ones.
    std::fs::create_dir_all(dir.path().join("tool")).unwrap();
    std::fs::write(
        dir.path().join("tool/Cargo.toml"),
        "[workspace]\nmembers = []\n",
    )
    .unwrap();
    for command in ["status", "plan", "validate"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg(command)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("is not a manifests root: it has no `manifests` folder"),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains("Cargo.toml"), "{command}: {stderr}");
        assert!(
            stderr.contains("hint: run Cairn where"),
            "{command}: {stderr}"
        );
    }
}

/// Runs `cairn <args>` with `answer` on standard input (a pipe, not a terminal).
fn with_stdin(root: &Root, args: &[&str], answer: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = root
        .command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn apply_reads_yes_from_a_pipe_only_with_input() {
    let root = manifests(&Job::default());
    // A pipe is not a terminal: refused, whatever it says, and how to answer.
    let (code, _, stderr) = with_stdin(&root, &["apply", "ROOT"], "yes\n");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("input is not a terminal"), "{stderr}");
    assert!(stderr.contains("`--input`"), "{stderr}");
    assert!(!root.store().join(".cairn/state.json").exists());

    // With --input, anything but `yes` cancels.
    let (code, stdout, stderr) = with_stdin(&root, &["apply", "ROOT", "--input"], "y\n");
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.contains("Only 'yes' is accepted"), "{stdout}");
    assert!(stderr.contains("apply cancelled"), "{stderr}");
    assert!(!root.store().join(".cairn/state.json").exists());

    let (code, stdout, stderr) = with_stdin(&root, &["apply", "ROOT", "--input"], "yes\n");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Apply complete"), "{stdout}");

    // Both flags at once is a usage error.
    let (code, _, stderr) = with_stdin(&root, &["apply", "ROOT", "--input", "--auto-approve"], "");
    assert_eq!(code, 64, "{stderr}");
}

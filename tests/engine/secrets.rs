//! Secrets and local jobs: a job's process gets no credential of the apply's, sensitive
//! `env` values never show in a plan (text, markdown, JSON) or an apply's output, a job
//! dies with its apply, and `.cairn/work` keeps no copy of a finished run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    kill_group, manifests, regex_escape, toml_string, wait_until, wait_with_deadline, Job, Root,
    Run, TRAIN,
};

/// Planted where a leak would show: never in any output of Cairn.
const PLANTED: [&str; 4] = [
    "ghp_PLANTEDgithubTOKEN",
    "AWSplantedSECRETkey",
    "pw-PLANTED",
    "user-PLANTED",
];

/// Runs `cairn <args>` with credentials planted in its environment.
fn cairn_with_credentials(root: &Root, args: &[&str]) -> Run {
    let started = Instant::now();
    let output = root
        .command(args)
        .env("GITHUB_TOKEN", PLANTED[0])
        .env("AWS_SECRET_ACCESS_KEY", PLANTED[1])
        .output()
        .expect("cairn runs");
    Run::from(output, started.elapsed())
}

/// Asserts that no planted value shows in `text`.
#[track_caller]
fn assert_clean(what: &str, text: &str) {
    for planted in PLANTED {
        assert!(!text.contains(planted), "{what} shows `{planted}`:\n{text}");
    }
}

/// The fixture's job with `env` (and `sensitive`) lines: its script writes its whole
/// environment into its model, then trains.
fn job_with_env(root: &Root, env: &str, sensitive: &str) {
    let script = format!("env > \"$2/env.txt\"\n{TRAIN}");
    let toml = format!(
        "[job.train]\n\
         compute = \"compute.here\"\n\
         command = [\"sh\", \"-c\", {}, \"train\", \"{{{{ inputs.loans }}}}\", \"{{{{ outputs.model }}}}\"]\n\
         inputs = {{ loans = \"dataset.loans\" }}\n\
         outputs = {{ model = \"model.scorer\" }}\n\
         gpus = 0\n\
         env = {{ {env} }}\n\
         {sensitive}\n\
         \n[model.scorer]\nfrom_job = \"job.train\"\nformat = \"custom\"\n",
        toml_string(&script)
    );
    root.write("risk/train.toml", &toml);
}

/// The environment the newest stored model's job ran with.
fn job_env(root: &Root) -> String {
    let state = root.state();
    let version = state["risk/model.scorer"]["value"]["version"]
        .as_str()
        .expect("a model version")
        .to_string();
    std::fs::read_to_string(
        root.store()
            .join(format!("models/scorer/{version}/env.txt")),
    )
    .expect("the job wrote its environment")
}

#[test]
fn a_job_gets_no_credential_of_the_apply() {
    let root = manifests(&Job::default());
    job_with_env(&root, "SEED = \"7\"", "");
    let apply = cairn_with_credentials(&root, &["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    let env = job_env(&root);
    assert!(!env.contains("GITHUB_TOKEN"), "{env}");
    assert!(!env.contains("AWS_SECRET_ACCESS_KEY"), "{env}");
    assert_clean("the job's environment", &env);
    // What it does get: the declared variables, Cairn's own and the allow-list.
    assert!(env.lines().any(|l| l == "SEED=7"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("CAIRN_RUN_ID=")), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(env.lines().any(|l| l == "USER=tester"), "{env}");
}

/// Applies a job with secrets, changes them, and looks at every output.
#[test]
fn sensitive_values_never_show_and_a_saved_plan_still_applies() {
    let root = manifests(&Job::default());
    let sensitive = "sensitive = [\"DB_USER\"]";
    job_with_env(
        &root,
        "DB_PASSWORD = \"pw-PLANTED-1\", DB_USER = \"user-PLANTED-1\", SEED = \"1\"",
        sensitive,
    );
    let first = cairn_with_credentials(&root, &["apply", "ROOT", "--auto-approve"]);
    first.ok();
    assert_clean("the first apply", &first.both());
    job_with_env(
        &root,
        "DB_PASSWORD = \"pw-PLANTED-2\", DB_USER = \"user-PLANTED-2\", SEED = \"2\"",
        sensitive,
    );

    let text = root.cairn(&["plan", "ROOT"]);
    text.ok();
    assert_clean("the text plan", &text.both());
    assert!(
        text.stdout
            .contains("env.DB_PASSWORD: (sensitive) → (sensitive)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("env.DB_USER: (sensitive) → (sensitive)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("env.SEED: \"1\" → \"2\""),
        "{}",
        text.stdout
    );
    insta::with_settings!({filters => vec![
        (regex_escape(&root.path().display().to_string()).as_str(), "[ROOT]"),
        (r"\b[0-9a-f]{12}\b", "[ID]"),
    ]}, {
        insta::assert_snapshot!("sensitive_plan", text.stdout);
    });
    let markdown = root.cairn(&["plan", "ROOT", "--format", "markdown"]);
    markdown.ok();
    assert_clean("the markdown plan", &markdown.both());
    assert!(
        markdown.stdout.contains("(sensitive)"),
        "{}",
        markdown.stdout
    );
    let json = root.cairn(&["plan", "ROOT", "--format", "json"]);
    json.ok();
    assert_clean("the JSON plan", &json.both());

    let saved = root.scratch().join("plan.json");
    let plan = root.cairn(&["plan", "ROOT", "-o", saved.to_str().unwrap()]);
    plan.ok();
    let file = std::fs::read_to_string(&saved).unwrap();
    assert_clean("the saved plan", &file);
    let parsed: Value = serde_json::from_str(&file).unwrap();
    let job = parsed["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "risk/job.train")
        .unwrap();
    assert_eq!(job["after"]["env"]["DB_PASSWORD"], "(sensitive)");
    assert_eq!(job["after"]["env"]["SEED"], "2");

    // The saved plan applies with the real values, read again from the manifests.
    let apply =
        cairn_with_credentials(&root, &["apply", saved.to_str().unwrap(), "--auto-approve"]);
    apply.ok();
    assert_clean("the apply of the saved plan", &apply.both());
    let env = job_env(&root);
    assert!(
        env.lines().any(|l| l == "DB_PASSWORD=pw-PLANTED-2"),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "DB_USER=user-PLANTED-2"), "{env}");
    // Nothing is left to do: the state holds the applied values, not the hidden ones.
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
    let history = root.cairn(&["history", "ROOT"]);
    assert_clean("history", &history.both());
    let status = root.cairn(&["status", "ROOT"]);
    assert_clean("status", &status.both());
}

#[test]
fn a_saved_plan_whose_secret_changed_since_is_stale() {
    let root = manifests(&Job::default());
    job_with_env(&root, "API_KEY = \"pw-PLANTED-1\"", "");
    let saved = root.scratch().join("plan.json");
    root.cairn(&["plan", "ROOT", "-o", saved.to_str().unwrap()])
        .ok();
    job_with_env(&root, "API_KEY = \"pw-PLANTED-2\"", "");
    let apply = root.cairn(&["apply", saved.to_str().unwrap(), "--auto-approve"]);
    apply.code(1);
    assert_clean("the refused apply", &apply.both());
    insta::assert_snapshot!("stale_secret", apply.stderr);
    assert!(root.committed("models", "scorer").is_empty());
}

#[test]
fn sensitive_must_name_a_declared_key() {
    let root = manifests(&Job::default());
    job_with_env(&root, "SEED = \"1\"", "sensitive = [\"DB_USER\"]");
    let validate = root.cairn(&["validate", "ROOT"]);
    validate.code(1);
    insta::with_settings!({filters => vec![
        (regex_escape(&root.path().display().to_string()).as_str(), "[ROOT]"),
    ]}, {
        insta::assert_snapshot!("unknown_sensitive", validate.stderr);
    });
}

/// Whether any process is still in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks; `pgid > 1`.
    assert!(pgid > 1);
    unsafe { libc::kill(-(pgid as i32), 0) == 0 }
}

/// A job that writes its group id (`$$`, the group leader) to `marker`, starts a
/// grandchild in its group and waits for it.
fn hanging_job(marker: &Path) -> Job {
    Job::script(format!(
        "echo $$ > {m}.tmp && mv {m}.tmp {m}\nsleep 120 &\nwait\n{TRAIN}",
        m = marker.display()
    ))
}

fn wait_for_pid(marker: &Path) -> u32 {
    wait_until("the job to start", Duration::from_secs(30), || {
        marker.exists()
    });
    std::fs::read_to_string(marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `kill -9` of the apply process alone: its job's group (leader and grandchild) goes too.
#[test]
fn a_job_dies_with_its_killed_apply() {
    let root = manifests(&Job::default());
    let marker = root.scratch().join("job.pid");
    root.set_job(&hanging_job(&marker));
    let apply = root.spawn(&["apply", "ROOT", "--auto-approve", "--lock-lease", "2s"]);
    let apply_pid = apply.id();
    let job = wait_for_pid(&marker);
    assert!(group_alive(job));
    // SAFETY: plain system call on the child this test started.
    unsafe { libc::kill(apply_pid as i32, libc::SIGKILL) };
    let run = wait_with_deadline(apply, Duration::from_secs(10));
    assert_ne!(run.code, 0);
    wait_until(
        "the job's process group to go",
        Duration::from_secs(10),
        || !group_alive(job),
    );
}

/// `kill -9` of the apply's whole process group (the way a terminal's Ctrl-\ or a CI
/// runner's cancel does): the job, in a group of its own, still goes.
#[test]
fn a_job_dies_with_its_killed_apply_group() {
    let root = manifests(&Job::default());
    let marker = root.scratch().join("job.pid");
    root.set_job(&hanging_job(&marker));
    let apply = root.spawn(&["apply", "ROOT", "--auto-approve", "--lock-lease", "2s"]);
    let job = wait_for_pid(&marker);
    kill_group(apply.id());
    let _ = wait_with_deadline(apply, Duration::from_secs(10));
    wait_until(
        "the job's process group to go",
        Duration::from_secs(10),
        || !group_alive(job),
    );
}

/// The run's folder, from a saved plan's run id.
fn run_folder(root: &Root) -> PathBuf {
    let saved = root.scratch().join("run.json");
    root.cairn(&["plan", "ROOT", "-o", saved.to_str().unwrap()])
        .ok();
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let run_id = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "risk/job.train")
        .and_then(|c| c["after"]["run_id"].as_str())
        .unwrap()
        .to_string();
    root.path().join(".cairn/work/runs/train").join(run_id)
}

/// A job left running in its run's folder (its apply and watchdog gone at once) is
/// stopped by the next apply of that run, which then runs it once.
#[test]
fn the_next_apply_stops_a_job_left_running_in_its_folder() {
    use std::os::unix::process::CommandExt;
    let root = manifests(&Job::default());
    let folder = run_folder(&root);
    std::fs::create_dir_all(&folder).unwrap();
    let mut orphan = Command::new("sleep")
        .arg("300")
        .current_dir(&folder)
        .process_group(0)
        .spawn()
        .unwrap();
    std::fs::write(folder.join(".cairn-job.pid"), format!("{}\n", orphan.id())).unwrap();

    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    assert!(
        apply
            .stderr
            .contains(&format!("stopped process group {}", orphan.id())),
        "{}",
        apply.both()
    );
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "the orphan was killed: {status:?}");
}

/// Disk a folder's files take, in bytes.
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                use std::os::unix::fs::MetadataExt;
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// After a run, `.cairn/work` holds no copy of its inputs; leftovers of runs an earlier
/// apply abandoned are removed.
#[test]
fn the_work_folder_is_emptied_after_a_run() {
    let root = manifests(&Job::default());
    let leftover = root
        .path()
        .join(".cairn/work/runs/train/0123456789ab/inputs/loans");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("loans.csv"), "old copy").unwrap();
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let runs = root.path().join(".cairn/work/runs/train");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(root.committed("models", "scorer").len(), 1);
}

/// A 1 GiB sparse input costs the job's run folder a few blocks, not 1 GiB: the job
/// reports the disk its input copy takes.
#[test]
fn a_sparse_input_stays_sparse_in_the_run_folder() {
    let root = manifests(&Job::script(
        "stat -c '%b %B %s' \"$1/disk.img\" > \"$2/alloc.txt\"\necho ok > \"$2/model.bin\"",
    ));
    let image = root.path().join("risk/data/loans/disk.img");
    {
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(1 << 30).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"boot", 0).unwrap();
        f.write_all_at(b"data", 512 << 20).unwrap();
    }
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let version = &root.committed("models", "scorer")[0];
    let alloc = std::fs::read_to_string(
        root.store()
            .join(format!("models/scorer/{version}/alloc.txt")),
    )
    .unwrap();
    let fields: Vec<u64> = alloc
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields[2], 1 << 30, "the copy has the whole length: {alloc}");
    let bytes = fields[0] * fields[1];
    assert!(
        bytes < 8 << 20,
        "the input copy takes {bytes} bytes of disk: {alloc}"
    );
    // And the folder is gone after the run.
    assert!(allocated(&root.path().join(".cairn/work")) < 1 << 20);
}

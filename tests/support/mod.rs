//! Shared helpers for tests that run the real `cairn` binary on real folders: a small
//! manifests root with a local workspace, running commands, reading the store, real Git
//! repositories and killing processes.
//!
//! Include with `#[path = "../support/mod.rs"] mod support;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A loopback port nothing listens on now (the OS's pick; free until someone binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The workspace every fixture declares.
pub const WORKSPACE: &str = "risk";

/// The training data: a header and a few rows; [`Root::edit_row`] changes one.
pub const LOANS_CSV: &str = "\
loan_id,age,income,defaulted
L1,29,42400,0
L2,22,33800,0
L3,54,40300,1
L4,31,44700,0
";

/// A job script that "trains": copies the data into the model folder and writes
/// metrics. Called as `sh -c SCRIPT train <input folder> <output folder>`.
pub const TRAIN: &str = r#"echo "training on $1"
cp "$1/loans.csv" "$2/model.bin"
echo '{"auc": 0.75, "rows": 4}' > "$2/metrics.json"
echo done"#;

/// A job script that, on its first run only, writes its pid (the job's process group) to
/// `marker` and hangs for 30 s; on later runs it trains at once. For killing an apply
/// while its job runs.
pub fn hang_once(marker: &Path) -> String {
    format!(
        "if [ ! -e {m} ]; then echo $$ > {m}.tmp && mv {m}.tmp {m}; sleep 30; fi\n{TRAIN}",
        m = marker.display()
    )
}

/// Waits for the job started by [`hang_once`], then `kill -9`s it and the apply (whose
/// process group is `apply_pgid`), as a crash would.
pub fn kill_apply_during_job(apply: Child, marker: &Path) -> Run {
    let pgid = apply.id();
    wait_until("the job to start", Duration::from_secs(20), || {
        marker.exists()
    });
    let job: u32 = std::fs::read_to_string(marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill_group(pgid);
    kill_group(job);
    let run = wait_with_deadline(apply, Duration::from_secs(10));
    assert_ne!(run.code, 0, "the apply was killed: {}", run.both());
    run
}

/// How the fixture's job is declared.
#[derive(Debug, Clone)]
pub struct Job {
    /// The `sh -c` script; `$1` is the input folder, `$2` the output folder.
    pub script: String,
    pub retries: u32,
    pub timeout: Option<String>,
}

impl Default for Job {
    fn default() -> Job {
        Job {
            script: TRAIN.to_string(),
            retries: 0,
            timeout: None,
        }
    }
}

impl Job {
    pub fn script(script: impl Into<String>) -> Job {
        Job {
            script: script.into(),
            ..Job::default()
        }
    }
}

/// A TOML basic string holding `s`.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A manifests root in a temporary folder: `<root>/risk/…` with the store at
/// `<root>/.cairn/store`. Dropping it removes everything.
pub struct Root {
    dir: tempfile::TempDir,
    root: PathBuf,
}

/// Builds a manifests root: workspace (folder store), a local compute, a CSV dataset, a
/// job that reads it and a model the job produces. No endpoint.
pub fn manifests(job: &Job) -> Root {
    let dir = tempfile::tempdir().expect("temporary folder");
    // Canonical, so paths in messages match the ones the tests filter.
    let root = dir.path().canonicalize().unwrap().join("repo");
    let r = Root { dir, root };
    r.write(
        "risk/workspace.toml",
        "[workspace]\n\
         description = \"Test workspace\"\n\
         environment = \"dev\"\n\
         store = \"file://.cairn/store\"\n",
    );
    r.write(
        "risk/compute.toml",
        "[compute.here]\ntarget = \"local\"\nidle_shutdown = \"30m\"\nmax_gpus = 0\n",
    );
    r.write(
        "risk/data.toml",
        "[dataset.loans]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
    );
    r.write("risk/data/loans/loans.csv", LOANS_CSV);
    r.set_job(job);
    r
}

impl Root {
    /// The manifests root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A scratch folder beside the root (not part of the manifests).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().canonicalize().unwrap().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The store folder.
    pub fn store(&self) -> PathBuf {
        self.root.join(".cairn/store")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Replaces `risk/train.toml` with this job and its model.
    pub fn set_job(&self, job: &Job) {
        let mut toml = format!(
            "[job.train]\n\
             compute = \"compute.here\"\n\
             command = [\"sh\", \"-c\", {}, \"train\", \"{{{{ inputs.loans }}}}\", \"{{{{ outputs.model }}}}\"]\n\
             inputs = {{ loans = \"dataset.loans\" }}\n\
             outputs = {{ model = \"model.scorer\" }}\n\
             gpus = 0\n\
             retries = {}\n",
            toml_string(&job.script),
            job.retries
        );
        if let Some(t) = &job.timeout {
            toml.push_str(&format!("timeout = {}\n", toml_string(t)));
        }
        toml.push_str("\n[model.scorer]\nfrom_job = \"job.train\"\nformat = \"custom\"\n");
        self.write("risk/train.toml", &toml);
    }

    /// Changes the income of loan `L2` in place, as an editor would.
    pub fn edit_row(&self, income: u32) {
        let path = self.root.join("risk/data/loans/loans.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let row = lines.iter_mut().find(|l| l.starts_with("L2,")).unwrap();
        *row = format!("L2,22,{income},0");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    /// Runs `cairn <args>` (with the root appended where `ROOT` appears) to completion.
    pub fn cairn(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let output = self.command(args).output().expect("cairn runs");
        Run::from(output, started.elapsed())
    }

    /// The `cairn` command with `ROOT` in `args` replaced by the root. Its `PATH` starts
    /// with [`Root::kill_guard`].
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        let root = self.root.display().to_string();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.kill_guard()];
        paths.extend(std::env::split_paths(&path));
        cmd.args(
            args.iter()
                .map(|a| if *a == "ROOT" { root.as_str() } else { a }),
        )
        .current_dir(self.dir.path())
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env("USER", "tester")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
        cmd
    }

    /// A folder holding a `kill` that refuses `kill -SIGNAL -PGID` (a negative id not
    /// after `--`) and passes everything else to the real `kill`. procps-ng 4.0.2's `kill`
    /// runs that form as `kill(-1, SIGNAL)`: every process the user may signal. Whatever
    /// cairn asks of `kill` is logged to [`Root::kill_log`].
    pub fn kill_guard(&self) -> PathBuf {
        let dir = self.dir.path().join("bin");
        let guard = dir.join("kill");
        if !guard.exists() {
            let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|p| p.join("kill"))
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("/bin/kill"));
            let script = format!(
                "#!/bin/sh\n\
                 echo \"$*\" >> '{log}'\n\
                 first=1; ended=0\n\
                 for a in \"$@\"; do\n\
                 \x20 if [ \"$a\" = -- ]; then ended=1; fi\n\
                 \x20 if [ $first = 0 ] && [ $ended = 0 ]; then\n\
                 \x20   case \"$a\" in -[0-9]*) echo \"refused: $*\" >> '{log}'; exit 1;; esac\n\
                 \x20 fi\n\
                 \x20 first=0\n\
                 done\n\
                 exec '{real}' \"$@\"\n",
                log = self.kill_log().display(),
                real = real.display()
            );
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&guard, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&guard, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    /// Every `kill` cairn ran through [`Root::kill_guard`], one line each.
    pub fn kill_log(&self) -> PathBuf {
        self.dir.path().join("kill.log")
    }

    /// Starts `cairn <args>` in its own process group, so it can be killed with its
    /// children.
    pub fn spawn(&self, args: &[&str]) -> Child {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd.spawn().expect("cairn starts")
    }

    /// Reads a JSON file of the store.
    pub fn store_json(&self, key: &str) -> Value {
        let path = self.store().join(key);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Lists the store's keys under a prefix folder, sorted.
    pub fn store_keys(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let base = self.store();
        let mut stack = vec![base.join(prefix)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(&base).unwrap().to_owned();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        out
    }

    /// The workspace state: address → applied value.
    pub fn state(&self) -> Value {
        self.store_json(".cairn/state.json")["resources"].clone()
    }

    /// Versions with a commit marker under `datasets/<name>/` or `models/<name>/`.
    pub fn committed(&self, kind: &str, name: &str) -> Vec<String> {
        let marker = if kind == "datasets" {
            "_version.json"
        } else {
            "_model.json"
        };
        let mut out: Vec<String> = std::fs::read_dir(self.store().join(kind).join(name))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join(marker).is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Makes the root a Git repository with everything committed; returns HEAD.
    pub fn git_commit_all(&self, message: &str) -> String {
        git_commit_all(&self.root, message)
    }
}

/// A finished `cairn` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn from(output: Output, took: Duration) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took,
        }
    }

    /// Both streams, for assertion messages.
    pub fn both(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code; returns self for chaining.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(self.code, expected, "{}", self.both());
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Run {
        self.code(0)
    }
}

/// Waits for a child with a deadline; kills it if it overruns.
pub fn wait_with_deadline(child: Child, deadline: Duration) -> Run {
    let started = Instant::now();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => Run::from(output.expect("wait"), started.elapsed()),
        Err(_) => {
            kill_group(pid);
            panic!("cairn (pid {pid}) ran longer than {deadline:?}");
        }
    }
}

/// Polls until `f` is true or panics after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -9` a whole process group.
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Escapes a literal for insta's regex filters.
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Lower-case hex SHA-256 of a file.
/// Copies a folder of the repository (an example workspace) recursively, leaving out
/// dot entries (`.cairn` state a quick start left behind).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Makes `root` a Git repository (if it is not one) with everything but Cairn's own
/// `.cairn/` committed on its branch, removals included; returns HEAD.
pub fn git_commit_all(root: &Path, message: &str) -> String {
    let repo = match git2::Repository::open(root) {
        Ok(r) => r,
        Err(_) => git2::Repository::init(root).unwrap(),
    };
    std::fs::write(root.join(".gitignore"), ".cairn/\n").unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    // Files removed from the working tree leave the index too.
    index.update_all(["*"].iter(), None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Tester", "tester@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

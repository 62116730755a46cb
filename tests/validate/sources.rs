//! Hostile dataset sources and manifest files, built at test time in a copy of the example
//! repository: symbolic links (to an ancestor, out of the root, in loops, to nothing),
//! named pipes, sockets and devices, on disk and committed to Git. Each must be refused
//! by `cairn validate` (and so by `cairn plan`) with the place of the `source` value and a
//! hint; none may hang, panic or grow memory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use git2::Repository;

use crate::git::{commit_all, copy_tree};
use crate::{cairn, diagnostics, example_manifests, first_error, Run};

/// Where `source = "data/loans/"` is written in the example's `credit-risk/data.toml`.
const SOURCE_FILE: &str = "credit-risk/data.toml";
const SOURCE_LINE: u64 = 5;
const SOURCE_COLUMN: u64 = 10;

/// A copy of the example manifests in `<tmp>/manifests`, with `<tmp>` a Git repository.
struct Example {
    tmp: tempfile::TempDir,
}

impl Example {
    fn new() -> Example {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&example_manifests(), &tmp.path().join("manifests"));
        Example { tmp }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn manifests(&self) -> PathBuf {
        self.dir().join("manifests")
    }

    fn loans(&self) -> PathBuf {
        self.manifests().join("credit-risk/data/loans")
    }

    /// Commits everything in a new repository at `<tmp>`.
    fn commit(&self) {
        let repo = Repository::init(self.dir()).unwrap();
        commit_all(&repo, "Hostile change");
    }

    fn run(&self, args: &[&str]) -> Run {
        // Memory is capped for the run, so an endless walk fails instead of taking the
        // machine down (before the fix, `plan` grew to 20 GB on `ln -s . self`).
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -v 4000000 && exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .args(args);
        let base = cairn(self.dir());
        cmd.current_dir(self.dir());
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        Run::of(&mut cmd)
    }

    /// `cairn validate manifests --format json [extra]`: must fail cleanly. Returns the
    /// first error.
    #[track_caller]
    fn refused(&self, extra: &[&str], what: &str) -> serde_json::Value {
        let mut args = vec!["validate", "manifests", "--format", "json"];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        run.expect_exit(1, what);
        let report = run.json(what);
        first_error(&report)
            .unwrap_or_else(|| panic!("{what}: no error in {report:#}"))
            .clone()
    }

    #[track_caller]
    fn valid(&self, extra: &[&str], what: &str) {
        let mut args = vec!["validate", "manifests", "--color", "never"];
        args.extend_from_slice(extra);
        self.run(&args).expect_exit(0, what);
    }
}

/// Asserts the error is `code`, placed on the example's `source = "data/loans/"`, with a
/// hint, and mentions `needle`.
#[track_caller]
fn assert_at_source(error: &serde_json::Value, code: &str, needle: &str) {
    let location = &error["location"];
    assert_eq!(
        (
            error["code"].as_str(),
            location["file"].as_str(),
            location["line"].as_u64(),
            location["column"].as_u64()
        ),
        (
            Some(code),
            Some(SOURCE_FILE),
            Some(SOURCE_LINE),
            Some(SOURCE_COLUMN)
        ),
        "{error:#}"
    );
    assert!(
        error["message"].as_str().unwrap().contains(needle),
        "`{needle}` not in {error:#}"
    );
    assert!(
        error["help"].as_str().is_some_and(|h| !h.is_empty()),
        "no hint: {error:#}"
    );
}

fn link(target: impl AsRef<Path>, at: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The one-line pull request: `ln -s . credit-risk/data/loans/self`.
#[test]
fn a_link_to_its_own_folder_is_refused_by_validate_and_plan() {
    let ex = Example::new();
    link(".", ex.loans().join("self"));
    let error = ex.refused(&[], "ln -s . self");
    assert_at_source(&error, "source-link", "credit-risk/data/loans/self");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("links to folders are not followed"),
        "{error:#}"
    );

    // `plan` validates first: it stops at the same place, with bounded memory.
    let plan = ex.run(&["plan", "manifests", "--color", "never"]);
    plan.expect_exit(1, "plan with ln -s . self");
    assert!(
        plan.stderr
            .contains(&format!("{SOURCE_FILE}:{SOURCE_LINE}:{SOURCE_COLUMN}")),
        "{}",
        plan.stderr
    );
    assert!(
        plan.stderr.contains("credit-risk/data/loans/self"),
        "{}",
        plan.stderr
    );
}

/// The same pull request, reviewed at its commit (`--rev`), where the link is a blob
/// with mode 120000.
#[test]
fn a_committed_link_to_its_own_folder_is_refused_at_the_revision() {
    let ex = Example::new();
    link(".", ex.loans().join("self"));
    ex.commit();
    let error = ex.refused(&["--rev", "HEAD"], "ln -s . self at HEAD");
    assert_at_source(&error, "source-link", "credit-risk/data/loans/self");

    let plan = ex.run(&["plan", "manifests", "--rev", "HEAD", "--color", "never"]);
    plan.expect_exit(1, "plan --rev HEAD with ln -s . self");
    assert!(
        plan.stderr.contains("credit-risk/data/loans/self"),
        "{}",
        plan.stderr
    );
}

#[test]
fn links_to_a_parent_or_a_sibling_folder_are_refused() {
    for (name, target) in [("up", "../.."), ("sibling", "../../data")] {
        let ex = Example::new();
        link(target, ex.loans().join(name));
        let error = ex.refused(&[], name);
        assert_at_source(&error, "source-link", &format!("loans/{name}"));
    }
}

#[test]
fn a_link_to_a_file_outside_the_root_is_refused() {
    let ex = Example::new();
    link("/etc/passwd", ex.loans().join("passwd.csv"));
    let error = ex.refused(&[], "link to /etc/passwd");
    assert_at_source(&error, "path-escape", "loans/passwd.csv");

    ex.commit();
    let error = ex.refused(&["--rev", "HEAD"], "committed link to /etc/passwd");
    assert_at_source(&error, "path-escape", "loans/passwd.csv");
}

#[test]
fn a_link_to_a_file_inside_the_root_is_followed() {
    let ex = Example::new();
    fs::write(ex.manifests().join("credit-risk/extra.csv"), "id\n1\n").unwrap();
    link("../../extra.csv", ex.loans().join("extra.csv"));
    ex.valid(&[], "a link to a file inside the root");
    ex.commit();
    ex.valid(&["--rev", "HEAD"], "the same link, committed");
}

#[test]
fn link_loops_are_refused() {
    // Inside the source folder…
    let ex = Example::new();
    link("b", ex.loans().join("a"));
    link("a", ex.loans().join("b"));
    let error = ex.refused(&[], "a -> b -> a");
    assert_at_source(&error, "source-link", "loops back on itself");
    ex.commit();
    let error = ex.refused(&["--rev", "HEAD"], "a -> b -> a, committed");
    assert_at_source(&error, "source-link", "loops back on itself");

    // …and the source itself.
    let ex = Example::new();
    fs::remove_dir_all(ex.loans()).unwrap();
    link("loans", ex.loans());
    let error = ex.refused(&[], "loans -> loans");
    assert_at_source(&error, "source-link", "loops back on itself");
}

#[test]
fn a_broken_link_is_refused() {
    let ex = Example::new();
    link("gone.csv", ex.loans().join("old.csv"));
    let error = ex.refused(&[], "broken link");
    assert_at_source(&error, "source-link", "a symbolic link to nothing");
    ex.commit();
    let error = ex.refused(&["--rev", "HEAD"], "broken link, committed");
    assert_at_source(&error, "source-link", "a symbolic link to nothing");
}

#[test]
fn named_pipes_sockets_and_devices_are_refused_without_being_opened() {
    // A named pipe in the folder: opening it to hash it would block forever.
    let ex = Example::new();
    mkfifo(&ex.loans().join("feed.csv"));
    let error = ex.refused(&[], "a FIFO in the source");
    assert_at_source(&error, "source-special-file", "a named pipe (FIFO)");

    // The source itself a named pipe.
    let ex = Example::new();
    fs::remove_dir_all(ex.loans()).unwrap();
    mkfifo(&ex.loans());
    let error = ex.refused(&[], "the source is a FIFO");
    assert_at_source(&error, "source-special-file", "a named pipe (FIFO)");

    // A socket.
    let ex = Example::new();
    let _socket = std::os::unix::net::UnixListener::bind(ex.loans().join("s.sock")).unwrap();
    let error = ex.refused(&[], "a socket in the source");
    assert_at_source(&error, "source-special-file", "a socket");

    // A device reached through a link leaves the root.
    let ex = Example::new();
    link("/dev/zero", ex.loans().join("zeros.csv"));
    let error = ex.refused(&[], "a link to /dev/zero");
    assert_at_source(&error, "path-escape", "loans/zeros.csv");

    // A device node in the folder (creating one needs root: then it must be refused).
    let ex = Example::new();
    let node = ex.loans().join("null.csv");
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap()
        .success();
    if made {
        let error = ex.refused(&[], "a character device in the source");
        assert_at_source(&error, "source-special-file", "a character device");
    } else {
        // Without root, mknod is refused and leaves nothing behind.
        assert!(!node.exists());
    }
}

#[test]
fn a_source_through_a_link_inside_the_root_is_read() {
    // `data/loans -> v2`: links on the way to the source are resolved inside the root.
    let ex = Example::new();
    let data = ex.manifests().join("credit-risk/data");
    fs::rename(data.join("loans"), data.join("v2")).unwrap();
    link("v2", data.join("loans"));
    ex.valid(&[], "data/loans -> v2");
    ex.commit();
    ex.valid(&["--rev", "HEAD"], "data/loans -> v2, committed");
}

/// `compute.toml` as a link: read where it leads when that is inside the root (before,
/// it was skipped and `compute.branch-dc` read as undeclared); refused when it leads
/// out; a named pipe is refused, not opened.
#[test]
fn manifest_files_that_are_links_or_pipes_are_read_or_refused_never_skipped() {
    let ex = Example::new();
    let ws = ex.manifests().join("credit-risk");
    fs::rename(ws.join("compute.toml"), ws.join("data/compute.toml")).unwrap();
    link("data/compute.toml", ws.join("compute.toml"));
    ex.valid(&[], "compute.toml -> data/compute.toml");
    ex.commit();
    ex.valid(
        &["--rev", "HEAD"],
        "compute.toml -> data/compute.toml, committed",
    );

    let outside = tempfile::tempdir().unwrap();
    let ex = Example::new();
    let ws = ex.manifests().join("credit-risk");
    fs::rename(ws.join("compute.toml"), outside.path().join("compute.toml")).unwrap();
    link(outside.path().join("compute.toml"), ws.join("compute.toml"));
    let error = ex.refused(&[], "compute.toml -> outside");
    assert_eq!(error["code"], "manifest-file", "{error:#}");
    assert_eq!(
        error["location"]["file"], "credit-risk/compute.toml",
        "{error:#}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("leads outside the manifests root"),
        "{error:#}"
    );

    let ex = Example::new();
    let ws = ex.manifests().join("credit-risk");
    fs::remove_file(ws.join("compute.toml")).unwrap();
    mkfifo(&ws.join("compute.toml"));
    let error = ex.refused(&[], "compute.toml is a FIFO");
    assert_eq!(error["code"], "manifest-file", "{error:#}");
    assert_eq!(
        error["location"]["file"], "credit-risk/compute.toml",
        "{error:#}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("named pipe"),
        "{error:#}"
    );
}

#[test]
fn a_workspace_folder_that_is_a_link_is_refused() {
    let ex = Example::new();
    let elsewhere = ex.dir().join("elsewhere");
    fs::rename(ex.manifests().join("imaging"), &elsewhere).unwrap();
    link(&elsewhere, ex.manifests().join("imaging"));
    let run = ex.run(&["validate", "manifests", "--format", "json"]);
    run.expect_exit(1, "imaging -> ../elsewhere");
    let report = run.json("linked workspace");
    let found = diagnostics(&report).iter().any(|d| {
        d["code"] == "manifest-file"
            && d["message"]
                .as_str()
                .is_some_and(|m| m.contains("`imaging` is a symbolic link"))
    });
    assert!(found, "{report:#}");
}

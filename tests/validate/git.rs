//! `cairn validate --rev`: manifests read from a commit of a real Git repository (made
//! with git2 in a temporary folder), never from the working tree, which is left alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Oid, Repository, Signature, Time};
use tempfile::TempDir;

use crate::{cairn, diagnostics, example_manifests, first_error, Run};

/// The reference that commit 2 breaks (in `credit-risk/train.toml`).
const GOOD_REF: &str = "compute = \"compute.branch-dc\"";
const BAD_REF: &str = "compute = \"compute.branch-cd\"";
/// The traffic weight the working tree breaks (in `credit-risk/serve.toml`).
const GOOD_WEIGHT: &str = "blue = 100";
const BAD_WEIGHT: &str = "blue = 90";

fn signature() -> Signature<'static> {
    // A fixed time keeps commit ids stable for a given content.
    Signature::new(
        "Cairn Tests",
        "tests@cairn.invalid",
        &Time::new(1_700_000_000, 0),
    )
    .unwrap()
}

/// Copies a folder recursively, skipping hidden entries (`.cairn/` stores and the like).
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Stages everything in the working tree (deletions included) and commits it on HEAD.
pub(crate) fn commit_all(repo: &Repository, message: &str) -> Oid {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = repo.head().ok().map(|h| h.peel_to_commit().unwrap());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let sig = signature();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}

/// Replaces `from` with `to` in a file, which must contain it.
fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The 1-based line of the first occurrence of `needle` in a file.
fn line_of(path: &Path, needle: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap();
    let at = text.find(needle).unwrap_or_else(|| panic!("no `{needle}`"));
    text[..at].matches('\n').count() as u64 + 1
}

/// A repository holding the example manifests in `manifests/`, with this history:
///
/// 1. the example as shipped (valid), tagged `v1` (annotated), `v1-light` (lightweight),
///    and branch `known-good`;
/// 2. HEAD: `credit-risk/train.toml` references `compute.branch-cd` (unresolved);
///
/// and a dirty working tree: train.toml fixed again, but `credit-risk/serve.toml` has
/// traffic weights adding up to 90.
struct History {
    tmp: TempDir,
    first: Oid,
    second: Oid,
}

impl History {
    fn new() -> History {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let manifests = tmp.path().join("manifests");
        copy_tree(&example_manifests(), &manifests);
        let first = commit_all(&repo, "Example manifests");
        let commit = repo.find_commit(first).unwrap();
        repo.tag(
            "v1",
            commit.as_object(),
            &signature(),
            "First release",
            false,
        )
        .unwrap();
        repo.tag_lightweight("v1-light", commit.as_object(), false)
            .unwrap();
        repo.branch("known-good", &commit, false).unwrap();

        let train = manifests.join("credit-risk").join("train.toml");
        edit(&train, GOOD_REF, BAD_REF);
        let second = commit_all(&repo, "Typo in the compute reference");

        edit(&train, BAD_REF, GOOD_REF);
        edit(
            &manifests.join("credit-risk").join("serve.toml"),
            GOOD_WEIGHT,
            BAD_WEIGHT,
        );
        History { tmp, first, second }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn manifests(&self) -> PathBuf {
        self.dir().join("manifests")
    }

    /// `cairn validate manifests [args…]`, run in the repository.
    fn validate(&self, args: &[&str]) -> Run {
        Run::of(
            cairn(self.dir())
                .args(["validate", "manifests", "--color", "never"])
                .args(args),
        )
    }

    /// The same, as JSON.
    fn validate_json(&self, args: &[&str]) -> serde_json::Value {
        let run = Run::of(
            cairn(self.dir())
                .args(["validate", "manifests", "--format", "json"])
                .args(args),
        );
        assert!(matches!(run.code, Some(0 | 1)), "{run:?}");
        run.json(&format!("validate {args:?}"))
    }
}

fn short(id: Oid) -> String {
    id.to_string()[..7].to_string()
}

#[test]
fn a_good_commit_is_valid_whatever_the_working_tree_says() {
    let h = History::new();
    let sha = h.first.to_string();
    let run = h.validate(&["--rev", &sha]);
    run.expect_exit(0, "--rev <commit 1>");
    assert!(
        run.stdout.starts_with(&format!(
            "✓ manifests at {} is valid: 3 workspaces, 22 resources",
            short(h.first)
        )),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr, "");

    let report = h.validate_json(&["--rev", &sha]);
    assert_eq!(report["valid"], true, "{report:#}");
    assert_eq!(report["commit"], sha);
    assert_eq!(report["summary"]["resources"], 22);
}

#[test]
fn head_reports_the_committed_error_only() {
    let h = History::new();
    let run = h.validate(&["--rev", "HEAD"]);
    run.expect_exit(1, "--rev HEAD");
    let train = h.manifests().join("credit-risk").join("train.toml");
    let line = line_of(&train, GOOD_REF); // the working tree has the same lines
    assert!(
        run.stderr
            .contains(&format!("[credit-risk/train.toml:{line}:11]")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cairn::unresolved-reference"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(BAD_REF),
        "the snippet shows the committed text"
    );
    assert!(!run.stderr.contains("traffic"), "{}", run.stderr);
    assert!(
        run.stderr.ends_with(&format!(
            "✗ manifests at HEAD ({}) is invalid: 1 error\n",
            short(h.second)
        )),
        "{}",
        run.stderr
    );

    let report = h.validate_json(&["--rev", "HEAD"]);
    assert_eq!(report["valid"], false);
    assert_eq!(report["commit"], h.second.to_string());
    let first = first_error(&report).unwrap();
    assert_eq!(first["code"], "unresolved-reference");
    assert_eq!(first["location"]["file"], "credit-risk/train.toml");
    assert_eq!(first["location"]["line"], line);
    assert_eq!(diagnostics(&report).len(), 1, "{report:#}");
}

#[test]
fn the_working_tree_reports_its_own_error() {
    let h = History::new();
    let run = h.validate(&[]);
    run.expect_exit(1, "working tree");
    assert!(run.stderr.contains("cairn::traffic-sum"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("unresolved-reference"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.ends_with("✗ manifests is invalid: 1 error\n"),
        "{}",
        run.stderr
    );

    let report = h.validate_json(&[]);
    assert!(report["commit"].is_null());
    let first = first_error(&report).unwrap();
    assert_eq!(first["code"], "traffic-sum");
    assert_eq!(first["location"]["file"], "credit-risk/serve.toml");
}

#[test]
fn tags_branches_and_expressions_name_revisions() {
    let h = History::new();
    for rev in [
        "v1",
        "v1-light",
        "known-good",
        "HEAD~1",
        "HEAD^",
        "known-good~0",
    ] {
        let report = h.validate_json(&["--rev", rev]);
        assert_eq!(report["valid"], true, "--rev {rev}: {report:#}");
        assert_eq!(report["commit"], h.first.to_string(), "--rev {rev}");
        let run = h.validate(&["--rev", rev]);
        run.expect_exit(0, rev);
        assert!(
            run.stdout.starts_with(&format!(
                "✓ manifests at {rev} ({}) is valid",
                short(h.first)
            )),
            "{}",
            run.stdout
        );
    }
    // A unique prefix of a commit id works too.
    let prefix = &h.first.to_string()[..10];
    let report = h.validate_json(&["--rev", prefix]);
    assert_eq!(report["commit"], h.first.to_string());
}

#[test]
fn an_unknown_revision_is_an_error_with_a_hint() {
    let h = History::new();
    let run = h.validate(&["--rev", "no-such-branch"]);
    run.expect_exit(1, "--rev no-such-branch");
    assert!(
        run.stderr
            .starts_with("error: revision `no-such-branch` was not found in the repository at `"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\n  hint: "), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    let run = Run::of(cairn(h.dir()).args([
        "validate",
        "manifests",
        "--rev",
        "no-such-branch",
        "--format",
        "json",
    ]));
    run.expect_exit(1, "--rev no-such-branch --format json");
    let report = run.json("unknown revision");
    assert_eq!(report["valid"], false);
    assert!(
        report["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-branch")),
        "{report:#}"
    );
    assert!(!report["error"]["hints"].as_array().unwrap().is_empty());
}

#[test]
fn rev_outside_a_repository_is_an_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    if Repository::discover(tmp.path()).is_ok() {
        eprintln!("skipped: the temporary folder is itself inside a Git repository");
        return;
    }
    copy_tree(&example_manifests(), &tmp.path().join("manifests"));
    let run = Run::of(cairn(tmp.path()).args([
        "validate",
        "manifests",
        "--rev",
        "HEAD",
        "--color",
        "never",
    ]));
    run.expect_exit(1, "--rev outside a repository");
    assert!(
        run.stderr.starts_with(
            "error: `manifests` is not inside a Git repository, so `--rev` cannot be used"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\n  hint: "), "{}", run.stderr);

    // Without --rev the same folder is fine.
    Run::of(cairn(tmp.path()).args(["validate", "manifests", "--color", "never"]))
        .expect_exit(0, "the same folder without --rev");
}

/// Every file under `dir` except Git's own, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == ".git" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), out);
            } else {
                out.insert(entry.path(), fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

#[test]
fn rev_leaves_the_working_tree_and_the_repository_alone() {
    let h = History::new();
    let before = files(h.dir());
    let index_before = fs::read(h.dir().join(".git").join("index")).unwrap();
    let head_before = fs::read(h.dir().join(".git").join("HEAD")).unwrap();

    let first = h.first.to_string();
    for rev in [first.as_str(), "HEAD", "v1", "known-good", "no-such-branch"] {
        let run = h.validate(&["--rev", rev]);
        assert!(matches!(run.code, Some(0 | 1)), "--rev {rev}: {run:?}");
        h.validate_json(&["--rev", rev]);
    }

    let after = files(h.dir());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files were added or removed"
    );
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
    assert_eq!(
        fs::read(h.dir().join(".git").join("index")).unwrap(),
        index_before
    );
    assert_eq!(
        fs::read(h.dir().join(".git").join("HEAD")).unwrap(),
        head_before
    );
    // The dirty edit is still there, uncommitted.
    let repo = Repository::open(h.dir()).unwrap();
    let statuses = repo.statuses(None).unwrap();
    let dirty: Vec<String> = statuses
        .iter()
        .filter_map(|s| s.path().map(str::to_string))
        .collect();
    assert_eq!(
        dirty,
        [
            "manifests/credit-risk/serve.toml",
            "manifests/credit-risk/train.toml"
        ]
    );
}

#[test]
fn data_folders_are_read_from_the_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(tmp.path()).unwrap();
    let manifests = tmp.path().join("manifests");
    copy_tree(&example_manifests(), &manifests);
    // Commit everything but the loans data: it stays an untracked folder.
    let loans = manifests.join("credit-risk").join("data").join("loans");
    let elsewhere = tempfile::tempdir().unwrap();
    let aside = elsewhere.path().join("loans");
    fs::rename(&loans, &aside).unwrap();
    commit_all(&repo, "Forgot to add the data");
    fs::rename(&aside, &loans).unwrap();

    let run = Run::of(cairn(tmp.path()).args(["validate", "manifests", "--color", "never"]));
    run.expect_exit(0, "the working tree has the data");

    let run = Run::of(cairn(tmp.path()).args([
        "validate",
        "manifests",
        "--rev",
        "HEAD",
        "--format",
        "json",
    ]));
    run.expect_exit(1, "HEAD lacks the data");
    let report = run.json("HEAD");
    let data = manifests.join("credit-risk").join("data.toml");
    let first = first_error(&report).unwrap();
    assert_eq!(first["code"], "missing-path", "{report:#}");
    assert_eq!(first["location"]["file"], "credit-risk/data.toml");
    assert_eq!(first["location"]["line"], line_of(&data, "source ="));
    assert_eq!(diagnostics(&report).len(), 1, "{report:#}");
}

#[test]
fn a_folder_added_after_the_revision_is_an_error_with_a_hint() {
    let h = History::new();
    copy_tree(&h.manifests(), &h.dir().join("staging"));
    let run =
        Run::of(cairn(h.dir()).args(["validate", "staging", "--rev", "HEAD", "--color", "never"]));
    run.expect_exit(1, "a folder not in HEAD");
    assert!(
        run.stderr
            .starts_with("error: `staging` does not exist in revision `HEAD`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\n  hint: "), "{}", run.stderr);
}

#[test]
fn the_repository_root_can_be_the_manifests_root() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(tmp.path()).unwrap();
    copy_tree(&example_manifests(), tmp.path());
    let id = commit_all(&repo, "Workspaces at the top");
    let run =
        Run::of(cairn(tmp.path()).args(["validate", ".", "--rev", "HEAD", "--color", "never"]));
    run.expect_exit(0, "--rev HEAD at the repository root");
    assert!(
        run.stdout.starts_with(&format!(
            "✓ . at HEAD ({}) is valid: 3 workspaces",
            short(id)
        )),
        "{}",
        run.stdout
    );
    // And from a subfolder of the repository, naming the root by a relative path.
    let run = Run::of(
        cairn(&tmp.path().join("imaging"))
            .args(["validate", "..", "--rev", "HEAD", "--color", "never"]),
    );
    run.expect_exit(0, "--rev HEAD from a subfolder");
}

#[test]
fn blobs_in_a_revision_get_the_file_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(tmp.path()).unwrap();
    let ws = tmp.path().join("manifests").join("credit-risk");
    fs::create_dir_all(&ws).unwrap();
    fs::write(
        ws.join("workspace.toml"),
        "[workspace]\nenvironment = \"dev\"\n",
    )
    .unwrap();
    fs::write(
        ws.join("data.toml"),
        b"[dataset.loans]\nsource = \"s3://bank-ml/l\xf2ans\"\nformat = \"csv\"\n",
    )
    .unwrap();
    let big = format!("{}\n", "#".repeat(5 * 1024 * 1024));
    fs::write(ws.join("generated.toml"), big).unwrap();
    commit_all(&repo, "Bad bytes and a huge file");

    let folder = Run::of(cairn(tmp.path()).args(["validate", "manifests", "--format", "json"]));
    folder.expect_exit(1, "working tree");
    let rev = Run::of(cairn(tmp.path()).args([
        "validate",
        "manifests",
        "--rev",
        "HEAD",
        "--format",
        "json",
    ]));
    rev.expect_exit(1, "--rev HEAD");
    let codes = |run: &Run| -> Vec<(String, String, u64)> {
        diagnostics(&run.json("blobs"))
            .iter()
            .map(|d| {
                (
                    d["code"].as_str().unwrap().to_string(),
                    d["location"]["file"].as_str().unwrap().to_string(),
                    d["location"]["line"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let expected = [
        (
            "encoding".to_string(),
            "credit-risk/data.toml".to_string(),
            2,
        ),
        (
            "file-too-large".to_string(),
            "credit-risk/generated.toml".to_string(),
            1,
        ),
    ];
    assert_eq!(codes(&folder), expected, "working tree");
    assert_eq!(
        codes(&rev),
        expected,
        "--rev HEAD reports what the folder reports"
    );
}

#[test]
fn a_committed_link_out_of_the_root_is_refused_at_a_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(tmp.path()).unwrap();
    let manifests = tmp.path().join("manifests");
    copy_tree(&example_manifests(), &manifests);
    // Replace the loans folder by a link to a folder outside the repository, and commit
    // the link itself (Git stores the target path, not the data).
    let loans = manifests.join("credit-risk").join("data").join("loans");
    fs::remove_dir_all(&loans).unwrap();
    std::os::unix::fs::symlink("/etc", &loans).unwrap();
    commit_all(&repo, "Point the data at /etc");

    for args in [
        vec!["validate", "manifests", "--format", "json"],
        vec!["validate", "manifests", "--rev", "HEAD", "--format", "json"],
    ] {
        let run = Run::of(cairn(tmp.path()).args(&args));
        run.expect_exit(1, "the link leaves the root");
        let report = run.json("link");
        let first = first_error(&report).unwrap();
        assert_eq!(first["code"], "path-escape", "{args:?}: {report:#}");
        assert_eq!(first["location"]["file"], "credit-risk/data.toml");
    }

    // A link that stays inside the root is followed at a revision too.
    fs::remove_file(&loans).unwrap();
    let real = manifests.join("credit-risk").join("data").join("real");
    copy_tree(&example_manifests().join("credit-risk/data/loans"), &real);
    std::os::unix::fs::symlink("real", &loans).unwrap();
    commit_all(&repo, "Point the data at a folder inside");
    let run = Run::of(cairn(tmp.path()).args(["validate", "manifests", "--rev", "HEAD"]));
    run.expect_exit(0, "the link stays inside the root");
}

/// A path holding NUL (a TOML `\u0000` escape) can't name a Git entry: it is reported as
/// missing, at `--rev` as in the working tree, never a panic (found by the fuzz test).
#[test]
fn a_nul_in_a_committed_path_is_a_missing_path_not_a_panic() {
    let h = History::new();
    let data = h.manifests().join("credit-risk").join("data.toml");
    edit(
        &data,
        "source = \"data/loans/\"",
        "source = \"data\\u0000/loans/\"",
    );
    let repo = Repository::open(h.dir()).unwrap();
    commit_all(&repo, "A NUL in a source path");
    for args in [&["--rev", "HEAD"][..], &[][..]] {
        let run = h.validate(args);
        run.expect_exit(1, &format!("{args:?}"));
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(
            run.stderr.contains("credit-risk/data.toml"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

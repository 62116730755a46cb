//! The properties every input must keep, whatever its content.
//!
//! - Loading and resolving never panic.
//! - `resolve` returns `Err` exactly when some finding is an error.
//! - Every finding has a message (and no empty label or help), and a location unless it
//!   is about the repository as a whole.
//! - Every location (and related location) names a file that exists under the root, a
//!   byte span inside it that starts on a character boundary, and the 1-based line and
//!   column of that span's start.
//! - Resolving twice gives the same outcome.
//! - On a sample of inputs: the `cairn` binary exits 0 or 1, prints valid JSON that
//!   agrees with the library, and its text output doesn't panic either; and the same
//!   files committed to Git and read with `load_revision` give the same findings.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cairn::desired::{resolve, Resolved};
use cairn::diagnostics::{Diagnostic, Diagnostics, Location};
use cairn::manifest::{load_folder, load_revision};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::repo::Repo;

/// Every this many inputs (over all strategies), the binary and the Git path are run too.
pub const SAMPLE_EVERY: usize = 50;

/// Inputs with more findings than this skip the text-output run of the binary.
const TEXT_MAX_FINDINGS: usize = 200;

/// Codes whose findings concern the repository as a whole and may have no location.
const UNLOCATED: &[&str] = &["no-workspaces"];

/// Tallies for the report printed at the end of each strategy.
#[derive(Default)]
pub struct Tally {
    pub inputs: AtomicUsize,
    pub valid: AtomicUsize,
    pub binary_runs: AtomicUsize,
    pub git_runs: AtomicUsize,
    pub codes: Mutex<BTreeSet<&'static str>>,
}

static SEEN: AtomicUsize = AtomicUsize::new(0);

/// Writes `repo` to a temporary folder and checks every property on it.
pub fn check_repo(repo: &Repo, tally: &Tally) -> Result<(), TestCaseError> {
    tally.inputs.fetch_add(1, Ordering::Relaxed);
    let sampled = SEEN.fetch_add(1, Ordering::Relaxed) % SAMPLE_EVERY == 0;
    let dir = tempfile::Builder::new()
        .prefix("cairn-fuzz-")
        .tempdir()
        .map_err(|e| TestCaseError::fail(format!("tempdir: {e}")))?;
    let root = dir.path();
    let clean = repo.write(root);

    let snapshot = load_folder(root).map_err(|e| {
        TestCaseError::fail(format!("load_folder failed on an existing folder: {e}"))
    })?;
    let first = resolve(&snapshot);
    let second = resolve(&snapshot);
    prop_assert_eq!(
        outcome(&first),
        outcome(&second),
        "resolve gave different outcomes for the same snapshot"
    );

    let diagnostics = match &first {
        Ok(resolved) => {
            prop_assert!(
                !resolved.warnings.has_errors(),
                "resolve returned Ok with errors: {:?}",
                resolved.warnings
            );
            tally.valid.fetch_add(1, Ordering::Relaxed);
            &resolved.warnings
        }
        Err(diagnostics) => {
            prop_assert!(
                diagnostics.has_errors(),
                "resolve returned Err without an error: {:?}",
                diagnostics
            );
            diagnostics
        }
    };
    {
        let mut codes = tally.codes.lock().unwrap();
        codes.extend(diagnostics.iter().map(|d| d.code));
    }
    let mut files = Files::new(root);
    for d in diagnostics {
        check_diagnostic(&mut files, d)?;
    }
    if let Ok(resolved) = &first {
        check_order(resolved)?;
    }

    if sampled {
        tally.binary_runs.fetch_add(1, Ordering::Relaxed);
        check_binary(root, &first)?;
        if clean && repo.links.is_empty() && repo.raw_names.is_empty() {
            if let Some(()) = check_git(root, &first)? {
                tally.git_runs.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// A comparable summary of a result: the whole diagnostics list, or the summary, the
/// apply order with dependencies, and the warnings.
fn outcome(result: &Result<Resolved, Diagnostics>) -> String {
    match result {
        Err(d) => format!("Err({d:?})"),
        Ok(r) => {
            let order: Vec<String> = r
                .state
                .resources
                .iter()
                .map(|res| {
                    let deps: Vec<String> = res
                        .dependencies
                        .iter()
                        .map(|d| format!("{}@{:?}", d.address, d.pin))
                        .collect();
                    format!("{} <- [{}]", res.address, deps.join(", "))
                })
                .collect();
            format!(
                "Ok({:?}; order {order:?}; warnings {:?})",
                r.state.summary(),
                r.warnings
            )
        }
    }
}

/// A file's bytes and the offset where each of its lines starts.
type FileLines = (Vec<u8>, Vec<usize>);

/// Files named by locations, read once per input, with the start of every line.
struct Files<'a> {
    root: &'a Path,
    cache: HashMap<String, Option<FileLines>>,
}

impl<'a> Files<'a> {
    fn new(root: &'a Path) -> Self {
        Files {
            root,
            cache: HashMap::new(),
        }
    }

    fn get(&mut self, file: &str) -> Option<&FileLines> {
        let root = self.root;
        self.cache
            .entry(file.to_string())
            .or_insert_with(|| {
                let path = root.join(file);
                if file.is_empty() || file.starts_with('/') || !path.is_file() {
                    return None;
                }
                let bytes = std::fs::read(&path).ok()?;
                let starts = std::iter::once(0)
                    .chain(
                        bytes
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| **b == b'\n')
                            .map(|(i, _)| i + 1),
                    )
                    .collect();
                Some((bytes, starts))
            })
            .as_ref()
    }
}

fn check_diagnostic(files: &mut Files<'_>, d: &Diagnostic) -> Result<(), TestCaseError> {
    prop_assert!(!d.code.is_empty(), "finding without a code: {:?}", d);
    prop_assert!(
        !d.message.trim().is_empty(),
        "finding with an empty message: {:?}",
        d
    );
    if let Some(label) = &d.label {
        prop_assert!(
            !label.trim().is_empty(),
            "finding with an empty label: {:?}",
            d
        );
    }
    if let Some(help) = &d.help {
        prop_assert!(
            !help.trim().is_empty(),
            "finding with an empty help: {:?}",
            d
        );
    }
    match &d.location {
        Some(location) => check_location(files, location, d)?,
        None => prop_assert!(
            UNLOCATED.contains(&d.code),
            "finding without a location (file, line, column): {:?}",
            d
        ),
    }
    for related in &d.related {
        prop_assert!(
            !related.message.trim().is_empty(),
            "related note with an empty message: {:?}",
            d
        );
        check_location(files, &related.location, d)?;
    }
    Ok(())
}

fn check_location(
    files: &mut Files<'_>,
    loc: &Location,
    d: &Diagnostic,
) -> Result<(), TestCaseError> {
    let Some((bytes, starts)) = files.get(&loc.file) else {
        return Err(TestCaseError::fail(format!(
            "location names `{}`, which is not a file in the repository: {d:?}",
            loc.file
        )));
    };
    let lines = starts.len();
    prop_assert!(
        loc.line >= 1 && loc.line <= lines + 1,
        "line {} outside `{}` ({} lines): {:?}",
        loc.line,
        loc.file,
        lines,
        d
    );
    prop_assert!(loc.column >= 1, "column {} is below 1: {:?}", loc.column, d);
    prop_assert!(
        loc.span.start <= loc.span.end && loc.span.end <= bytes.len(),
        "span {:?} outside `{}` ({} bytes): {:?}",
        loc.span,
        loc.file,
        bytes.len(),
        d
    );
    // Line and column must be those of the span's start, columns counted in characters,
    // and everything before the span must be text.
    let line = starts.partition_point(|&s| s <= loc.span.start);
    let line_start = starts[line - 1];
    let Ok(before) = std::str::from_utf8(&bytes[line_start..loc.span.start]) else {
        return Err(TestCaseError::fail(format!(
            "span {:?} of `{}` does not start on a character boundary after valid UTF-8: {d:?}",
            loc.span, loc.file
        )));
    };
    let column = before.chars().count() + 1;
    prop_assert_eq!(
        (loc.line, loc.column),
        (line, column),
        "line:column does not match the span start {} in `{}`: {:?}",
        loc.span.start,
        loc.file,
        d
    );
    Ok(())
}

/// The apply order puts every resource after the resources it depends on (except a job's
/// pinned inputs, which name versions that already exist).
fn check_order(resolved: &Resolved) -> Result<(), TestCaseError> {
    let state = &resolved.state;
    let position: std::collections::HashMap<_, _> = state
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.address, i))
        .collect();
    prop_assert_eq!(
        position.len(),
        state.resources.len(),
        "an address appears twice"
    );
    for (i, r) in state.resources.iter().enumerate() {
        prop_assert!(
            state.get(&r.address).is_some(),
            "index misses {}",
            r.address
        );
        for dep in &r.dependencies {
            let Some(&j) = position.get(&dep.address) else {
                return Err(TestCaseError::fail(format!(
                    "{} depends on {}, which is not in the desired state",
                    r.address, dep.address
                )));
            };
            let pinned_job_input = r.kind() == cairn::Kind::Job && dep.pin.is_some();
            prop_assert!(
                pinned_job_input || j < i,
                "{} is ordered before its dependency {}",
                r.address,
                dep.address
            );
        }
    }
    Ok(())
}

fn cairn_binary() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// Runs `cairn validate <root> --format json` and `--format text`.
fn check_binary(root: &Path, library: &Result<Resolved, Diagnostics>) -> Result<(), TestCaseError> {
    let out = Command::new(cairn_binary())
        .args(["validate", "--format", "json"])
        .arg(root)
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| TestCaseError::fail(format!("running cairn: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    prop_assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "cairn validate --format json exited with {:?}; stderr:\n{}",
        out.status,
        stderr
    );
    prop_assert!(!stderr.contains("panicked"), "cairn panicked:\n{}", stderr);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        TestCaseError::fail(format!(
            "cairn validate --format json printed invalid JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })?;
    prop_assert_eq!(
        out.status.code() == Some(0),
        library.is_ok(),
        "exit code {:?} disagrees with the library",
        out.status.code()
    );
    prop_assert_eq!(&json["valid"], &serde_json::Value::Bool(library.is_ok()));
    let expected = match library {
        Ok(r) => serde_json::to_value(&r.warnings),
        Err(d) => serde_json::to_value(d),
    }
    .map_err(|e| TestCaseError::fail(format!("serializing findings: {e}")))?;
    prop_assert_eq!(
        &json["diagnostics"],
        &expected,
        "the binary's findings differ from the library's"
    );

    // The text renderer (miette) rescans the file for each finding, so thousands of
    // findings in one big file take minutes in a debug build; the JSON run above covers
    // those inputs.
    if library
        .as_ref()
        .err()
        .is_some_and(|d| d.len() > TEXT_MAX_FINDINGS)
    {
        return Ok(());
    }
    let out = Command::new(cairn_binary())
        .args(["validate", "--color", "never"])
        .arg(root)
        .output()
        .map_err(|e| TestCaseError::fail(format!("running cairn: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    prop_assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "cairn validate (text) exited with {:?}; stderr:\n{}",
        out.status,
        stderr
    );
    prop_assert!(!stderr.contains("panicked"), "cairn panicked:\n{}", stderr);
    Ok(())
}

/// Commits the files under `root` to a new Git repository there, reads them back with
/// `load_revision(root, "HEAD")` and compares the findings with the folder's. Returns
/// `None` when the tree holds something Git can't (empty folders, links).
fn check_git(
    root: &Path,
    folder: &Result<Resolved, Diagnostics>,
) -> Result<Option<()>, TestCaseError> {
    let fail = |what: &str, e: git2::Error| TestCaseError::fail(format!("git {what}: {e}"));
    let repo = git2::Repository::init(root).map_err(|e| fail("init", e))?;
    let Some(tree) = write_tree(&repo, root, true).map_err(|e| fail("tree", e))? else {
        return Ok(None);
    };
    let tree = repo.find_tree(tree).map_err(|e| fail("find tree", e))?;
    let sig = git2::Signature::now("fuzz", "fuzz@example.com").map_err(|e| fail("signature", e))?;
    repo.commit(Some("HEAD"), &sig, &sig, "fuzz", &tree, &[])
        .map_err(|e| fail("commit", e))?;

    let snapshot = load_revision(root, "HEAD")
        .map_err(|e| TestCaseError::fail(format!("load_revision failed: {e}")))?;
    let revision = resolve(&snapshot);
    let findings = |r: &Result<Resolved, Diagnostics>| match r {
        Ok(r) => (true, format!("{:?}", r.warnings), Some(r.state.summary())),
        Err(d) => (false, format!("{d:?}"), None),
    };
    prop_assert_eq!(
        findings(folder),
        findings(&revision),
        "the working tree and the same files at HEAD give different results"
    );
    let mut files = Files::new(root);
    for d in revision.as_ref().err().into_iter().flatten() {
        check_diagnostic(&mut files, d)?;
    }
    Ok(Some(()))
}

/// Writes the folder as a Git tree. `None` when it holds an empty folder or a link.
fn write_tree(
    repo: &git2::Repository,
    dir: &Path,
    top: bool,
) -> Result<Option<git2::Oid>, git2::Error> {
    use std::os::unix::ffi::OsStrExt;
    let mut builder = repo.treebuilder(None)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| git2::Error::from_str(&e.to_string()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    if entries.is_empty() {
        return Ok(None);
    }
    for entry in entries {
        let name = entry.file_name();
        if top && name == ".git" {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            return Ok(None);
        };
        let name = name.as_bytes();
        if kind.is_dir() {
            let Some(sub) = write_tree(repo, &entry.path(), false)? else {
                return Ok(None);
            };
            builder.insert(name, sub, 0o040000)?;
        } else if kind.is_file() {
            let content =
                std::fs::read(entry.path()).map_err(|e| git2::Error::from_str(&e.to_string()))?;
            let blob = repo.blob(&content)?;
            builder.insert(name, blob, 0o100644)?;
        } else {
            return Ok(None);
        }
    }
    builder.write().map(Some)
}

/// Prints what one strategy did, so a long run can be reported.
pub fn report(name: &str, tally: &Tally) {
    let codes = tally.codes.lock().unwrap();
    eprintln!(
        "fuzz: {name}: ran {} inputs ({} valid, {} also through the binary, {} also through Git); {} finding codes seen: {}",
        tally.inputs.load(Ordering::Relaxed),
        tally.valid.load(Ordering::Relaxed),
        tally.binary_runs.load(Ordering::Relaxed),
        tally.git_runs.load(Ordering::Relaxed),
        codes.len(),
        codes.iter().copied().collect::<Vec<_>>().join(" "),
    );
}

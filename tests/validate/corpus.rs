//! The corpus of invalid repositories in `fixtures/invalid/<case>/`.
//!
//! Each case is a manifests root that breaks one rule, plus `expect.txt` (not a manifest:
//! it doesn't end in `.toml`) listing every diagnostic `cairn validate --format json`
//! must report, in order, one per line:
//!
//! ```text
//! # comments and blank lines are ignored
//! <code> <file> <line>        e.g. `unresolved-reference credit-risk/train.toml 3`
//! ```
//!
//! `-` stands for the file and line of a diagnostic that has no location. The first line
//! is the first error reported. The text output of every case is snapshot-tested as
//! `snapshots/invalid__<case>.snap`.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::{cairn, diagnostics, first_error, test_dir, Run};

/// The corpus must not shrink by accident.
const MIN_CASES: usize = 30;

/// Cases whose text output may name a different column than the JSON. None: the renderer
/// counts characters, as the JSON does (`unicode-before-error` checks it).
const KNOWN_TEXT_COLUMN_MISMATCH: &[&str] = &[];

fn corpus_dir() -> PathBuf {
    test_dir().join("fixtures").join("invalid")
}

/// Case names: every folder in the corpus, sorted.
fn cases() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(corpus_dir())
        .expect("fixtures/invalid exists")
        .map(|e| e.expect("readable corpus entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().into_string().expect("case names are UTF-8"))
        .collect();
    names.sort();
    names
}

/// One line of `expect.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    code: String,
    file: Option<String>,
    line: Option<u64>,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = self.line.map_or("-".to_string(), |l| l.to_string());
        write!(
            f,
            "{} {} {line}",
            self.code,
            self.file.as_deref().unwrap_or("-")
        )
    }
}

impl Expected {
    fn of(diagnostic: &serde_json::Value) -> Expected {
        let location = &diagnostic["location"];
        Expected {
            code: diagnostic["code"].as_str().unwrap_or("?").to_string(),
            file: location["file"].as_str().map(str::to_string),
            line: location["line"].as_u64(),
        }
    }
}

fn read_expectations(case: &str) -> Vec<Expected> {
    let path = corpus_dir().join(case).join("expect.txt");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{case}: cannot read {} ({e}); every case needs one",
            path.display()
        )
    });
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let [code, file, line] = parts[..] else {
                panic!("{case}/expect.txt: `{l}` is not `<code> <file> <line>`");
            };
            Expected {
                code: code.to_string(),
                file: (file != "-").then(|| file.to_string()),
                line: (line != "-").then(|| {
                    line.parse()
                        .unwrap_or_else(|_| panic!("{case}/expect.txt: bad line number in `{l}`"))
                }),
            }
        })
        .collect()
}

/// Line and column (1-based, columns in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() as u64 + 1;
    (line, column)
}

/// Every location must name a file of the case, and its line and column must be where
/// its byte span starts. A location that names a file but no place in it (span 0..0 at
/// 1:1) is allowed for whole-file findings.
fn check_location(case_dir: &Path, location: &serde_json::Value, what: &str) {
    let file = location["file"].as_str().expect("a location names a file");
    let line = location["line"].as_u64().expect("a location has a line");
    let column = location["column"]
        .as_u64()
        .expect("a location has a column");
    let start = location["span"]["start"].as_u64().expect("span.start") as usize;
    let end = location["span"]["end"].as_u64().expect("span.end") as usize;
    let path = case_dir.join(file);
    assert!(
        path.is_file(),
        "{what}: location names `{file}`, which is not a file of the case"
    );
    let Ok(text) = fs::read_to_string(&path) else {
        return; // not UTF-8: nothing to compare against
    };
    assert!(
        start <= end && end <= text.len(),
        "{what}: span {start}..{end} is outside `{file}` ({} bytes)",
        text.len()
    );
    assert!(
        text.is_char_boundary(start) && text.is_char_boundary(end),
        "{what}: span {start}..{end} splits a character in `{file}`"
    );
    assert_eq!(
        (line, column),
        line_column(&text, start),
        "{what}: {file}:{line}:{column} is not where its span starts ({start})"
    );
}

/// Runs one case both ways and checks everything about it.
fn check_case(case: &str) {
    let dir = corpus_dir();
    let case_dir = dir.join(case);

    // Text, as a person sees it.
    let text = Run::of(cairn(&dir).args(["validate", case, "--color", "never"]));
    text.expect_exit(1, case);
    assert_eq!(
        text.stdout, "",
        "{case}: findings go to stderr, stdout stays empty"
    );
    assert!(
        text.stderr.contains(&format!("✗ {case} is invalid: ")),
        "{case}: no final `✗ … is invalid` line:\n{}",
        text.stderr
    );
    insta::with_settings!({
        description => format!("cairn validate {case} --color never  (stderr)"),
        omit_expression => true,
        prepend_module_to_snapshot => false,
        snapshot_path => "snapshots",
    }, {
        insta::assert_snapshot!(format!("invalid__{case}"), text.stderr);
    });

    let headers = snippet_headers(&text.stderr);

    // JSON, as a tool sees it.
    let run = Run::of(cairn(&dir).args(["validate", case, "--format", "json"]));
    run.expect_exit(1, case);
    let json = run.json(case);
    assert_eq!(json["valid"], false, "{case}: `valid` must be false");
    assert_eq!(json["format_version"], "1", "{case}");
    assert!(json["summary"].is_null(), "{case}: no summary when invalid");

    let actual: Vec<Expected> = diagnostics(&json).iter().map(Expected::of).collect();
    let listing = actual
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let expected = read_expectations(case);
    assert!(
        !expected.is_empty(),
        "{case}/expect.txt lists nothing; cairn reports:\n{listing}"
    );
    let first = first_error(&json).unwrap_or_else(|| panic!("{case}: no error reported"));
    let first_location = &first["location"];
    assert_eq!(
        (
            first["code"].as_str(),
            first_location["file"].as_str(),
            first_location["line"].as_u64()
        ),
        (
            Some(expected[0].code.as_str()),
            expected[0].file.as_deref(),
            expected[0].line
        ),
        "{case}: the first error is not the expected one; cairn reports:\n{listing}"
    );
    assert_eq!(
        actual, expected,
        "{case}: diagnostics differ from expect.txt; cairn reports:\n{listing}"
    );

    for (i, d) in diagnostics(&json).iter().enumerate() {
        let what = format!("{case}: diagnostic {i} ({})", d["code"]);
        assert!(
            d["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
            "{what}: empty message"
        );
        if !d["location"].is_null() {
            check_location(&case_dir, &d["location"], &what);
        }
        for related in d["related"].as_array().into_iter().flatten() {
            check_location(&case_dir, &related["location"], &format!("{what}, related"));
        }
    }

    // Every place the text output names is a place the JSON names.
    let places: BTreeSet<String> = diagnostics(&json)
        .iter()
        .flat_map(|d| {
            std::iter::once(&d["location"]).chain(
                d["related"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| &r["location"]),
            )
        })
        .filter(|l| !l.is_null())
        .map(|l| {
            format!(
                "{}:{}:{}",
                l["file"].as_str().unwrap(),
                l["line"],
                l["column"]
            )
        })
        .collect();
    let unknown: Vec<&String> = headers.iter().filter(|h| !places.contains(*h)).collect();
    if KNOWN_TEXT_COLUMN_MISMATCH.contains(&case) {
        assert!(
            !unknown.is_empty(),
            "{case}: text and JSON now agree on places; remove it from KNOWN_TEXT_COLUMN_MISMATCH"
        );
    } else {
        assert!(
            unknown.is_empty(),
            "{case}: the text output names {unknown:?}, but the JSON places are {places:?}"
        );
    }
}

/// The `file:line:column` of every source snippet miette drew (`╭─[file:3:11]`).
fn snippet_headers(text: &str) -> Vec<String> {
    text.split("╭─[")
        .skip(1)
        .filter_map(|rest| rest.split_once(']').map(|(place, _)| place.to_string()))
        .collect()
}

#[test]
fn every_invalid_case_is_reported() {
    let cases = cases();
    assert!(
        cases.len() >= MIN_CASES,
        "the corpus has {} cases, fewer than {MIN_CASES}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check_case(case))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("--- {case}\n{message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A snapshot whose case was renamed or deleted would otherwise linger unnoticed.
#[test]
fn every_invalid_snapshot_has_a_case() {
    let cases: BTreeSet<String> = cases().into_iter().collect();
    let snapshots = test_dir().join("snapshots");
    let Ok(entries) = fs::read_dir(&snapshots) else {
        return;
    };
    let orphans: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let case = name.strip_prefix("invalid__")?.strip_suffix(".snap")?;
            (!cases.contains(case)).then_some(name)
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "snapshots without a case folder (delete them): {orphans:?}"
    );
}

/// Every case says what it expects.
#[test]
fn every_case_has_an_expectation() {
    let missing: Vec<String> = cases()
        .into_iter()
        .filter(|c| !corpus_dir().join(c).join("expect.txt").is_file())
        .collect();
    assert!(missing.is_empty(), "cases without expect.txt: {missing:?}");
}

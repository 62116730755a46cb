//! Inputs written at test time instead of committed: bytes that are not UTF-8, a 10 MB
//! file, 100 000 levels of nesting, CRLF line endings (which Git may rewrite), symbolic
//! links. None of them may crash `cairn validate`; each must be a finding with a place.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::manifest::parse::MAX_NESTING;
use cairn::manifest::source::MAX_MANIFEST_BYTES;

use crate::{cairn, diagnostics, first_error, Run};

const WORKSPACE: &str = "[workspace]\nenvironment = \"dev\"\n";

/// Writes a manifests root `<tmp>/<case>/credit-risk/` holding workspace.toml and `files`.
fn write_case(tmp: &Path, case: &str, files: &[(&str, &[u8])]) {
    let ws = tmp.join(case).join("credit-risk");
    fs::create_dir_all(&ws).unwrap();
    fs::write(ws.join("workspace.toml"), WORKSPACE).unwrap();
    for (name, bytes) in files {
        let path = ws.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
}

/// Runs `cairn validate <case>` in `tmp`, as text and as JSON, and checks it failed
/// cleanly. Returns (text run, JSON report).
fn validate_invalid(tmp: &Path, case: &str) -> (Run, serde_json::Value) {
    let started = Instant::now();
    let text = Run::of(cairn(tmp).args(["validate", case, "--color", "never"]));
    text.expect_exit(1, case);
    let json = Run::of(cairn(tmp).args(["validate", case, "--format", "json"]));
    json.expect_exit(1, case);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "{case}: validating took {elapsed:?}"
    );
    let report = json.json(case);
    assert_eq!(report["valid"], false, "{case}");
    (text, report)
}

#[track_caller]
fn assert_first_error(report: &serde_json::Value, code: &str, file: &str, line: u64, column: u64) {
    let first = first_error(report).expect("an error is reported");
    let location = &first["location"];
    assert_eq!(
        (
            first["code"].as_str(),
            location["file"].as_str(),
            location["line"].as_u64(),
            location["column"].as_u64()
        ),
        (Some(code), Some(file), Some(line), Some(column)),
        "{report:#}"
    );
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        omit_expression => true,
        prepend_module_to_snapshot => false,
        snapshot_path => "snapshots",
    }, {
        insta::assert_snapshot!(format!("generated__{name}"), text);
    });
}

#[test]
fn bytes_that_are_not_utf8_are_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    // A Latin-1 `ò` (0xf2) on line 2, after 16 ASCII characters.
    write_case(
        tmp.path(),
        "latin1",
        &[(
            "data.toml",
            b"[dataset.loans]\nsource = \"data/l\xf2ans/\"\nformat = \"csv\"\n",
        )],
    );
    let (text, report) = validate_invalid(tmp.path(), "latin1");
    assert_first_error(&report, "encoding", "credit-risk/data.toml", 2, 17);
    assert_eq!(diagnostics(&report).len(), 1, "{report:#}");
    snapshot("non-utf8", &text.stderr);

    // The bad byte first in the file, and a multi-byte sequence cut off at the end.
    write_case(
        tmp.path(),
        "first-byte",
        &[("data.toml", b"\xff[dataset.loans]\n")],
    );
    let (_, report) = validate_invalid(tmp.path(), "first-byte");
    assert_first_error(&report, "encoding", "credit-risk/data.toml", 1, 1);
    write_case(
        tmp.path(),
        "truncated",
        &[(
            "data.toml",
            "# données\n# é".as_bytes().split_last().unwrap().1,
        )],
    );
    let (_, report) = validate_invalid(tmp.path(), "truncated");
    assert_first_error(&report, "encoding", "credit-risk/data.toml", 2, 3);

    // A broken workspace.toml is reported too, not taken for a missing one.
    let tmp2 = tempfile::tempdir().unwrap();
    let ws = tmp2.path().join("root").join("credit-risk");
    fs::create_dir_all(&ws).unwrap();
    fs::write(
        ws.join("workspace.toml"),
        b"[workspace]\ndescription = \"\xe9\"\n",
    )
    .unwrap();
    let (_, report) = validate_invalid(tmp2.path(), "root");
    assert_first_error(&report, "encoding", "credit-risk/workspace.toml", 2, 16);
}

#[test]
fn a_ten_megabyte_manifest_is_refused_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    // A runaway generator: 10 MiB of well-formed dataset tables.
    let size = 10 * 1024 * 1024;
    let mut text = String::with_capacity(size + 100);
    let mut i = 0;
    while text.len() < size - 100 {
        text.push_str(&format!(
            "[dataset.d{i}]\nsource = \"s3://bank-ml/d{i}\"\nformat = \"csv\"\n\n"
        ));
        i += 1;
    }
    text.push_str(&"#".repeat(size - 1 - text.len()));
    text.push('\n');
    assert_eq!(text.len(), size);
    assert!(size as u64 > MAX_MANIFEST_BYTES);
    write_case(tmp.path(), "huge", &[("data.toml", text.as_bytes())]);

    let (run, report) = validate_invalid(tmp.path(), "huge");
    assert_first_error(&report, "file-too-large", "credit-risk/data.toml", 1, 1);
    assert_eq!(diagnostics(&report).len(), 1, "{report:#}");
    snapshot("ten-megabytes", &run.stderr);
}

#[test]
fn a_manifest_at_the_size_limit_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = MAX_MANIFEST_BYTES as usize;
    let head = "[dataset.loans]\nsource = \"s3://bank-ml/loans\"\nformat = \"csv\"\n";
    let mut text = String::from(head);
    while text.len() < limit {
        let line_len = (limit - text.len()).min(1000);
        text.push_str(&"#".repeat(line_len - 1));
        text.push('\n');
    }
    assert_eq!(text.len(), limit);
    write_case(tmp.path(), "at-limit", &[("data.toml", text.as_bytes())]);
    Run::of(cairn(tmp.path()).args(["validate", "at-limit", "--color", "never"]))
        .expect_exit(0, "a file of exactly MAX_MANIFEST_BYTES");

    text.push('\n');
    write_case(tmp.path(), "over-limit", &[("data.toml", text.as_bytes())]);
    let (_, report) = validate_invalid(tmp.path(), "over-limit");
    assert_first_error(&report, "file-too-large", "credit-risk/data.toml", 1, 1);
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    const DEPTH: usize = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, String); 6] = [
        (
            "arrays",
            format!(
                "[job.x]\nenv = {}{}\n",
                "[".repeat(DEPTH),
                "]".repeat(DEPTH)
            ),
        ),
        (
            "inline-tables",
            format!(
                "[job.x]\nenv = {}1{}\n",
                "{a = ".repeat(DEPTH),
                "}".repeat(DEPTH)
            ),
        ),
        (
            "mixed",
            format!(
                "[job.x]\nenv = {}1{}\n",
                "[{a = ".repeat(DEPTH / 2),
                "}]".repeat(DEPTH / 2)
            ),
        ),
        (
            "unclosed",
            format!("[job.x]\nenv = {}\n", "[".repeat(DEPTH)),
        ),
        (
            "dotted-keys",
            format!("[job.x]\n{} = 1\n", vec!["a"; DEPTH].join(".")),
        ),
        (
            "table-headers",
            format!("[job.{}]\nx = 1\n", vec!["a"; DEPTH].join(".")),
        ),
    ];
    for (case, text) in &cases {
        write_case(tmp.path(), case, &[("train.toml", text.as_bytes())]);
        let (_, report) = validate_invalid(tmp.path(), case);
        let first = first_error(&report).unwrap_or_else(|| panic!("{case}: no error"));
        let code = first["code"].as_str().unwrap();
        assert!(
            ["too-deep", "toml"].contains(&code),
            "{case}: unexpected first error {first:#}"
        );
        assert_eq!(
            first["location"]["file"], "credit-risk/train.toml",
            "{case}"
        );
        if text.contains("[[") || text.contains("{a") {
            // Bracket nesting is caught by the pre-parse scan, where the limit is crossed.
            assert_eq!(code, "too-deep", "{case}");
            assert_eq!(first["location"]["line"], 2, "{case}");
        }
    }
}

#[test]
fn nesting_up_to_the_limit_is_parsed_normally() {
    let tmp = tempfile::tempdir().unwrap();
    // `env` wants a table of strings, so an array is a type error: proof that the file got
    // past the nesting check and through the parser.
    let at_limit = format!(
        "[job.x]\nenv = {}{}\n",
        "[".repeat(MAX_NESTING),
        "]".repeat(MAX_NESTING)
    );
    write_case(
        tmp.path(),
        "at-limit",
        &[("train.toml", at_limit.as_bytes())],
    );
    let (_, report) = validate_invalid(tmp.path(), "at-limit");
    assert_first_error(&report, "invalid-field", "credit-risk/train.toml", 2, 7);

    let over = format!(
        "[job.x]\nenv = {}{}\n",
        "[".repeat(MAX_NESTING + 1),
        "]".repeat(MAX_NESTING + 1)
    );
    write_case(tmp.path(), "over-limit", &[("train.toml", over.as_bytes())]);
    let (_, report) = validate_invalid(tmp.path(), "over-limit");
    assert_first_error(
        &report,
        "too-deep",
        "credit-risk/train.toml",
        2,
        7 + MAX_NESTING as u64,
    );

    // Brackets inside strings and comments are not nesting.
    let quoted = format!(
        "# {}\n[dataset.loans]\nsource = \"s3://bank-ml/{}\"\nformat = \"csv\"\ndescription = '''{}'''\n",
        "[".repeat(1000),
        "[".repeat(1000),
        "{".repeat(1000)
    );
    write_case(tmp.path(), "quoted", &[("data.toml", quoted.as_bytes())]);
    Run::of(cairn(tmp.path()).args(["validate", "quoted", "--color", "never"]))
        .expect_exit(0, "brackets in strings and comments");
}

#[test]
fn crlf_line_endings_keep_lines_and_columns() {
    let tmp = tempfile::tempdir().unwrap();
    write_case(
        tmp.path(),
        "crlf",
        &[(
            "data.toml",
            b"[dataset.loans]\r\nsource = \"s3://bank-ml/loans\"\r\nformat = \"cvs\"\r\n",
        )],
    );
    let (text, report) = validate_invalid(tmp.path(), "crlf");
    assert_first_error(&report, "invalid-field", "credit-risk/data.toml", 3, 10);
    assert!(
        text.stderr.contains("credit-risk/data.toml:3:10"),
        "{}",
        text.stderr
    );
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_out_of_the_root_is_an_escape() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("loans.csv"), "id\n1\n").unwrap();
    let data = "[dataset.loans]\nsource = \"data/loans\"\nformat = \"csv\"\n";
    write_case(tmp.path(), "link", &[("data.toml", data.as_bytes())]);
    let ws = tmp.path().join("link").join("credit-risk");
    fs::create_dir_all(ws.join("data")).unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.join("data").join("loans")).unwrap();
    let (_, report) = validate_invalid(tmp.path(), "link");
    assert_first_error(&report, "path-escape", "credit-risk/data.toml", 2, 10);

    // A link that stays inside the root is fine.
    let inside = tmp.path().join("inside").join("credit-risk");
    fs::create_dir_all(inside.join("data").join("real")).unwrap();
    fs::write(inside.join("workspace.toml"), WORKSPACE).unwrap();
    fs::write(inside.join("data.toml"), data).unwrap();
    fs::write(inside.join("data").join("real").join("loans.csv"), "id\n").unwrap();
    std::os::unix::fs::symlink("real", inside.join("data").join("loans")).unwrap();
    Run::of(cairn(tmp.path()).args(["validate", "inside", "--color", "never"]))
        .expect_exit(0, "a link inside the root");
}

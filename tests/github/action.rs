//! The GitHub Action (`gh-action/action.yml`) and its example workflows: linted by
//! actionlint, checked against GitHub's schemas (check-jsonschema), and checked against
//! each other and the real `cairn` (inputs the examples pass exist, commands and flags
//! they run exist, the permissions each flow needs are granted).
//!
//! `.ci/run` installs actionlint (`.ci/bin/actionlint`) and check-jsonschema
//! (`.ci/venv`). Where they are missing the lint tests fail in CI (`CI` set) and are
//! skipped, with a note, elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const EXAMPLES: [&str; 3] = [
    "gh-action/examples/plan.yml",
    "gh-action/examples/apply.yml",
    "gh-action/examples/drift.yml",
];

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(rel)).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// A tool on PATH or where `.ci/run` puts it.
fn find_tool(name: &str, installed: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        installed
            .iter()
            .map(|rel| repo_root().join(rel))
            .find(|p| p.is_file())
    })
}

/// Fails in CI, skips elsewhere, when a linter is missing.
fn missing(tool: &str) {
    let message = format!(
        "{tool} was not found on PATH or in .ci/: run .ci/run (it installs it) or put {tool} on PATH"
    );
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
}

#[test]
fn actionlint_passes_the_example_workflows() {
    let Some(actionlint) = find_tool("actionlint", &[".ci/bin/actionlint"]) else {
        return missing("actionlint");
    };
    let out = Command::new(&actionlint)
        .arg("-no-color")
        .args(EXAMPLES)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", actionlint.display()));
    assert!(
        out.status.success(),
        "actionlint found problems ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_action_and_workflows_match_githubs_schemas() {
    let Some(checker) = find_tool("check-jsonschema", &[".ci/venv/bin/check-jsonschema"]) else {
        return missing("check-jsonschema");
    };
    let runs: [(&str, &[&str]); 2] = [
        ("vendor.github-actions", &["gh-action/action.yml"]),
        ("vendor.github-workflows", &EXAMPLES),
    ];
    for (schema, files) in runs {
        let out = Command::new(&checker)
            .args(["--builtin-schema", schema])
            .args(files)
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{schema}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_examples_use_the_action_as_it_is_declared() {
    let action = yaml("gh-action/action.yml");
    assert_eq!(action["runs"]["using"].as_str(), Some("composite"));
    let inputs = action["inputs"].as_mapping().expect("inputs");
    for step in action["runs"]["steps"].as_sequence().unwrap() {
        if step.get("run").is_some() {
            assert!(
                step.get("shell").is_some(),
                "composite run steps need a shell: {step:?}"
            );
        }
    }
    let required: Vec<&str> = inputs
        .iter()
        .filter(|(_, v)| v["required"].as_bool() == Some(true) && v.get("default").is_none())
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(required, ["command"]);

    let mut seen = 0;
    for rel in EXAMPLES {
        let workflow = yaml(rel);
        for (_, job) in workflow["jobs"].as_mapping().unwrap() {
            for step in job["steps"].as_sequence().unwrap() {
                if step["uses"].as_str() != Some("./gh-action") {
                    continue;
                }
                seen += 1;
                let with = step["with"].as_mapping().expect("with");
                for (key, _) in with {
                    let key = key.as_str().unwrap();
                    assert!(
                        inputs.contains_key(key),
                        "{rel} passes `{key}`, which action.yml does not declare"
                    );
                }
                for r in &required {
                    assert!(with.contains_key(*r), "{rel} does not pass `{r}`");
                }
                check_command(rel, with["command"].as_str().unwrap());
                // An error (1) or a usage error (64, a typo in `command`) never keeps a
                // run green; only "no changes" (0) and "changes or drift" (2) may.
                let allowed = with
                    .get("allow-exit-codes")
                    .or(inputs.get("allow-exit-codes").map(|i| &i["default"]))
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                for code in allowed.split_whitespace() {
                    assert!(code == "0" || code == "2", "{rel} allows exit code {code}");
                }
            }
        }
    }
    assert_eq!(seen, EXAMPLES.len());

    // Each flow is granted what it writes.
    let permissions = |rel: &str| -> Vec<String> {
        yaml(rel)["permissions"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{}: {}", k.as_str().unwrap(), v.as_str().unwrap()))
            .collect()
    };
    let plan = permissions("gh-action/examples/plan.yml");
    assert!(plan.contains(&"pull-requests: write".into()), "{plan:?}");
    assert!(plan.contains(&"statuses: write".into()), "{plan:?}");
    let drift = permissions("gh-action/examples/drift.yml");
    assert!(drift.contains(&"issues: write".into()), "{drift:?}");
}

/// The command an example runs names a real subcommand and real flags.
fn check_command(rel: &str, command: &str) {
    let words: Vec<&str> = command.split_whitespace().collect();
    let sub = words[0];
    let help = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{rel}: `cairn {sub}` does not exist");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{rel}: `cairn {sub}` has no {flag}:\n{help}"
        );
    }
}

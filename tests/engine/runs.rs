//! `cairn runs`: the recorded runs of a job, newest first, with their metrics (what the
//! job's `metrics.json` held) and outputs, as text and as JSON; `cairn status` shows a
//! model version's metrics beside it.

use crate::support::{manifests, Job};

#[test]
fn runs_are_listed_newest_first_with_their_metrics() {
    let root = manifests(&Job::default());
    let none = root.cairn(&["runs", "ROOT"]);
    none.ok();
    assert_eq!(none.stdout.trim(), "No runs recorded yet.");

    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    root.edit_row(99_999);
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();

    let json = root.cairn(&["runs", "ROOT", "--format", "json"]);
    json.ok();
    let runs: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{}", json.stdout);
    // Newest first: the second apply's run read the edited dataset version.
    assert!(runs[0]["finished_at"].as_str() >= runs[1]["finished_at"].as_str());
    assert_ne!(runs[0]["inputs"], runs[1]["inputs"]);
    for run in runs {
        assert_eq!(run["job"], "train");
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["metrics"]["auc"], 0.75, "{run}");
        assert_eq!(run["workspace"], "risk");
    }

    let text = root.cairn(&["runs", "ROOT", "--job", "job.train"]);
    text.ok();
    let lines: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.contains("job.train"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", text.stdout);
    let newest = runs[0]["run_id"].as_str().unwrap();
    assert!(lines[0].contains(newest), "{}", text.stdout);
    assert!(lines[0].contains("succeeded"), "{}", text.stdout);
    assert!(lines[0].contains("auc 0.75, rows 4"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains(&format!("→ model: model.scorer@{newest}")),
        "{}",
        text.stdout
    );
    // `status` shows the model version's metrics with it.
    let status = root.cairn(&["status", "ROOT"]);
    status.ok();
    let model_line = status
        .stdout
        .lines()
        .position(|l| l.contains("risk/model.scorer"))
        .unwrap_or_else(|| panic!("{}", status.stdout));
    let next = status.stdout.lines().nth(model_line + 1).unwrap_or("");
    assert!(next.trim() == "auc 0.75, rows 4", "{}", status.stdout);
    // The journal has each run's metrics; `history` shows them under the apply.
    let history = root.cairn(&["history", "ROOT", "--format", "json"]);
    history.ok();
    let records: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let metrics: Vec<serde_json::Value> = records
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["outcomes"].as_array().unwrap())
        .flat_map(|o| o["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["event"] == "metrics")
        .collect();
    assert_eq!(metrics.len(), 2, "{}", history.stdout);
    assert_eq!(metrics[1]["run_id"], newest, "{}", history.stdout);
    assert_eq!(metrics[1]["metrics"]["auc"], 0.75);
    let text = root.cairn(&["history", "ROOT"]);
    assert!(
        text.stdout
            .contains(&format!("risk/job.train run {newest}: auc 0.75, rows 4")),
        "{}",
        text.stdout
    );
    // Another job's runs: none.
    let other = root.cairn(&["runs", "ROOT", "--job", "other"]);
    other.ok();
    assert_eq!(other.stdout.trim(), "No runs recorded yet.");
}

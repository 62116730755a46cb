//! The main user flows: plan, apply, plan again; a data change retraining the model;
//! saved plans applied exactly once.

use crate::support::{manifests, regex_escape, sha256_file, Job, WORKSPACE};

/// A fresh root: the plan creates everything, apply does it, and the next plan has
/// nothing to do.
#[test]
fn apply_then_plan_has_no_changes() {
    let root = manifests(&Job::default());
    root.cairn(&["validate", "ROOT"]).ok();

    let plan = root.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(2);
    assert!(
        plan.stdout
            .contains("Plan: 4 to add, 0 to change, 0 to destroy, 1 to run"),
        "{}",
        plan.both()
    );

    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    assert!(
        apply.stdout.contains("Apply complete: 5 succeeded"),
        "{}",
        apply.both()
    );

    let again = root.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    again.ok();
    assert!(again.stdout.starts_with("No changes."), "{}", again.both());

    // What the apply left in the store.
    let dataset = root.committed("datasets", "loans");
    let model = root.committed("models", "scorer");
    assert_eq!((dataset.len(), model.len()), (1, 1));
    let run = root.store_json(&format!("runs/train/{}/_run.json", model[0]));
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["attempts"], 1);
    assert_eq!(run["metrics"]["auc"], 0.75);
    let record = root.store_json(&format!("models/scorer/{}/_model.json", model[0]));
    assert_eq!(
        record["inputs"]["loans"],
        format!("dataset.loans@{}", dataset[0])
    );
    assert!(
        record.get("commit").is_none(),
        "not a Git repository: {record}"
    );
    let state = root.state();
    for address in [
        "workspace",
        "compute.here",
        "dataset.loans",
        "job.train",
        "model.scorer",
    ] {
        assert!(
            state.get(format!("{WORKSPACE}/{address}")).is_some(),
            "{address} missing from the state: {state}"
        );
    }

    // A second apply has nothing to do either.
    let noop = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    noop.ok();
    assert!(noop.stdout.contains("No changes"), "{}", noop.both());
}

/// Editing one CSV row plans a new dataset version, the run it triggers and the model
/// version that run produces, in that order; after apply, the model's lineage names the
/// new dataset version and the Git commit.
#[test]
fn data_change_retrains_and_records_lineage() {
    let root = manifests(&Job::default());
    let head = root.git_commit_all("initial manifests");
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let first_dataset = root.committed("datasets", "loans");
    let first_model = root.committed("models", "scorer");
    assert_eq!(first_dataset.len(), 1);
    let first_record = root.store_json(&format!("models/scorer/{}/_model.json", first_model[0]));
    assert_eq!(first_record["commit"], head.as_str());

    root.edit_row(99_000);
    let plan = root.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    plan.code(2);
    let order: Vec<&str> = plan
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().split_once(' '))
        .filter(|(symbol, _)| ["+", "~", "▶", "-", "-/+", "»"].contains(symbol))
        .map(|(_, address)| address)
        .filter(|a| a.starts_with(WORKSPACE))
        .collect();
    assert_eq!(
        order,
        ["risk/dataset.loans", "risk/job.train", "risk/model.scorer"],
        "{}",
        plan.both()
    );
    insta::with_settings!({filters => vec![
        (regex_escape(&root.path().display().to_string()).as_str(), "[ROOT]"),
    ]}, {
        insta::assert_snapshot!("data_change_plan", plan.stdout);
    });

    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();

    let datasets = root.committed("datasets", "loans");
    assert_eq!(datasets.len(), 2, "{datasets:?}");
    let new_dataset = datasets.iter().find(|v| **v != first_dataset[0]).unwrap();
    let state = root.state();
    let run_id = state["risk/job.train"]["value"]["run_id"].as_str().unwrap();
    assert_eq!(
        state["risk/dataset.loans"]["value"]["version"].as_str(),
        Some(new_dataset.as_str())
    );
    assert_eq!(
        state["risk/model.scorer"]["value"]["version"].as_str(),
        Some(run_id),
        "a trained model's version is its run id"
    );

    let record = root.store_json(&format!("models/scorer/{run_id}/_model.json"));
    assert_eq!(
        record["inputs"]["loans"],
        format!("dataset.loans@{new_dataset}")
    );
    assert_eq!(record["job"], "train");
    assert_eq!(record["run_id"], run_id);
    assert_eq!(
        record["commit"],
        head.as_str(),
        "uncommitted edit on top of HEAD"
    );
    assert_eq!(record["metrics"]["auc"], 0.75);
    let version = root.store_json(&format!("datasets/loans/{new_dataset}/_version.json"));
    assert_eq!(version["commit"], head.as_str());
    let run = root.store_json(&format!("runs/train/{run_id}/_run.json"));
    assert_eq!(
        run["inputs"]["loans"],
        format!("dataset.loans@{new_dataset}")
    );
    assert_eq!(run["commit"], head.as_str());

    // The model holds what the job made from the new data.
    let model_file = root
        .store()
        .join(format!("models/scorer/{run_id}/model.bin"));
    let model_text = std::fs::read_to_string(model_file).unwrap();
    assert!(model_text.contains("L2,22,99000,0"), "{model_text}");

    // Committing the edit changes nothing to apply: versions follow content, not commits.
    root.git_commit_all("new data");
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
}

/// `plan -o` then `apply <file>` does exactly what was saved, even if the manifests grew
/// meanwhile; applying the same file again is refused as stale.
#[test]
fn saved_plan_is_applied_exactly_once() {
    let root = manifests(&Job::default());
    let plan_file = root.scratch().join("plan.json");
    let plan_path = plan_file.display().to_string();
    let made = root.cairn(&["plan", "ROOT", "-o", &plan_path]);
    made.ok();
    assert!(made.stderr.contains("Saved the plan"), "{}", made.both());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    let planned: Vec<&str> = saved["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(planned.len(), 5, "{planned:?}");

    // A dataset declared after the plan was made is not part of it.
    root.write(
        "risk/extra.toml",
        "[dataset.extra]\nsource = \"data/extra/\"\nformat = \"csv\"\n",
    );
    root.write("risk/data/extra/x.csv", "a,b\n1,2\n");

    let apply = root.cairn(&["apply", &plan_path]);
    apply.ok();
    assert!(
        apply.stdout.contains("Apply complete: 5 succeeded"),
        "{}",
        apply.both()
    );
    assert!(!apply.stderr.contains("dataset.extra"), "{}", apply.both());
    assert!(root.committed("datasets", "extra").is_empty());
    let state = root.state();
    let applied: Vec<&str> = state
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = planned.clone();
    expected.sort();
    assert_eq!(applied, expected);

    let again = root.cairn(&["apply", &plan_path]);
    again.code(1);
    assert!(again.stderr.contains("stale"), "{}", again.both());
    assert_eq!(root.state(), state, "a refused plan changes nothing");

    // A fresh plan has only the new dataset.
    let next = root.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    next.code(2);
    assert!(
        next.stdout.contains("+ risk/dataset.extra"),
        "{}",
        next.both()
    );
    assert!(
        next.stdout
            .contains("Plan: 1 to add, 0 to change, 0 to destroy, 0 to run"),
        "{}",
        next.both()
    );
}

/// Editing a data file in place after it was applied must not change the stored
/// version: a committed version's files keep the hashes its `_version.json` lists.
#[test]
fn editing_data_in_place_keeps_stored_versions_intact() {
    let root = manifests(&Job::default());
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    root.edit_row(12_345);
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    for version in root.committed("datasets", "loans") {
        let marker = root.store_json(&format!("datasets/loans/{version}/_version.json"));
        for f in marker["files"].as_array().unwrap() {
            let stored = root.store().join(f["key"].as_str().unwrap());
            assert_eq!(
                sha256_file(&stored),
                f["sha256"].as_str().unwrap(),
                "{} of version {version} no longer has the bytes its marker lists",
                f["key"]
            );
        }
    }
}

/// A job that writes to its input folder must change neither the user's data nor the
/// stored dataset version.
#[test]
fn a_job_writing_to_its_input_changes_nothing_else() {
    let script = format!(
        "echo tampered >> \"$1/loans.csv\"\n{}",
        crate::support::TRAIN
    );
    let root = manifests(&Job::script(script));
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let source = std::fs::read_to_string(root.path().join("risk/data/loans/loans.csv")).unwrap();
    assert_eq!(
        source,
        crate::support::LOANS_CSV,
        "the job edited the repository's data"
    );
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
}

/// `cairn status` shows what the apply left: each resource with its version, the last
/// apply, and no lock.
#[test]
fn status_shows_applied_versions_and_the_last_apply() {
    let root = manifests(&Job::default());
    let before = root.cairn(&["status", "ROOT"]);
    before.ok();
    assert!(before.stdout.contains("never applied"), "{}", before.both());

    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let dataset = root.committed("datasets", "loans");
    let model = root.committed("models", "scorer");

    let status = root.cairn(&["status", "ROOT", "--format", "json"]);
    status.ok();
    let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let ws = &report["workspaces"][0];
    assert_eq!(ws["workspace"], WORKSPACE);
    assert_eq!(ws["last_apply"]["success"], true);
    assert!(ws["lock"].is_null(), "{ws}");
    let version = |address: &str| {
        ws["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == format!("{WORKSPACE}/{address}"))
            .map(|r| r["version"].clone())
            .unwrap_or_else(|| panic!("{address} missing: {ws}"))
    };
    assert_eq!(version("dataset.loans"), dataset[0].as_str());
    assert_eq!(version("model.scorer"), model[0].as_str());
    assert_eq!(
        version("job.train"),
        model[0].as_str(),
        "a job's version is its run"
    );

    let text = root.cairn(&["status", "ROOT"]);
    text.ok();
    assert!(text.stdout.contains(&dataset[0]), "{}", text.both());
    assert!(text.stdout.contains("succeeded"), "{}", text.both());
}

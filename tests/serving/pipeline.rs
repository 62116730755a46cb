//! The example's pipeline (`credit-risk/pipeline.toml`): prep → train → evaluate and
//! batch scoring → rollout, as one plan. Editing a row of the raw loans plans the whole
//! chain; a second apply runs nothing; a change to the prep step's command re-runs prep
//! and everything after it, and nothing before it.

use serde_json::Value;

use super::{Repo, WS};

/// The addresses a plan's text acts on, in order (`  ▶ credit-risk/job.prep-loans`).
fn acted_on(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|l| l.trim().split_once(&format!(" {WS}/")))
        .filter(|(symbol, _)| ["+", "~", "-", "▶", "»"].contains(symbol))
        .map(|(_, address)| address.to_string())
        .collect()
}

#[test]
fn one_edited_row_plans_prep_train_evaluate_score_and_rollout_and_a_step_change_only_what_follows()
{
    let repo = Repo::example("steps = [100]\nstep_wait = \"0s\"\n");
    repo.apply().ok();
    let first_model = repo.model_version();

    // The batch scores and the evaluation are datasets the runs wrote, with lineage.
    let scores = repo.state("credit-risk/dataset.application-scores")["version"]
        .as_str()
        .unwrap()
        .to_string();
    let store = repo.root.join(".cairn/store");
    let read = |key: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(store.join(key)).unwrap()).unwrap()
    };
    let version = read(&format!(
        "datasets/application-scores/{scores}/_version.json"
    ));
    assert_eq!(
        version["produced_by"]["job"], "score-applications",
        "{version}"
    );
    assert_eq!(
        version["produced_by"]["inputs"]["model"],
        format!("model.risk-scorer@{first_model}"),
        "{version}"
    );
    let scored =
        std::fs::read_to_string(store.join(version["files"][0]["key"].as_str().unwrap())).unwrap();
    assert!(
        scored.starts_with("application_id,score\nA200000,0."),
        "{scored}"
    );
    let evaluation = repo.state("credit-risk/job.evaluate-risk")["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = read(&format!("runs/evaluate-risk/{evaluation}/_run.json"));
    let auc = run["metrics"]["auc"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&auc), "the holdout AUC: {run}");

    // One edited row: the whole chain, in one plan, in dependency order.
    repo.edit_data();
    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    assert_eq!(
        acted_on(&plan.stdout),
        [
            "dataset.loans",
            "job.prep-loans",
            "dataset.loans-holdout",
            "dataset.loans-train",
            "job.train-risk",
            "model.risk-scorer",
            "job.evaluate-risk",
            "dataset.risk-evaluation",
            "job.score-applications",
            "dataset.application-scores",
            "endpoint.risk-api",
        ],
        "{}",
        plan.stdout
    );
    let apply = repo.apply();
    apply.ok();
    // The retrain's metrics against the run it replaces, in the apply's output and the
    // journal.
    assert!(
        apply
            .both()
            .contains(&format!("against run {first_model})"))
            && apply.both().contains("auc "),
        "{}",
        apply.both()
    );
    assert_ne!(repo.model_version(), first_model);
    let serving = repo.deployments();
    assert!(
        serving
            .iter()
            .filter(|d| d.2 > 0)
            .all(|d| d.1.starts_with(&repo.model_version())),
        "the new version {} serves: {serving:?}",
        repo.model_version()
    );

    // Applied twice: nothing runs.
    let again = repo.apply();
    again.ok();
    assert!(again.stdout.contains("No changes"), "{}", again.both());

    // The prep step's command: prep and everything after it, not the raw data.
    let path = repo.root.join(WS).join("pipeline.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"--share\", \"0.2\"", "\"--share\", \"0.25\""),
    )
    .unwrap();
    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    let acted = acted_on(&plan.stdout);
    assert_eq!(
        acted.first().map(String::as_str),
        Some("job.prep-loans"),
        "{}",
        plan.stdout
    );
    assert!(
        !acted.contains(&"dataset.loans".to_string()),
        "{}",
        plan.stdout
    );
    for after in [
        "job.train-risk",
        "job.evaluate-risk",
        "job.score-applications",
        "endpoint.risk-api",
    ] {
        assert!(
            acted.contains(&after.to_string()),
            "{after}: {}",
            plan.stdout
        );
    }
}

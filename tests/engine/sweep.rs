//! Sweeps: every combination of a job's `params` is a trial run, `parallel` at a time;
//! the best by `pick` becomes the job's run and its model version, with every trial's
//! parameters and metrics in the lineage.

use crate::support::{manifests, toml_string, Job, Root};

/// "Trains" by writing its parameters as the model and `auc = lr * 10 + l2`.
const TRIAL: &str = r#"echo "lr=$3 l2=$CAIRN_PARAM_L2" > "$2/model.bin"
echo "{\"auc\": $(( $3 * 10 + CAIRN_PARAM_L2 ))}" > "$2/metrics.json""#;

fn with_sweep(script: &str, sweep: &str) -> Root {
    let root = manifests(&Job::default());
    root.write(
        "risk/train.toml",
        &format!(
            "[job.train]\n\
             compute = \"compute.here\"\n\
             command = [\"sh\", \"-c\", {}, \"train\", \"{{{{ inputs.loans }}}}\", \"{{{{ outputs.model }}}}\", \"{{{{ params.lr }}}}\"]\n\
             inputs = {{ loans = \"dataset.loans\" }}\n\
             outputs = {{ model = \"model.scorer\" }}\n\n\
             [job.train.sweep]\n{sweep}\n\
             [model.scorer]\n\
             from_job = \"job.train\"\n\
             format = \"custom\"\n",
            toml_string(script)
        ),
    );
    root
}

#[test]
fn the_best_trial_becomes_the_model_version_with_every_trial_in_its_lineage() {
    let root = with_sweep(
        TRIAL,
        "params = { lr = [1, 3, 2], l2 = [0, 1] }\npick = \"max(auc)\"\nparallel = 2\n",
    );
    let plan = root.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("a sweep of 6 trials (2 at a time), the best by max(auc) kept"),
        "{}",
        plan.both()
    );
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    assert!(
        apply
            .both()
            .contains("6 trials, kept trial 5 (l2=1, lr=3) with auc = 31"),
        "{}",
        apply.both()
    );

    let run_id = root.state()["risk/job.train"]["value"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let model = root.store_json(&format!("models/scorer/{run_id}/_model.json"));
    assert_eq!(model["metrics"]["auc"], 31, "{model}");
    let trials = model["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6, "{model}");
    let picked: Vec<_> = trials.iter().filter(|t| t["picked"] == true).collect();
    assert_eq!(picked.len(), 1, "{model}");
    assert_eq!(picked[0]["params"]["lr"], "3");
    assert_eq!(picked[0]["params"]["l2"], "1");
    assert!(
        trials
            .iter()
            .all(|t| t["status"] == "succeeded" && t["metrics"]["auc"].is_number()),
        "{model}"
    );
    // The version's files are the picked trial's.
    let file = model["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "model.bin")
        .unwrap();
    let key = file["key"].as_str().unwrap();
    let bytes = std::fs::read_to_string(root.store().join(key)).unwrap();
    assert_eq!(bytes.trim(), "lr=3 l2=1");
    let run = root.store_json(&format!("runs/train/{run_id}/_run.json"));
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trials"].as_array().unwrap().len(), 6);
    assert_eq!(run["outputs"]["model"], format!("model.scorer@{run_id}"));

    let again = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    again.ok();
    assert!(again.stdout.contains("No changes"), "{}", again.both());
}

#[test]
fn a_sweep_whose_trials_all_fail_keeps_nothing_and_says_why() {
    let root = with_sweep(
        "echo nope >&2; exit 3",
        "params = { lr = [1, 2] }\npick = \"max(auc)\"\n",
    );
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.code(1);
    assert!(
        apply
            .both()
            .contains("the sweep kept nothing: every trial failed"),
        "{}",
        apply.both()
    );
    assert!(root.committed("models", "scorer").is_empty());
}

#[test]
fn sweep_mistakes_are_caught_at_validate() {
    let root = with_sweep(
        TRIAL,
        "params = { rate = [1, 2], l2 = [] }\npick = \"best(auc)\"\n",
    );
    let run = root.cairn(&["validate", "ROOT"]);
    run.code(1);
    let text = run.both();
    for expected in [
        "`{{ params.lr }}` names no parameter of a sweep",
        "parameter `l2` has no values to try",
        "`best(auc)` is not a way to pick a trial",
    ] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
}

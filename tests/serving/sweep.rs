//! A sweep on the example: `job.train-risk` with six trials of the reference trainer's
//! learning rate and L2 penalty, two at a time; the best by AUC becomes the model version
//! the endpoint serves, and its lineage lists all six trials.

use serde_json::Value;

use super::{Repo, WS};

#[test]
fn a_six_trial_sweep_runs_two_at_a_time_and_serves_the_best() {
    let repo = Repo::example("steps = [100]\nstep_wait = \"0s\"\n");
    let path = repo.root.join(WS).join("train.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Each trial notes how many trials run beside it, holding its place for 0.4 s.
    let seen = repo.root.join("concurrency");
    let script = r#"mkdir -p "$SEEN"; touch "$SEEN/$$"; ls "$SEEN" | wc -l >> "$SEEN.counts"; sleep 0.4; rm "$SEEN/$$"; exec "$CAIRN" train --data "$1" --out "$2" --label defaulted --learning-rate "$3" --l2 "$4""#;
    let command = text
        .lines()
        .find(|l| l.starts_with("command = "))
        .unwrap()
        .to_string();
    let text = text.replace(
        &command,
        &format!(
            "command = [\"sh\", \"-c\", {}, \"trial\", \"{{{{ inputs.loans }}}}\", \"{{{{ outputs.model }}}}\", \"{{{{ params.lr }}}}\", \"{{{{ params.l2 }}}}\"]\nenv = {{ SEEN = {}, CAIRN = {} }}",
            toml::Value::String(script.to_string()),
            toml::Value::String(seen.display().to_string()),
            toml::Value::String(env!("CARGO_BIN_EXE_cairn").to_string()),
        ),
    );
    let text = text.replacen(
        "\n[model.risk-scorer]",
        "\n[job.train-risk.sweep]\nparams = { lr = [0.3, 0.1, 0.03], l2 = [0, 0.01] }\npick = \"max(auc)\"\nparallel = 2\n\n[model.risk-scorer]",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("a sweep of 6 trials (2 at a time), the best by max(auc) kept"),
        "{}",
        plan.both()
    );
    repo.apply().ok();

    let version = repo.model_version();
    let store = repo.root.join(".cairn/store");
    let read = |key: String| -> Value {
        serde_json::from_str(&std::fs::read_to_string(store.join(&key)).unwrap())
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let model = read(format!("models/risk-scorer/{version}/_model.json"));
    let trials = model["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6, "{model:#}");
    let aucs: Vec<f64> = trials
        .iter()
        .map(|t| t["metrics"]["auc"].as_f64().unwrap())
        .collect();
    let best = aucs.iter().copied().fold(f64::MIN, f64::max);
    let picked: Vec<&Value> = trials.iter().filter(|t| t["picked"] == true).collect();
    assert_eq!(picked.len(), 1);
    assert_eq!(
        picked[0]["metrics"]["auc"].as_f64(),
        Some(best),
        "{model:#}"
    );
    assert_eq!(model["metrics"]["auc"].as_f64(), Some(best));

    // Two trials ran at once, never three.
    let counts: Vec<usize> = std::fs::read_to_string(repo.root.join("concurrency.counts"))
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert_eq!(counts.iter().max(), Some(&2), "{counts:?}");

    // `cairn runs` lists the sweep once, its trials under it, the kept one marked.
    let runs = repo.cairn(&["runs", ".", "--job", "train-risk"]);
    runs.ok();
    let listed: Vec<&str> = runs
        .stdout
        .lines()
        .filter(|l| l.contains("credit-risk/job.train-risk"))
        .collect();
    assert_eq!(listed.len(), 1, "{}", runs.stdout);
    assert!(listed[0].contains(&version), "{}", runs.stdout);
    let trial_lines: Vec<&str> = runs
        .stdout
        .lines()
        .filter(|l| l.contains(" trial "))
        .collect();
    assert_eq!(trial_lines.len(), 6, "{}", runs.stdout);
    let kept: Vec<&&str> = trial_lines.iter().filter(|l| l.contains('✓')).collect();
    assert_eq!(kept.len(), 1, "{}", runs.stdout);
    assert!(kept[0].contains(&format!("auc {best}")), "{}", runs.stdout);

    // The endpoint serves the picked trial's model.
    let serving = repo.deployments();
    assert!(
        serving
            .iter()
            .filter(|d| d.2 > 0)
            .all(|d| d.1.starts_with(&version)),
        "{serving:?}"
    );
}

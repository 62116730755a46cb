//! Quality gates before a rollout (`promote_if` on an endpoint): a retrained version
//! whose metrics fail a condition is registered but not rolled out, the apply says which
//! condition failed with which values and exits 1, and the serving version keeps all
//! traffic; conditions on the serving version are skipped when nothing serves yet, and
//! once a version with metrics serves, a condition naming a metric it lacks is refused at
//! plan time.

use super::Repo;

/// Puts `promote_if = [...]` on the example's endpoint.
fn gate(repo: &Repo, conditions: &[&str]) {
    let path = repo.root.join("credit-risk/serve.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = match text.find("promote_if = ") {
        Some(at) => {
            let end = at + text[at..].find('\n').unwrap();
            format!("{}{}", &text[..at], &text[end + 1..])
        }
        None => text,
    };
    let listed: Vec<String> = conditions.iter().map(|c| format!("{c:?}")).collect();
    let at = text
        .find("\n\n[endpoint.risk-api.deployments.blue]")
        .unwrap();
    let text = format!(
        "{}\npromote_if = [{}]{}",
        &text[..at],
        listed.join(", "),
        &text[at..]
    );
    std::fs::write(&path, text).unwrap();
}

#[test]
fn a_version_failing_its_quality_gate_is_registered_but_not_rolled_out() {
    let repo = Repo::example("steps = [100]\nstep_wait = \"5s\"\n");
    gate(&repo, &["auc >= 0.5", "auc >= serving.auc - 0.2"]);
    let first = repo.apply();
    first.ok();
    assert!(
        first
            .stderr
            .contains("promote_if: blue: `auc >= 0.5` holds (auc = 0."),
        "{}",
        first.both()
    );
    assert!(
        first
            .stderr
            .contains("`auc >= serving.auc - 0.2` skipped (nothing serves to compare with)"),
        "{}",
        first.both()
    );
    let v1 = repo.model_version();

    // Now that a version with metrics serves, a condition naming a metric it does not
    // record is refused at plan time, at the condition.
    gate(&repo, &["aucc >= 0.5"]);
    let plan = repo.cairn(&["plan", "."]);
    assert_eq!(plan.code, 1, "{}", plan.both());
    assert!(plan.stderr.contains("unknown-metric"), "{}", plan.both());
    assert!(
        plan.stderr.contains("credit-risk/serve.toml:"),
        "{}",
        plan.both()
    );
    assert!(
        plan.stderr.contains("did you mean `auc`?"),
        "{}",
        plan.both()
    );

    // A retrain that must reach an AUC it can't: planned with its gate, then refused.
    gate(&repo, &["auc >= 0.99", "loss <= serving.loss + 1"]);
    repo.add_rows(5);
    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("promoted only if auc >= 0.99, loss <= serving.loss + 1"),
        "{}",
        plan.both()
    );
    let apply = repo.apply();
    assert_eq!(apply.code, 1, "{}", apply.both());
    assert!(
        apply.stdout.contains("the new model version is registered but not promoted: blue: `auc >= 0.99` fails (auc = 0.")
            || apply.stderr.contains("the new model version is registered but not promoted: blue: `auc >= 0.99` fails (auc = 0."),
        "{}",
        apply.both()
    );
    assert!(
        !apply.both().contains("`loss <= serving.loss + 1` fails"),
        "{}",
        apply.both()
    );
    // Registered, lineage kept; the old version serves everything.
    let v2 = repo.model_version();
    assert_ne!(v2, v1);
    let serving = repo.deployments();
    assert_eq!(serving.len(), 1, "{serving:?}");
    assert_eq!(serving[0].2, 100);
    assert!(serving[0].1.starts_with(&v1), "{serving:?} {v1}");
}

/// `promote_if` on the model gates every endpoint that follows it (an unpinned
/// deployment): a retrain failing it is registered, the plan shows the gate beside the
/// rollout, and the apply refuses to move traffic.
#[test]
fn a_models_own_quality_gate_holds_back_the_endpoints_that_follow_it() {
    let repo = Repo::example("steps = [100]\nstep_wait = \"5s\"\n");
    repo.apply().ok();
    let v1 = repo.model_version();

    let path = repo.root.join("credit-risk/train.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "format = \"safetensors\"",
        "format = \"safetensors\"\npromote_if = [\"auc >= 0.999\"]",
        1,
    );
    std::fs::write(&path, text).unwrap();
    repo.add_rows(5);
    let plan = repo.cairn(&["plan", "."]);
    plan.ok();
    assert!(
        plan.stdout.contains("promoted only if auc >= 0.999"),
        "{}",
        plan.both()
    );
    let apply = repo.apply();
    assert_eq!(apply.code, 1, "{}", apply.both());
    assert!(
        apply.both().contains(
            "the new model version is registered but not promoted: blue: `auc >= 0.999` fails (auc = 0."
        ),
        "{}",
        apply.both()
    );
    let v2 = repo.model_version();
    assert_ne!(v2, v1);
    let serving = repo.deployments();
    assert_eq!(serving.len(), 1, "{serving:?}");
    assert!(serving[0].1.starts_with(&v1), "{serving:?} {v1}");

    // The held-back version is in the store with its metrics: the next plan (and the PR
    // comment, in markdown) says how they compare with the serving version's.
    let metrics = |version: &str| -> serde_json::Value {
        let path = repo.root.join(format!(
            ".cairn/store/models/risk-scorer/{version}/_model.json"
        ));
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        record["metrics"].clone()
    };
    let expected = cairn::metric_delta::describe(&metrics(&v2), &metrics(&v1), &["auc"]).unwrap();
    assert!(expected.starts_with("auc 0."), "{expected}");
    for format in ["text", "markdown"] {
        let plan = repo.cairn(&["plan", ".", "--format", format]);
        plan.ok();
        assert!(
            plan.stdout.contains(&expected),
            "{format}: {expected}\n{}",
            plan.stdout
        );
    }
}

/// The acceptance: a deliberately worse model (the loans' labels shuffled) is
/// trained and registered but refused by `promote_if`, the apply names the condition
/// with both values, and the old version keeps serving every request, under load.
#[test]
fn a_model_trained_on_shuffled_labels_is_refused_without_a_failed_request() {
    let repo = Repo::example("steps = [50, 100]\nstep_wait = \"5s\"\n");
    gate(&repo, &["auc >= serving.auc - 0.05"]);
    repo.apply().ok();
    let v1 = repo.model_version();

    // Every label moved to another row: the features no longer say anything.
    let path = repo.root.join("credit-risk/data/loans/loans.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let labels: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    let n = labels.len();
    for (i, line) in lines[1..].iter_mut().enumerate() {
        let at = line.rfind(',').unwrap();
        line.truncate(at + 1);
        line.push_str(&labels[(i * 7 + 3) % n]);
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let load = super::Load::start(repo.addr(), repo.key());
    let apply = repo.apply();
    let report = load.finish();
    assert_eq!(apply.code, 1, "{}", apply.both());
    let both = apply.both();
    assert!(
        both.contains(
            "registered but not promoted: blue: `auc >= serving.auc - 0.05` fails (auc = 0."
        ) && both.contains(", serving.auc = 0."),
        "{both}"
    );
    assert!(report.requests > 0);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report.versions.iter().all(|v| v == &v1),
        "only the old version answered"
    );
    let v2 = repo.model_version();
    assert_ne!(v2, v1, "the worse version is registered");
    let serving = repo.deployments();
    assert!(
        serving
            .iter()
            .filter(|d| d.2 > 0)
            .all(|d| d.1.starts_with(&v1)),
        "{serving:?}"
    );
}

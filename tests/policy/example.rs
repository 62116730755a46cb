//! The example repository against the shipped policies, and the acceptance scenario:
//! an unauthenticated endpoint in the production workspace `credit-risk`.

use serde_json::Value;

use crate::{policy_block, Repo};

/// Both example workspaces (and the example's own `policies/`) pass the shipped rules.
#[test]
fn the_examples_pass_the_shipped_policies() {
    let repo = Repo::empty();
    crate::support::copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests"),
        repo.path(),
    );
    let _ = std::fs::remove_dir_all(repo.path().join(".cairn"));
    let eval = repo.cairn(&["policy", "eval", "ROOT", "--format", "json"]);
    eval.ok();
    let report: Value = serde_json::from_str(&eval.stdout).unwrap();
    assert_eq!(report.get("deny"), None, "{}", eval.both());
    let policies: Vec<&str> = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        policies.contains(&"policies/endpoints.rego"),
        "{policies:?}"
    );
    assert!(
        policies.contains(&"policies/registries.rego"),
        "{policies:?}"
    );

    assert_eq!(report.get("warn"), None, "{}", eval.both());

    // Without the example's approved registries, the images go unchecked, with a warning.
    repo.remove("policies/registries.rego");
    let eval = repo.cairn(&["policy", "eval", "ROOT"]);
    eval.ok();
    assert!(
        eval.stdout.contains("2 image(s) not checked"),
        "{}",
        eval.both()
    );

    // Approving another registry denies the imaging images, naming job and file.
    repo.write(
        "policies/registries.rego",
        "package cairn.config\n\napproved_registries := [\"ghcr.io/acme\"]\n",
    );
    let eval = repo.cairn(&["policy", "eval", "ROOT"]);
    eval.code(1);
    assert!(
        eval.stdout.contains(
            "imaging/job.train-pneumonia (imaging/train.toml): image registry.stmarys.example/"
        ),
        "{}",
        eval.both()
    );
}

fn unauthenticated() -> Repo {
    let repo = Repo::example("credit-risk");
    repo.edit(
        "credit-risk/serve.toml",
        "auth = \"key\"",
        "auth = \"none\"",
    );
    repo
}

#[test]
fn the_unmodified_workspace_plans() {
    let repo = Repo::example("credit-risk");
    let plan = repo.cairn(&["plan", "ROOT", "--format", "json"]);
    plan.ok();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["policy"]["deny"], Value::Null);
    assert!(plan["policy"]["policies"].as_array().unwrap().len() >= 5);
}

#[test]
fn an_unauthenticated_production_endpoint_is_denied() {
    let repo = unauthenticated();
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.code(1);
    // Deny comes first, naming the resource and its file; the plan still follows.
    assert!(
        plan.stdout.starts_with("Denied by policy"),
        "{}",
        plan.both()
    );
    assert!(plan.stdout.contains("Plan: "), "{}", plan.both());
    assert!(
        plan.stderr
            .contains("the plan is denied by policy: 1 message above"),
        "{}",
        plan.both()
    );
    insta::assert_snapshot!("deny_text", policy_block(&plan.stdout));

    // `--detailed-exitcode` would say 2 for changes: a deny is still 1.
    repo.cairn(&["plan", "ROOT", "--detailed-exitcode"]).code(1);

    let json = repo.cairn(&["plan", "ROOT", "--format", "json"]);
    json.code(1);
    let plan: Value = serde_json::from_str(&json.stdout).unwrap();
    insta::assert_json_snapshot!("deny_json", plan["policy"]["deny"]);
    assert_eq!(plan["policy"]["deny"][0]["file"], "credit-risk/serve.toml");
    assert_eq!(
        plan["policy"]["deny"][0]["address"],
        "credit-risk/endpoint.risk-api"
    );

    let markdown = repo.cairn(&["plan", "ROOT", "--format", "markdown"]);
    markdown.code(1);
    let block: String = markdown
        .stdout
        .lines()
        .take_while(|l| !l.starts_with("**Plan:**"))
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("deny_markdown", block);
}

#[test]
fn a_committed_unauthenticated_endpoint_is_denied_at_the_revision() {
    let repo = unauthenticated();
    let bad = repo.commit_all("no auth");
    repo.edit(
        "credit-risk/serve.toml",
        "auth = \"none\"",
        "auth = \"key\"",
    );
    repo.commit_all("auth again");
    repo.cairn(&["plan", "ROOT"]).ok();
    let plan = repo.cairn(&["plan", "ROOT", "--rev", &bad]);
    plan.code(1);
    assert!(
        plan.stdout
            .contains("credit-risk/endpoint.risk-api (credit-risk/serve.toml)"),
        "{}",
        plan.both()
    );
}

#[test]
fn apply_refuses_a_denied_plan_and_locks_nothing() {
    let repo = unauthenticated();
    repo.commit_all("no auth");
    let apply = repo.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.code(1);
    assert!(
        apply
            .stdout
            .contains("credit-risk/endpoint.risk-api (credit-risk/serve.toml)"),
        "{}",
        apply.both()
    );
    assert!(
        apply
            .stderr
            .contains("refusing to apply: the plan is denied by policy, nothing was applied"),
        "{}",
        apply.both()
    );
    assert!(!apply.stdout.contains("Apply complete"), "{}", apply.both());
    // The lock was taken and released around planning: the store holds no file at all
    // (no state, no lock, no dataset, no journal record).
    let store = repo.path().join(".cairn/store");
    assert_eq!(files_under(&store), Vec::<String>::new());
}

#[test]
fn apply_refuses_a_saved_plan_the_policies_now_deny() {
    let repo = Repo::example("credit-risk");
    repo.cairn(&["plan", "ROOT", "-o", "plan.json"]).ok();
    repo.edit(
        "credit-risk/serve.toml",
        "auth = \"key\"",
        "auth = \"none\"",
    );
    let apply = repo.cairn(&["apply", "plan.json", "--auto-approve"]);
    apply.code(1);
    assert!(apply.stderr.contains("auth = \"none\""), "{}", apply.both());
    assert!(!repo.path().join(".cairn/store/.cairn/state.json").exists());
}

/// Every file under `dir`, relative and sorted; none when it doesn't exist.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

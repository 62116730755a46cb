//! Policies a repository brings: its own rules and data, replacing a shipped rule,
//! reading them at a revision, and a syntax error.

use serde_json::Value;

use crate::Repo;

const TWO_REPLICAS: &str = r#"package acme.serving

# Endpoints serve with at most one replica per deployment here.
deny contains {"msg": msg, "address": address} if {
	some address, r in input.resources
	r.kind == "endpoint"
	some name, d in r.spec.deployments
	d.replicas > data.acme.max_replicas
	msg := sprintf("deployment %s has %d replicas, over %d", [name, d.replicas, data.acme.max_replicas])
}

warn contains "every plan is watched" if input.plan.summary
"#;

#[test]
fn repository_policies_and_data_are_evaluated() {
    let repo = Repo::example("credit-risk");
    repo.write("policies/serving.rego", TWO_REPLICAS);
    repo.write("policies/limits.json", r#"{"acme": {"max_replicas": 1}}"#);
    let plan = repo.cairn(&["plan", "ROOT", "--format", "json"]);
    plan.code(1);
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let deny = &plan["policy"]["deny"][0];
    assert_eq!(deny["policy"], "policies/serving.rego");
    assert_eq!(deny["message"], "deployment blue has 2 replicas, over 1");
    assert_eq!(deny["file"], "credit-risk/serve.toml");
    // The plan is in the input: the warning sees its summary.
    assert_eq!(
        plan["policy"]["warn"][0]["message"],
        "every plan is watched"
    );

    repo.write("policies/limits.json", r#"{"acme": {"max_replicas": 2}}"#);
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout.starts_with(
            "Policy warnings:\n  ! every plan is watched\n      policies/serving.rego\n"
        ),
        "{}",
        plan.both()
    );
}

#[test]
fn a_repository_file_replaces_the_shipped_one_of_the_same_name() {
    let repo = Repo::example("credit-risk");
    repo.edit(
        "credit-risk/serve.toml",
        "auth = \"key\"",
        "auth = \"none\"",
    );
    repo.cairn(&["plan", "ROOT"]).code(1);
    repo.write(
        "policies/endpoints.rego",
        "# This repository allows endpoints without authentication.\npackage cairn.endpoints\n",
    );
    repo.cairn(&["plan", "ROOT"]).ok();
}

#[test]
fn the_policies_committed_at_the_revision_are_used() {
    let repo = Repo::example("credit-risk");
    repo.write("policies/serving.rego", TWO_REPLICAS);
    repo.write("policies/limits.json", r#"{"acme": {"max_replicas": 1}}"#);
    let strict = repo.commit_all("one replica at most");
    repo.remove("policies/serving.rego");
    repo.cairn(&["plan", "ROOT"]).ok();
    let plan = repo.cairn(&["plan", "ROOT", "--rev", &strict]);
    plan.code(1);
    assert!(
        plan.stdout
            .contains("deployment blue has 2 replicas, over 1"),
        "{}",
        plan.both()
    );
    let lenient = repo.commit_all("any number of replicas");
    repo.cairn(&["plan", "ROOT", "--rev", &lenient]).ok();
}

#[test]
fn a_syntax_error_names_the_place() {
    let repo = Repo::example("credit-risk");
    repo.write(
        "policies/broken.rego",
        "package acme.broken\n\ndeny contains msg {\n\tmsg := \"old syntax\"\n}\n",
    );
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.code(1);
    assert_eq!(plan.stdout, "", "{}", plan.both());
    insta::assert_snapshot!("syntax_error", plan.stderr);
    let validate = repo.cairn(&["validate", "ROOT"]);
    validate.code(1);
    assert!(
        validate
            .stderr
            .contains("policies/broken.rego:3:19: `if` keyword is required before rule body"),
        "{}",
        validate.both()
    );
    let test = repo.cairn(&["policy", "test", "--root", "ROOT"]);
    test.code(1);
    assert!(
        test.stderr.contains("policies/broken.rego:3:"),
        "{}",
        test.both()
    );
}

#[test]
fn a_message_of_the_wrong_shape_is_an_error() {
    let repo = Repo::example("credit-risk");
    repo.write(
        "policies/odd.rego",
        "package acme.odd\n\ndeny contains 42 if true\n",
    );
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.code(1);
    assert!(
        plan.stderr
            .contains("`data.acme.odd.deny` (policies/odd.rego) produced 42"),
        "{}",
        plan.both()
    );
}

const CHANGES: &str = r#"package acme.changes

# What a policy sees of the plan: the changes that do something, and a count of the rest.
warn contains msg if {
	listed := [c.address | some c in input.plan.resource_changes]
	msg := sprintf("listed %v; %d unchanged", [listed, input.plan.summary.unchanged])
}
"#;

#[test]
fn the_plan_policies_see_lists_only_the_changes_that_do_something() {
    let repo = Repo::empty();
    repo.write(
        "lab/workspace.toml",
        "[workspace]\nenvironment = \"dev\"\nstore = \"file://.cairn/store\"\n",
    );
    repo.write(
        "lab/data.toml",
        "[dataset.a]\nsource = \"data/a/\"\nformat = \"csv\"\n",
    );
    repo.write("lab/data/a/part.csv", "x,y\n1,2\n");
    repo.write("policies/changes.rego", CHANGES);
    repo.cairn(&["apply", "ROOT", "--auto-approve"]).ok();

    repo.write(
        "lab/data.toml",
        "[dataset.a]\nsource = \"data/a/\"\nformat = \"csv\"\n\n[dataset.b]\nsource = \"data/b/\"\nformat = \"csv\"\n",
    );
    repo.write("lab/data/b/part.csv", "x,y\n3,4\n");
    let plan = repo.cairn(&["plan", "ROOT", "--format", "json"]);
    plan.ok();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(
        plan["policy"]["warn"][0]["message"], "listed [\"lab/dataset.b\"]; 2 unchanged",
        "{plan:#}"
    );
}

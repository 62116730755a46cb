//! `cairn policy test` and `cairn policy eval`.

use crate::Repo;

#[test]
fn the_shipped_tests_pass() {
    let repo = Repo::example("credit-risk");
    let run = repo.cairn(&["policy", "test", "--root", "ROOT"]);
    run.ok();
    assert!(run.stdout.contains("PASS data.cairn.endpoints_test.test_unauthenticated_endpoint_in_production_is_denied (policies/endpoints_test.rego:"), "{}", run.both());
    assert!(!run.stdout.contains("FAIL"), "{}", run.both());
    assert!(
        run.stdout.lines().last().unwrap().ends_with("0 failed."),
        "{}",
        run.both()
    );
}

const RULE: &str = "package acme.names\n\ndeny contains msg if {\n\tsome address, r in input.resources\n\tcontains(r.name, \"_\")\n\tmsg := sprintf(\"%s: use dashes, not underscores\", [address])\n}\n";

const TESTS: &str = "package acme.names\n\ntest_dashes_pass if {\n\tcount(deny) == 0 with input as {\"resources\": {\"a/job.x-y\": {\"name\": \"x-y\"}}}\n}\n\ntest_underscores_are_denied if {\n\tcount(deny) == 1 with input as {\"resources\": {\"a/job.x_y\": {\"name\": \"x_y\"}}}\n}\n";

#[test]
fn repository_tests_pass_and_fail() {
    let repo = Repo::empty();
    repo.write("policies/names.rego", RULE);
    repo.write("policies/names_test.rego", TESTS);
    let folder = format!("{}/policies", repo.path().display());
    let run = repo.cairn(&["policy", "test", &folder]);
    run.ok();
    assert_eq!(
        run.stdout,
        format!(
            "PASS data.acme.names.test_dashes_pass ({root}/policies/names_test.rego:3)\n\
             PASS data.acme.names.test_underscores_are_denied ({root}/policies/names_test.rego:7)\n\
             2 tests: 2 passed, 0 failed.\n",
            root = repo.path().display()
        )
    );

    // The rule breaks: a test fails, and the command says so.
    repo.write("policies/names.rego", &RULE.replace("\"_\"", "\"-\""));
    let run = repo.cairn(&["policy", "test", &folder]);
    run.code(1);
    assert!(
        run.stdout.contains("FAIL data.acme.names.test_dashes_pass"),
        "{}",
        run.both()
    );
    assert!(
        run.stdout.ends_with("2 tests: 0 passed, 2 failed.\n"),
        "{}",
        run.both()
    );

    // Without a folder: the shipped tests and the repository's, from the root.
    let run = repo.cairn(&["policy", "test", "--root", "ROOT"]);
    run.code(1);
    assert!(
        run.stdout.contains("PASS data.cairn.compute_test."),
        "{}",
        run.both()
    );
    assert!(
        run.stdout
            .contains("FAIL data.acme.names.test_dashes_pass (policies/names_test.rego:3)"),
        "{}",
        run.both()
    );
}

#[test]
fn a_folder_without_tests_is_an_error() {
    let repo = Repo::empty();
    repo.write("policies/names.rego", RULE);
    let folder = format!("{}/policies", repo.path().display());
    let run = repo.cairn(&["policy", "test", &folder]);
    run.code(1);
    assert!(
        run.stderr.contains("no policy tests found"),
        "{}",
        run.both()
    );
    let run = repo.cairn(&[
        "policy",
        "test",
        &format!("{}/missing", repo.path().display()),
    ]);
    run.code(1);
    assert!(
        run.stderr.contains("is not a folder of policies"),
        "{}",
        run.both()
    );
}

#[test]
fn eval_shows_the_input_and_the_outcome() {
    let repo = Repo::example("credit-risk");
    let input = repo.cairn(&["policy", "eval", "ROOT", "--input"]);
    input.ok();
    let input: serde_json::Value = serde_json::from_str(&input.stdout).unwrap();
    let endpoint = &input["resources"]["credit-risk/endpoint.risk-api"];
    assert_eq!(endpoint["kind"], "endpoint");
    assert_eq!(endpoint["file"], "credit-risk/serve.toml");
    assert_eq!(endpoint["spec"]["auth"], "key");
    assert_eq!(
        input["workspaces"]["credit-risk"]["environment"],
        "production"
    );
    assert_eq!(input["plan"], serde_json::Value::Null);

    let eval = repo.cairn(&["policy", "eval", "ROOT"]);
    eval.ok();
    assert!(
        eval.stdout.starts_with("No policy findings: "),
        "{}",
        eval.both()
    );

    repo.edit(
        "credit-risk/serve.toml",
        "auth = \"key\"",
        "auth = \"none\"",
    );
    let eval = repo.cairn(&["policy", "eval", "ROOT"]);
    eval.code(1);
    assert!(
        eval.stdout
            .contains("credit-risk/endpoint.risk-api (credit-risk/serve.toml)"),
        "{}",
        eval.both()
    );
}

#[test]
fn help_describes_the_commands() {
    let repo = Repo::empty();
    let help = repo.cairn(&["policy", "--help"]);
    help.ok();
    assert!(
        help.stdout.contains("test") && help.stdout.contains("eval"),
        "{}",
        help.both()
    );
    let help = repo.cairn(&["policy", "test", "--help"]);
    help.ok();
    assert!(help.stdout.contains("test_*"), "{}", help.both());
}

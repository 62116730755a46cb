//! The comment template on hand-made plans: snapshots of the whole comment (policy
//! results first, per-workspace table, touched resources, graph, field diffs, rollout
//! steps, commit), and splits of large plans.

use cairn::changes::{ChangedFiles, PullRequestChanges, Touched};
use cairn::github::comment::{self, CommentInput, COMMENT_TEMPLATE, GITHUB_COMMENT_LIMIT};
use cairn::plan::Plan;
use serde_json::json;

/// A plan of two workspaces: data changed → retrain → new model → rollout, a compute
/// update, a removed endpoint, and one policy denial and one warning.
pub fn sample_plan() -> Plan {
    let plan = json!({
        "format_version": "1",
        "cairn_version": "0.1.0",
        "revision": "3f9a2c1d5e6f708192a3b4c5d6e7f8091a2b3c4d",
        "source": {"root": "manifests", "rev": "feature/retrain"},
        "workspaces": [
            {"name": "risk", "store": "file://.cairn/store", "state_serial": 4},
            {"name": "fraud", "store": "s3://bank-ml/fraud", "state_serial": 9}
        ],
        "resource_changes": [
            {"address": "risk/workspace", "workspace": "risk", "kind": "workspace", "name": "risk",
             "actions": ["no-op"], "reason": "unchanged", "before": null, "after": null},
            {"address": "risk/dataset.loans", "workspace": "risk", "kind": "dataset", "name": "loans",
             "actions": ["update"], "reason": "dataset.loans changed: 1 file modified",
             "before": {"version": "a1b2c3d"}, "after": {"version": "e4f5a6b"},
             "changes": [{"path": "version", "before": "a1b2c3d", "after": "e4f5a6b"}],
             "depends_on": ["risk/workspace"]},
            {"address": "risk/job.train-risk", "workspace": "risk", "kind": "job", "name": "train-risk",
             "actions": ["run"], "reason": "input dataset.loans changed (a1b2c3d → e4f5a6b)",
             "before": null, "after": {"run_id": "r-77aa"},
             "changes": [
                {"path": "inputs.loans", "before": "dataset.loans@a1b2c3d", "after": "dataset.loans@e4f5a6b"},
                {"path": "script", "before": "echo train\ncp a b\n", "after": "echo train\ncp a c\necho done\n"}
             ],
             "depends_on": ["risk/dataset.loans", "risk/compute.branch-dc"]},
            {"address": "risk/model.risk-scorer", "workspace": "risk", "kind": "model", "name": "risk-scorer",
             "actions": ["create"], "reason": "job.train-risk will produce version r-77aa",
             "before": null, "after": {"version": "r-77aa"},
             "changes": [{"path": "version", "after": "r-77aa"}],
             "depends_on": ["risk/job.train-risk"]},
            {"address": "risk/endpoint.risk-api", "workspace": "risk", "kind": "endpoint", "name": "risk-api",
             "actions": ["rollout"], "reason": "deployment green follows model.risk-scorer: r-12ff → r-77aa",
             "before": null, "after": null,
             "changes": [{"path": "deployments.green.model", "before": "model.risk-scorer@r-12ff", "after": "model.risk-scorer@r-77aa"}],
             "depends_on": ["risk/model.risk-scorer"],
             "rollout": {"from": {"green": 100}, "to": {"green-r-77aa": 100},
                         "steps": [{"green": 90, "green-r-77aa": 10}, {"green": 50, "green-r-77aa": 50}, {"green-r-77aa": 100}],
                         "step_wait": "30s", "max_error_rate": 0.01, "max_p99_ms": 250, "auto_rollback": true,
                         "summary": "3 steps, 30s each; gates: error rate ≤ 1%, p99 ≤ 250 ms; auto rollback"}},
            {"address": "fraud/compute.gpu-east", "workspace": "fraud", "kind": "compute", "name": "gpu-east",
             "actions": ["update"], "reason": "max_gpus changed | idle_shutdown <30m>",
             "before": {"max_gpus": 4}, "after": {"max_gpus": 8},
             "changes": [{"path": "max_gpus", "before": 4, "after": 8}]},
            {"address": "fraud/endpoint.legacy", "workspace": "fraud", "kind": "endpoint", "name": "legacy",
             "actions": ["delete"], "reason": "no longer declared",
             "before": {"port": 8081}, "after": null,
             "changes": [{"path": "port", "before": 8081}]}
        ],
        "notes": ["workspace `edge` is not planned: compute.k8s runs on Kubernetes, which is not available yet"],
        "policy": {
            "policies": ["policies/compute.rego", "policies/endpoints.rego"],
            "deny": [{"policy": "policies/endpoints.rego", "message": "endpoint risk-api in production must require auth",
                      "address": "risk/endpoint.risk-api", "file": "risk/serve.toml"}],
            "warn": [{"policy": "policies/compute.rego", "message": "compute gpu-east has no idle_shutdown"}]
        },
        "summary": {"add": 1, "change": 2, "destroy": 1, "run": 1, "rollout": 1, "unchanged": 1}
    });
    serde_json::from_value(plan).expect("the sample plan is a plan")
}

fn sample_changes() -> PullRequestChanges {
    PullRequestChanges {
        changed: ChangedFiles {
            base: "0123456789abcdef0123456789abcdef01234567".into(),
            head: "3f9a2c1d5e6f708192a3b4c5d6e7f8091a2b3c4d".into(),
            files: vec!["risk/data/loans/loans.csv".into(), "risk/train.toml".into()],
            outside: 1,
        },
        touched: vec![
            Touched {
                address: "risk/dataset.loans".into(),
                files: vec!["risk/data/loans/loans.csv".into()],
            },
            Touched {
                address: "risk/job.train-risk".into(),
                files: vec!["risk/train.toml".into()],
            },
        ],
        note: None,
    }
}

/// A plan with `n` updated jobs, each with a long field diff: about 1,000 bytes each.
pub fn big_plan(n: usize, seed: &str) -> Plan {
    let mut plan = sample_plan();
    plan.policy = None;
    let template = plan.resource_changes[2].clone();
    plan.resource_changes.truncate(1);
    for i in 0..n {
        let mut c = template.clone();
        c.address = format!("risk/job.train-{i:04}");
        c.name = format!("train-{i:04}");
        c.actions = vec![cairn::plan::Action::Update];
        c.depends_on = Vec::new();
        // Not `env.*`: a comment hides every `env` value, and these must show.
        c.changes = (0..8)
            .map(|f| cairn::plan::FieldChange {
                path: format!("config.VAR_{f}"),
                before: Some(json!(format!("{seed}-old-{}", "x".repeat(40)))),
                after: Some(json!(format!("{seed}-new-{}", "y".repeat(40)))),
            })
            .collect();
        plan.resource_changes.push(c);
    }
    plan.summary.change = n;
    plan.summary.run = 0;
    plan.summary.add = 0;
    plan.summary.destroy = 0;
    plan.summary.rollout = 0;
    plan
}

#[test]
fn the_comment_shows_policy_first_then_the_plan() {
    let plan = sample_plan();
    let changes = sample_changes();
    let key = comment::key_for(&plan);
    assert_eq!(key, "fraud,risk");
    let parts = comment::build(
        &CommentInput {
            plan: &plan,
            key: &key,
            pr: Some(&changes),
        },
        COMMENT_TEMPLATE,
    )
    .unwrap();
    assert_eq!(parts.len(), 1);
    let body = &parts[0];
    assert!(body.starts_with("<!-- cairn:plan key=fraud,risk part=1/1 -->\n"));
    let deny = body.find("Denied by policy").unwrap();
    let warn = body.find("Policy warnings").unwrap();
    let table = body.find("| workspace |").unwrap();
    assert!(deny < warn && warn < table, "{body}");
    insta::assert_snapshot!("comment_full", body);
}

#[test]
fn comments_are_deterministic() {
    let plan = sample_plan();
    let input = CommentInput {
        plan: &plan,
        key: "k",
        pr: None,
    };
    let a = comment::build(&input, COMMENT_TEMPLATE).unwrap();
    let b = comment::build(&input, COMMENT_TEMPLATE).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_plan_without_changes_or_policies() {
    let mut plan = sample_plan();
    plan.resource_changes.truncate(1);
    plan.summary = Default::default();
    plan.summary.unchanged = 1;
    plan.policy = Some(cairn::policy::PolicyReport {
        policies: vec!["policies/compute.rego".into()],
        ..Default::default()
    });
    plan.notes.clear();
    let changes = PullRequestChanges {
        touched: Vec::new(),
        ..sample_changes()
    };
    let parts = comment::build(
        &CommentInput {
            plan: &plan,
            key: "risk",
            pr: Some(&changes),
        },
        COMMENT_TEMPLATE,
    )
    .unwrap();
    insta::assert_snapshot!("comment_no_changes", parts.join("\n=== next part ===\n"));
}

#[test]
fn a_big_plan_splits_into_parts_that_fit() {
    let plan = big_plan(220, "a");
    let parts = comment::build(
        &CommentInput {
            plan: &plan,
            key: "risk",
            pr: None,
        },
        COMMENT_TEMPLATE,
    )
    .unwrap();
    let total: usize = parts.iter().map(String::len).sum();
    assert!(total > 200_000, "{total}");
    assert!(parts.len() >= 4, "{}", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert!(
            p.len() <= GITHUB_COMMENT_LIMIT,
            "part {}: {}",
            i + 1,
            p.len()
        );
        assert_eq!(
            p.lines().filter(|l| l.starts_with("```")).count() % 2,
            0,
            "part {} cuts a code block",
            i + 1
        );
        assert_eq!(
            p.matches("<details>").count(),
            p.matches("</details>").count()
        );
    }
    // Every resource is in exactly one part, in order.
    let all = parts.concat();
    let mut last = 0;
    for i in 0..220 {
        let at = all
            .find(&format!("<code>risk/job.train-{i:04}</code>"))
            .unwrap();
        assert!(at > last);
        last = at;
    }
    assert!(parts[0].contains("```mermaid"));
    assert!(parts[0].contains("more changed resources are not drawn"));
    assert!(parts.last().unwrap().contains("Planned by Cairn"));
}

//! Autoscaling on the local target: a deployment with `replicas = { min, max,
//! target_rps, scale_down_window }` runs `min` replicas; under a request loop the
//! supervisor scales it up to what the router's measured rate asks for (capped at `max`)
//! without a failed request, `cairn status` shows the change, a plan doesn't count the
//! autoscaler's count as drift, a retrain's new revision starts as scaled as the one it
//! replaces (and that apply's journal record has the autoscaler's changes since the one
//! before), and once the load stops the replicas go back to `min` after the window.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::wait_until;
use super::{Load, Repo, ENDPOINT};

/// What `cairn status --format json` says of the endpoint's deployments.
fn deployments(repo: &Repo) -> Vec<Value> {
    let run = repo.cairn(&["status", ".", "--format", "json"]);
    run.ok();
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    status["workspaces"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|ws| ws["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["address"] == ENDPOINT)
        .flat_map(|e| e["deployments"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The replicas of the revision that takes traffic.
fn serving_replicas(repo: &Repo) -> Option<u64> {
    deployments(repo)
        .into_iter()
        .find(|d| d["weight"].as_u64() == Some(100))
        .and_then(|d| d["ready_replicas"].as_u64())
}

#[test]
fn a_deployment_scales_with_its_load_between_its_bounds() {
    let repo = Repo::example("steps = [50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\n");
    let serve = std::fs::read_to_string(repo.root.join("credit-risk/serve.toml")).unwrap();
    let autoscaled = serve.replace(
        "replicas = 1\n",
        "replicas = { min = 1, max = 3, target_rps = 20, scale_down_window = \"4s\" }\n",
    );
    assert_ne!(autoscaled, serve);
    repo.write("serve.toml", &autoscaled);
    let first = repo.apply();
    first.ok();
    assert_eq!(serving_replicas(&repo), Some(1), "{}", first.both());

    // A request loop (a few hundred a second) asks for more than 3 × 20: up to `max`.
    let load = Load::start(repo.addr(), repo.key());
    let stepped = Instant::now();
    wait_until(
        "the supervisor to scale to 3",
        Duration::from_secs(30),
        || serving_replicas(&repo) == Some(3),
    );
    // Figures, not asserts: how long the step took to be answered (the rate the
    // autoscaler reads is the router's over the last 10 s).
    eprintln!(
        "scaled 1 → 3 in {:.1} s after the load step",
        stepped.elapsed().as_secs_f64()
    );
    let blue = deployments(&repo)
        .into_iter()
        .find(|d| d["weight"].as_u64() == Some(100))
        .unwrap();
    assert_eq!(blue["autoscale"]["min"], 1, "{blue}");
    assert_eq!(blue["autoscale"]["max"], 3, "{blue}");
    let scaled = blue["scaled"].as_array().unwrap();
    assert_eq!(scaled.last().unwrap()["to"], 3, "{blue}");
    assert!(
        scaled.last().unwrap()["requests_per_s"].as_f64().unwrap() > 40.0,
        "{blue}"
    );
    let text = repo.cairn(&["status", "."]);
    assert!(
        text.stdout
            .contains("autoscaled 1–3 replicas at 20 req/s each; last scaled"),
        "{}",
        text.both()
    );
    // The autoscaler's count is not drift.
    let plan = repo.cairn(&["plan", ".", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.both());

    // A retrain under the same load: the new revision starts with 3 replicas.
    repo.add_rows(5);
    let apply = repo.apply();
    apply.ok();
    assert!(apply.stderr.contains("×3"), "{}", apply.both());
    // That apply's journal record has what the autoscaler did since the one before.
    let history = repo.cairn(&["history", ".", "--format", "json"]);
    history.ok();
    let records: Value = serde_json::from_str(&history.stdout).unwrap();
    let last = records.as_array().unwrap().last().unwrap();
    let endpoint = last["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["address"] == ENDPOINT)
        .unwrap();
    let autoscaled: Vec<&Value> = endpoint["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "autoscaled")
        .collect();
    assert!(
        autoscaled
            .iter()
            .any(|e| e["deployment"] == "blue" && e["from"] == 1 && e["to"] == 3),
        "{endpoint}"
    );
    let report = load.finish();
    let stopped = Instant::now();
    assert!(report.requests > 100, "{report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let log = std::fs::read_to_string(repo.root.join(".cairn/serving/supervisor.log")).unwrap();
    assert!(log.contains("scaled 1 → "), "{log}");

    // No load: back to `min` once the window has passed.
    wait_until(
        "the supervisor to scale back to 1",
        Duration::from_secs(40),
        || serving_replicas(&repo) == Some(1),
    );
    eprintln!(
        "scaled back to 1 in {:.1} s after the load stopped (scale_down_window 4 s)",
        stopped.elapsed().as_secs_f64()
    );
    let log = std::fs::read_to_string(repo.root.join(".cairn/serving/supervisor.log")).unwrap();
    assert!(log.contains("→ 1 replicas"), "{log}");
}

//! Input-drift monitoring on the example: `[endpoint.risk-api.monitor]` makes the router
//! capture requests; `cairn drift` compares what the endpoint received with the training
//! data of the serving model version. Requests like the training rows are no drift (exit
//! 0); the same rows with incomes tripled are (exit 2), and the report names `income`.

use serde_json::{json, Value};

use super::{agent, Repo, WS};

/// Rows of the example's loans (the training data's distribution), as requests of 20
/// rows each; `scale` multiplies every income.
fn send_loans(repo: &Repo, scale: f64) {
    let text = std::fs::read_to_string(repo.root.join(WS).join("data/loans/loans.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Value> = lines
        .map(|line| {
            let mut row = serde_json::Map::new();
            for (name, cell) in header.iter().zip(line.split(',')) {
                if *name == "loan_id" || *name == "defaulted" {
                    continue;
                }
                let mut value: f64 = cell.parse().unwrap();
                if *name == "income" {
                    value *= scale;
                }
                row.insert(name.to_string(), json!(value));
            }
            Value::Object(row)
        })
        .collect();
    let agent = agent();
    let key = repo.key();
    for chunk in rows.chunks(20) {
        let response = agent
            .post(format!("http://{}/v1/predict", repo.addr()))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .send(json!({ "rows": chunk }).to_string())
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

fn commit(repo: &Repo) {
    let git = git2::Repository::open(&repo.root)
        .or_else(|_| git2::Repository::init(&repo.root))
        .unwrap();
    let mut index = git.index().unwrap();
    index
        .add_all(["credit-risk"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = git.find_tree(index.write_tree().unwrap()).unwrap();
    let who = git2::Signature::now("tester", "tester@example.com").unwrap();
    let parent = git.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    git.commit(Some("HEAD"), &who, &who, "manifests", &tree, &parents)
        .unwrap();
}

/// Waits until the capture holds `n` requests (the router writes on its own thread).
fn wait_for_capture(repo: &Repo, n: usize) {
    let dir = repo
        .root
        .join(".cairn/serving/capture/credit-risk.risk-api");
    let count = || -> usize {
        std::fs::read_dir(&dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .count()
                })
                .sum()
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(count() >= n, "{} of {n} requests captured", count());
}

#[test]
fn drift_compares_captured_requests_with_the_training_data_and_names_the_moved_feature() {
    let repo = Repo::example("steps = [100]\nstep_wait = \"0s\"\n");
    let path = repo.root.join(WS).join("serve.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[endpoint.risk-api.monitor]\nsample = 1.0\nmax_psi = 0.2\n"),
    )
    .unwrap();
    commit(&repo);
    repo.apply().ok();

    // No requests yet: said, not an error.
    let quiet = repo.cairn(&["drift", ".", "--rev", "HEAD"]);
    quiet.ok();
    assert!(
        quiet.stdout.contains("no requests captured yet"),
        "{}",
        quiet.both()
    );

    // The training data's own distribution: no drift.
    send_loans(&repo, 1.0);
    wait_for_capture(&repo, 20);
    let same = repo.cairn(&["drift", ".", "--rev", "HEAD", "--format", "json"]);
    same.ok();
    let report: Value = serde_json::from_str(&same.stdout).unwrap();
    let inputs = &report["inputs"][0];
    assert_eq!(
        inputs["endpoint"], "credit-risk/endpoint.risk-api",
        "{report:#}"
    );
    assert!(
        inputs["training_data"]
            .as_str()
            .unwrap()
            .starts_with("dataset.loans-train@"),
        "{report:#}"
    );
    assert_eq!(inputs["rows"], 400, "{report:#}");
    let features = inputs["features"].as_array().unwrap();
    assert_eq!(
        features.len(),
        8,
        "every feature the model reads: {report:#}"
    );
    assert!(features.iter().all(|f| f["drifted"] == false), "{report:#}");

    // Incomes tripled: income drifts, the rest does not.
    send_loans(&repo, 3.0);
    wait_for_capture(&repo, 40);
    let moved = repo.cairn(&["drift", ".", "--rev", "HEAD"]);
    moved.code(2);
    assert!(
        moved
            .stdout
            .contains("1 of 8 features of 800 captured rows drifted"),
        "{}",
        moved.both()
    );
    assert!(moved.stdout.contains("! income: PSI"), "{}", moved.stdout);
    let markdown = repo.cairn(&["drift", ".", "--rev", "HEAD", "--format", "markdown"]);
    markdown.code(2);
    assert!(
        markdown
            .stdout
            .contains("#### Input drift: `credit-risk/endpoint.risk-api`")
            && markdown.stdout.contains("| `income` |"),
        "{}",
        markdown.stdout
    );
}

//! The example's `radiology-edge` workspace as the quick start applies it (on a free port
//! here): its imported ONNX model (the CNN of `tests/serve/onnx/`) is stored as a model
//! version and served through the router under the endpoint's name, over the Open
//! Inference Protocol, with the endpoint's key; its autoscaling shows in `cairn status`.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::agent;
use super::support::{copy_dir, free_port, Run};

#[test]
fn the_examples_edge_workspace_serves_its_onnx_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("repo");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/radiology-edge");
    copy_dir(&example, &root.join("radiology-edge"));
    let port = free_port();
    let serve = root.join("radiology-edge/serve.toml");
    let text = std::fs::read_to_string(&serve).unwrap();
    let moved = text.replace("port = 8091", &format!("port = {port}"));
    assert_ne!(moved, text, "the example's port moved");
    std::fs::write(&serve, moved).unwrap();
    let cairn = |args: &[&str]| {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .current_dir(&root)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run::from(output, started.elapsed())
    };
    /// Stops what the test started, however it ends.
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args(["supervise", "--stop", "--state"])
                .arg(self.0.join(".cairn/serving"))
                .output();
        }
    }
    let _stop = Stop(&root);

    cairn(&["apply", ".", "--auto-approve"]).ok();
    let key =
        std::fs::read_to_string(root.join(".cairn/serving/keys/radiology-edge.triage-edge.key"))
            .unwrap()
            .trim()
            .to_string();
    let agent = agent();
    let url = format!("http://127.0.0.1:{port}/v2/models/triage-edge/infer");
    // Two images: all mid-grey, and a gradient.
    let grey = vec![0.5f32; 256];
    let gradient: Vec<f32> = (0..256).map(|i| i as f32 / 255.0).collect();
    let body = json!({"inputs": [{
        "name": "image", "shape": [2, 1, 16, 16], "datatype": "FP32",
        "data": grey.iter().chain(&gradient).collect::<Vec<_>>(),
    }]})
    .to_string();
    let mut response = agent
        .post(&url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .send(body.clone())
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(answer["model_name"], "triage-edge", "{answer}");
    let outputs = answer["outputs"].as_array().unwrap();
    let probabilities = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    let label = outputs.iter().find(|o| o["name"] == "label").unwrap();
    assert_eq!(probabilities["shape"], json!([2, 3]), "{answer}");
    assert_eq!(label["shape"], json!([2]), "{answer}");
    let p: Vec<f64> = probabilities["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (row, labels) in p.chunks(3).zip(label["data"].as_array().unwrap()) {
        // A softmax, and its argmax is the label.
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
        let argmax = (0..3).max_by(|a, b| row[*a].total_cmp(&row[*b])).unwrap();
        assert_eq!(labels.as_u64(), Some(argmax as u64), "{answer}");
    }
    // Without the key: refused.
    let response = agent
        .post(&url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    assert_eq!(response.status(), 401);

    let status = cairn(&["status", "."]);
    status.ok();
    assert!(
        status
            .stdout
            .contains("autoscaled 1–2 replicas at 50 req/s each"),
        "{}",
        status.both()
    );
    assert!(
        status
            .stdout
            .contains("radiology-edge/model.pneumonia-detector"),
        "{}",
        status.both()
    );
    // Which model version serves (an imported model has no run, so no metrics).
    assert!(
        status
            .stdout
            .contains("serving blue 100%: model.pneumonia-detector@"),
        "{}",
        status.both()
    );
}

//! The Open Inference Protocol on `cairn serve`: ONNX models spoken to by Triton's own
//! HTTP client (`tritonclient[http]`, from PyPI) with every output checked against
//! `onnxruntime` within 1e-5 (`oip_client.py`), and the reference model over the same
//! routes.
//!
//! The Python packages come from `.ci/venv` (`.ci/run` installs them); without them the
//! ONNX tests fail saying so rather than pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::process::Serving;
use crate::{agent, get, post, rows, trained, wait_ready, VERSION};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test models (`onnx/make_models.py` wrote them).
fn onnx_model(name: &str) -> PathBuf {
    repo_root().join("tests/serve/onnx").join(name)
}

/// The Python that has `tritonclient` and `onnxruntime`.
fn python() -> PathBuf {
    let python = repo_root().join(".ci/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import tritonclient.http, onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import tritonclient.http, onnxruntime and numpy: install them with \
         `python3 -m venv .ci/venv && .ci/venv/bin/pip install 'tritonclient[http]' onnxruntime numpy` \
         (.ci/run does)",
        python.display()
    );
    python
}

/// POSTs `body` to `path`, returning the status and the JSON answer.
fn post_json(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let response = agent()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Serves `model`, then has `oip_client.py` speak to it; returns the client's summary.
fn check_with_tritonclient(model: &str) -> Value {
    let python = python();
    let dir = onnx_model(model);
    let serving = Serving::spawn(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--name",
            "blue",
            "--model-name",
            model,
        ],
    );
    let addr = serving.addr();
    wait_ready(addr);
    let out = Command::new(python)
        .arg(repo_root().join("tests/serve/oip_client.py"))
        .args([&addr.to_string(), model, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{model}: {}{}\n--- cairn serve:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        serving.stderr()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[track_caller]
fn assert_matches_onnxruntime(summary: &Value) {
    let largest = summary["largest_difference"].as_f64().unwrap();
    assert!(largest <= 1e-5, "{summary}");
    assert!(summary["elements"].as_u64().unwrap() > 0, "{summary}");
    for case in ["shape", "datatype"] {
        assert!(summary["refused"][case].is_string(), "{summary}");
    }
}

#[test]
fn a_tabular_mlp_answers_tritonclient_as_onnxruntime_does() {
    let summary = check_with_tritonclient("mlp");
    assert_matches_onnxruntime(&summary);
    assert_eq!(
        summary["refused"]["datatype"],
        "input `features`: datatype INT32, but the model takes FP32"
    );
}

#[test]
fn a_small_cnn_answers_tritonclient_as_onnxruntime_does() {
    let summary = check_with_tritonclient("cnn");
    assert_matches_onnxruntime(&summary);
    assert_eq!(
        summary["refused"]["shape"],
        "input `image`: shape [1, 1, 16, 16, 2] does not fit the model's [-1, 1, 16, 16] (-1: any size)"
    );
}

#[test]
fn fp64_and_int64_tensors_answer_tritonclient_as_onnxruntime_does() {
    assert_matches_onnxruntime(&check_with_tritonclient("mixed"));
}

#[test]
fn an_onnx_models_metadata_names_its_tensors_and_the_batch_is_dynamic() {
    let serving = Serving::spawn(
        &onnx_model("cnn"),
        &["--listen", "127.0.0.1:0", "--model-name", "cnn"],
    );
    let addr = serving.addr();
    wait_ready(addr);
    let agent = agent();
    let metadata = get(&agent, addr, "/v2/models/cnn").json();
    assert_eq!(metadata["platform"], "onnx");
    assert_eq!(
        metadata["inputs"],
        json!([{"name": "image", "datatype": "FP32", "shape": [-1, 1, 16, 16]}])
    );
    assert_eq!(
        metadata["outputs"],
        json!([
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ])
    );
    assert_eq!(get(&agent, addr, "/v2/health/live").status, 200);
    assert_eq!(get(&agent, addr, "/v2/models/cnn/ready").status, 200);
    let unknown = crate::try_get(&agent, addr, "/v2/models/mlp").unwrap();
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json(),
        json!({"error": "unknown model `mlp`; this server serves `cnn`"})
    );
    // /v1/predict is the reference model's.
    let predict = post(&agent, addr, r#"{"rows": [{"x": 1}]}"#);
    assert_eq!(predict.status, 404, "{}", predict.body);
    assert!(
        predict.body.contains("POST /v2/models/cnn/infer"),
        "{}",
        predict.body
    );
}

#[test]
fn the_reference_model_speaks_the_protocol_with_the_scores_of_v1_predict() {
    let trained = trained();
    let serving = Serving::spawn(
        &trained.dir,
        &["--listen", "127.0.0.1:0", "--model-name", "risk"],
    );
    let addr = serving.addr();
    wait_ready(addr);
    let agent = agent();
    let metadata = get(&agent, addr, "/v2/models/risk").json();
    let features: Vec<String> = trained.model.features.clone();
    assert_eq!(metadata["versions"], json!([VERSION]));
    assert_eq!(metadata["parameters"]["features"], json!(features));
    assert_eq!(
        metadata["inputs"],
        json!([{"name": "input", "datatype": "FP64", "shape": [-1, features.len()]}])
    );

    let (json_rows, maps) = rows(5, 3);
    let v1 = post(&agent, addr, &json!({ "rows": json_rows }).to_string()).json();
    let data: Vec<Vec<f64>> = maps
        .iter()
        .map(|row| features.iter().map(|f| row[f]).collect())
        .collect();
    let request = json!({"id": "r1", "inputs": [
        {"name": "input", "shape": [5, features.len()], "datatype": "FP64", "data": data}
    ]});
    let (status, answer) = post_json(addr, "/v2/models/risk/infer", &request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "r1");
    assert_eq!(answer["model_version"], VERSION);
    assert_eq!(answer["outputs"][0]["name"], "score");
    assert_eq!(answer["outputs"][0]["shape"], json!([5]));
    assert_eq!(answer["outputs"][0]["data"], v1["scores"]);

    // The version route, and a version that isn't served.
    let at = format!("/v2/models/risk/versions/{VERSION}/infer");
    assert_eq!(post_json(addr, &at, &request).0, 200);
    let (status, answer) = post_json(addr, "/v2/models/risk/versions/9/infer", &request);
    assert_eq!(status, 404, "{answer}");
    // A bad tensor is 400 naming the input, and counts as an error in /metrics.
    let bad = json!({"inputs": [{"name": "input", "shape": [2, features.len()], "datatype": "FP64", "data": [1.0]}]});
    let (status, answer) = post_json(addr, "/v2/models/risk/infer", &bad);
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"],
        format!(
            "input `input`: shape [2, {}] has {} elements but the data has 1",
            features.len(),
            2 * features.len()
        )
    );
    let metrics = get(&agent, addr, "/metrics").body;
    assert!(
        metrics.contains("cairn_requests_total{code=\"400\"} 1"),
        "{metrics}"
    );
}

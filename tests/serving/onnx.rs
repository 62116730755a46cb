//! An endpoint serving an ONNX model on the local target: `cairn serve` runs it (tract),
//! clients speak the Open Inference Protocol to it through the router under the
//! endpoint's name, and a new model version rolls out under a continuous request loop
//! with no failed request, the gates measured by the router.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{agent, walked, Repo};

/// The endpoint's name: the model's name in the protocol's routes.
const MODEL_NAME: &str = "risk-api";

fn onnx_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/serve/onnx")
        .join(name)
}

/// One inference request for the MLP (8 features, 2 rows).
fn infer(agent: &ureq::Agent, addr: SocketAddr, key: &str) -> Result<(u16, Value), String> {
    let body = json!({"inputs": [{
        "name": "features", "shape": [2, 8], "datatype": "FP32",
        "data": [[0.1, -0.2, 0.3, 0.0, 1.0, -1.0, 0.5, 0.25], [1, 1, 1, 1, 1, 1, 1, 1]],
    }]});
    let mut response = agent
        .post(format!("http://{addr}/v2/models/{MODEL_NAME}/infer"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .send(body.to_string())
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Replaces the folder's model with `model`'s.
fn put_model(folder: &Path, model: &str) {
    std::fs::create_dir_all(folder).unwrap();
    std::fs::copy(
        onnx_model(model).join("model.onnx"),
        folder.join("model.onnx"),
    )
    .unwrap();
}

#[test]
fn an_onnx_model_rolls_out_under_load_without_a_failed_request() {
    let repo = Repo::example(
        "steps = [25, 50, 100]\nstep_wait = \"5s\"\nmax_error_rate = 0.01\nmax_p99_ms = 500\nmin_requests = 10\n",
    );
    let source = repo.root.join("..").join("onnx-model");
    put_model(&source, "mlp");
    // The job "trains" by copying the ONNX model in `source` (a folder the test swaps
    // between versions) into its output.
    repo.train_by_copying_as(&source, "onnx");
    let first = repo.apply();
    first.ok();
    let v1 = repo.model_version();

    let agent = agent();
    let key = repo.key();
    let (status, body) = infer(&agent, repo.addr(), &key).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_name"], MODEL_NAME);
    assert_eq!(body["model_version"], v1.as_str());
    assert_eq!(body["outputs"][0]["name"], "probability");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 1]));
    let text = agent
        .get(format!("http://{}/v2/models/{MODEL_NAME}", repo.addr()))
        .header("authorization", format!("Bearer {key}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let metadata: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(metadata["platform"], "onnx", "{metadata}");

    // A new model version (other weights) rolls out while clients keep calling.
    put_model(&source, "mlp-retrained");
    repo.add_rows(1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, addr, key) = (stop.clone(), repo.addr(), key.clone());
        std::thread::spawn(move || {
            let agent = super::agent();
            let started = Instant::now();
            let (mut versions, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(120)
            {
                match infer(&agent, addr, &key) {
                    Ok((200, body)) => {
                        versions.push(body["model_version"].as_str().unwrap_or("?").to_string())
                    }
                    Ok((status, body)) => failures.push(format!("{status}: {body}")),
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (versions, failures)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let second = repo.apply();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (versions, failures) = load.join().unwrap();
    second.ok();
    let v2 = repo.model_version();
    assert_ne!(v1, v2);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        versions.len() + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(versions.len() > 100, "{} requests", versions.len());
    assert!(
        versions.contains(&v1) && versions.contains(&v2),
        "{versions:?}"
    );
    assert_eq!(versions.last(), Some(&v2));
    // Every step was held and passed under the router's measurements, then promoted.
    assert_eq!(
        walked(&repo.last_rollout_events()),
        [
            "step 25",
            "passed 25",
            "step 50",
            "passed 50",
            "step 100",
            "passed 100",
            "promoted"
        ],
        "{}",
        second.both()
    );
}

//! Request capture for input-drift monitoring: the router writes one in every `every`
//! weighted request's body to JSON-lines files, never the key, and a request it captures
//! is answered as any other.

use std::collections::BTreeMap;

use cairn::backend::local::router::Capture;
use sha2::{Digest as _, Sha256};

use crate::{agent, Rig, BODY};

#[test]
fn one_in_every_n_bodies_is_captured_without_the_key() {
    let mut rig = Rig::new(&[("blue", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let key = "s3cret-key-for-capture";
    let mut routes = rig.routes(&[("blue", 100)]);
    routes.key_sha256 = Some(hex::encode(Sha256::digest(key.as_bytes())));
    routes.capture = Some(Capture {
        every: 3,
        dir: dir.path().join("capture"),
        max_bytes: 1 << 20,
    });
    let addr = rig.start_router(routes);
    let agent = agent();
    for _ in 0..30 {
        let reply = agent
            .post(format!("http://{addr}/v1/predict"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .send(BODY)
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let expected: serde_json::Value = serde_json::from_str(BODY).unwrap();
    let read = || -> Vec<serde_json::Value> {
        let Ok(entries) = std::fs::read_dir(dir.path().join("capture")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .flat_map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap();
                assert!(!text.contains(key), "the key was captured: {text}");
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<serde_json::Value>>()
            })
            .collect()
    };
    // The writer runs on its own thread: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read().len() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let lines = read();
    let by_deployment: BTreeMap<String, usize> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l["deployment"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(by_deployment, BTreeMap::from([("blue".to_string(), 10)]));
    assert!(lines.iter().all(|l| l["body"] == expected), "{lines:?}");
    rig.stop_router().unwrap();
}

//! A load figure, not a check: requests/s and latency percentiles of predictions through
//! the router and straight to the one model server behind it, measured with `wrk` (skipped
//! when it is not installed). Run by hand:
//!
//! ```sh
//! cargo test --release --test router -- --ignored --nocapture load
//! ```
//!
//! The server and the router share one 4-thread runtime in this process, and `wrk` runs on
//! the same machine: compare the two lines with each other, not with other machines.

use std::process::Command;

use crate::{Rig, BODY};

#[test]
#[ignore = "a load figure, not a check; run by hand with --release"]
fn load_through_the_router_and_direct() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed; nothing measured");
        return;
    }
    let mut rig = Rig::new(&[("blue", 1)]);
    let router = rig.start_router(rig.routes(&[("blue", 100)]));
    let server = rig.backends["blue"][0].addr;
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("predict.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.body = '{BODY}'\n"
        ),
    )
    .unwrap();
    let seconds = std::env::var("CAIRN_LOAD_SECONDS").unwrap_or_else(|_| "10".into());
    for (label, addr) in [("direct", server), ("router", router), ("direct", server)] {
        let output = Command::new("wrk")
            .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency", "-s"])
            .arg(&script)
            .arg(format!("http://{addr}/v1/predict"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        eprintln!("== {label} ({addr})\n{text}");
    }
    let stats = rig.handle().stats("blue").unwrap();
    assert_eq!(stats.errors, 0);
}

//! The input-drift statistics (`cairn::input_drift`) against reference computations on
//! the same samples: SciPy's `ks_2samp` for the Kolmogorov–Smirnov statistic, and NumPy
//! for the population stability index over the reference's deciles (the definition the
//! module documents), within 1e-9.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn::input_drift::{ks_statistic, numeric_psi};

use crate::Lcg;

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import scipy.stats, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import scipy and numpy: `.ci/venv/bin/pip install scipy numpy` (.ci/run does)",
        python.display()
    );
    python
}

const REFERENCE: &str = r#"
import json, sys
import numpy as np
from scipy.stats import ks_2samp
cases = json.load(open(sys.argv[1]))
out = []
for case in cases:
    r = np.array(case["reference"], dtype=np.float64)
    c = np.array(case["current"], dtype=np.float64)
    rs = np.sort(r)
    n = len(rs)
    edges = np.unique([rs[min(i * n // 10, n - 1)] for i in range(1, 10)])
    # bin = how many edges are <= v
    rb = np.searchsorted(edges, r, side="right")
    cb = np.searchsorted(edges, c, side="right")
    k = len(edges) + 1
    rt = np.maximum(np.bincount(rb, minlength=k) / len(r), 1e-4)
    ct = np.maximum(np.bincount(cb, minlength=k) / len(c), 1e-4)
    psi = float(np.sum((ct - rt) * np.log(ct / rt)))
    ks = float(ks_2samp(r, c).statistic)
    out.append({"psi": psi, "ks": ks})
print(json.dumps(out))
"#;

#[test]
fn psi_and_ks_match_numpy_and_scipy_within_1e_9() {
    let python = python();
    let mut rng = Lcg(11);
    let mut sample = |n: usize, scale: f64, shift: f64, round: bool| -> Vec<f64> {
        (0..n)
            .map(|_| {
                // A skewed distribution: the sum of two uniforms, squared.
                let x = (rng.float() + rng.float()).powi(2) * scale + shift;
                if round {
                    x.round()
                } else {
                    x
                }
            })
            .collect()
    };
    let cases = vec![
        (sample(1000, 1.0, 0.0, false), sample(400, 1.0, 0.0, false)),
        (sample(1000, 1.0, 0.0, false), sample(400, 3.0, 0.5, false)),
        (sample(777, 10.0, 0.0, true), sample(333, 10.0, 2.0, true)),
        (sample(50, 2.0, 0.0, true), sample(2000, 2.0, 0.0, true)),
    ];
    let json: Vec<serde_json::Value> = cases
        .iter()
        .map(|(r, c)| serde_json::json!({"reference": r, "current": c}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_string(&json).unwrap()).unwrap();
    let out = Command::new(python)
        .args(["-c", REFERENCE])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (i, ((r, c), want)) in cases.iter().zip(&expected).enumerate() {
        let psi = numeric_psi(r, c);
        let ks = ks_statistic(r, c);
        let (want_psi, want_ks) = (want["psi"].as_f64().unwrap(), want["ks"].as_f64().unwrap());
        assert!(
            (psi - want_psi).abs() < 1e-9,
            "case {i}: PSI {psi} vs {want_psi}"
        );
        assert!(
            (ks - want_ks).abs() < 1e-9,
            "case {i}: KS {ks} vs {want_ks}"
        );
    }
    // The shifted cases did drift, the same-distribution one did not.
    assert!(numeric_psi(&cases[0].0, &cases[0].1) < 0.1);
    assert!(numeric_psi(&cases[1].0, &cases[1].1) > 0.2);
}

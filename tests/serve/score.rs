//! `cairn score`, the batch-scoring step: the real binary over CSV folders, the
//! reference model's scores checked against `Model::predict`, an ONNX model's against
//! `onnxruntime` within 1e-5, and bad input refused with the file, line and column.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{rows, trained, Lcg};

fn cairn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn the_reference_model_scores_every_row_of_every_file_as_predict_does() {
    let t = trained();
    let data = t.tmp.path().join("batch");
    std::fs::create_dir_all(&data).unwrap();
    // Two files with more rows together than one batch, with a label and an id.
    let (_, maps) = rows(5000, 9);
    let (first, second) = maps.split_at(3000);
    for (name, part) in [("a.csv", first), ("b.csv", second)] {
        let mut csv = String::from("id,age,income,utilization,label\n");
        for (i, row) in part.iter().enumerate() {
            csv.push_str(&format!(
                "{name}-{i},{},{},{},{}\n",
                row["age"],
                row["income"],
                row["utilization"],
                u8::from(row["utilization"] > 0.5)
            ));
        }
        std::fs::write(data.join(name), csv).unwrap();
    }
    let out_dir = t.tmp.path().join("scores");
    let out = cairn(&[
        "score",
        "--model",
        t.dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--id",
        "id",
        "--label",
        "label",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 5000, "{report}");
    assert_eq!(report["files"], 2, "{report}");
    for (name, part) in [("a.csv", first), ("b.csv", second)] {
        let scored = read_csv(&out_dir.join(name));
        assert_eq!(scored[0], ["id", "label", "score"]);
        assert_eq!(scored.len(), part.len() + 1);
        for (i, (line, row)) in scored[1..].iter().zip(part).enumerate() {
            assert_eq!(line[0], format!("{name}-{i}"));
            let expected = t.model.predict(row).unwrap();
            let got: f64 = line[2].parse().unwrap();
            assert!(
                (got - expected).abs() < 1e-9,
                "{name} row {i}: {got} vs {expected}"
            );
        }
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["rows"], 5000.0);
    let auc = metrics["auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc), "{metrics}");
    assert_eq!(report["metrics"]["auc"], metrics["auc"]);
}

#[test]
fn an_onnx_model_scores_rows_as_onnxruntime_does() {
    let python = repo_root().join(".ci/venv/bin/python");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rows.csv");
    let mut csv = String::from("row,f0,f1,f2,f3,f4,f5,f6,f7\n");
    let mut rng = Lcg(3);
    for i in 0..300 {
        let values: Vec<String> = (0..8)
            .map(|_| format!("{:.4}", rng.float() * 4.0 - 2.0))
            .collect();
        csv.push_str(&format!("r{i},{}\n", values.join(",")));
    }
    std::fs::write(&data, csv).unwrap();
    let out_dir = tmp.path().join("scores");
    let model = repo_root().join("tests/serve/onnx/mlp");
    let out = cairn(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--id",
        "row",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let scored = out_dir.join("rows.csv");
    let check = r#"
import csv, sys
import numpy as np
import onnxruntime as ort
model, data, scored = sys.argv[1:4]
rows = list(csv.DictReader(open(data)))
x = np.array([[float(r[f"f{j}"]) for j in range(8)] for r in rows], dtype=np.float32)
session = ort.InferenceSession(model + "/model.onnx", providers=["CPUExecutionProvider"])
expected = session.run(None, {"features": x})[0].reshape(len(rows), -1)
got = list(csv.reader(open(scored)))
assert len(got) == len(rows) + 1, (len(got), len(rows))
largest = 0.0
for r, line, want in zip(rows, got[1:], expected):
    assert line[0] == r["row"], (line, r)
    values = [float(v) for v in line[1:]]
    assert len(values) == len(want), (values, want)
    largest = max(largest, max(abs(a - b) for a, b in zip(values, want)))
print(largest)
"#;
    let verdict = Command::new(&python)
        .args(["-c", check])
        .arg(&model)
        .arg(&data)
        .arg(&scored)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (.ci/run installs onnxruntime there)",
                python.display()
            )
        });
    assert!(verdict.status.success(), "{}", text(&verdict));
    let largest: f64 = String::from_utf8_lossy(&verdict.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        largest <= 1e-5,
        "largest difference from onnxruntime: {largest}"
    );
}

#[test]
fn bad_rows_and_missing_columns_are_refused_with_the_place() {
    let t = trained();
    let data = t.tmp.path().join("bad.csv");
    std::fs::write(
        &data,
        "id,age,income,utilization\nr1,30,50000,0.2\nr2,41,n/a,0.3\n",
    )
    .unwrap();
    let out_dir = t.tmp.path().join("scores");
    let args = |data: &PathBuf| {
        cairn(&[
            "score",
            "--model",
            t.dir.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ])
    };
    let out = args(&data);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("bad.csv:3: `income` is `n/a`; expected a number"),
        "{}",
        text(&out)
    );
    std::fs::write(&data, "id,age,incme,utilization\nr1,30,50000,0.2\n").unwrap();
    let out = args(&data);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("column `income` not found")
            && text(&out).contains("did you mean `incme`?"),
        "{}",
        text(&out)
    );
    let empty = t.tmp.path().join("no-model");
    std::fs::create_dir_all(&empty).unwrap();
    let out = cairn(&[
        "score",
        "--model",
        empty.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no model in"), "{}", text(&out));
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

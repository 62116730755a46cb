//! `--device`: the CPU by default in the library, `auto` in the CLI, `cuda` only with a GPU.

use cairn::workload::{load_model, Device, TrainOptions, MODEL_FILE};
use serde_json::Value;

use crate::{cairn_train, csv, gpu_missing, train_on};

fn metrics(dir: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

/// Without a GPU, `--device cuda` exits 1 with an error naming what is missing and a
/// hint, writes nothing, and does not panic. On a machine with a GPU it trains instead,
/// and the test checks that the report names the GPU.
#[test]
fn device_cuda_without_a_gpu_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = csv(tmp.path(), 200);
    let out = tmp.path().join("out");
    let output = cairn_train(&[
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Some(reason) = gpu_missing(&data, tmp.path()) {
        eprintln!("no usable GPU here ({reason}): checking the error");
        assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
        assert!(
            stderr.contains("cannot train on the GPU: ") && stderr.contains(&reason),
            "stderr:\n{stderr}"
        );
        assert!(
            [
                "libcuda.so",
                "libcublas.so",
                "no GPU",
                "CUDA driver",
                "GPU 0"
            ]
            .iter()
            .any(|missing| stderr.contains(missing)),
            "the error names what is missing:\n{stderr}"
        );
        assert!(stderr.contains("--device cpu"), "a hint:\n{stderr}");
        assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
        assert!(!out.exists(), "nothing is written");
    } else {
        eprintln!("a GPU is here: checking that `--device cuda` trains on it");
        assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
        let device = metrics(&out)["device"].as_str().unwrap().to_string();
        assert!(device.starts_with("cuda:0 "), "{device}");
    }
}

/// `--device auto` (the default) trains on the GPU when there is one, else on the CPU,
/// and says which in metrics.json and the text output; on the CPU its files are those of
/// `--device cpu`, byte for byte.
#[test]
fn device_auto_uses_the_cpu_without_a_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let data = csv(tmp.path(), 300);
    let run = |out: &str, device: Option<&str>| {
        let out = tmp.path().join(out);
        let mut args = vec![
            "--data".to_string(),
            data.display().to_string(),
            "--out".to_string(),
            out.display().to_string(),
        ];
        if let Some(device) = device {
            args.extend(["--device".to_string(), device.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = cairn_train(&args);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        (out, stdout)
    };
    let (cpu, cpu_stdout) = run("cpu", Some("cpu"));
    assert_eq!(metrics(&cpu)["device"], "cpu");
    assert!(cpu_stdout.contains(", on cpu."), "{cpu_stdout}");

    let (auto, auto_stdout) = run("auto", None);
    let device = metrics(&auto)["device"].as_str().unwrap().to_string();
    match gpu_missing(&data, tmp.path()) {
        Some(reason) => {
            eprintln!("no usable GPU here ({reason}): auto must be the CPU");
            assert_eq!(device, "cpu");
            assert!(auto_stdout.contains(", on cpu."), "{auto_stdout}");
            for file in [MODEL_FILE, "metrics.json"] {
                assert_eq!(
                    std::fs::read(cpu.join(file)).unwrap(),
                    std::fs::read(auto.join(file)).unwrap(),
                    "{file}"
                );
            }
        }
        None => {
            eprintln!("a GPU is here: auto must be the GPU");
            assert!(device.starts_with("cuda:0 "), "{device}");
            assert!(auto_stdout.contains(", on cuda:0 "), "{auto_stdout}");
        }
    }
}

/// The library trains on the CPU unless told otherwise, whatever the machine has.
#[test]
fn the_library_defaults_to_the_cpu() {
    assert_eq!(TrainOptions::default().device, Device::Cpu);
    let tmp = tempfile::tempdir().unwrap();
    let data = csv(tmp.path(), 100);
    let report = cairn::workload::train(&TrainOptions {
        data,
        out: tmp.path().join("out"),
        ..TrainOptions::default()
    })
    .unwrap();
    assert_eq!(report.device, "cpu");
}

/// The GPU path gives the CPU path's model and metrics within float tolerance.
///
/// Runs only on a machine with a usable GPU (the CUDA driver, cuBLAS and a device);
/// elsewhere it returns early and prints why on stderr, so passing there checks nothing.
#[test]
fn cpu_and_gpu_agree_within_tolerance() {
    let tmp = tempfile::tempdir().unwrap();
    let data = csv(tmp.path(), 5_000);
    if let Some(reason) = gpu_missing(&data, tmp.path()) {
        eprintln!("skipped: no usable GPU here ({reason}); nothing compared");
        return;
    }
    let cpu = train_on(&data, tmp.path(), "cpu", Device::Cpu).unwrap();
    let gpu = train_on(&data, tmp.path(), "gpu", Device::Cuda).unwrap();
    eprintln!("comparing cpu with {}", gpu.device);
    assert!(gpu.device.starts_with("cuda:0 "), "{}", gpu.device);
    assert_eq!(
        (cpu.train_rows, cpu.test_rows, &cpu.features),
        (gpu.train_rows, gpu.test_rows, &gpu.features)
    );
    let close = |what: &str, a: f64, b: f64, tolerance: f64| {
        assert!(
            (a - b).abs() <= tolerance * (1.0 + a.abs()),
            "{what}: cpu {a}, gpu {b}"
        );
    };
    for (j, (a, b)) in cpu
        .model
        .weights()
        .iter()
        .zip(gpu.model.weights())
        .enumerate()
    {
        close(&format!("weight {j}"), *a, *b, 1e-9);
    }
    close("bias", cpu.model.bias(), gpu.model.bias(), 1e-9);
    let (c, g) = (&cpu.metrics, &gpu.metrics);
    close("loss", c.loss, g.loss, 1e-9);
    close("test_loss", c.test_loss, g.test_loss, 1e-9);
    // Rank-based: a near-tie could swap; one swap moves these by far less than 1e-3.
    close("auc", c.auc, g.auc, 1e-3);
    close("accuracy", c.accuracy, g.accuracy, 1e-3);
    close("train_accuracy", c.train_accuracy, g.train_accuracy, 1e-3);
    // The files load the same way.
    let loaded = load_model(&tmp.path().join("gpu")).unwrap();
    assert_eq!(loaded, gpu.model);
}

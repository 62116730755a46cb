//! Planning benchmarks, printed as plain figures (run with `cargo bench --bench plan`):
//!
//! 1. No-op `cairn plan` on 5,000 resources already applied, side by side with
//!    `terraform plan` on 5,000 `terraform_data` resources already in state.
//! 2. `cairn plan` on 50,000 resources: first plan, then no-op plan after apply; wall time
//!    and peak memory (through `/usr/bin/time`).
//! 3. A fresh `cairn apply` of 1,000, 5,000, 20,000 and 50,000 resources: wall time, CPU
//!    time per resource (flat when the apply does no quadratic work) and peak memory.
//! 4. Re-planning an unchanged 1 GiB / 10,000-file dataset (hashes come from the cache).
//!
//! Sizes: `CAIRN_BENCH_SMALL` (5000), `CAIRN_BENCH_LARGE` (50000), `CAIRN_BENCH_DATA_MB`
//! (1024), `CAIRN_BENCH_APPLY` (`1000,5000,20000,50000`). `CAIRN_BENCH_SKIP` takes a
//! comma list of `terraform,large,apply,data` to skip.

#[macro_use]
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

fn skipped(what: &str) -> bool {
    std::env::var("CAIRN_BENCH_SKIP").is_ok_and(|v| v.split(',').any(|s| s.trim() == what))
        || (what == "terraform" && support::skip_peer("terraform"))
}

/// Writes a manifests root with `n` resources in one workspace: datasets (each a folder
/// with one small CSV), jobs reading them, and the models the jobs produce.
fn generate(root: &Path, n: usize) {
    let ws = root.join("bench");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(
        ws.join("workspace.toml"),
        "[workspace]\nenvironment = \"dev\"\nstore = \"file://.cairn/store\"\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("compute.toml"),
        // The shipped `cairn.compute` policy denies a training compute without
        // `idle_shutdown`: without it the first apply fails and nothing is measured.
        "[compute.here]\ntarget = \"local\"\nmax_gpus = 0\nidle_shutdown = \"30m\"\n",
    )
    .unwrap();
    // 2 resources are the workspace and the compute; the rest in triples.
    let triples = (n.saturating_sub(2)) / 3;
    let per_file = 500;
    let mut file_index = 0;
    let mut text = String::new();
    for i in 0..triples {
        let data = ws.join("data").join(format!("d{i}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("part-0.csv"),
            format!("id,value\n{i},{}\n", i * 7 % 13),
        )
        .unwrap();
        let _ = write!(
            text,
            "[dataset.d{i}]\nsource = \"data/d{i}\"\nformat = \"csv\"\n\n\
             [job.j{i}]\ncompute = \"compute.here\"\n\
             command = [\"sh\", \"-c\", \"cp {{{{ inputs.data }}}}/part-0.csv {{{{ outputs.model }}}}/weights\"]\n\
             inputs = {{ data = \"dataset.d{i}\" }}\noutputs = {{ model = \"model.m{i}\" }}\n\n\
             [model.m{i}]\nfrom_job = \"job.j{i}\"\nformat = \"custom\"\n\n"
        );
        if (i + 1) % per_file == 0 || i + 1 == triples {
            std::fs::write(ws.join(format!("r{file_index}.toml")), &text).unwrap();
            text.clear();
            file_index += 1;
        }
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("command runs");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs a command `times` times and returns the best and median wall time.
fn time(times: usize, mut make: impl FnMut() -> Command) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..times)
        .map(|_| {
            let mut cmd = make();
            let t = Instant::now();
            let (ok, text) = run(&mut cmd);
            let elapsed = t.elapsed();
            assert!(ok, "benchmark command failed:\n{text}");
            elapsed
        })
        .collect();
    samples.sort();
    (samples[0], samples[samples.len() / 2])
}

/// Peak resident memory of one run, in MiB, through `/usr/bin/time -f %M`.
fn peak_mib(args: &[&str]) -> Option<f64> {
    if !Path::new("/usr/bin/time").exists() {
        return None;
    }
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", CAIRN])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = stderr.lines().last()?.trim().parse().ok()?;
    Some(kib / 1024.0)
}

fn cairn(args: &[&str]) -> Command {
    let mut cmd = Command::new(CAIRN);
    cmd.args(args).env("NO_COLOR", "1");
    cmd
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn apply(root: &Path) {
    let root = root.to_str().unwrap();
    let t = Instant::now();
    let (ok, text) = run(&mut cairn(&[
        "apply",
        root,
        "--auto-approve",
        "--parallelism",
        "8",
    ]));
    assert!(
        ok,
        "apply failed:\n{}",
        &text[text.len().saturating_sub(4000)..]
    );
    figure!("  (initial apply took {})", secs(t.elapsed()));
}

fn bench_vs_terraform(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("manifests");
    generate(&root, n);
    apply(&root);
    let r = root.to_str().unwrap().to_string();
    let (best, median) = time(5, || cairn(&["plan", &r, "--detailed-exitcode"]));
    figure!(
        "no-op cairn plan, {n} resources: best {}, median {}",
        secs(best),
        secs(median)
    );

    if skipped("terraform") || Command::new("terraform").arg("version").output().is_err() {
        figure!("terraform: skipped");
        return;
    }
    let tf = dir.path().join("terraform");
    std::fs::create_dir_all(&tf).unwrap();
    let mut main = String::new();
    for i in 0..n {
        let _ = writeln!(
            main,
            "resource \"terraform_data\" \"r{i}\" {{\n  input = \"value-{i}\"\n}}"
        );
    }
    std::fs::write(tf.join("main.tf"), main).unwrap();
    let terraform = |args: &[&str]| {
        let mut cmd = Command::new("terraform");
        cmd.args(args)
            .current_dir(&tf)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1");
        cmd
    };
    let (ok, text) = run(&mut terraform(&["init", "-input=false"]));
    assert!(ok, "terraform init failed:\n{text}");
    let t = Instant::now();
    let (ok, text) = run(&mut terraform(&[
        "apply",
        "-auto-approve",
        "-input=false",
        "-parallelism=64",
    ]));
    assert!(
        ok,
        "terraform apply failed:\n{}",
        &text[text.len().saturating_sub(3000)..]
    );
    figure!("  (terraform apply of {n} took {})", secs(t.elapsed()));
    let (tf_best, tf_median) = time(3, || {
        terraform(&["plan", "-input=false", "-detailed-exitcode"])
    });
    figure!(
        "no-op terraform plan, {n} terraform_data: best {}, median {}",
        secs(tf_best),
        secs(tf_median)
    );
    figure!(
        "cairn is {:.0}x faster (median), {:.0}x (best)",
        tf_median.as_secs_f64() / median.as_secs_f64(),
        tf_best.as_secs_f64() / best.as_secs_f64()
    );
}

fn bench_large(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("manifests");
    generate(&root, n);
    let r = root.to_str().unwrap().to_string();
    let (best, median) = time(3, || cairn(&["plan", &r]));
    let mem = peak_mib(&["plan", &r]).map_or("n/a".into(), |m| format!("{m:.0} MiB"));
    figure!(
        "first cairn plan, {n} resources: best {}, median {}, peak RSS {mem}",
        secs(best),
        secs(median)
    );
    apply(&root);
    let (best, median) = time(3, || cairn(&["plan", &r, "--detailed-exitcode"]));
    let mem = peak_mib(&["plan", &r]).map_or("n/a".into(), |m| format!("{m:.0} MiB"));
    figure!(
        "no-op cairn plan, {n} resources: best {}, median {}, peak RSS {mem}",
        secs(best),
        secs(median)
    );
}

/// A fresh apply of `n` resources for each size: wall time, CPU time (user + system,
/// from `/usr/bin/time`) per resource, which stays flat when the apply does no
/// quadratic work, and peak memory.
fn bench_apply(sizes: &[usize]) {
    if !Path::new("/usr/bin/time").exists() {
        figure!("fresh apply: skipped (no /usr/bin/time)");
        return;
    }
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("manifests");
        generate(&root, n);
        let out = Command::new("/usr/bin/time")
            .args(["-f", "TIME %e %U %S %M", CAIRN, "apply"])
            .arg(&root)
            .args(["--auto-approve", "--parallelism", "8"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("cairn apply runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "apply of {n} failed:\n{}",
            &stderr[stderr.len().saturating_sub(4000)..]
        );
        let figures: Vec<f64> = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("TIME "))
            .expect("/usr/bin/time's line")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let (wall, cpu, kib) = (figures[0], figures[1] + figures[2], figures[3]);
        figure!(
            "fresh apply, {n} resources: {wall:.2} s wall, {cpu:.2} s CPU ({:.3} ms CPU per resource), peak RSS {:.0} MiB",
            cpu * 1000.0 / n as f64,
            kib / 1024.0
        );
    }
}

fn bench_dataset(mb: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("manifests");
    let ws = root.join("big");
    let files = 10_000usize;
    let size = mb * 1024 * 1024 / files;
    let data = ws.join("data");
    for i in 0..files {
        let folder = data.join(format!("shard-{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        let mut bytes = vec![0u8; size];
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = ((i * 31 + j * 7) % 251) as u8;
        }
        std::fs::write(folder.join(format!("part-{i:05}.bin")), bytes).unwrap();
    }
    std::fs::write(
        ws.join("workspace.toml"),
        "[workspace]\nstore = \"file://.cairn/store\"\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("data.toml"),
        "[dataset.big]\nsource = \"data\"\nformat = \"binary\"\n",
    )
    .unwrap();
    let r = root.to_str().unwrap().to_string();
    let t = Instant::now();
    let (ok, text) = run(&mut cairn(&["plan", &r]));
    assert!(ok, "{text}");
    figure!(
        "first plan of a {mb} MiB / {files}-file dataset (hashes everything): {}",
        secs(t.elapsed())
    );
    apply(&root);
    let (best, median) = time(5, || cairn(&["plan", &r, "--detailed-exitcode"]));
    figure!(
        "re-plan of the unchanged {mb} MiB / {files}-file dataset: best {}, median {}",
        secs(best),
        secs(median)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    figure!("cairn plan benchmarks ({CAIRN})");
    bench_vs_terraform(support::knob("CAIRN_BENCH_SMALL", 5000, 50));
    if !skipped("large") {
        bench_large(support::knob("CAIRN_BENCH_LARGE", 50_000, 200));
    }
    if !skipped("apply") {
        let sizes: Vec<usize> = std::env::var("CAIRN_BENCH_APPLY")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| {
                if support::smoke() {
                    vec![30, 90]
                } else {
                    vec![1000, 5000, 20_000, 50_000]
                }
            });
        bench_apply(&sizes);
    }
    if !skipped("data") {
        bench_dataset(support::knob("CAIRN_BENCH_DATA_MB", 1024, 2));
    }
    support::finish();
}

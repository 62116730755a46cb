//! Benchmark: validating a large repository.
//!
//! Generates a realistic manifests repository (by default 50,000 resources: 50 workspaces
//! of 1,000 resources in 11 files each: computes, datasets with real data folders, jobs
//! reading datasets and earlier models, models from jobs and imported ones, endpoints
//! with blue/green deployments, traffic, mirrors and rollouts), all valid and
//! cross-referenced, and measures:
//!
//! - the library: `load_folder` + `resolve` (best and median of 5 runs), with phases;
//! - `cairn validate <root>` end to end, with the release binary (best and median of 5);
//! - the peak RSS of that process, through `/usr/bin/time -f %M` where it exists.
//!
//! ```text
//! cargo build --release && cargo bench --bench validate
//! CAIRN_BENCH_RESOURCES=200000 cargo bench --bench validate    # another size
//! CAIRN_BENCH_OUT=/tmp/big cargo bench --bench validate        # only write the repository
//! ```
//!
//! `CAIRN_BIN` points at another `cairn` binary. Timings are with a warm page cache.

#[macro_use]
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rayon::prelude::*;

const DEFAULT_RESOURCES: usize = 50_000;
const PER_WORKSPACE: usize = 1_000;
const COMPUTES: usize = 4;
const RUNS: usize = 5;
/// Resources in a smoke run.
const SMOKE_RESOURCES: usize = 60;

fn main() {
    let resources = support::knob("CAIRN_BENCH_RESOURCES", DEFAULT_RESOURCES, SMOKE_RESOURCES);
    assert!(
        resources >= COMPUTES + 6,
        "CAIRN_BENCH_RESOURCES must be at least {}",
        COMPUTES + 6
    );

    if let Some(out) = std::env::var_os("CAIRN_BENCH_OUT") {
        let out = PathBuf::from(out);
        let started = Instant::now();
        let stats = generate(&out, resources);
        figure!(
            "wrote {} resources in {} workspaces ({} manifest files, {:.1} MiB of TOML, {} data folders) to {} in {:.2} s",
            resources,
            stats.workspaces,
            stats.files,
            stats.toml_bytes as f64 / (1024.0 * 1024.0),
            stats.data_folders,
            out.display(),
            started.elapsed().as_secs_f64()
        );
        figure!("validate it with: cairn validate {}", out.display());
        return;
    }

    let dir = tempfile::Builder::new()
        .prefix("cairn-bench-")
        .tempdir()
        .expect("temporary folder");
    let root = dir.path().join("manifests");
    let started = Instant::now();
    let stats = generate(&root, resources);
    figure!(
        "generated {} resources: {} workspaces, {} manifest files ({:.1} MiB of TOML), {} data folders, in {:.2} s",
        resources,
        stats.workspaces,
        stats.files,
        stats.toml_bytes as f64 / (1024.0 * 1024.0),
        stats.data_folders,
        started.elapsed().as_secs_f64()
    );

    // Let the kernel write the new files back now, not while the timings run.
    let _ = Command::new("sync").status();

    // The repository must validate, so the bench measures the success path.
    let snapshot = cairn::manifest::load_folder(&root).expect("load the generated repository");
    match cairn::desired::resolve(&snapshot) {
        Ok(resolved) => {
            let summary = resolved.state.summary();
            assert_eq!(summary.resources, resources, "resource count");
            assert!(
                resolved.warnings.is_empty(),
                "warnings: {:?}",
                resolved.warnings
            );
        }
        Err(diagnostics) => {
            for d in diagnostics.iter().take(10) {
                eprintln!("{d}");
            }
            panic!(
                "the generated repository is invalid: {} findings",
                diagnostics.len()
            );
        }
    }
    drop(snapshot);

    // Library, end to end and by phase.
    let mut total = Vec::new();
    let mut load = Vec::new();
    let mut resolve = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let snapshot = cairn::manifest::load_folder(&root).expect("load");
        let t1 = Instant::now();
        let resolved = cairn::desired::resolve(&snapshot).expect("valid");
        let t2 = Instant::now();
        std::hint::black_box(&resolved);
        drop(resolved);
        drop(snapshot);
        load.push(t1 - t0);
        resolve.push(t2 - t1);
        total.push(t2 - t0);
    }
    let phases = phases(&root);

    figure!(
        "library load_folder + resolve: median {} (best {}); load_folder median {}, resolve median {}",
        secs(median(&total)),
        secs(best(&total)),
        secs(median(&load)),
        secs(median(&resolve)),
    );
    figure!(
        "  runs: {}",
        total
            .iter()
            .map(|t| secs(*t))
            .collect::<Vec<_>>()
            .join(", ")
    );
    figure!("  resolve by phase (one run): {phases}");
    figure!("  threads: {} (rayon)", rayon::current_num_threads());

    // The binary.
    let binary = binary();
    let end_to_end = match &binary {
        Some(bin) => {
            let mut times = Vec::new();
            for _ in 0..RUNS {
                let t = Instant::now();
                let status = Command::new(bin)
                    .arg("validate")
                    .arg(&root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("run cairn");
                times.push(t.elapsed());
                assert!(status.success(), "cairn validate failed: {status}");
            }
            figure!(
                "cairn validate end to end ({}): median {} (best {}); runs: {}",
                bin.display(),
                secs(median(&times)),
                secs(best(&times)),
                times
                    .iter()
                    .map(|t| secs(*t))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Some(median(&times))
        }
        None => {
            figure!(
                "cairn validate end to end: skipped, no release binary at {}; build it with `cargo build --release` (or set CAIRN_BIN)",
                default_binary().display()
            );
            None
        }
    };
    let rss = binary.as_ref().and_then(|bin| peak_rss(bin, &root));

    let mut line = format!(
        "validate {resources} resources: library median {} (best {})",
        secs(median(&total)),
        secs(best(&total))
    );
    match end_to_end {
        Some(t) => {
            let _ = write!(line, ", cairn validate end to end {}", secs(t));
        }
        None => line.push_str(", cairn validate end to end: not measured (no release binary)"),
    }
    match rss {
        Some(kib) => {
            let _ = write!(line, ", peak RSS {} MiB", kib / 1024);
        }
        None => line.push_str(", peak RSS: not measured"),
    }
    figure!("{line}");
    if let Some(t) = end_to_end {
        let goal = Duration::from_secs(1);
        figure!(
            "goal < 1 s end to end for 50,000 resources: {}",
            if resources != DEFAULT_RESOURCES {
                "n/a at this size".to_string()
            } else if t < goal {
                "met".to_string()
            } else {
                format!("missed by {}", secs(t - goal))
            }
        );
    }
    support::finish();
}

/// Times what `resolve` does, step by step, with the library's public pieces: parsing
/// every file (in parallel, as `resolve` does) and the filesystem lookups of dataset and
/// model sources. The rest of `resolve` (references, rules, graph, sorting findings) is
/// `resolve` minus these.
fn phases(root: &Path) -> String {
    let snapshot = cairn::manifest::load_folder(root).expect("load");
    let t = Instant::now();
    let parsed: Vec<_> = snapshot
        .files
        .par_iter()
        .map(cairn::manifest::parse_file)
        .collect();
    let parse = t.elapsed();
    let t = Instant::now();
    let parsed_seq: Vec<_> = snapshot
        .files
        .iter()
        .map(cairn::manifest::parse_file)
        .collect();
    let parse_seq = t.elapsed();
    drop(parsed_seq);

    let mut paths = Vec::new();
    for file in &parsed {
        for r in &file.resources {
            let source = match &r.spec {
                cairn::manifest::Spec::Dataset(d) => d.source.as_ref().map(|s| s.get_ref()),
                cairn::manifest::Spec::Model(m) => m.source.as_ref().map(|s| s.get_ref()),
                _ => None,
            };
            if let Some(source) = source.filter(|s| !s.contains("://")) {
                if let Some(path) =
                    cairn::manifest::source::join_inside(&r.address.workspace, source)
                {
                    paths.push(path);
                }
            }
        }
    }
    let t = Instant::now();
    for path in &paths {
        std::hint::black_box(snapshot.entry(path));
    }
    let entries = t.elapsed();

    let t = Instant::now();
    let resolved = cairn::desired::resolve(&snapshot).expect("valid");
    let whole = t.elapsed();
    drop(resolved);
    let rest = whole.saturating_sub(parse).saturating_sub(entries);
    format!(
        "parse {} ({} on one thread), {} source path lookups {}, references + rules + graph {}, resolve in all {}",
        secs(parse),
        secs(parse_seq),
        paths.len(),
        secs(entries),
        secs(rest),
        secs(whole)
    )
}

/// The `cairn` that `cargo bench` built beside this bench (optimised, bench profile).
fn default_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("CAIRN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_binary);
    path.is_file().then_some(path)
}

/// Peak resident set of `cairn validate`, in KiB, from `/usr/bin/time -f %M`.
fn peak_rss(bin: &Path, root: &Path) -> Option<u64> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        figure!("peak RSS: skipped, /usr/bin/time is not installed");
        return None;
    }
    let out = Command::new(time)
        .args(["-f", "%M"])
        .arg(bin)
        .arg("validate")
        .arg(root)
        .stdout(Stdio::null())
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib = stderr
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok());
    if kib.is_none() {
        figure!("peak RSS: skipped, could not read /usr/bin/time output: {stderr}");
    }
    kib
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn best(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

fn secs(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

// ---- the generator --------------------------------------------------------------------

struct Stats {
    workspaces: usize,
    files: usize,
    toml_bytes: usize,
    data_folders: usize,
}

/// How many resources of each kind one workspace gets.
struct Mix {
    datasets: usize,
    jobs: usize,
    imported: usize,
    endpoints: usize,
}

impl Mix {
    fn of(resources: usize) -> Mix {
        let rest = resources - COMPUTES;
        let datasets = (rest * 3 / 10).max(1);
        let jobs = (rest / 4).max(1);
        let imported = (rest / 20).max(1);
        // Every job outputs one model.
        let endpoints = rest - datasets - 2 * jobs - imported;
        Mix {
            datasets,
            jobs,
            imported,
            endpoints,
        }
    }
}

/// Writes `resources` resources under `root`, spread over workspaces of about
/// [`PER_WORKSPACE`] resources each.
fn generate(root: &Path, resources: usize) -> Stats {
    std::fs::create_dir_all(root).expect("create the root");
    let workspaces = resources.div_ceil(PER_WORKSPACE).max(1);
    let mut stats = Stats {
        workspaces,
        files: 0,
        toml_bytes: 0,
        data_folders: 0,
    };
    let mut next_port = 20_000u32;
    for w in 0..workspaces {
        let share = resources / workspaces + usize::from(w < resources % workspaces);
        workspace(root, w, share, &mut next_port, &mut stats);
    }
    stats
}

fn write(path: &Path, text: &str, stats: &mut Stats) {
    std::fs::write(path, text).expect("write a manifest");
    stats.files += 1;
    stats.toml_bytes += text.len();
}

fn data_folder(dir: &Path, file: &str, content: &str, stats: &mut Stats) {
    std::fs::create_dir_all(dir).expect("create a data folder");
    std::fs::write(dir.join(file), content).expect("write data");
    stats.data_folders += 1;
}

/// Splits `0..n` into `parts` contiguous chunks.
fn chunks(n: usize, parts: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..parts).map(move |p| (n * p / parts)..(n * (p + 1) / parts))
}

fn workspace(root: &Path, w: usize, resources: usize, next_port: &mut u32, stats: &mut Stats) {
    let name = format!("team-{w:02}");
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir).expect("create a workspace folder");
    let mix = Mix::of(resources);
    let env = ["dev", "staging", "production"][w % 3];
    let store = if w % 2 == 0 {
        format!("s3://ml-platform-{w:02}/{name}")
    } else {
        "file://.cairn/store".to_string()
    };
    write(
        &dir.join("workspace.toml"),
        &format!(
            "# Generated by reconciler/benches/validate.rs\n[workspace]\ndescription = \"Team {w} models: training on the shared GPU pool, serving on the inference cluster\"\nenvironment = \"{env}\"\nstore = \"{store}\"\nnamespace = \"{name}\"\nlabels = {{ team = \"{name}\", cost-center = \"cc-{w:04}\" }}\n"
        ),
        stats,
    );

    write(
        &dir.join("compute.toml"),
        r#"[compute.train-pool]
description = "Shared GPU pool for training"
target = "kubernetes"
context = "gpu-cluster"
max_gpus = 100000
idle_shutdown = "15m"
region = "eu-west"
roles = ["train"]

[compute.train-pool.instance_types.a100]
cpu = "24"
memory = "220Gi"
gpus = 8
gpu_type = "nvidia-a100-80gb"
node_selector = { "agentpool" = "a100" }
tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]

[compute.train-pool.instance_types.cpu-large]
cpu = "16"
memory = "64Gi"

[compute.inference]
description = "Inference cluster"
target = "kubernetes"
context = "inference-cluster"
gateway = "serving/gateway"
max_gpus = 1000000
idle_shutdown = "1h"
region = "eu-west"
roles = ["serve"]

[compute.inference.instance_types.t4]
cpu = "8"
memory = "32Gi"
gpus = 1
gpu_type = "nvidia-t4"

[compute.inference.instance_types.cpu-small]
cpu = "2"
memory = "4Gi"

[compute.batch]
description = "CPU batch nodes"
target = "kubernetes"
context = "gpu-cluster"
max_gpus = 0
roles = ["train"]

[compute.workstation]
description = "The machine Cairn runs on"
target = "local"
idle_shutdown = "30m"
max_gpus = 0
"#,
        stats,
    );

    // Datasets, each with its own small data folder.
    let formats = ["csv", "parquet", "jsonl", "images", "text"];
    for (part, range) in chunks(mix.datasets, 3).enumerate() {
        if range.is_empty() {
            continue;
        }
        let mut text = String::new();
        for d in range {
            let format = formats[d % formats.len()];
            let folder = format!("data/events-{d:04}");
            data_folder(&dir.join(&folder), "part-0.csv", "id,value\n1,0.5\n", stats);
            let _ = write!(
                text,
                "[dataset.events-{d:04}]\ndescription = \"Events, shard {d}\"\nsource = \"{folder}/\"\nformat = \"{format}\"\ntags = {{ pii = \"{}\", region = \"eu-west\" }}\n\n",
                d % 7 == 0
            );
        }
        write(&dir.join(format!("data-{part}.toml")), &text, stats);
    }

    // Jobs, each followed by the model it produces.
    for (part, range) in chunks(mix.jobs, 3).enumerate() {
        if range.is_empty() {
            continue;
        }
        let mut text = String::new();
        for j in range {
            let a = j % mix.datasets;
            let b = (j * 7 + 3) % mix.datasets;
            let mut inputs =
                format!("events = \"dataset.events-{a:04}\", more = \"dataset.events-{b:04}\"");
            if j > 0 && j % 4 == 0 {
                // Fine-tune the previous model: a dependency chain through models.
                let _ = write!(inputs, ", base = \"model.model-{:04}\"", j - 1);
            } else if j > 0 && j % 9 == 0 {
                let _ = write!(inputs, ", base = \"model.model-{:04}@3f9a2c1\"", j - 1);
            }
            let placement = match j % 3 {
                0 => "compute = \"compute.train-pool\"\ninstance_type = \"a100\"\nimage = \"registry.example.com/ml/trainer:2.3\"\ngpus = 4\ninstances = 2\nenv = { NCCL_DEBUG = \"WARN\" }\n",
                1 => "compute = \"compute.train-pool\"\ninstance_type = \"cpu-large\"\nimage = \"registry.example.com/ml/trainer:2.3\"\ngpus = 0\n",
                _ => "compute = \"compute.workstation\"\ngpus = 0\n",
            };
            let _ = write!(
                text,
                "[job.train-{j:04}]\ndescription = \"Train model {j}\"\n{placement}command = [\"python\", \"train.py\", \"--data\", \"{{{{ inputs.events }}}}\", \"--extra\", \"{{{{ inputs.more }}}}\", \"--out\", \"{{{{ outputs.model }}}}\"]\ninputs = {{ {inputs} }}\noutputs = {{ model = \"model.model-{j:04}\" }}\ntimeout = \"6h\"\nretries = 2\n\n[model.model-{j:04}]\ndescription = \"Model {j}\"\nfrom_job = \"job.train-{j:04}\"\nformat = \"{}\"\n\n",
                ["safetensors", "onnx"][j % 2]
            );
        }
        write(&dir.join(format!("train-{part}.toml")), &text, stats);
    }

    // Imported models: half from the object store, half from a folder in the repository.
    let mut text = String::new();
    for i in 0..mix.imported {
        let source = if i % 2 == 0 {
            format!("s3://model-zoo/imports/import-{i:04}/")
        } else {
            let folder = format!("models/import-{i:04}");
            data_folder(&dir.join(&folder), "model.onnx", "onnx", stats);
            format!("{folder}/")
        };
        let _ = write!(
            text,
            "[model.import-{i:04}]\ndescription = \"Imported model {i}\"\nsource = \"{source}\"\nformat = \"custom\"\n\n"
        );
    }
    write(&dir.join("models.toml"), &text, stats);

    // Endpoints with blue/green deployments.
    for (part, range) in chunks(mix.endpoints, 2).enumerate() {
        if range.is_empty() {
            continue;
        }
        let mut text = String::new();
        for e in range {
            let model = |k: usize| -> String {
                if k % 5 == 4 {
                    format!("model.import-{:04}", k % mix.imported)
                } else {
                    format!("model.model-{:04}", k % mix.jobs)
                }
            };
            let local = e % 10 == 9;
            let head = if local {
                let port = *next_port;
                *next_port += 1;
                format!("compute = \"compute.workstation\"\nauth = \"key\"\nport = {port}\n")
            } else {
                "compute = \"compute.inference\"\nauth = \"token\"\nport = 8443\n".to_string()
            };
            let (blue_extra, green_extra) = if local {
                (String::new(), String::new())
            } else {
                (
                    "instance_type = \"t4\"\ngpus = 1\nimage = \"registry.example.com/ml/server:1.18\"\n".to_string(),
                    "instance_type = \"cpu-small\"\n".to_string(),
                )
            };
            let (blue, green) = if e % 3 == 0 { (90, 10) } else { (100, 0) };
            let _ = write!(
                text,
                "[endpoint.scoring-{e:04}]\ndescription = \"Online scoring {e}\"\n{head}\n[endpoint.scoring-{e:04}.deployments.blue]\nmodel = \"{}\"\nreplicas = 2\n{blue_extra}\n[endpoint.scoring-{e:04}.deployments.green]\nmodel = \"{}@4c1d9e2\"\nreplicas = 1\n{green_extra}\n[endpoint.scoring-{e:04}.traffic]\nblue = {blue}\ngreen = {green}\n\n",
                model(e),
                model(e + 1),
            );
            if green == 0 && e % 4 == 1 {
                let _ = write!(text, "[endpoint.scoring-{e:04}.mirror]\ngreen = 20\n\n");
            }
            let _ = write!(
                text,
                "[endpoint.scoring-{e:04}.rollout]\nsteps = [10, 50, 100]\nstep_wait = \"30s\"\nmax_error_rate = 0.01\nmax_p99_ms = 250\nauto_rollback = true\n\n"
            );
        }
        write(&dir.join(format!("serve-{part}.toml")), &text, stats);
    }
}

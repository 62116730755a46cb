//! Benchmark: evaluating the policies on a large desired state.
//!
//! Generates a manifests repository of 5,000 resources by default (10 workspaces of 500:
//! computes, datasets, some of them PII, jobs reading them, the models they produce, and
//! endpoints with images, rollouts and GPU requests; production and dev workspaces with
//! GPU budgets), resolves it, and measures with the shipped policies (plus a repository
//! `cairn.config` with approved registries):
//!
//! - loading and compiling the policies;
//! - building the input document from the desired state;
//! - evaluating every package's `deny` and `warn` (best and median of 5 runs).
//!
//! The goal is under 1 s for 5,000 resources.
//!
//! ```text
//! cargo bench --bench policy
//! CAIRN_BENCH_RESOURCES=20000 cargo bench --bench policy    # another size
//! ```
//!
//! (A plain `main`, like the other benches: a handful of runs of a sub-second operation
//! needs no statistics framework.)

#[macro_use]
mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::policy::{Input, Policies};

const DEFAULT_RESOURCES: usize = 5_000;
const PER_WORKSPACE: usize = 500;
const RUNS: usize = 5;
/// Resources in a smoke run.
const SMOKE_RESOURCES: usize = 500;

fn main() {
    let resources = support::knob("CAIRN_BENCH_RESOURCES", DEFAULT_RESOURCES, SMOKE_RESOURCES);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let root = dir.path().join("manifests");
    generate(&root, resources);

    let snapshot = cairn::manifest::load_folder(&root).expect("the generated repository loads");
    let desired = match cairn::desired::resolve(&snapshot) {
        Ok(resolved) => resolved.state,
        Err(diagnostics) => {
            for d in diagnostics.iter().take(10) {
                eprintln!("{d}");
            }
            panic!("the generated repository is invalid");
        }
    };
    let declared = desired.resources.len();

    let started = Instant::now();
    let policies = Policies::from_snapshot(&snapshot).expect("the policies load");
    policies.check().expect("the policies compile");
    let load = started.elapsed();

    let started = Instant::now();
    let input = Input::new(&desired, None);
    let build = started.elapsed();

    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        report = Some(policies.evaluate(&input).expect("the policies evaluate"));
        times.push(started.elapsed());
    }
    times.sort();
    let report = report.expect("at least one run");
    figure!(
        "policy evaluation, {declared} resources ({} policy files):",
        report.policies.len()
    );
    figure!("  load + compile policies  {}", ms(load));
    figure!("  build the input          {}", ms(build));
    figure!(
        "  evaluate deny + warn     best {}, median {} ({RUNS} runs)",
        ms(times[0]),
        ms(times[RUNS / 2])
    );
    figure!(
        "  findings                 {} deny, {} warn",
        report.deny.len(),
        report.warn.len()
    );
    let total = build + times[RUNS / 2];
    figure!(
        "  input + evaluation       {} ({} the 1 s goal)",
        ms(total),
        if total < Duration::from_secs(1) {
            "within"
        } else {
            "over"
        }
    );
    // The generated repository is clean except for the unauthenticated endpoints.
    assert!(
        !report.deny.is_empty(),
        "the unauthenticated endpoints are denied"
    );
    assert!(
        report.deny.len() < declared / 50,
        "unexpected denies: {:#?}",
        &report.deny[..report.deny.len().min(5)]
    );
    support::finish();
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Writes `resources` resources in workspaces of [`PER_WORKSPACE`].
fn generate(root: &Path, resources: usize) {
    std::fs::create_dir_all(root.join("policies")).unwrap();
    std::fs::write(
        root.join("policies/config.rego"),
        "package cairn.config\n\napproved_registries := [\"registry.example.com\"]\n",
    )
    .unwrap();
    let workspaces = resources.div_ceil(PER_WORKSPACE).max(1);
    for w in 0..workspaces {
        let share = resources / workspaces + usize::from(w < resources % workspaces);
        workspace(root, w, share);
    }
}

fn workspace(root: &Path, w: usize, resources: usize) {
    let name = format!("team-{w:02}");
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let env = ["production", "dev"][w % 2];
    std::fs::write(
        dir.join("workspace.toml"),
        format!("[workspace]\nenvironment = \"{env}\"\nlabels = {{ team = \"{name}\", gpu-budget = \"100000\" }}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("compute.toml"),
        "[compute.here]\ntarget = \"local\"\nidle_shutdown = \"30m\"\nmax_gpus = 0\nregion = \"eu-west\"\nroles = [\"train\"]\n\n\
         [compute.inference]\ntarget = \"kubernetes\"\ncontext = \"inference\"\nmax_gpus = 100000\nidle_shutdown = \"1h\"\nregion = \"eu-west\"\nroles = [\"serve\"]\n\n\
         [compute.inference.instance_types.t4]\ncpu = \"8\"\nmemory = \"32Gi\"\ngpus = 1\n",
    )
    .unwrap();
    // The rest: a quarter each datasets, jobs, models and endpoints.
    let n = (resources.saturating_sub(3)) / 4;
    let endpoints = resources.saturating_sub(3 + 3 * n);
    let mut data = String::new();
    let mut train = String::new();
    let mut serve = String::new();
    for i in 0..n {
        let folder = format!("data/d-{i:04}");
        std::fs::create_dir_all(dir.join(&folder)).unwrap();
        std::fs::write(dir.join(&folder).join("part.csv"), "id\n1\n").unwrap();
        let _ = write!(
            data,
            "[dataset.d-{i:04}]\nsource = \"{folder}/\"\nformat = \"csv\"\ntags = {{ pii = \"{}\", region = \"eu-west\" }}\n\n",
            i % 5 == 0
        );
        let _ = write!(
            train,
            "[job.train-{i:04}]\ncompute = \"compute.here\"\ncommand = [\"true\"]\ninputs = {{ data = \"dataset.d-{i:04}\" }}\noutputs = {{ model = \"model.m-{i:04}\" }}\n\n\
             [model.m-{i:04}]\nfrom_job = \"job.train-{i:04}\"\nformat = \"safetensors\"\n\n"
        );
    }
    for e in 0..endpoints {
        let model = e % n.max(1);
        // Every 50th endpoint is unauthenticated: denied in production workspaces.
        let auth = if e % 50 == 0 { "none" } else { "key" };
        let _ = write!(
            serve,
            "[endpoint.api-{e:04}]\ncompute = \"compute.inference\"\nauth = \"{auth}\"\n\n\
             [endpoint.api-{e:04}.deployments.blue]\nmodel = \"model.m-{model:04}\"\nreplicas = 2\ninstance_type = \"t4\"\ngpus = 1\nimage = \"registry.example.com/serve:1.{e}\"\n\n\
             [endpoint.api-{e:04}.traffic]\nblue = 100\n\n\
             [endpoint.api-{e:04}.rollout]\nsteps = [10, 50, 100]\n\n"
        );
    }
    std::fs::write(dir.join("data.toml"), data).unwrap();
    std::fs::write(dir.join("train.toml"), train).unwrap();
    std::fs::write(dir.join("serve.toml"), serve).unwrap();
}

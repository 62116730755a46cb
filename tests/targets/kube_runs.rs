//! What only the Kubernetes target does with a run: its outputs wait on a volume of
//! their own while a second pod, one without GPUs, uploads them, so the training pods
//! (and the GPUs they book until they end) are gone before the upload starts.

use serde_json::{json, Value};

use crate::fixture::{Job, TargetFixture, WS};
use crate::kube_fixture::KubeFixture;

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// The names of a pod template's containers and init containers.
fn containers(job: &Value, field: &str) -> Vec<String> {
    job["spec"]["template"]["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// The claim a Job's pods mount at `/cairn/outputs`, and whether read-only.
fn outputs_claim(job: &Value, container: &str) -> Option<(String, bool)> {
    let pod = &job["spec"]["template"]["spec"];
    let container = pod["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)?;
    let mount = container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["mountPath"] == "/cairn/outputs")?;
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    Some((
        volume["persistentVolumeClaim"]["claimName"]
            .as_str()?
            .to_string(),
        mount["readOnly"] == true,
    ))
}

#[test]
fn a_runs_outputs_upload_after_its_training_pods_have_ended() {
    let world = KubeFixture::start(false);
    let repo = world.repo();
    // A node with a GPU, and a job that asks for it.
    let server = world.server();
    server.create(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"}}),
        "kubelet",
    );
    let allocatable = json!({"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"});
    server.set_status(
        "v1",
        "Node",
        None,
        "gpu-1",
        json!({"allocatable": allocatable, "capacity": allocatable}),
    );
    repo.set_job(&Job::train());
    let manifest = repo.root().join(WS).join("train.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("gpus = 0", "gpus = 1")).unwrap();
    let plan = repo.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout.contains("PersistentVolumeClaim"),
        "the plan shows the run's outputs volume:\n{}",
        plan.both()
    );
    let apply = repo.apply();
    apply.ok();
    assert!(
        apply.both().contains("uploading the outputs"),
        "{}",
        apply.both()
    );

    let jobs = world.objects_of("Job");
    let (uploads, training): (Vec<&Value>, Vec<&Value>) =
        jobs.iter().partition(|j| name(j).ends_with("-upload"));
    let (train, upload) = match (&training[..], &uploads[..]) {
        ([t], [u]) => (*t, *u),
        _ => panic!("one training Job and one upload Job: {jobs:#?}"),
    };
    assert_eq!(name(upload), format!("{}-upload", name(train)));
    // Training is the main container (`kubectl logs` shows it), and nothing uploads in
    // the pod that holds the GPUs.
    assert_eq!(containers(train, "containers"), ["train"]);
    assert_eq!(containers(upload, "containers"), ["upload"]);
    let gpus = |job: &Value| {
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
            .clone()
    };
    assert_eq!(gpus(train), "1", "{train:#}");
    assert_eq!(gpus(upload), Value::Null, "{upload:#}");
    // Both mount the run's claim: the training pods write it, the upload reads it.
    let (claim, read_only) = outputs_claim(train, "train").expect("train mounts the claim");
    assert!(!read_only);
    assert_eq!(
        outputs_claim(upload, "upload"),
        Some((claim.clone(), true)),
        "{upload:#}"
    );
    assert_eq!(claim, format!("{}-outputs", name(train)));

    // The upload's pod started only once the training Job had succeeded.
    let log = world.kubelet_log();
    let at = |line: String| {
        log.iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no `{line}` in the kubelet's log:\n{}", log.join("\n")))
    };
    let ns = train["metadata"]["namespace"].as_str().unwrap();
    let trained = at(format!("Job {ns}/{}: succeeded", name(train)));
    let upload_started = at(format!("Job {ns}/{}: started", name(upload)));
    assert!(trained < upload_started, "{}", log.join("\n"));

    // The version is in the store, and the volume is gone.
    let runs = repo.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    let run_id = runs[0]["run_id"].as_str().unwrap();
    assert_eq!(repo.versions("models", "scorer"), [run_id]);
    assert!(
        world.objects_of("PersistentVolumeClaim").is_empty(),
        "{:#?}",
        world.objects_of("PersistentVolumeClaim")
    );
    // And the next plan has nothing to do.
    let again = repo.cairn(&["plan", "ROOT", "--detailed-exitcode"]);
    again.code(0);
}

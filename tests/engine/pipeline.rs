//! Pipelines: a preparation job writes a dataset another job trains on. Each run of the
//! preparation is a version of its dataset, named after the run; a run whose spec and
//! inputs are unchanged never runs again; changing a step re-runs it and what follows,
//! nothing before.

use crate::support::{manifests, toml_string, Job, Root, TRAIN};

/// Prep: copies the loans into `features/loans.csv` (so `TRAIN` reads it as it reads
/// the raw data) beside a `schema.txt` that never changes.
const PREP: &str = r#"echo "preparing $1"
cp "$1/loans.csv" "$2/loans.csv"
echo 'loan_id,age,income,defaulted' > "$2/schema.txt""#;

/// The fixture with `job.prep` (loans → `dataset.features`) before `job.train`, which
/// now reads the features. `marker` is echoed by prep, so a new marker is a changed
/// command.
fn pipeline(marker: &str) -> Root {
    let root = manifests(&Job::default());
    write_pipeline(&root, marker);
    root
}

fn write_pipeline(root: &Root, marker: &str) {
    root.write(
        "risk/prep.toml",
        &format!(
            "[job.prep]\n\
             compute = \"compute.here\"\n\
             command = [\"sh\", \"-c\", {}, \"prep\", \"{{{{ inputs.loans }}}}\", \"{{{{ outputs.features }}}}\"]\n\
             inputs = {{ loans = \"dataset.loans\" }}\n\
             outputs = {{ features = \"dataset.features\" }}\n\n\
             [dataset.features]\n\
             from_job = \"job.prep\"\n\
             format = \"csv\"\n",
            toml_string(&format!("echo {marker}\n{PREP}"))
        ),
    );
    root.write(
        "risk/train.toml",
        &format!(
            "[job.train]\n\
             compute = \"compute.here\"\n\
             command = [\"sh\", \"-c\", {}, \"train\", \"{{{{ inputs.features }}}}\", \"{{{{ outputs.model }}}}\"]\n\
             inputs = {{ features = \"dataset.features\" }}\n\
             outputs = {{ model = \"model.scorer\" }}\n\n\
             [model.scorer]\n\
             from_job = \"job.train\"\n\
             format = \"custom\"\n",
            toml_string(TRAIN)
        ),
    );
}

/// The addresses a plan's text acts on (`  ▶ risk/job.prep` → `risk/job.prep`), in order.
fn actions(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|l| l.trim().split_once(" risk/"))
        .filter(|(symbol, _)| ["+", "~", "-", "▶", "»"].contains(symbol))
        .map(|(_, address)| format!("risk/{address}"))
        .collect()
}

#[test]
fn a_prepared_dataset_is_a_version_of_the_run_that_wrote_it() {
    let root = pipeline("v1");
    root.cairn(&["validate", "ROOT"]).ok();
    let plan = root.cairn(&["plan", "ROOT"]);
    plan.ok();
    let out = &plan.stdout;
    let order: Vec<usize> = [
        "dataset.loans",
        "job.prep",
        "dataset.features",
        "job.train",
        "model.scorer",
    ]
    .iter()
    .map(|a| {
        out.find(&format!("risk/{a}"))
            .unwrap_or_else(|| panic!("{a} missing from the plan:\n{out}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{out}");
    assert!(
        out.contains("Plan: 5 to add, 0 to change, 0 to destroy, 2 to run"),
        "{out}"
    );
    assert!(out.contains("produced by run"), "{out}");

    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let features = root.committed("datasets", "features");
    assert_eq!(features.len(), 1, "{features:?}");
    let prep_runs = root.store_keys("runs/prep/");
    assert!(
        prep_runs
            .iter()
            .any(|k| k == &format!("runs/prep/{}/_run.json", features[0])),
        "the features version is the prep run's id: {features:?} {prep_runs:?}"
    );
    let version = root.store_json(&format!("datasets/features/{}/_version.json", features[0]));
    assert_eq!(version["produced_by"]["job"], "prep", "{version}");
    let loans = root.committed("datasets", "loans");
    assert_eq!(
        version["produced_by"]["inputs"]["loans"],
        format!("dataset.loans@{}", loans[0]),
        "{version}"
    );
    let run = root.store_json(&format!("runs/prep/{}/_run.json", features[0]));
    assert_eq!(
        run["outputs"]["features"],
        format!("dataset.features@{}", features[0]),
        "{run}"
    );
    let model = root.committed("models", "scorer");
    let record = root.store_json(&format!("models/scorer/{}/_model.json", model[0]));
    assert_eq!(
        record["inputs"]["features"],
        format!("dataset.features@{}", features[0]),
        "the model's lineage names the prepared version: {record}"
    );

    // Nothing changed: nothing runs.
    let again = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    again.ok();
    assert!(again.stdout.contains("No changes"), "{}", again.both());
}

#[test]
fn a_data_change_runs_the_whole_chain_and_a_step_change_only_what_follows() {
    let root = pipeline("v1");
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let first = root.committed("datasets", "features");

    // One row of the raw data: new loans version → prep → features → train → model.
    root.edit_row(12345);
    let plan = root.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 3 to change, 0 to destroy, 2 to run"),
        "{}",
        plan.both()
    );
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    let second = root.committed("datasets", "features");
    assert_eq!(second.len(), 2, "{second:?}");
    // The unchanged file of the new version is the one the first version stored.
    let new = second.iter().find(|v| !first.contains(v)).unwrap();
    let record = root.store_json(&format!("datasets/features/{new}/_version.json"));
    let schema = record["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "schema.txt")
        .unwrap();
    assert_eq!(
        schema["key"],
        format!("datasets/features/{}/schema.txt", first[0]),
        "deduplicated by content: {record}"
    );
    let changed = record["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "loans.csv")
        .unwrap();
    assert_eq!(changed["key"], format!("datasets/features/{new}/loans.csv"));

    // The prep step's command: prep and everything after it, not the raw data.
    write_pipeline(&root, "v2");
    let plan = root.cairn(&["plan", "ROOT"]);
    plan.ok();
    let lines = actions(&plan.stdout);
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 2 to change, 0 to destroy, 2 to run"),
        "{}",
        plan.both()
    );
    assert_eq!(
        lines,
        [
            "risk/job.prep",
            "risk/dataset.features",
            "risk/job.train",
            "risk/model.scorer"
        ],
        "the raw data did not change: {}",
        plan.stdout
    );
    root.cairn(&["apply", "ROOT", "--auto-approve"]).ok();
    assert_eq!(root.committed("datasets", "features").len(), 3);
    assert_eq!(root.committed("datasets", "loans").len(), 2);

    // The train step alone: prep is not run again.
    root.write(
        "risk/train.toml",
        &std::fs::read_to_string(root.path().join("risk/train.toml"))
            .unwrap()
            .replace("echo done", "echo finished"),
    );
    let plan = root.cairn(&["plan", "ROOT"]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 1 to change, 0 to destroy, 1 to run"),
        "{}",
        plan.both()
    );
    assert_eq!(
        actions(&plan.stdout),
        ["risk/job.train", "risk/model.scorer"],
        "{}",
        plan.stdout
    );
}

/// A dataset a job writes names that job, and the job lists it: both sides are checked
/// at `validate`, at the line and column.
#[test]
fn a_produced_dataset_and_its_job_must_agree() {
    let root = pipeline("v1");
    root.write(
        "risk/prep.toml",
        "[job.prep]\n\
         compute = \"compute.here\"\n\
         command = [\"true\"]\n\
         inputs = { loans = \"dataset.loans\" }\n\n\
         [dataset.features]\n\
         from_job = \"job.prep\"\n\
         source = \"data/loans/\"\n\
         format = \"csv\"\n",
    );
    let run = root.cairn(&["validate", "ROOT"]);
    run.code(1);
    let text = run.both();
    assert!(
        text.contains("a dataset is read from a source or written by a job, not both"),
        "{text}"
    );
    root.write(
        "risk/prep.toml",
        "[job.prep]\n\
         compute = \"compute.here\"\n\
         command = [\"true\"]\n\
         inputs = { loans = \"dataset.loans\" }\n\n\
         [dataset.features]\n\
         from_job = \"job.prep\"\n\
         format = \"csv\"\n",
    );
    let run = root.cairn(&["validate", "ROOT"]);
    run.code(1);
    let text = run.both();
    assert!(
        text.contains("job.prep does not list dataset.features in its outputs"),
        "{text}"
    );
    assert!(text.contains("prep.toml:7:"), "{text}");
    assert!(
        text.contains("add `outputs = { features = \"dataset.features\" }` to job.prep"),
        "{text}"
    );
}

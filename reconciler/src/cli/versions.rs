//! `cairn models [NAME]` and `cairn datasets [NAME]`: every stored version of the
//! declared models or datasets, newest first, with its size, its lineage (the run and
//! job that made it and what they read, or the commit its files came from), a model's
//! metrics, and `*` on the version the state records. `--format json` gives the stored
//! records, each with `current`.

use cairn::address::Kind;
use cairn::backend::store::{DatasetVersion, ModelRecord};
use cairn::plan::human_bytes;
use serde_json::{json, Value};

use super::context;
use super::{CommandError, Format, Outcome, Output, ReportArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this model or dataset (its name, or `model.<name>` / `dataset.<name>`).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    #[command(flatten)]
    report: ReportArgs,
}

pub fn models(args: Args, output: Output) -> Result<Outcome, CommandError> {
    list(Kind::Model, args, output)
}

pub fn datasets(args: Args, output: Output) -> Result<Outcome, CommandError> {
    list(Kind::Dataset, args, output)
}

fn list(kind: Kind, args: Args, output: Output) -> Result<Outcome, CommandError> {
    let prefix = format!("{kind}.");
    let wanted = args
        .name
        .as_deref()
        .map(|n| n.strip_prefix(&prefix).unwrap_or(n).to_string());
    let loaded = context::load(&args.report.source, output)?;
    let selection = context::select(&loaded, &args.report.workspaces)?;
    let rt = super::runtime()?;
    let mut listed: Vec<Value> = Vec::new();
    for resource in loaded.desired.resources.iter().filter(|r| r.kind() == kind) {
        let address = &resource.address;
        let Some(store) = selection.stores.get(&address.workspace) else {
            continue;
        };
        if wanted.as_ref().is_some_and(|w| *w != address.name) {
            continue;
        }
        let state = rt
            .block_on(store.state())
            .map_err(|e| CommandError::store(&e))?;
        let current = state
            .state
            .resources
            .get(&address.to_string())
            .and_then(|e| e.value.get("version"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let versions: Vec<Value> = match kind {
            Kind::Model => rt
                .block_on(store.model_versions(&address.name))
                .map_err(|e| CommandError::store(&e))?
                .iter()
                .rev()
                .map(|v| model_json(v, current.as_deref()))
                .collect(),
            _ => rt
                .block_on(store.dataset_versions(&address.name))
                .map_err(|e| CommandError::store(&e))?
                .iter()
                .rev()
                .map(|v| dataset_json(v, current.as_deref()))
                .collect(),
        };
        listed.push(json!({
            "address": address.to_string(),
            "workspace": address.workspace,
            "name": address.name,
            "versions": versions,
        }));
    }
    if let (Some(name), true) = (&wanted, listed.is_empty()) {
        return Err(CommandError::user(format!(
            "no {kind} `{name}` is declared in the selected workspaces"
        ))
        .hint_opt(Some(format!("`cairn {kind}s` lists the declared ones"))));
    }
    if args.report.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).expect("JSON serializes")
        );
        return Ok(Outcome::Success);
    }
    for entry in &listed {
        println!("{}", entry["address"].as_str().unwrap_or_default());
        let versions = entry["versions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if versions.is_empty() {
            println!("    no stored versions");
        }
        for v in versions {
            println!(
                "  {} {}  {}  {}",
                if v["current"] == true { "*" } else { " " },
                v["version"].as_str().unwrap_or_default(),
                v["created_at"].as_str().unwrap_or_default(),
                v["summary"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(Outcome::Success)
}

fn size(files: usize, bytes: u64) -> String {
    format!(
        "{files} file{}, {}",
        if files == 1 { "" } else { "s" },
        human_bytes(bytes)
    )
}

fn model_json(v: &ModelRecord, current: Option<&str>) -> Value {
    let bytes: u64 = v.files.iter().map(|f| f.size).sum();
    let mut summary = vec![v.format.clone(), size(v.files.len(), bytes)];
    if let (Some(job), Some(run)) = (&v.job, &v.run_id) {
        let job = job_address(job);
        let read: Vec<&str> = v.inputs.values().map(String::as_str).collect();
        summary.push(if read.is_empty() {
            format!("run {run} of {job}")
        } else {
            format!("run {run} of {job} ← {}", read.join(", "))
        });
    }
    if let Some(metrics) = v.metrics.as_ref().and_then(super::status::describe_metrics) {
        summary.push(metrics);
    }
    if !v.trials.is_empty() {
        summary.push(format!("best of {} trials", v.trials.len()));
    }
    let mut value = serde_json::to_value(v).expect("records serialize");
    value["current"] = json!(current == Some(v.version.as_str()));
    value["total_bytes"] = json!(bytes);
    value["summary"] = json!(summary.join("  "));
    value
}

fn dataset_json(v: &DatasetVersion, current: Option<&str>) -> Value {
    let mut summary = vec![size(v.files.len(), v.total_bytes)];
    match (&v.produced_by, &v.commit) {
        (Some(p), _) => summary.push(format!("run {} of {}", p.run_id, job_address(&p.job))),
        (None, Some(commit)) => {
            summary.push(format!("from commit {}", &commit[..commit.len().min(7)]))
        }
        (None, None) => {}
    }
    let mut value = serde_json::to_value(v).expect("records serialize");
    value["current"] = json!(current == Some(v.version.as_str()));
    value["summary"] = json!(summary.join("  "));
    value
}

/// `job.train` for a record's `train` (a record written with the address keeps it).
fn job_address(job: &str) -> String {
    if job.contains('.') {
        job.to_string()
    } else {
        format!("job.{job}")
    }
}

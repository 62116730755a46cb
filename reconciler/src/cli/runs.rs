//! `cairn runs [PATH] [--job JOB]`: the recorded job runs, newest first, with their status, inputs,
//! outputs and metrics (the flat name → number `metrics.json` a run wrote); a sweep's
//! trials under their sweep (✓ the one kept), not as runs of their own. `--format json`
//! lists every run record, trials included.

use cairn::backend::store::RunRecord;

use super::context;
use super::{CommandError, Format, Outcome, Output, ReportArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the runs of this job (its name, or `job.<name>`).
    #[arg(long, value_name = "JOB")]
    job: Option<String>,

    #[command(flatten)]
    report: ReportArgs,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let loaded = context::load(&args.report.source, output)?;
    let selection = context::select(&loaded, &args.report.workspaces)?;
    let job = args
        .job
        .as_deref()
        .map(|j| j.strip_prefix("job.").unwrap_or(j));
    let rt = super::runtime()?;
    let mut runs: Vec<(String, RunRecord)> = Vec::new();
    for (workspace, store) in &selection.stores {
        let found = rt
            .block_on(store.runs(job))
            .map_err(|e| CommandError::store(&e))?;
        runs.extend(found.into_iter().map(|r| (workspace.to_string(), r)));
    }
    runs.sort_by(|(_, a), (_, b)| {
        b.finished_at
            .cmp(&a.finished_at)
            .then(b.run_id.cmp(&a.run_id))
    });
    if args.report.format == Format::Json {
        let listed: Vec<serde_json::Value> = runs
            .iter()
            .map(|(workspace, r)| {
                let mut value = serde_json::to_value(r).expect("a run serializes");
                value["workspace"] = workspace.clone().into();
                value
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).expect("runs serialize")
        );
        return Ok(Outcome::Success);
    }
    if runs.is_empty() {
        println!("No runs recorded yet.");
        return Ok(Outcome::Success);
    }
    // A sweep's trials are listed under it, not as runs of their own.
    let trials: std::collections::BTreeSet<(&str, &str)> = runs
        .iter()
        .flat_map(|(_, r)| r.trials.iter().map(|t| (r.job.as_str(), t.run_id.as_str())))
        .collect();
    for (workspace, r) in &runs {
        if trials.contains(&(r.job.as_str(), r.run_id.as_str())) {
            continue;
        }
        println!(
            "{}  {workspace}/job.{}  {}  {}  {:>6.1}s  {}",
            r.finished_at,
            r.job,
            r.run_id,
            serde_json::to_value(&r.status)
                .ok()
                .and_then(|s| s.as_str().map(String::from))
                .unwrap_or_default(),
            r.duration_ms as f64 / 1000.0,
            describe_metrics(r.metrics.as_ref()),
        );
        for (name, output) in &r.outputs {
            println!("    → {name}: {output}");
        }
        for t in &r.trials {
            let params: Vec<String> = t.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "    {} trial {}  {}  {}  {}",
                if t.picked { "✓" } else { " " },
                t.run_id,
                params.join(", "),
                serde_json::to_value(&t.status)
                    .ok()
                    .and_then(|s| s.as_str().map(String::from))
                    .unwrap_or_default(),
                describe_metrics(t.metrics.as_ref()),
            );
        }
    }
    Ok(Outcome::Success)
}

/// `auc 0.812, loss 0.41` (names sorted), or `no metrics`.
fn describe_metrics(metrics: Option<&serde_json::Value>) -> String {
    metrics
        .and_then(super::status::describe_metrics)
        .unwrap_or_else(|| "no metrics".to_string())
}

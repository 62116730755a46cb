//! `cairn history`: the journal of applies, newest last, with the rollouts each walked
//! (step by step: weights, the gates' readings, promotion or rollback) and the metrics of
//! the runs it made.

use cairn::backend::store::DamagedRecord;

use super::context;
use super::{CommandError, Format, Outcome, Output, ReportArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    report: ReportArgs,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let loaded = context::load(&args.report.source, output)?;
    let selection = context::select(&loaded, &args.report.workspaces)?;
    let rt = super::runtime()?;
    let mut records = Vec::new();
    for store in selection.stores.values() {
        let journal = rt
            .block_on(store.journal())
            .map_err(|e| CommandError::store(&e))?;
        warn_damaged(&journal.damaged, output);
        records.extend(journal.records);
    }
    records.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    if args.report.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&records).expect("records serialize")
        );
        return Ok(Outcome::Success);
    }
    if records.is_empty() {
        println!("No applies recorded yet.");
        return Ok(Outcome::Success);
    }
    for r in &records {
        let ok = r
            .outcomes
            .iter()
            .filter(|o| o.status == "succeeded")
            .count();
        let failed = r.outcomes.iter().filter(|o| o.status == "failed").count();
        let skipped = r.outcomes.iter().filter(|o| o.status == "skipped").count();
        let rev = r
            .revision
            .as_deref()
            .map_or("working tree".to_string(), |c| {
                c[..c.len().min(7)].to_string()
            });
        println!(
            "{}  {:<14} {:<8} {:>3} ok {:>2} failed {:>2} skipped  {:>6.1}s  {}  by {}  plan {}",
            r.started_at,
            r.workspace,
            if r.success { "success" } else { "FAILED" },
            ok,
            failed,
            skipped,
            r.duration_ms as f64 / 1000.0,
            rev,
            r.user,
            r.plan_hash
        );
        // The rollouts it walked, step by step.
        for o in &r.outcomes {
            let steps: Vec<String> = o.events.iter().filter_map(rollout_line).collect();
            if !steps.is_empty() {
                println!("    {} rollout:", o.address);
                for line in steps {
                    println!("      {line}");
                }
            }
        }
        // The metrics of the runs it made.
        for o in &r.outcomes {
            for e in o.events.iter().filter(|e| e["event"] == "metrics") {
                if let Some(metrics) = super::status::describe_metrics(&e["metrics"]) {
                    println!(
                        "    {} run {}: {metrics}",
                        o.address,
                        e["run_id"].as_str().unwrap_or("?")
                    );
                }
            }
        }
    }
    Ok(Outcome::Success)
}

/// One journaled rollout event as a line (`step 2: blue 50 %, green 50 %`), or `None` for
/// an event of another kind.
fn rollout_line(event: &serde_json::Value) -> Option<String> {
    let weights = |value: &serde_json::Value| -> String {
        value
            .as_object()
            .map(|w| {
                w.iter()
                    .map(|(name, percent)| format!("{name} {percent} %"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let step = &event["step"];
    Some(match event["event"].as_str()? {
        "ready" => format!("{} ready", event["deployment"].as_str()?),
        "mirror" => format!(
            "mirroring {} % of requests to {}",
            event["percent"],
            event["deployment"].as_str()?
        ),
        "step" => format!("step {step}: {}", weights(&event["weights"])),
        "step-passed" => {
            let p99 = event["p99_ms"]
                .as_f64()
                .map_or(String::new(), |p| format!(", p99 {p:.1} ms"));
            format!(
                "step {step} passed: {} requests, error rate {:.2} %{p99}",
                event["requests"],
                event["error_rate"].as_f64().unwrap_or(0.0) * 100.0
            )
        }
        "gate-failed" => format!(
            "step {step} failed its gate: {}",
            event["reason"].as_str().unwrap_or("")
        ),
        "rolled-back" => format!("rolled back: {}", weights(&event["weights"])),
        "promoted" => format!("promoted: {}", weights(&event["weights"])),
        _ => return None,
    })
}

/// Names each damaged journal record on stderr, with what to do; the others are shown.
pub fn warn_damaged(damaged: &[DamagedRecord], output: Output) {
    for record in damaged {
        let warning = CommandError::target(format!(
            "skipped the damaged journal record `{}`: {}",
            record.key, record.reason
        ))
        .hint_opt(Some(format!(
            "move `{}` aside (out of the store's `.cairn/journal/`); the other records are shown",
            record.key
        )));
        super::render::warning(&warning, output);
    }
}

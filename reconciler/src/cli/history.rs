//! `cairn history`: the journal of applies, newest last.

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

//! `cairn verify`: re-read every stored dataset and model version and check each file's
//! size and SHA-256 against what the version recorded.

use cairn::backend::store::verify::Damaged;
use cairn::plan::human_bytes;
use serde_json::json;

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
    let scratch = context::local_dir(&loaded.root).join("verify");
    let mut reports = Vec::new();
    for (ws, store) in &selection.stores {
        let report = rt
            .block_on(store.verify(&scratch))
            .map_err(|e| CommandError::store(&e))?;
        reports.push((ws.clone(), store.url(), report));
    }
    let _ = std::fs::remove_dir(&scratch);
    let damaged: Vec<&Damaged> = reports.iter().flat_map(|(_, _, r)| &r.damaged).collect();
    if args.report.format == Format::Json {
        let workspaces: Vec<_> = reports
            .iter()
            .map(|(ws, url, r)| json!({"workspace": ws, "store": url, "report": r}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "workspaces": workspaces }))
                .expect("reports serialize")
        );
    } else {
        for (ws, url, r) in &reports {
            println!(
                "{ws}  ({url}): {} record{} (versions and runs), {} stored file{} ({}){}",
                r.versions,
                if r.versions == 1 { "" } else { "s" },
                r.objects,
                if r.objects == 1 { "" } else { "s" },
                human_bytes(r.bytes),
                if r.intact() { ", all intact" } else { "" }
            );
            for d in &r.damaged {
                if d.path.is_empty() {
                    println!("  ✗ {}: {}", d.marker, d.problem);
                } else {
                    println!("  ✗ {} {}: {} (`{}`)", d.version, d.path, d.problem, d.key);
                }
            }
        }
    }
    if damaged.is_empty() {
        return Ok(Outcome::Success);
    }
    let mut markers: Vec<&str> = damaged.iter().map(|d| d.marker.as_str()).collect();
    markers.sort_unstable();
    markers.dedup();
    Err(CommandError::target(format!(
        "{} damaged file{} in {} version{}",
        damaged.len(),
        if damaged.len() == 1 { "" } else { "s" },
        markers.len(),
        if markers.len() == 1 { "" } else { "s" },
    ))
    .hint_opt(Some(format!(
        "restore the files from a backup, or remove the markers of the versions listed ({}) \
         so that the next `cairn apply` stores them again from their sources",
        markers.join(", ")
    ))))
}

//! `cairn status`: what is live, per workspace — from the store's state, lock and
//! journal (serving endpoints join this view once they are reconciled).

use serde_json::{json, Value};

use super::context;
use super::{CommandError, Format, Output, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,

    /// Only these workspaces.
    #[arg(short, long = "workspace", value_name = "NAME")]
    workspaces: Vec<String>,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The version a state entry stands for: a dataset or model version, a job's run.
fn version_of(value: &Value) -> Option<&str> {
    value
        .get("version")
        .or_else(|| value.get("run_id"))
        .and_then(Value::as_str)
}

pub fn run(args: Args, output: Output) -> Result<u8, CommandError> {
    let loaded = context::load(&args.source, output)?;
    let selection = context::select(&loaded, &args.workspaces)?;
    let rt = super::runtime()?;
    let mut report = Vec::new();
    for (ws, store) in &selection.stores {
        let state = rt
            .block_on(store.state())
            .map_err(|e| CommandError::from_error(&e))?;
        let lock = rt
            .block_on(store.lock_info())
            .map_err(|e| CommandError::from_error(&e))?;
        let journal = rt
            .block_on(store.journal())
            .map_err(|e| CommandError::from_error(&e))?;
        let resources: Vec<Value> = state
            .state
            .resources
            .iter()
            .map(|(address, entry)| {
                json!({
                    "address": address,
                    "kind": entry.kind,
                    "version": version_of(&entry.value),
                    "applied_at": entry.applied_at,
                    "revision": entry.revision,
                })
            })
            .collect();
        report.push(json!({
            "workspace": ws,
            "store": store.url(),
            "state_serial": state.state.serial,
            "lock": lock.map(|(info, expired)| json!({
                "id": info.id,
                "holder": info.holder,
                "command": info.command,
                "since": info.started_at,
                "expired": expired,
            })),
            "last_apply": journal.last().map(|r| json!({
                "started_at": r.started_at,
                "success": r.success,
                "revision": r.revision,
                "user": r.user,
            })),
            "resources": resources,
        }));
    }
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "workspaces": report }))
                .expect("values serialize")
        );
        return Ok(0);
    }
    for ws in &report {
        println!(
            "{}  ({})",
            ws["workspace"].as_str().unwrap_or(""),
            ws["store"].as_str().unwrap_or("")
        );
        match &ws["last_apply"] {
            Value::Null => println!("  never applied"),
            last => println!(
                "  last apply {} by {}: {}{}",
                last["started_at"].as_str().unwrap_or("?"),
                last["user"].as_str().unwrap_or("?"),
                if last["success"].as_bool() == Some(true) {
                    "succeeded"
                } else {
                    "FAILED"
                },
                last["revision"]
                    .as_str()
                    .map(|r| format!(" at {}", &r[..r.len().min(7)]))
                    .unwrap_or_default()
            ),
        }
        if let Value::Object(lock) = &ws["lock"] {
            println!(
                "  locked by {} ({}) since {}{}, lock id {}",
                lock["holder"].as_str().unwrap_or("?"),
                lock["command"].as_str().unwrap_or("?"),
                lock["since"].as_str().unwrap_or("?"),
                if lock["expired"].as_bool() == Some(true) {
                    ", lease expired"
                } else {
                    ""
                },
                lock["id"].as_str().unwrap_or("?")
            );
        }
        let resources = ws["resources"].as_array().map_or(&[][..], |v| v.as_slice());
        let width = resources
            .iter()
            .filter_map(|r| r["address"].as_str())
            .map(str::len)
            .max()
            .unwrap_or(0);
        for r in resources {
            println!(
                "  {:width$}  {:<12}  applied {}",
                r["address"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or("-"),
                r["applied_at"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(0)
}

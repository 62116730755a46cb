//! `cairn status`: what is live, per workspace — from the store's state, lock and
//! journal, and the endpoints the local supervisor serves (deployments, weights, health,
//! request rates).

use cairn::backend::local::endpoints::LocalEndpoints;
use cairn::backend::local::supervisor::RouteStatus;
use cairn::backend::store::Error as StoreError;
use cairn::diagnostics::error_chain;
use cairn::serving::EndpointId;
use cairn::Kind;
use serde_json::{json, Value};

use super::context;
use super::{CommandError, ErrorKind, Format, Outcome, Output, ReportArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    report: ReportArgs,
}

/// The version a state entry stands for: a dataset or model version, a job's run.
fn version_of(value: &Value) -> Option<&str> {
    value
        .get("version")
        .or_else(|| value.get("run_id"))
        .and_then(Value::as_str)
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let loaded = context::load(&args.report.source, output)?;
    let selection = context::select(&loaded, &args.report.workspaces)?;
    let rt = super::runtime()?;
    let serving = context::local_serving(&loaded, std::collections::BTreeMap::new());
    let routes = rt.block_on(serving.routes()).map_err(|e| {
        CommandError::from_error(ErrorKind::Target, &e).hint_opt(Some(format!(
            "the local supervisor's log is {}",
            context::serving_dir(&loaded.root)
                .join(cairn::backend::local::supervisor::LOG_FILE)
                .display()
        )))
    })?;
    let mut report = Vec::new();
    for (ws, store) in &selection.stores {
        let state = rt
            .block_on(store.state())
            .map_err(|e| CommandError::store(&e))?;
        // A damaged lock or journal record is reported, not fatal: status is where a
        // user looks to find out what is wrong.
        let lock = match rt.block_on(store.lock_info()) {
            Ok(lock) => lock.map(|(info, expired)| {
                json!({
                    "id": info.id,
                    "holder": info.holder,
                    "command": info.command,
                    "since": info.started_at,
                    "expired": expired,
                })
            }),
            Err(e @ StoreError::Corrupt { .. }) => Some(json!({
                "damaged": error_chain(&e),
                "hint": e.hint(),
            })),
            Err(e) => return Err(CommandError::store(&e)),
        };
        let journal = rt
            .block_on(store.journal())
            .map_err(|e| CommandError::store(&e))?;
        super::history::warn_damaged(&journal.damaged, output);
        let journal = journal.records;
        // A model version's metrics (its run's `metrics.json`), read once each.
        let mut metrics_of = std::collections::BTreeMap::new();
        let mut metrics = |model: &str, version: &str| -> Value {
            metrics_of
                .entry((model.to_string(), version.to_string()))
                .or_insert_with(|| {
                    rt.block_on(store.model_version(model, version))
                        .ok()
                        .flatten()
                        .and_then(|record| record.metrics)
                        .unwrap_or(Value::Null)
                })
                .clone()
        };
        let resources: Vec<Value> = state
            .state
            .resources
            .iter()
            .map(|(address, entry)| {
                let name = address.rsplit_once('.').map_or("", |(_, n)| n);
                let mut resource = json!({
                    "address": address,
                    "kind": entry.kind,
                    "version": version_of(&entry.value),
                    "applied_at": entry.applied_at,
                    "revision": entry.revision,
                });
                match entry.kind {
                    Kind::Model => {
                        if let Some(version) = version_of(&entry.value) {
                            resource["metrics"] = metrics(name, version);
                        }
                    }
                    Kind::Endpoint => {
                        resource["serving"] = serving_models(&entry.value, &mut metrics);
                    }
                    _ => {}
                }
                resource
            })
            .collect();
        report.push(json!({
            "workspace": ws,
            "store": store.url(),
            "state_serial": state.state.serial,
            "lock": lock,
            "last_apply": journal.last().map(|r| json!({
                "started_at": r.started_at,
                "success": r.success,
                "revision": r.revision,
                "user": r.user,
            })),
            "resources": resources,
            "endpoints": endpoints_of(ws, &routes, &serving),
        }));
    }
    if args.report.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "workspaces": report }))
                .expect("values serialize")
        );
        return Ok(Outcome::Success);
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
        if let Some(damaged) = ws["lock"]["damaged"].as_str() {
            println!("  lock: DAMAGED ({damaged})");
            if let Some(hint) = ws["lock"]["hint"].as_str() {
                println!("    hint: {hint}");
            }
        } else if let Value::Object(lock) = &ws["lock"] {
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
            if let Some(m) = describe_metrics(&r["metrics"]) {
                println!("  {:width$}  {m}", "");
            }
            for d in r["serving"].as_array().map_or(&[][..], |v| v.as_slice()) {
                println!(
                    "  {:width$}  serving {} {}%: model.{}@{}{}",
                    "",
                    d["deployment"].as_str().unwrap_or(""),
                    d["weight"].as_u64().unwrap_or(0),
                    d["model"].as_str().unwrap_or(""),
                    d["version"].as_str().unwrap_or(""),
                    describe_metrics(&d["metrics"])
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default(),
                );
            }
        }
        for e in ws["endpoints"].as_array().map_or(&[][..], |v| v.as_slice()) {
            print_endpoint(e);
        }
    }
    Ok(Outcome::Success)
}

/// The model versions an endpoint's state says serve (the deployments with traffic),
/// with their metrics.
fn serving_models(value: &Value, metrics: &mut impl FnMut(&str, &str) -> Value) -> Value {
    let traffic = &value["traffic"];
    let serving: Vec<Value> = value["deployments"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, d)| {
            let weight = traffic[name].as_u64().unwrap_or(0);
            let (model, version) = (d["model"].as_str()?, d["version"].as_str()?);
            (weight > 0).then(|| {
                json!({
                    "deployment": name,
                    "weight": weight,
                    "model": model,
                    "version": version,
                    "metrics": metrics(model, version),
                })
            })
        })
        .collect();
    Value::Array(serving)
}

/// `auc 0.812, loss 0.41` for a flat name → number map; `None` without one.
pub fn describe_metrics(metrics: &Value) -> Option<String> {
    let shown: Vec<String> = metrics
        .as_object()?
        .iter()
        .filter_map(|(name, value)| Some(format!("{name} {}", value.as_f64()?)))
        .collect();
    (!shown.is_empty()).then(|| shown.join(", "))
}

/// The routers of one workspace's endpoints, as JSON.
fn endpoints_of(ws: &str, routes: &[RouteStatus], serving: &LocalEndpoints) -> Vec<Value> {
    let prefix = format!("{ws}.");
    routes
        .iter()
        .filter_map(|r| {
            let name = r.endpoint.strip_prefix(&prefix)?;
            let id = EndpointId {
                workspace: ws.to_string(),
                name: name.to_string(),
            };
            let deployments: Vec<Value> = r
                .backends
                .iter()
                .map(|(backend, b)| {
                    json!({
                        "name": backend,
                        "deployment": b.deployment,
                        "revision": b.revision,
                        "weight": r.weights.get(backend).copied().unwrap_or(0),
                        "replicas": b.replicas,
                        "ready_replicas": b.ready_replicas,
                        "requests": b.requests,
                        "errors": b.errors,
                        "requests_per_s": b.requests_per_s,
                        "autoscale": b.autoscale.as_ref().map(|a| json!({
                            "min": a.min,
                            "max": a.max,
                            "target_rps": a.target_rps,
                            "scale_down_window": humantime::format_duration(a.scale_down_window).to_string(),
                        })),
                        "scaled": b.scaled.iter().map(|r| json!({
                            "at": humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.at)).to_string(),
                            "from": r.from,
                            "to": r.to,
                            "requests_per_s": r.requests_per_s,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            Some(json!({
                "address": id.to_string(),
                "url": format!("http://{}", r.listen),
                "serving": r.serving,
                "error": r.error,
                "auth": r.auth,
                "key_file": r.auth.then(|| serving.key_path(&id).display().to_string()),
                "mirror": r.mirror.as_ref().map(|m| json!({"deployment": m.deployment, "percent": m.percent})),
                "deployments": deployments,
            }))
        })
        .collect()
}

fn print_endpoint(e: &Value) {
    let state = if e["serving"].as_bool() == Some(true) {
        "serving".to_string()
    } else {
        format!(
            "NOT SERVING: {}",
            e["error"].as_str().unwrap_or("router down")
        )
    };
    let auth = match e["key_file"].as_str() {
        Some(path) => format!(", key in {path}"),
        None => ", no auth".to_string(),
    };
    println!(
        "  {}  {}  {state}{auth}",
        e["address"].as_str().unwrap_or(""),
        e["url"].as_str().unwrap_or("")
    );
    let deployments = e["deployments"]
        .as_array()
        .map_or(&[][..], |v| v.as_slice());
    let width = deployments
        .iter()
        .filter_map(|d| d["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0);
    for d in deployments {
        println!(
            "    {:width$}  {:<12}  {:>3}%  {}/{} ready  {:>7.1} req/s  {} requests, {} errors",
            d["name"].as_str().unwrap_or(""),
            d["revision"].as_str().unwrap_or(""),
            d["weight"].as_u64().unwrap_or(0),
            d["ready_replicas"].as_u64().unwrap_or(0),
            d["replicas"].as_u64().unwrap_or(0),
            d["requests_per_s"].as_f64().unwrap_or(0.0),
            d["requests"].as_u64().unwrap_or(0),
            d["errors"].as_u64().unwrap_or(0),
        );
        if let Value::Object(a) = &d["autoscale"] {
            let last = d["scaled"].as_array().and_then(|s| s.last()).map_or_else(
                || "; not scaled yet".to_string(),
                |r| {
                    format!(
                        "; last scaled {} → {} at {} ({:.1} req/s)",
                        r["from"].as_u64().unwrap_or(0),
                        r["to"].as_u64().unwrap_or(0),
                        r["at"].as_str().unwrap_or("?"),
                        r["requests_per_s"].as_f64().unwrap_or(0.0)
                    )
                },
            );
            println!(
                "    {:width$}  autoscaled {}–{} replicas at {} req/s each{last}",
                "",
                a["min"].as_u64().unwrap_or(0),
                a["max"].as_u64().unwrap_or(0),
                a["target_rps"].as_f64().unwrap_or(0.0),
            );
        }
    }
    if let Value::Object(m) = &e["mirror"] {
        println!(
            "    mirror: {}% of requests copied to {}",
            m["percent"].as_u64().unwrap_or(0),
            m["deployment"].as_str().unwrap_or("")
        );
    }
}

//! An endpoint change's quality gates ([`crate::promotion`]), checked by the apply before
//! the endpoint's target moves any traffic, with the metrics the store recorded for the
//! new model version and for the one serving now.

use serde_json::Value;

use crate::backend::store::Store;
use crate::plan::endpoint::EndpointValue;
use crate::promotion::Condition;

/// Checks the quality gates (the endpoint's `promote_if` and its model's) for every
/// deployment whose model version changes: `Ok(lines)` saying what held, or `Err(why)` naming the failed conditions
/// and their values.
pub(super) async fn check(
    store: &Store,
    before: Option<&EndpointValue>,
    after: &EndpointValue,
) -> Result<Vec<String>, String> {
    let parse = |text: &String| Condition::parse(text).map_err(|e| e.to_string());
    let metrics_of = |model: String, version: String| async move {
        store
            .model_version(&model, &version)
            .await
            .map_err(|e| format!("reading model.{model}@{version}: {e}"))
            .map(|record| record.and_then(|r| r.metrics).unwrap_or(Value::Null))
    };
    let mut held = Vec::new();
    let mut failed = Vec::new();
    for (name, d) in &after.deployments {
        let previous = before.and_then(|b| b.deployments.get(name));
        if previous.is_some_and(|p| p.version == d.version) {
            continue;
        }
        let conditions: Vec<Condition> = after
            .gates_of(name)
            .iter()
            .map(parse)
            .collect::<Result<_, _>>()?;
        if conditions.is_empty() {
            continue;
        }
        let candidate = metrics_of(d.model.clone(), d.version.clone()).await?;
        let serving = match previous {
            Some(p) => Some(metrics_of(p.model.clone(), p.version.clone()).await?),
            None => None,
        };
        for condition in &conditions {
            match condition.check(&candidate, serving.as_ref()) {
                Some(Ok(line)) => held.push(format!("{name}: {line}")),
                Some(Err(line)) => failed.push(format!("{name}: {line}")),
                None => held.push(format!(
                    "{name}: `{condition}` skipped (nothing serves to compare with)"
                )),
            }
        }
    }
    if failed.is_empty() {
        Ok(held)
    } else {
        Err(format!(
            "the new model version is registered but not promoted: {}",
            failed.join("; ")
        ))
    }
}

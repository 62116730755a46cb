//! What every compute target reads from a job's planned value: its run id, input and
//! output references, retries and timeout ([`PlannedJob`]), and how a command's
//! placeholders (`{{ inputs.x }}`, `{{ outputs.y }}`, `{{ run_id }}`) and the
//! `CAIRN_INPUT_*`/`CAIRN_OUTPUT_*` variable names are made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How long a job's instances may take to all be running once admitted, when its
/// `schedule_timeout` says nothing.
pub const DEFAULT_SCHEDULE_TIMEOUT: Duration = Duration::from_secs(600);

/// What every target reads from a job's planned value (the plan's `after`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    pub run_id: String,
    /// Input name → the version reference the run reads.
    pub inputs: BTreeMap<String, String>,
    /// Output name → `model.<name>@<run id>` or `dataset.<name>@<run id>`.
    pub outputs: BTreeMap<String, String>,
    pub retries: u32,
    /// Each attempt's running time.
    pub timeout: Option<Duration>,
    /// How long all instances may take to be running once admitted.
    pub schedule_timeout: Option<Duration>,
}

impl PlannedJob {
    /// Reads the value; a malformed one says which field.
    pub fn parse(after: &Value) -> Result<PlannedJob, String> {
        let map = |field: &str| -> Result<BTreeMap<String, String>, String> {
            serde_json::from_value(after.get(field).cloned().unwrap_or_default())
                .map_err(|e| format!("the plan's `{field}` of this job is malformed: {e}"))
        };
        Ok(PlannedJob {
            run_id: str_field(after, "run_id")?,
            inputs: map("inputs")?,
            outputs: map("outputs")?,
            retries: after.get("retries").and_then(Value::as_u64).unwrap_or(0) as u32,
            timeout: duration_field(after, "timeout"),
            schedule_timeout: duration_field(after, "schedule_timeout"),
        })
    }
}

fn duration_field(after: &Value, field: &str) -> Option<Duration> {
    after
        .get(field)
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<crate::manifest::Duration>().ok())
        .map(|d| d.as_std())
}

/// A string field of a planned value.
pub fn str_field(value: &Value, field: &str) -> Result<String, String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the plan has no `{field}`"))
}

/// `train-data` → `TRAIN_DATA`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Replaces `{{ inputs.x }}`, `{{ outputs.y }}` and `{{ run_id }}` in one argument.
pub fn expand(arg: &str, paths: &BTreeMap<String, PathBuf>, run_id: &str) -> String {
    substitute(arg, |inner| match paths.get(inner) {
        Some(path) => Some(path.display().to_string()),
        None if inner == "run_id" => Some(run_id.to_string()),
        None => None,
    })
}

/// Replaces each `{{ name }}` of `arg` for which `value(name)` has a value; leaves the
/// others as written.
pub fn substitute(arg: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let inner = rest[start + 2..start + end].trim();
        out.push_str(&rest[..start]);
        match value(inner) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders() {
        let paths = BTreeMap::from([("inputs.loans".to_string(), PathBuf::from("/w/in/loans"))]);
        assert_eq!(
            expand("--data={{ inputs.loans }}", &paths, "r1"),
            "--data=/w/in/loans"
        );
        assert_eq!(expand("{{run_id}}-x", &paths, "r1"), "r1-x");
        assert_eq!(expand("{{ other }}", &paths, "r1"), "{{ other }}");
        assert_eq!(env_name("train-data"), "TRAIN_DATA");
    }
}

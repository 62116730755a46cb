//! The plan model: what `apply` will do, to which resource, and why, as plain data.
//!
//! Every stage reads and writes these types: the planner ([`crate::planner`]) makes a
//! [`Plan`], policies ([`crate::policy`]) and renderers ([`crate::view`]) read it,
//! the compute targets ([`crate::backend`]) attach their objects to it and carry it out.
//! This module imports no stage, so none of them can form a cycle through it.
//!
//! A plan is serialisable as JSON (`cairn plan -o plan.json`), and applying a saved plan
//! does exactly what it lists. Plans are deterministic: the same manifests and the same
//! store give byte-identical plans.
//!
//! - [`endpoint`]: an endpoint's planned value and its rollout, as the plan records them.
//! - [`objects`]: the objects a compute target creates, changes or deletes for a resource.
//! - [`redact`]: hiding sensitive `env` values wherever a plan is shown or saved.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::address::Kind;
use crate::content;

pub mod endpoint;
pub mod objects;
mod policy_report;
pub mod redact;

pub use endpoint::{DeploymentValue, EndpointValue, MirrorValue, RolloutPlan, RolloutValue};
pub use objects::ObjectChange;
pub use policy_report::{PolicyMessage, PolicyReport};

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
    /// Run a job.
    Run,
    /// Roll a new version out to an endpoint.
    Rollout,
}

impl Action {
    /// The symbol in text plans.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Run => "▶",
            Action::Rollout => "»",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::NoOp => "no-op",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Run => "run",
            Action::Rollout => "rollout",
        }
    }
}

/// One field that differs between what was applied and what is declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// `command[3]`, `env.SEED`, `version`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// The planned change of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    pub workspace: String,
    pub kind: Kind,
    pub name: String,
    pub actions: Vec<Action>,
    /// Why, in one line: "dataset.loans changed: 1 file modified".
    pub reason: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Addresses this change waits for during apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// For a rollout: the weights at each step and the gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPlan>,
    /// The compute target that carries the change out (`local`, `kubernetes`), for
    /// resources a target hosts (computes, jobs, endpoints) or holds objects for; `None`
    /// for what only the store holds (datasets, models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The objects the target creates, updates, replaces or deletes for the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectChange>,
    /// `env` keys the manifest marks sensitive (besides those that look like secrets):
    /// their values are hidden wherever the plan is shown or saved ([`crate::plan::redact`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
}

impl ResourceChange {
    pub fn action(&self) -> Action {
        self.actions.first().copied().unwrap_or(Action::NoOp)
    }

    pub fn is_noop(&self) -> bool {
        self.action() == Action::NoOp
    }

    /// `kind.name`, the address inside the workspace.
    pub fn local(&self) -> String {
        format!("{}.{}", self.kind, self.name)
    }
}

/// Where the plan's manifests came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSource {
    /// The manifests root as given.
    pub root: String,
    /// The Git revision as given (`--rev`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// A working tree with changes not committed on top of [`Plan::revision`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncommitted: bool,
}

/// The state of a workspace's store the plan was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanWorkspace {
    pub name: String,
    pub store: String,
    pub state_serial: u64,
    /// Changes whenever the state is written; a saved plan whose etag no longer matches
    /// is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_etag: Option<String>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub run: usize,
    pub rollout: usize,
    pub unchanged: usize,
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub cairn_version: String,
    /// The Git commit the manifests were read at: the `--rev` commit, or for a working
    /// tree the commit `HEAD` points at (uncommitted changes included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub source: PlanSource,
    pub workspaces: Vec<PlanWorkspace>,
    pub resource_changes: Vec<ResourceChange>,
    /// Things the reader should know that are not changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What the policies said; `None` when they were not evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyReport>,
    pub summary: PlanSummary,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resource_changes.iter().any(|c| !c.is_noop())
    }

    /// The changes that do something.
    pub fn changes(&self) -> impl Iterator<Item = &ResourceChange> {
        self.resource_changes.iter().filter(|c| !c.is_noop())
    }

    /// The plan as JSON, with its sensitive `env` values hidden (see [`crate::plan::redact`]):
    /// a saved plan holds no secret; applying it restores them from the manifests.
    pub fn to_json(&self) -> String {
        let redacted = redact::plan(self, redact::Redaction::Sensitive);
        serde_json::to_string_pretty(&redacted).expect("plans serialize")
    }

    /// A short hash of the plan's content, recorded in the journal.
    pub fn hash(&self) -> String {
        content::short_hash(self.to_json().as_bytes())
    }

    pub fn from_json(text: &str) -> Result<Plan, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Counts the changes for [`Plan::summary`].
    pub fn summarize(&mut self) {
        let mut s = PlanSummary::default();
        for c in &self.resource_changes {
            match c.action() {
                Action::NoOp => s.unchanged += 1,
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1
                }
                Action::Delete => s.destroy += 1,
                Action::Run => s.run += 1,
                Action::Rollout => s.rollout += 1,
            }
        }
        self.summary = s;
    }
}

/// A job's run id computed again from its planned value (`after`), as the planner
/// computes it from the spec: a saved plan whose restored values give another id was
/// made with other values.
pub fn run_id_of(job: &str, after: &Value) -> String {
    let field = |k: &str| after.get(k).cloned().unwrap_or(Value::Null);
    let identity = json!({
        "job": job,
        "compute": field("compute"),
        "instance_type": field("instance_type"),
        "image": field("image"),
        "command": field("command"),
        "env": after.get("env").cloned().unwrap_or_else(|| json!({})),
        "gpus": field("gpus"),
        "instances": field("instances"),
        "inputs": after.get("inputs").cloned().unwrap_or_else(|| json!({})),
    });
    content::short_hash(identity.to_string().as_bytes())
}

/// Lists the leaf fields that differ between two JSON values, in key order. Arrays of
/// scalars compare as a whole; arrays of tables element by element.
pub fn diff_values(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    diff_into(&mut out, String::new(), before, after);
    out
}

fn diff_into(
    out: &mut Vec<FieldChange>,
    path: String,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                diff_into(
                    out,
                    join(key),
                    b.get(key).filter(|v| !v.is_null()),
                    a.get(key).filter(|v| !v.is_null()),
                );
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a)))
            if b.iter().chain(a).any(|v| v.is_object()) =>
        {
            for i in 0..b.len().max(a.len()) {
                diff_into(out, format!("{path}[{i}]"), b.get(i), a.get(i));
            }
        }
        (b, a) if b != a => out.push(FieldChange {
            path,
            before: b.cloned(),
            after: a.cloned(),
        }),
        _ => {}
    }
}

/// "1 file", "3 files".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// "41.2 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_leaf_fields() {
        let b = json!({"a": 1, "env": {"X": "1", "Y": "2"}, "cmd": ["a", "b"]});
        let a = json!({"a": 1, "env": {"X": "1", "Z": "3"}, "cmd": ["a", "c"]});
        let paths: Vec<String> = diff_values(Some(&b), Some(&a))
            .into_iter()
            .map(|c| c.path)
            .collect();
        assert_eq!(paths, ["cmd", "env.Y", "env.Z"]);
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(42_188), "41.2 KiB");
    }
}

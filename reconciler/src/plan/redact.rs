//! Sensitive `env` values: which ones are secrets, hiding them in everything Cairn shows
//! or saves, and putting the real values back when a saved plan is applied.
//!
//! An `env` value (of a job, of an endpoint's deployment, or in a Kubernetes object's
//! container `env` list) is sensitive when its key looks like a secret ([`looks_sensitive`]:
//! `*_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, `*CREDENTIAL*`, any case) or when the
//! manifest lists the key in the resource's `sensitive = [...]`.
//!
//! Guarantees:
//! - Text, markdown and JSON plans ([`Redaction::Sensitive`]) show a sensitive value as
//!   [`REDACTED`]; a pull-request comment ([`Redaction::AllEnv`]) shows every `env` value
//!   that way, so it only tells that a value changed.
//! - A saved plan carries the redacted values. Applying it puts the real values back from
//!   the manifests ([`restore`]) and refuses when they are no longer the ones planned: a
//!   job's run id and a deployment's revision are hashes over its `env`, so they are
//!   computed again from the restored values and must match the plan's.
//!
//! This module hides values; it never decides what a change does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::address::Kind;
use crate::desired::DesiredState;
use crate::manifest::Spec;
use crate::plan::{FieldChange, Plan, ResourceChange};

/// What a hidden value is shown as.
pub const REDACTED: &str = "(sensitive)";

/// The patterns of [`looks_sensitive`], as documented.
pub const PATTERNS: &[&str] = &["*_KEY", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*CREDENTIAL*"];

/// Whether an `env` key looks like a secret: it ends with `_KEY` or contains `TOKEN`,
/// `SECRET`, `PASSWORD` or `CREDENTIAL`, in any case.
pub fn looks_sensitive(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    key.ends_with("_KEY")
        || ["TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"]
            .iter()
            .any(|w| key.contains(w))
}

/// Which `env` values to hide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// The sensitive ones (plans as text, markdown and JSON).
    Sensitive,
    /// All of them (pull-request comments).
    AllEnv,
}

/// Decides for one resource whether the `env` value of a key is hidden.
struct Rule<'a> {
    how: Redaction,
    marked: &'a [String],
}

impl Rule<'_> {
    fn hides(&self, key: &str) -> bool {
        self.how == Redaction::AllEnv
            || looks_sensitive(key)
            || self.marked.iter().any(|m| m == key)
    }
}

/// Returns a copy of `plan` with its `env` values hidden as `how` says.
pub fn plan(plan: &Plan, how: Redaction) -> Plan {
    let mut out = plan.clone();
    for change in &mut out.resource_changes {
        redact_change(change, how);
    }
    out
}

fn redact_change(change: &mut ResourceChange, how: Redaction) {
    let marked = std::mem::take(&mut change.sensitive);
    let rule = Rule {
        how,
        marked: &marked,
    };
    for value in [&mut change.before, &mut change.after]
        .into_iter()
        .flatten()
    {
        scrub(value, &rule);
    }
    for field in &mut change.changes {
        redact_field(field, &rule, None);
    }
    for object in &mut change.objects {
        if let Some(value) = &mut object.object {
            let desired = value.clone();
            scrub(value, &rule);
            for field in &mut object.changes {
                redact_field(field, &rule, Some(&desired));
            }
        } else {
            for field in &mut object.changes {
                redact_field(field, &rule, None);
            }
        }
    }
    change.sensitive = marked;
}

/// Hides the `env` values inside `value` (any depth).
fn scrub(value: &mut Value, rule: &Rule<'_>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "env" {
                    scrub_env(v, rule);
                } else {
                    scrub(v, rule);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, rule)),
        _ => {}
    }
}

/// Hides the values of an `env` table (`{KEY: value}`) or a Kubernetes `env` list
/// (`[{name, value}]`).
fn scrub_env(env: &mut Value, rule: &Rule<'_>) {
    match env {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if !v.is_null() && rule.hides(key) {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let Value::Object(entry) = item else {
                    continue;
                };
                let hide = match entry.get("name").and_then(Value::as_str) {
                    Some(name) => rule.hides(name),
                    None => true,
                };
                if hide {
                    if let Some(v) = entry.get_mut("value") {
                        *v = Value::String(REDACTED.into());
                    }
                }
            }
        }
        _ => {}
    }
}

/// One step of a field path: `env`, `[3]`.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into steps. Keys may contain no `.` or `[` (env keys are checked
/// for that at validate time); anything else is taken as a key.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(end) = rest.find(']') {
            match rest[1..end].parse() {
                Ok(i) => out.push(Step::Index(i)),
                Err(_) => out.push(Step::Key(&rest[1..end])),
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// Hides a field change's values where its path is (or is inside, or holds) an `env`.
/// `object` is the desired Kubernetes object the path points into, for the names of
/// list entries; an entry whose name can't be found is hidden.
fn redact_field(field: &mut FieldChange, rule: &Rule<'_>, object: Option<&Value>) {
    let steps = steps(&field.path);
    let hide_all = match steps.iter().rposition(|s| *s == Step::Key("env")) {
        None => false,
        // The whole `env` changed: hide inside it.
        Some(i) if i + 1 == steps.len() => {
            for v in [&mut field.before, &mut field.after].into_iter().flatten() {
                scrub_env(v, rule);
            }
            false
        }
        Some(i) => match &steps[i + 1] {
            Step::Key(key) => rule.hides(key),
            Step::Index(_) => {
                // A list entry (`env[3]` or `env[3].value`): find its name.
                let name = object
                    .and_then(|o| lookup(o, &steps[..i + 2]))
                    .and_then(|e| e.get("name").and_then(Value::as_str).map(str::to_string));
                match (steps.get(i + 2), name) {
                    (Some(Step::Key("name")), _) => false,
                    (_, Some(name)) => rule.hides(&name),
                    (_, None) => true,
                }
            }
        },
    };
    for v in [&mut field.before, &mut field.after].into_iter().flatten() {
        if hide_all {
            if v.is_object() {
                scrub_env(
                    v,
                    &Rule {
                        how: Redaction::AllEnv,
                        marked: &[],
                    },
                );
            } else {
                *v = Value::String(REDACTED.into());
            }
        } else {
            // Anything nested below the path (a whole container, a whole deployment).
            scrub(v, rule);
        }
    }
}

fn lookup<'v>(value: &'v Value, steps: &[Step<'_>]) -> Option<&'v Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get(*k),
        Step::Index(i) => v.get(*i),
    })
}

/// Errors from putting a saved plan's hidden values back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{address} is no longer declared in the manifests, so its hidden values can't be restored"
    )]
    Gone { address: String },
    #[error("{address}: the manifests no longer declare `{key}` in {what}")]
    MissingKey {
        address: String,
        what: String,
        key: String,
    },
    #[error("{address}: the manifests' `env` of {what} changed since the plan was made")]
    Changed { address: String, what: String },
}

/// Puts the real values of a (saved, redacted) plan's hidden `env` values back from the
/// manifests, and checks that they are the values the plan was made with.
pub fn restore(plan: &mut Plan, desired: &DesiredState) -> Result<(), Error> {
    for change in &mut plan.resource_changes {
        if !mentions_redacted(change) {
            continue;
        }
        let address = change.address.clone();
        let resource = desired
            .resources
            .iter()
            .find(|r| r.address.to_string() == address)
            .ok_or_else(|| Error::Gone {
                address: address.clone(),
            })?;
        match (&resource.spec, change.kind) {
            (Spec::Job(spec), Kind::Job) => {
                let env = &spec.env;
                if let Some(after) = &mut change.after {
                    restore_env(after.get_mut("env"), env, &address, "the job")?;
                    let planned = after.get("run_id").and_then(Value::as_str);
                    if planned.is_some()
                        && planned != Some(super::run_id_of(&change.name, after).as_str())
                    {
                        return Err(Error::Changed {
                            address,
                            what: "the job".into(),
                        });
                    }
                }
                for object in &mut change.objects {
                    if let Some(o) = &mut object.object {
                        restore_lists(o, env, &address)?;
                    }
                }
            }
            (Spec::Endpoint(spec), Kind::Endpoint) => {
                let specs: BTreeMap<String, &crate::manifest::DeploymentSpec> = spec
                    .deployments
                    .iter()
                    .map(|(name, d)| (name.get_ref().clone(), d.get_ref()))
                    .collect();
                if let Some(deployments) = change
                    .after
                    .as_mut()
                    .and_then(|a| a.get_mut("deployments"))
                    .and_then(Value::as_object_mut)
                {
                    for (name, d) in deployments.iter_mut() {
                        let what = format!("deployment `{name}`");
                        let declared = specs.get(name).ok_or_else(|| Error::MissingKey {
                            address: address.clone(),
                            what: "the endpoint".into(),
                            key: name.clone(),
                        })?;
                        restore_env(d.get_mut("env"), &declared.env, &address, &what)?;
                        let version = d.get("version").and_then(Value::as_str).unwrap_or("");
                        let planned = d.get("revision").and_then(Value::as_str);
                        let revision = super::endpoint::deployment_revision(version, declared);
                        if planned.is_some() && planned != Some(revision.as_str()) {
                            return Err(Error::Changed { address, what });
                        }
                    }
                }
                for object in &mut change.objects {
                    let Some(o) = &mut object.object else {
                        continue;
                    };
                    let deployment = o
                        .pointer("/metadata/labels")
                        .and_then(|l| l.get(super::objects::DEPLOYMENT_LABEL))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    match deployment.and_then(|d| specs.get(&d).map(|s| &s.env)) {
                        Some(env) => restore_lists(o, env, &address)?,
                        None => restore_lists(o, &BTreeMap::new(), &address)?,
                    }
                }
            }
            _ => {}
        }
        if let Some(after) = &change.after {
            if holds_redacted(after) {
                return Err(Error::Changed {
                    address,
                    what: "this resource".into(),
                });
            }
        }
    }
    Ok(())
}

fn mentions_redacted(change: &ResourceChange) -> bool {
    change.after.as_ref().is_some_and(holds_redacted)
        || change
            .objects
            .iter()
            .any(|o| o.object.as_ref().is_some_and(holds_redacted))
}

fn holds_redacted(value: &Value) -> bool {
    match value {
        Value::String(s) => s == REDACTED,
        Value::Array(items) => items.iter().any(holds_redacted),
        Value::Object(map) => map.values().any(holds_redacted),
        _ => false,
    }
}

/// Puts the manifests' values into an `env` table wherever the plan hid them.
fn restore_env(
    planned: Option<&mut Value>,
    env: &BTreeMap<String, String>,
    address: &str,
    what: &str,
) -> Result<(), Error> {
    let Some(Value::Object(map)) = planned else {
        return Ok(());
    };
    for (key, v) in map.iter_mut() {
        if v.as_str() == Some(REDACTED) {
            let real = env.get(key).ok_or_else(|| Error::MissingKey {
                address: address.to_string(),
                what: what.to_string(),
                key: key.clone(),
            })?;
            *v = Value::String(real.clone());
        }
    }
    Ok(())
}

/// Puts the manifests' values into every Kubernetes `env` list of `object` wherever the
/// plan hid them.
fn restore_lists(
    object: &mut Value,
    env: &BTreeMap<String, String>,
    address: &str,
) -> Result<(), Error> {
    match object {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "env" {
                    if let Value::Array(items) = v {
                        for item in items {
                            let name = item.get("name").and_then(Value::as_str).map(str::to_string);
                            let Some(value) = item.get_mut("value") else {
                                continue;
                            };
                            if value.as_str() != Some(REDACTED) {
                                continue;
                            }
                            let name = name.unwrap_or_default();
                            let real = env.get(&name).ok_or_else(|| Error::MissingKey {
                                address: address.to_string(),
                                what: "a Kubernetes object".into(),
                                key: name.clone(),
                            })?;
                            *value = Value::String(real.clone());
                        }
                        continue;
                    }
                }
                restore_lists(v, env, address)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                restore_lists(item, env, address)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The `env` keys a resource's manifest marks sensitive (for an endpoint, those of all
/// its deployments).
pub fn marked(spec: &Spec) -> Vec<String> {
    let keys: BTreeSet<String> = match spec {
        Spec::Job(job) => job.sensitive.iter().map(|k| k.get_ref().clone()).collect(),
        Spec::Endpoint(endpoint) => endpoint
            .deployments
            .values()
            .flat_map(|d| d.get_ref().sensitive.iter().map(|k| k.get_ref().clone()))
            .collect(),
        _ => BTreeSet::new(),
    };
    keys.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns() {
        for key in [
            "AWS_SECRET_ACCESS_KEY",
            "GITHUB_TOKEN",
            "db_password",
            "API_KEY",
            "hf_token_x",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "ClientSecret",
        ] {
            assert!(looks_sensitive(key), "{key}");
        }
        for key in ["SEED", "KEYBOARD", "DB_USER", "MONKEY"] {
            assert!(!looks_sensitive(key), "{key}");
        }
    }

    #[test]
    fn paths_split_into_steps() {
        assert_eq!(
            steps("spec.containers[0].env[3].value"),
            [
                Step::Key("spec"),
                Step::Key("containers"),
                Step::Index(0),
                Step::Key("env"),
                Step::Index(3),
                Step::Key("value"),
            ]
        );
        assert_eq!(
            steps("deployments.blue.env.X"),
            [
                Step::Key("deployments"),
                Step::Key("blue"),
                Step::Key("env"),
                Step::Key("X"),
            ]
        );
    }

    #[test]
    fn fields_are_hidden_by_key_and_by_list_entry_name() {
        let rule = Rule {
            how: Redaction::Sensitive,
            marked: &["DB_USER".to_string()],
        };
        let field = |path: &str, b: Value, a: Value| FieldChange {
            path: path.into(),
            before: Some(b),
            after: Some(a),
        };
        let mut f = field("env.DB_PASSWORD", json!("old-pw"), json!("new-pw"));
        redact_field(&mut f, &rule, None);
        assert_eq!(
            (f.before, f.after),
            (Some(json!(REDACTED)), Some(json!(REDACTED)))
        );
        let mut f = field("deployments.blue.env.DB_USER", json!("u1"), json!("u2"));
        redact_field(&mut f, &rule, None);
        assert_eq!(f.after, Some(json!(REDACTED)));
        let mut f = field("env.SEED", json!("1"), json!("2"));
        redact_field(&mut f, &rule, None);
        assert_eq!(f.after, Some(json!("2")));
        let mut f = field(
            "env",
            json!({"SEED": "1"}),
            json!({"SEED": "2", "API_KEY": "k"}),
        );
        redact_field(&mut f, &rule, None);
        assert_eq!(f.after, Some(json!({"SEED": "2", "API_KEY": REDACTED})));

        let object = json!({"spec": {"containers": [{"env": [
            {"name": "SEED", "value": "2"},
            {"name": "API_KEY", "value": "k"},
        ]}]}});
        let mut f = field("spec.containers[0].env[1].value", json!("j"), json!("k"));
        redact_field(&mut f, &rule, Some(&object));
        assert_eq!(f.after, Some(json!(REDACTED)));
        let mut f = field("spec.containers[0].env[0].value", json!("1"), json!("2"));
        redact_field(&mut f, &rule, Some(&object));
        assert_eq!(f.after, Some(json!("2")));
        // An entry whose name is unknown is hidden.
        let mut f = field("spec.containers[0].env[7].value", json!("1"), json!("2"));
        redact_field(&mut f, &rule, Some(&object));
        assert_eq!(f.after, Some(json!(REDACTED)));
    }

    /// An endpoint's deployments and a Kubernetes Deployment's container `env`, in every
    /// rendering of a plan.
    fn endpoint_plan() -> Plan {
        let container = |pw: &str, seed: &str| {
            json!({"spec": {"template": {"spec": {"containers": [{"name": "server", "env": [
                {"name": "DB_PASSWORD", "value": pw},
                {"name": "DB_USER", "value": "user-PLANTED"},
                {"name": "SEED", "value": seed},
            ]}]}}}})
        };
        let plan = json!({
            "format_version": "1", "cairn_version": "0.1.0",
            "source": {"root": "manifests"},
            "workspaces": [{"name": "risk", "store": "file://.cairn/store", "state_serial": 1}],
            "resource_changes": [{
                "address": "risk/endpoint.api", "workspace": "risk", "kind": "endpoint",
                "name": "api", "actions": ["update"], "reason": "env changed",
                "sensitive": ["DB_USER"],
                "before": {"deployments": {"blue": {"env": {"DB_PASSWORD": "pw-PLANTED-1", "DB_USER": "user-PLANTED", "SEED": "1"}}}},
                "after": {"deployments": {"blue": {"env": {"DB_PASSWORD": "pw-PLANTED-2", "DB_USER": "user-PLANTED", "SEED": "2"}}}},
                "changes": [
                    {"path": "deployments.blue.env.DB_PASSWORD", "before": "pw-PLANTED-1", "after": "pw-PLANTED-2"},
                    {"path": "deployments.blue.env.SEED", "before": "1", "after": "2"},
                    {"path": "deployments.green", "after": {"env": {"DB_USER": "user-PLANTED"}, "replicas": 1}}
                ],
                "objects": [{
                    "action": "update", "api_version": "v1", "kind": "Workload",
                    "namespace": "risk", "name": "api-blue",
                    "changes": [
                        {"path": "spec.template.spec.containers[0].env[0].value", "before": "pw-PLANTED-1", "after": "pw-PLANTED-2"},
                        {"path": "spec.template.spec.containers[0].env[2].value", "before": "1", "after": "2"}
                    ],
                    "object": container("pw-PLANTED-2", "2")
                }]
            }],
            "summary": {"add": 0, "change": 1, "destroy": 0, "run": 0, "rollout": 0, "unchanged": 0}
        });
        serde_json::from_value(plan).unwrap()
    }

    #[test]
    fn an_endpoint_plan_shows_no_sensitive_value_anywhere() {
        let plan = endpoint_plan();
        let text = crate::view::text(&plan, false);
        let markdown = crate::view::markdown(&plan, crate::view::PLAN_MARKDOWN_TEMPLATE).unwrap();
        let json = plan.to_json();
        let comment = crate::github::comment::render(
            &crate::github::comment::CommentInput {
                plan: &plan,
                key: "risk",
                pr: None,
            },
            crate::github::comment::COMMENT_TEMPLATE,
        )
        .unwrap();
        for (what, out) in [
            ("text", &text),
            ("markdown", &markdown),
            ("json", &json),
            ("comment", &comment),
        ] {
            for planted in ["pw-PLANTED", "user-PLANTED"] {
                assert!(
                    !out.contains(planted),
                    "the {what} plan shows {planted}:\n{out}"
                );
            }
        }
        // Not sensitive: shown, except in the comment.
        assert!(
            text.contains("deployments.blue.env.SEED: \"1\" → \"2\""),
            "{text}"
        );
        assert!(text.contains("env[2].value: \"1\" → \"2\""), "{text}");
        assert!(!comment.contains("\"2\""), "{comment}");
    }

    /// The example's `credit-risk` workspace, its deployment `blue` with `env`.
    fn desired_with_env(dir: &std::path::Path, env: &str) -> DesiredState {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        let root = dir.join("manifests");
        for entry in [
            "credit-risk/workspace.toml",
            "credit-risk/compute.toml",
            "credit-risk/serve.toml",
        ] {
            let to = root.join(entry);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(example.join(entry), &to).unwrap();
        }
        std::fs::write(
            root.join("credit-risk/model.toml"),
            "[model.risk-scorer]\nsource = \"model/\"\nformat = \"custom\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("credit-risk/model")).unwrap();
        std::fs::write(root.join("credit-risk/model/w.bin"), "w").unwrap();
        let serve = root.join("credit-risk/serve.toml");
        let text = std::fs::read_to_string(&serve).unwrap().replace(
            "replicas = 2\n",
            &format!("replicas = 2\nenv = {{ {env} }}\nsensitive = [\"DB_USER\"]\n"),
        );
        std::fs::write(&serve, text).unwrap();
        let snapshot = crate::manifest::source::load_folder(&root).unwrap();
        crate::desired::resolve(&snapshot)
            .unwrap_or_else(|d| panic!("{d:?}"))
            .state
    }

    #[test]
    fn a_saved_endpoint_plan_gets_its_values_back_or_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let env: BTreeMap<String, String> = [
            ("DB_PASSWORD", "pw-PLANTED"),
            ("DB_USER", "user-PLANTED"),
            ("SEED", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let revision = crate::plan::endpoint::revision("v1", &env);
        let real =
            json!({"deployments": {"blue": {"version": "v1", "revision": revision, "env": env}}});
        let mut plan = endpoint_plan();
        plan.resource_changes[0].address = "credit-risk/endpoint.risk-api".into();
        plan.resource_changes[0].after = Some(real.clone());
        plan.resource_changes[0].objects.clear();
        let saved = Plan::from_json(&plan.to_json()).unwrap();
        assert!(!plan.to_json().contains("PLANTED"), "{}", plan.to_json());

        let desired = desired_with_env(
            dir.path(),
            "DB_PASSWORD = \"pw-PLANTED\", DB_USER = \"user-PLANTED\", SEED = \"1\"",
        );
        let mut restored = saved.clone();
        restore(&mut restored, &desired).unwrap();
        assert_eq!(restored.resource_changes[0].after, Some(real));

        let changed = desired_with_env(
            dir.path(),
            "DB_PASSWORD = \"pw-PLANTED-2\", DB_USER = \"user-PLANTED\", SEED = \"1\"",
        );
        let mut stale = saved;
        let err = restore(&mut stale, &changed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "credit-risk/endpoint.risk-api: the manifests' `env` of deployment `blue` changed since the plan was made"
        );
    }

    #[test]
    fn comments_hide_every_env_value() {
        let rule = Rule {
            how: Redaction::AllEnv,
            marked: &[],
        };
        let mut v = json!({"env": {"SEED": "1"}, "command": ["a"]});
        scrub(&mut v, &rule);
        assert_eq!(v, json!({"env": {"SEED": REDACTED}, "command": ["a"]}));
    }
}

//! Plans as text (for terminals and logs), markdown (for pull-request comments, through
//! the minijinja template `templates/plan.md.j2`) and JSON. Rendering returns strings; the
//! CLI decides where they go.

use std::fmt::Write as _;

use minijinja::Environment;
use owo_colors::OwoColorize;
use serde_json::Value;

use crate::plan::{Action, Plan, ResourceChange};
use crate::plan::{PolicyMessage, PolicyReport};
use crate::rollout::describe_weights;

/// The markdown template shipped with Cairn.
pub const PLAN_MARKDOWN_TEMPLATE: &str = include_str!("../../templates/plan.md.j2");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the plan template failed to render")]
    Template(#[source] minijinja::Error),
}

/// Returns the summary line: `Plan: 2 to add, 1 to change, 0 to destroy, 1 to run, 1 to roll out.`
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    format!(
        "Plan: {} to add, {} to change, {} to destroy, {} to run, {} to roll out.",
        s.add, s.change, s.destroy, s.run, s.rollout
    )
}

fn paint(text: &str, action: Action, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    match action {
        Action::Create => text.green().to_string(),
        Action::Update | Action::Rollout => text.yellow().to_string(),
        Action::Replace | Action::Delete => text.red().to_string(),
        Action::Run => text.cyan().to_string(),
        Action::NoOp => text.to_string(),
    }
}

/// Shows a JSON value compactly: strings quoted, a hidden value as `(sensitive)`.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) if s == crate::plan::redact::REDACTED => s.clone(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The plan for a terminal or a log, with its sensitive `env` values hidden.
pub fn text(plan: &Plan, color: bool) -> String {
    let plan = &crate::plan::redact::plan(plan, crate::plan::redact::Redaction::Sensitive);
    let mut out = String::new();
    let source = match (&plan.revision, &plan.source.rev) {
        (Some(commit), Some(rev)) => format!(
            "{} at {rev} ({})",
            plan.source.root,
            &commit[..commit.len().min(7)]
        ),
        _ => format!("{} (working tree)", plan.source.root),
    };
    if let Some(report) = &plan.policy {
        out.push_str(&policy_text(report, color));
    }
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "No changes. The store and targets match the manifests in {source}."
        );
        for note in &plan.notes {
            let _ = writeln!(out, "Note: {note}");
        }
        return out;
    }
    let _ = writeln!(
        out,
        "Cairn will perform these actions (manifests: {source}):\n"
    );
    for change in plan.changes() {
        write_change(&mut out, change, color);
    }
    for note in &plan.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    if !plan.notes.is_empty() {
        out.push('\n');
    }
    let line = summary_line(plan);
    if color {
        let _ = writeln!(out, "{}", line.bold());
    } else {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The policies' deny and warn messages, one block each, or nothing when there are none.
pub fn policy_text(report: &PolicyReport, color: bool) -> String {
    let mut out = String::new();
    let mut block = |messages: &[PolicyMessage], head: &str, mark: &str| {
        if messages.is_empty() {
            return;
        }
        let head = match (color, mark) {
            (false, _) => head.to_string(),
            (true, "✗") => head.red().bold().to_string(),
            (true, _) => head.yellow().bold().to_string(),
        };
        let _ = writeln!(out, "{head}");
        for m in messages {
            let what = match (&m.address, &m.file) {
                (Some(address), Some(file)) => format!("{address} ({file}): "),
                (Some(address), None) => format!("{address}: "),
                (None, Some(file)) => format!("{file}: "),
                (None, None) => String::new(),
            };
            let _ = writeln!(out, "  {mark} {what}{}", m.message);
            let _ = writeln!(out, "      {}", m.policy);
        }
        out.push('\n');
    };
    block(
        &report.deny,
        "Denied by policy (nothing can be applied until these are fixed):",
        "✗",
    );
    block(&report.warn, "Policy warnings:", "!");
    out
}

fn write_change(out: &mut String, change: &ResourceChange, color: bool) {
    let action = change.action();
    let head = format!("{:>3} {}", action.symbol(), change.address);
    let _ = writeln!(out, "{}", paint(&head, action, color));
    let _ = writeln!(out, "      {}", change.reason);
    write_fields(out, &change.changes, "      ");
    if let Some(r) = &change.rollout {
        let _ = writeln!(out, "      rollout: {}", r.summary);
        for (i, step) in r.steps.iter().enumerate() {
            let _ = writeln!(out, "        step {}: {}", i + 1, describe_weights(step));
        }
    }
    let objects: Vec<_> = change
        .objects
        .iter()
        .filter(|o| o.action != Action::NoOp)
        .collect();
    if !objects.is_empty() {
        let _ = writeln!(out, "      objects:");
        for o in objects {
            let head = format!("      {:>3} {}", o.action.symbol(), o.describe());
            let _ = writeln!(out, "{}", paint(&head, o.action, color));
            if !o.immutable.is_empty() {
                let _ = writeln!(
                    out,
                    "            replaced: {} can't change in place",
                    o.immutable.join(", ")
                );
            }
            write_fields(out, &o.changes, "            ");
        }
    }
    out.push('\n');
}

fn write_fields(out: &mut String, fields: &[crate::plan::FieldChange], indent: &str) {
    for field in fields {
        let multiline = [&field.before, &field.after].iter().any(|v| {
            v.as_ref()
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains('\n'))
        });
        if multiline {
            let before = field.before.as_ref().and_then(Value::as_str).unwrap_or("");
            let after = field.after.as_ref().and_then(Value::as_str).unwrap_or("");
            let _ = writeln!(out, "{indent}~ {}:", field.path);
            let diff = similar::TextDiff::from_lines(before, after);
            for line in diff.iter_all_changes() {
                let sign = match line.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                let _ = write!(out, "{indent}    {sign} {line}");
                if line.missing_newline() {
                    out.push('\n');
                }
            }
            continue;
        }
        let line = match (&field.before, &field.after) {
            (Some(b), Some(a)) => format!("{indent}~ {}: {} → {}", field.path, show(b), show(a)),
            (None, Some(a)) => format!("{indent}+ {}: {}", field.path, show(a)),
            (Some(b), None) => format!("{indent}- {}: {}", field.path, show(b)),
            (None, None) => continue,
        };
        let _ = writeln!(out, "{line}");
    }
}

/// The plan as markdown, rendered from `template` (normally [`PLAN_MARKDOWN_TEMPLATE`]).
/// Sensitive `env` values are hidden.
pub fn markdown(plan: &Plan, template: &str) -> Result<String, Error> {
    let plan = &crate::plan::redact::plan(plan, crate::plan::redact::Redaction::Sensitive);
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template("plan.md", template)
        .map_err(Error::Template)?;
    let changes: Vec<Value> = plan
        .changes()
        .map(|c| {
            serde_json::json!({
                "address": c.address,
                "action": c.action().as_str(),
                "symbol": c.action().symbol(),
                "reason": c.reason,
                "rollout": c.rollout.as_ref().map(|r| serde_json::json!({
                    "summary": r.summary,
                    "steps": r.steps.iter().map(describe_weights).collect::<Vec<_>>(),
                })),
                "fields": c.changes.iter().map(|f| serde_json::json!({
                    "path": f.path,
                    "before": f.before.as_ref().map(show),
                    "after": f.after.as_ref().map(show),
                })).collect::<Vec<_>>(),
                "objects": c.objects.iter().filter(|o| o.action != Action::NoOp).map(|o| serde_json::json!({
                    "symbol": o.action.symbol(),
                    "action": o.action.as_str(),
                    "object": o.describe(),
                    "fields": o.changes.iter().map(|f| serde_json::json!({
                        "path": f.path,
                        "before": f.before.as_ref().map(show),
                        "after": f.after.as_ref().map(show),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let tmpl = env.get_template("plan.md").map_err(Error::Template)?;
    tmpl.render(minijinja::context! {
        plan => plan,
        changes => changes,
        summary => plan.summary,
    })
    .map_err(Error::Template)
}

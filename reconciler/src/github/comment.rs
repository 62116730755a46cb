//! The plan as a pull-request comment: rendered from `templates/comment.md.j2` (policy
//! results first, a summary table per workspace, the resources the pull request
//! touches, a mermaid graph of the changed resources and what they wait for, one
//! collapsible section per changed resource, the commit planned), then split into
//! numbered parts that each fit in one GitHub comment.
//!
//! Splitting: the template puts [`SPLIT`] lines between sections (before each
//! resource's `<details>` and before the footer). Parts break only there, so a code
//! block or a `<details>` is never cut in two. A single section larger than a part
//! (one resource with an enormous diff) is shortened at a line boundary, its open code
//! fence and `<details>` closed, with a note saying so. Each part starts with the hidden
//! marker [`marker`] (`<!-- cairn:plan key=… part=i/n -->`) that finds it again.
//!
//! Rendering is deterministic: the same plan and inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::Environment;
use serde::Serialize;
use serde_json::Value;

use crate::changes::PullRequestChanges;
use crate::plan::{Action, Plan, ResourceChange};
use crate::rollout::describe_weights;

/// The comment template shipped with Cairn.
pub const COMMENT_TEMPLATE: &str = include_str!("../../../templates/comment.md.j2");

/// GitHub's limit on a comment body.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;

/// The line between sections that a comment may be split at.
pub const SPLIT: &str = "<!-- cairn:split -->";

/// The prefix of every plan comment's marker.
pub const MARKER_PREFIX: &str = "<!-- cairn:plan key=";

/// Changed resources drawn in the graph at most; GitHub's mermaid gives up on huge
/// graphs, and past a few dozen nodes the picture stops helping.
pub const GRAPH_MAX_NODES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the comment template failed to render")]
    Template(#[source] minijinja::Error),
}

/// What goes into a comment besides the plan.
#[derive(Debug, Clone, Copy)]
pub struct CommentInput<'a> {
    pub plan: &'a Plan,
    /// The workspace set (see [`key_for`]).
    pub key: &'a str,
    /// What the pull request changes, when known.
    pub pr: Option<&'a PullRequestChanges>,
}

/// The key of a plan comment: the planned workspaces, sorted, comma-separated. One
/// sticky comment exists per pull request and key.
pub fn key_for(plan: &Plan) -> String {
    let names: BTreeSet<&str> = plan.workspaces.iter().map(|w| w.name.as_str()).collect();
    let key = names.into_iter().collect::<Vec<_>>().join(",");
    sanitize_key(if key.is_empty() { "all" } else { &key })
}

/// Keeps a key inside its HTML comment: no spaces, no `>`.
pub fn sanitize_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_whitespace() || c == '>' || c == '<' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The hidden marker on top of part `part` of `parts`.
pub fn marker(key: &str, part: usize, parts: usize) -> String {
    format!("{MARKER_PREFIX}{key} part={part}/{parts} -->")
}

/// Reads a plan comment's marker: `(key, part)`. `None` for other comments.
pub fn parse_marker(body: &str) -> Option<(String, usize)> {
    let start = body.find(MARKER_PREFIX)? + MARKER_PREFIX.len();
    let rest = &body[start..];
    let end = rest.find("-->")?;
    let inside = &rest[..end];
    let mut words = inside.split_whitespace();
    let key = words.next()?.to_string();
    let mut part = 1;
    for w in words {
        if let Some(p) = w.strip_prefix("part=") {
            part = p.split('/').next()?.parse().ok()?;
        }
    }
    Some((key, part))
}

/// Renders the whole comment (with [`SPLIT`] lines, without markers).
pub fn render(input: &CommentInput<'_>, template: &str) -> Result<String, Error> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
    env.add_filter("cell", |s: String| escape_cell(&s));
    env.add_filter("html", |s: String| escape_html(&s));
    env.add_template("comment.md", template)
        .map_err(Error::Template)?;
    // A pull request is read by more people than the plan's makers: every `env` value
    // is hidden, so the comment tells only that a value changed.
    let redacted = crate::plan::redact::plan(input.plan, crate::plan::redact::Redaction::AllEnv);
    let plan = &redacted;
    let changes: Vec<&ResourceChange> = plan.changes().collect();
    let tmpl = env.get_template("comment.md").map_err(Error::Template)?;
    let revision = plan.revision.clone();
    let rendered = tmpl
        .render(minijinja::context! {
            key => input.key,
            revision => revision,
            revision_short => plan.revision.as_deref().map(short),
            rev => plan.source.rev,
            uncommitted => plan.source.uncommitted,
            summary => plan.summary,
            workspaces => workspace_rows(plan),
            policy => plan.policy.as_ref().map(|p| serde_json::json!({
                "denied": p.denied(),
                "deny": p.deny,
                "warn": p.warn,
                "policies": p.policies,
            })),
            changes => changes.iter().map(|c| change_view(c)).collect::<Vec<_>>(),
            graph => graph(&changes),
            pr => input.pr.map(pr_view),
            notes => plan.notes,
            version => plan.cairn_version,
            split => SPLIT,
        })
        .map_err(Error::Template)?;
    Ok(rendered)
}

/// Renders and splits: the comment's parts, each with its marker and at most
/// [`GITHUB_COMMENT_LIMIT`] bytes.
pub fn build(input: &CommentInput<'_>, template: &str) -> Result<Vec<String>, Error> {
    let body = render(input, template)?;
    Ok(split(&body, input.key, GITHUB_COMMENT_LIMIT))
}

fn short(commit: &str) -> String {
    commit.chars().take(7).collect()
}

#[derive(Serialize, Default)]
struct WorkspaceRow {
    name: String,
    add: usize,
    change: usize,
    destroy: usize,
    run: usize,
    rollout: usize,
}

/// Counts per workspace, as the plan's summary counts them.
fn workspace_rows(plan: &Plan) -> Vec<WorkspaceRow> {
    let mut rows: BTreeMap<&str, WorkspaceRow> = BTreeMap::new();
    for w in &plan.workspaces {
        rows.entry(&w.name).or_insert_with(|| WorkspaceRow {
            name: w.name.clone(),
            ..WorkspaceRow::default()
        });
    }
    for c in plan.changes() {
        let row = rows
            .entry(c.workspace.as_str())
            .or_insert_with(|| WorkspaceRow {
                name: c.workspace.clone(),
                ..WorkspaceRow::default()
            });
        match c.action() {
            Action::NoOp => {}
            Action::Create => row.add += 1,
            Action::Update => row.change += 1,
            Action::Replace => {
                row.add += 1;
                row.destroy += 1;
            }
            Action::Delete => row.destroy += 1,
            Action::Run => row.run += 1,
            Action::Rollout => row.rollout += 1,
        }
    }
    rows.into_values().collect()
}

/// A changed resource as the template shows it.
fn change_view(c: &ResourceChange) -> Value {
    let mut lines = Vec::new();
    for f in &c.changes {
        field_lines(&mut lines, &f.path, f.before.as_ref(), f.after.as_ref());
    }
    // A new or removed resource has no field diff: show what it will be or was.
    if c.changes.is_empty() {
        let (value, created) = match c.action() {
            Action::Delete => (c.before.as_ref(), false),
            _ => (c.after.as_ref(), true),
        };
        if let Some(Value::Object(fields)) = value {
            let empty = |v: &Value| match v {
                Value::Null => true,
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            for (key, v) in fields.iter().filter(|(_, v)| !empty(v)) {
                let (before, after) = if created {
                    (None, Some(v))
                } else {
                    (Some(v), None)
                };
                field_lines(&mut lines, key, before, after);
            }
        }
    }
    let longest_run = lines.iter().map(|l| backtick_run(l)).max().unwrap_or(0);
    serde_json::json!({
        "address": c.address,
        "symbol": c.action().symbol(),
        "action": c.action().as_str(),
        "reason": c.reason,
        "fence": "`".repeat(longest_run.max(2) + 1),
        "lines": lines,
        "rollout": c.rollout.as_ref().map(|r| serde_json::json!({
            "summary": r.summary,
            "steps": r.steps.iter().map(describe_weights).collect::<Vec<_>>(),
        })),
    })
}

/// Shows a JSON value compactly: strings quoted, everything else as JSON, a hidden
/// value as `(sensitive)`.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) if s == crate::plan::redact::REDACTED => s.clone(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The diff lines of one field: `- path: before` / `+ path: after`, or for multi-line
/// strings a line diff under `~ path:`.
pub(crate) fn field_lines(
    out: &mut Vec<String>,
    path: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    let multiline = [before, after]
        .iter()
        .any(|v| v.and_then(Value::as_str).is_some_and(|s| s.contains('\n')));
    if multiline {
        let b = before.and_then(Value::as_str).unwrap_or("");
        let a = after.and_then(Value::as_str).unwrap_or("");
        out.push(format!("  {path}:"));
        let diff = similar::TextDiff::from_lines(b, a);
        for line in diff.iter_all_changes() {
            let sign = match line.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            };
            out.push(format!(
                "{sign}     {}",
                line.value().trim_end_matches('\n')
            ));
        }
        return;
    }
    if let Some(b) = before {
        out.push(format!("- {path}: {}", show(b)));
    }
    if let Some(a) = after {
        out.push(format!("+ {path}: {}", show(a)));
    }
}

pub(crate) fn backtick_run(line: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in line.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// The mermaid graph: changed resources and what they wait for (`depends_on`), with
/// unchanged dependencies drawn dashed. `None` when nothing changed.
fn graph(changes: &[&ResourceChange]) -> Option<Value> {
    if changes.is_empty() {
        return None;
    }
    let drawn: Vec<&ResourceChange> = changes.iter().take(GRAPH_MAX_NODES).copied().collect();
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    let mut nodes: Vec<Value> = Vec::new();
    let mut node = |label: String, class: &str| -> String {
        let id = format!("n{}", nodes.len());
        nodes.push(serde_json::json!({
            "id": id,
            "label": mermaid_label(&label),
            "class": class,
        }));
        id
    };
    for c in &drawn {
        let id = node(
            format!("{} {}", c.action().symbol(), c.address),
            c.action().as_str(),
        );
        ids.insert(&c.address, id);
    }
    let mut edges = Vec::new();
    let mut seen = BTreeSet::new();
    for c in &drawn {
        for dep in &c.depends_on {
            let from = match ids.get(dep.as_str()) {
                Some(id) => id.clone(),
                None => {
                    let id = node(dep.clone(), "unchanged");
                    ids.insert(dep, id.clone());
                    id
                }
            };
            let to = ids[c.address.as_str()].clone();
            if seen.insert((from.clone(), to.clone())) {
                edges.push(serde_json::json!({ "from": from, "to": to }));
            }
        }
    }
    Some(serde_json::json!({
        "nodes": nodes,
        "edges": edges,
        "omitted": changes.len() - drawn.len(),
    }))
}

/// A mermaid node label inside `"…"`: quotes and markup characters as entities.
fn mermaid_label(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            _ => out.push(c),
        }
    }
    out
}

fn pr_view(pr: &PullRequestChanges) -> Value {
    serde_json::json!({
        "files": pr.changed.files.len(),
        "outside": pr.changed.outside,
        "base_short": short(&pr.changed.base),
        "head_short": short(&pr.changed.head),
        "touched": pr.touched,
        "note": pr.note,
    })
}

fn escape_cell(text: &str) -> String {
    escape_html(text).replace('|', "\\|").replace('\n', " ")
}

pub(crate) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Room kept in each part for its marker and "part i of n" line.
const HEADER_ROOM: usize = 256;

/// Splits a rendered comment into parts of at most `limit` bytes each (markers
/// included), breaking only at [`SPLIT`] lines, which are removed. Each part starts with
/// its [`marker`]; when there is more than one, a "Part i of n" line follows it.
pub fn split(body: &str, key: &str, limit: usize) -> Vec<String> {
    let budget = limit.saturating_sub(HEADER_ROOM).max(1024);
    let sections: Vec<String> = body
        .split(&format!("{SPLIT}\n"))
        .flat_map(|s| s.split(SPLIT))
        .map(str::to_string)
        .collect();
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    for section in sections {
        let section = if section.len() > budget {
            shorten(&section, budget)
        } else {
            section
        };
        if !current.is_empty() && current.len() + section.len() > budget {
            parts.push(std::mem::take(&mut current));
        }
        current.push_str(&section);
    }
    if !current.trim().is_empty() || parts.is_empty() {
        parts.push(current);
    }
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let mut out = marker(key, i + 1, n);
            out.push('\n');
            if n > 1 {
                if i == 0 {
                    out.push_str(&format!(
                        "<sub>Part 1 of {n}. The plan continues in the next comments.</sub>\n\n"
                    ));
                } else {
                    out.push_str(&format!(
                        "**Cairn plan for `{key}`, part {} of {n}** (continued)\n",
                        i + 1
                    ));
                }
            }
            out.push_str(&text);
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out
        })
        .collect()
}

/// Cuts one section to `budget` bytes at a line boundary, closing a code fence and any
/// `<details>` left open, and says that it was cut.
pub(crate) fn shorten(section: &str, budget: usize) -> String {
    let note_room = 300;
    let mut out = String::new();
    let mut fence: Option<String> = None;
    let mut open_details: usize = 0;
    let mut kept = 0;
    let lines: Vec<&str> = section.split_inclusive('\n').collect();
    for line in &lines {
        let closing = fence.as_ref().map_or(0, |f| f.len() + 1) + open_details * 12;
        if out.len() + line.len() + closing + note_room > budget {
            break;
        }
        out.push_str(line);
        kept += 1;
        let trimmed = line.trim();
        match &fence {
            Some(f) if trimmed == f.as_str() => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => {
                let ticks = trimmed.chars().take_while(|c| *c == '`').count();
                fence = Some("`".repeat(ticks));
            }
            None => {
                open_details += trimmed.matches("<details>").count();
                open_details = open_details.saturating_sub(trimmed.matches("</details>").count());
            }
        }
    }
    if let Some(f) = fence {
        out.push_str(&f);
        out.push('\n');
    }
    let dropped = lines.len() - kept;
    out.push_str(&format!(
        "\n_Shortened: {dropped} more lines do not fit in a GitHub comment; run `cairn plan` or see the job log for all of them._\n"
    ));
    for _ in 0..open_details {
        out.push_str("\n</details>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let m = marker("fraud,risk", 2, 3);
        assert_eq!(m, "<!-- cairn:plan key=fraud,risk part=2/3 -->");
        assert_eq!(
            parse_marker(&format!("{m}\nbody")),
            Some(("fraud,risk".into(), 2))
        );
        assert_eq!(
            parse_marker("<!-- cairn:plan key=risk -->"),
            Some(("risk".into(), 1))
        );
        assert_eq!(parse_marker("a comment"), None);
        assert_eq!(parse_marker("<!-- cairn:plan key="), None);
        assert_eq!(sanitize_key("a b>c"), "a_b_c");
    }

    fn section(i: usize, lines: usize) -> String {
        let mut s = format!("{SPLIT}\n\n<details><summary>resource {i}</summary>\n\n```diff\n");
        for l in 0..lines {
            s.push_str(&format!("+ field{l}: {}\n", "v".repeat(60)));
        }
        s.push_str("```\n\n</details>\n");
        s
    }

    /// Every code fence and `<details>` opened in a part is closed in it.
    fn balanced(part: &str) -> bool {
        let fences = part
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        fences % 2 == 0 && part.matches("<details>").count() == part.matches("</details>").count()
    }

    #[test]
    fn long_comments_split_at_sections() {
        let mut body = String::from("### head\n\n");
        for i in 0..60 {
            body.push_str(&section(i, 50));
        }
        body.push_str(&format!("{SPLIT}\n<sub>footer</sub>\n"));
        assert!(body.len() > 200_000, "{}", body.len());
        let parts = split(&body, "risk", GITHUB_COMMENT_LIMIT);
        assert!(parts.len() >= 4, "{}", parts.len());
        let n = parts.len();
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= GITHUB_COMMENT_LIMIT, "part {i}: {}", p.len());
            assert!(p.starts_with(&marker("risk", i + 1, n)));
            assert!(!p.contains(SPLIT));
            assert!(balanced(p), "part {i} cuts a block");
        }
        assert!(parts[1].contains(&format!("part 2 of {n}")));
        // Nothing lost: every resource appears exactly once.
        let all = parts.concat();
        for i in 0..60 {
            assert_eq!(
                all.matches(&format!("resource {i}<")).count(),
                1,
                "resource {i}"
            );
        }
        assert!(parts[n - 1].contains("footer"));
    }

    #[test]
    fn a_short_comment_is_one_part() {
        let parts = split(
            &format!("hello\n{SPLIT}\nfooter\n"),
            "k",
            GITHUB_COMMENT_LIMIT,
        );
        assert_eq!(
            parts,
            vec!["<!-- cairn:plan key=k part=1/1 -->\nhello\nfooter\n"]
        );
    }

    #[test]
    fn an_oversized_section_is_shortened_and_closed() {
        let body = format!("head\n{}", section(0, 5_000));
        let parts = split(&body, "k", GITHUB_COMMENT_LIMIT);
        for p in &parts {
            assert!(p.len() <= GITHUB_COMMENT_LIMIT, "{}", p.len());
            assert!(balanced(p), "{p}");
        }
        assert!(parts.concat().contains("_Shortened: "));
    }
}

//! Drift: live state that no longer matches the default branch. A drift check is a plan
//! of the default branch's manifests against what is live; every change it would make
//! is drift, reported per resource and per field.
//!
//! This module turns a [`Plan`] into a [`DriftReport`] and renders it as text (for logs),
//! JSON, and markdown (the drift issue, from `templates/drift.md.j2`). It makes no plan
//! itself and talks to nothing.

use minijinja::Environment;
use serde::Serialize;

use crate::plan::{Action, FieldChange, Plan, PlanSummary};

/// The markdown template of the drift issue.
pub const DRIFT_MARKDOWN_TEMPLATE: &str = include_str!("../../templates/drift.md.j2");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the drift template failed to render")]
    Template(#[source] minijinja::Error),
}

/// One resource that drifted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drifted {
    pub address: String,
    /// What a plan would do to bring it back.
    pub action: Action,
    pub reason: String,
    /// The fields that differ: `before` is what is live (as recorded), `after` what the
    /// manifests declare.
    pub fields: Vec<FieldChange>,
}

/// What a drift check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// The commit checked.
    pub revision: Option<String>,
    /// The revision as given (`main`, `origin/HEAD`).
    pub rev: Option<String>,
    pub workspaces: Vec<String>,
    pub resources: Vec<Drifted>,
    pub summary: PlanSummary,
    pub notes: Vec<String>,
}

impl DriftReport {
    /// The drift in `plan`, with its sensitive `env` values hidden.
    pub fn from_plan(plan: &Plan) -> DriftReport {
        let plan = &crate::plan::redact::plan(plan, crate::plan::redact::Redaction::Sensitive);
        DriftReport {
            revision: plan.revision.clone(),
            rev: plan.source.rev.clone(),
            workspaces: plan.workspaces.iter().map(|w| w.name.clone()).collect(),
            resources: plan
                .changes()
                .map(|c| Drifted {
                    address: c.address.clone(),
                    action: c.action(),
                    reason: c.reason.clone(),
                    fields: c.changes.clone(),
                })
                .collect(),
            summary: plan.summary.clone(),
            notes: plan.notes.clone(),
        }
    }

    pub fn drifted(&self) -> bool {
        !self.resources.is_empty()
    }

    /// `main (3f9a2c1)`, or `the working tree`.
    pub fn source(&self) -> String {
        match (&self.rev, &self.revision) {
            (Some(rev), Some(commit)) if commit.starts_with(rev.as_str()) => {
                commit.chars().take(7).collect()
            }
            (Some(rev), Some(commit)) => {
                format!("{rev} ({})", commit.chars().take(7).collect::<String>())
            }
            (Some(rev), None) => rev.clone(),
            (None, _) => "the working tree".into(),
        }
    }

    /// The issue title: `Drift: 2 resources differ from main`.
    pub fn title(&self) -> String {
        let n = self.resources.len();
        format!(
            "Drift: {n} resource{} differ{} from {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
            self.rev.as_deref().unwrap_or("the manifests")
        )
    }

    /// The report for a terminal or a log.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if !self.drifted() {
            let _ = writeln!(
                out,
                "No drift. What is live matches the manifests at {}.",
                self.source()
            );
        } else {
            let _ = writeln!(
                out,
                "Drift: {} resource{} live differ{} from the manifests at {}.\n",
                self.resources.len(),
                if self.resources.len() == 1 { "" } else { "s" },
                if self.resources.len() == 1 { "s" } else { "" },
                self.source()
            );
            for r in &self.resources {
                let _ = writeln!(out, "{:>3} {}", r.action.symbol(), r.address);
                let _ = writeln!(out, "      {}", r.reason);
                let mut lines = Vec::new();
                for f in &r.fields {
                    crate::github::comment::field_lines(
                        &mut lines,
                        &f.path,
                        f.before.as_ref(),
                        f.after.as_ref(),
                    );
                }
                for l in lines {
                    let _ = writeln!(out, "      {l}");
                }
                out.push('\n');
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "Note: {note}");
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("drift reports serialize")
    }

    /// The report as markdown (the drift issue's body), at most `limit` bytes.
    pub fn markdown(&self, template: &str, limit: usize) -> Result<String, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        env.add_filter("html", |s: String| crate::github::comment::escape_html(&s));
        env.add_template("drift.md", template)
            .map_err(Error::Template)?;
        let resources: Vec<serde_json::Value> = self
            .resources
            .iter()
            .map(|r| {
                let mut lines = Vec::new();
                for f in &r.fields {
                    crate::github::comment::field_lines(
                        &mut lines,
                        &f.path,
                        f.before.as_ref(),
                        f.after.as_ref(),
                    );
                }
                let ticks = lines
                    .iter()
                    .map(|l| crate::github::comment::backtick_run(l))
                    .max()
                    .unwrap_or(0);
                serde_json::json!({
                    "address": r.address,
                    "symbol": r.action.symbol(),
                    "action": r.action.as_str(),
                    "reason": r.reason,
                    "lines": lines,
                    "fence": "`".repeat(ticks.max(2) + 1),
                })
            })
            .collect();
        let text = env
            .get_template("drift.md")
            .and_then(|t| {
                t.render(minijinja::context! {
                    report => self,
                    source => self.source(),
                    resources => resources,
                })
            })
            .map_err(Error::Template)?;
        Ok(if text.len() > limit {
            crate::github::comment::shorten(&text, limit)
        } else {
            text
        })
    }
}

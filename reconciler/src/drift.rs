//! Drift: live state that no longer matches the default branch. A drift check is a plan
//! of the default branch's manifests against what is live; every change it would make
//! is drift, reported per resource and per field. Beside it, input drift: the features
//! of monitored endpoints' captured requests that moved away from their training data
//! ([`crate::monitoring`]).
//!
//! This module turns a [`Plan`] into a [`DriftReport`] and renders it as text (for logs),
//! JSON, and markdown (the drift issue, from `templates/drift.md.j2`). It makes no plan
//! itself and talks to nothing.

use minijinja::Environment;
use serde::Serialize;

use crate::monitoring::EndpointInputs;
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
    /// Monitored endpoints' input drift (checked or not, drifted or not).
    #[serde(default)]
    pub inputs: Vec<EndpointInputs>,
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
            inputs: Vec::new(),
        }
    }

    /// Live resources differ, or a monitored endpoint's inputs drifted.
    pub fn drifted(&self) -> bool {
        !self.resources.is_empty() || self.inputs_drifted().next().is_some()
    }

    /// The endpoints whose inputs drifted.
    pub fn inputs_drifted(&self) -> impl Iterator<Item = &EndpointInputs> {
        self.inputs.iter().filter(|i| i.drifted())
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

    /// The issue title: `Drift: 2 resources differ from main`, `Drift: the inputs of
    /// credit-risk/endpoint.risk-api moved (income, age)`.
    pub fn title(&self) -> String {
        let n = self.resources.len();
        let mut parts = Vec::new();
        if n > 0 {
            parts.push(format!(
                "{n} resource{} differ{} from {}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                self.rev.as_deref().unwrap_or("the manifests")
            ));
        }
        for inputs in self.inputs_drifted() {
            let names: Vec<&str> = inputs
                .drifted_features()
                .iter()
                .map(|f| f.feature.as_str())
                .collect();
            parts.push(format!(
                "the inputs of {} moved ({})",
                inputs.endpoint,
                names.join(", ")
            ));
        }
        format!("Drift: {}", parts.join("; "))
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
        } else if self.resources.is_empty() {
            let _ = writeln!(
                out,
                "What is live matches the manifests at {}, but what monitored endpoints receive drifted from their training data.\n",
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
        for inputs in &self.inputs {
            let drifted = inputs.drifted_features();
            let _ = writeln!(
                out,
                "{} {}: {} of {} features of {} captured rows drifted from {} (PSI > {}; serving {}).",
                if drifted.is_empty() { "  ✓" } else { "  !" },
                inputs.endpoint,
                drifted.len(),
                inputs.features.len(),
                inputs.rows,
                inputs.training_data,
                inputs.max_psi,
                inputs.model,
            );
            for f in &inputs.features {
                let ks = f.ks.map(|k| format!(", KS {k:.3}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "      {} {}: PSI {:.3}{ks} ({})",
                    if f.drifted { "!" } else { " " },
                    f.feature,
                    f.psi,
                    f.kind
                );
            }
            out.push('\n');
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
        let drifted_inputs: Vec<serde_json::Value> = self
            .inputs_drifted()
            .map(|i| {
                let features: Vec<serde_json::Value> = i
                    .features
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "feature": f.feature,
                            "psi": format!("{:.3}", f.psi),
                            "ks": f.ks.map_or("—".to_string(), |k| format!("{k:.3}")),
                            "drifted": f.drifted,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "endpoint": i.endpoint,
                    "model": i.model,
                    "training_data": i.training_data,
                    "rows": i.rows,
                    "max_psi": i.max_psi,
                    "features": features,
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
                    drifted_inputs => drifted_inputs,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input_drift::FeatureDrift;

    fn feature(name: &str, psi: f64, drifted: bool) -> FeatureDrift {
        FeatureDrift {
            feature: name.into(),
            kind: "numeric",
            psi,
            ks: Some(0.4),
            reference_rows: 100,
            current_rows: 50,
            drifted,
        }
    }

    #[test]
    fn input_drift_alone_is_drift_and_the_title_and_issue_name_the_features() {
        let report = DriftReport {
            revision: Some("3f9a2c1aaaa".into()),
            rev: Some("main".into()),
            workspaces: vec!["credit-risk".into()],
            resources: Vec::new(),
            summary: PlanSummary::default(),
            notes: Vec::new(),
            inputs: vec![EndpointInputs {
                endpoint: "credit-risk/endpoint.risk-api".into(),
                model: "model.risk-scorer@6aaa0fd4e4a1".into(),
                training_data: "dataset.loans-train@3964324fa973".into(),
                requests: 10,
                rows: 50,
                max_psi: 0.2,
                features: vec![feature("income", 0.89, true), feature("age", 0.01, false)],
            }],
        };
        assert!(report.drifted());
        assert_eq!(
            report.title(),
            "Drift: the inputs of credit-risk/endpoint.risk-api moved (income)"
        );
        let body = report.markdown(DRIFT_MARKDOWN_TEMPLATE, 60_000).unwrap();
        assert!(
            body.contains("| `income` | 0.890 | 0.400 | drifted |"),
            "{body}"
        );
        assert!(!body.contains("| resource | why |"), "{body}");
    }
}

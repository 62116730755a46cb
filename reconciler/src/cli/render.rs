//! Turning results into terminal text or JSON. Diagnostics are drawn by miette, with the
//! offending snippet, labels and help.

use std::fmt::Write as _;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, MietteError,
    MietteSpanContents, Report, SourceCode, SourceSpan, SpanContents,
};
use owo_colors::OwoColorize;

use cairn::desired::{Resolved, Summary};
use cairn::diagnostics::{Diagnostic, Diagnostics, Severity};
use cairn::manifest::Snapshot;

use super::{CommandError, Output};

/// Lines longer than this are not drawn as snippets.
const MAX_SNIPPET_LINE: usize = 400;

fn line_around(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    &text[start..end]
}

/// A named source whose columns count characters, as the JSON output and editors do
/// (miette's own count bytes).
#[derive(Debug)]
struct CharColumns {
    name: String,
    text: String,
}

impl SourceCode for CharColumns {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self.text.as_str().read_span(span, before, after)?;
        let column = if before == 0 {
            let start = span.offset().min(self.text.len());
            let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
            self.text
                .get(line_start..start)
                .map_or(inner.column(), |s| s.chars().count())
        } else {
            inner.column()
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            column,
            inner.line_count(),
        )))
    }
}

/// Renders one diagnostic with its source snippet, as miette draws it.
pub fn diagnostic_text(snapshot: &Snapshot, d: &Diagnostic, color: bool) -> String {
    let mut diag = MietteDiagnostic::new(d.message.clone())
        .with_code(format!("cairn::{}", d.code))
        .with_severity(match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        });
    let mut help = d.help.clone();
    let mut source = None;
    if let Some(location) = &d.location {
        // A snippet of a huge line (a generated or minified file) would flood the
        // terminal; such findings show the location only.
        let text = snapshot
            .text(&location.file)
            .filter(|text| line_around(text, location.span.start).len() <= MAX_SNIPPET_LINE);
        match text {
            Some(text) => {
                let mut labels = vec![LabeledSpan::new_primary_with_span(
                    d.label.clone(),
                    location.span.clone(),
                )];
                for related in &d.related {
                    if related.location.file == location.file {
                        labels.push(LabeledSpan::new_with_span(
                            Some(related.message.clone()),
                            related.location.span.clone(),
                        ));
                    }
                }
                diag = diag.with_labels(labels);
                source = Some(CharColumns {
                    name: location.file.clone(),
                    text: text.to_string(),
                });
            }
            None => {
                diag.message = match &d.label {
                    Some(label) => format!("{location}: {} ({label})", d.message),
                    None => format!("{location}: {}", d.message),
                };
            }
        }
    }
    let elsewhere: Vec<String> = d
        .related
        .iter()
        .filter(|r| Some(&r.location.file) != d.location.as_ref().map(|l| &l.file))
        .map(|r| format!("{} at {}", r.message, r.location))
        .collect();
    if !elsewhere.is_empty() {
        let notes = elsewhere.join("; ");
        help = Some(match help {
            Some(h) => format!("{h}\n{notes}"),
            None => notes,
        });
    }
    if let Some(help) = help {
        diag = diag.with_help(help);
    }
    let report = match source {
        Some(source) => Report::new(diag).with_source_code(source),
        None => Report::new(diag),
    };
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    if handler.render_report(&mut out, report.as_ref()).is_err() {
        out = d.to_string();
    }
    out
}

/// Prints findings to stderr.
pub fn diagnostics(snapshot: &Snapshot, diagnostics: &Diagnostics, output: Output) {
    for (i, d) in diagnostics.iter().enumerate() {
        if i < MAX_DRAWN {
            eprintln!("{}", diagnostic_text(snapshot, d, output.color_stderr));
            continue;
        }
        // Past a screenful of snippets, one line each: as useful, and it keeps thousands of
        // findings (a generated file gone wrong) fast to print.
        if i == MAX_DRAWN {
            eprintln!("… {} more, one line each:", diagnostics.len() - MAX_DRAWN);
        }
        eprintln!("{d}");
    }
}

/// Findings drawn with snippets; the rest are printed one line each.
const MAX_DRAWN: usize = 50;

/// The last line after a failed validation.
pub fn failure_line(snapshot: &Snapshot, diagnostics: &Diagnostics, output: Output) {
    let errors = diagnostics.error_count();
    let warnings = diagnostics.warning_count();
    let mut line = format!(
        "{} is invalid: {errors} error{}",
        snapshot.origin.describe(),
        if errors == 1 { "" } else { "s" }
    );
    if warnings > 0 {
        let _ = write!(
            line,
            ", {warnings} warning{}",
            if warnings == 1 { "" } else { "s" }
        );
    }
    if output.color_stderr {
        eprintln!("{} {line}", "✗".red().bold());
    } else {
        eprintln!("✗ {line}");
    }
}

/// The summary printed by a successful `cairn validate`.
pub fn validate_summary(
    snapshot: &Snapshot,
    summary: &Summary,
    warnings: &Diagnostics,
    output: Output,
) {
    let n = summary.workspaces.len();
    let mut head = format!(
        "{} is valid: {n} workspace{}, {} resource{}",
        snapshot.origin.describe(),
        if n == 1 { "" } else { "s" },
        summary.resources,
        if summary.resources == 1 { "" } else { "s" }
    );
    if !warnings.is_empty() {
        let w = warnings.len();
        let _ = write!(head, ", {w} warning{}", if w == 1 { "" } else { "s" });
    }
    if output.color_stdout {
        println!("{} {head}", "✓".green().bold());
    } else {
        println!("✓ {head}");
    }
    let width = summary
        .workspaces
        .iter()
        .map(|w| w.name.len())
        .max()
        .unwrap_or(0);
    for ws in &summary.workspaces {
        let counts: Vec<String> = ws
            .counts
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        let counts = if counts.is_empty() {
            "empty".to_string()
        } else {
            counts.join(" · ")
        };
        println!("  {:width$}  {counts}", ws.name);
    }
}

/// JSON for `cairn validate --format json`.
pub fn validate_json(snapshot: &Snapshot, result: &Result<Resolved, Diagnostics>) {
    let (valid, summary, diagnostics) = match result {
        Ok(r) => (true, Some(r.state.summary()), &r.warnings),
        Err(d) => (false, None, d),
    };
    let value = serde_json::json!({
        "format_version": "1",
        "valid": valid,
        "source": snapshot.origin.describe(),
        "commit": snapshot.commit(),
        "summary": summary,
        "diagnostics": diagnostics,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("JSON values serialize")
    );
}

/// JSON for a command that failed before producing a result.
pub fn json_failure(err: &CommandError) {
    let value = serde_json::json!({
        "format_version": "1",
        "valid": false,
        "error": { "message": err.message, "hints": err.hints },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("JSON values serialize")
    );
}

/// Prints a command failure to stderr.
/// A problem that doesn't stop the command, shown like an error.
pub fn warning(warning: &CommandError, output: Output) {
    if output.color_stderr {
        eprintln!("{} {}", "warning:".yellow().bold(), warning.message);
        for hint in &warning.hints {
            eprintln!("  {} {hint}", "hint:".cyan());
        }
    } else {
        eprintln!("warning: {}", warning.message);
        for hint in &warning.hints {
            eprintln!("  hint: {hint}");
        }
    }
}

pub fn command_error(err: &CommandError, output: Output) {
    if output.color_stderr {
        eprintln!("{} {}", "error:".red().bold(), err.message);
        for hint in &err.hints {
            eprintln!("  {} {hint}", "hint:".cyan());
        }
    } else {
        eprintln!("error: {}", err.message);
        for hint in &err.hints {
            eprintln!("  hint: {hint}");
        }
    }
}

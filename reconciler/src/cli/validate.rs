//! `cairn validate`: load, resolve and check the manifests (and that the policies load);
//! print a summary or every finding.

use super::{render, CommandError, ErrorKind, Format, Outcome, Output, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,

    /// Output format: text for people, json for tools.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let snapshot = match args.source.load() {
        Ok(s) => s,
        Err(err) if args.format == Format::Json => {
            render::json_failure(&err);
            return Ok(Outcome::Failed(err.kind));
        }
        Err(err) => return Err(err),
    };
    // Valid manifests are also checked for policies that don't load (a Rego syntax error
    // in the repository's `policies/`), so a pull request finds out before planning.
    let result = cairn::desired::resolve(&snapshot).and_then(|resolved| {
        match cairn::policy::Policies::from_snapshot(&snapshot).and_then(|p| p.check()) {
            Ok(()) => Ok(resolved),
            Err(e) => {
                let mut diagnostics = resolved.warnings;
                diagnostics.push(e.diagnostic());
                Err(diagnostics)
            }
        }
    });
    match args.format {
        Format::Json => {
            render::validate_json(&snapshot, &result);
        }
        Format::Text => match &result {
            Ok(resolved) => {
                render::diagnostics(&snapshot, &resolved.warnings, output);
                render::validate_summary(
                    &snapshot,
                    &resolved.state.summary(),
                    &resolved.warnings,
                    output,
                );
            }
            Err(diagnostics) => {
                render::diagnostics(&snapshot, diagnostics, output);
                render::failure_line(&snapshot, diagnostics, output);
            }
        },
    }
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failed(ErrorKind::User)
    };
    // The process ends right after: no need to free the desired state piece by piece.
    std::mem::forget(result);
    std::mem::forget(snapshot);
    Ok(outcome)
}

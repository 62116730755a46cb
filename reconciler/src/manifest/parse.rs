//! Turning one manifest file into declared resources, keeping the span of every name.
//!
//! Each resource table is deserialised on its own, so one broken resource doesn't hide
//! the findings in the others. TOML syntax errors are recovered from where the parser can,
//! so several can be reported for one file.

use std::ops::Range;

use serde::de::IntoDeserializer;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::model::{ComputeSpec, DatasetSpec, EndpointSpec, JobSpec, ModelSpec, WorkspaceSpec};
use super::source::SourceFile;
use crate::address::{Address, Kind};
use crate::diagnostics::{did_you_mean, Diagnostic, LineIndex, Location};
use std::cell::OnceCell;

/// Tables and arrays nested deeper than this are refused before parsing, so no input can
/// exhaust the stack. Real manifests nest four or five levels.
pub const MAX_NESTING: usize = 64;

/// A resource's spec, one variant per kind.
#[derive(Debug, Clone)]
pub enum Spec {
    Workspace(WorkspaceSpec),
    Compute(ComputeSpec),
    Dataset(DatasetSpec),
    Job(JobSpec),
    Model(ModelSpec),
    Endpoint(EndpointSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Workspace(_) => Kind::Workspace,
            Spec::Compute(_) => Kind::Compute,
            Spec::Dataset(_) => Kind::Dataset,
            Spec::Job(_) => Kind::Job,
            Spec::Model(_) => Kind::Model,
            Spec::Endpoint(_) => Kind::Endpoint,
        }
    }
}

/// One resource as declared in a file.
#[derive(Debug, Clone)]
pub struct Declared {
    pub address: Address,
    /// Manifest file path, relative to the root.
    pub file: String,
    /// Span of the resource's name (the key of its table).
    pub name_span: Range<usize>,
    pub spec: Spec,
}

/// The outcome of parsing one file: what it declares and what is wrong with it.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub resources: Vec<Declared>,
    /// Resources whose table was found but could not be read; references to them are
    /// not reported again as unresolved.
    pub broken: Vec<Address>,
    pub diagnostics: Vec<Diagnostic>,
}

const KIND_TABLES: [&str; 6] = [
    "workspace",
    "compute",
    "dataset",
    "job",
    "model",
    "endpoint",
];

/// Parses one manifest file.
pub fn parse_file(file: &SourceFile) -> ParsedFile {
    let mut out = ParsedFile::default();
    let lines = OnceCell::new();
    let at = |span: Range<usize>| {
        lines
            .get_or_init(|| LineIndex::new(&file.text))
            .locate(&file.path, &file.text, span)
    };
    let at = &at;

    if let Some(span) = too_deep(&file.text, MAX_NESTING) {
        out.diagnostics.push(
            Diagnostic::error(
                "too-deep",
                format!("tables and arrays are nested more than {MAX_NESTING} levels deep"),
            )
            .at(at(span))
            .label("nesting limit reached here")
            .help("manifests nest a few levels at most; check for a runaway generator"),
        );
        return out;
    }

    let (root, errors) = DeTable::parse_recoverable(&file.text);
    if !errors.is_empty() {
        for error in errors {
            out.diagnostics.push(toml_error(at, &error, "toml", None));
        }
        return out;
    }
    let root = root.into_inner();
    if root.is_empty() {
        out.diagnostics.push(
            Diagnostic::error("empty-file", "manifest file declares nothing")
                .at(at(0..0))
                .help(if file.path.ends_with("/workspace.toml") {
                    "a workspace.toml starts with a `[workspace]` table".to_string()
                } else {
                    "add a resource table such as `[dataset.<name>]`, or delete the file"
                        .to_string()
                }),
        );
    }

    let is_workspace_file = file.path.ends_with("/workspace.toml");
    let mut saw_workspace = false;
    for (key, value) in root {
        let key_span = key.span();
        let key = key.into_inner();
        let Some(kind) = key.parse::<Kind>().ok() else {
            out.diagnostics.push(
                Diagnostic::error("unknown-kind", format!("`{key}` is not a kind of resource"))
                    .at(at(key_span))
                    .label("unknown table")
                    .help(match did_you_mean(&key, KIND_TABLES) {
                        Some(k) => {
                            format!("did you mean `{k}`? Tables are: {}", KIND_TABLES.join(", "))
                        }
                        None => format!("top-level tables are: {}", KIND_TABLES.join(", ")),
                    }),
            );
            continue;
        };
        if kind == Kind::Workspace {
            saw_workspace = true;
            if !is_workspace_file {
                out.diagnostics.push(
                    Diagnostic::error(
                        "misplaced-workspace",
                        "`[workspace]` belongs in workspace.toml",
                    )
                    .at(at(key_span))
                    .help(format!(
                        "move this table to `{}/workspace.toml`",
                        file.workspace
                    )),
                );
                continue;
            }
            let address = Address::workspace(file.workspace.clone());
            if let Some(spec) = deserialize::<WorkspaceSpec>(at, value, kind, &mut out.diagnostics)
            {
                out.resources.push(Declared {
                    address,
                    file: file.path.clone(),
                    name_span: key_span,
                    spec: Spec::Workspace(spec),
                });
            }
            continue;
        }
        let value_span = value.span();
        let DeValue::Table(entries) = value.into_inner() else {
            out.diagnostics.push(
                Diagnostic::error(
                    "not-a-table",
                    format!("`{kind}` must be a table of named resources"),
                )
                .at(at(value_span))
                .help(format!("declare each one as `[{kind}.<name>]`")),
            );
            continue;
        };
        for (name, body) in entries {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            let address = Address::new(file.workspace.clone(), kind, name);
            let spec = match kind {
                Kind::Compute => {
                    deserialize(at, body, kind, &mut out.diagnostics).map(Spec::Compute)
                }
                Kind::Dataset => {
                    deserialize(at, body, kind, &mut out.diagnostics).map(Spec::Dataset)
                }
                Kind::Job => deserialize(at, body, kind, &mut out.diagnostics).map(Spec::Job),
                Kind::Model => deserialize(at, body, kind, &mut out.diagnostics).map(Spec::Model),
                Kind::Endpoint => {
                    deserialize(at, body, kind, &mut out.diagnostics).map(Spec::Endpoint)
                }
                Kind::Workspace => unreachable!("handled above"),
            };
            match spec {
                Some(spec) => out.resources.push(Declared {
                    address,
                    file: file.path.clone(),
                    name_span,
                    spec,
                }),
                None => out.broken.push(address),
            }
        }
    }
    if is_workspace_file
        && !saw_workspace
        && !out.diagnostics.iter().any(|d| d.code == "empty-file")
    {
        out.diagnostics.push(
            Diagnostic::error(
                "missing-workspace-table",
                "workspace.toml has no `[workspace]` table",
            )
            .at(at(0..0))
            .help("add `[workspace]` with at least `environment = \"dev\"`"),
        );
    }
    out
}

fn deserialize<T: for<'de> Deserialize<'de>>(
    at: &dyn Fn(Range<usize>) -> Location,
    value: Spanned<DeValue<'_>>,
    kind: Kind,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<T> {
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        let span = value.span();
        diagnostics.push(
            Diagnostic::error("not-a-table", format!("a {kind} must be a table"))
                .at(at(span))
                .label(format!("found {}", value.get_ref().type_str()))
                .help(format!(
                    "write it as a `[{kind}.<name>]` section with fields"
                )),
        );
        return None;
    }
    let span = value.span();
    match T::deserialize(value.into_deserializer()) {
        Ok(spec) => Some(spec),
        Err(error) => {
            diagnostics.push(toml_error(at, &error, "invalid-field", Some((kind, span))));
            None
        }
    }
}

/// Converts a TOML or serde error into a diagnostic, adding a did-you-mean hint for
/// unknown fields and values.
fn toml_error(
    at: &dyn Fn(Range<usize>) -> Location,
    error: &toml::de::Error,
    code: &'static str,
    context: Option<(Kind, Range<usize>)>,
) -> Diagnostic {
    let message = error.message().trim();
    let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
    let span = error
        .span()
        .or_else(|| context.as_ref().map(|(_, s)| s.clone()))
        .unwrap_or(0..0);
    let hint = unknown_name_hint(first);
    // The hint lists the allowed names; the message keeps just the offending one.
    let mut headline = match (&hint, first.split_once(", expected")) {
        (Some(_), Some((head, _))) => head.to_string(),
        _ => first.to_string(),
    };
    let mut help = hint;
    if help.is_none() {
        if let Some((message, advice)) = type_hint(first) {
            headline = message;
            help = Some(advice);
        } else if let Some((message, advice)) = unit_hint(first) {
            headline = message;
            help = Some(advice);
        } else if first.starts_with("missing field") {
            help = context.as_ref().map(|(kind, _)| {
                format!("add it to this {kind}; the README's manifest reference lists every field")
            });
        } else if first.starts_with("duplicate key") {
            help = Some("a key can appear once per table; remove or rename one".into());
        } else if code == "toml" {
            help = Some(
                "TOML: strings in double quotes, one `key = value` per line, resources as `[kind.name]` tables".into(),
            );
        } else if first.starts_with("expected ") {
            // The deserialiser's own words for a value of the wrong shape
            // ("expected table, found boolean", for a table where a name goes).
            help = context.as_ref().map(|(kind, _)| {
                format!("this value has the wrong type for a {kind}; the README's manifest reference lists every field and its type")
            });
        }
    }
    let mut diagnostic =
        Diagnostic::error(code, headline.trim_end_matches('.').to_string()).at(at(span));
    if !rest.trim().is_empty() {
        diagnostic = diagnostic.label(rest.trim().to_string());
    }
    diagnostic.maybe_help(help)
}

/// Rewrites serde's type errors ("invalid type: string \"four\", expected u32") in words a
/// manifest author uses, with advice.
fn type_hint(message: &str) -> Option<(String, String)> {
    let (found, expected) = if let Some(rest) = message.strip_prefix("invalid type: ") {
        rest.rsplit_once(", expected ")?
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        rest.rsplit_once(", expected ")?
    } else {
        return None;
    };
    if expected == super::replicas::EXPECTING {
        let found = found.replace('`', "");
        return Some((
            format!("expected a number of replicas or an autoscaling table, found {found}"),
            "write a count from 0 to 4294967295 (`replicas = 2`), or bounds and a target (`replicas = { min = 1, max = 8, target_rps = 50 }`)".to_string(),
        ));
    }
    let wanted = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
        "i8" | "i16" | "i32" | "i64" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "`true` or `false`",
        "a string" => "a string in double quotes",
        "a sequence" => "an array, like `[\"a\", \"b\"]`",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        _ => return None,
    };
    let found = found
        .replace("floating point", "number")
        .replace("integer", "number");
    let found = found.replace('`', "");
    let advice = match expected {
        "u16" if message.starts_with("invalid value") => {
            "use a whole number from 0 to 65535".to_string()
        }
        "u8" | "u16" | "u32" | "u64" | "usize" if message.starts_with("invalid value") => {
            "use a whole number, 0 or more".to_string()
        }
        _ if found.starts_with("string") && wanted.contains("number") => {
            "write the number without quotes".to_string()
        }
        _ if wanted.contains("string") => "put the value in double quotes".to_string(),
        _ => format!("write {wanted} here"),
    };
    Some((format!("expected {wanted}, found {found}"), advice))
}

/// Splits the guidance off the units' own messages ("invalid duration `x`: use …").
fn unit_hint(message: &str) -> Option<(String, String)> {
    if !(message.starts_with("invalid duration") || message.starts_with("invalid quantity")) {
        return None;
    }
    let (head, advice) = message.rsplit_once(": ")?;
    Some((head.to_string(), advice.to_string()))
}

/// Reads serde's "unknown field `x`, expected one of `a`, `b`" (or variant) messages and
/// suggests the closest allowed name.
fn unknown_name_hint(message: &str) -> Option<String> {
    let (what, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
        ("fields", rest)
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        ("values", rest)
    } else {
        return None;
    };
    let (given, expected) = rest.split_once('`')?;
    let allowed: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if allowed.is_empty() {
        return Some(format!("no {what} are allowed here"));
    }
    let list = allowed.join(", ");
    Some(match did_you_mean(given, allowed.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? Allowed {what}: {list}"),
        None => format!("allowed {what}: {list}"),
    })
}

/// Returns the span where bracket nesting first exceeds `limit`, ignoring brackets inside
/// strings and comments. A cheap linear scan that runs before the real parser.
fn too_deep(text: &str, limit: usize) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    // Dots in the key part of a line (`a.b.c = 1`, `[a.b.c]`) nest tables too.
    let mut key_dots = 0usize;
    let mut in_key = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                let triple = bytes[i..].starts_with(&[quote; 3]);
                if triple {
                    i += 3;
                    while i < bytes.len() && !bytes[i..].starts_with(&[quote; 3]) {
                        i += if quote == b'"' && bytes[i] == b'\\' {
                            2
                        } else {
                            1
                        };
                    }
                    i += 2;
                } else {
                    i += 1;
                    while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                        i += if quote == b'"' && bytes[i] == b'\\' {
                            2
                        } else {
                            1
                        };
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(i..i + 1);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => {
                key_dots = 0;
                in_key = true;
            }
            b'=' => in_key = false,
            b'.' if in_key && depth <= 2 => {
                key_dots += 1;
                if key_dots > limit {
                    return Some(i..i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile {
            path: "ws/a.toml".into(),
            workspace: "ws".into(),
            text: text.into(),
        }
    }

    #[test]
    fn parses_resources_with_name_spans() {
        let f = file("[dataset.loans]\nsource = \"data\"\nformat = \"csv\"\n");
        let parsed = parse_file(&f);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let r = &parsed.resources[0];
        assert_eq!(r.address.to_string(), "ws/dataset.loans");
        assert_eq!(&f.text[r.name_span.clone()], "loans");
    }

    #[test]
    fn reports_each_broken_resource() {
        let f = file("[dataset.a]\nsource = 1\nformat = \"csv\"\n[dataset.b]\nsource = \"x\"\nformat = \"cvs\"\n");
        let parsed = parse_file(&f);
        assert_eq!(parsed.diagnostics.len(), 2, "{:?}", parsed.diagnostics);
        let hint = parsed.diagnostics[1].help.as_deref().unwrap();
        assert!(hint.starts_with("did you mean `csv`?"), "{hint}");
    }

    #[test]
    fn refuses_deep_nesting_before_parsing() {
        let text = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        let parsed = parse_file(&file(&text));
        assert_eq!(parsed.diagnostics[0].code, "too-deep");
        assert!(too_deep("a = \"[[[[[[\" # [[[[\n", 2).is_none());
    }

    #[test]
    fn hints_the_closest_field() {
        let hint =
            unknown_name_hint("unknown field `gpu`, expected one of `compute`, `gpus`, `retries`");
        assert_eq!(
            hint.as_deref(),
            Some("did you mean `gpus`? Allowed fields: compute, gpus, retries")
        );
    }
}

//! The template machinery: the shipped templates, the repository's overrides, the
//! sandboxed minijinja environment and the labels and annotations Cairn stamps on each
//! object. Parsing the rendered YAML and checking its objects is in `rendered.rs`.
//!
//! Which objects to render and with what variables is decided in `objects.rs`.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

use super::rendered::{check_object, parse_documents};
use super::{
    Error, KubeObject, Result, ANNOTATION_ADDRESS, ANNOTATION_REVISION, ANNOTATION_SPEC_HASH,
    LABEL_MANAGED_BY, LABEL_WORKSPACE,
};
use crate::diagnostics::Location;
use crate::manifest::{EntryKind, Snapshot};

/// The image Cairn's own steps run in (`cairn fetch`, `cairn upload`, `cairn serve`):
/// this build's version.
pub const DEFAULT_CAIRN_IMAGE: &str =
    concat!("ghcr.io/cairn-dev/cairn:", env!("CARGO_PKG_VERSION"));

/// Where a repository's overrides live, relative to its manifests root.
pub const OVERRIDE_DIR: &str = "templates/kubernetes";

/// The shipped templates, in the apply order of the objects they produce.
pub const TEMPLATES: [(&str, &str); 11] = [
    (
        "namespace.yaml.j2",
        include_str!("../../../../templates/kubernetes/namespace.yaml.j2"),
    ),
    (
        "resourcequota.yaml.j2",
        include_str!("../../../../templates/kubernetes/resourcequota.yaml.j2"),
    ),
    (
        "limitrange.yaml.j2",
        include_str!("../../../../templates/kubernetes/limitrange.yaml.j2"),
    ),
    (
        "serviceaccount.yaml.j2",
        include_str!("../../../../templates/kubernetes/serviceaccount.yaml.j2"),
    ),
    (
        "secret.yaml.j2",
        include_str!("../../../../templates/kubernetes/secret.yaml.j2"),
    ),
    (
        "networkpolicy.yaml.j2",
        include_str!("../../../../templates/kubernetes/networkpolicy.yaml.j2"),
    ),
    (
        "job.yaml.j2",
        include_str!("../../../../templates/kubernetes/job.yaml.j2"),
    ),
    (
        "deployment.yaml.j2",
        include_str!("../../../../templates/kubernetes/deployment.yaml.j2"),
    ),
    (
        "horizontalpodautoscaler.yaml.j2",
        include_str!("../../../../templates/kubernetes/horizontalpodautoscaler.yaml.j2"),
    ),
    (
        "service.yaml.j2",
        include_str!("../../../../templates/kubernetes/service.yaml.j2"),
    ),
    (
        "httproute.yaml.j2",
        include_str!("../../../../templates/kubernetes/httproute.yaml.j2"),
    ),
];

/// The kinds the shipped templates produce, in apply order (the order of [`TEMPLATES`],
/// each named after its kind, with the kinds a template renders besides its own).
/// Other kinds an override adds are applied with their template's.
const KIND_ORDER: [&str; 12] = [
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Secret",
    "NetworkPolicy",
    "PersistentVolumeClaim",
    "Job",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Service",
    "HTTPRoute",
];

/// An override larger than this is refused: a template is never that big.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// Instructions one render may execute: far more than any real template needs, and a
/// bound on a loop that never ends.
const FUEL: u64 = 2_000_000;

/// Where a template's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// Built into Cairn.
    Shipped,
    /// The repository's override, at this path under the manifests root.
    Repository { path: String },
}

/// One template as the renderer uses it.
#[derive(Debug, Clone)]
pub struct Template {
    /// The shipped name, e.g. `job.yaml.j2`.
    pub name: &'static str,
    pub source: TemplateSource,
    pub text: String,
}

impl Template {
    /// Returns the path messages name: the override's, or where the shipped one lives in
    /// Cairn's repository.
    pub fn path(&self) -> String {
        match &self.source {
            TemplateSource::Shipped => format!("{OVERRIDE_DIR}/{}", self.name),
            TemplateSource::Repository { path } => path.clone(),
        }
    }

    pub fn is_shipped(&self) -> bool {
        self.source == TemplateSource::Shipped
    }
}

/// Renders Kubernetes objects from the templates, in a sandbox.
pub struct Renderer {
    env: Environment<'static>,
    /// In [`TEMPLATES`] order.
    templates: Vec<Template>,
    pub(super) cairn_image: String,
    revision: Option<String>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("templates", &self.templates)
            .field("cairn_image", &self.cairn_image)
            .field("revision", &self.revision)
            .finish()
    }
}

impl Renderer {
    /// Returns a renderer with the shipped templates only.
    pub fn shipped() -> Renderer {
        Renderer::build(shipped_templates()).expect("the shipped templates compile")
    }

    /// Returns a renderer with the shipped templates, each replaced by the repository's
    /// `templates/kubernetes/<name>` where the snapshot has one. The `cairn.dev/revision`
    /// stamped on objects is the snapshot's commit when it was read at a revision; see
    /// [`Renderer::with_revision`] for a working tree.
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Renderer> {
        let mut templates = shipped_templates();
        match snapshot.entry(OVERRIDE_DIR) {
            None => {}
            Some(EntryKind::Dir) => {
                let files = snapshot
                    .files(OVERRIDE_DIR)
                    .map_err(|source| Error::ReadOverride {
                        path: OVERRIDE_DIR.to_string(),
                        source,
                    })?;
                for file in files {
                    let path = format!("{OVERRIDE_DIR}/{}", file.path);
                    // Notes and helpers beside the templates are the repository's business.
                    if !file.path.ends_with(".j2") {
                        continue;
                    }
                    let Some(template) = templates.iter_mut().find(|t| t.name == file.path) else {
                        let suggestion = TEMPLATES
                            .iter()
                            .map(|(name, _)| (*name, strsim::jaro_winkler(name, &file.path)))
                            .filter(|(_, score)| *score > 0.8)
                            .max_by(|a, b| a.1.total_cmp(&b.1))
                            .map(|(name, _)| name);
                        return Err(Error::UnknownTemplate { path, suggestion });
                    };
                    if file.size > MAX_TEMPLATE_BYTES {
                        return Err(Error::BadOverride {
                            path,
                            problem: format!(
                                "it is {} bytes, over the {MAX_TEMPLATE_BYTES}-byte limit",
                                file.size
                            ),
                        });
                    }
                    let bytes = snapshot.read(&path).map_err(|source| Error::ReadOverride {
                        path: path.clone(),
                        source,
                    })?;
                    let text = String::from_utf8(bytes).map_err(|_| Error::BadOverride {
                        path: path.clone(),
                        problem: "it is not valid UTF-8".into(),
                    })?;
                    template.text = text;
                    template.source = TemplateSource::Repository { path };
                }
            }
            Some(EntryKind::File) => {
                return Err(Error::BadOverride {
                    path: OVERRIDE_DIR.to_string(),
                    problem: "it is a file; overrides go in a folder of that name".into(),
                })
            }
            Some(EntryKind::Outside) => {
                return Err(Error::BadOverride {
                    path: OVERRIDE_DIR.to_string(),
                    problem: "a symbolic link leads outside the manifests root".into(),
                })
            }
        }
        let mut renderer = Renderer::build(templates)?;
        renderer.revision = snapshot.commit().map(str::to_string);
        Ok(renderer)
    }

    /// Uses `image` for Cairn's own containers instead of [`DEFAULT_CAIRN_IMAGE`].
    pub fn with_cairn_image(mut self, image: impl Into<String>) -> Renderer {
        self.cairn_image = image.into();
        self
    }

    /// Stamps `revision` (a Git commit) as `cairn.dev/revision`, or nothing when `None`.
    pub fn with_revision(mut self, revision: Option<String>) -> Renderer {
        self.revision = revision;
        self
    }

    /// Returns the templates in use, in apply order.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    fn build(templates: Vec<Template>) -> Result<Renderer> {
        let mut env = sandbox();
        for template in &templates {
            // Compiling here reports a syntax error before anything renders.
            if let Err(err) = env.add_template_owned(template.name, template.text.clone()) {
                return Err(template_error(&templates, template, err, None, None));
            }
        }
        Ok(Renderer {
            env,
            templates,
            cairn_image: DEFAULT_CAIRN_IMAGE.to_string(),
            revision: None,
        })
    }

    fn template(&self, name: &str) -> &Template {
        self.templates
            .iter()
            .find(|t| t.name == name)
            .expect("only shipped template names are rendered")
    }

    /// Renders template `name` for resource `what` (an address) with `context`, parses
    /// the YAML it produces, checks each object, and stamps the labels and annotations
    /// Cairn owns (`owned`). Returns each object with its apply rank.
    pub(super) fn render(
        &self,
        name: &str,
        what: &str,
        context: &Value,
        kube_context: Option<&str>,
        owned: &Owned,
    ) -> Result<Vec<(usize, KubeObject)>> {
        let template = self.template(name);
        // Each shipped template is named after the kind it renders (`httproute.yaml.j2`):
        // other kinds an override adds are applied with that kind.
        let stem = name.trim_end_matches(".yaml.j2");
        let rank = KIND_ORDER
            .iter()
            .position(|k| k.eq_ignore_ascii_case(stem))
            .expect("a shipped template named after its kind");
        let compiled = self
            .env
            .get_template(name)
            .expect("every template was added");
        let text = compiled.render(context).map_err(|err| {
            template_error(&self.templates, template, err, Some(what), Some(context))
        })?;
        let documents = parse_documents(&text).map_err(|p| {
            let lines: Vec<&str> = text.lines().collect();
            let (mut line, mut column) = (p.line, p.column);
            // The parser notices a missing `:` or bracket on the next token, which may be
            // past blank lines or the end: show the last line with text on it.
            while let Some(l) = line {
                if l > 1 && lines.get(l - 1).is_none_or(|t| t.trim().is_empty()) {
                    line = Some(l - 1);
                    column = None;
                } else {
                    break;
                }
            }
            Error::Yaml {
                template: template.path(),
                what: what.to_string(),
                message: p.message,
                line: line.map(|l| l as u32),
                column: column.map(|c| c as u32),
                text: line
                    .and_then(|l| lines.get(l - 1))
                    .unwrap_or(&"")
                    .to_string(),
            }
        })?;
        let mut out = Vec::with_capacity(documents.len());
        for mut value in documents {
            let invalid = |problem: String| Error::InvalidObject {
                template: template.path(),
                what: what.to_string(),
                problem,
            };
            let head = check_object(&value).map_err(invalid)?;
            self.stamp(&mut value, owned);
            let rank = KIND_ORDER
                .iter()
                .position(|k| *k == head.kind)
                .unwrap_or(rank);
            out.push((
                rank,
                KubeObject {
                    api_version: head.api_version,
                    kind: head.kind,
                    namespace: head.namespace,
                    name: head.name,
                    context: kube_context.map(str::to_string),
                    value,
                },
            ));
        }
        Ok(out)
    }

    /// Sets the labels and annotations Cairn owns, whatever the template wrote, then the
    /// spec hash over everything else.
    fn stamp(&self, value: &mut Value, owned: &Owned) {
        let metadata = value
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("checked: metadata is a map");
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        let labels = labels.as_object_mut().expect("just made a map");
        labels.insert(LABEL_MANAGED_BY.into(), "cairn".into());
        labels.insert(LABEL_WORKSPACE.into(), owned.workspace.clone().into());
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        let annotations = annotations.as_object_mut().expect("just made a map");
        annotations.insert(ANNOTATION_ADDRESS.into(), owned.address.clone().into());
        annotations.remove(ANNOTATION_SPEC_HASH);
        annotations.remove(ANNOTATION_REVISION);
        // The hash covers the object without the revision, so a commit that leaves the
        // object as it was leaves its hash alone.
        let hash = spec_hash(value);
        let annotations = value
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
            .expect("just made a map");
        annotations.insert(ANNOTATION_SPEC_HASH.into(), hash.into());
        if let Some(revision) = &self.revision {
            annotations.insert(ANNOTATION_REVISION.into(), revision.clone().into());
        }
    }
}

/// The label and annotation values Cairn owns on one resource's objects.
pub(super) struct Owned {
    pub workspace: String,
    /// `imaging/job.train-pneumonia`.
    pub address: String,
}

fn shipped_templates() -> Vec<Template> {
    TEMPLATES
        .iter()
        .map(|(name, text)| Template {
            name,
            source: TemplateSource::Shipped,
            text: text.to_string(),
        })
        .collect()
}

/// The environment templates render in: no loader (nothing outside the eight templates
/// can be included, and no file is ever read), undefined variables are errors, nothing
/// is escaped (the output is YAML, not HTML), and a fuel limit stops runaway loops.
fn sandbox() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_debug(true);
    env.set_fuel(Some(FUEL));
    env.add_filter("tojson", tojson);
    env
}

/// The `tojson` filter, refusing undefined values: the built-in one writes them as
/// `null`, so `{{ nmespace | tojson }}` would slip past strict undefined checks.
/// `indent` works as in the built-in.
fn tojson(
    value: &minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    if let Some(at) = undefined_in(value) {
        let detail = if at.is_empty() {
            "the value is undefined".to_string()
        } else {
            format!("the value at `{at}` is undefined")
        };
        return Err(minijinja::Error::new(ErrorKind::UndefinedError, detail));
    }
    let result = match indent {
        None => serde_json::to_string(value),
        Some(n) => {
            let indentation = " ".repeat(n);
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(indentation.as_bytes());
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(value, &mut serializer)
                .map(|()| String::from_utf8(out).expect("serde_json writes UTF-8"))
        }
    };
    result.map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON")
            .with_source(e)
    })
}

/// Returns where inside `value` an undefined value sits (`""` for the value itself,
/// `key`, `key[2]`), if anywhere.
fn undefined_in(value: &minijinja::Value) -> Option<String> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Undefined => Some(String::new()),
        ValueKind::Map => value.try_iter().ok()?.find_map(|key| {
            let item = value.get_item(&key).ok()?;
            undefined_in(&item).map(|rest| {
                let key = key.to_string();
                if rest.is_empty() {
                    key
                } else if rest.starts_with('[') {
                    format!("{key}{rest}")
                } else {
                    format!("{key}.{rest}")
                }
            })
        }),
        ValueKind::Seq => value.try_iter().ok()?.enumerate().find_map(|(i, item)| {
            undefined_in(&item).map(|rest| {
                if rest.is_empty() || rest.starts_with('[') {
                    format!("[{i}]{rest}")
                } else {
                    format!("[{i}].{rest}")
                }
            })
        }),
        _ => None,
    }
}

/// Turns a minijinja error into one that names the template file, line, column and
/// expression, with a hint; `context` lets the hint list the variables there are.
fn template_error(
    templates: &[Template],
    rendering: &Template,
    err: minijinja::Error,
    what: Option<&str>,
    context: Option<&Value>,
) -> Error {
    // An error inside an included template comes wrapped ("could not render include");
    // the innermost one says where it really happened.
    let mut inner = &err;
    while let Some(next) =
        std::error::Error::source(inner).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        inner = next;
    }
    let template = inner
        .name()
        .and_then(|n| templates.iter().find(|t| t.name == n))
        .unwrap_or(rendering);
    let text = template.text.as_str();
    let span = inner.range().filter(|r| r.end <= text.len()).or_else(|| {
        let line = inner.line()?;
        let start: usize = text
            .split_inclusive('\n')
            .take(line - 1)
            .map(str::len)
            .sum();
        Some(start..start)
    });
    // Widen the span to the variable at fault. Attribute errors point at `.b.c` in
    // `a.b.c`, and filter errors at the filter's name in `a.b | tojson`.
    let bytes = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
    let mut variable_span = None;
    let span = span.map(|s| {
        let mut start = s.start;
        if bytes.get(start) == Some(&b'.') {
            while start > 0 && ident(bytes[start - 1]) {
                start -= 1;
            }
            variable_span = Some(start..s.end);
        } else {
            let before = text[..start].trim_end();
            if let Some(piped) = before.strip_suffix('|') {
                let piped = piped.trim_end();
                let from = piped.bytes().rposition(|c| !ident(c)).map_or(0, |i| i + 1);
                if from < piped.len() {
                    start = from;
                    variable_span = Some(from..piped.len());
                }
            } else {
                variable_span = Some(s.clone());
            }
        }
        start..s.end
    });
    let location = match &span {
        Some(span) => Location::new(&template.path(), text, span.clone()),
        None => Location::file(&template.path()),
    };
    // The variable itself: `job.gpus` out of `job.gpus` or `job.gpus | tojson`.
    let variable = variable_span
        .map(|s| text[s].trim().to_string())
        .filter(|v| !v.is_empty() && v.bytes().all(ident));
    let detail = inner.detail().map(str::to_string);
    let (message, hint) = match inner.kind() {
        ErrorKind::UndefinedError => (
            match (&variable, detail.filter(|d| d.starts_with("the value at"))) {
                (Some(v), Some(inside)) => format!("undefined variable in `{v}`: {inside}"),
                (Some(v), None) => format!("undefined variable `{v}`"),
                (None, Some(inside)) => format!("undefined value: {inside}"),
                (None, None) => "undefined value".to_string(),
            },
            Some(undefined_hint(variable.as_deref(), context)),
        ),
        ErrorKind::TemplateNotFound => (
            detail.unwrap_or_else(|| "template not found".into()),
            Some(format!(
                "templates render in a sandbox: they can include or import only Cairn's templates, by name ({}), and never read files",
                TEMPLATES.map(|(n, _)| n).join(", ")
            )),
        ),
        ErrorKind::SyntaxError => (
            format!("syntax error: {}", detail.unwrap_or_default()),
            Some("templates use minijinja (Jinja2) syntax: `{{ value }}`, `{% if … %}…{% endif %}`, `{% for … %}…{% endfor %}`".into()),
        ),
        ErrorKind::OutOfFuel => (
            "the template ran too long and was stopped".into(),
            Some("look for a loop over a very large range".into()),
        ),
        kind => (
            match detail {
                Some(d) => format!("{kind}: {d}"),
                None => kind.to_string(),
            },
            None,
        ),
    };
    Error::Template {
        location: Box::new(location),
        shipped: template.is_shipped(),
        message,
        what: what.map(str::to_string),
        hint,
        source: err,
    }
}

/// Explains an undefined `a.b.c` with what is defined: the template's variables, or the
/// fields of the map that lacks the one asked for.
fn undefined_hint(variable: Option<&str>, context: Option<&Value>) -> String {
    let path: Vec<&str> = variable
        .map(|v| v.split('.').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let Some(mut current) = context else {
        return "check the spelling of the variable".into();
    };
    let fields = |map: &Map<String, Value>| map.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut walked: Vec<&str> = Vec::new();
    for segment in &path {
        match current {
            Value::Object(map) => match map.get(*segment) {
                Some(next) => {
                    walked.push(segment);
                    current = next;
                }
                None => {
                    let close = map
                        .keys()
                        .map(|k| (k, strsim::jaro_winkler(k, segment)))
                        .filter(|(_, s)| *s > 0.8)
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                        .map(|(k, _)| format!(" (did you mean `{k}`?)"))
                        .unwrap_or_default();
                    return if walked.is_empty() {
                        format!(
                            "`{segment}` is not one of this template's variables{close}; they are: {}",
                            fields(map)
                        )
                    } else {
                        format!(
                            "`{}` has no `{segment}`{close}; it has: {}",
                            walked.join("."),
                            fields(map)
                        )
                    };
                }
            },
            Value::Null => {
                return format!(
                    "`{}` is none here; guard it with `{{% if {} is not none %}}`",
                    walked.join("."),
                    walked.join(".")
                )
            }
            _ => break,
        }
    }
    match context {
        Some(Value::Object(map)) => format!("the template's variables are: {}", fields(map)),
        _ => "check the spelling of the variable".into(),
    }
}

/// Hashes an object's canonical JSON (keys sorted at every level, whatever order the
/// JSON maps keep; serde_json's `preserve_order` could be switched on by any crate).
fn spec_hash(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push('{');
                for (i, (key, value)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    write(value, &mut text);
    crate::content::short_hash(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn spec_hash_ignores_key_order() {
        let a = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        let mut b = Map::new();
        b.insert("b".into(), json!({"d": "x", "c": [1, 2]}));
        b.insert("a".into(), json!(1));
        assert_eq!(spec_hash(&a), spec_hash(&Value::Object(b)));
        assert_ne!(spec_hash(&a), spec_hash(&json!({"a": 2})));
    }
}

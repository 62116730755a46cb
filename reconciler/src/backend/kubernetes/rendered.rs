//! Rendered template output as Kubernetes objects: parsing its YAML documents into JSON
//! values (refusing what means nothing in an object: duplicate keys, non-string keys,
//! tags) and the checks every object passes before Cairn stamps and applies it.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::address::is_dns1123_label;

/// Kinds without a namespace. Anything else must name one.
const CLUSTER_SCOPED: [&str; 14] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "GatewayClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
];

/// Kinds whose names become DNS labels or label values, so at most 63 characters.
const LABEL_NAMED: [&str; 4] = ["Namespace", "Service", "Job", "Deployment"];

/// What YAML parsing found wrong.
pub(super) struct YamlProblem {
    pub(super) message: String,
    pub(super) line: Option<usize>,
    pub(super) column: Option<usize>,
}

/// Parses every YAML document in `text`; empty documents are skipped. Duplicate keys,
/// non-string keys and tags are refused: none means anything in a Kubernetes object.
pub(super) fn parse_documents(text: &str) -> Result<Vec<Value>, YamlProblem> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        // Stop at the first error: the iterator would repeat it.
        let value = serde_norway::Value::deserialize(document).map_err(|e| YamlProblem {
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        out.push(to_json(value).map_err(|message| YamlProblem {
            message,
            line: None,
            column: None,
        })?);
    }
    Ok(out)
}

fn to_json(value: serde_norway::Value) -> Result<Value, String> {
    use serde_norway::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("`{n}` is not a number JSON can hold"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let Y::String(key) = key else {
                    return Err(format!(
                        "a mapping key must be a string, found {}",
                        serde_norway::to_string(&key).unwrap_or_default().trim_end()
                    ));
                };
                out.insert(key, to_json(value)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => return Err(format!("YAML tags (`{}`) are not allowed", tagged.tag)),
    })
}

/// The identifying fields of a checked object.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) api_version: String,
    pub(super) kind: String,
    pub(super) namespace: Option<String>,
    pub(super) name: String,
}

/// Checks what the API server would refuse outright: missing identity fields, a
/// namespace where there must (not) be one, malformed names and labels.
pub(super) fn check_object(value: &Value) -> Result<Head, String> {
    let Some(object) = value.as_object() else {
        return Err(format!("a document is {}, not a map", kind_of(value)));
    };
    let text = |field: &str| -> Result<String, String> {
        match object.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(other) => Err(format!(
                "`{field}` is {}, not a non-empty string",
                kind_of(other)
            )),
            None => Err(format!("an object has no `{field}`")),
        }
    };
    let api_version = text("apiVersion")?;
    let kind = text("kind")?;
    let Some(metadata) = object.get("metadata").and_then(Value::as_object) else {
        return Err(format!("the {kind} has no `metadata` map"));
    };
    let name = match metadata.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("the {kind} has no `metadata.name`")),
    };
    let label_named = LABEL_NAMED.contains(&kind.as_str());
    if label_named && !is_dns1123_label(&name) {
        return Err(format!(
            "{kind} name `{name}` must be at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
        ));
    }
    if !label_named && !is_dns1123_subdomain(&name) {
        return Err(format!(
            "{kind} name `{name}` must be lowercase letters, digits, `-` and `.` (at most 253)"
        ));
    }
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) if is_dns1123_label(ns) => Some(ns.clone()),
        Some(other) => {
            return Err(format!(
                "{kind} `{name}` has namespace {other}, which is not a namespace name"
            ))
        }
    };
    let cluster_scoped = CLUSTER_SCOPED.contains(&kind.as_str());
    match (&namespace, cluster_scoped) {
        (None, false) => {
            return Err(format!("{kind} `{name}` has no `metadata.namespace`"));
        }
        (Some(ns), true) => {
            return Err(format!(
                "{kind} `{name}` is cluster-scoped, but has namespace `{ns}`"
            ));
        }
        _ => {}
    }
    for field in ["labels", "annotations"] {
        let map = match metadata.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(format!(
                    "`metadata.{field}` of {kind} `{name}` is {}, not a map",
                    kind_of(other)
                ))
            }
        };
        for (key, value) in map {
            if !is_qualified_name(key) {
                return Err(format!(
                    "{kind} `{name}` has {} key `{key}`, which is not a valid key (`[prefix/]name`)",
                    &field[..field.len() - 1]
                ));
            }
            let Some(value) = value.as_str() else {
                return Err(format!(
                    "{kind} `{name}` has {} `{key}` set to {}; values must be strings (quote them)",
                    &field[..field.len() - 1],
                    kind_of(value)
                ));
            };
            if field == "labels" && !is_label_value(value) {
                return Err(format!(
                    "{kind} `{name}` has label `{key}: {value}`; a label value is at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"
                ));
            }
        }
    }
    Ok(Head {
        api_version,
        kind,
        namespace,
        name,
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of
/// at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or
/// digit.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let bytes = value.as_bytes();
    value.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_keys_and_values() {
        assert!(is_qualified_name("app.kubernetes.io/managed-by"));
        assert!(is_qualified_name("cost-center"));
        assert!(!is_qualified_name("Bad Key"));
        assert!(!is_qualified_name("/name"));
        assert!(!is_qualified_name("UPPER.example/x"));
        assert!(is_label_value(""));
        assert!(is_label_value("radiology-ai"));
        assert!(!is_label_value("-leading"));
        assert!(!is_label_value(&"x".repeat(64)));
    }

    #[test]
    fn yaml_documents_empty_duplicate_and_tagged() {
        let docs = parse_documents("---\n# nothing\n---\nkind: A\n---\n")
            .ok()
            .unwrap();
        assert_eq!(docs, vec![json!({"kind": "A"})]);
        let dup = parse_documents("a: 1\na: 2\n").err().unwrap();
        assert!(dup.message.contains("duplicate"), "{}", dup.message);
        let tagged = parse_documents("a: !secret x\n").err().unwrap();
        assert!(tagged.message.contains("tags"), "{}", tagged.message);
        let key = parse_documents("1: x\n").err().unwrap();
        assert!(
            key.message.contains("key must be a string"),
            "{}",
            key.message
        );
    }

    #[test]
    fn objects_need_identity_and_the_right_scope() {
        let ok = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "b"}});
        assert!(check_object(&ok).is_ok());
        let no_ns = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}});
        assert!(check_object(&no_ns)
            .unwrap_err()
            .contains("no `metadata.namespace`"));
        let ns_ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "namespace": "b"}});
        assert!(check_object(&ns_ns).unwrap_err().contains("cluster-scoped"));
        let long = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a".repeat(64), "namespace": "b"}});
        assert!(check_object(&long).unwrap_err().contains("at most 63"));
        let number_label = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "b", "labels": {"x": 1}}});
        assert!(check_object(&number_label)
            .unwrap_err()
            .contains("quote them"));
    }
}

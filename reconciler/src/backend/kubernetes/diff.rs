//! The managed-field diff of one Kubernetes object: what applying a rendered object
//! would change in its live counterpart, field by field.
//!
//! This module owns the rule for "what counts as drift" on Kubernetes. It is pure: it
//! takes a desired [`KubeObject`] and the live object as JSON, and never talks to a
//! cluster. Observing and applying are in `cluster/`.
//!
//! # The rule
//! Cairn applies objects with server-side apply, so it only ever sets the fields it
//! renders. The diff therefore compares only those: the live object is projected onto
//! the desired object's field set.
//!
//! - Maps are compared key by key, for the keys the desired map has. A key the live map
//!   has and the desired one doesn't is somebody else's (a server default such as
//!   `imagePullPolicy` or `clusterIP`, a controller's annotation) and never shows.
//! - The built-in lists the API server merges by `name` (containers, env, ports,
//!   volumes) are matched by name; other lists (atomic: an HTTPRoute's `backendRefs`)
//!   are compared element by
//!   element when both have the same length (so defaults inside the elements don't
//!   show), and as a whole otherwise. `metadata.finalizers` is a set: others'
//!   finalizers beside Cairn's are no drift.
//! - Quantities under `requests`, `limits`, `hard` and the like compare by value: `"1"`,
//!   `1` and `"1000m"` are the same CPU, `"1Gi"` and `"1024Mi"` the same memory.
//! - Server-owned metadata (`managedFields`, `resourceVersion`, `uid`,
//!   `creationTimestamp`, `generation`, …), `status`, and the `cairn.dev/revision`
//!   annotation (the commit an object was last rendered at: bookkeeping, not state)
//!   are ignored.
//! - Fields Cairn applied before (its `Apply` entry in `metadata.managedFields`) that the
//!   desired object no longer has are reported too, with no `after`: the next apply
//!   removes them.
//!
//! Changes to fields the API server refuses to update (a Job's pod template, a
//! Deployment's selector, a Service's cluster IP) are listed in
//! [`ObjectDiff::immutable`]: such an object must be replaced (deleted and created).
//!
//! Paths are written `spec.template.spec.containers[0].image`; a key that holds a dot
//! or a slash (label and annotation keys) is written as is
//! (`metadata.labels.cairn.dev/workspace`), as the plan shows it to people.

use serde_json::{Map, Value};

use super::{KubeObject, ANNOTATION_REVISION};
use crate::plan::FieldChange;

/// The field manager Cairn applies as.
pub const FIELD_MANAGER: &str = "cairn";

/// Metadata the API server writes: never compared.
const SERVER_METADATA: [&str; 9] = [
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
];

/// Map keys whose values are resource quantities (`cpu: "500m"`).
const QUANTITY_MAPS: [&str; 10] = [
    "requests",
    "limits",
    "hard",
    "used",
    "default",
    "defaultRequest",
    "max",
    "min",
    "capacity",
    "allocatable",
];

/// The changes applying one object would make to its live counterpart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectDiff {
    /// Changed fields, in the desired object's order: `before` is the live value (none
    /// when the field is missing), `after` the desired one (none when the next apply
    /// removes a field Cairn set before).
    pub changes: Vec<FieldChange>,
    /// The paths among `changes` that the API server refuses to update: the object must
    /// be replaced (deleted, then created) for them to take effect.
    pub immutable: Vec<String>,
}

impl ObjectDiff {
    /// Whether applying the object would change nothing Cairn manages.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether the object must be deleted and created rather than updated.
    pub fn needs_replace(&self) -> bool {
        !self.immutable.is_empty()
    }
}

/// Returns the managed-field diff of `desired` against `live` (the object as the API
/// server returns it). See the module documentation for the rule.
pub fn diff(desired: &KubeObject, live: &Value) -> ObjectDiff {
    let mut changes = Vec::new();
    if let Value::Object(d) = &desired.value {
        for (key, d_value) in d {
            if matches!(key.as_str(), "apiVersion" | "kind" | "status") {
                continue;
            }
            let l_value = live.get(key);
            if key == "metadata" {
                diff_metadata(d_value, l_value, &mut changes);
            } else {
                project(key.clone(), "", key, d_value, l_value, &mut changes);
            }
        }
    }
    if let Some(fields) = cairn_fields(live) {
        removed(
            fields,
            Some(&desired.value),
            live,
            String::new(),
            &mut changes,
        );
    }
    let immutable = changes
        .iter()
        .filter(|c| is_immutable(&desired.kind, &c.path))
        .map(|c| c.path.clone())
        .collect();
    ObjectDiff { changes, immutable }
}

/// Whether the API server refuses to change `path` of an object of `kind` in place.
pub fn is_immutable(kind: &str, path: &str) -> bool {
    let prefixes: &[&str] = match kind {
        "Job" => &[
            "spec.template",
            "spec.selector",
            "spec.completions",
            "spec.completionMode",
        ],
        "Deployment" => &["spec.selector"],
        // Only a bound claim's requested size may change (grow).
        "PersistentVolumeClaim" => &[
            "spec.accessModes",
            "spec.storageClassName",
            "spec.volumeMode",
            "spec.selector",
            "spec.dataSource",
        ],
        "Service" => &["spec.clusterIP"],
        _ => &[],
    };
    prefixes.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    })
}

fn diff_metadata(desired: &Value, live: Option<&Value>, out: &mut Vec<FieldChange>) {
    let Value::Object(d) = desired else {
        return project("metadata".into(), "", "metadata", desired, live, out);
    };
    for (key, d_value) in d {
        if SERVER_METADATA.contains(&key.as_str()) {
            continue;
        }
        let l_value = live.and_then(|l| l.get(key));
        let path = format!("metadata.{key}");
        if key == "finalizers" {
            // A set: others' finalizers stay beside Cairn's.
            let missing = d_value.as_array().is_some_and(|d| {
                d.iter().any(|f| {
                    !l_value
                        .and_then(Value::as_array)
                        .is_some_and(|l| l.contains(f))
                })
            });
            if missing {
                out.push(change(path, l_value.cloned(), Some(d_value.clone())));
            }
            continue;
        }
        if key == "annotations" {
            if let (Value::Object(d_ann), l_ann) = (d_value, l_value) {
                let mut d_ann = d_ann.clone();
                d_ann.remove(ANNOTATION_REVISION);
                let l_ann = l_ann.map(|l| match l {
                    Value::Object(m) => {
                        let mut m = m.clone();
                        m.remove(ANNOTATION_REVISION);
                        Value::Object(m)
                    }
                    other => other.clone(),
                });
                project(
                    path,
                    "metadata",
                    key,
                    &Value::Object(d_ann),
                    l_ann.as_ref(),
                    out,
                );
                continue;
            }
        }
        project(path, "metadata", key, d_value, l_value, out);
    }
}

/// Compares `desired` with `live` projected onto the desired fields, appending changes.
/// `key` is the field's own key and `parent` the key of the map holding it (label and
/// annotation keys hold dots, so they can't be read back from `path`).
fn project(
    path: String,
    parent: &str,
    key: &str,
    desired: &Value,
    live: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    match (desired, live) {
        (_, None) => {
            // An empty map or list that the server dropped (or never stored) is no drift:
            // applying it sets nothing.
            if !is_empty_container(desired) {
                out.push(change(path, None, Some(desired.clone())));
            }
        }
        (Value::Object(d), Some(Value::Object(l))) => {
            for (child, d_value) in d {
                project(join(&path, child), key, child, d_value, l.get(child), out);
            }
        }
        (Value::Array(d), Some(Value::Array(l))) => {
            let associative = MERGED_BY_NAME.contains(&key);
            if let (true, Some(d_names), Some(l_names)) = (associative, names(d), names(l)) {
                for (i, (d_elem, name)) in d.iter().zip(&d_names).enumerate() {
                    let l_elem = l_names.iter().position(|n| n == name).map(|j| &l[j]);
                    match l_elem {
                        Some(l_elem) => {
                            project(format!("{path}[{i}]"), key, "", d_elem, Some(l_elem), out)
                        }
                        None => {
                            out.push(change(format!("{path}[{i}]"), None, Some(d_elem.clone())))
                        }
                    }
                }
            } else if d.len() == l.len() {
                for (i, (d_elem, l_elem)) in d.iter().zip(l).enumerate() {
                    project(format!("{path}[{i}]"), key, "", d_elem, Some(l_elem), out);
                }
            } else {
                out.push(change(path, live.cloned(), Some(desired.clone())));
            }
        }
        (d, Some(l)) => {
            if !scalars_equal(parent, d, l) {
                out.push(change(path, Some(l.clone()), Some(d.clone())));
            }
        }
    }
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Lists the API server merges by `name` (associative lists of the built-in kinds):
/// an element someone else added beside Cairn's is theirs, not drift. Every other list
/// is atomic (custom resources' lists, an HTTPRoute's `backendRefs` among them): an
/// element Cairn doesn't render is drift, and applying removes it.
const MERGED_BY_NAME: [&str; 7] = [
    "containers",
    "initContainers",
    "ephemeralContainers",
    "env",
    "ports",
    "volumes",
    "imagePullSecrets",
];

/// The `name` of every element, when every element is a map with a string `name`.
fn names(list: &[Value]) -> Option<Vec<&str>> {
    list.iter()
        .map(|e| e.get("name").and_then(Value::as_str))
        .collect()
}

/// Whether two leaves are equal; `parent` is the key of the map holding them.
fn scalars_equal(parent: &str, desired: &Value, live: &Value) -> bool {
    if desired == live {
        return true;
    }
    if let (Some(d), Some(l)) = (desired.as_f64(), live.as_f64()) {
        // `1` and `1.0` are the same number.
        if d == l {
            return true;
        }
    }
    if QUANTITY_MAPS.contains(&parent) {
        if let (Some(d), Some(l)) = (quantity_of(desired), quantity_of(live)) {
            return d == l;
        }
    }
    false
}

fn quantity_of(value: &Value) -> Option<i128> {
    match value {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => None,
    }
}

/// Parses a Kubernetes resource quantity (`500m`, `1.5Gi`, `2e3`, `1`) into
/// nano-units, rounding up as the API server does; `None` for anything else or a value
/// too large to hold.
pub fn parse_quantity(text: &str) -> Option<i128> {
    let text = text.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    // value = mantissa * 10^exp10 * 1024^exp1024, in nano-units (×10^9).
    let (exp10, exp1024): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.starts_with(['e', 'E']) => {
            (s[1..].parse::<i32>().ok().filter(|e| e.abs() <= 30)?, 0)
        }
        _ => return None,
    };
    let exp10 = exp10 + 9 - fraction.len() as i32;
    let mut value = mantissa.checked_mul(1024i128.checked_pow(exp1024)?)?;
    if exp10 >= 0 {
        value = value.checked_mul(10i128.checked_pow(exp10 as u32)?)?;
    } else {
        let divisor = 10i128.checked_pow(exp10.unsigned_abs())?;
        value = (value + divisor - 1) / divisor;
    }
    Some(sign * value)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn change(path: String, before: Option<Value>, after: Option<Value>) -> FieldChange {
    FieldChange {
        path,
        before,
        after,
    }
}

/// The `fieldsV1` of Cairn's `Apply` entry in the live object's managed fields.
fn cairn_fields(live: &Value) -> Option<&Map<String, Value>> {
    live.pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|e| {
            e.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
                && e.get("subresource").is_none_or(Value::is_null)
        })?
        .get("fieldsV1")?
        .as_object()
}

/// Whether a `fieldsV1` node stands for a whole field (no owned children).
fn is_leaf(node: &Value) -> bool {
    node.as_object().is_none_or(|m| m.keys().all(|k| k == "."))
}

/// Appends a removal for every field Cairn owns (per `fields`, the `fieldsV1` form:
/// `f:<key>`, `k:<json key>`, `v:<json value>`, `i:<index>`) that the live object has
/// and the desired one doesn't.
fn removed(
    fields: &Map<String, Value>,
    desired: Option<&Value>,
    live: &Value,
    path: String,
    out: &mut Vec<FieldChange>,
) {
    for (entry, node) in fields {
        if entry == "." {
            continue;
        }
        if let Some(key) = entry.strip_prefix("f:") {
            if path.is_empty() && matches!(key, "status" | "apiVersion" | "kind") {
                continue;
            }
            if path == "metadata" && SERVER_METADATA.contains(&key) {
                continue;
            }
            if path == "metadata.annotations" && key == ANNOTATION_REVISION {
                continue;
            }
            let Some(l_child) = live.get(key) else {
                continue;
            };
            let d_child = desired.and_then(|d| d.get(key));
            let child_path = join(&path, key);
            recurse(node, d_child, l_child, child_path, out);
        } else if let Some(json_key) = entry.strip_prefix("k:") {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(json_key) else {
                continue;
            };
            let matches = |e: &&Value| key.iter().all(|(k, v)| e.get(k) == Some(v));
            let Some((index, l_elem)) = live
                .as_array()
                .and_then(|l| l.iter().enumerate().find(|(_, e)| matches(e)))
            else {
                continue;
            };
            let d_elem = desired
                .and_then(Value::as_array)
                .and_then(|d| d.iter().enumerate().find(|(_, e)| matches(e)));
            match d_elem {
                Some((d_index, d_elem)) => recurse(
                    node,
                    Some(d_elem),
                    l_elem,
                    format!("{path}[{d_index}]"),
                    out,
                ),
                None => out.push(change(
                    format!("{path}[{index}]"),
                    Some(l_elem.clone()),
                    None,
                )),
            }
        } else if let Some(json_value) = entry.strip_prefix("v:") {
            let Ok(value) = serde_json::from_str::<Value>(json_value) else {
                continue;
            };
            let in_desired = desired
                .and_then(Value::as_array)
                .is_some_and(|d| d.contains(&value));
            if let Some(index) = live
                .as_array()
                .and_then(|l| l.iter().position(|e| *e == value))
            {
                if !in_desired {
                    out.push(change(format!("{path}[{index}]"), Some(value), None));
                }
            }
        } else if let Some(index) = entry.strip_prefix("i:") {
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            let Some(l_elem) = live.as_array().and_then(|l| l.get(index)) else {
                continue;
            };
            let d_elem = desired.and_then(Value::as_array).and_then(|d| d.get(index));
            recurse(node, d_elem, l_elem, format!("{path}[{index}]"), out);
        }
    }
}

fn recurse(
    node: &Value,
    desired: Option<&Value>,
    live: &Value,
    path: String,
    out: &mut Vec<FieldChange>,
) {
    if is_leaf(node) {
        if desired.is_none() {
            out.push(change(path, Some(live.clone()), None));
        }
    } else if let Some(children) = node.as_object() {
        removed(children, desired, live, path, out);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(kind: &str, value: Value) -> KubeObject {
        KubeObject {
            api_version: value["apiVersion"].as_str().unwrap_or("v1").to_string(),
            kind: kind.to_string(),
            namespace: value["metadata"]["namespace"].as_str().map(str::to_string),
            name: value["metadata"]["name"]
                .as_str()
                .unwrap_or("x")
                .to_string(),
            context: None,
            value,
        }
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "ml",
                "labels": {"app.kubernetes.io/managed-by": "cairn", "cairn.dev/workspace": "ml"},
                "annotations": {"cairn.dev/spec-hash": "abc", "cairn.dev/revision": "r1"},
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "server", "image": "registry.example/web:1",
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    }]},
                },
            },
        })
    }

    /// What a real API server returns for `deployment()` applied by Cairn: defaults,
    /// server metadata, status, and Cairn's managed fields.
    fn live_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "ml", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "cairn", "cairn.dev/workspace": "ml"},
                "annotations": {
                    "cairn.dev/spec-hash": "abc", "cairn.dev/revision": "r0",
                    "deployment.kubernetes.io/revision": "3",
                },
                "managedFields": [
                    {"manager": "cairn", "operation": "Apply", "apiVersion": "apps/v1",
                     "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {
                            "f:labels": {"f:app.kubernetes.io/managed-by": {}, "f:cairn.dev/workspace": {}},
                            "f:annotations": {"f:cairn.dev/spec-hash": {}, "f:cairn.dev/revision": {}},
                        },
                        "f:spec": {
                            "f:replicas": {},
                            "f:selector": {},
                            "f:template": {
                                "f:metadata": {"f:labels": {"f:app": {}}},
                                "f:spec": {"f:containers": {
                                    "k:{\"name\":\"server\"}": {
                                        ".": {}, "f:name": {}, "f:image": {},
                                        "f:ports": {}, "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}}},
                                    },
                                }},
                            },
                        },
                    }},
                    {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                     "subresource": "status", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}},
                ],
            },
            "spec": {
                "replicas": 2,
                "progressDeadlineSeconds": 600,
                "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
                    "spec": {
                        "containers": [{
                            "name": "server", "image": "registry.example/web:1",
                            "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log",
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}},
                        }],
                        "dnsPolicy": "ClusterFirst",
                        "restartPolicy": "Always",
                        "schedulerName": "default-scheduler",
                        "securityContext": {},
                        "terminationGracePeriodSeconds": 30,
                    },
                },
            },
            "status": {"replicas": 2, "availableReplicas": 1, "observedGeneration": 3},
        })
    }

    fn paths(d: &ObjectDiff) -> Vec<&str> {
        d.changes.iter().map(|c| c.path.as_str()).collect()
    }

    #[test]
    fn defaulted_fields_status_and_server_metadata_never_show() {
        let d = diff(&object("Deployment", deployment()), &live_deployment());
        assert!(d.is_empty(), "{:#?}", d.changes);
        assert!(!d.needs_replace());
    }

    #[test]
    fn the_revision_annotation_is_bookkeeping() {
        let mut desired = deployment();
        desired["metadata"]["annotations"]["cairn.dev/revision"] = json!("r9");
        let d = diff(&object("Deployment", desired.clone()), &live_deployment());
        assert!(d.is_empty(), "{:#?}", d.changes);
        // Nor is it removed when a plan knows no revision.
        desired["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("cairn.dev/revision");
        let d = diff(&object("Deployment", desired), &live_deployment());
        assert!(d.is_empty(), "{:#?}", d.changes);
    }

    #[test]
    fn a_hand_edited_managed_field_shows_on_that_field_only() {
        let mut live = live_deployment();
        live["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example/web:hotfix");
        live["spec"]["replicas"] = json!(5);
        let d = diff(&object("Deployment", deployment()), &live);
        assert_eq!(
            d.changes,
            vec![
                change("spec.replicas".into(), Some(json!(5)), Some(json!(2))),
                change(
                    "spec.template.spec.containers[0].image".into(),
                    Some(json!("registry.example/web:hotfix")),
                    Some(json!("registry.example/web:1")),
                ),
            ]
        );
        assert!(d.immutable.is_empty(), "a deployment's template can change");
    }

    #[test]
    fn a_new_desired_field_shows_with_no_before() {
        let mut desired = deployment();
        desired["metadata"]["labels"]["team"] = json!("risk");
        desired["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}]);
        let d = diff(&object("Deployment", desired), &live_deployment());
        assert_eq!(
            d.changes,
            vec![
                change("metadata.labels.team".into(), None, Some(json!("risk"))),
                change(
                    "spec.template.spec.containers[0].env".into(),
                    None,
                    Some(json!([{"name": "A", "value": "1"}]))
                ),
            ]
        );
    }

    #[test]
    fn fields_cairn_applied_before_and_dropped_now_show_as_removals() {
        let mut desired = deployment();
        desired["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("cairn.dev/workspace");
        desired["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            .as_object_mut()
            .unwrap()
            .remove("memory");
        let d = diff(&object("Deployment", desired), &live_deployment());
        assert_eq!(
            d.changes,
            vec![
                change(
                    "metadata.labels.cairn.dev/workspace".into(),
                    Some(json!("ml")),
                    None
                ),
                change(
                    "spec.template.spec.containers[0].resources.limits.memory".into(),
                    Some(json!("1024Mi")),
                    None
                ),
            ]
        );
    }

    #[test]
    fn a_removed_named_element_shows_whole() {
        let mut live = live_deployment();
        let sidecar = json!({"name": "sidecar", "image": "proxy:1"});
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(sidecar.clone());
        // Someone else's sidecar is not Cairn's business.
        let d = diff(&object("Deployment", deployment()), &live);
        assert!(d.is_empty(), "{:#?}", d.changes);
        // One Cairn applied, then dropped, is removed.
        live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
            ["f:containers"]["k:{\"name\":\"sidecar\"}"] =
            json!({".": {}, "f:name": {}, "f:image": {}});
        let d = diff(&object("Deployment", deployment()), &live);
        assert_eq!(
            d.changes,
            vec![change(
                "spec.template.spec.containers[1]".into(),
                Some(sidecar),
                None
            )]
        );
    }

    #[test]
    fn fields_another_manager_set_are_not_drift() {
        let mut live = live_deployment();
        live["metadata"]["labels"]["owner"] = json!("someone");
        live["spec"]["template"]["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "now"});
        let d = diff(&object("Deployment", deployment()), &live);
        assert!(d.is_empty(), "{:#?}", d.changes);
    }

    #[test]
    fn named_lists_match_by_name_other_lists_by_position() {
        let mut desired = deployment();
        desired["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"name": "init", "image": "busybox"}));
        let d = diff(&object("Deployment", desired), &live_deployment());
        assert_eq!(
            paths(&d),
            ["spec.template.spec.containers[0]"],
            "only the new container: {:#?}",
            d.changes
        );

        // A list of strings compares by position when lengths match, whole otherwise.
        let mut desired = deployment();
        desired["spec"]["template"]["spec"]["containers"][0]["command"] =
            json!(["serve", "--port", "80"]);
        let mut live = live_deployment();
        live["spec"]["template"]["spec"]["containers"][0]["command"] =
            json!(["serve", "--port", "81"]);
        let d = diff(&object("Deployment", desired.clone()), &live);
        assert_eq!(
            d.changes,
            vec![change(
                "spec.template.spec.containers[0].command[2]".into(),
                Some(json!("81")),
                Some(json!("80"))
            )]
        );
        live["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["serve"]);
        let d = diff(&object("Deployment", desired), &live);
        assert_eq!(
            d.changes,
            vec![change(
                "spec.template.spec.containers[0].command".into(),
                Some(json!(["serve"])),
                Some(json!(["serve", "--port", "80"]))
            )]
        );
    }

    #[test]
    fn unnamed_maps_in_lists_are_projected_so_their_defaults_never_show() {
        let desired = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ml"},
            "spec": {"rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": 90}]}]},
        });
        let mut live = desired.clone();
        live["spec"]["rules"][0]["matches"] =
            json!([{"path": {"type": "PathPrefix", "value": "/"}}]);
        live["spec"]["rules"][0]["backendRefs"][0]["group"] = json!("");
        live["spec"]["rules"][0]["backendRefs"][0]["kind"] = json!("Service");
        let d = diff(&object("HTTPRoute", desired.clone()), &live);
        assert!(d.is_empty(), "{:#?}", d.changes);
        live["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(10);
        let d = diff(&object("HTTPRoute", desired.clone()), &live);
        assert_eq!(paths(&d), ["spec.rules[0].backendRefs[0].weight"]);
        // `backendRefs` is atomic: a backend Cairn no longer renders is drift.
        live["spec"]["rules"][0]["backendRefs"] = json!([
            {"name": "a", "port": 80, "weight": 90},
            {"name": "old", "port": 80, "weight": 0},
        ]);
        let d = diff(&object("HTTPRoute", desired), &live);
        assert_eq!(paths(&d), ["spec.rules[0].backendRefs"]);
    }

    #[test]
    fn quantities_compare_by_value_under_resource_maps_only() {
        for (desired, live) in [
            (json!("1"), json!(1)),
            (json!(1), json!("1")),
            (json!("1000m"), json!("1")),
            (json!("0.5"), json!("500m")),
            (json!("1Gi"), json!("1024Mi")),
            (json!("1k"), json!("1000")),
            (json!("2e3"), json!("2k")),
        ] {
            let mut d = deployment();
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] =
                desired.clone();
            let mut l = live_deployment();
            l["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] =
                live.clone();
            let result = diff(&object("Deployment", d), &l);
            assert!(
                result.is_empty(),
                "{desired} vs {live}: {:#?}",
                result.changes
            );
        }
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("2");
        let result = diff(&object("Deployment", d), &live_deployment());
        assert_eq!(
            result.changes,
            vec![change(
                "spec.template.spec.containers[0].resources.limits.cpu".into(),
                Some(json!("1000m")),
                Some(json!("2"))
            )]
        );
        // Elsewhere a string is a string.
        let mut d = deployment();
        d["metadata"]["labels"]["size"] = json!("1k");
        let mut l = live_deployment();
        l["metadata"]["labels"]["size"] = json!("1000");
        assert_eq!(
            paths(&diff(&object("Deployment", d), &l)),
            ["metadata.labels.size"]
        );
    }

    #[test]
    fn resource_quota_hard_limits_are_quantities() {
        let desired = json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "gpu", "namespace": "ml"},
            "spec": {"hard": {"requests.nvidia.com/gpu": 4}},
        });
        let mut live = desired.clone();
        live["spec"]["hard"]["requests.nvidia.com/gpu"] = json!("4");
        live["status"] = json!({"hard": {"requests.nvidia.com/gpu": "4"}, "used": {"requests.nvidia.com/gpu": "1"}});
        assert!(diff(&object("ResourceQuota", desired.clone()), &live).is_empty());
        live["spec"]["hard"]["requests.nvidia.com/gpu"] = json!("8");
        assert_eq!(
            diff(&object("ResourceQuota", desired), &live).changes,
            vec![change(
                "spec.hard.requests.nvidia.com/gpu".into(),
                Some(json!("8")),
                Some(json!(4))
            )]
        );
    }

    #[test]
    fn immutable_fields_ask_for_a_replace() {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "train", "namespace": "ml"},
            "spec": {
                "backoffLimit": 1,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "trainer:1"}]}},
            },
        });
        let mut live = job.clone();
        live["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}});
        live["spec"]["template"]["metadata"] =
            json!({"labels": {"batch.kubernetes.io/controller-uid": "u"}});
        live["spec"]["completions"] = json!(1);
        assert!(diff(&object("Job", job.clone()), &live).is_empty());

        live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("trainer:0");
        live["spec"]["backoffLimit"] = json!(3);
        let d = diff(&object("Job", job), &live);
        assert_eq!(
            paths(&d),
            [
                "spec.backoffLimit",
                "spec.template.spec.containers[0].image"
            ]
        );
        assert_eq!(d.immutable, ["spec.template.spec.containers[0].image"]);
        assert!(d.needs_replace());

        let mut deployment_desired = deployment();
        deployment_desired["spec"]["selector"]["matchLabels"]["tier"] = json!("api");
        let d = diff(
            &object("Deployment", deployment_desired),
            &live_deployment(),
        );
        assert_eq!(d.immutable, ["spec.selector.matchLabels.tier"]);

        assert!(is_immutable("Service", "spec.clusterIP"));
        assert!(!is_immutable("Service", "spec.clusterIPs"));
        assert!(!is_immutable("Job", "spec.templateX"));
        assert!(!is_immutable("Deployment", "spec.template.spec"));
    }

    #[test]
    fn a_missing_live_object_part_shows_whole_and_empty_maps_do_not() {
        let mut desired = deployment();
        desired["spec"]["template"]["spec"]["volumes"] = json!([]);
        desired["spec"]["template"]["spec"]["nodeSelector"] = json!({});
        desired["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "gpu", "operator": "Exists"}]);
        let d = diff(&object("Deployment", desired), &live_deployment());
        assert_eq!(paths(&d), ["spec.template.spec.tolerations"]);
        assert_eq!(d.changes[0].before, None);
    }

    #[test]
    fn set_and_index_entries_of_managed_fields() {
        let mut live = live_deployment();
        live["metadata"]["finalizers"] = json!(["cairn.dev/drain", "other.example/keep"]);
        live["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "gpu", "operator": "Exists"}]);
        let fields = &mut live["metadata"]["managedFields"][0]["fieldsV1"];
        fields["f:metadata"]["f:finalizers"] = json!({"v:\"cairn.dev/drain\"": {}});
        fields["f:spec"]["f:template"]["f:spec"]["f:tolerations"] =
            json!({"i:0": {"f:key": {}, "f:operator": {}}});
        let d = diff(&object("Deployment", deployment()), &live);
        assert_eq!(
            d.changes,
            vec![
                change(
                    "metadata.finalizers[0]".into(),
                    Some(json!("cairn.dev/drain")),
                    None
                ),
                change(
                    "spec.template.spec.tolerations[0].key".into(),
                    Some(json!("gpu")),
                    None
                ),
                change(
                    "spec.template.spec.tolerations[0].operator".into(),
                    Some(json!("Exists")),
                    None
                ),
            ]
        );
        // Still desired: nothing to remove.
        let mut desired = deployment();
        desired["metadata"]["finalizers"] = json!(["cairn.dev/drain"]);
        desired["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "gpu", "operator": "Exists"}]);
        let d = diff(&object("Deployment", desired.clone()), &live);
        assert!(d.is_empty(), "finalizers are a set: {:#?}", d.changes);
        desired["metadata"]["finalizers"] = json!(["cairn.dev/drain", "cairn.dev/new"]);
        let d = diff(&object("Deployment", desired), &live);
        assert_eq!(paths(&d), ["metadata.finalizers"]);
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("1"), Some(1_000_000_000));
        assert_eq!(parse_quantity("500m"), Some(500_000_000));
        assert_eq!(parse_quantity("1.5"), Some(1_500_000_000));
        assert_eq!(parse_quantity("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(parse_quantity("1e3"), parse_quantity("1k"));
        assert_eq!(parse_quantity("1E"), Some(10i128.pow(27)));
        assert_eq!(parse_quantity("-2"), Some(-2_000_000_000));
        assert_eq!(parse_quantity("1n"), Some(1));
        assert_eq!(parse_quantity("0.1n"), Some(1), "rounded up");
        for bad in ["", "m", "1.2.3", "1x", "Gi", "1 Gi", "1e", "1e99", "nan"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }
}

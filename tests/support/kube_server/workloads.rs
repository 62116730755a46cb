//! What the real server defaults and validates in Deployments, Jobs and Services,
//! limited to what clients most often get wrong (other kinds are stored as sent), and
//! the fields that are immutable; selectors against pod templates.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::meta::{is_label_value, qualified_name_error};
use super::pod_spec::{default_pod_spec, prepare_pod, validate_pod_spec};
use super::resources::ResourceType;

pub(super) type Causes = Vec<(String, String)>;

/// Fills the defaults the real server fills when it decodes an object of these kinds (a
/// read shows them as a real cluster's would; an apply does not own them), and checks
/// what it validates. `old` is the stored object, for an update.
pub(super) fn prepare(
    resource: &ResourceType,
    old: Option<&Value>,
    object: &mut Value,
) -> Result<(), Causes> {
    let mut causes = Causes::new();
    if !object["spec"].is_null() && !object["spec"].is_object() {
        causes.push(("spec".into(), "Invalid value: must be an object".into()));
        return Err(causes);
    }
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("apps", "Deployment") => prepare_deployment(old, object, &mut causes),
        ("batch", "Job") => prepare_job(old, object, &mut causes),
        ("", "Pod") => prepare_pod(old, object, &mut causes),
        ("", "Service") => prepare_service(old, object, &mut causes),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// Sets `value[key]` when it is absent or null (and `value` is a map).
pub(super) fn set_default(value: &mut Value, key: &str, default: Value) {
    if let Some(map) = value.as_object_mut() {
        let v = map.entry(key).or_insert(Value::Null);
        if v.is_null() {
            *v = default;
        }
    }
}

/// `value[key]`, an empty map when absent; `None` when it is something else.
pub(super) fn map_at<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = value.as_object_mut()?;
    let v = map.entry(key).or_insert_with(|| json!({}));
    if v.is_null() {
        *v = json!({});
    }
    v.is_object().then_some(v)
}

pub(super) fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, k| &v[*k])
}

/// A field that may not change once set.
pub(super) fn immutable(old: &Value, new: &Value, path: &[&str], causes: &mut Causes) {
    let (before, after) = (at(old, path), at(new, path));
    if before != after {
        causes.push((
            path.join("."),
            format!("Invalid value: {after}: field is immutable"),
        ));
    }
}

fn prepare_deployment(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let spec = map_at(object, "spec").expect("a map");
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = map_at(spec, "strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            if let Some(rolling) = map_at(strategy, "rollingUpdate") {
                set_default(rolling, "maxUnavailable", json!("25%"));
                set_default(rolling, "maxSurge", json!("25%"));
            }
        }
    }
    if let Some(pod) = map_at(spec, "template").and_then(|t| map_at(t, "spec")) {
        default_pod_spec(pod, Some("Always"));
    }
    let spec = &object["spec"];
    if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
        causes.push((
            "spec.replicas".into(),
            format!(
                "Invalid value: {}: must be greater than or equal to 0",
                spec["replicas"]
            ),
        ));
    }
    validate_selector(spec, "deployment", causes);
    validate_pod_spec(
        &spec["template"]["spec"],
        "spec.template.spec",
        &["Always"],
        causes,
    );
    if let Some(old) = old {
        immutable(old, object, &["spec", "selector"], causes);
    }
}

fn prepare_job(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let spec = map_at(object, "spec").expect("a map");
    if old.is_none() && spec["manualSelector"] != true {
        if !spec["selector"].is_null() {
            causes.push((
                "spec.selector".into(),
                format!(
                    "Invalid value: {}: `selector` will be auto-generated",
                    spec["selector"]
                ),
            ));
        }
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        if let Some(labels) = map_at(spec, "template")
            .and_then(|t| map_at(t, "metadata"))
            .and_then(|m| map_at(m, "labels"))
        {
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", &uid),
                ("batch.kubernetes.io/job-name", &name),
                ("controller-uid", &uid),
                ("job-name", &name),
            ] {
                labels[k] = json!(v);
            }
        }
    }
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if spec["podFailurePolicy"].is_null() {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    if let Some(pod) = map_at(spec, "template").and_then(|t| map_at(t, "spec")) {
        default_pod_spec(pod, None);
    }
    let spec = &object["spec"];
    for field in ["parallelism", "completions", "backoffLimit"] {
        if spec[field].as_i64().is_some_and(|n| n < 0) {
            causes.push((
                format!("spec.{field}"),
                format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    spec[field]
                ),
            ));
        }
    }
    validate_selector(spec, "job", causes);
    validate_pod_spec(
        &spec["template"]["spec"],
        "spec.template.spec",
        &["OnFailure", "Never"],
        causes,
    );
    if let Some(old) = old {
        for path in [
            &["spec", "template"][..],
            &["spec", "selector"],
            &["spec", "completions"],
            &["spec", "completionMode"],
        ] {
            immutable(old, object, path, causes);
        }
    }
}

fn prepare_service(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let spec = map_at(object, "spec").expect("a map");
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let kind = spec["type"].as_str().unwrap_or("").to_string();
    if kind != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    for port in spec["ports"].as_array_mut().into_iter().flatten() {
        set_default(port, "protocol", json!("TCP"));
        let number = port["port"].clone();
        set_default(port, "targetPort", number);
    }
    let spec = &object["spec"];
    if !matches!(
        kind.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push((
            "spec.type".into(),
            format!(
                "Unsupported value: \"{kind}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ),
        ));
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && !headless {
        causes.push(("spec.ports".into(), "Required value".into()));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match port["port"].as_i64() {
            None => causes.push((format!("{at}.port"), "Required value".into())),
            Some(p) if !(1..=65535).contains(&p) => causes.push((
                format!("{at}.port"),
                format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
            )),
            Some(_) => {}
        }
        match port["name"].as_str() {
            None | Some("") if ports.len() > 1 => {
                causes.push((format!("{at}.name"), "Required value".into()))
            }
            Some(n) if !n.is_empty() && !names.insert(n.to_string()) => {
                causes.push((format!("{at}.name"), format!("Duplicate value: \"{n}\"")))
            }
            _ => {}
        }
        let protocol = port["protocol"].as_str().unwrap_or("");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            causes.push((
                format!("{at}.protocol"),
                format!("Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
            ));
        }
    }
    if let Some(selector) = spec["selector"].as_object() {
        for (k, v) in selector {
            let bad_key = qualified_name_error(k).is_some();
            let bad_value = !v.as_str().is_some_and(is_label_value);
            if bad_key || bad_value {
                causes.push((
                    "spec.selector".into(),
                    format!("Invalid value: \"{k}\": {v}"),
                ));
            }
        }
    }
    if let Some(old) = old {
        if !old["spec"]["clusterIP"].is_null() {
            immutable(old, object, &["spec", "clusterIP"], causes);
        }
    }
}

/// A Deployment's or Job's selector: there, not empty, valid, and matching the template's
/// labels.
fn validate_selector(spec: &Value, kind: &str, causes: &mut Causes) {
    let selector = &spec["selector"];
    if selector.is_null() {
        causes.push(("spec.selector".into(), "Required value".into()));
        return;
    }
    let labels = selector["matchLabels"].as_object().map_or(0, Map::len);
    let expressions = selector["matchExpressions"].as_array().map_or(0, Vec::len);
    if labels + expressions == 0 {
        causes.push((
            "spec.selector".into(),
            format!("Invalid value: {selector}: empty selector is invalid for {kind}"),
        ));
        return;
    }
    for (i, e) in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let op = e["operator"].as_str().unwrap_or("");
        if !matches!(op, "In" | "NotIn" | "Exists" | "DoesNotExist") {
            causes.push((
                format!("spec.selector.matchExpressions[{i}].operator"),
                format!("Invalid value: \"{op}\": not a valid selector operator"),
            ));
            return;
        }
    }
    let template_labels = &spec["template"]["metadata"]["labels"];
    if !selector_matches(selector, template_labels) {
        causes.push((
            "spec.template.metadata.labels".into(),
            format!(
                "Invalid value: {template_labels}: `selector` does not match template `labels`"
            ),
        ));
    }
}

/// Whether a `LabelSelector` (matchLabels, matchExpressions) selects these labels.
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        });
    by_label && by_expression
}

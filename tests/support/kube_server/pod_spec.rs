//! Pods and pod templates: the defaults the real server fills, and validation of
//! containers, ports and resource quantities.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::meta::{is_dns_label, LABEL_MESSAGE};
use super::workloads::{map_at, set_default, Causes};

pub(super) fn prepare_pod(old: Option<&Value>, object: &mut Value, causes: &mut Causes) {
    let spec = map_at(object, "spec").expect("a map");
    default_pod_spec(spec, Some("Always"));
    validate_pod_spec(
        &object["spec"],
        "spec",
        &["Always", "OnFailure", "Never"],
        causes,
    );
    if let Some(old) = old {
        // Only images (and a few scheduling fields) of a pod may change.
        let strip = |spec: &Value| {
            let mut s = spec.clone();
            for list in ["containers", "initContainers"] {
                for c in s[list].as_array_mut().into_iter().flatten() {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
            if let Some(s) = s.as_object_mut() {
                s.remove("activeDeadlineSeconds");
                s.remove("tolerations");
            }
            s
        };
        if strip(&old["spec"]) != strip(&object["spec"]) {
            causes.push((
                "spec".into(),
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, \
                 `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations`"
                    .into(),
            ));
        }
    }
}

/// The pod spec defaults of the fields most often read back.
pub(super) fn default_pod_spec(spec: &mut Value, restart_policy: Option<&str>) {
    if let Some(policy) = restart_policy {
        set_default(spec, "restartPolicy", json!(policy));
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if !c.is_object() {
                continue;
            }
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            let image = c["image"].as_str().unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or("");
            let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "resources", json!({}));
            for p in c["ports"].as_array_mut().into_iter().flatten() {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// Containers (named, unique, with an image, valid ports and resources) and the restart
/// policy.
pub(super) fn validate_pod_spec(
    spec: &Value,
    at: &str,
    restart_policies: &[&str],
    causes: &mut Causes,
) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push((format!("{at}.containers"), "Required value".into()));
    }
    let init = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for (list, items) in [("initContainers", &init), ("containers", &containers)] {
        for (i, c) in items.iter().enumerate() {
            let here = format!("{at}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => causes.push((format!("{here}.name"), "Required value".into())),
                Some(n) if !is_dns_label(n) => causes.push((
                    format!("{here}.name"),
                    format!("Invalid value: \"{n}\": {LABEL_MESSAGE}"),
                )),
                Some(n) if !names.insert(n.to_string()) => {
                    causes.push((format!("{here}.name"), format!("Duplicate value: \"{n}\"")))
                }
                Some(_) => {}
            }
            if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
                causes.push((format!("{here}.image"), "Required value".into()));
            }
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                match p["containerPort"].as_i64() {
                    None => causes.push((
                        format!("{here}.ports[{j}].containerPort"),
                        "Required value".into(),
                    )),
                    Some(n) if !(1..=65535).contains(&n) => causes.push((
                        format!("{here}.ports[{j}].containerPort"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    )),
                    Some(_) => {}
                }
            }
            validate_resources(&c["resources"], &format!("{here}.resources"), causes);
        }
    }
    let supported = restart_policies
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match spec["restartPolicy"].as_str() {
        None => causes.push((
            format!("{at}.restartPolicy"),
            format!("Required value: valid values: {supported}"),
        )),
        Some(p) if !restart_policies.contains(&p) => causes.push((
            format!("{at}.restartPolicy"),
            format!("Unsupported value: \"{p}\": supported values: {supported}"),
        )),
        Some(_) => {}
    }
}

/// Quantities parse; a request is at most its limit; extended resources (such as
/// `nvidia.com/gpu`) are whole numbers, and a request of one needs an equal limit.
fn validate_resources(resources: &Value, at: &str, causes: &mut Causes) {
    let mut parsed: BTreeMap<(&str, String), f64> = BTreeMap::new();
    for part in ["limits", "requests"] {
        for (name, q) in resources[part].as_object().into_iter().flatten() {
            let text = match q {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            let here = format!("{at}.{part}[{name}]");
            let Some(value) = parse_quantity(&text) else {
                causes.push((here, format!("Invalid value: \"{text}\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")));
                continue;
            };
            if value < 0.0 {
                causes.push((
                    here.clone(),
                    format!("Invalid value: \"{text}\": must be greater than or equal to 0"),
                ));
            }
            let extended = name.contains('/') && !name.contains("kubernetes.io/");
            if extended && value.fract() != 0.0 {
                causes.push((
                    here.clone(),
                    format!("Invalid value: \"{text}\": must be an integer"),
                ));
            }
            parsed.insert((part, name.clone()), value);
        }
    }
    for ((_, name), request) in parsed.iter().filter(|((p, _), _)| *p == "requests") {
        let limit = parsed.get(&("limits", name.clone())).copied();
        let extended = name.contains('/') && !name.contains("kubernetes.io/");
        let here = format!("{at}.requests[{name}]");
        let shown = resources["requests"][name]
            .to_string()
            .trim_matches('"')
            .to_string();
        match limit {
            _ if extended && limit != Some(*request) => causes.push((
                here,
                format!(
                    "Invalid value: \"{shown}\": must be equal to {name} limit of {}",
                    limit.unwrap_or(0.0)
                ),
            )),
            Some(l) if *request > l => causes.push((
                here,
                format!(
                    "Invalid value: \"{shown}\": must be less than or equal to {name} limit of {}",
                    resources["limits"][name].to_string().trim_matches('"')
                ),
            )),
            _ => {}
        }
    }
}

/// A Kubernetes quantity (`500m`, `2Gi`, `1e3`, `1.5`) as a number, if it is one.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number[1..].contains(['+', '-']) {
        return None;
    }
    let base: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(base * factor)
}

//! The real server's rules that no schema states: Kubernetes' Go validation
//! (`pkg/apis/core/validation`, `pkg/apis/batch/validation`) and the Gateway API CRD's
//! CEL rules (`x-kubernetes-validations`, which the vendored schema keeps but no JSON
//! Schema validator evaluates), limited to what a client's objects most often get
//! wrong, with the real messages:
//!
//! - pod specs (Pods, and the templates of Deployments and Jobs): a volume mount naming
//!   no volume (`...volumeMounts[0].name: Not found: "model"`), volumes without a name,
//!   with a duplicate one or with no or several sources, mount paths used twice in a
//!   container, environment variables without a name, `hostname` and `subdomain` that are not DNS-1123 labels, port names
//!   that are not IANA service names;
//! - Jobs: `completionMode` (`Indexed` needs `completions`), `backoffLimitPerIndex` and
//!   `maxFailedIndexes` (indexed only), `podFailurePolicy` (restart policy `Never`,
//!   actions, `onExitCodes` naming a container of the template, operators and values);
//! - Services: port names;
//! - HTTPRoutes: a Service backend (`group` "" and `kind` "Service", the CRD's defaults)
//!   without a `port` ("Must have port for Service reference"), in `backendRefs` and in
//!   `requestMirror`; a filter whose `type` and field disagree; a mirror with both
//!   `percent` and `fraction`, or a fraction above one.

use std::collections::BTreeSet;

use serde_json::Value;

use super::meta::{is_dns_label, LABEL_MESSAGE};
use super::resources::ResourceType;
use super::workloads::Causes;

/// Every rule for the object's kind, on the object as it would be stored (defaults
/// filled).
pub(super) fn check(resource: &ResourceType, object: &Value) -> Causes {
    let mut causes = Causes::new();
    let spec = &object["spec"];
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("apps", "Deployment") => {
            pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes)
        }
        ("batch", "Job") => {
            pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes);
            job(spec, &mut causes);
        }
        ("", "Pod") => pod_spec(spec, "spec", &mut causes),
        ("", "Service") => service(spec, &mut causes),
        ("gateway.networking.k8s.io", "HTTPRoute") => http_route(spec, &mut causes),
        _ => {}
    }
    causes
}

/// The volume sources a `volumes[]` entry may name (exactly one of them).
const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn pod_spec(spec: &Value, at: &str, causes: &mut Causes) {
    let mut volumes = BTreeSet::new();
    for (i, volume) in items(&spec["volumes"]).iter().enumerate() {
        let here = format!("{at}.volumes[{i}]");
        match volume["name"].as_str() {
            None | Some("") => causes.push((format!("{here}.name"), "Required value".into())),
            Some(n) if !is_dns_label(n) => causes.push((
                format!("{here}.name"),
                format!("Invalid value: \"{n}\": {LABEL_MESSAGE}"),
            )),
            Some(n) if !volumes.insert(n.to_string()) => {
                causes.push((format!("{here}.name"), format!("Duplicate value: \"{n}\"")))
            }
            Some(_) => {}
        }
        let sources: Vec<&str> = VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|s| !volume[*s].is_null())
            .collect();
        match sources.as_slice() {
            [] => causes.push((here, "Required value: must specify a volume type".into())),
            [_] => {}
            [_, second, ..] => causes.push((
                format!("{here}.{second}"),
                "Forbidden: may not specify more than 1 volume type".into(),
            )),
        }
    }
    for list in ["initContainers", "containers"] {
        for (i, container) in items(&spec[list]).iter().enumerate() {
            let here = format!("{at}.{list}[{i}]");
            let mut paths = BTreeSet::new();
            for (j, mount) in items(&container["volumeMounts"]).iter().enumerate() {
                let name = mount["name"].as_str().unwrap_or("");
                if name.is_empty() {
                    causes.push((
                        format!("{here}.volumeMounts[{j}].name"),
                        "Required value".into(),
                    ));
                } else if !volumes.contains(name) {
                    causes.push((
                        format!("{here}.volumeMounts[{j}].name"),
                        format!("Not found: \"{name}\""),
                    ));
                }
                match mount["mountPath"].as_str() {
                    None | Some("") => causes.push((
                        format!("{here}.volumeMounts[{j}].mountPath"),
                        "Required value".into(),
                    )),
                    Some(p) if !paths.insert(p.to_string()) => causes.push((
                        format!("{here}.volumeMounts[{j}].mountPath"),
                        format!("Invalid value: \"{p}\": must be unique"),
                    )),
                    Some(_) => {}
                }
            }
            for (j, env) in items(&container["env"]).iter().enumerate() {
                if env["name"].as_str() == Some("") {
                    causes.push((format!("{here}.env[{j}].name"), "Required value".into()));
                }
            }
            for (j, port) in items(&container["ports"]).iter().enumerate() {
                if let Some(name) = port["name"].as_str() {
                    if let Some(why) = service_name_error(name) {
                        causes.push((
                            format!("{here}.ports[{j}].name"),
                            format!("Invalid value: \"{name}\": {why}"),
                        ));
                    }
                }
            }
        }
    }
    for field in ["hostname", "subdomain"] {
        if let Some(value) = spec[field].as_str() {
            if !is_dns_label(value) {
                let why = if value.len() > 63 {
                    "must be no more than 63 characters".to_string()
                } else {
                    LABEL_MESSAGE.to_string()
                };
                causes.push((
                    format!("{at}.{field}"),
                    format!("Invalid value: \"{value}\": {why}"),
                ));
            }
        }
    }
}

/// Why `name` is not an IANA service name (a named port), if it is not.
fn service_name_error(name: &str) -> Option<&'static str> {
    if name.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if name.contains("--") {
        return Some("must not contain consecutive hyphens");
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must not begin or end with a hyphen");
    }
    None
}

fn job(spec: &Value, causes: &mut Causes) {
    let indexed = match spec["completionMode"].as_str() {
        None | Some("NonIndexed") => false,
        Some("Indexed") => true,
        Some(other) => {
            causes.push((
                "spec.completionMode".into(),
                format!(
                    "Unsupported value: \"{other}\": supported values: \"NonIndexed\", \"Indexed\""
                ),
            ));
            false
        }
    };
    if indexed && spec["completions"].is_null() {
        causes.push((
            "spec.completions".into(),
            "Required value: when completion mode is Indexed".into(),
        ));
    }
    if !spec["backoffLimitPerIndex"].is_null() && !indexed {
        causes.push((
            "spec.backoffLimitPerIndex".into(),
            "Forbidden: requires indexed completion mode".into(),
        ));
    }
    if !spec["maxFailedIndexes"].is_null() && spec["backoffLimitPerIndex"].is_null() {
        causes.push((
            "spec.maxFailedIndexes".into(),
            "Forbidden: cannot set maxFailedIndexes when backoffLimitPerIndex is not set".into(),
        ));
    }
    let policy = &spec["podFailurePolicy"];
    if policy.is_null() {
        return;
    }
    let template = &spec["template"]["spec"];
    if let Some(restart) = template["restartPolicy"].as_str() {
        if restart != "Never" {
            causes.push((
                "spec.template.spec.restartPolicy".into(),
                format!(
                    "Invalid value: \"{restart}\": only \"Never\" is supported when podFailurePolicy is specified"
                ),
            ));
        }
    }
    let containers: BTreeSet<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| items(&template[*list]))
        .filter_map(|c| c["name"].as_str())
        .collect();
    for (i, rule) in items(&policy["rules"]).iter().enumerate() {
        let here = format!("spec.podFailurePolicy.rules[{i}]");
        match rule["action"].as_str() {
            Some("FailJob" | "Ignore" | "Count") => {}
            Some("FailIndex") if !spec["backoffLimitPerIndex"].is_null() => {}
            Some("FailIndex") => causes.push((
                format!("{here}.action"),
                "Forbidden: the action FailIndex requires backoffLimitPerIndex to be set".into(),
            )),
            Some(other) => causes.push((
                format!("{here}.action"),
                format!(
                    "Unsupported value: \"{other}\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\""
                ),
            )),
            None => causes.push((format!("{here}.action"), "Required value".into())),
        }
        let codes = &rule["onExitCodes"];
        let conditions = &rule["onPodConditions"];
        if codes.is_null() == conditions.is_null() {
            causes.push((
                here.clone(),
                "Invalid value: specifying one of OnExitCodes and OnPodConditions is required"
                    .into(),
            ));
        }
        if codes.is_null() {
            continue;
        }
        if let Some(name) = codes["containerName"].as_str() {
            if !containers.contains(name) {
                causes.push((
                    format!("{here}.onExitCodes.containerName"),
                    format!(
                        "Invalid value: \"{name}\": must be one of the container or initContainer names in the pod template"
                    ),
                ));
            }
        }
        let operator = codes["operator"].as_str().unwrap_or("");
        if !matches!(operator, "In" | "NotIn") {
            causes.push((
                format!("{here}.onExitCodes.operator"),
                format!("Unsupported value: \"{operator}\": supported values: \"In\", \"NotIn\""),
            ));
        }
        let values = items(&codes["values"]);
        if values.is_empty() {
            causes.push((
                format!("{here}.onExitCodes.values"),
                "Invalid value: \"array\": at least one value is required".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (j, v) in values.iter().enumerate() {
            let n = v.as_i64().unwrap_or_default();
            if operator == "In" && n == 0 {
                causes.push((
                    format!("{here}.onExitCodes.values[{j}]"),
                    "Invalid value: 0: must not be 0 for the In operator".into(),
                ));
            }
            if !seen.insert(n) {
                causes.push((
                    format!("{here}.onExitCodes.values[{j}]"),
                    format!("Duplicate value: {n}"),
                ));
            }
        }
    }
}

fn service(spec: &Value, causes: &mut Causes) {
    for (i, port) in items(&spec["ports"]).iter().enumerate() {
        if let Some(name) = port["name"].as_str().filter(|n| !n.is_empty()) {
            if !is_dns_label(name) {
                causes.push((
                    format!("spec.ports[{i}].name"),
                    format!("Invalid value: \"{name}\": {LABEL_MESSAGE}"),
                ));
            }
        }
        if let Some(target) = port["targetPort"].as_str() {
            if let Some(why) = service_name_error(target) {
                causes.push((
                    format!("spec.ports[{i}].targetPort"),
                    format!("Invalid value: \"{target}\": {why}"),
                ));
            }
        }
    }
}

/// The CRD's rule on `BackendRef` and on a mirror's `backendRef`: a Service (the
/// defaults: `group` "", `kind` "Service") needs a port.
fn backend_port(backend: &Value, at: String, causes: &mut Causes) {
    let group = backend["group"].as_str().unwrap_or("");
    let kind = backend["kind"].as_str().unwrap_or("Service");
    if group.is_empty() && kind == "Service" && backend["port"].is_null() {
        causes.push((
            at,
            "Invalid value: \"object\": Must have port for Service reference".into(),
        ));
    }
}

/// The filter type each filter field belongs to.
const FILTER_FIELDS: &[(&str, &str)] = &[
    ("RequestHeaderModifier", "requestHeaderModifier"),
    ("ResponseHeaderModifier", "responseHeaderModifier"),
    ("RequestMirror", "requestMirror"),
    ("RequestRedirect", "requestRedirect"),
    ("URLRewrite", "urlRewrite"),
    ("ExtensionRef", "extensionRef"),
];

fn filters(list: &Value, at: &str, causes: &mut Causes) {
    for (k, filter) in items(list).iter().enumerate() {
        let here = format!("{at}[{k}]");
        let kind = filter["type"].as_str().unwrap_or("");
        for (filter_type, field) in FILTER_FIELDS {
            let set = !filter[*field].is_null();
            if set && kind != *filter_type {
                causes.push((
                    here.clone(),
                    format!(
                        "Invalid value: \"object\": filter.{field} must be nil if the filter.type is not {filter_type}"
                    ),
                ));
            }
            if !set && kind == *filter_type {
                causes.push((
                    here.clone(),
                    format!(
                        "Invalid value: \"object\": filter.{field} must be specified for {filter_type} filter.type"
                    ),
                ));
            }
        }
        let mirror = &filter["requestMirror"];
        if mirror.is_null() {
            continue;
        }
        backend_port(
            &mirror["backendRef"],
            format!("{here}.requestMirror.backendRef"),
            causes,
        );
        if !mirror["percent"].is_null() && !mirror["fraction"].is_null() {
            causes.push((
                format!("{here}.requestMirror"),
                "Invalid value: \"object\": Only one of percent or fraction may be specified in HTTPRequestMirrorFilter".into(),
            ));
        }
        let fraction = &mirror["fraction"];
        if let Some(numerator) = fraction["numerator"].as_i64() {
            let denominator = fraction["denominator"].as_i64().unwrap_or(100);
            if numerator > denominator {
                causes.push((
                    format!("{here}.requestMirror.fraction"),
                    "Invalid value: \"object\": numerator must be less than or equal to denominator".into(),
                ));
            }
        }
    }
    for (filter_type, _) in FILTER_FIELDS
        .iter()
        .filter(|(t, _)| !matches!(*t, "RequestMirror" | "ExtensionRef"))
    {
        let count = items(list)
            .iter()
            .filter(|f| f["type"].as_str() == Some(filter_type))
            .count();
        if count > 1 {
            causes.push((
                at.to_string(),
                format!("Invalid value: \"array\": {filter_type} filter cannot be repeated"),
            ));
        }
    }
}

fn http_route(spec: &Value, causes: &mut Causes) {
    for (i, rule) in items(&spec["rules"]).iter().enumerate() {
        let here = format!("spec.rules[{i}]");
        for (j, backend) in items(&rule["backendRefs"]).iter().enumerate() {
            backend_port(backend, format!("{here}.backendRefs[{j}]"), causes);
            filters(
                &backend["filters"],
                &format!("{here}.backendRefs[{j}].filters"),
                causes,
            );
        }
        filters(&rule["filters"], &format!("{here}.filters"), causes);
    }
}

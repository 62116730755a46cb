//! Object metadata: names (DNS-1123 subdomains and labels, DNS-1035 labels) with the
//! real server's messages, qualified label and annotation keys, and label values.

use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::resources::{NameRule, ResourceType};

const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub(super) const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

const LABEL_1035_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

pub(super) const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_dns_1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Why `key` is not a valid label or annotation key (`[prefix/]name`), if it is not.
pub fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || !is_dns_subdomain(p) {
            return Some(format!("prefix part {SUBDOMAIN_MESSAGE}"));
        }
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_qualified_part(name) {
        return Some(QUALIFIED_NAME_MESSAGE.into());
    }
    None
}

/// Whether `value` is a valid label value (empty, or a qualified name part).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_qualified_part(value)
}

/// The object's name, labels and annotations are valid.
pub(super) fn validate_meta(resource: &ResourceType, name: &str, object: &Value) -> ApiResult<()> {
    let mut causes: Vec<(String, String)> = Vec::new();
    let (ok, message) = match resource.names {
        NameRule::Subdomain => (is_dns_subdomain(name), SUBDOMAIN_MESSAGE),
        NameRule::Label => (is_dns_label(name), LABEL_MESSAGE),
        NameRule::Label1035 => (is_dns_1035_label(name), LABEL_1035_MESSAGE),
    };
    if !ok {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {message}"),
        ));
    }
    let meta = &object["metadata"];
    if let Some(labels) = meta.get("labels").filter(|l| !l.is_null()) {
        match labels.as_object() {
            None => causes.push((
                "metadata.labels".into(),
                "Invalid value: must be a map of strings".into(),
            )),
            Some(map) => {
                for (k, v) in map {
                    if let Some(e) = qualified_name_error(k) {
                        causes.push((
                            "metadata.labels".into(),
                            format!("Invalid value: \"{k}\": {e}"),
                        ));
                    }
                    match v.as_str() {
                        Some(s) if is_label_value(s) => {}
                        Some(s) if s.len() > 63 => causes.push((
                            "metadata.labels".to_string(),
                            format!("Invalid value: \"{s}\": must be no more than 63 characters"),
                        )),
                        Some(s) => causes.push((
                            "metadata.labels".into(),
                            format!("Invalid value: \"{s}\": {LABEL_VALUE_MESSAGE}"),
                        )),
                        None => causes.push((
                            "metadata.labels".into(),
                            format!("Invalid value: {v}: must be a string"),
                        )),
                    }
                }
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").filter(|a| !a.is_null()) {
        match annotations.as_object() {
            None => causes.push((
                "metadata.annotations".into(),
                "Invalid value: must be a map of strings".into(),
            )),
            Some(map) => {
                let mut size = 0;
                for (k, v) in map {
                    if let Some(e) = qualified_name_error(k) {
                        causes.push((
                            "metadata.annotations".into(),
                            format!("Invalid value: \"{k}\": {e}"),
                        ));
                    }
                    match v.as_str() {
                        Some(s) => size += k.len() + s.len(),
                        None => causes.push((
                            "metadata.annotations".into(),
                            format!("Invalid value: {v}: must be a string"),
                        )),
                    }
                }
                if size > 256 * 1024 {
                    causes.push((
                        "metadata.annotations".into(),
                        "Too long: must have at most 262144 bytes".into(),
                    ));
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&resource.qualified_kind(), name, &causes))
    }
}

//! Resource kinds, addresses (`<workspace>/<kind>.<name>`) and references between
//! resources (`kind.name`, optionally pinned as `kind.name@version`).
//!
//! This module owns the textual forms only; whether a reference resolves is decided in
//! [`crate::desired`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The six kinds of resource a manifest can declare, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Workspace,
    Compute,
    Dataset,
    Job,
    Model,
    Endpoint,
}

impl Kind {
    /// All kinds, in apply order.
    pub const ALL: [Kind; 6] = [
        Kind::Workspace,
        Kind::Compute,
        Kind::Dataset,
        Kind::Job,
        Kind::Model,
        Kind::Endpoint,
    ];

    /// Returns the name used in TOML tables and references (`compute`, `dataset`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workspace => "workspace",
            Kind::Compute => "compute",
            Kind::Dataset => "dataset",
            Kind::Job => "job",
            Kind::Model => "model",
            Kind::Endpoint => "endpoint",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// The unique address of a resource: `<workspace>/<kind>.<name>`, or `<workspace>/workspace`
/// for the workspace itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub workspace: String,
    pub kind: Kind,
    pub name: String,
}

impl Address {
    pub fn new(workspace: impl Into<String>, kind: Kind, name: impl Into<String>) -> Self {
        Address {
            workspace: workspace.into(),
            kind,
            name: name.into(),
        }
    }

    /// Returns the address of a workspace resource.
    pub fn workspace(name: impl Into<String>) -> Self {
        let name = name.into();
        Address {
            workspace: name.clone(),
            kind: Kind::Workspace,
            name,
        }
    }

    /// Returns `kind.name`, the form used in references inside the workspace.
    pub fn local(&self) -> String {
        format!("{}.{}", self.kind, self.name)
    }

    /// Reads an address as [`Display`](fmt::Display) writes it: `ws/kind.name` or
    /// `ws/workspace`.
    pub fn parse(text: &str) -> Option<Address> {
        let (workspace, local) = text.split_once('/')?;
        if workspace.is_empty() {
            return None;
        }
        if local == "workspace" {
            return Some(Address::workspace(workspace));
        }
        let (kind, name) = local.split_once('.')?;
        let kind: Kind = kind.parse().ok()?;
        if kind == Kind::Workspace || name.is_empty() {
            return None;
        }
        Some(Address::new(workspace, kind, name))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Workspace => write!(f, "{}/workspace", self.workspace),
            kind => write!(f, "{}/{}.{}", self.workspace, kind, self.name),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A reference from one resource to another in the same workspace: `kind.name[@pin]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Reference {
    pub kind: Kind,
    pub name: String,
    /// A pinned version (`model.fraud@3f9a2c1`); `None` follows the newest version.
    pub pin: Option<String>,
}

/// Why a reference string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("a reference has the form `kind.name`, e.g. `dataset.transactions`")]
    Shape,
    #[error("`{0}` is not a kind of resource")]
    UnknownKind(String),
    #[error(
        "references stay inside their workspace; cross-workspace references are not supported"
    )]
    CrossWorkspace,
    #[error("the version after `@` is empty")]
    EmptyPin,
}

impl Reference {
    /// Reads `kind.name` or `kind.name@version`.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        if text.contains('/') {
            return Err(ReferenceError::CrossWorkspace);
        }
        let (body, pin) = match text.split_once('@') {
            Some((_, "")) => return Err(ReferenceError::EmptyPin),
            Some((body, pin)) => (body, Some(pin.to_string())),
            None => (text, None),
        };
        let (kind, name) = body.split_once('.').ok_or(ReferenceError::Shape)?;
        if name.is_empty() || kind.is_empty() {
            return Err(ReferenceError::Shape);
        }
        let kind = kind
            .parse::<Kind>()
            .map_err(|()| ReferenceError::UnknownKind(kind.to_string()))?;
        Ok(Reference {
            kind,
            name: name.to_string(),
            pin,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)?;
        if let Some(pin) = &self.pin {
            write!(f, "@{pin}")?;
        }
        Ok(())
    }
}

/// Returns whether `name` is a DNS-1123 label: at most 63 lowercase letters, digits and
/// `-`, starting and ending with a letter or digit. Names become Kubernetes object names.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Returns whether `name` is a DNS-1123 subdomain: at most 253 characters of
/// dot-separated DNS-1123 labels (a StorageClass's name, for one).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_pinned_references() {
        let r = Reference::parse("model.fraud@3f9a2c1").unwrap();
        assert_eq!(r.kind, Kind::Model);
        assert_eq!(r.name, "fraud");
        assert_eq!(r.pin.as_deref(), Some("3f9a2c1"));
        assert_eq!(r.to_string(), "model.fraud@3f9a2c1");
        let r = Reference::parse("dataset.loans").unwrap();
        assert_eq!((r.kind, r.pin), (Kind::Dataset, None));
    }

    #[test]
    fn rejects_malformed_references() {
        assert_eq!(Reference::parse("loans"), Err(ReferenceError::Shape));
        assert_eq!(
            Reference::parse("datset.loans"),
            Err(ReferenceError::UnknownKind("datset".into()))
        );
        assert_eq!(Reference::parse("model.x@"), Err(ReferenceError::EmptyPin));
        assert_eq!(
            Reference::parse("other/model.x"),
            Err(ReferenceError::CrossWorkspace)
        );
    }

    #[test]
    fn formats_addresses() {
        assert_eq!(
            Address::new("fraud", Kind::Endpoint, "scoring").to_string(),
            "fraud/endpoint.scoring"
        );
        assert_eq!(Address::workspace("fraud").to_string(), "fraud/workspace");
    }

    #[test]
    fn checks_dns1123_labels() {
        assert!(is_dns1123_label("gpu-east"));
        assert!(is_dns1123_label("a1"));
        assert!(!is_dns1123_label("GPU"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a_b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }
}

//! What the policies said about a plan, as the plan records it ([`crate::policy`]
//! evaluates them).

use serde::{Deserialize, Serialize};

/// What the policies said about one plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// The policy files evaluated, as paths (`policies/endpoints.rego` for shipped ones,
    /// the repository-relative path for the repository's own).
    pub policies: Vec<String>,
    /// Messages that block apply and fail the PR check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<PolicyMessage>,
    /// Messages shown, not blocking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warn: Vec<PolicyMessage>,
}

impl PolicyReport {
    /// True when some policy denies the plan.
    pub fn denied(&self) -> bool {
        !self.deny.is_empty()
    }
}

/// One `deny` or `warn` message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyMessage {
    /// The policy file whose rule produced it.
    pub policy: String,
    /// The message as the rule wrote it.
    pub message: String,
    /// The resource it is about (`credit-risk/endpoint.risk-api`), when the rule says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The manifest file (`credit-risk/serve.toml`) declaring that resource, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

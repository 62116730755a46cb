//! Reading a request: its path as a [`Target`] (a discovery document, a collection, an
//! object or a subresource) and its query parameters, refusing those it does not know.

use std::collections::BTreeMap;

use super::error::{ApiError, ApiResult};
use super::schema::FieldValidation;
use super::state::State;

/// What a path names.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// A discovery document.
    Discovery(Discovery),
    /// A kind's objects: in one namespace, or all (`namespace: None`).
    Collection {
        res: usize,
        namespace: Option<String>,
    },
    /// One object, or its `status` subresource.
    Object {
        res: usize,
        namespace: Option<String>,
        name: String,
        status: bool,
    },
}

#[derive(Debug, Clone)]
pub(super) enum Discovery {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    Resources(String, String),
}

impl Target {
    pub(super) fn res(&self) -> Option<usize> {
        match self {
            Target::Discovery(_) => None,
            Target::Collection { res, .. } | Target::Object { res, .. } => Some(*res),
        }
    }
}

pub(super) fn parse_path(state: &State, path: &str) -> ApiResult<Target> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Target::Discovery(Discovery::Version)),
        ["healthz" | "livez" | "readyz"] => return Ok(Target::Discovery(Discovery::Health)),
        ["api"] => return Ok(Target::Discovery(Discovery::CoreVersions)),
        ["apis"] => return Ok(Target::Discovery(Discovery::Groups)),
        ["apis", group] => {
            return if state.resources.iter().any(|r| r.group == *group) {
                Ok(Target::Discovery(Discovery::Group(group.to_string())))
            } else {
                Err(ApiError::no_resource())
            }
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_resource()),
    };
    if !state.serves_group_version(group, version) {
        return Err(ApiError::no_resource());
    }
    let find = |plural: &str| {
        state
            .find_plural(group, version, plural)
            .ok_or_else(ApiError::no_resource)
    };
    let namespaced = |res: usize| state.resources[res].namespaced;
    let object = |res: usize, ns: Option<&str>, name: &str, sub: Option<&str>| {
        if namespaced(res) != ns.is_some() {
            return Err(ApiError::no_resource());
        }
        let status = match sub {
            None => false,
            Some("status") if state.resources[res].status => true,
            Some(_) => return Err(ApiError::no_resource()),
        };
        Ok(Target::Object {
            res,
            namespace: ns.map(str::to_string),
            name: name.to_string(),
            status,
        })
    };
    let is_sub = |s: &str| matches!(s, "status" | "finalize");
    match rest {
        [] => Ok(Target::Discovery(Discovery::Resources(
            group.to_string(),
            version.to_string(),
        ))),
        // `/api/v1/namespaces/<name>/status` is the namespace's subresource.
        ["namespaces", ns, plural] if !(group.is_empty() && is_sub(plural)) => {
            let res = find(plural)?;
            if !namespaced(res) {
                return Err(ApiError::no_resource());
            }
            Ok(Target::Collection {
                res,
                namespace: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name] => object(find(plural)?, Some(ns), name, None),
        ["namespaces", ns, plural, name, sub] => object(find(plural)?, Some(ns), name, Some(sub)),
        [plural] => Ok(Target::Collection {
            res: find(plural)?,
            namespace: None,
        }),
        [plural, name] => object(find(plural)?, None, name, None),
        [plural, name, sub] => object(find(plural)?, None, name, Some(sub)),
        _ => Err(ApiError::no_resource()),
    }
}

/// The query parameters, each at most once.
pub(super) struct Query(pub(super) BTreeMap<String, String>);

impl Query {
    pub(super) fn parse(uri: &axum::http::Uri) -> ApiResult<Query> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?
            .0;
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::bad_request(format!(
                    "the query parameter \"{k}\" was given more than once"
                )));
            }
        }
        Ok(Query(map))
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Refuses parameters outside `allowed` (see the module's doc).
    pub(super) fn only(&self, verb: &str, allowed: &[&str]) -> ApiResult<()> {
        for key in self.0.keys() {
            if !allowed.contains(&key.as_str()) && key != "pretty" {
                return Err(ApiError::bad_request(format!(
                    "the test API server does not support the query parameter \"{key}\" on {verb}"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value for {key}: \"{other}\", expected true or false"
            ))),
        }
    }

    pub(super) fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ))),
        }
    }

    /// `fieldValidation`, `Warn` when absent as on the real server.
    pub(super) fn field_validation(&self) -> ApiResult<FieldValidation> {
        FieldValidation::parse(self.get("fieldValidation"))
    }
}

pub(super) const LIST_PARAMS: &[&str] = &[
    "labelSelector",
    "fieldSelector",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
];

pub(super) const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];

pub(super) const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];

pub(super) const DELETE_PARAMS: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "propagationPolicy",
    "orphanDependents",
];

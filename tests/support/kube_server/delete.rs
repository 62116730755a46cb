//! Deletes: their options (propagation policy, preconditions, dry run), finalizers, and
//! the cascade to dependents by owner reference.

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::path::Query;
use super::state::{now, Key, Shared, State};

impl Shared {
    /// Deletes an object, or marks it for deletion while finalizers hold it. Returns its
    /// last state and whether it is gone.
    pub(super) fn delete(&self, key: &Key, options: &DeleteOptions) -> ApiResult<(Value, bool)> {
        let mut state = self.lock();
        let resource = state.resources[key.res].clone();
        let object = state
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&resource, &key.name))?;
        if let Some(uid) = &options.uid {
            if object["metadata"]["uid"].as_str() != Some(uid) {
                return Err(ApiError::conflict(
                    &resource,
                    &key.name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object["metadata"]["uid"].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(rv) = &options.resource_version {
            if object["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(ApiError::conflict(
                    &resource,
                    &key.name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        object["metadata"]["resourceVersion"].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        if options.dry_run {
            return Ok((object, true));
        }
        let orphan = match options.propagation.as_deref() {
            Some("Orphan") => true,
            Some(_) => false,
            None => resource.orphan_by_default,
        };
        let result = delete_now(&mut state, key, orphan);
        self.changed.send_replace(state.rv);
        Ok(result)
    }
}

/// Deletes (or, with finalizers, marks) an object and handles its dependents: orphaned
/// (their owner reference removed) or deleted in turn.
fn delete_now(state: &mut State, key: &Key, orphan: bool) -> (Value, bool) {
    let object = state
        .objects
        .get(key)
        .cloned()
        .expect("an object to delete");
    let finalizers = object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if finalizers {
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return (object, false);
        }
        let mut marked = object;
        marked["metadata"]["deletionTimestamp"] = json!(now());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return (state.commit(key, Some(marked)), false);
    }
    let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let is_namespace = {
        let r = &state.resources[key.res];
        r.group.is_empty() && r.kind == "Namespace"
    };
    let contents: Vec<Key> = state
        .objects
        .keys()
        .filter(|k| is_namespace && !k.namespace.is_empty() && k.namespace == key.name)
        .cloned()
        .collect();
    for k in contents {
        if state.objects.contains_key(&k) {
            delete_now(state, &k, false);
        }
    }
    let gone = state.commit(key, None);
    let dependents: Vec<Key> = state
        .objects
        .iter()
        .filter(|(_, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid.as_str())))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in dependents {
        if orphan {
            let mut o = state.objects[&k].clone();
            if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                if refs.is_empty() {
                    o["metadata"]
                        .as_object_mut()
                        .expect("metadata")
                        .remove("ownerReferences");
                }
            }
            state.commit(&k, Some(o));
        } else if state.objects.contains_key(&k) {
            delete_now(state, &k, false);
        }
    }
    (gone, true)
}

pub(super) struct DeleteOptions {
    pub(super) propagation: Option<String>,
    pub(super) uid: Option<String>,
    pub(super) resource_version: Option<String>,
    pub(super) dry_run: bool,
}

impl DeleteOptions {
    pub(super) fn parse(query: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut options = DeleteOptions {
            propagation: query.get("propagationPolicy").map(str::to_string),
            uid: None,
            resource_version: None,
            dry_run: query.dry_run()?,
        };
        if query.flag("orphanDependents")? {
            options.propagation = Some("Orphan".into());
        }
        if !body.is_empty() {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("DeleteOptions: {e}")))?;
            let map = v
                .as_object()
                .ok_or_else(|| ApiError::bad_request("DeleteOptions must be an object"))?;
            for (k, value) in map {
                match k.as_str() {
                    "kind" | "apiVersion" | "gracePeriodSeconds" => {}
                    "propagationPolicy" => options.propagation = value.as_str().map(str::to_string),
                    "orphanDependents" => {
                        if value.as_bool() == Some(true) {
                            options.propagation = Some("Orphan".into());
                        }
                    }
                    "dryRun" => {
                        let all = value
                            .as_array()
                            .is_some_and(|a| a.iter().all(|x| x == "All"));
                        if !all {
                            return Err(ApiError::bad_request(
                                "dryRun: Unsupported value: supported values: \"All\"",
                            ));
                        }
                        options.dry_run = !value.as_array().is_some_and(|a| a.is_empty());
                    }
                    "preconditions" => {
                        options.uid = value["uid"].as_str().map(str::to_string);
                        options.resource_version =
                            value["resourceVersion"].as_str().map(str::to_string);
                    }
                    other => {
                        return Err(ApiError::bad_request(format!(
                        "the test API server does not support the DeleteOptions field \"{other}\""
                    )))
                    }
                }
            }
        }
        match options.propagation.as_deref() {
            None | Some("Orphan" | "Background" | "Foreground") => Ok(options),
            Some(other) => Err(ApiError::invalid(
                "DeleteOptions.meta.k8s.io",
                "",
                &[(
                    "propagationPolicy".into(),
                    format!("Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                )],
            )),
        }
    }
}

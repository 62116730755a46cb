//! Writes besides apply and delete: create, replace and merge patch (of objects and of
//! `status`), the metadata the server owns, what a write may not change, cluster IPs,
//! and JSON merge patch.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::apply::{
    all_tracked_leaves, read_managed, related, tracked_leaves, upsert_entry, value_at,
    write_managed, FieldPath, ManagedEntry,
};
use super::error::{ApiError, ApiResult};
use super::meta::validate_meta;
use super::path::Target;
use super::resources::ResourceType;
use super::schema::{decode, prepare_checked, FieldValidation, Warnings};
use super::state::{now, Key, Shared, State};
use super::workloads::set_default;

/// Who writes, whether for real, what it asks of unknown fields, and the warnings its
/// request collects.
pub(super) struct Writer {
    pub(super) manager: String,
    pub(super) dry_run: bool,
    pub(super) validation: FieldValidation,
    pub(super) warnings: Warnings,
}

impl Writer {
    /// The test controls' writer: strict, so that a test's own objects are valid too.
    pub(super) fn test(manager: &str) -> Writer {
        Writer::new(manager, false, FieldValidation::Strict)
    }

    pub(super) fn new(manager: &str, dry_run: bool, validation: FieldValidation) -> Writer {
        Writer {
            manager: manager.to_string(),
            dry_run,
            validation,
            warnings: Warnings::default(),
        }
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Everything but `status` (for kinds with a status subresource).
    Main,
    /// `status` only.
    Status,
}

/// Metadata the server owns: never taken from a client's body, never in managed fields.
pub(super) const SYSTEM_METADATA: [&str; 11] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

impl Shared {
    pub(super) fn create(
        &self,
        res: usize,
        namespace: Option<&str>,
        mut object: Value,
        writer: &Writer,
    ) -> ApiResult<Value> {
        let mut state = self.lock();
        let resource = state.resources[res].clone();
        check_type(&resource, &object)?;
        decode(&resource, &mut object, writer.validation, &writer.warnings)?;
        let meta = object["metadata"].clone();
        let object_meta = meta.clone();
        if !meta.is_object() && !meta.is_null() {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let namespace = if resource.namespaced {
            let given = meta["namespace"].as_str();
            match (namespace, given) {
                (Some(url), Some(body)) if !body.is_empty() && url != body => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                (Some(url), _) => Some(url.to_string()),
                (None, Some(body)) if !body.is_empty() => Some(body.to_string()),
                (None, _) => {
                    return Err(ApiError::invalid(
                        &resource.qualified_kind(),
                        meta["name"].as_str().unwrap_or(""),
                        &[("metadata.namespace".into(), "Required value".into())],
                    ))
                }
            }
        } else {
            None
        };
        if meta["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::new(
                500,
                "InternalError",
                "Internal error occurred: resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
                format!("{prefix}{suffix}")
            }
            _ => {
                return Err(ApiError::invalid(
                    &resource.qualified_kind(),
                    "",
                    &[(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ))
            }
        };
        validate_meta(&resource, &name, &object)?;
        if let Some(ns) = &namespace {
            if !state.namespace_exists(ns) {
                return Err(ApiError::namespace_not_found(ns));
            }
        }
        let key = Key::new(res, namespace.as_deref(), &name);
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&resource, &name));
        }
        let time = now();
        {
            let meta = object["metadata"]
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut meta: Map<String, Value> = meta
                .into_iter()
                .filter(|(k, _)| !SYSTEM_METADATA.contains(&k.as_str()))
                .collect();
            meta.insert("name".into(), json!(name));
            if let Some(ns) = &namespace {
                meta.insert("namespace".into(), json!(ns));
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(time));
            meta.insert("generation".into(), json!(1));
            if let Some(prefix) = meta_given_prefix(&object_meta) {
                meta.insert("generateName".into(), json!(prefix));
            }
            object["metadata"] = Value::Object(meta);
        }
        let map = object.as_object_mut().expect("an object");
        if resource.status {
            map.remove("status");
        }
        if resource.group.is_empty() && resource.kind == "Namespace" {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            object["status"] = json!({"phase": "Active"});
        }
        prepare_checked(&resource, None, &mut object, Scope::Main)
            .map_err(|causes| ApiError::invalid(&resource.qualified_kind(), &name, &causes))?;
        if resource.group.is_empty() && resource.kind == "Service" {
            allocate_cluster_ip(&mut state, &mut object);
        }
        let fields = tracked_leaves(&object, &resource, Scope::Main);
        let entries = vec![ManagedEntry {
            manager: writer.manager.clone(),
            operation: "Update".into(),
            api_version: resource.api_version(),
            time,
            subresource: None,
            fields,
        }];
        write_managed(&mut object, &entries);
        if writer.dry_run {
            return Ok(object);
        }
        let stored = state.commit(&key, Some(object));
        self.changed.send_replace(state.rv);
        Ok(stored)
    }

    /// PUT: the whole object (or, on `/status`, its status) from the body, if its
    /// `resourceVersion` is the stored one.
    pub(super) fn replace(
        &self,
        target: &Target,
        body: Value,
        writer: &Writer,
    ) -> ApiResult<Value> {
        let Target::Object {
            res,
            namespace,
            name,
            ..
        } = target
        else {
            unreachable!("an object")
        };
        let resource = self.lock().resources[*res].clone();
        check_type(&resource, &body)?;
        check_name(name, namespace.as_deref(), &body)?;
        let given = body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if given.is_empty() {
            return Err(ApiError::invalid(
                &resource.qualified_kind(),
                name,
                &[(
                    "metadata.resourceVersion".into(),
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        self.update_with(target, writer, |old| {
            if old["metadata"]["resourceVersion"].as_str() != Some(given.as_str()) {
                return Err(ApiError::stale(&resource, name));
            }
            Ok(body.clone())
        })
    }

    /// An update (operation `Update`): `change` makes the new object from the stored one;
    /// the server then keeps what the client may not change.
    pub(super) fn update_with(
        &self,
        target: &Target,
        writer: &Writer,
        change: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let Target::Object {
            res,
            namespace,
            name,
            status,
        } = target
        else {
            unreachable!("an object")
        };
        let mut state = self.lock();
        let resource = state.resources[*res].clone();
        let key = Key::new(*res, namespace.as_deref(), name);
        let old = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&resource, name))?;
        let mut new = change(&old)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        check_type(&resource, &new)?;
        check_name(name, namespace.as_deref(), &new)?;
        decode(&resource, &mut new, writer.validation, &writer.warnings)?;
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
            if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::stale(&resource, name));
            }
        }
        let scope = if *status { Scope::Status } else { Scope::Main };
        new = keep_unwritable(&resource, &old, new, scope);
        validate_meta(&resource, name, &new)?;
        if resource.group.is_empty() && resource.kind == "Service" && new["spec"].is_object() {
            // What the server allocated stays when a client leaves it out.
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if new["spec"][field].is_null() && !old["spec"][field].is_null() {
                    new["spec"][field] = old["spec"][field].clone();
                }
            }
        }
        prepare_checked(&resource, Some(&old), &mut new, scope)
            .map_err(|causes| ApiError::invalid(&resource.qualified_kind(), name, &causes))?;
        // The writer owns every field it changed; nobody else does any more.
        let mut entries = read_managed(&old);
        let changed: BTreeSet<FieldPath> = tracked_leaves(&new, &resource, scope)
            .into_iter()
            .filter(|p| value_at(&old, p) != value_at(&new, p))
            .collect();
        let sub = status.then(|| "status".to_string());
        for e in entries.iter_mut() {
            e.fields.retain(|p| !changed.iter().any(|c| related(c, p)));
        }
        if !changed.is_empty() {
            upsert_entry(
                &mut entries,
                &writer.manager,
                "Update",
                &resource,
                sub,
                changed,
            );
        }
        self.finish_write(&mut state, &resource, &key, &old, new, entries, writer)
    }

    /// The common end of every update: prune managed fields to what exists, bump the
    /// generation on a spec change, skip a write that changes nothing, finish a deletion
    /// whose finalizers are gone.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_write(
        &self,
        state: &mut State,
        resource: &ResourceType,
        key: &Key,
        old: &Value,
        mut new: Value,
        mut entries: Vec<ManagedEntry>,
        writer: &Writer,
    ) -> ApiResult<Value> {
        let exists = all_tracked_leaves(&new, resource);
        let old_entries = read_managed(old);
        for e in entries.iter_mut() {
            e.fields.retain(|p| exists.contains(p));
            let unchanged = old_entries.iter().any(|o| {
                o.manager == e.manager
                    && o.operation == e.operation
                    && o.subresource == e.subresource
                    && o.fields == e.fields
            });
            if !unchanged {
                e.time = now();
            }
        }
        entries.retain(|e| !e.fields.is_empty());
        write_managed(&mut new, &entries);
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(if spec_of(old) != spec_of(&new) {
            generation + 1
        } else {
            generation
        });
        if new == *old {
            return Ok(old.clone());
        }
        if writer.dry_run {
            return Ok(new);
        }
        let finalized = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        let stored = state.commit(key, Some(new));
        if finalized {
            let gone = state.commit(key, None);
            self.changed.send_replace(state.rv);
            return Ok(gone);
        }
        self.changed.send_replace(state.rv);
        Ok(stored)
    }
}

/// The body's `apiVersion` and `kind` are there and are the URL's.
pub(super) fn check_type(resource: &ResourceType, object: &Value) -> ApiResult<()> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    let kind = object["kind"].as_str().unwrap_or("");
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{object}'"
        )));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{object}'"
        )));
    }
    if api_version != resource.api_version() || kind != resource.kind {
        return Err(ApiError::bad_request(format!(
            "the object's {api_version}, Kind={kind} is not the {}, Kind={} this URL serves",
            resource.api_version(),
            resource.kind
        )));
    }
    Ok(())
}

/// The body names the URL's object (or no name, or no namespace).
pub(super) fn check_name(name: &str, namespace: Option<&str>, object: &Value) -> ApiResult<()> {
    if let Some(given) = object["metadata"]["name"].as_str() {
        if given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
    }
    if let (Some(given), Some(url)) = (object["metadata"]["namespace"].as_str(), namespace) {
        if !given.is_empty() && given != url {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

/// The new object with what this write may not change taken from the old one: system
/// metadata always; `status` on the main resource, everything else on `/status`.
pub(super) fn keep_unwritable(
    resource: &ResourceType,
    old: &Value,
    new: Value,
    scope: Scope,
) -> Value {
    let mut new = match scope {
        Scope::Status => {
            let mut kept = old.clone();
            match new.get("status") {
                Some(s) if !s.is_null() => kept["status"] = s.clone(),
                _ => {
                    kept.as_object_mut().expect("an object").remove("status");
                }
            }
            kept
        }
        Scope::Main => {
            let mut new = new;
            if resource.status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().expect("an object").remove("status");
                    }
                }
            }
            new
        }
    };
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for field in SYSTEM_METADATA {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                new["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove(field);
            }
        }
    }
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    new
}

fn meta_given_prefix(meta: &Value) -> Option<&str> {
    meta["generateName"].as_str().filter(|p| !p.is_empty())
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_of(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(map) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(k);
        }
    }
    v
}

fn allocate_cluster_ip(state: &mut State, object: &mut Value) {
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    if spec["type"].as_str() == Some("ExternalName") {
        return;
    }
    if spec["clusterIP"].is_null() {
        let n = state.next_ip;
        state.next_ip += 1;
        let ip = format!("10.96.{}.{}", n / 250, n % 250 + 1);
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    if spec["clusterIP"].as_str() != Some("None") {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch.as_object() {
        Some(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        None => *target = patch.clone(),
    }
}

//! Server-side apply and managed fields: `FieldsV1` per manager, operation and
//! subresource, at leaf granularity for maps (lists are atomic); conflicts with other
//! managers (unless forced); fields an applier stops applying; updates taking over the
//! fields they change.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::error::{object_details, ApiError, ApiResult};
use super::meta::validate_meta;
use super::path::Target;
use super::resources::ResourceType;
use super::schema::{check_apply, prepare_checked};
use super::state::{now, Key, Shared};
use super::writes::{check_name, check_type, keep_unwritable, Scope, Writer, SYSTEM_METADATA};

impl Shared {
    /// Server-side apply. Returns the object and whether it was created.
    pub(super) fn apply(
        &self,
        target: &Target,
        config: Value,
        force: bool,
        writer: &Writer,
    ) -> ApiResult<(Value, bool)> {
        let Target::Object {
            res,
            namespace,
            name,
            status,
        } = target
        else {
            unreachable!("an object")
        };
        let resource = self.lock().resources[*res].clone();
        if !config.is_object() {
            return Err(ApiError::bad_request("an apply patch must be an object"));
        }
        check_type(&resource, &config)?;
        if config["metadata"]["name"].as_str().unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "metadata.name: Required value: name is required in an apply patch",
            ));
        }
        check_name(name, namespace.as_deref(), &config)?;
        if config["metadata"]
            .get("managedFields")
            .is_some_and(|m| !m.is_null() && m != &json!([]))
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let config = strip_nulls(&config);
        check_apply(&resource, namespace.as_deref(), name, &config)?;
        let key = Key::new(*res, namespace.as_deref(), name);
        let exists = self.lock().objects.contains_key(&key);
        if !exists {
            if *status {
                return Err(ApiError::not_found(&resource, name));
            }
            // Create, then own exactly what was applied.
            let mut created = self.create(
                *res,
                namespace.as_deref(),
                config.clone(),
                &Writer::new(&writer.manager, true, writer.validation),
            )?;
            let fields = tracked_leaves(&config, &resource, Scope::Main);
            let entry = ManagedEntry {
                manager: writer.manager.clone(),
                operation: "Apply".into(),
                api_version: resource.api_version(),
                time: now(),
                subresource: None,
                fields,
            };
            write_managed(&mut created, &[entry]);
            if writer.dry_run {
                return Ok((created, true));
            }
            let mut state = self.lock();
            if state.objects.contains_key(&key) {
                return Err(ApiError::already_exists(&resource, name));
            }
            let stored = state.commit(&key, Some(created));
            self.changed.send_replace(state.rv);
            return Ok((stored, true));
        }
        let mut state = self.lock();
        let old = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&resource, name))?;
        if let Some(rv) = config["metadata"]["resourceVersion"].as_str() {
            if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::stale(&resource, name));
            }
        }
        let scope = if *status { Scope::Status } else { Scope::Main };
        let sub = status.then(|| "status".to_string());
        let applied = tracked_leaves(&config, &resource, scope);
        let mut entries = read_managed(&old);
        let mine = |e: &ManagedEntry| {
            e.manager == writer.manager && e.operation == "Apply" && e.subresource == sub
        };

        // Conflicts: fields others own, whose value this apply would change.
        let mut conflicts: Vec<(String, String, FieldPath)> = Vec::new();
        for e in entries.iter().filter(|e| !mine(e)) {
            for p in &e.fields {
                for q in &applied {
                    if conflicts_with(&old, &config, p, q) {
                        let who = if e.operation == "Apply" {
                            format!("conflict with \"{}\"", e.manager)
                        } else {
                            format!("conflict with \"{}\" using {}", e.manager, e.api_version)
                        };
                        if !conflicts.iter().any(|(w, _, c)| *w == who && c == p) {
                            conflicts.push((who, e.manager.clone(), p.clone()));
                        }
                    }
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(apply_conflict(&resource, name, &conflicts));
        }
        let taken: BTreeSet<FieldPath> = conflicts.into_iter().map(|(_, _, p)| p).collect();
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            e.fields.retain(|p| !taken.contains(p));
        }
        // Fields this manager applied before and no longer does, and nobody else owns, go.
        let before: BTreeSet<FieldPath> = entries
            .iter()
            .find(|e| mine(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let mut new = old.clone();
        for p in before.difference(&applied) {
            let shared_with_others = entries
                .iter()
                .filter(|e| !mine(e))
                .any(|e| e.fields.contains(p));
            if !shared_with_others {
                remove_path(&mut new, p);
            }
        }
        merge_into(&mut new, &config);
        new = keep_unwritable(&resource, &old, new, scope);
        validate_meta(&resource, name, &new)?;
        prepare_checked(&resource, Some(&old), &mut new, scope)
            .map_err(|causes| ApiError::invalid(&resource.qualified_kind(), name, &causes))?;
        // The applier's entry keeps its place (a reordering alone would be a write).
        match entries.iter_mut().find(|e| mine(e)) {
            Some(e) => e.fields = applied,
            None => entries.push(ManagedEntry {
                manager: writer.manager.clone(),
                operation: "Apply".into(),
                api_version: resource.api_version(),
                time: now(),
                subresource: sub,
                fields: applied,
            }),
        }
        let object = self.finish_write(&mut state, &resource, &key, &old, new, entries, writer)?;
        Ok((object, false))
    }
}

/// A path of map keys from the object's root to a leaf (a scalar, a list, an empty map).
pub(super) type FieldPath = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct ManagedEntry {
    pub(super) manager: String,
    /// `Apply` or `Update`.
    pub(super) operation: String,
    pub(super) api_version: String,
    pub(super) time: String,
    pub(super) subresource: Option<String>,
    pub(super) fields: BTreeSet<FieldPath>,
}

pub(super) fn read_managed(object: &Value) -> Vec<ManagedEntry> {
    let mut entries = Vec::new();
    for e in object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut fields = BTreeSet::new();
        collect_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
        entries.push(ManagedEntry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            subresource: e["subresource"].as_str().map(str::to_string),
            fields,
        });
    }
    entries
}

fn collect_fields_v1(node: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(map) = node.as_object() else { return };
    if map.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in map {
        if let Some(field) = k.strip_prefix("f:") {
            prefix.push(field.to_string());
            collect_fields_v1(child, prefix, out);
            prefix.pop();
        }
    }
}

fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = json!({});
    for path in fields {
        let mut node = &mut root;
        for field in path {
            node = node
                .as_object_mut()
                .expect("a map")
                .entry(format!("f:{field}"))
                .or_insert_with(|| json!({}));
        }
    }
    root
}

pub(super) fn write_managed(object: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&e.fields),
            });
            if let Some(sub) = &e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    let meta = object["metadata"].as_object_mut().expect("metadata");
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

pub(super) fn upsert_entry(
    entries: &mut Vec<ManagedEntry>,
    manager: &str,
    operation: &str,
    resource: &ResourceType,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
) {
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == operation && e.subresource == subresource)
    {
        Some(e) => e.fields.extend(fields),
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: resource.api_version(),
            time: now(),
            subresource,
            fields,
        }),
    }
}

/// Whether a path is one a write in `scope` tracks.
fn tracked(path: &[String], resource: &ResourceType, scope: Scope) -> bool {
    match path.first().map(String::as_str) {
        None | Some("apiVersion" | "kind") => false,
        Some("metadata") => {
            scope == Scope::Main && path.len() > 1 && !SYSTEM_METADATA.contains(&path[1].as_str())
        }
        Some("status") if resource.status => scope == Scope::Status,
        Some(_) => scope == Scope::Main,
    }
}

pub(super) fn leaves(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

pub(super) fn tracked_leaves(
    object: &Value,
    resource: &ResourceType,
    scope: Scope,
) -> BTreeSet<FieldPath> {
    let mut all = BTreeSet::new();
    leaves(object, &mut Vec::new(), &mut all);
    all.into_iter()
        .filter(|p| tracked(p, resource, scope))
        .collect()
}

pub(super) fn all_tracked_leaves(object: &Value, resource: &ResourceType) -> BTreeSet<FieldPath> {
    let mut all = tracked_leaves(object, resource, Scope::Main);
    all.extend(tracked_leaves(object, resource, Scope::Status));
    all
}

pub(super) fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = value;
    for field in path {
        v = v.as_object()?.get(field)?;
    }
    Some(v)
}

/// One path is the other or one of its ancestors.
pub(super) fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Whether applying `config`'s leaf `q` changes `live`'s leaf `p`, owned by another.
fn conflicts_with(live: &Value, config: &Value, p: &FieldPath, q: &FieldPath) -> bool {
    let empty_map = |v: Option<&Value>| v.is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
    if p == q {
        return value_at(live, p) != value_at(config, q);
    }
    if p.starts_with(q) {
        // The apply sets an ancestor of the owned field to a leaf: it replaces it, unless
        // it is an empty map (which merges).
        return !empty_map(value_at(config, q));
    }
    if q.starts_with(p) {
        // The owned leaf is an ancestor of the applied field: unless it is an empty map,
        // the apply changes its type.
        return !empty_map(value_at(live, p));
    }
    false
}

fn apply_conflict(
    resource: &ResourceType,
    name: &str,
    conflicts: &[(String, String, FieldPath)],
) -> ApiError {
    let dotted = |p: &FieldPath| format!(".{}", p.join("."));
    let message = if conflicts.len() == 1 {
        let (who, _, p) = &conflicts[0];
        format!("Apply failed with 1 conflict: {who}: {}", dotted(p))
    } else {
        let mut m = format!("Apply failed with {} conflicts: ", conflicts.len());
        let mut by_who: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (who, _, p) in conflicts {
            by_who.entry(who.as_str()).or_default().push(dotted(p));
        }
        let parts: Vec<String> = by_who
            .iter()
            .map(|(who, paths)| {
                let who = who.replacen("conflict with", "conflicts with", 1);
                format!("{who}:\n- {}", paths.join("\n- "))
            })
            .collect();
        m.push_str(&parts.join("\n"));
        m
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(who, _, p)| json!({"reason": "FieldManagerConflict", "message": who, "field": dotted(p)}))
        .collect();
    let mut details = object_details(resource, name);
    details["causes"] = Value::Array(causes);
    ApiError::new(409, "Conflict", message).details(details)
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Removes a leaf, and the maps it leaves empty below the top level.
fn remove_path(value: &mut Value, path: &[String]) {
    fn go(v: &mut Value, path: &[String]) -> bool {
        let Some(map) = v.as_object_mut() else {
            return false;
        };
        match path {
            [] => false,
            [last] => {
                map.remove(last);
                map.is_empty()
            }
            [first, rest @ ..] => {
                let emptied = map.get_mut(first).is_some_and(|child| go(child, rest));
                if emptied {
                    map.remove(first);
                }
                map.is_empty()
            }
        }
    }
    if let [first, rest @ ..] = path {
        if let Some(child) = value.get_mut(first) {
            if rest.is_empty() {
                value.as_object_mut().expect("an object").remove(first);
            } else {
                go(child, rest);
            }
        }
    }
}

/// Server-side apply's merge: maps merge key by key, anything else replaces.
fn merge_into(target: &mut Value, config: &Value) {
    match (target.as_object_mut(), config.as_object()) {
        (Some(t), Some(c)) => {
            for (k, v) in c {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_into(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = config.clone(),
    }
}

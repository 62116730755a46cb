//! Reading live state: listing by label selector everything Cairn manages for a
//! workspace in its (context, namespace) scopes, page by page, and reading one object.

use std::collections::{BTreeMap, BTreeSet};

use futures::{stream, StreamExt};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::connect::Cluster;
use super::discovery::{api_for, Resolved};
use super::error::request_error;
use super::{selector, wave, Clusters, Error, KindRef, LiveObject, Result, Scope, SHIPPED_KINDS};
use crate::backend::kubernetes::{KubeObject, ObjectKey};

impl Clusters {
    /// Lists everything Cairn manages for `workspace` in these scopes, for the kinds
    /// Cairn's templates render ([`SHIPPED_KINDS`]), none of them required. Objects come
    /// sorted by apply wave, then by key.
    pub async fn observe(&self, workspace: &str, scopes: &[Scope]) -> Result<Vec<LiveObject>> {
        self.observe_kinds(workspace, scopes, &[]).await
    }

    /// Lists what Cairn manages for `workspace` in the scopes of `desired` and `scopes`
    /// together, for the shipped kinds and every kind in `desired` (those required:
    /// a cluster that does not serve one is an error).
    pub async fn observe_desired(
        &self,
        workspace: &str,
        scopes: &[Scope],
        desired: &[KubeObject],
    ) -> Result<Vec<LiveObject>> {
        let mut all: BTreeSet<Scope> = scopes.iter().cloned().collect();
        let mut kinds: BTreeSet<KindRef> = BTreeSet::new();
        for object in desired {
            // A desired Namespace is a scope of its own.
            let namespace = match (&object.namespace, object.kind.as_str()) {
                (Some(ns), _) => Some(ns),
                (None, "Namespace") => Some(&object.name),
                (None, _) => None,
            };
            if let Some(namespace) = namespace {
                all.insert(Scope {
                    context: object.context.clone(),
                    namespace: namespace.clone(),
                });
            }
            kinds.insert(KindRef {
                api_version: object.api_version.clone(),
                kind: object.kind.clone(),
                required: true,
            });
        }
        let scopes: Vec<Scope> = all.into_iter().collect();
        let kinds: Vec<KindRef> = kinds.into_iter().collect();
        self.observe_kinds(workspace, &scopes, &kinds).await
    }

    /// Lists what Cairn manages for `workspace` in these scopes, for the shipped kinds
    /// and `kinds` (a kind in both counts as required if either says so).
    pub async fn observe_kinds(
        &self,
        workspace: &str,
        scopes: &[Scope],
        kinds: &[KindRef],
    ) -> Result<Vec<LiveObject>> {
        let mut wanted: BTreeMap<(String, String), bool> = SHIPPED_KINDS
            .iter()
            .map(|(v, k)| ((v.to_string(), k.to_string()), false))
            .collect();
        for k in kinds {
            *wanted
                .entry((k.api_version.clone(), k.kind.clone()))
                .or_default() |= k.required;
        }
        let mut by_context: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
        for scope in scopes {
            by_context
                .entry(scope.context.clone())
                .or_default()
                .insert(scope.namespace.clone());
        }
        // One list per (context, kind, namespace), or per (context, kind) when
        // cluster-scoped.
        let mut lists: Vec<(Cluster, Option<String>, Resolved, Option<String>)> = Vec::new();
        for (context, namespaces) in &by_context {
            let cluster = self.cluster(context.as_deref()).await?;
            for ((api_version, kind), required) in &wanted {
                let resolved = if *required {
                    Some(self.require(&cluster, context, api_version, kind).await?)
                } else {
                    self.resolve(&cluster, context, api_version, kind).await?
                };
                let Some(resolved) = resolved else { continue };
                if resolved.namespaced {
                    for ns in namespaces {
                        lists.push((
                            cluster.clone(),
                            context.clone(),
                            resolved.clone(),
                            Some(ns.clone()),
                        ));
                    }
                } else {
                    lists.push((cluster.clone(), context.clone(), resolved.clone(), None));
                }
            }
        }
        let selector = selector(workspace);
        let by_context = &by_context;
        let results: Vec<Result<Vec<LiveObject>>> = stream::iter(lists)
            .map(|(cluster, context, resolved, namespace)| {
                let selector = selector.clone();
                async move {
                    let listed = list(
                        &cluster,
                        &context,
                        &resolved,
                        namespace.as_deref(),
                        &selector,
                    )
                    .await;
                    match listed {
                        // A namespaced role can't list Namespaces (cluster-scoped), but
                        // may read its own: read the scopes' one by one instead.
                        Err(Error::Api { code: 403, .. })
                            if namespace.is_none() && resolved.resource.kind == "Namespace" =>
                        {
                            let names = by_context.get(&context).cloned().unwrap_or_default();
                            read_each(&cluster, &context, &resolved, &names, workspace).await
                        }
                        other => other,
                    }
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut objects = BTreeMap::new();
        for result in results {
            for object in result? {
                objects.insert((wave(&object.key.kind), object.key.clone()), object);
            }
        }
        Ok(objects.into_values().collect())
    }

    /// Reads one object as it is live; `None` when it does not exist.
    pub async fn get(&self, key: &ObjectKey, api_version: &str) -> Result<Option<Value>> {
        let cluster = self.cluster(key.context.as_deref()).await?;
        let resolved = self
            .require(&cluster, &key.context, api_version, &key.kind)
            .await?;
        let api = api_for(&cluster, &resolved, key.namespace.as_deref(), key)?;
        get(&api, &cluster, key).await
    }
}

/// Reads one object as JSON; `None` when it doesn't exist.
pub(super) async fn get(
    api: &Api<DynamicObject>,
    cluster: &Cluster,
    key: &ObjectKey,
) -> Result<Option<Value>> {
    match api.get_opt(&key.name).await {
        Ok(Some(object)) => Ok(Some(to_json(object, &key.kind))),
        Ok(None) => Ok(None),
        Err(e) => Err(request_error(cluster, "read", key.to_string(), e)),
    }
}

pub(super) fn to_json(object: DynamicObject, kind: &str) -> Value {
    let mut value = serde_json::to_value(&object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.entry("kind")
            .or_insert_with(|| Value::String(kind.to_string()));
    }
    value
}

pub(super) fn resource_version(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Lists one kind in one namespace (or cluster-wide) by label selector, page by page.
async fn list(
    cluster: &Cluster,
    context: &Option<String>,
    resolved: &Resolved,
    namespace: Option<&str>,
    selector: &str,
) -> Result<Vec<LiveObject>> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &resolved.resource),
        None => Api::all_with(cluster.client.clone(), &resolved.resource),
    };
    let mut out = Vec::new();
    let mut params = ListParams::default().labels(selector).limit(500);
    loop {
        let page = api.list(&params).await.map_err(|e| {
            let what = match namespace {
                Some(ns) => format!("{} objects in namespace `{ns}`", resolved.resource.kind),
                None => format!("{} objects", resolved.resource.kind),
            };
            request_error(cluster, "list", what, e)
        })?;
        for item in page.items {
            out.push(live_object(context, resolved, item));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// Reads cluster-scoped objects one by one, by name, keeping those Cairn manages for
/// `workspace`: what a role that may not list them can still see. One it may not read
/// either, or that doesn't exist, is left out (the plan then uses it as it is).
async fn read_each(
    cluster: &Cluster,
    context: &Option<String>,
    resolved: &Resolved,
    names: &BTreeSet<String>,
    workspace: &str,
) -> Result<Vec<LiveObject>> {
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resolved.resource);
    let mut out = Vec::new();
    for name in names {
        match api.get_opt(name).await {
            Ok(Some(item)) => {
                let object = live_object(context, resolved, item);
                if object.is_managed_by(workspace) {
                    out.push(object);
                }
            }
            Ok(None) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            Err(e) => {
                let what = format!("{} `{name}`", resolved.resource.kind);
                return Err(request_error(cluster, "read", what, e));
            }
        }
    }
    Ok(out)
}

/// A listed object as Cairn keeps it, with its `apiVersion` and `kind` (lists leave
/// them out of items).
fn live_object(context: &Option<String>, resolved: &Resolved, item: DynamicObject) -> LiveObject {
    let name = item.metadata.name.clone().unwrap_or_default();
    let item_namespace = item.metadata.namespace.clone();
    let mut value = serde_json::to_value(&item).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::String(resolved.resource.api_version.clone()),
        );
        map.insert("kind".into(), Value::String(resolved.resource.kind.clone()));
    }
    LiveObject {
        key: ObjectKey {
            context: context.clone(),
            group: resolved.resource.group.clone(),
            kind: resolved.resource.kind.clone(),
            namespace: item_namespace,
            name,
        },
        api_version: resolved.resource.api_version.clone(),
        value,
    }
}

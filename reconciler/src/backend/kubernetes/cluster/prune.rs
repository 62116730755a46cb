//! Pruning: deleting what is no longer desired, in reverse wave order, each object's
//! labels checked again on a fresh read and the delete conditional on its `uid` and
//! `resourceVersion`.
//!
//! A Namespace is deleted only when it holds nothing but Cairn's objects for the
//! workspace: deleting one deletes everything in it, and a hand-made Secret
//! (`cairn-store`) or another team's ConfigMap must survive the removal of a compute.
//! Its contents are listed (metadata only) for the kinds people commonly make by hand
//! ([`CONTENT_KINDS`]) besides those Cairn renders; one that holds anything else, or
//! whose contents Cairn may not list, is kept, and the result says why.

use std::collections::{BTreeMap, HashMap};

use futures::{stream, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Preconditions};
use serde_json::Value;

use super::connect::Cluster;
use super::discovery::api_for;
use super::error::request_error;
use super::observe::{get, resource_version};
use super::{is_managed, wave, Clusters, Error, LiveObject, Result, ATTEMPTS, SHIPPED_KINDS};
use crate::backend::kubernetes::ObjectKey;

/// Kinds looked for in a Namespace before deleting it, besides the namespaced ones
/// Cairn renders. A kind the cluster doesn't serve is skipped.
const CONTENT_KINDS: [(&str, &str); 9] = [
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Pod"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "CronJob"),
    ("networking.k8s.io/v1", "Ingress"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
];

/// What Kubernetes itself makes in every namespace: never a reason to keep one.
const BUILT_IN: [(&str, &str); 2] = [
    ("ConfigMap", "kube-root-ca.crt"),
    ("ServiceAccount", "default"),
];

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The objects deleted, in the order the deletes were sent.
    pub deleted: Vec<ObjectKey>,
    /// The objects left in place on purpose, each with the reason (a Namespace that
    /// holds objects Cairn doesn't own). Objects that were gone or no longer Cairn's
    /// are in neither list.
    pub kept: Vec<(ObjectKey, String)>,
}

/// How one object's prune ended.
enum PruneOne {
    Deleted,
    Kept(String),
    Skipped,
}

impl Clusters {
    /// Deletes the objects that carry Cairn's labels for `workspace`, in reverse apply
    /// wave order, and returns what it deleted and what it kept. Each object is read
    /// again first: one that is gone is skipped, one whose live labels no longer say it
    /// is Cairn's for this workspace is left alone, and the delete is conditional on
    /// the `uid` and `resourceVersion` read. A Namespace holding anything else than
    /// Cairn's objects for the workspace is kept (see the module's doc). Objects passed
    /// that don't carry the labels are ignored.
    pub async fn prune(&self, workspace: &str, objects: &[LiveObject]) -> Result<Pruned> {
        let mut clusters: HashMap<Option<String>, Cluster> = HashMap::new();
        for object in objects {
            if !clusters.contains_key(&object.key.context) {
                let cluster = self.cluster(object.key.context.as_deref()).await?;
                clusters.insert(object.key.context.clone(), cluster);
            }
        }
        let mut waves: BTreeMap<std::cmp::Reverse<usize>, Vec<&LiveObject>> = BTreeMap::new();
        for object in objects.iter().filter(|o| o.is_managed_by(workspace)) {
            waves
                .entry(std::cmp::Reverse(wave(&object.key.kind)))
                .or_default()
                .push(object);
        }
        let mut pruned = Pruned::default();
        for wave_objects in waves.into_values() {
            // The futures are made first so the stream holds no closure over their
            // lifetimes (which callers behind `async_trait` could not prove `Send`).
            let prunes: Vec<_> = wave_objects
                .into_iter()
                .map(|object| {
                    let cluster = &clusters[&object.key.context];
                    async move {
                        (
                            &object.key,
                            self.prune_one(cluster, workspace, object).await,
                        )
                    }
                })
                .collect();
            let results: Vec<(&ObjectKey, Result<PruneOne>)> = stream::iter(prunes)
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for (key, result) in results {
                match result? {
                    PruneOne::Deleted => pruned.deleted.push(key.clone()),
                    PruneOne::Kept(reason) => pruned.kept.push((key.clone(), reason)),
                    PruneOne::Skipped => {}
                }
            }
        }
        Ok(pruned)
    }

    /// Why a Namespace Cairn made must stay: what it holds that isn't Cairn's for
    /// `workspace`, or that Cairn may not look; `None` when it may go.
    async fn namespace_keeps(
        &self,
        cluster: &Cluster,
        context: &Option<String>,
        namespace: &str,
        workspace: &str,
    ) -> Result<Option<String>> {
        // Each kind once: Cairn renders some of the content kinds itself (Secrets).
        let kinds = SHIPPED_KINDS
            .iter()
            .filter(|(_, k)| *k != "Namespace")
            .chain(
                CONTENT_KINDS
                    .iter()
                    .filter(|kind| !SHIPPED_KINDS.contains(kind)),
            );
        let mut foreign: Vec<String> = Vec::new();
        for (api_version, kind) in kinds {
            let Some(resolved) = self.resolve(cluster, context, api_version, kind).await? else {
                continue;
            };
            if !resolved.namespaced {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(cluster.client.clone(), namespace, &resolved.resource);
            let mut params = ListParams::default().limit(500);
            loop {
                let page = match api.list_metadata(&params).await {
                    Ok(page) => page,
                    Err(kube::Error::Api(status)) if status.code == 403 => {
                        return Ok(Some(format!(
                            "Cairn may not list the {kind}s in it, so it can't tell that it holds only Cairn's objects"
                        )))
                    }
                    Err(e) => {
                        let what = format!("{kind}s in namespace `{namespace}`");
                        return Err(request_error(cluster, "list", what, e));
                    }
                };
                for item in &page.items {
                    let meta = &item.metadata;
                    let name = meta.name.clone().unwrap_or_default();
                    let managed = meta.labels.as_ref().is_some_and(|l| {
                        l.get(super::LABEL_MANAGED_BY).map(String::as_str) == Some("cairn")
                            && l.get(super::LABEL_WORKSPACE).map(String::as_str) == Some(workspace)
                    });
                    // Made by a controller (a Job's pods), going with their owner, or
                    // made by Kubernetes in every namespace.
                    let derived = meta
                        .owner_references
                        .as_ref()
                        .is_some_and(|o| !o.is_empty())
                        || meta.deletion_timestamp.is_some()
                        || BUILT_IN.contains(&(kind, name.as_str()));
                    if !managed && !derived {
                        foreign.push(format!("{kind} `{name}`"));
                    }
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
        }
        if foreign.is_empty() {
            return Ok(None);
        }
        const SHOWN: usize = 3;
        let more = foreign.len().saturating_sub(SHOWN);
        foreign.truncate(SHOWN);
        let mut list = foreign.join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more"));
        }
        Ok(Some(format!(
            "it holds {list}, which Cairn did not create for workspace `{workspace}`; delete {} by hand if it should go",
            if more > 0 || foreign.len() > 1 { "them and the namespace" } else { "it and the namespace" }
        )))
    }

    async fn prune_one(
        &self,
        cluster: &Cluster,
        workspace: &str,
        object: &LiveObject,
    ) -> Result<PruneOne> {
        let key = &object.key;
        let resolved = self
            .require(cluster, &key.context, &object.api_version, &key.kind)
            .await?;
        let api = api_for(cluster, &resolved, key.namespace.as_deref(), key)?;
        for _ in 0..ATTEMPTS {
            let Some(live) = get(&api, cluster, key).await? else {
                return Ok(PruneOne::Skipped);
            };
            if !is_managed(&live, workspace) {
                return Ok(PruneOne::Skipped);
            }
            if key.kind == "Namespace" && key.group.is_empty() {
                if let Some(reason) = self
                    .namespace_keeps(cluster, &key.context, &key.name, workspace)
                    .await?
                {
                    return Ok(PruneOne::Kept(reason));
                }
            }
            let params = DeleteParams::background().preconditions(Preconditions {
                uid: live
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                resource_version: resource_version(&live),
            });
            match api.delete(&key.name, &params).await {
                Ok(_) => return Ok(PruneOne::Deleted),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    return Ok(PruneOne::Skipped)
                }
                // Changed since it was read: read it (and its labels) again.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(request_error(cluster, "delete", key.to_string(), e)),
            }
        }
        Err(Error::Raced {
            object: Box::new(key.clone()),
            attempts: ATTEMPTS,
        })
    }
}

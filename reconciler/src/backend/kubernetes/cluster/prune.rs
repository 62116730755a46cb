//! Pruning: deleting what is no longer desired, in reverse wave order, each object's
//! labels checked again on a fresh read and the delete conditional on its `uid` and
//! `resourceVersion`.

use std::collections::{BTreeMap, HashMap};

use futures::{stream, StreamExt};
use kube::api::{DeleteParams, Preconditions};
use serde_json::Value;

use super::connect::Cluster;
use super::discovery::api_for;
use super::error::request_error;
use super::observe::{get, resource_version};
use super::{is_managed, wave, Clusters, Error, LiveObject, Result, ATTEMPTS};

impl Clusters {
    /// Deletes the objects that carry Cairn's labels for `workspace`, in reverse apply
    /// wave order, and returns how many it deleted. Each object is read again first:
    /// one that is gone is skipped, one whose live labels no longer say it is Cairn's
    /// for this workspace is left alone, and the delete is conditional on the `uid` and
    /// `resourceVersion` read. Objects passed that don't carry the labels are ignored.
    pub async fn prune(&self, workspace: &str, objects: &[LiveObject]) -> Result<usize> {
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
        let mut deleted = 0;
        for wave_objects in waves.into_values() {
            // The futures are made first so the stream holds no closure over their
            // lifetimes (which callers behind `async_trait` could not prove `Send`).
            let prunes: Vec<_> = wave_objects
                .into_iter()
                .map(|object| {
                    let cluster = &clusters[&object.key.context];
                    self.prune_one(cluster, workspace, object)
                })
                .collect();
            let results: Vec<Result<bool>> = stream::iter(prunes)
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for result in results {
                if result? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    async fn prune_one(
        &self,
        cluster: &Cluster,
        workspace: &str,
        object: &LiveObject,
    ) -> Result<bool> {
        let key = &object.key;
        let resolved = self
            .require(cluster, &key.context, &object.api_version, &key.kind)
            .await?;
        let api = api_for(cluster, &resolved, key.namespace.as_deref(), key)?;
        for _ in 0..ATTEMPTS {
            let Some(live) = get(&api, cluster, key).await? else {
                return Ok(false);
            };
            if !is_managed(&live, workspace) {
                return Ok(false);
            }
            let params = DeleteParams::background().preconditions(Preconditions {
                uid: live
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                resource_version: resource_version(&live),
            });
            match api.delete(&key.name, &params).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
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

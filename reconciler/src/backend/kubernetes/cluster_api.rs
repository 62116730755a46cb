//! What the Kubernetes target's executor needs from the clusters, as a trait: apply
//! objects, delete them, wait for a Job to finish and for a Deployment to be available,
//! read an object, scrape pods through the API server's proxy. [`Clusters`] implements
//! it over `kube`; the executor ([`super::execute`]) and the traffic handle
//! ([`super::traffic`]) only see this.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::cluster::{ApplyOptions, Clusters, JobWait, LiveObject, Pruned};
use super::{ClusterError, KubeObject, ObjectKey, LABEL_MANAGED_BY, LABEL_WORKSPACE};

/// Applies and watches Kubernetes objects.
#[async_trait::async_trait]
pub trait ClusterApi: Send + Sync {
    /// Server-side applies `objects` (field manager `cairn`) in apply waves by kind;
    /// those in `replace` are deleted and created again. With `force`, fields another
    /// manager took over are taken back (the plan showed them as drift and was
    /// approved); without it, such a field is a conflict error.
    async fn apply(
        &self,
        objects: &[KubeObject],
        force: bool,
        replace: &BTreeSet<ObjectKey>,
    ) -> Result<(), ClusterError>;

    /// Deletes these objects of `workspace` (`(key, apiVersion)`), each only if it
    /// still carries Cairn's labels for that workspace when read again, and a Namespace
    /// only if it holds nothing else: returns what was deleted and what was kept, why.
    async fn delete(
        &self,
        workspace: &str,
        objects: &[(ObjectKey, String)],
    ) -> Result<Pruned, ClusterError>;

    /// Waits for a Job to succeed; `on_log` gets its pods' new log lines. A failed Job
    /// or the timeout is an error saying why.
    async fn wait_job(
        &self,
        key: &ObjectKey,
        wait: &JobWait,
        on_log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<(), ClusterError>;

    /// Waits until a Deployment is available (all replicas ready and up to date).
    async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<(), ClusterError>;

    /// Puts a random key into a Secret's `data.key` when it has none; whether it did.
    async fn fill_key(&self, secret: &ObjectKey) -> Result<bool, ClusterError>;

    /// Reads one object as it is live; `None` when it does not exist.
    async fn get(&self, key: &ObjectKey, api_version: &str) -> Result<Option<Value>, ClusterError>;

    /// Sets a Deployment's `spec.replicas` under Cairn's scaling field manager (which
    /// its autoscaler later takes the field over from).
    async fn set_replicas(&self, deployment: &ObjectKey, replicas: u32)
        -> Result<(), ClusterError>;

    /// GETs `path` from every running pod matching the label `selector` in `namespace`
    /// of `context`, through the API server's pod proxy: `(pod, body)` per pod.
    async fn scrape(
        &self,
        context: Option<&str>,
        namespace: &str,
        selector: &str,
        port: u16,
        path: &str,
    ) -> Result<Vec<(String, String)>, ClusterError>;
}

#[async_trait::async_trait]
impl ClusterApi for Clusters {
    async fn apply(
        &self,
        objects: &[KubeObject],
        force: bool,
        replace: &BTreeSet<ObjectKey>,
    ) -> Result<(), ClusterError> {
        let options = ApplyOptions {
            force,
            replace: replace.clone(),
            ..ApplyOptions::default()
        };
        let applied = Clusters::apply(self, objects, &options).await?;
        for a in applied {
            if let super::Outcome::Failed(e) = a.outcome {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn delete(
        &self,
        workspace: &str,
        objects: &[(ObjectKey, String)],
    ) -> Result<Pruned, ClusterError> {
        // `prune` reads each object again and checks its live labels before deleting:
        // these stand-ins only carry the key.
        let objects: Vec<LiveObject> = objects
            .iter()
            .map(|(key, api_version)| LiveObject {
                key: key.clone(),
                api_version: api_version.clone(),
                value: json!({"metadata": {
                    "name": key.name,
                    "namespace": key.namespace,
                    "labels": {LABEL_MANAGED_BY: "cairn", LABEL_WORKSPACE: workspace},
                }}),
            })
            .collect();
        self.prune(workspace, &objects).await
    }

    async fn wait_job(
        &self,
        key: &ObjectKey,
        wait: &JobWait,
        on_log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<(), ClusterError> {
        Clusters::wait_job(self, key, wait, on_log).await
    }

    async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<(), ClusterError> {
        Clusters::wait_available(self, key, timeout).await
    }

    async fn fill_key(&self, secret: &ObjectKey) -> Result<bool, ClusterError> {
        Clusters::fill_key(self, secret).await
    }

    async fn get(&self, key: &ObjectKey, api_version: &str) -> Result<Option<Value>, ClusterError> {
        Clusters::get(self, key, api_version).await
    }

    async fn set_replicas(
        &self,
        deployment: &ObjectKey,
        replicas: u32,
    ) -> Result<(), ClusterError> {
        Clusters::set_replicas(self, deployment, replicas).await
    }

    async fn scrape(
        &self,
        context: Option<&str>,
        namespace: &str,
        selector: &str,
        port: u16,
        path: &str,
    ) -> Result<Vec<(String, String)>, ClusterError> {
        Clusters::scrape(self, context, namespace, selector, port, path).await
    }
}

//! What an apply needs from the clusters, as a trait: apply objects, delete them, wait
//! for a Job to finish and for a Deployment to be available, read an object, scrape pods
//! through the API server's proxy. [`Clusters`] implements it
//! over `kube`; the applier only sees this.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::cluster::{ApplyOptions, Clusters, LiveObject};
use super::{KubeObject, ObjectKey, LABEL_MANAGED_BY, LABEL_WORKSPACE};

/// Errors from a cluster, as the applier reports them (their chain is the message).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Applies and watches Kubernetes objects.
#[async_trait::async_trait]
pub trait KubeTarget: Send + Sync {
    /// Server-side applies `objects` (field manager `cairn`) in apply waves by kind;
    /// those in `replace` are deleted and created again. With `force`, fields another
    /// manager took over are taken back (the plan showed them as drift and was
    /// approved); without it, such a field is a conflict error.
    async fn apply(
        &self,
        objects: &[KubeObject],
        force: bool,
        replace: &BTreeSet<ObjectKey>,
    ) -> Result<(), BoxError>;

    /// Deletes these objects of `workspace` (`(key, apiVersion)`), each only if it
    /// still carries Cairn's labels for that workspace when read again.
    async fn delete(
        &self,
        workspace: &str,
        objects: &[(ObjectKey, String)],
    ) -> Result<(), BoxError>;

    /// Waits for a Job to succeed; `on_log` gets its pods' new log lines. A failed Job
    /// or the timeout is an error saying why.
    async fn wait_job(
        &self,
        key: &ObjectKey,
        timeout: Duration,
        on_log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<(), BoxError>;

    /// Waits until a Deployment is available (all replicas ready and up to date).
    async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<(), BoxError>;

    /// Reads one object as it is live; `None` when it does not exist.
    async fn get(&self, key: &ObjectKey, api_version: &str) -> Result<Option<Value>, BoxError>;

    /// GETs `path` from every running pod matching the label `selector` in `namespace`
    /// of `context`, through the API server's pod proxy: `(pod, body)` per pod.
    async fn scrape(
        &self,
        context: Option<&str>,
        namespace: &str,
        selector: &str,
        port: u16,
        path: &str,
    ) -> Result<Vec<(String, String)>, BoxError>;
}

#[async_trait::async_trait]
impl KubeTarget for Clusters {
    async fn apply(
        &self,
        objects: &[KubeObject],
        force: bool,
        replace: &BTreeSet<ObjectKey>,
    ) -> Result<(), BoxError> {
        let options = ApplyOptions {
            force,
            replace: replace.clone(),
            ..ApplyOptions::default()
        };
        let applied = Clusters::apply(self, objects, &options).await?;
        for a in applied {
            if let super::Outcome::Failed(e) = a.outcome {
                return Err(Box::new(e));
            }
        }
        Ok(())
    }

    async fn delete(
        &self,
        workspace: &str,
        objects: &[(ObjectKey, String)],
    ) -> Result<(), BoxError> {
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
        self.prune(workspace, &objects).await?;
        Ok(())
    }

    async fn wait_job(
        &self,
        key: &ObjectKey,
        timeout: Duration,
        on_log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<(), BoxError> {
        Ok(Clusters::wait_job(self, key, timeout, on_log).await?)
    }

    async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<(), BoxError> {
        Ok(Clusters::wait_available(self, key, timeout).await?)
    }

    async fn get(&self, key: &ObjectKey, api_version: &str) -> Result<Option<Value>, BoxError> {
        Ok(Clusters::get(self, key, api_version).await?)
    }

    async fn scrape(
        &self,
        context: Option<&str>,
        namespace: &str,
        selector: &str,
        port: u16,
        path: &str,
    ) -> Result<Vec<(String, String)>, BoxError> {
        Ok(Clusters::scrape(self, context, namespace, selector, port, path).await?)
    }
}

//! What an apply needs from the clusters, as a trait: apply objects, delete them, wait
//! for a Job to finish and for a Deployment to be available. The cluster client
//! implements it over `kube`; the applier only sees this.

use std::time::Duration;

use super::{KubeObject, ObjectKey};

/// Errors from a cluster, as the applier reports them (their chain is the message).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Applies and watches Kubernetes objects.
#[async_trait::async_trait]
pub trait KubeTarget: Send + Sync {
    /// Server-side applies `objects` (field manager `cairn`), in the order given. With
    /// `force`, fields another manager took over are taken back (the plan showed them
    /// as drift and was approved); without it, such a field is a conflict error.
    async fn apply(&self, objects: &[KubeObject], force: bool) -> Result<(), BoxError>;

    /// Deletes objects that carry Cairn's labels, in the order given, and waits until
    /// they are gone (a replace creates them again right after).
    async fn delete(&self, keys: &[ObjectKey]) -> Result<(), BoxError>;

    /// Waits for a Job to succeed; `on_log` gets its pods' new log lines. A failed Job
    /// or the timeout is an error saying why.
    async fn wait_job(
        &self,
        key: &ObjectKey,
        timeout: Duration,
        on_log: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), BoxError>;

    /// Waits until a Deployment is available (all replicas ready and up to date).
    async fn wait_available(&self, key: &ObjectKey, timeout: Duration) -> Result<(), BoxError>;
}

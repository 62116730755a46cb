//! API discovery: which kinds a cluster serves, resolved once per context and API
//! group version and cached, and the typed `Api` for a resolved kind in a namespace
//! (or cluster-wide).

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::{Api, DynamicObject};
use kube::core::gvk::GroupVersion;
use kube::discovery::{self, ApiResource, Scope as ApiScope};
use tokio::sync::OnceCell;

use super::connect::Cluster;
use super::error::request_error;
use super::{Clusters, Error, Result};
use crate::backend::kubernetes::ObjectKey;

/// A kind resolved through discovery.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub(super) resource: ApiResource,
    pub(super) namespaced: bool,
}

pub(super) type Kinds = HashMap<String, Resolved>;

/// Per (context, apiVersion), the kinds discovered, filled once.
pub(super) type KindCache = HashMap<(Option<String>, String), Arc<OnceCell<Arc<Kinds>>>>;

impl Clusters {
    /// Resolves a kind through discovery (cached per context and group version);
    /// `None` when the server does not serve it.
    pub(super) async fn resolve(
        &self,
        cluster: &Cluster,
        context: &Option<String>,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>> {
        let cell = self
            .kinds
            .lock()
            .await
            .entry((context.clone(), api_version.to_string()))
            .or_default()
            .clone();
        let kinds = cell
            .get_or_try_init(|| async {
                let gv: GroupVersion = api_version.parse().map_err(|_| Error::Api {
                    action: "discover",
                    what: format!("apiVersion `{api_version}`"),
                    code: 400,
                    reason: "BadRequest".into(),
                    message: "not a valid apiVersion".into(),
                })?;
                match discovery::pinned_group(&cluster.client, &gv).await {
                    Ok(group) => Ok(Arc::new(
                        group
                            .versioned_resources(&gv.version)
                            .into_iter()
                            .map(|(resource, caps)| {
                                let namespaced = caps.scope == ApiScope::Namespaced;
                                (
                                    resource.kind.clone(),
                                    Resolved {
                                        resource,
                                        namespaced,
                                    },
                                )
                            })
                            .collect::<Kinds>(),
                    )),
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        Ok(Arc::new(Kinds::new()))
                    }
                    Err(e) => Err(request_error(
                        cluster,
                        "discover",
                        format!("the API group version `{api_version}`"),
                        e,
                    )),
                }
            })
            .await?;
        Ok(kinds.get(kind).cloned())
    }

    /// Resolves a kind that must be served.
    pub(super) async fn require(
        &self,
        cluster: &Cluster,
        context: &Option<String>,
        api_version: &str,
        kind: &str,
    ) -> Result<Resolved> {
        self.resolve(cluster, context, api_version, kind)
            .await?
            .ok_or_else(|| Error::KindNotServed {
                context: cluster.name.clone(),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }
}

pub(super) fn api_for(
    cluster: &Cluster,
    resolved: &Resolved,
    namespace: Option<&str>,
    key: &ObjectKey,
) -> Result<Api<DynamicObject>> {
    match (resolved.namespaced, namespace) {
        (true, Some(ns)) => Ok(Api::namespaced_with(
            cluster.client.clone(),
            ns,
            &resolved.resource,
        )),
        (false, None) => Ok(Api::all_with(cluster.client.clone(), &resolved.resource)),
        (true, None) => Err(Error::InvalidObject {
            object: Box::new(key.clone()),
            problem: format!(
                "{} is namespaced, and the object names no namespace",
                resolved.resource.kind
            ),
        }),
        (false, Some(ns)) => Err(Error::InvalidObject {
            object: Box::new(key.clone()),
            problem: format!(
                "{} is cluster-scoped, and the object names namespace `{ns}`",
                resolved.resource.kind
            ),
        }),
    }
}

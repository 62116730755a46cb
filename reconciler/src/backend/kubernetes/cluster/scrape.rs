//! Scraping pods: GETting a path from every running pod of a selector through the
//! API server's pod proxy.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::error::request_error;
use super::{Clusters, Error, Result};

impl Clusters {
    /// GETs `path` from every running pod matching the label `selector` in
    /// `namespace`, through the API server's pod proxy
    /// (`pods/<pod>:<port>/proxy/<path>`), all pods at once: `(pod, body)` per pod,
    /// by pod name. A pod that doesn't answer is an error naming it.
    pub async fn scrape(
        &self,
        context: Option<&str>,
        namespace: &str,
        selector: &str,
        port: u16,
        path: &str,
    ) -> Result<Vec<(String, String)>> {
        let cluster = self.cluster(context).await?;
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                request_error(
                    &cluster,
                    "list",
                    format!("pods matching `{selector}` in namespace `{namespace}`"),
                    e,
                )
            })?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        let path = path.trim_start_matches('/');
        let answers = futures::future::join_all(names.into_iter().map(|pod| {
            let cluster = &cluster;
            async move {
                let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path}");
                let request =
                    http::Request::get(&uri)
                        .body(Vec::new())
                        .map_err(|e| Error::Api {
                            action: "proxy",
                            what: uri.clone(),
                            code: 400,
                            reason: "BadRequest".into(),
                            message: e.to_string(),
                        })?;
                match cluster.client.request_text(request).await {
                    Ok(body) => Ok((pod, body)),
                    Err(e) => Err(request_error(
                        cluster,
                        "proxy",
                        format!("GET /{path} of pod `{pod}` in namespace `{namespace}`"),
                        e,
                    )),
                }
            }
        }))
        .await;
        answers.into_iter().collect()
    }
}

//! The rollout engine's handle on an endpoint's traffic on Kubernetes: [`KubeTraffic`]
//! implements [`Traffic`] over a [`KubeTarget`].
//!
//! This module owns how weights become objects and how gates read pods:
//! - **Weights** go on the object that carries the endpoint's traffic: the Gateway API
//!   `HTTPRoute` (its `backendRefs` weights, any split) when the compute declares a
//!   gateway, else the endpoint's `Service` (its selector: all traffic to one revision,
//!   0/100 only). Either is server-side applied with force (field manager `cairn`).
//! - **Readiness** is the revision's Deployment status (observed generation, available
//!   replicas).
//! - **Stats** come from Prometheus when the rollout names one
//!   (`[endpoint.<name>.rollout.metrics]`, [`super::prometheus`]), for any serving
//!   image. Otherwise (the zero-configuration default) they are the revision's pods'
//!   `/metrics` (the Prometheus text `cairn serve` writes), read through the API
//!   server's proxy and added up over the pods. Each pod is read on its own
//!   (`pods/<pod>:<port>/proxy/metrics`) rather than through the Service proxy, which
//!   answers from one pod picked at random: cumulative counters read that way would
//!   jump between pods.
//!
//! Backends are named by their revision's Service (= Deployment) name,
//! `<endpoint>-<deployment>-<revision>`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::objects::{LABEL_DEPLOYMENT, LABEL_DEPLOYMENT_REVISION};
use super::prometheus::Prometheus;
use super::{ClusterApi, KubeObject, ObjectKey};
use crate::rollout::{Stats, Traffic, TrafficError, Weights};
use crate::rollout_metrics::{MetricsValue, Revision};

/// One revision the route can send traffic to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBackend {
    /// Its pods' labels (its Service's selector).
    pub selector: BTreeMap<String, String>,
}

/// An endpoint's traffic on a cluster, for one rollout.
#[derive(Debug, Clone)]
pub struct KubeRoute {
    /// The object carrying the traffic as the plan rendered it (an `HTTPRoute`, or the
    /// endpoint's `Service`): each change rewrites its weights or selector and applies
    /// the rest unchanged.
    pub object: KubeObject,
    /// Service name → backend.
    pub backends: BTreeMap<String, ServiceBackend>,
    /// The port the endpoint's Services and route send traffic to.
    pub port: u16,
    /// The pods' port the gates read `/metrics` from: the server's, or with `auth` the
    /// pod's `cairn pod-proxy` (the only port its NetworkPolicy admits).
    pub metrics_port: u16,
    /// The endpoint's name (what gate queries know as `endpoint`).
    pub endpoint: String,
    /// Where the gates read instead of the pods' `/metrics`.
    pub metrics: Option<MetricsValue>,
}

impl KubeRoute {
    /// Whether weights are set on an `HTTPRoute` (any split) rather than a Service
    /// selector (0/100 only).
    pub fn weighted(&self) -> bool {
        self.object.kind == "HTTPRoute"
    }

    /// The weights an object of this route sends: an `HTTPRoute`'s backend weights
    /// (a backend without one weighs 1, as the Gateway API says), or 100 for the
    /// backend whose selector a Service has (none when it selects something else).
    pub fn weights_of(&self, object: &Value) -> Weights {
        if self.weighted() {
            let refs = object
                .pointer("/spec/rules/0/backendRefs")
                .and_then(Value::as_array);
            let mut weights: Weights = refs
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let name = r["name"].as_str()?;
                    let weight = r["weight"].as_u64().unwrap_or(1);
                    Some((name.to_string(), weight.min(100) as u32))
                })
                .collect();
            // Gateway API weights are relative: make them percentages.
            let total: u32 = weights.values().sum();
            if total > 0 && total != 100 {
                for w in weights.values_mut() {
                    *w = (*w * 100 + total / 2) / total;
                }
            }
            weights
        } else {
            let selector = selector_of(object);
            self.backends
                .iter()
                .filter(|(_, b)| b.selector == selector)
                .map(|(name, _)| (name.clone(), 100))
                .collect()
        }
    }

    /// The backend a Service selector names, from its deployment and revision labels:
    /// the previous revision, whose Service the plan is about to delete.
    pub fn backend_of_selector(
        endpoint: &str,
        selector: &BTreeMap<String, String>,
    ) -> Option<String> {
        let deployment = selector.get(LABEL_DEPLOYMENT)?;
        let revision = selector.get(LABEL_DEPLOYMENT_REVISION)?;
        Some(super::revision_object_name(endpoint, deployment, revision))
    }

    fn key(&self, kind: &str, name: &str) -> ObjectKey {
        let group = if kind == "Deployment" { "apps" } else { "" };
        ObjectKey {
            context: self.object.context.clone(),
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: self.object.namespace.clone(),
            name: name.to_string(),
        }
    }

    fn namespace(&self) -> &str {
        self.object.namespace.as_deref().unwrap_or("default")
    }
}

/// [`Traffic`] for one endpoint on a cluster.
pub struct KubeTraffic<'a> {
    target: &'a dyn ClusterApi,
    route: KubeRoute,
    /// The mirror in force: (backend, percent).
    mirror: Mutex<Option<(String, u32)>>,
    /// The weights in force, so a mirror change keeps them.
    weights: Mutex<Weights>,
    /// The gates' Prometheus, when the rollout names one (or why it can't be used).
    prometheus: Option<Result<Prometheus, String>>,
}

impl<'a> KubeTraffic<'a> {
    /// `weights` are the ones in force now.
    pub fn new(target: &'a dyn ClusterApi, route: KubeRoute, weights: Weights) -> Self {
        let prometheus = route
            .metrics
            .clone()
            .map(|m| Prometheus::new(m).map_err(|e| e.to_string()));
        KubeTraffic {
            target,
            route,
            mirror: Mutex::new(None),
            weights: Mutex::new(weights),
            prometheus,
        }
    }

    fn backend(&self, name: &str) -> Result<&ServiceBackend, String> {
        self.route.backends.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.route.backends.keys().map(String::as_str).collect();
            format!(
                "`{name}` is not a backend of {} (backends: {})",
                describe(&self.route.object),
                known.join(", ")
            )
        })
    }

    /// The traffic object with these weights and mirror.
    fn object_with(
        &self,
        weights: &Weights,
        mirror: Option<&(String, u32)>,
    ) -> Result<KubeObject, String> {
        let mut object = self.route.object.clone();
        let port = self.route.port;
        if self.route.weighted() {
            // The backends named in `weights` (zeros included), in name order.
            let refs: Vec<Value> = weights
                .iter()
                .map(|(name, weight)| {
                    self.backend(name)?;
                    Ok(json!({"name": name, "port": port, "weight": weight}))
                })
                .collect::<Result<_, String>>()?;
            let what = describe(&object);
            let rule = object
                .value
                .pointer_mut("/spec/rules/0")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| format!("{what} has no rule to weigh"))?;
            rule.insert("backendRefs".into(), Value::Array(refs));
            match mirror {
                Some((name, percent)) => {
                    self.backend(name)?;
                    rule.insert(
                        "filters".into(),
                        json!([{
                            "type": "RequestMirror",
                            "requestMirror": {
                                "backendRef": {"name": name, "port": port},
                                "percent": percent,
                            },
                        }]),
                    );
                }
                None => {
                    rule.remove("filters");
                }
            }
        } else {
            if mirror.is_some() {
                return Err(MIRROR_NEEDS_GATEWAY.to_string());
            }
            let serving: Vec<(&String, &u32)> = weights.iter().filter(|(_, w)| **w > 0).collect();
            let name = match serving.as_slice() {
                [(name, 100)] => *name,
                _ => {
                    return Err(format!(
                        "without a gateway, traffic moves 0/100 by the Service selector; it cannot be split as {}",
                        crate::rollout::describe_weights(weights)
                    ))
                }
            };
            let selector = &self.backend(name)?.selector;
            object.value["spec"]["selector"] = json!(selector);
        }
        Ok(object)
    }

    async fn put(&self, object: KubeObject) -> Result<(), String> {
        let what = describe(&object);
        self.target
            .apply(&[object], true, &Default::default())
            .await
            .map_err(|e| format!("applying {what}: {}", crate::diagnostics::error_chain(&e)))
    }
}

/// Why a route's gateway refused it, from its `status.parents`: a parent whose
/// `Accepted` or `ResolvedRefs` condition is false for the route's current generation.
/// None while no gateway has written status, or when every parent accepted it.
pub fn route_refusal(route: &Value) -> Option<String> {
    let generation = route
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let parents = route.pointer("/status/parents")?.as_array()?;
    parents.iter().find_map(|parent| {
        let gateway = parent
            .pointer("/parentRef/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        parent
            .get("conditions")?
            .as_array()?
            .iter()
            .filter(|c| {
                let observed = c.get("observedGeneration").and_then(Value::as_i64);
                observed.is_none() || generation.is_none() || observed >= generation
            })
            .find(|c| {
                matches!(
                    c.get("type").and_then(Value::as_str),
                    Some("Accepted" | "ResolvedRefs")
                ) && c.get("status").and_then(Value::as_str) == Some("False")
            })
            .map(|c| {
                let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
                format!(
                    "gateway `{gateway}`: {} is False ({}: {})",
                    text("type"),
                    text("reason"),
                    text("message")
                )
            })
    })
}

/// A Service's pod selector (empty when it has none).
pub fn selector_of(service: &Value) -> BTreeMap<String, String> {
    service
        .pointer("/spec/selector")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

fn describe(object: &KubeObject) -> String {
    match &object.namespace {
        Some(ns) => format!("{} {ns}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

/// Why a Service selector can't mirror.
const MIRROR_NEEDS_GATEWAY: &str =
    "mirroring needs a gateway (an HTTPRoute RequestMirror filter); a Service selector can't copy requests";

#[async_trait]
impl Traffic for KubeTraffic<'_> {
    async fn set_weights(&self, weights: &Weights) -> Result<(), TrafficError> {
        let mirror = self.mirror.lock().expect("mirror lock").clone();
        let object = self
            .object_with(weights, mirror.as_ref())
            .map_err(TrafficError::Refused)?;
        let (kind, api_version) = (object.kind.clone(), object.api_version.clone());
        self.put(object).await.map_err(TrafficError::Refused)?;
        *self.weights.lock().expect("weights lock") = weights.clone();
        if kind == "HTTPRoute" {
            // A route its gateway refused carries no traffic: say why now, rather
            // than after a step that saw nothing.
            let key = self.route.key("HTTPRoute", &self.route.object.name);
            let live = self.target.get(&key, &api_version).await.map_err(|e| {
                TrafficError::Unavailable(format!(
                    "reading {key}: {}",
                    crate::diagnostics::error_chain(&e)
                ))
            })?;
            if let Some(refusal) = live.as_ref().and_then(route_refusal) {
                return Err(TrafficError::Refused(format!(
                    "the gateway did not accept {key}: {refusal}"
                )));
            }
        }
        Ok(())
    }

    async fn ready(&self, deployment: &str) -> Result<bool, TrafficError> {
        self.backend(deployment).map_err(TrafficError::Refused)?;
        let key = self.route.key("Deployment", deployment);
        let live = self.target.get(&key, "apps/v1").await.map_err(|e| {
            TrafficError::Unavailable(format!(
                "reading {key}: {}",
                crate::diagnostics::error_chain(&e)
            ))
        })?;
        let Some(live) = live else { return Ok(false) };
        let n = |p: &str| live.pointer(p).and_then(Value::as_i64);
        let generation = n("/metadata/generation").unwrap_or(0);
        let observed = n("/status/observedGeneration").unwrap_or(0);
        let replicas = n("/spec/replicas").unwrap_or(1);
        let available = n("/status/availableReplicas").unwrap_or(0);
        Ok(observed >= generation && available >= replicas)
    }

    async fn stats(&self, deployment: &str) -> Result<Stats, TrafficError> {
        let backend = self.backend(deployment).map_err(TrafficError::Refused)?;
        if let Some(prometheus) = &self.prometheus {
            let prometheus = prometheus
                .as_ref()
                .map_err(|e| TrafficError::Unavailable(e.clone()))?;
            let revision = Revision {
                namespace: self.route.namespace(),
                endpoint: &self.route.endpoint,
                service: deployment,
            };
            return prometheus
                .stats(&revision)
                .await
                .map_err(|e| TrafficError::Unavailable(e.to_string()));
        }
        let selector: Vec<String> = backend
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let pods = self
            .target
            .scrape(
                self.route.object.context.as_deref(),
                self.route.namespace(),
                &selector.join(","),
                self.route.metrics_port,
                "/metrics",
            )
            .await
            .map_err(|e| TrafficError::Unavailable(explained(&e)))?;
        let mut total = Stats::default();
        for (pod, text) in &pods {
            let stats = parse_metrics(text).map_err(|e| {
                TrafficError::Unavailable(format!("the /metrics of pod `{pod}`: {e}"))
            })?;
            add(&mut total, &stats);
        }
        Ok(total)
    }

    async fn set_mirror(&self, mirror: Option<(&str, u32)>) -> Result<(), TrafficError> {
        let mirror = mirror.map(|(name, percent)| (name.to_string(), percent));
        if !self.route.weighted() && mirror.is_some() {
            return Err(TrafficError::Unsupported(MIRROR_NEEDS_GATEWAY.to_string()));
        }
        let weights = self.weights.lock().expect("weights lock").clone();
        if self.route.weighted() {
            let object = self
                .object_with(&weights, mirror.as_ref())
                .map_err(TrafficError::Refused)?;
            self.put(object).await.map_err(TrafficError::Refused)?;
        }
        *self.mirror.lock().expect("mirror lock") = mirror;
        Ok(())
    }
}

/// An error as the report shows it; a permission RBAC refused comes with its hint (the
/// verb and resource to grant, and where Cairn's roles are), since a gate that can't
/// read the pods is a setup problem, not a bad revision.
fn explained(e: &super::ClusterError) -> String {
    let chain = crate::diagnostics::error_chain(e);
    match (e, e.hint()) {
        (super::ClusterError::Api { code: 403, .. }, Some(hint)) => {
            format!("{chain}; hint: {hint}")
        }
        _ => chain,
    }
}

/// Adds one pod's counters to the total (histogram buckets by bound).
fn add(total: &mut Stats, pod: &Stats) {
    total.requests += pod.requests;
    total.errors += pod.errors;
    for (le, count) in &pod.latency {
        match total.latency.iter_mut().find(|(bound, _)| bound == le) {
            Some((_, c)) => *c += count,
            None => total.latency.push((*le, *count)),
        }
    }
    total
        .latency
        .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
}

/// Reads what the gates need from `cairn serve`'s `/metrics`: requests (every
/// `cairn_requests_total` code), errors (5xx answers, as the local router counts them)
/// and the `cairn_request_duration_seconds` histogram.
pub fn parse_metrics(text: &str) -> Result<Stats, String> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("not Prometheus text: {e}"))?;
    let mut stats = Stats::default();
    let mut seen = false;
    for sample in &scrape.samples {
        match (sample.metric.as_str(), &sample.value) {
            ("cairn_requests_total", prometheus_parse::Value::Counter(n))
            | ("cairn_requests_total", prometheus_parse::Value::Untyped(n)) => {
                seen = true;
                let n = *n as u64;
                stats.requests += n;
                if sample
                    .labels
                    .get("code")
                    .is_some_and(|c| c.starts_with('5'))
                {
                    stats.errors += n;
                }
            }
            ("cairn_request_duration_seconds", prometheus_parse::Value::Histogram(buckets)) => {
                stats.latency = buckets
                    .iter()
                    .map(|b| (b.less_than, b.count as u64))
                    .collect();
            }
            _ => {}
        }
    }
    if !seen {
        return Err("it has no `cairn_requests_total` (is this `cairn serve`?)".into());
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP cairn_requests_total Prediction requests.
# TYPE cairn_requests_total counter
cairn_requests_total{code=\"200\"} 90
cairn_requests_total{code=\"400\"} 4
cairn_requests_total{code=\"503\"} 6
# TYPE cairn_request_errors_total counter
cairn_request_errors_total 10
# TYPE cairn_request_duration_seconds histogram
cairn_request_duration_seconds_bucket{le=\"0.01\"} 50
cairn_request_duration_seconds_bucket{le=\"0.1\"} 95
cairn_request_duration_seconds_bucket{le=\"+Inf\"} 100
cairn_request_duration_seconds_sum 2.5
cairn_request_duration_seconds_count 100
";

    #[test]
    fn a_refused_route_says_which_gateway_and_why() {
        let route = serde_json::json!({
            "metadata": {"generation": 3},
            "status": {"parents": [{
                "parentRef": {"name": "radiology-gw"},
                "conditions": [
                    {"type": "Accepted", "status": "False", "observedGeneration": 3,
                     "reason": "NotAllowedByListeners", "message": "no listener allows this namespace"},
                ],
            }]},
        });
        assert_eq!(
            route_refusal(&route).as_deref(),
            Some("gateway `radiology-gw`: Accepted is False (NotAllowedByListeners: no listener allows this namespace)")
        );
        // Status about an older generation says nothing about this one.
        let mut stale = route.clone();
        stale["metadata"]["generation"] = 4.into();
        assert_eq!(route_refusal(&stale), None);
        assert_eq!(route_refusal(&serde_json::json!({"metadata": {}})), None);
    }

    #[test]
    fn reads_cairn_serve_metrics() {
        let stats = parse_metrics(METRICS).unwrap();
        assert_eq!((stats.requests, stats.errors), (100, 6));
        assert_eq!(
            stats.latency,
            vec![(0.01, 50), (0.1, 95), (f64::INFINITY, 100)]
        );
        assert!(parse_metrics("up 1\n")
            .unwrap_err()
            .contains("cairn_requests_total"));
    }

    #[test]
    fn pods_add_up_by_bucket() {
        let mut total = Stats::default();
        let pod = parse_metrics(METRICS).unwrap();
        add(&mut total, &pod);
        add(&mut total, &pod);
        assert_eq!((total.requests, total.errors), (200, 12));
        assert_eq!(total.latency[1], (0.1, 190));
    }
}

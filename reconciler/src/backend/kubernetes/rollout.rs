//! Rolling an endpoint out on Kubernetes: the rollout engine ([`crate::serving::walk`])
//! moves traffic on the endpoint's HTTPRoute weights (or, without a gateway, its
//! Service selector), gated by the revisions' metrics ([`super::traffic`]); a failed gate
//! puts the route back and deletes the revisions the change started.

use std::collections::BTreeMap;

use serde_json::Value;

use super::compute::KubeCompute;
use super::plan::ObjectChangeExt as _;
use super::traffic::{selector_of, KubeRoute, KubeTraffic, ServiceBackend};
use super::{ClusterApi, ClusterError, ObjectKey, LABEL_DEPLOYMENT_REVISION};
use crate::backend::rollout_log::RolloutLog;
use crate::backend::target::ApplyContext;
use crate::diagnostics::error_chain;
use crate::plan::{plural, Action, ObjectChange, ResourceChange};
use crate::rollout::{RolloutEvent, Traffic as _, Weights};
use crate::rollout_metrics::MetricsValue;
use crate::serving::{self, EndpointValue};

impl KubeCompute {
    /// Moves an endpoint's traffic on Kubernetes by its rollout policy. On a failed gate
    /// (traffic is back where it was) the revisions this change started are deleted
    /// again, and the error says why.
    pub(super) async fn kube_rollout(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
        kube: &dyn ClusterApi,
        moving: KubeRollout,
        events: &mut Vec<Value>,
    ) -> Result<String, String> {
        let KubeRollout {
            route,
            from,
            to,
            started,
            ..
        } = moving;
        let value: EndpointValue = change
            .after
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or("the plan's endpoint value is malformed")?;
        let mut policy = value.rollout.policy();
        if !route.weighted() {
            // A Service selector moves everything at once; the plan said so.
            policy.steps = vec![100];
            policy.mirror = None;
        }
        let weighted = route.weighted();
        let names: Vec<String> = route.backends.keys().cloned().collect();
        let full = |w: &Weights| {
            let mut w = w.clone();
            for name in &names {
                w.entry(name.clone()).or_insert(0);
            }
            w
        };
        let live = from.clone();
        let (from, to) = (full(&from), full(&to));
        let traffic = KubeTraffic::new(kube, route, from.clone());
        let address = change.address.as_str();
        let log = RolloutLog::new(cx.events, address);
        let on_event = |event: RolloutEvent| log.record(event);
        cx.events.note(
            address,
            &format!(
                "rolling out {} → {} by the {}",
                crate::rollout::describe_weights(&from),
                crate::rollout::describe_weights(&to),
                if weighted {
                    "HTTPRoute's weights"
                } else {
                    "Service selector (0/100)"
                }
            ),
        );
        let outcome = serving::walk(&traffic, &from, &to, &policy, &on_event).await;
        events.extend(log.into_events());
        let failure = match outcome {
            Ok(weights) => {
                return Ok(format!(
                    "promoted: {}",
                    crate::rollout::describe_weights(&weights)
                ))
            }
            Err(e @ serving::Error::Halted { .. }) => return Err(e.to_string()),
            Err(e) => e,
        };
        // Traffic is back on the previous revisions: the route names only those again,
        // and the revisions this change started are deleted.
        if let Err(e) = traffic.set_weights(&live).await {
            return Err(format!("{failure}; restoring the route: {e}"));
        }
        if !started.is_empty() {
            cx.events.note(
                address,
                &format!(
                    "deleting the {} this rollout started",
                    plural(started.len(), "object")
                ),
            );
            if let Err(e) = kube.delete(&change.workspace, &started).await {
                return Err(format!("{failure}; {}", failed("deleting them", e)));
            }
        }
        Err(failure.to_string())
    }
}

pub(super) fn failed(what: &str, e: ClusterError) -> String {
    format!("{what}: {}", error_chain(&e))
}

/// An endpoint's traffic move on Kubernetes, as found before it starts.
pub(super) struct KubeRollout {
    /// The object that carries the traffic (HTTPRoute or the endpoint's Service).
    pub route_key: ObjectKey,
    route: KubeRoute,
    /// Live weights now, and the declared ones.
    from: Weights,
    to: Weights,
    /// The revisions (Deployments, autoscalers and Services) this change creates, deleted again if
    /// the rollout fails.
    started: Vec<(ObjectKey, String)>,
}

/// Finds the traffic move of an endpoint change: its HTTPRoute (or, without a gateway,
/// its Service) as live and as desired. `None` when nothing serves yet or traffic
/// doesn't move (a plain apply does then).
pub(super) async fn kube_route(
    change: &ResourceChange,
    kube: &dyn ClusterApi,
    rest: &[&ObjectChange],
    deletes: &[&ObjectChange],
) -> Result<Option<KubeRollout>, String> {
    let labels = |o: &ObjectChange| -> BTreeMap<String, String> {
        o.object
            .as_ref()
            .and_then(|v| v.pointer("/metadata/labels").cloned())
            .and_then(|l| serde_json::from_value(l).ok())
            .unwrap_or_default()
    };
    let is_revision = |o: &ObjectChange| labels(o).contains_key(LABEL_DEPLOYMENT_REVISION);
    let traffic = rest.iter().find(|o| o.kind == "HTTPRoute").or_else(|| {
        rest.iter()
            .find(|o| o.kind == "Service" && o.name == change.name && !is_revision(o))
    });
    let Some(traffic) = traffic else {
        return Ok(None);
    };
    let Some(object) = traffic.desired() else {
        return Ok(None);
    };
    let key = traffic.key();
    let Some(live) = kube
        .get(&key, &traffic.api_version)
        .await
        .map_err(|e| failed(&format!("reading {}", traffic.describe()), e))?
    else {
        return Ok(None);
    };
    let mut backends: BTreeMap<String, ServiceBackend> = rest
        .iter()
        .filter(|o| o.kind == "Service" && is_revision(o))
        .filter_map(|o| {
            let selector = selector_of(o.object.as_ref()?);
            Some((o.name.clone(), ServiceBackend { selector }))
        })
        .collect();
    // Revisions serving now that the plan deletes: their live Services say which pods.
    for o in deletes.iter().filter(|o| o.kind == "Service") {
        if let Ok(Some(service)) = kube.get(&o.key(), &o.api_version).await {
            backends.insert(
                o.name.clone(),
                ServiceBackend {
                    selector: selector_of(&service),
                },
            );
        }
    }
    let port = change
        .after
        .as_ref()
        .and_then(|v| v["port"].as_u64())
        .map_or(crate::backend::kubernetes::DEFAULT_PORT, |p| p as u16);
    let authenticated = change
        .after
        .as_ref()
        .and_then(|v| v["auth"].as_str())
        .is_some_and(|a| a != "none");
    let metrics_port = if authenticated {
        super::containers::pod_proxy_port(port)
    } else {
        port
    };
    let metrics = change
        .after
        .as_ref()
        .and_then(|v| v.pointer("/rollout/metrics").cloned())
        .map(serde_json::from_value::<MetricsValue>)
        .transpose()
        .map_err(|e| format!("the plan's rollout metrics are malformed: {e}"))?;
    let mut route = KubeRoute {
        object,
        backends,
        port,
        metrics_port,
        endpoint: change.name.clone(),
        metrics,
    };
    if route.weighted() {
        // Backends the route names now or will name whose Services this change leaves
        // alone: their live Services say which pods.
        let named: Vec<String> = route
            .weights_of(&live)
            .into_keys()
            .chain(route.weights_of(&route.object.value).into_keys())
            .filter(|n| !route.backends.contains_key(n))
            .collect();
        for name in named {
            let service_key = ObjectKey {
                kind: "Service".into(),
                group: String::new(),
                name: name.clone(),
                ..key.clone()
            };
            let selector = kube
                .get(&service_key, "v1")
                .await
                .ok()
                .flatten()
                .map(|s| selector_of(&s))
                .unwrap_or_default();
            route.backends.insert(name, ServiceBackend { selector });
        }
    } else {
        // The revisions the live and the desired selectors pick, even where no Service
        // of this change names them.
        for selector in [selector_of(&live), selector_of(&route.object.value)] {
            if route.backends.values().any(|b| b.selector == selector) {
                continue;
            }
            if let Some(name) = KubeRoute::backend_of_selector(&change.name, &selector) {
                route.backends.insert(name, ServiceBackend { selector });
            }
        }
    }
    let from = route.weights_of(&live);
    let to = route.weights_of(&route.object.value);
    let positive = |w: &Weights| -> Weights {
        w.iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    if positive(&from).is_empty() || positive(&to).is_empty() || positive(&from) == positive(&to) {
        return Ok(None);
    }
    // The revisions this change creates (Deployments, their autoscalers and Services).
    let started = change
        .objects
        .iter()
        .filter(|o| o.action == Action::Create)
        .filter(|o| {
            matches!(o.kind.as_str(), "Deployment" | "HorizontalPodAutoscaler")
                || (o.kind == "Service" && is_revision(o))
        })
        .map(|o| (o.key(), o.api_version.clone()))
        .collect();
    Ok(Some(KubeRollout {
        route_key: key,
        route,
        from,
        to,
        started,
    }))
}

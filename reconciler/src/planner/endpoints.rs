//! Endpoints: each deployment resolved to a model version and revision, compared with
//! what the state recorded and what serves now ([`crate::serving::decide`]); a rollout
//! shaped by the endpoint's compute target.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{assumed_live, change, Error, Planner, Result, Versions};
use crate::address::{Address, Kind, Reference};
use crate::backend::store::Store;
use crate::backend::target::{EndpointRollout, Observed};
use crate::desired::Resource;
use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::manifest::Spec;
use crate::plan::{Action, ResourceChange};
use crate::rollout_metrics::MetricsValue;
use crate::serving::{self, Decision, DeploymentValue, EndpointValue, RolloutValue};

impl Planner<'_> {
    /// An endpoint: its deployments resolved to model versions, compared with what the
    /// state recorded and what serves now.
    pub(super) async fn endpoint(
        &self,
        resource: &Resource,
        store: &Store,
        before: Option<Value>,
        versions: &Versions,
        diagnostics: &mut Diagnostics,
    ) -> Result<Option<ResourceChange>> {
        let Spec::Endpoint(spec) = &resource.spec else {
            unreachable!()
        };
        let ws = resource.address.workspace.as_str();
        let Some(compute) = self.compute_of(resource, spec.compute.get_ref()) else {
            return Ok(None);
        };
        let Some(target) = self.targets.for_compute(compute) else {
            // The compute's own change says its target is missing.
            return Ok(None);
        };
        let mut deployments = BTreeMap::new();
        for (name, d) in &spec.deployments {
            let d = d.get_ref();
            let Ok(r) = Reference::parse(d.model.get_ref()) else {
                continue;
            };
            let model = Address::new(ws, Kind::Model, r.name.clone());
            let (version, pinned) = match &r.pin {
                Some(pin) => {
                    let known = versions.get(&model) == Some(pin)
                        || store
                            .has_model_version(&r.name, pin)
                            .await
                            .map_err(|source| Error::Store {
                                workspace: ws.to_string(),
                                source,
                            })?;
                    if !known {
                        diagnostics.push(
                            Diagnostic::error(
                                "model-version",
                                format!(
                                    "{} serves model.{}@{pin}, which is not in the store",
                                    resource.address.local(),
                                    r.name
                                ),
                            )
                            .at(self.loc(resource, d.model.span()))
                            .help("pin a version that exists (`cairn status` lists the current one), or drop the pin to follow the newest"),
                        );
                    }
                    (pin.clone(), true)
                }
                None => (
                    versions
                        .get(&model)
                        .cloned()
                        .unwrap_or_else(|| "unknown".into()),
                    false,
                ),
            };
            deployments.insert(
                name.get_ref().clone(),
                DeploymentValue {
                    model: r.name.clone(),
                    revision: serving::deployment_revision(&version, d),
                    version,
                    pinned,
                    replicas: d.replicas(),
                    autoscale: d.autoscale().cloned(),
                    env: d.env.clone(),
                    command: d.command(),
                    health: d.health.as_ref().map(|h| h.get_ref().clone()),
                    promote_if: if pinned {
                        Vec::new()
                    } else {
                        self.model_gates(&model)
                    },
                },
            );
        }
        let rollout = match &spec.rollout {
            Some(r) => {
                let r = r.get_ref();
                RolloutValue {
                    steps: r.steps.get_ref().clone(),
                    step_wait: r
                        .step_wait
                        .as_ref()
                        .map_or_else(|| "30s".to_string(), |d| d.to_string()),
                    max_error_rate: r.max_error_rate.as_ref().map(|v| *v.get_ref()),
                    max_p99_ms: r.max_p99_ms.as_ref().map(|v| *v.get_ref()),
                    min_requests: r.min_requests.as_ref().map(|v| *v.get_ref()),
                    auto_rollback: r.auto_rollback,
                    mirror: r.mirror.as_ref().map(|m| *m.get_ref()),
                    scale_down_delay: r.scale_down_delay.as_ref().map_or_else(
                        || {
                            humantime::format_duration(serving::DEFAULT_SCALE_DOWN_DELAY)
                                .to_string()
                        },
                        |d| d.to_string(),
                    ),
                    metrics: r
                        .metrics
                        .as_ref()
                        .and_then(|m| MetricsValue::of(m.get_ref())),
                }
            }
            None => RolloutValue::immediate(),
        };
        let after = EndpointValue {
            compute: spec.compute.get_ref().clone(),
            target: target.name().to_string(),
            port: spec.port.as_ref().map(|p| *p.get_ref()),
            auth: serde_json::to_value(spec.auth)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_else(|| "key".into()),
            traffic: spec.weights().map(|(n, w)| (n.to_string(), w)).collect(),
            mirror: spec.mirror.as_ref().and_then(|m| {
                m.get_ref()
                    .iter()
                    .next()
                    .map(|(n, p)| serving::MirrorValue {
                        deployment: n.get_ref().clone(),
                        percent: *p.get_ref(),
                    })
            }),
            deployments,
            rollout,
            promote_if: spec
                .promote_if
                .as_ref()
                .map(|c| c.get_ref().iter().map(|s| s.get_ref().clone()).collect())
                .unwrap_or_default(),
            monitor: spec.monitor.as_ref().map(|m| {
                let m = m.get_ref();
                crate::plan::endpoint::MonitorValue {
                    sample: *m.sample.get_ref(),
                    max_psi: m.max_psi(),
                    max_capture: m.max_capture_bytes(),
                }
            }),
        };
        let before_value: Option<EndpointValue> = before
            .as_ref()
            .and_then(|b| serde_json::from_value(b.clone()).ok());
        self.known_metrics(resource, spec, store, before_value.as_ref(), diagnostics)
            .await;
        let address = resource.address.to_string();
        let observed;
        let live = match target.live_endpoint(&address) {
            Observed::Live(live) => live,
            Observed::Unknown => {
                // Not observed: assume what the state recorded still serves.
                observed = before_value.as_ref().map(assumed_live);
                observed.as_ref()
            }
        };
        let after_json = serde_json::to_value(&after).expect("endpoint values serialize");
        let mut rollout_plan = None;
        let (action, reason) = match serving::decide(before_value.as_ref(), &after, live) {
            Decision::NoOp => (Action::NoOp, "up to date".to_string()),
            Decision::Create(reason) => (Action::Create, reason),
            Decision::Update(reason) => (Action::Update, reason),
            Decision::Rollout(reason, mut plan) => {
                let reason = match metric_change(store, before_value.as_ref(), &after).await {
                    Some(delta) => format!("{reason}; {delta}"),
                    None => reason,
                };
                target.shape_rollout(
                    &EndpointRollout {
                        address: &resource.address,
                        compute,
                        compute_ref: spec.compute.get_ref(),
                        after: &after,
                        live,
                    },
                    &mut plan,
                );
                rollout_plan = Some(plan);
                (Action::Rollout, reason)
            }
        };
        let mut c = change(resource, action, reason, before, Some(after_json));
        c.rollout = rollout_plan;
        c.target = Some(target.name().to_string());
        Ok(Some(c))
    }

    /// A model's own `promote_if` conditions, as written.
    fn model_gates(&self, model: &Address) -> Vec<String> {
        match self.desired.get(model).map(|r| &r.spec) {
            Some(Spec::Model(m)) => m
                .promote_if
                .iter()
                .flat_map(|c| c.get_ref())
                .map(|c| c.get_ref().clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `promote_if` conditions naming a metric the serving model version does not
    /// record, caught now that a version with metrics exists.
    async fn known_metrics(
        &self,
        resource: &Resource,
        spec: &crate::manifest::EndpointSpec,
        store: &Store,
        before: Option<&EndpointValue>,
        diagnostics: &mut Diagnostics,
    ) {
        let Some(conditions) = &spec.promote_if else {
            return;
        };
        let Some(before) = before else { return };
        let Some((_, serving)) = before
            .deployments
            .iter()
            .find(|(name, _)| before.traffic.get(*name).copied().unwrap_or(0) > 0)
        else {
            return;
        };
        let Ok(Some(record)) = store.model_version(&serving.model, &serving.version).await else {
            return;
        };
        let Some(Value::Object(metrics)) = record.metrics else {
            return;
        };
        let known: Vec<&str> = metrics
            .iter()
            .filter(|(_, v)| v.is_number())
            .map(|(k, _)| k.as_str())
            .collect();
        for text in conditions.get_ref() {
            let Ok(condition) = crate::promotion::Condition::parse(text.get_ref()) else {
                continue;
            };
            let mut names = condition.metrics();
            names.dedup();
            for name in names {
                if known.contains(&name) {
                    continue;
                }
                diagnostics.push(
                    Diagnostic::error(
                        "unknown-metric",
                        format!(
                            "promote_if `{condition}` names `{name}`, which model.{}@{} (serving now) does not record",
                            serving.model, serving.version
                        ),
                    )
                    .at(self.loc(resource, text.span()))
                    .help(match crate::diagnostics::did_you_mean(name, known.iter().copied()) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!("its metrics: {}", known.join(", ")),
                    }),
                );
            }
        }
    }
}

/// How the metrics of each deployment's new model version compare with the version it
/// replaces (`auc 0.812 → 0.846`), when both are in the store with metrics: a version
/// trained earlier (on the pull request's branch, or pinned), not one this plan trains.
async fn metric_change(
    store: &Store,
    before: Option<&EndpointValue>,
    after: &EndpointValue,
) -> Option<String> {
    let before = before?;
    let metrics = |model: String, version: String| async move {
        store
            .model_version(&model, &version)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.metrics)
    };
    let mut lines = Vec::new();
    for (name, d) in &after.deployments {
        let Some(previous) = before.deployments.get(name) else {
            continue;
        };
        if previous.version == d.version {
            continue;
        }
        let Some(candidate) = metrics(d.model.clone(), d.version.clone()).await else {
            continue;
        };
        let Some(serving) = metrics(previous.model.clone(), previous.version.clone()).await else {
            continue;
        };
        let gates: Vec<crate::promotion::Condition> = after
            .gates_of(name)
            .iter()
            .filter_map(|c| crate::promotion::Condition::parse(c).ok())
            .collect();
        let gated: Vec<&str> = gates.iter().flat_map(|c| c.metrics()).collect();
        if let Some(delta) = crate::metric_delta::describe(&candidate, &serving, &gated) {
            lines.push((name.clone(), delta));
        }
    }
    match lines.as_slice() {
        [] => None,
        [(_, delta)] => Some(delta.clone()),
        _ => Some(
            lines
                .iter()
                .map(|(name, delta)| format!("{name}: {delta}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

//! The plan's side of an endpoint: whether applying its declared value creates, updates
//! or rolls it out ([`decide`]), worked out from how the declared endpoint lies over what
//! serves it ([`Layout`], which [`super::apply`] follows too, so that what a plan shows is
//! what an apply does).

use std::collections::{BTreeMap, BTreeSet};

use super::{canary_name, EndpointValue, LiveEndpoint, RolloutPlan, RolloutValue};
use crate::rollout::{self, describe_weights, Weights};

/// How the plan classifies an endpoint change.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    NoOp,
    Create(String),
    Update(String),
    Rollout(String, RolloutPlan),
}

/// Decides what applying `after` does, given what the state recorded (`before`) and what
/// is live (`live`, `None` when nothing serves).
///
/// Only `live` says where traffic is: a rollout that did not finish (its apply or the
/// target died) left its new revision under the temporary name with part of the traffic,
/// whatever the state recorded, and is planned again from there, resumed at that step.
pub fn decide(
    before: Option<&EndpointValue>,
    after: &EndpointValue,
    live: Option<&LiveEndpoint>,
) -> Decision {
    let Some(before) = before else {
        return Decision::Create(describe_new(after));
    };
    let Some(live) = live else {
        return Decision::Update(format!(
            "not serving: no router runs for it; apply starts {} again",
            describe_deployments(after)
        ));
    };
    let not_serving = (!live.serving).then(|| {
        format!(
            "not serving: {}",
            live.error.as_deref().unwrap_or("the router is down")
        )
    });
    let routed = live.weights.values().any(|w| *w > 0);
    if let (Some(why), false) = (&not_serving, routed) {
        return Decision::Update(format!(
            "{why}; apply starts {} again",
            describe_deployments(after)
        ));
    }
    let layout = Layout::of(after, Some(live));

    // Traffic moves when a deployment carrying traffic gets a new revision, or when the
    // traffic map changes.
    let mut why = Vec::new();
    if let Some(why_not) = &not_serving {
        why.push(why_not.clone());
    }
    for (name, d) in &after.deployments {
        let target = &layout.targets[name];
        if target == name {
            continue;
        }
        let live_rev = live.revision_of(name).unwrap_or("?");
        let old_version = before
            .deployments
            .get(name)
            .filter(|b| b.revision == live_rev)
            .map_or(live_rev, |b| b.version.as_str());
        let how = if d.pinned {
            "pinned"
        } else {
            "the newest version"
        };
        let at = match layout.resume_at {
            Some(p) if live.backends.contains_key(target) => format!(
                "an unfinished rollout left it at {p}% beside the running revision: walked again from there"
            ),
            _ => "started beside the running revision".to_string(),
        };
        why.push(format!(
            "{name}: model.{} {old_version} → {} ({how}), {at}",
            d.model, d.version
        ));
    }
    let live_split = live.deployment_weights();
    let mut declared_split = after.traffic.clone();
    declared_split.retain(|_, w| *w > 0);
    if live_split != declared_split {
        why.push(format!(
            "traffic {} → {}",
            describe_weights(&live_split),
            describe_weights(&declared_split)
        ));
    }
    if layout.moves() {
        let rollout = layout.rollout_value(&after.rollout);
        let steps: Vec<Weights> = effective_steps(&rollout.steps)
            .into_iter()
            .map(|s| rollout::interpolate(&layout.base, &layout.to, s))
            .collect();
        let mut summary = rollout.describe();
        let gates = after.gates(&layout.to);
        if !gates.is_empty() {
            summary.push_str(&format!("; promoted only if {}", gates.join(", ")));
        }
        if let Some(p) = layout.resume_at {
            summary = format!("resumed at {p}%: {summary}");
        }
        let plan = RolloutPlan {
            from: layout.from.clone(),
            to: layout.to.clone(),
            steps,
            step_wait: after.rollout.step_wait.clone(),
            max_error_rate: after.rollout.max_error_rate,
            max_p99_ms: after.rollout.max_p99_ms,
            auto_rollback: after.rollout.auto_rollback,
            summary,
        };
        return Decision::Rollout(why.join("; "), plan);
    }
    if let Some(why) = not_serving {
        return Decision::Update(format!(
            "{why}; apply starts {} again",
            describe_deployments(after)
        ));
    }

    // Anything else is changed in place.
    let mut changes = Vec::new();
    for (name, d) in &after.deployments {
        match live.backends.get(name) {
            None if d.replicas > 0 => changes.push(format!("{name}: new deployment")),
            Some(b) if b.revision != d.revision => changes.push(format!(
                "{name}: model.{} → {} (no traffic, replaced in place)",
                d.model, d.version
            )),
            Some(b) if !replicas_as_declared(d, b) => match &d.autoscale {
                None => changes.push(format!(
                    "{name}: {} → {} replicas ready",
                    b.ready_replicas, d.replicas
                )),
                Some(a) => changes.push(format!(
                    "{name}: {} of {} replicas ready, autoscaled {}–{}",
                    b.ready_replicas, b.replicas, a.min, a.max
                )),
            },
            _ => {}
        }
    }
    for (name, b) in &live.backends {
        let declared = after.deployments.contains_key(&b.deployment);
        if !declared && !name.contains('@') {
            changes.push(format!("{name}: no longer declared, stopped"));
        }
    }
    for (deployment, revision) in &layout.idle {
        changes.push(format!(
            "{deployment}@{revision}: runs, but nothing routes to it; stopped"
        ));
    }
    if live.port != after.port {
        changes.push(format!(
            "port {} → {}",
            live.port.map_or("none".into(), |p| p.to_string()),
            after.port.map_or("none".into(), |p| p.to_string())
        ));
    }
    if changes.is_empty() && live_split != declared_split {
        changes.push(format!("traffic → {}", describe_weights(&declared_split)));
    }
    if changes.is_empty() && before != after {
        let fields: Vec<String> = crate::plan::diff_values(
            serde_json::to_value(before).ok().as_ref(),
            serde_json::to_value(after).ok().as_ref(),
        )
        .into_iter()
        .map(|c| c.path)
        .collect();
        changes.push(format!("changed: {}", fields.join(", ")));
    }
    if changes.is_empty() {
        Decision::NoOp
    } else {
        Decision::Update(changes.join("; "))
    }
}

/// Steps as the engine walks them: positive, at most 100, ending at 100.
pub fn effective_steps(steps: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = steps
        .iter()
        .copied()
        .filter(|s| *s > 0 && *s <= 100)
        .collect();
    if out.last() != Some(&100) {
        out.push(100);
    }
    out
}

/// How the declared endpoint lies over what serves it: the one computation behind both
/// the plan ([`decide`]) and [`apply`], so that what a plan shows is what an apply does.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Layout {
    /// Declared deployment → its router backend name during the change: its own name when
    /// that backend already runs the declared revision or carries nothing, the temporary
    /// `name@revision` when that one runs it already (an unfinished rollout) or when the
    /// deployment's backend carries traffic on another revision.
    pub(super) targets: BTreeMap<String, String>,
    /// The live weights (backends about to be retired left out).
    pub(super) from: Weights,
    /// Where traffic would be had no rollout been left unfinished: the share of a revision
    /// under a temporary name is given back to its deployment's own backend. Rollouts
    /// interpolate from here and roll back to here, so a revision that never passed every
    /// gate is never what a rollback (or a skipped rollout) leaves serving.
    pub(super) base: Weights,
    /// The declared weights, by backend name.
    pub(super) to: Weights,
    /// How far (percent of the way from `base` to `to`) an unfinished rollout had moved
    /// traffic to the revisions it was rolling out, when it had moved any.
    pub(super) resume_at: Option<u32>,
    /// Backends that carry no traffic, would get none back on a rollback and whose
    /// revision isn't declared (old revisions kept after a promotion, revisions of failed
    /// rollouts): an apply retires them at once, before it routes anything, so that no
    /// route it writes depends on a revision that may be stopped under it.
    pub(super) superseded: Vec<(String, String, String)>,
    /// Revisions that run but that no backend names, and that aren't declared: stopped.
    pub(super) idle: Vec<(String, String)>,
}

impl Layout {
    pub(super) fn of(after: &EndpointValue, live: Option<&LiveEndpoint>) -> Layout {
        let declared = |deployment: &str, revision: &str| {
            after
                .deployments
                .get(deployment)
                .is_some_and(|d| d.revision == revision && d.replicas > 0)
        };
        let mut from = live.map(|l| l.weights.clone()).unwrap_or_default();
        let mut base = from.clone();
        if let Some(live) = live {
            for (name, b) in &live.backends {
                let weight = from.get(name).copied().unwrap_or(0);
                let own = live.backends.get(&b.deployment);
                if weight > 0
                    && name != &b.deployment
                    && own.is_some_and(|o| o.revision != b.revision)
                {
                    base.insert(name.clone(), 0);
                    *base.entry(b.deployment.clone()).or_default() += weight;
                }
            }
        }
        let weight = |w: &Weights, name: &str| w.get(name).copied().unwrap_or(0);
        let targets: BTreeMap<String, String> = after
            .deployments
            .iter()
            .map(|(name, d)| {
                let runs = |backend: &str| {
                    live.and_then(|l| l.backends.get(backend))
                        .is_some_and(|b| b.deployment == *name && b.revision == d.revision)
                };
                let canary = canary_name(name, &d.revision);
                let own_busy = live.is_some_and(|l| l.backends.contains_key(name))
                    && (weight(&base, name) > 0 || weight(&from, name) > 0);
                let backend = if runs(name) {
                    name.clone()
                } else if runs(&canary) || own_busy {
                    canary
                } else {
                    name.clone()
                };
                (name.clone(), backend)
            })
            .collect();
        let to: Weights = after
            .traffic
            .iter()
            .map(|(d, w)| (targets.get(d).cloned().unwrap_or_else(|| d.clone()), *w))
            .collect();
        let mut superseded = Vec::new();
        let mut idle = Vec::new();
        if let Some(live) = live {
            for (name, b) in &live.backends {
                let target = targets.values().any(|t| t == name);
                if weight(&from, name) == 0
                    && weight(&base, name) == 0
                    && !target
                    && !declared(&b.deployment, &b.revision)
                {
                    superseded.push((name.clone(), b.deployment.clone(), b.revision.clone()));
                }
            }
            idle = live
                .idle
                .iter()
                .filter(|(d, r)| !declared(d, r))
                .cloned()
                .collect();
        }
        for (name, _, _) in &superseded {
            from.remove(name);
            base.remove(name);
        }
        let resume_at = targets
            .iter()
            .filter(|(d, t)| d != t && live.is_some_and(|l| l.backends.contains_key(*t)))
            .filter_map(|(_, t)| {
                let (now, goal) = (weight(&from, t), weight(&to, t));
                (now > 0 && goal > 0).then(|| (now * 100).div_ceil(goal).min(100))
            })
            .max();
        Layout {
            targets,
            from,
            base,
            to,
            resume_at,
            superseded,
            idle,
        }
    }

    /// Whether traffic has to move (or, for an unfinished rollout, be held under the
    /// gates again before the promotion).
    pub(super) fn moves(&self) -> bool {
        shifts(&self.base, &self.to)
    }

    /// The rollout policy for this change: when an unfinished rollout moved traffic
    /// already, the steps start where it stopped (that step held again under the gates)
    /// and there is no mirror phase (it comes before any traffic moves).
    pub(super) fn rollout_value(&self, declared: &RolloutValue) -> RolloutValue {
        let Some(at) = self.resume_at else {
            return declared.clone();
        };
        let mut steps = vec![at];
        steps.extend(
            effective_steps(&declared.steps)
                .into_iter()
                .filter(|s| *s > at),
        );
        RolloutValue {
            steps,
            mirror: None,
            ..declared.clone()
        }
    }

    /// The temporary backends of the declared deployments: what a rollback stops.
    pub(super) fn canaries(&self) -> BTreeSet<String> {
        self.targets
            .iter()
            .filter(|(d, backend)| d != backend)
            .map(|(_, backend)| backend.clone())
            .collect()
    }
}

/// "blue 100% (c085e0311ef0)": the deployments with traffic and their revisions.
pub(super) fn describe_serving(after: &EndpointValue) -> String {
    let shown: Vec<String> = after
        .traffic
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(name, w)| match after.deployments.get(name) {
            Some(d) => format!("{name} {w}% ({})", d.revision),
            None => format!("{name} {w}%"),
        })
        .collect();
    if shown.is_empty() {
        "no traffic".to_string()
    } else {
        shown.join(", ")
    }
}

/// Whether a live revision runs the replicas its deployment declares: the count, all
/// ready; autoscaled, any count within the bounds, all ready (the autoscaler owns it, so
/// its changes are not drift).
fn replicas_as_declared(d: &super::DeploymentValue, live: &super::LiveBackend) -> bool {
    match &d.autoscale {
        None => live.ready_replicas == d.replicas && live.replicas == d.replicas,
        Some(a) => live.ready_replicas == live.replicas && (a.min..=a.max).contains(&live.replicas),
    }
}

fn describe_deployments(after: &EndpointValue) -> String {
    after
        .deployments
        .iter()
        .map(|(name, d)| {
            let replicas = match &d.autoscale {
                Some(a) => format!("{}–{} replicas, autoscaled", a.min, a.max),
                None => format!(
                    "{} replica{}",
                    d.replicas,
                    if d.replicas == 1 { "" } else { "s" }
                ),
            };
            format!(
                "{name} (model.{}@{}, {replicas}, {}%)",
                d.model,
                d.version,
                after.traffic.get(name).copied().unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_new(after: &EndpointValue) -> String {
    let at = after
        .port
        .map_or_else(String::new, |p| format!(" on port {p}"));
    format!("new endpoint{at}: {}", describe_deployments(after))
}

/// Whether traffic has to move: some flows now, some will, and not to the same places.
fn shifts(from: &Weights, to: &Weights) -> bool {
    let (from, to) = (positive(from), positive(to));
    !from.is_empty() && !to.is_empty() && from != to
}

fn positive(w: &Weights) -> Weights {
    w.iter()
        .filter(|(_, p)| **p > 0)
        .map(|(n, p)| (n.clone(), *p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::{DeploymentValue, LiveBackend};

    fn value(version: &str, traffic: &[(&str, u32)]) -> EndpointValue {
        let mut deployments = BTreeMap::new();
        for (name, _) in traffic {
            deployments.insert(
                name.to_string(),
                DeploymentValue {
                    model: "m".into(),
                    version: version.into(),
                    pinned: false,
                    revision: version.into(),
                    replicas: 1,
                    autoscale: None,
                    env: BTreeMap::new(),
                    command: None,
                    health: None,
                    promote_if: Vec::new(),
                },
            );
        }
        EndpointValue {
            compute: "compute.c".into(),
            target: "local".into(),
            port: Some(8080),
            auth: "key".into(),
            deployments,
            traffic: traffic.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            mirror: None,
            rollout: RolloutValue {
                steps: vec![10, 50, 100],
                step_wait: "10s".into(),
                max_error_rate: Some(0.01),
                max_p99_ms: Some(250),
                min_requests: None,
                auto_rollback: true,
                mirror: None,
                scale_down_delay: "5m".into(),
                metrics: None,
            },
            promote_if: Vec::new(),
            monitor: None,
        }
    }

    fn live_of(v: &EndpointValue) -> LiveEndpoint {
        LiveEndpoint {
            port: v.port,
            serving: true,
            error: None,
            backends: v
                .deployments
                .iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        LiveBackend {
                            deployment: n.clone(),
                            revision: d.revision.clone(),
                            replicas: d.replicas,
                            ready_replicas: d.replicas,
                            scaled: Vec::new(),
                        },
                    )
                })
                .collect(),
            weights: v.traffic.clone(),
            idle: BTreeSet::new(),
        }
    }

    #[test]
    fn unchanged_endpoint_is_a_no_op() {
        let v = value("a1", &[("blue", 100)]);
        assert_eq!(decide(Some(&v), &v, Some(&live_of(&v))), Decision::NoOp);
    }

    #[test]
    fn new_version_of_a_serving_deployment_rolls_out() {
        let old = value("a1", &[("blue", 100)]);
        let new = value("b2", &[("blue", 100)]);
        let Decision::Rollout(reason, plan) = decide(Some(&old), &new, Some(&live_of(&old))) else {
            panic!("expected a rollout");
        };
        assert!(reason.contains("blue: model.m a1 → b2"), "{reason}");
        assert_eq!(plan.from, Weights::from([("blue".into(), 100)]));
        assert_eq!(plan.to, Weights::from([("blue@b2".into(), 100)]));
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.steps[0]["blue@b2"], 10);
        assert_eq!(plan.steps[0]["blue"], 90);
    }

    #[test]
    fn changed_traffic_map_rolls_out() {
        let old = value("a1", &[("blue", 100), ("green", 0)]);
        let new = value("a1", &[("blue", 0), ("green", 100)]);
        let Decision::Rollout(reason, plan) = decide(Some(&old), &new, Some(&live_of(&old))) else {
            panic!("expected a rollout");
        };
        assert!(
            reason.contains("traffic blue 100% → green 100%"),
            "{reason}"
        );
        assert_eq!(plan.steps[1]["green"], 50);
    }

    #[test]
    fn nothing_serving_is_repaired() {
        let v = value("a1", &[("blue", 100)]);
        let Decision::Update(reason) = decide(Some(&v), &v, None) else {
            panic!("expected an update");
        };
        assert!(reason.starts_with("not serving"), "{reason}");
    }

    #[test]
    fn replicas_change_in_place() {
        let old = value("a1", &[("blue", 100)]);
        let mut new = old.clone();
        new.deployments.get_mut("blue").unwrap().replicas = 3;
        let Decision::Update(reason) = decide(Some(&old), &new, Some(&live_of(&old))) else {
            panic!("expected an update");
        };
        assert!(reason.contains("1 → 3 replicas"), "{reason}");
    }

    #[test]
    fn first_apply_creates() {
        let v = value("a1", &[("blue", 100)]);
        let Decision::Create(reason) = decide(None, &v, None) else {
            panic!("expected a create");
        };
        assert_eq!(
            reason,
            "new endpoint on port 8080: blue (model.m@a1, 1 replica, 100%)"
        );
    }

    fn backend(deployment: &str, revision: &str) -> LiveBackend {
        LiveBackend {
            deployment: deployment.into(),
            revision: revision.into(),
            replicas: 1,
            ready_replicas: 1,
            scaled: Vec::new(),
        }
    }

    /// What serves: (backend name, deployment, revision, weight).
    fn serving(rows: &[(&str, &str, &str, u32)]) -> LiveEndpoint {
        LiveEndpoint {
            port: Some(8080),
            serving: true,
            error: None,
            backends: rows
                .iter()
                .map(|(n, d, r, _)| (n.to_string(), backend(d, r)))
                .collect(),
            weights: rows
                .iter()
                .map(|(n, _, _, w)| (n.to_string(), *w))
                .collect(),
            idle: BTreeSet::new(),
        }
    }

    fn w(pairs: &[(&str, u32)]) -> Weights {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn a_rollout_cut_short_part_way_is_planned_again_from_where_it_stopped() {
        // The state still records a1: the apply rolling out b2 died at its 10 % step.
        let old = value("a1", &[("blue", 100)]);
        let new = value("b2", &[("blue", 100)]);
        let live = serving(&[("blue", "blue", "a1", 90), ("blue@b2", "blue", "b2", 10)]);
        let Decision::Rollout(reason, plan) = decide(Some(&old), &new, Some(&live)) else {
            panic!("expected a rollout");
        };
        assert!(reason.contains("blue: model.m a1 → b2"), "{reason}");
        assert!(reason.contains("left it at 10%"), "{reason}");
        assert_eq!(plan.from, w(&[("blue", 90), ("blue@b2", 10)]));
        assert_eq!(plan.to, w(&[("blue@b2", 100)]));
        // The step it stopped at is held again, then the rest.
        assert_eq!(
            plan.steps,
            [
                w(&[("blue", 90), ("blue@b2", 10)]),
                w(&[("blue", 50), ("blue@b2", 50)]),
                w(&[("blue", 0), ("blue@b2", 100)]),
            ]
        );
        assert!(
            plan.summary.starts_with("resumed at 10%: 10% → 50% → 100%"),
            "{}",
            plan.summary
        );
    }

    #[test]
    fn a_rollout_that_moved_all_traffic_but_was_not_promoted_holds_its_last_step_again() {
        let old = value("a1", &[("blue", 100)]);
        let new = value("b2", &[("blue", 100)]);
        let live = serving(&[("blue", "blue", "a1", 0), ("blue@b2", "blue", "b2", 100)]);
        let Decision::Rollout(_, plan) = decide(Some(&old), &new, Some(&live)) else {
            panic!("expected a rollout");
        };
        assert_eq!(plan.steps, [w(&[("blue", 0), ("blue@b2", 100)])]);
        assert!(
            plan.summary
                .starts_with("resumed at 100%: 100%, each held 10s; gates"),
            "{}",
            plan.summary
        );
        // A rollback goes to the revision that served before.
        let layout = Layout::of(&new, Some(&live));
        assert_eq!(layout.base, w(&[("blue", 100), ("blue@b2", 0)]));
    }

    #[test]
    fn a_recorded_split_is_rolled_out_again_while_the_router_is_down() {
        let old = value("a1", &[("blue", 100)]);
        let new = value("b2", &[("blue", 100)]);
        let mut live = serving(&[("blue", "blue", "a1", 50), ("blue@b2", "blue", "b2", 50)]);
        live.serving = false;
        live.error = Some("no supervisor runs".into());
        let Decision::Rollout(reason, plan) = decide(Some(&old), &new, Some(&live)) else {
            panic!("expected a rollout, not an update that serves b2 at once");
        };
        assert!(
            reason.starts_with("not serving: no supervisor runs"),
            "{reason}"
        );
        assert!(
            plan.summary.starts_with("resumed at 50%: 50% → 100%"),
            "{}",
            plan.summary
        );
    }

    #[test]
    fn a_new_version_declared_during_an_unfinished_rollout_starts_over_from_the_old_one() {
        let old = value("a1", &[("blue", 100)]);
        let new = value("c3", &[("blue", 100)]);
        let live = serving(&[("blue", "blue", "a1", 90), ("blue@b2", "blue", "b2", 10)]);
        let Decision::Rollout(_, plan) = decide(Some(&old), &new, Some(&live)) else {
            panic!("expected a rollout");
        };
        assert_eq!(plan.to, w(&[("blue@c3", 100)]));
        // b2 never passed its gates: its share goes back to a1, which c3 walks from.
        assert_eq!(
            plan.steps[0],
            w(&[("blue", 90), ("blue@b2", 0), ("blue@c3", 10)])
        );
        assert!(plan.summary.starts_with("10% → 50%"), "{}", plan.summary);
    }

    #[test]
    fn revisions_kept_after_a_promotion_take_no_part_in_the_next_rollout() {
        let old = value("b2", &[("blue", 100)]);
        let new = value("c3", &[("blue", 100)]);
        let live = serving(&[("blue", "blue", "b2", 100), ("blue@a1", "blue", "a1", 0)]);
        let layout = Layout::of(&new, Some(&live));
        assert_eq!(
            layout.superseded,
            [("blue@a1".to_string(), "blue".to_string(), "a1".to_string())]
        );
        let Decision::Rollout(_, plan) = decide(Some(&old), &new, Some(&live)) else {
            panic!("expected a rollout");
        };
        assert_eq!(plan.from, w(&[("blue", 100)]));
        assert!(
            plan.steps.iter().all(|s| !s.contains_key("blue@a1")),
            "{:?}",
            plan.steps
        );
        // Right after a promotion nothing is to do: a1 retires on its schedule.
        assert_eq!(decide(Some(&old), &old, Some(&live)), Decision::NoOp);
    }

    #[test]
    fn a_promotion_the_state_did_not_record_is_not_rolled_out_again() {
        let old = value("a1", &[("blue", 100)]);
        let new = value("b2", &[("blue", 100)]);
        let live = serving(&[("blue", "blue", "b2", 100), ("blue@a1", "blue", "a1", 0)]);
        let decision = decide(Some(&old), &new, Some(&live));
        assert!(matches!(decision, Decision::Update(_)), "{decision:?}");
    }

    #[test]
    fn revisions_nothing_routes_to_are_stopped() {
        let v = value("a1", &[("blue", 100)]);
        let mut live = live_of(&v);
        live.idle.insert(("blue".into(), "z9".into()));
        let Decision::Update(reason) = decide(Some(&v), &v, Some(&live)) else {
            panic!("expected an update");
        };
        assert_eq!(reason, "blue@z9: runs, but nothing routes to it; stopped");
    }

    #[test]
    fn describes_the_policy() {
        let v = value("a1", &[("blue", 100)]);
        assert_eq!(
            v.rollout.describe(),
            "10% → 50% → 100%, each held 10s; gates: error rate ≤ 1%, p99 ≤ 250 ms; automatic rollback"
        );
    }
}

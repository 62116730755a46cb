//! Whether the GPUs a plan asks for fit on Kubernetes: the runs it starts and the
//! endpoint revisions it creates, per namespace, against the namespace's ResourceQuota
//! and the cluster's allocatable GPUs (read before planning, [`super::plan::KubeLive`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde_json::Value;

use super::compute_namespace;
use super::plan::KubeLive;
use crate::address::{Address, Kind, Reference};
use crate::backend::target::PlanScope;
use crate::desired::{DesiredState, Resource};
use crate::diagnostics::{Diagnostic, Diagnostics, Location};
use crate::manifest::{ComputeSpec, Snapshot, Spec, Target};
use crate::plan::{Action, ResourceChange};

/// Refuses runs, and the endpoint revisions a change starts, that need more GPUs
/// than their namespace's quota leaves free or than the cluster's nodes have. A
/// rollout runs the new revision beside the old one, so its GPUs count in full.
pub fn check(
    kube: &KubeLive,
    scope: &PlanScope<'_>,
    changes: &[ResourceChange],
    diagnostics: &mut Diagnostics,
) {
    let ws = scope.workspace;
    /// One workload asking for GPUs: its resource, GPUs, how they add up, and the
    /// manifest's `gpus` line.
    struct Need<'r> {
        resource: &'r Resource,
        gpus: u64,
        how: String,
        at: Option<std::ops::Range<usize>>,
        run: bool,
    }
    let gpus_of = |n: u64| format!("{n} GPU{}", if n == 1 { "" } else { "s" });
    let resources: HashMap<String, &Resource> = scope
        .desired
        .resources
        .iter()
        .filter(|r| r.address.workspace == ws)
        .map(|r| (r.address.to_string(), r))
        .collect();
    // (context, namespace) → what needs GPUs there.
    let mut needs: BTreeMap<(Option<String>, String), Vec<Need>> = BTreeMap::new();
    for change in changes.iter().filter(|c| c.workspace == ws) {
        let Some(&resource) = resources.get(&change.address) else {
            continue;
        };
        match &resource.spec {
            Spec::Job(job) if change.action() == Action::Run => {
                let Some(compute) = compute_of(scope.desired, resource, job.compute.get_ref())
                else {
                    continue;
                };
                if *compute.target.get_ref() != Target::Kubernetes || job.gpus() == 0 {
                    continue;
                }
                let gpus = u64::from(job.gpus()) * u64::from(job.instances());
                let how = if job.instances() > 1 {
                    format!("{} instances × {} GPUs", job.instances(), job.gpus())
                } else {
                    gpus_of(u64::from(job.gpus()))
                };
                let namespace = kube_namespace(scope.desired, ws, compute);
                let context = compute.context.as_ref().map(|c| c.get_ref().clone());
                needs.entry((context, namespace)).or_default().push(Need {
                    resource,
                    gpus,
                    how,
                    at: job.gpus.as_ref().map(|g| g.span()),
                    run: true,
                });
            }
            Spec::Endpoint(endpoint) => {
                // The Deployments this change creates: new revisions.
                for o in change.objects.iter().filter(|o| {
                    o.kind == "Deployment" && matches!(o.action, Action::Create | Action::Replace)
                }) {
                    let Some(object) = &o.object else { continue };
                    let replicas = object
                        .pointer("/spec/replicas")
                        .and_then(Value::as_u64)
                        .unwrap_or(1);
                    let per_pod: u64 = object
                        .pointer("/spec/template/spec/containers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| {
                            let gpus = c.pointer("/resources/requests/nvidia.com~1gpu")?;
                            gpus.as_u64()
                                .or_else(|| gpus.as_str().and_then(|g| g.parse().ok()))
                        })
                        .sum();
                    if per_pod == 0 || replicas == 0 {
                        continue;
                    }
                    let deployment = object
                        .pointer("/metadata/labels/cairn.dev~1deployment")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let at = endpoint
                        .deployments
                        .iter()
                        .find(|(name, _)| name.get_ref() == deployment)
                        .and_then(|(_, d)| d.get_ref().gpus.as_ref().map(|g| g.span()));
                    needs
                        .entry((o.context.clone(), o.namespace.clone().unwrap_or_default()))
                        .or_default()
                        .push(Need {
                            resource,
                            gpus: replicas * per_pod,
                            how: format!(
                                "deployment {deployment}: {replicas} replica{} × {}",
                                if replicas == 1 { "" } else { "s" },
                                gpus_of(per_pod)
                            ),
                            at,
                            run: false,
                        });
                }
            }
            _ => {}
        }
    }
    for ((context, namespace), asks) in needs {
        let Some(capacity) = kube.capacity.get(&(context.clone(), namespace.clone())) else {
            continue;
        };
        let total: u64 = asks.iter().map(|n| n.gpus).sum();
        let place = match &context {
            Some(c) => format!("namespace `{namespace}` (context `{c}`)"),
            None => format!("namespace `{namespace}`"),
        };
        let mut problems = Vec::new();
        if let Some(hard) = capacity.quota_hard {
            let used = capacity.quota_used.unwrap_or(0);
            let free = hard.saturating_sub(used);
            if total > free {
                problems.push(format!(
                    "its ResourceQuota allows {hard} GPUs and {used} are in use ({free} free)"
                ));
            }
        }
        if let Some(nodes) = capacity.nodes_allocatable {
            if total > nodes {
                problems.push(format!("the cluster's nodes have {nodes} allocatable GPUs"));
            }
        }
        if problems.is_empty() {
            continue;
        }
        let what = match (asks.iter().any(|n| n.run), asks.iter().any(|n| !n.run)) {
            (true, false) => "runs",
            (false, true) => "endpoint revisions",
            _ => "runs and endpoint revisions",
        };
        let asked: Vec<String> = asks
            .iter()
            .map(|n| {
                format!(
                    "{} needs {} ({})",
                    n.resource.address.local(),
                    n.gpus,
                    n.how
                )
            })
            .collect();
        for need in &asks {
            let mut d = Diagnostic::error(
                "gpu-capacity",
                format!(
                    "{}: the planned {what} need {} in {place}, but {}",
                    need.resource.address.local(),
                    gpus_of(total),
                    problems.join(", and ")
                ),
            )
            .help(format!(
                "{}; lower `gpus`, `instances` or `replicas`, or raise the quota",
                asked.join("; ")
            ));
            if let Some(span) = &need.at {
                d = d.at(location(scope.snapshot, need.resource, span.clone()));
            }
            diagnostics.push(d);
        }
    }
}

/// The namespace a compute's objects live in.
fn kube_namespace(desired: &DesiredState, ws: &str, compute: &ComputeSpec) -> String {
    match desired.get(&Address::workspace(ws)).map(|r| &r.spec) {
        Some(Spec::Workspace(spec)) => compute_namespace(ws, spec, compute),
        _ => ws.to_string(),
    }
}

/// The compute `reference` (`compute.<name>`) names in `resource`'s workspace.
fn compute_of<'d>(
    desired: &'d DesiredState,
    resource: &Resource,
    reference: &str,
) -> Option<&'d ComputeSpec> {
    let r = Reference::parse(reference).ok()?;
    let address = Address::new(resource.address.workspace.clone(), Kind::Compute, r.name);
    match &desired.get(&address)?.spec {
        Spec::Compute(c) => Some(c),
        _ => None,
    }
}

fn location(snapshot: &Snapshot, resource: &Resource, span: Range<usize>) -> Location {
    Location::new(
        &resource.file,
        snapshot.text(&resource.file).unwrap_or(""),
        span,
    )
}

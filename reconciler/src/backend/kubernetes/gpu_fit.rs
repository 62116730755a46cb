//! Whether the GPUs a plan asks for fit on Kubernetes: the runs it starts and the
//! endpoint revisions it creates, per namespace against the namespace's ResourceQuota,
//! and per cluster against its nodes: each pod on one node, on the GPUs the pods
//! already bound there leave free (read before planning, [`super::plan::KubeLive`]).
//! A pool that can grow (`autoscale = true` on the compute, or nodes labelled
//! [`AUTOSCALED_NODE_LABEL`]) is never refused for nodes it lacks now.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde_json::Value;

use super::cluster::{Capacity, NodeGpus, AUTOSCALED_NODE_LABEL};
use super::compute::in_context;
use super::compute_namespace;
use super::plan::KubeLive;
use crate::address::{Address, Kind, Reference};
use crate::backend::target::PlanScope;
use crate::desired::{DesiredState, Resource};
use crate::diagnostics::{Diagnostic, Diagnostics, Location};
use crate::manifest::{ComputeSpec, Snapshot, Spec, Target};
use crate::plan::{Action, ResourceChange};

/// One workload asking for GPUs: its resource, its pods and their GPUs, how they add
/// up, the manifest's `gpus` line, the nodes its pods may run on, and whether its
/// compute's pool can grow.
struct Need<'r> {
    resource: &'r Resource,
    /// `compute.<name>`.
    compute: String,
    pods: u64,
    per_pod: u64,
    how: String,
    at: Option<std::ops::Range<usize>>,
    run: bool,
    node_selector: BTreeMap<String, String>,
    autoscale: bool,
}

impl Need<'_> {
    fn gpus(&self) -> u64 {
        self.pods * self.per_pod
    }
}

fn gpus_of(n: u64) -> String {
    format!("{n} GPU{}", if n == 1 { "" } else { "s" })
}

/// Refuses runs, and the endpoint revisions a change starts, that need more GPUs than
/// their namespace's quota leaves free, or whose pods don't fit on the cluster's nodes:
/// each pod on one node, on the GPUs the pods already there leave free. A rollout runs
/// the new revision beside the old one, so its GPUs count in full. A compute whose pool
/// can grow (`autoscale = true`, or nodes an autoscaler made) is not refused for the
/// nodes it lacks now: the plan says its pods may wait for the autoscaler. What the
/// cluster doesn't let Cairn read (nodes, pods) is said as a note, not refused.
pub fn check(
    kube: &KubeLive,
    scope: &PlanScope<'_>,
    changes: &[ResourceChange],
    diagnostics: &mut Diagnostics,
) {
    let ws = scope.workspace;
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
                let Some((compute_ref, compute)) =
                    compute_of(scope.desired, resource, job.compute.get_ref())
                else {
                    continue;
                };
                if *compute.target.get_ref() != Target::Kubernetes || job.gpus() == 0 {
                    continue;
                }
                let how = if job.instances() > 1 {
                    format!("{} instances × {} GPUs", job.instances(), job.gpus())
                } else {
                    gpus_of(u64::from(job.gpus()))
                };
                let node_selector = change
                    .objects
                    .iter()
                    .filter(|o| o.kind == "Job")
                    .find_map(|o| o.object.as_ref().map(node_selector_of))
                    .unwrap_or_default();
                let namespace = kube_namespace(scope.desired, ws, compute);
                let context = compute.context.as_ref().map(|c| c.get_ref().clone());
                needs.entry((context, namespace)).or_default().push(Need {
                    resource,
                    compute: compute_ref,
                    pods: u64::from(job.instances()),
                    per_pod: u64::from(job.gpus()),
                    how,
                    at: job.gpus.as_ref().map(|g| g.span()),
                    run: true,
                    node_selector,
                    autoscale: compute.autoscale(),
                });
            }
            Spec::Endpoint(endpoint) => {
                let compute = compute_of(scope.desired, resource, endpoint.compute.get_ref());
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
                            compute: compute.as_ref().map(|(r, _)| r.clone()).unwrap_or_default(),
                            pods: replicas,
                            per_pod,
                            how: format!(
                                "deployment {deployment}: {replicas} replica{} × {}",
                                if replicas == 1 { "" } else { "s" },
                                gpus_of(per_pod)
                            ),
                            at,
                            run: false,
                            node_selector: node_selector_of(object),
                            autoscale: compute.as_ref().is_some_and(|(_, c)| c.autoscale()),
                        });
                }
            }
            _ => {}
        }
    }
    for ((context, namespace), asks) in &needs {
        let Some(capacity) = kube.capacity.get(&(context.clone(), namespace.clone())) else {
            continue;
        };
        check_quota(
            scope,
            context.as_deref(),
            namespace,
            capacity,
            asks,
            diagnostics,
        );
    }
    // Nodes are the cluster's: every namespace's pods of one context share them.
    let mut by_context: BTreeMap<Option<String>, Vec<&Need>> = BTreeMap::new();
    for ((context, _), asks) in &needs {
        by_context.entry(context.clone()).or_default().extend(asks);
    }
    for (context, asks) in by_context {
        let capacities: Vec<&Capacity> = kube
            .capacity
            .iter()
            .filter(|((c, _), _)| *c == context)
            .map(|(_, capacity)| capacity)
            .collect();
        if capacities.is_empty() {
            continue;
        }
        match capacities.iter().find_map(|c| c.nodes.as_ref().map(|n| (n, c.in_use_known))) {
            Some((nodes, in_use_known)) => {
                check_nodes(scope, context.as_deref(), nodes, &asks, diagnostics);
                if !in_use_known {
                    diagnostics.push(Diagnostic::warning(
                        "gpu-capacity",
                        format!(
                            "the GPUs already in use on the nodes{} are unknown: Cairn may not list pods at the cluster scope, so the plan counts every node's GPUs as free",
                            in_context(context.as_deref())
                        ),
                    ));
                }
            }
            None => diagnostics.push(Diagnostic::warning(
                "gpu-capacity",
                format!(
                    "GPU capacity of the cluster{} is unknown: Cairn may not list nodes, so the plan checks the GPUs asked for ({}) against the namespace's quota only",
                    in_context(context.as_deref()),
                    asks.iter()
                        .map(|n| format!("{} {}", n.resource.address, gpus_of(n.gpus())))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// Refuses what the namespace's GPU quota doesn't leave room for, all of it together.
fn check_quota(
    scope: &PlanScope<'_>,
    context: Option<&str>,
    namespace: &str,
    capacity: &Capacity,
    asks: &[Need],
    diagnostics: &mut Diagnostics,
) {
    let Some(hard) = capacity.quota_hard else {
        return;
    };
    let total: u64 = asks.iter().map(Need::gpus).sum();
    let used = capacity.quota_used.unwrap_or(0);
    let free = hard.saturating_sub(used);
    if total <= free {
        return;
    }
    let place = format!("namespace `{namespace}`{}", in_context(context));
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
                n.gpus(),
                n.how
            )
        })
        .collect();
    for need in asks {
        let mut d = Diagnostic::error(
            "gpu-capacity",
            format!(
                "{}: the planned {what} need {} in {place}, but its ResourceQuota allows {hard} GPUs and {used} are in use ({free} free)",
                need.resource.address.local(),
                gpus_of(total),
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

/// Places every pod of `asks` on one node each (largest pods first, each on the node
/// with the least free GPUs that still holds it, among those its node selector allows)
/// and refuses the workloads some of whose pods find no node, unless their pool can
/// grow: then the plan says they may wait for the autoscaler.
fn check_nodes(
    scope: &PlanScope<'_>,
    context: Option<&str>,
    nodes: &[NodeGpus],
    asks: &[&Need],
    diagnostics: &mut Diagnostics,
) {
    let mut free: Vec<u64> = nodes.iter().map(NodeGpus::free).collect();
    let mut pods: Vec<(usize, u64)> = asks
        .iter()
        .enumerate()
        .flat_map(|(i, n)| (0..n.pods).map(move |_| (i, n.per_pod)))
        .collect();
    // Stable: among equal pods, the plan's order.
    pods.sort_by(|a, b| b.1.cmp(&a.1));
    let mut unplaced = vec![0u64; asks.len()];
    for (i, gpus) in pods {
        let best = nodes
            .iter()
            .enumerate()
            .filter(|(n, node)| node.matches(&asks[i].node_selector) && free[*n] >= gpus)
            .min_by_key(|(n, _)| free[*n])
            .map(|(n, _)| n);
        match best {
            Some(n) => free[n] -= gpus,
            None => unplaced[i] += 1,
        }
    }
    for (need, missing) in asks.iter().zip(unplaced) {
        if missing == 0 {
            continue;
        }
        let candidates: Vec<&NodeGpus> = nodes
            .iter()
            .filter(|n| n.matches(&need.node_selector))
            .collect();
        let placed = need.pods - missing;
        let pods = if need.pods == 1 {
            format!("its pod needs {} on one node", gpus_of(need.per_pod))
        } else {
            format!(
                "its {} pods need {} each, each on one node",
                need.pods,
                gpus_of(need.per_pod)
            )
        };
        let fits = match (need.pods, placed) {
            (1, _) | (_, 0) => "none fits".to_string(),
            (_, n) => format!("only {n} fit{}", if n == 1 { "s" } else { "" }),
        };
        let selector = if need.node_selector.is_empty() {
            String::new()
        } else {
            let labels: Vec<String> = need
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(" matching `{}`", labels.join(","))
        };
        let nodes_now = if candidates.is_empty() {
            format!("no node with GPUs{selector}{}", in_context(context))
        } else {
            const SHOWN: usize = 6;
            let mut each: Vec<String> = candidates
                .iter()
                .take(SHOWN)
                .map(|n| format!("{} {} of {} free", n.name, n.free(), n.allocatable))
                .collect();
            if candidates.len() > SHOWN {
                each.push(format!("{} more", candidates.len() - SHOWN));
            }
            let largest = candidates.iter().map(|n| n.allocatable).max().unwrap_or(0);
            let too_big = if need.per_pod > largest {
                format!(
                    "; the largest has {}, and a pod can't span nodes",
                    gpus_of(largest)
                )
            } else {
                String::new()
            };
            format!(
                "the nodes with GPUs{selector}{} have {} (allocatable less what their pods request){too_big}",
                in_context(context),
                each.join(", ")
            )
        };
        let grows = need.autoscale || candidates.iter().any(|n| n.autoscaled());
        if grows {
            let why = if need.autoscale {
                format!("{} has `autoscale = true`", need.compute)
            } else {
                format!("its nodes carry `{AUTOSCALED_NODE_LABEL}`")
            };
            diagnostics.push(Diagnostic::warning(
                "gpu-capacity",
                format!(
                    "{}: {pods}, and {fits} now: {nodes_now}; the pool can grow ({why}), so {} may wait for the autoscaler",
                    need.resource.address,
                    if need.pods == 1 { "it" } else { "they" }
                ),
            ));
            continue;
        }
        let mut d = Diagnostic::error(
            "gpu-capacity",
            format!(
                "{}: {pods}, but {fits}: {nodes_now}",
                need.resource.address.local()
            ),
        )
        .help(format!(
            "lower `gpus` so a pod fits on one node, free GPUs on the nodes, or set `autoscale = true` on {} if its node pool scales up",
            if need.compute.is_empty() { "the compute" } else { need.compute.as_str() }
        ));
        if let Some(span) = &need.at {
            d = d.at(location(scope.snapshot, need.resource, span.clone()));
        }
        diagnostics.push(d);
    }
}

/// A pod template's `nodeSelector` (a Job's or a Deployment's).
fn node_selector_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace a compute's objects live in.
fn kube_namespace(desired: &DesiredState, ws: &str, compute: &ComputeSpec) -> String {
    match desired.get(&Address::workspace(ws)).map(|r| &r.spec) {
        Some(Spec::Workspace(spec)) => compute_namespace(ws, spec, compute),
        _ => ws.to_string(),
    }
}

/// The compute `reference` (`compute.<name>`) names in `resource`'s workspace, with
/// its reference.
fn compute_of<'d>(
    desired: &'d DesiredState,
    resource: &Resource,
    reference: &str,
) -> Option<(String, &'d ComputeSpec)> {
    let r = Reference::parse(reference).ok()?;
    let address = Address::new(resource.address.workspace.clone(), Kind::Compute, r.name);
    match &desired.get(&address)?.spec {
        Spec::Compute(c) => Some((reference.to_string(), c)),
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

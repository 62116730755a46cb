//! The `kubernetes` target behind the compute-target contract ([`ComputeTarget`]):
//! observing a workspace's objects and GPU capacity ([`Clusters`]), planning its objects
//! ([`super::plan`]) and whether its GPUs fit ([`super::gpu_fit`]), naming rollout
//! backends after the revisions' Services, and carrying changes out
//! ([`super::execute`], [`super::rollout`]).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde_json::Value;

use super::cluster::{Clusters, Scope};
use super::plan::{plan_workspace, KubeLive};
use super::{
    compute_namespace, revision_object_name, ClusterApi, ObjectKey, LABEL_MANAGED_BY,
    LABEL_WORKSPACE,
};
use crate::backend::target::{
    Applied, ApplyContext, ComputeTarget, EndpointRollout, Failure, ObserveError, PlanScope,
};
use crate::desired::DesiredState;
use crate::diagnostics::{error_chain, Diagnostics};
use crate::manifest::{Spec, Target};
use crate::plan::{ResourceChange, RolloutPlan};
use crate::rollout::Weights;
use crate::serving;

/// The manifest's `target` value of this target.
pub const TARGET: &str = "kubernetes";

/// The clusters of the kubeconfig as a compute target.
pub struct KubeCompute {
    clusters: Option<Arc<Clusters>>,
    live: OnceLock<KubeLive>,
}

impl KubeCompute {
    /// A target over `clusters`; without them only planning from an already observed
    /// [`KubeLive`] works, and changes fail.
    pub fn new(clusters: Option<Arc<Clusters>>) -> KubeCompute {
        KubeCompute {
            clusters,
            live: OnceLock::new(),
        }
    }

    /// A target that plans against `live`, as observed elsewhere (instead of observing).
    pub fn with_live(self, live: KubeLive) -> KubeCompute {
        let _ = self.live.set(live);
        self
    }

    /// What was observed; nothing before [`ComputeTarget::observe`].
    pub fn live(&self) -> &KubeLive {
        static NOTHING: OnceLock<KubeLive> = OnceLock::new();
        self.live
            .get()
            .unwrap_or_else(|| NOTHING.get_or_init(KubeLive::default))
    }

    pub(super) fn api(&self) -> Option<&dyn ClusterApi> {
        self.clusters.as_deref().map(|c| c as &dyn ClusterApi)
    }
}

/// The (kube context, namespace) pairs a workspace's `kubernetes` computes use.
pub fn scopes(desired: &DesiredState, workspace: &str) -> Vec<Scope> {
    let Some(Spec::Workspace(ws_spec)) = desired
        .get(&crate::Address::workspace(workspace))
        .map(|r| &r.spec)
    else {
        return Vec::new();
    };
    let mut scopes: Vec<Scope> = Vec::new();
    for r in desired
        .resources
        .iter()
        .filter(|r| r.address.workspace == workspace)
    {
        if let Spec::Compute(c) = &r.spec {
            if *c.target.get_ref() != Target::Kubernetes {
                continue;
            }
            let scope = Scope {
                context: c.context.as_ref().map(|c| c.get_ref().clone()),
                namespace: compute_namespace(workspace, ws_spec, c),
            };
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    scopes
}

#[async_trait]
impl ComputeTarget for KubeCompute {
    fn name(&self) -> &'static str {
        TARGET
    }

    /// Reads every object carrying Cairn's labels for the workspaces, in the namespaces
    /// their computes use, and the GPU capacity of those namespaces.
    async fn observe(
        &self,
        desired: &DesiredState,
        workspaces: &[String],
    ) -> Result<(), ObserveError> {
        let Some(clusters) = self.clusters.clone() else {
            return Ok(());
        };
        let failed = |e: super::ClusterError| ObserveError::Failed {
            target: TARGET,
            message: error_chain(&e),
            hint: e.hint(),
        };
        let mut live = KubeLive::default();
        for workspace in workspaces {
            let scopes = scopes(desired, workspace);
            if scopes.is_empty() {
                continue;
            }
            live.objects
                .extend(clusters.observe(workspace, &scopes).await.map_err(failed)?);
            for scope in scopes {
                match namespace_owner(&clusters, workspace, &scope).await {
                    NamespaceOwner::Foreign => {
                        live.foreign_namespaces
                            .insert((scope.context.clone(), scope.namespace.clone()));
                    }
                    NamespaceOwner::Unreadable => {
                        live.foreign_namespaces
                            .insert((scope.context.clone(), scope.namespace.clone()));
                        live.notes.push((
                            workspace.clone(),
                            format!(
                                "namespace `{}`{}: Cairn may not read it, so it is used as it is (made by whoever administers the cluster), never created or deleted",
                                scope.namespace,
                                in_context(scope.context.as_deref())
                            ),
                        ));
                    }
                    NamespaceOwner::Workspace | NamespaceOwner::Absent => {}
                }
                let capacity = clusters
                    .capacity(scope.context.as_deref(), &scope.namespace)
                    .await
                    .map_err(failed)?;
                live.capacity
                    .insert((scope.context.clone(), scope.namespace.clone()), capacity);
            }
        }
        let _ = self.live.set(live);
        Ok(())
    }

    /// On a cluster, a rollout's backends are the revisions' Services: name them so.
    /// Without a `gateway`, the endpoint's Service selector sends everything to one
    /// revision: the rollout is one step.
    fn shape_rollout(&self, endpoint: &EndpointRollout<'_>, plan: &mut RolloutPlan) {
        let after = endpoint.after;
        let before_revisions: BTreeMap<String, String> = endpoint
            .live
            .map(|l| {
                l.backends
                    .iter()
                    .map(|(n, b)| (n.clone(), b.revision.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let name = endpoint.address.name.as_str();
        let rename = |weights: &Weights| -> Weights {
            weights
                .iter()
                .map(|(backend, w)| {
                    let (deployment, revision) = match backend.split_once('@') {
                        Some((d, r)) => (d, Some(r.to_string())),
                        None => (
                            backend.as_str(),
                            before_revisions.get(backend).cloned().or_else(|| {
                                after.deployments.get(backend).map(|d| d.revision.clone())
                            }),
                        ),
                    };
                    let object = revision.map_or_else(
                        || backend.clone(),
                        |r| revision_object_name(name, deployment, &r),
                    );
                    (object, *w)
                })
                .collect()
        };
        plan.from = rename(&plan.from);
        plan.to = rename(&plan.to);
        plan.steps = plan.steps.iter().map(rename).collect();
        if endpoint.compute.gateway.is_none() {
            plan.steps = vec![plan.to.clone()];
            plan.summary = format!(
                "all at once by the endpoint Service's selector (0/100), then held {} under the gates",
                after.rollout.step_wait
            );
            if serving::effective_steps(&after.rollout.steps) != [100] {
                plan.summary.push_str(&format!(
                    "; steps {} need a `gateway` on {}",
                    describe_steps(&after.rollout.steps),
                    endpoint.compute_ref
                ));
            }
        } else {
            plan.summary = format!("{} (HTTPRoute weights)", plan.summary);
        }
    }

    fn plan(
        &self,
        scope: &PlanScope<'_>,
        changes: &mut Vec<ResourceChange>,
        diagnostics: &mut Diagnostics,
    ) {
        plan_workspace(self.live(), scope, changes, diagnostics);
    }

    async fn apply(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
    ) -> Result<Applied, Failure> {
        self.execute(cx, change).await
    }
}

/// Who a scope's namespace belongs to, as far as Cairn can read it.
enum NamespaceOwner {
    /// It carries this workspace's labels: Cairn made it.
    Workspace,
    /// It exists without them (a platform team's, another workspace's): apply uses it
    /// as it is.
    Foreign,
    /// Cairn may not read it (a namespaced role): it is taken to exist and used as it
    /// is, since creating it would need cluster-wide rights the role doesn't give.
    Unreadable,
    /// It doesn't exist, or the read failed otherwise: the plan shows it created, and
    /// apply finds out.
    Absent,
}

async fn namespace_owner(clusters: &Clusters, workspace: &str, scope: &Scope) -> NamespaceOwner {
    let key = ObjectKey::new(
        scope.context.as_deref(),
        "v1",
        "Namespace",
        None,
        &scope.namespace,
    );
    let label = |namespace: &Value, key: &str| {
        namespace
            .pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match clusters.get(&key, "v1").await {
        Ok(Some(namespace)) => {
            if label(&namespace, LABEL_MANAGED_BY).as_deref() == Some("cairn")
                && label(&namespace, LABEL_WORKSPACE).as_deref() == Some(workspace)
            {
                NamespaceOwner::Workspace
            } else {
                NamespaceOwner::Foreign
            }
        }
        Err(super::ClusterError::Api { code: 403, .. }) => NamespaceOwner::Unreadable,
        Ok(None) | Err(_) => NamespaceOwner::Absent,
    }
}

/// ` (context `x`)`, or nothing for the current context.
pub(super) fn in_context(context: Option<&str>) -> String {
    context.map_or_else(String::new, |c| format!(" (context `{c}`)"))
}

/// `[10, 50, 100]`.
fn describe_steps(steps: &[u32]) -> String {
    let steps: Vec<String> = steps.iter().map(u32::to_string).collect();
    format!("[{}]", steps.join(", "))
}

//! The `local` target behind the compute-target contract ([`ComputeTarget`]): jobs run as
//! processes on this machine ([`super::jobs`]), endpoints are served by the local
//! supervisor and router ([`super::endpoints`]) and rolled out by the shared orchestrator
//! ([`crate::serving::apply`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use async_trait::async_trait;

use super::endpoints::LocalEndpoints;
use super::{ChildEnv, JobRunner as _, LocalMachine};
use crate::address::{Address, Kind};
use crate::backend::rollout_log::RolloutLog;
use crate::backend::store::{self, Store};
use crate::backend::sweep::{self, PlannedSweep};
use crate::backend::target::{
    Applied, ApplyContext, ChangeError, ComputeTarget, Failure, ObserveError, Observed, PlanScope,
};
use crate::desired::DesiredState;
use crate::diagnostics::{error_chain, Diagnostic, Diagnostics, Location};
use crate::manifest::Spec;
use crate::plan::{Action, ResourceChange};
use crate::rollout::RolloutEvent;
use crate::serving::{self, EndpointId, EndpointValue, LiveEndpoint, Serving};

/// The manifest's `target` value of this target.
pub const TARGET: &str = "local";

/// This machine as a compute target.
pub struct LocalCompute {
    pub(super) machine: LocalMachine,
    endpoints: Option<LocalEndpoints>,
    /// Scratch space for job runs (`<root>/.cairn/work`).
    pub(super) work_dir: PathBuf,
    /// The environment job processes start from (the CLI's allow-listed variables); a
    /// job's declared `env` is set on top.
    pub(super) child_env: ChildEnv,
    /// What serves each endpoint, by address, once observed.
    live: OnceLock<BTreeMap<String, LiveEndpoint>>,
}

impl LocalCompute {
    /// This machine (`machine`: its GPUs, found once), running jobs under `work_dir` from
    /// `child_env`, serving endpoints through `endpoints` (none: endpoint changes fail).
    pub fn new(
        machine: LocalMachine,
        endpoints: Option<LocalEndpoints>,
        work_dir: PathBuf,
        child_env: ChildEnv,
    ) -> LocalCompute {
        LocalCompute {
            machine,
            endpoints,
            work_dir,
            child_env,
            live: OnceLock::new(),
        }
    }

    async fn endpoint(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
    ) -> Result<Applied, Failure> {
        let Some(serving) = &self.endpoints else {
            return Err(ChangeError::Unsupported(
                "no serving target is available to this apply".into(),
            )
            .into());
        };
        let id = EndpointId {
            workspace: change.workspace.clone(),
            name: change.name.clone(),
        };
        if change.action() == Action::Delete {
            serving
                .remove(&id)
                .await
                .map_err(|e| ChangeError::Target(error_chain(&e)))?;
            return Ok(Applied {
                value: None,
                message: Some("stopped its router and deployments".into()),
                events: Vec::new(),
            });
        }
        let after = change
            .after
            .clone()
            .ok_or_else(|| ChangeError::Plan("the plan has no value for this endpoint".into()))?;
        let value: EndpointValue = serde_json::from_value(after.clone()).map_err(|e| {
            ChangeError::Plan(format!("the plan's endpoint value is malformed: {e}"))
        })?;
        let address = change.address.as_str();
        // What the autoscaler did since this endpoint's last apply goes to the journal
        // with this one.
        let autoscaled = match serving.observe(&id).await {
            Ok(Some(live)) => serving::scale_events(&live, last_applied(cx, address).await),
            _ => Vec::new(),
        };
        let log = RolloutLog::new(cx.events, address);
        let on_event = |event: RolloutEvent| log.record(event);
        let note = |message: &str| cx.events.note(address, message);
        let result = serving::apply(serving, &id, &value, &on_event, &note).await;
        let mut events = autoscaled;
        events.extend(log.into_events());
        match result {
            Ok(summary) => Ok(Applied {
                value: Some(after),
                message: Some(summary),
                events,
            }),
            Err(e) => Err(Failure {
                error: ChangeError::Failed(error_chain(&e)),
                events,
            }),
        }
    }
}

#[async_trait]
impl ComputeTarget for LocalCompute {
    fn name(&self) -> &'static str {
        TARGET
    }

    /// Those its router wrote on this machine.
    async fn captured_requests(
        &self,
        _store: &Store,
        address: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, store::Error> {
        let Some(serving) = &self.endpoints else {
            return Ok(Vec::new());
        };
        let Some((workspace, name)) = address
            .split_once('/')
            .and_then(|(ws, local)| Some((ws, local.strip_prefix("endpoint.")?)))
        else {
            return Ok(Vec::new());
        };
        Ok(serving.captured(
            &EndpointId {
                workspace: workspace.to_string(),
                name: name.to_string(),
            },
            limit,
        ))
    }

    /// Asks a running supervisor what serves the workspaces' local endpoints (starts
    /// none).
    async fn observe(
        &self,
        desired: &DesiredState,
        workspaces: &[String],
    ) -> Result<(), ObserveError> {
        let endpoints: Vec<EndpointId> = desired
            .resources
            .iter()
            .filter(|r| r.kind() == Kind::Endpoint)
            .filter(|r| workspaces.contains(&r.address.workspace))
            .map(|r| EndpointId {
                workspace: r.address.workspace.clone(),
                name: r.address.name.clone(),
            })
            .collect();
        let live = match (&self.endpoints, endpoints.is_empty()) {
            (Some(serving), false) => {
                serving
                    .observe_all(&endpoints)
                    .await
                    .map_err(|e| ObserveError::Failed {
                        target: TARGET,
                        message: error_chain(&e),
                        hint: Some(format!(
                            "the local supervisor's log is {}",
                            serving.log_path().display()
                        )),
                    })?
            }
            _ => BTreeMap::new(),
        };
        let _ = self.live.set(live);
        Ok(())
    }

    fn live_endpoint(&self, address: &str) -> Observed<'_> {
        match self.live.get() {
            Some(live) => Observed::Live(live.get(address)),
            None => Observed::Unknown,
        }
    }

    /// Refuses runs on local computes that need more GPUs than this machine has.
    fn plan(
        &self,
        scope: &PlanScope<'_>,
        changes: &mut Vec<ResourceChange>,
        diagnostics: &mut Diagnostics,
    ) {
        let have = self.machine.observe().gpus.len();
        for change in changes.iter().filter(|c| {
            c.workspace == scope.workspace
                && c.action() == Action::Run
                && c.target.as_deref() == Some(TARGET)
        }) {
            let Some(address) = Address::parse(&change.address) else {
                continue;
            };
            let Some(resource) = scope.desired.get(&address) else {
                continue;
            };
            let Spec::Job(spec) = &resource.spec else {
                continue;
            };
            let wanted = spec.gpus() as usize * spec.instances() as usize;
            if wanted <= have {
                continue;
            }
            let span = spec
                .gpus
                .as_ref()
                .map_or(resource.name_span.clone(), |g| g.span());
            let text = scope.snapshot.text(&resource.file).unwrap_or("");
            diagnostics.push(
                Diagnostic::error(
                    "no-gpus",
                    format!(
                        "{} needs {wanted} GPU(s), but this machine has {have} (found through the CUDA driver)",
                        resource.address.local(),
                    ),
                )
                .at(Location::new(&resource.file, text, span))
                .help("set `gpus = 0` to train on the CPU, or run the job on a compute with GPUs"),
            );
        }
    }

    async fn apply(
        &self,
        cx: &ApplyContext<'_>,
        change: &ResourceChange,
    ) -> Result<Applied, Failure> {
        match (change.kind, change.action()) {
            (Kind::Endpoint, _) => self.endpoint(cx, change).await,
            (Kind::Job, Action::Run) => {
                let after = change.after.clone().ok_or_else(|| {
                    ChangeError::Plan("the plan has no value for this job".into())
                })?;
                let message = match PlannedSweep::parse(&after).map_err(ChangeError::Plan)? {
                    // Each trial is a run of the job here, as any other.
                    Some(sweep) => {
                        sweep::run(cx, change, &after, &sweep, |_, trial| async move {
                            self.run_job(cx, change, &trial)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        })
                        .await?
                    }
                    None => self.run_job(cx, change, &after).await?,
                };
                Ok(Applied {
                    value: Some(after),
                    message: Some(message),
                    events: Vec::new(),
                })
            }
            (_, Action::Delete) => Ok(Applied {
                value: None,
                message: Some("removed from the state; stored versions are kept".into()),
                events: Vec::new(),
            }),
            (_, Action::Create | Action::Update | Action::Replace) => Ok(Applied {
                value: change.after.clone(),
                ..Applied::default()
            }),
            (kind, action) => Err(ChangeError::Unsupported(format!(
                "{} of a {kind} is not supported on the local target",
                action.as_str()
            ))
            .into()),
        }
    }
}

/// When the state last recorded an apply of `address`, in seconds since the Unix epoch
/// (0 when it never did, or can't be read: every recorded change is then new).
async fn last_applied(cx: &ApplyContext<'_>, address: &str) -> u64 {
    let Ok(state) = cx.store.state().await else {
        return 0;
    };
    state
        .state
        .resources
        .get(address)
        .and_then(|entry| humantime::parse_rfc3339_weak(&entry.applied_at).ok())
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

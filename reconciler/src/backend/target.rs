//! The compute-target contract: what the planner and the applier ask of a place where
//! jobs run and endpoints serve, in the spirit of Terraform's provider interface (read,
//! plan, apply per resource).
//!
//! The generic stages decide everything that is the same on every target: a job's run id
//! and whether it must run, a model's version, whether an endpoint is created, updated or
//! rolled out ([`crate::serving::decide`]). A [`ComputeTarget`] adds what only it knows:
//!
//! 1. **observe** what is live before planning ([`ComputeTarget::observe`]): what serves
//!    each endpoint, the target's objects, its capacity;
//! 2. **plan** its part ([`ComputeTarget::plan`]): the objects each resource needs and how
//!    they differ from the live ones, and whether the planned work fits (GPUs);
//! 3. shape an endpoint's rollout for its traffic layer ([`ComputeTarget::shape_rollout`]);
//! 4. **apply** one change ([`ComputeTarget::apply`]): run a job, bring an endpoint to its
//!    planned value through the rollout engine ([`crate::rollout::run`]), delete what is
//!    no longer declared.
//!
//! [`Targets`] holds one target per manifest `target` value; the planner and the applier
//! only ever see it. Adding a target means implementing this trait, registering it in
//! [`Targets`], and passing the contract suite (`tests/targets/`).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use serde_json::Value;

use crate::address::Address;
use crate::backend::store::{self, Store};
use crate::desired::DesiredState;
use crate::diagnostics::Diagnostics;
use crate::events::Events;
use crate::manifest::{ComputeSpec, Snapshot, Target as TargetKind};
use crate::plan::{Plan, ResourceChange, RolloutPlan};
use crate::serving::{EndpointValue, LiveEndpoint};

/// What a target sees when it adds its part to the plan of one workspace.
pub struct PlanScope<'a> {
    pub snapshot: &'a Snapshot,
    pub desired: &'a DesiredState,
    pub workspace: &'a str,
    /// Dataset content versions, model versions and job run ids, as planned.
    pub versions: &'a HashMap<Address, String>,
    /// The jobs whose runs this plan starts.
    pub running: &'a BTreeSet<Address>,
    /// The plan removes everything the workspace's state records (`cairn destroy`): the
    /// target's objects are no longer desired either.
    pub destroy: bool,
}

/// What serves an endpoint, as far as a target observed it.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// The target did not observe its serving: the planner assumes that what the state
    /// recorded still serves.
    Unknown,
    /// Observed: what serves now, `None` when nothing does.
    Live(Option<&'a LiveEndpoint>),
}

/// An endpoint whose rollout a target shapes.
pub struct EndpointRollout<'a> {
    pub address: &'a Address,
    pub compute: &'a ComputeSpec,
    /// `compute.<name>`, as the endpoint names it.
    pub compute_ref: &'a str,
    pub after: &'a EndpointValue,
    pub live: Option<&'a LiveEndpoint>,
}

/// What a change's apply can use besides the change: the plan it belongs to, its
/// workspace's store (runs and versions are recorded there) and the progress hooks.
pub struct ApplyContext<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store,
    pub events: &'a dyn Events,
}

/// What a successful change leaves in the state (`None` removes the entry), a line for
/// the report, and what happened along the way (rollout steps with their figures).
#[derive(Debug, Default)]
pub struct Applied {
    pub value: Option<Value>,
    pub message: Option<String>,
    pub events: Vec<Value>,
}

/// Why a change failed, by kind; the message is what the report shows.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The plan doesn't hold what the change needs (another Cairn made it, or it was
    /// edited).
    #[error("{0}")]
    Plan(String),
    /// The store could not record or provide what the change needs (boxed: a store
    /// error is large, and every change result carries this type).
    #[error(transparent)]
    Store(Box<store::Error>),
    /// The target could not be reached or refused the work.
    #[error("{0}")]
    Target(String),
    /// The work ran and failed: a job's attempts, a revision that never became ready, a
    /// rollout gate.
    #[error("{0}")]
    Failed(String),
    /// Nothing here can carry the change out (a target not connected to this apply).
    #[error("{0}")]
    Unsupported(String),
}

impl From<store::Error> for ChangeError {
    fn from(error: store::Error) -> ChangeError {
        ChangeError::Store(Box::new(error))
    }
}

/// A change's failure and what happened before it failed.
#[derive(Debug)]
pub struct Failure {
    pub error: ChangeError,
    pub events: Vec<Value>,
}

impl From<ChangeError> for Failure {
    fn from(error: ChangeError) -> Failure {
        Failure {
            error,
            events: Vec::new(),
        }
    }
}

/// Errors of observing a target before planning.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("observing the `{target}` target failed: {message}")]
    Failed {
        target: &'static str,
        message: String,
        hint: Option<String>,
    },
}

impl ObserveError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ObserveError::Failed { hint, .. } => hint.clone(),
        }
    }
}

/// A place where jobs run and endpoints serve. See the module documentation.
#[async_trait]
pub trait ComputeTarget: Send + Sync {
    /// The manifest's `target` value this implements: `local`, `kubernetes`.
    fn name(&self) -> &'static str;

    /// Observes what is live for the resources of `workspaces` this target hosts, before
    /// planning; what it finds is kept for the plan (once per command: a later call
    /// keeps the first observation). A target that observes nothing leaves it empty.
    async fn observe(
        &self,
        _desired: &DesiredState,
        _workspaces: &[String],
    ) -> Result<(), ObserveError> {
        Ok(())
    }

    /// What serves the endpoint at `address` (`ws/endpoint.name`), as observed.
    fn live_endpoint(&self, _address: &str) -> Observed<'_> {
        Observed::Unknown
    }

    /// The request bodies the endpoint at `address` captured for input-drift monitoring
    /// (`[endpoint.<name>.monitor]`), oldest first, at most the newest `limit`. By
    /// default, those its pods uploaded to the workspace store (`captures/<endpoint>/`);
    /// a target that keeps them elsewhere says so.
    async fn captured_requests(
        &self,
        store: &Store,
        address: &str,
        limit: usize,
    ) -> Result<Vec<Value>, store::Error> {
        let name = address
            .split_once("/endpoint.")
            .map_or(address, |(_, name)| name);
        store.captured_requests(name, limit).await
    }

    /// Fits a planned rollout to how this target moves traffic (names its backends as
    /// the target does, folds steps it can't take). The default keeps it.
    fn shape_rollout(&self, _endpoint: &EndpointRollout<'_>, _rollout: &mut RolloutPlan) {}

    /// Adds this target's part to the plan of `scope.workspace`: objects attached to the
    /// changes of the resources that own them (and changes for objects whose resource is
    /// gone), and errors for work that can't fit.
    fn plan(
        &self,
        scope: &PlanScope<'_>,
        changes: &mut Vec<ResourceChange>,
        diagnostics: &mut Diagnostics,
    );

    /// Carries out one change whose `target` is this target.
    async fn apply(
        &self,
        context: &ApplyContext<'_>,
        change: &ResourceChange,
    ) -> Result<Applied, Failure>;
}

/// The compute targets of one command, by manifest `target` value.
#[derive(Default)]
pub struct Targets {
    targets: Vec<Box<dyn ComputeTarget>>,
}

impl Targets {
    pub fn new() -> Targets {
        Targets::default()
    }

    /// Adds a target (replacing one of the same name).
    pub fn with(mut self, target: Box<dyn ComputeTarget>) -> Targets {
        self.targets.retain(|t| t.name() != target.name());
        self.targets.push(target);
        self
    }

    /// The target that hosts resources on `compute`; `None` when it isn't connected.
    pub fn for_compute(&self, compute: &ComputeSpec) -> Option<&dyn ComputeTarget> {
        self.get(kind_name(*compute.target.get_ref()))
    }

    /// The target named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn ComputeTarget> {
        self.targets
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn ComputeTarget> {
        self.targets.iter().map(|t| t.as_ref())
    }

    /// Observes every target (see [`ComputeTarget::observe`]).
    pub async fn observe(
        &self,
        desired: &DesiredState,
        workspaces: &[String],
    ) -> Result<(), ObserveError> {
        for target in &self.targets {
            target.observe(desired, workspaces).await?;
        }
        Ok(())
    }
}

/// The name of a manifest `target` value.
pub fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Local => "local",
        TargetKind::Kubernetes => "kubernetes",
    }
}

//! Applying a plan: take each affected workspace's lock, check the plan isn't stale, then
//! carry out the changes in dependency order with bounded parallelism.
//!
//! Guarantees:
//! - A change starts only after every change it depends on has succeeded. A failure
//!   skips its dependents (transitively); independent changes go on. The report lists
//!   every change with its outcome.
//! - Nothing half-done is ever visible: dataset and model versions become visible only
//!   when their marker is written, after all their files. Re-running apply after a crash
//!   or a kill converges: uploads resume (files already stored are skipped), runs without
//!   a successful record run again.
//! - `state.json` is written with compare-and-swap under the lock; one journal record per
//!   workspace is appended at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::address::Kind;
use crate::artifacts;
use crate::backend::kubernetes::traffic::{selector_of, Backend, KubeRoute, KubeTraffic};
use crate::backend::kubernetes::{
    BoxError, KubeObject, KubeTarget, ObjectKey, LABEL_DEPLOYMENT_REVISION,
};
use crate::backend::local::{job_group, ChildEnv, Exit, Launch, Target};
use crate::backend::store::{
    self, now_rfc3339, DatasetVersion, FileEntry, JournalOutcome, JournalRecord, LockGuard,
    ModelRecord, RunRecord, RunStatus, StateEntry, Store, VersionedState,
};
use crate::content::{self, HashCache};
use crate::diagnostics::error_chain;
use crate::events::Events;
use crate::manifest::source::join_inside;
use crate::manifest::Snapshot;
use crate::plan::{plural, Action, Plan, ResourceChange};
use crate::plan_objects::ObjectChange;
use crate::rollout::{self, RolloutEvent, Traffic as _, Weights};
use crate::serving::{self, EndpointId, EndpointValue, Serving};

/// How many small files (at most [`SMALL_FILE`] bytes) of one dataset are transferred at
/// once: small uploads are bound by round trips, so many go in parallel.
const TRANSFER_CONCURRENCY: usize = 32;
/// How many large files are transferred at once (each is itself a parallel multipart
/// upload on S3), which bounds the memory in flight.
const LARGE_TRANSFER_CONCURRENCY: usize = 2;
/// The size up to which a file counts as small.
const SMALL_FILE: u64 = 8 << 20;

/// How long a Deployment may take to become available.
const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a Job without a `timeout` may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Added to a Job's own timeout (its `activeDeadlineSeconds`) for scheduling and image
/// pulls.
const JOB_START_SLACK: Duration = Duration::from_secs(600);

/// Errors that stop an apply before (or instead of) running changes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{source}")]
    Locked {
        #[source]
        source: store::Error,
        waited: Duration,
    },
    #[error("the plan is stale: the state of workspace `{workspace}` changed since it was made")]
    Stale { workspace: String },
    #[error("the store of workspace `{workspace}` failed")]
    Store {
        workspace: String,
        #[source]
        source: store::Error,
    },
    #[error("no store is open for workspace `{0}`")]
    NoStore(String),
    #[error("workspace `{0}` is not locked; take its lock before applying")]
    NotLocked(String),
}

/// Locks held by an apply, renewed by a heartbeat until released.
#[derive(Debug)]
pub struct Locks {
    held: Vec<(String, LockGuard)>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// How a change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Succeeded,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// The outcome of one change.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub address: String,
    pub action: Action,
    pub status: Status,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What happened along the way (rollout steps with their figures).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Value>,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub outcomes: Vec<Outcome>,
    /// Journal keys written, one per workspace.
    pub journal: Vec<String>,
    pub duration_ms: u64,
}

impl ApplyReport {
    pub fn success(&self) -> bool {
        self.outcomes.iter().all(|o| o.status == Status::Succeeded)
    }

    pub fn count(&self, status: Status) -> usize {
        self.outcomes.iter().filter(|o| o.status == status).count()
    }
}

/// Knobs for an apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Changes carried out at once.
    pub parallelism: usize,
    /// How long to wait for a store lock held by someone else.
    pub lock_timeout: Duration,
    /// How long a lock stays valid without a heartbeat.
    pub lock_lease: Duration,
    /// `user@host`, recorded in the lock and the journal.
    pub holder: String,
    pub user: String,
    /// The command line, recorded in the lock.
    pub command: String,
    /// Scratch space for job runs (`<root>/.cairn/work`).
    pub work_dir: PathBuf,
    /// The environment local job processes start from (the CLI's allow-listed
    /// variables); a job's declared `env` is set on top.
    pub child_env: ChildEnv,
}

/// Everything an apply needs.
pub struct Applier<'a> {
    pub snapshot: &'a Snapshot,
    pub stores: &'a BTreeMap<String, Store>,
    pub target: &'a dyn Target,
    /// Serves endpoints; plans with endpoint changes fail those changes without one.
    pub serving: Option<&'a dyn Serving>,
    /// The clusters; plans with Kubernetes objects fail those changes without one.
    pub kube: Option<&'a dyn KubeTarget>,
    pub cache: &'a HashCache,
    pub events: &'a dyn Events,
    pub options: ApplyOptions,
}

/// What a successful change leaves in the state (`None` removes the entry).
struct Done {
    value: Option<Value>,
    message: Option<String>,
    events: Vec<Value>,
}

/// A change's failure: the message, and what happened before it failed.
struct Failed {
    message: String,
    events: Vec<Value>,
}

impl From<String> for Failed {
    fn from(message: String) -> Failed {
        Failed {
            message,
            events: Vec::new(),
        }
    }
}

impl From<&str> for Failed {
    fn from(message: &str) -> Failed {
        Failed::from(message.to_string())
    }
}

impl Applier<'_> {
    /// Applies `plan`. Returns an error only if nothing could be started (lock, stale
    /// plan, unreachable store); failures of single changes are in the report.
    /// Takes the locks of `workspaces` (in name order, so two applies can't wait on each
    /// other), waiting up to the lock timeout, and keeps them alive with a heartbeat until
    /// they are released. Take them before planning, so the plan can't go stale while
    /// waiting.
    pub async fn lock<'w>(
        &self,
        workspaces: impl IntoIterator<Item = &'w str>,
    ) -> Result<Locks, Error> {
        let names: BTreeSet<&str> = workspaces.into_iter().collect();
        let mut held: Vec<(String, LockGuard)> = Vec::new();
        for ws in names {
            let Some(store) = self.stores.get(ws) else {
                self.release(held).await;
                return Err(Error::NoStore(ws.to_string()));
            };
            match self.lock_one(store).await {
                Ok(guard) => held.push((ws.to_string(), guard)),
                Err(e) => {
                    self.release(held).await;
                    return Err(e);
                }
            }
        }
        let heartbeat = self.heartbeat(&held);
        Ok(Locks { held, heartbeat })
    }

    /// Releases locks without applying anything.
    pub async fn unlock(&self, locks: Locks) {
        locks.heartbeat.abort();
        self.release(locks.held).await;
    }

    /// Applies `plan` under `locks` (from [`Applier::lock`], covering every workspace the
    /// plan changes), then releases them. Returns an error only if nothing could be started
    /// (stale plan, unreachable store); failures of single changes are in the report.
    pub async fn apply(&self, plan: &Plan, locks: Locks) -> Result<ApplyReport, Error> {
        let started = Instant::now();
        let started_at = now_rfc3339();
        let changes: Vec<&ResourceChange> = plan.changes().collect();
        let touched: BTreeSet<&str> = changes.iter().map(|c| c.workspace.as_str()).collect();
        if let Some(ws) = touched
            .iter()
            .find(|ws| !locks.held.iter().any(|(h, _)| h == *ws))
        {
            let ws = ws.to_string();
            self.unlock(locks).await;
            return Err(Error::NotLocked(ws));
        }

        let result = self.run_changes(plan, &changes, &touched).await;
        locks.heartbeat.abort();
        let guards = locks.held;
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.release(guards).await;
                return Err(e);
            }
        };

        let mut journal = Vec::new();
        let plan_hash = plan.hash();
        for ws in &touched {
            let store = &self.stores[*ws];
            let mine: Vec<JournalOutcome> = outcomes
                .iter()
                .filter(|o| o.address.split('/').next() == Some(*ws))
                .map(|o| JournalOutcome {
                    address: o.address.clone(),
                    action: o.action.as_str().to_string(),
                    status: o.status.as_str().to_string(),
                    duration_ms: o.duration_ms,
                    message: o.message.clone(),
                    events: o.events.clone(),
                })
                .collect();
            let record = JournalRecord {
                id: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
                workspace: ws.to_string(),
                started_at: started_at.clone(),
                finished_at: now_rfc3339(),
                duration_ms: started.elapsed().as_millis() as u64,
                revision: plan.revision.clone(),
                user: self.options.user.clone(),
                plan_hash: plan_hash.clone(),
                success: mine.iter().all(|o| o.status == "succeeded"),
                outcomes: mine,
            };
            match store.append_journal(&record).await {
                Ok(key) => journal.push(key),
                Err(e) => self
                    .events
                    .note(ws, &format!("could not write the journal: {e}")),
            }
        }
        self.release(guards).await;
        Ok(ApplyReport {
            outcomes,
            journal,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn lock_one(&self, store: &Store) -> Result<LockGuard, Error> {
        let started = Instant::now();
        let mut announced = false;
        loop {
            match store
                .try_lock(
                    &self.options.holder,
                    &self.options.command,
                    self.options.lock_lease,
                )
                .await
            {
                Ok(guard) => return Ok(guard),
                Err(store::Error::Locked { holder, .. })
                    if started.elapsed() < self.options.lock_timeout =>
                {
                    if !announced {
                        self.events.waiting_for_lock(&store.url(), &holder);
                        announced = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(source @ store::Error::Locked { .. }) => {
                    return Err(Error::Locked {
                        source,
                        waited: started.elapsed(),
                    });
                }
                Err(store::Error::PreconditionFailed { .. }) => {
                    // Someone else took it between our read and write: wait like a lock.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(Error::Store {
                        workspace: store.url(),
                        source,
                    });
                }
            }
        }
    }

    fn heartbeat(&self, guards: &[(String, LockGuard)]) -> tokio::task::JoinHandle<()> {
        let mut held: Vec<(Store, LockGuard)> = guards
            .iter()
            .map(|(ws, g)| (self.stores[ws].clone(), g.clone()))
            .collect();
        let every = (self.options.lock_lease / 3).max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for (store, guard) in &mut held {
                    let _ = store.renew_lock(guard).await;
                }
            }
        })
    }

    async fn release(&self, guards: Vec<(String, LockGuard)>) {
        for (ws, guard) in guards {
            let store = &self.stores[&ws];
            // The heartbeat renewed the lock, so its etag moved on: release by id.
            let _ = store.force_unlock(&guard.info.id).await;
        }
    }

    async fn run_changes(
        &self,
        plan: &Plan,
        changes: &[&ResourceChange],
        touched: &BTreeSet<&str>,
    ) -> Result<Vec<Outcome>, Error> {
        // The plan must still describe the store as it is.
        let mut states: HashMap<String, VersionedState> = HashMap::new();
        for ws in touched {
            let store = &self.stores[*ws];
            let state = store.state().await.map_err(|source| Error::Store {
                workspace: ws.to_string(),
                source,
            })?;
            let planned = plan.workspaces.iter().find(|w| w.name == *ws);
            if planned.map(|w| &w.state_etag) != Some(&state.etag) {
                return Err(Error::Stale {
                    workspace: ws.to_string(),
                });
            }
            states.insert(ws.to_string(), state);
        }
        let states = Mutex::new(states);

        let index: HashMap<&str, usize> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.address.as_str(), i))
            .collect();
        let deps: Vec<Vec<usize>> = changes
            .iter()
            .map(|c| {
                c.depends_on
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        let mut status: Vec<Option<Status>> = vec![None; changes.len()];
        let mut outcomes: Vec<Option<Outcome>> = vec![None; changes.len()];
        let mut started = vec![false; changes.len()];
        let mut in_flight = FuturesUnordered::new();
        let mut last_save = Instant::now();
        let parallelism = self.options.parallelism.max(1);

        loop {
            // Skip what can no longer run; start what is ready.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for i in 0..changes.len() {
                    if started[i] {
                        continue;
                    }
                    if let Some(bad) = deps[i]
                        .iter()
                        .find(|&&d| matches!(status[d], Some(Status::Failed | Status::Skipped)))
                    {
                        started[i] = true;
                        status[i] = Some(Status::Skipped);
                        let message =
                            format!("skipped because {} did not succeed", changes[*bad].address);
                        self.events
                            .finished(&changes[i].address, "skipped", Some(&message));
                        outcomes[i] = Some(Outcome {
                            address: changes[i].address.clone(),
                            action: changes[i].action(),
                            status: Status::Skipped,
                            duration_ms: 0,
                            message: Some(message),
                            events: Vec::new(),
                        });
                        progressed = true;
                    }
                }
            }
            for i in 0..changes.len() {
                if in_flight.len() >= parallelism {
                    break;
                }
                if started[i]
                    || !deps[i]
                        .iter()
                        .all(|&d| status[d] == Some(Status::Succeeded))
                {
                    continue;
                }
                started[i] = true;
                let change = changes[i];
                self.events.started(&change.address, change.action());
                in_flight.push(async move {
                    let t = Instant::now();
                    let result = self.execute(plan, change).await;
                    (i, result, t.elapsed())
                });
            }
            let Some((i, result, elapsed)) = in_flight.next().await else {
                break;
            };
            let change = changes[i];
            let (s, message, events) = match result {
                Ok(done) => {
                    let mut states = states.lock().expect("state lock");
                    let state = states.get_mut(&change.workspace).expect("state loaded");
                    match done.value {
                        Some(value) => {
                            state.state.resources.insert(
                                change.address.clone(),
                                StateEntry {
                                    kind: change.kind,
                                    value,
                                    revision: plan.revision.clone(),
                                    applied_at: now_rfc3339(),
                                },
                            );
                        }
                        None => {
                            state.state.resources.remove(&change.address);
                        }
                    }
                    (Status::Succeeded, done.message, done.events)
                }
                Err(failed) => (Status::Failed, Some(failed.message), failed.events),
            };
            status[i] = Some(s);
            self.events
                .finished(&change.address, s.as_str(), message.as_deref());
            outcomes[i] = Some(Outcome {
                address: change.address.clone(),
                action: change.action(),
                status: s,
                duration_ms: elapsed.as_millis() as u64,
                message,
                events,
            });
            // Save progress about once a second, so a crash loses little without
            // rewriting a large state after every change. What a crash does lose is
            // recovered by the next plan: committed versions and successful runs are found
            // in the store and recorded again.
            if last_save.elapsed() > Duration::from_secs(1) {
                self.save_states(&states).await?;
                last_save = Instant::now();
            }
        }
        self.save_states(&states).await?;
        Ok(outcomes.into_iter().flatten().collect())
    }

    async fn save_states(
        &self,
        states: &Mutex<HashMap<String, VersionedState>>,
    ) -> Result<(), Error> {
        let snapshot: Vec<(String, VersionedState)> = states
            .lock()
            .expect("state lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (ws, mut state) in snapshot {
            let store = &self.stores[&ws];
            store
                .save_state(&mut state)
                .await
                .map_err(|source| Error::Store {
                    workspace: ws.clone(),
                    source,
                })?;
            states.lock().expect("state lock").insert(ws, state);
        }
        Ok(())
    }

    /// Carries out one change. Errors are messages for the report.
    async fn execute(&self, plan: &Plan, change: &ResourceChange) -> Result<Done, Failed> {
        if !change.objects.is_empty() || on_kubernetes(change) {
            return self.kubernetes(plan, change).await;
        }
        if change.kind == Kind::Endpoint {
            return self.endpoint(change).await;
        }
        self.execute_other(plan, change)
            .await
            .map(|(value, message)| Done {
                value,
                message,
                events: Vec::new(),
            })
            .map_err(Failed::from)
    }

    /// A change on Kubernetes: its objects applied in order (a Job's run waited for,
    /// Deployments waited for until available before Services and routes move traffic
    /// to them), then the objects no longer desired deleted. An endpoint whose traffic
    /// moves is rolled out by the rollout engine on its HTTPRoute or Service between
    /// the two.
    async fn kubernetes(&self, plan: &Plan, change: &ResourceChange) -> Result<Done, Failed> {
        let mut applied = 0;
        let mut deleted = 0;
        let mut events = Vec::new();
        let mut summary = None;
        if !change.objects.is_empty() {
            let kube = self.kube.ok_or(
                "this plan changes Kubernetes objects, but this apply has no cluster connection",
            )?;
            let (deletes, upserts): (Vec<&ObjectChange>, Vec<&ObjectChange>) = change
                .objects
                .iter()
                .partition(|o| o.action == Action::Delete);
            // Deployments first, then what routes traffic to them once they are ready.
            let (workloads, rest): (Vec<&ObjectChange>, Vec<&ObjectChange>) = upserts
                .into_iter()
                .partition(|o| matches!(o.kind.as_str(), "Deployment" | "Job"));
            applied += self.apply_batch(plan, change, kube, &workloads).await?;
            let moving = match change.rollout {
                Some(_) if change.kind == Kind::Endpoint => {
                    kube_route(change, kube, &rest, &deletes).await?
                }
                _ => None,
            };
            match moving {
                None => applied += self.apply_batch(plan, change, kube, &rest).await?,
                Some(moving) => {
                    let (route, others): (Vec<&ObjectChange>, Vec<&ObjectChange>) =
                        rest.into_iter().partition(|o| o.key() == moving.route_key);
                    applied += self.apply_batch(plan, change, kube, &others).await?;
                    match self.kube_rollout(change, kube, moving, &mut events).await {
                        Ok(done) => summary = Some(done),
                        Err(message) => return Err(Failed { message, events }),
                    }
                    applied += self.apply_batch(plan, change, kube, &route).await?;
                }
            }
            if !deletes.is_empty() {
                let objects: Vec<(ObjectKey, String)> = deletes
                    .iter()
                    .map(|o| (o.key(), o.api_version.clone()))
                    .collect();
                kube.delete(&change.workspace, &objects)
                    .await
                    .map_err(|e| failed("deleting objects", e))?;
                deleted = objects.len();
            }
        }
        let value = if change.action() == Action::Delete {
            None
        } else {
            change.after.clone()
        };
        let objects = match (applied, deleted) {
            (0, 0) => None,
            (a, 0) => Some(format!("applied {}", plural(a, "Kubernetes object"))),
            (0, d) => Some(format!("deleted {}", plural(d, "Kubernetes object"))),
            // Two or more objects.
            (a, d) => Some(format!("applied {a} and deleted {d} Kubernetes objects")),
        };
        let message = match (summary, objects) {
            (Some(s), Some(o)) => Some(format!("{s}; {o}")),
            (s, o) => s.or(o),
        };
        Ok(Done {
            value,
            message,
            events,
        })
    }

    /// Applies one batch of a change's objects, then waits for its Deployments to be
    /// available and a planned run's Job to finish. Returns how many it changed.
    async fn apply_batch(
        &self,
        plan: &Plan,
        change: &ResourceChange,
        kube: &dyn KubeTarget,
        batch: &[&ObjectChange],
    ) -> Result<usize, String> {
        let replace: BTreeSet<ObjectKey> = batch
            .iter()
            .filter(|o| o.action == Action::Replace)
            .map(|o| o.key())
            .collect();
        // Objects the plan showed drifting are taken back from whoever changed them
        // (the plan was approved); others are applied without force, so an edit made
        // since the plan is a conflict, not silently overwritten.
        for force in [false, true] {
            let objects: Vec<KubeObject> = batch
                .iter()
                .filter(|o| (o.action == Action::Update) == force)
                .filter_map(|o| o.desired())
                .collect();
            if !objects.is_empty() {
                kube.apply(&objects, force, &replace)
                    .await
                    .map_err(|e| failed("applying objects", e))?;
            }
        }
        // An endpoint's Deployments come up together; the first that fails says why.
        let deployments: Vec<_> = batch
            .iter()
            .filter(|o| o.kind == "Deployment")
            .map(|o| {
                self.events.note(
                    &change.address,
                    &format!("waiting for {} to be available", o.describe()),
                );
                async move {
                    kube.wait_available(&o.key(), DEPLOYMENT_TIMEOUT)
                        .await
                        .map_err(|e| failed(&o.describe(), e))
                }
            })
            .collect();
        futures::future::try_join_all(deployments).await?;
        if change.action() == Action::Run {
            for o in batch.iter().filter(|o| o.kind == "Job") {
                self.wait_job(plan, change, kube, o).await?;
            }
        }
        Ok(batch.iter().filter(|o| o.action != Action::NoOp).count())
    }

    /// Moves an endpoint's traffic on Kubernetes by its rollout policy. On a failed gate
    /// (traffic is back where it was) the revisions this change started are deleted
    /// again, and the error says why.
    async fn kube_rollout(
        &self,
        change: &ResourceChange,
        kube: &dyn KubeTarget,
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
        let log = RolloutLog::new(self.events, address);
        let on_event = |event: RolloutEvent| log.record(event);
        self.events.note(
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
        let outcome = rollout::run(&traffic, &from, &to, &policy, &on_event).await;
        events.extend(log.into_events());
        let failure = match outcome {
            Ok(rollout::Outcome::Promoted { weights }) => {
                return Ok(format!(
                    "promoted: {}",
                    crate::rollout::describe_weights(&weights)
                ))
            }
            Ok(rollout::Outcome::RolledBack { step, reason, .. }) => {
                serving::Error::RolledBack { step, reason }
            }
            Ok(rollout::Outcome::Halted { step, reason, .. }) => {
                return Err(serving::Error::Halted { step, reason }.to_string())
            }
            Ok(rollout::Outcome::NotReady { deployment }) => {
                serving::Error::NotReady { deployment }
            }
            Err(e) => serving::Error::Rollout(e),
        };
        // Traffic is back on the previous revisions: the route names only those again,
        // and the revisions this change started are deleted.
        if let Err(e) = traffic.set_weights(&live).await {
            return Err(format!("{failure}; restoring the route: {e}"));
        }
        if !started.is_empty() {
            self.events.note(
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

    /// Waits for a run's Job, then checks the pod stored its outputs and records the
    /// run in the store.
    async fn wait_job(
        &self,
        plan: &Plan,
        change: &ResourceChange,
        kube: &dyn KubeTarget,
        job: &ObjectChange,
    ) -> Result<(), String> {
        let store = &self.stores[&change.workspace];
        let after = change
            .after
            .as_ref()
            .ok_or("the plan has no value for this job")?;
        let JobValue {
            run_id,
            inputs,
            outputs,
            retries,
            timeout,
        } = JobValue::parse(after)?;
        let timeout = timeout.map_or(JOB_TIMEOUT, |t| t + JOB_START_SLACK);
        self.events.note(
            &change.address,
            &format!("waiting for {} (run {run_id})", job.describe()),
        );
        let started_at = now_rfc3339();
        let t = Instant::now();
        let address = change.address.clone();
        let events = self.events;
        let mut on_log = move |line: &str| events.note(&address, &format!("│ {line}"));
        let waited = kube.wait_job(&job.key(), timeout, &mut on_log).await;
        let mut error = waited.err().map(|e| error_chain(&*e));
        let mut produced = BTreeMap::new();
        let mut metrics = None;
        if error.is_none() {
            for (name, reference) in &outputs {
                let model = reference
                    .split('@')
                    .next()
                    .unwrap_or(reference)
                    .trim_start_matches("model.");
                match store.model_version(model, &run_id).await {
                    Ok(Some(record)) => {
                        metrics = metrics.or(record.metrics);
                        produced.insert(name.clone(), reference.clone());
                    }
                    Ok(None) => {
                        error = Some(format!(
                            "{} succeeded but model.{model}@{run_id} is not in the store: the pod's `cairn upload` did not store it",
                            job.describe()
                        ));
                        break;
                    }
                    Err(e) => {
                        error = Some(error_chain(&e));
                        break;
                    }
                }
            }
        }
        let record = RunRecord {
            job: change.name.clone(),
            run_id: run_id.clone(),
            status: if error.is_none() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            attempts: retries + 1,
            started_at,
            finished_at: now_rfc3339(),
            duration_ms: t.elapsed().as_millis() as u64,
            exit_code: None,
            inputs,
            outputs: produced,
            metrics,
            logs: Vec::new(),
            error: error.clone(),
            commit: plan.revision.clone(),
        };
        store.put_run(&record).await.map_err(|e| error_chain(&e))?;
        match error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Brings an endpoint's serving to the plan's `after` (or removes it).
    async fn endpoint(&self, change: &ResourceChange) -> Result<Done, Failed> {
        let Some(serving) = self.serving else {
            return Err("no serving target is available to this apply".into());
        };
        let id = EndpointId {
            workspace: change.workspace.clone(),
            name: change.name.clone(),
        };
        if change.action() == Action::Delete {
            serving
                .remove(&id)
                .await
                .map_err(|e| Failed::from(error_chain(&e)))?;
            return Ok(Done {
                value: None,
                message: Some("stopped its router and deployments".into()),
                events: Vec::new(),
            });
        }
        let after = change
            .after
            .clone()
            .ok_or("the plan has no value for this endpoint")?;
        let value: EndpointValue = serde_json::from_value(after.clone())
            .map_err(|e| Failed::from(format!("the plan's endpoint value is malformed: {e}")))?;
        let address = change.address.as_str();
        let log = RolloutLog::new(self.events, address);
        let on_event = |event: RolloutEvent| log.record(event);
        let progress = NoteTo {
            events: self.events,
            address,
        };
        let result = serving::apply(serving, &id, &value, &on_event, &progress).await;
        let events = log.into_events();
        match result {
            Ok(summary) => Ok(Done {
                value: Some(after),
                message: Some(summary),
                events,
            }),
            Err(e) => Err(Failed {
                message: error_chain(&e),
                events,
            }),
        }
    }

    async fn execute_other(
        &self,
        plan: &Plan,
        change: &ResourceChange,
    ) -> Result<(Option<Value>, Option<String>), String> {
        let store = &self.stores[&change.workspace];
        let after = change.after.clone();
        let done = |value: Option<Value>, message: Option<String>| Ok((value, message));
        match (change.kind, change.action()) {
            (_, Action::Delete) => done(
                None,
                Some("removed from the state; stored versions are kept".into()),
            ),
            (Kind::Dataset, Action::Create | Action::Update) => {
                let after = after.ok_or("the plan has no value for this dataset")?;
                self.upload_source(plan, change, store, &after, SourceKind::Dataset)
                    .await?;
                done(Some(after), None)
            }
            (Kind::Model, Action::Create | Action::Update) => {
                let after = after.ok_or("the plan has no value for this model")?;
                if after.get("from_job").is_some_and(|j| !j.is_null()) {
                    let version = str_field(&after, "version")?;
                    let present = store
                        .has_model_version(&change.name, &version)
                        .await
                        .map_err(|e| error_chain(&e))?;
                    if !present {
                        return Err(format!(
                            "model version {version} is not in the store: the job that produces it did not record it"
                        ));
                    }
                } else {
                    self.upload_source(plan, change, store, &after, SourceKind::Model)
                        .await?;
                }
                done(Some(after), None)
            }
            (Kind::Job, Action::Run) => {
                let after = after.ok_or("the plan has no value for this job")?;
                let message = self.run_job(plan, change, store, &after).await?;
                done(Some(after), Some(message))
            }
            (_, Action::Create | Action::Update | Action::Replace) => done(after, None),
            (kind, action) => Err(format!(
                "{} of a {kind} is not supported yet",
                action.as_str()
            )),
        }
    }

    /// Uploads a dataset version (or an imported model version) from the manifests'
    /// source folder, storing only files no earlier version holds.
    async fn upload_source(
        &self,
        plan: &Plan,
        change: &ResourceChange,
        store: &Store,
        after: &Value,
        kind: SourceKind,
    ) -> Result<(), String> {
        let version = str_field(after, "version")?;
        let source = str_field(after, "source")?;
        let path = join_inside(&change.workspace, &source)
            .ok_or("the source leads outside the manifests root")?;
        let address = change.address.clone();
        let on_bytes = |_n: u64| {};
        let content = tokio::task::block_in_place(|| {
            content::hash_source(self.snapshot, &path, self.cache, &on_bytes)
        })
        .map_err(|e| error_chain(&e))?;
        if content.version != version {
            return Err(format!(
                "the content changed since the plan was made (planned version {version}, found {}); run `cairn plan` again",
                content.version
            ));
        }
        let name = &change.name;
        let already = match kind {
            SourceKind::Dataset => store.has_dataset_version(name, &version).await,
            SourceKind::Model => store.has_model_version(name, &version).await,
        }
        .map_err(|e| error_chain(&e))?;
        if already {
            return Ok(());
        }
        // Files an earlier version already stores are referenced, not copied.
        let mut known: HashMap<String, String> = HashMap::new();
        if kind == SourceKind::Dataset {
            if let Some(old) = change
                .before
                .as_ref()
                .and_then(|b| b.get("version"))
                .and_then(Value::as_str)
            {
                if let Ok(Some(previous)) = store.dataset_version(name, old).await {
                    known.extend(previous.files.into_iter().map(|f| (f.sha256, f.key)));
                }
            }
        }
        let mut entries = Vec::with_capacity(content.files.len());
        let mut uploads = Vec::new();
        for file in &content.files {
            let key = match known.get(&file.sha256) {
                Some(key) => key.clone(),
                None => {
                    let key = match kind {
                        SourceKind::Dataset => Store::dataset_file_key(name, &version, &file.path),
                        SourceKind::Model => Store::model_file_key(name, &version, &file.path),
                    };
                    let rel = if content.files.len() == 1
                        && self.snapshot.entry(&path) == Some(crate::manifest::EntryKind::File)
                    {
                        path.clone()
                    } else {
                        format!("{path}/{}", file.path)
                    };
                    uploads.push((key.clone(), rel, file.size, file.sha256.clone()));
                    key
                }
            };
            entries.push(FileEntry {
                path: file.path.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
                key,
            });
        }
        if !uploads.is_empty() {
            self.events.note(
                &address,
                &format!(
                    "uploading {} file(s), {}",
                    uploads.len(),
                    crate::plan::human_bytes(uploads.iter().map(|u| u.2).sum())
                ),
            );
        }
        let objects = store.objects().clone();
        // Resume: files an interrupted apply already stored are not sent again. One listing
        // of the version's folder finds them (not one request per file).
        let mut stored: HashMap<String, u64> = HashMap::new();
        if !uploads.is_empty() {
            let prefix = match kind {
                SourceKind::Dataset => Store::dataset_file_key(name, &version, ""),
                SourceKind::Model => Store::model_file_key(name, &version, ""),
            };
            if let Ok(listed) = objects.list(&prefix).await {
                stored.extend(listed.into_iter().map(|m| (m.key, m.size)));
            }
        }
        uploads.retain(|(key, _, size, _)| stored.get(key) != Some(size));
        let (small, large): (Vec<_>, Vec<_>) = uploads
            .into_iter()
            .partition(|(_, _, size, _)| *size <= SMALL_FILE);
        for (batch, parallel) in [
            (small, TRANSFER_CONCURRENCY),
            (large, LARGE_TRANSFER_CONCURRENCY),
        ] {
            let results: Vec<Result<(), String>> =
                futures::stream::iter(batch.into_iter().map(|(key, rel, size, sha256)| {
                    let objects = objects.clone();
                    let address = address.clone();
                    async move {
                        let result = match self.snapshot.disk_path(&rel) {
                            // Stored only if the bytes are still the ones hashed (the hash
                            // may come from the cache, by fingerprint).
                            Some(disk) => objects
                                .put_file_checked(&key, &disk, &sha256)
                                .await
                                .map(|_| ()),
                            None => {
                                let bytes = self.snapshot.read(&rel).map_err(|e| e.to_string())?;
                                objects
                                    .put(&key, bytes.into(), store::Condition::None)
                                    .await
                                    .map(|_| ())
                            }
                        };
                        self.events.bytes(&address, size);
                        result.map_err(|e| error_chain(&e))
                    }
                }))
                .buffer_unordered(parallel)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<()>, String>>()?;
        }

        let total_bytes = content.total_bytes;
        match kind {
            SourceKind::Dataset => store
                .commit_dataset_version(&DatasetVersion {
                    dataset: name.clone(),
                    version,
                    files: entries,
                    total_bytes,
                    created_at: now_rfc3339(),
                    commit: plan.revision.clone(),
                })
                .await
                .map_err(|e| error_chain(&e)),
            SourceKind::Model => store
                .commit_model_version(&ModelRecord {
                    model: name.clone(),
                    version,
                    format: after
                        .get("format")
                        .and_then(Value::as_str)
                        .unwrap_or("custom")
                        .to_string(),
                    job: None,
                    run_id: None,
                    inputs: BTreeMap::new(),
                    commit: plan.revision.clone(),
                    metrics: None,
                    files: entries,
                    created_at: now_rfc3339(),
                })
                .await
                .map_err(|e| error_chain(&e)),
        }
    }

    /// Runs a job on the local target with retries; on success stores its outputs as
    /// model versions with lineage, and the run record.
    async fn run_job(
        &self,
        plan: &Plan,
        change: &ResourceChange,
        store: &Store,
        after: &Value,
    ) -> Result<String, String> {
        let job = change.name.clone();
        let JobValue {
            run_id,
            inputs,
            outputs,
            retries,
            timeout,
        } = JobValue::parse(after)?;
        let work = self.options.work_dir.join("runs").join(&job).join(&run_id);
        // A job an earlier, killed apply left running in this folder is stopped, not
        // run a second time beside it; other runs' leftovers are removed.
        if let Some(pgid) = job_group::reap_leftover(&work).await {
            self.events.note(
                &change.address,
                &format!("stopped process group {pgid}, left running here by an earlier apply"),
            );
        }
        remove_leftover_runs(&work).await;
        let command: Vec<String> =
            serde_json::from_value(after.get("command").cloned().unwrap_or_default())
                .map_err(|_| "the job has no command".to_string())?;
        let env: BTreeMap<String, String> =
            serde_json::from_value(after.get("env").cloned().unwrap_or_default())
                .unwrap_or_default();
        let gpus = after.get("gpus").and_then(Value::as_u64).unwrap_or(0) as usize;

        // Inputs: each version's files, fetched into the run's folder.
        let mut paths: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut env_vars = env.clone();
        for (name, reference) in &inputs {
            let dest = work.join("inputs").join(name);
            self.fetch_input(store, reference, &dest).await?;
            env_vars.insert(
                format!("CAIRN_INPUT_{}", env_name(name)),
                dest.display().to_string(),
            );
            paths.insert(format!("inputs.{name}"), dest);
        }
        for name in outputs.keys() {
            let dest = work.join("outputs").join(name);
            env_vars.insert(
                format!("CAIRN_OUTPUT_{}", env_name(name)),
                dest.display().to_string(),
            );
            paths.insert(format!("outputs.{name}"), dest);
        }
        env_vars.insert("CAIRN_RUN_ID".into(), run_id.clone());
        env_vars.insert("CAIRN_JOB".into(), change.address.clone());
        let command: Vec<String> = command
            .iter()
            .map(|arg| expand(arg, &paths, &run_id))
            .collect();
        let gpu_ids: Vec<u32> = self
            .target
            .observe()
            .gpus
            .iter()
            .take(gpus)
            .map(|g| g.index)
            .collect();

        let started_at = now_rfc3339();
        let t = Instant::now();
        let mut logs = Vec::new();
        let mut last: Option<Exit> = None;
        let mut spawn_error = None;
        let mut last_launch: Option<Launch> = None;
        let attempts = retries + 1;
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.events
                    .note(&change.address, &format!("attempt {attempt} of {attempts}"));
            }
            for name in outputs.keys() {
                let dir = work.join("outputs").join(name);
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let log = work.join(format!("attempt-{attempt}.log"));
            let launch = Launch {
                command: command.clone(),
                env: env_vars.clone(),
                workdir: work.clone(),
                log: log.clone(),
                timeout,
                gpus: gpu_ids.clone(),
                base_env: self.options.child_env.clone(),
            };
            let result = self.target.run(&launch).await;
            last_launch = Some(launch.clone());
            let key = Store::run_log_key(&job, &run_id, attempt);
            if log.exists() && store.objects().put_file(&key, &log).await.is_ok() {
                logs.push(key);
            }
            match result {
                Ok(exit) => {
                    let ok = exit.success();
                    last = Some(exit);
                    if ok {
                        break;
                    }
                }
                Err(e) => {
                    spawn_error = Some(error_chain(&e));
                    break;
                }
            }
        }
        let finished_at = now_rfc3339();
        let duration_ms = t.elapsed().as_millis() as u64;
        let succeeded = last.as_ref().is_some_and(Exit::success);
        let attempts_made = logs.len().max(1) as u32;
        // From the first output folder that has a `metrics.json`, else the run's folder.
        let folders: Vec<PathBuf> = outputs
            .keys()
            .map(|name| work.join("outputs").join(name))
            .chain(std::iter::once(work.clone()))
            .collect();
        let metrics = artifacts::read_metrics(folders.iter().map(PathBuf::as_path));

        let mut error = spawn_error;
        let mut produced = BTreeMap::new();
        if succeeded {
            for (name, reference) in &outputs {
                let model = reference
                    .split('@')
                    .next()
                    .unwrap_or(reference)
                    .trim_start_matches("model.")
                    .to_string();
                let dir = work.join("outputs").join(name);
                match self
                    .store_output(
                        plan,
                        store,
                        &model,
                        &run_id,
                        &job,
                        &dir,
                        &inputs,
                        metrics.clone(),
                    )
                    .await
                {
                    Ok(()) => {
                        produced.insert(name.clone(), reference.clone());
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        } else if error.is_none() {
            let exit = last.as_ref();
            let tail = match &last_launch {
                Some(launch) => match self.target.logs(launch, 5).await {
                    t if t.is_empty() => String::new(),
                    t => format!("; last lines of the log:\n{t}"),
                },
                None => String::new(),
            };
            error = Some(match exit {
                Some(e) if e.timed_out => format!(
                    "timed out after {} (attempt {attempts_made} of {attempts}){tail}",
                    humantime::format_duration(Duration::from_secs(e.duration.as_secs()))
                ),
                Some(e) => format!(
                    "exited with code {} (attempt {attempts_made} of {attempts}){tail}",
                    e.code
                        .map_or("none (killed by a signal)".into(), |c| c.to_string())
                ),
                None => "did not run".into(),
            });
        }
        let record = RunRecord {
            job: job.clone(),
            run_id: run_id.clone(),
            status: if error.is_none() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            attempts: attempts_made,
            started_at,
            finished_at,
            duration_ms,
            exit_code: last.as_ref().and_then(|e| e.code),
            inputs: inputs.clone(),
            outputs: produced,
            metrics,
            logs,
            error: error.clone(),
            commit: plan.revision.clone(),
        };
        // Its outputs and logs are stored: the run's folder (a copy of every input) goes.
        remove_run_folder(&work).await;
        store.put_run(&record).await.map_err(|e| error_chain(&e))?;
        match error {
            None => Ok(format!(
                "run {run_id} succeeded in {}",
                humantime::format_duration(Duration::from_secs(duration_ms / 1000))
            )),
            Some(e) => Err(e),
        }
    }

    async fn fetch_input(&self, store: &Store, reference: &str, dest: &Path) -> Result<(), String> {
        artifacts::fetch(store, reference, dest)
            .await
            .map(|_| ())
            .map_err(|e| format!("input {}", error_chain(&e)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_output(
        &self,
        plan: &Plan,
        store: &Store,
        model: &str,
        run_id: &str,
        job: &str,
        dir: &Path,
        inputs: &BTreeMap<String, String>,
        metrics: Option<Value>,
    ) -> Result<(), String> {
        let format = plan
            .resource_changes
            .iter()
            .find(|c| c.kind == Kind::Model && c.name == model)
            .and_then(|c| c.after.as_ref())
            .and_then(|a| a.get("format"))
            .and_then(Value::as_str)
            .unwrap_or("custom")
            .to_string();
        let lineage = artifacts::Lineage {
            job: Some(job.to_string()),
            run_id: Some(run_id.to_string()),
            inputs: inputs.clone(),
            commit: plan.revision.clone(),
            metrics,
        };
        artifacts::store_model(store, model, run_id, &format, dir, lineage)
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }
}

/// Removes a run's folder once its outputs and logs are stored.
async fn remove_run_folder(work: &Path) {
    let work = work.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
}

/// Removes the folders other runs of the same job left behind (an apply killed before
/// it cleaned up), except one whose job still runs (another apply's), so `.cairn/work`
/// holds at most the runs in progress.
async fn remove_leftover_runs(work: &Path) {
    let Some(job_dir) = work.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == work || !path.is_dir() {
            continue;
        }
        if !job_group::running(&path) {
            remove_run_folder(&path).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Dataset,
    Model,
}

/// Checks a downloaded file against the SHA-256 its version recorded.
pub(crate) fn verify_sha256(path: &Path, expected: &str, what: &str) -> Result<(), String> {
    let actual = tokio::task::block_in_place(|| content::sha256_file(path))
        .map_err(|e| format!("cannot read back {}: {e}", path.display()))?;
    if actual != expected {
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "{what}: `{}` arrived with SHA-256 {actual}, but the version records {expected}; the stored copy is damaged",
            path.display()
        ));
    }
    Ok(())
}

/// Passes the endpoint orchestration's news on as notes about the change.
struct NoteTo<'a> {
    events: &'a dyn Events,
    address: &'a str,
}

impl serving::Progress for NoteTo<'_> {
    fn note(&self, message: &str) {
        self.events.note(self.address, message);
    }
}

/// A change's rollout events: each shown as a progress line as it happens, and kept
/// (as JSON) for the apply report.
struct RolloutLog<'a> {
    events: &'a dyn Events,
    address: &'a str,
    seen: Mutex<Vec<Value>>,
}

impl<'a> RolloutLog<'a> {
    fn new(events: &'a dyn Events, address: &'a str) -> Self {
        RolloutLog {
            events,
            address,
            seen: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, event: RolloutEvent) {
        self.events.note(self.address, &describe_event(&event));
        if let Ok(v) = serde_json::to_value(&event) {
            self.seen.lock().expect("events lock").push(v);
        }
    }

    fn into_events(self) -> Vec<Value> {
        self.seen.into_inner().expect("events lock")
    }
}

fn failed(what: &str, e: BoxError) -> String {
    format!("{what}: {}", error_chain(&*e))
}

/// An endpoint's traffic move on Kubernetes, as found before it starts.
struct KubeRollout {
    /// The object that carries the traffic (HTTPRoute or the endpoint's Service).
    route_key: ObjectKey,
    route: KubeRoute,
    /// Live weights now, and the declared ones.
    from: Weights,
    to: Weights,
    /// The revisions (Deployments and Services) this change creates, deleted again if
    /// the rollout fails.
    started: Vec<(ObjectKey, String)>,
}

/// Finds the traffic move of an endpoint change: its HTTPRoute (or, without a gateway,
/// its Service) as live and as desired. `None` when nothing serves yet or traffic
/// doesn't move (a plain apply does then).
async fn kube_route(
    change: &ResourceChange,
    kube: &dyn KubeTarget,
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
    let mut backends: BTreeMap<String, Backend> = rest
        .iter()
        .filter(|o| o.kind == "Service" && is_revision(o))
        .filter_map(|o| {
            let selector = selector_of(o.object.as_ref()?);
            Some((o.name.clone(), Backend { selector }))
        })
        .collect();
    // Revisions serving now that the plan deletes: their live Services say which pods.
    for o in deletes.iter().filter(|o| o.kind == "Service") {
        if let Ok(Some(service)) = kube.get(&o.key(), &o.api_version).await {
            backends.insert(
                o.name.clone(),
                Backend {
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
    let mut route = KubeRoute {
        object,
        backends,
        port,
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
            route.backends.insert(name, Backend { selector });
        }
    } else {
        // The revisions the live and the desired selectors pick, even where no Service
        // of this change names them.
        for selector in [selector_of(&live), selector_of(&route.object.value)] {
            if route.backends.values().any(|b| b.selector == selector) {
                continue;
            }
            if let Some(name) = KubeRoute::backend_of_selector(&change.name, &selector) {
                route.backends.insert(name, Backend { selector });
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
    // The revisions this change creates (Deployments and their Services).
    let started = change
        .objects
        .iter()
        .filter(|o| o.action == Action::Create)
        .filter(|o| o.kind == "Deployment" || (o.kind == "Service" && is_revision(o)))
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

/// One line per rollout event, for progress output.
fn describe_event(event: &RolloutEvent) -> String {
    let weights = crate::rollout::describe_weights;
    match event {
        RolloutEvent::Ready { deployment } => format!("{deployment} is ready"),
        RolloutEvent::Mirror {
            deployment,
            percent,
        } => format!("mirroring {percent}% of requests to {deployment}"),
        RolloutEvent::Step { step, weights: w } => format!("step {step}%: {}", weights(w)),
        RolloutEvent::StepPassed {
            step,
            requests,
            error_rate,
            p99_ms,
        } => format!(
            "{} passed: {requests} requests, error rate {:.2}%, p99 {}",
            if *step == 0 {
                "mirror phase".to_string()
            } else {
                format!("step {step}%")
            },
            error_rate * 100.0,
            p99_ms.map_or("n/a".to_string(), |p| format!("{p:.1} ms"))
        ),
        RolloutEvent::GateFailed { step: 0, reason } => format!("mirror phase failed: {reason}"),
        RolloutEvent::GateFailed { step, reason } => format!("step {step}% failed: {reason}"),
        RolloutEvent::RolledBack { weights: w } => format!("rolled back to {}", weights(w)),
        RolloutEvent::Promoted { weights: w } => format!("promoted: {}", weights(w)),
    }
}

/// What both targets read from a job's planned value.
struct JobValue {
    run_id: String,
    /// Input name → the version reference the run reads.
    inputs: BTreeMap<String, String>,
    /// Output name → `model.<name>@<run id>`.
    outputs: BTreeMap<String, String>,
    retries: u32,
    timeout: Option<Duration>,
}

impl JobValue {
    fn parse(after: &Value) -> Result<JobValue, String> {
        let map = |field: &str| -> Result<BTreeMap<String, String>, String> {
            serde_json::from_value(after.get(field).cloned().unwrap_or_default())
                .map_err(|e| format!("the plan's `{field}` of this job is malformed: {e}"))
        };
        Ok(JobValue {
            run_id: str_field(after, "run_id")?,
            inputs: map("inputs")?,
            outputs: map("outputs")?,
            retries: after.get("retries").and_then(Value::as_u64).unwrap_or(0) as u32,
            timeout: after
                .get("timeout")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<crate::manifest::Duration>().ok())
                .map(|d| d.as_std()),
        })
    }
}

fn str_field(value: &Value, field: &str) -> Result<String, String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the plan has no `{field}`"))
}

/// `train-data` → `TRAIN_DATA`.
pub(crate) fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Replaces `{{ inputs.x }}`, `{{ outputs.y }}` and `{{ run_id }}` in one argument.
pub(crate) fn expand(arg: &str, paths: &BTreeMap<String, PathBuf>, run_id: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let inner = rest[start + 2..start + end].trim();
        out.push_str(&rest[..start]);
        match paths.get(inner) {
            Some(path) => out.push_str(&path.display().to_string()),
            None if inner == "run_id" => out.push_str(run_id),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// Reads `metrics.json` from the first output folder that has one, or the run folder.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders() {
        let paths = BTreeMap::from([("inputs.loans".to_string(), PathBuf::from("/w/in/loans"))]);
        assert_eq!(
            expand("--data={{ inputs.loans }}", &paths, "r1"),
            "--data=/w/in/loans"
        );
        assert_eq!(expand("{{run_id}}-x", &paths, "r1"), "r1-x");
        assert_eq!(expand("{{ other }}", &paths, "r1"), "{{ other }}");
        assert_eq!(env_name("train-data"), "TRAIN_DATA");
    }
}

/// Whether a change is about a resource on Kubernetes (an endpoint's value says).
fn on_kubernetes(change: &ResourceChange) -> bool {
    [&change.after, &change.before]
        .into_iter()
        .flatten()
        .any(|v| {
            change.kind == Kind::Endpoint
                && v.get("target").and_then(Value::as_str) == Some("kubernetes")
        })
}

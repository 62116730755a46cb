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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::address::Kind;
use crate::backend::store::{
    self, now_rfc3339, JournalOutcome, JournalRecord, LockGuard, StateEntry, Store, VersionedState,
};
use crate::backend::target::{Applied, ApplyContext, ChangeError, Failure, Targets};
use crate::content::HashCache;
use crate::events::Events;
use crate::manifest::Snapshot;
use crate::plan::endpoint::EndpointValue;
use crate::plan::{Action, Plan, ResourceChange};

mod promote;
mod sources;

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
}

/// Everything an apply needs.
pub struct Applier<'a> {
    pub snapshot: &'a Snapshot,
    pub stores: &'a BTreeMap<String, Store>,
    /// The compute targets that carry out jobs, endpoints and their objects.
    pub targets: &'a Targets,
    pub cache: &'a HashCache,
    pub events: &'a dyn Events,
    pub options: ApplyOptions,
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
            let mut mine = Vec::new();
            for o in outcomes
                .iter()
                .filter(|o| o.address.split('/').next() == Some(*ws))
            {
                let mut events = o.events.clone();
                if let Some(metrics) = run_metrics(plan, store, o).await {
                    events.push(metrics);
                }
                mine.push(JournalOutcome {
                    address: o.address.clone(),
                    action: o.action.as_str().to_string(),
                    status: o.status.as_str().to_string(),
                    duration_ms: o.duration_ms,
                    message: o.message.clone(),
                    events,
                });
            }
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
        // A ready queue fed by dependency counts: each change waits for the number of
        // its dependencies still to succeed, and is started (lowest plan index first)
        // when that reaches 0. A change whose dependency failed or was skipped is
        // skipped, and so on down its dependents. Nothing rescans the whole plan.
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<usize>> = (0..changes.len())
            .filter(|&i| waiting[i] == 0)
            .map(Reverse)
            .collect();
        let mut status: Vec<Option<Status>> = vec![None; changes.len()];
        let mut outcomes: Vec<Option<Outcome>> = vec![None; changes.len()];
        let mut in_flight = FuturesUnordered::new();
        let mut last_save = Instant::now();
        let mut save_cost = Duration::ZERO;
        let parallelism = self.options.parallelism.max(1);

        loop {
            while in_flight.len() < parallelism {
                let Some(Reverse(i)) = ready.pop() else {
                    break;
                };
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
                Err(failed) => (
                    Status::Failed,
                    Some(failed.error.to_string()),
                    failed.events,
                ),
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
            if s == Status::Succeeded {
                for &j in &dependents[i] {
                    waiting[j] -= 1;
                    if waiting[j] == 0 && status[j].is_none() {
                        ready.push(Reverse(j));
                    }
                }
            } else {
                self.skip_dependents(i, changes, &dependents, &mut status, &mut outcomes);
            }
            // Save progress about once a second, so a crash loses little without
            // rewriting a large state after every change, and at most a tenth of the
            // time: a state so large that writing it takes 0.2 s is written every 2 s.
            // What a crash does lose is recovered by the next plan: committed versions
            // and successful runs are found in the store and recorded again.
            if last_save.elapsed() > (save_cost * 10).max(Duration::from_secs(1)) {
                let t = Instant::now();
                self.save_states(&states).await?;
                save_cost = t.elapsed();
                last_save = Instant::now();
            }
        }
        self.save_states(&states).await?;
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Skips every change that waits, directly or not, on change `failed` (which failed
    /// or was skipped), each saying which of its dependencies did not succeed.
    fn skip_dependents(
        &self,
        failed: usize,
        changes: &[&ResourceChange],
        dependents: &[Vec<usize>],
        status: &mut [Option<Status>],
        outcomes: &mut [Option<Outcome>],
    ) {
        let mut stack = vec![failed];
        while let Some(bad) = stack.pop() {
            for &j in &dependents[bad] {
                if status[j].is_some() {
                    continue;
                }
                status[j] = Some(Status::Skipped);
                let message = format!("skipped because {} did not succeed", changes[bad].address);
                self.events
                    .finished(&changes[j].address, "skipped", Some(&message));
                outcomes[j] = Some(Outcome {
                    address: changes[j].address.clone(),
                    action: changes[j].action(),
                    status: Status::Skipped,
                    duration_ms: 0,
                    message: Some(message),
                    events: Vec::new(),
                });
                stack.push(j);
            }
        }
    }

    /// Writes each touched workspace's state: serialised under the lock (no copy of a
    /// state that may hold 50,000 resources), written without it.
    async fn save_states(
        &self,
        states: &Mutex<HashMap<String, VersionedState>>,
    ) -> Result<(), Error> {
        let workspaces: Vec<String> = states.lock().expect("state lock").keys().cloned().collect();
        for ws in workspaces {
            let (bytes, etag) = {
                let mut states = states.lock().expect("state lock");
                let state = states.get_mut(&ws).expect("state loaded");
                (Store::encode_state(state), state.etag.clone())
            };
            let store = &self.stores[&ws];
            let etag = store
                .put_state(etag.as_deref(), bytes)
                .await
                .map_err(|source| Error::Store {
                    workspace: ws.clone(),
                    source,
                })?;
            if let Some(state) = states.lock().expect("state lock").get_mut(&ws) {
                state.etag = Some(etag);
            }
        }
        Ok(())
    }

    /// Carries out one change: on its compute target when it has one, else in the
    /// store (dataset and model versions, workspaces).
    async fn execute(&self, plan: &Plan, change: &ResourceChange) -> Result<Applied, Failure> {
        let store = &self.stores[&change.workspace];
        if change.kind == Kind::Endpoint {
            self.quality_gates(store, change).await?;
        }
        match change.target.as_deref() {
            Some(name) => {
                let target = self.targets.get(name).ok_or_else(|| {
                    ChangeError::Unsupported(format!(
                        "this change runs on the `{name}` target, which is not connected to this apply"
                    ))
                })?;
                let context = ApplyContext {
                    plan,
                    store,
                    events: self.events,
                };
                let mut applied = target.apply(&context, change).await?;
                if change.kind == Kind::Job {
                    if let Some(delta) = run_metrics_change(store, change).await {
                        let message = applied.message.take().unwrap_or_default();
                        applied.message = Some(format!("{message} ({delta})"));
                    }
                }
                Ok(applied)
            }
            None => self
                .store_change(plan, change, store)
                .await
                .map_err(Failure::from),
        }
    }
}

/// How a job's new run's metrics compare with the run it replaces (`auc 0.79 → 0.81
/// against run 6aaa0fd4e4a1`), when both recorded metrics.
async fn run_metrics_change(store: &Store, change: &ResourceChange) -> Option<String> {
    let run_of = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v.get("run_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (new, old) = (run_of(&change.after)?, run_of(&change.before)?);
    if new == old {
        return None;
    }
    let metrics = |id: String| async move {
        store
            .run(&change.name, &id)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.metrics)
    };
    let now = metrics(new).await?;
    let before = metrics(old.clone()).await?;
    crate::metric_delta::describe(&now, &before, &[]).map(|d| format!("{d} against run {old}"))
}

impl Applier<'_> {
    /// An endpoint's `promote_if`, checked before its target moves any traffic: a new
    /// model version that fails a condition fails the change, serving untouched.
    async fn quality_gates(&self, store: &Store, change: &ResourceChange) -> Result<(), Failure> {
        let value = |v: &Option<Value>| {
            v.as_ref()
                .and_then(|v| serde_json::from_value::<EndpointValue>(v.clone()).ok())
        };
        let Some(after) = value(&change.after) else {
            return Ok(());
        };
        match promote::check(store, value(&change.before).as_ref(), &after).await {
            Ok(held) => {
                for line in held {
                    self.events
                        .note(&change.address, &format!("promote_if: {line}"));
                }
                Ok(())
            }
            Err(why) => Err(Failure {
                error: ChangeError::Failed(why),
                events: Vec::new(),
            }),
        }
    }
}

/// A succeeded run's metrics (its `metrics.json`, recorded with the run), as a journal
/// event of its job's outcome: `{"event": "metrics", "run_id", "metrics"}`.
async fn run_metrics(plan: &Plan, store: &Store, outcome: &Outcome) -> Option<Value> {
    if outcome.action != Action::Run || outcome.status != Status::Succeeded {
        return None;
    }
    let change = plan
        .resource_changes
        .iter()
        .find(|c| c.address == outcome.address)?;
    let run_id = change.after.as_ref()?.get("run_id")?.as_str()?;
    let run = store.run(&change.name, run_id).await.ok()??;
    Some(serde_json::json!({
        "event": "metrics",
        "run_id": run_id,
        "metrics": run.metrics?,
    }))
}

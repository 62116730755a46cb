//! Scheduled stops: [`stop_later`] records when a revision stops (wall-clock time, in
//! `state.json`, so a restarted daemon still stops it on time), and [`retire`] stops it
//! when its time comes, unless it carries traffic again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::super::apply::stop_deployments;
use super::super::daemon::Shared;
use super::super::spec::check_name;
use super::super::{DeploymentKey, Error, Event, Result};
use super::daemon::take_off_routes;

/// A scheduled stop, as `state.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RetirementRecord {
    #[serde(flatten)]
    pub(super) deployment: DeploymentKey,
    /// When, in milliseconds since the Unix epoch: wall-clock time, so that a restarted
    /// daemon still stops it on time.
    pub(super) at_unix_ms: u64,
}

impl RetirementRecord {
    pub(crate) fn new(deployment: &DeploymentKey, at: SystemTime) -> RetirementRecord {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        RetirementRecord {
            deployment: deployment.clone(),
            at_unix_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub(super) fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_unix_ms)
    }
}

pub(crate) fn stop_later(shared: &Shared, key: DeploymentKey, after: Duration) -> Result<()> {
    let check = || {
        check_name("endpoint", &key.endpoint)?;
        check_name("deployment", &key.deployment)?;
        check_name("revision", &key.revision)
    };
    check().map_err(|reason| Error::InvalidSpec {
        deployment: format!("`{key}`"),
        reason,
    })?;
    shared.refuse_if_closing()?;
    let mut registry = shared.registry();
    if !registry.deployments.contains_key(&key) {
        return Ok(());
    }
    let at = SystemTime::now()
        .checked_add(after)
        .unwrap_or(SystemTime::now() + Duration::from_secs(100 * 365 * 86_400));
    registry.retirements.insert(key.clone(), at);
    shared.persist(&registry);
    drop(registry);
    shared.event(Event::RetireScheduled {
        deployment: key,
        after,
    });
    Ok(())
}

/// Stops a revision whose time came, unless it carries traffic again.
pub(super) async fn retire(shared: &Arc<Shared>, key: DeploymentKey) {
    let _serial = shared.serial.lock().await;
    if shared.closing.load(Ordering::SeqCst) {
        return;
    }
    let due = shared
        .registry()
        .retirements
        .get(&key)
        .is_some_and(|at| *at <= SystemTime::now());
    if !due {
        return;
    }
    if let Err(error) = take_off_routes(shared, std::slice::from_ref(&key)).await {
        let mut registry = shared.registry();
        registry.retirements.remove(&key);
        shared.persist(&registry);
        drop(registry);
        shared.event(Event::RetireCancelled {
            deployment: key,
            reason: error.to_string(),
        });
        return;
    }
    stop_deployments(shared, std::slice::from_ref(&key)).await;
    shared.event(Event::Retired { deployment: key });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retirements_keep_their_wall_clock_time() {
        let key = DeploymentKey {
            endpoint: "risk-api".into(),
            deployment: "blue".into(),
            revision: "v1".into(),
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let record = RetirementRecord::new(&key, at);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"endpoint":"risk-api","deployment":"blue","revision":"v1","at_unix_ms":1700000000123}"#
        );
        let back: RetirementRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.at(), at);
    }
}

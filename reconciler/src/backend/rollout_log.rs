//! A change's rollout, as it happens: each engine event shown as a progress line and
//! kept (as JSON) for the apply report and the journal. Every target's rollout records
//! through it, so a rollout reads the same whatever moved the traffic.

use std::sync::Mutex;

use serde_json::Value;

use crate::events::Events;
use crate::rollout::RolloutEvent;

/// A change's rollout events: each shown as a progress line as it happens, and kept
/// (as JSON) for the apply report.
pub struct RolloutLog<'a> {
    events: &'a dyn Events,
    address: &'a str,
    seen: Mutex<Vec<Value>>,
}

impl<'a> RolloutLog<'a> {
    pub fn new(events: &'a dyn Events, address: &'a str) -> Self {
        RolloutLog {
            events,
            address,
            seen: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, event: RolloutEvent) {
        self.events.note(self.address, &describe_event(&event));
        if let Ok(v) = serde_json::to_value(&event) {
            self.seen.lock().expect("events lock").push(v);
        }
    }

    pub fn into_events(self) -> Vec<Value> {
        self.seen.into_inner().expect("events lock")
    }
}

/// One line per rollout event, for progress output.
pub fn describe_event(event: &RolloutEvent) -> String {
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

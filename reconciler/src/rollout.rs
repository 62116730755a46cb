//! The rollout engine: moves traffic from what serves now to what the manifests declare,
//! step by step, holding each step while it watches the error rate and p99 latency of the
//! deployments gaining traffic, and moves it all back when a gate fails.
//!
//! It is target-independent: a [`Traffic`] implementation sets weights and reports
//! readiness and cumulative request counters (Prometheus-style) for each deployment. The
//! local router and the Kubernetes route both implement it.
//!
//! Flow: wait until every deployment that will gain traffic is ready → for each step,
//! set the interpolated weights and hold for `step_wait`, polling the gates → promote
//! (the declared weights) or roll back (the starting weights) and say why.
//!
//! Gates only judge traffic seen during the step (counter deltas), and only once at least
//! [`RolloutPolicy::min_requests`] requests arrived, so an idle endpoint doesn't fail on
//! one unlucky request and a busy one fails fast. They fail closed: a gated step that
//! ends with fewer requests than that fails ("no traffic to judge"), rather than
//! promoting a version nothing has tried.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Traffic weights: deployment → percent, summing to 100 (or 0).
pub type Weights = BTreeMap<String, u32>;

/// Cumulative counters of one deployment since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    /// Latency histogram: (upper bound in seconds, cumulative count), ascending; the
    /// last bound may be infinite (`null` in JSON, which has no infinity).
    #[serde(with = "latency_bounds")]
    pub latency: Vec<(f64, u64)>,
}

/// JSON has no infinity (serde_json writes it as `null` and cannot read that back as a
/// number), so an infinite bound is written as `null` and `null` read as infinity.
mod latency_bounds {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &[(f64, u64)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value
            .iter()
            .map(|(le, count)| (le.is_finite().then_some(*le), *count))
            .collect::<Vec<_>>()
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(f64, u64)>, D::Error> {
        let bounds = Vec::<(Option<f64>, u64)>::deserialize(deserializer)?;
        Ok(bounds
            .into_iter()
            .map(|(le, count)| (le.unwrap_or(f64::INFINITY), count))
            .collect())
    }
}

/// Why a serving target could not do what the engine asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrafficError {
    /// What carries the traffic can't be reached or read (the router is down, the API
    /// server refused a read, a backend's metrics can't be parsed).
    #[error("{0}")]
    Unavailable(String),
    /// The target refused the change (a backend it doesn't have, an object the API
    /// server rejects).
    #[error("{0}")]
    Refused(String),
    /// The target can't do this at all (mirroring without a gateway).
    #[error("{0}")]
    Unsupported(String),
}

/// What the engine needs from a serving target.
#[async_trait]
pub trait Traffic: Send + Sync {
    /// Routes traffic by these weights from now on.
    async fn set_weights(&self, weights: &Weights) -> Result<(), TrafficError>;
    /// Whether the deployment answers its readiness probe.
    async fn ready(&self, deployment: &str) -> Result<bool, TrafficError>;
    /// The deployment's cumulative counters.
    async fn stats(&self, deployment: &str) -> Result<Stats, TrafficError>;
    /// Copies `percent` of the weighted requests to `deployment` (answers dropped), or
    /// stops copying (`None`).
    async fn set_mirror(&self, mirror: Option<(&str, u32)>) -> Result<(), TrafficError> {
        match mirror {
            None => Ok(()),
            Some(_) => Err(TrafficError::Unsupported(
                "this target cannot mirror traffic".to_string(),
            )),
        }
    }
}

/// How to roll out (from `[endpoint.<name>.rollout]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutPolicy {
    /// Percent of the way from the old weights to the new at each step, ending at 100.
    pub steps: Vec<u32>,
    pub step_wait: Duration,
    pub max_error_rate: Option<f64>,
    pub max_p99_ms: Option<u64>,
    pub auto_rollback: bool,
    /// Before any traffic moves, copy this percent of the requests to the new deployment
    /// for one `step_wait`, judged by the same gates: a broken version fails there
    /// without a single client request failing. Needs exactly one gaining deployment.
    pub mirror: Option<u32>,
    /// Requests a step must see before its gates judge it.
    pub min_requests: u64,
    /// How long new deployments may take to become ready.
    pub ready_timeout: Duration,
    /// How often gates are checked during a step.
    pub poll: Duration,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            steps: vec![100],
            step_wait: Duration::from_secs(30),
            max_error_rate: None,
            max_p99_ms: None,
            auto_rollback: true,
            mirror: None,
            min_requests: 20,
            ready_timeout: Duration::from_secs(120),
            poll: Duration::from_secs(1),
        }
    }
}

/// One thing that happened, for progress output and the journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RolloutEvent {
    Ready {
        deployment: String,
    },
    /// The mirror phase started: `percent` of requests are copied to `deployment`.
    Mirror {
        deployment: String,
        percent: u32,
    },
    Step {
        step: u32,
        weights: Weights,
    },
    StepPassed {
        step: u32,
        requests: u64,
        error_rate: f64,
        p99_ms: Option<f64>,
    },
    GateFailed {
        step: u32,
        reason: String,
    },
    RolledBack {
        weights: Weights,
    },
    Promoted {
        weights: Weights,
    },
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The declared weights are live.
    Promoted { weights: Weights },
    /// A gate failed; traffic is back on the starting weights.
    RolledBack {
        step: u32,
        reason: String,
        weights: Weights,
    },
    /// A gate failed and `auto_rollback` is off: traffic stays where it was.
    Halted {
        step: u32,
        reason: String,
        weights: Weights,
    },
    /// A deployment never became ready; traffic was not moved.
    NotReady { deployment: String },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the traffic target failed: {0}")]
    Target(#[from] TrafficError),
    #[error("weights must add up to 100 (or 0), got {0}")]
    BadWeights(u32),
}

/// "blue 90%, green 10%": the deployments that get traffic, or "no traffic".
pub fn describe_weights(weights: &Weights) -> String {
    let shown: Vec<String> = weights
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(n, w)| format!("{n} {w}%"))
        .collect();
    if shown.is_empty() {
        "no traffic".to_string()
    } else {
        shown.join(", ")
    }
}

/// Weights `fraction` of the way from `from` to `to` (both summing to 100), rounded to
/// whole percents that still sum to 100 (largest remainder).
pub fn interpolate(from: &Weights, to: &Weights, percent: u32) -> Weights {
    let names: std::collections::BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    let f = f64::from(percent.min(100)) / 100.0;
    let exact: Vec<(&String, f64)> = names
        .iter()
        .map(|n| {
            let a = f64::from(*from.get(*n).unwrap_or(&0));
            let b = f64::from(*to.get(*n).unwrap_or(&0));
            (*n, a + (b - a) * f)
        })
        .collect();
    let total: f64 = exact.iter().map(|(_, v)| v).sum();
    let target = total.round() as u32;
    let mut floors: Vec<(&String, u32, f64)> = exact
        .iter()
        .map(|(n, v)| (*n, v.floor() as u32, v - v.floor()))
        .collect();
    let mut short = target.saturating_sub(floors.iter().map(|(_, f, _)| f).sum());
    // Largest remainders first; ties go to the name that gains traffic, then by name.
    let mut order: Vec<usize> = (0..floors.len()).collect();
    order.sort_by(|&a, &b| {
        floors[b]
            .2
            .total_cmp(&floors[a].2)
            .then_with(|| {
                let gain = |i: usize| {
                    to.get(floors[i].0).copied().unwrap_or(0)
                        > from.get(floors[i].0).copied().unwrap_or(0)
                };
                gain(b).cmp(&gain(a))
            })
            .then_with(|| floors[a].0.cmp(floors[b].0))
    });
    for i in order {
        if short == 0 {
            break;
        }
        floors[i].1 += 1;
        short -= 1;
    }
    floors
        .into_iter()
        .filter(|(n, w, _)| *w > 0 || to.contains_key(*n) || from.contains_key(*n))
        .map(|(n, w, _)| (n.clone(), w))
        .collect()
}

/// The p99 latency in milliseconds of the requests counted between two histograms.
pub fn p99_ms(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<f64> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, count)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
            (*le, count.saturating_sub(was))
        })
        .collect();
    let total = delta.last().map(|(_, c)| *c)?;
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * 0.99).ceil() as u64;
    let mut lower = 0.0;
    let mut below = 0u64;
    for (le, cumulative) in &delta {
        if *cumulative >= rank {
            // Linear interpolation inside the bucket, as Prometheus' histogram_quantile.
            if le.is_infinite() {
                return Some(lower * 1000.0);
            }
            let in_bucket = cumulative - below;
            let into = if in_bucket == 0 {
                1.0
            } else {
                (rank - below) as f64 / in_bucket as f64
            };
            return Some((lower + (le - lower) * into) * 1000.0);
        }
        lower = *le;
        below = *cumulative;
    }
    None
}

/// Moves traffic from `from` to `to` by `policy`, reporting each step to `on_event`.
pub async fn run(
    traffic: &dyn Traffic,
    from: &Weights,
    to: &Weights,
    policy: &RolloutPolicy,
    on_event: &(dyn Fn(RolloutEvent) + Send + Sync),
) -> Result<Outcome, Error> {
    for weights in [from, to] {
        let sum: u32 = weights.values().sum();
        if sum != 0 && sum != 100 {
            return Err(Error::BadWeights(sum));
        }
    }
    // Deployments that will carry more traffic than now must be ready first.
    let gaining: Vec<&String> = to
        .iter()
        .filter(|(n, w)| **w > from.get(*n).copied().unwrap_or(0))
        .map(|(n, _)| n)
        .collect();
    for deployment in &gaining {
        let deadline = tokio::time::Instant::now() + policy.ready_timeout;
        loop {
            if traffic.ready(deployment).await? {
                on_event(RolloutEvent::Ready {
                    deployment: deployment.to_string(),
                });
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Outcome::NotReady {
                    deployment: deployment.to_string(),
                });
            }
            tokio::time::sleep(policy.poll.min(Duration::from_millis(250))).await;
        }
    }

    // The mirror phase (step 0): the new deployment sees copies of real requests, and
    // clients only ever get the old deployments' answers.
    if let (Some(percent), [deployment]) = (policy.mirror.filter(|p| *p > 0), gaining.as_slice()) {
        traffic
            .set_mirror(Some((deployment.as_str(), percent.min(100))))
            .await?;
        on_event(RolloutEvent::Mirror {
            deployment: deployment.to_string(),
            percent,
        });
        let watched = watch_step(traffic, &gaining, policy).await;
        traffic.set_mirror(None).await?;
        match watched? {
            Ok((requests, error_rate, p99)) => on_event(RolloutEvent::StepPassed {
                step: 0,
                requests,
                error_rate,
                p99_ms: p99,
            }),
            Err(reason) => {
                on_event(RolloutEvent::GateFailed {
                    step: 0,
                    reason: reason.clone(),
                });
                // No client traffic moved: the starting weights are still in force.
                on_event(RolloutEvent::RolledBack {
                    weights: from.clone(),
                });
                return Ok(Outcome::RolledBack {
                    step: 0,
                    reason,
                    weights: from.clone(),
                });
            }
        }
    }

    let mut steps: Vec<u32> = policy
        .steps
        .iter()
        .copied()
        .filter(|s| *s > 0 && *s <= 100)
        .collect();
    if steps.last() != Some(&100) {
        steps.push(100);
    }
    for step in steps {
        let weights = interpolate(from, to, step);
        traffic.set_weights(&weights).await?;
        on_event(RolloutEvent::Step {
            step,
            weights: weights.clone(),
        });
        let current = weights;
        if step == 100 && policy.step_wait.is_zero() {
            break;
        }
        match watch_step(traffic, &gaining, policy).await? {
            Ok((requests, error_rate, p99)) => on_event(RolloutEvent::StepPassed {
                step,
                requests,
                error_rate,
                p99_ms: p99,
            }),
            Err(reason) => {
                on_event(RolloutEvent::GateFailed {
                    step,
                    reason: reason.clone(),
                });
                if policy.auto_rollback {
                    traffic.set_weights(from).await?;
                    on_event(RolloutEvent::RolledBack {
                        weights: from.clone(),
                    });
                    return Ok(Outcome::RolledBack {
                        step,
                        reason,
                        weights: from.clone(),
                    });
                }
                return Ok(Outcome::Halted {
                    step,
                    reason,
                    weights: current,
                });
            }
        }
    }
    on_event(RolloutEvent::Promoted {
        weights: to.clone(),
    });
    Ok(Outcome::Promoted {
        weights: to.clone(),
    })
}

/// Holds one step for `step_wait`, checking the gates on the traffic seen so far in the
/// step. Returns the step's figures, or why a gate failed.
async fn watch_step(
    traffic: &dyn Traffic,
    gaining: &[&String],
    policy: &RolloutPolicy,
) -> Result<Result<(u64, f64, Option<f64>), String>, Error> {
    let mut start = Vec::new();
    for d in gaining {
        start.push(traffic.stats(d).await?);
    }
    let began = tokio::time::Instant::now();
    loop {
        let elapsed = began.elapsed();
        let wait = policy.poll.min(policy.step_wait.saturating_sub(elapsed));
        tokio::time::sleep(wait).await;
        let mut requests = 0;
        let mut errors = 0;
        let mut worst_p99: Option<f64> = None;
        for (d, before) in gaining.iter().zip(&start) {
            let now = traffic.stats(d).await?;
            let r = now.requests.saturating_sub(before.requests);
            let e = now.errors.saturating_sub(before.errors);
            requests += r;
            errors += e;
            if let Some(p) = p99_ms(&before.latency, &now.latency) {
                worst_p99 = Some(worst_p99.map_or(p, |w: f64| w.max(p)));
            }
        }
        let rate = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        if requests >= policy.min_requests {
            if let Some(max) = policy.max_error_rate {
                if rate > max {
                    return Ok(Err(format!(
                        "error rate {:.2}% over {requests} requests is above the {:.2}% gate",
                        rate * 100.0,
                        max * 100.0
                    )));
                }
            }
            if let (Some(max), Some(p99)) = (policy.max_p99_ms, worst_p99) {
                if p99 > max as f64 {
                    return Ok(Err(format!(
                        "p99 latency {p99:.0} ms over {requests} requests is above the {max} ms gate"
                    )));
                }
            }
        }
        if began.elapsed() >= policy.step_wait {
            // Gates fail closed: a step nothing reached proves nothing about the version
            // (a route the gateway never accepted looks exactly like this).
            let gated = policy.max_error_rate.is_some() || policy.max_p99_ms.is_some();
            if gated && requests < policy.min_requests {
                let names: Vec<&str> = gaining.iter().map(|d| d.as_str()).collect();
                return Ok(Err(format!(
                    "no traffic to judge: {} reached {} during the step, and the gates need {}; \
                     send requests during the rollout (or, for a quiet endpoint, lower the \
                     rollout's `min_requests` or hold steps longer), and check that the route \
                     was accepted",
                    match requests {
                        1 => "1 request".to_string(),
                        n => format!("{n} requests"),
                    },
                    names.join(", "),
                    policy.min_requests
                )));
            }
            return Ok(Ok((requests, rate, worst_p99)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn w(pairs: &[(&str, u32)]) -> Weights {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn interpolates_and_keeps_the_sum() {
        let from = w(&[("blue", 100), ("green", 0)]);
        let to = w(&[("blue", 0), ("green", 100)]);
        assert_eq!(
            interpolate(&from, &to, 10),
            w(&[("blue", 90), ("green", 10)])
        );
        assert_eq!(interpolate(&from, &to, 100), to);
        // Azure-style map change: 90/10 → 0/100 at half way.
        let from = w(&[("blue", 90), ("green", 10)]);
        assert_eq!(
            interpolate(&from, &to, 50),
            w(&[("blue", 45), ("green", 55)])
        );
        // Three deployments, odd fractions: always sums to 100.
        let from = w(&[("a", 33), ("b", 33), ("c", 34)]);
        let to = w(&[("a", 0), ("b", 0), ("c", 100)]);
        for step in 0..=100 {
            assert_eq!(
                interpolate(&from, &to, step).values().sum::<u32>(),
                100,
                "step {step}"
            );
        }
    }

    #[test]
    fn stats_round_trip_through_json_with_an_infinite_bound() {
        let stats = Stats {
            requests: 3,
            errors: 1,
            latency: vec![(0.005, 1), (0.01, 2), (f64::INFINITY, 3)],
        };
        let json = serde_json::to_string(&stats).unwrap();
        assert_eq!(
            json,
            r#"{"requests":3,"errors":1,"latency":[[0.005,1],[0.01,2],[null,3]]}"#
        );
        assert_eq!(serde_json::from_str::<Stats>(&json).unwrap(), stats);
    }

    #[test]
    fn p99_comes_from_the_step_window() {
        let before = vec![(0.01, 100), (0.1, 100), (f64::INFINITY, 100)];
        // 100 new requests: 98 under 10 ms, 2 between 10 and 100 ms.
        let after = vec![(0.01, 198), (0.1, 200), (f64::INFINITY, 200)];
        let p = p99_ms(&before, &after).unwrap();
        assert!(p > 10.0 && p <= 100.0, "{p}");
        assert_eq!(p99_ms(&after, &after), None);
    }

    /// A simulated endpoint: each poll, the deployments with traffic serve requests whose
    /// error rate and latency are set per deployment.
    struct Sim {
        weights: Mutex<Weights>,
        stats: Mutex<BTreeMap<String, Stats>>,
        bad: BTreeMap<String, (f64, f64)>,
        history: Mutex<Vec<Weights>>,
        mirror: Mutex<Option<(String, u32)>>,
    }

    impl Sim {
        fn new(bad: &[(&str, f64, f64)]) -> Sim {
            Sim {
                weights: Mutex::new(Weights::new()),
                stats: Mutex::new(BTreeMap::new()),
                bad: bad
                    .iter()
                    .map(|(n, e, l)| (n.to_string(), (*e, *l)))
                    .collect(),
                history: Mutex::new(Vec::new()),
                mirror: Mutex::new(None),
            }
        }

        /// Serves 100 requests split by the current weights.
        fn tick(&self) {
            let mut weights = self.weights.lock().unwrap().clone();
            // Mirror copies count as the mirrored deployment's traffic.
            if let Some((name, percent)) = self.mirror.lock().unwrap().clone() {
                *weights.entry(name).or_default() += percent;
            }
            let mut stats = self.stats.lock().unwrap();
            for (name, weight) in weights {
                let n = u64::from(weight);
                let (error_rate, latency) = self.bad.get(&name).copied().unwrap_or((0.0, 0.005));
                let s = stats.entry(name).or_insert_with(|| Stats {
                    latency: vec![(0.01, 0), (0.1, 0), (0.5, 0), (f64::INFINITY, 0)],
                    ..Stats::default()
                });
                s.requests += n;
                s.errors += (n as f64 * error_rate).round() as u64;
                for (le, count) in &mut s.latency {
                    if latency <= *le {
                        *count += n;
                    }
                }
            }
        }
    }

    #[async_trait]
    impl Traffic for Sim {
        async fn set_weights(&self, weights: &Weights) -> Result<(), TrafficError> {
            *self.weights.lock().unwrap() = weights.clone();
            self.history.lock().unwrap().push(weights.clone());
            Ok(())
        }
        async fn ready(&self, _deployment: &str) -> Result<bool, TrafficError> {
            Ok(true)
        }
        async fn set_mirror(&self, mirror: Option<(&str, u32)>) -> Result<(), TrafficError> {
            *self.mirror.lock().unwrap() = mirror.map(|(n, p)| (n.to_string(), p));
            Ok(())
        }
        async fn stats(&self, deployment: &str) -> Result<Stats, TrafficError> {
            self.tick();
            Ok(self
                .stats
                .lock()
                .unwrap()
                .get(deployment)
                .cloned()
                .unwrap_or(Stats {
                    latency: vec![(0.01, 0), (0.1, 0), (0.5, 0), (f64::INFINITY, 0)],
                    ..Stats::default()
                }))
        }
    }

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            steps: vec![10, 50, 100],
            step_wait: Duration::from_secs(30),
            max_error_rate: Some(0.01),
            max_p99_ms: Some(250),
            min_requests: 20,
            poll: Duration::from_secs(5),
            ..RolloutPolicy::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_version_fails_in_the_mirror_phase_before_traffic_moves() {
        let sim = Sim::new(&[("green", 1.0, 0.005)]);
        let from = w(&[("blue", 100)]);
        let to = w(&[("blue", 0), ("green", 100)]);
        let policy = RolloutPolicy {
            mirror: Some(50),
            ..policy()
        };
        let events = Mutex::new(Vec::new());
        let outcome = run(&sim, &from, &to, &policy, &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
        assert!(
            matches!(&outcome, Outcome::RolledBack { step: 0, reason, .. } if reason.contains("error rate")),
            "{outcome:?}"
        );
        // Client traffic never moved, and the mirror is off again.
        assert!(sim.history.lock().unwrap().is_empty());
        assert_eq!(*sim.mirror.lock().unwrap(), None);
        assert!(matches!(
            events.lock().unwrap()[1],
            RolloutEvent::Mirror { percent: 50, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_version_passes_the_mirror_phase_then_the_steps() {
        let sim = Sim::new(&[]);
        let from = w(&[("blue", 100)]);
        let to = w(&[("blue", 0), ("green", 100)]);
        let policy = RolloutPolicy {
            mirror: Some(50),
            ..policy()
        };
        let outcome = run(&sim, &from, &to, &policy, &|_| {}).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Promoted {
                weights: to.clone()
            }
        );
        assert_eq!(sim.history.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_version_is_promoted_step_by_step() {
        let sim = Sim::new(&[]);
        let from = w(&[("blue", 100)]);
        let to = w(&[("blue", 0), ("green", 100)]);
        let events = Mutex::new(Vec::new());
        let outcome = run(&sim, &from, &to, &policy(), &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
        assert_eq!(
            outcome,
            Outcome::Promoted {
                weights: to.clone()
            }
        );
        let steps: Vec<Weights> = sim.history.lock().unwrap().clone();
        assert_eq!(
            steps,
            [
                w(&[("blue", 90), ("green", 10)]),
                w(&[("blue", 50), ("green", 50)]),
                to
            ]
        );
        let passed = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, RolloutEvent::StepPassed { .. }))
            .count();
        assert_eq!(passed, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_roll_back_to_the_starting_weights() {
        let sim = Sim::new(&[("green", 0.2, 0.005)]);
        let from = w(&[("blue", 100)]);
        let to = w(&[("blue", 0), ("green", 100)]);
        let outcome = run(&sim, &from, &to, &policy(), &|_| {}).await.unwrap();
        match outcome {
            Outcome::RolledBack {
                step,
                reason,
                weights,
            } => {
                assert_eq!(step, 10);
                assert!(reason.contains("error rate"), "{reason}");
                assert_eq!(weights, from);
            }
            other => panic!("expected a rollback, got {other:?}"),
        }
        assert_eq!(sim.history.lock().unwrap().last(), Some(&from));
    }

    /// A route nothing reaches (say, one the gateway never accepted): the weights are
    /// set, but no request ever arrives.
    struct Unreached(Sim);

    #[async_trait]
    impl Traffic for Unreached {
        async fn set_weights(&self, weights: &Weights) -> Result<(), TrafficError> {
            self.0.set_weights(weights).await
        }
        async fn ready(&self, deployment: &str) -> Result<bool, TrafficError> {
            self.0.ready(deployment).await
        }
        async fn set_mirror(&self, mirror: Option<(&str, u32)>) -> Result<(), TrafficError> {
            self.0.set_mirror(mirror).await
        }
        async fn stats(&self, _deployment: &str) -> Result<Stats, TrafficError> {
            Ok(Stats::default())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_without_traffic_fails_closed() {
        let traffic = Unreached(Sim::new(&[]));
        let from = w(&[("blue", 100)]);
        let to = w(&[("blue", 0), ("green", 100)]);
        let halting = RolloutPolicy {
            auto_rollback: false,
            ..policy()
        };
        match run(&traffic, &from, &to, &halting, &|_| {}).await.unwrap() {
            Outcome::Halted { step, reason, .. } => {
                assert_eq!(step, 10);
                assert_eq!(
                    reason,
                    "no traffic to judge: 0 requests reached green during the step, and the \
                     gates need 20; send requests during the rollout (or, for a quiet \
                     endpoint, lower the rollout's `min_requests` or hold steps longer), and \
                     check that the route was accepted"
                );
            }
            other => panic!("expected a halt, got {other:?}"),
        }
        // With rollback, the old weights come back: the endpoint keeps its old revision.
        let outcome = run(&traffic, &from, &to, &policy(), &|_| {}).await.unwrap();
        assert!(
            matches!(&outcome, Outcome::RolledBack { weights, .. } if *weights == from),
            "{outcome:?}"
        );
        // Without gates there is nothing to judge, and nothing to fail.
        let ungated = RolloutPolicy {
            max_error_rate: None,
            max_p99_ms: None,
            ..policy()
        };
        let outcome = run(&traffic, &from, &to, &ungated, &|_| {}).await.unwrap();
        assert!(matches!(outcome, Outcome::Promoted { .. }), "{outcome:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_responses_fail_the_latency_gate() {
        let sim = Sim::new(&[("green", 0.0, 0.4)]);
        let from = w(&[("blue", 100)]);
        let to = w(&[("green", 100)]);
        let outcome = run(&sim, &from, &to, &policy(), &|_| {}).await.unwrap();
        assert!(
            matches!(&outcome, Outcome::RolledBack { reason, .. } if reason.contains("p99")),
            "{outcome:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_auto_rollback_traffic_stays_put() {
        let sim = Sim::new(&[("green", 0.5, 0.005)]);
        let from = w(&[("blue", 100)]);
        let to = w(&[("green", 100)]);
        let policy = RolloutPolicy {
            auto_rollback: false,
            ..policy()
        };
        let outcome = run(&sim, &from, &to, &policy, &|_| {}).await.unwrap();
        assert!(
            matches!(outcome, Outcome::Halted { step: 10, .. }),
            "{outcome:?}"
        );
        assert_eq!(
            sim.history.lock().unwrap().last(),
            Some(&w(&[("blue", 90), ("green", 10)]))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_weights_that_do_not_add_up() {
        let sim = Sim::new(&[]);
        let err = run(
            &sim,
            &w(&[("a", 60)]),
            &w(&[("b", 100)]),
            &policy(),
            &|_| {},
        )
        .await;
        assert!(matches!(err, Err(Error::BadWeights(60))));
    }
}

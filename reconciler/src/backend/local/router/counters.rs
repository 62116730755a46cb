//! Per-deployment counters: requests, errors and the latency histogram, read as
//! [`Stats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::rollout::Stats;
use crate::workload::model_server;

/// Requests, errors and the latency histogram of one deployment, updated with relaxed
/// atomics: each value is exact, but a snapshot taken while requests finish may see one
/// in one counter and not yet in another.
#[derive(Debug, Default)]
pub(super) struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; model_server::LATENCY_BUCKETS.len() + 1],
}

impl Counters {
    pub(super) fn record(&self, error: bool, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = model_server::LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(model_server::LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> Stats {
        let mut cumulative = 0;
        let latency = model_server::LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(le, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (le, cumulative)
            })
            .collect();
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_cumulative() {
        let counters = Counters::default();
        counters.record(false, Duration::from_micros(300));
        counters.record(true, Duration::from_secs(30));
        counters.record(false, Duration::from_millis(2));
        let stats = counters.snapshot();
        assert_eq!((stats.requests, stats.errors), (3, 1));
        assert_eq!(stats.latency.len(), model_server::LATENCY_BUCKETS.len() + 1);
        let at = |le: f64| stats.latency.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.00025), 0);
        assert_eq!(at(0.0005), 1);
        assert_eq!(at(0.0025), 2);
        assert_eq!(at(2.5), 2);
        assert_eq!(stats.latency.last(), Some(&(f64::INFINITY, 3)));
    }
}

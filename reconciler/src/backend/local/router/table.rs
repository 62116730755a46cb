//! The routing table in force: the deployments and their replicas, the weighted
//! round-robin schedule (nginx's smooth algorithm, 100 slots) and the mirror share. A
//! route change builds a new table; requests keep the one they started with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::auth::parse_digest;
use super::capture::Capturer;
use super::counters::Counters;
use super::{Error, Result, Routes};
use crate::rollout::Weights;

/// The routes in force, with what each request needs to pick a replica.
#[derive(Debug)]
pub(super) struct Table {
    pub(super) routes: Routes,
    /// The digest of the key requests must carry, when one is required.
    pub(super) key_sha256: Option<[u8; 32]>,
    pub(super) deployments: BTreeMap<String, Arc<Deployment>>,
    /// The weighted round-robin schedule: 100 slots, or none when all weights are 0.
    pub(super) schedule: Vec<Arc<Deployment>>,
    pub(super) next: AtomicUsize,
    pub(super) mirror: Option<(Arc<Deployment>, u32)>,
    pub(super) mirror_next: AtomicUsize,
    /// Kept across route changes while its settings stay the same.
    pub(super) capture: Option<Arc<Capturer>>,
}

impl Table {
    /// Checks `routes` and builds their table, reusing `previous`'s deployments whose
    /// replicas did not change and the counters of every deployment seen before.
    pub(super) fn build(
        routes: Routes,
        previous: Option<&Table>,
        counters: &mut BTreeMap<String, Arc<Counters>>,
    ) -> Result<Table> {
        routes.validate()?;
        let key_sha256 = routes.key_sha256.as_deref().map(parse_digest).transpose()?;

        let deployments: BTreeMap<String, Arc<Deployment>> = routes
            .deployments
            .iter()
            .map(|(name, addrs)| {
                let kept = counters
                    .entry(routes.counter_key(name).to_string())
                    .or_default()
                    .clone();
                let reused = previous
                    .and_then(|t| t.deployments.get(name))
                    .filter(|d| Arc::ptr_eq(&d.counters, &kept))
                    .filter(|d| d.replicas.iter().map(|r| r.addr).eq(addrs.iter().copied()));
                let deployment = match reused {
                    Some(d) => d.clone(),
                    None => Arc::new(Deployment {
                        name: name.clone(),
                        replicas: addrs
                            .iter()
                            .map(|&addr| Replica {
                                addr,
                                ejected_until: AtomicU64::new(0),
                            })
                            .collect(),
                        next: AtomicUsize::new(0),
                        counters: kept,
                    }),
                };
                (name.clone(), deployment)
            })
            .collect();

        let schedule = smooth_schedule(&routes.weights)
            .into_iter()
            .filter_map(|name| deployments.get(name).cloned())
            .collect();
        let mirror = routes
            .mirror
            .as_ref()
            .filter(|m| m.percent > 0)
            .and_then(|m| Some((deployments.get(&m.deployment)?.clone(), m.percent)));
        let capture = routes.capture.as_ref().map(|config| {
            previous
                .and_then(|t| t.capture.clone())
                .filter(|c| &c.config == config)
                .unwrap_or_else(|| Arc::new(Capturer::start(config.clone())))
        });
        Ok(Table {
            routes,
            key_sha256,
            capture,
            deployments,
            schedule,
            next: AtomicUsize::new(0),
            mirror,
            mirror_next: AtomicUsize::new(0),
        })
    }

    pub(super) fn deployment(&self, name: &str) -> Result<&Arc<Deployment>> {
        self.deployments
            .get(name)
            .ok_or_else(|| Error::UnknownDeployment {
                name: name.to_string(),
                known: self.names(),
            })
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.deployments.keys().cloned().collect()
    }

    /// The next deployment by weight, or `None` when no deployment has traffic.
    pub(super) fn pick(&self) -> Option<&Arc<Deployment>> {
        if self.schedule.is_empty() {
            return None;
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        self.schedule.get(slot)
    }

    /// The mirror deployment, when this request is one to copy.
    pub(super) fn pick_mirror(&self) -> Option<&Arc<Deployment>> {
        let (deployment, percent) = self.mirror.as_ref()?;
        // Slot i of every 100 is copied when ⌊(i+1)·p/100⌋ steps up: p slots, spread out.
        let slot = self.mirror_next.fetch_add(1, Ordering::Relaxed) % 100;
        let p = *percent as usize;
        ((slot + 1) * p / 100 > slot * p / 100).then_some(deployment)
    }
}

/// Returns 100 slots (one per percent) naming deployments in nginx's smooth weighted
/// round-robin order: each deployment appears as often as its weight, spread out. Empty
/// when all weights are 0.
fn smooth_schedule(weights: &Weights) -> Vec<&str> {
    let live: Vec<(&str, i64)> = weights
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(n, w)| (n.as_str(), i64::from(*w)))
        .collect();
    let total: i64 = live.iter().map(|(_, w)| w).sum();
    let mut current = vec![0i64; live.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, (_, w)) in current.iter_mut().zip(&live) {
            *c += w;
        }
        // The largest current weight wins; ties go to the first by name.
        let Some(best) =
            (0..live.len()).max_by(|&a, &b| current[a].cmp(&current[b]).then(b.cmp(&a)))
        else {
            break;
        };
        current[best] -= total;
        schedule.push(live[best].0);
    }
    schedule
}

/// One deployment as the router sees it.
#[derive(Debug)]
pub(super) struct Deployment {
    pub(super) name: String,
    pub(super) replicas: Vec<Replica>,
    /// The round-robin position among the replicas.
    pub(super) next: AtomicUsize,
    pub(super) counters: Arc<Counters>,
}

#[derive(Debug)]
pub(super) struct Replica {
    pub(super) addr: SocketAddr,
    /// Milliseconds since [`Shared::epoch`](super::upstream::Shared::epoch) until which the replica is tried last; 0 when
    /// it is not ejected.
    pub(super) ejected_until: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::router::routes::tests::{routes, weights};
    use crate::backend::local::router::Mirror;

    #[test]
    fn schedules_split_exactly_and_interleave() {
        let ninety_ten = weights(&[("blue", 90), ("green", 10)]);
        let schedule = smooth_schedule(&ninety_ten);
        assert_eq!(schedule.len(), 100);
        assert_eq!(schedule.iter().filter(|n| **n == "green").count(), 10);
        // Spread out: never two greens within 5 slots of each other.
        let greens: Vec<usize> = (0..100).filter(|&i| schedule[i] == "green").collect();
        assert!(greens.windows(2).all(|w| w[1] - w[0] >= 5), "{greens:?}");

        let thirds = weights(&[("a", 33), ("b", 33), ("c", 34)]);
        let schedule = smooth_schedule(&thirds);
        for (name, n) in [("a", 33), ("b", 33), ("c", 34)] {
            assert_eq!(schedule.iter().filter(|x| **x == name).count(), n);
        }
        assert_eq!(
            smooth_schedule(&weights(&[("blue", 0), ("green", 100)])),
            vec!["green"; 100]
        );
        assert!(smooth_schedule(&weights(&[("blue", 0)])).is_empty());
        assert!(smooth_schedule(&Weights::new()).is_empty());
    }

    #[test]
    fn mirror_copies_its_percent_of_every_hundred() {
        for percent in [0, 1, 20, 33, 50, 99, 100] {
            let table = Table::build(
                Routes {
                    mirror: Some(Mirror {
                        deployment: "green".into(),
                        percent,
                    }),
                    ..routes()
                },
                None,
                &mut BTreeMap::new(),
            )
            .unwrap();
            let copied = (0..300).filter(|_| table.pick_mirror().is_some()).count();
            assert_eq!(copied, 3 * percent as usize, "{percent}");
        }
    }
}

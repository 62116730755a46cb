//! A deployment's `replicas`: a fixed count (`replicas = 3`) or autoscaling bounds and a
//! target (`replicas = { min = 1, max = 8, target_rps = 50 }`).

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::units::Duration;

/// What `replicas` must be, as serde's errors say it (the parser's hints know it).
pub const EXPECTING: &str = "a number of replicas, or `{ min = 1, max = 8, target_rps = 50 }`";

/// `replicas` as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Replicas {
    Fixed(u32),
    Auto(Autoscale),
}

/// `replicas = { min, max, target_rps | target_cpu, scale_down_window }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Requests per second per replica to scale for (both targets: the local router's
    /// measured rate; on Kubernetes a per-pod custom metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rps: Option<f64>,
    /// Average CPU utilization in percent of the request to scale for (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cpu: Option<u32>,
    /// How long the load must stay low before replicas are removed; 5m when absent
    /// (the HorizontalPodAutoscaler's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_window: Option<Duration>,
}

impl Replicas {
    /// The replicas a new revision starts with: the count, or `min`.
    pub fn initial(&self) -> u32 {
        match self {
            Replicas::Fixed(n) => *n,
            Replicas::Auto(a) => a.min,
        }
    }

    /// The most replicas it may run.
    pub fn most(&self) -> u32 {
        match self {
            Replicas::Fixed(n) => *n,
            Replicas::Auto(a) => a.max,
        }
    }

    pub fn autoscale(&self) -> Option<&Autoscale> {
        match self {
            Replicas::Fixed(_) => None,
            Replicas::Auto(a) => Some(a),
        }
    }
}

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Replicas, D::Error> {
        struct ReplicasVisitor;

        impl<'de> Visitor<'de> for ReplicasVisitor {
            type Value = Replicas;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTING)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Replicas, E> {
                u32::try_from(v)
                    .map(Replicas::Fixed)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Replicas, E> {
                u32::try_from(v)
                    .map(Replicas::Fixed)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Replicas, A::Error> {
                Autoscale::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Replicas::Auto)
            }
        }

        deserializer.deserialize_any(ReplicasVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct D {
        replicas: toml::Spanned<Replicas>,
    }

    #[test]
    fn reads_a_count_or_bounds() {
        let d: D = toml::from_str("replicas = 3").unwrap();
        assert_eq!(d.replicas.get_ref(), &Replicas::Fixed(3));
        let d: D = toml::from_str("replicas = { min = 1, max = 8, target_rps = 50 }").unwrap();
        let auto = d.replicas.get_ref().autoscale().unwrap();
        assert_eq!((auto.min, auto.max, auto.target_rps), (1, 8, Some(50.0)));
        assert_eq!(d.replicas.get_ref().initial(), 1);
        let err = toml::from_str::<D>("replicas = { min = 1, max = 8, rps = 5 }")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown field `rps`"), "{err}");
        let err = toml::from_str::<D>("replicas = -1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("invalid value: integer `-1`"), "{err}");
        let err = toml::from_str::<D>("replicas = \"two\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("a number of replicas, or"), "{err}");
    }
}

//! The rollout gates' reading of a revision from Prometheus, for any serving image:
//! the three queries of [`MetricsValue`] rendered for the revision, run as instant
//! queries (`GET /api/v1/query`), their results read as cumulative [`Stats`].
//!
//! No permission on the cluster is needed for it (the pod-proxy reading needs
//! `pods/proxy`), only a network path from where `cairn apply` runs to Prometheus.
//! Prometheus answers with what it scraped last, so a step's figures lag by up to one
//! scrape interval: hold steps (`step_wait`) several intervals long.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::rollout::Stats;
use crate::rollout_metrics::{render, MetricsValue, Revision};

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a histogram's buckets take a few kilobytes).
const MAX_ANSWER: usize = 4 << 20;

/// Why Prometheus could not give a revision's figures.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("{0}")]
    Query(#[from] crate::rollout_metrics::QueryError),
    #[error("Prometheus at {url} can't be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus refused the {which} query `{query}`: {reason}")]
    Refused {
        which: &'static str,
        query: String,
        reason: String,
    },
    #[error("the {which} query `{query}` {problem}")]
    Result {
        which: &'static str,
        query: String,
        problem: String,
    },
}

/// A Prometheus server the gates read from.
pub struct Prometheus {
    metrics: MetricsValue,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Prometheus {
    pub fn new(metrics: MetricsValue) -> Result<Prometheus, PrometheusError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| PrometheusError::Unreachable {
                url: metrics.prometheus.clone(),
                reason: format!("no TLS root certificates on this machine: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Prometheus { metrics, client })
    }

    /// The revision's cumulative requests, errors and latency histogram.
    pub async fn stats(&self, revision: &Revision<'_>) -> Result<Stats, PrometheusError> {
        let m = &self.metrics;
        let requests = self
            .sum("requests", &render(&m.requests, revision)?)
            .await?;
        let errors = self.sum("errors", &render(&m.errors, revision)?).await?;
        let latency_query = render(&m.latency, revision)?;
        let samples = self.query("latency", &latency_query).await?;
        let mut latency: Vec<(f64, u64)> = Vec::new();
        for sample in samples {
            let Some(le) = sample.metric.get("le") else {
                return Err(PrometheusError::Result {
                    which: "latency",
                    query: latency_query,
                    problem: "returned a series without an `le` label: sum the histogram's `_bucket` series `by (le)`".into(),
                });
            };
            let bound = parse_number(le).ok_or_else(|| PrometheusError::Result {
                which: "latency",
                query: latency_query.clone(),
                problem: format!("returned the bound le={le:?}, which is not a number"),
            })?;
            let count = sample.count("latency", &latency_query)?;
            let bound = m.latency_unit.seconds(bound);
            match latency.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, c)) => *c += count,
                None => latency.push((bound, count)),
            }
        }
        latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Stats {
            requests,
            errors,
            latency,
        })
    }

    /// A query's result added up (no series: 0, as before the first request).
    async fn sum(&self, which: &'static str, query: &str) -> Result<u64, PrometheusError> {
        let mut total = 0u64;
        for sample in self.query(which, query).await? {
            total = total.saturating_add(sample.count(which, query)?);
        }
        Ok(total)
    }

    async fn query(
        &self,
        which: &'static str,
        query: &str,
    ) -> Result<Vec<Sample>, PrometheusError> {
        let base = &self.metrics.prometheus;
        let encoded: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish();
        let uri: http::Uri = format!("{base}/api/v1/query?{encoded}")
            .parse()
            .map_err(|e| PrometheusError::Unreachable {
                url: base.clone(),
                reason: format!("not a URL: {e}"),
            })?;
        let unreachable = |reason: String| PrometheusError::Unreachable {
            url: base.clone(),
            reason,
        };
        let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| unreachable(crate::diagnostics::error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading its answer: {e}")))?
                .to_bytes();
            Ok::<_, PrometheusError>((status, body))
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", QUERY_TIMEOUT.as_secs())))??;
        let (status, body) = answer;
        let parsed: Answer = serde_json::from_slice(&body).map_err(|_| {
            unreachable(format!(
                "HTTP {status} with a body that is not the query API's JSON (is this Prometheus' base URL?)"
            ))
        })?;
        if parsed.status != "success" {
            return Err(PrometheusError::Refused {
                which,
                query: query.to_string(),
                reason: format!(
                    "{}: {}",
                    parsed
                        .error_type
                        .unwrap_or_else(|| format!("HTTP {status}")),
                    parsed.error.unwrap_or_default()
                ),
            });
        }
        let data = parsed.data.unwrap_or_default();
        match data.result_type.as_str() {
            "vector" => serde_json::from_value(data.result).map_err(|e| PrometheusError::Result {
                which,
                query: query.to_string(),
                problem: format!("returned a vector Cairn can't read: {e}"),
            }),
            "scalar" => {
                let value: (f64, String) =
                    serde_json::from_value(data.result).map_err(|e| PrometheusError::Result {
                        which,
                        query: query.to_string(),
                        problem: format!("returned a scalar Cairn can't read: {e}"),
                    })?;
                Ok(vec![Sample {
                    metric: Default::default(),
                    value,
                }])
            }
            other => Err(PrometheusError::Result {
                which,
                query: query.to_string(),
                problem: format!(
                    "returned a {other}, not a vector: an instant query of counters is needed (no range selector)"
                ),
            }),
        }
    }
}

/// The query API's answer.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default, rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: serde_json::Value,
}

/// One series of an instant vector: its labels and `[time, "value"]`.
#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

impl Sample {
    /// The value as a count (counters are floats in Prometheus; they are whole here).
    fn count(&self, which: &'static str, query: &str) -> Result<u64, PrometheusError> {
        match parse_number(&self.value.1) {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(v.round() as u64),
            _ => Err(PrometheusError::Result {
                which,
                query: query.to_string(),
                problem: format!(
                    "returned {:?}, not a count (is it a counter, or a sum of counters?)",
                    self.value.1
                ),
            }),
        }
    }
}

/// A number as Prometheus writes one (`+Inf`, `NaN` included).
fn parse_number(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_numbers() {
        assert_eq!(parse_number("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_number("0.25"), Some(0.25));
        assert!(parse_number("NaN").unwrap().is_nan());
        assert_eq!(parse_number("x"), None);
        let sample = Sample {
            metric: Default::default(),
            value: (0.0, "NaN".into()),
        };
        assert!(sample
            .count("requests", "q")
            .unwrap_err()
            .to_string()
            .contains("not a count"));
    }
}

//! Where a rollout's gates read a revision's requests, errors and latency when the
//! manifest says Prometheus (`[endpoint.<name>.rollout.metrics]`): three PromQL
//! templates, from a [`Preset`] or the manifest, rendered per revision in minijinja's
//! sandbox with the [`VARIABLES`] below.
//!
//! The queries return cumulative figures, as the rollout engine's [`crate::rollout::Stats`]
//! are: `requests` and `errors` one number each (a sum of counters), `latency` the
//! buckets of a histogram summed `by (le)`. The engine takes the difference between a
//! step's start and each poll, so the queries must not take rates themselves.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::manifest::MetricsSpec;

/// The names a query template may use, as `{{ <name> }}`.
pub const VARIABLES: [&str; 4] = ["namespace", "endpoint", "service", "pods"];

/// Whose metric names a preset's queries read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `cairn serve`'s own (`cairn_requests_total`, `cairn_request_duration_seconds`),
    /// scraped per pod with the usual `namespace` and `pod` target labels.
    Cairn,
    /// Istio's standard metrics, as the revision's sidecars report them
    /// (`istio_requests_total`, `istio_request_duration_milliseconds`).
    Istio,
    /// Linkerd's proxy metrics, inbound to the revision (`response_total`,
    /// `response_latency_ms`).
    Linkerd,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Cairn, Preset::Istio, Preset::Linkerd];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Cairn => "cairn",
            Preset::Istio => "istio",
            Preset::Linkerd => "linkerd",
        }
    }

    pub fn parse(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Its queries: requests, errors, latency buckets, and the unit of `le`.
    fn queries(self) -> (&'static str, &'static str, &'static str, LatencyUnit) {
        match self {
            Preset::Cairn => (
                r#"sum(cairn_requests_total{namespace="{{ namespace }}", pod=~"{{ pods }}"})"#,
                r#"sum(cairn_requests_total{namespace="{{ namespace }}", pod=~"{{ pods }}", code=~"5.."})"#,
                r#"sum by (le) (cairn_request_duration_seconds_bucket{namespace="{{ namespace }}", pod=~"{{ pods }}"})"#,
                LatencyUnit::Seconds,
            ),
            Preset::Istio => (
                r#"sum(istio_requests_total{reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload="{{ service }}"})"#,
                r#"sum(istio_requests_total{reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload="{{ service }}", response_code=~"5.."})"#,
                r#"sum by (le) (istio_request_duration_milliseconds_bucket{reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload="{{ service }}"})"#,
                LatencyUnit::Milliseconds,
            ),
            Preset::Linkerd => (
                r#"sum(response_total{direction="inbound", namespace="{{ namespace }}", deployment="{{ service }}"})"#,
                r#"sum(response_total{direction="inbound", namespace="{{ namespace }}", deployment="{{ service }}", classification="failure"})"#,
                r#"sum by (le) (response_latency_ms_bucket{direction="inbound", namespace="{{ namespace }}", deployment="{{ service }}"})"#,
                LatencyUnit::Milliseconds,
            ),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The unit of a latency histogram's `le` bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatencyUnit {
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Milliseconds,
}

impl LatencyUnit {
    pub fn parse(text: &str) -> Option<LatencyUnit> {
        match text {
            "s" => Some(LatencyUnit::Seconds),
            "ms" => Some(LatencyUnit::Milliseconds),
            _ => None,
        }
    }

    /// A bound in this unit, in seconds.
    pub fn seconds(self, bound: f64) -> f64 {
        match self {
            LatencyUnit::Seconds => bound,
            LatencyUnit::Milliseconds => bound / 1000.0,
        }
    }
}

/// `[endpoint.<name>.rollout.metrics]` resolved: the plan's record of where the gates
/// read, queries unrendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsValue {
    pub prometheus: String,
    /// The preset the queries not given come from.
    pub preset: String,
    pub requests: String,
    pub errors: String,
    pub latency: String,
    pub latency_unit: LatencyUnit,
}

impl MetricsValue {
    /// The manifest's table with the preset's queries filled in. `None` when the preset
    /// or the unit is unknown (validation refuses both first).
    pub fn of(spec: &MetricsSpec) -> Option<MetricsValue> {
        let preset = match &spec.preset {
            Some(name) => Preset::parse(name.get_ref())?,
            None => Preset::Cairn,
        };
        let (requests, errors, latency, unit) = preset.queries();
        let or = |own: &Option<toml::Spanned<String>>, default: &str| {
            own.as_ref()
                .map_or_else(|| default.to_string(), |q| q.get_ref().clone())
        };
        let latency_unit = match &spec.latency_unit {
            Some(u) => LatencyUnit::parse(u.get_ref())?,
            None => unit,
        };
        Some(MetricsValue {
            prometheus: spec.prometheus.get_ref().trim_end_matches('/').to_string(),
            preset: preset.name().to_string(),
            requests: or(&spec.requests, requests),
            errors: or(&spec.errors, errors),
            latency: or(&spec.latency, latency),
            latency_unit,
        })
    }

    /// "Prometheus at http://…, istio's metrics" (or "its own queries").
    pub fn describe(&self) -> String {
        let own = Preset::parse(&self.preset).is_none_or(|p| {
            let (r, e, l, _) = p.queries();
            (r, e, l) != (&self.requests, &self.errors, &self.latency)
        });
        if own {
            format!(
                "read from Prometheus at {} by the manifest's queries",
                self.prometheus
            )
        } else {
            format!(
                "read from Prometheus at {} ({} metrics)",
                self.prometheus, self.preset
            )
        }
    }
}

/// What a revision's queries are rendered with.
#[derive(Debug, Clone)]
pub struct Revision<'a> {
    pub namespace: &'a str,
    pub endpoint: &'a str,
    /// The revision's Service, which is also its Deployment's name.
    pub service: &'a str,
}

impl Revision<'_> {
    fn context(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("namespace", self.namespace.to_string()),
            ("endpoint", self.endpoint.to_string()),
            ("service", self.service.to_string()),
            ("pods", pods_regex(self.service)),
        ])
    }
}

/// A regular expression matching exactly the pods of a Deployment: Kubernetes names them
/// `<deployment>-<pod-template-hash>-<5 characters>`, so a longer revision's pods that
/// share the prefix don't match.
pub fn pods_regex(deployment: &str) -> String {
    format!(
        "{}-[a-z0-9]{{1,10}}-[a-z0-9]{{5}}",
        regex_escape(deployment)
    )
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// Why a query template can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query template does not parse: {0}")]
    Syntax(String),
    #[error("`{{{{ {0} }}}}` is not a variable of a gate query")]
    UnknownVariable(String),
    #[error("rendering the query: {0}")]
    Render(String),
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A query is a few hundred characters; fuel bounds any loop a template writes.
    env.set_fuel(Some(10_000));
    env
}

/// Checks a template the way [`render`] will use it: it parses, and names only
/// [`VARIABLES`].
pub fn check(template: &str) -> Result<(), QueryError> {
    let env = environment();
    let parsed = env
        .template_from_str(template)
        .map_err(|e| QueryError::Syntax(e.to_string()))?;
    let mut unknown: Vec<String> = parsed
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !VARIABLES.contains(&v.as_str()))
        .collect();
    unknown.sort();
    match unknown.into_iter().next() {
        Some(name) => Err(QueryError::UnknownVariable(name)),
        None => Ok(()),
    }
}

/// The query for one revision.
pub fn render(template: &str, revision: &Revision<'_>) -> Result<String, QueryError> {
    let env = environment();
    let parsed = env
        .template_from_str(template)
        .map_err(|e| QueryError::Syntax(e.to_string()))?;
    parsed
        .render(revision.context())
        .map_err(|e| QueryError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVISION: Revision<'static> = Revision {
        namespace: "imaging-serve",
        endpoint: "triage",
        service: "triage-blue-6b28c1",
    };

    #[test]
    fn every_preset_renders_for_a_revision() {
        for preset in Preset::ALL {
            let (requests, errors, latency, _) = preset.queries();
            for q in [requests, errors, latency] {
                check(q).unwrap();
                let text = render(q, &REVISION).unwrap();
                assert!(text.contains("imaging-serve"), "{text}");
                assert!(!text.contains("{{"), "{text}");
            }
        }
        assert_eq!(
            render(Preset::Cairn.queries().0, &REVISION).unwrap(),
            r#"sum(cairn_requests_total{namespace="imaging-serve", pod=~"triage-blue-6b28c1-[a-z0-9]{1,10}-[a-z0-9]{5}"})"#
        );
    }

    #[test]
    fn the_pods_regex_names_one_deployment() {
        assert_eq!(pods_regex("a.b-1"), r"a\.b-1-[a-z0-9]{1,10}-[a-z0-9]{5}");
    }

    #[test]
    fn templates_name_only_known_variables() {
        assert_eq!(
            check("sum(x{ns=\"{{ namespce }}\"})"),
            Err(QueryError::UnknownVariable("namespce".into()))
        );
        assert!(matches!(
            check("sum({{ service"),
            Err(QueryError::Syntax(_))
        ));
        check("sum(up{job=\"{{ endpoint }}\"})").unwrap();
    }

    #[test]
    fn the_manifest_overrides_a_presets_queries_one_by_one() {
        let spec: MetricsSpec = toml::from_str(
            "prometheus = \"http://prom:9090/\"\npreset = \"istio\"\nerrors = \"sum(e)\"\n",
        )
        .unwrap();
        let value = MetricsValue::of(&spec).unwrap();
        assert_eq!(value.prometheus, "http://prom:9090");
        assert_eq!(value.errors, "sum(e)");
        assert_eq!(value.requests, Preset::Istio.queries().0);
        assert_eq!(value.latency_unit, LatencyUnit::Milliseconds);
        assert!(value.describe().contains("the manifest's queries"));
        let spec: MetricsSpec = toml::from_str("prometheus = \"http://prom:9090\"\n").unwrap();
        assert_eq!(
            MetricsValue::of(&spec).unwrap().describe(),
            "read from Prometheus at http://prom:9090 (cairn metrics)"
        );
    }
}

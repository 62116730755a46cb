//! `[endpoint.<name>.rollout.metrics]`: only on Kubernetes (the local router measures
//! every revision itself), a Prometheus URL without credentials, a known preset and
//! latency unit, and query templates that parse and name only known variables.

use toml::Spanned;

use super::{Ctx, Out};
use crate::desired::Resource;
use crate::diagnostics::{did_you_mean, Diagnostic};
use crate::manifest::{MetricsSpec, Target};
use crate::rollout_metrics::{check, LatencyUnit, Preset, QueryError, VARIABLES};

impl Ctx<'_> {
    pub(super) fn rollout_metrics(
        &self,
        r: &Resource,
        metrics: &Spanned<MetricsSpec>,
        target: Option<Target>,
        out: &mut Out,
    ) {
        if target == Some(Target::Local) {
            out.error(
                Diagnostic::error(
                    "target-field",
                    "`rollout.metrics` applies only to endpoints on `target = \"kubernetes\"`",
                )
                .at(self.loc(&r.file, metrics.span()))
                .help("remove it: on the local target the router in front of the replicas measures each revision's errors and latency itself, whatever the server"),
            );
            return;
        }
        let spec = metrics.get_ref();
        self.prometheus_url(r, &spec.prometheus, out);
        if let Some(preset) = &spec.preset {
            if Preset::parse(preset.get_ref()).is_none() {
                let names = Preset::ALL.map(Preset::name);
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{}` is not a metrics preset", preset.get_ref()),
                    )
                    .at(self.loc(&r.file, preset.span()))
                    .help(match did_you_mean(preset.get_ref(), names.iter().copied()) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!(
                            "presets: {}; or give your own `requests`, `errors` and `latency` queries",
                            names.join(", ")
                        ),
                    }),
                );
            }
        }
        if let Some(unit) = &spec.latency_unit {
            if LatencyUnit::parse(unit.get_ref()).is_none() {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("latency_unit `{}` is neither `s` nor `ms`", unit.get_ref()),
                    )
                    .at(self.loc(&r.file, unit.span()))
                    .help("the unit of the `le` bounds the `latency` query returns: `s` for `*_seconds_bucket`, `ms` for `*_milliseconds_bucket`"),
                );
            }
        }
        for (name, query) in [
            ("requests", &spec.requests),
            ("errors", &spec.errors),
            ("latency", &spec.latency),
        ] {
            let Some(query) = query else { continue };
            let error = match check(query.get_ref()) {
                Ok(()) => continue,
                Err(e) => e,
            };
            let help = match &error {
                QueryError::UnknownVariable(v) => {
                    match did_you_mean(v, VARIABLES.iter().copied()) {
                        Some(best) => format!("did you mean `{{{{ {best} }}}}`?"),
                        None => format!(
                            "a gate query knows {}",
                            VARIABLES.map(|v| format!("`{{{{ {v} }}}}`")).join(", ")
                        ),
                    }
                }
                _ => "a PromQL query, with `{{ namespace }}`, `{{ endpoint }}`, `{{ service }}` (the revision's Service and Deployment) or `{{ pods }}` (a regex of its pods' names) where the revision goes".to_string(),
            };
            out.error(
                Diagnostic::error("invalid-query", format!("the `{name}` query: {error}"))
                    .at(self.loc(&r.file, query.span()))
                    .help(help),
            );
        }
    }

    fn prometheus_url(&self, r: &Resource, url: &Spanned<String>, out: &mut Out) {
        let problem = match url::Url::parse(url.get_ref()) {
            Err(e) => Some(format!("`{}` is not a URL ({e})", url.get_ref())),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                Some(format!("`{}` is not an http or https URL", url.get_ref()))
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => Some(
                "the Prometheus URL holds credentials, which would be written into plans and comments"
                    .to_string(),
            ),
            Ok(u) if u.query().is_some() || u.fragment().is_some() => Some(format!(
                "`{}` has a query or fragment; give Prometheus' base URL",
                url.get_ref()
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            out.error(
                Diagnostic::error("invalid-value", problem)
                    .at(self.loc(&r.file, url.span()))
                    .help("Prometheus' base URL as `cairn apply` reaches it, e.g. `prometheus = \"http://prometheus.monitoring:9090\"` (the query API is `<url>/api/v1/query`)"),
            );
        }
    }
}

//! Endpoint rules: its compute and port, deployment names, models, GPUs and replicas,
//! a deployment's own serving process (`command` placeholders, `health`, `health_port`),
//! the traffic and mirror maps, what needs a gateway, rollout steps and gates, and
//! local endpoints' ports.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{invalid_name, Ctx, Out, View};
use crate::address::{is_dns1123_label, Address, Kind, Reference};
use crate::desired::Resource;
use crate::diagnostics::{did_you_mean, Diagnostic, Diagnostics};
use crate::manifest::{DeploymentSpec, EndpointSpec, Role, Spec, Target, SERVER_PLACEHOLDERS};

impl Ctx<'_> {
    pub(super) fn endpoint<'v>(
        &self,
        view: &View<'v>,
        r: &Resource,
        spec: &EndpointSpec,
        out: &mut Out,
    ) {
        let compute = self.compute_of(view, r, &spec.compute, Role::Serve, out);
        let compute_name = Reference::parse(spec.compute.get_ref())
            .map(|c| c.name)
            .unwrap_or_default();
        if let Some(compute) = compute {
            if *compute.target.get_ref() == Target::Local && spec.port.is_none() {
                out.error(
                    Diagnostic::error(
                        "missing-port",
                        "an endpoint on the local target needs a `port`",
                    )
                    .at(self.loc(&r.file, r.name_span.clone()))
                    .help("add `port = 8080` (the local router listens there)"),
                );
            }
        }
        if spec.deployments.is_empty() {
            out.error(
                Diagnostic::error("no-deployments", "endpoint declares no deployments")
                    .at(self.loc(&r.file, r.name_span.clone()))
                    .help(format!(
                        "add `[endpoint.{}.deployments.blue]` with `model = \"model.<name>\"`",
                        r.address.name
                    )),
            );
        }
        for (name, deployment) in &spec.deployments {
            let d = deployment.get_ref();
            let full = format!("{}-{}", r.address.name, name.get_ref());
            if !is_dns1123_label(name.get_ref()) {
                out.error(invalid_name(
                    self.loc(&r.file, name.span()),
                    name.get_ref(),
                    "deployment",
                ));
            } else if full.len() > 63 {
                out.error(
                    Diagnostic::error(
                        "invalid-name",
                        format!("`{full}` (endpoint-deployment) is longer than 63 characters"),
                    )
                    .at(self.loc(&r.file, name.span()))
                    .help("Kubernetes names the deployment after both; shorten one"),
                );
            }
            self.reference(view, r, "model", &d.model, &[Kind::Model], true, out);
            if let Some(compute) = compute {
                let type_gpus =
                    self.instance_type(r, compute, &compute_name, d.instance_type.as_ref(), out);
                self.gpus(
                    r,
                    compute,
                    &compute_name,
                    d.gpus.as_ref(),
                    d.most_replicas(),
                    "replica",
                    type_gpus,
                    out,
                );
            }
            self.server_process(r, compute.map(|c| *c.target.get_ref()), d, out);
            if let Some(replicas) = &d.replicas {
                if let Some(autoscale) = replicas.get_ref().autoscale() {
                    let target = compute.map(|c| *c.target.get_ref());
                    self.autoscale(r, autoscale, replicas.span(), target, out);
                }
            }
            // (An autoscaling `min` of 0 has its own finding.)
            if d.replicas() == 0 && d.autoscale().is_none() && spec.weight_of(name.get_ref()) > 0 {
                out.error(
                    Diagnostic::error(
                        "no-replicas",
                        format!("deployment `{}` has traffic but 0 replicas", name.get_ref()),
                    )
                    .at(self.loc(
                        &r.file,
                        d.replicas.as_ref().map_or(name.span(), |x| x.span()),
                    ))
                    .help("give it replicas, or move its traffic to another deployment first"),
                );
            }
        }
        self.traffic(r, spec, out);
        self.mirror(r, spec, out);
        self.conditions(r, spec.promote_if.as_ref(), out);
        if let Some(compute) = compute {
            if *compute.target.get_ref() == Target::Kubernetes && compute.gateway.is_none() {
                self.without_gateway(r, spec, &compute_name, out);
            }
        }
        if let Some(monitor) = &spec.monitor {
            self.monitor(r, monitor, out);
        }
        if let Some(rollout) = &spec.rollout {
            self.rollout(r, rollout, out);
            let target = compute.map(|c| *c.target.get_ref());
            if let Some(metrics) = &rollout.get_ref().metrics {
                self.rollout_metrics(r, metrics, target, out);
            } else if target == Some(Target::Kubernetes) {
                self.gates_of_own_servers(r, spec, rollout.get_ref(), out);
            }
        }
    }

    /// On Kubernetes, without `rollout.metrics`, the gates read each pod's `/metrics` as
    /// `cairn serve` writes them (the local router measures any server itself): a gated
    /// rollout of a deployment running a server of its own works only if that server
    /// writes them too.
    fn gates_of_own_servers(
        &self,
        r: &Resource,
        spec: &EndpointSpec,
        rollout: &crate::manifest::RolloutSpec,
        out: &mut Out,
    ) {
        if rollout.max_error_rate.is_none() && rollout.max_p99_ms.is_none() {
            return;
        }
        for (name, deployment) in &spec.deployments {
            let Some(command) = &deployment.get_ref().command else {
                continue;
            };
            if command
                .get_ref()
                .first()
                .is_some_and(|p| p.get_ref() == "cairn")
            {
                continue;
            }
            out.error(
                Diagnostic::warning(
                    "gate-metrics",
                    format!(
                        "deployment `{}` runs its own server, and on Kubernetes the rollout gates read each pod's `/metrics` as `cairn serve` writes them",
                        name.get_ref()
                    ),
                )
                .at(self.loc(&r.file, command.span()))
                .help("read the gates from Prometheus (`[endpoint.<name>.rollout.metrics] prometheus = \"http://…\"`, with a preset such as `istio` or your own queries), expose `cairn_requests_total` (with a `code` label) and the `cairn_request_duration_seconds` histogram on `/metrics` at the serving port, or roll out without `max_error_rate` and `max_p99_ms`"),
            );
        }
    }

    /// A deployment's own serving process: its `command`'s placeholders, its `health`
    /// path and `health_port`. `target` is the compute's, when it resolved.
    fn server_process(
        &self,
        r: &Resource,
        target: Option<Target>,
        d: &DeploymentSpec,
        out: &mut Out,
    ) {
        if let Some(command) = &d.command {
            if command.get_ref().is_empty() {
                out.error(
                    Diagnostic::error("missing-command", "`command` is empty")
                        .at(self.loc(&r.file, command.span()))
                        .help("give the program and its arguments, e.g. `[\"python\", \"server.py\", \"--model\", \"{{ model }}\", \"--port\", \"{{ port }}\"]`, or remove `command` to run Cairn's reference server"),
                );
            }
            let mut port = false;
            for (i, arg) in command.get_ref().iter().enumerate() {
                for name in placeholder_names(arg.get_ref()) {
                    // In an argument: the program's name is not where a port is passed.
                    if name == "port" && i > 0 {
                        port = true;
                    }
                    if SERVER_PLACEHOLDERS.contains(&name.as_str()) {
                        continue;
                    }
                    out.error(
                        Diagnostic::error(
                            "unknown-placeholder",
                            format!("`{{{{ {name} }}}}` is not a placeholder of a deployment's command"),
                        )
                        .at(self.loc(&r.file, arg.span()))
                        .help(match did_you_mean(&name, SERVER_PLACEHOLDERS.iter().copied()) {
                            Some(best) => format!("did you mean `{{{{ {best} }}}}`?"),
                            None => "a deployment's command knows `{{ model }}` (the model version's folder) and `{{ port }}` (the port to listen on); pass anything else through `env`".to_string(),
                        }),
                    );
                }
            }
            if target == Some(Target::Local) && !port && !command.get_ref().is_empty() {
                out.error(
                    Diagnostic::error(
                        "missing-placeholder",
                        "no argument of `command` holds `{{ port }}`, so the replicas can't be told where to listen",
                    )
                    .at(self.loc(&r.file, command.span()))
                    .help("the local target gives every replica its own port: pass it, e.g. `\"--port\", \"{{ port }}\"`"),
                );
            }
        }
        if let Some(health) = &d.health {
            let path = health.get_ref();
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("the health path {path:?} must start with `/` and hold no spaces or control characters"),
                    )
                    .at(self.loc(&r.file, health.span()))
                    .help("a path the server answers `GET` with 200 once it can serve, e.g. `health = \"/ready\"`"),
                );
            } else if d.command.is_none()
                && d.image.is_none()
                && path != crate::manifest::DEFAULT_HEALTH_PATH
            {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("Cairn's reference server answers `/healthz`, not `{path}`"),
                    )
                    .at(self.loc(&r.file, health.span()))
                    .help("`health` is for a deployment's own server: declare its `command` (or `image`), or remove `health`"),
                );
            }
        }
        if let Some(port) = &d.health_port {
            if target == Some(Target::Local) {
                out.error(
                    Diagnostic::error(
                        "target-field",
                        "`health_port` applies only to endpoints on `target = \"kubernetes\"`",
                    )
                    .at(self.loc(&r.file, port.span()))
                    .help("remove `health_port`: on the local target the supervisor and the router read `health` on the port each replica serves on"),
                );
            } else if *port.get_ref() == 0 {
                out.error(
                    Diagnostic::error("invalid-port", "`health_port` 0 is not a port a probe can read")
                        .at(self.loc(&r.file, port.span()))
                        .help("the container port the server answers `health` on, e.g. `health_port = 8081`; remove it to probe the serving port"),
                );
            }
        }
    }

    fn unknown_deployment(
        &self,
        r: &Resource,
        spec: &EndpointSpec,
        name: &Spanned<String>,
        map: &str,
    ) -> Diagnostic {
        let declared: Vec<&str> = spec
            .deployments
            .keys()
            .map(|k| k.get_ref().as_str())
            .collect();
        Diagnostic::error(
            "unknown-deployment",
            format!(
                "`{map}` names deployment `{}`, which is not declared",
                name.get_ref()
            ),
        )
        .at(self.loc(&r.file, name.span()))
        .help(
            match did_you_mean(name.get_ref(), declared.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None if declared.is_empty() => "declare deployments first".to_string(),
                None => format!("declared deployments: {}", declared.join(", ")),
            },
        )
    }

    fn traffic(&self, r: &Resource, spec: &EndpointSpec, out: &mut Out) {
        let Some(traffic) = &spec.traffic else { return };
        let mut sum: u64 = 0;
        for (name, weight) in traffic.get_ref() {
            if !spec.deployments.contains_key(name.get_ref().as_str()) {
                out.error(self.unknown_deployment(r, spec, name, "traffic"));
            }
            if *weight.get_ref() > 100 {
                out.error(
                    Diagnostic::error(
                        "traffic",
                        format!("weight {} is over 100%", weight.get_ref()),
                    )
                    .at(self.loc(&r.file, weight.span()))
                    .help("weights are percentages from 0 to 100"),
                );
            }
            sum += u64::from(*weight.get_ref());
        }
        if sum != 0 && sum != 100 {
            let parts: Vec<String> = traffic
                .get_ref()
                .iter()
                .map(|(k, v)| format!("{} = {}", k.get_ref(), v.get_ref()))
                .collect();
            out.error(
                Diagnostic::error(
                    "traffic-sum",
                    format!("traffic weights add up to {sum}%, not 100% (or 0%)"),
                )
                .at(self.loc(&r.file, traffic.span()))
                .label(parts.join(", "))
                .help(
                    "make the weights add up to 100, or all 0 to take the endpoint out of service",
                ),
            );
        }
    }

    /// Without a gateway, the endpoint's Service selector is the switch: all traffic
    /// goes to one deployment, and nothing can be mirrored.
    fn without_gateway(&self, r: &Resource, spec: &EndpointSpec, compute: &str, out: &mut Out) {
        if let Some(traffic) = &spec.traffic {
            let split: Vec<String> = traffic
                .get_ref()
                .iter()
                .filter(|(_, w)| *w.get_ref() > 0)
                .map(|(k, v)| format!("{} = {}", k.get_ref(), v.get_ref()))
                .collect();
            if split.len() > 1 {
                out.error(
                    Diagnostic::error(
                        "traffic-split",
                        format!("compute `{compute}` has no `gateway`, so traffic can't be split"),
                    )
                    .at(self.loc(&r.file, traffic.span()))
                    .label(split.join(", "))
                    .help(format!(
                        "without a gateway the endpoint's Service selects one deployment (0/100): put 100 on one, or declare `gateway = \"<namespace>/<gateway>\"` on compute.{compute} for weighted traffic through an HTTPRoute"
                    )),
                );
            }
        }
        if let Some(mirror) = &spec.mirror {
            out.error(
                Diagnostic::error(
                    "mirror",
                    format!("compute `{compute}` has no `gateway`, so requests can't be mirrored"),
                )
                .at(self.loc(&r.file, mirror.span()))
                .help(format!(
                    "mirroring is an HTTPRoute filter: declare `gateway` on compute.{compute}, or drop the mirror"
                )),
            );
        }
        if let Some(m) = spec
            .rollout
            .as_ref()
            .and_then(|r| r.get_ref().mirror.as_ref())
        {
            out.error(
                Diagnostic::error(
                    "mirror",
                    format!("compute `{compute}` has no `gateway`, so a rollout can't mirror requests"),
                )
                .at(self.loc(&r.file, m.span()))
                .help(format!(
                    "mirroring is an HTTPRoute filter: declare `gateway` on compute.{compute}, or drop `mirror` from the rollout"
                )),
            );
        }
    }

    fn mirror(&self, r: &Resource, spec: &EndpointSpec, out: &mut Out) {
        let Some(mirror) = &spec.mirror else { return };
        let entries = mirror.get_ref();
        if entries.len() > 1 {
            out.error(
                Diagnostic::error(
                    "mirror",
                    format!(
                        "traffic is mirrored to {} deployments; at most one is allowed",
                        entries.len()
                    ),
                )
                .at(self.loc(&r.file, mirror.span()))
                .help("mirror to a single deployment, usually the one being tested"),
            );
        }
        for (name, percent) in entries {
            if !spec.deployments.contains_key(name.get_ref().as_str()) {
                out.error(self.unknown_deployment(r, spec, name, "mirror"));
                continue;
            }
            if *percent.get_ref() > 50 {
                out.error(
                    Diagnostic::error(
                        "mirror",
                        format!("mirror of {}% is over the 50% limit", percent.get_ref()),
                    )
                    .at(self.loc(&r.file, percent.span()))
                    .help("mirrored traffic doubles the load; copy at most 50%"),
                );
            }
            let weight = spec.weight_of(name.get_ref());
            if weight > 0 {
                out.error(
                    Diagnostic::error(
                        "mirror",
                        format!("deployment `{}` already takes {weight}% of live traffic and can't also be a mirror", name.get_ref()),
                    )
                    .at(self.loc(&r.file, name.span()))
                    .help("mirror to a deployment with 0% traffic, or drop the mirror"),
                );
            }
        }
    }

    fn rollout(
        &self,
        r: &Resource,
        rollout: &Spanned<crate::manifest::RolloutSpec>,
        out: &mut Out,
    ) {
        let spec = rollout.get_ref();
        let steps = spec.steps.get_ref();
        let at = || self.loc(&r.file, spec.steps.span());
        let bad = |msg: String| {
            Diagnostic::error("rollout-steps", msg).at(at()).help(
                "steps are increasing percentages of traffic ending at 100, e.g. `[10, 50, 100]`",
            )
        };
        if steps.is_empty() {
            out.error(bad("`steps` is empty".into()));
        } else if let Some(s) = steps.iter().find(|s| **s == 0 || **s > 100) {
            out.error(bad(format!("step {s}% is outside 1–100")));
        } else if steps.windows(2).any(|w| w[0] >= w[1]) {
            out.error(bad(format!("steps {steps:?} do not strictly increase")));
        } else if steps.last() != Some(&100) {
            out.error(bad(format!(
                "steps end at {}%, not 100%",
                steps.last().unwrap_or(&0)
            )));
        }
        if let Some(rate) = &spec.max_error_rate {
            let v = *rate.get_ref();
            if !(0.0..=1.0).contains(&v) {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("max_error_rate {v:?} is not between 0 and 1"),
                    )
                    .at(self.loc(&r.file, rate.span()))
                    .help("it is a fraction: 0.01 means 1% of requests"),
                );
            }
        }
        if let Some(mirror) = &spec.mirror {
            let v = *mirror.get_ref();
            if v == 0 || v > 100 {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("rollout mirror {v}% is outside 1–100"),
                    )
                    .at(self.loc(&r.file, mirror.span()))
                    .help("the percent of requests copied to the new version before traffic moves, e.g. `mirror = 50`"),
                );
            }
        }
        if let Some(min) = &spec.min_requests {
            if *min.get_ref() == 0 {
                out.error(
                    Diagnostic::error("invalid-value", "min_requests must be at least 1")
                        .at(self.loc(&r.file, min.span()))
                        .help("a gate judged on no requests passes any version; for a quiet endpoint, lower it (e.g. `min_requests = 5`) or hold steps longer"),
                );
            }
        }
        if let Some(p99) = &spec.max_p99_ms {
            if *p99.get_ref() == 0 {
                out.error(
                    Diagnostic::error("invalid-value", "max_p99_ms must be above 0")
                        .at(self.loc(&r.file, p99.span()))
                        .help("the p99 latency gate in milliseconds, e.g. `max_p99_ms = 250`; remove it to roll out without a latency gate"),
                );
            }
        }
    }

    /// Endpoints on the local target share this machine's ports.
    pub(super) fn local_ports(&self, view: &View<'_>, diagnostics: &mut Diagnostics) {
        let mut taken: BTreeMap<u16, &Resource> = BTreeMap::new();
        for r in view.resources {
            let Spec::Endpoint(spec) = &r.spec else {
                continue;
            };
            let Some(port) = &spec.port else { continue };
            let Ok(c) = Reference::parse(spec.compute.get_ref()) else {
                continue;
            };
            let compute = view.get(&Address::new(
                r.address.workspace.clone(),
                Kind::Compute,
                c.name,
            ));
            let Some(Spec::Compute(c)) = compute.map(|c| &c.spec) else {
                continue;
            };
            if *c.target.get_ref() != Target::Local {
                continue;
            }
            if let Some(first) = taken.get(port.get_ref()) {
                diagnostics.push(
                    Diagnostic::error(
                        "port-conflict",
                        format!(
                            "port {} is already used by {}",
                            port.get_ref(),
                            first.address
                        ),
                    )
                    .at(self.loc(&r.file, port.span()))
                    .related(
                        self.loc(&first.file, first.name_span.clone()),
                        "that endpoint is declared here",
                    )
                    .help(
                        "endpoints on the local target share this machine; give each its own port",
                    ),
                );
            } else {
                taken.insert(*port.get_ref(), r);
            }
        }
    }
}

/// The names inside `{{ … }}` in one argument, trimmed.
fn placeholder_names(arg: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = arg;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        names.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    names
}

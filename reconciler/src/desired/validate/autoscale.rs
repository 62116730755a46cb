//! A deployment's autoscaling (`replicas = { min, max, target_rps | target_cpu }`):
//! bounds that make sense, exactly one target, and `target_cpu` only on Kubernetes (the
//! local router measures requests, not CPU).

use std::ops::Range;

use super::{Ctx, Out};
use crate::desired::Resource;
use crate::diagnostics::Diagnostic;
use crate::manifest::{Autoscale, Target};

impl Ctx<'_> {
    pub(super) fn autoscale(
        &self,
        r: &Resource,
        autoscale: &Autoscale,
        span: Range<usize>,
        target: Option<Target>,
        out: &mut Out,
    ) {
        let at = || self.loc(&r.file, span.clone());
        let example = "e.g. `replicas = { min = 1, max = 8, target_rps = 50 }`";
        if autoscale.min == 0 {
            out.error(
                Diagnostic::error("invalid-value", "autoscaling `min` is 0")
                    .at(at())
                    .help(format!("scaling to zero is not supported: a deployment keeps at least one replica to answer; {example}")),
            );
        }
        if autoscale.max < autoscale.min {
            out.error(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "autoscaling `max` ({}) is below `min` ({})",
                        autoscale.max, autoscale.min
                    ),
                )
                .at(at())
                .help(format!(
                    "the replicas scale between `min` and `max`; {example}"
                )),
            );
        }
        match (autoscale.target_rps, autoscale.target_cpu) {
            (None, None) => out.error(
                Diagnostic::error("invalid-value", "autoscaling has no target")
                    .at(at())
                    .help(format!("give `target_rps` (requests per second per replica) or, on Kubernetes, `target_cpu` (percent of the CPU request); {example}")),
            ),
            (Some(_), Some(_)) => out.error(
                Diagnostic::error("invalid-value", "autoscaling has two targets, `target_rps` and `target_cpu`")
                    .at(at())
                    .help("scale for one of them: keep `target_rps` or `target_cpu`"),
            ),
            (Some(rps), None) if !(rps.is_finite() && rps > 0.0) => out.error(
                Diagnostic::error("invalid-value", format!("`target_rps` {rps} is not a positive number of requests per second"))
                    .at(at())
                    .help("the requests per second one replica should take, e.g. `target_rps = 50`"),
            ),
            (None, Some(cpu)) if cpu == 0 || cpu > 1000 => out.error(
                Diagnostic::error("invalid-value", format!("`target_cpu` {cpu}% is outside 1–1000%"))
                    .at(at())
                    .help("the average CPU use to scale for, in percent of each replica's CPU request, e.g. `target_cpu = 70`"),
            ),
            (None, Some(_)) if target == Some(Target::Local) => out.error(
                Diagnostic::error("target-field", "`target_cpu` applies only to endpoints on `target = \"kubernetes\"`")
                    .at(at())
                    .help("on the local target replicas scale by the router's measured request rate: use `target_rps`"),
            ),
            _ => {}
        }
    }
}

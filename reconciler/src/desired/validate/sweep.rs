//! `[job.<name>.sweep]`: params with values (at most [`MAX_TRIALS`] combinations), a pick
//! that parses, `parallel` trials within the compute's GPU quota, only on the local
//! target for now; and `{{ params.<name> }}` in a command names a declared param.

use super::job::placeholders;
use super::{Ctx, Out};
use crate::desired::Resource;
use crate::diagnostics::{did_you_mean, Diagnostic};
use crate::manifest::sweep::{Pick, MAX_TRIALS};
use crate::manifest::{ComputeSpec, JobSpec};

impl Ctx<'_> {
    pub(super) fn sweep(
        &self,
        r: &Resource,
        spec: &JobSpec,
        compute: Option<&ComputeSpec>,
        out: &mut Out,
    ) {
        let declared: Vec<String> = spec
            .sweep
            .as_ref()
            .map(|s| {
                s.get_ref()
                    .params
                    .get_ref()
                    .keys()
                    .map(|k| k.get_ref().clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(command) = &spec.command {
            for (name, span) in placeholders(command.get_ref(), "params") {
                if declared.contains(&name) {
                    continue;
                }
                out.error(
                    Diagnostic::error(
                        "unknown-placeholder",
                        format!("`{{{{ params.{name} }}}}` names no parameter of a sweep"),
                    )
                    .at(self.loc(&r.file, span))
                    .help(
                        match did_you_mean(&name, declared.iter().map(String::as_str)) {
                            Some(best) => format!("did you mean `{{{{ params.{best} }}}}`?"),
                            None => format!(
                                "declare it: `[job.{}.sweep] params = {{ {name} = [ … ] }}`",
                                r.address.name
                            ),
                        },
                    ),
                );
            }
        }
        let Some(sweep) = &spec.sweep else { return };
        let s = sweep.get_ref();
        for (name, values) in s.params.get_ref() {
            let n = name.get_ref();
            let valid = n.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                out.error(
                    Diagnostic::error("invalid-name", format!("`{n}` is not a valid parameter name"))
                        .at(self.loc(&r.file, name.span()))
                        .help("use letters, digits and `_`, starting with a letter; it becomes `{{ params.<name> }}` and `CAIRN_PARAM_<NAME>`"),
                );
            }
            if values.get_ref().is_empty() {
                out.error(
                    Diagnostic::error(
                        "empty-sweep",
                        format!("parameter `{n}` has no values to try"),
                    )
                    .at(self.loc(&r.file, values.span()))
                    .help("list at least one value, e.g. `[0.1, 0.01]`"),
                );
            }
        }
        if s.params.get_ref().is_empty() {
            out.error(
                Diagnostic::error("empty-sweep", "a sweep needs at least one parameter")
                    .at(self.loc(&r.file, s.params.span()))
                    .help("e.g. `params = { lr = [0.1, 0.03, 0.01] }`"),
            );
        }
        let trials = s.trial_count();
        if trials > MAX_TRIALS {
            out.error(
                Diagnostic::error(
                    "too-many-trials",
                    format!("the sweep makes {trials} trials; at most {MAX_TRIALS} are allowed"),
                )
                .at(self.loc(&r.file, s.params.span()))
                .help("try fewer values per parameter, or split the search into several jobs"),
            );
        }
        if Pick::parse(s.pick.get_ref()).is_none() {
            out.error(
                Diagnostic::error(
                    "invalid-pick",
                    format!("`{}` is not a way to pick a trial", s.pick.get_ref()),
                )
                .at(self.loc(&r.file, s.pick.span()))
                .help("`max(<metric>)` or `min(<metric>)` of each trial's metrics.json, e.g. `pick = \"max(auc)\"`"),
            );
        }
        if let Some(parallel) = &s.parallel {
            let p = *parallel.get_ref();
            let quota = compute
                .and_then(|c| c.max_gpus.as_ref())
                .map(|g| *g.get_ref());
            // As many trials at once as there are, at most.
            let at_once = u64::from(p).min(trials as u64);
            let wanted = at_once * u64::from(spec.gpus()) * u64::from(spec.instances());
            if p == 0 {
                out.error(
                    Diagnostic::error("invalid-value", "`parallel` is 0: no trial would run")
                        .at(self.loc(&r.file, parallel.span()))
                        .help("run at least one trial at a time, e.g. `parallel = 2`"),
                );
            } else if let Some(quota) = quota.filter(|q| wanted > u64::from(*q)) {
                out.error(
                    Diagnostic::error(
                        "gpu-quota",
                        format!(
                            "{p} trials at once need {wanted} GPUs; the compute's quota is {quota}"
                        ),
                    )
                    .at(self.loc(&r.file, parallel.span()))
                    .help("lower `parallel`, or raise the compute's `max_gpus`"),
                );
            }
        }
    }
}

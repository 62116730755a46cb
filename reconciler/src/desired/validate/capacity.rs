//! GPU rules: a request against the instance type and the compute's GPUs and quota,
//! and all the endpoints on one compute together, with the surge a rollout needs.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{Ctx, Out, View};
use crate::address::{Address, Kind, Reference};
use crate::desired::Resource;
use crate::diagnostics::{did_you_mean, Diagnostic, Diagnostics};
use crate::manifest::{ComputeSpec, Spec, Target};

impl Ctx<'_> {
    /// Returns the GPUs per unit allowed by the instance type, if one is named.
    pub(super) fn instance_type(
        &self,
        r: &Resource,
        compute: &ComputeSpec,
        compute_name: &str,
        instance_type: Option<&Spanned<String>>,
        out: &mut Out,
    ) -> Option<u32> {
        let name = instance_type?;
        if *compute.target.get_ref() == Target::Local {
            out.error(
                Diagnostic::error(
                    "target-field",
                    "`instance_type` applies only to Kubernetes compute",
                )
                .at(self.loc(&r.file, name.span()))
                .help("the local target runs on this machine; remove `instance_type`"),
            );
            return None;
        }
        match compute.instance_types.get(name.get_ref().as_str()) {
            Some(t) => Some(t.get_ref().gpus),
            None => {
                let names: Vec<&str> = compute
                    .instance_types
                    .keys()
                    .map(|k| k.get_ref().as_str())
                    .collect();
                out.error(
                    Diagnostic::error(
                        "unknown-instance-type",
                        format!(
                            "compute.{compute_name} has no instance type `{}`",
                            name.get_ref()
                        ),
                    )
                    .at(self.loc(&r.file, name.span()))
                    .help(
                        match did_you_mean(name.get_ref(), names.iter().copied()) {
                            Some(best) => format!("did you mean `{best}`?"),
                            None if names.is_empty() => format!(
                                "declare it as `[compute.{compute_name}.instance_types.{}]`",
                                name.get_ref()
                            ),
                            None => format!(
                                "instance types of compute.{compute_name}: {}",
                                names.join(", ")
                            ),
                        },
                    ),
                );
                None
            }
        }
    }

    /// Checks a GPU request (`per_unit` GPUs × `units`) against the compute.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gpus(
        &self,
        r: &Resource,
        compute: &ComputeSpec,
        compute_name: &str,
        gpus: Option<&Spanned<u32>>,
        units: u32,
        unit: &str,
        type_gpus: Option<u32>,
        out: &mut Out,
    ) {
        let Some(gpus) = gpus else { return };
        let per_unit = *gpus.get_ref();
        if per_unit == 0 {
            return;
        }
        let at = || self.loc(&r.file, gpus.span());
        if compute_has_no_gpus(compute) {
            out.error(
                Diagnostic::error(
                    "no-gpus",
                    format!(
                        "compute.{compute_name} has no GPUs, but {per_unit} {} requested",
                        if per_unit == 1 { "is" } else { "are" }
                    ),
                )
                .at(at())
                .label("GPUs requested here")
                .help("set `gpus = 0` to run on CPU, or use a compute with GPUs"),
            );
            return;
        }
        if let Some(type_gpus) = type_gpus {
            if per_unit > type_gpus {
                out.error(
                    Diagnostic::error(
                        "gpu-quota",
                        format!("{per_unit} GPUs per {unit} requested, but the instance type has {type_gpus}"),
                    )
                    .at(at())
                    .help("ask for at most the instance type's GPUs, or choose a larger instance type"),
                );
                return;
            }
        }
        if let Some(quota) = &compute.max_gpus {
            let total = u64::from(per_unit) * u64::from(units);
            if total > u64::from(*quota.get_ref()) {
                out.error(
                    Diagnostic::error(
                        "gpu-quota",
                        format!(
                            "{total} GPUs requested ({units} {unit}{} × {per_unit}), over compute.{compute_name}'s quota of {}",
                            if units == 1 { "" } else { "s" },
                            quota.get_ref()
                        ),
                    )
                    .at(at())
                    .help("lower `gpus` or the number of instances, or raise the compute's `max_gpus`"),
                );
            }
        }
    }

    /// GPUs needed to serve every endpoint on each compute, with room to start one new
    /// revision of the largest deployment beside the old during a rollout.
    pub(super) fn serving_capacity(&self, view: &View<'_>, diagnostics: &mut Diagnostics) {
        let mut per_compute: BTreeMap<Address, (u128, u128, Vec<&Resource>)> = BTreeMap::new();
        for r in view.resources {
            let Spec::Endpoint(spec) = &r.spec else {
                continue;
            };
            let Ok(c) = Reference::parse(spec.compute.get_ref()) else {
                continue;
            };
            let address = Address::new(r.address.workspace.clone(), Kind::Compute, c.name);
            let steady: u128 = spec
                .deployments
                .values()
                .map(|d| u128::from(d.get_ref().most_replicas()) * u128::from(d.get_ref().gpus()))
                .sum();
            let surge: u128 = spec
                .deployments
                .values()
                .map(|d| u128::from(d.get_ref().most_replicas()) * u128::from(d.get_ref().gpus()))
                .max()
                .unwrap_or(0);
            let entry = per_compute.entry(address).or_default();
            entry.0 += steady;
            entry.1 = entry.1.max(surge);
            entry.2.push(r);
        }
        for (address, (steady, surge, endpoints)) in per_compute {
            let Some(compute) = view.get(&address) else {
                continue;
            };
            let Spec::Compute(spec) = &compute.spec else {
                continue;
            };
            let Some(quota) = &spec.max_gpus else {
                continue;
            };
            let quota = u128::from(*quota.get_ref());
            if steady + surge <= quota || steady == 0 || compute_has_no_gpus(spec) {
                continue;
            }
            let last = endpoints.last().expect("at least one endpoint");
            let mut d = Diagnostic::error(
                "gpu-quota",
                format!(
                    "endpoints on {} need {} GPUs ({steady} serving + {surge} to roll out beside them), over its quota of {quota}",
                    address.local(),
                    steady + surge
                ),
            )
            .at(self.loc(&last.file, last.name_span.clone()))
            .help("lower replicas or GPUs per replica, or raise the compute's `max_gpus`; a rollout starts the new version beside the old");
            d = d.related(
                self.loc(
                    &compute.file,
                    spec.max_gpus
                        .as_ref()
                        .map_or(compute.name_span.clone(), |m| m.span()),
                ),
                "quota declared here",
            );
            diagnostics.push(d);
        }
    }
}

fn compute_has_no_gpus(compute: &ComputeSpec) -> bool {
    compute.max_gpus.as_ref().is_some_and(|m| *m.get_ref() == 0)
        || (!compute.instance_types.is_empty()
            && compute
                .instance_types
                .values()
                .all(|t| t.get_ref().gpus == 0))
}

//! Compute rules: fields that only apply to Kubernetes, names and roles, and the
//! compute a job or endpoint names (it must exist and have the role asked for).

use std::ops::Range;

use toml::Spanned;

use super::{invalid_name, Ctx, Out, View};
use crate::address::{is_dns1123_label, Kind};
use crate::desired::Resource;
use crate::diagnostics::Diagnostic;
use crate::manifest::{ComputeSpec, Role, Spec, Target};

impl Ctx<'_> {
    pub(super) fn compute(&self, r: &Resource, spec: &ComputeSpec, out: &mut Out) {
        if *spec.target.get_ref() == Target::Local {
            let kube_only: [(&str, Option<Range<usize>>); 6] = [
                ("context", spec.context.as_ref().map(|s| s.span())),
                ("namespace", spec.namespace.as_ref().map(|s| s.span())),
                ("gateway", spec.gateway.as_ref().map(|s| s.span())),
                ("autoscale", spec.autoscale.as_ref().map(|s| s.span())),
                (
                    "storage_class",
                    spec.storage_class.as_ref().map(|s| s.span()),
                ),
                (
                    "instance_types",
                    spec.instance_types.keys().next().map(|k| k.span()),
                ),
            ];
            for (field, span) in kube_only {
                if let Some(span) = span {
                    out.error(
                        Diagnostic::error(
                            "target-field",
                            format!("`{field}` applies only to `target = \"kubernetes\"`"),
                        )
                        .at(self.loc(&r.file, span))
                        .help(format!(
                            "remove `{field}`, or change the target to \"kubernetes\""
                        )),
                    );
                }
            }
        }
        if let Some(ns) = &spec.namespace {
            if !is_dns1123_label(ns.get_ref()) {
                out.error(invalid_name(
                    self.loc(&r.file, ns.span()),
                    ns.get_ref(),
                    "namespace",
                ));
            }
        }
        if let Some(class) = &spec.storage_class {
            if !crate::address::is_dns1123_subdomain(class.get_ref()) {
                out.error(invalid_name(
                    self.loc(&r.file, class.span()),
                    class.get_ref(),
                    "storage class",
                ));
            }
        }
        for name in spec.instance_types.keys() {
            if !is_dns1123_label(name.get_ref()) {
                out.error(invalid_name(
                    self.loc(&r.file, name.span()),
                    name.get_ref(),
                    "instance type",
                ));
            }
        }
        if let Some(roles) = &spec.roles {
            if roles.get_ref().is_empty() {
                out.error(
                    Diagnostic::error(
                        "invalid-roles",
                        "`roles` is empty, so nothing can use this compute",
                    )
                    .at(self.loc(&r.file, roles.span()))
                    .help("write `roles = [\"train\"]`, `[\"serve\"]`, or remove `roles` for both"),
                );
            }
        }
    }

    pub(super) fn compute_of<'v>(
        &self,
        view: &View<'v>,
        r: &Resource,
        field: &Spanned<String>,
        role: Role,
        out: &mut Out,
    ) -> Option<&'v ComputeSpec> {
        let (target, _) =
            self.reference(view, r, "compute", field, &[Kind::Compute], false, out)?;
        let Spec::Compute(compute) = &target.spec else {
            return None;
        };
        if !compute.has_role(role) {
            let (verb, role_name) = match role {
                Role::Train => ("run jobs", "train"),
                Role::Serve => ("serve endpoints", "serve"),
            };
            out.error(
                Diagnostic::error(
                    if role == Role::Serve { "cannot-serve" } else { "cannot-train" },
                    format!("{} can't {verb}: its roles don't include \"{role_name}\"", target.address.local()),
                )
                .at(self.loc(&r.file, field.span()))
                .related(
                    self.loc(&target.file, compute.roles.as_ref().map_or(target.name_span.clone(), |x| x.span())),
                    "roles declared here",
                )
                .help(format!("pick a compute with the \"{role_name}\" role, or add it to the compute's `roles`")),
            );
        }
        Some(compute)
    }
}

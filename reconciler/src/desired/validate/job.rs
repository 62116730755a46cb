//! Job rules: its compute (role, GPUs, command or image for the target), instances
//! and timeout, `{{ inputs.<name> }}` placeholders, input and output names, and the
//! lineage of the models it outputs.

use std::ops::Range;

use toml::Spanned;

use super::{invalid_name, Ctx, Out, View};
use crate::address::{is_dns1123_label, Kind, Reference};
use crate::desired::Resource;
use crate::diagnostics::{did_you_mean, Diagnostic};
use crate::manifest::sweep::{trial_suffix_len, MAX_TRIALS};
use crate::manifest::{JobSpec, Role, Target};

impl Ctx<'_> {
    pub(super) fn job<'v>(&self, view: &View<'v>, r: &Resource, spec: &JobSpec, out: &mut Out) {
        let compute = self.compute_of(view, r, &spec.compute, Role::Train, out);
        let compute_name = Reference::parse(spec.compute.get_ref())
            .map(|c| c.name)
            .unwrap_or_default();
        if let Some(compute) = compute {
            let type_gpus =
                self.instance_type(r, compute, &compute_name, spec.instance_type.as_ref(), out);
            self.gpus(
                r,
                compute,
                &compute_name,
                spec.gpus.as_ref(),
                spec.instances(),
                "instance",
                type_gpus,
                out,
            );
            match compute.target.get_ref() {
                Target::Local if spec.command.is_none() => out.error(
                    Diagnostic::error("missing-command", "a job on the local target needs a `command`")
                        .at(self.loc(&r.file, r.name_span.clone()))
                        .help("add `command = [\"python\", \"train.py\", \"--data\", \"{{ inputs.<name> }}\"]`"),
                ),
                Target::Kubernetes if spec.image.is_none() => out.error(
                    Diagnostic::error("missing-image", "a job on Kubernetes needs an `image`")
                        .at(self.loc(&r.file, r.name_span.clone()))
                        .help("add `image = \"registry.example.com/team/trainer:1.0\"`"),
                ),
                _ => {}
            }
            // The longest name a run's objects get: an Indexed Job's pods are named
            // `<job>-<run id>-<index>` (their hostname, a DNS label); the Job that uploads
            // a run's outputs `<job>-<run id>-upload` (a Job's name goes into a label
            // value): at most 63 characters either way.
            // A sweep's trials are runs `<run id>-t<n>`.
            let trials = spec.sweep.as_ref().map(|s| s.get_ref().trial_count());
            let (trial, trial_len) = match trials {
                Some(n) => ("-t<n>", trial_suffix_len(n.min(MAX_TRIALS))),
                None => ("", 0),
            };
            let suffix = if spec.instances() > 1 {
                Some(("<index>", 1 + 3))
            } else if !spec.outputs.is_empty() {
                Some(("upload", 1 + "upload".len()))
            } else if trials.is_some() {
                // The Job's own name, which goes into its pods' `job-name` label.
                Some(("", 0))
            } else {
                None
            };
            if let Some((what, len)) = suffix {
                let longest =
                    r.address.name.len() + 1 + crate::content::VERSION_LEN + trial_len + len;
                let what = if what.is_empty() {
                    trial.to_string()
                } else {
                    format!("{trial}-{what}")
                };
                if *compute.target.get_ref() == Target::Kubernetes && longest > 63 {
                    let objects = if spec.instances() > 1 {
                        "its pods' hostnames"
                    } else if !spec.outputs.is_empty() {
                        "the Job that uploads its outputs"
                    } else {
                        "its trials' Jobs"
                    };
                    out.error(
                        Diagnostic::error(
                            "invalid-name",
                            format!(
                                "the job name `{}` is too long for Kubernetes: {objects} (`<job>-<run id>{what}`) would have {longest} characters, over the 63 a DNS label allows",
                                r.address.name
                            ),
                        )
                        .at(self.loc(&r.file, r.name_span.clone()))
                        .help(format!(
                            "shorten it to at most {} characters",
                            r.address.name.len() - (longest - 63)
                        )),
                    );
                }
            }
            if *compute.target.get_ref() == Target::Local {
                const AT_ONCE: &str = "the local target starts every instance at once";
                let kube_only = [
                    ("queue", spec.queue.as_ref().map(|q| q.span()), AT_ONCE),
                    (
                        "schedule_timeout",
                        spec.schedule_timeout.as_ref().map(|t| t.span()),
                        AT_ONCE,
                    ),
                    (
                        "outputs_size",
                        spec.outputs_size.as_ref().map(|t| t.span()),
                        "the local target keeps a run's outputs in its run folder",
                    ),
                ];
                for (field, span, why) in kube_only {
                    if let Some(span) = span {
                        out.error(
                            Diagnostic::error(
                                "target-field",
                                format!(
                                    "`{field}` applies only to jobs on `target = \"kubernetes\"`"
                                ),
                            )
                            .at(self.loc(&r.file, span))
                            .help(format!("remove `{field}`: {why}")),
                        );
                    }
                }
            }
        }
        if let Some(queue) = &spec.queue {
            if !is_dns1123_label(queue.get_ref()) {
                out.error(invalid_name(
                    self.loc(&r.file, queue.span()),
                    queue.get_ref(),
                    "queue",
                ));
            }
        }
        if let Some(wait) = &spec.schedule_timeout {
            if wait.get_ref().as_std().is_zero() {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        "`schedule_timeout` must be longer than zero",
                    )
                    .at(self.loc(&r.file, wait.span()))
                    .help("pods take seconds to minutes to be scheduled; the default is 10m"),
                );
            }
        }
        if let Some(instances) = &spec.instances {
            if *instances.get_ref() == 0 {
                out.error(
                    Diagnostic::error("invalid-value", "`instances` must be at least 1")
                        .at(self.loc(&r.file, instances.span()))
                        .help("use `instances = 1` for a single-machine job; remove the job to stop running it"),
                );
            }
        }
        if let Some(timeout) = &spec.timeout {
            if timeout.get_ref().as_std().is_zero() {
                out.error(
                    Diagnostic::error("invalid-value", "`timeout` must be longer than zero")
                        .at(self.loc(&r.file, timeout.span()))
                        .help("e.g. `timeout = \"2h\"`"),
                );
            }
        }
        if let Some(command) = &spec.command {
            if command.get_ref().is_empty() {
                out.error(
                    Diagnostic::error("missing-command", "`command` is empty")
                        .at(self.loc(&r.file, command.span()))
                        .help(
                            "give the program and its arguments, e.g. `[\"python\", \"train.py\"]`",
                        ),
                );
            }
            for (field, names) in [("inputs", &spec.inputs), ("outputs", &spec.outputs)] {
                for (name, span) in placeholders(command.get_ref(), field) {
                    if !names.contains_key(name.as_str()) {
                        let declared: Vec<&str> =
                            names.keys().map(|k| k.get_ref().as_str()).collect();
                        out.error(
                            Diagnostic::error(
                                "unknown-placeholder",
                                format!("`{{{{ {field}.{name} }}}}` names no declared {}", &field[..field.len() - 1]),
                            )
                            .at(self.loc(&r.file, span))
                            .help(match did_you_mean(&name, declared.iter().copied()) {
                                Some(best) => format!("did you mean `{{{{ {field}.{best} }}}}`?"),
                                None => format!("declare it in `{field}`, e.g. `{field} = {{ {name} = \"…\" }}`"),
                            }),
                        );
                    }
                }
            }
        }
        self.sweep(r, spec, compute, out);
        for (name, value) in &spec.inputs {
            self.io_name(r, name, out);
            self.reference(
                view,
                r,
                "inputs",
                value,
                &[Kind::Dataset, Kind::Model],
                true,
                out,
            );
        }
        for (name, value) in &spec.outputs {
            self.io_name(r, name, out);
            self.output(view, r, value, out);
        }
    }

    fn io_name(&self, r: &Resource, name: &Spanned<String>, out: &mut Out) {
        let n = name.get_ref();
        let ok = n.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && n.len() <= 63;
        if !ok {
            out.error(
                Diagnostic::error("invalid-name", format!("`{n}` is not a valid input or output name"))
                    .at(self.loc(&r.file, name.span()))
                    .help("use lowercase letters, digits, `_` and `-`, starting with a letter; it becomes `CAIRN_INPUT_<NAME>`"),
            );
        }
    }
}

/// Returns the names used as `{{ <field>.<name> }}` in a command, with the span of the
/// argument that holds each.
pub(super) fn placeholders(
    command: &[Spanned<String>],
    field: &str,
) -> Vec<(String, Range<usize>)> {
    let mut names = Vec::new();
    for arg in command {
        let mut rest = arg.get_ref().as_str();
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            let inner = after[..end].trim();
            if let Some(name) = inner.strip_prefix(field).and_then(|s| s.strip_prefix('.')) {
                names.push((name.trim().to_string(), arg.span()));
            }
            rest = &after[end + 2..];
        }
    }
    names
}

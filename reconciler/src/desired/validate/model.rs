//! Model rules: a model comes from a job or from a source, and the job it names lists
//! it in its outputs.

use super::{Ctx, Out, View};
use crate::address::{Kind, Reference};
use crate::desired::Resource;
use crate::diagnostics::Diagnostic;
use crate::manifest::{ModelSpec, Spec};

impl Ctx<'_> {
    pub(super) fn model<'v>(&self, view: &View<'v>, r: &Resource, spec: &ModelSpec, out: &mut Out) {
        match (&spec.from_job, &spec.source) {
            (Some(_), Some(source)) => out.error(
                Diagnostic::error("model-origin", "a model comes from a job or from a source, not both")
                    .at(self.loc(&r.file, source.span()))
                    .help("remove `source` to train it with the job, or `from_job` to import it"),
            ),
            (None, None) => out.error(
                Diagnostic::error("model-origin", "a model needs `from_job` or `source`")
                    .at(self.loc(&r.file, r.name_span.clone()))
                    .help("add `from_job = \"job.<name>\"` (trained here) or `source = \"<folder or s3://…>\"` (imported)"),
            ),
            (None, Some(source)) => self.data_path(r, source, "model", out),
            (Some(_), None) => {}
        }
        if let Some(job_ref) = &spec.from_job {
            let Some((job, _)) =
                self.reference(view, r, "from_job", job_ref, &[Kind::Job], false, out)
            else {
                return;
            };
            let Spec::Job(j) = &job.spec else { return };
            let listed = j.outputs.values().any(|v| {
                Reference::parse(v.get_ref())
                    .is_ok_and(|m| m.kind == Kind::Model && m.name == r.address.name)
            });
            if !listed {
                out.error(
                    Diagnostic::error(
                        "lineage",
                        format!(
                            "{} does not list {} in its outputs",
                            job.address.local(),
                            r.address.local()
                        ),
                    )
                    .at(self.loc(&r.file, job_ref.span()))
                    .related(
                        self.loc(&job.file, job.name_span.clone()),
                        "job declared here",
                    )
                    .help(format!(
                        "add `outputs = {{ model = \"{}\" }}` to {}",
                        r.address.local(),
                        job.address.local()
                    )),
                );
            }
        }
    }
}

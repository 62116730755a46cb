//! Model rules: a model comes from a job or from a source, and the job it names lists
//! it in its outputs.

use super::{Ctx, Out, View};
use crate::desired::Resource;
use crate::diagnostics::Diagnostic;
use crate::manifest::ModelSpec;

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
        self.conditions(r, spec.promote_if.as_ref(), out);
        if let Some(job_ref) = &spec.from_job {
            self.from_job(view, r, job_ref, out);
        }
    }
}

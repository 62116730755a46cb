//! Lineage rules: a model or dataset made by a job (`from_job`) names a job that lists
//! it in its `outputs`, and a job outputs only what names it back.

use toml::Spanned;

use super::{Ctx, Out, View};
use crate::address::{Kind, Reference};
use crate::desired::Resource;
use crate::diagnostics::Diagnostic;
use crate::manifest::Spec;

impl Ctx<'_> {
    /// `from_job` on `r` (a model or dataset): the job exists and lists `r` in its
    /// outputs.
    pub(super) fn from_job<'v>(
        &self,
        view: &View<'v>,
        r: &Resource,
        job_ref: &Spanned<String>,
        out: &mut Out,
    ) {
        let Some((job, _)) = self.reference(view, r, "from_job", job_ref, &[Kind::Job], false, out)
        else {
            return;
        };
        let Spec::Job(j) = &job.spec else { return };
        let listed = j.outputs.values().any(|v| {
            Reference::parse(v.get_ref())
                .is_ok_and(|o| o.kind == r.address.kind && o.name == r.address.name)
        });
        if !listed {
            let key = match r.address.kind {
                Kind::Model => "model",
                _ => r.address.name.as_str(),
            };
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
                    "add `outputs = {{ {key} = \"{}\" }}` to {}",
                    r.address.local(),
                    job.address.local()
                )),
            );
        }
    }

    /// One of a job's `outputs`: a model or dataset whose `from_job` names the job.
    pub(super) fn output<'v>(
        &self,
        view: &View<'v>,
        r: &Resource,
        value: &Spanned<String>,
        out: &mut Out,
    ) {
        let Some((made, _)) = self.reference(
            view,
            r,
            "outputs",
            value,
            &[Kind::Model, Kind::Dataset],
            false,
            out,
        ) else {
            return;
        };
        let (from_job, source) = match &made.spec {
            Spec::Model(m) => (&m.from_job, &m.source),
            Spec::Dataset(d) => (&d.from_job, &d.source),
            _ => return,
        };
        // What the job makes depends on the job, not the other way round: drop the edge
        // the output reference just added (an input of the same resource keeps its own).
        out.deps.pop();
        let made_by_this_job = from_job
            .as_ref()
            .and_then(|j| Reference::parse(j.get_ref()).ok())
            .is_some_and(|j| j.kind == Kind::Job && j.name == r.address.name);
        if made_by_this_job {
            return;
        }
        let why = match (from_job, source) {
            (Some(other), _) => format!("it says `from_job = \"{}\"`", other.get_ref()),
            (None, Some(_)) => "it is imported from a `source`".to_string(),
            (None, None) => "it names no `from_job`".to_string(),
        };
        out.error(
            Diagnostic::error(
                "lineage",
                format!(
                    "{} outputs {}, but {why}",
                    r.address.local(),
                    made.address.local()
                ),
            )
            .at(self.loc(&r.file, value.span()))
            .related(
                self.loc(&made.file, made.name_span.clone()),
                format!("{} declared here", made.address.kind.as_str()),
            )
            .help(format!(
                "set `from_job = \"{}\"` on {}",
                r.address.local(),
                made.address.local()
            )),
        );
    }
}

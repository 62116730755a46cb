//! Data sources of datasets and imported models: an `s3://` URL, or a folder inside
//! the manifests root (not the root itself, not `.git` or `.cairn`), listed now so that
//! whatever would stop planning stops here.

use toml::Spanned;

use super::{Ctx, Out, View};
use crate::desired::Resource;
use crate::diagnostics::{Diagnostic, Location};
use crate::manifest::source::join_inside;
use crate::manifest::{DatasetSpec, WalkError};

/// Folders a source may not read: Git's own files and Cairn's store and state.
const RESERVED_FOLDERS: [&str; 2] = [".git", ".cairn"];

impl Ctx<'_> {
    /// Checks a dataset: its `source`, and that a pinned `version` is not empty.
    pub(super) fn dataset<'v>(
        &self,
        view: &View<'v>,
        r: &Resource,
        spec: &DatasetSpec,
        out: &mut Out,
    ) {
        match (&spec.source, &spec.from_job) {
            (Some(source), None) => self.data_path(r, source, "dataset", out),
            (Some(source), Some(_)) => out.error(
                Diagnostic::error("dataset-origin", "a dataset is read from a source or written by a job, not both")
                    .at(self.loc(&r.file, source.span()))
                    .help("remove `source` to have the job write it, or `from_job` to read it from the folder"),
            ),
            (None, None) => out.error(
                Diagnostic::error("dataset-origin", "a dataset needs `source` or `from_job`")
                    .at(self.loc(&r.file, r.name_span.clone()))
                    .help("add `source = \"<folder or s3://…>\"` (read from data) or `from_job = \"job.<name>\"` (written by a job)"),
            ),
            (None, Some(job_ref)) => {
                self.from_job(view, r, job_ref, out);
                if let Some(v) = &spec.version {
                    out.error(
                        Diagnostic::error("invalid-version", "a dataset written by a job can't pin a `version`")
                            .at(self.loc(&r.file, v.span()))
                            .help("its versions are the job's runs: pin the run where it is read instead (`inputs = { x = \"dataset.<name>@<run id>\" }`)"),
                    );
                }
            }
        }
        if let Some(v) = &spec.version {
            if v.get_ref().trim().is_empty() {
                out.error(
                    Diagnostic::error("invalid-version", "a pinned dataset version can't be empty")
                        .at(self.loc(&r.file, v.span()))
                        .help("remove `version` to follow the content, or paste the version `cairn plan` showed"),
                );
            }
        }
    }

    /// Checks a dataset or model `source`: an object-store URL, or a path inside the root.
    pub(super) fn data_path(
        &self,
        r: &Resource,
        source: &Spanned<String>,
        what: &str,
        out: &mut Out,
    ) {
        let text = source.get_ref();
        let at = || self.loc(&r.file, source.span());
        if let Some((scheme, _)) = text.split_once("://") {
            if scheme != "s3" {
                out.error(
                    Diagnostic::error("unsupported-source", format!("`{scheme}://` sources are not supported"))
                        .at(at())
                        .help("use a folder in the repository (relative to the workspace folder) or an `s3://bucket/prefix` URL"),
                );
            }
            return;
        }
        if text.trim().is_empty() {
            out.error(
                Diagnostic::error("missing-path", format!("{what} source is empty"))
                    .at(at())
                    .help("give a folder relative to the workspace folder, e.g. `data/loans/`"),
            );
            return;
        }
        let Some(path) = join_inside(&r.address.workspace, text) else {
            out.error(escape(at(), text));
            return;
        };
        if path.is_empty() {
            out.error(
                Diagnostic::error("source-is-root", format!("{what} source `{text}` is the whole manifests root"))
                    .at(at())
                    .label("this is the folder that holds every workspace")
                    .help("point `source` at a data folder, e.g. `data/loans/` (relative to the workspace folder)"),
            );
            return;
        }
        if let Some(reserved) = path.split('/').find(|p| RESERVED_FOLDERS.contains(p)) {
            out.error(
                Diagnostic::error(
                    "reserved-path",
                    format!("{what} source `{text}` is inside `{reserved}`"),
                )
                .at(at())
                .label(format!(
                    "`{reserved}` holds {}",
                    if reserved == ".git" {
                        "Git's own files"
                    } else {
                        "Cairn's store and state"
                    }
                ))
                .help("point `source` at a data folder of the repository, e.g. `data/loans/`"),
            );
            return;
        }
        // The whole source is listed now (not hashed), so that whatever would stop
        // planning — a link to a folder or out of the root, a named pipe — stops here.
        match self.snapshot.walk(&path) {
            Ok(_) => {}
            Err(WalkError::Missing { .. }) => out.error(
                Diagnostic::error("missing-path", format!("{what} source `{text}` does not exist"))
                    .at(at())
                    .label(format!("looked for `{path}` under the manifests root"))
                    .help("paths are relative to the workspace folder; with `--rev`, the folder must be committed"),
            ),
            Err(WalkError::Outside { path: p }) if p == path => out.error(escape(at(), text)),
            Err(err) => {
                let code = match &err {
                    WalkError::Outside { .. } => "path-escape",
                    WalkError::FolderLink { .. } | WalkError::Loop { .. } | WalkError::Broken { .. } => "source-link",
                    WalkError::Special { .. } => "source-special-file",
                    WalkError::Missing { .. } | WalkError::Io { .. } => "unreadable-source",
                };
                let label = if err.path() == path {
                    "the source itself"
                } else {
                    "found inside the source"
                };
                out.error(
                    Diagnostic::error(code, format!("{what} source `{text}` can't be read: {err}"))
                        .at(at())
                        .label(label)
                        .help(err.hint()),
                );
            }
        }
    }
}

fn escape(location: Location, path: &str) -> Diagnostic {
    Diagnostic::error("path-escape", format!("`{path}` leads outside the manifests root"))
        .at(location)
        .label("path escapes the root")
        .help("paths from manifests must stay inside the manifests root; copy the data in, or use an `s3://` URL")
}

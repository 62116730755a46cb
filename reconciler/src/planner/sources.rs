//! Hashing the sources of datasets and imported models, in parallel, through the hash
//! cache: the content versions the rest of the plan is built on.

use std::collections::{BTreeSet, HashMap};

use super::Planner;
use crate::address::Address;
use crate::content::{self, Content};
use crate::desired::Resource;
use crate::diagnostics::{error_chain, Diagnostic, Diagnostics};
use crate::manifest::source::join_inside;
use crate::manifest::Spec;

impl Planner<'_> {
    /// Hashes every dataset and imported model source of the selected workspaces, in
    /// parallel.
    pub(super) fn hash_sources(
        &self,
        selected: &BTreeSet<&str>,
        diagnostics: &mut Diagnostics,
    ) -> HashMap<Address, Content> {
        use rayon::prelude::*;
        let sources: Vec<(&Resource, &toml::Spanned<String>)> = self
            .desired
            .resources
            .iter()
            .filter(|r| selected.contains(r.address.workspace.as_str()))
            .filter_map(|r| match &r.spec {
                Spec::Dataset(d) => d.source.as_ref().map(|s| (r, s)),
                Spec::Model(m) if m.from_job.is_none() => m.source.as_ref().map(|s| (r, s)),
                _ => None,
            })
            .collect();
        let results: Vec<(&Resource, Result<Content, Diagnostic>)> = sources
            .par_iter()
            .map(|(r, source)| {
                let text = source.get_ref();
                if text.contains("://") {
                    return (
                        *r,
                        Err(self.unsupported(r, "object-store sources (`s3://…`) are not available yet")),
                    );
                }
                let Some(path) = join_inside(&r.address.workspace, text) else {
                    return (*r, Err(Diagnostic::error("path-escape", "source leads outside the manifests root").at(self.loc(r, source.span()))));
                };
                let address = r.address.to_string();
                self.events.hashing(&address, 0, 0);
                let on_bytes = |n: u64| self.events.bytes(&address, n);
                let result = content::hash_source(self.snapshot, &path, self.cache, &on_bytes).map_err(|e| {
                    Diagnostic::error("unreadable-source", format!("cannot read the source of {}: {}", r.address.local(), error_chain(&e)))
                        .at(self.loc(r, source.span()))
                        .help("check that the folder exists and is readable; with `--rev`, that it is committed")
                });
                self.events.finished(&address, "hashed", None);
                (*r, result)
            })
            .collect();
        let mut out = HashMap::new();
        for (r, result) in results {
            match result {
                Ok(content) => {
                    if let Spec::Dataset(d) = &r.spec {
                        if let Some(pin) = &d.version {
                            if !content.version.starts_with(pin.get_ref().as_str()) {
                                diagnostics.push(
                                    Diagnostic::error(
                                        "version-mismatch",
                                        format!(
                                            "{} is pinned to version {}, but its content is version {}",
                                            r.address.local(),
                                            pin.get_ref(),
                                            content.version
                                        ),
                                    )
                                    .at(self.loc(r, pin.span()))
                                    .help("the data changed since it was pinned: restore it, or update `version` to the new one"),
                                );
                                continue;
                            }
                        }
                    }
                    out.insert(r.address.clone(), content);
                }
                Err(d) => diagnostics.push(d),
            }
        }
        out
    }
}

//! Workspace rules: one workspace.toml per folder that holds manifests, DNS-1123
//! folder names, and a workspace's store URL, store endpoint and namespace.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{invalid_name, Ctx, Out};
use crate::address::{is_dns1123_label, Kind};
use crate::desired::Resource;
use crate::diagnostics::{Diagnostic, Diagnostics, Location};
use crate::manifest::source::join_inside;
use crate::manifest::{Declared, WorkspaceSpec};

impl Ctx<'_> {
    pub(super) fn check_workspace_folders(
        &self,
        declared: &[Declared],
        diagnostics: &mut Diagnostics,
    ) {
        let mut folders: BTreeMap<&str, &str> = BTreeMap::new();
        for file in &self.snapshot.files {
            folders
                .entry(file.workspace.as_str())
                .or_insert(file.path.as_str());
        }
        for (folder, first_file) in folders {
            if self
                .snapshot
                .workspaces
                .binary_search_by(|w| w.as_str().cmp(folder))
                .is_err()
            {
                diagnostics.push(
                    Diagnostic::error(
                        "missing-workspace-file",
                        format!("folder `{folder}` holds manifests but no workspace.toml"),
                    )
                    .at(Location::file(first_file))
                    .help(format!(
                        "create `{folder}/workspace.toml` with a `[workspace]` table, or move these files into a workspace folder"
                    )),
                );
            } else if !is_dns1123_label(folder) {
                let d = declared
                    .iter()
                    .find(|d| d.address.kind == Kind::Workspace && d.address.workspace == folder);
                let location = d.map_or_else(
                    || Location::file(&format!("{folder}/workspace.toml")),
                    |d| self.loc(&d.file, d.name_span.clone()),
                );
                diagnostics.push(invalid_name(location, folder, "workspace folder"));
            }
        }
        let layout_reported = self.snapshot.problems.iter().any(|p| p.code == "layout");
        if self.snapshot.workspaces.is_empty() && self.snapshot.files.is_empty() && !layout_reported
        {
            diagnostics.push(
                Diagnostic::error("no-workspaces", "no workspace found")
                    .help("a manifests root holds one folder per workspace, each with a workspace.toml; see `manifests/` in the Cairn repository"),
            );
        }
    }

    pub(super) fn workspace(&self, r: &Resource, spec: &WorkspaceSpec, out: &mut Out) {
        if let Some(store) = &spec.store {
            self.store_url(r, store, out);
        }
        if let Some(endpoint) = &spec.endpoint {
            let e = endpoint.get_ref();
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                out.error(
                    Diagnostic::error(
                        "invalid-url",
                        format!("store endpoint `{e}` is not an http(s) URL"),
                    )
                    .at(self.loc(&r.file, endpoint.span()))
                    .help("write it as `https://s3.example.com` or `http://127.0.0.1:9000`"),
                );
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
    }

    fn store_url(&self, r: &Resource, store: &Spanned<String>, out: &mut Out) {
        let url = store.get_ref();
        let at = || self.loc(&r.file, store.span());
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                out.error(
                    Diagnostic::error("store-url", "`file://` store needs a path")
                        .at(at())
                        .help("e.g. `file://.cairn/store`"),
                );
            } else if !path.starts_with('/') && join_inside("", path).is_none() {
                out.error(
                    Diagnostic::error("path-escape", format!("store path `{path}` leads outside the manifests root"))
                        .at(at())
                        .help("relative store paths stay inside the manifests root; write an absolute `file:///…` path to use a folder elsewhere"),
                );
            }
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let bucket = rest.split('/').next().unwrap_or("");
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && bucket
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                && bucket
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric());
            if !valid {
                out.error(
                    Diagnostic::error("store-url", format!("`{bucket}` is not a valid S3 bucket name"))
                        .at(at())
                        .help("bucket names are 3–63 lowercase letters, digits, `-` and `.`: `s3://bank-ml/credit-risk`"),
                );
            }
        } else {
            out.error(
                Diagnostic::error("store-url", format!("unsupported store `{url}`"))
                    .at(at())
                    .help("use `file://<folder>` or `s3://<bucket>/<prefix>`"),
            );
        }
    }
}

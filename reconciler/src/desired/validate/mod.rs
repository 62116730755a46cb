//! The rules checked before anything runs. Every rule reports into the same
//! [`Diagnostics`], so a user sees every problem at once.
//!
//! Rules: one workspace.toml per workspace folder; unique names across files; DNS-1123
//! names; references resolve, to the right kind; target-specific fields; traffic and
//! mirror maps; rollout steps; GPU requests against the compute's GPUs and quota (with
//! the surge a rollout needs); endpoints only on compute that serves; paths stay inside
//! the manifests root; job outputs and model lineage agree.
//!
//! This file is the driver ([`check`]) and what the rules share: the resources read so
//! far ([`View`]), locations ([`Ctx`]) and each resource's findings ([`Out`]). The rules
//! are grouped by what they check: `workspace.rs`, `refs.rs` (references), `compute.rs`,
//! `capacity.rs` (GPUs), `sources.rs` (data paths), `job.rs`, `model.rs`,
//! `endpoint.rs`, `autoscale.rs` (a deployment's autoscaling) and
//! `rollout_metrics.rs` (where Kubernetes gates read).

mod autoscale;
mod capacity;
mod compute;
mod endpoint;
mod job;
mod lineage;
mod model;
mod monitor;
mod promote_if;
mod refs;
mod rollout_metrics;
mod sources;
mod sweep;
mod workspace;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use toml::Spanned;

use super::{limits, Dependency, Resource};
use crate::address::{is_dns1123_label, Address, Kind};
use crate::diagnostics::{Diagnostic, Diagnostics, LineIndex, Location};
use crate::manifest::{Declared, Snapshot, Spec};

/// Deduplicates and checks `declared`, returning the resources (with dependencies filled
/// in) and an index by address.
pub(super) fn check(
    snapshot: &Snapshot,
    declared: Vec<Declared>,
    broken: &HashSet<Address>,
    diagnostics: &mut Diagnostics,
) -> (Vec<Resource>, HashMap<Address, usize>) {
    let ctx = Ctx::new(snapshot);
    ctx.check_workspace_folders(&declared, diagnostics);

    let mut resources: Vec<Resource> = Vec::with_capacity(declared.len());
    let mut index: HashMap<Address, usize> = HashMap::with_capacity(declared.len());
    for d in declared {
        if let Some(&first) = index.get(&d.address) {
            let first: &Resource = &resources[first];
            diagnostics.push(
                Diagnostic::error(
                    "duplicate",
                    format!("{} is declared more than once", d.address.local()),
                )
                .at(ctx.loc(&d.file, d.name_span.clone()))
                .label("declared again here")
                .related(ctx.loc(&first.file, first.name_span.clone()), "first declared here")
                .help("names are unique per kind within a workspace, across all its files; rename or remove one"),
            );
            continue;
        }
        if d.address.kind != Kind::Workspace && !is_dns1123_label(&d.address.name) {
            diagnostics.push(invalid_name(
                ctx.loc(&d.file, d.name_span.clone()),
                &d.address.name,
                d.address.kind.as_str(),
            ));
        }
        index.insert(d.address.clone(), resources.len());
        resources.push(Resource {
            address: d.address,
            file: d.file,
            name_span: d.name_span,
            spec: d.spec,
            dependencies: Vec::new(),
        });
    }

    let view = View::new(&resources, &index, broken);
    let mut all_deps = Vec::with_capacity(resources.len());
    for r in &resources {
        let mut out = Out::default();
        if r.kind() != Kind::Workspace {
            let ws = Address::workspace(r.address.workspace.clone());
            if view.get(&ws).is_some() {
                out.deps.push(Dependency {
                    address: ws,
                    pin: None,
                    span: r.name_span.clone(),
                });
            }
        }
        match &r.spec {
            Spec::Workspace(spec) => ctx.workspace(r, spec, &mut out),
            Spec::Compute(spec) => ctx.compute(r, spec, &mut out),
            Spec::Dataset(spec) => ctx.dataset(&view, r, spec, &mut out),
            Spec::Job(spec) => {
                ctx.job(&view, r, spec, &mut out);
                out.diags.extend(limits::job(&ctx.place(r), spec));
            }
            Spec::Model(spec) => ctx.model(&view, r, spec, &mut out),
            Spec::Endpoint(spec) => {
                ctx.endpoint(&view, r, spec, &mut out);
                out.diags.extend(limits::endpoint(&ctx.place(r), spec));
            }
        }
        ctx.sensitive(r, &mut out);
        out.deps.sort_by(|a, b| {
            a.address
                .cmp(&b.address)
                .then(a.span.start.cmp(&b.span.start))
        });
        out.deps
            .dedup_by(|a, b| a.address == b.address && a.pin == b.pin);
        diagnostics.extend(out.diags.into_iter().collect());
        all_deps.push(out.deps);
    }
    ctx.serving_capacity(&view, diagnostics);
    ctx.local_ports(&view, diagnostics);
    drop(view);
    for (r, deps) in resources.iter_mut().zip(all_deps) {
        r.dependencies = deps;
    }
    (resources, index)
}

/// What one resource's checks produce.
#[derive(Default)]
struct Out {
    deps: Vec<Dependency>,
    diags: Vec<Diagnostic>,
}

impl Out {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }
}

/// Read access to all resources while their dependencies are being worked out.
struct View<'a> {
    resources: &'a [Resource],
    index: &'a HashMap<Address, usize>,
    /// Names of each kind in each workspace, sorted, for did-you-mean hints.
    names: HashMap<&'a str, HashMap<Kind, Vec<&'a str>>>,
    /// Declared but unreadable: already reported, so references to them stay quiet.
    broken: &'a HashSet<Address>,
}

impl<'a> View<'a> {
    fn new(
        resources: &'a [Resource],
        index: &'a HashMap<Address, usize>,
        broken: &'a HashSet<Address>,
    ) -> View<'a> {
        let mut names: HashMap<&str, HashMap<Kind, Vec<&str>>> = HashMap::new();
        for r in resources {
            names
                .entry(r.address.workspace.as_str())
                .or_default()
                .entry(r.kind())
                .or_default()
                .push(r.address.name.as_str());
        }
        for list in names.values_mut().flat_map(|m| m.values_mut()) {
            list.sort_unstable();
        }
        View {
            resources,
            index,
            names,
            broken,
        }
    }

    fn get(&self, address: &Address) -> Option<&'a Resource> {
        self.index.get(address).map(|&i| &self.resources[i])
    }

    fn names(&self, workspace: &str, kind: Kind) -> &[&'a str] {
        self.names
            .get(workspace)
            .and_then(|m| m.get(&kind))
            .map_or(&[][..], |v| v.as_slice())
    }
}

/// Shared helpers: locations with cached line indexes.
struct Ctx<'s> {
    snapshot: &'s Snapshot,
    lines: RefCell<HashMap<String, LineIndex>>,
}

impl<'s> Ctx<'s> {
    fn new(snapshot: &'s Snapshot) -> Self {
        Ctx {
            snapshot,
            lines: RefCell::new(HashMap::new()),
        }
    }

    fn place<'r>(&'r self, r: &'r Resource) -> limits::Place<'r> {
        limits::Place {
            resource: r,
            text: self.snapshot.text(&r.file).unwrap_or(""),
        }
    }

    fn loc(&self, file: &str, span: Range<usize>) -> Location {
        let text = self.snapshot.text(file).unwrap_or("");
        let mut lines = self.lines.borrow_mut();
        lines
            .entry(file.to_string())
            .or_insert_with(|| LineIndex::new(text))
            .locate(file, text, span)
    }

    /// Every key a `sensitive` list names is one of the `env` keys beside it.
    fn sensitive(&self, r: &Resource, out: &mut Out) {
        use crate::manifest::model::undeclared_sensitive;
        let undeclared: Vec<&Spanned<String>> = match &r.spec {
            Spec::Job(j) => undeclared_sensitive(&j.sensitive, &j.env).collect(),
            Spec::Endpoint(e) => e
                .deployments
                .values()
                .flat_map(|d| undeclared_sensitive(&d.get_ref().sensitive, &d.get_ref().env))
                .collect(),
            _ => Vec::new(),
        };
        for key in undeclared {
            out.error(
                Diagnostic::error(
                    "unknown-sensitive",
                    format!(
                        "`sensitive` names `{}`, which `env` does not declare",
                        key.get_ref()
                    ),
                )
                .at(self.loc(&r.file, key.span()))
                .help("list only keys of the `env` table beside it"),
            );
        }
    }
}

fn invalid_name(location: Location, name: &str, what: &str) -> Diagnostic {
    let suggestion: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(63)
        .collect();
    let help = if is_dns1123_label(&suggestion) {
        format!("names become Kubernetes names (DNS-1123: lowercase letters, digits and `-`, at most 63); try `{suggestion}`")
    } else {
        "names become Kubernetes names (DNS-1123: lowercase letters, digits and `-`, at most 63)"
            .to_string()
    };
    Diagnostic::error(
        "invalid-name",
        format!("`{name}` is not a valid {what} name"),
    )
    .at(location)
    .help(help)
}

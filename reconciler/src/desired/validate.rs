//! The rules checked before anything runs. Every rule reports into the same
//! [`Diagnostics`], so a user sees every problem at once.
//!
//! Rules: one workspace.toml per workspace folder; unique names across files; DNS-1123
//! names; references resolve, to the right kind; target-specific fields; traffic and
//! mirror maps; rollout steps; GPU requests against the compute's GPUs and quota (with
//! the surge a rollout needs); endpoints only on compute that serves; paths stay inside
//! the manifests root; job outputs and model lineage agree.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use toml::Spanned;

use super::{limits, Dependency, Resource};
use crate::address::{is_dns1123_label, Address, Kind, Reference, ReferenceError};
use crate::diagnostics::{did_you_mean, Diagnostic, Diagnostics, LineIndex, Location};
use crate::manifest::source::join_inside;
use crate::manifest::{
    ComputeSpec, Declared, EndpointSpec, JobSpec, ModelSpec, Role, Snapshot, Spec, Target,
    WalkError, WorkspaceSpec,
};

/// Folders a source may not read: Git's own files and Cairn's store and state.
const RESERVED_FOLDERS: [&str; 2] = [".git", ".cairn"];

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
            Spec::Dataset(spec) => {
                ctx.data_path(r, &spec.source, "dataset", &mut out);
                if let Some(v) = &spec.version {
                    if v.get_ref().trim().is_empty() {
                        out.error(
                            Diagnostic::error("invalid-version", "a pinned dataset version can't be empty")
                                .at(ctx.loc(&r.file, v.span()))
                                .help("remove `version` to follow the content, or paste the version `cairn plan` showed"),
                        );
                    }
                }
            }
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

    fn check_workspace_folders(&self, declared: &[Declared], diagnostics: &mut Diagnostics) {
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

    /// Reads and resolves a reference, recording the dependency. Returns the target.
    #[allow(clippy::too_many_arguments)]
    fn reference<'v>(
        &self,
        view: &View<'v>,
        from: &Resource,
        field: &str,
        value: &Spanned<String>,
        expected: &[Kind],
        allow_pin: bool,
        out: &mut Out,
    ) -> Option<(&'v Resource, Option<String>)> {
        let span = value.span();
        let text = value.get_ref();
        let expected_names = expected
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        let reference = match Reference::parse(text) {
            Ok(r) => r,
            Err(err) => {
                let suggestion = match err {
                    ReferenceError::CrossWorkspace => {
                        "references stay inside their workspace: declare what you need in this workspace (a dataset can point at the same source)".to_string()
                    }
                    ReferenceError::EmptyPin => {
                        let base = text.trim_end_matches('@');
                        format!("write a version after `@` (`{base}@<version>`), or drop the `@` to follow the newest version")
                    }
                    ReferenceError::Shape | ReferenceError::UnknownKind(_) => {
                        let name = text.rsplit('.').next().unwrap_or(text);
                        let kind = expected[0];
                        // A misspelt kind (`datset.loans`) gets the right one back.
                        let typed_kind = text.split_once('.').map(|(k, _)| k);
                        let kind = typed_kind
                            .and_then(|k| did_you_mean(k, expected.iter().map(|k| k.as_str())))
                            .unwrap_or(kind.as_str());
                        format!("write `{kind}.<name>`, e.g. `{kind}.{name}`")
                    }
                };
                out.error(
                    Diagnostic::error(
                        "invalid-reference",
                        format!("`{text}` is not a valid reference: {err}"),
                    )
                    .at(self.loc(&from.file, span.clone()))
                    .label(format!("`{field}` expects a {expected_names}"))
                    .help(suggestion),
                );
                return None;
            }
        };
        let ws = from.address.workspace.as_str();
        if !expected.contains(&reference.kind) {
            let same_name = expected.iter().find(|k| {
                view.get(&Address::new(ws, **k, reference.name.clone()))
                    .is_some()
            });
            out.error(
                Diagnostic::error(
                    "wrong-kind",
                    format!(
                        "`{field}` expects a {expected_names}, but `{text}` is a {}",
                        reference.kind
                    ),
                )
                .at(self.loc(&from.file, span.clone()))
                .label(format!("expected a {expected_names}"))
                .help(match same_name {
                    Some(k) => format!("did you mean `{k}.{}`?", reference.name),
                    None => format!(
                        "reference a {expected_names} here, as `{}.<name>`",
                        expected[0]
                    ),
                }),
            );
            return None;
        }
        if reference.pin.is_some() && !allow_pin {
            out.error(
                Diagnostic::error(
                    "pin-not-allowed",
                    format!(
                        "a {} reference can't be pinned to a version",
                        reference.kind
                    ),
                )
                .at(self.loc(&from.file, span.clone()))
                .help(format!(
                    "write `{}.{}` without `@…`",
                    reference.kind, reference.name
                )),
            );
        }
        let address = Address::new(ws, reference.kind, reference.name.clone());
        let Some(target) = view.get(&address) else {
            if view.broken.contains(&address) {
                return None;
            }
            let names = view.names(ws, reference.kind);
            let help = match did_you_mean(&reference.name, names.iter().copied()) {
                Some(best) => format!("did you mean `{}.{best}`?", reference.kind),
                None if names.is_empty() => format!(
                    "no {} is declared in workspace `{ws}`; declare it as `[{}.{}]`",
                    reference.kind, reference.kind, reference.name
                ),
                None => format!(
                    "declared {}s in `{ws}`: {}",
                    reference.kind,
                    names.iter().take(8).copied().collect::<Vec<_>>().join(", ")
                ),
            };
            out.error(
                Diagnostic::error(
                    "unresolved-reference",
                    format!(
                        "`{}.{}` is not declared in workspace `{ws}`",
                        reference.kind, reference.name
                    ),
                )
                .at(self.loc(&from.file, span.clone()))
                .label("no such resource")
                .help(help),
            );
            return None;
        };
        out.deps.push(Dependency {
            address,
            pin: reference.pin.clone(),
            span: value.span(),
        });
        Some((target, reference.pin))
    }

    fn workspace(&self, r: &Resource, spec: &WorkspaceSpec, out: &mut Out) {
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

    fn compute(&self, r: &Resource, spec: &ComputeSpec, out: &mut Out) {
        if *spec.target.get_ref() == Target::Local {
            let kube_only: [(&str, Option<Range<usize>>); 4] = [
                ("context", spec.context.as_ref().map(|s| s.span())),
                ("namespace", spec.namespace.as_ref().map(|s| s.span())),
                ("gateway", spec.gateway.as_ref().map(|s| s.span())),
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

    /// Checks a dataset or model `source`: an object-store URL, or a path inside the root.
    fn data_path(&self, r: &Resource, source: &Spanned<String>, what: &str, out: &mut Out) {
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

    fn compute_of<'v>(
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

    /// Returns the GPUs per unit allowed by the instance type, if one is named.
    fn instance_type(
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
    fn gpus(
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

    fn job<'v>(&self, view: &View<'v>, r: &Resource, spec: &JobSpec, out: &mut Out) {
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
            let Some((model, _)) =
                self.reference(view, r, "outputs", value, &[Kind::Model], false, out)
            else {
                continue;
            };
            let Spec::Model(m) = &model.spec else {
                continue;
            };
            // The model depends on the job, not the other way round: drop the edge the
            // output reference just added (an input of the same model keeps its own).
            out.deps.pop();
            let produced_by_this_job = m
                .from_job
                .as_ref()
                .and_then(|j| Reference::parse(j.get_ref()).ok())
                .is_some_and(|j| j.kind == Kind::Job && j.name == r.address.name);
            if !produced_by_this_job {
                let why = match (&m.from_job, &m.source) {
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
                            model.address.local()
                        ),
                    )
                    .at(self.loc(&r.file, value.span()))
                    .related(
                        self.loc(&model.file, model.name_span.clone()),
                        "model declared here",
                    )
                    .help(format!(
                        "set `from_job = \"{}\"` on {}",
                        r.address.local(),
                        model.address.local()
                    )),
                );
            }
        }
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

    fn model<'v>(&self, view: &View<'v>, r: &Resource, spec: &ModelSpec, out: &mut Out) {
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

    fn endpoint<'v>(&self, view: &View<'v>, r: &Resource, spec: &EndpointSpec, out: &mut Out) {
        let compute = self.compute_of(view, r, &spec.compute, Role::Serve, out);
        let compute_name = Reference::parse(spec.compute.get_ref())
            .map(|c| c.name)
            .unwrap_or_default();
        if let Some(compute) = compute {
            if *compute.target.get_ref() == Target::Local && spec.port.is_none() {
                out.error(
                    Diagnostic::error(
                        "missing-port",
                        "an endpoint on the local target needs a `port`",
                    )
                    .at(self.loc(&r.file, r.name_span.clone()))
                    .help("add `port = 8080` (the local router listens there)"),
                );
            }
        }
        if spec.deployments.is_empty() {
            out.error(
                Diagnostic::error("no-deployments", "endpoint declares no deployments")
                    .at(self.loc(&r.file, r.name_span.clone()))
                    .help(format!(
                        "add `[endpoint.{}.deployments.blue]` with `model = \"model.<name>\"`",
                        r.address.name
                    )),
            );
        }
        for (name, deployment) in &spec.deployments {
            let d = deployment.get_ref();
            let full = format!("{}-{}", r.address.name, name.get_ref());
            if !is_dns1123_label(name.get_ref()) {
                out.error(invalid_name(
                    self.loc(&r.file, name.span()),
                    name.get_ref(),
                    "deployment",
                ));
            } else if full.len() > 63 {
                out.error(
                    Diagnostic::error(
                        "invalid-name",
                        format!("`{full}` (endpoint-deployment) is longer than 63 characters"),
                    )
                    .at(self.loc(&r.file, name.span()))
                    .help("Kubernetes names the deployment after both; shorten one"),
                );
            }
            self.reference(view, r, "model", &d.model, &[Kind::Model], true, out);
            if let Some(compute) = compute {
                let type_gpus =
                    self.instance_type(r, compute, &compute_name, d.instance_type.as_ref(), out);
                self.gpus(
                    r,
                    compute,
                    &compute_name,
                    d.gpus.as_ref(),
                    d.replicas(),
                    "replica",
                    type_gpus,
                    out,
                );
            }
            if d.replicas() == 0 && spec.weight_of(name.get_ref()) > 0 {
                out.error(
                    Diagnostic::error(
                        "no-replicas",
                        format!("deployment `{}` has traffic but 0 replicas", name.get_ref()),
                    )
                    .at(self.loc(
                        &r.file,
                        d.replicas.as_ref().map_or(name.span(), |x| x.span()),
                    ))
                    .help("give it replicas, or move its traffic to another deployment first"),
                );
            }
        }
        self.traffic(r, spec, out);
        self.mirror(r, spec, out);
        if let Some(compute) = compute {
            if *compute.target.get_ref() == Target::Kubernetes && compute.gateway.is_none() {
                self.without_gateway(r, spec, &compute_name, out);
            }
        }
        if let Some(rollout) = &spec.rollout {
            self.rollout(r, rollout, out);
        }
    }

    fn unknown_deployment(
        &self,
        r: &Resource,
        spec: &EndpointSpec,
        name: &Spanned<String>,
        map: &str,
    ) -> Diagnostic {
        let declared: Vec<&str> = spec
            .deployments
            .keys()
            .map(|k| k.get_ref().as_str())
            .collect();
        Diagnostic::error(
            "unknown-deployment",
            format!(
                "`{map}` names deployment `{}`, which is not declared",
                name.get_ref()
            ),
        )
        .at(self.loc(&r.file, name.span()))
        .help(
            match did_you_mean(name.get_ref(), declared.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None if declared.is_empty() => "declare deployments first".to_string(),
                None => format!("declared deployments: {}", declared.join(", ")),
            },
        )
    }

    fn traffic(&self, r: &Resource, spec: &EndpointSpec, out: &mut Out) {
        let Some(traffic) = &spec.traffic else { return };
        let mut sum: u64 = 0;
        for (name, weight) in traffic.get_ref() {
            if !spec.deployments.contains_key(name.get_ref().as_str()) {
                out.error(self.unknown_deployment(r, spec, name, "traffic"));
            }
            if *weight.get_ref() > 100 {
                out.error(
                    Diagnostic::error(
                        "traffic",
                        format!("weight {} is over 100%", weight.get_ref()),
                    )
                    .at(self.loc(&r.file, weight.span()))
                    .help("weights are percentages from 0 to 100"),
                );
            }
            sum += u64::from(*weight.get_ref());
        }
        if sum != 0 && sum != 100 {
            let parts: Vec<String> = traffic
                .get_ref()
                .iter()
                .map(|(k, v)| format!("{} = {}", k.get_ref(), v.get_ref()))
                .collect();
            out.error(
                Diagnostic::error(
                    "traffic-sum",
                    format!("traffic weights add up to {sum}%, not 100% (or 0%)"),
                )
                .at(self.loc(&r.file, traffic.span()))
                .label(parts.join(", "))
                .help(
                    "make the weights add up to 100, or all 0 to take the endpoint out of service",
                ),
            );
        }
    }

    /// Without a gateway, the endpoint's Service selector is the switch: all traffic
    /// goes to one deployment, and nothing can be mirrored.
    fn without_gateway(&self, r: &Resource, spec: &EndpointSpec, compute: &str, out: &mut Out) {
        if let Some(traffic) = &spec.traffic {
            let split: Vec<String> = traffic
                .get_ref()
                .iter()
                .filter(|(_, w)| *w.get_ref() > 0)
                .map(|(k, v)| format!("{} = {}", k.get_ref(), v.get_ref()))
                .collect();
            if split.len() > 1 {
                out.error(
                    Diagnostic::error(
                        "traffic-split",
                        format!("compute `{compute}` has no `gateway`, so traffic can't be split"),
                    )
                    .at(self.loc(&r.file, traffic.span()))
                    .label(split.join(", "))
                    .help(format!(
                        "without a gateway the endpoint's Service selects one deployment (0/100): put 100 on one, or declare `gateway = \"<namespace>/<gateway>\"` on compute.{compute} for weighted traffic through an HTTPRoute"
                    )),
                );
            }
        }
        if let Some(mirror) = &spec.mirror {
            out.error(
                Diagnostic::error(
                    "mirror",
                    format!("compute `{compute}` has no `gateway`, so requests can't be mirrored"),
                )
                .at(self.loc(&r.file, mirror.span()))
                .help(format!(
                    "mirroring is an HTTPRoute filter: declare `gateway` on compute.{compute}, or drop the mirror"
                )),
            );
        }
        if let Some(m) = spec
            .rollout
            .as_ref()
            .and_then(|r| r.get_ref().mirror.as_ref())
        {
            out.error(
                Diagnostic::error(
                    "mirror",
                    format!("compute `{compute}` has no `gateway`, so a rollout can't mirror requests"),
                )
                .at(self.loc(&r.file, m.span()))
                .help(format!(
                    "mirroring is an HTTPRoute filter: declare `gateway` on compute.{compute}, or drop `mirror` from the rollout"
                )),
            );
        }
    }

    fn mirror(&self, r: &Resource, spec: &EndpointSpec, out: &mut Out) {
        let Some(mirror) = &spec.mirror else { return };
        let entries = mirror.get_ref();
        if entries.len() > 1 {
            out.error(
                Diagnostic::error(
                    "mirror",
                    format!(
                        "traffic is mirrored to {} deployments; at most one is allowed",
                        entries.len()
                    ),
                )
                .at(self.loc(&r.file, mirror.span()))
                .help("mirror to a single deployment, usually the one being tested"),
            );
        }
        for (name, percent) in entries {
            if !spec.deployments.contains_key(name.get_ref().as_str()) {
                out.error(self.unknown_deployment(r, spec, name, "mirror"));
                continue;
            }
            if *percent.get_ref() > 50 {
                out.error(
                    Diagnostic::error(
                        "mirror",
                        format!("mirror of {}% is over the 50% limit", percent.get_ref()),
                    )
                    .at(self.loc(&r.file, percent.span()))
                    .help("mirrored traffic doubles the load; copy at most 50%"),
                );
            }
            let weight = spec.weight_of(name.get_ref());
            if weight > 0 {
                out.error(
                    Diagnostic::error(
                        "mirror",
                        format!("deployment `{}` already takes {weight}% of live traffic and can't also be a mirror", name.get_ref()),
                    )
                    .at(self.loc(&r.file, name.span()))
                    .help("mirror to a deployment with 0% traffic, or drop the mirror"),
                );
            }
        }
    }

    fn rollout(
        &self,
        r: &Resource,
        rollout: &Spanned<crate::manifest::RolloutSpec>,
        out: &mut Out,
    ) {
        let spec = rollout.get_ref();
        let steps = spec.steps.get_ref();
        let at = || self.loc(&r.file, spec.steps.span());
        let bad = |msg: String| {
            Diagnostic::error("rollout-steps", msg).at(at()).help(
                "steps are increasing percentages of traffic ending at 100, e.g. `[10, 50, 100]`",
            )
        };
        if steps.is_empty() {
            out.error(bad("`steps` is empty".into()));
        } else if let Some(s) = steps.iter().find(|s| **s == 0 || **s > 100) {
            out.error(bad(format!("step {s}% is outside 1–100")));
        } else if steps.windows(2).any(|w| w[0] >= w[1]) {
            out.error(bad(format!("steps {steps:?} do not strictly increase")));
        } else if steps.last() != Some(&100) {
            out.error(bad(format!(
                "steps end at {}%, not 100%",
                steps.last().unwrap_or(&0)
            )));
        }
        if let Some(rate) = &spec.max_error_rate {
            let v = *rate.get_ref();
            if !(0.0..=1.0).contains(&v) {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("max_error_rate {v:?} is not between 0 and 1"),
                    )
                    .at(self.loc(&r.file, rate.span()))
                    .help("it is a fraction: 0.01 means 1% of requests"),
                );
            }
        }
        if let Some(mirror) = &spec.mirror {
            let v = *mirror.get_ref();
            if v == 0 || v > 100 {
                out.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("rollout mirror {v}% is outside 1–100"),
                    )
                    .at(self.loc(&r.file, mirror.span()))
                    .help("the percent of requests copied to the new version before traffic moves, e.g. `mirror = 50`"),
                );
            }
        }
        if let Some(p99) = &spec.max_p99_ms {
            if *p99.get_ref() == 0 {
                out.error(
                    Diagnostic::error("invalid-value", "max_p99_ms must be above 0")
                        .at(self.loc(&r.file, p99.span()))
                        .help("the p99 latency gate in milliseconds, e.g. `max_p99_ms = 250`; remove it to roll out without a latency gate"),
                );
            }
        }
    }

    /// GPUs needed to serve every endpoint on each compute, with room to start one new
    /// revision of the largest deployment beside the old during a rollout.
    fn serving_capacity(&self, view: &View<'_>, diagnostics: &mut Diagnostics) {
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
                .map(|d| u128::from(d.get_ref().replicas()) * u128::from(d.get_ref().gpus()))
                .sum();
            let surge: u128 = spec
                .deployments
                .values()
                .map(|d| u128::from(d.get_ref().replicas()) * u128::from(d.get_ref().gpus()))
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

    /// Endpoints on the local target share this machine's ports.
    fn local_ports(&self, view: &View<'_>, diagnostics: &mut Diagnostics) {
        let mut taken: BTreeMap<u16, &Resource> = BTreeMap::new();
        for r in view.resources {
            let Spec::Endpoint(spec) = &r.spec else {
                continue;
            };
            let Some(port) = &spec.port else { continue };
            let Ok(c) = Reference::parse(spec.compute.get_ref()) else {
                continue;
            };
            let compute = view.get(&Address::new(
                r.address.workspace.clone(),
                Kind::Compute,
                c.name,
            ));
            let Some(Spec::Compute(c)) = compute.map(|c| &c.spec) else {
                continue;
            };
            if *c.target.get_ref() != Target::Local {
                continue;
            }
            if let Some(first) = taken.get(port.get_ref()) {
                diagnostics.push(
                    Diagnostic::error(
                        "port-conflict",
                        format!(
                            "port {} is already used by {}",
                            port.get_ref(),
                            first.address
                        ),
                    )
                    .at(self.loc(&r.file, port.span()))
                    .related(
                        self.loc(&first.file, first.name_span.clone()),
                        "that endpoint is declared here",
                    )
                    .help(
                        "endpoints on the local target share this machine; give each its own port",
                    ),
                );
            } else {
                taken.insert(*port.get_ref(), r);
            }
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

fn escape(location: Location, path: &str) -> Diagnostic {
    Diagnostic::error("path-escape", format!("`{path}` leads outside the manifests root"))
        .at(location)
        .label("path escapes the root")
        .help("paths from manifests must stay inside the manifests root; copy the data in, or use an `s3://` URL")
}

/// Returns the names used as `{{ <field>.<name> }}` in a command, with the span of the
/// argument that holds each.
fn placeholders(command: &[Spanned<String>], field: &str) -> Vec<(String, Range<usize>)> {
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

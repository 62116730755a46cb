//! Policies: Rego rules (the conftest convention, `deny` and `warn` sets) evaluated
//! against the desired state and the plan before anything is applied.
//!
//! This module owns loading the policies, evaluating them with `regorus`, running their
//! unit tests, and the report a plan carries. It does not decide what a deny does: the
//! CLI refuses to apply a denied plan and exits 1.
//!
//! Where policies come from, in order (a later file with the same name replaces an
//! earlier one, so a repository can replace or switch off a shipped rule):
//! 1. the files shipped with Cairn (`policies/*.rego`, built into the binary);
//! 2. the repository's `policies/` folder under the manifests root, read through the
//!    [`Snapshot`] so `--rev` evaluates the policies committed at that revision. `*.rego`
//!    files are policies, `*.json` files are data merged into `data` (e.g.
//!    `{"cairn": {"config": {"approved_registries": […]}}}`); anything else is ignored.
//!
//! Every package is queried for `deny` and `warn`. A message is a string or an object
//! `{"msg": …, "address": …}`; the address names the resource, and the report adds the
//! manifest file declaring it. `*_test.rego` files are loaded only to run tests
//! ([`Policies::test`]): every `test_*` rule passes when it evaluates to `true`.
//!
//! The input document is built by [`Input::new`]: `resources` (by address: address,
//! kind, name, workspace, file and spec), `workspaces` (by name: the workspace's spec)
//! and `plan` (the JSON plan without its no-op changes, or `null`). `policies/README.md`
//! shows its shape.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use regorus::{Engine, Value};
use serde::Serialize;

use crate::desired::DesiredState;
use crate::diagnostics::{error_chain, Diagnostic, Location};
use crate::manifest::{EntryKind, Snapshot, Spec};
use crate::plan::Plan;

/// The repository's policy folder, under the manifests root.
pub const POLICY_DIR: &str = "policies";

/// Policy and data files larger than this are refused.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// The policies shipped with Cairn: file name and text.
pub const SHIPPED: &[(&str, &str)] = &[
    ("compute.rego", include_str!("../../policies/compute.rego")),
    (
        "compute_test.rego",
        include_str!("../../policies/compute_test.rego"),
    ),
    ("data.rego", include_str!("../../policies/data.rego")),
    (
        "data_test.rego",
        include_str!("../../policies/data_test.rego"),
    ),
    (
        "endpoints.rego",
        include_str!("../../policies/endpoints.rego"),
    ),
    (
        "endpoints_test.rego",
        include_str!("../../policies/endpoints_test.rego"),
    ),
    ("gpu.rego", include_str!("../../policies/gpu.rego")),
    (
        "gpu_test.rego",
        include_str!("../../policies/gpu_test.rego"),
    ),
    ("images.rego", include_str!("../../policies/images.rego")),
    (
        "images_test.rego",
        include_str!("../../policies/images_test.rego"),
    ),
];

/// Errors from loading, evaluating and testing policies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the policy file `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` can't be used as a policy: {problem}")]
    BadFile { path: String, problem: String },
    /// A Rego file that doesn't parse.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: u32,
        column: u32,
        message: String,
        /// The offending line, as written.
        text: String,
        /// Byte offset of the place in the file.
        offset: usize,
    },
    #[error("the policy data file `{path}` is not valid JSON: {message}")]
    Data { path: String, message: String },
    /// A rule that fails while evaluating (a conflict, a builtin given bad arguments).
    #[error("evaluating `{rule}` failed: {}{message}", .location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Eval {
        rule: String,
        /// `policies/x.rego:12:5`, when regorus says.
        location: Option<String>,
        message: String,
    },
    #[error("`{rule}` ({policy}) produced {found}; a message is a string or an object with a string `msg`")]
    BadMessage {
        rule: String,
        policy: String,
        found: String,
    },
}

impl Error {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Syntax { text, .. } => Some(format!(
                "the line reads `{}`; policies are Rego v1: a rule's body follows `if`, and sets are built with `contains` (`deny contains msg if {{ … }}`)",
                text.trim()
            )),
            Error::BadFile { .. } | Error::Read { .. } => Some(format!(
                "the repository's policies are the `*.rego` and `*.json` files in `{POLICY_DIR}/` under the manifests root"
            )),
            Error::Data { .. } => Some(
                "a data file holds one JSON object, merged into `data` (e.g. {\"cairn\": {\"config\": {…}}})".into(),
            ),
            Error::Eval { .. } => Some(
                "`cairn policy eval --input` prints the input the rules saw; `cairn policy test` runs the policies' unit tests".into(),
            ),
            Error::BadMessage { .. } => Some(
                "write `deny contains msg if { … }` with a string `msg`, or an object {\"msg\": msg, \"address\": r.address}".into(),
            ),
        }
    }
}

impl Error {
    /// The error as a finding of `cairn validate`, at its place when it has one.
    pub fn diagnostic(&self) -> Diagnostic {
        let (message, location) = match self {
            Error::Syntax {
                path,
                line,
                column,
                message,
                offset,
                ..
            } => (
                message.clone(),
                Location {
                    file: path.clone(),
                    line: *line as usize,
                    column: *column as usize,
                    span: *offset..*offset,
                },
            ),
            Error::Read { path, .. } | Error::BadFile { path, .. } | Error::Data { path, .. } => {
                (error_chain(self), Location::file(path))
            }
            Error::Eval { .. } | Error::BadMessage { .. } => {
                return Diagnostic::error("policy", error_chain(self))
                    .help(self.hint().unwrap_or_default())
            }
        };
        let diagnostic = Diagnostic::error("policy", message).at(location);
        match self.hint() {
            Some(hint) => diagnostic.help(hint),
            None => diagnostic,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::plan::{PolicyMessage, PolicyReport};

/// Where a policy file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Shipped,
    /// The repository's `policies/`, or a folder given to `cairn policy test`.
    Repository,
}

/// One Rego or data file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// The name inside its policies folder (`endpoints.rego`, `team/rules.rego`): a
    /// later file with the same name replaces an earlier one.
    pub name: String,
    /// The path shown to the user: `policies/endpoints.rego` (shipped), or the path
    /// relative to the manifests root (`policies/registries.rego`).
    pub path: String,
    pub text: String,
    pub origin: Origin,
}

impl PolicyFile {
    /// True for a unit-test file (`*_test.rego`), loaded only by [`Policies::test`].
    pub fn is_test(&self) -> bool {
        self.name.ends_with("_test.rego")
    }

    fn is_data(&self) -> bool {
        self.name.ends_with(".json")
    }
}

/// A set of policy and data files, ready to evaluate or test.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    files: Vec<PolicyFile>,
}

/// The outcome of one `test_*` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestOutcome {
    /// The file declaring it.
    pub policy: String,
    /// `data.cairn.endpoints.test_unauthenticated_endpoint_in_production_is_denied`.
    pub rule: String,
    /// Where it is declared, 1-based.
    pub line: u32,
    pub result: TestResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "status", content = "error")]
pub enum TestResult {
    Passed,
    /// Evaluated to something other than `true` (usually undefined: a condition failed).
    Failed,
    /// Could not be evaluated.
    Error(String),
}

impl Policies {
    /// Returns the policies shipped with Cairn.
    pub fn shipped() -> Policies {
        let mut policies = Policies::default();
        for (name, text) in SHIPPED {
            policies.add(PolicyFile {
                name: name.to_string(),
                path: format!("{POLICY_DIR}/{name}"),
                text: text.to_string(),
                origin: Origin::Shipped,
            });
        }
        policies
    }

    /// Returns the shipped policies plus the repository's `policies/` folder under the
    /// snapshot's root (at the snapshot's revision, when it was read at one).
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Policies> {
        let mut policies = Policies::shipped();
        match snapshot.entry(POLICY_DIR) {
            None => {}
            Some(EntryKind::Dir) => {
                let files = snapshot.files(POLICY_DIR).map_err(|source| Error::Read {
                    path: POLICY_DIR.into(),
                    source,
                })?;
                for file in files {
                    if !is_policy_name(&file.path) {
                        continue;
                    }
                    let path = format!("{POLICY_DIR}/{}", file.path);
                    if file.size > MAX_POLICY_BYTES {
                        return Err(too_large(path, file.size));
                    }
                    let bytes = snapshot.read(&path).map_err(|source| Error::Read {
                        path: path.clone(),
                        source,
                    })?;
                    policies.add(PolicyFile {
                        name: file.path,
                        text: utf8(&path, bytes)?,
                        path,
                        origin: Origin::Repository,
                    });
                }
            }
            Some(EntryKind::File) => {
                return Err(Error::BadFile {
                    path: POLICY_DIR.into(),
                    problem: "it is a file; policies go in a folder of that name".into(),
                })
            }
            Some(EntryKind::Outside) => {
                return Err(Error::BadFile {
                    path: POLICY_DIR.into(),
                    problem: "a symbolic link leads outside the manifests root".into(),
                })
            }
        }
        Ok(policies)
    }

    /// Adds the `*.rego` and `*.json` files of a folder on disk (recursively), replacing
    /// files of the same name. Paths are shown as `dir/name`.
    pub fn with_folder(mut self, dir: &Path) -> Result<Policies> {
        let shown = dir.display().to_string();
        let mut found = Vec::new();
        collect(dir, "", &mut found).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        found.sort();
        for name in found {
            let disk = dir.join(&name);
            let path = format!("{}/{name}", shown.trim_end_matches('/'));
            let size = std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0);
            if size > MAX_POLICY_BYTES {
                return Err(too_large(path, size));
            }
            let bytes = std::fs::read(&disk).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            self.add(PolicyFile {
                name,
                text: utf8(&path, bytes)?,
                path,
                origin: Origin::Repository,
            });
        }
        Ok(self)
    }

    /// Adds a file, replacing one of the same name.
    pub fn add(&mut self, file: PolicyFile) {
        match self.files.iter_mut().find(|f| f.name == file.name) {
            Some(existing) => *existing = file,
            None => self.files.push(file),
        }
    }

    /// Returns the files, shipped ones first.
    pub fn files(&self) -> &[PolicyFile] {
        &self.files
    }

    /// Returns an engine with the policies (and unit tests, if `tests`) and data loaded.
    fn engine(&self, tests: bool) -> Result<Engine> {
        let mut engine = Engine::new();
        for file in &self.files {
            if file.is_data() {
                let value = Value::from_json_str(&file.text).map_err(|e| Error::Data {
                    path: file.path.clone(),
                    message: first_line(&e.to_string()),
                })?;
                if !matches!(value, Value::Object(_)) {
                    return Err(Error::Data {
                        path: file.path.clone(),
                        message: "it is not a JSON object".into(),
                    });
                }
                engine.add_data(value).map_err(|e| Error::Data {
                    path: file.path.clone(),
                    message: first_line(&e.to_string()),
                })?;
            } else if tests || !file.is_test() {
                engine
                    .add_policy(file.path.clone(), file.text.clone())
                    .map_err(|e| syntax_error(file, &e.to_string()))?;
            }
        }
        // The first evaluation analyses every module; a variable used before it is bound
        // is found here, once, rather than on every rule evaluated.
        if let Err(e) = engine.eval_bool_query("true".into(), false) {
            let text = e.to_string();
            let (location, message) = split_location(&text);
            let file = location.as_deref().and_then(|l| {
                self.files
                    .iter()
                    .find(|f| l.starts_with(&format!("{}:", f.path)))
            });
            return Err(match file {
                Some(file) => syntax_error(file, &text),
                None => Error::Eval {
                    rule: "the policies".into(),
                    location,
                    message,
                },
            });
        }
        Ok(engine)
    }

    /// Checks that every policy parses; returns the first error otherwise.
    pub fn check(&self) -> Result<()> {
        self.engine(true).map(|_| ())
    }

    /// Evaluates every package's `deny` and `warn` against `input`.
    pub fn evaluate(&self, input: &Input) -> Result<PolicyReport> {
        let mut engine = self.engine(false)?;
        // The packages in file order, each with the files declaring `deny` / `warn`.
        let mut packages: Vec<(String, BTreeMap<&'static str, Vec<String>>)> = Vec::new();
        for rule in rules(&mut engine) {
            let index = match packages.iter().position(|(p, _)| *p == rule.package) {
                Some(i) => i,
                None => {
                    packages.push((rule.package.clone(), BTreeMap::new()));
                    packages.len() - 1
                }
            };
            for set in ["deny", "warn"] {
                if rule.name == set {
                    let files = packages[index].1.entry(set).or_default();
                    if !files.contains(&rule.path) {
                        files.push(rule.path.clone());
                    }
                }
            }
        }
        let evaluated: Vec<String> = self
            .files
            .iter()
            .filter(|f| !f.is_test() && !f.is_data())
            .map(|f| f.path.clone())
            .collect();

        engine.set_input(input.value.clone());
        let mut report = PolicyReport {
            policies: evaluated,
            ..PolicyReport::default()
        };
        for (package, sets) in &packages {
            for (set, files) in sets {
                let rule = format!("{package}.{set}");
                let value = engine.eval_rule(rule.clone()).map_err(|e| {
                    let (location, message) = split_location(&e.to_string());
                    Error::Eval {
                        rule: rule.clone(),
                        location,
                        message,
                    }
                })?;
                let policy = files.join(", ");
                let messages = messages(&rule, &policy, &value, input)?;
                match *set {
                    "deny" => report.deny.extend(messages),
                    _ => report.warn.extend(messages),
                }
            }
        }
        report.deny.sort();
        report.deny.dedup();
        report.warn.sort();
        report.warn.dedup();
        Ok(report)
    }

    /// Runs every `test_*` rule, or only those declared in files for which `select`
    /// returns true.
    pub fn test(&self, select: impl Fn(&PolicyFile) -> bool) -> Result<Vec<TestOutcome>> {
        let mut engine = self.engine(true)?;
        engine.set_input(Value::new_object());
        let selected: BTreeSet<&str> = self
            .files
            .iter()
            .filter(|f| !f.is_data() && select(f))
            .map(|f| f.path.as_str())
            .collect();
        let mut tests: Vec<(String, String, u32)> = Vec::new();
        for rule in rules(&mut engine) {
            if !rule.test || !selected.contains(rule.path.as_str()) {
                continue;
            }
            let path = format!("{}.{}", rule.package, rule.name);
            // A rule with several bodies is one test.
            if !tests.iter().any(|(_, p, _)| *p == path) {
                tests.push((rule.path, path, rule.line));
            }
        }
        let mut outcomes = Vec::new();
        for (policy, rule, line) in tests {
            let result = match engine.eval_rule(rule.clone()) {
                Ok(Value::Bool(true)) => TestResult::Passed,
                Ok(_) => TestResult::Failed,
                Err(e) => {
                    let (location, message) = split_location(&e.to_string());
                    TestResult::Error(match location {
                        Some(l) => format!("{l}: {message}"),
                        None => message,
                    })
                }
            };
            outcomes.push(TestOutcome {
                policy,
                rule,
                line,
                result,
            });
        }
        Ok(outcomes)
    }
}

/// The input document policies see.
#[derive(Debug, Clone)]
pub struct Input {
    value: Value,
    /// Resource address → manifest file, for messages that name an address.
    files: HashMap<String, String>,
}

impl Input {
    /// Builds the input from the desired state and, when there is one, the plan. With a
    /// plan, only the workspaces it covers are in `resources` and `workspaces`.
    pub fn new(desired: &DesiredState, plan: Option<&Plan>) -> Input {
        let planned: Option<BTreeSet<&str>> =
            plan.map(|p| p.workspaces.iter().map(|w| w.name.as_str()).collect());
        let mut view = InputView {
            resources: BTreeMap::new(),
            workspaces: BTreeMap::new(),
            plan: plan.map(PolicyPlan::of),
        };
        let mut files = HashMap::new();
        for r in &desired.resources {
            if planned
                .as_ref()
                .is_some_and(|p| !p.contains(r.address.workspace.as_str()))
            {
                continue;
            }
            let address = r.address.to_string();
            if let Spec::Workspace(_) = r.spec {
                view.workspaces
                    .insert(r.address.workspace.as_str(), SpecView(&r.spec));
            }
            files.insert(address.clone(), r.file.clone());
            view.resources.insert(
                address.clone(),
                ResourceView {
                    address,
                    kind: r.kind(),
                    name: &r.address.name,
                    workspace: &r.address.workspace,
                    file: &r.file,
                    spec: SpecView(&r.spec),
                },
            );
        }
        // Straight from the structures to JSON text to the engine's values (whose parser
        // shares the object keys every resource repeats): no intermediate JSON tree.
        let json = serde_json::to_string(&view).expect("the policy input serializes");
        drop(view);
        Input {
            value: Value::from_json_str(&json).expect("Cairn's own JSON parses"),
            files,
        }
    }

    /// The input as JSON, as the rules see it.
    pub fn to_json(&self) -> String {
        self.value
            .to_json_str()
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }
}

/// `input.plan`: the JSON plan, but `resource_changes` holds only the changes that do
/// something. An unchanged resource's before and after are its spec, which
/// `input.resources` already has; `summary.unchanged` counts them. (Serialising every
/// no-op change with its before and after made the input of a 50,000-resource plan
/// about a gigabyte.)
#[derive(Serialize)]
struct PolicyPlan<'a> {
    format_version: &'a str,
    cairn_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    source: &'a crate::plan::PlanSource,
    workspaces: &'a [crate::plan::PlanWorkspace],
    resource_changes: Vec<&'a crate::plan::ResourceChange>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
    summary: &'a crate::plan::PlanSummary,
}

impl PolicyPlan<'_> {
    fn of(plan: &Plan) -> PolicyPlan<'_> {
        PolicyPlan {
            format_version: &plan.format_version,
            cairn_version: &plan.cairn_version,
            revision: plan.revision.as_deref(),
            source: &plan.source,
            workspaces: &plan.workspaces,
            resource_changes: plan.changes().collect(),
            notes: &plan.notes,
            summary: &plan.summary,
        }
    }
}

/// Checks the policies in `snapshot` (shipped + repository) against the desired state
/// and the plan. Returns the report to put on the plan.
pub fn check(snapshot: &Snapshot, desired: &DesiredState, plan: &Plan) -> Result<PolicyReport> {
    Policies::from_snapshot(snapshot)?.evaluate(&Input::new(desired, Some(plan)))
}

/// The policy input, as [`Input::new`] serialises it.
#[derive(Serialize)]
struct InputView<'a> {
    resources: BTreeMap<String, ResourceView<'a>>,
    workspaces: BTreeMap<&'a str, SpecView<'a>>,
    plan: Option<PolicyPlan<'a>>,
}

/// `input.resources[address]`.
#[derive(Serialize)]
struct ResourceView<'a> {
    address: String,
    kind: crate::address::Kind,
    name: &'a str,
    workspace: &'a str,
    file: &'a str,
    spec: SpecView<'a>,
}

/// A resource's spec as written in its manifest, without the kind around it.
struct SpecView<'a>(&'a Spec);

impl Serialize for SpecView<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Spec::Workspace(s) => s.serialize(serializer),
            Spec::Compute(s) => s.serialize(serializer),
            Spec::Dataset(s) => s.serialize(serializer),
            Spec::Job(s) => s.serialize(serializer),
            Spec::Model(s) => s.serialize(serializer),
            Spec::Endpoint(s) => s.serialize(serializer),
        }
    }
}

/// Turns a `deny` / `warn` set into messages.
fn messages(rule: &str, policy: &str, value: &Value, input: &Input) -> Result<Vec<PolicyMessage>> {
    let items: Vec<&Value> = match value {
        Value::Undefined => return Ok(Vec::new()),
        Value::Set(set) => set.iter().collect(),
        Value::Array(array) => array.iter().collect(),
        other => {
            return Err(Error::BadMessage {
                rule: rule.into(),
                policy: policy.into(),
                found: describe(other),
            })
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let bad = || Error::BadMessage {
            rule: rule.into(),
            policy: policy.into(),
            found: describe(item),
        };
        let (message, address, file) = match item {
            Value::String(s) => (s.to_string(), None, None),
            Value::Object(fields) => {
                let text = |key: &str| match fields.get(&Value::from(key)) {
                    Some(Value::String(s)) => Some(s.to_string()),
                    _ => None,
                };
                let message = text("msg").ok_or_else(bad)?;
                (message, text("address"), text("file"))
            }
            _ => return Err(bad()),
        };
        let file = address
            .as_ref()
            .and_then(|a| input.files.get(a).cloned())
            .or(file);
        out.push(PolicyMessage {
            policy: policy.into(),
            message,
            address,
            file,
        });
    }
    Ok(out)
}

fn describe(value: &Value) -> String {
    let text = value.to_json_str().unwrap_or_else(|_| format!("{value}"));
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// A rule as declared in a loaded file.
struct DeclaredRule {
    /// The file.
    path: String,
    /// `data.cairn.endpoints`.
    package: String,
    /// `deny`, `test_unauthenticated_endpoint_is_denied`.
    name: String,
    line: u32,
    /// A `test_*` rule that can be a test: not a function.
    test: bool,
}

/// Returns every rule head of the loaded modules, in file order. regorus has no public
/// API listing rules (it runs no tests itself), so this reads its parsed modules.
fn rules(engine: &mut Engine) -> Vec<DeclaredRule> {
    use regorus::unstable::{Rule, RuleHead};
    let mut out = Vec::new();
    for module in engine.get_modules().iter() {
        let path = module.package.span.source.get_path().clone();
        let package = format!("data.{}", module.package.refr.span().text());
        for rule in &module.policy {
            let (refr, function) = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => (refr, false),
                    RuleHead::Func { refr, .. } => (refr, true),
                },
                Rule::Default { refr, .. } => (refr, false),
            };
            let name = refr.span().text().to_string();
            out.push(DeclaredRule {
                test: !function && name.starts_with("test_"),
                path: path.clone(),
                package: package.clone(),
                line: refr.span().line,
                name,
            });
        }
    }
    out
}

fn is_policy_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    !base.starts_with('.') && (base.ends_with(".rego") || base.ends_with(".json"))
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(&entry.path(), &rel, out)?;
        } else if is_policy_name(&rel) {
            out.push(rel);
        }
    }
    Ok(())
}

fn too_large(path: String, size: u64) -> Error {
    Error::BadFile {
        path,
        problem: format!("it is {size} bytes, over the {MAX_POLICY_BYTES}-byte limit"),
    }
}

fn utf8(path: &str, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::BadFile {
        path: path.into(),
        problem: "it is not valid UTF-8".into(),
    })
}

fn first_line(text: &str) -> String {
    text.trim().lines().next().unwrap_or("").to_string()
}

/// Splits a regorus message (`\n--> file:line:col\n  |\n3 | text\n  |  ^\nerror: what`)
/// into the location and the message.
fn split_location(text: &str) -> (Option<String>, String) {
    let location = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .map(|l| l.trim().to_string());
    let message = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        });
    (location, message)
}

/// A parse error, with its place when regorus gives one.
fn syntax_error(file: &PolicyFile, text: &str) -> Error {
    let (location, message) = split_location(text);
    let place = location.as_deref().and_then(|l| {
        let mut parts = l.rsplitn(3, ':');
        let column = parts.next()?.parse::<u32>().ok()?;
        let line = parts.next()?.parse::<u32>().ok()?;
        Some((line, column))
    });
    match place {
        Some((line, column)) => {
            let line_start: usize = file
                .text
                .split_inclusive('\n')
                .take(line.saturating_sub(1) as usize)
                .map(str::len)
                .sum();
            let text = file.text[line_start..]
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            // regorus counts columns in characters.
            let within: usize = text
                .chars()
                .take(column.saturating_sub(1) as usize)
                .map(char::len_utf8)
                .sum();
            Error::Syntax {
                path: file.path.clone(),
                line,
                column,
                message,
                text,
                offset: line_start + within,
            }
        }
        None => Error::BadFile {
            path: file.path.clone(),
            problem: message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PolicyFile {
        PolicyFile {
            name: name.into(),
            path: format!("policies/{name}"),
            text: text.into(),
            origin: Origin::Repository,
        }
    }

    fn input(json: serde_json::Value) -> Input {
        Input {
            value: Value::from(json),
            files: HashMap::from([("ml/endpoint.api".to_string(), "ml/serve.toml".to_string())]),
        }
    }

    #[test]
    fn shipped_tests_pass() {
        let outcomes = Policies::shipped().test(|_| true).unwrap();
        assert!(outcomes.len() >= 20, "{outcomes:?}");
        let failed: Vec<_> = outcomes
            .iter()
            .filter(|o| o.result != TestResult::Passed)
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn messages_name_the_file_of_their_address() {
        let mut policies = Policies::default();
        policies.add(file(
            "p.rego",
            "package cairn.p\n\ndeny contains {\"msg\": \"no\", \"address\": a} if { some a, _ in input.resources }\n\nwarn contains \"careful\" if true\n",
        ));
        let report = policies
            .evaluate(&input(
                serde_json::json!({"resources": {"ml/endpoint.api": {}}}),
            ))
            .unwrap();
        assert_eq!(
            report.deny,
            vec![PolicyMessage {
                policy: "policies/p.rego".into(),
                message: "no".into(),
                address: Some("ml/endpoint.api".into()),
                file: Some("ml/serve.toml".into()),
            }]
        );
        assert_eq!(report.warn[0].message, "careful");
        assert!(report.denied());
    }

    #[test]
    fn packages_without_deny_or_warn_are_fine() {
        let mut policies = Policies::default();
        policies.add(file("c.rego", "package cairn.config\n\nx := 1\n"));
        let report = policies.evaluate(&input(serde_json::json!({}))).unwrap();
        assert!(!report.denied());
        assert_eq!(report.policies, vec!["policies/c.rego"]);
    }

    #[test]
    fn a_syntax_error_has_a_place() {
        let mut policies = Policies::default();
        policies.add(file(
            "bad.rego",
            "package cairn.bad\n\ndeny contains msg {\n  msg := \"x\"\n}\n",
        ));
        let err = policies.check().unwrap_err();
        let Error::Syntax {
            path, line, offset, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(path, "policies/bad.rego");
        assert_eq!(*line, 3);
        // Line 3 starts at byte 19; the place is on it.
        assert!((19..38).contains(offset), "{offset}");
        assert_eq!(err.diagnostic().location.unwrap().span, *offset..*offset);
        assert!(err.hint().unwrap().contains("deny contains msg"));
    }

    #[test]
    fn an_unbound_variable_is_found_before_evaluating() {
        let mut policies = Policies::default();
        policies.add(file(
            "p.rego",
            "package p\n\nf(x) := x\n\ndeny contains m if {\n\tsome f in input.xs\n\tm := f\n}\n",
        ));
        policies.add(file("q.rego", "package q\n\nx := y\n"));
        let err = policies.check().unwrap_err();
        assert!(
            matches!(&err, Error::Syntax { path, .. } if path.starts_with("policies/")),
            "{err:?}"
        );
    }

    #[test]
    fn a_message_of_the_wrong_shape_is_an_error() {
        let mut policies = Policies::default();
        policies.add(file("p.rego", "package p\n\ndeny contains 3 if true\n"));
        let err = policies
            .evaluate(&input(serde_json::json!({})))
            .unwrap_err();
        assert!(matches!(err, Error::BadMessage { .. }), "{err:?}");
    }

    #[test]
    fn a_later_file_replaces_one_of_the_same_name() {
        let mut policies = Policies::shipped();
        let before = policies.files().len();
        policies.add(file("endpoints.rego", "package cairn.endpoints\n"));
        assert_eq!(policies.files().len(), before);
        assert_eq!(
            policies
                .files()
                .iter()
                .find(|f| f.name == "endpoints.rego")
                .unwrap()
                .origin,
            Origin::Repository
        );
    }

    #[test]
    fn data_files_are_merged_into_data() {
        let mut policies = Policies::default();
        policies.add(file("data.json", r#"{"cairn": {"config": {"limit": 2}}}"#));
        policies.add(file(
            "p.rego",
            "package p\n\ndeny contains \"over\" if { count(input.xs) > data.cairn.config.limit }\n",
        ));
        let over = policies
            .evaluate(&input(serde_json::json!({"xs": [1, 2, 3]})))
            .unwrap();
        assert_eq!(over.deny.len(), 1);
        let ok = policies
            .evaluate(&input(serde_json::json!({"xs": [1]})))
            .unwrap();
        assert!(ok.deny.is_empty());
    }

    #[test]
    fn failing_tests_fail() {
        let mut policies = Policies::default();
        policies.add(file(
            "p_test.rego",
            "package p\n\ntest_ok if true\n\ntest_bad if 1 == 2\n",
        ));
        let outcomes = policies.test(|_| true).unwrap();
        let results: Vec<_> = outcomes
            .iter()
            .map(|o| (o.rule.as_str(), &o.result))
            .collect();
        assert_eq!(
            results,
            vec![
                ("data.p.test_ok", &TestResult::Passed),
                ("data.p.test_bad", &TestResult::Failed)
            ]
        );
    }
}

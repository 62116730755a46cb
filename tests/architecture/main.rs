//! Checks of the library's shape that guard the structure of issue 13, run on the source
//! text (no build of the library is inspected):
//!
//! - `stage_modules_import_no_cycle`: the stage modules (`apply`, `plan`, `policy`,
//!   `events`, `serving`, …, with `backend::kubernetes`, `backend::local` and
//!   `backend::store` as nodes of their own) import each other without a cycle. A cycle
//!   means no stage can be read, changed or tested without the others; the fix is a leaf
//!   module both sides import (as the plan model is), or moving a helper to the module
//!   it belongs to.
//! - `library_files_are_short`: no library file is over [`MAX_LINES`] lines of code (its
//!   trailing `#[cfg(test)]` module, the unit tests kept beside what they test, is not
//!   counted) unless its module doc (`//!`) says why, on a line holding `long:` and a
//!   reason, e.g. `//! long: one state machine; its states read best side by side`.
//!
//! What counts as an import: every path that starts with `crate::` (or `super::` reaching
//! another stage) in a `use` item, in code, and in macro invocations (`matches!(x,
//! crate::plan::Action::Create)`), and names the crate root re-exports (`crate::Address`
//! is `address`). Doc comments don't count (links there are not dependencies), nor do
//! `#[cfg(test)]` modules (a test may reach across stages). `cli/` and `main.rs` are the
//! binary, which may use every stage, and are not read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Library files longer than this must say why in their module doc.
const MAX_LINES: usize = 900;

/// The library's source folder.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library file: `src/**/*.rs` except the binary (`main.rs`, `cli/`), sorted.
fn library_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            let rel = path.strip_prefix(src()).unwrap();
            if rel == Path::new("cli") || rel == Path::new("main.rs") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file: `src/backend/store/mod.rs` is `["backend", "store"]`,
/// `src/plan.rs` is `["plan"]`, `src/lib.rs` is `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The node of the graph a module belongs to: its top-level module, except under
/// `backend/`, where each backend (`backend::kubernetes`, …) is a node of its own.
fn node_of(module: &[String]) -> Option<String> {
    match module {
        [] => None,
        [first, second, ..] if first == "backend" => Some(format!("backend::{second}")),
        [first, ..] => Some(first.clone()),
    }
}

/// The crate root's re-exports: `pub use address::{Address, Kind}` maps `Address` and
/// `Kind` to `address`, so that `crate::Address` counts as an import of `address`.
fn root_reexports() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let file = syn::parse_file(&text).expect("lib.rs parses");
    let mut out = BTreeMap::new();
    for item in file.items {
        if let syn::Item::Use(u) = item {
            let mut leaves = Vec::new();
            flatten_use(&u.tree, &mut Vec::new(), &mut leaves);
            for path in leaves {
                if let (Some(module), Some(name)) = (path.first(), path.last()) {
                    out.insert(name.clone(), module.clone());
                }
            }
        }
    }
    out
}

/// The full paths a `use` tree names: `a::{b, c::d}` gives `a::b` and `a::c::d`.
fn flatten_use(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        // `a::{self, b}`: `self` is `a` itself.
        syn::UseTree::Name(n) if n.ident == "self" => out.push(prefix.clone()),
        syn::UseTree::Name(n) => out.push([prefix.clone(), vec![n.ident.to_string()]].concat()),
        syn::UseTree::Rename(r) => out.push([prefix.clone(), vec![r.ident.to_string()]].concat()),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                flatten_use(tree, prefix, out);
            }
        }
    }
}

/// Collects the paths a file names, as lists of segments (`crate::plan::Plan` is
/// `["crate", "plan", "Plan"]`), each with the inline modules (`mod x { … }`) it sits in,
/// which `super::` counts from. Only paths starting with `crate`, `super` or `self` are
/// of interest; the others are kept and dropped later.
#[derive(Default)]
struct Paths {
    /// (inline modules, path).
    found: Vec<(Vec<String>, Vec<String>)>,
    /// The inline modules the visitor is in.
    inline: Vec<String>,
}

impl Paths {
    fn push(&mut self, path: Vec<String>) {
        self.found.push((self.inline.clone(), path));
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let test_only = m.attrs.iter().any(|a| {
            a.path().is_ident("cfg")
                && a.meta
                    .require_list()
                    .is_ok_and(|l| l.tokens.to_string() == "test")
        });
        if !test_only {
            self.inline.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.inline.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        flatten_use(&u.tree, &mut Vec::new(), &mut paths);
        for path in paths {
            self.push(path);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let mut paths = Vec::new();
        paths_in_tokens(m.tokens.clone(), &mut paths);
        for path in paths {
            self.push(path);
        }
        syn::visit::visit_macro(self, m);
    }
}

/// Finds `crate::a::b` (and `super::…`) in a macro's tokens, which syn leaves unparsed.
fn paths_in_tokens(tokens: TokenStream, out: &mut Vec<Vec<String>>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(g) => paths_in_tokens(g.stream(), out),
            TokenTree::Ident(id) if id == "crate" || id == "super" => {
                // An identifier, then `::` (two `:` puncts) and an identifier, repeated.
                let mut path = vec![id.to_string()];
                let mut j = i + 1;
                while let (
                    Some(TokenTree::Punct(a)),
                    Some(TokenTree::Punct(b)),
                    Some(TokenTree::Ident(next)),
                ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                {
                    if a.as_char() != ':' || b.as_char() != ':' {
                        break;
                    }
                    path.push(next.to_string());
                    j += 3;
                }
                out.push(path);
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Turns a path named in `module` into the module path it reaches, when it reaches into
/// the crate: `crate::plan::Plan` → `plan::Plan`, `super::x` from `a::b` → `a::x`.
fn resolve(
    module: &[String],
    path: &[String],
    reexports: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    let (mut base, rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (module.to_vec(), &path[1..]),
        Some("super") => {
            let mut base = module.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        _ => return None,
    };
    if base.is_empty() {
        // At the crate root, a re-exported name stands for its module.
        if let Some(module) = rest.first().and_then(|name| reexports.get(name)) {
            return Some(vec![module.clone()]);
        }
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// An edge of the graph with one place that makes it, for the failure message.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The import graph between nodes, each edge with the first file and path that makes it.
fn import_graph() -> Graph {
    let reexports = root_reexports();
    let mut graph = Graph::new();
    for file in library_files() {
        let module = module_of(&file);
        let Some(from) = node_of(&module) else {
            continue; // lib.rs: the crate root declares and re-exports every module.
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
        let mut paths = Paths::default();
        paths.visit_file(&parsed);
        graph.entry(from.clone()).or_default();
        for (inline, path) in paths.found {
            let here = [module.clone(), inline].concat();
            let Some(target) = resolve(&here, &path, &reexports) else {
                continue;
            };
            let Some(to) = node_of(&target) else { continue };
            if to != from {
                let rel = file.strip_prefix(src()).unwrap().display().to_string();
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("src/{rel}: {}", path.join("::")));
            }
        }
    }
    graph
}

/// The nodes `start` reaches by following edges.
fn reachable(graph: &Graph, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<&str> = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            if seen.insert(next.clone()) {
                queue.push_back(next);
            }
        }
    }
    seen
}

/// The shortest cycle through `start`, as the nodes in order (`start` first), found by a
/// breadth-first search back to it.
fn shortest_cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue: VecDeque<String> = VecDeque::from([start.to_string()]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(&node).into_iter().flat_map(|edges| edges.keys()) {
            if next == start {
                let mut cycle = vec![node.clone()];
                while let Some(prev) = came_from.get(cycle.last().unwrap()) {
                    cycle.push(prev.clone());
                }
                cycle.reverse();
                return Some(cycle);
            }
            if !came_from.contains_key(next) {
                came_from.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

#[test]
fn stage_modules_import_no_cycle() {
    let graph = import_graph();
    // Nodes that reach each other are in one cycle (a strongly connected component).
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut problems = Vec::new();
    for node in graph.keys() {
        if reported.contains(node) {
            continue;
        }
        let from_node = reachable(&graph, node);
        if !from_node.contains(node) {
            continue;
        }
        let component: BTreeSet<String> = from_node
            .iter()
            .filter(|other| reachable(&graph, other).contains(node))
            .cloned()
            .collect();
        reported.extend(component.iter().cloned());
        let cycle = shortest_cycle(&graph, node).expect("the node reaches itself");
        let mut text = format!(
            "{} modules import each other: {}\n  for example {} → {node}:",
            component.len(),
            component.iter().cloned().collect::<Vec<_>>().join(", "),
            cycle.join(" → "),
        );
        for (i, from) in cycle.iter().enumerate() {
            let to = &cycle[(i + 1) % cycle.len()];
            text.push_str(&format!("\n    {from} → {to}  ({})", graph[from][to]));
        }
        // Every import inside the cycle: breaking any one may not be enough.
        text.push_str("\n  all imports among them:");
        for from in &component {
            for (to, place) in &graph[from] {
                if component.contains(to) {
                    text.push_str(&format!("\n    {from} → {to}  ({place})"));
                }
            }
        }
        problems.push(text);
    }
    assert!(
        problems.is_empty(),
        "import cycles among the library's modules:\n{}",
        problems.join("\n")
    );
}

#[test]
fn library_files_are_short() {
    let mut long = Vec::new();
    for file in library_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        // Up to the unit tests, when they close the file.
        let lines = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        if lines <= MAX_LINES {
            continue;
        }
        // `//! long: <reason>` in the module doc, with a reason of a few words.
        let explained = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .filter_map(|l| l.split_once("long:"))
            .any(|(_, reason)| reason.trim().len() >= 10);
        if !explained {
            let rel = file.strip_prefix(src()).unwrap().display().to_string();
            long.push(format!("  src/{rel}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "library files over {MAX_LINES} lines of code without `//! long: <reason>` in their module doc \
         (split them along their seams, or say why not):\n{}",
        long.join("\n")
    );
}

/// The checker itself, on made-up modules: it must find what it is meant to find.
mod checker {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string(), format!("src/{from}.rs"));
            g.entry(to.to_string()).or_default();
        }
        g
    }

    #[test]
    fn finds_the_shortest_cycle() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("b", "a"), ("c", "d")]);
        assert_eq!(shortest_cycle(&g, "a").unwrap(), ["a", "b"]);
        assert_eq!(shortest_cycle(&g, "d"), None);
    }

    #[test]
    fn resolves_crate_super_and_reexported_paths() {
        let reexports = BTreeMap::from([("Address".to_string(), "address".to_string())]);
        let here = [
            "backend".to_string(),
            "kubernetes".to_string(),
            "diff".to_string(),
        ];
        let path = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
        let node = |p: &str| resolve(&here, &path(p), &reexports).and_then(|m| node_of(&m));
        assert_eq!(node("crate::plan::FieldChange").as_deref(), Some("plan"));
        assert_eq!(node("crate::Address").as_deref(), Some("address"));
        assert_eq!(
            node("super::objects::render").as_deref(),
            Some("backend::kubernetes")
        );
        assert_eq!(
            node("super::super::store::Store").as_deref(),
            Some("backend::store")
        );
        assert_eq!(node("std::fmt::Debug"), None);
    }

    #[test]
    fn reads_paths_in_code_uses_and_macros_but_not_test_modules() {
        let file: syn::File = syn::parse_str(
            "use crate::{plan::{Action, Plan}, policy};\n\
             fn f(a: crate::events::Event) -> bool { matches!(a, crate::rollout::Step::One) }\n\
             #[cfg(test)] mod tests { use crate::apply::Applier; }",
        )
        .unwrap();
        let mut paths = Paths::default();
        paths.visit_file(&file);
        let found: BTreeSet<String> = paths
            .found
            .iter()
            .filter(|(_, p)| p[0] == "crate")
            .map(|(_, p)| p[1].clone())
            .collect();
        assert_eq!(
            found,
            BTreeSet::from(["events", "plan", "policy", "rollout"].map(String::from))
        );
    }
}

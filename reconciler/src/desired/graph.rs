//! Apply order: a topological sort of the dependency graph that breaks ties by address,
//! and the cycle report when there is no such order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::Resource;
use crate::address::Address;
use crate::diagnostics::{Diagnostic, Diagnostics, Location};
use crate::manifest::Snapshot;

/// Returns resource indices in apply order. Resources caught in a cycle are reported and
/// left out.
pub(super) fn order(
    snapshot: &Snapshot,
    resources: &[Resource],
    index: &HashMap<Address, usize>,
    diagnostics: &mut Diagnostics,
) -> Vec<usize> {
    let n = resources.len();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in resources.iter().enumerate() {
        for dep in ordering_edges(r) {
            if let Some(&j) = index.get(&dep.address) {
                indegree[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    // Kahn's algorithm, always taking the smallest ready address.
    let mut ready: BinaryHeap<Reverse<(&Address, usize)>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse((&resources[i].address, i)))
        .collect();
    let mut out = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = ready.pop() {
        out.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse((&resources[j].address, j)));
            }
        }
    }
    if out.len() < n {
        report_cycles(snapshot, resources, index, &indegree, diagnostics);
    }
    out
}

/// Finds one cycle in each group of resources left with unmet dependencies, and reports it
/// at the reference that closes it.
fn report_cycles(
    snapshot: &Snapshot,
    resources: &[Resource],
    index: &HashMap<Address, usize>,
    indegree: &[usize],
    diagnostics: &mut Diagnostics,
) {
    let stuck = |i: usize| indegree[i] > 0;
    let mut reported = vec![false; resources.len()];
    let mut starts: Vec<usize> = (0..resources.len()).filter(|&i| stuck(i)).collect();
    starts.sort_by(|&a, &b| resources[a].address.cmp(&resources[b].address));
    for start in starts {
        if reported[start] {
            continue;
        }
        // Walk dependencies that are themselves stuck until a node repeats.
        let mut path = vec![start];
        let mut seen_at: HashMap<usize, usize> = HashMap::from([(start, 0)]);
        let cycle = loop {
            let current = *path.last().expect("path is never empty");
            let next = ordering_edges(&resources[current])
                .filter_map(|d| index.get(&d.address).copied())
                .filter(|&j| stuck(j))
                .min_by(|&a, &b| resources[a].address.cmp(&resources[b].address));
            let Some(next) = next else { break None };
            if let Some(&pos) = seen_at.get(&next) {
                break Some(path[pos..].to_vec());
            }
            seen_at.insert(next, path.len());
            path.push(next);
        };
        for &i in &path {
            reported[i] = true;
        }
        let Some(cycle) = cycle else { continue };
        if cycle
            .iter()
            .any(|&i| reported_cycle_member(diagnostics, &resources[i]))
        {
            continue;
        }
        // Rotate so the smallest address leads: the same cycle always reads the same way.
        let lead = (0..cycle.len())
            .min_by(|&a, &b| {
                resources[cycle[a]]
                    .address
                    .cmp(&resources[cycle[b]].address)
            })
            .unwrap_or(0);
        let cycle: Vec<usize> = cycle[lead..]
            .iter()
            .chain(&cycle[..lead])
            .copied()
            .collect();
        let names: Vec<String> = cycle
            .iter()
            .chain(std::iter::once(&cycle[0]))
            .map(|&i| resources[i].address.local())
            .collect();
        let first = &resources[cycle[0]];
        let second = &resources[cycle[1 % cycle.len()]];
        let span = ordering_edges(first)
            .find(|d| d.address == second.address)
            .map_or(first.name_span.clone(), |d| d.span.clone());
        let text = snapshot.text(&first.file).unwrap_or("");
        let mut diagnostic = Diagnostic::error(
            "cycle",
            format!("dependency cycle: {}", names.join(" → ")),
        )
        .at(Location::new(&first.file, text, span))
        .label(format!("{} needs {}", first.address.local(), second.address.local()))
        .help("a job can't consume a model that (through other jobs) it produces; break the chain by pinning an input to a fixed version or removing one reference");
        for &i in &cycle[1..] {
            let r = &resources[i];
            let text = snapshot.text(&r.file).unwrap_or("");
            diagnostic = diagnostic.related(
                Location::new(&r.file, text, r.name_span.clone()),
                format!("{} is part of the cycle", r.address.local()),
            );
        }
        diagnostics.push(diagnostic);
    }
}

fn reported_cycle_member(diagnostics: &Diagnostics, resource: &Resource) -> bool {
    diagnostics.iter().any(|d| {
        d.code == "cycle"
            && d.message
                .contains(&format!(" {} ", resource.address.local()))
    })
}

/// The dependencies that order the apply. A job's pinned input names a version that
/// already exists, so it doesn't wait for (or form a cycle with) the job producing it.
fn ordering_edges(resource: &Resource) -> impl Iterator<Item = &super::Dependency> {
    let job = resource.kind() == crate::address::Kind::Job;
    resource
        .dependencies
        .iter()
        .filter(move |d| !(job && d.pin.is_some()))
}

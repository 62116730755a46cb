//! The desired state: every declared resource, resolved and validated, with its
//! dependency edges and a deterministic apply order.
//!
//! Input is a [`Snapshot`] of manifest files; output is a [`DesiredState`] or every
//! finding at once ([`Diagnostics`]). Nothing here talks to a cluster or a store: checks
//! that need live state (quota actually free, versions that exist) belong to the planner.

mod graph;
mod limits;
mod validate;

pub use limits::{MAX_INSTANCES, MAX_P99_MS, MAX_REPLICAS, MAX_RETRIES, MIN_STEP_WAIT};

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use rayon::prelude::*;
use serde::Serialize;

use crate::address::{Address, Kind};
use crate::diagnostics::Diagnostics;
use crate::manifest::{parse_file, Declared, Origin, Snapshot, Spec};

/// An edge: this resource needs `address` to exist (at version `pin`, if pinned) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub address: Address,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Where the reference was written, in the resource's file.
    #[serde(skip)]
    pub span: Range<usize>,
}

/// A resolved resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub address: Address,
    /// Manifest file it is declared in, relative to the root.
    pub file: String,
    /// Span of its name in that file.
    pub name_span: Range<usize>,
    pub spec: Spec,
    /// What must exist before it, sorted by address.
    pub dependencies: Vec<Dependency>,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.address.kind
    }
}

/// The whole desired state of one manifests root.
#[derive(Debug)]
pub struct DesiredState {
    pub origin: Origin,
    /// Workspace names, sorted.
    pub workspaces: Vec<String>,
    /// Resources in apply order: every resource comes after all its dependencies, and
    /// ties are broken by address, so the order is the same on every run.
    pub resources: Vec<Resource>,
    index: HashMap<Address, usize>,
}

impl DesiredState {
    pub fn get(&self, address: &Address) -> Option<&Resource> {
        self.index.get(address).map(|&i| &self.resources[i])
    }

    /// Returns the number of resources of each kind in each workspace.
    pub fn summary(&self) -> Summary {
        let mut workspaces: BTreeMap<String, BTreeMap<Kind, usize>> = self
            .workspaces
            .iter()
            .map(|w| (w.clone(), BTreeMap::new()))
            .collect();
        for r in &self.resources {
            if r.kind() == Kind::Workspace {
                continue;
            }
            *workspaces
                .entry(r.address.workspace.clone())
                .or_default()
                .entry(r.kind())
                .or_default() += 1;
        }
        Summary {
            resources: self.resources.len() - self.workspaces.len(),
            workspaces: workspaces
                .into_iter()
                .map(|(name, counts)| WorkspaceSummary { name, counts })
                .collect(),
        }
    }
}

/// Counts per kind per workspace, as `cairn validate` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Resources other than the workspaces themselves.
    pub resources: usize,
    pub workspaces: Vec<WorkspaceSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceSummary {
    pub name: String,
    pub counts: BTreeMap<Kind, usize>,
}

/// A valid desired state, and the warnings found on the way.
#[derive(Debug)]
pub struct Resolved {
    pub state: DesiredState,
    pub warnings: Diagnostics,
}

/// Parses, resolves and validates every manifest in `snapshot`. Returns every error at
/// once when any is found.
pub fn resolve(snapshot: &Snapshot) -> Result<Resolved, Diagnostics> {
    let parsed: Vec<_> = snapshot.files.par_iter().map(parse_file).collect();
    let mut diagnostics: Diagnostics = snapshot.problems.iter().cloned().collect();
    let mut declared: Vec<Declared> = Vec::new();
    let mut broken: std::collections::HashSet<Address> = std::collections::HashSet::new();
    for file in parsed {
        diagnostics.extend(file.diagnostics.into_iter().collect());
        declared.extend(file.resources);
        broken.extend(file.broken);
    }

    let (resources, index) = validate::check(snapshot, declared, &broken, &mut diagnostics);
    let order = graph::order(snapshot, &resources, &index, &mut diagnostics);

    diagnostics.sort();
    if diagnostics.has_errors() {
        return Err(diagnostics);
    }
    let mut slots: Vec<Option<Resource>> = resources.into_iter().map(Some).collect();
    let resources: Vec<Resource> = order
        .into_iter()
        .map(|i| {
            slots[i]
                .take()
                .expect("each resource appears once in the order")
        })
        .collect();
    let index = resources
        .iter()
        .enumerate()
        .map(|(i, r)| (r.address.clone(), i))
        .collect();
    Ok(Resolved {
        state: DesiredState {
            origin: snapshot.origin.clone(),
            workspaces: snapshot.workspaces.clone(),
            resources,
            index,
        },
        warnings: diagnostics,
    })
}

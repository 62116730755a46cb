//! What most commands start with: read the manifests, resolve them, pick workspaces and
//! open their stores. Problems become [`CommandError`]s with hints, rendered once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn::backend::kubernetes::{scopes, Clusters, KubeCompute};
use cairn::backend::local::{ChildEnv, LocalCompute, LocalMachine};
use cairn::backend::store::Store;
use cairn::backend::target::Targets;
use cairn::desired::DesiredState;
use cairn::diagnostics::did_you_mean;
use cairn::manifest::{Snapshot, Spec};

use super::{render, CommandError, ErrorKind, Output, SourceArgs};

/// Resolved manifests.
pub struct Loaded {
    pub root: PathBuf,
    pub snapshot: Snapshot,
    pub desired: DesiredState,
}

/// Loads and validates; prints findings and fails if the manifests are invalid.
pub fn load(source: &SourceArgs, output: Output) -> Result<Loaded, CommandError> {
    let snapshot = source.load()?;
    match cairn::desired::resolve(&snapshot) {
        Ok(resolved) => {
            render::diagnostics(&snapshot, &resolved.warnings, output);
            Ok(Loaded {
                root: source.root(),
                snapshot,
                desired: resolved.state,
            })
        }
        Err(diagnostics) => {
            render::diagnostics(&snapshot, &diagnostics, output);
            let n = diagnostics.error_count();
            Err(CommandError::user(format!(
                "the manifests in {} are invalid ({n} error{})",
                snapshot.origin.describe(),
                if n == 1 { "" } else { "s" }
            ))
            .hint_opt(Some(
                "fix the errors above; `cairn validate` checks without planning".into(),
            )))
        }
    }
}

/// The workspaces a command works on, with their stores.
pub struct Selection {
    pub stores: BTreeMap<String, Store>,
    /// Why some workspaces were left out (only when none were named).
    pub skipped: Vec<String>,
    /// The clusters, when a selected workspace has a `kubernetes` compute.
    pub clusters: Option<std::sync::Arc<Clusters>>,
}

/// Why a workspace can't be planned with this kubeconfig, if it can't: a context its
/// computes name is not there.
fn unreachable_cluster(desired: &DesiredState, workspace: &str) -> Option<String> {
    // Making a client reads the kubeconfig and connects to nothing. A client belongs to
    // the runtime it was made in, so this check makes its own, thrown away after.
    let clusters = Clusters::new(kube_sources());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    for scope in scopes(desired, workspace) {
        if let Err(e) = rt.block_on(clusters.client(scope.context.as_deref())) {
            return Some(e.to_string());
        }
    }
    None
}

/// Opens the stores of the named workspaces (all supported ones when none are named).
pub fn select(loaded: &Loaded, named: &[String]) -> Result<Selection, CommandError> {
    let desired = &loaded.desired;
    let mut stores = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut clusters: Option<Clusters> = None;
    let aws: std::sync::Arc<dyn cairn::backend::store::AwsChain> =
        std::sync::Arc::new(super::aws::DefaultChain::from_env());
    let names: Vec<String> = if named.is_empty() {
        desired.workspaces.clone()
    } else {
        for name in named {
            if !desired.workspaces.contains(name) {
                return Err(
                    CommandError::user(format!("there is no workspace `{name}`")).hint_opt(Some(
                        match did_you_mean(name, desired.workspaces.iter().map(String::as_str)) {
                            Some(best) => format!("did you mean `{best}`?"),
                            None => format!("workspaces: {}", desired.workspaces.join(", ")),
                        },
                    )),
                );
            }
        }
        named.to_vec()
    };
    for name in names {
        if !scopes(desired, &name).is_empty() {
            clusters.get_or_insert_with(|| Clusters::new(kube_sources()));
            if let Some(why) = unreachable_cluster(desired, &name) {
                if named.is_empty() {
                    skipped.push(format!(
                        "workspace `{name}` is not planned: {why} (name it with `-w {name}` to see why)"
                    ));
                    continue;
                }
                return Err(CommandError::user(format!(
                    "workspace `{name}` can't be planned: {why}"
                ))
                .hint_opt(Some(
                    "add the context to your kubeconfig (`KUBECONFIG` or ~/.kube/config), or point the compute's `context` at one it has".into(),
                )));
            }
        }
        let Some(Spec::Workspace(spec)) = desired
            .get(&cairn::Address::workspace(name.clone()))
            .map(|r| &r.spec)
        else {
            continue;
        };
        let options = cairn::backend::store::StoreOptions {
            endpoint: spec.endpoint.as_ref().map(|e| e.get_ref().clone()),
            region: spec.region.clone(),
            path_style: spec.path_style,
            aws: Some(aws.clone()),
        };
        let mut store =
            Store::open_with(spec.store_url(), &loaded.root, &options).map_err(|e| {
                CommandError::new(
                    super::store_kind(&e),
                    format!(
                        "cannot open the store of workspace `{name}`: {}",
                        cairn::diagnostics::error_chain(&e)
                    ),
                )
            })?;
        if !spec.store_url().starts_with("file://") {
            // A remote state is checked by etag, not read again, when it did not change.
            let id = cairn::content::short_hash(store.url().as_bytes());
            store = store.with_state_cache(
                local_dir(&loaded.root)
                    .join("cache")
                    .join(format!("state-{name}-{id}.json")),
            );
        }
        stores.insert(name, store);
    }
    if stores.is_empty() {
        let mut err = CommandError::user("no workspace can be planned");
        err.hints.extend(skipped);
        return Err(err);
    }
    Ok(Selection {
        stores,
        skipped,
        clusters: clusters.map(std::sync::Arc::new),
    })
}

/// `<root>/.cairn`: caches and scratch space, never committed.
pub fn local_dir(root: &std::path::Path) -> PathBuf {
    root.join(".cairn")
}

/// The fingerprint → SHA-256 cache of source files: `<root>/.cairn/cache/content.json`.
pub fn hash_cache(root: &std::path::Path) -> cairn::content::HashCache {
    cairn::content::HashCache::load(&local_dir(root).join("cache").join("content.json"))
}

/// The local supervisor's folder: `<root>/.cairn/serving`.
pub fn serving_dir(root: &std::path::Path) -> PathBuf {
    local_dir(root).join(cairn::backend::local::endpoints::SERVING_DIR)
}

/// Serving on this machine for the manifests at `loaded.root`; `stores` hold the model
/// versions to serve.
pub fn local_serving(
    loaded: &Loaded,
    stores: std::collections::BTreeMap<String, cairn::backend::store::Store>,
) -> cairn::backend::local::endpoints::LocalEndpoints {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn"));
    cairn::backend::local::endpoints::LocalEndpoints::new(
        &serving_dir(&loaded.root),
        &program,
        stores,
    )
    .with_child_env(cairn::backend::local::child_env::ChildEnv::allowed(
        std::env::vars_os(),
    ))
}

/// The compute targets of a command on the selected workspaces: this machine (jobs run
/// under `<root>/.cairn/work`, endpoints served from `stores`), and the clusters when a
/// selected workspace uses Kubernetes. Not observed yet ([`observe`]).
pub fn targets(loaded: &Loaded, selection: &Selection, stores: BTreeMap<String, Store>) -> Targets {
    // Looking for GPUs loads the CUDA driver library; only do it when a job wants GPUs.
    let wants_gpus = loaded
        .desired
        .resources
        .iter()
        .any(|r| matches!(&r.spec, Spec::Job(j) if j.gpus() > 0));
    let machine = if wants_gpus {
        LocalMachine::detect()
    } else {
        LocalMachine::with_gpus(Vec::new())
    };
    let work = local_dir(&loaded.root).join("work");
    let local = LocalCompute::new(
        machine,
        Some(local_serving(loaded, stores)),
        std::path::absolute(&work).unwrap_or(work),
        // Job processes get the allow-listed variables only, never Cairn's credentials.
        ChildEnv::allowed(std::env::vars_os()),
    );
    let mut targets = Targets::new().with(Box::new(local));
    if let Some(clusters) = &selection.clusters {
        targets = targets.with(Box::new(KubeCompute::new(Some(clusters.clone()))));
    }
    targets
}

/// Observes what the targets run for the selected workspaces, before planning.
pub fn observe(
    rt: &tokio::runtime::Runtime,
    targets: &Targets,
    loaded: &Loaded,
    selection: &Selection,
) -> Result<(), CommandError> {
    let workspaces: Vec<String> = selection.stores.keys().cloned().collect();
    rt.block_on(targets.observe(&loaded.desired, &workspaces))
        .map_err(|e| CommandError::from_error(ErrorKind::Target, &e).hint_opt(e.hint()))
}

/// Where the kubeconfig is looked for, from the environment as kubectl reads it.
fn kube_sources() -> cairn::backend::kubernetes::cluster::KubeconfigSources {
    cairn::backend::kubernetes::cluster::KubeconfigSources {
        kubeconfig: std::env::var_os("KUBECONFIG"),
        home: std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from),
        in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    }
}

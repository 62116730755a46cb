//! Coherent repositories with a few defects: every workspace is built to validate
//! (references point at declared resources of the right kind, GPU requests fit, traffic
//! adds up, ports are unique), then 0–3 defects are applied at the model level: a field
//! set to a wrong, extreme or dangling value, a nested entry changed or added, a field
//! removed, a resource renamed (possibly onto another's name). This reaches the checks
//! that only run on otherwise valid input (quotas, lineage, cycles, apply order), and the
//! success path itself.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::repo::Repo;
use crate::structured::{self as st, Field, Item, Style, V};

/// Names given to the resources of each kind, in order: the same pool the structured
/// strategy draws references from, so a defect's reference often hits something.
const NAMES: &[&str] = &["a", "b", "main", "gpu-east", "loans", "x1"];

#[derive(Debug, Clone)]
struct ComputePlan {
    kube: bool,
    types: Vec<(&'static str, u32)>,
    max_gpus: Option<u32>,
    roles: Option<Vec<&'static str>>,
    idle: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct DatasetPlan {
    source: &'static str,
    format: &'static str,
    pii: bool,
}

#[derive(Debug, Clone)]
struct JobPlan {
    compute: Index,
    instance_type: Option<Index>,
    gpus: u32,
    instances: u32,
    /// (which dataset or earlier model, read a model?, pinned?)
    inputs: Vec<(Index, bool, bool)>,
    timeout: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct DeploymentPlan {
    model: Index,
    pinned: bool,
    replicas: u32,
    gpus: u32,
    instance_type: bool,
}

#[derive(Debug, Clone)]
struct EndpointPlan {
    compute: Index,
    auth: &'static str,
    deployments: Vec<DeploymentPlan>,
    split: Index,
    mirror: Option<u32>,
    rollout: Option<Index>,
}

#[derive(Debug, Clone)]
struct WorkspacePlan {
    name: &'static str,
    environment: &'static str,
    store: &'static str,
    computes: Vec<ComputePlan>,
    datasets: Vec<DatasetPlan>,
    jobs: Vec<JobPlan>,
    imported: Vec<&'static str>,
    endpoints: Vec<EndpointPlan>,
    files: usize,
    placement: Vec<Index>,
    style: Style,
}

#[derive(Debug, Clone)]
enum Defect {
    Set {
        item: Index,
        key: &'static str,
        value: V,
    },
    SetNested {
        item: Index,
        table: &'static str,
        entry: Index,
        key: &'static str,
        value: V,
    },
    AddEntry {
        item: Index,
        table: &'static str,
        key: String,
        value: V,
    },
    Remove {
        item: Index,
        field: Index,
    },
    Rename {
        item: Index,
        name: String,
    },
    /// Sets replicas and GPUs of every deployment of an endpoint (instances and GPUs of a
    /// job) to boundary values: GPU arithmetic must not overflow.
    Scale {
        item: Index,
        units: u32,
        gpus: u32,
    },
}

fn compute_plan() -> impl Strategy<Value = ComputePlan> {
    let types = prop::sample::subsequence(vec![("a100", 8u32), ("t4", 1), ("cpu-large", 0)], 0..=3);
    (
        any::<bool>(),
        types,
        prop::option::weighted(0.6, select(vec![0u32, 4, 16, 64, 1000])),
        prop::option::weighted(
            0.4,
            select(vec![vec!["train"], vec!["serve"], vec!["train", "serve"]]),
        ),
        prop::option::of(select(vec!["30m", "1h", "15m"])),
    )
        .prop_map(|(kube, types, max_gpus, roles, idle)| ComputePlan {
            kube,
            types: if kube { types } else { Vec::new() },
            max_gpus,
            roles,
            idle,
        })
}

fn dataset_plan() -> impl Strategy<Value = DatasetPlan> {
    (
        select(vec![
            "data/d1/",
            "data/d2",
            "data/d1/file.csv",
            "s3://bucket-1/data",
            "./data/../data/d1",
        ]),
        select(vec!["csv", "parquet", "images", "jsonl"]),
        any::<bool>(),
    )
        .prop_map(|(source, format, pii)| DatasetPlan {
            source,
            format,
            pii,
        })
}

fn job_plan() -> impl Strategy<Value = JobPlan> {
    (
        any::<Index>(),
        prop::option::of(any::<Index>()),
        0u32..=4,
        1u32..=2,
        vec(
            (
                any::<Index>(),
                prop::bool::weighted(0.3),
                prop::bool::weighted(0.3),
            ),
            0..4,
        ),
        prop::option::of(select(vec!["20m", "6h", "1h30m"])),
    )
        .prop_map(
            |(compute, instance_type, gpus, instances, inputs, timeout)| JobPlan {
                compute,
                instance_type,
                gpus,
                instances,
                inputs,
                timeout,
            },
        )
}

fn deployment_plan() -> impl Strategy<Value = DeploymentPlan> {
    (
        any::<Index>(),
        prop::bool::weighted(0.3),
        0u32..=3,
        0u32..=1,
        any::<bool>(),
    )
        .prop_map(
            |(model, pinned, replicas, gpus, instance_type)| DeploymentPlan {
                model,
                pinned,
                replicas,
                gpus,
                instance_type,
            },
        )
}

fn endpoint_plan() -> impl Strategy<Value = EndpointPlan> {
    (
        any::<Index>(),
        select(vec!["key", "token", "none"]),
        vec(deployment_plan(), 1..4),
        any::<Index>(),
        prop::option::weighted(0.3, 1u32..=50),
        prop::option::weighted(0.6, any::<Index>()),
    )
        .prop_map(
            |(compute, auth, deployments, split, mirror, rollout)| EndpointPlan {
                compute,
                auth,
                deployments,
                split,
                mirror,
                rollout,
            },
        )
}

fn workspace_plan() -> impl Strategy<Value = WorkspacePlan> {
    (
        select(vec!["ws", "fraud", "credit-risk"]),
        select(vec!["dev", "staging", "production"]),
        select(vec![
            "file://.cairn/store",
            "s3://bank-ml/ws",
            "file:///var/cairn",
        ]),
        vec(compute_plan(), 1..4),
        vec(dataset_plan(), 0..5),
        vec(job_plan(), 0..5),
        vec(select(vec!["models/m1", "s3://bucket-1/models/x"]), 0..2),
        vec(endpoint_plan(), 0..4),
        1usize..5,
        vec(any::<Index>(), 40),
        st::style(),
    )
        .prop_map(
            |(
                name,
                environment,
                store,
                computes,
                datasets,
                jobs,
                imported,
                endpoints,
                files,
                placement,
                style,
            )| {
                WorkspacePlan {
                    name,
                    environment,
                    store,
                    computes,
                    datasets,
                    jobs,
                    imported,
                    endpoints,
                    files,
                    placement,
                    style,
                }
            },
        )
}

const KEYS: &[&str] = &[
    "target",
    "max_gpus",
    "roles",
    "instance_types",
    "namespace",
    "context",
    "source",
    "format",
    "version",
    "compute",
    "instance_type",
    "image",
    "command",
    "inputs",
    "outputs",
    "gpus",
    "instances",
    "timeout",
    "retries",
    "from_job",
    "auth",
    "port",
    "deployments",
    "traffic",
    "mirror",
    "rollout",
    "idle_shutdown",
    "region",
    "description",
    "tags",
    "env",
    "gateway",
];
const TABLES: &[&str] = &[
    "deployments",
    "traffic",
    "mirror",
    "rollout",
    "inputs",
    "outputs",
    "instance_types",
];
const SUB_KEYS: &[&str] = &[
    "model",
    "replicas",
    "gpus",
    "instance_type",
    "image",
    "steps",
    "max_error_rate",
    "max_p99_ms",
    "step_wait",
    "cpu",
    "memory",
];

fn defect_value() -> BoxedStrategy<V> {
    prop_oneof![
        3 => st::reference(&["compute", "dataset", "job", "model", "endpoint"]),
        3 => st::count(),
        2 => st::percent(),
        1 => st::duration(),
        1 => st::quantity(),
        1 => st::source(),
        1 => st::text(),
        2 => st::wrong(),
        1 => select(vec!["local", "kubernetes", "csv", "onnx", "none", "a100", "t4", "blue", "green"])
            .prop_map(|s| V::Str(s.to_string())),
    ]
    .boxed()
}

fn defect() -> BoxedStrategy<Defect> {
    prop_oneof![
        4 => (any::<Index>(), select(KEYS), defect_value())
            .prop_map(|(item, key, value)| Defect::Set { item, key, value }),
        4 => (any::<Index>(), select(TABLES), any::<Index>(), select(SUB_KEYS), defect_value())
            .prop_map(|(item, table, entry, key, value)| Defect::SetNested { item, table, entry, key, value }),
        2 => (any::<Index>(), select(TABLES), select(vec!["blue", "green", "ghost", "data", "model", "t4", "Bad_Key", ""]), defect_value())
            .prop_map(|(item, table, key, value)| Defect::AddEntry { item, table, key: key.to_string(), value }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(item, field)| Defect::Remove { item, field }),
        1 => (any::<Index>(), st::name()).prop_map(|(item, name)| Defect::Rename { item, name }),
        1 => (any::<Index>(), boundary(), boundary()).prop_map(|(item, units, gpus)| Defect::Scale { item, units, gpus }),
    ]
    .boxed()
}

fn boundary() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => 0u32..=4,
        1 => select(vec![1 << 16, 1 << 31, u32::MAX / 2 + 1, u32::MAX - 1, u32::MAX]),
        1 => any::<u32>(),
    ]
}

fn v(text: &str) -> V {
    V::Str(text.to_string())
}

fn int(n: u32) -> V {
    V::Int(n.into())
}

fn has_role(c: &ComputePlan, role: &str) -> bool {
    c.roles.as_ref().is_none_or(|r| r.contains(&role))
}

fn no_gpus(c: &ComputePlan) -> bool {
    c.max_gpus == Some(0) || (!c.types.is_empty() && c.types.iter().all(|(_, g)| *g == 0))
}

/// Picks a compute with `role` (by `which`), or any compute when none has it.
fn pick_compute<'a>(
    computes: &'a [ComputePlan],
    which: &Index,
    role: &str,
) -> (usize, &'a ComputePlan) {
    let with_role: Vec<usize> = (0..computes.len())
        .filter(|&i| has_role(&computes[i], role))
        .collect();
    let i = if with_role.is_empty() {
        which.index(computes.len())
    } else {
        *which.get(&with_role)
    };
    (i, &computes[i])
}

/// Builds the items (resources) of one workspace, each with the file it goes in.
fn build(plan: &WorkspacePlan, next_port: &mut u32) -> Vec<Item> {
    let mut items = Vec::new();
    let res = |kind: &str, i: usize, fields: Vec<Field>| Item::Resource {
        kind: kind.to_string(),
        name: NAMES[i % NAMES.len()].to_string() + &"-n".repeat(i / NAMES.len()),
        fields,
    };
    let name_of = |i: usize| NAMES[i % NAMES.len()].to_string() + &"-n".repeat(i / NAMES.len());

    for (i, c) in plan.computes.iter().enumerate() {
        let mut f: Vec<Field> = vec![(
            "target".into(),
            v(if c.kube { "kubernetes" } else { "local" }),
        )];
        if c.kube {
            f.push(("context".into(), v("kind-test")));
            if !c.types.is_empty() {
                let types = c
                    .types
                    .iter()
                    .map(|(name, gpus)| {
                        let mut t: Vec<Field> =
                            vec![("cpu".into(), v("8")), ("memory".into(), v("32Gi"))];
                        if *gpus > 0 {
                            t.push(("gpus".into(), int(*gpus)));
                            t.push(("gpu_type".into(), v("nvidia-test")));
                        }
                        (name.to_string(), V::Table(t))
                    })
                    .collect();
                f.push(("instance_types".into(), V::Table(types)));
            }
        }
        if let Some(m) = c.max_gpus {
            f.push(("max_gpus".into(), int(m)));
        }
        if let Some(roles) = &c.roles {
            f.push(("roles".into(), V::Arr(roles.iter().map(|r| v(r)).collect())));
        }
        if let Some(idle) = c.idle {
            f.push(("idle_shutdown".into(), v(idle)));
        }
        items.push(res("compute", i, f));
    }

    for (i, d) in plan.datasets.iter().enumerate() {
        let mut f: Vec<Field> = vec![
            ("source".into(), v(d.source)),
            ("format".into(), v(d.format)),
        ];
        if d.pii {
            f.push((
                "tags".into(),
                V::Table(vec![
                    ("pii".into(), v("true")),
                    ("region".into(), v("eu-west")),
                ]),
            ));
        }
        items.push(res("dataset", i, f));
    }

    // Jobs and the models they produce share a name: job.a → model.a.
    for (j, job) in plan.jobs.iter().enumerate() {
        let (ci, c) = pick_compute(&plan.computes, &job.compute, "train");
        let mut f: Vec<Field> = vec![("compute".into(), v(&format!("compute.{}", name_of(ci))))];
        let mut type_gpus = None;
        if let (true, Some(which)) = (c.kube && !c.types.is_empty(), &job.instance_type) {
            let (t, g) = which.get(&c.types);
            f.push(("instance_type".into(), v(t)));
            type_gpus = Some(*g);
        }
        let mut gpus = job.gpus;
        if no_gpus(c) {
            gpus = 0;
        }
        if let Some(t) = type_gpus {
            gpus = gpus.min(t);
        }
        if c.max_gpus.is_some_and(|q| gpus * job.instances > q) {
            gpus = 0;
        }
        if c.kube {
            f.push(("image".into(), v("registry.example/trainer:1")));
        }
        let mut inputs: Vec<Field> = Vec::new();
        for (k, (which, model, pinned)) in job.inputs.iter().enumerate() {
            let target = if *model && j > 0 {
                let m = which.index(j);
                format!(
                    "model.{}{}",
                    name_of(m),
                    if *pinned { "@3f9a2c1" } else { "" }
                )
            } else if !plan.datasets.is_empty() {
                format!("dataset.{}", name_of(which.index(plan.datasets.len())))
            } else {
                continue;
            };
            inputs.push((format!("in{k}"), V::Str(target)));
        }
        let mut command = vec![
            v("python"),
            v("train.py"),
            v("--out"),
            v("{{ outputs.model }}"),
        ];
        if let Some((first, _)) = inputs.first() {
            command.push(V::Str(format!("{{{{ inputs.{first} }}}}")));
        }
        f.push(("command".into(), V::Arr(command)));
        if !inputs.is_empty() {
            f.push(("inputs".into(), V::Table(inputs)));
        }
        f.push((
            "outputs".into(),
            V::Table(vec![(
                "model".into(),
                V::Str(format!("model.{}", name_of(j))),
            )]),
        ));
        f.push(("gpus".into(), int(gpus)));
        if job.instances != 1 {
            f.push(("instances".into(), int(job.instances)));
        }
        if let Some(t) = job.timeout {
            f.push(("timeout".into(), v(t)));
        }
        items.push(res("job", j, f));
        items.push(res(
            "model",
            j,
            vec![
                ("from_job".into(), V::Str(format!("job.{}", name_of(j)))),
                ("format".into(), v("onnx")),
            ],
        ));
    }
    let models = plan.jobs.len() + plan.imported.len();
    for (k, source) in plan.imported.iter().enumerate() {
        items.push(res(
            "model",
            plan.jobs.len() + k,
            vec![
                ("source".into(), v(source)),
                ("format".into(), v("safetensors")),
            ],
        ));
    }

    let mut serving = std::collections::HashMap::new();
    if models > 0 {
        for (e, ep) in plan.endpoints.iter().enumerate() {
            let (ci, c) = pick_compute(&plan.computes, &ep.compute, "serve");
            let mut f: Vec<Field> = vec![
                ("compute".into(), v(&format!("compute.{}", name_of(ci)))),
                ("auth".into(), v(ep.auth)),
            ];
            if !c.kube || *next_port % 2 == 0 {
                f.push(("port".into(), int(*next_port)));
            }
            *next_port += 1;
            let names = ["blue", "green", "canary"];
            let n = ep.deployments.len();
            let splits: &[&[u32]] = match n {
                1 => &[&[100], &[0]],
                2 => &[&[100, 0], &[90, 10], &[50, 50], &[0, 100], &[0, 0]],
                _ => &[&[100, 0, 0], &[80, 10, 10], &[34, 33, 33], &[0, 0, 100]],
            };
            let split = ep.split.get(splits);
            let mut deployments = Vec::new();
            for (k, d) in ep.deployments.iter().enumerate() {
                let m = d.model.index(models);
                let mut t: Vec<Field> = vec![(
                    "model".into(),
                    V::Str(format!(
                        "model.{}{}",
                        name_of(m),
                        if d.pinned { "@4c1d9e2" } else { "" }
                    )),
                )];
                let replicas = if split[k] > 0 {
                    d.replicas.max(1)
                } else {
                    d.replicas
                };
                t.push(("replicas".into(), int(replicas)));
                let mut gpus = d.gpus;
                if c.kube && d.instance_type && !c.types.is_empty() {
                    let (tn, tg) = c.types[k % c.types.len()];
                    t.push(("instance_type".into(), v(tn)));
                    gpus = gpus.min(tg);
                }
                // Serving needs room for every deployment plus the largest one again
                // during a rollout: keep each compute's serving GPUs within half its quota.
                let used = serving.entry(ci).or_insert(0u64);
                let want = u64::from(gpus) * u64::from(replicas);
                if no_gpus(c) || c.max_gpus.is_some_and(|q| *used + want > u64::from(q) / 2) {
                    gpus = 0;
                }
                *used += u64::from(gpus) * u64::from(replicas);
                t.push(("gpus".into(), int(gpus)));
                deployments.push((names[k].to_string(), V::Table(t)));
            }
            f.push(("deployments".into(), V::Table(deployments)));
            f.push((
                "traffic".into(),
                V::Table(
                    names
                        .iter()
                        .zip(split.iter())
                        .map(|(n, w)| (n.to_string(), int(*w)))
                        .collect(),
                ),
            ));
            if let Some(percent) = ep.mirror {
                if let Some(k) = (0..n).find(|&k| split[k] == 0) {
                    f.push((
                        "mirror".into(),
                        V::Table(vec![(names[k].to_string(), int(percent))]),
                    ));
                }
            }
            if let Some(which) = &ep.rollout {
                const STEPS: [&[u32]; 3] = [&[10, 50, 100], &[100], &[5, 25, 50, 100]];
                let steps = STEPS[which.index(STEPS.len())];
                f.push((
                    "rollout".into(),
                    V::Table(vec![
                        (
                            "steps".into(),
                            V::Arr(steps.iter().map(|s| int(*s)).collect()),
                        ),
                        ("step_wait".into(), v("30s")),
                        ("max_error_rate".into(), V::Float(0.01)),
                        ("max_p99_ms".into(), int(250)),
                        ("auto_rollback".into(), V::Bool(true)),
                    ]),
                ));
            }
            items.push(res("endpoint", e, f));
        }
    }
    items
}

fn set(fields: &mut Vec<Field>, key: &str, value: V) {
    match fields.iter_mut().find(|(k, _)| k == key) {
        Some((_, slot)) => *slot = value,
        None => fields.push((key.to_string(), value)),
    }
}

fn apply(items: &mut [Item], defect: &Defect) {
    if items.is_empty() {
        return;
    }
    let pick = |item: &Index| item.index(items.len());
    match defect {
        Defect::Set { item, key, value } => {
            if let Item::Resource { fields, .. } = &mut items[pick(item)] {
                set(fields, key, value.clone());
            }
        }
        Defect::SetNested {
            item,
            table,
            entry,
            key,
            value,
        } => {
            if let Item::Resource { fields, .. } = &mut items[pick(item)] {
                if let Some((_, V::Table(entries))) = fields.iter_mut().find(|(k, _)| k == table) {
                    if entries.is_empty() {
                        return;
                    }
                    let i = entry.index(entries.len());
                    match &mut entries[i].1 {
                        V::Table(sub) => set(sub, key, value.clone()),
                        slot => *slot = value.clone(),
                    }
                }
            }
        }
        Defect::AddEntry {
            item,
            table,
            key,
            value,
        } => {
            if let Item::Resource { fields, .. } = &mut items[pick(item)] {
                match fields.iter_mut().find(|(k, _)| k == table) {
                    Some((_, V::Table(entries))) => set(entries, key, value.clone()),
                    Some(_) => {}
                    None => fields.push((
                        table.to_string(),
                        V::Table(vec![(key.clone(), value.clone())]),
                    )),
                }
            }
        }
        Defect::Remove { item, field } => {
            if let Item::Resource { fields, .. } = &mut items[pick(item)] {
                if !fields.is_empty() {
                    let i = field.index(fields.len());
                    fields.remove(i);
                }
            }
        }
        Defect::Scale { item, units, gpus } => {
            if let Item::Resource { kind, fields, .. } = &mut items[pick(item)] {
                if kind == "job" {
                    set(fields, "instances", int(*units));
                    set(fields, "gpus", int(*gpus));
                } else if let Some((_, V::Table(deployments))) =
                    fields.iter_mut().find(|(k, _)| k == "deployments")
                {
                    for (_, d) in deployments {
                        if let V::Table(d) = d {
                            set(d, "replicas", int(*units));
                            set(d, "gpus", int(*gpus));
                        }
                    }
                }
            }
        }
        Defect::Rename { item, name } => {
            if let Item::Resource { name: slot, .. } = &mut items[pick(item)] {
                *slot = name.clone();
            }
        }
    }
}

const FILES: &[&str] = &[
    "workspace.toml",
    "compute.toml",
    "data.toml",
    "train.toml",
    "serve.toml",
];

/// 1–3 coherent workspaces, with 0–3 defects in each.
pub fn repo() -> BoxedStrategy<Repo> {
    let defects = prop_oneof![2 => Just(Vec::new()), 3 => vec(defect(), 1..4)];
    vec((workspace_plan(), defects), 1..4)
        .prop_map(|workspaces| {
            let mut repo = Repo::default();
            let mut next_port = 8000;
            let mut seen = std::collections::BTreeSet::new();
            for (plan, defects) in workspaces {
                if !seen.insert(plan.name) {
                    continue;
                }
                let mut items = build(&plan, &mut next_port);
                for d in &defects {
                    apply(&mut items, d);
                }
                let mut files: Vec<Vec<Item>> = vec![Vec::new(); plan.files + 1];
                for (i, item) in items.into_iter().enumerate() {
                    let slot = plan.placement[i % plan.placement.len()].index(plan.files) + 1;
                    // Now and then a resource goes in workspace.toml (slot 0).
                    let slot = if slot == plan.files && i % 7 == 3 {
                        0
                    } else {
                        slot
                    };
                    files[slot].push(item);
                }
                let workspace: Vec<Field> = vec![
                    ("description".into(), v("generated")),
                    ("environment".into(), v(plan.environment)),
                    ("store".into(), v(plan.store)),
                    (
                        "labels".into(),
                        V::Table(vec![
                            ("team".into(), v("ml")),
                            ("cost-center".into(), v("cc-1")),
                        ]),
                    ),
                ];
                repo.file(
                    format!("{}/workspace.toml", plan.name),
                    st::render_workspace(&workspace, &files[0], plan.style),
                );
                for (k, items) in files.iter().enumerate().skip(1) {
                    if items.is_empty() {
                        continue;
                    }
                    repo.file(
                        format!("{}/{}", plan.name, FILES[k % FILES.len()]),
                        st::render_file(items, plan.style),
                    );
                }
                repo.data_folders(plan.name);
            }
            repo
        })
        .boxed()
}

//! Near-valid manifests built from the real grammar: every kind and field of the model,
//! mostly well-typed values drawn from small pools (so references often resolve and
//! names often collide), and now and then a wrong type, an unknown field, an invalid
//! name, an extreme number, unicode or a very long string.

use std::fmt::Write as _;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::repo::Repo;

/// A TOML value, rendered by hand so any shape (and any wrong type) can be written.
#[derive(Debug, Clone)]
pub enum V {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    /// A literal written as is (dates, odd numbers).
    Raw(&'static str),
    Arr(Vec<V>),
    Table(Vec<(String, V)>),
}

pub type Field = (String, V);

fn s(text: &str) -> V {
    V::Str(text.to_string())
}

// ---- rendering ----------------------------------------------------------------------

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value(v: &V) -> String {
    match v {
        V::Str(text) => quote(text),
        V::Int(i) => i.to_string(),
        V::Float(f) if f.is_nan() => "nan".into(),
        V::Float(f) if f.is_infinite() => (if *f > 0.0 { "inf" } else { "-inf" }).into(),
        V::Float(f) => format!("{f:?}"),
        V::Bool(b) => b.to_string(),
        V::Raw(raw) => (*raw).to_string(),
        V::Arr(items) => {
            let items: Vec<String> = items.iter().map(value).collect();
            format!("[{}]", items.join(", "))
        }
        V::Table(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), value(v)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
    }
}

/// How a file writes its resources.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// `[kind.name]` headers, sub-tables as their own `[kind.name.field]` sections.
    Sections,
    /// `[kind.name]` headers, sub-tables inline.
    Inline,
    /// Top-level dotted keys: `kind.name.field = value`.
    Dotted,
}

fn write_table(out: &mut String, path: &[String], entries: &[Field], style: Style) {
    let header: Vec<String> = path.iter().map(|p| key(p)).collect();
    let _ = writeln!(out, "[{}]", header.join("."));
    let nested = |v: &V| matches!(style, Style::Sections) && matches!(v, V::Table(_));
    for (k, v) in entries.iter().filter(|(_, v)| !nested(v)) {
        let _ = writeln!(out, "{} = {}", key(k), value(v));
    }
    for (k, v) in entries.iter().filter(|(_, v)| nested(v)) {
        let V::Table(sub) = v else { unreachable!() };
        let mut sub_path = path.to_vec();
        sub_path.push(k.clone());
        out.push('\n');
        write_table(out, &sub_path, sub, style);
    }
}

/// One resource, or a line that isn't one.
#[derive(Debug, Clone)]
pub enum Item {
    Resource {
        kind: String,
        name: String,
        fields: Vec<Field>,
    },
    Raw(String),
}

pub fn render_file(items: &[Item], style: Style) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            Item::Raw(raw) => {
                out.push_str(raw);
                out.push('\n');
            }
            Item::Resource { kind, name, fields } => match style {
                Style::Dotted => {
                    for (k, v) in fields {
                        let _ =
                            writeln!(out, "{}.{}.{} = {}", key(kind), key(name), key(k), value(v));
                    }
                    if fields.is_empty() {
                        let _ = writeln!(out, "{}.{} = {{}}", key(kind), key(name));
                    }
                }
                _ => write_table(&mut out, &[kind.clone(), name.clone()], fields, style),
            },
        }
        out.push('\n');
    }
    out
}

pub fn render_workspace(fields: &[Field], extra: &[Item], style: Style) -> String {
    let mut out = String::new();
    let style_here = if matches!(style, Style::Dotted) {
        Style::Inline
    } else {
        style
    };
    write_table(&mut out, &["workspace".to_string()], fields, style_here);
    out.push('\n');
    out.push_str(&render_file(extra, style_here));
    out
}

// ---- value pools --------------------------------------------------------------------

/// Resource names: mostly a few valid ones (so references hit), sometimes invalid.
const NAMES: &[&str] = &["a", "b", "main", "gpu-east", "loans", "x1"];
const BAD_NAMES: &[&str] = &[
    "Bad_Name",
    "UPPER",
    "-lead",
    "trail-",
    "with.dot",
    "ünï",
    "",
    " ",
    "名前",
    "tab\tname",
    "quote\"d",
    "a/b",
    "new\nline",
];

pub fn name() -> BoxedStrategy<String> {
    prop_oneof![
        12 => select(NAMES).prop_map(str::to_string),
        2 => select(BAD_NAMES).prop_map(str::to_string),
        1 => Just("n".repeat(63)),
        1 => Just("n".repeat(64)),
        1 => "[a-z][a-z0-9-]{0,20}",
        1 => any::<String>(),
    ]
    .boxed()
}

const KINDS: &[&str] = &["compute", "dataset", "job", "model", "endpoint"];

/// A reference to one of `kinds`, sometimes to another kind, pinned, or malformed.
pub fn reference(kinds: &'static [&'static str]) -> BoxedStrategy<V> {
    let kind = prop_oneof![
        10 => select(kinds),
        2 => select(KINDS),
        1 => select(&["workspace", "datset", "Model", "", "models"][..]),
    ];
    let pin = prop_oneof![
        8 => Just(String::new()),
        2 => Just("@3f9a2c1".to_string()),
        1 => select(&["@", "@@", "@v1@v2", "@ ", "@é"][..]).prop_map(str::to_string),
    ];
    let well_formed = (kind, name(), pin).prop_map(|(k, n, p)| V::Str(format!("{k}.{n}{p}")));
    let malformed = select(
        &[
            "nodot",
            "ws/model.a",
            "other/dataset.a",
            "model.",
            ".a",
            ".",
            "",
            "model.a@",
            "@v1",
            "dataset..a",
            " dataset.a",
            "dataset.a ",
            "dataset.a.b",
        ][..],
    )
    .prop_map(s);
    prop_oneof![20 => well_formed, 2 => malformed, 1 => wrong()].boxed()
}

const DURATIONS: &[&str] = &[
    "30s",
    "20m",
    "1h30m",
    "2d",
    "0s",
    "1ms",
    "30",
    "soon",
    "",
    " ",
    "1y",
    "-5s",
    "5 m",
    "99999999999999999999d",
    "18446744073709551615s",
    "1h 30m",
    "0.5s",
];

pub fn duration() -> BoxedStrategy<V> {
    prop_oneof![
        6 => select(DURATIONS).prop_map(s),
        3 => "[0-9]{1,4}(s|m|h|d|ms|us|ns|w|y|min|sec)".prop_map(V::Str),
        1 => wrong(),
    ]
    .boxed()
}

const QUANTITIES: &[&str] = &[
    "500m",
    "4",
    "64Gi",
    "1.5G",
    "",
    ".",
    "1.2.3",
    "64GB",
    "99999999999999999999999Ei",
    "0.000000001",
    "0.0000000001",
    "1e3",
    "-1",
    "18446744073709551616Ei",
    "99999999999999999999Ei",
    "12345678901234567890.123456789Ei",
    " 4",
];

pub fn quantity() -> BoxedStrategy<V> {
    prop_oneof![
        6 => select(QUANTITIES).prop_map(s),
        2 => (0u64..100_000).prop_map(|n| V::Int(n.into())),
        1 => Just(V::Int(-3)),
        1 => Just(V::Int(i64::MAX.into())),
        1 => wrong(),
    ]
    .boxed()
}

/// Counts: GPUs, replicas, instances, quotas. Small mostly, with every boundary of u32.
pub fn count() -> BoxedStrategy<V> {
    prop_oneof![
        12 => (0i128..=8).prop_map(V::Int),
        2 => select(&[16i128, 64, 100, 255, 256, 1000, 65_535, 65_536][..]).prop_map(V::Int),
        2 => select(vec![
            i128::from(u32::MAX),
            i128::from(u32::MAX) - 1,
            i128::from(u32::MAX) + 1,
            1 << 31,
            -1,
            i128::from(i64::MAX),
            i128::from(i64::MIN),
        ])
        .prop_map(V::Int),
        1 => (0u32..=u32::MAX).prop_map(|n| V::Int(n.into())),
        1 => wrong(),
    ]
    .boxed()
}

pub fn percent() -> BoxedStrategy<V> {
    prop_oneof![
        6 => select(&[0i128, 10, 25, 50, 90, 100][..]).prop_map(V::Int),
        3 => (0i128..=120).prop_map(V::Int),
        1 => select(vec![-1i128, 101, 255, i128::from(u32::MAX), i128::from(u32::MAX) + 1]).prop_map(V::Int),
        1 => wrong(),
    ]
    .boxed()
}

pub fn text() -> BoxedStrategy<V> {
    prop_oneof![
        6 => "[a-zA-Z0-9 ,.-]{0,40}".prop_map(V::Str),
        2 => any::<String>().prop_map(V::Str),
        1 => (1usize..5000).prop_map(|n| V::Str("long ".repeat(n))),
        1 => Just(s("ünïcødé 🦀 \u{301}\u{200b}\u{feff} 名前 עברית")),
        1 => wrong(),
    ]
    .boxed()
}

/// Any value at all, of any type (the "wrong type" case).
pub fn wrong() -> BoxedStrategy<V> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| V::Int(i.into())),
        any::<f64>().prop_map(V::Float),
        Just(V::Float(f64::NAN)),
        Just(V::Float(f64::INFINITY)),
        any::<bool>().prop_map(V::Bool),
        "[a-z.@/]{0,12}".prop_map(V::Str),
        select(
            &[
                "1979-05-27",
                "07:32:00",
                "1979-05-27T07:32:00Z",
                "0x1F",
                "1_000",
                "+5",
                "-0.0",
                "1e308"
            ][..]
        )
        .prop_map(V::Raw),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(V::Arr),
            vec(("[a-z]{1,6}", inner), 0..3).prop_map(V::Table),
        ]
    })
    .boxed()
}

/// Wraps a well-typed strategy so that now and then a wrong-typed value comes instead.
fn or_wrong(good: BoxedStrategy<V>) -> BoxedStrategy<V> {
    prop_oneof![15 => good, 1 => wrong()].boxed()
}

fn enum_value(values: &'static [&'static str]) -> BoxedStrategy<V> {
    prop_oneof![10 => select(values).prop_map(s), 1 => "[a-zA-Z]{0,10}".prop_map(V::Str), 1 => wrong()]
        .boxed()
}

/// A string map (labels, tags, env, node selectors).
fn string_map(keys: &'static [&'static str]) -> BoxedStrategy<V> {
    let k = prop_oneof![4 => select(keys).prop_map(str::to_string), 1 => any::<String>()];
    let v = prop_oneof![4 => "[a-z0-9-]{0,12}".prop_map(V::Str), 1 => wrong()];
    or_wrong(vec((k, v), 0..4).prop_map(V::Table).boxed())
}

/// Optional fields: each present with its probability.
fn fields(spec: Vec<(f64, &'static str, BoxedStrategy<V>)>) -> BoxedStrategy<Vec<Field>> {
    let parts: Vec<BoxedStrategy<Option<Field>>> = spec
        .into_iter()
        .map(|(p, k, strategy)| {
            prop::option::weighted(p, strategy.prop_map(move |v| (k.to_string(), v))).boxed()
        })
        .collect();
    let unknown = prop::option::weighted(
        0.04,
        (
            select(&["gpu", "replica", "sources", "Target", "x", "", "deployment"][..]),
            wrong(),
        )
            .prop_map(|(k, v)| (k.to_string(), v)),
    );
    (parts, unknown, any::<prop::sample::Index>())
        .prop_map(|(parts, unknown, at)| {
            let mut out: Vec<Field> = parts.into_iter().flatten().collect();
            if let Some(f) = unknown {
                let i = at.index(out.len() + 1);
                out.insert(i, f);
            }
            out
        })
        .boxed()
}

/// A table of named sub-tables (instance types, deployments): name → fields.
fn named_tables(
    names: BoxedStrategy<String>,
    body: BoxedStrategy<Vec<Field>>,
    max: usize,
) -> BoxedStrategy<V> {
    or_wrong(
        vec((names, body), 0..max)
            .prop_map(|entries| {
                let mut seen = std::collections::BTreeSet::new();
                V::Table(
                    entries
                        .into_iter()
                        .filter(|(n, _)| seen.insert(n.clone()))
                        .map(|(n, f)| (n, V::Table(f)))
                        .collect(),
                )
            })
            .boxed(),
    )
}

/// A map of deployment (or input/output) names to values, keys kept unique.
fn keyed(names: BoxedStrategy<String>, values: BoxedStrategy<V>, max: usize) -> BoxedStrategy<V> {
    or_wrong(
        vec((names, values), 0..max)
            .prop_map(|entries| {
                let mut seen = std::collections::BTreeSet::new();
                V::Table(
                    entries
                        .into_iter()
                        .filter(|(n, _)| seen.insert(n.clone()))
                        .collect(),
                )
            })
            .boxed(),
    )
}

const SOURCES: &[&str] = &[
    "data/d1/",
    "data/d1",
    "data/d2",
    "data/d1/file.csv",
    "models/m1",
    "data/missing/",
    "",
    "  ",
    "../ws/data/d1",
    "../../etc",
    "/etc",
    "s3://bucket/x",
    "http://x/y",
    "file:///tmp",
    "data/link/",
    "data/inside-link",
    "data/../data/d1",
    "./data/d1/.",
    "data/d1/file.csv/x",
    "data\0/d1",
    "data/d1/../../..",
    "ü/ß",
];

pub fn source() -> BoxedStrategy<V> {
    or_wrong(select(SOURCES).prop_map(s).boxed())
}

fn instance_type_name() -> BoxedStrategy<String> {
    prop_oneof![
        8 => select(&["a100", "t4", "cpu-large"][..]).prop_map(str::to_string),
        1 => select(&["A100", "a_100", "", "missing"][..]).prop_map(str::to_string),
    ]
    .boxed()
}

fn deployment_name() -> BoxedStrategy<String> {
    prop_oneof![
        10 => select(&["blue", "green", "canary"][..]).prop_map(str::to_string),
        1 => select(&["Blue", "a_b", "", "-x", "ünï"][..]).prop_map(str::to_string),
        1 => Just("d".repeat(60)),
    ]
    .boxed()
}

fn io_name() -> BoxedStrategy<String> {
    prop_oneof![
        10 => select(&["data", "model", "prev", "loans", "m"][..]).prop_map(str::to_string),
        1 => select(&["Data", "1x", "", "a b", "ünï", "x.y"][..]).prop_map(str::to_string),
        1 => Just("i".repeat(64)),
    ]
    .boxed()
}

fn command() -> BoxedStrategy<V> {
    let arg = prop_oneof![
        4 => "[a-z-]{1,10}".prop_map(V::Str),
        3 => select(&[
            "{{ inputs.data }}", "{{ outputs.model }}", "{{inputs.prev}}", "{{ inputs.missing }}",
            "{{ outputs. }}", "{{", "}}", "{{ inputs.data }} {{ outputs.m }}", "{{ }}",
            "{{ inputs.{{ }} }}", "{{ inputs.ünï }}",
        ][..])
        .prop_map(s),
        1 => wrong(),
    ];
    or_wrong(vec(arg, 0..6).prop_map(V::Arr).boxed())
}

// ---- kinds --------------------------------------------------------------------------

fn workspace_fields() -> BoxedStrategy<Vec<Field>> {
    fields(vec![
        (0.5, "description", text()),
        (
            0.7,
            "environment",
            enum_value(&[
                "dev",
                "staging",
                "production",
                "development",
                "test",
                "prod",
            ]),
        ),
        (
            0.6,
            "store",
            or_wrong(
                select(
                    &[
                        "file://.cairn/store",
                        "file://",
                        "file://../../x",
                        "file:///abs/store",
                        "s3://bank-ml/x",
                        "s3://Bad_Bucket/x",
                        "s3://ab",
                        "s3://",
                        "gs://x",
                        "",
                        "file://../outside",
                        "s3://a.b-c/prefix",
                    ][..],
                )
                .prop_map(s)
                .boxed(),
            ),
        ),
        (
            0.2,
            "endpoint",
            or_wrong(
                select(
                    &[
                        "https://s3.example.com",
                        "http://127.0.0.1:9000",
                        "ftp://x",
                        "",
                    ][..],
                )
                .prop_map(s)
                .boxed(),
            ),
        ),
        (0.2, "region", text()),
        (
            0.1,
            "path_style",
            or_wrong(any::<bool>().prop_map(V::Bool).boxed()),
        ),
        (0.3, "namespace", or_wrong(name().prop_map(V::Str).boxed())),
        (0.4, "labels", string_map(&["team", "cost-center", "owner"])),
    ])
}

fn toleration() -> BoxedStrategy<V> {
    fields(vec![
        (0.7, "key", text()),
        (0.6, "operator", enum_value(&["Equal", "Exists"])),
        (0.4, "value", text()),
        (
            0.6,
            "effect",
            enum_value(&["NoSchedule", "PreferNoSchedule", "NoExecute"]),
        ),
    ])
    .prop_map(V::Table)
    .boxed()
}

fn instance_type() -> BoxedStrategy<Vec<Field>> {
    fields(vec![
        (0.7, "cpu", quantity()),
        (0.7, "memory", quantity()),
        (0.6, "gpus", count()),
        (0.3, "gpu_type", text()),
        (
            0.3,
            "node_selector",
            string_map(&["agentpool", "node.kubernetes.io/instance-type"]),
        ),
        (
            0.2,
            "tolerations",
            or_wrong(vec(toleration(), 0..3).prop_map(V::Arr).boxed()),
        ),
    ])
}

fn compute_fields() -> BoxedStrategy<Vec<Field>> {
    fields(vec![
        (0.95, "target", enum_value(&["kubernetes", "local"])),
        (0.3, "description", text()),
        (0.3, "context", text()),
        (0.3, "namespace", or_wrong(name().prop_map(V::Str).boxed())),
        (0.2, "gateway", text()),
        (
            0.5,
            "instance_types",
            named_tables(instance_type_name(), instance_type(), 4),
        ),
        (0.6, "max_gpus", count()),
        (0.4, "idle_shutdown", duration()),
        (0.3, "region", text()),
        (
            0.3,
            "roles",
            or_wrong(
                vec(enum_value(&["train", "serve"]), 0..3)
                    .prop_map(V::Arr)
                    .boxed(),
            ),
        ),
        (0.2, "labels", string_map(&["team"])),
    ])
}

fn dataset_fields() -> BoxedStrategy<Vec<Field>> {
    fields(vec![
        (0.95, "source", source()),
        (
            0.95,
            "format",
            enum_value(&[
                "csv", "tsv", "parquet", "json", "jsonl", "arrow", "images", "audio", "text",
                "binary",
            ]),
        ),
        (
            0.15,
            "version",
            or_wrong(select(&["3f9a2c1", "", " ", "v1"][..]).prop_map(s).boxed()),
        ),
        (0.3, "description", text()),
        (0.4, "tags", string_map(&["pii", "region"])),
    ])
}

fn job_fields() -> BoxedStrategy<Vec<Field>> {
    fields(vec![
        (0.95, "compute", reference(&["compute"])),
        (
            0.3,
            "instance_type",
            or_wrong(instance_type_name().prop_map(V::Str).boxed()),
        ),
        (0.5, "image", text()),
        (0.7, "command", command()),
        (
            0.8,
            "inputs",
            keyed(io_name(), reference(&["dataset", "model"]), 4),
        ),
        (0.8, "outputs", keyed(io_name(), reference(&["model"]), 3)),
        (0.5, "gpus", count()),
        (0.3, "instances", count()),
        (0.2, "env", string_map(&["NCCL_DEBUG", "SEED"])),
        (0.4, "timeout", duration()),
        (0.3, "retries", count()),
        (0.3, "description", text()),
    ])
}

fn model_fields() -> BoxedStrategy<Vec<Field>> {
    fields(vec![
        (0.8, "from_job", reference(&["job"])),
        (0.2, "source", source()),
        (
            0.95,
            "format",
            enum_value(&["safetensors", "onnx", "custom"]),
        ),
        (0.3, "description", text()),
    ])
}

fn deployment() -> BoxedStrategy<Vec<Field>> {
    fields(vec![
        (0.95, "model", reference(&["model"])),
        (0.7, "replicas", count()),
        (
            0.3,
            "instance_type",
            or_wrong(instance_type_name().prop_map(V::Str).boxed()),
        ),
        (0.5, "gpus", count()),
        (0.3, "image", text()),
        (0.2, "env", string_map(&["MODE"])),
    ])
}

fn rollout() -> BoxedStrategy<V> {
    let steps = prop_oneof![
        4 => select(vec![vec![10i128, 50, 100], vec![100], vec![5, 25, 50, 100], vec![], vec![50, 10, 100], vec![10, 10, 100], vec![0, 100], vec![10, 50], vec![10, 101]])
            .prop_map(|steps| V::Arr(steps.iter().map(|s| V::Int(*s)).collect())),
        2 => vec(percent(), 0..6).prop_map(V::Arr),
        1 => wrong(),
    ];
    let rate = prop_oneof![
        4 => select(&[0.01, 0.005, 0.0, 1.0, -0.1, 1.5][..]).prop_map(V::Float),
        1 => Just(V::Float(f64::NAN)),
        1 => Just(V::Int(1)),
        1 => wrong(),
    ];
    let p99 = prop_oneof![
        4 => (0i128..1000).prop_map(V::Int),
        1 => select(vec![-1i128, i128::from(u64::MAX), i128::from(i64::MAX)]).prop_map(V::Int),
        1 => wrong(),
    ];
    or_wrong(
        fields(vec![
            (0.9, "steps", steps.boxed()),
            (0.6, "step_wait", duration()),
            (0.5, "max_error_rate", rate.boxed()),
            (0.5, "max_p99_ms", p99.boxed()),
            (
                0.4,
                "auto_rollback",
                or_wrong(any::<bool>().prop_map(V::Bool).boxed()),
            ),
            (0.2, "scale_down_delay", duration()),
        ])
        .prop_map(V::Table)
        .boxed(),
    )
}

fn endpoint_fields() -> BoxedStrategy<Vec<Field>> {
    let port = prop_oneof![
        6 => select(&[8080i128, 8443, 9000][..]).prop_map(V::Int),
        2 => (0i128..=65_535).prop_map(V::Int),
        1 => select(&[0i128, 65_536, -1, 70_000][..]).prop_map(V::Int),
        1 => wrong(),
    ];
    fields(vec![
        (0.95, "compute", reference(&["compute"])),
        (0.5, "auth", enum_value(&["key", "token", "none"])),
        (0.6, "port", port.boxed()),
        (0.3, "description", text()),
        (
            0.9,
            "deployments",
            named_tables(deployment_name(), deployment(), 4),
        ),
        (0.7, "traffic", keyed(deployment_name(), percent(), 4)),
        (0.3, "mirror", keyed(deployment_name(), percent(), 3)),
        (0.5, "rollout", rollout()),
    ])
}

fn resource() -> BoxedStrategy<Item> {
    let kind_and_fields = prop_oneof![
        2 => compute_fields().prop_map(|f| ("compute".to_string(), f)),
        2 => dataset_fields().prop_map(|f| ("dataset".to_string(), f)),
        3 => job_fields().prop_map(|f| ("job".to_string(), f)),
        3 => model_fields().prop_map(|f| ("model".to_string(), f)),
        3 => endpoint_fields().prop_map(|f| ("endpoint".to_string(), f)),
        1 => (select(&["datset", "Compute", "jobs", "", "workspace"][..]), dataset_fields())
            .prop_map(|(k, f)| (k.to_string(), f)),
    ];
    let raw = select(
        &[
            "dataset = 5",
            "[dataset]",
            "[[job]]\ncompute = \"compute.a\"",
            "job = []",
            "[model.a]\n[model.a]",
            "x = ",
            "[endpoint.a.traffic]\nblue = 100",
            "compute = { a = 1 }",
            "[dataset.\"\"]",
            "[workspace]",
        ][..],
    )
    .prop_map(|r| Item::Raw(r.to_string()));
    prop_oneof![
        30 => (kind_and_fields, name()).prop_map(|((kind, fields), name)| Item::Resource { kind, name, fields }),
        1 => raw,
    ]
    .boxed()
}

pub fn style() -> BoxedStrategy<Style> {
    prop_oneof![5 => Just(Style::Sections), 3 => Just(Style::Inline), 1 => Just(Style::Dotted)]
        .boxed()
}

const WORKSPACES: &[&str] = &["ws", "fraud", "credit-risk", "Bad_WS", "ünï"];
const FILES: &[&str] = &[
    "compute.toml",
    "data.toml",
    "train.toml",
    "serve.toml",
    "more.toml",
];

/// A whole repository: 1–3 workspaces, each a workspace.toml and up to four files.
pub fn repo() -> BoxedStrategy<Repo> {
    let file = (select(FILES), vec(resource(), 0..7), style());
    let workspace = (
        prop_oneof![12 => select(&WORKSPACES[..3]), 1 => select(WORKSPACES)],
        prop::option::weighted(0.95, workspace_fields()),
        vec(resource(), 0..2),
        vec(file, 0..5),
        style(),
        any::<bool>(),
    );
    (vec(workspace, 1..4), prop::option::weighted(0.05, Just(())))
        .prop_map(|(workspaces, stray)| {
            let mut repo = Repo::default();
            for (ws, ws_fields, ws_extra, files, ws_style, links) in workspaces {
                if let Some(fields) = ws_fields {
                    repo.file(
                        format!("{ws}/workspace.toml"),
                        render_workspace(&fields, &ws_extra, ws_style),
                    );
                }
                for (name, items, style) in files {
                    repo.file(format!("{ws}/{name}"), render_file(&items, style));
                }
                repo.data_folders(ws);
                if links {
                    repo.links
                        .push((format!("{ws}/data/link"), "/".to_string()));
                    repo.links
                        .push((format!("{ws}/data/inside-link"), "d1".to_string()));
                }
            }
            if stray.is_some() {
                repo.file("workspace.toml", "[workspace]\n");
            }
            repo
        })
        .boxed()
}

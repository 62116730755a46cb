//! Unstructured inputs: arbitrary bytes, arbitrary text and TOML-ish token soup as file
//! content, odd folder and file names; and pathological sizes (long repetitions, deep
//! dotted keys, files at the size limit, long dependency chains and cycles).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use cairn::manifest::source::MAX_MANIFEST_BYTES;

use crate::repo::Repo;

/// Pieces of TOML and of the manifest grammar, glued at random.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    " = ",
    ",",
    ".",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "#",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "\\",
    "\\u00e9",
    "\\U0001F600",
    "\\x41",
    "\\uD800",
    "\0",
    "\u{7f}",
    "\u{feff}",
    "é",
    "🦀",
    "\u{2028}",
    "\u{301}",
    "workspace",
    "compute",
    "dataset",
    "job",
    "model",
    "endpoint",
    "deployments",
    "traffic",
    "mirror",
    "rollout",
    "instance_types",
    "tolerations",
    "source",
    "format",
    "target",
    "from_job",
    "inputs",
    "outputs",
    "gpus",
    "replicas",
    "steps",
    "max_gpus",
    "port",
    "command",
    "image",
    "environment",
    "store",
    "labels",
    "tags",
    "version",
    "timeout",
    "idle_shutdown",
    "roles",
    "auth",
    "\"kubernetes\"",
    "\"local\"",
    "\"csv\"",
    "\"dataset.a\"",
    "\"model.a\"",
    "\"model.a@v1\"",
    "\"job.a\"",
    "\"compute.a\"",
    "\"data/d1/\"",
    "\"../..\"",
    "\"s3://b-1/x\"",
    "\"30s\"",
    "\"64Gi\"",
    "a",
    "b",
    "blue",
    "green",
    "0",
    "1",
    "100",
    "-1",
    "4294967296",
    "18446744073709551616",
    "1.5",
    "nan",
    "inf",
    "1e999",
    "true",
    "false",
    "1979-05-27",
    "07:32:00",
    "1979-05-27T07:32:00Z",
    "0x1F",
    "0o7",
    "0b1",
    "1_000",
    "[workspace]\n",
    "[dataset.a]\n",
    "[job.a]\n",
    "[model.a]\n",
    "[compute.a]\n",
    "[endpoint.a]\n",
    "[endpoint.a.deployments.blue]\n",
    "[endpoint.a.traffic]\n",
    "[[job]]\n",
    "target = \"local\"\n",
    "source = \"data/d1\"\nformat = \"csv\"\n",
    "compute = \"compute.a\"\n",
    "model = \"model.a\"\n",
    "from_job = \"job.a\"\n",
    "outputs = { m = \"model.a\" }\n",
    "command = [\"x\"]\n",
];

fn token_soup() -> BoxedStrategy<Vec<u8>> {
    vec(select(TOKENS), 0..120)
        .prop_map(|tokens| tokens.concat().into_bytes())
        .boxed()
}

/// Arbitrary file content: bytes, text, or token soup.
pub fn content() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..600),
        2 => vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect::<String>().into_bytes()),
        1 => "[ -~\n]{0,300}".prop_map(String::into_bytes),
        6 => token_soup(),
    ]
    .boxed()
}

fn workspace_file() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => Just(b"[workspace]\n".to_vec()),
        2 => content(),
        3 => content().prop_map(|c| [b"[workspace]\n".as_slice(), &c].concat()),
    ]
    .boxed()
}

/// Folder names: valid, invalid as names, and arbitrary (never `/`, NUL, `.` or `..`).
pub fn folder_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(&["ws", "fraud", "credit-risk", "Bad_WS", "ünï", "x.y", "with space", "-ws", "ws-", "123", ".hidden", "UPPER"][..])
            .prop_map(str::to_string),
        1 => Just("a".repeat(64)),
        2 => "[a-z0-9-]{1,12}",
        2 => "[^/\\x00]{1,24}",
    ]
    .prop_map(|name| if name == "." || name == ".." { "dots".to_string() } else { name })
    .boxed()
}

fn file_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(&[
            "data.toml", "a.toml", "serve.toml", "ünï.toml", "UPPER.toml", "x y.toml",
            ".hidden.toml", "notes.txt", "workspace.TOML", "toml", ".toml", "dir.toml/inner.txt",
            "sub/nested.toml", "data/d1/more.toml",
        ][..])
        .prop_map(str::to_string),
        2 => "[^/\\x00]{1,20}\\.toml",
    ]
    .prop_map(|name| {
        if name == "." || name == ".." {
            "dots".to_string()
        } else {
            name
        }
    })
    .boxed()
}

/// A repository of 1–3 workspace folders whose files hold arbitrary content.
pub fn repo() -> BoxedStrategy<Repo> {
    let workspace = (
        folder_name(),
        prop::option::weighted(0.9, workspace_file()),
        vec((file_name(), content()), 0..4),
        any::<bool>(),
    );
    (
        vec(workspace, 1..4),
        prop::option::weighted(0.1, content()),
        prop::option::weighted(0.1, content()),
    )
        .prop_map(|(workspaces, stray, raw_name)| {
            let mut repo = Repo::default();
            for (name, ws_file, files, data) in &workspaces {
                if let Some(content) = ws_file {
                    repo.file(format!("{name}/workspace.toml"), content.clone());
                }
                for (file, content) in files {
                    repo.file(format!("{name}/{file}"), content.clone());
                }
                if *data {
                    repo.data_folders(name);
                }
            }
            if let Some(content) = stray {
                repo.file("stray.toml", content);
            }
            if let Some(content) = raw_name {
                let dir = workspaces[0].0.clone();
                repo.raw_names
                    .push((dir, b"bad-\xff\xfe.toml".to_vec(), content));
            }
            repo
        })
        .boxed()
}

/// Repeated units that stress the limits: nesting, length, number of findings.
const UNITS: &[&str] = &[
    "a.",
    "[",
    "{a=",
    "{",
    "[a.",
    "a",
    "[a]\n",
    "[[a]]\n",
    "a=1\n",
    "\"",
    "#",
    "\\",
    "'''",
    "\"\"\"",
    "é",
    "\n",
    " ",
    "[dataset.x]\nsource='data/d1'\nformat='csv'\n",
    "x = [\n",
    "{ a = 1, ",
    "1,",
    "[job.j]\ncompute='compute.c'\n",
    "model.",
    "\0",
    "\r",
    "[ ",
    "[{",
    "{a=[",
    "a.\"b\".",
    "x = '",
    "[dataset.\"",
    "🦀",
    "\u{301}",
];
const PREFIXES: &[&str] = &[
    "",
    "a = ",
    "[dataset.",
    "x = \"",
    "x = '''",
    "[[",
    "a = [",
    "dataset.a.",
    "# ",
    "[endpoint.e]\ncompute='compute.c'\n[endpoint.e.traffic]\n",
];
const SUFFIXES: &[&str] = &["", "]", " = 1", "\"", "\n", "]]", "}"];

/// Long and deep inputs, plus long dependency chains (with and without a cycle).
pub fn pathological() -> BoxedStrategy<Repo> {
    let repeat = (
        select(PREFIXES),
        select(UNITS),
        1usize..20_000,
        select(SUFFIXES),
    )
        .prop_map(|(prefix, unit, n, suffix)| {
            let mut repo = Repo::default();
            repo.file("ws/workspace.toml", "[workspace]\n");
            repo.data_folders("ws");
            repo.file(
                "ws/big.toml",
                format!("{prefix}{}{suffix}", unit.repeat(n)).into_bytes(),
            );
            repo
        });
    let size = (
        select(&[0i64, -1, 1][..]),
        select(&["a", "# x\n", "\n"][..]),
    )
        .prop_map(|(delta, unit)| {
            let mut repo = Repo::default();
            repo.file("ws/workspace.toml", "[workspace]\n");
            let len = (MAX_MANIFEST_BYTES as i64 + delta) as usize;
            let mut text = unit.repeat(len / unit.len() + 1).into_bytes();
            text.truncate(len);
            repo.file("ws/huge.toml", text);
            repo
        });
    let chain = (1usize..1500, any::<bool>(), any::<bool>())
        .prop_map(|(n, cycle, pin_first)| chain_repo(n, cycle, pin_first));
    prop_oneof![6 => repeat, 1 => size, 3 => chain].boxed()
}

/// `n` jobs, each training on the previous job's model; with `cycle`, the first job
/// reads the last model too (pinned when `pin_first`, which breaks the cycle).
pub fn chain_repo(n: usize, cycle: bool, pin_first: bool) -> Repo {
    use std::fmt::Write as _;
    let mut repo = Repo::default();
    repo.file("ws/workspace.toml", "[workspace]\nenvironment = \"dev\"\n");
    repo.data_folders("ws");
    let mut text = String::from(
        "[compute.c]\ntarget = \"local\"\n\n[dataset.d]\nsource = \"data/d1\"\nformat = \"csv\"\n",
    );
    for i in 0..n {
        let input = if i == 0 {
            if cycle {
                let pin = if pin_first { "@v1" } else { "" };
                format!("{{ d = \"dataset.d\", prev = \"model.m{}{pin}\" }}", n - 1)
            } else {
                "{ d = \"dataset.d\" }".to_string()
            }
        } else {
            format!("{{ prev = \"model.m{}\" }}", i - 1)
        };
        let _ = write!(
            text,
            "\n[job.j{i}]\ncompute = \"compute.c\"\ncommand = [\"train\", \"{{{{ outputs.model }}}}\"]\ninputs = {input}\noutputs = {{ model = \"model.m{i}\" }}\n\n[model.m{i}]\nfrom_job = \"job.j{i}\"\nformat = \"onnx\"\n"
        );
    }
    repo.file("ws/chain.toml", text);
    repo
}

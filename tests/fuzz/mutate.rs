//! Mutations of the example repository (`manifests/`): byte flips, truncation, splices
//! between files, deleted and repeated lines, inserted tokens, and swapped numbers and
//! strings (which keep the TOML valid and so reach the validator).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::repo::Repo;

/// The example repository, read once: (path relative to `manifests/`, bytes).
pub fn examples() -> &'static [(String, Vec<u8>)] {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let root = examples_root();
        let mut files = Vec::new();
        collect(&root, &root, &mut files);
        files.sort();
        assert!(
            files.iter().any(|(p, _)| p.ends_with("/workspace.toml")),
            "no example manifests under {}",
            root.display()
        );
        files
    })
}

pub fn examples_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).expect("read examples").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("inside root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read(&path).expect("read example file")));
        }
    }
}

/// Indices of the example's manifest files.
fn manifest_indices() -> Vec<usize> {
    examples()
        .iter()
        .enumerate()
        .filter(|(_, (p, _))| p.ends_with(".toml"))
        .map(|(i, _)| i)
        .collect()
}

const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "=",
    ".",
    ",",
    "\n",
    "#",
    "\\",
    "\0",
    "\r",
    "\t",
    "é",
    "🦀",
    "\u{feff}",
    "-",
    "1e999",
    "4294967296",
    "-1",
    "nan",
    "true",
    "1979-05-27T07:32:00Z",
    "model.",
    "@",
    "/",
    "..",
    " = \"x\"",
    "\n[dataset.x]\n",
    "\n[job.train-risk]\n",
    "\n[workspace]\n",
    "x = 1\n",
    "\u{ff}",
];

/// Replacement numbers: boundaries of the integer types used by the model.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "50",
    "51",
    "99",
    "100",
    "101",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "-1",
    "1.5",
    "nan",
    "\"4\"",
];

/// Replacement strings (the text between quotes).
const STRINGS: &[&str] = &[
    "",
    " ",
    "model.risk-scorer@",
    "model.risk-scorer@v1",
    "model.pneumonia-detector",
    "dataset.loans",
    "dataset.chest-xrays",
    "job.train-risk",
    "job.train-pneumonia",
    "compute.branch-dc",
    "compute.gpu-pool",
    "compute.radiology-onprem",
    "compute.missing",
    "model.missing",
    "dataset.loans@x",
    "other/dataset.loans",
    "data/loans/",
    "data/",
    "../credit-risk/data/loans",
    "../../etc",
    "/etc",
    "s3://bucket/p",
    "local",
    "kubernetes",
    "csv",
    "onnx",
    "a100",
    "t4",
    "missing-type",
    "Bad_Name",
    "{{ inputs.missing }}",
    "{{ outputs.model }}",
    "0s",
    "30",
    "64GB",
    "1h",
    "train",
    "serve",
    "production",
    "dev",
    "ünï",
    "ws/x",
];

#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        byte: u8,
    },
    Truncate {
        at: Index,
    },
    Delete {
        at: Index,
        len: usize,
    },
    Insert {
        at: Index,
        token: &'static str,
    },
    /// Copies a slice of another example file into this one.
    Splice {
        at: Index,
        from: Index,
        start: Index,
        len: usize,
    },
    DuplicateLine {
        line: Index,
    },
    DeleteLine {
        line: Index,
    },
    SwapLines {
        a: Index,
        b: Index,
    },
    ReplaceNumber {
        which: Index,
        with: &'static str,
    },
    ReplaceString {
        which: Index,
        with: &'static str,
    },
}

fn mutation() -> BoxedStrategy<Mutation> {
    use Mutation::*;
    prop_oneof![
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| FlipBit { at, bit }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| SetByte { at, byte }),
        1 => any::<Index>().prop_map(|at| Truncate { at }),
        2 => (any::<Index>(), 1usize..40).prop_map(|(at, len)| Delete { at, len }),
        3 => (any::<Index>(), select(TOKENS)).prop_map(|(at, token)| Insert { at, token }),
        2 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..200)
            .prop_map(|(at, from, start, len)| Splice { at, from, start, len }),
        1 => any::<Index>().prop_map(|line| DuplicateLine { line }),
        2 => any::<Index>().prop_map(|line| DeleteLine { line }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| SwapLines { a, b }),
        4 => (any::<Index>(), select(NUMBERS)).prop_map(|(which, with)| ReplaceNumber { which, with }),
        5 => (any::<Index>(), select(STRINGS)).prop_map(|(which, with)| ReplaceString { which, with }),
    ]
    .boxed()
}

fn lines(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in text.iter().enumerate() {
        if *b == b'\n' {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push(start..text.len());
    }
    out
}

/// Byte ranges of the numbers (digit runs not inside a word) in a text.
fn numbers(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let word_before = i > 0
            && (text[i - 1].is_ascii_alphanumeric() || matches!(text[i - 1], b'-' | b'_' | b'.'));
        if text[i].is_ascii_digit() && !word_before {
            let start = i;
            while i < text.len() && (text[i].is_ascii_digit() || text[i] == b'.') {
                i += 1;
            }
            if i == text.len() || !text[i].is_ascii_alphabetic() {
                out.push(start..i);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Byte ranges of the contents of simple `"…"` strings in a text.
fn strings(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < text.len() && text[j] != b'"' && text[j] != b'\n' && text[j] != b'\\' {
                j += 1;
            }
            if j < text.len() && text[j] == b'"' {
                out.push(start..j);
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn apply(text: &mut Vec<u8>, m: &Mutation, others: &[&[u8]]) {
    use Mutation::*;
    let len = text.len();
    match m {
        FlipBit { at, bit } if len > 0 => text[at.index(len)] ^= 1 << bit,
        SetByte { at, byte } if len > 0 => text[at.index(len)] = *byte,
        Truncate { at } => text.truncate(at.index(len + 1)),
        Delete { at, len: n } if len > 0 => {
            let start = at.index(len);
            let end = (start + n).min(len);
            text.drain(start..end);
        }
        Insert { at, token } => {
            let i = at.index(len + 1);
            text.splice(i..i, token.bytes());
        }
        Splice {
            at,
            from,
            start,
            len: n,
        } => {
            let source = from.get(others);
            if source.is_empty() {
                return;
            }
            let s = start.index(source.len());
            let e = (s + n).min(source.len());
            let i = at.index(len + 1);
            text.splice(i..i, source[s..e].iter().copied());
        }
        DuplicateLine { line } | DeleteLine { line } => {
            let all = lines(text);
            if all.is_empty() {
                return;
            }
            let range = all[line.index(all.len())].clone();
            if matches!(m, DuplicateLine { .. }) {
                let copy = text[range.clone()].to_vec();
                text.splice(range.end..range.end, copy);
            } else {
                text.drain(range);
            }
        }
        SwapLines { a, b } => {
            let all = lines(text);
            if all.len() < 2 {
                return;
            }
            let (mut x, mut y) = (
                all[a.index(all.len())].clone(),
                all[b.index(all.len())].clone(),
            );
            if x.start > y.start {
                std::mem::swap(&mut x, &mut y);
            }
            if x == y {
                return;
            }
            let mut out = text[..x.start].to_vec();
            out.extend_from_slice(&text[y.clone()]);
            out.extend_from_slice(&text[x.end..y.start]);
            out.extend_from_slice(&text[x.clone()]);
            out.extend_from_slice(&text[y.end..]);
            *text = out;
        }
        ReplaceNumber { which, with } => {
            let all = numbers(text);
            if !all.is_empty() {
                let range = all[which.index(all.len())].clone();
                text.splice(range, with.bytes());
            }
        }
        ReplaceString { which, with } => {
            let all = strings(text);
            if !all.is_empty() {
                let range = all[which.index(all.len())].clone();
                text.splice(range, with.bytes());
            }
        }
        _ => {}
    }
}

/// The example repository with 1–6 mutations spread over its manifest files.
pub fn repo() -> BoxedStrategy<Repo> {
    vec((any::<Index>(), mutation()), 1..7)
        .prop_map(|mutations| {
            let files = examples();
            let manifests = manifest_indices();
            let sources: Vec<&[u8]> = manifests.iter().map(|&i| files[i].1.as_slice()).collect();
            let mut contents: Vec<Vec<u8>> = files.iter().map(|(_, c)| c.clone()).collect();
            for (which, m) in &mutations {
                let i = manifests[which.index(manifests.len())];
                apply(&mut contents[i], m, &sources);
            }
            let mut repo = Repo::default();
            for ((path, _), content) in files.iter().zip(contents) {
                repo.file(path.clone(), content);
            }
            repo
        })
        .boxed()
}

//! The layout of a manifests root, shared by both loaders: which names are manifests,
//! which are hidden, accepting a file's bytes as UTF-8 text, and the problems a root's
//! shape can have (stray files, a workspace given as the root, linked workspaces).

use super::{SourceFile, MAX_MANIFEST_BYTES};
use crate::diagnostics::{Diagnostic, Location};

pub(super) fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".toml") && !name.starts_with('.')
}

pub(super) fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Collects file bytes into a [`SourceFile`], or a diagnostic if they can't be one.
pub(super) fn accept_file(
    files: &mut Vec<SourceFile>,
    problems: &mut Vec<Diagnostic>,
    path: String,
    workspace: &str,
    bytes: Vec<u8>,
) {
    match String::from_utf8(bytes) {
        Ok(text) => files.push(SourceFile {
            path,
            workspace: workspace.to_string(),
            text,
        }),
        Err(err) => {
            let valid = err.utf8_error().valid_up_to();
            let bytes = err.into_bytes();
            // Only the valid prefix is needed to compute where the bad byte is.
            let prefix = String::from_utf8_lossy(&bytes[..valid]);
            problems.push(
                Diagnostic::error("encoding", "manifest file is not valid UTF-8")
                    .at(Location::new(&path, &prefix, valid..valid))
                    .label(format!("byte 0x{:02x} here", bytes[valid]))
                    .help("TOML files must be UTF-8; re-save the file as UTF-8"),
            );
        }
    }
}

pub(super) fn too_large(path: &str, size: u64) -> Diagnostic {
    Diagnostic::error(
        "file-too-large",
        format!(
            "manifest file is {:.1} MiB, over the {} MiB limit",
            size as f64 / (1024.0 * 1024.0),
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ),
    )
    .at(Location::file(path))
    .help("split it into several files in the same workspace folder; data belongs in a dataset folder, not in a manifest")
}

pub(super) fn linked_workspace(name: &str) -> Diagnostic {
    Diagnostic::error(
        "manifest-file",
        format!(
            "workspace folder `{name}` is a symbolic link, and links to folders are not followed"
        ),
    )
    .help(format!(
        "move the workspace's files into a real folder `{name}/` under the manifests root"
    ))
}

pub(super) fn add_layout_problems(
    problems: &mut Vec<Diagnostic>,
    stray: &[String],
    root_is_workspace: bool,
) {
    if root_is_workspace {
        problems.push(
            Diagnostic::error(
                "layout",
                "this folder is a workspace; Cairn expects the folder that holds the workspaces",
            )
            .at(Location::file("workspace.toml"))
            .help("point Cairn at the parent folder, e.g. `cairn validate manifests/`"),
        );
        return;
    }
    for name in stray {
        problems.push(
            Diagnostic::warning(
                "stray-file",
                "manifest file outside any workspace folder is ignored",
            )
            .at(Location::file(name))
            .help("move it into a workspace folder (`<workspace>/…toml`)"),
        );
    }
}

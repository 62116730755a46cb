//! Reading manifest files, from a folder on disk or from a Git revision.
//!
//! A manifests root holds one folder per workspace: `<root>/<workspace>/workspace.toml`
//! plus any number of `*.toml` files beside it (not in subfolders, which hold data).
//! Loading from a revision reads blobs straight from the commit's tree through git2; the
//! working copy is never touched, so a dirty working tree and `--rev HEAD` can differ.
//!
//! This module owns file discovery and the size and encoding checks. It does not parse.
//! It holds the [`Snapshot`] both loaders return and the types shared by them; the
//! loaders live in `folder` (a working tree) and `git` (a revision), the layout rules
//! they share in `layout`, and the path rules (joining, escaping the root, opening
//! only regular files) in `paths`.

mod folder;
mod git;
mod layout;
mod paths;

use std::path::PathBuf;

use crate::diagnostics::Diagnostic;

pub use folder::load_folder;
pub use git::load_revision;
pub use paths::{join_inside, WalkError};
pub(crate) use paths::{join_rel, open_regular};

/// Manifest files larger than this are refused: a desired-state file is never that big,
/// and reading one should never take the machine's memory.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Errors that stop loading altogether. Problems with the content of a file are
/// [`Diagnostic`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the manifests folder `{path}`")]
    ReadRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not inside a Git repository, so `--rev` cannot be used")]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("revision `{rev}` was not found in the repository at `{repo}`")]
    RevisionNotFound {
        rev: String,
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("`{path}` does not exist in revision `{rev}`")]
    NotInRevision { path: String, rev: String },
    #[error("reading revision `{rev}` failed")]
    Git {
        rev: String,
        #[source]
        source: git2::Error,
    },
}

impl Error {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::ReadRoot { .. } => Some(
                "pass the folder that holds one subfolder per workspace, e.g. `cairn validate manifests/`"
                    .into(),
            ),
            Error::NotARepository { .. } => {
                Some("run inside a Git checkout, or drop `--rev` to read the folder as it is".into())
            }
            Error::RevisionNotFound { .. } => Some(
                "use a branch, tag or commit that exists locally (`git log --oneline` lists commits)"
                    .into(),
            ),
            Error::NotInRevision { .. } => {
                Some("the folder may have been added after that revision; try a later one".into())
            }
            Error::Git { .. } => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a snapshot was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A folder on disk, as it is now.
    Folder { root: PathBuf },
    /// A folder inside a commit.
    Revision {
        /// The repository's working directory (or git dir, for a bare repository).
        repo: PathBuf,
        /// The revision as the user wrote it.
        rev: String,
        /// The full commit id it resolved to.
        commit: String,
        /// The manifests root inside the commit's tree (`""` for the top).
        subdir: String,
    },
}

impl Origin {
    /// A short human description: `manifests/` or `main (3f9a2c1) manifests/`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Folder { root } => root.display().to_string(),
            Origin::Revision {
                rev,
                commit,
                subdir,
                ..
            } => {
                let short = &commit[..commit.len().min(7)];
                let dir = if subdir.is_empty() {
                    "."
                } else {
                    subdir.as_str()
                };
                if rev.starts_with(short) {
                    format!("{dir} at {short}")
                } else {
                    format!("{dir} at {rev} ({short})")
                }
            }
        }
    }
}

/// One manifest file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the manifests root, with `/` separators: `credit-risk/data.toml`.
    pub path: String,
    /// The workspace folder it belongs to.
    pub workspace: String,
    pub text: String,
}

/// What a path inside the manifests root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// It exists, but a symbolic link leads outside the root.
    Outside,
}

/// A file under the manifests root, as listed by [`Tree::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Path relative to the listed folder, `/`-separated.
    pub path: String,
    pub size: u64,
    /// What identifies this exact content without reading it.
    pub fingerprint: Fingerprint,
}

/// Identifies a file's content cheaply: on disk by size, modification time and inode; in
/// Git by the blob id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fingerprint {
    Disk { mtime_ns: u128, inode: u64 },
    Blob(String),
}

/// Read access to the files under the manifests root, wherever they come from.
pub trait Tree: Send + Sync {
    /// Returns what `path` (relative to the root, already normalised) is, if it exists and
    /// stays inside the root.
    fn entry(&self, path: &str) -> Option<EntryKind>;

    /// Lists every file under `dir` (or `dir` itself if it is a file), recursively,
    /// sorted by path. Refuses what [`WalkError`] names: links leading outside the root,
    /// links to folders, loops, broken links and files that are not regular files.
    fn walk(&self, dir: &str) -> Result<Vec<TreeFile>, WalkError>;

    /// Reads a file (`path` relative to the root).
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>>;

    /// Returns the file's path on disk, if the tree is a folder (for streaming reads).
    fn disk_path(&self, path: &str) -> Option<PathBuf>;
}

/// All manifest files of one root, read at one moment or one revision.
pub struct Snapshot {
    pub origin: Origin,
    /// Manifest files, sorted by path.
    pub files: Vec<SourceFile>,
    /// Workspace folders found (holding a `workspace.toml`), sorted.
    pub workspaces: Vec<String>,
    /// Problems with files that could not be read as manifests.
    pub problems: Vec<Diagnostic>,
    tree: Box<dyn Tree>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("origin", &self.origin)
            .field("files", &self.files.len())
            .field("workspaces", &self.workspaces)
            .finish()
    }
}

impl Snapshot {
    /// Returns the text of a manifest file, for rendering snippets.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| self.files[i].text.as_str())
    }

    /// Returns what a path relative to the root is, if it exists inside the root.
    pub fn entry(&self, path: &str) -> Option<EntryKind> {
        self.tree.entry(path)
    }

    /// Lists the files under a folder of the root; see [`Tree::walk`].
    pub fn files(&self, dir: &str) -> std::io::Result<Vec<TreeFile>> {
        Ok(self.tree.walk(dir)?)
    }

    /// Lists the files under a folder of the root, saying exactly what is wrong when
    /// the folder can't be read as data; see [`Tree::walk`].
    pub fn walk(&self, dir: &str) -> Result<Vec<TreeFile>, WalkError> {
        self.tree.walk(dir)
    }

    /// Reads a file under the root.
    pub fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        self.tree.read(path)
    }

    /// Returns the file's path on disk when reading from a folder.
    pub fn disk_path(&self, path: &str) -> Option<PathBuf> {
        self.tree.disk_path(path)
    }

    /// Returns the Git commit the snapshot was read at, if any.
    pub fn commit(&self) -> Option<&str> {
        match &self.origin {
            Origin::Revision { commit, .. } => Some(commit),
            Origin::Folder { .. } => None,
        }
    }

    /// Whether a folder snapshot differs from the commit `HEAD` points at: a file under
    /// the root modified, added or deleted and not ignored (Cairn's own `.cairn/` left
    /// out). A revision, or a folder outside any Git repository, has none.
    pub fn has_uncommitted_changes(&self) -> bool {
        let Origin::Folder { root } = &self.origin else {
            return false;
        };
        let Ok(repo) = git2::Repository::discover(root) else {
            return false;
        };
        let (Some(workdir), Ok(root)) = (repo.workdir(), root.canonicalize()) else {
            return false;
        };
        let Ok(workdir) = workdir.canonicalize() else {
            return false;
        };
        let Ok(inside) = root.strip_prefix(&workdir) else {
            return false;
        };
        let prefix = inside.to_string_lossy().replace('\\', "/");
        let mut options = git2::StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false);
        if !prefix.is_empty() {
            options.pathspec(&prefix);
        }
        let Ok(statuses) = repo.statuses(Some(&mut options)) else {
            return false;
        };
        statuses.iter().any(|entry| {
            let path = entry.path().unwrap_or("");
            let local = path
                .strip_prefix(&prefix)
                .unwrap_or(path)
                .trim_start_matches('/');
            !local.starts_with(".cairn/") && !entry.status().is_ignored()
        })
    }

    /// Returns the commit the snapshot stands for: the revision read, or for a folder the
    /// commit `HEAD` points at in the enclosing repository (the folder may hold
    /// uncommitted changes on top of it).
    pub fn head_commit(&self) -> Option<String> {
        match &self.origin {
            Origin::Revision { commit, .. } => Some(commit.clone()),
            Origin::Folder { root } => {
                let repo = git2::Repository::discover(root).ok()?;
                let head = repo.head().ok()?.peel_to_commit().ok()?;
                Some(head.id().to_string())
            }
        }
    }
}

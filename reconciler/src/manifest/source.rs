//! Reading manifest files, from a folder on disk or from a Git revision.
//!
//! A manifests root holds one folder per workspace: `<root>/<workspace>/workspace.toml`
//! plus any number of `*.toml` files beside it (not in subfolders, which hold data).
//! Loading from a revision reads blobs straight from the commit's tree through git2; the
//! working copy is never touched, so a dirty working tree and `--rev HEAD` can differ.
//!
//! This module owns file discovery and the size and encoding checks. It does not parse.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::diagnostics::{Diagnostic, Location};

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

/// A file under the manifests root, as listed by [`Tree::files`].
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
    /// sorted by path. Symbolic links leading outside the root are refused.
    fn files(&self, dir: &str) -> std::io::Result<Vec<TreeFile>>;

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

    /// Lists the files under a folder of the root; see [`Tree::files`].
    pub fn files(&self, dir: &str) -> std::io::Result<Vec<TreeFile>> {
        self.tree.files(dir)
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

/// Joins `base` (a folder relative to the root) and a user-written relative `path`, and
/// normalises the result. Returns `None` when the result would leave the root or the
/// path is absolute.
pub fn join_inside(base: &str, path: &str) -> Option<String> {
    let candidate = Path::new(path);
    if candidate.is_absolute() || path.starts_with('/') || path.starts_with('\\') {
        return None;
    }
    let mut parts: Vec<String> = base
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    for component in candidate.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".toml") && !name.starts_with('.')
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Collects file bytes into a [`SourceFile`], or a diagnostic if they can't be one.
fn accept_file(
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

fn too_large(path: &str, size: u64) -> Diagnostic {
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

/// Loads every manifest under `root` as it is on disk now.
pub fn load_folder(root: &Path) -> Result<Snapshot> {
    let read_root = |source| Error::ReadRoot {
        path: root.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    let mut problems = Vec::new();
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(root).map_err(read_root)? {
        let entry = entry.map_err(read_root)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_hidden(&name) {
            continue;
        }
        let file_type = entry.file_type().map_err(read_root)?;
        if file_type.is_dir() {
            dirs.push(name);
        } else if is_manifest_name(&name) {
            stray.push(name);
        }
    }
    dirs.sort();
    stray.sort();

    let mut files = Vec::new();
    let mut workspaces = Vec::new();
    for dir in &dirs {
        let mut names = Vec::new();
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_manifest_name(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push((name, entry.path()));
            }
        }
        names.sort();
        if names.is_empty() {
            continue;
        }
        if names.iter().any(|(n, _)| n == "workspace.toml") {
            workspaces.push(dir.clone());
        }
        for (name, path) in names {
            let rel = format!("{dir}/{name}");
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size > MAX_MANIFEST_BYTES {
                problems.push(too_large(&rel, size));
                continue;
            }
            let mut bytes = Vec::with_capacity(size as usize);
            match std::fs::File::open(&path)
                .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
            {
                Ok(_) if bytes.len() as u64 > MAX_MANIFEST_BYTES => {
                    problems.push(too_large(&rel, bytes.len() as u64))
                }
                Ok(_) => accept_file(&mut files, &mut problems, rel, dir, bytes),
                Err(err) => problems.push(
                    Diagnostic::error("unreadable", format!("cannot read manifest file: {err}"))
                        .at(Location::file(&rel)),
                ),
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let root_is_workspace = stray.iter().any(|n| n == "workspace.toml");
    add_layout_problems(&mut problems, &stray, root_is_workspace);
    let canonical = root.canonicalize().map_err(read_root)?;
    Ok(Snapshot {
        origin: Origin::Folder {
            root: root.to_path_buf(),
        },
        files,
        workspaces,
        problems,
        tree: Box::new(FolderTree::new(canonical)),
    })
}

fn add_layout_problems(problems: &mut Vec<Diagnostic>, stray: &[String], root_is_workspace: bool) {
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

struct FolderTree {
    /// Canonical (no symbolic links).
    root: PathBuf,
    /// Folders under the root already seen to be real folders, not links: many sources
    /// share parents, so each is checked once instead of resolving every path in full.
    plain_dirs: Mutex<std::collections::HashSet<String>>,
}

/// Where a path under a folder root leads.
enum Resolved {
    /// The path on disk, free of links that leave the root, and its metadata.
    Inside(PathBuf, std::fs::Metadata),
    Outside,
    Missing,
}

impl FolderTree {
    fn new(root: PathBuf) -> FolderTree {
        FolderTree {
            root,
            plain_dirs: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Follows `path` (relative, normalised) from the root, refusing symbolic links that
    /// lead outside it. Costs one `lstat` per component not seen before.
    fn resolve(&self, path: &str) -> Resolved {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut prefix = String::new();
        for (i, part) in parts.iter().enumerate() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            let last = i + 1 == parts.len();
            if !last && self.plain_dirs.lock().is_ok_and(|d| d.contains(&prefix)) {
                continue;
            }
            let full = self.root.join(&prefix);
            let Ok(meta) = std::fs::symlink_metadata(&full) else {
                return Resolved::Missing;
            };
            if meta.file_type().is_symlink() {
                // A link: resolve the whole path the slow way and check where it lands.
                return match self.root.join(path).canonicalize() {
                    Ok(real) if real.starts_with(&self.root) => match std::fs::metadata(&real) {
                        Ok(meta) => Resolved::Inside(real, meta),
                        Err(_) => Resolved::Missing,
                    },
                    Ok(_) => Resolved::Outside,
                    Err(_) => Resolved::Missing,
                };
            }
            if last {
                return Resolved::Inside(full, meta);
            }
            if !meta.is_dir() {
                return Resolved::Missing;
            }
            if let Ok(mut dirs) = self.plain_dirs.lock() {
                dirs.insert(prefix.clone());
            }
        }
        match std::fs::metadata(&self.root) {
            Ok(meta) => Resolved::Inside(self.root.clone(), meta),
            Err(_) => Resolved::Missing,
        }
    }
}

impl Tree for FolderTree {
    fn entry(&self, path: &str) -> Option<EntryKind> {
        match self.resolve(path) {
            Resolved::Inside(_, meta) if meta.is_dir() => Some(EntryKind::Dir),
            Resolved::Inside(..) => Some(EntryKind::File),
            Resolved::Outside => Some(EntryKind::Outside),
            Resolved::Missing => None,
        }
    }

    fn files(&self, dir: &str) -> std::io::Result<Vec<TreeFile>> {
        let real = match self.resolve(dir) {
            Resolved::Inside(real, _) => real,
            Resolved::Outside => return Err(outside(dir)),
            Resolved::Missing => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("`{dir}` does not exist"),
                ))
            }
        };
        let mut out = Vec::new();
        let meta = std::fs::metadata(&real)?;
        if meta.is_file() {
            let name = real
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file")
                .to_string();
            out.push(disk_file(name, &meta));
            return Ok(out);
        }
        let mut stack = vec![(real, String::new())];
        while let Some((folder, prefix)) = stack.pop() {
            for entry in std::fs::read_dir(&folder)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                let mut file_type = entry.file_type()?;
                let mut path = entry.path();
                if file_type.is_symlink() {
                    path = path.canonicalize()?;
                    if !path.starts_with(&self.root) {
                        return Err(outside(&format!("{dir}/{rel}")));
                    }
                    file_type = std::fs::metadata(&path)?.file_type();
                }
                if file_type.is_dir() {
                    stack.push((path, rel));
                } else if file_type.is_file() {
                    out.push(disk_file(rel, &std::fs::metadata(&path)?));
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.root.join(path))
    }

    fn disk_path(&self, path: &str) -> Option<PathBuf> {
        Some(self.root.join(path))
    }
}

fn outside(path: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("`{path}` leads outside the manifests root"),
    )
}

fn disk_file(path: String, meta: &std::fs::Metadata) -> TreeFile {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    TreeFile {
        path,
        size: meta.len(),
        fingerprint: Fingerprint::Disk { mtime_ns, inode },
    }
}

/// Loads every manifest under `path` as it was in revision `rev` (a branch, tag or commit)
/// of the Git repository that contains `path`.
pub fn load_revision(path: &Path, rev: &str) -> Result<Snapshot> {
    let repo = git2::Repository::discover(path).map_err(|source| Error::NotARepository {
        path: path.to_path_buf(),
        source,
    })?;
    let git = |source| Error::Git {
        rev: rev.to_string(),
        source,
    };
    let repo_dir = repo.workdir().unwrap_or_else(|| repo.path()).to_path_buf();
    let subdir = subdir_in_repo(path, &repo_dir);
    let (commit_id, tree_id, files, workspaces, problems) = {
        let commit = repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|source| Error::RevisionNotFound {
                rev: rev.to_string(),
                repo: repo_dir.clone(),
                source,
            })?;
        let commit_id = commit.id().to_string();
        let root_tree = commit.tree().map_err(git)?;
        let tree = if subdir.is_empty() {
            root_tree
        } else {
            root_tree
                .get_path(Path::new(&subdir))
                .and_then(|e| e.to_object(&repo))
                .and_then(|o| o.peel_to_tree())
                .map_err(|_| Error::NotInRevision {
                    path: subdir.clone(),
                    rev: rev.to_string(),
                })?
        };

        let mut files = Vec::new();
        let mut workspaces = Vec::new();
        let mut problems = Vec::new();
        let mut stray = Vec::new();
        for entry in tree.iter() {
            let Some(name) = entry.name().map(str::to_string) else {
                continue;
            };
            if is_hidden(&name) {
                continue;
            }
            match entry.kind() {
                Some(git2::ObjectType::Tree) => {
                    let dir = entry
                        .to_object(&repo)
                        .and_then(|o| o.peel_to_tree())
                        .map_err(git)?;
                    for file in dir.iter() {
                        let Some(file_name) = file.name() else {
                            continue;
                        };
                        if !is_manifest_name(file_name)
                            || file.kind() != Some(git2::ObjectType::Blob)
                        {
                            continue;
                        }
                        if file_name == "workspace.toml" {
                            workspaces.push(name.clone());
                        }
                        let rel = format!("{name}/{file_name}");
                        let blob = file
                            .to_object(&repo)
                            .and_then(|o| o.peel_to_blob())
                            .map_err(git)?;
                        if blob.size() as u64 > MAX_MANIFEST_BYTES {
                            problems.push(too_large(&rel, blob.size() as u64));
                            continue;
                        }
                        accept_file(
                            &mut files,
                            &mut problems,
                            rel,
                            &name,
                            blob.content().to_vec(),
                        );
                    }
                }
                Some(git2::ObjectType::Blob) if is_manifest_name(&name) => stray.push(name),
                _ => {}
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        workspaces.sort();
        stray.sort();
        let root_is_workspace = stray.iter().any(|n| n == "workspace.toml");
        add_layout_problems(&mut problems, &stray, root_is_workspace);

        (commit_id, tree.id(), files, workspaces, problems)
    };
    Ok(Snapshot {
        origin: Origin::Revision {
            repo: repo_dir,
            rev: rev.to_string(),
            commit: commit_id,
            subdir,
        },
        files,
        workspaces,
        problems,
        tree: Box::new(GitTree {
            repo: Mutex::new(repo),
            tree: tree_id,
        }),
    })
}

/// Returns `path` relative to the repository's working directory, with `/` separators.
fn subdir_in_repo(path: &Path, repo_dir: &Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let repo_dir = repo_dir
        .canonicalize()
        .unwrap_or_else(|_| repo_dir.to_path_buf());
    canonical
        .strip_prefix(&repo_dir)
        .map(|p| {
            p.components()
                .filter_map(|c| c.as_os_str().to_str())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

struct GitTree {
    repo: Mutex<git2::Repository>,
    tree: git2::Oid,
}

/// What a path in a commit's tree leads to, following symbolic links (stored in Git as
/// blobs with mode 120000 holding the target).
enum GitPath {
    Found {
        kind: git2::ObjectType,
        id: git2::Oid,
    },
    Outside,
    Missing,
}

const GIT_LINK_MODE: i32 = 0o120000;
const MAX_LINKS: usize = 16;

fn resolve_git_path(repo: &git2::Repository, root: &git2::Tree<'_>, path: &str) -> GitPath {
    let mut path = path.to_string();
    for _ in 0..MAX_LINKS {
        let parts: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_string)
            .collect();
        if parts.is_empty() {
            return GitPath::Found {
                kind: git2::ObjectType::Tree,
                id: root.id(),
            };
        }
        // Git names can't hold NUL (and git2 panics on one): no such entry.
        if parts.iter().any(|p| p.contains('\0')) {
            return GitPath::Missing;
        }
        let mut current = root.clone();
        let mut next = None;
        for (i, part) in parts.iter().enumerate() {
            let Some(entry) = current.get_name(part) else {
                return GitPath::Missing;
            };
            if entry.filemode() == GIT_LINK_MODE {
                let Ok(blob) = repo.find_blob(entry.id()) else {
                    return GitPath::Missing;
                };
                let target = String::from_utf8_lossy(blob.content()).to_string();
                let Some(joined) = join_inside(&parts[..i].join("/"), &target) else {
                    return GitPath::Outside;
                };
                let rest = parts[i + 1..].join("/");
                next = Some(match (joined.is_empty(), rest.is_empty()) {
                    (_, true) => joined,
                    (true, false) => rest,
                    (false, false) => format!("{joined}/{rest}"),
                });
                break;
            }
            let Some(kind) = entry.kind() else {
                return GitPath::Missing;
            };
            let id = entry.id();
            drop(entry);
            if i + 1 == parts.len() {
                return GitPath::Found { kind, id };
            }
            match repo.find_tree(id) {
                Ok(tree) if kind == git2::ObjectType::Tree => current = tree,
                _ => return GitPath::Missing,
            }
        }
        match next {
            Some(p) => path = p,
            None => return GitPath::Missing,
        }
    }
    GitPath::Missing
}

impl Tree for GitTree {
    fn entry(&self, path: &str) -> Option<EntryKind> {
        let repo = self.repo.lock().ok()?;
        let tree = repo.find_tree(self.tree).ok()?;
        match resolve_git_path(&repo, &tree, path) {
            GitPath::Found {
                kind: git2::ObjectType::Tree,
                ..
            } => Some(EntryKind::Dir),
            GitPath::Found {
                kind: git2::ObjectType::Blob,
                ..
            } => Some(EntryKind::File),
            GitPath::Found { .. } | GitPath::Missing => None,
            GitPath::Outside => Some(EntryKind::Outside),
        }
    }

    fn files(&self, dir: &str) -> std::io::Result<Vec<TreeFile>> {
        let repo = self
            .repo
            .lock()
            .map_err(|_| git_io("repository lock poisoned"))?;
        let root = repo.find_tree(self.tree).map_err(|e| git_io(e.message()))?;
        let blob_file = |path: String, id: git2::Oid| -> std::io::Result<TreeFile> {
            let blob = repo.find_blob(id).map_err(|e| git_io(e.message()))?;
            Ok(TreeFile {
                path,
                size: blob.size() as u64,
                fingerprint: Fingerprint::Blob(id.to_string()),
            })
        };
        let mut out = Vec::new();
        match resolve_git_path(&repo, &root, dir) {
            GitPath::Found {
                kind: git2::ObjectType::Blob,
                id,
            } => {
                let name = dir.rsplit('/').next().unwrap_or("file").to_string();
                out.push(blob_file(name, id)?);
            }
            GitPath::Found {
                kind: git2::ObjectType::Tree,
                id,
            } => {
                let tree = repo.find_tree(id).map_err(|e| git_io(e.message()))?;
                let mut entries = Vec::new();
                tree.walk(git2::TreeWalkMode::PreOrder, |prefix, e| {
                    if e.kind() == Some(git2::ObjectType::Blob) {
                        if let Some(name) = e.name() {
                            entries.push((format!("{prefix}{name}"), e.id(), e.filemode()));
                        }
                    }
                    git2::TreeWalkResult::Ok
                })
                .map_err(|e| git_io(e.message()))?;
                for (rel, id, mode) in entries {
                    if mode != GIT_LINK_MODE {
                        out.push(blob_file(rel, id)?);
                        continue;
                    }
                    // A link inside the folder: follow it, refusing any that leave the root.
                    let full = if dir.is_empty() {
                        rel.clone()
                    } else {
                        format!("{dir}/{rel}")
                    };
                    match resolve_git_path(&repo, &root, &full) {
                        GitPath::Found {
                            kind: git2::ObjectType::Blob,
                            id,
                        } => out.push(blob_file(rel, id)?),
                        GitPath::Outside => return Err(outside(&full)),
                        GitPath::Found { .. } => {
                            return Err(git_io(&format!(
                                "`{full}` links to a folder; at a Git revision only links to files are followed"
                            )))
                        }
                        GitPath::Missing => {
                            return Err(git_io(&format!("`{full}` is a broken symbolic link")))
                        }
                    }
                }
            }
            GitPath::Outside => return Err(outside(dir)),
            GitPath::Found { .. } | GitPath::Missing => {
                return Err(git_io(&format!("`{dir}` does not exist in this revision")))
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let repo = self
            .repo
            .lock()
            .map_err(|_| git_io("repository lock poisoned"))?;
        let root = repo.find_tree(self.tree).map_err(|e| git_io(e.message()))?;
        match resolve_git_path(&repo, &root, path) {
            GitPath::Found {
                kind: git2::ObjectType::Blob,
                id,
            } => {
                let blob = repo.find_blob(id).map_err(|e| git_io(e.message()))?;
                Ok(blob.content().to_vec())
            }
            GitPath::Outside => Err(outside(path)),
            _ => Err(git_io(&format!("`{path}` is not a file in this revision"))),
        }
    }

    fn disk_path(&self, _path: &str) -> Option<PathBuf> {
        None
    }
}

fn git_io(message: &str) -> std::io::Error {
    std::io::Error::other(message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths_inside_the_root() {
        assert_eq!(
            join_inside("ws", "data/loans/").as_deref(),
            Some("ws/data/loans")
        );
        assert_eq!(join_inside("ws", "./a/../b").as_deref(), Some("ws/b"));
        assert_eq!(join_inside("ws", "../other/x").as_deref(), Some("other/x"));
        assert_eq!(join_inside("ws", "../../etc"), None);
        assert_eq!(join_inside("ws", "/etc/passwd"), None);
    }
}

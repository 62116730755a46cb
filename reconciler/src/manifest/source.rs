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

/// Why a dataset or model source (a folder or file under the manifests root) can't be
/// read as data. Paths are relative to the manifests root.
///
/// Walking a source never follows a symbolic link to a folder: a link back to an
/// ancestor (`ln -s . self`) would make the walk endless, and one to a sibling would
/// read the same files twice. Links to files are followed when they stay inside the
/// manifests root. Links on the way *to* the source (`source = "data/current"` with
/// `current -> v3`) are resolved, also only inside the root.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("`{path}` does not exist")]
    Missing { path: String },
    #[error("`{path}` leads outside the manifests root")]
    Outside { path: String },
    #[error("`{path}` is a symbolic link to a folder, and links to folders are not followed")]
    FolderLink { path: String },
    #[error("`{path}` is a symbolic link that loops back on itself")]
    Loop { path: String },
    #[error("`{path}` is a symbolic link to nothing")]
    Broken { path: String },
    #[error("`{path}` is {what}, not a regular file")]
    Special { path: String, what: &'static str },
    #[error("cannot read `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl WalkError {
    /// The path the problem is about, relative to the manifests root.
    pub fn path(&self) -> &str {
        match self {
            WalkError::Missing { path }
            | WalkError::Outside { path }
            | WalkError::FolderLink { path }
            | WalkError::Loop { path }
            | WalkError::Broken { path }
            | WalkError::Special { path, .. }
            | WalkError::Io { path, .. } => path,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            WalkError::Missing { .. } => {
                "paths are relative to the workspace folder; with `--rev`, the folder must be committed"
            }
            WalkError::Outside { .. } => {
                "paths from manifests must stay inside the manifests root; copy the data in, or use an `s3://` URL"
            }
            WalkError::FolderLink { .. } => {
                "replace the link with the folder itself, or point `source` at the folder it links to"
            }
            WalkError::Loop { .. } | WalkError::Broken { .. } => {
                "fix or remove the link; a source holds regular files, and links to files inside the manifests root"
            }
            WalkError::Special { .. } => {
                "a source holds regular files only; remove it, or move it out of the source folder"
            }
            WalkError::Io { .. } => "check that the files are readable by the user running cairn",
        }
    }
}

impl From<WalkError> for std::io::Error {
    fn from(err: WalkError) -> std::io::Error {
        let kind = match &err {
            WalkError::Missing { .. } | WalkError::Broken { .. } => std::io::ErrorKind::NotFound,
            WalkError::Outside { .. } => std::io::ErrorKind::PermissionDenied,
            WalkError::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, err)
    }
}

/// Describes a file type that is neither a regular file, a folder nor a link.
fn special_kind(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    let _ = file_type;
    "a special file"
}

/// Opens a regular file for reading without ever blocking on a named pipe or a device
/// that was swapped in after the file was listed.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "`{}` is {}, not a regular file",
                path.display(),
                special_kind(meta.file_type())
            ),
        ));
    }
    Ok(file)
}

/// Joins two `/`-separated relative paths, either of which may be empty.
pub(crate) fn join_rel(dir: &str, rel: &str) -> String {
    match (dir.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => dir.to_string(),
        (false, false) => format!("{dir}/{rel}"),
    }
}

fn is_loop(err: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = err;
        false
    }
}

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
    let canonical = root.canonicalize().map_err(read_root)?;
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
        } else if file_type.is_symlink() && holds_manifests(&entry.path()) {
            problems.push(linked_workspace(&name));
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
            if !is_manifest_name(&name) {
                continue;
            }
            let rel = format!("{dir}/{name}");
            match manifest_on_disk(&canonical, &entry, &rel) {
                Ok(Some(path)) => names.push((name, path)),
                Ok(None) => {}
                Err(problem) => problems.push(*problem),
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
            match open_regular(&path)
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

/// Decides what a `*.toml` entry of a workspace folder is: a manifest to read (its path
/// on disk, links resolved), a folder to leave alone, or a problem to report. A manifest
/// that is a symbolic link is read when it leads to a regular file inside the manifests
/// root, and refused otherwise; named pipes, sockets and devices are refused without
/// being opened. Nothing is skipped without a word.
fn manifest_on_disk(
    root: &Path,
    entry: &std::fs::DirEntry,
    rel: &str,
) -> Result<Option<PathBuf>, Box<Diagnostic>> {
    let problem = |message: String, help: &str| {
        Box::new(
            Diagnostic::error("manifest-file", message)
                .at(Location::file(rel))
                .help(help.to_string()),
        )
    };
    let file_type = entry.file_type().map_err(|e| {
        problem(
            format!("cannot read manifest file: {e}"),
            "check the file's permissions",
        )
    })?;
    if file_type.is_dir() {
        return Ok(None);
    }
    if file_type.is_file() {
        return Ok(Some(entry.path()));
    }
    let link_help =
        "replace the link with the file itself, or point it at a file inside the manifests root";
    if !file_type.is_symlink() {
        return Err(problem(
            format!(
                "manifest file is {}, not a regular file",
                special_kind(file_type)
            ),
            "a manifest is a regular file; remove it or rename it so it doesn't end in `.toml`",
        ));
    }
    let real = match entry.path().canonicalize() {
        Ok(real) => real,
        Err(e) if is_loop(&e) => {
            return Err(problem(
                "manifest file is a symbolic link that loops back on itself".into(),
                link_help,
            ))
        }
        Err(_) => {
            return Err(problem(
                "manifest file is a symbolic link to nothing".into(),
                link_help,
            ))
        }
    };
    if !real.starts_with(root) {
        return Err(problem(
            "manifest file is a symbolic link that leads outside the manifests root".into(),
            link_help,
        ));
    }
    match std::fs::metadata(&real) {
        Ok(meta) if meta.is_file() => Ok(Some(real)),
        Ok(meta) if meta.is_dir() => Ok(None),
        Ok(meta) => Err(problem(
            format!(
                "manifest file is a symbolic link to {}, not to a regular file",
                special_kind(meta.file_type())
            ),
            link_help,
        )),
        Err(e) => Err(problem(
            format!("cannot read manifest file: {e}"),
            link_help,
        )),
    }
}

/// Returns whether a folder (reached through a link) holds `*.toml` files.
fn holds_manifests(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
        && std::fs::read_dir(path).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_str().is_some_and(is_manifest_name))
        })
}

fn linked_workspace(name: &str) -> Diagnostic {
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
    /// A link on the way loops or leads nowhere.
    Loop,
    Broken,
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
            if *part == ".." || *part == "." {
                // Not normalised: never let `..` climb out of the root.
                return Resolved::Outside;
            }
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
                // A link: resolve it, check where it lands, then the rest of the path.
                match full.canonicalize() {
                    Ok(real) if real.starts_with(&self.root) => {}
                    Ok(_) => return Resolved::Outside,
                    Err(e) if is_loop(&e) => return Resolved::Loop,
                    Err(_) => return Resolved::Broken,
                }
                return match self.root.join(path).canonicalize() {
                    Ok(real) if real.starts_with(&self.root) => match std::fs::metadata(&real) {
                        Ok(meta) => Resolved::Inside(real, meta),
                        Err(_) => Resolved::Missing,
                    },
                    Ok(_) => Resolved::Outside,
                    Err(e) if is_loop(&e) => Resolved::Loop,
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

    /// Returns where a path listed by [`Tree::walk`] is on disk; refuses paths that are
    /// absolute or climb out of the root.
    fn inside(&self, path: &str) -> std::io::Result<PathBuf> {
        match join_inside("", path) {
            Some(rel) => Ok(self.root.join(rel)),
            None => Err(outside(path)),
        }
    }

    /// What a link met while walking leads to: a regular file inside the root (its
    /// metadata), or why not.
    fn follow_file_link(&self, link: &Path, rel: &str) -> Result<std::fs::Metadata, WalkError> {
        let real = match link.canonicalize() {
            Ok(real) => real,
            Err(e) if is_loop(&e) => return Err(WalkError::Loop { path: rel.into() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WalkError::Broken { path: rel.into() })
            }
            Err(source) => {
                return Err(WalkError::Io {
                    path: rel.into(),
                    source,
                })
            }
        };
        if !real.starts_with(&self.root) {
            return Err(WalkError::Outside { path: rel.into() });
        }
        let meta = std::fs::metadata(&real).map_err(|source| WalkError::Io {
            path: rel.into(),
            source,
        })?;
        if meta.is_dir() {
            return Err(WalkError::FolderLink { path: rel.into() });
        }
        if !meta.is_file() {
            return Err(WalkError::Special {
                path: rel.into(),
                what: special_kind(meta.file_type()),
            });
        }
        Ok(meta)
    }
}

impl Tree for FolderTree {
    fn entry(&self, path: &str) -> Option<EntryKind> {
        match self.resolve(path) {
            Resolved::Inside(_, meta) if meta.is_dir() => Some(EntryKind::Dir),
            Resolved::Inside(..) => Some(EntryKind::File),
            Resolved::Outside => Some(EntryKind::Outside),
            Resolved::Missing | Resolved::Loop | Resolved::Broken => None,
        }
    }

    fn walk(&self, dir: &str) -> Result<Vec<TreeFile>, WalkError> {
        let (real, meta) = match self.resolve(dir) {
            Resolved::Inside(real, meta) => (real, meta),
            Resolved::Outside => return Err(WalkError::Outside { path: dir.into() }),
            Resolved::Missing => return Err(WalkError::Missing { path: dir.into() }),
            Resolved::Loop => return Err(WalkError::Loop { path: dir.into() }),
            Resolved::Broken => return Err(WalkError::Broken { path: dir.into() }),
        };
        let mut out = Vec::new();
        if meta.is_file() {
            let name = real
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file")
                .to_string();
            out.push(disk_file(name, &meta));
            return Ok(out);
        }
        if !meta.is_dir() {
            return Err(WalkError::Special {
                path: dir.into(),
                what: special_kind(meta.file_type()),
            });
        }
        // Links to folders are never followed, so every folder is visited once and the
        // walk ends (a link back to an ancestor is refused, not looped through).
        let mut stack = vec![(real, String::new())];
        while let Some((folder, prefix)) = stack.pop() {
            let io = |source| WalkError::Io {
                path: join_rel(dir, &prefix),
                source,
            };
            for entry in std::fs::read_dir(&folder).map_err(io)? {
                let entry = entry.map_err(io)?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let rel = join_rel(&prefix, &name);
                let full = join_rel(dir, &rel);
                let io = |source| WalkError::Io {
                    path: full.clone(),
                    source,
                };
                let file_type = entry.file_type().map_err(io)?;
                if file_type.is_dir() {
                    stack.push((entry.path(), rel));
                } else if file_type.is_file() {
                    out.push(disk_file(rel, &entry.metadata().map_err(io)?));
                } else if file_type.is_symlink() {
                    let meta = self.follow_file_link(&entry.path(), &full)?;
                    out.push(disk_file(rel, &meta));
                } else {
                    return Err(WalkError::Special {
                        path: full,
                        what: special_kind(file_type),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        open_regular(&self.inside(path)?)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn disk_path(&self, path: &str) -> Option<PathBuf> {
        self.inside(path).ok()
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
                        let rel = format!("{name}/{file_name}");
                        // A committed link is read where it leads, as on disk.
                        let id = if file.filemode() == GIT_LINK_MODE {
                            match manifest_link_in_git(&repo, &tree, &rel) {
                                Ok(Some(id)) => id,
                                Ok(None) => continue,
                                Err(problem) => {
                                    problems.push(*problem);
                                    continue;
                                }
                            }
                        } else {
                            file.id()
                        };
                        if file_name == "workspace.toml" {
                            workspaces.push(name.clone());
                        }
                        let blob = repo.find_blob(id).map_err(git)?;
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
                Some(git2::ObjectType::Blob) if entry.filemode() == GIT_LINK_MODE => {
                    if let GitPath::Found {
                        kind: git2::ObjectType::Tree,
                        id,
                    } = resolve_git_path(&repo, &tree, &name)
                    {
                        let holds = repo.find_tree(id).is_ok_and(|t| {
                            t.iter().any(|e| e.name().is_some_and(is_manifest_name))
                        });
                        if holds {
                            problems.push(linked_workspace(&name));
                        }
                    }
                }
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

/// Where a manifest committed as a symbolic link leads: a blob inside the manifests root
/// (read as the manifest), a folder (left alone), or a problem.
fn manifest_link_in_git(
    repo: &git2::Repository,
    root: &git2::Tree<'_>,
    rel: &str,
) -> Result<Option<git2::Oid>, Box<Diagnostic>> {
    let problem = |message: &str| {
        Box::new(
            Diagnostic::error("manifest-file", message.to_string())
                .at(Location::file(rel))
                .help("replace the link with the file itself, or point it at a file inside the manifests root"),
        )
    };
    match resolve_git_path(repo, root, rel) {
        GitPath::Found {
            kind: git2::ObjectType::Blob,
            id,
        } => Ok(Some(id)),
        GitPath::Found {
            kind: git2::ObjectType::Tree,
            ..
        } => Ok(None),
        GitPath::Found { .. } => Err(problem(
            "manifest file is a symbolic link to a Git submodule, not to a file",
        )),
        GitPath::Outside => Err(problem(
            "manifest file is a symbolic link that leads outside the manifests root",
        )),
        GitPath::Missing => Err(problem("manifest file is a symbolic link to nothing")),
        GitPath::Loop => Err(problem(
            "manifest file is a symbolic link that loops back on itself",
        )),
    }
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
    /// More links than [`MAX_LINKS`] in a row: a loop, in practice.
    Loop,
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
    GitPath::Loop
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
            GitPath::Found { .. } | GitPath::Missing | GitPath::Loop => None,
            GitPath::Outside => Some(EntryKind::Outside),
        }
    }

    fn walk(&self, dir: &str) -> Result<Vec<TreeFile>, WalkError> {
        let io = |path: &str, message: &str| WalkError::Io {
            path: path.to_string(),
            source: git_io(message),
        };
        let repo = self
            .repo
            .lock()
            .map_err(|_| io(dir, "repository lock poisoned"))?;
        let root = repo
            .find_tree(self.tree)
            .map_err(|e| io(dir, e.message()))?;
        let blob_file = |path: String, id: git2::Oid| -> Result<TreeFile, WalkError> {
            let blob = repo.find_blob(id).map_err(|e| io(&path, e.message()))?;
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
                let tree = repo.find_tree(id).map_err(|e| io(dir, e.message()))?;
                let mut entries = Vec::new();
                tree.walk(git2::TreeWalkMode::PreOrder, |prefix, e| {
                    if let Some(name) = e.name() {
                        entries.push((format!("{prefix}{name}"), e.id(), e.filemode(), e.kind()));
                    }
                    git2::TreeWalkResult::Ok
                })
                .map_err(|e| io(dir, e.message()))?;
                for (rel, id, mode, kind) in entries {
                    let full = join_rel(dir, &rel);
                    match kind {
                        Some(git2::ObjectType::Tree) => continue,
                        Some(git2::ObjectType::Blob) if mode != GIT_LINK_MODE => {
                            out.push(blob_file(rel, id)?);
                            continue;
                        }
                        Some(git2::ObjectType::Blob) => {}
                        Some(git2::ObjectType::Commit) => {
                            return Err(WalkError::Special {
                                path: full,
                                what: "a Git submodule",
                            })
                        }
                        _ => {
                            return Err(WalkError::Special {
                                path: full,
                                what: "an unknown kind of Git entry",
                            })
                        }
                    }
                    // A link inside the folder: follow it to a file, refusing any that
                    // leave the root or lead to a folder (as on disk).
                    match resolve_git_path(&repo, &root, &full) {
                        GitPath::Found {
                            kind: git2::ObjectType::Blob,
                            id,
                        } => out.push(blob_file(rel, id)?),
                        GitPath::Found {
                            kind: git2::ObjectType::Tree,
                            ..
                        } => return Err(WalkError::FolderLink { path: full }),
                        GitPath::Found { .. } => {
                            return Err(WalkError::Special {
                                path: full,
                                what: "a link to a Git submodule",
                            })
                        }
                        GitPath::Outside => return Err(WalkError::Outside { path: full }),
                        GitPath::Missing => return Err(WalkError::Broken { path: full }),
                        GitPath::Loop => return Err(WalkError::Loop { path: full }),
                    }
                }
            }
            GitPath::Found { .. } => {
                return Err(WalkError::Special {
                    path: dir.into(),
                    what: "a Git submodule",
                })
            }
            GitPath::Outside => return Err(WalkError::Outside { path: dir.into() }),
            GitPath::Missing => return Err(WalkError::Missing { path: dir.into() }),
            GitPath::Loop => return Err(WalkError::Loop { path: dir.into() }),
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

    /// A root with `ws/workspace.toml` and `ws/data/a.csv`.
    fn root() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("ws/data")).unwrap();
        std::fs::write(tmp.path().join("ws/workspace.toml"), "[workspace]\n").unwrap();
        std::fs::write(tmp.path().join("ws/data/a.csv"), "x\n").unwrap();
        tmp
    }

    #[cfg(unix)]
    #[test]
    fn a_walk_never_follows_a_link_to_a_folder() {
        let tmp = root();
        std::os::unix::fs::symlink(".", tmp.path().join("ws/data/self")).unwrap();
        let snapshot = load_folder(tmp.path()).unwrap();
        let err = snapshot.walk("ws/data").unwrap_err();
        assert!(
            matches!(&err, WalkError::FolderLink { path } if path == "ws/data/self"),
            "{err:?}"
        );
        // Through `files`, the same refusal as an I/O error that names the link.
        let err = snapshot.files("ws/data").unwrap_err();
        assert!(err.to_string().contains("ws/data/self"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_walk_refuses_pipes_loops_and_broken_links() {
        let tmp = root();
        let data = tmp.path().join("ws/data");
        std::os::unix::fs::symlink("b", data.join("a")).unwrap();
        std::os::unix::fs::symlink("a", data.join("b")).unwrap();
        let snapshot = load_folder(tmp.path()).unwrap();
        assert!(matches!(
            snapshot.walk("ws/data"),
            Err(WalkError::Loop { .. })
        ));

        let tmp = root();
        let data = tmp.path().join("ws/data");
        std::os::unix::fs::symlink("nothing", data.join("gone")).unwrap();
        let snapshot = load_folder(tmp.path()).unwrap();
        assert!(matches!(
            snapshot.walk("ws/data"),
            Err(WalkError::Broken { .. })
        ));

        let tmp = root();
        let pipe = std::ffi::CString::new(
            tmp.path()
                .join("ws/data/p")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a plain system call with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(pipe.as_ptr(), 0o644) }, 0);
        let snapshot = load_folder(tmp.path()).unwrap();
        assert!(matches!(
            snapshot.walk("ws/data"),
            Err(WalkError::Special {
                what: "a named pipe (FIFO)",
                ..
            })
        ));
        // Reading the pipe directly fails at once instead of waiting for a writer.
        assert!(snapshot.read("ws/data/p").is_err());
    }

    #[test]
    fn reads_never_leave_the_root() {
        let tmp = root();
        let snapshot = load_folder(tmp.path()).unwrap();
        // A path that joins to an absolute one (an empty source folder and `/x`) or
        // climbs out is refused, not read from `/`.
        assert!(snapshot.read("/etc/passwd").is_err());
        assert!(snapshot.read("../../../../etc/passwd").is_err());
        assert_eq!(snapshot.disk_path("/etc/passwd"), None);
        assert!(snapshot.walk("..").is_err());
    }
}

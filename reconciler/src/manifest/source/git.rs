//! Loading manifests from a Git revision with git2, and reading sources in it.
//!
//! Blobs are read straight from the commit's tree; the working copy is never touched.
//! Committed symbolic links (mode 120000) are followed as on disk: only inside the
//! manifests root, never to a folder while walking a source, and at most
//! [`MAX_LINKS`] in a row.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::layout::{
    accept_file, add_layout_problems, is_hidden, is_manifest_name, linked_workspace, too_large,
};
use super::paths::{join_inside, join_rel, outside};
use super::{
    EntryKind, Error, Fingerprint, Origin, Result, Snapshot, Tree, TreeFile, WalkError,
    MAX_MANIFEST_BYTES,
};
use crate::diagnostics::{Diagnostic, Location};

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

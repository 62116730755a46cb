//! Loading manifests from a working tree on disk, and reading sources under it.
//!
//! Symbolic links are followed only while they stay inside the manifests root; links to
//! folders met while walking a source are refused, as are loops, broken links and
//! special files (pipes, sockets, devices), which are never opened.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::layout::{
    accept_file, add_layout_problems, is_hidden, is_manifest_name, linked_workspace, too_large,
};
use super::paths::{is_loop, join_inside, join_rel, open_regular, outside, special_kind};
use super::{
    EntryKind, Error, Fingerprint, Origin, Result, Snapshot, Tree, TreeFile, WalkError,
    MAX_MANIFEST_BYTES,
};
use crate::diagnostics::{Diagnostic, Location};

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

#[cfg(test)]
mod tests {
    use super::*;

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

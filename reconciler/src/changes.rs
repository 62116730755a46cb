//! What a pull request changes: the files that differ between its base and its head
//! (from their merge base, as GitHub shows a pull request), and the resources those
//! files declare or feed (a dataset's source folder, an imported model's files).
//!
//! This module reads Git trees (git2, tree-to-tree diff) and parses the changed
//! manifest files; it never touches the working tree. Resources removed by the pull
//! request are found in the base's version of the changed files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::desired::DesiredState;
use crate::manifest::source::join_inside;
use crate::manifest::{parse_file, Snapshot, Spec};

/// Files changed between two commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedFiles {
    /// The commit diffed from: the merge base of base and head.
    pub base: String,
    pub head: String,
    /// Changed paths under the manifests root, relative to it, sorted; a rename lists
    /// both names.
    pub files: Vec<String>,
    /// How many changed paths lie outside the manifests root.
    pub outside: usize,
}

/// A resource touched by changed files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Touched {
    /// `risk/dataset.loans`.
    pub address: String,
    /// The changed files (relative to the manifests root) that touch it, sorted.
    pub files: Vec<String>,
}

/// What a pull request changes, for the plan comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRequestChanges {
    pub changed: ChangedFiles,
    pub touched: Vec<Touched>,
    /// Why the changes could not be worked out, when they could not (the comment shows
    /// it instead of a list).
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is not inside a Git repository", .path.display())]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("revision `{rev}` was not found in the repository")]
    RevisionNotFound {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("comparing `{base}` with `{head}` failed")]
    Diff {
        base: String,
        head: String,
        #[source]
        source: git2::Error,
    },
}

impl Error {
    /// Returns a hint for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::RevisionNotFound { .. } => Some(
                "fetch the base branch too (in a workflow: `actions/checkout` with `fetch-depth: 0`)"
                    .into(),
            ),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Lists the files under the manifests root `root` that changed from the merge base of
/// `base` and `head` to `head`.
pub fn changed_files(root: &Path, base: &str, head: &str) -> Result<ChangedFiles> {
    let repo = git2::Repository::discover(root).map_err(|source| Error::NotARepository {
        path: root.to_path_buf(),
        source,
    })?;
    let commit = |rev: &str| {
        repo.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|source| Error::RevisionNotFound {
                rev: rev.to_string(),
                source,
            })
    };
    let base_commit = commit(base)?;
    let head_commit = commit(head)?;
    let diff_error = |source| Error::Diff {
        base: base.to_string(),
        head: head.to_string(),
        source,
    };
    let from = repo
        .merge_base(base_commit.id(), head_commit.id())
        .and_then(|id| repo.find_commit(id))
        .unwrap_or(base_commit);
    let from_tree = from.tree().map_err(diff_error)?;
    let head_tree = head_commit.tree().map_err(diff_error)?;
    let mut diff = repo
        .diff_tree_to_tree(Some(&from_tree), Some(&head_tree), None)
        .map_err(diff_error)?;
    diff.find_similar(None).map_err(diff_error)?;

    let workdir = repo.workdir().unwrap_or_else(|| repo.path()).to_path_buf();
    let subdir = relative_to(root, &workdir);
    let prefix = if subdir.is_empty() {
        String::new()
    } else {
        format!("{subdir}/")
    };
    let mut files = BTreeSet::new();
    let mut outside = 0;
    for delta in diff.deltas() {
        let paths: BTreeSet<String> = [delta.old_file().path(), delta.new_file().path()]
            .into_iter()
            .flatten()
            .map(|p| {
                p.components()
                    .filter_map(|c| c.as_os_str().to_str())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        for path in paths {
            match path.strip_prefix(&prefix) {
                Some(rel) => {
                    files.insert(rel.to_string());
                }
                None => outside += 1,
            }
        }
    }
    Ok(ChangedFiles {
        base: from.id().to_string(),
        head: head_commit.id().to_string(),
        files: files.into_iter().collect(),
        outside,
    })
}

/// `path` relative to `base`, `/`-separated; empty when they are the same folder.
fn relative_to(path: &Path, base: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    path.strip_prefix(&base)
        .map(|p| {
            p.components()
                .filter_map(|c| c.as_os_str().to_str())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// The resources the changed files touch: those declared in a changed file at head
/// (`desired`) or at the base (`base`, for resources the change removes), and datasets
/// and imported models whose source folder holds a changed file. Sorted by address.
pub fn touched(
    changed: &ChangedFiles,
    desired: &DesiredState,
    base: Option<&Snapshot>,
) -> Vec<Touched> {
    let files: BTreeSet<&str> = changed.files.iter().map(String::as_str).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &desired.resources {
        if files.contains(r.file.as_str()) {
            out.entry(r.address.to_string())
                .or_default()
                .insert(r.file.clone());
        }
        let source = match &r.spec {
            Spec::Dataset(d) => d.source.as_ref().map(|s| s.get_ref().as_str()),
            Spec::Model(m) if m.from_job.is_none() => {
                m.source.as_ref().map(|s| s.get_ref().as_str())
            }
            _ => None,
        };
        let Some(source) = source.filter(|s| !s.contains("://")) else {
            continue;
        };
        let Some(dir) = join_inside(&r.address.workspace, source) else {
            continue;
        };
        let dir = dir.trim_end_matches('/');
        for f in &changed.files {
            if f == dir || f.starts_with(&format!("{dir}/")) {
                out.entry(r.address.to_string())
                    .or_default()
                    .insert(f.clone());
            }
        }
    }
    if let Some(base) = base {
        for file in base
            .files
            .iter()
            .filter(|f| files.contains(f.path.as_str()))
        {
            for declared in parse_file(file).resources {
                out.entry(declared.address.to_string())
                    .or_default()
                    .insert(file.path.clone());
            }
        }
    }
    out.into_iter()
        .map(|(address, files)| Touched {
            address,
            files: files.into_iter().collect(),
        })
        .collect()
}

/// Returns the first of `candidates` (`origin/HEAD`, `main`) that names a commit in the
/// repository holding `root`.
pub fn first_existing_revision(root: &Path, candidates: &[&str]) -> Option<String> {
    let repo = git2::Repository::discover(root).ok()?;
    candidates
        .iter()
        .find(|rev| {
            repo.revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .is_ok()
        })
        .map(|rev| rev.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Commits the whole working tree (deletions included); returns the commit id.
    fn commit_all(repo: &git2::Repository, message: &str) -> String {
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.update_all(["*"].iter(), None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("Tester", "tester@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
            .to_string()
    }

    #[test]
    fn changed_files_touch_declaring_files_sources_and_removed_resources() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().canonicalize().unwrap();
        let repo = git2::Repository::init(&top).unwrap();
        let root = top.join("manifests");
        write(
            &root,
            "risk/workspace.toml",
            "[workspace]\nenvironment = \"dev\"\nstore = \"file://.cairn/store\"\n",
        );
        write(
            &root,
            "risk/data.toml",
            "[dataset.loans]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
        );
        write(&root, "risk/data/loans/loans.csv", "a,b\n1,2\n");
        write(
            &root,
            "risk/old.toml",
            "[dataset.old]\nsource = \"data/loans/\"\nformat = \"csv\"\n",
        );
        write(&top, "README.md", "hello\n");
        let base = commit_all(&repo, "base");

        write(&root, "risk/data/loans/loans.csv", "a,b\n1,3\n");
        std::fs::remove_file(root.join("risk/old.toml")).unwrap();
        write(&top, "README.md", "hello again\n");
        let head = commit_all(&repo, "head");

        let changed = changed_files(&root, &base, &head).unwrap();
        assert_eq!(changed.base, base);
        assert_eq!(
            changed.files,
            ["risk/data/loans/loans.csv", "risk/old.toml"]
        );
        assert_eq!(changed.outside, 1);

        let snapshot = crate::manifest::load_revision(&root, &head).unwrap();
        let desired = crate::desired::resolve(&snapshot).unwrap().state;
        let base_snapshot = crate::manifest::load_revision(&root, &changed.base).unwrap();
        let touched = touched(&changed, &desired, Some(&base_snapshot));
        assert_eq!(
            touched,
            [
                Touched {
                    address: "risk/dataset.loans".into(),
                    files: vec!["risk/data/loans/loans.csv".into()],
                },
                Touched {
                    address: "risk/dataset.old".into(),
                    files: vec!["risk/old.toml".into()],
                },
            ]
        );

        assert!(matches!(
            changed_files(&root, "no-such-branch", &head),
            Err(Error::RevisionNotFound { .. })
        ));
        assert_eq!(
            first_existing_revision(&root, &["origin/HEAD", &head[..12]]).as_deref(),
            Some(&head[..12])
        );
    }
}

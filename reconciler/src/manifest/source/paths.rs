//! Paths under the manifests root: joining user-written paths without leaving the root,
//! why a source can't be read as data ([`WalkError`]), and opening only regular files so
//! a named pipe or device never blocks a read.

use std::path::{Component, Path};

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
pub(super) fn special_kind(file_type: std::fs::FileType) -> &'static str {
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

pub(super) fn is_loop(err: &std::io::Error) -> bool {
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

pub(super) fn outside(path: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("`{path}` leads outside the manifests root"),
    )
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

//! A generated manifests repository: files (and a few links) written to a temporary
//! folder, with a readable `Debug` so a failing input can be pasted into a bug report.

use std::fmt;
use std::path::Path;

/// One generated repository, paths relative to the manifests root with `/` separators.
#[derive(Clone, Default)]
pub struct Repo {
    /// Files, in the order they are written (a later file with the same path wins).
    pub files: Vec<(String, Vec<u8>)>,
    /// Symbolic links: (link path, target as written).
    pub links: Vec<(String, String)>,
    /// Files whose name is not valid UTF-8: (folder, name bytes, content).
    pub raw_names: Vec<(String, Vec<u8>, Vec<u8>)>,
}

impl Repo {
    pub fn file(&mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) {
        self.files.push((path.into(), content.into()));
    }

    /// Data files every generated workspace gets, so dataset and model sources can
    /// point at real folders.
    pub fn data_folders(&mut self, workspace: &str) {
        self.file(
            format!("{workspace}/data/d1/file.csv"),
            "id,label\n1,0\n2,1\n",
        );
        self.file(
            format!("{workspace}/data/d2/part-0.parquet"),
            b"PAR1\0\0PAR1".to_vec(),
        );
        self.file(
            format!("{workspace}/models/m1/model.onnx"),
            b"onnx".to_vec(),
        );
    }

    /// Writes the repository under `root` (which must exist). Returns false when some
    /// entry could not be written (e.g. a file and a folder with the same path), so
    /// checks that compare with a Git copy of the same files can be skipped.
    pub fn write(&self, root: &Path) -> bool {
        let mut clean = true;
        for (path, content) in &self.files {
            let full = root.join(path);
            let ok = full
                .parent()
                .is_none_or(|p| std::fs::create_dir_all(p).is_ok())
                && std::fs::write(&full, content).is_ok();
            clean &= ok;
        }
        for (path, target) in &self.links {
            let full = root.join(path);
            let ok = full
                .parent()
                .is_none_or(|p| std::fs::create_dir_all(p).is_ok())
                && std::os::unix::fs::symlink(target, &full).is_ok();
            clean &= ok;
        }
        for (dir, name, content) in &self.raw_names {
            use std::os::unix::ffi::OsStrExt;
            let folder = root.join(dir);
            let ok = std::fs::create_dir_all(&folder).is_ok()
                && std::fs::write(folder.join(std::ffi::OsStr::from_bytes(name)), content).is_ok();
            clean &= ok;
        }
        clean
    }
}

/// Shows manifest files as text (escaped), other files by size, so a minimal failing
/// input reads like a repository.
impl fmt::Debug for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Repo {{")?;
        for (path, content) in &self.files {
            if path.ends_with(".toml") || path.ends_with(".TOML") {
                writeln!(f, "  {path:?}: {},", show_bytes(content))?;
            } else {
                writeln!(f, "  {path:?}: <{} bytes of data>,", content.len())?;
            }
        }
        for (path, target) in &self.links {
            writeln!(f, "  {path:?} -> {target:?} (symlink),")?;
        }
        for (dir, name, content) in &self.raw_names {
            writeln!(
                f,
                "  {dir:?}/{} (non-UTF-8 name): {},",
                show_bytes(name),
                show_bytes(content)
            )?;
        }
        write!(f, "}}")
    }
}

/// A string literal when the bytes are UTF-8 (long ones shortened), else a byte string.
pub fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 4000;
    match std::str::from_utf8(bytes) {
        Ok(text) if text.len() <= MAX => format!("{text:?}"),
        Ok(text) => {
            let mut cut = MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{:?}… ({} bytes in all)", &text[..cut], text.len())
        }
        Err(_) => {
            let shown: String = bytes
                .iter()
                .take(MAX)
                .flat_map(|b| std::ascii::escape_default(*b))
                .map(char::from)
                .collect();
            if bytes.len() > MAX {
                format!("b\"{shown}\"… ({} bytes in all)", bytes.len())
            } else {
                format!("b\"{shown}\"")
            }
        }
    }
}

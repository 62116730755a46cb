//! The environment Cairn's child processes start with: the serving supervisor, its
//! replicas and local job runs.
//!
//! A child never inherits the environment of the process that started it: Cairn's own
//! credentials (`GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, a kubeconfig's token, …) must not
//! reach a model server or a training script. A child gets what its manifest declares plus
//! the variables of [`ChildEnv`], which keeps only an allow-list of the caller's:
//!
//! - `PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `TMPDIR`, `TZ`, `TERM`, `LANG`, `LANGUAGE`;
//! - every `LC_*` (locale), `CUDA_*` and `NVIDIA_*` variable (GPU runtime settings).
//!
//! The library reads no environment itself: the CLI builds a [`ChildEnv`] from its own
//! environment ([`ChildEnv::allowed`]) and hands it down.

use std::ffi::{OsStr, OsString};

/// Variables a child keeps by name.
pub const ALLOWED_NAMES: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "TERM", "LANG", "LANGUAGE",
];

/// Variables a child keeps by prefix.
pub const ALLOWED_PREFIXES: &[&str] = &["LC_", "CUDA_", "NVIDIA_"];

/// The base environment of a child process: the allowed variables of the caller's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildEnv {
    vars: Vec<(OsString, OsString)>,
}

impl ChildEnv {
    /// Keeps the allowed variables of `vars` (the CLI passes `std::env::vars_os()`).
    pub fn allowed(vars: impl IntoIterator<Item = (OsString, OsString)>) -> ChildEnv {
        let mut vars: Vec<_> = vars.into_iter().filter(|(k, _)| is_allowed(k)).collect();
        vars.sort();
        ChildEnv { vars }
    }

    /// No variables at all.
    pub fn empty() -> ChildEnv {
        ChildEnv::default()
    }

    /// The variables, sorted by name.
    pub fn vars(&self) -> &[(OsString, OsString)] {
        &self.vars
    }

    /// Clears `command`'s environment and sets this one; set the declared variables after.
    pub fn apply_std(&self, command: &mut std::process::Command) {
        command
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
    }

    /// Clears `command`'s environment and sets this one; set the declared variables after.
    pub fn apply_tokio(&self, command: &mut tokio::process::Command) {
        command
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
    }
}

/// Whether a child may inherit a variable of this name.
pub fn is_allowed(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    ALLOWED_NAMES.contains(&name) || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn keeps_the_allow_list_and_drops_credentials() {
        let env = ChildEnv::allowed(vars(&[
            ("GITHUB_TOKEN", "ghp_planted"),
            ("AWS_SECRET_ACCESS_KEY", "planted"),
            ("AWS_ACCESS_KEY_ID", "planted"),
            ("PATH", "/usr/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("HOME", "/root"),
            ("KUBECONFIG", "/root/.kube/config"),
        ]));
        assert_eq!(
            env.vars(),
            vars(&[
                ("CUDA_VISIBLE_DEVICES", "0"),
                ("HOME", "/root"),
                ("LC_ALL", "C.UTF-8"),
                ("PATH", "/usr/bin"),
            ])
        );
    }

    #[test]
    fn a_command_gets_only_this_environment() {
        let env = ChildEnv::allowed(vars(&[("PATH", "/usr/bin:/bin"), ("SECRET", "planted")]));
        let mut command = std::process::Command::new("/usr/bin/env");
        env.apply_std(&mut command);
        command.env("DECLARED", "yes");
        let out = command.output().expect("env runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(lines, ["DECLARED=yes", "PATH=/usr/bin:/bin"]);
    }
}

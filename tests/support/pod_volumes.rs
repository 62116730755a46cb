//! A pod's volumes on this machine, for the test kubelets: each of a container's
//! `volumeMounts` becomes a folder, and paths in its command and environment are
//! mapped onto them.
//!
//! An `emptyDir` lives in the pod's folder and goes with it; a
//! `persistentVolumeClaim` has one folder per claim under `claims/<namespace>/`, shared
//! by every pod that mounts it and outliving them, as a provisioned volume does. A
//! claim the API server doesn't hold is an error, as it keeps a real pod from starting.
//! `subPath` and `subPathExpr` (`$(VAR)` from the container's environment) pick a folder
//! inside the volume.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::kube_server::KubeServer;

/// A container's mounts: pod path → folder here, longest pod path first.
pub struct Mounts {
    mounts: Vec<(String, PathBuf)>,
}

impl Mounts {
    /// The mounts of `container` in `pod` (a pod spec) of namespace `ns`, with `env` the
    /// container's resolved environment (for `subPathExpr`).
    pub fn of(
        server: &KubeServer,
        ns: &str,
        pod: &Value,
        container: &Value,
        pod_root: &Path,
        claims: &Path,
        env: &[(String, String)],
    ) -> Result<Mounts, String> {
        let mut mounts = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap_or("");
            let path = mount["mountPath"].as_str().unwrap_or("").to_string();
            let volume = pod["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == name)
                .ok_or_else(|| format!("volume mount {name}: the pod has no such volume"))?;
            let mut folder =
                if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                    if server
                        .object("v1", "PersistentVolumeClaim", Some(ns), claim)
                        .is_none()
                    {
                        return Err(format!("persistentvolumeclaim \"{claim}\" not found"));
                    }
                    claims.join(ns).join(claim)
                } else if volume.get("emptyDir").is_some() {
                    pod_root.join("volumes").join(name)
                } else {
                    // Secrets and the like: the kubelets that need them mount them themselves.
                    continue;
                };
            if let Some(sub) = mount["subPath"].as_str() {
                folder = folder.join(sub);
            } else if let Some(expr) = mount["subPathExpr"].as_str() {
                folder = folder.join(expand(expr, env)?);
            }
            std::fs::create_dir_all(&folder).unwrap();
            mounts.push((path, folder));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Ok(Mounts { mounts })
    }

    /// `text` with a pod path at its start, or after an `=` (`model.x@v=/cairn/outputs/m`),
    /// mapped to the folder here.
    pub fn local(&self, text: &str) -> String {
        let (head, path) = match text.split_once("=/") {
            Some((head, rest)) if !text.starts_with('/') => {
                (format!("{head}="), format!("/{rest}"))
            }
            _ => (String::new(), text.to_string()),
        };
        for (mount, folder) in &self.mounts {
            if let Some(rest) = path.strip_prefix(mount.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    return format!("{head}{}{rest}", folder.display());
                }
            }
        }
        text.to_string()
    }
}

/// `$(VAR)` references replaced by the variables' values, as the kubelet expands a
/// `subPathExpr`.
fn expand(expr: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find(')')
            .ok_or_else(|| format!("subPathExpr {expr}: unclosed $("))?;
        let name = &rest[start + 2..start + end];
        let value = env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("subPathExpr {expr}: no variable {name}"))?;
        out.push_str(value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

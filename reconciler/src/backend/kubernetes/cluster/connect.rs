//! Connections: where the cluster settings come from ([`KubeconfigSources`], read by
//! the CLI, never here), the kubeconfig read once, and a `kube::Client` per context,
//! made on first use and cached. Making a client connects to nothing, so a plan that
//! touches no cluster never fails on a broken kubeconfig.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::Mutex;

use super::{Clusters, Error, Result, DEFAULT_CONCURRENCY};

/// Where [`Clusters::new`] looks for cluster settings, as kubectl does. The library
/// reads no environment variables: the CLI fills this from `KUBECONFIG`, `HOME` and
/// `KUBERNETES_SERVICE_HOST`; a test fills it by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeconfigSources {
    /// `$KUBECONFIG`: kubeconfig files, separated as in `PATH` (`:`; `;` on Windows).
    pub kubeconfig: Option<OsString>,
    /// `$HOME`: `~/.kube/config` is read when `kubeconfig` names no file.
    pub home: Option<PathBuf>,
    /// Whether Cairn runs in a pod (`$KUBERNETES_SERVICE_HOST` is set): without a
    /// kubeconfig, the pod's service account is used.
    pub in_cluster: bool,
}

/// Where the connection settings come from. Deliberately not `Debug`: a kubeconfig
/// holds credentials.
pub(super) enum Source {
    Kubeconfig {
        config: Box<Kubeconfig>,
        paths: Vec<PathBuf>,
    },
    InCluster,
    /// The kubeconfig could not be read; the first `client` call says why.
    Broken {
        paths: Vec<PathBuf>,
        message: String,
    },
    Missing {
        why: String,
    },
}

/// One connected context.
#[derive(Clone)]
pub(super) struct Cluster {
    pub(super) client: kube::Client,
    /// The context's name (the current context's real name when asked for `None`).
    pub(super) name: String,
    /// The API server URL.
    pub(super) server: String,
}

impl Clusters {
    /// Finds the cluster settings as kubectl does: the files in `KUBECONFIG` (several
    /// paths, merged; missing ones ignored), else `~/.kube/config`, else the in-cluster
    /// service account when Cairn runs in a pod. Reads no environment itself (the CLI
    /// fills `sources`); errors wait for the first [`Clusters::client`].
    pub fn new(sources: KubeconfigSources) -> Clusters {
        let from_env: Vec<PathBuf> = sources
            .kubeconfig
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if !from_env.is_empty() {
            let existing: Vec<PathBuf> = from_env.iter().filter(|p| p.exists()).cloned().collect();
            if existing.is_empty() {
                return Clusters::with_source(Source::Missing {
                    why: format!(
                        "none of the files in KUBECONFIG exist ({})",
                        show_paths(&from_env)
                    ),
                });
            }
            return Clusters::from_kubeconfig_paths(&existing);
        }
        if let Some(home) = sources.home.filter(|h| !h.as_os_str().is_empty()) {
            let path = Path::new(&home).join(".kube").join("config");
            if path.exists() {
                return Clusters::from_kubeconfig_path(path);
            }
        }
        if sources.in_cluster {
            return Clusters::with_source(Source::InCluster);
        }
        Clusters::with_source(Source::Missing {
            why: "KUBECONFIG is not set, ~/.kube/config does not exist and Cairn is not running in a cluster".into(),
        })
    }

    /// Uses one kubeconfig file.
    pub fn from_kubeconfig_path(path: impl AsRef<Path>) -> Clusters {
        Clusters::from_kubeconfig_paths(&[path.as_ref().to_path_buf()])
    }

    /// Uses several kubeconfig files merged as kubectl merges `KUBECONFIG`: the first
    /// file to set a value wins.
    pub fn from_kubeconfig_paths(paths: &[PathBuf]) -> Clusters {
        let mut merged: Option<Kubeconfig> = None;
        for path in paths {
            let read = Kubeconfig::read_from(path).and_then(|next| match merged.take() {
                Some(config) => config.merge(next),
                None => Ok(next),
            });
            match read {
                Ok(config) => merged = Some(config),
                Err(e) => {
                    return Clusters::with_source(Source::Broken {
                        paths: vec![path.clone()],
                        message: e.to_string(),
                    })
                }
            }
        }
        Clusters::with_source(Source::Kubeconfig {
            config: Box::new(merged.unwrap_or_default()),
            paths: paths.to_vec(),
        })
    }

    /// Uses a kubeconfig already read.
    pub fn from_kubeconfig(config: Kubeconfig) -> Clusters {
        Clusters::with_source(Source::Kubeconfig {
            config: Box::new(config),
            paths: Vec::new(),
        })
    }

    fn with_source(source: Source) -> Clusters {
        Clusters {
            source,
            clients: Mutex::new(HashMap::new()),
            kinds: Mutex::new(HashMap::new()),
            concurrency: DEFAULT_CONCURRENCY,
            poll: Duration::from_secs(2),
        }
    }

    /// Returns the client for a kubeconfig context (`None`: the current one), making it
    /// on first use. Connects to nothing yet.
    pub async fn client(&self, context: Option<&str>) -> Result<kube::Client> {
        Ok(self.cluster(context).await?.client)
    }

    pub(super) async fn cluster(&self, context: Option<&str>) -> Result<Cluster> {
        let mut clients = self.clients.lock().await;
        let wanted = context.map(str::to_string);
        if let Some(cluster) = clients.get(&wanted) {
            return Ok(cluster.clone());
        }
        let cluster = self.connect(context).await?;
        clients.insert(wanted, cluster.clone());
        Ok(cluster)
    }

    async fn connect(&self, context: Option<&str>) -> Result<Cluster> {
        let (config, name) = match &self.source {
            Source::Missing { why } => return Err(Error::NoKubeconfig { why: why.clone() }),
            Source::Broken { paths, message } => {
                return Err(Error::Kubeconfig {
                    paths: show_paths(paths),
                    message: message.clone(),
                })
            }
            Source::InCluster => {
                if let Some(context) = context {
                    return Err(Error::UnknownContext {
                        context: context.to_string(),
                        known: Vec::new(),
                        paths: "(in-cluster: no kubeconfig)".into(),
                    });
                }
                let config = kube::Config::incluster().map_err(|e| Error::Context {
                    context: "in-cluster".into(),
                    message: e.to_string(),
                })?;
                (config, "in-cluster".to_string())
            }
            Source::Kubeconfig { config, paths } => {
                let known: Vec<String> = config.contexts.iter().map(|c| c.name.clone()).collect();
                let name = match context {
                    Some(c) => c.to_string(),
                    None => match config.current_context.clone().filter(|c| !c.is_empty()) {
                        Some(c) => c,
                        None => {
                            return Err(Error::NoCurrentContext {
                                known,
                                paths: show_paths(paths),
                            })
                        }
                    },
                };
                if !known.contains(&name) {
                    return Err(Error::UnknownContext {
                        context: name,
                        known,
                        paths: show_paths(paths),
                    });
                }
                let options = KubeConfigOptions {
                    context: Some(name.clone()),
                    ..Default::default()
                };
                let config = kube::Config::from_custom_kubeconfig((**config).clone(), &options)
                    .await
                    .map_err(|e| Error::Context {
                        context: name.clone(),
                        message: e.to_string(),
                    })?;
                (config, name)
            }
        };
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| Error::Context {
            context: name.clone(),
            message: e.to_string(),
        })?;
        Ok(Cluster {
            client,
            name,
            server: server.trim_end_matches('/').to_string(),
        })
    }
}

pub(super) fn show_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(given in memory)".to_string();
    }
    paths
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
        contexts: [{name: a, context: {cluster: a, user: a}}]\n\
        clusters: [{name: a, cluster: {server: 'https://127.0.0.1:1'}}]\n\
        users: [{name: a, user: {}}]\n";

    fn source(sources: KubeconfigSources) -> String {
        match Clusters::new(sources).source {
            Source::Kubeconfig { paths, .. } => format!("kubeconfig {}", show_paths(&paths)),
            Source::InCluster => "in-cluster".into(),
            Source::Broken { message, .. } => format!("broken: {message}"),
            Source::Missing { why } => format!("missing: {why}"),
        }
    }

    #[test]
    fn nothing_given_is_no_kubeconfig() {
        assert_eq!(
            source(KubeconfigSources::default()),
            "missing: KUBECONFIG is not set, ~/.kube/config does not exist and Cairn is not running in a cluster"
        );
    }

    #[test]
    fn kubeconfig_files_win_over_home_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".kube")).unwrap();
        std::fs::write(dir.path().join(".kube/config"), KUBECONFIG).unwrap();
        let listed = dir.path().join("listed");
        std::fs::write(&listed, KUBECONFIG).unwrap();
        let gone = dir.path().join("gone");
        let kubeconfig = std::env::join_paths([&gone, &listed]).unwrap();
        let home = Some(dir.path().to_path_buf());
        assert_eq!(
            source(KubeconfigSources {
                kubeconfig: Some(kubeconfig),
                home: home.clone(),
                in_cluster: true,
            }),
            format!("kubeconfig `{}`", listed.display())
        );
        assert_eq!(
            source(KubeconfigSources {
                kubeconfig: Some(gone.clone().into_os_string()),
                home,
                in_cluster: true,
            }),
            format!(
                "missing: none of the files in KUBECONFIG exist (`{}`)",
                gone.display()
            )
        );
    }

    #[test]
    fn home_then_in_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let sources = KubeconfigSources {
            kubeconfig: Some(OsString::new()),
            home: Some(dir.path().to_path_buf()),
            in_cluster: true,
        };
        assert_eq!(source(sources.clone()), "in-cluster");
        std::fs::create_dir(dir.path().join(".kube")).unwrap();
        std::fs::write(dir.path().join(".kube/config"), KUBECONFIG).unwrap();
        assert_eq!(
            source(sources),
            format!("kubeconfig `{}`", dir.path().join(".kube/config").display())
        );
    }
}

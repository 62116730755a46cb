//! Server-side apply in waves: each object is read first, never taken over when it
//! lacks Cairn's labels for the workspace, left alone when its managed fields already
//! match, replaced when an immutable field changed, and written conditionally on the
//! `resourceVersion` read (read and diffed again, a few times at most, on a race).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::Value;

use super::connect::Cluster;
use super::discovery::api_for;
use super::error::request_error;
use super::observe::{get, resource_version, to_json};
use super::{is_managed, label, wave, Clusters, Error, Result, ATTEMPTS, DEFAULT_CONCURRENCY};
use crate::backend::kubernetes::diff::{diff, FIELD_MANAGER};
use crate::backend::kubernetes::{KubeObject, ObjectKey, LABEL_MANAGED_BY, LABEL_WORKSPACE};

/// How [`Clusters::apply`] applies.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Take over fields another field manager owns (`--force-conflicts`).
    pub force: bool,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Objects to delete and create again, whatever their diff says.
    pub replace: BTreeSet<ObjectKey>,
    /// How long a replaced object may take to go away.
    pub delete_timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            force: false,
            concurrency: DEFAULT_CONCURRENCY,
            replace: BTreeSet::new(),
            delete_timeout: Duration::from_secs(120),
        }
    }
}

/// What applying one object did.
#[derive(Debug)]
pub enum Outcome {
    Created,
    Updated,
    /// Its managed fields already matched: nothing was written.
    Unchanged,
    /// Deleted and created again (an immutable field changed, or it was asked for).
    Replaced,
    /// A Namespace that exists without Cairn's labels for this workspace: used, never
    /// changed.
    Foreign,
    Failed(Error),
    /// Not attempted because an earlier wave failed.
    Skipped {
        reason: String,
    },
}

/// One object's result from [`Clusters::apply`].
#[derive(Debug)]
pub struct Applied {
    pub key: ObjectKey,
    pub outcome: Outcome,
    /// The object's `resourceVersion` afterwards, when it exists.
    pub resource_version: Option<String>,
}

impl Applied {
    /// The error, when it failed.
    pub fn error(&self) -> Option<&Error> {
        match &self.outcome {
            Outcome::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether it wrote anything.
    pub fn changed(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Created | Outcome::Updated | Outcome::Replaced
        )
    }
}

impl Clusters {
    /// Applies `objects` with server-side apply, in waves by kind (see [`wave`]), each
    /// wave's objects concurrently (at most `options.concurrency` in flight), and
    /// returns each object's outcome in the order given. A wave with a failure stops
    /// the later waves (their objects are [`Outcome::Skipped`]). Fails as a whole only
    /// when a context can't be used, before anything is written.
    pub async fn apply(
        &self,
        objects: &[KubeObject],
        options: &ApplyOptions,
    ) -> Result<Vec<Applied>> {
        let mut clusters: HashMap<Option<String>, Cluster> = HashMap::new();
        for object in objects {
            if !clusters.contains_key(&object.context) {
                let cluster = self.cluster(object.context.as_deref()).await?;
                clusters.insert(object.context.clone(), cluster);
            }
        }
        let mut waves: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, object) in objects.iter().enumerate() {
            waves.entry(wave(&object.kind)).or_default().push(i);
        }
        let mut results: Vec<Option<Applied>> = objects.iter().map(|_| None).collect();
        let mut failed: Option<ObjectKey> = None;
        for indices in waves.into_values() {
            if let Some(first) = &failed {
                for i in indices {
                    results[i] = Some(Applied {
                        key: objects[i].key(),
                        outcome: Outcome::Skipped {
                            reason: format!("{first} failed to apply"),
                        },
                        resource_version: None,
                    });
                }
                continue;
            }
            let done: Vec<(usize, Applied)> = stream::iter(indices)
                .map(|i| {
                    let object = &objects[i];
                    let cluster = &clusters[&object.context];
                    async move { (i, self.apply_one(cluster, object, options).await) }
                })
                .buffer_unordered(options.concurrency.max(1))
                .collect()
                .await;
            for (i, applied) in done {
                if matches!(applied.outcome, Outcome::Failed(_)) && failed.is_none() {
                    failed = Some(applied.key.clone());
                }
                results[i] = Some(applied);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn apply_one(
        &self,
        cluster: &Cluster,
        object: &KubeObject,
        options: &ApplyOptions,
    ) -> Applied {
        let key = object.key();
        match self.try_apply(cluster, object, options).await {
            Ok((outcome, resource_version)) => Applied {
                key,
                outcome,
                resource_version,
            },
            Err(e) => Applied {
                key,
                outcome: Outcome::Failed(e),
                resource_version: None,
            },
        }
    }

    async fn try_apply(
        &self,
        cluster: &Cluster,
        object: &KubeObject,
        options: &ApplyOptions,
    ) -> Result<(Outcome, Option<String>)> {
        let key = object.key();
        let resolved = self
            .require(cluster, &object.context, &object.api_version, &object.kind)
            .await?;
        let api = api_for(cluster, &resolved, object.namespace.as_deref(), &key)?;
        let workspace = label(&object.value, LABEL_WORKSPACE).unwrap_or_default();
        // Strict: a field the cluster's schema does not declare (a typo in an overridden
        // template, a field newer than the cluster) fails the apply, naming the field,
        // instead of being dropped. (A real server refuses unknown fields in an apply
        // whatever this says; Strict also refuses duplicate fields, and says what Cairn
        // means to every server and proxy in between.)
        let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
        if options.force {
            params = params.force();
        }
        for _ in 0..ATTEMPTS {
            let live = get(&api, cluster, &key).await?;
            let Some(live) = live else {
                let applied = patch(&api, cluster, &key, &object.value, &params).await?;
                return Ok((Outcome::Created, resource_version(&applied)));
            };
            if !is_managed(&live, workspace) {
                // A namespace someone else made (a platform team, another workspace)
                // is used as it is.
                if object.kind == "Namespace" {
                    return Ok((Outcome::Foreign, resource_version(&live)));
                }
                return Err(Error::NotManaged {
                    object: Box::new(key),
                    workspace: workspace.to_string(),
                    owner: label(&live, LABEL_WORKSPACE)
                        .filter(|_| label(&live, LABEL_MANAGED_BY) == Some("cairn"))
                        .map(str::to_string),
                });
            }
            let before = resource_version(&live);
            let changes = diff(object, &live);
            if options.replace.contains(&key) || changes.needs_replace() {
                self.delete_and_wait(&api, cluster, &key, &live, options.delete_timeout)
                    .await?;
                let applied = patch(&api, cluster, &key, &object.value, &params).await?;
                return Ok((Outcome::Replaced, resource_version(&applied)));
            }
            if changes.is_empty() {
                return Ok((Outcome::Unchanged, before));
            }
            // The resourceVersion read makes the write conditional: if the object
            // changed since, it is read and diffed again.
            let mut body = object.value.clone();
            if let (Some(meta), Some(rv)) = (
                body.get_mut("metadata").and_then(Value::as_object_mut),
                &before,
            ) {
                meta.insert("resourceVersion".into(), Value::String(rv.clone()));
            }
            match api.patch(&key.name, &params, &Patch::Apply(&body)).await {
                Ok(applied) => {
                    let after = applied.metadata.resource_version.clone();
                    let outcome = if after == before {
                        Outcome::Unchanged
                    } else {
                        Outcome::Updated
                    };
                    return Ok((outcome, after));
                }
                Err(kube::Error::Api(status))
                    if status.code == 409 && !is_field_conflict(&status) =>
                {
                    continue;
                }
                Err(e) => return Err(apply_error(cluster, &key, e)),
            }
        }
        Err(Error::Raced {
            object: Box::new(key),
            attempts: ATTEMPTS,
        })
    }

    /// Deletes an object (foreground: its dependents first) if it is still the one
    /// read, and waits until it is gone.
    async fn delete_and_wait(
        &self,
        api: &Api<DynamicObject>,
        cluster: &Cluster,
        key: &ObjectKey,
        live: &Value,
        timeout: Duration,
    ) -> Result<()> {
        let uid = live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        let params = DeleteParams::foreground().preconditions(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        });
        match api.delete(&key.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(request_error(cluster, "delete", key.to_string(), e)),
        }
        let start = Instant::now();
        loop {
            match get(api, cluster, key).await? {
                None => return Ok(()),
                Some(now)
                    if now.pointer("/metadata/uid").and_then(Value::as_str) != uid.as_deref() =>
                {
                    return Ok(())
                }
                Some(_) => {}
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("{key} to be deleted"),
                    waited: timeout,
                    state: "it still exists (a finalizer may hold it)".into(),
                });
            }
            tokio::time::sleep(
                self.backoff(start.elapsed())
                    .min(timeout.saturating_sub(start.elapsed())),
            )
            .await;
        }
    }
}

async fn patch(
    api: &Api<DynamicObject>,
    cluster: &Cluster,
    key: &ObjectKey,
    body: &Value,
    params: &PatchParams,
) -> Result<Value> {
    api.patch(&key.name, params, &Patch::Apply(body))
        .await
        .map(|o| to_json(o, &key.kind))
        .map_err(|e| apply_error(cluster, key, e))
}

fn is_field_conflict(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "FieldManagerConflict"))
}

/// The error of an apply: a field-manager conflict gets its own, with the fields and
/// the managers that own them; so do fields the cluster's schema does not declare.
fn apply_error(cluster: &Cluster, key: &ObjectKey, error: kube::Error) -> Error {
    if let kube::Error::Api(status) = &error {
        let fields = unknown_fields(&status.message);
        if !fields.is_empty() {
            return Error::UnknownField {
                object: Box::new(key.clone()),
                fields,
            };
        }
        if status.code == 409 && is_field_conflict(status) {
            let causes = status
                .details
                .as_ref()
                .map(|d| d.causes.as_slice())
                .unwrap_or_default();
            let mut fields = Vec::new();
            let mut managers = BTreeSet::new();
            for cause in causes.iter().filter(|c| c.reason == "FieldManagerConflict") {
                fields.push(cause.field.clone());
                // `conflict with "kubectl"` or `conflict with "kubectl" using apps/v1`.
                if let Some(name) = cause.message.split('"').nth(1) {
                    managers.insert(name.to_string());
                }
            }
            return Error::Conflict {
                object: Box::new(key.clone()),
                fields,
                managers: managers.into_iter().collect(),
            };
        }
    }
    request_error(cluster, "apply", key.to_string(), error)
}

/// The fields an API server's message says its schema does not declare, by its code
/// whatever it is: a real server answers an apply with unknown fields with a 500
/// (`failed to create typed patch object (<ns>/<name>; apps/v1, Kind=Deployment):
/// .spec.replicass: field not declared in schema`; kubernetes/kubernetes#139253), and a
/// create or update under strict field validation with a 400 (`strict decoding error:
/// unknown field "spec.replicass"`).
fn unknown_fields(message: &str) -> Vec<String> {
    const NOT_DECLARED: &str = ": field not declared in schema";
    const UNKNOWN: &str = "unknown field \"";
    let mut fields = Vec::new();
    if let Some((_, errors)) = message.split_once("failed to create typed patch object") {
        // After the object's name in parentheses: one `.path: why`, or `errors:` and one
        // per line (a path may hold commas: `.spec.ports[port=80,protocol="TCP"].x`).
        let errors = errors.split_once("): ").map_or(errors, |(_, e)| e);
        for item in errors.lines() {
            if let Some(field) = item.trim().strip_suffix(NOT_DECLARED) {
                fields.push(field.trim_start_matches('.').to_string());
            }
        }
    }
    if message.contains("strict decoding error") {
        let mut rest = message;
        while let Some(start) = rest.find(UNKNOWN) {
            rest = &rest[start + UNKNOWN.len()..];
            let Some(end) = rest.find('"') else { break };
            fields.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::unknown_fields;

    #[test]
    fn unknown_fields_are_read_from_what_real_servers_answer() {
        // kube-apiserver 1.35, server-side apply (a 500 with no reason).
        assert_eq!(
            unknown_fields(
                "failed to create typed patch object (imaging-serve/triage-blue; apps/v1, Kind=Deployment): \
                 .spec.replicass: field not declared in schema"
            ),
            ["spec.replicass"]
        );
        assert_eq!(
            unknown_fields(
                "failed to create typed patch object (ns/r; gateway.networking.k8s.io/v1, Kind=HTTPRoute): errors:\n  \
                 .spec.rules[0].filters[0].requestMirror.percent: field not declared in schema\n  \
                 .spec.ports[port=80,protocol=\"TCP\"].x: field not declared in schema"
            ),
            [
                "spec.rules[0].filters[0].requestMirror.percent",
                "spec.ports[port=80,protocol=\"TCP\"].x"
            ]
        );
        // Create or update under fieldValidation=Strict (a 400).
        assert_eq!(
            unknown_fields(
                "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
                 unknown field \"spec.replicass\", unknown field \"spec.template.spec.containers[0].imag\""
            ),
            ["spec.replicass", "spec.template.spec.containers[0].imag"]
        );
        // Other refusals name no unknown field.
        assert!(unknown_fields(
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        )
        .is_empty());
        assert!(
            unknown_fields("an unknown field \"x\" in a message about something else").is_empty()
        );
    }
}

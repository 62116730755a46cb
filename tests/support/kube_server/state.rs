//! The server's state behind one lock: the kinds, the objects by [`Key`], the global
//! `resourceVersion`, watch events, the requests answered and the test controls'
//! settings. `State::commit` stores a change and wakes the watches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::controls::RecordedRequest;
use super::error::{ApiError, ApiResult};
use super::resources::ResourceType;

/// RFC 3339 to the second, as the API server writes times.
pub(super) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The last resource version written; watches wait on it.
    pub(super) changed: tokio::sync::watch::Sender<u64>,
    pub(super) token: String,
    pub(super) port: u16,
    /// Requests being handled now, and the most at once so far.
    pub(super) in_flight: AtomicUsize,
    pub(super) max_in_flight: AtomicUsize,
}

/// Another client's write that lands just before a request (see
/// [`KubeServer::interleave`]).
pub(super) struct Interleave {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) manager: String,
    pub(super) patch: Value,
}

pub(super) struct State {
    pub(super) resources: Vec<ResourceType>,
    /// The last resource version given out.
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<Key, Value>,
    /// Every change, in order (nothing is compacted).
    pub(super) events: Vec<Event>,
    pub(super) requests: Vec<RecordedRequest>,
    /// For service cluster IPs.
    pub(super) next_ip: u32,
    pub(super) interleaves: Vec<Interleave>,
    /// (group, plural) of the resources every request on is forbidden.
    pub(super) forbidden: BTreeSet<(String, String)>,
    /// Log lines (RFC 3339 time, text) by namespace, pod and container.
    pub(super) pod_logs:
        BTreeMap<(String, String, String), Vec<(k8s_openapi::jiff::Timestamp, String)>>,
    /// (namespace, pod, port) → the `http://host:port` the pod proxy forwards to.
    pub(super) pod_addresses: BTreeMap<(String, String, u16), String>,
    /// The roles bound to the user; RBAC is on when there is one (`rbac.rs`).
    pub(super) rbac: Vec<super::rbac::Binding>,
}

/// Where an object lives: its kind (an index into the table), namespace (`""` for
/// cluster-scoped kinds) and name. Ordered as lists are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) res: usize,
    pub(super) namespace: String,
    pub(super) name: String,
}

impl Key {
    pub(super) fn new(res: usize, namespace: Option<&str>, name: &str) -> Key {
        Key {
            res,
            namespace: namespace.unwrap_or("").to_string(),
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

pub(super) struct Event {
    pub(super) rv: u64,
    pub(super) kind: EventType,
    pub(super) key: Key,
    /// The object after the change (before it, with the new version, for `DELETED`).
    pub(super) object: Value,
    /// The object before a `MODIFIED` change, to tell when it enters or leaves a selector.
    pub(super) old: Option<Value>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// A stored Pod, or the 404 the real server gives.
    pub(super) fn pod(&self, namespace: &str, name: &str) -> ApiResult<&Value> {
        let res = self
            .find_kind("v1", "Pod")
            .ok_or_else(ApiError::no_resource)?;
        self.objects
            .get(&Key::new(res, Some(namespace), name))
            .ok_or_else(|| ApiError::not_found(&self.resources[res], name))
    }

    pub(super) fn find_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.api_version() == api_version && r.kind == kind)
    }

    pub(super) fn find_plural(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub(super) fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    pub(super) fn namespace_exists(&self, namespace: &str) -> bool {
        self.find_kind("v1", "Namespace")
            .is_some_and(|ns| self.objects.contains_key(&Key::new(ns, None, namespace)))
    }

    /// Stores `object` (or removes the key when `None`) at a new resource version, and
    /// records the event. Returns the stored object (the last state, for a removal).
    pub(super) fn commit(&mut self, key: &Key, object: Option<Value>) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let old = self.objects.remove(key);
        let (kind, mut stored) = match (object, &old) {
            (Some(o), None) => (EventType::Added, o),
            (Some(o), Some(_)) => (EventType::Modified, o),
            (None, Some(o)) => (EventType::Deleted, o.clone()),
            (None, None) => unreachable!("nothing to delete"),
        };
        stored["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        if kind != EventType::Deleted {
            self.objects.insert(key.clone(), stored.clone());
        }
        self.events.push(Event {
            rv,
            kind,
            key: key.clone(),
            object: stored.clone(),
            old: if kind == EventType::Modified {
                old
            } else {
                None
            },
        });
        stored
    }
}

//! What a test reads and drives beyond the API: stored objects, objects created as
//! another client would, the requests answered (by [`Verb`]), writes interleaved before
//! a request, forbidden resources, pod logs and addresses, and the most requests in
//! flight.

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::state::{Interleave, Key};
use super::writes::Writer;
use super::KubeServer;

/// What a request did, in the API server's own verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// A request outside the resources: `/version`, `/api`, `/apis`, ...
    Discovery,
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    /// Whether it can change objects.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub verb: Verb,
    pub method: String,
    /// The path, e.g. `/apis/apps/v1/namespaces/default/deployments/web`.
    pub path: String,
    /// The raw query string.
    pub query: String,
    pub content_type: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    /// The answer's status code.
    pub status: u16,
}

impl KubeServer {
    /// The stored object, if any.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.shared.lock();
        let res = state
            .find_kind(api_version, kind)
            .expect("a kind the server serves");
        state.objects.get(&Key::new(res, namespace, name)).cloned()
    }

    /// The stored object as a typed one, if any.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: k8s_openapi::Resource + serde::de::DeserializeOwned,
    {
        self.object(K::API_VERSION, K::KIND, namespace, name)
            .map(|v| serde_json::from_value(v).expect("a stored object of its kind"))
    }

    /// Every stored object, each with `apiVersion` and `kind`, by kind, namespace, name.
    pub fn objects(&self) -> Vec<Value> {
        self.shared.lock().objects.values().cloned().collect()
    }

    /// The stored objects of `kind` written after resourceVersion `since` (0: all of
    /// them): cheaper than [`KubeServer::objects`] for a loop that polls.
    pub fn changed_since(&self, kind: &str, since: u64) -> Vec<Value> {
        self.shared
            .lock()
            .objects
            .values()
            .filter(|o| o["kind"] == kind)
            .filter(|o| {
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v > since)
            })
            .cloned()
            .collect()
    }

    /// Stores an object as another client (`manager`) would create it; returns it.
    pub fn create(&self, object: Value, manager: &str) -> Value {
        let api_version = object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_string();
        let kind = object["kind"].as_str().expect("kind").to_string();
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        let res = self
            .shared
            .lock()
            .find_kind(&api_version, &kind)
            .expect("a kind the server serves");
        self.shared
            .create(res, namespace.as_deref(), object, &Writer::test(manager))
            .unwrap_or_else(|e| panic!("create: {}", e.message))
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every request answered so far, one line each: `METHOD path[?query] status`, for
    /// asserting the exact calls a flow makes.
    pub fn request_log(&self) -> Vec<String> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|r| {
                let query = r.query.trim_start_matches('&');
                let sep = if query.is_empty() { "" } else { "?" };
                format!("{} {}{sep}{query} {}", r.method, r.path, r.status)
            })
            .collect()
    }

    /// How many requests of this verb were answered (whatever their status).
    pub fn count(&self, verb: Verb) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.verb == verb)
            .count()
    }

    /// How many requests could have changed objects.
    pub fn writes(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.verb.writes())
            .count()
    }

    /// Forgets the requests answered so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The current (last written) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Just before the next `method` request on `path` (e.g. `PATCH
    /// /apis/apps/v1/namespaces/ns/deployments/web`), `manager` merge-patches the object
    /// at `path` (an update, as `kubectl annotate` would): the request then sees an
    /// object changed since its client last read it. Once only.
    pub fn interleave(&self, method: &str, path: &str, manager: &str, patch: Value) {
        self.shared.lock().interleaves.push(Interleave {
            method: method.to_string(),
            path: path.to_string(),
            manager: manager.to_string(),
            patch,
        });
    }

    /// From now on, every request on `plural` of `group` (`""` for core) is a 403, as
    /// for a role without access to it.
    pub fn forbid(&self, group: &str, plural: &str) {
        self.shared
            .lock()
            .forbidden
            .insert((group.to_string(), plural.to_string()));
    }

    /// Appends a line to the log of `container` in pod `pod`, stamped now, as the
    /// kubelet would (the pod need not exist yet; its log is read through `pods/log`).
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        self.shared
            .lock()
            .pod_logs
            .entry((
                namespace.to_string(),
                pod.to_string(),
                container.to_string(),
            ))
            .or_default()
            .push((k8s_openapi::jiff::Timestamp::now(), line.to_string()));
    }

    /// Makes `port` of pod `pod` answer at `address` (`http://127.0.0.1:PORT`), as its
    /// IP would: the pod proxy (`pods/<pod>:<port>/proxy/<path>`) forwards there.
    pub fn pod_address(&self, namespace: &str, pod: &str, port: u16, address: &str) {
        self.shared.lock().pod_addresses.insert(
            (namespace.to_string(), pod.to_string(), port),
            address.to_string(),
        );
    }

    /// The most requests the server was handling at once (from the request's arrival
    /// to its answer; a watch counts until its answer starts).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts counting [`KubeServer::max_in_flight`] again.
    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }
}

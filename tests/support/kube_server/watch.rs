//! Watches: `ADDED`/`MODIFIED`/`DELETED` lines after a `resourceVersion`, filtered by
//! the selectors, with synthetic initial events and bookmarks, ended after
//! `timeoutSeconds`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::path::Query;
use super::reads::partial_metadata;
use super::selectors::{FieldSelector, LabelSelector};
use super::state::{Event, EventType, Key, Shared};

/// A watch: the events after the asked version as JSON lines, until `timeoutSeconds`.
pub(super) fn watch(
    shared: &Arc<Shared>,
    res: usize,
    namespace: Option<String>,
    query: &Query,
    metadata_only: bool,
) -> ApiResult<Response> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let timeout = match query.get("timeoutSeconds") {
        None => Duration::from_secs(1800),
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
        ),
    };
    let initial_events = query.flag("sendInitialEvents")?;
    if initial_events {
        if query.get("resourceVersionMatch") != Some("NotOlderThan")
            || !query.flag("allowWatchBookmarks")?
        {
            return Err(ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "",
                &[("sendInitialEvents".into(), "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks".into())],
            ));
        }
    } else if query.get("resourceVersionMatch").is_some() {
        return Err(ApiError::invalid(
            "ListOptions.meta.k8s.io",
            "",
            &[("resourceVersionMatch".into(), "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into())],
        ));
    }
    let state = shared.lock();
    let from = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a number"
            ))
        })?),
    };
    let resource = state.resources[res].clone();
    let filter = WatchFilter {
        res,
        namespace,
        labels,
        fields,
        metadata_only,
    };
    // Synthetic ADDED events for what exists, when no version (or 0) is given.
    let mut initial = String::new();
    let cursor = match from {
        Some(rv) if !initial_events => rv,
        _ => {
            for (key, object) in state.objects.iter() {
                if filter.selects_key(key) && filter.selects(object) {
                    initial.push_str(&filter.line("ADDED", object));
                    initial.push('\n');
                }
            }
            if initial_events {
                let bookmark = json!({
                    "kind": resource.kind, "apiVersion": resource.api_version(),
                    "metadata": {"resourceVersion": state.rv.to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "true"}},
                });
                initial.push_str(&json!({"type": "BOOKMARK", "object": bookmark}).to_string());
                initial.push('\n');
            }
            state.rv
        }
    };
    drop(state);
    let deadline = tokio::time::Instant::now() + timeout;
    let receiver = shared.changed.subscribe();
    let stream = futures::stream::unfold(
        (shared.clone(), filter, cursor, receiver, initial),
        move |(shared, filter, mut cursor, mut receiver, initial)| async move {
            if !initial.is_empty() {
                let chunk = Bytes::from(initial);
                return Some((
                    Ok::<_, std::io::Error>(chunk),
                    (shared, filter, cursor, receiver, String::new()),
                ));
            }
            loop {
                receiver.borrow_and_update();
                let mut lines = String::new();
                {
                    let state = shared.lock();
                    let start = state.events.partition_point(|e| e.rv <= cursor);
                    for event in &state.events[start..] {
                        cursor = event.rv;
                        if let Some(line) = filter.event(event) {
                            lines.push_str(&line);
                            lines.push('\n');
                        }
                    }
                }
                if !lines.is_empty() {
                    return Some((
                        Ok(Bytes::from(lines)),
                        (shared, filter, cursor, receiver, String::new()),
                    ));
                }
                match tokio::time::timeout_at(deadline, receiver.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return None,
                }
            }
        },
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct WatchFilter {
    pub(super) res: usize,
    pub(super) namespace: Option<String>,
    pub(super) labels: LabelSelector,
    pub(super) fields: FieldSelector,
    pub(super) metadata_only: bool,
}

impl WatchFilter {
    fn selects_key(&self, key: &Key) -> bool {
        key.res == self.res
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
    }

    fn selects(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    fn line(&self, kind: &str, object: &Value) -> String {
        let object = if self.metadata_only {
            partial_metadata(object)
        } else {
            object.clone()
        };
        json!({"type": kind, "object": object}).to_string()
    }

    /// The line this watch sends for an event, if any: an object that starts matching the
    /// selectors is `ADDED`, one that stops is `DELETED`.
    fn event(&self, event: &Event) -> Option<String> {
        if !self.selects_key(&event.key) {
            return None;
        }
        let now = self.selects(&event.object);
        let kind = match (event.kind, event.old.as_ref().map(|o| self.selects(o))) {
            (EventType::Modified, Some(true)) if !now => "DELETED",
            (EventType::Modified, Some(false)) if now => "ADDED",
            (EventType::Modified, Some(false)) => return None,
            (kind, _) if now => kind.as_str(),
            _ => return None,
        };
        Some(self.line(kind, &event.object))
    }
}

//! Lists: by label and field selector, paged with `continue` tokens over the current
//! objects, and the `PartialObjectMetadata` views of objects and lists.

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::path::Query;
use super::selectors::{FieldSelector, LabelSelector};
use super::state::{Key, Shared};

pub(super) fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

pub(super) fn partial_list(list: &Value) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(partial_metadata)
        .collect();
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list["metadata"], "items": items})
}

impl Shared {
    /// A `<Kind>List` of the matching objects (one page of it, with `limit`).
    pub(super) fn list(
        &self,
        res: usize,
        namespace: Option<&str>,
        query: &Query,
    ) -> ApiResult<Value> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let state = self.lock();
        match (query.get("resourceVersionMatch"), query.get("resourceVersion")) {
            (None, _) => {}
            (Some(_), None | Some("")) => {
                return Err(ApiError::invalid(
                    "ListOptions.meta.k8s.io",
                    "",
                    &[("resourceVersionMatch".into(), "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into())],
                ))
            }
            (Some("NotOlderThan"), Some(_)) => {}
            (Some("Exact"), Some(rv)) if rv == state.rv.to_string() => {}
            (Some("Exact"), Some(rv)) => {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    format!("the test API server only lists the latest state ({}), not resourceVersion {rv}", state.rv),
                ))
            }
            (Some(other), Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        }
        let limit = match query.get("limit") {
            None => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
            )
            .filter(|l| *l > 0),
        };
        let after: Option<Key> = match query.get("continue") {
            None | Some("") => None,
            Some(token) => Some(decode_continue(res, token)?),
        };
        let resource = &state.resources[res];
        let mut items = Vec::new();
        let mut more = None;
        for (key, object) in state.objects.iter() {
            if key.res != res
                || namespace.is_some_and(|ns| ns != key.namespace)
                || after.as_ref().is_some_and(|a| key <= a)
                || !labels.matches(object)
                || !fields.matches(object)
            {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                more = Some(items.len());
                break;
            }
            let mut item = object.clone();
            if !resource.custom {
                // Items of built-in kinds carry no apiVersion/kind, as the real server sends them.
                let map = item.as_object_mut().expect("an object");
                map.remove("apiVersion");
                map.remove("kind");
            }
            items.push(item);
        }
        let mut metadata = json!({"resourceVersion": state.rv.to_string()});
        if more.is_some() {
            let last = items.last().expect("a full page");
            let key = Key::new(
                res,
                last["metadata"]["namespace"].as_str(),
                last["metadata"]["name"].as_str().unwrap_or(""),
            );
            metadata["continue"] = json!(encode_continue(&key));
        }
        Ok(json!({
            "kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
            "metadata": metadata, "items": items,
        }))
    }
}

fn encode_continue(key: &Key) -> String {
    hex::encode(format!("{}\n{}", key.namespace, key.name))
}

fn decode_continue(res: usize, token: &str) -> ApiResult<Key> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let text = String::from_utf8(hex::decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (namespace, name) = text.split_once('\n').ok_or_else(bad)?;
    Ok(Key {
        res,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

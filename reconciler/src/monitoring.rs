//! Input-drift monitoring of an endpoint: the requests its router captured
//! (`[endpoint.<name>.monitor]`) against the dataset version its serving model version
//! was trained on, feature by feature ([`crate::input_drift`]).
//!
//! The serving version is the deployment with the most traffic in the applied value; its
//! training data is the first dataset among its lineage's inputs. Captured bodies are read
//! in the shapes the servers answer: `{"rows": [{feature: value, …}, …]}` (`/v1/predict`)
//! and Open Inference Protocol tensors named like a column (`{"inputs": [{"name":
//! "income", "shape": [n], "data": […]}]}`). At most [`MAX_REFERENCE_ROWS`] training rows
//! are read.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::artifacts::{VersionKind, VersionRef};
use crate::backend::store::{self, Store};
use crate::input_drift::{compare, FeatureDrift, Values};
use crate::plan::endpoint::EndpointValue;

/// The most training rows read as the reference.
pub const MAX_REFERENCE_ROWS: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("{model} records no dataset among its inputs, so there is nothing to compare its requests with")]
    NoTrainingData { model: String },
    #[error("{reference} is not in the store")]
    Missing { reference: String },
    #[error("`{key}` is not readable CSV: {reason}")]
    Csv { key: String, reason: String },
    #[error("cannot create the scratch folder {}", .path.display())]
    Scratch {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One endpoint's input drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointInputs {
    /// `ws/endpoint.name`.
    pub endpoint: String,
    /// The serving model version, `model.<name>@<version>`.
    pub model: String,
    /// Its training data, `dataset.<name>@<version>`.
    pub training_data: String,
    /// Captured requests read, and the rows they held.
    pub requests: usize,
    pub rows: usize,
    pub max_psi: f64,
    /// Every feature both sides have, largest PSI first.
    pub features: Vec<FeatureDrift>,
}

impl EndpointInputs {
    pub fn drifted(&self) -> bool {
        self.features.iter().any(|f| f.drifted)
    }

    /// The features over the threshold.
    pub fn drifted_features(&self) -> Vec<&FeatureDrift> {
        self.features.iter().filter(|f| f.drifted).collect()
    }
}

/// Compares `bodies` (captured requests) with the training data of the version `serving`
/// serves most; `None` when it declares no monitoring or serves nothing. `scratch` is a
/// folder for a copy of one training file at a time.
pub async fn check(
    store: &Store,
    endpoint: &str,
    serving: &EndpointValue,
    bodies: &[Value],
    scratch: &std::path::Path,
) -> Result<Option<EndpointInputs>, Error> {
    let Some(monitor) = &serving.monitor else {
        return Ok(None);
    };
    let Some((_, deployment)) = serving
        .deployments
        .iter()
        .max_by_key(|(name, _)| serving.traffic.get(*name).copied().unwrap_or(0))
    else {
        return Ok(None);
    };
    let model = format!("model.{}@{}", deployment.model, deployment.version);
    let record = store
        .model_version(&deployment.model, &deployment.version)
        .await?
        .ok_or_else(|| Error::Missing {
            reference: model.clone(),
        })?;
    let training = record
        .inputs
        .values()
        .filter_map(|r| VersionRef::parse(r).ok())
        .find(|r| r.kind == VersionKind::Dataset)
        .ok_or_else(|| Error::NoTrainingData {
            model: model.clone(),
        })?;
    let reference = reference_columns(store, &training, scratch).await?;
    let (current, rows) = captured_columns(bodies, &reference);
    Ok(Some(EndpointInputs {
        endpoint: endpoint.to_string(),
        model,
        training_data: training.to_string(),
        requests: bodies.len(),
        rows,
        max_psi: monitor.max_psi,
        features: compare(&reference, &current, monitor.max_psi),
    }))
}

/// The training dataset's CSV columns.
async fn reference_columns(
    store: &Store,
    training: &VersionRef,
    scratch: &std::path::Path,
) -> Result<BTreeMap<String, Values>, Error> {
    let version = store
        .dataset_version(&training.name, &training.version)
        .await?
        .ok_or_else(|| Error::Missing {
            reference: training.to_string(),
        })?;
    // Each file goes through a copy in `scratch` and is read row by row: a training set
    // may be far larger than the rows kept.
    std::fs::create_dir_all(scratch).map_err(|source| Error::Scratch {
        path: scratch.to_path_buf(),
        source,
    })?;
    let copy = scratch.join(format!("{}-{}.csv", training.name, training.version));
    let result = read_csv_files(store, &version.files, &copy).await;
    let _ = std::fs::remove_file(&copy);
    result
}

async fn read_csv_files(
    store: &Store,
    files: &[store::FileEntry],
    copy: &std::path::Path,
) -> Result<BTreeMap<String, Values>, Error> {
    let mut columns: BTreeMap<String, Values> = BTreeMap::new();
    let mut rows = 0;
    for file in files.iter().filter(|f| f.path.ends_with(".csv")) {
        store.objects().get_file(&file.key, copy).await?;
        let csv_error = |e: csv::Error| Error::Csv {
            key: file.key.clone(),
            reason: e.to_string(),
        };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(copy)
            .map_err(csv_error)?;
        let header: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        for record in reader.records() {
            if rows == MAX_REFERENCE_ROWS {
                return Ok(columns);
            }
            let record = record.map_err(csv_error)?;
            for (name, cell) in header.iter().zip(record.iter()) {
                columns.entry(name.clone()).or_default().push(cell);
            }
            rows += 1;
        }
    }
    Ok(columns)
}

/// The captured requests' values of the reference's columns, and how many rows they
/// held.
fn captured_columns(
    bodies: &[Value],
    reference: &BTreeMap<String, Values>,
) -> (BTreeMap<String, Values>, usize) {
    let mut columns: BTreeMap<String, Values> = BTreeMap::new();
    let mut rows = 0;
    let mut push = |name: &str, value: &Value| {
        if !reference.contains_key(name) {
            return;
        }
        let cell = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        columns.entry(name.to_string()).or_default().push(&cell);
    };
    for body in bodies {
        if let Some(list) = body.get("rows").and_then(Value::as_array) {
            for row in list.iter().filter_map(Value::as_object) {
                rows += 1;
                for (name, value) in row {
                    push(name, value);
                }
            }
        }
        if let Some(inputs) = body.get("inputs").and_then(Value::as_array) {
            let mut most = 0;
            for tensor in inputs {
                let (Some(name), Some(data)) = (
                    tensor.get("name").and_then(Value::as_str),
                    tensor.get("data").and_then(Value::as_array),
                ) else {
                    continue;
                };
                most = most.max(data.len());
                for value in data {
                    push(name, value);
                }
            }
            rows += most;
        }
    }
    (columns, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_and_named_tensors_are_read_and_unknown_columns_left_out() {
        let reference = BTreeMap::from([
            ("age".to_string(), Values::default()),
            ("region".to_string(), Values::default()),
        ]);
        let bodies = [
            json!({"rows": [{"age": 30, "region": "north", "other": 1}, {"age": 41}]}),
            json!({"inputs": [{"name": "age", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}]}),
            json!("not a request"),
        ];
        let (columns, rows) = captured_columns(&bodies, &reference);
        assert_eq!(rows, 5);
        assert_eq!(columns["age"].numbers, vec![30.0, 41.0, 1.0, 2.0, 3.0]);
        assert_eq!(columns["region"].text, vec!["north".to_string()]);
        assert!(!columns.contains_key("other"));
    }
}

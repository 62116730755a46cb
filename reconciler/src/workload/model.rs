//! The trained model, its file format, and prediction.
//!
//! `model.safetensors` holds four `F64` tensors, `bias` [1], `mean` [n], `std` [n] and
//! `weight` [n], and the metadata `format` = [`FORMAT`], `label`, and `features` (a JSON
//! array of the n feature names, in tensor order). Readers also accept `F32` tensors.
//!
//! The file is encoded here rather than with `safetensors::serialize`: that function writes
//! the metadata map from a `HashMap`, so its key order (and the file's bytes) would change
//! from run to run. This encoder sorts every key, and [`load_model`] decodes with the
//! `safetensors` crate, which checks the result.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use super::{Error, Result};

/// The `format` metadata value of files written by this module.
pub const FORMAT: &str = "cairn-logreg-v1";

/// The model file's name in the output folder.
pub const MODEL_FILE: &str = "model.safetensors";

/// A logistic-regression model over standardized features.
///
/// The probability of label 1 for a row `x` is
/// `sigmoid(bias + Σ weight[j] · (x[features[j]] − mean[j]) / std[j])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The feature names, in the order of the tensors.
    pub features: Vec<String>,
    /// The label column the model was trained to predict.
    pub label: String,
    weights: Vec<f64>,
    bias: f64,
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Model {
    /// Returns a model, or `None` when the vectors do not all have one value per feature,
    /// a value is not finite, or a standard deviation is not positive.
    pub fn new(
        features: Vec<String>,
        label: String,
        weights: Vec<f64>,
        bias: f64,
        mean: Vec<f64>,
        std: Vec<f64>,
    ) -> Option<Model> {
        let n = features.len();
        let consistent = weights.len() == n
            && mean.len() == n
            && std.len() == n
            && bias.is_finite()
            && weights.iter().chain(&mean).all(|v| v.is_finite())
            && std.iter().all(|s| s.is_finite() && *s > 0.0);
        consistent.then_some(Model {
            features,
            label,
            weights,
            bias,
            mean,
            std,
        })
    }

    /// The weight of each feature, on the standardized scale.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// The training-split mean of each feature.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The training-split standard deviation of each feature (1 where it was 0).
    pub fn std(&self) -> &[f64] {
        &self.std
    }

    /// Returns the probability that the label is 1 for a row of raw (unstandardized)
    /// feature values. Keys the model does not use are ignored.
    pub fn predict(&self, row: &BTreeMap<String, f64>) -> Result<f64> {
        let mut z = self.bias;
        for (j, name) in self.features.iter().enumerate() {
            let Some(&x) = row.get(name) else {
                return Err(Error::MissingFeature {
                    feature: name.clone(),
                    expected: self.features.clone(),
                });
            };
            // Same operations, in the same order, as training (see `logit`), so that
            // in-sample predictions match the training ones exactly.
            z += self.weights[j] * standardize(x, self.mean[j], self.std[j]);
        }
        Ok(sigmoid(z))
    }

    /// Returns the log-odds for one row of already standardized values.
    pub(crate) fn logit(&self, standardized: &[f64]) -> f64 {
        logit(&self.weights, self.bias, standardized)
    }

    /// Returns the `model.safetensors` bytes.
    pub(crate) fn to_safetensors(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct TensorInfo {
            dtype: &'static str,
            shape: [usize; 1],
            data_offsets: [usize; 2],
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Entry {
            Metadata(BTreeMap<&'static str, String>),
            Tensor(TensorInfo),
        }

        // A `Vec<String>` always encodes.
        let features = serde_json::to_string(&self.features).unwrap_or_default();
        let metadata = BTreeMap::from([
            ("features", features),
            ("format", FORMAT.to_string()),
            ("label", self.label.clone()),
        ]);
        // Tensors in name order, data in the same order.
        let tensors: [(&str, &[f64]); 4] = [
            ("bias", std::slice::from_ref(&self.bias)),
            ("mean", &self.mean),
            ("std", &self.std),
            ("weight", &self.weights),
        ];
        let mut header = BTreeMap::from([("__metadata__", Entry::Metadata(metadata))]);
        let mut data = Vec::new();
        for (name, values) in tensors {
            let start = data.len();
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            let info = TensorInfo {
                dtype: "F64",
                shape: [values.len()],
                data_offsets: [start, data.len()],
            };
            header.insert(name, Entry::Tensor(info));
        }
        // Strings, numbers and maps with string keys always encode.
        let mut header = serde_json::to_vec(&header).unwrap_or_default();
        // The format pads the header with spaces so that the data starts 8-byte aligned.
        header.resize(header.len().next_multiple_of(8), b' ');

        let mut bytes = Vec::with_capacity(8 + header.len() + data.len());
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&data);
        bytes
    }

    /// Decodes `model.safetensors` bytes; `path` is only for errors.
    pub(crate) fn from_safetensors(bytes: &[u8], path: &Path) -> Result<Model> {
        let invalid = |reason: String| Error::InvalidModel {
            path: path.to_path_buf(),
            reason,
        };
        let file_error = |source| Error::ModelFile {
            path: path.to_path_buf(),
            source,
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(file_error)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(file_error)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            metadata
                .get(key)
                .ok_or_else(|| invalid(format!("the metadata has no `{key}`")))
        };

        let format = field("format")?;
        if format != FORMAT {
            return Err(invalid(format!("its format is `{format}`")));
        }
        let label = field("label")?.clone();
        let features: Vec<String> = serde_json::from_str(field("features")?)
            .map_err(|e| invalid(format!("`features` is not a JSON array of names: {e}")))?;
        let n = features.len();

        let vector = |name: &str, len: usize| -> Result<Vec<f64>> {
            let view = tensors
                .tensor(name)
                .map_err(|_| invalid(format!("there is no tensor `{name}`")))?;
            if view.shape() != [len] {
                return Err(invalid(format!(
                    "tensor `{name}` has shape {:?}, expected [{len}]",
                    view.shape()
                )));
            }
            match view.dtype() {
                Dtype::F64 => Ok(view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect()),
                Dtype::F32 => Ok(view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()),
                other => Err(invalid(format!(
                    "tensor `{name}` has dtype {other:?}, expected F64 or F32"
                ))),
            }
        };
        let weights = vector("weight", n)?;
        let bias = vector("bias", 1)?[0];
        let mean = vector("mean", n)?;
        let std = vector("std", n)?;
        Model::new(features, label, weights, bias, mean, std).ok_or_else(|| {
            invalid("a value is not finite, or a standard deviation is not positive".into())
        })
    }

    /// Writes `model.safetensors` into `dir` (through a temporary file, so that a failed
    /// write never leaves a truncated model behind).
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(MODEL_FILE), &self.to_safetensors())
    }
}

/// Reads `model.safetensors` from the folder `dir`.
pub fn load_model(dir: &Path) -> Result<Model> {
    let path = dir.join(MODEL_FILE);
    let bytes = fs::read(&path).map_err(|source| Error::ReadModel {
        path: path.clone(),
        source,
    })?;
    Model::from_safetensors(&bytes, &path)
}

/// Writes `bytes` to `path` through `path.tmp` and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let write_error = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    fs::write(&tmp, bytes).map_err(write_error)?;
    fs::rename(&tmp, path).map_err(write_error)
}

pub(crate) fn standardize(x: f64, mean: f64, std: f64) -> f64 {
    (x - mean) / std
}

/// Returns `bias + Σ w·x`, summed left to right.
pub(crate) fn logit(weights: &[f64], bias: f64, x: &[f64]) -> f64 {
    let mut z = bias;
    for (w, x) in weights.iter().zip(x) {
        z += w * x;
    }
    z
}

/// The logistic function, without overflow for large |z|.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// A small two-feature model for unit tests here and in the server.
#[cfg(test)]
pub(crate) fn sample_model() -> Model {
    Model::new(
        vec!["a".into(), "b".into()],
        "y".into(),
        vec![2.0, -1.0],
        0.5,
        vec![10.0, 0.0],
        vec![2.0, 1.0],
    )
    .expect("a consistent model")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        sample_model()
    }

    fn row(values: &[(&str, f64)]) -> BTreeMap<String, f64> {
        values.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn predicts_with_standardization() {
        // z = 0.5 + 2·(12 − 10)/2 − 1·3 = −0.5
        let p = model()
            .predict(&row(&[("a", 12.0), ("b", 3.0), ("extra", 9.0)]))
            .unwrap();
        assert!((p - sigmoid(-0.5)).abs() < 1e-15);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
    }

    #[test]
    fn predict_names_the_missing_feature() {
        let err = model().predict(&row(&[("a", 1.0)])).unwrap_err();
        assert!(matches!(&err, Error::MissingFeature { feature, .. } if feature == "b"));
        assert_eq!(
            err.to_string(),
            "the input has no value for feature `b`; the model needs: a, b"
        );
    }

    #[test]
    fn rejects_inconsistent_models() {
        let f = || vec!["a".to_string()];
        assert!(Model::new(f(), "y".into(), vec![1.0, 2.0], 0.0, vec![0.0], vec![1.0]).is_none());
        assert!(Model::new(f(), "y".into(), vec![1.0], 0.0, vec![0.0], vec![0.0]).is_none());
        assert!(Model::new(f(), "y".into(), vec![f64::NAN], 0.0, vec![0.0], vec![1.0]).is_none());
    }

    #[test]
    fn file_round_trip_is_read_by_the_safetensors_crate() {
        let model = model();
        let bytes = model.to_safetensors();
        assert_eq!(bytes, model.to_safetensors());
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);

        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let metadata = header.metadata().as_ref().unwrap();
        assert_eq!(metadata["format"], FORMAT);
        assert_eq!(metadata["label"], "y");
        assert_eq!(metadata["features"], r#"["a","b"]"#);
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        let weight = tensors.tensor("weight").unwrap();
        assert_eq!((weight.dtype(), weight.shape()), (Dtype::F64, &[2][..]));
        assert_eq!(tensors.tensor("bias").unwrap().shape(), &[1]);

        let back = Model::from_safetensors(&bytes, Path::new("m")).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn reads_f32_tensors() {
        let data: Vec<u8> = [0.5f32, 2.0, 10.0, 2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let views = [
            ("bias", &data[0..4], 1),
            ("weight", &data[4..8], 1),
            ("mean", &data[8..12], 1),
            ("std", &data[12..16], 1),
        ]
        .map(|(name, bytes, n)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![n], bytes).unwrap();
            (name, view)
        });
        let metadata = std::collections::HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("label".to_string(), "y".to_string()),
            ("features".to_string(), r#"["a"]"#.to_string()),
        ]);
        let bytes = safetensors::serialize(views, Some(metadata)).unwrap();
        let model = Model::from_safetensors(&bytes, Path::new("m")).unwrap();
        assert_eq!(
            (model.bias(), model.weights(), model.mean(), model.std()),
            (0.5, &[2.0][..], &[10.0][..], &[2.0][..])
        );
    }

    #[test]
    fn rejects_bad_files() {
        let path = Path::new("m.safetensors");
        let err = Model::from_safetensors(b"not a model", path).unwrap_err();
        assert!(matches!(err, Error::ModelFile { .. }), "{err:?}");

        // Change the format name in place (same length, so the header stays valid).
        let mut bytes = model().to_safetensors();
        let at = bytes
            .windows(FORMAT.len())
            .position(|w| w == FORMAT.as_bytes())
            .unwrap();
        bytes[at..at + FORMAT.len()].copy_from_slice(b"cairn-logreg-v9");
        let err = Model::from_safetensors(&bytes, path).unwrap_err();
        assert!(
            err.to_string().ends_with("its format is `cairn-logreg-v9`"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let err = load_model(dir.path()).unwrap_err();
        assert!(matches!(err, Error::ReadModel { .. }), "{err:?}");
    }
}

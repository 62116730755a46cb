//! The model `cairn serve` serves, whatever its format, as the Open Inference Protocol
//! sees it: inputs and outputs described by name, datatype and shape, and a run from
//! input tensors to output tensors.
//!
//! - A folder holding `model.safetensors` is Cairn's reference model (a logistic
//!   regression, [`Model`]): one input `input`, FP64 or FP32 `[-1, F]` with the features in
//!   the model's order (listed in the metadata's `parameters.features`), one output
//!   `score`, FP64 `[-1]`, the probability of each row, computed exactly as
//!   `/v1/predict` computes it.
//! - A folder holding `model.onnx` is an ONNX model ([`OnnxModel`]), its inputs and
//!   outputs as the file declares them.

use std::path::Path;

use serde_json::{json, Value};

use super::model::{self, Model, MODEL_FILE};
use super::oip::{self, Data, Datatype, RequestError, Tensor, TensorMetadata};
use super::onnx::{self, OnnxModel, ONNX_FILE};

/// The reference model's one input and output.
pub const REFERENCE_INPUT: &str = "input";
pub const REFERENCE_OUTPUT: &str = "score";

/// A model being served.
#[derive(Debug, Clone)]
pub enum Served {
    Reference(Model),
    Onnx(OnnxModel),
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The request's fault: 400.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The model's: 500.
    #[error(transparent)]
    Model(#[from] onnx::Error),
    #[error("the model produced a non-finite score for row {row}; this model version is numerically broken")]
    NonFinite { row: usize },
}

/// Loads `dir/file` (`model.safetensors` or `model.onnx`); returns the model and the
/// file's bytes (what a version hash is taken of).
pub(crate) fn load(dir: &Path, file: &str) -> super::Result<(Served, Vec<u8>)> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(|source| super::Error::ReadModel {
        path: path.clone(),
        source,
    })?;
    let served = if file == ONNX_FILE {
        Served::Onnx(OnnxModel::load(&path).map_err(super::Error::Onnx)?)
    } else {
        Served::Reference(Model::from_safetensors(&bytes, &path)?)
    };
    Ok((served, bytes))
}

/// The model file a folder holds, by the format it names.
pub fn model_file(dir: &Path) -> Option<&'static str> {
    [MODEL_FILE, ONNX_FILE]
        .into_iter()
        .find(|f| dir.join(f).is_file())
}

impl Served {
    /// The protocol's `platform` of the model.
    pub fn platform(&self) -> &'static str {
        match self {
            Served::Reference(_) => "cairn_logreg",
            Served::Onnx(_) => "onnx",
        }
    }

    pub fn inputs(&self) -> Vec<TensorMetadata> {
        match self {
            Served::Reference(m) => vec![TensorMetadata {
                name: REFERENCE_INPUT.into(),
                datatype: Datatype::Fp64,
                shape: vec![-1, m.features.len() as i64],
            }],
            Served::Onnx(m) => m.inputs().to_vec(),
        }
    }

    pub fn outputs(&self) -> Vec<TensorMetadata> {
        match self {
            Served::Reference(_) => vec![TensorMetadata {
                name: REFERENCE_OUTPUT.into(),
                datatype: Datatype::Fp64,
                shape: vec![-1],
            }],
            Served::Onnx(m) => m.outputs().to_vec(),
        }
    }

    /// What the metadata says beyond inputs and outputs: the reference model's feature
    /// order.
    pub fn parameters(&self) -> Option<Value> {
        match self {
            Served::Reference(m) => Some(json!({ "features": m.features })),
            Served::Onnx(_) => None,
        }
    }

    /// The names a server reports as what it reads (features, or ONNX inputs).
    pub fn input_names(&self) -> Vec<String> {
        match self {
            Served::Reference(m) => m.features.clone(),
            Served::Onnx(m) => m.inputs().iter().map(|i| i.name.clone()).collect(),
        }
    }

    /// Runs the model on a request's inputs (checked against [`Served::inputs`] here).
    /// ONNX models block for as long as they compute: call this off the async threads.
    pub fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        match self {
            Served::Reference(m) => {
                // FP32 is read as FP64: the reference model computes in f64.
                let inputs = inputs
                    .into_iter()
                    .map(|t| match t.data {
                        Data::Fp32(v) if t.name == REFERENCE_INPUT => Tensor {
                            data: Data::Fp64(v.into_iter().map(f64::from).collect()),
                            ..t
                        },
                        _ => t,
                    })
                    .collect();
                let [input] = <[Tensor; 1]>::try_from(oip::match_inputs(&self.inputs(), inputs)?)
                    .expect("one input, matched");
                let Data::Fp64(x) = &input.data else {
                    unreachable!("matched as FP64")
                };
                Ok(vec![reference_scores(m, &input.shape, x)?])
            }
            Served::Onnx(m) => {
                let inputs = oip::match_inputs(m.inputs(), inputs)?;
                Ok(m.infer(inputs)?)
            }
        }
    }
}

/// The reference model's probability for each row of `x` (`shape` = `[rows, features]`).
fn reference_scores(m: &Model, shape: &[usize], x: &[f64]) -> Result<Tensor, InferError> {
    let features = m.features.len();
    let rows = shape.first().copied().unwrap_or(0);
    let mut standardized = vec![0.0; features];
    let mut scores = Vec::with_capacity(rows);
    for row in 0..rows {
        for j in 0..features {
            standardized[j] = model::standardize(x[row * features + j], m.mean()[j], m.std()[j]);
        }
        let score = model::sigmoid(m.logit(&standardized));
        if !score.is_finite() {
            return Err(InferError::NonFinite { row });
        }
        scores.push(score);
    }
    Ok(Tensor {
        name: REFERENCE_OUTPUT.into(),
        shape: vec![rows],
        data: Data::Fp64(scores),
    })
}

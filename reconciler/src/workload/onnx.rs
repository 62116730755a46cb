//! ONNX models, run by `tract` (pure Rust: nothing is downloaded at build time and no
//! native runtime is linked). A model folder holding [`ONNX_FILE`] is loaded once,
//! optimized for this machine, and run for each request; its inputs and outputs are
//! described by name, datatype and shape, a dimension the file leaves symbolic (a batch
//! `N`) as `-1`, and any size is accepted there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::oip::{Data, Datatype, Tensor, TensorMetadata};

/// The file an ONNX model folder holds.
pub const ONNX_FILE: &str = "model.onnx";

/// Errors loading or running an ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the ONNX model `{}`: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("the ONNX model's {what} `{name}` has type {datum:?}, which this server does not serve (BOOL, UINT8, INT32, INT64, FP32, FP64)")]
    UnsupportedType {
        what: &'static str,
        name: String,
        datum: DatumType,
    },
    #[error("the ONNX model failed on this request: {reason}")]
    Run { reason: String },
}

/// A loaded ONNX model, ready to run (cheap to share: runs don't lock).
#[derive(Debug, Clone)]
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

impl OnnxModel {
    /// Loads and optimizes `path` (a `model.onnx`).
    pub fn load(path: &Path) -> Result<OnnxModel, Error> {
        let load = |e: TractError| Error::Load {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(load)?
            .into_optimized()
            .map_err(load)?;
        let describe = |what: &'static str, outlets: &[OutletId]| {
            outlets
                .iter()
                .map(|&outlet| {
                    let name = model
                        .outlet_label(outlet)
                        .map(str::to_string)
                        .unwrap_or_else(|| model.node(outlet.node).name.clone());
                    let fact = model.outlet_fact(outlet).map_err(load)?;
                    let datatype = datatype(fact.datum_type).ok_or(Error::UnsupportedType {
                        what,
                        name: name.clone(),
                        datum: fact.datum_type,
                    })?;
                    let shape = fact
                        .shape
                        .iter()
                        .map(|d| d.to_i64().unwrap_or(-1))
                        .collect();
                    Ok(TensorMetadata {
                        name,
                        datatype,
                        shape,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
        };
        let inputs = describe("input", model.input_outlets().map_err(load)?)?;
        let outputs = describe("output", model.output_outlets().map_err(load)?)?;
        let plan = model.into_runnable().map_err(load)?;
        Ok(OnnxModel {
            plan,
            inputs,
            outputs,
        })
    }

    pub fn inputs(&self) -> &[TensorMetadata] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorMetadata] {
        &self.outputs
    }

    /// Runs the model on `inputs`, given in the order of [`OnnxModel::inputs`] and
    /// checked against them (`oip::match_inputs`). Blocks: call it off the async
    /// threads.
    pub fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        let run = |e: TractError| Error::Run {
            reason: format!("{e:#}"),
        };
        let values: TVec<TValue> = inputs
            .into_iter()
            .map(|t| to_tract(t).map(IntoTValue::into_tvalue))
            .collect::<TractResult<_>>()
            .map_err(run)?;
        let results = self.plan.run(values).map_err(run)?;
        results
            .into_iter()
            .zip(&self.outputs)
            .map(|(value, meta)| from_tract(&meta.name, &value).map_err(run))
            .collect()
    }
}

/// The protocol's name for a tract element type, for the types served.
fn datatype(datum: DatumType) -> Option<Datatype> {
    Some(match datum {
        DatumType::Bool => Datatype::Bool,
        DatumType::U8 => Datatype::Uint8,
        DatumType::I32 => Datatype::Int32,
        DatumType::I64 => Datatype::Int64,
        DatumType::F32 => Datatype::Fp32,
        DatumType::F64 => Datatype::Fp64,
        _ => return None,
    })
}

fn to_tract(tensor: Tensor) -> TractResult<tract_onnx::prelude::Tensor> {
    let shape = &tensor.shape;
    Ok(match tensor.data {
        Data::Bool(v) => tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), v)?.into_tensor(),
        Data::Uint8(v) => tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), v)?.into_tensor(),
        Data::Int32(v) => tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), v)?.into_tensor(),
        Data::Int64(v) => tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), v)?.into_tensor(),
        Data::Fp32(v) => tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), v)?.into_tensor(),
        Data::Fp64(v) => tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), v)?.into_tensor(),
    })
}

fn from_tract(name: &str, value: &tract_onnx::prelude::Tensor) -> TractResult<Tensor> {
    fn elements<T: Datum + Clone>(value: &tract_onnx::prelude::Tensor) -> TractResult<Vec<T>> {
        Ok(value.to_plain_array_view::<T>()?.iter().cloned().collect())
    }
    let data = match value.datum_type() {
        DatumType::Bool => Data::Bool(elements(value)?),
        DatumType::U8 => Data::Uint8(elements(value)?),
        DatumType::I32 => Data::Int32(elements(value)?),
        DatumType::I64 => Data::Int64(elements(value)?),
        DatumType::F32 => Data::Fp32(elements(value)?),
        DatumType::F64 => Data::Fp64(elements(value)?),
        other => {
            return Err(TractError::msg(format!(
                "output `{name}` has type {other:?}, which this server does not serve"
            )))
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        shape: value.shape().to_vec(),
        data,
    })
}

//! The Open Inference Protocol (KServe's v2 protocol, which Triton, KServe, Seldon
//! MLServer, OpenVINO Model Server and TorchServe speak) as `cairn serve` speaks it over
//! HTTP/JSON: its tensors and the checks a request's tensors pass before a model sees
//! them.
//!
//! A tensor travels as `{"name", "shape", "datatype", "data"}` with the data row-major,
//! flat or nested (`[[1, 2], [3, 4]]` and `[1, 2, 3, 4]` are the same `[2, 2]` tensor).
//! The datatypes served are `BOOL`, `UINT8`, `INT32`, `INT64`, `FP32` and `FP64`. Triton's
//! binary tensor extension (`binary_data_size`) is not spoken: a request using it is
//! refused naming the input, and clients send JSON (`binary_data=False` in
//! `tritonclient`).
//!
//! Every error is a [`RequestError`], answered 400 with `{"error": "..."}` as the
//! protocol says, naming the input at fault.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A tensor element type, by its protocol name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Bool,
    Uint8,
    Int32,
    Int64,
    Fp32,
    Fp64,
}

impl Datatype {
    pub const ALL: [Datatype; 6] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp32,
        Datatype::Fp64,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
        }
    }

    pub fn parse(text: &str) -> Option<Datatype> {
        Datatype::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Datatype {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A tensor's elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

impl Data {
    pub fn datatype(&self) -> Datatype {
        match self {
            Data::Bool(_) => Datatype::Bool,
            Data::Uint8(_) => Datatype::Uint8,
            Data::Int32(_) => Datatype::Int32,
            Data::Int64(_) => Datatype::Int64,
            Data::Fp32(_) => Datatype::Fp32,
            Data::Fp64(_) => Datatype::Fp64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Data::Bool(v) => v.len(),
            Data::Uint8(v) => v.len(),
            Data::Int32(v) => v.len(),
            Data::Int64(v) => v.len(),
            Data::Fp32(v) => v.len(),
            Data::Fp64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_json(&self) -> Value {
        match self {
            Data::Bool(v) => json!(v),
            Data::Uint8(v) => json!(v),
            Data::Int32(v) => json!(v),
            Data::Int64(v) => json!(v),
            Data::Fp32(v) => json!(v),
            Data::Fp64(v) => json!(v),
        }
    }
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    /// The tensor as the protocol's response sends it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "datatype": self.data.datatype(),
            "shape": self.shape,
            "data": self.data.to_json(),
        })
    }
}

/// An input or output as a model's metadata describes it: `-1` for a dimension of any
/// size (a dynamic batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<i64>,
}

/// An inference request, its tensors parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// The outputs asked for by name; every output when absent.
    pub outputs: Option<Vec<String>>,
}

/// Why a request was refused (answered 400 `{"error": ...}`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("the request body is not a valid inference request ({0}); expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}, ...]}}")]
    Malformed(String),
    #[error("input `{input}`: datatype `{datatype}` is not one this server reads (BOOL, UINT8, INT32, INT64, FP32, FP64)")]
    UnknownDatatype { input: String, datatype: String },
    #[error("input `{input}`: shape {shape:?} has a negative dimension")]
    NegativeDimension { input: String, shape: Vec<i64> },
    #[error("input `{input}`: shape {shape:?} has {expected} elements but the data has {found}")]
    DataLength {
        input: String,
        shape: Vec<usize>,
        expected: String,
        found: usize,
    },
    #[error("input `{input}`: element {index} is {value}, not a {datatype} value")]
    BadElement {
        input: String,
        index: usize,
        datatype: Datatype,
        value: String,
    },
    #[error("input `{input}` uses the binary tensor extension (`binary_data_size`), which this server does not read; send the data as JSON (tritonclient: `binary_data=False`)")]
    Binary { input: String },
    #[error("input `{input}` is given twice")]
    Duplicate { input: String },
    #[error("the model has no input `{input}`; its inputs are: {known}")]
    UnknownInput { input: String, known: String },
    #[error("input `{input}` is missing; the model's inputs are: {known}")]
    MissingInput { input: String, known: String },
    #[error("input `{input}`: datatype {found}, but the model takes {expected}")]
    WrongDatatype {
        input: String,
        expected: Datatype,
        found: Datatype,
    },
    #[error(
        "input `{input}`: shape {found:?} does not fit the model's {expected:?} (-1: any size)"
    )]
    WrongShape {
        input: String,
        expected: Vec<i64>,
        found: Vec<usize>,
    },
    #[error("the model has no output `{output}`; its outputs are: {known}")]
    UnknownOutput { output: String, known: String },
    #[error("the inputs have {found} elements in all; at most {max} are accepted per request")]
    TooLarge { found: usize, max: usize },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<WireInput>,
    #[serde(default)]
    outputs: Option<Vec<WireOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOutput {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Map<String, Value>>,
}

/// Parses an inference request's JSON body, accepting at most `max_elements` tensor
/// elements over all its inputs.
pub fn parse_request(body: &[u8], max_elements: usize) -> Result<InferRequest, RequestError> {
    let wire: WireRequest =
        serde_json::from_slice(body).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let mut total = 0usize;
    let mut inputs = Vec::with_capacity(wire.inputs.len());
    for input in wire.inputs {
        if input
            .parameters
            .as_ref()
            .is_some_and(|p| p.contains_key("binary_data_size"))
        {
            return Err(RequestError::Binary { input: input.name });
        }
        let datatype =
            Datatype::parse(&input.datatype).ok_or_else(|| RequestError::UnknownDatatype {
                input: input.name.clone(),
                datatype: input.datatype.clone(),
            })?;
        let shape: Vec<usize> = input
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| RequestError::NegativeDimension {
                input: input.name.clone(),
                shape: input.shape.clone(),
            })?;
        let mut flat = Vec::new();
        if let Some(data) = &input.data {
            flatten(data, &mut flat, max_elements.saturating_sub(total)).map_err(|()| {
                RequestError::TooLarge {
                    found: total.saturating_add(flat.len()).saturating_add(1),
                    max: max_elements,
                }
            })?;
        }
        let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(flat.len()) {
            return Err(RequestError::DataLength {
                input: input.name,
                shape,
                expected: expected.map_or_else(|| "too many".into(), |n| n.to_string()),
                found: flat.len(),
            });
        }
        total += flat.len();
        let data = typed(&input.name, datatype, &flat)?;
        inputs.push(Tensor {
            name: input.name,
            shape,
            data,
        });
    }
    Ok(InferRequest {
        id: wire.id,
        inputs,
        outputs: wire
            .outputs
            .map(|outputs| outputs.into_iter().map(|o| o.name).collect()),
    })
}

/// Appends the leaves of a (possibly nested) array to `out`; `Err` past `max` leaves.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>, max: usize) -> Result<(), ()> {
    match value {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, max)?;
            }
            Ok(())
        }
        leaf => {
            if out.len() >= max {
                return Err(());
            }
            out.push(leaf);
            Ok(())
        }
    }
}

/// The elements as `datatype`, each checked.
fn typed(input: &str, datatype: Datatype, flat: &[&Value]) -> Result<Data, RequestError> {
    fn each<T>(
        input: &str,
        datatype: Datatype,
        flat: &[&Value],
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, RequestError> {
        flat.iter()
            .enumerate()
            .map(|(index, value)| {
                read(value).ok_or_else(|| RequestError::BadElement {
                    input: input.to_string(),
                    index,
                    datatype,
                    value: short(value),
                })
            })
            .collect()
    }
    Ok(match datatype {
        Datatype::Bool => Data::Bool(each(input, datatype, flat, Value::as_bool)?),
        Datatype::Uint8 => Data::Uint8(each(input, datatype, flat, |v| {
            v.as_u64().and_then(|n| u8::try_from(n).ok())
        })?),
        Datatype::Int32 => Data::Int32(each(input, datatype, flat, |v| {
            v.as_i64().and_then(|n| i32::try_from(n).ok())
        })?),
        Datatype::Int64 => Data::Int64(each(input, datatype, flat, Value::as_i64)?),
        Datatype::Fp32 => Data::Fp32(each(input, datatype, flat, |v| {
            #[allow(clippy::cast_possible_truncation)]
            v.as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite() || v.as_f64().is_some_and(f64::is_infinite))
        })?),
        Datatype::Fp64 => Data::Fp64(each(input, datatype, flat, Value::as_f64)?),
    })
}

/// A JSON value for an error message, cut to 40 characters.
fn short(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 40 {
        let mut end = 40;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The request's inputs in the order of the model's `inputs`, each checked against its
/// metadata: present once, of its datatype, of its rank and fixed dimensions.
pub fn match_inputs(
    model: &[TensorMetadata],
    given: Vec<Tensor>,
) -> Result<Vec<Tensor>, RequestError> {
    let known = || {
        model
            .iter()
            .map(|m| format!("{} ({} {:?})", m.name, m.datatype, m.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut slots: Vec<Option<Tensor>> = vec![None; model.len()];
    for tensor in given {
        let Some(i) = model.iter().position(|m| m.name == tensor.name) else {
            return Err(RequestError::UnknownInput {
                input: tensor.name,
                known: known(),
            });
        };
        if slots[i].is_some() {
            return Err(RequestError::Duplicate { input: tensor.name });
        }
        let meta = &model[i];
        if tensor.data.datatype() != meta.datatype {
            return Err(RequestError::WrongDatatype {
                input: tensor.name,
                expected: meta.datatype,
                found: tensor.data.datatype(),
            });
        }
        let fits = tensor.shape.len() == meta.shape.len()
            && tensor
                .shape
                .iter()
                .zip(&meta.shape)
                .all(|(&d, &m)| m < 0 || i64::try_from(d).is_ok_and(|d| d == m));
        if !fits {
            return Err(RequestError::WrongShape {
                input: tensor.name,
                expected: meta.shape.clone(),
                found: tensor.shape,
            });
        }
        slots[i] = Some(tensor);
    }
    slots
        .into_iter()
        .zip(model)
        .map(|(slot, meta)| {
            slot.ok_or_else(|| RequestError::MissingInput {
                input: meta.name.clone(),
                known: known(),
            })
        })
        .collect()
}

/// The outputs the request asked for (all when it named none), in the order asked.
pub fn select_outputs(
    outputs: Vec<Tensor>,
    asked: Option<&[String]>,
) -> Result<Vec<Tensor>, RequestError> {
    let Some(asked) = asked else {
        return Ok(outputs);
    };
    let known = || {
        outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    asked
        .iter()
        .map(|name| {
            outputs
                .iter()
                .find(|o| o.name == *name)
                .cloned()
                .ok_or_else(|| RequestError::UnknownOutput {
                    output: name.clone(),
                    known: known(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, datatype: Datatype, shape: &[i64]) -> TensorMetadata {
        TensorMetadata {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn nested_and_flat_data_are_the_same_tensor() {
        let nested =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
        let flat =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4.5]}]}"#;
        let a = parse_request(nested, 100).unwrap();
        assert_eq!(a, parse_request(flat, 100).unwrap());
        assert_eq!(a.inputs[0].data, Data::Fp32(vec![1.0, 2.0, 3.0, 4.5]));
    }

    #[test]
    fn bad_requests_name_the_input() {
        let cases: [(&[u8], &str); 6] = [
            (br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
             "input `x`: shape [3] has 3 elements but the data has 2"),
            (br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[1,2.5]}]}"#,
             "input `x`: element 1 is 2.5, not a INT64 value"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
             "input `x`: datatype `FP16` is not one this server reads (BOOL, UINT8, INT32, INT64, FP32, FP64)"),
            (br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
             "input `x`: shape [-1] has a negative dimension"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[256]}]}"#,
             "input `x`: element 0 is 256, not a UINT8 value"),
            (br#"{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#,
             "input `x` uses the binary tensor extension (`binary_data_size`), which this server does not read; send the data as JSON (tritonclient: `binary_data=False`)"),
        ];
        for (body, message) in cases {
            assert_eq!(parse_request(body, 100).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn huge_shapes_and_data_are_refused_without_allocating_them() {
        let body = br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#;
        let e = parse_request(body, 100).unwrap_err();
        assert!(matches!(e, RequestError::DataLength { .. }), "{e}");
        let many = format!(
            r#"{{"inputs":[{{"name":"x","shape":[200],"datatype":"FP64","data":[{}]}}]}}"#,
            vec!["1"; 200].join(",")
        );
        let e = parse_request(many.as_bytes(), 100).unwrap_err();
        assert!(matches!(e, RequestError::TooLarge { max: 100, .. }), "{e}");
    }

    #[test]
    fn inputs_are_matched_to_the_model_by_name_type_and_shape() {
        let model = [
            meta("a", Datatype::Fp32, &[-1, 2]),
            meta("b", Datatype::Int64, &[-1]),
        ];
        let t = |name: &str, shape: &[usize], data: Data| Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            data,
        };
        let ordered = match_inputs(
            &model,
            vec![
                t("b", &[1], Data::Int64(vec![7])),
                t("a", &[1, 2], Data::Fp32(vec![1.0, 2.0])),
            ],
        )
        .unwrap();
        assert_eq!(ordered[0].name, "a");
        let e = match_inputs(&model, vec![t("a", &[1, 3], Data::Fp32(vec![0.0; 3]))]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "input `a`: shape [1, 3] does not fit the model's [-1, 2] (-1: any size)"
        );
        let e = match_inputs(&model, vec![t("a", &[1, 2], Data::Fp64(vec![0.0; 2]))]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "input `a`: datatype FP64, but the model takes FP32"
        );
        let e = match_inputs(&model, vec![t("a", &[1, 2], Data::Fp32(vec![0.0; 2]))]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "input `b` is missing; the model's inputs are: a (FP32 [-1, 2]), b (INT64 [-1])"
        );
    }
}

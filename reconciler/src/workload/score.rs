//! Batch scoring (`cairn score`): a model folder — the reference model
//! (`model.safetensors`) or an ONNX model with one tabular input `[-1, F]` — run over
//! every row of a folder of CSV files, the scores written beside each row's id.
//!
//! - Each input file `<name>.csv` gives `<out>/<name>.csv`: the `id` column when asked
//!   for, the label when there is one, then one column per model output value.
//! - The reference model reads its features by name; an ONNX model reads the columns
//!   `features` names, or else every column but the id and the label, in header order.
//! - With a label column, `<out>/metrics.json` holds the scores' AUC, accuracy at 0.5
//!   and log loss: an evaluation step's metrics, recorded with its run.
//!
//! Rows are read and scored [`BATCH_ROWS`] at a time, so memory stays bounded whatever
//! the data's size.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::data::{column_index, csv_files};
use super::oip::{Data, Datatype, Tensor};
use super::served::{self, Served};
use super::{Error, Result};

/// Rows scored per model call.
pub const BATCH_ROWS: usize = 4096;

/// The file a scoring run's metrics are written to (with a label).
pub const SCORE_METRICS_FILE: &str = "metrics.json";

/// What to score and where to write it.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// The model folder.
    pub model: PathBuf,
    /// A CSV file, or a folder of CSV files with the same header.
    pub data: PathBuf,
    /// The folder the scored files are written into (created).
    pub out: PathBuf,
    /// A column copied into the output to say which row a score belongs to.
    pub id: Option<String>,
    /// The label column (0 or 1): copied, and the scores measured against it.
    pub label: Option<String>,
    /// An ONNX model's input columns, in order; every column but the id and the label
    /// when empty.
    pub features: Vec<String>,
}

/// What a scoring run did.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    pub files: usize,
    pub rows: usize,
    /// The output columns of each scored file, after the id and label.
    pub columns: Vec<String>,
    /// With a label: `auc`, `accuracy`, `log_loss`, `rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, f64>>,
}

/// How a batch of feature rows becomes the model's input and its scores come back.
struct Scorer {
    served: Served,
    input: String,
    datatype: Datatype,
    /// The feature columns, in the model's order.
    features: Vec<String>,
    /// Output name → values per row.
    outputs: Vec<(String, usize)>,
}

/// Scores `options.data` with `options.model` into `options.out`.
pub fn score(options: &ScoreOptions) -> Result<ScoreReport> {
    let files = csv_files(&options.data)?;
    let served = load(&options.model)?;
    fs::create_dir_all(&options.out).map_err(|source| Error::CreateOut {
        path: options.out.clone(),
        source,
    })?;
    let mut scorer: Option<Scorer> = None;
    let mut rows = 0;
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut served = Some(served);
    for file in &files {
        let csv_error = |source| Error::Csv {
            path: file.clone(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(file)
            .map_err(csv_error)?;
        let header: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(str::to_string)
            .collect();
        let column = |name: &str| column_index(file, &header, name);
        let id = options.id.as_deref().map(column).transpose()?;
        let label = options.label.as_deref().map(column).transpose()?;
        if scorer.is_none() {
            let excluded = [options.id.as_deref(), options.label.as_deref()];
            scorer = Some(Scorer::new(
                served.take().expect("taken once"),
                &options.model,
                &header,
                &options.features,
                &excluded,
            )?);
        }
        let scorer = scorer.as_ref().expect("set above");
        let features: Vec<usize> = scorer
            .features
            .iter()
            .map(|f| column(f))
            .collect::<Result<_>>()?;

        let name = file
            .file_name()
            .map_or("scores.csv".into(), |n| n.to_owned());
        let out_path = options.out.join(name);
        let write_error = |e: csv::Error| Error::Write {
            path: out_path.clone(),
            source: std::io::Error::other(e),
        };
        let mut writer = csv::Writer::from_path(&out_path).map_err(write_error)?;
        let mut head: Vec<String> = Vec::new();
        head.extend(options.id.clone());
        head.extend(label.and(options.label.clone()));
        head.extend(scorer.columns());
        writer.write_record(&head).map_err(write_error)?;

        let mut batch = Batch::default();
        let mut records = reader.records();
        loop {
            let record = records.next().transpose().map_err(csv_error)?;
            if let Some(record) = &record {
                let line = record.position().map_or(0, |p| p.line());
                let cell = |i: usize| record.get(i).unwrap_or("");
                for (&i, name) in features.iter().zip(&scorer.features) {
                    let value = cell(i).parse::<f64>().ok().filter(|v| v.is_finite());
                    batch.x.push(value.ok_or_else(|| Error::BadCell {
                        path: file.clone(),
                        line,
                        column: name.clone(),
                        value: cell(i).to_string(),
                    })?);
                }
                if let Some(l) = label {
                    let y = match cell(l).parse::<f64>() {
                        Ok(y) if y == 0.0 || y == 1.0 => y,
                        _ => {
                            return Err(Error::BadCell {
                                path: file.clone(),
                                line,
                                column: options.label.clone().unwrap_or_default(),
                                value: cell(l).to_string(),
                            })
                        }
                    };
                    batch.labels.push(y);
                }
                batch.ids.push(id.map(|i| cell(i).to_string()));
                batch.lines.push(line);
            }
            if batch.lines.len() == BATCH_ROWS || (record.is_none() && !batch.lines.is_empty()) {
                let values = scorer.run(file, &batch)?;
                let width = values.len() / batch.lines.len();
                for (row, chunk) in values.chunks(width).enumerate() {
                    let mut out: Vec<String> = Vec::with_capacity(chunk.len() + 2);
                    out.extend(batch.ids[row].clone());
                    if label.is_some() {
                        out.push(format!("{}", batch.labels[row]));
                    }
                    out.extend(chunk.iter().map(|v| v.to_string()));
                    writer.write_record(&out).map_err(write_error)?;
                    if label.is_some() {
                        scores.push(scorer.probability(chunk));
                    }
                }
                labels.append(&mut batch.labels);
                rows += batch.lines.len();
                batch = Batch::default();
            }
            if record.is_none() {
                break;
            }
        }
        writer.flush().map_err(|source| Error::Write {
            path: out_path.clone(),
            source,
        })?;
    }
    let scorer = scorer.expect("there is at least one file");
    let metrics = (options.label.is_some() && rows > 0).then(|| measure(&scores, &labels));
    if let Some(metrics) = &metrics {
        let path = options.out.join(SCORE_METRICS_FILE);
        let text = serde_json::to_string_pretty(metrics).map_err(|source| Error::Encode {
            path: path.clone(),
            source,
        })?;
        fs::write(&path, text + "\n").map_err(|source| Error::Write { path, source })?;
    }
    Ok(ScoreReport {
        files: files.len(),
        rows,
        columns: scorer.columns(),
        metrics,
    })
}

/// Rows read and not yet scored.
#[derive(Default)]
struct Batch {
    /// Feature values, row-major, in the scorer's feature order.
    x: Vec<f64>,
    labels: Vec<f64>,
    ids: Vec<Option<String>>,
    lines: Vec<u64>,
}

impl Scorer {
    fn new(
        served: Served,
        model_dir: &Path,
        header: &[String],
        features: &[String],
        excluded: &[Option<&str>],
    ) -> Result<Scorer> {
        let inputs = served.inputs();
        let [input] = inputs.as_slice() else {
            return Err(Error::Unscorable {
                path: model_dir.to_path_buf(),
                reason: format!(
                    "it has {} inputs; batch scoring feeds one tabular input of shape [-1, F]",
                    inputs.len()
                ),
            });
        };
        let width = match input.shape.as_slice() {
            [_, f] if *f > 0 => *f as usize,
            shape => {
                return Err(Error::Unscorable {
                    path: model_dir.to_path_buf(),
                    reason: format!(
                        "its input `{}` has shape {shape:?}; batch scoring feeds rows of a fixed number of features, [-1, F]",
                        input.name
                    ),
                })
            }
        };
        if !matches!(input.datatype, Datatype::Fp32 | Datatype::Fp64) {
            return Err(Error::Unscorable {
                path: model_dir.to_path_buf(),
                reason: format!(
                    "its input `{}` is {}; batch scoring feeds FP32 or FP64 features",
                    input.name, input.datatype
                ),
            });
        }
        let features: Vec<String> = match &served {
            Served::Reference(m) => m.features.clone(),
            Served::Onnx(_) if !features.is_empty() => features.to_vec(),
            Served::Onnx(_) => header
                .iter()
                .filter(|c| !excluded.contains(&Some(c.as_str())))
                .cloned()
                .collect(),
        };
        if features.len() != width {
            return Err(Error::Unscorable {
                path: model_dir.to_path_buf(),
                reason: format!(
                    "it takes {width} features per row, and the data gives {} ({}); name the model's columns in order with `--features`",
                    features.len(),
                    features.join(", ")
                ),
            });
        }
        let outputs = served
            .outputs()
            .iter()
            .map(|o| {
                let per_row = o.shape.iter().skip(1).map(|&d| d.max(1) as usize).product();
                (o.name.clone(), per_row)
            })
            .collect();
        Ok(Scorer {
            input: input.name.clone(),
            datatype: input.datatype,
            served,
            features,
            outputs,
        })
    }

    /// The output columns: an output's name, or `name_i` for an output of several
    /// values per row.
    fn columns(&self) -> Vec<String> {
        self.outputs
            .iter()
            .flat_map(|(name, per_row)| match per_row {
                1 => vec![name.clone()],
                n => (0..*n).map(|i| format!("{name}_{i}")).collect(),
            })
            .collect()
    }

    /// Scores a batch: each row's output values, outputs side by side.
    fn run(&self, file: &Path, batch: &Batch) -> Result<Vec<f64>> {
        let rows = batch.lines.len();
        let data = match self.datatype {
            Datatype::Fp32 => Data::Fp32(batch.x.iter().map(|&v| v as f32).collect()),
            _ => Data::Fp64(batch.x.clone()),
        };
        let input = Tensor {
            name: self.input.clone(),
            shape: vec![rows, self.features.len()],
            data,
        };
        let infer_error = |reason: String| Error::Infer {
            path: file.to_path_buf(),
            line: batch.lines.first().copied().unwrap_or(0),
            reason,
        };
        let outputs = self
            .served
            .infer(vec![input])
            .map_err(|e| infer_error(e.to_string()))?;
        let columns: Vec<Vec<f64>> = outputs.iter().map(|t| as_f64(&t.data)).collect();
        let mut out = Vec::with_capacity(rows * self.columns().len());
        for row in 0..rows {
            for ((name, per_row), values) in self.outputs.iter().zip(&columns) {
                let part = values
                    .get(row * per_row..(row + 1) * per_row)
                    .ok_or_else(|| {
                        infer_error(format!(
                            "output `{name}` has {} values for {rows} rows",
                            values.len()
                        ))
                    })?;
                out.extend_from_slice(part);
            }
        }
        Ok(out)
    }

    /// The probability of class 1 in a row's output values: the first output's value,
    /// or its second of two (a `[p0, p1]` pair).
    fn probability(&self, row: &[f64]) -> f64 {
        match self.outputs.first() {
            Some((_, 2)) => row[1],
            _ => row[0],
        }
    }
}

fn load(dir: &Path) -> Result<Served> {
    let file = served::model_file(dir).ok_or_else(|| Error::NoModel {
        path: dir.to_path_buf(),
    })?;
    served::load(dir, file).map(|(model, _)| model)
}

fn as_f64(data: &Data) -> Vec<f64> {
    match data {
        Data::Bool(v) => v.iter().map(|&b| f64::from(u8::from(b))).collect(),
        Data::Uint8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::Int32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::Int64(v) => v.iter().map(|&x| x as f64).collect(),
        Data::Fp32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::Fp64(v) => v.clone(),
    }
}

/// AUC, accuracy at 0.5 and log loss of probabilities against 0/1 labels.
fn measure(scores: &[f64], labels: &[f64]) -> BTreeMap<String, f64> {
    let n = scores.len() as f64;
    let correct = scores
        .iter()
        .zip(labels)
        .filter(|(&p, &y)| (p >= 0.5) == (y == 1.0))
        .count() as f64;
    let eps = 1e-12;
    let log_loss = -scores
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(eps, 1.0 - eps);
            y * p.ln() + (1.0 - y) * (1.0 - p).ln()
        })
        .sum::<f64>()
        / n;
    let mut metrics = BTreeMap::from([
        ("accuracy".to_string(), correct / n),
        ("log_loss".to_string(), log_loss),
        ("rows".to_string(), n),
    ]);
    let auc = super::train::roc_auc(scores, labels);
    if auc.is_finite() {
        metrics.insert("auc".to_string(), auc);
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_perfect_and_inverted_scores() {
        let m = measure(&[0.9, 0.8, 0.2, 0.1], &[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(m["auc"], 1.0);
        assert_eq!(m["accuracy"], 1.0);
        assert!(m["log_loss"] < 0.25, "{m:?}");
        let m = measure(&[0.1, 0.2, 0.8, 0.9], &[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(m["auc"], 0.0);
        assert_eq!(m["accuracy"], 0.0);
        let one_class = measure(&[0.1, 0.2], &[1.0, 1.0]);
        assert!(!one_class.contains_key("auc"), "{one_class:?}");
    }
}

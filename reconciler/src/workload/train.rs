//! Training: split the rows, standardize, fit by gradient descent, score, write the files.
//!
//! Row `i` (0-based, across all files in name order) goes to the test split when a
//! splitmix64 hash of `seed` and `i` falls below `holdout`, so a row's side never depends
//! on the other rows or on the machine. Features are standardized with the training split's
//! mean and population standard deviation (1 where that is 0). The fit is full-batch
//! gradient descent on the mean log loss plus `l2 / 2 · ‖w‖²` (the bias is not penalized),
//! starting from zero, summed sequentially in `f64`: no threads, so no reordered sums.
//!
//! The matrix work of each epoch (the logits `X·w` and the gradient `Xᵀ·(p − y)`) runs on
//! the [`Device`] the options name. On the CPU it is the sequential loop above. On the
//! GPU ([`Device::Cuda`], or [`Device::Auto`] on a machine with one) the standardized
//! training matrix is copied to GPU 0 once and both products are cuBLAS `dgemv` calls in
//! `f64`; the sigmoid, the bias and the update stay on the host, in the same order as on
//! the CPU. cuBLAS sums in its own order, so the two devices agree within float rounding,
//! not bit for bit: the same data and options give byte-identical files on one device, and
//! `metrics.json` names the device that trained.
//!
//! **Data-parallel** ([`TrainOptions::group`]: this process is one rank of several, as the
//! distributed-training contract's `WORLD_SIZE`/`RANK` say): every rank reads the whole
//! dataset and computes the same split and standardization (both are deterministic, so no
//! round of communication is needed for them), then takes the training rows at positions
//! `k` (in the training split's order) with `k % world_size == rank`, interleaved rather
//! than in blocks so every shard sees every file. Each epoch, each rank sums its shard's
//! gradient, the ranks add those sums over TCP ([`super::allreduce`], in rank order) and
//! every rank divides by the total number of training rows, so each applies the same
//! update as one process would; only the order of the float additions differs. The model
//! matches a one-process run within float rounding (the tests hold the largest weight
//! difference under 1e-9; it is typically near 1e-15), and is byte-identical between runs
//! with the same group size. Only rank 0 writes files; `metrics.json` records the
//! `world_size`. The gradient travels between hosts' memory even when the matrix work is
//! on a GPU: there is no NCCL path.
//!
//! cudarc loads the CUDA libraries at run time, so the binary starts and trains on
//! machines without them; [`Device::Cuda`] there is [`Error::GpuUnavailable`], naming the
//! library or device that is missing. cudarc calls panic when a library is missing, so
//! both libraries are probed before any other call.

use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::allreduce::{self, GroupOptions, Peers};
use super::data::{self, Table};
use super::model::{self, sigmoid, standardize, Model};
use super::{Error, Result};

/// The metrics file's name in the output folder.
pub const METRICS_FILE: &str = "metrics.json";

/// What to train on, where to write, and the hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// A folder of CSV files (every `*.csv`, in name order, all with the same header) or
    /// one CSV file.
    pub data: PathBuf,
    /// The folder to write `model.safetensors` and `metrics.json` into; created if missing.
    pub out: PathBuf,
    /// The label column; every value must be 0 or 1.
    pub label: String,
    pub epochs: usize,
    pub learning_rate: f64,
    /// L2 penalty on the weights.
    pub l2: f64,
    /// The share of rows held out for testing, between 0 and 1 exclusive.
    pub holdout: f64,
    /// Seeds the train/test split.
    pub seed: u64,
    /// Where the matrix work runs. The library's default is the CPU, so that library
    /// users get the same numbers on every machine; `cairn train` defaults to
    /// [`Device::Auto`].
    pub device: Device,
    /// The data-parallel group this process is one rank of; `None` trains alone. The
    /// library reads no environment: `cairn train` fills this from the
    /// distributed-training contract's variables.
    pub group: Option<GroupOptions>,
}

/// Where the matrix work of training runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Device {
    /// GPU 0 when it can be used (the CUDA driver, cuBLAS and a GPU are there), else the
    /// CPU.
    Auto,
    /// The CPU: a sequential loop.
    #[default]
    Cpu,
    /// GPU 0 through cuBLAS; [`Error::GpuUnavailable`] when it cannot be used.
    Cuda,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            data: PathBuf::new(),
            out: PathBuf::new(),
            label: "label".to_string(),
            epochs: 300,
            learning_rate: 0.1,
            l2: 1e-3,
            holdout: 0.2,
            seed: 7,
            device: Device::Cpu,
            group: None,
        }
    }
}

/// How well the model fits. Losses are mean log losses (natural log, without the L2 term).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Log loss on the training split.
    pub loss: f64,
    /// Log loss on the test split.
    pub test_loss: f64,
    /// Share of test rows classified right, at probability 0.5.
    pub accuracy: f64,
    /// Share of training rows classified right, at probability 0.5.
    pub train_accuracy: f64,
    /// Area under the ROC curve on the test split (ties count half). NaN, `null` in
    /// JSON, when the test split holds only one class.
    pub auc: f64,
    /// Rows labelled 1, in both splits.
    pub positives: usize,
    /// Test rows labelled 1.
    pub test_positives: usize,
}

/// The result of [`train`]; `metrics.json` is this report as JSON, metrics at the top.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    #[serde(flatten)]
    pub metrics: Metrics,
    pub label: String,
    pub rows: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    pub epochs: usize,
    /// The feature columns, in header order (the order of the model's tensors).
    pub features: Vec<String>,
    /// Columns other than the label left out because not every value is a number.
    pub skipped_columns: Vec<String>,
    /// What did the matrix work: `cpu`, or `cuda:ORDINAL NAME` (e.g. `cuda:0 NVIDIA H200`).
    pub device: String,
    /// How many processes trained it together (1 without a group).
    pub world_size: u32,
    /// The trained model, as written to `model.safetensors`.
    #[serde(skip)]
    pub model: Model,
}

/// Trains a model on `options.data` and writes `model.safetensors` and `metrics.json`
/// into `options.out`. In a group ([`TrainOptions::group`]) every rank returns the same
/// report, and only rank 0 writes the files.
pub fn train(options: &TrainOptions) -> Result<TrainReport> {
    check_options(options)?;
    // Before the data: a missing GPU is reported at once, whatever the data holds.
    let engine = Engine::open(options.device)?;
    let table = data::load(&options.data, &options.label)?;
    let report = fit(&table, options, &engine)?.report;
    if options.group.as_ref().is_some_and(|g| g.rank != 0) {
        return Ok(report);
    }

    let out = &options.out;
    fs::create_dir_all(out).map_err(|source| Error::CreateOut {
        path: out.clone(),
        source,
    })?;
    report.model.save(out)?;
    let metrics_path = out.join(METRICS_FILE);
    let mut json = serde_json::to_vec_pretty(&report).map_err(|source| Error::Encode {
        path: metrics_path.clone(),
        source,
    })?;
    json.push(b'\n');
    model::write_atomic(&metrics_path, &json)?;
    Ok(report)
}

fn check_options(options: &TrainOptions) -> Result<()> {
    let invalid = |name, value: f64, expected| {
        Err(Error::InvalidOption {
            name,
            value: value.to_string(),
            expected,
        })
    };
    let TrainOptions {
        learning_rate,
        l2,
        holdout,
        ..
    } = *options;
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        return invalid("learning_rate", learning_rate, "a positive number");
    }
    if !(l2.is_finite() && l2 >= 0.0) {
        return invalid("l2", l2, "a number ≥ 0");
    }
    if !(holdout > 0.0 && holdout < 1.0) {
        return invalid("holdout", holdout, "a share strictly between 0 and 1");
    }
    if let Some(group) = &options.group {
        if group.rank >= group.world_size {
            return Err(allreduce::Error::BadRank {
                rank: group.rank,
                world_size: group.world_size,
            }
            .into());
        }
    }
    Ok(())
}

/// A fitted model and what training saw.
struct Fit {
    report: TrainReport,
    /// The index in the table of each training row.
    #[cfg_attr(not(test), allow(dead_code))]
    train_index: Vec<usize>,
    /// The in-sample probability of each training row, as computed while training.
    #[cfg_attr(not(test), allow(dead_code))]
    train_probabilities: Vec<f64>,
}

/// Rows as a row-major matrix of standardized features, with their labels.
struct Split {
    index: Vec<usize>,
    x: Vec<f64>,
    y: Vec<f64>,
}

/// What runs the matrix work, opened once per [`train`].
enum Engine {
    Cpu,
    Cuda(cuda::Gpu),
}

impl Engine {
    fn open(device: Device) -> Result<Engine> {
        Ok(match device {
            Device::Cpu => Engine::Cpu,
            Device::Cuda => Engine::Cuda(cuda::Gpu::open()?),
            // Any reason the GPU cannot be used means the CPU; errors once it is in use
            // are still errors.
            Device::Auto => cuda::Gpu::open().map_or(Engine::Cpu, Engine::Cuda),
        })
    }

    fn name(&self) -> String {
        match self {
            Engine::Cpu => "cpu".to_string(),
            Engine::Cuda(gpu) => gpu.name(),
        }
    }
}

fn fit(table: &Table, options: &TrainOptions, engine: &Engine) -> Result<Fit> {
    let rows = table.rows();
    let d = table.features.len();
    if d == 0 {
        return Err(Error::NoFeatures {
            label: options.label.clone(),
            skipped: table.skipped.clone(),
        });
    }
    let (test_index, train_index): (Vec<usize>, Vec<usize>) =
        (0..rows).partition(|&i| is_test(options.seed, i, options.holdout));
    if train_index.is_empty() || test_index.is_empty() {
        return Err(Error::Split {
            holdout: options.holdout,
            rows,
            train_rows: train_index.len(),
            test_rows: test_index.len(),
        });
    }

    let (mean, std): (Vec<f64>, Vec<f64>) = table
        .features
        .iter()
        .map(|column| mean_std(train_index.iter().map(|&i| column.values[i])))
        .unzip();
    let split = |index: Vec<usize>| {
        let mut x = Vec::with_capacity(index.len() * d);
        for &i in &index {
            for (j, column) in table.features.iter().enumerate() {
                x.push(standardize(column.values[i], mean[j], std[j]));
            }
        }
        let y = index.iter().map(|&i| table.labels[i]).collect();
        Split { index, x, y }
    };
    let train = split(train_index);
    let test = split(test_index);

    // This rank's share of the training rows, and the group it sums gradients with.
    let (shard, mut peers) = match &options.group {
        None => (None, None),
        Some(group) => {
            let shard = shard(&train, d, group.rank, group.world_size);
            let fingerprint = fingerprint(options, group, rows, &train, &mean, &std);
            (Some(shard), Some(Peers::join(group, fingerprint)?))
        }
    };
    let (x, y) = shard.as_ref().map_or((&train.x, &train.y), |(x, y)| (x, y));
    let total = train.y.len();
    let (weights, bias) = match engine {
        Engine::Cpu => gradient_descent(x, y, total, d, options, peers.as_mut())?,
        Engine::Cuda(gpu) => gpu.gradient_descent(x, y, total, d, options, peers.as_mut())?,
    };
    let features: Vec<String> = table.features.iter().map(|c| c.name.clone()).collect();
    let model = Model::new(
        features.clone(),
        options.label.clone(),
        weights,
        bias,
        mean,
        std,
    )
    .ok_or(Error::Diverged {
        learning_rate: options.learning_rate,
    })?;

    let train_logits = logits(&model, &train, d);
    let test_logits = logits(&model, &test, d);
    let metrics = Metrics {
        loss: log_loss(&train_logits, &train.y),
        test_loss: log_loss(&test_logits, &test.y),
        accuracy: accuracy(&test_logits, &test.y),
        train_accuracy: accuracy(&train_logits, &train.y),
        auc: roc_auc(&test_logits, &test.y),
        positives: table.labels.iter().filter(|&&y| y == 1.0).count(),
        test_positives: test.y.iter().filter(|&&y| y == 1.0).count(),
    };
    let report = TrainReport {
        metrics,
        label: options.label.clone(),
        rows,
        train_rows: train.index.len(),
        test_rows: test.index.len(),
        epochs: options.epochs,
        features,
        skipped_columns: table.skipped.clone(),
        device: engine.name(),
        world_size: options.group.as_ref().map_or(1, |g| g.world_size),
        model,
    };
    Ok(Fit {
        report,
        train_probabilities: train_logits.into_iter().map(sigmoid).collect(),
        train_index: train.index,
    })
}

/// Returns this rank's training rows: those at positions `k` with
/// `k % world_size == rank`, as a row-major matrix and labels.
fn shard(train: &Split, d: usize, rank: u32, world_size: u32) -> (Vec<f64>, Vec<f64>) {
    let mine = |k: &usize| *k % world_size as usize == rank as usize;
    let x = train
        .x
        .chunks_exact(d)
        .enumerate()
        .filter(|(k, _)| mine(k))
        .flat_map(|(_, row)| row.iter().copied())
        .collect();
    let y = train
        .y
        .iter()
        .enumerate()
        .filter(|(k, _)| mine(k))
        .map(|(_, y)| *y)
        .collect();
    (x, y)
}

/// Sums up what a rank trains, so that ranks started with other data or options are
/// refused when they join instead of training a wrong model together.
fn fingerprint(
    options: &TrainOptions,
    group: &GroupOptions,
    rows: usize,
    train: &Split,
    mean: &[f64],
    std: &[f64],
) -> u64 {
    let fixed = [
        u64::from(group.world_size),
        rows as u64,
        train.y.len() as u64,
        options.epochs as u64,
        options.learning_rate.to_bits(),
        options.l2.to_bits(),
        options.holdout.to_bits(),
        options.seed,
    ];
    fixed
        .into_iter()
        .chain(mean.iter().chain(std).map(|v| v.to_bits()))
        .fold(0, |hash, v| splitmix64(hash ^ v))
}

/// Returns the weights and bias after `options.epochs` full-batch steps from zero.
///
/// `x` and `y` are this process's training rows; `total` counts the rows of the whole
/// group (`y.len()` alone). Each epoch's gradient sum (the weights' and the bias's) is
/// added across the group through `peers` before the update, so every rank applies the
/// same one.
fn gradient_descent(
    x: &[f64],
    y: &[f64],
    total: usize,
    d: usize,
    options: &TrainOptions,
    mut peers: Option<&mut Peers>,
) -> Result<(Vec<f64>, f64)> {
    let n = total as f64;
    let mut weights = vec![0.0; d];
    let mut bias = 0.0;
    // The weights' gradient, then the bias's.
    let mut gradient = vec![0.0; d + 1];
    for _ in 0..options.epochs {
        gradient.fill(0.0);
        let (gradient_weights, gradient_bias) = gradient.split_at_mut(d);
        for (x, y) in x.chunks_exact(d).zip(y) {
            let error = sigmoid(model::logit(&weights, bias, x)) - y;
            for (g, x) in gradient_weights.iter_mut().zip(x) {
                *g += error * x;
            }
            gradient_bias[0] += error;
        }
        if let Some(peers) = peers.as_deref_mut() {
            peers.sum(&mut gradient)?;
        }
        for (w, g) in weights.iter_mut().zip(&gradient[..d]) {
            *w -= options.learning_rate * (g / n + options.l2 * *w);
        }
        bias -= options.learning_rate * gradient[d] / n;
    }
    Ok((weights, bias))
}

fn logits(model: &Model, split: &Split, d: usize) -> Vec<f64> {
    split.x.chunks_exact(d).map(|x| model.logit(x)).collect()
}

/// Returns the mean log loss from log-odds, computed without `ln(0)`.
fn log_loss(logits: &[f64], labels: &[f64]) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(&z, &y)| softplus(z) - y * z)
        .sum();
    total / logits.len() as f64
}

/// `ln(1 + e^z)`, without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn accuracy(logits: &[f64], labels: &[f64]) -> f64 {
    let right = logits
        .iter()
        .zip(labels)
        .filter(|(&z, &y)| (z >= 0.0) == (y == 1.0))
        .count();
    right as f64 / logits.len() as f64
}

/// Returns the ROC AUC of `scores` (the Mann–Whitney U statistic with average ranks for
/// ties), or NaN when `labels` holds only one class.
pub(crate) fn roc_auc(scores: &[f64], labels: &[f64]) -> f64 {
    let positives = labels.iter().filter(|&&y| y == 1.0).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut positive_ranks = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..end (1-based start+1..=end) share their average.
        let rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = order[start..end]
            .iter()
            .filter(|&&i| labels[i] == 1.0)
            .count();
        positive_ranks += rank * tied_positives as f64;
        start = end;
    }
    (positive_ranks - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Returns the mean and population standard deviation (Welford), with 1 in place of a
/// standard deviation that is 0 (a constant column) or not finite.
fn mean_std(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for x in values {
        count += 1.0;
        let delta = x - mean;
        mean += delta / count;
        m2 += delta * (x - mean);
    }
    let std = (m2 / count).sqrt();
    let std = if std.is_finite() && std > 0.0 {
        std
    } else {
        1.0
    };
    (mean, std)
}

/// Returns whether row `row` belongs to the test split.
fn is_test(seed: u64, row: usize, holdout: f64) -> bool {
    unit(splitmix64(seed ^ splitmix64(row as u64))) < holdout
}

/// Returns the top 53 bits of a hash as a uniform number in [0, 1).
pub(crate) fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The splitmix64 finalizer (Steele, Lea, Flood 2014).
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The GPU path: cuBLAS `dgemv` on GPU 0 through cudarc, loaded at run time.
mod cuda {
    use std::sync::Arc;

    use cudarc::cublas::sys::cublasOperation_t;
    use cudarc::cublas::{CudaBlas, Gemv, GemvConfig};
    use cudarc::driver::{CudaContext, CudaSlice, CudaStream};

    use super::super::model::sigmoid;
    use super::super::{Error, Result};
    use super::{Peers, TrainOptions};

    /// GPU 0, with a stream and a cuBLAS handle on it.
    pub(super) struct Gpu {
        ordinal: usize,
        name: String,
        stream: Arc<CudaStream>,
        blas: CudaBlas,
    }

    fn unavailable(reason: impl Into<String>) -> Error {
        Error::GpuUnavailable {
            reason: reason.into(),
        }
    }

    fn failed(
        operation: &'static str,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error {
        move |source| Error::Gpu { operation, source }
    }

    /// Returns whether the CUDA driver and cuBLAS libraries can be loaded, naming the
    /// first that cannot. Every other cudarc call panics when its library is missing.
    pub fn libraries() -> Result<(), String> {
        // SAFETY: each only tries to load the shared library, and unloads it.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("the CUDA driver library (libcuda.so) cannot be loaded; \
                        is an NVIDIA driver installed?"
                .into());
        }
        // SAFETY: as above.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(
                "the cuBLAS library (libcublas.so) cannot be loaded; install \
                        CUDA's cuBLAS (e.g. the `libcublas-12-*` package) or add its \
                        folder to LD_LIBRARY_PATH"
                    .into(),
            );
        }
        Ok(())
    }

    impl Gpu {
        /// Opens GPU 0, or says what is missing.
        pub fn open() -> Result<Gpu> {
            libraries().map_err(unavailable)?;
            use cudarc::driver::result;
            result::init()
                .map_err(|e| unavailable(format!("the CUDA driver did not start: {e}")))?;
            let count = result::device::get_count()
                .map_err(|e| unavailable(format!("the CUDA driver cannot count GPUs: {e}")))?;
            if count < 1 {
                return Err(unavailable("the CUDA driver reports no GPU"));
            }
            let ordinal = 0;
            let context = CudaContext::new(ordinal)
                .map_err(|e| unavailable(format!("cannot open GPU {ordinal}: {e}")))?;
            let name = context.name().unwrap_or_else(|_| "NVIDIA GPU".into());
            let stream = context.default_stream();
            let blas = CudaBlas::new(stream.clone())
                .map_err(|e| unavailable(format!("cuBLAS did not start: {e}")))?;
            Ok(Gpu {
                ordinal,
                name,
                stream,
                blas,
            })
        }

        /// `cuda:ORDINAL NAME`, for the report.
        pub fn name(&self) -> String {
            format!("cuda:{} {}", self.ordinal, self.name)
        }

        /// The CPU's [`super::gradient_descent`], with `X·w` and `Xᵀ·e` on the GPU.
        ///
        /// `x` is the row-major `n × d` training matrix, which cuBLAS (column-major) reads
        /// as the `d × n` matrix `Xᵀ` with leading dimension `d`: the logits are `(Xᵀ)ᵀ·w`
        /// (`dgemv` transposed) and the gradient is `Xᵀ·e` (`dgemv` as is).
        pub fn gradient_descent(
            &self,
            x: &[f64],
            y: &[f64],
            total: usize,
            d: usize,
            options: &TrainOptions,
            mut peers: Option<&mut Peers>,
        ) -> Result<(Vec<f64>, f64)> {
            let rows = y.len();
            let too_large = || {
                unavailable(format!(
                    "{rows} rows × {d} features is too large for one cuBLAS call"
                ))
            };
            let n = i32::try_from(rows).map_err(|_| too_large())?;
            let m = i32::try_from(d).map_err(|_| too_large())?;
            let stream = &self.stream;
            let boxed = |e: cudarc::driver::DriverError| Box::new(e) as Box<_>;
            let x_dev: CudaSlice<f64> = stream
                .clone_htod(x)
                .map_err(boxed)
                .map_err(failed("copying the training matrix to the GPU"))?;
            let mut w_dev: CudaSlice<f64> = stream
                .alloc_zeros(d)
                .map_err(boxed)
                .map_err(failed("allocating GPU memory"))?;
            let mut z_dev: CudaSlice<f64> = stream
                .alloc_zeros(rows)
                .map_err(boxed)
                .map_err(failed("allocating GPU memory"))?;
            let mut e_dev: CudaSlice<f64> = stream
                .alloc_zeros(rows)
                .map_err(boxed)
                .map_err(failed("allocating GPU memory"))?;
            let mut g_dev: CudaSlice<f64> = stream
                .alloc_zeros(d)
                .map_err(boxed)
                .map_err(failed("allocating GPU memory"))?;
            let forward = GemvConfig {
                trans: cublasOperation_t::CUBLAS_OP_T,
                m,
                n,
                alpha: 1.0,
                lda: m,
                incx: 1,
                beta: 0.0,
                incy: 1,
            };
            let backward = GemvConfig {
                trans: cublasOperation_t::CUBLAS_OP_N,
                ..forward
            };

            let count = total as f64;
            let mut summed = vec![0.0; d + 1];
            let mut weights = vec![0.0; d];
            let mut bias = 0.0;
            let mut z = vec![0.0; rows];
            let mut error = vec![0.0; rows];
            let mut gradient = vec![0.0; d];
            for _ in 0..options.epochs {
                stream
                    .memcpy_htod(&weights, &mut w_dev)
                    .map_err(boxed)
                    .map_err(failed("copying the weights to the GPU"))?;
                // SAFETY: the shapes match the allocations: x_dev is d × n (lda d), w_dev
                // holds d values and z_dev n.
                unsafe { self.blas.gemv(forward, &x_dev, &w_dev, &mut z_dev) }
                    .map_err(|e| Box::new(e) as Box<_>)
                    .map_err(failed("running cuBLAS dgemv for the logits"))?;
                stream
                    .memcpy_dtoh(&z_dev, &mut z)
                    .and_then(|()| stream.synchronize())
                    .map_err(boxed)
                    .map_err(failed("copying the logits from the GPU"))?;
                let mut gradient_bias = 0.0;
                for ((e, z), y) in error.iter_mut().zip(&z).zip(y) {
                    *e = sigmoid(bias + z) - y;
                    gradient_bias += *e;
                }
                stream
                    .memcpy_htod(&error, &mut e_dev)
                    .map_err(boxed)
                    .map_err(failed("copying the errors to the GPU"))?;
                // SAFETY: x_dev is d × n (lda d), e_dev holds n values and g_dev d.
                unsafe { self.blas.gemv(backward, &x_dev, &e_dev, &mut g_dev) }
                    .map_err(|e| Box::new(e) as Box<_>)
                    .map_err(failed("running cuBLAS dgemv for the gradient"))?;
                stream
                    .memcpy_dtoh(&g_dev, &mut gradient)
                    .and_then(|()| stream.synchronize())
                    .map_err(boxed)
                    .map_err(failed("copying the gradient from the GPU"))?;
                let mut gradient_bias = gradient_bias;
                if let Some(peers) = peers.as_deref_mut() {
                    summed[..d].copy_from_slice(&gradient);
                    summed[d] = gradient_bias;
                    peers.sum(&mut summed)?;
                    gradient.copy_from_slice(&summed[..d]);
                    gradient_bias = summed[d];
                }
                for (w, g) in weights.iter_mut().zip(&gradient) {
                    *w -= options.learning_rate * (g / count + options.l2 * *w);
                }
                bias -= options.learning_rate * gradient_bias / count;
            }
            Ok((weights, bias))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::path::Path;

    use super::*;
    use crate::workload::{load_model, MODEL_FILE};

    /// Writes a separable dataset: `y = 1` iff `x1 + 2·x2 > 0.1`, plus a noise column, a
    /// constant column and an id column.
    fn synthetic(dir: &Path, rows: usize) -> PathBuf {
        let mut text = String::from("id,x1,x2,noise,constant,y\n");
        let mut state = 42u64;
        let mut uniform = || {
            state = splitmix64(state);
            unit(state) * 2.0 - 1.0
        };
        for i in 0..rows {
            let (x1, x2, noise) = (uniform(), uniform(), uniform());
            let y = u8::from(x1 + 2.0 * x2 > 0.1);
            writeln!(text, "R{i:05},{x1:.6},{x2:.6},{noise:.6},5,{y}").unwrap();
        }
        let path = dir.join("synthetic.csv");
        fs::write(&path, text).unwrap();
        path
    }

    fn options(data: PathBuf, out: PathBuf) -> TrainOptions {
        TrainOptions {
            data,
            out,
            label: "y".into(),
            ..TrainOptions::default()
        }
    }

    #[test]
    fn learns_a_separable_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 500);
        let out = dir.path().join("out");
        let report = train(&options(data, out.clone())).unwrap();

        assert_eq!(report.features, ["x1", "x2", "noise", "constant"]);
        assert_eq!(report.skipped_columns, ["id"]);
        assert_eq!(report.rows, 500);
        assert_eq!(report.train_rows + report.test_rows, 500);
        assert!(
            (70..130).contains(&report.test_rows),
            "{}",
            report.test_rows
        );
        let m = &report.metrics;
        assert!(m.auc > 0.95, "{m:?}");
        assert!(m.accuracy > 0.9, "{m:?}");
        assert!(m.loss < 0.4 && m.test_loss < 0.4, "{m:?}");
        let w = report.model.weights();
        assert!(w[1] > w[0] && w[0] > 4.0 * w[2].abs(), "{w:?}");
        // The constant column is standardized with std 1 and gets no weight.
        assert_eq!((report.model.mean()[3], report.model.std()[3]), (5.0, 1.0));
        assert!(w[3].abs() < 1e-12);

        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join(METRICS_FILE)).unwrap()).unwrap();
        // serde_json parses floats to within an ulp, not always exactly.
        assert!(
            (json["auc"].as_f64().unwrap() - m.auc).abs() < 1e-12,
            "{json}"
        );
        assert_eq!(json["rows"], 500);
        assert_eq!(json["features"][0], "x1");
        assert_eq!(json["skipped_columns"][0], "id");
    }

    #[test]
    fn same_data_gives_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 300);
        let run = |out: &str, seed| {
            let out = dir.path().join(out);
            let options = TrainOptions {
                seed,
                ..options(data.clone(), out.clone())
            };
            train(&options).unwrap();
            (
                fs::read(out.join(MODEL_FILE)).unwrap(),
                fs::read(out.join(METRICS_FILE)).unwrap(),
            )
        };
        let first = run("a", 7);
        assert_eq!(first, run("b", 7));
        assert_ne!(first.0, run("c", 8).0);
        // Nothing else is left in the folder (no temporary files).
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn loaded_model_reproduces_in_sample_probabilities() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 200);
        let options = options(data.clone(), dir.path().join("out"));
        let report = train(&options).unwrap();
        let model = load_model(&options.out).unwrap();
        assert_eq!(model, report.model);
        assert_eq!(model.label, "y");

        let table = data::load(&data, "y").unwrap();
        let fit = fit(&table, &options, &Engine::Cpu).unwrap();
        assert_eq!(fit.train_index.len(), report.train_rows);
        for (&i, &expected) in fit.train_index.iter().zip(&fit.train_probabilities) {
            let row: BTreeMap<String, f64> = table
                .features
                .iter()
                .map(|c| (c.name.clone(), c.values[i]))
                .collect();
            assert_eq!(model.predict(&row).unwrap(), expected, "row {i}");
        }
    }

    /// Three ranks as threads, summing over loopback, give the one-process model within
    /// float rounding; only rank 0 writes.
    #[test]
    fn data_parallel_matches_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 301);
        let alone = train(&options(data.clone(), dir.path().join("alone"))).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ranks: Vec<_> = (0..3)
            .map(|rank| {
                let options = TrainOptions {
                    group: Some(GroupOptions {
                        world_size: 3,
                        rank,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        timeout: std::time::Duration::from_secs(20),
                    }),
                    ..options(data.clone(), dir.path().join(format!("rank-{rank}")))
                };
                std::thread::spawn(move || train(&options).unwrap())
            })
            .collect();
        let reports: Vec<TrainReport> = ranks.into_iter().map(|r| r.join().unwrap()).collect();
        for report in &reports {
            assert_eq!(report.world_size, 3);
            // Every rank applied the same sums: the same weights, bit for bit.
            assert_eq!(report.model, reports[0].model);
            let diff = report
                .model
                .weights()
                .iter()
                .zip(alone.model.weights())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-9, "{diff}");
            assert!((report.model.bias() - alone.model.bias()).abs() < 1e-9);
        }
        assert!(dir.path().join("rank-0").join(MODEL_FILE).exists());
        assert!(!dir.path().join("rank-1").exists());
        assert!(!dir.path().join("rank-2").exists());
    }

    #[test]
    fn the_split_is_stable_and_near_the_holdout() {
        let test_rows = (0..10_000).filter(|&i| is_test(7, i, 0.2)).count();
        assert!((1_800..2_200).contains(&test_rows), "{test_rows}");
        // A row's side depends only on the seed and its index.
        assert_eq!(
            (0..50).map(|i| is_test(7, i, 0.2)).collect::<Vec<_>>(),
            (0..50).map(|i| is_test(7, i, 0.2)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]), 0.75);
        assert_eq!(roc_auc(&[0.5, 0.5], &[0.0, 1.0]), 0.5);
        assert!(roc_auc(&[0.5, 0.7], &[1.0, 1.0]).is_nan());
        assert_eq!(mean_std([2.0, 4.0].into_iter()), (3.0, 1.0));
        assert_eq!(mean_std([3.0, 3.0].into_iter()), (3.0, 1.0));
    }

    #[test]
    fn rejects_bad_options() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 20);
        for (name, options) in [
            (
                "learning_rate",
                TrainOptions {
                    learning_rate: 0.0,
                    ..options(data.clone(), dir.path().into())
                },
            ),
            (
                "learning_rate",
                TrainOptions {
                    learning_rate: f64::NAN,
                    ..options(data.clone(), dir.path().into())
                },
            ),
            (
                "l2",
                TrainOptions {
                    l2: -1.0,
                    ..options(data.clone(), dir.path().into())
                },
            ),
            (
                "holdout",
                TrainOptions {
                    holdout: 1.0,
                    ..options(data.clone(), dir.path().into())
                },
            ),
            (
                "holdout",
                TrainOptions {
                    holdout: 0.0,
                    ..options(data.clone(), dir.path().into())
                },
            ),
        ] {
            let err = train(&options).unwrap_err();
            assert!(
                matches!(err, Error::InvalidOption { name: n, .. } if n == name),
                "{err:?}"
            );
        }
    }

    #[test]
    fn no_numeric_features() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("t.csv");
        fs::write(&data, "id,y\nL1,0\nL2,1\n").unwrap();
        let err = train(&options(data, dir.path().join("out"))).unwrap_err();
        assert!(
            matches!(&err, Error::NoFeatures { skipped, .. } if skipped == &["id"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "no numeric feature columns besides the label `y`; skipped because not every \
             value is a number: id"
        );
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn too_few_rows_to_split() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("t.csv");
        fs::write(&data, "x,y\n1,0\n").unwrap();
        let err = train(&options(data, dir.path().join("out"))).unwrap_err();
        assert!(matches!(err, Error::Split { rows: 1, .. }), "{err:?}");
    }

    #[test]
    fn data_errors_come_through() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 20);
        let options = TrainOptions {
            label: "label".into(),
            ..options(data, dir.path().join("out"))
        };
        let err = train(&options).unwrap_err();
        assert!(matches!(err, Error::LabelMissing { .. }), "{err:?}");
    }

    #[test]
    fn huge_learning_rate_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 50);
        let options = TrainOptions {
            learning_rate: 1e308,
            ..options(data, dir.path().join("out"))
        };
        match train(&options) {
            Ok(report) => assert!(report.model.weights().iter().all(|w| w.is_finite())),
            Err(err) => assert!(matches!(err, Error::Diverged { .. }), "{err:?}"),
        }
    }

    /// The example dataset of the repository: 400 loans with a 0/1 `defaulted` label.
    ///
    /// The data is only weakly predictive: the best single feature (`credit_score`) has
    /// an AUC of 0.66, and over seeds 0..30 the test AUC averages 0.68 (0.55 to 0.76 on
    /// ~80 test rows). Seed 7 gives 0.61, so the bound is loose on purpose.
    #[test]
    fn learns_the_credit_risk_example() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/credit-risk/data/loans/loans.csv");
        let dir = tempfile::tempdir().unwrap();
        let options = TrainOptions {
            label: "defaulted".into(),
            ..options(data, dir.path().to_path_buf())
        };
        let report = train(&options).unwrap();
        assert_eq!(report.rows, 400);
        assert_eq!(report.skipped_columns, ["loan_id"]);
        assert_eq!(report.features.len(), 8);
        assert!(report.metrics.auc > 0.55, "{:?}", report.metrics);
        assert!(report.metrics.train_accuracy > 0.65, "{:?}", report.metrics);
    }
}

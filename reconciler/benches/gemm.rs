//! GPU throughput probe for `cairn train --device cuda`: how much of the GPU the trainer's
//! matrix work uses. Prints figures; on a machine without a usable GPU it says what is
//! missing and exits 0 (nothing is measured there).
//!
//! 1. The trainer's matrix work on its own: the two cuBLAS `dgemv` calls of one epoch
//!    (`X·w` and `Xᵀ·e`, as `cairn::workload`'s GPU path makes them) on an
//!    `n × d` matrix kept on the GPU, repeated. `dgemv` reads the whole matrix for
//!    2·n·d flops, so it is bound by memory bandwidth: the figure to compare is GB/s
//!    against the peak bandwidth (computed from the driver's memory clock and bus width).
//! 2. A large square `dgemm` (2·N³ flops), compute-bound: GFLOP/s against the FP64 peak.
//!    The peak is SMs × clock × FP64 flops per clock per SM, known here for compute
//!    capabilities 8.0 (A100) and 9.0 (H100/H200, tensor cores); set
//!    `CAIRN_GPU_FP64_PEAK_TFLOPS` to override or for other GPUs.
//! 3. `train` end to end on generated data, `Device::Cpu` against `Device::Cuda`: wall
//!    time (reading the CSV included), the effective GFLOP/s of the matrix work, and the
//!    largest difference between the two runs' weights and metrics.
//!
//! Knobs: `CAIRN_GEMM_ROWS` (default 1,000,000) and `CAIRN_GEMM_FEATURES` (64) for (1),
//! `CAIRN_GEMM_N` (8192) for (2), `CAIRN_GEMM_TRAIN_ROWS` (200,000) for (3).
//!
//! Run: `cargo bench --bench gemm`. Not yet run on a GPU machine: the session that wrote
//! it had none.

#[macro_use]
mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use cairn::workload::{train, Device, TrainOptions, TrainReport};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, Gemv, GemvConfig};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};

fn main() {
    // Every other cudarc call panics when its library is missing: probe both first.
    // SAFETY: each only tries to load the shared library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        figure!("gemm bench: no CUDA driver library (libcuda.so); nothing measured");
        return;
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        figure!("gemm bench: no cuBLAS library (libcublas.so); nothing measured");
        return;
    }
    let context = match CudaContext::new(0) {
        Ok(context) => context,
        Err(e) => {
            figure!("gemm bench: cannot open GPU 0 ({e}); nothing measured");
            return;
        }
    };
    let stream = context.default_stream();
    let blas = CudaBlas::new(stream.clone()).expect("cuBLAS starts");
    let gpu = Gpu::describe(&context);
    figure!("{}", gpu.line());

    trainer_gemv(&stream, &blas, &gpu);
    large_dgemm(&stream, &blas, &gpu);
    end_to_end();
    support::finish();
}

/// A size knob: `default` for a real run, a 64th of it (at least 64) for a smoke run.
fn var(name: &str, default: usize) -> usize {
    support::knob(name, default, (default / 64).max(64))
}

/// What the driver says about GPU 0, and the peaks derived from it.
struct Gpu {
    name: String,
    capability: (i32, i32),
    sms: i32,
    clock_ghz: f64,
    /// Bytes per second.
    peak_bandwidth: f64,
    /// Flops per second, when known.
    peak_fp64: Option<f64>,
}

impl Gpu {
    fn describe(context: &Arc<CudaContext>) -> Gpu {
        let attribute = |a| context.attribute(a).unwrap_or(0);
        let capability = context.compute_capability().unwrap_or((0, 0));
        let sms = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        let clock_khz = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
        let memory_khz = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
        let bus_bits = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
        let clock_ghz = f64::from(clock_khz) / 1e6;
        // Double data rate, as CUDA's bandwidthTest computes it.
        let peak_bandwidth = 2.0 * f64::from(memory_khz) * 1e3 * f64::from(bus_bits) / 8.0;
        let per_sm_per_clock = match capability {
            (9, 0) => Some(256.0),
            (8, 0) => Some(128.0),
            _ => None,
        };
        let peak_fp64 = std::env::var("CAIRN_GPU_FP64_PEAK_TFLOPS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map(|t| t * 1e12)
            .or_else(|| per_sm_per_clock.map(|f| f * f64::from(sms) * clock_ghz * 1e9));
        Gpu {
            name: context.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
            capability,
            sms,
            clock_ghz,
            peak_bandwidth,
            peak_fp64,
        }
    }

    fn line(&self) -> String {
        let mut line = format!(
            "gemm bench: GPU 0 {} (compute {}.{}, {} SMs at {:.2} GHz); peak memory bandwidth \
             {:.0} GB/s",
            self.name,
            self.capability.0,
            self.capability.1,
            self.sms,
            self.clock_ghz,
            self.peak_bandwidth / 1e9
        );
        match self.peak_fp64 {
            Some(peak) => write!(line, ", FP64 peak {:.1} TFLOP/s", peak / 1e12).unwrap(),
            None => line.push_str(", FP64 peak unknown (set CAIRN_GPU_FP64_PEAK_TFLOPS)"),
        }
        line
    }
}

/// A host vector of `len` values in [-1, 1), cheap to make.
fn values(len: usize, seed: u64) -> Vec<f64> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

fn to_device(stream: &Arc<CudaStream>, host: &[f64]) -> CudaSlice<f64> {
    stream.clone_htod(host).expect("copy to the GPU")
}

/// (1) The two `dgemv` of one training epoch, on a matrix kept on the GPU.
fn trainer_gemv(stream: &Arc<CudaStream>, blas: &CudaBlas, gpu: &Gpu) {
    let (n, d) = (
        var("CAIRN_GEMM_ROWS", 1_000_000),
        var("CAIRN_GEMM_FEATURES", 64),
    );
    let x = to_device(stream, &values(n * d, 1));
    let w = to_device(stream, &values(d, 2));
    let e = to_device(stream, &values(n, 3));
    let mut z = stream.alloc_zeros::<f64>(n).expect("GPU memory");
    let mut g = stream.alloc_zeros::<f64>(d).expect("GPU memory");
    let forward = GemvConfig {
        trans: cublasOperation_t::CUBLAS_OP_T,
        m: d as i32,
        n: n as i32,
        alpha: 1.0,
        lda: d as i32,
        incx: 1,
        beta: 0.0,
        incy: 1,
    };
    let backward = GemvConfig {
        trans: cublasOperation_t::CUBLAS_OP_N,
        ..forward
    };
    let epoch = |z: &mut CudaSlice<f64>, g: &mut CudaSlice<f64>| {
        // SAFETY: x is d × n (lda d), w and g hold d values, e and z hold n.
        unsafe {
            blas.gemv(forward, &x, &w, z).expect("dgemv X·w");
            blas.gemv(backward, &x, &e, g).expect("dgemv Xᵀ·e");
        }
    };
    epoch(&mut z, &mut g);
    stream.synchronize().unwrap();
    let epochs = 100;
    let started = Instant::now();
    for _ in 0..epochs {
        epoch(&mut z, &mut g);
    }
    stream.synchronize().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let flops = 4.0 * (n * d) as f64 * epochs as f64;
    let bytes = 2.0 * 8.0 * (n * d) as f64 * epochs as f64;
    figure!(
        "trainer matrix work (dgemv X·w + Xᵀ·e), {n} × {d}: {:.3} ms per epoch, {:.1} GFLOP/s, \
         {:.0} GB/s = {:.0} % of peak bandwidth{}",
        seconds * 1000.0 / epochs as f64,
        flops / seconds / 1e9,
        bytes / seconds / 1e9,
        100.0 * bytes / seconds / gpu.peak_bandwidth,
        gpu.peak_fp64
            .map(|p| format!(", {:.2} % of FP64 peak", 100.0 * flops / seconds / p))
            .unwrap_or_default()
    );
}

/// (2) One large square `dgemm`.
fn large_dgemm(stream: &Arc<CudaStream>, blas: &CudaBlas, gpu: &Gpu) {
    let n = var("CAIRN_GEMM_N", 8192);
    let a = to_device(stream, &values(n * n, 4));
    let b = to_device(stream, &values(n * n, 5));
    let mut c = stream.alloc_zeros::<f64>(n * n).expect("GPU memory");
    let config = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: n as i32,
        k: n as i32,
        alpha: 1.0,
        lda: n as i32,
        ldb: n as i32,
        beta: 0.0,
        ldc: n as i32,
    };
    // SAFETY: a, b and c are n × n with leading dimension n.
    let run = |c: &mut CudaSlice<f64>| unsafe { blas.gemm(config, &a, &b, c).expect("dgemm") };
    run(&mut c);
    stream.synchronize().unwrap();
    let repeats = 5;
    let started = Instant::now();
    for _ in 0..repeats {
        run(&mut c);
    }
    stream.synchronize().unwrap();
    let seconds = started.elapsed().as_secs_f64() / repeats as f64;
    let flops = 2.0 * (n as f64).powi(3) / seconds;
    figure!(
        "dgemm {n} × {n} × {n}: {:.1} ms, {:.0} GFLOP/s{}",
        seconds * 1000.0,
        flops / 1e9,
        gpu.peak_fp64
            .map(|p| format!(" = {:.0} % of FP64 peak", 100.0 * flops / p))
            .unwrap_or_default()
    );
}

/// (3) `train` end to end on the CPU and on the GPU.
fn end_to_end() {
    let rows = var("CAIRN_GEMM_TRAIN_ROWS", 200_000);
    let features = 32;
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let mut csv = String::new();
    let names: Vec<String> = (0..features).map(|j| format!("x{j}")).collect();
    writeln!(csv, "{},label", names.join(",")).unwrap();
    let noise = values(rows * (features + 1), 6);
    for row in noise.chunks_exact(features + 1) {
        let z: f64 = row[..features]
            .iter()
            .enumerate()
            .map(|(j, x)| x / (1.0 + j as f64))
            .sum::<f64>()
            + 0.3 * row[features];
        let cells: Vec<String> = row[..features].iter().map(|x| format!("{x:.5}")).collect();
        writeln!(csv, "{},{}", cells.join(","), u8::from(z > 0.0)).unwrap();
    }
    let data = tmp.path().join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let run = |device, out: &str| -> (TrainReport, f64) {
        let options = TrainOptions {
            data: data.clone(),
            out: tmp.path().join(out),
            device,
            ..TrainOptions::default()
        };
        let started = Instant::now();
        let report = train(&options).expect("training succeeds");
        (report, started.elapsed().as_secs_f64())
    };
    let (cpu, cpu_seconds) = run(Device::Cpu, "cpu");
    let (gpu, gpu_seconds) = run(Device::Cuda, "gpu");
    let flops = 4.0 * (gpu.train_rows * features) as f64 * gpu.epochs as f64;
    let weight_diff = cpu
        .model
        .weights()
        .iter()
        .zip(gpu.model.weights())
        .map(|(a, b)| (a - b).abs())
        .fold((cpu.model.bias() - gpu.model.bias()).abs(), f64::max);
    figure!(
        "train end to end, {} train rows × {features} features, {} epochs (reading the CSV \
         included): cpu {:.2} s ({:.2} GFLOP/s), {} {:.2} s ({:.2} GFLOP/s); largest weight \
         difference {weight_diff:.2e}, loss difference {:.2e}, AUC difference {:.2e}",
        gpu.train_rows,
        gpu.epochs,
        cpu_seconds,
        flops / cpu_seconds / 1e9,
        gpu.device,
        gpu_seconds,
        flops / gpu_seconds / 1e9,
        (cpu.metrics.loss - gpu.metrics.loss).abs(),
        (cpu.metrics.auc - gpu.metrics.auc).abs()
    );
}

//! `--gpu` that means it: before any work, check that TensorFlow lists the device a rank asks
//! for, and say where the first convolution will run.
//!
//! What "placed on" means here: the graph pins every op to `ModelConfig::device` (with soft
//! placement for ops that have no kernel there). Convolutions have CPU and GPU kernels, so the
//! first convolution (`resnet/stem/conv/Conv2D`) runs on the requested device whenever
//! TensorFlow lists it, and this check refuses to start when it does not. Without `--gpu` the
//! placer chooses: TensorFlow puts a convolution on its first GPU when it lists one, else on
//! the CPU. The report names that device from the session's device list; it does not trace a
//! step (RunMetadata step stats would cost a traced step at start).
//!
//! The same check refuses bf16 where the convolutions would run on a CPU that has no bf16
//! kernels, before step 0 instead of at its first batch norm.
use dawnrun_schedule::Precision;
use tensorflow::{Graph, Session, SessionOptions};

use super::ModelError;

/// The devices TensorFlow lists for this process, e.g. `/job:localhost/replica:0/task:0/device:CPU:0`.
pub fn device_list() -> Result<Vec<String>, ModelError> {
    let session =
        Session::new(&SessionOptions::new(), &Graph::new()).map_err(|source| ModelError::Run {
            what: "listing TensorFlow devices",
            source: source.into(),
        })?;
    let devices = session.device_list().map_err(|source| ModelError::Run {
        what: "listing TensorFlow devices",
        source: source.into(),
    })?;
    Ok(devices.into_iter().map(|d| d.name).collect())
}

/// `/device:GPU:0` and `/job:localhost/replica:0/task:0/device:GPU:0` name the same device.
fn same_device(listed: &str, asked: &str) -> bool {
    let tail = |s: &str| {
        let s = s.to_ascii_uppercase();
        s.rsplit_once("DEVICE:")
            .map_or(s.clone(), |(_, t)| t.to_string())
    };
    tail(listed) == tail(asked)
}

/// Whether TensorFlow's CPU kernels run bfloat16 on this machine. TensorFlow 2.13 has bf16
/// CPU kernels for convolution and batch norm only through oneDNN, and takes that path only on
/// CPUs with AVX-512 (its `IsBF16SupportedByOneDNNOnThisCPU` tests `avx512f`); elsewhere the
/// first step fails with "Op does not support bfloat16 inputs".
pub fn cpu_runs_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    // Other architectures: TensorFlow's own error at the first step decides.
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Refuses `precision` when the convolutions run on this CPU and it cannot run it. `set_by`
/// says where the precision was chosen (a schedule line, a flag), for the message.
fn check_precision(precision: Precision, on_cpu: bool, set_by: &str) -> Result<(), ModelError> {
    if precision == Precision::Bf16 && on_cpu && !cpu_runs_bf16() {
        return Err(ModelError::Device(format!(
            "{set_by}: bf16 needs a GPU or a CPU with AVX-512: TensorFlow 2.13 runs bfloat16 \
             convolutions and batch norm on the CPU only through oneDNN on AVX-512, and this CPU \
             has none (nor does TensorFlow list a GPU). Use fp32 here"
        )));
    }
    Ok(())
}

fn is_gpu(device: &str) -> bool {
    device.to_ascii_uppercase().contains("GPU:")
}

/// Checks that `asked` (e.g. `/device:GPU:1`; `None` = TensorFlow's choice) is a device
/// TensorFlow lists and that the device the convolutions land on runs `precision` (`set_by`:
/// where that was chosen), and returns the line to print: the device the first convolution
/// runs on. The error names the device asked for, the devices listed, and the usual causes.
pub fn check_device(
    asked: Option<&str>,
    precision: Precision,
    set_by: &str,
) -> Result<String, ModelError> {
    let listed = device_list()?;
    const CONV: &str = "resnet/stem/conv/Conv2D";
    match asked {
        Some(asked) => {
            if listed.iter().any(|d| same_device(d, asked)) {
                check_precision(precision, !is_gpu(asked), set_by)?;
                Ok(format!(
                    "device: the first convolution ({CONV}) is pinned to {asked}; TensorFlow lists {}",
                    listed.join(", ")
                ))
            } else {
                let cuda = match std::env::var("CUDA_VISIBLE_DEVICES") {
                    Ok(v) => format!("CUDA_VISIBLE_DEVICES is set to {v:?}"),
                    Err(_) => "CUDA_VISIBLE_DEVICES is not set".to_string(),
                };
                Err(ModelError::Device(format!(
                    "--gpu asked for {asked}, but TensorFlow lists only: {}. Usual causes: this \
                     libtensorflow is a CPU-only build (make setup installs the CPU build; give \
                     `make setup LIBTENSORFLOW=<folder of a GPU build>`), CUDA_VISIBLE_DEVICES hides \
                     the GPU ({cuda}), fewer GPUs on this host than ranks on it, or the CUDA \
                     driver/libraries are missing",
                    listed.join(", ")
                )))
            }
        }
        None => {
            let gpu = listed.iter().find(|d| is_gpu(d));
            check_precision(precision, gpu.is_none(), set_by)?;
            let cpu = listed
                .first()
                .cloned()
                .unwrap_or_else(|| "(none listed)".into());
            Ok(format!(
                "device: the first convolution ({CONV}) is left to TensorFlow's placer, which \
                 puts it on {}; TensorFlow lists {}",
                gpu.cloned().unwrap_or(cpu),
                listed.join(", ")
            ))
        }
    }
}

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

/// Checks that `asked` (e.g. `/device:GPU:1`; `None` = TensorFlow's choice) is a device
/// TensorFlow lists, and returns the line to print: the device the first convolution runs on.
/// The error names the device asked for, the devices listed, and the usual causes.
pub fn check_device(asked: Option<&str>) -> Result<String, ModelError> {
    let listed = device_list()?;
    const CONV: &str = "resnet/stem/conv/Conv2D";
    match asked {
        Some(asked) => {
            if listed.iter().any(|d| same_device(d, asked)) {
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
            let gpu = listed
                .iter()
                .find(|d| d.to_ascii_uppercase().contains("DEVICE:GPU:"));
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

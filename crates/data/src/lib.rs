//! dawnrun-data: records -> pipeline -> batches. No TensorFlow, no MPI: rank and world size arrive
//! as plain numbers.
//!
//! The modules, each using only those listed above it:
//! - `seed`     every random draw's seed as a pure function of (seed, epoch, rank, ...)   (pure)
//! - `epoch_share` which files and records this rank reads in an epoch, shuffle buffer (pure)
//! - `crop`     random-resized crop box, evaluation crops, rectangular batch shapes    (pure)
//! - `decode_error` why one image could not be turned into pixels
//! - `jpeg_header` a JPEG's size and the check of its marker structure, from its headers (pure)
//! - `resize`   two-tap bilinear resize + mirror of a crop into its slot (SSSE3 or scalar)
//! - `turbo`    the safe wrapper over libjpeg-turbo's TurboJPEG 3 API
//! - `decode`   JPEG bytes -> RGB -> crop + bilinear resize + flip into a batch slot
//! - `batch`    `Batch { images [N, H, W, 3] u8, labels [N] i32 }`
//! - `pipeline` reader thread -> decode workers (straight into batch buffers) -> batcher;
//!   bounded queues; clean shutdown
#![deny(unsafe_code)]

pub mod batch;
pub mod crop;
pub mod decode;
mod decode_error;
pub mod epoch_share;
pub mod jpeg_header;
pub mod pipeline;
pub mod resize;
pub mod seed;
mod turbo;

pub use batch::Batch;
pub use crop::{center_crop, eval_crop, sample_crop, CropBox, CropSpec, EvalCrop};
pub use decode::{DecodePath, DecodeTimes, Placement, Preprocessor, DEFAULT_MAX_IMAGE_PIXELS};
pub use decode_error::DecodeError;
pub use pipeline::{
    panic_is_caught, EvalConfig, EvalPipeline, PipelineError, PipelineStats, SkippedImage,
    StageTimes, TrainConfig, TrainPipeline,
};

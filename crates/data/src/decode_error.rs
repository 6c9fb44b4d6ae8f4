//! Why one image could not be turned into pixels: the error of the header check
//! (`jpeg_header.rs`) and of the decode itself (`decode.rs`).

use crate::crop::CropBox;

/// Why one image could not be turned into pixels. Per-image damage: the pipeline skips the
/// image, counts it and names its record; it never stops the run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("JPEG decode failed: {cause}")]
    Jpeg { cause: String },
    /// The marker structure is broken (see `jpeg_header::check_structure`): TensorFlow's
    /// `tf.io.decode_jpeg` refuses these files, so we do too.
    #[error("damaged JPEG: byte {offset}: {what}")]
    Structure { offset: usize, what: &'static str },
    #[error("JPEG header says {width}x{height} = {pixels} pixels, above the limit of {limit} (run.max_image_pixels)")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("JPEG has {components} colour components after conversion; expected 1 or 3")]
    Components { components: usize },
    #[error("JPEG is {width}x{height} pixels: nothing to crop")]
    Empty { width: u32, height: u32 },
    #[error("crop {crop:?} lies outside the {width}x{height} image")]
    CropOutside {
        crop: CropBox,
        width: u32,
        height: u32,
    },
    #[error("output slot holds {got} bytes, a {width}x{height} RGB image needs {expected}")]
    OutputLength {
        expected: usize,
        got: usize,
        width: u32,
        height: u32,
    },
    #[error("resize to {width}x{height} failed: {cause}")]
    Resize {
        width: u32,
        height: u32,
        cause: String,
    },
}

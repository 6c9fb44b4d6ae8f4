//! JPEG bytes -> RGB u8 -> crop -> bilinear resize -> optional mirror, written straight into a
//! batch slot. The per-image work of the decode workers; knows nothing of files or ranks (the
//! caller adds the record's file and offset to errors).
//!
//! Decoding is libjpeg-turbo 3 (TurboJPEG API, the private `turbo` module), and it decodes only
//! what the crop needs ([`DecodePath::Crop`], the default):
//! 1. The crop box is chosen from the header alone (`place(width, height)`).
//! 2. The DCT scale is the coarsest of 1/8, 1/4, 1/2 that still leaves the crop at least the
//!    output size in both directions ([`scale_for`]); the IDCT then runs on 1x1, 2x2 or 4x4
//!    blocks instead of 8x8.
//! 3. Only the rows and (iMCU-aligned) columns around the crop are decoded
//!    (`tj3SetCroppingRegion`: libjpeg's `jpeg_skip_scanlines` and `jpeg_crop_scanline`). The
//!    rows above the crop and the columns beside it are still entropy-decoded (Huffman codes
//!    cannot be skipped); the rows below it are not read at all in a sequential file (libjpeg-
//!    turbo ends the scan there), so damage below a crop goes unseen, as it does in
//!    TensorFlow's `decode_and_crop_jpeg`. A progressive file is read whole.
//! 4. One resize makes the output, over the crop's exact (fractional, once scaled) window of
//!    the decoded region, written into the caller's slot with the flip folded in. When the
//!    window shrinks by at most 2x (nearly always, after the DCT scale) that is
//!    [`crate::resize::TwoTap`], TensorFlow's two-tap bilinear interpolation; otherwise
//!    `fast_image_resize`'s bilinear convolution, whose filter widens with the factor
//!    (area-averaging, like PIL's bilinear and fast.ai's loader): smoother, never aliased.
//!
//! [`DecodePath::Full`] decodes the whole image at full size with the same library (the
//! reference the crop path is tested against, and the "bare decode" benchmark);
//! [`DecodePath::Zune`] is the previous pure-Rust path (zune-jpeg, whole image), kept for the
//! comparison test and `pipeline-bench --decoder zune`.

use std::time::{Duration, Instant};

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::crop::CropBox;
pub use crate::decode_error::DecodeError;
use crate::jpeg_header::check_structure;
use crate::resize::{self, TwoTap};
use crate::turbo;

/// Default of [`Preprocessor::with_max_pixels`] and of the schedule's `run.max_image_pixels`:
/// 100 megapixels, far above any ImageNet photo (the largest is under 40 MP) and far below what
/// a forged header can claim (65535 x 65535 = 4.3 gigapixels, 12.9 GB of RGB).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 100_000_000;

/// Where and how to crop once the image size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub crop: CropBox,
    /// Mirror left-right after resizing.
    pub flip: bool,
}

/// Which decoder [`Preprocessor::run`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodePath {
    /// libjpeg-turbo, only the crop's rows and columns, at the coarsest DCT scale that serves.
    #[default]
    Crop,
    /// libjpeg-turbo, the whole image at full size, then the crop is resized.
    Full,
    /// zune-jpeg (pure Rust), the whole image at full size: the path before libjpeg-turbo.
    Zune,
}

/// Time spent in [`Preprocessor::run`], summed over images: decoding (header, entropy
/// decoding, IDCT, colour conversion) and resizing plus flipping into the output slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeTimes {
    pub decode: Duration,
    pub resize: Duration,
}

/// The DCT scale denominator (1, 2, 4 or 8) for a `crop` resized to `out_w x out_h`: the
/// coarsest that keeps at least the output size in both directions, so a crop is only ever
/// shrunk by the resize, never enlarged by more than it would be at full scale.
pub fn scale_for(crop: CropBox, out_w: u32, out_h: u32) -> u32 {
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| crop.w / d >= out_w && crop.h / d >= out_h)
        .unwrap_or(1)
}

/// Reusable per-worker state: the TurboJPEG instance, the resizer's scratch buffers and the
/// decoded region, so a worker allocates once, not per image (buffers only grow).
pub struct Preprocessor {
    resizer: Resizer,
    two_tap: TwoTap,
    turbo: Option<turbo::Decompressor>,
    path: DecodePath,
    /// The decoded image or region, `[height, width, 3]` u8.
    rgb: Vec<u8>,
    /// CMYK files decode here first; zune's grayscale output too.
    scratch: Vec<u8>,
    /// Images whose header claims more pixels are refused before any pixel buffer exists.
    max_pixels: u64,
    times: DecodeTimes,
    last_denom: u32,
}

impl Default for Preprocessor {
    fn default() -> Self {
        Self {
            resizer: Resizer::default(),
            two_tap: TwoTap::default(),
            turbo: None,
            path: DecodePath::default(),
            rgb: Vec::new(),
            scratch: Vec::new(),
            max_pixels: DEFAULT_MAX_IMAGE_PIXELS,
            times: DecodeTimes::default(),
            last_denom: 1,
        }
    }
}

impl Preprocessor {
    /// A preprocessor with the [`DEFAULT_MAX_IMAGE_PIXELS`] limit and [`DecodePath::Crop`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuse ([`DecodeError::TooLarge`]) any JPEG whose header claims more than `max_pixels`
    /// pixels, before allocating for it: a decompression bomb is one more skipped image.
    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    /// Use another decoder (benchmarks and comparison tests).
    pub fn with_path(mut self, path: DecodePath) -> Self {
        self.path = path;
        self
    }

    /// The pixel limit in force.
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
    }

    /// Time spent so far in decoding and in resizing (+ flipping), summed over `run` calls.
    pub fn times(&self) -> DecodeTimes {
        self.times
    }

    /// The DCT scale denominator (1, 2, 4, 8) the last `run` decoded at.
    pub fn last_denom(&self) -> u32 {
        self.last_denom
    }

    fn decompressor(&mut self) -> Result<&mut turbo::Decompressor, DecodeError> {
        if self.turbo.is_none() {
            let d = turbo::Decompressor::new().map_err(|cause| DecodeError::Jpeg { cause })?;
            self.turbo = Some(d);
        }
        Ok(self.turbo.as_mut().expect("just set"))
    }

    /// Decodes `jpeg`, asks `place(width, height)` for the crop and flip, and resizes the crop
    /// to `out_width x out_height` into `out` (`[out_height, out_width, 3]` u8, exactly that
    /// long). On error `out` may hold partial pixels.
    pub fn run(
        &mut self,
        jpeg: &[u8],
        out_width: u32,
        out_height: u32,
        out: &mut [u8],
        place: impl FnOnce(u32, u32) -> Placement,
    ) -> Result<(), DecodeError> {
        let expected = out_width as usize * out_height as usize * 3;
        if out.len() != expected || expected == 0 {
            return Err(DecodeError::OutputLength {
                expected,
                got: out.len(),
                width: out_width,
                height: out_height,
            });
        }
        let started = Instant::now();
        let decoded = match self.path {
            DecodePath::Crop => self.decode_crop(jpeg, (out_width, out_height), place),
            DecodePath::Full | DecodePath::Zune => {
                let decoded = if self.path == DecodePath::Full {
                    self.decode(jpeg)
                } else {
                    self.decode_zune(jpeg)
                };
                decoded.and_then(|(width, height)| {
                    let placement = place(width, height);
                    check_inside(placement.crop, width, height)?;
                    let c = placement.crop;
                    let window = [c.x, c.y, c.w, c.h].map(f64::from);
                    Ok(((width, height), window, placement.flip))
                })
            }
        };
        let resizing = Instant::now();
        self.times.decode += resizing - started;
        let ((width, height), window, flip) = decoded?;
        let resized = self.resize_into((width, height), window, (out_width, out_height), out, flip);
        self.times.resize += resizing.elapsed();
        resized
    }

    /// The crop path: header, placement, scale, region decode. Returns the decoded region's
    /// size, the crop's window inside it (x, y, w, h, fractional once scaled) and the flip.
    #[allow(clippy::type_complexity)]
    fn decode_crop(
        &mut self,
        jpeg: &[u8],
        (out_w, out_h): (u32, u32),
        place: impl FnOnce(u32, u32) -> Placement,
    ) -> Result<((u32, u32), [f64; 4], bool), DecodeError> {
        fault::maybe_panic(jpeg);
        let structure = check_structure(jpeg, self.max_pixels)?;
        let jpeg_err = |cause: String| DecodeError::Jpeg { cause };
        let header = self.decompressor()?.read_header(jpeg).map_err(jpeg_err)?;
        let (width, height) = (header.width, header.height);
        if (width, height) != (structure.width, structure.height) || width == 0 || height == 0 {
            return Err(DecodeError::Empty { width, height });
        }
        let placement = place(width, height);
        let crop = placement.crop;
        check_inside(crop, width, height)?;
        let d = scale_for(crop, out_w, out_h);
        self.last_denom = d;
        let (sw, sh) = (turbo::scaled(width, d), turbo::scaled(height, d));
        // The scaled rows and columns that hold the crop; columns start on an iMCU boundary
        // (TurboJPEG's rule). Files whose subsampling it cannot name are decoded whole.
        let region = match header.mcu {
            Some((mcu_w, _)) => {
                let step = turbo::scaled(mcu_w, d).max(1);
                let x0 = crop.x / d / step * step;
                let y0 = crop.y / d;
                let x1 = (crop.x + crop.w).div_ceil(d).min(sw);
                let y1 = (crop.y + crop.h).div_ceil(d).min(sh);
                turbo::Region {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y1 - y0,
                }
            }
            None => turbo::Region {
                x: 0,
                y: 0,
                w: sw,
                h: sh,
            },
        };
        let pixels = region.w as usize * region.h as usize;
        let dec = self.turbo.as_mut().expect("created by read_header above");
        match header.colour {
            turbo::Colour::Rgb => {
                self.rgb.resize(pixels * 3, 0);
                dec.decompress(jpeg, d, Some(region), &mut self.rgb)
                    .map_err(jpeg_err)?;
            }
            turbo::Colour::Cmyk => {
                self.scratch.resize(pixels * 4, 0);
                dec.decompress(jpeg, d, Some(region), &mut self.scratch)
                    .map_err(jpeg_err)?;
                self.rgb.resize(pixels * 3, 0);
                cmyk_to_rgb(&self.scratch, &mut self.rgb);
            }
        }
        let df = f64::from(d);
        let (wx, wy) = (
            (f64::from(crop.x) / df - f64::from(region.x)).max(0.0),
            (f64::from(crop.y) / df - f64::from(region.y)).max(0.0),
        );
        let (ww, wh) = (f64::from(crop.w) / df, f64::from(crop.h) / df);
        // Keep only the pixels the window touches, packed at the buffer's start (a memmove of
        // the crop, a few microseconds): the resize then clamps at the crop's edges, as
        // TensorFlow's resize of the cropped image does, instead of reading the neighbours
        // that the iMCU-aligned region holds beyond them.
        let (x0, y0) = (wx.floor() as u32, wy.floor() as u32);
        let x1 = ((wx + ww).ceil() as u32).clamp(x0 + 1, region.w);
        let y1 = ((wy + wh).ceil() as u32).clamp(y0 + 1, region.h);
        pack_window(&mut self.rgb, region.w, (x0, y0, x1 - x0, y1 - y0));
        let window = [wx - f64::from(x0), wy - f64::from(y0), ww, wh];
        Ok(((x1 - x0, y1 - y0), window, placement.flip))
    }

    /// Decodes the whole of `jpeg` at full size to RGB in the internal buffer (libjpeg-turbo)
    /// and returns (width, height). Grayscale is expanded to three equal channels by libjpeg,
    /// CMYK/YCCK converted here.
    ///
    /// Before libjpeg-turbo sees the bytes, [`check_structure`] walks the marker structure: the
    /// frame size is checked against the pixel limit, and a file that ends before its EOI
    /// marker (truncated, or written without one) is refused, as `tf.io.decode_jpeg` refuses it.
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<(u32, u32), DecodeError> {
        fault::maybe_panic(jpeg);
        check_structure(jpeg, self.max_pixels)?;
        let jpeg_err = |cause: String| DecodeError::Jpeg { cause };
        let header = self.decompressor()?.read_header(jpeg).map_err(jpeg_err)?;
        let (width, height) = (header.width, header.height);
        if width == 0 || height == 0 {
            return Err(DecodeError::Empty { width, height });
        }
        self.last_denom = 1;
        let pixels = width as usize * height as usize;
        let dec = self.turbo.as_mut().expect("created by read_header above");
        match header.colour {
            turbo::Colour::Rgb => {
                self.rgb.resize(pixels * 3, 0);
                dec.decompress(jpeg, 1, None, &mut self.rgb)
                    .map_err(jpeg_err)?;
            }
            turbo::Colour::Cmyk => {
                self.scratch.resize(pixels * 4, 0);
                dec.decompress(jpeg, 1, None, &mut self.scratch)
                    .map_err(jpeg_err)?;
                self.rgb.resize(pixels * 3, 0);
                cmyk_to_rgb(&self.scratch, &mut self.rgb);
            }
        }
        Ok((width, height))
    }

    /// [`Self::decode`] with zune-jpeg, the decoder before libjpeg-turbo. Grayscale is
    /// expanded to three equal channels, CMYK/YCCK converted by zune; anything else is refused.
    pub fn decode_zune(&mut self, jpeg: &[u8]) -> Result<(u32, u32), DecodeError> {
        fault::maybe_panic(jpeg);
        check_structure(jpeg, self.max_pixels)?;
        let jpeg_err = |e: zune_jpeg::errors::DecodeErrors| DecodeError::Jpeg {
            cause: e.to_string(),
        };
        // zune's own default caps sides at 16384; TensorFlow decodes up to 65535, and our limit
        // is the pixel count, already checked.
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::RGB)
            .set_max_width(usize::from(u16::MAX))
            .set_max_height(usize::from(u16::MAX))
            .set_strict_mode(true);
        let mut decoder = JpegDecoder::new_with_options(jpeg, options);
        decoder.decode_headers().map_err(jpeg_err)?;
        // JPEG sides are 16-bit, so they always fit u32.
        let side = |v: usize| u32::try_from(v).unwrap_or(0);
        let (width, height) = decoder
            .dimensions()
            .map(|(w, h)| (side(w), side(h)))
            .unwrap_or((0, 0));
        if width == 0 || height == 0 {
            return Err(DecodeError::Empty { width, height });
        }
        // zune switches grayscale files to one output channel whatever we ask for.
        let components = decoder
            .get_output_colorspace()
            .map_or(0, |c| c.num_components());
        let pixels = width as usize * height as usize;
        match components {
            3 => {
                self.rgb.resize(pixels * 3, 0);
                decoder.decode_into(&mut self.rgb).map_err(jpeg_err)?;
            }
            1 => {
                self.scratch.resize(pixels, 0);
                decoder.decode_into(&mut self.scratch).map_err(jpeg_err)?;
                self.rgb.clear();
                self.rgb
                    .extend(self.scratch.iter().flat_map(|&v| [v, v, v]));
            }
            components => return Err(DecodeError::Components { components }),
        }
        Ok((width, height))
    }

    /// The last image (or, after a crop-path `run`, region) decoded, `[height, width, 3]` u8.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// Resizes `window` (x, y, w, h) of the decoded `width x height` image in the internal
    /// buffer to `out_width x out_height` into `out`, mirrored left-right if `flip`.
    fn resize_into(
        &mut self,
        (width, height): (u32, u32),
        window: [f64; 4],
        (out_width, out_height): (u32, u32),
        out: &mut [u8],
        flip: bool,
    ) -> Result<(), DecodeError> {
        let resize_err = |cause: String| DecodeError::Resize {
            width: out_width,
            height: out_height,
            cause,
        };
        let [x, y, w, h] = window;
        // Rounding once scaled may leave the window a hair past the region's edge.
        let (w, h) = (w.min(f64::from(width) - x), h.min(f64::from(height) - y));
        let pixels = &self.rgb[..width as usize * height as usize * 3];
        // After a DCT-scaled decode a crop of the usual shape shrinks by less than 2x, where
        // TensorFlow's two-tap bilinear interpolation serves (and costs less than a convolution
        // whose filter widens with the factor); the mirror comes free with its column map. A
        // crop much longer than the output's shape can still shrink more in one direction:
        // the convolution averages those, as do the whole-image paths always.
        if self.path == DecodePath::Crop
            && resize::serves(w, out_width)
            && resize::serves(h, out_height)
        {
            self.two_tap.resize(
                pixels,
                (width, height),
                [x, y, w, h],
                out,
                (out_width, out_height),
                flip,
            );
            return Ok(());
        }
        // Typed to RGB: the untyped `resize` would build the convolutions of every pixel type,
        // which once took most of this crate's compile time.
        let src = TypedImageRef::<U8x3>::from_buffer(width, height, pixels)
            .map_err(|e| resize_err(e.to_string()))?;
        let mut dst = TypedImage::<U8x3>::from_buffer(out_width, out_height, out)
            .map_err(|e| resize_err(e.to_string()))?;
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(x, y, w, h);
        self.resizer
            .resize_typed(&src, &mut dst, &options)
            .map_err(|e| resize_err(e.to_string()))?;
        drop(dst);
        if flip {
            mirror_rows(out, out_width as usize);
        }
        Ok(())
    }
}

/// Moves the `(x, y, w, h)` window of the `[_, width, 3]` image in `rgb` to the start of the
/// buffer as a `[h, w, 3]` image. Rows move forward only, so copying in order is safe.
fn pack_window(rgb: &mut [u8], width: u32, (x, y, w, h): (u32, u32, u32, u32)) {
    let (stride, row) = (width as usize * 3, w as usize * 3);
    if (x, y) == (0, 0) && w == width {
        return;
    }
    for r in 0..h as usize {
        let from = (y as usize + r) * stride + x as usize * 3;
        rgb.copy_within(from..from + row, r * row);
    }
}

/// `crop` must lie inside the `width x height` image and be non-empty.
fn check_inside(crop: CropBox, width: u32, height: u32) -> Result<(), DecodeError> {
    let inside = crop.w >= 1
        && crop.h >= 1
        && u64::from(crop.x) + u64::from(crop.w) <= u64::from(width)
        && u64::from(crop.y) + u64::from(crop.h) <= u64::from(height);
    if inside {
        Ok(())
    } else {
        Err(DecodeError::CropOutside {
            crop,
            width,
            height,
        })
    }
}

/// Adobe-inverted CMYK (what Photoshop and PIL write; libjpeg hands it over as stored) to RGB:
/// R = C * K / 255 and likewise, rounded. The same conversion TensorFlow's `decode_jpeg`
/// applies to 4-channel JPEGs.
fn cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    for (src, dst) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let k = u32::from(src[3]);
        for c in 0..3 {
            dst[c] = ((u32::from(src[c]) * k + 127) / 255) as u8;
        }
    }
}

/// A test-only way to make the decode path panic, for checking that a decoder panic becomes a
/// skipped image. Off unless [`arm_decode_panic`] was called; costs one relaxed atomic load per
/// image.
mod fault {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static ARMED: AtomicBool = AtomicBool::new(false);
    static MARKER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    pub(super) fn arm(marker: Option<&[u8]>) {
        let mut m = MARKER.lock().unwrap_or_else(|e| e.into_inner());
        m.clear();
        if let Some(marker) = marker {
            m.extend_from_slice(marker);
        }
        ARMED.store(marker.is_some(), Ordering::SeqCst);
    }

    pub(super) fn maybe_panic(jpeg: &[u8]) {
        if !ARMED.load(Ordering::Relaxed) {
            return;
        }
        let hit = {
            let m = MARKER.lock().unwrap_or_else(|e| e.into_inner());
            !m.is_empty() && jpeg.windows(m.len()).any(|w| w == &m[..])
        };
        if hit {
            panic!("injected decoder panic (test hook)");
        }
    }
}

/// Test hook: from now on, decoding any JPEG that contains the byte string `marker` panics
/// (as a decoder bug would); `None` disarms. For tests of the skip-on-panic path only.
#[doc(hidden)]
pub fn arm_decode_panic(marker: Option<&[u8]>) {
    fault::arm(marker);
}

/// Mirrors every row of an `[h, width, 3]` image left-right in place.
pub fn mirror_rows(image: &mut [u8], width: usize) {
    if width == 0 {
        return;
    }
    for row in image.chunks_exact_mut(width * 3) {
        // The left half against the right half read backwards; an odd middle pixel stays.
        let (left, right) = row.split_at_mut(width / 2 * 3);
        for (l, r) in left.chunks_exact_mut(3).zip(right.rchunks_exact_mut(3)) {
            l.swap_with_slice(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crop::center_crop;
    use image::{ImageEncoder, RgbImage};

    fn jpeg_of(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    /// Quadrants: red top-left, green top-right, blue bottom-left, white bottom-right.
    fn quadrants(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let c = match (x < w / 2, y < h / 2) {
                (true, true) => [255, 0, 0],
                (false, true) => [0, 255, 0],
                (true, false) => [0, 0, 255],
                (false, false) => [255, 255, 255],
            };
            image::Rgb(c)
        })
    }

    fn pixel(img: &[u8], w: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * w + x) * 3;
        [img[i], img[i + 1], img[i + 2]]
    }

    fn near(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
        a.iter()
            .zip(b)
            .all(|(&p, q)| (i32::from(p) - i32::from(q)).abs() <= tol)
    }

    #[test]
    fn quadrant_colours_land_where_expected_at_every_size() {
        let jpeg = jpeg_of(&quadrants(96, 64));
        let mut pre = Preprocessor::new();
        for px in [8u32, 16, 32, 50, 64, 128] {
            let mut out = vec![0u8; (px * px * 3) as usize];
            pre.run(&jpeg, px, px, &mut out, |w, h| Placement {
                crop: CropBox::full(w, h),
                flip: false,
            })
            .unwrap();
            let (p, q) = (px as usize / 8, px as usize - 1 - px as usize / 8);
            assert!(
                near(pixel(&out, px as usize, p, p), [255, 0, 0], 40),
                "{px}: top-left"
            );
            assert!(
                near(pixel(&out, px as usize, q, p), [0, 255, 0], 40),
                "{px}: top-right"
            );
            assert!(
                near(pixel(&out, px as usize, p, q), [0, 0, 255], 40),
                "{px}: bottom-left"
            );
            assert!(
                near(pixel(&out, px as usize, q, q), [255, 255, 255], 40),
                "{px}: bottom-right"
            );
        }
    }

    #[test]
    fn crop_selects_the_region() {
        let jpeg = jpeg_of(&quadrants(96, 64));
        let mut pre = Preprocessor::new();
        let mut out = vec![0u8; 16 * 16 * 3];
        // The bottom-right quadrant only, inset from the edges: all white.
        let crop = CropBox {
            x: 56,
            y: 40,
            w: 32,
            h: 20,
        };
        pre.run(&jpeg, 16, 16, &mut out, |_, _| Placement {
            crop,
            flip: false,
        })
        .unwrap();
        for y in 0..16 {
            for x in 0..16 {
                assert!(
                    near(pixel(&out, 16, x, y), [255, 255, 255], 12),
                    "({x},{y})"
                );
            }
        }
    }

    #[test]
    fn flip_mirrors_exactly() {
        let jpeg = jpeg_of(&quadrants(80, 60));
        let mut pre = Preprocessor::new();
        for px in [7u32, 24, 33] {
            let n = (px * px * 3) as usize;
            let (mut plain, mut flipped) = (vec![0u8; n], vec![0u8; n]);
            let place = |flip| {
                move |w, h| Placement {
                    crop: CropBox {
                        x: 3,
                        y: 5,
                        w: w - 10,
                        h: h - 7,
                    },
                    flip,
                }
            };
            pre.run(&jpeg, px, px, &mut plain, place(false)).unwrap();
            pre.run(&jpeg, px, px, &mut flipped, place(true)).unwrap();
            let px = px as usize;
            for y in 0..px {
                for x in 0..px {
                    assert_eq!(pixel(&plain, px, x, y), pixel(&flipped, px, px - 1 - x, y));
                }
            }
        }
    }

    #[test]
    fn center_crop_of_a_gradient_keeps_the_central_range() {
        // Red rises 0..255 left to right; the central 50% spans about 64..191.
        let img = RgbImage::from_fn(256, 64, |x, _| image::Rgb([x as u8, 128, 128]));
        let jpeg = jpeg_of(&img);
        let mut pre = Preprocessor::new();
        let mut out = vec![0u8; 32 * 32 * 3];
        pre.run(&jpeg, 32, 32, &mut out, |w, h| Placement {
            crop: center_crop(w, h, 0.5),
            flip: false,
        })
        .unwrap();
        let reds: Vec<i32> = (0..32)
            .map(|x| i32::from(pixel(&out, 32, x, 16)[0]))
            .collect();
        assert!((reds[0] - 66).abs() <= 8, "left edge {}", reds[0]);
        assert!((reds[31] - 189).abs() <= 8, "right edge {}", reds[31]);
        assert!(
            reds.windows(2).all(|w| w[1] + 3 >= w[0]),
            "rising: {reds:?}"
        );
    }

    #[test]
    fn grayscale_jpegs_come_out_as_rgb() {
        let gray =
            image::GrayImage::from_fn(40, 30, |x, _| image::Luma([if x < 20 { 30 } else { 220 }]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .write_image(gray.as_raw(), 40, 30, image::ExtendedColorType::L8)
            .unwrap();
        let mut pre = Preprocessor::new();
        let mut out = vec![0u8; 10 * 10 * 3];
        pre.run(&jpeg, 10, 10, &mut out, |w, h| Placement {
            crop: CropBox::full(w, h),
            flip: false,
        })
        .unwrap();
        assert!(near(pixel(&out, 10, 1, 5), [30, 30, 30], 10));
        assert!(near(pixel(&out, 10, 8, 5), [220, 220, 220], 10));
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let jpeg = jpeg_of(&quadrants(64, 48));
        let mut pre = Preprocessor::new();
        let mut out = vec![0u8; 8 * 8 * 3];
        let whole = |w, h| Placement {
            crop: CropBox::full(w, h),
            flip: false,
        };
        for bad in [
            &b"not a jpeg at all"[..],
            &[],
            &jpeg[..jpeg.len() / 3],
            &[0xff, 0xd8, 0xff],
        ] {
            assert!(pre.run(bad, 8, 8, &mut out, whole).is_err());
        }
        let outside = |_, _| Placement {
            crop: CropBox {
                x: 60,
                y: 0,
                w: 10,
                h: 10,
            },
            flip: false,
        };
        assert!(matches!(
            pre.run(&jpeg, 8, 8, &mut out, outside),
            Err(DecodeError::CropOutside { .. })
        ));
        let mut short = vec![0u8; 10];
        assert!(matches!(
            pre.run(&jpeg, 8, 8, &mut short, whole),
            Err(DecodeError::OutputLength { .. })
        ));
    }

    #[test]
    fn scale_is_the_coarsest_that_keeps_the_output_size() {
        let b = |w, h| CropBox { x: 0, y: 0, w, h };
        assert_eq!(scale_for(b(100, 100), 128, 128), 1);
        assert_eq!(scale_for(b(255, 400), 128, 128), 1);
        assert_eq!(scale_for(b(256, 256), 128, 128), 2);
        assert_eq!(scale_for(b(511, 600), 128, 128), 2);
        assert_eq!(scale_for(b(512, 512), 128, 128), 4);
        assert_eq!(scale_for(b(1024, 1100), 128, 128), 8);
        assert_eq!(scale_for(b(4000, 3000), 128, 128), 8);
        assert_eq!(scale_for(b(1, 1), 1, 1), 1);
    }

    #[test]
    fn scaled_and_cropped_decodes_agree_with_the_full_decode() {
        // A gradient image: every path must give nearly the same pixels for the same box.
        let img = RgbImage::from_fn(400, 300, |x, y| {
            image::Rgb([(x * 255 / 400) as u8, (y * 255 / 300) as u8, 128])
        });
        let jpeg = jpeg_of(&img);
        let mut crop_path = Preprocessor::new();
        let mut full = Preprocessor::new().with_path(DecodePath::Full);
        for (crop, px, denom) in [
            (
                CropBox {
                    x: 37,
                    y: 21,
                    w: 300,
                    h: 250,
                },
                120,
                2,
            ),
            (
                CropBox {
                    x: 0,
                    y: 0,
                    w: 400,
                    h: 300,
                },
                70,
                4,
            ),
            (
                CropBox {
                    x: 133,
                    y: 55,
                    w: 250,
                    h: 240,
                },
                24,
                8,
            ),
            (
                CropBox {
                    x: 101,
                    y: 99,
                    w: 60,
                    h: 50,
                },
                32,
                1,
            ),
        ] {
            let n = (px * px * 3) as usize;
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            let place = |_, _| Placement { crop, flip: true };
            crop_path.run(&jpeg, px, px, &mut a, place).unwrap();
            assert_eq!(crop_path.last_denom(), denom, "{crop:?} -> {px}");
            full.run(&jpeg, px, px, &mut b, place).unwrap();
            let mad = a
                .iter()
                .zip(&b)
                .map(|(&p, &q)| (i32::from(p) - i32::from(q)).abs())
                .sum::<i32>() as f64
                / n as f64;
            assert!(mad < 1.5, "{crop:?} -> {px}: mean difference {mad}");
        }
        let t = crop_path.times();
        assert!(t.decode > Duration::ZERO && t.resize > Duration::ZERO);
    }

    #[test]
    fn libjpeg_errors_come_back_as_errors() {
        // Intact marker structure, so only libjpeg can object: a 9-bit precision in the frame
        // header, and a Huffman table with too many codes. Both make
        // libjpeg call error_exit, which TurboJPEG turns into an error return.
        let jpeg = jpeg_of(&quadrants(64, 48));
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut precision = jpeg.clone();
        precision[sof + 4] = 9;
        let dht = jpeg.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
        let mut huffman = jpeg.clone();
        for b in &mut huffman[dht + 5..dht + 21] {
            *b = 0xFF; // 16 code-length counts of 255: more codes than fit
        }
        let mut out = vec![0u8; 8 * 8 * 3];
        for path in [DecodePath::Crop, DecodePath::Full] {
            let mut pre = Preprocessor::new().with_path(path);
            for bad in [&precision, &huffman] {
                let got = pre.run(bad, 8, 8, &mut out, |w, h| Placement {
                    crop: CropBox::full(w, h),
                    flip: false,
                });
                assert!(
                    matches!(got, Err(DecodeError::Jpeg { .. })),
                    "{path:?}: {got:?}"
                );
            }
            // The next image decodes: a failed TurboJPEG instance is replaced.
            pre.run(&jpeg, 8, 8, &mut out, |w, h| Placement {
                crop: CropBox::full(w, h),
                flip: false,
            })
            .unwrap();
        }
    }

    #[test]
    fn mirror_rows_is_an_involution() {
        for w in 0..9usize {
            let img: Vec<u8> = (0..w * 3 * 3).map(|i| i as u8).collect();
            let mut m = img.clone();
            mirror_rows(&mut m, w);
            mirror_rows(&mut m, w);
            assert_eq!(m, img);
        }
    }
}

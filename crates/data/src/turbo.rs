//! A safe wrapper over the part of libjpeg-turbo's TurboJPEG 3 API the pipeline uses: read the
//! header, set a DCT scaling factor (1/2, 1/4, 1/8) and a cropping region, decompress into a
//! caller-owned buffer. One of the two modules with `unsafe` (with `resize`'s SIMD): each call's
//! preconditions are checked here in Rust before the C function runs.
//!
//! Errors: TurboJPEG installs its own libjpeg error manager, whose `error_exit` longjmps back
//! into the TurboJPEG call that failed (never across a Rust frame); that call returns -1 and
//! the message is read with `tj3GetErrorStr`. So a damaged JPEG is a Rust `Err`, never an abort
//! or an unwind through C. Warnings (libjpeg's "corrupt JPEG data" family) also make the call
//! return -1 after the whole image was written, with `tj3GetErrorCode` = `TJERR_WARNING`:
//! [`Outcome::Warned`] reports them; TensorFlow's `decode_jpeg` decodes such files too.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::ptr::NonNull;

use turbojpeg_sys as tj;

/// What the JPEG header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// iMCU width and height in pixels at full scale (8 or 16); `None` when TurboJPEG cannot
    /// name the subsampling (unusual sampling factors): such files cannot be cropped by columns.
    pub mcu: Option<(u32, u32)>,
    pub colour: Colour,
}

/// The JPEG's colour space, as far as decoding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// YCbCr, RGB or grayscale: libjpeg converts to RGB itself.
    Rgb,
    /// CMYK or YCCK: decoded to CMYK (Adobe-inverted, as Photoshop writes it) and converted by
    /// the caller.
    Cmyk,
}

/// Where in the scaled image to decode: columns `x..x+w`, rows `y..y+h`. `x` must be a
/// multiple of the scaled iMCU width ([`Header::mcu`] / `denom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// How a successful decompression went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    /// libjpeg warned (e.g. "Corrupt JPEG data: bad Huffman code") but wrote every pixel.
    Warned,
}

/// The side of a `side`-pixel dimension decoded at scale `1/denom` (TurboJPEG's `TJSCALED`).
pub fn scaled(side: u32, denom: u32) -> u32 {
    side.div_ceil(denom)
}

/// One TurboJPEG decompressor instance; reusable for any number of images, one at a time.
pub struct Decompressor {
    handle: NonNull<std::ffi::c_void>,
    header: Option<Header>,
}

// SAFETY: a TurboJPEG instance holds no thread-affine state; it is used by one thread at a
// time (`&mut self` everywhere), which is all TurboJPEG requires.
unsafe impl Send for Decompressor {}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.handle.as_ptr()) }
    }
}

impl Decompressor {
    pub fn new() -> Result<Self, String> {
        // SAFETY: plain constructor; a null return is an error.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as CInt) };
        let handle = NonNull::new(handle).ok_or_else(|| {
            // SAFETY: a null handle asks for the global (thread-local) error string.
            unsafe { message(std::ptr::null_mut()) }
        })?;
        let this = Self {
            handle,
            header: None,
        };
        // The integer fast IDCT (libjpeg's JDCT_IFAST): what TensorFlow's decode_jpeg and
        // decode_and_crop_jpeg use unless told otherwise, so our pixels match theirs.
        // SAFETY: valid handle; plain parameter setter.
        if unsafe { tj::tj3Set(this.handle.as_ptr(), tj::TJPARAM_TJPARAM_FASTDCT as CInt, 1) } != 0
        {
            return Err(this.error());
        }
        Ok(this)
    }

    fn error(&self) -> String {
        // SAFETY: the handle is valid for self's lifetime.
        unsafe { message(self.handle.as_ptr()) }
    }

    /// The last error's message; the instance is then replaced by a fresh one, because
    /// libjpeg leaves a decompressor that failed mid-stream in a state where the next image
    /// fails too ("two SOI markers").
    fn fail(&mut self) -> String {
        let msg = self.error();
        if let Ok(fresh) = Self::new() {
            // The old instance is destroyed by the assignment's drop.
            *self = fresh;
        }
        msg
    }

    fn get(&self, param: tj::TJPARAM) -> CInt {
        // SAFETY: valid handle; tj3Get only reads the instance.
        unsafe { tj::tj3Get(self.handle.as_ptr(), param as CInt) }
    }

    /// Reads the header of `jpeg` (and remembers it for [`Self::decompress`]).
    pub fn read_header(&mut self, jpeg: &[u8]) -> Result<Header, String> {
        self.header = None;
        if jpeg.is_empty() {
            return Err("empty JPEG".into());
        }
        // SAFETY: valid handle; the pointer and length describe `jpeg`, which TurboJPEG only
        // reads during this call.
        let rc = unsafe {
            tj::tj3DecompressHeader(
                self.handle.as_ptr(),
                jpeg.as_ptr(),
                jpeg.len() as tj::size_t,
            )
        };
        if rc != 0 {
            return Err(self.fail());
        }
        let side = |v: CInt| u32::try_from(v).unwrap_or(0);
        let width = side(self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH));
        let height = side(self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT));
        let subsamp = self.get(tj::TJPARAM_TJPARAM_SUBSAMP);
        // TurboJPEG's tjMCUWidth / tjMCUHeight tables (header-only statics, not linkable),
        // indexed by TJSAMP: 4:4:4, 4:2:2, 4:2:0, gray, 4:4:0, 4:1:1, 4:4:1.
        const MCU: [(u32, u32); 7] = [(8, 8), (16, 8), (16, 16), (8, 8), (8, 16), (32, 8), (8, 32)];
        let mcu = usize::try_from(subsamp)
            .ok()
            .and_then(|s| MCU.get(s).copied());
        let colour = match self.get(tj::TJPARAM_TJPARAM_COLORSPACE) as tj::TJCS {
            tj::TJCS_TJCS_CMYK | tj::TJCS_TJCS_YCCK => Colour::Cmyk,
            _ => Colour::Rgb,
        };
        let header = Header {
            width,
            height,
            mcu,
            colour,
        };
        self.header = Some(header);
        Ok(header)
    }

    /// Decompresses the JPEG whose header was just read by [`Self::read_header`] (the same
    /// bytes) at scale `1/denom` (1, 2, 4 or 8), only `region` of the scaled image (the whole
    /// scaled image when `None`), into `out` as RGB (3 bytes a pixel) or, for
    /// [`Colour::Cmyk`] files, CMYK (4 bytes). `out` must hold exactly the region's pixels.
    pub fn decompress(
        &mut self,
        jpeg: &[u8],
        denom: u32,
        region: Option<Region>,
        out: &mut [u8],
    ) -> Result<Outcome, String> {
        let header = self
            .header
            .take()
            .ok_or("decompress without a header read first")?;
        if !matches!(denom, 1 | 2 | 4 | 8) {
            return Err(format!("unsupported scale 1/{denom}"));
        }
        let (sw, sh) = (scaled(header.width, denom), scaled(header.height, denom));
        let r = region.unwrap_or(Region {
            x: 0,
            y: 0,
            w: sw,
            h: sh,
        });
        if r.w == 0
            || r.h == 0
            || u64::from(r.x) + u64::from(r.w) > u64::from(sw)
            || u64::from(r.y) + u64::from(r.h) > u64::from(sh)
        {
            return Err(format!("region {r:?} outside the {sw}x{sh} scaled image"));
        }
        let (format, bpp) = match header.colour {
            Colour::Rgb => (tj::TJPF_TJPF_RGB, 3usize),
            Colour::Cmyk => (tj::TJPF_TJPF_CMYK, 4usize),
        };
        let pitch = r.w as usize * bpp;
        if out.len() != pitch * r.h as usize {
            return Err(format!(
                "output holds {} bytes, region {}x{} needs {}",
                out.len(),
                r.w,
                r.h,
                pitch * r.h as usize
            ));
        }
        let sf = tj::tjscalingfactor {
            num: 1,
            denom: denom as CInt,
        };
        // SAFETY: valid handle; plain parameter setter.
        if unsafe { tj::tj3SetScalingFactor(self.handle.as_ptr(), sf) } != 0 {
            return Err(self.fail());
        }
        let whole = r.x == 0 && r.y == 0 && r.w == sw && r.h == sh;
        let tj_region = if whole {
            // TJUNCROPPED: all zero.
            tj::tjregion {
                x: 0,
                y: 0,
                w: 0,
                h: 0,
            }
        } else {
            tj::tjregion {
                x: r.x as CInt,
                y: r.y as CInt,
                w: r.w as CInt,
                h: r.h as CInt,
            }
        };
        // SAFETY: valid handle; TurboJPEG checks the region against the header it read
        // (alignment, bounds) and refuses it with an error otherwise.
        if unsafe { tj::tj3SetCroppingRegion(self.handle.as_ptr(), tj_region) } != 0 {
            return Err(self.fail());
        }
        // SAFETY: valid handle; `jpeg` is only read; `out` holds exactly r.h rows of `pitch`
        // bytes, which is what TurboJPEG writes for this scaling factor and region (the
        // region was accepted above and lies inside the scaled image, checked here too).
        let rc = unsafe {
            tj::tj3Decompress8(
                self.handle.as_ptr(),
                jpeg.as_ptr(),
                jpeg.len() as tj::size_t,
                out.as_mut_ptr(),
                pitch as CInt,
                format as CInt,
            )
        };
        if rc == 0 {
            return Ok(Outcome::Clean);
        }
        // SAFETY: valid handle.
        let code = unsafe { tj::tj3GetErrorCode(self.handle.as_ptr()) };
        if code == tj::TJERR_TJERR_WARNING as CInt {
            Ok(Outcome::Warned)
        } else {
            Err(self.fail())
        }
    }
}

type CInt = std::ffi::c_int;

/// The last error message of `handle` (or the thread's global one for null).
///
/// # Safety
/// `handle` is null or a live TurboJPEG instance.
unsafe fn message(handle: *mut std::ffi::c_void) -> String {
    let p = tj::tj3GetErrorStr(handle);
    if p.is_null() {
        return "unknown TurboJPEG error".into();
    }
    CStr::from_ptr(p).to_string_lossy().trim().to_string()
}
#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, RgbImage};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn decode(
        d: &mut Decompressor,
        jpeg: &[u8],
        denom: u32,
        r: Option<Region>,
    ) -> (Vec<u8>, Outcome) {
        let header = d.read_header(jpeg).unwrap();
        let r = r.unwrap_or(Region {
            x: 0,
            y: 0,
            w: scaled(header.width, denom),
            h: scaled(header.height, denom),
        });
        let mut out = vec![0u8; (r.w * r.h * 3) as usize];
        let outcome = d.decompress(jpeg, denom, Some(r), &mut out).unwrap();
        (out, outcome)
    }

    #[test]
    fn a_region_has_the_whole_decode_s_pixels() {
        let file = jpeg(120, 90);
        let mut d = Decompressor::new().unwrap();
        let mcu = d.read_header(&file).unwrap().mcu.unwrap();
        for denom in [1, 2] {
            let (whole, _) = decode(&mut d, &file, denom, None);
            let width = scaled(120, denom);
            let r = Region {
                x: mcu.0 / denom,
                y: 9 / denom,
                w: 40 / denom,
                h: 30 / denom,
            };
            let (part, outcome) = decode(&mut d, &file, denom, Some(r));
            assert_eq!(outcome, Outcome::Clean);
            // Rows and columns one pixel in from the region's edges: chroma upsampling may
            // look past an edge in the whole image and not in the region.
            for y in 1..r.h - 1 {
                for x in 1..r.w - 1 {
                    let at = |img: &[u8], w: u32, x: u32, y: u32| {
                        let i = ((y * w + x) * 3) as usize;
                        [img[i], img[i + 1], img[i + 2]]
                    };
                    assert_eq!(
                        at(&part, r.w, x, y),
                        at(&whole, width, r.x + x, r.y + y),
                        "1/{denom} at ({x}, {y})"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_below_the_region_are_never_read() {
        // What the crop path's speed rests on: TurboJPEG skips to the bottom after the region
        // by ending the scan (libjpeg-turbo's jpeg_skip_scanlines), not by decoding the rest.
        // Garbage in the entropy data's last bytes (no 0xFF, so the markers stay intact):
        // libjpeg warns when it decodes them, which a region above them never does.
        let mut file = jpeg(64, 256);
        let eoi = file.len() - 2;
        for b in &mut file[eoi - 40..eoi] {
            *b = 0x5A;
        }
        let mut d = Decompressor::new().unwrap();
        let (_, whole) = decode(&mut d, &file, 1, None);
        assert_eq!(whole, Outcome::Warned);
        // A band of rows above the damage is clean; a band reaching the bottom reads it.
        for (y, h, want) in [(16, 32, Outcome::Clean), (200, 56, Outcome::Warned)] {
            let band = Region { x: 0, y, w: 64, h };
            assert_eq!(
                decode(&mut d, &file, 1, Some(band)).1,
                want,
                "rows {y}..{}",
                y + h
            );
        }
    }

    #[test]
    fn a_region_error_is_an_err_and_the_next_image_decodes() {
        // An error inside TurboJPEG's cropped decode: the instance is replaced, not left broken.
        let file = jpeg(64, 48);
        let sof = file.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut bad = file.clone();
        bad[sof + 4] = 9; // 9-bit samples: libjpeg's error_exit
        let mut d = Decompressor::new().unwrap();
        let r = Region {
            x: 0,
            y: 8,
            w: 32,
            h: 8,
        };
        // The header reader refuses it first; the decompressor on its own too.
        assert!(d.read_header(&bad).is_err());
        d.header = Some(d.read_header(&file).unwrap());
        let mut out = vec![0u8; 32 * 8 * 3];
        let err = d.decompress(&bad, 1, Some(r), &mut out).unwrap_err();
        assert!(err.contains("precision"), "{err}");
        assert_eq!(decode(&mut d, &file, 1, Some(r)).1, Outcome::Clean);
    }
}
